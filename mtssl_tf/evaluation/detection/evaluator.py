"""The detection evaluator: VOC07 mAP of a Faster R-CNN fine-tuned from the
trunk."""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf.evaluation import voc_data
from mtssl_tf.evaluation.interface import Evaluator, check_not_empty
from mtssl_tf.evaluation.detection.detector_config import DetectorConfig
from mtssl_tf.evaluation.detection.model import FasterRCNN
from mtssl_tf.evaluation.voc_eval import VocResult, per_class_ap, voc07_map
from mtssl_tf.models.trunk import Trunk


class DetectionEvaluator(Evaluator):
  """VOC07 detection mAP of a Faster R-CNN fine-tuned from the trunk.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (Table 1-4 "PASCAL" column: VOC 2007 test mAP).

  Data: give ``voc_folder`` (VOCdevkit layout; ``ImageSets/Main/<split>.txt``
  when present, else all images for both splits), or nothing to read the
  prepared TFDS ``tfds_name`` (``voc/2007``) from ``tfds_data_dir``, or
  ready ``train_dataset`` / ``eval_dataset`` in the :mod:`voc_data` format.

  Args:
    voc_folder: the ``--voc_folder`` path, or None.
    train_split, eval_split: split names (VOC07: trainval / test).
    tfds_name, tfds_data_dir: the TFDS source when no folder is given.
    train_dataset, eval_dataset: datasets overriding the sources above.
    class_names: object classes (VOC's 20).
    detector: a :class:`DetectorConfig`.
    image_size, anchor_sizes: when given, replace those fields of
      ``detector`` (e.g. 256 and (32, 64, 128, 256) on a CPU).
    steps, batch_size, learning_rate, lr_drop_steps, momentum,
    weight_decay, clip_norm: fine-tuning (py-faster-rcnn VOC07: 70k steps,
      lr 1e-3 dropped at 50k, [R]).
    eval_batch_size: inference batch.
    seed: data-order and flip seed.
    log_every: steps between loss lines.

    lasso_l1: the L1 penalty of the eval-lasso row (``eval_lasso``).

  ``run`` yields ``("detection/map", mAP)`` then ``("detection/ap/<class>",
  AP)`` for each class with ground truth. ``run(trunk, eval_lasso=True)``
  (Table 4) feeds the detector a fresh mixer row's mix of every block-3 unit,
  trained with the detector; the learned row is logged and kept in
  ``last_alpha``.
  """

  name = "detection"

  def __init__(self, *, voc_folder: Optional[str] = None,
               train_split: str = "trainval", eval_split: str = "test",
               tfds_name: str = "voc/2007",
               tfds_data_dir: Optional[str] = None,
               train_dataset: Optional[tf.data.Dataset] = None,
               eval_dataset: Optional[tf.data.Dataset] = None,
               class_names: Sequence[str] = voc_data.VOC_CLASSES,
               detector: DetectorConfig = DetectorConfig(),
               image_size: Optional[int] = None,
               anchor_sizes: Optional[Sequence[float]] = None,
               steps: int = 70000, batch_size: int = 2,
               learning_rate: float = 1e-3,
               lr_drop_steps: Sequence[int] = (50000,),
               momentum: float = 0.9, weight_decay: float = 1e-4,
               clip_norm: Optional[float] = 10.0, eval_batch_size: int = 1,
               seed: int = 0, log_every: int = 100,
               lasso_l1: float = 1e-3):
    if steps < 0 or batch_size < 1 or eval_batch_size < 1:
      raise ValueError("steps must be >= 0 and batch sizes >= 1")
    if not lasso_l1 >= 0:
      raise ValueError(f"detection lasso_l1={lasso_l1!r} must be >= 0")
    self.lasso_l1 = float(lasso_l1)
    self.last_alpha: Optional[np.ndarray] = None
    self.voc_folder = voc_folder
    self.train_split = train_split
    self.eval_split = eval_split
    self.tfds_name = tfds_name
    self.tfds_data_dir = tfds_data_dir
    self.train_dataset = train_dataset
    self.eval_dataset = eval_dataset
    self.class_names = tuple(class_names)
    # Flag-friendly overrides of the two settings a CPU run changes first.
    if image_size is not None:
      detector = dataclasses.replace(detector, image_size=int(image_size))
    if anchor_sizes is not None:
      detector = dataclasses.replace(
          detector, anchor_sizes=tuple(float(a) for a in anchor_sizes))
    self.detector = detector
    self.steps = int(steps)
    self.batch_size = int(batch_size)
    self.learning_rate = float(learning_rate)
    self.lr_drop_steps = tuple(lr_drop_steps)
    self.momentum = float(momentum)
    self.weight_decay = float(weight_decay)
    self.clip_norm = clip_norm
    self.eval_batch_size = int(eval_batch_size)
    self.seed = int(seed)
    self.log_every = int(log_every)
    self.last_result: Optional[VocResult] = None

  def _source(self, split: str) -> Tuple[tf.data.Dataset, str]:
    if self.voc_folder is not None:
      return (voc_data.voc_folder_dataset(self.voc_folder, split,
                                          self.class_names),
              f"VOC folder {self.voc_folder} split {split!r}")
    return (voc_data.tfds_voc_dataset(split, self.tfds_data_dir,
                                      self.tfds_name),
            f"TFDS {self.tfds_name} split {split!r}")

  def datasets(self) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, eval) datasets; raises if either is missing or empty."""
    if self.train_dataset is not None:
      train, train_what = self.train_dataset, "the detection training set"
    else:
      train, train_what = self._source(self.train_split)
    if self.eval_dataset is not None:
      evals, eval_what = self.eval_dataset, "the detection evaluation set"
    else:
      evals, eval_what = self._source(self.eval_split)
    check_not_empty(evals, eval_what)
    if self.steps:
      check_not_empty(train, train_what)
    return train, evals

  def run(self, trunk: Trunk, *, eval_lasso: bool = False,
          log=print) -> Iterator[Tuple[str, float]]:
    if not isinstance(trunk, Trunk):
      raise TypeError(f"DetectionEvaluator.run needs a mtssl_tf Trunk, got "
                      f"{type(trunk).__name__}")
    if eval_lasso and trunk.config.block3_last_stride != 1:
      raise ValueError(
          "eval lasso mixes every block-3 unit, which needs the trunk's "
          "block3_last_stride=1")
    train, evals = self.datasets()
    detector = FasterRCNN(trunk.config, len(self.class_names), self.detector,
                          eval_lasso=eval_lasso, lasso_l1=self.lasso_l1)
    # The Keras-3 trunk is only read: fine-tuning changes the tf_keras copy.
    detector.load_trunk(trunk)
    if self.steps:
      detector.fit(detector.train_dataset(train, self.batch_size, self.seed),
                   self.steps, learning_rate=self.learning_rate,
                   lr_drop_steps=self.lr_drop_steps, momentum=self.momentum,
                   weight_decay=self.weight_decay, clip_norm=self.clip_norm,
                   log=log, log_every=self.log_every)
    self.last_alpha = detector.alpha()
    detections, ground_truths = detector.detect(evals, self.eval_batch_size)
    result = voc07_map(detections, ground_truths, len(self.class_names))
    self.last_result = result
    log(f"detection: VOC07 mAP {result.map:.4f} on {len(ground_truths)} "
        "images")
    yield "detection/map", result.map
    for name, ap in per_class_ap(result, self.class_names).items():
      yield f"detection/ap/{name}", ap
