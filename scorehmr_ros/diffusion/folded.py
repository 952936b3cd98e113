"""
Exact algebraic folding of the denoiser for repeated calls on the same features.

Within one refinement call the conditioning features ``c`` never change and the FiLM
scale/shift depend only on ``t``. Each residual block computes
``W1 LN([h, c]) + b1`` with ``LN`` over the concatenation; splitting ``W1 = [Wh | Wc]``
and the LayerNorm affine ``(gamma, beta)`` the same way gives

``W1 LN([h, c]) + b1 = (A h + P_c - mu * g) / s + k``

with ``A = Wh diag(gamma_h)``, ``P_c = Wc diag(gamma_c) c`` (per row, once per call),
``g = Wh gamma_h + Wc gamma_c``, ``k = Wh beta_h + Wc beta_c + b1`` and the LayerNorm
statistics ``mu``, ``s = sqrt(var + eps)`` of the concatenation assembled from the
sums of ``h`` (per step) and of ``c`` (once). A denoiser call then costs ~1.9 MFLOP
instead of ~22.6 at C = 3072. Statistics are kept in float32 (or the model's dtype if
wider); outputs equal the unfolded network's to ~1e-6.

Letters: N rows, D state dimension, C features, H hidden width (1024), B blocks.
"""

from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F

from scorehmr_ros.diffusion.denoiser import Denoiser, POSE_DIM


class FoldedCond(NamedTuple):
    """
    Per-call constants of one branch.

    :param proj: [B, N, H] ``Wc diag(gamma_c) c`` per block.
    :param sum: [N] sum of the features.
    :param sumsq: [N] sum of their squares.
    """

    proj: torch.Tensor
    sum: torch.Tensor
    sumsq: torch.Tensor


class _FoldedBranch(torch.nn.Module):
    """Folded weights of one branch (pose or shape) of a :class:`Denoiser`."""

    def __init__(self, time_mlp, init_mlp, blocks, final_mlp, dim: int,
                 num_timesteps: int = 1000, compute_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.dim = dim
        # Reduced-precision products (bf16/fp16) with float32 statistics and residuals.
        self.compute_dtype = compute_dtype
        with torch.no_grad():
            steps = torch.arange(num_timesteps, dtype=init_mlp.weight.dtype)
            temb = time_mlp(steps)                                               # [T, 4*dim]
            film = torch.stack([blk.mlp(temb) for blk in blocks], dim=0)         # [B, T, 2dim]
            self.register_buffer('film_scale1', (film[..., :dim] + 1).contiguous())
            self.register_buffer('film_shift', film[..., dim:].contiguous())
            a, wc, g, k = [], [], [], []
            for blk in blocks:
                mlp = blk.block
                gamma, beta = mlp.layer_norm1.weight, mlp.layer_norm1.bias
                w1, b1 = mlp.linear_layer1.weight, mlp.linear_layer1.bias
                wh, wcb = w1[:, :dim], w1[:, dim:]
                a.append((wh * gamma[:dim]).t().contiguous())                    # [dim, H]
                wc.append((wcb * gamma[dim:]).t().contiguous())                  # [C, H]
                g.append(w1 @ gamma)                                             # [H]
                k.append(w1 @ beta + b1)                                         # [H]
            self.register_buffer('a_t', torch.stack(a))
            self.register_buffer('wc_t', torch.stack(wc))
            self.register_buffer('g', torch.stack(g))
            self.register_buffer('k', torch.stack(k))
        self.eps_ln1 = [blk.block.layer_norm1.eps for blk in blocks]
        self.concat_dim = blocks[0].block.layer_norm1.normalized_shape[0]
        self.init_mlp = init_mlp
        self.final_mlp = final_mlp
        self.ln2 = torch.nn.ModuleList(blk.block.layer_norm2 for blk in blocks)
        self.lin2 = torch.nn.ModuleList(blk.block.linear_layer2 for blk in blocks)

    def prepare(self, cond: torch.Tensor) -> FoldedCond:
        """
        Fold the features.

        :param cond: [N, C] this branch's features.
        :return: per-call constants.
        """
        # Broadcast matmul [N, C] @ [B, C, H]: no permuted copy of the 3 x C x H weights.
        proj = torch.matmul(cond, self.wc_t)
        stats = cond.to(torch.promote_types(cond.dtype, torch.float32))
        return FoldedCond(proj, stats.sum(-1), (stats * stats).sum(-1))

    def forward(self, x: torch.Tensor, t: int, folded: FoldedCond) -> torch.Tensor:
        """
        Predict noise at one timestep for all rows.

        :param x: [N, dim] this branch's part of the state.
        :param t: timestep shared by the rows: an int, or a [1] / [] int64 tensor.
        :param folded: :meth:`prepare` of the rows' features.
        :return: [N, dim] noise.
        """
        h = self.init_mlp(x)
        n = float(self.concat_dim)
        for i in range(len(self.ln2)):
            if isinstance(t, torch.Tensor):
                # A tensor timestep is gathered, never read back to Python: graphs stay
                # free of host synchronisation (compilation, CUDA graphs, ONNX Gather).
                scale1 = self.film_scale1[i].index_select(0, t.reshape(1))
                shift = self.film_shift[i].index_select(0, t.reshape(1))
            else:
                scale1, shift = self.film_scale1[i, t], self.film_shift[i, t]
            h = h * scale1 + shift
            hs = h.to(folded.sum.dtype)
            mean = (hs.sum(-1) + folded.sum) / n
            var = (((hs * hs).sum(-1) + folded.sumsq) / n - mean * mean).clamp_min(0.0)
            inv_std = torch.rsqrt(var + self.eps_ln1[i])
            pre = (self._matmul(h, self.a_t[i]) + folded.proj[i]).to(mean.dtype)
            pre = (pre - mean[:, None] * self.g[i]) * inv_std[:, None] + self.k[i]
            z = F.gelu(pre.to(h.dtype))
            z = self.ln2[i](z)
            if self.compute_dtype is not None:
                lin = self.lin2[i]
                z = self._matmul(z, lin.weight.t()) + lin.bias
            else:
                z = self.lin2[i](z)
            h = h + F.gelu(z)
        return self.final_mlp(h)

    def _matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Multiply ``a @ b`` in the compute dtype if one is set (result in a's dtype)."""
        if self.compute_dtype is None:
            return a @ b
        return (a.to(self.compute_dtype) @ b.to(self.compute_dtype)).to(a.dtype)


class FoldedDenoiser(torch.nn.Module):
    """
    The same function as a :class:`Denoiser`, evaluated with precomputed constants.

    :param denoiser: the network to fold (its weights are read, not modified).
    :param compute_dtype: ``torch.bfloat16`` / ``torch.float16`` runs the hidden-layer
        products in that precision (LayerNorm statistics, FiLM and residuals stay
        float32); ``None`` keeps the network's dtype.
    """

    def __init__(self, denoiser: Denoiser, compute_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.config = denoiser.config
        self.pose = _FoldedBranch(denoiser.time_mlp, denoiser.init_mlp, denoiser.blocks,
                                  denoiser.final_mlp, POSE_DIM, compute_dtype=compute_dtype)
        self.shape = None
        if self.config.use_shape:
            self.shape = _FoldedBranch(denoiser.time_mlp_betas, denoiser.init_mlp_betas,
                                       denoiser.blocks_betas, denoiser.final_mlp_betas,
                                       self.config.diffusion_dim - POSE_DIM,
                                       compute_dtype=compute_dtype)

    def prepare(self, cond: torch.Tensor) -> List[FoldedCond]:
        """
        Fold the features of all rows (once per refinement call).

        :param cond: [N, C] features.
        :return: per-branch constants.
        """
        cfg = self.config
        if not cfg.use_shape:
            return [self.pose.prepare(cond)]
        shape_cond = cond[:, cfg.cond_dim:] if cfg.shape_cond_dim is not None else cond
        return [self.pose.prepare(cond[:, :cfg.cond_dim]), self.shape.prepare(shape_cond)]

    def forward(self, x_t: torch.Tensor, t: int, folded: List[FoldedCond]) -> torch.Tensor:
        """
        Predict noise.

        :param x_t: [N, D] states.
        :param t: integer timestep shared by the rows.
        :param folded: :meth:`prepare` output.
        :return: [N, D] noise, equal to ``Denoiser(x_t, t, c)`` to ~1e-6.
        """
        eps = self.pose(x_t[:, :POSE_DIM], t, folded[0])
        if self.shape is None:
            return eps
        return torch.cat((eps, self.shape(x_t[:, POSE_DIM:], t, folded[1])), dim=1)
