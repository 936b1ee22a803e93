"""Shared test setup.

Two logical CPU devices are configured before TensorFlow initialises its
devices, so that tests can run ``MirroredStrategy(["/cpu:0", "/cpu:1"])`` and
compare 2 replicas against 1 on the same global batch.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

CPU_DEVICES = ["/cpu:0", "/cpu:1"]


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture
def two_cpu_devices():
  """The two logical CPU devices' names, for a 2-replica MirroredStrategy."""
  return list(CPU_DEVICES)


@pytest.fixture
def mirrored():
  """Factory of MirroredStrategy over logical CPU devices.

  Every MirroredStrategy numbers its collective keys from the same base and
  TensorFlow caches each key's shape, so a second strategy in one process
  clashes with the first ("Shape mismatch in the collective instance"); a
  fresh key base per strategy keeps them apart.
  """
  def make(devices=tuple(CPU_DEVICES)):
    tf.distribute.MirroredStrategy._collective_key_base += 1000
    return tf.distribute.MirroredStrategy(list(devices))
  return make
