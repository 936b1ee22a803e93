"""Batch jobs: videos -> motion-mask TFRecord files.

:func:`process_video` makes one video's file, :func:`run_videos` a whole list
(the library behind ``python -m mtssl_tf.make_motion_masks``), and
:func:`cached_motion_records` makes a set of records once into a cache folder
(the trainer's offline sample videos).
"""
from __future__ import annotations

import dataclasses
import glob as glob_lib
import json
import os
from typing import Callable, List, Optional, Sequence, Union

import tensorflow as tf

from mtssl_tf.motion.drawing import preview_grid
from mtssl_tf.motion.flow import MotionMaskConfig
from mtssl_tf.motion.masks import FrameMask, iter_motion_masks
from mtssl_tf.motion.records import write_tfrecord
from mtssl_tf.motion.video import (VideoReadError, expand_video_patterns,
                                   iter_video_frames)


@dataclasses.dataclass
class VideoReport:
  """What :func:`process_video` did with one video.

  ``status`` is ``"ok"`` (records written), ``"static"`` (no frame with
  motion; nothing written), ``"unreliable"`` (motion only in frames where the
  camera model failed; nothing written) or ``"error"`` (``error`` says why).
  """

  path: str
  status: str = "ok"
  output: Optional[str] = None
  frames_read: int = 0
  frames_considered: int = 0
  frames_written: int = 0
  frames_static: int = 0
  frames_unreliable: int = 0
  error: Optional[str] = None

  def summary(self) -> str:
    if self.status == "error":
      return f"{self.path}: ERROR {self.error}"
    text = (f"{self.path}: {self.status}, {self.frames_read} frames read, "
            f"{self.frames_considered} considered, {self.frames_written} "
            f"written, {self.frames_static} static, {self.frames_unreliable} "
            "unreliable")
    if self.status == "static":
      text += " (no moving object found; nothing written)"
    elif self.status == "unreliable":
      text += (" (camera motion could not be compensated in any frame with "
               "motion; nothing written)")
    elif self.output:
      text += f" -> {self.output}"
    return text


def process_video(path: str, output_dir: str,
                  config: MotionMaskConfig = MotionMaskConfig(),
                  every: int = 1, max_frames: Optional[int] = None,
                  image_format: str = "jpeg", keep_static: bool = False,
                  output_name: Optional[str] = None,
                  callback: Optional[Callable[[FrameMask], None]] = None
                  ) -> VideoReport:
  """Computes the motion masks of one video and writes its TFRecord file.

  Frames with motion are written to ``output_dir/<name>.tfrecord`` (static
  frames too with ``keep_static``; unreliable ones never). A video without
  any moving frame is reported as ``"static"`` and writes no file.

  Raises:
    VideoReadError: the video cannot be read (its path is in the message).
  """
  report = VideoReport(path=os.fspath(path))
  name = output_name or os.path.splitext(os.path.basename(path))[0]
  out_path = os.path.join(output_dir, name + ".tfrecord")
  frames_read = 0

  def counted_frames():
    nonlocal frames_read
    for frame in iter_video_frames(path, config.max_side, max_frames):
      frames_read += 1
      yield frame

  def selected():
    for item in iter_motion_masks(counted_frames(), config, every):
      report.frames_considered += 1
      if item.status == "static":
        report.frames_static += 1
      elif item.status == "unreliable":
        report.frames_unreliable += 1
      if item.status == "moving" or (keep_static and item.status == "static"):
        if callback is not None:
          callback(item)
        yield item

  items = selected()
  # The file is only created once a frame is to be written, so a static video
  # leaves nothing behind.
  first = next(items, None)
  if first is None:
    report.frames_read = frames_read
    report.status = "unreliable" if report.frames_unreliable else "static"
    return report
  tf.io.gfile.makedirs(output_dir)

  def chained():
    yield first
    yield from items

  report.frames_written = write_tfrecord(
      out_path, chained(), image_format, os.path.basename(path))
  report.frames_read = frames_read
  if report.frames_written == report.frames_static and keep_static:
    # Only static frames were kept: the video still has no motion.
    report.status = "static"
  report.output = out_path
  return report


# ---------------------------------------------------------------------------
# Many videos (``python -m mtssl_tf.make_motion_masks``).

SUMMARY_NAME = "motion_masks_summary.json"


def _unique_name(path: str, taken: set) -> str:
  stem = os.path.splitext(os.path.basename(path))[0] or "video"
  name, k = stem, 1
  while name in taken:
    name = f"{stem}_{k}"
    k += 1
  taken.add(name)
  return name


def config_from_settings(offsets: Sequence[Union[int, str]] = (-2, -1, 1, 2),
                         max_side: Optional[int] = 320,
                         **settings) -> MotionMaskConfig:
  """A :class:`MotionMaskConfig` from command-line style settings.

  ``offsets`` may be strings (``--offsets=-2,-1,1,2``), ``max_side`` 0 means
  keep the decoded size; the other settings are config fields.

  Raises:
    ValueError: an offset is not an integer, or the config is invalid.
  """
  try:
    offsets = tuple(int(o) for o in offsets)
  except ValueError as e:
    raise ValueError(f"--offsets must be integers, got {offsets}") from e
  return MotionMaskConfig(max_side=max_side or None, offsets=offsets,
                          **settings)


def check_run_settings(every: int = 1, max_frames: Optional[int] = None,
                       preview_frames: int = 6, preview_columns: int = 3,
                       preview_scale: float = 1.0) -> None:
  """Raises ValueError naming the first bad batch-job setting."""
  if every < 1:
    raise ValueError(f"--every must be >= 1, got {every}")
  if max_frames is not None and max_frames < 0:
    raise ValueError(f"--max_frames must be >= 0, got {max_frames}")
  if preview_frames < 1 or preview_columns < 1:
    raise ValueError("--preview_frames and --preview_columns must be >= 1")
  if not 0 < preview_scale <= 4:
    raise ValueError(f"--preview_scale must be in (0, 4], got {preview_scale}")


def run_videos(videos: Sequence[str], output_dir: str,
               config: MotionMaskConfig = MotionMaskConfig(),
               every: int = 1, max_frames: Optional[int] = None,
               image_format: str = "jpeg", keep_static: bool = False,
               preview: Optional[str] = None, preview_frames: int = 6,
               preview_columns: int = 3, preview_scale: float = 1.0,
               log: Callable[[str], None] = print) -> List[VideoReport]:
  """Processes every video; returns one report per video (errors included).

  Args:
    videos: paths and glob patterns (see
      :func:`mtssl_tf.motion.expand_video_patterns`).
    output_dir: receives ``<name>.tfrecord`` per video with motion and
      ``motion_masks_summary.json``.
    preview: optional PNG path for a grid of written frames with masks.
    log: where the per-video lines go.
  """
  paths = expand_video_patterns(videos)
  reports: List[VideoReport] = []
  taken: set = set()
  shown: List[FrameMask] = []

  def collect(item: FrameMask):
    if preview and len(shown) < preview_frames:
      shown.append(item)

  for path in paths:
    try:
      report = process_video(
          path, output_dir, config, every=every, max_frames=max_frames,
          image_format=image_format, keep_static=keep_static,
          output_name=_unique_name(path, taken), callback=collect)
    except VideoReadError as e:
      report = VideoReport(path=path, status="error", error=str(e))
    except ValueError as e:
      # Per-video problems found while decoding (frames too small, frame
      # size changing mid-stream): report, name the file, go on.
      report = VideoReport(path=path, status="error",
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
      grid = preview_grid(shown, preview_columns)
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


def summarize_reports(reports: Sequence[VideoReport],
                      log: Callable[[str], None] = print) -> int:
  """Logs the one-line total of a run; returns the command's exit status
  (0 when at least one video was read, else 1)."""
  counts = {s: sum(r.status == s for r in reports)
            for s in ("ok", "static", "unreliable", "error")}
  written = sum(r.frames_written for r in reports)
  log(f"{len(reports)} videos: {counts['ok']} with motion ({written} frames "
      f"written), {counts['static']} static, {counts['unreliable']} "
      f"unreliable, {counts['error']} unreadable")
  return 1 if counts["error"] == len(reports) else 0


def _config_dict(config: MotionMaskConfig) -> dict:
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


# ---------------------------------------------------------------------------
# Records made once into a cache folder.


def cached_motion_records(cache_dir: str,
                          videos: Union[Sequence[str],
                                        Callable[[], Sequence[str]]],
                          config: MotionMaskConfig = MotionMaskConfig(),
                          every: int = 1,
                          log: Callable[[str], None] = print) -> str:
  """The motion-mask TFRecords of ``videos``, made once in ``cache_dir``.

  When ``cache_dir`` already holds ``*.tfrecord`` files they are reused as
  they are. Otherwise every video is processed (:func:`process_video`).

  Args:
    cache_dir: the folder of the records.
    videos: the video paths, or a function returning them (only called when
      the cache is empty, so listing them may be costly or fail).
    config, every: see :func:`process_video`.
    log: one line per video.

  Returns:
    The glob of the records.

  Raises:
    FileNotFoundError: no video gave a single record.
  """
  pattern = os.path.join(cache_dir, "*.tfrecord")
  if glob_lib.glob(pattern):
    return pattern
  os.makedirs(cache_dir, exist_ok=True)
  if callable(videos):
    videos = videos()
  for path in videos:
    report = process_video(path, cache_dir, config, every=every)
    log(f"motion masks: {os.path.basename(path)}: {report.status}, "
        f"{report.frames_written} frames written")
  if not glob_lib.glob(pattern):
    raise FileNotFoundError(
        f"no motion-mask records could be made from the videos "
        f"{videos} in {cache_dir}")
  return pattern
