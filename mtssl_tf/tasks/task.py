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

Besides the data flow, a task owns what is specific to it around training;
the trainer and the evaluators call these hooks on every task alike and never
branch on a task's name:

  * ``prepare(params, context)`` (classmethod): before the run's model is
    built, makes the task's parameters concrete from the training data
    (colorization: its ``prior="auto"``, computed from a sample of the
    training images and cached in the run folder); ``params_to_check``
    says what the config validates before that, and ``data_problem`` why
    the run's data cannot feed the task (motion segmentation without
    masks).
  * ``xla_incompatibility(num_replicas)``: why the task's step must run
    uncompiled under ``jit_compile`` (None: it compiles).
  * ``headline_metric``, ``heldout_scores(batches, outputs)``,
    ``heldout_summary`` / ``heldout_table`` and ``one_pass_heldout``: the
    held-out pretext metric(s) of :mod:`mtssl_tf.training.pretext_eval`;
    a task without a ``headline_metric`` is left out of that evaluation.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import (Any, Callable, ClassVar, Dict, List, Optional, Sequence,
                    Tuple)

import keras
from mtssl_tf.utils.lazy_tf import tf


# One held-out batch: (inputs, targets) as NumPy structures.
HeldoutBatch = Tuple[Any, Any]
# One row of the held-out table: (metric, value, chance value, baseline).
HeldoutRow = Tuple[str, float, float, str]


@dataclasses.dataclass(frozen=True)
class PrepareContext:
  """What :meth:`Task.prepare` may use besides the task's own parameters.

  Attributes:
    run_dir: the run folder; a task caches what it computed here, so that a
      resumed run reads it back instead of computing it again.
    log: callable taking one line of text for the run's log.
    write: whether this process writes into ``run_dir`` (False on non-chief
      workers: they compute the same seeded result instead of reading a
      file the chief may be writing).
    data: the run's :class:`~mtssl_tf.config.DataConfig` (opaque to tasks:
      passed back to ``training_statistics``).
    training_statistics: the data layer's statistics over a bounded, seeded
      sample of a run's training images
      (:mod:`mtssl_tf.data.color_statistics`). Tasks sit below the data
      layer, so they never import it; the trainer hands it over.
  """
  run_dir: str
  log: Callable[[str], None] = print
  write: bool = True
  data: Any = None
  training_statistics: Any = None


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
  def trunk_images(self, inputs: Any) -> Any:
    """Batched inputs -> the images [N', H, W, 3] that go through the trunk."""

  @abc.abstractmethod
  def build_head(self) -> keras.layers.Layer:
    """A fresh head: mixed features [N', h, w, C] -> the task's outputs."""

  @abc.abstractmethod
  def loss(self, targets: Any, outputs: Any) -> tf.Tensor:
    """Per-example loss, shape [B] (B = local batch size)."""

  # Whether TensorFlow's AutoGraph converts the task's graph code
  # (``preprocess`` and ``usable`` in ``tf.data``, ``loss`` in the training
  # step) so that Python ``if``/``for`` on tensors work there. A task written
  # with ``tf.cond``/``tf.while_loop`` sets it False: tracing then runs its
  # Python as written, which saves seconds of conversion at the start of
  # every run (the paper's four tasks do).
  autograph: ClassVar[bool] = True

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

  # -- before training -------------------------------------------------------

  @classmethod
  def prepare(cls, params: Dict[str, Any],
              context: PrepareContext) -> Dict[str, Any]:
    """Makes the task's parameters concrete before a run builds the task.

    Called by the trainer for every task of a run, chief and workers, before
    the run's config is compared with a resumed run's and written. Whatever
    the task computes from the training data goes into the returned
    parameters (so ``config.json`` holds it) and may be cached in
    ``context.run_dir``. The default changes nothing.

    Args:
      params: the task's parameters (``config.task_params[name]``; a copy).
      context: a :class:`PrepareContext`.

    Returns:
      The parameters to build the task with: ``params`` itself when nothing
      changes.
    """
    del context
    return params

  @classmethod
  def params_to_check(cls, params: Dict[str, Any]) -> Dict[str, Any]:
    """``params`` as the config validates them (by building the task)
    before :meth:`prepare` has made them concrete: a task whose ``prepare``
    replaces a placeholder value (one its constructor refuses) maps it to a
    value the constructor takes. The default is ``params``."""
    return params

  @classmethod
  def data_problem(cls, data: Any) -> Optional[str]:
    """Why the run's data cannot feed this task, or None (the default).

    Args:
      data: the run's :class:`~mtssl_tf.config.DataConfig`.

    Returns:
      The message of the config error (it names the flags to give).
    """
    del data
    return None

  # -- training step ---------------------------------------------------------

  def xla_incompatibility(self, num_replicas: int) -> Optional[str]:
    """Why this task's step cannot be XLA-compiled, or None when it can.

    Under ``jit_compile`` the trainer compiles each task's forward, loss and
    backward pass; a task that returns a reason here runs uncompiled, and
    the run's log gives the reason.

    Args:
      num_replicas: replicas in sync (some ops, e.g. a cross-replica call
        inside the loss, cannot sit in a compiled function nested in
        ``strategy.run``).
    """
    del num_replicas
    return None

  # -- held-out pretext metrics (mtssl_tf.training.pretext_eval) -----------

  # The key of heldout_scores' result reported first (log line, zoo table);
  # None: the task has no held-out metric and is left out of the evaluation.
  headline_metric: ClassVar[Optional[str]] = None
  # True: each held-out image is scored once (a retrieval over N distinct
  # images); False: passes repeat over the held-out images, drawing new
  # crops and pairs, until the requested number of examples.
  one_pass_heldout: ClassVar[bool] = False
  # True: the task reads frames with motion masks (``example["mask"]``), so
  # the data layer opens a source of motion-mask records for it (training
  # and held out) instead of images.
  reads_motion_masks: ClassVar[bool] = False

  def heldout_scores(self, batches: Sequence[HeldoutBatch],
                     outputs: Sequence[Any]) -> Dict[str, float]:
    """Scores the head's outputs on held-out batches.

    Args:
      batches: the held-out ``(inputs, targets)`` NumPy batches.
      outputs: the model's outputs (NumPy, ``training=False``) on each
        batch's inputs, in the same order.

    Returns:
      ``{metric: value}`` with at least :attr:`headline_metric` and
      ``"chance"`` (the headline's value for a trivial prediction), all
      floats.
    """
    raise NotImplementedError(
        f"task {self.name!r} defines headline_metric but not heldout_scores")

  @classmethod
  def heldout_summary(cls, scores: Dict[str, float]) -> str:
    """The task's part of the held-out log line: ``accuracy=0.312 (chance
    0.125)``."""
    metric = cls.headline_metric
    return f"{metric}={scores[metric]:.3f} (chance {scores['chance']:.3f})"

  @classmethod
  def heldout_table(cls, scores: Dict[str, float]) -> List[HeldoutRow]:
    """The task's rows of the final held-out table: ``(metric, value,
    chance value, baseline)``; by default the headline against ``chance``."""
    metric = cls.headline_metric
    return [(metric, scores[metric], scores["chance"], "chance")]

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"{type(self).__name__}({args})"


def merge_leading_axes(inputs):
  """[B, K, ...] -> [B * K, ...], row-major (item ``k`` of example ``b`` at
  row ``b * K + k``). Keras ops, so that a task's ``trunk_images`` runs under
  any Keras backend; the trailing sizes may be dynamic (TensorFlow graphs)."""
  shape = keras.ops.shape(inputs)
  return keras.ops.reshape(inputs, (-1,) + tuple(shape[2:]))
