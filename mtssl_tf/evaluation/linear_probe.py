"""Frozen linear probe: a linear classifier on block-3 features.

Doersch & Zisserman (ICCV 2017), ImageNet evaluation: the pre-trained trunk
is frozen and a linear classifier is trained on its block-3 features (or, with
"eval lasso", on a fresh UnitMixer row's mix of all block-3 units, learned
together with the classifier); the metric is Recall@5 (the fraction of test
images whose true label is among the classifier's 5 highest scores, i.e.
top-5 accuracy), and top-1.

Protocol details the paper leaves open, and our choices (all parameters):

* **Input**: the shorter side is resized to ``image_size`` (bilinear,
  anti-aliased), then the central ``image_size`` square is cropped. No
  augmentation: the features can then be computed once and cached.
* **Pooling**: the block-3 map [h, w, C] (h = image_size / 16) is
  average-pooled to a fixed ``pool_size`` x ``pool_size`` grid and flattened
  (4C = 4096 values at full width for the default 2x2). A 2x2 grid keeps the
  coarse layout that a linear classifier cannot recover from one global
  average, at a size that still caches; ``pool_size=1`` is global average
  pooling.
* **Classifier**: a parameter-free standardisation (batch norm without scale
  and offset, as in MAE's linear probe; at test time it is a fixed affine
  map, so the classifier stays linear) and one dense layer, initialised to
  zero. SGD with momentum, cosine learning-rate decay to 0, decoupled weight
  decay on the dense kernel only.
* **Eval lasso**: pooling and the mix are both linear, so
  ``pool(sum_m alpha_m unit_m) = sum_m alpha_m pool(unit_m)``; the pooled
  units are cached ([N, units, D]) and mixed after pooling, which is exact.
  The mixer row's alpha and the classifier are the only trained variables;
  the trunk (batch norm included) stays frozen.

Data (``data=``):

* ``"tfds"``: ``tfds.load(tfds_name, split=..., data_dir=..., download=False)``
  with features ``image`` and ``label``; ``imagenet2012`` (``train`` /
  ``validation``) is the paper's. Nothing is downloaded: prepare the data
  once with ``tfds build``.
* ``"digits"``: scikit-learn's ``load_digits`` (1,797 grey 8x8 digits, 10
  classes, ships inside the package), with a stratified train/test split of
  fixed seed. Tiny, but real labelled images: the offline demo.
* ``"fashion_mnist"``: the Debian package ``dataset-fashion-mnist`` (70,000
  grey 28x28 images, 10 classes, its own 60k/10k split), read from
  ``/usr/share/datasets/fashion-mnist``.

Grey images are repeated to three channels (:func:`mtssl_tf.ops.image.ensure_rgb`).

Ties in the scores: a class ranks above the true class when its score is
higher, or equal and its index lower (the order of ``np.argmax`` and of a
stable descending sort); so top-1 is exactly ``argmax == label`` and a
constant classifier scores 0, not 100%.

Example:
  >>> probe = LinearProbe(data="digits", image_size=32, steps=200)
  >>> dict(probe.run(trunk))
  {'linear_probe/top1': ..., 'linear_probe/recall_at_5': ...}
"""
from __future__ import annotations

import dataclasses
import gzip
import math
import os
from typing import Callable, Dict, Iterator, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from mtssl_tf.evaluation.interface import (EvalBackbone, Evaluator,
                                           check_not_empty)
from mtssl_tf.models.trunk import Trunk
from mtssl_tf.ops.image import ensure_rgb
from mtssl_tf.utils.progress import Progress

DATA_SOURCES = ("tfds", "digits", "fashion_mnist")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
EVAL_TASK = "linear_probe"


# -- metrics -----------------------------------------------------------------
def top_k_accuracy(scores, labels, k: int) -> float:
  """Fraction of rows whose true label is among the ``k`` highest scores.

  A class ranks above the true class when its score is higher, or equal and
  its index lower (see the module docstring on ties). With ``k`` >= the
  number of classes every row counts.

  Args:
    scores: [N, K] class scores (logits or probabilities).
    labels: [N] integer labels in [0, K).
    k: >= 1.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels)
  if scores.ndim != 2 or labels.shape != scores.shape[:1]:
    raise ValueError(
        f"scores must be [N, K] and labels [N]; got {scores.shape} and "
        f"{labels.shape}")
  if scores.shape[0] == 0:
    raise ValueError("no scores: the evaluation set is empty")
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k={k!r} must be an integer >= 1")
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores contain NaN or inf: the classifier diverged")
  num_classes = scores.shape[1]
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
        f"labels must be in [0, {num_classes}); got {labels.min()}.."
        f"{labels.max()}")
  true = scores[np.arange(len(labels)), labels][:, None]
  index = np.arange(num_classes)[None, :]
  above = (scores > true) | ((scores == true) & (index < labels[:, None]))
  return float(np.mean(above.sum(axis=1) < k))


# -- data ----------------------------------------------------------------------
@dataclasses.dataclass
class LabelledData:
  """Train and test splits of ``(image, label)`` examples (unbatched)."""
  train: tf.data.Dataset
  test: tf.data.Dataset
  num_classes: int
  description: str


def preprocess_image(image, image_size: int) -> tf.Tensor:
  """Shorter side to ``image_size`` (bilinear, anti-aliased), central square
  crop: float32 RGB [image_size, image_size, 3] in [0, 255]."""
  image = ensure_rgb(image)
  shape = tf.shape(image)
  h = tf.cast(shape[0], tf.float32)
  w = tf.cast(shape[1], tf.float32)
  scale = float(image_size) / tf.minimum(h, w)
  new_h = tf.maximum(int(image_size), tf.cast(tf.round(h * scale), tf.int32))
  new_w = tf.maximum(int(image_size), tf.cast(tf.round(w * scale), tf.int32))
  image = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear",
                          antialias=True)
  top = (new_h - image_size) // 2
  left = (new_w - image_size) // 2
  image = image[top:top + image_size, left:left + image_size]
  image = tf.clip_by_value(image, 0.0, 255.0)
  return tf.ensure_shape(image, [image_size, image_size, 3])


def stratified_subset(labels: np.ndarray, count: Optional[int],
                      seed: int) -> np.ndarray:
  """Indices of ``count`` examples with the class proportions of ``labels``
  (all indices when ``count`` is None or not smaller)."""
  n = len(labels)
  if count is None or count >= n:
    return np.arange(n)
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  keep, _ = train_test_split(np.arange(n), train_size=count,
                             stratify=labels, random_state=seed)
  return np.sort(keep)


def _arrays_dataset(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(
      (images, labels.astype(np.int64)))


def load_digits_data(test_fraction: float = 0.25, seed: int = 0,
                     max_train_examples: Optional[int] = None,
                     max_test_examples: Optional[int] = None) -> LabelledData:
  """scikit-learn's digits, split into train and test (stratified, fixed
  seed). Pixel values 0..16 are scaled to [0, 255]."""
  try:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise FileNotFoundError(
        "data='digits' needs scikit-learn (pip install scikit-learn, or "
        "mtssl_tf[samples])") from None
  digits = load_digits()
  images = (digits.images * (255.0 / 16.0)).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int64)
  train_idx, test_idx = train_test_split(
      np.arange(len(labels)), test_size=test_fraction, stratify=labels,
      random_state=seed)
  train_idx = train_idx[stratified_subset(labels[train_idx],
                                          max_train_examples, seed)]
  test_idx = test_idx[stratified_subset(labels[test_idx], max_test_examples,
                                        seed)]
  return LabelledData(
      _arrays_dataset(images[train_idx], labels[train_idx]),
      _arrays_dataset(images[test_idx], labels[test_idx]), 10,
      f"scikit-learn digits ({len(train_idx)} train / {len(test_idx)} test, "
      f"stratified, seed {seed})")


def _read_idx(path: str) -> np.ndarray:
  """An IDX file (the MNIST format): big-endian header, uint8 data."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  magic = int.from_bytes(data[0:4], "big")
  if magic >> 8 != 0x08:  # 0x08 = unsigned byte
    raise ValueError(f"{path}: not an unsigned-byte IDX file")
  ndim = magic & 0xFF
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
          for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist_data(path: str = FASHION_MNIST_DIR, seed: int = 0,
                            max_train_examples: Optional[int] = None,
                            max_test_examples: Optional[int] = None
                            ) -> LabelledData:
  """Fashion-MNIST from the Debian package (its own train/test split;
  ``max_*_examples`` take stratified subsets of fixed seed)."""
  names = {"train_images": "train-images-idx3-ubyte.gz",
           "train_labels": "train-labels-idx1-ubyte.gz",
           "test_images": "t10k-images-idx3-ubyte.gz",
           "test_labels": "t10k-labels-idx1-ubyte.gz"}
  files = {k: os.path.join(path, v) for k, v in names.items()}
  missing = [f for f in files.values() if not os.path.exists(f)]
  if missing:
    raise FileNotFoundError(
        f"data='fashion_mnist' reads the Debian package "
        f"{FASHION_MNIST_PACKAGE} (apt-get install {FASHION_MNIST_PACKAGE}); "
        f"missing: {', '.join(missing)}")
  arrays = {k: _read_idx(f) for k, f in files.items()}
  splits = {}
  for split, limit in (("train", max_train_examples),
                       ("test", max_test_examples)):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    idx = stratified_subset(labels, limit, seed)
    splits[split] = (images[idx][..., None], labels[idx].astype(np.int64))
  return LabelledData(
      _arrays_dataset(*splits["train"]), _arrays_dataset(*splits["test"]), 10,
      f"Fashion-MNIST from {path} ({len(splits['train'][1])} train / "
      f"{len(splits['test'][1])} test)")


def load_tfds_data(name: str = "imagenet2012", train_split: str = "train",
                   test_split: str = "validation",
                   data_dir: Optional[str] = None,
                   max_train_examples: Optional[int] = None,
                   max_test_examples: Optional[int] = None) -> LabelledData:
  """A prepared TFDS data set with ``image`` and ``label`` features."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets)"
  splits = {}
  info = None
  for role, split in (("train", train_split), ("test", test_split)):
    try:
      ds, info = tfds.load(name, split=split, data_dir=data_dir,
                           download=False, with_info=True)
    except tfds.core.registered.DatasetNotFoundError as e:
      first_line = str(e).strip().splitlines()[0]
      raise ValueError(f"unknown TFDS dataset {name!r} ({first_line})"
                       ) from None
    except AssertionError as e:  # TFDS's "could not find data" check.
      raise FileNotFoundError(
          f"TFDS dataset {name!r} is not prepared in {where}: prepare it once "
          f"with `tfds build {name} --data_dir=<dir>` (imagenet2012 needs the "
          "ImageNet tar files in <dir>/downloads/manual/ first), then pass "
          f"data_dir=<dir>. Nothing is downloaded here. ({e})") from None
    except (KeyError, ValueError) as e:
      raise ValueError(
          f"TFDS dataset {name!r} in {where} has no split {split!r} "
          f"(the linear probe's {role} split): {e}") from None
    features = info.features
    for key in ("image", "label"):
      if key not in features:
        raise ValueError(
            f"TFDS dataset {name!r} has no {key!r} feature; features: "
            f"{', '.join(features.keys())}")
    limit = max_train_examples if role == "train" else max_test_examples
    if limit is not None:
      ds = ds.take(limit)
    splits[role] = ds.map(lambda ex: (ex["image"], ex["label"]))
  num_classes = int(info.features["label"].num_classes)
  return LabelledData(splits["train"], splits["test"], num_classes,
                      f"TFDS {name} [{train_split} / {test_split}] from "
                      f"{where}")


# -- features ------------------------------------------------------------------
def _pool_matrix(length: int, size: int) -> np.ndarray:
  """[size, length]: row i averages positions floor(i L / s) .. ceil((i+1) L
  / s) - 1 (adaptive average pooling; cells overlap when L % s != 0)."""
  matrix = np.zeros([size, length], np.float32)
  for i in range(size):
    lo = (i * length) // size
    hi = max(lo + 1, -(-(i + 1) * length // size))
    matrix[i, lo:hi] = 1.0 / (hi - lo)
  return matrix


def adaptive_average_pool(features, size: int) -> tf.Tensor:
  """[N, h, w, C] -> [N, size, size, C] by adaptive average pooling (h and w
  must be known statically)."""
  h, w = features.shape[1], features.shape[2]
  if h is None or w is None:
    raise ValueError(
        f"adaptive_average_pool needs a static spatial size, got "
        f"{features.shape}")
  rows = tf.constant(_pool_matrix(h, size), features.dtype)
  cols = tf.constant(_pool_matrix(w, size), features.dtype)
  return tf.einsum("ih,nhwc,jw->nijc", rows, features, cols)


class LinearProbe(Evaluator):
  """Frozen-trunk linear classification: top-1 and Recall@5.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (ImageNet evaluation: a linear classifier on the
  frozen block-3 features; Table 4 with and without eval lasso).

  Args:
    data: ``"tfds"``, ``"digits"`` or ``"fashion_mnist"`` (module docstring).
    tfds_name: the TFDS data set (``data="tfds"``).
    train_split: TFDS split the classifier is trained on.
    test_split: TFDS split it is measured on.
    data_dir: TFDS data folder of prepared data.
    image_size: side of the square input (224 = the paper's ImageNet size).
    pool_size: the block-3 map is average-pooled to pool_size x pool_size.
    batch_size: examples per step (and per feature-extraction batch).
    steps: training steps; ``None`` derives them from ``epochs``.
    epochs: passes over the training split when ``steps`` is None.
    learning_rate: initial SGD learning rate (cosine decay to 0).
    momentum: SGD momentum.
    weight_decay: decoupled weight decay of the dense kernel.
    lasso_l1: L1 penalty of the eval-lasso row (with ``eval_lasso``).
    test_fraction: share of the digits held out for testing.
    max_train_examples: use at most this many training examples.
    max_test_examples: use at most this many test examples.
    cache_features: compute the frozen features once and train on them
      (fast; memory: examples x features x 4 bytes, times the number of
      block-3 units with eval lasso); False recomputes them every step.
    seed: the data split and shuffling seed.

  Attributes (after ``run``): ``backbone`` (the
  :class:`~mtssl_tf.evaluation.interface.EvalBackbone`, whose ``mixer``
  holds the eval-lasso row) and ``classifier`` (the dense layer).
  """

  name = "linear_probe"

  def __init__(self, data: str = "tfds", tfds_name: str = "imagenet2012",
               train_split: str = "train", test_split: str = "validation",
               data_dir: Optional[str] = None, image_size: int = 224,
               pool_size: int = 2, batch_size: int = 256,
               steps: Optional[int] = None, epochs: float = 10.0,
               learning_rate: float = 0.1, momentum: float = 0.9,
               weight_decay: float = 1e-4, lasso_l1: float = 1e-3,
               test_fraction: float = 0.25,
               max_train_examples: Optional[int] = None,
               max_test_examples: Optional[int] = None,
               cache_features: bool = True, seed: int = 0):
    if data not in DATA_SOURCES:
      raise ValueError(
          f"linear_probe data={data!r}; allowed: {', '.join(DATA_SOURCES)}")
    for field, value, low in (("image_size", image_size, 16),
                              ("pool_size", pool_size, 1),
                              ("batch_size", batch_size, 1)):
      if not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(
            f"linear_probe {field}={value!r} must be an integer >= {low}")
    if steps is not None and (not isinstance(steps, (int, np.integer))
                              or steps < 1):
      raise ValueError(f"linear_probe steps={steps!r} must be an integer "
                       ">= 1 (or None to use epochs)")
    if steps is None and not epochs > 0:
      raise ValueError(f"linear_probe epochs={epochs!r} must be > 0")
    if not learning_rate > 0:
      raise ValueError(
          f"linear_probe learning_rate={learning_rate!r} must be > 0")
    if not 0 <= momentum < 1:
      raise ValueError(f"linear_probe momentum={momentum!r} must be in "
                       "[0, 1)")
    if not weight_decay >= 0 or not lasso_l1 >= 0:
      raise ValueError("linear_probe weight_decay and lasso_l1 must be >= 0")
    if not 0 < test_fraction < 1:
      raise ValueError(
          f"linear_probe test_fraction={test_fraction!r} must be in (0, 1)")
    for field, value in (("max_train_examples", max_train_examples),
                         ("max_test_examples", max_test_examples)):
      if value is not None and (not isinstance(value, (int, np.integer))
                                or value < 1):
        raise ValueError(
            f"linear_probe {field}={value!r} must be an integer >= 1")
    self.data = data
    self.tfds_name = tfds_name
    self.train_split = train_split
    self.test_split = test_split
    self.data_dir = data_dir
    self.image_size = int(image_size)
    self.pool_size = int(pool_size)
    self.batch_size = int(batch_size)
    self.steps = None if steps is None else int(steps)
    self.epochs = float(epochs)
    self.learning_rate = float(learning_rate)
    self.momentum = float(momentum)
    self.weight_decay = float(weight_decay)
    self.lasso_l1 = float(lasso_l1)
    self.test_fraction = float(test_fraction)
    self.max_train_examples = max_train_examples
    self.max_test_examples = max_test_examples
    self.cache_features = bool(cache_features)
    self.seed = int(seed)
    self.backbone: Optional[EvalBackbone] = None
    self.classifier: Optional[keras.layers.Dense] = None

  # -- data ------------------------------------------------------------------
  def load_data(self) -> LabelledData:
    """The train and test splits named by the parameters."""
    limits = dict(max_train_examples=self.max_train_examples,
                  max_test_examples=self.max_test_examples)
    if self.data == "digits":
      return load_digits_data(self.test_fraction, self.seed, **limits)
    if self.data == "fashion_mnist":
      return load_fashion_mnist_data(seed=self.seed, **limits)
    return load_tfds_data(self.tfds_name, self.train_split, self.test_split,
                          self.data_dir, **limits)

  def _batched(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    size = self.image_size
    return (dataset
            .map(lambda image, label: (preprocess_image(image, size), label),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(self.batch_size)
            .prefetch(tf.data.AUTOTUNE))

  # -- the protocol -------------------------------------------------------------
  def run(self, trunk: Trunk, *, eval_lasso: bool = False,
          log=print) -> Iterator[Tuple[str, float]]:
    data = self.load_data()
    log(f"linear_probe: {data.description}, {data.num_classes} classes")
    metrics = self.evaluate(trunk, data, eval_lasso=eval_lasso, log=log)
    yield from metrics.items()

  def evaluate(self, trunk: Trunk, data: LabelledData, *,
               eval_lasso: bool = False, log=print) -> Dict[str, float]:
    """Trains the probe on ``data.train`` and measures it on ``data.test``."""
    check_not_empty(data.train, "the linear probe's training set")
    check_not_empty(data.test, "the linear probe's evaluation set")
    was_trainable = trunk.trainable
    try:
      return self._evaluate(trunk, data, bool(eval_lasso), log)
    finally:
      trunk.trainable = was_trainable  # EvalBackbone froze it

  def _evaluate(self, trunk, data, eval_lasso, log) -> Dict[str, float]:
    backbone = EvalBackbone(trunk, eval_lasso=eval_lasso,
                            task_name=EVAL_TASK, l1=self.lasso_l1,
                            trainable_trunk=False)
    self.backbone = backbone
    extract = self._feature_fn(backbone)
    train = self._batched(data.train)
    test = self._batched(data.test)
    if self.cache_features:
      train_x, train_y = _collect(train, extract, log, "training features")
      n = len(train_y)
      log(f"linear_probe: cached features of {n} training images, "
          f"{train_x.shape[1:]} each ({train_x.nbytes / 2**20:.1f} MiB)")
      train_steps = (tf.data.Dataset.from_tensor_slices((train_x, train_y))
                     .shuffle(n, seed=self.seed).repeat()
                     .batch(self.batch_size, drop_remainder=n >= self.batch_size))
      featurize = None
    else:
      n = int(data.train.cardinality())
      train_steps = data.train.shuffle(10 * self.batch_size, seed=self.seed)
      train_steps = self._batched(train_steps.repeat())
      featurize = extract
    steps = self.steps
    if steps is None:
      if n < 0:
        raise ValueError(
            "the training set's size is unknown: give linear_probe.steps "
            "(or cache_features=True)")
      steps = max(1, math.ceil(self.epochs * n / self.batch_size))
    dims = self._train(backbone, train_steps, featurize, data.num_classes,
                       steps, log)
    self.last_alpha = (backbone.mixer.alphas()[EVAL_TASK]
                       if backbone.mixer is not None else None)
    if self.cache_features:
      test_x, test_y = _collect(test, extract, log, "test features")
      scores = self._scores(backbone, test_x)
    else:
      outputs = [(self._scores(backbone, extract(x)), y.numpy())
                 for x, y in test]
      scores = np.concatenate([s for s, _ in outputs])
      test_y = np.concatenate([y for _, y in outputs])
    log(f"linear_probe: {dims}-d features, {steps} steps, "
        f"{len(test_y)} test images")
    return {f"{self.name}/top1": top_k_accuracy(scores, test_y, 1),
            f"{self.name}/recall_at_5": top_k_accuracy(scores, test_y, 5)}

  def _feature_fn(self, backbone: EvalBackbone) -> Callable:
    """images -> pooled, flattened features [N, D], or [N, units, D] with
    eval lasso (the mix is applied later, after pooling: both are linear)."""
    trunk = backbone.trunk
    names = trunk.unit_names if backbone.mixer is not None else \
        trunk.unit_names[-1:]
    size = self.pool_size

    @tf.function(reduce_retracing=True)
    def extract(images):
      outputs = trunk(images, training=False)
      channels = trunk.output_channels
      pooled = [tf.reshape(adaptive_average_pool(outputs[n], size),
                           [-1, size * size * channels]) for n in names]
      if backbone.mixer is None:
        return pooled[0]
      return tf.stack(pooled, axis=1)

    return extract

  def _mix(self, backbone: EvalBackbone, features):
    if backbone.mixer is None:
      return features
    alpha = backbone.mixer.alpha(EVAL_TASK)
    return tf.einsum("nud,u->nd", features, alpha)

  def _train(self, backbone, dataset, featurize, num_classes, steps,
             log) -> int:
    norm = keras.layers.BatchNormalization(center=False, scale=False,
                                           momentum=0.9, epsilon=1e-5,
                                           name="probe_standardize")
    classifier = keras.layers.Dense(num_classes, kernel_initializer="zeros",
                                    name="probe_classifier")
    self.norm, self.classifier = norm, classifier
    spec = dataset.element_spec[0]
    dims = None
    if featurize is None:
      dims = int(spec.shape[-1])
    else:
      dims = int(featurize.get_concrete_function(
          tf.TensorSpec([None, self.image_size, self.image_size, 3],
                        tf.float32)).structured_outputs.shape[-1])
    norm.build((None, dims))
    classifier.build((None, dims))
    schedule = keras.optimizers.schedules.CosineDecay(self.learning_rate,
                                                      steps)
    optimizer = keras.optimizers.SGD(learning_rate=schedule,
                                     momentum=self.momentum,
                                     weight_decay=self.weight_decay or None)
    mixer_vars = (list(backbone.mixer.trainable_variables)
                  if backbone.mixer is not None else [])
    variables = list(classifier.trainable_variables) + mixer_vars
    optimizer.exclude_from_weight_decay(
        var_list=[classifier.bias] + mixer_vars)
    optimizer.build(variables)
    penalty = (backbone.mixer.penalty if backbone.mixer is not None and
               self.lasso_l1 > 0 else None)

    @tf.function
    def step(x, y):
      if featurize is not None:
        x = featurize(x)
      with tf.GradientTape() as tape:
        logits = classifier(norm(self._mix(backbone, x), training=True))
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
        total = loss + penalty(EVAL_TASK) if penalty else loss
      grads = tape.gradient(total, variables)
      optimizer.apply_gradients(zip(grads, variables))
      return loss

    every = max(1, steps // 5)
    progress = Progress("linear_probe:", steps, log, every)
    for i, (x, y) in enumerate(dataset.take(steps), start=1):
      loss = step(x, y)
      if i % every == 0 or i == steps:
        value = float(loss)
        if not math.isfinite(value):
          raise FloatingPointError(
              f"linear_probe: the loss became {value} at step {i}; lower "
              "linear_probe.learning_rate")
        progress.update(i, f"loss {value:.4f}")
    return dims

  def _scores(self, backbone, features) -> np.ndarray:
    scores = []
    for start in range(0, len(features), 4096):
      x = self._mix(backbone, features[start:start + 4096])
      scores.append(np.asarray(self.classifier(self.norm(x, training=False))))
    return np.concatenate(scores)


def _collect(dataset: tf.data.Dataset, extract, log=None,
             what: str = "features") -> Tuple[np.ndarray, np.ndarray]:
  # Extracting ImageNet's features takes hours: progress with an ETA when the
  # number of batches is known.
  total = int(dataset.cardinality())
  progress = (Progress(f"linear_probe: {what}", total, log,
                       every=max(1, total // 5))
              if log is not None and total > 0 else None)
  xs, ys = [], []
  for i, (images, labels) in enumerate(dataset, start=1):
    xs.append(extract(images).numpy())
    ys.append(labels.numpy())
    if progress:
      progress.update(i)
  return np.concatenate(xs), np.concatenate(ys)


__all__ = ["DATA_SOURCES", "LabelledData", "LinearProbe",
           "adaptive_average_pool", "load_digits_data",
           "load_fashion_mnist_data", "load_tfds_data", "preprocess_image",
           "stratified_subset", "top_k_accuracy"]
