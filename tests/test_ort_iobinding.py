"""ONNX Runtime backend with IOBinding: same eps as the feed-dictionary run, no aliasing."""

import pytest
import torch

from scorehmr_ros.backends.onnx_export import export_onnx
from scorehmr_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig

pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Small denoisers (pose only, and with the shape branch) exported once."""
    out = {}
    for key, cfg in (('pose', DenoiserConfig(cond_dim=64)),
                     ('shape', DenoiserConfig(cond_dim=64, use_shape=True,
                                              shape_cond_dim=32))):
        torch.manual_seed(1)
        model = Denoiser(cfg).eval()
        directory = str(tmp_path_factory.mktemp('onnx_' + key))
        export_onnx(model, directory)
        out[key] = (model, directory)
    return out


@pytest.mark.parametrize('key', ['pose', 'shape'])
def test_bound_eps_equals_feed_dict_eps_and_torch(exported, key):
    model, directory = exported[key]
    bound = OnnxRuntimeBackend(directory, threads=1)
    plain = OnnxRuntimeBackend(directory, threads=1, io_binding=False)
    assert bound.io_binding and not plain.io_binding
    gen = torch.Generator().manual_seed(0)
    for n in (1, 3, 8):
        cond = torch.randn(n, model.config.total_cond_dim, generator=gen)
        prep_bound, prep_plain = bound.prepare(cond), plain.prepare(cond)
        for t in (0, 2, 17, 999):
            x_t = torch.randn(n, model.diffusion_dim, generator=gen)
            got = bound.eps(x_t, t, prep_bound)
            assert torch.equal(got, plain.eps(x_t, t, prep_plain))
            with torch.no_grad():
                want = model(x_t, torch.full((n,), t), cond)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_results_are_fresh_and_handles_independent(exported):
    model, directory = exported['pose']
    backend = OnnxRuntimeBackend(directory, threads=1)
    gen = torch.Generator().manual_seed(2)
    cond_a = torch.randn(2, 64, generator=gen)
    cond_b = torch.randn(5, 64, generator=gen)
    prep_a, prep_b = backend.prepare(cond_a), backend.prepare(cond_b)
    x_a = torch.randn(2, model.diffusion_dim, generator=gen)
    x_b = torch.randn(5, model.diffusion_dim, generator=gen)
    first = backend.eps(x_a, 10, prep_a)
    kept = first.clone()
    # Later calls on the same and on another handle must not change a returned tensor.
    second = backend.eps(x_a + 1.0, 500, prep_a)
    other = backend.eps(x_b, 10, prep_b)
    assert torch.equal(first, kept)
    assert not torch.equal(first, second)
    with torch.no_grad():
        torch.testing.assert_close(other, model(x_b, torch.full((5,), 10), cond_b),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(backend.eps(x_a, 10, prep_a),
                                   model(x_a, torch.full((2,), 10), cond_a), atol=1e-5, rtol=0)


def test_dtype_kept_and_wrong_rows_named(exported):
    model, directory = exported['pose']
    backend = OnnxRuntimeBackend(directory, threads=1)
    prep = backend.prepare(torch.zeros(3, 64))
    eps = backend.eps(torch.zeros(3, model.diffusion_dim, dtype=torch.float64), 4, prep)
    assert eps.dtype == torch.float64 and eps.shape == (3, model.diffusion_dim)
    with pytest.raises(ValueError, match=r'x_t must be \[3, 144\].*got \[4, 144\]'):
        backend.eps(torch.zeros(4, model.diffusion_dim), 4, prep)
