"""Training data: sources (TFDS, image folders, motion masks, offline samples)
and per-task ``tf.data`` pipelines.

>>> from mtssl_tf import data
>>> source = data.make_source("offline", image_size_limit=256)
>>> ds = data.task_dataset(task, source, batch_size=8, seed=0)
>>> print(source.counter.summary())

TensorFlow Datasets is imported only when a ``"tfds"`` source is made.
"""
import importlib

# Name -> submodule. The submodules load when a name is first read (PEP 562),
# so that ``mtssl_tf.data.offline`` (the zoo's list of offline packages)
# imports without TensorFlow; the pipelines and sources need it.
_EXPORTS = {
    "per_replica_batch": "pipeline", "task_dataset": "pipeline",
    "task_min_image_size": "pipeline",
    "IMAGE_EXTENSIONS": "sources", "KINDS": "sources",
    "SkipCounter": "sources", "Source": "sources",
    "decode_image": "sources", "limit_image_size": "sources",
    "list_image_files": "sources", "make_source": "sources",
    "OfflineDataError": "offline", "describe_offline": "offline",
    "offline_image_files": "offline", "offline_images": "offline",
    "offline_videos": "offline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'mtssl_tf.data' has no attribute {name!r}")
  try:
    module = importlib.import_module(f"mtssl_tf.data.{_EXPORTS[name]}")
  except ModuleNotFoundError as e:
    if e.name != "tensorflow":
      raise
    from mtssl_tf.utils.lazy_tf import missing_tensorflow  # pylint: disable=g-import-not-at-top
    raise missing_tensorflow(f"mtssl_tf.data.{name}") from e
  return getattr(module, name)


def __dir__():
  return sorted(list(globals()) + __all__)
