"""Reading and writing video files with OpenCV (frames as uint8 RGB).

OpenCV is imported inside the functions that need it so that importing the
motion package (for :func:`mtssl_tf.motion.motion_dataset`) stays cheap.
"""
from __future__ import annotations

import glob as glob_lib
import os
from typing import Iterator, List, Optional, Sequence

import numpy as np


class VideoReadError(IOError):
  """A video file is missing, cannot be opened or holds no decodable frame."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"cannot read video {path!r}: {reason}")
    self.path = path
    self.reason = reason


def _resize_to_max_side(frame: np.ndarray, max_side: Optional[int]):
  import cv2  # pylint: disable=g-import-not-at-top
  if max_side is None:
    return frame
  h, w = frame.shape[:2]
  scale = max_side / max(h, w)
  if scale >= 1:
    return frame
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  # Area interpolation averages the pixels it drops: no aliasing, which
  # would otherwise show up as spurious flow.
  return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def iter_video_frames(path: str, max_side: Optional[int] = None,
                      max_frames: Optional[int] = None
                      ) -> Iterator[np.ndarray]:
  """Yields the frames of a video file as uint8 RGB [H, W, 3] arrays.

  Args:
    path: the video file (any container/codec OpenCV's FFmpeg backend reads).
    max_side: downscale so that the longer side is at most this; ``None``
      keeps the decoded size.
    max_frames: stop after this many frames; ``None`` reads all.

  Raises:
    VideoReadError: the file is missing, cannot be opened, or not a single
      frame can be decoded. Decoding stops quietly at the first frame that
      fails after that (a truncated file gives its readable prefix).
  """
  import cv2  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  if not os.path.exists(path):
    raise VideoReadError(path, "no file matches this pattern"
                         if glob_lib.has_magic(path) else "no such file")
  if os.path.isdir(path):
    raise VideoReadError(path, "is a directory")
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise VideoReadError(
          path, "OpenCV cannot open it (not a video, corrupt, or an "
          "unsupported codec)")
    count = 0
    while max_frames is None or count < max_frames:
      ok, frame = capture.read()
      if not ok or frame is None:
        break
      if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
      elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
      else:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
      count += 1
      yield _resize_to_max_side(frame, max_side)
    if count == 0 and (max_frames is None or max_frames > 0):
      raise VideoReadError(path, "no frame could be decoded")
  finally:
    capture.release()


def read_video(path: str, max_side: Optional[int] = None,
               max_frames: Optional[int] = None) -> np.ndarray:
  """All frames of a video as uint8 RGB [T, H, W, 3]; see iter_video_frames."""
  return np.stack(list(iter_video_frames(path, max_side, max_frames)))


def write_video(path: str, frames: Sequence[np.ndarray], fps: float = 10.0,
                fourcc: str = "MJPG") -> str:
  """Writes uint8 RGB frames [T, H, W, 3] to a video file (tests, demos).

  Raises:
    IOError: OpenCV cannot write ``path`` with ``fourcc``.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(
        f"frames must be uint8 [T, H, W, 3], got {frames.dtype} "
        f"{frames.shape}")
  h, w = frames.shape[1:3]
  writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*fourcc),
                           fps, (w, h))
  if not writer.isOpened():
    raise IOError(f"OpenCV cannot write video {path!r} with codec {fourcc}")
  try:
    for frame in frames:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  finally:
    writer.release()
  return os.fspath(path)


def expand_video_patterns(patterns: Sequence[str]) -> List[str]:
  """Paths from a list of paths and glob patterns, in order, deduplicated.

  A missing plain path and a pattern that matches nothing are kept as they
  are, so that reading them reports them by name.
  """
  paths: List[str] = []
  for pattern in patterns:
    pattern = pattern.strip()
    if not pattern:
      continue
    matched = sorted(glob_lib.glob(pattern)) if glob_lib.has_magic(pattern) \
        else []
    if matched:
      paths.extend(matched)
    else:
      paths.append(pattern)
  return list(dict.fromkeys(paths))
