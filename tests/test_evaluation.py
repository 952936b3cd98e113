"""Evaluation: data files, batching per setting, the baseline, and train -> eval via the CLI."""

import json
import math

import numpy as np
import pytest
import torch

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.body.rotations import matrix_to_rot6d
from scorehmr_ros.cli import main
from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.diffusion.denoiser import Denoiser, DenoiserConfig
from scorehmr_ros.evaluation.baselines import (
    BaselineConfig, fit_without_prior, guided_step_budget)
from scorehmr_ros.evaluation.dataset import (
    DatasetError, load_eval_data, save_eval_npz)
from scorehmr_ros.evaluation.runner import batches, run_setting
from scorehmr_ros.evaluation.synthetic import make_eval_data
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.scene import make_scene, SceneSpec

TINY_SAMPLER = {'tau': 6, 'ddim_step': 2, 'outer_iters': 2}


@pytest.fixture(scope='module')
def body():
    return BodyModel.from_config(None)


@pytest.fixture(scope='module')
def data(body):
    return make_eval_data(body, num_people=2, num_views=2, num_frames=3, seed=1)


def test_file_round_trip_and_aliases(tmp_path, data):
    save_eval_npz(tmp_path / 'eval.npz', data)
    back = load_eval_data(str(tmp_path / 'eval.npz'), cond_dim=75)
    assert back.num_rows == 12 and back.joint_set == 'smpl24' and back.fps == 30.0
    assert torch.equal(back.gt_joints, data.gt_joints)
    assert back.obs.cond.shape == (12, 75)
    assert torch.equal(load_eval_data(str(tmp_path / 'eval.npz'), cond_source='keypoints')
                       .obs.cond, back.obs.cond)
    with np.load(tmp_path / 'eval.npz') as f:
        arrays = dict(f)
    renamed = {'pred_rotmats': 'init_rotmats', 'pred_betas': 'init_betas',
               'pred_cam_t': 'init_cam_t', 'focal_length': 'focal_px',
               'camera_center': 'center_px', 'img_size': 'image_size', 'S': 'gt_joints_3d'}
    aliased = {k: arrays[k] for k in arrays if k not in renamed.values()}
    aliased.update({alias: arrays[name] for alias, name in renamed.items()})
    aliased['S'] = np.concatenate((aliased['S'], np.ones((12, 24, 1))), -1)   # + confidence
    np.savez(tmp_path / 'aliased.npz', **aliased)
    again = load_eval_data(str(tmp_path / 'aliased.npz'))
    assert torch.equal(again.gt_joints, back.gt_joints)
    assert torch.equal(again.obs.init_rotmats, back.obs.init_rotmats)


def test_bad_eval_files_name_the_field(tmp_path, data):
    save_eval_npz(tmp_path / 'eval.npz', data)
    with np.load(tmp_path / 'eval.npz') as f:
        arrays = dict(f)

    def write(**change):
        out = dict(arrays)
        out.update(change)
        out = {k: v for k, v in out.items() if v is not None}
        np.savez(tmp_path / 'bad.npz', **out)
        return str(tmp_path / 'bad.npz')

    cam = arrays['init_cam_t'].copy()
    cam[3, 2] = np.nan
    with pytest.raises(DatasetError, match=r"bad\.npz: field 'init_cam_t' contains NaN"):
        load_eval_data(write(init_cam_t=cam))
    with pytest.raises(DatasetError, match="field 'joint_set' must be one of"):
        load_eval_data(write(joint_set=np.array('h36m17')))
    with pytest.raises(DatasetError, match=r"'gt_joints_3d' has shape \[12, 24, 3\], "
                                           r'expected \[N, 14, 3\]'):
        load_eval_data(write(joint_set=np.array('lsp14')))
    with pytest.raises(DatasetError, match="'pred_cam_t' and 'init_cam_t' mean the same"):
        load_eval_data(write(pred_cam_t=arrays['init_cam_t']))
    with pytest.raises(DatasetError, match='features have size 75, the denoiser expects 3072'):
        load_eval_data(write(), cond_dim=3072)
    with pytest.raises(DatasetError, match="missing field 'init_betas'"):
        load_eval_data(write(init_betas=None))


def test_batches_keep_view_groups_and_link_frames_in_order(data):
    perm = torch.randperm(data.num_rows, generator=torch.Generator().manual_seed(0))
    shuffled = data.subset(perm)
    seen = []
    for rows, group, prev in batches(shuffled, 'multiview', batch_size=5):
        assert prev is None
        seen.extend(rows.tolist())
        keys = torch.stack((shuffled.sequence_id[rows], shuffled.frame_index[rows]), 1)
        for g in group.unique():
            assert len(keys[group == g].unique(dim=0)) == 1       # one person-instant
            assert int((group == g).sum()) == 2                    # with both views
    assert sorted(seen) == list(range(12))
    for rows, group, prev in batches(shuffled, 'video', batch_size=3):
        assert group is None
        for i, p in enumerate(prev.tolist()):
            if p >= 0:
                a, b = rows[p], rows[i]
                assert shuffled.sequence_id[a] == shuffled.sequence_id[b]
                assert shuffled.view_id[a] == shuffled.view_id[b]
                assert shuffled.frame_index[b] == shuffled.frame_index[a] + 1
            else:
                assert i == 0 or shuffled.frame_index[rows[i]] == 0


def test_prior_free_fitting_lowers_the_reprojection_error(body):
    obs = make_scene(body, SceneSpec(num_people=3, cond_dim=4), seed=2).obs
    cfg = RefinerConfig().replace(sampler=TINY_SAMPLER)
    assert guided_step_budget(cfg) == 6
    rot, cam, loss = fit_without_prior(obs, body, cfg, BaselineConfig(steps=15))
    refiner = Refiner(cfg, denoiser=Denoiser(DenoiserConfig(cond_dim=4, hidden_dim=8)),
                      body=body)
    before = refiner.reprojection_error_px(obs.init_rotmats, obs.init_betas, obs.init_cam_t, obs)
    after = refiner.reprojection_error_px(rot, obs.init_betas, cam, obs)
    assert torch.isfinite(loss).all()
    assert (after < 0.7 * before).all()


def test_multiview_guidance_pulls_the_views_together(body, data):
    torch.manual_seed(0)
    denoiser = Denoiser(DenoiserConfig(cond_dim=75, hidden_dim=32, num_blocks=1))
    cfg = RefinerConfig().replace(sampler={'tau': 20, 'ddim_step': 10, 'outer_iters': 2},
                                  guidance={'multiview': True})
    result = run_setting(data, Refiner(cfg, denoiser=denoiser, body=body), 'multiview',
                         batch_size=8, baseline=None, progress=False)

    def spread(joints_method):
        rot = joints_method
        six = matrix_to_rot6d(rot[:, 1:]).reshape(-1, 2, 23 * 6)
        return float((six[:, 0] - six[:, 1]).norm(dim=-1).mean())

    # Rows are ordered person, frame, view: consecutive pairs are the two views.
    refiner = Refiner(cfg, denoiser=denoiser, body=body)
    out = refiner.refine(_with_groups(data))
    assert spread(out.rotmats[:, 0]) < 0.5 * spread(data.obs.init_rotmats)
    summary = result.summary()
    assert summary['scorehmr']['reproj_px'] < summary['start']['reproj_px']


def _with_groups(data):
    import dataclasses

    groups = data.sequence_id * 100 + data.frame_index
    return dataclasses.replace(data.obs, view_group=groups)


def test_train_then_eval_through_the_cli(tmp_path, body, capsys):
    scene = make_scene(body, SceneSpec(num_people=64, cond_dim=4), seed=4)
    np.savez(tmp_path / 'train.npz', pose_rotmat=scene.gt_rotmats.numpy(),
             keypoints_2d=scene.obs.keypoints_2d.numpy(), keypoint_layout=np.array('body25'))
    save_eval_npz(tmp_path / 'eval.npz', make_eval_data(body, num_people=2, num_views=1,
                                                        num_frames=3, seed=5))
    assert main(['train', '--data', str(tmp_path / 'train.npz'), '--out', str(tmp_path / 'run'),
                 '--steps', '30', '--batch-size', '16', '--hidden-dim', '32', '--num-blocks',
                 '1', '--lr', '1e-3', '--threads', '1', '--no-progress']) == 0
    checkpoint = str(tmp_path / 'run' / 'denoiser.pt')
    common = ['--data', str(tmp_path / 'eval.npz'), '--checkpoint', checkpoint, '--out',
              str(tmp_path / 'eval'), '--set', 'sampler.tau=6', '--set', 'sampler.ddim_step=2',
              '--batch-size', '4', '--no-progress']
    assert main(['eval', '--setting', 'single', '--sweep', 'sampler.outer_iters=1,2']
                + common) == 0
    assert main(['eval', '--setting', 'video', '--set', 'sampler.outer_iters=2'] + common) == 0
    out = capsys.readouterr().out
    assert '| ScoreHMR (prior + guidance) |' in out
    for setting in ('single', 'video'):
        with open(tmp_path / 'eval' / f'results_{setting}.json', encoding='utf-8') as handle:
            res = json.load(handle)
        summary = res['summary']
        for method in ('start', 'scorehmr', 'no_prior'):
            for metric, value in summary[method].items():
                assert value is not None and math.isfinite(value), (setting, method, metric)
        # Keypoint guidance fits the keypoints better than the start.
        assert summary['scorehmr']['reproj_px'] < summary['start']['reproj_px']
        assert 'checkpoint' in res['info']['weights']
        for name in ('hist_mpjpe', 'hist_pa_mpjpe', 'per_joint'):
            assert (tmp_path / 'eval' / f'{name}_{setting}.png').stat().st_size > 1000
    assert 'accel' in summary['start'] and res['info']['accel_unit'] == 'mm/s^2'
    assert (tmp_path / 'eval' / 'sweep_sampler_outer_iters_single.png').exists()
    table = (tmp_path / 'eval' / 'results_single.md').read_text()
    assert '| sampler.outer_iters |' in table and '| 2 |' in table


def test_prior_free_fitting_on_joints_only_kinematics_matches_the_mesh(body):
    from scorehmr_ros.body.kinematics import JointsOnlyBody

    obs = make_scene(body, SceneSpec(num_people=2, cond_dim=4), seed=6).obs
    cfg = RefinerConfig().replace(sampler=TINY_SAMPLER)
    mesh = fit_without_prior(obs, body, cfg, BaselineConfig(steps=4))
    fast = fit_without_prior(obs, body, cfg, BaselineConfig(steps=4), JointsOnlyBody(body))
    for a, b in zip(mesh, fast):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
