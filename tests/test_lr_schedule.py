"""Learning-rate schedules: the pure function of the global step against a
NumPy reference and hand-computed values, the config's checks and flags, and
the trainer: the rate of every step (history.jsonl, TensorBoard, the log,
the optimizers' variables) for a shared optimizer under update=cycle on two
replicas, per-task optimizers under every_step with XLA, an SGD update made
at the scheduled rate, and a run split by a resume against an unsplit one."""
import glob
import json

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import options
from mtssl_tf.config import ConfigError, OptimizerConfig
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.training import learning_rate as lr_lib
from mtssl_tf.training.trainer import Trainer
import harness
from test_training import _datasets

NAMES = ("relative_position", "colorization")
# Runs whose property is the rate of the global step, not how tasks share
# it, train one task.
ONE = NAMES[:1]
# One float32 rounding, relative: a float64 rate and its float32 value.
F32_ULP = float(np.finfo(np.float32).eps)


def _params(names=NAMES):
  """Tiny parameters of ``names`` with colorization's prior uniform: the
  "auto" prior is computed from the offline images at every build, work
  that no rate here depends on."""
  params = {n: harness.tiny_params(n) for n in names}
  if "colorization" in params:
    params["colorization"]["prior"] = "uniform"
  return params


def _reference(n, base, total, warmup=0, schedule="constant", floor=0.0,
               drops=()):
  """The schedule over an array of 1-based steps, written with NumPy from
  the formulas of docs/learning_rate.md (not from the module)."""
  n = np.asarray(n, np.float64)
  main = np.full(n.shape, base)
  if schedule == "cosine":
    p = np.clip((n - warmup) / (total - warmup), 0.0, 1.0)
    main = floor * base + (1.0 - floor) * base * (np.cos(np.pi * p) + 1) / 2
  elif schedule == "step":
    # The number of drop steps strictly below n.
    main = base * 0.1 ** np.searchsorted(np.asarray(drops), n, side="left")
  if warmup:
    main = np.where(n <= warmup, base * n / warmup, main)
  return main


# -- the pure function ------------------------------------------------------------
def test_hand_computed_rates_at_chosen_steps():
  cos = OptimizerConfig(learning_rate=0.2, lr_schedule="cosine",
                        lr_warmup_steps=10, lr_min_fraction=0.1)
  at = lambda cfg, total, n: lr_lib.rate_at(cfg, total, n)
  # Warm-up: a line from 0; the cosine starts at the full rate, is at the
  # mean of rate and floor half way, and ends on the floor at the last step.
  assert at(cos, 110, 1) == pytest.approx(0.02)
  assert at(cos, 110, 5) == pytest.approx(0.1)
  assert at(cos, 110, 10) == pytest.approx(0.2)
  assert 0.199 < at(cos, 110, 11) < 0.2
  assert at(cos, 110, 60) == pytest.approx((0.2 + 0.02) / 2)
  assert at(cos, 110, 110) == pytest.approx(0.02)
  assert at(cos, 110, 500) == pytest.approx(0.02)  # past the end: the floor
  step = OptimizerConfig(learning_rate=1.0, lr_schedule="step",
                         lr_drop_steps=(30, 60))
  assert [at(step, 100, n) for n in (1, 30, 31, 60, 61, 100)] == \
      pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
  # Fractions of the run: the same drops at round(f * T), following T.
  frac = OptimizerConfig(learning_rate=1.0, lr_schedule="step",
                         lr_drop_fractions=(0.5, 0.9))
  assert [at(frac, 100, n) for n in (50, 51, 90, 91)] == \
      pytest.approx([1.0, 0.1, 0.1, 0.01])
  assert [at(frac, 10, n) for n in (5, 6, 9, 10)] == \
      pytest.approx([1.0, 0.1, 0.1, 0.01])
  assert lr_lib.drop_steps(frac, 2000) == (1000, 1800)
  const = OptimizerConfig(learning_rate=0.5, lr_warmup_steps=4)
  assert [at(const, 9, n) for n in range(1, 7)] == pytest.approx(
      [0.125, 0.25, 0.375, 0.5, 0.5, 0.5])
  assert not lr_lib.is_scheduled(OptimizerConfig())
  assert lr_lib.is_scheduled(const)
  with pytest.raises(ValueError, match="numbered from 1"):
    at(cos, 110, 0)


@pytest.mark.parametrize("kwargs,total", [
    (dict(lr_schedule="cosine"), 37),
    (dict(lr_schedule="cosine", lr_warmup_steps=7, lr_min_fraction=0.03), 50),
    (dict(lr_schedule="step", lr_drop_steps=(9, 20, 21)), 40),
    (dict(lr_schedule="step", lr_warmup_steps=5, lr_drop_steps=(5, 30)), 31),
    (dict(lr_warmup_steps=3), 12),
    (dict(), 5),
])
def test_every_step_matches_the_numpy_reference(kwargs, total):
  cfg = OptimizerConfig(learning_rate=3e-3, **kwargs)
  steps = np.arange(1, total + 1)
  expected = _reference(
      steps, 3e-3, total, warmup=cfg.lr_warmup_steps,
      schedule=cfg.lr_schedule, floor=cfg.lr_min_fraction,
      drops=cfg.lr_drop_steps)
  actual = [lr_lib.rate_at(cfg, total, int(n)) for n in steps]
  np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)
  # One loop's rates: float32, as the optimizers hold them. The module and
  # the reference use different formulas (and libm vs NumPy's cos), so the
  # float64 values may round to neighbouring float32 values.
  chunk = lr_lib.rates(cfg, total, 4, total - 3)
  assert chunk.dtype == np.float32
  np.testing.assert_allclose(chunk, expected[3:], rtol=F32_ULP, atol=0)
  after = expected[cfg.lr_warmup_steps:]
  assert np.all(np.diff(after) <= 0)  # no schedule rises after the warm-up


# -- configuration and flags ---------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(lr_schedule="linear"),
     r"lr_schedule='linear'; allowed: constant, cosine, step"),
    (dict(lr_warmup_steps=-1), r"lr_warmup_steps=-1 must be an integer >= 0"),
    (dict(lr_warmup_steps=2.5), r"lr_warmup_steps=2.5 must be an integer"),
    (dict(lr_schedule="cosine", lr_min_fraction=1.5),
     r"lr_min_fraction=1.5 must be a number >= 0 and <= 1"),
    (dict(lr_min_fraction=0.1),
     r"lr_min_fraction=0.1 applies to lr_schedule=cosine only "
     r"\(contradicting flags: lr_schedule=constant\)"),
    (dict(lr_schedule="cosine", lr_drop_steps=(5,)),
     r"lr_drop_steps=\[5\] applies to lr_schedule=step only \(contradicting "
     r"flags: lr_schedule=cosine\)"),
    (dict(lr_schedule="step"), r"lr_schedule=step needs --lr_drop_steps"),
    (dict(lr_schedule="step", lr_drop_steps=(8, 5)),
     r"lr_drop_steps=\[8, 5\] must be strictly increasing"),
    (dict(lr_schedule="step", lr_drop_steps=(5, 5)),
     r"strictly increasing"),
    (dict(lr_schedule="step", lr_warmup_steps=10, lr_drop_steps=(5,)),
     r"a drop at step 5 falls inside the warm-up \(lr_warmup_steps=10\)"),
    (dict(lr_schedule="step", lr_drop_steps=(0, 5)),
     r"lr_drop_steps: 0 in \[0, 5\] must be an integer >= 1"),
    (dict(lr_schedule="step", lr_drop_steps=("5",)),
     r"lr_drop_steps: '5' in \['5'\] must be an integer >= 1"),
    (dict(lr_schedule="step", lr_drop_fractions=(0.9, 1.0)),
     r"lr_drop_fractions: 1.0 in \[0.9, 1.0\] must be a number > 0 and < 1"),
    (dict(lr_schedule="cosine", lr_drop_fractions=(0.5,)),
     r"lr_drop_fractions=\[0.5\] applies to lr_schedule=step only"),
    (dict(lr_schedule="step", lr_drop_steps=(5,), lr_drop_fractions=(0.5,)),
     r"both say where the rate drops: give one"),
])
def test_optimizer_config_refuses_contradictions(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    OptimizerConfig(**kwargs)


def test_train_config_checks_the_schedule_against_the_run_length(tmp_path):
  with pytest.raises(ConfigError, match=r"lr_warmup_steps=10 must be < "
                     r"steps=10 \(the warm-up would never end\)"):
    harness.train_config(tmp_path, steps=10,
                         optimizer=OptimizerConfig(lr_warmup_steps=10))
  with pytest.raises(ConfigError, match=r"lr_drop_steps \[10, 12\] are >= "
                     r"steps=10"):
    harness.train_config(tmp_path, steps=10, optimizer=OptimizerConfig(
        lr_schedule="step", lr_drop_steps=(4, 10, 12)))
  ok = harness.train_config(tmp_path, steps=10, optimizer=OptimizerConfig(
      lr_schedule="step", lr_warmup_steps=4, lr_drop_steps=(4, 9)))
  assert ok.optimizer.lr_drop_steps == (4, 9)


def test_flags_reach_the_config_and_config_json(tmp_path):
  default = options.parse_args(["--tasks=relative_position"]).config
  assert (default.optimizer.lr_schedule, default.optimizer.lr_warmup_steps,
          default.optimizer.lr_min_fraction,
          default.optimizer.lr_drop_steps) == ("constant", 0, 0.0, ())
  argv = ["--tasks=relative_position", "--steps=100", "--lr_schedule=cosine",
          "--lr_warmup_steps=10", "--lr_min_fraction=0.05"]
  parsed = options.parse_args(argv)
  written = json.loads(parsed.config.to_json())["optimizer"]
  assert {k: written[k] for k in ("lr_schedule", "lr_warmup_steps",
                                  "lr_min_fraction", "lr_drop_steps")} == {
      "lr_schedule": "cosine", "lr_warmup_steps": 10,
      "lr_min_fraction": 0.05, "lr_drop_steps": []}
  (tmp_path / "flags.txt").write_text(parsed.text)
  again = options.parse_args([f"--flagfile={tmp_path / 'flags.txt'}"])
  assert again.config == parsed.config
  step = options.parse_args(["--tasks=relative_position", "--steps=100",
                             "--lr_schedule=step", "--lr_drop_steps=50,80"])
  assert step.config.optimizer.lr_drop_steps == (50, 80)
  # Later flags win: switching the schedule drops the step schedule's
  # options with one warning line, as other mode options are.
  lines = []
  switched = options.parse_args(
      ["--tasks=relative_position", "--steps=100", "--lr_schedule=step",
       "--lr_drop_steps=50", "--lr_schedule=cosine"], warn=lines.append)
  assert switched.config.optimizer.lr_drop_steps == ()
  assert len(lines) == 1 and "--lr_drop_steps (--lr_schedule=cosine)" in \
      lines[0]
  with pytest.raises(ConfigError, match=r"flag --lr_drop_steps=5x: invalid "
                     "literal for int"):
    options.parse_args(["--lr_schedule=step", "--lr_drop_steps=5x"])


# -- the trainer -----------------------------------------------------------------------------
def _history(run_dir):
  with open(run_dir / "history.jsonl") as f:
    return [r for r in map(json.loads, f) if "loss" in r]


def _expected_rates(cfg, steps):
  """The float32 rates the trainer assigns at ``steps`` (the module's, so
  what the trainer records is compared exactly, as a copy), checked
  against the NumPy reference to a float32 rounding."""
  o = cfg.optimizer
  steps = list(steps)
  rates = lr_lib.rates(o, cfg.steps, steps[0], len(steps))
  assert steps == list(range(steps[0], steps[0] + len(steps)))
  np.testing.assert_allclose(
      rates, _reference(steps, o.learning_rate, cfg.steps,
                        warmup=o.lr_warmup_steps, schedule=o.lr_schedule,
                        floor=o.lr_min_fraction, drops=o.lr_drop_steps),
      rtol=F32_ULP, atol=0)
  return rates


def test_shared_optimizer_cycle_two_replicas_follow_the_schedule(tmp_path,
                                                                 mirrored):
  """update=cycle, one optimizer, 2 replicas, two steps per tf.function:
  every step's recorded rate (read back from the optimizer) is the
  reference's, and so are TensorBoard's and the log's."""
  cfg = harness.train_config(
      tmp_path / "run", NAMES, task_params=_params(), steps=4,
      steps_per_loop=2,
      optimizer=OptimizerConfig(name="sgd", learning_rate=0.1,
                                lr_schedule="cosine", lr_warmup_steps=2,
                                lr_min_fraction=0.1))
  lines = []
  trainer = Trainer(cfg, strategy=mirrored(), datasets=_datasets(NAMES, 4),
                    log=lines.append)
  assert trainer.num_replicas == 2
  trainer.train()
  history = _history(tmp_path / "run")
  steps = [r["step"] for r in history]
  assert steps == [1, 2, 3, 4]
  expected = _expected_rates(cfg, steps)
  np.testing.assert_array_equal(
      np.float32([r["learning_rate"] for r in history]), expected)
  assert np.float32(trainer.optimizers["colorization"].learning_rate.numpy()
                   ) == expected[-1]
  summaries = {}
  for path in glob.glob(str(tmp_path / "run" / "train" / "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.tag == "learning_rate":
          summaries[event.step] = float(tf.make_ndarray(v.tensor))
  assert sorted(summaries) == [2, 4]  # summary_every=2
  for step, value in summaries.items():
    assert np.float32(value) == expected[step - 1]
  progress = [l for l in lines if l.startswith("step ")]
  assert [l.split(" | ")[4] for l in progress] == [
      f"lr {expected[s - 1]:.3g}" for s in (2, 4)]


def test_per_task_optimizers_every_step_with_xla_share_the_rate(tmp_path,
                                                                mirrored):
  """Each task's own optimizer holds the global step's rate, also the
  optimizer of the task that did not run at that step."""
  cfg = harness.train_config(
      tmp_path / "run", NAMES, task_params=_params(), steps=5,
      update="every_step",
      jit_compile=True, trunk=TrunkConfig(**harness.TRUNK, sync_bn=False),
      optimizer=OptimizerConfig(name="adam", learning_rate=1e-3,
                                per_task=True, lr_schedule="step",
                                lr_warmup_steps=2, lr_drop_steps=(3,)))
  trainer = Trainer(cfg, strategy=mirrored(("/cpu:0",)),
                    datasets=_datasets(NAMES, 4), log=lambda s: None)
  assert trainer.compiled("relative_position")
  trainer.train()
  history = _history(tmp_path / "run")
  assert [r["task"] for r in history] == list(NAMES) * 2 + [NAMES[0]]
  rates = np.float32([r["learning_rate"] for r in history])
  np.testing.assert_array_equal(rates, _expected_rates(cfg, range(1, 6)))
  np.testing.assert_allclose(rates, [5e-4, 1e-3, 1e-3, 1e-4, 1e-4],
                             rtol=1e-6)
  for name in NAMES:
    assert np.float32(trainer.optimizers[name].learning_rate.numpy()) == \
        rates[-1], name
    assert int(trainer.optimizers[name].iterations.numpy()) == (
        3 if name == NAMES[0] else 2)


def test_sgd_applies_the_scheduled_rate(tmp_path, mirrored):
  """One SGD step of a cosine run of one step moves the weights by the
  floor's rate (0.25 * 0.1) times the gradient, not by the base rate."""
  cfg = harness.train_config(
      tmp_path / "run", ONE, task_params=_params(ONE), steps=1,
      update="every_step", lasso=False,
      optimizer=OptimizerConfig(name="sgd", learning_rate=0.1,
                                lr_schedule="cosine", lr_min_fraction=0.25))
  trainer = Trainer(cfg, strategy=mirrored(("/cpu:0",)),
                    datasets=_datasets(ONE, 4), log=lambda s: None)
  name = ONE[0]
  variables = trainer.variables_of(name)
  w0 = [np.array(v) for v in variables]
  inputs, targets = next(iter(_datasets(ONE, 4)[name]))
  with tf.GradientTape() as tape:
    out = trainer.model(inputs, task=name, training=True)
    loss = tf.reduce_mean(trainer.model.task_objects[name].loss(targets, out))
  grads = tape.gradient(loss, variables)
  trainer.train()
  moved = 0
  for w, v, g in zip(w0, variables, grads):
    g = np.zeros_like(w) if g is None else np.array(g)
    np.testing.assert_allclose(np.array(v), w - 0.025 * g, atol=2e-6,
                               rtol=1e-4)
    moved += int(np.abs(g).max() > 1e-3)
  assert moved > len(variables) // 2  # a real update, not a no-op


class _Killed(Exception):
  pass


def test_a_resumed_run_continues_the_schedule(tmp_path, mirrored):
  """A run killed after step 5 (last checkpoint: step 4) and run again ends
  with the same rates, losses and weights as an unsplit run."""
  opt = OptimizerConfig(name="sgd", learning_rate=0.1, lr_schedule="cosine",
                        lr_warmup_steps=2, lr_min_fraction=0.1)
  make = lambda folder, log=lambda s: None: Trainer(
      harness.train_config(tmp_path / folder, ONE, steps=6,
                           task_params=_params(ONE), optimizer=opt),
      strategy=mirrored(("/cpu:0",)), datasets=_datasets(ONE, 4), log=log)
  full = make("full")
  full.train()

  first = make("split")
  on_step = first.history_log.on_step

  def killed_after_5(step, *args):
    on_step(step, *args)
    if step == 5:
      raise _Killed()
  first.history_log.on_step = killed_after_5
  with pytest.raises(_Killed):
    first.train()
  assert sorted(glob.glob(str(tmp_path / "split/checkpoints/ckpt-*.index"))
                )[-1].endswith("ckpt-4.index")
  lines = []
  second = make("split", lines.append)
  out = second.train()
  assert any("resumed from" in l and "step 4" in l for l in lines)
  assert out["steps_run"] == 2
  a, b = _history(tmp_path / "full"), _history(tmp_path / "split")
  assert [(r["step"], r["task"]) for r in a] == [(r["step"], r["task"])
                                                 for r in b]
  rates = np.float32([r["learning_rate"] for r in b])
  np.testing.assert_array_equal(rates, np.float32(
      [r["learning_rate"] for r in a]))
  np.testing.assert_array_equal(rates,
                                _expected_rates(full.config, range(1, 7)))
  assert [r["loss"] for r in a] == [r["loss"] for r in b]
  for x, y in zip(full.model.weights, second.model.weights):
    np.testing.assert_array_equal(np.array(x), np.array(y))


def test_a_flat_schedule_trains_bit_for_bit_as_constant(tmp_path, mirrored):
  """Assigning the rate in the loop changes no arithmetic: a cosine whose
  floor is the rate itself (assigned at every step) and the default
  constant (never assigned) end with identical weights."""
  weights = []
  for schedule, floor in (("constant", 0.0), ("cosine", 1.0)):
    cfg = harness.train_config(
        tmp_path / schedule, ONE, task_params=_params(ONE), steps=2,
        update="every_step",
        optimizer=OptimizerConfig(name="sgd", learning_rate=0.1,
                                  lr_schedule=schedule,
                                  lr_min_fraction=floor))
    trainer = Trainer(cfg, strategy=mirrored(("/cpu:0",)),
                      datasets=_datasets(ONE, 4), log=lambda s: None)
    assert lr_lib.is_scheduled(cfg.optimizer) == (schedule == "cosine")
    trainer.train()
    weights.append([np.array(v) for v in trainer.model.weights])
  for a, b in zip(*weights):
    np.testing.assert_array_equal(a, b)
