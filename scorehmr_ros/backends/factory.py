"""
Pick a denoiser backend by name, falling back when a runtime is not installed.

Fallback order: ``tensorrt`` -> ``onnxruntime`` -> ``folded``; ``torch`` and ``folded``
are always available. Each fallback is logged once, naming what is missing.
"""

import importlib.util
import logging

import torch

from scorehmr_ros.backends.base import DenoiserBackend
from scorehmr_ros.backends.torch_backends import TorchFoldedBackend, TorchReferenceBackend
from scorehmr_ros.diffusion.denoiser import Denoiser

LOG = logging.getLogger(__name__)
FALLBACK = {'tensorrt': 'onnxruntime', 'onnxruntime': 'folded'}
RUNTIME_MODULE = {'tensorrt': 'tensorrt', 'onnxruntime': 'onnxruntime'}


def make_backend(name: str, denoiser: Denoiser, onnx_dir: str = None,
                 threads: int = 0, device: str = 'cpu',
                 precision: str = 'float32') -> DenoiserBackend:
    """
    Build the named backend (or its fallback).

    :param name: ``torch``, ``folded``, ``onnxruntime`` or ``tensorrt``.
    :param denoiser: the network (already on ``device``).
    :param onnx_dir: exported graphs for the ONNX-based runtimes (None: export now).
    :param threads: intra-op threads for ONNX Runtime (0: default).
    :param device: torch device of the engine.
    :param precision: ``float32``, ``bfloat16`` or ``float16`` products (``folded`` only).
    :return: the backend.
    """
    while name in RUNTIME_MODULE and importlib.util.find_spec(RUNTIME_MODULE[name]) is None:
        LOG.warning('backend %r needs the Python package %r, which is not installed; '
                    'falling back to %r', name, RUNTIME_MODULE[name], FALLBACK[name])
        name = FALLBACK[name]
    if name == 'torch':
        return TorchReferenceBackend(denoiser)
    if name == 'folded':
        compute = None if precision == 'float32' else getattr(torch, precision)
        return TorchFoldedBackend(denoiser, compute_dtype=compute)
    if name == 'onnxruntime':
        from scorehmr_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        providers = (['CUDAExecutionProvider', 'CPUExecutionProvider']
                     if str(device).startswith('cuda') else ['CPUExecutionProvider'])
        if onnx_dir:
            return OnnxRuntimeBackend(onnx_dir, providers=providers, threads=threads,
                                      expect_cond_dim=denoiser.config.total_cond_dim)
        return OnnxRuntimeBackend.from_denoiser(denoiser, providers=providers, threads=threads)
    if name == 'tensorrt':
        from scorehmr_ros.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend.from_denoiser(denoiser, onnx_dir=onnx_dir)
    raise ValueError(f'unknown backend {name!r}')
