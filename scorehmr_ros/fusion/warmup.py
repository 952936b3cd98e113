"""
Warm-up of a fusion pipeline on synthetic frames, before the first real one.

With ``engine.compile`` the first refinements of each input shape build the compiled
graphs: seconds to minutes on a small CPU, during which a node would fall behind its
cameras (and, holding the interpreter lock, starve its input callbacks). Running a
synthetic person seen by every camera through the pipeline first builds the graphs of
that common case (a cold first frame, then warm frames with a full window); the
pipeline then forgets the synthetic tracks and counters.
"""

import logging
import time

import numpy as np
import torch

from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.fusion.calibration import CalibrationSet, CameraCalibration
from scorehmr_ros.fusion.pipeline import CameraView, FusionPipeline
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.synthetic_stream import frame_observations, make_stream, WORLD_FRAME

LOG = logging.getLogger(__name__)


class _Person:
    """A synthetic detection with the attributes the pipeline reads."""

    def __init__(self, view, layout: str):
        self.track_id = int(view.track_ids[0])
        self.keypoints = view.keypoints[0].copy()
        self.layout = layout
        self.init_rotmats = axis_angle_to_matrix(
            torch.from_numpy(view.init_pose_aa[0]).reshape(24, 3)).numpy()
        self.init_betas = view.init_betas[0]
        self.init_cam_t = view.init_cam_t[0]
        self.features = None
        self.score = 1.0


def warm_up(pipeline: FusionPipeline, frames: int) -> float:
    """
    Refine ``frames`` synthetic frames of one person seen by every camera, then reset.

    :param pipeline: the pipeline (its refiner keeps the compiled graphs).
    :param frames: number of frames (a window of W frames needs W + 1 to see every size).
    :return: seconds spent.
    """
    if frames < 1:
        raise ValueError(f'frames must be >= 1, got {frames!r}')
    started = time.perf_counter()
    refiner = pipeline.refiner
    layout = refiner.keypoint_cond_layout or 'body25'
    stream = make_stream(refiner.body, cameras=pipeline.cameras, num_people=1,
                         num_frames=frames, seed=0, image_hw=(480, 640), focal_px=600.0,
                         fps=30.0, keypoint_layout=layout)
    for frame in stream:
        views = [CameraView(v.camera, np.asarray(v.k), v.image.shape[:2],
                            [_Person(v, layout)], frame.stamp_ns) for v in frame.views]
        calibration = CalibrationSet(WORLD_FRAME, {
            v.camera: CameraCalibration(v.camera, v.frame_id, v.world_to_camera)
            for v in frame.views})
        pipeline.process(views, calibration)
    pipeline.reset()
    elapsed_s = time.perf_counter() - started
    LOG.info('warm-up: %d synthetic frame(s) of %d camera(s) in %.1f s', frames,
             len(pipeline.cameras), elapsed_s)
    return elapsed_s


def warm_up_refiner(refiner: Refiner, frames: int = 1) -> float:
    """
    Refine a synthetic person seen by one camera (the per-camera path's common shape).

    :param refiner: the refiner (keeps the compiled graphs).
    :param frames: refinements to run.
    :return: seconds spent.
    """
    if frames < 1:
        raise ValueError(f'frames must be >= 1, got {frames!r}')
    started = time.perf_counter()
    layout = refiner.keypoint_cond_layout or 'body25'
    stream = make_stream(refiner.body, cameras=('cam0',), num_people=1, num_frames=frames,
                         seed=0, image_hw=(480, 640), focal_px=600.0, fps=30.0,
                         keypoint_layout=layout)
    cond_dim = refiner.denoiser.config.total_cond_dim
    for frame in stream:
        refiner.refine(frame_observations(frame, cond_dim))
    elapsed_s = time.perf_counter() - started
    LOG.info('warm-up: %d synthetic single-view refinement(s) in %.1f s', frames, elapsed_s)
    return elapsed_s
