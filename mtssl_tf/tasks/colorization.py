"""Colorization: predict each pixel's ab colour from the lightness alone.

Zhang, Isola & Efros, "Colorful Image Colorization" (ECCV 2016), as used by
Doersch & Zisserman, "Multi-task Self-Supervised Visual Learning" (ICCV
2017). The trunk sees the *harmonized* image (Lab L * 2.55 on three
channels); the head classifies the ab colour of every position of the
stride-16 feature map into Q bins (the 313 of Zhang et al. by default);
the loss is a cross-entropy against *soft-encoded* targets (a Gaussian over
the k nearest bins), re-weighted per pixel by how rare the pixel's colour is
(class rebalancing) and masked on grey images.

Where the pieces live:

* colour conversions: :mod:`mtssl_tf.ops.color`;
* bins, empirical prior, rebalancing weights and the prior command:
  :mod:`mtssl_tf.colorization_prior`;
* here: soft encoding, annealed-mean decoding, :class:`ColorizationHead`,
  :class:`Colorization` (the task) and :func:`colorize` (logits -> an RGB
  image a person can look at).

The user guide is ``docs/colorization.md``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import keras
import numpy as np
from mtssl_tf.utils.lazy_tf import tf

from mtssl_tf.tasks import colorization_bins as prior_lib
from mtssl_tf.ops import color
from mtssl_tf.ops.image import check_min_size, ensure_rgb, limit_image_size
from mtssl_tf.tasks import heldout_metrics
from mtssl_tf.tasks.task import PrepareContext, Task

# Zhang et al.'s annealed-mean temperature: between the mean (T=1, dull
# colours) and the mode (T->0, vivid but patchy).
DEFAULT_TEMPERATURE = 0.38
# The grey test of Colorization.usable looks at the image this small: cheap
# inside tf.data, and a colour region still shows after area averaging.
USABLE_THUMBNAIL = 64

ArrayOrPath = Union[None, str, Sequence[Any], np.ndarray]


def _bins_tensor(bins: Any) -> tf.Tensor:
  if bins is None:
    bins = prior_lib.load_ab_bins_313()
  if isinstance(bins, tf.Tensor):
    bins = tf.cast(bins, tf.float32)
  else:
    bins = tf.constant(prior_lib.check_bins(bins))
  if bins.shape.rank != 2 or bins.shape[-1] != 2:
    raise ValueError(f"ab bins must have shape [Q, 2], got {bins.shape}.")
  return bins


def soft_encode(ab: tf.Tensor, bins: Any = None, num_neighbors: int = 5,
                sigma: float = 5.0) -> tf.Tensor:
  """Soft-encodes ab values over the bins (Zhang et al. 2016, Sec. 2.1).

  Each ab value gets weights ``exp(-d^2 / (2 sigma^2))`` on its
  ``num_neighbors`` nearest bins (d: Euclidean distance in ab), normalised to
  sum to 1; all other bins get 0.

  Args:
    ab: [..., 2] float ab values.
    bins: [Q, 2] bin centres (the 313 of Zhang et al. when None).
    num_neighbors: k, the number of bins that share each value (1 gives the
      one-hot nearest bin).
    sigma: Gaussian width in ab units.

  Returns:
    [..., Q] float32 distributions.
  """
  bins = _bins_tensor(bins)
  num_bins = bins.shape[0]
  if not 1 <= num_neighbors <= num_bins:
    raise ValueError(
        f"num_neighbors must be in [1, {num_bins}], got {num_neighbors}.")
  if sigma <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma}.")
  ab = tf.convert_to_tensor(ab)
  if not ab.dtype.is_floating:
    raise TypeError(f"ab values must be float, got {ab.dtype.name}.")
  if ab.shape.rank is None or ab.shape[-1] != 2:
    raise ValueError(f"ab values must have shape [..., 2], got {ab.shape}.")
  ab = tf.cast(ab, tf.float32)
  flat = tf.reshape(ab, [-1, 2])
  d2 = tf.reduce_sum(
      tf.square(flat[:, tf.newaxis, :] - bins[tf.newaxis, :, :]), axis=-1)
  neg_d2, idx = tf.math.top_k(-d2, k=num_neighbors)
  # Shifting by the nearest distance before exp() keeps far-away values
  # (out-of-range ab) from underflowing to an all-zero row.
  logits = (neg_d2 - neg_d2[:, :1]) / (2.0 * sigma ** 2)
  weights = tf.nn.softmax(logits, axis=-1)
  encoded = tf.reduce_sum(
      tf.one_hot(idx, num_bins, dtype=tf.float32) * weights[..., tf.newaxis],
      axis=-2)
  return tf.reshape(encoded,
                    tf.concat([tf.shape(ab)[:-1], [num_bins]], axis=0))


def nearest_bin(ab: tf.Tensor, bins: Any = None) -> tf.Tensor:
  """Index [...] (int32) of the nearest bin of each ab value [..., 2]."""
  bins = _bins_tensor(bins)
  ab = tf.cast(tf.convert_to_tensor(ab), tf.float32)
  d2 = tf.reduce_sum(
      tf.square(ab[..., tf.newaxis, :] - bins), axis=-1)
  return tf.argmin(d2, axis=-1, output_type=tf.int32)


def decode_annealed_mean(logits: Any, bins: Any = None,
                         temperature: float = DEFAULT_TEMPERATURE) -> Any:
  """The annealed mean of the predicted ab distribution (Zhang et al. Eq. 5).

  ``f_T(z) = exp(log z / T) / sum exp(log z / T)``, which for
  ``z = softmax(logits)`` is ``softmax(logits / T)``; the decoded colour is
  ``sum_q f_T(z)_q * bin_q``. T = 1 is the mean, T -> 0 the mode.

  Args:
    logits: [..., Q] per-pixel logits (the head's output).
    bins: [Q, 2] bin centres (the 313 of Zhang et al. when None).
    temperature: T > 0.

  Returns:
    [..., 2] float32 ab.
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  # Keras ops only: the decode runs under any Keras backend, as the head.
  bins = (prior_lib.load_ab_bins_313() if bins is None
          else prior_lib.check_bins(bins))
  logits = keras.ops.cast(keras.ops.convert_to_tensor(logits), "float32")
  if len(logits.shape) < 1 or logits.shape[-1] != bins.shape[0]:
    raise ValueError(f"logits must have shape [..., {bins.shape[0]}] (one per "
                     f"bin), got {tuple(logits.shape)}.")
  probs = keras.ops.softmax(logits / temperature, axis=-1)
  return keras.ops.tensordot(probs, keras.ops.convert_to_tensor(bins),
                             axes=[[-1], [0]])


def colorize(l_image: tf.Tensor, logits: tf.Tensor, bins: Any = None,
             temperature: float = DEFAULT_TEMPERATURE) -> tf.Tensor:
  """Combines a lightness image with predicted colours into RGB.

  The ab decoded by :func:`decode_annealed_mean` at the logits' resolution
  are resized (bilinear) to the image's size and joined with its L channel.

  Args:
    l_image: the harmonized image the network saw, [H, W, C] or
      [N, H, W, C] with C = 3 (as made by
      :func:`mtssl_tf.ops.color.rgb_to_harmonized`) or 1; values in [0, 255]
      (``L * 2.55``).
    logits: [h, w, Q] or [N, h, w, Q], matching ``l_image``'s batch.
    bins: [Q, 2] bin centres (the 313 when None).
    temperature: the annealed-mean temperature.

  Returns:
    RGB float32 in [0, 255], the shape of ``l_image`` with 3 channels.
  """
  lightness = color.harmonized_to_lightness(l_image)
  logits = tf.convert_to_tensor(logits)
  if lightness.shape.rank != logits.shape.rank - 1 or \
      lightness.shape.rank not in (2, 3):
    raise ValueError(
        f"l_image {tuple(l_image.shape)} and logits {tuple(logits.shape)} "
        "must both be unbatched ([H, W, C], [h, w, Q]) or both batched.")
  batched = lightness.shape.rank == 3
  if not batched:
    lightness, logits = lightness[tf.newaxis], logits[tf.newaxis]
  ab = decode_annealed_mean(logits, bins, temperature)
  ab = tf.image.resize(ab, tf.shape(lightness)[1:3], method="bilinear")
  rgb = color.lab_to_rgb(tf.concat([lightness[..., tf.newaxis], ab], -1))
  return rgb if batched else rgb[0]


@keras.saving.register_keras_serializable(package="mtssl_tf")
class ColorizationHead(keras.layers.Layer):
  """Per-pixel Q-way ab classifier on the trunk's feature map.

  Doersch & Zisserman (ICCV 2017) do not describe the head; this one is our
  choice, in the pre-activation style of the ResNet-v2 trunk (whose block-3
  output is not normalised): BN, ReLU, 3x3 conv to ``hidden_channels``, BN,
  ReLU, 1x1 conv to ``num_bins`` logits (with ``hidden_channels=0``: BN,
  ReLU, 1x1 conv). The output keeps the feature map's resolution (stride 16).

  The head also carries the task's ab bins and empirical prior in its config,
  so that a saved model holds what it needs to decode its predictions
  (``head.decode(logits)``) and to know which prior it was trained with.

  Args:
    num_bins: Q, the number of ab bins.
    hidden_channels: width of the 3x3 conv; 0 for none.
    ab_bins: [Q, 2] bin centres as nested lists; None for the 313 of Zhang
      et al. (then ``num_bins`` must be 313).
    prior: [Q] prior the model was trained with, as a list; None for none
      (uniform).
    **kwargs: Keras layer arguments (``name``, ``dtype``, ...).

  Example:
    >>> head = ColorizationHead(hidden_channels=64)
    >>> logits = head(np.zeros([2, 4, 4, 32], np.float32))  # [2, 4, 4, 313]
  """

  def __init__(self, num_bins: int = 313, hidden_channels: int = 256,
               ab_bins: Optional[Sequence[Sequence[float]]] = None,
               prior: Optional[Sequence[float]] = None, **kwargs):
    super().__init__(**kwargs)
    bins = (prior_lib.load_ab_bins_313() if ab_bins is None
            else prior_lib.check_bins(ab_bins))
    if len(bins) != num_bins:
      raise ValueError(f"num_bins={num_bins} but {len(bins)} ab bins were "
                       "given (None means the 313 of Zhang et al.).")
    if hidden_channels < 0:
      raise ValueError(f"hidden_channels must be >= 0, got {hidden_channels}.")
    self.num_bins = int(num_bins)
    self.hidden_channels = int(hidden_channels)
    # NumPy arrays, not lists: Keras would wrap list attributes for tracking.
    self._bins = bins
    self._bins_given = ab_bins is not None
    self._prior = (None if prior is None else
                   prior_lib.check_prior(prior, num_bins))
    self.norm_in = keras.layers.BatchNormalization(epsilon=1e-5,
                                                   name="norm_in")
    if self.hidden_channels:
      self.conv_hidden = keras.layers.Conv2D(
          self.hidden_channels, 3, padding="same", use_bias=False,
          name="conv_hidden")
      self.norm_hidden = keras.layers.BatchNormalization(epsilon=1e-5,
                                                         name="norm_hidden")
    self.classifier = keras.layers.Conv2D(self.num_bins, 1,
                                          name="classifier")

  def build(self, input_shape):
    self.norm_in.build(input_shape)
    shape = input_shape
    if self.hidden_channels:
      self.conv_hidden.build(shape)
      shape = tuple(shape[:-1]) + (self.hidden_channels,)
      self.norm_hidden.build(shape)
    self.classifier.build(shape)
    self.built = True

  def call(self, features, training=None):
    x = keras.ops.relu(self.norm_in(features, training=training))
    if self.hidden_channels:
      x = self.conv_hidden(x)
      x = keras.ops.relu(self.norm_hidden(x, training=training))
    # Float32 logits under any dtype policy, as every head returns (the
    # layers before compute in the policy's dtype).
    return keras.ops.cast(self.classifier(x), "float32")

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.num_bins,)

  def compute_output_spec(self, features, training=None):
    # Float32 outputs under any dtype policy (see call).
    return keras.KerasTensor(self.compute_output_shape(features.shape),
                             dtype="float32")

  @property
  def bins(self) -> np.ndarray:
    """The [Q, 2] ab bin centres the logits index."""
    return np.array(self._bins)

  @property
  def prior(self) -> Optional[np.ndarray]:
    """The [Q] prior the head was built with (None: uniform)."""
    return None if self._prior is None else np.array(self._prior)

  def decode(self, logits, temperature: float = DEFAULT_TEMPERATURE):
    """Annealed-mean ab [..., 2] of this head's logits."""
    return decode_annealed_mean(logits, self._bins, temperature)

  def get_config(self):
    config = super().get_config()
    config.update(num_bins=self.num_bins,
                  hidden_channels=self.hidden_channels,
                  ab_bins=self._bins.tolist() if self._bins_given else None,
                  prior=None if self._prior is None else self._prior.tolist())
    return config


def _resolve_bins_and_prior(bins: ArrayOrPath, prior: ArrayOrPath
                            ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """(bins [Q, 2], prior [Q] or None) from the task's ``bins``/``prior``."""
  file_bins = file_prior = None
  if isinstance(prior, str) and prior == prior_lib.PRIOR_AUTO:
    raise ValueError(
        "prior='auto' (computed from the training images) is resolved by the "
        "trainer (Colorization.prepare, before the run builds the task); give "
        "the task a prior file, 'imagenet', 'uniform' or [Q] values.")
  if isinstance(prior, str) and prior == prior_lib.PRIOR_UNIFORM:
    prior = None
  elif isinstance(prior, str) and prior == prior_lib.PRIOR_IMAGENET:
    # Zhang et al.'s released prior belongs to their 313 bins only.
    file_bins = prior_lib.load_ab_bins_313()
    file_prior = prior_lib.load_imagenet_prior()
  elif isinstance(prior, str):
    file_bins, file_prior = prior_lib.load_prior(prior)
  if isinstance(bins, str):
    bins = prior_lib.load_prior(bins)[0]
  if bins is None:
    bins = file_bins if file_bins is not None else \
        prior_lib.load_ab_bins_313()
  bins = prior_lib.check_bins(bins)
  if file_prior is not None:
    if file_bins.shape != bins.shape or not np.array_equal(file_bins, bins):
      raise ValueError(
          f"the prior file {prior!r} was computed for {len(file_bins)} other "
          f"ab bins than the task's {len(bins)}; recompute it for these bins "
          "or leave `bins` unset to use the file's.")
    return bins, file_prior
  if prior is None:
    return bins, None
  return bins, prior_lib.check_prior(prior, len(bins))


def _is_auto(prior: Any) -> bool:
  return isinstance(prior, str) and prior == prior_lib.PRIOR_AUTO


def _to_config_value(value: Any) -> Any:
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, (list, tuple)):
    return [_to_config_value(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


class Colorization(Task):
  """Colorization task (Zhang et al. 2016) as in Doersch & Zisserman 2017.

  Data op: random ``crop_size`` crop (and random left-right flip) of the RGB
  image; inputs = the harmonized crop (L * 2.55 on 3 channels, [S, S, 3]);
  targets = the crop's ab channels [S, S, 2]. The loss brings the targets to
  the logits' resolution (``target_resize``: area average by default), soft
  encodes them, and returns the per-pixel cross-entropy weighted by the
  rebalancing weight of each pixel's nearest bin, masked on grey images and
  averaged over the positions of each example.

  Args:
    crop_size: S, the side of the square training crop (224, the input size
      of Zhang et al.'s released network; any multiple of 16 keeps the
      logits at exactly S / 16). Smaller images raise an error.
    num_neighbors: k of the soft encoding (5, Zhang et al.'s paper; their
      training code uses 10).
    sigma: Gaussian width of the soft encoding in ab units (5, paper and
      code).
    gamma: class-rebalancing mix with the uniform distribution (0.5).
    prior: the empirical bin prior: ``"imagenet"`` (Zhang et al.'s released
      ImageNet prior over their 313 bins, the paper configs' setting), a
      path to an ``.npz`` written by ``python -m mtssl_tf.colorization_prior``
      (which also sets the bins when ``bins`` is None), or [Q]
      probabilities; None or ``"uniform"`` means uniform, which makes every
      rebalancing weight 1 (no rebalancing). In training, an unset prior
      (or ``"auto"``) is computed from the training images before the
      trainer builds the task (:meth:`Colorization.prepare`).
    bins: the ab bins: None for the 313 of Zhang et al. (or the prior file's),
      a path to a prior ``.npz``, or [Q, 2] centres.
    grey_mask: ``"image"`` (Zhang et al.: an image whose every pixel has
      |a|, |b| <= ``grey_threshold`` contributes no loss), ``"pixel"`` (each
      such position of the target map contributes none) or ``"none"``.
    grey_threshold: in ab units (5, Zhang et al.'s code).
    temperature: annealed-mean temperature for decoding (0.38).
    flip: random left-right flip in the data op.
    target_resize: how the ab targets reach the logits' size: ``"area"``
      (block average) or ``"nearest"`` (subsampling, as Zhang et al.'s code).
    hidden_channels: width of the head's 3x3 conv (see
      :class:`ColorizationHead`).

  Example:
    >>> task = Colorization(crop_size=64, prior="prior.npz")
    >>> inputs, targets = task.preprocess({"image": image}, seed=[1, 2])
    >>> head = task.build_head()
    >>> per_example_loss = task.loss(targets_batch, head(features))
  """

  name = "colorization"
  autograph = False  # written with tf.cond; needs no AutoGraph (Task)

  def __init__(self, crop_size: int = 224, num_neighbors: int = 5,
               sigma: float = 5.0, gamma: float = 0.5,
               prior: ArrayOrPath = None, bins: ArrayOrPath = None,
               grey_mask: str = "image", grey_threshold: float = 5.0,
               temperature: float = DEFAULT_TEMPERATURE, flip: bool = True,
               target_resize: str = "area", hidden_channels: int = 256):
    if int(crop_size) != crop_size or crop_size < 1:
      raise ValueError(f"crop_size must be a positive int, got {crop_size}.")
    if grey_mask not in prior_lib.GREY_MASK_MODES:
      raise ValueError(f"grey_mask must be one of "
                       f"{prior_lib.GREY_MASK_MODES}, got {grey_mask!r}.")
    if target_resize not in ("area", "nearest"):
      raise ValueError(
          f"target_resize must be 'area' or 'nearest', got {target_resize!r}.")
    if temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {temperature}.")
    if sigma <= 0:
      raise ValueError(f"sigma must be > 0, got {sigma}.")
    self._config = dict(
        crop_size=int(crop_size), num_neighbors=int(num_neighbors),
        sigma=float(sigma), gamma=float(gamma), prior=_to_config_value(prior),
        bins=_to_config_value(bins), grey_mask=grey_mask,
        grey_threshold=float(grey_threshold), temperature=float(temperature),
        flip=bool(flip), target_resize=target_resize,
        hidden_channels=int(hidden_channels))
    self.crop_size = int(crop_size)
    self.num_neighbors = int(num_neighbors)
    self.sigma = float(sigma)
    self.gamma = float(gamma)
    self.grey_mask = grey_mask
    self.grey_threshold = float(grey_threshold)
    self.temperature = float(temperature)
    self.flip = bool(flip)
    self.target_resize = target_resize
    self.hidden_channels = int(hidden_channels)
    self.bins, self.prior = _resolve_bins_and_prior(bins, prior)
    self.num_bins = len(self.bins)
    if not 1 <= self.num_neighbors <= self.num_bins:
      raise ValueError(f"num_neighbors must be in [1, {self.num_bins}], got "
                       f"{num_neighbors}.")
    uniform = np.full(self.num_bins, 1.0 / self.num_bins)
    self.rebalance_weights = prior_lib.rebalancing_weights(
        uniform if self.prior is None else self.prior, self.gamma)

  def get_config(self) -> Dict[str, Any]:
    return dict(self._config)

  def __repr__(self) -> str:
    def short(v):
      return f"<{len(v)} values>" if isinstance(v, list) else repr(v)
    args = ", ".join(f"{k}={short(v)}" for k, v in self._config.items())
    return f"{type(self).__name__}({args})"

  # -- data -----------------------------------------------------------------

  def preprocess(self, example: Dict[str, tf.Tensor],
                 seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Random crop (+ flip) -> (harmonized [S, S, 3], ab [S, S, 2])."""
    if "image" not in example:
      raise KeyError(f"colorization needs example['image']; the example has "
                     f"{sorted(example)}.")
    image = ensure_rgb(example["image"])
    if image.shape.rank != 3:
      raise ValueError(f"preprocess takes one image [H, W, C], got shape "
                       f"{image.shape}; map it before batching.")
    size = self.crop_size
    image = check_min_size(image, size, size,
                           f"colorization (crop_size={size})")
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
      raise TypeError(f"seed must be an int32/int64 [2] tensor, got "
                      f"{seed.dtype.name}.")
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    crop = tf.image.stateless_random_crop(image, [size, size, 3],
                                          seed=crop_seed)
    if self.flip:
      crop = tf.image.stateless_random_flip_left_right(crop, seed=flip_seed)
    lab = color.rgb_to_lab(crop)
    return color.lightness_to_harmonized(lab[..., 0]), lab[..., 1:]

  unusable_reason = "grey (no colour to learn)"

  def usable(self, example: Dict[str, tf.Tensor]) -> tf.Tensor:
    """False for a grey image: every pixel of a thumbnail (shorter side at
    most :data:`USABLE_THUMBNAIL` px) within ``grey_threshold`` of grey in
    ab. Such an image gives no colour target; with ``grey_mask="image"`` it
    adds no loss at all."""
    image = ensure_rgb(example["image"])
    image = limit_image_size(image, USABLE_THUMBNAIL)
    ab = color.rgb_to_lab(image)[..., 1:]
    return tf.reduce_any(tf.abs(ab) > self.grey_threshold)

  def trunk_images(self, inputs: Any) -> Any:
    return inputs

  # -- model ------------------------------------------------------------------

  def build_head(self) -> ColorizationHead:
    is_313 = (self.num_bins == 313 and np.array_equal(
        self.bins, prior_lib.load_ab_bins_313()))
    return ColorizationHead(
        num_bins=self.num_bins, hidden_channels=self.hidden_channels,
        ab_bins=None if is_313 else self.bins.tolist(),
        prior=None if self.prior is None else self.prior.tolist(),
        name="colorization_head")

  # -- loss -------------------------------------------------------------------

  def targets_at(self, targets: tf.Tensor, logits: tf.Tensor
                  ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """ab at the logits' size [B, h, w, 2], the mask [B, h, w], logits f32."""
    targets = tf.convert_to_tensor(targets)
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    if targets.shape.rank != 4 or targets.shape[-1] != 2:
      raise ValueError(f"colorization targets must be ab [B, H, W, 2], got "
                       f"{targets.shape}.")
    if logits.shape.rank != 4 or logits.shape[-1] != self.num_bins:
      raise ValueError(f"colorization outputs must be logits [B, h, w, "
                       f"{self.num_bins}], got {logits.shape}.")
    targets = tf.cast(targets, tf.float32)
    size = tf.shape(logits)[1:3]
    ab = tf.image.resize(targets, size, method=self.target_resize)
    if self.grey_mask == "image":
      colourful = tf.reduce_any(
          tf.abs(targets) > self.grey_threshold, axis=[1, 2, 3])
      mask = tf.cast(colourful, tf.float32)[:, tf.newaxis, tf.newaxis]
      mask = tf.broadcast_to(mask, tf.shape(logits)[:3])
    elif self.grey_mask == "pixel":
      mask = tf.cast(
          tf.reduce_any(tf.abs(ab) > self.grey_threshold, axis=-1),
          tf.float32)
    else:
      mask = tf.ones(tf.shape(logits)[:3], tf.float32)
    return ab, mask, logits

  def loss(self, targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Rebalanced soft cross-entropy, mean over positions: [B]."""
    ab, mask, logits = self.targets_at(targets, outputs)
    encoded = soft_encode(ab, self.bins, self.num_neighbors, self.sigma)
    cross_entropy = -tf.reduce_sum(
        encoded * tf.nn.log_softmax(logits, axis=-1), axis=-1)
    # Zhang et al. weight each pixel by w of its most likely (nearest) bin.
    weight = tf.gather(tf.constant(self.rebalance_weights),
                       tf.argmax(encoded, axis=-1))
    # Dividing by all positions (not only unmasked ones) keeps grey images at
    # zero loss without rescaling the colourful ones.
    return tf.reduce_mean(cross_entropy * weight * mask, axis=[1, 2])

  def metrics(self, targets: tf.Tensor,
              outputs: tf.Tensor) -> Dict[str, tf.Tensor]:
    """``bin_accuracy``: top-1 == nearest bin, over unmasked positions."""
    ab, mask, logits = self.targets_at(targets, outputs)
    truth = nearest_bin(ab, self.bins)
    correct = tf.cast(
        tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), truth),
        tf.float32)
    accuracy = tf.math.divide_no_nan(tf.reduce_sum(correct * mask),
                                     tf.reduce_sum(mask))
    return {"bin_accuracy": accuracy}

  # -- before training and the training step -----------------------------

  @classmethod
  def params_to_check(cls, params: Dict[str, Any]) -> Dict[str, Any]:
    # "auto" is made concrete by prepare() from the training images; the
    # config checks the rest.
    if _is_auto(params.get("prior")):
      return dict(params, prior=None)
    return params

  @classmethod
  def prepare(cls, params: Dict[str, Any],
              context: PrepareContext) -> Dict[str, Any]:
    """Makes the prior concrete (``prior="auto"``, or none given), and logs it.

    Zhang et al. rebalance the colorization loss with the empirical ab prior
    of the training set. A run that gives no prior (no ``prior`` parameter,
    None or ``"auto"``) gets the prior of its own training images: the first
    call computes it from a bounded, seeded sample of the run's data source
    (:data:`~mtssl_tf.tasks.colorization_bins.AUTO_PRIOR_MAX_IMAGES`
    images, shorter side downscaled to
    :data:`~mtssl_tf.tasks.colorization_bins.AUTO_PRIOR_MAX_SIDE`, grey
    images left out as the task does) with the code of ``python -m
    mtssl_tf.colorization_prior``, and caches it in
    ``<run_dir>/colorization_prior.npz``; later calls (a resumed run) read
    that file, so a run keeps one prior. A given prior (``"imagenet"``,
    ``"uniform"``, a file or values) is used as it is. A sample with fewer
    than ``MIN_PRIOR_COLOUR_IMAGES`` colour images or
    ``MIN_PRIOR_PIXELS_PER_BIN`` colour pixels per bin
    (:mod:`mtssl_tf.tasks.colorization_bins`) is refused before anything
    is written: a prior from a picture or two would only describe them.

    Returns:
      ``params`` unchanged for a given prior; else a copy whose ``prior`` is
      the values (a [Q] list).

    Raises:
      ValueError: the cached file holds other bins than the task's.
      mtssl_tf.data.color_statistics.PriorSampleError: (a ``ValueError``)
        the sample holds too few colour images or pixels; the message names
        the data source and the counts, and asks for a given prior.
    """
    log = context.log
    given = params.get("prior")
    if given is not None and not _is_auto(given):
      task = cls(**params)
      if isinstance(given, str):
        what = {prior_lib.PRIOR_IMAGENET:
                    "Zhang et al.'s ImageNet prior (package data "
                    "resources/colorization_prior_imagenet_313.txt)",
                prior_lib.PRIOR_UNIFORM: "uniform (no rebalancing)"}.get(
                    given, f"from {given}")
      else:
        what = f"given as {len(task.bins)} values"
      uniform = np.full(task.num_bins, 1.0 / task.num_bins)
      log(f"colorization prior: {what}; " + prior_lib.describe_weights(
          uniform if task.prior is None else task.prior, task.gamma))
      return params
    task = cls(**dict(params, prior=None))
    path = os.path.join(context.run_dir, prior_lib.AUTO_PRIOR_FILE)
    # Only the writer reads the cache: other workers compute the same
    # seeded sample rather than read a file the chief may be writing.
    if context.write and os.path.exists(path):
      bins, prior = prior_lib.load_prior(path)
      if bins.shape != task.bins.shape or not np.array_equal(bins,
                                                             task.bins):
        raise ValueError(
            f"{path} (this run's cached colorization prior) holds "
            f"{len(bins)} other ab bins than the task's {task.num_bins}; "
            "delete it to recompute, or give the task a prior")
      what = f"computed from the training images, cached in {path}"
    else:
      statistics = context.training_statistics
      hist, description = statistics.training_histogram(
          context.data, prior_lib.AUTO_PRIOR_MAX_IMAGES,
          prior_lib.AUTO_PRIOR_MAX_SIDE, grey_mask=task.grey_mask,
          grey_threshold=task.grey_threshold)
      statistics.check_prior_sample(
          hist, f"the training data ({description})", task.num_bins,
          "Give a prior with --colorization.prior=imagenet (Zhang "
          "et al.'s ImageNet prior; or a file of python -m "
          "mtssl_tf.colorization_prior), or add colour images to the "
          "training data.")
      counts = prior_lib.bin_counts(hist, task.bins)
      prior = prior_lib.smooth_prior(counts / counts.sum(), task.bins)
      if context.write:
        # Written aside, then renamed: a killed run leaves no half a file.
        prior_lib.save_prior(
            path + ".tmp", task.bins, prior, counts=counts,
            num_images=hist.num_images, num_grey_images=hist.num_grey_images,
            num_pixels=hist.num_pixels, sigma=5.0, grey_mask=task.grey_mask,
            grey_threshold=task.grey_threshold, derived_bins=False)
        os.replace(path + ".tmp", path)
      what = (f"computed from {hist.num_images - hist.num_grey_images} "
              f"colour training images of {hist.num_images} sampled "
              f"({description})"
              + (f", cached in {path}" if context.write else ""))
    log(f"colorization prior: {what}; "
        + prior_lib.describe_weights(prior, task.gamma))
    return dict(params, prior=[float(x) for x in prior])

  def xla_incompatibility(self, num_replicas: int) -> Optional[str]:
    del num_replicas
    return ("its loss resizes the ab targets to the logits' size with "
            "tf.image.resize(method='area'): ResizeArea has no XLA kernel")

  # -- held-out pretext metric (mtssl_tf.training.pretext_eval) ----------

  headline_metric = "top5_accuracy"

  def heldout_scores(self, batches, outputs) -> Dict[str, float]:
    """Per-pixel top-5 accuracy of the ab bin and Zhang et al.'s AuC of the
    annealed-mean decode, beside the prior's (see the module doc of
    :mod:`mtssl_tf.training.pretext_eval`)."""
    top_k_hits = heldout_metrics.top_k_hits
    hits, pred_ab, true_ab, true_bins = [], [], [], []
    for (_, targets), logits in zip(batches, outputs):
      logits = tf.constant(logits)
      ab, _, logits = self.targets_at(targets, logits)
      bins = nearest_bin(ab, self.bins).numpy()
      hits.append(top_k_hits(logits.numpy(), bins, 5).reshape(-1))
      pred_ab.append(self.decode(logits).numpy().reshape(-1, 2))
      true_ab.append(ab.numpy().reshape(-1, 2))
      true_bins.append(bins.reshape(-1))
    pred_ab, true_ab = np.concatenate(pred_ab), np.concatenate(true_ab)
    true_bins = np.concatenate(true_bins)
    prior = self.prior
    if prior is None:
      # No training prior: the held-out pixels' own distribution (an oracle
      # baseline, see pretext_eval's module doc).
      prior = np.bincount(true_bins, minlength=len(self.bins)).astype(float)
    prior = np.asarray(prior, np.float64)
    prior_hits = top_k_hits(np.broadcast_to(prior, (len(true_bins),
                                                    len(prior))), true_bins, 5)
    mode_ab = np.broadcast_to(np.asarray(self.bins)[np.argmax(prior)],
                              true_ab.shape)
    return {"top5_accuracy": float(np.mean(np.concatenate(hits))),
            "auc": heldout_metrics.ab_error_auc(pred_ab, true_ab),
            "chance": float(np.mean(prior_hits)),
            "chance_auc": heldout_metrics.ab_error_auc(mode_ab, true_ab),
            "pixels": float(len(true_bins))}

  @classmethod
  def heldout_summary(cls, scores: Dict[str, float]) -> str:
    return (super().heldout_summary(scores)
            + f" auc={scores['auc']:.3f} (prior mode "
            f"{scores['chance_auc']:.3f})")

  @classmethod
  def heldout_table(cls, scores):
    return [("top-5 bin accuracy", scores["top5_accuracy"], scores["chance"],
             "prior's top 5"),
            ("AuC ab error (0-150)", scores["auc"], scores["chance_auc"],
             "prior's mode")]

  # -- looking at predictions -------------------------------------------------

  def decode(self, logits: Any) -> Any:
    """Annealed-mean ab [..., 2] of logits [..., Q]."""
    return decode_annealed_mean(logits, self.bins, self.temperature)

  def colorize(self, inputs: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """RGB [0, 255] from the harmonized inputs and the head's logits."""
    return colorize(inputs, logits, self.bins, self.temperature)


__all__ = ["Colorization", "ColorizationHead", "soft_encode", "nearest_bin",
           "decode_annealed_mean", "colorize", "DEFAULT_TEMPERATURE"]
