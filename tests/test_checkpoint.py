"""Checkpoint I/O: released EMA layout, the project's format, safe loading, bad files."""

import os
import pickle

import pytest
import torch

from scorehmr_ros.diffusion.checkpoint import (
    CheckpointError, infer_config, load_denoiser, released_state_dict, save_denoiser)
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig


def make_released(path, cfg):
    """A checkpoint in the released ``model-100.pt`` layout (EMA wrapper state)."""
    torch.manual_seed(1)
    net = Denoiser(cfg)
    ema = released_state_dict(net)
    # The EMA wrapper also stores the diffusion module's schedule buffers and counters.
    ema['ema_model.betas'] = torch.rand(1000)
    ema['ema_model.alphas_cumprod'] = torch.rand(1000)
    ema['initted'] = torch.tensor(True)
    ema['step'] = torch.tensor(1000)
    online = {'model.' + k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    torch.save({'step': 100, 'model': online, 'ema': ema, 'opt': {}, 'version': '1.0'}, path)
    return net


@pytest.mark.parametrize('cfg', [DenoiserConfig(),
                                 DenoiserConfig(cond_dim=2048),
                                 DenoiserConfig(use_shape=True, shape_cond_dim=1536),
                                 DenoiserConfig(cond_dim=2048, use_shape=True)])
def test_released_layout_loads_one_to_one(tmp_path, cfg):
    path = str(tmp_path / 'model-100.pt')
    net = make_released(path, cfg)
    loaded, meta = load_denoiser(path)
    assert meta['checkpoint_format'] == 'released' and meta['weights'] == 'ema'
    assert loaded.config == cfg
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(3, cfg.diffusion_dim)
    t = torch.tensor([0, 10, 999])
    c = torch.randn(3, cfg.total_cond_dim)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, c), net.eval()(x, t, c))


def test_own_format_round_trip(tmp_path):
    net = Denoiser(DenoiserConfig(cond_dim=32, hidden_dim=64, num_blocks=2))
    path = str(tmp_path / 'own.pt')
    save_denoiser(path, net, meta={'data': 'unit test'})
    loaded, meta = load_denoiser(path)
    assert meta['checkpoint_format'] == 'scorehmr_ros' and meta['data'] == 'unit test'
    assert loaded.config == net.config
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_infer_config_from_shapes():
    cfg = DenoiserConfig(cond_dim=100, hidden_dim=256, num_blocks=4, use_shape=True,
                         shape_cond_dim=7, num_shape_blocks=3)
    assert infer_config(Denoiser(cfg).state_dict()) == cfg


class Exploit:
    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null',))


def test_pickled_code_is_refused(tmp_path):
    path = str(tmp_path / 'evil.pt')
    with open(path, 'wb') as handle:
        pickle.dump({'ema': Exploit()}, handle)
    with pytest.raises(CheckpointError, match='weights_only'):
        load_denoiser(path)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        load_denoiser(str(tmp_path / 'missing.pt'))
    path = str(tmp_path / 'wrong.pt')
    torch.save({'ema': {'something.else': torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match='no denoiser parameters'):
        load_denoiser(path)
    state = released_state_dict(Denoiser())
    state['ema_model.model.init_mlp.weight'] = torch.zeros(144, 100)
    torch.save({'ema': state}, path)
    with pytest.raises(CheckpointError, match='init_mlp.weight'):
        load_denoiser(path)
    state = released_state_dict(Denoiser())
    state['ema_model.model.final_mlp.bias'][0] = float('nan')
    torch.save({'ema': state}, path)
    with pytest.raises(CheckpointError, match='NaN'):
        load_denoiser(path)
    truncated = str(tmp_path / 'trunc.pt')
    with open(path, 'rb') as src, open(truncated, 'wb') as dst:
        dst.write(src.read()[:1000])
    with pytest.raises(CheckpointError, match='trunc.pt'):
        load_denoiser(truncated)


def test_refuses_to_save_nan(tmp_path):
    net = Denoiser(DenoiserConfig(cond_dim=8, hidden_dim=16, num_blocks=1))
    net.init_mlp.bias.data[0] = float('nan')
    with pytest.raises(CheckpointError, match='non-finite'):
        save_denoiser(str(tmp_path / 'x.pt'), net)
