"""Motion masks from videos: the labels of the motion segmentation task.

Doersch & Zisserman (ICCV 2017) train one of their four self-supervised heads
to predict, from a single frame, which pixels move (Pathak et al., CVPR 2017,
"Learning Features by Watching Objects Move"). Pathak's labels came from an
unsupervised video segmentation (uNLC) built on dense optical flow. This module
computes comparable pseudo ground truth with OpenCV only, once, offline:

1. Frames are read with OpenCV (``cv2.VideoCapture``), converted to RGB and
   optionally downscaled so that their longer side is at most ``max_side``.
2. For a target frame ``t`` and each offset ``d`` in ``offsets`` (default
   ``(-2, -1, 1, 2)``), dense Farneback flow is computed from frame ``t`` to
   frame ``t + d`` (so every flow field lives on frame ``t``'s pixels).
3. Camera motion: a homography is fitted with RANSAC to the flow sampled on a
   regular grid. The background is the dominant motion, so RANSAC's inliers
   are the background and independently moving objects are outliers.
4. Residual = flow minus the homography-induced flow. A pixel moves in pair
   ``d`` when ``|residual| > threshold * |d|`` (pixels per frame of gap).
   Pixels that the homography maps outside the frame have no correspondence
   and do not vote in that pair.
5. Consistency over several frames: a pixel is moving when it moves in at
   least ``min_agreement`` of the pairs where it votes. Forward and backward
   offsets together remove the occlusion halos that one flow field leaves
   beside a moving object.
6. Cleaning: morphological opening then closing, and connected components
   smaller than ``min_area`` (fraction of the frame) are dropped.

A frame whose cleaned mask is empty is *static*; a frame where more than
``max_area`` of the pixels move is *unreliable* (the camera model failed, e.g.
a cut or a scene that is mostly foreground). Neither is written by default. A
video whose frames are all static is reported as static, never an error.

Storage: one TFRecord file per video of ``tf.train.Example`` records,

=====================  ======  ============================================
key                    type    value
=====================  ======  ============================================
``image/encoded``      bytes   the frame, JPEG (default) or PNG, RGB
``image/format``       bytes   ``b"jpeg"`` or ``b"png"``
``mask/encoded``       bytes   the mask, 1-channel PNG with values {0, 1}
``image/height``       int64   frame height
``image/width``        int64   frame width
``video/name``         bytes   the video's file name
``frame/index``        int64   the frame's index in the (decoded) video
``mask/fraction``      float   fraction of moving pixels
=====================  ======  ============================================

:func:`motion_dataset` reads them back as ``{"image": uint8 [H, W, 3],
"mask": uint8 [H, W]}`` with mask values in {0, 1}.

OpenCV is imported inside the functions that need it so that importing this
module (for :func:`motion_dataset`) stays cheap.
"""
from __future__ import annotations

import collections
import dataclasses
import glob as glob_lib
import math
import os
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional,
                    Sequence, Tuple, Union)

import numpy as np
import tensorflow as tf

IMAGE_FORMATS = ("jpeg", "png")


class VideoReadError(IOError):
  """A video file is missing, cannot be opened or holds no decodable frame."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"cannot read video {path!r}: {reason}")
    self.path = path
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class MotionMaskConfig:
  """How motion masks are computed (see the module docstring).

  Attributes:
    max_side: frames are downscaled (area interpolation) so that their longer
      side is at most this many pixels; ``None`` keeps the decoded size. The
      other pixel values below are at this processing resolution.
    offsets: frame offsets ``d`` of the flow pairs ``(t, t + d)``; non-zero.
      Pairs that fall outside the video are left out (first and last frames
      vote with fewer pairs).
    threshold: a pixel moves in pair ``d`` when its residual flow exceeds
      ``threshold * |d|`` pixels.
    min_agreement: fraction of the voting pairs in which a pixel must move.
    ransac_threshold: RANSAC inlier distance in pixels, scaled by ``|d|``.
    grid_step: spacing in pixels of the flow samples the homography is fitted
      to.
    open_size: side of the elliptical kernel of the morphological opening
      (removes specks); 0 or 1 disables it.
    close_size: kernel side of the closing (fills holes); 0 or 1 disables it.
    min_area: connected components smaller than this fraction of the frame
      are dropped.
    max_area: frames with more moving pixels than this fraction are
      unreliable and skipped.
    pyr_scale, levels, winsize, iterations, poly_n, poly_sigma: the
      parameters of ``cv2.calcOpticalFlowFarneback``.
  """

  max_side: Optional[int] = 320
  offsets: Tuple[int, ...] = (-2, -1, 1, 2)
  threshold: float = 1.0
  min_agreement: float = 0.75
  ransac_threshold: float = 1.0
  grid_step: int = 8
  open_size: int = 3
  close_size: int = 5
  min_area: float = 0.002
  max_area: float = 0.5
  pyr_scale: float = 0.5
  levels: int = 3
  winsize: int = 9
  iterations: int = 3
  poly_n: int = 5
  poly_sigma: float = 1.2

  def __post_init__(self):
    object.__setattr__(self, "offsets", tuple(int(o) for o in self.offsets))
    if not self.offsets or 0 in self.offsets:
      raise ValueError(
          f"offsets must be a non-empty list of non-zero frame offsets, got "
          f"{self.offsets}")
    if self.max_side is not None and self.max_side < 8:
      raise ValueError(f"max_side must be >= 8 or None, got {self.max_side}")
    if self.threshold <= 0:
      raise ValueError(f"threshold must be > 0, got {self.threshold}")
    if not 0 < self.min_agreement <= 1:
      raise ValueError(
          f"min_agreement must be in (0, 1], got {self.min_agreement}")
    if self.grid_step < 1:
      raise ValueError(f"grid_step must be >= 1, got {self.grid_step}")
    if not 0 <= self.min_area < self.max_area <= 1:
      raise ValueError(
          f"need 0 <= min_area < max_area <= 1, got min_area={self.min_area}, "
          f"max_area={self.max_area}")


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


# ---------------------------------------------------------------------------
# Reading videos.


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


# ---------------------------------------------------------------------------
# Flow, camera motion, masks.


def dense_flow(frame_a: np.ndarray, frame_b: np.ndarray,
               config: MotionMaskConfig = MotionMaskConfig()) -> np.ndarray:
  """Farneback flow from ``frame_a`` to ``frame_b`` on frame_a's pixels.

  Args:
    frame_a, frame_b: uint8 grey [H, W] or RGB [H, W, 3] of the same size.

  Returns:
    float32 [H, W, 2]: (dx, dy) such that pixel (x, y) of ``frame_a`` is
    found at (x + dx, y + dy) in ``frame_b``.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  grey_a, grey_b = _grey(frame_a), _grey(frame_b)
  if grey_a.shape != grey_b.shape:
    raise ValueError(
        f"frames differ in size: {grey_a.shape} vs {grey_b.shape}")
  return cv2.calcOpticalFlowFarneback(
      grey_a, grey_b, None, config.pyr_scale, config.levels, config.winsize,
      config.iterations, config.poly_n, config.poly_sigma, 0)


def fit_camera_motion(flow: np.ndarray, grid_step: int = 8,
                      ransac_threshold: float = 1.0) -> Optional[np.ndarray]:
  """Fits the dominant (camera) motion of ``flow`` as a 3x3 homography.

  RANSAC over flow correspondences sampled every ``grid_step`` pixels;
  samples whose target leaves the frame are not used. Returns ``None`` when
  no homography can be fitted (too few samples, degenerate flow).
  """
  import cv2  # pylint: disable=g-import-not-at-top
  h, w = flow.shape[:2]
  offset = grid_step // 2
  ys, xs = np.mgrid[offset:h:grid_step, offset:w:grid_step]
  src = np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)
  dst = src + flow[ys.ravel(), xs.ravel()]
  inside = ((dst[:, 0] >= 0) & (dst[:, 0] <= w - 1) &
            (dst[:, 1] >= 0) & (dst[:, 1] <= h - 1))
  src, dst = src[inside], dst[inside]
  if len(src) < 8:
    return None
  # OpenCV's RANSAC draws from its global RNG: seed it so that the same video
  # always gives the same masks.
  cv2.setRNGSeed(0)
  homography, _ = cv2.findHomography(src, dst, cv2.RANSAC,
                                     float(ransac_threshold))
  if homography is None or not np.all(np.isfinite(homography)):
    return None
  return homography


def homography_flow(homography: np.ndarray, height: int,
                    width: int) -> np.ndarray:
  """The flow [H, W, 2] that ``homography`` induces on an H x W frame."""
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  points = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ homography.T
  # A homography can send points to infinity (w -> 0); those have no
  # correspondence and are marked invalid by the caller's bounds check.
  with np.errstate(divide="ignore", invalid="ignore"):
    mapped = points[..., :2] / points[..., 2:3]
  return (mapped - np.stack([xs, ys], axis=-1)).astype(np.float32)


def moving_pixels(flow: np.ndarray, config: MotionMaskConfig,
                  gap: int = 1) -> Tuple[np.ndarray, np.ndarray]:
  """Camera-compensated motion of one flow field.

  Args:
    flow: [H, W, 2] flow over ``gap`` frames (sign ignored).
    config: thresholds and RANSAC settings.
    gap: the frame offset of the pair; thresholds scale with ``|gap|``.

  Returns:
    (moving, valid): bool [H, W]. ``valid`` is False where the camera motion
    maps the pixel outside the frame, or everywhere when no camera motion
    could be fitted.
  """
  h, w = flow.shape[:2]
  gap = abs(gap)
  homography = fit_camera_motion(flow, config.grid_step,
                                 config.ransac_threshold * gap)
  if homography is None:
    empty = np.zeros((h, w), bool)
    return empty, empty
  camera = homography_flow(homography, h, w)
  ys, xs = np.mgrid[0:h, 0:w]
  tx, ty = xs + camera[..., 0], ys + camera[..., 1]
  valid = ((tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1))
  residual = np.linalg.norm(flow - camera, axis=-1)
  moving = valid & (residual > config.threshold * gap)
  return moving, valid


def clean_mask(mask: np.ndarray, config: MotionMaskConfig) -> np.ndarray:
  """Opening, closing and removal of small components; uint8 {0, 1}."""
  import cv2  # pylint: disable=g-import-not-at-top
  mask = mask.astype(np.uint8)
  for size, op in ((config.open_size, cv2.MORPH_OPEN),
                   (config.close_size, cv2.MORPH_CLOSE)):
    if size > 1:
      kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
      mask = cv2.morphologyEx(mask, op, kernel)
  min_pixels = config.min_area * mask.size
  if min_pixels > 0 and mask.any():
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask, connectivity=8)
    keep = np.zeros(count, np.uint8)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    mask = keep[labels]
  return mask


def _grey(frame: np.ndarray) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  if frame.ndim == 2:
    return frame
  return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


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


# ---------------------------------------------------------------------------
# TFRecords.


def _bytes_feature(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _float_feature(value: float) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def encode_example(frame: np.ndarray, mask: np.ndarray,
                   image_format: str = "jpeg", video_name: str = "",
                   frame_index: int = 0, jpeg_quality: int = 95) -> bytes:
  """Serialises one (frame, mask) pair as a ``tf.train.Example``.

  Args:
    frame: uint8 RGB [H, W, 3].
    mask: [H, W] (or [H, W, 1]); non-zero = moving. Stored as {0, 1}.
    image_format: ``"jpeg"`` (small) or ``"png"`` (lossless) for the frame.
  """
  if image_format not in IMAGE_FORMATS:
    raise ValueError(
        f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
  frame = np.asarray(frame)
  mask = np.asarray(mask)
  if mask.ndim == 3 and mask.shape[-1] == 1:
    mask = mask[..., 0]
  if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(
        f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
  if mask.shape != frame.shape[:2]:
    raise ValueError(
        f"mask shape {mask.shape} does not match the frame's "
        f"{frame.shape[:2]}")
  mask = (mask != 0).astype(np.uint8)
  if image_format == "jpeg":
    encoded = tf.io.encode_jpeg(frame, quality=jpeg_quality).numpy()
  else:
    encoded = tf.io.encode_png(frame).numpy()
  features = {
      "image/encoded": _bytes_feature(encoded),
      "image/format": _bytes_feature(image_format.encode()),
      "mask/encoded": _bytes_feature(tf.io.encode_png(mask[..., None]).numpy()),
      "image/height": _int_feature(frame.shape[0]),
      "image/width": _int_feature(frame.shape[1]),
      "video/name": _bytes_feature(video_name.encode()),
      "frame/index": _int_feature(frame_index),
      "mask/fraction": _float_feature(mask.mean()),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=features)).SerializeToString()


_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "mask/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "video/name": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "frame/index": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def parse_example(serialized: tf.Tensor,
                  with_metadata: bool = False) -> Dict[str, tf.Tensor]:
  """Decodes one serialised record (works inside ``tf.data``).

  Returns ``{"image": uint8 [H, W, 3], "mask": uint8 [H, W]}`` (mask in
  {0, 1}), plus ``"video"`` and ``"frame_index"`` when ``with_metadata``.
  """
  parsed = tf.io.parse_single_example(serialized, _FEATURES)
  image = tf.io.decode_image(parsed["image/encoded"], channels=3,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  mask = tf.io.decode_png(parsed["mask/encoded"], channels=1)[..., 0]
  # Masks are written as {0, 1}; clipping makes masks stored as 0/255 by
  # other tools read the same.
  mask = tf.minimum(mask, 1)
  out = {"image": image, "mask": mask}
  if with_metadata:
    out["video"] = parsed["video/name"]
    out["frame_index"] = parsed["frame/index"]
  return out


def write_tfrecord(path: str, examples: Iterable[FrameMask],
                   image_format: str = "jpeg", video_name: str = "") -> int:
  """Writes FrameMask items to ``path``; returns how many were written.

  The file is written under a temporary name and renamed at the end, so an
  interrupted run never leaves a truncated file under the final name.
  """
  tmp = path + ".tmp"
  count = 0
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for item in examples:
        writer.write(encode_example(item.frame, item.mask, image_format,
                                    video_name, item.index))
        count += 1
  except BaseException:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    raise
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return count


def list_tfrecords(tfrecord_glob: Union[str, Sequence[str]]) -> List[str]:
  """Sorted files matching one pattern or a list of patterns.

  Raises:
    FileNotFoundError: a pattern matches no file (the pattern is named).
  """
  patterns = [tfrecord_glob] if isinstance(tfrecord_glob, (str, os.PathLike)) \
      else list(tfrecord_glob)
  files = []
  for pattern in patterns:
    matched = tf.io.gfile.glob(os.fspath(pattern))
    if not matched:
      raise FileNotFoundError(f"no TFRecord file matches {pattern!r}")
    files.extend(matched)
  return sorted(set(files))


def motion_dataset(tfrecord_glob: Union[str, Sequence[str]],
                   with_metadata: bool = False) -> tf.data.Dataset:
  """The (frame, mask) records of the files matching ``tfrecord_glob``.

  Returns:
    A ``tf.data.Dataset`` of ``{"image": uint8 [H, W, 3], "mask": uint8
    [H, W]}`` (mask in {0, 1}), files in sorted order, records in file
    order; shuffle and repeat downstream.
  """
  files = list_tfrecords(tfrecord_glob)
  return tf.data.TFRecordDataset(files).map(
      lambda s: parse_example(s, with_metadata),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ---------------------------------------------------------------------------
# One video -> one TFRecord file.


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


# ---------------------------------------------------------------------------
# Pictures for documentation and checks.


def overlay_mask(frame: np.ndarray, mask: np.ndarray,
                 color: Tuple[int, int, int] = (255, 40, 40),
                 alpha: float = 0.45) -> np.ndarray:
  """The frame with moving pixels tinted by ``color`` and outlined."""
  import cv2  # pylint: disable=g-import-not-at-top
  frame = np.asarray(frame, np.uint8)
  mask = np.asarray(mask) != 0
  out = frame.astype(np.float32)
  out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
  out = out.round().astype(np.uint8)
  contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                 cv2.CHAIN_APPROX_SIMPLE)
  cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), 1)
  return out


def preview_grid(items: Sequence[FrameMask], columns: int = 3,
                 gap: int = 4) -> np.ndarray:
  """Frames with their masks overlaid, tiled in a grid (uint8 RGB)."""
  if not items:
    raise ValueError("preview_grid needs at least one frame")
  tiles = [overlay_mask(item.frame, item.mask) for item in items]
  h, w = tiles[0].shape[:2]
  rows = math.ceil(len(tiles) / columns)
  cols = min(columns, len(tiles))
  grid = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3),
                 255, np.uint8)
  for k, tile in enumerate(tiles):
    r, c = divmod(k, columns)
    top, left = r * (h + gap), c * (w + gap)
    grid[top:top + h, left:left + w] = tile
  return grid
