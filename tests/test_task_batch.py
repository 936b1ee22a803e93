"""Per-task batch sizes (--task_batch_size=NAME=N): the config and its
errors, the batches each task's step receives, the loss as the mean over
the task's own global batch (one and two replicas), config.json and
flags.txt, resume, and runs without the flag."""
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import options
from mtssl_tf.config import ConfigError, check_resume, resume_differences
from mtssl_tf.data import pipeline
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.training import pretext_eval
from mtssl_tf.training.trainer import Trainer
import harness

RP, COL = "relative_position", "colorization"


def _quiet(_):
  pass


def _params(names):
  """Tiny parameters of ``names`` with colorization's prior uniform: the
  "auto" prior is computed from the offline images at every build, work
  that no batch size here depends on."""
  params = {n: harness.tiny_params(n) for n in names}
  if COL in params:
    params[COL]["prior"] = "uniform"
  return params


def _argv(*extra):
  """Flags of a tiny two-task run (no flagfile: the test does not depend on
  configs/)."""
  return ["--tasks=relative_position,colorization", "--batch_size=2",
          "--run_dir=unused"] + list(extra)


# -- config and flags ---------------------------------------------------------

def test_flag_sets_the_tasks_sizes_and_others_use_batch_size():
  config = options.parse_args(_argv(
      "--task_batch_size=relative_position=8")).config
  assert dict(config.task_batch_sizes) == {RP: 8}
  assert config.task_batch_size(RP) == 8
  assert config.task_batch_size(COL) == 2
  # Repeatable; a later entry for the same task wins, as later flags do.
  config = options.parse_args(_argv(
      "--task_batch_size=relative_position=8",
      "--task_batch_size=colorization=4",
      "--task_batch_size=relative_position=16")).config
  assert dict(config.task_batch_sizes) == {RP: 16, COL: 4}
  with pytest.raises(ValueError, match="exemplar.*not trained"):
    config.task_batch_size("exemplar")


@pytest.mark.parametrize("extra,words", [
    (["--task_batch_size=no_such_task=8"], "no_such_task"),
    (["--task_batch_size=exemplar=8"], "exemplar is not in --tasks"),
    (["--task_batch_size=relative_position=0"],
     "relative_position=0 must be an integer >= 1"),
    (["--task_batch_size=relative_position=-4"],
     "relative_position=-4 must be an integer >= 1"),
    (["--task_batch_size=relative_position=big"], "'big' is not an integer"),
    (["--task_batch_size=relative_position"], "must look like task=N"),
])
def test_bad_task_batch_sizes_raise_errors_naming_the_problem(extra, words):
  with pytest.raises(ConfigError, match=words):
    options.parse_args(_argv(*extra))


def test_a_task_batch_that_does_not_divide_fails_before_any_work(
    tmp_path, mirrored):
  config = harness.train_config(tmp_path, (RP, COL), batch_size=4,
                                task_batch_sizes={COL: 3})
  with pytest.raises(ConfigError, match="task_batch_size colorization=3 "
                     "does not divide across 2 replicas"):
    Trainer(config, strategy=mirrored(), datasets={}, log=_quiet)
  # batch_size's own check is unchanged and comes first.
  config = harness.train_config(tmp_path, (RP, COL), batch_size=3,
                                task_batch_sizes={COL: 4})
  with pytest.raises(ConfigError, match="batch_size=3 does not divide"):
    Trainer(config, strategy=mirrored(), datasets={}, log=_quiet)


def test_config_json_and_flags_txt_round_trip():
  parsed = options.parse_args(_argv("--task_batch_size=relative_position=8"))
  assert "--task_batch_size=relative_position=8" in parsed.text.splitlines()
  assert options.parse_args(parsed.text.split()).config == parsed.config
  written = json.loads(parsed.config.to_json())
  assert written["task_batch_sizes"] == {RP: 8}
  # config.json's mapping, given back as a typed override, is the same
  # config (how the model zoo and the study pass flags).
  again = options.parse_args(
      _argv(), overrides={"task_batch_size": written["task_batch_sizes"]})
  assert again.config == parsed.config
  # Without the flag: an empty mapping, and flags.txt says nothing.
  plain = options.parse_args(_argv())
  assert json.loads(plain.config.to_json())["task_batch_sizes"] == {}
  assert "task_batch_size" not in plain.text


def test_resume_treats_task_batch_sizes_like_batch_size(tmp_path):
  def config(**kw):
    return options.parse_args(_argv(f"--run_dir={tmp_path}"),
                              overrides=kw).config
  plain = config()
  old = plain.to_dict()
  assert resume_differences(old, config(task_batch_size={RP: 8}).to_dict()) \
      == ["task_batch_sizes.relative_position: 2 -> 8"]
  assert resume_differences(
      config(task_batch_size={RP: 8}).to_dict(),
      config(task_batch_size={RP: 4}).to_dict()) == [
          "task_batch_sizes.relative_position: 8 -> 4"]
  # Naming a task at the batch size it already had changes nothing.
  assert resume_differences(old, config(task_batch_size={RP: 2}).to_dict()) \
      == []
  # check_resume refuses a new size before anything is built, as for
  # batch_size.
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "checkpoints" / "checkpoint").write_text("")
  (tmp_path / "config.json").write_text(json.dumps(old))
  check_resume(plain)
  with pytest.raises(ConfigError, match="colorization: 2 -> 4"):
    check_resume(config(task_batch_size={COL: 4}))


# -- training -----------------------------------------------------------------

def _record_batches(trainer):
  """Wraps each task's replica step to record the (static) batch size of
  every input it is traced with, per replica."""
  seen = {t: [] for t in trainer.config.tasks}
  for task, step in list(trainer._replica_steps.items()):
    def wrapped(inputs, targets, task=task, step=step):
      for t in tf.nest.flatten((inputs, targets)):
        seen[task].append(t.shape[0])
      return step(inputs, targets)
    trainer._replica_steps[task] = wrapped
  return seen


def _assert_start_lines_match_config_json(lines, run_dir):
  """Each task's start line gives the batch that config.json records (its
  task_batch_sizes entry, else batch_size) and where its data come from."""
  with open(os.path.join(run_dir, "config.json")) as f:
    saved = json.load(f)
  start = lines.index(next(l for l in lines if l.startswith("training ")))
  for i, task in enumerate(saved["tasks"]):
    want = (saved.get("task_batch_sizes") or {}).get(task,
                                                     saved["batch_size"])
    line = lines[start + 1 + i]
    assert line.startswith(f"  {task}: global batch {want}, inputs "), line
    assert ", data: " in line and "offline photos" in line, line


def test_one_task_with_its_own_batch_says_that_batch(tmp_path, mirrored):
  lines = []
  config = harness.train_config(tmp_path / "run", (RP,), batch_size=16,
                                task_batch_sizes={RP: 3}, steps=1,
                                lasso=False)
  trainer = Trainer(config, strategy=mirrored(("/cpu:0",)),
                    log=lines.append)
  trainer.train()
  _assert_start_lines_match_config_json(lines, config.run_dir)
  assert any(l.startswith(f"  {RP}: global batch 3, inputs 2x16x16x3")
             for l in lines), lines


def test_input_pipelines_give_each_task_its_batch_and_the_log_says_so(
    tmp_path, mirrored, monkeypatch):
  """The run's own input functions (data=offline) at 4 pairs of relative
  position and 2 exemplar groups per step; the single-pipeline datasets and
  the held-out batches follow the same sizes."""
  lines = []
  names = (RP, "exemplar")
  config = harness.train_config(tmp_path / "run", names, batch_size=2,
                                task_batch_sizes={RP: 4}, steps=2,
                                lasso=False)
  trainer = Trainer(config, strategy=mirrored(("/cpu:0",)),
                    log=lines.append)
  seen = _record_batches(trainer)
  trainer.train()
  assert set(seen[RP]) == {4} and set(seen["exemplar"]) == {2}
  assert [n for n, _ in trainer.history[RP]] == [1]
  # Throughput counts each task's own images: 4 pairs = 8 patches;
  # 2 groups of num_views=2 views = 4 crops.
  assert trainer._images_per_step(RP) == 8
  assert trainer._images_per_step("exemplar") == 4
  _assert_start_lines_match_config_json(lines, config.run_dir)
  # The single-pipeline path (datasets of global batches) too.
  data = pipeline.training_datasets(config, trainer.model.tasks, log=_quiet)
  for name, size in ((RP, 4), ("exemplar", 2)):
    inputs, targets = next(iter(data[name]))
    assert {t.shape[0] for t in tf.nest.flatten((inputs, targets))} == {size}
  # Held-out metrics are made at each task's own batch size.
  sizes = {}

  def materialize(task, source, *, examples, batch_size, seed):
    sizes[task.name] = batch_size
    return []
  monkeypatch.setattr(pretext_eval, "materialize", materialize)
  pretext_eval.from_config(dataclasses.replace(config, pretext_eval_every=1),
                           trainer.model, log=_quiet)
  assert sizes == {RP: 4, "exemplar": 2}


def _numpy_cross_entropy(logits, labels):
  """Softmax cross-entropy per example, in NumPy (float64)."""
  logits = np.asarray(logits, np.float64)
  top = logits.max(axis=1, keepdims=True)
  log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
  return log_z - logits[np.arange(len(labels)), np.asarray(labels)]


# Two cases cover replicas and compilation pairwise: the uncompiled step on
# 2 replicas (each replica's share of the task's batch) and the compiled
# step on 1; one uncompiled replica is the same step function as the
# 2-replica case, fed the whole batch.
@pytest.mark.parametrize("devices,jit", [
    (("/cpu:0", "/cpu:1"), False), (("/cpu:0",), True)],
                         ids=["2_replicas", "1_replica_xla"])
def test_loss_is_the_mean_over_the_tasks_own_global_batch(
    tmp_path, mirrored, devices, jit):
  """Relative position at 4 pairs while batch_size is 2 (colorization's):
  its step-1 loss is the mean of its 4 per-example cross-entropies, computed
  in NumPy from the logits of the same weights and batch; dividing by
  batch_size would double it. With 2 replicas each gets 2 pairs; under
  jit_compile relative position's step is XLA-compiled at its own shape
  (colorization runs uncompiled: Colorization.xla_incompatibility)."""
  names = (RP, COL)
  config = harness.train_config(tmp_path / "run", names, batch_size=2,
                                task_batch_sizes={RP: 4}, steps=2,
                                lasso=False, jit_compile=jit,
                                task_params=_params(names),
                                # XLA cannot compile synchronised BN.
                                trunk=TrunkConfig(**harness.TRUNK,
                                                  sync_bn=not jit))
  datasets = {RP: harness.training_dataset(harness.tiny_task(RP), 4),
              COL: harness.training_dataset(harness.tiny_task(COL), 2)}
  trainer = Trainer(config, strategy=mirrored(devices), datasets=datasets,
                    log=_quiet)
  seen = _record_batches(trainer)
  inputs, labels = next(iter(datasets[RP]))
  # Training mode, as the step runs: batch norm normalises with the batch's
  # own statistics (synchronised across replicas: the same as one replica).
  logits = trainer.model(inputs, task=RP, training=True)
  expected = _numpy_cross_entropy(logits, labels)
  assert expected.shape == (4,)
  trainer.train()
  assert trainer.compiled(RP) == jit and not trainer.compiled(COL)
  per_replica = 4 // len(devices)
  assert set(seen[RP]) == {per_replica}
  assert set(seen[COL]) == {2 // len(devices)}
  (step, loss), = trainer.history[RP]
  assert step == 1
  np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)
  assert not np.isclose(loss, expected.sum() / 2, rtol=1e-3)
  assert np.isfinite(trainer.history[COL][0][1])


def test_a_run_without_the_flag_is_unchanged(tmp_path, mirrored):
  """No --task_batch_size and every task named at batch_size train the same
  run bit for bit, and config.json differs only in the new key (empty by
  default)."""
  names = (RP, COL)
  runs = {}
  for label, sizes in (("plain", None), ("named", {RP: 4, COL: 4})):
    config = harness.train_config(tmp_path / label, names, steps=2,
                                  lasso=False, task_batch_sizes=sizes,
                                  task_params=_params(names))
    datasets = {n: harness.training_dataset(harness.tiny_task(n), 4)
                for n in names}
    trainer = Trainer(config, strategy=mirrored(("/cpu:0",)),
                      datasets=datasets, log=_quiet)
    trainer.train()
    with open(os.path.join(config.run_dir, "config.json")) as f:
      written = json.load(f)
    runs[label] = (trainer.history, [np.array(v) for v in trainer.variables],
                   written)
  plain, named = runs["plain"], runs["named"]
  assert plain[0] == named[0]
  for a, b in zip(plain[1], named[1]):
    np.testing.assert_array_equal(a, b)
  assert plain[2]["task_batch_sizes"] == {}
  assert named[2]["task_batch_sizes"] == {RP: 4, COL: 4}
  rest = lambda d: {k: v for k, v in d.items()  # noqa: E731
                    if k not in ("task_batch_sizes", "run_dir")}
  assert rest(plain[2]) == rest(named[2])


def test_resume_notices_a_task_param_added_to_a_task_that_had_none(tmp_path):
  # The old run set no relative-position parameter: its task_params hold an
  # empty mapping (or none) for the task, and flattening leaves no key.
  def config(*extra):
    return options.parse_args(_argv(f"--run_dir={tmp_path}", *extra)).config
  plain = config().to_dict()
  changed = config("--relative_position.gap=2").to_dict()
  assert resume_differences(plain, changed) == [
      "task_params.relative_position.gap: '<absent>' -> 2"]
  assert resume_differences(changed, plain) == [
      "task_params.relative_position.gap: 2 -> '<absent>'"]
  assert resume_differences(plain, plain) == []
