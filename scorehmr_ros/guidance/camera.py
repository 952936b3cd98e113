"""
Pinhole camera projection used by the keypoint guidance.

Convention (ScoreHMR / SMPLify): a body point ``p`` in the body frame is moved into the
camera frame as ``R p + t`` (``t`` is the "camera translation" that ScoreHMR optimises)
and projected with focal lengths ``f`` and principal point ``c`` in pixels.
"""

from typing import Optional

import torch


def perspective_project(points: torch.Tensor, translation: torch.Tensor,
                        focal_px: torch.Tensor, center_px: torch.Tensor,
                        rotation: Optional[torch.Tensor] = None) -> torch.Tensor:
    """
    Project 3D points to pixels.

    :param points: [N, J, 3] points in the body frame, metres.
    :param translation: [N, 3] body-to-camera translation, metres.
    :param focal_px: [N, 2] focal lengths ``(fx, fy)`` in pixels.
    :param center_px: [N, 2] principal point ``(cx, cy)`` in pixels.
    :param rotation: [N, 3, 3] body-to-camera rotation, or ``None`` for identity.
    :return: [N, J, 2] pixel coordinates.
    """
    if rotation is not None:
        points = torch.einsum('nij,nkj->nki', rotation, points)
    cam = points + translation[:, None, :]
    normalized = cam / cam[..., 2:3]
    # Intrinsics applied as a matrix product, as the reference code does: the fused
    # multiply-add of the product rounds differently from x * f + c.
    intrinsics = torch.zeros(points.shape[0], 3, 3, dtype=points.dtype, device=points.device)
    intrinsics[:, 0, 0] = focal_px[:, 0]
    intrinsics[:, 1, 1] = focal_px[:, 1]
    intrinsics[:, 2, 2] = 1.0
    intrinsics[:, :2, 2] = center_px
    return torch.einsum('nij,nkj->nki', intrinsics, normalized)[..., :2]
