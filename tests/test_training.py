"""Training: data validation, a tiny run whose loss falls, exact resume, checkpoints."""

import numpy as np
import pytest
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.diffusion.checkpoint import load_denoiser
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.scene import make_scene, SceneSpec
from scorehmr_ros.training.dataset import DatasetError, load_training_data
from scorehmr_ros.training.trainer import (
    load_train_config, train, TrainConfig, Trainer, TrainingError)

TINY = dict(batch_size=32, hidden_dim=64, num_blocks=2, lr=1e-3, log_every=10,
            checkpoint_every=1000, threads=1)


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None)


@pytest.fixture(scope='module')
def scene(body):
    return make_scene(body, SceneSpec(num_people=96, cond_dim=4), seed=3)


def write_train(path, scene, **extra):
    arrays = dict(pose_rotmat=scene.gt_rotmats.numpy(), betas=scene.gt_betas.numpy(),
                  keypoints_2d=scene.obs.keypoints_2d.numpy(),
                  keypoint_layout=np.array('body25'), source=np.array('generated'),
                  fps=np.array(30.0))
    arrays.update(extra)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return str(path)


def test_tiny_run_loss_falls_and_writes_every_output(tmp_path, scene, body):
    data = load_training_data(write_train(tmp_path / 'train.npz', scene))
    assert data.cond_source == 'keypoints' and data.cond_dim == 75
    summary = train(data, TrainConfig(steps=100, **TINY), str(tmp_path / 'run'),
                    progress=False)
    assert summary['steps'] == 100
    assert summary['last_loss'] < 0.6 * summary['first_loss']
    for key in ('state', 'denoiser', 'released', 'log', 'loss_plot'):
        assert (tmp_path / 'run' / summary['paths'][key].split('/')[-1]).stat().st_size > 0

    # Both checkpoint formats load to the same network, the EMA weights.
    own, meta = load_denoiser(summary['paths']['denoiser'])
    released, released_meta = load_denoiser(summary['paths']['released'])
    assert meta['cond_source'] == 'keypoints' and meta['trained_steps'] == 100
    assert released_meta['checkpoint_format'] == 'released'
    x, t, c = torch.randn(4, 144), torch.tensor([0, 10, 500, 999]), torch.randn(4, 75)
    with torch.no_grad():
        assert torch.equal(own(x, t, c), released(x, t, c))

    # A refiner configured with the checkpoint runs with it.
    cfg = RefinerConfig().replace(model={'checkpoint': summary['paths']['denoiser']},
                                  sampler={'tau': 6, 'ddim_step': 2, 'outer_iters': 1})
    refiner = Refiner(cfg, body=body)
    obs = make_scene(body, SceneSpec(num_people=2, cond_dim=75), seed=9).obs
    result = refiner.refine(obs)
    assert 'denoiser.pt' in refiner.describe_weights()
    assert torch.isfinite(result.x0).all() and result.refined.all()


def test_resume_equals_an_uninterrupted_run(tmp_path, scene):
    data = load_training_data(write_train(tmp_path / 'train.npz', scene))
    cfg = dict(TINY, cond_dropout=0.3)
    train(data, TrainConfig(steps=16, **cfg), str(tmp_path / 'straight'), progress=False)
    train(data, TrainConfig(steps=7, **cfg), str(tmp_path / 'split'), progress=False)
    train(data, TrainConfig(steps=16, **cfg), str(tmp_path / 'split'), progress=False)
    a = torch.load(tmp_path / 'straight' / 'state.pt', weights_only=True)
    b = torch.load(tmp_path / 'split' / 'state.pt', weights_only=True)
    assert a['step'] == b['step'] == 16
    for part in ('model',):
        for key, value in a[part].items():
            torch.testing.assert_close(b[part][key], value, atol=1e-6, rtol=0)
    for key, value in a['ema']['model'].items():
        torch.testing.assert_close(b['ema']['model'][key], value, atol=1e-6, rtol=0)
    assert np.allclose(a['log']['loss'], b['log']['loss'], atol=1e-6)


def test_feature_size_mismatch_and_incompatible_resume_are_clear_errors(tmp_path, scene):
    data = load_training_data(write_train(tmp_path / 'train.npz', scene))
    with pytest.raises(TrainingError, match=r'75 conditioning features.*cond_dim 3072'):
        Trainer(data, TrainConfig(steps=1, cond_dim=3072, **TINY), str(tmp_path / 'a'))
    train(data, TrainConfig(steps=2, **TINY), str(tmp_path / 'b'), progress=False)
    wider = dict(TINY, hidden_dim=32)
    with pytest.raises(TrainingError, match='saved network'):
        train(data, TrainConfig(steps=3, **wider), str(tmp_path / 'b'), progress=False)


def test_bad_training_files_name_the_field(tmp_path, scene):
    betas = scene.gt_betas.numpy().copy()
    betas[5, 2] = np.nan
    path = write_train(tmp_path / 'nan.npz', scene, betas=betas)
    with pytest.raises(DatasetError, match=r"nan\.npz: field 'betas' contains NaN"):
        load_training_data(path)
    path = write_train(tmp_path / 'short.npz', scene, betas=betas[:10])
    with pytest.raises(DatasetError, match=r"field 'betas' has shape \[10, 10\].*N = 96"):
        load_training_data(path)
    path = write_train(tmp_path / 'nopose.npz', scene, pose_rotmat=None)
    with pytest.raises(DatasetError, match="missing field 'pose_rotmat'"):
        load_training_data(path)
    kp = scene.obs.keypoints_2d.numpy().copy()
    kp[0, 3, 0] = np.inf
    with pytest.raises(DatasetError, match="field 'keypoints_2d' contains NaN or inf"):
        load_training_data(write_train(tmp_path / 'kp.npz', scene, keypoints_2d=kp))
    kp[0, 3, 2] = 0.0     # a missing keypoint may carry NaN/inf coordinates
    assert load_training_data(write_train(tmp_path / 'kp0.npz', scene, keypoints_2d=kp)) \
        .cond.isfinite().all()
    aa = np.zeros((96, 72))
    data = load_training_data(write_train(tmp_path / 'aa.npz', scene, pose_rotmat=None,
                                          pose_aa=aa))
    assert torch.allclose(data.rotmats, torch.eye(3).expand(96, 24, 3, 3))
    with pytest.raises(DatasetError, match='not rotations'):
        load_training_data(write_train(tmp_path / 'rot.npz', scene,
                                       pose_rotmat=2 * scene.gt_rotmats.numpy()))


def test_non_finite_loss_stops_training_without_saving(tmp_path, scene):
    # A learning rate this large moves every weight by ~1e37 in the first Adam step: the
    # second forward pass overflows, as a diverging run does.
    data = load_training_data(write_train(tmp_path / 'train.npz', scene))
    with pytest.raises(TrainingError, match='non-finite loss .* at step 2'):
        train(data, TrainConfig(steps=5, **dict(TINY, lr=1e37)), str(tmp_path / 'run'),
              progress=False)
    assert not (tmp_path / 'run' / 'denoiser.pt').exists()


def test_shape_branch_writes_its_statistics(tmp_path, scene, body):
    data = load_training_data(write_train(tmp_path / 'train.npz', scene), cond_source='none')
    summary = train(data, TrainConfig(steps=3, use_shape=True, **TINY), str(tmp_path / 'run'),
                    progress=False)
    stats = np.load(summary['paths']['betas_stats'])
    assert np.allclose(stats['betas_min'], scene.gt_betas.min(0).values.numpy())
    denoiser, meta = load_denoiser(summary['paths']['denoiser'])
    assert denoiser.config.use_shape and denoiser.config.cond_dim == 1
    assert meta['cond_source'] == 'none'


def test_config_file_and_unknown_keys(tmp_path):
    path = tmp_path / 'train.yaml'
    path.write_text('train:\n  lr: 0.0003\n  steps: 7\n')
    cfg = load_train_config(str(path), {'batch_size': 16})
    assert (cfg.lr, cfg.steps, cfg.batch_size, cfg.ema_decay) == (3e-4, 7, 16, 0.995)
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['lr_rate'\]"):
        load_train_config(None, {'lr_rate': 1})
    with pytest.raises(ValueError, match='ema_decay'):
        TrainConfig(ema_decay=1.0)
