"""The multi-task trainer: a custom loop under a ``tf.distribute`` strategy.

Doersch & Zisserman (ICCV 2017, Sec. 3): "at each iteration only one head is
active, but the gradients are averaged across iterations where different heads
are active". Here:

* a :class:`~mtssl_tf.training.schedules.Schedule` picks the task of each
  step (round robin, or weighted sampling seeded by the step);
* ``update="cycle"`` (default) adds each step's all-reduced gradient to
  accumulators and applies their mean once per cycle over the tasks;
  ``update="every_step"`` applies at every step, optionally with one
  optimizer per task;
* the UnitMixer's L1 penalty (``model.losses``) joins the loss;
* the learning rate is a pure function of the global step
  (:mod:`mtssl_tf.training.learning_rate`): before each step every
  optimizer's rate variable is assigned that step's rate, so shared and
  per-task optimizers, both update modes, several replicas and a resumed
  run all follow one schedule; the rate of each step goes to the log,
  TensorBoard (``learning_rate``) and ``history.jsonl``;
* ``tf.train.CheckpointManager`` saves the model, optimizer(s), step counter,
  gradient accumulators and the input iterators, so re-running the same
  command resumes exactly where the last checkpoint was written; every
  object is keyed by name (trunk, each head and mixer row by task name;
  see :mod:`mtssl_tf.training.checkpoints` and docs/checkpoints.md), and the
  optimizers are built over the variables in a task-order-independent
  order;
* a non-finite loss stops the run with :class:`NonFiniteLossError` naming the
  task and the step; no checkpoint is written after it.

Scale-out and accelerators:

* input per pipeline: each worker builds its own input pipeline from an
  ``InputContext`` (``num_input_pipelines`` = workers, its
  ``input_pipeline_id``) at the per-replica batch size, as
  ``strategy.distribute_datasets_from_function`` would; the trainer keeps a
  plain ``tf.data`` iterator per pipeline because the strategy's distributed
  iterators cannot be checkpointed (``tf.train.Checkpoint`` rejects them in
  TF 2.20), and exact resume needs the iterator state;
* ``steps_per_loop=K``: K steps (each one task, the cycle's apply where a
  cycle ends) run inside one ``tf.function``; the host reads the K losses
  once; a loop never crosses a checkpoint interval;
* ``mixed_precision``: the model is built under a Keras dtype policy; the
  outputs are cast to float32 before every loss (softmax, soft-encoding,
  triplet distances), batch norm computes its statistics in float32 (Keras)
  and the UnitMixer keeps float32 alphas; ``mixed_float16`` adds dynamic
  loss scaling: a cycle with an overflowing gradient is not applied and the
  scale halves; it doubles after ``loss_scale_growth_interval`` good steps;
* ``jit_compile``: each task's forward/loss/backward is an XLA-compiled
  function; the all-reduce, accumulation and optimizer stay outside it.

Per-task batch sizes (``config.task_batch_size(task)``, ``--task_batch_size``):
each task's input pipeline, per-replica split and loss normalisation use its
own global batch. Nothing else assumes one size: each task has its own
replica step (and compiled function under ``jit_compile``, traced once at its
shape), the loop stacks scalar losses only, and the cycle's apply averages
per-task MEAN gradients, so a task's weight in the update does not grow with
its batch (the paper averages over heads).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from mtssl_tf import tasks as tasks_lib
from mtssl_tf.config import ConfigError, TrainConfig, check_resume
from mtssl_tf.models.build import build_model
from mtssl_tf.training import checkpoints as ckpt_lib
from mtssl_tf.data import color_statistics
from mtssl_tf.data.skips import NO_USABLE_DATA
from mtssl_tf.training import data_report
from mtssl_tf.training import learning_rate as lr_lib
from mtssl_tf.training import pretext_eval, regularization, schedules
from mtssl_tf.training.distribute import (is_chief, make_strategy,
                                          num_workers)
from mtssl_tf.utils.progress import format_duration


class NonFiniteLossError(RuntimeError):
  """The loss of a task became NaN or infinite."""


def make_optimizer(config) -> keras.optimizers.Optimizer:
  """The optimizer named by an :class:`~mtssl_tf.config.OptimizerConfig`."""
  kwargs = {"learning_rate": config.learning_rate}
  if config.clipnorm:
    kwargs["clipnorm"] = config.clipnorm
  if config.name == "rmsprop":
    return keras.optimizers.RMSprop(rho=config.rho, momentum=config.momentum,
                                    epsilon=config.epsilon, **kwargs)
  if config.name == "sgd":
    return keras.optimizers.SGD(**kwargs)
  if config.name == "momentum":
    return keras.optimizers.SGD(momentum=config.momentum, **kwargs)
  return keras.optimizers.Adam(epsilon=min(config.epsilon, 1e-3), **kwargs)


@contextlib.contextmanager
def _dtype_policy(name: str):
  """Layers made inside take the Keras dtype policy ``name`` (captured at
  construction); the global policy is restored afterwards so that nothing
  else in the process changes."""
  before = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(before)


def _float32(outputs):
  """Floating outputs in float32: losses (softmax, soft-encoding, triplet
  distances) are computed in full precision under any dtype policy."""
  def cast(t):
    return tf.cast(t, tf.float32) if t.dtype.is_floating else t
  return tf.nest.map_structure(cast, outputs)


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
    loss_scale_growth_interval: ``mixed_float16`` only: good steps after
      which the loss scale doubles.
  """

  LOSS_SCALE_INITIAL = 2.0 ** 15

  def __init__(self, config: TrainConfig, strategy=None,
               datasets: Optional[Dict[str, Any]] = None,
               log=print, loss_scale_growth_interval: int = 2000):
    self.config = config
    self.log = log
    if config.data.deterministic:
      tf.config.experimental.enable_op_determinism()
    self.strategy = strategy or make_strategy(config)
    self.num_replicas = self.strategy.num_replicas_in_sync
    self.per_replica_batch = config.check_replicas(self.num_replicas)
    # Each task's own (--task_batch_size) per-replica batch.
    self.per_replica_batches = {
        t: config.per_replica_batch_size(t, self.num_replicas)
        for t in config.tasks}
    self.chief = is_chief(self.strategy)
    config = self.config = prepare_tasks(config, log=log, write=self.chief)
    # Before the model or the data are built: a run folder trained under
    # another config must not be resumed with this one. (After the tasks are
    # prepared: a run's config.json holds what they made concrete, such as
    # colorization's prior.)
    check_resume(config)
    self.schedule = schedules.make_schedule(config)
    keras.utils.set_random_seed(config.seed)
    with self.strategy.scope():
      with _dtype_policy(config.mixed_precision):
        self.model = build_model(config)
      if config.optimizer.per_task:
        self.optimizers = {t: make_optimizer(config.optimizer)
                           for t in config.tasks}
      else:
        shared = make_optimizer(config.optimizer)
        self.optimizers = {t: shared for t in config.tasks}
      # Sorted by checkpoint name, not by construction (task) order: the
      # optimizer's slots and the accumulators follow this list.
      self.variables = ckpt_lib.canonical_order(
          self.model, self.model.trainable_variables)
      self._index = {id(v): i for i, v in enumerate(self.variables)}
      self._variable_names = {
          id(v): n for n, v in ckpt_lib.model_variables(self.model).items()}
      for opt in {id(o): o for o in self.optimizers.values()}.values():
        # Slots must exist inside the scope before the first (traced) step.
        opt.build(self.variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.task_steps = {
          t: tf.Variable(0, dtype=tf.int64, trainable=False,
                         name=f"steps_{t}") for t in config.tasks}
      if config.update == "cycle":
        # Gradients are all-reduced before they are added, so every replica
        # holds the same value: keep the first replica's.
        self.accumulators = [
            tf.Variable(tf.zeros_like(v), trainable=False,
                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                        name=f"accum_{i}")
            for i, v in enumerate(self.variables)]
      else:
        self.accumulators = []
      self.loss_scale = None
      if config.mixed_precision == "mixed_float16":
        # Same value on every replica (updated from all-reduced gradients).
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.loss_scale = tf.Variable(self.LOSS_SCALE_INITIAL, trainable=False,
                                      aggregation=first, name="loss_scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                      aggregation=first, name="good_steps")
        # 1 while every step of the current cycle had finite gradients.
        self.cycle_finite = tf.Variable(1, dtype=tf.int64, trainable=False,
                                        aggregation=first,
                                        name="cycle_finite")
    self.loss_scale_growth_interval = int(loss_scale_growth_interval)
    if datasets is None:
      from mtssl_tf.data import pipeline  # heavy imports only when training
      datasets = pipeline.training_input_fns(config, self.model.tasks,
                                             log=log)
    self.num_workers = num_workers(self.strategy)
    self.local_replicas = self.num_replicas // self.num_workers
    self.input_context = tf.distribute.InputContext(
        num_input_pipelines=self.num_workers,
        input_pipeline_id=self._worker_index(),
        num_replicas_in_sync=self.num_replicas)
    self.datasets = datasets
    self.local_datasets = {t: self._local_dataset(t, datasets[t])
                           for t in config.tasks}
    self.refusals = data_report.RefusalReport(
        self._skip_counters(), config.run_dir if self.chief else None, log)
    self.iterators = {t: iter(self.local_datasets[t]) for t in config.tasks}
    if config.jit_compile:
      if config.trunk.sync_bn:
        raise ConfigError(
            "jit_compile cannot compile synchronised batch norm: its "
            "all-reduce inside the forward pass cannot sit in a compiled "
            "function nested in strategy.run (contradicting flags: "
            "--sync_bn); use --nosync_bn")
      for t in config.tasks:
        why = self._xla_incompatibility(t)
        if why is not None:
          log(f"jit_compile: {t} runs uncompiled ({why})")
    self._replica_steps = {t: self._make_replica_step(t)
                           for t in config.tasks}
    self._step_fns = {}
    self._loop_fns = {}
    self._apply_fn = self._make_apply_fn() if self.accumulators else None
    self.checkpoint = tf.train.Checkpoint(**self._checkpoint_items())
    ckpt_dir = os.path.join(config.run_dir, "checkpoints")
    if not self.chief:
      # Non-chief workers must take part in saving but write elsewhere.
      ckpt_dir = os.path.join(config.run_dir, "workers",
                              f"{self.strategy.cluster_resolver.task_id}")
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, ckpt_dir, max_to_keep=config.max_to_keep)
    self.history: Dict[str, List[tuple]] = {t: [] for t in config.tasks}
    self.writer = None
    self.pretext_eval = (pretext_eval.from_config(config, self.model, log)
                         if self.chief else None)

  def _skip_counters(self) -> Dict[str, Any]:
    """task -> the skip counter of its input (made from ``config.data``)."""
    return {t: source.counter for t, source in
            getattr(self.datasets, "sources", {}).items()}

  def _checkpoint_items(self) -> Dict[str, Any]:
    """The run checkpoint's objects, every one keyed by name (the layout is
    described in :mod:`mtssl_tf.training.checkpoints`)."""
    name_of = lambda v: self._variable_names[id(v)]
    items = {
        ckpt_lib.MODEL: ckpt_lib.model_trackable(self.model),
        "step": self.step,
        "task_steps": tf.train.Checkpoint(**self.task_steps),
        "data": tf.train.Checkpoint(**self.iterators),
    }
    if self.accumulators:
      items["accumulators"] = ckpt_lib.tree({
          name_of(v): a for v, a in zip(self.variables, self.accumulators)})
    if self.config.optimizer.per_task:
      items["optimizer"] = tf.train.Checkpoint(**{
          t: ckpt_lib.optimizer_trackable(self.model, o)
          for t, o in self.optimizers.items()})
    else:
      items["optimizer"] = ckpt_lib.optimizer_trackable(
          self.model, next(iter(self.optimizers.values())))
    skips = self._skip_counters()
    if skips:
      items["skips"] = tf.train.Checkpoint(**skips)
    if self.loss_scale is not None:
      items.update(loss_scale=self.loss_scale, good_steps=self.good_steps,
                   cycle_finite=self.cycle_finite)
    return items

  # -- input --------------------------------------------------------------
  def _worker_index(self) -> int:
    """This worker's position among the input pipelines (0 on one host)."""
    if self.num_workers == 1:
      return 0
    resolver = self.strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    # Replica ids run chief first, then workers in index order.
    if resolver.task_type == "chief":
      return 0
    return int(resolver.task_id) + (1 if "chief" in cluster else 0)

  def _local_dataset(self, task: str, source) -> tf.data.Dataset:
    """This worker's dataset of ``[local_replicas, per_replica, ...]``
    batches of ``task`` from a global-batch dataset or an input function."""
    ctx, per, local = self.input_context, self.per_replica_batches[task], \
        self.local_replicas
    size = self.config.task_batch_size(task)
    if callable(source) and not isinstance(source, tf.data.Dataset):
      dataset = source(ctx)
      if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"an input function must return a tf.data.Dataset, "
                        f"got {type(dataset).__name__}")
      # Consecutive per-replica batches go to the local replicas in order,
      # as distribute_datasets_from_function hands them out.
      return dataset.batch(local, drop_remainder=True)
    if not isinstance(source, tf.data.Dataset):
      raise TypeError(f"datasets values must be tf.data.Dataset or input "
                      f"functions, got {type(source).__name__}")
    lo = ctx.input_pipeline_id * local * per
    leading = {t.shape[0] for t in tf.nest.flatten(source.element_spec)
               if t.shape.rank} - {None}
    if leading != {size} and leading:
      # Slicing would silently drop examples (larger) or fail in a reshape
      # (smaller).
      raise ValueError(
          f"the dataset of {task} holds global batches of "
          f"{sorted(leading)}, but {task}'s global batch size is {size} "
          "(--batch_size / --task_batch_size)")

    def mine(*batch):
      batch = batch[0] if len(batch) == 1 else batch

      def cut(t):
        t = t[lo:lo + local * per]
        inner = t.shape[1:]
        shape = ([local, per] + inner.as_list() if inner.is_fully_defined()
                 else tf.concat([[local, per], tf.shape(t)[1:]], 0))
        return tf.reshape(t, shape)
      return tf.nest.map_structure(cut, batch)

    dataset = source.map(mine)
    if self.num_workers > 1:
      # Every worker reads the same global batch and keeps its replicas'
      # slices, so all workers must see the batches in the same order.
      options = tf.data.Options()
      options.deterministic = True
      dataset = dataset.with_options(options)
    return dataset

  def _distribute(self, local_batch):
    """``[local_replicas, per_replica, ...]`` -> per-replica values."""
    if self.num_replicas == 1:
      return tf.nest.map_structure(lambda t: t[0], local_batch)
    first = self.input_context.input_pipeline_id * self.local_replicas

    def value_fn(ctx):
      i = ctx.replica_id_in_sync_group - first
      return tf.nest.map_structure(lambda t: t[i], local_batch)

    return self.strategy.experimental_distribute_values_from_function(
        value_fn)

  def _split_global(self, task: str, batch):
    """A global batch of ``task`` -> this worker's ``[local_replicas, per,
    ...]``."""
    per, local = self.per_replica_batches[task], self.local_replicas
    lo = self.input_context.input_pipeline_id * local * per
    return tf.nest.map_structure(
        lambda t: tf.reshape(t[lo:lo + local * per],
                             [local, per] + list(t.shape[1:])), batch)

  # -- graph functions ------------------------------------------------------
  def variables_of(self, task: str) -> List[tf.Variable]:
    """The trainable variables that task ``task``'s loss depends on: the
    trunk, the task's head and (with the lasso) its mixer alphas."""
    head = self.model.heads[task]
    variables = list(self.model.trunk.trainable_variables)
    variables += list(head.trainable_variables)
    if self.model.mixer is not None:
      variables.append(self.model.mixer.row(task))
    return variables

  def accumulators_of(self, task: str) -> List[tf.Variable]:
    """The gradient accumulators of :meth:`variables_of` ``(task)``, in the
    same order (update=cycle; empty for every_step)."""
    if not self.accumulators:
      return []
    return [self.accumulators[self._index[id(v)]]
            for v in self.variables_of(task)]

  def _make_replica_step(self, task_name: str):
    """The per-replica step of one task: loss, gradients, all-reduce and
    accumulation (or the optimizer step for update=every_step)."""
    model = self.model
    task = model.task_objects[task_name]
    optimizer = self.optimizers[task_name]
    variables = self.variables_of(task_name)
    indices = [self._index[id(v)] for v in variables]
    # The task's own global batch (--task_batch_size): the loss is the mean
    # over THIS task's examples, whatever the other tasks' batches are.
    global_batch = self.config.task_batch_size(task_name)
    num_replicas = self.num_replicas
    accumulators = self.accumulators
    loss_scale = self.loss_scale

    def compute(inputs, targets, scale):
      with tf.GradientTape() as tape:
        outputs = _float32(model(inputs, task=task_name, training=True))
        per_example = tf.cast(task.loss(targets, outputs), tf.float32)
        # Each replica sums its own examples and divides by the GLOBAL batch;
        # the all-reduce (a sum over replicas) then yields the global mean,
        # the same value one replica computes on the whole batch.
        loss = tf.reduce_sum(per_example) / global_batch
        # Every replica adds the identical lasso penalty; dividing by the
        # number of replicas makes the summed penalty count once.
        penalty = (tf.cast(tf.add_n(model.losses), tf.float32) / num_replicas
                   if model.losses else tf.constant(0.0))
        # Weight decay of the task's kernels: identical on every replica too.
        penalty += regularization.l2_penalty(
            variables, self.config.weight_decay) / num_replicas
        total = loss + penalty
        # float16 gradients underflow to zero without a scale; the scale is
        # divided out again in float32 below.
        scaled = total * scale
      grads = tape.gradient(scaled, variables)
      grads = [tf.zeros_like(v) if g is None else tf.cast(g, v.dtype) / scale
               for g, v in zip(grads, variables)]
      return loss, penalty, grads

    if self.compiled(task_name):
      compute = tf.function(compute, jit_compile=True)

    def replica_step(inputs, targets):
      scale = (loss_scale.read_value() if loss_scale is not None
               else tf.constant(1.0))
      loss, penalty, grads = compute(inputs, targets, scale)
      if accumulators:
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if loss_scale is None:
          for i, g in zip(indices, grads):
            accumulators[i].assign_add(g)
        else:
          # After the all-reduce every replica holds the same gradients, so
          # every replica takes the same decision.
          finite = tf.reduce_all(
              [tf.reduce_all(tf.math.is_finite(g)) for g in grads])
          for i, g in zip(indices, grads):
            accumulators[i].assign_add(tf.where(finite, g, tf.zeros_like(g)))
          self._update_loss_scale(finite)
      else:
        # apply_gradients all-reduces (sums) the per-replica gradients.
        optimizer.apply_gradients(zip(grads, variables))
      return loss, penalty

    return replica_step

  def _update_loss_scale(self, finite):
    """Dynamic loss scaling: halve on an overflow (and mark the cycle), double
    after ``loss_scale_growth_interval`` good steps in a row."""
    good = tf.where(finite, self.good_steps + 1, tf.constant(0, tf.int64))
    grow = good >= self.loss_scale_growth_interval
    scale = self.loss_scale.read_value()
    self.loss_scale.assign(tf.where(
        finite, tf.where(grow, scale * 2.0, scale), tf.maximum(scale / 2.0,
                                                               1.0)))
    self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), good))
    self.cycle_finite.assign(self.cycle_finite * tf.cast(finite, tf.int64))

  def compiled(self, task: str) -> bool:
    """Whether ``task``'s forward/loss/backward is XLA-compiled."""
    return (self.config.jit_compile
            and self._xla_incompatibility(task) is None)

  def _xla_incompatibility(self, task: str) -> Optional[str]:
    """Why ``task``'s step runs uncompiled here (the task says), or None."""
    return self.model.task_objects[task].xla_incompatibility(
        self.num_replicas)

  def _run_replicas(self, task: str, local_batch):
    """One step of ``task`` on this worker's batch; global (loss, penalty)."""
    inputs, targets = self._distribute(local_batch)
    loss, penalty = self.strategy.run(self._replica_steps[task],
                                      args=(inputs, targets))
    reduce = self.strategy.reduce
    return (reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            reduce(tf.distribute.ReduceOp.SUM, penalty, axis=None))

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
    if task not in self._replica_steps:
      raise ValueError(f"task {task!r} is not trained here; tasks: "
                       f"{', '.join(self.config.tasks)}")
    fn = self._step_fns.get(task)
    if fn is None:
      fn = tf.function(lambda b, task=task: self._run_replicas(task, b))
      self._step_fns[task] = fn
    return fn(self._split_global(task, batch))

  def _make_apply_fn(self):
    optimizer = next(iter(self.optimizers.values()))
    variables = self.variables
    accumulators = self.accumulators
    cycle = float(self.config.cycle_length)

    def apply():
      # Cross-replica context: the accumulators hold all-reduced sums, so the
      # optimizer applies the same mean gradient on every replica. Each
      # step's gradient is already the mean over its task's own global batch,
      # so every task weighs the same in the cycle's mean whatever its
      # --task_batch_size (the paper averages over heads, not examples).
      grads = [a.read_value() / cycle for a in accumulators]
      optimizer.apply_gradients(zip(grads, variables))
      return tf.constant(True)

    def apply_fn():
      if self.loss_scale is None:
        apply()
      else:
        # A cycle with an overflowing gradient is dropped whole, as a loss
        # scale optimizer drops the step.
        tf.cond(self.cycle_finite > 0, apply, lambda: tf.constant(False))
        self.cycle_finite.assign(1)
      for a in accumulators:
        a.assign(tf.zeros_like(a))

    return apply_fn

  def apply_update(self) -> None:
    """Applies the accumulated mean gradient of the cycle and clears the
    accumulators (update=cycle; nothing to do for every_step)."""
    if self._apply_fn is None:
      return
    if not hasattr(self, "_apply_tf_fn"):
      self._apply_tf_fn = tf.function(self._apply_fn)
    self._apply_tf_fn()

  def _loop_fn(self, plan: Tuple[Tuple[str, bool], ...]):
    """The ``tf.function`` running the steps of ``plan`` ((task, apply the
    cycle after it), ...) on the data iterators; returns their losses and
    penalties. One function per distinct plan (round robin has few)."""
    fn = self._loop_fns.get(plan)
    if fn is not None:
      return fn

    optimizers = list({id(o): o for o in self.optimizers.values()}.values())
    scheduled = lr_lib.is_scheduled(self.config.optimizer)

    def loop(rates):
      losses, penalties, used = [], [], []
      for i, (task, apply) in enumerate(plan):
        if scheduled:
          # Every optimizer, not only this task's: per-task optimizers then
          # all hold the rate of the global step, and the cycle's apply
          # below uses the rate of the step that ends the cycle. Assigned
          # in cross-replica context, so every replica reads the same value.
          for opt in optimizers:
            opt.learning_rate.assign(rates[i])
        loss, penalty = self._run_replicas(task, next(self.iterators[task]))
        self.task_steps[task].assign_add(1)
        if apply:
          self._apply_fn()
        losses.append(loss)
        penalties.append(penalty)
        # The rate the step's optimizer holds, read back for the record.
        used.append(tf.identity(self.optimizers[task].learning_rate))
      self.step.assign_add(len(plan))
      return tf.stack(losses), tf.stack(penalties), tf.stack(used)

    fn = tf.function(loop)
    self._loop_fns[plan] = fn
    return fn

  def rates(self, step: int, count: int) -> np.ndarray:
    """The learning rates of the ``count`` steps after global step
    ``step`` (float32, as the optimizers hold them)."""
    return lr_lib.rates(self.config.optimizer, self.config.steps, step + 1,
                        count)

  def _plan(self, step: int) -> Tuple[Tuple[str, bool], ...]:
    """The steps of the loop starting at ``step``: at most steps_per_loop,
    never past the next checkpoint or the end."""
    cfg = self.config
    end = min(step + cfg.steps_per_loop, cfg.steps,
              (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every)
    return tuple(
        (self.schedule.task_at(s),
         self._apply_fn is not None and (s + 1) % cfg.cycle_length == 0)
        for s in range(step, end))

  # -- the loop ---------------------------------------------------------------
  def restore(self) -> int:
    """Restores the latest checkpoint if any; returns the step reached."""
    latest = self.manager.latest_checkpoint
    if latest:
      ckpt_lib.check_tasks(self.model, latest)
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      self.log(f"resumed from {latest} at step {int(self.step.numpy())}")
      self._load_history()
    return int(self.step.numpy())

  def _history_path(self):
    return os.path.join(self.config.run_dir, "history.jsonl")

  def _load_history(self):
    path = self._history_path()
    if not os.path.exists(path):
      return
    step = int(self.step.numpy())
    kept = []
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        if rec["step"] <= step and rec["task"] in self.history:
          if "loss" in rec:  # else a held-out metrics record
            self.history[rec["task"]].append((rec["step"], rec["loss"]))
          kept.append(line)
    if self.chief:
      # Steps after the checkpoint are run again: drop their old records.
      with open(path, "w") as f:
        f.writelines(kept)

  def _write_run_files(self, flags_text: Optional[str]):
    os.makedirs(self.config.run_dir, exist_ok=True)
    with open(os.path.join(self.config.run_dir, "config.json"), "w") as f:
      f.write(self.config.to_json())
    if flags_text is not None:
      with open(os.path.join(self.config.run_dir, "flags.txt"), "w") as f:
        f.write(flags_text)

  def _summaries(self, step: int, losses: Dict[str, List[float]],
                 rate: Optional[float] = None):
    """Each task's mean loss since the last summary, the learning rate of
    ``step``, and the lasso."""
    if self.writer is None:
      return
    with self.writer.as_default(step=step):
      if rate is not None:
        tf.summary.scalar("learning_rate", rate)
      for task, values in losses.items():
        if values:
          tf.summary.scalar(f"loss/{task}", float(np.mean(values)))
      if self.model.mixer is not None:
        alphas = self.model.mixer.alphas()
        for name, alpha in alphas.items():
          tf.summary.histogram(f"lasso/alpha_{name}", alpha)
          tf.summary.scalar(f"lasso/l1_{name}", float(np.abs(alpha).sum()))
        matrix = np.abs(np.stack([alphas[t] for t in self.config.tasks]))
        tf.summary.image("lasso/alpha_matrix",
                         matrix[None, :, :, None].astype(np.float32))

  def train(self, flags_text: Optional[str] = None) -> Dict[str, Any]:
    """Runs (or resumes) training to ``config.steps``; returns a summary."""
    cfg = self.config
    if self.chief:
      self._write_run_files(flags_text)
      self.writer = tf.summary.create_file_writer(
          os.path.join(cfg.run_dir, "train"))
    start = self.restore()
    if start >= cfg.steps:
      self.log(f"already trained to step {start} (steps={cfg.steps})")
      return self._finish(start, 0.0, 0)
    self.log(f"training {', '.join(cfg.tasks)} from step {start} to "
             f"{cfg.steps} on {self.num_replicas} replica(s), "
             f"update={cfg.update}, lasso={cfg.lasso}, "
             f"lr_schedule={cfg.optimizer.lr_schedule}")
    for task in cfg.tasks:
      self.log(self.task_line(task))
    hist_file = open(self._history_path(), "a") if self.chief else None
    window: Dict[str, List[float]] = {t: [] for t in cfg.tasks}
    summary_window: Dict[str, List[float]] = {t: [] for t in cfg.tasks}
    t0 = time.time()
    self.device_seconds = 0.0  # inside the loop functions, host read included
    self._images = {t: self._images_per_step(t) for t in cfg.tasks}
    t_window, images_window, steps_window = time.time(), 0, 0
    step = start
    try:
      while step < cfg.steps:
        plan, losses, _, rates = self.run_loop(step)
        for i, (task, _) in enumerate(plan):
          images_window += self._images[task]
          loss, rate = float(losses[i]), float(rates[i])
          step += 1
          steps_window += 1
          self._after_step(step, task, loss, window, summary_window, hist_file,
                           rate)
          if step % cfg.summary_every == 0:
            self._summaries(step, summary_window, rate)
            summary_window = {t: [] for t in cfg.tasks}
          if step % cfg.log_every == 0 or step == cfg.steps:
            self.refusals.report()
            dt = max(time.time() - t_window, 1e-9)
            text = " ".join(f"{t}={np.mean(v):.4f}"
                            for t, v in window.items() if v)
            speed = steps_window / dt
            self.log(f"step {step}/{cfg.steps} | {speed:.2f} steps/s | "
                     f"{images_window / dt:.1f} img/s | {text} | "
                     f"lr {rate:.3g} | "
                     f"left {format_duration((cfg.steps - step) / speed)}")
            window = {t: [] for t in cfg.tasks}
            t_window, images_window, steps_window = time.time(), 0, 0
        if (self.pretext_eval and step < cfg.steps  # the last: in _finish
            and step // cfg.pretext_eval_every
            > (step - len(plan)) // cfg.pretext_eval_every):
          # Once per interval crossed, with the weights at the loop's end.
          self.pretext_eval.run(step, writer=self.writer, history=hist_file,
                                log=self.log)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
          if hist_file:
            hist_file.flush()
          ckpt_lib.save_checkpoint(self.manager, step)
    finally:
      if hist_file:
        hist_file.close()
      if self.writer is not None:
        self.writer.flush()
    return self._finish(step, time.time() - t0, step - start)

  def task_line(self, task: str) -> str:
    """What ``task`` trains on, as the data pipeline delivers it: its global
    batch, the shape of one example's trunk input, and its data source."""
    spec = tf.nest.flatten(self.local_datasets[task].element_spec[0])[0]
    # [local_replicas, per_replica, (views,) H, W, 3]
    shape = "x".join(str(d) for d in spec.shape.as_list()[2:])
    source = getattr(self.datasets, "descriptions", {}).get(task)
    line = (f"  {task}: global batch {self.config.task_batch_size(task)}, "
            f"inputs {shape}")
    return line + (f", data: {source}" if source else "")

  def _images_per_step(self, task: str) -> int:
    """Images one global batch of ``task`` sends through the trunk."""
    spec = tf.nest.flatten(self.local_datasets[task].element_spec[0])[0]
    # [local_replicas, per_replica, (views,) H, W, 3]
    return self.config.task_batch_size(task) * int(np.prod(spec.shape[2:-3]))

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
    plan = self._plan(step)
    t_call = time.time()
    try:
      losses, penalties, rates = self._loop_fn(plan)(
          tf.constant(self.rates(step, len(plan))))
    except (tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError) as e:
      if not (isinstance(e, tf.errors.OutOfRangeError)
              or NO_USABLE_DATA in str(e)):
        raise
      # A task's input ran dry or its guard found nothing usable: say
      # which files were refused, once, instead of TensorFlow's trace.
      self.refusals.report(quiet=True)
      raise data_report.no_usable_data_error(
          self._skip_counters(), dict.fromkeys(t for t, _ in plan),
          getattr(self.datasets, "descriptions", {}),
          self.refusals.path, self.manager.latest_checkpoint) from None
    # The one host read per loop.
    losses, penalties, rates = (losses.numpy(), penalties.numpy(),
                                rates.numpy())
    self.device_seconds = getattr(self, "device_seconds", 0.0) + (
        time.time() - t_call)
    for i, (task, _) in enumerate(plan):
      if not (math.isfinite(losses[i]) and math.isfinite(penalties[i])):
        raise NonFiniteLossError(
            f"non-finite loss {losses[i]} in task {task!r} at step "
            f"{step + i}; stopping. The last good checkpoint is kept: "
            f"{self.manager.latest_checkpoint}")
    return plan, losses, penalties, rates

  def _after_step(self, step, task, loss, window, summary_window, hist_file,
                  rate=None):
    """Host bookkeeping of one step whose loss (and learning rate) has been
    read."""
    window[task].append(loss)
    summary_window[task].append(loss)
    self.history[task].append((step, loss))
    if hist_file:
      record = {"step": step, "task": task, "loss": loss}
      if rate is not None:
        record["learning_rate"] = rate
      hist_file.write(json.dumps(record) + "\n")

  def _finish(self, step: int, seconds: float, steps_run: int):
    outputs = {"step": step, "seconds": seconds, "steps_run": steps_run,
               "checkpoint": self.manager.latest_checkpoint,
               "device_seconds": getattr(self, "device_seconds", 0.0)}
    if self.chief and self.config.plots:
      from mtssl_tf.utils import plots as visualization
      plots = os.path.join(self.config.run_dir, "plots")
      outputs["loss_plots"] = visualization.plot_loss_curves(
          self.history, plots)
      if self.model.mixer is not None:
        outputs["alpha_plot"] = visualization.plot_alphas(
            self.model.mixer, os.path.join(plots, "alphas.png"))
    if self.pretext_eval and (steps_run or not os.path.exists(
        os.path.join(self.config.run_dir, pretext_eval.JSON_NAME))):
      with open(self._history_path(), "a") as history:
        outputs["pretext_metrics"] = self.pretext_eval.run(
            step, writer=self.writer, history=history, log=self.log,
            run_dir=self.config.run_dir)
    self.refusals.report()
    skipped = getattr(self.datasets, "skipped_summary", None)
    if callable(skipped):
      self.log(skipped())
    self.log(f"done: step {step}, {steps_run} steps in {seconds:.1f}s; "
             f"checkpoint {outputs['checkpoint']}")
    return outputs
