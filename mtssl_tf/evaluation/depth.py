"""NYU-style depth evaluation: the FCRN up-projection decoder on block 3.

Doersch & Zisserman (ICCV 2017, Sec. 5 and Table 1) measure how well a
self-supervised trunk transfers to monocular depth prediction on NYU v2 with
the fully-convolutional decoder of Laina et al., "Deeper Depth Prediction with
Fully Convolutional Residual Networks" (3DV 2016, "FCRN"). This module holds

* :func:`interleave` and :class:`UpConvolution`: FCRN's "fast up-convolution",
  four parallel convolutions (3x3, 3x2, 2x3, 2x2) whose outputs are
  interleaved into a map of twice the size. We place the four so that the
  layer equals exactly "unpool by zero insertion (each input value at the
  top-left of its 2x2 cell) then a 5x5 'SAME' convolution" -- the operation
  FCRN's paper describes -- which the tests check;
* :class:`UpProjection`: the up-projection block (up-conv, BN, ReLU, 3x3 conv,
  BN; plus an up-conv + BN projection branch; sum; ReLU);
* :class:`DepthDecoder`: a 1x1 conv + BN on the block-3 features, four
  up-projections, a 3x3 conv to one channel, softplus;
* the masked losses :func:`berhu_loss` and :func:`masked_l1_loss`, the metrics
  :func:`depth_metrics`, and :class:`DepthEvaluator` (name ``"depth"``).

Choices (each documented in ``docs/depth.md``):

* Output resolution: the trunk's block 3 is at output stride 16 and four 2x
  up-projections bring it back to the input resolution (FCRN's ResNet-50
  stops at stride 32 and predicts at half resolution). Predictions are resized
  bilinearly to the ground truth's size before loss and metrics, which also
  absorbs input sizes that are not multiples of 16 (228 -> 14 * 16 = 224).
* Positivity: the decoder predicts depth through a softplus, so abs-rel and
  the delta ratios are always defined.
* Valid pixels: ground truth that is finite and > 0. Losses and metrics only
  see those pixels.
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from mtssl_tf.evaluation.interface import (EvalBackbone, Evaluator,
                                           check_not_empty, clone_trunk)
from mtssl_tf.models.trunk import Trunk
from mtssl_tf.utils.progress import Progress

LOSSES = ("berhu", "l1")
METRIC_NAMES = ("delta1", "delta2", "delta3", "abs_rel", "rmse")
# Laina et al.: the berHu threshold is a fifth of the batch's largest residual.
BERHU_FRACTION = 0.2


def interleave(a, b, c, d):
  """Interleaves four [N, h, w, C] maps into one [N, 2h, 2w, C] map.

  ``out[2i, 2j] = a[i, j]``, ``out[2i, 2j+1] = b[i, j]``,
  ``out[2i+1, 2j] = c[i, j]``, ``out[2i+1, 2j+1] = d[i, j]``.
  """
  shape = tf.shape(a)
  n, h, w = shape[0], shape[1], shape[2]
  channels = a.shape[-1] if a.shape[-1] is not None else shape[3]
  # Stacking on a new axis right after the one to double and merging the two
  # puts the stacked tensors' elements next to each other along that axis.
  even_rows = tf.reshape(tf.stack([a, b], axis=3), [n, h, 2 * w, channels])
  odd_rows = tf.reshape(tf.stack([c, d], axis=3), [n, h, 2 * w, channels])
  return tf.reshape(tf.stack([even_rows, odd_rows], axis=2),
                    [n, 2 * h, 2 * w, channels])


@keras.saving.register_keras_serializable(package="mtssl_tf")
class UpConvolution(keras.layers.Layer):
  """FCRN's fast up-convolution: 2x up-sampling by four interleaved convs.

  Equal to zero-insertion unpooling (input value ``x[i, j]`` at ``(2i, 2j)``
  of a 2x map, zeros elsewhere) followed by a 5x5 'SAME' convolution with
  kernel ``K``, but without ever multiplying the zeros: the output pixel
  ``(2i + r, 2j + s)`` only sees the taps ``K[r::2, s::2]`` (3 or 2 per axis).

  Reference: Laina et al., "Deeper Depth Prediction with Fully Convolutional
  Residual Networks", 3DV 2016, Sec. 3.2 and Fig. 4; used on block 3 by
  Doersch & Zisserman, "Multi-task Self-Supervised Visual Learning", ICCV 2017.

  Args:
    filters: output channels.
    use_bias: add a bias (off by default: a batch norm follows in FCRN).

  Example:
    >>> up = UpConvolution(64)
    >>> up(tf.zeros([2, 7, 9, 32])).shape
    TensorShape([2, 14, 18, 64])
  """

  # (kernel size, (top, bottom), (left, right)) per output phase (r, s);
  # the paddings make each conv see exactly the input pixels that the
  # zero-inserted 5x5 convolution sees at that phase.
  _PHASES = (((3, 3), (1, 1), (1, 1)),   # (even row, even col): a
             ((3, 2), (1, 1), (0, 1)),   # (even, odd): b
             ((2, 3), (0, 1), (1, 1)),   # (odd, even): c
             ((2, 2), (0, 1), (0, 1)))   # (odd, odd): d

  def __init__(self, filters: int, use_bias: bool = False, **kwargs):
    super().__init__(**kwargs)
    if not isinstance(filters, (int, np.integer)) or filters < 1:
      raise ValueError(f"UpConvolution.filters={filters!r} must be an int >= 1")
    self.filters = int(filters)
    self.use_bias = bool(use_bias)
    self.convs = [
        keras.layers.Conv2D(self.filters, size, padding="valid",
                            use_bias=self.use_bias, name=f"conv_{tag}")
        for (size, _, _), tag in zip(self._PHASES, "abcd")]

  def build(self, input_shape):
    # Spatial sizes are left open: each conv sees its own padded input.
    for conv in self.convs:
      conv.build((None, None, None, input_shape[-1]))
    self.built = True

  def call(self, inputs):
    outputs = []
    for conv, (_, rows, cols) in zip(self.convs, self._PHASES):
      padded = tf.pad(inputs, [[0, 0], list(rows), list(cols), [0, 0]])
      outputs.append(conv(padded))
    return interleave(*outputs)

  def compute_output_shape(self, input_shape):
    n, h, w, _ = input_shape
    return (n, None if h is None else 2 * h, None if w is None else 2 * w,
            self.filters)

  def equivalent_kernel(self) -> np.ndarray:
    """The 5x5 kernel [5, 5, C_in, C_out] of the equivalent zero-insertion
    up-sampling convolution (for tests and inspection)."""
    kernels = [np.asarray(conv.kernel) for conv in self.convs]
    full = np.zeros((5, 5) + kernels[0].shape[2:], np.float32)
    for kernel, (r, s) in zip(kernels, ((0, 0), (0, 1), (1, 0), (1, 1))):
      full[r::2, s::2] = kernel
    return full

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, use_bias=self.use_bias)
    return config


@keras.saving.register_keras_serializable(package="mtssl_tf")
class UpProjection(keras.layers.Layer):
  """FCRN's up-projection block: a residual 2x up-sampling.

  Main branch: up-convolution, BN, ReLU, 3x3 conv, BN. Projection branch:
  up-convolution, BN. Output: ReLU of the sum.

  Reference: Laina et al., 3DV 2016, Fig. 2(d) and Fig. 4 (fast version);
  Doersch & Zisserman, ICCV 2017 (NYU depth evaluation).

  Args:
    filters: output channels.

  Example:
    >>> UpProjection(64)(tf.zeros([2, 4, 5, 128])).shape
    TensorShape([2, 8, 10, 64])
  """

  def __init__(self, filters: int, **kwargs):
    super().__init__(**kwargs)
    if not isinstance(filters, (int, np.integer)) or filters < 1:
      raise ValueError(f"UpProjection.filters={filters!r} must be an int >= 1")
    self.filters = int(filters)
    self.up_main = UpConvolution(self.filters, name="up_main")
    self.bn_main1 = keras.layers.BatchNormalization(name="bn_main1")
    self.conv_main = keras.layers.Conv2D(self.filters, 3, padding="same",
                                         use_bias=False, name="conv_main")
    self.bn_main2 = keras.layers.BatchNormalization(name="bn_main2")
    self.up_proj = UpConvolution(self.filters, name="up_proj")
    self.bn_proj = keras.layers.BatchNormalization(name="bn_proj")

  def build(self, input_shape):
    up_shape = self.up_main.compute_output_shape(tuple(input_shape))
    self.up_main.build(input_shape)
    self.up_proj.build(input_shape)
    for layer in (self.bn_main1, self.bn_main2, self.bn_proj):
      layer.build(up_shape)
    self.conv_main.build(up_shape)
    self.built = True

  def call(self, inputs, training=None):
    x = self.up_main(inputs)
    x = tf.nn.relu(self.bn_main1(x, training=training))
    x = self.bn_main2(self.conv_main(x), training=training)
    shortcut = self.bn_proj(self.up_proj(inputs), training=training)
    return tf.nn.relu(x + shortcut)

  def compute_output_shape(self, input_shape):
    return self.up_main.compute_output_shape(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters)
    return config


@keras.saving.register_keras_serializable(package="mtssl_tf")
class DepthDecoder(keras.layers.Layer):
  """Block-3 features [N, h, w, C] -> positive depth [N, 16h, 16w].

  1x1 conv to ``2 * filters[0]`` channels + BN (FCRN's layer after the
  ResNet), one :class:`UpProjection` per entry of ``filters`` (four: x16, back
  to the input resolution from the trunk's output stride 16), a 3x3 conv to
  one channel and a softplus (depth is positive).

  Reference: Laina et al., 3DV 2016 (decoder with filters 512, 256, 128, 64);
  Doersch & Zisserman, ICCV 2017 (on block 3 of the multi-task trunk).

  Args:
    filters: channels of the up-projections; the paper's (512, 256, 128, 64),
      smaller for tests.
    input_channels: the channel count C the decoder expects (the trunk's
      ``output_channels``); None takes it from the first call. Features with a
      different C raise ``ValueError`` naming both (a trunk of another width
      or a checkpoint of another architecture).

  Example:
    >>> decoder = DepthDecoder(filters=(32, 16, 8, 8), input_channels=256)
    >>> decoder(tf.zeros([2, 4, 4, 256])).shape
    TensorShape([2, 64, 64])
  """

  def __init__(self, filters: Sequence[int] = (512, 256, 128, 64),
               input_channels: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    filters = [int(f) for f in filters]
    if not filters or min(filters) < 1:
      raise ValueError(
          f"DepthDecoder.filters={filters!r} must be a non-empty list of "
          "ints >= 1")
    if input_channels is not None and int(input_channels) < 1:
      raise ValueError(
          f"DepthDecoder.input_channels={input_channels!r} must be >= 1")
    self.filters = filters
    self.input_channels = (None if input_channels is None
                           else int(input_channels))
    self.proj = keras.layers.Conv2D(2 * filters[0], 1, use_bias=False,
                                    name="proj_conv")
    self.proj_bn = keras.layers.BatchNormalization(name="proj_bn")
    self.ups = [UpProjection(f, name=f"up_projection_{k + 1}")
                for k, f in enumerate(filters)]
    self.head = keras.layers.Conv2D(1, 3, padding="same", name="depth_conv")

  @property
  def upsampling(self) -> int:
    return 2 ** len(self.filters)

  def _check_channels(self, channels, expected):
    if channels is None:
      raise ValueError(
          "DepthDecoder: the feature channel count must be known statically")
    if expected is not None and int(channels) != expected:
      raise ValueError(
          f"DepthDecoder was built for block-3 features with {expected} "
          f"channels but got {int(channels)}: the trunk (or the checkpoint it "
          "was loaded from) has a different architecture or width than the "
          "decoder")

  def build(self, input_shape):
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
      raise ValueError(
          f"DepthDecoder expects features [N, h, w, C], got shape "
          f"{input_shape}")
    self._check_channels(input_shape[-1], self.input_channels)
    self._built_channels = int(input_shape[-1])
    self.proj.build(input_shape)
    shape = input_shape[:-1] + (2 * self.filters[0],)
    self.proj_bn.build(shape)
    for up in self.ups:
      up.build(shape)
      shape = up.compute_output_shape(shape)
    self.head.build(shape)
    self.built = True

  def call(self, features, training=None):
    self._check_channels(features.shape[-1], self._built_channels)
    x = self.proj_bn(self.proj(features), training=training)
    for up in self.ups:
      x = up(x, training=training)
    return tf.nn.softplus(self.head(x))[..., 0]

  def compute_output_shape(self, input_shape):
    n, h, w, _ = input_shape
    f = self.upsampling
    return (n, None if h is None else f * h, None if w is None else f * w)

  def get_config(self):
    config = super().get_config()
    config.update(filters=list(self.filters),
                  input_channels=self.input_channels)
    return config


# ---------------------------------------------------------------------------
# Losses and metrics.


def valid_depth_mask(depth_true) -> tf.Tensor:
  """Valid ground truth: finite and > 0 (NYU / Middlebury store holes as 0,
  scikit-image's motorcycle as NaN / inf)."""
  depth_true = tf.convert_to_tensor(depth_true, tf.float32)
  return tf.math.logical_and(tf.math.is_finite(depth_true), depth_true > 0)


def _prepare(depth_true, depth_pred, valid):
  depth_true = tf.convert_to_tensor(depth_true, tf.float32)
  depth_pred = tf.convert_to_tensor(depth_pred, tf.float32)
  if depth_true.shape.rank is not None and depth_pred.shape.rank is not None:
    if depth_true.shape.rank != depth_pred.shape.rank:
      raise ValueError(
          f"depth_true {depth_true.shape} and depth_pred {depth_pred.shape} "
          "must have the same rank ([B, H, W])")
  mask = valid_depth_mask(depth_true)
  if valid is not None:
    mask = tf.math.logical_and(mask, tf.cast(valid, tf.bool))
  # Zeros in the masked-out places keep NaN/inf out of the gradients.
  depth_true = tf.where(mask, depth_true, tf.ones_like(depth_true))
  return depth_true, depth_pred, mask


def _per_example_mean(values, mask):
  maskf = tf.cast(mask, values.dtype)
  axes = tf.range(1, tf.rank(values))
  total = tf.reduce_sum(values * maskf, axis=axes)
  count = tf.reduce_sum(maskf, axis=axes)
  # An example with no valid pixel contributes 0 rather than NaN.
  return tf.math.divide_no_nan(total, count)


def masked_l1_loss(depth_true, depth_pred, valid=None) -> tf.Tensor:
  """Mean |d - d*| over each example's valid pixels: [B]."""
  depth_true, depth_pred, mask = _prepare(depth_true, depth_pred, valid)
  residual = tf.where(mask, depth_pred - depth_true,
                      tf.zeros_like(depth_pred))
  return _per_example_mean(tf.abs(residual), mask)


def berhu_loss(depth_true, depth_pred, valid=None) -> tf.Tensor:
  """Reverse Huber (berHu) loss, mean over each example's valid pixels: [B].

  ``B(r) = |r|`` if ``|r| <= c`` else ``(r^2 + c^2) / (2c)``, with
  ``c = 0.2 * max |r|`` over the valid pixels of the whole (local) batch,
  held constant for the gradient (Laina et al., 3DV 2016, Eq. 1).
  """
  depth_true, depth_pred, mask = _prepare(depth_true, depth_pred, valid)
  residual = tf.abs(tf.where(mask, depth_pred - depth_true,
                             tf.zeros_like(depth_pred)))
  c = tf.stop_gradient(BERHU_FRACTION * tf.reduce_max(residual))
  quadratic = tf.math.divide_no_nan(tf.square(residual) + tf.square(c),
                                    2.0 * c)
  loss = tf.where(residual <= c, residual, quadratic)
  return _per_example_mean(loss, mask)


def get_loss(name: str):
  """The masked per-example loss called ``name`` (one of ``LOSSES``)."""
  if name == "berhu":
    return berhu_loss
  if name == "l1":
    return masked_l1_loss
  raise ValueError(f"unknown depth loss {name!r}; allowed: {', '.join(LOSSES)}")


def depth_metric_sums(depth_pred, depth_true,
                      valid=None) -> Dict[str, tf.Tensor]:
  """Sums over valid pixels, to pool the metrics over many batches.

  Returns a dict of float64 scalars: ``count``, ``delta1``, ``delta2``,
  ``delta3`` (counts of pixels with ``max(d/d*, d*/d) < 1.25^k``),
  ``abs_rel`` (sum of ``|d - d*| / d*``) and ``sq`` (sum of ``(d - d*)^2``).
  """
  depth_true, depth_pred, mask = _prepare(depth_true, depth_pred, valid)
  d = tf.cast(tf.boolean_mask(depth_pred, mask), tf.float64)
  g = tf.cast(tf.boolean_mask(depth_true, mask), tf.float64)
  ratio = tf.maximum(d / g, g / d)
  sums = {"count": tf.cast(tf.size(d), tf.float64)}
  for k in (1, 2, 3):
    sums[f"delta{k}"] = tf.reduce_sum(tf.cast(ratio < 1.25 ** k, tf.float64))
  sums["abs_rel"] = tf.reduce_sum(tf.abs(d - g) / g)
  sums["sq"] = tf.reduce_sum(tf.square(d - g))
  return sums


def finalize_depth_metrics(sums: Dict[str, float]) -> Dict[str, float]:
  """Pooled metric sums -> ``METRIC_NAMES`` (deltas as fractions in [0, 1])."""
  count = float(sums["count"])
  if count <= 0:
    raise ValueError(
        "no valid ground-truth depth pixel (finite and > 0) to evaluate on")
  return {"delta1": float(sums["delta1"]) / count,
          "delta2": float(sums["delta2"]) / count,
          "delta3": float(sums["delta3"]) / count,
          "abs_rel": float(sums["abs_rel"]) / count,
          "rmse": math.sqrt(float(sums["sq"]) / count)}


def depth_metrics(depth_pred, depth_true, valid=None) -> Dict[str, float]:
  """delta < 1.25, 1.25^2, 1.25^3 (fractions), abs-rel and RMSE over the
  valid pixels of ``depth_true`` (pooled over pixels, not per image).

  Args:
    depth_pred: predicted depth, > 0, same shape as ``depth_true``.
    depth_true: ground truth; pixels that are not finite and > 0 are ignored.
    valid: an optional extra boolean mask of the same shape.
  """
  sums = depth_metric_sums(depth_pred, depth_true, valid)
  return finalize_depth_metrics({k: v.numpy() for k, v in sums.items()})


# ---------------------------------------------------------------------------
# The evaluator.

DataSource = Union[str, Tuple[tf.data.Dataset, tf.data.Dataset]]


class DepthEvaluator(Evaluator):
  """Fine-tunes the trunk with an FCRN decoder, then measures depth metrics.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (NYU v2 depth, % of pixels with delta < 1.25);
  Laina et al., 3DV 2016 (decoder, berHu loss, 228x304 input).

  Args:
    input_size: (height, width) of the network input; the paper's (228, 304).
    steps: training steps.
    batch_size: examples per step (FCRN: 16).
    learning_rate: SGD-with-momentum learning rate.
    momentum: SGD momentum.
    loss: ``"berhu"`` (FCRN) or ``"l1"``, both masked to valid pixels.
    trainable_trunk: fine-tune the trunk (the paper fine-tunes; recalled).
    decoder_filters: the up-projections' channels.
    source: ``"nyu_depth_v2"`` (TFDS, prepared data), ``"middlebury"``
      (offline pairs, see :mod:`mtssl_tf.evaluation.depth_data`), or a pair
      ``(train_dataset, test_dataset)`` of ``{"image", "depth"}`` examples.
    data_dir: TFDS data directory.
    train_split, test_split: TFDS splits (NYU's 654 test images are
      ``"validation"`` in TFDS).
    max_train_examples: train on at most this many training examples.
    max_test_examples: evaluate on at most this many test examples.
    lasso_l1: the L1 penalty of the eval-lasso mixer row (``eval_lasso``).
    middlebury: keyword arguments of ``depth_data.middlebury_dataset``.
    seed: the seed of crops, flips and shuffling.
    log_every: log the training loss every this many steps (0: never).

  Example:
    >>> evaluator = DepthEvaluator(source="nyu_depth_v2", data_dir="~/tfds")
    >>> dict(evaluator.run(trunk))["depth/delta1"]
  """

  name = "depth"

  def __init__(self, input_size: Tuple[int, int] = (228, 304),
               steps: int = 100_000, batch_size: int = 16,
               learning_rate: float = 0.01, momentum: float = 0.9,
               loss: str = "berhu", trainable_trunk: bool = True,
               decoder_filters: Sequence[int] = (512, 256, 128, 64),
               source: DataSource = "nyu_depth_v2",
               data_dir: Optional[str] = None, train_split: str = "train",
               test_split: str = "validation",
               max_train_examples: Optional[int] = None,
               max_test_examples: Optional[int] = None,
               lasso_l1: float = 1e-3,
               middlebury: Optional[dict] = None, seed: int = 0,
               log_every: int = 100):
    if len(tuple(input_size)) != 2 or min(input_size) < 16:
      raise ValueError(
          f"DepthEvaluator.input_size={input_size!r} must be (height, width), "
          "each >= 16")
    if steps < 1 or batch_size < 1:
      raise ValueError(
          f"DepthEvaluator steps={steps!r} and batch_size={batch_size!r} "
          "must be >= 1")
    self.loss_fn = get_loss(loss)
    if isinstance(source, str):
      from mtssl_tf.evaluation import depth_data
      if source not in depth_data.SOURCES:
        raise ValueError(
            f"DepthEvaluator.source={source!r}; allowed: "
            f"{', '.join(depth_data.SOURCES)} or a (train, test) pair of "
            "datasets")
    elif not (isinstance(source, (tuple, list)) and len(source) == 2):
      raise ValueError(
          "DepthEvaluator.source must be a source name or a (train, test) "
          f"pair of tf.data.Dataset, got {type(source).__name__}")
    self.input_size = (int(input_size[0]), int(input_size[1]))
    self.steps = int(steps)
    self.batch_size = int(batch_size)
    self.learning_rate = float(learning_rate)
    self.momentum = float(momentum)
    self.loss = loss
    self.trainable_trunk = bool(trainable_trunk)
    self.decoder_filters = [int(f) for f in decoder_filters]
    self.source = source
    self.data_dir = data_dir
    self.train_split = train_split
    self.test_split = test_split
    self.max_train_examples = max_train_examples
    self.max_test_examples = max_test_examples
    self.lasso_l1 = float(lasso_l1)
    self.middlebury = dict(middlebury or {})
    self.seed = int(seed)
    self.log_every = int(log_every)

  def datasets(self) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, test) datasets of preprocessed (image, depth) batches."""
    from mtssl_tf.evaluation import depth_data
    if isinstance(self.source, str):
      train_raw, test_raw = depth_data.load_depth_splits(
          self.source, input_size=self.input_size, data_dir=self.data_dir,
          train_split=self.train_split, test_split=self.test_split,
          middlebury=self.middlebury)
    else:
      train_raw, test_raw = self.source
    if self.max_train_examples is not None:
      train_raw = train_raw.take(self.max_train_examples)
    if self.max_test_examples is not None:
      test_raw = test_raw.take(self.max_test_examples)
    check_not_empty(train_raw, f"the depth training set ({self.train_split})")
    check_not_empty(test_raw, f"the depth evaluation set ({self.test_split})")
    train = depth_data.make_depth_dataset(
        train_raw, self.input_size, training=True, seed=self.seed,
        batch_size=self.batch_size)
    test = depth_data.make_depth_dataset(
        test_raw, self.input_size, training=False, seed=self.seed,
        batch_size=self.batch_size)
    return train, test

  def run(self, trunk: Trunk, *, eval_lasso: bool = False,
          log=print) -> Iterator[Tuple[str, float]]:
    if not isinstance(trunk, Trunk):
      raise TypeError(
          "DepthEvaluator.run needs a mtssl_tf.models.Trunk (block-3 unit "
          f"outputs by name), got {type(trunk).__name__}: was the checkpoint "
          "saved from another architecture?")
    train_ds, test_ds = self.datasets()
    backbone = EvalBackbone(clone_trunk(trunk), eval_lasso=eval_lasso,
                            task_name="depth", l1=self.lasso_l1,
                            trainable_trunk=self.trainable_trunk)
    decoder = DepthDecoder(self.decoder_filters,
                           input_channels=backbone.output_channels)
    optimizer = keras.optimizers.SGD(self.learning_rate,
                                     momentum=self.momentum)

    def predict(images, size, training):
      depth = decoder(backbone(images, training=training), training=training)
      # Four up-projections from stride 16 give 16 * (H/16 rounded down);
      # resize to the ground truth's size (FCRN resizes its half-resolution
      # output the same way).
      return tf.image.resize(depth[..., tf.newaxis], size,
                             method="bilinear")[..., 0]

    predict(tf.zeros([1] + list(self.input_size) + [3]), self.input_size,
            False)
    variables = (backbone.trainable_variables + decoder.trainable_variables)
    optimizer.build(variables)  # slots before the step is traced
    self._fit(train_ds, predict, backbone, variables, optimizer, log)
    self.last_alpha = (backbone.mixer.alphas()["depth"]
                       if backbone.mixer is not None else None)
    metrics = self._test(test_ds, predict, log)
    for name in METRIC_NAMES:
      yield f"depth/{name}", metrics[name]

  def _fit(self, train_ds: tf.data.Dataset, predict, backbone: EvalBackbone,
           variables, optimizer, log) -> None:
    """Trains ``variables`` for ``self.steps`` steps of ``train_ds``.

    ``backbone``'s losses (lasso, regularisers) join the depth loss; they
    are read inside the tape, where Keras computes them.
    """
    loss_fn = self.loss_fn

    @tf.function
    def train_step(images, depth):
      with tf.GradientTape() as tape:
        pred = predict(images, tf.shape(depth)[1:3], True)
        loss = tf.reduce_mean(loss_fn(depth, pred))
        if backbone.losses:
          loss += tf.add_n(backbone.losses)
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))
      return loss

    progress = Progress("depth", self.steps, log, self.log_every)
    for step, (images, depth) in enumerate(train_ds.take(self.steps)):
      loss = train_step(images, depth)
      if not np.isfinite(loss.numpy()):
        raise FloatingPointError(
            f"depth evaluation: the training loss is {loss.numpy()} at step "
            f"{step}; lower learning_rate={self.learning_rate}")
      progress.update(step + 1, f"loss {loss.numpy():.4f}")

  def _test(self, test_ds: tf.data.Dataset, predict, log) -> Dict[str, float]:
    """Depth metrics of ``predict`` over the whole of ``test_ds``."""

    @tf.function
    def eval_step(images, depth):
      pred = predict(images, tf.shape(depth)[1:3], False)
      return depth_metric_sums(pred, depth)

    totals = {}
    for images, depth in test_ds:
      for k, v in eval_step(images, depth).items():
        totals[k] = totals.get(k, 0.0) + float(v.numpy())
    if not totals:
      raise ValueError(f"the depth evaluation set ({self.test_split}) is "
                       "empty: no examples to evaluate on")
    metrics = finalize_depth_metrics(totals)
    log(f"depth: {int(totals['count'])} valid test pixels; "
        + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics
