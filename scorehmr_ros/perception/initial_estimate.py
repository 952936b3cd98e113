"""
Initial body estimates from COCO-17 keypoints when no regressor runs.

Three starts, measured against each other in ``scorehmr_ros/models/MODEL_CARD.md``:

* ``rest``: the rest pose standing upright, facing toward or away from the camera (from
  the shoulders' and hips' left/right order), placed by a linear least-squares fit of its
  torso keypoints;
* ``prior``: poses sampled from a keypoint-conditioned prior (deterministic DDIM from
  noise, conditioned on the keypoint features, so the sample already has a global
  orientation in the camera frame), each placed by the same translation fit on all
  confident keypoints; the candidate with the lowest reprojection error wins, the rest
  pose being one of the candidates (so the prior start is never worse in 2D);
* ``landmarks3d``: the body posed by a bone-direction fit to 3D COCO-17 landmarks
  (MediaPipe's world landmarks, :func:`scorehmr_ros.perception.landmark_fit.fit_landmarks`),
  placed by the translation fit on all confident keypoints.

``method='auto'`` takes, per person, the candidate with the lowest reprojection error
among those available: the rest pose always, the prior samples when the refiner's denoiser
is conditioned on COCO-17 keypoint features (the shipped prior), the landmark fit when
landmarks are given.
"""

import logging
import math
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from scorehmr_ros.body.layouts import COCO17_JOINT_NAMES
from scorehmr_ros.body.rotations import rot6d_to_matrix
from scorehmr_ros.diffusion.denoiser import POSE_DIM
from scorehmr_ros.diffusion.schedule import CosineSchedule
from scorehmr_ros.perception.keypoint_features import keypoint_features
from scorehmr_ros.perception.landmark_fit import fit_landmarks
from scorehmr_ros.scene import camera_facing_orientation

LOG = logging.getLogger(__name__)

METHODS = ('auto', 'rest', 'prior', 'landmarks3d')
#: Keypoints whose rest-pose positions match a standing person (torso and head): they
#: place the rest body. Limbs are left out because the rest pose is a T-pose.
TORSO_KEYPOINTS = tuple(COCO17_JOINT_NAMES.index(n) for n in (
    'nose', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder', 'left_hip',
    'right_hip'))
#: Keypoints below this confidence are not fitted (MediaPipe's visibility scale).
MIN_KEYPOINT_CONF = 0.3
#: Assumed body height when only a box is known, metres.
PERSON_HEIGHT_M = 1.7
#: Closest plausible depth of the body's nearest keypoint, metres.
MIN_DEPTH_M = 0.3


class InitialEstimate(NamedTuple):
    """
    Per-person start of refinement (P people).

    :param rotmats: [P, 24, 3, 3] SMPL rotations, global orientation in the camera frame.
    :param betas: [P, 10] shape (zeros: the mean body).
    :param cam_t: [P, 3] body-to-camera translation, metres.
    """

    rotmats: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray


def initial_estimate(refiner_or_body, keypoints: np.ndarray, image_hw: Sequence[float],
                     focal_px: float, center_px: Optional[Sequence[float]] = None,
                     method: str = 'auto', num_samples: int = 16, ddim_step: int = 50,
                     seed: int = 0, landmarks: Optional[np.ndarray] = None
                     ) -> InitialEstimate:
    """
    Estimate bodies from COCO-17 keypoints without a regressor.

    :param refiner_or_body: a :class:`~scorehmr_ros.refiner.Refiner` (needed for
        ``prior``) or a :class:`~scorehmr_ros.body.model.BodyModel` (``rest`` only).
    :param keypoints: [P, 17, 3] COCO-17 ``(x_px, y_px, conf)``; confidences below
        :data:`MIN_KEYPOINT_CONF` are ignored.
    :param image_hw: (height, width), pixels.
    :param focal_px: focal length, pixels.
    :param center_px: principal point (x, y), pixels (default: the image centre).
    :param method: ``auto``, ``rest`` or ``prior`` (see the module docstring).
    :param num_samples: prior samples per person (``prior``).
    :param ddim_step: DDIM step of the sampling from T = 1000 (``prior``; 50: 20 steps).
    :param seed: seed of the sampling noise (``prior``).
    :param landmarks: optional [P, 17, 4] 3D COCO-17 landmarks ``(x, y, z, conf)`` in
        camera-aligned axes (MediaPipe's world landmarks, ``PoseDetections.world_keypoints``);
        needed by ``landmarks3d``, a candidate of ``auto`` when given.
    :return: rotations [P, 24, 3, 3], shape [P, 10], translation [P, 3] (float64).
    """
    if method not in METHODS:
        raise ValueError(f'initial_estimate: method must be one of {METHODS}, got {method!r}')
    kp = _clean_keypoints(keypoints)
    if landmarks is not None:
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (kp.shape[0], 17, 4):
            raise ValueError(f'initial_estimate: landmarks must be [P, 17, 4] with P = '
                             f'{kp.shape[0]} (as the keypoints), got {list(landmarks.shape)}')
    elif method == 'landmarks3d':
        raise ValueError('initial_estimate: method landmarks3d needs landmarks [P, 17, 4] '
                         '(PoseDetections.world_keypoints)')
    body = getattr(refiner_or_body, 'body', refiner_or_body)
    refiner = refiner_or_body if hasattr(refiner_or_body, 'denoiser') else None
    center = (np.array([float(image_hw[1]) / 2.0, float(image_hw[0]) / 2.0])
              if center_px is None else np.asarray(center_px, dtype=np.float64))
    use_prior = method == 'prior' or (method == 'auto' and refiner is not None
                                      and prior_available(refiner))
    rest = rest_pose_estimate(body, kp, focal_px, center)
    if method == 'rest' or kp.shape[0] == 0:
        return rest
    if method == 'landmarks3d':
        return landmark_estimate(body, kp, landmarks, focal_px, center,
                                 fallback_root=rest.rotmats[:, 0])
    if use_prior and (refiner is None or not prior_available(refiner)):
        raise ValueError('initial_estimate: method prior needs a refiner whose denoiser is '
                         'conditioned on coco17 keypoint features (e.g. model.checkpoint: '
                         'builtin:mocap_prior_coco17)')
    # Candidates [P, S, ...]; the rest pose first, so that it stays on ties and for a
    # person without confident keypoints (NaN errors).
    rest_err = reprojection_error_px(body, rest.rotmats, rest.betas, rest.cam_t, kp,
                                     focal_px, center)
    cand_rot, cand_t = [rest.rotmats[:, None]], [rest.cam_t[:, None]]
    cand_err = [rest_err[:, None]]
    if use_prior:
        cands = prior_candidates(refiner, kp, focal_px, center, num_samples, ddim_step, seed)
        cand_rot.append(cands['rotmats'])
        cand_t.append(cands['cam_t'])
        cand_err.append(cands['error_px'])
    if method == 'auto' and landmarks is not None:
        fit = landmark_estimate(body, kp, landmarks, focal_px, center,
                                fallback_root=rest.rotmats[:, 0])
        cand_rot.append(fit.rotmats[:, None])
        cand_t.append(fit.cam_t[:, None])
        cand_err.append(reprojection_error_px(body, fit.rotmats, fit.betas, fit.cam_t, kp,
                                              focal_px, center)[:, None])
    cand_rot, cand_t = np.concatenate(cand_rot, 1), np.concatenate(cand_t, 1)
    cand_err = np.concatenate(cand_err, 1)
    best = np.argmin(np.where(np.isnan(cand_err), np.inf, cand_err), axis=1)
    rows = np.arange(kp.shape[0])
    return InitialEstimate(cand_rot[rows, best], rest.betas, cand_t[rows, best])


def prior_available(refiner) -> bool:
    """
    Say whether a refiner's denoiser is conditioned on COCO-17 keypoint features.

    :param refiner: a :class:`~scorehmr_ros.refiner.Refiner`.
    :return: True for the shipped prior and other ``--cond keypoints`` coco17 checkpoints.
    """
    return getattr(refiner, 'keypoint_cond_layout', None) == 'coco17'


def rest_pose_estimate(body, keypoints: np.ndarray, focal_px: float,
                       center_px: Sequence[float]) -> InitialEstimate:
    """
    Rest pose facing the camera (or away from it), placed on the torso keypoints.

    :param body: the body model.
    :param keypoints: [P, 17, 3] COCO-17 keypoints, unconfident ones with confidence 0.
    :param focal_px: focal length, pixels.
    :param center_px: principal point (x, y), pixels.
    :return: the estimate.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    p = kp.shape[0]
    # Facing the camera, the person's left shoulder is on the image's right.
    ls, rs = COCO17_JOINT_NAMES.index('left_shoulder'), COCO17_JOINT_NAMES.index('right_shoulder')
    lh, rh = COCO17_JOINT_NAMES.index('left_hip'), COCO17_JOINT_NAMES.index('right_hip')
    side = (kp[:, ls, 0] - kp[:, rs, 0]) + (kp[:, lh, 0] - kp[:, rh, 0])
    yaw = torch.tensor(np.where(side >= 0, 0.0, math.pi))
    rotmats = torch.eye(3, dtype=torch.float64).repeat(p, 24, 1, 1)
    if p:
        rotmats[:, 0] = camera_facing_orientation(yaw)
    betas = np.zeros((p, 10))
    joints = body_keypoints(body, rotmats.numpy(), betas)
    cam_t = np.stack([fit_translation(joints[i], kp[i], focal_px, center_px, TORSO_KEYPOINTS)
                      for i in range(p)]) if p else np.zeros((0, 3))
    return InitialEstimate(rotmats.numpy(), betas, cam_t)


def landmark_estimate(body, keypoints: np.ndarray, landmarks: np.ndarray, focal_px: float,
                      center_px: Sequence[float],
                      fallback_root: Optional[np.ndarray] = None) -> InitialEstimate:
    """
    Body posed by the bone-direction fit to 3D landmarks, placed on the 2D keypoints.

    :param body: the body model.
    :param keypoints: [P, 17, 3] COCO-17 keypoints, unconfident ones with confidence 0.
    :param landmarks: [P, 17, 4] 3D COCO-17 landmarks ``(x, y, z, conf)``, camera-aligned
        axes (x right, y down, z ahead); landmarks below :data:`MIN_KEYPOINT_CONF` are
        missing.
    :param focal_px: focal length, pixels.
    :param center_px: principal point (x, y), pixels.
    :param fallback_root: [P, 3, 3] global orientation where the torso landmarks are
        missing (e.g. the rest estimate's).
    :return: the estimate (betas zero).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    p = kp.shape[0]
    rest_kp = body_keypoints(body, np.tile(np.eye(3), (1, 24, 1, 1)), np.zeros((1, 10)))[0]
    rotmats, _ = fit_landmarks(rest_kp, landmarks, MIN_KEYPOINT_CONF, fallback_root)
    betas = np.zeros((p, 10))
    joints = body_keypoints(body, rotmats, betas)
    all_kp = tuple(range(17))
    cam_t = np.stack([fit_translation(joints[i], kp[i], focal_px, center_px, all_kp)
                      for i in range(p)]) if p else np.zeros((0, 3))
    return InitialEstimate(rotmats, betas, cam_t)


def prior_candidates(refiner, keypoints: np.ndarray, focal_px: float,
                     center_px: Sequence[float], num_samples: int = 8, ddim_step: int = 50,
                     seed: int = 0) -> dict:
    """
    Sample poses from the keypoint-conditioned prior and place each on the keypoints.

    Deterministic DDIM (eta = 0) from ``x_T ~ N(0, I)`` down to 0 along
    ``T-1, T-1-ddim_step, ..., 0``, conditioned on the keypoint features of each person.

    :param refiner: refiner with a COCO-17 keypoint-conditioned denoiser.
    :param keypoints: [P, 17, 3] COCO-17 keypoints, unconfident ones with confidence 0.
    :param focal_px: focal length, pixels.
    :param center_px: principal point (x, y), pixels.
    :param num_samples: S samples per person.
    :param ddim_step: DDIM step size.
    :param seed: noise seed.
    :return: ``rotmats`` [P, S, 24, 3, 3], ``cam_t`` [P, S, 3] and ``error_px`` [P, S]
        (mean reprojection error after the translation fit; NaN without keypoints).
    """
    if num_samples < 1 or ddim_step < 1:
        raise ValueError(f'prior_candidates: num_samples and ddim_step must be >= 1, got '
                         f'{num_samples} and {ddim_step}')
    kp = np.asarray(keypoints, dtype=np.float64)
    p, s = kp.shape[0], num_samples
    denoiser = refiner.denoiser
    param = next(denoiser.parameters())
    device, dtype = param.device, param.dtype
    schedule = getattr(refiner, 'schedule', None) or CosineSchedule()
    schedule = schedule.to(device)
    cond = keypoint_features(torch.tensor(kp)).to(device, dtype)
    cond = cond.repeat_interleave(s, dim=0)
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(p * s, denoiser.diffusion_dim, generator=gen, dtype=torch.float64)
    x_t = x_t.to(device, dtype)
    steps = list(range(schedule.num_timesteps - 1, -1, -ddim_step))
    if steps[-1] != 0:
        steps.append(0)
    with torch.no_grad():
        x0 = x_t
        for t, t_next in zip(steps[:-1], steps[1:]):
            tt = torch.full((p * s,), t, device=device, dtype=torch.long)
            eps = denoiser(x_t, tt, cond)
            # Near T, x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) divides by ~5e-5: clip
            # it to the range of 6D entries (unit vectors) and take the matching eps.
            x0 = schedule.predict_x0(x_t, t, eps).clamp(-1.0, 1.0)
            eps = ((x_t - schedule.sqrt_alphas_cumprod[t] * x0)
                   / schedule.sqrt_one_minus_alphas_cumprod[t])
            x_t = schedule.ddim_move(x0, eps, t_next)
        tt = torch.zeros(p * s, device=device, dtype=torch.long)
        x0 = schedule.predict_x0(x_t, 0, denoiser(x_t, tt, cond))
        rotmats = rot6d_to_matrix(x0[:, :POSE_DIM].reshape(-1, 24, 6)).double().cpu().numpy()
    betas = np.zeros((p * s, 10))
    joints = body_keypoints(refiner.body, rotmats, betas).reshape(p, s, 17, 3)
    rotmats = rotmats.reshape(p, s, 24, 3, 3)
    cam_t = np.zeros((p, s, 3))
    error = np.full((p, s), np.nan)
    all_kp = tuple(range(17))
    for i in range(p):
        for j in range(s):
            cam_t[i, j] = fit_translation(joints[i, j], kp[i], focal_px, center_px, all_kp)
            error[i, j] = _mean_error(joints[i, j] + cam_t[i, j], kp[i], focal_px, center_px)
    return {'rotmats': rotmats, 'cam_t': cam_t, 'error_px': error}


def fit_translation(joints: np.ndarray, kp: np.ndarray, focal_px: float,
                    center_px: Sequence[float], use: Sequence[int]) -> np.ndarray:
    """
    Find the translation that projects body keypoints onto observed ones.

    Linear least squares on ``f (X + tx) = (u - cx) (Z + tz)`` (and the same for y),
    weighted by confidence, over the confident keypoints among ``use``; falls back to the
    box height of the keypoints and a 1.7 m person when fewer than 3 are confident or the
    fit puts the body behind (or within 0.3 m of) the camera.

    :param joints: [17, 3] body keypoints in the body frame (root-relative), metres.
    :param kp: [17, 3] observed ``(x_px, y_px, conf)``.
    :param focal_px: focal length, pixels.
    :param center_px: principal point (x, y), pixels.
    :param use: keypoint indices that may be fitted.
    :return: [3] translation, metres.
    """
    center = np.asarray(center_px, dtype=np.float64)
    idx = [k for k in use if kp[k, 2] > 0]
    if len(idx) >= 3:
        rows, rhs = [], []
        for k in idx:
            w = kp[k, 2]
            for axis in (0, 1):
                d = kp[k, axis] - center[axis]
                row = np.zeros(3)
                row[axis], row[2] = focal_px, -d
                rows.append(w * row)
                rhs.append(w * (d * joints[k, 2] - focal_px * joints[k, axis]))
        t, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
        if np.all(np.isfinite(t)) and t[2] + joints[:, 2].min() > MIN_DEPTH_M:
            return t
    seen = kp[kp[:, 2] > 0]
    box_h = float(np.ptp(seen[:, 1])) if len(seen) >= 2 else 0.0
    z = focal_px * PERSON_HEIGHT_M / box_h if box_h > 1.0 else 5.0
    mid = seen[:, :2].mean(0) if len(seen) else center
    return np.array([(mid[0] - center[0]) * z / focal_px, (mid[1] - center[1]) * z / focal_px,
                     z])


def body_keypoints(body, rotmats: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """
    COCO-17 keypoints of posed bodies in the body frame.

    :param body: the body model.
    :param rotmats: [N, 24, 3, 3] rotations.
    :param betas: [N, 10] shape.
    :return: [N, 17, 3] metres, float64.
    """
    if len(rotmats) == 0:
        return np.zeros((0, 17, 3))
    param = next(body.buffers())
    with torch.no_grad():
        out = body(torch.as_tensor(rotmats).to(param.device, param.dtype),
                   torch.as_tensor(betas).to(param.device, param.dtype))
        return body.keypoints(out, 'coco17').double().cpu().numpy()


def reprojection_error_px(body, rotmats: np.ndarray, betas: np.ndarray, cam_t: np.ndarray,
                          keypoints: np.ndarray, focal_px: float,
                          center_px: Sequence[float]) -> np.ndarray:
    """
    Mean pixel distance of projected body keypoints to the confident observations.

    :param body: the body model.
    :param rotmats: [P, 24, 3, 3] rotations.
    :param betas: [P, 10] shape.
    :param cam_t: [P, 3] translation, metres.
    :param keypoints: [P, 17, 3] COCO-17 observations (confidence 0: ignored).
    :param focal_px: focal length, pixels.
    :param center_px: principal point (x, y), pixels.
    :return: [P] pixels (NaN for a person without confident keypoints).
    """
    joints = body_keypoints(body, rotmats, betas) + np.asarray(cam_t)[:, None]
    kp = np.asarray(keypoints, dtype=np.float64)
    return np.array([_mean_error(joints[i], kp[i], focal_px, center_px)
                     for i in range(len(kp))])


def _mean_error(joints_cam: np.ndarray, kp: np.ndarray, focal_px: float,
                center_px: Sequence[float]) -> float:
    valid = kp[:, 2] > 0
    if not valid.any():
        return float('nan')
    z = np.maximum(joints_cam[valid, 2], 1e-6)
    proj = focal_px * joints_cam[valid, :2] / z[:, None] + np.asarray(center_px)
    return float(np.linalg.norm(proj - kp[valid, :2], axis=1).mean())


def _clean_keypoints(keypoints: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    kp = np.array(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise ValueError(f'initial_estimate: keypoints must be [P, 17, 3] COCO-17, got '
                         f'{list(kp.shape)}')
    bad = ~np.isfinite(kp).all(axis=-1) | (kp[..., 2] < MIN_KEYPOINT_CONF)
    kp[bad] = 0.0
    return kp
