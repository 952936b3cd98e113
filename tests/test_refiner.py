"""Algorithm 1 end to end: invariants, guidance effects, early stopping, bad input."""

import logging

import pytest
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.config import GuidanceConfig, RefinerConfig, SamplerConfig
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
from scorehmr_ros.metrics import mpjpe_mm
from scorehmr_ros.observations import ObservationError
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.scene import make_scene, SceneSpec

COND = 16


class ConstantNoise(Denoiser):
    """A network whose eps ignores (x_t, t, c): DDIM inversion is then exactly undone."""

    def __init__(self, value: float = 0.0):
        super().__init__(DenoiserConfig(cond_dim=COND, hidden_dim=8, num_blocks=1))
        self.value = value

    def forward(self, x_t, t, cond):
        return torch.full_like(x_t, self.value)


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None)


def make_refiner(body, denoiser=None, **sections):
    cfg = RefinerConfig().replace(**sections)
    if denoiser is None:
        torch.manual_seed(0)
        denoiser = Denoiser(DenoiserConfig(cond_dim=COND, hidden_dim=64))
    return Refiner(cfg, denoiser=denoiser, body=body)


def scene(body, people=3, seed=0, **spec):
    return make_scene(body, SceneSpec(num_people=people, cond_dim=COND, **spec), seed=seed)


@pytest.mark.parametrize('value', [0.0, 0.7])
def test_unguided_inversion_and_sampling_reproduce_the_start(body, value):
    refiner = make_refiner(body, ConstantNoise(value), guidance=GuidanceConfig(keypoints=False),
                           sampler=SamplerConfig(tau=50, ddim_step=2, outer_iters=3))
    obs = scene(body).obs
    result = refiner.refine(obs)
    start = refiner.encode(obs.init_rotmats, obs.init_betas)
    # The state returns to the start at t = 0 after every outer iteration; the output is
    # the last one-step estimate x0_hat(x_0, eps), i.e. the start seen as a t = 0 sample.
    expected = refiner.schedule.predict_x0(start, 0, torch.full_like(start, value))
    assert torch.allclose(result.x0[:, 0], expected, atol=1e-5)
    if value == 0.0:
        assert torch.allclose(result.rotmats[:, 0], obs.init_rotmats, atol=1e-4)


def test_keypoint_guidance_lowers_2d_and_3d_error(body):
    # Pure guidance (a zero-noise prior): the keypoint loss alone must fit the people.
    refiner = make_refiner(body, ConstantNoise(0.0),
                           sampler=SamplerConfig(tau=50, ddim_step=2, outer_iters=4,
                                                 early_stopping='none'))
    sc = scene(body, people=3, seed=1)
    result = refiner.refine(sc.obs)
    before = refiner.reprojection_error_px(sc.obs.init_rotmats, sc.obs.init_betas,
                                           sc.obs.init_cam_t, sc.obs)
    after = refiner.reprojection_error_px(result.rotmats[:, 0], result.betas[:, 0],
                                          result.cam_t[:, 0], sc.obs)
    assert (after < 0.5 * before).all(), (before, after)
    gt = body(sc.gt_rotmats, sc.gt_betas).joints45[:, :24]
    start = body(sc.obs.init_rotmats, sc.obs.init_betas).joints45[:, :24]
    final = body(result.rotmats[:, 0], result.betas[:, 0]).joints45[:, :24]
    assert mpjpe_mm(final, gt).mean() < 0.8 * mpjpe_mm(start, gt).mean()
    # The camera translation moved toward the truth too.
    assert ((result.cam_t[:, 0] - sc.gt_cam_t).norm(dim=-1).mean()
            < (sc.obs.init_cam_t - sc.gt_cam_t).norm(dim=-1).mean())


def test_guidance_with_a_random_prior_still_fits_keypoints(body):
    refiner = make_refiner(body, sampler=SamplerConfig(tau=20, ddim_step=4, outer_iters=3))
    sc = scene(body, people=2, seed=2)
    result = refiner.refine(sc.obs)
    before = refiner.reprojection_error_px(sc.obs.init_rotmats, sc.obs.init_betas,
                                           sc.obs.init_cam_t, sc.obs)
    after = refiner.reprojection_error_px(result.rotmats[:, 0], result.betas[:, 0],
                                          result.cam_t[:, 0], sc.obs)
    assert (after < before).all()
    assert result.refined.all() and torch.isfinite(result.x0).all()


def test_early_stopping_freezes_converged_samples_only(body):
    sc = scene(body, people=3, seed=3, keypoint_noise_px=0.0, dropout=0.0)
    obs = sc.obs
    # Row 0 starts at the truth (fixed camera), so its keypoint loss is ~0 and constant: it
    # stops at the second guided step (the first has no previous loss). Rows 1-2 start
    # far away and keep improving.
    obs.init_rotmats[0] = sc.gt_rotmats[0]
    obs.init_cam_t[0] = sc.gt_cam_t[0]
    guidance = GuidanceConfig(optimize_camera=False)
    sampler = SamplerConfig(tau=10, ddim_step=2, outer_iters=2, early_stopping='relative')
    refiner = make_refiner(body, ConstantNoise(0.0), sampler=sampler, guidance=guidance)
    result = refiner.refine(obs)
    assert result.stop_step[0, 0].item() == 1
    assert (result.stop_step[1:, 0] == -1).all()
    free = make_refiner(body, ConstantNoise(0.0), guidance=guidance,
                        sampler=SamplerConfig(tau=10, ddim_step=2, outer_iters=2,
                                              early_stopping='none')).refine(obs)
    # Unstopped rows are computed exactly as without early stopping ...
    assert torch.equal(result.x0[1:], free.x0[1:])
    # ... and the stopped row kept its (already perfect) estimate.
    assert torch.allclose(result.rotmats[0, 0], sc.gt_rotmats[0], atol=1e-3)


def test_threshold_rule_stops_everything_with_a_huge_threshold(body):
    sampler = SamplerConfig(tau=10, ddim_step=2, outer_iters=1, early_stopping='threshold',
                            early_stop_tol=1e12)
    result = make_refiner(body, sampler=sampler).refine(scene(body, people=2).obs)
    assert (result.stop_step == 0).all()


def test_multiview_loss_pulls_views_together(body):
    sc = scene(body, people=3, seed=4)
    obs = sc.obs
    obs.view_group = torch.tensor([0, 0, 0])
    refiner = make_refiner(body, ConstantNoise(0.0),
                           guidance=GuidanceConfig(keypoints=False, multiview=True),
                           sampler=SamplerConfig(tau=100, ddim_step=10, outer_iters=2))
    result = refiner.refine(obs)

    def spread(rotmats):
        pose = rotmats[:, 1:].reshape(3, -1)
        return ((pose - pose.mean(0)) ** 2).sum()

    assert spread(result.rotmats[:, 0]) < 0.5 * spread(obs.init_rotmats)
    # Separate groups do not pull on each other.
    obs.view_group = torch.tensor([0, 1, 2])
    alone = refiner.refine(obs)
    assert torch.allclose(alone.rotmats[:, 0], obs.init_rotmats, atol=1e-4)


def test_temporal_loss_lowers_frame_to_frame_change(body):
    sc = scene(body, people=5, seed=5)
    refiner = make_refiner(body, ConstantNoise(0.0),
                           guidance=GuidanceConfig(keypoints=False, temporal=True),
                           sampler=SamplerConfig(tau=50, ddim_step=2, outer_iters=2))
    result = refiner.refine(sc.obs)

    def roughness(x):
        return ((x[1:] - x[:-1]) ** 2).sum()

    start = refiner.encode(sc.obs.init_rotmats, sc.obs.init_betas)
    assert roughness(result.x0[:, 0]) < 0.5 * roughness(start)


def test_same_inputs_and_seed_give_identical_outputs(body):
    sampler = SamplerConfig(tau=10, ddim_step=2, outer_iters=2, num_samples=3, seed=7)
    obs = scene(body, people=2).obs
    a = make_refiner(body, sampler=sampler).refine(obs)
    b = make_refiner(body, sampler=sampler).refine(obs)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.cam_t, b.cam_t)
    assert a.x0.shape == (2, 3, 144) and a.rotmats.shape == (2, 3, 24, 3, 3)
    # Noise samples differ from the mode and from each other.
    assert not torch.allclose(a.x0[:, 0], a.x0[:, 1])
    assert not torch.allclose(a.x0[:, 1], a.x0[:, 2])
    c = make_refiner(body, sampler=SamplerConfig(tau=10, ddim_step=2, outer_iters=2,
                                                 num_samples=3, seed=8)).refine(obs)
    assert torch.equal(c.x0[:, 0], a.x0[:, 0]) and not torch.equal(c.x0[:, 1], a.x0[:, 1])


def test_samples_are_independent_of_batching(body):
    sampler = SamplerConfig(tau=10, ddim_step=2, outer_iters=2)
    obs = scene(body, people=3).obs
    both = make_refiner(body, sampler=sampler).refine(obs)
    single = make_refiner(body, sampler=sampler).refine(_rows(obs, [1]))
    assert torch.allclose(both.x0[1], single.x0[0], atol=1e-5)


def _rows(obs, idx):
    fields = {}
    for name, value in vars(obs).items():
        fields[name] = value[idx] if isinstance(value, torch.Tensor) else value
    return type(obs)(**fields)


def test_nan_keypoints_count_as_missing_with_one_warning(body, caplog):
    obs = scene(body, people=2).obs
    obs.keypoints_2d[0, 3, 0] = float('nan')
    obs.keypoints_2d[1, 5, 2] = float('inf')
    obs.keypoints_2d[1, 6, 2] = -0.5
    refiner = make_refiner(body, sampler=SamplerConfig(tau=4, ddim_step=2, outer_iters=1))
    with caplog.at_level(logging.WARNING):
        result = refiner.refine(obs)
    warnings = [r for r in caplog.records if 'confidence 0' in r.getMessage()]
    assert len(warnings) == 1 and '3 keypoint' in warnings[0].getMessage()
    assert torch.isfinite(result.x0).all() and result.refined.all()


def test_sample_without_confident_keypoints_returns_its_start(body):
    obs = scene(body, people=2).obs
    obs.keypoints_2d[1, :, 2] = 0.0
    refiner = make_refiner(body, sampler=SamplerConfig(tau=4, ddim_step=2, outer_iters=1))
    result = refiner.refine(obs)
    assert result.refined.tolist() == [[True], [False]]
    assert torch.allclose(result.rotmats[1, 0], obs.init_rotmats[1], atol=1e-6)
    assert torch.equal(result.cam_t[1, 0], obs.init_cam_t[1])


@pytest.mark.parametrize('field,value,match', [
    ('keypoints_2d', torch.zeros(2, 17, 3), r'keypoints_2d: expected shape \[2, 25, 3\], got '
                                            r'\[2, 17, 3\]'),
    ('cond', torch.zeros(2, 5), r'cond: expected shape \[2, 16\], got \[2, 5\]'),
    ('init_betas', torch.zeros(2, 10, dtype=torch.long), 'init_betas: expected a floating'),
    ('init_rotmats', torch.zeros(2, 24, 3), r'init_rotmats: expected \[B, 24, 3, 3\]'),
    ('init_cam_t', None, 'init_cam_t: required for keypoint guidance'),
    ('keypoint_layout', 'openpose', 'keypoint_layout: expected one of'),
    ('cond', torch.full((2, 16), float('nan')), 'cond: contains NaN'),
    ('frame_prev', torch.tensor([0, 5]), 'frame_prev'),
])
def test_bad_inputs_raise_naming_the_field(body, field, value, match):
    obs = scene(body, people=2).obs
    setattr(obs, field, value)
    refiner = make_refiner(body, guidance=GuidanceConfig(temporal=True),
                           sampler=SamplerConfig(tau=4, ddim_step=2, outer_iters=1))
    with pytest.raises(ObservationError, match=match):
        refiner.refine(obs)


def test_result_is_finite_and_rotations_valid(body):
    result = make_refiner(body, sampler=SamplerConfig(tau=10, ddim_step=2,
                                                      outer_iters=1)).refine(scene(body).obs)
    r = result.rotmats.reshape(-1, 3, 3)
    eye = torch.eye(3).expand_as(r)
    assert torch.allclose(r.transpose(1, 2) @ r, eye, atol=1e-5)
    assert torch.isfinite(result.keypoint_loss).all()
