"""
Soak test: the node under a steady 30 Hz 3-camera stream for a long time.

A synthetic 3-camera rosbag2 (30 frames at ``--rate`` Hz, 2 people) is written, read back
and replayed in a loop into the node process (``config/node.yaml``: the fast engine path)
at ``--rate`` Hz, each frame restamped with the wall clock (the per-camera jitter of the
bag is kept), so the node sees a live stream rather than a bag loop. Every second the
node's resident memory (``/proc/<pid>/status`` VmRSS) is sampled. At the end the node is
stopped with SIGINT. Reported: input and output rates, the node's receive-to-publish
latency (``latency_s`` of every body) and the end-to-end latency (stamp to arrival here),
stalls (gaps between outputs > 1 s), the counters of ``/diagnostics``, and the RSS growth
after warm-up: mean RSS of the last 5 % of the run over the mean of the 5 % that follows
the first ``--warmup`` fraction (default 20 %). Pass bound: growth < 5 %.

    .venv/bin/python benchmarks/soak.py --duration 600      # writes results/soak_600.json
"""

import argparse
import json
import math
from pathlib import Path
import random
import shutil
import signal
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scorehmr_ros import bag_io  # noqa: E402 - after the path set-up above
from scorehmr_ros.demo_ros import isolated_ros_env  # noqa: E402

GROWTH_BOUND = 0.05
STALL_S = 1.0
STARTUP_TIMEOUT_S = 90.0


def load_frames(bag: Path) -> List[Dict[str, Dict[str, object]]]:
    """
    Read a bag's camera messages as rclpy messages, grouped into frames.

    The k-th message of each camera topic belongs to frame k.

    :param bag: bag directory.
    :return: per frame: camera -> {'image' | 'camera_info' | 'detections': message},
        plus ``'_offset_ns'`` (camera -> stamp minus the frame's first stamp).
    """
    from rclpy.serialization import deserialize_message

    from scorehmr_ros.ros.replay import message_class

    per_topic: Dict[str, list] = {}
    for record in bag_io.read_bag_raw(bag):
        # Ground truth and /tf_static (the cameras' poses, one message) are not camera
        # frames; this soak runs the node uncalibrated.
        if record.topic == bag_io.GROUND_TRUTH_TOPIC or record.topic.count('/') != 2:
            continue
        msg = deserialize_message(record.message, message_class(record.msgtype))
        per_topic.setdefault(record.topic, []).append(msg)
    count = min(len(v) for v in per_topic.values())
    frames = []
    for k in range(count):
        frame: Dict[str, Dict[str, object]] = {}
        for topic, msgs in per_topic.items():
            _, camera, kind = topic.split('/')
            frame.setdefault(camera, {})[kind] = msgs[k]
        stamps = {c: bag_io.stamp_ns(m['detections'].header) for c, m in frame.items()}
        first = min(stamps.values())
        frame['_offset_ns'] = {c: s - first for c, s in stamps.items()}
        frames.append(frame)
    return frames


def _percentiles(values, pcts=(50, 90, 99)) -> Dict[str, Optional[float]]:
    data = np.asarray(values, dtype=np.float64)
    return {f'p{p}': (float(np.percentile(data, p)) if data.size else None) for p in pcts}


def run_soak(duration_s: float = 600.0, rate_hz: float = 30.0, warmup: float = 0.2,
             bag: Optional[Path] = None, work_dir: Optional[Path] = None,
             overrides: Optional[dict] = None, num_people: int = 2,
             log=sys.stderr) -> dict:
    """
    Run the soak and return its measurements (see the module docstring).

    :param duration_s: streaming time, seconds.
    :param rate_hz: frames per second (all cameras per frame).
    :param warmup: fraction of the run excluded from the RSS growth.
    :param bag: bag to replay (default: a synthetic 3-camera bag written to ``work_dir``).
    :param work_dir: where the bag, parameters and node log go (default: a temp dir).
    :param overrides: extra node parameters.
    :param num_people: people in the synthetic bag.
    :param log: progress stream.
    :return: the results dict (also what is written as JSON).
    """
    import rclpy  # noqa: F401 - fail early without ROS 2

    from scorehmr_ros.ros import testbed

    own_dir = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix='soak_')) if own_dir else Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        if bag is None:
            from scorehmr_ros.body.model import BodyModel
            from scorehmr_ros.synthetic_stream import make_stream
            bag = work_dir / 'bag'
            if bag.exists():
                shutil.rmtree(bag)
            bag_io.write_synthetic_bag(bag, frames=make_stream(
                BodyModel.from_config(None), bag_io.CAMERAS, num_people=num_people, num_frames=30,
                seed=7, fps=rate_hz))
        frames = load_frames(Path(bag))
        cameras = sorted(frames[0]['_offset_ns'])
        env = isolated_ros_env(work_dir / 'ros_log', random.SystemRandom().randint(1, 200))
        namespace = testbed.random_namespace()
        params = testbed.write_params(work_dir / 'params.yaml',
                                      dict({'cameras': cameras}, **(overrides or {})))
        with testbed.ros_variables(env):
            node = testbed.NodeProcess(params, env, namespace, work_dir / 'node.log')
            bed = testbed.Testbed(int(env['ROS_DOMAIN_ID']), namespace, cameras,
                                  input_qos='sensor_data')
            try:
                return _measure(node, bed, frames, cameras, duration_s, rate_hz, warmup, log)
            finally:
                bed.close()
                if node.alive():
                    node.stop(signal.SIGKILL)
    finally:
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


def _measure(node, bed, frames, cameras, duration_s, rate_hz, warmup, log) -> dict:
    from scorehmr_ros.ros import testbed

    if not bed.spin_until(lambda: bed.ready() or not node.alive(), STARTUP_TIMEOUT_S) \
            or not node.alive():
        raise RuntimeError('the node did not start:\n' + node.output()[-3000:])
    wall_minus_mono_ns = time.time_ns() - time.monotonic_ns()
    rss: List[tuple] = []
    published = 0
    start_s = time.monotonic()
    next_s, next_sample_s = start_s, start_s
    end_s = start_s + duration_s
    crashed = False
    while True:
        now_s = time.monotonic()
        if now_s >= end_s:
            break
        if now_s >= next_sample_s:
            kib = testbed.vm_rss_kib(node.pid)
            if kib is None or not node.alive():
                crashed = True
                break
            rss.append((now_s - start_s, kib))
            next_sample_s += 1.0
            if len(rss) % 60 == 0:
                log.write(f'soak: {now_s - start_s:.0f} s, RSS {kib / 1024:.1f} MiB, '
                          f'{len(bed.received["bodies"])} outputs\n')
        if now_s >= next_s:
            frame = frames[published % len(frames)]
            stamp_ns = time.time_ns()
            for camera in cameras:
                msgs = frame[camera]
                stamp = _stamp(stamp_ns + frame['_offset_ns'][camera])
                for kind in ('camera_info', 'image', 'detections'):
                    msgs[kind].header.stamp = stamp
                    bed.publish(camera, kind, msgs[kind])
            published += 1
            next_s += 1.0 / rate_hz
            if next_s < now_s - 1.0:  # far behind (machine stalled): do not burst
                next_s = now_s
        bed.executor.spin_once(timeout_sec=max(0.0, min(next_s, next_sample_s)
                                               - time.monotonic()))
    streamed_s = time.monotonic() - start_s
    bed.spin_for(2.0)
    counters = bed.values()
    code, exit_s = node.stop(signal.SIGINT)

    bodies = bed.received['bodies']
    arrivals = [t - start_s for t, _ in bodies]
    latencies = [b.latency_s for _, m in bodies for b in m.bodies]
    e2e = [(t * 1e9 + wall_minus_mono_ns - testbed.stamp_to_ns(m.header.stamp)) * 1e-9
           for t, m in bodies]
    gaps = np.diff([0.0] + arrivals) if arrivals else np.array([streamed_s])
    # Mean of 5 % of the samples (at least one) right after the warm-up, and at the end.
    span = max(1, int(round(0.05 * len(rss))))
    first = next((i for i, (t, _) in enumerate(rss) if t >= warmup * streamed_s), len(rss))
    warm = [kib for _, kib in rss[first:first + span]]
    tail = [kib for _, kib in rss[-span:]]
    base_kib = float(np.mean(warm)) if warm else math.nan
    end_kib = float(np.mean(tail)) if tail else math.nan
    after = [(t, kib) for t, kib in rss if t >= warmup * streamed_s]
    slope = (float(np.polyfit([t for t, _ in after], [k for _, k in after], 1)[0])
             * 60 / 1024) if len(after) >= 3 else math.nan
    result = {
        'duration_s': round(streamed_s, 2), 'rate_hz': rate_hz, 'cameras': len(cameras),
        'people_per_camera': len(frames[0][cameras[0]]['detections'].people),
        'input_frames': published, 'input_rate_hz': round(published / streamed_s, 2),
        'output_messages': len(bodies),
        'output_sets_per_s': round(len(bodies) / len(cameras) / streamed_s, 3),
        'bodies_per_s': round(len(latencies) / streamed_s, 3),
        'latency_s': _percentiles(latencies), 'end_to_end_s': _percentiles(e2e),
        'max_gap_s': round(float(np.max(gaps)), 3),
        'stalls_over_1s': int(np.sum(gaps > STALL_S)),
        'rss_mib': {'start': round(rss[0][1] / 1024, 1) if rss else None,
                    'after_warmup': round(base_kib / 1024, 1),
                    'end': round(end_kib / 1024, 1),
                    'max': round(max(k for _, k in rss) / 1024, 1) if rss else None,
                    'slope_mib_per_min': round(slope, 3)},
        'rss_growth': round((end_kib - base_kib) / base_kib, 4),
        'growth_bound': GROWTH_BOUND, 'crashed': crashed, 'exit_code': code,
        'sigint_exit_s': round(exit_s, 3), 'diagnostics': counters,
        'rss_samples': [[round(t, 1), kib] for t, kib in rss],
    }
    return result


def _stamp(stamp_ns: int):
    from builtin_interfaces.msg import Time
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def markdown_line(result: dict) -> str:
    """One markdown table row of a result."""
    lat, rss = result['latency_s'], result['rss_mib']
    return (f'| {result["duration_s"]:.0f} s | {result["input_rate_hz"]} Hz x '
            f'{result["cameras"]} cams x {result["people_per_camera"]} people | '
            f'{result["output_sets_per_s"]} sets/s | '
            f'latency p50/p99 {lat["p50"]:.3f}/{lat["p99"]:.3f} s | max gap '
            f'{result["max_gap_s"]} s | RSS {rss["after_warmup"]} -> {rss["end"]} MiB '
            f'({100 * result["rss_growth"]:+.2f} %) | exit {result["exit_code"]} in '
            f'{result["sigint_exit_s"]} s |')


def main(argv=None) -> int:
    """Command line; exit status 1 when the growth bound, a crash or a stall fails."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--duration', type=float, default=600.0, help='seconds (600)')
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second (30)')
    parser.add_argument('--warmup', type=float, default=0.2, help='warm-up fraction (0.2)')
    parser.add_argument('--people', type=int, default=2, help='people in the synthetic bag')
    parser.add_argument('--bag', type=Path, help='bag to replay (default: synthetic)')
    parser.add_argument('--output-dir', type=Path, default=REPO / 'benchmarks' / 'results')
    args = parser.parse_args(argv)
    result = run_soak(args.duration, args.rate, args.warmup, args.bag,
                      num_people=args.people)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f'soak_{int(args.duration)}.json'
    path.write_text(json.dumps(result, indent=1), encoding='utf-8')
    print(markdown_line(result))
    print(f'written {path}')
    ok = (not result['crashed'] and result['exit_code'] == 0
          and result['rss_growth'] < GROWTH_BOUND and result['output_messages'] > 0)
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
