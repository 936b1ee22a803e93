"""Motion masks of a frame stream: the vote over several flow pairs (steps
5-6 of :mod:`mtssl_tf.motion`)."""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np

from mtssl_tf.motion.flow import (MotionMaskConfig, clean_mask, dense_flow,
                                  moving_pixels)


@dataclasses.dataclass(frozen=True)
class FrameMask:
  """One target frame with its motion mask.

  Attributes:
    index: the frame's index in the video.
    frame: uint8 RGB [H, W, 3] at the processing resolution.
    mask: uint8 [H, W] with values {0, 1}.
    status: ``"moving"``, ``"static"`` (empty mask) or ``"unreliable"``
      (more than ``max_area`` moves).
  """

  index: int
  frame: np.ndarray
  mask: np.ndarray
  status: str

  @property
  def fraction(self) -> float:
    return float(self.mask.mean()) if self.mask.size else 0.0


def _check_frame(frame: Any, index: int) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    raise TypeError(
        f"frame {index}: dtype {frame.dtype} is not supported; expected "
        "uint8 RGB")
  if frame.ndim == 2:
    frame = np.repeat(frame[..., None], 3, axis=-1)
  if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
    raise ValueError(
        f"frame {index}: shape {frame.shape} is not an image; expected "
        "[H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
  if frame.shape[-1] == 1:
    frame = np.repeat(frame, 3, axis=-1)
  elif frame.shape[-1] == 4:
    frame = frame[..., :3]
  if min(frame.shape[:2]) < 16:
    raise ValueError(
        f"frame {index}: {frame.shape[0]}x{frame.shape[1]} is too small for "
        "optical flow (need at least 16x16)")
  return np.ascontiguousarray(frame)


def iter_motion_masks(frames: Iterable[np.ndarray],
                      config: MotionMaskConfig = MotionMaskConfig(),
                      every: int = 1) -> Iterator[FrameMask]:
  """Computes the motion mask of every ``every``-th frame of a frame stream.

  Frames are used as given (resize them beforehand, e.g. with
  :func:`iter_video_frames`'s ``max_side``). Only a window of
  ``max(offsets) - min(offsets) + 1`` frames is kept in memory, so long videos
  stream.

  Args:
    frames: uint8 frames [H, W, 3] (grey and RGBA are converted), all of one
      size; a [T, H, W, 3] array works.
    config: see :class:`MotionMaskConfig`.
    every: stride of the target frames (flow still uses neighbouring frames).

  Yields:
    :class:`FrameMask` for frames 0, every, 2 * every, ... A video of a single
    frame yields one static frame (no pair to compare).
  """
  if every < 1:
    raise ValueError(f"every must be >= 1, got {every}")
  ahead = max([o for o in config.offsets if o > 0], default=0)
  behind = -min([o for o in config.offsets if o < 0], default=0)
  window: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()
  shape = None
  next_target = 0
  count = 0

  def process(t: int) -> FrameMask:
    frame = window[t]
    h, w = frame.shape[:2]
    votes = np.zeros((h, w), np.int32)
    voters = np.zeros((h, w), np.int32)
    for offset in config.offsets:
      if t + offset in window:
        flow = dense_flow(frame, window[t + offset], config)
        moving, valid = moving_pixels(flow, config, offset)
        votes += moving
        voters += valid
    raw = (voters > 0) & (votes >= np.maximum(
        1, config.min_agreement * voters - 1e-6))
    mask = clean_mask(raw, config)
    fraction = mask.mean()
    if fraction == 0:
      status = "static"
    elif fraction > config.max_area:
      status = "unreliable"
    else:
      status = "moving"
    return FrameMask(t, frame, mask, status)

  for index, frame in enumerate(frames):
    frame = _check_frame(frame, index)
    if shape is None:
      shape = frame.shape
    elif frame.shape != shape:
      raise ValueError(
          f"frame {index} has shape {frame.shape}, frame 0 has {shape}: all "
          "frames of a video must have one size")
    window[index] = frame
    count = index + 1
    while next_target + ahead <= index:
      if next_target % every == 0:
        yield process(next_target)
      next_target += 1
      while window and next(iter(window)) < next_target - behind:
        window.popitem(last=False)
  while next_target < count:
    if next_target % every == 0:
      yield process(next_target)
    next_target += 1


def motion_masks(frames: Union[np.ndarray, Sequence[np.ndarray]],
                 config: MotionMaskConfig = MotionMaskConfig()) -> np.ndarray:
  """Motion masks of all frames: uint8 [T, H, W] in {0, 1}.

  Unreliable frames (see :class:`MotionMaskConfig` ``max_area``) keep their
  raw mask here; :func:`iter_motion_masks` reports their status.
  """
  return np.stack([m.mask for m in iter_motion_masks(frames, config)])


def mask_iou(mask: np.ndarray, reference: np.ndarray) -> float:
  """Intersection over union of two boolean masks (1.0 when both empty)."""
  mask, reference = np.asarray(mask, bool), np.asarray(reference, bool)
  union = np.logical_or(mask, reference).sum()
  if union == 0:
    return 1.0
  return float(np.logical_and(mask, reference).sum() / union)
