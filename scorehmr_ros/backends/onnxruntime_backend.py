"""
ONNX Runtime backend: the folded graphs of :mod:`scorehmr_ros.backends.onnx_export`.

``prepare.onnx`` runs once per refinement call; ``step.onnx`` runs per DDIM step with
the folded constants bound. Execution providers are explicit (CPU by default, CUDA when
asked and available).
"""

import logging
import os
import tempfile
from typing import Any, Optional, Sequence

import numpy as np
import torch

from scorehmr_ros.backends.base import DenoiserBackend
from scorehmr_ros.backends.onnx_export import (
    check_onnx, export_onnx, folded_input_names, load_meta, OnnxModelError)
from scorehmr_ros.diffusion.denoiser import Denoiser

LOG = logging.getLogger(__name__)


class OnnxRuntimeBackend(DenoiserBackend):
    """
    Folded denoiser graphs run by ONNX Runtime.

    :param directory: folder written by ``export_onnx`` (``prepare.onnx``, ``step.onnx``,
        ``scorehmr_onnx.json``).
    :param providers: ONNX Runtime execution providers, e.g. ``['CPUExecutionProvider']``.
    :param threads: intra-op threads (0: runtime default).
    :param expect_cond_dim: raise if the exported model expects other features.
    """

    name = 'onnxruntime'

    def __init__(self, directory: str, providers: Optional[Sequence[str]] = None,
                 threads: int = 0, expect_cond_dim: Optional[int] = None):
        import onnxruntime as ort

        self.meta = load_meta(directory)
        if expect_cond_dim is not None and self.meta['cond_dim'] != expect_cond_dim:
            raise OnnxModelError(
                f'{directory}: exported for {self.meta["cond_dim"]} features, the '
                f'configuration expects {expect_cond_dim}')
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = list(providers or ['CPUExecutionProvider'])
        self.sessions = {}
        for key in ('prepare', 'step'):
            path = os.path.join(directory, key + '.onnx')
            check_onnx(path)
            self.sessions[key] = ort.InferenceSession(path, options, providers=providers)
        self._names = folded_input_names(self.meta['use_shape'])
        want = ['x_t', 't'] + self._names
        got = [i.name for i in self.sessions['step'].get_inputs()]
        if got != want:
            raise OnnxModelError(f'{directory}/step.onnx: inputs {got}, expected {want}')

    @classmethod
    def from_denoiser(cls, denoiser: Denoiser, directory: Optional[str] = None,
                      **kwargs) -> 'OnnxRuntimeBackend':
        """
        Export a network (to ``directory`` or a temporary folder) and load it.

        :param denoiser: the network.
        :param directory: where to write the graphs; ``None`` uses a temporary folder.
        :return: the backend.
        """
        directory = directory or tempfile.mkdtemp(prefix='scorehmr_onnx_')
        export_onnx(denoiser, directory)
        return cls(directory, expect_cond_dim=denoiser.config.total_cond_dim, **kwargs)

    @property
    def diffusion_dim(self) -> int:
        return int(self.meta['diffusion_dim'])

    @property
    def cond_dim(self) -> int:
        return int(self.meta['cond_dim'])

    def _prepare_impl(self, cond: torch.Tensor) -> Any:
        outputs = self.sessions['prepare'].run(None, {'cond': _np(cond)})
        return dict(zip(self._names, outputs))

    def _eps_impl(self, x_t: torch.Tensor, t: int, prepared: Any) -> torch.Tensor:
        feed = dict(prepared)
        feed['x_t'] = _np(x_t)
        feed['t'] = np.array([t], dtype=np.int64)
        eps, = self.sessions['step'].run(None, feed)
        return torch.from_numpy(eps).to(x_t.device, x_t.dtype)

    def close(self) -> None:
        self.sessions.clear()


def _np(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to('cpu', torch.float32).numpy())
