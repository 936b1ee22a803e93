"""Motion segmentation: predict from one frame which pixels move.

Doersch & Zisserman (ICCV 2017) use motion segmentation (Pathak et al., CVPR
2017, "Learning Features by Watching Objects Move") as one of their four
self-supervised tasks: the network sees a single video frame and classifies
every pixel as moving or static; labels come from an unsupervised motion
segmentation of the video. The loss is a per-pixel two-class cross-entropy.

Where the pieces live:

* :mod:`mtssl_tf.motion`: optical flow, camera-motion compensation, masks,
  TFRecord writing and :func:`mtssl_tf.motion.motion_dataset` (the examples
  this task preprocesses);
* :mod:`mtssl_tf.make_motion_masks`: the command that turns videos into those
  TFRecords;
* here: :class:`MotionSegmentationHead` and :class:`MotionSegmentation`.

The user guide is ``docs/motion_segmentation.md``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
from mtssl_tf.utils.lazy_tf import tf

from mtssl_tf.ops.image import check_min_size, ensure_rgb
from mtssl_tf.tasks import heldout_metrics
from mtssl_tf.tasks.task import Task

# Output stride of the trunk's block 3: heads see [N, ceil(S/16), ceil(S/16)].
FEATURE_STRIDE = 16
NUM_CLASSES = 2  # 0 = static, 1 = moving


@keras.saving.register_keras_serializable(package="mtssl_tf")
class MotionSegmentationHead(keras.layers.Layer):
  """Per-pixel moving/static classifier on the trunk's feature map.

  Doersch & Zisserman (ICCV 2017) do not describe the head; this one is our
  choice, in the pre-activation style of the ResNet-v2 trunk (whose block-3
  output is not normalised): BN, ReLU, then ``num_hidden_layers`` x (3x3 conv
  to ``hidden_channels``, BN, ReLU), then a 1x1 conv to 2 logits, resized
  bilinearly to ``output_size`` x ``output_size``. Logits are upsampled
  rather than the targets downsampled so that the mask keeps the detail of
  object boundaries at a resolution finer than stride 16.

  Args:
    output_size: side of the output logits; ``None`` keeps the feature map's
      resolution.
    hidden_channels: width of the hidden 3x3 convs.
    num_hidden_layers: how many hidden 3x3 convs (0: BN, ReLU, 1x1 conv).
    **kwargs: Keras layer arguments (``name``, ``dtype``, ...).

  Example:
    >>> head = MotionSegmentationHead(output_size=16, hidden_channels=32)
    >>> logits = head(np.zeros([2, 4, 4, 64], np.float32))  # [2, 16, 16, 2]
  """

  def __init__(self, output_size: Optional[int] = 56,
               hidden_channels: int = 256, num_hidden_layers: int = 1,
               **kwargs):
    super().__init__(**kwargs)
    if output_size is not None and int(output_size) < 1:
      raise ValueError(f"output_size must be >= 1 or None, got {output_size}.")
    if hidden_channels < 1:
      raise ValueError(f"hidden_channels must be >= 1, got {hidden_channels}.")
    if num_hidden_layers < 0:
      raise ValueError(
          f"num_hidden_layers must be >= 0, got {num_hidden_layers}.")
    self.output_size = None if output_size is None else int(output_size)
    self.hidden_channels = int(hidden_channels)
    self.num_hidden_layers = int(num_hidden_layers)
    self.norm_in = keras.layers.BatchNormalization(epsilon=1e-5,
                                                   name="norm_in")
    self.convs = []
    self.norms = []
    for i in range(self.num_hidden_layers):
      self.convs.append(keras.layers.Conv2D(
          self.hidden_channels, 3, padding="same", use_bias=False,
          name=f"conv_hidden{i + 1}"))
      self.norms.append(keras.layers.BatchNormalization(
          epsilon=1e-5, name=f"norm_hidden{i + 1}"))
    self.classifier = keras.layers.Conv2D(NUM_CLASSES, 1, name="classifier")

  def build(self, input_shape):
    if len(input_shape) != 4:
      raise ValueError(
          f"MotionSegmentationHead expects features [N, h, w, C], got shape "
          f"{tuple(input_shape)}.")
    self.norm_in.build(input_shape)
    shape = tuple(input_shape)
    for conv, norm in zip(self.convs, self.norms):
      conv.build(shape)
      shape = shape[:-1] + (self.hidden_channels,)
      norm.build(shape)
    self.classifier.build(shape)
    self.built = True

  def call(self, features, training=None):
    x = keras.ops.relu(self.norm_in(features, training=training))
    for conv, norm in zip(self.convs, self.norms):
      x = keras.ops.relu(norm(conv(x), training=training))
    # Float32 logits under any dtype policy, as every head returns (the
    # layers before compute in the policy's dtype). Before the resize:
    # bilinear resizing computes in float32 whatever it is given, and an
    # explicit cast keeps the backward pass in one precision per op (XLA
    # refuses a bfloat16/float32 mix).
    logits = keras.ops.cast(self.classifier(x), "float32")
    if self.output_size is not None:
      logits = keras.ops.image.resize(
          logits, (self.output_size, self.output_size),
          interpolation="bilinear")
    return logits

  def compute_output_shape(self, input_shape):
    if self.output_size is None:
      return tuple(input_shape[:-1]) + (NUM_CLASSES,)
    return (input_shape[0], self.output_size, self.output_size, NUM_CLASSES)

  def compute_output_spec(self, features, training=None):
    # Float32 outputs under any dtype policy (see call).
    return keras.KerasTensor(self.compute_output_shape(features.shape),
                             dtype="float32")

  def get_config(self):
    config = super().get_config()
    config.update(output_size=self.output_size,
                  hidden_channels=self.hidden_channels,
                  num_hidden_layers=self.num_hidden_layers)
    return config


def binary_mask(mask: tf.Tensor, name: str = "mask") -> tf.Tensor:
  """A motion mask as uint8 [H, W] in {0, 1}.

  Accepted: [H, W] or [H, W, 1]; bool, any integer dtype (non-zero = moving,
  so {0, 1} and {0, 255} masks both work) or float (>= 0.5 = moving, so
  probabilities and {0, 1} floats work).

  Raises:
    TypeError: string or complex dtype.
    ValueError: wrong rank or a trailing dimension other than 1.
  """
  mask = tf.convert_to_tensor(mask)
  rank = mask.shape.rank
  if rank == 3:
    if mask.shape[-1] != 1:
      raise ValueError(
          f"{name}: shape {mask.shape}; expected [H, W] or [H, W, 1].")
    mask = mask[..., 0]
  elif rank != 2:
    raise ValueError(
        f"{name}: shape {mask.shape}; expected [H, W] or [H, W, 1].")
  if mask.dtype == tf.bool:
    moving = mask
  elif mask.dtype.is_integer:
    moving = tf.not_equal(mask, 0)
  elif mask.dtype.is_floating:
    moving = mask >= 0.5
  else:
    raise TypeError(
        f"{name}: dtype {mask.dtype.name} is not supported; expected bool, "
        "an integer dtype (non-zero = moving) or a float dtype (>= 0.5 = "
        "moving).")
  return tf.cast(moving, tf.uint8)


class MotionSegmentation(Task):
  """Motion segmentation task (Pathak et al. 2017, as used in Doersch &
  Zisserman, ICCV 2017).

  Examples are ``{"image": frame, "mask": motion mask}`` as made by
  ``python -m mtssl_tf.make_motion_masks`` and read by
  :func:`mtssl_tf.motion.motion_dataset`. ``preprocess`` rescales the frame
  so that its shorter side is ``crop_size * s``, ``s`` uniform in
  ``scale_range`` (``None``: no rescaling), takes the same random
  ``crop_size`` crop and left-right flip of frame and mask, and resizes the
  mask to ``output_size`` with nearest neighbour. The head classifies every
  output pixel as static (0) or moving (1); the loss is the per-pixel
  two-class softmax cross-entropy, averaged over the pixels of each example
  (moving pixels weighted by ``moving_weight``).

  Args:
    crop_size: side of the square crop fed to the trunk (the paper trains at
      224, as its ImageNet-style tasks; our choice where not stated).
    output_size: side of the predicted mask; ``None`` = the feature map's
      resolution ``ceil(crop_size / 16)``. Default 56 (stride 4).
    hidden_channels, num_hidden_layers: see :class:`MotionSegmentationHead`.
    scale_range: ``(low, high)`` of the random rescaling, or ``None``.
    flip: random left-right flips.
    min_image_size: frames whose shorter side is smaller than this are
      rejected (upsampling them would invent the detail the task learns
      from); ``None`` = ``crop_size // 4``. With ``scale_range=None`` frames
      must be at least ``crop_size``.
    moving_weight: weight of a moving pixel's cross-entropy (static pixels
      weigh 1). 1 (default) is the plain loss; our choice for small runs
      where few pixels move: without it the head predicts "static" almost
      everywhere, whose IoU is 0.

  Example:
    >>> task = MotionSegmentation(crop_size=64, output_size=16)
    >>> inputs, targets = task.preprocess(
    ...     {"image": frame, "mask": mask}, seed=tf.constant([1, 2]))
    >>> inputs.shape, targets.shape   # (64, 64, 3), (16, 16)
  """

  name = "motion_segmentation"
  autograph = False  # written with tf.cond; needs no AutoGraph (Task)
  reads_motion_masks = True

  def __init__(self, crop_size: int = 224, output_size: Optional[int] = 56,
               hidden_channels: int = 256, num_hidden_layers: int = 1,
               scale_range: Optional[Sequence[float]] = (1.0, 1.25),
               flip: bool = True, min_image_size: Optional[int] = None,
               moving_weight: float = 1.0):
    if crop_size < FEATURE_STRIDE:
      raise ValueError(
          f"crop_size must be >= {FEATURE_STRIDE}, got {crop_size}.")
    if output_size is not None and not 1 <= output_size <= crop_size:
      raise ValueError(
          f"output_size must be in [1, crop_size={crop_size}] or None, got "
          f"{output_size}.")
    if scale_range is not None:
      scale_range = tuple(float(s) for s in scale_range)
      if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(
            f"scale_range must be (low, high) with 0 < low <= high, got "
            f"{scale_range}.")
      if scale_range[0] < 1:
        raise ValueError(
            f"scale_range low must be >= 1 (the rescaled shorter side must "
            f"hold a crop_size crop), got {scale_range}.")
    if min_image_size is not None and min_image_size < 1:
      raise ValueError(f"min_image_size must be >= 1, got {min_image_size}.")
    if not moving_weight > 0:
      raise ValueError(f"moving_weight must be > 0, got {moving_weight}.")
    self.moving_weight = float(moving_weight)
    self.crop_size = int(crop_size)
    self.output_size = None if output_size is None else int(output_size)
    self.hidden_channels = int(hidden_channels)
    self.num_hidden_layers = int(num_hidden_layers)
    self.scale_range = scale_range
    self.flip = bool(flip)
    self.min_image_size = (self.crop_size // 4 if min_image_size is None
                           else int(min_image_size))

  @property
  def target_size(self) -> int:
    """Side of the target masks (and of the head's output)."""
    if self.output_size is None:
      return math.ceil(self.crop_size / FEATURE_STRIDE)
    return self.output_size

  def get_config(self) -> Dict[str, Any]:
    return {"crop_size": self.crop_size, "output_size": self.output_size,
            "hidden_channels": self.hidden_channels,
            "num_hidden_layers": self.num_hidden_layers,
            "scale_range": (None if self.scale_range is None
                            else list(self.scale_range)),
            "flip": self.flip, "min_image_size": self.min_image_size,
            "moving_weight": self.moving_weight}

  def preprocess(self, example: Dict[str, tf.Tensor],
                 seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """(frame float32 [S, S, 3] in [0, 255], mask int32 [o, o] in {0, 1}).

    Raises:
      KeyError: the example has no ``"image"`` or no ``"mask"``.
      TypeError / ValueError: see :func:`mtssl_tf.ops.image.ensure_rgb` and
        :func:`binary_mask`; frame and mask of different sizes; a frame
        smaller than the task needs (``tf.errors.InvalidArgumentError`` when
        the sizes are only known at run time, inside ``tf.data``).
    """
    for key in ("image", "mask"):
      if key not in example:
        raise KeyError(
            f"motion segmentation needs example[{key!r}]; got keys "
            f"{sorted(example)}")
    image = ensure_rgb(example["image"])
    if image.shape.rank != 3:
      raise ValueError(
          f"image: preprocess takes one frame [H, W, C], got shape "
          f"{image.shape}; map it over an unbatched dataset.")
    mask = binary_mask(example["mask"])
    image = self._check_sizes(image, mask)
    crop = self.crop_size
    seeds = tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num=3)

    if self.scale_range is not None:
      shape = tf.cast(tf.shape(image)[:2], tf.float32)
      scale = tf.random.stateless_uniform(
          [], seeds[0], self.scale_range[0], self.scale_range[1])
      factor = crop * scale / tf.reduce_min(shape)
      # max(crop, .) guards against rounding just below the crop size.
      size = tf.maximum(tf.cast(tf.math.ceil(shape * factor), tf.int32), crop)
      image = tf.image.resize(image, size, method="bilinear", antialias=True)
      image = tf.clip_by_value(image, 0.0, 255.0)
      mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]

    # Crop frame and mask together so they stay aligned.
    stacked = tf.concat([image, tf.cast(mask, tf.float32)[..., None]], -1)
    stacked = tf.image.stateless_random_crop(stacked, [crop, crop, 4],
                                             seed=seeds[1])
    if self.flip:
      stacked = tf.image.stateless_random_flip_left_right(stacked,
                                                          seed=seeds[2])
    inputs = stacked[..., :3]
    o = self.target_size
    targets = tf.image.resize(stacked[..., 3:], [o, o],
                              method="nearest")[..., 0]
    return inputs, tf.cast(tf.round(targets), tf.int32)

  def _check_sizes(self, image: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    min_side = self.crop_size if self.scale_range is None \
        else self.min_image_size
    image = check_min_size(image, min_side, min_side, "motion segmentation")
    ih, iw = image.shape[0], image.shape[1]
    mh, mw = mask.shape[0], mask.shape[1]
    if None not in (ih, iw, mh, mw):
      if (ih, iw) != (mh, mw):
        raise ValueError(
            f"mask of {mh}x{mw} pixels does not match its image of {ih}x{iw}.")
      return image
    with tf.control_dependencies([tf.debugging.assert_equal(
        tf.shape(image)[:2], tf.shape(mask)[:2],
        message="motion segmentation: mask size does not match its image")]):
      return tf.identity(image)

  unusable_reason = "no moving pixel in its motion mask"

  def usable(self, example: Dict[str, tf.Tensor]) -> tf.Tensor:
    """False for a frame whose mask marks nothing as moving: a source made
    only of such frames (videos without motion) cannot teach the task."""
    if "mask" not in example:
      return tf.constant(True)
    return tf.reduce_any(tf.convert_to_tensor(example["mask"]) > 0)

  def trunk_images(self, inputs: Any) -> Any:
    return inputs

  def build_head(self) -> MotionSegmentationHead:
    return MotionSegmentationHead(
        output_size=self.target_size if self.output_size is not None else None,
        hidden_channels=self.hidden_channels,
        num_hidden_layers=self.num_hidden_layers,
        name="motion_segmentation_head")

  def loss(self, targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Mean per-pixel softmax cross-entropy of each example, shape [B];
    moving pixels weigh ``moving_weight``.

    Args:
      targets: int [B, o, o] in {0, 1}.
      outputs: logits [B, o, o, 2] (computed in float32 whatever their dtype).
    """
    logits, targets = self._check_outputs(targets, outputs)
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=logits)
    if self.moving_weight != 1.0:
      per_pixel *= tf.where(targets == 1, self.moving_weight, 1.0)
    return tf.reduce_mean(per_pixel, axis=[1, 2])

  def metrics(self, targets: tf.Tensor,
              outputs: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Pixel accuracy and IoU of the moving class, means over the batch.

    An example where neither prediction nor target has a moving pixel has
    IoU 1 (nothing to find, nothing found).
    """
    logits, targets = self._check_outputs(targets, outputs)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    accuracy = tf.reduce_mean(
        tf.cast(tf.equal(predicted, targets), tf.float32), axis=[1, 2])
    pred_moving = tf.equal(predicted, 1)
    true_moving = tf.equal(targets, 1)
    inter = tf.reduce_sum(tf.cast(pred_moving & true_moving, tf.float32),
                          axis=[1, 2])
    union = tf.reduce_sum(tf.cast(pred_moving | true_moving, tf.float32),
                          axis=[1, 2])
    iou = tf.where(union > 0, inter / tf.maximum(union, 1.0), 1.0)
    return {"pixel_accuracy": tf.reduce_mean(accuracy),
            "moving_iou": tf.reduce_mean(iou)}

  @classmethod
  def data_problem(cls, data) -> Optional[str]:
    # Photos carry no motion: the masks come from videos (the offline set's,
    # a TFDS dataset's) or from TFRecords made beforehand.
    if data.source not in ("offline", "tfds") and not data.motion_records:
      return ("task motion_segmentation needs --motion_records (TFRecords "
              "made by `python -m mtssl_tf.make_motion_masks`) unless "
              "data=offline or data=tfds (which reads the TFDS dataset "
              "--motion_tfds_name)")
    return None

  # -- held-out pretext metric (mtssl_tf.training.pretext_eval) ----------

  headline_metric = "iou"

  def heldout_scores(self, batches, outputs) -> Dict[str, float]:
    """IoU of the moving class (pooled over pixels) beside the all-static
    prediction's (0) and the all-moving one's."""
    truth = np.concatenate([np.asarray(t) for _, t in batches]).astype(bool)
    pred = np.concatenate([np.argmax(o, axis=-1) for o in outputs]) == 1
    static = np.zeros_like(truth)
    iou = heldout_metrics.binary_iou
    return {"iou": iou(pred, truth),
            "chance": iou(static, truth),
            "iou_all_moving": iou(np.ones_like(truth), truth),
            "pixel_accuracy": float(np.mean(pred == truth)),
            "pixel_accuracy_all_static": float(np.mean(~truth)),
            "examples": float(len(truth))}

  @classmethod
  def heldout_table(cls, scores):
    return [("IoU moving", scores["iou"], scores["chance"], "all static"),
            ("IoU moving", scores["iou"], scores["iou_all_moving"],
             "all moving")]

  def _check_outputs(self, targets, outputs):
    logits = tf.cast(outputs, tf.float32)
    targets = tf.cast(targets, tf.int32)
    if logits.shape.rank != 4 or logits.shape[-1] != NUM_CLASSES:
      raise ValueError(
          f"motion segmentation outputs must be logits [B, o, o, 2], got "
          f"shape {logits.shape}.")
    if targets.shape.rank != 3:
      raise ValueError(
          f"motion segmentation targets must be [B, o, o], got shape "
          f"{targets.shape}.")
    if (targets.shape[1:].is_fully_defined() and
        logits.shape[1:3].is_fully_defined() and
        targets.shape[1:] != logits.shape[1:3]):
      raise ValueError(
          f"targets {targets.shape} and logits {logits.shape} differ in "
          "spatial size: the head's output_size must match the task's.")
    return logits, targets
