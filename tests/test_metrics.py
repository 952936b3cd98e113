"""Metrics on joint subsets, checked against cases computed by hand."""

import math

import pytest
import torch

from scorehmr_ros.metrics import (
    accel_error_mm, mpjpe_mm, pa_mpjpe_mm, pelvis, SCOREHMR44_TO_LSP14,
    sequence_accel_error_mm, SMPL24_TO_LSP14, subset_errors_mm, subset_indices)


def random_joints(b, j, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, j, 3, generator=gen, dtype=torch.float64) * 0.3


@pytest.mark.parametrize('joint_set,j', [('smpl24', 24), ('scorehmr44', 44), ('lsp14', 14),
                                         ('coco17', 17)])
def test_pure_translation_gives_zero_mpjpe_and_pa_mpjpe(joint_set, j):
    gt = random_joints(3, j)
    pred = gt + torch.tensor([0.4, -1.2, 3.0], dtype=torch.float64)
    errs = subset_errors_mm(pred, gt, joint_set)
    assert errs['mpjpe'].abs().max() < 1e-9
    assert errs['pa_mpjpe'].abs().max() < 1e-6


def test_rotation_about_the_pelvis_by_hand():
    # Pelvis at the origin; a half turn about z maps (x, y, z) to (-x, -y, z), so each
    # joint is off by 2 * sqrt(x^2 + y^2); Procrustes undoes the rotation entirely.
    gt = random_joints(2, 24, seed=1)
    gt[:, 0] = 0.0
    turn = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    pred = gt @ turn.T + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    errs = subset_errors_mm(pred, gt, 'smpl24')
    by_hand = 1000.0 * (2 * gt[..., :2].norm(dim=-1)).mean(dim=-1)
    assert torch.allclose(errs['mpjpe'], by_hand, atol=1e-9)
    assert errs['pa_mpjpe'].abs().max() < 1e-6


def test_scale_about_the_pelvis_by_hand():
    gt = random_joints(2, 24, seed=2)
    rel = gt - gt[:, :1]
    pred = gt[:, :1] + 2.0 * rel                           # twice as large, same pelvis
    errs = subset_errors_mm(pred, gt, 'smpl24')
    assert torch.allclose(errs['mpjpe'], 1000.0 * rel.norm(dim=-1).mean(dim=-1), atol=1e-9)
    assert errs['pa_mpjpe'].abs().max() < 1e-6
    assert errs['per_joint'].shape == (2, 24)


def test_lsp14_of_the_44_joint_set_aligns_with_joint_39():
    # Moving only the pelvis (39) by d shifts every aligned LSP joint by -d: MPJPE = |d|.
    gt = random_joints(2, 44, seed=3)
    pred = gt.clone()
    pred[:, 39] += torch.tensor([0.03, 0.04, 0.0], dtype=torch.float64)
    errs = subset_errors_mm(pred, gt, 'scorehmr44')          # default subset: lsp14
    assert torch.allclose(errs['mpjpe'], torch.full((2,), 50.0, dtype=torch.float64))
    assert errs['per_joint'].shape == (2, 14)
    assert subset_indices('scorehmr44', 'lsp14') == SCOREHMR44_TO_LSP14
    # The other 44-joint entries (not LSP, not the pelvis) do not count.
    pred2 = gt.clone()
    pred2[:, 0] += 1.0
    assert subset_errors_mm(pred2, gt, 'scorehmr44')['mpjpe'].abs().max() < 1e-9


def test_lsp14_from_smpl_joints_uses_the_documented_map():
    gt = random_joints(1, 24, seed=4)
    pred = gt.clone()
    pred[:, 15] += torch.tensor([0.0, 0.0, 0.14], dtype=torch.float64)   # head -> head top
    errs = subset_errors_mm(pred, gt, 'smpl24', 'lsp14')
    assert math.isclose(float(errs['mpjpe'][0]), 140.0 / 14, rel_tol=1e-9)
    assert SMPL24_TO_LSP14[13] == 15


def test_coco17_pelvis_is_the_hip_midpoint():
    joints = torch.zeros(1, 17, 3, dtype=torch.float64)
    joints[0, 11] = torch.tensor([1.0, 0.0, 0.0])
    joints[0, 12] = torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(pelvis(joints, 'coco17'), torch.tensor([[0.5, 0.5, 0.0]],
                                                                 dtype=torch.float64))


def test_constant_acceleration_track_by_hand():
    # Pelvis still, the other 23 joints accelerate at 1 mm/frame^2; the truth is still.
    t = torch.arange(6, dtype=torch.float64)
    gt = random_joints(1, 24, seed=5).repeat(6, 1, 1)
    pred = gt.clone()
    pred[:, 1:, 0] += 0.5 * 0.001 * t[:, None] ** 2
    per_frame = sequence_accel_error_mm(pred, gt, 'smpl24')
    assert per_frame.shape == (4,)
    assert torch.allclose(per_frame, torch.full((4,), 23 / 24, dtype=torch.float64))
    per_s2 = sequence_accel_error_mm(pred, gt, 'smpl24', fps=30.0)
    assert torch.allclose(per_s2, torch.full((4,), 23 / 24 * 900.0, dtype=torch.float64))
    assert sequence_accel_error_mm(pred[:2], gt[:2], 'smpl24').numel() == 0


def test_existing_functions_keep_their_behaviour():
    gt = random_joints(4, 24, seed=6)
    pred = gt + 0.01
    assert mpjpe_mm(pred, gt).abs().max() < 1e-9
    assert float(mpjpe_mm(pred, gt, root=None)[0]) == pytest.approx(1000 * 0.01 * math.sqrt(3))
    assert pa_mpjpe_mm(pred, gt).abs().max() < 1e-6
    assert accel_error_mm(pred, gt).abs().max() < 1e-9


def test_unavailable_subset_and_bad_shapes_raise():
    with pytest.raises(ValueError, match='not available from joint set'):
        subset_indices('coco17', 'lsp14')
    with pytest.raises(ValueError, match='expected \\[B, 24, 3\\]'):
        subset_errors_mm(torch.zeros(1, 17, 3), torch.zeros(1, 17, 3), 'smpl24')
    with pytest.raises(ValueError, match='differ in shape'):
        subset_errors_mm(torch.zeros(1, 24, 3), torch.zeros(2, 24, 3), 'smpl24')
