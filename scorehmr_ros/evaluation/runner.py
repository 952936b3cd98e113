"""
Evaluation of ScoreHMR in its three settings, with the start and a prior-free baseline.

Settings (rows of an :class:`~scorehmr_ros.evaluation.dataset.EvalData`):

* ``single``: every row on its own, keypoint guidance;
* ``multiview``: rows with equal ``sequence_id`` and ``frame_index`` are views of one
  person (``view_group``), keypoint + multi-view guidance (paper: tau 100, dt 10);
* ``video``: the rows of one ``(sequence_id, view_id)`` ordered by ``frame_index`` are
  a track linked by ``frame_prev``, keypoint + temporal guidance; Acc Err is reported.

Methods: ``start`` (the regression estimate), ``scorehmr`` (the refiner) and
``no_prior`` (:func:`~scorehmr_ros.evaluation.baselines.fit_without_prior`).
"""

import dataclasses
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.evaluation.baselines import BaselineConfig, fit_without_prior
from scorehmr_ros.evaluation.dataset import EvalData
from scorehmr_ros.metrics import (
    DEFAULT_SUBSET, SCOREHMR44_TO_LSP14, sequence_accel_error_mm, SMPL24_TO_LSP14,
    subset_errors_mm)
from scorehmr_ros.refiner import Refiner

LOG = logging.getLogger(__name__)

SETTINGS = ('single', 'multiview', 'video')
#: Config overrides each setting applies (the CLI's --set still wins).
SETTING_OVERRIDES = {
    'single': {},
    'multiview': {'guidance.multiview': True, 'sampler.tau': 100, 'sampler.ddim_step': 10},
    'video': {'guidance.temporal': True},
}
METHODS = ('start', 'scorehmr', 'no_prior')


def eval_joints(body: BodyModel, rotmats: torch.Tensor, betas: torch.Tensor,
                cam_t: torch.Tensor, joint_set: str) -> torch.Tensor:
    """
    Joints of SMPL parameters in an evaluation joint set, camera frame.

    ``lsp14`` comes from the 44-joint set's regressed joints when the body has the
    extra regressor, else from SMPL joints (:data:`~scorehmr_ros.metrics.SMPL24_TO_LSP14`).

    :param body: body model.
    :param rotmats: [B, 24, 3, 3] rotations.
    :param betas: [B, 10] shape.
    :param cam_t: [B, 3] body-to-camera translation, metres.
    :param joint_set: ``smpl24``, ``lsp14``, ``coco17`` or ``scorehmr44``.
    :return: [B, J, 3] metres.
    """
    dtype = next(body.buffers()).dtype
    out = body(rotmats.to(dtype), betas.to(dtype))
    if joint_set == 'smpl24':
        joints = out.joints45[:, :24]
    elif joint_set == 'coco17':
        joints = body.keypoints(out, 'coco17')
    elif joint_set in ('scorehmr44', 'lsp14') and body.has_extra_regressor:
        joints = body.keypoints(out, 'scorehmr44')
        if joint_set == 'lsp14':
            joints = joints[:, SCOREHMR44_TO_LSP14]
    elif joint_set == 'lsp14':
        joints = out.joints45[:, SMPL24_TO_LSP14]
    else:
        raise ValueError(f'joint set {joint_set!r} needs the 19-joint extra regressor '
                         '(body.extra_regressor)')
    return joints + cam_t.to(dtype)[:, None]


def batches(data: EvalData, setting: str, batch_size: int
            ) -> Iterable[Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]]:
    """
    Cut the rows into refinement batches for a setting.

    :param data: the evaluation data.
    :param setting: ``single``, ``multiview`` or ``video``.
    :param batch_size: rows per batch (a view group larger than this is one batch).
    :return: iterator of ``(rows [M], view_group [M] or None, frame_prev [M] or None)``;
        ``frame_prev`` indexes the batch's rows.
    """
    if setting not in SETTINGS:
        raise ValueError(f'setting must be one of {SETTINGS}, got {setting!r}')
    n = data.num_rows
    if setting == 'single':
        for start in range(0, n, batch_size):
            yield torch.arange(start, min(n, start + batch_size)), None, None
        return
    if setting == 'multiview':
        keys = torch.stack((data.sequence_id, data.frame_index), dim=1)
        _, group = torch.unique(keys, dim=0, return_inverse=True)
        units = [torch.nonzero(group == g).flatten() for g in range(int(group.max()) + 1)]
        lone = sum(1 for u in units if len(u) < 2)
        if lone:
            LOG.warning('%d of %d view group(s) have a single view: the multi-view term '
                        'does nothing for them', lone, len(units))
    else:
        keys = torch.stack((data.sequence_id, data.view_id), dim=1)
        _, track = torch.unique(keys, dim=0, return_inverse=True)
        units = []
        for tr in range(int(track.max()) + 1):
            rows = torch.nonzero(track == tr).flatten()
            rows = rows[torch.argsort(data.frame_index[rows], stable=True)]
            # A track longer than a batch is cut; the cut frame has no previous frame.
            units.extend(rows[i:i + batch_size] for i in range(0, len(rows), batch_size))
    pending: List[torch.Tensor] = []
    count = 0
    for unit in units + [None]:
        if unit is None or (pending and count + len(unit) > batch_size):
            rows = torch.cat(pending)
            sizes = [len(u) for u in pending]
            ids = torch.repeat_interleave(torch.arange(len(pending)), torch.tensor(sizes))
            if setting == 'multiview':
                yield rows, ids, None
            else:
                first = torch.cat([torch.tensor([0]), torch.cumsum(torch.tensor(sizes), 0)[:-1]])
                prev = torch.arange(len(rows)) - 1
                prev[first] = -1
                yield rows, None, prev
            pending, count = [], 0
        if unit is not None:
            pending.append(unit)
            count += len(unit)


@dataclasses.dataclass
class SettingResult:
    """
    Per-row outputs of one evaluation run.

    :param setting: the setting.
    :param subset: the joint subset the errors are on.
    :param joints: method to [N, J, 3] predicted joints (row order of the data).
    :param errors: method to metric (``mpjpe``, ``pa_mpjpe``, ``reproj_px`` [N];
        ``per_joint`` [N, K]; ``accel`` [F] for video) as numpy arrays, mm / px.
    :param info: counts, timings and the configuration.
    """

    setting: str
    subset: str
    joints: Dict[str, torch.Tensor]
    errors: Dict[str, Dict[str, np.ndarray]]
    info: Dict[str, Any]

    def summary(self) -> Dict[str, Dict[str, float]]:
        """Average every metric over the rows (NaN rows ignored): method -> metric -> mean."""
        out = {}
        for method, metrics in self.errors.items():
            out[method] = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float('nan')
                           for k, v in metrics.items() if k != 'per_joint'}
        return out


def run_setting(data: EvalData, refiner: Refiner, setting: str, batch_size: int = 64,
                baseline: Optional[BaselineConfig] = BaselineConfig(), progress: bool = True,
                subset: Optional[str] = None) -> SettingResult:
    """
    Refine every row in a setting and measure the start, ScoreHMR and the baseline.

    :param data: evaluation data.
    :param refiner: the refiner, configured for the setting (see :func:`setting_config`).
    :param setting: ``single``, ``multiview`` or ``video``.
    :param batch_size: rows per refinement call.
    :param baseline: prior-free fitting settings, or ``None`` to skip it.
    :param progress: show a tqdm bar.
    :param subset: joint subset (default: the joint set's default).
    :return: per-row errors and joints.
    """
    from tqdm import tqdm

    subset = subset or DEFAULT_SUBSET[data.joint_set]
    methods = ['start', 'scorehmr'] + (['no_prior'] if baseline is not None else [])
    n = data.num_rows
    joints = {m: torch.full((n,) + tuple(data.gt_joints.shape[1:]), float('nan'))
              for m in methods}
    reproj = {m: torch.full((n,), float('nan')) for m in methods}
    refined_flags = torch.zeros(n, dtype=torch.bool)
    elapsed = 0.0
    bar = tqdm(total=n, disable=not progress, desc=f'eval {setting}', unit='row',
               dynamic_ncols=True)
    body = refiner.body
    for rows, view_group, frame_prev in batches(data, setting, batch_size):
        part = data.subset(rows)
        obs = dataclasses.replace(part.obs, view_group=view_group, frame_prev=frame_prev)
        result = refiner.refine(obs)
        elapsed += result.info['elapsed_s']
        refined_flags[rows] = result.refined[:, 0].cpu()
        # (rotations, shape, translation) per method; ScoreHMR refines shape too when its
        # network diffuses it.
        params = {'start': (obs.init_rotmats, obs.init_betas, obs.init_cam_t),
                  'scorehmr': (result.rotmats[:, 0].cpu(), result.betas[:, 0].cpu(),
                               result.cam_t[:, 0].cpu())}
        if baseline is not None:
            rot, cam, _ = fit_without_prior(obs, body, refiner.config, baseline,
                                            refiner.joints_body)
            params['no_prior'] = (rot.cpu(), obs.init_betas, cam.cpu())
        with torch.no_grad():
            for method, (rot, betas, cam) in params.items():
                joints[method][rows] = eval_joints(body, rot, betas, cam,
                                                   data.joint_set).float().cpu()
                reproj[method][rows] = refiner.reprojection_error_px(
                    rot, betas, cam, obs).float().cpu()
        bar.update(len(rows))
    bar.close()
    errors = {}
    for method in methods:
        errs = subset_errors_mm(joints[method].double(), data.gt_joints.double(),
                                data.joint_set, subset)
        errors[method] = {'mpjpe': errs['mpjpe'].numpy(), 'pa_mpjpe': errs['pa_mpjpe'].numpy(),
                          'per_joint': errs['per_joint'].numpy(),
                          'reproj_px': reproj[method].numpy()}
        if setting == 'video':
            errors[method]['accel'] = _accel_errors(data, joints[method], subset)
    info = {'rows': n, 'refined_rows': int(refined_flags.sum()), 'refine_s': elapsed,
            'joint_set': data.joint_set, 'subset': subset,
            'accel_unit': 'mm/s^2' if data.fps else 'mm/frame^2',
            'weights': refiner.describe_weights()}
    return SettingResult(setting, subset, joints, errors, info)


def _accel_errors(data: EvalData, joints: torch.Tensor, subset: str) -> np.ndarray:
    """[F] Acc Err of every interior frame of every (sequence, view) track."""
    keys = torch.stack((data.sequence_id, data.view_id), dim=1)
    _, track = torch.unique(keys, dim=0, return_inverse=True)
    out = []
    for tr in range(int(track.max()) + 1):
        rows = torch.nonzero(track == tr).flatten()
        rows = rows[torch.argsort(data.frame_index[rows], stable=True)]
        out.append(sequence_accel_error_mm(joints[rows].double(), data.gt_joints[rows].double(),
                                           data.joint_set, subset, data.fps).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def setting_overrides(setting: str, overrides: Optional[Dict[str, Any]] = None
                      ) -> Dict[str, Any]:
    """
    Return the dotted config overrides of a setting, with the caller's on top.

    :param setting: ``single``, ``multiview`` or ``video``.
    :param overrides: ``{'sampler.tau': 50, ...}`` that win over the setting's.
    :return: merged overrides.
    """
    if setting not in SETTINGS:
        raise ValueError(f'setting must be one of {SETTINGS}, got {setting!r}')
    merged = dict(SETTING_OVERRIDES[setting])
    merged.update(overrides or {})
    return merged


def run_sweep(data: EvalData, refiner: Refiner, setting: str, parameter: str,
              values: Sequence[Any], batch_size: int = 64, progress: bool = True
              ) -> Dict[str, Any]:
    """
    Evaluate ScoreHMR for several values of one configuration key (no baseline).

    :param data: evaluation data.
    :param refiner: the configured refiner (its network and body are reused).
    :param setting: the setting.
    :param parameter: dotted key, e.g. ``'sampler.tau'``, ``'sampler.ddim_step'``,
        ``'sampler.outer_iters'``.
    :param values: values to try.
    :param batch_size: rows per refinement call.
    :param progress: show progress bars.
    :return: ``{'parameter', 'values', 'mpjpe', 'pa_mpjpe', 'reproj_px', 'start'}``.
    """
    section, _, key = parameter.partition('.')
    if not key:
        raise ValueError(f'--sweep expects SECTION.KEY=V1,V2,..., got {parameter!r}')
    out: Dict[str, Any] = {'parameter': parameter, 'values': list(values), 'mpjpe': [],
                           'pa_mpjpe': [], 'reproj_px': []}
    for value in values:
        cfg = refiner.config.replace(**{section: {key: value}})
        swept = Refiner(cfg, denoiser=refiner.denoiser, body=refiner.body)
        swept.weights_info = refiner.weights_info
        res = run_setting(data, swept, setting, batch_size, baseline=None, progress=progress)
        summary = res.summary()
        for metric in ('mpjpe', 'pa_mpjpe', 'reproj_px'):
            out[metric].append(summary['scorehmr'][metric])
        out['start'] = summary['start']
    return out
