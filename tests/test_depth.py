"""Depth evaluation: FCRN up-projection decoder, losses, metrics, data."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
from mtssl_tf.evaluation import depth as depth_lib
from mtssl_tf.evaluation import depth_data
from mtssl_tf.models.trunk import Trunk


# ---------------------------------------------------------------------------
# NumPy references.


def np_zero_insert_conv5(x, kernel):
  """Zero-insertion 2x unpooling (x[i, j] -> (2i, 2j)) then a 5x5 'SAME'
  cross-correlation, written with explicit windows."""
  n, h, w, c = x.shape
  z = np.zeros((n, 2 * h, 2 * w, c), np.float64)
  z[:, 0::2, 0::2] = x
  zp = np.pad(z, ((0, 0), (2, 2), (2, 2), (0, 0)))
  out = np.zeros((n, 2 * h, 2 * w, kernel.shape[-1]), np.float64)
  for u in range(5):
    for v in range(5):
      out += np.einsum("nhwc,co->nhwo", zp[:, u:u + 2 * h, v:v + 2 * w],
                       kernel[u, v])
  return out


def np_valid(gt, extra=None):
  with np.errstate(invalid="ignore"):
    valid = np.isfinite(gt) & (gt > 0)
  if extra is not None:
    valid &= extra
  return valid


def np_metrics(pred, gt, extra=None):
  valid = np_valid(gt, extra)
  d, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
  ratio = np.maximum(d / g, g / d)
  return {"delta1": np.mean(ratio < 1.25), "delta2": np.mean(ratio < 1.5625),
          "delta3": np.mean(ratio < 1.953125),
          "abs_rel": np.mean(np.abs(d - g) / g),
          "rmse": np.sqrt(np.mean((d - g) ** 2))}


def np_berhu(gt, pred, extra=None):
  valid = np_valid(gt, extra)
  r = np.where(valid, np.abs(pred - np.nan_to_num(gt, posinf=0.0)), 0.0)
  c = 0.2 * r[valid].max()
  per_pixel = np.where(r <= c, r, (r ** 2 + c ** 2) / (2 * c))
  out = []
  for b in range(gt.shape[0]):
    out.append(per_pixel[b][valid[b]].mean() if valid[b].any() else 0.0)
  return np.array(out)


def random_depth_case(rng, shape=(3, 6, 7)):
  gt = rng.uniform(0.5, 5.0, shape).astype(np.float32)
  pred = (gt * rng.uniform(0.6, 1.6, shape)).astype(np.float32)
  holes = rng.uniform(size=shape)
  gt[holes < 0.1] = 0.0
  gt[(holes >= 0.1) & (holes < 0.15)] = np.nan
  gt[(holes >= 0.15) & (holes < 0.18)] = np.inf
  gt[(holes >= 0.18) & (holes < 0.2)] = -1.0
  extra = rng.uniform(size=shape) > 0.2
  return gt, pred, extra


# ---------------------------------------------------------------------------
# Up-sampling layers.


def test_interleave_hand_example():
  a = np.full((1, 2, 3, 1), 1.0, np.float32)
  b, c, d = a * 2, a * 3, a * 4
  a = a + np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1) * 10
  out = depth_lib.interleave(a, b, c, d).numpy()
  assert out.shape == (1, 4, 6, 1)
  expected = np.array([[1, 2, 11, 2, 21, 2],
                       [3, 4, 3, 4, 3, 4],
                       [31, 2, 41, 2, 51, 2],
                       [3, 4, 3, 4, 3, 4]], np.float32)
  np.testing.assert_array_equal(out[0, ..., 0], expected)


def test_up_convolution_equals_zero_insertion_5x5_conv(rng):
  x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  kernel = rng.normal(size=(5, 5, 5, 6)).astype(np.float32)
  layer = depth_lib.UpConvolution(6)
  layer.build(x.shape)
  # The sub-kernel of each output phase (r, s) is K[r::2, s::2].
  for conv, (r, s) in zip(layer.convs, ((0, 0), (0, 1), (1, 0), (1, 1))):
    conv.set_weights([kernel[r::2, s::2]])
  out = layer(x).numpy()
  np.testing.assert_allclose(out, np_zero_insert_conv5(x, kernel),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(layer.equivalent_kernel(), kernel)


def test_up_convolution_inside_tf_function_with_unknown_size(rng):
  layer = depth_lib.UpConvolution(3)
  x = rng.normal(size=(1, 5, 3, 2)).astype(np.float32)
  eager = layer(x).numpy()
  fn = tf.function(layer, input_signature=[
      tf.TensorSpec([None, None, None, 2], tf.float32)])
  np.testing.assert_allclose(fn(x).numpy(), eager, rtol=1e-5, atol=1e-6)


def test_up_projection_doubles_size_and_matches_its_branches(rng):
  layer = depth_lib.UpProjection(4)
  x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
  y = layer(x, training=False).numpy()
  assert y.shape == (2, 6, 10, 4)
  assert (y >= 0).all()
  # Inference-mode BN with fresh statistics is x / sqrt(1 + eps).
  s = 1.0 / np.sqrt(1.0 + layer.bn_main1.epsilon)
  main = np.maximum(layer.up_main(x).numpy() * s, 0.0)
  main = layer.conv_main(main).numpy() * s
  proj = layer.up_proj(x).numpy() * s
  np.testing.assert_allclose(y, np.maximum(main + proj, 0.0), rtol=1e-4,
                             atol=1e-5)


def test_decoder_shape_config_and_save_load(tmp_path, rng):
  decoder = depth_lib.DepthDecoder(filters=(8, 6, 4, 4), input_channels=12,
                                   name="decoder")
  config = decoder.get_config()
  assert config["filters"] == [8, 6, 4, 4]
  assert config["input_channels"] == 12
  inputs = keras.Input((3, 4, 12))
  model = keras.Model(inputs, decoder(inputs))
  x = rng.normal(size=(2, 3, 4, 12)).astype(np.float32)
  y = model(x, training=False).numpy()
  assert y.shape == (2, 48, 64)
  assert (y > 0).all()  # softplus
  path = str(tmp_path / "decoder.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.layers[-1], depth_lib.DepthDecoder)
  np.testing.assert_allclose(loaded(x, training=False).numpy(), y,
                             rtol=1e-5, atol=1e-6)


def test_decoder_rejects_features_of_another_architecture(rng):
  decoder = depth_lib.DepthDecoder(filters=(4, 4), input_channels=16)
  with pytest.raises(ValueError, match="16 channels but got 32"):
    decoder(np.zeros((1, 2, 2, 32), np.float32))
  built = depth_lib.DepthDecoder(filters=(4, 4))
  built(np.zeros((1, 2, 2, 8), np.float32))
  with pytest.raises(ValueError, match="8 channels but got 24"):
    built(np.zeros((1, 2, 2, 24), np.float32))


# ---------------------------------------------------------------------------
# Losses and metrics.


@pytest.mark.parametrize("case", range(4))
def test_depth_metrics_match_numpy(case):
  rng = np.random.default_rng(100 + case)
  gt, pred, extra = random_depth_case(rng)
  use_extra = case % 2 == 1
  got = depth_lib.depth_metrics(pred, gt, extra if use_extra else None)
  want = np_metrics(pred, gt, extra if use_extra else None)
  assert set(got) == set(depth_lib.METRIC_NAMES)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)


def test_depth_metrics_known_values():
  gt = np.array([[1.0, 2.0, 4.0, 0.0]], np.float32)
  pred = np.array([[1.2, 3.0, 2.0, 9.0]], np.float32)  # ratios 1.2, 1.5, 2
  got = depth_lib.depth_metrics(pred, gt)
  assert got["delta1"] == pytest.approx(1 / 3)
  assert got["delta2"] == pytest.approx(2 / 3)
  assert got["delta3"] == pytest.approx(2 / 3)
  assert got["abs_rel"] == pytest.approx((0.2 + 0.5 + 0.5) / 3, rel=1e-6)
  assert got["rmse"] == pytest.approx(np.sqrt((0.04 + 1 + 4) / 3), rel=1e-6)


def test_depth_metrics_without_valid_pixel_is_an_error():
  with pytest.raises(ValueError, match="no valid ground-truth depth"):
    depth_lib.depth_metrics(np.ones((1, 2, 2)), np.zeros((1, 2, 2)))


@pytest.mark.parametrize("case", range(3))
def test_berhu_matches_numpy(case):
  rng = np.random.default_rng(200 + case)
  gt, pred, extra = random_depth_case(rng)
  if case == 2:
    extra[0] = False  # an example without valid pixels contributes 0
  use_extra = case > 0
  got = depth_lib.berhu_loss(gt, pred, extra if use_extra else None).numpy()
  want = np_berhu(gt, pred, extra if use_extra else None)
  assert got.shape == (gt.shape[0],)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Both branches occur, or the test would not tell berHu from L1.
  r = np.abs(pred - gt)[np_valid(gt, extra if use_extra else None)]
  assert (r <= 0.2 * r.max()).any() and (r > 0.2 * r.max()).any()


def test_masked_l1_and_gradients_ignore_invalid_pixels():
  gt = tf.constant([[[1.0, np.nan], [0.0, 2.0]]])
  pred = tf.Variable([[[1.5, 7.0], [3.0, 1.0]]])
  for loss_name in depth_lib.LOSSES:
    with tf.GradientTape() as tape:
      loss = depth_lib.get_loss(loss_name)(gt, pred)
    grad = tape.gradient(loss, pred).numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[0, 0, 1], 0.0)
    np.testing.assert_array_equal(grad[0, 1, 0], 0.0)
  np.testing.assert_allclose(depth_lib.masked_l1_loss(gt, pred).numpy(),
                             [(0.5 + 1.0) / 2])
  with pytest.raises(ValueError, match="unknown depth loss 'l2'"):
    depth_lib.get_loss("l2")


# ---------------------------------------------------------------------------
# Data.


def _example(rng, h=40, w=50):
  depth = rng.uniform(0.5, 4.0, (h, w)).astype(np.float32)
  depth[:3, :3] = np.nan
  depth[5, 5] = 0.0
  return {"image": rng.integers(0, 256, (h, w, 3)).astype(np.uint8),
          "depth": depth}


@pytest.mark.parametrize("training", [True, False])
def test_preprocess_eager_equals_tf_data(rng, training):
  examples = [_example(rng), _example(rng, 35, 60)]
  seeds = [np.array([3, 4]), np.array([3, 5])]
  eager = [depth_data.preprocess_depth(e, s, (24, 32), training)
           for e, s in zip(examples, seeds)]

  def gen():
    yield from examples
  ds = tf.data.Dataset.from_generator(gen, output_signature={
      "image": tf.TensorSpec([None, None, 3], tf.uint8),
      "depth": tf.TensorSpec([None, None], tf.float32)})
  ds = ds.zip((ds, tf.data.Dataset.from_tensor_slices(np.stack(seeds))))
  ds = ds.map(lambda e, s: depth_data.preprocess_depth(e, s, (24, 32),
                                                       training))
  for (ei, ed), (gi, gd) in zip(eager, ds):
    assert gi.shape == (24, 32, 3) and gd.shape == (24, 32)
    # The antialiased bilinear resize may be fused differently in a graph:
    # a few float32 ulps of the 0..255 scale. Nearest resizing and cropping
    # copy depth values, so which values land where is exact.
    np.testing.assert_allclose(gi.numpy(), ei.numpy(), rtol=0, atol=1e-3)
    np.testing.assert_array_equal(ed.numpy(), gd.numpy())
  # Nearest resizing: every depth is an input value or 0 (holes, NaN -> 0).
  for (_, d), e in zip(eager, examples):
    values = set(np.nan_to_num(e["depth"]).ravel().tolist()) | {0.0}
    assert set(d.numpy().ravel().tolist()) <= values
    assert np.isfinite(d.numpy()).all()


def test_preprocess_center_crop_and_random_crops_differ(rng):
  # Already at the resize target size: the test crop is the exact centre.
  h, w = depth_data.tile_size_for((24, 32))
  ex = _example(rng, h, w)
  image, depth = depth_data.preprocess_depth(ex, [0, 0], (24, 32), False)
  top, left = (h - 24) // 2, (w - 32) // 2
  np.testing.assert_allclose(image.numpy(),
                             ex["image"][top:top + 24, left:left + 32],
                             atol=1e-3)
  crops = {depth_data.preprocess_depth(ex, [0, k], (24, 32), True)[0]
           .numpy().tobytes() for k in range(8)}
  assert len(crops) > 1


def test_preprocess_rejects_mismatched_depth(rng):
  ex = _example(rng)
  ex["depth"] = ex["depth"][:30]
  with pytest.raises(tf.errors.InvalidArgumentError, match="differ"):
    depth_data.preprocess_depth(ex, [0, 0], (16, 16), False)


def test_nyu_depth_v2_tfds_with_mock_data():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=3):
    train = depth_data.load_nyu_depth_v2("train")
    examples = list(train)
    assert len(examples) == 3
    for ex in examples:
      assert ex["image"].shape == (480, 640, 3)
      assert ex["image"].dtype == tf.uint8
      assert ex["depth"].shape == (480, 640)
      assert ex["depth"].dtype == tf.float32
    batch = next(iter(depth_data.make_depth_dataset(
        train, (32, 48), training=True, batch_size=2)))
    assert batch[0].shape == (2, 32, 48, 3) and batch[1].shape == (2, 32, 48)


def test_nyu_depth_v2_missing_data_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="nyu_depth_v2.*missing"):
    depth_data.load_nyu_depth_v2("train", data_dir=str(tmp_path))


def test_motorcycle_depth_from_calibration():
  from skimage import data as skdata
  pair = depth_data.load_middlebury_pair("motorcycle")
  _, _, disparity = skdata.stereo_motorcycle()
  assert pair["image"].shape == (500, 741, 3) and pair["units"] == "metres"
  finite = np.isfinite(disparity)
  assert (pair["depth"][~finite] == 0).all()
  # Middlebury 2014: Z = f * baseline / (d + doffs), numbers from skimage.
  want = 994.978 * 0.193001 / (disparity[finite] + 31.086)
  np.testing.assert_allclose(pair["depth"][finite], want, rtol=1e-5)


def test_aloe_relative_depth_and_missing_files(tmp_path):
  # The aloe pair (Middlebury 2006) ships in Debian's opencv-doc, which the
  # set-up does not install: the loader is tested on files written here in
  # the same formats (colour JPEG, 8-bit disparity PNG with 0 = unknown).
  import cv2
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
  disparity = rng.integers(20, 120, (24, 32)).astype(np.uint8)
  disparity[:3] = 0
  assert cv2.imwrite(str(tmp_path / "aloeL.png"), image)
  (tmp_path / "aloeL.jpg").write_bytes((tmp_path / "aloeL.png").read_bytes())
  assert cv2.imwrite(str(tmp_path / "aloeGT.png"), disparity)
  pair = depth_data.load_middlebury_pair("aloe", opencv_doc_dir=str(tmp_path))
  valid = disparity > 0
  assert pair["units"] == "relative"
  np.testing.assert_array_equal(pair["image"], image[..., ::-1])  # BGR->RGB
  np.testing.assert_array_equal(pair["depth"] > 0, valid)
  expected = np.median(disparity[valid].astype(np.float64)) / disparity[valid]
  np.testing.assert_allclose(pair["depth"][valid], expected, rtol=1e-6)
  assert np.median(pair["depth"][valid]) == pytest.approx(1.0, rel=0.05)
  with pytest.raises(FileNotFoundError, match="aloeL.jpg.*opencv-doc"):
    depth_data.load_middlebury_pair("aloe",
                                    opencv_doc_dir=str(tmp_path / "absent"))
  with pytest.raises(ValueError, match="unknown Middlebury pair"):
    depth_data.load_middlebury_pair("teddy")


def test_middlebury_tiles_are_a_disjoint_split_of_the_grid():
  tiles = depth_data.middlebury_tiles((50, 60), names=("motorcycle",),
                                      test_fraction=0.25, seed=1)
  pair = depth_data.load_middlebury_pair("motorcycle")
  grid = {pair["image"][r:r + 50, c:c + 60].tobytes()
          for r in range(0, 500 - 49, 50) for c in range(0, 741 - 59, 60)}
  train = [t.tobytes() for t in tiles["train"]["image"]]
  test = [t.tobytes() for t in tiles["test"]["image"]]
  assert len(train) + len(test) == len(grid) == 10 * 12
  assert set(train) | set(test) == grid
  assert not set(train) & set(test)
  assert len(test) == 30
  with pytest.raises(ValueError, match="too few"):
    depth_data.middlebury_tiles((400, 600), names=("motorcycle",))


# ---------------------------------------------------------------------------
# The evaluator.


def _tiny_evaluator(**kwargs):
  # Two up-projections (x4, then resized to the labels) keep tf.function
  # tracing short; the four-block decoder is tested on its own above.
  args = dict(input_size=(32, 32), steps=2, batch_size=2,
              learning_rate=1e-3, decoder_filters=(8, 4),
              max_test_examples=3, log_every=1)
  args.update(kwargs)
  return depth_lib.DepthEvaluator(**args)


@pytest.mark.slow
def test_depth_evaluator_end_to_end_on_middlebury():
  # The generic run check (tests/harness.py): unique finite metrics, and the
  # evaluator fine-tunes a clone, so the caller's trunk is unchanged. The
  # eval-lasso run with an L1 loss: tests/test_task_contract.py.
  trunk = Trunk(**harness.TRUNK)
  evaluator = _tiny_evaluator(
      source="middlebury",
      middlebury=dict(names=("motorcycle",), scale=0.25))
  values, logs = harness.check_evaluator_run(
      evaluator, trunk,
      metrics=[f"depth/{m}" for m in depth_lib.METRIC_NAMES])
  for k in ("delta1", "delta2", "delta3"):
    assert 0.0 <= values[f"depth/{k}"] <= 1.0
  assert (values["depth/delta1"] <= values["depth/delta2"]
          <= values["depth/delta3"])
  assert any("depth step 2/2" in line for line in logs)


def test_depth_evaluator_bad_inputs():
  train, _ = harness.depth_source()
  empty = train.take(0)
  with pytest.raises(ValueError, match="depth evaluation set.*empty"):
    _tiny_evaluator(source=(train, empty)).datasets()
  with pytest.raises(TypeError, match="needs a mtssl_tf.models.Trunk"):
    list(_tiny_evaluator(source=(train, train)).run(
        keras.Sequential([keras.layers.Dense(2)])))
  with pytest.raises(ValueError, match="source='kitti'"):
    _tiny_evaluator(source="kitti")
  with pytest.raises(ValueError, match="unknown depth loss"):
    _tiny_evaluator(loss="l2")
  with pytest.raises(FileNotFoundError, match="nyu_depth_v2"):
    _tiny_evaluator(source="nyu_depth_v2",
                    data_dir=os.path.join("/nonexistent", "tfds")).datasets()
