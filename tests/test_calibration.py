"""Camera calibration: YAML and TF-tree sources agree with the synthetic stream's truth."""

import math

import numpy as np
import pytest

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.fusion.calibration import (
    calibration_from_transforms, CalibrationError, CalibrationSet, CameraCalibration,
    drop_stale, invert_transform, load_calibration_yaml, matrix_to_quaternion_xyzw,
    quaternion_xyzw_to_matrix, save_calibration_yaml)
from scorehmr_ros.synthetic_stream import make_stream, WORLD_FRAME

CAMERAS = ('cam0', 'cam1', 'cam2')


@pytest.fixture(scope='module')
def stream_views():
    frames = make_stream(BodyModel.from_config(None), cameras=CAMERAS, num_people=1,
                         num_frames=1)
    return frames[0].views


def _truth(views) -> CalibrationSet:
    return CalibrationSet(WORLD_FRAME, {
        v.camera: CameraCalibration(v.camera, v.frame_id, v.world_to_camera, v.k)
        for v in views})


def test_quaternion_round_trip_including_half_turns():
    rng = np.random.default_rng(0)
    quats = list(rng.normal(size=(20, 4))) + [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                                              [0, 0, 0, 1], [0.7071068, 0, 0.7071068, 0]]
    for quat in quats:
        quat = np.asarray(quat, dtype=float) / np.linalg.norm(quat)
        rot = quaternion_xyzw_to_matrix(quat)
        assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        back = matrix_to_quaternion_xyzw(rot)
        assert np.allclose(back, quat if quat[3] >= 0 else -quat, atol=1e-9) or \
            np.allclose(back, -quat, atol=1e-9)
    # (x, y, z, w) order: a quarter turn about z maps x to y.
    quarter = quaternion_xyzw_to_matrix([0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    assert np.allclose(quarter @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_yaml_round_trip_equals_stream_extrinsics(tmp_path, stream_views):
    truth = _truth(stream_views)
    path = tmp_path / 'calib.yaml'
    save_calibration_yaml(truth, str(path))
    loaded = load_calibration_yaml(str(path))
    assert loaded.world_frame == WORLD_FRAME and set(loaded.cameras) == set(CAMERAS)
    for view in stream_views:
        cam = loaded.cameras[view.camera]
        assert cam.frame_id == view.frame_id
        assert np.allclose(cam.world_to_camera, view.world_to_camera, atol=1e-9)
        assert np.allclose(cam.k, view.k)
    rows = loaded.world_to_camera_rows(['cam2', 'nope', 'cam0'])
    assert np.allclose(rows[0].numpy(), stream_views[2].world_to_camera, atol=1e-6)
    assert bool(rows[1].isnan().all()) and np.allclose(rows[2].numpy(), np.eye(4), atol=1e-6)


def test_tf_tree_composition_equals_stream_extrinsics(stream_views):
    # A TF tree as a robot would publish it: world -> base_link -> <cam>_link -> optical.
    base = np.eye(4)
    base[:3, 3] = [0.3, -0.2, 1.1]
    base[:3, :3] = quaternion_xyzw_to_matrix([0.1, 0.2, -0.3, 0.9])
    transforms = [_edge(WORLD_FRAME, 'base_link', base)]
    for view in stream_views:
        camera_in_world = invert_transform(view.world_to_camera)
        link_in_base = np.eye(4)
        link_in_base[:3, 3] = [0.05, 0.0, 0.2]
        optical_in_link = invert_transform(link_in_base) @ invert_transform(base) \
            @ camera_in_world
        transforms.append(_edge('base_link', f'{view.camera}_link', link_in_base))
        # Stored child -> parent on purpose: edges are walked both ways.
        transforms.append(_edge(view.frame_id, f'{view.camera}_link',
                                invert_transform(optical_in_link)))
    result = calibration_from_transforms(
        transforms, WORLD_FRAME, {v.camera: v.frame_id for v in stream_views},
        intrinsics={v.camera: v.k for v in stream_views})
    assert result.missing == {}
    for view in stream_views:
        assert np.allclose(result.cameras[view.camera].world_to_camera, view.world_to_camera,
                           atol=1e-9)


def test_missing_chain_and_stale_transforms_are_reported_not_raised():
    edges = [('world', 'cam0_optical', [0, 0, 0], [0, 0, 0, 1]),
             ('rig', 'cam1_optical', [1, 0, 0], [0, 0, 0, 1])]
    stamps = {('world', 'cam0_optical'): 10.0}
    result = calibration_from_transforms(edges, 'world',
                                         {'cam0': 'cam0_optical', 'cam1': 'cam1_optical'},
                                         stamps_s=stamps)
    assert set(result.cameras) == {'cam0'}
    assert result.missing == {'cam1': 'no path from world to cam1_optical'}
    assert result.cameras['cam0'].stamp_s == 10.0
    fresh = drop_stale(result, now_s=10.4, max_age_s=0.5)
    assert set(fresh.cameras) == {'cam0'}
    stale = drop_stale(result, now_s=11.0, max_age_s=0.5)
    assert stale.cameras == {} and 'stale' in stale.missing['cam0']
    assert 'no path' in stale.missing['cam1']


@pytest.mark.parametrize('entry,match', [
    ({'translation': [0, 0, 0], 'rotation_xyzw': [0, 0, 0, 1]}, "camera 'c': frame_id"),
    ({'frame_id': 'f', 'rotation_xyzw': [0, 0, 0, 1]}, "camera 'c': translation: missing"),
    ({'frame_id': 'f', 'translation': [0, 0], 'rotation_xyzw': [0, 0, 0, 1]},
     'translation: expected 3 numbers'),
    ({'frame_id': 'f', 'translation': [0, 0, 'x'], 'rotation_xyzw': [0, 0, 0, 1]},
     'translation: expected 3 numbers'),
    ({'frame_id': 'f', 'translation': [0, 0, float('nan')], 'rotation_xyzw': [0, 0, 0, 1]},
     'translation: contains NaN'),
    ({'frame_id': 'f', 'translation': [0, 0, 0], 'rotation_xyzw': [0, 0, 0, 2]},
     'rotation_xyzw: quaternion .* unit norm'),
    ({'frame_id': 'f', 'translation': [0, 0, 0], 'rotation': [[1, 0, 0], [0, 1, 0], [0, 0, -1]]},
     'rotation: not a rotation'),
    ({'frame_id': 'f', 'translation': [0, 0, 0]}, 'exactly one of rotation_xyzw'),
    ({'frame_id': 'f', 'translation': [0, 0, 0], 'rotation_xyzw': [0, 0, 0, 1],
      'k': [0, 0, 1, 0, 1, 1, 0, 0, 1]}, "'c': k: expected"),
    ({'frame_id': 'f', 'translation': [0, 0, 0], 'rotation_xyzw': [0, 0, 0, 1], 'fov': 3},
     r"unknown key\(s\) \['fov'\]"),
])
def test_yaml_errors_name_file_camera_and_field(tmp_path, entry, match):
    import yaml
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump({'cameras': {'c': entry}}))
    with pytest.raises(CalibrationError, match=match) as err:
        load_calibration_yaml(str(path))
    assert 'bad.yaml' in str(err.value)


def test_yaml_file_level_errors(tmp_path):
    with pytest.raises(CalibrationError, match='cannot read'):
        load_calibration_yaml(str(tmp_path / 'absent.yaml'))
    path = tmp_path / 'empty.yaml'
    path.write_text('cameras: {}\n')
    with pytest.raises(CalibrationError, match='non-empty "cameras"'):
        load_calibration_yaml(str(path))
    with pytest.raises(CalibrationError, match=r'transform 0 \(a -> b\): translation'):
        calibration_from_transforms([('a', 'b', [0, float('inf'), 0], [0, 0, 0, 1])], 'a', {})


def test_shipped_example_calibration_loads():
    calib = load_calibration_yaml('config/calibration_example.yaml')
    assert set(calib.cameras) == {'cam0', 'cam1', 'cam2'}
    for cam in calib.cameras.values():
        rot = cam.world_to_camera[:3, :3]
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-9)


def _edge(parent, child, parent_from_child):
    return (parent, child, parent_from_child[:3, 3],
            matrix_to_quaternion_xyzw(parent_from_child[:3, :3]))
