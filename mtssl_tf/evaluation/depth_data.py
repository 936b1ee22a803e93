"""Data of the depth evaluation: NYU v2 through TFDS, offline Middlebury pairs.

Every source yields examples ``{"image": uint8 [H, W, 3], "depth": float32
[H, W]}``; depth is in metres where the calibration is known, and pixels
without ground truth are 0 (or NaN / inf, which :func:`preprocess_depth`
turns into 0). :func:`preprocess_depth` then makes the network's input the
FCRN way (Laina et al., 3DV 2016): resize so that the input size is about
228/240 of the image (NYU's 480x640 -> 240x320), crop 228x304 (random with a
random horizontal flip when training, central when testing).

Sources:

* ``"nyu_depth_v2"``: ``tfds.load("nyu_depth_v2", download=False)``; the user
  prepares the data (``tfds build nyu_depth_v2``) beforehand, nothing is ever
  downloaded here. TFDS's ``"validation"`` split is the 654-image test set.
* ``"middlebury"``: the two stereo pairs with ground-truth disparity that ship
  inside packages: scikit-image's ``stereo_motorcycle`` (Middlebury 2014,
  quarter size, with its calibration, so depth = f * B / (d + doffs) in
  metres) and Debian ``opencv-doc``'s ``aloeL.jpg`` + ``aloeGT.png``
  (Middlebury 2006, no calibration: relative depth = median(d) / d, so the
  median valid depth is 1). Each pair is cut into non-overlapping tiles,
  shuffled with a fixed seed and split into train and test tiles. This is a
  smoke-scale protocol on one or two scenes that shows the code runs on real
  depth; its numbers are not comparable with NYU's.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mtssl_tf.ops.image import ensure_rgb

SOURCES = ("nyu_depth_v2", "middlebury")
MIDDLEBURY_PAIRS = ("motorcycle", "aloe")
OPENCV_DOC_DATA_DIR = "/usr/share/doc/opencv-doc/examples/data"
# FCRN: 480x640 NYU frames are halved to 240x320, then 228x304 is cropped.
CROP_MARGIN = 240.0 / 228.0
# scikit-image's stereo_motorcycle docstring (valid for its quarter size).
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_BASELINE_M = 0.193001
MOTORCYCLE_DOFFS_PX = 31.086


# ---------------------------------------------------------------------------
# NYU depth v2 (TFDS).


def load_nyu_depth_v2(split: str, data_dir: Optional[str] = None
                      ) -> tf.data.Dataset:
  """NYU v2 from prepared TFDS data; never downloads.

  Raises:
    FileNotFoundError: the prepared data is not in ``data_dir``.
  """
  import tensorflow_datasets as tfds  # heavy: imported only when used
  try:
    dataset = tfds.load("nyu_depth_v2", split=split, data_dir=data_dir,
                        download=False)
  except (AssertionError, FileNotFoundError,
          tfds.core.registered.DatasetNotFoundError) as e:
    where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets)"
    raise FileNotFoundError(
        f"TFDS dataset nyu_depth_v2 (split {split!r}) is missing in {where}; "
        "prepare it first (e.g. `tfds build nyu_depth_v2 --data_dir=...` on a "
        f"machine with internet) and pass data_dir. TFDS said: {e}") from e

  def convert(example):
    return {"image": example["image"],
            "depth": tf.cast(example["depth"], tf.float32)}
  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------
# Offline Middlebury pairs.


def _load_motorcycle() -> Dict[str, np.ndarray]:
  try:
    from skimage import data as skdata
    left, _, disparity = skdata.stereo_motorcycle()
  except ImportError as e:
    raise FileNotFoundError(
        "the Middlebury pair 'motorcycle' needs scikit-image "
        "(skimage.data.stereo_motorcycle, whose files ship in the wheel); "
        f"install scikit-image: {e}") from e
  except Exception as e:  # pooch or a missing file inside the install
    raise FileNotFoundError(
        "the Middlebury pair 'motorcycle' (skimage.data.stereo_motorcycle: "
        "motorcycle_left.png, motorcycle_disp.npz) could not be read "
        f"offline: {e}") from e
  disparity = np.asarray(disparity, np.float64)
  valid = np.isfinite(disparity) & (disparity + MOTORCYCLE_DOFFS_PX > 0)
  depth = np.zeros(disparity.shape, np.float32)
  depth[valid] = (MOTORCYCLE_FOCAL_PX * MOTORCYCLE_BASELINE_M
                  / (disparity[valid] + MOTORCYCLE_DOFFS_PX))
  return {"image": np.asarray(left, np.uint8), "depth": depth,
          "units": "metres"}


def _load_aloe(opencv_doc_dir: str) -> Dict[str, np.ndarray]:
  paths = [os.path.join(opencv_doc_dir, f) for f in ("aloeL.jpg",
                                                     "aloeGT.png")]
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"the Middlebury pair 'aloe' needs {path}, which is missing: install "
          "the Debian package opencv-doc (`apt-get install opencv-doc`) or "
          "pass opencv_doc_dir")
  import cv2  # heavy: imported only when used
  image = cv2.imread(paths[0], cv2.IMREAD_COLOR)
  disparity = cv2.imread(paths[1], cv2.IMREAD_UNCHANGED)
  if image is None or disparity is None:
    raise FileNotFoundError(f"OpenCV could not decode {paths}")
  if image.shape[:2] != disparity.shape[:2]:
    raise ValueError(
        f"aloe image {image.shape[:2]} and ground truth {disparity.shape[:2]} "
        "differ in size")
  disparity = disparity.astype(np.float64)
  valid = disparity > 0  # Middlebury 2006: 0 = unknown disparity
  if not valid.any():
    raise ValueError(f"{paths[1]} holds no valid disparity")
  depth = np.zeros(disparity.shape, np.float32)
  # No calibration (focal length, doffs) ships with the files: relative
  # depth, proportional to 1/disparity, with median 1 over valid pixels.
  depth[valid] = np.median(disparity[valid]) / disparity[valid]
  return {"image": image[..., ::-1].copy(), "depth": depth,
          "units": "relative"}


def load_middlebury_pair(name: str,
                         opencv_doc_dir: str = OPENCV_DOC_DATA_DIR
                         ) -> Dict[str, np.ndarray]:
  """One offline pair: ``{"image": uint8 [H,W,3] RGB, "depth": float32 [H,W]
  (0 = no ground truth), "units": "metres" | "relative"}``.

  Raises:
    FileNotFoundError: naming the missing package or file.
    ValueError: an unknown pair name.
  """
  if name == "motorcycle":
    return _load_motorcycle()
  if name == "aloe":
    return _load_aloe(opencv_doc_dir)
  raise ValueError(
      f"unknown Middlebury pair {name!r}; allowed: "
      f"{', '.join(MIDDLEBURY_PAIRS)}")


def _downscale(pair, scale):
  import cv2
  h, w = pair["depth"].shape
  size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
  image = cv2.resize(pair["image"], size, interpolation=cv2.INTER_AREA)
  # Nearest keeps holes (0) from bleeding into valid depth.
  depth = cv2.resize(pair["depth"], size, interpolation=cv2.INTER_NEAREST)
  return dict(pair, image=image, depth=depth)


def middlebury_tiles(tile_size: Tuple[int, int],
                     names: Sequence[str] = MIDDLEBURY_PAIRS, *,
                     scale: float = 1.0, test_fraction: float = 0.25,
                     seed: int = 0,
                     opencv_doc_dir: str = OPENCV_DOC_DATA_DIR
                     ) -> Dict[str, Dict[str, np.ndarray]]:
  """Non-overlapping tiles of the offline pairs, split into train and test.

  Args:
    tile_size: (height, width) of each tile.
    names: the pairs to use (``MIDDLEBURY_PAIRS``).
    scale: resize the pairs by this factor first (area for the image,
      nearest for the depth).
    test_fraction: share of the tiles (at least one) held out for testing.
    seed: the seed of the tile shuffle.
    opencv_doc_dir: where opencv-doc's example data is.

  Returns:
    ``{"train": {"image": [n, th, tw, 3] uint8, "depth": [n, th, tw]},
    "test": {...}}``.
  """
  th, tw = int(tile_size[0]), int(tile_size[1])
  if th < 1 or tw < 1:
    raise ValueError(f"tile_size={tile_size!r} must be positive")
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 1)")
  if not scale > 0:
    raise ValueError(f"scale={scale!r} must be > 0")
  if not names:
    raise ValueError("names must list at least one Middlebury pair")
  images, depths = [], []
  for name in names:
    pair = load_middlebury_pair(name, opencv_doc_dir)
    if scale != 1.0:
      pair = _downscale(pair, scale)
    h, w = pair["depth"].shape
    for r in range(h // th):
      for c in range(w // tw):
        images.append(pair["image"][r * th:(r + 1) * th, c * tw:(c + 1) * tw])
        depths.append(pair["depth"][r * th:(r + 1) * th, c * tw:(c + 1) * tw])
  if len(images) < 2:
    raise ValueError(
        f"the Middlebury pairs {list(names)} at scale {scale} give "
        f"{len(images)} tile(s) of {th}x{tw}: too few for a train and a test "
        "split; use a smaller input size or a larger scale")
  order = np.random.default_rng(seed).permutation(len(images))
  num_test = max(1, int(round(test_fraction * len(images))))
  num_test = min(num_test, len(images) - 1)
  splits = {"test": order[:num_test], "train": order[num_test:]}
  return {k: {"image": np.stack([images[i] for i in idx]),
              "depth": np.stack([depths[i] for i in idx]).astype(np.float32)}
          for k, idx in splits.items()}


def tile_size_for(input_size: Tuple[int, int]) -> Tuple[int, int]:
  """The tile size whose FCRN resize is about 1: input_size * 240/228."""
  return (int(math.ceil(input_size[0] * CROP_MARGIN)),
          int(math.ceil(input_size[1] * CROP_MARGIN)))


def load_depth_splits(source: str, *, input_size: Tuple[int, int],
                      data_dir: Optional[str] = None,
                      train_split: str = "train",
                      test_split: str = "validation",
                      middlebury: Optional[dict] = None
                      ) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
  """(train, test) datasets of raw ``{"image", "depth"}`` examples.

  ``middlebury`` holds keyword arguments of :func:`middlebury_tiles`
  (``tile_size`` defaults to :func:`tile_size_for` the input size).
  """
  if source == "nyu_depth_v2":
    return (load_nyu_depth_v2(train_split, data_dir),
            load_nyu_depth_v2(test_split, data_dir))
  if source == "middlebury":
    kwargs = dict(middlebury or {})
    tile = kwargs.pop("tile_size", None) or tile_size_for(input_size)
    tiles = middlebury_tiles(tile, **kwargs)
    return (tf.data.Dataset.from_tensor_slices(tiles["train"]),
            tf.data.Dataset.from_tensor_slices(tiles["test"]))
  raise ValueError(
      f"unknown depth source {source!r}; allowed: {', '.join(SOURCES)}")


# ---------------------------------------------------------------------------
# Preprocessing.


def preprocess_depth(example: Dict[str, tf.Tensor], seed,
                     input_size: Tuple[int, int], training: bool
                     ) -> Tuple[tf.Tensor, tf.Tensor]:
  """One example -> (image float32 [h, w, 3] in [0, 255], depth [h, w]).

  Resizes (image bilinear with antialiasing, depth nearest so holes stay
  holes) so that ``input_size`` is ``228/240`` of the resized image along
  its tighter axis, then crops ``input_size``: at a random place with a random
  horizontal flip when ``training``, centrally otherwise. Depth that is not
  finite and > 0 becomes 0 (invalid). Deterministic given the [2]-int
  ``seed`` (stateless random ops), eagerly and inside ``tf.data``.
  """
  in_h, in_w = int(input_size[0]), int(input_size[1])
  image = ensure_rgb(example["image"], "depth example 'image'")
  if image.shape.rank != 3:
    raise ValueError(
        f"depth example 'image' must be one image [H, W, C], got {image.shape}")
  depth = tf.cast(example["depth"], tf.float32)
  if depth.shape.rank == 3 and depth.shape[-1] == 1:
    depth = depth[..., 0]
  if depth.shape.rank != 2:
    raise ValueError(
        f"depth example 'depth' must be [H, W] (or [H, W, 1]), got "
        f"{depth.shape}")
  depth = tf.where(tf.math.is_finite(depth) & (depth > 0), depth,
                   tf.zeros_like(depth))
  shape = tf.shape(image)
  with tf.control_dependencies([tf.debugging.assert_equal(
      shape[:2], tf.shape(depth),
      message="depth example: 'image' and 'depth' differ in height/width")]):
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
  scale = tf.maximum(in_h / h, in_w / w) * CROP_MARGIN
  new_h = tf.maximum(tf.cast(tf.math.ceil(h * scale), tf.int32), in_h)
  new_w = tf.maximum(tf.cast(tf.math.ceil(w * scale), tf.int32), in_w)
  image = tf.image.resize(image, [new_h, new_w], method="bilinear",
                          antialias=True)
  image = tf.clip_by_value(image, 0.0, 255.0)
  depth = tf.image.resize(depth[..., tf.newaxis], [new_h, new_w],
                          method="nearest")[..., 0]
  if training:
    seed = tf.convert_to_tensor(seed)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    top = tf.random.stateless_uniform([], seeds[0], 0, new_h - in_h + 1,
                                      dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[1], 0, new_w - in_w + 1,
                                       dtype=tf.int32)
    flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
  else:
    top = (new_h - in_h) // 2
    left = (new_w - in_w) // 2
    flip = tf.constant(False)
  image = image[top:top + in_h, left:left + in_w]
  depth = depth[top:top + in_h, left:left + in_w]
  image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
  depth = tf.cond(flip, lambda: depth[:, ::-1], lambda: depth)
  image = tf.ensure_shape(image, [in_h, in_w, 3])
  depth = tf.ensure_shape(depth, [in_h, in_w])
  return image, depth


def make_depth_dataset(raw: tf.data.Dataset, input_size: Tuple[int, int], *,
                       training: bool, seed: int = 0, batch_size: int = 16,
                       shuffle_buffer: int = 1024) -> tf.data.Dataset:
  """Batches of (images [B, h, w, 3], depth [B, h, w]).

  Training: shuffled (seeded), repeated forever, full batches; each example's
  crop/flip seed is (seed, position in the stream). Testing: one pass in
  order, the last batch may be smaller.
  """
  if training:
    raw = raw.shuffle(shuffle_buffer, seed=seed,
                      reshuffle_each_iteration=True).repeat()
  stream = raw.enumerate()

  def prepare(index, example):
    return preprocess_depth(example, tf.stack([tf.constant(seed, tf.int64),
                                               index]),
                            input_size, training)
  dataset = stream.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
  dataset = dataset.batch(batch_size, drop_remainder=training)
  return dataset.prefetch(tf.data.AUTOTUNE)
