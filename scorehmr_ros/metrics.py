"""
3D pose metrics: MPJPE, PA-MPJPE and acceleration error.

Inputs are joint positions in metres; outputs are millimetres (Acc Err in mm/frame^2,
multiplied by fps^2 for mm/s^2 when a frame rate is given).
"""

from typing import Optional, Sequence

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
