"""
Command-line interface: ``scorehmr <command>``.

Commands:

* ``refine``: refine the estimates of an input ``.npz`` (schema in
  :mod:`scorehmr_ros.npz_io`) and write the result ``.npz``.
* ``demo``: generate a multi-person scene with ground truth, refine it and print the
  reprojection and 3D errors before and after.
* ``make-scene``: write a generated scene as an input ``.npz`` (an example input).
* ``convert-smpl``: convert a licensed SMPL ``.pkl`` to ``.npz`` without running any
  pickled code.
* ``make-mocap-set``: render ``train.npz``/``eval.npz`` from BVH motion capture seen by
  virtual cameras (docs/mocap.md).
* ``train``: train a denoiser on a ``train.npz`` (docs/training.md).
* ``eval``: evaluate refinement on an ``eval.npz`` in the single-frame, multi-view or
  video setting, with a prior-free baseline, tables and plots.
* ``photo`` / ``video``: MediaPipe keypoints on a photo, video or image folder, refined;
  overlay and 3D view pictures and per-image results (docs/detector.md).
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

import yaml

from scorehmr_ros.config import load_config

LOG = logging.getLogger('scorehmr')


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``scorehmr`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='[%(levelname)s] %(name)s: %(message)s')
    try:
        return args.func(args)
    except (ValueError, OSError) as err:
        # Bad inputs and files end with one clear line, not a traceback.
        LOG.error('%s', err)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='scorehmr', description=__doc__.split('\n\n')[0])
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', required=True)

    def add_config(p):
        p.add_argument('--config', help='YAML config (see config/refiner.yaml)')
        p.add_argument('--set', action='append', default=[], metavar='SECTION.KEY=VALUE',
                       help='override a config value, e.g. --set sampler.tau=100')

    p = sub.add_parser('refine', help='refine the estimates of an input .npz')
    p.add_argument('--input', required=True, help='input .npz (schema: scorehmr_ros.npz_io)')
    p.add_argument('--output', required=True, help='output .npz')
    add_config(p)
    p.set_defaults(func=_cmd_refine)

    p = sub.add_parser('demo', help='refine a generated multi-person scene with ground truth')
    p.add_argument('--people', type=int, default=3, help='people in the scene')
    p.add_argument('--seed', type=int, default=0, help='scene seed')
    p.add_argument('--output-dir', default='out/demo', help='where the demo writes files')
    p.add_argument('--no-ros', action='store_true',
                   help='skip part 2 (synthetic 3-camera bag replayed through the ROS 2 node)')
    p.add_argument('--ros-frames', type=int, default=5, help='frames of the demo bag')
    p.add_argument('--no-photo', action='store_true',
                   help='skip part 3 (MediaPipe keypoints on a real photo, refined body '
                   'drawn over it)')
    p.add_argument('--photo', help='photo for part 3 (default: opencv-doc messi5.jpg)')
    p.add_argument('--no-video', action='store_true',
                   help='skip part 4 (a few frames of a street video, several people per '
                   'frame from HOG person boxes, refined and drawn over the frames)')
    p.add_argument('--video', help='video file or image folder for part 4 (default: '
                   'opencv-doc vtest.avi)')
    add_config(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser('make-scene', help='write a generated scene as an input .npz')
    p.add_argument('--output', required=True)
    p.add_argument('--people', type=int, default=3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cond-dim', type=int, default=3072, help='feature size C')
    add_config(p)
    p.set_defaults(func=_cmd_make_scene)

    p = sub.add_parser('export', help='export the denoiser to ONNX (and TensorRT)')
    p.add_argument('--output-dir', required=True, help='folder for the graphs')
    p.add_argument('--tensorrt', action='store_true',
                   help='also build a TensorRT engine (needs tensorrt and a GPU)')
    p.add_argument('--profile', type=int, nargs=3, default=[1, 8, 64],
                   metavar=('MIN', 'OPT', 'MAX'), help='TensorRT batch profile (rows)')
    add_config(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser('convert-smpl', help='convert a SMPL .pkl to .npz safely')
    p.add_argument('input', help='SMPL .pkl (e.g. SMPL_NEUTRAL.pkl)')
    p.add_argument('output', help='output .npz')
    p.set_defaults(func=_cmd_convert_smpl)

    p = sub.add_parser('make-mocap-set', help='render train/eval .npz sets from BVH motion '
                       'capture with virtual cameras (docs/mocap.md)')
    p.add_argument('bvh', nargs='+', help='BVH files (one sequence each)')
    p.add_argument('--out', required=True, help='folder for train.npz and eval.npz')
    p.add_argument('--views', type=int, default=4, help='cameras per clip and split')
    p.add_argument('--holdout-fraction', type=float, default=0.2,
                   help='end of each clip held out for eval.npz')
    p.add_argument('--gap-s', type=float, default=1.0, help='seconds dropped before it')
    p.add_argument('--fps', type=float, default=15.0, help='output frame rate')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--layout', choices=('coco17', 'body25'), default='coco17')
    p.add_argument('--image-size', type=int, nargs=2, default=[480, 640],
                   metavar=('HEIGHT', 'WIDTH'))
    p.add_argument('--noise-px', type=float, nargs=2, default=[2.0, 5.0],
                   metavar=('MIN', 'MAX'), help='range of the per-view keypoint noise sigma')
    p.add_argument('--dropout', type=float, default=0.1, help='share of missing keypoints')
    p.add_argument('--max-frames', type=int, help='use only the first frames of each clip')
    p.add_argument('--licence', help='licence text stored in the files (default: the '
                   'LICENSE* files beside the BVH files)')
    add_config(p)
    p.set_defaults(func=_cmd_make_mocap_set)

    p = sub.add_parser('photo', help='photo -> MediaPipe keypoints -> refined body; writes '
                       'an overlay PNG, a 3D view PNG and a results .npz (docs/detector.md)')
    p.add_argument('image', help='photo file, e.g. messi5.jpg of Debian opencv-doc')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--focal-px', type=float, help='focal length (default: EXIF, else max(H, W))')
    add_config(p)
    p.set_defaults(func=_cmd_photo)

    p = sub.add_parser('video', help='video file or image folder -> per-frame results and '
                       'overlay frames/video (docs/detector.md)')
    p.add_argument('path', help='video file or folder of images')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--focal-px', type=float, help='focal length (default: max(H, W))')
    p.add_argument('--max-frames', type=int, help='stop after this many frames')
    p.add_argument('--stride', type=int, default=1, help='use every N-th frame')
    p.add_argument('--boxes', choices=('none', 'hog'), default='none',
                   help='none: MediaPipe on the whole frame, one person tracked across '
                   'frames (one person filling a good part of the view); hog: MediaPipe in '
                   "each of OpenCV's HOG pedestrian boxes, several people per frame refined "
                   'in one batch (wide views of small upright people such as vtest.avi; '
                   'about 1.5 s more per frame on a CPU)')
    add_config(p)
    p.set_defaults(func=_cmd_video)

    from scorehmr_ros.training.commands import add_eval_parser, add_train_parser

    add_train_parser(sub)
    add_eval_parser(sub)
    return parser


def _config(args):
    overrides = {}
    for item in args.set:
        if '=' not in item:
            raise ValueError(f'--set expects SECTION.KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return load_config(args.config, overrides)


def _cmd_refine(args) -> int:
    from scorehmr_ros.npz_io import load_observations, save_result
    from scorehmr_ros.refiner import Refiner

    refiner = Refiner(_config(args))
    obs = load_observations(args.input)
    LOG.info('weights: %s', refiner.describe_weights())
    result = refiner.refine(obs)
    save_result(args.output, result)
    LOG.info('refined %d row(s) x %d sample(s) in %.2f s -> %s', obs.batch_size,
             result.refined.shape[1], result.info['elapsed_s'], args.output)
    return 0


def _cmd_make_scene(args) -> int:
    from scorehmr_ros.body.model import BodyModel
    from scorehmr_ros.npz_io import save_observations
    from scorehmr_ros.scene import make_scene, SceneSpec

    cfg = _config(args)
    body = BodyModel.from_config(cfg.body.model_path, cfg.body.extra_regressor)
    scene = make_scene(body, SceneSpec(num_people=args.people, cond_dim=args.cond_dim),
                       seed=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_observations(args.output, scene.obs)
    LOG.info('wrote %s (%d people, body: %s)', args.output, args.people, body.name)
    return 0


def _cmd_export(args) -> int:
    import os

    from scorehmr_ros.backends.onnx_export import check_onnx, export_onnx
    from scorehmr_ros.refiner import _make_denoiser

    cfg = _config(args)
    denoiser, info = _make_denoiser(cfg)
    paths = export_onnx(denoiser, args.output_dir)
    for key in ('denoiser', 'prepare', 'step'):
        LOG.info('%s: %s (ops: %s)', key, paths[key], ', '.join(check_onnx(paths[key])))
    if args.tensorrt:
        from scorehmr_ros.backends.tensorrt_backend import build_engine

        engine = build_engine(paths['denoiser'],
                              os.path.join(args.output_dir, 'denoiser.engine'),
                              tuple(args.profile))
        LOG.info('TensorRT engine: %s (rows %s)', engine, args.profile)
    LOG.info('exported %s weights', info['kind'])
    return 0


def _cmd_convert_smpl(args) -> int:
    from scorehmr_ros.body.smpl_file import convert_smpl_pickle_to_npz

    convert_smpl_pickle_to_npz(args.input, args.output)
    LOG.info('wrote %s', args.output)
    return 0


def _cmd_make_mocap_set(args) -> int:
    import torch

    from scorehmr_ros.body.model import BodyModel
    from scorehmr_ros.mocap.dataset import (
        default_licence, make_mocap_set, MocapSetSpec, write_mocap_set)

    cfg = _config(args)
    body = BodyModel.from_config(cfg.body.model_path, cfg.body.extra_regressor,
                                 dtype=torch.float64)
    spec = MocapSetSpec(
        views=args.views, holdout_fraction=args.holdout_fraction, gap_s=args.gap_s,
        fps=args.fps, layout=args.layout, image_hw=tuple(args.image_size),
        noise_px=tuple(args.noise_px), dropout=args.dropout, max_frames=args.max_frames)
    result = make_mocap_set(args.bvh, spec, seed=args.seed, body=body,
                            licence=args.licence or default_licence(args.bvh))
    train_path, eval_path = write_mocap_set(result, args.out)
    LOG.info('wrote %s (%d rows) and %s (%d rows); body: %s', train_path,
             result.stats['train_rows'], eval_path, result.stats['eval_rows'], body.name)
    return 0


def _cmd_photo(args) -> int:
    from scorehmr_ros.perception.mediapipe_pose import mediapipe_available
    from scorehmr_ros.photo_demo import run_photo

    if not mediapipe_available():
        raise ValueError('the photo demo needs the detector extra: .venv/bin/pip install '
                         '--no-deps -r requirements-nodeps.txt')
    return run_photo(args.image, args.out, _config(args), focal_px=args.focal_px,
                     out=sys.stdout)


def _cmd_video(args) -> int:
    from scorehmr_ros.perception.mediapipe_pose import mediapipe_available
    from scorehmr_ros.photo_demo import run_video

    if not mediapipe_available():
        raise ValueError('the video demo needs the detector extra: .venv/bin/pip install '
                         '--no-deps -r requirements-nodeps.txt')
    return run_video(args.path, args.out, _config(args), focal_px=args.focal_px,
                     max_frames=args.max_frames, stride=args.stride, out=sys.stdout,
                     person_boxes=args.boxes)


def _cmd_demo(args) -> int:
    import importlib.util
    import os

    from scorehmr_ros.demo import embedded_default, run_demo

    # Unset weights/body: the embedded default (shipped prior, anny body); --set wins.
    config = embedded_default(_config(args))
    code = run_demo(config, num_people=args.people, seed=args.seed,
                    output_dir=args.output_dir, out=sys.stdout)
    if code:
        return code
    if args.no_ros:
        pass
    elif importlib.util.find_spec('rclpy') is None:
        LOG.warning('part 2 (ROS 2 node on a synthetic bag) skipped: rclpy is not installed '
                    '(run scripts/setup_ros.sh, or bash scripts/demo.sh which does)')
    else:
        from scorehmr_ros.demo_ros import run_ros_demo

        print('\nscorehmr demo, part 2: a synthetic 3-camera rosbag2 replayed through the '
              'ROS 2 node (node config: config/node.yaml, fast engine path, 2 outer '
              'iterations, with the weights and body of part 1; calibrated from the '
              '/tf_static of the bag, online temporal mode)', flush=True)
        run_ros_demo(os.path.join(args.output_dir, 'ros'), out=sys.stdout,
                     num_frames=args.ros_frames, config=config)
    if not args.no_photo:
        code = _demo_photo(args, config)
    if not args.no_video:
        # A photo without a person (exit 1) does not stop part 4; the worst code is kept.
        code = max(code, _demo_video(args, config))
    return code


def _demo_media(given, sample: str, part: str, flag: str):
    """
    Find the input of a demo part that needs MediaPipe; None (logged) where it cannot run.

    :param given: the user's ``--photo`` / ``--video`` path, or None.
    :param sample: opencv-doc sample file used otherwise.
    :param part: the part's name in the log line.
    :param flag: ``photo`` or ``video`` (the option to name).
    :return: a path, or None when MediaPipe or the input is missing.
    """
    import importlib.util

    from scorehmr_ros.perception.images import sample_media_path

    path = given or sample_media_path(sample)
    if importlib.util.find_spec('mediapipe') is None or path is None:
        LOG.warning('%s skipped: %s', part, 'mediapipe is not installed '
                    '(requirements-nodeps.txt)' if path else f'no {flag}: pass --{flag} or let '
                    'scripts/setup.sh fetch opencv-doc sample media')
        return None
    return path


def _demo_photo(args, config) -> int:
    """Part 3 of the demo: a real photo; skipped with a reason where it cannot run."""
    import os

    photo = _demo_media(args.photo, 'messi5.jpg', 'part 3 (real photo)', 'photo')
    if photo is None:
        return 0
    from scorehmr_ros.photo_demo import run_photo

    print('\nscorehmr demo, part 3: MediaPipe 2D keypoints on a real photo, body started '
          'from the keypoints and refined (2 outer iterations; without model.checkpoint: '
          "the small open mocap prior on the anny body, not the paper's weights)",
          flush=True)
    photo_config = config.replace(sampler={'outer_iters': min(config.sampler.outer_iters, 2)})
    return run_photo(photo, os.path.join(args.output_dir, 'photo'), photo_config)


#: Part 4 of the demo: frames used from the video (first, then every DEMO_VIDEO_STRIDE-th).
DEMO_VIDEO_FRAMES = 3
DEMO_VIDEO_STRIDE = 10


def _demo_video(args, config) -> int:
    """Part 4 of the demo: a few video frames with HOG boxes; skipped where it cannot run."""
    import os

    video = _demo_media(args.video, 'vtest.avi', 'part 4 (video, several people)', 'video')
    if video is None:
        return 0
    from scorehmr_ros.photo_demo import run_video

    print(f'\nscorehmr demo, part 4: {DEMO_VIDEO_FRAMES} frames (every '
          f"{DEMO_VIDEO_STRIDE}th) of {os.path.basename(video)}; OpenCV's HOG pedestrian boxes, "
          'MediaPipe keypoints in each, all people of a frame refined in one batch (2 outer '
          'iterations); the full video: scorehmr video PATH --out DIR --boxes hog',
          flush=True)
    video_config = config.replace(sampler={'outer_iters': min(config.sampler.outer_iters, 2)})
    return run_video(video, os.path.join(args.output_dir, 'video'), video_config,
                     max_frames=DEMO_VIDEO_FRAMES, stride=DEMO_VIDEO_STRIDE,
                     person_boxes='hog')


if __name__ == '__main__':
    sys.exit(main())
