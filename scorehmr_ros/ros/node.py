"""
The ScoreHMR ROS 2 node: N cameras in, refined SMPL bodies, TF, markers, diagnostics out.

Per camera ``<c>`` (relative topics, sensor-data QoS): ``<c>/image``, ``<c>/camera_info``
and, with the ``upstream`` front end, ``<c>/detections``
(``scorehmr_ros_msgs/PersonDetectionArray``: keypoints + regression estimate per person).
The detections of all cameras are grouped by an approximate-time synchroniser; each set
goes to one worker thread through a bounded queue (callbacks never wait for refinement;
overflow and stale sets are dropped and counted). The worker refines every person of
every camera in one batch (rows = people x cameras) and publishes:

- ``bodies`` (``SmplBodyArray``), one per camera, stamp = that camera's input stamp,
  frame = its optical frame (uncalibrated cameras);
- with ``fixed_frame`` and extrinsics (``calibration_file`` and/or ``/tf_static``+``/tf``
  with ``extrinsics_from_tf``): the calibrated cameras' people are associated across
  views, tracked and refined as one body each (``temporal: per_frame`` or ``online``,
  :mod:`scorehmr_ros.fusion.pipeline`); one more ``bodies`` message per set in
  ``fixed_frame`` (``SmplBody.id`` = track id, ``num_views``, ``num_frames`` = window
  length; the cameras used are in the per-track diagnostics). Cameras without (or with
  stale) extrinsics keep the per-camera output (counted, said once in the log);
- ``/tf``: ``body_<id>`` and ``<joint>_<id>`` frames (per-camera bodies are prefixed
  ``<c>/`` with several cameras or a fixed frame, so that one person seen twice does not
  give a frame two parents; fused bodies hang under ``fixed_frame`` unprefixed);
- ``markers`` (``MarkerArray``: skeleton lines) and ``joint_states`` (one per body);
- ``/diagnostics`` every ``diagnostics_period_s``: input rates, counters, latency.

Images are decoded and checked (encoding, size) but the upstream front end does not need
their pixels. Bad input never stops the node: it is logged (throttled), skipped and counted
(``docs/reliability.md`` lists every case, what the node does and which counter counts it).
With ``record_bag`` every published message is also written to an MCAP rosbag2, which is
closed on shutdown (SIGINT/SIGTERM included).
"""

import collections
import dataclasses
import logging
import os
import re
import signal
import sys
import threading
import time
from typing import Deque, Dict, List, Optional, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)
from scorehmr_ros_msgs.msg import PersonDetection, PersonDetectionArray, SmplBody
from scorehmr_ros_msgs.msg import SmplBodyArray
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
import torch
from visualization_msgs.msg import MarkerArray

from scorehmr_ros.fusion.calibration import CalibrationError, load_calibration_yaml
from scorehmr_ros.fusion.extrinsics import ExtrinsicsSource, transform_edges
from scorehmr_ros.fusion.pipeline import (CameraView, FUSION_INFO_COUNTERS,
                                          FUSION_PROBLEM_COUNTERS, FusionPipeline)
from scorehmr_ros.fusion.tracking import TrackerConfig
from scorehmr_ros.fusion.warmup import warm_up, warm_up_refiner
from scorehmr_ros.observations import Observations
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.ros import convert
from scorehmr_ros.ros.params import declare_and_read
from scorehmr_ros.ros.recorder import BagRecorder
from scorehmr_ros.sync import ApproximateTimeSync, stamp_to_ns

NODE_NAME = 'scorehmr'

#: Counters of normal operation (they never raise the diagnostics level).
INFO_COUNTERS = (
    'sets',               # synchronised sets handed to the worker
    'published',          # SmplBodyArray messages published
    'empty_detections',   # detection arrays with no person (an empty SmplBodyArray is out)
    'camera_recoveries',  # a timed-out camera (or its detector) delivers detections again
) + FUSION_INFO_COUNTERS
#: Counters of problems (any non-zero one makes the node's diagnostics status WARN).
PROBLEM_COUNTERS = (
    'bad_image',          # unsupported encoding, empty, bad step, data size != height x step
    'bad_camera_info',    # zero / non-finite K, focal <= 0, distortion length != model
    'no_camera_info',     # detections of a camera before any valid CameraInfo
    'bad_detection',      # detections dropped (array sizes, missing or NaN estimate)
    'nan_keypoints',      # keypoints with NaN/inf or negative confidence, zeroed
    'people_capped',      # people beyond max_people in one detection array, dropped
    'frame_id_mismatch',  # detections/image frame_id != the camera's CameraInfo frame_id
    'duplicate_stamps',   # detections with the stamp of the camera's previous ones
    'future_stamps',      # detections stamped more than max_future_s ahead of the clock
    'time_jumps',         # input stamps went backwards (bag loop): state reset
    'stale_dropped',      # sets older than stale_age_s when the worker took them
    'queue_dropped',      # sets dropped because the worker queue was full
    'sync_dropped',       # messages that found no partner within the slop
    'camera_timeouts',    # a camera went silent for camera_timeout_s
    'detector_timeouts',  # images arrive but detections stopped for camera_timeout_s
    'non_finite_output',  # bodies dropped because the result was not finite
    'refine_errors',      # refinement raised (the set is skipped)
    'record_errors',      # record_bag could not be written (recording stops)
    'bad_transforms',     # /tf or /tf_static transforms with NaN, non-unit rotation, ...
) + FUSION_PROBLEM_COUNTERS
#: Diagnostics counters (all start at 0 and are reported every period).
COUNTERS = INFO_COUNTERS + PROBLEM_COUNTERS
LATENCY_WINDOW = 200
RATE_WINDOW_S = 5.0
#: How long shutdown waits for a refinement in flight (its result is not published any
#: more); kept short so that SIGINT ends the process well within a second.
SHUTDOWN_JOIN_S = 0.2
#: Longest wait of the executor in ``main()`` before it looks for a noted signal.
SPIN_PERIOD_S = 0.1
#: Signals noted by the Python-level handler of ``main()``.
_SIGNALLED: List[int] = []

#: Per-camera states reported in ``/diagnostics`` (the status message).
NO_INPUT, OK, TIMED_OUT, DETECTOR_SILENT = ('no input yet', 'ok', 'timed out',
                                            'detector silent')


class _Camera:
    """Per-camera state (callback thread writes, worker reads immutable snapshots)."""

    def __init__(self, name: str):
        self.name = name
        self.intrinsics: Optional[convert.Intrinsics] = None
        self.arrivals: Dict[str, Deque[float]] = {
            topic: collections.deque() for topic in ('image', 'camera_info', 'detections')}
        self.last_arrival_s: Optional[float] = None
        # Last detections, or the time the camera (re)started: the detector's grace period.
        self.detections_ref_s: Optional[float] = None
        self.last_stamp_ns: Optional[int] = None
        self.state = NO_INPUT
        #: topic kind ('image', ...) -> resolved topic name (for recording).
        self.topics: Dict[str, str] = {}

    @property
    def timed_out(self) -> bool:
        """Whether the camera is silent (no message on any of its topics)."""
        return self.state == TIMED_OUT

    def rate_hz(self, topic: str, now_s: float) -> float:
        arrivals = self.arrivals[topic]
        while arrivals and arrivals[0] < now_s - RATE_WINDOW_S:
            arrivals.popleft()
        return len(arrivals) / RATE_WINDOW_S


class ScoreHmrNode(Node):
    """
    Multi-camera ScoreHMR refinement node.

    :param kwargs: passed to ``rclpy.node.Node`` (e.g. ``context``, ``namespace``).
    """

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.settings, self.config = declare_and_read(self)
        self.refiner = Refiner(self.config)
        self.cond_dim = self.refiner.denoiser.config.total_cond_dim
        self.get_logger().info(f'weights: {self.refiner.describe_weights()}; body: '
                               f'{self.refiner.body.name}; cameras: '
                               f'{", ".join(self.settings.cameras)}')
        self.counters = collections.Counter({name: 0 for name in COUNTERS})
        self._lock = threading.Lock()
        self.latencies_s: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.refine_times_s: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.cameras = [_Camera(name) for name in self.settings.cameras]
        multi = len(self.cameras) > 1 or bool(self.settings.fixed_frame)
        self._prefix = {c.name: (c.name + '/' if multi else '') for c in self.cameras}
        self.extrinsics, self.pipeline = self._make_fusion()
        if self.settings.warmup_frames:
            # Before any subscription exists: compiling later would hold the interpreter
            # lock while camera messages queue up (and time out).
            # (The warm-up functions log what they did and how long it took.)
            if self.pipeline is not None:
                warm_up(self.pipeline, self.settings.warmup_frames)
            else:
                warm_up_refiner(self.refiner, self.settings.warmup_frames)
        # Snapshots the worker leaves for the diagnostics timer (under self._lock).
        self._fusion_counters: Dict[str, int] = {n: 0 for n in FUSION_INFO_COUNTERS
                                                 + FUSION_PROBLEM_COUNTERS}
        self._track_report: List[Dict[str, str]] = []
        self._extrinsics_state: Dict[str, str] = {}
        self._tf_lock = threading.Lock()

        self._first_input_s: Optional[float] = None
        self.sync = ApproximateTimeSync(
            len(self.cameras), int(round(self.settings.slop_s * 1e9)),
            self.settings.sync_queue_size, self._on_set,
            backwards_tolerance_ns=int(round(max(self.settings.slop_s, 0.1) * 1e9)))
        self._queue: Deque = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        # Held while publishing (and recording): after shutdown sets _closed, nothing more
        # is published or written to the bag.
        self._out_lock = threading.Lock()
        self._closed = False
        self.recorder = BagRecorder(self.settings.record_bag) if self.settings.record_bag \
            else None
        if self.recorder is not None:
            self.get_logger().info(f'recording to {self.recorder.path}')

        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        # As tf2_ros's TransformBroadcaster: reliable, keep last 100.
        tf_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)
        self.pub_bodies = self.create_publisher(SmplBodyArray, 'bodies', reliable)
        self.pub_tf = self.create_publisher(TFMessage, '/tf', tf_qos)
        self.pub_markers = self.create_publisher(MarkerArray, 'markers', reliable)
        self.pub_joints = self.create_publisher(JointState, 'joint_states', reliable)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', reliable)
        # Sensor-data QoS (best effort) by default so that best-effort drivers connect.
        input_qos = qos_profile_sensor_data if self.settings.input_qos == 'sensor_data' \
            else reliable
        for index, camera in enumerate(self.cameras):
            for topic, msg_type, callback in (
                    ('image', Image, self.on_image),
                    ('camera_info', CameraInfo, self.on_camera_info),
                    ('detections', PersonDetectionArray, self.on_detections)):
                subscription = self.create_subscription(
                    msg_type, f'{camera.name}/{topic}',
                    lambda msg, f=callback, c=camera, i=index, t=topic:
                        self._on_input(f, msg, c, i, t), input_qos)
                camera.topics[topic] = subscription.topic_name
        if self.extrinsics is not None and self.settings.extrinsics_from_tf:
            # As tf2_ros's TransformListener: /tf_static transient local (latched).
            static_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                    reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.create_subscription(TFMessage, '/tf_static',
                                     lambda msg: self._guard(self.on_tf, msg, True), static_qos)
            self.create_subscription(TFMessage, '/tf',
                                     lambda msg: self._guard(self.on_tf, msg, False), tf_qos)
        self.create_timer(self.settings.diagnostics_period_s, self.on_diagnostics_timer)
        self._worker = threading.Thread(target=self._work, name='scorehmr_worker',
                                        daemon=True)
        self._worker.start()

    def _make_fusion(self):
        """Extrinsics source and fusion pipeline when ``fixed_frame`` is set, else Nones."""
        settings = self.settings
        if not settings.fixed_frame:
            return None, None
        calibration = None
        if settings.calibration_file:
            try:
                calibration = load_calibration_yaml(settings.calibration_file)
            except CalibrationError as exc:
                raise ValueError(f'calibration_file: {exc}') from None
        own_frames = _own_frame_pattern()
        extrinsics = ExtrinsicsSource(
            settings.fixed_frame, calibration, settings.extrinsics_from_tf,
            settings.extrinsics_max_age_s,
            ignore_child=lambda child: own_frames.fullmatch(child) is not None)
        if calibration is None and not settings.extrinsics_from_tf:
            self.get_logger().warning(
                f'fixed_frame {settings.fixed_frame!r} but neither calibration_file nor '
                'extrinsics_from_tf: no extrinsics, every camera is refined in its own frame')
        pipeline = FusionPipeline(
            self.refiner, settings.cameras, temporal=settings.temporal,
            temporal_window=settings.temporal_window, temporal_mode=settings.temporal_mode,
            warm_outer_iters=settings.temporal_warm_iters,
            tracker=TrackerConfig(max_age_s=settings.tracker_max_age_s,
                                  gate_m=settings.tracker_gate_m),
            max_gap_s=settings.temporal_max_gap_s)
        sources = ([f'calibration_file {settings.calibration_file}'] if calibration else []) \
            + (['/tf_static + /tf'] if settings.extrinsics_from_tf else [])
        self.get_logger().info(
            f'fused bodies in {settings.fixed_frame} (extrinsics: '
            f'{", ".join(sources) or "none"}; temporal: {settings.temporal})')
        return extrinsics, pipeline

    # ------------------------------------------------------------------ callbacks

    def on_tf(self, msg: TFMessage, static: bool) -> None:
        """Store camera transforms from ``/tf_static`` or ``/tf`` (bad ones counted)."""
        edges = list(transform_edges(
            msg.transforms, lambda t: stamp_to_ns(t.sec, t.nanosec) * 1e-9))
        with self._tf_lock:
            bad = self.extrinsics.add_transforms(edges, static)
        if bad:
            self._count('bad_transforms', bad)
            self.get_logger().warning(f'{bad} malformed transform(s) on '
                                      f'{"/tf_static" if static else "/tf"} ignored',
                                      throttle_duration_sec=5.0)

    def _on_input(self, callback, msg, camera: '_Camera', index: int, topic: str) -> None:
        """Record an input (with ``record_inputs``), then run its callback guarded."""
        if self.settings.record_inputs:
            self._record(camera.topics[topic], msg)
        self._guard(callback, msg, camera, index)

    def _guard(self, callback, msg, *args) -> None:
        """Run a callback; anything it raises is logged and counted, never propagated."""
        try:
            callback(msg, *args)
        except convert.InputError as exc:
            self._count(exc.counter)
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
        except Exception as exc:  # noqa: B902 - a callback must never kill the executor
            self._count('refine_errors')
            self.get_logger().error(f'{callback.__name__} failed: {exc!r}',
                                    throttle_duration_sec=5.0)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def _arrived(self, camera: _Camera, topic: str) -> None:
        now_s = time.monotonic()
        camera.arrivals[topic].append(now_s)
        camera.last_arrival_s = now_s
        if self._first_input_s is None:
            self._first_input_s = now_s
        if camera.state == NO_INPUT:
            camera.state, camera.detections_ref_s = OK, now_s
        if topic == 'detections':
            camera.detections_ref_s = now_s
            if camera.state in (TIMED_OUT, DETECTOR_SILENT):
                self._count('camera_recoveries')
                self.get_logger().info(f'camera {camera.name}: detections again after '
                                       f'"{camera.state}"')
                camera.state = OK
        elif camera.state == TIMED_OUT:
            # The camera is back; its detector gets a full timeout to follow. The outage
            # was counted as a camera timeout, so this state change is not counted again.
            camera.state, camera.detections_ref_s = DETECTOR_SILENT, now_s
            self.get_logger().info(f'camera {camera.name} publishes again')

    def _frame_mismatch(self, camera: _Camera, what: str, frame_id: str) -> bool:
        """Whether ``frame_id`` contradicts the camera's CameraInfo frame (then counted)."""
        expected = camera.intrinsics.frame_id if camera.intrinsics is not None else ''
        if not frame_id or not expected or frame_id == expected:
            return False
        self._count('frame_id_mismatch')
        self.get_logger().warning(
            f'{camera.name}: {what} in frame {frame_id!r} but its CameraInfo is in '
            f'{expected!r}: dropped (the intrinsics would not belong to it)',
            throttle_duration_sec=5.0)
        return True

    def on_image(self, msg: Image, camera: _Camera, index: int = 0) -> None:
        """Check an image (its pixels are not needed by the upstream front end)."""
        self._arrived(camera, 'image')
        convert.image_to_numpy(msg)
        self._frame_mismatch(camera, 'image', msg.header.frame_id)

    def on_camera_info(self, msg: CameraInfo, camera: _Camera, index: int = 0) -> None:
        """Keep the newest valid intrinsics of a camera (a bad one keeps the previous)."""
        self._arrived(camera, 'camera_info')
        camera.intrinsics = convert.camera_info_to_intrinsics(msg, self.settings.rectified)

    def on_detections(self, msg: PersonDetectionArray, camera: _Camera, index: int) -> None:
        """Decode one camera's detections and hand them to the synchroniser."""
        self._arrived(camera, 'detections')
        received_s = time.monotonic()
        stamp_ns = stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
        intrinsics = camera.intrinsics
        if intrinsics is None:
            self._count('no_camera_info')
            self.get_logger().warning(f'{camera.name}: detections before a valid CameraInfo',
                                      throttle_duration_sec=5.0)
            return
        if self._frame_mismatch(camera, 'detections', msg.header.frame_id):
            return
        if self._stamp_rejected(camera, stamp_ns):
            return
        # A prior conditioned on keypoint features builds them from the keypoints: the
        # detections' own features (any size) are not used, their layout must match.
        kp_layout = self.refiner.keypoint_cond_layout
        decoded = convert.decode_detections(msg, None if kp_layout else self.cond_dim)
        if kp_layout:
            wrong = [p for p in decoded.people if p.layout != kp_layout]
            if wrong:
                decoded.rejected.append(
                    f'{len(wrong)} detection(s) with {wrong[0].layout} keypoints; the '
                    f'denoiser is conditioned on {kp_layout} keypoint features (set '
                    'refiner.model.checkpoint to weights made for this detector)')
                self._count('bad_detection', len(wrong) - 1)
            decoded.people = [dataclasses.replace(p, features=None)
                              for p in decoded.people if p.layout == kp_layout]
        if decoded.rejected:
            self._count('bad_detection', len(decoded.rejected))
            self.get_logger().warning(f'{camera.name}: ' + '; '.join(decoded.rejected),
                                      throttle_duration_sec=5.0)
        if decoded.repaired_keypoints:
            self._count('nan_keypoints', decoded.repaired_keypoints)
        if not msg.people:
            self._count('empty_detections')
        people = self._cap_people(camera, decoded.people)
        frame_id = msg.header.frame_id or intrinsics.frame_id
        camera.last_stamp_ns = stamp_ns
        dropped_before = sum(self.sync.stats.dropped)
        in_order = self.sync.add(index, stamp_ns, {
            'camera': camera.name, 'stamp_ns': stamp_ns, 'frame_id': frame_id,
            'intrinsics': intrinsics, 'people': people, 'received_s': received_s})
        self._count('sync_dropped', sum(self.sync.stats.dropped) - dropped_before)
        if not in_order:
            self._count('time_jumps')
            with self._lock:
                self._queue.clear()  # results of the old timeline would confuse consumers
            self.get_logger().warning(f'{camera.name}: stamp went backwards (bag loop or '
                                      'clock reset): synchroniser state reset')

    def _stamp_rejected(self, camera: _Camera, stamp_ns: int) -> bool:
        """Drop (and count) a repeated stamp or one too far in the future."""
        if stamp_ns == camera.last_stamp_ns:
            # A re-sent message (e.g. a detector publishing twice): the first was used.
            self._count('duplicate_stamps')
            self.get_logger().warning(f'{camera.name}: detections with the stamp of the '
                                      'previous ones: dropped', throttle_duration_sec=5.0)
            return True
        now_ns = self.get_clock().now().nanoseconds
        # now_ns is 0 with use_sim_time before the first /clock: nothing to compare with.
        if self.settings.max_future_s > 0 and now_ns > 0 and \
                stamp_ns - now_ns > self.settings.max_future_s * 1e9:
            self._count('future_stamps')
            self.get_logger().warning(
                f'{camera.name}: detections stamped {(stamp_ns - now_ns) * 1e-9:.3g} s ahead '
                f'of the node clock (max_future_s {self.settings.max_future_s}): dropped',
                throttle_duration_sec=5.0)
            return True
        return False

    def _cap_people(self, camera: _Camera, people: Sequence[convert.Person]
                    ) -> List[convert.Person]:
        """Keep the ``max_people`` best-scored people in their order; count the rest."""
        extra = len(people) - self.settings.max_people
        if extra <= 0:
            return list(people)
        self._count('people_capped', extra)
        self.get_logger().warning(f'{camera.name}: {len(people)} people, refining the '
                                  f'{self.settings.max_people} best scored (max_people)',
                                  throttle_duration_sec=5.0)
        order = sorted(range(len(people)), key=lambda i: -people[i].score)
        keep = sorted(order[:self.settings.max_people])
        return [people[i] for i in keep]

    def _on_set(self, stamp_ns: int, payloads: List[Optional[dict]]) -> None:
        with self._lock:
            if len(self._queue) >= self.settings.max_queue:
                self._queue.popleft()
                self.counters['queue_dropped'] += 1
            self._queue.append((stamp_ns, payloads))
            self.counters['sets'] += 1
            self._wake.notify()

    def on_diagnostics_timer(self) -> None:
        """Mark silent cameras, publish ``/diagnostics``."""
        try:
            self._check_timeouts()
            self._emit((self.pub_diag, self.diagnostics()))
        except Exception as exc:  # noqa: B902 - the timer must keep running
            self.get_logger().error(f'diagnostics failed: {exc!r}', throttle_duration_sec=5.0)

    def _check_timeouts(self) -> None:
        """
        Mark silent cameras (or ones whose detector stopped) and leave them out of sync.

        They are left out only while another camera still delivers detections: when every
        camera is silent (the whole rig paused) there is nothing to continue with, and
        keeping them in lets the first frame after the pause be matched across cameras
        instead of being split into single-camera sets.
        """
        now_s = time.monotonic()
        timeout_s = self.settings.camera_timeout_s
        for camera in self.cameras:
            if camera.state == TIMED_OUT:
                continue
            # A camera that never published is silent since the first input of any camera.
            last_s = camera.last_arrival_s if camera.last_arrival_s is not None \
                else self._first_input_s
            if last_s is not None and now_s - last_s > timeout_s:
                state, counter = TIMED_OUT, 'camera_timeouts'
                what = f'silent for > {timeout_s} s'
            elif camera.state == OK and now_s - camera.detections_ref_s > timeout_s:
                state, counter = DETECTOR_SILENT, 'detector_timeouts'
                what = f'publishes images but no detections for > {timeout_s} s'
            else:
                continue
            camera.state = state
            self._count(counter)
            self.get_logger().warning(f'camera {camera.name} {what}')
        silent = [c.state in (TIMED_OUT, DETECTOR_SILENT) for c in self.cameras]
        if all(silent):
            return
        for index, camera in enumerate(self.cameras):
            if silent[index] and self.sync.active[index]:
                self.get_logger().warning(f'continuing without camera {camera.name}')
                dropped_before = sum(self.sync.stats.dropped)
                self.sync.set_active(index, False)
                self._count('sync_dropped', sum(self.sync.stats.dropped) - dropped_before)

    # --------------------------------------------------------------------- worker

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                stamp_ns, payloads = self._queue.popleft()
            try:
                self._process(stamp_ns, payloads)
            except Exception as exc:  # noqa: B902 - one bad set must not end the worker
                self._count('refine_errors')
                self.get_logger().error(f'refinement failed: {exc!r}',
                                        throttle_duration_sec=5.0)

    def _process(self, stamp_ns: int, payloads: List[Optional[dict]]) -> None:
        views = [p for p in payloads if p is not None]
        if self.settings.stale_age_s > 0:
            age_s = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
            if age_s > self.settings.stale_age_s:
                self._count('stale_dropped')
                return
        if self.pipeline is not None:
            views = self._fuse(stamp_ns, views)
            if not views:
                return
        rows = [(view, person) for view in views for person in view['people']]
        bodies: Dict[str, List[convert.BodyEstimate]] = {v['camera']: [] for v in views}
        if rows:
            bodies = self._refine(rows, bodies)
        newest_received_s = max(v['received_s'] for v in views)
        for view in views:
            header = Header(stamp=convert.stamp_msg(view['stamp_ns']),
                            frame_id=view['frame_id'])
            latency_s = time.monotonic() - newest_received_s
            for body in bodies[view['camera']]:
                body.latency_s = latency_s
            self._publish(header, view['camera'], bodies[view['camera']])
            with self._lock:
                self.latencies_s.append(latency_s)

    def _fuse(self, stamp_ns: int, views: List[dict]) -> List[dict]:
        """
        Fuse the calibrated views, publish the bodies in ``fixed_frame``.

        :return: the views left for the per-camera path (no usable extrinsics).
        """
        now_s = self.get_clock().now().nanoseconds * 1e-9
        with self._tf_lock:
            calibration = self.extrinsics.calibration(
                {v['camera']: v['frame_id'] for v in views}, now_s)
        camera_views = [CameraView(
            name=v['camera'], stamp_ns=v['stamp_ns'], people=v['people'],
            image_hw=(v['intrinsics'].height, v['intrinsics'].width),
            k=np.array([[v['intrinsics'].fx, 0.0, v['intrinsics'].cx],
                        [0.0, v['intrinsics'].fy, v['intrinsics'].cy], [0.0, 0.0, 1.0]]))
            for v in views]
        result = self.pipeline.process(camera_views, calibration)
        fused_views = [v for v in views if v['camera'] not in result.uncalibrated]
        if fused_views:
            newest_received_s = max(v['received_s'] for v in fused_views)
            stamp = max(v['stamp_ns'] for v in fused_views)
            model = SmplBody.BODY_MODEL_SYNTHETIC if self.refiner.body.is_synthetic \
                else SmplBody.BODY_MODEL_SMPL_NEUTRAL
            estimates = []
            for fused in result.bodies:
                vertices = None
                if self.settings.mesh_markers:
                    with torch.no_grad():
                        posed = self.refiner.body(
                            torch.as_tensor(fused.rotmats[None], dtype=self.refiner.dtype),
                            torch.as_tensor(fused.betas[None], dtype=self.refiner.dtype))
                    vertices = posed.vertices[0].double().numpy() + fused.translation
                estimates.append(convert.BodyEstimate(
                    body_id=fused.track_id, rotmats=fused.rotmats, betas=fused.betas,
                    joints=fused.joints, num_views=len(fused.cameras),
                    num_frames=fused.window_frames, refined=fused.refined,
                    body_model=model, vertices=vertices))
            if result.bodies:
                with self._lock:
                    self.refine_times_s.append(max(b.refine_time_s for b in result.bodies))
            latency_s = time.monotonic() - newest_received_s
            for body in estimates:
                body.latency_s = latency_s
                self.pipeline.record_latency(body.body_id, latency_s)
        # Diagnostics state first: once a consumer has the bodies, the counters that
        # describe them are already in the next diagnostics message.
        state = {name: 'ok' for name in calibration.cameras}
        state.update(calibration.missing)
        with self._lock:
            self._fusion_counters = dict(self.pipeline.counters)
            self._track_report = self.pipeline.track_report()
            self._extrinsics_state.update(state)
        if fused_views:
            header = Header(stamp=convert.stamp_msg(stamp), frame_id=self.settings.fixed_frame)
            self._publish(header, '', estimates)
            with self._lock:
                self.latencies_s.append(latency_s)
        return [v for v in views if v['camera'] in result.uncalibrated]

    def _refine(self, rows, bodies):
        """Run one refinement over rows = (view, person) pairs; bodies per camera."""
        def stack(values):
            return torch.as_tensor(np.stack(values), dtype=torch.float32)

        zeros = np.zeros(self.cond_dim, dtype=np.float32)
        layouts = {person.layout for _, person in rows}
        if len(layouts) != 1:
            # One refine call handles one layout; keep the most common one.
            keep = collections.Counter(p.layout for _, p in rows).most_common(1)[0][0]
            self._count('bad_detection', sum(p.layout != keep for _, p in rows))
            rows = [(v, p) for v, p in rows if p.layout == keep]
        obs = Observations(
            init_rotmats=stack([p.init_rotmats for _, p in rows]),
            init_betas=stack([p.init_betas for _, p in rows]),
            cond=stack([zeros if p.features is None else p.features for _, p in rows]),
            init_cam_t=stack([p.init_cam_t for _, p in rows]),
            keypoints_2d=stack([p.keypoints for _, p in rows]),
            keypoint_layout=rows[0][1].layout,
            focal_px=stack([(v['intrinsics'].fx, v['intrinsics'].fy) for v, _ in rows]),
            center_px=stack([(v['intrinsics'].cx, v['intrinsics'].cy) for v, _ in rows]),
            image_size=stack([(v['intrinsics'].height, v['intrinsics'].width)
                              for v, _ in rows]))
        started = time.perf_counter()
        result = self.refiner.refine(obs)
        rot, betas, cam_t = result.rotmats[:, 0], result.betas[:, 0], result.cam_t[:, 0]
        with torch.no_grad():
            posed = self.refiner.body(rot, betas)
            joints = posed.joints45[:, :24] + cam_t[:, None]
            vertices = (posed.vertices + cam_t[:, None]) if self.settings.mesh_markers \
                else None
        with self._lock:
            self.refine_times_s.append(time.perf_counter() - started)
        # Which SMPL file (neutral/male/female) is not recorded in the config: neutral.
        model = SmplBody.BODY_MODEL_SYNTHETIC if self.refiner.body.is_synthetic \
            else SmplBody.BODY_MODEL_SMPL_NEUTRAL
        per_camera_index: Dict[str, int] = collections.Counter()
        for row, (view, person) in enumerate(rows):
            name = view['camera']
            body_id = person.track_id
            if body_id == PersonDetection.TRACK_ID_NONE:
                body_id = per_camera_index[name]  # untracked: index within the camera
            per_camera_index[name] += 1
            steps = int(result.stop_step[row, 0])
            bodies[name].append(convert.BodyEstimate(
                body_id=body_id, rotmats=rot[row].double().numpy(),
                betas=betas[row].double().numpy(), joints=joints[row].double().numpy(),
                joint_confidence=None, joint_residual_px=None,
                fit_loss=float(result.keypoint_loss[row, 0]), num_views=1,
                iterations=steps + 1 if steps >= 0 else int(result.info['guided_steps']),
                refined=bool(result.refined[row, 0]), body_model=model,
                vertices=None if vertices is None else vertices[row].double().numpy()))
        return bodies

    def _publish(self, header: Header, camera: str, bodies: List[convert.BodyEstimate]
                 ) -> None:
        prefix = self._prefix.get(camera, '')
        array, dropped = convert.build_body_array(header, bodies)
        if dropped:
            self._count('non_finite_output', dropped)
        finite = [b for b in bodies if b.is_finite()]
        outputs = [(self.pub_bodies, array)]
        if finite:
            faces = self.refiner.body.faces.cpu().numpy() if self.settings.mesh_markers \
                else None
            outputs += [(self.pub_tf, convert.build_tf(header, finite, prefix)),
                        (self.pub_markers, convert.build_markers(
                            header, finite, prefix + 'skeleton',
                            self.settings.marker_lifetime_s, faces))]
            outputs += [(self.pub_joints, convert.build_joint_state(header, body, prefix))
                        for body in finite]
        if self._emit(*outputs):
            self._count('published')

    def _emit(self, *outputs) -> bool:
        """
        Publish ``(publisher, message)`` pairs (and record them), unless shut down.

        :return: False once shutdown began (nothing was published).
        """
        with self._out_lock:
            if self._closed:
                return False
            for publisher, msg in outputs:
                publisher.publish(msg)
                self._record(publisher.topic_name, msg)
        return True

    def _record(self, topic: str, msg) -> None:
        """Write a message to ``record_bag`` (a failure stops recording, is counted)."""
        recorder = self.recorder
        if recorder is None:
            return
        try:
            recorder.write(topic, msg, self.get_clock().now().nanoseconds)
        except Exception as exc:  # noqa: B902 - a full disk must not stop the node
            self.recorder = None
            self._count('record_errors')
            self.get_logger().error(f'recording stopped: {exc}')
            try:
                recorder.close()
            except Exception as close_exc:  # noqa: B902 - already reporting a failure
                self.get_logger().error(f'closing {recorder.path} failed: {close_exc}')

    # ---------------------------------------------------------------- diagnostics

    def diagnostics(self) -> DiagnosticArray:
        """One status for the node (counters, latency) and one per camera (rates)."""
        now_s = time.monotonic()
        with self._lock:
            counters = dict(self.counters)
            counters.update(self._fusion_counters)
            tracks = list(self._track_report)
            extrinsics = dict(self._extrinsics_state)
            latencies = np.asarray(self.latencies_s, dtype=np.float64)
            refine_s = np.asarray(self.refine_times_s, dtype=np.float64)
            queued = len(self._queue)
        values = [KeyValue(key=name, value=str(counters[name])) for name in COUNTERS]
        for name, data in (('latency_s', latencies), ('refine_time_s', refine_s)):
            for pct in (50, 90, 99):
                text = f'{np.percentile(data, pct):.4f}' if data.size else 'n/a'
                values.append(KeyValue(key=f'{name}_p{pct}', value=text))
        values.append(KeyValue(key='worker_queue', value=str(queued)))
        values.append(KeyValue(key='weights', value=self.refiner.describe_weights()))
        problems = [name for name in PROBLEM_COUNTERS if counters[name]]
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        message = 'ok' if not problems else 'counted: ' + ', '.join(problems)
        name = self.get_fully_qualified_name()
        statuses = [DiagnosticStatus(level=level, name=f'{name}: refinement', message=message,
                                     hardware_id=name, values=values)]
        for camera in self.cameras:
            rates = [KeyValue(key=f'{topic}_rate_hz', value=f'{camera.rate_hz(topic, now_s):.2f}')
                     for topic in camera.arrivals]
            rates.append(KeyValue(key='calibrated', value=str(camera.intrinsics is not None)))
            if self.pipeline is not None:
                rates.append(KeyValue(key='extrinsics',
                                      value=extrinsics.get(camera.name, 'no set yet')))
            statuses.append(DiagnosticStatus(
                level=DiagnosticStatus.OK if camera.state == OK else DiagnosticStatus.WARN,
                name=f'{name}: camera {camera.name}', hardware_id=camera.name,
                message=camera.state, values=rates))
        for track in tracks:
            statuses.append(DiagnosticStatus(
                level=DiagnosticStatus.OK, name=f'{name}: track {track["id"]}',
                hardware_id=self.settings.fixed_frame,
                message=f'{track["views"]} view(s), window {track["window"]}',
                values=[KeyValue(key=k, value=v) for k, v in track.items()]))
        return DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                               status=statuses)

    def destroy_node(self) -> None:
        """
        Stop publishing, close ``record_bag``, stop the worker, destroy the node.

        A refinement still running after :data:`SHUTDOWN_JOIN_S` is abandoned (its result
        would not be published any more; the worker is a daemon thread).
        """
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        with self._out_lock:
            self._closed = True
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            try:
                recorder.close()
                self.get_logger().info(
                    f'recorded {sum(recorder.counts.values())} messages to {recorder.path}')
            except Exception as exc:  # noqa: B902 - shutdown goes on
                self.get_logger().error(f'closing {recorder.path} failed: {exc}')
        if self._worker.is_alive():
            self._worker.join(timeout=SHUTDOWN_JOIN_S)
        super().destroy_node()


def main(args=None, fast_exit: bool = True) -> None:
    """
    Console entry point (``scorehmr-node``); works on Humble/Jazzy/Kilted installs.

    SIGINT and SIGTERM end spinning; the node then stops publishing, closes
    ``record_bag`` and shuts rclpy down. With ``fast_exit`` the process then ends with
    ``os._exit(0)`` after flushing logs and stdio: the interpreter's teardown of torch
    and ONNX Runtime alone takes ~0.6 s on a small CPU (it would make SIGINT-to-exit
    exceed a second) and would race with a refinement that is being abandoned.

    :param args: command line for ``rclpy.init`` (default ``sys.argv``).
    :param fast_exit: end the process right after a clean shutdown.
    """
    # rclpy's own SIGINT/SIGTERM handler shuts the context down, so spinning ends with
    # ExternalShutdownException. It then calls the previous Python handler; Python's
    # default SIGINT one would also raise KeyboardInterrupt at an arbitrary point of a
    # callback (between publishing a message and recording it, or inside a bag write).
    # Ours only notes the signal, which also ends the loop below should a library have
    # replaced rclpy's handler (the loop wakes at least every SPIN_PERIOD_S to look).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _note_signal)
    rclpy.init(args=args)
    node = None
    try:
        node = ScoreHmrNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not _SIGNALLED:
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: B902 - re-raised unless it is a shutdown race
        if rclpy.ok():
            raise
        # SIGTERM shut the context down while the executor was building its wait set:
        # rclpy raises RCLError ('context is not valid') there instead of
        # ExternalShutdownException. It is the same clean shutdown.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if fast_exit:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)


def _own_frame_pattern() -> 're.Pattern':
    """Child frames this node publishes on ``/tf`` (not camera extrinsics)."""
    names = '|'.join(re.escape(convert.joint_frame(j, 0)[:-2]) for j in range(24))
    return re.compile(rf'(?:[^/]+/)?(?:{names})_\d+')


def _note_signal(signum, frame) -> None:
    """Python-level SIGINT/SIGTERM handler: note it (rclpy's handler shuts down)."""
    _SIGNALLED.append(signum)


if __name__ == '__main__':
    main()
