"""
The ``scorehmr train`` and ``scorehmr eval`` subcommands (registered by scorehmr_ros.cli).

Kept beside the code they drive so that the top-level CLI module only names them.
"""

import argparse
import json
import logging
import sys
from typing import Any, Dict, List

import yaml

LOG = logging.getLogger('scorehmr')


def _dotted(items: List[str], flag: str) -> Dict[str, Any]:
    out = {}
    for item in items:
        if '=' not in item:
            raise ValueError(f'{flag} expects KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_train_parser(sub) -> None:
    """
    Register ``scorehmr train``.

    :param sub: the argparse subparsers object.
    """
    p = sub.add_parser('train', help='train a denoiser on a train.npz',
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', required=True, help='training .npz (schema: docs/training.md)')
    p.add_argument('--out', required=True, help='output folder (checkpoints, log, plot)')
    p.add_argument('--config', help='YAML of training settings (keys of TrainConfig)')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override a training setting, e.g. --set lr=3e-4')
    p.add_argument('--steps', type=int, help='total optimiser steps (default 100000)')
    p.add_argument('--batch-size', type=int, help='rows per step (default 128)')
    p.add_argument('--lr', type=float, help='Adam learning rate (default 1e-4)')
    p.add_argument('--hidden-dim', type=int, help='MLP width (default 1024)')
    p.add_argument('--num-blocks', type=int, help='residual blocks (default 3)')
    p.add_argument('--cond-dropout', type=float,
                   help='probability of zeroed features per row (default 0)')
    p.add_argument('--cond', dest='cond_source',
                   choices=('auto', 'cond', 'keypoints', 'none'),
                   help="features: the file's cond, keypoint features, none (default auto)")
    p.add_argument('--seed', type=int, help='seed (default 0)')
    p.add_argument('--device', help='cpu or cuda (default cpu)')
    p.add_argument('--threads', type=int, help='torch threads (default: library default)')
    p.add_argument('--no-resume', action='store_true',
                   help='start over even if OUT/state.pt exists')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    """Run ``scorehmr train``."""
    from scorehmr_ros.training.dataset import load_training_data
    from scorehmr_ros.training.trainer import load_train_config, train

    overrides = _dotted(args.set, '--set')
    for name in ('steps', 'batch_size', 'lr', 'hidden_dim', 'num_blocks', 'cond_dropout',
                 'cond_source', 'seed', 'device', 'threads'):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = load_train_config(args.config, overrides)
    data = load_training_data(args.data, config.cond_source)
    LOG.info('training data: %s (%d rows, features: %s, C = %d)', args.data, data.num_rows,
             data.cond_source, data.cond_dim)
    summary = train(data, config, args.out, resume=not args.no_resume,
                    progress=not args.no_progress)
    LOG.info('trained to step %d in %.1f s; loss %.4g -> %.4g', summary['steps'],
             summary['elapsed_s'], summary['first_loss'] or float('nan'),
             summary['last_loss'] or float('nan'))
    for name, path in summary['paths'].items():
        print(f'{name}: {path}')
    return 0


def add_eval_parser(sub) -> None:
    """
    Register ``scorehmr eval``.

    :param sub: the argparse subparsers object.
    """
    p = sub.add_parser('eval', help='evaluate refinement on an eval.npz',
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', required=True, help='evaluation .npz (schema: docs/training.md)')
    p.add_argument('--setting', default='single', choices=('single', 'multiview', 'video'))
    p.add_argument('--checkpoint', help='denoiser checkpoint (sets model.checkpoint)')
    p.add_argument('--out', required=True, help='output folder (tables, JSON, plots)')
    p.add_argument('--batch-size', type=int, default=64, help='rows per refinement call')
    p.add_argument('--config', help='refiner YAML (see config/refiner.yaml)')
    p.add_argument('--set', action='append', default=[], metavar='SECTION.KEY=VALUE',
                   help='override a refiner setting (wins over the setting defaults)')
    p.add_argument('--sweep', action='append', default=[], metavar='SECTION.KEY=V1,V2,..',
                   help='also evaluate ScoreHMR for each value, e.g. sampler.tau=50,100,200')
    p.add_argument('--cond', dest='cond_source', choices=('auto', 'cond', 'keypoints', 'none'),
                   help="features: the file's cond, keypoint features or zeros "
                   '(default: what the checkpoint was trained on, else auto)')
    p.add_argument('--subset', choices=('smpl24', 'lsp14', 'coco17', 'scorehmr44'),
                   help='joint subset of the errors (default: by joint set)')
    p.add_argument('--frame-step', type=int, default=1,
                   help='evaluate only frames with frame_index %% N == 0 (all their views)')
    p.add_argument('--no-baseline', action='store_true', help='skip prior-free fitting')
    p.add_argument('--baseline-reg', type=float, default=100.0,
                   help='prior-free fitting: weight of the pull to the start')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    """Run ``scorehmr eval``."""
    from scorehmr_ros.config import config_to_dict, load_config
    from scorehmr_ros.evaluation.baselines import BaselineConfig
    from scorehmr_ros.evaluation.dataset import load_eval_data
    from scorehmr_ros.evaluation.report import markdown_table, write_report
    from scorehmr_ros.evaluation.runner import run_setting, run_sweep, setting_overrides
    from scorehmr_ros.metrics import subset_joint_names
    from scorehmr_ros.refiner import Refiner

    import torch

    user = _dotted(args.set, '--set')
    if args.checkpoint:
        user['model.checkpoint'] = args.checkpoint
    config = load_config(args.config, setting_overrides(args.setting, user))
    refiner = Refiner(config)
    LOG.info('weights: %s', refiner.describe_weights())
    meta = refiner.weights_info.get('meta', {}) or {}
    cond_source = args.cond_source or meta.get('cond_source') or 'auto'
    data = load_eval_data(args.data, refiner.denoiser.config.total_cond_dim, cond_source)
    if args.frame_step < 1:
        raise ValueError(f'--frame-step must be >= 1, got {args.frame_step}')
    if args.frame_step > 1:
        data = data.subset(torch.nonzero(data.frame_index % args.frame_step == 0).flatten())
        LOG.info('--frame-step %d: evaluating %d rows', args.frame_step, data.num_rows)
        if data.num_rows == 0:
            raise ValueError('--frame-step left no rows to evaluate')
    baseline = None if args.no_baseline else BaselineConfig(pose_reg=args.baseline_reg)
    progress = not args.no_progress
    result = run_setting(data, refiner, args.setting, args.batch_size, baseline,
                         progress=progress, subset=args.subset)
    sweeps = []
    for item in args.sweep:
        key, sep, values = item.partition('=')
        if not sep or not values:
            raise ValueError(f'--sweep expects SECTION.KEY=V1,V2,..., got {item!r}')
        sweeps.append(run_sweep(data, refiner, args.setting, key.strip(),
                                [yaml.safe_load(v) for v in values.split(',')],
                                args.batch_size, progress=progress))
    paths = write_report(args.out, result, config_to_dict(config), sweeps,
                         subset_joint_names(result.subset))
    sys.stdout.write(markdown_table(result))
    sys.stdout.write(json.dumps(paths,
                                indent=1) + '\n')
    return 0
