"""
Denoiser checkpoints: the released ScoreHMR format and the project's own format.

Released checkpoints (``model-100.pt``) are a dict whose ``'ema'`` entry is the state of
an EMA wrapper around the whole diffusion module, so the denoiser's parameters appear
as ``ema_model.model.<module path>``. Everything is read with
``torch.load(weights_only=True)``: no pickled code from a model file ever runs.

The project's own format is a dict ``{'format', 'version', 'config', 'state_dict',
'meta'}`` made only of tensors and plain Python values.
"""

import dataclasses
import logging
import os
import re
from typing import Any, Dict, Optional, Tuple

import torch

from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig, POSE_DIM, SHAPE_DIM

LOG = logging.getLogger(__name__)

FORMAT_NAME = 'scorehmr_ros.denoiser'
#: Prefix of the names of checkpoints shipped inside the package (``scorehmr_ros/models/``).
BUILTIN_PREFIX = 'builtin:'
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'models')
FORMAT_VERSION = 1
# Where the denoiser's parameters sit inside the released checkpoints, most specific first.
RELEASED_PREFIXES = ('ema_model.model.', 'online_model.model.', 'model.')


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not match the expected layout."""


def load_denoiser(path: str, map_location: str = 'cpu') -> Tuple[Denoiser, Dict[str, Any]]:
    """
    Load a denoiser from either checkpoint format.

    :param path: ``.pt`` file in the released ScoreHMR layout or the project's format, or
        ``builtin:NAME`` for a checkpoint shipped with the package (see
        :func:`resolve_checkpoint`).
    :param map_location: device for the loaded tensors.
    :return: ``(denoiser in eval mode, meta dict)``; meta says which format was read.
    """
    path = resolve_checkpoint(path)
    data = _torch_load(path, map_location)
    if isinstance(data, dict) and data.get('format') == FORMAT_NAME:
        return _load_own(path, data)
    return _load_released(path, data)


def builtin_checkpoints() -> Dict[str, str]:
    """
    Checkpoints shipped inside the package.

    :return: name (without the ``builtin:`` prefix) -> file path.
    """
    if not os.path.isdir(BUILTIN_DIR):
        return {}
    return {name[:-3]: os.path.join(BUILTIN_DIR, name) for name in sorted(os.listdir(BUILTIN_DIR))
            if name.endswith('.pt')}


def resolve_checkpoint(path: str) -> str:
    """
    Map ``builtin:NAME`` to the packaged file; other paths are returned unchanged.

    :param path: a file path or ``builtin:NAME``.
    :return: the file path.
    :raises CheckpointError: for an unknown builtin name (the message lists the known ones).
    """
    if not str(path).startswith(BUILTIN_PREFIX):
        return path
    name = str(path)[len(BUILTIN_PREFIX):]
    known = builtin_checkpoints()
    if name not in known:
        raise CheckpointError(
            f'model.checkpoint {path!r}: no such builtin checkpoint; shipped: '
            f'{", ".join(BUILTIN_PREFIX + k for k in known) or "none"} (in {BUILTIN_DIR})')
    return known[name]


def save_denoiser(path: str, denoiser: Denoiser, meta: Optional[Dict[str, Any]] = None) -> None:
    """
    Save a denoiser in the project's format.

    :param path: output ``.pt`` file.
    :param denoiser: the network.
    :param meta: plain-data description (training data, provenance, ...).
    """
    state = {k: v.detach().cpu().clone() for k, v in denoiser.state_dict().items()}
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f'refusing to save {path}: non-finite values in {bad[:5]}')
    payload = {
        'format': FORMAT_NAME,
        'version': FORMAT_VERSION,
        'config': dataclasses.asdict(denoiser.config),
        'state_dict': state,
        'meta': dict(meta or {}),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(payload, path)


def released_state_dict(denoiser: Denoiser) -> Dict[str, torch.Tensor]:
    """
    Parameters under the released checkpoints' ``ema_model.model.`` key names.

    :param denoiser: the network.
    :return: flat dict ready to be placed under a checkpoint's ``'ema'`` key.
    """
    return {RELEASED_PREFIXES[0] + k: v.detach().cpu().clone()
            for k, v in denoiser.state_dict().items()}


def infer_config(state: Dict[str, torch.Tensor]) -> DenoiserConfig:
    """
    Recover the architecture from parameter shapes.

    :param state: denoiser state dict with module-path keys (no prefix).
    :return: the matching :class:`DenoiserConfig`.
    """
    try:
        ln1 = state['blocks.0.block.layer_norm1.weight']
        hidden = state['blocks.0.block.linear_layer1.weight'].shape[0]
    except KeyError as err:
        raise CheckpointError(f'not a ScoreHMR denoiser state dict: missing {err}') from None
    num_blocks = _count_blocks(state, 'blocks')
    use_shape = 'init_mlp_betas.weight' in state
    shape_cond_dim = None
    num_shape_blocks = 2
    cond_dim = ln1.shape[0] - POSE_DIM
    if use_shape:
        shape_cond = state['blocks_betas.0.block.layer_norm1.weight'].shape[0] - SHAPE_DIM
        num_shape_blocks = _count_blocks(state, 'blocks_betas')
        # Equal sizes mean both branches read the same features (ProHMR); otherwise the
        # shape branch reads its own features appended after the pose ones (PARE).
        shape_cond_dim = None if shape_cond == cond_dim else shape_cond
    return DenoiserConfig(cond_dim=cond_dim, hidden_dim=hidden, num_blocks=num_blocks,
                          use_shape=use_shape, shape_cond_dim=shape_cond_dim,
                          num_shape_blocks=num_shape_blocks)


def _torch_load(path: str, map_location: str) -> Any:
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: B902 - any unpickling failure is a bad file
        raise CheckpointError(
            f'cannot read checkpoint {path} with weights_only=True (only tensors and plain '
            f'data are accepted; files that need code to load are refused): {err}') from err


def _load_own(path: str, data: Dict[str, Any]) -> Tuple[Denoiser, Dict[str, Any]]:
    if data.get('version') != FORMAT_VERSION:
        raise CheckpointError(
            f'{path}: format version {data.get("version")!r} is not supported '
            f'(expected {FORMAT_VERSION})')
    try:
        config = DenoiserConfig(**data['config'])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f'{path}: bad denoiser config: {err}') from err
    denoiser = _build(path, config, data['state_dict'])
    meta = dict(data.get('meta') or {})
    meta['checkpoint_format'] = 'scorehmr_ros'
    return denoiser, meta


def _load_released(path: str, data: Any) -> Tuple[Denoiser, Dict[str, Any]]:
    if not isinstance(data, dict):
        raise CheckpointError(f'{path}: expected a dict checkpoint, got {type(data).__name__}')
    source = 'ema' if 'ema' in data else 'model' if 'model' in data else None
    flat = data[source] if source else data
    if not isinstance(flat, dict):
        raise CheckpointError(f'{path}: entry {source!r} is not a state dict')
    state = _strip_prefix(path, flat)
    config = infer_config(state)
    denoiser = _build(path, config, state)
    return denoiser, {'checkpoint_format': 'released', 'weights': source or 'flat',
                      'step': _plain(data.get('step'))}


def _strip_prefix(path: str, flat: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    for prefix in RELEASED_PREFIXES:
        state = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        if state:
            return state
    if 'init_mlp.weight' in flat:
        return dict(flat)
    raise CheckpointError(
        f'{path}: no denoiser parameters found (looked for keys starting with '
        f'{", ".join(RELEASED_PREFIXES)}); first keys: {list(flat)[:5]}')


def _build(path: str, config: DenoiserConfig, state: Dict[str, torch.Tensor]) -> Denoiser:
    denoiser = Denoiser(config)
    expected = denoiser.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f'{path}: parameter names do not match the ScoreHMR denoiser '
            f'(missing {missing[:5]}, unexpected {unexpected[:5]})')
    for key, value in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != value.shape:
            raise CheckpointError(
                f'{path}: {key} has shape {tuple(getattr(got, "shape", ()))}, '
                f'expected {tuple(value.shape)}')
        if not torch.isfinite(got).all():
            raise CheckpointError(f'{path}: {key} contains NaN or inf')
    denoiser.load_state_dict(state)
    return denoiser.eval()


def _count_blocks(state: Dict[str, torch.Tensor], name: str) -> int:
    pattern = re.compile(rf'^{name}\.(\d+)\.')
    indices = {int(m.group(1)) for k in state for m in [pattern.match(k)] if m}
    return max(indices) + 1 if indices else 0


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value if isinstance(value, (int, float, str, type(None))) else repr(value)
