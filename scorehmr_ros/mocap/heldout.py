r"""
Body poses from the held-out part of the motion-capture clips, for demo scenes.

The shipped prior (``builtin:mocap_prior_coco17``) was trained on the first part of each
BVH clip; :func:`scorehmr_ros.mocap.dataset.split_frames` holds out the last
``holdout_fraction`` after a ``gap_s`` gap. :func:`heldout_poses` retargets the same clips
to the same body, resamples them at the same rate and keeps one in ``frame_stride`` of exactly
those held-out frames, so a scene posed from them shows plausible human motion the prior
has not seen.

The package ships them as ``scorehmr_ros/data/heldout_poses.npz`` (see the README there),
regenerated with::

    python -m scorehmr_ros.mocap.heldout ../shared/data/mocap/bvhtools_test.bvh \
        ../shared/data/mocap/bvhtools_test3.bvh --body anny \
        --out scorehmr_ros/data/heldout_poses.npz

File arrays (no pickles): ``body_pose_aa`` [N, 23, 3] float16 axis-angle local rotations of
SMPL joints 1..23 (no global orientation, no translation), ``clip_id`` [N] (position of the
clip in ``clips``), ``frame_index`` [N] (frame of the clip at the data set's rate, 15 fps),
``frame_stride`` (every how many of those frames a pose is kept), ``fps`` (rate of the kept
poses, 15 / ``frame_stride``), ``clips``, ``holdout_fraction``, ``gap_s``, ``body``,
``source``, ``licence``.

Letters: N poses, B people, F frames.
"""

import argparse
from dataclasses import dataclass
import functools
import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from scorehmr_ros.body.kinematics import JointsOnlyBody
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from scorehmr_ros.mocap.dataset import (
    default_licence, load_motion, MocapSetSpec, split_frames)
from scorehmr_ros.mocap.retarget import slerp

_LOG = logging.getLogger(__name__)

#: The shipped file.
HELDOUT_FILE = Path(__file__).resolve().parents[1] / 'data' / 'heldout_poses.npz'
#: Arrays a pose file must hold.
REQUIRED = ('body_pose_aa', 'clip_id', 'frame_index', 'frame_stride', 'fps', 'clips')


@dataclass(frozen=True)
class HeldoutPoses:
    """
    Held-out body poses, grouped into contiguous clips.

    :param body_pose_aa: [N, 23, 3] float64 axis-angle of SMPL joints 1..23.
    :param clip_id: [N] clip of each pose.
    :param frame_index: [N] frame of each pose in its clip, at the data set's rate.
    :param frame_stride: ``frame_index`` step between consecutive kept poses.
    :param fps: frame rate of the kept poses.
    :param clips: clip names (``clip_id`` indexes them).
    :param path: the file read (``''`` if built in memory).
    """

    body_pose_aa: np.ndarray
    clip_id: np.ndarray
    frame_index: np.ndarray
    frame_stride: int
    fps: float
    clips: tuple
    path: str = ''

    def __len__(self) -> int:
        """N."""
        return int(self.body_pose_aa.shape[0])

    def runs(self):
        """
        Contiguous runs of frames (one clip, consecutive ``frame_index``).

        :return: list of ``(first_row, length)``.
        """
        breaks = np.flatnonzero((np.diff(self.clip_id) != 0)
                                | (np.diff(self.frame_index) != self.frame_stride)) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(self)]))
        return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


def heldout_poses(bvh_paths: Sequence[str], spec: MocapSetSpec = MocapSetSpec(),
                  body: Optional[BodyModel] = None, licence: Optional[str] = None,
                  frame_stride: int = 2) -> dict:
    """
    Arrays of the held-out frames of the clips, as the prior's data set split them.

    :param bvh_paths: BVH files, in the order of ``scorehmr make-mocap-set``.
    :param spec: split and rate (the defaults are the shipped prior's).
    :param body: body the motion is retargeted to (default: the synthetic body; the
        shipped file uses the anny-derived body the prior was trained on).
    :param licence: licence text (default: the ``LICENSE*`` files beside the BVH files).
    :param frame_stride: keep every ``frame_stride``-th held-out frame (2: 7.5 fps, which
        keeps the shipped file at a few hundred poses; the stream interpolates).
    :return: the file's arrays (module docstring).
    :raises BvhError: on unreadable BVH files.
    :raises ValueError: if a clip is too short to split.
    """
    if not bvh_paths:
        raise ValueError('heldout_poses needs at least one BVH file')
    if not isinstance(frame_stride, int) or frame_stride < 1:
        raise ValueError(f'frame_stride must be a positive integer, got {frame_stride!r}')
    if body is None:
        body = BodyModel.from_config(None, dtype=torch.float64)
    # The same rest joints as make_mocap_set, so the local rotations match its eval.npz.
    rest = JointsOnlyBody(body).double().rest(torch.zeros(1, 10, dtype=torch.float64))
    rest_joints = rest.joints[0].numpy()
    poses, clip_ids, frame_ids = [], [], []
    for clip_id, path in enumerate(bvh_paths):
        motion = load_motion(path, spec, rest_joints)
        frames = split_frames(motion.num_frames, spec, path)[1][::frame_stride]
        body_rot = torch.from_numpy(motion.rotmats[frames, 1:])
        poses.append(matrix_to_axis_angle(body_rot).numpy())
        clip_ids.append(np.full(len(frames), clip_id, dtype=np.int16))
        frame_ids.append(frames.astype(np.int32))
    names = [os.path.basename(p) for p in bvh_paths]
    return {
        'body_pose_aa': np.concatenate(poses).astype(np.float16),
        'clip_id': np.concatenate(clip_ids), 'frame_index': np.concatenate(frame_ids),
        'clips': np.array(names), 'frame_stride': np.array(frame_stride, np.int32),
        'fps': np.array(spec.fps / frame_stride, np.float32),
        'holdout_fraction': np.array(spec.holdout_fraction, np.float32),
        'gap_s': np.array(spec.gap_s, np.float32), 'body': np.array(body.name),
        'source': np.array('held-out frames (last %g after a %g s gap, at %g fps, one in '
                           '%d) of BVH motion capture (%s) retargeted to the %s; SMPL '
                           'joints 1..23, axis-angle' % (
                               spec.holdout_fraction, spec.gap_s, spec.fps, frame_stride,
                               ', '.join(names), body.name)),
        'licence': np.array(licence if licence is not None else default_licence(bvh_paths)),
    }


def load_heldout_poses(path: Optional[Union[str, os.PathLike]] = None) -> HeldoutPoses:
    """
    Read a held-out pose file (default: the shipped one; cached).

    :param path: ``.npz`` written by :func:`heldout_poses` (default :data:`HELDOUT_FILE`).
    :return: the poses.
    :raises ValueError: if the file is missing, lacks an array or holds bad values.
    """
    return _load(str(path if path is not None else HELDOUT_FILE))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> HeldoutPoses:
    if not os.path.isfile(path):
        raise ValueError(f'{path}: held-out pose file not found (the package ships '
                         'scorehmr_ros/data/heldout_poses.npz)')
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in REQUIRED if k not in data.files]
        if missing:
            raise ValueError(f'{path}: missing arrays {", ".join(missing)}')
        aa = data['body_pose_aa'].astype(np.float64)
        clip_id = data['clip_id'].astype(np.int64)
        frame_index = data['frame_index'].astype(np.int64)
        fps = float(data['fps'])
        stride = int(data['frame_stride'])
        clips = tuple(str(c) for c in data['clips'])
    if aa.ndim != 3 or aa.shape[1:] != (23, 3) or len(aa) == 0:
        raise ValueError(f'{path}: body_pose_aa must be [N > 0, 23, 3], got {aa.shape}')
    if not np.isfinite(aa).all():
        raise ValueError(f'{path}: body_pose_aa holds non-finite values')
    if clip_id.shape != (len(aa),) or frame_index.shape != (len(aa),):
        raise ValueError(f'{path}: clip_id and frame_index must be [{len(aa)}], got '
                         f'{clip_id.shape} and {frame_index.shape}')
    if not (0 <= clip_id.min() and clip_id.max() < len(clips)) or not fps > 0:
        raise ValueError(f'{path}: clip_id must index clips ({len(clips)}) and fps be '
                         f'positive, got ids {clip_id.min()}..{clip_id.max()}, fps {fps}')
    if stride < 1:
        raise ValueError(f'{path}: frame_stride must be >= 1, got {stride}')
    return HeldoutPoses(body_pose_aa=aa, clip_id=clip_id, frame_index=frame_index,
                        frame_stride=stride, fps=fps, clips=clips, path=path)


def sample_body_poses(poses: HeldoutPoses, count: int, gen: torch.Generator) -> torch.Tensor:
    """
    Draw body poses (one held-out frame each, uniformly).

    :param poses: the held-out poses.
    :param count: B.
    :param gen: random generator.
    :return: [B, 23, 3, 3] float64 local rotations of SMPL joints 1..23.
    """
    index = torch.randint(len(poses), (count,), generator=gen)
    return axis_angle_to_matrix(torch.from_numpy(poses.body_pose_aa[index.numpy()]))


def sample_body_sequences(poses: HeldoutPoses, count: int, num_frames: int, fps: float,
                          gen: torch.Generator) -> torch.Tensor:
    """
    Draw contiguous motion: per person a random stretch of one clip, played at ``fps``.

    The file's frames (at ``poses.fps``) are interpolated (slerp) at ``k * poses.fps / fps``
    for frame ``k``, so the motion keeps its real speed.

    :param poses: the held-out poses.
    :param count: B.
    :param num_frames: F.
    :param fps: frame rate of the output.
    :param gen: random generator.
    :return: [F, B, 23, 3, 3] float64 local rotations of SMPL joints 1..23.
    :raises ValueError: if no contiguous run is long enough.
    """
    if not fps > 0 or num_frames < 1:
        raise ValueError(f'fps must be > 0 and num_frames >= 1, got {fps}, {num_frames}')
    position = np.arange(num_frames) * (poses.fps / fps)          # in file frames
    span = int(np.ceil(position[-1])) + 1
    runs = [(first, length) for first, length in poses.runs() if length >= span]
    if not runs:
        raise ValueError(f'{poses.path or "held-out poses"}: no contiguous run of {span} '
                         f'frames ({num_frames} frames at {fps:g} fps from {poses.fps:g} fps)')
    rot = axis_angle_to_matrix(torch.from_numpy(poses.body_pose_aa)).numpy()
    low = np.floor(position).astype(np.int64)
    frac = (position - low)[:, None, None]                        # [F, 1, 1]
    out = []
    for _ in range(count):
        first, length = runs[int(torch.randint(len(runs), (1,), generator=gen))]
        start = first + int(torch.randint(length - span + 1, (1,), generator=gen))
        a = rot[start + low]
        b = rot[np.minimum(start + low + 1, first + length - 1)]
        out.append(slerp(a, b, frac))
    return torch.from_numpy(np.stack(out, axis=1))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m scorehmr_ros.mocap.heldout BVH... --out FILE [--body anny]``."""
    parser = argparse.ArgumentParser(prog='python -m scorehmr_ros.mocap.heldout',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('bvh', nargs='+', help='BVH files, in make-mocap-set order')
    parser.add_argument('--out', required=True, help='output .npz')
    parser.add_argument('--body', default='anny',
                        help="body.model_path of the body to retarget to ('anny', the "
                        "prior's; 'synthetic'; or a SMPL file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    body = BodyModel.from_config(None if args.body == 'synthetic' else args.body,
                                 dtype=torch.float64)
    arrays = heldout_poses(args.bvh, body=body)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f'wrote {args.out}: {len(arrays["body_pose_aa"])} poses, '
          f'{os.path.getsize(args.out)} bytes; {arrays["source"]}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
