"""
Evaluation reports: before/after tables in Markdown and JSON, and the plots.

``write_report`` writes into the output folder: ``results_<setting>.json`` (means,
counts, configuration, per-row errors), ``results_<setting>.md`` (the table),
``hist_<metric>_<setting>.png``, ``per_joint_<setting>.png`` and, for sweeps,
``sweep_<key>_<setting>.png``.
"""

import json
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

from scorehmr_ros.evaluation.runner import SettingResult

#: metric key -> column title.
COLUMNS = {'mpjpe': 'MPJPE (mm)', 'pa_mpjpe': 'PA-MPJPE (mm)', 'reproj_px': '2D error (px)',
           'accel': 'Acc Err'}
#: method key -> row title.
METHOD_TITLES = {'start': 'start (regression estimate)', 'scorehmr': 'ScoreHMR (prior + guidance)',
                 'no_prior': 'prior-free fitting (same budget)'}


def _fmt(value: float) -> str:
    return 'n/a' if value is None or not math.isfinite(value) else f'{value:.1f}'


def markdown_table(result: SettingResult) -> str:
    """
    Render a setting's means as a Markdown table (one row per method).

    :param result: the evaluation result.
    :return: the table text.
    """
    summary = result.summary()
    keys = [k for k in COLUMNS if any(k in m for m in summary.values())]
    titles = [COLUMNS[k] + (f' ({result.info["accel_unit"]})' if k == 'accel' else '')
              for k in keys]
    lines = [f'| {result.setting} ({result.info["rows"]} rows, {result.subset}) | '
             + ' | '.join(titles) + ' |',
             '|---|' + '---:|' * len(keys)]
    for method, metrics in summary.items():
        lines.append(f'| {METHOD_TITLES.get(method, method)} | '
                     + ' | '.join(_fmt(metrics.get(k)) for k in keys) + ' |')
    return '\n'.join(lines) + '\n'


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


def write_report(out_dir: str, result: SettingResult, config: Dict[str, Any],
                 sweeps: Optional[List[Dict[str, Any]]] = None,
                 joint_names: Optional[List[str]] = None) -> Dict[str, str]:
    """
    Write the tables, the JSON results and the plots of one setting.

    :param out_dir: output folder.
    :param result: the evaluation result.
    :param config: the refiner configuration as a plain dict.
    :param sweeps: results of :func:`~scorehmr_ros.evaluation.runner.run_sweep`.
    :param joint_names: names of the subset's joints for the per-joint plot.
    :return: name to path of every file written.
    """
    from scorehmr_ros.evaluation.plots import (
        plot_error_histograms, plot_per_joint, plot_sweep)

    os.makedirs(out_dir, exist_ok=True)
    s = result.setting
    paths = {'json': os.path.join(out_dir, f'results_{s}.json'),
             'markdown': os.path.join(out_dir, f'results_{s}.md')}
    table = markdown_table(result)
    text = [f'# ScoreHMR evaluation: {s}\n\n', f'Weights: {result.info["weights"]}\n\n', table]
    for sweep in sweeps or []:
        text.append(f'\nSweep of `{sweep["parameter"]}` (ScoreHMR, means):\n\n')
        text.append(f'| {sweep["parameter"]} | MPJPE (mm) | PA-MPJPE (mm) | 2D error (px) |\n'
                    '|---:|---:|---:|---:|\n')
        for i, value in enumerate(sweep['values']):
            text.append(f'| {value} | {_fmt(sweep["mpjpe"][i])} | {_fmt(sweep["pa_mpjpe"][i])} '
                        f'| {_fmt(sweep["reproj_px"][i])} |\n')
    with open(paths['markdown'], 'w', encoding='utf-8') as handle:
        handle.write(''.join(text))
    payload = {'setting': s, 'summary': result.summary(), 'info': result.info,
               'config': config, 'sweeps': sweeps or [],
               'per_row': {m: {k: v for k, v in e.items() if k != 'per_joint'}
                           for m, e in result.errors.items()}}
    with open(paths['json'], 'w', encoding='utf-8') as handle:
        json.dump(_json_safe(payload), handle, indent=1, allow_nan=False)
    for metric in ('mpjpe', 'pa_mpjpe'):
        paths[f'hist_{metric}'] = plot_error_histograms(
            {m: e[metric] for m, e in result.errors.items()},
            os.path.join(out_dir, f'hist_{metric}_{s}.png'), COLUMNS[metric])
    per_joint = {m: np.nanmean(e['per_joint'], axis=0) for m, e in result.errors.items()}
    k = next(iter(per_joint.values())).shape[0]
    paths['per_joint'] = plot_per_joint(per_joint, joint_names or [str(i) for i in range(k)],
                                        os.path.join(out_dir, f'per_joint_{s}.png'))
    for sweep in sweeps or []:
        key = sweep['parameter'].replace('.', '_')
        start = {COLUMNS[m]: sweep['start'][m] for m in ('mpjpe', 'pa_mpjpe')}
        paths[f'sweep_{key}'] = plot_sweep(
            sweep['parameter'], sweep['values'],
            {COLUMNS[m]: sweep[m] for m in ('mpjpe', 'pa_mpjpe')},
            os.path.join(out_dir, f'sweep_{key}_{s}.png'), start=start)
    return paths
