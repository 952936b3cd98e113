"""Denoiser architecture: parameter counts, key layout, shapes, exact forward math."""

import math

import pytest
import torch
import torch.nn.functional as F

from scorehmr_ros.diffusion.denoiser import count_parameters, Denoiser, DenoiserConfig


def test_parameter_count_pare_pose_only():
    # DESIGN: 11.3 M at feature size 3072 without shape.
    assert count_parameters(Denoiser(DenoiserConfig(cond_dim=3072))) == 11_307_024


def test_parameter_count_closed_form_any_size():
    for d in (2048, 51, 3072):
        time_mlp = 144 * 576 + 576 + 576 * 576 + 576
        io = 2 * (144 * 144 + 144)
        block = (576 * 288 + 288) + 2 * (144 + d) + (144 + d) * 1024 + 1024 + 2 * 1024 \
            + 1024 * 144 + 144
        assert count_parameters(Denoiser(DenoiserConfig(cond_dim=d))) == time_mlp + io + 3 * block


def test_released_key_layout():
    keys = set(Denoiser(DenoiserConfig(use_shape=True, shape_cond_dim=1536)).state_dict())
    for key in ('time_mlp.1.weight', 'time_mlp.3.bias', 'init_mlp.weight', 'final_mlp.bias',
                'blocks.2.mlp.1.weight', 'blocks.0.block.layer_norm1.weight',
                'blocks.0.block.linear_layer1.weight', 'blocks.0.block.layer_norm2.bias',
                'blocks.0.block.linear_layer2.weight', 'time_mlp_betas.1.weight',
                'blocks_betas.1.block.linear_layer2.bias', 'final_mlp_betas.weight'):
        assert key in keys
    assert 'blocks.3.mlp.1.weight' not in keys and 'blocks_betas.2.mlp.1.weight' not in keys
    net = Denoiser(DenoiserConfig(use_shape=True, shape_cond_dim=1536))
    assert net.blocks_betas[0].block.layer_norm1.normalized_shape == (10 + 1536,)
    assert net.blocks_betas[0].mlp[1].out_features == 20
    assert net.time_mlp_betas[1].out_features == 40


@pytest.mark.parametrize('cfg,c', [(DenoiserConfig(), 3072),
                                   (DenoiserConfig(cond_dim=2048, use_shape=True), 2048),
                                   (DenoiserConfig(use_shape=True, shape_cond_dim=1536), 4608)])
def test_shapes(cfg, c):
    net = Denoiser(cfg)
    assert cfg.total_cond_dim == c
    out = net(torch.randn(5, cfg.diffusion_dim), torch.randint(0, 1000, (5,)), torch.randn(5, c))
    assert out.shape == (5, cfg.diffusion_dim)


def manual_forward(net, x, t, c):
    """DESIGN section 3, written out with functional ops."""
    half = 72
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=x.dtype) / (half - 1))
    emb = torch.cat((torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)), -1)
    tm = net.time_mlp
    temb = F.linear(F.gelu(F.linear(emb, tm[1].weight, tm[1].bias)), tm[3].weight, tm[3].bias)
    h = F.linear(x, net.init_mlp.weight, net.init_mlp.bias)
    for blk in net.blocks:
        film = F.linear(F.silu(temb), blk.mlp[1].weight, blk.mlp[1].bias)
        scale, shift = film[:, :144], film[:, 144:]
        h = h * (1 + scale) + shift
        b = blk.block
        z = torch.cat((h, c), -1)
        z = F.layer_norm(z, (z.shape[-1],), b.layer_norm1.weight, b.layer_norm1.bias)
        z = F.gelu(F.linear(z, b.linear_layer1.weight, b.linear_layer1.bias))
        z = F.layer_norm(z, (1024,), b.layer_norm2.weight, b.layer_norm2.bias)
        z = F.gelu(F.linear(z, b.linear_layer2.weight, b.linear_layer2.bias))
        h = h + z
    return F.linear(h, net.final_mlp.weight, net.final_mlp.bias)


def test_forward_matches_written_out_math():
    torch.manual_seed(0)
    net = Denoiser(DenoiserConfig(cond_dim=64)).double()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    x, t, c = torch.randn(4, 144).double(), torch.tensor([0, 1, 50, 999]), torch.randn(4, 64)
    assert torch.allclose(net(x, t, c.double()), manual_forward(net, x, t, c.double()),
                          atol=1e-12)


def test_config_errors():
    with pytest.raises(ValueError, match='cond_dim'):
        DenoiserConfig(cond_dim=0)
