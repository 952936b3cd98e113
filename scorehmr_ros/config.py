"""
Typed configuration of the refinement engine, loadable from YAML.

One frozen dataclass per component; defaults are the ScoreHMR paper's single-frame
keypoint-fitting settings. :func:`load_config` reads a YAML file whose top-level keys
are the sections below; unknown keys are errors (a typo must not be silently ignored).
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional

import yaml

from scorehmr_ros.guidance.early_stopping import RULES as EARLY_STOPPING_RULES

DTYPES = ('float32', 'float64')
BACKENDS = ('torch', 'folded', 'onnxruntime', 'tensorrt')
BODY_PATHS = ('mesh', 'joints')
PRECISIONS = ('float32', 'bfloat16', 'float16')
KEYPOINT_LAYOUTS = ('body25', 'scorehmr44', 'coco17', 'smpl24')
MULTIVIEW_MODES = ('consistency', 'calibrated')
CALIBRATED_INITS = ('anchor', 'average')
CALIBRATED_LOSSES = ('mean', 'sum')


def _positive(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{type(obj).__name__}.{name} must be a positive int, '
                             f'got {value!r}')


def _one_of(obj, name, allowed):
    value = getattr(obj, name)
    if value not in allowed:
        raise ValueError(f'{type(obj).__name__}.{name} must be one of {allowed}, '
                         f'got {value!r}')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """
    Which denoiser to run.

    :param checkpoint: released ``model-100.pt`` or a project checkpoint; ``None`` builds
        a network with random weights (a plumbing check only, always reported as such).
    :param cond_dim: feature size of a random-weight network (3072 PARE, 2048 ProHMR).
    :param use_shape: random-weight network also diffuses SMPL shape.
    :param shape_cond_dim: extra shape-branch features of a random-weight network.
    :param betas_stats: ``.npz`` with ``betas_min``/``betas_max`` [10], needed with shape.
    :param random_seed: seed of the random weights.
    """

    checkpoint: Optional[str] = None
    cond_dim: int = 3072
    use_shape: bool = False
    shape_cond_dim: Optional[int] = None
    betas_stats: Optional[str] = None
    random_seed: int = 0


@dataclasses.dataclass(frozen=True)
class BodyConfig:
    """
    Body model files.

    :param model_path: SMPL ``.pkl``/``.npz`` file or folder; ``None`` uses the
        synthetic SMPL-format body (generated, not SMPL).
    :param extra_regressor: optional [19, 6890] regressor of the 44-joint layout.
    """

    model_path: Optional[str] = None
    extra_regressor: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """
    DDIM inversion + guided sampling (Algorithm 1).

    :param tau: noise level where guidance starts (50; multi-view 100).
    :param ddim_step: DDIM step size Delta t (2; multi-view 10).
    :param outer_iters: S_max, inversion + guided sampling repeats (10).
    :param num_samples: samples per input: the mode, plus ``num_samples - 1`` whose first
        iteration starts from a forward-noised ``x_tau`` instead of the inversion.
    :param early_stopping: ``'relative'`` (authors' code), ``'threshold'`` (paper) or
        ``'none'``; applies to keypoint guidance.
    :param early_stop_tol: threshold of the rule (1e-5).
    :param seed: seed of the sampling noise.
    """

    tau: int = 50
    ddim_step: int = 2
    outer_iters: int = 10
    num_samples: int = 1
    early_stopping: str = 'relative'
    early_stop_tol: float = 1e-5
    seed: int = 0

    def __post_init__(self):
        _positive(self, 'tau', 'ddim_step', 'outer_iters', 'num_samples')
        if self.tau < self.ddim_step:
            raise ValueError(f'sampler.tau ({self.tau}) must be >= sampler.ddim_step '
                             f'({self.ddim_step})')
        if self.tau >= 1000:
            raise ValueError(f'sampler.tau must be < 1000 (T), got {self.tau}')
        _one_of(self, 'early_stopping', EARLY_STOPPING_RULES)


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    """
    Observation losses and their step sizes rho.

    :param keypoints: keypoint reprojection guidance L_repr.
    :param multiview: multi-view guidance of rows sharing a ``view_group``.
    :param multiview_mode: ``'consistency'`` (the paper's L_MV: each view's body pose
        pulled to the mean over views) or ``'calibrated'`` (one body per person in the
        frame of its anchor view, reprojected into every view with the extrinsics
        ``Observations.world_to_camera``; falls back to consistency without them).
    :param calibrated_init: start of a calibrated group: ``'average'`` (chordal mean of
        the views' rotations and median of their pelvis positions, mapped into the anchor
        frame; measured better) or ``'anchor'`` (the anchor view's regression estimate).
    :param calibrated_loss: how a calibrated group's per-view keypoint losses combine:
        ``'mean'`` over the views with a confident keypoint (keeps rho_keypoints' single-view
        meaning; measured better) or ``'sum'``.
    :param temporal: temporal smoothness L_temp.
    :param rho_keypoints: step size of L_repr (0.003).
    :param rho_multiview: step size of L_MV (0.005).
    :param rho_temporal: step size of L_temp (30).
    :param gmof_sigma_px: Geman-McClure scale (100 px).
    :param multiview_weight: consistency weight inside L_MV (300).
    :param optimize_camera: one Adam step on the camera translation per guided step.
    :param camera_lr: its learning rate (0.01).
    :param use_hips: keep hip keypoints (the authors' default); ``False`` zeroes them.
    :param grad_scale: extra factor on the whole gradient (1).
    """

    keypoints: bool = True
    multiview: bool = False
    multiview_mode: str = 'consistency'
    calibrated_init: str = 'average'
    calibrated_loss: str = 'mean'
    temporal: bool = False
    rho_keypoints: float = 0.003
    rho_multiview: float = 0.005
    rho_temporal: float = 30.0
    gmof_sigma_px: float = 100.0
    multiview_weight: float = 300.0
    optimize_camera: bool = True
    camera_lr: float = 0.01
    use_hips: bool = True
    grad_scale: float = 1.0

    def __post_init__(self):
        for name in ('rho_keypoints', 'rho_multiview', 'rho_temporal', 'camera_lr'):
            if getattr(self, name) < 0:
                raise ValueError(f'guidance.{name} must be >= 0, got {getattr(self, name)}')
        if self.gmof_sigma_px <= 0:
            raise ValueError(f'guidance.gmof_sigma_px must be > 0, got {self.gmof_sigma_px}')
        _one_of(self, 'multiview_mode', MULTIVIEW_MODES)
        _one_of(self, 'calibrated_init', CALIBRATED_INITS)
        _one_of(self, 'calibrated_loss', CALIBRATED_LOSSES)
        if self.multiview and self.multiview_mode == 'calibrated' and not self.keypoints:
            raise ValueError('guidance.multiview_mode calibrated fuses keypoints of several '
                             'views: it needs guidance.keypoints true')


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """
    How the engine computes (same results, different speed).

    The defaults reproduce the authors' implementation bit for bit. The fast path
    (``backend: folded`` or ``onnxruntime``, ``body: joints``) equals it to ~1e-6 per
    step; early-stopping decisions that sit right at the threshold can then differ.

    :param backend: denoiser runtime: ``torch`` (reference network), ``folded`` (exact
        algebraic folding), ``onnxruntime`` (folded graphs), ``tensorrt`` (engine built
        from the ONNX file where TensorRT is installed). A missing runtime falls back to
        the next one with one log line.
    :param body: ``mesh`` (full smplx skinning) or ``joints`` (forward kinematics and
        the 21 keypoint vertices only).
    :param onnx_dir: folder of exported graphs (``scorehmr export``); ``None`` exports
        the configured network to a temporary folder at start-up.
    :param threads: torch / ONNX Runtime intra-op threads (0: library default).
    :param precision: hidden-layer products of the ``folded`` backend in ``float32``,
        ``bfloat16`` or ``float16`` (statistics stay float32; error bound in the README).
    :param compile: with ``body: joints``, fuse the keypoint guidance gradient with
        ``torch.compile`` (needs a C++ compiler on CPU; the first call per batch size
        compiles for about a minute).
    :param steps_per_call: with ``compile``, DDIM steps fused into one compiled call (1:
        one call per step). At batch 1 a call's fixed cost is comparable to its
        arithmetic, so 5 runs a sweep about 1.5x faster; compiling takes about K times
        longer (minutes on a small CPU), once per process and batch size.
    :param invert_steps_per_call: with ``compile``, the same for the inversion sweep
        (``None``: ``steps_per_call``). Inversion graphs carry no gradient and compile
        several times faster than guided ones, so 5 there costs tens of seconds once and
        runs the inversion ~1.5x faster at batch 1.
    :param cpp_wrapper: with ``compile``, inductor generates the graphs' host code in C++
        (less fixed cost per kernel at small batches; compiling takes several times
        longer).
    """

    backend: str = 'torch'
    body: str = 'mesh'
    onnx_dir: Optional[str] = None
    threads: int = 0
    compile: bool = False
    precision: str = 'float32'
    steps_per_call: int = 1
    invert_steps_per_call: Optional[int] = None
    cpp_wrapper: bool = False

    def __post_init__(self):
        _one_of(self, 'backend', BACKENDS)
        _positive(self, 'steps_per_call')
        if self.invert_steps_per_call is not None:
            _positive(self, 'invert_steps_per_call')
        _one_of(self, 'body', BODY_PATHS)
        _one_of(self, 'precision', PRECISIONS)
        if self.precision != 'float32' and self.backend != 'folded':
            raise ValueError(f'engine.precision {self.precision!r} is implemented by the '
                             f"'folded' backend, not {self.backend!r}")


@dataclasses.dataclass(frozen=True)
class RefinerConfig:
    """
    Everything the :class:`~scorehmr_ros.refiner.Refiner` needs.

    :param device: torch device string (``'cpu'``, ``'cuda'``, ``'cuda:1'``).
    :param dtype: ``'float32'`` (default) or ``'float64'``.
    """

    model: ModelConfig = ModelConfig()
    body: BodyConfig = BodyConfig()
    sampler: SamplerConfig = SamplerConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    engine: EngineConfig = EngineConfig()
    device: str = 'cpu'
    dtype: str = 'float32'

    def __post_init__(self):
        _one_of(self, 'dtype', DTYPES)

    def replace(self, **sections: Any) -> 'RefinerConfig':
        """
        Copy with some sections (dataclasses or dicts of their fields) replaced.

        :param sections: e.g. ``sampler={'tau': 100}``.
        :return: new config.
        """
        return config_from_dict(_merge(config_to_dict(self), {
            k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
            for k, v in sections.items()}))


def config_to_dict(config: RefinerConfig) -> Dict[str, Any]:
    """Plain nested dict of a config."""
    return dataclasses.asdict(config)


def config_from_dict(data: Mapping[str, Any]) -> RefinerConfig:
    """
    Build a config from nested dicts; unknown keys raise ``ValueError``.

    :param data: mapping with optional sections ``model, body, sampler, guidance`` and
        scalars ``device, dtype``.
    :return: the config.
    """
    sections = {'model': ModelConfig, 'body': BodyConfig, 'sampler': SamplerConfig,
                'guidance': GuidanceConfig, 'engine': EngineConfig}
    kwargs: Dict[str, Any] = {}
    for key, value in (data or {}).items():
        if key in sections:
            kwargs[key] = _build_section(key, sections[key], value or {})
        elif key in ('device', 'dtype'):
            kwargs[key] = value
        else:
            raise ValueError(f'unknown config key {key!r}; allowed: '
                             f'{sorted(list(sections) + ["device", "dtype"])}')
    return RefinerConfig(**kwargs)


def load_config(path: Optional[str] = None,
                overrides: Optional[Mapping[str, Any]] = None) -> RefinerConfig:
    """
    Load a YAML config and apply dotted overrides.

    :param path: YAML file or ``None`` for the defaults.
    :param overrides: e.g. ``{'sampler.tau': 100, 'guidance.multiview': True}``.
    :return: the config.
    """
    data: Dict[str, Any] = {}
    if path is not None:
        with open(path, 'r', encoding='utf-8') as handle:
            loaded = yaml.safe_load(handle)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f'{path}: expected a mapping at the top level')
        data = loaded or {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split('.')
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(data)


def _build_section(name: str, cls, values: Mapping[str, Any]):
    if not isinstance(values, Mapping):
        raise ValueError(f'config section {name!r} must be a mapping, got {values!r}')
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f'unknown key(s) {unknown} in config section {name!r}; '
                         f'allowed: {sorted(allowed)}')
    return cls(**values)


def _merge(base: Dict[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
