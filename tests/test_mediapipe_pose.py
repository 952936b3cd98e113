"""Tests of the MediaPipe front end: the COCO-17 mapping and detection on a real photo."""

import numpy as np
import pytest

from scorehmr_ros.body.layouts import COCO17_JOINT_NAMES
from scorehmr_ros.perception import images
from scorehmr_ros.perception.mediapipe_pose import (
    FOOT_LANDMARK_NAMES, mediapipe_available, MEDIAPIPE_LANDMARK_NAMES, MEDIAPIPE_TO_COCO17,
    MEDIAPIPE_TO_FEET, MediaPipePoseDetector)

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


def test_blank_image_gives_no_person(detector):
    det = detector.detect(np.full((240, 320, 3), 127, np.uint8))
    assert det.num_people == 0
    assert det.keypoints.shape == (0, 17, 3) and det.boxes.shape == (0, 4)


def test_bad_image_array_is_refused(detector):
    with pytest.raises(ValueError, match=r'\[H, W, 3\] uint8'):
        detector.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match='x_max > x_min'):
        detector.detect(np.zeros((10, 10, 3), np.uint8), boxes=[[5, 5, 1, 1]])
