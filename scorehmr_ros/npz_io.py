"""
The ``.npz`` file schema of ``scorehmr refine``.

Input file (B rows; a row is one person in one view at one frame):

=====================  ==================  ==================================================
key                    shape               meaning
=====================  ==================  ==================================================
``pred_rotmats``       [B, 24, 3, 3]       regression pose, SMPL order, camera frame root
``pred_pose_aa``       [B, 72] / [B,24,3]  same as axis-angle (give one of the two)
``pred_betas``         [B, 10]             regression shape
``pred_cam_t``         [B, 3]              body-to-camera translation, metres
``cond_feats``         [B, C]              standardised image features (C = model's)
``keypoints_2d``       [B, K, 3]           ``x_px, y_px, confidence``
``keypoint_layout``    scalar str          ``body25`` (default), ``scorehmr44``, ``coco17``,
                                           ``smpl24``
``focal_length``       [B, 2] / [B] / []   pixels (default 5000, the paper's crop setting)
``img_size``           [B, 2]              image ``(height, width)``, pixels
``camera_center``      [B, 2]              principal point, pixels (default image centre)
``view_group``         [B] int             optional: person index for multi-view guidance
``frame_prev``         [B] int             optional: row of the previous frame, -1 none
=====================  ==================  ==================================================

Output file: ``rotmats`` [B, S, 24, 3, 3], ``pose_aa`` [B, S, 24, 3], ``betas`` [B, S, 10],
``cam_t`` [B, S, 3], ``x0`` [B, S, D], ``refined`` [B, S] bool, ``stop_step`` [B, S],
``keypoint_loss`` [B, S], ``weights`` (str: which denoiser weights ran).
"""

import os
from typing import Dict

import numpy as np
import torch

from scorehmr_ros.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from scorehmr_ros.observations import ObservationError, Observations
from scorehmr_ros.refiner import RefinementResult

DEFAULT_FOCAL_PX = 5000.0


def load_observations(path: str) -> Observations:
    """
    Read an input ``.npz`` (no pickles).

    :param path: file in the schema above.
    :return: observations as float32 tensors.
    """
    if not os.path.isfile(path):
        raise ObservationError(f'{path}: input file not found')
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # noqa: B902 - zip/format errors of a corrupt file
        raise ObservationError(f'{path}: not a readable .npz file ({err})') from err
    return observations_from_arrays(arrays, source=path)


def observations_from_arrays(arrays: Dict[str, np.ndarray], source: str = '<arrays>'
                             ) -> Observations:
    """
    Build observations from named arrays (the schema above).

    :param arrays: name to array.
    :param source: file name used in error messages.
    :return: observations.
    """
    def get(name, required=True):
        if name not in arrays:
            if required:
                raise ObservationError(f'{source}: missing field {name!r}')
            return None
        value = arrays[name]
        if value.dtype.kind not in 'fiub':
            raise ObservationError(f'{source}: field {name!r} must be numeric, got {value.dtype}')
        return torch.as_tensor(np.asarray(value))

    if 'pred_rotmats' in arrays:
        rotmats = get('pred_rotmats').float()
    elif 'pred_pose_aa' in arrays:
        aa = get('pred_pose_aa').double()
        if aa.dim() == 2 and aa.shape[1] == 72:
            aa = aa.reshape(-1, 24, 3)
        if aa.dim() != 3 or tuple(aa.shape[1:]) != (24, 3):
            raise ObservationError(f'{source}: pred_pose_aa: expected [B, 72] or '
                                   f'[B, 24, 3], got {list(aa.shape)}')
        rotmats = axis_angle_to_matrix(aa).float()
    else:
        raise ObservationError(f'{source}: missing field pred_rotmats (or pred_pose_aa)')
    b = rotmats.shape[0]
    keypoints = get('keypoints_2d', required=False)
    layout = str(arrays['keypoint_layout']) if 'keypoint_layout' in arrays else 'body25'
    img_size = get('img_size', required=keypoints is not None)
    focal = get('focal_length', required=False)
    if focal is None:
        focal = torch.full((b, 2), DEFAULT_FOCAL_PX)
    elif focal.dim() == 0:
        focal = focal.expand(b, 2)
    elif focal.dim() == 1:
        focal = focal[:, None].expand(-1, 2) if focal.shape[0] == b else focal.expand(b, 2)
    center = get('camera_center', required=False)
    if center is None and img_size is not None:
        if img_size.dim() != 2 or img_size.shape[-1] != 2:
            raise ObservationError(f'{source}: img_size: expected [B, 2], '
                                   f'got {list(img_size.shape)}')
        center = 0.5 * img_size.flip(-1).float()   # (H, W) -> (cx, cy)
    as_float = lambda t: None if t is None else t.float()  # noqa: E731
    as_long = lambda t: None if t is None else t.long()  # noqa: E731
    return Observations(
        init_rotmats=rotmats, init_betas=as_float(get('pred_betas')),
        cond=as_float(get('cond_feats')), init_cam_t=as_float(get('pred_cam_t', False)),
        keypoints_2d=as_float(keypoints), keypoint_layout=layout,
        focal_px=as_float(focal).contiguous(), center_px=as_float(center),
        image_size=as_float(img_size), view_group=as_long(get('view_group', False)),
        frame_prev=as_long(get('frame_prev', False)))


def save_observations(path: str, obs: Observations) -> None:
    """
    Write observations in the input schema.

    :param path: output ``.npz``.
    :param obs: observations.
    """
    out = {'pred_rotmats': obs.init_rotmats, 'pred_betas': obs.init_betas,
           'cond_feats': obs.cond, 'pred_cam_t': obs.init_cam_t,
           'keypoints_2d': obs.keypoints_2d, 'focal_length': obs.focal_px,
           'camera_center': obs.center_px, 'img_size': obs.image_size,
           'view_group': obs.view_group, 'frame_prev': obs.frame_prev}
    arrays = {k: v.detach().cpu().numpy() for k, v in out.items() if v is not None}
    arrays['keypoint_layout'] = np.array(obs.keypoint_layout)
    np.savez(path, **arrays)


def save_result(path: str, result: RefinementResult) -> None:
    """
    Write a refinement result in the output schema.

    :param path: output ``.npz``.
    :param result: what :meth:`Refiner.refine` returned.
    """
    b, s = result.refined.shape
    pose_aa = matrix_to_axis_angle(result.rotmats.double()).reshape(b, s, 24, 3)
    arrays = {
        'rotmats': result.rotmats, 'pose_aa': pose_aa, 'betas': result.betas,
        'cam_t': result.cam_t, 'x0': result.x0, 'refined': result.refined,
        'stop_step': result.stop_step, 'keypoint_loss': result.keypoint_loss,
    }
    arrays = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    arrays['weights'] = np.array(result.info.get('weights', ''))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **arrays)
