"""The ``tf_keras`` side of the bridge: Keras 2 on demand and the eval-lasso
mixer row (:class:`EvalUnitMixer`)."""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from mtssl_tf.evaluation.detection.detector_config import EVAL_TASK


def _tf_keras():
  import tf_keras  # Keras 2: only inside the Model Garden bridge
  return tf_keras


@functools.lru_cache(maxsize=None)
def _eval_unit_mixer_class():
  """The ``tf_keras`` eval-lasso mixer class, made on first use so that
  ``import mtssl_tf`` never imports Keras 2."""
  tf_keras = _tf_keras()

  def unit_norm(w):
    return w / tf.maximum(tf.norm(w), 1e-12)

  class EvalUnitMixer(tf_keras.layers.Layer):
    """One fresh UnitMixer row for the detection task, in ``tf_keras``.

    The same mix as :class:`mtssl_tf.layers.UnitMixer` (Doersch & Zisserman,
    ICCV 2017, Sec. 4.2): ``sum_m alpha_m * unit_m`` with ``alpha``
    projected onto the unit sphere (in the forward pass, and after each
    update by :meth:`project`) and an L1 penalty ``l1 * sum |alpha|``
    (:meth:`penalty`). Initial alpha: all weight on the last unit, so
    training starts from the plain C4 detector.
    """

    def __init__(self, num_units: int, l1: float = 1e-3, **kwargs):
      super().__init__(**kwargs)
      self.num_units = int(num_units)
      self.l1 = float(l1)
      init = np.zeros([self.num_units], np.float32)
      init[-1] = 1.0
      self.alpha_variable = self.add_weight(
          name=f"alpha_{EVAL_TASK}", shape=(self.num_units,),
          initializer=tf_keras.initializers.Constant(init), trainable=True)

    def alpha(self) -> tf.Tensor:
      return unit_norm(self.alpha_variable)

    def penalty(self) -> tf.Tensor:
      return self.l1 * tf.reduce_sum(tf.abs(self.alpha()))

    def project(self) -> None:
      self.alpha_variable.assign(unit_norm(self.alpha_variable))

    def call(self, units):
      if len(units) != self.num_units:
        raise ValueError(f"EvalUnitMixer mixes {self.num_units} units, got "
                         f"{len(units)}")
      alpha = tf.cast(self.alpha(), units[0].dtype)
      return tf.add_n([u * alpha[m] for m, u in enumerate(units)])

    def get_config(self):
      return dict(super().get_config(), num_units=self.num_units,
                  l1=self.l1)

  return EvalUnitMixer
