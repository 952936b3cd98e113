"""
The detector node: camera images in, 2D keypoints and an initial body estimate out.

``scorehmr_detector`` (console script ``scorehmr-detector``) is the built-in front end of
the refinement node. Per camera ``<c>`` (relative topics) it subscribes ``<c>/image`` and
``<c>/camera_info`` and publishes ``<c>/detections`` (``scorehmr_ros_msgs/
PersonDetectionArray``, header = the image's header), which the refinement node reads with
its ``upstream`` front end. Per person: COCO-17 keypoints with confidences and the box
from MediaPipe Pose (one person per camera image; several with ``person_boxes: hog``,
where OpenCV's HOG pedestrian boxes are searched one by one), and an initial estimate
(pose, shape, translation) fitted to the keypoints with the camera's intrinsics, since
there is no regressor: with ``refiner.model.checkpoint`` naming a COCO-17 keypoint-conditioned
prior (e.g. the shipped ``builtin:mocap_prior_coco17``, the parameter shared with the
refinement node) the better-reprojecting of the rest pose and poses sampled from the prior
(``initial_estimate: auto``, :mod:`scorehmr_ros.perception.initial_estimate`), else the
rest pose. Features are left empty.

Detection runs on one worker thread, never in a callback: each camera has a slot for one
waiting image, and a newer image replaces a waiting one (the replaced frame is counted as
``queue_dropped``), so a slow detector delays nothing but itself. Bad input (corrupt or
unsupported images, images before a valid CameraInfo, images whose size differs from the
CameraInfo's) is logged (throttled), counted and skipped; an image with nobody in it gives
an empty array. ``/diagnostics`` reports the counters and the detection latency.
"""

import collections
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from typing import Deque, Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)
from scorehmr_ros_msgs.msg import PersonDetection, PersonDetectionArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import matrix_to_axis_angle
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.perception.boxes import HogPeopleDetector, HogSettings, people_in_boxes
from scorehmr_ros.perception.initial_estimate import (initial_estimate, METHODS,
                                                      prior_available)
from scorehmr_ros.perception.mediapipe_pose import (DetectorUnavailable,
                                                    MediaPipePoseDetector, PoseDetections)
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.ros import convert
from scorehmr_ros.ros.params import check_inputs

NODE_NAME = 'scorehmr_detector'
DETECTOR_NAME = 'mediapipe_pose'
#: Name of the initial estimate, part of each detection's ``regressor`` field: the rest
#: pose placed on the keypoints.
ESTIMATE_NAME = 'rest_pose_fit'
#: The same with a keypoint-conditioned prior: the better-reprojecting of the rest pose and
#: prior samples given the keypoints.
PRIOR_ESTIMATE_NAME = 'keypoint_prior_fit'

#: Counters of normal operation.
INFO_COUNTERS = (
    'images',          # images received
    'published',       # detection arrays published
    'people',          # people published (sum over arrays)
    'empty',           # arrays published with nobody in them
)
#: Counters of problems (any non-zero one makes the diagnostics status WARN).
PROBLEM_COUNTERS = (
    'bad_image',            # unsupported encoding, empty, bad step, data size != height x step
    'image_size_mismatch',  # image width/height differ from the camera's CameraInfo
    'bad_camera_info',      # zero / non-finite K, focal <= 0, distortion length != model
    'no_camera_info',       # images of a camera before any valid CameraInfo (skipped)
    'queue_dropped',        # waiting images replaced by a newer one before detection
    'detect_errors',        # the detector or the initial estimate raised (frame skipped)
)
COUNTERS = INFO_COUNTERS + PROBLEM_COUNTERS
LATENCY_WINDOW = 200
RATE_WINDOW_S = 5.0
PERSON_BOXES = ('none', 'hog')
SHUTDOWN_JOIN_S = 0.5
SPIN_PERIOD_S = 0.1
#: Exit status of ``main()`` when the detector cannot start (e.g. MediaPipe missing).
EXIT_UNAVAILABLE = 2
_SIGNALLED: List[int] = []


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """
    Parameters of the detector node.

    :param cameras: camera names; topics ``<camera>/image``, ``<camera>/camera_info`` in
        and ``<camera>/detections`` out, relative to the node namespace.
    :param input_qos: ``sensor_data`` (best effort, connects to best-effort drivers) or
        ``reliable``.
    :param rectified: images are rectified (intrinsics from P, not K).
    :param model_complexity: MediaPipe Pose model, 0 (lite) or 1 (full).
    :param min_detection_confidence: MediaPipe's person detector threshold in [0, 1].
    :param tracking: reuse each camera's previous landmarks to find its person (faster
        on video of one person per camera); false treats every image on its own.
    :param person_boxes: ``none``: MediaPipe searches the whole image (one person per
        camera); ``hog``: OpenCV's HOG pedestrian detector finds person boxes and
        MediaPipe runs once per box (several people; slow, about 1 s per VGA image).
    :param min_person_score: with ``person_boxes``, people whose mean keypoint confidence
        is below this are dropped (boxes on non-persons).
    :param hog_upscale: with ``hog``, the image is enlarged by this factor first (people
        shorter than about 100 px are found only when enlarged).
    :param body_model_path: body of the initial estimate (the parameter
        ``refiner.body.model_path``, shared with the refinement node so one parameter file
        configures both): ``''`` the synthetic body, ``anny``, or a licensed SMPL file.
    :param checkpoint: denoiser of the refinement node (the parameter
        ``refiner.model.checkpoint``, shared like the body): a COCO-17 keypoint-conditioned
        prior (``builtin:mocap_prior_coco17``) lets ``initial_estimate`` sample starts from
        it; ``''`` or another checkpoint: the rest pose.
    :param initial_estimate: ``auto`` (prior samples where the checkpoint allows, else the
        rest pose), ``rest`` or ``prior`` (needs such a checkpoint).
    :param diagnostics_period_s: period of ``/diagnostics``, seconds.
    """

    cameras: tuple = ('cam0',)
    input_qos: str = 'sensor_data'
    rectified: bool = False
    model_complexity: int = 1
    min_detection_confidence: float = 0.5
    tracking: bool = False
    person_boxes: str = 'none'
    min_person_score: float = 0.5
    hog_upscale: float = 1.5
    body_model_path: str = ''
    checkpoint: str = ''
    initial_estimate: str = 'auto'
    diagnostics_period_s: float = 1.0

    def __post_init__(self):
        check_inputs(self.cameras, self.input_qos)
        if self.person_boxes not in PERSON_BOXES:
            raise ValueError(f'person_boxes must be one of {PERSON_BOXES}, got '
                             f'{self.person_boxes!r}')
        if self.initial_estimate not in METHODS:
            raise ValueError(f'initial_estimate must be one of {METHODS}, got '
                             f'{self.initial_estimate!r}')
        if self.diagnostics_period_s <= 0:
            raise ValueError('diagnostics_period_s must be > 0, got '
                             f'{self.diagnostics_period_s}')


#: ROS parameter name -> DetectorSettings field (body and checkpoint: the refinement node's
#: names, so one parameter file configures both nodes).
_PARAMETER_FIELDS = {f.name: f.name for f in dataclasses.fields(DetectorSettings)}
_PARAMETER_FIELDS.pop('body_model_path')
_PARAMETER_FIELDS.pop('checkpoint')
_PARAMETER_FIELDS['refiner.body.model_path'] = 'body_model_path'
_PARAMETER_FIELDS['refiner.model.checkpoint'] = 'checkpoint'


def declare_settings(node: Node) -> DetectorSettings:
    """
    Declare the detector's parameters (described, read-only) and build its settings.

    :param node: the node.
    :return: the settings; invalid values raise ``ValueError`` naming the field.
    """
    defaults = DetectorSettings()
    docs = _field_docs()
    values = {}
    for name, field in _PARAMETER_FIELDS.items():
        default = getattr(defaults, field)
        descriptor = ParameterDescriptor(description=docs.get(field, ''), read_only=True)
        if isinstance(default, tuple):
            default = list(default)
            descriptor.type = ParameterType.PARAMETER_STRING_ARRAY
        value = node.declare_parameter(name, default, descriptor).value
        if isinstance(default, list):
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        values[field] = value
    return DetectorSettings(**values)


def _field_docs() -> Dict[str, str]:
    """``:param name: text`` of :class:`DetectorSettings`, one line per field."""
    docs: Dict[str, str] = {}
    current = None
    for line in (DetectorSettings.__doc__ or '').splitlines():
        stripped = line.strip()
        if stripped.startswith(':param '):
            current, _, text = stripped[len(':param '):].partition(':')
            docs[current] = text.strip()
        elif current and stripped:
            docs[current] += ' ' + stripped
    return docs


# ------------------------------------------------------------------ initial estimate


@dataclasses.dataclass
class InitialBodies:
    """
    Initial estimate of P people in one camera.

    :param pose_aa: [P, 24, 3] axis-angle, SMPL order, entry 0 body-to-camera orientation.
    :param betas: [P, 10] shape.
    :param cam_t: [P, 3] body translation in the camera optical frame, metres.
    """

    pose_aa: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray


def estimate_initial_bodies(body_or_refiner, keypoints: np.ndarray,
                            intrinsics: convert.Intrinsics, method: str = 'auto',
                            landmarks: Optional[np.ndarray] = None) -> InitialBodies:
    """
    Estimate each person's initial body from COCO-17 keypoints (the one place it is chosen).

    :func:`~scorehmr_ros.perception.initial_estimate.initial_estimate` assumes one focal
    length and the principal point at the image centre; the keypoints are moved into that
    camera first (the pinhole projection is affine in pixels, so the fitted translation
    and the reprojection errors that choose among prior samples are the same as with the
    real ``cx, cy`` and ``fy``, up to the ``fy / fx`` scale of vertical pixels).

    :param body_or_refiner: a :class:`~scorehmr_ros.body.model.BodyModel` (rest pose), or
        a :class:`~scorehmr_ros.refiner.Refiner` whose COCO-17 keypoint-conditioned
        denoiser also proposes prior samples (``method`` ``auto`` or ``prior``).
    :param keypoints: [P, 17, 3] COCO-17 ``(x_px, y_px, confidence)``.
    :param intrinsics: the camera's intrinsics.
    :param method: ``auto``, ``rest``, ``prior`` or ``landmarks3d`` (see
        ``initial_estimate``).
    :param landmarks: [P, 17, 4] MediaPipe world landmarks (metres, camera-aligned axes,
        confidence), a candidate start for ``auto`` (``PoseDetections.world_keypoints``).
    :return: pose, shape and translation per person.
    """
    kp = np.array(keypoints, dtype=np.float64, copy=True).reshape(-1, 17, 3)
    if kp.shape[0] == 0:
        return InitialBodies(np.zeros((0, 24, 3)), np.zeros((0, 10)), np.zeros((0, 3)))
    width, height = float(intrinsics.width), float(intrinsics.height)
    kp[..., 0] = kp[..., 0] - intrinsics.cx + width / 2.0
    kp[..., 1] = (kp[..., 1] - intrinsics.cy) * (intrinsics.fx / intrinsics.fy) + height / 2.0
    est = initial_estimate(body_or_refiner, kp, (height, width), intrinsics.fx,
                           method=method, landmarks=landmarks)
    pose_aa = matrix_to_axis_angle(torch.as_tensor(est.rotmats, dtype=torch.float64)).numpy()
    return InitialBodies(pose_aa=pose_aa, betas=np.asarray(est.betas, dtype=np.float64),
                         cam_t=np.asarray(est.cam_t, dtype=np.float64))


def make_estimator(settings: DetectorSettings):
    """
    Build what the initial estimate runs on, and its name for the ``regressor`` field.

    :param settings: the detector's settings (body, checkpoint, ``initial_estimate``).
    :return: ``(body model or refiner, name)``: a refiner (torch, float64) only when the
        checkpoint is a COCO-17 keypoint-conditioned prior and the method is not ``rest``.
    :raises ValueError: ``initial_estimate: prior`` without such a checkpoint.
    """
    body_path = settings.body_model_path or None
    if settings.checkpoint and settings.initial_estimate != 'rest':
        config = RefinerConfig().replace(
            model={'checkpoint': settings.checkpoint}, body={'model_path': body_path},
            dtype='float64')
        refiner = Refiner(config)
        if prior_available(refiner):
            return refiner, PRIOR_ESTIMATE_NAME
        body = refiner.body
    else:
        body = BodyModel.from_config(body_path, dtype=torch.float64)
    if settings.initial_estimate == 'prior':
        raise ValueError('initial_estimate: prior needs refiner.model.checkpoint to be a COCO-17 '
                         'keypoint-conditioned prior (e.g. builtin:mocap_prior_coco17), got '
                         f'{settings.checkpoint!r}')
    return body, ESTIMATE_NAME


def build_detections(header: Header, found: PoseDetections, bodies: InitialBodies,
                     regressor: str) -> PersonDetectionArray:
    """
    Build the ``PersonDetectionArray`` of one image.

    :param header: the image's header (copied: stamp and optical frame).
    :param found: MediaPipe's people (P of them).
    :param bodies: their initial estimate (P rows).
    :param regressor: the ``regressor`` field: which detector and initial estimate.
    :return: the message; untracked (``TRACK_ID_NONE``), layout ``coco17``, no features.
    """
    people = []
    for i in range(found.num_people):
        kp = np.asarray(found.keypoints[i], dtype=np.float64)
        people.append(PersonDetection(
            track_id=PersonDetection.TRACK_ID_NONE, score=float(found.scores[i]),
            bbox_xyxy=np.asarray(found.boxes[i], dtype=np.float32),
            keypoint_layout=PersonDetection.LAYOUT_COCO17,
            keypoints_xy=kp[:, :2].ravel().tolist(), keypoint_confidence=kp[:, 2].tolist(),
            init_pose_aa=bodies.pose_aa[i].ravel().tolist(),
            init_betas=bodies.betas[i].tolist(), init_cam_t=bodies.cam_t[i].tolist(),
            features=[], regressor=regressor))
    return PersonDetectionArray(header=header, people=people)


def to_rgb(msg: Image) -> np.ndarray:
    """
    Decode a camera image into the detector's input.

    :param msg: the image.
    :return: [H, W, 3] uint8 RGB.
    :raises convert.ImageError: an unsupported or corrupt image, or 16-bit mono (a depth
        or thermal image, not a colour camera).
    """
    image = convert.image_to_numpy(msg)
    encoding = msg.encoding
    if image.dtype != np.uint8:
        raise convert.ImageError(f'image encoding {encoding!r} is not an 8-bit camera '
                                 'image; the detector needs rgb8, bgr8, rgba8, bgra8 or mono8')
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    rgb = image[..., :3]
    if encoding.startswith('bgr'):
        rgb = rgb[..., ::-1]
    return np.ascontiguousarray(rgb)


# ---------------------------------------------------------------------------- node


@dataclasses.dataclass
class _Frame:
    header: Header
    rgb: np.ndarray
    intrinsics: convert.Intrinsics
    received_s: float


class _Camera:
    """Per-camera state: intrinsics, the waiting frame, the detector, arrival times."""

    def __init__(self, name: str):
        self.name = name
        self.intrinsics: Optional[convert.Intrinsics] = None
        self.pending: Optional[_Frame] = None
        self.detector: Optional[MediaPipePoseDetector] = None
        self.arrivals: Deque[float] = collections.deque()

    def rate_hz(self, now_s: float) -> float:
        while self.arrivals and self.arrivals[0] < now_s - RATE_WINDOW_S:
            self.arrivals.popleft()
        return len(self.arrivals) / RATE_WINDOW_S


class DetectorNode(Node):
    """
    MediaPipe Pose front end for N cameras: images in, ``PersonDetectionArray`` out.

    :param kwargs: passed to ``rclpy.node.Node`` (e.g. ``context``, ``namespace``).
    :raises DetectorUnavailable: MediaPipe (the optional extra) is not installed.
    """

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.settings = declare_settings(self)
        self.cameras = [_Camera(name) for name in self.settings.cameras]
        # One MediaPipe graph per camera: with tracking, state must not mix cameras.
        for camera in self.cameras:
            camera.detector = MediaPipePoseDetector(
                model_complexity=self.settings.model_complexity,
                min_detection_confidence=self.settings.min_detection_confidence,
                tracking=self.settings.tracking)
        self.boxes = None
        detector = DETECTOR_NAME
        if self.settings.person_boxes == 'hog':
            self.boxes = HogPeopleDetector(HogSettings(upscale=self.settings.hog_upscale))
            detector = 'hog+' + DETECTOR_NAME
        #: Body model, or refiner with a keypoint-conditioned prior, of the initial estimate.
        self.estimator, estimate_name = make_estimator(self.settings)
        self.body = getattr(self.estimator, 'body', self.estimator)
        #: The ``regressor`` field of every detection: detector + initial estimate.
        self.regressor = f'{detector}+{estimate_name}'
        self.get_logger().info(f'{detector} (model_complexity '
                               f'{self.settings.model_complexity}) + {estimate_name} on '
                               f'{self.body.name}; cameras: {", ".join(self.settings.cameras)}')
        self.counters = collections.Counter({name: 0 for name in COUNTERS})
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        # Held while publishing: after shutdown sets _closed nothing more goes out.
        self._out_lock = threading.Lock()
        self._closed = False
        self.latencies_s: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.detect_times_s: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)

        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        input_qos = qos_profile_sensor_data if self.settings.input_qos == 'sensor_data' \
            else reliable
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', reliable)
        self.pubs = {}
        for camera in self.cameras:
            self.pubs[camera.name] = self.create_publisher(
                PersonDetectionArray, f'{camera.name}/detections', reliable)
            self.create_subscription(Image, f'{camera.name}/image',
                                     lambda msg, c=camera: self._guard(self.on_image, msg, c),
                                     input_qos)
            self.create_subscription(
                CameraInfo, f'{camera.name}/camera_info',
                lambda msg, c=camera: self._guard(self.on_camera_info, msg, c), input_qos)
        self.create_timer(self.settings.diagnostics_period_s, self.on_diagnostics_timer)
        self._worker = threading.Thread(target=self._work, name='scorehmr_detector_worker',
                                        daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ callbacks

    def _guard(self, callback, msg, camera: _Camera) -> None:
        """Run a callback; what it raises is logged (throttled) and counted."""
        try:
            callback(msg, camera)
        except convert.InputError as exc:
            self._count(exc.counter)
            self.get_logger().warning(f'{camera.name}: {exc}', throttle_duration_sec=5.0)
        except Exception as exc:  # noqa: B902 - a callback must never kill the executor
            self._count('detect_errors')
            self.get_logger().error(f'{callback.__name__} failed: {exc!r}',
                                    throttle_duration_sec=5.0)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def on_camera_info(self, msg: CameraInfo, camera: _Camera) -> None:
        """Keep the newest valid intrinsics of a camera (a bad one keeps the previous)."""
        camera.intrinsics = convert.camera_info_to_intrinsics(msg, self.settings.rectified)

    def on_image(self, msg: Image, camera: _Camera) -> None:
        """Check and decode an image; it replaces the camera's waiting one."""
        received_s = time.monotonic()
        camera.arrivals.append(received_s)
        self._count('images')
        intrinsics = camera.intrinsics
        if intrinsics is None:
            self._count('no_camera_info')
            self.get_logger().warning(f'{camera.name}: image before a valid CameraInfo '
                                      '(the initial estimate needs the intrinsics): skipped',
                                      throttle_duration_sec=5.0)
            return
        if (int(msg.width), int(msg.height)) != (intrinsics.width, intrinsics.height):
            self._count('image_size_mismatch')
            self.get_logger().warning(
                f'{camera.name}: image is {msg.width}x{msg.height} but its CameraInfo says '
                f'{intrinsics.width}x{intrinsics.height}: skipped', throttle_duration_sec=5.0)
            return
        frame = _Frame(header=msg.header, rgb=to_rgb(msg), intrinsics=intrinsics,
                       received_s=received_s)
        with self._lock:
            if camera.pending is not None:
                self.counters['queue_dropped'] += 1
            camera.pending = frame
            self._wake.notify()

    # --------------------------------------------------------------------- worker

    def _next(self):
        """Wait for the oldest waiting frame of any camera; None when stopping."""
        with self._lock:
            while not self._stopping:
                waiting = [c for c in self.cameras if c.pending is not None]
                if waiting:
                    camera = min(waiting, key=lambda c: c.pending.received_s)
                    frame, camera.pending = camera.pending, None
                    return camera, frame
                self._wake.wait()
        return None

    def _work(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            camera, frame = item
            try:
                self._process(camera, frame)
            except Exception as exc:  # noqa: B902 - one bad frame must not end the worker
                self._count('detect_errors')
                self.get_logger().error(f'{camera.name}: detection failed: {exc!r}',
                                        throttle_duration_sec=5.0)

    def _process(self, camera: _Camera, frame: _Frame) -> None:
        started_s = time.perf_counter()
        if self.boxes is None:
            found = camera.detector.detect(frame.rgb)
        else:
            boxes, _ = self.boxes.detect(frame.rgb)
            found = people_in_boxes(camera.detector, frame.rgb, boxes,
                                    self.settings.min_person_score)
        bodies = estimate_initial_bodies(self.estimator, found.keypoints, frame.intrinsics,
                                         self.settings.initial_estimate,
                                         found.world_keypoints)
        detect_s = time.perf_counter() - started_s
        msg = build_detections(frame.header, found, bodies, self.regressor)
        with self._out_lock:
            if self._closed:
                return
            self.pubs[camera.name].publish(msg)
        with self._lock:
            self.counters['published'] += 1
            self.counters['people'] += found.num_people
            if found.num_people == 0:
                self.counters['empty'] += 1
            self.latencies_s.append(time.monotonic() - frame.received_s)
            self.detect_times_s.append(detect_s)

    # ---------------------------------------------------------------- diagnostics

    def on_diagnostics_timer(self) -> None:
        """Publish ``/diagnostics``."""
        try:
            self.pub_diag.publish(self.diagnostics())
        except Exception as exc:  # noqa: B902 - the timer must keep running
            self.get_logger().error(f'diagnostics failed: {exc!r}', throttle_duration_sec=5.0)

    def diagnostics(self) -> DiagnosticArray:
        """One status for the detector (counters, latency) and one per camera (rate)."""
        now_s = time.monotonic()
        with self._lock:
            counters = dict(self.counters)
            latencies = np.asarray(self.latencies_s, dtype=np.float64)
            detect_s = np.asarray(self.detect_times_s, dtype=np.float64)
        values = [KeyValue(key=name, value=str(counters[name])) for name in COUNTERS]
        # latency_s: image arrival -> detections published (queue wait included).
        for name, data in (('latency_s', latencies), ('detect_time_s', detect_s)):
            for pct in (50, 90, 99):
                text = f'{np.percentile(data, pct):.4f}' if data.size else 'n/a'
                values.append(KeyValue(key=f'{name}_p{pct}', value=text))
        values.append(KeyValue(key='detector', value=self.regressor))
        problems = [name for name in PROBLEM_COUNTERS if counters[name]]
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        message = 'ok' if not problems else 'counted: ' + ', '.join(problems)
        name = self.get_fully_qualified_name()
        statuses = [DiagnosticStatus(level=level, name=f'{name}: detector', message=message,
                                     hardware_id=name, values=values)]
        for camera in self.cameras:
            calibrated = camera.intrinsics is not None
            statuses.append(DiagnosticStatus(
                level=DiagnosticStatus.OK if calibrated else DiagnosticStatus.WARN,
                name=f'{name}: camera {camera.name}', hardware_id=camera.name,
                message='ok' if calibrated else 'no valid CameraInfo yet',
                values=[KeyValue(key='image_rate_hz', value=f'{camera.rate_hz(now_s):.2f}'),
                        KeyValue(key='calibrated', value=str(calibrated))]))
        return DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                               status=statuses)

    def destroy_node(self) -> None:
        """Stop publishing and the worker, release MediaPipe, destroy the node."""
        if not hasattr(self, '_worker'):
            # Construction failed (e.g. MediaPipe missing); rclpy may still clean it up.
            super().destroy_node()
            return
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        with self._out_lock:
            self._closed = True
        if self._worker.is_alive():
            self._worker.join(timeout=SHUTDOWN_JOIN_S)
        if not self._worker.is_alive():
            # A detection still running keeps its graph; the process is ending anyway.
            for camera in self.cameras:
                camera.detector.close()
        super().destroy_node()


def main(args=None) -> None:
    """
    Console entry point (``scorehmr-detector``); works on Humble/Jazzy/Kilted installs.

    The process ends here: exit status 0 after a clean shutdown (SIGINT/SIGTERM), and
    :data:`EXIT_UNAVAILABLE` with one line naming the extra when MediaPipe is missing.

    :param args: command line for ``rclpy.init`` (default ``sys.argv``).
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _note_signal)
    rclpy.init(args=args)
    node = None
    status = 0
    try:
        node = DetectorNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not _SIGNALLED:
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except DetectorUnavailable as exc:
        sys.stderr.write(f'[{NODE_NAME}] cannot start: {exc}\n')
        status = EXIT_UNAVAILABLE
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: B902 - re-raised unless it is a shutdown race
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # MediaPipe's and torch's interpreter teardown is slow and can race with a worker
    # that is being abandoned; the state worth keeping is flushed above.
    os._exit(status)


def _note_signal(signum, frame) -> None:
    """Python-level SIGINT/SIGTERM handler: note it (rclpy's handler shuts down)."""
    _SIGNALLED.append(signum)


if __name__ == '__main__':
    main()
