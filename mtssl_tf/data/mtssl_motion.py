"""``python -m mtssl_tf.data.mtssl_motion``: prepares the ``mtssl_motion``
TFDS dataset (frames + motion masks) from a folder of your videos.

Usage::

  python -m mtssl_tf.data.mtssl_motion --manual_dir=/data/videos \
      --data_dir=/data/tfds

The builder, its features and splits are
:mod:`mtssl_tf.data.mtssl_motion_builder`; importing this module (or that
one) registers it with TFDS::

  import tensorflow_datasets as tfds
  import mtssl_tf.data.mtssl_motion  # registers the builder
  ds = tfds.load("mtssl_motion", split="train", data_dir="/data/tfds")

Exit status: 0 when prepared, 2 when the folder holds no usable video.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

# The builder's names stay importable from here (registration, old imports).
from mtssl_tf.data.mtssl_motion_builder import (SPLITS, VIDEO_EXTENSIONS,
                                                MtsslMotion,
                                                MtsslMotionConfig, prepare,
                                                videos_by_split)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m mtssl_tf.data.mtssl_motion",
      description="Prepare the mtssl_motion TFDS dataset (frames + motion "
                  "masks) from a folder of videos.")
  parser.add_argument("--manual_dir", required=True,
                      help="folder of videos, or of train/ validation/ "
                           "test/ sub-folders of videos")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data_dir (default ~/tensorflow_datasets)")
  args = parser.parse_args(argv)
  try:
    builder = prepare(args.manual_dir, args.data_dir)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for split, info in sorted(builder.info.splits.items()):
    print(f"{split}: {info.num_examples} frames with motion")
  print(f"prepared in {builder.data_dir}")
  return 0


__all__ = ["MtsslMotion", "MtsslMotionConfig", "SPLITS", "VIDEO_EXTENSIONS",
           "main", "prepare", "videos_by_split"]


__all__ = ["MtsslMotion", "MtsslMotionConfig", "SPLITS", "VIDEO_EXTENSIONS",
           "main", "prepare", "videos_by_split"]


if __name__ == "__main__":
  sys.exit(main())
