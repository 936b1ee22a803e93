"""Held-out pretext metrics: does each self-supervised task learn?

Training losses are measured on the batches being trained on; they cannot
tell learning from memorising a few dozen images. This module measures every
task on images (and videos) that training never sees, each beside the score
of a trivial prediction:

=====================  ============================  ===========================
task                   metric                        chance / baseline
=====================  ============================  ===========================
relative position      8-way accuracy                1/8 = 0.125
colorization           top-5 accuracy of the ab bin  the prior's 5 most likely
                       (per pixel); AuC of the       bins; every pixel given the
                       per-pixel ab error curve      prior's mode (``chance``,
                       (Zhang et al., ECCV 2016)     ``chance_auc``)
exemplar               view-retrieval top-1 among    1/N
                       N held-out images
motion segmentation    IoU of the moving class       the all-static prediction
                                                     (IoU 0); the all-moving
                                                     one beside it
=====================  ============================  ===========================

The AuC (Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016,
Sec. 3.1): for thresholds t = 0, 1, ..., 150 the fraction of pixels whose
predicted ab lies within Euclidean distance t of the true ab, integrated over
t (trapezoid rule) and divided by 150, so 1.0 is perfect. The prediction is
the task's annealed-mean decode (T = 0.38). The colorization prior is the
task's empirical prior when it has one; a task trained without one (uniform)
is compared with the held-out pixels' own bin distribution, a baseline that
knows the held-out colours (so beating it is conservative).

Exemplar retrieval: every held-out image gives K augmented views; for each
ordered pair of views (a, b), a != b, view a of image i queries the views b
of all N images (cosine similarity of the L2-normalised embeddings) and is
right when its nearest is image i; the score is the mean over pairs.

:class:`PretextEvaluator` materialises the held-out inputs once (fixed seeds,
so every evaluation of a run sees exactly the same crops, pairs and views)
and is called by the trainer every ``pretext_eval_every`` steps and at the
end; results go to the log, TensorBoard (``pretext/<task>/<metric>``),
``history.jsonl`` (records ``{"step", "task", "pretext": {...}}``) and, at
the end, ``<run_dir>/pretext_metrics.json`` as
``{task: {metric: value, ..., "chance": value, "step": N}}`` plus a table in
the log.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

RP_CHANCE = 1.0 / 8.0
AUC_MAX_THRESHOLD = 150
# Held-out video frames for evaluation: every 10th frame (every 2nd would
# give near-duplicate queries and inflate N for retrieval).
EVAL_FRAME_STRIDE = 10
# The metric reported first for each task (the table's and the log's).
HEADLINE = {"relative_position": "accuracy", "colorization": "top5_accuracy",
            "exemplar": "top1", "motion_segmentation": "iou"}
JSON_NAME = "pretext_metrics.json"
# Tasks scored on each held-out image once (exemplar retrieval: N distinct
# images); the others draw pairs and crops over repeated passes.
ONE_PASS_TASKS = frozenset({"exemplar"})


# -- metrics (NumPy) ----------------------------------------------------------

def rp_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of pairs whose arg-max class is the label. logits [N, 8]."""
  logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
  if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
    raise ValueError(f"logits [N, C] and labels [N] expected, got "
                     f"{logits.shape} and {labels.shape}")
  return float(np.mean(np.argmax(logits, axis=-1) == labels))


def top_k_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """Per position, whether ``labels`` is among the ``k`` highest ``scores``.

  Args:
    scores: [..., Q] (logits, or a prior broadcast to the positions).
    labels: [...] ints in [0, Q).
    k: 1 <= k <= Q.

  Ties count against the label (the label must be strictly inside the top
  k under a stable ordering), so a constant score cannot look perfect.
  """
  scores, labels = np.asarray(scores), np.asarray(labels)
  if not 1 <= k <= scores.shape[-1]:
    raise ValueError(f"k={k} must be in [1, {scores.shape[-1]}]")
  label_score = np.take_along_axis(scores, labels[..., None], -1)
  above = np.sum(scores > label_score, axis=-1)
  # Equal scores before the label (by index) take places ahead of it.
  ties_before = np.sum((scores == label_score) & (
      np.arange(scores.shape[-1]) < labels[..., None]), axis=-1)
  return above + ties_before < k


def ab_error_curve(pred_ab: np.ndarray, true_ab: np.ndarray,
                   max_threshold: int = AUC_MAX_THRESHOLD) -> np.ndarray:
  """Fraction of pixels within distance t of the true ab, t = 0..max."""
  errors = np.linalg.norm(
      np.asarray(pred_ab, np.float64) - np.asarray(true_ab, np.float64),
      axis=-1).reshape(-1)
  if errors.size == 0:
    raise ValueError("no pixels to score")
  errors = np.sort(errors)
  thresholds = np.arange(max_threshold + 1, dtype=np.float64)
  return np.searchsorted(errors, thresholds, side="right") / errors.size


def curve_auc(curve: np.ndarray) -> float:
  """Area under an :func:`ab_error_curve` (thresholds 0..len - 1), divided
  by its largest threshold, so in [0, 1]."""
  curve = np.asarray(curve, np.float64)
  area = np.sum((curve[1:] + curve[:-1]) / 2.0)  # trapezoid, unit spacing
  return float(area / (len(curve) - 1))


def ab_error_auc(pred_ab: np.ndarray, true_ab: np.ndarray,
                 max_threshold: int = AUC_MAX_THRESHOLD) -> float:
  """Zhang et al.'s AuC: area under :func:`ab_error_curve`, in [0, 1]."""
  return curve_auc(ab_error_curve(pred_ab, true_ab, max_threshold))


def retrieval_top1(embeddings: np.ndarray) -> float:
  """View-retrieval top-1 of [N, K, D] embeddings (see the module doc)."""
  emb = np.asarray(embeddings, np.float64)
  if emb.ndim != 3 or emb.shape[1] < 2:
    raise ValueError(f"embeddings [N images, K >= 2 views, D] expected, got "
                     f"{emb.shape}")
  emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
  n, k = emb.shape[:2]
  scores = []
  for a in range(k):
    for b in range(k):
      if a != b:
        similarity = emb[:, a] @ emb[:, b].T  # [query image, gallery image]
        scores.append(np.mean(np.argmax(similarity, axis=1) == np.arange(n)))
  return float(np.mean(scores))


def binary_iou(pred: np.ndarray, truth: np.ndarray) -> float:
  """IoU of the positive (moving) class over all pixels given (pooled, not
  a mean over images); 1.0 when both are empty."""
  pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
  if pred.shape != truth.shape:
    raise ValueError(f"prediction {pred.shape} and truth {truth.shape} "
                     "differ in shape")
  union = np.sum(pred | truth)
  return 1.0 if union == 0 else float(np.sum(pred & truth) / union)


# -- per-task scoring of model outputs -------------------------------------

def _score_relative_position(task, batches, outputs) -> Dict[str, float]:
  del task
  labels = np.concatenate([np.asarray(t).reshape(-1) for _, t in batches])
  logits = np.concatenate(outputs)
  return {"accuracy": rp_accuracy(logits, labels), "chance": RP_CHANCE,
          "examples": float(len(labels))}


def _score_colorization(task, batches, outputs) -> Dict[str, float]:
  from mtssl_tf.tasks import colorization  # pylint: disable=g-import-not-at-top
  hits, pred_ab, true_ab, true_bins = [], [], [], []
  for (_, targets), logits in zip(batches, outputs):
    logits = tf.constant(logits)
    ab, _, logits = task.targets_at(targets, logits)
    bins = colorization.nearest_bin(ab, task.bins).numpy()
    hits.append(top_k_hits(logits.numpy(), bins, 5).reshape(-1))
    pred_ab.append(task.decode(logits).numpy().reshape(-1, 2))
    true_ab.append(ab.numpy().reshape(-1, 2))
    true_bins.append(bins.reshape(-1))
  pred_ab, true_ab = np.concatenate(pred_ab), np.concatenate(true_ab)
  true_bins = np.concatenate(true_bins)
  prior = task.prior
  if prior is None:
    # No training prior: the held-out pixels' own distribution (an oracle
    # baseline, see the module doc).
    prior = np.bincount(true_bins, minlength=len(task.bins)).astype(float)
  prior = np.asarray(prior, np.float64)
  prior_hits = top_k_hits(np.broadcast_to(prior, (len(true_bins),
                                                  len(prior))), true_bins, 5)
  mode_ab = np.broadcast_to(np.asarray(task.bins)[np.argmax(prior)],
                            true_ab.shape)
  return {"top5_accuracy": float(np.mean(np.concatenate(hits))),
          "auc": ab_error_auc(pred_ab, true_ab),
          "chance": float(np.mean(prior_hits)),
          "chance_auc": ab_error_auc(mode_ab, true_ab),
          "pixels": float(len(true_bins))}


def _score_exemplar(task, batches, outputs) -> Dict[str, float]:
  k = task.num_views
  embeddings = np.concatenate(
      [np.asarray(o).reshape(-1, k, np.asarray(o).shape[-1])
       for o in outputs])
  n = embeddings.shape[0]
  return {"top1": retrieval_top1(embeddings), "chance": 1.0 / n,
          "images": float(n)}


def _score_motion_segmentation(task, batches, outputs) -> Dict[str, float]:
  del task
  truth = np.concatenate([np.asarray(t) for _, t in batches]).astype(bool)
  pred = np.concatenate([np.argmax(o, axis=-1) for o in outputs]) == 1
  static = np.zeros_like(truth)
  return {"iou": binary_iou(pred, truth),
          "chance": binary_iou(static, truth),
          "iou_all_moving": binary_iou(np.ones_like(truth), truth),
          "pixel_accuracy": float(np.mean(pred == truth)),
          "pixel_accuracy_all_static": float(np.mean(~truth)),
          "examples": float(len(truth))}


SCORERS: Dict[str, Callable[..., Dict[str, float]]] = {
    "relative_position": _score_relative_position,
    "colorization": _score_colorization,
    "exemplar": _score_exemplar,
    "motion_segmentation": _score_motion_segmentation,
}


# -- held-out inputs -------------------------------------------------------

Batch = Tuple[Any, Any]


def materialize(task, source, *, examples: int, batch_size: int,
                seed: int = 0) -> List[Batch]:
  """Fixed held-out ``(inputs, targets)`` NumPy batches of ``task``.

  Exemplar makes at most one pass (each held-out image at most once: N
  distinct images, about ``examples`` at most); the other tasks make
  further passes over the source (new crops and pairs) until ``examples``
  examples are made.

  Raises:
    ValueError: every held-out image is smaller than the task needs.
  """
  from mtssl_tf.data import pipeline  # pylint: disable=g-import-not-at-top

  def batches_of(dataset):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset]

  one_pass = task.name in ONE_PASS_TASKS
  # A repeated dataset whose every image is filtered out (too small for the
  # task) would never end: check the (cheap, undecoded-crop) source first.
  need = pipeline.task_min_image_size(task)
  dataset = getattr(source, "dataset", source)
  if not any(min(e["image"].shape[:2]) >= need for e in dataset):
    raise ValueError(
        f"no held-out examples for {task.name}: every image of "
        f"{getattr(source, 'description', source)} is smaller than the "
        f"{need} px the task needs")
  batches = pipeline.task_dataset(
      task, source, batch_size=batch_size, seed=seed, deterministic=True,
      shuffle_buffer=1, repeat=not one_pass, drop_remainder=False)
  # Exemplar: at most ``examples`` distinct images (a TFDS validation split
  # has 50,000). Others: each example's seed folds in its index after
  # repeat, so every pass over the held-out images draws new crops and pairs.
  return batches_of(batches.take(math.ceil(examples / batch_size)))


class PretextEvaluator:
  """Scores a multi-task model's heads on fixed held-out inputs.

  Example:
    >>> evaluator = PretextEvaluator(model, {"relative_position": batches})
    >>> evaluator.evaluate(step=100)
    {'relative_position': {'accuracy': 0.31, 'chance': 0.125, ...,
     'step': 100}}

  Args:
    model: a :class:`~mtssl_tf.models.MultiTaskModel` (called with
      ``training=False``).
    heldout: task -> list of ``(inputs, targets)`` batches
      (:func:`materialize`).
    description: what was held out, for the log.
  """

  def __init__(self, model, heldout: Dict[str, List[Batch]],
               description: str = ""):
    unknown = sorted(set(heldout) - set(SCORERS))
    if unknown:
      raise ValueError(f"no held-out metric for tasks {unknown}; known: "
                       f"{', '.join(SCORERS)}")
    self.model = model
    self.heldout = dict(heldout)
    self.description = description
    self._forward = {
        t: tf.function(lambda x, t=t: model(x, task=t, training=False),
                       reduce_retracing=True) for t in self.heldout}

  def evaluate(self, step: int) -> Dict[str, Dict[str, float]]:
    """``{task: {metric: value, ..., "chance": value, "step": step}}``."""
    results = {}
    for name, batches in self.heldout.items():
      outputs = [self._forward[name](tf.constant(inputs)).numpy()
                 for inputs, _ in batches]
      scores = SCORERS[name](self.model.task_objects[name], batches, outputs)
      results[name] = {**scores, "step": int(step)}
    return results

  def run(self, step: int, *, writer=None, history=None,
          log: Callable[[str], None] = print, run_dir: Optional[str] = None
          ) -> Dict[str, Dict[str, float]]:
    """Evaluates and reports: a log line, TensorBoard scalars under
    ``pretext/``, one ``history`` record per task; with ``run_dir`` (the
    final evaluation) also ``pretext_metrics.json`` and the summary table."""
    results = self.evaluate(step)
    log(format_line(step, results))
    if writer is not None:
      with writer.as_default(step=step):
        for task, metrics in results.items():
          for metric, value in metrics.items():
            if metric != "step":
              tf.summary.scalar(f"pretext/{task}/{metric}", value)
      writer.flush()
    if history is not None:
      for task, metrics in results.items():
        history.write(json.dumps({"step": int(step), "task": task,
                                  "pretext": metrics}) + "\n")
      history.flush()
    if run_dir is not None:
      write_json(run_dir, results)
      log(format_table(results, self.description))
    return results


def write_json(run_dir: str, results: Dict[str, Dict[str, float]]) -> str:
  path = os.path.join(run_dir, JSON_NAME)
  with open(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  return path


def read_json(run_dir: str) -> Optional[Dict[str, Dict[str, float]]]:
  """``<run_dir>/pretext_metrics.json`` (:func:`write_json`) as a dict;
  None when the run has none (trained without ``--pretext_eval_every``, or
  not a run folder).

  Raises:
    ValueError: a file that is not a ``{task: {metric: value}}`` JSON.
  """
  path = os.path.join(run_dir, JSON_NAME)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      data = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON: {e}") from None
  if not isinstance(data, dict) or not all(
      isinstance(v, dict) for v in data.values()):
    raise ValueError(f"{path}: expected {{task: {{metric: value, ...}}}}")
  return data


def format_line(step: int, results: Dict[str, Dict[str, float]]) -> str:
  """``held-out @ step 100 | relative_position accuracy=0.312 (chance
  0.125) | ...``"""
  parts = []
  for task, m in results.items():
    metric = HEADLINE[task]
    text = f"{task} {metric}={m[metric]:.3f} (chance {m['chance']:.3f})"
    if task == "colorization":
      text += f" auc={m['auc']:.3f} (prior mode {m['chance_auc']:.3f})"
    parts.append(text)
  return f"held-out @ step {step} | " + " | ".join(parts)


def format_table(results: Dict[str, Dict[str, float]],
                 description: str = "") -> str:
  """The run's final table of held-out metrics, chance beside each."""
  rows = []
  for task, m in results.items():
    if task == "relative_position":
      rows.append((task, "8-way accuracy", m["accuracy"], m["chance"],
                   "uniform guess"))
    elif task == "colorization":
      rows.append((task, "top-5 bin accuracy", m["top5_accuracy"],
                   m["chance"], "prior's top 5"))
      rows.append((task, "AuC ab error (0-150)", m["auc"], m["chance_auc"],
                   "prior's mode"))
    elif task == "exemplar":
      rows.append((task, f"retrieval top-1 (N={int(m['images'])})",
                   m["top1"], m["chance"], "1/N"))
    elif task == "motion_segmentation":
      rows.append((task, "IoU moving", m["iou"], m["chance"], "all static"))
      rows.append((task, "IoU moving", m["iou"], m["iou_all_moving"],
                   "all moving"))
  step = next(iter(results.values()))["step"] if results else 0
  lines = [f"held-out pretext metrics at step {step}"
           + (f" ({description})" if description else "") + ":",
           f"  {'task':<20} {'metric':<26} {'value':>7} {'chance':>7}  "
           "baseline"]
  for task, metric, value, chance, baseline in rows:
    lines.append(f"  {task:<20} {metric:<26} {value:>7.3f} {chance:>7.3f}  "
                 f"{baseline}")
  return "\n".join(lines)


# -- from a training config ---------------------------------------------------

def heldout_sources(config, log: Callable[[str], None] = print
                    ) -> Tuple[Dict[str, Any], List[str]]:
  """The held-out source of each task of ``config``, and notes on tasks
  that have none (they are left out of the evaluation, said in the log).

  * ``data=offline``: the held-out split of the offline set (whole photos and
    videos, :data:`mtssl_tf.data.offline.HELDOUT_SOURCES`), video frames
    every :data:`EVAL_FRAME_STRIDE`; motion masks of the held-out videos,
    made once into ``<run_dir>/heldout_motion_masks``.
  * ``data=tfds``: the dataset's ``validation`` split.
  * ``data=folder``: no held-out images are known.
  * motion segmentation reads ``config.heldout_motion_records`` when given.
  """
  from mtssl_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from mtssl_tf.data.sources import make_source  # pylint: disable=g-import-not-at-top
  data = config.data
  packages = list(data.offline_packages) or None
  sources, notes = {}, []
  image_source = None
  for name in config.tasks:
    if name == pipeline.MOTION_TASK:
      records = config.heldout_motion_records
      if not records and data.source == "offline":
        records = pipeline.offline_motion_records(
            os.path.join(config.run_dir, "heldout_motion_masks"), packages,
            log, split="heldout")
      if not records:
        notes.append(f"{name}: no held-out videos (pass "
                     "--heldout_motion_records)")
        continue
      sources[name] = make_source("motion", path=records,
                                  image_size_limit=data.image_size_limit)
      continue
    if image_source is None:
      if data.source == "offline":
        # Every held-out photo and video weighs the same in the pairs,
        # crops and views drawn (a 40-frame clip would otherwise outweigh a
        # photo 40 to 1); exemplar retrieval needs each image once.
        image_source = lambda task: make_source(  # noqa: E731
            "offline", split="heldout", packages=packages,
            frame_stride=EVAL_FRAME_STRIDE,
            balance="image" if task in ONE_PASS_TASKS else "source",
            image_size_limit=data.image_size_limit)
      elif data.source == "tfds":
        image_source = lambda task: make_source(  # noqa: E731
            "tfds", name=data.tfds_name, data_dir=data.data_dir,
            split="validation", image_size_limit=data.image_size_limit)
      else:
        notes.append(f"{name}: data=folder has no held-out images")
        continue
    sources[name] = image_source(name)
  return sources, notes


def from_config(config, model, log: Callable[[str], None] = print
                ) -> Optional[PretextEvaluator]:
  """The evaluator of a training run, or None when
  ``config.pretext_eval_every`` is 0 (off)."""
  if not config.pretext_eval_every:
    return None
  sources, notes = heldout_sources(config, log)
  for note in notes:
    log(f"held-out metrics: {note}")
  if not sources:
    log("held-out metrics: no task has held-out data; none are reported")
    return None
  heldout, described = {}, {}
  for name, source in sources.items():
    task = model.task_objects[name]
    # At the task's training batch size (--task_batch_size), known to fit in
    # memory. The scores do not depend on it (inference-mode batch norm;
    # each example is seeded by its index) beyond rounding the number of
    # examples up to whole batches (for exemplar: the N of its retrieval,
    # whose chance 1/N is reported beside it).
    heldout[name] = materialize(
        task, source, examples=config.pretext_eval_examples,
        batch_size=config.task_batch_size(name), seed=config.seed)
    described.setdefault(source.description, None)
  description = "; ".join(described)
  log(f"held-out metrics every {config.pretext_eval_every} steps on "
      f"{description}")
  return PretextEvaluator(model, heldout, description)


__all__ = ["AUC_MAX_THRESHOLD", "EVAL_FRAME_STRIDE", "JSON_NAME",
           "PretextEvaluator", "RP_CHANCE", "ab_error_auc", "ab_error_curve",
           "curve_auc",
           "binary_iou", "format_line", "format_table", "from_config",
           "heldout_sources", "materialize", "read_json", "retrieval_top1",
           "rp_accuracy",
           "top_k_hits", "write_json"]
