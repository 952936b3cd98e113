"""
Virtual-camera datasets from motion capture: ``train.npz`` and ``eval.npz``.

Each BVH clip is retargeted to SMPL (:mod:`scorehmr_ros.mocap.retarget`), resampled to
one frame rate, split by time (the last ``holdout_fraction`` of every clip is held out,
after a gap of ``gap_s`` seconds, because neighbouring frames are nearly identical), and
seen by ``views`` virtual pinhole cameras per clip and split.

Cameras (OpenCV axes: x right, y down, z forward): per clip, split and view a random
azimuth (0-360 deg), elevation (-10..30 deg, positive looks down), distance (2.5-6 m) and
focal length (500-1500 px), principal point at the image centre. The camera keeps that
orientation and follows the actor: its centre is the pelvis trajectory smoothed over
``follow_s`` seconds plus the sampled offset, so the actor stays in view while walking
and moves a little in the image. Where a keypoint of some frame would leave the image
(with ``margin_px``), the view is moved back (up to the distance range), then the focal
length is shortened, until every frame fits.

Camera-frame pose (the body layer's convention, as in :mod:`scorehmr_ros.scene`): the
global orientation is the world root rotation premultiplied by the camera rotation, and
``cam_t`` is the body-to-camera translation, ``pelvis_cam - J_0`` where ``J_0`` is the
body's rest pelvis; a body point ``p`` (posed, no translation) is at ``p + cam_t`` in the
camera frame. Keypoints: the layout's joints of the body model (coco17 or body25),
projected, with Gaussian pixel noise (sigma per view, drawn from ``noise_px``), dropped
keypoints (confidence 0) and confidences uniform in (0.3, 1].

Letters: N rows (one body in one view at one frame), K keypoints.
"""

from dataclasses import dataclass, field
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from scorehmr_ros.body.kinematics import JointsOnlyBody
from scorehmr_ros.body.layouts import get_layout
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.mocap.bvh import read_bvh
from scorehmr_ros.mocap.retarget import resample, retarget, Retargeted

_LOG = logging.getLogger(__name__)

LAYOUTS = ('coco17', 'body25')


@dataclass(frozen=True)
class MocapSetSpec:
    """
    How to render a motion-capture dataset.

    :param views: cameras per clip and split.
    :param holdout_fraction: share of each clip (its end) that goes to ``eval.npz``.
    :param gap_s: seconds dropped between the training part and the held-out part.
    :param fps: output frame rate (a 30 fps clip at 15 takes every 2nd frame).
    :param layout: keypoint layout, ``'coco17'`` or ``'body25'``.
    :param image_hw: image ``(height, width)``, pixels.
    :param azimuth_deg: camera azimuth range about the vertical, degrees.
    :param elevation_deg: camera elevation range, degrees (positive: above, looking down).
    :param distance_m: camera distance range from the followed pelvis, metres.
    :param focal_px: focal length range, pixels.
    :param noise_px: range of the per-view keypoint noise sigma, pixels.
    :param dropout: probability that a keypoint is missing (confidence 0).
    :param confidence: range of the confidences of present keypoints (low end excluded).
    :param margin_px: every keypoint stays this far inside the image.
    :param follow_s: smoothing window of the followed pelvis trajectory, seconds.
    :param init_body_std_rad: eval start: axis-angle noise per body joint, radians.
    :param init_root_std_rad: eval start: axis-angle noise of the global orientation.
    :param init_trans_std_m: eval start: translation noise ``(x and y, depth)``, metres.
    :param init_betas_std: eval start: shape noise.
    :param max_frames: use only the first frames of each clip (source frames; tests).
    """

    views: int = 4
    holdout_fraction: float = 0.2
    gap_s: float = 1.0
    fps: float = 15.0
    layout: str = 'coco17'
    image_hw: Tuple[int, int] = (480, 640)
    azimuth_deg: Tuple[float, float] = (0.0, 360.0)
    elevation_deg: Tuple[float, float] = (-10.0, 30.0)
    distance_m: Tuple[float, float] = (2.5, 6.0)
    focal_px: Tuple[float, float] = (500.0, 1500.0)
    noise_px: Tuple[float, float] = (2.0, 5.0)
    dropout: float = 0.1
    confidence: Tuple[float, float] = (0.3, 1.0)
    margin_px: float = 8.0
    follow_s: float = 1.0
    init_body_std_rad: float = 0.15
    init_root_std_rad: float = 0.1
    init_trans_std_m: Tuple[float, float] = (0.05, 0.2)
    init_betas_std: float = 0.0
    max_frames: Optional[int] = None

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f'layout must be one of {", ".join(LAYOUTS)}, got {self.layout!r}')
        if not isinstance(self.views, int) or self.views < 1:
            raise ValueError(f'views must be a positive integer, got {self.views!r}')
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f'holdout_fraction must be in (0, 1), got {self.holdout_fraction}')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {self.dropout}')
        if self.gap_s < 0 or not self.fps > 0:
            raise ValueError(f'gap_s must be >= 0 and fps > 0, got {self.gap_s}, {self.fps}')
        for name in ('distance_m', 'focal_px', 'noise_px', 'confidence', 'image_hw'):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f'{name} must be a range 0 <= low <= high, got {(low, high)}')
        if self.distance_m[0] <= 0 or self.focal_px[0] <= 0 or min(self.image_hw) < 16:
            raise ValueError('distance_m and focal_px must be positive and the image at '
                             'least 16 px')


@dataclass
class _Clip:
    """One retargeted, resampled clip and its posed body (world root orientation)."""

    motion: Retargeted
    joints45: np.ndarray        # [F, 45, 3] body frame, root rotated into the world
    world_root: np.ndarray      # [F, 3, 3]
    name: str


@dataclass
class MocapSet:
    """
    The two files' arrays.

    :param train: ``train.npz`` name -> array.
    :param eval: ``eval.npz`` name -> array.
    :param stats: counts for the log (rows, frames per clip, cameras refitted).
    """

    train: Dict[str, np.ndarray]
    eval: Dict[str, np.ndarray]
    stats: Dict[str, int] = field(default_factory=dict)


def make_mocap_set(bvh_paths: Sequence[str], spec: MocapSetSpec = MocapSetSpec(),
                   seed: int = 0, body: Optional[BodyModel] = None,
                   licence: str = 'unknown') -> MocapSet:
    """
    Render the training and evaluation sets.

    :param bvh_paths: BVH files (sequence_id = position in this list).
    :param spec: rendering parameters.
    :param seed: RNG seed (same seed and inputs, same files).
    :param body: body model (default: the synthetic SMPL-format body).
    :param licence: licence text stored in both files.
    :return: the arrays of both files.
    :raises BvhError: on unreadable BVH files.
    :raises ValueError: if a clip is too short to split.
    """
    if not bvh_paths:
        raise ValueError('make_mocap_set needs at least one BVH file')
    if body is None:
        body = BodyModel.from_config(None, dtype=torch.float64)
    joints_body = JointsOnlyBody(body).double()
    rest = joints_body.rest(torch.zeros(1, 10, dtype=torch.float64))
    rest_pelvis = rest.joints[0, 0].numpy()
    rng = np.random.default_rng(seed)
    layout = get_layout(spec.layout)
    kp_index = np.asarray(layout.indices)
    train_parts, eval_parts = [], []
    stats = {'refitted_views': 0}
    for sequence_id, path in enumerate(bvh_paths):
        clip = _load_clip(path, spec, joints_body, rest)
        n = clip.motion.num_frames
        train_frames, eval_frames = split_frames(n, spec, path)
        stats[f'frames_{os.path.basename(path)}'] = n
        for split, frames, parts in (('train', train_frames, train_parts),
                                     ('eval', eval_frames, eval_parts)):
            for view in range(spec.views):
                rows = _render_view(clip, frames, spec, rng, rest_pelvis, kp_index, stats)
                rows['sequence_id'] = np.full(len(frames), sequence_id, dtype=np.int64)
                rows['view_id'] = np.full(len(frames), view, dtype=np.int64)
                if split == 'eval':
                    _add_initialisation(rows, spec, rng)
                parts.append(rows)
    source = ('BVH motion capture retargeted to SMPL (' + ', '.join(
        os.path.basename(p) for p in bvh_paths) + f'); body: {body.name}')
    common = {'keypoint_layout': np.array(spec.layout), 'fps': np.array(spec.fps, np.float32),
              'source': np.array(source), 'licence': np.array(licence)}
    train = _train_schema(_concat(train_parts), common)
    evaluation = _eval_schema(_concat(eval_parts), common)
    stats['train_rows'] = len(train['pose_rotmat'])
    stats['eval_rows'] = len(evaluation['gt_rotmats'])
    return MocapSet(train=train, eval=evaluation, stats=stats)


def write_mocap_set(result: MocapSet, out_dir: str) -> Tuple[str, str]:
    """
    Write ``train.npz`` and ``eval.npz`` (uncompressed, no pickles).

    :param result: the arrays.
    :param out_dir: the folder (created).
    :return: the two paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = (os.path.join(out_dir, 'train.npz'), os.path.join(out_dir, 'eval.npz'))
    np.savez(paths[0], **result.train)
    np.savez(paths[1], **result.eval)
    return paths


def split_frames(num_frames: int, spec: MocapSetSpec, name: str = 'clip'
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """
    Time split of one resampled clip: training frames, then a gap, then held-out frames.

    :param num_frames: frames of the clip at ``spec.fps``.
    :param spec: ``holdout_fraction``, ``gap_s`` and ``fps``.
    :param name: the clip, for the error message.
    :return: ``(train, eval)`` int64 frame indices at ``spec.fps``.
    :raises ValueError: if the clip is too short to split.
    """
    n_eval = int(math.ceil(spec.holdout_fraction * num_frames))
    gap = int(round(spec.gap_s * spec.fps))
    n_train = num_frames - n_eval - gap
    if n_train < 1 or n_eval < 1:
        raise ValueError(f'{name}: {num_frames} frames at {spec.fps:g} fps are too few to '
                         f'hold out {spec.holdout_fraction:g} after a {spec.gap_s:g} s gap')
    return np.arange(n_train), np.arange(num_frames - n_eval, num_frames)


def load_motion(path: str, spec: MocapSetSpec, rest_joints: np.ndarray) -> Retargeted:
    """
    Read a BVH clip, retarget it to a body and resample it to ``spec.fps``.

    :param path: BVH file.
    :param spec: ``fps`` and ``max_frames``.
    :param rest_joints: [24, 3] rest joints of the target body, metres.
    :return: the motion at ``spec.fps``.
    :raises BvhError: on an unreadable file.
    :raises ValueError: if ``spec.fps`` exceeds the clip's rate.
    """
    bvh = read_bvh(path)
    motion = retarget(bvh, rest_joints=rest_joints)
    if spec.max_frames is not None:
        motion.rotmats = motion.rotmats[:spec.max_frames]
        motion.pelvis_m = motion.pelvis_m[:spec.max_frames]
    if spec.fps > motion.fps * (1 + 1e-6):
        raise ValueError(f'{path}: output fps {spec.fps:g} exceeds the clip rate '
                         f'{motion.fps:g}')
    return resample(motion, spec.fps)


def _load_clip(path: str, spec: MocapSetSpec, joints_body: JointsOnlyBody, rest) -> _Clip:
    motion = load_motion(path, spec, rest.joints[0].numpy())
    rotmats = torch.from_numpy(motion.rotmats)
    count = rotmats.shape[0]
    state = type(rest)(*(t.expand(count, *t.shape[1:]) for t in rest))
    with torch.no_grad():
        joints45 = joints_body(rotmats, state).numpy()
    return _Clip(motion=motion, joints45=joints45, world_root=motion.rotmats[:, 0],
                 name=os.path.basename(path))


def _smooth(track: np.ndarray, window: int) -> np.ndarray:
    """[F, 3] moving average over ``window`` frames (edges: shorter windows)."""
    window = min(window, len(track))
    if window <= 1:
        return track.copy()
    kernel = np.ones(window)
    padded_count = np.convolve(np.ones(len(track)), kernel, mode='same')
    return np.stack([np.convolve(track[:, k], kernel, mode='same') / padded_count
                     for k in range(3)], axis=1)


def look_rotation(direction: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])
                  ) -> np.ndarray:
    """
    World-to-camera rotation of an OpenCV camera looking along ``direction``.

    :param direction: [3] viewing direction in the world (not parallel to ``up``).
    :param up: [3] world up.
    :return: [3, 3] rows = camera x (right), y (down), z (forward) in world coordinates.
    """
    z = direction / np.linalg.norm(direction)
    x = np.cross(-up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack((x, y, z))


def _render_view(clip: _Clip, frames: np.ndarray, spec: MocapSetSpec,
                 rng: np.random.Generator, rest_pelvis: np.ndarray, kp_index: np.ndarray,
                 stats: Dict[str, int]) -> Dict[str, np.ndarray]:
    """Rows of one camera over the given frames (truth, keypoints, camera)."""
    height, width = spec.image_hw
    azimuth = np.deg2rad(rng.uniform(*spec.azimuth_deg))
    elevation = np.deg2rad(rng.uniform(*spec.elevation_deg))
    distance = rng.uniform(*spec.distance_m)
    focal = rng.uniform(*spec.focal_px)
    sigma_px = rng.uniform(*spec.noise_px)
    offset_dir = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                           math.cos(elevation) * math.cos(azimuth)])
    rot = look_rotation(-offset_dir)
    pelvis_w = clip.motion.pelvis_m[frames]
    target = _smooth(clip.motion.pelvis_m, max(1, int(round(spec.follow_s * spec.fps))))[frames]
    # Body-frame joints relative to the rest pelvis (the root rotates about it).
    rel = clip.joints45[frames] - rest_pelvis                          # [n, 45, 3]
    rel_cam = rel @ rot.T                                              # [n, 45, 3]
    center = np.array([width / 2.0, height / 2.0])
    for attempt in range(60):
        cam_centre = target + distance * offset_dir
        pelvis_cam = (pelvis_w - cam_centre) @ rot.T                   # [n, 3]
        points = rel_cam + pelvis_cam[:, None]                         # [n, 45, 3]
        pixels = focal * points[..., :2] / points[..., 2:3] + center
        inside = (points[..., 2] > 0.1).all() and (
            pixels[..., 0] >= spec.margin_px).all() and (
            pixels[..., 0] <= width - spec.margin_px).all() and (
            pixels[..., 1] >= spec.margin_px).all() and (
            pixels[..., 1] <= height - spec.margin_px).all()
        if inside:
            break
        if attempt == 0:
            stats['refitted_views'] += 1
        if distance * 1.1 <= spec.distance_m[1]:
            distance *= 1.1
        else:
            focal /= 1.1
    else:
        raise ValueError(f'{clip.name}: no camera keeps the actor in a {width}x{height} image '
                         '(the motion leaves the followed window?)')
    n = len(frames)
    kp_px = pixels[:, kp_index] + sigma_px * rng.standard_normal((n, len(kp_index), 2))
    conf = rng.uniform(spec.confidence[0], spec.confidence[1], (n, len(kp_index)))
    conf = np.where(conf <= spec.confidence[0], spec.confidence[1], conf)  # open low end
    conf = np.where(rng.random((n, len(kp_index))) < spec.dropout, 0.0, conf)
    rotmats = clip.motion.rotmats[frames].copy()
    rotmats[:, 0] = rot @ clip.world_root[frames]
    world_to_camera = np.tile(np.eye(4), (n, 1, 1))
    world_to_camera[:, :3, :3] = rot
    world_to_camera[:, :3, 3] = -cam_centre @ rot.T
    return {
        'rotmats': rotmats, 'cam_t': pelvis_cam - rest_pelvis,
        'joints_3d': points[:, :24], 'keypoints_2d': np.concatenate((kp_px, conf[..., None]), -1),
        'focal_px': np.full((n, 2), focal), 'center_px': np.tile(center, (n, 1)),
        'image_size': np.tile([float(height), float(width)], (n, 1)),
        'frame_index': frames.astype(np.int64), 'world_to_camera': world_to_camera,
    }


def _add_initialisation(rows: Dict[str, np.ndarray], spec: MocapSetSpec,
                        rng: np.random.Generator) -> None:
    """Add a simulated regressor's start: the truth perturbed in pose, translation, shape."""
    n = len(rows['rotmats'])
    std = np.full((n, 24, 1), spec.init_body_std_rad)
    std[:, 0] = spec.init_root_std_rad
    noise = axis_angle_to_matrix(torch.from_numpy(std * rng.standard_normal((n, 24, 3))))
    rows['init_rotmats'] = rows['rotmats'] @ noise.numpy()
    xy, z = spec.init_trans_std_m
    rows['init_cam_t'] = rows['cam_t'] + rng.standard_normal((n, 3)) * np.array([xy, xy, z])
    rows['init_betas'] = spec.init_betas_std * rng.standard_normal((n, 10))


def _concat(parts: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _train_schema(rows: Dict[str, np.ndarray], common: Dict[str, np.ndarray]
                  ) -> Dict[str, np.ndarray]:
    n = len(rows['rotmats'])
    out = {
        'pose_rotmat': _f32(rows['rotmats']), 'betas': np.zeros((n, 10), np.float32),
        'cam_t': _f32(rows['cam_t']), 'keypoints_2d': _f32(rows['keypoints_2d']),
        'focal_px': _f32(rows['focal_px']), 'center_px': _f32(rows['center_px']),
        'image_size': _f32(rows['image_size']), 'joints_3d': _f32(rows['joints_3d']),
        'sequence_id': rows['sequence_id'], 'frame_index': rows['frame_index'],
        'view_id': rows['view_id'],
    }
    out.update(common)
    return out


def _eval_schema(rows: Dict[str, np.ndarray], common: Dict[str, np.ndarray]
                 ) -> Dict[str, np.ndarray]:
    n = len(rows['rotmats'])
    out = {
        'gt_joints_3d': _f32(rows['joints_3d']), 'joint_set': np.array('smpl24'),
        'gt_rotmats': _f32(rows['rotmats']), 'gt_betas': np.zeros((n, 10), np.float32),
        'init_rotmats': _f32(rows['init_rotmats']), 'init_betas': _f32(rows['init_betas']),
        'init_cam_t': _f32(rows['init_cam_t']), 'keypoints_2d': _f32(rows['keypoints_2d']),
        'focal_px': _f32(rows['focal_px']), 'center_px': _f32(rows['center_px']),
        'image_size': _f32(rows['image_size']), 'sequence_id': rows['sequence_id'],
        'frame_index': rows['frame_index'], 'view_id': rows['view_id'],
        'world_to_camera': _f32(rows['world_to_camera']),
    }
    out.update(common)
    return out


def default_licence(bvh_paths: Sequence[str]) -> str:
    """
    Licence text for the files: the first lines of LICENSE* files beside the BVH files.

    :param bvh_paths: the BVH files.
    :return: e.g. ``'MIT License; Copyright (c) 2025 Enekoassets (LICENSE.bvhtools)'``, or
        ``'unknown'`` when no licence file is found.
    """
    found = []
    for folder in sorted({os.path.dirname(os.path.abspath(p)) for p in bvh_paths}):
        for name in sorted(os.listdir(folder)):
            if not name.upper().startswith(('LICENSE', 'LICENCE', 'COPYING')):
                continue
            try:
                with open(os.path.join(folder, name), encoding='utf-8', errors='replace') as f:
                    lines = [line.strip() for line in f.read().splitlines() if line.strip()]
            except OSError:
                continue
            head = '; '.join(lines[:2])
            if head and head + f' ({name})' not in found:
                found.append(head + f' ({name})')
    return ' | '.join(found) or 'unknown'
