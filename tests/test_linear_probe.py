"""Frozen linear probe: metrics vs NumPy, pooling, data sources, the protocol
on real digits with a tiny random trunk, eval lasso, the TFDS path."""
import gzip
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import harness
import mtssl_tf
from mtssl_tf.evaluation import get_evaluator
from mtssl_tf.evaluation.interface import EvalBackbone
from mtssl_tf.evaluation.linear_probe import (
    LabelledData, LinearProbe, adaptive_average_pool, load_digits_data,
    load_fashion_mnist_data, load_tfds_data, preprocess_image, top_k_accuracy)

DIGITS = {"data": "digits", "image_size": 32, "batch_size": 64}


def _reference_top_k(scores, labels, k):
  """Rank by a stable descending sort: ties go to the lower class index."""
  hits = []
  for row, label in zip(scores, labels):
    order = sorted(range(len(row)), key=lambda c: (-row[c], c))
    hits.append(label in order[:k])
  return float(np.mean(hits))


# -- metrics -----------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_matches_numpy_reference_with_ties(rng, k):
  # Integer scores in a small range make many ties, across the k boundary.
  scores = rng.integers(0, 4, size=(200, 7)).astype(np.float32)
  labels = rng.integers(0, 7, size=200)
  assert top_k_accuracy(scores, labels, k) == pytest.approx(
      _reference_top_k(scores, labels, k))


def test_top_k_without_ties_matches_tf_in_top_k(rng):
  scores = rng.normal(size=(300, 12)).astype(np.float32)
  labels = rng.integers(0, 12, size=300)
  for k in (1, 5):
    want = np.mean(tf.math.in_top_k(labels, scores, k).numpy())
    assert top_k_accuracy(scores, labels, k) == pytest.approx(want)


def test_top1_is_argmax_and_constant_scores_do_not_score(rng):
  scores = rng.integers(0, 3, size=(100, 5)).astype(np.float32)
  labels = rng.integers(0, 5, size=100)
  assert top_k_accuracy(scores, labels, 1) == pytest.approx(
      np.mean(np.argmax(scores, axis=1) == labels))
  # All-equal scores: only class 0 (lowest index) counts as the top-1.
  flat = np.zeros([100, 5], np.float32)
  assert top_k_accuracy(flat, labels, 1) == pytest.approx(np.mean(labels == 0))
  assert top_k_accuracy(flat, labels, 5) == 1.0


def test_top_k_bad_input():
  with pytest.raises(ValueError, match="empty"):
    top_k_accuracy(np.zeros([0, 3]), np.zeros([0], int), 1)
  with pytest.raises(ValueError, match="NaN"):
    top_k_accuracy(np.array([[np.nan, 1.0]]), np.array([0]), 1)
  with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
    top_k_accuracy(np.zeros([1, 2]), np.array([2]), 1)
  with pytest.raises(ValueError, match="k=0"):
    top_k_accuracy(np.zeros([1, 2]), np.array([0]), 0)


# -- pooling and preprocessing ----------------------------------------------------
@pytest.mark.parametrize("h,w,size", [(4, 4, 2), (3, 5, 2), (1, 1, 2),
                                      (6, 6, 1), (7, 2, 3)])
def test_adaptive_average_pool_matches_numpy(rng, h, w, size):
  x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
  want = np.zeros([2, size, size, 3], np.float32)
  for i in range(size):
    r0, r1 = math.floor(i * h / size), math.ceil((i + 1) * h / size)
    for j in range(size):
      c0, c1 = math.floor(j * w / size), math.ceil((j + 1) * w / size)
      want[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  np.testing.assert_allclose(adaptive_average_pool(tf.constant(x), size),
                             want, rtol=1e-5, atol=1e-6)


def test_preprocess_image_crops_centre_eagerly_and_in_tf_data(rng):
  # Shorter side already 16: no resize, the central 16 of 32 columns.
  image = rng.integers(0, 256, size=(16, 32, 1)).astype(np.uint8)
  eager = preprocess_image(image, 16).numpy()
  want = np.repeat(image[:, 8:24].astype(np.float32), 3, axis=-1)
  np.testing.assert_allclose(eager, want, atol=1e-3)
  in_data = next(iter(tf.data.Dataset.from_tensors(image).map(
      lambda x: preprocess_image(x, 16)))).numpy()
  # The antialiased resize may be fused differently inside tf.data: a few
  # float32 ulps of the 0..255 scale.
  np.testing.assert_allclose(in_data, eager, rtol=0, atol=1e-3)
  # Upsampling a tall RGBA image: a constant stays constant, alpha dropped.
  tall = np.full([12, 8, 4], 77, np.uint8)
  tall[..., 3] = 0
  out = preprocess_image(tall, 32).numpy()
  assert out.shape == (32, 32, 3)
  np.testing.assert_allclose(out, 77.0, atol=1e-3)


# -- data -------------------------------------------------------------------
def _labels(dataset):
  return np.array([int(y) for _, y in dataset])


def test_digits_split_is_stratified_disjoint_and_seeded():
  data = load_digits_data(test_fraction=0.25, seed=0)
  train, test = _labels(data.train), _labels(data.test)
  assert len(train) + len(test) == 1797
  assert len(test) == 450
  # Stratified: every class's share of the test set within one image of
  # its share of the whole set.
  counts = np.bincount(np.concatenate([train, test]), minlength=10)
  assert np.all(np.abs(np.bincount(test, minlength=10) - counts * 0.25) <= 1)
  images = lambda ds: {x.numpy().tobytes() for x, _ in ds}  # noqa: E731
  # The 1,797 digits are all distinct, so disjoint indices = disjoint images.
  assert not images(data.train) & images(data.test)
  again = load_digits_data(test_fraction=0.25, seed=0)
  np.testing.assert_array_equal(_labels(again.test), test)
  image, _ = next(iter(data.train))
  assert image.shape == (8, 8, 1) and float(tf.reduce_max(image)) <= 255


def _write_idx(path, array):
  header = (0x08 << 8 | array.ndim).to_bytes(4, "big") + b"".join(
      d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_and_missing_package(tmp_path, rng):
  with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
    load_fashion_mnist_data(path=str(tmp_path / "absent"))
  folder = tmp_path / "fm"
  folder.mkdir()
  arrays = {}
  for split, n in (("train", 40), ("t10k", 20)):
    images = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
    labels = np.arange(n) % 10
    _write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
    _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    arrays[split] = (images, labels)
  data = load_fashion_mnist_data(path=str(folder), max_train_examples=20)
  train = list(data.train)
  assert len(train) == 20 and data.num_classes == 10
  assert np.all(np.bincount(_labels(data.train), minlength=10) == 2)
  test = list(data.test)
  np.testing.assert_array_equal(test[3][0].numpy()[..., 0], arrays["t10k"][0][3])
  assert int(test[3][1]) == 3


def test_tfds_imagenet_path_with_mock_data():
  with tfds.testing.mock_data(num_examples=6):
    data = load_tfds_data("imagenet2012", "train", "validation")
    assert data.num_classes == 1000
    assert len(list(data.train)) == 6
    probe = LinearProbe(data="tfds", tfds_name="imagenet2012", image_size=32,
                        batch_size=4, steps=3, pool_size=1)
    metrics = dict(probe.run(mtssl_tf.Trunk(**harness.TRUNK),
                             log=lambda s: None))
  assert set(metrics) == {"linear_probe/top1", "linear_probe/recall_at_5"}
  assert all(0.0 <= v <= 1.0 for v in metrics.values())
  assert probe.classifier.units == 1000


def test_tfds_missing_data_names_the_dataset(tmp_path):
  probe = LinearProbe(data="tfds", data_dir=str(tmp_path), image_size=32)
  with pytest.raises(FileNotFoundError, match=r"imagenet2012.*not prepared"):
    probe.load_data()


def test_empty_sets_are_named():
  trunk = mtssl_tf.Trunk(**harness.TRUNK)
  probe = LinearProbe(data="tfds", image_size=32, batch_size=4, steps=2)
  with tfds.testing.mock_data(num_examples=0):
    with pytest.raises(ValueError, match="training set is empty"):
      dict(probe.run(trunk, log=lambda s: None))
  one = tf.data.Dataset.from_tensor_slices(
      (np.zeros([2, 8, 8, 1], np.float32), np.array([0, 1])))
  empty = one.take(0)
  with pytest.raises(ValueError, match="evaluation set is empty"):
    probe.evaluate(trunk, LabelledData(one, empty, 2, "test"),
                   log=lambda s: None)


def test_bad_parameters_are_named():
  with pytest.raises(ValueError, match="allowed: tfds, digits, fashion_mnist"):
    LinearProbe(data="cifar")
  with pytest.raises(ValueError, match="pool_size"):
    LinearProbe(pool_size=0)
  with pytest.raises(ValueError, match="steps"):
    LinearProbe(steps=0)


# -- the protocol -------------------------------------------------------------
def test_probe_on_digits_beats_chance_and_keeps_trunk_frozen():
  # The generic run check (tests/harness.py): unique finite metrics, the
  # trunk (batch-norm statistics included) and its trainable flag unchanged.
  # The eval-lasso run: tests/test_task_contract.py.
  trunk = mtssl_tf.Trunk(**harness.TRUNK)
  probe = get_evaluator("linear_probe", steps=100, **DIGITS)
  metrics, _ = harness.check_evaluator_run(
      probe, trunk, metrics=["linear_probe/top1", "linear_probe/recall_at_5"])
  top1 = metrics["linear_probe/top1"]
  recall5 = metrics["linear_probe/recall_at_5"]
  # Chance is 10% (10 balanced classes); with 450 test images its standard
  # deviation is 1.4%, so 50% is far outside chance. Random conv features at
  # 32 px keep the digits' layout: this probe reaches about 90-95%.
  assert top1 > 0.5
  assert recall5 >= top1
  assert probe.last_alpha is None  # no eval lasso


def test_mixing_after_pooling_equals_pooling_the_mix(rng):
  trunk = mtssl_tf.Trunk(depth=26, width=0.25)
  probe = LinearProbe(image_size=48, pool_size=2)
  backbone = EvalBackbone(trunk, eval_lasso=True, task_name="linear_probe")
  backbone.mixer.row("linear_probe").assign([0.6, -0.8])
  images = tf.constant(rng.uniform(0, 255, size=(2, 48, 48, 3)), tf.float32)
  got = probe._mix(backbone, probe._feature_fn(backbone)(images))
  mixed = backbone(images)  # the EvalBackbone's own mix, then pooled
  want = tf.reshape(adaptive_average_pool(mixed, 2), [2, -1])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
