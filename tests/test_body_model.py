"""Tests of the smplx-backed body model in scorehmr_ros.body.model."""

import logging
import math

import numpy as np
import pytest
import smplx
from smplx.utils import Struct
import torch

from scorehmr_ros.body.layouts import (
    LAYOUTS, SMPL_JOINT_NAMES, SMPLX45_JOINT_NAMES, SMPLX45_TO_BODY25)
from scorehmr_ros.body.model import BodyModel, BodyOutput
from scorehmr_ros.body.smpl_file import (
    save_smpl_npz, SmplFileError, SmplFileNotFoundError, with_extra_regressor)
from scorehmr_ros.body.synthetic import make_synthetic_smpl, REST_JOINTS

J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
J45 = {name: i for i, name in enumerate(SMPLX45_JOINT_NAMES)}


@pytest.fixture(scope='module')
def arrays():
    return make_synthetic_smpl()


@pytest.fixture(scope='module')
def model(arrays):
    return BodyModel(arrays)


@pytest.fixture(scope='module')
def model64(arrays):
    return BodyModel(arrays, dtype=torch.float64)


def assert_near(actual, expected, atol=1e-6):
    # A plain max-difference check: torch.testing.assert_close costs ~1.5 s to import.
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    diff = float((actual - expected).abs().max())
    assert diff <= atol, f'max abs difference {diff} > {atol}'


def identity(batch, dtype=torch.float32):
    return torch.eye(3, dtype=dtype).expand(batch, 24, 3, 3).clone()


def random_rotations(batch, generator, dtype=torch.float32, scale=0.6):
    """[B, 24, 3, 3] rotations from random axis-angles (Rodrigues' formula)."""
    aa = torch.randn(batch, 24, 3, generator=generator, dtype=torch.float64) * scale
    angle = aa.norm(dim=-1, keepdim=True).unsqueeze(-1)
    k = torch.zeros(batch, 24, 3, 3, dtype=torch.float64)
    axis = aa / aa.norm(dim=-1, keepdim=True)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    k = k - k.transpose(-1, -2)
    rot = torch.eye(3, dtype=torch.float64) + torch.sin(angle) * k + \
        (1 - torch.cos(angle)) * k @ k
    return rot.to(dtype)


def rot_y(angle_rad, dtype=torch.float32):
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=dtype)


def direct_smplx(arrays, dtype):
    struct = Struct(v_template=arrays.v_template, shapedirs=arrays.shapedirs,
                    posedirs=arrays.posedirs, J_regressor=arrays.J_regressor,
                    weights=arrays.weights, kintree_table=arrays.kintree_table, f=arrays.f)
    return smplx.SMPLLayer(model_path='', data_struct=struct, num_betas=10, dtype=dtype)


def test_identity_pose_joints_are_regressed_rest_joints(model, arrays):
    out = model(identity(2), torch.zeros(2, 10))
    assert isinstance(out, BodyOutput)
    assert out.vertices.shape == (2, 6890, 3) and out.joints45.shape == (2, 45, 3)
    expected = torch.tensor(arrays.J_regressor @ arrays.v_template, dtype=torch.float32)
    assert_near(out.joints45[0, :24], expected, atol=1e-5)
    assert_near(out.vertices[1], torch.tensor(arrays.v_template, dtype=torch.float32))
    np.testing.assert_allclose(out.joints45[0, :24].numpy(), REST_JOINTS, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_bit_identical_to_direct_smplx(arrays, model, model64, dtype):
    gen = torch.Generator().manual_seed(0)
    rotmats = random_rotations(3, gen, dtype)
    betas = torch.randn(3, 10, generator=gen, dtype=dtype)
    ours = (model if dtype == torch.float32 else model64)(rotmats, betas)
    ref = direct_smplx(arrays, dtype)(betas=betas, global_orient=rotmats[:, :1],
                                      body_pose=rotmats[:, 1:], pose2rot=False)
    assert torch.equal(ours.vertices, ref.vertices)
    assert torch.equal(ours.joints45, ref.joints)
    assert ours.vertices.dtype == dtype


def test_smplx_never_unpickles_nor_prints(arrays, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError('smplx tried to read a model file')

    monkeypatch.setattr(smplx.body_models.pickle, 'load', refuse)
    monkeypatch.setattr(smplx.body_models, 'open', refuse, raising=False)
    BodyModel(arrays)
    # smplx prints a warning for 10-beta models; it must not reach stdout.
    assert capsys.readouterr().out == ''


def test_bending_left_elbow_moves_left_wrist_only(model):
    rest = model(identity(1), torch.zeros(1, 10))
    rotmats = identity(1)
    rotmats[0, J['left_elbow']] = rot_y(math.pi / 2)
    bent = model(rotmats, torch.zeros(1, 10))
    moved = (bent.joints45 - rest.joints45).norm(dim=-1)[0]
    d = REST_JOINTS[J['left_wrist']] - REST_JOINTS[J['left_elbow']]
    forearm = float(np.linalg.norm(d))
    rotated = rot_y(math.pi / 2, torch.float64).numpy() @ d
    assert float(moved[J['left_wrist']]) == pytest.approx(np.linalg.norm(rotated - d), rel=1e-4)
    assert float(moved[J['left_wrist']]) > 0.3
    assert moved[J45['left_index']] > 0.2
    for name in ('right_wrist', 'right_elbow', 'left_elbow', 'left_shoulder', 'head'):
        assert moved[J45[name]] == 0.0, name
    for name in ('right_index', 'right_thumb', 'nose', 'left_heel'):
        assert moved[J45[name]] == 0.0, name
    # The 90 degree bend keeps the forearm length (rigid segment).
    new_forearm = (bent.joints45[0, J['left_wrist']] - bent.joints45[0, J['left_elbow']]).norm()
    assert float(new_forearm) == pytest.approx(forearm, rel=1e-5)
    # Vertices move continuously: no vertex of the posed mesh jumps far from the
    # rigid motion of its neighbours (edges stay short).
    faces = model.faces
    edge = (bent.vertices[0, faces[:, 0]] - bent.vertices[0, faces[:, 1]]).norm(dim=-1)
    assert float(edge.max()) < 0.1


def test_betas_change_the_mesh_smoothly(model, arrays):
    rotmats = identity(21)
    betas = torch.cat([torch.zeros(1, 10), 0.5 * torch.eye(10), torch.eye(10)])
    verts = model(rotmats, betas).vertices
    half, full = verts[1:11] - verts[:1], verts[11:] - verts[:1]
    assert_near(full, 2 * half, atol=1e-5)   # linear in betas
    expected = torch.tensor(arrays.shapedirs, dtype=torch.float32).permute(2, 0, 1)
    assert_near(full, expected, atol=1e-5)
    assert (full.abs().amax(dim=(1, 2)) > 1e-3).all()
    # Smooth: neighbouring vertices move alike.
    faces = model.faces
    jump = (full[:, faces[:, 0]] - full[:, faces[:, 1]]).norm(dim=-1)
    assert float(jump.max()) < 0.02


def test_rest_joints(model):
    betas = torch.zeros(3, 10)
    betas[1, 0] = 2.0
    rest = model.rest_joints(betas)
    assert rest.shape == (3, 24, 3)
    np.testing.assert_allclose(rest[0].numpy(), REST_JOINTS, atol=1e-5)
    posed = model(identity(3), betas).joints45[:, :24]
    assert_near(rest, posed, atol=1e-5)
    assert not torch.allclose(rest[1], rest[0])


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_keypoint_layout_shapes(model, layout):
    out = model(identity(2), torch.zeros(2, 10))
    points = model.keypoints(out, layout)
    assert points.shape == (2, LAYOUTS[layout].num_joints, 3)


def test_body25_and_scorehmr44_placeholders(model):
    gen = torch.Generator().manual_seed(1)
    out = model(random_rotations(2, gen), torch.zeros(2, 10))
    body25 = model.keypoints(out, 'body25')
    assert_near(body25, out.joints45[:, SMPLX45_TO_BODY25])
    assert not model.has_extra_regressor
    k44 = model.keypoints(out, 'scorehmr44')
    assert_near(k44[:, :25], body25)
    assert_near(k44[:, 25:], out.joints45[:, :1].expand(-1, 19, -1))
    coco = model.keypoints(out, 'coco17')
    assert_near(coco[:, 0], out.joints45[:, J45['nose']])


def test_scorehmr44_with_extra_regressor(arrays):
    rng = np.random.default_rng(0)
    extra = rng.random((19, 6890))
    extra /= extra.sum(axis=1, keepdims=True)
    model = BodyModel(with_extra_regressor(arrays, extra), dtype=torch.float64)
    assert model.has_extra_regressor
    gen = torch.Generator().manual_seed(2)
    out = model(random_rotations(2, gen, torch.float64), torch.zeros(2, 10, dtype=torch.float64))
    k44 = model.keypoints(out, 'scorehmr44')
    expected = torch.einsum('jv,bvc->bjc', torch.tensor(extra), out.vertices)
    assert_near(k44[:, 25:], expected)


def test_unknown_layout(model):
    out = model(identity(1), torch.zeros(1, 10))
    with pytest.raises(ValueError, match='body_25'):
        model.keypoints(out, 'body_25')


def test_to_float64_and_back(arrays):
    model = BodyModel(arrays).to(torch.float64)
    out = model(identity(1, torch.float64), torch.zeros(1, 10, dtype=torch.float64))
    assert out.vertices.dtype == torch.float64
    assert model.keypoints(out, 'scorehmr44').dtype == torch.float64
    model = model.to(torch.float32)
    assert model(identity(1), torch.zeros(1, 10)).joints45.dtype == torch.float32


def test_gradients_flow_to_rotations(model):
    gen = torch.Generator().manual_seed(3)
    rotmats = random_rotations(2, gen).requires_grad_()
    betas = torch.zeros(2, 10, requires_grad=True)
    out = model(rotmats, betas)
    model.keypoints(out, 'body25').square().sum().backward()
    grad = rotmats.grad
    assert torch.isfinite(grad).all()
    for name in ('pelvis', 'left_shoulder', 'left_elbow', 'right_knee', 'neck'):
        assert grad[:, J[name]].abs().sum() > 0, name
    assert betas.grad.abs().sum() > 0


def test_gradcheck_float64(model64):
    model = model64
    gen = torch.Generator().manual_seed(4)
    base = random_rotations(1, gen, torch.float64, scale=0.3)
    betas = torch.zeros(1, 10, dtype=torch.float64)

    def keypoints_of_elbow(elbow_rot):
        rotmats = torch.cat([base[:, :18], elbow_rot[:, None], base[:, 19:]], dim=1)
        return model.keypoints(model(rotmats, betas), 'body25')[:, [3, 4, 6, 7]]

    elbow = base[:, 18].clone().requires_grad_()
    assert torch.autograd.gradcheck(keypoints_of_elbow, (elbow,), eps=1e-6, atol=1e-6,
                                    fast_mode=True)


def test_input_shape_errors(model):
    with pytest.raises(ValueError, match=r'rotmats must have shape \[B, 24, 3, 3\]'):
        model(torch.eye(3).expand(1, 23, 3, 3), torch.zeros(1, 10))
    with pytest.raises(ValueError, match=r'betas must have shape \[B=2, 10\]'):
        model(identity(2), torch.zeros(2, 11))


def test_attributes(model, arrays):
    assert model.is_synthetic
    assert 'synthetic' in model.name
    assert model.num_vertices == 6890
    assert model.parents == tuple(arrays.kintree_table[0].tolist())
    assert model.faces.shape == arrays.f.shape
    assert model.smpl.v_template.shape == (6890, 3)


def test_from_config_none_is_synthetic_and_logs(caplog):
    with caplog.at_level(logging.INFO, logger='scorehmr_ros.body.model'):
        model = BodyModel.from_config(None)
    assert model.is_synthetic
    messages = [r.getMessage() for r in caplog.records if r.name == 'scorehmr_ros.body.model']
    assert len(messages) == 1
    assert 'synthetic SMPL-format body' in messages[0] and 'not SMPL' in messages[0]


def test_from_config_with_files(arrays, tmp_path):
    path = save_smpl_npz(arrays, tmp_path / 'SMPL_NEUTRAL.npz')
    extra = np.full((19, 6890), 1.0 / 6890)
    np.save(tmp_path / 'J_regressor_extra.npy', extra)
    model = BodyModel.from_config(str(tmp_path), str(tmp_path / 'J_regressor_extra.npy'))
    assert model.has_extra_regressor
    out = model(identity(1), torch.zeros(1, 10))
    centroid = out.vertices.mean(dim=1)
    assert_near(model.keypoints(out, 'scorehmr44')[:, 25], centroid)
    synthetic_with_extra = BodyModel.from_config(None, tmp_path / 'J_regressor_extra.npy')
    assert synthetic_with_extra.has_extra_regressor and synthetic_with_extra.is_synthetic
    assert path.is_file()


def test_from_config_missing_file(tmp_path):
    with pytest.raises(SmplFileNotFoundError, match='body.model_path: null'):
        BodyModel.from_config(tmp_path / 'nope' / 'SMPL_NEUTRAL.pkl')
    with pytest.raises(SmplFileError):
        BodyModel.from_config(None, tmp_path / 'missing_extra.npy')
