"""The loop: which task each step trains, its learning rate, and the
``tf.function`` that runs ``steps_per_loop`` steps per host round trip.

* a :class:`~mtssl_tf.training.schedules.Schedule` picks the task of each
  step (round robin, or weighted sampling seeded by the step);
* the learning rate is a pure function of the global step
  (:mod:`mtssl_tf.training.learning_rate`): before each step every
  optimizer's rate variable is assigned that step's rate, so shared and
  per-task optimizers, both update modes, several replicas and a resumed
  run all follow one schedule;
* ``steps_per_loop=K``: K steps (each one task, the cycle's apply where a
  cycle ends) run inside one ``tf.function``; the host reads the K losses
  once; a loop never crosses a checkpoint interval, so checkpoints and a
  resume fall on the same steps whatever K is;
* a non-finite loss stops the run with :class:`NonFiniteLossError` naming the
  task and the step; no checkpoint is written after it.
"""
from __future__ import annotations

import math
import time
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf.data.skips import NO_USABLE_DATA
from mtssl_tf.training import data_report
from mtssl_tf.training import learning_rate as lr_lib

Plan = Tuple[Tuple[str, bool], ...]


class NonFiniteLossError(RuntimeError):
  """The loss of a task became NaN or infinite."""


class Loop:
  """Runs the steps of one loop from a step on: plan, graph, host read.

  Args:
    config: the run's :class:`~mtssl_tf.config.TrainConfig`.
    schedule: the task schedule.
    updates: the :class:`~mtssl_tf.training.step.TaskUpdates`.
    feed: the :class:`~mtssl_tf.training.worker_input.WorkerInput`.
    step, task_steps: the global and per-task step counters (variables).
  """

  def __init__(self, config, schedule, updates, feed, step, task_steps):
    self.config, self.schedule = config, schedule
    self.updates, self.feed = updates, feed
    self.step, self.task_steps = step, task_steps
    self._functions: Dict[Plan, tf.types.experimental.GenericFunction] = {}
    self.device_seconds = 0.0  # inside the loop functions, host read too

  def rates(self, step: int, count: int) -> np.ndarray:
    """The learning rates of the ``count`` steps after global step
    ``step`` (float32, as the optimizers hold them)."""
    return lr_lib.rates(self.config.optimizer, self.config.steps, step + 1,
                        count)

  def plan(self, step: int) -> Plan:
    """``(task, apply the cycle after it)`` of each step of the loop
    starting at ``step``: at most steps_per_loop, never past the next
    checkpoint or the end."""
    cfg = self.config
    end = min(step + cfg.steps_per_loop, cfg.steps,
              (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every)
    cycles = bool(self.updates.accumulators)
    return tuple((self.schedule.task_at(s),
                  cycles and (s + 1) % cfg.cycle_length == 0)
                 for s in range(step, end))

  def function(self, plan: Plan):
    """The ``tf.function`` running the steps of ``plan`` on the data
    iterators; returns their losses, penalties and rates. One function per
    distinct plan (round robin has few)."""
    fn = self._functions.get(plan)
    if fn is None:
      fn = self._functions[plan] = tf.function(
          lambda rates: self._steps(plan, rates),
          autograph=self.updates.autograph)
    return fn

  def _steps(self, plan: Plan, rates):
    updates = self.updates
    optimizers = updates.distinct_optimizers()
    scheduled = lr_lib.is_scheduled(self.config.optimizer)
    losses, penalties, used = [], [], []
    for i, (task, apply) in enumerate(plan):
      if scheduled:
        # Every optimizer, not only this task's: per-task optimizers then
        # all hold the rate of the global step, and the cycle's apply below
        # uses the rate of the step that ends the cycle. Assigned in
        # cross-replica context, so every replica reads the same value.
        for opt in optimizers:
          opt.learning_rate.assign(rates[i])
      inputs, targets = self.feed.distribute(
          next(self.feed.iterators[task]))
      loss, penalty = updates.run_replicas(task, inputs, targets)
      self.task_steps[task].assign_add(1)
      if apply:
        updates.apply_cycle()
      losses.append(loss)
      penalties.append(penalty)
      # The rate the step's optimizer holds, read back for the record.
      used.append(tf.identity(updates.optimizers[task].learning_rate))
    self.step.assign_add(len(plan))
    return tf.stack(losses), tf.stack(penalties), tf.stack(used)

  def run(self, step: int, refusals, manager):
    """Runs the loop from ``step`` in one call and reads its losses once.

    Returns:
      ``(plan, losses, penalties, rates)``: the plan and NumPy arrays of the
      steps' losses, lasso penalties and the rate the step's optimizer held.

    Raises:
      NonFiniteLossError: a loss was NaN or infinite; names the first such
        task and step.
      mtssl_tf.data.skips.NoUsableDataError: a task's input ran dry or its
        guard found nothing usable (names the refused files).
    """
    plan = self.plan(step)
    t_call = time.time()
    try:
      out = self.function(plan)(tf.constant(self.rates(step, len(plan))))
    except (tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError) as e:
      if not (isinstance(e, tf.errors.OutOfRangeError)
              or NO_USABLE_DATA in str(e)):
        raise
      # Say which files were refused, once, instead of TensorFlow's trace.
      refusals.report(quiet=True)
      raise data_report.no_usable_data_error(
          refusals.counters, dict.fromkeys(t for t, _ in plan),
          getattr(self.feed.datasets, "descriptions", {}),
          refusals.path, manager.latest_checkpoint) from None
    losses, penalties, rates = (t.numpy() for t in out)  # one host read
    self.device_seconds += time.time() - t_call
    for i, (task, _) in enumerate(plan):
      if not (math.isfinite(losses[i]) and math.isfinite(penalties[i])):
        raise NonFiniteLossError(
            f"non-finite loss {losses[i]} in task {task!r} at step "
            f"{step + i}; stopping. The last good checkpoint is kept: "
            f"{manager.latest_checkpoint}")
    return plan, losses, penalties, rates
