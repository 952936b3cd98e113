"""
Cross-view association: which 2D detections in calibrated views are the same person.

Entry points: :func:`associate` (stateless, optional counters) and :class:`Associator`
(keeps a config and cumulative :class:`AssociationCounters` for diagnostics).

Method (one synchronised frame):

1. A detection is usable when it has at least ``min_keypoints`` keypoints with confidence
   ``>= min_conf``; others are dropped and counted (a view whose detections are all
   low-confidence is counted too).
2. Affinity of two detections in different views: the symmetric point-to-epipolar-line
   distance of every keypoint confident in both, each distance divided by the focal length
   of the view it is measured in (so thresholds are focal-normalised, about radians:
   0.02 is 20 px at a focal length of 1000 px), averaged with weights ``conf_a * conf_b``
   after clipping at ``3 * max_epipolar_error`` (one wrong keypoint cannot dominate).
   Pairs with fewer than ``min_shared_keypoints`` shared keypoints have no affinity
   ("unknown"), neither for nor against.
3. Greedy agglomeration over the pairs with affinity <= ``max_epipolar_error``, best first.
   Two clusters merge only if (a) they have no view in common (one detection per view per
   person), (b) every cross pair with an affinity is within ``max_epipolar_error`` (cycle
   consistency); a refused merge is counted in ``merges_rejected``.
   Then every cluster is triangulated; one that does not reproject within
   ``max_reprojection_error`` (focal-normalised mean), or has too few keypoints in front
   of every camera, loses its worst-reprojecting detection (which becomes a single-view
   person, counted in ``clusters_split``) until it passes or one view is left.
4. Upstream track ids (optional, per detection, assumed global: the same id in two views
   claims the same person) are a prior, not a constraint: a pair with equal ids has its
   affinity divided by ``upstream_id_weight`` in the ordering, a pair with different ids
   multiplied by it, so ids decide between geometrically similar candidates (cost ratio
   below ``upstream_id_weight ** 2``) and geometry decides otherwise. Pairs are
   gated on their raw affinity, so equal ids never join geometrically inconsistent
   detections and different ids never keep apart consistent ones. Pairs (with an affinity)
   on which ids and the final grouping disagree are counted in ``upstream_id_conflicts``.
5. Every usable detection ends in exactly one :class:`Person`; detections that joined no
   other view are single-view persons (no 3D).

Keypoints must be undistorted pixels; cameras are given as intrinsics ``k`` [3, 3] and
``world_to_camera`` [4, 4] (see :mod:`scorehmr_ros.fusion.triangulation`).
P_v detections in view v, K keypoints (the same layout in every view), V views.
"""

import dataclasses
import itertools
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from scorehmr_ros.fusion.triangulation import projection_matrix, triangulate

logger = logging.getLogger(__name__)

# Two cameras closer than this share a centre: no epipolar geometry between them.
_MIN_BASELINE_M = 1e-6


@dataclasses.dataclass
class ViewDetections:
    """
    The detections of one camera at one frame.

    :param keypoints: [P_v, K, 3] ``(x_px, y_px, confidence)``, undistorted pixels.
    :param k: [3, 3] intrinsics, pixels.
    :param world_to_camera: [4, 4] world to optical frame, metres.
    :param track_ids: optional [P_v] integer upstream track ids (global across views).
    :param name: camera name, for messages only.
    """

    keypoints: np.ndarray
    k: np.ndarray
    world_to_camera: np.ndarray
    track_ids: Optional[np.ndarray] = None
    name: str = ''


@dataclasses.dataclass
class Person:
    """
    One body seen in one or more views.

    :param detections: view index -> detection index in that view (at most one per view).
    :param keypoints_2d: view index -> [K, 3] the detection's keypoints (confidences below
        ``min_conf`` or not finite set to 0).
    :param points_3d: [K, 3] triangulated world keypoints, metres (zeros for single-view).
    :param conf_3d: [K] confidence of each 3D keypoint, 0 where not triangulated.
    :param reprojection_error_px: mean reprojection error over the observations used,
        pixels (0 for single-view persons).
    :param reprojection_error: the same, focal-normalised.
    :param epipolar_error: mean focal-normalised affinity of the pairs in this person
        (0 for single-view persons).
    :param upstream_id: most frequent upstream id of the detections (smallest on ties),
        or ``None`` without ids.
    """

    detections: Dict[int, int]
    keypoints_2d: Dict[int, np.ndarray]
    points_3d: np.ndarray
    conf_3d: np.ndarray
    reprojection_error_px: float = 0.0
    reprojection_error: float = 0.0
    epipolar_error: float = 0.0
    upstream_id: Optional[int] = None

    @property
    def num_views(self) -> int:
        """
        Number of views this person was detected in.

        :return: count.
        """
        return len(self.detections)

    @property
    def is_multi_view(self) -> bool:
        """
        Whether the person was triangulated from at least two views.

        :return: True with 3D keypoints.
        """
        return len(self.detections) >= 2


@dataclasses.dataclass(frozen=True)
class AssociationConfig:
    """
    Thresholds of :func:`associate`.

    :param min_conf: keypoint confidence below which a keypoint is ignored.
    :param min_keypoints: confident keypoints a detection needs to be used at all.
    :param min_shared_keypoints: keypoints confident in both detections for an affinity.
    :param max_epipolar_error: focal-normalised symmetric epipolar distance gate.
    :param max_reprojection_error: focal-normalised mean reprojection error gate of a
        merged cluster.
    :param use_upstream_ids: use the detections' upstream track ids as a prior.
    :param upstream_id_weight: strength of that prior (>= 1; 1 ignores ids in the
        ordering but still counts conflicts).
    """

    min_conf: float = 0.3
    min_keypoints: int = 4
    min_shared_keypoints: int = 3
    max_epipolar_error: float = 0.02
    max_reprojection_error: float = 0.02
    use_upstream_ids: bool = True
    upstream_id_weight: float = 2.0

    def __post_init__(self):
        if not (np.isfinite(self.upstream_id_weight) and self.upstream_id_weight >= 1):
            raise ValueError('AssociationConfig.upstream_id_weight: expected a finite value '
                             f'>= 1, got {self.upstream_id_weight!r}')
        for name in ('min_conf', 'max_epipolar_error', 'max_reprojection_error'):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f'AssociationConfig.{name}: expected a finite value >= 0, '
                                 f'got {value!r}')
        for name in ('min_keypoints', 'min_shared_keypoints'):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f'AssociationConfig.{name}: expected an int >= 1, '
                                 f'got {value!r}')


@dataclasses.dataclass
class AssociationCounters:
    """
    Cumulative counters of what association did (for ``/diagnostics``).

    :param frames: calls.
    :param detections: detections received.
    :param detections_low_confidence: detections dropped: fewer than ``min_keypoints``
        confident keypoints.
    :param views_low_confidence: views with detections of which none was usable.
    :param persons_multi_view: persons built from >= 2 views.
    :param persons_single_view: persons seen by one view only.
    :param merges_rejected: merges refused by cycle consistency.
    :param clusters_split: detections detached from a cluster that failed triangulation.
    :param upstream_id_conflicts: detection pairs where upstream ids and geometry disagree.
    """

    frames: int = 0
    detections: int = 0
    detections_low_confidence: int = 0
    views_low_confidence: int = 0
    persons_multi_view: int = 0
    persons_single_view: int = 0
    merges_rejected: int = 0
    clusters_split: int = 0
    upstream_id_conflicts: int = 0

    def as_dict(self) -> Dict[str, int]:
        """
        Counters by name.

        :return: ``{name: value}``.
        """
        return dataclasses.asdict(self)


def fundamental_matrix(k_a: np.ndarray, world_to_camera_a: np.ndarray, k_b: np.ndarray,
                       world_to_camera_b: np.ndarray) -> np.ndarray:
    """
    Fundamental matrix F with ``x_b^T F x_a = 0`` for homogeneous pixels of one point.

    :param k_a: [3, 3] intrinsics of view a.
    :param world_to_camera_a: [4, 4] pose of view a.
    :param k_b: [3, 3] intrinsics of view b.
    :param world_to_camera_b: [4, 4] pose of view b.
    :return: [3, 3] F (zeros when the cameras share a centre).
    """
    rot_a, trans_a = world_to_camera_a[:3, :3], world_to_camera_a[:3, 3]
    rot_b, trans_b = world_to_camera_b[:3, :3], world_to_camera_b[:3, 3]
    rot_ab = rot_b @ rot_a.T
    trans_ab = trans_b - rot_ab @ trans_a
    if np.linalg.norm(trans_ab) < _MIN_BASELINE_M:
        return np.zeros((3, 3))
    skew = np.array([[0.0, -trans_ab[2], trans_ab[1]],
                     [trans_ab[2], 0.0, -trans_ab[0]],
                     [-trans_ab[1], trans_ab[0], 0.0]])
    return np.linalg.inv(k_b).T @ skew @ rot_ab @ np.linalg.inv(k_a)


def epipolar_affinity(keypoints_a: np.ndarray, keypoints_b: np.ndarray,
                      fundamental: np.ndarray, focal_a_px: float, focal_b_px: float,
                      min_conf: float, min_shared: int, clip: float
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """
    Focal-normalised symmetric epipolar distance between all detections of two views.

    :param keypoints_a: [Pa, K, 3] view a, confidences already cleaned (0 = unused).
    :param keypoints_b: [Pb, K, 3] view b.
    :param fundamental: [3, 3] F from a to b (:func:`fundamental_matrix`).
    :param focal_a_px: focal length of view a, pixels.
    :param focal_b_px: focal length of view b, pixels.
    :param min_conf: keypoints below this confidence are not compared.
    :param min_shared: keypoints needed in both for an affinity.
    :param clip: per-keypoint distances are clipped here before averaging.
    :return: ``(cost [Pa, Pb], known [Pa, Pb] bool)``; cost is inf where not known.
    """
    homog_a = np.concatenate((keypoints_a[..., :2], np.ones(keypoints_a.shape[:2] + (1,))),
                             -1)
    homog_b = np.concatenate((keypoints_b[..., :2], np.ones(keypoints_b.shape[:2] + (1,))),
                             -1)
    lines_in_b = homog_a @ fundamental.T   # [Pa, K, 3] epipolar lines of a's points in b
    lines_in_a = homog_b @ fundamental     # [Pb, K, 3] epipolar lines of b's points in a
    norm_b = np.maximum(np.linalg.norm(lines_in_b[..., :2], axis=-1), 1e-12)   # [Pa, K]
    norm_a = np.maximum(np.linalg.norm(lines_in_a[..., :2], axis=-1), 1e-12)   # [Pb, K]
    algebraic = np.abs(np.einsum('akc,bkc->abk', lines_in_b, homog_b))         # [Pa, Pb, K]
    dist_b = algebraic / norm_b[:, None, :]
    dist_a = algebraic / norm_a[None, :, :]
    distance = 0.5 * (dist_a / focal_a_px + dist_b / focal_b_px)
    conf_a = np.where(keypoints_a[..., 2] >= min_conf, keypoints_a[..., 2], 0.0)
    conf_b = np.where(keypoints_b[..., 2] >= min_conf, keypoints_b[..., 2], 0.0)
    weight = conf_a[:, None, :] * conf_b[None, :, :]
    shared = (weight > 0).sum(-1)
    known = shared >= min_shared
    total = np.maximum(weight.sum(-1), 1e-12)
    cost = (weight * np.minimum(distance, clip)).sum(-1) / total
    return np.where(known, cost, np.inf), known


def _clean_keypoints(keypoints: np.ndarray, min_conf: float) -> np.ndarray:
    """
    Zero the confidence of non-finite or low-confidence keypoints.

    :param keypoints: [P, K, 3] ``(x_px, y_px, conf)``.
    :param min_conf: threshold.
    :return: [P, K, 3] float64 copy; unusable keypoints have position 0 and confidence 0.
    """
    out = np.array(keypoints, dtype=np.float64, copy=True)
    good = np.isfinite(out).all(-1) & (out[..., 2] >= min_conf)
    out[~good] = 0.0
    out[..., 2] = np.minimum(out[..., 2], 1.0)
    return out


def _check_views(views: Sequence[ViewDetections]) -> Optional[int]:
    """
    Validate shapes; return the keypoint count K (``None`` when no view has detections).

    :param views: the views.
    :return: K or None.
    """
    num_kp = None
    for index, view in enumerate(views):
        kps = np.asarray(view.keypoints)
        if kps.ndim != 3 or kps.shape[-1] != 3:
            raise ValueError(f'views[{index}].keypoints: expected [P, K, 3] '
                             f'(x_px, y_px, conf), got shape {kps.shape}')
        if np.shape(view.k) != (3, 3):
            raise ValueError(f'views[{index}].k: expected [3, 3], got {np.shape(view.k)}')
        if np.shape(view.world_to_camera) != (4, 4):
            raise ValueError(f'views[{index}].world_to_camera: expected [4, 4], got '
                             f'{np.shape(view.world_to_camera)}')
        if not (np.isfinite(view.k).all() and np.isfinite(view.world_to_camera).all()):
            raise ValueError(f'views[{index}] ({view.name}): camera k / world_to_camera '
                             'must be finite')
        if view.track_ids is not None and np.shape(view.track_ids) != (kps.shape[0],):
            raise ValueError(f'views[{index}].track_ids: expected [{kps.shape[0]}], got '
                             f'{np.shape(view.track_ids)}')
        if kps.shape[0] == 0:
            continue
        if num_kp is None:
            num_kp = kps.shape[1]
        elif kps.shape[1] != num_kp:
            raise ValueError(f'views[{index}].keypoints: {kps.shape[1]} keypoints, other '
                             f'views have {num_kp}; every view must use the same layout')
    return num_kp


class _Frame:
    """Per-call working data: the usable detections flattened over views."""

    def __init__(self, views: Sequence[ViewDetections], config: AssociationConfig,
                 counters: AssociationCounters):
        self.config = config
        self.view_of: List[int] = []
        self.det_of: List[int] = []
        self.keypoints: List[np.ndarray] = []
        self.ids: List[Optional[int]] = []
        self.focal_px = np.array([0.5 * (view.k[0][0] + view.k[1][1]) for view in views],
                                 dtype=np.float64)
        self.projections = np.stack([projection_matrix(v.k, v.world_to_camera)
                                     for v in views]) if views else np.zeros((0, 3, 4))
        for v_index, view in enumerate(views):
            cleaned = _clean_keypoints(view.keypoints, config.min_conf)
            usable = (cleaned[..., 2] > 0).sum(-1) >= config.min_keypoints
            counters.detections += len(cleaned)
            counters.detections_low_confidence += int((~usable).sum())
            if len(cleaned) and not usable.any():
                counters.views_low_confidence += 1
                logger.debug('view %d (%s): no detection has %d confident keypoints',
                             v_index, view.name, config.min_keypoints)
            for d_index in np.flatnonzero(usable):
                self.view_of.append(v_index)
                self.det_of.append(int(d_index))
                self.keypoints.append(cleaned[d_index])
                track_id = None
                if config.use_upstream_ids and view.track_ids is not None:
                    track_id = int(np.asarray(view.track_ids)[d_index])
                self.ids.append(track_id)
        count = len(self.view_of)
        # Triangulations by sorted member tuple: the merge check's result is reused for the
        # person that the merge creates.
        self._triangulated = {}
        self.cost = np.full((count, count), np.inf)
        self.known = np.zeros((count, count), dtype=bool)
        self._pairwise(views)

    def _pairwise(self, views: Sequence[ViewDetections]):
        """Fill ``cost`` and ``known`` for every pair of detections in different views."""
        view_of = np.asarray(self.view_of, dtype=np.int64)
        clip = 3.0 * self.config.max_epipolar_error
        for va, vb in itertools.combinations(range(len(views)), 2):
            rows = np.flatnonzero(view_of == va)
            cols = np.flatnonzero(view_of == vb)
            if not len(rows) or not len(cols):
                continue
            fundamental = fundamental_matrix(views[va].k, views[va].world_to_camera,
                                             views[vb].k, views[vb].world_to_camera)
            if not fundamental.any():
                continue
            cost, known = epipolar_affinity(
                np.stack([self.keypoints[i] for i in rows]),
                np.stack([self.keypoints[i] for i in cols]), fundamental,
                self.focal_px[va], self.focal_px[vb], self.config.min_conf,
                self.config.min_shared_keypoints, clip)
            self.cost[np.ix_(rows, cols)] = cost
            self.cost[np.ix_(cols, rows)] = cost.T
            self.known[np.ix_(rows, cols)] = known
            self.known[np.ix_(cols, rows)] = known.T

    def triangulate(self, members: Sequence[int]):
        """
        Triangulate a cluster.

        :param members: flattened detection indices (distinct views).
        :return: ``(triangulation, normalised mean error, error px, triangulated count,
            candidate count)``.
        """
        key = tuple(sorted(members))
        if key not in self._triangulated:
            self._triangulated[key] = self._triangulate(key)
        return self._triangulated[key]

    def _triangulate(self, members: Sequence[int]):
        """
        Triangulate a cluster (uncached; see :meth:`triangulate`).

        :param members: flattened detection indices (distinct views).
        :return: see :meth:`triangulate`.
        """
        views = [self.view_of[m] for m in members]
        kps = np.stack([self.keypoints[m] for m in members])            # [V, K, 3]
        result = triangulate(kps[..., :2], kps[..., 2], self.projections[views],
                             min_conf=self.config.min_conf)
        used = (kps[..., 2] > 0) & (result.conf_3d > 0)[None]
        num_candidates = int(((kps[..., 2] > 0).sum(0) >= 2).sum())
        if used.any():
            err_px = result.reprojection_error_px[used]
            err_norm = (result.reprojection_error_px / self.focal_px[views][:, None])[used]
            return result, float(err_norm.mean()), float(err_px.mean()), \
                int((result.conf_3d > 0).sum()), num_candidates
        return result, np.inf, np.inf, 0, num_candidates

    def cluster_ok(self, members: Sequence[int]) -> bool:
        """
        Whether a cluster passes the triangulation check.

        :param members: flattened detection indices.
        :return: True when enough keypoints triangulate in front of every camera and the
            focal-normalised mean reprojection error is within the gate.
        """
        _, err_norm, _, num_tri, num_candidates = self.triangulate(members)
        return num_tri >= self.config.min_shared_keypoints \
            and 2 * num_tri >= num_candidates \
            and err_norm <= self.config.max_reprojection_error

    def worst_member(self, members: Sequence[int]) -> int:
        """
        Find the member whose observations reproject worst (mean over used keypoints).

        :param members: flattened detection indices.
        :return: one of ``members``.
        """
        result = self.triangulate(members)[0]
        scores = []
        for row, member in enumerate(members):
            used = (self.keypoints[member][:, 2] > 0) & (result.conf_3d > 0)
            error = result.reprojection_error_px[row, used] / self.focal_px[self.view_of[member]]
            # A member that triangulates nothing is the first to go.
            scores.append(float(error.mean()) if used.any() else np.inf)
        return members[int(np.argmax(scores))]


def associate(views: Sequence[ViewDetections], config: Optional[AssociationConfig] = None,
              counters: Optional[AssociationCounters] = None) -> List[Person]:
    """
    Group the detections of one synchronised frame into persons.

    :param views: one :class:`ViewDetections` per camera (empty ones allowed).
    :param config: thresholds (defaults: :class:`AssociationConfig`).
    :param counters: optional counters to add this call's events to.
    :return: persons ordered by their first (view, detection); every usable detection is in
        exactly one person.
    """
    config = config or AssociationConfig()
    counters = counters if counters is not None else AssociationCounters()
    counters.frames += 1
    if _check_views(views) is None:
        return []
    frame = _Frame(views, config, counters)
    count = len(frame.view_of)
    clusters: Dict[int, List[int]] = {i: [i] for i in range(count)}
    cluster_of = list(range(count))
    edges = []
    weight = config.upstream_id_weight
    for a, b in zip(*np.nonzero(np.triu(frame.known, 1))):
        raw = frame.cost[a, b]
        if raw > config.max_epipolar_error:
            continue
        ordered = raw
        if frame.ids[a] is not None and frame.ids[b] is not None:
            ordered = raw / weight if frame.ids[a] == frame.ids[b] else raw * weight
        # Ties broken by content-free indices only after two float keys: exact ties are
        # rare enough that detection order does not change the grouping in practice.
        edges.append((ordered, raw, int(a), int(b)))
    edges.sort()
    refused = set()
    for _, _, a, b in edges:
        ca, cb = cluster_of[a], cluster_of[b]
        if ca == cb:
            continue
        members_a, members_b = clusters[ca], clusters[cb]
        key = (tuple(sorted(members_a)), tuple(sorted(members_b)))
        if key in refused:
            continue
        views_a = {frame.view_of[m] for m in members_a}
        if any(frame.view_of[m] in views_a for m in members_b):
            continue
        block = frame.cost[np.ix_(members_a, members_b)]
        block_known = frame.known[np.ix_(members_a, members_b)]
        if (block_known & (block > config.max_epipolar_error)).any():
            refused.add(key)
            counters.merges_rejected += 1
            continue
        keep, drop = (ca, cb) if ca < cb else (cb, ca)
        clusters[keep] = members_a + members_b
        del clusters[drop]
        for m in clusters[keep]:
            cluster_of[m] = keep
    _split_bad_clusters(frame, clusters, cluster_of, counters)

    persons = [_make_person(frame, sorted(members, key=lambda m: frame.view_of[m]))
               for members in clusters.values()]
    persons.sort(key=lambda p: min(p.detections.items()))
    counters.persons_multi_view += sum(p.is_multi_view for p in persons)
    counters.persons_single_view += sum(not p.is_multi_view for p in persons)
    conflicts = _count_id_conflicts(frame, cluster_of)
    if conflicts:
        logger.debug('%d detection pairs: upstream ids disagree with geometry (geometry won)',
                     conflicts)
    counters.upstream_id_conflicts += conflicts
    return persons


def _split_bad_clusters(frame: _Frame, clusters: Dict[int, List[int]],
                        cluster_of: List[int], counters: AssociationCounters):
    """
    Detach the worst-reprojecting detection from clusters that fail triangulation.

    :param frame: working data.
    :param clusters: cluster id -> members, updated in place.
    :param cluster_of: cluster id of every detection, updated in place.
    :param counters: ``clusters_split`` counts each detached detection.
    """
    # Cluster ids are detection indices, each the id of the cluster holding it; so a
    # detached detection can take its own index, and the rest the smallest of theirs.
    for cluster_id in list(clusters):
        members = clusters[cluster_id]
        while len(members) >= 2 and not frame.cluster_ok(members):
            worst = frame.worst_member(members)
            members = [m for m in members if m != worst]
            del clusters[cluster_id]
            cluster_id = min(members)
            clusters[cluster_id] = members
            for member in members:
                cluster_of[member] = cluster_id
            clusters[worst] = [worst]
            cluster_of[worst] = worst
            counters.clusters_split += 1
            logger.debug('cluster of views %s failed triangulation: detached view %d',
                         [frame.view_of[m] for m in members], frame.view_of[worst])


def _make_person(frame: _Frame, members: List[int]) -> Person:
    """
    Build a :class:`Person` from a cluster.

    :param frame: working data.
    :param members: flattened detection indices, sorted by view.
    :return: the person.
    """
    num_kp = frame.keypoints[members[0]].shape[0]
    detections = {frame.view_of[m]: frame.det_of[m] for m in members}
    keypoints_2d = {frame.view_of[m]: frame.keypoints[m] for m in members}
    ids = [frame.ids[m] for m in members if frame.ids[m] is not None]
    upstream_id = None
    if ids:
        values, counts = np.unique(ids, return_counts=True)
        upstream_id = int(values[np.argmax(counts)])
    if len(members) < 2:
        return Person(detections=detections, keypoints_2d=keypoints_2d,
                      points_3d=np.zeros((num_kp, 3)), conf_3d=np.zeros(num_kp),
                      upstream_id=upstream_id)
    result, err_norm, err_px, _, _ = frame.triangulate(members)
    pair_costs = [frame.cost[a, b] for a, b in itertools.combinations(members, 2)
                  if frame.known[a, b]]
    return Person(detections=detections, keypoints_2d=keypoints_2d,
                  points_3d=result.points_3d, conf_3d=result.conf_3d,
                  reprojection_error_px=err_px, reprojection_error=err_norm,
                  epipolar_error=float(np.mean(pair_costs)) if pair_costs else 0.0,
                  upstream_id=upstream_id)


def _count_id_conflicts(frame: _Frame, cluster_of: List[int]) -> int:
    """
    Count detection pairs with an affinity where upstream ids and the grouping disagree.

    :param frame: working data.
    :param cluster_of: cluster of every flattened detection.
    :return: number of pairs.
    """
    conflicts = 0
    for a, b in zip(*np.nonzero(np.triu(frame.known, 1))):
        if frame.ids[a] is None or frame.ids[b] is None:
            continue
        if (frame.ids[a] == frame.ids[b]) != (cluster_of[a] == cluster_of[b]):
            conflicts += 1
    return conflicts


class Associator:
    """
    Stateful wrapper of :func:`associate` that accumulates counters across frames.

    :param config: thresholds.
    """

    def __init__(self, config: Optional[AssociationConfig] = None):
        self.config = config or AssociationConfig()
        self.counters = AssociationCounters()

    def __call__(self, views: Sequence[ViewDetections]) -> List[Person]:
        """
        Associate one frame (see :func:`associate`).

        :param views: one :class:`ViewDetections` per camera.
        :return: persons.
        """
        return associate(views, self.config, self.counters)
