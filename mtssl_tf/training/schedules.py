"""Task schedules: which task's head is active at each step.

A schedule is a pure function of the step (and the seed), so a resumed run
makes the same choices as an uninterrupted one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class Schedule:
  """Base class: ``task_at(step)`` -> task name."""

  def __init__(self, tasks: Sequence[str]):
    self.tasks = list(tasks)

  def task_at(self, step: int) -> str:
    raise NotImplementedError


class RoundRobin(Schedule):
  """Tasks in turn: step s runs ``tasks[s % T]`` (one cycle = T steps)."""

  def task_at(self, step: int) -> str:
    return self.tasks[step % len(self.tasks)]


class Weighted(Schedule):
  """Samples a task with probability proportional to its weight; the draw of
  step s is seeded by (seed, s), so runs repeat and resume identically."""

  def __init__(self, tasks: Sequence[str], weights: Sequence[float],
               seed: int = 0):
    super().__init__(tasks)
    w = np.asarray(weights, np.float64)
    if w.shape != (len(self.tasks),) or np.any(w <= 0):
      raise ValueError(
          f"weights={list(weights)} must be one positive weight per task "
          f"({len(self.tasks)} tasks)")
    self.probabilities = w / w.sum()
    self.seed = int(seed)

  def task_at(self, step: int) -> str:
    rng = np.random.default_rng([self.seed, int(step)])
    return self.tasks[int(rng.choice(len(self.tasks), p=self.probabilities))]


def make_schedule(config) -> Schedule:
  if config.schedule == "weighted":
    weights = config.task_weights or [1.0] * len(config.tasks)
    return Weighted(config.tasks, weights, seed=config.seed)
  return RoundRobin(config.tasks)
