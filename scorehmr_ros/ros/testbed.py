"""
Drive a ``scorehmr`` node process over real DDS: feed it camera inputs, collect outputs.

The reliability tests (``tests/test_bad_input_matrix.py``, ``tests/test_fault_injection.py``)
and ``benchmarks/soak.py`` use it. :class:`NodeProcess` runs the node as
``python -m scorehmr_ros.ros.node`` in its own namespace (so that other nodes sharing the
DDS domain cannot be mistaken for it) and stops it with a signal, timing the exit.
:class:`Testbed` is the other side, in its own rclpy context: publishers for every
camera's ``image``, ``camera_info`` and ``detections``, and subscribers recording every
output (``bodies``, ``/tf``, ``markers``, ``joint_states``, ``/diagnostics``) with its
arrival time. The message builders turn a :class:`~scorehmr_ros.synthetic_stream.CameraFrame`
into the inputs an upstream detector and a camera driver would publish.
"""

import contextlib
import math
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)
from scorehmr_ros_msgs.msg import PersonDetection, PersonDetectionArray, SmplBodyArray
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray
import yaml

from scorehmr_ros.fusion.calibration import camera_pose
from scorehmr_ros.ros import convert
from scorehmr_ros.ros.replay import spin_until

REPO = Path(__file__).resolve().parents[2]
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
#: As tf2_ros's StaticTransformBroadcaster: latched for late subscribers.
STATIC_TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
INPUT_TOPICS = (('image', Image), ('camera_info', CameraInfo),
                ('detections', PersonDetectionArray))


#: Engine of the rigs that play an upstream detector with BODY_25 keypoints and 3072
#: features (:func:`person_msg`): random weights on the synthetic body, since the shipped
#: prior of ``config/node.yaml`` takes COCO-17 keypoints only.
UPSTREAM_ENGINE = {'refiner.model.checkpoint': '', 'refiner.body.model_path': ''}


def write_params(path: Union[str, Path], overrides: Dict,
                 engine: Optional[Dict] = None) -> Path:
    """
    Write a node parameter file: ``config/node.yaml`` with ``overrides`` applied.

    :param path: file to write.
    :param overrides: parameter name -> value (``refiner.sampler.outer_iters`` style names
        reach into the nested ``refiner`` section).
    :param engine: engine parameters applied before ``overrides`` (default
        :data:`UPSTREAM_ENGINE`; ``{}`` keeps node.yaml's embedded default).
    :return: ``path``.
    """
    with open(REPO / 'config' / 'node.yaml', encoding='utf-8') as handle:
        params = yaml.safe_load(handle)
    node_params = params['/**']['ros__parameters']
    engine = UPSTREAM_ENGINE if engine is None else engine
    for name, value in {**engine, **overrides}.items():
        target = node_params
        *sections, key = name.split('.')
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = list(value) if isinstance(value, tuple) else value
    path = Path(path)
    path.write_text(yaml.safe_dump(params), encoding='utf-8')
    return path


class NodeProcess:
    """
    The node in its own process, in namespace ``namespace``, output to ``log_path``.

    :param params_file: ROS parameter file.
    :param env: environment (see :func:`scorehmr_ros.demo_ros.isolated_ros_env`).
    :param namespace: absolute namespace, e.g. ``'/t1234'``.
    :param log_path: file for the node's stdout and stderr.
    """

    def __init__(self, params_file: Union[str, Path], env: Dict[str, str], namespace: str,
                 log_path: Union[str, Path]):
        self.namespace = namespace
        self.log_path = Path(log_path)
        self._log = open(self.log_path, 'w', encoding='utf-8')
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'scorehmr_ros.ros.node', '--ros-args', '--params-file',
             str(params_file), '-r', f'__ns:={namespace}'], env=env, text=True,
            stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        """Process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the node wrote so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding='utf-8', errors='replace')

    def stop(self, signum: int = signal.SIGINT, timeout_s: float = 15.0
             ) -> Tuple[Optional[int], float]:
        """
        Send ``signum`` and wait for the exit (SIGKILL after ``timeout_s``).

        :return: ``(exit code, seconds from the signal to the exit)``; the code is None
            and the time ``inf`` if it had to be killed.
        """
        if not self.alive():
            self._log.close()
            return self.process.returncode, 0.0
        sent_s = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout_s)
            exit_s = time.monotonic() - sent_s
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code, exit_s = None, math.inf
        self._log.close()
        return code, exit_s


class Testbed:
    """
    Publishers of camera inputs and recorders of every node output, in one rclpy context.

    :param domain_id: ROS domain id.
    :param namespace: the node's namespace (absolute).
    :param cameras: camera names.
    :param node_name: the node's name (diagnostics status names start with it).
    :param input_qos: ``'reliable'`` or ``'sensor_data'`` for the input publishers.
    """

    def __init__(self, domain_id: int, namespace: str, cameras: Sequence[str],
                 node_name: str = 'scorehmr', input_qos: str = 'reliable'):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node('scorehmr_testbed', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.namespace = namespace.rstrip('/')
        self.cameras = tuple(cameras)
        self.status_prefix = f'{self.namespace}/{node_name}: '
        qos = RELIABLE if input_qos == 'reliable' else qos_profile_sensor_data
        self.pubs = {}
        for cam in self.cameras:
            for topic, msg_type in INPUT_TOPICS:
                self.pubs[cam, topic] = self.node.create_publisher(
                    msg_type, f'{self.namespace}/{cam}/{topic}', qos)
        #: Received outputs per kind: lists of ``(arrival time.monotonic(), message)``.
        self.received: Dict[str, List[Tuple[float, object]]] = {
            'bodies': [], 'tf': [], 'markers': [], 'joint_states': [], 'diagnostics': []}
        for kind, msg_type, topic in (
                ('bodies', SmplBodyArray, f'{self.namespace}/bodies'),
                ('tf', TFMessage, '/tf'),
                ('markers', MarkerArray, f'{self.namespace}/markers'),
                ('joint_states', JointState, f'{self.namespace}/joint_states')):
            self.node.create_subscription(
                msg_type, topic, lambda msg, k=kind: self._on_output(k, msg), RELIABLE)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      RELIABLE)
        self.pub_tf_static = self.node.create_publisher(TFMessage, '/tf_static', STATIC_TF_QOS)
        self.pub_tf = self.node.create_publisher(TFMessage, '/tf', RELIABLE)

    def _on_output(self, kind: str, msg) -> None:
        self.received[kind].append((time.monotonic(), msg))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        # Other nodes of the domain publish /diagnostics too: keep this node's only.
        if any(s.name.startswith(self.status_prefix) for s in msg.status):
            self.received['diagnostics'].append((time.monotonic(), msg))

    # ------------------------------------------------------------------- spinning

    def spin_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """
        Spin until ``condition()`` holds or ``timeout_s`` passes.

        :return: the final value of ``condition()``.
        """
        return spin_until(self.executor, condition, timeout_s, step_s=0.02)

    def spin_for(self, duration_s: float) -> None:
        """Spin (receive outputs) for ``duration_s`` seconds."""
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.02, max(deadline - time.monotonic(),
                                                              0.0)))

    def ready(self) -> bool:
        """Whether the node subscribes to every input and has published diagnostics."""
        return (all(p.get_subscription_count() > 0 for p in self.pubs.values())
                and bool(self.received['diagnostics']))

    # ---------------------------------------------------------------- diagnostics

    def _status(self, suffix: str, after_s: float = -math.inf):
        for arrived_s, array in reversed(self.received['diagnostics']):
            if arrived_s < after_s:
                return None
            for status in array.status:
                if status.name == self.status_prefix + suffix:
                    return status
        return None

    def values(self, after_s: float = -math.inf) -> Dict[str, str]:
        """Key-values of the newest refinement status (arrived after ``after_s``)."""
        status = self._status('refinement', after_s)
        return {} if status is None else {kv.key: kv.value for kv in status.values}

    def counters(self, after_s: float = -math.inf) -> Dict[str, int]:
        """Integer counters of the newest refinement status (arrived after ``after_s``)."""
        return {k: int(v) for k, v in self.values(after_s).items() if v.isdigit()}

    def fresh_counters(self, timeout_s: float = 5.0) -> Dict[str, int]:
        """
        Counters of a diagnostics message that arrives after this call.

        :raises TimeoutError: none arrived within ``timeout_s``.
        """
        now_s = time.monotonic()
        if not self.spin_until(lambda: bool(self.counters(now_s)), timeout_s):
            raise TimeoutError(f'no /diagnostics from {self.status_prefix} in {timeout_s} s')
        return self.counters(now_s)

    def status_values(self, suffix: str) -> Dict[str, str]:
        """Key-values of the newest status named ``<node>: <suffix>`` (empty if none)."""
        status = self._status(suffix)
        return {} if status is None else {kv.key: kv.value for kv in status.values}

    def track_statuses(self) -> Dict[str, Dict[str, str]]:
        """Per-track statuses of the newest diagnostics message: id -> key-values."""
        if not self.received['diagnostics']:
            return {}
        out = {}
        for status in self.received['diagnostics'][-1][1].status:
            if status.name.startswith(self.status_prefix + 'track '):
                values = {kv.key: kv.value for kv in status.values}
                out[values.get('id', '')] = values
        return out

    def camera_state(self, camera: str) -> Optional[str]:
        """Newest diagnostics message of one camera (``'ok'``, ``'timed out'``, ...)."""
        status = self._status(f'camera {camera}')
        return None if status is None else status.message

    # ------------------------------------------------------------------- outputs

    def bodies_at(self, stamp_ns: int, frame_id: str) -> List[SmplBodyArray]:
        """Received ``SmplBodyArray`` messages with this stamp and frame."""
        return [m for _, m in self.received['bodies']
                if stamp_to_ns(m.header.stamp) == stamp_ns and m.header.frame_id == frame_id]

    def output_messages(self) -> List[object]:
        """Every output message received (all kinds)."""
        return [m for kind in self.received.values() for _, m in kind]

    # -------------------------------------------------------------------- inputs

    def publish(self, camera: str, topic: str, msg) -> None:
        """Publish one input message on ``<camera>/<topic>``."""
        self.pubs[camera, topic].publish(msg)

    def publish_view(self, view, stamp_ns: int, info: bool = True, image: bool = True,
                     detections: bool = True) -> None:
        """Publish one camera's CameraInfo, Image and detections, stamped ``stamp_ns``."""
        if info:
            self.publish(view.camera, 'camera_info', camera_info_msg(view, stamp_ns))
        if image:
            self.publish(view.camera, 'image', image_msg(view, stamp_ns))
        if detections:
            self.publish(view.camera, 'detections', detections_msg(view, stamp_ns))

    def publish_camera_tf(self, views, fixed_frame: str, stamp_ns: int = 0,
                          static: bool = True) -> None:
        """Publish the cameras' poses in ``fixed_frame`` on ``/tf_static`` (or ``/tf``)."""
        msg = camera_tf_msg(views, fixed_frame, stamp_ns)
        (self.pub_tf_static if static else self.pub_tf).publish(msg)

    def close(self) -> None:
        """Destroy the node and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def stamp_to_ns(stamp) -> int:
    """Int nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(view, stamp_ns: int) -> Header:
    """Header of a view's messages: the stamp and the camera's optical frame."""
    return Header(stamp=convert.stamp_msg(stamp_ns), frame_id=view.frame_id)


def camera_info_msg(view, stamp_ns: int) -> CameraInfo:
    """``CameraInfo`` of a view: K, plumb_bob with zero distortion, P = [K | 0]."""
    k = np.asarray(view.k, dtype=np.float64)
    return CameraInfo(header=header(view, stamp_ns), height=int(view.image.shape[0]),
                      width=int(view.image.shape[1]), distortion_model='plumb_bob',
                      d=[0.0] * 5, k=k.ravel().tolist(), r=np.eye(3).ravel().tolist(),
                      p=np.concatenate((k, np.zeros((3, 1))), axis=1).ravel().tolist())


def image_msg(view, stamp_ns: int) -> Image:
    """Build the view's mono8 image."""
    return convert.numpy_to_image(view.image, 'mono8', header(view, stamp_ns))


def person_msg(view, index: int, features_dim: int = 0) -> PersonDetection:
    """
    One person of a view as an upstream detection (BODY_25 keypoints + estimate).

    :param view: a :class:`~scorehmr_ros.synthetic_stream.CameraFrame`.
    :param index: person index in the view.
    :param features_dim: length of the (zero) feature vector; 0 sends none.
    """
    keypoints = np.asarray(view.keypoints[index], dtype=np.float64)
    return PersonDetection(
        track_id=int(view.track_ids[index]), score=0.9, keypoint_layout='body25',
        keypoints_xy=keypoints[:, :2].ravel().tolist(),
        keypoint_confidence=keypoints[:, 2].tolist(),
        init_pose_aa=np.asarray(view.init_pose_aa[index], dtype=np.float64).tolist(),
        init_betas=np.asarray(view.init_betas[index], dtype=np.float64).tolist(),
        init_cam_t=np.asarray(view.init_cam_t[index], dtype=np.float64).tolist(),
        features=[0.0] * features_dim, regressor='synthetic')


def detections_msg(view, stamp_ns: int, people: Optional[List[PersonDetection]] = None
                   ) -> PersonDetectionArray:
    """Build the detections of a view (``people`` overrides the view's own)."""
    if people is None:
        people = [person_msg(view, i) for i in range(len(view.track_ids))]
    return PersonDetectionArray(header=header(view, stamp_ns), people=people)


def camera_tf_msg(views, fixed_frame: str, stamp_ns: int = 0) -> TFMessage:
    """
    Camera poses as TF: ``fixed_frame`` -> each view's optical frame.

    :param views: :class:`~scorehmr_ros.synthetic_stream.CameraFrame` with
        ``world_to_camera``.
    :param fixed_frame: parent frame (the views' world).
    :param stamp_ns: stamp of the transforms.
    """
    transforms = []
    for view in views:
        translation, quat = camera_pose(view.world_to_camera)
        transforms.append(TransformStamped(
            header=Header(stamp=convert.stamp_msg(stamp_ns), frame_id=fixed_frame),
            child_frame_id=view.frame_id,
            transform=Transform(translation=Vector3(x=translation[0], y=translation[1],
                                                    z=translation[2]),
                                rotation=Quaternion(x=quat[0], y=quat[1], z=quat[2],
                                                    w=quat[3]))))
    return TFMessage(transforms=transforms)


def vm_rss_kib(pid: int) -> Optional[int]:
    """
    Resident set size of a process from ``/proc/<pid>/status`` (Linux).

    :return: KiB, or None if the process is gone.
    """
    try:
        with open(f'/proc/{pid}/status', encoding='ascii') as handle:
            for line in handle:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def random_namespace() -> str:
    """Draw a namespace no other test run uses (``/t<16 hex digits>``)."""
    return '/t' + os.urandom(8).hex()


@contextlib.contextmanager
def ros_variables(env: Dict[str, str]) -> Iterator[None]:
    """
    Use ``env``'s ROS variables in this process while the block runs (then restore them).

    The in-process :class:`Testbed` reads discovery range and log directory from
    ``os.environ``; a node process started with ``env`` must see the same domain.

    :param env: e.g. :func:`scorehmr_ros.demo_ros.isolated_ros_env`.
    """
    saved = {k: os.environ.get(k) for k in
             ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_LOG_DIR')}
    os.environ.update({k: env[k] for k in saved if k in env})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
