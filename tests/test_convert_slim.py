"""TF-Slim checkpoint converter: names, BN epsilon, 'SAME' pool, input mean.

The checkpoints are written here with Slim's variable names, as the
``tf.compat.v1`` Saver that TF-Slim uses writes them. The reference is a
float64 re-implementation of Slim's ``resnet_v2`` (``bottleneck`` /
``conv2d_same`` / ``subsample`` of ``research/slim/nets``) that reads the
checkpoint's values by Slim name, independent of the Keras layer names.
"""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf  # noqa: F401  (registers the Trunk for load_model)
from mtssl_tf import convert_slim
from mtssl_tf.models import Trunk
from mtssl_tf.models import slim_conversion
from mtssl_tf.models.slim_conversion import SlimConversionError

MEAN_RGB = np.array([123.68, 116.779, 103.939])
SLIM_UNITS = {26: (2, 2, 2), 101: (3, 4, 23)}
BN_LEAVES = ("beta", "gamma", "moving_mean", "moving_variance")


# ---------------------------------------------------------------------------
# Slim side: variable names and shapes, checkpoint writer, reference forward.

def _slim_shapes(scope, units, width=1.0):
  """Slim ``resnet_v2`` variables through block 3 (batch_norm_scale=True)."""
  def c(n):
    return max(1, int(round(n * width)))
  stem = c(64)
  shapes = {f"{scope}/conv1/weights": (7, 7, 3, stem),
            f"{scope}/conv1/biases": (stem,)}

  def bn(prefix, ch):
    for leaf in BN_LEAVES:
      shapes[prefix + leaf] = (ch,)

  depth_in = stem
  for b, (n, base) in enumerate(zip(units, (64, 128, 256)), start=1):
    f = c(base)
    for k in range(1, n + 1):
      p = f"{scope}/block{b}/unit_{k}/bottleneck_v2/"
      bn(p + "preact/", depth_in)
      if depth_in != 4 * f:   # Slim: projection only where depth changes
        shapes[p + "shortcut/weights"] = (1, 1, depth_in, 4 * f)
        shapes[p + "shortcut/biases"] = (4 * f,)
      shapes[p + "conv1/weights"] = (1, 1, depth_in, f)
      bn(p + "conv1/BatchNorm/", f)
      shapes[p + "conv2/weights"] = (3, 3, f, f)
      bn(p + "conv2/BatchNorm/", f)
      shapes[p + "conv3/weights"] = (1, 1, f, 4 * f)
      shapes[p + "conv3/biases"] = (4 * f,)
      depth_in = 4 * f
  return shapes


def _random_values(shapes, seed=0):
  """Random weights that keep activations O(1), and non-trivial BN stats."""
  rng = np.random.default_rng(seed)
  values = {}
  for name, shape in sorted(shapes.items()):
    leaf = name.rpartition("/")[2]
    if leaf == "weights":
      fan_in = np.prod(shape[:3])
      scale = np.sqrt(2.0 / fan_in) * (0.5 if "conv3" in name else 1.0)
      if name.endswith("/conv1/weights") and "block" not in name:
        scale /= 64.0  # the stem sees mean-subtracted [0, 255] pixels
      v = rng.normal(0, scale, shape)
    elif leaf in ("biases", "beta", "moving_mean"):
      v = rng.normal(0, 0.1, shape)
    elif leaf == "gamma":
      v = rng.uniform(0.5, 1.5, shape)
    else:
      v = rng.uniform(0.5, 1.5, shape)
    values[name] = v.astype(np.float32)
  # A quarter of the channels of every BN get a variance near epsilon, so a
  # wrong epsilon shows; their gamma ~ sqrt(variance) keeps outputs O(1).
  for name in shapes:
    if name.endswith("/moving_variance"):
      var, gamma = values[name], values[name[:-len("moving_variance")]
                                        + "gamma"]
      var[::4] = rng.uniform(1e-6, 4e-6, var[::4].shape)
      gamma[::4] = np.sqrt(var[::4]) * rng.uniform(0.5, 1.5, var[::4].shape)
  return values


def _write_checkpoint(directory, values, step=1000):
  """Writes ``values`` (name -> array) as TF-Slim does: a compat.v1 Saver."""
  # The values are fed to the initializers rather than held as graph
  # constants, and no meta graph is written (the converter reads variables
  # only): a ResNet-101's 27M values would otherwise be copied into the
  # graph and its .meta file.
  graph = tf.Graph()
  with graph.as_default():
    feeds, variables = {}, []
    for n, v in values.items():
      init = tf.compat.v1.placeholder(tf.as_dtype(v.dtype), v.shape)
      feeds[init] = v
      variables.append(tf.compat.v1.Variable(init, name=n))
    saver = tf.compat.v1.train.Saver(variables)
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.variables_initializer(variables), feeds)
      return saver.save(sess, os.path.join(directory, "model.ckpt"),
                        global_step=step, write_meta_graph=False)


def _conv(x, w, stride, padding):
  return tf.nn.conv2d(x, w, strides=stride, padding=padding)


def _conv2d_same(x, w, stride):
  """Slim's ``conv2d_same``: 'SAME' at stride 1, else explicit pad + VALID."""
  if stride == 1:
    return _conv(x, w, 1, "SAME")
  k = w.shape[0]
  beg, end = (k - 1) // 2, (k - 1) - (k - 1) // 2
  x = tf.pad(x, [[0, 0], [beg, end], [beg, end], [0, 0]])
  return _conv(x, w, stride, "VALID")


def _slim_forward(values, images, scope, units, block3_last_stride=2,
                  pool_padding="SAME", epsilon=1e-5):
  """Slim ``resnet_v2`` through block 3 in float64; returns end points.

  ``pool_padding`` defaults to 'SAME': Slim's ``resnet_arg_scope`` sets
  ``slim.arg_scope([slim.max_pool2d], padding='SAME')``.
  """
  v = {n: tf.constant(a, tf.float64) for n, a in values.items()}

  def bn(x, prefix, relu=True):
    y = tf.nn.batch_normalization(
        x, v[prefix + "moving_mean"], v[prefix + "moving_variance"],
        v[prefix + "beta"], v[prefix + "gamma"], epsilon)
    return tf.nn.relu(y) if relu else y

  x = tf.constant(images, tf.float64) - MEAN_RGB
  x = _conv2d_same(x, v[f"{scope}/conv1/weights"], 2) + v[
      f"{scope}/conv1/biases"]
  x = tf.nn.max_pool2d(x, 3, 2, pool_padding)
  ends = {"pool1": x}
  for b, n in enumerate(units, start=1):
    for k in range(1, n + 1):
      stride = (2 if b < 3 else block3_last_stride) if k == n else 1
      p = f"{scope}/block{b}/unit_{k}/bottleneck_v2/"
      preact = bn(x, p + "preact/")
      if p + "shortcut/weights" in v:
        shortcut = _conv(preact, v[p + "shortcut/weights"], stride,
                         "VALID") + v[p + "shortcut/biases"]
      else:
        shortcut = x[:, ::stride, ::stride, :]   # 1x1 max-pool, stride s
      r = bn(_conv(preact, v[p + "conv1/weights"], 1, "SAME"),
             p + "conv1/BatchNorm/")
      r = bn(_conv2d_same(r, v[p + "conv2/weights"], stride),
             p + "conv2/BatchNorm/")
      r = _conv(r, v[p + "conv3/weights"], 1, "SAME") + v[p + "conv3/biases"]
      x = shortcut + r
      ends[f"block{b}/unit_{k}"] = x.numpy()
  return ends


def _keras_end_point(slim_end_point):
  """``block3/unit_7`` -> ``conv4_block7_out`` (Keras/Slim correspondence)."""
  if slim_end_point == "pool1":
    return "pool1_pool"
  block, unit = slim_end_point.split("/")
  return f"conv{int(block[5:]) + 1}_block{unit[5:]}_out"


def _assert_matches_reference(outputs, ref, units):
  checked = 0
  for name, want in ref.items():
    key = _keras_end_point(name)
    if key not in outputs:
      continue
    got = np.asarray(outputs[key])
    assert got.shape == want.shape, (name, got.shape, want.shape)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale,
                               err_msg=name)
    checked += 1
  assert checked == 3 + units[2]


def _images(shape=(2, 64, 48, 3), seed=1):
  return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
  """A depth-26, width-0.25 Slim checkpoint plus the variables a training
  run leaves beside the trunk's (block 4, postnorm, logits, step, slots)."""
  scope = "resnet_v2_26"
  values = _random_values(_slim_shapes(scope, SLIM_UNITS[26], width=0.25))
  extras = {
      "global_step": np.array(1000, np.int64),
      f"{scope}/block4/unit_1/bottleneck_v2/conv1/weights":
          np.zeros((1, 1, 256, 128), np.float32),
      f"{scope}/postnorm/gamma": np.ones(512, np.float32),
      f"{scope}/logits/weights": np.zeros((1, 1, 512, 10), np.float32),
      f"{scope}/conv1/weights/RMSProp": np.zeros((7, 7, 3, 16), np.float32),
      f"{scope}/conv1/weights/RMSProp_1": np.zeros((7, 7, 3, 16), np.float32),
      f"{scope}/block1/unit_1/bottleneck_v2/conv1/weights/Momentum":
          np.zeros((1, 1, 16, 16), np.float32),
      f"{scope}/block1/unit_1/bottleneck_v2/preact/gamma/"
      "ExponentialMovingAverage": np.zeros(16, np.float32),
  }
  directory = tmp_path_factory.mktemp("slim26")
  prefix = _write_checkpoint(str(directory), {**values, **extras})
  return dict(scope=scope, values=values, extras=extras, prefix=prefix,
              directory=str(directory))


# ---------------------------------------------------------------------------
# Equality with Slim.

@pytest.mark.parametrize("block3_last_stride,pool_padding",
                         [(2, "same"), (1, "same"), (2, "valid")])
def test_converted_trunk_matches_slim_reference(small_ckpt, block3_last_stride,
                                                pool_padding):
  trunk, report = slim_conversion.convert_checkpoint(
      small_ckpt["prefix"], depth=26, width=0.25,
      block3_last_stride=block3_last_stride, pool_padding=pool_padding)
  images = _images()
  ref = _slim_forward(small_ckpt["values"], images, small_ckpt["scope"],
                      SLIM_UNITS[26], block3_last_stride=block3_last_stride,
                      pool_padding=pool_padding.upper())
  _assert_matches_reference(trunk(images), ref, SLIM_UNITS[26])
  assert len(report.mapped) == len(small_ckpt["values"])
  # 64 x 48 input: conv1 -> 32 x 24; 'SAME' 3x3/2 pool -> 16 x 12 ('VALID'
  # 15 x 11); blocks 1 and 2 halve, block 3 halves only with a last stride of 2.
  h, w = (15, 11) if pool_padding == "valid" else (16, 12)
  for _ in range(2 + (block3_last_stride == 2)):
    h, w = (h + 1) // 2, (w + 1) // 2
  assert ref["block3/unit_2"].shape == (2, h, w, 256)


def test_default_conversion_pools_like_slim_to_56x56_at_224_px(small_ckpt):
  """Slim's resnet_arg_scope pools with 'SAME': conv1 112x112 -> pool1
  56x56 at 224 px (a 'VALID' pool would give 55x55, shifted by a pixel)."""
  trunk, report = slim_conversion.convert_checkpoint(small_ckpt["prefix"],
                                                  depth=26, width=0.25)
  assert report.trunk_config["pool_padding"] == "same"
  images = _images((1, 224, 224, 3), seed=4)
  ref = _slim_forward(small_ckpt["values"], images, small_ckpt["scope"],
                      SLIM_UNITS[26], block3_last_stride=1)
  assert ref["pool1"].shape == (1, 56, 56, 16)
  _assert_matches_reference(trunk(images), ref, SLIM_UNITS[26])
  valid = _slim_forward(small_ckpt["values"], images, small_ckpt["scope"],
                        SLIM_UNITS[26], pool_padding="VALID")["pool1"]
  assert valid.shape == (1, 55, 55, 16)


def test_last_stride_one_is_slims_last_unit_computed_densely(small_ckpt):
  trunk, _ = slim_conversion.convert_checkpoint(small_ckpt["prefix"], depth=26,
                                             width=0.25, block3_last_stride=1)
  images = _images()
  dense = np.asarray(trunk(images)["conv4_block2_out"])
  slim = _slim_forward(small_ckpt["values"], images, small_ckpt["scope"],
                       SLIM_UNITS[26], block3_last_stride=2)["block3/unit_2"]
  np.testing.assert_allclose(dense[:, ::2, ::2], slim, rtol=0,
                             atol=1e-5 * np.abs(slim).max())


def test_reference_is_sensitive_to_epsilon_pool_and_mean(small_ckpt):
  """The reference test above would catch each of the differences between
  Slim and Keras's ResNetV2 that the converter must get right."""
  trunk, _ = slim_conversion.convert_checkpoint(
      small_ckpt["prefix"], depth=26, width=0.25, block3_last_stride=2)
  assert all(l.epsilon == 1e-5 for l in trunk.layers
             if isinstance(l, keras.layers.BatchNormalization))
  images = _images()
  got = np.asarray(trunk(images)["conv4_block2_out"])
  args = (small_ckpt["values"], images, small_ckpt["scope"], SLIM_UNITS[26])
  keras_eps = _slim_forward(*args, epsilon=1.001e-5)["block3/unit_2"]
  assert np.abs(got - keras_eps).max() > 5e-5 * np.abs(keras_eps).max()
  pool = np.asarray(trunk(images)["pool1_pool"])
  valid = _slim_forward(*args, pool_padding="VALID")["pool1"]
  assert valid.shape != pool.shape
  # Inputs that are already mean-subtracted are not the same network input.
  shifted = _slim_forward(small_ckpt["values"], images - MEAN_RGB,
                          small_ckpt["scope"], SLIM_UNITS[26])["block3/unit_2"]
  assert np.abs(got - shifted).max() > 1e-2 * np.abs(shifted).max()


def _keras_to_slim(trunk, scope, units):
  """Slim name -> value of a Keras trunk, walking Slim's structure."""
  out = {f"{scope}/conv1/weights": trunk.get_layer("conv1_conv").kernel,
         f"{scope}/conv1/biases": trunk.get_layer("conv1_conv").bias}

  def bn(prefix, layer):
    for leaf in BN_LEAVES:
      out[prefix + leaf] = getattr(layer, leaf)

  for b, n in enumerate(units, start=1):
    for k in range(1, n + 1):
      p, u = (f"{scope}/block{b}/unit_{k}/bottleneck_v2/",
              f"conv{b + 1}_block{k}_")
      bn(p + "preact/", trunk.get_layer(u + "preact_bn"))
      if k == 1:
        out[p + "shortcut/weights"] = trunk.get_layer(u + "0_conv").kernel
        out[p + "shortcut/biases"] = trunk.get_layer(u + "0_conv").bias
      for i in (1, 2):
        out[p + f"conv{i}/weights"] = trunk.get_layer(u + f"{i}_conv").kernel
        bn(p + f"conv{i}/BatchNorm/", trunk.get_layer(u + f"{i}_bn"))
      out[p + "conv3/weights"] = trunk.get_layer(u + "3_conv").kernel
      out[p + "conv3/biases"] = trunk.get_layer(u + "3_conv").bias
  return {n: keras.ops.convert_to_numpy(v) for n, v in out.items()}


def test_random_trunk_round_trip_gives_identical_outputs(tmp_path):
  source = Trunk(depth=26, width=0.25, pool_padding="same", bn_epsilon=1e-5)
  rng = np.random.default_rng(3)
  for w in source.weights:
    if w.name == "moving_variance":
      w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
    else:
      w.assign(rng.normal(0, 0.1, w.shape).astype(np.float32))
  values = _keras_to_slim(source, "resnet_v2_26", SLIM_UNITS[26])
  assert len(values) == len(source.weights)
  prefix = _write_checkpoint(str(tmp_path), {
      **values, "global_step": np.array(7, np.int64),
      "resnet_v2_26/postnorm/beta": np.zeros(512, np.float32)})
  trunk, report = slim_conversion.convert_checkpoint(prefix, depth=26,
                                                  width=0.25)
  assert trunk.get_config() == dict(source.get_config())
  images = _images()
  got, want = trunk(images), source(images)
  assert set(got) == set(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=1e-5,
                               err_msg=name)
  assert report.ignored == {
      "global_step": slim_conversion.REASON_GLOBAL_STEP,
      "resnet_v2_26/postnorm/beta": slim_conversion.REASON_NOT_IN_TRUNK}


def test_ignored_variables_are_listed_with_reasons(small_ckpt):
  _, report = slim_conversion.convert_checkpoint(small_ckpt["directory"],
                                              depth=26, width=0.25)
  assert report.checkpoint == small_ckpt["prefix"]   # directory -> latest
  scope = small_ckpt["scope"]
  assert set(report.ignored) == set(small_ckpt["extras"])
  assert report.ignored["global_step"] == "training step counter"
  for part in ("block4/unit_1/bottleneck_v2/conv1/weights", "postnorm/gamma",
               "logits/weights"):
    assert (report.ignored[f"{scope}/{part}"]
            == "not part of the trunk through block 3")
  assert report.ignored[f"{scope}/conv1/weights/RMSProp_1"] == (
      slim_conversion.REASON_SLOT)
  assert set(report.mapped) == set(small_ckpt["values"])
  assert report.mapped[
      f"{scope}/block3/unit_2/bottleneck_v2/conv2/BatchNorm/moving_mean"] == (
          "conv4_block2_2_bn/moving_mean")
  assert report.mapped[f"{scope}/block1/unit_1/bottleneck_v2/shortcut/biases"
                       ] == "conv2_block1_0_conv/bias"
  assert "ignored 8" in report.summary()


# ---------------------------------------------------------------------------
# Failures: every problem listed, nothing silently skipped.

def _variant(tmp_path, small_ckpt, drop=(), add=None, replace=None):
  values = {**small_ckpt["values"], **(add or {}), **(replace or {})}
  for name in drop:
    values.pop(name)
  return _write_checkpoint(str(tmp_path), values)


def test_missing_variables_fail_and_are_listed(tmp_path, small_ckpt):
  s = small_ckpt["scope"]
  gone = [f"{s}/block2/unit_2/bottleneck_v2/conv1/BatchNorm/gamma",
          f"{s}/block3/unit_1/bottleneck_v2/shortcut/biases"]
  prefix = _variant(tmp_path, small_ckpt, drop=gone)
  with pytest.raises(SlimConversionError) as e:
    slim_conversion.convert_checkpoint(prefix, depth=26, width=0.25)
  assert e.value.missing == sorted(gone)
  assert e.value.unexpected == [] and e.value.shape_mismatches == []
  assert "2 missing variables" in str(e.value)
  for name in gone:
    assert name in str(e.value)


def test_unexpected_variables_fail_and_are_listed(tmp_path, small_ckpt):
  s = small_ckpt["scope"]
  extra = {f"{s}/block3/unit_3/bottleneck_v2/conv1/weights":
               np.zeros((1, 1, 256, 64), np.float32),
           "other_net/conv1/biases": np.zeros(3, np.float32)}
  prefix = _variant(tmp_path, small_ckpt, add=extra)
  with pytest.raises(SlimConversionError) as e:
    slim_conversion.convert_checkpoint(prefix, depth=26, width=0.25)
  assert e.value.unexpected == sorted(extra)
  assert e.value.missing == []
  for name in extra:
    assert name in str(e.value)


def test_shape_mismatch_names_variable_and_both_shapes(tmp_path, small_ckpt):
  name = f"{small_ckpt['scope']}/block2/unit_1/bottleneck_v2/conv2/weights"
  prefix = _variant(tmp_path, small_ckpt,
                    replace={name: np.zeros((3, 3, 32, 31), np.float32)})
  with pytest.raises(SlimConversionError) as e:
    slim_conversion.convert_checkpoint(prefix, depth=26, width=0.25)
  assert e.value.shape_mismatches == [(name, (3, 3, 32, 31), (3, 3, 32, 32))]
  assert (f"{name}: (3, 3, 32, 31) in the checkpoint, (3, 3, 32, 32) in the "
          "trunk") in str(e.value)


def test_wrong_scope_or_depth_fails_with_a_hint(small_ckpt):
  with pytest.raises(SlimConversionError) as e:
    slim_conversion.convert_checkpoint(small_ckpt["prefix"], depth=26,
                                    width=0.25, scope="resnet_v2_101")
  assert "top-level scopes in the checkpoint: ['resnet_v2_26']" in str(e.value)
  # depth 38 over a depth-26 checkpoint: unit 3 of each block is missing.
  with pytest.raises(SlimConversionError) as e:
    slim_conversion.convert_checkpoint(small_ckpt["prefix"], depth=38,
                                    width=0.25, scope="resnet_v2_26")
  assert all("unit_3" in n for n in e.value.missing) and e.value.missing


def test_nonexistent_and_object_based_checkpoints_are_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="cannot read a TensorFlow"):
    slim_conversion.convert_checkpoint(str(tmp_path / "nothing"), depth=26,
                                    width=0.25)
  ckpt = tf.train.Checkpoint(v=tf.Variable(1.0))
  path = ckpt.save(str(tmp_path / "tf2" / "ckpt"))
  with pytest.raises(SlimConversionError, match="object-based TF2"):
    slim_conversion.convert_checkpoint(path, depth=26, width=0.25)


def test_bad_arguments_are_refused(small_ckpt):
  with pytest.raises(ValueError, match="pool_padding"):
    slim_conversion.convert_checkpoint(small_ckpt["prefix"], depth=26,
                                    width=0.25, pool_padding="keras")
  with pytest.raises(ValueError, match="depth"):
    slim_conversion.convert_checkpoint(small_ckpt["prefix"], depth=27)


def test_slim_name_covers_every_trunk_weight_once():
  trunk = Trunk(depth=26, width=0.25)
  names = slim_conversion.slim_variable_map(trunk, "resnet_v2_26")
  assert len(names) == len(trunk.weights)
  assert set(names) == set(_slim_shapes("resnet_v2_26", SLIM_UNITS[26],
                                        width=0.25))
  with pytest.raises(ValueError, match="no Slim name"):
    slim_conversion.slim_name("head_dense/kernel", "resnet_v2_26")


# ---------------------------------------------------------------------------
# The command.

def test_command_writes_keras_file_and_report(tmp_path, small_ckpt, capsys):
  out = str(tmp_path / "zoo" / "trunk.keras")
  lines = []
  rc = convert_slim.main(["--checkpoint=" + small_ckpt["prefix"],
                          "--output=" + out, "--depth=26", "--width=0.25"],
                         log=lines.append)
  assert rc == 0
  assert any("ignored global_step: training step counter" in l
             for l in lines)
  loaded = keras.models.load_model(out)
  images = _images()
  ref = _slim_forward(small_ckpt["values"], images, small_ckpt["scope"],
                      SLIM_UNITS[26], block3_last_stride=1)
  _assert_matches_reference(loaded(images), ref, SLIM_UNITS[26])
  with open(str(tmp_path / "zoo" / "trunk.conversion.json")) as f:
    report = json.load(f)
  assert report["trunk_config"]["bn_epsilon"] == 1e-5
  assert report["trunk_config"]["pool_padding"] == "same"
  assert report["trunk_config"]["input_normalization"] == "slim"
  assert report["num_mapped"] == len(small_ckpt["values"])
  assert set(report["ignored"]) == set(small_ckpt["extras"])
  assert report["num_parameters"] == sum(
      v.size for v in small_ckpt["values"].values())

  bad = str(tmp_path / "bad")
  prefix = _variant(bad, small_ckpt,
                    drop=[f"{small_ckpt['scope']}/conv1/biases"])
  capsys.readouterr()
  assert convert_slim.main(["--checkpoint=" + prefix, "--output=" + bad
                            + "/t.keras", "--depth=26", "--width=0.25"]) == 1
  err = capsys.readouterr().err
  assert "1 missing variables" in err and "resnet_v2_26/conv1/biases" in err
  assert not os.path.exists(bad + "/t.keras")
  assert convert_slim.main(["--checkpoint=" + prefix]) == 2
  assert "--output is required" in capsys.readouterr().err
  assert convert_slim.main(["--help"]) == 0
  assert "--block3_last_stride" in capsys.readouterr().out


@pytest.mark.slow
def test_full_resnet_v2_101_through_the_command(tmp_path, capsys):
  scope = "resnet_v2_101"
  values = _random_values(_slim_shapes(scope, SLIM_UNITS[101]), seed=5)
  extras = {"global_step": np.array(1, np.int64),
            f"{scope}/postnorm/moving_mean": np.zeros(2048, np.float32),
            f"{scope}/block4/unit_3/bottleneck_v2/conv3/biases":
                np.zeros(2048, np.float32)}
  prefix = _write_checkpoint(str(tmp_path), {**values, **extras})
  out = str(tmp_path / "trunk101.keras")
  # The command's main in this process (a new interpreter would spend most
  # of the test importing TensorFlow again); its flags, conversion, file
  # and printed summary are the same.
  rc = convert_slim.main(["--checkpoint=" + prefix, "--output=" + out,
                          "--block3_last_stride=2"])
  stdout = capsys.readouterr().out
  assert rc == 0, stdout
  assert f"mapped {len(values)} variables" in stdout, stdout
  trunk = keras.models.load_model(out)
  assert trunk.count_params() == 27_635_200
  images = _images((1, 64, 64, 3))
  ref = _slim_forward(values, images, scope, SLIM_UNITS[101])
  _assert_matches_reference(trunk(images), ref, SLIM_UNITS[101])
  assert ref["block3/unit_22"].shape == (1, 4, 4, 1024)
  assert ref["block3/unit_23"].shape == (1, 2, 2, 1024)
