"""A fifth self-supervised task that lives in the tests only: rotation
prediction (Gidaris et al., ICLR 2018), a 4-way softmax over 0/90/180/270
degrees.

It is registered through the public registry (``tasks.register_task``) and
shows what adding a task takes: this file, its own specific tests
(``tests/test_rotation_task.py``), and nothing else; the generic checks of
``tests/test_task_contract.py`` pick it up from the registry, and its
held-out metric (4-way accuracy beside chance 1/4, ``heldout_scores``) joins
a run's ``pretext_metrics.json`` like the paper tasks' metrics.
"""
from __future__ import annotations

from typing import Any, Dict

import keras
import numpy as np
import tensorflow as tf

from mtssl_tf import tasks
from mtssl_tf.ops.image import check_min_size, ensure_rgb

NUM_ROTATIONS = 4
# Held-out accuracy of a uniform guess.
CHANCE = 1.0 / NUM_ROTATIONS


@keras.saving.register_keras_serializable(package="mtssl_tf_tests")
class RotationHead(keras.layers.Layer):
  """Features [N, h, w, C] -> logits [N, 4]: mean pooling, one hidden ReLU
  layer, a linear classifier."""

  def __init__(self, hidden_units: int = 32, **kwargs):
    super().__init__(**kwargs)
    if hidden_units < 1:
      raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
    self.hidden_units = int(hidden_units)
    self.hidden = keras.layers.Dense(self.hidden_units, activation="relu",
                                     name="hidden")
    self.logits = keras.layers.Dense(NUM_ROTATIONS, name="logits")

  def build(self, input_shape):
    channels = input_shape[-1]
    self.hidden.build((None, channels))
    self.logits.build((None, self.hidden_units))
    self.built = True

  def call(self, features, training=False):
    del training
    return self.logits(self.hidden(tf.reduce_mean(features, axis=[1, 2])))

  def compute_output_shape(self, input_shape):
    return (input_shape[0], NUM_ROTATIONS)

  def get_config(self):
    return dict(super().get_config(), hidden_units=self.hidden_units)


@tasks.register_task(abbreviation="Rot")
class Rotation(tasks.Task):
  """Predict by how many quarter turns a square crop was rotated.

  Args:
    crop_size: side of the random square crop (the trunk's input).
    hidden_units: width of the head's hidden layer.

  ``preprocess`` -> (rotated crop [S, S, 3] float32, k int32 in 0..3): the
  crop is ``np.rot90(crop, k)`` (counter-clockwise quarter turns).
  """

  name = "rotation"

  def __init__(self, crop_size: int = 32, hidden_units: int = 32):
    if crop_size < 16:
      raise ValueError(f"crop_size must be >= 16 (the trunk's stride), got "
                       f"{crop_size}")
    self.crop_size = int(crop_size)
    self.hidden_units = int(hidden_units)

  def get_config(self) -> Dict[str, Any]:
    return {"crop_size": self.crop_size, "hidden_units": self.hidden_units}

  def preprocess(self, example, seed):
    image = ensure_rgb(example["image"])
    if image.shape.rank != 3:
      raise ValueError(f"rotation takes one image [H, W, C], got shape "
                       f"{image.shape}")
    size = self.crop_size
    image = check_min_size(image, size, size, f"rotation (crop_size={size})")
    crop_seed, turn_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.cast(tf.convert_to_tensor(seed), tf.int64), 2))
    crop = tf.image.stateless_random_crop(image, [size, size, 3],
                                          seed=crop_seed)
    k = tf.random.stateless_uniform([], turn_seed, 0, NUM_ROTATIONS,
                                    dtype=tf.int32)
    return tf.image.rot90(crop, k), k

  def trunk_images(self, inputs):
    return inputs

  def build_head(self) -> RotationHead:
    return RotationHead(self.hidden_units, name="rotation_head")

  def loss(self, targets, outputs):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.int32), logits=tf.cast(outputs, tf.float32))

  def metrics(self, targets, outputs):
    predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
    return {"accuracy": tf.reduce_mean(tf.cast(
        tf.equal(predicted, tf.cast(targets, tf.int32)), tf.float32))}

  # The held-out pretext metric (mtssl_tf.training.pretext_eval).
  headline_metric = "accuracy"

  def heldout_scores(self, batches, outputs):
    labels = np.concatenate([np.asarray(t).reshape(-1) for _, t in batches])
    predicted = np.argmax(np.concatenate(outputs), axis=-1)
    return {"accuracy": float(np.mean(predicted == labels)),
            "chance": CHANCE, "examples": float(len(labels))}

  @classmethod
  def heldout_table(cls, scores):
    return [("4-way accuracy", scores["accuracy"], scores["chance"],
             "uniform guess")]
