"""Strategy construction from the config."""
from __future__ import annotations

import json
import os

import tensorflow as tf


def make_strategy(config) -> tf.distribute.Strategy:
  """The ``tf.distribute`` strategy named by ``config.strategy``.

  * ``mirrored``: all local GPUs, or ``config.devices`` when listed (on CPU,
    list logical devices, e.g. ``/cpu:0,/cpu:1``: MirroredStrategy does not
    split a CPU by itself).
  * ``multi_worker_mirrored``: workers from the ``TF_CONFIG`` environment
    variable (cluster and task).
  * ``one_device``: ``config.devices[0]`` or the first GPU, else the CPU.
  * ``tpu``: ``config.tpu`` (address or name; empty = the local TPU).
  """
  name = config.strategy
  devices = list(config.devices)
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices or None)
  if name == "one_device":
    if not devices:
      gpus = tf.config.list_logical_devices("GPU")
      devices = [gpus[0].name if gpus else "/cpu:0"]
    return tf.distribute.OneDeviceStrategy(devices[0])
  if name == "multi_worker_mirrored":
    if "TF_CONFIG" not in os.environ:
      raise ValueError(
          "strategy=multi_worker_mirrored needs the TF_CONFIG environment "
          "variable (cluster and task); see docs/training.md, 'Several hosts'")
    json.loads(os.environ["TF_CONFIG"])  # a clear error if malformed
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=config.tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {name!r}")


def is_chief(strategy) -> bool:
  """True unless this is a non-chief worker of a multi-worker strategy."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not getattr(resolver, "task_type", None):
    return True
  if resolver.task_type == "chief":
    return True
  cluster = resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and \
      "chief" not in cluster


def num_workers(strategy) -> int:
  """The number of hosts (input pipelines) of ``strategy``, from public API.

  A multi-worker strategy's cluster spec lists its chief and workers (the
  hosts that each run this program); every other strategy (mirrored, one
  device, TPU: one client feeds all devices) is one host.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 1
  resolver = strategy.cluster_resolver
  cluster = resolver.cluster_spec().as_dict() if resolver else {}
  count = sum(len(cluster.get(job, ())) for job in ("chief", "worker"))
  return max(1, count)


def setup_cpu_replicas(count: int) -> None:
  """Splits the (first) CPU into ``count`` logical devices; call before
  TensorFlow initialises its devices."""
  if count and count > 1:
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
