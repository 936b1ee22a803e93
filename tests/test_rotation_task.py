"""The tests' fifth task (tests/rotation_task.py): only what is specific to
it. The generic checks (registry, eager vs tf.data, loss contract, .keras
round trip, fixed-batch overfit) run on it through the registry in
tests/test_task_contract.py; here, its own maths against NumPy and a short
multi-task run with a paper task through the Trainer."""
import numpy as np
import pytest
import tensorflow as tf

import harness
from mtssl_tf.training.trainer import Trainer
from rotation_task import Rotation


def _image(size=32, seed=0):
  # Random pixels: no quarter turn maps the image onto itself.
  return np.random.default_rng(seed).integers(0, 256, (size, size, 3),
                                              dtype=np.uint8)


def test_label_is_the_number_of_quarter_turns():
  image = _image()
  task = Rotation(crop_size=32)  # the crop is the whole image
  labels = []
  for s in range(120):
    x, k = task.preprocess({"image": image}, tf.constant([s, 3]))
    turns = [t for t in range(4) if np.array_equal(
        x.numpy(), np.rot90(image, t).astype(np.float32))]
    assert turns == [int(k)], (s, turns, int(k))
    labels.append(int(k))
  counts = np.bincount(labels, minlength=4)
  # 120 draws of 4 equally likely labels: each count is 30 +- 4.7 (1 s.d.).
  assert counts.min() >= 15 and counts.max() <= 45, counts


def test_loss_and_accuracy_against_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 4)).astype(np.float32) * 3
  labels = np.array([0, 1, 2, 3, 2, 0], np.int32)
  task = Rotation()
  shifted = logits - logits.max(1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
  np.testing.assert_allclose(task.loss(labels, logits).numpy(),
                             -log_p[np.arange(6), labels], rtol=1e-5)
  np.testing.assert_allclose(
      float(task.metrics(labels, logits)["accuracy"]),
      np.mean(logits.argmax(1) == labels))


def test_bad_arguments_and_small_images():
  with pytest.raises(ValueError, match="crop_size must be >= 16"):
    Rotation(crop_size=8)
  with pytest.raises(ValueError, match=r"smaller than rotation.*32x32"):
    Rotation().preprocess({"image": np.zeros((20, 40, 3), np.uint8)},
                          tf.constant([0, 1]))


def test_trains_beside_a_paper_task_through_the_trainer(tmp_path, mirrored):
  """A run config, the multi-task model, the trainer's schedule,
  checkpoints and progress lines take the added task like the paper's."""
  names = ("relative_position", "rotation")
  config = harness.train_config(tmp_path / "run", names)
  lines = []
  trainer = Trainer(config, strategy=mirrored(("/cpu:0",)),
                    datasets={n: harness.training_dataset(
                        harness.tiny_task(n)) for n in names},
                    log=lines.append)
  head = trainer.model.heads["rotation"]
  before = [np.array(w) for w in head.weights]
  out = trainer.train()
  assert out["steps_run"] == 4
  assert int(trainer.task_steps["rotation"].numpy()) == 2
  assert int(trainer.task_steps["relative_position"].numpy()) == 2
  after = [np.array(w) for w in head.weights]
  assert all(np.isfinite(w).all() for w in after)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  assert any("rotation=" in line for line in lines if line.startswith("step "))
  assert (tmp_path / "run" / "checkpoints" / "checkpoint").exists()


def test_heldout_accuracy_against_numpy_and_its_chance():
  task = Rotation()
  rng = np.random.default_rng(2)
  labels = [rng.integers(0, 4, 5), rng.integers(0, 4, 3)]
  logits = [rng.normal(size=(5, 4)), rng.normal(size=(3, 4))]
  batches = [(None, t) for t in labels]
  scores = task.heldout_scores(batches, logits)
  want = np.mean(np.concatenate(logits).argmax(1) == np.concatenate(labels))
  assert scores["accuracy"] == pytest.approx(want, abs=1e-12)
  assert scores["chance"] == 0.25 and scores["examples"] == 8
  oracle = [np.eye(4)[t] for t in labels]
  assert task.heldout_scores(batches, oracle)["accuracy"] == 1.0


def test_run_writes_the_added_tasks_heldout_metric(tmp_path, mirrored):
  """Through the generic interface only (headline_metric, heldout_scores,
  heldout_table): the trainer's held-out evaluation scores the added task
  beside relative position, in the log, its table and
  pretext_metrics.json."""
  import json
  names = ("relative_position", "rotation")
  config = harness.train_config(tmp_path / "run", names,
                                pretext_eval_every=4,
                                pretext_eval_examples=8)
  lines = []
  trainer = Trainer(config, strategy=mirrored(("/cpu:0",)),
                    datasets={n: harness.training_dataset(
                        harness.tiny_task(n)) for n in names},
                    log=lines.append)
  out = trainer.train()
  metrics = json.loads((tmp_path / "run" / "pretext_metrics.json").read_text())
  assert out["pretext_metrics"] == metrics
  assert set(metrics) == set(names)
  rotation = metrics["rotation"]
  assert rotation["step"] == 4 and rotation["chance"] == 0.25
  assert rotation["examples"] == 8  # two batches of 4 held-out crops
  assert 0.0 <= rotation["accuracy"] <= 1.0
  assert metrics["relative_position"]["chance"] == 0.125
  line = next(l for l in lines if l.startswith("held-out @ step 4"))
  assert "rotation accuracy=" in line and "(chance 0.250)" in line
  table = next(l for l in lines if l.startswith("held-out pretext metrics"))
  assert "4-way accuracy" in table and "8-way accuracy" in table


def test_a_task_without_heldout_metric_is_left_out_with_one_line(
    monkeypatch):
  from mtssl_tf.config import TrainConfig
  from mtssl_tf.training import pretext_eval
  monkeypatch.setattr(Rotation, "headline_metric", None)
  config = TrainConfig(run_dir="r", tasks=("relative_position", "rotation"),
                       task_params={}, pretext_eval_every=10)
  sources, notes = pretext_eval.heldout_sources(config, log=lambda l: None)
  assert set(sources) == {"relative_position"}
  assert notes == ["rotation: the task defines no held-out metric "
                   "(Task.headline_metric, Task.heldout_scores)"]
  lines = []
  alone = TrainConfig(run_dir="r", tasks=("rotation",), task_params={},
                      pretext_eval_every=10)
  assert pretext_eval.from_config(alone, model=None, log=lines.append) is None
  assert sum("rotation" in l for l in lines) == 1, lines
