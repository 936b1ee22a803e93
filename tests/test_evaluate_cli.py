"""The evaluate command: registry, flags -> config, checkpoint loading, bad
input, and the command end to end (in-process through its parser and main,
and in a subprocess)."""
import dataclasses
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import mtssl_tf
from mtssl_tf import options as options_lib
from mtssl_tf.cli import flags as mt_flags
from mtssl_tf import evaluate
from mtssl_tf import evaluation
from mtssl_tf.config import ConfigError, TrainConfig
from mtssl_tf.evaluation import trunk_sources
from mtssl_tf.evaluation import driver
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import TrunkConfig
import fork_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(ROOT, "configs", "eval_demo.cfg")
TINY = TrunkConfig(depth=14, width=0.25)
RP = {"patch_size": 16, "gap": 4, "jitter": 2, "rescale_pixels": None,
      "embedding_units": 8, "hidden_units": [8]}


def _parse(argv):
  fv = flags.FlagValues()
  evaluate.define_eval_flags(fv)
  fv(["evaluate"] + list(argv))
  return evaluate.config_from_flags(fv)


def _make_run(run_dir, trunk: TrunkConfig, saved_trunk: TrunkConfig = None):
  """A training run folder: config.json describing ``trunk``, and a
  checkpoint of a model whose trunk is ``saved_trunk`` (default: the same)."""
  config = TrainConfig(run_dir=str(run_dir), tasks=("relative_position",),
                       task_params={"relative_position": RP}, trunk=trunk)
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    f.write(config.to_json())
  kwargs = config.model_kwargs()
  kwargs["trunk"] = (saved_trunk or trunk).to_dict()
  model = MultiTaskModel(**kwargs)
  from mtssl_tf.training.run_checkpoints import save_model
  save_model(model, os.path.join(run_dir, "checkpoints", "ckpt"))
  return model


# -- registry and config ---------------------------------------------------------
def test_unknown_evaluator_lists_the_known_ones():
  with pytest.raises(ValueError, match="linear_probe, detection, depth"):
    evaluation.get_evaluator("jigsaw")
  with pytest.raises(ConfigError, match="unknown evaluator 'jigsaw'; known"):
    _parse(["--checkpoint=random", "--evaluators=linear_probe,jigsaw"])


def test_eval_params_are_checked_against_the_evaluator():
  with pytest.raises(ConfigError, match="no parameter stepz.*takes:.*steps"):
    _parse(["--checkpoint=random", "--eval_param=linear_probe.stepz=3"])
  with pytest.raises(ConfigError, match="evaluator.name=value"):
    _parse(["--checkpoint=random", "--eval_param=steps=3"])
  with pytest.raises(ConfigError, match="image_size"):
    _parse(["--checkpoint=random", "--eval_param=linear_probe.image_size=4"])
  with pytest.raises(ConfigError, match="--checkpoint is required"):
    _parse([])


def test_demo_flagfile_parses_into_a_frozen_config():
  config = _parse([f"--flagfile={DEMO_CFG}", "--eval_param=linear_probe.steps=7"])
  assert config.checkpoint == "random"
  assert config.evaluators == ("linear_probe",)
  assert config.trunk == TrunkConfig(depth=26, width=0.25)
  params = config.eval_params["linear_probe"]
  assert params["data"] == "digits" and params["steps"] == 7  # later wins
  with pytest.raises(TypeError, match="does not support item assignment"):
    params["steps"] = 1
  with pytest.raises(dataclasses.FrozenInstanceError,
                     match="cannot assign to field 'checkpoint'"):
    config.checkpoint = "x"


def test_trunk_flags_only_constrain_a_checkpoint_when_given():
  assert _parse(["--checkpoint=runs/x"]).trunk is None
  assert _parse(["--checkpoint=runs/x", "--depth=14",
                 "--width=0.25"]).trunk == TINY
  assert _parse(["--checkpoint=random"]).trunk == TrunkConfig()


def test_trunk_flags_have_train_names():
  fv = flags.FlagValues()
  evaluate.define_eval_flags(fv)
  defaults = TrunkConfig()
  for name in driver.TRUNK_FIELDS:
    assert fv[name].default == getattr(defaults, name), name
  # The same trunk flags as train's, with the same help (one declaration).
  train_fv = flags.FlagValues()
  mt_flags.define_train_flags(train_fv)
  for option in options_lib.trunk_options():
    assert fv[option.name].help == train_fv[option.name].help, option.name
    assert fv[option.name].default == train_fv[option.name].default
  assert _parse(["--checkpoint=random", "--seed=5"]).seed == 5


def test_eval_lasso_with_last_stride_2_is_a_clear_error(tmp_path):
  with pytest.raises(ConfigError, match="block3_last_stride=1"):
    _parse(["--checkpoint=random", "--eval_lasso",
            "--block3_last_stride=2"])
  # A checkpoint that turns out to have stride 2: found once it is loaded.
  path = str(tmp_path / "stride2.keras")
  mtssl_tf.Trunk(depth=14, width=0.25, block3_last_stride=2).save(path)
  config = driver.EvalConfig(checkpoint=path, eval_lasso=True)
  with pytest.raises(ValueError,
                     match=r"stride2\.keras.*block3_last_stride=2"):
    driver.run_evaluation(config, log=lambda s: None)


# -- checkpoints -------------------------------------------------------------------
def test_missing_checkpoint_path_is_named(tmp_path):
  missing = str(tmp_path / "no_such_run")
  with pytest.raises(FileNotFoundError, match="no_such_run.*does not exist"):
    trunk_sources.load_trunk(missing)
  config = driver.EvalConfig(checkpoint=missing)
  with pytest.raises(FileNotFoundError, match="no_such_run"):
    driver.run_evaluation(config, log=lambda s: None)
  # A folder that is not a run.
  with pytest.raises(FileNotFoundError, match="config.json"):
    trunk_sources.load_trunk(str(tmp_path))


def test_keras_file_round_trip_and_wrong_architecture(tmp_path):
  trunk = mtssl_tf.Trunk(**TINY.to_dict())
  path = str(tmp_path / "trunk.keras")
  trunk.save(path)
  loaded = trunk_sources.load_trunk(path)
  assert loaded.config == TINY
  for a, b in zip(trunk.get_weights(), loaded.get_weights()):
    np.testing.assert_array_equal(a, b)
  assert trunk_sources.load_trunk(path, TINY).config == TINY
  with pytest.raises(ValueError, match=r"wrong architecture.*trunk\.keras.*"
                     r"depth: 14 \(checkpoint\) != 26 \(requested\)"):
    trunk_sources.load_trunk(path, TrunkConfig(depth=26, width=0.25))
  # Training-only fields do not make a different network.
  trunk_sources.load_trunk(path, TrunkConfig(depth=14, width=0.25,
                                             bn_momentum=0.9, sync_bn=True))
  bad = tmp_path / "corrupt.keras"
  bad.write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="corrupt.keras"):
    trunk_sources.load_trunk(str(bad))


def test_run_folder_loads_the_trained_trunk_and_rejects_a_mismatch(tmp_path):
  run = tmp_path / "run"
  model = _make_run(str(run), TINY)
  trunk = trunk_sources.load_trunk(str(run))
  assert trunk.config == TINY
  for a, b in zip(model.trunk.get_weights(), trunk.get_weights()):
    np.testing.assert_array_equal(a, b)
  # config.json says width 0.5, the checkpoint holds a width-0.25 model.
  other = tmp_path / "edited"
  _make_run(str(other), TrunkConfig(depth=14, width=0.5), saved_trunk=TINY)
  with pytest.raises(ValueError, match=r"wrong architecture.*edited"):
    trunk_sources.load_trunk(str(other))
  # A requested architecture that differs from the run's.
  with pytest.raises(ValueError, match=r"wrong architecture.*width: 0\.25"):
    trunk_sources.load_trunk(str(run), TrunkConfig(depth=14, width=0.5))


def test_random_trunk_is_seeded_by_the_config():
  config = driver.EvalConfig(checkpoint="random", trunk=TINY,
                               evaluators=("linear_probe",), eval_params={
                                   "linear_probe": {
                                       "data": "digits", "image_size": 32,
                                       "steps": 5, "batch_size": 32,
                                       "max_train_examples": 64,
                                       "max_test_examples": 50}})
  first = driver.run_evaluation(config, log=lambda s: None)
  second = driver.run_evaluation(config, log=lambda s: None)
  assert set(first.metrics) == {"linear_probe/top1",
                                "linear_probe/recall_at_5"}
  assert first.metrics == second.metrics and not first.failures


def _branch_ends(trunk):
  return [layer.get_weights()[0] for layer in trunk.layers
          if layer.name.endswith("_3_conv")]


def test_random_trunk_after_a_zero_init_run_has_the_standard_init():
  # A zero-init random trunk is the stem and the shortcuts alone (every
  # branch adds 0): the baseline is the standard initialisation.
  zero = TrunkConfig(depth=14, width=0.25, zero_init_residual=True)
  assert all(not np.any(w) for w in _branch_ends(
      mtssl_tf.Trunk(**zero.to_dict())))
  random_trunk = trunk_sources.load_trunk(trunk_sources.RANDOM, zero)
  assert random_trunk.config == TrunkConfig(depth=14, width=0.25)
  ends = _branch_ends(random_trunk)
  assert ends and all(np.std(w) > 0 for w in ends)
  assert trunk_sources.random_architecture(TINY) is TINY


def test_report_random_row_takes_the_checkpoint_architecture_with_standard_init():
  zero = TrunkConfig(depth=14, width=0.25, zero_init_residual=True)
  seen = []

  def load(checkpoint, architecture):
    seen.append((checkpoint.kind, architecture))
    return mtssl_tf.Trunk(**(architecture or zero).to_dict())

  rows = [(driver.Checkpoint("random", "random", "random"), False),
          (driver.Checkpoint("run", "run", "/nonexistent"), False)]
  driver.evaluate_checkpoints(rows, [], {}, load=load, log=lambda s: None)
  # The run first (its own architecture, zero-init), then random.
  assert seen == [("run", None), ("random", TrunkConfig(depth=14, width=0.25))]


# -- the command ------------------------------------------------------------------
def _command(args, cwd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  return fork_server.run(["-m", "mtssl_tf.evaluate"] + args, cwd=cwd,
                         env=env, timeout=300)


@pytest.mark.slow
def test_command_end_to_end_writes_results_json(tmp_path, monkeypatch,
                                                capsys):
  # The command's own parser and main, in-process on fresh flag values
  # (the subprocess run of the command is the next test's): main's return
  # value is the exit status app.run passes to sys.exit.
  output = tmp_path / "out" / "results.json"
  fv = flags.FlagValues()
  evaluate.define_eval_flags(fv)
  parse = mt_flags.flags_parser("evaluate", evaluate._sections, f=fv)
  argv = parse(["evaluate", f"--flagfile={DEMO_CFG}", f"--output={output}",
                "--eval_param=linear_probe.steps=60"])
  monkeypatch.setattr(flags, "FLAGS", fv)  # what main reads
  monkeypatch.chdir(ROOT)
  assert evaluate.main(argv) == 0, capsys.readouterr().err[-3000:]
  results = json.loads(output.read_text())
  metrics = results["metrics"]
  assert set(metrics) == {"linear_probe/top1", "linear_probe/recall_at_5"}
  assert all(0.0 <= v <= 1.0 for v in metrics.values())
  assert metrics["linear_probe/top1"] > 0.5  # chance: 0.1 (see test_linear_probe)
  assert results["config"]["eval_params"]["linear_probe"]["steps"] == 60
  assert "| linear_probe/top1 |" in capsys.readouterr().out


PROBE_TINY = ["--eval_param=linear_probe.image_size=32",
              "--eval_param=linear_probe.steps=20",
              "--eval_param=linear_probe.batch_size=32",
              "--eval_param=linear_probe.max_test_examples=50"]


def test_protocols_and_default_outputs_of_a_run_folder(tmp_path):
  run = tmp_path / "run"
  _make_run(str(run), TINY)
  config = _parse([f"--checkpoint={run}"])
  # Defaults: every evaluator, the offline demo protocol, the random
  # baseline, results written into the run folder.
  assert config.evaluators == ("linear_probe", "detection", "depth")
  assert config.protocol == "demo" and config.baseline
  assert config.output == str(run / "results.json")
  assert config.markdown == str(run / "results.md")
  assert config.params("linear_probe")["data"] == "digits"
  assert config.params("depth")["source"] == "middlebury"
  # The paper protocol is each evaluator's own defaults (prepared data).
  paper = _parse([f"--checkpoint={run}", "--protocol=paper",
                  "--eval_param=depth.steps=5"])
  assert paper.params("linear_probe") == {}
  assert paper.params("depth") == {"steps": 5}
  with pytest.raises(Exception, match="protocol"):
    _parse(["--checkpoint=random", "--protocol=fast"])
  assert driver.checkpoint_label(str(run)) == "RP"


def test_one_failing_evaluator_does_not_lose_the_others(tmp_path):
  # depth reads an unprepared TFDS folder and fails; the probe still runs,
  # both rows are written, the failure is named and the exit code is 1.
  run = tmp_path / "run"
  _make_run(str(run), TINY)
  result = _command([f"--checkpoint={run}", "--evaluators=linear_probe,depth",
                     "--eval_param=depth.source=nyu_depth_v2",
                     f"--eval_param=depth.data_dir={tmp_path / 'no_tfds'}"]
                    + PROBE_TINY, cwd=str(tmp_path))
  assert result.returncode == 1, result.stderr[-3000:]
  assert "depth" in result.stderr and "failed" in result.stderr
  results = json.loads((run / "results.json").read_text())
  assert set(results["rows"]) == {"RP", "Random init"}
  for row in results["rows"].values():
    assert set(row["metrics"]) == {"linear_probe/top1",
                                   "linear_probe/recall_at_5"}
    assert "depth" in row["failures"]
  table = (run / "results.md").read_text()
  assert "| RP | " in table and "| Random init | " in table
  assert "Failed evaluations" in table
  # The progress lines carry an ETA.
  assert re.search(r"linear_probe: step \d+/20 .*ETA \d+m\d+s", result.stdout)


def test_command_reports_an_unknown_evaluator(monkeypatch, capsys):
  # The command's own flags and main, in-process on fresh flag values (a
  # subprocess spends ~10 s importing TensorFlow to print one line): main's
  # return value is the exit status app.run passes to sys.exit.
  fv = flags.FlagValues()
  evaluate.define_eval_flags(fv)
  argv = fv(["evaluate", "--checkpoint=random", "--evaluators=jigsaw"])
  monkeypatch.setattr(flags, "FLAGS", fv)  # what main reads
  assert evaluate.main(argv) == 2
  err = capsys.readouterr().err
  assert "unknown evaluator 'jigsaw'" in err
  assert "linear_probe, detection, depth" in err
