"""What the trunk takes as images: grey, RGB and RGBA, uint8 or float, become
RGB float32; other dtypes, ranks and channel counts raise one short
ValueError naming them; float images that look scaled to [0, 1] warn once
per trunk.

Every case runs on a fresh ``Trunk``, on the trunk of a ``MultiTaskModel``
(``model.trunk`` and ``model.features``) and on that model reloaded from its
exported ``.keras`` file. The reference is the plain functional graph of
``build_trunk`` (no input handling) with the same weights, fed the RGB
float32 pixels made with NumPy. The exported SavedModel's
``serving_default`` signature takes uint8 RGB only and refuses the rest.
"""
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf  # noqa: F401  (registers the Keras classes for load_model)
from mtssl_tf.models import Trunk, TrunkConfig, build_trunk
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.serving import model_export

from harness import TRUNK, tiny_params

SIZE = 32  # also the serving resize, so that it keeps the pixels
RTOL, ATOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def pixels():
  """uint8 RGB [2, 32, 32, 3], grey [2, 32, 32] and alpha [2, 32, 32, 1]."""
  rng = np.random.default_rng(0)
  return {"rgb": rng.integers(0, 256, (2, SIZE, SIZE, 3), np.uint8),
          "grey": rng.integers(0, 256, (2, SIZE, SIZE), np.uint8),
          "alpha": rng.integers(0, 256, (2, SIZE, SIZE, 1), np.uint8)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny multi-task model and its export (``.keras`` + SavedModel)."""
  keras.utils.set_random_seed(0)
  model = MultiTaskModel(trunk=TRUNK,
                         tasks={"colorization": tiny_params("colorization")})
  export_dir = str(tmp_path_factory.mktemp("export"))
  paths = model_export.export_model(model, export_dir,
                                    "m", image_size=SIZE)
  return model, paths


@pytest.fixture(scope="module")
def reference(exported):
  """Last block-3 unit of the plain functional trunk with the model's
  weights: float32 RGB [N, H, W, 3] -> NumPy array."""
  model, _ = exported
  plain = build_trunk(TrunkConfig(**TRUNK))
  plain.set_weights(model.trunk.get_weights())
  last = model.trunk.unit_names[-1]
  return lambda rgb: plain(np.asarray(rgb, np.float32))[last].numpy()


def _fresh_trunk(model):
  trunk = Trunk(**TRUNK)
  trunk.set_weights(model.trunk.get_weights())
  return trunk


@pytest.fixture(scope="module", params=["trunk", "model.trunk",
                                        "model.features", "reloaded"])
def features(request, exported):
  """images -> the last block-3 unit, by one of the four ways in."""
  model, paths = exported
  last = model.trunk.unit_names[-1]
  if request.param == "trunk":
    trunk = _fresh_trunk(model)
    return lambda x: trunk(x)[last].numpy()
  if request.param == "model.trunk":
    return lambda x: model.trunk(x)[last].numpy()
  if request.param == "model.features":
    return lambda x: model.features(x).numpy()
  loaded = keras.models.load_model(paths["keras"])
  assert isinstance(loaded, MultiTaskModel)
  return lambda x: loaded.features(x).numpy()


def _rgba(p, dtype=np.uint8):
  return np.concatenate([p["rgb"], p["alpha"]], -1).astype(dtype)


def _grey_rgb(p):
  return np.repeat(p["grey"][..., None], 3, axis=-1)


# name -> pixels -> (input, the RGB pixels whose features it must give)
ACCEPTED = {
    "grey_3d": lambda p: (p["grey"], _grey_rgb(p)),
    "grey_4d": lambda p: (p["grey"][..., None], _grey_rgb(p)),
    "rgb_uint8": lambda p: (p["rgb"], p["rgb"]),
    "rgb_float32": lambda p: (p["rgb"].astype(np.float32), p["rgb"]),
    "rgb_float64": lambda p: (p["rgb"].astype(np.float64), p["rgb"]),
    "rgb_float16": lambda p: (p["rgb"].astype(np.float16), p["rgb"]),
    "rgba_uint8": lambda p: (_rgba(p), p["rgb"]),
    "rgba_float32": lambda p: (_rgba(p, np.float32), p["rgb"]),
}

_EXPECTED = r"; expected uint8 or float RGB values in \[0, 255\]"
# name -> (input, what the message must say)
REFUSED = {
    "rank_2": (np.zeros((SIZE, SIZE), np.uint8),
               r"shape \(32, 32\) has rank 2 \(one image: add the batch "
               r"axis, images\[None\]\)" + _EXPECTED),
    "rank_5": (np.zeros((1, 2, SIZE, SIZE, 3), np.uint8),
               r"shape \(1, 2, 32, 32, 3\) has rank 5" + _EXPECTED),
    "unbatched_rgb": (np.zeros((SIZE, SIZE, 3), np.uint8),
                      r"shape \(32, 32, 3\) is ambiguous: one image without "
                      r"its batch axis \(add it: images\[None\]\)"),
    "channels_2": (np.zeros((2, SIZE, SIZE, 2), np.uint8),
                   r"2 channels \(shape \(2, 32, 32, 2\)\)" + _EXPECTED),
    "channels_5": (np.zeros((2, SIZE, SIZE, 5), np.float32),
                   r"5 channels \(shape \(2, 32, 32, 5\)\)" + _EXPECTED),
    "bool": (np.zeros((2, SIZE, SIZE, 3), bool),
             r"dtype bool is not accepted" + _EXPECTED),
    "int64": (np.zeros((2, SIZE, SIZE, 3), np.int64),
              r"dtype int64 is not accepted \(integers in 0\.\.255: "
              r"\.astype\('uint8'\)\)" + _EXPECTED),
    "complex64": (np.zeros((2, SIZE, SIZE, 3), np.complex64),
                  r"dtype complex64 is not accepted" + _EXPECTED),
    "string": (np.full((2, 4, 4, 3), "a"),
               r"dtype str32 is not accepted" + _EXPECTED),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_images_give_the_features_of_their_rgb(case, pixels,
                                                        features, reference):
  images, rgb = ACCEPTED[case](pixels)
  got = features(images)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, reference(rgb), rtol=RTOL, atol=ATOL)


def test_alpha_does_not_matter(pixels, features):
  opaque = _rgba(pixels)
  opaque[..., 3] = 255
  np.testing.assert_allclose(features(_rgba(pixels)), features(opaque),
                             rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_images_raise_one_short_value_error(case, features):
  images, message = REFUSED[case]
  with pytest.raises(ValueError, match=message) as info:
    features(images)
  # The message names the problem; no pixels, no Keras call report.
  text = str(info.value)
  assert "\n" not in text and len(text) < 300, text


def test_ragged_lists_are_refused(features):
  with pytest.raises(ValueError, match="not a rectangular array"):
    features([[[[1.0, 2.0, 3.0]]], [[[1.0, 2.0]]]])


def _records(call):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    call()
  return [w for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("source", ["trunk", "reloaded"])
def test_unit_range_floats_warn_once_per_trunk(source, pixels, exported,
                                               reference):
  model, paths = exported
  if source == "trunk":
    trunk = _fresh_trunk(model)
  else:
    trunk = keras.models.load_model(paths["keras"]).trunk
  last = trunk.unit_names[-1]
  scaled = pixels["rgb"].astype(np.float32) / 255
  with pytest.warns(UserWarning, match=r"float images with maximum 1 look "
                    r"scaled to \[0, 1\]; the trunk expects RGB in \[0, 255\] "
                    r"\(multiply by 255\)"):
    got = trunk(scaled)[last].numpy()
  # A warning, not a refusal: the values are used as they are.
  np.testing.assert_allclose(got, reference(scaled), rtol=RTOL, atol=ATOL)
  assert not _records(lambda: trunk(scaled)), "warned twice"
  assert not _records(lambda: trunk(pixels["rgb"] / 512.0))


def test_each_trunk_warns_on_its_own(pixels, exported):
  model, _ = exported
  scaled = pixels["rgb"] / 255.0
  for _ in range(2):
    trunk = _fresh_trunk(model)
    assert len(_records(lambda: trunk(scaled))) == 1  # pylint: disable=cell-var-from-loop


def test_images_in_0_255_do_not_warn(pixels, exported):
  model, _ = exported
  trunk = _fresh_trunk(model)
  dark = np.minimum(pixels["rgb"], 1)  # uint8 with maximum 1
  for images in (pixels["rgb"].astype(np.float32), pixels["rgb"] * 1.0,
                 dark, np.zeros((2, SIZE, SIZE, 3), np.float32)):
    assert not _records(lambda: trunk(images)), images.dtype  # pylint: disable=cell-var-from-loop
  assert not trunk._warned_unit_range  # pylint: disable=protected-access


def test_traced_calls_convert_and_skip_the_range_check(pixels, exported,
                                                       reference):
  model, _ = exported
  trunk = _fresh_trunk(model)
  last = trunk.unit_names[-1]
  run = tf.function(lambda x: trunk(x)[last])
  np.testing.assert_allclose(run(tf.constant(pixels["grey"])).numpy(),
                             reference(_grey_rgb(pixels)), rtol=RTOL,
                             atol=ATOL)
  assert not _records(lambda: run(tf.constant(pixels["rgb"] / 255.0)))
  with pytest.raises(ValueError, match="dtype bool is not accepted"):
    run(tf.zeros([2, SIZE, SIZE, 3], tf.bool))


def test_symbolic_inputs_compose(pixels, exported, reference):
  model, _ = exported
  trunk = _fresh_trunk(model)
  last = trunk.unit_names[-1]
  grey_in = keras.Input(shape=(None, None, 1))
  grey_model = keras.Model(grey_in, trunk(grey_in)[last])
  np.testing.assert_allclose(grey_model(pixels["grey"][..., None]).numpy(),
                             reference(_grey_rgb(pixels)), rtol=RTOL,
                             atol=ATOL)
  sequential = keras.Sequential([keras.Input(shape=(None, None, 3)), trunk])
  np.testing.assert_allclose(sequential(pixels["rgb"])[last].numpy(),
                             reference(pixels["rgb"]), rtol=RTOL, atol=ATOL)
  with pytest.raises(ValueError, match="2 channels"):
    trunk(keras.Input(shape=(None, None, 2)))


# -- the SavedModel's serving signature ---------------------------------------

SERVING_REFUSED = {
    # name -> what the error says; the signature's dtype is uint8.
    "grey_3d": r"3 \(RGB\) channels, \[N, H, W, 3\]; convert grey or RGBA",
    "grey_4d": r"3 \(RGB\) channels, \[N, H, W, 3\]; convert grey or RGBA",
    "rgb_float32": "expected to be a uint8 tensor but is a float tensor",
    "rgb_float64": "expected to be a uint8 tensor but is a double tensor",
    "rgb_float16": "expected to be a uint8 tensor but is a half tensor",
    "rgba_uint8": r"3 \(RGB\) channels, \[N, H, W, 3\]; convert grey or RGBA",
    "rgba_float32": "expected to be a uint8 tensor but is a float tensor",
    "rank_2": r"3 \(RGB\) channels",
    "rank_5": "input must be 4-dimensional",
    "unbatched_rgb": "input must be 4-dimensional",
    "channels_2": r"3 \(RGB\) channels",
    "channels_5": "expected to be a uint8 tensor but is a float tensor",
    "bool": "expected to be a uint8 tensor but is a bool tensor",
    "int64": "expected to be a uint8 tensor but is a int64 tensor",
    "complex64": "expected to be a uint8 tensor but is a complex64 tensor",
    "string": "expected to be a uint8 tensor but is a string tensor",
}


@pytest.fixture(scope="module")
def signature(exported):
  _, paths = exported
  return tf.saved_model.load(paths["saved_model"]).signatures[
      "serving_default"]


def test_signature_takes_uint8_rgb(pixels, signature, reference):
  got = signature(images=tf.constant(pixels["rgb"]))["block3"].numpy()
  np.testing.assert_allclose(got, reference(pixels["rgb"]), rtol=RTOL,
                             atol=ATOL)


@pytest.mark.parametrize("case", list(SERVING_REFUSED))
def test_signature_refuses_the_rest(case, pixels, signature):
  if case in ACCEPTED:
    images, _ = ACCEPTED[case](pixels)
  else:
    images, _ = REFUSED[case]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=SERVING_REFUSED[case]):
    signature(images=tf.constant(images))
