"""Camera, losses, the camera Adam and early stopping, each against its definition."""

import pytest
import torch

from scorehmr_ros.guidance.camera import perspective_project
from scorehmr_ros.guidance.camera_optimizer import CameraTranslationAdam
from scorehmr_ros.guidance.early_stopping import EarlyStopper
from scorehmr_ros.guidance.losses import (
    geman_mcclure, keypoint_reprojection_loss, multiview_consistency_loss,
    temporal_smoothness_loss)


def test_projection_by_hand():
    pts = torch.tensor([[[0.1, -0.2, 1.0], [0.0, 0.0, 0.0]]])
    t = torch.tensor([[0.0, 0.0, 4.0]])
    f = torch.tensor([[500.0, 600.0]])
    c = torch.tensor([[320.0, 240.0]])
    out = perspective_project(pts, t, f, c)
    assert torch.allclose(out, torch.tensor([[[320 + 500 * 0.1 / 5, 240 - 600 * 0.2 / 5],
                                              [320.0, 240.0]]]))
    rot = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))[None]
    assert torch.allclose(perspective_project(pts, t, f, c, rot)[0, 0, 0], torch.tensor(310.0))


def test_gmof_values():
    r = torch.tensor([0.0, 100.0, 1e6])
    out = geman_mcclure(r, 100.0)
    assert out[0] == 0 and out[1] == pytest.approx(5000.0)
    assert out[2] == pytest.approx(1e4, rel=1e-6)  # saturates at sigma^2


def test_keypoint_loss_by_hand():
    joints = torch.tensor([[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]])
    t = torch.tensor([[0.0, 0.0, 10.0]])
    f = torch.full((1, 2), 1000.0)
    c = torch.tensor([[250.0, 250.0]])
    size = torch.tensor([[500.0, 400.0]])   # (H, W): max 500 -> weight (1000/500)^2 = 4
    target = torch.tensor([[[260.0, 250.0], [0.0, 0.0]]])
    conf = torch.tensor([[0.5, 0.0]])
    loss = keypoint_reprojection_loss(joints, t, target, conf, f, c, size, sigma_px=100.0)
    expected = 4 * 0.25 * (100 ** 2 * 10 ** 2) / (100 ** 2 + 10 ** 2)
    assert loss.item() == pytest.approx(expected)


def test_multiview_loss_grouped_and_pulls_together():
    torch.manual_seed(0)
    pose = torch.randn(5, 23, 6, dtype=torch.float64, requires_grad=True)
    group = torch.tensor([0, 0, 1, 1, 1])
    loss = multiview_consistency_loss(pose, group, 2)
    # Paper's form per person: 300^2 sum_v ||theta_v - mean||^2.
    for g, rows in ((0, [0, 1]), (1, [2, 3, 4])):
        sub = pose[rows]
        ref = 300.0 ** 2 * ((sub - sub.mean(0, keepdim=True)) ** 2).sum()
        assert loss[rows].sum().item() == pytest.approx(ref.item())
    # A small gradient step lowers the spread of every person.
    grad, = torch.autograd.grad(loss.sum(), pose)
    moved = pose - 1e-7 * grad
    assert multiview_consistency_loss(moved, group, 2).sum() < loss.sum()
    assert torch.autograd.gradcheck(lambda p: multiview_consistency_loss(p, group, 2),
                                    (pose[:, :2].detach().clone().requires_grad_(),))


def test_temporal_loss_by_hand():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0], [5.0, 5.0]])
    prev = torch.tensor([-1, 0, 1, -1])  # two sequences: rows 0-2 and row 3
    out = temporal_smoothness_loss(x, prev)
    assert out.tolist() == [0.0, 1.0, 4.0, 0.0]


def test_camera_adam_matches_torch_adam():
    torch.manual_seed(0)
    start = torch.randn(4, 3)
    ours = CameraTranslationAdam(start, lr=0.01)
    param = start.clone().requires_grad_(True)
    ref = torch.optim.Adam([param], lr=0.01)
    for _ in range(30):
        grad = torch.randn(4, 3) * torch.tensor([[1.0], [0.0], [1e-3], [100.0]])
        ours.step(grad)
        param.grad = grad.clone()
        ref.step()
    assert torch.equal(ours.translation, param.detach())


def test_relative_early_stopping_rule():
    stop = EarlyStopper(3, 'relative', tol=1e-5)
    assert not stop.converged(torch.tensor([10.0, 5.0, 0.5])).any()  # first call: nothing
    mask = stop.converged(torch.tensor([10.0, 4.0, 0.5 + 5e-6]))
    # row 0 unchanged, row 1 moved, row 2 moved by 5e-6 relative to max(.., 1) = 1
    assert mask.tolist() == [True, False, True]
    x0 = torch.arange(6.0).reshape(3, 2)
    stop.record(mask, x0, torch.zeros(3, 3), step=1)
    stop.record(torch.tensor([True, True, True]), x0 + 100, torch.ones(3, 3), step=2)
    out, trans = stop.finalize(x0 + 1000, torch.full((3, 3), 7.0))
    assert out[0].tolist() == [0.0, 1.0] and out[1].tolist() == [102.0, 103.0]
    assert stop.stop_step.tolist() == [1, 2, 1]
    assert trans[0].tolist() == [0.0] * 3 and trans[1].tolist() == [1.0] * 3


def test_threshold_rule_and_errors():
    stop = EarlyStopper(2, 'threshold', tol=1.0)
    assert stop.converged(torch.tensor([0.5, 2.0])).tolist() == [True, False]
    with pytest.raises(ValueError, match='relative'):
        EarlyStopper(2, 'bogus')
