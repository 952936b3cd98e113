"""
3D pose metrics: MPJPE, PA-MPJPE and acceleration error.

Inputs are joint positions in metres; outputs are millimetres (Acc Err in mm/frame^2,
multiplied by fps^2 for mm/s^2 when a frame rate is given). The benchmarks' joint
subsets (SMPL-24, LSP-14, COCO-17) are selected from the joint set the ground truth is
in (:data:`SUBSET_INDICES`), after aligning the pelvis of that set.
"""

from typing import Dict, List, Optional, Sequence

import torch


def mpjpe_mm(pred: torch.Tensor, gt: torch.Tensor, root: Optional[int] = 0,
             joints: Optional[Sequence[int]] = None) -> torch.Tensor:
    """
    Mean per-joint position error after aligning a root joint.

    :param pred: [B, J, 3] predicted joints, metres.
    :param gt: [B, J, 3] ground-truth joints, metres.
    :param root: joint subtracted from both before comparing (None: no alignment).
    :param joints: subset of joints to average over (after alignment).
    :return: [B] error in millimetres.
    """
    if root is not None:
        pred = pred - pred[:, root:root + 1]
        gt = gt - gt[:, root:root + 1]
    if joints is not None:
        pred, gt = pred[:, list(joints)], gt[:, list(joints)]
    return 1000.0 * (pred - gt).norm(dim=-1).mean(dim=-1)


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """
    Similarity transform (scale, rotation, translation) of ``pred`` closest to ``gt``.

    :param pred: [B, J, 3] points.
    :param gt: [B, J, 3] target points.
    :return: [B, J, 3] aligned ``pred``.
    """
    mu_p, mu_g = pred.mean(dim=1, keepdim=True), gt.mean(dim=1, keepdim=True)
    p, g = pred - mu_p, gt - mu_g
    cov = p.transpose(1, 2) @ g                                   # [B, 3, 3]
    u, s, vh = torch.linalg.svd(cov)
    # Reflection guard: flip the last singular direction where det(V U^T) < 0.
    d = torch.sign(torch.linalg.det(vh.transpose(1, 2) @ u.transpose(1, 2)))
    fix = torch.ones_like(s)
    fix[:, -1] = d
    rot = vh.transpose(1, 2) @ torch.diag_embed(fix) @ u.transpose(1, 2)
    scale = (s * fix).sum(dim=1) / (p ** 2).sum(dim=(1, 2))
    return scale[:, None, None] * (p @ rot.transpose(1, 2)) + mu_g


def pa_mpjpe_mm(pred: torch.Tensor, gt: torch.Tensor,
                joints: Optional[Sequence[int]] = None) -> torch.Tensor:
    """
    MPJPE after Procrustes similarity alignment (reconstruction error).

    :param pred: [B, J, 3] predicted joints, metres.
    :param gt: [B, J, 3] ground-truth joints, metres.
    :param joints: subset of joints used for alignment and error.
    :return: [B] error in millimetres.
    """
    if joints is not None:
        pred, gt = pred[:, list(joints)], gt[:, list(joints)]
    return mpjpe_mm(procrustes_align(pred, gt), gt, root=None)


def accel_error_mm(pred: torch.Tensor, gt: torch.Tensor, fps: Optional[float] = None,
                   joints: Optional[Sequence[int]] = None) -> torch.Tensor:
    """
    Mean norm of the difference of second finite differences over a sequence.

    :param pred: [T, J, 3] predicted joints of one sequence (root-aligned), metres.
    :param gt: [T, J, 3] ground truth, metres.
    :param fps: frame rate; given, the result is in mm/s^2, else mm/frame^2.
    :param joints: joint subset.
    :return: [T - 2] error per interior frame.
    """
    if joints is not None:
        pred, gt = pred[:, list(joints)], gt[:, list(joints)]
    acc = lambda x: x[:-2] - 2 * x[1:-1] + x[2:]  # noqa: E731
    err = 1000.0 * (acc(pred) - acc(gt)).norm(dim=-1).mean(dim=-1)
    return err * fps ** 2 if fps else err


# ---------------------------------------------------------------------------------------
# Joint sets and the subsets the benchmarks report.

#: Joint sets an evaluation file's ``gt_joints_3d`` can be in, with their joint counts.
JOINT_SET_SIZES = {'smpl24': 24, 'lsp14': 14, 'coco17': 17, 'scorehmr44': 44}

#: LSP-14 order: right ankle, right knee, right hip, left hip, left knee, left ankle,
#: right wrist, right elbow, right shoulder, left shoulder, left elbow, left wrist, neck,
#: head top. From SMPL joints this is an approximation (SMPL's hip joints sit inside the
#: pelvis, and the head joint stands in for the head top); the authors' evaluation uses
#: the 44-joint set's regressed LSP joints instead (indices 25..37 and 43).
SMPL24_TO_LSP14 = [8, 5, 2, 1, 4, 7, 21, 19, 17, 16, 18, 20, 12, 15]
SCOREHMR44_TO_LSP14 = list(range(25, 38)) + [43]
#: COCO-17 from the 44-joint set's BODY_25 part (OpenPose names the same keypoints).
SCOREHMR44_TO_COCO17 = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]

#: (joint set, subset) -> indices of the subset's joints within the set.
SUBSET_INDICES = {
    ('smpl24', 'smpl24'): list(range(24)),
    ('smpl24', 'lsp14'): SMPL24_TO_LSP14,
    ('scorehmr44', 'lsp14'): SCOREHMR44_TO_LSP14,
    ('scorehmr44', 'coco17'): SCOREHMR44_TO_COCO17,
    ('scorehmr44', 'scorehmr44'): list(range(44)),
    ('lsp14', 'lsp14'): list(range(14)),
    ('coco17', 'coco17'): list(range(17)),
}

#: Joint set -> the joints whose mean is the pelvis used for root alignment: SMPL's
#: pelvis; the 44-joint set's MPII pelvis (39, as the authors align); the two hips of
#: LSP-14 and COCO-17, which have no pelvis joint.
PELVIS_INDICES = {'smpl24': [0], 'scorehmr44': [39], 'lsp14': [2, 3], 'coco17': [11, 12]}

LSP14_JOINT_NAMES = (
    'right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle',
    'right_wrist', 'right_elbow', 'right_shoulder', 'left_shoulder', 'left_elbow',
    'left_wrist', 'neck', 'head_top')

#: The subset each joint set is reported on by default.
DEFAULT_SUBSET = {'smpl24': 'smpl24', 'scorehmr44': 'lsp14', 'lsp14': 'lsp14',
                  'coco17': 'coco17'}


def subset_indices(joint_set: str, subset: str) -> List[int]:
    """
    Look up the indices of a joint subset within a joint set.

    :param joint_set: ``'smpl24'``, ``'lsp14'``, ``'coco17'`` or ``'scorehmr44'``.
    :param subset: the subset to report (e.g. ``'lsp14'``).
    :return: [K] indices into the joint set.
    """
    key = (joint_set, subset)
    if key not in SUBSET_INDICES:
        allowed = sorted(s for js, s in SUBSET_INDICES if js == joint_set)
        raise ValueError(f'joint subset {subset!r} is not available from joint set '
                         f'{joint_set!r}; available: {allowed}')
    return list(SUBSET_INDICES[key])


def subset_joint_names(subset: str) -> List[str]:
    """
    Return the joint names of a reported subset.

    :param subset: ``smpl24``, ``lsp14``, ``coco17`` or ``scorehmr44``.
    :return: [K] names.
    """
    from scorehmr_ros.body.layouts import COCO17_JOINT_NAMES, SCOREHMR44_JOINT_NAMES
    from scorehmr_ros.body.layouts import SMPL_JOINT_NAMES

    names = {'smpl24': SMPL_JOINT_NAMES, 'lsp14': LSP14_JOINT_NAMES,
             'coco17': COCO17_JOINT_NAMES, 'scorehmr44': SCOREHMR44_JOINT_NAMES}
    return list(names[subset])


def pelvis(joints: torch.Tensor, joint_set: str) -> torch.Tensor:
    """
    Pelvis of each body, the point root alignment subtracts.

    :param joints: [B, J, 3] joints of ``joint_set``.
    :param joint_set: name of the joint set (see :data:`PELVIS_INDICES`).
    :return: [B, 3].
    """
    if joint_set not in PELVIS_INDICES:
        raise ValueError(f'unknown joint set {joint_set!r}; allowed: {sorted(PELVIS_INDICES)}')
    if joints.dim() != 3 or joints.shape[1] != JOINT_SET_SIZES[joint_set]:
        raise ValueError(f'joints of set {joint_set!r}: expected [B, '
                         f'{JOINT_SET_SIZES[joint_set]}, 3], got {list(joints.shape)}')
    return joints[:, PELVIS_INDICES[joint_set]].mean(dim=1)


def subset_errors_mm(pred: torch.Tensor, gt: torch.Tensor, joint_set: str,
                     subset: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """
    MPJPE (pelvis aligned) and PA-MPJPE on a joint subset, per row and per joint.

    Both inputs are in the same joint set; the pelvis is taken from the full set before
    the subset is selected (as the authors align with joint 39 and then keep LSP-14).

    :param pred: [B, J, 3] predicted joints, metres.
    :param gt: [B, J, 3] ground truth, metres.
    :param joint_set: the set both are in.
    :param subset: the reported subset (default :data:`DEFAULT_SUBSET` of the set).
    :return: ``mpjpe`` [B], ``pa_mpjpe`` [B], ``per_joint`` [B, K] (MPJPE per joint), mm.
    """
    if pred.shape != gt.shape:
        raise ValueError(f'pred {list(pred.shape)} and gt {list(gt.shape)} differ in shape')
    subset = subset or DEFAULT_SUBSET[joint_set]
    idx = subset_indices(joint_set, subset)
    pred_rel = (pred - pelvis(pred, joint_set)[:, None])[:, idx]
    gt_rel = (gt - pelvis(gt, joint_set)[:, None])[:, idx]
    per_joint = 1000.0 * (pred_rel - gt_rel).norm(dim=-1)
    return {'mpjpe': per_joint.mean(dim=-1), 'pa_mpjpe': pa_mpjpe_mm(pred_rel, gt_rel),
            'per_joint': per_joint}


def sequence_accel_error_mm(pred: torch.Tensor, gt: torch.Tensor, joint_set: str,
                            subset: Optional[str] = None,
                            fps: Optional[float] = None) -> torch.Tensor:
    """
    Acc Err of one sequence on a joint subset, after pelvis alignment of every frame.

    :param pred: [T, J, 3] predicted joints of consecutive frames, metres.
    :param gt: [T, J, 3] ground truth, metres.
    :param joint_set: the set both are in.
    :param subset: the reported subset (default :data:`DEFAULT_SUBSET` of the set).
    :param fps: frame rate; given, mm/s^2, else mm/frame^2.
    :return: [T - 2] error per interior frame (empty for T < 3).
    """
    subset = subset or DEFAULT_SUBSET[joint_set]
    idx = subset_indices(joint_set, subset)
    pred_rel = pred - pelvis(pred, joint_set)[:, None]
    gt_rel = gt - pelvis(gt, joint_set)[:, None]
    if pred.shape[0] < 3:
        return pred.new_zeros(0)
    return accel_error_mm(pred_rel, gt_rel, fps=fps, joints=idx)
