"""A training run's colorization prior (``prior="auto"`` made concrete).

Zhang et al. (ECCV 2016) rebalance the colorization loss with the empirical
ab prior of the training set. The colorization task computes it itself, in
its ``prepare`` hook (:meth:`mtssl_tf.tasks.colorization.Colorization.prepare`),
which the trainer calls for every task of a run
(:func:`mtssl_tf.training.trainer.prepare_tasks`);
:func:`resolve_training_prior` is that step under the name callers outside
the trainer use (the zoo's ``from_run`` check, the prior command).
"""
from __future__ import annotations


def resolve_training_prior(config, log=print, write: bool = True):
  """Makes a training config concrete, as the trainer does before a run.

  For the colorization task: a run that gives no prior (no
  ``colorization.prior`` task parameter, None or ``"auto"``) gets the prior
  of a bounded, seeded sample of its own training images, cached in
  ``<run_dir>/colorization_prior.npz`` (a resumed run reads it back); a
  given prior is used as it is and logged. See
  :meth:`~mtssl_tf.tasks.colorization.Colorization.prepare`.

  Args:
    config: a :class:`~mtssl_tf.config.TrainConfig`.
    log: callable taking one line of text: which prior, and the range of
      its rebalancing weights.
    write: read and write the cache (False on non-chief workers, which
      compute the same seeded sample instead).

  Returns:
    ``config`` itself when no task changes its parameters (no colorization
    task, or a given prior); else a copy whose colorization prior is the
    values (a [Q] list).

  Raises:
    ValueError: the cached file holds other bins than the task's.
    mtssl_tf.data.color_statistics.PriorSampleError: (a ``ValueError``)
      the sample holds too few colour images or pixels; the message names
      the data source and the counts, and asks for a given prior.
  """
  # The trainer module is heavy; the prior command imports this one.
  from mtssl_tf.training.trainer import prepare_tasks  # pylint: disable=g-import-not-at-top
  return prepare_tasks(config, log=log, write=write)
