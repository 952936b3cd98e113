"""
Evaluation data: the ``eval.npz`` schema, read and validated.

N rows; a row is one person in one view at one frame, with ground truth and the
regression estimate refinement starts from.

Required: ``gt_joints_3d`` [N, J, 3] (camera frame of the row's view, metres) with
``joint_set`` (``smpl24``, ``lsp14``, ``coco17`` or ``scorehmr44``); ``init_rotmats``
[N, 24, 3, 3] (or ``init_pose_aa`` [N, 72]); ``init_betas`` [N, 10]; ``init_cam_t``
[N, 3]; ``keypoints_2d`` [N, K, 3] with ``keypoint_layout``; ``focal_px``,
``center_px``, ``image_size`` [N, 2]. Optional: ``cond`` [N, C]; ``sequence_id``,
``frame_index``, ``view_id`` (int64 [N]; rows with equal sequence_id and frame_index
and different view_id are views of one person at one instant); ``gt_rotmats``
[N, 24, 3, 3]; ``gt_betas`` [N, 10]; ``world_to_camera`` [N, 4, 4]; ``fps``.

Accepted aliases (renamed on reading, listed in :data:`ALIASES`): the input names of
``scorehmr refine`` (``pred_rotmats``, ``pred_pose_aa``, ``pred_betas``, ``pred_cam_t``,
``cond_feats``, ``focal_length``, ``camera_center``, ``img_size``), so a refine input
plus ground truth is an evaluation file; and the short names of preprocessed
3DPW/EMDB/H36M-style files: ``S`` (3D joints, a 4th confidence column is dropped),
``pose``/``betas`` (ground-truth SMPL, axis-angle), ``openpose`` (BODY_25 keypoints).
"""

import dataclasses
from typing import Dict, Optional

import numpy as np
import torch

from scorehmr_ros.metrics import JOINT_SET_SIZES
from scorehmr_ros.observations import Observations
from scorehmr_ros.training.dataset import (
    DatasetError, FieldReader, read_keypoints, read_npz, read_pose)

#: alias -> schema name.
ALIASES = {
    'pred_rotmats': 'init_rotmats', 'pred_pose_aa': 'init_pose_aa',
    'pred_betas': 'init_betas', 'pred_cam_t': 'init_cam_t', 'cond_feats': 'cond',
    'focal_length': 'focal_px', 'camera_center': 'center_px', 'img_size': 'image_size',
    'S': 'gt_joints_3d', 'pose': 'gt_pose_aa', 'betas': 'gt_betas',
    'openpose': 'keypoints_2d',
}


@dataclasses.dataclass
class EvalData:
    """
    A validated evaluation set (N rows); tensors are float32 / int64.

    :param path: source file.
    :param gt_joints: [N, J, 3] ground-truth joints, camera frame, metres.
    :param joint_set: the set of ``gt_joints``.
    :param obs: the refiner's inputs (start, keypoints, intrinsics, features).
    :param sequence_id: [N] sequence of each row (default all 0).
    :param frame_index: [N] frame within the sequence (default the row number).
    :param view_id: [N] camera of each row (default all 0).
    :param gt_rotmats: [N, 24, 3, 3] or ``None``.
    :param gt_betas: [N, 10] or ``None``.
    :param world_to_camera: [N, 4, 4] or ``None``.
    :param fps: frame rate or ``None``.
    """

    path: str
    gt_joints: torch.Tensor
    joint_set: str
    obs: Observations
    sequence_id: torch.Tensor
    frame_index: torch.Tensor
    view_id: torch.Tensor
    gt_rotmats: Optional[torch.Tensor] = None
    gt_betas: Optional[torch.Tensor] = None
    world_to_camera: Optional[torch.Tensor] = None
    fps: Optional[float] = None

    @property
    def num_rows(self) -> int:
        """N."""
        return int(self.gt_joints.shape[0])

    def subset(self, rows: torch.Tensor) -> 'EvalData':
        """
        Select rows.

        :param rows: [M] int64 row indices.
        :return: a new :class:`EvalData` with those rows, in that order.
        """
        def pick(value):
            return None if value is None else value[rows]

        o = self.obs
        obs = Observations(
            init_rotmats=o.init_rotmats[rows], init_betas=o.init_betas[rows],
            cond=o.cond[rows], init_cam_t=pick(o.init_cam_t), keypoints_2d=pick(o.keypoints_2d),
            keypoint_layout=o.keypoint_layout, focal_px=pick(o.focal_px),
            center_px=pick(o.center_px), image_size=pick(o.image_size))
        return dataclasses.replace(
            self, gt_joints=self.gt_joints[rows], obs=obs, sequence_id=self.sequence_id[rows],
            frame_index=self.frame_index[rows], view_id=self.view_id[rows],
            gt_rotmats=pick(self.gt_rotmats), gt_betas=pick(self.gt_betas),
            world_to_camera=pick(self.world_to_camera))


def apply_aliases(path: str, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """
    Rename aliased fields to the schema's names.

    :param path: file name used in messages.
    :param arrays: the file's arrays.
    :return: arrays under schema names; an alias next to its schema name is an error.
    """
    out = {}
    for name, value in arrays.items():
        target = ALIASES.get(name, name)
        if target in out or (target != name and target in arrays):
            raise DatasetError(f'{path}: fields {name!r} and {target!r} mean the same; '
                               'give one of them')
        out[target] = value
    if 'gt_joints_3d' in out and out['gt_joints_3d'].ndim == 3 \
            and out['gt_joints_3d'].shape[-1] == 4 and 'S' in arrays:
        out['gt_joints_3d'] = out['gt_joints_3d'][..., :3]
    if 'openpose' in arrays and 'keypoint_layout' not in out:
        out['keypoint_layout'] = np.array('body25')
    return out


def load_eval_data(path: str, cond_dim: Optional[int] = None,
                   cond_source: str = 'auto') -> EvalData:
    """
    Read and validate an ``eval.npz``.

    :param path: the file.
    :param cond_dim: the denoiser's feature size, checked against ``cond``.
    :param cond_source: ``'cond'`` (the file's ``cond``), ``'keypoints'`` (features of
        the keypoints, for priors trained on them), ``'none'`` (zeros of ``cond_dim``) or
        ``'auto'`` (``cond`` when present, else keypoints).
    :return: the data.
    """
    from scorehmr_ros.perception.keypoint_features import keypoint_features

    reader = FieldReader(path, apply_aliases(path, read_npz(path)))
    joint_set = reader.string('joint_set')
    if joint_set not in JOINT_SET_SIZES:
        raise DatasetError(f'{path}: field {"joint_set"!r} must be one of '
                           f'{sorted(JOINT_SET_SIZES)}, got {joint_set!r}')
    gt_joints = reader.float('gt_joints_3d', ('N', JOINT_SET_SIZES[joint_set], 3))
    n = gt_joints.shape[0]
    if n == 0:
        raise DatasetError(f'{path}: no rows (N = 0)')
    init_rotmats = read_pose(reader, 'init_rotmats', 'init_pose_aa')
    init_betas = reader.float('init_betas', ('N', 10))
    init_cam_t = reader.float('init_cam_t', ('N', 3))
    layout = reader.string('keypoint_layout')
    keypoints = read_keypoints(reader, layout).float()
    focal = reader.float('focal_px', ('N', 2))
    center = reader.float('center_px', ('N', 2))
    image_size = reader.float('image_size', ('N', 2))
    for name, value in (('focal_px', focal), ('image_size', image_size)):
        if (value <= 0).any():
            raise DatasetError(f'{path}: field {name!r} must be positive')
    if cond_source == 'auto':
        cond_source = 'cond' if reader.has('cond') else 'keypoints'
    if cond_source == 'cond':
        cond = reader.float('cond', ('N', None))
    elif cond_source == 'keypoints':
        cond = keypoint_features(keypoints).float()
    elif cond_source == 'none':
        cond = torch.zeros(n, cond_dim or 1)
    else:
        raise DatasetError(f'cond_source must be auto, cond, keypoints or none, '
                           f'got {cond_source!r}')
    if cond_dim is not None and cond.shape[1] != cond_dim:
        raise DatasetError(f'{path}: {cond_source} features have size {cond.shape[1]}, the '
                           f'denoiser expects {cond_dim}')
    seq = reader.int('sequence_id')
    frame = reader.int('frame_index')
    view = reader.int('view_id')
    gt_rotmats = None
    if reader.has('gt_rotmats') or reader.has('gt_pose_aa'):
        gt_rotmats = read_pose(reader, 'gt_rotmats', 'gt_pose_aa')
    obs = Observations(init_rotmats=init_rotmats, init_betas=init_betas, cond=cond,
                       init_cam_t=init_cam_t, keypoints_2d=keypoints, keypoint_layout=layout,
                       focal_px=focal, center_px=center, image_size=image_size)
    return EvalData(
        path=path, gt_joints=gt_joints, joint_set=joint_set, obs=obs,
        sequence_id=seq if seq is not None else torch.zeros(n, dtype=torch.long),
        frame_index=frame if frame is not None else torch.arange(n),
        view_id=view if view is not None else torch.zeros(n, dtype=torch.long),
        gt_rotmats=gt_rotmats, gt_betas=reader.float('gt_betas', ('N', 10), required=False),
        world_to_camera=reader.float('world_to_camera', ('N', 4, 4), required=False),
        fps=reader.scalar('fps'))


def save_eval_npz(path: str, data: EvalData) -> None:
    """
    Write evaluation data in the schema (used by tests and data tools).

    :param path: output ``.npz``.
    :param data: the data.
    """
    o = data.obs
    arrays = {'gt_joints_3d': data.gt_joints, 'init_rotmats': o.init_rotmats,
              'init_betas': o.init_betas, 'init_cam_t': o.init_cam_t, 'cond': o.cond,
              'keypoints_2d': o.keypoints_2d, 'focal_px': o.focal_px,
              'center_px': o.center_px, 'image_size': o.image_size,
              'sequence_id': data.sequence_id, 'frame_index': data.frame_index,
              'view_id': data.view_id, 'gt_rotmats': data.gt_rotmats,
              'gt_betas': data.gt_betas, 'world_to_camera': data.world_to_camera}
    if o.cond.shape[1] == 0:
        del arrays['cond']   # no stored features: readers derive them (e.g. from keypoints)
    out = {k: v.detach().cpu().numpy() for k, v in arrays.items() if v is not None}
    out['joint_set'] = np.array(data.joint_set)
    out['keypoint_layout'] = np.array(o.keypoint_layout)
    if data.fps is not None:
        out['fps'] = np.array(float(data.fps))
    np.savez(path, **out)
