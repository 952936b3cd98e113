"""
Observation losses of ScoreHMR guidance, one value per row of the batch.

Rows are people x views x frames x samples. Losses are returned per row ([N]) so that
early stopping can act per sample and sums stay exact; the guidance gradient uses the
sum. Definitions follow DESIGN section 3 and the reference implementation.
"""

import torch

from scorehmr_ros.guidance.camera import perspective_project


def geman_mcclure(residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """
    Geman-McClure robust penalty ``sigma^2 r^2 / (sigma^2 + r^2)``.

    :param residual: [...] residuals (pixels).
    :param sigma: scale in the residual's units.
    :return: [...] penalties.
    """
    sq = residual ** 2
    sigma_sq = sigma ** 2
    return (sigma_sq * sq) / (sigma_sq + sq)


def keypoint_reprojection_loss(joints_3d: torch.Tensor, translation: torch.Tensor,
                               target_px: torch.Tensor, conf: torch.Tensor,
                               focal_px: torch.Tensor, center_px: torch.Tensor,
                               image_size: torch.Tensor, sigma_px: float = 100.0,
                               rotation: torch.Tensor = None) -> torch.Tensor:
    """
    Robust keypoint reprojection loss L_repr per row.

    ``sum_j (1000 / max(H, W))^2 * conf_j^2 * GMoF(proj_j - target_j, sigma)`` summed over
    both pixel coordinates.

    :param joints_3d: [N, J, 3] body keypoints in the body frame, metres.
    :param translation: [N, 3] body-to-camera translation, metres.
    :param target_px: [N, J, 2] observed keypoints, pixels.
    :param conf: [N, J] confidences (0 ignores a keypoint).
    :param focal_px: [N, 2] focal lengths, pixels.
    :param center_px: [N, 2] principal points, pixels.
    :param image_size: [N, 2] image ``(height, width)``, pixels; only the max is used.
    :param sigma_px: Geman-McClure scale, pixels.
    :param rotation: [N, 3, 3] body-to-camera rotation or ``None``.
    :return: [N] loss per row.
    """
    # SMPLify-X's resolution heuristic: errors are measured as if the image were 1000 px.
    data_weight = 1000.0 / image_size.max(dim=-1).values
    projected = perspective_project(joints_3d, translation, focal_px, center_px, rotation)
    robust = geman_mcclure(projected - target_px, sigma_px)
    weights = (data_weight[:, None, None] ** 2) * (conf[..., None] ** 2)
    return (weights * robust).sum(dim=(1, 2))


def multiview_consistency_loss(body_pose_6d: torch.Tensor, group: torch.Tensor,
                               num_groups: int, weight: float = 300.0) -> torch.Tensor:
    """
    Paper's multi-view loss: pull each view's body pose to the mean over its person.

    ``weight^2 * ||theta_v - mean_{v' in group(v)} theta_v'||^2`` per row; the sum over the
    rows of a group is the paper's L_MV of that person.

    :param body_pose_6d: [N, 23, 6] body joints 1..23 in 6D.
    :param group: [N] int64 person index in ``[0, num_groups)`` of each row.
    :param num_groups: number of people G.
    :param weight: consistency weight (300).
    :return: [N] loss per row.
    """
    flat = body_pose_6d.reshape(body_pose_6d.shape[0], -1)
    sums = flat.new_zeros(num_groups, flat.shape[1]).index_add(0, group, flat)
    counts = flat.new_zeros(num_groups).index_add(0, group, torch.ones_like(flat[:, 0]))
    mean = sums / counts[:, None]
    diff = (flat - mean[group]).reshape(body_pose_6d.shape)
    return weight ** 2 * (diff ** 2).sum(dim=(1, 2))


def temporal_smoothness_loss(pose_6d: torch.Tensor, prev_row: torch.Tensor) -> torch.Tensor:
    """
    Temporal smoothness L_temp: squared change of the pose from the previous frame.

    :param pose_6d: [N, 144] 6D pose of every row.
    :param prev_row: [N] int64 index of the row holding the previous frame of the same
        sequence, or -1 for a sequence's first frame.
    :return: [N] ``||x_k - x_{k-1}||^2`` per row (0 where there is no previous frame).
    """
    has_prev = prev_row >= 0
    prev = pose_6d[prev_row.clamp_min(0)]
    diff_sq = ((pose_6d - prev) ** 2).sum(dim=-1)
    return torch.where(has_prev, diff_sq, torch.zeros_like(diff_sq))


def temporal_target_loss(pose_6d: torch.Tensor, target_6d: torch.Tensor,
                         weight: torch.Tensor) -> torch.Tensor:
    """
    Pull toward a frozen pose: ``weight * ||x - target||^2`` per row.

    The online sliding-window mode's temporal term: with earlier frames of the window
    frozen, ``w1 ||x_k - x_{k-1}||^2 + w2 ||x_k - 2 x_{k-1} + x_{k-2}||^2`` equals, up to a
    constant, ``(w1 + w2) ||x_k - (w1 x_{k-1} + w2 (2 x_{k-1} - x_{k-2})) / (w1 + w2)||^2``,
    so one target and one weight per row carry both orders.

    :param pose_6d: [N, 144] 6D pose of every row.
    :param target_6d: [N, 144] frozen targets.
    :param weight: [N] weights (0: no pull).
    :return: [N] loss per row.
    """
    return weight * ((pose_6d - target_6d) ** 2).sum(dim=-1)
