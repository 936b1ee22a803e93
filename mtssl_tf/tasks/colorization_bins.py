"""The colorization task's ab bins, empirical colour prior and class weights.

Colorization (Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016;
used as one of the four tasks of Doersch & Zisserman, "Multi-task
Self-Supervised Visual Learning", ICCV 2017) classifies each pixel's ab colour
into Q bins and re-weights the loss by how rare the colour is. This module
holds everything about the bins and their statistics:

* :func:`load_ab_bins_313` -- the authors' 313 bin centres, shipped as
  package data (``resources/ab_bins_313.npy``, provenance beside it).
* :func:`load_imagenet_prior` -- Zhang et al.'s released ImageNet prior over
  those bins (``resources/colorization_prior_imagenet_313.txt``, provenance
  beside it); a task's ``prior="imagenet"``.
* :func:`ab_histogram` -- the empirical ab histogram of a set of images, on a
  1-unit grid (grey images or pixels left out, as in the loss).
* :func:`prior_from_histogram` / :func:`compute_prior` -- the empirical
  probability of each bin (pixels assigned to their nearest bin), smoothed
  with a Gaussian (sigma = 5 ab units, the paper's value).
* :func:`derive_bins` -- a bin set fitted to the user's images: the cells of
  the grid of 10 that hold any (or at least ``min_count``) pixels.
* :func:`rebalancing_weights` -- ``w = ((1 - gamma) p + gamma / Q)^-1``
  normalised so that ``E_p[w] = sum_q p_q w_q = 1``.
* :func:`save_prior` / :func:`load_prior` -- the ``.npz`` file the command
  writes and the task reads (keys ``bins`` [Q, 2] and ``prior`` [Q]; the
  command adds ``counts`` [Q], the unsmoothed pixel counts, and how the
  prior was made).

Computing a prior from image files or a run's data is
:mod:`mtssl_tf.data.color_statistics` (behind ``python -m
mtssl_tf.colorization_prior``); what training uses when no prior is given
(``prior="auto"``) is :meth:`mtssl_tf.tasks.colorization.Colorization.prepare`,
which the trainer calls with the data layer's sample of the training images.

NumPy does the statistics (they run once, offline); the images are decoded
and converted to Lab with TensorFlow so that the conversion is the very one
the task uses in training.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterable, Optional, Tuple

import numpy as np

_RESOURCES = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                          "resources")
BINS_313_PATH = os.path.join(_RESOURCES, "ab_bins_313.npy")
IMAGENET_PRIOR_PATH = os.path.join(_RESOURCES,
                                   "colorization_prior_imagenet_313.txt")
# Values of the colorization task's ``prior`` besides a path or an array.
PRIOR_IMAGENET = "imagenet"   # Zhang et al.'s released ImageNet prior
PRIOR_UNIFORM = "uniform"     # every rebalancing weight 1 (same as None)
PRIOR_AUTO = "auto"           # training: computed from the training images
PRIOR_NAMES = (PRIOR_IMAGENET, PRIOR_UNIFORM, PRIOR_AUTO)
# The auto prior's cache in the run folder, and its bounded image sample.
AUTO_PRIOR_FILE = "colorization_prior.npz"
AUTO_PRIOR_MAX_IMAGES = 500
AUTO_PRIOR_MAX_SIDE = 256
# The least a prior is computed from (the auto prior and the prior command);
# below either, it is refused with an error that asks for a given prior.
# Colour images: a prior describes a collection, and one or two pictures
# give their own palette instead (a folder holding one usable 1x1 PNG once
# gave a "prior" of one pixel), whose rebalancing then up-weights every
# colour they lack. Three is a floor against such degenerate samples, not a
# quality bar: the zoo's small recipes train on the 7 colour photos of the
# pip-installed offline set, and the sample takes up to
# AUTO_PRIOR_MAX_IMAGES when the data has them.
MIN_PRIOR_COLOUR_IMAGES = 3
# Colour pixels, per ab bin (313 for Zhang et al.'s bins): with fewer pixels
# than bins most bins are empty by construction and the smoothed prior
# (sigma 5 on a grid of 10) is a few bumps around the pixels seen; 10 per
# bin on average is the usual floor on a histogram's expected cell counts
# (one 56x56 image for 313 bins; any photo at AUTO_PRIOR_MAX_SIDE has 20x
# that).
MIN_PRIOR_PIXELS_PER_BIN = 10
GRID_STEP = 10.0
GREY_MASK_MODES = ("image", "pixel", "none")

# The fine histogram covers every reachable ab value: sRGB spans about
# a in [-86, 98], b in [-108, 95]; anything outside is clipped to the border.
_HIST_RANGE = 128
_HIST_SIZE = 2 * _HIST_RANGE


@functools.lru_cache(maxsize=1)
def _bins_313() -> np.ndarray:
  bins = np.load(BINS_313_PATH).astype(np.float32)
  bins.setflags(write=False)
  return bins


def load_ab_bins_313() -> np.ndarray:
  """The 313 ab bin centres of Zhang et al. 2016, float32 [313, 2] (a, b).

  See ``mtssl_tf/resources/ab_bins_313.txt`` for where they come from and
  why they are not rebuilt from the sRGB gamut.
  """
  return np.array(_bins_313())


def load_imagenet_prior() -> np.ndarray:
  """Zhang et al.'s ImageNet prior over the 313 bins, float64 [313].

  Reads ``resources/colorization_prior_imagenet_313.txt`` (``a b p`` per
  line) and checks that its (a, b) columns are the 313 bins of
  :func:`load_ab_bins_313` in order, so that value ``i`` belongs to class
  ``i``. See the README beside the file for its provenance.

  Raises:
    ValueError: the file's bins differ from the shipped 313 (a corrupt or
      foreign file).
  """
  table = np.loadtxt(IMAGENET_PRIOR_PATH, dtype=np.float64, ndmin=2)
  bins = load_ab_bins_313()
  if table.shape != (len(bins), 3) or not np.array_equal(
      table[:, :2], bins.astype(np.float64)):
    raise ValueError(
        f"{IMAGENET_PRIOR_PATH}: its (a, b) columns are not the 313 bins of "
        f"{BINS_313_PATH} in order (shape {table.shape}); the prior would "
        "weight the wrong classes.")
  return check_prior(table[:, 2], len(bins))


def check_bins(bins: Any) -> np.ndarray:
  """Returns ``bins`` as float32 [Q, 2] or raises ``ValueError``."""
  bins = np.asarray(bins, dtype=np.float32)
  if bins.ndim != 2 or bins.shape[1] != 2 or bins.shape[0] < 2:
    raise ValueError(
        f"ab bins must have shape [Q, 2] with Q >= 2, got {bins.shape}.")
  if not np.all(np.isfinite(bins)):
    raise ValueError("ab bins must be finite.")
  if len(np.unique(bins, axis=0)) != len(bins):
    raise ValueError("ab bins must be unique.")
  return bins


def check_prior(prior: Any, num_bins: int) -> np.ndarray:
  """Returns ``prior`` as float64 [Q] (a distribution) or raises."""
  prior = np.asarray(prior, dtype=np.float64)
  if prior.shape != (num_bins,):
    raise ValueError(
        f"the prior must have shape [{num_bins}] (one value per ab bin), got "
        f"{prior.shape}.")
  if not np.all(np.isfinite(prior)) or np.any(prior < 0) or prior.sum() <= 0:
    raise ValueError("the prior must be finite, non-negative and not all 0.")
  return prior / prior.sum()


def nearest_bins(ab: np.ndarray, bins: np.ndarray,
                 chunk: int = 16384) -> np.ndarray:
  """Index of the nearest bin (Euclidean in ab) for each of ab [..., 2]."""
  ab = np.asarray(ab, dtype=np.float64)
  bins = np.asarray(bins, dtype=np.float64)
  flat = ab.reshape(-1, 2)
  out = np.empty(len(flat), dtype=np.int64)
  # Chunks bound the [P, Q] distance matrix's memory.
  for start in range(0, len(flat), chunk):
    part = flat[start:start + chunk]
    d2 = ((part[:, None, :] - bins[None, :, :]) ** 2).sum(-1)
    out[start:start + chunk] = np.argmin(d2, axis=1)
  return out.reshape(ab.shape[:-1])


def is_colour_image(ab: np.ndarray, threshold: float) -> bool:
  """True when some pixel of ab [H, W, 2] has |a| or |b| above threshold."""
  return bool(np.any(np.abs(ab) > threshold))


def colour_pixel_mask(ab: np.ndarray, threshold: float) -> np.ndarray:
  """Per pixel: True when |a| or |b| is above ``threshold`` (not grey)."""
  return np.any(np.abs(ab) > threshold, axis=-1)


@dataclasses.dataclass
class AbHistogram:
  """Counts of ab values on a 1-unit grid.

  Attributes:
    counts: int64 [256, 256]; ``counts[i, j]`` counts pixels with
      ``floor(a) = i - 128`` and ``floor(b) = j - 128`` (values outside
      [-128, 128) go to the border cells).
    num_images: images seen.
    num_grey_images: images left out as grey (``grey_mask="image"``).
  """
  counts: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((_HIST_SIZE, _HIST_SIZE), np.int64))
  num_images: int = 0
  num_grey_images: int = 0

  def add(self, ab: np.ndarray) -> None:
    """Adds ab values [..., 2] (already filtered for greyness)."""
    idx = np.floor(np.asarray(ab, np.float64).reshape(-1, 2)) + _HIST_RANGE
    idx = np.clip(idx, 0, _HIST_SIZE - 1).astype(np.int64)
    self.counts += np.bincount(idx[:, 0] * _HIST_SIZE + idx[:, 1],
                               minlength=_HIST_SIZE ** 2).reshape(
                                   _HIST_SIZE, _HIST_SIZE)

  @property
  def num_pixels(self) -> int:
    return int(self.counts.sum())

  def cells(self) -> Tuple[np.ndarray, np.ndarray]:
    """The non-empty cells: centres float64 [M, 2] (a, b) and counts [M]."""
    ia, ib = np.nonzero(self.counts)
    centres = np.stack([ia, ib], axis=1) - _HIST_RANGE + 0.5
    return centres, self.counts[ia, ib]


def _iter_images(images: Any):
  """Yields each image of ``images`` as a TF tensor [H, W, C]."""
  import tensorflow as tf
  for item in images:
    if isinstance(item, dict):
      if "image" not in item:
        raise ValueError(
            f"dataset elements are dicts without an 'image' key: "
            f"{sorted(item)}")
      item = item["image"]
    item = tf.convert_to_tensor(item)
    if item.shape.rank == 4:
      for image in tf.unstack(item):
        yield image
    else:
      yield item


def ab_histogram(images: Iterable[Any], grey_mask: str = "image",
                 grey_threshold: float = 5.0,
                 histogram: Optional[AbHistogram] = None) -> AbHistogram:
  """The empirical ab histogram of ``images``.

  Args:
    images: an iterable (list, generator, ``tf.data.Dataset``) of images
      [H, W, C] or batches [N, H, W, C] accepted by
      :func:`mtssl_tf.ops.image.ensure_rgb` (uint8, or float in [0, 255]),
      or of dicts with an ``"image"`` entry.
    grey_mask: ``"image"`` leaves out images in which no pixel has |a| or |b|
      above ``grey_threshold`` (Zhang et al.'s rule); ``"pixel"`` leaves out
      each such pixel; ``"none"`` counts everything. Use the task's setting.
    grey_threshold: in ab units.
    histogram: an :class:`AbHistogram` to add to (a new one when None).

  Returns:
    The :class:`AbHistogram`.
  """
  from mtssl_tf.ops.color import rgb_to_lab
  from mtssl_tf.ops.image import ensure_rgb
  if grey_mask not in GREY_MASK_MODES:
    raise ValueError(f"grey_mask must be one of {GREY_MASK_MODES}, got "
                     f"{grey_mask!r}.")
  hist = histogram if histogram is not None else AbHistogram()
  for image in _iter_images(images):
    ab = rgb_to_lab(ensure_rgb(image))[..., 1:].numpy()
    hist.num_images += 1
    if grey_mask == "image":
      if not is_colour_image(ab, grey_threshold):
        hist.num_grey_images += 1
        continue
    elif grey_mask == "pixel":
      ab = ab[colour_pixel_mask(ab, grey_threshold)]
    hist.add(ab)
  return hist


def smooth_prior(prior: np.ndarray, bins: np.ndarray,
                 sigma: float = 5.0) -> np.ndarray:
  """Spreads each bin's mass over the bins with a Gaussian of ``sigma``.

  ``p_s[i] = sum_j p[j] G(c_i - c_j) / sum_k G(c_k - c_j)``: each source
  bin's mass is shared among the bins (so the total stays 1 and no mass is
  lost outside the bin set, whatever its shape). ``sigma=0`` returns ``p``.
  """
  prior = np.asarray(prior, np.float64)
  if sigma < 0:
    raise ValueError(f"sigma must be >= 0, got {sigma}.")
  if sigma == 0:
    return prior / prior.sum()
  bins = np.asarray(bins, np.float64)
  d2 = ((bins[:, None, :] - bins[None, :, :]) ** 2).sum(-1)
  kernel = np.exp(-d2 / (2.0 * sigma ** 2))
  kernel /= kernel.sum(axis=0, keepdims=True)
  smoothed = kernel @ prior
  return smoothed / smoothed.sum()


def prior_from_histogram(histogram: AbHistogram, bins: np.ndarray,
                         sigma: float = 5.0) -> np.ndarray:
  """Empirical bin probabilities: each pixel to its nearest bin, smoothed.

  Returns:
    float64 [Q], summing to 1.

  Raises:
    ValueError: when the histogram holds no pixel (e.g. all images grey).
  """
  raw = bin_counts(histogram, bins)
  return smooth_prior(raw / raw.sum(), bins, sigma)


def bin_counts(histogram: AbHistogram, bins: np.ndarray) -> np.ndarray:
  """Pixels per bin (each pixel to its nearest bin), float64 [Q].

  Pixels are taken at the centre of their 1-unit histogram cell, which moves
  a pixel at most 0.71 ab units: only pixels that close to the boundary
  between two bins can land in the other one.
  """
  bins = check_bins(bins)
  if histogram.num_pixels == 0:
    raise ValueError(
        f"no colour pixels to compute a prior from ({histogram.num_images} "
        f"images, {histogram.num_grey_images} of them grey).")
  centres, counts = histogram.cells()
  owner = nearest_bins(centres, bins)
  return np.bincount(owner, weights=counts.astype(np.float64),
                     minlength=len(bins))


def compute_prior(images: Iterable[Any], bins: Optional[np.ndarray] = None,
                  sigma: float = 5.0, grey_mask: str = "image",
                  grey_threshold: float = 5.0) -> np.ndarray:
  """The smoothed empirical prior over ``bins`` (313 bins when None).

  See :func:`ab_histogram` for ``images``, ``grey_mask`` and
  ``grey_threshold``, and :func:`prior_from_histogram` for the rule.
  """
  bins = load_ab_bins_313() if bins is None else bins
  hist = ab_histogram(images, grey_mask=grey_mask,
                      grey_threshold=grey_threshold)
  return prior_from_histogram(hist, bins, sigma)


def derive_bins(histogram: AbHistogram, step: float = GRID_STEP,
                min_count: int = 1) -> np.ndarray:
  """A bin set from data: grid cells (spacing ``step``) with mass.

  A pixel belongs to the cell of its nearest grid point
  (``round(ab / step) * step``). Bins are sorted by a, then b, like the 313.

  Args:
    histogram: the empirical :class:`AbHistogram`.
    step: the grid spacing in ab units (10 as in Zhang et al.).
    min_count: the least number of pixels a cell needs to become a bin
      (1: any non-zero mass). A higher value drops cells that a handful of
      noisy pixels reach.

  Returns:
    float32 [Q, 2].
  """
  if histogram.num_pixels == 0:
    raise ValueError("cannot derive bins from an empty histogram.")
  centres, counts = histogram.cells()
  grid = np.round(centres / step).astype(np.int64)
  cells, inverse = np.unique(grid, axis=0, return_inverse=True)
  mass = np.bincount(inverse.reshape(-1), weights=counts.astype(np.float64))
  keep = cells[mass >= min_count]
  if len(keep) < 2:
    raise ValueError(
        f"only {len(keep)} grid cells hold >= {min_count} pixels; need 2+.")
  order = np.lexsort((keep[:, 1], keep[:, 0]))
  return (keep[order] * step).astype(np.float32)


def rebalancing_weights(prior: Any, gamma: float = 0.5) -> np.ndarray:
  """Class-rebalancing weights of Zhang et al. (ECCV 2016, Eq. 4).

  ``w_q = ((1 - gamma) p_q + gamma / Q)^-1``, scaled so that
  ``sum_q p_q w_q = 1`` (the expected weight of a pixel under the prior is
  1, so the rebalanced loss keeps the plain loss's scale).

  Args:
    prior: [Q] probabilities (normalised here).
    gamma: mixing weight of the uniform distribution, in [0, 1]; 0.5 in the
      paper. gamma = 1 gives w = 1 everywhere.

  Returns:
    float32 [Q].
  """
  prior = np.asarray(prior, np.float64)
  if prior.ndim != 1:
    raise ValueError(f"the prior must be a vector [Q], got {prior.shape}.")
  prior = check_prior(prior, prior.size)
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
  if gamma == 0.0 and np.any(prior == 0):
    raise ValueError("gamma=0 needs a prior without zeros (weights 1/p).")
  weights = 1.0 / ((1.0 - gamma) * prior + gamma / prior.size)
  weights /= np.sum(prior * weights)
  return weights.astype(np.float32)


def save_prior(path: str, bins: np.ndarray, prior: np.ndarray,
               **metadata: Any) -> None:
  """Writes ``bins`` [Q, 2], ``prior`` [Q] and scalar metadata to an .npz."""
  bins = check_bins(bins)
  prior = check_prior(prior, len(bins))
  extra = {k: np.asarray(v) for k, v in metadata.items()}
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, "wb") as f:
    np.savez(f, bins=bins, prior=prior, **extra)


def load_prior(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads an .npz of :func:`save_prior`: returns (bins [Q, 2], prior [Q])."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"colorization prior file not found: {path}")
  with np.load(path) as data:
    missing = {"bins", "prior"} - set(data.files)
    if missing:
      raise ValueError(f"{path}: not a colorization prior file (missing "
                       f"{sorted(missing)}; has {data.files}).")
    bins = check_bins(data["bins"])
    prior = check_prior(data["prior"], len(bins))
  return bins, prior


def describe_weights(prior: Any, gamma: float) -> str:
  """``"rebalancing weights (gamma=0.5) from 0.53 to 8.5"``: the range of
  :func:`rebalancing_weights` of ``prior``, for logs."""
  weights = rebalancing_weights(prior, gamma)
  return (f"rebalancing weights (gamma={gamma:g}) from {weights.min():.3g} to "
          f"{weights.max():.3g}")
