"""``python -m tools.zoo build NAME --from_run=RUN_DIR``: a finished
run of a preset's recipe becomes the preset without retraining. One tiny
run (rp_col, 2 steps, seed 1, without deterministic ops, another model
name: what the study's runs differ in) is imported; its weights must equal
the run's checkpoint variables, read back by name from the checkpoint file
itself, and the metadata must carry the run's held-out metrics and what
differed. Runs whose config or progress do not fit are refused."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf  # noqa: F401  (registers the Keras classes)
from mtssl_tf import model_zoo
from mtssl_tf.model_zoo.__main__ import main as zoo_main
from mtssl_tf.training import run_checkpoints
from tools import zoo as zoo_tools
from tools.zoo.zoo_cli import main as tools_main

from harness import assert_features_close, h5_named_arrays

NAME = "rp_col"
STEPS = 2
# Options of the run that are part of the recipe (the tiny scale turns
# held-out metrics off; one device, so that no second MirroredStrategy
# shares the test process's collective keys).
RECIPE_FLAGS = ["--strategy=one_device", "--pretext_eval_every=2",
                "--pretext_eval_examples=8"]
# What the run does differently from the preset's tiny recipe, as a study
# run does (configs/study_*.cfg: no --deterministic, its own model name),
# plus operational fields, and seed 1 (allowed only when the build asks for
# it).
RUN_OPTIONS = {"model_name": "mtssl_study_x", "deterministic": False,
               "log_every": 5, "checkpoint_every": 1, "plots": False,
               "seed": 1, "steps": STEPS}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished tiny training run, as `python -m mtssl_tf.train` writes
  one (config.json, flags.txt, checkpoints, history.jsonl,
  pretext_metrics.json)."""
  from mtssl_tf.training.trainer import Trainer
  base = tmp_path_factory.mktemp("from_run")
  run_dir = str(base / "run")
  parsed = model_zoo.get_preset(NAME).parse(
      "tiny", RECIPE_FLAGS, RUN_OPTIONS, run_dir=run_dir)
  assert not parsed.config.data.deterministic
  trainer = Trainer(parsed.config, log=lambda s: None)
  trainer.train(flags_text=parsed.text)
  del trainer
  return run_dir


def _float32_arrays(path):
  return [a for a in h5_named_arrays(path).values() if a.dtype == np.float32]


def _build(run_dir, weights_dir, **kwargs):
  kwargs.setdefault("overrides", {"seed": 1})
  return zoo_tools.build_preset(
      NAME, tiny=True, steps=STEPS, weights_dir=str(weights_dir),
      extra_flags=RECIPE_FLAGS, from_run=run_dir, log=lambda s: None,
      **kwargs)


@pytest.fixture(scope="module")
def imported(finished_run, tmp_path_factory):
  folder = tmp_path_factory.mktemp("zoo_weights")
  return _build(finished_run, folder), str(folder)


@pytest.mark.slow
def test_imported_weights_equal_the_runs_checkpoint(finished_run, imported):
  meta, folder = imported
  model = model_zoo.load(NAME, weights_dir=folder)
  latest = tf.train.latest_checkpoint(os.path.join(finished_run,
                                                   "checkpoints"))
  assert latest.endswith(f"ckpt-{STEPS}")
  stored = dict(tf.train.list_variables(latest))
  named = run_checkpoints.model_variables(model)
  # The import writes float16 (the default): every weight of the loaded
  # preset is the value the checkpoint file holds under its name (not
  # load_run_model, which the import itself uses) rounded through float16,
  # or, for the arrays the file keeps float32 (listed in the metadata),
  # that value exactly.
  kept = _float32_arrays(os.path.join(folder, f"{NAME}.weights.h5"))
  assert len(kept) == len(meta["weights_storage"]["kept_float32"])
  assert meta["weights_storage"]["requested"] == "float16"
  for name, variable in named.items():
    key = f"model/{name}/.ATTRIBUTES/VARIABLE_VALUE"
    assert key in stored, name
    value = tf.train.load_variable(latest, key)
    got = variable.numpy()
    assert got.dtype == np.float32, name
    rounded = value.astype(np.float16).astype(np.float32)
    if not np.array_equal(got, rounded):
      np.testing.assert_array_equal(got, value, err_msg=name)
      assert any(np.array_equal(value, a) for a in kept), name
  model_keys = {k for k in stored if k.startswith("model/")}
  assert model_keys == {f"model/{n}/.ATTRIBUTES/VARIABLE_VALUE"
                        for n in named}
  assert model.count_params() == meta["params"]


@pytest.mark.slow
def test_metadata_records_the_run(finished_run, imported):
  meta, folder = imported
  with open(os.path.join(finished_run, "pretext_metrics.json")) as f:
    assert meta["pretext_metrics"] == json.load(f)
  assert set(meta["pretext_metrics"]) == {"relative_position",
                                          "colorization"}
  with open(os.path.join(finished_run, "config.json")) as f:
    run_config = json.load(f)
  assert meta["train_config"] == dict(run_config, run_dir="<run_dir>")
  # The colorization prior the run resolved (auto: from its training
  # images) is the one in the model config.
  prior = run_config["task_params"]["colorization"]["prior"]
  assert isinstance(prior, list)
  np.testing.assert_allclose(
      meta["model"]["tasks"]["colorization"]["prior"], prior)
  assert (meta["steps"], meta["seed"], meta["scale"]) == (STEPS, 1, "tiny")
  # The weighted schedule may give both steps to relative position.
  with open(os.path.join(finished_run, "history.jsonl")) as f:
    trained = [json.loads(l) for l in f]
  losses = {r["task"]: r["loss"] for r in trained if "loss" in r}
  assert losses and meta["final_losses"].keys() == losses.keys()
  record = meta["from_run"]
  assert record["run_dir"] == finished_run
  assert record["deterministic"] is False
  assert record["differences"] == {
      "checkpoint_every": [1, 1000], "data.deterministic": [False, True],
      "log_every": [5, 1], "model_name": ["mtssl_study_x", "zoo_rp_col"],
      "plots": [False, True]}
  assert "does not reproduce these weights" in record["note"]
  assert meta["build_command"] == (
      f"python -m tools.zoo build {NAME} --tiny --steps={STEPS} "
      + " ".join(f"--train_flag={f}" for f in RECIPE_FLAGS)
      + f" --from_run={finished_run}")
  assert "--seed=1" in meta["train_flags"]
  assert "--run_dir=<run_dir>" in meta["train_flags"]
  # The recipe is what decides "up to date": the same recipe is, another
  # (the default seed 0) is not.
  assert model_zoo.up_to_date(NAME, tiny=True, steps=STEPS,
                              weights_dir=folder, extra_flags=RECIPE_FLAGS,
                              overrides={"seed": 1})
  assert not model_zoo.up_to_date(NAME, tiny=True, steps=STEPS,
                                  weights_dir=folder,
                                  extra_flags=RECIPE_FLAGS)


@pytest.mark.slow
def test_weights_dtype_float32_imports_exactly(finished_run, imported,
                                               tmp_path):
  # `--weights_dtype=float32`: every array as trained, bit for bit, in a
  # file of 4 bytes a value (the default float16 import: 2 bytes a value
  # for all but the arrays kept float32).
  meta16, folder16 = imported
  folder = str(tmp_path / "zoo")
  assert tools_main(["build", NAME, "--tiny", f"--steps={STEPS}",
                   *[f"--train_flag={f}" for f in RECIPE_FLAGS + ["--seed=1"]],
                   f"--weights_dir={folder}", f"--from_run={finished_run}",
                   "--weights_dtype=float32"]) == 0
  meta = model_zoo.load_metadata(NAME, folder)
  n = meta["params"]
  assert meta["weights_dtype"] == "float32"
  assert meta["weights_storage"] == {"requested": "float32", "values": {
      "float32": n}, "kept_float32": []}
  path = os.path.join(folder, f"{NAME}.weights.h5")
  assert sum(a.size for a in _float32_arrays(path)) == n
  model = model_zoo.load(NAME, weights_dir=folder)
  latest = tf.train.latest_checkpoint(os.path.join(finished_run,
                                                   "checkpoints"))
  for name, variable in run_checkpoints.model_variables(model).items():
    np.testing.assert_array_equal(
        variable.numpy(), tf.train.load_variable(
            latest, f"model/{name}/.ATTRIBUTES/VARIABLE_VALUE"),
        err_msg=name)
  values16 = meta16["weights_storage"]["values"]
  assert values16["float16"] + values16.get("float32", 0) == n
  saved = meta["weights_bytes"] - meta16["weights_bytes"]
  assert abs(saved - 2 * values16["float16"]) < 4096
  # The same run, loaded from both files: features within 1% of their
  # largest magnitude (test_zoo_float16.py says why).
  half = model_zoo.load(NAME, weights_dir=folder16)
  assert_features_close(model, half)
  # A float16 preset is not up to date for a float32 build, and back.
  assert not model_zoo.up_to_date(NAME, tiny=True, steps=STEPS,
                                  weights_dir=folder, extra_flags=RECIPE_FLAGS,
                                  overrides={"seed": 1})
  assert model_zoo.up_to_date(NAME, tiny=True, steps=STEPS,
                              weights_dir=folder, extra_flags=RECIPE_FLAGS,
                              overrides={"seed": 1}, weights_dtype="float32")


def test_a_run_of_another_recipe_is_refused(finished_run, tmp_path):
  # The preset's recipe at seed 0 against a seed-1 run, and another
  # learning rate: each differing field named with both values.
  with pytest.raises(ValueError) as info:
    _build(finished_run, tmp_path, overrides={"learning_rate": 0.01})
  message = str(info.value)
  assert "optimizer.learning_rate: 0.001 vs 0.01" in message
  assert "seed: 1 vs 0" in message
  assert "model_name" not in message.split("Only")[0]  # allowed to differ
  assert not os.listdir(tmp_path)


def test_an_unfinished_run_is_refused(finished_run, tmp_path):
  # The run as it stands after an interruption between its checkpoints at
  # step 1 and step 2: config.json says 2 steps, the latest checkpoint is 1.
  run = str(tmp_path / "run")
  shutil.copytree(finished_run, run)
  ckpt_dir = os.path.join(run, "checkpoints")
  for f in os.listdir(ckpt_dir):
    if f.startswith(f"ckpt-{STEPS}."):
      os.remove(os.path.join(ckpt_dir, f))
  tf.compat.v1.train.update_checkpoint_state(
      ckpt_dir, os.path.join(ckpt_dir, "ckpt-1"))
  with pytest.raises(ValueError, match=r"not finished: its latest "
                     r"checkpoint \(ckpt-1\) is at step 1 of 2"):
    _build(run, tmp_path / "w")
  shutil.rmtree(ckpt_dir)
  with pytest.raises(FileNotFoundError, match="has no checkpoint"):
    _build(run, tmp_path / "w")


def test_a_missing_folder_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    _build(str(tmp_path / "nothing"), tmp_path / "w")
  # A folder that is not a run folder.
  with pytest.raises(FileNotFoundError, match="config.json"):
    _build(str(tmp_path), tmp_path / "w")


@pytest.mark.slow
def test_the_command_imports_and_refuses(finished_run, tmp_path, capsys):
  folder = str(tmp_path / "zoo")
  flags = [f"--train_flag={f}" for f in RECIPE_FLAGS + ["--seed=1"]]
  args = ["build", NAME, "--tiny", f"--steps={STEPS}", *flags,
          f"--weights_dir={folder}"]
  assert tools_main(args + [f"--from_run={finished_run}"]) == 0
  assert "importing" in capsys.readouterr().out
  meta = model_zoo.load_metadata(NAME, folder)
  assert meta["from_run"]["run_dir"] == finished_run
  assert meta["pretext_metrics"]
  # `--resume` with the same recipe: already built, nothing rewritten.
  assert tools_main(args + ["--resume", f"--from_run={finished_run}"]) == 0
  assert "already built by this recipe, skipped" in capsys.readouterr().out
  # `show` says it was imported, and from where.
  assert zoo_main(["show", NAME, f"--weights_dir={folder}"]) == 0
  assert f"imported from run: {finished_run}" in capsys.readouterr().out
  # One name only; no --work_dir; the scale must be the run's.
  for bad, words in (
      (["build", "--all", f"--from_run={finished_run}"], "exactly one"),
      (["build", "rp", NAME, f"--from_run={finished_run}"], "exactly one"),
      (args + [f"--from_run={finished_run}", f"--work_dir={tmp_path}"],
       "--work_dir"),
      ([a for a in args if a != "--tiny"] + [f"--from_run={finished_run}"],
       "add --tiny"),
  ):
    assert tools_main(bad) == 2, bad
    assert words in capsys.readouterr().err, bad


# The study's rows that are presets (configs/study_<row>.cfg).
STUDY_ROWS = {"rp": "rp", "rp_h": "rp_h", "rp_col": "rp_col",
              "rp_col_ex_ms": "4task", "rp_col_ex_ms_lasso": "4task_lasso"}


@pytest.mark.parametrize("name", sorted(STUDY_ROWS))
def test_the_study_rows_seed_0_runs_are_importable(name):
  # What `python -m mtssl_tf.study` trains into runs/study/<row>/s<seed>
  # (tools.report.study_plan: the row's flagfile, --seed, --run_dir), compared as
  # an import compares it: only what the zoo's recipe changes differs at
  # seed 0; seed 1 is refused unless the build asks for it.
  from mtssl_tf import options
  from tools.zoo.builder import from_run_differences
  root = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "mtssl_tf")
  preset = model_zoo.get_preset(name).config(
      "study", run_dir="/abs/runs/study/x/s0").to_dict()
  for seed in (0, 1):
    study = options.parse_args(
        [f"--flagfile=configs/study_{STUDY_ROWS[name]}.cfg",
         f"--seed={seed}", f"--run_dir=runs/study/x/s{seed}"],
        root=root).config.to_dict()
    diffs = from_run_differences(study, preset)
    assert diffs["refused"] == ([] if seed == 0 else [("seed", 1, 0)])
    assert diffs["allowed"] == [
        ("data.deterministic", False, True),
        ("model_name", f"mtssl_study_{STUDY_ROWS[name]}", f"zoo_{name}")]
