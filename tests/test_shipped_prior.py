"""The shipped small mocap prior: file, meta, builtin name, keypoint features, quality."""

import math
import os

import numpy as np
import pytest
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix, matrix_to_rot6d, rot6d_to_matrix
from scorehmr_ros.config import load_config
from scorehmr_ros.diffusion.checkpoint import (
    builtin_checkpoints, BUILTIN_DIR, CheckpointError, load_denoiser, resolve_checkpoint)
from scorehmr_ros.guidance.camera import perspective_project
from scorehmr_ros.observations import ObservationError, Observations
from scorehmr_ros.perception.initial_estimate import (
    initial_estimate, prior_candidates, reprojection_error_px)
from scorehmr_ros.perception.keypoint_features import keypoint_features
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.scene import camera_facing_orientation

NAME = 'builtin:mocap_prior_coco17'
PATH = os.path.join(BUILTIN_DIR, 'mocap_prior_coco17.pt')
FOCAL_PX, HW = 1000.0, (480, 640)
CENTER = np.array([320.0, 240.0])


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None)


@pytest.fixture(scope='module')
def prior(body):
    return Refiner(load_config(None, {'model.checkpoint': NAME}), body=body)


@pytest.fixture(scope='module')
def random_refiner(body):
    return Refiner(load_config(None, {'model.checkpoint': '', 'model.cond_dim': 51}), body=body)


def people(body, n, seed):
    """
    Upright people with arms down and bent limbs (the kind of pose the prior has seen).

    :return: rotations [n, 24, 3, 3], translations [n, 3] and COCO-17 keypoints [n, 17, 3].
    """
    gen = torch.Generator().manual_seed(seed)
    aa = 0.12 * torch.randn(n, 24, 3, generator=gen, dtype=torch.float64)
    aa[:, 16, 2] -= 1.2          # left shoulder: arm down
    aa[:, 17, 2] += 1.2          # right shoulder
    aa[:, 4, 0] += 0.4 * torch.rand(n, generator=gen, dtype=torch.float64)   # knees
    aa[:, 5, 0] += 0.4 * torch.rand(n, generator=gen, dtype=torch.float64)
    aa[:, 18, 1] -= 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)  # elbows
    aa[:, 19, 1] += 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    rot = axis_angle_to_matrix(aa)
    yaw = 0.8 * (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5)
    rot[:, 0] = camera_facing_orientation(yaw)
    trans = torch.tensor([[0.0, 0.2, 3.5]], dtype=torch.float64).repeat(n, 1)
    trans[:, 0] += 0.6 * (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5)
    with torch.no_grad():
        joints = body.keypoints(body(rot.float(), torch.zeros(n, 10)), 'coco17').double()
    f = torch.full((n, 2), FOCAL_PX, dtype=torch.float64)
    c = torch.tensor(CENTER).repeat(n, 1)
    xy = perspective_project(joints, trans, f, c)
    kp = torch.cat((xy, torch.ones(n, 17, 1, dtype=torch.float64)), -1)
    return rot, trans, kp.numpy()


def observations(kp, cond=None, layout='coco17'):
    n = kp.shape[0]
    return Observations(
        init_rotmats=torch.eye(3).repeat(n, 24, 1, 1), init_betas=torch.zeros(n, 10),
        cond=torch.zeros(n, 0) if cond is None else cond,
        init_cam_t=torch.tensor([[0.0, 0.0, 3.5]]).repeat(n, 1),
        keypoints_2d=torch.tensor(kp, dtype=torch.float32), keypoint_layout=layout,
        focal_px=torch.full((n, 2), FOCAL_PX), center_px=torch.tensor(CENTER).float().repeat(n, 1),
        image_size=torch.tensor([HW], dtype=torch.float32).repeat(n, 1))


def test_packaged_file_is_small_loads_safely_and_says_what_it_is():
    assert os.path.getsize(PATH) < 4 * 1024 * 1024
    raw = torch.load(PATH, map_location='cpu', weights_only=True)
    assert raw['format'] == 'scorehmr_ros.denoiser'
    denoiser, meta = load_denoiser(NAME)
    assert meta['cond_source'] == 'keypoints' and meta['keypoint_layout'] == 'coco17'
    assert denoiser.config.cond_dim == 51 and not denoiser.config.use_shape
    assert 'not the paper' in meta['description'] and 'anny' in meta['body']
    assert meta['cond_dropout'] > 0
    x = torch.randn(4, denoiser.diffusion_dim)
    eps = denoiser(x, torch.tensor([0, 10, 500, 999]), torch.randn(4, 51))
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_builtin_names_resolve_and_unknown_names_are_listed():
    assert 'mocap_prior_coco17' in builtin_checkpoints()
    assert resolve_checkpoint(NAME) == PATH
    assert resolve_checkpoint('/some/file.pt') == '/some/file.pt'
    with pytest.raises(CheckpointError, match='builtin:mocap_prior_coco17'):
        resolve_checkpoint('builtin:nope')


def test_refiner_builds_keypoint_features_and_rejects_other_layouts(prior, random_refiner, body):
    _, _, kp = people(body, 3, seed=1)
    kp[0, 3, 2] = 0.0                    # a missing keypoint
    assert prior.keypoint_cond_layout == 'coco17'
    assert 'small open mocap prior' in prior.describe_weights()
    obs = prior.keypoint_conditioning(observations(kp))
    expected = keypoint_features(torch.tensor(kp, dtype=torch.float32))
    assert torch.equal(obs.cond, expected)
    # A placeholder cond is replaced, so refine runs without features from the caller.
    cfg_small = {'sampler.tau': 4, 'sampler.ddim_step': 2, 'sampler.outer_iters': 1}
    small = Refiner(load_config(None, dict(cfg_small, **{'model.checkpoint': NAME})), body=body)
    result = small.refine(observations(kp))
    assert torch.isfinite(result.rotmats).all()
    with pytest.raises(ObservationError, match='conditioned on coco17'):
        prior.keypoint_conditioning(observations(np.zeros((1, 25, 3)), layout='body25'))
    # Random weights keep the caller's features.
    assert random_refiner.keypoint_cond_layout is None
    plain = observations(kp, cond=torch.ones(3, 51))
    assert random_refiner.keypoint_conditioning(plain) is plain


def _denoise_error_mm(refiner, rot, kp, t):
    """MPJPE (pelvis aligned) of the one-step x0 prediction from GT noised to ``t``."""
    x0 = matrix_to_rot6d(rot.float()).reshape(len(rot), -1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    x_t = refiner.schedule.q_sample(x0, t, noise)
    cond = keypoint_features(torch.tensor(kp, dtype=torch.float32))
    with torch.no_grad():
        eps = refiner.denoiser(x_t, torch.full((len(rot),), t), cond)
        pred = rot6d_to_matrix(refiner.schedule.predict_x0(x_t, t, eps).reshape(-1, 24, 6))
        joints = [refiner.body(r, torch.zeros(len(rot), 10)).joints45[:, :24]
                  for r in (pred, rot.float())]
    rel = [j - j[:, :1] for j in joints]
    return 1000.0 * float((rel[0] - rel[1]).norm(dim=-1).mean())


def test_prior_denoises_held_out_people_better_than_random_weights(prior, random_refiner,
                                                                   body):
    rot, _, kp = people(body, 16, seed=7)
    for t in (200, 500):
        trained = _denoise_error_mm(prior, rot, kp, t)
        untrained = _denoise_error_mm(random_refiner, rot, kp, t)
        assert trained < 0.5 * untrained, (t, trained, untrained)


def test_prior_samples_follow_the_keypoints(prior, random_refiner, body):
    """The best of a few prior samples reprojects closer than random-weight samples."""
    _, _, kp = people(body, 4, seed=11)
    errs = [np.nanmin(prior_candidates(r, kp, FOCAL_PX, CENTER, 8)['error_px'], axis=1)
            for r in (prior, random_refiner)]
    assert np.all(np.isfinite(errs[0]))
    assert errs[0].mean() < 0.6 * errs[1].mean(), errs


def test_initial_estimate_beats_the_rest_pose(prior, body):
    rot, trans, kp = people(body, 3, seed=5)
    rest = initial_estimate(prior, kp, HW, FOCAL_PX, method='rest')
    est = initial_estimate(prior, kp, HW, FOCAL_PX)          # auto: prior samples
    assert est.rotmats.shape == (3, 24, 3, 3) and est.betas.shape == (3, 10)
    assert est.cam_t.shape == (3, 3) and np.all(est.cam_t[:, 2] > 1.0)
    err_rest = reprojection_error_px(body, *rest, kp, FOCAL_PX, CENTER)
    err_prior = reprojection_error_px(body, *est, kp, FOCAL_PX, CENTER)
    assert np.all(err_prior < err_rest), (err_prior, err_rest)
    assert err_prior.mean() < 0.7 * err_rest.mean()
    # A body model alone gives the rest pose; prior without a trained refiner is an error.
    alone = initial_estimate(body, kp, HW, FOCAL_PX)
    assert np.allclose(alone.cam_t, rest.cam_t)
    with pytest.raises(ValueError, match='method prior needs'):
        initial_estimate(body, kp, HW, FOCAL_PX, method='prior')
    with pytest.raises(ValueError, match=r'\[P, 17, 3\]'):
        initial_estimate(prior, kp[:, :5], HW, FOCAL_PX)
    assert math.isfinite(float(err_prior.mean()))
