"""
Streaming latency through the node process: what a robot gets from a live stream.

One person walks and swings every joint (:func:`scorehmr_ros.synthetic_stream.make_stream`,
ground truth known), seen by 1 or 4 calibrated cameras whose poses arrive on /tf_static.
A testbed process publishes every camera's CameraInfo, Image and detections at ``--rate``
Hz, stamped with the wall clock, over real DDS into the node process (``config/node.yaml``
with ``fixed_frame`` world, ``extrinsics_from_tf``, ``temporal: online``); the frames play
forward and backward so that the motion stays continuous however long the run. The
first ``--warmup`` seconds are not measured (the track's cold first frame and the compiled
graphs' first calls; the warm-up also waits for 20 outputs); then, for ``--duration``
seconds:

- input and output rates (fused bodies per second; the node drops sets it cannot keep up
  with, oldest first, and counts them: ``queue_dropped``, ``stale_dropped``);
- the node's receive-to-publish latency (``latency_s`` of every body) and the end-to-end
  latency (input stamp to arrival here), p50 / p99;
- the error of the published joints against the ground truth (mean over joints and
  outputs, metres, in the world frame: absolute, not root-aligned);
- the seconds from the first input to the first output and to the end of the warm-up
  (the compiled graphs' build time shows here), and from the node's start to its
  subscriptions (``--warmup-frames``: the node compiles there, before any input).

Random denoiser weights (the upstream rig of the tests: 3072 features, synthetic body);
speed does not depend on them. Usage::

    .venv/bin/python benchmarks/bench_node_streaming.py --cameras 1 4 \
        --json benchmarks/results/node_streaming.json
"""

import argparse
import json
import os
from pathlib import Path
import random
import signal
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scorehmr_ros.demo_ros import isolated_ros_env  # noqa: E402 - after the path set-up

STARTUP_TIMEOUT_S = 120.0
#: Sampler settings: the paper's single-frame fitting for one camera, its multi-view
#: setting for several calibrated cameras (DESIGN section 3).
SAMPLERS = {1: (50, 2), 4: (100, 10)}


def _percentiles(values) -> Dict[str, Optional[float]]:
    data = np.asarray(values, dtype=np.float64)
    return {f'p{p}': (float(np.percentile(data, p)) if data.size else None)
            for p in (50, 90, 99)}


def ping_pong(count: int, index: int) -> int:
    """Frame of step ``index`` when ``count`` frames play forward, backward, forward..."""
    if count < 2:
        return 0
    period = 2 * count - 2
    k = index % period
    return k if k < count else period - k


def run_case(cameras: int, rate_hz: float, warmup_s: float, duration_s: float,
             overrides: Dict, work_dir: Path, log=sys.stderr) -> Dict:
    """
    Start a node, stream into it, measure; see the module docstring.

    :param cameras: number of calibrated cameras (1 person).
    :param rate_hz: frames per second (all cameras per frame).
    :param warmup_s: seconds streamed before measuring.
    :param duration_s: seconds measured.
    :param overrides: node parameters (``refiner.engine.compile`` style names).
    :param work_dir: where the parameters and the node log go.
    :param log: progress stream.
    :return: the case's measurements.
    """
    from scorehmr_ros.body.model import BodyModel
    from scorehmr_ros.ros import testbed
    from scorehmr_ros.synthetic_stream import make_stream, WORLD_FRAME

    names = tuple(f'cam{i}' for i in range(cameras))
    frames = make_stream(BodyModel.from_config(None), cameras=names, num_people=1,
                         num_frames=90, seed=7, image_hw=(480, 640), focal_px=600.0,
                         keypoint_noise_px=2.0, fps=rate_hz, pose_motion_rad=0.3,
                         motion_hz=0.5)
    env = isolated_ros_env(work_dir / 'ros_log', random.SystemRandom().randint(1, 200))
    namespace = testbed.random_namespace()
    params = testbed.write_params(work_dir / 'params.yaml', dict({
        'cameras': names, 'fixed_frame': WORLD_FRAME, 'extrinsics_from_tf': True,
        'temporal': 'online', 'diagnostics_period_s': 1.0}, **overrides))
    with testbed.ros_variables(env):
        node = testbed.NodeProcess(params, env, namespace, work_dir / 'node.log')
        bed = testbed.Testbed(int(env['ROS_DOMAIN_ID']), namespace, names,
                              input_qos='sensor_data')
        try:
            # A node with warmup_frames compiles before it subscribes: allow for it.
            timeout_s = STARTUP_TIMEOUT_S + (1200.0 if overrides.get('warmup_frames') else 0.0)
            started_s = time.monotonic()
            if not bed.spin_until(lambda: bed.ready() or not node.alive(), timeout_s) \
                    or not node.alive():
                raise RuntimeError('the node did not start:\n' + node.output()[-3000:])
            ready_s = time.monotonic() - started_s
            bed.publish_camera_tf(frames[0].views, WORLD_FRAME)
            row = _stream(node, bed, frames, rate_hz, warmup_s, duration_s, log)
            row['node_ready_s'] = round(ready_s, 1)
            # Cameras the node saw as silent: its callbacks starved (e.g. by compilation).
            row['camera_silent_warnings'] = node.output().count(' silent for > ')
            return row
        finally:
            bed.close()
            if node.alive():
                node.stop(signal.SIGKILL)


def _stream(node, bed, frames, rate_hz, warmup_s, duration_s, log,
            warmup_outputs: int = 20, max_warmup_s: float = 1200.0) -> Dict:
    """
    Publish paced frames; return the measurements of the part after the warm-up.

    The warm-up lasts ``warmup_s`` and until ``warmup_outputs`` bodies have arrived (the
    graphs compile on the first frames; how long that takes depends on the engine), at
    most ``max_warmup_s``.
    """
    from scorehmr_ros.ros import testbed

    wall_minus_mono_ns = time.time_ns() - time.monotonic_ns()
    truth: Dict[int, np.ndarray] = {}
    published = measured_inputs = 0
    start_s = time.monotonic()
    measure_s = end_s = None
    counters_before: Dict[str, int] = {}
    first_output_s = None
    next_s = start_s
    while True:
        now_s = time.monotonic()
        if (end_s is not None and now_s >= end_s) or not node.alive():
            break
        outputs = len(bed.received['bodies'])
        if first_output_s is None and outputs:
            first_output_s = bed.received['bodies'][0][0] - start_s
        if measure_s is None and now_s - start_s >= warmup_s and (
                outputs >= warmup_outputs or now_s - start_s >= max_warmup_s):
            measure_s, end_s = now_s, now_s + duration_s
            counters_before = bed.counters() or {'_none': 0}
            log.write(f'warm-up done after {now_s - start_s:.0f} s: {outputs} outputs\n')
        if now_s >= next_s:
            frame = frames[ping_pong(len(frames), published)]
            stamp_ns = time.time_ns()
            for view in frame.views:
                bed.publish_view(view, stamp_ns)
            truth[stamp_ns] = frame.views[0].gt_joints[0]  # camera 0 = world
            published += 1
            measured_inputs += measure_s is not None
            next_s += 1.0 / rate_hz
            if next_s < now_s - 1.0:  # far behind (machine stalled): do not burst
                next_s = now_s
        bed.executor.spin_once(timeout_sec=max(0.0, next_s - time.monotonic()))
    bed.spin_for(2.0)
    crashed = not node.alive()
    warmup_done_s = None if measure_s is None else round(measure_s - start_s, 1)
    if measure_s is None:  # the node died during the warm-up: nothing is measured
        measure_s = float('inf')
    counters = bed.counters()
    node.stop(signal.SIGINT)
    latencies, e2e, errors, outputs = [], [], [], 0
    for arrived_s, msg in bed.received['bodies']:
        stamp_ns = testbed.stamp_to_ns(msg.header.stamp)
        if stamp_ns - wall_minus_mono_ns < measure_s * 1e9 or not msg.bodies:
            continue
        outputs += 1
        e2e.append((arrived_s * 1e9 + wall_minus_mono_ns - stamp_ns) * 1e-9)
        for body in msg.bodies:
            latencies.append(body.latency_s)
            gt = truth.get(stamp_ns)
            if gt is not None:
                joints = np.array([[p.x, p.y, p.z] for p in body.joints])
                errors.append(float(np.linalg.norm(joints - gt, axis=-1).mean()))
    delta = {k: counters.get(k, 0) - counters_before.get(k, 0)
             for k in ('queue_dropped', 'stale_dropped', 'sync_dropped', 'non_finite_output')}
    return {
        'warmup_s': warmup_done_s,
        'first_output_s': None if first_output_s is None else round(first_output_s, 1),
        'input_frames': measured_inputs, 'input_rate_hz': round(measured_inputs / duration_s, 2),
        'output_sets': outputs, 'output_rate_hz': round(outputs / duration_s, 2),
        'latency_s': _percentiles(latencies), 'end_to_end_s': _percentiles(e2e),
        'world_error_m': round(float(np.mean(errors)), 4) if errors else None,
        'dropped': delta, 'crashed': crashed,
    }


def markdown(rows: List[Dict]) -> str:
    """Markdown table of the cases."""
    lines = ['| cameras | tau / dt | online mode | engine | in Hz | out Hz | node latency '
             'p50 / p99 ms | end-to-end p50 / p99 ms | dropped (queue / stale) | '
             'world error mm |', '|---:|---|---|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lat, e2e = r['latency_s'], r['end_to_end_s']
        ms = (lambda v: '-' if v is None else '%.0f' % (1000 * v))  # noqa: E731
        lines.append('| %d | %d / %d | %s | %s | %.1f | %.1f | %s / %s | %s / %s | %d / %d | %s |'
                     % (r['cameras'], r['tau'], r['dt'], r['online'], r['engine'],
                        r['input_rate_hz'], r['output_rate_hz'], ms(lat['p50']),
                        ms(lat['p99']), ms(e2e['p50']), ms(e2e['p99']),
                        r['dropped']['queue_dropped'], r['dropped']['stale_dropped'],
                        '-' if r['world_error_m'] is None
                        else '%.0f' % (1000 * r['world_error_m'])))
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    """Run the cases; print a markdown table; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--cameras', nargs='+', type=int, default=[1, 4])
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second (30)')
    parser.add_argument('--warmup', type=float, default=150.0,
                        help='seconds streamed before measuring (compilation happens here)')
    parser.add_argument('--duration', type=float, default=30.0, help='seconds measured')
    parser.add_argument('--mode', default='frozen', choices=('window', 'frozen'),
                        help='temporal_mode of the node')
    parser.add_argument('--warm-iters', type=int, default=1, help='temporal_warm_iters')
    parser.add_argument('--no-compile', action='store_true',
                        help='engine.compile off (the eager fast path)')
    parser.add_argument('--steps-per-call', type=int, default=1,
                        help='engine.steps_per_call (guided steps per compiled call)')
    parser.add_argument('--cpp-wrapper', action='store_true', help='engine.cpp_wrapper')
    parser.add_argument('--warmup-frames', type=int, default=0,
                        help="the node's warmup_frames (synthetic frames refined before it "
                             'subscribes: compilation happens there)')
    parser.add_argument('--max-queue', type=int, default=1,
                        help='max_queue of the node (1: the worker always takes the newest '
                             'set, the lowest latency; node.yaml has 2)')
    parser.add_argument('--sampler', nargs=2, type=int, metavar=('TAU', 'DT'),
                        help='tau and dt for every case (default: 50/2 for one camera, '
                             '100/10 for several)')
    parser.add_argument('--json')
    args = parser.parse_args(argv)
    rows = []
    for cameras in args.cameras:
        tau, dt = args.sampler or SAMPLERS.get(cameras, SAMPLERS[4])
        engine = {'refiner.engine.compile': not args.no_compile,
                  'refiner.engine.invert_steps_per_call': 5,
                  'refiner.engine.steps_per_call': args.steps_per_call,
                  'refiner.engine.cpp_wrapper': args.cpp_wrapper}
        overrides = dict({'temporal_mode': args.mode, 'temporal_warm_iters': args.warm_iters,
                          'max_queue': args.max_queue, 'warmup_frames': args.warmup_frames,
                          'refiner.sampler.tau': tau, 'refiner.sampler.ddim_step': dt},
                         **engine)
        with tempfile.TemporaryDirectory(prefix='node_streaming_') as work:
            row = run_case(cameras, args.rate, args.warmup, args.duration, overrides,
                           Path(work))
        row.update({'cameras': cameras, 'tau': tau, 'dt': dt,
                    'online': f'{args.mode}, {args.warm_iters} iteration(s)',
                    'engine': ('eager fast path' if args.no_compile else
                               f'compiled, {args.steps_per_call} step(s)/call'
                               + (', C++ wrapper' if args.cpp_wrapper else '')),
                    'overrides': overrides, 'load_avg_1min': round(os.getloadavg()[0], 2)})
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = markdown(rows)
    print(table)
    if args.json:
        meta = {'rate_hz': args.rate, 'warmup_s': args.warmup, 'duration_s': args.duration,
                'weights': 'random', 'cpus': os.cpu_count()}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({'meta': meta, 'rows': rows}, indent=1),
                                   encoding='utf-8')
    return 0 if all(not r['crashed'] and r['output_sets'] > 0 for r in rows) else 1


if __name__ == '__main__':
    raise SystemExit(main())
