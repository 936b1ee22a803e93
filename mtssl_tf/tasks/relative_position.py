"""Relative position: which of the 8 neighbours of a centre patch is a patch?

Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning by
Context Prediction", ICCV 2015; used as the "RP" task of Doersch & Zisserman,
"Multi-task Self-Supervised Visual Learning", ICCV 2017.

A 3x3 grid of ``patch_size`` patches separated by ``gap`` pixels is placed at a
random position in the image; the centre patch and one of its 8 neighbours
(chosen uniformly) are cropped, each moved independently by up to ``jitter``
pixels in each direction. Labels are ``0..7`` for the paper's positions
``1..8`` (``label = position - 1``), numbered in image row/column order around
the centre patch::

    1 2 3        0 1 2
    4 _ 5   ->   3 _ 4
    6 7 8        5 6 7

Both patches go through the shared trunk (siamese); :class:`RelativePositionHead`
pools each patch's features, embeds them with one shared dense layer,
concatenates (centre, neighbour) and classifies with fully connected layers.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
from mtssl_tf.utils.lazy_tf import tf

from mtssl_tf.ops.image import check_min_size, ensure_rgb
from mtssl_tf.tasks import heldout_metrics
from mtssl_tf.tasks.task import Task, merge_leading_axes

COLOR_MODES = ("drop", "harmonize", "none")
POOLINGS = ("mean", "flatten")
AUGMENTS = ("none", "flip", "dihedral")
NUM_CLASSES = 8
# Held-out 8-way accuracy of a uniform guess.
CHANCE = 1.0 / NUM_CLASSES

# (row, column) of each label's patch in the 3x3 grid; the centre is (1, 1).
GRID_POSITIONS = ((0, 0), (0, 1), (0, 2),
                  (1, 0), (1, 2),
                  (2, 0), (2, 1), (2, 2))

# The trunk subtracts this mean (the Slim release's); filling dropped channels
# around it makes them reach the trunk as zero-mean noise, as in the 2015
# Caffe pipeline where the noise replaced mean-subtracted values.
_RGB_MEAN = (123.68, 116.779, 103.939)

# Independent random streams, so that e.g. turning colour dropping on or off
# leaves the patch positions of a given seed unchanged.
_STREAM_RESCALE = 1
_STREAM_LABEL = 2
_STREAM_ORIGIN = 3
_STREAM_AUGMENT = 4
_STREAM_PATCH = (10, 20)  # centre, neighbour; + offsets below
_SUB_JITTER = 0
_SUB_DOWNSAMPLE = 1
_SUB_COLOR = 2


def _fold(seed: tf.Tensor, stream: int) -> tf.Tensor:
  return tf.random.experimental.stateless_fold_in(seed, stream)


def _uniform_int(seed: tf.Tensor, low, high_inclusive, shape=()) -> tf.Tensor:
  """Stateless integers uniform in [low, high_inclusive]."""
  return tf.random.stateless_uniform(
      shape, seed, minval=tf.cast(low, tf.int32),
      maxval=tf.cast(high_inclusive, tf.int32) + 1, dtype=tf.int32)


class RelativePosition(Task):
  """The relative-position task (Doersch et al., ICCV 2015).

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (task "RP"), after Doersch, Gupta & Efros, ICCV 2015.

  Example:
    >>> task = RelativePosition(patch_size=32, gap=16, jitter=4,
    ...                         rescale_pixels=None)
    >>> inputs, label = task.preprocess({"image": image}, seed=[1, 2])
    >>> inputs.shape  # centre patch first, then the neighbour
    TensorShape([2, 32, 32, 3])

  Args:
    patch_size: side of the square patches, in pixels (paper: 96).
    gap: pixels between neighbouring grid cells (paper: 48).
    jitter: each patch moves by an integer offset uniform in
      [-jitter, jitter] along each axis, independently (paper: 7).
    color_mode: defence against chromatic aberration. ``"drop"``: per patch,
      one channel chosen uniformly is kept and the other two are replaced by
      Gaussian noise around the trunk's channel mean with standard deviation
      ``noise_std`` times the kept channel's standard deviation in that patch
      (2015 paper: 1/100); the two patches choose independently, as in the
      2015 method. ``"harmonize"``: Lab L (scaled to [0, 255]) copied to three
      channels, the input colorization sees (2017 paper, "RP / H").
      ``"none"``: RGB unchanged.
    downsample_prob: probability that a patch is downsampled to a random side
      in [downsample_min, downsample_max] pixels and upsampled back (paper:
      0.33, 10..95 px for 96 px patches). Decided per patch.
    downsample_min: smallest downsampled side (paper: 10).
    downsample_max: largest downsampled side (paper: 95). For patches smaller
      than the paper's, the range is clamped: the upper end to
      ``patch_size - 1`` and the lower end to at most the upper end (see
      :attr:`downsample_range`).
    rescale_pixels: ``(low, high)``: the image is first resized, keeping its
      aspect ratio, to an area drawn uniformly in [low, high] pixels (paper:
      150K..450K), then enlarged further if its shorter side would not hold
      the jittered 3x3 grid (at paper values a square image of 150K pixels
      has 387 px sides, less than the 398 px the grid needs). ``None`` keeps
      the image as it is; it must then hold the grid.
    noise_std: noise of dropped channels, as a fraction of the kept channel's
      standard deviation (paper: 0.01).
    embedding_units: width of the shared per-patch embedding (2015 paper's
      fc6: 4096).
    hidden_units: widths of the fully connected layers after the
      concatenation (2015 paper's fc7, fc8: 4096, 4096).
    pooling: how the head reads each patch's feature map [h, w, C] before
      the embedding: ``"mean"`` (global average pooling: our choice, keeps
      the head independent of the patch size) or ``"flatten"`` (the 2015
      paper's fc6 read the whole spatial map; needs a fixed patch size, which
      :class:`~mtssl_tf.models.MultiTaskModel` passes to the head). See
      docs/relative_position.md for why this matters.
    input_norm: start the head with batch norm + ReLU on the block-3 map
      (our choice: the ResNet-v2 "postnorm" that Slim puts after the last
      block, and what the colorization and motion heads do), because the
      trunk's block-3 output is an un-normalised residual sum. Off by
      default so that heads saved before it existed load unchanged.
    fc_norm: batch norm between each dense layer of the head and its ReLU
      (embedding and ``hidden_units``). Without it the wide embedding's ReLUs
      all die within a few hundred steps at demo scale and the output
      collapses to uniform (docs/relative_position.md). [R] The 2015 method
      trained its network with batch norm; off by default, as above.
    augment: ``"none"`` (the papers), ``"flip"`` (mirror the image
      left-right with probability 1/2) or ``"dihedral"`` (one of the 8
      symmetries of the square: flips and transpose) before the grid is
      placed; labels follow the new geometry. Our choice for small image
      sets: with about 30 training images RP otherwise learns where each
      image's content sits instead of anything that transfers
      (docs/relative_position.md).

  Inputs/targets of :meth:`preprocess`: ``inputs`` float32 [2, P, P, 3] in
  [0, 255], centre patch first; ``targets`` int32 label in 0..7.
  """

  name = "relative_position"
  autograph = False  # written with tf.cond; needs no AutoGraph (Task)

  def __init__(self,
               patch_size: int = 96,
               gap: int = 48,
               jitter: int = 7,
               color_mode: str = "drop",
               downsample_prob: float = 0.33,
               downsample_min: int = 10,
               downsample_max: int = 95,
               rescale_pixels: Optional[Sequence[int]] = (150000, 450000),
               noise_std: float = 0.01,
               embedding_units: int = 4096,
               hidden_units: Sequence[int] = (4096, 4096),
               pooling: str = "mean",
               input_norm: bool = False,
               fc_norm: bool = False,
               augment: str = "none"):
    if augment not in AUGMENTS:
      raise ValueError(
          f"unknown augment {augment!r}; allowed values: "
          f"{', '.join(repr(m) for m in AUGMENTS)}")
    self.augment = augment
    if color_mode not in COLOR_MODES:
      raise ValueError(
          f"unknown color_mode {color_mode!r}; allowed values: "
          f"{', '.join(repr(m) for m in COLOR_MODES)}")
    if pooling not in POOLINGS:
      raise ValueError(
          f"unknown pooling {pooling!r}; allowed values: "
          f"{', '.join(repr(m) for m in POOLINGS)}")
    if int(patch_size) < 1:
      raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if int(gap) < 0 or int(jitter) < 0:
      raise ValueError(f"gap and jitter must be >= 0, got {gap}, {jitter}")
    if not 0.0 <= float(downsample_prob) <= 1.0:
      raise ValueError(
          f"downsample_prob must be in [0, 1], got {downsample_prob}")
    if not 1 <= int(downsample_min) <= int(downsample_max):
      raise ValueError(
          "need 1 <= downsample_min <= downsample_max, got "
          f"{downsample_min}, {downsample_max}")
    if float(noise_std) < 0:
      raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    if rescale_pixels is not None:
      rescale_pixels = tuple(int(v) for v in rescale_pixels)
      if len(rescale_pixels) != 2 or not (
          0 < rescale_pixels[0] <= rescale_pixels[1]):
        raise ValueError(
            "rescale_pixels must be None or (low, high) with 0 < low <= high, "
            f"got {rescale_pixels}")
    if int(embedding_units) < 1 or any(int(u) < 1 for u in hidden_units):
      raise ValueError(
          f"embedding_units and hidden_units must be >= 1, got "
          f"{embedding_units}, {list(hidden_units)}")
    self.patch_size = int(patch_size)
    self.gap = int(gap)
    self.jitter = int(jitter)
    self.color_mode = color_mode
    self.downsample_prob = float(downsample_prob)
    self.downsample_min = int(downsample_min)
    self.downsample_max = int(downsample_max)
    self.rescale_pixels = rescale_pixels
    self.noise_std = float(noise_std)
    self.embedding_units = int(embedding_units)
    self.hidden_units = tuple(int(u) for u in hidden_units)
    self.pooling = pooling
    self.input_norm = bool(input_norm)
    self.fc_norm = bool(fc_norm)

  def get_config(self) -> Dict[str, Any]:
    return {
        "patch_size": self.patch_size,
        "gap": self.gap,
        "jitter": self.jitter,
        "color_mode": self.color_mode,
        "downsample_prob": self.downsample_prob,
        "downsample_min": self.downsample_min,
        "downsample_max": self.downsample_max,
        "rescale_pixels": (None if self.rescale_pixels is None
                           else list(self.rescale_pixels)),
        "noise_std": self.noise_std,
        "embedding_units": self.embedding_units,
        "hidden_units": list(self.hidden_units),
        "pooling": self.pooling,
        "input_norm": self.input_norm,
        "fc_norm": self.fc_norm,
        "augment": self.augment,
    }

  # --- geometry -------------------------------------------------------------

  @property
  def cell_stride(self) -> int:
    """Distance between the top-left corners of neighbouring grid cells."""
    return self.patch_size + self.gap

  @property
  def min_image_size(self) -> int:
    """Smallest image side that holds the jittered 3x3 grid."""
    return 3 * self.patch_size + 2 * self.gap + 2 * self.jitter

  @property
  def downsample_range(self) -> Tuple[int, int]:
    """The (min, max) downsampled side actually used for this patch size."""
    high = max(1, min(self.downsample_max, self.patch_size - 1))
    return min(self.downsample_min, high), high

  def rescale_image(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Resizes ``image`` [H, W, 3] as ``rescale_pixels`` says (see class doc).

    Returns the image unchanged when ``rescale_pixels`` is None.
    """
    if self.rescale_pixels is None:
      return image
    low, high = self.rescale_pixels
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    area = tf.random.stateless_uniform(
        [], seed, minval=float(low), maxval=float(high))
    scale = tf.sqrt(area / (h * w))
    scale = tf.maximum(scale, self.min_image_size / tf.minimum(h, w))
    # The max() guards against float rounding just under the grid size.
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32),
                       self.min_image_size)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32),
                       self.min_image_size)
    return tf.image.resize(image, tf.stack([new_h, new_w]),
                           method="bilinear", antialias=True)

  def augment_image(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The whole image, mirrored and turned as ``augment`` says (before the
    grid is placed, so labels follow the new geometry).

    ``"flip"``: left-right with probability 1/2. ``"dihedral"``: one of the
    8 symmetries of the square, uniformly (left-right flip, up-down flip and
    transpose, each with probability 1/2). ``seed`` is the example's seed;
    the coins come from their own stream of it.
    """
    if self.augment == "none":
      return image
    coins = tf.random.stateless_uniform(
        [3], _fold(seed, _STREAM_AUGMENT)) < 0.5
    image = tf.cond(coins[0], lambda: tf.reverse(image, [1]), lambda: image)
    if self.augment == "dihedral":
      image = tf.cond(coins[1], lambda: tf.reverse(image, [0]),
                      lambda: image)
      image = tf.cond(coins[2], lambda: tf.transpose(image, [1, 0, 2]),
                      lambda: image)
    return image

  # --- per-patch appearance ---------------------------------------------------

  def _downsample(self, patch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    if self.downsample_prob <= 0.0:
      return patch
    low, high = self.downsample_range
    do_it = tf.random.stateless_uniform(
        [], _fold(seed, 0)) < self.downsample_prob
    side = _uniform_int(_fold(seed, 1), low, high)
    # Antialiasing on the way down so that small sides average the patch
    # rather than sample it (the point is to remove fine detail).
    small = tf.image.resize(patch, tf.stack([side, side]), method="bilinear",
                            antialias=True)
    back = tf.image.resize(small, [self.patch_size, self.patch_size],
                           method="bilinear")
    return tf.where(do_it, back, patch)

  def _drop_color(self, patch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    keep = _uniform_int(_fold(seed, 0), 0, 2)
    kept = tf.gather(patch, keep, axis=-1)
    std = tf.math.reduce_std(kept) * self.noise_std
    noise = tf.random.stateless_normal(tf.shape(patch), _fold(seed, 1))
    noise = tf.clip_by_value(noise * std + tf.constant(_RGB_MEAN), 0.0, 255.0)
    is_kept = tf.cast(tf.one_hot(keep, 3), tf.bool)
    return tf.where(is_kept, patch, noise)

  # --- Task interface ---------------------------------------------------------

  def preprocess(self, example: Dict[str, tf.Tensor],
                 seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Makes ``(patches [2, P, P, 3] float32, label int32)`` from one image."""
    image = ensure_rgb(example["image"])
    if image.shape.rank != 3:
      raise ValueError(
          f"image: expected one image [H, W, C], got shape {image.shape}")
    seed = tf.convert_to_tensor(seed)
    image = self.rescale_image(image, _fold(seed, _STREAM_RESCALE))
    image = self.augment_image(image, seed)
    need = self.min_image_size
    image = check_min_size(
        image, need, need,
        f"the relative-position 3x3 grid (3*{self.patch_size} patch + "
        f"2*{self.gap} gap + 2*{self.jitter} jitter)")

    label = _uniform_int(_fold(seed, _STREAM_LABEL), 0, NUM_CLASSES - 1)
    shape = tf.shape(image)
    grid = 3 * self.patch_size + 2 * self.gap
    origin_seed = _fold(seed, _STREAM_ORIGIN)
    # The origin leaves `jitter` pixels on every side so jittered patches stay
    # inside the image.
    y0 = _uniform_int(_fold(origin_seed, 0), self.jitter,
                      shape[0] - grid - self.jitter)
    x0 = _uniform_int(_fold(origin_seed, 1), self.jitter,
                      shape[1] - grid - self.jitter)
    cells = tf.constant(GRID_POSITIONS, tf.int32)
    neighbour = tf.gather(cells, label)
    grid_cells = [tf.constant([1, 1], tf.int32), neighbour]

    patches = []
    for cell, stream in zip(grid_cells, _STREAM_PATCH):
      patch_seed = _fold(seed, stream)
      jitter = _uniform_int(_fold(patch_seed, _SUB_JITTER), -self.jitter,
                            self.jitter, shape=[2])
      top_left = tf.stack([y0, x0]) + cell * self.cell_stride + jitter
      patch = tf.slice(image, tf.concat([top_left, [0]], 0),
                       [self.patch_size, self.patch_size, 3])
      patch = self._downsample(patch, _fold(patch_seed, _SUB_DOWNSAMPLE))
      if self.color_mode == "drop":
        patch = self._drop_color(patch, _fold(patch_seed, _SUB_COLOR))
      patches.append(patch)
    patches = tf.stack(patches)
    if self.color_mode == "harmonize":
      # Imported here so that this module loads without the colour ops.
      from mtssl_tf.ops.color import rgb_to_harmonized  # pylint: disable=g-import-not-at-top
      patches = rgb_to_harmonized(patches)
    patches = tf.ensure_shape(
        tf.cast(patches, tf.float32),
        [2, self.patch_size, self.patch_size, 3])
    return patches, label

  def trunk_images(self, inputs: Any) -> Any:
    """[B, 2, P, P, 3] -> [2B, P, P, 3], example-major.

    Row ``2i`` is example ``i``'s centre patch and row ``2i + 1`` its
    neighbour, so the head regroups pairs with a plain reshape.
    """
    inputs = keras.ops.convert_to_tensor(inputs)
    if len(inputs.shape) != 5 or inputs.shape[1] != 2:
      raise ValueError(
          f"relative position inputs must be [B, 2, P, P, 3], got "
          f"{tuple(inputs.shape)}")
    return merge_leading_axes(inputs)

  def build_head(self) -> "RelativePositionHead":
    return RelativePositionHead(embedding_units=self.embedding_units,
                                hidden_units=list(self.hidden_units),
                                num_classes=NUM_CLASSES,
                                pooling=self.pooling,
                                input_norm=self.input_norm,
                                fc_norm=self.fc_norm)

  def trunk_image_shape(self) -> Tuple[int, int, int]:
    """The shape of one image the trunk sees, [P, P, 3] (fixed for RP), so
    that a ``"flatten"`` head can be built before the first batch."""
    return (self.patch_size, self.patch_size, 3)

  def loss(self, targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy per example, [B]."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.int32), logits=tf.cast(outputs, tf.float32))

  def metrics(self, targets: tf.Tensor,
              outputs: tf.Tensor) -> Dict[str, tf.Tensor]:
    predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
    correct = tf.cast(tf.equal(predicted, tf.cast(targets, tf.int32)),
                      tf.float32)
    return {"accuracy": tf.reduce_mean(correct)}

  # -- held-out pretext metric (mtssl_tf.training.pretext_eval) ----------

  headline_metric = "accuracy"

  def heldout_scores(self, batches, outputs) -> Dict[str, float]:
    """8-way accuracy of the held-out pairs beside a uniform guess's
    (:data:`CHANCE`, 1/8)."""
    labels = np.concatenate([np.asarray(t).reshape(-1) for _, t in batches])
    logits = np.concatenate(outputs)
    return {"accuracy": heldout_metrics.rp_accuracy(logits, labels),
            "chance": CHANCE, "examples": float(len(labels))}

  @classmethod
  def heldout_table(cls, scores):
    return [("8-way accuracy", scores["accuracy"], scores["chance"],
             "uniform guess")]


@keras.saving.register_keras_serializable(package="mtssl_tf")
class RelativePositionHead(keras.layers.Layer):
  """Pair head of the relative-position task.

  Reference: Doersch, Gupta & Efros, ICCV 2015 (Fig. 3: per-patch fc6,
  concatenation, fc7, fc8, 8-way softmax), as the RP head of Doersch &
  Zisserman, ICCV 2017.

  Takes the trunk features of both patches of every pair, example-major as
  :meth:`RelativePosition.trunk_images` orders them: [2B, h, w, C], row ``2i``
  the centre patch of pair ``i`` and row ``2i + 1`` its neighbour. With
  ``input_norm`` the map first goes through batch norm and ReLU. Each patch
  is read as a vector (``pooling="mean"``: global average pooling, our
  choice; ``"flatten"``: the whole [h, w, C] map, as the 2015 paper's fc6
  read pool5) and embedded by one shared ReLU dense layer; the
  pair's embeddings are concatenated (centre, neighbour) into [B, 2E] and
  pass through ReLU dense layers of ``hidden_units`` and a final linear layer
  giving ``num_classes`` logits [B, num_classes].

  Example:
    >>> head = RelativePositionHead(embedding_units=64, hidden_units=[64])
    >>> head(np.zeros([4, 2, 2, 32], np.float32)).shape
    (2, 8)

  Args:
    embedding_units: width of the per-patch embedding.
    hidden_units: widths of the dense layers after the concatenation.
    num_classes: number of logits (8 relative positions).
    pooling: ``"mean"`` or ``"flatten"`` (above). A ``"flatten"`` head must
      be built with static h and w (``build((None, h, w, C))``), which fix
      the embedding's input width h * w * C.
    input_norm: batch norm + ReLU on the features before anything else (the
      trunk's block-3 output is not normalised; see the task's docstring).
    fc_norm: batch norm between every dense layer and its ReLU (see the
      task's docstring).
  """

  def __init__(self, embedding_units: int, hidden_units: Sequence[int],
               num_classes: int = NUM_CLASSES, pooling: str = "mean",
               input_norm: bool = False, fc_norm: bool = False, **kwargs):
    super().__init__(**kwargs)
    if pooling not in POOLINGS:
      raise ValueError(
          f"unknown pooling {pooling!r}; allowed values: "
          f"{', '.join(repr(m) for m in POOLINGS)}")
    self.pooling = pooling
    self.input_norm = bool(input_norm)
    self.fc_norm = bool(fc_norm)
    self.embedding_units = int(embedding_units)
    self.hidden_units = [int(u) for u in hidden_units]
    self.num_classes = int(num_classes)
    # Slim's BN epsilon, as the other heads.
    self.norm_in = (keras.layers.BatchNormalization(epsilon=1e-5,
                                                    name="norm_in")
                    if self.input_norm else None)
    # With fc_norm the ReLU comes after the batch norm, and the dense layer
    # needs no bias (the norm's beta is one).
    act = None if self.fc_norm else "relu"
    self.embedding = keras.layers.Dense(
        self.embedding_units, activation=act, use_bias=not self.fc_norm,
        name="embedding")
    self.hidden = [keras.layers.Dense(u, activation=act,
                                      use_bias=not self.fc_norm,
                                      name=f"fc_{i}")
                   for i, u in enumerate(self.hidden_units)]
    self.norm_embedding = (keras.layers.BatchNormalization(
        epsilon=1e-5, name="norm_embedding") if self.fc_norm else None)
    self.norm_hidden = [
        keras.layers.BatchNormalization(epsilon=1e-5, name=f"norm_fc_{i}")
        for i in range(len(self.hidden_units))] if self.fc_norm else []
    self.logits = keras.layers.Dense(self.num_classes, name="logits")

  def build(self, input_shape):
    if len(input_shape) != 4:
      raise ValueError(
          f"RelativePositionHead expects features [2B, h, w, C], got "
          f"{input_shape}")
    if self.norm_in is not None:
      self.norm_in.build(input_shape)
    width = input_shape[-1]
    if self.pooling == "flatten":
      if input_shape[1] is None or input_shape[2] is None:
        raise ValueError(
            "RelativePositionHead(pooling='flatten') needs the feature map's "
            f"spatial size at build time, got {input_shape}; build it with "
            "(None, h, w, C) or use pooling='mean'")
      width = input_shape[1] * input_shape[2] * input_shape[-1]
    self._flat_width = int(width)
    self.embedding.build((None, width))
    if self.fc_norm:
      self.norm_embedding.build((None, self.embedding_units))
      for norm, units in zip(self.norm_hidden, self.hidden_units):
        norm.build((None, units))
    width = 2 * self.embedding_units
    for layer in self.hidden:
      layer.build((None, width))
      width = layer.units
    self.logits.build((None, width))

  def embed(self, features, training=None):
    """Per-patch embeddings [2B, E] (after the ReLU), for the pair layers
    and for diagnostics (e.g. counting dead units)."""
    if self.norm_in is not None:
      features = keras.ops.relu(self.norm_in(features, training=training))
    if self.pooling == "flatten":
      pooled = keras.ops.reshape(features, (-1, self._flat_width))
    else:
      pooled = keras.ops.mean(features, axis=(1, 2))
    embedded = self.embedding(pooled)
    if self.fc_norm:
      embedded = keras.ops.relu(
          self.norm_embedding(embedded, training=training))
    return embedded

  def call(self, features, training=None):
    rows = features.shape[0]
    if rows is not None and rows % 2:
      raise ValueError(
          f"RelativePositionHead needs an even number of feature rows "
          f"(centre, neighbour pairs), got {rows}")
    embedded = self.embed(features, training=training)
    # Example-major rows: consecutive (centre, neighbour) rows become one
    # row [centre | neighbour].
    x = keras.ops.reshape(embedded, (-1, 2 * self.embedding_units))
    for i, layer in enumerate(self.hidden):
      x = layer(x)
      if self.fc_norm:
        x = keras.ops.relu(self.norm_hidden[i](x, training=training))
    # Float32 logits under any dtype policy, as every head returns (the
    # layers before compute in the policy's dtype).
    return keras.ops.cast(self.logits(x), "float32")

  def compute_output_shape(self, input_shape):
    batch = input_shape[0]
    return (None if batch is None else batch // 2, self.num_classes)

  def compute_output_spec(self, features, training=None):
    # Float32 outputs under any dtype policy (see call).
    return keras.KerasTensor(self.compute_output_shape(features.shape),
                             dtype="float32")

  def get_config(self):
    config = super().get_config()
    config.update({"embedding_units": self.embedding_units,
                   "hidden_units": list(self.hidden_units),
                   "num_classes": self.num_classes,
                   "pooling": self.pooling,
                   "input_norm": self.input_norm,
                   "fc_norm": self.fc_norm})
    return config
