"""Shared by test_scale_out.py and its worker script: the run's config and
the test examples (ids 0..63, each image a different shift of one photo)."""
import tensorflow as tf

from harness import train_config  # the tiny run of every test
from harness import uniform_prior_params

NAMES = ("relative_position", "colorization")


def config(run_dir, **kw):
  """harness.train_config for NAMES, 2 steps. Its trunk has synchronised BN:
  the batch statistics of 2 workers x 2 examples are those of the union, as
  in the one-worker reference."""
  kw.setdefault("steps", 2)
  # No test here reads colorization's prior: a given one saves computing it
  # from the offline images in each worker and in the reference.
  kw.setdefault("task_params", uniform_prior_params(NAMES))
  return train_config(run_dir, NAMES, **kw)


def examples():
  import skimage.data
  image = tf.constant(skimage.data.astronaut()[::4, ::4])

  def make(i):
    return {"image": tf.roll(image, shift=tf.cast(i, tf.int32) * 3, axis=1),
            "id": i}
  return tf.data.Dataset.range(64).map(make)
