"""NumPy metrics of the tasks' held-out pretext evaluation.

Each task scores its own head in ``Task.heldout_scores`` (see
``tasks/task.py``) with these functions; :mod:`mtssl_tf.training.pretext_eval`
runs the evaluation and re-exports them. Definitions (the baselines are in
the module doc of :mod:`mtssl_tf.training.pretext_eval`):

* :func:`rp_accuracy` -- arg-max accuracy of classification logits.
* :func:`top_k_hits` -- per position, whether the label is among the k
  highest scores (ties count against the label).
* :func:`ab_error_curve` / :func:`curve_auc` / :func:`ab_error_auc` -- Zhang,
  Isola & Efros (ECCV 2016, Sec. 3.1): for thresholds t = 0..150 the fraction
  of pixels whose predicted ab lies within distance t of the true ab,
  integrated (trapezoid rule) and divided by 150.
* :func:`retrieval_top1` -- view retrieval among N images' K views.
* :func:`binary_iou` -- IoU of the positive class, pooled over pixels.
"""
from __future__ import annotations

import numpy as np

AUC_MAX_THRESHOLD = 150


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


__all__ = ["AUC_MAX_THRESHOLD", "ab_error_auc", "ab_error_curve", "binary_iou",
           "curve_auc", "retrieval_top1", "rp_accuracy", "top_k_hits"]
