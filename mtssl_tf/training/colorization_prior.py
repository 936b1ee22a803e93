"""A training run's colorization prior (``prior="auto"`` made concrete).

Zhang et al. (ECCV 2016) rebalance the colorization loss with the empirical
ab prior of the training set; :func:`resolve_training_prior` computes it from
a sample of the run's own training images and caches it in the run folder.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from mtssl_tf.data.color_statistics import (check_prior_sample,
                                            training_histogram)
from mtssl_tf.tasks.colorization import Colorization
from mtssl_tf.tasks.colorization_prior import (AUTO_PRIOR_FILE,
                                               AUTO_PRIOR_MAX_IMAGES,
                                               AUTO_PRIOR_MAX_SIDE,
                                               PRIOR_AUTO, PRIOR_IMAGENET,
                                               PRIOR_UNIFORM, bin_counts,
                                               describe_weights,
                                               load_prior, save_prior,
                                               smooth_prior)


def resolve_training_prior(config, log=print, write: bool = True,
                           max_images: int = AUTO_PRIOR_MAX_IMAGES,
                           max_side: int = AUTO_PRIOR_MAX_SIDE):
  """Makes a training config's colorization prior concrete, and logs it.

  Zhang et al. rebalance the colorization loss with the empirical ab prior
  of the training set. A run that gives no prior (no
  ``colorization.prior`` task parameter, None or ``"auto"``) gets the prior
  of its own training images: the first call computes it from a bounded,
  seeded sample of the run's data source (``max_images`` images, shorter
  side downscaled to ``max_side``, grey images left out as the task does)
  with the code of ``python -m mtssl_tf.colorization_prior``, and caches it
  in ``<run_dir>/colorization_prior.npz``; later calls (a resumed run) read
  that file, so a run keeps one prior. A given prior (``"imagenet"``,
  ``"uniform"``, a file or values) is used as it is. A sample with fewer
  than ``MIN_PRIOR_COLOUR_IMAGES`` colour images or
  ``MIN_PRIOR_PIXELS_PER_BIN`` colour pixels per bin
  (:mod:`mtssl_tf.tasks.colorization_prior`) is refused before anything is
  written: a prior from a picture or two would only describe them.

  Args:
    config: a :class:`~mtssl_tf.config.TrainConfig`.
    log: callable taking one line of text: which prior, and the range of
      its rebalancing weights.
    write: read and write the cache (False on non-chief workers, which
      compute the same seeded sample instead).
    max_images: bound of the sample.
    max_side: the sample's images are downscaled to this shorter side.

  Returns:
    ``config`` itself when it has no colorization task; else a copy whose
    colorization prior is the values (a [Q] list) for an auto prior, and
    unchanged otherwise.

  Raises:
    ValueError: the cached file holds other bins than the task's.
    mtssl_tf.data.color_statistics.PriorSampleError: (a ``ValueError``)
      the sample holds too few colour images or pixels; the message names
      the data source and the counts, and asks for a given prior.
  """
  if "colorization" not in config.tasks:
    return config
  params = dict(config.task_params["colorization"])
  given = params.get("prior")
  if given is not None and not (isinstance(given, str)
                                and given == PRIOR_AUTO):
    task = Colorization(**params)
    if isinstance(given, str):
      what = {PRIOR_IMAGENET: "Zhang et al.'s ImageNet prior (package data "
                              "resources/colorization_prior_imagenet_313.txt)",
              PRIOR_UNIFORM: "uniform (no rebalancing)"}.get(
                  given, f"from {given}")
    else:
      what = f"given as {len(task.bins)} values"
    uniform = np.full(task.num_bins, 1.0 / task.num_bins)
    log(f"colorization prior: {what}; " + describe_weights(
        uniform if task.prior is None else task.prior, task.gamma))
    return config
  task = Colorization(**dict(params, prior=None))
  path = os.path.join(config.run_dir, AUTO_PRIOR_FILE)
  # Only the writer reads the cache: other workers compute the same seeded
  # sample rather than read a file the chief may be writing.
  if write and os.path.exists(path):
    bins, prior = load_prior(path)
    if bins.shape != task.bins.shape or not np.array_equal(bins, task.bins):
      raise ValueError(
          f"{path} (this run's cached colorization prior) holds "
          f"{len(bins)} other ab bins than the task's {task.num_bins}; "
          "delete it to recompute, or give the task a prior")
    what = f"computed from the training images, cached in {path}"
  else:
    hist, description = training_histogram(
        config.data, max_images, max_side, grey_mask=task.grey_mask,
        grey_threshold=task.grey_threshold)
    check_prior_sample(
        hist, f"the training data ({description})", task.num_bins,
        "Give a prior with --task_param=colorization.prior=imagenet (Zhang "
        "et al.'s ImageNet prior; or a file of python -m "
        "mtssl_tf.colorization_prior), or add colour images to the "
        "training data.")
    counts = bin_counts(hist, task.bins)
    prior = smooth_prior(counts / counts.sum(), task.bins)
    if write:
      # Written aside, then renamed: a killed run leaves no half a file.
      save_prior(path + ".tmp", task.bins, prior, counts=counts,
                 num_images=hist.num_images,
                 num_grey_images=hist.num_grey_images,
                 num_pixels=hist.num_pixels, sigma=5.0,
                 grey_mask=task.grey_mask,
                 grey_threshold=task.grey_threshold, derived_bins=False)
      os.replace(path + ".tmp", path)
    what = (f"computed from {hist.num_images - hist.num_grey_images} colour "
            f"training images of {hist.num_images} sampled ({description})"
            + (f", cached in {path}" if write else ""))
  log(f"colorization prior: {what}; "
      + describe_weights(prior, task.gamma))
  task_params = {n: dict(p) for n, p in config.task_params.items()}
  task_params["colorization"]["prior"] = [float(x) for x in prior]
  return dataclasses.replace(config, task_params=task_params)
