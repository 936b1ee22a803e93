"""What the trunk takes as images, and how they are made RGB float32.

The package's input convention is RGB in [0, 255], uint8 or float. The trunk
(:class:`mtssl_tf.models.Trunk`) applies these rules before its first layer,
with Keras operations only, so that they hold the same eagerly, inside a
traced function and on symbolic Keras tensors:

* ``[N, H, W, 3]`` RGB is taken as it is; ``[N, H, W, 1]`` and ``[N, H, W]``
  grey are repeated to three channels; ``[N, H, W, 4]`` RGBA drops alpha.
* uint8 and every float dtype are cast to the trunk's input dtype (float32);
  the values are not rescaled.
* Anything else raises one ``ValueError`` that names the shape or dtype:
  other ranks (a single image needs its batch axis, ``images[None]``), other
  channel counts, other dtypes (other integers, bool, complex, strings),
  and a rank-3 batch whose last axis is 1, 3 or 4, which is more likely one
  image without its batch axis than grey images that narrow.

Float values are not checked here; :func:`unit_range_maximum` tells the
caller when concrete float images look scaled to [0, 1].

Example:
  >>> images = standardize_images(np.zeros([2, 32, 32, 4], np.uint8))
  >>> tuple(images.shape), keras.backend.standardize_dtype(images.dtype)
  ((2, 32, 32, 3), 'float32')
"""
from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np

EXPECTED = ("expected uint8 or float RGB values in [0, 255], shaped "
            "[N, H, W, C] with C = 3 (RGB), 1 (grey) or 4 (RGBA), or grey "
            "[N, H, W]")


def _dtype_name(dtype: Any) -> str:
  try:
    return keras.backend.standardize_dtype(dtype)
  except ValueError:  # e.g. NumPy strings or objects: no Keras dtype
    return getattr(dtype, "name", str(dtype))


def _shape_text(shape) -> str:
  return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def is_float_dtype(dtype: Any) -> bool:
  """float16, bfloat16, float32, float64, ..."""
  return _dtype_name(dtype).startswith(("float", "bfloat"))


def as_array(images: Any, name: str = "images") -> Any:
  """``images`` itself if it has a shape and a dtype (arrays, tensors,
  symbolic Keras tensors), else (nested lists) a NumPy array."""
  if hasattr(images, "shape") and hasattr(images, "dtype"):
    return images
  try:
    return np.asarray(images)
  except ValueError as e:  # ragged nested lists
    raise ValueError(f"{name}: not a rectangular array ({e}); "
                     f"{EXPECTED}") from None


def standardize_images(images: Any, dtype: str = "float32",
                       name: str = "images") -> Any:
  """Returns ``images`` as RGB ``[N, H, W, 3]`` of ``dtype``, values kept.

  Args:
    images: an array, tensor or symbolic Keras tensor (or nested lists), see
      the module docstring for what is accepted.
    dtype: the dtype of the result (the trunk's input dtype).
    name: how the images are called in error messages.

  Returns:
    The images, converted only where needed: accepted input that already is
    RGB of ``dtype`` comes back as the same object.

  Raises:
    ValueError: a dtype, rank or channel count that is not accepted; the
      message names it and says what is expected.
  """
  images = as_array(images, name)
  dtype_name = _dtype_name(images.dtype)
  if dtype_name != "uint8" and not is_float_dtype(dtype_name):
    hint = (" (integers in 0..255: .astype('uint8'))"
            if dtype_name.startswith(("int", "uint")) else "")
    raise ValueError(f"{name}: dtype {dtype_name} is not accepted{hint}; "
                     f"{EXPECTED}")
  try:
    shape = tuple(images.shape)
  except ValueError:  # a traced tensor of unknown rank
    raise ValueError(f"{name}: the rank is unknown; {EXPECTED}") from None
  rank = len(shape)
  if rank == 3 and shape[-1] in (1, 3, 4):
    raise ValueError(
        f"{name}: shape {_shape_text(shape)} is ambiguous: one image "
        f"without its batch axis (add it: images[None]) or grey images "
        f"{shape[-1]} pixels wide (add the channel axis: images[..., None])")
  if rank not in (3, 4):
    hint = " (one image: add the batch axis, images[None])" if rank == 2 \
        else ""
    raise ValueError(f"{name}: shape {_shape_text(shape)} has rank {rank}"
                     f"{hint}; {EXPECTED}")
  channels = 1 if rank == 3 else shape[-1]
  # A channel count known only at run time (a traced tensor) is left to the
  # trunk's own shape checks.
  if channels not in (None, 1, 3, 4):
    raise ValueError(f"{name}: {channels} channels (shape "
                     f"{_shape_text(shape)}); {EXPECTED}")
  if dtype_name != dtype:
    images = keras.ops.cast(images, dtype)
  if rank == 3:
    images = keras.ops.expand_dims(images, -1)
  if channels == 1:
    images = keras.ops.repeat(images, 3, axis=-1)
  elif channels == 4:
    images = images[..., :3]
  return images


def unit_range_maximum(images: Any) -> Optional[float]:
  """The largest value of ``images`` when it lies in (0, 1], else None.

  Only concrete values can be measured (NumPy arrays, eager tensors): for a
  symbolic Keras tensor or a tensor being traced into a graph (inside
  ``tf.function``) the answer is None.

  Args:
    images: float images, e.g. the output of :func:`standardize_images`.
  """
  if keras.backend.is_keras_tensor(images):
    return None
  if any(d == 0 for d in images.shape):
    return None
  if isinstance(images, np.ndarray):
    maximum = float(np.max(images))
  else:
    try:
      maximum = float(keras.ops.convert_to_numpy(keras.ops.max(images)))
    except (NotImplementedError, TypeError):
      # A tensor being traced has no value yet (TensorFlow raises
      # NotImplementedError, JAX a TypeError).
      return None
  return maximum if 0 < maximum <= 1 else None
