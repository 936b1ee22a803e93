"""The Model Garden Faster R-CNN on a ``tf_keras`` copy of the trunk."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf.evaluation.detection.boxes import (_pad, make_anchors,
                                                 pixel_to_voc_boxes,
                                                 resize_and_pad)
from mtssl_tf.evaluation.detection.detector_config import (DetectorConfig,
                                                           feature_level)
from mtssl_tf.evaluation.detection.mixer import (_eval_unit_mixer_class,
                                                 _tf_keras)
from mtssl_tf.evaluation.detection.training import fine_tune
from mtssl_tf.models.trunk import (Trunk, TrunkConfig, build_trunk,
                                   copy_weights_by_name)


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
    """Fine-tunes the whole detector; see :func:`fine_tune`."""
    return fine_tune(self, dataset, steps, learning_rate=learning_rate,
                     lr_drop_steps=lr_drop_steps, momentum=momentum,
                     weight_decay=weight_decay, clip_norm=clip_norm, log=log,
                     log_every=log_every)

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
