"""Tests of the MediaPipe front end: the COCO-17 mapping and detection on a real photo."""

import numpy as np
import pytest

from scorehmr_ros.body.layouts import COCO17_JOINT_NAMES
from scorehmr_ros.perception import images
from scorehmr_ros.perception.boxes import (box_iou, HogPeopleDetector, HogSettings,
                                           people_in_boxes, suppress_overlaps)
from scorehmr_ros.perception.mediapipe_pose import (
    FOOT_LANDMARK_NAMES, mediapipe_available, MEDIAPIPE_LANDMARK_NAMES, MEDIAPIPE_TO_COCO17,
    MEDIAPIPE_TO_FEET, MediaPipePoseDetector, PoseDetections)

needs_mediapipe = pytest.mark.skipif(
    not mediapipe_available(),
    reason='mediapipe (requirements-nodeps.txt) is not installed')

MESSI = images.sample_media_path('messi5.jpg')
needs_photo = pytest.mark.skipif(
    MESSI is None, reason='messi5.jpg of Debian opencv-doc not found (scripts/setup.sh '
    'extracts it into .cache/opencv-doc)')


def test_coco17_map_picks_the_landmark_of_the_same_name():
    expected = {'nose': 0, 'left_eye': 2, 'right_eye': 5, 'left_ear': 7, 'right_ear': 8,
                'left_shoulder': 11, 'right_shoulder': 12, 'left_elbow': 13,
                'right_elbow': 14, 'left_wrist': 15, 'right_wrist': 16, 'left_hip': 23,
                'right_hip': 24, 'left_knee': 25, 'right_knee': 26, 'left_ankle': 27,
                'right_ankle': 28}
    assert len(MEDIAPIPE_TO_COCO17) == 17
    for coco_index, name in enumerate(COCO17_JOINT_NAMES):
        assert MEDIAPIPE_TO_COCO17[coco_index] == expected[name], name
        assert MEDIAPIPE_LANDMARK_NAMES[MEDIAPIPE_TO_COCO17[coco_index]] == name
    assert [MEDIAPIPE_LANDMARK_NAMES[i] for i in MEDIAPIPE_TO_FEET] == list(FOOT_LANDMARK_NAMES)
    assert MEDIAPIPE_TO_FEET == [29, 30, 31, 32]


@needs_mediapipe
def test_landmark_table_matches_installed_mediapipe():
    import mediapipe

    enum = mediapipe.solutions.pose.PoseLandmark
    assert len(enum) == len(MEDIAPIPE_LANDMARK_NAMES) == 33
    for member in enum:
        assert MEDIAPIPE_LANDMARK_NAMES[member.value] == member.name.lower()


@pytest.fixture(scope='module')
def detector():
    if not mediapipe_available():
        pytest.skip('mediapipe (requirements-nodeps.txt) is not installed')
    det = MediaPipePoseDetector()
    yield det
    det.close()


@needs_photo
def test_detector_finds_the_person_on_a_real_photo(detector):
    image = images.read_image(MESSI)
    height, width = image.shape[:2]
    det = detector.detect(image)
    assert det.num_people == 1
    kp = det.keypoints[0]
    assert kp.shape == (17, 3) and det.feet.shape == (1, 4, 3)
    assert int((kp[:, 2] >= 0.5).sum()) >= 12
    x0, y0, x1, y1 = det.boxes[0]
    assert 0 <= x0 < x1 <= width - 1 and 0 <= y0 < y1 <= height - 1
    # The person fills a good part of this photo: the box is no sliver.
    assert (x1 - x0) > 0.3 * width and (y1 - y0) > 0.4 * height
    # Facing the camera: the left shoulder is on the image's right.
    assert kp[5, 0] > kp[6, 0]

    # Multi-person path: searching inside the upstream box finds the same keypoints.
    again = detector.detect(image, boxes=det.boxes)
    assert again.num_people == 1
    ok = (kp[:, 2] >= 0.5) & (again.keypoints[0, :, 2] >= 0.5)
    assert np.median(np.linalg.norm(again.keypoints[0, ok, :2] - kp[ok, :2], axis=1)) < 10.0


@needs_photo
def test_world_landmarks_on_a_real_photo_give_the_landmark_start(detector):
    import torch

    from scorehmr_ros.body.model import BodyModel
    from scorehmr_ros.perception.initial_estimate import (
        initial_estimate, reprojection_error_px)

    image = images.read_image(MESSI)
    det = detector.detect(image)
    assert det.num_people == 1 and det.world_keypoints.shape == (1, 17, 4)
    world = det.world_keypoints[0]
    assert np.isfinite(world).all()
    assert np.array_equal(world[:, 3], det.keypoints[0, :, 2])
    # Metres, origin between the hips, y down: shoulders ~0.5 m above the hips.
    hips = world[[11, 12], :3].mean(0)
    shoulders = world[[5, 6], :3].mean(0)
    assert np.linalg.norm(hips) < 0.05
    assert 0.3 < hips[1] - shoulders[1] < 0.8
    assert 0.2 < np.linalg.norm(world[5, :3] - world[6, :3]) < 0.6
    # The landmark start reprojects closer than the rest pose (the spread arms bend).
    body = BodyModel.from_config(None, dtype=torch.float64)
    hw = image.shape[:2]
    focal, center = float(max(hw)), (hw[1] / 2.0, hw[0] / 2.0)
    errors = {}
    for method in ('rest', 'landmarks3d'):
        est = initial_estimate(body, det.keypoints, hw, focal, method=method,
                               landmarks=det.world_keypoints)
        errors[method] = float(reprojection_error_px(body, *est, det.keypoints, focal,
                                                     center)[0])
    assert errors['landmarks3d'] < 0.6 * errors['rest'], errors


def test_blank_image_gives_no_person(detector):
    det = detector.detect(np.full((240, 320, 3), 127, np.uint8))
    assert det.num_people == 0
    assert det.keypoints.shape == (0, 17, 3) and det.boxes.shape == (0, 4)
    assert det.world_keypoints.shape == (0, 17, 4)


def test_bad_image_array_is_refused(detector):
    with pytest.raises(ValueError, match=r'\[H, W, 3\] uint8'):
        detector.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match='x_max > x_min'):
        detector.detect(np.zeros((10, 10, 3), np.uint8), boxes=[[5, 5, 1, 1]])


def test_box_overlap_and_suppression_by_hand():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10.5]])
    # [0] and [1] share half of each: 50 / (100 + 100 - 50).
    np.testing.assert_allclose(box_iou(boxes[0], boxes), [1.0, 1 / 3, 0.0, 100 / 105])
    assert box_iou(np.array([0, 0, 0, 0.0]), boxes).tolist() == [0.0] * 4
    scores = np.array([0.9, 0.8, 0.1, 0.95])
    # [3] is best and swallows [0]; [1] overlaps [3] by 50/155 < 0.4 and stays.
    assert suppress_overlaps(boxes, scores, 0.4).tolist() == [3, 1, 2]
    assert suppress_overlaps(boxes, scores, 0.3).tolist() == [3, 2]
    assert suppress_overlaps(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_pose_detections_select_keeps_rows_in_order():
    det = PoseDetections(np.arange(3 * 17 * 3, dtype=np.float32).reshape(3, 17, 3),
                         np.arange(12, dtype=np.float32).reshape(3, 4),
                         np.array([0.2, 0.9, 0.6], np.float32),
                         np.zeros((3, 4, 3), np.float32), np.zeros((3, 33, 4), np.float32))
    picked = det.select([2, 0])
    assert picked.num_people == 2 and picked.scores.tolist() == pytest.approx([0.6, 0.2])
    assert np.array_equal(picked.keypoints, det.keypoints[[2, 0]])
    assert det.select(det.scores > 0.5).boxes.tolist() == det.boxes[1:].tolist()
    assert det.select([]).num_people == 0
    # Built without world landmarks: zeros with confidence 0, selected along.
    assert det.world_keypoints.shape == (3, 17, 4) and not det.world_keypoints.any()
    assert picked.world_keypoints.shape == (2, 17, 4)


def test_hog_settings_are_checked():
    with pytest.raises(ValueError, match='pyramid_scale'):
        HogSettings(pyramid_scale=1.0)
    with pytest.raises(ValueError, match='max_iou'):
        HogSettings(max_iou=2.0)


VTEST = images.sample_media_path('vtest.avi')


@pytest.mark.skipif(VTEST is None, reason='vtest.avi of Debian opencv-doc not found '
                    '(scripts/setup.sh extracts it into .cache/opencv-doc)')
def test_hog_boxes_find_the_small_pedestrians_that_full_frame_mediapipe_misses(detector):
    _, _, frame = next(images.iter_frames(VTEST, max_frames=1, stride=1))
    height, width = frame.shape[:2]
    assert detector.detect(frame).num_people == 0
    boxes, weights = HogPeopleDetector().detect(frame)
    assert len(boxes) >= 3 and (np.diff(weights) <= 0).all()
    assert ((boxes >= 0) & (boxes <= [width - 1, height - 1] * 2)).all()
    # Pedestrian-shaped: taller than wide, and no two kept boxes overlap much.
    assert ((boxes[:, 3] - boxes[:, 1]) > (boxes[:, 2] - boxes[:, 0])).all()
    for i in range(len(boxes)):
        assert (box_iou(boxes[i], np.delete(boxes, i, axis=0)) <= 0.4).all()
    people = people_in_boxes(detector, frame, boxes)
    assert people.num_people >= 3 and (people.scores >= 0.5).all()
    # Each person's keypoints lie in (the grown crop around) one of the boxes.
    for box in people.boxes:
        assert box_iou(box, boxes).max() > 0.2
