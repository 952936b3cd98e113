"""
TensorRT backend: an engine built from the exported ``denoiser.onnx`` (CUDA only).

Uses TensorRT 10's name-based I/O (``num_io_tensors``, ``get_tensor_name``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) with torch CUDA
tensors as buffers, so no extra CUDA binding package is needed. The engine has one
optimisation profile over the row axis ``N`` (min/opt/max). The features stay bound
between DDIM steps: :meth:`prepare` copies them to a device buffer once.

TensorRT is an optional extra: it cannot be installed on the development machines of
this project, so this module is exercised only where ``tensorrt`` imports and a GPU
is present (its tests skip elsewhere, saying why).
"""

import logging
import os
from typing import Any, Optional, Tuple

import torch

from scorehmr_ros.backends.base import DenoiserBackend
from scorehmr_ros.backends.onnx_export import check_onnx, export_onnx, OnnxModelError
from scorehmr_ros.diffusion.denoiser import Denoiser

LOG = logging.getLogger(__name__)
DEFAULT_PROFILE = (1, 8, 64)


def build_engine(onnx_path: str, engine_path: str,
                 profile: Tuple[int, int, int] = DEFAULT_PROFILE, fp16: bool = False) -> str:
    """
    Build and serialise a TensorRT engine from ``denoiser.onnx``.

    :param onnx_path: the full (unfolded) denoiser graph.
    :param engine_path: output ``.engine`` file.
    :param profile: ``(min, opt, max)`` rows N.
    :param fp16: allow half-precision kernels (LayerNorm statistics stay float32).
    :return: ``engine_path``.
    """
    import tensorrt as trt

    check_onnx(onnx_path)
    lo, opt, hi = profile
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f'batch profile must satisfy 1 <= min <= opt <= max, got {profile}')
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, 'rb') as handle:
        if not parser.parse(handle.read()):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise OnnxModelError(f'{onnx_path}: TensorRT cannot parse it: {errors}')
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    prof = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        tail = tuple(tensor.shape[1:])
        prof.set_shape(tensor.name, (lo,) + tail, (opt,) + tail, (hi,) + tail)
    config.add_optimization_profile(prof)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise OnnxModelError(f'{onnx_path}: TensorRT failed to build an engine')
    with open(engine_path, 'wb') as handle:
        handle.write(serialized)
    return engine_path


class TensorRTBackend(DenoiserBackend):
    """
    Run a serialised engine of the unfolded denoiser.

    :param engine_path: file from :func:`build_engine`.
    :param diffusion_dim: D the engine was built for.
    :param cond_dim: C the engine was built for.
    """

    name = 'tensorrt'

    def __init__(self, engine_path: str, diffusion_dim: int, cond_dim: int):
        import tensorrt as trt

        if not torch.cuda.is_available():
            raise RuntimeError('the TensorRT backend needs a CUDA device')
        if not os.path.isfile(engine_path):
            raise OnnxModelError(f'TensorRT engine not found: {engine_path}')
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(engine_path, 'rb') as handle:
            self.engine = runtime.deserialize_cuda_engine(handle.read())
        if self.engine is None:
            raise OnnxModelError(f'{engine_path}: not a TensorRT engine for this version')
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != ['cond', 'eps', 't', 'x_t']:
            raise OnnxModelError(f'{engine_path}: tensors {names}, expected x_t, t, cond, eps')
        cond_shape = tuple(self.engine.get_tensor_shape('cond'))
        if cond_shape[-1] != cond_dim:
            raise OnnxModelError(f'{engine_path}: built for {cond_shape[-1]} features, the '
                                 f'configuration expects {cond_dim}')
        self.max_rows = self.engine.get_tensor_profile_shape('x_t', 0)[2][0]
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._d, self._c = diffusion_dim, cond_dim

    @classmethod
    def from_denoiser(cls, denoiser: Denoiser, onnx_dir: Optional[str] = None,
                      profile: Tuple[int, int, int] = DEFAULT_PROFILE) -> 'TensorRTBackend':
        """
        Export (if needed), build and load an engine for a network.

        Without ``onnx_dir`` the graph and engine files go to a temporary folder that is
        removed once the engine is loaded (it lives in memory).
        """
        import tempfile

        if onnx_dir is None:
            with tempfile.TemporaryDirectory(prefix='scorehmr_trt_') as temporary:
                return cls.from_denoiser(denoiser, temporary, profile)
        onnx_path = os.path.join(onnx_dir, 'denoiser.onnx')
        if not os.path.isfile(onnx_path):
            export_onnx(denoiser, onnx_dir)
        engine = build_engine(onnx_path, os.path.join(onnx_dir, 'denoiser.engine'), profile)
        cfg = denoiser.config
        return cls(engine, cfg.diffusion_dim, cfg.total_cond_dim)

    @property
    def diffusion_dim(self) -> int:
        return self._d

    @property
    def cond_dim(self) -> int:
        return self._c

    def _prepare_impl(self, cond: torch.Tensor) -> Any:
        if cond.shape[0] > self.max_rows:
            raise ValueError(f'{cond.shape[0]} rows exceed the engine profile maximum '
                             f'{self.max_rows}; rebuild with a larger profile')
        return cond.detach().to('cuda', torch.float32).contiguous()

    def _eps_impl(self, x_t: torch.Tensor, t: int, prepared: Any) -> torch.Tensor:
        n = x_t.shape[0]
        x = x_t.detach().to('cuda', torch.float32).contiguous()
        steps = torch.full((n,), t, dtype=torch.int64, device='cuda')
        out = torch.empty(n, self._d, dtype=torch.float32, device='cuda')
        for name, tensor in (('x_t', x), ('t', steps), ('cond', prepared)):
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.context.set_tensor_address('eps', out.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())
        self.context.execute_async_v3(self.stream.cuda_stream)
        torch.cuda.current_stream().wait_stream(self.stream)
        return out.to(x_t.device, x_t.dtype)
