r"""Turns videos into (frame, motion mask) TFRecords for motion segmentation.

Usage::

  python -m mtssl_tf.make_motion_masks \
      --videos='/data/videos/*.mp4' --output_dir=/data/motion_masks \
      [--max_side=320] [--every=5] [--max_frames=0] [--offsets=-2,-1,1,2] \
      [--threshold=1.0] [--min_agreement=0.75] [--image_format=jpeg] \
      [--preview=/tmp/preview.png] [--flagfile=motion.cfg]

One ``<video name>.tfrecord`` file per video with moving frames (record
format: :mod:`mtssl_tf.motion`), and ``motion_masks_summary.json``; the job
is :func:`mtssl_tf.motion.run_videos`. One line per video (read, considered,
written, static, unreliable frames); an unreadable video is an ``ERROR``
line with its path and the others go on. Exit status: 0 when at least one
video was read, 1 when none could be (or no file matched), 2 for bad flags.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from absl import flags

from mtssl_tf import motion

SUMMARY_NAME = motion.SUMMARY_NAME


def build_flags() -> flags.FlagValues:
  """A fresh flag set (so that ``main`` can run several times in-process)."""
  fv, d = flags.FlagValues(), motion.MotionMaskConfig()
  define = {"s": flags.DEFINE_string, "i": flags.DEFINE_integer,
            "f": flags.DEFINE_float, "l": flags.DEFINE_list,
            "b": flags.DEFINE_bool}
  for kind, name, default, text in [
      ("l", "videos", None, "Comma-separated video paths or glob patterns."),
      ("s", "output_dir", None, "Where the TFRecords are written."),
      ("i", "max_side", d.max_side, "Longer frame side at most (0 = keep)."),
      ("i", "every", 1, "Make a mask for every N-th frame."),
      ("i", "max_frames", 0, "Frames read per video at most (0 = all)."),
      ("l", "offsets", [str(o) for o in d.offsets], "Flow pair offsets."),
      ("f", "threshold", d.threshold, "Residual flow, px per frame of offset."),
      ("f", "min_agreement", d.min_agreement, "Fraction of pairs that move."),
      ("f", "ransac_threshold", d.ransac_threshold, "RANSAC px per frame."),
      ("f", "min_area", d.min_area, "Drop smaller regions (frame fraction)."),
      ("f", "max_area", d.max_area, "Skip frames where more than this moves."),
      ("i", "winsize", d.winsize, "Farneback averaging window (pixels)."),
      ("b", "keep_static", False, "Also write frames whose mask is empty."),
      ("s", "preview", None, "Optional PNG path: the first --preview_frames "
       "written frames with their masks overlaid."),
      ("i", "preview_frames", 6, "Frames in the preview."),
      ("i", "preview_columns", 3, "Columns of the preview grid."),
      ("f", "preview_scale", 1.0, "Resize factor of the preview image (e.g. "
       "0.6 for a smaller file).")]:
    define[kind](name, default, text, flag_values=fv)
  flags.DEFINE_enum("image_format", "jpeg", list(motion.IMAGE_FORMATS),
                    "How frames are encoded in the records.", flag_values=fv)
  return fv


def main(argv: Optional[Sequence[str]] = None,
         log: Callable[[str], None] = print) -> int:
  """The command; returns its exit status (see the module docstring)."""
  argv = list(sys.argv if argv is None else argv)
  if not argv or argv[0].startswith("--"):
    argv = ["make_motion_masks"] + argv
  fv = build_flags()
  try:
    extra = fv(argv)
    if len(extra) > 1:
      raise flags.Error(f"unexpected arguments: {extra[1:]}")
    for name in ("videos", "output_dir"):
      if not fv[name].value:
        raise flags.Error(f"--{name} is required")
    config = motion.config_from_settings(**{name: fv[name].value for name in (
        "offsets", "max_side", "threshold", "min_agreement",
        "ransac_threshold", "min_area", "max_area", "winsize")})
    job = dict(every=fv.every, max_frames=fv.max_frames,
               preview_frames=fv.preview_frames,
               preview_columns=fv.preview_columns,
               preview_scale=fv.preview_scale)
    motion.check_run_settings(**job)
  except (flags.Error, ValueError) as e:
    print(f"make_motion_masks: {e}", file=sys.stderr)
    return 2
  job["max_frames"] = fv.max_frames or None
  reports = motion.run_videos(fv.videos, fv.output_dir, config, **job,
                              image_format=fv.image_format,
                              keep_static=fv.keep_static, preview=fv.preview,
                              log=log)
  if not reports:
    log(f"no video matches {fv.videos}")
    return 1
  return motion.summarize_reports(reports, log)


if __name__ == "__main__":
  sys.exit(main())
