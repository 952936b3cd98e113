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
  frame = its optical frame (cameras are uncalibrated: no extrinsics yet);
- ``/tf``: ``body_<id>`` and ``<joint>_<id>`` frames (prefixed ``<c>/`` with several
  cameras, so that one person seen twice does not give a frame two parents);
- ``markers`` (``MarkerArray``: skeleton lines) and ``joint_states`` (one per body);
- ``/diagnostics`` every ``diagnostics_period_s``: input rates, counters, latency.

Images are decoded and checked (encoding, size) but the upstream front end does not need
their pixels. Bad input never stops the node: it is logged (throttled), skipped and counted.
"""

import collections
import threading
import time
from typing import Deque, Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
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

from scorehmr_ros.observations import Observations
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.ros import convert
from scorehmr_ros.ros.params import declare_and_read
from scorehmr_ros.sync import ApproximateTimeSync, stamp_to_ns

NODE_NAME = 'scorehmr'

#: Diagnostics counters (all start at 0 and are reported every period).
COUNTERS = (
    'sets',               # synchronised sets handed to the worker
    'published',          # SmplBodyArray messages published
    'bad_image',          # unsupported encoding or data size != height x step
    'bad_camera_info',    # zero / non-finite focal length
    'no_camera_info',     # detections of a camera before any valid CameraInfo
    'bad_detection',      # detections dropped (array sizes, missing or NaN estimate)
    'nan_keypoints',      # keypoints with NaN/inf or negative confidence, zeroed
    'time_jumps',         # input stamps went backwards (bag loop): state reset
    'stale_dropped',      # sets older than stale_age_s when the worker took them
    'queue_dropped',      # sets dropped because the worker queue was full
    'sync_dropped',       # messages that found no partner within the slop
    'camera_timeouts',    # a camera went silent for camera_timeout_s
    'non_finite_output',  # bodies dropped because the result was not finite
    'refine_errors',      # refinement raised (the set is skipped)
)
LATENCY_WINDOW = 200
RATE_WINDOW_S = 5.0


class _Camera:
    """Per-camera state (callback thread writes, worker reads immutable snapshots)."""

    def __init__(self, name: str):
        self.name = name
        self.intrinsics: Optional[convert.Intrinsics] = None
        self.arrivals: Dict[str, Deque[float]] = {
            topic: collections.deque() for topic in ('image', 'camera_info', 'detections')}
        self.last_arrival_s: Optional[float] = None
        self.timed_out = False

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
        if self.settings.output_frame:
            raise ValueError('output_frame needs camera extrinsics, which this node does not '
                             'read yet; leave it empty to publish in each camera frame')
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
        multi = len(self.cameras) > 1
        self._prefix = {c.name: (c.name + '/' if multi else '') for c in self.cameras}

        self.sync = ApproximateTimeSync(
            len(self.cameras), int(round(self.settings.slop_s * 1e9)),
            self.settings.sync_queue_size, self._on_set,
            backwards_tolerance_ns=int(round(max(self.settings.slop_s, 0.1) * 1e9)))
        self._queue: Deque = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._stopping = False

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
            self.create_subscription(
                Image, f'{camera.name}/image',
                lambda msg, c=camera: self._guard(self.on_image, msg, c), input_qos)
            self.create_subscription(
                CameraInfo, f'{camera.name}/camera_info',
                lambda msg, c=camera: self._guard(self.on_camera_info, msg, c), input_qos)
            self.create_subscription(
                PersonDetectionArray, f'{camera.name}/detections',
                lambda msg, c=camera, i=index: self._guard(self.on_detections, msg, c, i),
                input_qos)
        self.create_timer(self.settings.diagnostics_period_s, self.on_diagnostics_timer)
        self._worker = threading.Thread(target=self._work, name='scorehmr_worker',
                                        daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ callbacks

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
        if camera.timed_out:
            camera.timed_out = False
            self.get_logger().info(f'camera {camera.name} publishes again')

    def on_image(self, msg: Image, camera: _Camera) -> None:
        """Check an image (its pixels are not needed by the upstream front end)."""
        self._arrived(camera, 'image')
        convert.image_to_numpy(msg)

    def on_camera_info(self, msg: CameraInfo, camera: _Camera) -> None:
        """Keep the newest valid intrinsics of a camera."""
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
        decoded = convert.decode_detections(msg, self.cond_dim)
        if decoded.rejected:
            self._count('bad_detection', len(decoded.rejected))
            self.get_logger().warning(f'{camera.name}: ' + '; '.join(decoded.rejected),
                                      throttle_duration_sec=5.0)
        if decoded.repaired_keypoints:
            self._count('nan_keypoints', decoded.repaired_keypoints)
        frame_id = msg.header.frame_id or intrinsics.frame_id
        dropped_before = sum(self.sync.stats.dropped)
        in_order = self.sync.add(index, stamp_ns, {
            'camera': camera.name, 'stamp_ns': stamp_ns, 'frame_id': frame_id,
            'intrinsics': intrinsics, 'people': decoded.people, 'received_s': received_s})
        self._count('sync_dropped', sum(self.sync.stats.dropped) - dropped_before)
        if not in_order:
            self._count('time_jumps')
            with self._lock:
                self._queue.clear()  # results of the old timeline would confuse consumers
            self.get_logger().warning(f'{camera.name}: stamp went backwards (bag loop or '
                                      'clock reset): synchroniser state reset')

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
            self.pub_diag.publish(self.diagnostics())
        except Exception as exc:  # noqa: B902 - the timer must keep running
            self.get_logger().error(f'diagnostics failed: {exc!r}', throttle_duration_sec=5.0)

    def _check_timeouts(self) -> None:
        now_s = time.monotonic()
        for index, camera in enumerate(self.cameras):
            silent = camera.last_arrival_s is not None and \
                now_s - camera.last_arrival_s > self.settings.camera_timeout_s
            if silent and not camera.timed_out:
                camera.timed_out = True
                self._count('camera_timeouts')
                self.get_logger().warning(
                    f'camera {camera.name} silent for > {self.settings.camera_timeout_s} s: '
                    'continuing with the other cameras')
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
        prefix = self._prefix[camera]
        array, dropped = convert.build_body_array(header, bodies)
        if dropped:
            self._count('non_finite_output', dropped)
        finite = [b for b in bodies if b.is_finite()]
        self.pub_bodies.publish(array)
        if finite:
            self.pub_tf.publish(convert.build_tf(header, finite, prefix))
            faces = self.refiner.body.faces.cpu().numpy() if self.settings.mesh_markers \
                else None
            self.pub_markers.publish(convert.build_markers(
                header, finite, prefix + 'skeleton', self.settings.marker_lifetime_s, faces))
            for body in finite:
                self.pub_joints.publish(convert.build_joint_state(header, body, prefix))
        self._count('published')

    # ---------------------------------------------------------------- diagnostics

    def diagnostics(self) -> DiagnosticArray:
        """One status for the node (counters, latency) and one per camera (rates)."""
        now_s = time.monotonic()
        with self._lock:
            counters = dict(self.counters)
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
        problems = [name for name in COUNTERS[2:] if counters[name]]
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        message = 'ok' if not problems else 'counted: ' + ', '.join(problems)
        name = self.get_fully_qualified_name()
        statuses = [DiagnosticStatus(level=level, name=f'{name}: refinement', message=message,
                                     hardware_id=name, values=values)]
        for camera in self.cameras:
            rates = [KeyValue(key=f'{topic}_rate_hz', value=f'{camera.rate_hz(topic, now_s):.2f}')
                     for topic in camera.arrivals]
            rates.append(KeyValue(key='calibrated', value=str(camera.intrinsics is not None)))
            silent = camera.timed_out or camera.last_arrival_s is None
            statuses.append(DiagnosticStatus(
                level=DiagnosticStatus.WARN if silent else DiagnosticStatus.OK,
                name=f'{name}: camera {camera.name}', hardware_id=camera.name,
                message='timed out' if camera.timed_out else (
                    'no input yet' if camera.last_arrival_s is None else 'ok'),
                values=rates))
        return DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                               status=statuses)

    def destroy_node(self) -> None:
        """Stop the worker, then destroy the node."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(args=None) -> None:
    """Console entry point (``scorehmr-node``); works on Humble/Jazzy/Kilted installs."""
    rclpy.init(args=args)
    node = None
    try:
        node = ScoreHmrNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
