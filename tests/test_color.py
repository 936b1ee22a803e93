"""Tests of mtssl_tf.ops.color and of the shipped 313 ab bins."""
import hashlib
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from skimage import color as skcolor

from mtssl_tf.tasks import colorization_bins as prior_lib
from mtssl_tf.ops import color


def _random_rgb(rng, n=2000):
  rgb = rng.uniform(0, 255, size=(n, 3))
  # Corners and near-black values exercise both branches of each curve.
  extremes = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0],
                       [0, 0, 255], [255, 255, 0], [1, 1, 1], [3, 2, 10],
                       [10, 10, 10], [128, 128, 128]], np.float64)
  return np.concatenate([rgb, extremes]).astype(np.float32)


def test_rgb_to_lab_matches_skimage(rng):
  rgb = _random_rgb(rng)
  ours = color.rgb_to_lab(rgb).numpy()
  ref = skcolor.rgb2lab(rgb.astype(np.float64) / 255.0)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, atol=0.5)
  # The conversion is the same formula, so it agrees far better than 0.5.
  assert np.abs(ours - ref).max() < 1e-2


def test_rgb_to_lab_matches_opencv(rng):
  import cv2
  rgb = _random_rgb(rng)
  ours = color.rgb_to_lab(rgb).numpy()
  ref = cv2.cvtColor((rgb / 255.0)[None], cv2.COLOR_RGB2Lab)[0]
  np.testing.assert_allclose(ours, ref, atol=0.5)


def test_rgb_to_lab_known_values():
  lab = color.rgb_to_lab(np.array([[255, 255, 255], [0, 0, 0]],
                                  np.float32)).numpy()
  np.testing.assert_allclose(lab, [[100, 0, 0], [0, 0, 0]], atol=1e-2)


def test_rgb_to_lab_uint8_and_image_shapes(rng):
  image = rng.integers(0, 256, size=(2, 5, 7, 3)).astype(np.uint8)
  ours = color.rgb_to_lab(image).numpy()
  assert ours.shape == (2, 5, 7, 3)
  np.testing.assert_allclose(ours, skcolor.rgb2lab(image), atol=0.5)


def test_lab_to_rgb_matches_skimage_in_and_out_of_gamut(rng):
  lab = rng.uniform([0, -128, -128], [100, 127, 127], size=(3000, 3))
  ours = color.lab_to_rgb(lab.astype(np.float32)).numpy()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # skimage: values clipped
    ref = 255.0 * skcolor.lab2rgb(lab)
  assert ours.min() >= 0 and ours.max() <= 255
  np.testing.assert_allclose(ours, ref, atol=0.5)


def test_round_trip(rng):
  rgb = _random_rgb(rng)
  back = color.lab_to_rgb(color.rgb_to_lab(rgb)).numpy()
  np.testing.assert_allclose(back, rgb, atol=0.05)


def test_harmonized_is_scaled_lightness_on_three_channels(rng):
  rgb = rng.uniform(0, 255, size=(4, 6, 3)).astype(np.float32)
  harmonized = color.rgb_to_harmonized(rgb).numpy()
  expected = 2.55 * skcolor.rgb2lab(rgb / 255.0)[..., 0]
  assert harmonized.shape == (4, 6, 3)
  for c in range(3):
    np.testing.assert_allclose(harmonized[..., c], expected, atol=0.5 * 2.55)
  white_black = color.rgb_to_harmonized(
      np.array([[255, 255, 255], [0, 0, 0]], np.uint8)).numpy()
  np.testing.assert_allclose(white_black, [[255] * 3, [0] * 3], atol=0.05)
  np.testing.assert_allclose(
      color.harmonized_to_lightness(harmonized).numpy(), expected / 2.55,
      atol=0.5)


def test_ops_same_eagerly_and_in_tf_data(rng):
  rgb = rng.uniform(0, 255, size=(3, 8, 8, 3)).astype(np.float32)
  eager = [(color.rgb_to_lab(x).numpy(), color.rgb_to_harmonized(x).numpy(),
            color.lab_to_rgb(color.rgb_to_lab(x)).numpy()) for x in rgb]
  ds = tf.data.Dataset.from_tensor_slices(rgb).map(
      lambda x: (color.rgb_to_lab(x), color.rgb_to_harmonized(x),
                 color.lab_to_rgb(color.rgb_to_lab(x))))
  # Graph rewrites (tf.data runs a graph) may round differently in the last
  # float32 bits; anything beyond that would be a real difference.
  for (lab, harm, back), (lab_e, harm_e, back_e) in zip(ds, eager):
    np.testing.assert_allclose(lab.numpy(), lab_e, atol=1e-3)
    np.testing.assert_allclose(harm.numpy(), harm_e, atol=1e-3)
    np.testing.assert_allclose(back.numpy(), back_e, atol=1e-3)


def test_bad_input():
  with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
    color.rgb_to_lab(np.zeros((4, 4, 4), np.float32))
  with pytest.raises(TypeError, match="int32"):
    color.rgb_to_lab(np.zeros((4, 4, 3), np.int32))
  with pytest.raises(ValueError, match="shape"):
    color.lab_to_rgb(np.zeros((4, 2), np.float32))
  with pytest.raises(ValueError, match="harmonized"):
    color.harmonized_to_lightness(np.zeros((4, 4, 2), np.float32))


# -- the shipped 313 bins -----------------------------------------------------

def test_313_bins_count_grid_ranges_unique():
  bins = prior_lib.load_ab_bins_313()
  assert bins.shape == (313, 2) and bins.dtype == np.float32
  assert len(np.unique(bins, axis=0)) == 313
  np.testing.assert_array_equal(np.mod(bins, 10), 0)
  a, b = bins[:, 0], bins[:, 1]
  assert (a.min(), a.max()) == (-90, 100)
  assert (b.min(), b.max()) == (-110, 100)
  # The authors' order: a ascending, then b ascending.
  order = np.lexsort((b, a))
  np.testing.assert_array_equal(order, np.arange(313))
  # The public transcription's first and last entries.
  np.testing.assert_array_equal(bins[0], [-90, 50])
  np.testing.assert_array_equal(bins[-1], [100, 0])


def test_313_bins_provenance_file():
  note = os.path.join(os.path.dirname(prior_lib.BINS_313_PATH),
                      "ab_bins_313.txt")
  text = open(note).read()
  assert "pts_in_hull.npy" in text and "richzhang/colorization" in text
  assert "samples/dnn/colorization.cpp" in text
  digest = hashlib.sha256(
      np.ascontiguousarray(prior_lib.load_ab_bins_313(), "<f4").tobytes()
  ).hexdigest()
  assert digest in text


def test_313_bins_are_not_the_srgb_gamut_on_the_grid():
  """The documented reason the bins are shipped: the gamut gives fewer."""
  # Every sRGB colour on a 6-bit grid (262,144 colours).
  levels = np.linspace(0, 255, 64, dtype=np.float32)
  rgb = np.stack(np.meshgrid(levels, levels, levels), -1).reshape(-1, 3)
  ab = color.rgb_to_lab(rgb).numpy()[:, 1:]
  cells = np.unique(np.round(ab / 10.0).astype(int), axis=0)
  assert 200 < len(cells) < 313
