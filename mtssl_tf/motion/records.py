"""The motion-mask TFRecord format (see :mod:`mtssl_tf.motion`): write, parse,
list and read.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Sequence, Union

import numpy as np
import tensorflow as tf

from mtssl_tf.motion.masks import FrameMask

IMAGE_FORMATS = ("jpeg", "png")


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
