"""The contract every registered task and every evaluator keeps, checked by
the shared harness (tests/harness.py).

Tasks: the paper's four and every task registered through
``mtssl_tf.tasks.register_task`` (here also the tests' fifth task,
``tests/rotation_task.py``): registry and config, data op eagerly vs inside
``tf.data``, loss and metrics, the held-out metric and XLA hooks, ``.keras``
round trip inside a multi-task model, and a fixed-batch overfit through the
shared trunk and the mixer.

Evaluators: ``run`` yields unique, finite ``<name>/<metric>`` values, leaves
the caller's trunk untouched, and with eval lasso trains a unit-norm mixer
row (``last_alpha``). Detection's run (Model Garden) is checked in
tests/test_detection.py with the same harness check.
"""
import pytest
import tensorflow as tf

import harness
import rotation_task  # noqa: F401  (registers the fifth task)
from mtssl_tf import tasks as tasks_lib
from mtssl_tf.evaluation import get_evaluator
from mtssl_tf.evaluation.depth import METRIC_NAMES
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import Trunk

TASKS = tasks_lib.task_names()


def test_the_registry_holds_the_papers_tasks_and_the_added_one():
  assert TASKS[:4] == tasks_lib.TASK_NAMES == (
      "relative_position", "colorization", "exemplar", "motion_segmentation")
  assert "rotation" in TASKS and tasks_lib.ABBREVIATIONS["rotation"] == "Rot"
  # Registering again is harmless; another class under a taken name is not.
  assert tasks_lib.register_task(rotation_task.Rotation) is \
      rotation_task.Rotation

  class Impostor(rotation_task.Rotation):
    pass

  with pytest.raises(ValueError, match="'rotation' is already registered.*"
                     "rotation_task.Rotation"):
    tasks_lib.register_task(Impostor)
  with pytest.raises(TypeError, match="subclass of mtssl_tf.tasks.Task"):
    tasks_lib.register_task(dict)

  class Nameless(rotation_task.Rotation):
    name = ""

  with pytest.raises(ValueError, match="must set the class attribute `name`"):
    tasks_lib.register_task(Nameless)
  assert tasks_lib.get_task_class("rotation") is rotation_task.Rotation


@pytest.fixture(scope="module")
def models():
  """One tiny MultiTaskModel per task (trunk, UnitMixer, its head), shared
  by the checks that only run it forward."""
  cache = {}

  def get(name):
    if name not in cache:
      cache[name] = MultiTaskModel(trunk=harness.TRUNK,
                                   tasks={name: harness.tiny_params(name)},
                                   mixer={"l1": 1e-3})
    return cache[name]
  return get


@pytest.mark.parametrize("name", TASKS)
def test_registry_and_config(name):
  harness.check_registry(name)


@pytest.mark.parametrize("name", TASKS)
def test_data_op_eager_equals_tf_data(name):
  harness.check_data_op_eager_vs_tf_data(harness.tiny_task(name))


@pytest.mark.parametrize("name", TASKS)
def test_loss_and_metrics_of_the_model_outputs(name, models):
  model = models(name)
  task = model.task_objects[name]
  inputs, targets = harness.batch(task, 4)
  images = task.trunk_images(inputs)
  assert images.shape.rank == 4 and images.shape[-1] == 3
  assert images.dtype == tf.float32
  harness.check_loss_and_metrics(
      task, targets, model(inputs, task=name, training=False), 4)


@pytest.mark.parametrize("name", TASKS)
def test_heldout_metric_and_xla_hooks(name, models):
  model = models(name)
  scores = harness.check_heldout_metric(name, model)
  # The paper's four and the tests' rotation all define a held-out metric.
  headline = model.task_objects[name].headline_metric
  assert headline is not None and {headline, "chance"} <= set(scores), scores


@pytest.mark.parametrize("name", TASKS)
def test_keras_save_load_round_trip(name, models, tmp_path):
  harness.check_head_save_load_roundtrip(name, tmp_path, model=models(name))


@pytest.fixture
def eager_functions():
  """tf.functions run eagerly while the test runs: on the tiny model a
  dozen eager steps cost less than tracing the step twice (once more after
  the optimizer creates its slots); the losses and gradients are the same
  ops'."""
  tf.config.run_functions_eagerly(True)
  try:
    yield
  finally:
    tf.config.run_functions_eagerly(False)


@pytest.mark.slow
@pytest.mark.parametrize("name", TASKS)
def test_overfits_a_fixed_batch(name, eager_functions):
  # 12 Adam steps at 3e-2 bring every task's loss below half its start
  # (colorization, the slowest, to ~0.37 of it; the others below 0.3).
  harness.check_overfits_fixed_batch(name, steps=12, learning_rate=3e-2)


# -- evaluators ----------------------------------------------------------------


def _linear_probe():
  # cache_features=False: the features are recomputed at every step, the
  # path on which a gradient reaches the eval-lasso row.
  return get_evaluator(
      "linear_probe", data="digits", image_size=32, batch_size=64, steps=40,
      max_train_examples=400, max_test_examples=200, cache_features=False)


def _check_linear_probe(values):
  # Chance is 10% (10 balanced digit classes); with 200 test images its
  # standard deviation is 2.1%, so 50% is far outside chance. Random conv
  # features at 32 px keep the digits' layout: the probe reaches ~90%.
  assert values["linear_probe/top1"] > 0.5
  assert values["linear_probe/recall_at_5"] >= values["linear_probe/top1"]


def _depth():
  # A frozen trunk still trains the eval-lasso row and the decoder.
  return get_evaluator(
      "depth", input_size=(32, 32), steps=2, batch_size=2,
      learning_rate=1e-3, decoder_filters=(8, 4), max_test_examples=3,
      log_every=1, source=harness.depth_source(), loss="l1",
      trainable_trunk=False)


def _check_depth(values):
  assert list(values) == [f"depth/{m}" for m in METRIC_NAMES]
  deltas = [values[f"depth/delta{i}"] for i in (1, 2, 3)]
  assert 0.0 <= deltas[0] <= deltas[1] <= deltas[2] <= 1.0


# Each evaluator whose run is cheap on 2 CPU cores: its tiny settings and
# the assertions specific to its metrics.
EVALUATORS = {"linear_probe": (_linear_probe, _check_linear_probe),
              "depth": (_depth, _check_depth)}


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_evaluator_contract_with_eval_lasso(name):
  make, check = EVALUATORS[name]
  trunk = Trunk(**harness.MIXER_TRUNK)
  evaluator = make()
  values, _ = harness.check_evaluator_run(evaluator, trunk, eval_lasso=True)
  harness.check_eval_lasso_row(evaluator.last_alpha, len(trunk.unit_names))
  check(values)
