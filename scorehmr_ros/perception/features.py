"""
Feature extractors and regressors: the perception front end's interfaces.

A :class:`FeatureExtractor` turns what a camera saw (images with person boxes, or 2D
keypoints) into the conditioning vector ``c`` of the denoiser ([B, C]). A
:class:`Regressor` gives the refinement's starting point (SMPL rotations, shape and
camera translation). Users bring their own networks as ONNX files (e.g. PARE or HMR 2.0
exported with a wrapper whose outputs are named as below); nothing here downloads or
ships a model.
"""

import abc
import dataclasses
import logging
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from scorehmr_ros.body.layouts import get_layout
from scorehmr_ros.perception.keypoint_features import keypoint_feature_dim, keypoint_features

LOG = logging.getLogger(__name__)

#: ImageNet statistics used by PARE, HMR 2.0 and most ResNet/ViT backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelInputError(ValueError):
    """A user model or its input does not match what the front end expects."""


class FeatureExtractor(abc.ABC):
    """Produce the denoiser's conditioning features ``c`` ([B, C])."""

    #: C, the feature size (must equal the denoiser's ``cond_dim``).
    cond_dim: int

    @abc.abstractmethod
    def __call__(self, inputs, boxes=None) -> torch.Tensor:
        """
        Compute features.

        :param inputs: images or keypoints, depending on the extractor.
        :param boxes: [B, 4] person boxes ``(x0, y0, x1, y1)`` in pixels, where used.
        :return: [B, C] float32 features.
        """


class KeypointFeatureExtractor(FeatureExtractor):
    """
    Features from 2D keypoints (:func:`keypoint_features`), no image needed.

    :param layout: keypoint layout name (``'body25'``, ``'coco17'``, ...), which fixes K.
    :param min_confidence: confidences at or below this count as missing.
    """

    def __init__(self, layout: str = 'body25', min_confidence: float = 0.0):
        self.layout = layout
        self.num_keypoints = get_layout(layout).num_joints
        self.cond_dim = keypoint_feature_dim(self.num_keypoints)
        self.min_confidence = min_confidence

    def __call__(self, inputs, boxes=None) -> torch.Tensor:
        """
        Compute keypoint features.

        :param inputs: [B, K, 3] keypoints ``(x_px, y_px, confidence)`` of the layout.
        :param boxes: ignored (the keypoints define the box).
        :return: [B, 3 K] features.
        """
        kp = torch.as_tensor(inputs)
        if kp.dim() != 3 or tuple(kp.shape[1:]) != (self.num_keypoints, 3):
            raise ModelInputError(f'keypoints: expected [B, {self.num_keypoints}, 3] for '
                                  f'layout {self.layout!r}, got {list(kp.shape)}')
        return keypoint_features(kp, self.min_confidence).float()


@dataclasses.dataclass
class RegressorOutput:
    """
    A regression estimate of B people.

    :param rotmats: [B, 24, 3, 3] SMPL rotations, global orientation in the camera frame.
    :param betas: [B, 10] SMPL shape.
    :param cam_t: [B, 3] body-to-camera translation, metres.
    :param features: [B, C] conditioning features, when the regressor provides them.
    """

    rotmats: torch.Tensor
    betas: torch.Tensor
    cam_t: torch.Tensor
    features: Optional[torch.Tensor] = None


class Regressor(abc.ABC):
    """Give the starting estimate of refinement from images and person boxes."""

    @abc.abstractmethod
    def __call__(self, images, boxes, image_index=None) -> RegressorOutput:
        """
        Regress SMPL parameters.

        :param images: [N, H, W, 3] uint8 RGB images.
        :param boxes: [B, 4] person boxes ``(x0, y0, x1, y1)``, pixels.
        :param image_index: [B] image of each box (default: box b in image b).
        :return: the estimate.
        """


class _OnnxModel:
    """
    An ONNX Runtime session on a user model taking one image crop batch [B, 3, H, W].

    :param path: the ``.onnx`` file.
    :param input_name: name of the image input (default: the model's only input).
    :param providers: ONNX Runtime execution providers (default CPU).
    :param threads: intra-op threads (0: runtime default).
    """

    def __init__(self, path: str, input_name: Optional[str] = None,
                 providers: Optional[Sequence[str]] = None, threads: int = 0):
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise ModelInputError(f'{path}: ONNX model file not found')
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                path, options, providers=list(providers or ['CPUExecutionProvider']))
        except Exception as err:  # noqa: B902 - ORT raises its own exception types
            raise ModelInputError(f'{path}: ONNX Runtime cannot load the model ({err})') \
                from err
        self.path = path
        inputs = {i.name: i for i in self.session.get_inputs()}
        if input_name is None:
            if len(inputs) != 1:
                raise ModelInputError(f'{path}: the model has inputs {sorted(inputs)}; name '
                                      'the image input (input_name)')
            input_name = next(iter(inputs))
        if input_name not in inputs:
            raise ModelInputError(f'{path}: no input named {input_name!r}; the model has '
                                  f'{sorted(inputs)}')
        shape = inputs[input_name].shape
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(s, int) for s in shape[2:]):
            raise ModelInputError(f'{path}: input {input_name!r} has shape {shape}, expected '
                                  '[B, 3, H, W] with fixed H and W')
        if inputs[input_name].type != 'tensor(float)':
            raise ModelInputError(f'{path}: input {input_name!r} is {inputs[input_name].type},'
                                  ' expected tensor(float)')
        self.input_name = input_name
        self.crop_hw: Tuple[int, int] = (int(shape[2]), int(shape[3]))
        self.outputs = {o.name: o.shape for o in self.session.get_outputs()}

    def output_dim(self, name: str, trailing: Tuple[int, ...]) -> None:
        """
        Check that an output exists and has the trailing shape ``trailing``.

        :param name: output name.
        :param trailing: expected shape after the batch dimension.
        """
        if name not in self.outputs:
            raise ModelInputError(f'{self.path}: no output named {name!r}; the model has '
                                  f'{sorted(self.outputs)}')
        got = tuple(self.outputs[name][1:])
        # Symbolic (named) sizes cannot be checked here; run() checks the real arrays.
        if len(got) != len(trailing) or any(isinstance(g, int) and g != t
                                            for g, t in zip(got, trailing)):
            raise ModelInputError(f'{self.path}: output {name!r} has shape '
                                  f'{self.outputs[name]}, expected [B, '
                                  f'{", ".join(str(t) for t in trailing)}]')

    def run(self, crops: np.ndarray, names: Sequence[str]):
        return self.session.run(list(names), {self.input_name: crops})


def crop_boxes(images, boxes, crop_hw: Tuple[int, int], image_index=None,
               box_scale: float = 1.2, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """
    Cut normalised crops around person boxes (square, enlarged, zero outside the image).

    :param images: [N, H, W, 3] uint8 RGB images.
    :param boxes: [B, 4] boxes ``(x0, y0, x1, y1)``, pixels.
    :param crop_hw: crop ``(height, width)`` in pixels; the crop keeps this aspect ratio.
    :param image_index: [B] image of each box (default ``arange(B)``).
    :param box_scale: enlargement of the box's longer side.
    :param mean: per-channel mean subtracted from ``[0, 1]`` values.
    :param std: per-channel standard deviation divided out.
    :return: [B, 3, h, w] float32 crops.
    """
    imgs = torch.as_tensor(np.asarray(images))
    bxs = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
    if imgs.dim() != 4 or imgs.shape[-1] != 3:
        raise ModelInputError(f'images: expected [N, H, W, 3] RGB, got {list(imgs.shape)}')
    if bxs.dim() != 2 or bxs.shape[1] != 4 or not torch.isfinite(bxs).all():
        raise ModelInputError(f'boxes: expected finite [B, 4], got {list(bxs.shape)}')
    index = (torch.arange(bxs.shape[0]) if image_index is None
             else torch.as_tensor(np.asarray(image_index)).long())
    if index.shape != (bxs.shape[0],) or (index < 0).any() or (index >= imgs.shape[0]).any():
        raise ModelInputError(f'image_index: expected [B={bxs.shape[0]}] entries in '
                              f'[0, {imgs.shape[0]})')
    height, width = imgs.shape[1:3]
    h_out, w_out = crop_hw
    centre = 0.5 * (bxs[:, :2] + bxs[:, 2:])
    side = box_scale * torch.maximum(bxs[:, 2] - bxs[:, 0], (bxs[:, 3] - bxs[:, 1])
                                     * w_out / h_out).clamp_min(1.0)
    half = torch.stack((side, side * h_out / w_out), dim=1) / 2           # [B, 2] px
    # affine_grid maps output [-1, 1] to input [-1, 1] (align_corners=False convention).
    theta = torch.zeros(bxs.shape[0], 2, 3)
    theta[:, 0, 0] = half[:, 0] / (width / 2)
    theta[:, 1, 1] = half[:, 1] / (height / 2)
    theta[:, 0, 2] = centre[:, 0] / (width / 2) - 1
    theta[:, 1, 2] = centre[:, 1] / (height / 2) - 1
    src = imgs[index].permute(0, 3, 1, 2).float() / 255.0
    grid = F.affine_grid(theta, [bxs.shape[0], 3, h_out, w_out], align_corners=False)
    crops = F.grid_sample(src, grid, mode='bilinear', padding_mode='zeros',
                          align_corners=False)
    mean_t = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return (crops - mean_t) / std_t


class OnnxFeatureExtractor(FeatureExtractor):
    """
    A user-supplied ONNX feature network (e.g. an exported PARE or HMR 2.0 backbone).

    The model takes normalised crops [B, 3, H, W] (H, W fixed in the graph) and has an
    output [B, C]; the input name, shape and dtype and the output shape are checked when
    the file is loaded.

    :param path: the ``.onnx`` file.
    :param output_name: the feature output (default: the model's first output).
    :param input_name: the image input (default: the only input).
    :param expect_cond_dim: raise if C differs (the denoiser's ``cond_dim``).
    :param box_scale: crop enlargement around each box.
    :param mean: per-channel normalisation mean.
    :param std: per-channel normalisation standard deviation.
    :param providers: ONNX Runtime execution providers.
    :param threads: intra-op threads.
    """

    def __init__(self, path: str, output_name: Optional[str] = None,
                 input_name: Optional[str] = None, expect_cond_dim: Optional[int] = None,
                 box_scale: float = 1.2, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 providers: Optional[Sequence[str]] = None, threads: int = 0):
        self.model = _OnnxModel(path, input_name, providers, threads)
        self.output_name = output_name or next(iter(self.model.outputs))
        shape = self.model.outputs.get(self.output_name)
        if shape is None or len(shape) != 2 or not isinstance(shape[1], int):
            raise ModelInputError(f'{path}: output {self.output_name!r} has shape {shape}, '
                                  'expected [B, C] with a fixed C')
        self.cond_dim = int(shape[1])
        if expect_cond_dim is not None and self.cond_dim != expect_cond_dim:
            raise ModelInputError(f'{path}: output {self.output_name!r} has {self.cond_dim} '
                                  f'features, the denoiser expects {expect_cond_dim}')
        self.box_scale, self.mean, self.std = box_scale, mean, std

    @property
    def crop_hw(self) -> Tuple[int, int]:
        """Crop ``(height, width)`` the model takes."""
        return self.model.crop_hw

    def __call__(self, inputs, boxes=None, image_index=None) -> torch.Tensor:
        """
        Compute image features of person crops.

        :param inputs: [N, H, W, 3] uint8 RGB images.
        :param boxes: [B, 4] person boxes ``(x0, y0, x1, y1)``, pixels (required).
        :param image_index: [B] image of each box (default: box b in image b).
        :return: [B, C] features.
        """
        if boxes is None:
            raise ModelInputError('OnnxFeatureExtractor needs person boxes [B, 4]')
        crops = crop_boxes(inputs, boxes, self.crop_hw, image_index, self.box_scale,
                           self.mean, self.std)
        feats, = self.model.run(crops.numpy(), [self.output_name])
        return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))


class OnnxRegressor(Regressor):
    """
    A user-supplied ONNX regressor whose wrapper outputs the estimate in camera terms.

    Outputs (names configurable): ``rotmats`` [B, 24, 3, 3], ``betas`` [B, 10],
    ``cam_t`` [B, 3] body-to-camera translation of the crop's camera (the wrapper
    converts weak-perspective cameras), optionally ``features`` [B, C].

    :param path: the ``.onnx`` file.
    :param names: output names for ``rotmats``, ``betas``, ``cam_t`` and optionally
        ``features`` (mapping).
    :param input_name: the image input (default: the only input).
    :param box_scale: crop enlargement around each box.
    :param providers: ONNX Runtime execution providers.
    """

    def __init__(self, path: str, names=None, input_name: Optional[str] = None,
                 box_scale: float = 1.2, providers: Optional[Sequence[str]] = None):
        self.model = _OnnxModel(path, input_name, providers)
        self.names = {'rotmats': 'rotmats', 'betas': 'betas', 'cam_t': 'cam_t'}
        self.names.update(dict(names or {}))
        self.model.output_dim(self.names['rotmats'], (24, 3, 3))
        self.model.output_dim(self.names['betas'], (10,))
        self.model.output_dim(self.names['cam_t'], (3,))
        self.box_scale = box_scale

    def __call__(self, images, boxes, image_index=None) -> RegressorOutput:
        """
        Regress SMPL parameters of person crops.

        :param images: [N, H, W, 3] uint8 RGB images.
        :param boxes: [B, 4] person boxes, pixels.
        :param image_index: [B] image of each box.
        :return: the estimate.
        """
        crops = crop_boxes(images, boxes, self.model.crop_hw, image_index, self.box_scale)
        keys = ['rotmats', 'betas', 'cam_t'] + (['features'] if 'features' in self.names
                                                else [])
        values = self.model.run(crops.numpy(), [self.names[k] for k in keys])
        out = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
               for k, v in zip(keys, values)}
        b = crops.shape[0]
        for key, trailing in (('rotmats', (24, 3, 3)), ('betas', (10,)), ('cam_t', (3,))):
            if tuple(out[key].shape) != (b,) + trailing:
                raise ModelInputError(f'{self.model.path}: output {self.names[key]!r} has shape '
                                      f'{list(out[key].shape)}, expected {[b, *trailing]}')
        return RegressorOutput(out['rotmats'], out['betas'], out['cam_t'], out.get('features'))
