"""
Seconds per person-frame of the refinement engine at the paper's settings.

Paper settings: tau 50, dt 2, S_max 10, feature size 3072 (PARE), keypoint guidance with
early stopping, random weights (speed does not depend on the weights), the synthetic
SMPL-format body. Usage::

    .venv/bin/python benchmarks/bench_refine.py --batch 1 8 --repeats 2 --json out.json

Prints one line per batch size and optionally writes JSON. Ratios between code paths are
only meaningful when measured in the same run (the machines are shared and noisy).
"""

import argparse
import json
import platform
import time

import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.scene import make_scene, SceneSpec


def bench(refiner: Refiner, body: BodyModel, batch: int, repeats: int) -> dict:
    """Time ``refine`` on a generated scene of ``batch`` people; best of ``repeats``."""
    obs = make_scene(body, SceneSpec(num_people=batch, cond_dim=3072), seed=batch).obs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        refiner.refine(obs)
        times.append(time.perf_counter() - start)
    best = min(times)
    return {'batch': batch, 'seconds_best': best, 'seconds_all': times,
            'seconds_per_person_frame': best / batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--json', help='write results here')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    refiner = Refiner(RefinerConfig())
    results = []
    for batch in args.batch:
        row = bench(refiner, refiner.body, batch, args.repeats)
        results.append(row)
        print('reference path  batch %3d: %.3f s per person-frame (best of %d: %.2f s)' % (
            batch, row['seconds_per_person_frame'], args.repeats, row['seconds_best']),
            flush=True)
    if args.json:
        meta = {'machine': platform.machine(), 'processor': platform.processor(),
                'torch': torch.__version__, 'threads': torch.get_num_threads(),
                'settings': 'tau 50, dt 2, S_max 10, C 3072, keypoints + early stopping'}
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump({'meta': meta, 'results': results}, handle, indent=2)


if __name__ == '__main__':
    main()
