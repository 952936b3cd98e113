"""
Built-in 2D keypoint detector: MediaPipe Pose (BlazePose GHUM, CPU, offline).

``mediapipe==0.10.21`` ships the pose models inside its wheel (later releases download
them at run time), so this front end works without network. It finds one person per
image; with upstream person boxes it runs once per box and so handles several people.
Its 33 landmarks are mapped to COCO-17 (the order of
:data:`scorehmr_ros.body.layouts.COCO17_JOINT_NAMES`); heels and toes are returned
separately. MediaPipe's 3D world landmarks (metres, origin between the hips, axes like
the image's: x right, y down, z away from the camera) come mapped to COCO-17 the same way,
for :func:`scorehmr_ros.perception.initial_estimate.initial_estimate`'s ``landmarks3d``
start.

Install with ``pip install --no-deps -r requirements-nodeps.txt`` (mediapipe's declared
dependencies include jax and audio packages that pose estimation never imports).
"""

import dataclasses
import logging
from typing import Optional, Sequence

import numpy as np

from scorehmr_ros.body.layouts import COCO17_JOINT_NAMES

LOG = logging.getLogger(__name__)

#: The 33 MediaPipe Pose landmarks in model output order (mediapipe's PoseLandmark enum,
#: lower-cased; tests compare this table with the installed package).
MEDIAPIPE_LANDMARK_NAMES = (
    'nose', 'left_eye_inner', 'left_eye', 'left_eye_outer', 'right_eye_inner', 'right_eye',
    'right_eye_outer', 'left_ear', 'right_ear', 'mouth_left', 'mouth_right',
    'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist',
    'right_wrist', 'left_pinky', 'right_pinky', 'left_index', 'right_index', 'left_thumb',
    'right_thumb', 'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
    'right_ankle', 'left_heel', 'right_heel', 'left_foot_index', 'right_foot_index',
)

#: COCO-17 keypoint name -> MediaPipe landmark name. COCO's names are a subset of
#: MediaPipe's (both use the person's own left/right), so the map is by equal names.
COCO17_FROM_MEDIAPIPE_NAMES = {name: name for name in COCO17_JOINT_NAMES}

#: [17] MediaPipe landmark index of each COCO-17 keypoint, COCO order.
MEDIAPIPE_TO_COCO17 = [MEDIAPIPE_LANDMARK_NAMES.index(COCO17_FROM_MEDIAPIPE_NAMES[name])
                       for name in COCO17_JOINT_NAMES]

#: Foot landmarks kept as extra output (BODY_25's heels and big toes).
FOOT_LANDMARK_NAMES = ('left_heel', 'right_heel', 'left_foot_index', 'right_foot_index')
MEDIAPIPE_TO_FEET = [MEDIAPIPE_LANDMARK_NAMES.index(name) for name in FOOT_LANDMARK_NAMES]

#: Keypoints at least this confident define the person's box.
BOX_MIN_CONF = 0.5


class DetectorUnavailable(ImportError):
    """MediaPipe (the optional detector extra) is not installed."""


@dataclasses.dataclass
class PoseDetections:
    """
    People found in one image (P of them; P = 0 when nobody was found).

    :param keypoints: [P, 17, 3] COCO-17 ``(x_px, y_px, confidence)``; confidence in
        [0, 1], 0 for landmarks outside the image.
    :param boxes: [P, 4] ``(x_min, y_min, x_max, y_max)`` pixels, inside the image: the
        box of the confident landmarks (or the upstream box that was searched).
    :param scores: [P] mean landmark confidence of the person.
    :param feet: [P, 4, 3] heels and foot tips in :data:`FOOT_LANDMARK_NAMES` order,
        ``(x_px, y_px, confidence)``.
    :param landmarks: [P, 33, 4] raw MediaPipe landmarks ``(x_px, y_px, z_rel,
        confidence)``; ``z_rel`` is MediaPipe's relative depth (hip-centred, image width
        scale).
    :param world_keypoints: [P, 17, 4] COCO-17 world landmarks ``(x_m, y_m, z_m,
        confidence)``: metres, origin at the hips' midpoint, x right, y down, z away from
        the camera; same confidence as ``keypoints``. Absent (None) it is filled with
        zeros, confidence 0 (no 3D landmarks).
    """

    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    feet: np.ndarray
    landmarks: np.ndarray
    world_keypoints: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.world_keypoints is None:
            self.world_keypoints = np.zeros((self.keypoints.shape[0], 17, 4), np.float32)

    @property
    def num_people(self) -> int:
        """P."""
        return int(self.keypoints.shape[0])

    def select(self, indices) -> 'PoseDetections':
        """
        Keep some people.

        :param indices: [K] indices (or a [P] boolean mask) of the people to keep.
        :return: a new result with those K people, in that order.
        """
        indices = np.asarray(indices)
        if indices.dtype != bool:
            indices = indices.astype(np.int64).reshape(-1)
        return PoseDetections(self.keypoints[indices], self.boxes[indices],
                              self.scores[indices], self.feet[indices],
                              self.landmarks[indices], self.world_keypoints[indices])

    @staticmethod
    def empty() -> 'PoseDetections':
        """Return a result with no person."""
        return PoseDetections(np.zeros((0, 17, 3), np.float32), np.zeros((0, 4), np.float32),
                              np.zeros((0,), np.float32), np.zeros((0, 4, 3), np.float32),
                              np.zeros((0, 33, 4), np.float32),
                              np.zeros((0, 17, 4), np.float32))


def mediapipe_available() -> bool:
    """Return True if the optional MediaPipe extra can be imported."""
    try:
        _import_mediapipe()
    except DetectorUnavailable:
        return False
    return True


def _import_mediapipe():
    try:
        import mediapipe
    except ImportError as err:
        raise DetectorUnavailable(
            f'the built-in detector needs MediaPipe ({err}); install the extra with '
            '`.venv/bin/pip install --no-deps -r requirements-nodeps.txt`') from err
    return mediapipe


class MediaPipePoseDetector:
    """
    MediaPipe Pose on RGB images; one person per image or per upstream box.

    :param model_complexity: 0 (lite), 1 (full) or 2 (heavy; the heavy model is not in the
        wheel and would be downloaded, so it is refused here).
    :param min_detection_confidence: MediaPipe's person detector threshold.
    :param tracking: reuse the previous frame's landmarks to find the person (video of one
        person); False treats every call as an independent photo.
    :param box_margin: with upstream boxes, each box is grown by this fraction of its
        size on every side before the crop, as MediaPipe expects some context.
    """

    def __init__(self, model_complexity: int = 1, min_detection_confidence: float = 0.5,
                 tracking: bool = False, box_margin: float = 0.15) -> None:
        if model_complexity not in (0, 1):
            raise ValueError(f'model_complexity must be 0 or 1 (models inside the wheel), '
                             f'got {model_complexity!r}')
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise ValueError('min_detection_confidence must lie in [0, 1], got '
                             f'{min_detection_confidence!r}')
        mediapipe = _import_mediapipe()
        self.box_margin = float(box_margin)
        options = dict(model_complexity=model_complexity, enable_segmentation=False,
                       min_detection_confidence=min_detection_confidence)
        self._pose = mediapipe.solutions.pose.Pose(static_image_mode=not tracking, **options)
        # Crops of different people must not share tracking state.
        self._crop_pose = (self._pose if not tracking else
                           mediapipe.solutions.pose.Pose(static_image_mode=True, **options))

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        for pose in {id(self._pose): self._pose, id(self._crop_pose): self._crop_pose}.values():
            pose.close()

    def __enter__(self) -> 'MediaPipePoseDetector':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image: np.ndarray,
               boxes: Optional[Sequence[Sequence[float]]] = None) -> PoseDetections:
        """
        Find people and their COCO-17 keypoints.

        :param image: [H, W, 3] uint8 RGB image.
        :param boxes: optional [P, 4] upstream person boxes ``(x_min, y_min, x_max,
            y_max)`` in pixels; each is searched for one person (multi-person). Without
            boxes the whole image is searched for one person.
        :return: the people found (boxes without a person are dropped).
        :raises ValueError: if the image is not [H, W, 3] uint8 or a box is malformed.
        """
        image = _check_image(image)
        if boxes is None:
            found = self._run(self._pose, image, 0.0, 0.0, image.shape)
            return _stack([found] if found is not None else [])
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else \
            np.zeros((0, 4))
        height, width = image.shape[:2]
        people = []
        for box in boxes:
            if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f'boxes must be finite (x_min, y_min, x_max, y_max) with '
                                 f'x_max > x_min and y_max > y_min, got {box.tolist()}')
            mx = self.box_margin * (box[2] - box[0])
            my = self.box_margin * (box[3] - box[1])
            x0, y0 = int(max(0, np.floor(box[0] - mx))), int(max(0, np.floor(box[1] - my)))
            x1 = int(min(width, np.ceil(box[2] + mx)))
            y1 = int(min(height, np.ceil(box[3] + my)))
            if x1 - x0 < 2 or y1 - y0 < 2:
                LOG.debug('box %s lies outside the image; skipped', box.tolist())
                continue
            crop = np.ascontiguousarray(image[y0:y1, x0:x1])
            found = self._run(self._crop_pose, crop, x0, y0, image.shape)
            if found is not None:
                people.append(found)
        return _stack(people)

    @staticmethod
    def _run(pose, image: np.ndarray, x_off: float, y_off: float, full_shape):
        result = pose.process(image)
        if result.pose_landmarks is None:
            return None
        height, width = image.shape[:2]
        lm = np.array([(p.x * width + x_off, p.y * height + y_off, p.z * width,
                        _confidence(p)) for p in result.pose_landmarks.landmark],
                      dtype=np.float32)
        full_h, full_w = full_shape[:2]
        # MediaPipe extrapolates landmarks beyond the image; they are guesses, not
        # observations, so they must not pull the fit.
        outside = ((lm[:, 0] < 0) | (lm[:, 0] > full_w - 1) | (lm[:, 1] < 0)
                   | (lm[:, 1] > full_h - 1))
        lm[outside, 3] = 0.0
        keypoints = lm[MEDIAPIPE_TO_COCO17][:, (0, 1, 3)]
        confident = lm[lm[:, 3] >= BOX_MIN_CONF]
        if len(confident) == 0:
            return None
        box = np.array([confident[:, 0].min(), confident[:, 1].min(),
                        confident[:, 0].max(), confident[:, 1].max()], dtype=np.float32)
        box = np.clip(box, 0.0, [full_w - 1, full_h - 1, full_w - 1, full_h - 1])
        score = np.float32(keypoints[:, 2].mean())
        world = np.zeros((len(MEDIAPIPE_LANDMARK_NAMES), 4), np.float32)
        if result.pose_world_landmarks is not None:
            world[:, :3] = [(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark]
            world[:, 3] = lm[:, 3]
        return (keypoints, box, score, lm[MEDIAPIPE_TO_FEET][:, (0, 1, 3)], lm,
                world[MEDIAPIPE_TO_COCO17])


def _confidence(landmark) -> float:
    """
    Turn MediaPipe's visibility/presence into one confidence in [0, 1].

    The pose solution fills ``visibility`` (likelihood that the landmark is visible) and
    leaves ``presence`` at 0; where a build fills both, their product is used.
    """
    conf = float(landmark.visibility)
    presence = float(landmark.presence)
    if presence > 0.0:
        conf *= presence
    return min(max(conf, 0.0), 1.0) if np.isfinite(conf) else 0.0


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be an [H, W, 3] uint8 RGB array, got shape '
                         f'{list(image.shape)} dtype {image.dtype}')
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f'image is too small: {list(image.shape)}')
    return np.ascontiguousarray(image)


def _stack(people) -> PoseDetections:
    if not people:
        return PoseDetections.empty()
    keypoints, boxes, scores, feet, landmarks, world = (np.stack(part) for part in zip(*people))
    return PoseDetections(keypoints=keypoints, boxes=boxes, scores=scores, feet=feet,
                          landmarks=landmarks, world_keypoints=world)
