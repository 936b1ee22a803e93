"""The accelerator flags compose: --steps_per_loop, --mixed_precision,
--jit_compile and --update, in every combination, on the demo recipe's task
set (all four tasks, lasso, Adam) at the tiny test sizes; round robin
instead of the demo's weighted schedule, so that four steps train each task
once.

Each combination either trains (finite losses; a run resumed from its
checkpoint trains on) or is refused before any work with an error naming
the flags and why.

Cost: a run costs its model build and one trace (XLA: one compile) of each
task's step, about 15-30 s each on 2 CPU cores, so not every accepted
combination trains here. All 24 combinations are checked for acceptance or
refusal (cheap: the config alone); six runs train, chosen so that every
pair of flag values (precision and jit, jit and steps_per_loop, update and
precision, ...) trains together at least once: the failures such flags
have shown came from two of them meeting (a bfloat16 head under XLA), and
the jit, update and steps_per_loop code paths do not depend on each other
beyond the graph each one builds. The demo recipe's own combination on an
accelerator (bfloat16, XLA, every step, several steps per loop) is one of
the six. Three of them stop after two steps (relative position,
colorization; a checkpoint in the middle of the cycle) and a run resumed
from that checkpoint trains the other two tasks: the four tasks still train
once each, and the resume costs no trace or compile of its own. One per
precision (each checkpoint holds that precision's optimizer state, the
accumulators of an unfinished cycle, the loss scale under float16), one of
them under XLA (float16 with update=cycle: its first run sets a loss scale
that no step before the checkpoint changes, so the resumed run must start
from it, not from the initial scale).
"""
from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
from mtssl_tf.config import ConfigError, OptimizerConfig
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.training.trainer import Trainer

TASKS = ("relative_position", "colorization", "exemplar",
         "motion_segmentation")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
UPDATES = ("cycle", "every_step")
# Refused by the config, with the message's words: none today (each
# combination trains; the refusals the config makes on other flags, such as
# jit_compile with sync_bn, are tested below).
REFUSED = {}
# (precision, jit_compile, update, steps_per_loop): every pair of values
# of two flags is in at least one run (a pairwise covering set).
TRAINED = [("float32", False, "every_step", 1),
           ("float32", True, "cycle", 2),
           ("mixed_bfloat16", False, "cycle", 1),
           ("mixed_bfloat16", True, "every_step", 2),
           ("mixed_float16", False, "every_step", 2),
           ("mixed_float16", True, "cycle", 1)]
RESUMED = {TRAINED[0], TRAINED[2], TRAINED[5]}


def _quiet(line):
  del line


@pytest.fixture(scope="module")
def strategy():
  tf.distribute.MirroredStrategy._collective_key_base += 1000
  return tf.distribute.MirroredStrategy(["/cpu:0"])


@pytest.fixture(scope="module")
def datasets():
  """Each task's batch of 2 made by its own data op, repeated."""
  out = {}
  for name in TASKS:
    batch = harness.batch(harness.tiny_task(name), size=2)
    out[name] = tf.data.Dataset.from_tensors(batch).repeat()
  return out


def _config(run_dir, precision, jit, update, steps_per_loop, steps=4,
            sync_bn=False):
  """The demo recipe (configs/demo.cfg) shrunk: four tasks, lasso, Adam,
  at the harness's tiny sizes and batch 2, round robin."""
  params = {n: harness.tiny_params(n) for n in TASKS}
  # A uniform colorization prior: "auto" computes one from the offline
  # images in every run folder, work that no flag here changes.
  params["colorization"]["prior"] = "uniform"
  return harness.train_config(
      run_dir, TASKS, task_params=params, steps=steps, batch_size=2, checkpoint_every=4,
      log_every=4, summary_every=4, schedule="round_robin", update=update,
      optimizer=OptimizerConfig(name="adam", learning_rate=1e-3),
      trunk=TrunkConfig(**dict(harness.TRUNK, sync_bn=sync_bn)),
      mixed_precision=precision,
      jit_compile=jit, steps_per_loop=steps_per_loop)


COMBINATIONS = list(itertools.product((1, 2), PRECISIONS, (False, True),
                                      UPDATES))


@pytest.mark.parametrize("steps_per_loop,precision,jit,update", COMBINATIONS)
def test_each_combination_is_accepted_or_refused_naming_the_flags(
    tmp_path, steps_per_loop, precision, jit, update):
  why = REFUSED.get((precision, update))
  if why is None:
    config = _config(tmp_path, precision, jit, update, steps_per_loop)
    assert (config.mixed_precision, config.jit_compile, config.update,
            config.steps_per_loop) == (precision, jit, update, steps_per_loop)
  else:
    with pytest.raises(ConfigError, match=why + f".*update={update}"):
      _config(tmp_path, precision, jit, update, steps_per_loop)


def test_jit_compile_with_synchronised_batch_norm_is_refused_before_any_work(
    tmp_path, strategy, datasets):
  config = _config(tmp_path / "run", "mixed_bfloat16", True, "cycle", 2,
                   sync_bn=True)
  with pytest.raises(ConfigError, match="jit_compile cannot compile "
                     "synchronised batch norm.*--jit_compile --sync_bn"):
    Trainer(config, strategy=strategy, datasets=datasets, log=_quiet)
  assert not (tmp_path / "run").exists()  # nothing prepared or written


def test_the_trained_runs_cover_every_pair_of_accepted_flag_values():
  accepted = [c for c in itertools.product(PRECISIONS, (False, True),
                                           UPDATES, (1, 2))
              if (c[0], c[2]) not in REFUSED]

  def pairs(runs):
    return {(i, run[i], j, run[j]) for run in runs
            for i, j in itertools.combinations(range(4), 2)}
  assert set(TRAINED) <= set(accepted)
  assert pairs(TRAINED) == pairs(accepted)


@pytest.mark.slow
@pytest.mark.parametrize("precision,jit,update,steps_per_loop", TRAINED)
def test_a_covering_set_of_combinations_trains_all_four_tasks(
    tmp_path, strategy, datasets, precision, jit, update, steps_per_loop):
  flags = (precision, jit, update, steps_per_loop)
  resumed = flags in RESUMED
  # A resumed combination's first run stops after relative position and
  # colorization; the resumed run trains exemplar and motion segmentation.
  first_steps = 2 if resumed else 4
  config = _config(tmp_path / "run", *flags, steps=first_steps)
  trainer = Trainer(config, strategy=strategy, datasets=datasets, log=_quiet)
  assert keras.config.dtype_policy().name == "float32"  # restored
  for task in TASKS:
    head = trainer.model.heads[task]
    assert head.dtype_policy.name == precision, task
  assert trainer.compiled("relative_position") == jit
  assert (trainer.loss_scale is not None) == (precision == "mixed_float16")
  if trainer.loss_scale is not None:
    # Not the initial scale (2^15): a resumed run that did not restore it
    # would start from that one.
    trainer.loss_scale.assign(2.0 ** 10)
  out = trainer.train()
  assert out["step"] == first_steps
  for task in TASKS[:first_steps]:
    (step, loss), = trainer.history[task]
    assert np.isfinite(loss), (task, loss)
  if not resumed:
    return
  lines = []
  again = Trainer(_config(tmp_path / "run", *flags),
                  strategy=strategy, datasets=datasets, log=lines.append)
  out = again.train()
  assert any("resumed from" in l and "step 2" in l for l in lines), lines
  assert (out["step"], out["steps_run"]) == (4, 2)
  # The first run's records (read back from the run folder) and this run's.
  assert [again.history[t] for t in TASKS[:2]] == [
      trainer.history[t] for t in TASKS[:2]]
  for step, task in enumerate(TASKS, 1):
    (at, loss), = again.history[task]
    assert at == step and np.isfinite(loss), (task, at, loss)
  if precision == "mixed_float16":
    # Restored with the optimizer; the cycle's apply at step 4 (finite
    # gradients, far fewer good steps than the growth interval) keeps it.
    assert float(again.loss_scale.numpy()) == 2.0 ** 10
