"""The command line as a new user meets it: a recipe run from another
folder, --help, a mode switch on top of a recipe, the export's name, a task
of one's own (--task_module)."""
import json
import os

import pytest
from absl import flags

from mtssl_tf import options
from mtssl_tf import train
from mtssl_tf.cli import flags as mt_flags
from mtssl_tf.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
CONFIGS = os.path.join(REPO, "configs")


def _train_flags(*extra):
  fv = flags.FlagValues()
  mt_flags.define_train_flags(fv)
  for name, default, text in extra:
    flags.DEFINE_integer(name, default, text, flag_values=fv)
  return fv


def _config(argv, warnings=None):
  """The train entry point's parse (flagfiles expanded, then absl) into a
  fresh FlagValues, then its config."""
  fv = _train_flags()
  mt_flags.parse_argv(["train"] + argv, fv)
  return mt_flags.config_from_flags(
      fv, warn=(warnings.append if warnings is not None else None)), fv


# One real run, in-process: what `python -m mtssl_tf.train ...` runs
# (app.run parses argv with train.parse_flags, on the process's flags, then
# exits with main's return value), without a second TensorFlow import.
@pytest.mark.slow
def test_a_recipe_and_a_task_module_train_from_another_folder(
    tmp_path, monkeypatch, capsys):
  # smoke.cfg is found from the checkout (nested includes: the next test)
  # although the command runs in tmp_path; rotation is registered by
  # tests/rotation_task.py, imported by --task_module before the config is
  # checked. A relative --run_dir is under the working folder, said as an
  # absolute path.
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(TESTS)
  flags.FLAGS.unparse_flags()
  try:
    argv = train.parse_flags(
        ["train", f"--flagfile={CONFIGS}/smoke.cfg",
         "--task_module=rotation_task",
         # The task module's task alone: one task built and traced, and
         # its one step is the step that shows it trains.
         "--tasks=rotation", "--run_dir=my_run",
         "--steps=1", "--checkpoint_every=1", "--log_every=1",
         # scikit-image's 6 photos: fewer images decoded at start.
         "--offline_packages=scikit-image"])
    code = train.main(argv)
  finally:
    flags.FLAGS.unparse_flags()
  out = capsys.readouterr()
  assert code == 0, out.err[-3000:]
  run_dir = tmp_path / "my_run"
  assert (f"run folder: {run_dir} (--run_dir=my_run, relative to the "
          "working folder)") in out.out
  assert "rotation=" in out.out  # a rotation step ran
  config = json.loads((run_dir / "config.json").read_text())
  assert config["tasks"] == ["rotation"]
  assert "--task_module=rotation_task" in (run_dir / "flags.txt").read_text()
  assert (run_dir / "checkpoints" / "checkpoint").exists()


def test_nested_flagfiles_resolve_next_to_the_including_file(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  # demo.cfg -> configs/base_cpu.cfg.
  config, _ = _config([f"--flagfile={CONFIGS}/demo.cfg"])
  assert config.trunk.depth == 50 and config.run_dir == "runs/demo"
  assert options.parse_args(
      [f"--flagfile={CONFIGS}/demo.cfg"]).config == config
  # A user's recipe that includes a sibling file, run from elsewhere.
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "base.cfg").write_text(
      f"--flagfile={CONFIGS}/smoke.cfg\n--steps=3\n")
  (tmp_path / "mine" / "top.cfg").write_text("--flagfile=base.cfg\n")
  monkeypatch.chdir(REPO)
  assert _config([f"--flagfile={tmp_path}/mine/top.cfg"])[0].steps == 3
  # Not next to the including file: from the working folder, as before.
  (tmp_path / "cwd.cfg").write_text("--flagfile=configs/smoke.cfg\n")
  assert _config([f"--flagfile={tmp_path}/cwd.cfg"])[0].steps == 8
  (tmp_path / "bad.cfg").write_text("--flagfile=nowhere.cfg\n")
  with pytest.raises(ConfigError, match=r"nowhere\.cfg: no such file \(nor "
                     r"next to .*bad\.cfg"):
    _config([f"--flagfile={tmp_path}/bad.cfg"])


def _help(parse, argv, capsys):
  with pytest.raises(SystemExit, match="^0$"):
    parse(argv)
  return capsys.readouterr().out


def test_help_lists_the_package_flags_by_group_and_every_task_parameter(
    capsys, monkeypatch):
  # The parser `python -m mtssl_tf.train` runs, on the process's flags
  # (absl's own and TensorFlow's are defined there too).
  for arg in ("--help", "--helpshort"):
    text = _help(train.parse_flags, ["train", arg], capsys)
    for group in ("run:", "tasks:", "model:", "data:", "optimizer:",
                  "accelerator:"):
      assert f"\n{group}\n" in text, group
    for flag in ("--run_dir", "--tasks", "--task_module", "--depth",
                 "--learning_rate", "--batch_size", "--strategy"):
      assert f"\n  {flag}  (default: " in text, flag
    assert "\n  --relative_position.patch_size  (default: 96)" in text
    assert "\n  --colorization.crop_size  (default: 224)" in text
    assert "--alsologtostderr" not in text and "--v " not in text
    assert "\nother:\n" not in text  # every option has a group
  # A task of one's own: its parameters too.
  monkeypatch.syspath_prepend(TESTS)
  text = _help(train.parse_flags, ["train", "--task_module=rotation_task",
                                   "--help"], capsys)
  assert "\n  --rotation.crop_size  (default: 32)" in text
  # export: the run folder, export folder and name; evaluate: its flags and
  # the trunk's.
  fv = _train_flags(("export_version", 1, "SavedModel version."),
                    ("serving_image_size", 224, "Serving size."))
  text = _help(mt_flags.flags_parser("export", mt_flags.export_sections,
                                     f=fv), ["export", "--help"], capsys)
  for flag in ("--run_dir", "--export_dir", "--model_name",
               "--export_version", "--task_module"):
    assert f"\n  {flag}  (default: " in text, flag
  from mtssl_tf import evaluate
  fv = flags.FlagValues()
  evaluate.define_eval_flags(fv)
  text = _help(mt_flags.flags_parser("evaluate", evaluate._sections, f=fv),
               ["evaluate", "-h"], capsys)
  for flag in ("--checkpoint", "--evaluators", "--depth", "--task_module"):
    assert f"\n  {flag}  (default: " in text, flag


def test_a_mode_switch_on_a_recipe_ignores_its_other_task_batch_sizes():
  warnings = []
  config, _ = _config([f"--flagfile={CONFIGS}/demo.cfg",
                       "--tasks=colorization,exemplar"], warnings)
  assert config.tasks == ("colorization", "exemplar")
  assert dict(config.task_batch_sizes) == {}
  assert warnings == [
      "warning: ignoring --task_batch_size relative_position=64 from a "
      "flagfile: not in --tasks (colorization, exemplar)"]
  # Given on the command line itself, it would do nothing: still an error.
  with pytest.raises(ConfigError, match="exemplar is not in --tasks"):
    _config([f"--flagfile={CONFIGS}/smoke.cfg", "--tasks=colorization",
             "--task_batch_size=exemplar=8"])
  # --batch_size on the command line: the recipe's own RP batch stays, said
  # once.
  warnings = []
  config, _ = _config([f"--flagfile={CONFIGS}/demo.cfg", "--batch_size=3"],
                      warnings)
  assert config.task_batch_size("relative_position") == 64
  assert config.task_batch_size("colorization") == 3
  assert warnings == [
      "warning: --batch_size=3 does not change the task batch sizes a "
      "flagfile sets: relative_position keeps 64; add "
      "--task_batch_size=relative_position=N to change it"]
  warnings = []
  config, _ = _config([f"--flagfile={CONFIGS}/demo.cfg", "--batch_size=3",
                       "--task_batch_size=relative_position=3"], warnings)
  assert config.task_batch_size("relative_position") == 3 and not warnings


@pytest.mark.parametrize("argv,name", [
    ([], "mtssl_demo"),  # the recipe's own run: the recipe's name
    (["--run_dir=/data/runs/my_run/"], "my_run"),  # a user's run folder
    (["--run_dir=/data/runs/my_run", "--model_name=mine"], "mine"),
])
def test_the_export_is_named_after_the_run(argv, name):
  fv = _train_flags(("export_version", 1, ""))
  mt_flags.parse_argv(["export", f"--flagfile={CONFIGS}/demo.cfg"] + argv,
                      fv)
  assert mt_flags.export_model_name(fv) == name


def test_task_modules_are_imported_before_the_tasks_are_checked(
    monkeypatch):
  monkeypatch.syspath_prepend(TESTS)
  config = options.parse_args([
      f"--flagfile={CONFIGS}/smoke.cfg", "--task_module=rotation_task,json",
      "--tasks=relative_position,rotation"]).config
  assert config.tasks == ("relative_position", "rotation")
  with pytest.raises(ConfigError, match="--task_module=no_such_module_x: "
                     "cannot import it"):
    options.parse_args(["--task_module=no_such_module_x"])
