"""Per-task input pipelines: a source's examples -> batched (inputs, targets).

Doersch & Zisserman (ICCV 2017) train each self-supervised task on its own
stream of examples; here one :func:`task_dataset` per task turns a
:class:`~mtssl_tf.data.sources.Source` into GLOBAL batches of
``task.preprocess`` outputs::

    source.dataset --repeat--shuffle(seed)--enumerate--> (index, example)
      --filter: shorter side >= min_image_size (skips counted)-->
      --parallel map: task.preprocess(example, fold_in(seed, index))-->
      --(optional) errors of preprocess skipped and counted-->
      --batch(global batch)--prefetch--> (inputs, targets)

Seeds: every example's random ops get ``stateless_fold_in(base, index)``,
``index`` counting examples after repeat and shuffle. With a fixed ``seed``
and ``deterministic=True`` the batches are identical on every run, on any
number of cores; without it the parallel stages may hand examples on in a
different order (faster), each still with its own seed.

Distribution: with ``input_context`` (a ``tf.distribute.InputContext``) the
dataset is one input pipeline's: a plain dataset is split record by record
(``shard``; sources are split when they are opened, see
:func:`training_input_fns`), the seed of every random op has the pipeline id
folded in, and the batches are PER-REPLICA. Without it the batches are
global; give the dataset to ``strategy.experimental_distribute_dataset``,
which splits each batch over the replicas (:func:`per_replica_batch` checks
it divides).
"""
from __future__ import annotations

import zlib
from typing import Any, Optional, Union

import tensorflow as tf

from mtssl_tf.data.skips import (FAILED, NO_USABLE_DATA, OK, REASONS,
                                 UNDERSIZED, UNUSABLE, SkipCounter)
from mtssl_tf.data.sources import Source, try_map

# Without a known pass length, the guard of SkipCounter allows this many
# reads without a usable example (plus the shuffle buffer).
UNKNOWN_PASS_LENGTH = 50_000


def per_replica_batch(global_batch: int, num_replicas: int) -> int:
  """The per-replica share of a global batch.

  Raises:
    ValueError: ``global_batch`` does not divide across ``num_replicas``
      (e.g. "batch_size=6 does not divide across 4 replicas").
  """
  global_batch, num_replicas = int(global_batch), int(num_replicas)
  if num_replicas < 1:
    raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
  if global_batch < 1:
    raise ValueError(f"batch_size must be >= 1, got {global_batch}")
  if global_batch % num_replicas:
    raise ValueError(
        f"batch_size={global_batch} does not divide across {num_replicas} "
        f"replicas; use a multiple of {num_replicas}")
  return global_batch // num_replicas


def task_min_image_size(task: Any) -> int:
  """The smallest image side ``task.preprocess`` accepts, as far as known.

  Looked up in this order:

  1. ``task.min_input_size`` when the task defines it (the explicit way);
  2. a task that first rescales every image to a pixel budget
     (``rescale_pixels`` not ``None``, relative position) accepts any size;
  3. ``task.min_image_size`` (relative position without rescaling: the
     jittered 3x3 grid);
  4. ``task.crop_size`` (tasks that crop one square, e.g. exemplar);
  5. otherwise 1; any remaining size error inside ``preprocess`` is still
     skipped and counted as ``failed`` (see ``skip_errors``).
  """
  explicit = getattr(task, "min_input_size", None)
  if explicit is not None:
    return max(1, int(explicit))
  if hasattr(task, "rescale_pixels") and task.rescale_pixels is not None:
    return 1
  for attr in ("min_image_size", "crop_size"):
    value = getattr(task, attr, None)
    if value is not None:
      return max(1, int(value))
  return 1


def _base_seed(seed: Union[int, Any], task: Any) -> tf.Tensor:
  """[2] int64 seed of one task's stream, from the run seed and task name."""
  seed = tf.convert_to_tensor(seed, tf.int64)
  if seed.shape.rank == 0:
    seed = tf.stack([seed, tf.constant(0, tf.int64)])
  elif seed.shape != [2]:
    raise ValueError(f"seed must be an int or a [2] pair, got shape "
                     f"{seed.shape}")
  # Tasks trained from one run seed get different streams: fold in a stable
  # hash of the name (Python's hash() changes between processes).
  name = getattr(task, "name", "") or type(task).__name__
  return tf.random.experimental.stateless_fold_in(
      seed, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def task_dataset(task: Any, source: Union[Source, tf.data.Dataset], *,
                 batch_size: int, seed: Union[int, Any],
                 deterministic: bool = False, shuffle_buffer: int = 1024,
                 num_parallel_calls: Optional[int] = tf.data.AUTOTUNE,
                 repeat: bool = True, drop_remainder: bool = True,
                 min_image_size: Optional[int] = None,
                 skip_errors: bool = True,
                 counter: Optional[SkipCounter] = None,
                 prefetch: Optional[int] = tf.data.AUTOTUNE,
                 input_context: Optional[tf.distribute.InputContext] = None
                 ) -> tf.data.Dataset:
  """Batched ``(inputs, targets)`` of ``task`` from ``source``.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (one input stream per task).

  Example:
    >>> source = make_source("offline", image_size_limit=256)
    >>> ds = task_dataset(tasks.get_task("exemplar"), source, batch_size=32,
    ...                   seed=0)
    >>> dist = strategy.experimental_distribute_dataset(ds)
    >>> print(source.counter.summary())

  Args:
    task: a :class:`mtssl_tf.tasks.Task` (anything with ``preprocess(example,
      seed)``).
    source: a :class:`~mtssl_tf.data.sources.Source` (its counter is used)
      or a plain dataset of example dicts with an ``"image"``.
    batch_size: the GLOBAL batch size.
    seed: int or [2] ints; seeds shuffling and every example's random ops.
    deterministic: same batches on every run (``tf.data.Options
      .deterministic`` and ordered parallel stages).
    shuffle_buffer: examples in the shuffle buffer (decoded images: size it
      to memory, or bound image sizes with the source's
      ``image_size_limit``); 0 or 1 disables shuffling.
    num_parallel_calls: parallelism of ``preprocess`` (``AUTOTUNE``).
    repeat: repeat the source forever (training) or make one pass.
    drop_remainder: drop a last partial batch, so shapes are static.
    min_image_size: skip (and count as undersized) images whose shorter side
      is smaller; default :func:`task_min_image_size` of ``task``.
    skip_errors: when ``preprocess`` raises a ``tf.errors.OpError`` for an
      example (a size check the filter could not foresee), skip it and count
      it as ``failed`` instead of ending the run. Each example is then
      processed inside its own one-element dataset, which costs a little
      per example.
    counter: counter of skipped examples (default: the source's, or a new
      one for a plain dataset; read it back from ``source.counter``).
    prefetch: batches to prefetch (``AUTOTUNE``); ``None`` or 0 disables.
    input_context: one input pipeline of several (``input_pipeline_id`` of
      ``num_input_pipelines``): batches of the per-replica size, seeds
      ``[seed, pipeline id]``; a plain dataset ``source`` is sharded here
      (a :class:`Source` must have been opened on its shard).

  Returns:
    A ``tf.data.Dataset`` of ``(inputs, targets)`` batches of ``batch_size``
    (per replica with ``input_context``).
  """
  dataset, counter, count_read = _input_stream(source, counter)
  if not hasattr(task, "preprocess"):
    raise TypeError(f"task must have a preprocess(example, seed) method, got "
                    f"{type(task).__name__}")
  batch_size = int(batch_size)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  need = task_min_image_size(task) if min_image_size is None else int(
      min_image_size)
  if input_context is not None:
    dataset, seed, batch_size = _one_pipeline(
        dataset, seed, batch_size, input_context, shard=count_read)
  base_seed = _base_seed(seed, task)
  shuffle_seed = int(tf.random.experimental.stateless_fold_in(
      base_seed, 1).numpy()[0] & 0x7FFFFFFF)
  map_deterministic = True if deterministic else None

  name = getattr(task, "name", "") or type(task).__name__
  counter.reason_text[UNDERSIZED] = (
      f"too small for {name} (shorter side below {need} px)")
  counter.reason_text[UNUSABLE] = (
      f"{getattr(task, 'unusable_reason', REASONS[UNUSABLE])}")
  if repeat:
    # The guard: a source that yields no usable example in about a pass
    # fails the pipeline instead of repeating forever (see skips.py).
    counter.set_limit(2 * _pass_length(source) + max(int(shuffle_buffer), 0))
    dataset = dataset.repeat()
  if shuffle_buffer and shuffle_buffer > 1:
    dataset = dataset.shuffle(int(shuffle_buffer), seed=shuffle_seed,
                              reshuffle_each_iteration=True)
  preprocessed = _preprocessed
  if not getattr(task, "autograph", True):
    # What tf.data traces in here runs as written (Task.autograph).
    preprocessed = tf.autograph.experimental.do_not_convert(_preprocessed)
  dataset = preprocessed(
      dataset.enumerate(), task, counter, need=need, base_seed=base_seed,
      count_read=count_read, check=repeat, skip_errors=skip_errors,
      num_parallel_calls=num_parallel_calls,
      map_deterministic=map_deterministic)
  if repeat:
    # repeat() ends at once when a pass yields nothing (every file refused
    # at decoding): fail as the guard does rather than end the stream.
    dataset = dataset.concatenate(_ran_dry(dataset.element_spec, counter))
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                          num_parallel_calls=num_parallel_calls,
                          deterministic=map_deterministic)
  if prefetch:
    dataset = dataset.prefetch(prefetch)
  options = tf.data.Options()
  options.deterministic = bool(deterministic)
  return dataset.with_options(options)


def _input_stream(source, counter: Optional[SkipCounter]):
  """``(dataset, counter, count_read)`` of a task_dataset ``source``.

  ``count_read``: whether the pipeline counts the examples it reads (a plain
  dataset) or the source already does (a :class:`Source`).
  """
  if isinstance(source, Source):
    return (source.dataset,
            source.counter if counter is None else counter, False)
  if isinstance(source, tf.data.Dataset):
    return source, SkipCounter() if counter is None else counter, True
  raise TypeError(f"source must be a Source or a tf.data.Dataset, got "
                  f"{type(source).__name__}")


def _one_pipeline(dataset: tf.data.Dataset, seed, batch_size: int,
                  input_context: tf.distribute.InputContext, *, shard: bool):
  """``(dataset, seed, batch_size)`` of one input pipeline of several.

  The batch becomes the per-replica one; with several pipelines the
  pipeline id is folded into the seed and, when ``shard``, the dataset is
  split record by record.
  """
  batch_size = input_context.get_per_replica_batch_size(batch_size)
  pipeline = input_context.input_pipeline_id
  if input_context.num_input_pipelines > 1:
    if isinstance(seed, int) or getattr(seed, "shape", None) == ():
      # Pipeline 0 keeps the one-pipeline stream ([seed, 0] == seed).
      seed = [int(seed), pipeline]
    else:
      raise ValueError("with several input pipelines the seed must be an "
                       "int (the pipeline id is folded in as its 2nd half)")
    if shard:
      dataset = dataset.shard(input_context.num_input_pipelines, pipeline)
  return dataset, seed, batch_size


def _preprocessed(indexed: tf.data.Dataset, task: Any, counter: SkipCounter,
                  *, need: int, base_seed: tf.Tensor, count_read: bool,
                  check: bool, skip_errors: bool, num_parallel_calls,
                  map_deterministic) -> tf.data.Dataset:
  """``task.preprocess`` outputs of the ``(index, example)`` pairs that pass.

  Filters undersized images, runs ``preprocess`` with the example's seed
  ``fold_in(base_seed, index)`` (errors skipped as ``failed`` when
  ``skip_errors``) and, when ``check`` (a repeating stream), passes each
  result through ``counter.deliver`` with the task's ``usable`` verdict (the
  guard's last stage); every skip is counted in ``counter``.
  """
  usable_of = getattr(task, "usable", None)

  def item(example):
    return example["id"] if "id" in example else None

  def size_ok(index, example):
    del index
    shape = tf.shape(example["image"])
    small = tf.minimum(shape[0], shape[1]) < need
    return counter.keep(tf.where(small, UNDERSIZED, OK),
                        count_read=count_read, item=item(example),
                        check=check)

  dataset = indexed.filter(size_ok)

  def preprocess(index, example):
    element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    usable = (tf.constant(True) if usable_of is None
              else tf.convert_to_tensor(usable_of(example), tf.bool))
    return task.preprocess(example, element_seed), usable

  def tag(element):
    found = item(element[1])
    return tf.constant(-1, tf.int64) if found is None else found

  if skip_errors:
    dataset = try_map(dataset, lambda e: preprocess(*e), num_parallel_calls,
                      map_deterministic, error_status=FAILED, tag=tag)
    dataset = dataset.filter(
        lambda out, status, found: counter.keep(
            status, count_read=False, item=found, check=check))
    dataset = dataset.map(lambda out, status, found: (out, found))
  else:
    dataset = dataset.map(
        lambda index, example: (preprocess(index, example),
                                tag((index, example))),
        num_parallel_calls=num_parallel_calls,
        deterministic=map_deterministic)

  if check:
    dataset = dataset.filter(lambda out, found: counter.deliver(out[1], found))
  return dataset.map(lambda out, found: out[0])


def _ran_dry(spec, counter: SkipCounter) -> tf.data.Dataset:
  """One element that fails with :data:`NO_USABLE_DATA`, of ``spec``."""

  def fail(zero):
    check = tf.debugging.assert_equal(
        zero, tf.constant(1, tf.int64),
        message=f"{NO_USABLE_DATA}: no example of {counter.what} passed")
    with tf.control_dependencies([check]):
      return tf.nest.map_structure(
          lambda s: tf.zeros([0 if d is None else d for d in s.shape],
                             s.dtype), spec)

  return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(fail)


def _pass_length(source) -> int:
  """Examples in one pass of ``source``, or a bound when unknown."""
  if isinstance(source, Source):
    if source.num_files:
      return int(source.num_files)
  else:
    cardinality = int(source.cardinality())
    if cardinality > 0:
      return cardinality
  return UNKNOWN_PASS_LENGTH


__all__ = ["per_replica_batch", "task_dataset", "task_min_image_size"]


# ---------------------------------------------------------------------------
# The trainer's entry point.


class TrainingData(dict):
  """task name -> dataset of global batches, plus the sources' skip counts."""

  def __init__(self, datasets, sources, descriptions=None):
    super().__init__(datasets)
    self.sources = sources
    # task -> what its source is, filled in as the sources are opened.
    self.descriptions = {} if descriptions is None else descriptions

  def skipped_summary(self) -> str:
    return "; ".join(f"{task}: {source.counter.summary()}"
                     for task, source in self.sources.items())


def offline_motion_records(cache_dir: str, packages=None, log=print,
                           split: str = "train") -> str:
  """Motion-mask TFRecords of the offline sample videos of ``split``
  (``"train"``, ``"heldout"`` or ``"all"``), made once and cached in
  ``cache_dir``; returns their glob.

  The masks are computed by the motion package
  (:func:`mtssl_tf.motion.cached_motion_records`); this only picks the
  videos and the settings."""
  from mtssl_tf import motion
  from mtssl_tf.data.offline import VIDEO_PACKAGES, offline_videos

  video_packages = None
  if packages:
    video_packages = [p for p in packages
                      if p in VIDEO_PACKAGES] or ["none"]
  return motion.cached_motion_records(
      cache_dir, lambda: offline_videos(video_packages, split),
      motion.MotionMaskConfig(max_side=160), every=3, log=log)


def _reads_motion_masks(name: str) -> bool:
  """Whether task ``name`` reads motion-mask records
  (``Task.reads_motion_masks``) rather than images."""
  from mtssl_tf import tasks as tasks_lib
  return tasks_lib.get_task_class(name).reads_motion_masks


def _open_source(config, name, log, input_context=None, counter=None):
  """The source of task ``name``; with ``input_context``, only that input
  pipeline's shard of the files (or records) is opened."""
  import os

  from mtssl_tf.data.sources import make_source

  data = config.data
  packages = list(data.offline_packages) or None
  shard = {}
  seed = config.seed
  if input_context is not None and input_context.num_input_pipelines > 1:
    shard = dict(num_shards=input_context.num_input_pipelines,
                 shard_index=input_context.input_pipeline_id)
    # Each pipeline shuffles its own files in its own order.
    seed = config.seed + 7919 * input_context.input_pipeline_id
  motion = _reads_motion_masks(name)
  if motion and not data.motion_records \
      and data.source == "tfds":
    return make_source("tfds_motion", name=data.motion_tfds_name,
                       data_dir=data.data_dir, split="train", shuffle=True,
                       seed=seed, image_size_limit=data.image_size_limit,
                       counter=counter, **shard)
  if motion:
    records = data.motion_records or offline_motion_records(
        os.path.join(config.run_dir, "motion_masks"), packages, log)
    return make_source("motion", path=records, shuffle=True, seed=seed,
                       image_size_limit=data.image_size_limit,
                       counter=counter, **shard)
  if data.source == "offline":
    # Photos and video frames of the training split; held-out sources are
    # for mtssl_tf.training.pretext_eval.
    return make_source("offline", image_size_limit=data.image_size_limit,
                       shuffle=True, seed=seed, packages=packages,
                       split="train", balance=data.offline_balance,
                       counter=counter, **shard)
  if data.source == "tfds":
    return make_source("tfds", name=data.tfds_name, data_dir=data.data_dir,
                       split="train", shuffle=True, seed=seed,
                       image_size_limit=data.image_size_limit,
                       counter=counter, **shard)
  return make_source("folder", path=data.image_folder, shuffle=True,
                     seed=seed, image_size_limit=data.image_size_limit,
                     counter=counter, **shard)


def _for_checkpoints(dataset: tf.data.Dataset) -> tf.data.Dataset:
  # The trainer checkpoints the iterators (exact resume). The skip counters'
  # variable updates are external state that tf.data refuses to serialise by
  # default; the counters are checkpointed separately.
  options = tf.data.Options()
  options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  return dataset.with_options(options)


def training_input_fns(config, tasks, log=print) -> TrainingData:
  """One input function per task: ``fn(input_context)`` opens that input
  pipeline's shard of the task's source and returns its dataset of
  PER-REPLICA batches (see :class:`~mtssl_tf.training.trainer.Trainer`).

  With N workers each reads 1/N of the files (or TFDS file shards, or
  records), so input work per worker shrinks as the cluster grows. The skip
  counters (``.sources[task].counter``) are made up front, one per task, so
  the trainer can checkpoint them; each pipeline counts into its task's.
  """
  from mtssl_tf.data.sources import SkipCounter

  counters = {name: SkipCounter(name=f"skips_{name}")
              for name in config.tasks}
  sources = {}
  fns = {}
  descriptions = {}
  for name in config.tasks:
    def fn(ctx, name=name):
      source = _open_source(config, name, log, ctx, counters[name])
      descriptions[name] = source.description
      if not counters[name].tracks_items:
        counters[name].what = source.description
      log(f"data for {name} (input pipeline {ctx.input_pipeline_id} of "
          f"{ctx.num_input_pipelines}): {source.description}")
      return _for_checkpoints(task_dataset(
          tasks[name], source, batch_size=config.task_batch_size(name),
          seed=config.seed, deterministic=config.data.deterministic,
          shuffle_buffer=min(config.data.shuffle_buffer, 10_000),
          input_context=ctx))
    fns[name] = fn
    sources[name] = _CounterOnly(counters[name])
  return TrainingData(fns, sources, descriptions)


class _CounterOnly:
  """What the trainer reads from a source: its skip counter."""

  def __init__(self, counter):
    self.counter = counter


def training_datasets(config, tasks, log=print) -> TrainingData:
  """One dataset of global batches per task, from ``config.data``.

  Motion segmentation reads ``config.data.motion_records``; without them,
  ``data=tfds`` reads the prepared TFDS dataset
  ``config.data.motion_tfds_name`` (:mod:`mtssl_tf.data.mtssl_motion`) and
  ``data=offline`` makes masks from the offline sample videos of the
  training split into ``<run_dir>/motion_masks`` (once). With
  ``data=offline`` the other tasks read the offline photos and video frames
  of the training split (held-out sources are for
  :mod:`mtssl_tf.training.pretext_eval`).
  """
  data = config.data
  datasets, sources, descriptions = {}, {}, {}
  for name in config.tasks:
    task = tasks[name]
    source = _open_source(config, name, log)
    log(f"data for {name}: {source.description}")
    if not source.counter.tracks_items:
      source.counter.what = source.description
    descriptions[name] = source.description
    sources[name] = source
    datasets[name] = _for_checkpoints(task_dataset(
        task, source, batch_size=config.task_batch_size(name),
        seed=config.seed,
        deterministic=data.deterministic,
        shuffle_buffer=min(data.shuffle_buffer, 10_000)))
  return TrainingData(datasets, sources, descriptions)
