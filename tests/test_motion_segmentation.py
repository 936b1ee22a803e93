"""The motion segmentation task: preprocessing, head, loss and metrics that
are specific to it; the generic checks (registry, eager vs tf.data, loss
contract, .keras round trip, overfit) are in test_task_contract.py."""
import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.tasks.motion_segmentation import (MotionSegmentation,
                                                 MotionSegmentationHead,
                                                 binary_mask)


def _example(rng, h=48, w=56):
  """A frame whose red channel is 255 exactly where the mask is 1.

  Any crop/flip/resize that keeps frame and mask aligned keeps that relation,
  which is what the alignment tests check.
  """
  mask = np.zeros((h, w), np.uint8)
  mask[5:30, 8:20] = 1
  mask[35:45, 30:50] = 1
  image = rng.integers(0, 120, (h, w, 3)).astype(np.uint8)
  image[..., 0] = mask * 255
  return {"image": image, "mask": mask}


def _small_task(**kwargs):
  params = dict(crop_size=32, output_size=8, hidden_channels=8)
  params.update(kwargs)
  return MotionSegmentation(**params)


def test_target_size_and_paper_defaults():
  task = MotionSegmentation(crop_size=64, output_size=None)
  assert task.target_size == 4   # 64 / 16
  defaults = MotionSegmentation()
  assert (defaults.crop_size, defaults.output_size) == (224, 56)


def test_preprocess_shapes_and_alignment(rng):
  task = _small_task(scale_range=None, output_size=32)
  example = _example(rng)
  inputs, targets = task.preprocess(example, tf.constant([3, 4]))
  assert inputs.shape == (32, 32, 3) and inputs.dtype == tf.float32
  assert targets.shape == (32, 32) and targets.dtype == tf.int32
  # Same crop and flip for both: at full output resolution the target is
  # exactly the red-channel indicator of the cropped frame.
  np.testing.assert_array_equal(targets.numpy(),
                                (inputs[..., 0].numpy() == 255).astype(int))


def test_preprocess_downsampled_targets_follow_nearest_neighbour(rng):
  task = _small_task(scale_range=None, output_size=8)
  inputs, targets = task.preprocess(_example(rng), tf.constant([5, 6]))
  # NumPy reference of TF's nearest resize (half-pixel centres): output
  # pixel i reads input pixel floor((i + 0.5) * 32 / 8).
  idx = np.floor((np.arange(8) + 0.5) * 4).astype(int)
  red = inputs[..., 0].numpy() == 255
  np.testing.assert_array_equal(targets.numpy(), red[np.ix_(idx, idx)])


def test_preprocess_with_rescaling_keeps_alignment(rng):
  task = _small_task(output_size=32, scale_range=(1.0, 1.5))
  for s in range(4):
    inputs, targets = task.preprocess(_example(rng), tf.constant([s, 9]))
    red = inputs[..., 0].numpy() > 127
    # Bilinear frame vs nearest mask differ at most on boundary pixels.
    assert (red == targets.numpy().astype(bool)).mean() > 0.9


def test_too_small_frames_fail_inside_tf_data(rng):
  """Frames of unknown size (as from TFRecords) are checked at run time
  (frames of varying size: the generic eager-vs-tf.data check)."""
  task = _small_task(min_image_size=40)
  spec = {"image": tf.TensorSpec([None, None, 3], tf.uint8),
          "mask": tf.TensorSpec([None, None], tf.uint8)}
  small = tf.data.Dataset.from_generator(
      lambda: iter([_example(rng, 30, 60)]), output_signature=spec)
  with pytest.raises(tf.errors.InvalidArgumentError, match="smaller"):
    list(small.map(lambda e: task.preprocess(e, tf.constant([1, 1]))))


def test_input_conversions(rng):
  task = _small_task()
  example = _example(rng)
  seed = tf.constant([7, 8])
  reference = task.preprocess(example, seed)
  rgba = np.concatenate([example["image"],
                         np.full((48, 56, 1), 255, np.uint8)], -1)
  variants = [
      {"image": rgba, "mask": example["mask"]},
      {"image": example["image"].astype(np.float32), "mask": example["mask"]},
      {"image": example["image"], "mask": example["mask"] * 255},
      {"image": example["image"], "mask": example["mask"].astype(bool)},
      {"image": example["image"],
       "mask": example["mask"][..., None].astype(np.float32)},
  ]
  for variant in variants:
    inputs, targets = task.preprocess(variant, seed)
    np.testing.assert_allclose(inputs, reference[0])
    np.testing.assert_array_equal(targets, reference[1])
  grey, _ = task.preprocess({"image": example["image"][..., 1],
                             "mask": example["mask"]}, seed)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


@pytest.mark.parametrize("change,error,match", [
    ({"image": np.zeros((48, 56, 3), np.int32)}, TypeError, "int32"),
    ({"image": np.zeros((48, 56, 2), np.uint8)}, ValueError, "2 channels"),
    ({"image": np.zeros((2, 48, 56, 3), np.uint8)}, ValueError, "one frame"),
    ({"image": np.zeros((6, 56, 3), np.uint8),
      "mask": np.zeros((6, 56), np.uint8)}, ValueError, "smaller"),
    ({"mask": np.zeros((48, 50), np.uint8)}, ValueError, "does not match"),
    ({"mask": np.zeros((48, 56, 2), np.uint8)}, ValueError, "mask"),
    ({"mask": np.full((48, 56), "a")}, TypeError, "string"),
])
def test_bad_inputs(rng, change, error, match):
  example = dict(_example(rng), **change)
  with pytest.raises(error, match=match):
    _small_task().preprocess(example, tf.constant([1, 2]))


def test_missing_mask_and_bad_arguments(rng):
  with pytest.raises(KeyError, match="mask"):
    _small_task().preprocess({"image": _example(rng)["image"]},
                             tf.constant([1, 2]))
  with pytest.raises(ValueError, match="smaller"):
    # Without rescaling, frames must hold a full crop.
    _small_task(scale_range=None, crop_size=64, output_size=16).preprocess(
        _example(rng), tf.constant([1, 2]))
  for kwargs, message in [
      ({"crop_size": 8}, "crop_size must be >= 16, got 8"),
      ({"output_size": 0}, r"output_size must be in \[1, crop_size=32\] or "
       "None, got 0"),
      ({"output_size": 64}, r"output_size must be in \[1, crop_size=32\] or "
       "None, got 64"),
      ({"scale_range": (1.5, 1.0)}, r"scale_range must be \(low, high\) "
       r"with 0 < low <= high, got \(1.5, 1.0\)"),
      ({"scale_range": (0.5, 1.0)}, r"scale_range low must be >= 1 .*got "
       r"\(0.5, 1.0\)"),
      ({"min_image_size": 0}, "min_image_size must be >= 1, got 0")]:
    with pytest.raises(ValueError, match=message):
      _small_task(**kwargs)


def test_binary_mask_rules():
  np.testing.assert_array_equal(
      binary_mask(np.array([[0.2, 0.5], [0.7, 0.0]], np.float32)),
      [[0, 1], [1, 0]])
  np.testing.assert_array_equal(binary_mask(np.array([[0, 3], [255, 0]])),
                                [[0, 1], [1, 0]])


# --- Head ---------------------------------------------------------------------

def test_head_shapes(rng):
  features = tf.constant(rng.normal(size=(2, 3, 3, 16)), tf.float32)
  head = MotionSegmentationHead(output_size=12, hidden_channels=8)
  assert head(features).shape == (2, 12, 12, 2)
  assert head.compute_output_shape((2, 3, 3, 16)) == (2, 12, 12, 2)
  native = MotionSegmentationHead(output_size=None, hidden_channels=8,
                                  num_hidden_layers=2)
  assert native(features).shape == (2, 3, 3, 2)
  assert len(native.convs) == 2
  task = _small_task(output_size=None, crop_size=64)
  assert task.build_head()(tf.zeros([2, 4, 4, 16])).shape == (2, 4, 4, 2)
  with pytest.raises(ValueError, match="features"):
    MotionSegmentationHead()(tf.zeros([2, 4, 16]))
  for kwargs, message in [
      ({"output_size": 0}, "output_size must be >= 1 or None, got 0"),
      ({"hidden_channels": 0}, "hidden_channels must be >= 1, got 0"),
      ({"num_hidden_layers": -1}, "num_hidden_layers must be >= 0, got -1")]:
    with pytest.raises(ValueError, match=message):
      MotionSegmentationHead(**kwargs)


def test_head_upsamples_logits_bilinearly(rng):
  features = tf.constant(rng.normal(size=(1, 3, 3, 4)), tf.float32)
  coarse = MotionSegmentationHead(output_size=None, hidden_channels=4)
  fine = MotionSegmentationHead.from_config(
      dict(coarse.get_config(), output_size=12))
  fine.build(features.shape)
  coarse.build(features.shape)
  fine.set_weights(coarse.get_weights())
  expected = tf.image.resize(coarse(features), [12, 12], method="bilinear")
  np.testing.assert_allclose(fine(features), expected, atol=1e-5)


# --- Loss and metrics ---------------------------------------------------------

def _np_cross_entropy(targets, logits):
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  return -picked.mean(axis=(1, 2))


def test_loss_matches_numpy(rng):
  task = _small_task()
  logits = rng.normal(size=(3, 8, 8, 2)).astype(np.float32) * 3
  targets = rng.integers(0, 2, (3, 8, 8)).astype(np.int32)
  loss = task.loss(tf.constant(targets), tf.constant(logits))
  assert loss.shape == (3,)
  np.testing.assert_allclose(loss, _np_cross_entropy(targets, logits),
                             rtol=1e-5)
  # Half-precision logits are upcast before the softmax.
  half = task.loss(tf.constant(targets), tf.constant(logits, tf.float16))
  assert half.dtype == tf.float32
  np.testing.assert_allclose(half, loss, rtol=1e-2)


def test_metrics_match_numpy(rng):
  task = _small_task()
  logits = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
  targets = rng.integers(0, 2, (3, 8, 8)).astype(np.int32)
  targets[2] = 0
  logits[2, ..., 0] = 5.0   # predicts all static where nothing moves
  metrics = task.metrics(tf.constant(targets), tf.constant(logits))
  predicted = logits.argmax(-1)
  accuracy = (predicted == targets).mean()
  ious = []
  for p, t in zip(predicted == 1, targets == 1):
    union = (p | t).sum()
    ious.append((p & t).sum() / union if union else 1.0)
  np.testing.assert_allclose(metrics["pixel_accuracy"], accuracy, rtol=1e-6)
  np.testing.assert_allclose(metrics["moving_iou"], np.mean(ious), rtol=1e-6)
  assert ious[2] == 1.0


def test_moving_weight_scales_moving_pixels_only(rng):
  task = _small_task(moving_weight=4.0)
  logits = rng.normal(size=(3, 8, 8, 2)).astype(np.float32) * 3
  targets = rng.integers(0, 2, (3, 8, 8)).astype(np.int32)
  loss = task.loss(tf.constant(targets), tf.constant(logits))
  # NumPy reference: per-pixel cross-entropy, moving pixels times 4.
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  picked = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  expected = (picked * np.where(targets == 1, 4.0, 1.0)).mean(axis=(1, 2))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert MotionSegmentation.from_config(
      task.get_config()).moving_weight == 4.0
  with pytest.raises(ValueError, match="moving_weight"):
    _small_task(moving_weight=0.0)


def test_loss_rejects_mismatched_shapes():
  task = _small_task()
  with pytest.raises(ValueError, match="spatial size"):
    task.loss(tf.zeros([2, 8, 8], tf.int32), tf.zeros([2, 4, 4, 2]))
  with pytest.raises(ValueError, match="logits"):
    task.loss(tf.zeros([2, 8, 8], tf.int32), tf.zeros([2, 8, 8, 3]))


def test_trunk_images_is_identity(rng):
  inputs, _ = _small_task().preprocess(_example(rng), tf.constant([1, 2]))
  batch = tf.stack([inputs, inputs])
  assert _small_task().trunk_images(batch) is batch
