"""The training entry point: every config parses and validates, clear errors
before any work, SIGKILL and resume, two workers on loopback; the flags
derived from the config dataclasses."""
import dataclasses
import glob
import json
import os
import re
import signal
import sys
import time
import typing

import numpy as np
import pytest
from absl import flags

import fork_server
from ports import run_workers
from mtssl_tf.cli import flags as mt_flags
from mtssl_tf import config as config_lib
from mtssl_tf import options
from mtssl_tf.config import ConfigError
from mtssl_tf.models.trunk import TrunkConfig

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
  if name in ("demo.cfg", "paper_4task_lasso.cfg", "depth26_4task_lasso.cfg"):
    assert config.lasso and len(config.tasks) == 4
  # The JSON written into the run folder round-trips.
  assert json.loads(config.to_json())["tasks"] == list(config.tasks)


def test_expected_configs_exist():
  names = {os.path.basename(p) for p in TRAIN_CONFIGS}
  assert {"paper_rp.cfg", "paper_rp_col.cfg", "paper_4task.cfg",
          "paper_4task_lasso.cfg", "demo.cfg", "study_rp.cfg",
          "study_rp_col.cfg", "study_4task.cfg", "smoke.cfg"} <= names


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


# -- flags derived from the dataclasses --------------------------------------------
# absl's flag_type() of each Python field type (Optional[X] as X).
_ABSL_TYPES = {bool: "bool", int: "int", float: "float", str: "string"}


def _config_fields(cls, prefix=""):
  """(dotted field path, field, type hint) of every leaf field of ``cls``,
  nested configs flattened: read from the dataclasses, not the option
  table."""
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if f.metadata.get("task_flags"):
      continue  # the tasks' own flags fill it
    if dataclasses.is_dataclass(hints[f.name]):
      yield from _config_fields(hints[f.name], prefix + f.name + ".")
    else:
      yield prefix + f.name, f, hints[f.name]


def _absl_type(hint, field):
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) is typing.Union:
    return _absl_type(args[0], field)
  if typing.get_origin(hint) is tuple:
    item = field.metadata.get("flag_item", args[0])
    return "list of " + _ABSL_TYPES[item]
  if hint in _ABSL_TYPES:
    return _ABSL_TYPES[hint]
  # task_batch_sizes: --task_batch_size, repeatable
  return "multi string"


def test_every_config_field_has_exactly_one_flag_with_its_default_and_type():
  fv = flags.FlagValues()
  mt_flags.define_train_flags(fv)
  fields = list(_config_fields(config_lib.TrainConfig))
  assert len(fields) == 61  # TrainConfig, TrunkConfig, Optimizer, Data
  by_field = {}
  for option in options.train_options():
    by_field.setdefault(option.field, []).append(option.name)
  for path, field, hint in fields:
    assert len(by_field.get(path, [])) == 1, path
    name = field.metadata.get("flag", field.name)
    assert by_field[path] == [name], path
    flag = fv[name]
    assert flag.flag_type() == _absl_type(hint, field), path
    default = field.metadata.get("flag_default", field.default)
    if isinstance(default, tuple) and "multi" in flag.flag_type():
      default = list(default)
    assert flag.default == default, path
    assert flag.help.startswith(field.metadata["help"]), path
  # The other flags: harmonize, cpu_replicas and task_module, and nothing
  # else.
  field_flags = {n for path, names in by_field.items() if path
                 for n in names}
  task_flags = {o.name for o in options.all_task_options()}
  assert set(fv) - field_flags - task_flags == {"harmonize", "cpu_replicas",
                                                "task_module"}
  assert sorted(set(fv) - task_flags) == mt_flags.TRAIN_FLAG_NAMES


def test_every_flag_reaches_its_config_field():
  # A non-default value for each option type reaches the field: the
  # option table, both parsers and the config agree on the path.
  fv = flags.FlagValues()
  mt_flags.define_train_flags(fv)
  argv = ["--tasks=colorization,relative_position", "--depth=26",
          "--width=0.5", "--bn_momentum=0.9", "--nosync_bn",
          "--rmsprop_rho=0.5", "--optimizer_epsilon=0.25",
          "--optimizer=adam", "--data=tfds", "--data_dir=/d",
          "--steps=7", "--seed=3", "--strategy=one_device",
          "--devices=/cpu:0", "--lasso", "--lasso_l1=0.5",
          "--schedule=weighted", "--task_weights=1,3", "--clipnorm=2",
          "--colorization.crop_size=40", "--lr_schedule=step",
          "--lr_warmup_steps=2", "--lr_drop_steps=3,5",
          "--task_batch_size=relative_position=64", "--zero_init_residual"]
  fv(["train"] + argv)
  expected = {"tasks": ("colorization", "relative_position"),
              "trunk.depth": 26, "trunk.width": 0.5,
              "trunk.bn_momentum": 0.9, "trunk.sync_bn": False,
              "optimizer.rho": 0.5, "optimizer.epsilon": 0.25,
              "optimizer.name": "adam", "data.source": "tfds",
              "data.data_dir": "/d", "steps": 7, "seed": 3,
              "strategy": "one_device", "devices": ("/cpu:0",),
              "lasso": True, "lasso_l1": 0.5, "schedule": "weighted",
              "task_weights": (1.0, 3.0), "optimizer.clipnorm": 2.0,
              "optimizer.lr_schedule": "step",
              "optimizer.lr_warmup_steps": 2,
              "optimizer.lr_drop_steps": (3, 5),
              "trunk.zero_init_residual": True}
  for config in (mt_flags.config_from_flags(fv),
                 options.parse_args(argv).config):
    for path, value in expected.items():
      obj = config
      for part in path.split("."):
        obj = getattr(obj, part)
      assert obj == value, path
    assert config.task_params["colorization"]["crop_size"] == 40
    assert dict(config.task_batch_sizes) == {"relative_position": 64}


@pytest.mark.parametrize("path", TRAIN_CONFIGS,
                         ids=[os.path.basename(p) for p in TRAIN_CONFIGS])
def test_flags_txt_round_trips_and_both_parsers_agree(path, monkeypatch,
                                                      tmp_path):
  monkeypatch.chdir(REPO)
  fv = flags.FlagValues()
  mt_flags.define_train_flags(fv)
  fv(["train", f"--flagfile={path}", "--steps=5", "--nolasso"])
  config = mt_flags.config_from_flags(fv, warn=lambda s: None)
  text = mt_flags.flags_as_text(fv)
  # The library's parser (no absl) reads the same files to the same config.
  parsed = options.parse_args([f"--flagfile={path}", "--steps=5",
                               "--nolasso"], root=REPO, warn=lambda s: None)
  assert parsed.config == config
  (tmp_path / "flags.txt").write_text(text)
  again = options.parse_args([f"--flagfile={tmp_path / 'flags.txt'}"])
  assert again.config == config and again.text == text
  fv2 = flags.FlagValues()
  mt_flags.define_train_flags(fv2)
  fv2(["train", f"--flagfile={tmp_path / 'flags.txt'}"])
  assert mt_flags.config_from_flags(fv2) == config


def test_library_parser_errors_name_the_problem(tmp_path):
  with pytest.raises(ConfigError, match=r"Unknown command line flag "
                     r"'lasso_l2'. Did you mean: lasso_l1"):
    options.parse_args(["--lasso_l2=1"])
  with pytest.raises(ConfigError, match=r"flag --steps=ten: invalid literal "
                     "for int"):
    options.parse_args(["--steps=ten"])
  with pytest.raises(ConfigError, match="no such file"):
    options.parse_args(["--flagfile=configs/nope.cfg"], root=str(tmp_path))
  with pytest.raises(ConfigError, match="TrunkConfig.depth=34"):
    options.parse_args([], overrides={"depth": 34})
  with pytest.raises(ConfigError, match=r"flag --width=\[1\]: Expect "
                     "argument to be a string"):
    options.parse_args([], overrides={"width": [1]})
  with pytest.raises(ConfigError, match="unexpected argument 'x'"):
    options.parse_args(["x"])


def test_trunk_flags_for_other_commands():
  fv = flags.FlagValues()
  mt_flags.define_trunk_flags(fv, defaults={"depth": 26})
  assert sorted(fv) == sorted(f.name for f in dataclasses.fields(
      TrunkConfig))
  fv(["evaluate", "--width=0.25", "--pool_padding=valid"])
  assert TrunkConfig(**mt_flags.trunk_kwargs_from_flags(fv)) == TrunkConfig(
      depth=26, width=0.25, pool_padding="valid")
  assert mt_flags.trunk_kwargs_from_flags(fv, only_present=True) == {
      "width": 0.25, "pool_padding": "valid"}
  with pytest.raises(ValueError, match="unknown trunk flags"):
    mt_flags.define_trunk_flags(flags.FlagValues(), defaults={"dept": 1})


@pytest.mark.parametrize("argv,words", [
    (["--tasks=relative_position,jigsaw"], "unknown task 'jigsaw'; known "
     "tasks: relative_position, colorization, exemplar, motion_segmentation"),
    (["--block3_last_stride=2"], "block3_last_stride must be 1"),
    (["--schedule=weighted", "--task_weights=1,2"], "one positive weight"),
    (["--colorization.sigma=0"], "--colorization.* parameters: sigma must "
     "be > 0"),
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
  if switch == "harmonize" and "relative_position" in config.tasks:
    assert (config.task_params["relative_position"]["color_mode"]
            == "harmonize")
  elif switch == "harmonize":
    # A recipe without relative position (the single-task study rows): the
    # switch has nothing to set and is ignored with one warning
    # (test_options_of_unselected_modes_are_ignored_with_one_warning).
    assert "relative_position" not in config.task_params


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


def _run(args, timeout=600, env=None):
  """``python -m mtssl_tf.train ARGS`` in a fresh process (forked from an
  interpreter that has imported TensorFlow: tests/fork_server.py)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
  return fork_server.run(["-m", "mtssl_tf.train"] + args, cwd=REPO,
                         timeout=timeout, env=env)


def test_cli_reports_unknown_flags_and_config_errors(monkeypatch, capsys):
  # What `python -m mtssl_tf.train ...` runs, in-process on the process's
  # flags (a subprocess spends ~8 s importing TensorFlow to print one
  # line): app.run parses argv with train.parse_flags (an absl error exits
  # 2 there), then exits with main's return value.
  from mtssl_tf import train
  monkeypatch.chdir(REPO)  # the flagfile's path, as the command runs it
  FLAGS.unparse_flags()
  try:
    argv = train.parse_flags(["train", "--flagfile=configs/smoke.cfg",
                              "--tasks=jigsaw"])
    assert train.main(argv) == 2
  finally:
    FLAGS.unparse_flags()
  assert "unknown task 'jigsaw'" in capsys.readouterr().err
  try:
    with pytest.raises(SystemExit, match="^2$"):
      train.parse_flags(["train", "--flagfile=configs/smoke.cfg",
                         "--no_such_flag=1"])
  finally:
    FLAGS.unparse_flags()
  err = capsys.readouterr().err
  assert "no_such_flag" in err and err.startswith("error: ")


def _model_tensors(checkpoint_prefix):
  import tensorflow as tf
  reader = tf.train.load_checkpoint(checkpoint_prefix)
  names = sorted(n for n in reader.get_variable_to_shape_map()
                 if n.startswith("model/"))
  assert len(names) > 50
  return {n: reader.get_tensor(n) for n in names}


# The real entry point (python -c _PAUSED_TRAIN STEP MARKER FLAGS...), held
# still when it is about to save checkpoint STEP: it creates MARKER and
# sleeps until killed. The kill then lands at one known point, however fast
# or slow the machine.
_PAUSED_TRAIN = """
import runpy, sys, time
import tensorflow as tf
pause_at, marker = int(sys.argv.pop(1)), sys.argv.pop(1)
save = tf.train.CheckpointManager.save
def save_or_pause(self, checkpoint_number=None, *args, **kwargs):
  if checkpoint_number == pause_at:
    open(marker, "w").close()
    time.sleep(3600)
  return save(self, checkpoint_number, *args, **kwargs)
tf.train.CheckpointManager.save = save_or_pause
runpy.run_module("mtssl_tf.train", run_name="__main__", alter_sys=True)
"""


# Two tasks of the smoke recipe (--update=cycle alternates them), so that
# the resumed run must also pick the cycle up at the restored step; the
# kill lands between checkpoints 1 and 3 of a 3-step run.
_RESUME_RUN = ["--flagfile=configs/smoke.cfg",
               "--tasks=relative_position,exemplar", "--steps=3",
               "--checkpoint_every=1", "--noplots",
               # scikit-image's 6 photos: fewer images decoded at start.
               "--offline_packages=scikit-image"]


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
  common = _RESUME_RUN
  whole = _run(common + [f"--run_dir={tmp_path / 'whole'}"])
  assert whole.returncode == 0, whole.stderr[-2000:]
  run_dir = tmp_path / "killed"
  marker = tmp_path / "paused"
  # Killed when about to save ckpt-2: steps 1-2 are in history.jsonl (it is
  # flushed before each save), the last checkpoint is ckpt-1.
  log = tmp_path / "killed.log"
  proc = fork_server.popen(
      ["-c", _PAUSED_TRAIN, "2", str(marker)] + common
      + [f"--run_dir={run_dir}"], cwd=REPO, stdout=str(log),
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  try:
    deadline = time.monotonic() + 600  # as _run's timeout
    while not marker.exists():
      if proc.poll() is not None:
        raise AssertionError("training ended before step 2's checkpoint:\n"
                             + log.read_text()[-2000:])
      assert time.monotonic() < deadline, "no step 2 within 600 s"
      time.sleep(0.1)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert sorted(p.name for p in (run_dir / "checkpoints").glob(
      "ckpt-*.index")) == ["ckpt-1.index"]
  logged = [json.loads(l)["step"] for l in open(run_dir / "history.jsonl")]
  assert logged == [1, 2]
  again = _run(common + [f"--run_dir={run_dir}"])
  assert again.returncode == 0, again.stderr[-2000:]
  resumed = re.search(r"resumed from \S+ at step (\d+)", again.stdout)
  assert resumed, again.stdout[-2000:]
  assert int(resumed.group(1)) == 1
  want = _model_tensors(str(tmp_path / "whole" / "checkpoints" / "ckpt-3"))
  got = _model_tensors(str(run_dir / "checkpoints" / "ckpt-3"))
  assert want.keys() == got.keys()
  for name in want:  # bit-exact: deterministic data and ops, same seed
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  steps = [json.loads(l)["step"] for l in
           open(run_dir / "history.jsonl")]
  assert steps == [1, 2, 3]  # no step logged twice after resume


@pytest.mark.slow
def test_two_workers_on_loopback_finish_with_identical_weights(tmp_path):
  run_dir = tmp_path / "mw"
  # One task and two steps: what is checked is that the two workers'
  # all-reduced updates (and synchronised statistics) stay identical.
  args = ["--flagfile=configs/smoke.cfg", "--tasks=relative_position",
          "--steps=2", "--checkpoint_every=2",
          "--strategy=multi_worker_mirrored", f"--run_dir={run_dir}",
          # Synchronised BN makes the moving statistics global too; without
          # it each worker keeps the statistics of its own replicas.
          "--sync_bn", "--noplots",
          # scikit-image's 6 photos: fewer images decoded at start.
          "--offline_packages=scikit-image"]
  outputs = run_workers([sys.executable, "-m", "mtssl_tf.train"] + args,
                        cwd=REPO)
  assert "on 2 replica(s)" in outputs[0]
  chief = _model_tensors(str(run_dir / "checkpoints" / "ckpt-2"))
  worker = _model_tensors(str(run_dir / "workers" / "1" / "ckpt-2"))
  assert chief.keys() == worker.keys()
  for name in chief:
    np.testing.assert_array_equal(worker[name], chief[name], err_msg=name)


def test_harmonize_replaces_a_colour_mode_with_one_warning(monkeypatch):
  # --harmonize is a preset switch: over a flagfile's (or the command
  # line's) relative_position.color_mode it wins, and says so.
  monkeypatch.chdir(REPO)
  lines = []
  config = options.parse_args(
      ["--flagfile=configs/smoke.cfg",
       "--relative_position.color_mode=drop", "--harmonize"],
      root=REPO, warn=lines.append).config
  assert config.task_params["relative_position"]["color_mode"] == "harmonize"
  assert lines == ["warning: --harmonize replaces "
                   "--relative_position.color_mode=drop"]


def test_task_weights_by_name_follow_the_task_list(monkeypatch):
  # Reference: the named weight where named, 1 elsewhere, in --tasks order.
  monkeypatch.chdir(REPO)
  base = ["--flagfile=configs/smoke.cfg", "--schedule=weighted",
          "--task_weights=relative_position=4,exemplar=2"]
  for tasks, expected in [
      ("relative_position,colorization,exemplar", (4.0, 1.0, 2.0)),
      ("colorization,relative_position", (1.0, 4.0)),
      ("colorization", (1.0,))]:
    config = options.parse_args(base + [f"--tasks={tasks}"], root=REPO,
                                warn=lambda s: None).config
    assert config.task_weights == expected, tasks
  for bad, words in [("relative_position=4,2", "give every weight as "
                      "task=weight"),
                     ("jigsaw=2", "unknown task 'jigsaw'"),
                     ("exemplar=x", "could not convert string to float: "
                      "'x'")]:
    with pytest.raises(ConfigError, match=words):
      options.parse_args(["--flagfile=configs/smoke.cfg",
                          "--schedule=weighted", f"--task_weights={bad}"],
                         root=REPO, warn=lambda s: None)
