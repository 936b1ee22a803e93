"""Dense flow, the camera model and per-pair moving pixels.

Steps 2-4 and 6 of :mod:`mtssl_tf.motion` (Farneback flow, a RANSAC
homography as the camera motion, the residual threshold, mask cleaning), and
:class:`MotionMaskConfig`, which holds all their settings.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np


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
