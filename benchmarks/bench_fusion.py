"""
Accuracy of calibrated multi-view fusion and of the temporal modes, on synthetic data.

Ground truth comes from :mod:`scorehmr_ros.synthetic_stream` (people seen by up to four
calibrated cameras; keypoints with pixel noise; regression estimates perturbed in pose
and in depth). Every case runs the same engine (fast path: folded denoiser, joints-only
body; random denoiser weights unless ``--checkpoint``), so differences come from the
observations used. Errors are measured in camera 0's frame on the 24 SMPL joints:
MPJPE (pelvis aligned), PA-MPJPE, root error (pelvis position, not aligned), and Acc Err
(second differences of pelvis-aligned joints, mm per frame^2, the quantity the literature
reports as "mm/s^2"). Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fusion.py --json FILE

``--quick`` runs a reduced version (a smoke test, numbers not meaningful).
"""

import argparse
import json
import platform
import sys
import time

import torch

from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
from scorehmr_ros.fusion.online import OnlineConfig, OnlineTemporalRefiner
from scorehmr_ros.metrics import accel_error_mm, mpjpe_mm, pa_mpjpe_mm
from scorehmr_ros.observations import Observations
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.synthetic_stream import frame_observations, make_stream

CAMERAS = ('cam0', 'cam1', 'cam2', 'cam3')


def make_refiner(args, body=None, **guidance) -> Refiner:
    """Engine on the fast path with the benchmark's sampler settings and prior."""
    cfg = RefinerConfig().replace(
        model={'checkpoint': args.checkpoint, 'cond_dim': args.cond_dim},
        engine={'backend': 'folded', 'body': 'joints', 'threads': 1},
        sampler={'tau': args.tau, 'ddim_step': args.dt, 'outer_iters': args.outer_iters},
        guidance=guidance)
    if args.prior == 'zero':
        # eps = 0 exactly: guidance only, an idealised prior that leaves every pose where
        # it is (separates the observation terms from what a random prior does).
        denoiser = Denoiser(DenoiserConfig(cond_dim=args.cond_dim))
        torch.nn.init.zeros_(denoiser.final_mlp.weight)
        torch.nn.init.zeros_(denoiser.final_mlp.bias)
        return Refiner(cfg, denoiser=denoiser, body=body)
    return Refiner(cfg, body=body)


def joints_of(refiner, rotmats, betas, cam_t) -> torch.Tensor:
    """[N, 24, 3] SMPL joints in the camera frame."""
    with torch.no_grad():
        return refiner.body(rotmats, betas).joints45[:, :24] + cam_t[:, None]


def errors(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    """MPJPE, PA-MPJPE, root error of [N, 24, 3] joints, mm."""
    return {'mpjpe_mm': float(mpjpe_mm(pred, gt).mean()),
            'pa_mpjpe_mm': float(pa_mpjpe_mm(pred, gt).mean()),
            'root_err_mm': float(1000 * (pred[:, 0] - gt[:, 0]).norm(dim=-1).mean())}


def bench_multiview(args, body) -> dict:
    """Single view vs 2/3/4 calibrated views vs the consistency loss (independent frames)."""
    frames = make_stream(body, cameras=CAMERAS, num_people=args.people,
                         num_frames=args.mv_frames, seed=args.seed, image_hw=(480, 640),
                         focal_px=600.0, keypoint_noise_px=2.0, fps=1.0)
    cases = {
        'regression estimate (cam0)': None,
        'single view (cam0)': ([0], {}),
        'calibrated 2 views': ([0, 1], {'multiview': True, 'multiview_mode': 'calibrated'}),
        'calibrated 3 views': ([0, 1, 2], {'multiview': True, 'multiview_mode': 'calibrated'}),
        'calibrated 4 views': ([0, 1, 2, 3],
                               {'multiview': True, 'multiview_mode': 'calibrated'}),
        'calibrated 4 views, anchor init': (
            [0, 1, 2, 3], {'multiview': True, 'multiview_mode': 'calibrated',
                           'calibrated_init': 'anchor'}),
        'calibrated 4 views, summed loss': (
            [0, 1, 2, 3], {'multiview': True, 'multiview_mode': 'calibrated',
                           'calibrated_loss': 'sum'}),
        'consistency loss 4 views (paper) + keypoints': (
            [0, 1, 2, 3], {'multiview': True, 'multiview_mode': 'consistency'}),
    }
    gt = torch.cat([torch.from_numpy(f.views[0].gt_joints).float() for f in frames])
    out = {}
    for name, case in cases.items():
        if case is None:
            pred = torch.cat([torch.from_numpy(f.views[0].init_joints).float() for f in frames])
            out[name] = errors(pred, gt)
            continue
        views, guidance = case
        refiner = make_refiner(args, body, **guidance)
        preds, seconds = [], 0.0
        for frame in frames:
            obs = frame_observations(frame, refiner.denoiser.config.total_cond_dim, views=views)
            started = time.perf_counter()
            result = refiner.refine(obs)
            seconds += time.perf_counter() - started
            rows = list(range(0, obs.batch_size, len(views)))       # camera 0 of each person
            preds.append(joints_of(refiner, result.rotmats[rows, 0], result.betas[rows, 0],
                                   result.cam_t[rows, 0]))
        out[name] = dict(errors(torch.cat(preds), gt),
                         s_per_person_frame=seconds / (len(frames) * args.people))
        print(f'{name:48s} {out[name]}', flush=True)
    return out


def sequence_rows(frames, person: int, cond_dim: int) -> Observations:
    """Camera-0 rows of one person over a sequence, chained by frame_prev."""
    parts = [frame_observations(f, cond_dim, views=[0], people=[person]) for f in frames]
    fields = {}
    for name in ('init_rotmats', 'init_betas', 'cond', 'init_cam_t', 'keypoints_2d',
                 'focal_px', 'center_px', 'image_size'):
        fields[name] = torch.cat([getattr(p, name) for p in parts])
    n = len(parts)
    return Observations(keypoint_layout='body25', view_group=torch.arange(n),
                        frame_prev=torch.arange(n) - 1, **fields)


def stream_online(refiner, config: OnlineConfig, frames, cond, people: int, views):
    """
    Feed a stream frame by frame to a fresh online refiner, as the node does.

    :param refiner: the engine.
    :param config: online settings.
    :param frames: synthetic stream frames.
    :param cond: [C] features of every row.
    :param people: people of the stream (one track each).
    :param views: camera indices whose rows each update gets.
    :return: ``(per person a list of [24, 3] joints per frame, seconds in update_many)``.
    """
    online = OnlineTemporalRefiner(refiner, config)
    seqs, seconds = [[] for _ in range(people)], 0.0
    for frame in frames:
        items = [(p, frame_observations(frame, cond, views=views, people=[p]),
                  frame.stamp_ns * 1e-9) for p in range(people)]
        started = time.perf_counter()
        updates = online.update_many(items)
        seconds += time.perf_counter() - started
        for p, update in enumerate(updates):
            seqs[p].append(joints_of(refiner, update.rotmats, update.betas, update.cam_t)[0])
    return seqs, seconds


def temporal_metrics(pred_seq, gt_seq) -> dict:
    """Errors of per-person sequences ([T, 24, 3] each)."""
    pred, gt = torch.cat(pred_seq), torch.cat(gt_seq)
    acc = torch.cat([accel_error_mm(p - p[:, :1], g - g[:, :1])
                     for p, g in zip(pred_seq, gt_seq)])
    return dict(errors(pred, gt), acc_err_mm_per_frame2=float(acc.mean()))


def bench_temporal(args, body) -> dict:
    """Per-frame vs offline whole-sequence vs online windows, one camera."""
    frames = make_stream(body, cameras=CAMERAS[:1], num_people=args.people,
                         num_frames=args.frames, seed=args.seed + 1, image_hw=(480, 640),
                         focal_px=600.0, keypoint_noise_px=2.0, fps=args.fps,
                         pose_motion_rad=0.3, motion_hz=0.5)
    gt_seq = [torch.stack([torch.from_numpy(f.views[0].gt_joints[p]).float() for f in frames])
              for p in range(args.people)]
    out = {'settings': {'frames': args.frames, 'fps': args.fps, 'people': args.people}}
    init_seq = [torch.stack([torch.from_numpy(f.views[0].init_joints[p]).float()
                             for f in frames]) for p in range(args.people)]
    out['regression estimate'] = temporal_metrics(init_seq, gt_seq)

    refiner = make_refiner(args, body)
    cond = refiner.denoiser.config.total_cond_dim
    seqs, seconds = [[] for _ in range(args.people)], 0.0
    for frame in frames:
        obs = frame_observations(frame, cond, views=[0])
        started = time.perf_counter()
        result = refiner.refine(obs)
        seconds += time.perf_counter() - started
        joints = joints_of(refiner, result.rotmats[:, 0], result.betas[:, 0], result.cam_t[:, 0])
        for p in range(args.people):
            seqs[p].append(joints[p])
    out['per-frame (cold, S=%d)' % args.outer_iters] = dict(
        temporal_metrics([torch.stack(s) for s in seqs], gt_seq),
        s_per_person_frame=seconds / (args.frames * args.people))
    print('per-frame', out['per-frame (cold, S=%d)' % args.outer_iters], flush=True)

    offline = make_refiner(args, body, temporal=True)
    seqs, seconds = [], 0.0
    for p in range(args.people):
        obs = sequence_rows(frames, p, cond)
        started = time.perf_counter()
        result = offline.refine(obs)
        seconds += time.perf_counter() - started
        seqs.append(joints_of(offline, result.rotmats[:, 0], result.betas[:, 0],
                              result.cam_t[:, 0]))
    out['offline whole sequence (paper)'] = dict(
        temporal_metrics(seqs, gt_seq), s_per_person_frame=seconds / (args.frames * args.people))
    print('offline', out['offline whole sequence (paper)'], flush=True)

    sweep = []
    configs = [OnlineConfig(mode='window', window=w, warm_outer_iters=s, max_gap_s=10.0,
                            window_translation=trans)
               for trans in args.window_translations for w in args.windows
               for s in args.warm_iters]
    configs += [OnlineConfig(mode='frozen', window=3, warm_outer_iters=s, warm_start=start,
                             max_gap_s=10.0)
                for s in args.frozen_warm_iters for start in args.warm_starts]
    for config in configs:
        seqs, seconds = stream_online(refiner, config, frames, cond, args.people, [0])
        row = dict(mode=config.mode, window=config.window,
                   warm_outer_iters=config.warm_outer_iters,
                   warm_start=config.warm_start if config.mode == 'frozen' else None,
                   window_translation=(config.window_translation if config.mode == 'window'
                                       else None),
                   s_per_person_frame=seconds / (args.frames * args.people),
                   **temporal_metrics([torch.stack(s) for s in seqs], gt_seq))
        sweep.append(row)
        print('online', row, flush=True)
    out['online sweep'] = sweep
    return out


def main(argv=None) -> int:
    """Run the benchmark and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--json', default=None)
    parser.add_argument('--checkpoint', default=None, help='denoiser weights (default random)')
    parser.add_argument('--cond-dim', type=int, default=3072)
    parser.add_argument('--prior', choices=['random', 'zero'], default='random',
                        help='random: the embedded default weights (or --checkpoint); '
                             'zero: eps = 0, guidance only')
    parser.add_argument('--tau', type=int, default=50)
    parser.add_argument('--dt', type=int, default=10)
    parser.add_argument('--outer-iters', type=int, default=10)
    parser.add_argument('--people', type=int, default=2)
    parser.add_argument('--mv-frames', type=int, default=8)
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--fps', type=float, default=10.0)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--windows', type=int, nargs='+', default=[2, 3, 5, 8],
                        help='window mode: W values')
    parser.add_argument('--warm-iters', type=int, nargs='+', default=[1, 2, 3, 5, 10],
                        help='window mode: outer iterations of calls with history')
    parser.add_argument('--window-translations', nargs='+', default=['refined', 'regression'],
                        choices=['refined', 'regression'],
                        help='window mode: translation starts (OnlineConfig.window_translation)')
    parser.add_argument('--frozen-warm-iters', type=int, nargs='*', default=[2, 10],
                        help='frozen mode: outer iterations (none: skip the frozen mode)')
    parser.add_argument('--warm-starts', nargs='+',
                        default=['predicted', 'previous', 'regression'],
                        help='frozen mode: warm starts')
    parser.add_argument('--skip', nargs='*', default=[], choices=['multiview', 'temporal'])
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    if args.quick:
        args.people, args.mv_frames, args.frames = 1, 1, 5
        args.windows, args.warm_iters, args.outer_iters = [2], [1], 2
        args.frozen_warm_iters, args.warm_starts = [1], ['predicted']
        args.window_translations = ['refined']
    torch.set_num_threads(1)
    torch.manual_seed(0)
    body = make_refiner(args).body
    results = {'settings': {k: v for k, v in vars(args).items() if k != 'json'},
               'machine': {'python': sys.version.split()[0], 'torch': torch.__version__,
                           'platform': platform.platform()}}
    if 'multiview' not in args.skip:
        results['multiview'] = bench_multiview(args, body)
    if 'temporal' not in args.skip:
        results['temporal'] = bench_temporal(args, body)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
