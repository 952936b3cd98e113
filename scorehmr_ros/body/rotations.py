"""
Rotation conversions between 6D, rotation matrices, axis-angle and quaternions.

Shapes use ``...`` for any leading batch dimensions. Quaternions are ``(w, x, y, z)``
here (scalar first, as in the ScoreHMR code); ROS messages use ``(x, y, z, w)`` and the
ROS layer converts with :func:`quat_wxyz_to_xyzw`.

The 6D representation of a rotation matrix ``R`` is its first column followed by its
second column (Zhou et al., CVPR 2019); :func:`rot6d_to_matrix` maps any 6-vector back
to a rotation by Gram-Schmidt, with the same arithmetic as the ScoreHMR code so the
diffusion state decodes to the same matrices.
"""

import torch
import torch.nn.functional as F


def matrix_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """
    Encode rotation matrices as 6D vectors.

    :param rotmat: [..., 3, 3] rotation matrices.
    :return: [..., 6] first column then second column of each matrix.
    """
    return torch.cat((rotmat[..., :, 0], rotmat[..., :, 1]), dim=-1)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """
    Decode 6D vectors to rotation matrices by Gram-Schmidt.

    :param rot6d: [..., 6] first column ``a1`` then second column ``a2``.
    :return: [..., 3, 3] rotation matrices with columns ``b1, b2, b1 x b2``.
    """
    # The operation sequence (including the einsum dot product and F.normalize's 1e-12
    # clamp) mirrors the reference code so float32 results agree bit for bit.
    cols = rot6d.reshape(-1, 2, 3).permute(0, 2, 1).contiguous()
    a1, a2 = cols[:, :, 0], cols[:, :, 1]
    b1 = F.normalize(a1)
    b2 = F.normalize(a2 - torch.einsum('bi,bi->b', b1, a2).unsqueeze(-1) * b1)
    b3 = torch.linalg.cross(b1, b2)
    return torch.stack((b1, b2, b3), dim=-1).reshape(rot6d.shape[:-1] + (3, 3))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """
    Rodrigues' formula, smooth at zero angle.

    :param axis_angle: [..., 3] rotation vectors (axis times angle in radians).
    :return: [..., 3, 3] rotation matrices.
    """
    angle_sq = (axis_angle * axis_angle).sum(dim=-1, keepdim=True)[..., None]
    angle = torch.sqrt(angle_sq.clamp_min(1e-30))
    small = angle_sq < 1e-8
    # sin(a)/a and (1-cos(a))/a^2 by Taylor series near zero so gradients stay finite.
    safe_angle = torch.where(small, torch.ones_like(angle), angle)
    sin_term = torch.where(small, 1.0 - angle_sq / 6.0, torch.sin(safe_angle) / safe_angle)
    cos_term = torch.where(
        small, 0.5 - angle_sq / 24.0, (1.0 - torch.cos(safe_angle)) / (safe_angle * safe_angle))
    skew = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + sin_term * skew + cos_term * (skew @ skew)


def matrix_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """
    Rotation vectors of rotation matrices (angles in ``[0, pi]``).

    :param rotmat: [..., 3, 3] rotation matrices.
    :return: [..., 3] axis times angle in radians.
    """
    return quat_wxyz_to_axis_angle(matrix_to_quat_wxyz(rotmat))


def quat_wxyz_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """
    Rotation matrices of (not necessarily unit) quaternions.

    :param quat: [..., 4] quaternions ``(w, x, y, z)``; normalised first.
    :return: [..., 3, 3] rotation matrices.
    """
    q = quat / quat.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (w * y + x * z),
        2 * (w * z + x * y), w * w - x * x + y * y - z * z, 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (w * x + y * z), w * w - x * x - y * y + z * z,
    )
    return torch.stack(rows, dim=-1).reshape(quat.shape[:-1] + (3, 3))


def matrix_to_quat_wxyz(rotmat: torch.Tensor) -> torch.Tensor:
    """
    Convert rotation matrices to unit quaternions with non-negative ``w``.

    Uses the largest of the four candidate denominators (Shepperd's method) so the
    result is accurate for every rotation, 180 degrees included.

    :param rotmat: [..., 3, 3] rotation matrices.
    :return: [..., 4] unit quaternions ``(w, x, y, z)``, ``w >= 0``.
    """
    m = rotmat
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4*q_i^2 for each component; the largest gives a well-conditioned division.
    four_sq = torch.stack((
        1.0 + m00 + m11 + m22,
        1.0 + m00 - m11 - m22,
        1.0 - m00 + m11 - m22,
        1.0 - m00 - m11 + m22,
    ), dim=-1).clamp_min(0.0)
    candidates = torch.stack((
        torch.stack((four_sq[..., 0], m[..., 2, 1] - m[..., 1, 2],
                     m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]), dim=-1),
        torch.stack((m[..., 2, 1] - m[..., 1, 2], four_sq[..., 1],
                     m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]), dim=-1),
        torch.stack((m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1],
                     four_sq[..., 2], m[..., 2, 1] + m[..., 1, 2]), dim=-1),
        torch.stack((m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                     m[..., 2, 1] + m[..., 1, 2], four_sq[..., 3]), dim=-1),
    ), dim=-2)
    best = four_sq.argmax(dim=-1)
    denom = 2.0 * torch.sqrt(torch.gather(four_sq, -1, best[..., None]).clamp_min(1e-30))
    chosen = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4)))
    quat = chosen[..., 0, :] / denom
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quat_wxyz_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """
    Rotation vectors of quaternions.

    :param quat: [..., 4] quaternions ``(w, x, y, z)``.
    :return: [..., 3] axis times angle, angle in ``[0, pi]``.
    """
    q = quat / quat.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    xyz = q[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    half = torch.atan2(sin_half, q[..., :1])
    small = sin_half < 1e-7
    # angle / sin(angle/2) -> 2 as the angle -> 0.
    scale = torch.where(small, 2.0 + half * half / 3.0,
                        2.0 * half / torch.where(small, torch.ones_like(sin_half), sin_half))
    return xyz * scale


def axis_angle_to_quat_wxyz(axis_angle: torch.Tensor) -> torch.Tensor:
    """
    Convert rotation vectors to unit quaternions.

    :param axis_angle: [..., 3] axis times angle in radians.
    :return: [..., 4] unit quaternions ``(w, x, y, z)``.
    """
    angle = axis_angle.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    small = angle < 1e-7
    sinc = torch.where(small, 0.5 - angle * angle / 48.0,
                       torch.sin(half) / torch.where(small, torch.ones_like(angle), angle))
    return torch.cat((torch.cos(half), axis_angle * sinc), dim=-1)


def quat_wxyz_to_xyzw(quat: torch.Tensor) -> torch.Tensor:
    """
    Reorder quaternions from scalar-first to ROS's scalar-last convention.

    :param quat: [..., 4] ``(w, x, y, z)``.
    :return: [..., 4] ``(x, y, z, w)``.
    """
    return torch.cat((quat[..., 1:], quat[..., :1]), dim=-1)


def quat_xyzw_to_wxyz(quat: torch.Tensor) -> torch.Tensor:
    """
    Reorder quaternions from ROS's scalar-last to the scalar-first convention.

    :param quat: [..., 4] ``(x, y, z, w)``.
    :return: [..., 4] ``(w, x, y, z)``.
    """
    return torch.cat((quat[..., 3:], quat[..., :3]), dim=-1)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """
    Cross-product matrices.

    :param v: [..., 3] vectors.
    :return: [..., 3, 3] matrices ``S`` with ``S @ u == v x u``.
    """
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).reshape(
        v.shape[:-1] + (3, 3))
