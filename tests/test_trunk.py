"""Trunk: equality with keras.applications.ResNet101V2, shapes, configs."""
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.models import (DEPTHS, Trunk, TrunkConfig, build_trunk,
                             copy_weights_by_name)


def _randomize_bn(model, seed=0):
  """Non-trivial BN statistics, so that a wrong epsilon or a missed layer
  shows up in the outputs."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      gamma, beta, mean, var = layer.get_weights()
      layer.set_weights([
          rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
          rng.normal(0, 0.1, beta.shape).astype(np.float32),
          rng.normal(0, 0.1, mean.shape).astype(np.float32),
          rng.uniform(0.5, 1.5, var.shape).astype(np.float32)])


def _expected_params(units, filters, stem=64):
  """Parameter count from the bottleneck-v2 formula (BN: 4 per channel)."""
  total = 7 * 7 * 3 * stem + stem
  c_in = stem
  for n, f in zip(units, filters):
    for k in range(1, n + 1):
      total += 4 * c_in                      # preact BN
      if k == 1:
        total += c_in * 4 * f + 4 * f        # projection shortcut (bias)
      total += c_in * f + 4 * f              # 1x1 conv (no bias) + BN
      total += 9 * f * f + 4 * f             # 3x3 conv (no bias) + BN
      total += f * 4 * f + 4 * f             # 1x1 conv with bias
      c_in = 4 * f
  return total


def test_depth101_matches_keras_resnet101v2_at_every_unit():
  config = TrunkConfig(depth=101, block3_last_stride=2, pool_padding="keras",
                       input_normalization="none")
  ours = build_trunk(config)
  ref = keras.applications.ResNet101V2(weights=None, include_top=False,
                                       input_shape=(None, None, 3))
  _randomize_bn(ref)
  unused = copy_weights_by_name(ref, ours)
  # Nothing of ours left unfilled (copy raises otherwise); the only Keras
  # layers left over are block 4 and the final BN.
  assert unused and all(n.startswith("conv5_") or n == "post_bn"
                        for n in unused), unused
  assert "post_bn" in unused
  names = config.output_names()
  assert names[-1] == "conv4_block23_out" and len(names) == 3 + 23
  ref_multi = keras.Model(ref.input, [ref.get_layer(n).output for n in names])
  x = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
  got = ours(x)
  want = ref_multi(x)
  for name, w in zip(names, want):
    np.testing.assert_allclose(got[name], w, atol=1e-5, rtol=0, err_msg=name)
  assert got["conv4_block23_out"].shape == (2, 2, 2, 1024)
  assert got["conv4_block22_out"].shape == (2, 4, 4, 1024)


def test_depth101_parameter_count_is_exact():
  trunk = build_trunk(TrunkConfig(depth=101))
  assert trunk.count_params() == 27_635_200
  assert trunk.count_params() == _expected_params((3, 4, 23), (64, 128, 256))


@pytest.mark.parametrize("depth,width", [(26, 0.25), (50, 0.5)])
def test_parameter_count_formula_other_sizes(depth, width):
  config = TrunkConfig(depth=depth, width=width)
  trunk = build_trunk(config)
  assert trunk.count_params() == _expected_params(
      DEPTHS[depth], config.filters, config.stem_filters)


def test_default_block3_units_share_output_stride_16():
  trunk = Trunk(depth=38, width=0.25)
  out = trunk(tf.zeros([2, 64, 64, 3]))
  assert list(out) == trunk.config.output_names()
  for name in trunk.unit_names:
    assert out[name].shape == (2, 4, 4, 256), name
  assert out["conv2_block3_out"].shape[1] == 8  # stride 8 after block 1
  assert out["conv3_block3_out"].shape[1] == 4


@pytest.mark.parametrize("padding,size", [("valid", 15), ("keras", 16),
                                          ("same", 16)])
def test_stem_pool_padding(padding, size):
  trunk = build_trunk(TrunkConfig(depth=14, width=0.25, pool_padding=padding))
  out = trunk(tf.zeros([1, 64, 64, 3]))
  assert out["pool1_pool"].shape[1:3] == (size, size)


def test_valid_pool_differs_from_keras_zero_padding():
  # Max-pool over zero padding is not 'VALID': negative stem activations at
  # the border are replaced by 0 in the Keras variant.
  a = build_trunk(TrunkConfig(depth=14, width=0.25, pool_padding="same"))
  b = build_trunk(TrunkConfig(depth=14, width=0.25, pool_padding="keras"))
  b.set_weights(a.get_weights())
  x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("f4")
  assert not np.allclose(a(x)["pool1_pool"], b(x)["pool1_pool"])


def test_input_normalization_modes():
  x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("f4")
  base = build_trunk(TrunkConfig(depth=14, width=0.25,
                                 input_normalization="none"))
  for mode, fn in [("slim", lambda v: v - np.array([123.68, 116.779, 103.939],
                                                     np.float32)),
                   ("keras_v2", lambda v: v / 127.5 - 1.0)]:
    other = build_trunk(TrunkConfig(depth=14, width=0.25,
                                    input_normalization=mode))
    copy_weights_by_name(base, other)
    np.testing.assert_allclose(other(x)["conv4_block1_out"],
                               base(fn(x))["conv4_block1_out"],
                               atol=1e-4, rtol=1e-4)


def test_sync_bn_flag_reaches_every_bn_layer():
  trunk = build_trunk(TrunkConfig(depth=14, width=0.25, sync_bn=True))
  bns = [l for l in trunk.layers
         if isinstance(l, keras.layers.BatchNormalization)]
  assert bns and all(l.synchronized for l in bns)


def test_tf_keras_trunk_equals_keras3_trunk():
  import tf_keras
  config = TrunkConfig(depth=26, width=0.5, sync_bn=False)
  k3 = build_trunk(config)
  _randomize_bn(k3, seed=3)
  k2 = build_trunk(config, keras_module=tf_keras)
  assert isinstance(k2, tf_keras.Model)
  assert copy_weights_by_name(k3, k2, allow_unused=False) == []
  x = np.random.default_rng(2).uniform(0, 255, (2, 48, 48, 3)).astype("f4")
  a, b = k3(x), k2(x, training=False)
  for name in config.output_names():
    np.testing.assert_allclose(a[name], b[name].numpy(), atol=1e-4,
                               rtol=1e-5, err_msg=name)


def test_trunk_get_config_round_trip():
  trunk = Trunk(depth=14, width=0.25, pool_padding="keras")
  clone = Trunk.from_config(trunk.get_config())
  assert clone.config == trunk.config
  assert clone.count_params() == trunk.count_params()


@pytest.mark.parametrize("field,value,words", [
    ("depth", 34, "allowed: 14, 26, 38, 50, 101, 152"),
    ("width", 0, "must be a number > 0"),
    ("width", -0.5, "-0.5"),
    ("block3_last_stride", 3, "allowed: 1, 2"),
    ("pool_padding", "zero", "allowed: valid, keras, same"),
    ("input_normalization", "caffe", "allowed: slim"),
])
def test_bad_config_names_field_value_and_allowed(field, value, words):
  with pytest.raises(ValueError) as info:
    TrunkConfig(**{field: value})
  message = str(info.value)
  assert f"TrunkConfig.{field}" in message and words in message


def test_unit_index_out_of_range():
  config = TrunkConfig(depth=50)
  assert config.unit_name(6) == "conv4_block6_out"
  for bad in (0, 7, -1):
    with pytest.raises(ValueError, match=r"units 1\.\.6"):
      config.unit_name(bad)


def test_import_cost_is_tensorflow_plus_keras():
  """`import mtssl_tf` adds only the package's own modules to what
  `import tensorflow, keras` already loads."""
  code = ("import sys, tensorflow, keras; before = set(sys.modules); "
          "import mtssl_tf; print(sorted(m for m in set(sys.modules) - before "
          "if not m.startswith('mtssl_tf')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip().splitlines()[-1] == "[]"


def test_zero_init_residual_starts_every_unit_as_its_shortcut():
  # Reference: a unit whose branch adds zero is its shortcut, so every unit
  # after the first of a block passes its input through unchanged.
  x = np.random.default_rng(4).uniform(0, 255, (2, 48, 48, 3)).astype("f4")
  config = TrunkConfig(depth=26, width=0.25, zero_init_residual=True)
  trunk = build_trunk(config)
  convs = [l for l in trunk.layers if l.name.endswith("_3_conv")]
  assert convs and all(not np.any(l.kernel.numpy()) for l in convs)
  out = trunk(x)
  np.testing.assert_array_equal(out["conv4_block2_out"],
                                out["conv4_block1_out"])
  default = build_trunk(TrunkConfig(depth=26, width=0.25))(x)
  assert np.abs(default["conv4_block2_out"]
                - default["conv4_block1_out"]).max() > 1e-3
  # It is an initialisation, not an architecture: same weights, same config
  # round trip, and older configs without the field still load.
  assert Trunk(**dict(config.to_dict())).config == config
  old = {k: v for k, v in TrunkConfig(depth=14, width=0.25).to_dict().items()
         if k != "zero_init_residual"}
  assert Trunk.from_config(old).config.zero_init_residual is False


def test_features_model_is_one_output_of_the_trunk(tmp_path):
  trunk = Trunk(depth=26, width=0.25)
  _randomize_bn(trunk)
  images = np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3)).astype("f4")
  units = trunk(images)
  deepest = trunk.features_model()
  assert deepest.name == "trunk_conv4_block2_out"
  np.testing.assert_allclose(deepest(images), units["conv4_block2_out"],
                             atol=1e-5)
  np.testing.assert_allclose(trunk.features_model("conv4_block1_out")(images),
                             units["conv4_block1_out"], atol=1e-5)
  with pytest.raises(ValueError, match=r"output='conv5_block1_out' is not an "
                     r"output of this trunk; its outputs: pool1_pool"):
    trunk.features_model("conv5_block1_out")
  # Transfer learning: it sits in a Sequential, fitting it moves the trunk's
  # own weights, and the classifier reloads as a plain Keras model.
  classifier = keras.Sequential([
      keras.Input((32, 32, 3)), deepest,
      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
  classifier.compile(keras.optimizers.SGD(0.01), keras.losses.
                     SparseCategoricalCrossentropy(from_logits=True))
  kernel = trunk.get_layer("conv4_block2_3_conv").kernel
  before = kernel.numpy().copy()
  classifier.fit(images, np.array([0, 2]), epochs=1, verbose=0)
  assert np.max(np.abs(kernel.numpy() - before)) > 0
  path = str(tmp_path / "classifier.keras")
  classifier.save(path)
  reloaded = keras.saving.load_model(path)
  np.testing.assert_allclose(reloaded(images), classifier(images), atol=1e-5)


def test_from_preset_with_an_output_gives_the_single_output_model():
  trunk = Trunk.from_preset("rp")
  images = np.random.default_rng(6).uniform(0, 255, (1, 32, 32, 3)).astype("f4")
  expected = trunk(images)
  block3 = Trunk.from_preset("rp", output="block3")
  assert isinstance(block3, keras.Model) and not isinstance(block3, Trunk)
  np.testing.assert_allclose(block3(images), expected[trunk.unit_names[-1]],
                             atol=1e-5)
  np.testing.assert_allclose(
      Trunk.from_preset("rp", output="conv3_block4_out")(images),
      expected["conv3_block4_out"], atol=1e-5)
