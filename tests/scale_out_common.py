"""Shared by test_scale_out.py and its worker script: the run's config and
the test examples (ids 0..63, each image a different shift of one photo)."""
import tensorflow as tf

from harness import TASK_PARAMS  # the tiny task parameters of every test
from mtssl_tf.config import OptimizerConfig, TrainConfig
from mtssl_tf.models.trunk import TrunkConfig

NAMES = ("relative_position", "colorization")

def config(run_dir, **kw):
  defaults = dict(
      run_dir=str(run_dir), tasks=NAMES,
      task_params={n: TASK_PARAMS[n] for n in NAMES},
      # Synchronised BN: the batch statistics of 2 workers x 2 examples are
      # those of the union, as in the one-worker reference.
      trunk=TrunkConfig(depth=14, width=0.25, sync_bn=True), lasso=True,
      lasso_l1=1e-2, steps=2, batch_size=4, log_every=2, summary_every=2,
      checkpoint_every=2, plots=False,
      optimizer=OptimizerConfig(name="sgd", learning_rate=0.1))
  defaults.update(kw)
  return TrainConfig(**defaults)


def examples():
  import skimage.data
  image = tf.constant(skimage.data.astronaut()[::4, ::4])

  def make(i):
    return {"image": tf.roll(image, shift=tf.cast(i, tf.int32) * 3, axis=1),
            "id": i}
  return tf.data.Dataset.range(64).map(make)
