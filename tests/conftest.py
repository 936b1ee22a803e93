"""Shared test setup.

Two logical CPU devices are configured before TensorFlow initialises its
devices, so that tests can run ``MirroredStrategy(["/cpu:0", "/cpu:1"])`` and
compare 2 replicas against 1 on the same global batch.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# XLA compiles without its expensive LLVM passes: the tests compare what
# compiled steps compute (with tolerances), not how fast the code runs, and
# compiling is most of a jit_compile test's time (about a quarter less CPU
# over the accelerator-flag combinations).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                      "--xla_llvm_disable_expensive_passes=true")
# Under pytest-xdist each worker (and every process it starts) gets its
# share of the cores for TensorFlow's intra-op pool instead of a pool as
# wide as the machine: with 2 workers on 2 cores that measured about 10%
# less wall and CPU time than both workers' pools competing for every core.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
  _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
  os.environ.setdefault("TF_NUM_INTRAOP_THREADS",
                        str(max(1, (os.cpu_count() or 1) // _workers)))
# tools/ (the maintainer tooling beside the package, not installed) is
# imported from the repository root.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

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


@pytest.fixture(autouse=True)
def _op_determinism_off_after_each_test():
  """A Trainer with ``data.deterministic`` turns on TF's process-wide op
  determinism; a test that builds one must not change what later tests can
  run (XLA has no deterministic MaxPool gradient, so the jit_compile tests
  fail under it)."""
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import
  before = tf_config.is_op_determinism_enabled()
  yield
  if not before and tf_config.is_op_determinism_enabled():
    tf_config.disable_op_determinism()
