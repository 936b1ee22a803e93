"""Colour statistics of image collections: the colorization prior computed
from image files (``python -m mtssl_tf.colorization_prior``) or from a
run's training source.

The statistics themselves are :mod:`mtssl_tf.tasks.colorization_prior`;
this module finds and decodes the images.
"""
from __future__ import annotations

import glob
import os
from typing import Optional, Sequence

import numpy as np

from mtssl_tf.tasks.colorization_prior import (GRID_STEP, ab_histogram,
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


def read_images(paths: Sequence[str]):
  import tensorflow as tf
  for path in paths:
    data = tf.io.read_file(path)
    yield tf.io.decode_image(data, expand_animations=False)


def training_images(data, max_images: int, max_side: int):
  """A bounded, seeded sample of a run's training images (dicts with an
  ``"image"`` entry), from the same source the training pipeline reads."""
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
  return source.dataset.take(max_images), source.description


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
      :func:`mtssl_tf.tasks.colorization_prior.save_prior`).
    derive: fit the bins to the images (grid cells of ``grid_step`` with at
      least ``min_count`` pixels) instead of Zhang et al.'s 313.
    sigma: Gaussian smoothing of the prior, in ab units.
    grey_mask, grey_threshold: what is left out as grey (match the task's).
    max_images: use at most this many images (None or 0: all).

  Raises:
    SystemExit: no image was found at ``images``.
  """
  paths = list_images(images)
  if max_images and max_images > 0:
    paths = paths[:max_images]
  if not paths:
    raise SystemExit(f"no images (.jpg/.png/.bmp/.gif) found at {images!r}")
  hist = ab_histogram(read_images(paths), grey_mask=grey_mask,
                      grey_threshold=grey_threshold)
  if derive:
    bins = derive_bins(hist, step=grid_step, min_count=min_count)
  else:
    bins = load_ab_bins_313()
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
          f"({hist.num_grey_images} grey images left out); "
          f"{int(np.sum(counts > 0))} bins hold pixels before smoothing.")
