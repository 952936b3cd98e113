"""
Step size of L_temp (rho_temporal) in the online window mode: 1 view vs calibrated views.

Same data, engine and metrics as ``benchmarks/bench_fusion.py`` (synthetic people with
joints swinging 0.3 rad at 0.5 Hz, 10 fps, keypoints with 2 px noise, fast engine path,
random denoiser weights unless ``--checkpoint``; errors in camera 0's frame on the 24
SMPL joints). Per seed and view count: per-frame refinement (S_max, the reference) and the
online window (``OnlineConfig`` defaults: W = 3, S = 5 with history, carried translations)
for every ``--rho-temporal``. With more than one view the engine is calibrated
multi-view, as the node's fusion pipeline builds it. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_online_rho.py --json FILE

``--quick`` runs a reduced version (a smoke test, numbers not meaningful).
"""

import argparse
import json
from pathlib import Path
import platform
import sys
import time

import torch

from scorehmr_ros.fusion.online import OnlineConfig
from scorehmr_ros.synthetic_stream import frame_observations, make_stream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fusion import (joints_of, make_refiner, stream_online,  # noqa: E402,I100
                          temporal_metrics)

CAMERAS = ('cam0', 'cam1', 'cam2', 'cam3')
METRICS = ('mpjpe_mm', 'pa_mpjpe_mm', 'root_err_mm', 'acc_err_mm_per_frame2')


def run_case(args, body, views: int, seed: int) -> list:
    """Per-frame and online rows of one view count and seed."""
    guidance = {'multiview': True, 'multiview_mode': 'calibrated'} if views > 1 else {}
    refiner = make_refiner(args, body, **guidance)
    cond = refiner.denoiser.config.total_cond_dim
    frames = make_stream(body, cameras=CAMERAS[:views], num_people=args.people,
                         num_frames=args.frames, seed=seed, image_hw=(480, 640),
                         focal_px=600.0, keypoint_noise_px=2.0, fps=args.fps,
                         pose_motion_rad=0.3, motion_hz=0.5)
    gt = [torch.stack([torch.from_numpy(f.views[0].gt_joints[p]).float() for f in frames])
          for p in range(args.people)]
    view_ids = list(range(views))
    rows = []

    seqs, seconds = [[] for _ in range(args.people)], 0.0
    for frame in frames:
        obs = frame_observations(frame, cond, views=view_ids)
        started = time.perf_counter()
        result = refiner.refine(obs)
        seconds += time.perf_counter() - started
        joints = joints_of(refiner, result.rotmats[:, 0], result.betas[:, 0],
                           result.cam_t[:, 0])
        for p in range(args.people):
            seqs[p].append(joints[p * views])            # camera 0's row of person p
    rows.append(dict(views=views, seed=seed, case=f'per-frame S={args.outer_iters}',
                     rho_temporal=None, s_per_person_frame=seconds / len(frames) / args.people,
                     **temporal_metrics([torch.stack(s) for s in seqs], gt)))
    print(rows[-1], flush=True)

    for rho in args.rho_temporal:
        config = OnlineConfig(window=args.window, warm_outer_iters=args.warm_iters,
                              max_gap_s=10.0, rho_temporal=rho, rho_temporal_multiview=rho)
        seqs, seconds = stream_online(refiner, config, frames, cond, args.people, view_ids)
        rows.append(dict(views=views, seed=seed,
                         case=f'online W={args.window} S={args.warm_iters}',
                         rho_temporal=rho,
                         s_per_person_frame=seconds / len(frames) / args.people,
                         **temporal_metrics([torch.stack(s) for s in seqs], gt)))
        print(rows[-1], flush=True)
    return rows


def summarise(rows: list) -> list:
    """Mean over seeds of every (views, case, rho) row."""
    keys = []
    for row in rows:
        key = (row['views'], row['case'], row['rho_temporal'])
        if key not in keys:
            keys.append(key)
    out = []
    for views, case, rho in keys:
        same = [r for r in rows
                if (r['views'], r['case'], r['rho_temporal']) == (views, case, rho)]
        mean = {m: sum(r[m] for r in same) / len(same) for m in METRICS + ('s_per_person_frame',)}
        out.append(dict(views=views, case=case, rho_temporal=rho, seeds=len(same), **mean))
    return out


def markdown(summary: list) -> str:
    """Table of the summary (mean over seeds)."""
    lines = ['| views | case | rho_temporal | MPJPE | PA-MPJPE | root err | Acc Err | '
             's / person-frame |', '|---:|---|---:|---:|---:|---:|---:|---:|']
    for row in summary:
        rho = '-' if row['rho_temporal'] is None else f"{row['rho_temporal']:g}"
        lines.append(f"| {row['views']} | {row['case']} | {rho} | {row['mpjpe_mm']:.1f} | "
                     f"{row['pa_mpjpe_mm']:.1f} | {row['root_err_mm']:.1f} | "
                     f"{row['acc_err_mm_per_frame2']:.1f} | {row['s_per_person_frame']:.2f} |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    """Run the sweep; print the table; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--json', default=None)
    parser.add_argument('--checkpoint', default=None, help='denoiser weights (default random)')
    parser.add_argument('--cond-dim', type=int, default=3072)
    parser.add_argument('--prior', choices=['random', 'zero'], default='random')
    parser.add_argument('--tau', type=int, default=50)
    parser.add_argument('--dt', type=int, default=10)
    parser.add_argument('--outer-iters', type=int, default=10, help='per-frame S_max')
    parser.add_argument('--window', type=int, default=OnlineConfig().window)
    parser.add_argument('--warm-iters', type=int, default=OnlineConfig().warm_outer_iters)
    parser.add_argument('--people', type=int, default=2)
    parser.add_argument('--frames', type=int, default=20)
    parser.add_argument('--fps', type=float, default=10.0)
    parser.add_argument('--views', type=int, nargs='+', default=[1, 3],
                        help='view counts (> 1: calibrated multi-view)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--rho-temporal', type=float, nargs='+', default=[0, 1, 3, 10, 30])
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    if any(v < 1 or v > len(CAMERAS) for v in args.views):
        parser.error(f'--views must be in 1..{len(CAMERAS)}')
    if args.quick:
        args.people, args.frames, args.outer_iters, args.warm_iters = 1, 4, 2, 1
        args.seeds, args.rho_temporal = args.seeds[:1], args.rho_temporal[:2]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    body = make_refiner(args).body
    rows = [row for views in args.views for seed in args.seeds
            for row in run_case(args, body, views, seed)]
    summary = summarise(rows)
    print(markdown(summary))
    if args.json:
        results = {'settings': {k: v for k, v in vars(args).items() if k != 'json'},
                   'machine': {'python': sys.version.split()[0], 'torch': torch.__version__,
                               'platform': platform.platform()},
                   'rows': rows, 'summary': summary}
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
