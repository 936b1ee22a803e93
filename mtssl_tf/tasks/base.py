"""The one small interface every self-supervised task implements.

A task turns raw examples into network inputs and targets (inside
``tf.data``), says which images go through the shared trunk, builds its head,
and computes a per-example loss and its metrics. The trainer and the
multi-task model only ever talk to tasks through this interface.

Data flow for one step of task ``t``::

    example (dict, one image/frame)  --t.preprocess(example, seed)-->  (inputs, targets)
    batched inputs                   --t.trunk_images(inputs)------->  images [N', H, W, 3]
    trunk + UnitMixer row of t       ----------------------------->  features [N', h, w, C]
    head = t.build_head()            --head(features)--------------->  outputs
    t.loss(targets, outputs)         ----------------------------->  per-example loss [B]

Conventions:
  * Images are float32 RGB in [0, 255] (see :mod:`mtssl_tf.ops.image`).
  * ``preprocess`` is deterministic given ``seed`` (a [2] int32/int64 tensor
    for ``tf.random.stateless_*`` ops), so a data op gives the same result
    eagerly and inside ``tf.data``.
  * ``loss`` returns one value per example of the (local) batch; the trainer
    sums and divides by the *global* batch size.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Dict, Tuple

import keras
import tensorflow as tf


class Task(abc.ABC):
  """Base class of the self-supervised tasks.

  Subclasses set ``name`` and take their hyper-parameters as keyword
  arguments with the paper's values as defaults; ``get_config`` returns them.
  """

  name: ClassVar[str] = ""

  @abc.abstractmethod
  def get_config(self) -> Dict[str, Any]:
    """The constructor's keyword arguments (JSON-serialisable)."""

  @classmethod
  def from_config(cls, config: Dict[str, Any]) -> "Task":
    return cls(**config)

  @abc.abstractmethod
  def preprocess(self, example: Dict[str, tf.Tensor],
                 seed: tf.Tensor) -> Tuple[Any, Any]:
    """Makes ``(inputs, targets)`` for one example (unbatched).

    Args:
      example: a dict with at least ``"image"`` (any dtype/channels accepted
        by :func:`mtssl_tf.ops.image.ensure_rgb`); motion segmentation also
        reads ``"mask"``.
      seed: [2] integer tensor for stateless random ops.
    """

  @abc.abstractmethod
  def trunk_images(self, inputs: Any) -> tf.Tensor:
    """Batched inputs -> the images [N', H, W, 3] that go through the trunk."""

  @abc.abstractmethod
  def build_head(self) -> keras.layers.Layer:
    """A fresh head: mixed features [N', h, w, C] -> the task's outputs."""

  @abc.abstractmethod
  def loss(self, targets: Any, outputs: Any) -> tf.Tensor:
    """Per-example loss, shape [B] (B = local batch size)."""

  # Why an example for which ``usable`` is False teaches the task nothing
  # (for messages: "grey: no colour to learn", ...).
  unusable_reason: ClassVar[str] = "unusable for the task"

  def usable(self, example: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Whether the task can learn from ``example`` at all (a bool scalar).

    An example that is not usable still trains (it contributes the loss the
    task gives it); the input pipeline counts it, names its file, and stops
    a run whose source yields no usable example in a whole pass (e.g. a
    folder of grey photos for colorization). Override it when some inputs
    carry no signal for the task; the default accepts every example.
    """
    del example
    return tf.constant(True)

  def metrics(self, targets: Any, outputs: Any) -> Dict[str, tf.Tensor]:
    """Scalar metrics of one batch (mean over the batch)."""
    del targets, outputs
    return {}

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"{type(self).__name__}({args})"
