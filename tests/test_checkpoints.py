"""Run checkpoints keyed by name (mtssl_tf.training.run_checkpoints): a run's
checkpoint restores into a model built with its tasks in another order,
task mismatches are named, a checkpoint in another layout is refused, and
the zoo's weight files are keyed by task name too."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf  # noqa: F401  (registers the Keras classes)
from mtssl_tf import model_zoo
from mtssl_tf.config import OptimizerConfig, TrainConfig
from mtssl_tf.models.build import build_model
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.training import run_checkpoints
from mtssl_tf.training.trainer import Trainer

from harness import TASK_PARAMS
from test_training import _datasets

NAMES = ("relative_position", "colorization")
TRUNK = TrunkConfig(depth=14, width=0.25)
# Two block-3 units: the mixer rows of the tasks can differ.
TRUNK_2_UNITS = TrunkConfig(depth=26, width=0.25)


def _params(name):
  """The tiny parameters; colorization with a given (uniform) prior, so the
  Trainer does not compute one from the training images: the checkpoint's
  layout does not depend on the prior's values."""
  params = dict(TASK_PARAMS[name])
  if name == "colorization":
    params["prior"] = "uniform"
  return params


def _config(run_dir, names=NAMES, lasso=True, **kw):
  defaults = dict(
      run_dir=str(run_dir), tasks=tuple(names),
      task_params={n: _params(n) for n in names}, trunk=TRUNK,
      lasso=lasso, steps=3, batch_size=4, log_every=100, summary_every=100,
      checkpoint_every=3, plots=False,
      optimizer=OptimizerConfig(name="momentum", learning_rate=0.05))
  defaults.update(kw)
  return TrainConfig(**defaults)


def _per_task(model):
  """Task -> {weight path inside its head: array}, the mixer rows by task,
  and the trunk's arrays: what must follow each task whatever the order."""
  heads = {t: {v.path.split("/", 1)[1]: v.numpy()
               for v in model.heads[t].weights} for t in model.task_names}
  rows = ({t: v.numpy() for t, v in model.mixer.rows.items()}
          if model.mixer is not None else {})
  trunk = {v.path: v.numpy() for v in model.trunk.weights}
  return heads, rows, trunk


def _assert_same_per_task(a, b):
  heads_a, rows_a, trunk_a = _per_task(a)
  heads_b, rows_b, trunk_b = _per_task(b)
  assert set(heads_a) == set(heads_b) and set(rows_a) == set(rows_b)
  for task in heads_a:
    assert set(heads_a[task]) == set(heads_b[task])
    for path, value in heads_a[task].items():
      np.testing.assert_array_equal(heads_b[task][path], value,
                                    err_msg=f"{task}: {path}")
  for task, row in rows_a.items():
    np.testing.assert_array_equal(rows_b[task], row, err_msg=task)
  assert trunk_a.keys() == trunk_b.keys()
  for path, value in trunk_a.items():
    np.testing.assert_array_equal(trunk_b[path], value, err_msg=path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, mirrored_module):
  """A 2-step lasso run of two tasks whose mixer rows were set apart first
  (rows of one shape: a swap would go unnoticed otherwise)."""
  run_dir = tmp_path_factory.mktemp("run")
  config = _config(run_dir, trunk=TRUNK_2_UNITS, steps=2, checkpoint_every=2)
  trainer = Trainer(config, strategy=mirrored_module(("/cpu:0",)),
                    datasets=_datasets(NAMES, 4), log=lambda s: None)
  for i, task in enumerate(NAMES):
    row = np.array([1.0 + i, 2.0 - i], np.float32)
    trainer.model.mixer.row(task).assign(row / np.linalg.norm(row))
  trainer.train()
  return str(run_dir), trainer


@pytest.fixture(scope="module")
def mirrored_module():
  def make(devices):
    tf.distribute.MirroredStrategy._collective_key_base += 1000
    return tf.distribute.MirroredStrategy(list(devices))
  return make


def test_checkpoint_layout_is_named(trained_run):
  run_dir, trainer = trained_run
  path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  keys = set(run_checkpoints.checkpoint_keys(path))
  for task in NAMES:
    assert f"model/mixer/{task}" in keys
    assert f"task_steps/{task}" in keys
    assert any(k.startswith(f"model/heads/{task}/") for k in keys)
    assert any(k.startswith(f"data/{task}") for k in keys)
  assert "model/trunk/conv1_conv/kernel" in keys
  # Momentum slots filed under their model variable's name.
  assert "optimizer/trunk/conv1_conv/kernel/momentum" in keys
  assert "optimizer/mixer/colorization/momentum" in keys
  assert "accumulators/heads/colorization/classifier/kernel" in keys
  assert not any(k.startswith("model_weights") for k in keys)
  assert run_checkpoints.checkpoint_tasks(path) == {
      "heads": sorted(NAMES), "mixer": sorted(NAMES)}


def test_restore_into_another_task_order_gives_each_task_its_weights(
    trained_run):
  run_dir, trainer = trained_run
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  reordered = build_model(config, task_order=NAMES[::-1])
  assert reordered.task_names == list(NAMES[::-1])
  path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  run_checkpoints.restore_model(reordered, path)
  _assert_same_per_task(trainer.model, reordered)
  # The run-folder loader (export, evaluation, the zoo's build) likewise.
  loaded = run_checkpoints.load_run_model(run_dir, task_order=NAMES[::-1])
  _assert_same_per_task(trainer.model, loaded)
  # The rows are distinct, so a swap could not pass unnoticed.
  rows = [v.numpy() for v in trainer.model.mixer.rows.values()]
  assert not np.allclose(rows[0], rows[1])


def test_missing_and_extra_tasks_are_named(trained_run):
  run_dir, _ = trained_run
  path = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  cfg = lambda names, lasso=True: _config(run_dir, names, lasso=lasso,
                                          trunk=TRUNK_2_UNITS)
  fewer = build_model(cfg(("relative_position",)))
  with pytest.raises(run_checkpoints.CheckpointTasksError,
                     match=r"head for task\(s\) colorization that the model "
                           r"does not have"):
    run_checkpoints.restore_model(fewer, path)
  more = build_model(cfg(("exemplar",) + NAMES))
  with pytest.raises(run_checkpoints.CheckpointTasksError,
                     match=r"no head for task\(s\) exemplar; no mixer row "
                           r"for task\(s\) exemplar"):
    run_checkpoints.restore_model(more, path)
  no_lasso = build_model(cfg(NAMES, lasso=False))
  with pytest.raises(run_checkpoints.CheckpointTasksError,
                     match="model has no mixer"):
    run_checkpoints.restore_model(no_lasso, path)


def test_checkpoint_without_the_named_layout_is_refused(tmp_path, mirrored):
  """A run folder whose checkpoint holds no ``model/...`` objects (here one
  positional list of the model's weights) gets one error saying to start a
  new run folder, when loading and when resuming."""
  config = _config(tmp_path)
  make = lambda: Trainer(config, strategy=mirrored(("/cpu:0",)),
                         datasets=_datasets(NAMES, 4), log=lambda s: None)
  first = make()
  with open(os.path.join(tmp_path, "config.json"), "w") as f:
    f.write(first.config.to_json())  # with the tasks' prepared params
  tf.train.CheckpointManager(
      tf.train.Checkpoint(model_weights=list(first.model.weights)),
      str(tmp_path / "checkpoints"), max_to_keep=1).save(checkpoint_number=2)
  match = r"holds no model keyed by name.*start a new run folder"
  with pytest.raises(run_checkpoints.CheckpointTasksError, match=match):
    run_checkpoints.load_run_model(str(tmp_path))
  with pytest.raises(run_checkpoints.CheckpointTasksError, match=match):
    make().restore()


def test_zoo_weights_load_by_task_name_in_any_order(tmp_path):
  """The committed lasso preset: its weights file keys the UnitMixer rows by
  task name, so a model built in another order gets the same rows."""
  name = "rp_col_ex_ms_lasso"
  meta = model_zoo.load_metadata(name)
  preset = model_zoo.load(name)
  path = model_zoo.weights_path(name)
  reordered = build_model(meta["model"], task_order=meta["tasks"][::-1])
  reordered.load_weights(path)
  _assert_same_per_task(preset, reordered)
  rows = preset.mixer.alphas()
  assert not np.allclose(rows["relative_position"], rows["colorization"])


def test_build_model_gives_one_model_from_all_three_descriptions(tmp_path):
  """A TrainConfig, its config.json and the model's own get_config() (the
  zoo metadata's "model") rebuild the same architecture."""
  config = _config(tmp_path, NAMES)
  from_config = build_model(config)
  from_json = build_model(json.loads(config.to_json()))
  model_dict = json.loads(json.dumps(
      {k: v for k, v in from_config.get_config().items() if k != "name"}))
  from_zoo = build_model(model_dict)
  for model in (from_json, from_zoo):
    assert model.get_config() == from_config.get_config()
    assert model.count_params() == from_config.count_params()
  assert from_config.task_names == list(NAMES)
  assert build_model(config, task_order=NAMES[::-1]).task_names == \
      list(NAMES[::-1])
  with pytest.raises(ValueError, match=r"missing \['colorization'\], "
                                       r"unknown \['exemplar'\]"):
    build_model(config, task_order=["relative_position", "exemplar"])
  with pytest.raises(ValueError, match="neither a run config"):
    build_model({"tasks": ["relative_position"]})
  with pytest.raises(ValueError, match="got int"):
    build_model(3)
