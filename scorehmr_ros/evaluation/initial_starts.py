"""
Evaluation files whose starts come from the keypoints instead of a regressor.

``python -m scorehmr_ros.evaluation.initial_starts --data eval.npz --out eval_prior.npz
--method prior --checkpoint builtin:mocap_prior_coco17`` copies a COCO-17 evaluation file
(``scorehmr make-mocap-set``), keeps every ``--frame-step``-th frame and replaces
``init_rotmats`` / ``init_betas`` / ``init_cam_t`` by
:func:`scorehmr_ros.perception.initial_estimate.initial_estimate` of its keypoints. Then
``scorehmr eval`` on the written file measures the start (``init_*``), the refinement from
it and prior-free fitting from it: the table of the model card.
"""

import argparse
import logging
import sys
from typing import List, Optional

import numpy as np

from scorehmr_ros.perception.initial_estimate import initial_estimate, METHODS

LOG = logging.getLogger(__name__)


def replace_starts(data_path: str, out_path: str, refiner, method: str, frame_step: int = 1,
                   num_samples: int = 16, seed: int = 0) -> int:
    """
    Write a copy of an evaluation file with keypoint-based starts.

    :param data_path: evaluation ``.npz`` with COCO-17 ``keypoints_2d``.
    :param out_path: output ``.npz``.
    :param refiner: refiner whose body (and, for ``prior``, denoiser) is used.
    :param method: ``rest``, ``prior`` or ``auto``.
    :param frame_step: keep rows whose ``frame_index`` is a multiple of this.
    :param num_samples: prior samples per row.
    :param seed: sampling seed.
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
    rotmats = np.zeros((len(keep), 24, 3, 3))
    cam_t = np.zeros((len(keep), 3))
    for i in range(len(keep)):
        est = initial_estimate(refiner, out['keypoints_2d'][i:i + 1],
                               out['image_size'][i], float(out['focal_px'][i, 0]),
                               center_px=out['center_px'][i], method=method,
                               num_samples=num_samples, seed=seed + i)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] %(name)s: %(message)s')
    refiner = Refiner(load_config(None, {'model.checkpoint': args.checkpoint,
                                         'body.model_path': args.body}))
    rows = replace_starts(args.data, args.out, refiner, args.method, args.frame_step,
                          args.samples, args.seed)
    LOG.info('wrote %s (%d rows, starts: %s)', args.out, rows, args.method)
    return 0


if __name__ == '__main__':
    sys.exit(main())
