"""
Camera extrinsics for the node: a calibration YAML and/or TF edges -> a CalibrationSet.

A small TF buffer of its own (tf2_ros's Python ``Buffer`` is not part of the pip-installed
ROS wheels): it keeps the newest transform of every ``(parent, child)`` edge from
``/tf_static`` (never stale) and ``/tf`` (stamped; stale after ``max_age_s``), and
composes each camera's chain to the fixed frame with
:func:`~scorehmr_ros.fusion.calibration.calibration_from_transforms`. Cameras listed in
the YAML take it; the others come from TF when enabled. No ROS import: the node turns
``TFMessage`` transforms into ``(parent, child, translation, quaternion_xyzw, stamp_s)``.
"""

from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from scorehmr_ros.fusion.calibration import (
    calibration_from_transforms, CalibrationSet, drop_stale, ROTATION_TOL)

#: ``(parent, child, translation [3], quaternion_xyzw [4], stamp_s)``.
Edge = Tuple[str, str, Sequence[float], Sequence[float], float]


class ExtrinsicsSource:
    """
    Extrinsics of the node's cameras in ``fixed_frame``.

    :param fixed_frame: the common frame.
    :param yaml_calibration: a loaded calibration file (its ``world_frame`` must be
        ``fixed_frame``), or None.
    :param use_tf: take cameras not in the YAML from the TF edges.
    :param max_age_s: a chain with a ``/tf`` (non-static) edge older than this, relative to
        the time given to :meth:`calibration`, is stale (0: never).
    :param ignore_child: edges whose child frame it accepts are not stored (e.g. the
        body frames the node publishes itself on ``/tf``).
    :raises ValueError: if the YAML's world frame is not ``fixed_frame``.
    """

    def __init__(self, fixed_frame: str, yaml_calibration: Optional[CalibrationSet] = None,
                 use_tf: bool = False, max_age_s: float = 1.0,
                 ignore_child: Optional[Callable[[str], bool]] = None):
        if not fixed_frame:
            raise ValueError('ExtrinsicsSource: fixed_frame must be a non-empty frame name')
        if yaml_calibration is not None and yaml_calibration.world_frame != fixed_frame:
            raise ValueError(f'calibration_file: world_frame is '
                             f'{yaml_calibration.world_frame!r} but fixed_frame is '
                             f'{fixed_frame!r}; they must be the same frame')
        self.fixed_frame = fixed_frame
        self.yaml_calibration = yaml_calibration
        self.use_tf = use_tf
        self.max_age_s = float(max_age_s)
        self.ignore_child = ignore_child
        #: (parent, child) -> (translation, quaternion, stamp_s or None for static).
        self._edges: Dict[Tuple[str, str], Tuple[np.ndarray, np.ndarray, Optional[float]]] = {}

    @property
    def num_edges(self) -> int:
        """Edges stored."""
        return len(self._edges)

    def add_transforms(self, edges: Iterable[Edge], static: bool) -> int:
        """
        Store TF edges (the newest per ``(parent, child)`` wins).

        :param edges: the transforms.
        :param static: from ``/tf_static`` (never stale).
        :return: number of malformed edges skipped (non-numeric or non-finite values,
            non-unit quaternion, empty frame names, parent == child; on ``/tf`` a missing
            or non-finite stamp, which would never go stale).
        """
        bad = 0
        for parent, child, translation, quat, stamp_s in edges:
            if self.ignore_child is not None and self.ignore_child(child):
                continue
            try:
                trans = np.asarray(translation, dtype=np.float64)
                rot = np.asarray(quat, dtype=np.float64)
                stamp = None if static else float(stamp_s)
            except (TypeError, ValueError):
                bad += 1
                continue
            if not parent or not child or parent == child or trans.shape != (3,) \
                    or rot.shape != (4,) or not np.isfinite(trans).all() \
                    or not np.isfinite(rot).all() \
                    or abs(np.linalg.norm(rot) - 1.0) > ROTATION_TOL \
                    or (stamp is not None and not np.isfinite(stamp)):
                bad += 1
                continue
            self._edges[(parent, child)] = (trans, rot, stamp)
        return bad

    def calibration(self, camera_frames: Mapping[str, str], now_s: float) -> CalibrationSet:
        """
        Build the current calibration of the cameras.

        :param camera_frames: camera name -> optical frame id (from its CameraInfo).
        :param now_s: current time, seconds (for staleness of ``/tf`` edges).
        :return: calibrated cameras and, in ``missing``, why the others are not.
        """
        cameras, missing = {}, {}
        rest = dict(camera_frames)
        if self.yaml_calibration is not None:
            for name in list(rest):
                if name in self.yaml_calibration.cameras:
                    cameras[name] = self.yaml_calibration.cameras[name]
                    del rest[name]
        if rest and self.use_tf:
            stamps = {key: stamp for key, (_, _, stamp) in self._edges.items()
                      if stamp is not None}
            found = calibration_from_transforms(
                [(p, c, t, q) for (p, c), (t, q, _) in self._edges.items()],
                self.fixed_frame, rest, stamps_s=stamps)
            if self.max_age_s > 0:
                found = drop_stale(found, now_s, self.max_age_s)
            cameras.update(found.cameras)
            missing.update(found.missing)
        else:
            for name in rest:
                missing[name] = ('not in calibration_file' if self.yaml_calibration is not None
                                 else 'no extrinsics source')
        return CalibrationSet(self.fixed_frame, cameras, missing)


def transform_edges(transforms, stamp_to_s: Callable[[object], float]) -> Iterable[Edge]:
    """
    ``geometry_msgs/TransformStamped`` -> edges (duck-typed, no ROS import).

    :param transforms: the messages' ``transforms``.
    :param stamp_to_s: converts a ``builtin_interfaces/Time`` to seconds.
    :return: the edges.
    """
    for tf in transforms:
        t, q = tf.transform.translation, tf.transform.rotation
        yield (tf.header.frame_id.lstrip('/'), tf.child_frame_id.lstrip('/'),
               (t.x, t.y, t.z), (q.x, q.y, q.z, q.w), stamp_to_s(tf.header.stamp))
