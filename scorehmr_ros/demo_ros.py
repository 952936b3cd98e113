"""
The ROS 2 demo: a recorded synthetic stream replayed into the node, scored against truth.

:func:`run_ros_demo` writes the synthetic 3-camera stream as a rosbag2 (with ground truth,
see :mod:`scorehmr_ros.bag_io`), starts the ``scorehmr`` node and ``scorehmr-replay`` as
subprocesses on an isolated DDS domain (this machine only, a random domain id, ROS logs
under the output directory), collects the node's ``bodies`` and reports, per synchronised
frame, the mean joint error (pelvis-aligned MPJPE, mm) of the regression estimate the node
received and of its refined output. By default (``fused=True``) the node runs calibrated:
extrinsics from the bag's ``/tf_static``, one body per tracked person in the fixed frame
``world``, online temporal mode; the report adds the absolute error in the fixed frame and
the acceleration error over the frames. ``fused=False`` runs the uncalibrated per-camera
output (the paper's single-view refinement per camera). The node runs with ``use_sim_time``
on the bag's ``/clock``. Weights and body follow the demo's engine configuration, by default
the embedded default (:func:`scorehmr_ros.demo.embedded_default`: the shipped prior on the
anny body); the bag then carries COCO-17 keypoints without features (the refiner builds its
features from the keypoints), else BODY_25 keypoints and zero features of the denoiser's
size. The people move with held-out motion capture (``pose_source='heldout'`` of
:func:`~scorehmr_ros.synthetic_stream.make_stream`). This module does not import rclpy;
the collector it uses lives under :mod:`scorehmr_ros.ros` and is imported when the demo
runs.
"""

import argparse
import math
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, TextIO, Tuple, Union

import numpy as np
import torch
import yaml

from scorehmr_ros import bag_io
from scorehmr_ros.demo import embedded_default, honesty_note, keypoint_layout, POSE_NOTES
from scorehmr_ros.metrics import mpjpe_mm
from scorehmr_ros.synthetic_stream import make_stream

REPO = Path(__file__).resolve().parents[1]
#: Extra node parameters of the demo (over ``config/node.yaml``): sim time from the
#: player, every set kept (the refinement is slower than the bag on a small CPU).
NODE_OVERRIDES = {'use_sim_time': True, 'stale_age_s': 30.0, 'camera_timeout_s': 30.0}
#: Node parameters of the calibrated demo: extrinsics from the bag's /tf_static.
FUSED_OVERRIDES = {'fixed_frame': 'world', 'extrinsics_from_tf': True, 'temporal': 'online',
                   'temporal_window': 3}


def isolated_ros_env(log_dir: Union[str, Path], domain_id: Optional[int] = None
                     ) -> Dict[str, str]:
    """
    Environment of a process whose DDS traffic stays on this machine and one domain.

    :param log_dir: ``ROS_LOG_DIR``.
    :param domain_id: ROS domain id (default: random in 1..200).
    :return: a copy of ``os.environ`` with the ROS variables set (and ``PYTHONPATH``
        starting with this checkout, so subprocesses import this package).
    """
    if domain_id is None:
        domain_id = random.SystemRandom().randint(1, 200)
    env = dict(os.environ)
    for name in ('ROS_STATIC_PEERS', 'ROS_LOCALHOST_ONLY'):
        env.pop(name, None)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(log_dir),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')])))
    return env


def write_node_params(path: Union[str, Path], cameras: Sequence[str], num_frames: int,
                      overrides: Optional[dict] = None) -> Path:
    """
    Write a node parameter file: ``config/node.yaml`` with demo overrides.

    :param path: file to write.
    :param cameras: camera names.
    :param num_frames: frames of the bag (the worker queue holds them all, so none is
        dropped however slow the refinement is).
    :param overrides: more parameters; a nested ``refiner`` dict is merged section by
        section into node.yaml's (e.g. ``{'refiner': {'model': {'checkpoint': ...}}}``).
    :return: ``path``.
    """
    with open(REPO / 'config' / 'node.yaml', encoding='utf-8') as handle:
        params = yaml.safe_load(handle)
    node_params = params['/**']['ros__parameters']
    node_params.update(NODE_OVERRIDES, cameras=list(cameras), max_queue=max(num_frames, 2))
    overrides = dict(overrides or {})
    refiner = overrides.pop('refiner', None) or {}
    node_params.update(overrides)
    for section, values in refiner.items():
        if isinstance(values, dict):
            node_params.setdefault('refiner', {}).setdefault(section, {}).update(values)
        else:
            node_params.setdefault('refiner', {})[section] = values
    path = Path(path)
    path.write_text(yaml.safe_dump(params), encoding='utf-8')
    return path


def start_node(params_file: Union[str, Path], env: Dict[str, str],
               log: Optional[TextIO] = None) -> subprocess.Popen:
    """
    Start the node (``python -m scorehmr_ros.ros.node``) as a subprocess.

    :param params_file: ROS parameter file.
    :param env: its environment (see :func:`isolated_ros_env`).
    :param log: file for its stdout and stderr (default: a pipe).
    :return: the process.
    """
    return subprocess.Popen(
        [sys.executable, '-m', 'scorehmr_ros.ros.node', '--ros-args', '--params-file',
         str(params_file)], env=env, text=True, stdout=log or subprocess.PIPE,
        stderr=subprocess.STDOUT)


def start_player(bag: Union[str, Path], env: Dict[str, str], rate: float,
                 wait_for: Sequence[str], log: Optional[TextIO] = None,
                 wait_timeout_s: float = 60.0) -> subprocess.Popen:
    """
    Start ``scorehmr-replay`` (``python -m scorehmr_ros.ros.replay``) with ``/clock``.

    :param bag: bag directory.
    :param env: its environment.
    :param rate: playback speed factor.
    :param wait_for: topics that must have a subscriber before playback starts.
    :param log: file for its stdout and stderr (default: a pipe).
    :param wait_timeout_s: how long it waits for those subscribers.
    :return: the process.
    """
    command = [sys.executable, '-m', 'scorehmr_ros.ros.replay', str(bag), '--rate',
               str(rate), '--clock', '--wait-timeout', str(wait_timeout_s)]
    for topic in wait_for:
        command += ['--wait-for', topic]
    return subprocess.Popen(command, env=env, text=True, stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def stop(child: subprocess.Popen, timeout_s: float = 15.0) -> Tuple[int, str]:
    """
    Stop a subprocess with SIGINT (then SIGKILL after ``timeout_s``).

    :return: ``(return code, its piped output or '')``; a process already stopped and
        read returns ``(return code, '')``.
    """
    if child.poll() is not None and (child.stdout is None or child.stdout.closed):
        return child.returncode, ''
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    try:
        output, _ = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        output, _ = child.communicate()
    return child.returncode, output or ''


def regression_joints(body, person) -> np.ndarray:
    """
    Joints of one detection's regression estimate (what the node starts from).

    :param body: the synthetic body model of the stream.
    :param person: a deserialised ``PersonDetection``.
    :return: [24, 3] joints, metres, camera frame.
    """
    from scorehmr_ros.body.rotations import axis_angle_to_matrix
    dtype = next(body.buffers()).dtype
    pose = torch.as_tensor(np.asarray(person.init_pose_aa, dtype=np.float64)).reshape(1, 24, 3)
    betas = torch.as_tensor(np.asarray(person.init_betas, dtype=np.float64))[None]
    with torch.no_grad():
        out = body(axis_angle_to_matrix(pose).to(dtype), betas.to(dtype))
    return out.joints45[0, :24].double().numpy() + np.asarray(person.init_cam_t)[None]


def frame_errors(records: Sequence[bag_io.BagRecord], bodies_by_key: Dict, body=None
                 ) -> List[dict]:
    """
    Per synchronised frame, the joint errors of the estimate and of the node's output.

    A frame is one ground-truth stamp group: camera ``i``'s entry of frame ``k`` is the
    ``k``-th ground-truth message of that camera.

    :param records: deserialised records of the bag (with ground truth).
    :param bodies_by_key: node output ``SmplBodyArray`` by ``(stamp_ns, frame_id)``.
    :param body: body model of the stream (default: the synthetic body).
    :return: per frame a dict: ``frame``, ``missing`` (camera frames without output),
        ``before_mm`` / ``after_mm`` (mean pelvis-aligned MPJPE over people and cameras),
        ``abs_m`` (largest mean absolute joint error of a body, metres), ``finite``.
    """
    if body is None:
        from scorehmr_ros.body.model import BodyModel
        body = BodyModel.from_config(None)
    truths = bag_io.ground_truth(records)
    detections = {(bag_io.stamp_ns(r.message.header), r.message.header.frame_id): r.message
                  for r in records if r.msgtype == bag_io.DETECTIONS}
    per_camera: Dict[str, List[bag_io.GroundTruth]] = {}
    for truth in truths:
        per_camera.setdefault(truth.camera, []).append(truth)
    num_frames = min(len(v) for v in per_camera.values()) if per_camera else 0
    results = []
    for k in range(num_frames):
        before, after, abs_err, missing, finite = [], [], [], [], True
        for camera in sorted(per_camera):
            truth = per_camera[camera][k]
            key = (truth.stamp_ns, truth.frame_id)
            dets = detections[key]
            for person in dets.people:
                gt = torch.as_tensor(truth.joints[int(person.track_id)])[None]
                init = torch.as_tensor(regression_joints(body, person))[None]
                before.append(float(mpjpe_mm(init, gt)))
            msg = bodies_by_key.get(key)
            if msg is None:
                missing.append(camera)
                continue
            for b in msg.bodies:
                joints = np.array([[j.x, j.y, j.z] for j in b.joints], dtype=np.float64)
                finite = finite and bool(np.isfinite(joints).all())
                gt = torch.as_tensor(truth.joints[int(b.id)])[None]
                after.append(float(mpjpe_mm(torch.as_tensor(joints)[None], gt)))
                abs_err.append(float(np.linalg.norm(joints - gt[0].numpy(), axis=-1).mean()))
        results.append({'frame': k, 'missing': missing, 'before_mm': float(np.mean(before)),
                        'after_mm': float(np.mean(after)) if after else float('nan'),
                        'abs_m': max(abs_err) if abs_err else float('nan'),
                        'finite': finite, 'bodies': len(after)})
    return results


def _per_frame_truths(records: Sequence[bag_io.BagRecord]) -> List[List[bag_io.GroundTruth]]:
    """Ground truth grouped per frame: frame ``k`` = every camera's ``k``-th message."""
    per_camera: Dict[str, List[bag_io.GroundTruth]] = {}
    for truth in bag_io.ground_truth(records):
        per_camera.setdefault(truth.camera, []).append(truth)
    num_frames = min(len(v) for v in per_camera.values()) if per_camera else 0
    return [[per_camera[c][k] for c in sorted(per_camera)] for k in range(num_frames)]


def _bag_calibration(records: Sequence[bag_io.BagRecord], fixed_frame: str, frame_ids):
    """Camera extrinsics from the bag's ``/tf_static`` (for ground truth in the fixed frame)."""
    from scorehmr_ros.fusion.calibration import calibration_from_transforms
    edges = []
    for record in records:
        if record.topic == bag_io.TF_STATIC_TOPIC:
            for t in record.message.transforms:
                tr, q = t.transform.translation, t.transform.rotation
                edges.append((t.header.frame_id, t.child_frame_id, (tr.x, tr.y, tr.z),
                              (q.x, q.y, q.z, q.w)))
    return calibration_from_transforms(edges, fixed_frame, {f: f for f in frame_ids})


def fused_keys(records: Sequence[bag_io.BagRecord], fixed_frame: str = 'world'
               ) -> List[Tuple[int, str]]:
    """``(stamp_ns, fixed_frame)`` of each frame's fused output (newest camera stamp)."""
    return [(max(t.stamp_ns for t in frame), fixed_frame)
            for frame in _per_frame_truths(records)]


def fused_errors(records: Sequence[bag_io.BagRecord], bodies_by_key: Dict,
                 fixed_frame: str = 'world', body=None) -> Tuple[List[dict], float]:
    """
    Per frame, the errors of the node's fused bodies in the fixed frame.

    Each body is matched to the nearest true person (track ids are the node's own).

    :param records: deserialised records of the bag (ground truth and ``/tf_static``).
    :param bodies_by_key: node output ``SmplBodyArray`` by ``(stamp_ns, frame_id)``.
    :param fixed_frame: the node's ``fixed_frame``.
    :param body: body model of the stream (default: the synthetic body).
    :return: per frame a dict (``frame``, ``missing`` (bool), ``bodies``, ``views`` (max
        views of a body), ``window`` (max window), ``before_mm`` (regression estimates,
        pelvis-aligned, over cameras), ``after_mm`` (pelvis-aligned), ``abs_mm`` (absolute
        mean joint error in the fixed frame), ``finite``), and the acceleration error
        (mm/frame^2, mean over people with >= 3 frames; NaN if none).
    """
    from scorehmr_ros.fusion.calibration import invert_transform
    from scorehmr_ros.metrics import accel_error_mm
    frames = _per_frame_truths(records)
    before = {r['frame']: r['before_mm'] for r in frame_errors(records, {}, body)}
    calibration = _bag_calibration(records, fixed_frame, {t.frame_id for t in frames[0]}) \
        if frames else None
    results, tracks = [], {}
    for k, truths in enumerate(frames):
        # Truth in the fixed frame from the first calibrated camera.
        truth = next(t for t in truths if t.frame_id in calibration.cameras)
        camera_to_world = invert_transform(calibration.cameras[truth.frame_id].world_to_camera)
        gt_world = {i: j @ camera_to_world[:3, :3].T + camera_to_world[:3, 3]
                    for i, j in truth.joints.items()}
        msg = bodies_by_key.get((max(t.stamp_ns for t in truths), fixed_frame))
        after, abs_err, views, window, finite = [], [], 0, 0, True
        for b in (msg.bodies if msg is not None else []):
            joints = np.array([[j.x, j.y, j.z] for j in b.joints], dtype=np.float64)
            finite = finite and bool(np.isfinite(joints).all())
            person = min(gt_world, key=lambda i: np.linalg.norm(joints - gt_world[i],
                                                                axis=-1).mean())
            gt = gt_world[person]
            after.append(float(mpjpe_mm(torch.as_tensor(joints)[None],
                                        torch.as_tensor(gt)[None])))
            abs_err.append(1000 * float(np.linalg.norm(joints - gt, axis=-1).mean()))
            views, window = max(views, int(b.num_views)), max(window, int(b.num_frames))
            tracks.setdefault(person, []).append((k, joints - joints[:1], gt - gt[:1]))
        results.append({'frame': k, 'missing': msg is None, 'bodies': len(after),
                        'views': views, 'window': window, 'before_mm': before.get(k, math.nan),
                        'after_mm': float(np.mean(after)) if after else math.nan,
                        'abs_mm': float(np.mean(abs_err)) if abs_err else math.nan,
                        'finite': finite})
    accel = []
    for seq in tracks.values():
        if len(seq) >= 3 and [f for f, _, _ in seq] == list(range(seq[0][0], seq[0][0]
                                                                  + len(seq))):
            pred = torch.as_tensor(np.stack([p for _, p, _ in seq]))
            gt = torch.as_tensor(np.stack([g for _, _, g in seq]))
            accel.append(float(accel_error_mm(pred, gt).mean()))
    return results, float(np.mean(accel)) if accel else math.nan


def expected_outputs(records: Sequence[bag_io.BagRecord]) -> List[Tuple[int, str]]:
    """``(stamp_ns, frame_id)`` of every camera frame of the bag (one output each)."""
    return [(t.stamp_ns, t.frame_id) for t in bag_io.ground_truth(records)]


def run_ros_demo(output_dir: Union[str, Path], out: TextIO = sys.stdout, num_frames: int = 5,
                 rate: float = 0.5, timeout_s: float = 90.0, seed: int = 0,
                 fused: bool = True, config=None, pose_source: str = 'heldout'
                 ) -> List[dict]:
    """
    Replay a synthetic bag into the node and report per-frame accuracy.

    :param output_dir: where the bag (``synthetic_bag/``), node parameters and logs go.
    :param out: report stream.
    :param num_frames: frames of the synthetic stream.
    :param rate: playback speed factor.
    :param timeout_s: bound on the whole run after the node started.
    :param seed: seed of the stream.
    :param fused: calibrated node (extrinsics from ``/tf_static``, online temporal mode,
        bodies in ``world``); False: per-camera output.
    :param config: a :class:`~scorehmr_ros.config.RefinerConfig` whose ``model.checkpoint``
        and ``body.model_path`` the node runs (other engine settings: ``config/node.yaml``);
        unset values take the embedded default (shipped prior, anny body).
    :param pose_source: the people's body motion, ``'heldout'`` (motion capture the shipped
        prior did not see) or ``'random'`` (a fixed random pose).
    :return: the per-frame results of :func:`fused_errors` (fused) or :func:`frame_errors`.
    :raises RuntimeError: the node or the player failed, or outputs are missing.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    bag = output_dir / 'synthetic_bag'
    if bag.exists():
        import shutil
        shutil.rmtree(bag)
    engine, engine_params = _demo_engine(config)
    layout = keypoint_layout(engine)
    # A keypoint-conditioned denoiser builds its features from the keypoints: send none.
    features_dim = 0 if engine.keypoint_cond_layout else engine.denoiser.config.total_cond_dim
    frames = make_stream(engine.body, bag_io.CAMERAS, num_frames=num_frames, seed=seed,
                         keypoint_layout=layout, pose_source=pose_source)
    records = bag_io.write_synthetic_bag(bag, frames=frames, seed=seed,
                                         features_dim=features_dim)
    cameras = sorted({t.camera for t in bag_io.ground_truth(records)})
    out.write(f'bag: {bag} ({len(records)} messages, {num_frames} frames, '
              f'cameras {", ".join(cameras)}, {layout} keypoints)\n')
    out.write(f'weights: {engine.describe_weights()}\nbody: {engine.body.name}\n'
              f'poses: {POSE_NOTES[pose_source]}\n')
    env = isolated_ros_env(output_dir / 'ros_log')
    params = write_node_params(output_dir / 'node_params.yaml', cameras, num_frames,
                               dict(FUSED_OVERRIDES if fused else {}, refiner=engine_params))
    if fused:
        out.write("node: calibrated multi-view, extrinsics from the bag's /tf_static, "
                  'online temporal mode (window 3), bodies in frame world\n')
    saved = {name: os.environ.get(name) for name in
             ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_LOG_DIR')}
    node_log = open(output_dir / 'node.log', 'w', encoding='utf-8')
    player_log = open(output_dir / 'player.log', 'w', encoding='utf-8')
    node = player = collector = None
    try:
        for name in saved:
            os.environ[name] = env[name]
        from scorehmr_ros.ros.replay import OutputCollector
        collector = OutputCollector(int(env['ROS_DOMAIN_ID']))
        node = start_node(params, env, node_log)
        deadline = time.monotonic() + timeout_s
        if not collector.spin_until(lambda: collector.connected() or node.poll() is not None,
                                    timeout_s) or node.poll() is not None:
            raise RuntimeError(f'the node did not start; see {output_dir / "node.log"}')
        wait_for = [f'/{c}/{t}' for c in cameras
                    for t in ('image', 'camera_info', 'detections')]
        player = start_player(bag, env, rate, wait_for, player_log,
                              wait_timeout_s=max(deadline - time.monotonic(), 1.0))
        wanted = fused_keys(records) if fused else expected_outputs(records)
        collector.spin_until(lambda: all(k in collector.bodies_by_key() for k in wanted)
                             or node.poll() is not None,
                             max(deadline - time.monotonic(), 0.0))
        outputs = collector.bodies_by_key()
    finally:
        if collector is not None:
            collector.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        codes = {}
        for name, child in (('player', player), ('node', node)):
            if child is not None:
                codes[name] = stop(child)[0]
        node_log.close()
        player_log.close()
    if fused:
        results = _report_fused(records, outputs, codes, out, output_dir, engine.body)
        out.write(honesty_note(engine) + '\n')
        return results
    results = frame_errors(records, outputs, engine.body)
    out.write('frame  cameras  bodies  before_mm  after_mm\n')
    for r in results:
        seen = len(cameras) - len(r['missing'])
        out.write(f'{r["frame"]:5d}  {seen:7d}  {r["bodies"]:6d}  {r["before_mm"]:9.1f}'
                  f'  {r["after_mm"]:8.1f}\n')
    before = np.mean([r['before_mm'] for r in results])
    after = np.nanmean([r['after_mm'] for r in results]) if results else float('nan')
    out.write(f'mean   before {before:.1f} mm (regression estimate), after {after:.1f} mm '
              f'(refined); node exit {codes.get("node")}, player exit {codes.get("player")}\n')
    out.write(honesty_note(engine) + '\n')
    missing = [(r['frame'], r['missing']) for r in results if r['missing']]
    if missing:
        raise RuntimeError(f'no output for (frame, cameras) {missing}; see '
                           f'{output_dir / "node.log"} and {output_dir / "player.log"}')
    return results


def _demo_engine(config):
    """
    Build the engine whose weights and body the demo's node runs, and its node parameters.

    :param config: the demo's ``RefinerConfig`` or None (embedded default).
    :return: ``(refiner, {'model': {...}, 'body': {...}})``; the refiner (torch backend, only
        built to read what the checkpoint expects and to score with the same body).
    """
    from scorehmr_ros.config import RefinerConfig
    from scorehmr_ros.refiner import Refiner
    config = embedded_default(config if config is not None else RefinerConfig())
    engine = Refiner(config.replace(engine={'backend': 'torch', 'body': 'mesh',
                                            'compile': False}))
    params = {'model': {'checkpoint': config.model.checkpoint or ''}}
    # Always explicit: node.yaml's own default body would not be the one scored here.
    params['body'] = {'model_path': config.body.model_path or ''}
    return engine, params


def _report_fused(records, outputs, codes, out: TextIO, output_dir: Path,
                  body=None) -> List[dict]:
    """Print the fused demo's table and summary; raise if a frame has no output."""
    results, accel = fused_errors(records, outputs, body=body)
    out.write('frame  views  window  bodies  before_mm  after_mm  abs_mm\n')
    for r in results:
        out.write(f'{r["frame"]:5d}  {r["views"]:5d}  {r["window"]:6d}  {r["bodies"]:6d}  '
                  f'{r["before_mm"]:9.1f}  {r["after_mm"]:8.1f}  {r["abs_mm"]:6.1f}\n')
    mean = lambda key: float(np.nanmean([r[key] for r in results]))  # noqa: E731
    out.write(f'mean   before {mean("before_mm"):.1f} mm (regression estimates, per camera), '
              f'after {mean("after_mm"):.1f} mm MPJPE, {mean("abs_mm"):.1f} mm absolute in '
              f'world; Acc Err {accel:.1f} mm/frame^2; node exit {codes.get("node")}, '
              f'player exit {codes.get("player")}\n')
    missing = [r['frame'] for r in results if r['missing']]
    if missing:
        raise RuntimeError(f'no fused output for frames {missing}; see '
                           f'{output_dir / "node.log"} and {output_dir / "player.log"}')
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m scorehmr_ros.demo_ros --output-dir DIR``."""
    parser = argparse.ArgumentParser(prog='python -m scorehmr_ros.demo_ros',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('--output-dir', default='out/demo_ros')
    parser.add_argument('--frames', type=int, default=5)
    parser.add_argument('--rate', type=float, default=0.5)
    parser.add_argument('--per-camera', action='store_true',
                        help='uncalibrated per-camera output instead of fused bodies')
    args = parser.parse_args(argv)
    run_ros_demo(args.output_dir, sys.stdout, num_frames=args.frames, rate=args.rate,
                 fused=not args.per_camera)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
