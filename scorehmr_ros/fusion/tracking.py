"""
Multi-person tracking: stable person ids across frames.

:class:`Tracker` takes the persons of one synchronised frame (the output of
:func:`scorehmr_ros.fusion.association.associate`) and returns one id per person.

Per update:

1. Stamps: a stamp earlier than the previous one (bag loop, clock reset) **resets** the
   tracker: every track is dropped (counted in ``tracks_lost`` and ``time_resets``); ids
   keep increasing, so an id is never reused. Equal stamps are allowed (dt = 0).
2. Tracks unseen for more than ``max_age_s`` are dropped (``tracks_lost``); a person who
   reappears later gets a new id.
3. 3D stage: persons with a triangulated centre (median of their confident 3D keypoints)
   are matched to tracks with a recent 3D centre, predicted at constant velocity, by the
   Hungarian algorithm on the Euclidean distance, gated at ``gate_m``.
4. 2D fallback: what is left, where the person or the track has no 3D centre (a person
   seen by one camera), is matched by the best box IoU in a camera both were seen in
   (boxes around the confident keypoints), gated at ``min_iou``.
5. An assignment with a competitor inside the gate (another track for the same person, or
   another person for the same track) is counted in ``ambiguous_assignments``: with no
   ground truth this is the proxy for a possible id swap (two people crossing).
6. Unmatched persons start new tracks (``detections_unmatched``, ``tracks_created``); a
   person with neither a 3D centre nor a box gets id -1 (``persons_untrackable``).

View indices in :class:`~scorehmr_ros.fusion.association.Person` must name the same
camera in every frame (keep the order of the views fixed).
"""

import dataclasses
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from scorehmr_ros.fusion.association import Person

logger = logging.getLogger(__name__)

# Cost of a forbidden (out-of-gate) pair in the assignment problem: large but finite,
# since linear_sum_assignment rejects matrices whose rows cannot all be assigned finitely.
_FORBIDDEN = 1e9


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """
    Settings of :class:`Tracker`.

    :param max_age_s: a track unseen for longer is dropped, seconds.
    :param gate_m: 3D gate on the distance between a person's centre and a track's
        predicted centre, metres.
    :param min_iou: 2D gate: smallest box IoU in a shared camera.
    :param min_conf: keypoint confidence for the 2D boxes and the 3D centre.
    :param velocity_smoothing: weight in (0, 1] of the newest velocity measurement.
    :param max_speed_m_s: velocity estimates are clipped to this speed, metres/second.
    """

    max_age_s: float = 1.0
    gate_m: float = 0.5
    min_iou: float = 0.3
    min_conf: float = 0.3
    velocity_smoothing: float = 0.5
    max_speed_m_s: float = 3.0

    def __post_init__(self):
        for name in ('max_age_s', 'gate_m', 'max_speed_m_s'):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f'TrackerConfig.{name}: expected a finite value > 0, '
                                 f'got {value!r}')
        for name, low_open in (('min_iou', True), ('min_conf', False),
                               ('velocity_smoothing', True)):
            value = getattr(self, name)
            if not (np.isfinite(value) and (value > 0 if low_open else value >= 0)
                    and value <= 1):
                interval = '(0, 1]' if low_open else '[0, 1]'
                raise ValueError(f'TrackerConfig.{name}: expected a value in {interval}, '
                                 f'got {value!r}')


@dataclasses.dataclass
class TrackerCounters:
    """
    Cumulative counters of the tracker (for ``/diagnostics``).

    :param updates: calls of :meth:`Tracker.update`.
    :param tracks_created: new ids handed out.
    :param tracks_lost: tracks dropped (too old, or at a reset).
    :param ambiguous_assignments: assignments with a competitor inside the gate.
    :param detections_unmatched: persons that matched no existing track.
    :param persons_untrackable: persons with neither a 3D centre nor a 2D box (id -1).
    :param matched_3d: assignments made by the 3D stage.
    :param matched_2d: assignments made by the 2D fallback.
    :param time_resets: resets because a stamp went backwards.
    """

    updates: int = 0
    tracks_created: int = 0
    tracks_lost: int = 0
    ambiguous_assignments: int = 0
    detections_unmatched: int = 0
    persons_untrackable: int = 0
    matched_3d: int = 0
    matched_2d: int = 0
    time_resets: int = 0

    def as_dict(self) -> Dict[str, int]:
        """
        Counters by name.

        :return: ``{name: value}``.
        """
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Track:
    """
    State of one tracked person.

    :param track_id: the stable id.
    :param last_seen_s: stamp of the last matched person, seconds.
    :param hits: persons matched so far.
    :param position_m: [3] last 3D centre (world, metres), or ``None``.
    :param velocity_m_s: [3] smoothed velocity of the 3D centre.
    :param position_stamp_s: stamp of ``position_m``.
    :param boxes: view index -> (box [4] ``(x0, y0, x1, y1)`` pixels, stamp seconds).
    """

    track_id: int
    last_seen_s: float
    hits: int = 0
    position_m: Optional[np.ndarray] = None
    velocity_m_s: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
    position_stamp_s: float = 0.0
    boxes: Dict[int, Tuple[np.ndarray, float]] = dataclasses.field(default_factory=dict)

    def predicted_position(self, stamp_s: float) -> np.ndarray:
        """
        Constant-velocity prediction of the centre.

        :param stamp_s: time of the prediction, seconds.
        :return: [3] metres (requires ``position_m``).
        """
        return self.position_m + self.velocity_m_s * (stamp_s - self.position_stamp_s)


def robust_centre(person: Person, min_conf: float = 0.3) -> Optional[np.ndarray]:
    """
    Median of a person's confident triangulated keypoints.

    :param person: association output.
    :param min_conf: 3D confidence threshold.
    :return: [3] world metres, or ``None`` without a confident finite 3D keypoint.
    """
    good = (person.conf_3d >= max(min_conf, 1e-12)) & np.isfinite(person.points_3d).all(-1)
    if not good.any():
        return None
    return np.median(person.points_3d[good], axis=0)


def keypoint_box(keypoints: np.ndarray, min_conf: float = 0.3) -> Optional[np.ndarray]:
    """
    Axis-aligned box around the confident keypoints.

    :param keypoints: [K, 3] ``(x_px, y_px, conf)``.
    :param min_conf: confidence threshold.
    :return: [4] ``(x0, y0, x1, y1)`` pixels, or ``None`` with fewer than 2 such keypoints.
    """
    good = (keypoints[:, 2] >= max(min_conf, 1e-12)) & np.isfinite(keypoints).all(-1)
    if good.sum() < 2:
        return None
    xy = keypoints[good, :2]
    return np.concatenate((xy.min(0), xy.max(0)))


def box_iou(box_a: np.ndarray, box_b: np.ndarray) -> float:
    """
    Intersection over union of two boxes.

    :param box_a: [4] ``(x0, y0, x1, y1)``.
    :param box_b: [4] ``(x0, y0, x1, y1)``.
    :return: IoU in [0, 1] (0 for empty boxes).
    """
    width = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    height = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


class Tracker:
    """
    Assign stable ids to the persons of successive frames.

    :param config: settings; keyword arguments override single fields, e.g.
        ``Tracker(max_age_s=0.5, gate_m=0.4)``.
    """

    def __init__(self, config: Optional[TrackerConfig] = None, **overrides):
        self.config = dataclasses.replace(config or TrackerConfig(), **overrides)
        self.counters = TrackerCounters()
        self._tracks: List[Track] = []
        self._next_id = 1
        self._last_stamp_s: Optional[float] = None

    @property
    def tracks(self) -> List[Track]:
        """
        The live tracks, for reading only.

        :return: tracks in creation order.
        """
        return list(self._tracks)

    def update(self, stamp_s: float, persons: Sequence[Person]) -> List[int]:
        """
        Track one frame.

        :param stamp_s: capture time, seconds (finite).
        :param persons: the frame's persons.
        :return: one id per person, in order (-1 for an untrackable person).
        """
        stamp_s = float(stamp_s)
        if not np.isfinite(stamp_s):
            raise ValueError(f'Tracker.update: stamp_s must be finite, got {stamp_s!r}')
        config = self.config
        counters = self.counters
        counters.updates += 1
        if self._last_stamp_s is not None and stamp_s < self._last_stamp_s:
            logger.warning('stamp went back from %.6f s to %.6f s: resetting %d tracks',
                           self._last_stamp_s, stamp_s, len(self._tracks))
            counters.time_resets += 1
            counters.tracks_lost += len(self._tracks)
            self._tracks = []
        self._last_stamp_s = stamp_s
        alive = [t for t in self._tracks if stamp_s - t.last_seen_s <= config.max_age_s]
        counters.tracks_lost += len(self._tracks) - len(alive)
        self._tracks = alive
        for track in alive:
            # Old 3D / 2D evidence is no evidence: fall back to what is recent.
            if track.position_m is not None \
                    and stamp_s - track.position_stamp_s > config.max_age_s:
                track.position_m = None
            track.boxes = {v: b for v, b in track.boxes.items()
                           if stamp_s - b[1] <= config.max_age_s}

        centres = [robust_centre(p, config.min_conf) for p in persons]
        boxes = [{v: b for v, b in ((v, keypoint_box(kp, config.min_conf))
                                    for v, kp in p.keypoints_2d.items()) if b is not None}
                 for p in persons]
        ids = [-1] * len(persons)
        free_persons = list(range(len(persons)))
        free_tracks = list(range(len(self._tracks)))

        pairs = self._match_3d(stamp_s, centres, free_persons, free_tracks)
        counters.matched_3d += len(pairs)
        matched = dict(pairs)
        free_persons = [p for p in free_persons if p not in matched]
        used = set(matched.values())
        free_tracks = [t for t in free_tracks if t not in used]
        pairs_2d = self._match_2d(centres, boxes, free_persons, free_tracks)
        counters.matched_2d += len(pairs_2d)
        matched.update(pairs_2d)

        for p_index, t_index in matched.items():
            track = self._tracks[t_index]
            self._update_track(track, stamp_s, centres[p_index], boxes[p_index])
            ids[p_index] = track.track_id
        for p_index in range(len(persons)):
            if p_index in matched:
                continue
            counters.detections_unmatched += 1
            if centres[p_index] is None and not boxes[p_index]:
                counters.persons_untrackable += 1
                continue
            track = Track(track_id=self._next_id, last_seen_s=stamp_s)
            self._next_id += 1
            counters.tracks_created += 1
            self._update_track(track, stamp_s, centres[p_index], boxes[p_index])
            self._tracks.append(track)
            ids[p_index] = track.track_id
        return ids

    def _assign(self, cost: np.ndarray, allowed: np.ndarray) -> List[Tuple[int, int]]:
        """
        Hungarian assignment restricted to allowed pairs; counts ambiguous ones.

        :param cost: [N, M] costs.
        :param allowed: [N, M] bool gate.
        :return: ``[(row, col)]`` assigned allowed pairs.
        """
        if not allowed.any():
            return []
        rows, cols = linear_sum_assignment(np.where(allowed, cost, _FORBIDDEN))
        pairs = []
        for row, col in zip(rows, cols):
            if not allowed[row, col]:
                continue
            if allowed[row].sum() > 1 or allowed[:, col].sum() > 1:
                self.counters.ambiguous_assignments += 1
            pairs.append((int(row), int(col)))
        return pairs

    def _match_3d(self, stamp_s: float, centres: List[Optional[np.ndarray]],
                  free_persons: List[int], free_tracks: List[int]) -> List[Tuple[int, int]]:
        """
        Match persons with a 3D centre to tracks with a 3D centre.

        :param stamp_s: current stamp.
        :param centres: per person [3] or None.
        :param free_persons: candidate person indices.
        :param free_tracks: candidate track indices.
        :return: ``[(person, track)]``.
        """
        persons_3d = [p for p in free_persons if centres[p] is not None]
        tracks_3d = [t for t in free_tracks if self._tracks[t].position_m is not None]
        if not persons_3d or not tracks_3d:
            return []
        measured = np.stack([centres[p] for p in persons_3d])                   # [N, 3]
        predicted = np.stack([self._tracks[t].predicted_position(stamp_s)
                              for t in tracks_3d])                               # [M, 3]
        distance = np.linalg.norm(measured[:, None] - predicted[None], axis=-1)
        pairs = self._assign(distance, distance <= self.config.gate_m)
        return [(persons_3d[r], tracks_3d[c]) for r, c in pairs]

    def _match_2d(self, centres: List[Optional[np.ndarray]],
                  boxes: List[Dict[int, np.ndarray]], free_persons: List[int],
                  free_tracks: List[int]) -> List[Tuple[int, int]]:
        """
        Match by box IoU where the person or the track has no 3D centre.

        :param centres: per person [3] or None.
        :param boxes: per person, view -> [4] box.
        :param free_persons: candidate person indices.
        :param free_tracks: candidate track indices.
        :return: ``[(person, track)]``.
        """
        if not free_persons or not free_tracks:
            return []
        iou = np.zeros((len(free_persons), len(free_tracks)))
        for row, p_index in enumerate(free_persons):
            for col, t_index in enumerate(free_tracks):
                track = self._tracks[t_index]
                if centres[p_index] is not None and track.position_m is not None:
                    continue   # both have 3D: the 3D stage has decided
                shared = boxes[p_index].keys() & track.boxes.keys()
                iou[row, col] = max((box_iou(boxes[p_index][v], track.boxes[v][0])
                                     for v in shared), default=0.0)
        pairs = self._assign(1.0 - iou, iou >= self.config.min_iou)
        return [(free_persons[r], free_tracks[c]) for r, c in pairs]

    def _update_track(self, track: Track, stamp_s: float, centre: Optional[np.ndarray],
                      boxes: Dict[int, np.ndarray]):
        """
        Fold one matched person into a track.

        :param track: the track.
        :param stamp_s: current stamp.
        :param centre: [3] the person's centre or None.
        :param boxes: view -> [4] the person's boxes.
        """
        config = self.config
        if centre is not None:
            if track.position_m is not None:
                dt_s = stamp_s - track.position_stamp_s
                if dt_s > 1e-6:
                    measured = (centre - track.position_m) / dt_s
                    velocity = config.velocity_smoothing * measured \
                        + (1.0 - config.velocity_smoothing) * track.velocity_m_s
                    speed = np.linalg.norm(velocity)
                    if speed > config.max_speed_m_s:
                        velocity = velocity * (config.max_speed_m_s / speed)
                    track.velocity_m_s = velocity
            else:
                track.velocity_m_s = np.zeros(3)
            track.position_m = np.asarray(centre, dtype=np.float64).copy()
            track.position_stamp_s = stamp_s
        for view, box in boxes.items():
            track.boxes[view] = (box, stamp_s)
        track.last_seen_s = stamp_s
        track.hits += 1
