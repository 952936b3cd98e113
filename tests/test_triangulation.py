"""Confidence-weighted DLT triangulation against known 3D points."""

from multiview_scene import project_people, random_people, ring_cameras
import numpy as np
import pytest

from scorehmr_ros.fusion.triangulation import (camera_centre, project, projection_matrix,
                                               triangulate)


def _observe(points, cameras, rng=None, noise_px=0.0):
    """Pixels [V, K, 2], visibility [V, K] and projections [V, 3, 4] of world points [K, 3]."""
    pixels, visible = zip(*(project_people(points[None], k, pose) for k, pose in cameras))
    pixels = np.concatenate(pixels)
    if noise_px:
        pixels = pixels + rng.normal(0.0, noise_px, size=pixels.shape)
    projections = np.stack([projection_matrix(k, pose) for k, pose in cameras])
    return pixels, np.concatenate(visible), projections


@pytest.mark.parametrize('num_views', [2, 3, 4])
def test_exact_observations_give_exact_points(num_views):
    rng = np.random.default_rng(num_views)
    points = random_people(1, rng)[0]
    pixels, visible, projections = _observe(points, ring_cameras(num_views))
    assert visible.all()
    result = triangulate(pixels, np.ones(visible.shape), projections)
    np.testing.assert_allclose(result.points_3d, points, atol=1e-7)
    np.testing.assert_allclose(result.conf_3d, 1.0)
    assert result.reprojection_error_px.shape == (num_views, len(points))
    assert result.reprojection_error_px.max() < 1e-5


@pytest.mark.parametrize('num_views', [2, 4])
def test_noisy_observations_error_bound(num_views):
    # 1.5 px noise at f = 1000 px and ~5 m: a ray moves ~7 mm; DLT stays within a few cm.
    rng = np.random.default_rng(10 + num_views)
    errors, reproj = [], []
    for _ in range(20):
        points = random_people(1, rng)[0]
        pixels, visible, projections = _observe(points, ring_cameras(num_views), rng, 1.5)
        result = triangulate(pixels, np.ones(visible.shape), projections)
        errors.append(np.linalg.norm(result.points_3d - points, axis=-1))
        reproj.append(result.reprojection_error_px)
    errors = np.concatenate(errors)
    assert errors.mean() < 0.012, errors.mean()
    assert errors.max() < 0.05, errors.max()
    assert np.concatenate(reproj).mean() < 2.0


def test_confidence_weighting_discounts_a_bad_view():
    rng = np.random.default_rng(3)
    points = random_people(1, rng)[0]
    pixels, visible, projections = _observe(points, ring_cameras(3))
    pixels[2] += 30.0   # view 2 is off by 30 px in x and y
    conf = np.ones(visible.shape)
    error_full = np.linalg.norm(triangulate(pixels, conf, projections).points_3d - points, axis=-1)
    conf[2] = 0.15
    error_low = np.linalg.norm(triangulate(pixels, conf, projections).points_3d - points, axis=-1)
    assert error_low.mean() < 0.5 * error_full.mean()


def test_keypoints_in_fewer_than_two_views_get_zero_confidence():
    rng = np.random.default_rng(4)
    points = random_people(1, rng)[0]
    pixels, visible, projections = _observe(points, ring_cameras(3))
    conf = np.ones(visible.shape)
    conf[:, 0] = 0.0                      # nowhere
    conf[1:, 1] = 0.0                     # one view only
    conf[1:, 2] = 0.05                    # below min_conf in two views
    pixels[0, 3] = np.nan                 # NaN in one view: two views remain
    conf[1, 4] = np.inf                   # non-finite confidence counts as 0
    pixels[:, 5] = np.nan                 # NaN everywhere
    result = triangulate(pixels, conf, projections)
    for array in result:
        assert np.isfinite(array).all()
    assert (result.conf_3d[[0, 1, 2, 5]] == 0).all()
    assert (result.points_3d[[0, 1, 2, 5]] == 0).all()
    assert (result.reprojection_error_px[:, [0, 1, 2, 5]] == 0).all()
    assert result.reprojection_error_px[0, 3] == 0.0   # view 0 was not used for keypoint 3
    np.testing.assert_allclose(result.points_3d[[3, 4]], points[[3, 4]], atol=1e-6)
    assert (result.conf_3d[6:] == 1).all()


def test_point_behind_a_camera_is_rejected():
    cameras = ring_cameras(2)
    projections = np.stack([projection_matrix(k, pose) for k, pose in cameras])
    # Mirror the point through camera 0's centre: it projects to the same pixel in camera 0
    # from behind; the rays still meet but the triangulated point is behind camera 0.
    centre = camera_centre(cameras[0][1])
    point = np.array([0.2, 0.1, 1.0])
    behind = 2 * centre - point
    pix0 = project(point[None], projections[0])[0, :2]
    pix1 = project(behind[None], projections[1])[0, :2]
    result = triangulate(np.stack([pix0, pix1])[:, None], np.ones((2, 1)), projections)
    assert result.conf_3d[0] == 0.0
    assert np.isfinite(result.points_3d).all()


def test_max_reprojection_rejects_inconsistent_keypoints():
    rng = np.random.default_rng(5)
    points = random_people(1, rng)[0]
    pixels, visible, projections = _observe(points, ring_cameras(3))
    pixels[1, 7] += 80.0
    result = triangulate(pixels, np.ones(visible.shape), projections, max_reprojection_px=5.0)
    assert result.conf_3d[7] == 0.0
    assert result.reprojection_error_px[:, 7].max() > 5.0
    assert (np.delete(result.conf_3d, 7) == 1.0).all()


def test_projection_helpers_agree():
    for k, pose in ring_cameras(4):
        projection = projection_matrix(k, pose)
        centre = camera_centre(pose)
        np.testing.assert_allclose(projection @ np.append(centre, 1.0), 0.0, atol=1e-9)
        points = np.random.default_rng(0).normal(0.0, 0.5, size=(10, 3))
        expected, _ = project_people(points[None], k, pose)
        np.testing.assert_allclose(project(points, projection)[:, :2], expected[0])


def test_bad_shapes_raise_with_field_names():
    projections = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match='points_2d'):
        triangulate(np.zeros((2, 5, 3)), np.ones((2, 5)), projections)
    with pytest.raises(ValueError, match='conf'):
        triangulate(np.zeros((2, 5, 2)), np.ones((2, 4)), projections)
    with pytest.raises(ValueError, match='projections'):
        triangulate(np.zeros((2, 5, 2)), np.ones((2, 5)), np.zeros((3, 3, 4)))
    with pytest.raises(ValueError, match='min_views'):
        triangulate(np.zeros((2, 5, 2)), np.ones((2, 5)), projections, min_views=1)
    with pytest.raises(ValueError, match='k:'):
        projection_matrix(np.eye(4), np.eye(4))
    with pytest.raises(ValueError, match='world_to_camera'):
        projection_matrix(np.eye(3), np.eye(3))
