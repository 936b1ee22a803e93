"""The multi-task trainer: wires a run together from its config and runs it.

A :class:`Trainer` builds, under a ``tf.distribute`` strategy (see
docs/training.md), the model under the run's Keras dtype policy, the
optimizer(s), this worker's input (:mod:`~mtssl_tf.training.worker_input`),
every task's step and the cycle's update (:mod:`~mtssl_tf.training.step`),
the loop with its task schedule and learning-rate schedule
(:mod:`~mtssl_tf.training.loop`) and the run's checkpoint; :meth:`Trainer.train`
then runs loops and hands each step's loss to the callbacks
(:mod:`~mtssl_tf.training.callbacks`: history, TensorBoard, progress lines,
held-out evaluation, checkpoints).

Checkpoints: ``tf.train.CheckpointManager`` saves the model, optimizer(s)
(with the loss scale under ``mixed_float16``), step counters, gradient
accumulators and the input iterators, so re-running the same command
resumes exactly where the last checkpoint was written; every object is
keyed by name (see :mod:`mtssl_tf.training.run_checkpoints` and
docs/checkpoints.md), and the optimizers are built over the variables in a
task-order-independent order.

Mixed precision: the model is built under a Keras dtype policy; losses are
computed in float32, batch norm computes its statistics in float32 (Keras)
and the UnitMixer keeps float32 alphas; ``mixed_float16`` wraps each
optimizer in Keras's ``LossScaleOptimizer`` (either update mode).

Per-task batch sizes (``config.task_batch_size(task)``, ``--task_batch_size``):
each task's input pipeline, per-replica split and loss normalisation use its
own global batch. Each task has its own replica step (and compiled function
under ``jit_compile``, traced once at its shape), the loop stacks scalar
losses only, and the cycle's apply averages per-task MEAN gradients, so a
task's weight in the update does not grow with its batch (the paper averages
over heads).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from mtssl_tf import tasks as tasks_lib
from mtssl_tf.config import ConfigError, TrainConfig, check_resume
from mtssl_tf.data import color_statistics
from mtssl_tf.models.build import build_model
from mtssl_tf.training import callbacks as callbacks_lib
from mtssl_tf.training import run_checkpoints as ckpt_lib
from mtssl_tf.training import data_report, pretext_eval, schedules
from mtssl_tf.training.distribute import is_chief, make_strategy
from mtssl_tf.training.loop import Loop, NonFiniteLossError
from mtssl_tf.training.step import TaskUpdates, dtype_policy, make_optimizer
from mtssl_tf.training.worker_input import WorkerInput


def prepare_tasks(config: TrainConfig, log=print,
                  write: bool = True) -> TrainConfig:
  """Makes a training config concrete: each task's ``prepare`` hook.

  Every task of the run gets its parameters, the run folder and the data
  layer's statistics over the training images
  (:class:`~mtssl_tf.tasks.PrepareContext`), and returns the parameters to
  train with (e.g. colorization's ``prior="auto"`` becomes the prior of the
  training images, cached in the run folder:
  :meth:`~mtssl_tf.tasks.colorization.Colorization.prepare`). Called by the
  :class:`Trainer` before the config is compared with a resumed run's, so a
  run's ``config.json`` holds the prepared values.

  Args:
    config: a :class:`TrainConfig`.
    log: callable taking one line of text (what each task prepared).
    write: whether tasks may read and write their caches in the run folder
      (False on non-chief workers, which compute the same seeded result).

  Returns:
    ``config`` itself when no task changed its parameters, else a copy with
    the prepared parameters.
  """
  context = tasks_lib.PrepareContext(
      run_dir=config.run_dir, log=log, write=write, data=config.data,
      training_statistics=color_statistics)
  prepared = {}
  for name in config.tasks:
    params = dict(config.task_params.get(name, {}))
    result = tasks_lib.get_task_class(name).prepare(params, context)
    if result is not params:
      prepared[name] = dict(result)
  if not prepared:
    return config
  task_params = {n: dict(p) for n, p in config.task_params.items()}
  task_params.update(prepared)
  return dataclasses.replace(config, task_params=task_params)


def check_accelerator_flags(config: TrainConfig) -> None:
  """Refuses, before any work, accelerator flags that cannot run together.

  Raises:
    ConfigError: names the flags and why.
  """
  if config.jit_compile and config.trunk.sync_bn:
    raise ConfigError(
        "jit_compile cannot compile synchronised batch norm: its "
        "all-reduce inside the forward pass cannot sit in a compiled "
        "function nested in strategy.run (contradicting flags: "
        "--jit_compile --sync_bn); use --nosync_bn")


class Trainer:
  """Builds everything a run needs from a :class:`TrainConfig` and runs it.

  Args:
    config: the validated configuration.
    strategy: a ``tf.distribute.Strategy``; made from the config if None.
    datasets: task -> either a ``tf.data.Dataset`` of GLOBAL batches
      ``(inputs, targets)`` (every worker reads it whole and keeps its
      replicas' slices: simple, for tests and one host), or an input function
      ``fn(input_context) -> tf.data.Dataset`` of PER-REPLICA batches from
      that pipeline's own shard (what :func:`mtssl_tf.data.pipeline.
      training_input_fns` makes; each example is read by one worker only).
      Made from ``config.data`` (input functions) if None.
    log: a callable taking one line of progress text.
    loss_scale_growth_interval: ``mixed_float16`` only: good updates after
      which the loss scale doubles.

  Example:
    >>> trainer = Trainer(config)
    >>> summary = trainer.train()      # resumes from the run's checkpoint
  """

  def __init__(self, config: TrainConfig, strategy=None,
               datasets: Optional[Dict[str, Any]] = None,
               log=print, loss_scale_growth_interval: int = 2000):
    check_accelerator_flags(config)
    self.log = log
    if config.data.deterministic:
      tf.config.experimental.enable_op_determinism()
    self.strategy = strategy or make_strategy(config)
    self.num_replicas = self.strategy.num_replicas_in_sync
    config.check_replicas(self.num_replicas)
    self.chief = is_chief(self.strategy)
    config = self.config = prepare_tasks(config, log=log, write=self.chief)
    # Before the model or the data are built: a run folder trained under
    # another config must not be resumed with this one. (After the tasks are
    # prepared: a run's config.json holds what they made concrete, such as
    # colorization's prior.)
    check_resume(config)
    keras.utils.set_random_seed(config.seed)
    self._build(loss_scale_growth_interval)
    if datasets is None:
      from mtssl_tf.data import pipeline  # heavy imports only when training
      datasets = pipeline.training_input_fns(config, self.model.tasks,
                                             log=log)
    self.feed = WorkerInput(config, self.strategy, datasets)
    self.refusals = data_report.RefusalReport(
        self._skip_counters(), config.run_dir if self.chief else None, log)
    if config.jit_compile:
      for t in config.tasks:
        why = self.updates.xla_incompatibility(t)
        if why is not None:
          log(f"jit_compile: {t} runs uncompiled ({why})")
    self.loop = Loop(config, schedules.make_schedule(config), self.updates,
                     self.feed, self.step, self.task_steps)
    self._step_fns: Dict[str, Any] = {}
    self.checkpoint = tf.train.Checkpoint(**self._checkpoint_items())
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, self._checkpoint_dir(), max_to_keep=config.max_to_keep)
    self.history_log = callbacks_lib.History(config, self.chief)
    self.pretext_eval = (pretext_eval.from_config(config, self.model, log)
                         if self.chief else None)

  def _build(self, loss_scale_growth_interval: int) -> None:
    """The model, optimizers, step counters and task updates, in the
    strategy's scope."""
    config = self.config
    with self.strategy.scope():
      with dtype_policy(config.mixed_precision):
        self.model = build_model(config)
      new = lambda: make_optimizer(config.optimizer, config.mixed_precision,
                                   loss_scale_growth_interval)
      if config.optimizer.per_task:
        self.optimizers = {t: new() for t in config.tasks}
      else:
        shared = new()
        self.optimizers = {t: shared for t in config.tasks}
      self.updates = TaskUpdates(self.model, self.optimizers, config,
                                 self.strategy)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.task_steps = {
          t: tf.Variable(0, dtype=tf.int64, trainable=False,
                         name=f"steps_{t}") for t in config.tasks}

  def _checkpoint_dir(self) -> str:
    if self.chief:
      return os.path.join(self.config.run_dir, "checkpoints")
    # Non-chief workers must take part in saving but write elsewhere.
    return os.path.join(self.config.run_dir, "workers",
                        f"{self.strategy.cluster_resolver.task_id}")

  def _skip_counters(self) -> Dict[str, Any]:
    """task -> the skip counter of its input (made from ``config.data``)."""
    return {t: source.counter for t, source in
            getattr(self.feed.datasets, "sources", {}).items()}

  def _checkpoint_items(self) -> Dict[str, Any]:
    """The run checkpoint's objects, every one keyed by name (the layout is
    described in :mod:`mtssl_tf.training.run_checkpoints`)."""
    names = {id(v): n for n, v in ckpt_lib.model_variables(self.model).items()}
    items = {
        ckpt_lib.MODEL: ckpt_lib.model_trackable(self.model),
        "step": self.step,
        "task_steps": tf.train.Checkpoint(**self.task_steps),
        "data": tf.train.Checkpoint(**self.feed.iterators),
    }
    if self.accumulators:
      items["accumulators"] = ckpt_lib.tree({
          names[id(v)]: a for v, a in zip(self.variables, self.accumulators)})
    if self.config.optimizer.per_task:
      items["optimizer"] = tf.train.Checkpoint(**{
          t: ckpt_lib.optimizer_trackable(self.model, o)
          for t, o in self.optimizers.items()})
    else:
      items["optimizer"] = ckpt_lib.optimizer_trackable(
          self.model, self.updates.distinct_optimizers()[0])
    skips = self._skip_counters()
    if skips:
      items["skips"] = tf.train.Checkpoint(**skips)
    return items

  # -- what tests, benchmarks and tools read -------------------------------
  variables = property(lambda self: self.updates.variables,
                       doc="The trainable variables in checkpoint order.")
  accumulators = property(lambda self: self.updates.accumulators,
                          doc="The gradient accumulators (update=cycle).")
  datasets = property(lambda self: self.feed.datasets)
  input_context = property(lambda self: self.feed.context)
  local_datasets = property(lambda self: self.feed.local_datasets)
  iterators = property(lambda self: self.feed.iterators)
  history = property(lambda self: self.history_log.history,
                     doc="task -> [(step, loss)] of this process's run.")
  _replica_steps = property(lambda self: self.updates.replica_steps)

  @property
  def loss_scale(self) -> Optional[tf.Variable]:
    """The shared optimizer's dynamic loss scale (``mixed_float16``), or
    None."""
    optimizer = self.updates.distinct_optimizers()[0]
    return getattr(optimizer, "dynamic_scale", None)

  @property
  def device_seconds(self) -> float:
    """Seconds spent in the loop functions, host reads included."""
    return self.loop.device_seconds

  @device_seconds.setter
  def device_seconds(self, value: float):
    self.loop.device_seconds = value

  def variables_of(self, task: str) -> List[tf.Variable]:
    """The trainable variables that task ``task``'s loss depends on: the
    trunk, the task's head and (with the lasso) its mixer alphas."""
    return self.updates.variables_of(task)

  def accumulators_of(self, task: str) -> List[tf.Variable]:
    """The gradient accumulators of :meth:`variables_of` ``(task)``, in the
    same order (update=cycle; empty for every_step)."""
    return self.updates.accumulators_of(task)

  def compiled(self, task: str) -> bool:
    """Whether ``task``'s forward/loss/backward is XLA-compiled."""
    return self.updates.compiled(task)

  def task_line(self, task: str) -> str:
    """What ``task`` trains on, as the data pipeline delivers it: its global
    batch, the shape of one example's trunk input, and its data source."""
    return self.feed.task_line(task)

  def _images_per_step(self, task: str) -> int:
    return self.feed.images_per_step(task)

  def rates(self, step: int, count: int) -> np.ndarray:
    """The learning rates of the ``count`` steps after global step
    ``step`` (float32, as the optimizers hold them)."""
    return self.loop.rates(step, count)

  # -- the public step API ---------------------------------------------------
  def train_step(self, task: str, batch) -> Tuple[tf.Tensor, tf.Tensor]:
    """One step of ``task`` on a GLOBAL batch ``(inputs, targets)``: the
    gradient is accumulated (update=cycle; see :meth:`apply_update`) or
    applied (every_step). Counters and the data iterators are not touched,
    and the rate is the one the optimizers hold (the loop assigns the
    scheduled rate; see :mod:`mtssl_tf.training.learning_rate`).

    Returns:
      ``(loss, penalty)``: the task's mean loss over the global batch and the
      lasso penalty, scalar tensors.
    """
    if task not in self.updates.replica_steps:
      raise ValueError(f"task {task!r} is not trained here; tasks: "
                       f"{', '.join(self.config.tasks)}")
    fn = self._step_fns.get(task)
    if fn is None:
      fn = self._step_fns[task] = tf.function(
          lambda b, task=task: self.updates.run_replicas(
              task, *self.feed.distribute(b)),
          autograph=self.updates.autograph)
    return fn(self.feed.split_global(task, batch))

  def apply_update(self) -> None:
    """Applies the accumulated mean gradient of the cycle and clears the
    accumulators (update=cycle; nothing to do for every_step)."""
    if not self.accumulators:
      return
    if not hasattr(self, "_apply_tf_fn"):
      self._apply_tf_fn = tf.function(self.updates.apply_cycle,
                                      autograph=self.updates.autograph)
    self._apply_tf_fn()

  def run_loop(self, step: int):
    """Runs the steps of one loop from ``step`` (up to ``steps_per_loop``,
    ending at the next checkpoint interval or ``config.steps``) in one
    ``tf.function`` call and reads their losses once.

    Returns:
      ``(plan, losses, penalties, rates)``: the ``(task, cycle applied after
      it)`` of each step, and NumPy arrays of their losses, lasso penalties
      and the learning rate that the step's optimizer held.

    Raises:
      NonFiniteLossError: a loss was NaN or infinite; names the first such
        task and step.
    """
    return self.loop.run(step, self.refusals, self.manager)

  # -- the run ---------------------------------------------------------------
  def restore(self) -> int:
    """Restores the latest checkpoint if any; returns the step reached."""
    latest = self.manager.latest_checkpoint
    if latest:
      ckpt_lib.check_tasks(self.model, latest)
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      self.log(f"resumed from {latest} at step {int(self.step.numpy())}")
      self.history_log.load(int(self.step.numpy()))
    return int(self.step.numpy())

  def _write_run_files(self, flags_text: Optional[str]):
    os.makedirs(self.config.run_dir, exist_ok=True)
    with open(os.path.join(self.config.run_dir, "config.json"), "w") as f:
      f.write(self.config.to_json())
    if flags_text is not None:
      with open(os.path.join(self.config.run_dir, "flags.txt"), "w") as f:
        f.write(flags_text)

  def _callbacks(self) -> List[callbacks_lib.Callback]:
    """The run's callbacks; the history is the one :meth:`restore` read."""
    return callbacks_lib.standard(
        self.config, self.model, self.history_log, chief=self.chief, manager=self.manager,
        evaluator=self.pretext_eval, refusals=self.refusals, log=self.log,
        images_per_step={t: self._images_per_step(t)
                         for t in self.config.tasks})

  def train(self, flags_text: Optional[str] = None) -> Dict[str, Any]:
    """Runs (or resumes) training to ``config.steps``; returns a summary."""
    cfg = self.config
    if self.chief:
      self._write_run_files(flags_text)
    callbacks = self._callbacks()
    start = step = self.restore()
    t0 = time.time()
    try:
      if start >= cfg.steps:
        self.log(f"already trained to step {start} (steps={cfg.steps})")
      else:
        self._log_start(start)
        for c in callbacks:
          c.on_train_begin(start)
        step = self._run(start, callbacks)
    finally:
      for c in callbacks:
        c.close()
    return self._finish(step, time.time() - t0 if step > start else 0.0,
                        step - start, callbacks)

  def _log_start(self, start: int) -> None:
    cfg = self.config
    self.log(f"training {', '.join(cfg.tasks)} from step {start} to "
             f"{cfg.steps} on {self.num_replicas} replica(s), "
             f"update={cfg.update}, lasso={cfg.lasso}, "
             f"lr_schedule={cfg.optimizer.lr_schedule}")
    for task in cfg.tasks:
      self.log(self.task_line(task))

  def _run(self, step: int, callbacks) -> int:
    """Loops from ``step`` to ``config.steps``; returns the step reached."""
    self.device_seconds = 0.0
    while step < self.config.steps:
      plan, losses, _, rates = self.run_loop(step)
      for i, (task, _) in enumerate(plan):
        step += 1
        for c in callbacks:
          c.on_step(step, task, float(losses[i]), float(rates[i]))
      for c in callbacks:
        c.on_loop_end(step, len(plan))
    return step

  def _finish(self, step: int, seconds: float, steps_run: int, callbacks):
    outputs = {"step": step, "seconds": seconds, "steps_run": steps_run,
               "checkpoint": self.manager.latest_checkpoint,
               "device_seconds": self.device_seconds}
    for c in callbacks:
      c.on_train_end(step, steps_run, outputs)
    self.refusals.report()
    skipped = getattr(self.datasets, "skipped_summary", None)
    if callable(skipped):
      self.log(skipped())
    self.log(f"done: step {step}, {steps_run} steps in {seconds:.1f}s; "
             f"checkpoint {outputs['checkpoint']}")
    return outputs


__all__ = ["NonFiniteLossError", "Trainer", "check_accelerator_flags",
           "make_optimizer", "prepare_tasks"]
