"""Input normalisation rules shared by every task.

Package-wide image convention: **float32 RGB in [0, 255], shape [H, W, 3]**
(or [N, H, W, 3]). Every task's data op starts with :func:`ensure_rgb`, which
applies these documented rules:

* ``uint8`` is cast to float32 (values kept in [0, 255]); float16/32/64 are
  taken to be in [0, 255] already and cast to float32. Any other dtype (ints
  other than uint8, bool, strings) raises ``TypeError`` naming the dtype.
* 1 channel (grey) is repeated to 3 channels; 4 channels (RGBA) drop alpha;
  2 or >4 channels raise ``ValueError``.
* A rank-2 image [H, W] is taken as grey.
* Images smaller than a task's minimum raise ``tf.errors.InvalidArgumentError``
  (inside ``tf.data`` the pipeline can ``ignore_errors`` and count them).
"""
from __future__ import annotations

from mtssl_tf.utils.lazy_tf import tf


def ensure_rgb(image: tf.Tensor, name: str = "image") -> tf.Tensor:
  """Returns ``image`` as float32 RGB [..., H, W, 3] in [0, 255].

  Args:
    image: a [H, W], [H, W, C] or [N, H, W, C] tensor, C in {1, 3, 4}.
    name: how the tensor is called in error messages.

  Raises:
    TypeError: unsupported dtype.
    ValueError: unsupported rank or channel count (when known statically).
  """
  image = tf.convert_to_tensor(image)
  if image.dtype == tf.uint8:
    image = tf.cast(image, tf.float32)
  elif image.dtype in (tf.float16, tf.float32, tf.float64, tf.bfloat16):
    image = tf.cast(image, tf.float32)
  else:
    raise TypeError(
        f"{name}: dtype {image.dtype.name} is not supported; expected uint8 "
        "(0..255) or a float dtype holding values in [0, 255].")
  rank = image.shape.rank
  if rank is None:
    raise ValueError(f"{name}: rank must be known (2, 3 or 4), got unknown.")
  if rank == 2:
    image = image[..., tf.newaxis]
  elif rank not in (3, 4):
    raise ValueError(
        f"{name}: rank {rank} (shape {image.shape}) is not an image; expected "
        "[H, W], [H, W, C] or [N, H, W, C].")
  channels = image.shape[-1]
  if channels is None:
    raise ValueError(f"{name}: the channel dimension must be known statically.")
  if channels == 1:
    image = tf.repeat(image, 3, axis=-1)
  elif channels == 4:
    image = image[..., :3]
  elif channels != 3:
    raise ValueError(
        f"{name}: {channels} channels (shape {image.shape}); expected 1 (grey, "
        "repeated to RGB), 3 (RGB) or 4 (RGBA, alpha dropped).")
  return image


def check_min_size(image: tf.Tensor, min_height: int, min_width: int,
                   what: str) -> tf.Tensor:
  """Asserts that ``image`` ([..., H, W, C]) is at least min_height x min_width.

  Works statically when the shape is known (``ValueError``) and at run time
  inside ``tf.data`` (``tf.errors.InvalidArgumentError``); returns ``image``.
  """
  h, w = image.shape[-3], image.shape[-2]
  if h is not None and w is not None:
    if h < min_height or w < min_width:
      raise ValueError(
          f"image of {h}x{w} pixels is smaller than {what} needs "
          f"({min_height}x{min_width}).")
    return image
  shape = tf.shape(image)
  with tf.control_dependencies([
      tf.debugging.assert_greater_equal(
          shape[-3], min_height,
          message=f"image height is smaller than {what} needs ({min_height})"),
      tf.debugging.assert_greater_equal(
          shape[-2], min_width,
          message=f"image width is smaller than {what} needs ({min_width})"),
  ]):
    return tf.identity(image)


def limit_image_size(image: tf.Tensor, max_short_side: int,
                     method: str = "area") -> tf.Tensor:
  """Downscales ``image`` [H, W, C] so its shorter side is <= max_short_side.

  Keeps the aspect ratio and the dtype; images already small enough are
  returned unchanged. The shorter side is the one the tasks' crops need, so
  a limit at least as large as a task's minimum never makes an image too
  small for it. ``method="nearest"`` is for label maps (masks).
  """
  if max_short_side < 1:
    raise ValueError(f"max_short_side must be >= 1, got {max_short_side}")
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  shorter = tf.minimum(h, w)
  scale = tf.minimum(1.0, max_short_side / tf.cast(shorter, tf.float32))
  new_size = tf.maximum(
      1, tf.cast(tf.round(tf.cast(tf.stack([h, w]), tf.float32) * scale),
                 tf.int32))

  def resize():
    resized = tf.image.resize(image, new_size, method=method)
    if image.dtype.is_integer:
      resized = tf.clip_by_value(tf.round(resized), image.dtype.min,
                                 image.dtype.max)
    return tf.cast(resized, image.dtype)

  return tf.cond(shorter > max_short_side, resize, lambda: image)
