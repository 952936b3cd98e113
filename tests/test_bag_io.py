"""The synthetic stream as a rosbag2: written, read back unchanged, corrupt bags named."""

import dataclasses

import numpy as np
import pytest
import yaml

from scorehmr_ros import bag_io
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.fusion.calibration import calibration_from_transforms
from scorehmr_ros.synthetic_stream import make_stream, WORLD_FRAME

CAMERAS = ('cam0', 'cam1', 'cam2')
NUM_FRAMES = 3


def messages_equal(a, b, where='msg'):
    """Assert two rosbags messages are equal field by field (arrays: dtype and values)."""
    if dataclasses.is_dataclass(a):
        assert type(a).__name__ == type(b).__name__, where
        for field in dataclasses.fields(a):
            messages_equal(getattr(a, field.name), getattr(b, field.name),
                           f'{where}.{field.name}')
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            messages_equal(x, y, f'{where}[{index}]')
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope='module')
def frames():
    return make_stream(BodyModel.from_config(None), CAMERAS, num_people=2,
                       num_frames=NUM_FRAMES, seed=1)


@pytest.fixture(scope='module')
def written(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp('bags') / 'synthetic'
    return path, bag_io.write_synthetic_bag(path, frames=frames, seed=1)


def test_every_message_reads_back_equal(written):
    path, records = written
    back = list(bag_io.read_bag(path))
    assert len(back) == len(records) == NUM_FRAMES * len(CAMERAS) * 4 + 1  # + /tf_static
    for index, (wrote, read) in enumerate(zip(records, back)):
        assert (read.topic, read.timestamp_ns, read.msgtype) == \
            (wrote.topic, wrote.timestamp_ns, wrote.msgtype), index
        messages_equal(wrote.message, read.message, f'{read.topic}#{index}')
    # Log-time order; raw records carry the CDR bytes of the same messages.
    assert [r.timestamp_ns for r in back] == sorted(r.timestamp_ns for r in back)
    raw = list(bag_io.read_bag_raw(path))
    assert all(isinstance(r.message, bytes) for r in raw)
    typestore = bag_io.make_typestore()
    assert raw[0].message == bytes(typestore.serialize_cdr(records[0].message,
                                                           records[0].msgtype))


def test_bag_layout_storage_and_types(written):
    path, _ = written
    metadata = yaml.safe_load((path / 'metadata.yaml').read_text())
    info = metadata['rosbag2_bagfile_information']
    assert info['storage_identifier'] == 'mcap' and info['version'] == 9
    topics = {t['topic_metadata']['name']: (t['topic_metadata']['type'], t['message_count'])
              for t in info['topics_with_message_count']}
    expected = {bag_io.GROUND_TRUTH_TOPIC: (bag_io.BODIES, NUM_FRAMES * len(CAMERAS)),
                bag_io.TF_STATIC_TOPIC: (bag_io.TF_MESSAGE, 1)}
    for cam in CAMERAS:
        expected.update({f'/{cam}/image': (bag_io.IMAGE, NUM_FRAMES),
                         f'/{cam}/camera_info': (bag_io.CAMERA_INFO, NUM_FRAMES),
                         f'/{cam}/detections': (bag_io.DETECTIONS, NUM_FRAMES)})
    assert topics == expected
    # The message definitions hash like rosidl's (ros2 bag play checks them).
    hashes = {t['topic_metadata']['type']: t['topic_metadata']['type_description_hash']
              for t in info['topics_with_message_count']}
    assert hashes[bag_io.DETECTIONS] == \
        'RIHS01_98e677a1ca5a36370258e8d0f3c0ec76a79996129cb39b24d5302bcbcebfbb50'


def test_tf_static_gives_the_cameras_extrinsics(frames, written):
    path, _ = written
    records = list(bag_io.read_bag(path))
    assert records[0].topic == bag_io.TF_STATIC_TOPIC  # before any camera message
    edges = [(t.header.frame_id, t.child_frame_id,
              (t.transform.translation.x, t.transform.translation.y,
               t.transform.translation.z),
              (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
               t.transform.rotation.w)) for t in records[0].message.transforms]
    views = frames[0].views
    calibration = calibration_from_transforms(edges, WORLD_FRAME,
                                              {v.camera: v.frame_id for v in views})
    assert not calibration.missing
    for view in views:
        np.testing.assert_allclose(calibration.cameras[view.camera].world_to_camera,
                                   view.world_to_camera, atol=1e-9)


def test_content_matches_the_stream(frames, written):
    path, _ = written
    back = list(bag_io.read_bag(path))
    truths = bag_io.ground_truth(back)
    assert len(truths) == NUM_FRAMES * len(CAMERAS)
    by_key = {(r.topic, bag_io.stamp_ns(r.message.header)): r for r in back
              if r.topic != bag_io.TF_STATIC_TOPIC}
    for truth in truths:
        k = sorted({t.stamp_ns for t in truths if t.camera == truth.camera}).index(
            truth.stamp_ns)
        frame = frames[k]
        view = frame.views[CAMERAS.index(truth.camera)]
        assert view.frame_id == truth.frame_id
        # Stamps: the frame's, jittered by at most 3 ms per camera.
        assert abs(truth.stamp_ns - frame.stamp_ns) <= 3_000_000
        for p, track_id in enumerate(view.track_ids):
            np.testing.assert_array_equal(truth.joints[int(track_id)], view.gt_joints[p])
        det = by_key[f'/{truth.camera}/detections', truth.stamp_ns]
        assert det.timestamp_ns == truth.stamp_ns + bag_io.DETECTION_DELAY_NS
        for p, person in enumerate(det.message.people):
            np.testing.assert_array_equal(person.keypoints_xy.reshape(25, 2),
                                          view.keypoints[p, :, :2].astype(np.float32))
            np.testing.assert_array_equal(person.init_cam_t,
                                          view.init_cam_t[p].astype(np.float32))
        image = by_key[f'/{truth.camera}/image', truth.stamp_ns].message
        np.testing.assert_array_equal(image.data.reshape(image.height, image.width),
                                      view.image)
        info = by_key[f'/{truth.camera}/camera_info', truth.stamp_ns].message
        np.testing.assert_array_equal(info.k.reshape(3, 3), view.k)


def test_truncated_bag_names_the_file(written, tmp_path):
    path, _ = written
    copy = tmp_path / 'truncated'
    copy.mkdir()
    (copy / 'metadata.yaml').write_bytes((path / 'metadata.yaml').read_bytes())
    (storage,) = [p for p in path.iterdir() if p.suffix == '.mcap']
    data = storage.read_bytes()
    (copy / storage.name).write_bytes(data[:len(data) // 2])
    with pytest.raises(bag_io.BagError, match=str(copy)):
        list(bag_io.read_bag(copy))


def test_garbage_and_missing_bags_name_the_file(written, tmp_path):
    path, _ = written
    garbage = tmp_path / 'garbage'
    garbage.mkdir()
    (garbage / 'metadata.yaml').write_bytes((path / 'metadata.yaml').read_bytes())
    (storage,) = [p for p in path.iterdir() if p.suffix == '.mcap']
    (garbage / storage.name).write_bytes(b'not an mcap file' * 100)
    with pytest.raises(bag_io.BagError, match=str(garbage)):
        list(bag_io.read_bag(garbage))
    missing = tmp_path / 'missing'
    with pytest.raises(bag_io.BagError, match=str(missing)):
        list(bag_io.read_bag_raw(missing))
    bad_yaml = tmp_path / 'bad_yaml'
    bad_yaml.mkdir()
    (bad_yaml / 'metadata.yaml').write_text('rosbag2_bagfile_information: [')
    with pytest.raises(bag_io.BagError, match=str(bad_yaml)):
        list(bag_io.read_bag(bad_yaml))


def test_writing_over_an_existing_bag_is_an_error(written):
    path, _ = written
    with pytest.raises(bag_io.BagError, match=str(path)):
        bag_io.write_records(path, [], bag_io.make_typestore())
