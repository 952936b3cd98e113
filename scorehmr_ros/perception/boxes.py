"""
Person boxes without a downloaded model: OpenCV's HOG people detector, and box overlap tools.

MediaPipe Pose finds one person per image and misses people who are small in a wide view
(the pedestrians of opencv-doc's ``vtest.avi``, ~100 px tall in 768x576). OpenCV ships a
linear SVM over HOG features trained for pedestrians (Dalal and Triggs, CVPR 2005) inside
``opencv-python-headless``; its boxes let MediaPipe run once per person
(:meth:`~scorehmr_ros.perception.mediapipe_pose.MediaPipePoseDetector.detect` with
``boxes``). It is slow on a CPU (about 1 s per 768x576 frame at ``upscale`` 1.5 on this
machine's 2 cores) and knows upright pedestrians only, so it is a fallback for demos and
wide static views, not a real-time multi-person detector.
"""

import dataclasses
import logging
from typing import Tuple

import numpy as np

from scorehmr_ros.perception.mediapipe_pose import PoseDetections

LOG = logging.getLogger(__name__)


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """
    Intersection over union of one box with several.

    :param box: [4] ``(x_min, y_min, x_max, y_max)`` pixels.
    :param others: [N, 4] boxes, same format.
    :return: [N] IoU in [0, 1] (0 for empty boxes).
    """
    others = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    areas = np.clip(others[:, 2] - others[:, 0], 0, None) * \
        np.clip(others[:, 3] - others[:, 1], 0, None)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def suppress_overlaps(boxes: np.ndarray, scores: np.ndarray, max_iou: float) -> np.ndarray:
    """
    Greedy non-maximum suppression: keep the best box, drop boxes overlapping it, repeat.

    :param boxes: [N, 4] ``(x_min, y_min, x_max, y_max)`` pixels.
    :param scores: [N] higher is better.
    :param max_iou: a box overlapping a kept one by more than this is dropped.
    :return: [K] indices of the kept boxes, best first.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = list(np.argsort(-np.asarray(scores, dtype=np.float64), kind='stable'))
    keep = []
    while order:
        best = order.pop(0)
        keep.append(best)
        if order:
            overlap = box_iou(boxes[best], boxes[order])
            order = [i for i, iou in zip(order, overlap) if iou <= max_iou]
    return np.asarray(keep, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class HogSettings:
    """
    Settings of :class:`HogPeopleDetector`.

    :param upscale: the image is enlarged by this factor first: the detector's window is
        64x128 px, so people shorter than about 100 px are found only when enlarged.
    :param min_weight: smallest SVM decision value of a kept box (0 keeps every hit).
    :param max_iou: overlapping boxes above this IoU are merged (the best one is kept).
    :param win_stride_px: window step in the (enlarged) image, pixels.
    :param pyramid_scale: scale step between pyramid levels (> 1; larger is faster).
    """

    upscale: float = 1.5
    min_weight: float = 0.3
    max_iou: float = 0.4
    win_stride_px: int = 8
    pyramid_scale: float = 1.05

    def __post_init__(self):
        if not self.upscale > 0:
            raise ValueError(f'HogSettings.upscale must be > 0, got {self.upscale!r}')
        if not 0.0 <= self.max_iou <= 1.0:
            raise ValueError(f'HogSettings.max_iou must lie in [0, 1], got {self.max_iou!r}')
        if self.win_stride_px < 1:
            raise ValueError('HogSettings.win_stride_px must be >= 1, got '
                             f'{self.win_stride_px!r}')
        if not self.pyramid_scale > 1.0:
            raise ValueError('HogSettings.pyramid_scale must be > 1, got '
                             f'{self.pyramid_scale!r}')


class HogPeopleDetector:
    """
    OpenCV's default HOG + linear SVM pedestrian detector (offline, CPU).

    :param settings: detector settings.
    :raises ImportError: OpenCV (``opencv-python-headless``, part of the detector extra)
        is not installed.
    """

    def __init__(self, settings: HogSettings = HogSettings()) -> None:
        try:
            import cv2
        except ImportError as err:
            raise ImportError(f'HOG person boxes need OpenCV ({err}); install the extra with '
                              '`.venv/bin/pip install --no-deps -r requirements-nodeps.txt`'
                              ) from err
        self._cv2 = cv2
        self.settings = settings
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """
        Find upright people.

        :param image: [H, W, 3] uint8 image (RGB or BGR: HOG uses gradients only).
        :return: boxes [N, 4] ``(x_min, y_min, x_max, y_max)`` pixels of ``image``, clipped
            to it, and their SVM decision values [N], best first.
        :raises ValueError: the image is not [H, W, 3] uint8.
        """
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'image must be an [H, W, 3] uint8 array, got shape '
                             f'{list(image.shape)} dtype {image.dtype}')
        s = self.settings
        height, width = image.shape[:2]
        big = image if s.upscale == 1.0 else self._cv2.resize(
            image, (int(round(width * s.upscale)), int(round(height * s.upscale))),
            interpolation=self._cv2.INTER_LINEAR)
        stride = (s.win_stride_px, s.win_stride_px)
        rects, weights = self._hog.detectMultiScale(big, winStride=stride, padding=(8, 8),
                                                    scale=s.pyramid_scale)
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / s.upscale
        weights = np.asarray(weights, dtype=np.float64).ravel()
        boxes = np.stack((rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                          rects[:, 1] + rects[:, 3]), axis=1)
        boxes = np.clip(boxes, 0.0, [width - 1, height - 1, width - 1, height - 1])
        ok = weights >= s.min_weight
        boxes, weights = boxes[ok], weights[ok]
        keep = suppress_overlaps(boxes, weights, s.max_iou)
        return boxes[keep].astype(np.float32), weights[keep].astype(np.float32)


def people_in_boxes(pose_detector, image: np.ndarray, boxes: np.ndarray,
                    min_score: float = 0.5, max_iou: float = 0.5,
                    min_fill: float = 0.4) -> PoseDetections:
    """
    Run a one-person pose detector once per box; drop weak, partial and duplicate people.

    A box on a non-person (a car, a pole) can still get landmarks, but with a low mean
    confidence or bunched in a small part of the box; overlapping boxes often hold the
    same person.

    :param pose_detector: a ``MediaPipePoseDetector`` (one person per box).
    :param image: [H, W, 3] uint8 RGB.
    :param boxes: [N, 4] person boxes ``(x_min, y_min, x_max, y_max)``, pixels.
    :param min_score: people whose mean keypoint confidence is below this are dropped.
    :param max_iou: of two people whose keypoint boxes overlap more than this, the one
        with the lower score is dropped.
    :param min_fill: people whose confident keypoints span less than this fraction of
        their search box's height are dropped.
    :return: the people kept, best first.
    """
    people = []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        found = pose_detector.detect(image, boxes=box[None])
        if found.num_people == 0 or found.scores[0] < min_score:
            continue
        person_h = found.boxes[0, 3] - found.boxes[0, 1]
        if person_h < min_fill * (box[3] - box[1]):
            continue
        people.append(found)
    if not people:
        return PoseDetections.empty()
    found = PoseDetections(*(np.concatenate([getattr(p, f.name) for p in people])
                             for f in dataclasses.fields(PoseDetections)))
    return found.select(suppress_overlaps(found.boxes, found.scores, max_iou))


def main(argv=None) -> int:
    """
    Count people per frame of a video: whole-frame MediaPipe vs. HOG boxes + MediaPipe.

    ``python -m scorehmr_ros.perception.boxes VIDEO [--stride K] [--max-frames N]
    [--upscale S]`` prints one line per frame and the means (a measurement, not a demo).
    """
    import argparse
    import sys
    import time

    from scorehmr_ros.perception import images
    from scorehmr_ros.perception.mediapipe_pose import MediaPipePoseDetector

    parser = argparse.ArgumentParser(prog='python -m scorehmr_ros.perception.boxes')
    parser.add_argument('video')
    parser.add_argument('--stride', type=int, default=20)
    parser.add_argument('--max-frames', type=int, default=10)
    parser.add_argument('--upscale', type=float, default=HogSettings.upscale)
    options = parser.parse_args(argv)
    hog = HogPeopleDetector(HogSettings(upscale=options.upscale))
    rows = []
    with MediaPipePoseDetector() as pose:
        for index, _, frame in images.iter_frames(options.video, options.max_frames,
                                                  options.stride):
            if frame is None:
                continue
            whole = pose.detect(frame).num_people
            started = time.perf_counter()
            boxes, _ = hog.detect(frame)
            hog_s = time.perf_counter() - started
            people = people_in_boxes(pose, frame, boxes).num_people
            rows.append((whole, len(boxes), people, hog_s, time.perf_counter() - started))
            sys.stdout.write(f'frame {index}: whole-frame MediaPipe {whole}, HOG boxes '
                             f'{len(boxes)}, people {people} ({hog_s:.2f} s HOG, '
                             f'{rows[-1][4]:.2f} s total)\n')
    if not rows:
        sys.stderr.write(f'{options.video}: no readable frame\n')
        return 1
    mean = np.mean(np.asarray(rows), axis=0)
    sys.stdout.write(f'{len(rows)} frames, per frame: whole-frame MediaPipe {mean[0]:.2f}, '
                     f'HOG boxes {mean[1]:.2f}, people {mean[2]:.2f} (min '
                     f'{min(r[2] for r in rows)}, max {max(r[2] for r in rows)}); '
                     f'{mean[3]:.2f} s HOG, {mean[4]:.2f} s total\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
