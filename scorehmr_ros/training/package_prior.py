"""
Turn a trained ``denoiser.pt`` into the shipped prior file (``scorehmr_ros/models/``).

``python -m scorehmr_ros.training.package_prior runs/kp/denoiser.pt
scorehmr_ros/models/mocap_prior_coco17.pt --body anny`` keeps the weights (stored as
float16 to halve the file; they load into the float32 network), the training meta, and
adds what every output that names the weights shows: a description saying that this is
a small open mocap prior and not the paper's weights, and how to switch.
"""

import argparse
import sys
from typing import List, Optional

import torch

from scorehmr_ros.diffusion.checkpoint import load_denoiser, save_denoiser

DESCRIPTION = ("small open mocap prior (not the paper's weights; for ScoreHMR set "
               'model.checkpoint to the released model-100.pt with PARE features and '
               'body.model_path to SMPL)')


def package_prior(src: str, dst: str, body: str, half: bool = True) -> dict:
    """
    Write the shipped prior.

    :param src: ``denoiser.pt`` written by ``scorehmr train``.
    :param dst: output file.
    :param body: the body the training data was retargeted to (``body.model_path``).
    :param half: store the weights as float16.
    :return: the meta written.
    """
    denoiser, meta = load_denoiser(src)
    meta.pop('checkpoint_format', None)
    meta.update({'description': DESCRIPTION, 'body': body,
                 'weights_dtype': 'float16' if half else 'float32'})
    if half:
        denoiser = denoiser.to(torch.float16)
    save_denoiser(dst, denoiser, meta)
    return meta


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('src', help='denoiser.pt of scorehmr train')
    parser.add_argument('dst', help='output .pt')
    parser.add_argument('--body', required=True, help='body.model_path of the training data')
    parser.add_argument('--float32', action='store_true', help='keep float32 weights')
    args = parser.parse_args(argv)
    meta = package_prior(args.src, args.dst, args.body, half=not args.float32)
    print(f'wrote {args.dst}: {meta}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
