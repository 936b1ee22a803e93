"""What a run does around its steps: small classes with hooks.

The loop (:meth:`~mtssl_tf.training.trainer.Trainer.train`) calls, in list
order, each callback's

* ``on_train_begin(start)`` before the first loop,
* ``on_step(step, task, loss, rate)`` for each step, once its loss is read
  (``step`` counts from 1: the steps done),
* ``on_loop_end(step, steps_in_loop)`` after each loop of
  ``steps_per_loop`` steps,
* ``close()`` after the last loop, an error included,
* ``on_train_end(step, steps_run, outputs)`` at the end of a run that
  succeeded (also when it was already complete), adding to the ``outputs``
  summary.

:class:`History` keeps the losses (``history.jsonl``, and in memory for the
plots), :class:`Summaries` writes TensorBoard, :class:`Progress` the log
lines, :class:`HeldOutEvaluation` runs the held-out pretext metrics and
:class:`Checkpoints` saves the run; a held-out evaluation and the history
are written before the checkpoint of the same step.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

from mtssl_tf.training import run_checkpoints as ckpt_lib
from mtssl_tf.training import pretext_eval as pretext_eval_lib
from mtssl_tf.utils.progress import format_duration


class Callback:
  """Does nothing at every hook; subclasses override what they need."""

  def on_train_begin(self, start: int) -> None:
    pass

  def on_step(self, step: int, task: str, loss: float, rate: float) -> None:
    pass

  def on_loop_end(self, step: int, steps_in_loop: int) -> None:
    pass

  def on_train_end(self, step: int, steps_run: int,
                   outputs: Dict[str, Any]) -> None:
    pass

  def close(self) -> None:
    pass


def at_checkpoint(config, step: int) -> bool:
  """Whether the run checkpoints after ``step``."""
  return step % config.checkpoint_every == 0 or step == config.steps


class History(Callback):
  """Each step's loss: ``history`` (task -> [(step, loss)]) in memory and,
  on the chief, one ``history.jsonl`` record with the learning rate."""

  def __init__(self, config, chief: bool):
    self.config, self.chief = config, chief
    self.path = os.path.join(config.run_dir, "history.jsonl")
    self.history: Dict[str, List[tuple]] = {t: [] for t in config.tasks}
    self.file = None

  def load(self, step: int) -> None:
    """Reads the records up to ``step`` (a resumed run's checkpoint); the
    chief drops the later ones, whose steps run again."""
    if not os.path.exists(self.path):
      return
    kept = []
    with open(self.path) as f:
      for line in f:
        rec = json.loads(line)
        if rec["step"] <= step and rec["task"] in self.history:
          if "loss" in rec:  # else a held-out metrics record
            self.history[rec["task"]].append((rec["step"], rec["loss"]))
          kept.append(line)
    if self.chief:
      with open(self.path, "w") as f:
        f.writelines(kept)

  def on_train_begin(self, start):
    if self.chief:
      self.file = open(self.path, "a")

  def on_step(self, step, task, loss, rate):
    self.history[task].append((step, loss))
    if self.file:
      self.file.write(json.dumps({"step": step, "task": task, "loss": loss,
                                  "learning_rate": rate}) + "\n")

  def on_loop_end(self, step, steps_in_loop):
    if self.file and at_checkpoint(self.config, step):
      self.file.flush()

  def close(self):
    if self.file:
      self.file.close()
      self.file = None


class Summaries(Callback):
  """TensorBoard (chief only): every ``summary_every`` steps each task's
  mean loss since the last summary, the learning rate and the lasso."""

  def __init__(self, config, model, chief: bool):
    self.config, self.model = config, model
    self.writer = (tf.summary.create_file_writer(
        os.path.join(config.run_dir, "train")) if chief else None)
    self.window = {t: [] for t in config.tasks}

  def on_step(self, step, task, loss, rate):
    self.window[task].append(loss)
    if step % self.config.summary_every == 0:
      self.write(step, rate)
      self.window = {t: [] for t in self.config.tasks}

  def write(self, step: int, rate: float) -> None:
    if self.writer is None:
      return
    with self.writer.as_default(step=step):
      tf.summary.scalar("learning_rate", rate)
      for task, values in self.window.items():
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

  def close(self):
    if self.writer is not None:
      self.writer.flush()


class Progress(Callback):
  """A log line every ``log_every`` steps and at the end: speed, each task's
  mean loss, the rate and the time left; refused input files are reported
  there too."""

  def __init__(self, config, images_per_step: Dict[str, int], refusals, log):
    self.config, self.images, self.refusals = config, images_per_step, refusals
    self.log = log
    self._reset()

  def _reset(self):
    self.window = {t: [] for t in self.config.tasks}
    self.t0, self.images_seen, self.steps = time.time(), 0, 0

  def on_step(self, step, task, loss, rate):
    cfg = self.config
    self.window[task].append(loss)
    self.images_seen += self.images[task]
    self.steps += 1
    if step % cfg.log_every and step != cfg.steps:
      return
    self.refusals.report()
    dt = max(time.time() - self.t0, 1e-9)
    losses = " ".join(f"{t}={np.mean(v):.4f}"
                      for t, v in self.window.items() if v)
    speed = self.steps / dt
    self.log(f"step {step}/{cfg.steps} | {speed:.2f} steps/s | "
             f"{self.images_seen / dt:.1f} img/s | {losses} | "
             f"lr {rate:.3g} | "
             f"left {format_duration((cfg.steps - step) / speed)}")
    self._reset()


class HeldOutEvaluation(Callback):
  """The held-out pretext metrics (chief only): once per
  ``pretext_eval_every`` interval crossed, with the weights at the loop's
  end, and at the end of the run (``pretext_metrics.json``)."""

  def __init__(self, config, evaluator, history: History,
               summaries: Summaries, log):
    self.config, self.evaluator, self.log = config, evaluator, log
    self.history, self.summaries = history, summaries

  def on_loop_end(self, step, steps_in_loop):
    every = self.config.pretext_eval_every
    if (step < self.config.steps  # the last: on_train_end
        and step // every > (step - steps_in_loop) // every):
      self.evaluator.run(step, writer=self.summaries.writer,
                         history=self.history.file, log=self.log)

  def on_train_end(self, step, steps_run, outputs):
    run_dir = self.config.run_dir
    if steps_run or not os.path.exists(
        os.path.join(run_dir, pretext_eval_lib.JSON_NAME)):
      with open(self.history.path, "a") as history:
        outputs["pretext_metrics"] = self.evaluator.run(
            step, writer=self.summaries.writer, history=history,
            log=self.log, run_dir=run_dir)


class Checkpoints(Callback):
  """Saves the run every ``checkpoint_every`` steps and at the end."""

  def __init__(self, config, manager: tf.train.CheckpointManager):
    self.config, self.manager = config, manager

  def on_loop_end(self, step, steps_in_loop):
    if at_checkpoint(self.config, step):
      ckpt_lib.save_checkpoint(self.manager, step)


class Plots(Callback):
  """Loss curves and the lasso's alphas as PNGs at the end (chief,
  ``config.plots``)."""

  def __init__(self, config, model, history: History):
    self.config, self.model, self.history = config, model, history

  def on_train_end(self, step, steps_run, outputs):
    from mtssl_tf.utils import plots as visualization
    plots = os.path.join(self.config.run_dir, "plots")
    outputs["loss_plots"] = visualization.plot_loss_curves(
        self.history.history, plots)
    if self.model.mixer is not None:
      outputs["alpha_plot"] = visualization.plot_alphas(
          self.model.mixer, os.path.join(plots, "alphas.png"))


def standard(config, model, history: History, *, chief: bool, manager,
             evaluator: Optional[Any], images_per_step: Dict[str, int],
             refusals, log) -> List[Callback]:
  """The callbacks of a run, in the order their hooks run; ``history`` is
  the one a resumed run has read (:meth:`History.load`)."""
  summaries = Summaries(config, model, chief)
  callbacks = [history, summaries, Progress(config, images_per_step,
                                            refusals, log)]
  if chief and config.plots:
    callbacks.append(Plots(config, model, history))
  if evaluator is not None:
    callbacks.append(HeldOutEvaluation(config, evaluator, history, summaries,
                                       log))
  callbacks.append(Checkpoints(config, manager))
  return callbacks
