"""The Faster R-CNN hyper-parameters (:class:`DetectorConfig`) and the
feature level the detector reads from the trunk."""
from __future__ import annotations

import dataclasses
from typing import Tuple

from mtssl_tf.models.trunk import TrunkConfig

EVAL_TASK = "detection"   # the name of the detection task's mixer row


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
