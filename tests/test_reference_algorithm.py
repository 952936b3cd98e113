"""
The engine against a literal, unoptimised transcription of Algorithm 1.

The oracle below follows DESIGN section 3 step by step the way the authors' code runs
it: a ``torch.optim.Adam`` on the camera translation that steps inside the guidance
function, the keypoint loss of converged samples zeroed in place, converged outputs
cached the first time, the whole state carried from one outer iteration to the next.
It shares no sampling code with the engine, so a drift in either shows up here.
"""

import math

import pytest
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import matrix_to_rot6d, rot6d_to_matrix
from scorehmr_ros.config import GuidanceConfig, RefinerConfig, SamplerConfig
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.scene import make_scene, SceneSpec

COND = 16


def oracle(net, body, obs, tau, dt, iters, early, kp_on, mv_on, temp_on,
           rho=(0.003, 0.005, 30.0), betas_range=None):
    """Algorithm 1 written out; returns (x0 [B, D], camera translation [B, 3])."""
    dtype = obs.init_rotmats.dtype
    steps = torch.linspace(0, 1000, 1001, dtype=torch.float64)
    f = torch.cos((steps / 1000 + 0.008) / 1.008 * math.pi * 0.5) ** 2
    betas_sched = torch.clip(1 - f[1:] / f[:-1], 0, 0.999)
    abar = torch.cumprod(1 - betas_sched, 0)
    # float32 coefficients, as the reference stores its schedule buffers.
    c_x = torch.sqrt(1 / abar).float().to(dtype)  # x0 = c_x * x_t - c_e * eps
    c_e = torch.sqrt(1 / abar - 1).float().to(dtype)
    sq1m = torch.sqrt(1 - abar).float().to(dtype)           # scales the guidance gradient
    move_sq = abar.float().sqrt().to(dtype)                 # DDIM moves: float32 math on abar
    move_sq1m = (1 - abar.float()).sqrt().to(dtype)

    b = obs.batch_size
    x = matrix_to_rot6d(obs.init_rotmats).reshape(b, 144)
    if betas_range is not None:
        lo, hi = betas_range
        x = torch.cat((x, 2 * (obs.init_betas - lo) / (hi - lo) - 1), 1)
    cond = obs.cond
    times = list(range(0, tau + 1, dt))
    up = list(zip(times[:-1], times[1:]))
    down = [(t1, t0) for t0, t1 in reversed(up)]

    cam = obs.init_cam_t.clone().requires_grad_(True)
    opt = torch.optim.Adam([cam], lr=0.01)
    kp = obs.keypoints_2d
    prev_loss = None
    cached_x = torch.zeros_like(x)
    cached_cam = torch.zeros_like(cam)

    def eps_of(x_t, t):
        return net(x_t, torch.full((b,), t, dtype=torch.long), cond)

    x_t = x.clone()
    x0 = x
    for _ in range(iters):
        for t, t_next in up:
            eps = eps_of(x_t, t)
            x0 = c_x[t] * x_t - c_e[t] * eps
            x_t = x0 * move_sq[t_next] + eps * move_sq1m[t_next]
        for t, t_next in down:
            eps = eps_of(x_t, t)
            mask = None
            with torch.enable_grad():
                leaf = x_t.detach().requires_grad_(True)
                x0_g = c_x[t] * leaf - c_e[t] * eps
                pose = x0_g[:, :144]
                loss = 0
                if kp_on:
                    if betas_range is not None:
                        lo, hi = betas_range
                        shape = 0.5 * (hi - lo) * (x0_g[:, 144:] + 1) + lo
                    else:
                        shape = obs.init_betas
                    rot = rot6d_to_matrix(pose.reshape(b, 24, 6))
                    joints = body.keypoints(body(rot, shape), 'body25')
                    p = joints + cam[:, None]
                    proj = (p[..., :2] / p[..., 2:] * obs.focal_px[:, None]
                            + obs.center_px[:, None])
                    r2 = (proj - kp[..., :2]) ** 2
                    gm = 1e4 * r2 / (1e4 + r2)
                    w = (1000 / obs.image_size.max(-1).values) ** 2
                    loss_kp = (w[:, None, None] * kp[..., 2:] ** 2 * gm).sum((1, 2))
                    if early:
                        cur = loss_kp.detach().clone()
                        if prev_loss is None:
                            mask = torch.zeros(b, dtype=torch.bool)
                        else:
                            rel = (prev_loss - cur).abs() / torch.max(
                                torch.max(prev_loss, cur), torch.ones(b, dtype=dtype))
                            mask = rel < 1e-5
                        prev_loss = cur
                        loss_kp[mask] = 0.0
                    opt.zero_grad()
                    loss_kp.sum().backward(retain_graph=True)
                    opt.step()
                    loss = rho[0] * loss_kp.sum()
                if mv_on:
                    bp = pose.reshape(b, 24, 6)[:, 1:]
                    spread = ((bp - bp.mean(0, keepdim=True)) ** 2).sum()
                    loss = loss + rho[1] * 300.0 ** 2 * spread
                if temp_on:
                    loss = loss + rho[2] * ((pose[1:] - pose[:-1]) ** 2).sum()
                grad = torch.autograd.grad(loss, leaf)[0]
            eps = eps + sq1m[t] * grad
            x0 = c_x[t] * x_t - c_e[t] * eps
            if mask is not None and mask.any():
                fresh = (cached_x.sum(-1) == 0) & mask
                cached_x[fresh] = x0[fresh]
                cached_cam[fresh] = cam.detach()[fresh]
            x_t = x0 * move_sq[t_next] + eps * move_sq1m[t_next]
    if early:
        fresh = cached_x.sum(-1) == 0
        cached_x[fresh] = x0[fresh]
        cached_cam[fresh] = cam.detach()[fresh]
        return cached_x, cached_cam
    return x0, cam.detach()


@pytest.fixture(scope='module')
def body64():
    return BodyModel.from_config(None).double()


CASES = {
    'keypoints_early_stop': dict(tau=12, dt=2, iters=3, early=True, kp_on=True, mv_on=False,
                                 temp_on=False),
    'keypoints': dict(tau=20, dt=4, iters=2, early=False, kp_on=True, mv_on=False,
                      temp_on=False),
    'multiview': dict(tau=100, dt=10, iters=2, early=False, kp_on=False, mv_on=True,
                      temp_on=False),
    'keypoints_temporal': dict(tau=12, dt=2, iters=2, early=False, kp_on=True, mv_on=False,
                               temp_on=True),
    'temporal': dict(tau=12, dt=4, iters=2, early=False, kp_on=False, mv_on=False,
                     temp_on=True),
}


@pytest.mark.parametrize('use_shape', [False, True])
@pytest.mark.parametrize('case', sorted(CASES))
def test_engine_equals_literal_algorithm(body64, case, use_shape):
    spec = CASES[case]
    torch.manual_seed(0)
    net = Denoiser(DenoiserConfig(cond_dim=COND, hidden_dim=64, use_shape=use_shape)).double()
    net.eval()
    obs = make_scene(body64, SceneSpec(num_people=4, cond_dim=COND), seed=11,
                     dtype=torch.float64).obs
    rule = 'relative' if spec['early'] else 'none'
    if spec['early']:
        # Keypoints far outside the image saturate the robust loss of row 0, so its
        # relative change drops below 1e-5 at once and early stopping acts on it.
        obs.keypoints_2d[0, :, :2] += 1e5
    cfg = RefinerConfig(
        dtype='float64',
        sampler=SamplerConfig(tau=spec['tau'], ddim_step=spec['dt'], outer_iters=spec['iters'],
                              early_stopping=rule),
        guidance=GuidanceConfig(keypoints=spec['kp_on'], multiview=spec['mv_on'],
                                temporal=spec['temp_on']))
    refiner = Refiner(cfg, denoiser=net, body=body64)
    result = refiner.refine(obs)
    with torch.no_grad():
        betas_range = (refiner.betas_min, refiner.betas_max) if use_shape else None
        want_x0, want_cam = oracle(net, body64, obs, betas_range=betas_range, **spec)
    assert torch.allclose(result.x0[:, 0], want_x0, atol=1e-9, rtol=0)
    if spec['kp_on']:
        assert torch.allclose(result.cam_t[:, 0], want_cam, atol=1e-9, rtol=0)
    if spec['early']:
        assert result.stop_step[0, 0] == 1 and (result.stop_step[1:] == -1).all()


def test_float32_engine_within_1e4_of_float64_oracle(body64):
    spec = CASES['keypoints_early_stop']
    torch.manual_seed(0)
    net = Denoiser(DenoiserConfig(cond_dim=COND, hidden_dim=64)).eval()
    obs64 = make_scene(body64, SceneSpec(num_people=3, cond_dim=COND), seed=12,
                       dtype=torch.float64).obs
    obs32 = make_scene(body64, SceneSpec(num_people=3, cond_dim=COND), seed=12).obs
    cfg = RefinerConfig(sampler=SamplerConfig(tau=spec['tau'], ddim_step=spec['dt'],
                                              outer_iters=spec['iters'], early_stopping='none'))
    result = Refiner(cfg, denoiser=net, body=BodyModel.from_config(None)).refine(obs32)
    with torch.no_grad():
        want_x0, _ = oracle(net.double(), body64, obs64, **dict(spec, early=False))
    assert torch.allclose(result.x0[:, 0].double(), want_x0, atol=1e-4, rtol=0)
