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
* ``tf.train.CheckpointManager`` saves the model, optimizer(s), step counter,
  gradient accumulators and the input iterators, so re-running the same
  command resumes exactly where the last checkpoint was written;
* a non-finite loss stops the run with :class:`NonFiniteLossError` naming the
  task and the step; no checkpoint is written after it.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from mtssl_tf.config import TrainConfig, check_resume
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.training import schedules
from mtssl_tf.training.distribute import is_chief, make_strategy


def model_weights(model) -> List[tf.Variable]:
  """Every variable of ``model`` in construction order, for checkpoints.

  A list (not the Keras model object) is what the checkpoint tracks: Keras 3
  models are only partly visible to ``tf.train.Checkpoint``'s object graph
  (layers held in dicts, e.g. the heads, are missed), while the order of
  ``model.weights`` is fixed by the architecture.
  """
  return list(model.weights)


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


def _images_per_step(inputs) -> int:
  """How many images one batch sends through the trunk (leading dims of
  the [..., H, W, 3] inputs)."""
  first = tf.nest.flatten(inputs)[0]
  return int(np.prod(first.shape[:-3]))


def _format_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Trainer:
  """Builds everything a run needs from a :class:`TrainConfig` and runs it.

  Args:
    config: the validated configuration.
    strategy: a ``tf.distribute.Strategy``; made from the config if None.
    datasets: task -> ``tf.data.Dataset`` of GLOBAL batches
      ``(inputs, targets)``; made from ``config.data`` if None (tests pass
      their own).
    log: a callable taking one line of progress text.
  """

  def __init__(self, config: TrainConfig, strategy=None,
               datasets: Optional[Dict[str, tf.data.Dataset]] = None,
               log=print):
    # Before anything is built: a run folder trained under another config
    # must not be resumed with this one.
    check_resume(config)
    self.config = config
    self.log = log
    if config.data.deterministic:
      tf.config.experimental.enable_op_determinism()
    self.strategy = strategy or make_strategy(config)
    self.num_replicas = self.strategy.num_replicas_in_sync
    self.per_replica_batch = config.check_replicas(self.num_replicas)
    self.chief = is_chief(self.strategy)
    self.schedule = schedules.make_schedule(config)
    keras.utils.set_random_seed(config.seed)
    with self.strategy.scope():
      self.model = MultiTaskModel(**config.model_kwargs(), name="mtssl")
      if config.optimizer.per_task:
        self.optimizers = {t: make_optimizer(config.optimizer)
                           for t in config.tasks}
      else:
        shared = make_optimizer(config.optimizer)
        self.optimizers = {t: shared for t in config.tasks}
      self.variables = list(self.model.trainable_variables)
      self._index = {id(v): i for i, v in enumerate(self.variables)}
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
    if datasets is None:
      from mtssl_tf.data import pipeline  # heavy imports only when training
      datasets = pipeline.training_datasets(config, self.model.tasks, log=log)
    if getattr(self.strategy.extended, "_num_workers", 1) > 1:
      # Every worker reads the same global batch and takes its replicas'
      # slices, so all workers must see the batches in the same order.
      options = tf.data.Options()
      options.deterministic = True
      datasets = type(datasets)(
          {t: ds.with_options(options) for t, ds in datasets.items()},
          **({"sources": datasets.sources}
             if hasattr(datasets, "sources") else {}))
    self.datasets = datasets
    self.iterators = {t: iter(datasets[t]) for t in config.tasks}
    self._step_fns = {t: self._make_step_fn(t) for t in config.tasks}
    self._apply_fn = self._make_apply_fn() if self.accumulators else None
    unique_opts = {id(o): o for o in self.optimizers.values()}
    ckpt_items = dict(model_weights=model_weights(self.model), step=self.step,
                      accumulators=self.accumulators, **{
                          f"task_step_{t}": v
                          for t, v in self.task_steps.items()})
    if config.optimizer.per_task:
      ckpt_items.update({f"optimizer_{t}": list(o.variables)
                         for t, o in self.optimizers.items()})
    else:
      ckpt_items["optimizer"] = list(
          next(iter(unique_opts.values())).variables)
    ckpt_items.update({f"data_{t}": it for t, it in self.iterators.items()})
    for t, source in getattr(datasets, "sources", {}).items():
      ckpt_items[f"skips_{t}"] = source.counter
    self.checkpoint = tf.train.Checkpoint(**ckpt_items)
    ckpt_dir = os.path.join(config.run_dir, "checkpoints")
    if not self.chief:
      # Non-chief workers must take part in saving but write elsewhere.
      ckpt_dir = os.path.join(config.run_dir, "workers",
                              f"{self.strategy.cluster_resolver.task_id}")
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, ckpt_dir, max_to_keep=config.max_to_keep)
    self.history: Dict[str, List[tuple]] = {t: [] for t in config.tasks}
    self.writer = None

  # -- graph functions ------------------------------------------------------
  def _task_variables(self, task: str) -> List[tf.Variable]:
    """The variables that task ``task``'s loss depends on."""
    head = self.model.heads[task]
    variables = list(self.model.trunk.trainable_variables)
    variables += list(head.trainable_variables)
    if self.model.mixer is not None:
      variables.append(self.model.mixer._alphas[task])
    return variables

  def _make_step_fn(self, task_name: str):
    model = self.model
    task = model.task_objects[task_name]
    optimizer = self.optimizers[task_name]
    variables = self._task_variables(task_name)
    indices = [self._index[id(v)] for v in variables]
    global_batch = self.config.batch_size
    num_replicas = self.num_replicas
    accumulators = self.accumulators

    def replica_step(inputs, targets):
      with tf.GradientTape() as tape:
        outputs = model(inputs, task=task_name, training=True)
        per_example = task.loss(targets, outputs)
        # Each replica sums its own examples and divides by the GLOBAL batch;
        # the all-reduce (a sum over replicas) then yields the global mean,
        # the same value one replica computes on the whole batch.
        loss = tf.reduce_sum(per_example) / global_batch
        # Every replica adds the identical lasso penalty; dividing by the
        # number of replicas makes the summed penalty count once.
        penalty = (tf.add_n(model.losses) / num_replicas
                   if model.losses else tf.constant(0.0))
        total = loss + penalty
      grads = tape.gradient(total, variables)
      grads = [tf.zeros_like(v) if g is None else g
               for g, v in zip(grads, variables)]
      if accumulators:
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        for i, g in zip(indices, grads):
          accumulators[i].assign_add(g)
      else:
        # apply_gradients all-reduces (sums) the per-replica gradients.
        optimizer.apply_gradients(zip(grads, variables))
      return loss, penalty

    @tf.function
    def step_fn(batch):
      inputs, targets = batch
      loss, penalty = self.strategy.run(replica_step, args=(inputs, targets))
      reduce = self.strategy.reduce
      return (reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
              reduce(tf.distribute.ReduceOp.SUM, penalty, axis=None))

    return step_fn

  def _make_apply_fn(self):
    optimizer = next(iter(self.optimizers.values()))
    variables = self.variables
    accumulators = self.accumulators
    cycle = float(self.config.cycle_length)

    @tf.function
    def apply_fn():
      # Cross-replica context: the accumulators hold all-reduced sums, so the
      # optimizer applies the same mean gradient on every replica.
      grads = [a.read_value() / cycle for a in accumulators]
      optimizer.apply_gradients(zip(grads, variables))
      for a in accumulators:
        a.assign(tf.zeros_like(a))

    return apply_fn

  def _distribute(self, batch):
    """Splits a global batch into the replicas' slices."""
    per = self.per_replica_batch
    if self.num_replicas == 1:
      return batch

    def value_fn(ctx):
      i = ctx.replica_id_in_sync_group
      return tf.nest.map_structure(lambda t: t[i * per:(i + 1) * per], batch)

    return self.strategy.experimental_distribute_values_from_function(
        value_fn)

  # -- the loop ---------------------------------------------------------------
  def restore(self) -> int:
    """Restores the latest checkpoint if any; returns the step reached."""
    latest = self.manager.latest_checkpoint
    if latest:
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

  def _summaries(self, step: int, losses: Dict[str, List[float]]):
    """Each task's mean loss since the last summary, and the lasso."""
    if self.writer is None:
      return
    with self.writer.as_default(step=step):
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
             f"{cfg.steps} on {self.num_replicas} replica(s), global batch "
             f"{cfg.batch_size}, update={cfg.update}, lasso={cfg.lasso}")
    hist_file = open(self._history_path(), "a") if self.chief else None
    window: Dict[str, List[float]] = {t: [] for t in cfg.tasks}
    summary_window: Dict[str, List[float]] = {t: [] for t in cfg.tasks}
    t0 = time.time()
    t_window, images_window, steps_window = time.time(), 0, 0
    step = start
    try:
      while step < cfg.steps:
        task = self.schedule.task_at(step)
        batch = next(self.iterators[task])
        images_window += _images_per_step(batch[0])
        loss, penalty = self._step_fns[task](self._distribute(batch))
        loss = float(loss)
        if not math.isfinite(loss) or not math.isfinite(float(penalty)):
          raise NonFiniteLossError(
              f"non-finite loss {loss} in task {task!r} at step {step}; "
              f"stopping. The last good checkpoint is kept: "
              f"{self.manager.latest_checkpoint}")
        self.task_steps[task].assign_add(1)
        step += 1
        steps_window += 1
        if self._apply_fn is not None and step % cfg.cycle_length == 0:
          self._apply_fn()
        self.step.assign(step)
        window[task].append(loss)
        summary_window[task].append(loss)
        self.history[task].append((step, loss))
        if hist_file:
          hist_file.write(json.dumps({"step": step, "task": task,
                                      "loss": loss}) + "\n")
        if step % cfg.summary_every == 0:
          self._summaries(step, summary_window)
          summary_window = {t: [] for t in cfg.tasks}
        if step % cfg.log_every == 0 or step == cfg.steps:
          dt = max(time.time() - t_window, 1e-9)
          rate = steps_window / dt
          losses = " ".join(f"{t}={np.mean(v):.4f}"
                            for t, v in window.items() if v)
          self.log(f"step {step}/{cfg.steps} | {rate:.2f} steps/s | "
                   f"{images_window / dt:.1f} img/s | {losses} | "
                   f"left {_format_time((cfg.steps - step) / rate)}")
          window = {t: [] for t in cfg.tasks}
          t_window, images_window, steps_window = time.time(), 0, 0
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
          if hist_file:
            hist_file.flush()
          self.manager.save(checkpoint_number=step)
    finally:
      if hist_file:
        hist_file.close()
      if self.writer is not None:
        self.writer.flush()
    return self._finish(step, time.time() - t0, step - start)

  def _finish(self, step: int, seconds: float, steps_run: int):
    outputs = {"step": step, "seconds": seconds, "steps_run": steps_run,
               "checkpoint": self.manager.latest_checkpoint}
    if self.chief and self.config.plots:
      from mtssl_tf import visualization
      plots = os.path.join(self.config.run_dir, "plots")
      outputs["loss_plots"] = visualization.plot_loss_curves(
          self.history, plots)
      if self.model.mixer is not None:
        outputs["alpha_plot"] = visualization.plot_alphas(
            self.model.mixer, os.path.join(plots, "alphas.png"))
    skipped = getattr(self.datasets, "skipped_summary", None)
    if callable(skipped):
      self.log(skipped())
    self.log(f"done: step {step}, {steps_run} steps in {seconds:.1f}s; "
             f"checkpoint {outputs['checkpoint']}")
    return outputs
