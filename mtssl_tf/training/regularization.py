"""Weight decay: the L2 penalty of TF-Slim's ``resnet_arg_scope``.

Doersch & Zisserman (ICCV 2017) built their ResNet-101 v2 inside TF-Slim's
``resnet_utils.resnet_arg_scope``, whose ``weight_decay=0.0001`` puts
``slim.l2_regularizer(weight_decay)`` on the ``weights`` of every
``slim.conv2d`` (and ``slim.fully_connected`` built under the same scope);
biases, batch-norm parameters and the moving statistics get none. Slim's
regularizer is ``weight_decay * tf.nn.l2_loss(w) = weight_decay * sum(w**2)
/ 2``, summed into the total loss, so its gradient is ``weight_decay * w``.

Here the same penalty covers the kernels of every ``Conv2D`` and ``Dense``
layer of the trunk and the heads (variables named ``kernel``). Excluded:
biases, batch-norm ``gamma``/``beta`` (and the non-trainable moving
statistics), and the UnitMixer's lasso ``alpha`` vectors, whose own L1 penalty
and unit-norm constraint make a second penalty meaningless.

Example:
  >>> decayed = decayed_variables(model.trainable_variables)
  >>> loss = task_loss + l2_penalty(model.trainable_variables, 1e-4)
"""
from __future__ import annotations

from typing import Iterable, List

import tensorflow as tf

# Keras 3 names a Conv*/Dense layer's weight matrix "kernel" (Conv2D, Dense,
# Conv2DTranspose, Conv1D/3D); biases are "bias", batch norm "gamma"/"beta",
# the UnitMixer's rows "alpha_<task>".
DECAYED_NAMES = ("kernel",)


def _short_name(variable) -> str:
  # Keras 3 Variables: .name is the last path component ("kernel");
  # tf.Variables: "dense/kernel:0".
  name = getattr(variable, "name", "")
  return name.split("/")[-1].split(":")[0]


def decayed_variables(variables: Iterable) -> List:
  """The variables weight decay applies to: conv and dense kernels.

  Args:
    variables: e.g. ``model.trainable_variables``.

  Returns:
    Those named ``kernel``, in the given order (no duplicates).
  """
  seen, out = set(), []
  for v in variables:
    if _short_name(v) in DECAYED_NAMES and id(v) not in seen:
      seen.add(id(v))
      out.append(v)
  return out


def l2_penalty(variables: Iterable, weight_decay: float) -> tf.Tensor:
  """Slim's weight decay over the conv and dense kernels in ``variables``.

  Args:
    variables: trainable variables (others than kernels are ignored).
    weight_decay: the decay (Slim's ``resnet_arg_scope`` default and the
      paper configs: 1e-4); 0 turns it off.

  Returns:
    A float32 scalar ``weight_decay * sum_k sum(k**2) / 2`` over the kernels
    ``k`` (``tf.nn.l2_loss``, as ``slim.l2_regularizer``); its gradient is
    ``weight_decay * k``. Exactly 0 (no ops on the variables) when
    ``weight_decay`` is 0.

  Raises:
    ValueError: ``weight_decay`` is negative or not finite.
  """
  weight_decay = float(weight_decay)
  if not weight_decay >= 0 or weight_decay == float("inf"):
    raise ValueError(f"weight_decay={weight_decay!r} must be a finite "
                     "number >= 0")
  kernels = decayed_variables(variables)
  if weight_decay == 0 or not kernels:
    return tf.constant(0.0)
  return weight_decay * tf.add_n(
      [tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])


__all__ = ["DECAYED_NAMES", "decayed_variables", "l2_penalty"]
