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
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf.evaluation import voc_data
from mtssl_tf.evaluation.base import Evaluator, check_not_empty
from mtssl_tf.evaluation.voc_eval import VocResult, per_class_ap, voc07_map
from mtssl_tf.models.trunk import (SLIM_MEAN_RGB, Trunk, TrunkConfig,
                                   build_trunk, copy_weights_by_name)
from mtssl_tf.ops.image import ensure_rgb
from mtssl_tf.progress import Progress


def _tf_keras():
  import tf_keras  # Keras 2: only inside the Model Garden bridge
  return tf_keras


EVAL_TASK = "detection"   # the name of the detection task's mixer row


@functools.lru_cache(maxsize=None)
def _eval_unit_mixer_class():
  """The ``tf_keras`` eval-lasso mixer class, made on first use so that
  ``import mtssl_tf`` never imports Keras 2."""
  tf_keras = _tf_keras()

  def unit_norm(w):
    return w / tf.maximum(tf.norm(w), 1e-12)

  class EvalUnitMixer(tf_keras.layers.Layer):
    """One fresh UnitMixer row for the detection task, in ``tf_keras``.

    The same mix as :class:`mtssl_tf.layers.UnitMixer` (Doersch & Zisserman,
    ICCV 2017, Sec. 4.2): ``sum_m alpha_m * unit_m`` with ``alpha``
    projected onto the unit sphere (in the forward pass, and after each
    update by :meth:`project`) and an L1 penalty ``l1 * sum |alpha|``
    (:meth:`penalty`). Initial alpha: all weight on the last unit, so
    training starts from the plain C4 detector.
    """

    def __init__(self, num_units: int, l1: float = 1e-3, **kwargs):
      super().__init__(**kwargs)
      self.num_units = int(num_units)
      self.l1 = float(l1)
      init = np.zeros([self.num_units], np.float32)
      init[-1] = 1.0
      self.alpha_variable = self.add_weight(
          name=f"alpha_{EVAL_TASK}", shape=(self.num_units,),
          initializer=tf_keras.initializers.Constant(init), trainable=True)

    def alpha(self) -> tf.Tensor:
      return unit_norm(self.alpha_variable)

    def penalty(self) -> tf.Tensor:
      return self.l1 * tf.reduce_sum(tf.abs(self.alpha()))

    def project(self) -> None:
      self.alpha_variable.assign(unit_norm(self.alpha_variable))

    def call(self, units):
      if len(units) != self.num_units:
        raise ValueError(f"EvalUnitMixer mixes {self.num_units} units, got "
                         f"{len(units)}")
      alpha = tf.cast(self.alpha(), units[0].dtype)
      return tf.add_n([u * alpha[m] for m, u in enumerate(units)])

    def get_config(self):
      return dict(super().get_config(), num_units=self.num_units,
                  l1=self.l1)

  return EvalUnitMixer


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
  """Faster R-CNN hyper-parameters (validated on creation).

  Attributes:
    image_size: the square input side; the longer image side is resized to
      it. A multiple of 16 (32 when block 3's last stride is 2).
    anchor_sizes: RPN anchor sides in input pixels (one octave set on the
      single feature level).
    aspect_ratios: anchor width / height ratios.
    rpn_match_threshold, rpn_unmatched_threshold: anchor IoU >= match is
      positive, < unmatched negative.
    rpn_batch_size_per_im, rpn_fg_fraction: anchors sampled per image for
      the RPN loss, and their positive fraction.
    rpn_num_convs, rpn_num_filters: the RPN head's convolutions.
    pre_nms_top_k, nms_iou_threshold, num_proposals: proposals in training.
    test_pre_nms_top_k, test_num_proposals: proposals at test time.
    num_sampled_rois, foreground_fraction, foreground_iou_threshold,
    background_iou_high_threshold, background_iou_low_threshold: the RoI
      sampler of the Fast R-CNN stage.
    crop_size: RoIAlign output side.
    head_num_convs, head_num_filters, head_num_fcs, head_fc_dims: the box
      head (0 convs + 2 fc = the "2fc" head).
    detection_score_threshold, detection_nms_iou_threshold,
    max_num_detections: the final per-class NMS.
    nms_version: Model Garden's NMS implementation: ``"batched"``
      (``tf.image.combined_non_max_suppression``, one op: quick to trace on
      CPU), ``"v2"`` (Model Garden's default, unrolled per class) or
      ``"v1"``.
    max_num_instances: ground-truth boxes per image kept for training.
    rpn_huber_loss_delta, frcnn_huber_loss_delta: Model Garden's loss deltas.
    head_norm_momentum: batch-norm momentum of the RPN and box heads (Model
      Garden's 0.997; short runs need less, or the moving statistics used
      at test time stay at their initial values).
    freeze_batch_norm: keep the trunk's batch norm in inference mode with
      fixed scale/offset (usual for detection fine-tuning at 1-2 images per
      replica).
    horizontal_flip: random flips in training.
    use_difficult: train on boxes marked difficult (py-faster-rcnn: no; they
      are always ignored by the evaluation).
  """
  image_size: int = 608
  anchor_sizes: Tuple[float, ...] = (128.0, 256.0, 512.0)
  aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
  rpn_match_threshold: float = 0.7
  rpn_unmatched_threshold: float = 0.3
  rpn_batch_size_per_im: int = 256
  rpn_fg_fraction: float = 0.5
  rpn_num_convs: int = 1
  rpn_num_filters: int = 512
  pre_nms_top_k: int = 6000
  nms_iou_threshold: float = 0.7
  num_proposals: int = 2000
  test_pre_nms_top_k: int = 6000
  test_num_proposals: int = 300
  num_sampled_rois: int = 128
  foreground_fraction: float = 0.25
  foreground_iou_threshold: float = 0.5
  background_iou_high_threshold: float = 0.5
  background_iou_low_threshold: float = 0.0
  crop_size: int = 7
  head_num_convs: int = 0
  head_num_filters: int = 256
  head_num_fcs: int = 2
  head_fc_dims: int = 1024
  detection_score_threshold: float = 0.05
  detection_nms_iou_threshold: float = 0.3
  max_num_detections: int = 100
  nms_version: str = "batched"
  max_num_instances: int = 100
  rpn_huber_loss_delta: float = 1.0 / 9.0
  frcnn_huber_loss_delta: float = 1.0
  head_norm_momentum: float = 0.997
  freeze_batch_norm: bool = True
  horizontal_flip: bool = True
  use_difficult: bool = False

  def __post_init__(self):
    if self.image_size < 32 or self.image_size % 16:
      raise ValueError(f"DetectorConfig.image_size={self.image_size} must be "
                       "a multiple of 16 and >= 32")
    if not self.anchor_sizes or min(self.anchor_sizes) <= 0:
      raise ValueError(f"DetectorConfig.anchor_sizes={self.anchor_sizes!r} "
                       "must be positive sizes")
    if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
      raise ValueError(f"DetectorConfig.aspect_ratios={self.aspect_ratios!r}"
                       " must be positive ratios")
    if self.nms_version not in ("batched", "v1", "v2"):
      raise ValueError(f"DetectorConfig.nms_version={self.nms_version!r}; "
                       "allowed: batched, v1, v2")
    for name in ("rpn_fg_fraction", "foreground_fraction"):
      if not 0 < getattr(self, name) <= 1:
        raise ValueError(f"DetectorConfig.{name} must be in (0, 1]")

  @property
  def anchors_per_location(self) -> int:
    return len(self.anchor_sizes) * len(self.aspect_ratios)


def feature_level(trunk_config: TrunkConfig) -> int:
  """Pyramid level of the block-3 output: 4 (stride 16) or 5 (stride 32)."""
  return 4 if trunk_config.block3_last_stride == 1 else 5


def make_anchors(image_size: int, level: int,
                 config: DetectorConfig) -> Dict[str, tf.Tensor]:
  """Anchors of one level in Model Garden's layout.

  Returns ``{str(level): [h, w, A * 4]}``, boxes ``[ymin, xmin, ymax, xmax]``
  in input pixels, centred on the stride grid (cell centres), ordered size
  major then aspect ratio, as ``official.vision.ops.anchor.Anchor`` orders
  scales and ratios.
  """
  stride = 2 ** level
  size = math.ceil(image_size / stride)
  centres = (np.arange(size, dtype=np.float64) + 0.5) * (image_size / size)
  yy, xx = np.meshgrid(centres, centres, indexing="ij")
  boxes = []
  for side in config.anchor_sizes:
    for ratio in config.aspect_ratios:
      half_w = side * math.sqrt(ratio) / 2
      half_h = side / math.sqrt(ratio) / 2
      boxes.append(np.stack([yy - half_h, xx - half_w, yy + half_h,
                             xx + half_w], axis=-1))
  return {str(level): tf.constant(np.concatenate(boxes, axis=-1),
                                  tf.float32)}


def voc_to_pixel_boxes(boxes: tf.Tensor) -> tf.Tensor:
  """VOC inclusive 1-based boxes -> continuous 0-based pixel boxes (a box of
  pixels 1..W spans [0, W])."""
  return boxes - tf.constant([1.0, 1.0, 0.0, 0.0], boxes.dtype)


def pixel_to_voc_boxes(boxes):
  """Inverse of :func:`voc_to_pixel_boxes` (NumPy or TF)."""
  return boxes + np.array([1.0, 1.0, 0.0, 0.0], np.float32)


def resize_and_pad(example: Dict[str, tf.Tensor], image_size: int,
                   seed: Optional[tf.Tensor] = None,
                   flip: bool = False) -> Dict[str, tf.Tensor]:
  """The deterministic part of the detector's data op.

  Resizes the image so its longer side is ``image_size``, optionally flips it
  horizontally (decided by ``tf.random.stateless_uniform`` on ``seed``), pads
  it to ``image_size`` squared with the ImageNet mean colour (zero after the
  trunk's input normalisation) and maps the boxes into the padded image's
  continuous pixel frame.

  Returns ``image`` float32 [S, S, 3] in [0, 255], ``boxes`` [N, 4] (pixel
  frame of the resized image), ``classes``, ``difficult`` and Model
  Garden's ``image_info`` [[h, w], [h', w'], [sy, sx], [0, 0]].
  """
  image = ensure_rgb(example["image"], name="detection image")
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.minimum(image_size / shape[0], image_size / shape[1])
  new_shape = tf.minimum(tf.round(shape * scale), float(image_size))
  new_size = tf.cast(new_shape, tf.int32)
  image = tf.image.resize(image, new_size, method="bilinear", antialias=True)
  boxes = voc_to_pixel_boxes(tf.cast(example["boxes"], tf.float32))
  scales = new_shape / shape
  boxes = boxes * tf.concat([scales, scales], axis=0)
  if flip:
    if seed is None:
      raise ValueError("resize_and_pad: flip=True needs a seed")
    do_flip = tf.random.stateless_uniform([], seed) < 0.5
    width = new_shape[1]
    flipped = tf.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2],
                        width - boxes[:, 1]], axis=1)
    image = tf.cond(do_flip, lambda: image[:, ::-1], lambda: image)
    boxes = tf.cond(do_flip, lambda: flipped, lambda: boxes)
  mean = tf.constant(SLIM_MEAN_RGB, tf.float32)
  image = tf.image.pad_to_bounding_box(image - mean, 0, 0, image_size,
                                       image_size) + mean
  image = tf.clip_by_value(image, 0.0, 255.0)
  image_info = tf.stack([shape, new_shape, scales, tf.zeros([2])])
  return {"image": image, "boxes": boxes,
          "classes": tf.cast(example["classes"], tf.int32),
          "difficult": tf.cast(example["difficult"], tf.bool),
          "image_info": image_info}


def _pad(x: tf.Tensor, n: int, value) -> tf.Tensor:
  x = x[:n]
  pad = n - tf.shape(x)[0]
  paddings = [[0, pad]] + [[0, 0]] * (x.shape.rank - 1)
  x = tf.pad(x, paddings, constant_values=value)
  return tf.ensure_shape(x, [n] + x.shape[1:].as_list())


class FasterRCNN:
  """Model Garden Faster R-CNN (``include_mask=False``) on a ``tf_keras``
  copy of the trunk.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (VOC 2007 detection with Faster R-CNN, Ren et al.
  2015, C4 layout on the ResNet block-3 output).

  Args:
    trunk_config: the trunk's configuration (the ``tf_keras`` backbone is
      built from it).
    num_classes: object classes, background excluded (20 for VOC).
    config: a :class:`DetectorConfig`.
    eval_lasso: the backbone's output is a fresh mixer row's mix of every
      block-3 unit (needs ``block3_last_stride=1``), trained with the
      detector, instead of the last unit (Table 4's eval lasso).
    lasso_l1: the L1 penalty of that row.

  Attributes:
    model: the ``official.vision`` ``MaskRCNNModel`` (``tf_keras``).
    backbone: the ``tf_keras`` trunk wrapped as a Model Garden backbone.
    mixer: the eval-lasso ``EvalUnitMixer`` layer of the backbone, or None.
  """

  def __init__(self, trunk_config: TrunkConfig, num_classes: int,
               config: DetectorConfig = DetectorConfig(),
               eval_lasso: bool = False, lasso_l1: float = 1e-3):
    if num_classes < 1:
      raise ValueError(f"num_classes={num_classes} must be >= 1")
    if eval_lasso and trunk_config.block3_last_stride != 1:
      raise ValueError(
          "eval lasso mixes every block-3 unit, which needs the trunk's "
          "block3_last_stride=1")
    if not lasso_l1 >= 0:
      raise ValueError(f"lasso_l1={lasso_l1!r} must be >= 0")
    self.eval_lasso = bool(eval_lasso)
    self.lasso_l1 = float(lasso_l1)
    self.mixer = None
    self.trunk_config = trunk_config
    self.num_classes = int(num_classes)
    self.config = config
    self.level = feature_level(trunk_config)
    if config.image_size % (2 ** self.level):
      raise ValueError(
          f"image_size={config.image_size} must be a multiple of "
          f"{2 ** self.level} (the trunk's output stride)")
    self.anchor_boxes = make_anchors(config.image_size, self.level, config)
    self.backbone = self._build_backbone()
    self.model = self._build_model()

  def _build_backbone(self):
    tf_keras = _tf_keras()
    s = self.config.image_size
    trunk = build_trunk(self.trunk_config, keras_module=tf_keras,
                        input_shape=(s, s, 3), name="trunk")
    names = self.trunk_config.unit_names()
    level = str(self.level)
    if self.eval_lasso:
      self.mixer = _eval_unit_mixer_class()(len(names), self.lasso_l1,
                                            name="eval_mixer")
      features = self.mixer([trunk.output[n] for n in names])
    else:
      features = trunk.output[names[-1]]
    backbone = tf_keras.Model(trunk.input, {level: features},
                              name="backbone")
    # What Model Garden's decoders and heads read from a backbone.
    backbone.output_specs = {level: backbone.output[level].shape}
    if self.config.freeze_batch_norm:
      for layer in backbone.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
          # In tf_keras a non-trainable BN also runs in inference mode.
          layer.trainable = False
    return backbone

  def _build_model(self):
    tf_keras = _tf_keras()
    from official.vision.configs import common as common_cfg
    from official.vision.configs import decoders as decoders_cfg
    from official.vision.configs import maskrcnn as maskrcnn_cfg
    from official.vision.modeling import factory

    c = self.config
    model_config = maskrcnn_cfg.MaskRCNN(
        num_classes=self.num_classes + 1,  # Model Garden: 0 = background
        input_size=[c.image_size, c.image_size, 3],
        min_level=self.level, max_level=self.level,
        # Only the anchor count per location matters here: the anchor boxes
        # themselves come from make_anchors (several octaves on one level,
        # which Model Garden's Anchor cannot express).
        anchor=maskrcnn_cfg.Anchor(num_scales=len(c.anchor_sizes),
                                   aspect_ratios=list(c.aspect_ratios),
                                   anchor_size=1.0),
        include_mask=False, mask_head=None, mask_sampler=None,
        mask_roi_aligner=None,
        decoder=decoders_cfg.Decoder(type="identity"),
        rpn_head=maskrcnn_cfg.RPNHead(num_convs=c.rpn_num_convs,
                                      num_filters=c.rpn_num_filters),
        detection_head=maskrcnn_cfg.DetectionHead(
            num_convs=c.head_num_convs, num_filters=c.head_num_filters,
            num_fcs=c.head_num_fcs, fc_dims=c.head_fc_dims),
        roi_generator=maskrcnn_cfg.ROIGenerator(
            pre_nms_top_k=c.pre_nms_top_k,
            nms_iou_threshold=c.nms_iou_threshold,
            num_proposals=c.num_proposals,
            test_pre_nms_top_k=c.test_pre_nms_top_k,
            test_nms_iou_threshold=c.nms_iou_threshold,
            test_num_proposals=c.test_num_proposals),
        roi_sampler=maskrcnn_cfg.ROISampler(
            num_sampled_rois=c.num_sampled_rois,
            foreground_fraction=c.foreground_fraction,
            foreground_iou_threshold=c.foreground_iou_threshold,
            background_iou_high_threshold=c.background_iou_high_threshold,
            background_iou_low_threshold=c.background_iou_low_threshold),
        roi_aligner=maskrcnn_cfg.ROIAligner(crop_size=c.crop_size),
        detection_generator=maskrcnn_cfg.DetectionGenerator(
            pre_nms_score_threshold=c.detection_score_threshold,
            nms_iou_threshold=c.detection_nms_iou_threshold,
            max_num_detections=c.max_num_detections,
            nms_version=c.nms_version),
        norm_activation=common_cfg.NormActivation(
            activation="relu", use_sync_bn=False, norm_momentum=c.head_norm_momentum,
            norm_epsilon=1e-4))
    input_specs = tf_keras.layers.InputSpec(
        shape=[None, c.image_size, c.image_size, 3])
    model = factory.build_maskrcnn(input_specs, model_config,
                                   backbone=self.backbone)
    # Creates every variable (heads are built lazily on first call).
    self.predict_raw(tf.zeros([1, c.image_size, c.image_size, 3]),
                     tf.constant([[c.image_size, c.image_size]], tf.float32),
                     model=model)
    return model

  # -- weights -------------------------------------------------------------
  def load_trunk(self, trunk: Trunk) -> None:
    """Copies a Keras-3 trunk's weights into the backbone by layer name.

    Raises:
      ValueError: the trunk's architecture differs from the backbone's
        (another depth/width: a missing layer or a shape mismatch).
    """
    try:
      # The eval-lasso row is fresh: nothing to copy into it.
      copy_weights_by_name(trunk, self.backbone,
                           allow_missing=("eval_mixer",))
    except ValueError as e:
      raise ValueError(
          f"the trunk checkpoint does not fit the detector's backbone, "
          f"built for {self.trunk_config}: wrong architecture ({e})") from None

  # -- data ----------------------------------------------------------------
  def train_example(self, example: Dict[str, tf.Tensor],
                    seed: tf.Tensor) -> Tuple[tf.Tensor, Dict]:
    """Data op for training: (image, Model Garden labels).

    The resize/flip part is stateless in ``seed``; the RPN anchor sampling is
    Model Garden's ``RpnAnchorLabeler``, which draws with stateful random ops
    (as in Model Garden's own input pipeline).
    """
    from official.vision.ops import anchor as anchor_ops
    c = self.config
    out = resize_and_pad(example, c.image_size, seed, c.horizontal_flip)
    boxes, classes = out["boxes"], out["classes"] + 1
    if not c.use_difficult:
      keep = tf.logical_not(out["difficult"])
      boxes, classes = boxes[keep], classes[keep]
    labeler = anchor_ops.RpnAnchorLabeler(
        c.rpn_match_threshold, c.rpn_unmatched_threshold,
        c.rpn_batch_size_per_im, c.rpn_fg_fraction)
    score_targets, box_targets = labeler.label_anchors(
        self.anchor_boxes, boxes, tf.cast(classes[:, None], tf.float32))
    labels = {
        "image_info": out["image_info"],
        "anchor_boxes": self.anchor_boxes,
        "rpn_score_targets": score_targets,
        "rpn_box_targets": box_targets,
        "gt_boxes": _pad(boxes, c.max_num_instances, -1.0),
        "gt_classes": _pad(classes, c.max_num_instances, -1),
    }
    return out["image"], labels

  def train_dataset(self, dataset: tf.data.Dataset, batch_size: int,
                    seed: int = 0) -> tf.data.Dataset:
    """Repeated, shuffled, batched training data from package examples."""
    use_difficult = self.config.use_difficult

    def has_boxes(example):
      keep = tf.ones_like(example["difficult"]) if use_difficult else (
          tf.logical_not(example["difficult"]))
      return tf.reduce_any(keep)

    ds = dataset.filter(has_boxes).repeat()
    ds = ds.shuffle(64, seed=seed)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))
    ds = ds.map(lambda ex, i: self.train_example(
        ex, tf.stack([tf.cast(seed, tf.int64), i])),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)

  # -- model ---------------------------------------------------------------
  def _batched_anchors(self, batch: int) -> Dict[str, tf.Tensor]:
    return {k: tf.tile(v[None], [batch, 1, 1, 1])
            for k, v in self.anchor_boxes.items()}

  def predict_raw(self, images, image_shape, model=None) -> Dict:
    """Inference outputs of Model Garden (boxes in the padded input frame,
    classes 1-based)."""
    model = model or self.model
    return model(images, image_shape=image_shape,
                 anchor_boxes=self._batched_anchors(tf.shape(images)[0]),
                 training=False)

  def losses(self, outputs: Dict, labels: Dict) -> Dict[str, tf.Tensor]:
    """Faster R-CNN losses with Model Garden's loss classes.

    The same sum as ``official.vision.tasks.maskrcnn.build_losses`` for one
    detection head and no mask. Differences: the RPN score loss is
    normalised by ``rpn_batch_size_per_im`` (the argument's meaning; the
    Model Garden task passes the number of sampled RoIs there).
    """
    from official.vision.losses import maskrcnn_losses
    c = self.config
    rpn_score = maskrcnn_losses.RpnScoreLoss(c.rpn_batch_size_per_im)(
        outputs["rpn_scores"], labels["rpn_score_targets"])
    rpn_box = maskrcnn_losses.RpnBoxLoss(c.rpn_huber_loss_delta)(
        outputs["rpn_boxes"], labels["rpn_box_targets"])
    frcnn_cls = maskrcnn_losses.FastrcnnClassLoss()(
        outputs["class_outputs"], outputs["class_targets"])
    frcnn_box = maskrcnn_losses.FastrcnnBoxLoss(c.frcnn_huber_loss_delta)(
        outputs["box_outputs"], outputs["class_targets"],
        outputs["box_targets"])
    losses = {"rpn_score_loss": tf.reduce_mean(rpn_score),
              "rpn_box_loss": tf.reduce_mean(rpn_box),
              "frcnn_cls_loss": tf.reduce_mean(frcnn_cls),
              "frcnn_box_loss": tf.reduce_mean(frcnn_box)}
    losses["total_loss"] = tf.add_n(list(losses.values()))
    return losses

  def fit(self, dataset: tf.data.Dataset, steps: int, *,
          learning_rate: float = 1e-3, lr_drop_steps: Sequence[int] = (),
          momentum: float = 0.9, weight_decay: float = 1e-4,
          clip_norm: Optional[float] = 10.0, log=print,
          log_every: int = 100) -> List[float]:
    """Fine-tunes the whole detector with SGD + momentum.

    Args:
      dataset: batches from :meth:`train_dataset`.
      steps: training steps.
      learning_rate: initial rate, divided by 10 at each of
        ``lr_drop_steps``.
      weight_decay: L2 on conv/dense kernels (``wd * sum(w^2) / 2``).
      clip_norm: global gradient-norm clip (None: off); protects the first
        steps of a randomly initialised head.

    Returns:
      The total loss of every step.
    """
    tf_keras = _tf_keras()
    boundaries = sorted(int(s) for s in lr_drop_steps)
    values = [learning_rate * 0.1 ** k for k in range(len(boundaries) + 1)]
    schedule = (tf_keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, values) if boundaries else learning_rate)
    optimizer = tf_keras.optimizers.SGD(schedule, momentum=momentum,
                                        global_clipnorm=clip_norm)
    model = self.model
    variables = model.trainable_variables
    decayed = [v for v in variables if "kernel" in v.name]
    mixer = self.mixer

    @tf.function
    def step(images, labels):
      with tf.GradientTape() as tape:
        outputs = model(images, image_shape=labels["image_info"][:, 1, :],
                        anchor_boxes=labels["anchor_boxes"],
                        gt_boxes=labels["gt_boxes"],
                        gt_classes=labels["gt_classes"], training=True)
        losses = self.losses(outputs, labels)
        total = losses["total_loss"]
        if weight_decay and decayed:
          total += weight_decay * tf.add_n([tf.nn.l2_loss(v)
                                            for v in decayed])
        if mixer is not None:
          # The eval-lasso row's L1 penalty (its alpha is not a kernel).
          total += mixer.penalty()
      grads = tape.gradient(total, variables)
      optimizer.apply_gradients(zip(grads, variables))
      if mixer is not None:
        mixer.project()   # back onto sum alpha^2 = 1
      return losses

    history = []
    progress = Progress("detection", steps, log or (lambda _: None),
                        log_every if log else 0)
    for i, (images, labels) in enumerate(dataset.take(steps)):
      losses = step(images, labels)
      total = float(losses["total_loss"])
      if not math.isfinite(total):
        raise FloatingPointError(
            f"detection fine-tuning: non-finite loss at step {i}: "
            f"{ {k: float(v) for k, v in losses.items()} }")
      history.append(total)
      if log and ((i + 1) % log_every == 0 or i + 1 == steps):
        progress.update(i + 1, ", ".join(
            f"{k}={float(v):.4f}" for k, v in sorted(losses.items())))
    if log and mixer is not None:
      log("detection eval-lasso alpha: " + " ".join(
          f"{a:.3f}" for a in self.alpha()))
    return history

  def alpha(self) -> Optional[np.ndarray]:
    """The eval-lasso row's unit-norm alpha [N] (None without eval lasso)."""
    return None if self.mixer is None else self.mixer.alpha().numpy()

  def detect(self, dataset: tf.data.Dataset, batch_size: int = 1
             ) -> Tuple[List[Dict], List[Dict]]:
    """Runs the detector on package examples.

    Returns:
      (detections, ground_truths): one dict per image each, boxes in VOC
      pixel coordinates of the original image and 0-based classes, ready for
      :func:`~mtssl_tf.evaluation.voc_eval.voc07_map`.
    """
    size = self.config.image_size

    def prepare(example):
      out = resize_and_pad(example, size)
      n = tf.shape(example["classes"])[0]
      return out["image"], out["image_info"], {
          "boxes": tf.cast(example["boxes"], tf.float32),
          "classes": tf.cast(example["classes"], tf.int32),
          "difficult": tf.cast(example["difficult"], tf.bool), "n": n}

    ds = dataset.map(prepare).padded_batch(
        batch_size, padding_values=(0.0, 0.0, {
            "boxes": 0.0, "classes": -1, "difficult": False, "n": 0}))

    @tf.function
    def infer(images, image_info):
      return self.predict_raw(images, image_info[:, 1, :])

    detections, ground_truths = [], []
    for images, image_info, gt in ds:
      out = infer(images, image_info)
      scales = image_info[:, 2, :].numpy()
      for b in range(images.shape[0]):
        k = int(out["num_detections"][b])
        boxes = out["detection_boxes"][b, :k].numpy()
        boxes = boxes / np.tile(scales[b], 2)
        detections.append({
            "boxes": pixel_to_voc_boxes(boxes),
            "scores": out["detection_scores"][b, :k].numpy(),
            "classes": out["detection_classes"][b, :k].numpy() - 1})
        n = int(gt["n"][b])
        ground_truths.append({"boxes": gt["boxes"][b, :n].numpy(),
                              "classes": gt["classes"][b, :n].numpy(),
                              "difficult": gt["difficult"][b, :n].numpy()})
    return detections, ground_truths


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
