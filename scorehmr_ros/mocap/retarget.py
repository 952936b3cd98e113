"""
Retarget BVH motion onto SMPL's skeleton: local rotations and the pelvis trajectory.

Why not copy the Euler angles: a BVH joint's local axes are the rig's own (in
``bvhtools_test.bvh`` every OFFSET runs along the parent's local +x, so the zero-rotation
pose is a folded stick, not a T-pose). The method works through global orientations:

1. Forward kinematics of the BVH gives each joint's global rotation ``R_b(f)``.
2. For each SMPL joint ``j`` mapped to BVH joint ``b``, SMPL's global rotation is
   ``G_j(f) = W @ R_b(f) @ A_b``; ``W`` turns the file's world into a Y-up world (the
   identity for Y-up files) and ``A_b`` is a constant alignment. SMPL's local rotations
   follow as ``L_j = G_parent^T G_j`` (a joint absent from the BVH keeps ``L_j = I``).
3. ``A_b`` is SMPL's global rotation of joint ``j`` in the pose that matches the BVH's
   zero-rotation pose (there every BVH joint frame equals the world frame, so
   ``R_b = I``). It is built joint by joint down the SMPL tree so that

   * (bone direction) the SMPL rest bone from ``j`` to its next mapped joint along the
     limb or spine (``J_child - J_j``) is sent onto the BVH vector from ``b`` to that
     joint (the sum of OFFSETs, or the End Site where SMPL's child is unmapped): the
     posed SMPL bone then points exactly where the BVH bone points in every frame;
   * (twist) the rotation about that bone is fixed by a second direction:
     the pelvis by the hip line (left hip minus right hip), spine3 by the shoulder line;
     thighs, shins, upper arms and forearms by the knee/elbow hinge axis ``h``,
     estimated over the clip as the dominant rotation axis of the BVH knee (elbow)
     rotation relative to the thigh (upper arm), signed so that flexion is positive.
     ``h`` has the same coordinates in the parent's and the child's frame (a rotation
     fixes its axis), and it is sent onto SMPL's flexion axis (+x for knees, -y/+y for
     the left/right elbow in SMPL's T-pose), so a BVH knee flexion is an SMPL knee
     flexion, not a sideways bend;
   * every other joint takes the smallest rotation (no twist) from its parent's
     alignment that achieves the bone direction, so it inherits the twist of its parent
     through the BVH's rest pose; a joint without a bone (zero-length End Site) copies
     its parent's alignment.

World frame: the output world is Y-up (SMPL's rest pose is Y-up, facing +Z, its left on
+X). For a Y-up file the BVH world is used as is (``W = I``) and the body faces wherever
the actor faces; ``up_axis='z'`` turns a Z-up file's world by -90 degrees about X.

Root translation: :attr:`Retargeted.pelvis_m` is the world position of the pelvis joint
(= BVH root joint) in metres; a body with rest pelvis ``J_0`` has SMPL ``transl =
pelvis_m - J_0``. SMPL's hands (22, 23) are always the identity.

Letters: F frames, J BVH joints.
"""

from dataclasses import dataclass, field
import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from scorehmr_ros.body.layouts import NUM_SMPL_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS
from scorehmr_ros.body.rotations import (
    matrix_to_axis_angle, matrix_to_quat_wxyz, quat_wxyz_to_matrix)
from scorehmr_ros.body.synthetic import REST_JOINTS
from scorehmr_ros.mocap.bvh import BvhError, BvhMotion, forward_kinematics

_LOG = logging.getLogger(__name__)

_SMPL = {name: index for index, name in enumerate(SMPL_JOINT_NAMES)}

#: SMPL joint -> BVH joint, for skeletons named like SMPL's body (bvhtools_test.bvh).
SMPL_NAMED_MAP: Dict[str, str] = {
    'pelvis': 'Hips', 'left_hip': 'LeftUpLeg', 'right_hip': 'RightUpLeg', 'spine1': 'Spine',
    'left_knee': 'LeftLeg', 'right_knee': 'RightLeg', 'spine2': 'Spine1',
    'left_ankle': 'LeftFoot', 'right_ankle': 'RightFoot', 'spine3': 'Spine2',
    'left_foot': 'LeftToe', 'right_foot': 'RightToe', 'neck': 'Neck',
    'left_collar': 'LeftShoulder', 'right_collar': 'RightShoulder', 'head': 'Head',
    'left_shoulder': 'LeftArm', 'right_shoulder': 'RightArm', 'left_elbow': 'LeftForeArm',
    'right_elbow': 'RightForeArm', 'left_wrist': 'LeftHand', 'right_wrist': 'RightHand',
}

#: SMPL joint -> BVH joint for Blender Rigify deform skeletons (bvhtools_test3.bvh). Rigify
#: has one lower-spine bone ('spine', from the hips to the chest 'spine.001'), no toe, wrist
#: or hand joints (the forearm's End Site is the wrist, the foot's the toes), and
#: 'pelvis.L/R' side bones that SMPL does not have.
RIGIFY_MAP: Dict[str, str] = {
    'pelvis': 'pelvis', 'left_hip': 'thigh.L', 'right_hip': 'thigh.R', 'spine1': 'spine',
    'left_knee': 'shin.L', 'right_knee': 'shin.R', 'left_ankle': 'foot.L',
    'right_ankle': 'foot.R', 'spine3': 'spine.001', 'neck': 'neck', 'head': 'face',
    'left_collar': 'shoulder.L', 'right_collar': 'shoulder.R',
    'left_shoulder': 'upper_arm.L', 'right_shoulder': 'upper_arm.R',
    'left_elbow': 'forearm.L', 'right_elbow': 'forearm.R',
}

SKELETON_MAPS: Dict[str, Dict[str, str]] = {
    'smpl_named': SMPL_NAMED_MAP, 'rigify': RIGIFY_MAP}

# The SMPL child whose bone fixes a joint's direction (limbs and spine; None: no bone).
_PRIMARY_CHILD = {
    'pelvis': 'spine1', 'left_hip': 'left_knee', 'right_hip': 'right_knee',
    'spine1': 'spine2', 'left_knee': 'left_ankle', 'right_knee': 'right_ankle',
    'spine2': 'spine3', 'left_ankle': 'left_foot', 'right_ankle': 'right_foot',
    'spine3': 'neck', 'left_foot': None, 'right_foot': None, 'neck': 'head',
    'left_collar': 'left_shoulder', 'right_collar': 'right_shoulder', 'head': None,
    'left_shoulder': 'left_elbow', 'right_shoulder': 'right_elbow',
    'left_elbow': 'left_wrist', 'right_elbow': 'right_wrist', 'left_wrist': 'left_hand',
    'right_wrist': 'right_hand', 'left_hand': None, 'right_hand': None,
}
# Joints whose twist comes from a left-minus-right line (candidates, first usable wins).
_LATERAL_PAIRS = {
    'pelvis': [('left_hip', 'right_hip')],
    'spine3': [('left_shoulder', 'right_shoulder'), ('left_collar', 'right_collar')],
}
# Hinge joints: SMPL flexion axis in the T-pose (knees bend the shin back about +x; the
# elbows bring the forearm forward, about -y on the left and +y on the right).
HINGE_AXES = {
    'left_knee': (1.0, 0.0, 0.0), 'right_knee': (1.0, 0.0, 0.0),
    'left_elbow': (0.0, -1.0, 0.0), 'right_elbow': (0.0, 1.0, 0.0),
}
# Joints whose twist follows a hinge: the hinge itself and its parent (thigh, upper arm).
_TWIST_FROM_HINGE = {
    'left_hip': 'left_knee', 'left_knee': 'left_knee',
    'right_hip': 'right_knee', 'right_knee': 'right_knee',
    'left_shoulder': 'left_elbow', 'left_elbow': 'left_elbow',
    'right_shoulder': 'right_elbow', 'right_elbow': 'right_elbow',
}
ALWAYS_IDENTITY = ('left_hand', 'right_hand')

#: Metres per file unit.
UNITS_M = {'m': 1.0, 'cm': 0.01, 'mm': 0.001, 'inch': 0.0254}
# A hinge whose 90th-percentile angle over the clip is below this gives no usable axis.
MIN_HINGE_ANGLE_RAD = np.deg2rad(20.0)


@dataclass
class Retargeted:
    """
    BVH motion as SMPL parameters in a Y-up world.

    :param rotmats: [F, 24, 3, 3] SMPL local rotations, global orientation first.
    :param pelvis_m: [F, 3] world position of the pelvis joint, metres.
    :param fps: frames per second.
    :param source: the BVH file.
    :param mapping: SMPL joint name -> BVH joint name, for the joints that were mapped.
    :param missing: SMPL joints with no BVH source (identity local rotation).
    :param alignments: [24, 3, 3] the constant ``A_b`` per SMPL joint (identity if missing).
    :param hinge_axes: SMPL hinge joint -> [3] estimated BVH hinge axis in its parent's
        BVH frame (absent where the clip did not bend it enough).
    :param metres_per_unit: the file's unit, in metres.
    :param world_rotation: [3, 3] ``W``, from the file's world into the Y-up world.
    """

    rotmats: np.ndarray
    pelvis_m: np.ndarray
    fps: float
    source: str
    mapping: Dict[str, str]
    missing: Tuple[str, ...]
    alignments: np.ndarray
    hinge_axes: Dict[str, np.ndarray] = field(default_factory=dict)
    metres_per_unit: float = 1.0
    world_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def num_frames(self) -> int:
        """F."""
        return int(self.rotmats.shape[0])


def detect_skeleton(bvh: BvhMotion) -> str:
    """
    Pick the mapping table whose names the file uses.

    :param bvh: the parsed file.
    :return: a key of :data:`SKELETON_MAPS`.
    :raises BvhError: if no table maps the pelvis, both hips, knees and ankles.
    """
    names = set(bvh.joint_names)
    best, best_count = None, -1
    for key, table in SKELETON_MAPS.items():
        count = sum(1 for target in table.values() if target in names)
        if count > best_count:
            best, best_count = key, count
    table = SKELETON_MAPS[best]
    needed = ('pelvis', 'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
              'right_ankle')
    if any(table[name] not in names for name in needed):
        raise BvhError(f'{bvh.source}: unknown skeleton; known naming schemes: '
                       f'{", ".join(SKELETON_MAPS)} (pass a mapping SMPL joint -> BVH joint)')
    return best


def detect_units(bvh: BvhMotion) -> str:
    """
    Guess the file's length unit from its longest root-to-leaf chain (a human: ~1-2 m).

    :param bvh: the parsed file.
    :return: ``'m'``, ``'cm'`` or ``'mm'``.
    :raises BvhError: if the size fits none of them.
    """
    chain = np.zeros(bvh.num_joints)
    for joint in range(bvh.num_joints):
        parent = int(bvh.parents[joint])
        own = float(np.linalg.norm(bvh.offsets[joint])) if parent >= 0 else 0.0
        chain[joint] = own + (chain[parent] if parent >= 0 else 0.0)
    ends = chain + np.linalg.norm(bvh.end_site_offsets, axis=1)
    longest = float(ends.max())
    for unit, (low, high) in (('m', (0.3, 3.0)), ('cm', (30.0, 300.0)),
                              ('mm', (300.0, 3000.0))):
        if low <= longest < high:
            return unit
    raise BvhError(f'{bvh.source}: cannot tell the length unit from the skeleton (longest '
                   f'chain {longest:g} units); pass units= one of {", ".join(UNITS_M)}')


def retarget(bvh: BvhMotion, mapping: Optional[Mapping[str, str]] = None,
             rest_joints: Optional[np.ndarray] = None, units: str = 'auto',
             up_axis: str = 'y') -> Retargeted:
    """
    Retarget a BVH clip to SMPL local rotations (method: module docstring).

    :param bvh: the parsed file.
    :param mapping: SMPL joint name -> BVH joint name (default: detected from the names).
    :param rest_joints: [24, 3] SMPL rest joints (default: the synthetic body's).
    :param units: ``'auto'`` or a key of :data:`UNITS_M`.
    :param up_axis: the file's up axis, ``'y'`` or ``'z'``.
    :return: the retargeted motion.
    :raises BvhError: on an unknown skeleton or unit, or a mapping naming absent joints.
    :raises ValueError: on bad arguments.
    """
    if mapping is None:
        mapping = SKELETON_MAPS[detect_skeleton(bvh)]
    mapping = dict(mapping)
    for smpl_name, bvh_name in mapping.items():
        if smpl_name not in _SMPL:
            raise ValueError(f'mapping: {smpl_name!r} is not an SMPL joint name')
        if bvh_name not in bvh.joint_names:
            raise BvhError(f'{bvh.source}: mapping names joint {bvh_name!r}, which the file '
                           'does not have')
    if 'pelvis' not in mapping or bvh.parents[bvh.index(mapping['pelvis'])] != -1:
        raise BvhError(f'{bvh.source}: the SMPL pelvis must map to the BVH root joint')
    for name in ALWAYS_IDENTITY:
        mapping.pop(name, None)
    if units == 'auto':
        units = detect_units(bvh)
    if units not in UNITS_M:
        raise ValueError(f'units must be auto or one of {", ".join(UNITS_M)}, got {units!r}')
    if up_axis not in ('y', 'z'):
        raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    rest = np.asarray(REST_JOINTS if rest_joints is None else rest_joints, dtype=np.float64)
    if rest.shape != (NUM_SMPL_JOINTS, 3) or not np.isfinite(rest).all():
        raise ValueError(f'rest_joints must be a finite [24, 3] array, got {rest.shape}')

    kin = forward_kinematics(bvh)
    hinge_axes = _hinge_axes(bvh, kin.global_rotations, mapping)
    alignments = _alignments(bvh, mapping, rest, hinge_axes)
    world = _world_rotation(up_axis)

    num_frames = bvh.num_frames
    glob = np.empty((num_frames, NUM_SMPL_JOINTS, 3, 3))
    for j, name in enumerate(SMPL_JOINT_NAMES):
        if name in mapping:
            glob[:, j] = world @ kin.global_rotations[:, bvh.index(mapping[name])] \
                @ alignments[j]
        else:
            glob[:, j] = glob[:, SMPL_PARENTS[j]] if j else world
    local = np.empty_like(glob)
    local[:, 0] = glob[:, 0]
    parents = SMPL_PARENTS[1:]
    local[:, 1:] = np.swapaxes(glob[:, parents], -1, -2) @ glob[:, 1:]
    local = _orthonormalise(local)
    for j, name in enumerate(SMPL_JOINT_NAMES):
        if j and name not in mapping:
            local[:, j] = np.eye(3)   # exactly, not up to rounding
    scale = UNITS_M[units]
    pelvis = kin.positions[:, bvh.index(mapping['pelvis'])] @ world.T * scale
    missing = tuple(n for n in SMPL_JOINT_NAMES if n not in mapping)
    return Retargeted(rotmats=local, pelvis_m=pelvis, fps=bvh.fps, source=bvh.source,
                      mapping=mapping, missing=missing, alignments=alignments,
                      hinge_axes=hinge_axes, metres_per_unit=scale, world_rotation=world)


def _world_rotation(up_axis: str) -> np.ndarray:
    """[3, 3] rotation from the file's world into a Y-up world."""
    if up_axis == 'y':
        return np.eye(3)
    # -90 degrees about x: +z (up) -> +y, +y -> -z.
    return np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _orthonormalise(rot: np.ndarray) -> np.ndarray:
    """Project [..., 3, 3] nearly-rotation matrices onto SO(3) (removes rounding drift)."""
    u, _, vt = np.linalg.svd(rot)
    fixed = u @ vt
    flip = np.linalg.det(fixed) < 0
    if flip.any():
        u[flip, :, -1] *= -1.0
        fixed = u @ vt
    return fixed


def _zero_pose_vector(bvh: BvhMotion, start: int, end: int) -> Optional[np.ndarray]:
    """
    Vector from BVH joint ``start`` to its descendant ``end`` in the zero-rotation pose.

    In that pose every joint frame equals the world frame, so the vector is the sum of
    OFFSETs down the chain, in ``start``'s (= the world's) coordinates.

    :return: [3] vector, or None if ``end`` is not a descendant of ``start``.
    """
    total = np.zeros(3)
    joint = end
    while joint != start:
        if joint < 0:
            return None
        total += bvh.offsets[joint]
        joint = int(bvh.parents[joint])
    return total


def _bone_target(bvh: BvhMotion, mapping: Mapping[str, str], rest: np.ndarray,
                 name: str, min_len: float) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """
    Find the bone that fixes joint ``name``'s direction: (SMPL rest vector, BVH vector).

    Walks down the primary chain to the first mapped joint whose BVH vector is longer
    than ``min_len`` (skipping SMPL joints the BVH lacks and zero-length BVH bones);
    falls back to the BVH joint's End Site where the SMPL child is unmapped.
    """
    b = bvh.index(mapping[name])
    child = _PRIMARY_CHILD[name]
    last_mapped = name
    while child is not None:
        if child in mapping:
            vec = _zero_pose_vector(bvh, b, bvh.index(mapping[child]))
            if vec is not None and np.linalg.norm(vec) > min_len:
                return rest[_SMPL[child]] - rest[_SMPL[name]], vec
            last_mapped = child
        child = _PRIMARY_CHILD[child]
    if last_mapped == name and bvh.has_end_site[b]:
        end = bvh.end_site_offsets[b]
        smpl_child = _PRIMARY_CHILD[name]
        if np.linalg.norm(end) > min_len and smpl_child is not None:
            return rest[_SMPL[smpl_child]] - rest[_SMPL[name]], end.copy()
    return None


def _lateral_target(bvh: BvhMotion, mapping: Mapping[str, str], rest: np.ndarray,
                    name: str, min_len: float) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Left-minus-right line under joint ``name``: (SMPL rest vector, BVH vector)."""
    b = bvh.index(mapping[name])
    for left, right in _LATERAL_PAIRS.get(name, []):
        if left not in mapping or right not in mapping:
            continue
        to_left = _zero_pose_vector(bvh, b, bvh.index(mapping[left]))
        to_right = _zero_pose_vector(bvh, b, bvh.index(mapping[right]))
        if to_left is None or to_right is None:
            continue
        vec = to_left - to_right
        if np.linalg.norm(vec) > min_len:
            return rest[_SMPL[left]] - rest[_SMPL[right]], vec
    return None


def _hinge_axes(bvh: BvhMotion, global_rot: np.ndarray, mapping: Mapping[str, str]
                ) -> Dict[str, np.ndarray]:
    """
    Dominant rotation axis of each mapped hinge relative to its SMPL parent's BVH joint.

    :param global_rot: [F, J, 3, 3] BVH global rotations.
    :return: hinge name -> [3] unit axis (flexion positive), for hinges bent enough.
    """
    axes = {}
    for name in HINGE_AXES:
        parent = SMPL_JOINT_NAMES[SMPL_PARENTS[_SMPL[name]]]
        if name not in mapping or parent not in mapping:
            continue
        rel = np.swapaxes(global_rot[:, bvh.index(mapping[parent])], -1, -2) \
            @ global_rot[:, bvh.index(mapping[name])]
        aa = matrix_to_axis_angle(torch.from_numpy(rel)).numpy()        # [F, 3]
        angle = np.linalg.norm(aa, axis=1)
        if np.percentile(angle, 90) < MIN_HINGE_ANGLE_RAD:
            _LOG.warning('%s: %s (%s) bends less than %.0f deg in 90%% of the clip; its '
                         'twist is taken from the rest pose instead of its hinge axis',
                         bvh.source, name, mapping[name], np.rad2deg(MIN_HINGE_ANGLE_RAD))
            continue
        # Principal direction of the rotation vectors (weighted by angle squared), signed
        # so that the mean rotation about it is positive: a knee only flexes one way.
        _, vecs = np.linalg.eigh(aa.T @ aa)
        axis = vecs[:, -1]
        if (aa @ axis).sum() < 0:
            axis = -axis
        axes[name] = axis
    return axes


def _frame(primary: np.ndarray, secondary: np.ndarray) -> Optional[np.ndarray]:
    """[3, 3] orthonormal columns (primary, secondary made orthogonal, their cross)."""
    e1 = primary / np.linalg.norm(primary)
    e2 = secondary - secondary.dot(e1) * e1
    norm = np.linalg.norm(e2)
    if norm < 1e-3 * np.linalg.norm(secondary) or norm < 1e-12:
        return None
    e2 = e2 / norm
    return np.stack((e1, e2, np.cross(e1, e2)), axis=1)


def _swing(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[3, 3] smallest rotation taking direction ``src`` onto direction ``dst``."""
    a = src / np.linalg.norm(src)
    b = dst / np.linalg.norm(dst)
    axis = np.cross(a, b)
    sin = np.linalg.norm(axis)
    cos = float(np.clip(a.dot(b), -1.0, 1.0))
    if sin < 1e-9:
        if cos > 0:
            return np.eye(3)
        # Half turn about any axis perpendicular to a.
        helper = np.eye(3)[int(np.argmin(np.abs(a)))]
        perp = np.cross(a, helper)
        perp /= np.linalg.norm(perp)
        return 2.0 * np.outer(perp, perp) - np.eye(3)
    k = axis / sin
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    angle = np.arctan2(sin, cos)
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def align_frames(src_primary: np.ndarray, src_secondary: np.ndarray,
                 dst_primary: np.ndarray, dst_secondary: np.ndarray) -> Optional[np.ndarray]:
    """
    Rotation that sends one direction onto another, with the twist fixed by a second pair.

    The primary direction is matched exactly; the secondary only through its part
    orthogonal to the primary (as :func:`retarget` aligns bones and hinge/lateral lines).

    :param src_primary: [3] direction to move (e.g. a rest bone).
    :param src_secondary: [3] second direction to move (a hinge axis or a lateral line).
    :param dst_primary: [3] where ``src_primary`` must point.
    :param dst_secondary: [3] where ``src_secondary`` should point, about the primary.
    :return: [3, 3] rotation, or None if a pair of directions is (nearly) parallel.
    """
    src = _frame(np.asarray(src_primary, float), np.asarray(src_secondary, float))
    dst = _frame(np.asarray(dst_primary, float), np.asarray(dst_secondary, float))
    if src is None or dst is None:
        return None
    return dst @ src.T


def swing_rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """
    Smallest rotation taking one direction onto another (no twist about it).

    :param src: [3] direction.
    :param dst: [3] direction.
    :return: [3, 3] rotation.
    """
    return _swing(np.asarray(src, float), np.asarray(dst, float))


def _alignments(bvh: BvhMotion, mapping: Mapping[str, str], rest: np.ndarray,
                hinge_axes: Mapping[str, np.ndarray]) -> np.ndarray:
    """[24, 3, 3] per SMPL joint the alignment ``A_b`` (method: module docstring)."""
    # Bones shorter than 1 % of the skeleton's size are degenerate (Rigify's spine root).
    size = float(np.linalg.norm(bvh.offsets[1:], axis=1).sum()) if bvh.num_joints > 1 else 0.
    min_len = 0.01 * size / max(bvh.num_joints - 1, 1)
    aligned = np.tile(np.eye(3), (NUM_SMPL_JOINTS, 1, 1))
    for j, name in enumerate(SMPL_JOINT_NAMES):
        parent_align = aligned[SMPL_PARENTS[j]] if j else np.eye(3)
        if name not in mapping:
            aligned[j] = parent_align   # local identity: same global as the parent
            continue
        bone = _bone_target(bvh, mapping, rest, name, min_len)
        second = None
        hinge = _TWIST_FROM_HINGE.get(name)
        if hinge is not None and hinge in hinge_axes:
            second = (np.asarray(HINGE_AXES[hinge]), hinge_axes[hinge])
        elif name in _LATERAL_PAIRS:
            second = _lateral_target(bvh, mapping, rest, name, min_len)
        result = None
        if bone is not None and second is not None:
            smpl_frame = _frame(bone[0], second[0])
            bvh_frame = _frame(bone[1], second[1])
            if smpl_frame is not None and bvh_frame is not None:
                result = bvh_frame @ smpl_frame.T
        if result is None and j == 0:
            raise BvhError(f'{bvh.source}: cannot orient the pelvis: it needs a mapped spine '
                           'joint above it and both hips at distinct places')
        if result is None and bone is not None:
            result = _swing(parent_align @ bone[0], bone[1]) @ parent_align
        aligned[j] = parent_align if result is None else result
    return aligned


def resample(motion: Retargeted, fps: float) -> Retargeted:
    """
    Resample to another frame rate (an integer ratio picks frames; otherwise slerp).

    :param motion: the retargeted clip.
    :param fps: target frames per second (at most the clip's).
    :return: the clip at ``fps``; frame k is at time ``k / fps``.
    :raises ValueError: if ``fps`` is not positive or exceeds the clip's rate.
    """
    if not np.isfinite(fps) or fps <= 0 or fps > motion.fps * (1 + 1e-6):
        raise ValueError(f'fps must be in (0, {motion.fps:g}] (the clip rate), got {fps}')
    duration_s = (motion.num_frames - 1) / motion.fps
    count = int(np.floor(duration_s * fps + 1e-9)) + 1
    position = np.arange(count) * (motion.fps / fps)       # in source frames
    ratio = motion.fps / fps
    if abs(ratio - round(ratio)) < 1e-3 * ratio:
        index = np.minimum(np.round(position).astype(np.int64), motion.num_frames - 1)
        rotmats, pelvis = motion.rotmats[index], motion.pelvis_m[index]
    else:
        low = np.minimum(np.floor(position).astype(np.int64), motion.num_frames - 1)
        high = np.minimum(low + 1, motion.num_frames - 1)
        frac = (position - low)[:, None]
        pelvis = (1 - frac) * motion.pelvis_m[low] + frac * motion.pelvis_m[high]
        rotmats = slerp(motion.rotmats[low], motion.rotmats[high], frac[:, :, None])
    return Retargeted(rotmats=rotmats, pelvis_m=pelvis, fps=float(fps), source=motion.source,
                      mapping=motion.mapping, missing=motion.missing,
                      alignments=motion.alignments, hinge_axes=motion.hinge_axes,
                      metres_per_unit=motion.metres_per_unit,
                      world_rotation=motion.world_rotation)


def slerp(rot_a: np.ndarray, rot_b: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """
    Spherical interpolation of rotation matrices (the shorter way round).

    :param rot_a: [..., 3, 3] rotations at ``frac = 0``.
    :param rot_b: [..., 3, 3] rotations at ``frac = 1``.
    :param frac: [..., 1] interpolation weights in [0, 1] (broadcast over the quaternion).
    :return: [..., 3, 3] rotations.
    """
    qa = matrix_to_quat_wxyz(torch.from_numpy(rot_a)).numpy()
    qb = matrix_to_quat_wxyz(torch.from_numpy(rot_b)).numpy()
    dot = (qa * qb).sum(-1, keepdims=True)
    qb = np.where(dot < 0, -qb, qb)          # the shorter way round
    dot = np.abs(dot).clip(max=1.0)
    theta = np.arccos(dot)
    sin = np.sin(theta)
    small = sin < 1e-6
    safe = np.where(small, 1.0, sin)
    wa = np.where(small, 1 - frac, np.sin((1 - frac) * theta) / safe)
    wb = np.where(small, frac, np.sin(frac * theta) / safe)
    return quat_wxyz_to_matrix(torch.from_numpy(wa * qa + wb * qb)).numpy()


# ----------------------------------------------------------------------------- validation


@dataclass
class BoneAgreement:
    """
    How well one retargeted bone points where the BVH bone points.

    :param name: ``'parent->child'`` SMPL names.
    :param kind: ``'chain'`` (the bone that sets the parent's direction), ``'lateral'``
        (a left-minus-right line) or ``'branch'`` (a rigid side bone of a multi-child
        joint: its angle reflects the skeletons' differing proportions, not the pose).
    :param mean_cos: mean cosine over the frames.
    :param min_cos: worst frame's cosine.
    """

    name: str
    kind: str
    mean_cos: float
    min_cos: float


def bone_agreement(bvh: BvhMotion, motion: Retargeted, smpl_joints: np.ndarray,
                   frames: Optional[Sequence[int]] = None) -> List[BoneAgreement]:
    """
    Compare posed SMPL bone directions with the BVH's.

    :param bvh: the source file.
    :param motion: its retargeting (same frames as the file, not resampled).
    :param smpl_joints: [F', 24, 3] SMPL joints posed with ``motion.rotmats[frames]``
        (any body frame: only directions are compared).
    :param frames: [F'] frame indices (default: all).
    :return: one entry per mapped bone and lateral line whose BVH length is not zero.
    """
    index = np.arange(bvh.num_frames) if frames is None else np.asarray(frames)
    positions = forward_kinematics(bvh, index).positions
    mapping = motion.mapping
    pairs = []
    for j, name in enumerate(SMPL_JOINT_NAMES[1:], start=1):
        if name not in mapping:
            continue
        parent = SMPL_PARENTS[j]
        while parent > 0 and SMPL_JOINT_NAMES[parent] not in mapping:
            parent = SMPL_PARENTS[parent]
        pname = SMPL_JOINT_NAMES[parent]
        kind = 'chain' if _chain_child(pname, mapping) == name else 'branch'
        pairs.append((f'{pname}->{name}', kind, parent, j))
    for pname, lines in _LATERAL_PAIRS.items():
        for left, right in lines:
            if left in mapping and right in mapping:
                pairs.append((f'{right}->{left}', 'lateral', _SMPL[right], _SMPL[left]))
    rot = motion.world_rotation
    results = []
    for label, kind, a, b in pairs:
        bvh_vec = (positions[:, bvh.index(mapping[SMPL_JOINT_NAMES[b]])]
                   - positions[:, bvh.index(mapping[SMPL_JOINT_NAMES[a]])]) @ rot.T
        smpl_vec = smpl_joints[:, b] - smpl_joints[:, a]
        bvh_len = np.linalg.norm(bvh_vec, axis=1)
        if np.median(bvh_len) < 1e-6 * max(float(np.abs(positions).max()), 1.0):
            continue   # coincident joints (e.g. Rigify's spine root sits on the pelvis)
        cos = (bvh_vec * smpl_vec).sum(1) / np.maximum(
            bvh_len * np.linalg.norm(smpl_vec, axis=1), 1e-12)
        results.append(BoneAgreement(label, kind, float(cos.mean()), float(cos.min())))
    return results


def _chain_child(name: str, mapping: Mapping[str, str]) -> Optional[str]:
    """Return the first mapped joint down ``name``'s primary chain."""
    child = _PRIMARY_CHILD[name]
    while child is not None and child not in mapping:
        child = _PRIMARY_CHILD[child]
    return child


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the bone-direction agreement of retargeted BVH files (``python -m``)."""
    import argparse

    from scorehmr_ros.body.kinematics import JointsOnlyBody
    from scorehmr_ros.body.model import BodyModel
    from scorehmr_ros.mocap.bvh import read_bvh

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('bvh', nargs='+', help='BVH files')
    parser.add_argument('--units', default='auto', help='auto, ' + ', '.join(UNITS_M))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    body = BodyModel.from_config(None, dtype=torch.float64)
    joints_body = JointsOnlyBody(body)
    rest_state = joints_body.rest(torch.zeros(1, 10, dtype=torch.float64))
    for path in args.bvh:
        bvh = read_bvh(path)
        motion = retarget(bvh, rest_joints=rest_state.joints[0].numpy(), units=args.units)
        rotmats = torch.from_numpy(motion.rotmats)
        with torch.no_grad():
            joints = joints_body(rotmats, _expand(rest_state, rotmats.shape[0]))[:, :24]
        table = bone_agreement(bvh, motion, joints.numpy())
        print(f'{path}: {motion.num_frames} frames at {motion.fps:g} fps, '
              f'{motion.metres_per_unit:g} m/unit; missing in BVH: '
              f'{", ".join(motion.missing) or "none"}; hinge axes estimated: '
              f'{", ".join(sorted(motion.hinge_axes)) or "none"}')
        print(f'  {"bone":34s} {"kind":8s} {"mean cos":>9s} {"min cos":>9s}')
        for row in table:
            print(f'  {row.name:34s} {row.kind:8s} {row.mean_cos:9.4f} {row.min_cos:9.4f}')
        posed = [r for r in table if r.kind != 'branch']
        worst = min(posed, key=lambda r: r.mean_cos)
        print(f'  chain+lateral bones: mean cos {np.mean([r.mean_cos for r in posed]):.4f}, '
              f'worst bone {worst.name} {worst.mean_cos:.4f} (worst frame '
              f'{min(r.min_cos for r in posed):.4f})')
    return 0


def _expand(rest_state, count: int):
    """Repeat the rest state of one shape for ``count`` rows."""
    return type(rest_state)(*(t.expand(count, *t.shape[1:]) for t in rest_state))


if __name__ == '__main__':
    raise SystemExit(main())
