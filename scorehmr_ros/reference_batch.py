"""
Inputs and settings in the ScoreHMR authors' batch naming.

The authors' ``GaussianDiffusion.sample`` takes a batch dict (``pred_pose`` [B, 24, 3, 3],
``pred_betas``, ``init_cam_t``, ``keypoints_2d`` in their 44-joint layout, ``focal_length``,
``camera_center``, ``img_size``) plus image features, and settings from their config
(``SAMPLE_START``, ``DDIM_STEP_SIZE``, ``OPTIM_ITERS``, ``W_KP2D`` ...). These helpers map
arrays named like that (with an ``in_`` prefix for inputs, as recorded by a comparison
harness) to this engine's :class:`Observations` and :class:`RefinerConfig`.
"""

from typing import Mapping, Optional

import numpy as np
import torch

from scorehmr_ros.config import GuidanceConfig, ModelConfig, RefinerConfig, SamplerConfig
from scorehmr_ros.observations import Observations


def observations_from_authors_batch(arrays: Mapping[str, np.ndarray], prefix: str = 'in_'
                                    ) -> Observations:
    """
    Observations from the authors' batch arrays.

    :param arrays: ``{prefix}pred_pose``, ``pred_betas``, ``cond_feats`` and, for keypoint
        guidance, ``init_cam_t``, ``keypoints_2d`` [B, 44, 3], ``focal_length``,
        ``camera_center``, ``img_size``.
    :param prefix: key prefix.
    :return: float32 observations (keypoint layout ``scorehmr44``).
    """
    def get(name):
        return torch.as_tensor(np.asarray(arrays[prefix + name])).float()

    obs = Observations(init_rotmats=get('pred_pose'), init_betas=get('pred_betas'),
                       cond=get('cond_feats'))
    keypoint_fields = ('init_cam_t', 'keypoints_2d', 'focal_length', 'camera_center',
                       'img_size')
    # The authors' batches carry keypoints even for multi-view runs; fitting needs all.
    if all(prefix + name in arrays for name in keypoint_fields):
        obs.init_cam_t = get('init_cam_t')
        obs.keypoints_2d = get('keypoints_2d')
        obs.keypoint_layout = 'scorehmr44'
        obs.focal_px = get('focal_length')
        obs.center_px = get('camera_center')
        obs.image_size = get('img_size')
    return obs


def config_from_authors_settings(arrays: Mapping[str, np.ndarray],
                                 model: Optional[ModelConfig] = None) -> RefinerConfig:
    """
    Engine configuration equal to the authors' sampling settings.

    :param arrays: ``sample_start``, ``ddim_step_size``, ``optim_iters``, ``early_stopping``,
        ``keypoint_guidance``, ``multiview_guidance``, ``temporal_guidance``, ``use_hips``,
        ``w_kp2d``, ``w_multiview``, ``w_smooth``, ``grad_scale``.
    :param model: which denoiser to use.
    :return: the configuration (reference engine path).
    """
    def flag(name):
        return bool(np.asarray(arrays[name]))

    def num(name):
        return float(np.asarray(arrays[name]))

    return RefinerConfig(
        model=model or ModelConfig(),
        sampler=SamplerConfig(tau=int(num('sample_start')), ddim_step=int(num('ddim_step_size')),
                              outer_iters=int(num('optim_iters')),
                              early_stopping='relative' if flag('early_stopping') else 'none'),
        guidance=GuidanceConfig(keypoints=flag('keypoint_guidance'),
                                multiview=flag('multiview_guidance'),
                                temporal=flag('temporal_guidance'), use_hips=flag('use_hips'),
                                rho_keypoints=num('w_kp2d'), rho_multiview=num('w_multiview'),
                                rho_temporal=num('w_smooth'), grad_scale=num('grad_scale')))
