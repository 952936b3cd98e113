"""
Streaming latency of the online temporal mode, as a robot runs it, with its accuracy.

One person walks and swings every joint (:func:`scorehmr_ros.synthetic_stream.make_stream`,
ground truth known); noisy BODY_25 keypoints and perturbed regression estimates arrive
frame by frame at ``--fps``. Every frame goes through
:class:`~scorehmr_ros.fusion.online.OnlineTemporalRefiner` exactly as the node calls it
(one ``update`` per frame, warm start from the track's window). Cases: one camera, and
four calibrated cameras (one body reprojected into every view). Engine: the fast path of
``config/fast.yaml`` (ONNX Runtime folded denoiser, joints-only body, one thread),
random denoiser weights (speed does not depend on them; accuracy with them is a sanity
check that speed is not bought with garbage, not a claim about a trained prior).

Per case: per-frame latency p50 / p99 / max (ms, wall time of ``update``), the rate a
sequential loop sustains (frames / total time), the same from the process CPU time (one
thread everywhere, so this is the wall time an idle core would give; the shared
development machine's load inflates the wall time), and MPJPE / PA-MPJPE / root error (mm,
camera 0, SMPL-24 joints) of the published pose. The first ``--warmup`` frames of every
case are excluded from both latency and accuracy: they contain the cold first frame
(``sampler.outer_iters`` iterations from the regression estimate), the filling of the
window and the runtimes' first-call allocations. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_streaming.py \
        --json benchmarks/results/streaming_cpu.json --markdown benchmarks/results/streaming_cpu.md

``--sweep`` adds cases with fewer DDIM steps (the accuracy / latency trade-off);
``--iobinding`` times the ONNX Runtime step call with and without IOBinding (blocks of
calls interleaved in one process) and adds a 1-camera case with IOBinding off;
``--compile`` adds, after the selected cases, each case again with
``engine.compile`` (the fused, compiled guidance loop, :mod:`scorehmr_ros.guidance.fused_loop`;
its graphs compile during the warm-up frames, one per row count);
``--quick`` is a smoke test (numbers not meaningful).
"""

import argparse
import json
import os
import platform
import sys
import time
from typing import Dict, List

import numpy as np
import torch

from scorehmr_ros.config import load_config
from scorehmr_ros.fusion.online import OnlineConfig, OnlineTemporalRefiner
from scorehmr_ros.metrics import mpjpe_mm, pa_mpjpe_mm
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.synthetic_stream import frame_observations, make_stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMERAS = ('cam0', 'cam1', 'cam2', 'cam3')

# Sampler settings: the paper's single-frame fitting for one camera, its multi-view
# setting for four calibrated cameras (DESIGN section 3).
SINGLE = {'tau': 50, 'ddim_step': 2}
MULTI = {'tau': 100, 'ddim_step': 10}


def default_cases() -> List[Dict]:
    """Cases of the main table: the default online mode and one outer iteration per frame."""
    cases = []
    for views, sampler in ((1, SINGLE), (4, MULTI)):
        cases += [
            {'views': views, 'sampler': sampler,
             'online': {'mode': 'window', 'window': 3, 'warm_outer_iters': 5},
             'label': 'window W=3, 5 iterations (default)'},
            {'views': views, 'sampler': sampler,
             'online': {'mode': 'window', 'window': 3, 'warm_outer_iters': 1},
             'label': 'window W=3, 1 iteration'},
            {'views': views, 'sampler': sampler,
             'online': {'mode': 'frozen', 'window': 3, 'warm_outer_iters': 1,
                        'warm_start': 'previous'},
             'label': 'frozen, warm start previous, 1 iteration'},
        ]
    return cases


def sweep_cases() -> List[Dict]:
    """One camera, one outer iteration per frame, fewer DDIM steps (what 30 Hz costs)."""
    cases = []
    for tau, dt in ((50, 5), (50, 10), (20, 4), (20, 10)):
        for online, label in (
                ({'mode': 'window', 'window': 3, 'warm_outer_iters': 1},
                 'window W=3, 1 iteration'),
                ({'mode': 'window', 'window': 2, 'warm_outer_iters': 1},
                 'window W=2, 1 iteration'),
                ({'mode': 'frozen', 'window': 3, 'warm_outer_iters': 1,
                  'warm_start': 'previous'}, 'frozen, warm start previous, 1 iteration')):
            cases.append({'views': 1, 'sampler': {'tau': tau, 'ddim_step': dt},
                          'online': online, 'label': label})
    return cases


def compile_variant_cases(taus_dts=((50, 2),), modes=('window', 'frozen'),
                          guided_chunks: bool = False) -> List[Dict]:
    """
    One camera, one outer iteration per frame, compiled, per engine variant.

    The variants differ only in how the same steps are dispatched (results equal):
    inversion (and with ``guided_chunks`` guided) steps per compiled call and inductor's
    C++ host code.
    """
    variants = [({}, 'compiled'),
                ({'invert_steps_per_call': 5}, 'compiled, inversion 5 steps/call'),
                ({'invert_steps_per_call': 5, 'cpp_wrapper': True},
                 'compiled, inversion 5 steps/call, C++ wrapper')]
    if guided_chunks:
        variants += [({'invert_steps_per_call': 5, 'steps_per_call': 5},
                      'compiled, 5 steps/call'),
                     ({'invert_steps_per_call': 5, 'steps_per_call': 5, 'cpp_wrapper': True},
                      'compiled, 5 steps/call, C++ wrapper')]
    online_modes = {
        'window': ({'mode': 'window', 'window': 3, 'warm_outer_iters': 1},
                   'window W=3, 1 iteration'),
        'frozen': ({'mode': 'frozen', 'window': 3, 'warm_outer_iters': 1,
                    'warm_start': 'previous'}, 'frozen, warm start previous, 1 iteration')}
    cases = []
    for tau, dt in taus_dts:
        for online, label in (online_modes[mode] for mode in modes):
            for engine, suffix in variants:
                cases.append({'views': 1, 'sampler': {'tau': tau, 'ddim_step': dt},
                              'online': online, 'compile': True, 'engine': engine,
                              'label': label + ', ' + suffix})
    return cases


def bench_io_binding(args, rows_list=(1, 3, 4, 8, 64), calls: int = 400,
                     blocks: int = 5) -> List[Dict]:
    """
    Per-call time of the ONNX Runtime step graph with and without IOBinding.

    Both variants share one exported model and run interleaved in blocks, so machine
    load affects them alike; the median of per-block means is reported.
    """
    import tempfile

    from scorehmr_ros.backends.onnx_export import export_onnx
    from scorehmr_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig

    torch.manual_seed(0)
    net = Denoiser(DenoiserConfig(cond_dim=args.cond_dim)).eval()
    with tempfile.TemporaryDirectory(prefix='scorehmr_bench_onnx_') as directory:
        export_onnx(net, directory)
        variants = {flag: OnnxRuntimeBackend(directory, threads=args.threads, io_binding=flag)
                    for flag in (False, True)}
    out = []
    for rows in rows_list:
        cond, x_t = torch.randn(rows, args.cond_dim), torch.randn(rows, net.diffusion_dim)
        prepared = {flag: b.prepare(cond) for flag, b in variants.items()}
        same = bool(torch.equal(variants[True].eps(x_t, 17, prepared[True]),
                                variants[False].eps(x_t, 17, prepared[False])))
        means = {False: [], True: []}
        for _ in range(blocks):
            for flag, backend in variants.items():
                started = time.perf_counter()
                for call in range(calls):
                    backend.eps(x_t, call % 1000, prepared[flag])
                means[flag].append((time.perf_counter() - started) / calls * 1e6)
        off, on = float(np.median(means[False])), float(np.median(means[True]))
        out.append({'rows': rows, 'feed_dict_us': off, 'io_binding_us': on,
                    'speedup': off / on, 'bitwise_equal': same,
                    'load_avg_1min': round(os.getloadavg()[0], 2)})
        print('ORT step, %3d rows: feed dict %7.1f us, IOBinding %7.1f us (%.2fx), '
              'equal %s' % (rows, off, on, off / on, same), flush=True)
    return out


def make_refiner(args, case: Dict) -> Refiner:
    """Fast-path engine (config/fast.yaml) with the case's sampler and guidance."""
    overrides = {'model.cond_dim': args.cond_dim, 'engine.threads': args.threads,
                 'sampler.outer_iters': args.outer_iters}
    for key, value in case['sampler'].items():
        overrides['sampler.' + key] = value
    if case['views'] > 1:
        overrides.update({'guidance.multiview': True,
                          'guidance.multiview_mode': 'calibrated'})
    if args.backend:
        overrides['engine.backend'] = args.backend
    if args.checkpoint:
        overrides['model.checkpoint'] = args.checkpoint
    if case.get('compile'):
        overrides['engine.compile'] = True
    for key, value in case.get('engine', {}).items():
        overrides['engine.' + key] = value
    cfg = load_config(os.path.join(ROOT, 'config', 'fast.yaml'), overrides)
    return Refiner(cfg)


class CaseRunner:
    """One case's online refiner, fed frame by frame; collects latency and accuracy."""

    def __init__(self, args, case: Dict):
        self.args, self.case = args, case
        self.refiner = make_refiner(args, case)
        if case.get('io_binding') is False:
            self.refiner.backend.io_binding = False
        self.online = OnlineTemporalRefiner(self.refiner,
                                            OnlineConfig(max_gap_s=1.0, **case['online']))
        self.cond_dim = self.refiner.denoiser.config.total_cond_dim
        self.views = list(range(case['views']))
        self.index = 0
        self.latency_ms, self.cpu_ms, self.preds, self.gts, self.inits = [], [], [], [], []
        self.warmup_s: List[float] = []

    def step(self, frame) -> None:
        """Refine one frame (as the node does) and record it after the warm-up frames."""
        obs = frame_observations(frame, self.cond_dim, views=self.views, people=[0])
        started, started_cpu = time.perf_counter(), time.process_time()
        update = self.online.update('person', obs, frame.stamp_ns * 1e-9)
        elapsed_ms = 1000.0 * (time.perf_counter() - started)
        elapsed_cpu_ms = 1000.0 * (time.process_time() - started_cpu)
        self.index += 1
        if self.index <= self.args.warmup:
            # The cold first frame and the compilation of the graphs land here.
            self.warmup_s.append(elapsed_ms / 1000.0)
            return
        self.latency_ms.append(elapsed_ms)
        self.cpu_ms.append(elapsed_cpu_ms)
        with torch.no_grad():
            # Row 0 is camera 0: the pose with its root in that camera.
            joints = self.refiner.body(update.rotmats[:1], update.betas[:1]).joints45[:, :24]
        self.preds.append(joints + update.cam_t[:1, None])
        self.gts.append(torch.from_numpy(frame.views[0].gt_joints[:1]).float())
        self.inits.append(torch.from_numpy(frame.views[0].init_joints[:1]).float())

    def result(self) -> Dict:
        """The case's table row."""
        case, refiner, cpu_ms = self.case, self.refiner, self.cpu_ms
        lat = np.asarray(self.latency_ms)
        pred, gt, init = torch.cat(self.preds), torch.cat(self.gts), torch.cat(self.inits)
        return {
            'cameras': case['views'], 'label': case['label'],
            'tau': case['sampler']['tau'], 'dt': case['sampler']['ddim_step'],
            'online': case['online'], 'engine_overrides': case.get('engine', {}),
            'timed_frames': int(lat.size),
            'warmup_frames_s': [round(v, 3) for v in self.warmup_s],
            'latency_p50_ms': float(np.percentile(lat, 50)),
            'latency_p99_ms': float(np.percentile(lat, 99)),
            'latency_max_ms': float(lat.max()),
            'rate_hz': float(lat.size / (lat.sum() / 1000.0)),
            # One thread everywhere: CPU time per frame is what the wall time would be on
            # an otherwise idle core (the shared machine's load inflates the wall time).
            'cpu_p50_ms': float(np.percentile(cpu_ms, 50)),
            'cpu_p99_ms': float(np.percentile(cpu_ms, 99)),
            'cpu_rate_hz': float(len(cpu_ms) / (sum(cpu_ms) / 1000.0)),
            'mpjpe_mm': float(mpjpe_mm(pred, gt).mean()),
            'pa_mpjpe_mm': float(pa_mpjpe_mm(pred, gt).mean()),
            'root_err_mm': float(1000 * (pred[:, 0] - gt[:, 0]).norm(dim=-1).mean()),
            'start_mpjpe_mm': float(mpjpe_mm(init, gt).mean()),
            'load_avg_1min': round(os.getloadavg()[0], 2),
            'backend': refiner.backend.name,
            'compile': bool(refiner.config.engine.compile),
            'io_binding': bool(getattr(refiner.backend, 'io_binding', False)),
        }


def run_case(args, case: Dict, frames) -> Dict:
    """Stream the frames through one online refiner; return latency and accuracy."""
    runner = CaseRunner(args, case)
    for frame in frames:
        runner.step(frame)
    return runner.result()


def run_interleaved(args, cases: List[Dict], frames) -> List[Dict]:
    """
    Stream the frames through all cases in turn, frame by frame.

    Every case sees frame k right after the others did, so load changes on a shared
    machine reach all of them alike: their ratios are fair even when absolute times drift.
    """
    runners = [CaseRunner(args, case) for case in cases]
    for frame in frames:
        for runner in runners:
            runner.step(frame)
    return [runner.result() for runner in runners]


def markdown(rows: List[Dict]) -> str:
    """Markdown table of the rows."""
    lines = ['| cameras | tau / dt | online mode | wall p50 / p99 ms | wall Hz | '
             'CPU p50 / p99 ms | CPU Hz | MPJPE mm | PA-MPJPE mm | root err mm | load |',
             '|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append('| %d | %d / %d | %s | %.1f / %.1f | %.1f | %.1f / %.1f | %.1f | %.1f | '
                     '%.1f | %.0f | %.2f |' % (
                         r['cameras'], r['tau'], r['dt'], r['label'], r['latency_p50_ms'],
                         r['latency_p99_ms'], r['rate_hz'], r['cpu_p50_ms'], r['cpu_p99_ms'],
                         r['cpu_rate_hz'], r['mpjpe_mm'], r['pa_mpjpe_mm'], r['root_err_mm'],
                         r['load_avg_1min']))
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    """Run the cases and write JSON / markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=60)
    parser.add_argument('--warmup', type=int, default=5,
                        help='first frames of every case excluded from the statistics')
    parser.add_argument('--fps', type=float, default=30.0)
    parser.add_argument('--cond-dim', type=int, default=3072)
    parser.add_argument('--outer-iters', type=int, default=10,
                        help="S_max of a track's cold first frame")
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--backend', default=None,
                        help="engine.backend instead of fast.yaml's (e.g. folded)")
    parser.add_argument('--checkpoint', default=None,
                        help='denoiser weights (default: random; the accuracy columns then '
                             'only show that speed is not bought with garbage)')
    parser.add_argument('--only', nargs='*', type=int, default=None,
                        help='indices of the cases to run (default all)')
    parser.add_argument('--sweep', action='store_true', help='add the fewer-steps cases')
    parser.add_argument('--no-default', action='store_true', help='skip the main cases')
    parser.add_argument('--iobinding', action='store_true',
                        help='time ONNX Runtime IOBinding on/off (per call and per frame)')
    parser.add_argument('--compile', action='store_true',
                        help='repeat the cases with engine.compile (fused loop)')
    parser.add_argument('--variants', nargs='*', default=None, metavar='TAU/DT',
                        help='add compiled 1-camera cases per engine variant (inversion '
                             'steps per call, C++ wrapper) at these settings, e.g. 50/2 50/5')
    parser.add_argument('--variant-modes', nargs='+', default=['window', 'frozen'],
                        choices=('window', 'frozen'), help='online modes of --variants')
    parser.add_argument('--guided-chunks', action='store_true',
                        help='--variants also with 5 guided steps per call (compiling '
                             'takes minutes)')
    parser.add_argument('--variant-only', nargs='+', type=int, default=None,
                        help='indices of the --variants cases to keep')
    parser.add_argument('--interleave', action='store_true',
                        help='feed the cases frame by frame in turn (fair ratios under '
                             'changing load) instead of one case after the other')
    parser.add_argument('--seed', type=int, default=3)
    parser.add_argument('--json')
    parser.add_argument('--markdown')
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.warmup, args.outer_iters = 4, 1, 1
    if args.warmup >= args.frames:
        parser.error('--warmup must be smaller than --frames')
    torch.set_num_threads(args.threads)
    cases = ([] if args.no_default else default_cases()) + (sweep_cases() if args.sweep
                                                            else [])
    if args.only is not None:
        cases = [cases[i] for i in args.only]
    binding_rows = bench_io_binding(args) if args.iobinding else None
    if args.iobinding:
        # End to end: the 1-camera default case with IOBinding on and off, back to back.
        base = dict(default_cases()[0], sampler={'tau': 50, 'ddim_step': 10})
        cases += [dict(base, io_binding=True, label=base['label'] + ', IOBinding on'),
                  dict(base, io_binding=False, label=base['label'] + ', IOBinding off')]
    if args.quick:
        cases = [dict(c, sampler={'tau': 10, 'ddim_step': 5}) for c in cases[:1]] + \
            [dict(c, sampler={'tau': 10, 'ddim_step': 5}) for c in cases if c['views'] > 1][:1]
    if args.compile:
        # Same cases, compiled: before and after in one process, same frames and load.
        cases += [dict(c, compile=True, label=c['label'] + ', compiled')
                  for c in cases if not c.get('compile')]
    if args.variants is not None:
        variants = compile_variant_cases(
            [tuple(int(v) for v in item.split('/')) for item in args.variants] or [(50, 2)],
            args.variant_modes, args.guided_chunks)
        cases += (variants if args.variant_only is None
                  else [variants[i] for i in args.variant_only])
    body = make_refiner(args, {'views': 1, 'sampler': SINGLE}).body
    frames = make_stream(body, cameras=CAMERAS, num_people=1, num_frames=args.frames,
                         seed=args.seed, image_hw=(480, 640), focal_px=600.0,
                         keypoint_noise_px=2.0, fps=args.fps, pose_motion_rad=0.3,
                         motion_hz=0.5)
    rows = (run_interleaved(args, cases, frames) if args.interleave
            else [run_case(args, case, frames) for case in cases])
    for row in rows:
        print('%d cam, tau %d dt %d, %-42s p50 %7.1f ms  p99 %7.1f ms  %6.1f Hz  '
              'CPU p50 %7.1f ms  MPJPE %.1f mm (start %.1f)' % (
                  row['cameras'], row['tau'], row['dt'], row['label'], row['latency_p50_ms'],
                  row['latency_p99_ms'], row['rate_hz'], row['cpu_p50_ms'], row['mpjpe_mm'],
                  row['start_mpjpe_mm']), flush=True)
    table = markdown(rows)
    print(table)
    meta = {'frames': args.frames, 'warmup_frames_excluded': args.warmup, 'fps': args.fps,
            'threads': args.threads, 'cond_dim': args.cond_dim, 'seed': args.seed,
            'cold_outer_iters': args.outer_iters, 'engine': 'config/fast.yaml',
            'weights': args.checkpoint or 'random', 'python': sys.version.split()[0],
            'torch': torch.__version__, 'platform': platform.platform(),
            'cpus': os.cpu_count()}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump({'meta': meta, 'rows': rows, 'ort_io_binding': binding_rows}, handle,
                      indent=2)
    if args.markdown:
        with open(args.markdown, 'w', encoding='utf-8') as handle:
            handle.write(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
