"""Calibrated multi-view guidance in the fused, compiled loop: parity with the eager path."""

import dataclasses

import pytest
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import matrix_to_rot6d
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
from scorehmr_ros.guidance.fused_loop import FusedKeypointLoop, initial_state
from scorehmr_ros.observations import Observations
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.synthetic_stream import frame_observations, make_stream

COND = 16
FRAMES = 3
VIEWS = 3
ENGINE = {'backend': 'folded', 'body': 'joints'}
#: the row of person 1, frame 1, view 2: no confident keypoint (its view drops out)
BLIND_ROW = 1 * FRAMES * VIEWS + 1 * VIEWS + 2


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None)


@pytest.fixture(scope='module')
def denoiser():
    torch.manual_seed(0)
    return Denoiser(DenoiserConfig(cond_dim=COND, hidden_dim=32)).eval()


@pytest.fixture(scope='module')
def scene(body) -> Observations:
    """
    Two people, three frames, three calibrated views, as one window call.

    Rows are person-major, then frame, then view; one group per (person, frame), chained
    along the frames by ``frame_prev``. Person 0's keypoints are far off in every view, so
    its saturated robust loss stops at once; person 1 keeps moving. One view row of
    person 1 has no confident keypoint. Frozen targets near the start pull every frame.
    """
    frames = make_stream(body, cameras=('cam0', 'cam1', 'cam2'), num_people=2,
                         num_frames=FRAMES, image_hw=(480, 640), focal_px=600.0,
                         keypoint_noise_px=2.0, pose_motion_rad=0.2)
    parts = [frame_observations(frames[k], COND, people=[p]) for p in (0, 1)
             for k in range(FRAMES)]
    cat = {field.name: torch.cat([getattr(o, field.name) for o in parts])
           for field in dataclasses.fields(Observations)
           if isinstance(getattr(parts[0], field.name), torch.Tensor)}
    rows = torch.arange(len(parts) * VIEWS)
    group = rows // VIEWS
    first = (group % FRAMES) == 0
    cat['view_group'] = group
    cat['frame_prev'] = torch.where(first, torch.full_like(rows, -1), rows - VIEWS)
    cat['keypoints_2d'][:FRAMES * VIEWS, :, :2] += 1e4
    cat['keypoints_2d'][BLIND_ROW, :, 2] = 0.0
    gen = torch.Generator().manual_seed(3)
    start_6d = matrix_to_rot6d(cat['init_rotmats']).reshape(-1, 144)
    cat['temporal_target_6d'] = start_6d + 0.05 * torch.randn(start_6d.shape, generator=gen)
    cat['temporal_target_weight'] = torch.rand(rows.shape[0], generator=gen)
    return Observations(keypoint_layout=parts[0].keypoint_layout, **cat)


def config(compile_: bool, tau: int, num_samples: int = 1, **guidance) -> RefinerConfig:
    guide = {'multiview': True, 'multiview_mode': 'calibrated'}
    guide.update(guidance)
    return RefinerConfig().replace(
        engine=dict(ENGINE, compile=compile_), guidance=guide,
        sampler={'tau': tau, 'ddim_step': 2, 'outer_iters': 2, 'num_samples': num_samples,
                 'early_stopping': 'relative'})


def assert_same(got, want):
    assert got.info['guided_steps'] == want.info['guided_steps']
    assert torch.equal(got.stop_step, want.stop_step)
    assert torch.equal(got.refined, want.refined)
    torch.testing.assert_close(got.x0, want.x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.cam_t, want.cam_t, atol=1e-5, rtol=0)
    # A loss of residuals of a few pixels on projections of hundreds of pixels: the
    # projections' float32 rounding (x * f + c here, a matrix product there) is ~1e-5 of
    # the loss.
    torch.testing.assert_close(got.keypoint_loss, want.keypoint_loss, atol=1e-4, rtol=1e-4)
    for name in ('world_rotmats', 'world_t', 'world_pelvis'):
        torch.testing.assert_close(getattr(got.groups, name), getattr(want.groups, name),
                                   atol=1e-5, rtol=0)
    assert torch.equal(got.groups.num_views, want.groups.num_views)


@pytest.mark.parametrize('case', [
    {'calibrated_loss': 'mean', 'temporal': True, 'terms': 'window'},
    {'calibrated_loss': 'sum', 'temporal': False, 'terms': 'target', 'num_samples': 2},
    {'calibrated_loss': 'mean', 'temporal': True, 'terms': 'both',
     'optimize_camera': False},
])
def test_fused_calibrated_loop_matches_the_eager_path(body, denoiser, scene, case):
    # The fused step's multi-view objective, early stopping and temporal terms against the
    # eager calibrated path, through Refiner.refine. The fused loop runs uncompiled (same
    # Python step; the compiled graph is checked below).
    case = dict(case)
    terms, num_samples = case.pop('terms'), case.pop('num_samples', 1)
    obs = scene if terms != 'window' else dataclasses.replace(
        scene, temporal_target_6d=None, temporal_target_weight=None)
    eager = Refiner(config(False, 10, num_samples, **case), denoiser=denoiser,
                    body=body).refine(obs)
    cfg = config(True, 10, num_samples, **case)
    refiner = Refiner(cfg, denoiser=denoiser, body=body)
    loop = FusedKeypointLoop(refiner.schedule, refiner._folded(), refiner.joints_body,
                             'body25', cfg.guidance, 'relative', cfg.sampler.early_stop_tol,
                             compile=False, steps_per_call=5)
    refiner._fused_loops[('calibrated', 'body25', 'relative')] = loop
    fused = refiner.refine(obs)
    assert loop.checked_signatures, 'the fused loop did not run'
    assert fused.info['multiview_mode'] == 'calibrated' and fused.info['groups'] == 6
    assert_same(fused, eager)
    # Person 0 (saturated) stops, person 1 does not; its blind view adds no loss.
    persons = eager.stop_step.reshape(2, -1)
    assert (persons[0] >= 0).all() and (persons[1] < 0).all()
    loss = fused.keypoint_loss.reshape(-1, num_samples)
    assert (loss[BLIND_ROW] == 0).all() and (loss[FRAMES * VIEWS:BLIND_ROW] > 0).all()
    assert fused.groups.num_views.tolist() == [3, 3, 3, 3, 2, 3]
    # The temporal terms really acted: without them the result is elsewhere.
    plain_cfg = dataclasses.replace(cfg, guidance=dataclasses.replace(cfg.guidance,
                                                                      temporal=False))
    plain = Refiner(plain_cfg, denoiser=denoiser, body=body)
    plain._fused_loops.update(refiner._fused_loops)
    plain = plain.refine(dataclasses.replace(obs, temporal_target_6d=None,
                                             temporal_target_weight=None))
    assert (plain.x0 - fused.x0).abs().max() > 1e-3


def test_fused_calibrated_loop_checks_the_multiview_entries(body, denoiser, scene):
    cfg = config(True, 4)
    refiner = Refiner(cfg, denoiser=denoiser, body=body)
    loop = FusedKeypointLoop(refiner.schedule, refiner._folded(), refiner.joints_body,
                             'body25', cfg.guidance, 'relative', 1e-5, compile=False)
    n = 2
    kp = {'target': torch.zeros(n, 25, 2), 'conf': torch.ones(n, 25),
          'focal': torch.ones(n, 2), 'center': torch.zeros(n, 2), 'size': torch.ones(n, 2),
          'row_state': torch.zeros(n, dtype=torch.long)}
    state = initial_state(torch.zeros(1, 144), torch.zeros(1, 3), num_rows=n)
    with pytest.raises(ValueError, match='multi-view guidance needs all of'):
        loop.guided_sweep(state, [(4, 2), (2, 0)], None, None, kp)


def test_compiled_calibrated_loop_matches_eager(body, denoiser, scene):
    # One compilation (~1 min): the window and the frozen targets at once, the view mean,
    # called twice (the second call skips the guards of a checked signature).
    guidance = {'calibrated_loss': 'mean', 'temporal': True}
    eager = Refiner(config(False, 6, **guidance), denoiser=denoiser, body=body).refine(scene)
    refiner = Refiner(config(True, 6, **guidance), denoiser=denoiser, body=body)
    for _ in range(2):
        fused = refiner.refine(scene)
        assert_same(fused, eager)
    assert (eager.stop_step >= 0).any() and (eager.stop_step < 0).any()
    assert list(refiner._fused_loops) == [('calibrated', 'body25', 'relative')]
