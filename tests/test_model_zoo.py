"""Model zoo (model-zoo issue, item 2): the preset registry, tests generated
from it (each preset builds at a tiny size; its paper and study recipes
validate), the committed weights (sha256 and parameter count match their
metadata), tampered weights refused, the build command end to end, and the
``.keras`` round trip."""
import hashlib
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf  # noqa: F401  (registers the Keras classes for load_model)
from mtssl_tf import model_zoo
from mtssl_tf.model_zoo.__main__ import main as zoo_main
from tools import zoo as zoo_tools
from tools.zoo.zoo_cli import main as tools_main

from harness import h5_named_arrays

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The paper's rows (Tables 2-4), spelled out independently of the registry.
EXPECTED = {
    "rp": (("relative_position",), False, False, "RP"),
    "rp_h": (("relative_position",), True, False, "RP / H"),
    "rp_col": (("relative_position", "colorization"), False, False,
               "RP+Col"),
    "rp_col_h": (("relative_position", "colorization"), True, False,
                 "RP+Col / H"),
    "rp_ex": (("relative_position", "exemplar"), False, False, "RP+Ex"),
    "rp_ms": (("relative_position", "motion_segmentation"), False, False,
              "RP+MS"),
    "rp_col_ex": (("relative_position", "colorization", "exemplar"), False,
                  False, "RP+Col+Ex"),
    "rp_col_ex_ms": (("relative_position", "colorization", "exemplar",
                      "motion_segmentation"), False, False, "RP+Col+Ex+MS"),
    "rp_col_ex_ms_lasso": (("relative_position", "colorization", "exemplar",
                            "motion_segmentation"), False, True,
                           "RP+Col+Ex+MS"),
}
# The committed weights at the study's scale (depth 50, width 0.5, the RP
# head reading the flattened per-patch map): measured 11.7 MB (rp) to 14.5 MB
# (four tasks with the lasso); a file over 16 MB is not a zoo weights file.
MAX_WEIGHTS_BYTES = 16_000_000


def _sha256(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _h5_arrays(path):
  return list(h5_named_arrays(path).values())


def _fingerprint(array):
  array = np.asarray(array)
  if array.dtype == np.float16:
    # A float16 zoo file loads into float32 variables (exact conversion).
    array = array.astype(np.float32)
  return (array.shape, array.dtype.str,
          hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest())


def _data_bytes(meta):
  """Bytes of array data a zoo file holds, from its recorded dtypes."""
  storage = meta.get("weights_storage")
  if storage is None:  # written before float16 storage: float32 only
    assert "weights_dtype" not in meta
    return 4 * meta["params"]
  values = storage["values"]
  assert sum(values.values()) == meta["params"]
  assert set(values) <= {"float16", "float32"}
  assert (meta["weights_dtype"] == "float32") == ("float16" not in values)
  assert (meta["weights_dtype"] == "mixed") == bool(storage["kept_float32"])
  return 2 * values.get("float16", 0) + 4 * values.get("float32", 0)


def _data_bytes_in(path):
  return sum(a.nbytes for a in _h5_arrays(path))


def _check_settings(model, name, rp_color="none"):
  tasks, harmonize, lasso, _ = EXPECTED[name]
  assert tuple(model.task_names) == tasks
  assert (model.mixer is not None) == lasso
  if lasso:
    assert model.mixer.task_names == list(tasks)
  # The CPU recipe's RP reads full colour (configs/study_common.cfg); the
  # paper recipe drops colour (test_paper_recipes_...).
  color_mode = model.task_objects["relative_position"].color_mode
  assert color_mode == ("harmonize" if harmonize else rp_color)


def test_list_presets_has_the_nine_paper_rows():
  assert model_zoo.list_presets() == list(EXPECTED)
  for name, (tasks, harmonize, lasso, display) in EXPECTED.items():
    preset = model_zoo.get_preset(name)
    assert (preset.tasks, preset.harmonize, preset.lasso) == (
        tasks, harmonize, lasso)
    assert preset.display_name.startswith(display)
    assert preset.paper_results  # every row carries the paper's numbers


@pytest.mark.parametrize("call", [
    lambda: model_zoo.get_preset("rp_jigsaw"),
    lambda: model_zoo.load("rp_jigsaw"),
    lambda: model_zoo.build_preset_model("rp_jigsaw"),
])
def test_unknown_name_lists_the_known_ones(call):
  with pytest.raises(ValueError) as info:
    call()
  message = str(info.value)
  assert "'rp_jigsaw'" in message
  for name in EXPECTED:
    assert name in message


@pytest.mark.parametrize("name", model_zoo.list_presets())
def test_every_preset_builds_at_a_tiny_size(name):
  model = model_zoo.build_preset_model(name, tiny=True)
  _check_settings(model, name)
  assert model.trunk.config.depth == 14 and model.trunk.config.width == 0.25
  # Output stride 16 at 32 px: every head reads a 2x2 block-3 map.
  images = tf.zeros([1, 32, 32, 3])
  for task in model.task_names:
    features = model.features(images, task=task)
    assert tuple(features.shape) == (1, 2, 2, model.trunk.output_channels)


@pytest.mark.parametrize("name", model_zoo.list_presets())
def test_paper_and_study_recipes_validate(name):
  tasks, harmonize, lasso, _ = EXPECTED[name]
  for scale, depth, width in (("paper", 101, 1.0), ("study", 50, 0.5)):
    config = model_zoo.preset_config(name, scale)
    assert config.tasks == tasks and config.lasso == lasso, scale
    assert (config.trunk.depth, config.trunk.width) == (depth, width), scale
    color_mode = config.task_params["relative_position"].get("color_mode",
                                                             "drop")
    plain = "drop" if scale == "paper" else "none"  # the CPU recipe's
    assert color_mode == ("harmonize" if harmonize else plain), scale
  paper = model_zoo.preset_config(name, "paper")
  assert paper.data.source == "tfds"
  # TF-Slim's resnet_arg_scope pools with 'SAME': the paper's network.
  assert paper.trunk.pool_padding == "same"
  study = model_zoo.preset_config(name, "study")
  assert study.data.source == "offline" and study.data.deterministic


@pytest.mark.parametrize("name", model_zoo.list_presets())
def test_typed_recipes_equal_their_train_command_lines(name, monkeypatch):
  # The recipe objects and the documented command line
  # (`python -m mtssl_tf.train <preset.train_flags(scale)>` from the
  # repository root), parsed by absl as the train command does, agree.
  from absl import flags
  from mtssl_tf.cli import flags as mt_flags
  preset = model_zoo.get_preset(name)
  assert preset.overrides["tasks"] == EXPECTED[name][0]
  assert preset.overrides.get("harmonize", False) == EXPECTED[name][1]
  assert preset.overrides.get("lasso", False) == EXPECTED[name][2]
  monkeypatch.chdir(REPO)
  for scale in model_zoo.SCALES:
    fv = flags.FlagValues()
    mt_flags.define_train_flags(fv)
    fv(["train", *preset.train_flags(scale), "--run_dir=/r"])
    assert mt_flags.config_from_flags(fv) == preset.config(
        scale, run_dir="/r"), scale


def test_presets_need_no_working_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here
  config = model_zoo.preset_config("rp_col_h", "tiny",
                                   ["--batch_size=4"], {"seed": 5})
  assert os.getcwd() == str(tmp_path)
  assert (config.trunk.depth, config.batch_size, config.seed) == (14, 4, 5)
  assert config.task_params["relative_position"]["color_mode"] == "harmonize"
  assert config.run_dir == "runs/zoo/rp_col_h"


def test_bad_scale_and_bad_extra_flag_are_clear_errors():
  from mtssl_tf.config import ConfigError
  with pytest.raises(ValueError, match="unknown scale 'huge'; known scales: "
                     "paper, study, tiny"):
    model_zoo.get_preset("rp").train_flags("huge")
  with pytest.raises(ConfigError, match="no_such_flag"):
    model_zoo.preset_config("rp", "tiny", ["--no_such_flag=1"])


# The study's rows (configs/study_*.cfg) that are presets.
STUDY_ROWS = {"rp": "rp", "rp_h": "rp_h", "rp_col": "rp_col",
              "rp_col_ex_ms": "4task", "rp_col_ex_ms_lasso": "4task_lasso"}


@pytest.mark.parametrize("name", sorted(STUDY_ROWS))
def test_study_recipe_is_the_study_rows_config(name):
  # The zoo follows the CPU-scale study: a preset's study
  # config is its study row's, parsed as `python -m mtssl_tf.train
  # --flagfile=configs/study_<row>.cfg --run_dir=X` parses it, but for the
  # model name and deterministic ops (reproducible committed files).
  from mtssl_tf import options
  zoo = model_zoo.get_preset(name).config("study", run_dir="/x/run")
  study = options.parse_args(
      [f"--flagfile=configs/study_{STUDY_ROWS[name]}.cfg", "--run_dir=/x/run"],
      root=os.path.join(REPO, "mtssl_tf")).config
  zoo_dict, study_dict = zoo.to_dict(), study.to_dict()
  assert zoo_dict["model_name"] == f"zoo_{name}"
  assert zoo_dict["data"]["deterministic"]
  assert not study_dict["data"]["deterministic"]
  for d in (zoo_dict, study_dict):
    d.pop("model_name")
    d["data"].pop("deterministic")
  assert zoo_dict == study_dict
  # The study's scale, spelled out: depth 50 (6 block-3 units), width 0.5,
  # 2,000 steps of batch 16 (RP: 64 pairs), held-out metrics every 500.
  assert (zoo.trunk.depth, zoo.trunk.width, zoo.steps, zoo.batch_size) == (
      50, 0.5, 2000, 16)
  assert zoo.task_batch_size("relative_position") == 64
  assert zoo.pretext_eval_every == 500
  assert zoo.trunk.zero_init_residual
  assert zoo.lasso == (name == "rp_col_ex_ms_lasso")
  if zoo.lasso:
    assert zoo.lasso_l1 == 0.01


def test_read_pretext_metrics_merges_the_runs_file(tmp_path):
  # A hand-written <run_dir>/pretext_metrics.json, as the trainer writes it.
  metrics = {"relative_position": {"accuracy": 0.3125, "chance": 0.125,
                                   "step": 1200},
             "exemplar": {"top1": 0.5, "chance": 0.0625, "images": 16,
                          "step": 1200}}
  (tmp_path / "pretext_metrics.json").write_text(json.dumps(metrics))
  assert zoo_tools.read_pretext_metrics(str(tmp_path)) == metrics
  assert zoo_tools.read_pretext_metrics(str(tmp_path / "none")) == {}
  from mtssl_tf.model_zoo import listing
  assert listing.pretext_summary(metrics) == (
      "RP 0.312 (0.125) Ex 0.500 (0.062)")
  assert listing.pretext_summary({}) == "-"
  # The probe's result, as `python -m mtssl_tf.report --presets=...` stores
  # it (model_zoo.update_evaluations).
  assert listing.probe_summary({"linear_probe/digits": {
      "top1": 0.9125, "recall_at_5": 1.0}, "depth/x": {"delta1": 0.5}}) == (
          "0.912 (digits)")
  assert listing.probe_summary({}) == "-"
  (tmp_path / "pretext_metrics.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match="expected"):
    zoo_tools.read_pretext_metrics(str(tmp_path))


# -- committed weights ----------------------------------------------------------
@pytest.mark.parametrize("name", model_zoo.COMMITTED)
def test_committed_preset_loads_with_matching_hash_and_params(name):
  assert model_zoo.is_built(name), (
      f"{name} is listed as committed but its files are missing")
  path = model_zoo.weights_path(name)
  meta = model_zoo.load_metadata(name)
  assert os.path.getsize(path) == meta["weights_bytes"] < MAX_WEIGHTS_BYTES
  assert _sha256(path) == meta["sha256"]
  model = model_zoo.load(name)
  # Built by the third-round recipe (the study's): RP reads full colour,
  # harmonized presets the Lab L channel.
  _check_settings(model, name)
  assert model.count_params() == meta["params"]
  # Every variable was loaded (none left at its random init): the model's
  # arrays are exactly the arrays stored in the file, read with h5py.
  assert sorted(_fingerprint(v.numpy()) for v in model.weights) == sorted(
      _fingerprint(a) for a in _h5_arrays(path))
  assert {v.dtype for v in model.weights} == {"float32"}
  # The stored arrays and little else: 2 bytes a value stored as float16, 4
  # as float32 (files from before float16 storage record no dtype: all
  # float32), plus HDF5's bookkeeping; the recorded counts are the file's.
  assert _data_bytes(meta) == _data_bytes_in(path)
  assert _data_bytes(meta) < meta["weights_bytes"] < (
      _data_bytes(meta) + 1_000_000)
  # The metadata describes the run that made the file: its model is the
  # recorded training config's (whichever recipe built it: the files change
  # when the zoo is rebuilt).
  train = meta["train_config"]
  assert meta["model"]["trunk"] == train["trunk"]
  assert (meta["steps"], meta["seed"]) == (train["steps"], train["seed"])
  assert meta["data"]["images"] and meta["scale"] == "study"
  preset = model_zoo.get_preset(name)
  if model_zoo.up_to_date(name):
    # Built by today's recipe: the registry's study config is what it holds.
    study = model_zoo.preset_config(name, "study")
    assert meta["model"]["trunk"] == dict(study.trunk.to_dict())
    assert meta["steps"] == study.steps
    assert set(meta["pretext_metrics"]) == set(preset.tasks)
  assert meta["paper_recipe"]["flags"] == list(
      model_zoo.get_preset(name).paper_flags)


@pytest.fixture
def copied_preset(tmp_path):
  """The smallest committed preset, copied to a private folder."""
  name = "rp"
  for filename in (f"{name}.weights.h5", f"{name}.json"):
    shutil.copy(os.path.join(model_zoo.CHECKOUT_ZOO_DIR, filename), tmp_path)
  return name, str(tmp_path)


def test_tampered_weights_are_refused(copied_preset):
  name, folder = copied_preset
  path = os.path.join(folder, f"{name}.weights.h5")
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x01
  open(path, "wb").write(bytes(data))
  expected = model_zoo.load_metadata(name, folder)["sha256"]
  actual = hashlib.sha256(bytes(data)).hexdigest()
  with pytest.raises(model_zoo.WeightsIntegrityError) as info:
    model_zoo.load(name, weights_dir=folder)
  message = str(info.value)
  assert path in message and expected in message and actual in message
  assert isinstance(info.value, ValueError)
  # Architecture only needs no weights, so it still works.
  model = model_zoo.load(name, weights=False, weights_dir=folder)
  assert model.count_params() == model_zoo.load_metadata(name,
                                                         folder)["params"]


def test_missing_weights_say_how_to_build_them(tmp_path, copied_preset):
  with pytest.raises(FileNotFoundError,
                     match="python -m tools.zoo build rp_ex"):
    model_zoo.load("rp_ex", weights_dir=str(tmp_path))
  name, folder = copied_preset
  os.remove(os.path.join(folder, f"{name}.weights.h5"))
  with pytest.raises(FileNotFoundError,
                     match=f"python -m tools.zoo build {name}"):
    model_zoo.load(name, weights_dir=folder)


def test_without_a_zoo_folder_presets_load_from_their_file(
    tmp_path, copied_preset, monkeypatch):
  # An installed wheel: no checkout beside the package, no MTSSL_TF_ZOO_DIR.
  from mtssl_tf.model_zoo import listing, store
  monkeypatch.setattr(store, "CHECKOUT_ZOO_DIR", str(tmp_path / "absent"))
  monkeypatch.delenv(model_zoo.ZOO_DIR_ENV, raising=False)
  assert model_zoo.default_folder() is None
  assert not model_zoo.is_built("rp") and model_zoo.list_registered() == []
  with pytest.raises(model_zoo.NoZooFolderError,
                     match=r"ships no weights.*weights_dir=.*sha256="):
    model_zoo.load("rp")
  assert "no zoo folder here" in listing.table()
  assert listing.describe("rp").endswith(listing.NO_FOLDER)
  # The weights file by path with its sha256: the study recipe's
  # architecture with the file's weights, as loaded from a zoo folder.
  name, folder = copied_preset
  sha256 = model_zoo.load_metadata(name, folder)["sha256"]
  path = os.path.join(folder, f"{name}.weights.h5")
  by_path = model_zoo.load(name, weights=path, sha256=sha256)
  monkeypatch.setenv(model_zoo.ZOO_DIR_ENV, folder)
  by_folder = model_zoo.load(name)
  assert sorted(_fingerprint(v.numpy()) for v in by_path.weights) == sorted(
      _fingerprint(v.numpy()) for v in by_folder.weights)
  with pytest.raises(model_zoo.WeightsIntegrityError, match="a" * 64):
    model_zoo.load(name, weights=path, sha256="a" * 64)


def test_metadata_of_another_preset_is_refused(copied_preset):
  name, folder = copied_preset
  meta = json.load(open(os.path.join(folder, f"{name}.json")))
  meta["lasso"] = True
  json.dump(meta, open(os.path.join(folder, f"{name}.json"), "w"))
  with pytest.raises(ValueError, match="belongs to another preset"):
    model_zoo.load(name, weights_dir=folder)
  open(os.path.join(folder, f"{name}.json"), "w").write("{")
  with pytest.raises(ValueError, match="is not valid JSON"):
    model_zoo.load(name, weights_dir=folder)


def test_update_evaluations_keeps_the_weights_and_the_hash(copied_preset):
  name, folder = copied_preset
  before = model_zoo.load_metadata(name, folder)
  model_zoo.update_evaluations(name, {"linear_probe/digits": {"top1": 0.5}},
                               weights_dir=folder)
  model_zoo.update_evaluations(name, {"depth/middlebury": {"delta1": 0.25}},
                               weights_dir=folder)
  after = json.load(open(os.path.join(folder, f"{name}.json")))
  assert after["evaluations"] == {"linear_probe/digits": {"top1": 0.5},
                                  "depth/middlebury": {"delta1": 0.25}}
  assert after["sha256"] == before["sha256"]
  assert {k: v for k, v in after.items() if k != "evaluations"} == {
      k: v for k, v in before.items() if k != "evaluations"}
  with pytest.raises(ValueError, match="finite JSON"):
    model_zoo.update_evaluations(name, {"x": float("nan")},
                                 weights_dir=folder)
  model_zoo.load(name, weights_dir=folder)  # still passes the hash check
  # `list` shows the probe's number beside the preset.
  from mtssl_tf.model_zoo import listing
  row = [l for l in listing.table(folder).splitlines()
         if l.startswith(f"{name} ")][0]
  assert row.endswith("0.500 (digits)")


# -- .keras round trip and the build command -------------------------------------
def test_tiny_preset_round_trips_through_a_keras_file(tmp_path):
  keras.utils.set_random_seed(1)
  model = model_zoo.build_preset_model("rp_col_ex_ms_lasso", tiny=True)
  rng = np.random.default_rng(0)
  for alpha in model.mixer.rows.values():
    alpha.assign(rng.normal(size=alpha.shape).astype(np.float32))
  path = str(tmp_path / "tiny.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  images = tf.constant(rng.uniform(0, 255, (2, 32, 32, 3)), tf.float32)
  for task in model.task_names:
    np.testing.assert_allclose(loaded.features(images, task=task).numpy(),
                               model.features(images, task=task).numpy(),
                               rtol=1e-5, atol=1e-5)
  _check_settings(loaded, "rp_col_ex_ms_lasso")


TINY_BUILD_FLAGS = ["--train_flag=--strategy=one_device",
                    # Held-out metrics on a few examples at the end (tiny
                    # turns them off).
                    "--train_flag=--pretext_eval_every=2",
                    "--train_flag=--pretext_eval_examples=8"]


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
  """``python -m tools.zoo build rp_h --tiny --steps=2`` into a
  temporary weights folder (training in this process; one device, so that
  no second MirroredStrategy shares the test process's collective keys),
  the run kept in a work folder beside it."""
  folder = str(tmp_path_factory.mktemp("zoo_weights"))
  work = str(tmp_path_factory.mktemp("zoo_runs"))
  code = tools_main(["build", "rp_h", "--tiny", "--steps=2", *TINY_BUILD_FLAGS,
                   f"--weights_dir={folder}", f"--work_dir={work}"])
  assert code == 0
  return folder, work


@pytest.mark.slow
def test_build_command_writes_weights_and_metadata(tiny_build, capsys):
  folder, work = tiny_build
  assert sorted(os.listdir(folder)) == ["rp_h.json", "rp_h.weights.h5"]
  meta = json.load(open(os.path.join(folder, "rp_h.json")))
  path = os.path.join(folder, "rp_h.weights.h5")
  assert meta["sha256"] == _sha256(path)
  assert meta["weights_bytes"] == os.path.getsize(path)
  # Float16 by default: all but the arrays the rule keeps float32
  # (test_zoo_float16.py; conv biases in front of batch norm get no
  # gradient and stay at float16-subnormal noise), each named in the JSON.
  storage = meta["weights_storage"]
  assert storage["requested"] == "float16"
  assert meta["weights_dtype"] in ("float16", "mixed")
  kept = {k["name"] for k in storage["kept_float32"]}
  for name, array in h5_named_arrays(path).items():
    assert array.dtype == (np.float32 if name in kept else np.float16), name
  assert _data_bytes(meta) == _data_bytes_in(path)
  assert storage["values"]["float16"] > 0.85 * meta["params"]
  assert (meta["scale"], meta["steps"], meta["seed"]) == ("tiny", 2, 0)
  assert meta["tasks"] == ["relative_position"] and meta["harmonize"]
  assert not meta["lasso"] and meta["evaluations"] == {}
  assert "--harmonize" in meta["train_flags"]
  assert "--steps=2" in meta["train_flags"]
  assert meta["build_command"] == (
      "python -m tools.zoo build rp_h --tiny --steps=2 "
      + " ".join(TINY_BUILD_FLAGS))
  assert meta["train_config"]["strategy"] == "one_device"
  assert meta["data"]["source"] == "offline" and meta["data"]["images"]
  assert set(meta["final_losses"]) == {"relative_position"}
  assert np.isfinite(meta["final_losses"]["relative_position"])
  assert "--run_dir=<run_dir>" in meta["train_flags"]  # no machine paths
  model = model_zoo.load("rp_h", weights_dir=folder)
  _check_settings(model, "rp_h")
  assert model.count_params() == meta["params"]
  assert model.trunk.config.depth == 14
  # `list` shows it as built, with its hash prefix.
  capsys.readouterr()
  assert zoo_main(["list", f"--weights_dir={folder}"]) == 0
  row = [l for l in capsys.readouterr().out.splitlines()
         if l.startswith("rp_h ")][0]
  assert "yes" in row and meta["sha256"][:12] in row
  # The run's final held-out metrics are in the metadata, as the trainer
  # wrote them, and `list` / `show` print them with chance beside.
  with open(os.path.join(work, "rp_h", "pretext_metrics.json")) as f:
    written = json.load(f)
  assert meta["pretext_metrics"] == written
  rp = meta["pretext_metrics"]["relative_position"]
  assert set(meta["pretext_metrics"]) == {"relative_position"}
  assert rp["chance"] == 1 / 8 and rp["step"] == 2
  assert 0.0 <= rp["accuracy"] <= 1.0
  assert f"RP {rp['accuracy']:.3f} (0.125)" in row
  assert zoo_main(["show", "rp_h", f"--weights_dir={folder}"]) == 0
  shown = capsys.readouterr().out
  # Built by the tiny recipe, not today's study one.
  assert ("built by today's study recipe: no (rebuild: python -m "
          "tools.zoo build rp_h --resume)") in shown
  line = [l for l in shown.splitlines() if "8-way accuracy" in l][0]
  assert f"{rp['accuracy']:.3f}" in line and "0.125" in line


@pytest.mark.slow
def test_build_resume_skips_what_this_recipe_already_built(tiny_build,
                                                           capsys):
  folder, work = tiny_build
  before = open(os.path.join(folder, "rp_h.weights.h5"), "rb").read()
  meta_before = open(os.path.join(folder, "rp_h.json")).read()
  capsys.readouterr()
  assert tools_main(["build", "rp_h", "--tiny", "--steps=2", "--resume",
                   *TINY_BUILD_FLAGS, f"--weights_dir={folder}",
                   f"--work_dir={work}"]) == 0
  out = capsys.readouterr().out
  assert "[1/1] rp_h: already built by this recipe, skipped" in out
  assert "built 0 of 1 preset(s) (1 skipped)" in out
  assert open(os.path.join(folder, "rp_h.weights.h5"), "rb").read() == before
  assert open(os.path.join(folder, "rp_h.json")).read() == meta_before
  extra = [f.split("=", 1)[1] for f in TINY_BUILD_FLAGS]
  assert model_zoo.up_to_date("rp_h", tiny=True, steps=2, weights_dir=folder,
                              extra_flags=extra)
  # Another recipe (more steps, the study scale, other flags) is not, nor
  # float32 storage.
  assert not model_zoo.up_to_date("rp_h", tiny=True, steps=2,
                                  weights_dir=folder, extra_flags=extra,
                                  weights_dtype="float32")
  assert not model_zoo.up_to_date("rp_h", tiny=True, steps=3,
                                  weights_dir=folder, extra_flags=extra)
  assert not model_zoo.up_to_date("rp_h", steps=2, weights_dir=folder,
                                  extra_flags=extra)
  assert not model_zoo.up_to_date("rp_h", tiny=True, steps=2,
                                  weights_dir=folder)
  assert not model_zoo.up_to_date("rp", tiny=True, steps=2,
                                  weights_dir=folder, extra_flags=extra)


@pytest.mark.slow
def test_export_command_writes_a_keras_file_load_model_opens(tiny_build,
                                                             tmp_path):
  tiny_build, _ = tiny_build
  output = str(tmp_path / "rp_h.keras")
  assert zoo_main(["export", "rp_h", f"--output={output}",
                   f"--weights_dir={tiny_build}"]) == 0
  loaded = keras.models.load_model(output)
  reference = model_zoo.load("rp_h", weights_dir=tiny_build)
  images = tf.constant(np.random.default_rng(0).uniform(0, 255,
                                                        (2, 32, 32, 3)),
                       tf.float32)
  np.testing.assert_allclose(loaded.features(images).numpy(),
                             reference.features(images).numpy(),
                             rtol=1e-5, atol=1e-5)


def test_command_errors_name_the_problem(capsys):
  assert tools_main(["build", "rp", "nope"]) == 2
  err = capsys.readouterr().err
  assert "unknown model-zoo preset 'nope'" in err and "rp_col_ex_ms" in err
  assert tools_main(["build"]) == 2
  assert "--all" in capsys.readouterr().err
  assert zoo_main(["export", "rp", "--output=x.h5"]) == 2
  assert "must end with .keras" in capsys.readouterr().err
