"""
The ScoreHMR noise-prediction network eps_phi(x_t, t, c) (supplement Fig. 5).

Module names equal those of the released checkpoints (``time_mlp.1``, ``init_mlp``,
``blocks.{i}.mlp.1``, ``blocks.{i}.block.layer_norm1`` ...), so their state dicts load
1:1. Dimension letters: N rows (people x views x frames x samples), D diffusion
dimension (144, or 154 with shape), C conditioning features.
"""

import dataclasses
import math
from typing import Optional

import torch
from torch import nn

POSE_DIM = 144
SHAPE_DIM = 10


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """
    Architecture of the denoiser.

    :param cond_dim: C of the pose branch: 3072 (PARE pose features), 2048 (ProHMR
        ResNet-50) or any size (e.g. keypoint-derived features).
    :param hidden_dim: width of each residual MLP (1024 in the paper).
    :param num_blocks: residual blocks of the pose branch (3).
    :param use_shape: also diffuse the 10 SMPL shape numbers (a second branch).
    :param shape_cond_dim: features of the shape branch appended after the pose features
        (1536 PARE camera/shape features); ``None`` means the shape branch reads the same
        ``cond_dim`` features as the pose branch (ProHMR).
    :param num_shape_blocks: residual blocks of the shape branch (2).
    """

    cond_dim: int = 3072
    hidden_dim: int = 1024
    num_blocks: int = 3
    use_shape: bool = False
    shape_cond_dim: Optional[int] = None
    num_shape_blocks: int = 2

    def __post_init__(self):
        for name in ('cond_dim', 'hidden_dim', 'num_blocks', 'num_shape_blocks'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'DenoiserConfig.{name} must be a positive int, got {value!r}')
        if self.shape_cond_dim is not None and self.shape_cond_dim < 1:
            raise ValueError(
                f'DenoiserConfig.shape_cond_dim must be None or positive, '
                f'got {self.shape_cond_dim!r}')

    @property
    def diffusion_dim(self) -> int:
        """D: 144, or 154 with the shape branch."""
        return POSE_DIM + (SHAPE_DIM if self.use_shape else 0)

    @property
    def total_cond_dim(self) -> int:
        """C of the conditioning vector the network expects."""
        split = self.use_shape and self.shape_cond_dim is not None
        return self.cond_dim + (self.shape_cond_dim if split else 0)


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style embedding of integer timesteps: half sines, half cosines."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f'time embedding dim must be even and >= 4, got {dim}')
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """
        Embed timesteps.

        :param t: [N] timesteps, floating point (the dtype of the embedding).
        :return: [N, dim] embedding.
        """
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=t.dtype) * -scale)
        args = t[:, None] * freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


class MLPBlock(nn.Module):
    """LayerNorm -> Linear -> GELU -> LayerNorm -> Linear -> GELU."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(in_dim)
        self.linear_layer1 = nn.Linear(in_dim, hidden_dim)
        self.act1 = nn.GELU()
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.linear_layer2 = nn.Linear(hidden_dim, out_dim)
        self.act2 = nn.GELU()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """
        Apply the MLP.

        :param h: [N, in_dim].
        :return: [N, out_dim].
        """
        h = self.act1(self.linear_layer1(self.layer_norm1(h)))
        return self.act2(self.linear_layer2(self.layer_norm2(h)))


class ResMLPBlock(nn.Module):
    """FiLM from the time embedding, then ``h + MLP([h, c])``."""

    def __init__(self, dim: int, hidden_dim: int, time_dim: int, cond_dim: int):
        super().__init__()
        # Index 1 of this Sequential is the released checkpoints' 'blocks.{i}.mlp.1'.
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * dim))
        self.block = MLPBlock(dim + cond_dim, hidden_dim, dim)

    def forward(self, h: torch.Tensor, time_emb: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
        """
        Apply the block.

        :param h: [N, dim] hidden state.
        :param time_emb: [N, time_dim] output of the time MLP.
        :param cond: [N, cond_dim] conditioning features.
        :return: [N, dim].
        """
        scale, shift = self.mlp(time_emb).chunk(2, dim=1)
        h = h * (scale + 1) + shift
        return h + self.block(torch.cat((h, cond), dim=1))


def _make_branch(dim: int, hidden_dim: int, num_blocks: int, cond_dim: int):
    """
    Build one diffusion branch: time MLP, input layer, residual blocks, output layer.

    :return: ``(time_mlp, init_mlp, blocks, final_mlp)`` modules.
    """
    time_dim = 4 * dim
    time_mlp = nn.Sequential(
        SinusoidalTimeEmbedding(dim), nn.Linear(dim, time_dim), nn.GELU(),
        nn.Linear(time_dim, time_dim))
    blocks = nn.ModuleList(
        ResMLPBlock(dim, hidden_dim, time_dim, cond_dim) for _ in range(num_blocks))
    return time_mlp, nn.Linear(dim, dim), blocks, nn.Linear(dim, dim)


class Denoiser(nn.Module):
    """
    eps_phi(x_t, t, c): predicts the noise in the diffusion state.

    The shape branch's parameters live under the ``*_betas`` twins of the pose names
    (``time_mlp_betas``, ``init_mlp_betas``, ``blocks_betas``, ``final_mlp_betas``).
    """

    def __init__(self, config: DenoiserConfig = DenoiserConfig()):
        super().__init__()
        self.config = config
        # Flat attribute names reproduce the released checkpoints' key layout.
        self.time_mlp, self.init_mlp, self.blocks, self.final_mlp = _make_branch(
            POSE_DIM, config.hidden_dim, config.num_blocks, config.cond_dim)
        if config.use_shape:
            shape_cond = config.shape_cond_dim or config.cond_dim
            (self.time_mlp_betas, self.init_mlp_betas, self.blocks_betas,
             self.final_mlp_betas) = _make_branch(
                SHAPE_DIM, config.hidden_dim, config.num_shape_blocks, shape_cond)

    @property
    def diffusion_dim(self) -> int:
        """D of the state this network denoises."""
        return self.config.diffusion_dim

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """
        Predict noise.

        :param x_t: [N, D] noisy state (6D pose of 24 joints, then scaled shape if used).
        :param t: [N] integer timesteps.
        :param cond: [N, C] conditioning features (standardised image features).
        :return: [N, D] predicted noise.
        """
        cfg = self.config
        pose_cond = cond[:, :cfg.cond_dim] if cfg.use_shape else cond
        eps_pose = _run_branch(self.time_mlp, self.init_mlp, self.blocks, self.final_mlp,
                               x_t[:, :POSE_DIM], t, pose_cond)
        if not cfg.use_shape:
            return eps_pose
        shape_cond = cond[:, cfg.cond_dim:] if cfg.shape_cond_dim is not None else cond
        eps_shape = _run_branch(self.time_mlp_betas, self.init_mlp_betas, self.blocks_betas,
                                self.final_mlp_betas, x_t[:, POSE_DIM:], t, shape_cond)
        return torch.cat((eps_pose, eps_shape), dim=1)


def _run_branch(time_mlp: nn.Module, init_mlp: nn.Module, blocks: nn.ModuleList,
                final_mlp: nn.Module, x: torch.Tensor, t: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
    """
    Run one branch given its modules.

    :param x: [N, dim] the branch's part of the state.
    :param t: [N] timesteps.
    :param cond: [N, C_branch] the branch's features.
    :return: [N, dim] predicted noise of the branch.
    """
    h = init_mlp(x)
    # Integer timesteps become the state's dtype (float32: what int * float32 gives).
    time_emb = time_mlp(t.to(x.dtype))
    for block in blocks:
        h = block(h, time_emb, cond)
    return final_mlp(h)


def count_parameters(module: nn.Module) -> int:
    """Count trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
