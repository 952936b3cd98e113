"""
ROS messages <-> numpy: images, camera intrinsics, upstream detections, and the outputs.

Inputs are validated here and rejected with :class:`InputError` subclasses whose
``counter`` names the diagnostics counter the node bumps; the node never lets one bad
message raise out of a callback.

Outputs never carry NaN or inf. A body whose pose, shape or joints are not finite is
dropped (the node counts it); optional per-body values that are unknown are written as
the sentinel :data:`UNKNOWN` (-1.0): ``fit_loss`` of an unrefined body and
``joint_residual_px`` of a joint no view observed. Both are >= 0 when known.

Frames: every output pose is in the frame of the input (the camera optical frame,
REP-103 ``_optical``: x right, y down, z forward) unless the node is given extrinsics.
TF names follow REP-155: ``body_<id>`` is the pelvis frame of body ``<id>`` and
``<joint>_<id>`` the frame of each other SMPL joint, child of its kinematic parent.
"""

import copy
import dataclasses
import math
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, TransformStamped, Vector3
import numpy as np
from scorehmr_ros_msgs.msg import SmplBody, SmplBodyArray
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, Header
from tf2_msgs.msg import TFMessage
import torch
from visualization_msgs.msg import Marker, MarkerArray

from scorehmr_ros.body.layouts import SMPL_JOINT_NAMES, SMPL_PARENTS
from scorehmr_ros.body.rotations import axis_angle_to_matrix, matrix_to_quat_wxyz
from scorehmr_ros.observations import LAYOUT_SIZES

try:  # a real ROS 2 install has cv_bridge; the wheels used here do not
    from cv_bridge import CvBridge
except ImportError:
    _CV_BRIDGE = None
else:
    _CV_BRIDGE = CvBridge()

#: Written where an optional value is unknown (messages never carry NaN).
UNKNOWN = -1.0

#: encoding -> (numpy dtype, channels), the encodings cv_bridge maps the same way.
IMAGE_ENCODINGS: Dict[str, Tuple[str, int]] = {
    'rgb8': ('uint8', 3), 'bgr8': ('uint8', 3), 'rgba8': ('uint8', 4),
    'bgra8': ('uint8', 4), 'mono8': ('uint8', 1), 'mono16': ('uint16', 1),
}


#: distortion_model -> allowed lengths of CameraInfo.d (sensor_msgs/distortion_models.hpp).
DISTORTION_SIZES: Dict[str, Tuple[int, ...]] = {
    'plumb_bob': (5,), 'rational_polynomial': (8,), 'equidistant': (4,)}


class InputError(ValueError):
    """A message the node cannot use; ``counter`` is its diagnostics counter name."""

    counter = 'bad_input'


class ImageError(InputError):
    """Unsupported encoding, or a data size that does not match the header."""

    counter = 'bad_image'


class CameraInfoError(InputError):
    """Zero, negative or non-finite focal length, or a malformed matrix."""

    counter = 'bad_camera_info'


class DetectionError(InputError):
    """A detection that cannot be refined (wrong array sizes, non-finite estimate)."""

    counter = 'bad_detection'


# --------------------------------------------------------------------------- images


def image_to_numpy(msg) -> np.ndarray:
    """
    Decode a ``sensor_msgs/Image`` like cv_bridge's ``imgmsg_to_cv2`` (no copy if possible).

    Rows may be padded (``step`` > ``width * channels * itemsize``); the padding is cut
    off. Multi-byte pixels follow ``is_bigendian`` and come back in native byte order.

    :param msg: the image.
    :return: [H, W] (mono) or [H, W, C] array of the encoding's dtype, channel order as
        the encoding names it (rgb8 gives RGB, bgr8 BGR).
    :raises ImageError: unsupported encoding, zero size, ``step`` too small, or
        ``len(data) != height * step``.
    """
    _check_image(msg)
    if _CV_BRIDGE is not None:
        # On a real ROS install cv_bridge is the reference decoder; sizes are checked above.
        return np.asarray(_CV_BRIDGE.imgmsg_to_cv2(msg, desired_encoding='passthrough'))
    dtype_name, channels = IMAGE_ENCODINGS[msg.encoding]
    dtype = np.dtype(dtype_name)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    data = msg.data
    buffer = np.frombuffer(memoryview(data).cast('B') if not isinstance(data, bytes)
                           else data, dtype=np.uint8)
    rows = buffer.reshape(height, step)[:, :row_bytes]
    image = rows.view(dtype) if dtype.itemsize == 1 else \
        np.ascontiguousarray(rows).view(dtype)
    image = image.reshape(height, width, channels)
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != (sys.byteorder == 'big'):
        image = image.byteswap()
    return image[..., 0] if channels == 1 else image


def _check_image(msg) -> None:
    """Raise :class:`ImageError` for an unsupported encoding or inconsistent sizes."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ImageError(f'image encoding {msg.encoding!r} is not supported; supported: '
                         f'{", ".join(sorted(IMAGE_ENCODINGS))}')
    dtype_name, channels = IMAGE_ENCODINGS[msg.encoding]
    dtype = np.dtype(dtype_name)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageError(f'image is empty ({width}x{height})')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes or step % dtype.itemsize:
        raise ImageError(f'image step {step} is too small or misaligned for {width} px of '
                         f'{msg.encoding} ({row_bytes} bytes per row)')
    data = msg.data
    size = len(data)
    if size != height * step:
        raise ImageError(f'image data has {size} bytes, expected height x step = '
                         f'{height} x {step} = {height * step}')


def numpy_to_image(array: np.ndarray, encoding: str, header: Optional[Header] = None):
    """
    Encode an array as a ``sensor_msgs/Image`` (native byte order, no row padding).

    :param array: [H, W] or [H, W, C] array matching ``encoding``.
    :param encoding: one of :data:`IMAGE_ENCODINGS`.
    :param header: header to copy (default: empty).
    :return: the message.
    """
    from sensor_msgs.msg import Image
    if encoding not in IMAGE_ENCODINGS:
        raise ImageError(f'image encoding {encoding!r} is not supported')
    dtype_name, channels = IMAGE_ENCODINGS[encoding]
    array = np.ascontiguousarray(array, dtype=dtype_name)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] != channels:
        raise ImageError(f'{encoding} needs [H, W, {channels}] data, got {array.shape}')
    height, width = array.shape[:2]
    return Image(header=header or Header(), height=height, width=width, encoding=encoding,
                 is_bigendian=int(sys.byteorder == 'big'),
                 step=width * channels * array.dtype.itemsize, data=array.tobytes())


# ----------------------------------------------------------------------- intrinsics


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """
    Pinhole intrinsics of the image as delivered (after binning and ROI).

    :param fx: focal length along x, pixels.
    :param fy: focal length along y, pixels.
    :param cx: principal point x, pixels.
    :param cy: principal point y, pixels.
    :param width: image width, pixels.
    :param height: image height, pixels.
    :param frame_id: the camera's optical frame.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    frame_id: str = ''


def camera_info_to_intrinsics(msg, rectified: bool = False) -> Intrinsics:
    """
    Intrinsics from a ``sensor_msgs/CameraInfo``, as image_geometry's ``fromCameraInfo``.

    K (raw images) or P (rectified images) describe the full-resolution sensor; a ROI
    moves the principal point by its offset, and binning divides focal lengths and the
    principal point (``binning`` 0 means 1, as in the message definition).

    :param msg: the camera info.
    :param rectified: use P (keypoints come from rectified images) instead of K.
    :return: intrinsics of the delivered image.
    :raises CameraInfoError: a zero matrix (uncalibrated camera), a focal length <= 0,
        a non-finite entry, or distortion coefficients that do not fit the model.
    """
    _check_distortion(msg)
    matrix = np.asarray(msg.p if rectified else msg.k, dtype=np.float64)
    name = 'P' if rectified else 'K'
    if matrix.size != (12 if rectified else 9):
        raise CameraInfoError(f'CameraInfo.{name.lower()} has {matrix.size} entries')
    matrix = matrix.reshape(3, -1)
    if not np.isfinite(matrix).all():
        raise CameraInfoError(f'CameraInfo.{name.lower()} contains NaN or inf')
    fx, fy, cx, cy = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    if not (fx > 0 and fy > 0):
        what = 'all zero (uncalibrated camera)' if not matrix.any() else \
            f'focal lengths fx={fx:g}, fy={fy:g} (must be > 0)'
        raise CameraInfoError(f'CameraInfo.{name.lower()} is {what}')
    binning_x = max(int(msg.binning_x), 1)
    binning_y = max(int(msg.binning_y), 1)
    roi = msg.roi
    roi_set = roi.x_offset or roi.y_offset or roi.width or roi.height
    width, height = int(msg.width), int(msg.height)
    if roi_set:
        cx -= roi.x_offset
        cy -= roi.y_offset
        width = int(roi.width) or width
        height = int(roi.height) or height
    return Intrinsics(fx=fx / binning_x, fy=fy / binning_y, cx=cx / binning_x,
                      cy=cy / binning_y, width=width // binning_x, height=height // binning_y,
                      frame_id=msg.header.frame_id)


def _check_distortion(msg) -> None:
    """
    Raise :class:`CameraInfoError` for distortion coefficients that contradict the model.

    The pinhole guidance does not undistort, but a CameraInfo whose ``d`` does not fit its
    ``distortion_model`` comes from a broken driver or calibration file, so its K is not
    trusted either. An empty ``d`` (no distortion given) and unknown models pass.
    """
    d = np.asarray(msg.d, dtype=np.float64)
    if d.size and not np.isfinite(d).all():
        raise CameraInfoError('CameraInfo.d contains NaN or inf')
    sizes = DISTORTION_SIZES.get(msg.distortion_model)
    if d.size and sizes is not None and d.size not in sizes:
        raise CameraInfoError(f'CameraInfo.d has {d.size} coefficients; distortion_model '
                              f'{msg.distortion_model!r} takes '
                              f'{" or ".join(str(n) for n in sizes)}')


# ----------------------------------------------------------------------- detections


@dataclasses.dataclass
class Person:
    """
    One usable upstream detection.

    :param track_id: upstream track id (``TRACK_ID_NONE`` if untracked).
    :param keypoints: [K, 3] ``(x_px, y_px, confidence)``; NaN and negative confidences
        already replaced by confidence 0.
    :param layout: keypoint layout name.
    :param init_rotmats: [24, 3, 3] regression estimate, SMPL order.
    :param init_betas: [10] shape.
    :param init_cam_t: [3] body-to-camera translation, metres.
    :param features: [C] conditioning features, or None when the message had none.
    :param score: detection score (0 when the message's score is not finite).
    """

    track_id: int
    keypoints: np.ndarray
    layout: str
    init_rotmats: np.ndarray
    init_betas: np.ndarray
    init_cam_t: np.ndarray
    features: Optional[np.ndarray]
    score: float = 1.0


@dataclasses.dataclass
class DecodedDetections:
    """
    Result of :func:`decode_detections`.

    :param people: usable detections.
    :param rejected: one reason per dropped detection.
    :param repaired_keypoints: keypoints whose NaN/inf or negative confidence were zeroed.
    """

    people: List[Person]
    rejected: List[str]
    repaired_keypoints: int


def decode_detections(msg, cond_dim: Optional[int] = None) -> DecodedDetections:
    """
    Validate and decode a ``scorehmr_ros_msgs/PersonDetectionArray``.

    A detection is dropped (with a reason) when its keypoint arrays disagree with the
    layout, its regression estimate is missing, partial or not finite, or its feature
    vector has the wrong size. Keypoints that are NaN/inf or have a negative confidence
    are kept with confidence 0 (and coordinates 0), as the refiner treats them.

    :param msg: the detection array.
    :param cond_dim: C the denoiser expects (None: do not check).
    :return: people, reasons of rejections, count of repaired keypoints.
    """
    people: List[Person] = []
    rejected: List[str] = []
    repaired = 0
    for index, det in enumerate(msg.people):
        try:
            person, fixed = _decode_person(det, cond_dim)
        except DetectionError as exc:
            rejected.append(f'person {index}: {exc}')
            continue
        people.append(person)
        repaired += fixed
    return DecodedDetections(people=people, rejected=rejected, repaired_keypoints=repaired)


def _decode_person(det, cond_dim: Optional[int]) -> Tuple[Person, int]:
    layout = det.keypoint_layout
    if layout not in LAYOUT_SIZES:
        raise DetectionError(f'keypoint_layout {layout!r} is not one of '
                             f'{sorted(LAYOUT_SIZES)}')
    k = LAYOUT_SIZES[layout]
    xy = np.asarray(det.keypoints_xy, dtype=np.float64)
    conf = np.asarray(det.keypoint_confidence, dtype=np.float64)
    if xy.size != 2 * k or conf.size != k:
        raise DetectionError(f'{layout} needs {2 * k} keypoints_xy and {k} confidences, '
                             f'got {xy.size} and {conf.size}')
    keypoints = np.concatenate((xy.reshape(k, 2), conf[:, None]), axis=1)
    finite = np.isfinite(keypoints).all(axis=1)
    bad = ~finite | (np.where(finite, keypoints[:, 2], 0.0) < 0)
    keypoints[~finite] = 0.0
    keypoints[bad, 2] = 0.0
    keypoints[:, 2] = np.minimum(keypoints[:, 2], 1.0)
    fields = {'init_pose_aa': 72, 'init_betas': 10, 'init_cam_t': 3}
    arrays = {}
    for name, size in fields.items():
        value = np.asarray(getattr(det, name), dtype=np.float64)
        if value.size != size:
            raise DetectionError(f'{name} has {value.size} values, expected {size} '
                                 '(the upstream front end needs a regression estimate)')
        if not np.isfinite(value).all():
            raise DetectionError(f'{name} contains NaN or inf')
        arrays[name] = value
    if arrays['init_cam_t'][2] <= 0:
        raise DetectionError(f'init_cam_t z = {arrays["init_cam_t"][2]:g} m is not in front '
                             'of the camera')
    features = np.asarray(det.features, dtype=np.float32)
    if features.size == 0:
        features = None
    elif cond_dim is not None and features.size != cond_dim:
        raise DetectionError(f'features has {features.size} values, the denoiser expects '
                             f'{cond_dim}')
    elif not np.isfinite(features).all():
        raise DetectionError('features contains NaN or inf')
    rotmats = axis_angle_to_matrix(torch.from_numpy(arrays['init_pose_aa'].reshape(24, 3)))
    score = float(det.score)
    return Person(track_id=int(det.track_id), keypoints=keypoints, layout=layout,
                  init_rotmats=rotmats.numpy(), init_betas=arrays['init_betas'],
                  init_cam_t=arrays['init_cam_t'], features=features,
                  score=score if math.isfinite(score) else 0.0), int(bad.sum())


# --------------------------------------------------------------------------- outputs


@dataclasses.dataclass
class BodyEstimate:
    """
    One body to publish, in the output frame.

    :param body_id: stable id (TF ``body_<id>``).
    :param rotmats: [24, 3, 3] SMPL rotations, entry 0 the global orientation.
    :param betas: [10] shape.
    :param joints: [24, 3] posed joints, metres.
    :param joint_confidence: [24] support in [0, 1], or None.
    :param joint_residual_px: [24] reprojection error per joint (NaN: unobserved), or None.
    :param fit_loss: guidance objective (NaN: not refined).
    :param num_views: views that observed the body.
    :param num_frames: frames of the temporal window behind the body (1: this frame only).
    :param iterations: guided steps that ran.
    :param latency_s: receive-to-publish seconds.
    :param refined: refinement ran.
    :param body_model: ``SmplBody.BODY_MODEL_*`` value.
    :param vertices: [V, 3] posed mesh in the output frame (for mesh markers), or None.
    """

    body_id: int
    rotmats: np.ndarray
    betas: np.ndarray
    joints: np.ndarray
    joint_confidence: Optional[np.ndarray] = None
    joint_residual_px: Optional[np.ndarray] = None
    fit_loss: float = math.nan
    num_views: int = 1
    num_frames: int = 1
    iterations: int = 0
    latency_s: float = 0.0
    refined: bool = False
    body_model: str = 'synthetic'
    vertices: Optional[np.ndarray] = None

    def is_finite(self) -> bool:
        """Pose, shape, joints (and mesh) are all finite (else the body is not published)."""
        return bool(np.isfinite(self.rotmats).all() and np.isfinite(self.betas).all()
                    and np.isfinite(self.joints).all()
                    and (self.vertices is None or np.isfinite(self.vertices).all()))


def _known(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else UNKNOWN


def _quats(rotmats: np.ndarray) -> List[Quaternion]:
    """
    Quaternion messages of rotation matrices, converted in one batched call.

    :param rotmats: [K, 3, 3] rotations.
    :return: K quaternions (a per-matrix call would cost ~40 tiny tensor operations each,
        a visible share of a streaming node's frame).
    """
    wxyz = matrix_to_quat_wxyz(torch.as_tensor(rotmats, dtype=torch.float64)).tolist()
    return [Quaternion(x=x, y=y, z=z, w=w) for w, x, y, z in wxyz]


def _global_rotations(rotmats: np.ndarray) -> np.ndarray:
    """[24, 3, 3] joint orientations in the output frame along the kinematic tree."""
    world = np.empty_like(rotmats)
    for joint, parent in enumerate(SMPL_PARENTS):
        world[joint] = rotmats[joint] if parent < 0 else world[parent] @ rotmats[joint]
    return world


def build_body_array(header: Header, bodies: Sequence[BodyEstimate]
                     ) -> Tuple[SmplBodyArray, int]:
    """
    ``SmplBodyArray`` of the finite bodies.

    :param header: input stamp and output frame.
    :param bodies: bodies in the output frame.
    :return: ``(message, number of bodies dropped as non-finite)``.
    """
    out, dropped = [], 0
    for body in bodies:
        if not body.is_finite():
            dropped += 1
            continue
        rot = np.asarray(body.rotmats, dtype=np.float64)
        joints = np.asarray(body.joints, dtype=np.float64)
        confidence = [] if body.joint_confidence is None else [
            min(max(_known(c), 0.0), 1.0) for c in body.joint_confidence]
        residual = [] if body.joint_residual_px is None else [
            _known(r) for r in body.joint_residual_px]
        local = _quats(rot)
        out.append(SmplBody(
            id=int(body.body_id), body_model=body.body_model,
            local_rotations=local,
            root_pose=Pose(position=Point(x=joints[0, 0], y=joints[0, 1], z=joints[0, 2]),
                           orientation=copy.copy(local[0])),
            betas=[float(b) for b in body.betas],
            joints=[Point(x=p[0], y=p[1], z=p[2]) for p in joints.tolist()],
            joint_confidence=confidence, joint_residual_px=residual,
            fit_loss=_known(body.fit_loss), num_views=min(int(body.num_views), 255),
            num_frames=min(max(int(body.num_frames), 1), 65535),
            iterations=min(int(body.iterations), 65535),
            latency_s=_known(body.latency_s), refined=bool(body.refined)))
    return SmplBodyArray(header=header, bodies=out), dropped


def body_frame(body_id: int, prefix: str = '') -> str:
    """TF name of a body's pelvis frame (REP-155: ``body_<id>``)."""
    return f'{prefix}body_{body_id}'


def joint_frame(joint: int, body_id: int, prefix: str = '') -> str:
    """TF name of a joint frame (REP-155 style ``<joint>_<id>``; pelvis is the body)."""
    if joint == 0:
        return body_frame(body_id, prefix)
    return f'{prefix}{SMPL_JOINT_NAMES[joint]}_{body_id}'


def build_tf(header: Header, bodies: Sequence[BodyEstimate], prefix: str = '') -> TFMessage:
    """
    ``/tf`` transforms: ``body_<id>`` in the output frame, joints along the SMPL tree.

    Joint ``j`` is expressed in its parent's frame: translation
    ``G_parent^T (p_j - p_parent)`` and rotation the local SMPL rotation ``R_j``, so that
    composing the chain gives back the posed joint positions and orientations.

    :param header: input stamp; ``frame_id`` is the parent of every ``body_<id>``.
    :param bodies: finite bodies (non-finite ones are skipped).
    :param prefix: prepended to every child frame name (e.g. ``'cam0/'``).
    :return: the message.
    """
    transforms = []
    for body in bodies:
        if not body.is_finite():
            continue
        rot = np.asarray(body.rotmats, dtype=np.float64)
        joints = np.asarray(body.joints, dtype=np.float64)
        world = _global_rotations(rot)
        local = _quats(rot)
        for joint, parent in enumerate(SMPL_PARENTS):
            if parent < 0:
                offset, parent_name = joints[0], header.frame_id
            else:
                offset = world[parent].T @ (joints[joint] - joints[parent])
                parent_name = joint_frame(parent, body.body_id, prefix)
            transforms.append(TransformStamped(
                header=Header(stamp=header.stamp, frame_id=parent_name),
                child_frame_id=joint_frame(joint, body.body_id, prefix),
                transform=Transform(translation=Vector3(x=offset[0], y=offset[1],
                                                        z=offset[2]),
                                    rotation=local[joint])))
    return TFMessage(transforms=transforms)


def build_markers(header: Header, bodies: Sequence[BodyEstimate], namespace: str = 'skeleton',
                  lifetime_s: float = 0.5, faces: Optional[np.ndarray] = None) -> MarkerArray:
    """
    Build skeleton (and optionally mesh) markers.

    One ``LINE_LIST`` marker per body draws a line from every joint to its parent; with
    ``faces``, bodies that carry vertices also get a ``TRIANGLE_LIST`` mesh marker in the
    namespace ``<namespace>_mesh``.

    :param header: input stamp and output frame.
    :param bodies: bodies (non-finite ones are skipped).
    :param namespace: marker namespace (one per camera when cameras are uncalibrated).
    :param lifetime_s: markers vanish after this long without an update.
    :param faces: [F, 3] triangle vertex indices of the body model, or None.
    :return: the message.
    """
    markers = []
    seconds = int(lifetime_s)
    lifetime = Duration(sec=seconds, nanosec=int(round((lifetime_s - seconds) * 1e9)))
    for body in bodies:
        if not body.is_finite():
            continue
        joints = np.asarray(body.joints, dtype=np.float64).tolist()
        points = []
        for joint, parent in enumerate(SMPL_PARENTS):
            if parent >= 0:
                points += [Point(x=joints[parent][0], y=joints[parent][1], z=joints[parent][2]),
                           Point(x=joints[joint][0], y=joints[joint][1], z=joints[joint][2])]
        hue = (body.body_id * 0.618034) % 1.0
        markers.append(Marker(
            header=header, ns=namespace, id=int(body.body_id) % (2 ** 31),
            type=Marker.LINE_LIST, action=Marker.ADD, points=points, lifetime=lifetime,
            pose=Pose(orientation=Quaternion(w=1.0)), scale=Vector3(x=0.02),
            color=ColorRGBA(r=float(hue), g=float(1.0 - hue), b=0.5, a=1.0)))
        if faces is not None and body.vertices is not None:
            corners = np.asarray(body.vertices, dtype=np.float64)[np.asarray(faces).reshape(-1)]
            markers.append(Marker(
                header=header, ns=namespace + '_mesh', id=int(body.body_id) % (2 ** 31),
                type=Marker.TRIANGLE_LIST, action=Marker.ADD, lifetime=lifetime,
                points=[Point(x=p[0], y=p[1], z=p[2]) for p in corners.tolist()],
                pose=Pose(orientation=Quaternion(w=1.0)), scale=Vector3(x=1.0, y=1.0, z=1.0),
                color=ColorRGBA(r=float(hue), g=float(1.0 - hue), b=0.5, a=0.6)))
    return MarkerArray(markers=markers)


def rotation_to_euler_xyz(rotmat: np.ndarray) -> np.ndarray:
    """
    Intrinsic x-y-z Euler angles: ``R = Rx(a) @ Ry(b) @ Rz(c)``.

    :param rotmat: [..., 3, 3] rotations.
    :return: [..., 3] angles ``(a, b, c)``, radians; ``b`` in [-pi/2, pi/2].
    """
    r = np.asarray(rotmat, dtype=np.float64)
    b = np.arcsin(np.clip(r[..., 0, 2], -1.0, 1.0))
    a = np.arctan2(-r[..., 1, 2], r[..., 2, 2])
    c = np.arctan2(-r[..., 0, 1], r[..., 0, 0])
    return np.stack((a, b, c), axis=-1)


def build_joint_state(header: Header, body: BodyEstimate, prefix: str = '') -> JointState:
    """
    ``JointState`` of one body: each SMPL ball joint as three revolute joints.

    Joint ``<joint>_<id>_{x,y,z}`` holds the intrinsic x-y-z Euler angles of the local
    rotation (a URDF chain of three revolute joints about x, then y, then z). The pelvis
    (the global orientation) is left out: it is the ``body_<id>`` TF frame.

    :param header: input stamp.
    :param body: a finite body.
    :param prefix: prepended to every name.
    :return: the message (names and positions only).
    """
    angles = rotation_to_euler_xyz(np.asarray(body.rotmats)[1:])
    names, positions = [], []
    for joint in range(1, 24):
        for axis, value in zip('xyz', angles[joint - 1]):
            names.append(f'{prefix}{SMPL_JOINT_NAMES[joint]}_{body.body_id}_{axis}')
            positions.append(float(value))
    return JointState(header=header, name=names, position=positions)


def stamp_msg(stamp_ns: int) -> Time:
    """``builtin_interfaces/Time`` of int nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)
