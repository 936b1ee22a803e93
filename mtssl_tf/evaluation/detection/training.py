"""The detector's fine-tuning loop (SGD + momentum on Model Garden's losses)."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import tensorflow as tf

from mtssl_tf.evaluation.detection.mixer import _tf_keras
from mtssl_tf.utils.progress import Progress


def fine_tune(detector, dataset: tf.data.Dataset, steps: int, *,
              learning_rate: float = 1e-3, lr_drop_steps: Sequence[int] = (),
              momentum: float = 0.9, weight_decay: float = 1e-4,
              clip_norm: Optional[float] = 10.0, log=print,
              log_every: int = 100) -> List[float]:
  """Fine-tunes the whole detector with SGD + momentum.

  Args:
    detector: a :class:`~mtssl_tf.evaluation.detection.FasterRCNN` (its
      ``model``, ``mixer``, ``losses`` and ``alpha``).
    dataset: batches from its ``train_dataset``.
    steps: training steps.
    learning_rate: initial rate, divided by 10 at each of
      ``lr_drop_steps``.
    weight_decay: L2 on conv/dense kernels (``wd * sum(w^2) / 2``).
    clip_norm: global gradient-norm clip (None: off); protects the first
      steps of a randomly initialised head.

  Returns:
    The total loss of every step.
  """
  tf_keras = _tf_keras()
  boundaries = sorted(int(s) for s in lr_drop_steps)
  values = [learning_rate * 0.1 ** k for k in range(len(boundaries) + 1)]
  schedule = (tf_keras.optimizers.schedules.PiecewiseConstantDecay(
      boundaries, values) if boundaries else learning_rate)
  optimizer = tf_keras.optimizers.SGD(schedule, momentum=momentum,
                                      global_clipnorm=clip_norm)
  model = detector.model
  variables = model.trainable_variables
  decayed = [v for v in variables if "kernel" in v.name]
  mixer = detector.mixer
  # Slots made now, not in the step's first call (a tf.function that makes
  # variables is traced twice).
  optimizer.build(variables)

  @tf.function
  def step(images, labels):
    with tf.GradientTape() as tape:
      outputs = model(images, image_shape=labels["image_info"][:, 1, :],
                      anchor_boxes=labels["anchor_boxes"],
                      gt_boxes=labels["gt_boxes"],
                      gt_classes=labels["gt_classes"], training=True)
      losses = detector.losses(outputs, labels)
      total = losses["total_loss"]
      if weight_decay and decayed:
        total += weight_decay * tf.add_n([tf.nn.l2_loss(v)
                                          for v in decayed])
      if mixer is not None:
        # The eval-lasso row's L1 penalty (its alpha is not a kernel).
        total += mixer.penalty()
    grads = tape.gradient(total, variables)
    optimizer.apply_gradients(zip(grads, variables))
    if mixer is not None:
      mixer.project()   # back onto sum alpha^2 = 1
    return losses

  history = []
  progress = Progress("detection", steps, log or (lambda _: None),
                      log_every if log else 0)
  for i, (images, labels) in enumerate(dataset.take(steps)):
    losses = step(images, labels)
    total = float(losses["total_loss"])
    if not math.isfinite(total):
      raise FloatingPointError(
          f"detection fine-tuning: non-finite loss at step {i}: "
          f"{ {k: float(v) for k, v in losses.items()} }")
    history.append(total)
    if log and ((i + 1) % log_every == 0 or i + 1 == steps):
      progress.update(i + 1, ", ".join(
          f"{k}={float(v):.4f}" for k, v in sorted(losses.items())))
  if log and mixer is not None:
    log("detection eval-lasso alpha: " + " ".join(
        f"{a:.3f}" for a in detector.alpha()))
  return history
