"""
Camera calibration for calibrated multi-view refinement: intrinsics and extrinsics.

Extrinsics are ``world_to_camera`` [4, 4] matrices: a point ``p_w`` in the common
(world) frame is ``p_c = R p_w + t`` in the camera's optical frame (REP-103 optical axes:
x right, y down, z ahead). Two sources build the same :class:`CalibrationSet`:

* :func:`load_calibration_yaml`, a calibration file (format below);
* :func:`calibration_from_transforms`, a list of static transforms
  ``(parent, child, translation, quaternion_xyzw)`` as ``/tf_static`` carries them,
  composed along the TF tree from the world frame to each camera's frame.

YAML format (one entry per camera; the camera pose is the camera-in-world transform,
i.e. what ``tf2_echo world <frame_id>`` prints)::

    world_frame: world
    cameras:
      cam0:
        frame_id: cam0_optical
        translation: [0.0, 0.0, 0.0]          # camera origin in the world, metres
        rotation_xyzw: [0.0, 0.0, 0.0, 1.0]   # camera orientation in the world
        k: [600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0]   # optional, row-major
      cam1:
        frame_id: cam1_optical
        translation: [1.2, 0.0, 0.3]
        rotation: [[...], [...], [...]]       # alternatively a 3x3 rotation matrix

A camera whose chain to the world is missing, or whose transform is too old, is listed
in :attr:`CalibrationSet.missing` with the reason; the refiner then treats its rows as
uncalibrated (single view), never as a crash.
"""

import collections
import dataclasses
import math
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

#: Tolerance on the unit norm of quaternions and on R^T R = I of rotation matrices.
ROTATION_TOL = 1e-3


class CalibrationError(ValueError):
    """A calibration file or transform is malformed (the message names where)."""


@dataclasses.dataclass(frozen=True)
class CameraCalibration:
    """
    One camera's calibration.

    :param name: camera name (the node's camera key, e.g. ``cam0``).
    :param frame_id: the camera's optical frame.
    :param world_to_camera: [4, 4] float64 transform from the world to the optical frame.
    :param k: [3, 3] float64 intrinsics in pixels, or ``None`` (then CameraInfo's K).
    :param stamp_s: time of the transform in seconds, ``None`` for static (never stale).
    """

    name: str
    frame_id: str
    world_to_camera: np.ndarray
    k: Optional[np.ndarray] = None
    stamp_s: Optional[float] = None


@dataclasses.dataclass
class CalibrationSet:
    """
    Calibrations of several cameras in one world frame.

    :param world_frame: name of the common frame.
    :param cameras: calibrated cameras by name.
    :param missing: cameras without a usable calibration, name -> reason.
    """

    world_frame: str
    cameras: Dict[str, CameraCalibration]
    missing: Dict[str, str] = dataclasses.field(default_factory=dict)

    def world_to_camera_rows(self, camera_names: Sequence[str],
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """
        Extrinsics per observation row, for ``Observations.world_to_camera``.

        :param camera_names: [B] camera of each row.
        :param dtype: floating dtype of the result.
        :return: [B, 4, 4]; rows of uncalibrated cameras are NaN (the refiner then
            refines them as single views).
        """
        out = torch.full((len(camera_names), 4, 4), float('nan'), dtype=torch.float64)
        for row, name in enumerate(camera_names):
            cam = self.cameras.get(name)
            if cam is not None:
                out[row] = torch.from_numpy(cam.world_to_camera)
        return out.to(dtype)


def quaternion_xyzw_to_matrix(quat: Sequence[float]) -> np.ndarray:
    """
    Rotation matrix of a unit quaternion in ROS order.

    :param quat: [4] ``(x, y, z, w)``; normalised here.
    :return: [3, 3] float64 rotation.
    """
    x, y, z, w = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quaternion_xyzw(rot: np.ndarray) -> np.ndarray:
    """
    Convert a rotation matrix to a unit quaternion ``(x, y, z, w)`` with ``w >= 0``.

    :param rot: [3, 3] rotation.
    :return: [4] float64 quaternion.
    """
    m = np.asarray(rot, dtype=np.float64)
    # Shepperd's method: branch on the largest diagonal term for numerical stability.
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-300))
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = s / 4
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def make_transform(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """
    Homogeneous transform of a rotation and a translation.

    :param rotation: [3, 3].
    :param translation: [3].
    :return: [4, 4] float64.
    """
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = translation
    return out


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """
    Inverse of a rigid transform.

    :param transform: [4, 4] ``[R t; 0 1]``.
    :return: [4, 4] ``[R^T -R^T t; 0 1]``.
    """
    rot = transform[:3, :3]
    return make_transform(rot.T, -rot.T @ transform[:3, 3])


def camera_pose(world_to_camera: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """
    Camera pose in the world as TF carries it (the inverse of the extrinsics).

    :param world_to_camera: [4, 4] ``p_cam = R p_world + t``.
    :return: ``(translation [3], quaternion_xyzw [4])`` of the camera in the world.
    """
    camera_to_world = invert_transform(np.asarray(world_to_camera, dtype=np.float64))
    return camera_to_world[:3, 3].copy(), matrix_to_quaternion_xyzw(camera_to_world[:3, :3])


def load_calibration_yaml(path: str) -> CalibrationSet:
    """
    Read a calibration YAML file (format in the module docstring).

    :param path: file path.
    :return: the calibrations (``missing`` is empty: every listed camera must be valid).
    :raises CalibrationError: naming the file, the camera and the field at fault.
    """
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as err:
        raise CalibrationError(f'{path}: cannot read calibration: {err}') from None
    if not isinstance(data, dict) or not isinstance(data.get('cameras'), dict) \
            or not data['cameras']:
        raise CalibrationError(f'{path}: expected a mapping with a non-empty "cameras" '
                               f'mapping (and optionally "world_frame")')
    world = data.get('world_frame', 'world')
    if not isinstance(world, str) or not world:
        raise CalibrationError(f'{path}: world_frame must be a non-empty string')
    unknown = sorted(set(data) - {'world_frame', 'cameras'})
    if unknown:
        raise CalibrationError(f'{path}: unknown top-level key(s) {unknown}')
    cameras = {}
    for name, entry in data['cameras'].items():
        where = f'{path}: camera {name!r}'
        cameras[str(name)] = _camera_from_entry(str(name), entry, where)
    return CalibrationSet(world_frame=world, cameras=cameras)


def save_calibration_yaml(calibration: CalibrationSet, path: str) -> None:
    """
    Write a calibration in the format :func:`load_calibration_yaml` reads.

    :param calibration: cameras to write (``missing`` ones are not written).
    :param path: output file.
    """
    cameras = {}
    for name, cam in calibration.cameras.items():
        camera_to_world = invert_transform(cam.world_to_camera)
        entry = {'frame_id': cam.frame_id,
                 'translation': [float(v) for v in camera_to_world[:3, 3]],
                 'rotation_xyzw': [float(v) for v in
                                   matrix_to_quaternion_xyzw(camera_to_world[:3, :3])]}
        if cam.k is not None:
            entry['k'] = [float(v) for v in np.asarray(cam.k).reshape(9)]
        cameras[name] = entry
    with open(path, 'w', encoding='utf-8') as handle:
        yaml.safe_dump({'world_frame': calibration.world_frame, 'cameras': cameras}, handle,
                       sort_keys=False, default_flow_style=None)


def calibration_from_transforms(
        transforms: Iterable[Tuple[str, str, Sequence[float], Sequence[float]]],
        world_frame: str, camera_frames: Mapping[str, str],
        intrinsics: Optional[Mapping[str, np.ndarray]] = None,
        stamps_s: Optional[Mapping[Tuple[str, str], float]] = None) -> CalibrationSet:
    """
    Compose static transforms (a TF tree) into each camera's ``world_to_camera``.

    Each transform ``(parent, child, translation, quaternion_xyzw)`` is the pose of
    ``child`` in ``parent`` (``p_parent = R p_child + t``), as in a
    ``geometry_msgs/TransformStamped``. Edges are walked in both directions, so the world
    frame may sit anywhere in the tree. Later duplicates of an edge replace earlier ones.

    :param transforms: the edges.
    :param world_frame: the common frame.
    :param camera_frames: camera name -> its optical frame id.
    :param intrinsics: optional camera name -> [3, 3] K.
    :param stamps_s: optional ``(parent, child)`` -> stamp of that edge (seconds); a
        camera's stamp is the oldest along its chain (for :func:`drop_stale`).
    :return: calibrations; cameras with no chain to the world are in ``missing`` with
        ``'no path from <world> to <frame>'``.
    :raises CalibrationError: on a malformed transform (non-finite numbers, zero
        quaternion), naming the edge.
    """
    edges: Dict[str, Dict[str, Tuple[np.ndarray, Optional[float]]]] = \
        collections.defaultdict(dict)
    for index, item in enumerate(transforms):
        try:
            parent, child, translation, quat = item
        except (TypeError, ValueError):
            raise CalibrationError(f'transform {index}: expected (parent, child, translation, '
                                   f'quaternion_xyzw), got {item!r}') from None
        where = f'transform {index} ({parent} -> {child})'
        trans = _vector(translation, 3, where, 'translation')
        rot = _quaternion(quat, where, 'rotation')
        parent_from_child = make_transform(rot, trans)
        stamp = None if stamps_s is None else stamps_s.get((parent, child))
        edges[parent][child] = (parent_from_child, stamp)
        edges[child][parent] = (invert_transform(parent_from_child), stamp)
    # Breadth-first walk from the world: frame_from_world for every reachable frame.
    reached = {world_frame: (np.eye(4), None)}
    queue = collections.deque([world_frame])
    while queue:
        frame = queue.popleft()
        world_from_frame = invert_transform(reached[frame][0])
        for other, (frame_from_other, stamp) in edges.get(frame, {}).items():
            if other in reached:
                continue
            world_from_other = world_from_frame @ frame_from_other
            oldest = _older(reached[frame][1], stamp)
            reached[other] = (invert_transform(world_from_other), oldest)
            queue.append(other)
    cameras, missing = {}, {}
    for name, frame in camera_frames.items():
        if frame not in reached:
            missing[name] = f'no path from {world_frame} to {frame}'
            continue
        k = None
        if intrinsics is not None and intrinsics.get(name) is not None:
            k = _intrinsics(intrinsics[name], f'camera {name!r}', 'k')
        world_to_camera, stamp = reached[frame]
        cameras[name] = CameraCalibration(name=name, frame_id=frame,
                                          world_to_camera=world_to_camera, k=k, stamp_s=stamp)
    return CalibrationSet(world_frame=world_frame, cameras=cameras, missing=missing)


def drop_stale(calibration: CalibrationSet, now_s: float, max_age_s: float) -> CalibrationSet:
    """
    Move cameras whose transform is older than ``max_age_s`` to ``missing``.

    Static calibrations (``stamp_s`` None, e.g. from YAML or ``/tf_static``) never age.

    :param calibration: input set (not modified).
    :param now_s: current time, seconds (the node's clock; sim time during replay).
    :param max_age_s: oldest acceptable transform age, seconds.
    :return: a new set.
    """
    cameras, missing = {}, dict(calibration.missing)
    for name, cam in calibration.cameras.items():
        if cam.stamp_s is not None and now_s - cam.stamp_s > max_age_s:
            missing[name] = (f'extrinsics of {cam.frame_id} are stale: '
                             f'{now_s - cam.stamp_s:.3f} s old > max_age_s {max_age_s:g}')
        else:
            cameras[name] = cam
    return CalibrationSet(calibration.world_frame, cameras, missing)


def _older(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _camera_from_entry(name: str, entry, where: str) -> CameraCalibration:
    if not isinstance(entry, dict):
        raise CalibrationError(f'{where}: expected a mapping, got {type(entry).__name__}')
    allowed = {'frame_id', 'translation', 'rotation_xyzw', 'rotation', 'k'}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise CalibrationError(f'{where}: unknown key(s) {unknown}; allowed {sorted(allowed)}')
    frame_id = entry.get('frame_id')
    if not isinstance(frame_id, str) or not frame_id:
        raise CalibrationError(f'{where}: frame_id: expected a non-empty string')
    if 'translation' not in entry:
        raise CalibrationError(f'{where}: translation: missing (camera origin in the world)')
    trans = _vector(entry['translation'], 3, where, 'translation')
    if ('rotation_xyzw' in entry) == ('rotation' in entry):
        raise CalibrationError(f'{where}: give exactly one of rotation_xyzw [x, y, z, w] or '
                               f'rotation (3x3 matrix)')
    if 'rotation_xyzw' in entry:
        rot = _quaternion(entry['rotation_xyzw'], where, 'rotation_xyzw')
    else:
        rot = _rotation_matrix(entry['rotation'], where, 'rotation')
    k = _intrinsics(entry['k'], where, 'k') if entry.get('k') is not None else None
    world_to_camera = invert_transform(make_transform(rot, trans))
    return CameraCalibration(name=name, frame_id=frame_id, world_to_camera=world_to_camera,
                             k=k)


def _numbers(value, size: int, where: str, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CalibrationError(f'{where}: {field}: expected {size} numbers, got {value!r}') \
            from None
    if arr.size != size:
        raise CalibrationError(f'{where}: {field}: expected {size} numbers, got {arr.size}')
    if not np.isfinite(arr).all():
        raise CalibrationError(f'{where}: {field}: contains NaN or inf')
    return arr


def _vector(value, size: int, where: str, field: str) -> np.ndarray:
    return _numbers(value, size, where, field)


def _quaternion(value, where: str, field: str) -> np.ndarray:
    quat = _numbers(value, 4, where, field)
    norm = np.linalg.norm(quat)
    if abs(norm - 1.0) > ROTATION_TOL:
        raise CalibrationError(f'{where}: {field}: quaternion [x, y, z, w] must have unit '
                               f'norm, got norm {norm:.6g}')
    return quaternion_xyzw_to_matrix(quat)


def _rotation_matrix(value, where: str, field: str) -> np.ndarray:
    rot = _numbers(value, 9, where, field).reshape(3, 3)
    if np.abs(rot.T @ rot - np.eye(3)).max() > ROTATION_TOL or np.linalg.det(rot) < 0:
        raise CalibrationError(f'{where}: {field}: not a rotation (orthonormal, det +1)')
    # Re-orthonormalise so the tolerance does not accumulate along chains.
    u, _, vh = np.linalg.svd(rot)
    return u @ vh


def _intrinsics(value, where: str, field: str) -> np.ndarray:
    k = _numbers(value, 9, where, field).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0.0, 0.0, 1.0]):
        raise CalibrationError(f'{where}: {field}: expected [fx, 0, cx, 0, fy, cy, 0, 0, 1] '
                               f'with fx, fy > 0')
    return k
