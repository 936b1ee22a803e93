"""All four heads on one shared trunk, with and without the UnitMixer: shapes,
an overfit check per task (catches a broken gradient path), saving."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf
from mtssl_tf.models.multitask import MultiTaskModel

TRUNK = {"depth": 26, "width": 0.25}
TASKS = {
    "relative_position": {"patch_size": 16, "gap": 4, "jitter": 2,
                          "rescale_pixels": None, "embedding_units": 32,
                          "hidden_units": [32]},
    "colorization": {"crop_size": 32, "hidden_channels": 16},
    "exemplar": {"num_views": 3, "crop_size": 32, "embedding_dim": 16},
    "motion_segmentation": {"crop_size": 64, "output_size": 8,
                            "hidden_channels": 16},
}


def _image():
  import skimage.data
  return tf.constant(skimage.data.astronaut()[::4, ::4])  # 128x128 RGB


def _mask():
  mask = np.zeros((128, 128), np.uint8)
  mask[40:100, 30:90] = 1
  return tf.constant(mask)


def _batch(task, batch_size=4):
  example = {"image": _image(), "mask": _mask()}
  pairs = [task.preprocess(dict(example, id=tf.constant(i, tf.int64)),
                           tf.constant([i, 11], tf.int64))
           for i in range(batch_size)]
  inputs = tf.stack([p[0] for p in pairs])
  targets = tf.stack([p[1] for p in pairs])
  return inputs, targets


@pytest.fixture(scope="module")
def batches():
  tasks = {n: mtssl_tf.tasks.get_task(n, **c) for n, c in TASKS.items()}
  return {n: _batch(t) for n, t in tasks.items()}


@pytest.mark.parametrize("mixer", [None, {"l1": 1e-3, "init": "uniform"}])
def test_four_heads_share_one_trunk(batches, mixer):
  model = MultiTaskModel(trunk=TRUNK, tasks=TASKS, mixer=mixer)
  c = model.trunk.output_channels
  shapes = {"relative_position": (4, 8), "colorization": (4, 2, 2, 313),
            "exemplar": (12, 16), "motion_segmentation": (4, 8, 8, 2)}
  for name, (inputs, targets) in batches.items():
    out = model(inputs, task=name)
    assert tuple(out.shape) == shapes[name], name
    assert model.task_objects[name].loss(targets, out).shape == (4,)
  # One trunk: every task's gradient reaches the same trunk variables.
  trunk_ids = {id(v) for v in model.trunk.trainable_variables}
  assert len(trunk_ids) == len(model.trunk.trainable_variables)
  with tf.GradientTape(persistent=True) as tape:
    losses = {n: tf.reduce_mean(model.task_objects[n].loss(
        t, model(i, task=n, training=True))) for n, (i, t) in batches.items()}
  for name, loss in losses.items():
    grads = tape.gradient(loss, model.trunk.trainable_variables)
    assert all(g is not None for g in grads), name
    assert float(tf.linalg.global_norm(grads)) > 0, name
  if mixer:
    assert model.mixer.num_units == 2 and c == 256


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_overfits_a_fixed_batch(batches, task):
  keras.utils.set_random_seed(1)
  model = MultiTaskModel(trunk={"depth": 26, "width": 0.25}, tasks=TASKS,
                         mixer={"l1": 1e-4})
  task_obj = model.task_objects[task]
  inputs, targets = batches[task]
  optimizer = keras.optimizers.Adam(3e-3)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(task_obj.loss(
          targets, model(inputs, task=task, training=True)))
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(
        (g, v) for g, v in zip(grads, variables) if g is not None)
    return loss

  losses = [float(step()) for _ in range(60)]
  first, last = np.mean(losses[:3]), np.mean(losses[-3:])
  assert np.isfinite(losses).all()
  assert last < 0.5 * first, (task, losses[:3], losses[-3:])


def test_multitask_model_keras_round_trip(batches, tmp_path):
  model = MultiTaskModel(trunk=TRUNK, tasks=TASKS, mixer={"l1": 1e-3})
  model.mixer._alphas["exemplar"].assign([0.6, 0.8])
  path = str(tmp_path / "mt.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, MultiTaskModel)
  assert loaded.task_names == model.task_names
  for name, (inputs, _) in batches.items():
    np.testing.assert_allclose(loaded(inputs, task=name),
                               model(inputs, task=name), atol=1e-6,
                               err_msg=name)


def test_unknown_task_in_call_lists_the_model_tasks(batches):
  model = MultiTaskModel(trunk=TRUNK, tasks={"colorization":
                                             TASKS["colorization"]})
  with pytest.raises(ValueError, match="its tasks: colorization"):
    model(batches["colorization"][0], task="exemplar")
  with pytest.raises(ValueError, match="known tasks: relative_position"):
    MultiTaskModel(trunk=TRUNK, tasks={"jigsaw": {}})
