"""The shared test harness: tiny configurations in one place, and the generic
checks that every self-supervised task and every downstream evaluator must
pass.

``tests/test_task_contract.py`` runs the checks over every task in the
registry (``mtssl_tf.tasks.task_names()``) and over the evaluators; a task's
own test file then holds only what is specific to it (its maths against
NumPy references, its bad-input messages), and may call a check here again
with its own parameters (e.g. another colour mode).

Tiny sizes keep the suite fast on 2 CPU cores: a depth-14 trunk (one unit
per block) at width 0.25, images of 64-128 px, batches of 4.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from mtssl_tf import options
from mtssl_tf import tasks as tasks_lib
from mtssl_tf.config import ConfigError, DataConfig, OptimizerConfig, TrainConfig
from mtssl_tf.data.offline import PIP_PACKAGES as PIP_OFFLINE_PACKAGES
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import TrunkConfig

# -- tiny configurations ------------------------------------------------------

# The tiny sizes: configs/tiny.cfg, the one place they are written (the
# smoke recipe and the model zoo's tiny scale read it too).
_TINY = options.flagfile_settings(os.path.join(options.CONFIGS_DIR,
                                               "tiny.cfg"))
# The smallest trunk: one unit per block (block 3 has a single unit).
TRUNK = {"depth": _TINY["depth"], "width": _TINY["width"]}
# Two block-3 units: the smallest trunk where a UnitMixer row really mixes.
MIXER_TRUNK = {"depth": 26, "width": 0.25}

# Tiny parameters of the paper's four tasks, for tests that train or run
# them. A task added in the tests whose defaults are already tiny needs no
# entry (tiny_params falls back to its defaults).
TASK_PARAMS: Dict[str, Dict[str, Any]] = {
    name: dict(params) for name, params in _TINY["task_param"].items()}

# Eager and tf.data results of a data op agree to this absolute tolerance
# on float leaves (integer leaves always exactly; tasks not listed: a few
# ulps of the leaf's largest magnitude, FLOAT_ULPS). Colorization's RGB ->
# Lab conversion is fused differently inside a graph (pow and cube-root
# kernels), which moves values in the last float32 bits of a 0..255 scale.
EAGER_VS_TF_DATA_ATOL: Dict[str, float] = {"colorization": 1e-3}

# Grappler may fuse or reorder the float ops of a graph (more so with oneDNN
# kernels), so a graph and the eager ops agree to a few rounding errors of
# the largest value, not bit for bit.
FLOAT_ULPS = 16


# Where a fixed-batch overfit needs more than the tiny parameters: at 32 px
# motion segmentation's 2x2 feature map, upsampled bilinearly to 8x8, cannot
# draw a rectangle's edges (the loss floors near 0.4); colorization's 8
# hidden channels learn 313-way soft targets too slowly for 30 steps.
OVERFIT_OVERRIDES: Dict[str, Dict[str, Any]] = {
    "colorization": {"hidden_channels": 16},
    "motion_segmentation": {"crop_size": 64},
}


def tiny_params(name: str, **overrides: Any) -> Dict[str, Any]:
  """Tiny keyword arguments of task ``name`` (a copy), with ``overrides``."""
  params = dict(TASK_PARAMS.get(name, {}))
  params.update(overrides)
  return params


def uniform_prior_params(names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
  """Tiny parameters of ``names`` with colorization's prior uniform: the
  "auto" prior is computed from the offline images at every build, work
  that tests of the trainer's loops, flags and layouts do not look at."""
  params = {n: tiny_params(n) for n in names}
  if "colorization" in params:
    params["colorization"]["prior"] = "uniform"
  return params


def tiny_task(name: str, **overrides: Any) -> tasks_lib.Task:
  """Task ``name`` from the registry with tiny parameters."""
  return tasks_lib.get_task(name, **tiny_params(name, **overrides))


def trunk_config(**overrides: Any) -> TrunkConfig:
  """The tiny trunk as a :class:`TrunkConfig` (synchronised batch norm, as
  the multi-replica tests need)."""
  return TrunkConfig(**dict(TRUNK, sync_bn=True, **overrides))


def train_config(run_dir, names: Sequence[str] = ("relative_position",
                                                  "colorization"),
                 **overrides: Any) -> TrainConfig:
  """A tiny :class:`TrainConfig` for ``names``: 4 steps of plain SGD on
  batches of 4, with the lasso, checkpoints every 2 steps, no plots."""
  kwargs = dict(
      run_dir=str(run_dir), tasks=tuple(names),
      task_params={n: tiny_params(n) for n in names},
      trunk=trunk_config(), lasso=True, lasso_l1=1e-2, steps=4, batch_size=4,
      log_every=2, summary_every=2, checkpoint_every=2, plots=False,
      optimizer=OptimizerConfig(name="sgd", learning_rate=0.1),
      # The pip-installed samples only: a run with colorization computes its
      # prior from the offline set, and whether the set-up's fetched OpenCV
      # samples are present must not change a test's numbers (with them the
      # prior differs, and 3 SGD steps at lr 0.1 amplified float rounding to
      # 4.5e-4, past the replica tests' 1e-5).
      data=DataConfig(offline_packages=PIP_OFFLINE_PACKAGES,
                      image_size_limit=_TINY["image_size_limit"],
                      shuffle_buffer=_TINY["shuffle_buffer"]))
  kwargs.update(overrides)
  return TrainConfig(**kwargs)


# -- examples and batches -----------------------------------------------------

_SIZES = ((96, 112), (80, 128))  # two sizes: data ops must not assume one


def photo() -> np.ndarray:
  """A real colour photo, 128x128 uint8 (scikit-image's astronaut / 4)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  return skimage.data.astronaut()[::4, ::4]


def example(i: int) -> Dict[str, np.ndarray]:
  """Example ``i``: every key a task may read (``image``, ``mask``, ``id``).

  The image is the photo rolled by ``3 i`` columns and cut to one of two
  sizes; the motion mask is a rectangle that moves with ``i``, so that
  images and masks differ between examples.
  """
  h, w = _SIZES[i % len(_SIZES)]
  image = np.roll(photo(), 3 * i, axis=1)[:h, :w]
  mask = np.zeros((h, w), np.uint8)
  mask[10 + i % 7:60, 20 + i % 5:70] = 1
  return {"image": np.ascontiguousarray(image), "mask": mask,
          "id": np.int64(i)}


def seed_of(i: int) -> np.ndarray:
  return np.array([i, 11], np.int64)


def batch(task: tasks_lib.Task, size: int = 4,
          start: int = 0) -> Tuple[Any, Any]:
  """A batch ``(inputs, targets)`` made eagerly by the task's own data op
  from examples ``start .. start + size - 1``."""
  pairs = [task.preprocess(example(i), tf.constant(seed_of(i)))
           for i in range(start, start + size)]
  inputs = tf.nest.map_structure(lambda *t: tf.stack(t), *[p[0] for p in pairs])
  targets = tf.nest.map_structure(lambda *t: tf.stack(t),
                                  *[p[1] for p in pairs])
  return inputs, targets


def training_dataset(task: tasks_lib.Task, batch_size: int = 4,
                     poison: Optional[int] = None) -> tf.data.Dataset:
  """Endless global batches ``(inputs, targets)`` made inside ``tf.data`` by
  the task's data op, example ``i`` (the photo rolled by ``3 i`` columns, a
  mask that moves with it) seeded by ``i``: deterministic, and made of
  TensorFlow ops only, so that the trainer can checkpoint the iterator.
  ``poison=k`` puts NaN into the inputs of the k-th batch."""
  image = tf.constant(photo())
  mask = np.zeros(image.shape[:2], np.uint8)
  mask[10:60, 20:70] = 1
  mask = tf.constant(mask)

  def make(i):
    shift = tf.cast(i, tf.int32)
    example = {"image": tf.roll(image, 3 * shift, axis=1),
               "mask": tf.roll(mask, shift % 5, axis=1), "id": i}
    return task.preprocess(example, tf.stack([i, tf.constant(11, tf.int64)]))

  ds = tf.data.Dataset.range(10**6).map(make).batch(batch_size)
  if poison is not None:
    ds = ds.enumerate().map(lambda j, b: (
        tf.where(j == poison, b[0] * np.nan, b[0]), b[1]))
  return ds


def _numpy(structure):
  return [np.asarray(t) for t in tf.nest.flatten(structure)]


def assert_structures_close(actual, expected, atol: Optional[float] = None,
                            what: str = "") -> None:
  """Same nesting, dtypes, shapes and values: integer, boolean and string
  leaves exactly; float leaves to ``atol`` (None: ``FLOAT_ULPS`` ulps of the
  dtype at the leaf's largest magnitude; 0: bit for bit, for the same ops
  run twice)."""
  tf.nest.assert_same_structure(actual, expected)
  for i, (a, e) in enumerate(zip(_numpy(actual), _numpy(expected))):
    label = f"{what} leaf {i}"
    assert a.dtype == e.dtype, (label, a.dtype, e.dtype)
    assert a.shape == e.shape, (label, a.shape, e.shape)
    if not np.issubdtype(e.dtype, np.floating) or atol == 0:
      np.testing.assert_array_equal(a, e, err_msg=label)
      continue
    if atol is None:
      scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
      tol = FLOAT_ULPS * float(np.finfo(e.dtype).eps) * scale
    else:
      tol = atol
    np.testing.assert_allclose(a, e, atol=tol, rtol=0, err_msg=label)


# -- generic task checks ------------------------------------------------------


def check_registry(name: str, params: Optional[Dict[str, Any]] = None
                   ) -> tasks_lib.Task:
  """The registry builds task ``name``; its config is JSON-stable and
  round-trips; a run config and an unknown-name error know it."""
  params = tiny_params(name) if params is None else params
  assert name in tasks_lib.task_names()
  cls = tasks_lib.get_task_class(name)
  task = tasks_lib.get_task(name, **params)
  assert type(task) is cls and task.name == name
  config = task.get_config()
  # JSON-stable: what run folders and .keras files store reads back equal
  # (a tuple would come back as a list).
  assert json.loads(json.dumps(config)) == config, config
  clone = cls.from_config(json.loads(json.dumps(config)))
  assert clone.get_config() == config
  assert repr(task).startswith(f"{cls.__name__}(")
  # A run can name it, with its parameters checked against the constructor.
  run = TrainConfig(run_dir="unused", tasks=(name,), task_params={name: params})
  assert run.tasks == (name,) and set(run.task_kwargs(name)) == set(params)
  try:
    TrainConfig(run_dir="unused", tasks=(name,),
                task_params={name: {"no_such_param": 1}})
  except ConfigError as e:
    assert f"--{name}.no_such_param: {name} has no parameter" in str(e), e
  else:
    raise AssertionError("a run config accepted an unknown task parameter")
  try:
    tasks_lib.check_task_name(name + "_typo")
  except ValueError as e:
    assert f"unknown task '{name}_typo'" in str(e) and name in str(e), e
  else:
    raise AssertionError("an unknown task name was accepted")
  return task


def check_data_op_eager_vs_tf_data(task: tasks_lib.Task,
                                   examples: Optional[Sequence[Dict]] = None,
                                   seeds: Optional[Sequence] = None,
                                   atol: Optional[float] = None) -> List:
  """The task's data op gives the same result eagerly and inside a
  ``tf.data`` map over images of unknown static size (fixed seeds); it is
  deterministic given the seed, and the seed matters.

  Returns the eager results.
  """
  examples = list(examples) if examples is not None else [
      example(i) for i in range(3)]
  seeds = [np.asarray(s, np.int64) for s in (
      seeds if seeds is not None else [seed_of(i) for i in range(
          len(examples))])]
  if atol is None:
    atol = EAGER_VS_TF_DATA_ATOL.get(task.name)
  eager = [task.preprocess(e, tf.constant(s)) for e, s in zip(examples, seeds)]
  again = task.preprocess(examples[0], tf.constant(seeds[0]))
  assert_structures_close(again, eager[0], atol=0, what="same seed twice")

  keys = sorted(examples[0])
  spec = {}
  for k in keys:
    value = np.asarray(examples[0][k])
    # Images and masks of unknown height and width, as decoded files.
    shape = [None] * min(value.ndim, 2) + list(value.shape[2:])
    spec[k] = tf.TensorSpec(shape, tf.as_dtype(value.dtype))

  def gen():
    for e in examples:
      yield {k: np.asarray(e[k]) for k in keys}

  ds = tf.data.Dataset.zip(
      tf.data.Dataset.from_generator(gen, output_signature=spec),
      tf.data.Dataset.from_tensor_slices(np.stack(seeds)))
  graph = list(ds.map(task.preprocess))
  assert len(graph) == len(eager)
  for i, (g, e) in enumerate(zip(graph, eager)):
    assert_structures_close(g, e, atol=atol, what=f"example {i}")

  # Another seed gives another result (crops, flips, labels ...) for at
  # least one of six seeds.
  first = np.concatenate([a.ravel() for a in _numpy(eager[0][0])])
  differs = False
  for k in range(1, 7):
    other = task.preprocess(examples[0], tf.constant([int(seeds[0][0]) + k,
                                                      int(seeds[0][1])]))
    values = np.concatenate([a.ravel() for a in _numpy(other[0])])
    differs |= not np.array_equal(values, first)
  assert differs, f"{task.name}: the seed does not change the data op"
  return eager


def check_loss_and_metrics(task: tasks_lib.Task, targets, outputs,
                           batch_size: int) -> np.ndarray:
  """``loss`` is float32 [B], finite, >= 0 and the same inside a
  ``tf.function``; ``metrics`` are finite scalars. Returns the loss."""
  loss = task.loss(targets, outputs)
  assert loss.dtype == tf.float32, loss.dtype
  assert tuple(loss.shape) == (batch_size,), loss.shape
  values = loss.numpy()
  assert np.all(np.isfinite(values)) and np.all(values >= 0), values
  graph = tf.function(task.loss)(targets, outputs).numpy()
  np.testing.assert_allclose(graph, values, rtol=1e-5, atol=1e-6)
  metrics = task.metrics(targets, outputs)
  assert isinstance(metrics, dict)
  for key, value in metrics.items():
    assert isinstance(key, str)
    value = np.asarray(value)
    assert value.shape == () and np.isfinite(value), (key, value)
  return values


def check_heldout_metric(name: str, model, batches: int = 2,
                         size: int = 4) -> Optional[Dict[str, float]]:
  """The task's own hooks of the trainer and the held-out evaluation:
  ``xla_incompatibility`` is None or a reason; with a ``headline_metric``,
  ``heldout_scores`` of the model's outputs on ``batches`` batches (as
  :mod:`mtssl_tf.training.pretext_eval` passes them: NumPy) holds it and
  ``"chance"`` as finite floats, and its log part and table rows read them.
  Returns the scores (None for a task without held-out metric)."""
  task = model.task_objects[name]
  for replicas in (1, 2):
    why = task.xla_incompatibility(replicas)
    assert why is None or (isinstance(why, str) and why), (name, why)
  if task.headline_metric is None:
    return None
  heldout = [tf.nest.map_structure(np.asarray, batch(task, size, size * k))
             for k in range(batches)]
  outputs = [np.asarray(model(tf.nest.map_structure(tf.constant, x),
                              task=name, training=False))
             for x, _ in heldout]
  scores = task.heldout_scores(heldout, outputs)
  assert {task.headline_metric, "chance"} <= set(scores), scores
  for key, value in scores.items():
    assert isinstance(key, str) and isinstance(value, float), (key, value)
    assert math.isfinite(value), (key, value)
  summary = type(task).heldout_summary(scores)
  assert isinstance(summary, str) and summary, summary
  rows = type(task).heldout_table(scores)
  assert rows, name
  for label, value, chance, baseline in rows:
    assert isinstance(label, str) and isinstance(baseline, str)
    assert value in scores.values() and chance in scores.values(), rows
  return scores


def _perturb(model: keras.Model, seed: int = 0) -> None:
  """Weights and batch-norm statistics away from their initial values, so
  that a reload that silently re-initialises would be caught. Scaling by
  [0.8, 1.2] and adding [0, 0.05) keeps variances positive."""
  rng = np.random.default_rng(seed)
  model.set_weights([
      (w * rng.uniform(0.8, 1.2, w.shape) + rng.uniform(0, 0.05, w.shape)
       ).astype(w.dtype) if w.dtype.kind == "f" else w
      for w in model.get_weights()])


def _json(config):
  return json.loads(json.dumps(config))


def assert_configs_equal(actual, expected, path: str = "config") -> None:
  """Equal nested configs, floats to 1e-9 relative: a renormalised value
  list (a colorization prior) may move in its last bits on a round trip."""
  if isinstance(expected, dict):
    assert isinstance(actual, dict) and set(actual) == set(expected), (
        path, sorted(actual) if isinstance(actual, dict) else actual,
        sorted(expected))
    for k in expected:
      assert_configs_equal(actual[k], expected[k], f"{path}.{k}")
  elif isinstance(expected, (list, tuple)):
    assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), (
        path, actual, expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
      assert_configs_equal(a, e, f"{path}[{i}]")
  elif isinstance(expected, float) and not isinstance(expected, bool):
    assert isinstance(actual, (int, float)) and math.isclose(
        actual, expected, rel_tol=1e-9, abs_tol=1e-300), (path, actual,
                                                          expected)
  else:
    assert actual == expected, (path, actual, expected)


def check_head_save_load_roundtrip(name: str, tmp_path,
                                   params: Optional[Dict[str, Any]] = None,
                                   trunk: Optional[Dict[str, Any]] = None,
                                   mixer: Optional[Dict[str, Any]] = None,
                                   model: Optional[MultiTaskModel] = None):
  """A :class:`MultiTaskModel` holding task ``name`` (trunk, UnitMixer, its
  head), saved as ``.keras`` and loaded back: identical outputs, same
  config; the head's own config round-trips too.

  ``model``: a model to use (its weights are perturbed) instead of one
  built from ``params``, ``trunk`` (default ``TRUNK``) and ``mixer``.

  Returns ``(model, loaded, inputs)`` for task-specific assertions.
  """
  if model is None:
    params = tiny_params(name) if params is None else params
    model = MultiTaskModel(trunk=trunk or TRUNK, tasks={name: params},
                           mixer={"l1": 1e-3} if mixer is None else mixer)
  task = model.task_objects[name]
  inputs, _ = batch(task, 2)
  _perturb(model)
  expected = model(inputs, task=name, training=False)
  path = str(tmp_path / f"{name}.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, MultiTaskModel)
  assert_configs_equal(_json(loaded.get_config()), _json(model.get_config()))
  assert_structures_close(loaded(inputs, task=name, training=False), expected,
                          atol=1e-5, what=f"{name} reloaded")
  # The head alone: a clone from its config has the same weights' shapes
  # (set_weights fails otherwise) and computes the same outputs.
  head = model.heads[name]
  clone = type(head).from_config(head.get_config())
  assert_configs_equal(_json(clone.get_config()), _json(head.get_config()))
  features = model.features(task.trunk_images(inputs), name)
  clone(features)
  clone.set_weights(head.get_weights())
  assert_structures_close(clone(features, training=False),
                          head(features, training=False), atol=1e-6,
                          what=f"{name} head rebuilt from its config")
  assert type(loaded.heads[name]) is type(head)
  return model, loaded, inputs


def check_overfits_fixed_batch(name: str, steps: int = 30,
                               params: Optional[Dict[str, Any]] = None,
                               learning_rate: float = 1e-2,
                               batch_size: int = 4,
                               trunk: Optional[Dict[str, Any]] = None
                               ) -> List[float]:
  """Adam steps on one fixed batch through trunk, UnitMixer and head bring
  the task's loss (mean of the last 3 steps) below half its start (mean of
  the first 3), from a start that is not already near zero; every trunk
  variable gets a non-zero gradient at the first step (the gradient path
  through the shared trunk is intact).

  Returns the losses.
  """
  if params is None:
    params = tiny_params(name, **OVERFIT_OVERRIDES.get(name, {}))
  keras.utils.set_random_seed(1)
  model = MultiTaskModel(trunk=trunk or TRUNK, tasks={name: params},
                         mixer={"l1": 1e-4})
  task = model.task_objects[name]
  inputs, targets = batch(task, batch_size)
  optimizer = keras.optimizers.Adam(learning_rate)
  variables = model.trainable_variables
  trunk_ids = {id(v) for v in model.trunk.trainable_variables}

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(task.loss(
          targets, model(inputs, task=name, training=True)))
    grads = tape.gradient(loss, variables)
    trunk_norm = tf.linalg.global_norm(
        [g for g, v in zip(grads, variables)
         if g is not None and id(v) in trunk_ids])
    trunk_missing = sum(1 for g, v in zip(grads, variables)
                        if g is None and id(v) in trunk_ids)
    optimizer.apply_gradients(
        (g, v) for g, v in zip(grads, variables) if g is not None)
    return loss, trunk_norm, trunk_missing

  losses = []
  for i in range(steps):
    loss, trunk_norm, trunk_missing = step()
    if i == 0:
      assert int(trunk_missing) == 0 and float(trunk_norm) > 0, name
    losses.append(float(loss))
  first, last = np.mean(losses[:3]), np.mean(losses[-3:])
  assert np.isfinite(losses).all(), losses
  assert first > 0.05, (name, losses[:3])
  assert last < 0.5 * first, (name, losses[:3], losses[-3:])
  return losses


# -- generic evaluator checks -------------------------------------------------


def depth_source(seed: int = 0, n_train: int = 4, n_test: int = 3,
                 size: int = 36) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
  """A (train, test) pair of tiny random RGB + depth datasets, the form of
  ``DepthEvaluator(source=...)``."""
  rng = np.random.default_rng(seed)

  def make(n):
    return tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8),
        "depth": rng.uniform(0.5, 3.0, (n, size, size)).astype(np.float32)})
  return make(n_train), make(n_test)


def trunk_weights(trunk) -> List[np.ndarray]:
  """Copies of every trunk weight, batch-norm moving statistics included."""
  return [np.array(w, copy=True) for w in trunk.get_weights()]


def check_evaluator_run(evaluator, trunk, *, eval_lasso: bool = False,
                        metrics: Optional[Iterable[str]] = None
                        ) -> Tuple[Dict[str, float], List[str]]:
  """``evaluator.run(trunk)`` yields unique ``<name>/<metric>`` pairs with
  finite float values (``metrics``: exactly these names, in this order),
  and gives the caller's trunk back unchanged: same weights and batch-norm
  statistics, same ``trainable`` flag.

  Returns ``(metrics dict, log lines)``.
  """
  before = trunk_weights(trunk)
  trainable = trunk.trainable
  lines: List[str] = []
  results = list(evaluator.run(trunk, eval_lasso=eval_lasso,
                               log=lines.append))
  names = [k for k, _ in results]
  assert len(set(names)) == len(names), names
  assert names and all(k.startswith(f"{evaluator.name}/") for k in names), \
      names
  if metrics is not None:
    assert names == list(metrics), names
  for k, v in results:
    assert isinstance(v, float) and math.isfinite(v), (k, v)
  after = trunk_weights(trunk)
  assert len(after) == len(before)
  for a, b in zip(before, after):
    np.testing.assert_array_equal(a, b)
  assert trunk.trainable == trainable
  return dict(results), lines


def check_eval_lasso_row(alpha: np.ndarray, num_units: int) -> None:
  """An eval-lasso row after training: one weight per block-3 unit, unit
  norm, and moved away from its start at the last unit ([0, ..., 0, 1])."""
  alpha = np.asarray(alpha, np.float64)
  assert alpha.shape == (num_units,), alpha.shape
  np.testing.assert_allclose(np.sum(alpha ** 2), 1.0, rtol=1e-5)
  start = np.eye(num_units)[-1]
  assert np.abs(alpha - start).max() > 1e-7, alpha


def h5_named_arrays(path: str) -> Dict[str, np.ndarray]:
  """Every dataset of an HDF5 file (a Keras ``.weights.h5``), by its path,
  read with h5py (independent of Keras's loader)."""
  import h5py  # pylint: disable=g-import-not-at-top
  arrays = {}
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                 if isinstance(obj, h5py.Dataset) else None)
  return arrays


def assert_features_close(reference, other, seed: int = 0,
                          size: int = 32, tolerance: float = 1e-2) -> None:
  """Every task's features of two multi-task models on the same random
  images differ by at most ``tolerance`` of the reference's largest
  magnitude (float16-stored weights: tests/test_zoo_float16.py says why 1%)."""
  images = tf.constant(np.random.default_rng(seed).uniform(
      0, 255, (2, size, size, 3)), tf.float32)
  for task in reference.task_names:
    ref = reference.features(images, task=task).numpy()
    got = other.features(images, task=task).numpy()
    assert np.max(np.abs(got - ref)) <= tolerance * np.max(np.abs(ref)), task


# -- commands in forked children of one interpreter ----------------------------

# Runs commands in order, each in a child forked from one interpreter that
# has imported TensorFlow and Keras (one import instead of one per command;
# nothing has run yet, so each child starts TensorFlow's runtime itself). A
# child is a fresh process for its command: it runs ``python -m MODULE ARGS``
# or ``python SCRIPT ARGS`` as ``__main__``, with its own absl flags, in the
# driver's working folder. Reads the commands as JSON on stdin; writes one
# {"rc", "output"} per command as JSON on stdout.
def _forked_commands_driver() -> str:
  import textwrap  # pylint: disable=g-import-not-at-top
  import forked_children  # pylint: disable=g-import-not-at-top
  return (forked_children.WAIT_OR_KILL + forked_children.RUN_COMMAND
          + textwrap.dedent(r"""
    import json, tempfile
    import tensorflow, keras                      # imported once, before fork
    results = []
    for args in json.load(sys.stdin):
      out = tempfile.TemporaryFile()
      pid = os.fork()
      if pid == 0:
        os.dup2(out.fileno(), 1); os.dup2(out.fileno(), 2)
        os._exit(run_command(args))
      status = wait_or_kill(pid, 600)
      out.seek(0)
      results.append({"rc": os.waitstatus_to_exitcode(status),
                      "output": out.read().decode("utf-8", "replace")})
    json.dump(results, sys.stdout)
  """))


def run_forked_commands(python: str, commands: Sequence[Sequence[str]], *,
                        cwd: str, env: Dict[str, str],
                        timeout: float = 1200) -> List[Dict[str, Any]]:
  """Runs ``commands`` (each ``["-m", MODULE, *ARGS]`` or ``[SCRIPT,
  *ARGS]``) in forked children of one ``python`` that has imported
  TensorFlow (this interpreter's: the test process's fork server,
  tests/fork_server.py); returns each one's {"rc": exit status, "output":
  its stdout and stderr}."""
  import subprocess  # pylint: disable=g-import-not-at-top
  if python == sys.executable:
    import fork_server  # pylint: disable=g-import-not-at-top
    results = []
    for command in commands:
      done = fork_server.run(command, cwd=cwd, env=env, timeout=timeout,
                             combined=True)
      results.append({"rc": done.returncode, "output": done.stdout})
    return results
  proc = subprocess.run([python, "-c", _forked_commands_driver()], cwd=cwd,
                        env=env, input=json.dumps([list(c) for c in commands]),
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  return json.loads(proc.stdout)
