"""
ONNX Runtime backend: the folded graphs of :mod:`scorehmr_ros.backends.onnx_export`.

``prepare.onnx`` runs once per refinement call; ``step.onnx`` runs per DDIM step with
the folded constants bound. Execution providers are explicit (CPU by default, CUDA when
asked and available).

With the CPU provider, each :meth:`~OnnxRuntimeBackend.prepare` binds the folded
constants, an input buffer for ``x_t`` and ``t`` and an output buffer for eps once
(ONNX Runtime IOBinding); every following step copies x_t into the bound buffer and
runs, so no feed dictionary, no per-call tensor wrapping and no output allocation
happens per DDIM step. The handle is per ``prepare`` call, so concurrent refinements
never share buffers.
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
    :param io_binding: bind the step graph's inputs and outputs once per :meth:`prepare`
        (CPU provider only; other providers run with a feed dictionary).
    """

    name = 'onnxruntime'

    def __init__(self, directory: str, providers: Optional[Sequence[str]] = None,
                 threads: int = 0, expect_cond_dim: Optional[int] = None,
                 io_binding: bool = True):
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
        self._output = self.sessions['step'].get_outputs()[0].name
        # Buffers are host memory: binding them only saves work on the CPU provider.
        self.io_binding = bool(io_binding) and providers[0] == 'CPUExecutionProvider'

    @classmethod
    def from_denoiser(cls, denoiser: Denoiser, directory: Optional[str] = None,
                      **kwargs) -> 'OnnxRuntimeBackend':
        """
        Export a network (to ``directory`` or a temporary folder) and load it.

        :param denoiser: the network.
        :param directory: where to write the graphs; ``None`` uses a temporary folder,
            removed once the sessions are loaded (they hold the graphs in memory; every
            start-up would otherwise leave ~90 MB behind in the temp folder).
        :return: the backend.
        """
        if directory is not None:
            export_onnx(denoiser, directory)
            return cls(directory, expect_cond_dim=denoiser.config.total_cond_dim, **kwargs)
        with tempfile.TemporaryDirectory(prefix='scorehmr_onnx_') as temporary:
            export_onnx(denoiser, temporary)
            return cls(temporary, expect_cond_dim=denoiser.config.total_cond_dim, **kwargs)

    @property
    def diffusion_dim(self) -> int:
        return int(self.meta['diffusion_dim'])

    @property
    def cond_dim(self) -> int:
        return int(self.meta['cond_dim'])

    def _prepare_impl(self, cond: torch.Tensor) -> Any:
        outputs = self.sessions['prepare'].run(None, {'cond': _np(cond)})
        constants = dict(zip(self._names, outputs))
        if not self.io_binding:
            return constants
        return _BoundStep(self.sessions['step'], constants, cond.shape[0],
                          self.diffusion_dim, self._output)

    def _eps_impl(self, x_t: torch.Tensor, t: int, prepared: Any) -> torch.Tensor:
        if isinstance(prepared, _BoundStep):
            return prepared.run(x_t, t)
        feed = dict(prepared)
        feed['x_t'] = _np(x_t)
        feed['t'] = np.array([t], dtype=np.int64)
        eps, = self.sessions['step'].run(None, feed)
        return torch.from_numpy(eps).to(x_t.device, x_t.dtype)

    def close(self) -> None:
        self.sessions.clear()


class _BoundStep:
    """
    The step graph with its inputs and output bound to host buffers of one batch.

    :param session: the ``step.onnx`` session.
    :param constants: folded constants of the rows (``prepare.onnx`` outputs), by name.
    :param rows: N, rows of the batch.
    :param dim: D of the state.
    :param output: name of the eps output.
    """

    def __init__(self, session, constants: dict, rows: int, dim: int, output: str):
        self.session = session
        self.rows, self.dim = rows, dim
        # Kept referenced: the binding holds raw pointers into these arrays.
        self.constants = {k: np.ascontiguousarray(v) for k, v in constants.items()}
        self.x_t = np.zeros((rows, dim), dtype=np.float32)
        self.t = np.zeros((1,), dtype=np.int64)
        self.eps = np.zeros((rows, dim), dtype=np.float32)
        self.binding = session.io_binding()
        for name, array in [('x_t', self.x_t), ('t', self.t)] + list(self.constants.items()):
            self.binding.bind_input(name, 'cpu', 0, array.dtype, list(array.shape),
                                    array.ctypes.data)
        self.binding.bind_output(output, 'cpu', 0, self.eps.dtype, list(self.eps.shape),
                                 self.eps.ctypes.data)

    def run(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """
        Evaluate eps for new states of the bound rows.

        :param x_t: [N, D] states (N as prepared).
        :param t: integer timestep.
        :return: [N, D] eps, a fresh tensor on x_t's device and dtype.
        """
        if tuple(x_t.shape) != (self.rows, self.dim):
            raise ValueError(f'onnxruntime backend: x_t must be [{self.rows}, {self.dim}] '
                             f'(the rows given to prepare), got {list(x_t.shape)}')
        np.copyto(self.x_t, x_t.detach().to('cpu', torch.float32).numpy())
        self.t[0] = t
        self.session.run_with_iobinding(self.binding)
        # Copy out: the bound buffer is overwritten by the next step.
        return torch.from_numpy(self.eps.copy()).to(x_t.device, x_t.dtype)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to('cpu', torch.float32).numpy())
