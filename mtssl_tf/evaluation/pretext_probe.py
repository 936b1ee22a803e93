"""Frozen-trunk probes of the self-supervised tasks: each task as a
downstream task for any trunk.

A probe freezes a trunk (a run's, a zoo preset's, or a random one), trains
a registered task's own head afresh on the task's training data for a set
number of steps, and scores the head on the task's held-out data with the
task's held-out metric beside its chance level
(:meth:`~mtssl_tf.tasks.Task.heldout_scores`). Optionally the head reads a
fresh UnitMixer row over the block-3 units (the paper's "eval lasso").

Every trunk compared meets the same held-out batches and the same probe
settings: one :class:`PretextProbe` materializes its held-out batches once
and reuses them for each trunk it runs on. The trunks x probes matrix is
the paper's Table 2 idea at CPU scale (``tools/study.py`` builds it).

Nothing here knows a task by name: the probe talks to tasks only through
the task interface (``prepare``, ``preprocess``, ``trunk_images``,
``build_head``, ``loss``, ``heldout_scores``), so a task added with
:func:`mtssl_tf.tasks.register_task` is probed like the paper's four.

Example:
  >>> probe = PretextProbe(config, "relative_position", steps=300)
  >>> dict(probe.run(trunk))
  {'relative_position/accuracy': 0.29, 'relative_position/chance': 0.125,
   ...}
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from mtssl_tf import tasks as tasks_lib
from mtssl_tf.evaluation.interface import EvalBackbone, Evaluator
from mtssl_tf.models.trunk import Trunk
from mtssl_tf.utils.progress import Progress

# The mixer row the probe learns with eval lasso.
EVAL_TASK = "probe"


class PretextProbe(Evaluator):
  """A registered task's head, trained afresh on a frozen trunk.

  Args:
    config: a :class:`~mtssl_tf.config.TrainConfig` that says where the
      data is (``data``), the task's parameters (``task_params``), its
      batch size, the seed, how many held-out examples to score
      (``pretext_eval_examples``) and a folder for what the task caches
      (``run_dir``: colorization's prior, motion masks). ``config.tasks``
      need not include ``task``.
    task: the registered name of the task to probe.
    steps: training steps of the head.
    learning_rate: Adam's learning rate (cosine decay to 0 over ``steps``).
    lasso_l1: L1 penalty of the eval-lasso row (with ``eval_lasso``).
    log: callable taking one line of text.

  ``run(trunk, eval_lasso=...)`` yields ``("<task>/<metric>", value)`` for
  every score of :meth:`~mtssl_tf.tasks.Task.heldout_scores` (the headline
  metric and ``chance`` among them). The trunk is not modified.

  Raises:
    ValueError: ``task`` is not registered or defines no held-out metric,
      or the config has no held-out data for it.
  """

  name = "pretext_probe"

  def __init__(self, config, task: str, *, steps: int = 300,
               learning_rate: float = 1e-3, lasso_l1: float = 1e-3,
               log: Callable[[str], None] = print):
    cls = tasks_lib.get_task_class(task)
    if cls.headline_metric is None:
      raise ValueError(
          f"task {task!r} defines no held-out metric (Task.headline_metric, "
          "Task.heldout_scores): it cannot be probed")
    if steps < 1:
      raise ValueError(f"pretext_probe.steps must be >= 1, got {steps}")
    self.task_name = task
    self.steps = int(steps)
    self.learning_rate = float(learning_rate)
    self.lasso_l1 = float(lasso_l1)
    self.config = _prepared(_single_task(config, task), log)
    self.task = tasks_lib.get_task(task, **self.config.task_params[task])
    self._heldout: Optional[List[Tuple[Any, Any]]] = None
    self._training: Optional[tf.data.Dataset] = None
    self._log = log

  # -- data ------------------------------------------------------------------

  def heldout(self) -> List[Tuple[Any, Any]]:
    """The fixed held-out ``(inputs, targets)`` batches (made once)."""
    if self._heldout is None:
      from mtssl_tf.training import pretext_eval  # pylint: disable=g-import-not-at-top
      sources, notes = pretext_eval.heldout_sources(self.config, self._log)
      if self.task_name not in sources:
        raise ValueError(f"no held-out data to probe {self.task_name}: "
                         + "; ".join(notes))
      self._heldout = pretext_eval.materialize(
          self.task, sources[self.task_name],
          examples=self.config.pretext_eval_examples,
          batch_size=self.config.task_batch_size(self.task_name),
          seed=self.config.seed)
    return self._heldout

  def training_batches(self) -> tf.data.Dataset:
    """The task's training batches, made once: every trunk's head trains
    on the same batches in the same order (a fresh iterator per run)."""
    if self._training is None:
      from mtssl_tf.data import pipeline  # pylint: disable=g-import-not-at-top
      datasets = pipeline.training_datasets(
          self.config, {self.task_name: self.task}, self._log)
      self._training = datasets[self.task_name]
    return self._training

  # -- the probe -------------------------------------------------------------

  def run(self, trunk: Trunk, *, eval_lasso: bool = False,
          log: Callable[[str], None] = print
          ) -> Iterator[Tuple[str, float]]:
    scores = self.evaluate(trunk, eval_lasso=eval_lasso, log=log)
    for metric, value in scores.items():
      yield f"{self.task_name}/{metric}", value

  def evaluate(self, trunk: Trunk, *, eval_lasso: bool = False,
               log: Callable[[str], None] = print) -> Dict[str, float]:
    """Trains a fresh head on the frozen ``trunk``; returns the task's
    held-out scores (``{metric: value}``, with ``chance``)."""
    was_trainable = trunk.trainable
    try:
      backbone = EvalBackbone(trunk, eval_lasso=eval_lasso,
                              task_name=EVAL_TASK, l1=self.lasso_l1,
                              trainable_trunk=False)
      head = self.task.build_head()
      self._train(backbone, head, log)
      batches = self.heldout()
      outputs = [np.asarray(self._predict(backbone, head, inputs))
                 for inputs, _ in batches]
      scores = self.task.heldout_scores(batches, outputs)
    finally:
      trunk.trainable = was_trainable  # EvalBackbone froze it
    self.last_alpha = (backbone.mixer.alphas()[EVAL_TASK]
                       if backbone.mixer is not None else None)
    headline = self.task.headline_metric
    log(f"pretext_probe {self.task_name}: {headline}="
        f"{scores[headline]:.3f} (chance {scores['chance']:.3f}) after "
        f"{self.steps} steps" + (" with eval lasso" if eval_lasso else ""))
    return {k: float(v) for k, v in scores.items()}

  def _predict(self, backbone, head, inputs):
    images = self.task.trunk_images(tf.nest.map_structure(tf.constant,
                                                          inputs))
    return head(backbone(images, training=False), training=False)

  def _train(self, backbone: EvalBackbone, head, log) -> None:
    task = self.task
    schedule = keras.optimizers.schedules.CosineDecay(self.learning_rate,
                                                      self.steps)
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    dataset = self.training_batches()
    first_inputs, _ = next(iter(dataset.take(1)))
    # Builds the head (and the mixer row) on real features.
    self._predict(backbone, head, first_inputs)
    variables = list(head.trainable_variables)
    if backbone.mixer is not None:
      variables += list(backbone.mixer.trainable_variables)
    optimizer.build(variables)

    @tf.function
    def step(inputs, targets):
      images = task.trunk_images(inputs)
      with tf.GradientTape() as tape:
        features = backbone(images, training=False)
        outputs = head(features, training=True)
        loss = tf.reduce_mean(tf.cast(task.loss(targets, outputs),
                                      tf.float32))
        total = loss
        if backbone.mixer is not None and self.lasso_l1 > 0:
          total += backbone.mixer.penalty(EVAL_TASK)
      grads = tape.gradient(total, variables)
      optimizer.apply_gradients(zip(grads, variables))
      return loss

    every = max(1, self.steps // 5)
    progress = Progress(f"pretext_probe {self.task_name}:", self.steps, log,
                        every)
    for i, (inputs, targets) in enumerate(dataset.take(self.steps), start=1):
      loss = step(inputs, targets)
      if i % every == 0 or i == self.steps:
        value = float(loss)
        if not math.isfinite(value):
          raise FloatingPointError(
              f"pretext_probe {self.task_name}: the loss became {value} at "
              f"step {i}; lower pretext_probe.learning_rate")
        progress.update(i, f"loss {value:.4f}")


def _single_task(config, task: str):
  """``config`` with ``task`` as its only task (its parameters kept, or the
  task's defaults)."""
  params = dict(config.task_params.get(task, {}))
  return dataclasses.replace(config, tasks=(task,),
                             task_params={task: params},
                             task_batch_sizes=_batch_sizes(config, task),
                             task_weights=None)


def _batch_sizes(config, task: str):
  sizes = getattr(config, "task_batch_sizes", None) or {}
  return {task: sizes[task]} if task in sizes else {}


def _prepared(config, log):
  """The config after the task's ``prepare`` hook (colorization's prior
  from the training images, cached in ``config.run_dir``)."""
  from mtssl_tf.training.trainer import prepare_tasks  # pylint: disable=g-import-not-at-top
  return prepare_tasks(config, log=log)


__all__ = ["EVAL_TASK", "PretextProbe"]
