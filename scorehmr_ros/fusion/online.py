"""
Online (causal) temporal refinement: one sliding window per track.

The paper refines whole sequences offline (``Observations.frame_prev`` with
``guidance.temporal``). A robot needs the newest pose now. Per track this module keeps
the last ``window`` frames and, for every new frame, returns the newest pose with the
latency of one refinement call. Two modes (``OnlineConfig.mode``):

* ``'window'`` (default, chosen by measurement): the paper's offline refinement run on
  the last W frames only (each frame starts from its own regression estimate, keypoint
  guidance per frame, DESIGN's L_temp = sum_k ||x_{k+1} - x_k||^2 along the window), and
  the newest frame's result is published. Causal; W rows per track and call. The
  translations carry over (``window_translation``): the older frames start from their
  latest refined translation, the newest from the previous frame's.
* ``'frozen'``: only the newest frame is refined; earlier frames are frozen at their
  refined poses. It warm-starts (``warm_start``: the window's prediction, the previous
  pose or the regression estimate) with ``warm_outer_iters`` outer iterations, and L_temp
  with the earlier frames frozen leaves ``||x_new - target||^2``: the target is the
  least-squares line through the window's 6D poses against their stamps, evaluated at the
  new stamp (one frame: the previous pose, DESIGN's first-order term; two frames:
  ``2 x_{k-1} - x_{k-2}``, the second-order term). One row per track and call, but
  chaining refined poses has no anchor but the keypoints: measured, the pose drifts
  without a trained prior (docs/multiview_temporal.md).

A track unseen for more than ``max_gap_s`` (or whose stamps go backwards, e.g. a bag
loop) restarts cold. Several tracks updating at the same instant are refined in one
:meth:`~scorehmr_ros.refiner.Refiner.refine` call per kind (warm or cold; one view or
several calibrated views, whose L_temp step sizes differ: ``rho_temporal`` and
``rho_temporal_multiview``).

Multi-view tracks: with ``world_to_camera`` in the observations and
``guidance.multiview_mode: calibrated``, a track's rows are the views of the person
(frozen mode holds its poses in the world frame, so they stay valid when the anchor view
changes); otherwise a track update must be one row (one camera).
"""

import collections
import dataclasses
import logging
from math import inf
from typing import Deque, Dict, Hashable, List, Optional, Sequence, Tuple

import torch

from scorehmr_ros.body.rotations import matrix_to_rot6d, rot6d_to_matrix
from scorehmr_ros.guidance.calibrated import to_view
from scorehmr_ros.observations import ObservationError, Observations
from scorehmr_ros.refiner import Refiner

LOG = logging.getLogger(__name__)

WARM_STARTS = ('predicted', 'previous', 'regression')
MODES = ('window', 'frozen')
WINDOW_TRANSLATIONS = ('refined', 'regression')


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """
    Settings of the online sliding-window mode (defaults chosen in docs/multiview_temporal.md).

    :param mode: ``'window'`` (re-refine the last W frames jointly) or ``'frozen'``.
    :param window: W, frames per track in the window (including the newest).
    :param warm_outer_iters: outer iterations of a call with history (window mode: every
        call after the track's first; frozen mode: a warm-started frame).
    :param warm_start: ``'predicted'``, ``'previous'`` or ``'regression'``.
    :param temporal_weight: weight of the pull toward the window's prediction (times
        ``guidance.rho_temporal``).
    :param max_gap_s: a track unseen for longer restarts cold.
    :param warm_translation: frozen mode: warm-start the translation too (else each
        frame's translation starts from its regression estimate: chaining the camera Adam
        across frames lets the weakly observed depth random-walk; measured).
    :param window_translation: window mode: where each frame's translation starts.
        ``'refined'``: the window's older frames from their latest refined translation,
        the newest from the previous frame's; ``'regression'``: every frame from its
        regression estimate, every call. The camera Adam moves at most ``camera_lr`` per
        guided step, so from the regression start a call with S outer iterations can move
        the depth by S * steps * lr (S = 5: 0.25 m) and the newest frame's root error is
        capped by that budget; ``'refined'`` carries the translation across calls
        (docs/multiview_temporal.md).
    :param rho_temporal: step size of L_temp for tracks seen by one view (both modes);
        None keeps the refiner's ``guidance.rho_temporal`` (the paper's 30, measured best
        for one view).
    :param rho_temporal_multiview: step size of L_temp for calibrated tracks seen by two
        or more views with extrinsics (None: as ``rho_temporal``). 3 by measurement: with
        several precise views the window's pull toward past frames costs more than it
        smooths (the paper's 30 is worse than per-frame refinement there;
        docs/multiview_temporal.md).
    """

    mode: str = 'window'
    window: int = 3
    warm_outer_iters: int = 5
    warm_start: str = 'predicted'
    temporal_weight: float = 1.0
    max_gap_s: float = 0.5
    warm_translation: bool = False
    window_translation: str = 'refined'
    rho_temporal: Optional[float] = None
    rho_temporal_multiview: Optional[float] = 3.0

    def __post_init__(self):
        for name in ('window', 'warm_outer_iters'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'online.{name} must be a positive int, got {value!r}')
        if self.mode not in MODES:
            raise ValueError(f'online.mode must be one of {MODES}, got {self.mode!r}')
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f'online.warm_start must be one of {WARM_STARTS}, '
                             f'got {self.warm_start!r}')
        if self.window_translation not in WINDOW_TRANSLATIONS:
            raise ValueError(f'online.window_translation must be one of '
                             f'{WINDOW_TRANSLATIONS}, got {self.window_translation!r}')
        if not self.temporal_weight >= 0 or not self.max_gap_s > 0:
            raise ValueError('online.temporal_weight must be >= 0 and online.max_gap_s > 0')
        for name in ('rho_temporal', 'rho_temporal_multiview'):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float))
                                          and not isinstance(value, bool)
                                          and 0 <= value < inf):
                raise ValueError(f'online.{name} must be None or a finite number >= 0, '
                                 f'got {value!r}')


@dataclasses.dataclass
class TrackUpdate:
    """
    Result of one track's newest frame (R rows: the views given for it).

    :param track_id: the track.
    :param stamp_s: the frame's stamp.
    :param rotmats: [R, 24, 3, 3] refined pose, root in each row's camera.
    :param betas: [R, 10] shape.
    :param cam_t: [R, 3] body-to-camera translation per row, metres.
    :param refined: [R] False where the start (warm or regression) was returned.
    :param world_rotmats: [24, 3, 3] pose with the root in the world (calibrated tracks).
    :param world_t: [3] body-to-world translation (calibrated tracks).
    :param warm: whether the frame was warm-started.
    :param restarted: whether the track (re)started cold at this frame.
    :param window_frames: frames in the window after this update.
    :param latency_s: refinement time of the call that produced it.
    """

    track_id: Hashable
    stamp_s: float
    rotmats: torch.Tensor
    betas: torch.Tensor
    cam_t: torch.Tensor
    refined: torch.Tensor
    world_rotmats: Optional[torch.Tensor]
    world_t: Optional[torch.Tensor]
    warm: bool
    restarted: bool
    window_frames: int
    latency_s: float


@dataclasses.dataclass
class _Track:
    """
    Per-track window: stamps, observations and refined poses in the track frame.

    ``trans`` holds each frame's translation in the track frame (world or camera) and
    ``row_trans`` its rows' camera translations ([R, 3]); in window mode both are the
    latest refinement of the frame (later calls re-refine the older frames).
    """

    in_world: bool
    stamps: Deque[float]
    rotmats: Deque[torch.Tensor]
    trans: Deque[torch.Tensor]
    row_trans: Deque[torch.Tensor]
    betas: torch.Tensor
    observations: Deque[Observations]


class OnlineTemporalRefiner:
    """
    Causal sliding-window refinement of tracked people.

    :param refiner: the engine (its config decides single view, consistency or calibrated).
    :param config: online settings.
    """

    def __init__(self, refiner: Refiner, config: OnlineConfig = OnlineConfig()):
        self.refiner = refiner
        self.config = config
        self._tracks: Dict[Hashable, _Track] = {}
        guide = refiner.config.guidance
        self._calibrated = guide.multiview and guide.multiview_mode == 'calibrated'
        single = guide.rho_temporal if config.rho_temporal is None else config.rho_temporal
        multi = single if config.rho_temporal_multiview is None \
            else config.rho_temporal_multiview
        # One engine per step size (a refine call has one); both share denoiser and body.
        self._engines = {False: self._derive(refiner, float(single)),
                         True: self._derive(refiner, float(multi))}

    def _derive(self, refiner: Refiner, rho_temporal: float) -> Refiner:
        """Derive the engine: the window's temporal loss on, the given step size."""
        guide = refiner.config.guidance
        changes = {}
        if self.config.mode == 'window' and not guide.temporal:
            # The window is refined with the temporal loss: same engine, temporal on.
            changes['temporal'] = True
        if rho_temporal != guide.rho_temporal:
            changes['rho_temporal'] = rho_temporal
        if not changes:
            return refiner
        return Refiner(refiner.config.replace(guidance=changes), denoiser=refiner.denoiser,
                       body=refiner.body)

    @property
    def track_ids(self) -> List[Hashable]:
        """Tracks with a window."""
        return list(self._tracks)

    def forget(self, track_id: Hashable) -> None:
        """
        Drop a track's window (its next update starts cold).

        :param track_id: the track; unknown ids are ignored.
        """
        self._tracks.pop(track_id, None)

    def update(self, track_id: Hashable, obs: Observations, stamp_s: float) -> TrackUpdate:
        """
        Refine one track's newest frame.

        :param track_id: the track.
        :param obs: the track's rows at this instant (views of one person).
        :param stamp_s: the frame's stamp, seconds.
        :return: the newest pose.
        """
        return self.update_many([(track_id, obs, stamp_s)])[0]

    def update_many(self, items: Sequence[Tuple[Hashable, Observations, float]]
                    ) -> List[TrackUpdate]:
        """
        Refine the newest frame of several tracks, batched into one call per warm/cold kind.

        :param items: ``(track_id, observations of its views, stamp_s)``; ids unique.
        :return: one update per item, same order.
        """
        ids = [item[0] for item in items]
        if len(set(ids)) != len(ids):
            raise ValueError('update_many: each track may appear once per call')
        prepared, restarted = [], []
        for track_id, obs, stamp_s in items:
            self._check(track_id, obs)
            restarted.append(self._expire(track_id, float(stamp_s)))
            if self.config.mode == 'window':
                prepared.append(self._window_part(track_id, obs))
            else:
                prepared.append(self._prepare(track_id, obs, float(stamp_s)))
        out: List[Optional[TrackUpdate]] = [None] * len(items)
        multi = [self._multiview(obs) for _, obs, _ in items]
        # One call per kind: tracks with history run warm_outer_iters, new tracks S_max;
        # tracks seen by several calibrated views use their own rho_temporal.
        for warm, several in ((False, False), (False, True), (True, False), (True, True)):
            chosen = [i for i, part in enumerate(prepared)
                      if part[1] == warm and multi[i] == several]
            if not chosen:
                continue
            batch, offsets = _concat([prepared[i][0] for i in chosen])
            result = self._engines[several].refine(
                batch, outer_iters=self.config.warm_outer_iters if warm else None)
            for index, (start, stop) in zip(chosen, offsets):
                track_id, obs, stamp_s = items[index]
                if self.config.mode == 'window' and warm:
                    self._update_window(track_id, result, start, stop - obs.batch_size)
                # The newest frame is the last obs.batch_size rows of the track's part.
                out[index] = self._record(track_id, obs, float(stamp_s), result,
                                          stop - obs.batch_size, stop, prepared[index][1],
                                          restarted[index])
        return out

    def _multiview(self, obs: Observations) -> bool:
        """Whether a track's rows are two or more calibrated views (finite extrinsics)."""
        if not self._calibrated or obs.world_to_camera is None or obs.batch_size < 2:
            return False
        valid = torch.isfinite(obs.world_to_camera).all(dim=-1).all(dim=-1)
        return int(valid.sum()) >= 2

    def _window_part(self, track_id, obs: Observations):
        """Build the track's last W frames as one chained part; say whether it has history."""
        track = self._tracks.get(track_id)
        keep = self.config.window - 1
        frames = list(track.observations)[-keep:] if track is not None and keep else []
        if frames and self.config.window_translation == 'refined':
            # Carry the translation across calls: the camera Adam's budget per call is
            # small, and restarting every frame from its regression depth caps its error.
            frames = [dataclasses.replace(f, init_cam_t=t.to(f.init_cam_t.dtype))
                      for f, t in zip(frames, list(track.row_trans)[-keep:])]
            obs = dataclasses.replace(obs, init_cam_t=self._newest_translation(track, obs))
        frames.append(obs)
        group, prev, start = [], [], 0
        for index, frame in enumerate(frames):
            n = frame.batch_size
            group.append(torch.full((n,), index, dtype=torch.long))
            prev.append(torch.full((n,), start - frames[index - 1].batch_size if index else -1,
                                   dtype=torch.long))
            start += n
        part, _ = _concat([dataclasses.replace(f, view_group=None, frame_prev=None)
                           for f in frames])
        part = dataclasses.replace(part, view_group=torch.cat(group), frame_prev=torch.cat(prev))
        return part, len(frames) > 1

    def _newest_translation(self, track: '_Track', obs: Observations) -> torch.Tensor:
        """
        Start translation of the newest frame: the previous frame's refined one.

        Not a line fit through the window (not measured): a walking person moves a few
        centimetres per frame, which one call's camera steps cover.

        :return: [R, 3] per row; rows without valid extrinsics keep their regression start.
        """
        dtype = obs.init_cam_t.dtype
        last_t = track.trans[-1].to(dtype)
        if not track.in_world:
            return last_t[None].expand(obs.batch_size, 3).contiguous()
        w2c = obs.world_to_camera.to(dtype)
        valid = torch.isfinite(w2c).all(dim=-1).all(dim=-1)
        safe = torch.where(valid[:, None, None], w2c, torch.eye(4, dtype=dtype))
        rows = obs.batch_size
        betas = track.betas.to(self.refiner.dtype)[None].expand(rows, 10)
        rest = self.refiner.body.rest_joints(betas)[:, 0].to(dtype)
        rot = track.rotmats[-1].to(dtype)[None].expand(rows, 24, 3, 3)
        _, view_t = to_view(rot, last_t[None].expand(rows, 3), rest, safe[:, :3, :3],
                            safe[:, :3, 3])
        return torch.where(valid[:, None], view_t, obs.init_cam_t).contiguous()

    def _update_window(self, track_id, result, start: int, newest: int) -> None:
        """Store the latest refined translations of the window's older frames (rows)."""
        track = self._tracks.get(track_id)
        if track is None:
            return
        keep = self.config.window - 1
        older = list(track.observations)[-keep:] if keep else []
        first = len(track.observations) - len(older)
        row = start
        for index, frame in enumerate(older):
            stop = row + frame.batch_size
            if bool(result.refined[row:stop, 0].all()):
                track.row_trans[first + index] = result.cam_t[row:stop, 0].detach().cpu()
                if track.in_world and result.groups is not None:
                    group = int(result.groups.row_group[row])
                    track.trans[first + index] = result.groups.world_t[group, 0].detach().cpu()
                elif not track.in_world:
                    track.trans[first + index] = result.cam_t[row, 0].detach().cpu()
            row = stop
        if row != newest:
            raise RuntimeError(f'track {track_id!r}: window rows {row} != newest {newest}')

    def _check(self, track_id, obs: Observations) -> None:
        if obs.init_cam_t is None:
            raise ObservationError(f'track {track_id!r}: init_cam_t is required online')
        if obs.view_group is not None and bool((obs.view_group != obs.view_group[0]).any()):
            raise ObservationError(f'track {track_id!r}: all rows must be views of one '
                                   f'person (one view_group)')
        if obs.batch_size > 1 and not (self._calibrated and obs.world_to_camera is not None):
            raise ObservationError(
                f'track {track_id!r}: {obs.batch_size} rows need calibrated multi-view '
                f'(guidance.multiview_mode calibrated and world_to_camera); give one row')

    def _expire(self, track_id, stamp_s: float) -> bool:
        """Drop a track's window after a gap or a stamp going back; True if it restarts."""
        track = self._tracks.get(track_id)
        if track is None:
            return True
        gap = stamp_s - track.stamps[-1]
        if gap > self.config.max_gap_s or gap <= 0:
            LOG.info('track %r restarts cold: %s', track_id,
                     f'gap {gap:.3f} s > max_gap_s' if gap > 0 else 'stamp did not advance')
            del self._tracks[track_id]
            return True
        return False

    def _prepare(self, track_id, obs: Observations, stamp_s: float):
        """Observations with warm start and temporal target; and whether warm."""
        track = self._tracks.get(track_id)
        if track is None:
            return obs, False
        rows = obs.batch_size
        dtype = obs.init_rotmats.dtype
        times = torch.tensor(list(track.stamps), dtype=torch.float64)
        hist_rot = torch.stack(list(track.rotmats)).to(dtype)            # [W, 24, 3, 3]
        hist_t = torch.stack(list(track.trans)).to(dtype)                # [W, 3]
        hist_6d = matrix_to_rot6d(hist_rot).reshape(len(times), 144)
        pred_6d = _linear_prediction(hist_6d, times, stamp_s)
        pred_t = _linear_prediction(hist_t, times, stamp_s)
        pred_rot = rot6d_to_matrix(pred_6d.reshape(24, 6))
        betas = track.betas.to(dtype)[None].expand(rows, 10)
        if track.in_world:
            # World-frame window: express it in each view's camera.
            w2c = obs.world_to_camera.to(dtype)
            valid = torch.isfinite(w2c).all(dim=-1).all(dim=-1)
            safe = torch.where(valid[:, None, None], w2c, torch.eye(4, dtype=dtype))
            rest = self.refiner.rest_pelvis(betas.to(self.refiner.dtype)).to(dtype)
            prev_rot, prev_t = to_view(hist_rot[-1:].expand(rows, 24, 3, 3),
                                       hist_t[-1:].expand(rows, 3), rest,
                                       safe[:, :3, :3], safe[:, :3, 3])
            pred_rot_rows, pred_t_rows = to_view(pred_rot[None].expand(rows, 24, 3, 3),
                                                 pred_t[None].expand(rows, 3), rest,
                                                 safe[:, :3, :3], safe[:, :3, 3])
        else:
            valid = torch.ones(rows, dtype=torch.bool)
            prev_rot, prev_t = hist_rot[-1:], hist_t[-1:]
            pred_rot_rows, pred_t_rows = pred_rot[None], pred_t[None]
        mode = self.config.warm_start
        init_rot, init_t = obs.init_rotmats, obs.init_cam_t
        keep = valid[:, None]
        if mode != 'regression':
            warm_rot, warm_t = ((prev_rot, prev_t) if mode == 'previous'
                                else (pred_rot_rows, pred_t_rows))
            init_rot = torch.where(keep[:, :, None, None], warm_rot, init_rot)
            if self.config.warm_translation:
                init_t = torch.where(keep, warm_t, init_t)
        target = matrix_to_rot6d(pred_rot_rows).reshape(-1, 144).expand(rows, 144)
        weight = torch.where(valid, torch.full((rows,), self.config.temporal_weight,
                                               dtype=dtype), torch.zeros(rows, dtype=dtype))
        return dataclasses.replace(obs, init_rotmats=init_rot.contiguous(),
                                   init_betas=betas.contiguous(), init_cam_t=init_t.contiguous(),
                                   temporal_target_6d=target.contiguous(),
                                   temporal_target_weight=weight), True

    def _record(self, track_id, obs, stamp_s, result, start, stop, warm,
                restarted) -> TrackUpdate:
        """Append the refined newest frame to the track's window; build the update."""
        rot, betas = result.rotmats[start:stop, 0], result.betas[start:stop, 0]
        cam_t, refined = result.cam_t[start:stop, 0], result.refined[start:stop, 0]
        world_rot = world_t = None
        in_world = False
        groups = result.groups
        if groups is not None:
            group = int(groups.row_group[start])
            if bool(groups.calibrated[group]):
                in_world = True
                world_rot, world_t = groups.world_rotmats[group, 0], groups.world_t[group, 0]
        track = self._tracks.get(track_id)
        if track is not None and track.in_world != in_world:
            # The track changed between world and camera frame: its window no longer fits.
            track = None
        if bool(refined.any()):
            if track is None:
                track = _Track(in_world=in_world,
                               stamps=collections.deque(maxlen=self.config.window),
                               rotmats=collections.deque(maxlen=self.config.window),
                               trans=collections.deque(maxlen=self.config.window),
                               row_trans=collections.deque(maxlen=self.config.window),
                               betas=betas[0].detach().cpu(),
                               observations=collections.deque(maxlen=self.config.window))
                self._tracks[track_id] = track
            track.stamps.append(stamp_s)
            track.rotmats.append((world_rot if in_world else rot[0]).detach().cpu())
            track.trans.append((world_t if in_world else cam_t[0]).detach().cpu())
            track.row_trans.append(cam_t.detach().cpu())
            track.observations.append(obs)
        return TrackUpdate(track_id=track_id, stamp_s=stamp_s, rotmats=rot, betas=betas,
                           cam_t=cam_t, refined=refined, world_rotmats=world_rot,
                           world_t=world_t, warm=warm, restarted=restarted,
                           window_frames=len(track.stamps) if track is not None else 0,
                           latency_s=result.info['elapsed_s'])


def _linear_prediction(values: torch.Tensor, times_s: torch.Tensor, at_s: float) -> torch.Tensor:
    """
    Least-squares line through ``values`` over ``times_s``, evaluated at ``at_s``.

    :param values: [W, ...] samples (W >= 1; one sample: returned as is).
    :param times_s: [W] their times.
    :param at_s: time to predict.
    :return: [...] prediction.
    """
    if values.shape[0] == 1:
        return values[0]
    t = times_s - times_s.mean()
    flat = values.reshape(values.shape[0], -1).double()
    mean = flat.mean(dim=0)
    slope = (t[:, None] * (flat - mean)).sum(dim=0) / (t ** 2).sum()
    pred = mean + slope * (at_s - float(times_s.mean()))
    return pred.reshape(values.shape[1:]).to(values.dtype)


def _concat(parts: List[Observations]):
    """Stack several tracks' observations into one call; return it and each's row range."""
    layouts = {part.keypoint_layout for part in parts}
    if len(layouts) != 1:
        raise ObservationError(f'tracks of one update use different keypoint layouts '
                               f'{sorted(layouts)}')
    offsets, start = [], 0
    for part in parts:
        offsets.append((start, start + part.batch_size))
        start += part.batch_size
    fields = {}
    for field in dataclasses.fields(Observations):
        values = [getattr(part, field.name) for part in parts]
        if field.name == 'keypoint_layout':
            fields[field.name] = values[0]
        elif field.name == 'view_group':
            # Each part's own groups (default: one person), offset to be distinct.
            fields[field.name], offset = [], 0
            for part in parts:
                local = part.view_group if part.view_group is not None else \
                    torch.zeros(part.batch_size, dtype=torch.long)
                local = torch.unique(local, return_inverse=True)[1]
                fields[field.name].append(local + offset)
                offset += int(local.max()) + 1
            fields[field.name] = torch.cat(fields[field.name])
        elif field.name == 'frame_prev':
            # Parts never link to each other; -1 (not None) so no default chaining applies.
            fields[field.name] = torch.cat([
                torch.where(p.frame_prev >= 0, p.frame_prev + lo, p.frame_prev)
                if p.frame_prev is not None else torch.full((p.batch_size,), -1)
                for p, (lo, _) in zip(parts, offsets)]).long()
        elif all(v is None for v in values):
            fields[field.name] = None
        else:
            fields[field.name] = torch.cat([_filled(v, p, field.name)
                                            for v, p in zip(values, parts)])
    return Observations(**fields), offsets


def _filled(value, part: Observations, name: str) -> torch.Tensor:
    """Return a field's tensor, or its neutral value for a track that lacks it."""
    if value is not None:
        return value
    b, dtype = part.batch_size, part.init_rotmats.dtype
    if name == 'world_to_camera':
        return torch.full((b, 4, 4), float('nan'), dtype=dtype)
    if name == 'temporal_target_6d':
        return torch.zeros(b, 144, dtype=dtype)
    if name == 'temporal_target_weight':
        return torch.zeros(b, dtype=dtype)
    raise ObservationError(f'{name}: given for some tracks of one update but not others')
