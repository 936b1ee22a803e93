"""This worker's input: each task's batches, cut for its local replicas.

Each worker builds its own input pipeline from an ``InputContext``
(``num_input_pipelines`` = workers, its ``input_pipeline_id``) at the
per-replica batch size, as ``strategy.distribute_datasets_from_function``
would; a plain ``tf.data`` iterator is kept per pipeline because the
strategy's distributed iterators cannot be checkpointed
(``tf.train.Checkpoint`` rejects them in TF 2.20), and exact resume needs
the iterator state.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import tensorflow as tf

from mtssl_tf.training.distribute import num_workers


def worker_index(strategy, workers: int) -> int:
  """This worker's position among the input pipelines (0 on one host)."""
  if workers == 1:
    return 0
  resolver = strategy.cluster_resolver
  cluster = resolver.cluster_spec().as_dict()
  # Replica ids run chief first, then workers in index order.
  if resolver.task_type == "chief":
    return 0
  return int(resolver.task_id) + (1 if "chief" in cluster else 0)


class WorkerInput:
  """Each task's ``[local_replicas, per_replica, ...]`` batches on this
  worker, their iterators, and their hand-out to the replicas.

  Args:
    config: the run's :class:`~mtssl_tf.config.TrainConfig`.
    strategy: the ``tf.distribute`` strategy.
    datasets: task -> a ``tf.data.Dataset`` of GLOBAL batches (every worker
      reads it whole and keeps its replicas' slices) or an input function
      ``fn(input_context) -> tf.data.Dataset`` of PER-REPLICA batches.
  """

  def __init__(self, config, strategy, datasets: Dict[str, Any]):
    self.config, self.strategy, self.datasets = config, strategy, datasets
    self.num_replicas = strategy.num_replicas_in_sync
    self.num_workers = num_workers(strategy)
    self.local_replicas = self.num_replicas // self.num_workers
    self.context = tf.distribute.InputContext(
        num_input_pipelines=self.num_workers,
        input_pipeline_id=worker_index(strategy, self.num_workers),
        num_replicas_in_sync=self.num_replicas)
    self.per_replica = {
        t: config.per_replica_batch_size(t, self.num_replicas)
        for t in config.tasks}
    self.local_datasets = {t: self._local_dataset(t, datasets[t])
                           for t in config.tasks}
    self.iterators = {t: iter(self.local_datasets[t]) for t in config.tasks}

  def _local_dataset(self, task: str, source) -> tf.data.Dataset:
    """This worker's dataset of ``task`` from a global-batch dataset or an
    input function."""
    if callable(source) and not isinstance(source, tf.data.Dataset):
      dataset = source(self.context)
      if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"an input function must return a tf.data.Dataset, "
                        f"got {type(dataset).__name__}")
      # Consecutive per-replica batches go to the local replicas in order,
      # as distribute_datasets_from_function hands them out.
      return dataset.batch(self.local_replicas, drop_remainder=True)
    if not isinstance(source, tf.data.Dataset):
      raise TypeError(f"datasets values must be tf.data.Dataset or input "
                      f"functions, got {type(source).__name__}")
    size = self.config.task_batch_size(task)
    leading = {t.shape[0] for t in tf.nest.flatten(source.element_spec)
               if t.shape.rank} - {None}
    if leading != {size} and leading:
      # Slicing would silently drop examples (larger) or fail in a reshape
      # (smaller).
      raise ValueError(
          f"the dataset of {task} holds global batches of "
          f"{sorted(leading)}, but {task}'s global batch size is {size} "
          "(--batch_size / --task_batch_size)")
    dataset = source.map(lambda *b: self.split_global(
        task, b[0] if len(b) == 1 else b))
    if self.num_workers > 1:
      # Every worker reads the same global batch and keeps its replicas'
      # slices, so all workers must see the batches in the same order.
      options = tf.data.Options()
      options.deterministic = True
      dataset = dataset.with_options(options)
    return dataset

  def split_global(self, task: str, batch):
    """A global batch of ``task`` -> this worker's ``[local_replicas, per,
    ...]``."""
    per, local = self.per_replica[task], self.local_replicas
    lo = self.context.input_pipeline_id * local * per

    def cut(t):
      t = t[lo:lo + local * per]
      inner = t.shape[1:]
      shape = ([local, per] + inner.as_list() if inner.is_fully_defined()
               else tf.concat([[local, per], tf.shape(t)[1:]], 0))
      return tf.reshape(t, shape)
    return tf.nest.map_structure(cut, batch)

  def distribute(self, local_batch):
    """``[local_replicas, per_replica, ...]`` -> per-replica values."""
    if self.num_replicas == 1:
      return tf.nest.map_structure(lambda t: t[0], local_batch)
    first = self.context.input_pipeline_id * self.local_replicas

    def value_fn(ctx):
      i = ctx.replica_id_in_sync_group - first
      return tf.nest.map_structure(lambda t: t[i], local_batch)

    return self.strategy.experimental_distribute_values_from_function(
        value_fn)

  def _trunk_input_spec(self, task: str) -> tf.TensorSpec:
    # [local_replicas, per_replica, (views,) H, W, 3]
    return tf.nest.flatten(self.local_datasets[task].element_spec[0])[0]

  def task_line(self, task: str) -> str:
    """What ``task`` trains on, as the data pipeline delivers it: its global
    batch, the shape of one example's trunk input, and its data source."""
    shape = "x".join(
        str(d) for d in self._trunk_input_spec(task).shape.as_list()[2:])
    source = getattr(self.datasets, "descriptions", {}).get(task)
    line = (f"  {task}: global batch {self.config.task_batch_size(task)}, "
            f"inputs {shape}")
    return line + (f", data: {source}" if source else "")

  def images_per_step(self, task: str) -> int:
    """Images one global batch of ``task`` sends through the trunk."""
    shape = self._trunk_input_spec(task).shape
    return self.config.task_batch_size(task) * int(np.prod(shape[2:-3]))
