"""The multi-task trainer: replica equivalence, schedules, checkpoints and
resume, non-finite losses, progress output and summaries."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import tasks as tasks_lib
from mtssl_tf.config import ConfigError, OptimizerConfig
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.training import schedules
from mtssl_tf.training.trainer import NonFiniteLossError, Trainer
import harness
from harness import TASK_PARAMS  # the tiny task parameters of every test


def _image():
  import skimage.data
  return tf.constant(skimage.data.astronaut()[::4, ::4])


def _datasets(names, batch_size, poison=None):
  """Deterministic datasets of global batches made by the tasks' own data
  ops; ``poison=(task, k)`` puts NaN into that task's k-th batch."""
  image = _image()
  out = {}
  for name in names:
    task = tasks_lib.get_task(name, **TASK_PARAMS[name])

    def make(i, task=task):
      return task.preprocess({"image": image, "id": i},
                             tf.stack([i, tf.constant(5, tf.int64)]))

    ds = tf.data.Dataset.range(10**6).map(make).batch(batch_size)
    if poison and poison[0] == name:
      k = poison[1]
      ds = ds.enumerate().map(lambda j, b: (
          tf.where(j == k, b[0] * np.nan, b[0]), b[1]))
    out[name] = ds
  return out


def _config(tmp_path, names=("relative_position", "colorization"), **kw):
  """harness.train_config in ``tmp_path / "run"``."""
  return harness.train_config(tmp_path / "run", names, **kw)


def _weights(trainer):
  return [np.array(v) for v in trainer.model.weights]




def _one_cpu():
  """A one-replica MirroredStrategy for module-scoped runs (the ``mirrored``
  fixture is per test; conftest.py says why each strategy takes a fresh
  collective key base)."""
  tf.distribute.MirroredStrategy._collective_key_base += 1000
  return tf.distribute.MirroredStrategy(["/cpu:0"])


def test_two_replicas_equal_one_replica_on_the_same_global_batch(
    tmp_path, mirrored):
  """Loss scaling, the lasso penalty, cross-replica triplets and
  synchronised batch norm: 2 replicas and 1 give the same update. Two
  tasks (a cycle of two steps): exemplar's triplets are the task-specific
  cross-replica part; the others' losses reach the update the same way as
  relative position's."""
  names = ("relative_position", "exemplar")
  results = []
  for devices in (("/cpu:0",), ("/cpu:0", "/cpu:1")):
    cfg = _config(tmp_path / str(len(devices)), names, steps=2,
                  task_params=harness.uniform_prior_params(names))
    trainer = Trainer(cfg, strategy=mirrored(devices),
                      datasets=_datasets(names, 4), log=lambda s: None)
    assert trainer.num_replicas == len(devices)
    before = _weights(trainer)
    trainer.train()
    results.append(_weights(trainer))
  changed = [not np.allclose(a, b) for a, b in zip(before, results[0])]
  assert sum(changed) > len(changed) // 2  # a real update happened
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_cycle_update_averages_the_gradients_of_one_cycle(tmp_path,
                                                          mirrored):
  """update=cycle applies once per cycle the mean of the cycle's gradients;
  every_step applies each. Checked against a hand-computed SGD step."""
  names = ("relative_position", "colorization")
  cfg = _config(tmp_path, names, steps=2, lasso=False,
                task_params=harness.uniform_prior_params(names))
  trainer = Trainer(cfg, strategy=mirrored(("/cpu:0",)),
                    datasets=_datasets(names, 4), log=lambda s: None)
  model = trainer.model
  w0 = [np.array(v) for v in trainer.variables]
  batches = {n: next(iter(_datasets(names, 4)[n])) for n in names}
  grads = []
  for name in names:
    with tf.GradientTape() as tape:
      out = model(batches[name][0], task=name, training=True)
      loss = tf.reduce_mean(model.task_objects[name].loss(batches[name][1],
                                                          out))
    g = tape.gradient(loss, trainer.variables)
    grads.append([np.zeros_like(w) if x is None else np.array(x)
                  for x, w in zip(g, w0)])
  trainer.train()
  for w, v, g1, g2 in zip(w0, trainer.variables, *grads):
    np.testing.assert_allclose(np.array(v), w - 0.1 * (g1 + g2) / 2,
                               atol=2e-5, rtol=1e-4)


def test_weighted_schedule_repeats_and_follows_weights():
  sched = schedules.Weighted(["a", "b"], [3.0, 1.0], seed=7)
  draws = [sched.task_at(s) for s in range(4000)]
  assert draws == [sched.task_at(s) for s in range(4000)]
  assert abs(draws.count("a") / 4000 - 0.75) < 0.03
  other = schedules.Weighted(["a", "b"], [3.0, 1.0], seed=8)
  assert draws != [other.task_at(s) for s in range(4000)]
  rr = schedules.RoundRobin(["a", "b", "c"])
  assert [rr.task_at(s) for s in range(5)] == ["a", "b", "c", "a", "b"]


def test_optimizer_per_task_every_step(tmp_path, mirrored):
  names = ("relative_position", "colorization")
  cfg = _config(tmp_path, names, steps=2, update="every_step",
                task_params=harness.uniform_prior_params(names),
                optimizer=OptimizerConfig(name="adam", learning_rate=1e-3,
                                          per_task=True))
  trainer = Trainer(cfg, strategy=mirrored(("/cpu:0",)),
                    datasets=_datasets(names, 4), log=lambda s: None)
  assert trainer.optimizers["relative_position"] is not \
      trainer.optimizers["colorization"]
  trainer.train()
  assert int(trainer.optimizers["colorization"].iterations.numpy()) == 1
  assert int(trainer.optimizers["relative_position"].iterations.numpy()) == 1


def test_non_finite_loss_names_task_and_step_and_keeps_checkpoint(
    tmp_path, mirrored):
  names = ("relative_position", "colorization")
  cfg = _config(tmp_path, names, steps=8,
                task_params=harness.uniform_prior_params(names))
  # colorization runs at steps 1, 3, 5, ...; its 3rd batch is step 5.
  trainer = Trainer(cfg, strategy=mirrored(("/cpu:0",)),
                    datasets=_datasets(names, 4, poison=("colorization", 2)),
                    log=lambda s: None)
  with pytest.raises(NonFiniteLossError,
                     match=r"task 'colorization' at step 5.*ckpt-4"):
    trainer.train()
  ckpts = sorted(glob.glob(str(tmp_path / "run/checkpoints/ckpt-*.index")))
  assert [os.path.basename(c) for c in ckpts] == ["ckpt-2.index",
                                                  "ckpt-4.index"]
  reader = tf.train.load_checkpoint(str(tmp_path / "run/checkpoints/ckpt-4"))
  floats = [n for n, d in reader.get_variable_to_dtype_map().items()
            if d.is_floating]
  assert len(floats) > 50
  for name in floats:
    assert np.isfinite(reader.get_tensor(name)).all(), name


def test_progress_lines_summaries_and_run_files(tmp_path, mirrored):
  names = ("relative_position", "colorization")
  lines = []
  cfg = _config(tmp_path, names, steps=4, plots=True,
                task_params=harness.uniform_prior_params(names))
  trainer = Trainer(cfg, strategy=mirrored(("/cpu:0",)),
                    datasets=_datasets(names, 4), log=lines.append)
  out = trainer.train(flags_text="--steps=4\n")
  progress = [l for l in lines if l.startswith("step ")]
  assert len(progress) == 2
  for line in progress:
    for word in ("steps/s", "img/s", "relative_position=", "colorization=",
                 "left"):
      assert word in line, line
  run = tmp_path / "run"
  config = json.loads((run / "config.json").read_text())
  assert config["tasks"] == list(names) and config["lasso"] is True
  assert (run / "flags.txt").read_text() == "--steps=4\n"
  tags = set()
  for path in glob.glob(str(run / "train" / "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  assert {"loss/relative_position", "loss/colorization",
          "lasso/alpha_colorization", "lasso/alpha_matrix"} <= tags
  assert len(out["loss_plots"]) == 2 and os.path.exists(out["alpha_plot"])


RESUME_NAMES = ("relative_position", "colorization")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
  """A run of 6 steps ("a"), and the same run split ("b"): 4 steps, then
  run again to 6 steps with other log and checkpoint intervals (steps and
  intervals may change on a resume). The resume tests read these runs."""
  root = tmp_path_factory.mktemp("resume")
  names = RESUME_NAMES
  params = harness.uniform_prior_params(names)
  full = Trainer(_config(root / "a", names, steps=6, task_params=params),
                 strategy=_one_cpu(), datasets=_datasets(names, 4),
                 log=lambda s: None)
  full.train()
  first = Trainer(_config(root / "b", names, steps=4, task_params=params),
                  strategy=_one_cpu(), datasets=_datasets(names, 4),
                  log=lambda s: None)
  first.train()
  lines = []
  second = Trainer(_config(root / "b", names, steps=6, log_every=1,
                           checkpoint_every=1, task_params=params),
                   strategy=_one_cpu(), datasets=_datasets(names, 4),
                   log=lines.append)
  out = second.train()
  return {"root": root, "params": params, "full": full, "second": second,
          "lines": lines, "out": out}


def test_rerun_resumes_from_the_checkpoint(resumed):
  full, second, out = resumed["full"], resumed["second"], resumed["out"]
  assert any("resumed from" in l and "step 4" in l for l in resumed["lines"])
  assert out["steps_run"] == 2 and int(second.step.numpy()) == 6
  assert int(second.task_steps["colorization"].numpy()) == 3
  # Bit for bit, though the resumed part ran with other intervals.
  for a, b in zip(_weights(full), _weights(second)):
    np.testing.assert_array_equal(a, b)


def test_resume_with_another_config_is_refused_before_building(resumed):
  names = RESUME_NAMES
  # Tasks in another order, another width and batch: refused, each field
  # named old -> new, with the way out; the datasets are never touched.
  changed = _config(resumed["root"] / "b", names[::-1], steps=4,
                    batch_size=2, task_params=resumed["params"],
                    trunk=TrunkConfig(depth=14, width=0.5, sync_bn=True))
  with pytest.raises(ConfigError, match="Differences") as info:
    Trainer(changed, strategy=_one_cpu(), datasets=None,
            log=lambda s: None)
  text = str(info.value)
  assert ("tasks: ['relative_position', 'colorization'] -> "
          "['colorization', 'relative_position']") in text
  assert "trunk.width: 0.25 -> 0.5" in text and "batch_size: 4 -> 2" in text
  assert "another --run_dir" in text and "steps" not in text.split(
      "Differences")[1].split("Use another")[0]
  # Steps and intervals may change: the fixture's resume ran with steps=6,
  # log_every=1 and checkpoint_every=1 (its checkpoints at steps 5 and 6).
  assert resumed["out"]["steps_run"] == 2
  ckpts = {os.path.basename(c) for c in glob.glob(
      str(resumed["root"] / "b/run/checkpoints/ckpt-*.index"))}
  assert {"ckpt-5.index", "ckpt-6.index"} <= ckpts, ckpts


def test_resume_differences_lists_nested_fields():
  from mtssl_tf.config import resume_differences
  old = {"tasks": ["a", "b"], "steps": 5, "trunk": {"depth": 14},
         "task_params": {"a": {"x": 1}}}
  new = {"tasks": ("b", "a"), "steps": 9, "trunk": {"depth": 26},
         "task_params": {"a": {"x": 2}}, "new_field": 3}
  assert resume_differences(old, new) == [
      "new_field: '<absent>' -> 3", "task_params.a.x: 1 -> 2",
      "tasks: ['a', 'b'] -> ['b', 'a']", "trunk.depth: 14 -> 26"]
  # Float round trips (JSON, .npz, renormalising a computed prior) are the
  # same setting; a real change in a value list is not.
  prior = [0.1 / 3, 1e-40, 0.5]
  again = [x * (1 + 2e-16) for x in prior]
  assert resume_differences({"p": prior}, {"p": again}) == []
  changed = resume_differences({"p": prior}, {"p": [0.04, 1e-40, 0.5]})
  assert len(changed) == 1 and changed[0].startswith("p: [0.0333")
