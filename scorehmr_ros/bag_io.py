"""
A rosbag2 recording of the synthetic multi-camera stream, written and read without ROS.

:func:`write_synthetic_bag` records what :func:`scorehmr_ros.synthetic_stream.make_stream`
generates, per camera ``<c>``: ``/<c>/camera_info`` (``sensor_msgs/msg/CameraInfo``),
``/<c>/image`` (``sensor_msgs/msg/Image``, mono8) and ``/<c>/detections``
(``scorehmr_ros_msgs/msg/PersonDetectionArray``: keypoints in the stream's layout, BODY_25
by default, + regression estimate per person, + zero features of ``features_dim``). Ground
truth is in the bag too, on :data:`GROUND_TRUTH_TOPIC`: one
``scorehmr_ros_msgs/msg/SmplBodyArray`` per frame and camera, with that camera's header
(stamp and optical frame) and per person ``id`` = track id, the true ``joints`` (24 SMPL
joints, metres, camera frame), the true ``betas`` and ``root_pose.position`` = pelvis. The
synthetic stream keeps no true joint rotations, so ``local_rotations`` and
``root_pose.orientation`` are identity placeholders, not ground truth.

The cameras' extrinsics are on ``/tf_static`` (``tf2_msgs/msg/TFMessage``, logged just
before the first frame): one transform per camera from :data:`~scorehmr_ros.synthetic_stream
.WORLD_FRAME` to its optical frame, so that a replay gives the node its extrinsics without
a calibration file (the player publishes ``/tf_static`` transient local).

Header stamps are the capture times (camera ``i`` jittered by a few milliseconds, as
unsynchronised cameras are); the bag's log times are the capture time for images and
camera infos and :data:`DETECTION_DELAY_NS` later for the detections (a detector runs after
the image arrives). The custom messages are registered with rosbags from the ``.msg`` files
of ``scorehmr_ros_msgs`` (:func:`make_typestore`). Storage is MCAP (rosbag2 version 9).
"""

import dataclasses
from pathlib import Path
import random
import sys
from typing import Iterator, List, NamedTuple, Optional, Sequence, TYPE_CHECKING, Union

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg, get_typestore, Stores
from rosbags.typesys.store import Typestore

if TYPE_CHECKING:  # the stream (and torch) is imported only to write a bag
    from scorehmr_ros.synthetic_stream import Frame

CAMERAS = ('cam0', 'cam1', 'cam2')
#: Topic of the ground-truth ``SmplBodyArray`` messages.
GROUND_TRUTH_TOPIC = '/ground_truth/joints'
#: Custom messages of the ``scorehmr_ros_msgs`` package (dependencies first).
CUSTOM_MESSAGES = ('PersonDetection', 'PersonDetectionArray', 'SmplBody', 'SmplBodyArray')
#: Log time of a camera's detections after its image (detector latency).
DETECTION_DELAY_NS = 20_000_000
#: Log time of the ground truth after the image.
GROUND_TRUTH_DELAY_NS = 30_000_000
IMAGE = 'sensor_msgs/msg/Image'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
DETECTIONS = 'scorehmr_ros_msgs/msg/PersonDetectionArray'
BODIES = 'scorehmr_ros_msgs/msg/SmplBodyArray'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
#: Topic of the cameras' static transforms.
TF_STATIC_TOPIC = '/tf_static'
FEATURE_DIM = 3072
#: Detection score (a float32 value, so that a written record equals its read-back).
SCORE = float(np.float32(0.9))


class BagError(RuntimeError):
    """A bag that cannot be written or read; the message names the file."""


class BagRecord(NamedTuple):
    """
    One message of a bag.

    :param topic: topic name.
    :param timestamp_ns: log time, int nanoseconds.
    :param msgtype: e.g. ``'sensor_msgs/msg/Image'``.
    :param message: the message (a rosbags dataclass) or its CDR bytes.
    """

    topic: str
    timestamp_ns: int
    msgtype: str
    message: object


def find_msg_dir() -> Path:
    """
    Directory holding the ``scorehmr_ros_msgs`` ``.msg`` files.

    :return: ``<repo>/msg`` of a source checkout, else ``share/scorehmr_ros_msgs/msg``
        of the installed package (under ``sys.prefix``).
    :raises BagError: neither exists.
    """
    candidates = [Path(__file__).resolve().parents[1] / 'msg',
                  Path(sys.prefix) / 'share' / 'scorehmr_ros_msgs' / 'msg']
    for candidate in candidates:
        if all((candidate / f'{name}.msg').is_file() for name in CUSTOM_MESSAGES):
            return candidate
    raise BagError('scorehmr_ros_msgs .msg files not found in '
                   + ', '.join(str(c) for c in candidates))


def make_typestore(msg_dir: Optional[Union[str, Path]] = None) -> Typestore:
    """
    Build a rosbags type store of ROS 2 Kilted plus the ``scorehmr_ros_msgs`` messages.

    :param msg_dir: directory of the ``.msg`` files (default :func:`find_msg_dir`).
    :return: the type store.
    """
    msg_dir = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name in CUSTOM_MESSAGES:
        text = (msg_dir / f'{name}.msg').read_text(encoding='utf-8')
        types.update(get_types_from_msg(text, f'scorehmr_ros_msgs/msg/{name}'))
    typestore.register(types)
    return typestore


def _header(typestore: Typestore, stamp_ns: int, frame_id: str):
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    types = typestore.types
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec),
        frame_id=frame_id)


def _camera_info(typestore: Typestore, view, header):
    types = typestore.types
    k = np.asarray(view.k, dtype=np.float64)
    p = np.concatenate((k, np.zeros((3, 1))), axis=1)
    height, width = view.image.shape[:2]
    return types[CAMERA_INFO](
        header=header, height=height, width=width, distortion_model='plumb_bob',
        d=np.zeros(5), k=k.ravel(), r=np.eye(3).ravel(), p=p.ravel(), binning_x=0,
        binning_y=0, roi=types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _image(typestore: Typestore, view, header):
    image = np.ascontiguousarray(view.image, dtype=np.uint8)
    return typestore.types[IMAGE](
        header=header, height=image.shape[0], width=image.shape[1], encoding='mono8',
        is_bigendian=0, step=image.shape[1], data=image.ravel())


def _detections(typestore: Typestore, view, header, features_dim: int = FEATURE_DIM):
    person_type = typestore.types['scorehmr_ros_msgs/msg/PersonDetection']
    people = []
    for p, track_id in enumerate(view.track_ids):
        keypoints = np.asarray(view.keypoints[p], dtype=np.float32)
        seen = keypoints[keypoints[:, 2] > 0, :2]
        bbox = np.concatenate((seen.min(0), seen.max(0))) if len(seen) else np.zeros(4)
        people.append(person_type(
            track_id=int(track_id), score=SCORE, bbox_xyxy=bbox.astype(np.float32),
            keypoint_layout=view.keypoint_layout, keypoints_xy=keypoints[:, :2].ravel(),
            keypoint_confidence=keypoints[:, 2].copy(),
            init_pose_aa=np.asarray(view.init_pose_aa[p], dtype=np.float32),
            init_betas=np.asarray(view.init_betas[p], dtype=np.float32),
            init_cam_t=np.asarray(view.init_cam_t[p], dtype=np.float32),
            features=np.zeros(features_dim, dtype=np.float32), regressor='synthetic'))
    return typestore.types[DETECTIONS](header=header, people=people)


def _ground_truth(typestore: Typestore, view, header):
    types = typestore.types
    point, quat = types['geometry_msgs/msg/Point'], types['geometry_msgs/msg/Quaternion']
    body_type = types['scorehmr_ros_msgs/msg/SmplBody']
    bodies = []
    for p, track_id in enumerate(view.track_ids):
        joints = np.asarray(view.gt_joints[p], dtype=np.float64)
        bodies.append(body_type(
            id=int(track_id), body_model=view.body_model,
            local_rotations=[quat(x=0.0, y=0.0, z=0.0, w=1.0) for _ in range(24)],
            root_pose=types['geometry_msgs/msg/Pose'](
                position=point(x=joints[0, 0], y=joints[0, 1], z=joints[0, 2]),
                orientation=quat(x=0.0, y=0.0, z=0.0, w=1.0)),
            betas=np.asarray(view.init_betas[p], dtype=np.float32),
            joints=[point(x=j[0], y=j[1], z=j[2]) for j in joints],
            joint_confidence=np.zeros(0, dtype=np.float32),
            joint_residual_px=np.zeros(0, dtype=np.float32), fit_loss=-1.0, num_views=1,
            num_frames=1, iterations=0, latency_s=0.0, refined=False))
    return types[BODIES](header=header, bodies=bodies)


def _camera_transforms(typestore: Typestore, frame, stamp_ns: int):
    """``TFMessage``: world -> each camera's optical frame (the camera pose)."""
    from scorehmr_ros.fusion.calibration import camera_pose
    from scorehmr_ros.synthetic_stream import WORLD_FRAME
    types = typestore.types
    transforms = []
    for view in frame.views:
        translation, quat = camera_pose(view.world_to_camera)
        transforms.append(types['geometry_msgs/msg/TransformStamped'](
            header=_header(typestore, stamp_ns, WORLD_FRAME), child_frame_id=view.frame_id,
            transform=types['geometry_msgs/msg/Transform'](
                translation=types['geometry_msgs/msg/Vector3'](
                    x=float(translation[0]), y=float(translation[1]), z=float(translation[2])),
                rotation=types['geometry_msgs/msg/Quaternion'](
                    x=float(quat[0]), y=float(quat[1]), z=float(quat[2]), w=float(quat[3])))))
    return types[TF_MESSAGE](transforms=transforms)


def synthetic_records(frames: Sequence['Frame'], typestore: Typestore, jitter_ns: int = 3_000_000,
                      seed: int = 0, static_tf: bool = True,
                      features_dim: int = FEATURE_DIM) -> List[BagRecord]:
    """
    Build the messages of a synthetic stream, in log-time order.

    :param frames: frames of :func:`scorehmr_ros.synthetic_stream.make_stream`.
    :param typestore: a type store of :func:`make_typestore`.
    :param jitter_ns: each camera's header stamp is the frame stamp plus a uniform integer
        offset in ``[-jitter_ns, jitter_ns]``.
    :param seed: seed of the jitter.
    :param static_tf: also record the cameras' extrinsics on ``/tf_static`` (first).
    :param features_dim: length of each detection's (zero) feature vector; 0 sends none
        (a denoiser conditioned on keypoint features builds its own).
    :return: the records (messages as rosbags dataclasses).
    """
    rng = random.Random(seed)
    records = []
    if static_tf and frames and frames[0].views[0].world_to_camera is not None:
        stamp_ns = frames[0].stamp_ns - jitter_ns - 1
        records.append(BagRecord(TF_STATIC_TOPIC, stamp_ns, TF_MESSAGE,
                                 _camera_transforms(typestore, frames[0], stamp_ns)))
    for frame in frames:
        for view in frame.views:
            stamp_ns = frame.stamp_ns + rng.randint(-jitter_ns, jitter_ns)
            header = _header(typestore, stamp_ns, view.frame_id)
            cam = view.camera
            records += [
                BagRecord(f'/{cam}/camera_info', stamp_ns, CAMERA_INFO,
                          _camera_info(typestore, view, header)),
                BagRecord(f'/{cam}/image', stamp_ns, IMAGE, _image(typestore, view, header)),
                BagRecord(f'/{cam}/detections', stamp_ns + DETECTION_DELAY_NS, DETECTIONS,
                          _detections(typestore, view, header, features_dim)),
                BagRecord(GROUND_TRUTH_TOPIC, stamp_ns + GROUND_TRUTH_DELAY_NS, BODIES,
                          _ground_truth(typestore, view, header))]
    # Stable sort: equal log times keep the order above (camera_info before image).
    return sorted(records, key=lambda r: r.timestamp_ns)


def write_records(path: Union[str, Path], records: Sequence[BagRecord],
                  typestore: Typestore) -> Path:
    """
    Write records to a new rosbag2 (MCAP storage, version 9).

    :param path: bag directory; must not exist.
    :param records: the records, messages as rosbags dataclasses of ``typestore``.
    :param typestore: the type store of the messages.
    :return: the bag directory.
    :raises BagError: the bag cannot be written.
    """
    path = Path(path)
    try:
        with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            connections = {}
            for record in records:
                if record.topic not in connections:
                    connections[record.topic] = writer.add_connection(
                        record.topic, record.msgtype, typestore=typestore)
                data = typestore.serialize_cdr(record.message, record.msgtype)
                writer.write(connections[record.topic], record.timestamp_ns, data)
    except Exception as exc:  # noqa: B902 - rosbags raises several types
        raise BagError(f'{path}: cannot write rosbag2: {exc}') from exc
    return path


def write_synthetic_bag(path: Union[str, Path], frames: Optional[Sequence['Frame']] = None,
                        cameras: Sequence[str] = CAMERAS, num_people: int = 2,
                        num_frames: int = 5, seed: int = 0, jitter_ns: int = 3_000_000,
                        typestore: Optional[Typestore] = None, static_tf: bool = True,
                        features_dim: int = FEATURE_DIM) -> List[BagRecord]:
    """
    Record a synthetic multi-camera stream with ground truth as a rosbag2.

    :param path: bag directory to create; must not exist.
    :param frames: frames to record (default: ``make_stream`` of the synthetic body with
        ``cameras``, ``num_people``, ``num_frames`` and ``seed``).
    :param cameras: camera names (when ``frames`` is None).
    :param num_people: people (when ``frames`` is None).
    :param num_frames: frames (when ``frames`` is None).
    :param seed: seed of the stream and of the stamp jitter.
    :param jitter_ns: per-camera stamp jitter bound, nanoseconds.
    :param typestore: type store (default :func:`make_typestore`).
    :param static_tf: record the cameras' extrinsics on ``/tf_static``.
    :param features_dim: length of each detection's (zero) feature vector (0: none).
    :return: the records written, in order (messages as rosbags dataclasses).
    :raises BagError: the bag cannot be written.
    """
    if frames is None:
        from scorehmr_ros.body.model import BodyModel
        from scorehmr_ros.synthetic_stream import make_stream
        frames = make_stream(BodyModel.from_config(None), cameras, num_people=num_people,
                             num_frames=num_frames, seed=seed)
    typestore = typestore or make_typestore()
    records = synthetic_records(frames, typestore, jitter_ns, seed, static_tf, features_dim)
    write_records(path, records, typestore)
    return records


def read_bag_raw(path: Union[str, Path]) -> Iterator[BagRecord]:
    """
    Iterate over a rosbag2's messages in log-time order, as CDR bytes.

    :param path: bag directory (with ``metadata.yaml``).
    :return: records whose ``message`` is the serialized CDR ``bytes``.
    :raises BagError: a missing, truncated or corrupt bag (the message names the file).
    """
    path = Path(path)
    try:
        with Reader(path) as reader:
            for connection, timestamp, data in reader.messages():
                yield BagRecord(connection.topic, int(timestamp), connection.msgtype,
                                bytes(data))
    except BagError:
        raise
    except Exception as exc:  # noqa: B902 - rosbags, mcap and sqlite raise many types
        raise BagError(f'{path}: cannot read rosbag2 ({type(exc).__name__}: {exc})') from exc


def read_bag(path: Union[str, Path], typestore: Optional[Typestore] = None
             ) -> Iterator[BagRecord]:
    """
    Iterate over a rosbag2's messages in log-time order, deserialised.

    :param path: bag directory (with ``metadata.yaml``).
    :param typestore: type store knowing every message type of the bag (default
        :func:`make_typestore`).
    :return: records whose ``message`` is a rosbags dataclass.
    :raises BagError: a missing, truncated or corrupt bag, or a message that does not
        deserialise (the message names the file).
    """
    typestore = typestore or make_typestore()
    for record in read_bag_raw(path):
        try:
            message = typestore.deserialize_cdr(record.message, record.msgtype)
        except Exception as exc:  # noqa: B902 - rosbags raises several types
            raise BagError(f'{path}: cannot deserialise a {record.msgtype} on '
                           f'{record.topic} at {record.timestamp_ns} ns: {exc}') from exc
        yield record._replace(message=message)


def stamp_ns(header) -> int:
    """Int nanoseconds of a header's stamp (rosbags or rclpy message)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclasses.dataclass
class GroundTruth:
    """
    The ground truth of one camera at one frame, read from a bag.

    :param camera: camera name (the part of the frame id before ``_optical``).
    :param frame_id: optical frame.
    :param stamp_ns: header stamp, int nanoseconds.
    :param joints: track id -> [24, 3] true joints, metres, camera frame.
    """

    camera: str
    frame_id: str
    stamp_ns: int
    joints: dict


def ground_truth(records: Sequence[BagRecord]) -> List[GroundTruth]:
    """
    Extract the ground truth of deserialised records (on :data:`GROUND_TRUTH_TOPIC`).

    :param records: records of :func:`read_bag` or :func:`write_synthetic_bag`.
    :return: one entry per frame and camera, in log-time order.
    """
    truths = []
    for record in records:
        if record.topic != GROUND_TRUTH_TOPIC:
            continue
        msg = record.message
        frame_id = msg.header.frame_id
        truths.append(GroundTruth(
            camera=frame_id[:-len('_optical')] if frame_id.endswith('_optical') else frame_id,
            frame_id=frame_id, stamp_ns=stamp_ns(msg.header),
            joints={int(b.id): np.array([[j.x, j.y, j.z] for j in b.joints])
                    for b in msg.bodies}))
    return truths
