"""Every task head trains under Keras's mixed-precision policies with XLA.

The trainer builds the model under the run's dtype policy; every head
computes in the policy's compute dtype and returns float32 outputs, which
the losses read. Each head must keep one precision per op in its backward
pass: XLA refuses a graph where a bfloat16 value meets a float32 one ("Seen floating point types of different precisions").
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import tasks as tasks_lib
import harness

FEATURE_SHAPE = (2, 4, 4, 16)


@pytest.fixture(autouse=True)
def _restore_policy():
  before = keras.config.dtype_policy()
  yield
  keras.config.set_dtype_policy(before)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("task_name", sorted(harness.TASK_PARAMS))
def test_head_gradients_compile_with_xla_under_mixed_policy(task_name, policy):
  task = tasks_lib.get_task(task_name, **harness.TASK_PARAMS[task_name])
  keras.config.set_dtype_policy(policy)
  head = task.build_head()
  keras.config.set_dtype_policy("float32")
  compute = head.dtype_policy.compute_dtype
  features = tf.random.stateless_normal(FEATURE_SHAPE, seed=[1, 2])
  features = tf.cast(features, compute)
  head(features, training=True)  # build

  @tf.function(jit_compile=True)
  def grads(x):
    with tf.GradientTape() as tape:
      outputs = head(x, training=True)
      loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(t, tf.float32)))
                       for t in tf.nest.flatten(outputs)
                       if t.dtype.is_floating])
    return tape.gradient(loss, head.trainable_variables)

  values = grads(features)
  assert values and all(g is not None for g in values)
  for variable, gradient in zip(head.trainable_variables, values):
    # Variables stay float32 under a mixed policy; so do their gradients.
    assert variable.dtype == tf.float32, variable.path
    assert np.all(np.isfinite(gradient.numpy())), variable.path


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16",
                                    "mixed_float16"])
@pytest.mark.parametrize("task_name", sorted(harness.TASK_PARAMS))
def test_heads_compute_in_the_policy_dtype_and_return_float32(task_name,
                                                              policy):
  """One rule for every head: its layers compute in the policy's compute
  dtype, its outputs are float32 (Keras's mixed-precision guide keeps a
  model's outputs in float32), and its symbolic output says so."""
  task = tasks_lib.get_task(task_name, **harness.TASK_PARAMS[task_name])
  keras.config.set_dtype_policy(policy)
  head = task.build_head()
  keras.config.set_dtype_policy("float32")
  compute = keras.DTypePolicy(policy).compute_dtype
  features = tf.cast(tf.random.stateless_normal(FEATURE_SHAPE, seed=[1, 2]),
                     compute)
  outputs = head(features, training=False)
  symbolic = head.compute_output_spec(
      keras.KerasTensor(FEATURE_SHAPE, dtype=compute))
  for real, spec in zip(tf.nest.flatten(outputs), tf.nest.flatten(symbolic)):
    assert real.dtype == tf.float32 and spec.dtype == "float32"
    assert tuple(real.shape) == tuple(spec.shape)
  computing = [l for l in head._flatten_layers(include_self=False)
               if l.weights]
  assert computing and all(l.compute_dtype == compute for l in computing), [
      (l.name, l.compute_dtype) for l in computing]
