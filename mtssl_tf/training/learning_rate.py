"""The learning rate as a pure function of the global training step.

The trainer assigns every optimizer's rate from :func:`rate_at` before each
step (shared or per-task optimizers, ``update=cycle`` or ``every_step``), so
the rate depends on the checkpointed step counter alone: a resumed run
continues the schedule where it stopped, and every task sees the same rate at
the same step. Steps are numbered from 1 as the trainer's logs, summaries and
``history.jsonl`` number them: step ``n`` is the n-th update, and the step
counter reads ``n`` after it.

With ``base = learning_rate``, ``W = lr_warmup_steps`` and
``T = TrainConfig.steps``:

* warm-up (any schedule): step ``n <= W`` runs at ``base * n / W``, a line
  from 0 (at step 0) to ``base`` (at step ``W``);
* ``constant``: ``base`` after the warm-up (the paper's recipe, recalled);
* ``cosine``: ``floor + (base - floor) * (1 + cos(pi * p)) / 2`` with
  ``p = (n - W) / (T - W)`` and ``floor = lr_min_fraction * base``: ``base``
  at step ``W``, ``floor`` at the last step ``T``;
* ``step``: ``base / 10**k`` where ``k`` counts the ``lr_drop_steps`` (or
  ``round(f * T)`` for each of ``lr_drop_fractions``) that are ``< n``: after the run reaches a drop step (its checkpoint), the
  following steps run at a tenth of the rate.

Example::

    >>> from mtssl_tf.config import OptimizerConfig
    >>> cfg = OptimizerConfig(learning_rate=1e-3, lr_schedule="cosine")
    >>> rate_at(cfg, 100, 50)  # half way: base / 2
    0.0005
"""
from __future__ import annotations

import math

import numpy as np


def is_scheduled(optimizer) -> bool:
  """Whether the rate changes over the run (``False``: constant without
  warm-up, where the trainer never assigns the rate and runs exactly as
  before schedules existed)."""
  return optimizer.lr_schedule != "constant" or optimizer.lr_warmup_steps > 0


def rate_at(optimizer, total_steps: int, step: int) -> float:
  """The learning rate of global step ``step`` (1-based).

  Args:
    optimizer: an :class:`~mtssl_tf.config.OptimizerConfig`.
    total_steps: the run's length (``TrainConfig.steps``), the end of a
      cosine.
    step: the step, ``1 <= step``; steps past ``total_steps`` (a resume
      with fewer steps never runs them) hold the last step's rate.

  Returns:
    The rate as a Python float.

  Raises:
    ValueError: ``step < 1`` or ``total_steps < 1``.
  """
  if step < 1 or total_steps < 1:
    raise ValueError(f"step={step} and total_steps={total_steps} must be "
                     ">= 1 (steps are numbered from 1)")
  base = float(optimizer.learning_rate)
  warmup = int(optimizer.lr_warmup_steps)
  n = min(int(step), int(total_steps))
  if n <= warmup:
    return base * n / warmup
  if optimizer.lr_schedule == "cosine":
    floor = float(optimizer.lr_min_fraction) * base
    progress = (n - warmup) / (total_steps - warmup)
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
  if optimizer.lr_schedule == "step":
    drops = sum(1 for d in drop_steps(optimizer, total_steps) if d < n)
    return base / 10.0 ** drops
  return base


def drop_steps(optimizer, total_steps: int) -> tuple:
  """The global steps of ``lr_schedule=step``'s drops: ``lr_drop_steps``,
  or ``round(f * total_steps)`` for each of ``lr_drop_fractions``."""
  if optimizer.lr_drop_fractions:
    return tuple(int(round(f * total_steps))
                 for f in optimizer.lr_drop_fractions)
  return tuple(optimizer.lr_drop_steps)


def rates(optimizer, total_steps: int, first: int, count: int) -> np.ndarray:
  """``[rate_at(first), ..., rate_at(first + count - 1)]`` as float32 (the
  optimizers' variable dtype): the rates of one loop's steps."""
  return np.array([rate_at(optimizer, total_steps, first + i)
                   for i in range(count)], np.float32)
