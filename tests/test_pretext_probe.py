"""Frozen-trunk probes of the self-supervised tasks
(mtssl_tf/evaluation/pretext_probe.py), against cases with a known answer:
constant features score one class's share of the held-out labels (chance up
to sampling noise), a probe trains its head and leaves the trunk untouched,
and every paper task (and the tests' rotation task) is probed through the
task interface alone."""
import numpy as np
import pytest
import tensorflow as tf

import harness
from mtssl_tf.config import DataConfig
from mtssl_tf.data.offline import PIP_PACKAGES, VIDEO_PACKAGES
from mtssl_tf.evaluation.pretext_probe import PretextProbe
from mtssl_tf.models.trunk import Trunk
import rotation_task  # registers the tests' rotation task

PAPER_TASKS = tuple(harness.TASK_PARAMS)
PHOTO_PACKAGES = tuple(p for p in PIP_PACKAGES if p not in VIDEO_PACKAGES)


def _packages(task):
  # Photos only where the task reads no motion masks (decoding the sample
  # videos' frames is most of the data's cost).
  return (PIP_PACKAGES if task == "motion_segmentation" else PHOTO_PACKAGES)


def _config(tmp_path, task, **overrides):
  # A small shuffle buffer.
  kwargs = dict(data=DataConfig(image_size_limit=64, shuffle_buffer=16,
                                offline_packages=_packages(task)),
                pretext_eval_examples=48, batch_size=8, seed=3)
  kwargs.update(overrides)
  return harness.train_config(tmp_path / "probe", (task,), **kwargs)


@pytest.fixture(scope="module")
def rotation_probe(tmp_path_factory):
  """One probe for the module's rotation tests: its held-out and training
  batches are made once and shared by every trunk it runs on."""
  return PretextProbe(_config(tmp_path_factory.mktemp("rotation"),
                              "rotation"),
                      "rotation", steps=5, log=lambda _: None)


def _zero_trunk(**kwargs):
  """A trunk whose every weight is 0: its features are 0 for any image."""
  trunk = Trunk(**kwargs)
  trunk(tf.zeros([1, 32, 32, 3]))
  trunk.set_weights([np.zeros_like(w) for w in trunk.get_weights()])
  return trunk


def _check_one_class_share(probe, scores):
  """Constant features give the head one output for every input: it
  predicts one class, so its accuracy is that class's share of the
  held-out labels, which is chance up to sampling noise."""
  labels = np.concatenate([np.asarray(t).reshape(-1)
                           for _, t in probe.heldout()])
  shares = [float(np.mean(labels == c)) for c in np.unique(labels)] + [0.0]
  assert any(scores["accuracy"] == pytest.approx(s, abs=1e-9)
             for s in shares), (scores, shares)
  # 48+ labels drawn uniformly: a class's share is chance +- 4 s.d.
  chance = scores["chance"]
  sd = np.sqrt(chance * (1 - chance) / len(labels))
  assert abs(scores["accuracy"] - chance) <= 4 * sd + 1e-9, (scores, shares)


def test_constant_features_score_the_share_of_one_class(rotation_probe):
  scores = rotation_probe.evaluate(_zero_trunk(**harness.TRUNK),
                                   log=lambda _: None)
  assert scores["chance"] == pytest.approx(rotation_task.CHANCE)
  _check_one_class_share(rotation_probe, scores)


def test_probe_trains_only_its_head_and_leaves_the_trunk(rotation_probe):
  trunk = Trunk(**harness.MIXER_TRUNK)
  trunk(tf.zeros([1, 32, 32, 3]))
  before = [w.copy() for w in trunk.get_weights()]
  lines = []
  scores = dict(rotation_probe.run(trunk, eval_lasso=True, log=lines.append))
  assert set(scores) >= {"rotation/accuracy", "rotation/chance"}
  for a, b in zip(before, trunk.get_weights()):
    np.testing.assert_array_equal(a, b)  # a copy: exactly the same
  assert trunk.trainable  # restored after the probe
  alpha = rotation_probe.last_alpha
  assert alpha.shape == (len(trunk.unit_names),)
  np.testing.assert_allclose(np.sum(alpha ** 2), 1.0, rtol=1e-5)
  assert any(line.startswith("pretext_probe rotation: accuracy=") and
             line.endswith("after 5 steps with eval lasso") for line in lines)


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_every_paper_task_probes_with_its_metric_and_chance(tmp_path, task):
  lines = []
  # Two steps of 4 from a 4-example shuffle buffer: the head only has to
  # train through the task interface, not to learn.
  probe = PretextProbe(
      _config(tmp_path, task, batch_size=4,
              data=DataConfig(image_size_limit=64, shuffle_buffer=4,
                              offline_packages=_packages(task))),
      task, steps=2, log=lines.append)
  trunk = (_zero_trunk if task == "relative_position" else Trunk)(
      **harness.TRUNK)
  scores = probe.evaluate(trunk, log=lines.append)
  headline = probe.task.headline_metric
  assert np.isfinite(scores[headline]) and np.isfinite(scores["chance"])
  if task == "relative_position":
    assert scores["chance"] == pytest.approx(1 / 8)
    _check_one_class_share(probe, scores)
  assert any(line.startswith(f"pretext_probe {task}: {headline}=")
             for line in lines)


def test_refuses_a_task_it_cannot_score_and_bad_steps(tmp_path):
  config = _config(tmp_path, "rotation")
  with pytest.raises(ValueError, match="unknown task 'no_such_task'"):
    PretextProbe(config, "no_such_task", steps=1)
  with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
    PretextProbe(config, "rotation", steps=0)
