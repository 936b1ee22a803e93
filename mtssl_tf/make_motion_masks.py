r"""Turns videos into (frame, motion mask) TFRecords for motion segmentation.

Usage::

  python -m mtssl_tf.make_motion_masks \
      --videos='/data/videos/*.mp4' --output_dir=/data/motion_masks \
      [--max_side=320] [--every=5] [--max_frames=0] [--offsets=-2,-1,1,2] \
      [--threshold=1.0] [--min_agreement=0.75] [--image_format=jpeg] \
      [--preview=/tmp/preview.png] [--flagfile=motion.cfg]

One ``<video name>.tfrecord`` file per video with moving frames (record
format: :mod:`mtssl_tf.motion`), and ``motion_masks_summary.json`` with the
settings and one report per video. Read the records with
:func:`mtssl_tf.motion.motion_dataset`.

Per video the command prints one line: frames read, considered, written,
static (empty mask) and unreliable (camera model failed). A video without
motion is reported as ``static`` and writes nothing. A video that cannot be
read (missing, corrupt, unsupported codec) is reported as ``ERROR`` with its
path, and the command goes on with the other videos.

Exit status: 0 when at least one video was read (even if all were static),
1 when no video could be read at all (or no file matched), 2 for bad flags.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Callable, List, Optional, Sequence

from absl import flags

from mtssl_tf import motion

SUMMARY_NAME = "motion_masks_summary.json"


def build_flags() -> flags.FlagValues:
  """A fresh flag set (so that ``main`` can run several times in-process)."""
  fv = flags.FlagValues()
  defaults = motion.MotionMaskConfig()
  flags.DEFINE_list(
      "videos", None, "Comma-separated video paths or glob patterns.",
      flag_values=fv)
  flags.DEFINE_string("output_dir", None, "Where the TFRecords are written.",
                      flag_values=fv)
  flags.DEFINE_integer(
      "max_side", defaults.max_side,
      "Downscale frames so the longer side is at most this (0 = keep).",
      flag_values=fv)
  flags.DEFINE_integer("every", 1, "Make a mask for every N-th frame.",
                       flag_values=fv)
  flags.DEFINE_integer("max_frames", 0,
                       "Read at most this many frames per video (0 = all).",
                       flag_values=fv)
  flags.DEFINE_list("offsets", [str(o) for o in defaults.offsets],
                    "Frame offsets of the flow pairs (consistency check).",
                    flag_values=fv)
  flags.DEFINE_float("threshold", defaults.threshold,
                     "Residual flow threshold, pixels per frame of offset.",
                     flag_values=fv)
  flags.DEFINE_float("min_agreement", defaults.min_agreement,
                     "Fraction of the pairs in which a pixel must move.",
                     flag_values=fv)
  flags.DEFINE_float("ransac_threshold", defaults.ransac_threshold,
                     "RANSAC inlier distance (pixels per frame of offset).",
                     flag_values=fv)
  flags.DEFINE_float("min_area", defaults.min_area,
                     "Drop moving regions smaller than this frame fraction.",
                     flag_values=fv)
  flags.DEFINE_float("max_area", defaults.max_area,
                     "Skip frames where more than this fraction moves.",
                     flag_values=fv)
  flags.DEFINE_integer("winsize", defaults.winsize,
                       "Farneback averaging window (pixels).", flag_values=fv)
  flags.DEFINE_enum("image_format", "jpeg", list(motion.IMAGE_FORMATS),
                    "How frames are encoded in the records.", flag_values=fv)
  flags.DEFINE_bool("keep_static", False,
                    "Also write frames whose mask is empty.", flag_values=fv)
  flags.DEFINE_string(
      "preview", None,
      "Optional PNG path: the first --preview_frames written frames with "
      "their masks overlaid.", flag_values=fv)
  flags.DEFINE_integer("preview_frames", 6, "Frames in the preview.",
                       flag_values=fv)
  flags.DEFINE_integer("preview_columns", 3, "Columns of the preview grid.",
                       flag_values=fv)
  flags.DEFINE_float("preview_scale", 1.0,
                     "Resize factor of the preview image (e.g. 0.6 for a "
                     "smaller file).", flag_values=fv)
  return fv


def config_from_flags(fv: flags.FlagValues) -> motion.MotionMaskConfig:
  try:
    offsets = tuple(int(o) for o in fv.offsets)
  except ValueError as e:
    raise ValueError(f"--offsets must be integers, got {fv.offsets}") from e
  return motion.MotionMaskConfig(
      max_side=fv.max_side or None, offsets=offsets, threshold=fv.threshold,
      min_agreement=fv.min_agreement, ransac_threshold=fv.ransac_threshold,
      min_area=fv.min_area, max_area=fv.max_area, winsize=fv.winsize)


def _unique_name(path: str, taken: set) -> str:
  stem = os.path.splitext(os.path.basename(path))[0] or "video"
  name, k = stem, 1
  while name in taken:
    name = f"{stem}_{k}"
    k += 1
  taken.add(name)
  return name


def run(videos: Sequence[str], output_dir: str,
        config: motion.MotionMaskConfig = motion.MotionMaskConfig(),
        every: int = 1, max_frames: Optional[int] = None,
        image_format: str = "jpeg", keep_static: bool = False,
        preview: Optional[str] = None, preview_frames: int = 6,
        preview_columns: int = 3, preview_scale: float = 1.0,
        log: Callable[[str], None] = print) -> List[motion.VideoReport]:
  """Processes every video; returns one report per video (errors included).

  Args:
    videos: paths and glob patterns (see
      :func:`mtssl_tf.motion.expand_video_patterns`).
    output_dir: receives ``<name>.tfrecord`` per video with motion and
      ``motion_masks_summary.json``.
    preview: optional PNG path for a grid of written frames with masks.
    log: where the per-video lines go.
  """
  paths = motion.expand_video_patterns(videos)
  reports: List[motion.VideoReport] = []
  taken: set = set()
  shown: List[motion.FrameMask] = []

  def collect(item: motion.FrameMask):
    if preview and len(shown) < preview_frames:
      shown.append(item)

  for path in paths:
    try:
      report = motion.process_video(
          path, output_dir, config, every=every, max_frames=max_frames,
          image_format=image_format, keep_static=keep_static,
          output_name=_unique_name(path, taken), callback=collect)
    except motion.VideoReadError as e:
      report = motion.VideoReport(path=path, status="error", error=str(e))
    except ValueError as e:
      # Per-video problems found while decoding (frames too small, frame
      # size changing mid-stream): report, name the file, go on.
      report = motion.VideoReport(path=path, status="error",
                                  error=f"cannot process video {path!r}: {e}")
    reports.append(report)
    log(report.summary())

  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, SUMMARY_NAME), "w") as f:
    json.dump({"settings": {"config": _config_dict(config), "every": every,
                            "max_frames": max_frames,
                            "image_format": image_format,
                            "keep_static": keep_static},
               "videos": [r.__dict__ for r in reports]}, f, indent=2)
  if preview:
    if shown:
      grid = motion.preview_grid(shown, preview_columns)
      if preview_scale != 1.0:
        import cv2  # pylint: disable=g-import-not-at-top
        h, w = grid.shape[:2]
        grid = cv2.resize(grid, (max(1, round(w * preview_scale)),
                                 max(1, round(h * preview_scale))),
                          interpolation=cv2.INTER_AREA)
      _write_png(preview, grid)
      log(f"preview of {len(shown)} frames -> {preview}")
    else:
      log("no frame with motion: no preview written")
  return reports


def _config_dict(config: motion.MotionMaskConfig) -> dict:
  d = dict(config.__dict__)
  d["offsets"] = list(d["offsets"])
  return d


def _write_png(path: str, image) -> None:
  import cv2  # pylint: disable=g-import-not-at-top
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_PNG_COMPRESSION, 9]):
    raise IOError(f"cannot write {path!r}")


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
    if not fv.videos:
      raise flags.Error("--videos is required")
    if not fv.output_dir:
      raise flags.Error("--output_dir is required")
    if fv.every < 1:
      raise flags.Error(f"--every must be >= 1, got {fv.every}")
    if fv.max_frames < 0:
      raise flags.Error(f"--max_frames must be >= 0, got {fv.max_frames}")
    if fv.preview_frames < 1 or fv.preview_columns < 1:
      raise flags.Error("--preview_frames and --preview_columns must be >= 1")
    if not 0 < fv.preview_scale <= 4:
      raise flags.Error(
          f"--preview_scale must be in (0, 4], got {fv.preview_scale}")
    config = config_from_flags(fv)
  except (flags.Error, ValueError) as e:
    print(f"make_motion_masks: {e}", file=sys.stderr)
    return 2

  reports = run(fv.videos, fv.output_dir, config, every=fv.every,
                max_frames=fv.max_frames or None,
                image_format=fv.image_format, keep_static=fv.keep_static,
                preview=fv.preview, preview_frames=fv.preview_frames,
                preview_columns=fv.preview_columns,
                preview_scale=fv.preview_scale, log=log)
  if not reports:
    log(f"no video matches {fv.videos}")
    return 1
  counts = {s: sum(r.status == s for r in reports)
            for s in ("ok", "static", "unreliable", "error")}
  written = sum(r.frames_written for r in reports)
  log(f"{len(reports)} videos: {counts['ok']} with motion ({written} frames "
      f"written), {counts['static']} static, {counts['unreliable']} "
      f"unreliable, {counts['error']} unreadable")
  return 1 if counts["error"] == len(reports) else 0


if __name__ == "__main__":
  sys.exit(main())
