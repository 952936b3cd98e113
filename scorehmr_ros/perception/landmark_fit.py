"""
Body rotations from 3D COCO-17 landmarks (e.g. MediaPipe's world landmarks), by bones.

A closed-form fit, no optimisation: each SMPL joint's global rotation sends the body's rest
bone onto the landmark bone, its twist fixed by a second direction, the way
:mod:`scorehmr_ros.mocap.retarget` aligns BVH bones (it reuses its
:func:`~scorehmr_ros.mocap.retarget.align_frames` and
:func:`~scorehmr_ros.mocap.retarget.swing_rotation`):

* pelvis: the torso's up line (hip midpoint to shoulder midpoint) and the hip line (left
  minus right hip; the shoulder line when a hip is missing);
* spine3: the same up line and the shoulder line (the torso's twist goes there);
  spine1/spine2 and the collars keep their parent's rotation;
* neck: the smallest rotation from the rest shoulder-midpoint-to-head line onto the
  landmarks' (head = the ears' midpoint, else the nose); the head follows it;
* upper arm / forearm, thigh / shin: the bone direction, twisted so the elbow's (knee's)
  hinge axis (the cross product of the two segments) matches SMPL's flexion axis; a limb
  bent less than :data:`MIN_HINGE_DEG` (or a knee that would bend backwards) takes the
  smallest rotation from its parent instead. Wrists, hands, ankles and feet follow.

A bone whose landmarks are below the confidence threshold keeps its parent's rotation
(local identity). Landmarks need only be in a frame with the camera's axes (x right,
y down, z ahead); their origin and scale do not matter (directions only).
"""

from typing import Optional, Sequence, Tuple

import numpy as np

from scorehmr_ros.body.layouts import COCO17_JOINT_NAMES, NUM_SMPL_JOINTS, SMPL_JOINT_NAMES
from scorehmr_ros.body.layouts import SMPL_PARENTS
from scorehmr_ros.mocap.retarget import align_frames, HINGE_AXES, swing_rotation

_K = {name: i for i, name in enumerate(COCO17_JOINT_NAMES)}
_S = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}

#: A limb bent less than this gives no usable hinge axis (landmark noise of a few cm on a
#: 30 cm bone turns the axis of a nearly straight limb at random).
MIN_HINGE_DEG = 20.0

# (upper SMPL joint, hinge SMPL joint, COCO root, COCO middle, COCO end) per limb.
_LIMBS = (
    ('left_shoulder', 'left_elbow', 'left_shoulder', 'left_elbow', 'left_wrist'),
    ('right_shoulder', 'right_elbow', 'right_shoulder', 'right_elbow', 'right_wrist'),
    ('left_hip', 'left_knee', 'left_hip', 'left_knee', 'left_ankle'),
    ('right_hip', 'right_knee', 'right_hip', 'right_knee', 'right_ankle'),
)
# Hinges that cannot bend the other way within the thigh's small twist range: a hinge
# axis pointing against the untwisted one means hyperextension (noise), not a 180 deg twist.
_ONE_WAY_HINGES = ('left_knee', 'right_knee')


def fit_landmarks(rest_keypoints: np.ndarray, landmarks: np.ndarray, min_conf: float = 0.3,
                  fallback_root: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """
    SMPL local rotations whose bones point along the landmarks' bones.

    :param rest_keypoints: [17, 3] the body's COCO-17 keypoints in its rest pose (y up,
        facing +z), metres.
    :param landmarks: [P, 17, 4] COCO-17 ``(x, y, z, confidence)`` in camera-aligned axes
        (x right, y down, z ahead), e.g. MediaPipe's world landmarks (metres, hip-centred).
    :param min_conf: landmarks below this confidence (or not finite) are missing.
    :param fallback_root: [P, 3, 3] global orientation used where the torso landmarks
        cannot orient the pelvis (default: the identity).
    :return: ``rotmats`` [P, 24, 3, 3] local rotations (global orientation first) and
        ``root_found`` [P] bool (False: the pelvis took ``fallback_root``).
    :raises ValueError: on wrongly shaped inputs.
    """
    rest = np.asarray(rest_keypoints, dtype=np.float64)
    lm = np.asarray(landmarks, dtype=np.float64)
    if rest.shape != (17, 3):
        raise ValueError(f'fit_landmarks: rest_keypoints must be [17, 3], got {list(rest.shape)}')
    if lm.ndim != 3 or lm.shape[1:] != (17, 4):
        raise ValueError(f'fit_landmarks: landmarks must be [P, 17, 4] COCO-17 (x, y, z, conf), '
                         f'got {list(lm.shape)}')
    p = lm.shape[0]
    if fallback_root is None:
        fallback_root = np.tile(np.eye(3), (p, 1, 1))
    rotmats = np.zeros((p, NUM_SMPL_JOINTS, 3, 3))
    found = np.zeros(p, dtype=bool)
    for i in range(p):
        seen = np.isfinite(lm[i]).all(axis=1) & (lm[i, :, 3] >= min_conf)
        glob, found[i] = _global_rotations(rest, lm[i, :, :3], seen,
                                           np.asarray(fallback_root[i], dtype=np.float64))
        rotmats[i] = _to_local(glob)
    return rotmats, found


def _global_rotations(rest: np.ndarray, pts: np.ndarray, seen: np.ndarray,
                      fallback_root: np.ndarray) -> Tuple[np.ndarray, bool]:
    """[24, 3, 3] global rotations of one person and whether the torso oriented the root."""
    glob = np.tile(np.eye(3), (NUM_SMPL_JOINTS, 1, 1))

    def mid(a: str, b: str, where: np.ndarray) -> Optional[np.ndarray]:
        ia, ib = _K[a], _K[b]
        if seen[ia] and seen[ib]:
            return 0.5 * (where[ia] + where[ib])
        if seen[ia] or seen[ib]:
            return where[ia if seen[ia] else ib]
        return None

    def line(a: str, b: str, where: np.ndarray) -> Optional[np.ndarray]:
        return where[_K[a]] - where[_K[b]] if seen[_K[a]] and seen[_K[b]] else None

    hip_t, sho_t = mid('left_hip', 'right_hip', pts), mid('left_shoulder', 'right_shoulder', pts)
    hip_r = mid('left_hip', 'right_hip', rest)
    sho_r = mid('left_shoulder', 'right_shoulder', rest)
    up = (sho_t - hip_t, sho_r - hip_r) if hip_t is not None and sho_t is not None else None
    root = None
    if up is not None:
        for a, b in (('left_hip', 'right_hip'), ('left_shoulder', 'right_shoulder')):
            lateral = line(a, b, pts)
            if lateral is not None:
                root = align_frames(up[1], line(a, b, rest), up[0], lateral)
                if root is not None:
                    break
    found = root is not None
    glob[0] = root if found else fallback_root
    for name in ('left_hip', 'right_hip', 'spine1', 'spine2', 'spine3'):
        glob[_S[name]] = glob[0]
    shoulders = line('left_shoulder', 'right_shoulder', pts)
    if found and shoulders is not None:
        spine3 = align_frames(up[1], line('left_shoulder', 'right_shoulder', rest), up[0],
                              shoulders)
        if spine3 is not None:
            glob[_S['spine3']] = spine3
    for name in ('neck', 'left_collar', 'right_collar', 'head'):
        glob[_S[name]] = glob[_S['spine3']]
    head_t = mid('left_ear', 'right_ear', pts)
    head_r = mid('left_ear', 'right_ear', rest)
    if head_t is None and seen[_K['nose']]:
        head_t, head_r = pts[_K['nose']], rest[_K['nose']]
    if head_t is not None and sho_t is not None:
        parent = glob[_S['spine3']]
        glob[_S['neck']] = swing_rotation(parent @ (head_r - sho_r), head_t - sho_t) @ parent
        glob[_S['head']] = glob[_S['neck']]
    for upper, hinge, a, b, c in _LIMBS:
        _fit_limb(glob, rest, pts, seen, upper, hinge, (_K[a], _K[b], _K[c]))
    return glob, found


def _fit_limb(glob: np.ndarray, rest: np.ndarray, pts: np.ndarray, seen: np.ndarray,
              upper: str, hinge: str, idx: Sequence[int]) -> None:
    """Set the global rotations of one limb (upper joint, hinge and what hangs below)."""
    a, b, c = idx
    ju, jh = _S[upper], _S[hinge]
    parent = glob[SMPL_PARENTS[ju]]
    upper_r, lower_r = rest[b] - rest[a], rest[c] - rest[b]
    has_upper = bool(seen[a] and seen[b])
    has_lower = bool(seen[b] and seen[c])
    glob[ju] = parent
    if has_upper:
        upper_t = pts[b] - pts[a]
        glob[ju] = swing_rotation(parent @ upper_r, upper_t) @ parent
    glob[jh] = glob[ju]
    if has_lower:
        lower_t = pts[c] - pts[b]
        glob[jh] = swing_rotation(glob[ju] @ lower_r, lower_t) @ glob[ju]
        axis_r = np.asarray(HINGE_AXES[hinge])
        axis_t = np.cross(upper_t, lower_t) if has_upper else None
        if axis_t is not None and _bend_deg(upper_t, lower_t) >= MIN_HINGE_DEG:
            if hinge in _ONE_WAY_HINGES and axis_t.dot(glob[ju] @ axis_r) < 0:
                axis_t = None
        else:
            axis_t = None
        if axis_t is not None:
            # The rest limb is neither straight nor square to SMPL's hinge axis, so the
            # landmarks' bend plane is matched with the rest limb flexed by the same angle
            # about that axis, not with the axis itself.
            flex = _rotation(axis_r, _flexion_rad(upper_r, lower_r, axis_r,
                                                  np.radians(_bend_deg(upper_t, lower_t))))
            rot_u = align_frames(upper_r, np.cross(upper_r, flex @ lower_r), upper_t, axis_t)
            if rot_u is not None:
                glob[ju] = rot_u
                glob[jh] = rot_u @ flex
                glob[jh] = swing_rotation(glob[jh] @ lower_r, lower_t) @ glob[jh]
    # Wrist/hand and ankle/foot: rigid with the forearm (shin).
    for j in range(NUM_SMPL_JOINTS):
        k = SMPL_PARENTS[j]
        while k > 0 and k != jh:
            k = SMPL_PARENTS[k]
        if k == jh and j != jh:
            glob[j] = glob[jh]


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """[3, 3] rotation by ``angle_rad`` about ``axis`` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * skew + (1 - np.cos(angle_rad)) * skew @ skew


def _flexion_rad(upper: np.ndarray, lower: np.ndarray, axis: np.ndarray,
                 bend_rad: float) -> float:
    """Flexion about ``axis`` that bends the rest limb by ``bend_rad`` (grid + linear)."""
    k = axis / np.linalg.norm(axis)
    grid = np.linspace(0.0, np.pi, 181)[:, None]
    # Rodrigues on all grid angles at once: [181, 3] flexed lower bones.
    flexed = (lower * np.cos(grid) + np.cross(k, lower) * np.sin(grid)
              + k * k.dot(lower) * (1.0 - np.cos(grid)))
    cos = flexed @ upper / (np.linalg.norm(flexed, axis=1) * np.linalg.norm(upper))
    bends = np.arccos(np.clip(cos, -1.0, 1.0))
    grid = grid[:, 0]
    # The bend grows with the flexion from the rest limb's own bend (nearly 0) to ~pi.
    return float(np.interp(bend_rad, np.maximum.accumulate(bends), grid))


def _bend_deg(u: np.ndarray, v: np.ndarray) -> float:
    """Angle between two segments, degrees (0: a straight limb)."""
    cos = u.dot(v) / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _to_local(glob: np.ndarray) -> np.ndarray:
    """[24, 3, 3] local rotations from global ones (``L_j = G_parent^T G_j``)."""
    local = np.empty_like(glob)
    local[0] = glob[0]
    parents = np.asarray(SMPL_PARENTS[1:])
    local[1:] = np.swapaxes(glob[parents], -1, -2) @ glob[1:]
    return local
