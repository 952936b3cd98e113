"""
Plots of training and evaluation (matplotlib, Agg backend: no display needed).

Every function writes one PNG and returns its path.
"""

import os
from typing import Dict, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss_curve(steps: Sequence[int], losses: Sequence[float], path: str,
                    title: str = 'training loss') -> str:
    """
    Plot the training loss against the step (log scale).

    :param steps: [L] steps of the logged losses.
    :param losses: [L] loss values (mean over the logging window).
    :param path: output PNG.
    :param title: plot title.
    :return: ``path``.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(steps), list(losses), lw=1.2)
    ax.set_xlabel('step')
    ax.set_ylabel('noise-prediction MSE')
    if len(losses) and min(losses) > 0:
        ax.set_yscale('log')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_error_histograms(errors: Dict[str, np.ndarray], path: str, metric: str) -> str:
    """
    Overlay histograms of per-row errors of several methods.

    :param errors: method name to [N] errors, mm.
    :param path: output PNG.
    :param metric: axis label (e.g. ``'PA-MPJPE (mm)'``).
    :return: ``path``.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    finite = [v[np.isfinite(v)] for v in errors.values()]
    top = max([float(v.max()) for v in finite if v.size] or [1.0])
    bins = np.linspace(0.0, top * 1.02 + 1e-9, 30)
    for (name, _), values in zip(errors.items(), finite):
        ax.hist(values, bins=bins, alpha=0.5, label=f'{name} (mean {values.mean():.1f})'
                if values.size else name)
    ax.set_xlabel(metric)
    ax.set_ylabel('rows')
    ax.legend()
    return _save(fig, path)


def plot_per_joint(per_joint: Dict[str, np.ndarray], joint_names: Sequence[str],
                   path: str) -> str:
    """
    Bar chart of the mean error per joint for several methods.

    :param per_joint: method name to [K] mean error per joint, mm.
    :param joint_names: [K] joint names.
    :param path: output PNG.
    :return: ``path``.
    """
    k = len(joint_names)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * k + 2), 4))
    width = 0.8 / max(1, len(per_joint))
    for i, (name, values) in enumerate(per_joint.items()):
        ax.bar(np.arange(k) + i * width, values, width=width, label=name)
    ax.set_xticks(np.arange(k) + 0.4 - width / 2)
    ax.set_xticklabels(joint_names, rotation=60, ha='right', fontsize=8)
    ax.set_ylabel('MPJPE per joint (mm)')
    ax.legend()
    return _save(fig, path)


def plot_sweep(parameter: str, values: Sequence[float], curves: Dict[str, Sequence[float]],
               path: str, start: Dict[str, float] = None) -> str:
    """
    Plot errors against a swept refinement parameter (the supplement's ablation shape).

    :param parameter: the swept parameter (e.g. ``'sampler.tau'``).
    :param values: [P] its values.
    :param curves: metric name to [P] errors, mm.
    :param path: output PNG.
    :param start: metric name to the error of the start, drawn as a dashed line.
    :return: ``path``.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, errs in curves.items():
        line, = ax.plot(list(values), list(errs), marker='o', label=name)
        if start and name in start:
            ax.axhline(start[name], ls='--', color=line.get_color(), alpha=0.6,
                       label=f'{name} start')
    ax.set_xlabel(parameter)
    ax.set_ylabel('error (mm)')
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)
