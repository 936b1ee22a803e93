"""Training data: sources (TFDS, image folders, motion masks, offline samples)
and per-task ``tf.data`` pipelines.

>>> from mtssl_tf import data
>>> source = data.make_source("offline", image_size_limit=256)
>>> ds = data.task_dataset(task, source, batch_size=8, seed=0)
>>> print(source.counter.summary())

TensorFlow Datasets is imported only when a ``"tfds"`` source is made.
"""
from mtssl_tf.data.pipeline import (per_replica_batch, task_dataset,
                                    task_min_image_size)
from mtssl_tf.data.sources import (IMAGE_EXTENSIONS, KINDS, SkipCounter,
                                   Source, decode_image, limit_image_size,
                                   list_image_files, make_source)
from mtssl_tf.data.offline import (OfflineDataError, describe_offline,
                                   offline_image_files, offline_images,
                                   offline_videos)

__all__ = ["IMAGE_EXTENSIONS", "KINDS", "OfflineDataError", "SkipCounter",
           "Source", "decode_image", "describe_offline", "limit_image_size",
           "list_image_files", "make_source", "offline_image_files",
           "offline_images", "offline_videos", "per_replica_batch",
           "task_dataset", "task_min_image_size"]
