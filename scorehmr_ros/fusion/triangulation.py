"""
Confidence-weighted DLT triangulation of keypoints seen by calibrated cameras.

Conventions: ``world_to_camera`` [4, 4] maps homogeneous world points (metres) into a
camera's optical frame (x right, y down, z forward, REP-103 optical); ``k`` [3, 3] are the
pinhole intrinsics in pixels. Keypoints are undistorted (rectified) pixels, the same
convention as :mod:`scorehmr_ros.guidance.camera`. V views, K keypoints.

Everything here is numpy float64 and never returns NaN or inf: a keypoint that cannot be
triangulated gets confidence 0, a zero position and a zero reprojection error.
"""

from typing import NamedTuple, Optional

import numpy as np

# Below this ratio of the second-smallest to the largest eigenvalue of the DLT normal
# matrix the system is degenerate (one view, or rays through one centre): untriangulated.
_MIN_EIGEN_RATIO = 1e-12


def _max_parallax_sin(points: np.ndarray, projections: np.ndarray,
                      used: np.ndarray) -> np.ndarray:
    """
    Sine of the widest angle between two rays of the views used, per keypoint.

    :param points: [K, 3] triangulated points.
    :param projections: [V, 3, 4] projection matrices (finite, invertible left block).
    :param used: [V, K] views used per keypoint.
    :return: [K] sine in [0, 1] (0 with fewer than two views).
    """
    # P = [M | p4] maps the centre C to 0: M C + p4 = 0.
    try:
        centres = -np.linalg.solve(projections[:, :, :3], projections[:, :, 3:])[..., 0]
    except np.linalg.LinAlgError:
        return np.zeros(points.shape[0])
    rays = centres[:, None, :] - points[None]                            # [V, K, 3]
    rays = rays / np.maximum(np.sqrt((rays * rays).sum(-1, keepdims=True)), 1e-12)
    cosines = np.einsum('akc,bkc->abk', rays, rays)                      # [V, V, K]
    sines = np.sqrt(np.clip(1.0 - cosines * cosines, 0.0, 1.0))
    pair_used = used[:, None] & used[None]
    return np.where(pair_used, sines, 0.0).max(axis=(0, 1))


class Triangulation(NamedTuple):
    """
    Triangulated keypoints.

    :param points_3d: [K, 3] world points, metres (zeros where ``conf_3d == 0``).
    :param conf_3d: [K] confidence in [0, 1]: mean 2D confidence of the views used, 0 for
        keypoints seen confidently by fewer than ``min_views`` views, behind a camera that
        saw them, seen along nearly parallel rays, or rejected by ``max_reprojection_px``.
    :param reprojection_error_px: [V, K] pixel distance between the observation and the
        reprojected point in every view that was used for it; 0 where the view was not used
        (not confident there) or the keypoint has ``conf_3d == 0``.
    """

    points_3d: np.ndarray
    conf_3d: np.ndarray
    reprojection_error_px: np.ndarray


def projection_matrix(k: np.ndarray, world_to_camera: np.ndarray) -> np.ndarray:
    """
    Build ``P = K [R | t]`` from intrinsics and a world-to-camera transform.

    :param k: [..., 3, 3] intrinsics, pixels.
    :param world_to_camera: [..., 4, 4] (or [..., 3, 4]) world to optical frame, metres.
    :return: [..., 3, 4] projection matrices (world metres to homogeneous pixels).
    """
    k = np.asarray(k, dtype=np.float64)
    world_to_camera = np.asarray(world_to_camera, dtype=np.float64)
    if k.shape[-2:] != (3, 3):
        raise ValueError(f'k: expected [..., 3, 3] intrinsics, got shape {k.shape}')
    if world_to_camera.shape[-2:] not in ((4, 4), (3, 4)):
        raise ValueError('world_to_camera: expected [..., 4, 4] or [..., 3, 4], got shape '
                         f'{world_to_camera.shape}')
    return k @ world_to_camera[..., :3, :]


def camera_centre(world_to_camera: np.ndarray) -> np.ndarray:
    """
    Camera centre in the world frame.

    :param world_to_camera: [..., 4, 4] world to optical frame.
    :return: [..., 3] centre, metres.
    """
    world_to_camera = np.asarray(world_to_camera, dtype=np.float64)
    rot = world_to_camera[..., :3, :3]
    trans = world_to_camera[..., :3, 3]
    return -np.einsum('...ji,...j->...i', rot, trans)


def project(points_3d: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """
    Project world points with a projection matrix.

    :param points_3d: [..., N, 3] world points, metres.
    :param projection: [..., 3, 4] projection matrix.
    :return: [..., N, 3] ``(x_px, y_px, depth)``; depth is the homogeneous scale
        (the optical-frame z when ``K[2] = (0, 0, 1)``), pixels are 0 where depth <= 0.
    """
    homog = np.einsum('...ij,...nj->...ni', projection[..., :3], points_3d) \
        + projection[..., None, :, 3]
    depth = homog[..., 2]
    safe = np.where(depth > 0, depth, 1.0)
    pixels = np.where((depth > 0)[..., None], homog[..., :2] / safe[..., None], 0.0)
    return np.concatenate((pixels, depth[..., None]), axis=-1)


def triangulate(points_2d: np.ndarray, conf: np.ndarray, projections: np.ndarray,
                min_conf: float = 0.1, min_views: int = 2,
                max_reprojection_px: Optional[float] = None,
                min_parallax_deg: float = 5.0) -> Triangulation:
    """
    Triangulate K keypoints from V views by confidence-weighted DLT.

    Each view contributes the two rows ``x P3 - P1`` and ``y P3 - P2``, each scaled to unit
    norm (for conditioning, so that pixels and metres do not mix) and then by the
    keypoint's confidence. The point is the eigenvector of the smallest eigenvalue of the
    4 x 4 normal matrix ``A^T A`` (the right singular vector of ``A``). Views where the
    keypoint's confidence is below ``min_conf`` (or not finite) do not take part.

    :param points_2d: [V, K, 2] pixels.
    :param conf: [V, K] confidences (NaN/inf and negatives count as 0).
    :param projections: [V, 3, 4] projection matrices (:func:`projection_matrix`).
    :param min_conf: a view takes part for a keypoint when its confidence >= this.
    :param min_views: views needed to triangulate a keypoint (>= 2).
    :param max_reprojection_px: optional: keypoints whose largest reprojection error over
        the views used exceeds this get confidence 0 (their error is still reported).
    :param min_parallax_deg: keypoints whose most divergent pair of rays (from the point to
        the centres of the views used) meet at less than this angle, or at more than 180
        degrees minus it, get confidence 0: depth along nearly parallel rays is noise
        (1 px at 1000 px focal and 5 m moves a 5-degree intersection by ~6 cm).
    :return: :class:`Triangulation`.
    """
    points_2d = np.asarray(points_2d, dtype=np.float64)
    conf = np.asarray(conf, dtype=np.float64)
    projections = np.asarray(projections, dtype=np.float64)
    if points_2d.ndim != 3 or points_2d.shape[-1] != 2:
        raise ValueError(f'points_2d: expected [V, K, 2] pixels, got shape {points_2d.shape}')
    num_views, num_kp = points_2d.shape[:2]
    if conf.shape != (num_views, num_kp):
        raise ValueError(f'conf: expected [V, K] = {(num_views, num_kp)}, got {conf.shape}')
    if projections.shape != (num_views, 3, 4):
        raise ValueError(f'projections: expected [V, 3, 4] = {(num_views, 3, 4)}, got '
                         f'{projections.shape}')
    if min_views < 2:
        raise ValueError(f'min_views: expected >= 2, got {min_views}')
    if not 0.0 <= min_parallax_deg < 90.0:
        raise ValueError(f'min_parallax_deg: expected [0, 90), got {min_parallax_deg}')
    finite = np.isfinite(points_2d).all(-1) & np.isfinite(conf) \
        & np.isfinite(projections).all(axis=(1, 2))[:, None]
    weight = np.where(finite & (conf >= min_conf), np.clip(conf, 0.0, 1.0), 0.0)
    used = weight > 0
    xy = np.where(finite[..., None], points_2d, 0.0)
    proj = np.where(np.isfinite(projections), projections, 0.0)

    # [V, K, 2, 4]: rows x P3 - P1 and y P3 - P2 for every view and keypoint.
    rows = xy[..., None] * proj[:, None, 2:3, :] - proj[:, None, :2, :]
    norms = np.sqrt((rows * rows).sum(-1, keepdims=True))
    rows = rows / np.where(norms > 0, norms, 1.0) * weight[..., None, None]
    normal = np.einsum('vkri,vkrj->kij', rows, rows)               # [K, 4, 4]
    eigenvalues, eigenvectors = np.linalg.eigh(normal)             # ascending
    homog = eigenvectors[:, :, 0]
    scale = homog[:, 3]
    # Degenerate rank (rays from one centre, or too few rows) or a point at infinity.
    largest = np.maximum(eigenvalues[:, 3], 1e-300)
    well_posed = (eigenvalues[:, 1] > _MIN_EIGEN_RATIO * largest) & (np.abs(scale) > 1e-12)
    points = np.where(well_posed[:, None],
                      homog[:, :3] / np.where(well_posed, scale, 1.0)[:, None], 0.0)

    reproj = project(points[None].repeat(num_views, 0), proj)   # [V, K, 3]
    in_front = reproj[..., 2] > 0
    error = np.sqrt(((reproj[..., :2] - xy) ** 2).sum(-1))
    num_used = used.sum(0)
    valid = (num_used >= min_views) & well_posed & np.isfinite(points).all(-1) \
        & np.all(in_front | ~used, axis=0) \
        & (_max_parallax_sin(points, proj, used) >= np.sin(np.radians(min_parallax_deg)))
    error = np.where(used & valid[None], error, 0.0)
    conf_3d = np.where(valid, weight.sum(0) / np.maximum(num_used, 1), 0.0)
    if max_reprojection_px is not None:
        conf_3d = np.where(error.max(0) > max_reprojection_px, 0.0, conf_3d)
    points = np.where(valid[:, None], points, 0.0)
    return Triangulation(points_3d=points, conf_3d=conf_3d, reprojection_error_px=error)
