"""Fast path: folding, backends, ONNX export, joints-only body, and their parity."""

import dataclasses
import importlib.util
import logging
import os

import pytest
import torch

from scorehmr_ros import cli
from scorehmr_ros.backends import factory
from scorehmr_ros.backends.onnx_export import check_onnx, export_onnx, OnnxModelError
from scorehmr_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from scorehmr_ros.backends.torch_backends import TorchFoldedBackend, TorchReferenceBackend
from scorehmr_ros.body.kinematics import JointsOnlyBody, keypoints_from_joints45
from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.config import RefinerConfig, SamplerConfig
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
from scorehmr_ros.diffusion.folded import FoldedDenoiser
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.scene import make_scene, SceneSpec

CONFIGS = [DenoiserConfig(), DenoiserConfig(use_shape=True, shape_cond_dim=1536),
           DenoiserConfig(cond_dim=2048, use_shape=True)]
HAS_CUDA = torch.cuda.is_available()
HAS_TRT = importlib.util.find_spec('tensorrt') is not None


def net(cfg, seed=0):
    torch.manual_seed(seed)
    return Denoiser(cfg).eval()


@pytest.mark.parametrize('cfg', CONFIGS)
def test_folding_is_exact(cfg):
    ref, folded = net(cfg), None
    folded = FoldedDenoiser(ref)
    for n in (1, 3, 8, 64):
        x, c = torch.randn(n, cfg.diffusion_dim), torch.randn(n, cfg.total_cond_dim)
        prep = folded.prepare(c)
        for t in (0, 2, 50, 999):
            with torch.no_grad():
                want = ref(x, torch.full((n,), t), c)
                torch.testing.assert_close(folded(x, t, prep), want, atol=1e-5, rtol=0)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    out = {}
    for i, cfg in enumerate(CONFIGS[:2]):
        d = str(tmp_path_factory.mktemp(f'onnx{i}'))
        out[i] = (net(cfg), d, export_onnx(net(cfg), d))
    return out


@pytest.mark.parametrize('which', [0, 1])
def test_onnx_graphs_check_and_match_torch(exported, which):
    import onnxruntime as ort

    model, directory, paths = exported[which]
    cfg = model.config
    for key in ('denoiser', 'prepare', 'step'):
        assert check_onnx(paths[key])
    full = ort.InferenceSession(paths['denoiser'], providers=['CPUExecutionProvider'])
    backend = OnnxRuntimeBackend(directory)
    for n in (1, 3, 8, 64):
        x, c = torch.randn(n, cfg.diffusion_dim), torch.randn(n, cfg.total_cond_dim)
        t = torch.randint(0, 1000, (n,))
        with torch.no_grad():
            want = model(x, t, c)
        got, = full.run(None, {'x_t': x.numpy(), 't': t.numpy(), 'cond': c.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=0)
        prep = backend.prepare(c)
        with torch.no_grad():
            want17 = model(x, torch.full((n,), 17), c)
        torch.testing.assert_close(backend.eps(x, 17, prep), want17, atol=1e-5, rtol=0)


def test_start_up_export_leaves_no_temporary_files(tmp_path, monkeypatch):
    # A backend exported at start-up (engine.onnx_dir None) loads its graphs into memory
    # and removes the temporary folder: every node start used to leave ~90 MB behind.
    import tempfile

    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    model = net(DenoiserConfig(cond_dim=64))
    backend = OnnxRuntimeBackend.from_denoiser(model)
    assert list(tmp_path.iterdir()) == []
    cond, x = torch.randn(2, 64), torch.randn(2, 144)
    with torch.no_grad():
        want = model(x, torch.full((2,), 17), cond)
    torch.testing.assert_close(backend.eps(x, 17, backend.prepare(cond)), want, atol=1e-5,
                               rtol=0)


def test_bad_onnx_files_name_the_file_and_mismatch(exported, tmp_path):
    model, directory, paths = exported[0]
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'\x08\x07garbage')
    with pytest.raises(OnnxModelError, match='corrupt.onnx'):
        check_onnx(str(corrupt))
    with pytest.raises(OnnxModelError, match='exported for 3072 features.*expects 2048'):
        OnnxRuntimeBackend(directory, expect_cond_dim=2048)
    with pytest.raises(OnnxModelError, match='scorehmr_onnx.json'):
        OnnxRuntimeBackend(str(tmp_path))
    with pytest.raises(OnnxModelError, match='allow-list'):
        check_onnx(paths['step'], allowed_ops={'MatMul'})
    with pytest.raises(ValueError, match=r'cond must be \[N, 3072\]'):
        OnnxRuntimeBackend(directory).prepare(torch.zeros(2, 5))


def test_backend_fallback_names_what_is_missing(monkeypatch, caplog):
    real = importlib.util.find_spec
    missing = {'tensorrt', 'onnxruntime'}
    monkeypatch.setattr(factory.importlib.util, 'find_spec',
                        lambda name: None if name in missing else real(name))
    with caplog.at_level(logging.WARNING):
        backend = factory.make_backend('tensorrt', net(DenoiserConfig(cond_dim=8)))
    assert isinstance(backend, TorchFoldedBackend)
    text = ' '.join(r.getMessage() for r in caplog.records)
    assert "'tensorrt', which is not installed" in text and "falling back to 'folded'" in text


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None)


@pytest.mark.parametrize('dtype,atol', [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_joints_only_body_equals_full_mesh(body, dtype, atol):
    model = BodyModel.from_config(None, dtype=dtype)
    fast = JointsOnlyBody(model)
    gen = torch.Generator().manual_seed(0)
    rot = axis_angle_to_matrix(0.6 * torch.randn(6, 24, 3, generator=gen, dtype=dtype))
    betas = torch.randn(6, 10, generator=gen, dtype=dtype)
    rot.requires_grad_(True)
    ref = model(rot, betas).joints45
    out = fast(rot, fast.rest(betas))
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    # Same gradient for a keypoint loss (the guidance's use).
    target = torch.randn(6, 25, 3, generator=gen, dtype=dtype)
    g_ref, = torch.autograd.grad(((model.keypoints(model(rot, betas), 'body25') - target) ** 2)
                                 .sum(), rot)
    g_fast, = torch.autograd.grad(((keypoints_from_joints45(out, 'body25') - target) ** 2)
                                  .sum(), rot)
    torch.testing.assert_close(g_fast, g_ref, atol=100 * atol, rtol=0)


def _refine(body, denoiser, engine, obs, guidance=None, **sampler):
    cfg = RefinerConfig().replace(engine=engine, guidance=guidance or {}, sampler=dict(
        {'tau': 20, 'ddim_step': 2, 'outer_iters': 2}, **sampler))
    return Refiner(cfg, denoiser=denoiser, body=body).refine(obs)


@pytest.mark.parametrize('engine', [{'backend': 'folded', 'body': 'joints'},
                                    {'backend': 'onnxruntime', 'body': 'joints'},
                                    {'backend': 'folded', 'body': 'mesh'}])
def test_fast_path_refines_like_the_reference(body, engine):
    denoiser = net(DenoiserConfig())
    obs = make_scene(body, SceneSpec(num_people=3, cond_dim=3072), seed=3).obs
    ref = _refine(body, denoiser, {'backend': 'torch', 'body': 'mesh'}, obs,
                  early_stopping='none')
    fast = _refine(body, denoiser, engine, obs, early_stopping='none')
    torch.testing.assert_close(fast.x0, ref.x0, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.cam_t, ref.cam_t, atol=1e-4, rtol=0)


def test_export_cli_writes_checked_graphs(tmp_path):
    out = tmp_path / 'onnx'
    assert cli.main(['export', '--output-dir', str(out), '--set', 'model.cond_dim=64']) == 0
    for name in ('denoiser.onnx', 'prepare.onnx', 'step.onnx', 'scorehmr_onnx.json'):
        assert os.path.isfile(out / name)
    assert OnnxRuntimeBackend(str(out)).cond_dim == 64


@pytest.mark.skipif(not HAS_CUDA, reason='needs a CUDA device (none on this machine)')
def test_cuda_refinement_matches_cpu(body):
    denoiser = net(DenoiserConfig())
    obs = make_scene(body, SceneSpec(num_people=4, cond_dim=3072), seed=4).obs
    cfg = RefinerConfig(sampler=SamplerConfig(tau=20, ddim_step=2, outer_iters=2,
                                              early_stopping='none'))
    cpu = Refiner(cfg, denoiser=denoiser, body=body).refine(obs)
    gpu = Refiner(cfg.replace(device='cuda'), denoiser=net(DenoiserConfig()),
                  body=BodyModel.from_config(None)).refine(obs)
    torch.testing.assert_close(gpu.x0.cpu(), cpu.x0, atol=1e-4, rtol=0)


@pytest.mark.skipif(not HAS_CUDA, reason='needs a CUDA device (none on this machine)')
def test_cuda_graph_fused_loop_matches_cpu(body):
    # engine.compile on a CUDA device: the fused loop's calls are recorded as CUDA graphs
    # and replayed (two refine calls: the second replays); same result as the CPU loop.
    denoiser = net(DenoiserConfig())
    obs = make_scene(body, SceneSpec(num_people=4, cond_dim=3072), seed=4).obs
    cfg = RefinerConfig().replace(
        sampler={'tau': 10, 'ddim_step': 2, 'outer_iters': 2, 'early_stopping': 'none'},
        engine={'backend': 'folded', 'body': 'joints', 'compile': True})
    cpu = Refiner(cfg, denoiser=denoiser, body=body).refine(obs)
    gpu_refiner = Refiner(cfg.replace(device='cuda'), denoiser=net(DenoiserConfig()),
                          body=BodyModel.from_config(None))
    assert gpu_refiner.device.type == 'cuda'
    for _ in range(2):
        gpu = gpu_refiner.refine(obs)
        torch.testing.assert_close(gpu.x0.cpu(), cpu.x0, atol=1e-4, rtol=0)


@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA),
                    reason='TensorRT is not installable here (vendor index unreachable) '
                           'and needs a CUDA device')
def test_tensorrt_engine_matches_torch(tmp_path):
    from scorehmr_ros.backends.tensorrt_backend import TensorRTBackend

    model = net(DenoiserConfig()).cuda()
    backend = TensorRTBackend.from_denoiser(model, onnx_dir=str(tmp_path))
    ref = TorchReferenceBackend(model)
    for n in (1, 8, 64):
        x = torch.randn(n, 144, device='cuda')
        c = torch.randn(n, 3072, device='cuda')
        torch.testing.assert_close(backend.eps(x, 9, backend.prepare(c)),
                                   ref.eps(x, 9, ref.prepare(c)), atol=1e-4, rtol=0)


def test_compiled_keypoint_gradient_with_multiview_matches_eager(body):
    # Keypoints + multi-view consistency: the fused keypoint gradient inside the general
    # loop (the fused loop does not cover multi-view guidance).
    denoiser = net(DenoiserConfig())
    obs = make_scene(body, SceneSpec(num_people=2, cond_dim=3072), seed=5).obs
    engine = {'backend': 'folded', 'body': 'joints'}
    guidance = {'multiview': True}
    eager = _refine(body, denoiser, engine, obs, guidance, tau=6, outer_iters=2)
    fused = _refine(body, denoiser, dict(engine, compile=True), obs, guidance, tau=6,
                    outer_iters=2)
    torch.testing.assert_close(fused.x0, eager.x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused.cam_t, eager.cam_t, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match='engine.compile needs engine.body: joints'):
        Refiner(RefinerConfig().replace(engine={'compile': True}), denoiser=denoiser,
                body=body)


@pytest.mark.parametrize('rule', ['relative', 'threshold'])
def test_fused_compiled_loop_matches_the_eager_fast_path(body, rule):
    denoiser = net(DenoiserConfig())
    obs = make_scene(body, SceneSpec(num_people=3, cond_dim=3072), seed=6).obs
    # Row 0's keypoints far outside the image saturate its loss: it stops at once
    # (relative rule); the threshold rule with a huge threshold stops every row at 0.
    obs.keypoints_2d[0, :, :2] += 1e4
    sampler = {'tau': 6, 'outer_iters': 2, 'early_stopping': rule,
               'early_stop_tol': 1e-5 if rule == 'relative' else 1e12}
    engine = {'backend': 'folded', 'body': 'joints'}
    eager = _refine(body, denoiser, engine, obs, **sampler)
    fused = _refine(body, denoiser, dict(engine, compile=True), obs, **sampler)
    assert torch.equal(fused.stop_step, eager.stop_step)
    assert (eager.stop_step >= 0).any()
    torch.testing.assert_close(fused.x0, eager.x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused.cam_t, eager.cam_t, atol=1e-5, rtol=0)


@pytest.mark.parametrize('dtype,bound', [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_reduced_precision_products_stay_within_their_bound(dtype, bound):
    # Measured on random weights (eps std ~0.5): bf16 5.3e-3, fp16 6.1e-4 max abs error.
    ref = net(DenoiserConfig())
    exact, reduced = FoldedDenoiser(ref), FoldedDenoiser(ref, compute_dtype=dtype)
    for n in (1, 8, 64):
        x, c = torch.randn(n, 144), torch.randn(n, 3072)
        for t in (0, 10, 500):
            with torch.no_grad():
                err = (reduced(x, t, reduced.prepare(c)) - exact(x, t, exact.prepare(c)))
            assert err.abs().max() < bound
            assert err.abs().max() > 0  # the products really ran in reduced precision
    with pytest.raises(ValueError, match="implemented by the 'folded' backend"):
        RefinerConfig().replace(engine={'precision': 'bfloat16'})


def test_chunked_sweeps_equal_one_step_per_call(body):
    # engine.steps_per_call / invert_steps_per_call: K steps per call must be the same
    # arithmetic as K calls, including a remainder chunk (5 pairs = 2 + 2 + 1 and 4 + 1),
    # and the inversion may be chunked differently from the guided sweep. Eager (compile
    # off) so that the chunk planning is tested without minutes of compilation.
    from scorehmr_ros.diffusion.schedule import inversion_pairs, sampling_pairs, timestep_grid
    from scorehmr_ros.guidance.fused_loop import FusedKeypointLoop, initial_state
    from scorehmr_ros.refiner import _Rows

    refiner = Refiner(RefinerConfig().replace(engine={'backend': 'folded', 'body': 'joints'}),
                      denoiser=net(DenoiserConfig()), body=body)
    obs = make_scene(body, SceneSpec(num_people=2, cond_dim=3072), seed=7).obs
    kp = refiner._keypoint_setup(obs, _Rows(obs, 1, refiner.device, refiner.dtype))
    rest = refiner.joints_body.rest(obs.init_betas)
    grid = timestep_grid(10, 2)
    x = refiner.encode(obs.init_rotmats, obs.init_betas)
    results = []
    for k, invert_k in ((1, None), (2, None), (4, None), (1, 3), (2, 5)):
        loop = FusedKeypointLoop(refiner.schedule, refiner._folded(), refiner.joints_body,
                                 'body25', refiner.config.guidance, 'relative', 1e-5,
                                 compile=False, steps_per_call=k,
                                 invert_steps_per_call=invert_k)
        assert loop.invert_steps_per_call == (invert_k or k)
        prep = loop.folded.prepare(obs.cond)
        x_tau = loop.invert_sweep(x, list(inversion_pairs(grid)), prep)
        state = loop.guided_sweep(initial_state(x_tau, obs.init_cam_t),
                                  list(sampling_pairs(grid)), prep, rest, kp)
        results.append((x_tau, state))
    for x_tau, state in results[1:]:
        assert torch.equal(x_tau, results[0][0])
        for got, want in zip(state, results[0][1]):
            assert torch.equal(got, want)
    assert int(results[0][1].step) == 5
    with pytest.raises(ValueError, match='steps_per_call'):
        RefinerConfig().replace(engine={'steps_per_call': 0})
    with pytest.raises(ValueError, match='invert_steps_per_call'):
        RefinerConfig().replace(engine={'invert_steps_per_call': 0})
    # A compiled loop raises dynamo's variant limit (each loop instance and row count is
    # one variant of the same step functions; past the limit they would run uncompiled).
    FusedKeypointLoop(refiner.schedule, refiner._folded(), refiner.joints_body, 'body25',
                      refiner.config.guidance, 'relative', 1e-5, compile=True)
    assert torch._dynamo.config.recompile_limit >= 64
    with pytest.raises(ValueError, match='invert_steps_per_call'):
        FusedKeypointLoop(refiner.schedule, refiner._folded(), refiner.joints_body, 'body25',
                          refiner.config.guidance, 'relative', 1e-5, compile=False,
                          invert_steps_per_call=1.5)
    with pytest.raises(ValueError, match='not consecutive'):
        loop.invert_sweep(x, [(0, 2), (4, 6)], prep)


def _temporal_scene(body):
    """Three chained frames with frozen targets; row 0 saturated so that it stops at once."""
    obs = make_scene(body, SceneSpec(num_people=3, cond_dim=3072), seed=6).obs
    obs.keypoints_2d[0, :, :2] += 1e4
    gen = torch.Generator().manual_seed(1)
    start_6d = obs.init_rotmats[..., :2].transpose(-1, -2).reshape(3, 144)
    return dataclasses.replace(
        obs, temporal_target_6d=start_6d + 0.05 * torch.randn(3, 144, generator=gen),
        temporal_target_weight=torch.tensor([1.0, 0.5, 0.0]))


@pytest.mark.parametrize('steps_per_call', [1, 5])
@pytest.mark.parametrize('terms', ['window', 'target'])
def test_fused_loop_with_temporal_terms_matches_the_general_loop(body, steps_per_call, terms):
    # The fused step's temporal gradient (window L_temp along prev_row, or the frozen
    # targets) against the general loop's autograd, through Refiner.refine. The fused loop
    # runs uncompiled here (same Python step, seconds instead of minutes of compilation;
    # the compiled graph is checked below): 5 pairs per sweep = one chunk of 5.
    from scorehmr_ros.guidance.fused_loop import FusedKeypointLoop

    obs = _temporal_scene(body)
    if terms == 'window':
        obs = dataclasses.replace(obs, temporal_target_6d=None, temporal_target_weight=None)
    guidance = {'temporal': terms == 'window'}
    sampler = {'tau': 10, 'outer_iters': 2, 'early_stopping': 'relative'}
    engine = {'backend': 'folded', 'body': 'joints'}
    denoiser = net(DenoiserConfig())
    eager = _refine(body, denoiser, engine, obs, guidance, **sampler)
    cfg = RefinerConfig().replace(engine=dict(engine, compile=True), guidance=guidance,
                                  sampler=dict({'ddim_step': 2}, **sampler))
    refiner = Refiner(cfg, denoiser=denoiser, body=body)
    refiner._fused_loops[('body25', 'relative')] = FusedKeypointLoop(
        refiner.schedule, refiner._folded(), refiner.joints_body, 'body25', cfg.guidance,
        'relative', cfg.sampler.early_stop_tol, compile=False, steps_per_call=steps_per_call)
    fused = refiner.refine(obs)
    assert fused.info['guided_steps'] == eager.info['guided_steps'] == 10
    assert torch.equal(fused.stop_step, eager.stop_step)
    assert int(eager.stop_step[0, 0]) >= 0 and (eager.stop_step[1:] < 0).all()
    torch.testing.assert_close(fused.x0, eager.x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused.cam_t, eager.cam_t, atol=1e-5, rtol=0)
    # The temporal term really acted: without it the result is elsewhere.
    plain = _refine(body, denoiser, engine, dataclasses.replace(
        obs, temporal_target_6d=None, temporal_target_weight=None), **sampler)
    assert (plain.x0 - fused.x0).abs().max() > 1e-3


def test_compiled_fused_loop_with_temporal_terms_matches_eager(body):
    # Both temporal terms at once in the compiled step, in two engines that differ only in
    # rho_temporal (as OnlineTemporalRefiner's two engines), called in turn: from the second
    # call on, the refiner skips the guards that do not tell compiled variants apart, and
    # each engine must still run its own graph. Two compilations, ~1 min each.
    obs = _temporal_scene(body)
    sampler = {'tau': 6, 'outer_iters': 2, 'early_stopping': 'relative'}
    engine = {'backend': 'folded', 'body': 'joints'}
    denoiser = net(DenoiserConfig())
    eager, fused = {}, {}
    for rho in (30.0, 3000.0):
        guidance = {'temporal': True, 'rho_temporal': rho}
        eager[rho] = _refine(body, denoiser, engine, obs, guidance, **sampler)
        cfg = RefinerConfig().replace(engine=dict(engine, compile=True), guidance=guidance,
                                      sampler=dict({'ddim_step': 2}, **sampler))
        fused[rho] = Refiner(cfg, denoiser=denoiser, body=body)
    assert (eager[30.0].x0 - eager[3000.0].x0).abs().max() > 1e-2
    for _ in range(2):
        for rho, refiner in fused.items():
            got, want = refiner.refine(obs), eager[rho]
            assert torch.equal(got.stop_step, want.stop_step)
            assert (want.stop_step >= 0).any()
            torch.testing.assert_close(got.x0, want.x0, atol=1e-5, rtol=0)
            torch.testing.assert_close(got.cam_t, want.cam_t, atol=1e-5, rtol=0)
    from scorehmr_ros.guidance.fused_loop import _checked_temporal
    with pytest.raises(ValueError, match='target and weight come together'):
        _checked_temporal({'target': obs.temporal_target_6d})
    with pytest.raises(ValueError, match='unknown terms'):
        _checked_temporal({'prev': torch.zeros(3)})
