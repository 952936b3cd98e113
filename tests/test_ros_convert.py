"""Message <-> numpy conversion: images, intrinsics, detections and the finite outputs."""

import math
import os

from conftest import message_floats
import numpy as np
import pytest

try:
    import rclpy  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    ROS_IMPORT_ERROR = exc
    if os.environ.get('CI') == 'true':
        raise
    pytest.skip(f'rclpy is not importable ({exc}); run scripts/setup_ros.sh',
                allow_module_level=True)
else:
    from scorehmr_ros_msgs.msg import PersonDetection, PersonDetectionArray
    from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker
    import torch

    from scorehmr_ros.body.layouts import SMPL_PARENTS
    from scorehmr_ros.body.rotations import axis_angle_to_matrix, quat_wxyz_to_matrix
    from scorehmr_ros.ros import convert

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- images

@pytest.mark.parametrize('encoding', sorted(['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8',
                                             'mono16']))
def test_image_round_trip_every_encoding(encoding):
    dtype, channels = convert.IMAGE_ENCODINGS[encoding]
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    array = RNG.integers(0, np.iinfo(dtype).max, size=shape).astype(dtype)
    decoded = convert.image_to_numpy(convert.numpy_to_image(array, encoding))
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, array)


def test_image_row_padding_is_cut_and_big_endian_swapped():
    array = np.arange(12, dtype=np.uint16).reshape(3, 4) * 257 + 1
    rows = [array[r].astype('>u2').tobytes() + b'\xff\xff' for r in range(3)]
    msg = Image(height=3, width=4, encoding='mono16', is_bigendian=1, step=10,
                data=b''.join(rows))
    np.testing.assert_array_equal(convert.image_to_numpy(msg), array)


@pytest.mark.parametrize('change, message', [
    (dict(encoding='yuv422'), 'not supported'),
    (dict(encoding='32FC1'), 'not supported'),
    (dict(step=6), 'too small'),
    (dict(data=bytes(8 * 6 - 1)), 'expected height x step'),
    (dict(data=bytes(8 * 6 + 8)), 'expected height x step'),
    (dict(height=0, data=b''), 'empty'),
])
def test_bad_images_raise_clear_errors(change, message):
    fields = dict(height=6, width=8, encoding='mono8', step=8, data=bytes(48))
    fields.update(change)
    with pytest.raises(convert.ImageError, match=message) as info:
        convert.image_to_numpy(Image(**fields))
    assert info.value.counter == 'bad_image'


# ------------------------------------------------------------------------- intrinsics

def camera_info(**kwargs):
    info = CameraInfo(width=640, height=480,
                      k=[500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0],
                      p=[450.0, 0.0, 300.0, 0.0, 0.0, 460.0, 200.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    info.header.frame_id = 'cam0_optical'
    for key, value in kwargs.items():
        setattr(info, key, value)
    return info


def test_intrinsics_from_k_and_p():
    k = convert.camera_info_to_intrinsics(camera_info())
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (500, 510, 320, 240, 640, 480)
    assert k.frame_id == 'cam0_optical'
    p = convert.camera_info_to_intrinsics(camera_info(), rectified=True)
    assert (p.fx, p.fy, p.cx, p.cy) == (450, 460, 300, 200)


def test_intrinsics_with_binning_and_roi_follow_image_geometry():
    # image_geometry fromCameraInfo: shift by the ROI offset, then divide by binning.
    info = camera_info(binning_x=2, binning_y=4,
                       roi=RegionOfInterest(x_offset=100, y_offset=40, width=400, height=320))
    k = convert.camera_info_to_intrinsics(info)
    assert (k.fx, k.fy) == (250.0, 127.5)
    assert (k.cx, k.cy) == ((320 - 100) / 2, (240 - 40) / 4)
    assert (k.width, k.height) == (200, 80)
    # A pixel seen in the binned ROI image projects through the adjusted intrinsics to the
    # same ray as its full-resolution pixel through K.
    u_full, v_full = 420.0, 300.0
    u, v = (u_full - 100) / 2, (v_full - 40) / 4
    assert (u - k.cx) / k.fx == pytest.approx((u_full - 320) / 500)
    assert (v - k.cy) / k.fy == pytest.approx((v_full - 240) / 510)


@pytest.mark.parametrize('k, message', [
    ([0.0] * 9, 'all zero'),
    ([0.0, 0, 320, 0, 510, 240, 0, 0, 1], 'focal'),
    ([-500.0, 0, 320, 0, 510, 240, 0, 0, 1], 'focal'),
    ([math.nan, 0, 320, 0, 510, 240, 0, 0, 1], 'NaN'),
])
def test_bad_camera_info_is_rejected(k, message):
    with pytest.raises(convert.CameraInfoError, match=message) as info:
        convert.camera_info_to_intrinsics(camera_info(k=k))
    assert info.value.counter == 'bad_camera_info'


# ------------------------------------------------------------------------- detections

def detection(**kwargs):
    fields = dict(track_id=4, score=0.9, keypoint_layout='body25',
                  keypoints_xy=list(RNG.uniform(0, 60, 50)),
                  keypoint_confidence=[0.9] * 25,
                  init_pose_aa=list(RNG.normal(0, 0.2, 72)), init_betas=[0.0] * 10,
                  init_cam_t=[0.1, 0.2, 4.0], features=[0.0] * 16)
    fields.update(kwargs)
    return PersonDetection(**fields)


def test_detection_decoding_gives_rotations_and_keypoints():
    det = detection()
    out = convert.decode_detections(PersonDetectionArray(people=[det]), cond_dim=16)
    assert out.rejected == [] and out.repaired_keypoints == 0
    person = out.people[0]
    assert person.track_id == 4 and person.keypoints.shape == (25, 3)
    np.testing.assert_allclose(person.keypoints[:, :2].ravel(), det.keypoints_xy, rtol=1e-6)
    expected = axis_angle_to_matrix(torch.tensor(det.init_pose_aa, dtype=torch.float64)
                                    .reshape(24, 3))
    np.testing.assert_allclose(person.init_rotmats, expected.numpy(), atol=1e-6)


def test_nan_and_negative_keypoints_are_zeroed_not_fatal():
    xy = [1.0] * 50
    xy[0] = math.nan
    conf = [0.8] * 25
    conf[3] = -0.5
    conf[5] = math.inf
    out = convert.decode_detections(PersonDetectionArray(people=[
        detection(keypoints_xy=xy, keypoint_confidence=conf)]))
    kp = out.people[0].keypoints
    assert out.repaired_keypoints == 3
    assert np.isfinite(kp).all()
    assert kp[0, 2] == 0 and kp[3, 2] == 0 and kp[5, 2] == 0 and kp[1, 2] == pytest.approx(0.8)


@pytest.mark.parametrize('change, message', [
    (dict(keypoint_confidence=[0.9] * 24), 'needs 50 keypoints_xy and 25'),
    (dict(keypoints_xy=[0.0] * 48), 'needs 50'),
    (dict(keypoint_layout='mpii'), 'keypoint_layout'),
    (dict(init_pose_aa=[]), 'regression estimate'),
    (dict(init_betas=[math.nan] * 10), 'NaN'),
    (dict(init_cam_t=[0.0, 0.0, -1.0]), 'in front'),
    (dict(features=[0.0] * 15), 'features has 15'),
])
def test_bad_detections_are_dropped_with_a_reason(change, message):
    msg = PersonDetectionArray(people=[detection(), detection(**change)])
    out = convert.decode_detections(msg, cond_dim=16)
    assert len(out.people) == 1 and len(out.rejected) == 1
    assert message in out.rejected[0] and out.rejected[0].startswith('person 1')


# ---------------------------------------------------------------------------- outputs

def make_body(body_id=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rot = axis_angle_to_matrix(0.3 * torch.randn(24, 3, generator=gen, dtype=torch.float64))
    joints = torch.randn(24, 3, generator=gen, dtype=torch.float64) + torch.tensor([0, 0, 4.0])
    return convert.BodyEstimate(body_id=body_id, rotmats=rot.numpy(),
                                betas=np.zeros(10), joints=joints.numpy(),
                                joint_confidence=np.full(24, 0.5),
                                joint_residual_px=np.r_[np.full(23, 2.0), math.nan])


def test_outputs_are_finite_and_non_finite_bodies_dropped():
    header = Header(frame_id='cam0_optical')
    bad = make_body(9)
    bad.joints[4, 1] = math.nan
    bodies = [make_body(3), bad]
    array, dropped = convert.build_body_array(header, bodies)
    assert dropped == 1 and [b.id for b in array.bodies] == [3]
    body = array.bodies[0]
    # Unknowns become the documented sentinel, never NaN.
    assert body.fit_loss == convert.UNKNOWN and body.joint_residual_px[23] == convert.UNKNOWN
    tf = convert.build_tf(header, bodies)
    markers = convert.build_markers(header, bodies)
    state = convert.build_joint_state(header, bodies[0])
    for msg in (array, tf, markers, state):
        values = list(message_floats(msg))
        assert values and all(math.isfinite(v) for v in values), type(msg).__name__
    assert len(tf.transforms) == 24 and len(markers.markers) == 1
    assert len(markers.markers[0].points) == 2 * 23 and len(state.name) == 69


def transform_matrix(t):
    rot = quat_wxyz_to_matrix(torch.tensor([t.rotation.w, t.rotation.x, t.rotation.y,
                                            t.rotation.z], dtype=torch.float64)).numpy()
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = [t.translation.x, t.translation.y, t.translation.z]
    return out


def test_tf_chain_reproduces_joint_positions_and_orientations():
    body = make_body()
    tf = convert.build_tf(Header(frame_id='cam0_optical'), [body], prefix='cam0/')
    by_child = {t.child_frame_id: t for t in tf.transforms}
    assert tf.transforms[0].child_frame_id == 'cam0/body_3'
    assert tf.transforms[0].header.frame_id == 'cam0_optical'
    assert by_child['cam0/left_knee_3'].header.frame_id == 'cam0/left_hip_3'
    world = convert._global_rotations(body.rotmats)
    for joint in range(24):
        chain, j = [], joint
        while j >= 0:
            chain.append(tf.transforms[j])
            j = SMPL_PARENTS[j]
        pose = np.eye(4)
        for t in reversed(chain):
            pose = pose @ transform_matrix(t.transform)
        np.testing.assert_allclose(pose[:3, 3], body.joints[joint], atol=1e-9)
        np.testing.assert_allclose(pose[:3, :3], world[joint], atol=1e-9)


def test_joint_state_euler_angles_rebuild_the_rotation():
    body = make_body()
    state = convert.build_joint_state(Header(), body)
    angles = np.asarray(state.position).reshape(23, 3)
    for joint in range(1, 24):
        a, b, c = angles[joint - 1]
        rx = axis_angle_to_matrix(torch.tensor([a, 0, 0], dtype=torch.float64))
        ry = axis_angle_to_matrix(torch.tensor([0, b, 0], dtype=torch.float64))
        rz = axis_angle_to_matrix(torch.tensor([0, 0, c], dtype=torch.float64))
        np.testing.assert_allclose((rx @ ry @ rz).numpy(), body.rotmats[joint], atol=1e-9)
    assert state.name[0] == 'left_hip_3_x'


def test_stamp_conversion():
    stamp = convert.stamp_msg(1700000000123456789)
    assert (stamp.sec, stamp.nanosec) == (1700000000, 123456789)


def test_mesh_markers_are_triangle_lists_of_the_posed_vertices():
    from scorehmr_ros.body.model import BodyModel

    body_model = BodyModel.from_config(None)
    faces = body_model.faces.numpy()
    body = make_body(5)
    body.vertices = np.random.default_rng(0).normal(size=(body_model.num_vertices, 3))
    nan_body = make_body(6)
    nan_body.vertices = np.full((body_model.num_vertices, 3), math.nan)
    header = Header(frame_id='cam0_optical')
    markers = convert.build_markers(header, [body, nan_body], 'skeleton', 0.5, faces)
    kinds = [(m.ns, m.type) for m in markers.markers]
    assert kinds == [('skeleton', Marker.LINE_LIST), ('skeleton_mesh', Marker.TRIANGLE_LIST)]
    mesh = markers.markers[1]
    assert len(mesh.points) == 3 * faces.shape[0]
    first = faces[0]
    assert [mesh.points[0].x, mesh.points[1].y] == [body.vertices[first[0], 0],
                                                    body.vertices[first[1], 1]]
    assert all(math.isfinite(v) for v in message_floats(markers))
