"""
What the refiner is given: regression estimates, features and observations per row.

A row is one person in one view at one frame (B rows). Rows that are views of the same
person share a ``view_group`` (multi-view loss); rows that are consecutive frames of one
person are linked by ``frame_prev`` (temporal loss). Optional extrinsics
(``world_to_camera``) make the views of a person one body in a common frame (calibrated
multi-view mode); optional frozen temporal targets pull a row toward given poses (the
online sliding-window mode).
"""

import dataclasses
import logging
from typing import Optional

import torch

LOG = logging.getLogger(__name__)

#: Keypoint counts of the layouts the guidance accepts.
LAYOUT_SIZES = {'body25': 25, 'scorehmr44': 44, 'coco17': 17, 'smpl24': 24}


class ObservationError(ValueError):
    """An input array has the wrong shape, dtype or content."""


@dataclasses.dataclass
class Observations:
    """
    Inputs of one refinement call (all tensors on any device; B rows).

    :param init_rotmats: [B, 24, 3, 3] regression estimate of the SMPL pose, SMPL order
        (global orientation first), body-to-camera rotation included.
    :param init_betas: [B, 10] SMPL shape of the regression estimate.
    :param cond: [B, C] conditioning features (standardised image features).
    :param init_cam_t: [B, 3] body-to-camera translation of the estimate, metres.
    :param keypoints_2d: [B, K, 3] observed keypoints ``(x_px, y_px, confidence)``.
    :param keypoint_layout: layout of ``keypoints_2d`` (``'body25'``, ``'scorehmr44'``,
        ``'coco17'``, ``'smpl24'``).
    :param focal_px: [B, 2] focal lengths ``(fx, fy)``, pixels.
    :param center_px: [B, 2] principal points ``(cx, cy)``, pixels.
    :param image_size: [B, 2] image ``(height, width)``, pixels.
    :param view_group: [B] int64 person index for the multi-view loss (rows with the
        same index are views of one person); default: all rows one person.
    :param frame_prev: [B] int64 row of the previous frame of the same person, -1 for a
        first frame; default: consecutive rows.
    :param world_to_camera: [B, 4, 4] extrinsics of each row's camera (``p_cam = R p_world
        + t``); a row of NaN marks a camera without (valid) extrinsics. Used by
        ``guidance.multiview_mode: calibrated``.
    :param temporal_target_6d: [B, 144] frozen pose (6D, this row's camera frame) that the
        row is pulled toward with ``rho_temporal * weight * ||pose - target||^2``.
    :param temporal_target_weight: [B] weights of that pull (0: none); default 1.
    """

    init_rotmats: torch.Tensor
    init_betas: torch.Tensor
    cond: torch.Tensor
    init_cam_t: Optional[torch.Tensor] = None
    keypoints_2d: Optional[torch.Tensor] = None
    keypoint_layout: str = 'body25'
    focal_px: Optional[torch.Tensor] = None
    center_px: Optional[torch.Tensor] = None
    image_size: Optional[torch.Tensor] = None
    view_group: Optional[torch.Tensor] = None
    frame_prev: Optional[torch.Tensor] = None
    world_to_camera: Optional[torch.Tensor] = None
    temporal_target_6d: Optional[torch.Tensor] = None
    temporal_target_weight: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.init_rotmats.shape[0])

    def validate(self, cond_dim: int, need_keypoints: bool) -> None:
        """
        Check shapes and dtypes; raise :class:`ObservationError` naming the field.

        :param cond_dim: C the denoiser expects.
        :param need_keypoints: keypoint guidance is on (keypoints and camera required).
        """
        if not isinstance(self.init_rotmats, torch.Tensor) or self.init_rotmats.dim() != 4:
            raise ObservationError(
                f'init_rotmats: expected [B, 24, 3, 3], got {_shape(self.init_rotmats)}')
        b = self.batch_size
        if b < 1:
            raise ObservationError('init_rotmats: batch is empty (B = 0)')
        _check('init_rotmats', self.init_rotmats, (b, 24, 3, 3))
        _check('init_betas', self.init_betas, (b, 10))
        _check('cond', self.cond, (b, cond_dim))
        for name in ('init_rotmats', 'init_betas', 'cond'):
            if not torch.isfinite(getattr(self, name)).all():
                raise ObservationError(f'{name}: contains NaN or inf')
        if need_keypoints:
            if self.keypoint_layout not in LAYOUT_SIZES:
                raise ObservationError(
                    f'keypoint_layout: expected one of {sorted(LAYOUT_SIZES)}, '
                    f'got {self.keypoint_layout!r}')
            k = LAYOUT_SIZES[self.keypoint_layout]
            for name, shape in (('keypoints_2d', (b, k, 3)), ('init_cam_t', (b, 3)),
                                ('focal_px', (b, 2)), ('center_px', (b, 2)),
                                ('image_size', (b, 2))):
                if getattr(self, name) is None:
                    raise ObservationError(f'{name}: required for keypoint guidance, '
                                           f'expected {_fmt(shape)}')
                _check(name, getattr(self, name), shape)
            for name in ('init_cam_t', 'focal_px', 'center_px', 'image_size'):
                if not torch.isfinite(getattr(self, name)).all():
                    raise ObservationError(f'{name}: contains NaN or inf')
            if (self.focal_px <= 0).any() or (self.image_size <= 0).any():
                raise ObservationError('focal_px and image_size must be positive')
        for name in ('view_group', 'frame_prev'):
            value = getattr(self, name)
            if value is not None:
                _check(name, value, (b,), integer=True)
        if self.frame_prev is not None and (
                (self.frame_prev >= b).any() or (self.frame_prev < -1).any()):
            raise ObservationError(f'frame_prev: entries must be -1 or a row in [0, {b})')
        if self.view_group is not None and (self.view_group < 0).any():
            raise ObservationError('view_group: entries must be >= 0')
        self._validate_extras(b)

    def _validate_extras(self, b: int) -> None:
        """Check the optional extrinsics and temporal targets."""
        if self.world_to_camera is not None:
            _check('world_to_camera', self.world_to_camera, (b, 4, 4))
            w2c = self.world_to_camera.double()
            given = torch.isfinite(w2c).all(dim=-1).all(dim=-1)
            rot = w2c[given, :3, :3]
            eye = torch.eye(3, dtype=torch.float64)
            bottom = w2c[given, 3]
            if rot.numel() and (
                    (rot.transpose(1, 2) @ rot - eye).abs().amax() > 1e-3
                    or (torch.linalg.det(rot) < 0).any()
                    or (bottom - torch.tensor([0.0, 0.0, 0.0, 1.0],
                                              dtype=torch.float64)).abs().amax() > 1e-6):
                raise ObservationError('world_to_camera: each finite row must be a rigid '
                                       'transform [R t; 0 0 0 1] with R a rotation')
        if self.temporal_target_6d is not None:
            _check('temporal_target_6d', self.temporal_target_6d, (b, 144))
            if not torch.isfinite(self.temporal_target_6d).all():
                raise ObservationError('temporal_target_6d: contains NaN or inf')
        if self.temporal_target_weight is not None:
            if self.temporal_target_6d is None:
                raise ObservationError('temporal_target_weight: given without '
                                       'temporal_target_6d')
            _check('temporal_target_weight', self.temporal_target_weight, (b,))
            weight = self.temporal_target_weight
            if not torch.isfinite(weight).all() or (weight < 0).any():
                raise ObservationError('temporal_target_weight: entries must be finite '
                                       'and >= 0')

    def sanitized_keypoints(self) -> torch.Tensor:
        """
        Keypoints with non-finite entries and negative confidences neutralised.

        NaN/inf coordinates or confidences give confidence 0 (and coordinates 0, so
        that ``0 * NaN`` cannot poison the loss); negative confidences count as 0. One
        warning is logged per call that had to change something.

        :return: [B, K, 3] clean keypoints.
        """
        kp = self.keypoints_2d
        finite = torch.isfinite(kp).all(dim=-1)
        negative = kp[..., 2] < 0
        bad = ~finite | negative
        if bool(bad.any()):
            LOG.warning('%d keypoint(s) with NaN/inf values or negative confidence were given '
                        'confidence 0', int(bad.sum()))
            kp = torch.where(finite[..., None], kp, torch.zeros_like(kp))
            kp = torch.cat((kp[..., :2], torch.where(bad, 0.0, kp[..., 2])[..., None]), -1)
        return kp


def _shape(value) -> str:
    return _fmt(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _fmt(shape) -> str:
    return '[' + ', '.join(str(s) for s in shape) + ']'


def _check(name: str, value, shape, integer: bool = False) -> None:
    if not isinstance(value, torch.Tensor):
        raise ObservationError(f'{name}: expected a tensor of shape {_fmt(shape)}, '
                               f'got {type(value).__name__}')
    if tuple(value.shape) != tuple(shape):
        raise ObservationError(f'{name}: expected shape {_fmt(shape)}, got {_shape(value)}')
    if integer and value.dtype not in (torch.int32, torch.int64):
        raise ObservationError(f'{name}: expected an integer tensor, got {value.dtype}')
    if not integer and not value.is_floating_point():
        raise ObservationError(f'{name}: expected a floating-point tensor, got {value.dtype}')
