"""What every downstream evaluator shares: the backbone it evaluates and the
one-method evaluator interface.

Doersch & Zisserman (ICCV 2017) evaluate a pre-trained trunk three ways
(ImageNet linear probe, PASCAL VOC detection, NYU depth). Each evaluator
here is a pluggable object with one method, ``run(backbone)``, that yields
``(metric_name, value)`` pairs (the big_vision pattern).

"Eval lasso" (Table 4): the evaluation task reads a *fresh* UnitMixer row
learned for it, instead of block 3's last unit. With the four combinations
of pre-training with/without lasso and evaluating with/without eval lasso,
this gives Table 4's four rows.
"""
from __future__ import annotations

import abc
from typing import ClassVar, Iterator, Optional, Tuple

import keras
import numpy as np
from mtssl_tf.utils.lazy_tf import tf

from mtssl_tf.layers.unit_mixer import UnitMixer
from mtssl_tf.models.trunk import Trunk


@keras.saving.register_keras_serializable(package="mtssl_tf")
class EvalBackbone(keras.layers.Layer):
  """Images -> block-3 features for an evaluation task.

  Args:
    trunk: a :class:`~mtssl_tf.models.Trunk` (pre-trained or random).
    eval_lasso: learn a fresh UnitMixer row for the evaluation task over all
      block-3 units (needs ``block3_last_stride=1``); otherwise the
      features are block 3's last unit.
    task_name: the name of the evaluation task's mixer row.
    l1: the lasso penalty of the eval row.
    trainable_trunk: whether the trunk is fine-tuned (detection, depth) or
      frozen (linear probe).

  Call: ``backbone(images, training=...)`` with float32 RGB in [0, 255];
  returns [N, h, w, C].
  """

  def __init__(self, trunk: Trunk, eval_lasso: bool = False,
               task_name: str = "eval", l1: float = 1e-3,
               trainable_trunk: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.trunk = trunk
    self.trunk.trainable = bool(trainable_trunk)
    self.eval_lasso = bool(eval_lasso)
    self.task_name = task_name
    self.l1 = float(l1)
    self.trainable_trunk = bool(trainable_trunk)
    self.mixer: Optional[UnitMixer] = None
    if self.eval_lasso:
      if trunk.config.block3_last_stride != 1:
        raise ValueError(
            "eval lasso mixes every block-3 unit, which needs the trunk's "
            "block3_last_stride=1")
      self.mixer = UnitMixer([task_name], num_units=len(trunk.unit_names),
                             l1=l1, init="last", name="eval_mixer")

  @property
  def output_channels(self) -> int:
    return self.trunk.output_channels

  def call(self, images, training=False):
    # A frozen trunk also keeps its batch-norm statistics frozen.
    outputs = self.trunk(images,
                         training=bool(training) and self.trainable_trunk)
    if self.mixer is None:
      return outputs[self.trunk.unit_names[-1]]
    units = [outputs[n] for n in self.trunk.unit_names]
    return self.mixer(units, task=self.task_name)


class Evaluator(abc.ABC):
  """A downstream evaluation: ``run`` yields ``(metric, value)`` pairs."""

  name: ClassVar[str] = ""
  # The eval-lasso mixer row (unit norm, one weight per block-3 unit) that
  # the last ``run(..., eval_lasso=True)`` learned; None otherwise.
  last_alpha: Optional[np.ndarray] = None

  @abc.abstractmethod
  def run(self, trunk: Trunk, *, eval_lasso: bool = False,
          log=print) -> Iterator[Tuple[str, float]]:
    """Trains what the protocol trains on top of ``trunk``, then measures.

    ``trunk`` must not be modified in place when the protocol fine-tunes:
    evaluators clone it (``clone_trunk``) so several evaluations can run on
    one loaded checkpoint.
    """


def clone_trunk(trunk: Trunk) -> Trunk:
  """A copy of ``trunk`` with the same configuration and weights."""
  clone = Trunk.from_config(trunk.get_config())
  clone.set_weights(trunk.get_weights())
  return clone


def check_not_empty(dataset: tf.data.Dataset, what: str) -> None:
  """Raises ``ValueError`` naming ``what`` when ``dataset`` has no element."""
  for _ in dataset.take(1):
    return
  raise ValueError(f"{what} is empty: no examples to evaluate on")
