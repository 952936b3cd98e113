"""Keypoint features (invariances, robustness) and the ONNX feature/regressor front ends."""

from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest
import torch

from scorehmr_ros.perception.features import (
    crop_boxes, KeypointFeatureExtractor, ModelInputError, OnnxFeatureExtractor, OnnxRegressor)
from scorehmr_ros.perception.keypoint_features import keypoint_features

# The tiny test models are exported with torch's TorchScript exporter, as the project's
# own export does (the dynamo exporter needs onnxscript); torch flags it as legacy.
pytestmark = [
    pytest.mark.filterwarnings('ignore:You are using the legacy TorchScript:DeprecationWarning'),
    pytest.mark.filterwarnings('ignore:The feature will be removed:DeprecationWarning')]


def person_keypoints(seed, k=25, missing=3):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(200, 600, size=(2, k, 2))
    conf = rng.uniform(0.3, 1.0, size=(2, k))
    conf[:, :missing] = 0.0
    return np.concatenate((xy, conf[..., None]), -1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000),
       shift=st.tuples(st.floats(-5000, 5000), st.floats(-5000, 5000)),
       scale=st.floats(0.05, 20.0))
def test_features_ignore_image_translation_and_scale(seed, shift, scale):
    kp = person_keypoints(seed)
    moved = kp.copy()
    moved[..., :2] = kp[..., :2] * scale + np.array(shift)
    a = keypoint_features(kp)
    b = keypoint_features(moved)
    assert a.shape == (2, 75)
    assert torch.allclose(a, b, atol=1e-4)
    # The features still tell poses apart: a different person gives different features.
    assert not torch.allclose(a, keypoint_features(person_keypoints(seed + 1)), atol=1e-3)


def test_feature_layout_box_normalisation_and_missing_keypoints():
    kp = np.array([[[100.0, 50.0, 1.0], [300.0, 150.0, 0.5], [7.0, 7.0, 0.0]]])
    f = keypoint_features(kp).numpy()[0]
    # Box x 100..300, y 50..150: centre (200, 100), half of the longest side 100.
    assert np.allclose(f[:6], [-1.0, -0.5, 1.0, 0.5, 0.0, 0.0])
    assert np.allclose(f[6:], [1.0, 0.5, 0.0])
    assert np.all(keypoint_features(np.zeros((3, 4, 3))).numpy() == 0)      # none confident
    single = keypoint_features(np.array([[[10.0, 10.0, 1.0], [0.0, 0.0, 0.0]]])).numpy()
    assert np.allclose(single, [[0, 0, 0, 0, 1, 0]])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 8), st.just(3)),
                  elements=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                     st.sampled_from([0.0, 1.0, -1.0, 1e308, -1e308]))))
def test_features_are_finite_for_any_input(kp):
    f = keypoint_features(kp)
    assert f.shape == (kp.shape[0], 3 * kp.shape[1])
    assert torch.isfinite(f).all()
    assert (f.abs() <= 1.0).all()
    assert torch.equal(f, keypoint_features(kp))                  # deterministic


def test_keypoint_extractor_checks_the_layout():
    ext = KeypointFeatureExtractor('coco17')
    assert ext.cond_dim == 51
    assert ext(person_keypoints(0, k=17)).shape == (2, 51)
    with pytest.raises(ModelInputError, match=r'expected \[B, 17, 3\]'):
        ext(person_keypoints(0, k=25))


class TinyBackbone(torch.nn.Module):
    def __init__(self, out_dim=8):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.fc = torch.nn.Linear(4, out_dim)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TinyRegressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = TinyBackbone(6 + 10 + 3)

    def forward(self, x):
        h = self.backbone(x)
        eye = torch.eye(3).expand(x.shape[0], 24, 3, 3)
        rotmats = eye + 0.0 * h[:, :1, None, None]
        return rotmats, h[:, 6:16], h[:, 16:19], h


def export(module, path, outputs, shape=(1, 3, 32, 24)):
    torch.manual_seed(0)
    module.eval()
    torch.onnx.export(module, (torch.randn(*shape),), str(path), input_names=['image'],
                      output_names=outputs, dynamic_axes={'image': {0: 'b'},
                                                          **{o: {0: 'b'} for o in outputs}},
                      dynamo=False)
    return module


@pytest.fixture(scope='module')
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(2, 120, 160, 3), dtype=np.uint8)


def test_onnx_feature_extractor_matches_torch(tmp_path, images):
    torch.manual_seed(0)
    net = export(TinyBackbone(), tmp_path / 'feat.onnx', ['features'])
    ext = OnnxFeatureExtractor(str(tmp_path / 'feat.onnx'), expect_cond_dim=8)
    assert ext.cond_dim == 8 and ext.crop_hw == (32, 24)
    boxes = np.array([[10, 20, 60, 110], [80, 5, 150, 100], [0, 0, 40, 40]], np.float32)
    feats = ext(images, boxes, image_index=[0, 1, 1])
    with torch.no_grad():
        expected = net(crop_boxes(images, boxes, (32, 24), [0, 1, 1]))
    assert feats.shape == (3, 8)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-4)


def test_onnx_models_are_checked_at_load(tmp_path):
    export(TinyBackbone(), tmp_path / 'feat.onnx', ['features'])
    with pytest.raises(ModelInputError, match=r'feat\.onnx.*8 features.*expects 3072'):
        OnnxFeatureExtractor(str(tmp_path / 'feat.onnx'), expect_cond_dim=3072)
    with pytest.raises(ModelInputError, match='no input named'):
        OnnxFeatureExtractor(str(tmp_path / 'feat.onnx'), input_name='img')
    with pytest.raises(ModelInputError, match='not found'):
        OnnxFeatureExtractor(str(tmp_path / 'missing.onnx'))

    class Gray(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    export(Gray(), tmp_path / 'gray.onnx', ['features'], shape=(1, 1, 32, 32))
    with pytest.raises(ModelInputError, match=r'gray\.onnx.*expected \[B, 3, H, W\]'):
        OnnxFeatureExtractor(str(tmp_path / 'gray.onnx'))
    with pytest.raises(ModelInputError, match=r"no output named 'rotmats'"):
        OnnxRegressor(str(tmp_path / 'feat.onnx'))


def test_onnx_regressor_outputs(tmp_path, images):
    export(TinyRegressor(), tmp_path / 'reg.onnx', ['rotmats', 'betas', 'cam_t', 'feats'])
    reg = OnnxRegressor(str(tmp_path / 'reg.onnx'), names={'features': 'feats'})
    out = reg(images, np.array([[10, 20, 60, 110], [80, 5, 150, 100]], np.float32))
    assert out.rotmats.shape == (2, 24, 3, 3) and out.betas.shape == (2, 10)
    assert out.cam_t.shape == (2, 3) and out.features.shape == (2, 19)
    assert torch.allclose(out.rotmats, torch.eye(3).expand(2, 24, 3, 3))


def test_crop_of_a_box_sees_the_box():
    img = np.zeros((1, 100, 100, 3), np.uint8)
    img[0, 40:60, 20:40] = 255                                  # a white square
    crop = crop_boxes(img, np.array([[20, 40, 40, 60]], np.float32), (16, 16), box_scale=1.0,
                      mean=(0, 0, 0), std=(1, 1, 1))
    assert crop.shape == (1, 3, 16, 16)
    assert float(crop[0, :, 2:14, 2:14].min()) > 0.99
    with pytest.raises(ModelInputError, match='boxes'):
        crop_boxes(img, np.array([[0, 0, np.nan, 1]]), (16, 16))
