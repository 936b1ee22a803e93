"""Exemplar: augmented views of one image form a pseudo-class.

Doersch & Zisserman, "Multi-task Self-Supervised Visual Learning", ICCV 2017,
Exemplar task (Dosovitskiy et al., NIPS 2014; triplet version as in Kolesnikov
et al., CVPR 2019): ``K = 8`` augmented views of each image share a label, the
head maps each view to an L2-normalised 1000-d embedding, and a semi-hard
triplet loss (margin 0.5) pulls views of one image together and pushes other
images away. Under several replicas the embeddings are gathered across replicas
before triplets are mined (:mod:`mtssl_tf.ops.losses`).

Augmentations (Dosovitskiy et al.'s set; parameters drawn independently per
view with ``tf.random.stateless_uniform``):

* Geometry, one projective warp per view: a square *seed region* of side
  ``region_fraction * min(H, W)`` is placed uniformly at random inside the
  image (one per image, shared by its views); each view translates it by up to
  ``max_translation`` of its side in x and y, scales it by ``s`` in
  ``scale_range`` (the view shows a square of side ``region / s``: ``s > 1``
  zooms in), rotates it by up to ``max_rotation_degrees`` and resamples it to
  ``crop_size`` x ``crop_size`` (bilinear). Samples that fall outside the
  image are reflected back in.
* Photometry on values scaled to [0, 1]: brightness shift in
  ``+-brightness_jitter``, contrast factor in ``1 +- contrast_jitter``
  (about each channel's mean), saturation factor in ``1 +- saturation_jitter``,
  hue shift in ``+-hue_jitter`` of the hue circle, then grey (ITU-R 601 luma,
  repeated to 3 channels) with probability ``grey_prob``, decided per view.

Values not fixed by the papers and chosen here: ``crop_size=96`` (a 6x6 block-3
map at output stride 16), ``region_fraction=0.5``, ``max_translation=0.2`` and
the jitter strengths.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
from mtssl_tf.utils.lazy_tf import tf

from mtssl_tf.ops import losses
from mtssl_tf.ops.image import check_min_size, ensure_rgb
from mtssl_tf.tasks import heldout_metrics
from mtssl_tf.tasks.task import Task, merge_leading_axes

# ITU-R 601 luma, the weights of tf.image.rgb_to_grayscale.
_LUMA = (0.2989, 0.5870, 0.1140)
# Columns of the per-view random draw (see _draw_view_params).
_NUM_VIEW_PARAMS = 9


def similarity_transforms(centers: tf.Tensor, steps: tf.Tensor,
                          angles: tf.Tensor, out_size: int) -> tf.Tensor:
  """Projective transforms [K, 8] for ``ImageProjectiveTransformV3``.

  Output pixel ``(x, y)`` (column, row; pixel centres at integers) samples the
  input at ``center + step * Rot(angle) @ (x - c, y - c)`` with
  ``c = (out_size - 1) / 2``: a square of side ``step * out_size`` input
  pixels centred at ``center``, rotated by ``angle`` radians. With y pointing
  down, ``angle = pi / 2`` gives ``np.rot90`` of the input.

  Args:
    centers: [K, 2] float, (x, y) in input pixel-index coordinates.
    steps: [K] float, input pixels per output pixel.
    angles: [K] float, radians.
    out_size: output side in pixels.
  """
  centers = tf.cast(centers, tf.float32)
  steps = tf.cast(steps, tf.float32)
  angles = tf.cast(angles, tf.float32)
  cos, sin = tf.cos(angles) * steps, tf.sin(angles) * steps
  half = (out_size - 1) / 2.0
  a2 = centers[:, 0] - half * (cos - sin)
  b2 = centers[:, 1] - half * (sin + cos)
  zeros = tf.zeros_like(cos)
  return tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)


def warp_views(image: tf.Tensor, transforms: tf.Tensor,
               out_size: int) -> tf.Tensor:
  """Resamples one image [H, W, 3] with K transforms -> [K, S, S, 3]."""
  num = tf.shape(transforms)[0]
  images = tf.tile(image[tf.newaxis], [num, 1, 1, 1])
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms,
      output_shape=tf.constant([out_size, out_size], tf.int32),
      fill_value=tf.constant(0.0, tf.float32), interpolation="BILINEAR",
      fill_mode="REFLECT")


def _rgb_to_grey(images: tf.Tensor) -> tf.Tensor:
  luma = tf.reduce_sum(images * tf.constant(_LUMA, images.dtype), axis=-1,
                       keepdims=True)
  return tf.repeat(luma, 3, axis=-1)


def example_id(example: Dict[str, tf.Tensor], seed: tf.Tensor,
               id_key: str = "id") -> tf.Tensor:
  """The int64 pseudo-class id of one example.

  ``example[id_key]`` when present (an integer is used as is, a string is
  hashed with ``tf.strings.to_hash_bucket_fast``); otherwise a 64-bit
  fingerprint of ``seed``, so an input pipeline that gives every example its
  own seed also gives it its own id. The id must be unique per source image
  across the *global* batch (all replicas): equal ids are one pseudo-class.
  """
  if id_key in example:
    value = tf.convert_to_tensor(example[id_key])
    if value.shape.rank not in (0, None):
      raise ValueError(f"example[{id_key!r}] must be a scalar, got shape "
                       f"{value.shape}.")
    if value.dtype == tf.string:
      return tf.strings.to_hash_bucket_fast(value, 2**63 - 1)
    if value.dtype.is_integer:
      return tf.cast(value, tf.int64)
    raise TypeError(f"example[{id_key!r}] must be an integer or a string, "
                    f"got {value.dtype.name}.")
  data = tf.cast(tf.reshape(seed, [1, 2]), tf.int64)
  return tf.bitcast(tf.fingerprint(data)[0], tf.int64)


def _check_seed(seed: tf.Tensor) -> tf.Tensor:
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64):
    raise TypeError(f"seed must be an int32/int64 tensor of shape [2], got "
                    f"{seed.dtype.name}.")
  if not seed.shape.is_compatible_with([2]):
    raise ValueError(f"seed must have shape [2], got {seed.shape}.")
  return tf.reshape(seed, [2])


@keras.saving.register_keras_serializable(package="mtssl_tf")
class ExemplarHead(keras.layers.Layer):
  """Exemplar head: global average pool, dense, L2 normalisation.

  Doersch & Zisserman, ICCV 2017 (Exemplar task): maps the mixed block-3
  feature map [N, h, w, C] of each view to a unit-norm embedding [N, D].

  Args:
    embedding_dim: embedding size D (1000 in the paper).

  Example:
    >>> head = ExemplarHead(embedding_dim=16)
    >>> head(np.zeros([4, 2, 2, 8], np.float32)).shape
    (4, 16)
  """

  def __init__(self, embedding_dim: int = 1000, **kwargs):
    super().__init__(**kwargs)
    if int(embedding_dim) < 1:
      raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}.")
    self.embedding_dim = int(embedding_dim)
    self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
    self.dense = keras.layers.Dense(self.embedding_dim, name="embedding")

  def build(self, input_shape):
    if len(input_shape) != 4:
      raise ValueError(
          f"ExemplarHead expects features [N, h, w, C], got {input_shape}.")
    self.dense.build((input_shape[0], input_shape[-1]))
    self.built = True

  def call(self, features):
    x = self.dense(self.pool(features))
    # Normalise in float32: under mixed precision a float16 norm of a
    # 1000-d vector can overflow or lose the unit length the margin assumes.
    x = keras.ops.cast(x, "float32")
    sq = keras.ops.sum(keras.ops.square(x), axis=-1, keepdims=True)
    return x * keras.ops.rsqrt(keras.ops.maximum(sq, 1e-12))

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.embedding_dim)

  def compute_output_spec(self, features):
    return keras.KerasTensor((features.shape[0], self.embedding_dim),
                             dtype="float32")

  def get_config(self):
    config = super().get_config()
    config.update(embedding_dim=self.embedding_dim)
    return config


class Exemplar(Task):
  """The Exemplar self-supervised task with a semi-hard triplet loss.

  Doersch & Zisserman, "Multi-task Self-Supervised Visual Learning", ICCV
  2017; Dosovitskiy et al., NIPS 2014; Kolesnikov et al., CVPR 2019. See the
  module docstring for the augmentations.

  Args:
    num_views: K, augmented views per image (8 in the paper); >= 2.
    crop_size: side of each view in pixels (our choice: 96).
    embedding_dim: embedding size (1000).
    margin: triplet margin (0.5).
    squared_distances: mine and score triplets with squared Euclidean
      distances (True, as the ``tf.contrib`` loss used by Kolesnikov et al.)
      or Euclidean ones.
    scale_range: (min, max) zoom factor of a view (0.7, 1.4).
    max_rotation_degrees: rotation range +- (20).
    max_translation: translation range +-, as a fraction of the seed region.
    region_fraction: seed-region side as a fraction of the shorter image side.
    brightness_jitter: brightness shift range +-, on the [0, 1] scale.
    contrast_jitter: contrast factor range 1 +-.
    saturation_jitter: saturation factor range 1 +-.
    hue_jitter: hue shift range +-, as a fraction of the hue circle (<= 0.5).
    grey_prob: probability that a view is turned grey (0.66).
    id_key: the example field holding the image id (see :func:`example_id`).

  Inputs and targets of ``preprocess``: views [K, S, S, 3] float32 in
  [0, 255] and the image's int64 id (scalar). Batched: [B, K, S, S, 3], [B].

  Example:
    >>> task = Exemplar(num_views=4, crop_size=32, embedding_dim=16)
    >>> views, image_id = task.preprocess({"image": tf.zeros([48, 64, 3])},
    ...                                   tf.constant([1, 2]))
    >>> views.shape
    TensorShape([4, 32, 32, 3])
  """

  name = "exemplar"
  autograph = False  # written with tf.cond; needs no AutoGraph (Task)

  def __init__(self, num_views: int = 8, crop_size: int = 96,
               embedding_dim: int = 1000, margin: float = 0.5,
               squared_distances: bool = True,
               scale_range: Sequence[float] = (0.7, 1.4),
               max_rotation_degrees: float = 20.0,
               max_translation: float = 0.2, region_fraction: float = 0.5,
               brightness_jitter: float = 0.1, contrast_jitter: float = 0.4,
               saturation_jitter: float = 0.4, hue_jitter: float = 0.1,
               grey_prob: float = 0.66, id_key: str = "id"):
    if int(num_views) < 2:
      raise ValueError(f"num_views must be >= 2 (a view needs a positive), "
                       f"got {num_views}.")
    if int(crop_size) < 16:
      raise ValueError(f"crop_size must be >= 16 (one block-3 cell), got "
                       f"{crop_size}.")
    if int(embedding_dim) < 1:
      raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}.")
    if not float(margin) > 0:
      raise ValueError(f"margin must be > 0, got {margin}.")
    scale_range = tuple(float(v) for v in scale_range)
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
      raise ValueError(f"scale_range must be (min, max) with 0 < min <= max, "
                       f"got {scale_range}.")
    if not 0 < float(region_fraction) <= 1:
      raise ValueError(f"region_fraction must be in (0, 1], got "
                       f"{region_fraction}.")
    if not 0 <= float(grey_prob) <= 1:
      raise ValueError(f"grey_prob must be in [0, 1], got {grey_prob}.")
    if not 0 <= float(hue_jitter) <= 0.5:
      raise ValueError(f"hue_jitter must be in [0, 0.5], got {hue_jitter}.")
    for key, value in (("max_rotation_degrees", max_rotation_degrees),
                       ("max_translation", max_translation),
                       ("brightness_jitter", brightness_jitter),
                       ("contrast_jitter", contrast_jitter),
                       ("saturation_jitter", saturation_jitter)):
      if not float(value) >= 0:
        raise ValueError(f"{key} must be >= 0, got {value}.")
    self.num_views = int(num_views)
    self.crop_size = int(crop_size)
    self.embedding_dim = int(embedding_dim)
    self.margin = float(margin)
    self.squared_distances = bool(squared_distances)
    self.scale_range = scale_range
    self.max_rotation_degrees = float(max_rotation_degrees)
    self.max_translation = float(max_translation)
    self.region_fraction = float(region_fraction)
    self.brightness_jitter = float(brightness_jitter)
    self.contrast_jitter = float(contrast_jitter)
    self.saturation_jitter = float(saturation_jitter)
    self.hue_jitter = float(hue_jitter)
    self.grey_prob = float(grey_prob)
    self.id_key = str(id_key)

  def get_config(self) -> Dict[str, Any]:
    return {
        "num_views": self.num_views, "crop_size": self.crop_size,
        "embedding_dim": self.embedding_dim, "margin": self.margin,
        "squared_distances": self.squared_distances,
        "scale_range": list(self.scale_range),
        "max_rotation_degrees": self.max_rotation_degrees,
        "max_translation": self.max_translation,
        "region_fraction": self.region_fraction,
        "brightness_jitter": self.brightness_jitter,
        "contrast_jitter": self.contrast_jitter,
        "saturation_jitter": self.saturation_jitter,
        "hue_jitter": self.hue_jitter, "grey_prob": self.grey_prob,
        "id_key": self.id_key,
    }

  # -- data --------------------------------------------------------------

  def _draw_view_params(self, seed: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Per-view augmentation parameters, each [K] (region centre: [2])."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    u = tf.random.stateless_uniform([self.num_views, _NUM_VIEW_PARAMS],
                                    seed=seeds[0])

    def sym(col, amplitude):  # uniform in [-amplitude, amplitude]
      return (2.0 * u[:, col] - 1.0) * amplitude

    lo, hi = self.scale_range
    return {
        "region_center": tf.random.stateless_uniform([2], seed=seeds[1]),
        "scale": lo + (hi - lo) * u[:, 0],
        "angle": sym(1, self.max_rotation_degrees * math.pi / 180.0),
        "shift_x": sym(2, self.max_translation),
        "shift_y": sym(3, self.max_translation),
        "brightness": sym(4, self.brightness_jitter),
        "contrast": 1.0 + sym(5, self.contrast_jitter),
        "saturation": 1.0 + sym(6, self.saturation_jitter),
        "hue": sym(7, self.hue_jitter),
        "grey": u[:, 8] < self.grey_prob,
    }

  def _geometric_transforms(self, height: tf.Tensor, width: tf.Tensor,
                            params: Dict[str, tf.Tensor]) -> tf.Tensor:
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    region = self.region_fraction * tf.minimum(height, width)
    # Region centre in edge coordinates (pixel i spans [i, i + 1)), chosen so
    # the seed region lies inside the image; -0.5 converts to pixel indices.
    free = tf.stack([width - region, height - region])
    center = region / 2.0 + params["region_center"] * free - 0.5
    shifts = tf.stack([params["shift_x"], params["shift_y"]], axis=1) * region
    centers = center[tf.newaxis, :] + shifts
    steps = region / params["scale"] / self.crop_size
    return similarity_transforms(centers, steps, params["angle"],
                                 self.crop_size)

  def _photometric(self, views: tf.Tensor,
                   params: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Colour augmentations of views [K, S, S, 3] in [0, 1]."""
    per_view = lambda v: v[:, tf.newaxis, tf.newaxis, tf.newaxis]
    views = views + per_view(params["brightness"])
    mean = tf.reduce_mean(views, axis=[1, 2], keepdims=True)
    views = (views - mean) * per_view(params["contrast"]) + mean
    views = tf.clip_by_value(views, 0.0, 1.0)
    if self.saturation_jitter > 0 or self.hue_jitter > 0:
      hsv = tf.image.rgb_to_hsv(views)
      hue = tf.math.floormod(hsv[..., 0] + per_view(params["hue"])[..., 0],
                             1.0)
      sat = tf.clip_by_value(
          hsv[..., 1] * per_view(params["saturation"])[..., 0], 0.0, 1.0)
      views = tf.image.hsv_to_rgb(tf.stack([hue, sat, hsv[..., 2]], axis=-1))
    views = tf.where(per_view(params["grey"]), _rgb_to_grey(views), views)
    return tf.clip_by_value(views, 0.0, 1.0)

  def augment(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """K augmented views [K, S, S, 3] (float32, [0, 255]) of one image."""
    image = ensure_rgb(image)
    if image.shape.rank != 3:
      raise ValueError(f"Exemplar.augment takes one image [H, W, C], got "
                       f"shape {image.shape}.")
    image = check_min_size(image, self.crop_size, self.crop_size,
                           f"Exemplar views of {self.crop_size}px")
    params = self._draw_view_params(_check_seed(seed))
    shape = tf.shape(image)
    transforms = self._geometric_transforms(shape[0], shape[1], params)
    views = warp_views(image / 255.0, transforms, self.crop_size)
    views = self._photometric(views, params)
    return views * 255.0

  def preprocess(self, example: Dict[str, tf.Tensor],
                 seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """``example["image"]`` -> (views [K, S, S, 3], int64 id), see class doc."""
    if "image" not in example:
      raise KeyError(f"Exemplar.preprocess needs example['image']; got keys "
                     f"{sorted(example)}.")
    seed = _check_seed(seed)
    return self.augment(example["image"], seed), example_id(
        example, seed, self.id_key)

  def trunk_images(self, inputs: Any) -> Any:
    """Views [B, K, S, S, 3] -> [B * K, S, S, 3] (image-major order)."""
    inputs = keras.ops.convert_to_tensor(inputs)
    if len(inputs.shape) != 5:
      raise ValueError(f"Exemplar inputs must be [B, K, S, S, 3], got shape "
                       f"{tuple(inputs.shape)}.")
    return merge_leading_axes(inputs)

  def build_head(self) -> keras.layers.Layer:
    return ExemplarHead(embedding_dim=self.embedding_dim, name="exemplar_head")

  # -- loss and metrics --------------------------------------------------

  def _labels(self, targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    targets = tf.convert_to_tensor(targets)
    outputs = tf.convert_to_tensor(outputs)
    if targets.shape.rank != 1:
      raise ValueError(f"Exemplar targets must be image ids [B], got shape "
                       f"{targets.shape}.")
    if outputs.shape.rank != 2:
      raise ValueError(f"Exemplar outputs must be embeddings [B*K, D], got "
                       f"shape {outputs.shape}.")
    if targets.shape[0] is not None and outputs.shape[0] is not None:
      if outputs.shape[0] != targets.shape[0] * self.num_views:
        raise ValueError(
            f"{outputs.shape[0]} embeddings for {targets.shape[0]} images; "
            f"expected images x num_views = "
            f"{targets.shape[0] * self.num_views}.")
    # View k of image b is row b * K + k (trunk_images' order).
    return tf.repeat(targets, self.num_views)

  def loss(self, targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Per-image loss [B]: mean over the image's K anchors.

    Triplets are mined over the global batch (all replicas); every anchor
    has its K - 1 sibling views as positives, so the trainer's sum over the
    global batch divided by the global batch size is exactly the semi-hard
    triplet loss of the global batch.
    """
    labels = self._labels(targets, outputs)
    per_anchor = losses.cross_replica_triplet_loss_per_anchor(
        labels, outputs, margin=self.margin, squared=self.squared_distances)
    return tf.reduce_mean(tf.reshape(per_anchor, [-1, self.num_views]), axis=1)

  def metrics(self, targets: tf.Tensor,
              outputs: tf.Tensor) -> Dict[str, tf.Tensor]:
    """``active_triplets``: fraction of positive pairs with a non-zero term;
    ``nn_same_image``: fraction of views whose nearest other view in the
    global batch comes from the same image."""
    labels = self._labels(targets, outputs)
    num_local = tf.shape(labels)[0]
    all_emb, offset = losses.gather_across_replicas(
        tf.cast(outputs, tf.float32))
    all_labels, _ = losses.gather_across_replicas(labels)
    terms, positives = losses.semi_hard_triplet_terms(
        all_labels, all_emb, self.margin, offset, num_local,
        self.squared_distances)
    active = tf.math.divide_no_nan(
        tf.reduce_sum(tf.cast(tf.logical_and(positives, terms > 0),
                              tf.float32)),
        tf.reduce_sum(tf.cast(positives, tf.float32)))
    dist = losses.pairwise_distances(all_emb[offset:offset + num_local],
                                     all_emb, anchor_offset=offset)
    rows = tf.range(num_local) + offset
    is_self = tf.equal(rows[:, tf.newaxis],
                       tf.range(tf.shape(all_emb)[0])[tf.newaxis, :])
    dist = tf.where(is_self, tf.constant(float("inf")), dist)
    nearest = tf.gather(all_labels, tf.argmin(dist, axis=1))
    own = all_labels[offset:offset + num_local]
    nn_acc = tf.reduce_mean(tf.cast(tf.equal(nearest, own), tf.float32))
    return {"active_triplets": active, "nn_same_image": nn_acc}

  def xla_incompatibility(self, num_replicas: int) -> Optional[str]:
    if num_replicas > 1:
      # The triplets are mined over embeddings all-gathered across replicas
      # inside the loss; a cross-replica call cannot sit inside a compiled
      # function nested in strategy.run.
      return "the cross-replica gather of its triplet loss"
    return None

  # -- held-out pretext metric (mtssl_tf.training.pretext_eval) ----------

  headline_metric = "top1"
  # Retrieval among N distinct held-out images: each image once.
  one_pass_heldout = True

  def heldout_scores(self, batches, outputs) -> Dict[str, float]:
    """View-retrieval top-1 among the N held-out images' K views (see
    :func:`mtssl_tf.tasks.heldout_metrics.retrieval_top1`) beside 1/N."""
    k = self.num_views
    embeddings = np.concatenate(
        [np.asarray(o).reshape(-1, k, np.asarray(o).shape[-1])
         for o in outputs])
    n = embeddings.shape[0]
    return {"top1": heldout_metrics.retrieval_top1(embeddings),
            "chance": 1.0 / n, "images": float(n)}

  @classmethod
  def heldout_table(cls, scores):
    return [(f"retrieval top-1 (N={int(scores['images'])})", scores["top1"],
             scores["chance"], "1/N")]


__all__ = ["Exemplar", "ExemplarHead", "example_id", "similarity_transforms",
           "warp_views"]
