"""
Evaluation files whose starts come from the keypoints instead of a regressor.

``python -m scorehmr_ros.evaluation.initial_starts --data eval.npz --out eval_prior.npz
--method prior --checkpoint builtin:mocap_prior_coco17`` copies a COCO-17 evaluation file
(``scorehmr make-mocap-set``), keeps every ``--frame-step``-th frame and replaces
``init_rotmats`` / ``init_betas`` / ``init_cam_t`` by
:func:`scorehmr_ros.perception.initial_estimate.initial_estimate` of its keypoints. Then
``scorehmr eval`` on the written file measures the start (``init_*``), the refinement from
it and prior-free fitting from it: the table of the model card.

``--method landmarks3d`` (or ``auto`` with ``--landmark-noise-m``) needs 3D landmarks,
which the evaluation files do not hold: they are synthesised from the truth, the COCO-17
keypoints of the ground-truth body (camera-aligned, hip-centred, metres) plus Gaussian
noise of ``--landmark-noise-m`` per axis and ``--landmark-depth-noise-m`` more along the
camera's z (MediaPipe's world landmarks err most in depth), scaled in depth by
``--landmark-depth-scale`` (< 1: a flattened body).
"""

import argparse
import logging
import sys
from typing import List, Optional

import numpy as np

from scorehmr_ros.perception.initial_estimate import (
    body_keypoints, initial_estimate, METHODS)

LOG = logging.getLogger(__name__)


def synthetic_landmarks(body, rotmats: np.ndarray, betas: np.ndarray, noise_m: float,
                        depth_noise_m: float = 0.0, depth_scale: float = 1.0,
                        seed: int = 0) -> np.ndarray:
    """
    3D COCO-17 landmarks like MediaPipe's world landmarks, from true bodies plus noise.

    :param body: the body model.
    :param rotmats: [N, 24, 3, 3] true rotations (global orientation in the camera frame).
    :param betas: [N, 10] true shape.
    :param noise_m: Gaussian noise per axis, metres (standard deviation).
    :param depth_noise_m: extra Gaussian noise along the camera's z, metres.
    :param depth_scale: factor on the hip-relative depth (< 1 flattens the body).
    :param seed: noise seed.
    :return: [N, 17, 4] ``(x, y, z, conf = 1)``, hip-centred, camera-aligned, metres.
    """
    if noise_m < 0 or depth_noise_m < 0 or not np.isfinite(depth_scale):
        raise ValueError(f'synthetic_landmarks: noise must be >= 0 and depth_scale finite, '
                         f'got {noise_m}, {depth_noise_m}, {depth_scale}')
    joints = body_keypoints(body, rotmats, betas)
    joints = joints - joints[:, 11:13].mean(axis=1, keepdims=True)   # hips' midpoint
    rng = np.random.default_rng(seed)
    joints = joints + rng.normal(0.0, noise_m, joints.shape) if noise_m else joints
    if depth_noise_m:
        joints[..., 2] += rng.normal(0.0, depth_noise_m, joints.shape[:2])
    joints[..., 2] *= depth_scale
    return np.concatenate([joints, np.ones(joints.shape[:2] + (1,))], axis=-1)


def replace_starts(data_path: str, out_path: str, refiner, method: str, frame_step: int = 1,
                   num_samples: int = 16, seed: int = 0,
                   landmark_noise_m: Optional[float] = None, landmark_depth_noise_m: float = 0.0,
                   landmark_depth_scale: float = 1.0) -> int:
    """
    Write a copy of an evaluation file with keypoint-based starts.

    :param data_path: evaluation ``.npz`` with COCO-17 ``keypoints_2d``.
    :param out_path: output ``.npz``.
    :param refiner: refiner whose body (and, for ``prior``, denoiser) is used.
    :param method: ``rest``, ``prior`` or ``auto``.
    :param frame_step: keep rows whose ``frame_index`` is a multiple of this.
    :param num_samples: prior samples per row.
    :param seed: sampling seed (and landmark noise seed).
    :param landmark_noise_m: with a value, synthetic 3D landmarks with this noise
        (:func:`synthetic_landmarks`) are passed to the estimate (``landmarks3d``, ``auto``).
    :param landmark_depth_noise_m: extra depth noise of the landmarks, metres.
    :param landmark_depth_scale: depth factor of the landmarks.
    :return: rows written.
    """
    with np.load(data_path) as data:
        arrays = {k: data[k] for k in data.files}
    layout = str(arrays.get('keypoint_layout', 'body25'))
    if layout != 'coco17':
        raise ValueError(f'{data_path}: keypoint_layout must be coco17, got {layout!r}')
    if frame_step < 1:
        raise ValueError(f'frame_step must be >= 1, got {frame_step}')
    n = len(arrays['keypoints_2d'])
    frame = arrays.get('frame_index', np.arange(n))
    keep = np.nonzero(frame % frame_step == 0)[0]
    out = {k: (v[keep] if v.ndim and v.shape[0] == n else v) for k, v in arrays.items()}
    landmarks = None
    if landmark_noise_m is not None:
        landmarks = synthetic_landmarks(refiner.body, out['gt_rotmats'].astype(np.float64),
                                        out['gt_betas'].astype(np.float64), landmark_noise_m,
                                        landmark_depth_noise_m, landmark_depth_scale, seed)
    elif method == 'landmarks3d':
        raise ValueError('method landmarks3d needs landmark_noise_m (synthetic landmarks)')
    rotmats = np.zeros((len(keep), 24, 3, 3))
    cam_t = np.zeros((len(keep), 3))
    for i in range(len(keep)):
        est = initial_estimate(refiner, out['keypoints_2d'][i:i + 1],
                               out['image_size'][i], float(out['focal_px'][i, 0]),
                               center_px=out['center_px'][i], method=method,
                               num_samples=num_samples, seed=seed + i,
                               landmarks=None if landmarks is None else landmarks[i:i + 1])
        rotmats[i], cam_t[i] = est.rotmats[0], est.cam_t[0]
    out.pop('init_pose_aa', None)
    out['init_rotmats'] = rotmats.astype(np.float32)
    out['init_betas'] = np.zeros((len(keep), 10), np.float32)
    out['init_cam_t'] = cam_t.astype(np.float32)
    np.savez(out_path, **out)
    return len(keep)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: see the module docstring."""
    from scorehmr_ros.config import load_config
    from scorehmr_ros.refiner import Refiner

    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--data', required=True, help='COCO-17 evaluation .npz')
    parser.add_argument('--out', required=True, help='output .npz')
    parser.add_argument('--method', choices=METHODS, default='auto')
    parser.add_argument('--checkpoint', default='builtin:mocap_prior_coco17')
    parser.add_argument('--body', default=None, help='body.model_path (e.g. anny)')
    parser.add_argument('--frame-step', type=int, default=1)
    parser.add_argument('--samples', type=int, default=16)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--landmark-noise-m', type=float, default=None,
                        help='synthesise 3D landmarks from the truth with this noise (m)')
    parser.add_argument('--landmark-depth-noise-m', type=float, default=0.0)
    parser.add_argument('--landmark-depth-scale', type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] %(name)s: %(message)s')
    refiner = Refiner(load_config(None, {'model.checkpoint': args.checkpoint,
                                         'body.model_path': args.body}))
    rows = replace_starts(args.data, args.out, refiner, args.method, args.frame_step,
                          args.samples, args.seed, args.landmark_noise_m,
                          args.landmark_depth_noise_m, args.landmark_depth_scale)
    LOG.info('wrote %s (%d rows, starts: %s)', args.out, rows, args.method)
    return 0


if __name__ == '__main__':
    sys.exit(main())
