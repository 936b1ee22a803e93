"""Anchors, box coordinate frames and the detector's input op."""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from mtssl_tf.evaluation.detection.detector_config import DetectorConfig
from mtssl_tf.models.trunk import SLIM_MEAN_RGB
from mtssl_tf.ops.image import ensure_rgb


def make_anchors(image_size: int, level: int,
                 config: DetectorConfig) -> Dict[str, tf.Tensor]:
  """Anchors of one level in Model Garden's layout.

  Returns ``{str(level): [h, w, A * 4]}``, boxes ``[ymin, xmin, ymax, xmax]``
  in input pixels, centred on the stride grid (cell centres), ordered size
  major then aspect ratio, as ``official.vision.ops.anchor.Anchor`` orders
  scales and ratios.
  """
  stride = 2 ** level
  size = math.ceil(image_size / stride)
  centres = (np.arange(size, dtype=np.float64) + 0.5) * (image_size / size)
  yy, xx = np.meshgrid(centres, centres, indexing="ij")
  boxes = []
  for side in config.anchor_sizes:
    for ratio in config.aspect_ratios:
      half_w = side * math.sqrt(ratio) / 2
      half_h = side / math.sqrt(ratio) / 2
      boxes.append(np.stack([yy - half_h, xx - half_w, yy + half_h,
                             xx + half_w], axis=-1))
  return {str(level): tf.constant(np.concatenate(boxes, axis=-1),
                                  tf.float32)}


def voc_to_pixel_boxes(boxes: tf.Tensor) -> tf.Tensor:
  """VOC inclusive 1-based boxes -> continuous 0-based pixel boxes (a box of
  pixels 1..W spans [0, W])."""
  return boxes - tf.constant([1.0, 1.0, 0.0, 0.0], boxes.dtype)


def pixel_to_voc_boxes(boxes):
  """Inverse of :func:`voc_to_pixel_boxes` (NumPy or TF)."""
  return boxes + np.array([1.0, 1.0, 0.0, 0.0], np.float32)


def resize_and_pad(example: Dict[str, tf.Tensor], image_size: int,
                   seed: Optional[tf.Tensor] = None,
                   flip: bool = False) -> Dict[str, tf.Tensor]:
  """The deterministic part of the detector's data op.

  Resizes the image so its longer side is ``image_size``, optionally flips it
  horizontally (decided by ``tf.random.stateless_uniform`` on ``seed``), pads
  it to ``image_size`` squared with the ImageNet mean colour (zero after the
  trunk's input normalisation) and maps the boxes into the padded image's
  continuous pixel frame.

  Returns ``image`` float32 [S, S, 3] in [0, 255], ``boxes`` [N, 4] (pixel
  frame of the resized image), ``classes``, ``difficult`` and Model
  Garden's ``image_info`` [[h, w], [h', w'], [sy, sx], [0, 0]].
  """
  image = ensure_rgb(example["image"], name="detection image")
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.minimum(image_size / shape[0], image_size / shape[1])
  new_shape = tf.minimum(tf.round(shape * scale), float(image_size))
  new_size = tf.cast(new_shape, tf.int32)
  image = tf.image.resize(image, new_size, method="bilinear", antialias=True)
  boxes = voc_to_pixel_boxes(tf.cast(example["boxes"], tf.float32))
  scales = new_shape / shape
  boxes = boxes * tf.concat([scales, scales], axis=0)
  if flip:
    if seed is None:
      raise ValueError("resize_and_pad: flip=True needs a seed")
    do_flip = tf.random.stateless_uniform([], seed) < 0.5
    width = new_shape[1]
    flipped = tf.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2],
                        width - boxes[:, 1]], axis=1)
    image = tf.cond(do_flip, lambda: image[:, ::-1], lambda: image)
    boxes = tf.cond(do_flip, lambda: flipped, lambda: boxes)
  mean = tf.constant(SLIM_MEAN_RGB, tf.float32)
  image = tf.image.pad_to_bounding_box(image - mean, 0, 0, image_size,
                                       image_size) + mean
  image = tf.clip_by_value(image, 0.0, 255.0)
  image_info = tf.stack([shape, new_shape, scales, tf.zeros([2])])
  return {"image": image, "boxes": boxes,
          "classes": tf.cast(example["classes"], tf.int32),
          "difficult": tf.cast(example["difficult"], tf.bool),
          "image_info": image_info}


def _pad(x: tf.Tensor, n: int, value) -> tf.Tensor:
  x = x[:n]
  pad = n - tf.shape(x)[0]
  paddings = [[0, pad]] + [[0, 0]] * (x.shape.rank - 1)
  x = tf.pad(x, paddings, constant_values=value)
  return tf.ensure_shape(x, [n] + x.shape[1:].as_list())
