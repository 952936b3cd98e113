"""
Joint sets of the body model and the index maps between them.

Every map indexes the 45-joint output of ``smplx.SMPLLayer`` for an SMPL model
(:data:`SMPLX45_JOINT_NAMES`): the 24 SMPL joints followed by 21 joints that smplx
copies from fixed SMPL vertices (face, feet and fingertips). The ScoreHMR 44-joint
layout additionally needs the optional 19-row vertex regressor ``J_regressor_extra``,
so it has no index map; :meth:`scorehmr_ros.body.model.BodyModel.keypoints` builds it.

Pure Python constants: importing this module imports neither torch nor smplx. Index maps
are lists (so that ``joints[:, SMPLX45_TO_BODY25]`` indexes one axis in numpy and torch);
treat them as read-only.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

SMPL_JOINT_NAMES = (
    'pelvis', 'left_hip', 'right_hip', 'spine1', 'left_knee', 'right_knee',
    'spine2', 'left_ankle', 'right_ankle', 'spine3', 'left_foot', 'right_foot',
    'neck', 'left_collar', 'right_collar', 'head', 'left_shoulder', 'right_shoulder',
    'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hand', 'right_hand',
)
NUM_SMPL_JOINTS = len(SMPL_JOINT_NAMES)

# The standard SMPL kinematic tree (kintree_table[0] of every SMPL file); -1 is the root.
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
                20, 21]

# Vertex count of the SMPL topology; smplx's vertex joints index these vertices.
NUM_SMPL_VERTICES = 6890

# The 21 vertex joints in the order smplx's VertexJointSelector appends them (face
# keypoints, then feet, then the fingertips of the left and then the right hand).
SMPLX_VERTEX_JOINT_NAMES = (
    'nose', 'right_eye', 'left_eye', 'right_ear', 'left_ear',
    'left_big_toe', 'left_small_toe', 'left_heel',
    'right_big_toe', 'right_small_toe', 'right_heel',
    'left_thumb', 'left_index', 'left_middle', 'left_ring', 'left_pinky',
    'right_thumb', 'right_index', 'right_middle', 'right_ring', 'right_pinky',
)

# Our name -> smplx's key in ``smplx.vertex_ids.vertex_ids['smplh']`` (SMPL shares the
# SMPL+H topology, so smplx uses the 'smplh' ids for SMPL).
SMPLX_VERTEX_ID_KEYS = {
    'nose': 'nose', 'right_eye': 'reye', 'left_eye': 'leye', 'right_ear': 'rear',
    'left_ear': 'lear',
    'left_big_toe': 'LBigToe', 'left_small_toe': 'LSmallToe', 'left_heel': 'LHeel',
    'right_big_toe': 'RBigToe', 'right_small_toe': 'RSmallToe', 'right_heel': 'RHeel',
    'left_thumb': 'lthumb', 'left_index': 'lindex', 'left_middle': 'lmiddle',
    'left_ring': 'lring', 'left_pinky': 'lpinky',
    'right_thumb': 'rthumb', 'right_index': 'rindex', 'right_middle': 'rmiddle',
    'right_ring': 'rring', 'right_pinky': 'rpinky',
}

# Name -> SMPL vertex id, equal to smplx 0.1.28's 'smplh' table. Copied rather than
# imported so that this module stays torch-free; tests/test_body_layouts.py compares it
# with the installed smplx, so a drift fails the test suite.
SMPLX_VERTEX_JOINT_IDS: Dict[str, int] = {
    'nose': 332, 'right_eye': 6260, 'left_eye': 2800, 'right_ear': 4071, 'left_ear': 583,
    'left_big_toe': 3216, 'left_small_toe': 3226, 'left_heel': 3387,
    'right_big_toe': 6617, 'right_small_toe': 6624, 'right_heel': 6787,
    'left_thumb': 2746, 'left_index': 2319, 'left_middle': 2445, 'left_ring': 2556,
    'left_pinky': 2673,
    'right_thumb': 6191, 'right_index': 5782, 'right_middle': 5905, 'right_ring': 6016,
    'right_pinky': 6133,
}

SMPLX45_JOINT_NAMES = SMPL_JOINT_NAMES + SMPLX_VERTEX_JOINT_NAMES
NUM_SMPLX45_JOINTS = len(SMPLX45_JOINT_NAMES)

# OpenPose BODY_25 order.
BODY25_JOINT_NAMES = (
    'nose', 'neck', 'right_shoulder', 'right_elbow', 'right_wrist', 'left_shoulder',
    'left_elbow', 'left_wrist', 'mid_hip', 'right_hip', 'right_knee', 'right_ankle',
    'left_hip', 'left_knee', 'left_ankle', 'right_eye', 'left_eye', 'right_ear',
    'left_ear', 'left_big_toe', 'left_small_toe', 'left_heel', 'right_big_toe',
    'right_small_toe', 'right_heel',
)

# The ScoreHMR authors' map from the 45 smplx joints to BODY_25 (SMPL neck and pelvis
# stand in for OpenPose's neck and mid-hip).
SMPLX45_TO_BODY25 = [24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28,
                     29, 30, 31, 32, 33, 34]

# The 19 joints of ScoreHMR's / ProHMR's ``J_regressor_extra`` ([19, 6890]), in row order.
SCOREHMR_EXTRA_JOINT_NAMES = (
    'right_ankle_lsp', 'right_knee_lsp', 'right_hip_lsp', 'left_hip_lsp', 'left_knee_lsp',
    'left_ankle_lsp', 'right_wrist_lsp', 'right_elbow_lsp', 'right_shoulder_lsp',
    'left_shoulder_lsp', 'left_elbow_lsp', 'left_wrist_lsp', 'neck_lsp', 'head_top_lsp',
    'pelvis_mpii', 'thorax_mpii', 'spine_h36m', 'jaw_h36m', 'head_h36m',
)
NUM_EXTRA_JOINTS = len(SCOREHMR_EXTRA_JOINT_NAMES)

SCOREHMR44_JOINT_NAMES = BODY25_JOINT_NAMES + SCOREHMR_EXTRA_JOINT_NAMES
# The 14 LSP evaluation joints within the 44-joint layout.
SCOREHMR44_LSP14 = list(range(25, 38)) + [43]
# The pelvis used to align predictions and ground truth (MPII pelvis).
SCOREHMR44_PELVIS = 39
# Joints whose confidences guidance zeroes: only the BODY_25 targets pull.
SCOREHMR44_GT_SLICE = slice(25, 44)

COCO17_JOINT_NAMES = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
    'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
)
SMPLX45_TO_COCO17 = [24, 26, 25, 28, 27, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8]


@dataclass(frozen=True)
class Layout:
    """
    A named keypoint layout.

    :param name: registry name, e.g. ``'body25'``
    :param joint_names: [K] joint names in layout order
    :param indices: [K] indices into the 45-joint smplx output, or None when the layout
        needs more than those joints (``'scorehmr44'`` needs ``J_regressor_extra``)
    """

    name: str
    joint_names: Tuple[str, ...]
    indices: Optional[Tuple[int, ...]]

    @property
    def num_joints(self) -> int:
        """Number K of keypoints in the layout."""
        return len(self.joint_names)


LAYOUTS: Dict[str, Layout] = {
    layout.name: layout for layout in (
        Layout('smpl24', SMPL_JOINT_NAMES, tuple(range(NUM_SMPL_JOINTS))),
        Layout('smplx45', SMPLX45_JOINT_NAMES, tuple(range(NUM_SMPLX45_JOINTS))),
        Layout('body25', BODY25_JOINT_NAMES, tuple(SMPLX45_TO_BODY25)),
        Layout('scorehmr44', SCOREHMR44_JOINT_NAMES, None),
        Layout('coco17', COCO17_JOINT_NAMES, tuple(SMPLX45_TO_COCO17)),
    )
}


def get_layout(name: str) -> Layout:
    """
    Look a keypoint layout up by name.

    :param name: one of the keys of :data:`LAYOUTS`
    :return: the layout
    :raises ValueError: if the name is unknown; the message lists the allowed names
    """
    try:
        return LAYOUTS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f'unknown keypoint layout {name!r}; allowed: {", ".join(sorted(LAYOUTS))}'
        ) from None


def smplx_vertex_joint_ids() -> Tuple[int, ...]:
    """
    Return the SMPL vertex ids of the 21 smplx vertex joints.

    :return: [21] vertex ids in :data:`SMPLX_VERTEX_JOINT_NAMES` order (joints 24..44)
    """
    return tuple(SMPLX_VERTEX_JOINT_IDS[name] for name in SMPLX_VERTEX_JOINT_NAMES)
