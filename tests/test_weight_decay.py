"""Weight decay (paper-fidelity issue, item 4): Slim's L2 penalty on conv and
dense kernels, checked against NumPy; BN, biases and lasso alphas excluded;
the trainer applies it; the paper configs set 1e-4."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.utils.layers import sublayers
from mtssl_tf.training import regularization
from mtssl_tf import tasks as tasks_lib
from mtssl_tf.config import ConfigError, OptimizerConfig, TrainConfig
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.training.trainer import Trainer

RP = {"patch_size": 16, "gap": 4, "jitter": 2, "rescale_pixels": None,
      "embedding_units": 16, "hidden_units": (16,)}
COL = {"crop_size": 32, "hidden_channels": 8}


def _model():
  return MultiTaskModel(
      trunk=TrunkConfig(depth=14, width=0.25).to_dict(),
      tasks={"relative_position": RP, "colorization": COL},
      mixer={"l1": 1e-3, "init": "uniform"})


def _layers(model):
  # Every layer, nested ones included (heads hold their own layers).
  return sublayers(model, include_self=False)


def test_penalty_equals_numpy_over_conv_and_dense_kernels_only():
  model = _model()
  model(tf.zeros([1, 16, 16, 3]), task="colorization")
  layers = _layers(model)
  kernels = [l.kernel for l in layers
             if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
  assert len(kernels) > 10 and any(
      isinstance(l, keras.layers.Dense) for l in layers)
  rng = np.random.default_rng(0)
  for v in model.trainable_variables:
    v.assign(rng.normal(0, 0.3, v.shape).astype(np.float32))
  wd = 3e-3
  want = wd * sum(0.5 * np.sum(np.asarray(k, np.float64) ** 2)
                  for k in kernels)
  got = float(regularization.l2_penalty(model.trainable_variables, wd))
  assert got == pytest.approx(want, rel=1e-5)
  # Exactly the kernels, nothing else.
  decayed = {id(v) for v in regularization.decayed_variables(
      model.trainable_variables)}
  assert decayed == {id(k) for k in kernels}
  excluded = [w for l in layers
              if isinstance(l, keras.layers.BatchNormalization)
              for w in (l.gamma, l.beta, l.moving_mean, l.moving_variance)]
  excluded += [l.bias for l in layers if getattr(l, "bias", None) is not None]
  excluded += list(model.mixer.trainable_variables)
  assert len(model.mixer.trainable_variables) == 2
  assert not decayed & {id(v) for v in excluded}
  # Its gradient is weight_decay * kernel, and none for excluded variables.
  with tf.GradientTape() as tape:
    penalty = regularization.l2_penalty(model.trainable_variables, wd)
  grads = tape.gradient(penalty, model.trainable_variables)
  for v, g in zip(model.trainable_variables, grads):
    if id(v) in decayed:
      np.testing.assert_allclose(g, wd * np.asarray(v), rtol=1e-5,
                                 atol=1e-9)
    else:
      assert g is None, v.path


def test_zero_and_bad_weight_decay():
  model = _model()
  assert float(regularization.l2_penalty(model.trainable_variables, 0.0)) \
      == 0.0
  for bad in (-1e-4, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="weight_decay"):
      regularization.l2_penalty(model.trainable_variables, bad)
    with pytest.raises(ConfigError, match="weight_decay"):
      TrainConfig(run_dir="x", tasks=("relative_position",), task_params={},
                  weight_decay=bad)


def _datasets():
  import skimage.data
  image = tf.constant(skimage.data.astronaut()[::4, ::4])
  task = tasks_lib.get_task("relative_position", **RP)
  make = lambda i: task.preprocess({"image": image, "id": i},
                                   tf.stack([i, tf.constant(5, tf.int64)]))
  return {"relative_position":
          tf.data.Dataset.range(10**6).map(make).batch(2)}


def test_trainer_step_adds_weight_decay_times_kernel(tmp_path, mirrored):
  """One SGD step with decay minus the same step without it is
  -lr * wd * w0 on every kernel and 0 on every other variable."""
  lr, wd = 0.1, 0.05
  results = []
  for decay in (0.0, wd):
    config = TrainConfig(
        run_dir=str(tmp_path / f"wd{decay}"), tasks=("relative_position",),
        task_params={"relative_position": RP},
        trunk=TrunkConfig(depth=14, width=0.25), lasso=True, lasso_l1=1e-2,
        lasso_init="uniform", update="every_step", weight_decay=decay,
        steps=1, batch_size=2, log_every=1, summary_every=1,
        checkpoint_every=1, plots=False,
        optimizer=OptimizerConfig(name="sgd", learning_rate=lr))
    trainer = Trainer(config, strategy=mirrored(("/cpu:0",)),
                      datasets=_datasets(), log=lambda s: None)
    variables = trainer.model.trainable_variables
    before = [np.array(v) for v in variables]
    kernels = {id(v) for v in regularization.decayed_variables(variables)}
    trainer.train()
    results.append([np.array(v) for v in variables])
  checked = 0
  for v, w0, plain, decayed in zip(variables, before, *results):
    if id(v) in kernels:
      np.testing.assert_allclose(decayed - plain, -lr * wd * w0, rtol=1e-3,
                                 atol=1e-6, err_msg=v.path)
      checked += 1
    else:
      # Biases, BN and the lasso row: the same gradient in both runs.
      np.testing.assert_allclose(decayed, plain, atol=1e-6, err_msg=v.path)
  assert checked == len(kernels) > 10
