"""
Fusion of one synchronised camera set: association -> tracking -> refinement (no ROS).

:class:`FusionPipeline` is what the node runs on every synchronised set when it has a
fixed frame. Per set:

1. Cameras with extrinsics (a :class:`~scorehmr_ros.fusion.calibration.CalibrationSet`
   entry) are *calibrated*; the others are left to the caller's per-camera path and
   counted in ``views_uncalibrated`` (the reason is logged once per camera and reason).
2. The calibrated views' detections are associated across views
   (:class:`~scorehmr_ros.fusion.association.Associator`); views whose detections are
   all low-confidence drop out (``views_low_confidence``).
3. :class:`~scorehmr_ros.fusion.tracking.Tracker` gives each person a stable id.
   An upstream id that moves to another track counts as an ``id_swaps`` event; a track
   seen again after more than ``max_gap_s`` counts in ``track_gaps`` (its online window
   restarts cold).
4. Per track, ``temporal: per_frame`` refines all people in one calibrated multi-view
   call; ``temporal: online`` runs :class:`~scorehmr_ros.fusion.online
   .OnlineTemporalRefiner` (window ``temporal_window``; L_temp step size
   ``OnlineConfig.rho_temporal_multiview`` = 3 for tracks seen by two or more views, the
   paper's 30 for one: measured, docs/multiview_temporal.md). The result is one body per
   track in the fixed frame (root rotation and translation in it), with the cameras used
   and the window length.

Camera iteration order is the constructor's ``cameras`` order in every set (the tracker
keys 2D boxes by view index).
"""

import collections
import dataclasses
import logging
import re
import time
from typing import Deque, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from scorehmr_ros.fusion.association import AssociationConfig, Associator, ViewDetections
from scorehmr_ros.fusion.calibration import CalibrationSet
from scorehmr_ros.fusion.online import OnlineConfig, OnlineTemporalRefiner
from scorehmr_ros.fusion.tracking import Tracker, TrackerConfig
from scorehmr_ros.observations import Observations
from scorehmr_ros.refiner import Refiner

LOG = logging.getLogger(__name__)

TEMPORAL_MODES = ('per_frame', 'online')

#: Counters of normal operation.
FUSION_INFO_COUNTERS = (
    'fused_sets',           # sets with at least one calibrated view
    'fused_bodies',         # bodies produced in the fixed frame
    'persons_multi_view',   # associated persons seen by >= 2 calibrated views
    'persons_single_view',  # associated persons seen by one calibrated view
    'tracks_created',       # new track ids
    'tracks_lost',          # tracks dropped (unseen for tracker max_age_s, or a reset)
    'ambiguous_assignments',  # track assignments with a competitor in the gate
)
#: Counters of problems.
FUSION_PROBLEM_COUNTERS = (
    'views_uncalibrated',   # views without (or with stale) extrinsics: per-camera path
    'views_low_confidence',  # calibrated views whose detections were all low-confidence
    'detections_low_confidence',  # detections with too few confident keypoints, dropped
    'layout_mismatch',      # detections in another keypoint layout than the set's, dropped
    'id_swaps',             # an upstream id moved to another track
    'track_gaps',           # a track seen again after more than max_gap_s
    'untrackable_persons',  # persons without a 3D centre or a 2D box (not published)
)
FUSION_COUNTERS = FUSION_INFO_COUNTERS + FUSION_PROBLEM_COUNTERS
LATENCY_WINDOW = 100


@dataclasses.dataclass
class CameraView:
    """
    One camera's part of a synchronised set.

    ``people`` are detections with the attributes of
    :class:`scorehmr_ros.ros.convert.Person`: ``track_id`` (int, negative = none),
    ``keypoints`` [K, 3], ``layout``, ``init_rotmats`` [24, 3, 3], ``init_betas`` [10],
    ``init_cam_t`` [3] metres, ``features`` [C] or None.

    :param name: camera name (the calibration's key).
    :param k: [3, 3] intrinsics, pixels.
    :param image_hw: ``(height, width)`` pixels.
    :param people: the detections.
    :param stamp_ns: capture stamp, int nanoseconds.
    """

    name: str
    k: np.ndarray
    image_hw: Tuple[int, int]
    people: Sequence
    stamp_ns: int


@dataclasses.dataclass
class FusedBody:
    """
    One tracked person's body in the fixed frame.

    :param track_id: stable id from the tracker (>= 1).
    :param cameras: names of the cameras whose detections were used.
    :param rotmats: [24, 3, 3] SMPL rotations, entry 0 the root in the fixed frame.
    :param betas: [10] shape.
    :param translation: [3] body-to-fixed-frame translation (SMPL convention), metres.
    :param joints: [24, 3] posed joints in the fixed frame, metres.
    :param window_frames: frames in the track's temporal window (1 per frame mode).
    :param refine_time_s: duration of the refinement call that produced it.
    :param refined: whether the refinement ran (False: the start was returned).
    :param restarted: whether the track's window (re)started cold at this frame.
    """

    track_id: int
    cameras: Tuple[str, ...]
    rotmats: np.ndarray
    betas: np.ndarray
    translation: np.ndarray
    joints: np.ndarray
    window_frames: int
    refine_time_s: float
    refined: bool
    restarted: bool


@dataclasses.dataclass
class TrackStatus:
    """
    Per-track state for diagnostics.

    :param track_id: the id.
    :param first_seen_s: stamp of its first body, seconds.
    :param last_seen_s: stamp of its newest body, seconds.
    :param cameras: cameras of its newest body.
    :param window_frames: window length of its newest body.
    :param latencies_s: recent latencies (the caller's definition, e.g. receive to publish).
    """

    track_id: int
    first_seen_s: float
    last_seen_s: float
    cameras: Tuple[str, ...] = ()
    window_frames: int = 0
    latencies_s: Deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))


@dataclasses.dataclass
class FusionResult:
    """
    Output of :meth:`FusionPipeline.process`.

    :param bodies: fused bodies in the fixed frame.
    :param uncalibrated: names of the set's cameras without usable extrinsics (for the
        caller's per-camera path).
    """

    bodies: List[FusedBody]
    uncalibrated: List[str]


class FusionPipeline:
    """
    Calibrated multi-view fusion with tracking and optional online temporal refinement.

    :param refiner: the engine; a calibrated multi-view engine sharing its denoiser and
        body model is derived from it.
    :param cameras: every camera name, in a fixed order.
    :param temporal: ``'per_frame'`` or ``'online'``.
    :param temporal_window: frames per track window (online mode).
    :param temporal_mode: online mode, ``'window'`` or ``'frozen'`` (OnlineConfig.mode).
    :param warm_outer_iters: outer iterations of an online frame with history.
    :param association: association thresholds.
    :param tracker: tracker settings.
    :param max_gap_s: a track unseen longer restarts its window (and counts a gap).
    """

    def __init__(self, refiner: Refiner, cameras: Sequence[str], temporal: str = 'per_frame',
                 temporal_window: int = 3, association: Optional[AssociationConfig] = None,
                 tracker: Optional[TrackerConfig] = None, max_gap_s: float = 0.5,
                 temporal_mode: str = 'window', warm_outer_iters: int = 5):
        if temporal not in TEMPORAL_MODES:
            raise ValueError(f'temporal must be one of {TEMPORAL_MODES}, got {temporal!r}')
        if not isinstance(temporal_window, int) or temporal_window < 1:
            raise ValueError(f'temporal_window must be an int >= 1, got {temporal_window!r}')
        if not max_gap_s > 0:
            raise ValueError(f'max_gap_s must be > 0, got {max_gap_s!r}')
        self.cameras = list(cameras)
        self.temporal = temporal
        self.max_gap_s = float(max_gap_s)
        self.refiner = Refiner(
            refiner.config.replace(guidance={'multiview': True, 'multiview_mode': 'calibrated'}),
            denoiser=refiner.denoiser, body=refiner.body)
        self.online = OnlineTemporalRefiner(
            self.refiner, OnlineConfig(mode=temporal_mode, window=temporal_window,
                                       warm_outer_iters=warm_outer_iters,
                                       max_gap_s=max_gap_s)) \
            if temporal == 'online' else None
        self._association, self._tracker_config = association, tracker
        self.reset()

    def reset(self) -> None:
        """
        Forget every track, window and counter (e.g. after a warm-up on synthetic frames).

        The refiner and its compiled graphs stay.
        """
        self.associator = Associator(self._association)
        self.tracker = Tracker(self._tracker_config)
        if self.online is not None:
            for track_id in self.online.track_ids:
                self.online.forget(track_id)
        self.counters: Dict[str, int] = {name: 0 for name in FUSION_COUNTERS}
        self.tracks: Dict[int, TrackStatus] = {}
        self._upstream_track: Dict[int, int] = {}
        self._track_upstream: Dict[int, int] = {}
        self._logged: Set[Tuple[str, str]] = set()
        self._k: Dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ public

    def process(self, views: Sequence[CameraView], calibration: Optional[CalibrationSet]
                ) -> FusionResult:
        """
        Fuse one synchronised set.

        :param views: the set's cameras (any subset of ``cameras``, each at most once).
        :param calibration: current extrinsics (None: every camera uncalibrated).
        :return: fused bodies and the uncalibrated cameras.
        """
        by_name = {}
        for view in views:
            if view.name not in self.cameras:
                raise ValueError(f'camera {view.name!r} is not one of {self.cameras}')
            by_name[view.name] = view
        calibrated, uncalibrated = [], []
        for view in views:
            reason = _missing_reason(calibration, view.name)
            if reason is None:
                calibrated.append(view.name)
                self._k[view.name] = np.asarray(view.k, dtype=np.float64)
            else:
                uncalibrated.append(view.name)
                self.counters['views_uncalibrated'] += 1
                # Numbers in a reason (a stale transform's age) change every set: once
                # per camera and kind of reason, not a warning per set.
                kind = re.sub(r'[0-9][0-9.e+-]*', '#', reason)
                if (view.name, kind) not in self._logged:
                    self._logged.add((view.name, kind))
                    LOG.warning('camera %s has no usable extrinsics (%s): its people are '
                                'refined per camera, in its own frame', view.name, reason)
        if not calibrated:
            return FusionResult([], uncalibrated)
        self.counters['fused_sets'] += 1
        stamp_s = max(by_name[n].stamp_ns for n in calibrated) * 1e-9
        layout = self._set_layout([by_name[n] for n in calibrated])
        det_people, view_dets = self._view_detections(by_name, calibrated, calibration, layout)
        before = self.associator.counters.as_dict()
        persons = self.associator(view_dets)
        self._add_counters(before, self.associator.counters.as_dict(), (
            'views_low_confidence', 'detections_low_confidence', 'persons_multi_view',
            'persons_single_view'))
        before = self.tracker.counters.as_dict()
        ids = self.tracker.update(stamp_s, persons)
        after = self.tracker.counters.as_dict()
        self._add_counters(before, after, ('tracks_created', 'tracks_lost',
                                           'ambiguous_assignments'))
        self.counters['untrackable_persons'] += \
            after['persons_untrackable'] - before['persons_untrackable']
        self._forget_lost()
        items = []
        for person, track_id in zip(persons, ids):
            if track_id < 0:
                continue
            rows = [(self.cameras[v], det_people[v][d])
                    for v, d in sorted(person.detections.items())]
            self._note_identity(track_id, person.upstream_id, stamp_s)
            items.append((track_id, rows))
        if not items:
            return FusionResult([], uncalibrated)
        bodies = self._refine(items, by_name, calibration, stamp_s)
        self.counters['fused_bodies'] += len(bodies)
        for body in bodies:
            status = self.tracks[body.track_id]
            status.cameras, status.window_frames = body.cameras, body.window_frames
        return FusionResult(bodies, uncalibrated)

    def record_latency(self, track_id: int, latency_s: float) -> None:
        """
        Add a latency sample to a live track (for :meth:`track_report`).

        :param track_id: the track; unknown ids are ignored.
        :param latency_s: seconds.
        """
        status = self.tracks.get(track_id)
        if status is not None:
            status.latencies_s.append(float(latency_s))

    def track_report(self) -> List[Dict[str, str]]:
        """
        Per live track: id, latency p50, views, cameras, window, age.

        :return: one dict of strings per track, ordered by id.
        """
        report = []
        for track_id in sorted(self.tracks):
            status = self.tracks[track_id]
            lat = np.asarray(status.latencies_s, dtype=np.float64)
            report.append({
                'id': str(track_id),
                'latency_p50_s': f'{np.median(lat):.4f}' if lat.size else 'n/a',
                'views': str(len(status.cameras)),
                'cameras': ','.join(status.cameras),
                'window': str(status.window_frames),
                'age_s': f'{status.last_seen_s - status.first_seen_s:.2f}'})
        return report

    # ----------------------------------------------------------------- helpers

    def _add_counters(self, before: Dict[str, int], after: Dict[str, int],
                      names: Sequence[str]) -> None:
        for name in names:
            self.counters[name] += after[name] - before[name]

    def _set_layout(self, views: Sequence[CameraView]) -> Optional[str]:
        """Most common keypoint layout of the set (one refine call uses one layout)."""
        layouts = collections.Counter(p.layout for v in views for p in v.people)
        return layouts.most_common(1)[0][0] if layouts else None

    def _view_detections(self, by_name, calibrated, calibration, layout):
        """
        Association input: every camera in fixed order (absent ones empty).

        :return: ``(people per view index, ViewDetections per view index)``.
        """
        num_kp = None
        for name in calibrated:
            for person in by_name[name].people:
                if person.layout == layout:
                    num_kp = len(person.keypoints)
                    break
            if num_kp is not None:
                break
        num_kp = num_kp or 1
        det_people, dets = [], []
        for name in self.cameras:
            people = []
            if name in calibrated:
                for person in by_name[name].people:
                    if person.layout == layout:
                        people.append(person)
                    else:
                        self.counters['layout_mismatch'] += 1
            det_people.append(people)
            if name in calibrated:
                keypoints = np.stack([np.asarray(p.keypoints, dtype=np.float64)
                                      for p in people]) if people else np.zeros((0, num_kp, 3))
                ids = np.array([int(p.track_id) if int(p.track_id) >= 0 else -1
                                for p in people], dtype=np.int64)
                has_ids = bool(len(ids)) and bool((ids >= 0).all())
                dets.append(ViewDetections(
                    keypoints=keypoints, k=self._k[name],
                    world_to_camera=calibration.cameras[name].world_to_camera,
                    track_ids=ids if has_ids else None, name=name))
            else:
                # Absent or uncalibrated: an empty view keeps the view indices fixed.
                dets.append(ViewDetections(keypoints=np.zeros((0, num_kp, 3)), k=np.eye(3),
                                           world_to_camera=np.eye(4), name=name))
        return det_people, dets

    def _note_identity(self, track_id: int, upstream_id: Optional[int], stamp_s: float
                       ) -> None:
        """Track bookkeeping: gaps, upstream id swaps, first/last seen."""
        status = self.tracks.get(track_id)
        if status is None:
            self.tracks[track_id] = TrackStatus(track_id, stamp_s, stamp_s)
        else:
            if stamp_s - status.last_seen_s > self.max_gap_s:
                self.counters['track_gaps'] += 1
                LOG.info('track %d seen again after %.3f s (> %.3f s): window restarts',
                         track_id, stamp_s - status.last_seen_s, self.max_gap_s)
            status.last_seen_s = stamp_s
        if upstream_id is None or upstream_id < 0:
            return
        previous_track = self._upstream_track.get(upstream_id)
        previous_upstream = self._track_upstream.get(track_id)
        if (previous_track is not None and previous_track != track_id) or \
                (previous_upstream is not None and previous_upstream != upstream_id):
            self.counters['id_swaps'] += 1
            LOG.info('id swap: upstream id %d now on track %d (was track %s; track had '
                     'upstream id %s)', upstream_id, track_id, previous_track,
                     previous_upstream)
        self._upstream_track[upstream_id] = track_id
        self._track_upstream[track_id] = upstream_id

    def _forget_lost(self) -> None:
        """Drop state of tracks the tracker no longer has."""
        live = {t.track_id for t in self.tracker.tracks}
        for track_id in [t for t in self.tracks if t not in live]:
            del self.tracks[track_id]
            if self.online is not None:
                self.online.forget(track_id)
            upstream = self._track_upstream.pop(track_id, None)
            if upstream is not None and self._upstream_track.get(upstream) == track_id:
                del self._upstream_track[upstream]

    def _observations(self, rows, by_name, calibration) -> Observations:
        """Refiner rows of (camera, detection) pairs; world_to_camera per row."""
        cond_dim = self.refiner.denoiser.config.total_cond_dim

        def stack(values):
            return torch.as_tensor(np.stack(values), dtype=torch.float32)

        zeros = np.zeros(cond_dim, dtype=np.float32)
        names = [name for name, _ in rows]
        return Observations(
            init_rotmats=stack([p.init_rotmats for _, p in rows]),
            init_betas=stack([p.init_betas for _, p in rows]),
            cond=stack([zeros if p.features is None else p.features for _, p in rows]),
            init_cam_t=stack([p.init_cam_t for _, p in rows]),
            keypoints_2d=stack([p.keypoints for _, p in rows]),
            keypoint_layout=rows[0][1].layout,
            focal_px=stack([(self._k[n][0, 0], self._k[n][1, 1]) for n in names]),
            center_px=stack([(self._k[n][0, 2], self._k[n][1, 2]) for n in names]),
            image_size=stack([by_name[n].image_hw for n in names]),
            world_to_camera=calibration.world_to_camera_rows(names))

    def _refine(self, items, by_name, calibration, stamp_s: float) -> List[FusedBody]:
        """Refine every track's rows (one call per frame, or the online windows)."""
        bodies = []
        if self.online is not None:
            updates = self.online.update_many([
                (track_id, self._observations(rows, by_name, calibration), stamp_s)
                for track_id, rows in items])
            for (track_id, rows), update in zip(items, updates):
                if update.world_rotmats is None:
                    continue
                bodies.append(self._body(
                    track_id, rows, update.world_rotmats, update.betas[0], update.world_t,
                    update.window_frames, update.latency_s, bool(update.refined.any()),
                    update.restarted))
            return bodies
        all_rows = [row for _, rows in items for row in rows]
        group = torch.tensor([index for index, (_, rows) in enumerate(items) for _ in rows],
                             dtype=torch.long)
        obs = dataclasses.replace(self._observations(all_rows, by_name, calibration),
                                  view_group=group)
        started = time.perf_counter()
        result = self.refiner.refine(obs)
        elapsed_s = time.perf_counter() - started
        groups = result.groups
        start = 0
        for track_id, rows in items:
            g = int(groups.row_group[start])
            if bool(groups.calibrated[g]):
                bodies.append(self._body(
                    track_id, rows, groups.world_rotmats[g, 0], result.betas[start, 0],
                    groups.world_t[g, 0], 1, elapsed_s,
                    bool(result.refined[start:start + len(rows), 0].any()), False))
            start += len(rows)
        return bodies

    def _body(self, track_id, rows, world_rot, betas, world_t, window, refine_s, refined,
              restarted) -> FusedBody:
        with torch.no_grad():
            rot = world_rot.to(self.refiner.dtype)[None]
            beta = betas.to(self.refiner.dtype)[None]
            fast = self.refiner.joints_body
            # The published joints need no mesh: the joints-only kinematics (engine.body
            # joints) gives the same 24 joints without skinning the 6890 vertices.
            joints45 = (fast(rot, fast.rest(beta)) if fast is not None
                        else self.refiner.body(rot, beta).joints45)
            joints = joints45[0, :24] + world_t.to(self.refiner.dtype)
        cameras = tuple(dict.fromkeys(name for name, _ in rows))
        return FusedBody(
            track_id=int(track_id), cameras=cameras,
            rotmats=world_rot.double().cpu().numpy(), betas=betas.double().cpu().numpy(),
            translation=world_t.double().cpu().numpy(),
            joints=joints.double().cpu().numpy(), window_frames=int(window),
            refine_time_s=float(refine_s), refined=refined, restarted=bool(restarted))


def _missing_reason(calibration: Optional[CalibrationSet], name: str) -> Optional[str]:
    """Why a camera has no usable extrinsics (None: it has)."""
    if calibration is None:
        return 'no calibration source'
    if name in calibration.cameras:
        return None
    return calibration.missing.get(name, f'not in the calibration of {calibration.world_frame}')
