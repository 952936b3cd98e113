"""
Training the ScoreHMR denoiser: noise-prediction loss on the 6D pose, Adam, EMA.

Paper settings are the defaults: Adam with learning rate 1e-4, batch 128, cosine
schedule with T = 1000, L2 loss between the predicted and the true noise of
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with ``t`` uniform in [0, T), EMA decay
0.995. Optionally the conditioning is replaced by zeros with probability
``cond_dropout`` so that one network also runs unconditionally.

Outputs in the training folder:

* ``state.pt``: everything a resume needs (network, EMA, optimiser, step, RNG, log),
  plain tensors and numbers only (read with ``weights_only=True``);
* ``denoiser.pt``: the EMA network in the project's checkpoint format (the
  ``model.checkpoint`` of a refiner config);
* ``model-released.pt``: the same weights in the released checkpoints' ``{'ema': ...}``
  layout;
* ``betas_stats.npz`` (with ``use_shape``): the shape scaling statistics;
* ``log.json`` and ``loss.png``: the loss curve.
"""

import dataclasses
import json
import logging
import os
import time
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
import yaml

from scorehmr_ros.body.rotations import matrix_to_rot6d
from scorehmr_ros.diffusion.checkpoint import released_state_dict, save_denoiser
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig, POSE_DIM
from scorehmr_ros.diffusion.schedule import CosineSchedule
from scorehmr_ros.training.dataset import COND_SOURCES, TrainingData
from scorehmr_ros.training.ema import EMA

LOG = logging.getLogger(__name__)

STATE_FORMAT = 'scorehmr_ros.train_state'
STATE_VERSION = 1
#: Feature size of an unconditional network (the layout needs at least one input).
UNCONDITIONAL_COND_DIM = 1


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume state, bad config)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """
    Training settings (paper defaults).

    :param steps: optimiser steps in total (a resume continues up to this number).
    :param batch_size: rows per step (128).
    :param lr: Adam learning rate (1e-4).
    :param ema_decay: EMA decay (0.995).
    :param cond_dropout: probability that a row's features are replaced by zeros.
    :param seed: seed of the initial weights and of the batch/timestep/noise sampling.
    :param hidden_dim: width of the residual MLPs (1024 in the paper).
    :param num_blocks: residual blocks (3).
    :param use_shape: also diffuse the 10 shape numbers (needs ``betas`` in the data).
    :param cond_dim: expected feature size; ``None`` takes the data's. A mismatch with
        the data is an error.
    :param cond_source: ``auto``, ``cond``, ``keypoints`` or ``none`` (see
        :func:`scorehmr_ros.training.dataset.load_training_data`).
    :param checkpoint_every: steps between checkpoints (and at the end).
    :param log_every: steps per logged mean loss.
    :param device: torch device (``cpu``, ``cuda``).
    :param threads: torch intra-op threads (0: library default).
    """

    steps: int = 100000
    batch_size: int = 128
    lr: float = 1e-4
    ema_decay: float = 0.995
    cond_dropout: float = 0.0
    seed: int = 0
    hidden_dim: int = 1024
    num_blocks: int = 3
    use_shape: bool = False
    cond_dim: Optional[int] = None
    cond_source: str = 'auto'
    checkpoint_every: int = 1000
    log_every: int = 50
    device: str = 'cpu'
    threads: int = 0

    def __post_init__(self):
        for name in ('steps', 'batch_size', 'hidden_dim', 'num_blocks', 'checkpoint_every',
                     'log_every'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'train.{name} must be a positive int, got {value!r}')
        if not self.lr > 0:
            raise ValueError(f'train.lr must be > 0, got {self.lr!r}')
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f'train.ema_decay must be in [0, 1), got {self.ema_decay!r}')
        if not 0.0 <= self.cond_dropout <= 1.0:
            raise ValueError(f'train.cond_dropout must be in [0, 1], got {self.cond_dropout!r}')
        if self.cond_source not in COND_SOURCES:
            raise ValueError(f'train.cond_source must be one of {COND_SOURCES}, '
                             f'got {self.cond_source!r}')
        if self.cond_dim is not None and (not isinstance(self.cond_dim, int)
                                          or self.cond_dim < 1):
            raise ValueError(f'train.cond_dim must be None or a positive int, '
                             f'got {self.cond_dim!r}')


def load_train_config(path: Optional[str] = None,
                      overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """
    Read training settings from YAML (a flat mapping, or under a ``train:`` key).

    :param path: YAML file or ``None`` for the defaults.
    :param overrides: field to value, applied last.
    :return: the settings; unknown keys are errors.
    """
    data: Dict[str, Any] = {}
    if path is not None:
        with open(path, 'r', encoding='utf-8') as handle:
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f'{path}: expected a mapping at the top level')
        data = dict(loaded.get('train', loaded)) if set(loaded) == {'train'} else dict(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    allowed = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f'unknown training setting(s) {unknown}; allowed: {sorted(allowed)}')
    return TrainConfig(**data)


def diffusion_targets(data: TrainingData, use_shape: bool):
    """
    Diffusion states x_0 of the training rows.

    :param data: the training set.
    :param use_shape: append the shape scaled to [-1, 1] with the data's min/max.
    :return: ``(x0 [N, D], betas_stats or None)``; stats hold ``betas_min``/``betas_max``.
    """
    x0 = matrix_to_rot6d(data.rotmats).reshape(data.num_rows, POSE_DIM)
    if not use_shape:
        return x0, None
    if not data.has_betas:
        raise TrainingError(f'{data.path}: use_shape needs the field {"betas"!r}')
    low, high = data.betas.min(dim=0).values, data.betas.max(dim=0).values
    # A constant coefficient would divide by zero: give it a unit range around its value.
    flat = (high - low) < 1e-6
    low, high = torch.where(flat, low - 0.5, low), torch.where(flat, high + 0.5, high)
    scaled = 2 * (data.betas - low) / (high - low) - 1
    return torch.cat((x0, scaled), dim=1), {'betas_min': low.numpy(), 'betas_max': high.numpy()}


class Trainer:
    """
    The training loop, its state and its outputs.

    :param data: validated training data.
    :param config: training settings.
    :param out_dir: folder for checkpoints, logs and plots.
    """

    def __init__(self, data: TrainingData, config: TrainConfig, out_dir: str):
        self.data, self.config, self.out_dir = data, config, out_dir
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = torch.device(config.device)
        cond_dim = data.cond_dim
        if config.cond_dim is not None and config.cond_dim != cond_dim:
            raise TrainingError(
                f'{data.path}: the data give {cond_dim} conditioning features '
                f'(source {data.cond_source!r}), the model config asks for cond_dim '
                f'{config.cond_dim}')
        self.cond = data.cond if cond_dim else torch.zeros(data.num_rows,
                                                           UNCONDITIONAL_COND_DIM)
        self.x0, self.betas_stats = diffusion_targets(data, config.use_shape)
        self.model_config = DenoiserConfig(
            cond_dim=int(self.cond.shape[1]), hidden_dim=config.hidden_dim,
            num_blocks=config.num_blocks, use_shape=config.use_shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = Denoiser(self.model_config).to(self.device).train()
        self.ema = EMA(self.model, config.ema_decay)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.schedule = CosineSchedule().to(self.device)
        # All sampling runs on one CPU generator: identical streams on any device, and
        # its state is what a resume restores.
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0
        # 'partial': the last entry is the mean of an unfinished window, written at the
        # end of a run and replaced when training continues (so a resumed run logs the
        # same windows as an uninterrupted one).
        self.log = {'step': [], 'loss': [], 'window_sum': 0.0, 'window_count': 0,
                    'partial': False}

    # -- state -----------------------------------------------------------------------------

    @property
    def state_path(self) -> str:
        """``state.pt`` in the output folder."""
        return os.path.join(self.out_dir, 'state.pt')

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resume needs, as plain data."""
        return {
            'format': STATE_FORMAT, 'version': STATE_VERSION,
            'config': dataclasses.asdict(self.config),
            'model_config': dataclasses.asdict(self.model_config),
            'model': {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            'ema': self.ema.state_dict(), 'optimizer': self.optimizer.state_dict(),
            'step': self.step, 'rng': self.generator.get_state(), 'log': dict(self.log),
            'data': {'path': os.path.abspath(self.data.path), 'rows': self.data.num_rows,
                     'cond_dim': self.data.cond_dim, 'cond_source': self.data.cond_source},
        }

    def load_state(self, path: str) -> None:
        """
        Continue from a ``state.pt``.

        :param path: the file.
        """
        try:
            state = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # noqa: B902 - any unpickling failure is a bad file
            raise TrainingError(f'{path}: cannot read the training state ({err})') from err
        if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
            raise TrainingError(f'{path}: not a training state file')
        if state['model_config'] != dataclasses.asdict(self.model_config):
            raise TrainingError(
                f'{path}: the saved network {state["model_config"]} differs from the one '
                f'this data and config give {dataclasses.asdict(self.model_config)} '
                '(feature size, hidden_dim, num_blocks, use_shape)')
        changed = {k: (v, getattr(self.config, k)) for k, v in state['config'].items()
                   if k != 'steps' and getattr(self.config, k) != v}
        if changed:
            LOG.warning('resuming with changed settings (saved, now): %s', changed)
        self.model.load_state_dict(state['model'])
        self.ema.load_state_dict(state['ema'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.generator.set_state(state['rng'])
        self.step = int(state['step'])
        self.log = dict(state['log'])

    # -- loop ------------------------------------------------------------------------------

    def loss(self) -> torch.Tensor:
        """
        Noise-prediction loss of one random batch (advances the RNG).

        :return: scalar mean squared error.
        """
        cfg, gen = self.config, self.generator
        n = self.data.num_rows
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        t = torch.randint(self.schedule.num_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn(cfg.batch_size, self.x0.shape[1], generator=gen)
        cond = self.cond[idx]
        if cfg.cond_dropout > 0:
            drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout
            cond = torch.where(drop[:, None], torch.zeros_like(cond), cond)
        x0, noise, t, cond = (v.to(self.device) for v in (self.x0[idx], noise, t, cond))
        x_t = (self.schedule.sqrt_alphas_cumprod[t][:, None] * x0
               + self.schedule.sqrt_one_minus_alphas_cumprod[t][:, None] * noise)
        return torch.nn.functional.mse_loss(self.model(x_t, t, cond), noise)

    def train(self, progress: bool = True) -> Dict[str, Any]:
        """
        Run (or continue) training up to ``config.steps``; write every output.

        :param progress: show a tqdm progress bar.
        :return: summary (steps, first and last logged loss, output paths, seconds).
        """
        from tqdm import tqdm

        cfg = self.config
        started = time.perf_counter()
        if self.log['partial']:
            self.log['step'].pop()
            self.log['loss'].pop()
            self.log['partial'] = False
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress,
                   desc='train', unit='step', dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
                loss = self.loss()
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f'non-finite loss ({float(loss.detach())}) at step {self.step + 1}; '
                        f'nothing was saved for this step (last checkpoint: {self.state_path}). '
                        'Lower the learning rate or check the data.')
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.ema.update(self.model)
                self.step += 1
                self._log_loss(float(loss.detach()))
                bar.update(1)
                if self.log['step'] and self.log['step'][-1] == self.step:
                    bar.set_postfix(loss=f'{self.log["loss"][-1]:.4g}')
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
        finally:
            bar.close()
        if self.log['window_count']:
            self.log['step'].append(self.step)
            self.log['loss'].append(self.log['window_sum'] / self.log['window_count'])
            self.log['partial'] = True
        paths = self.save()
        losses = self.log['loss']
        return {'steps': self.step, 'first_loss': losses[0] if losses else None,
                'last_loss': losses[-1] if losses else None, 'paths': paths,
                'elapsed_s': time.perf_counter() - started}

    def _log_loss(self, value: float) -> None:
        self.log['window_sum'] += value
        self.log['window_count'] += 1
        if self.log['window_count'] == self.config.log_every:
            self.log['step'].append(self.step)
            self.log['loss'].append(self.log['window_sum'] / self.log['window_count'])
            self.log['window_sum'], self.log['window_count'] = 0.0, 0

    # -- outputs ---------------------------------------------------------------------------

    def save(self) -> Dict[str, str]:
        """
        Write the resume state, both checkpoint formats, the log and the loss plot.

        :return: name to path of every file written.
        """
        from scorehmr_ros.evaluation.plots import plot_loss_curve

        os.makedirs(self.out_dir, exist_ok=True)
        paths = {'state': self.state_path,
                 'denoiser': os.path.join(self.out_dir, 'denoiser.pt'),
                 'released': os.path.join(self.out_dir, 'model-released.pt'),
                 'log': os.path.join(self.out_dir, 'log.json'),
                 'loss_plot': os.path.join(self.out_dir, 'loss.png')}
        meta = self.checkpoint_meta()
        if self.betas_stats is not None:
            paths['betas_stats'] = os.path.join(self.out_dir, 'betas_stats.npz')
            np.savez(paths['betas_stats'], **self.betas_stats)
            meta['betas_stats'] = paths['betas_stats']
        # Write to a temporary name and rename: an interrupted save never leaves a
        # truncated state behind.
        tmp = self.state_path + '.tmp'
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, self.state_path)
        save_denoiser(paths['denoiser'], self.ema.model, meta=meta)
        torch.save({'ema': released_state_dict(self.ema.model), 'step': self.step},
                   paths['released'])
        with open(paths['log'], 'w', encoding='utf-8') as handle:
            json.dump({'step': self.log['step'], 'loss': self.log['loss'], 'meta': meta},
                      handle, indent=1)
        plot_loss_curve(self.log['step'], self.log['loss'], paths['loss_plot'],
                        title=f'training loss ({self.data.num_rows} rows)')
        return paths

    def checkpoint_meta(self) -> Dict[str, Any]:
        """Plain-data description stored in the checkpoint (how to build its input)."""
        return {
            'trained_steps': self.step, 'train_rows': self.data.num_rows,
            'train_data': os.path.basename(self.data.path),
            'cond_source': self.data.cond_source,
            'keypoint_layout': self.data.keypoint_layout or '',
            'cond_dropout': self.config.cond_dropout, 'ema_decay': self.config.ema_decay,
            'data_source': str(self.data.meta.get('source', '')),
            'data_licence': str(self.data.meta.get('licence', '')),
        }


def train(data: TrainingData, config: TrainConfig, out_dir: str, resume: bool = True,
          progress: bool = True) -> Dict[str, Any]:
    """
    Train a denoiser, continuing from ``out_dir/state.pt`` when it exists and ``resume``.

    :param data: training data.
    :param config: settings.
    :param out_dir: output folder.
    :param resume: continue from the saved state if there is one.
    :param progress: show a progress bar.
    :return: the summary of :meth:`Trainer.train`.
    """
    trainer = Trainer(data, config, out_dir)
    if resume and os.path.isfile(trainer.state_path):
        trainer.load_state(trainer.state_path)
        LOG.info('resuming from %s at step %d', trainer.state_path, trainer.step)
    elif os.path.isfile(trainer.state_path):
        LOG.warning('%s exists and resume is off: starting over', trainer.state_path)
    return trainer.train(progress=progress)
