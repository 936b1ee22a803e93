"""Colour-space conversions in TensorFlow: sRGB <-> CIE Lab, and the
"harmonized" input.

Conventions (the same as scikit-image's ``rgb2lab`` / ``lab2rgb``):

* RGB is sRGB (IEC 61966-2-1 transfer curve) with values in [0, 255].
* XYZ uses the sRGB primaries and the D65 white point of the 2 degree
  observer, Xn, Yn, Zn = 0.95047, 1.0, 1.08883.
* Lab: L in [0, 100]; a and b roughly in [-128, 127] (sRGB reaches about
  a in [-86, 98], b in [-108, 95]).

All ops are element-wise over the last axis, so they take any leading shape
([..., 3]), work eagerly and inside ``tf.data`` / ``tf.function``, and compute
in float32.

The *harmonized* image (Doersch & Zisserman, "Multi-task Self-Supervised
Visual Learning", ICCV 2017, Sec. 4) is the Lab lightness scaled to the RGB
range, ``L * 2.55``, copied to three channels: the input the colorization task
sees, and the one harmonized relative position uses instead of colour
dropping, so that both tasks feed the trunk the same kind of image.
"""
from __future__ import annotations

import numpy as np
from mtssl_tf.utils.lazy_tf import tf

# Linear sRGB -> XYZ (sRGB primaries, D65), the values scikit-image uses.
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                          [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]], dtype=np.float64)
# Inverting in float64 once keeps the round trip RGB -> Lab -> RGB exact to
# float32 precision.
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
D65_WHITE = (0.95047, 1.0, 1.08883)

# CIE constants: (6/29)^3 and the slope of the linear part of f(t).
_EPSILON = (6.0 / 29.0) ** 3
_KAPPA = 1.0 / (3.0 * (6.0 / 29.0) ** 2)
_DELTA = 6.0 / 29.0

# Scale from L in [0, 100] to the package's image range [0, 255].
HARMONIZED_SCALE = 2.55


def _as_float_triplets(x: tf.Tensor, what: str) -> tf.Tensor:
  x = tf.convert_to_tensor(x)
  if x.dtype == tf.uint8:
    x = tf.cast(x, tf.float32)
  elif x.dtype.is_floating:
    x = tf.cast(x, tf.float32)
  else:
    raise TypeError(
        f"{what}: dtype {x.dtype.name} is not supported; expected uint8 or a "
        "float dtype.")
  if x.shape.rank is None or x.shape.rank < 1 or x.shape[-1] != 3:
    raise ValueError(
        f"{what}: expected a tensor of shape [..., 3], got shape {x.shape}.")
  return x


def _matmul_last(x: tf.Tensor, matrix: np.ndarray) -> tf.Tensor:
  # x @ M^T over the last axis, for any leading shape.
  m = tf.constant(matrix.T, dtype=tf.float32)
  return tf.tensordot(x, m, axes=[[-1], [0]])


def rgb_to_lab(rgb: tf.Tensor) -> tf.Tensor:
  """sRGB in [0, 255] -> CIE Lab (D65), float32.

  Args:
    rgb: [..., 3] RGB, uint8 or float with values in [0, 255] (values outside
      are clipped to it).

  Returns:
    [..., 3] float32: L in [0, 100], a, b.

  Raises:
    TypeError: for a non-numeric or integer dtype other than uint8.
    ValueError: when the last axis is not 3.
  """
  rgb = _as_float_triplets(rgb, "rgb_to_lab")
  c = tf.clip_by_value(rgb / 255.0, 0.0, 1.0)
  linear = tf.where(c > 0.04045,
                    tf.pow((c + 0.055) / 1.055, 2.4),
                    c / 12.92)
  xyz = _matmul_last(linear, _XYZ_FROM_RGB) / tf.constant(D65_WHITE,
                                                           tf.float32)
  # The cube root's linear continuation below epsilon keeps f smooth at 0.
  f = tf.where(xyz > _EPSILON,
               tf.pow(tf.maximum(xyz, _EPSILON), 1.0 / 3.0),
               xyz * _KAPPA + 4.0 / 29.0)
  fx, fy, fz = tf.unstack(f, axis=-1)
  lightness = 116.0 * fy - 16.0
  a = 500.0 * (fx - fy)
  b = 200.0 * (fy - fz)
  return tf.stack([lightness, a, b], axis=-1)


def lab_to_rgb(lab: tf.Tensor) -> tf.Tensor:
  """CIE Lab (D65) -> sRGB in [0, 255], float32.

  Colours outside the sRGB gamut are clipped with scikit-image's ``lab2rgb``
  rules: f(Z) at 0, then linear RGB per channel to [0, 1].

  Args:
    lab: [..., 3] float Lab, L in [0, 100].

  Returns:
    [..., 3] float32 RGB in [0, 255].
  """
  lab = _as_float_triplets(lab, "lab_to_rgb")
  lightness, a, b = tf.unstack(lab, axis=-1)
  fy = (lightness + 16.0) / 116.0
  fx = fy + a / 500.0
  # Clipping f_z at 0 (very yellow out-of-gamut colours) is scikit-image's
  # rule; following it makes out-of-gamut Lab map to the same RGB in both.
  fz = tf.maximum(fy - b / 200.0, 0.0)
  f = tf.stack([fx, fy, fz], axis=-1)
  xyz = tf.where(f > _DELTA, f ** 3, (f - 4.0 / 29.0) / _KAPPA)
  xyz = xyz * tf.constant(D65_WHITE, tf.float32)
  linear = tf.clip_by_value(_matmul_last(xyz, _RGB_FROM_XYZ), 0.0, 1.0)
  c = tf.where(linear > 0.0031308,
               1.055 * tf.pow(tf.maximum(linear, 0.0031308), 1.0 / 2.4)
               - 0.055,
               12.92 * linear)
  return tf.clip_by_value(c * 255.0, 0.0, 255.0)


def lightness_to_harmonized(lightness: tf.Tensor) -> tf.Tensor:
  """Lab L [...] in [0, 100] -> the harmonized image [..., 3] in [0, 255]."""
  lightness = tf.convert_to_tensor(lightness, tf.float32)
  return tf.repeat(lightness[..., tf.newaxis] * HARMONIZED_SCALE, 3, axis=-1)


def rgb_to_harmonized(rgb: tf.Tensor) -> tf.Tensor:
  """RGB in [0, 255] -> the harmonized image: ``L * 2.55`` on 3 channels.

  Args:
    rgb: [..., 3] RGB, uint8 or float in [0, 255].

  Returns:
    [..., 3] float32 in [0, 255], the three channels equal.
  """
  return lightness_to_harmonized(rgb_to_lab(rgb)[..., 0])


def harmonized_to_lightness(harmonized: tf.Tensor) -> tf.Tensor:
  """The harmonized image [..., C] (C = 1 or 3) -> Lab L [...] in [0, 100]."""
  harmonized = tf.convert_to_tensor(harmonized)
  if not harmonized.dtype.is_floating and harmonized.dtype != tf.uint8:
    raise TypeError(f"harmonized image: dtype {harmonized.dtype.name} is not "
                    "supported; expected uint8 or float.")
  if harmonized.shape.rank is None or harmonized.shape[-1] not in (1, 3):
    raise ValueError("harmonized image: expected shape [..., 1] or [..., 3], "
                     f"got {harmonized.shape}.")
  return tf.cast(harmonized[..., 0], tf.float32) / HARMONIZED_SCALE


__all__ = ["rgb_to_lab", "lab_to_rgb", "rgb_to_harmonized",
           "lightness_to_harmonized", "harmonized_to_lightness",
           "HARMONIZED_SCALE", "D65_WHITE"]
