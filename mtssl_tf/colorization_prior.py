"""Computes the colorization task's ab prior (and bins) from your images.

Command::

    python -m mtssl_tf.colorization_prior --images='photos/*.jpg' \\
        --output=prior.npz [--derive_bins] [--grey_mask=image]

The work is :func:`mtssl_tf.data.color_statistics.write_prior_file`; the
bins, prior and weights are :mod:`mtssl_tf.tasks.colorization_bins`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from mtssl_tf.data.color_statistics import write_prior_file
from mtssl_tf.tasks.colorization_bins import GREY_MASK_MODES, GRID_STEP


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m mtssl_tf.colorization_prior",
      description="Compute the colorization task's empirical ab prior (and, "
      "with --derive_bins, its bin set) from a folder or glob of images.")
  parser.add_argument("--images", required=True,
                      help="a folder (searched recursively) or a glob pattern "
                      "of .jpg/.png/.bmp/.gif images")
  parser.add_argument("--output", required=True, help="the .npz to write")
  parser.add_argument("--derive_bins", action="store_true",
                      help="derive the bins from the images (grid cells with "
                      ">= --min_count pixels) instead of the 313 of Zhang et "
                      "al.")
  parser.add_argument("--min_count", type=int, default=1,
                      help="pixels a grid cell needs to become a bin "
                      "(--derive_bins)")
  parser.add_argument("--grid_step", type=float, default=GRID_STEP,
                      help="grid spacing of derived bins, in ab units")
  parser.add_argument("--sigma", type=float, default=5.0,
                      help="Gaussian smoothing of the prior, in ab units")
  parser.add_argument("--grey_mask", choices=GREY_MASK_MODES, default="image",
                      help="leave out grey images (Zhang et al.), grey pixels, "
                      "or nothing; match the task's grey_mask")
  parser.add_argument("--grey_threshold", type=float, default=5.0,
                      help="|a| or |b| above this is colour")
  parser.add_argument("--max_images", type=int, default=0,
                      help="use at most this many images (0: all)")
  return parser.parse_args(argv)




def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  print(write_prior_file(
      args.images, args.output, derive=args.derive_bins,
      min_count=args.min_count, grid_step=args.grid_step, sigma=args.sigma,
      grey_mask=args.grey_mask, grey_threshold=args.grey_threshold,
      max_images=args.max_images))
  return 0


if __name__ == "__main__":
  sys.exit(main())
