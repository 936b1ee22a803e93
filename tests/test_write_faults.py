"""Checkpoints and exports survive a kill or a full disk.

A run killed inside a checkpoint write resumes from the previous complete
checkpoint with its exact weights, whatever the killed write left behind;
a checkpoint save or an export that fails for lack of space keeps what was
already written (the previous checkpoint restores, the previous export is
unchanged), removes its partial files and says what failed. The kills are
injected at fixed points of TensorFlow's write (no timing); the full disk
is an injected ENOSPC everywhere, and a real 1 MiB tmpfs where this
machine lets the test mount one.
"""
import errno
import hashlib
import os
import re
import shutil
import subprocess
import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.ops import gen_io_ops

import mtssl_tf  # noqa: F401  (registers the Keras classes)
from mtssl_tf import tasks as tasks_lib
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.serving import model_export
from mtssl_tf.training import run_checkpoints as ckpt_lib
from mtssl_tf.training.trainer import Trainer
import harness

TASK = "relative_position"
IMAGE_SIZE = 32
# What TensorFlow's file system reports on a full disk (errno 28 mapped to
# RESOURCE_EXHAUSTED, the OS's text after the file name).
NO_SPACE = "No space left on device"


class _Killed(BaseException):
  """Stands for SIGKILL at the point it is raised: nothing after it runs
  (TensorFlow's checkpoint code has no cleanup in between, and the trainer's
  own `finally` only closes its log files)."""


def _datasets():
  import skimage.data  # pylint: disable=g-import-not-at-top
  image = tf.constant(skimage.data.astronaut()[::4, ::4])
  task = tasks_lib.get_task(TASK, **harness.TASK_PARAMS[TASK])

  def make(i):
    return task.preprocess({"image": image, "id": i},
                           tf.stack([i, tf.constant(5, tf.int64)]))

  return {TASK: tf.data.Dataset.range(10**6).map(make).batch(2)}


def _trainer(run_dir, steps, log=lambda line: None):
  config = harness.train_config(run_dir, (TASK,), steps=steps, lasso=False,
                                batch_size=2, strategy="one_device")
  return Trainer(config, datasets=_datasets(), log=log)


def _weights(trainer):
  return [np.array(v) for v in trainer.model.weights]


def _files(directory):
  """Every file and folder (``name/``) under ``directory``."""
  found = []
  for root, dirs, names in os.walk(directory):
    rel = os.path.relpath(root, directory)
    prefix = "" if rel == "." else rel + "/"
    found += [prefix + n for n in names] + [prefix + d + "/" for d in dirs]
  return sorted(found)


@pytest.fixture(scope="module")
def run_at_step_2(tmp_path_factory):
  """A run folder trained to step 2 (checkpoint ckpt-2), and its weights."""
  run_dir = str(tmp_path_factory.mktemp("template") / "run")
  trainer = _trainer(run_dir, steps=2)
  trainer.train()
  return run_dir, _weights(trainer)


def _copy_run(run_at_step_2, tmp_path):
  run_dir = str(tmp_path / "run")
  shutil.copytree(run_at_step_2[0], run_dir)
  return run_dir, os.path.join(run_dir, "checkpoints")


def _kill_in_merge(monkeypatch):
  """Killed in the merge: the shards are complete in ckpt-4_temp/ and the
  merged ckpt-4.index is begun (a few bytes, no table)."""

  def merge(checkpoint_prefixes, destination_prefix, **kwargs):
    with open(destination_prefix.numpy().decode() + ".index", "wb") as f:
      f.write(b"\x00" * 17)
    raise _Killed("killed while merging the checkpoint")

  monkeypatch.setattr(gen_io_ops, "merge_v2_checkpoints", merge)
  return ["ckpt-4.index", "ckpt-4_temp/"]


def _kill_in_state_write(monkeypatch):
  """Killed after ckpt-4's files are complete, while the `checkpoint` state
  file that would name it is written aside (tf.io.gfile's atomic write)."""

  def update(save_dir, **kwargs):
    path = os.path.join(save_dir, "checkpoint.tmp" + uuid.uuid4().hex)
    with open(path, "w") as f:
      f.write('model_checkpoint_path: "ckpt-4"\nall_model_che')
    raise _Killed("killed while writing the checkpoint state file")

  monkeypatch.setattr(checkpoint_management,
                      "update_checkpoint_state_internal", update)
  return ["ckpt-4.data-00000-of-00001", "ckpt-4.index"]


@pytest.mark.parametrize("kill", [_kill_in_merge, _kill_in_state_write],
                         ids=["index_half_written", "state_file_half_written"])
def test_killed_checkpoint_write_resumes_from_the_previous_checkpoint(
    run_at_step_2, tmp_path, monkeypatch, kill):
  run_dir, ckpt_dir = _copy_run(run_at_step_2, tmp_path)
  with monkeypatch.context() as patch:
    left = kill(patch)
    with pytest.raises(_Killed, match="killed while"):
      _trainer(run_dir, steps=4).train()
  files = _files(ckpt_dir)
  assert set(left) <= set(files), files
  # The state file still names ckpt-2 only.
  state = tf.train.get_checkpoint_state(ckpt_dir)
  assert os.path.basename(state.model_checkpoint_path) == "ckpt-2"
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
      "ckpt-2"]

  lines = []
  again = _trainer(run_dir, steps=4, log=lines.append)
  assert again.restore() == 2
  assert any(re.search(r"resumed from .*ckpt-2 at step 2", l) for l in lines)
  for got, want in zip(_weights(again), run_at_step_2[1]):
    np.testing.assert_array_equal(got, want)   # the same file, bit for bit
  if kill is _kill_in_state_write:
    # Training on saves ckpt-4 over what the killed write left.
    out = again.train()
    assert out["step"] == 4 and out["checkpoint"].endswith("ckpt-4")
    assert tf.train.latest_checkpoint(ckpt_dir).endswith("ckpt-4")
    assert ckpt_lib.checkpoint_step(out["checkpoint"]) == 4


def _disk_full_at_merge(monkeypatch):
  """The checkpoint's shards are written, then the disk is full: the error
  TensorFlow raises for ENOSPC."""

  def merge(checkpoint_prefixes, destination_prefix, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{destination_prefix.numpy().decode()}.index; {NO_SPACE}")

  monkeypatch.setattr(gen_io_ops, "merge_v2_checkpoints", merge)


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(
    run_at_step_2, tmp_path, monkeypatch):
  run_dir, ckpt_dir = _copy_run(run_at_step_2, tmp_path)
  before = _files(ckpt_dir)
  kept = os.path.join(ckpt_dir, "ckpt-2")
  with monkeypatch.context() as patch:
    _disk_full_at_merge(patch)
    with pytest.raises(
        ckpt_lib.CheckpointWriteError,
        match=re.escape(f"writing checkpoint {ckpt_dir}/ckpt-4 failed: the "
                        "disk is full (ResourceExhaustedError: ")
        + r".*ckpt-4\.index; No space left on device\); its partial files "
        r"were removed\. The last complete checkpoint, "
        + re.escape(kept) + r", is kept: make room and re-run"):
      _trainer(run_dir, steps=4).train()
  # Nothing of ckpt-4 is left (its shards in ckpt-4_temp/ were removed);
  # ckpt-2 is untouched and is what a re-run resumes from.
  assert _files(ckpt_dir) == before
  assert tf.train.latest_checkpoint(ckpt_dir) == kept
  assert ckpt_lib.checkpoint_step(kept) == 2


def test_failed_first_checkpoint_says_there_is_none_to_resume(tmp_path,
                                                              monkeypatch):
  variable = tf.Variable(np.arange(4, dtype=np.float32))
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable),
                                       str(tmp_path), max_to_keep=2)

  def update(*args, **kwargs):
    raise OSError(errno.ENOSPC, NO_SPACE, str(tmp_path / "checkpoint.tmp"))

  monkeypatch.setattr(checkpoint_management,
                      "update_checkpoint_state_internal", update)
  with pytest.raises(ckpt_lib.CheckpointWriteError,
                     match=r"the disk is full .*There is no earlier "
                           r"checkpoint: a re-run starts from step 0") as info:
    ckpt_lib.save_checkpoint(manager, 2)
  assert info.value.errno == errno.ENOSPC
  assert os.listdir(tmp_path) == []


def _mount_tmpfs(path, size):
  """Mounts a tmpfs of ``size`` at ``path``; the reason when it cannot."""
  os.makedirs(path, exist_ok=True)
  try:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                           "tmpfs", str(path)], capture_output=True,
                          text=True, timeout=30)
  except (OSError, subprocess.SubprocessError) as e:
    return f"cannot run mount: {e}"
  if done.returncode:
    return (f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
            f"{done.stderr.strip()}")
  return None


@pytest.fixture
def small_disk(tmp_path):
  """A real 1 MiB file system, for a real ENOSPC."""
  path = tmp_path / "disk"
  why = _mount_tmpfs(path, "1m")
  if why:
    pytest.skip(why)
  yield str(path)
  # Lazy: a failed test may still hold a file open there.
  subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def _fill(path):
  """Writes a file at ``path`` until not one more byte fits."""
  fd = os.open(path, os.O_WRONLY | os.O_CREAT)
  try:
    for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
      try:
        while True:
          os.write(fd, b"\0" * size)
      except OSError as e:
        assert e.errno == errno.ENOSPC, e
  finally:
    os.close(fd)
  assert os.statvfs(path).f_bavail == 0


def test_real_full_disk_during_a_checkpoint(small_disk):
  ckpt_dir = os.path.join(small_disk, "checkpoints")
  small = tf.Variable(np.arange(256, dtype=np.float32))
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=small),
                                       ckpt_dir, max_to_keep=2)
  ckpt_lib.save_checkpoint(manager, 2)
  before = _files(ckpt_dir)
  _fill(os.path.join(small_disk, "filler"))
  small.assign(small * 2.0)
  with pytest.raises(ckpt_lib.CheckpointWriteError,
                     match=r"ckpt-4 failed: the disk is full .*No space left "
                           r"on device.*The last complete checkpoint, "
                           + re.escape(os.path.join(ckpt_dir, "ckpt-2"))):
    ckpt_lib.save_checkpoint(manager, 4)
  assert _files(ckpt_dir) == before
  restored = tf.Variable(np.zeros(256, np.float32))
  tf.train.Checkpoint(v=restored).restore(
      tf.train.latest_checkpoint(ckpt_dir)).assert_consumed()
  np.testing.assert_array_equal(restored.numpy(),
                                np.arange(256, dtype=np.float32))


# -- exports ------------------------------------------------------------------

def _digest(path):
  """Hash of every file's relative path and bytes under ``path`` (or of
  the file ``path``)."""
  digest = hashlib.sha256()
  paths = ([path] if os.path.isfile(path) else
           sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                  for name in names))
  for full in paths:
    digest.update(os.path.relpath(full, path).encode())
    with open(full, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()


@pytest.fixture(scope="module")
def model():
  keras.utils.set_random_seed(0)
  return MultiTaskModel(trunk=harness.TRUNK,
                        tasks={TASK: harness.tiny_params(TASK)}, name="m")


def _previous_export(export_dir):
  """Stand-ins for a complete earlier export (``m.keras``, ``m/1/``) and
  their digests: what is checked is that a failed export leaves them byte
  for byte as they were (tests/test_export.py reloads real exports)."""
  files = {"m.keras": b"PK\x03\x04 a complete zip",
           "m/1/saved_model.pb": b"\x08\x01 graph",
           "m/1/fingerprint.pb": b"\x08\x02",
           "m/1/variables/variables.index": b"index",
           "m/1/variables/variables.data-00000-of-00001": b"data"}
  for name, data in files.items():
    path = os.path.join(export_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)
  paths = {"keras": os.path.join(export_dir, "m.keras"),
           "saved_model": os.path.join(export_dir, "m", "1")}
  return paths, {k: _digest(p) for k, p in paths.items()}


def _check_kept(paths, digests):
  """The previous export is what it was, and nothing else is there."""
  assert {k: _digest(p) for k, p in paths.items()} == digests
  export_dir = os.path.dirname(paths["keras"])
  assert sorted(os.listdir(export_dir)) == ["m", "m.keras"]
  assert os.listdir(os.path.join(export_dir, "m")) == ["1"]


def test_full_disk_writing_the_keras_file_keeps_the_previous_export(
    model, tmp_path, monkeypatch):
  export_dir = str(tmp_path / "export")
  paths, digests = _previous_export(export_dir)

  def save(self, filepath, *args, **kwargs):
    with open(filepath, "wb") as f:
      f.write(b"PK\x03\x04 half a zip")
    raise OSError(errno.ENOSPC, NO_SPACE, filepath)

  monkeypatch.setattr(MultiTaskModel, "save", save)
  with pytest.raises(model_export.ExportWriteError,
                     match=r"export failed while writing the Keras file .*"
                           + re.escape(f"for {paths['keras']}): the disk is "
                                       "full") + r".*No space left on device"
                           r".*m\.keras is the previous export, unchanged; "
                           r".*m/1 is the previous export, unchanged") as info:
    model_export.export_model(model, export_dir, "m", image_size=IMAGE_SIZE)
  assert info.value.errno == errno.ENOSPC
  _check_kept(paths, digests)


def test_full_disk_writing_the_saved_model_keeps_the_previous_export(
    model, tmp_path, monkeypatch):
  export_dir = str(tmp_path / "export")
  paths, digests = _previous_export(export_dir)

  def save(obj, export_dir, signatures=None, **kwargs):
    # What TensorFlow has written when the variables' data hits the limit.
    os.makedirs(os.path.join(export_dir, "variables", "variables_temp"))
    with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
      f.write(b"\x08\x01")
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{export_dir}/variables/variables_temp/part-00000-of-"
                    f"00001.data-00000-of-00001; {NO_SPACE}")

  # Tracing the serving functions is not what fails here; skipping it keeps
  # the test fast.
  monkeypatch.setattr(model_export.FeatureExtractor, "trace_reusable",
                      lambda self: None)
  monkeypatch.setattr(tf.saved_model, "save", save)
  # The same version: the previous one is kept, nothing half written.
  with pytest.raises(model_export.ExportWriteError,
                     match=r"while writing the SavedModel .*"
                           + re.escape(f"for {export_dir}/m/1): the disk is "
                                       "full (ResourceExhaustedError: ")
                           + r".*m/1 is the previous export, unchanged"):
    model_export.export_model(model, export_dir, "m", image_size=IMAGE_SIZE)
  _check_kept(paths, digests)
  # A new version leaves no version folder; a first export (a new model
  # name) leaves no empty model folder.
  with pytest.raises(model_export.ExportWriteError,
                     match=r"m/2 was not written"):
    model_export.export_model(model, export_dir, "m", version=2,
                              image_size=IMAGE_SIZE)
  with pytest.raises(model_export.ExportWriteError, match="the disk is full"):
    model_export.export_model(model, export_dir, "other", image_size=IMAGE_SIZE)
  _check_kept(paths, digests)


def test_real_full_disk_during_an_export(model, small_disk):
  export_dir = os.path.join(small_disk, "export")
  paths, digests = _previous_export(export_dir)
  _fill(os.path.join(small_disk, "filler"))
  with pytest.raises(model_export.ExportWriteError,
                     match=r"export failed while writing the Keras file .*"
                           r"the disk is full .*No space left on device"):
    model_export.export_model(model, export_dir, "m", image_size=IMAGE_SIZE)
  _check_kept(paths, digests)
