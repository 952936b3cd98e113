"""
ONNX export of the denoiser, validation and the TensorRT operator allow-list.

Three graphs, all with a dynamic row axis ``N``:

* ``denoiser.onnx``: the unfolded network, inputs ``x_t [N, D]``, ``t [N]`` (int64),
  ``cond [N, C]``, output ``eps [N, D]``. Any runtime, TensorRT included.
* ``prepare.onnx``: ``cond [N, C]`` -> the folded per-call constants
  (``pose_proj [B, N, H]``, ``pose_sum [N]``, ``pose_sumsq [N]``, and ``shape_*`` with
  the shape branch).
* ``step.onnx``: ``x_t [N, D]``, ``t [1]`` (int64) and those constants -> ``eps``. FiLM
  tables over all 1000 timesteps are initializers.
"""

import json
import logging
import os
from typing import Dict, List, Sequence
import warnings

import torch

from scorehmr_ros.diffusion.denoiser import Denoiser
from scorehmr_ros.diffusion.folded import FoldedCond, FoldedDenoiser

LOG = logging.getLogger(__name__)

OPSET = 17
#: ONNX operators the TensorRT 10 ONNX parser supports (onnx-tensorrt operators list),
#: restricted to those an exported denoiser can reasonably contain.
TENSORRT_OPS = frozenset({
    'Add', 'Cast', 'Concat', 'Constant', 'ConstantOfShape', 'Cos', 'Div', 'Einsum', 'Equal',
    'Erf', 'Exp', 'Expand', 'Flatten', 'Gather', 'Gemm', 'Identity', 'LayerNormalization',
    'MatMul', 'Max', 'Min', 'Mul', 'Neg', 'Pow', 'Range', 'Reciprocal', 'ReduceMean',
    'ReduceSum', 'Relu', 'Reshape', 'Shape', 'Sigmoid', 'Sin', 'Slice', 'Split', 'Sqrt',
    'Squeeze', 'Sub', 'Tanh', 'Transpose', 'Unsqueeze', 'Where', 'Clip',
})
META_FILE = 'scorehmr_onnx.json'


class OnnxModelError(ValueError):
    """An ONNX file is missing, invalid or does not match the expected model."""


def folded_input_names(use_shape: bool) -> List[str]:
    """Names of the folded constants, in the order the step graph takes them."""
    names = ['pose_proj', 'pose_sum', 'pose_sumsq']
    if use_shape:
        names += ['shape_proj', 'shape_sum', 'shape_sumsq']
    return names


class _PrepareGraph(torch.nn.Module):
    def __init__(self, folded: FoldedDenoiser):
        super().__init__()
        self.folded = folded

    def forward(self, cond):
        return tuple(v for branch in self.folded.prepare(cond) for v in branch)


class _StepGraph(torch.nn.Module):
    def __init__(self, folded: FoldedDenoiser):
        super().__init__()
        self.folded = folded

    def forward(self, x_t, t, *constants):
        branches = [FoldedCond(*constants[i:i + 3]) for i in range(0, len(constants), 3)]
        return self.folded(x_t, t, branches)


def export_onnx(denoiser: Denoiser, out_dir: str, opset: int = OPSET) -> Dict[str, str]:
    """
    Export the three graphs and a JSON description of the model.

    :param denoiser: the network (any device; exported from a float32 CPU copy).
    :param out_dir: output folder (created).
    :param opset: ONNX opset (17: LayerNormalization and Erf-based GELU).
    :return: ``{'denoiser': path, 'prepare': path, 'step': path, 'meta': path}``.
    """
    os.makedirs(out_dir, exist_ok=True)
    net = _cpu_float_copy(denoiser)
    cfg = net.config
    folded = FoldedDenoiser(net).eval()
    n = 2
    x = torch.randn(n, cfg.diffusion_dim)
    t = torch.tensor([10, 20])
    cond = torch.randn(n, cfg.total_cond_dim)
    names = folded_input_names(cfg.use_shape)
    paths = {k: os.path.join(out_dir, k + '.onnx') for k in ('denoiser', 'prepare', 'step')}
    row = {0: 'N'}
    with torch.no_grad():
        _export(net, (x, t, cond), paths['denoiser'], ['x_t', 't', 'cond'], ['eps'],
                {'x_t': row, 't': row, 'cond': row, 'eps': row}, opset)
        consts = _PrepareGraph(folded)(cond)
        axes = {name: ({1: 'N'} if name.endswith('proj') else row) for name in names}
        _export(_PrepareGraph(folded), (cond,), paths['prepare'], ['cond'], names,
                dict(axes, cond=row), opset)
        _export(_StepGraph(folded), (x, torch.tensor([10]), *consts), paths['step'],
                ['x_t', 't'] + names, ['eps'], dict(axes, x_t=row, eps=row), opset)
    meta = {'format': 'scorehmr_ros.onnx', 'version': 1, 'opset': opset,
            'diffusion_dim': cfg.diffusion_dim, 'cond_dim': cfg.total_cond_dim,
            'use_shape': cfg.use_shape, 'folded_inputs': names}
    paths['meta'] = os.path.join(out_dir, META_FILE)
    with open(paths['meta'], 'w', encoding='utf-8') as handle:
        json.dump(meta, handle, indent=2)
    for key in ('denoiser', 'prepare', 'step'):
        check_onnx(paths[key])
    return paths


def check_onnx(path: str, allowed_ops: Sequence[str] = TENSORRT_OPS) -> List[str]:
    """
    Validate a file with ``onnx.checker`` and the operator allow-list.

    :param path: ``.onnx`` file.
    :param allowed_ops: operator types a target runtime supports.
    :return: the sorted operator types the graph uses.
    """
    import onnx

    if not os.path.isfile(path):
        raise OnnxModelError(f'ONNX file not found: {path}')
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: B902 - any parse/check failure is a bad file
        raise OnnxModelError(f'{path}: not a valid ONNX model: {err}') from err
    ops = sorted({node.op_type for node in model.graph.node})
    unsupported = [op for op in ops if op not in allowed_ops]
    if unsupported:
        raise OnnxModelError(f'{path}: operators outside the TensorRT allow-list: '
                             f'{unsupported}')
    return ops


def load_meta(directory: str) -> dict:
    """
    Read the JSON description written next to exported graphs.

    :param directory: export folder.
    :return: the description (feature size, state dimension, input names).
    """
    path = os.path.join(directory, META_FILE)
    if not os.path.isfile(path):
        raise OnnxModelError(f'{directory}: no {META_FILE} (export with `scorehmr export`)')
    with open(path, 'r', encoding='utf-8') as handle:
        return json.load(handle)


def _export(module, args, path, input_names, output_names, dynamic_axes, opset):
    # The TorchScript exporter needs no onnxscript; its deprecation notice is expected.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(module, args, path, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes,
                          opset_version=opset, dynamo=False, do_constant_folding=True)


def _cpu_float_copy(denoiser: Denoiser) -> Denoiser:
    copy = Denoiser(denoiser.config)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in
                          denoiser.state_dict().items()})
    return copy.eval()
