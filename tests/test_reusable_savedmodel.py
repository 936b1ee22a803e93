"""The export as a reusable, fine-tunable SavedModel.

A tiny exported trunk is fine-tuned for a few steps on a toy labelled set
(reddish vs bluish noise images) twice: (a) tf_keras +
``tensorflow_hub.KerasLayer(path, trainable=True)``, the TF Hub convention,
and (b) Keras 3 ``keras.layers.TFSMLayer`` with ``call_inference`` /
``call_training``. Each time: before training the layer equals the eager
Keras trunk (pooled block 3), inference leaves every variable as it was,
training changes the trunk's weights and the batch-norm moving statistics,
and the training loss falls.
"""
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf  # noqa: F401  (registers the Keras classes)
from mtssl_tf.serving import model_export
from mtssl_tf.models.multitask import MultiTaskModel

SIZE = 32
EPOCHS = 6
REG = 0.01


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  keras.utils.set_random_seed(0)
  model = MultiTaskModel(
      trunk={"depth": 14, "width": 0.25},
      tasks={"colorization": {"crop_size": SIZE, "hidden_channels": 8}},
      name="mtssl")
  # The trunk has no regularizers by default; one on the stem's kernel
  # shows how they are exported (regularization_losses).
  model.trunk.get_layer("conv1_conv").kernel.regularizer = (
      keras.regularizers.L2(REG))
  paths = model_export.export_model(model, str(tmp_path_factory.mktemp("hub")),
                                    "tiny", image_size=SIZE)
  return model, paths["saved_model"]


def _l2(model, scale=1.0):
  """NumPy reference of the stem kernel's L2 penalty."""
  kernel = model.trunk.get_layer("conv1_conv").kernel.numpy()
  return REG * np.sum((scale * kernel.astype(np.float64)) ** 2)


def _toy_set(n=8):
  """Labels a linear head cannot read off a random trunk by chance alone:
  class 1 images are reddish, class 0 bluish, both noisy."""
  rng = np.random.default_rng(0)
  labels = np.arange(n) % 2
  images = rng.uniform(0, 120, (n, SIZE, SIZE, 3)).astype(np.float32)
  images[labels == 1, ..., 0] += 120
  images[labels == 0, ..., 2] += 120
  return images, labels.astype(np.int32)


def _eager_pooled(model, images):
  """Reference: the package's Keras trunk, pooled with NumPy."""
  block3 = model.features(tf.constant(images), training=False).numpy()
  return block3.mean(axis=(1, 2))


def _snapshot(variables):
  return [v.numpy().copy() for v in variables]


def _changed(before, variables):
  return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def _is_moving(variable):
  return "moving" in variable.name


def test_saved_model_has_the_reusable_interface(exported):
  model, path = exported
  loaded = tf.saved_model.load(path)
  trunk = model.trunk
  assert len(loaded.variables) == len(trunk.variables)
  assert len(loaded.trainable_variables) == len(trunk.trainable_variables)
  assert sorted(v.shape.as_list() for v in loaded.trainable_variables) == \
      sorted(list(v.shape) for v in trunk.trainable_variables)
  # Only the batch-norm moving statistics are not trainable.
  frozen = [v for v in loaded.variables if not v.trainable]
  assert frozen and all(_is_moving(v) for v in frozen)
  images, _ = _toy_set(2)
  reference = _eager_pooled(model, images)
  for out in (loaded(images), loaded(images, training=False),
              loaded.call_inference(images)):
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-4, atol=1e-4)
  # serving_default is still there and unchanged in meaning.
  assert "serving_default" in loaded.signatures
  # A wrong channel count or dtype is refused by the endpoint's input spec.
  for bad in (tf.zeros([1, SIZE, SIZE, 4]), tf.zeros([1, SIZE, SIZE, 3],
                                                     tf.uint8)):
    given = tf.TensorSpec.from_tensor(bad, name="images")
    want = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    with pytest.raises(TypeError,
                       match=re.escape(f"Can not cast {given} to {want}")):
      loaded.call_inference(bad)
  # A zero-argument function of the restored variable, not a constant.
  assert len(loaded.regularization_losses) == 1
  penalty = loaded.regularization_losses[0]
  np.testing.assert_allclose(penalty().numpy(), _l2(model), rtol=1e-5)
  kernel = model.trunk.get_layer("conv1_conv").kernel.numpy()
  restored = [v for v in loaded.trainable_variables
              if np.array_equal(v.numpy(), kernel)]
  assert len(restored) == 1
  restored[0].assign(2 * kernel)
  np.testing.assert_allclose(penalty().numpy(), _l2(model, 2.0), rtol=1e-5)


def _fine_tune_checks(layer_trainable, layer_frozen, predict, fit,
                      model, images):
  """The shared assertions; ``fit`` returns the per-epoch losses."""
  assert layer_frozen and all(_is_moving(v) for v in layer_frozen)
  np.testing.assert_allclose(predict(images), _eager_pooled(model, images),
                             rtol=1e-4, atol=1e-4)
  trainable0 = _snapshot(layer_trainable)
  frozen0 = _snapshot(layer_frozen)
  predict(images)  # inference: batch norm reads, never writes
  assert not any(_changed(frozen0, layer_frozen))
  assert not any(_changed(trainable0, layer_trainable))
  losses = fit()
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0], losses
  # Fine-tuning reached into the trunk: most weights moved (the last unit's
  # would suffice to move the loss, so "most" shows the gradient flows all
  # the way down), and every moving statistic was updated.
  moved = _changed(trainable0, layer_trainable)
  assert sum(moved) > 0.9 * len(moved), (sum(moved), len(moved))
  assert all(_changed(frozen0, layer_frozen))


def test_tf_hub_keras_layer_fine_tunes(exported):
  import tensorflow_hub as hub  # pinned in requirements.txt
  import tf_keras
  model, path = exported
  tf_keras.utils.set_random_seed(0)
  images, labels = _toy_set()
  layer = hub.KerasLayer(path, trainable=True)
  net = tf_keras.Sequential([
      tf_keras.Input((SIZE, SIZE, 3)), layer, tf_keras.layers.Dense(2)])
  net.compile(tf_keras.optimizers.Adam(1e-3),
              tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  assert len(layer.trainable_weights) == len(model.trunk.trainable_variables)
  # TF Hub adds the exported regularization losses to the layer's losses.
  np.testing.assert_allclose(float(sum(layer.losses)), _l2(model), rtol=1e-5)

  def fit():
    return net.fit(images, labels, batch_size=4, epochs=EPOCHS,
                   shuffle=False, verbose=0).history["loss"]

  _fine_tune_checks(layer.trainable_weights, layer.non_trainable_weights,
                    lambda x: layer(x, training=False).numpy(), fit, model,
                    images)


def test_keras3_tfsm_layer_fine_tunes(exported):
  model, path = exported
  keras.utils.set_random_seed(0)
  images, labels = _toy_set()
  layer = keras.layers.TFSMLayer(path, call_endpoint="call_inference",
                                 call_training_endpoint="call_training",
                                 trainable=True)
  net = keras.Sequential([
      keras.Input((SIZE, SIZE, 3)), layer, keras.layers.Dense(2)])
  # Plain SGD: Keras 3.15's TFSMLayer names its weights after TF's
  # "conv1_conv/kernel:0" keeping the ":", which optimizers with slot
  # variables (Adam, RMSprop, momentum) refuse as a scope name
  # (serving/README.md says so).
  net.compile(keras.optimizers.SGD(0.05),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              jit_compile=False)
  assert len(layer.trainable_weights) == len(model.trunk.trainable_variables)

  def fit():
    return net.fit(images, labels, batch_size=4, epochs=EPOCHS,
                   shuffle=False, verbose=0).history["loss"]

  _fine_tune_checks(layer.trainable_weights, layer.non_trainable_weights,
                    lambda x: layer(x, training=False).numpy(), fit, model,
                    images)


def test_keras3_tfsm_layer_with_adam_fails_as_documented(exported):
  """serving/README.md documents that Keras 3.15's TFSMLayer cannot be
  trained with an optimizer that has slot variables; this fails once Keras
  fixes it, so that the README is updated."""
  _, path = exported
  images, labels = _toy_set(4)
  layer = keras.layers.TFSMLayer(path, call_endpoint="call_inference",
                                 call_training_endpoint="call_training")
  assert any(":" in w.name for w in layer.trainable_weights)
  net = keras.Sequential([
      keras.Input((SIZE, SIZE, 3)), layer, keras.layers.Dense(2)])
  net.compile(keras.optimizers.Adam(1e-3),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              jit_compile=False)
  with pytest.raises(ValueError, match="not a valid scope name"):
    net.fit(images, labels, batch_size=4, epochs=1, verbose=0)
