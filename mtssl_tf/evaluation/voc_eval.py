"""PASCAL VOC 2007 detection mAP (the devkit's 11-point rule), in NumPy.

Doersch & Zisserman (ICCV 2017) report VOC 2007 test mAP of a Faster R-CNN
fine-tuned from each self-supervised trunk. This module reimplements the
VOC2007 devkit's ``VOCevaldet.m`` rule so that the number is computed by our
own, tested code:

* Boxes are ``[ymin, xmin, ymax, xmax]`` in **VOC pixel coordinates**: 1-based
  and inclusive, as written in the annotation XML. The package's box order is
  TensorFlow's (y first); the devkit's own order is x first, which changes
  nothing in the numbers.
* IoU uses the devkit's **+1 pixel convention**: a box covers
  ``xmax - xmin + 1`` pixels, so ``iw = min(xmax) - max(xmin) + 1`` and the
  union is ``(w1 + 1)(h1 + 1) + (w2 + 1)(h2 + 1) - inter``. A detection is
  compared only when ``iw > 0`` and ``ih > 0``.
* Per class, detections of all images are sorted by decreasing score (stable
  sort, like MATLAB's ``sort``). Each detection is compared with **every**
  ground-truth box of its class in its image and takes the one of largest
  IoU. If that IoU is >= 0.5: a *difficult* box makes the detection neither a
  TP nor a FP (ignored); a box not yet detected makes it a TP (the box is
  marked detected); an already detected box makes it a FP (duplicate). The
  devkit does *not* fall back to the next-best unmatched box. IoU < 0.5: FP.
* ``npos`` = number of non-difficult ground-truth boxes of the class.
  recall = cumTP / npos, precision = cumTP / (cumTP + cumFP).
* AP = mean over t in {0, 0.1, ..., 1} of max(precision[recall >= t]), 0 when
  no recall reaches t (the VOC2007 "11-point interpolated" AP).
* mAP = mean of AP over the classes that have at least one non-difficult
  ground-truth box in the evaluation set (the real VOC07 test set has all 20).

Example:
  >>> gts = [dict(boxes=[[1, 1, 10, 10]], classes=[0], difficult=[False])]
  >>> dets = [dict(boxes=[[1, 1, 10, 10]], classes=[0], scores=[0.9])]
  >>> voc07_map(dets, gts, num_classes=1).map
  1.0
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence

import numpy as np


def voc_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """IoU of one box with each of ``boxes`` with the devkit's +1 convention.

  Args:
    box: [4] as ``[ymin, xmin, ymax, xmax]``, VOC pixel coordinates.
    boxes: [N, 4] same format.

  Returns:
    [N] IoU; 0 where the boxes do not overlap by at least one pixel.
  """
  box = np.asarray(box, np.float64)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  ih = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + 1
  iw = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + 1
  overlap = (iw > 0) & (ih > 0)
  inter = np.where(overlap, iw * ih, 0.0)
  area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
  areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
  union = area + areas - inter
  return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def voc07_ap(recall: Sequence[float], precision: Sequence[float]) -> float:
  """The VOC2007 11-point interpolated average precision."""
  recall = np.asarray(recall, np.float64)
  precision = np.asarray(precision, np.float64)
  ap = 0.0
  for t in np.linspace(0.0, 1.0, 11):
    # Exact tenths: linspace gives 0.30000000000000004 for 0.3, and a recall
    # of exactly 3/10 must count as reaching it.
    t = round(float(t), 1)
    reached = recall >= t - 1e-12
    ap += precision[reached].max() if reached.any() else 0.0
  return float(ap / 11.0)


@dataclasses.dataclass(frozen=True)
class ClassResult:
  """Matching result of one class: the TP/FP sequence in score order."""
  tp: np.ndarray         # [K] 1 for a true positive
  fp: np.ndarray         # [K] 1 for a false positive (ignored ones are 0, 0)
  scores: np.ndarray     # [K] sorted decreasing
  npos: int              # non-difficult ground-truth boxes
  recall: np.ndarray     # [K] cumulative
  precision: np.ndarray  # [K] cumulative
  ap: float              # nan when npos == 0


@dataclasses.dataclass(frozen=True)
class VocResult:
  """VOC07 mAP and its per-class parts (``ap[c]`` is nan without ground
  truth)."""
  map: float
  ap: np.ndarray
  per_class: List[ClassResult]


def _as_array(d: Mapping, key: str, shape, dtype, where: str) -> np.ndarray:
  if key not in d:
    raise ValueError(f"{where} has no {key!r} (keys: {sorted(d)})")
  value = np.asarray(d[key], dtype)
  if shape == 4:
    value = value.reshape(-1, 4)
  else:
    value = value.reshape(-1)
  return value


def evaluate_class(detections: Sequence[Mapping],
                   ground_truths: Sequence[Mapping], class_id: int,
                   iou_threshold: float = 0.5) -> ClassResult:
  """Devkit matching for one class; see the module docstring."""
  gt_boxes, gt_difficult, npos = _class_ground_truth(ground_truths, class_id)
  image_ids, boxes, scores = _class_detections(detections, class_id)
  order = np.argsort(-scores, kind="stable")
  tp, fp = _match(order, image_ids, boxes, gt_boxes, gt_difficult,
                  iou_threshold)
  ctp, cfp = np.cumsum(tp), np.cumsum(fp)
  recall = ctp / npos if npos else np.full(len(order), np.nan)
  denom = ctp + cfp
  # An ignored detection before any TP/FP leaves 0/0: precision 0 there, it
  # cannot raise the interpolated maximum above a real value.
  precision = np.divide(ctp, denom, out=np.zeros_like(ctp), where=denom > 0)
  ap = voc07_ap(recall, precision) if npos else float("nan")
  return ClassResult(tp=tp, fp=fp, scores=scores[order], npos=npos,
                     recall=recall, precision=precision, ap=ap)


def _class_ground_truth(ground_truths: Sequence[Mapping], class_id: int):
  """Per image, the boxes and difficult flags of ``class_id``, and the
  number of its non-difficult objects (the devkit's ``npos``)."""
  gt_boxes, gt_difficult = [], []
  npos = 0
  for i, gt in enumerate(ground_truths):
    where = f"ground truth of image {i}"
    boxes = _as_array(gt, "boxes", 4, np.float64, where)
    classes = _as_array(gt, "classes", 1, np.int64, where)
    difficult = (_as_array(gt, "difficult", 1, bool, where) if "difficult"
                 in gt else np.zeros(len(classes), bool))
    if not len(boxes) == len(classes) == len(difficult):
      raise ValueError(f"{where}: boxes, classes and difficult differ in "
                       f"length ({len(boxes)}, {len(classes)}, "
                       f"{len(difficult)})")
    keep = classes == class_id
    gt_boxes.append(boxes[keep])
    gt_difficult.append(difficult[keep])
    npos += int((~difficult[keep]).sum())
  return gt_boxes, gt_difficult, npos


def _class_detections(detections: Sequence[Mapping], class_id: int):
  """``(image_ids, boxes, scores)`` of every detection of ``class_id``,
  flattened over the images."""
  image_ids, boxes, scores = [], [], []
  for i, det in enumerate(detections):
    where = f"detections of image {i}"
    b = _as_array(det, "boxes", 4, np.float64, where)
    c = _as_array(det, "classes", 1, np.int64, where)
    s = _as_array(det, "scores", 1, np.float64, where)
    if not len(b) == len(c) == len(s):
      raise ValueError(f"{where}: boxes, classes and scores differ in length "
                       f"({len(b)}, {len(c)}, {len(s)})")
    keep = c == class_id
    image_ids.append(np.full(int(keep.sum()), i))
    boxes.append(b[keep])
    scores.append(s[keep])
  image_ids = np.concatenate(image_ids) if image_ids else np.zeros(0, int)
  boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
  scores = np.concatenate(scores) if scores else np.zeros(0)
  return image_ids, boxes, scores


def _match(order: np.ndarray, image_ids: np.ndarray, boxes: np.ndarray,
           gt_boxes: List[np.ndarray], gt_difficult: List[np.ndarray],
           iou_threshold: float):
  """``(tp, fp)`` flags of the detections in ``order`` (best score first):
  each takes the ground-truth box it overlaps most, a TP the first time that
  box is matched at ``iou_threshold``, an FP after; matches of difficult
  boxes are neither."""
  detected = [np.zeros(len(g), bool) for g in gt_boxes]
  tp = np.zeros(len(order))
  fp = np.zeros(len(order))
  for k, d in enumerate(order):
    i = image_ids[d]
    ovmax = -np.inf
    if len(gt_boxes[i]):
      ious = voc_iou(boxes[d], gt_boxes[i])
      j = int(np.argmax(ious))
      ovmax = ious[j]
    if ovmax >= iou_threshold:
      if gt_difficult[i][j]:
        continue  # neither TP nor FP
      if not detected[i][j]:
        tp[k] = 1
        detected[i][j] = True
      else:
        fp[k] = 1
    else:
      fp[k] = 1
  return tp, fp


def voc07_map(detections: Sequence[Mapping], ground_truths: Sequence[Mapping],
              num_classes: int, iou_threshold: float = 0.5) -> VocResult:
  """VOC2007 mean average precision over the classes with ground truth.

  Args:
    detections: one dict per image with ``boxes`` [K, 4] (``[ymin, xmin,
      ymax, xmax]``, VOC pixel coordinates), ``classes`` [K] (0-based) and
      ``scores`` [K].
    ground_truths: one dict per image, same order, with ``boxes`` [N, 4],
      ``classes`` [N] and optionally ``difficult`` [N] (bool).
    num_classes: number of object classes (20 for VOC).
    iou_threshold: the devkit's 0.5.

  Returns:
    A :class:`VocResult`.

  Raises:
    ValueError: no ground-truth image (an empty evaluation set), lists of
      different lengths, or no class with a non-difficult box.
  """
  if len(ground_truths) == 0:
    raise ValueError("the evaluation set is empty: no ground-truth images")
  if len(detections) != len(ground_truths):
    raise ValueError(
        f"{len(detections)} detection entries for {len(ground_truths)} "
        "ground-truth images; give one (possibly empty) entry per image")
  per_class = [evaluate_class(detections, ground_truths, c, iou_threshold)
               for c in range(num_classes)]
  ap = np.array([r.ap for r in per_class])
  if np.all(np.isnan(ap)):
    raise ValueError("no class has a non-difficult ground-truth box in the "
                     "evaluation set: mAP is undefined")
  return VocResult(map=float(np.nanmean(ap)), ap=ap, per_class=per_class)


def per_class_ap(result: VocResult,
                 class_names: Sequence[str]) -> Dict[str, float]:
  """``{class name: AP}`` for the classes with ground truth."""
  return {n: float(a) for n, a in zip(class_names, result.ap)
          if not np.isnan(a)}
