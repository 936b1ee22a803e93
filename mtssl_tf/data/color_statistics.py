"""Colour statistics of image collections: the colorization prior computed
from image files (``python -m mtssl_tf.colorization_prior``) or from a
run's training source.

The statistics themselves are :mod:`mtssl_tf.tasks.colorization_bins`;
this module finds and decodes the images.
"""
from __future__ import annotations

import glob
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from mtssl_tf.data.skips import NoUsableDataError
from mtssl_tf.tasks.colorization_bins import (GRID_STEP,
                                              MIN_PRIOR_COLOUR_IMAGES,
                                              MIN_PRIOR_PIXELS_PER_BIN,
                                              AbHistogram, ab_histogram,
                                              bin_counts, derive_bins,
                                              load_ab_bins_313, save_prior,
                                              smooth_prior)

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_images(pattern: str) -> list:
  """Image files in a folder (recursively) or matching a glob pattern."""
  if os.path.isdir(pattern):
    paths = [os.path.join(root, name)
             for root, _, names in os.walk(pattern) for name in names]
  else:
    paths = glob.glob(pattern, recursive=True)
  return sorted(p for p in paths if p.lower().endswith(_IMAGE_EXTENSIONS))


class PriorSampleError(NoUsableDataError, ValueError):
  """Too few colour images or pixels to compute a colorization prior from
  (the message names the images, the counts, the minimum and what to do).
  A :class:`~mtssl_tf.data.skips.NoUsableDataError`: the training data
  cannot serve the task."""


def _plural(count: int, noun: str) -> str:
  return f"{count} {noun}" + ("" if count == 1 else "s")


def min_prior_pixels(num_bins: int) -> int:
  """The least number of colour pixels a prior over ``num_bins`` bins is
  computed from (see ``MIN_PRIOR_PIXELS_PER_BIN``)."""
  return MIN_PRIOR_PIXELS_PER_BIN * int(num_bins)


def check_prior_sample(hist: AbHistogram, where: str, num_bins: int,
                       remedy: str) -> None:
  """Refuses a histogram too small to be a prior.

  Args:
    hist: the sample's :class:`AbHistogram`.
    where: the images, for the message (a folder, a data source).
    num_bins: the prior's number of ab bins.
    remedy: what to do instead, for the message.

  Raises:
    PriorSampleError: fewer than ``MIN_PRIOR_COLOUR_IMAGES`` colour images
      (images not left out as grey) or fewer than
      :func:`min_prior_pixels` colour pixels.
  """
  colour = hist.num_images - hist.num_grey_images
  need_pixels = min_prior_pixels(num_bins)
  if colour >= MIN_PRIOR_COLOUR_IMAGES and hist.num_pixels >= need_pixels:
    return
  found = ("no colour pixel" if hist.num_pixels == 0
           else _plural(hist.num_pixels, "colour pixel"))
  raise PriorSampleError(
      f"cannot compute the colorization prior from {where}: "
      f"{_plural(hist.num_images, 'image')} sampled, {colour} of them "
      f"colour ({hist.num_grey_images} grey), {found}; a prior needs at least "
      f"{MIN_PRIOR_COLOUR_IMAGES} colour images and {need_pixels} colour "
      f"pixels ({MIN_PRIOR_PIXELS_PER_BIN} per ab bin, {num_bins} bins). "
      + remedy)


def read_images(paths: Sequence[str], unreadable: List[str]):
  """Decodes each file of ``paths``; a file that cannot be read or decoded
  is skipped and its path appended to ``unreadable``."""
  import tensorflow as tf
  for path in paths:
    try:
      image = tf.io.decode_image(tf.io.read_file(path),
                                 expand_animations=False)
    except (tf.errors.OpError, OSError):
      unreadable.append(path)
      continue
    yield image


def _training_source(data, max_side: int):
  """The run's training source (the one the training pipeline reads),
  shuffled with a fixed seed, images downscaled to ``max_side``."""
  from mtssl_tf.data import offline, sources  # heavy imports only when needed
  limit = max_side if data.image_size_limit is None else min(
      max_side, data.image_size_limit)
  kwargs = dict(image_size_limit=limit, shuffle=True, seed=0,
                deterministic=True)
  if data.source == "offline":
    # As the training pipeline: only the packages that carry photos.
    packages = [p for p in data.offline_packages
                if p in offline.PHOTO_PACKAGES]
    source = sources.make_source(
        "offline",
        packages=packages if data.offline_packages else None, **kwargs)
  elif data.source == "folder":
    source = sources.make_source("folder", path=data.image_folder, **kwargs)
  else:
    source = sources.make_source("tfds", name=data.tfds_name,
                                 data_dir=data.data_dir, **kwargs)
  return source


def training_histogram(data, max_images: int, max_side: int,
                       grey_mask: str = "image", grey_threshold: float = 5.0
                       ) -> Tuple[AbHistogram, str]:
  """The ab histogram of a bounded, seeded sample of a run's training
  images: the first ``max_images`` usable images of the source the
  training pipeline reads, shuffled with a fixed seed, downscaled to
  ``max_side``. Files that cannot be decoded are skipped and counted, as in
  training.

  Args:
    data: the run's :class:`~mtssl_tf.config.DataConfig`.
    max_images, max_side: bounds of the sample.
    grey_mask, grey_threshold: what is left out as grey (the task's).

  Returns:
    ``(histogram, description)``: the description names the source and,
    when files were skipped while the sample was read (unreadable,
    corrupt, too small), how many and why.
  """
  source = _training_source(data, max_side)
  hist = ab_histogram(source.dataset.take(max_images), grey_mask=grey_mask,
                      grey_threshold=grey_threshold)
  description = source.description
  # Read after the pass: the counter fills while the dataset is iterated.
  if source.counter.skipped:
    description += "; " + source.counter.summary()
  return hist, description


def write_prior_file(images: str, output: str, derive: bool = False,
                     min_count: int = 1, grid_step: float = GRID_STEP,
                     sigma: float = 5.0, grey_mask: str = "image",
                     grey_threshold: float = 5.0,
                     max_images: Optional[int] = None) -> str:
  """Computes the prior (and with ``derive``, the bins) of image files and
  writes the ``.npz``; returns the line the command prints.

  Args:
    images: a folder (searched recursively) or a glob of images.
    output: the ``.npz`` to write (see
      :func:`mtssl_tf.tasks.colorization_bins.save_prior`).
    derive: fit the bins to the images (grid cells of ``grid_step`` with at
      least ``min_count`` pixels) instead of Zhang et al.'s 313.
    sigma: Gaussian smoothing of the prior, in ab units.
    grey_mask, grey_threshold: what is left out as grey (match the task's).
    max_images: use at most this many images (None or 0: all).

  Raises:
    SystemExit: no image was found at ``images``.
    PriorSampleError: too few colour images or pixels (see
      :func:`check_prior_sample`).
  """
  paths = list_images(images)
  if max_images and max_images > 0:
    paths = paths[:max_images]
  if not paths:
    raise SystemExit(f"no images (.jpg/.png/.bmp/.gif) found at {images!r}")
  unreadable: List[str] = []
  hist = ab_histogram(read_images(paths, unreadable), grey_mask=grey_mask,
                      grey_threshold=grey_threshold)
  where = f"{images} ({len(paths)} image files"
  if unreadable:
    shown = ", ".join(unreadable[:5]) + (", ..." if len(unreadable) > 5
                                         else "")
    where += f"; {len(unreadable)} could not be read or decoded: {shown}"
  where += ")"
  remedy = ("Give the command more colour images, or train with Zhang et "
            "al.'s ImageNet prior (--colorization.prior=imagenet).")
  bins = load_ab_bins_313()
  if derive:
    try:
      bins = derive_bins(hist, step=grid_step, min_count=min_count)
    except ValueError:
      # Too few pixels to derive bins from is, first of all, a sample too
      # small for any prior: say so in those terms when it is.
      check_prior_sample(hist, where, len(bins), remedy)
      raise
  check_prior_sample(hist, where, len(bins), remedy)
  counts = bin_counts(hist, bins)
  prior = smooth_prior(counts / counts.sum(), bins, sigma=sigma)
  save_prior(output, bins, prior, counts=counts, num_images=hist.num_images,
             num_grey_images=hist.num_grey_images,
             num_pixels=hist.num_pixels, sigma=sigma, grey_mask=grey_mask,
             grey_threshold=grey_threshold, derived_bins=derive)
  return (f"{output}: {len(bins)} bins "
          f"({'derived from the images' if derive else 'Zhang et al. 313'}"
          f"), prior from {hist.num_pixels} pixels of "
          f"{hist.num_images - hist.num_grey_images} colour images "
          f"({hist.num_grey_images} grey images left out"
          + (f", {len(unreadable)} unreadable files skipped" if unreadable
             else "")
          + f"); {int(np.sum(counts > 0))} bins hold pixels before "
          "smoothing.")
