"""
ROS parameters of the node <-> the typed configuration, in one function.

Every field of :class:`~scorehmr_ros.config.RefinerConfig` is the parameter
``refiner.<section>.<field>`` (``refiner.device``, ``refiner.dtype`` at the top). ROS
parameters have no null, so an optional string is ``''`` and an optional int ``0`` when
unset. Node settings (cameras, synchronisation, queues) form :class:`NodeSettings`.
"""

import dataclasses
import typing
from typing import Any, Dict, List, Tuple

from rcl_interfaces.msg import ParameterDescriptor, ParameterType

from scorehmr_ros.config import config_from_dict, config_to_dict, RefinerConfig
from scorehmr_ros.fusion.online import MODES as TEMPORAL_MODES

#: Front ends the node has (where the 2D keypoints and the regression estimate come from).
FRONT_ENDS = ('upstream',)
INPUT_QOS = ('sensor_data', 'reliable')
TEMPORAL = ('per_frame', 'online')


def check_inputs(cameras, input_qos: str) -> None:
    """
    Check the camera names and input QoS that every node of the package reads.

    :param cameras: camera names (relative, unique, non-empty).
    :param input_qos: one of :data:`INPUT_QOS`.
    :raises ValueError: naming the bad value.
    """
    if not cameras or any(not c or c.startswith('/') for c in cameras):
        raise ValueError(f'cameras must be non-empty relative names, got {cameras!r}')
    if len(set(cameras)) != len(cameras):
        raise ValueError(f'cameras must be unique, got {cameras!r}')
    if input_qos not in INPUT_QOS:
        raise ValueError(f'input_qos must be one of {INPUT_QOS}, got {input_qos!r}')


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    """
    Node-level settings (everything that is not the refinement engine).

    :param cameras: camera names; topics ``<camera>/image``, ``<camera>/camera_info`` and
        ``<camera>/detections`` relative to the node namespace.
    :param front_end: where keypoints and estimates come from: ``'upstream'`` (a
        ``PersonDetectionArray`` per camera).
    :param fixed_frame: frame of the fused bodies (calibrated multi-view: one body per
        tracked person, TF ``body_<id>`` under it); ``''`` publishes each camera's bodies
        in its own optical frame (uncalibrated, the paper's per-view refinement).
    :param calibration_file: camera extrinsics YAML (docs/multiview_temporal.md; its
        ``world_frame`` must be ``fixed_frame``); ``''`` = none.
    :param extrinsics_from_tf: read camera poses from ``/tf_static`` and ``/tf`` (chain
        from ``fixed_frame`` to each CameraInfo frame_id) for cameras not in
        ``calibration_file``.
    :param extrinsics_max_age_s: a camera chain with a ``/tf`` (not static) transform
        older than this is stale: the camera goes the per-camera path (0: never stale).
    :param temporal: ``per_frame`` (each set refined on its own) or ``online`` (a causal
        sliding window per track; fused bodies only).
    :param temporal_window: frames per track window in ``online`` mode.
    :param temporal_mode: ``window`` (re-refine the track's last ``temporal_window``
        frames jointly every frame) or ``frozen`` (refine only the newest frame, pulled
        toward the earlier, frozen results: fewer rows, cheaper); see
        :class:`~scorehmr_ros.fusion.online.OnlineConfig`.
    :param temporal_warm_iters: outer iterations (S) of an online frame with history (a
        track's first frame runs ``refiner.sampler.outer_iters``); 1 is the streaming
        setting of benchmarks/README.md.
    :param temporal_max_gap_s: a track unseen for longer restarts its window (counted).
    :param tracker_max_age_s: a track unseen for longer is dropped (a new id later).
    :param tracker_gate_m: largest 3D distance of a person to a track's prediction.
    :param slop_s: largest stamp spread of one synchronised set of cameras, seconds.
    :param sync_queue_size: messages per camera waiting for partners.
    :param max_queue: synchronised sets waiting for the refinement worker; more are
        dropped (oldest first) and counted.
    :param stale_age_s: a set older than this (input stamp vs. the node clock) when the
        worker takes it is dropped and counted; 0 disables.
    :param camera_timeout_s: a camera silent this long (node clock) is left out of
        synchronisation and reported until it publishes again.
    :param rectified: keypoints are in rectified images (intrinsics from P, not K).
    :param marker_lifetime_s: RViz markers vanish this long after their last update.
    :param input_qos: ``sensor_data`` (best effort, keep last 5: connects to best-effort
        camera drivers and drops rather than queues) or ``reliable`` (e.g. for a bag
        player over a lossy link).
    :param mesh_markers: also publish each body's mesh as a ``TRIANGLE_LIST`` marker
        (skins the full mesh once per published body).
    :param diagnostics_period_s: period of ``/diagnostics``.
    :param max_people: people refined per camera and frame; more are dropped (lowest
        detection score first) and counted, so that one crowded frame cannot stall the
        worker.
    :param max_future_s: detections stamped more than this ahead of the node clock are
        dropped and counted (a broken clock upstream would otherwise look like a time
        jump to every later message); 0 disables.
    :param record_bag: directory of an MCAP rosbag2 that records everything the node
        publishes (bodies, /tf, markers, joint_states, /diagnostics); ``''`` records
        nothing. It must not exist yet; it is closed on shutdown (also on SIGINT/SIGTERM).
    :param record_inputs: also record the input messages the node received (images,
        camera infos, detections) into ``record_bag``.
    :param warmup_frames: before subscribing, refine this many synthetic frames of one
        person seen by every camera (then forget them), so that ``engine.compile`` builds
        its graphs before the first real frame instead of during it; 0 disables. With the
        online window use ``temporal_window + 1`` to cover every window size.
    """

    cameras: Tuple[str, ...] = ('cam0',)
    front_end: str = 'upstream'
    fixed_frame: str = ''
    calibration_file: str = ''
    extrinsics_from_tf: bool = False
    extrinsics_max_age_s: float = 1.0
    temporal: str = 'per_frame'
    temporal_window: int = 3
    temporal_mode: str = 'window'
    temporal_warm_iters: int = 5
    temporal_max_gap_s: float = 0.5
    tracker_max_age_s: float = 1.0
    tracker_gate_m: float = 0.5
    slop_s: float = 0.02
    sync_queue_size: int = 10
    max_queue: int = 2
    stale_age_s: float = 1.0
    camera_timeout_s: float = 2.0
    rectified: bool = False
    marker_lifetime_s: float = 0.5
    input_qos: str = 'sensor_data'
    mesh_markers: bool = False
    diagnostics_period_s: float = 1.0
    max_people: int = 20
    max_future_s: float = 5.0
    record_bag: str = ''
    record_inputs: bool = False
    warmup_frames: int = 0

    def __post_init__(self):
        check_inputs(self.cameras, self.input_qos)
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f'front_end must be one of {FRONT_ENDS}, got {self.front_end!r}')
        if self.temporal not in TEMPORAL:
            raise ValueError(f'temporal must be one of {TEMPORAL}, got {self.temporal!r}')
        if not self.fixed_frame and (self.calibration_file or self.extrinsics_from_tf
                                     or self.temporal != 'per_frame'):
            raise ValueError('calibration_file, extrinsics_from_tf and temporal: online need '
                             "fixed_frame (the frame of the fused bodies); got fixed_frame=''")
        if self.fixed_frame.startswith('/'):
            raise ValueError(f'fixed_frame must not start with "/", got {self.fixed_frame!r}')
        if self.temporal_mode not in TEMPORAL_MODES:
            raise ValueError(f'temporal_mode must be one of {TEMPORAL_MODES}, got '
                             f'{self.temporal_mode!r}')
        for name in ('sync_queue_size', 'max_queue', 'max_people', 'temporal_window',
                     'temporal_warm_iters'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        for name in ('slop_s', 'stale_age_s', 'camera_timeout_s', 'marker_lifetime_s',
                     'max_future_s', 'extrinsics_max_age_s'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        for name in ('temporal_max_gap_s', 'tracker_max_age_s', 'tracker_gate_m'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')
        if self.diagnostics_period_s <= 0:
            raise ValueError('diagnostics_period_s must be > 0, got '
                             f'{self.diagnostics_period_s}')
        if self.warmup_frames < 0:
            raise ValueError(f'warmup_frames must be >= 0, got {self.warmup_frames}')
        if self.record_inputs and not self.record_bag:
            raise ValueError('record_inputs needs record_bag (a bag directory), got '
                             "record_bag=''")


_SECTIONS = {f.name: f.type for f in dataclasses.fields(RefinerConfig)}


def _field_docs(cls) -> Dict[str, str]:
    """``:param name: text`` lines of a dataclass docstring, joined per field."""
    docs: Dict[str, str] = {}
    current = None
    for line in (cls.__doc__ or '').splitlines():
        stripped = line.strip()
        if stripped.startswith(':param '):
            name, _, text = stripped[len(':param '):].partition(':')
            current = name.strip()
            docs[current] = text.strip()
        elif current and stripped and not stripped.startswith(':'):
            docs[current] += ' ' + stripped
        else:
            current = None
    return docs


def _ros_default(value: Any, hint) -> Any:
    """ROS-representable default of a config field (None -> '' or 0)."""
    if value is not None:
        return list(value) if isinstance(value, tuple) else value
    args = typing.get_args(hint)
    return 0 if int in args else ''


def _from_ros(value: Any, hint) -> Any:
    if typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint):
        return None if value in ('', 0) else value
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def parameter_table() -> List[Tuple[str, Any, Any, str]]:
    """
    Every parameter: ``(name, default, type hint, description)``.

    :return: node settings first, then the ``refiner.*`` engine parameters.
    """
    table = []
    docs = _field_docs(NodeSettings)
    for field in dataclasses.fields(NodeSettings):
        default = field.default
        table.append((field.name, list(default) if isinstance(default, tuple) else default,
                      field.type, docs.get(field.name, '')))
    top_docs = _field_docs(RefinerConfig)
    defaults = config_to_dict(RefinerConfig())
    for section, cls in _SECTIONS.items():
        if not dataclasses.is_dataclass(cls):
            table.append((f'refiner.{section}', defaults[section], cls,
                          top_docs.get(section, '')))
            continue
        docs = _field_docs(cls)
        for field in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[field.name]
            table.append((f'refiner.{section}.{field.name}',
                          _ros_default(defaults[section][field.name], hint), hint,
                          docs.get(field.name, '')))
    return table


def declare_and_read(node) -> Tuple[NodeSettings, RefinerConfig]:
    """
    Declare every parameter with a described ``ParameterDescriptor``; build the configs.

    Values come from ``--params-file`` / launch overrides; missing ones take the
    dataclass defaults. Invalid values raise ``ValueError`` naming the field.

    :param node: the ``rclpy`` node.
    :return: ``(node settings, refiner config)``.
    """
    settings: Dict[str, Any] = {}
    engine: Dict[str, Any] = {}
    for name, default, hint, description in parameter_table():
        descriptor = ParameterDescriptor(description=description, read_only=True)
        if isinstance(default, list):
            descriptor.type = ParameterType.PARAMETER_STRING_ARRAY
        value = node.declare_parameter(name, default, descriptor).value
        if name.startswith('refiner.'):
            parts = name.split('.')[1:]
            if len(parts) == 1:
                engine[parts[0]] = value
            else:
                engine.setdefault(parts[0], {})[parts[1]] = _from_ros(value, hint)
        else:
            settings[name] = tuple(value) if isinstance(default, list) else (
                float(value) if hint is float else value)
    return NodeSettings(**settings), config_from_dict(engine)
