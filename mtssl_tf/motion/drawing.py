"""Pictures of motion masks for documentation and checks."""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

from mtssl_tf.motion.masks import FrameMask


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
