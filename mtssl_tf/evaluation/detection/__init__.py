"""VOC detection with a TF Model Garden Faster R-CNN on the trunk.

Doersch & Zisserman (ICCV 2017, Sec. 5) fine-tune a Faster R-CNN whose
backbone is the self-supervised ResNet-101 (through block 3) on PASCAL VOC
2007 trainval and report VOC 2007 test mAP. This module is the bridge to TF
Model Garden (``tf-models-official``), which is written in ``tf_keras``
(Keras 2):

1. the trunk is rebuilt in ``tf_keras`` by the same builder
   (:func:`mtssl_tf.models.trunk.build_trunk`) and the Keras-3 weights are
   copied layer by layer by name (:func:`copy_weights_by_name`);
2. it becomes a Model Garden backbone: a ``tf_keras`` model with a dict of
   feature levels and ``output_specs``. The layout is the original Faster
   R-CNN ResNet "C4" one: a single level, the last block-3 unit (stride 16,
   level "4"; level "5" when block 3's last stride is 2), with RPN anchors of
   several sizes on that level. With eval lasso (the paper's Table 4) that
   level is instead a fresh UnitMixer row's mix of every block-3 unit
   (:class:`EvalUnitMixer`, the ``tf_keras`` twin of
   :class:`mtssl_tf.layers.UnitMixer`), trained with the detector;
3. ``official.vision.modeling.factory.build_maskrcnn`` builds the detector
   with ``include_mask=False`` (Model Garden's Faster R-CNN), an identity
   decoder, Model Garden's RPN head, RoI generator/sampler/aligner, a
   "2fc" box head and detection generator;
4. a small ``tf_keras`` training loop uses Model Garden's RPN and Fast R-CNN
   losses (``official.vision.losses.maskrcnn_losses``) and its training-time
   sampling (``RpnAnchorLabeler`` for anchors, ``ROISampler`` for RoIs), the
   way ``official.vision.tasks.maskrcnn`` does, without Orbit;
5. detections are mapped back to VOC pixel coordinates and scored with the
   package's own VOC07 11-point mAP (:mod:`mtssl_tf.evaluation.voc_eval`).

``tf_keras`` and ``official`` are imported lazily, inside functions: ``import
mtssl_tf`` stays free of Keras 2.

Defaults follow py-faster-rcnn's VOC recipe where Model Garden has no VOC
setting (anchors 128/256/512 x ratios 0.5/1/2, 128 RoIs per image with 25%
foreground, test NMS 0.3, 300 test proposals, SGD momentum 0.9, lr 1e-3).
These are recalled, not verified from the paper, which gives no detection
hyper-parameters. Images are resized so the longer side is ``image_size``
and padded to a square (static shapes); py-faster-rcnn resizes the shorter
side to 600 instead.

Example:
  >>> evaluator = DetectionEvaluator(voc_folder="VOCdevkit/VOC2007",
  ...                                train_split="trainval",
  ...                                eval_split="test")
  >>> dict(evaluator.run(trunk))["detection/map"]

The package is split by job: :mod:`~.config` (hyper-parameters),
:mod:`~.boxes` (anchors, box frames, the input op), :mod:`~.mixer` (the
``tf_keras`` eval-lasso row), :mod:`~.model` (the Faster R-CNN wrapper),
:mod:`~.training` (the fine-tuning loop) and :mod:`~.evaluator`
(:class:`DetectionEvaluator`); the public names are importable from
``mtssl_tf.evaluation.detection``.
"""
from mtssl_tf.evaluation.detection.boxes import (make_anchors,
                                                 pixel_to_voc_boxes,
                                                 resize_and_pad,
                                                 voc_to_pixel_boxes)
from mtssl_tf.evaluation.detection.detector_config import (EVAL_TASK,
                                                           DetectorConfig,
                                                           feature_level)
from mtssl_tf.evaluation.detection.evaluator import DetectionEvaluator
from mtssl_tf.evaluation.detection.model import FasterRCNN
from mtssl_tf.evaluation.detection.training import fine_tune

__all__ = ["DetectionEvaluator", "DetectorConfig", "EVAL_TASK", "FasterRCNN",
           "feature_level", "fine_tune", "make_anchors", "pixel_to_voc_boxes",
           "resize_and_pad", "voc_to_pixel_boxes"]
