"""Round trips and reference values of the rotation conversions."""

import math

import pytest
import torch

from scorehmr_ros.body import rotations as R


def random_rotmats(n, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=gen, dtype=dtype)
    return R.quat_wxyz_to_matrix(q)


def is_rotation(m, atol=1e-6):
    eye = torch.eye(3, dtype=m.dtype).expand_as(m)
    return (torch.allclose(m.transpose(-1, -2) @ m, eye, atol=atol)
            and torch.allclose(torch.linalg.det(m), torch.ones(m.shape[:-2], dtype=m.dtype),
                               atol=atol))


def test_rot6d_is_first_two_columns():
    m = random_rotmats(5)
    six = R.matrix_to_rot6d(m)
    assert torch.equal(six[:, :3], m[:, :, 0])
    assert torch.equal(six[:, 3:], m[:, :, 1])


def test_rot6d_round_trip_and_gram_schmidt():
    m = random_rotmats(100)
    assert torch.allclose(R.rot6d_to_matrix(R.matrix_to_rot6d(m)), m, atol=1e-12)
    # Any 6-vector decodes to a rotation whose first column is the normalised a1.
    x = torch.randn(50, 6, dtype=torch.float64)
    out = R.rot6d_to_matrix(x)
    assert is_rotation(out)
    assert torch.allclose(out[:, :, 0], x[:, :3] / x[:, :3].norm(dim=-1, keepdim=True))


def test_rot6d_batched_leading_dims():
    m = random_rotmats(24).reshape(2, 12, 3, 3)
    assert R.rot6d_to_matrix(R.matrix_to_rot6d(m)).shape == (2, 12, 3, 3)


@pytest.mark.parametrize('angle', [0.0, 1e-9, 1e-4, 0.5, 2.0, math.pi - 1e-6, math.pi])
def test_axis_angle_round_trip(angle):
    axis = torch.tensor([[0.3, -0.5, 0.81]], dtype=torch.float64)
    aa = axis / axis.norm() * angle
    m = R.axis_angle_to_matrix(aa)
    assert is_rotation(m)
    back = R.matrix_to_axis_angle(m)
    # At pi, aa and -aa are the same rotation.
    assert torch.allclose(R.axis_angle_to_matrix(back), m, atol=1e-9)
    if angle < math.pi - 1e-3:
        assert torch.allclose(back, aa, atol=1e-9)


def test_axis_angle_known_value():
    m = R.axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
                            dtype=torch.float64)
    assert torch.allclose(m, expected, atol=1e-12)


def test_quaternion_round_trips():
    m = random_rotmats(200, seed=3)
    q = R.matrix_to_quat_wxyz(m)
    assert (q[:, 0] >= 0).all()
    assert torch.allclose(q.norm(dim=-1), torch.ones(200, dtype=torch.float64))
    assert torch.allclose(R.quat_wxyz_to_matrix(q), m, atol=1e-10)
    aa = R.matrix_to_axis_angle(m)
    assert torch.allclose(R.axis_angle_to_quat_wxyz(aa), q, atol=1e-9)
    assert torch.allclose(R.quat_wxyz_to_axis_angle(q), aa, atol=1e-9)
    assert torch.equal(R.quat_xyzw_to_wxyz(R.quat_wxyz_to_xyzw(q)), q)


def test_half_turns_are_exact():
    # 180 degree rotations are where naive matrix->quaternion code fails.
    for axis in torch.eye(3, dtype=torch.float64):
        m = R.axis_angle_to_matrix(axis * math.pi)
        assert torch.allclose(R.quat_wxyz_to_matrix(R.matrix_to_quat_wxyz(m)), m, atol=1e-12)


def test_axis_angle_gradient_finite_at_zero():
    aa = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    R.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    assert torch.autograd.gradcheck(R.axis_angle_to_matrix,
                                    (torch.randn(3, 3, dtype=torch.float64,
                                                 requires_grad=True),))
