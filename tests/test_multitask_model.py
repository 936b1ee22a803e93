"""All four heads on one shared trunk, with and without the UnitMixer: shapes,
gradients, saving. The per-task checks (a fixed-batch overfit through the
trunk, a one-task .keras round trip) are in test_task_contract.py."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
from mtssl_tf.models.multitask import MultiTaskModel

# Two block-3 units, so that the mixer really mixes; the tiny task params.
TRUNK = harness.MIXER_TRUNK
TASKS = {n: harness.tiny_params(n) for n in harness.TASK_PARAMS}


@pytest.fixture(scope="module")
def batches():
  return {n: harness.batch(harness.tiny_task(n), 4) for n in TASKS}


@pytest.mark.parametrize("mixer", [None, {"l1": 1e-3, "init": "uniform"}])
def test_four_heads_share_one_trunk(batches, mixer):
  model = MultiTaskModel(trunk=TRUNK, tasks=TASKS, mixer=mixer)
  c = model.trunk.output_channels
  shapes = {"relative_position": (4, 8), "colorization": (4, 2, 2, 313),
            "exemplar": (8, 8), "motion_segmentation": (4, 8, 8, 2)}
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


def test_multitask_model_keras_round_trip(batches, tmp_path):
  model = MultiTaskModel(trunk=TRUNK, tasks=TASKS, mixer={"l1": 1e-3})
  model.mixer.row("exemplar").assign([0.6, 0.8])
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


def test_call_without_a_task_points_to_features(batches):
  model = MultiTaskModel(trunk=TRUNK, tasks={"colorization":
                                             TASKS["colorization"]})
  images = batches["colorization"][0]
  with pytest.raises(ValueError,
                     match=r"task=<one of colorization>.*model\.features"):
    model(images)
  # What the message points to: the deepest unit's map of the images.
  np.testing.assert_allclose(
      model.features(images),
      model.trunk(images)[model.trunk.unit_names[-1]], atol=1e-6)


def test_sublayers_reach_every_weight_and_every_head_batch_norm():
  from mtssl_tf.utils.layers import sublayers
  model = MultiTaskModel(trunk=TRUNK, tasks=TASKS, mixer={"l1": 1e-3})
  found = sublayers(model)
  assert found[0] is model and len({id(l) for l in found}) == len(found)
  # The leaves' weights are exactly the model's weights: nothing missed.
  leaves = [l for l in found if len(sublayers(l)) == 1]
  assert ({id(v) for l in leaves for v in l.weights}
          == {id(v) for v in model.weights})
  assert any(isinstance(l, keras.layers.BatchNormalization) for l in found)
  for task, head in model.heads.items():
    inner = sublayers(head, include_self=False)
    assert inner and head not in inner, task
    assert ({id(v) for l in inner for v in l.weights}
            == {id(v) for v in head.weights}), task
