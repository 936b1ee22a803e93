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


# The files that take longest, longest first (summed test time on the 2-core
# machine: pytest --durations=0). `make test` hands whole files to its two
# workers in collection order (--dist loadfile --no-loadscope-reorder), each
# worker taking the next file when it is free: with the long files first,
# the last files handed out are short and the workers finish together. The
# other files follow in their usual order. The list only orders, so a stale
# entry costs time, not correctness (tests/test_suite_setup.py checks that
# each names a file).
LONGEST_FILES = (
    "test_scale_out.py", "test_accelerator_flags.py", "test_train_cli.py",
    "test_docs_examples.py", "test_bad_data.py", "test_training.py",
    "test_task_batch.py", "test_detection.py", "test_task_contract.py",
    "test_model_zoo_install.py", "test_pretext_probe.py", "test_backends.py",
    "test_lr_schedule.py", "test_model_zoo.py", "test_pretext_eval.py",
    "test_data_pipeline.py", "test_export.py", "test_trunk.py")


def pytest_collection_modifyitems(session, config, items):
  """Tests of :data:`LONGEST_FILES` first, in that order (a stable sort:
  each file's tests keep their order)."""
  del session, config
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_sessionfinish(session, exitstatus):
  """The fork server of this test process (tests/fork_server.py) stops."""
  del session, exitstatus
  if "fork_server" in sys.modules:
    sys.modules["fork_server"].stop()


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
