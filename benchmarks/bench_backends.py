r"""
Seconds per person-frame and peak memory per engine path, as ratios to the reference.

Paper settings (tau 50, dt 2, S_max 10, C 3072, keypoint guidance with early stopping),
random weights, the synthetic SMPL-format body, generated scenes. Every (path, batch)
runs in its own process (clean peak-RSS reading); all rows of one table come from one
invocation, so the ratios compare runs taken minutes apart on the same machine. Usage::

    .venv/bin/python benchmarks/bench_backends.py --batch 1 8 64 \
        --json benchmarks/results/backends_cpu.json --markdown benchmarks/results/backends_cpu.md
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

PATHS = {
    'reference (torch, mesh)': {'backend': 'torch', 'body': 'mesh'},
    'folded torch, mesh': {'backend': 'folded', 'body': 'mesh'},
    'folded torch, joints': {'backend': 'folded', 'body': 'joints'},
    'onnxruntime, joints': {'backend': 'onnxruntime', 'body': 'joints'},
    'onnxruntime, joints, compiled': {'backend': 'onnxruntime', 'body': 'joints',
                                      'compile': True},
    # engine.steps_per_call: K DDIM steps per compiled call (compiling takes ~K times longer)
    'compiled, 5 steps/call': {'backend': 'onnxruntime', 'body': 'joints', 'compile': True,
                               'steps_per_call': 5},
}


def run_one(engine: dict, batch: int, threads: int, outer_iters: int, device: str,
            early_stopping: str = 'relative') -> dict:
    """Refine one generated scene in this process; return timing and peak memory."""
    import torch

    from scorehmr_ros.config import RefinerConfig
    from scorehmr_ros.refiner import Refiner
    from scorehmr_ros.scene import make_scene, SceneSpec

    if threads:
        torch.set_num_threads(threads)
    cfg = RefinerConfig(device=device).replace(engine=dict(engine, threads=threads),
                                               sampler={'outer_iters': outer_iters,
                                                        'early_stopping': early_stopping})
    refiner = Refiner(cfg)
    obs = make_scene(refiner.body, SceneSpec(num_people=batch, cond_dim=3072), seed=batch).obs
    warmup_s = None
    if engine.get('compile'):
        # The first call per batch size compiles; report it separately.
        start = time.perf_counter()
        refiner.refine(obs)
        warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    result = refiner.refine(obs)
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {'seconds': seconds, 'seconds_per_person_frame': seconds / batch,
           'peak_rss_mib': peak_mib, 'x0_checksum': float(result.x0.double().abs().sum()),
           'compile_warmup_s': warmup_s,
           # the refined states themselves, so the parent can compare paths row by row
           'x0': result.x0.double().cpu().reshape(-1).tolist()}
    if device.startswith('cuda'):
        out['peak_cuda_mib'] = torch.cuda.max_memory_allocated() / 2 ** 20
    # Other jobs on a shared machine change absolute times: record the load with them.
    out['load_avg_1min'] = round(os.getloadavg()[0], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 8, 64])
    parser.add_argument('--paths', nargs='+', default=list(PATHS), choices=list(PATHS))
    parser.add_argument('--threads', type=int, default=0, help='intra-op threads (0: default)')
    parser.add_argument('--outer-iters', type=int, default=10, help='S_max (paper: 10)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--early-stopping', default='relative',
                        help="sampler.early_stopping ('none': no per-row freezing, so the "
                             'x0 differences show the arithmetic alone)')
    parser.add_argument('--json')
    parser.add_argument('--markdown')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, batch = json.loads(args.child)
        print(json.dumps(run_one(engine, batch, args.threads, args.outer_iters, args.device,
                                 args.early_stopping)))
        return
    rows = []
    for batch in args.batch:
        for name in args.paths:
            child = json.dumps([PATHS[name], batch])
            proc = subprocess.run(
                [sys.executable, __file__, '--child', child, '--threads', str(args.threads),
                 '--outer-iters', str(args.outer_iters), '--device', args.device,
                 '--early-stopping', args.early_stopping],
                capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS='ignore'))
            if proc.returncode != 0:
                raise SystemExit(f'{name} batch {batch} failed:\n{proc.stderr[-2000:]}')
            row = dict(json.loads(proc.stdout.strip().splitlines()[-1]), path=name, batch=batch)
            rows.append(row)
            print('%-30s batch %3d: %8.3f s/person-frame  peak RSS %7.0f MiB  load %s' % (
                name, batch, row['seconds_per_person_frame'], row['peak_rss_mib'],
                row['load_avg_1min']), flush=True)
    for row in rows:
        ref = [r for r in rows if r['batch'] == row['batch'] and r['path'] == args.paths[0]]
        row['speedup_vs_first'] = ref[0]['seconds'] / row['seconds'] if ref else None
        # Largest difference of the refined 6D states from the first path's (same scene).
        row['x0_max_abs_diff_vs_first'] = max(
            abs(a - b) for a, b in zip(row['x0'], ref[0]['x0'])) if ref else None
    for row in rows:
        del row['x0']
    meta = {'machine': platform.machine(), 'cpus': os.cpu_count(), 'device': args.device,
            'threads': args.threads, 'outer_iters': args.outer_iters,
            'early_stopping': args.early_stopping,
            'python': platform.python_version(),
            'settings': 'tau 50, dt 2, C 3072, keypoints + early stopping, random weights'}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump({'meta': meta, 'rows': rows}, handle, indent=2)
    if args.markdown:
        lines = ['| path | batch | s / person-frame | speed-up vs %s | max abs diff x0 | '
                 'peak RSS MiB | load (1 min) |' % args.paths[0],
                 '|---|---:|---:|---:|---:|---:|---:|']
        for r in rows:
            lines.append('| %s | %d | %.3f | %.1fx | %.1e | %.0f | %.2f |' % (
                r['path'], r['batch'], r['seconds_per_person_frame'], r['speedup_vs_first'],
                r['x0_max_abs_diff_vs_first'], r['peak_rss_mib'], r['load_avg_1min']))
        with open(args.markdown, 'w', encoding='utf-8') as handle:
            handle.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
