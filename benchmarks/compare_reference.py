"""
Compare the engine with outputs recorded from another ScoreHMR implementation.

A fixture directory holds, per case, an ``.npz`` with the inputs of one ``sample()`` call
of the reference implementation (keys ``in_*`` in the authors' batch naming), its
settings and its outputs (``x_0``, ``camera_translation``), plus the checkpoint and the
body model the reference used. This script runs the same inputs through
:class:`~scorehmr_ros.refiner.Refiner` and prints the largest differences. Usage::

    .venv/bin/python benchmarks/compare_reference.py FIXTURE_DIR --body body.npz \\
        --extra-regressor SMPL_to_J19.pkl --betas-stats betas_stats.npz
"""

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.smpl_file import load_smpl_arrays
from scorehmr_ros.config import ModelConfig
from scorehmr_ros.diffusion.checkpoint import load_denoiser
from scorehmr_ros.reference_batch import (
    config_from_authors_settings, observations_from_authors_batch)
from scorehmr_ros.refiner import Refiner


def run_case(path: str, body: BodyModel, betas_stats: str) -> dict:
    """Refine one fixture's inputs and compare with its recorded outputs."""
    with np.load(path, allow_pickle=False) as data:
        d = {k: data[k] for k in data.files}
    t = lambda k: torch.as_tensor(d[k]).float()  # noqa: E731
    use_betas = bool(d['use_betas'])
    cfg = config_from_authors_settings(d, ModelConfig(
        checkpoint=str(d['ckpt_path']), betas_stats=betas_stats if use_betas else None))
    obs = observations_from_authors_batch(d)
    refiner = Refiner(cfg, body=body)
    start = time.perf_counter()
    result = refiner.refine(obs)
    elapsed = time.perf_counter() - start
    row = {'case': os.path.basename(path)[:-4], 'rows': obs.batch_size,
           'x0_max_abs_diff': float((result.x0[:, 0] - t('x_0')).abs().max()),
           'engine_s': elapsed, 'reference_s': float(d.get('sample_wall_time_s', np.nan))}
    if 'camera_translation' in d:
        row['cam_max_abs_diff'] = float((result.cam_t[:, 0] - t('camera_translation')).abs().max())
    start_x = refiner.encode(obs.init_rotmats, obs.init_betas)
    row['start_max_abs_diff'] = float((start_x - t('x_start_regression')).abs().max())
    return row


def compare_denoiser(path: str) -> list:
    """Denoiser outputs for recorded (x, t, c) triples."""
    rows = []
    with np.load(path, allow_pickle=False) as data:
        d = {k: data[k] for k in data.files}
    for prefix in ('pose', 'betas'):
        net, _ = load_denoiser(str(d[prefix + '_ckpt_path']))
        with torch.no_grad():
            eps = net(torch.as_tensor(d[prefix + '_x']), torch.as_tensor(d[prefix + '_t']),
                      torch.as_tensor(d[prefix + '_c']))
        rows.append({'case': 'denoiser_' + prefix,
                     'eps_max_abs_diff': float((eps - torch.as_tensor(d[prefix + '_eps']))
                                               .abs().max())})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('fixtures', help='directory with the case .npz files')
    parser.add_argument('--body', required=True, help='SMPL-layout .npz/.pkl used there')
    parser.add_argument('--extra-regressor', help='the [19, 6890] regressor used there')
    parser.add_argument('--betas-stats', help='betas stats .npz for shape checkpoints')
    parser.add_argument('--tol', type=float, default=1e-4)
    parser.add_argument('--json', help='write the table here')
    args = parser.parse_args()
    body = BodyModel(load_smpl_arrays(args.body, extra_regressor=args.extra_regressor))
    rows = []
    for path in sorted(glob.glob(os.path.join(args.fixtures, '*.npz'))):
        if os.path.basename(path) == 'denoiser.npz':
            rows.extend(compare_denoiser(path))
        else:
            rows.append(run_case(path, body, args.betas_stats))
        print(json.dumps(rows[-1]), flush=True)
    worst = max(max(v for k, v in r.items() if k.endswith('max_abs_diff')) for r in rows)
    print('largest difference: %.3g (tolerance %.0e) -> %s' % (
        worst, args.tol, 'PASS' if worst <= args.tol else 'FAIL'))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump({'rows': rows, 'largest_difference': worst}, handle, indent=2)
    return 0 if worst <= args.tol else 1


if __name__ == '__main__':
    sys.exit(main())
