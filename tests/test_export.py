"""Export (model-zoo issue, item 1): the ``.keras`` file reloads in a fresh
process, the SavedModel's ``serving_default`` signature matches the eager
Keras model, ``saved_model_cli`` lists it, an interrupted export leaves no
half model, and ``python -m mtssl_tf.export`` exports a training run."""
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
import mtssl_tf  # noqa: F401  (registers the Keras classes for load_model)
from mtssl_tf.serving import model_export
from mtssl_tf.config import TrainConfig
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.training.run_checkpoints import save_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A model with the UnitMixer needs two block-3 units to mix; one without
# it has the smallest trunk (cheaper to trace and save).
MIXER_TRUNK = harness.MIXER_TRUNK
PLAIN_TRUNK = harness.TRUNK
TASKS = {
    "colorization": {"crop_size": 32, "hidden_channels": 8},
    "relative_position": {"patch_size": 16, "gap": 4, "jitter": 2,
                          "rescale_pixels": None, "embedding_units": 16,
                          "hidden_units": [16]},
}
IMAGE_SIZE = 32  # serving resize; block 3 is then 2x2 (output stride 16)
MIXER = {"l1": 1e-3, "init": "uniform"}


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow",
              CUDA_VISIBLE_DEVICES="")


def _tree_digest(path):
  """Hash of every file's relative path and bytes under ``path``."""
  digest = hashlib.sha256()
  for root, _, files in sorted(os.walk(path)):
    for name in sorted(files):
      full = os.path.join(root, name)
      digest.update(os.path.relpath(full, path).encode())
      with open(full, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


def _make_model(mixer, seed=0):
  keras.utils.set_random_seed(seed)
  model = MultiTaskModel(trunk=MIXER_TRUNK if mixer else PLAIN_TRUNK,
                         tasks=TASKS, mixer=mixer, name="mtssl")
  if mixer:
    # Unequal alphas, so each task's mix differs from the others and from
    # the last unit.
    rng = np.random.default_rng(seed)
    for alpha in model.mixer.rows.values():
      alpha.assign(rng.normal(size=alpha.shape).astype(np.float32))
  return model


def _reference(model, images, image_size=IMAGE_SIZE):
  """Features by the package's public Keras path, independent of the
  SavedModel's graph: the same resize, ``model.features`` per task."""
  x = tf.image.resize(tf.cast(images, tf.float32), [image_size, image_size],
                      method="bilinear", antialias=True)
  block3 = model.features(x).numpy()
  result = {"block3": block3, "pooled": block3.mean(axis=(1, 2))}
  if model.mixer is not None:
    for task in model.task_names:
      result[f"mixed_{task}"] = model.features(x, task=task).numpy()
  return result


def _images(rng, n, h, w):
  return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


# The version folder of each kind's export: the plain model's is exported
# here; the lasso one is ``python -m mtssl_tf.export``'s export of a training
# run (fresh_processes), with --export_version.
VERSIONS = {"plain": 1, "lasso": 3}


@pytest.fixture(scope="module")
def plain_export(tmp_path_factory):
  """The model without the UnitMixer, exported: (model, paths)."""
  model = _make_model(None)
  export_dir = str(tmp_path_factory.mktemp("export_plain"))
  paths = model_export.export_model(model, export_dir, "mtssl_demo",
                                    version=VERSIONS["plain"],
                                    image_size=IMAGE_SIZE)
  return model, paths


@pytest.fixture(scope="module")
def exports(plain_export, fresh_processes):
  """One export of a model without and one with the UnitMixer (the export
  command's, of a training run whose model is in memory here), shared by
  the tests: kind -> (model, paths, loaded SavedModel)."""
  results, work, run_model = fresh_processes
  assert results["export"]["rc"] == 0, results["export"]["output"][-3000:]
  lasso_paths = {"keras": str(work / "exports" / "mtssl_demo.keras"),
                 "saved_model": str(work / "exports" / "mtssl_demo"
                                    / str(VERSIONS["lasso"]))}
  found = {}
  for kind, (model, paths) in (("plain", plain_export),
                               ("lasso", (run_model, lasso_paths))):
    found[kind] = model, paths, tf.saved_model.load(paths["saved_model"])
  return found


@pytest.fixture(params=["plain", "lasso"])
def exported(request, exports):
  return exports[request.param]


def test_export_writes_tf_serving_layout(exported):
  model, paths, _ = exported
  version = str(VERSIONS["plain" if model.mixer is None else "lasso"])
  export_dir = os.path.dirname(paths["keras"])
  assert paths["keras"] == os.path.join(export_dir, "mtssl_demo.keras")
  assert paths["saved_model"] == os.path.join(export_dir, "mtssl_demo",
                                              version)
  assert os.path.isfile(os.path.join(paths["saved_model"], "saved_model.pb"))
  assert os.path.isdir(os.path.join(paths["saved_model"], "variables"))
  # Nothing but the two products is left in the export folders.
  assert sorted(os.listdir(export_dir)) == ["mtssl_demo", "mtssl_demo.keras"]
  assert os.listdir(os.path.join(export_dir, "mtssl_demo")) == [version]


def test_signature_inputs_and_outputs(exported):
  model, _, loaded = exported
  assert list(loaded.signatures) == ["serving_default"]
  fn = loaded.signatures["serving_default"]
  args, kwargs = fn.structured_input_signature
  assert args == ()
  assert list(kwargs) == ["images"]
  spec = kwargs["images"]
  assert spec.dtype == tf.uint8
  assert spec.shape.as_list() == [None, None, None, 3]
  c = model.trunk.output_channels
  h = IMAGE_SIZE // 16
  expected = {"pooled": [None, c], "block3": [None, h, h, c]}
  if model.mixer is not None:
    # mixed_<task> exactly when the model has the UnitMixer.
    expected.update({f"mixed_{t}": [None, h, h, c] for t in TASKS})
  outputs = fn.structured_outputs
  assert set(outputs) == set(expected)
  for name, shape in expected.items():
    assert outputs[name].dtype == tf.float32, name
    assert outputs[name].shape.as_list() == shape, name


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [(32, 32), (45, 61)])
def test_saved_model_equals_eager_keras(exported, batch, size):
  model, _, loaded = exported
  images = _images(np.random.default_rng(batch * 100 + size[1]), batch, *size)
  got = loaded.signatures["serving_default"](images=tf.constant(images))
  want = _reference(model, images)
  assert set(got) == set(want)
  for name, value in want.items():
    assert got[name].shape == value.shape, name
    np.testing.assert_allclose(got[name].numpy(), value, rtol=1e-4,
                               atol=1e-4 * np.abs(value).max(), err_msg=name)
  if model.mixer is not None:
    # The mixes are real mixes: not the last unit, not each other.
    assert not np.allclose(want["mixed_colorization"], want["block3"])
    assert not np.allclose(want["mixed_colorization"],
                           want["mixed_relative_position"])


def test_saved_model_refuses_wrong_dtype_and_shape(exported):
  _, _, loaded = exported
  # The restored tf.function checks its input spec on the Python side.
  want = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
  for bad in (tf.zeros([1, 32, 32, 3], tf.float32),
              tf.zeros([1, 32, 32, 4], tf.uint8),
              tf.zeros([32, 32, 3], tf.uint8)):
    given = tf.TensorSpec.from_tensor(bad, name="images")
    with pytest.raises(TypeError,
                       match=re.escape(f"Can not cast {given} to {want}")):
      loaded.serve(bad)
  # The signature (what TF Serving runs) checks inside the graph.
  fn = loaded.signatures["serving_default"]
  cases = [(tf.zeros([1, 32, 32, 3], tf.float32), "uint8"),
           (tf.zeros([1, 32, 32, 4], tf.uint8), r"3 \(RGB\) channels"),
           (tf.zeros([1, 32, 32, 1], tf.uint8), r"3 \(RGB\) channels"),
           (tf.zeros([0, 32, 32, 3], tf.uint8), "non-empty batch"),
           (tf.zeros([1, 0, 32, 3], tf.uint8), "non-empty batch"),
           (tf.zeros([32, 32, 3], tf.uint8), "4-dimensional")]
  for images, message in cases:
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      fn(images=images)


# What the saved_model_cli script runs (TensorFlow's console-script entry
# point), run on each export in turn: python SCRIPT ENTRY_POINT DIR...
_SAVED_MODEL_CLI = """
import importlib, sys
module, attr = sys.argv.pop(1).split(":")
main = getattr(importlib.import_module(module), attr)
for saved_model in sys.argv[1:]:
  sys.argv = ["saved_model_cli", "show", "--dir", saved_model, "--tag_set",
              "serve", "--signature_def", "serving_default"]
  print("=== " + saved_model, flush=True)
  try:
    main()
  except SystemExit as e:
    if e.code:
      raise
  sys.stdout.flush()
"""

# A fresh process that loads the lasso export's .keras file (python SCRIPT
# KERAS_FILE INPUTS OUTPUTS): ``import mtssl_tf`` registers the classes.
_RELOAD = """
import sys
import numpy as np, keras
import mtssl_tf
keras_file, inputs, outputs = sys.argv[1:]
model = keras.models.load_model(keras_file)
x = np.load(inputs)
out = {
    "colorization": model(x["colorization"], task="colorization"),
    "relative_position": model(x["relative_position"],
                               task="relative_position"),
    "features": model.features(x["features"]),
    "mixed": model.features(x["features"], task="relative_position"),
}
np.savez(outputs, **{k: keras.ops.convert_to_numpy(v) for k, v in out.items()},
         config=np.array(type(model).__name__ + " " + model.name))
"""


def _reload_inputs():
  rng = np.random.default_rng(7)
  return {
      "colorization": rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32),
      "relative_position": rng.uniform(
          0, 255, (2, 2, 16, 16, 3)).astype(np.float32),
      "features": rng.uniform(0, 255, (2, 48, 48, 3)).astype(np.float32),
  }


@pytest.fixture(scope="module")
def fresh_processes(plain_export, tmp_path_factory):
  """The commands that need a process of their own, in order, each in a
  child forked from one interpreter that imported TensorFlow
  (harness.run_forked_commands): ``python -m mtssl_tf.export`` on a training
  run with the UnitMixer (the lasso export of ``exports``) and on a folder
  without one, saved_model_cli on both exports, the lasso .keras file's
  reload. Name -> {"rc", "output"}, the work folder and the run's model."""
  work = tmp_path_factory.mktemp("fresh")
  entry_point, = importlib.metadata.entry_points(group="console_scripts",
                                                 name="saved_model_cli")
  (work / "saved_model_cli.py").write_text(_SAVED_MODEL_CLI)
  (work / "reload.py").write_text(_RELOAD)
  np.savez(work / "inputs.npz", **_reload_inputs())
  run_dir = work / "run"
  model = _write_run(run_dir, lasso=True)
  flagfile = work / "export.cfg"
  flagfile.write_text("\n".join([
      f"--run_dir={run_dir}", f"--export_dir={work / 'exports'}",
      "--model_name=mtssl_demo", f"--export_version={VERSIONS['lasso']}",
      f"--serving_image_size={IMAGE_SIZE}"]) + "\n")
  (work / "missing").mkdir()
  lasso_export = work / "exports" / "mtssl_demo"
  commands = {
      "export": ["-m", "mtssl_tf.export", f"--flagfile={flagfile}"],
      "missing": ["-m", "mtssl_tf.export", f"--run_dir={work / 'missing'}",
                  "--model_name=m"],
      "cli": [str(work / "saved_model_cli.py"), entry_point.value,
              plain_export[1]["saved_model"],
              str(lasso_export / str(VERSIONS["lasso"]))],
      "reload": [str(work / "reload.py"), str(lasso_export) + ".keras",
                 str(work / "inputs.npz"), str(work / "outputs.npz")],
  }
  results = harness.run_forked_commands(sys.executable, commands.values(),
                                        cwd=REPO, env=_env(), timeout=900)
  return dict(zip(commands, results)), work, model


@pytest.fixture(scope="module")
def cli_listings(exports, fresh_processes):
  """saved_model_cli's listing of each export's signature, by kind."""
  result = fresh_processes[0]["cli"]
  assert result["rc"] == 0, result["output"][-3000:]
  parts = re.split(r"^=== (.*)$", result["output"], flags=re.M)[1:]
  listed = dict(zip(parts[::2], parts[1::2]))
  assert sorted(listed) == sorted(exports[k][1]["saved_model"]
                                  for k in exports)
  return {k: listed[exports[k][1]["saved_model"]] for k in exports}


@pytest.mark.parametrize("kind", ["plain", "lasso"])
def test_saved_model_cli_lists_the_signature(exports, cli_listings, kind):
  model, _, _ = exports[kind]
  out = cli_listings[kind]
  listed = {(io, name): (dtype, shape) for io, name, dtype, shape in
            re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+"
                       r"dtype: (\w+)\s+shape: \(([^)]*)\)", out)}
  c = model.trunk.output_channels
  expected = {("inputs", "images"): ("DT_UINT8", "-1, -1, -1, 3"),
              ("outputs", "pooled"): ("DT_FLOAT", f"-1, {c}"),
              ("outputs", "block3"): ("DT_FLOAT", f"-1, 2, 2, {c}")}
  if model.mixer is not None:
    expected.update({("outputs", f"mixed_{t}"): ("DT_FLOAT", f"-1, 2, 2, {c}")
                     for t in TASKS})
  assert listed == expected, out
  assert "Method name is: tensorflow/serving/predict" in out


def test_keras_file_reloads_in_a_fresh_process(exports, fresh_processes):
  model, _, _ = exports["lasso"]
  results, work, _ = fresh_processes
  assert results["reload"]["rc"] == 0, results["reload"]["output"][-3000:]
  got = np.load(work / "outputs.npz")
  assert str(got["config"]) == "MultiTaskModel mtssl"
  inputs = _reload_inputs()
  want = {
      "colorization": model(inputs["colorization"], task="colorization"),
      "relative_position": model(inputs["relative_position"],
                                 task="relative_position"),
      "features": model.features(inputs["features"]),
      "mixed": model.features(inputs["features"], task="relative_position"),
  }
  for name, value in want.items():
    np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-5,
                               atol=1e-5, err_msg=name)


class _Interrupted(KeyboardInterrupt):
  pass


def _interrupted_save(obj, export_dir, signatures=None, **kwargs):
  """tf.saved_model.save stopped half way: part of a SavedModel's files
  are written (the variables, no saved_model.pb), then Ctrl-C."""
  del obj, signatures, kwargs
  os.makedirs(os.path.join(export_dir, "variables"), exist_ok=True)
  with open(os.path.join(export_dir, "variables", "variables.index"),
            "wb") as f:
    f.write(b"half written")
  raise _Interrupted()


def _partial_save(obj, export_dir, signatures=None, **kwargs):
  """tf.saved_model.save that writes a stand-in file: enough for the export
  to go on to its renames, which these tests make fail."""
  del obj, signatures, kwargs
  with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
    f.write(b"new version")


@pytest.fixture
def good_export(exports, tmp_path):
  """A copy of the shared plain export in a folder of its own (its version
  1 folder named ``m``): the previous export that a failed one must keep."""
  _, paths, _ = exports["plain"]
  export_dir = tmp_path / "exports"
  os.makedirs(export_dir / "m")
  shutil.copy(paths["keras"], export_dir / "m.keras")
  shutil.copytree(paths["saved_model"], export_dir / "m" / "1")
  return str(export_dir), {"keras": str(export_dir / "m.keras"),
                           "saved_model": str(export_dir / "m" / "1")}


def test_interrupted_export_leaves_no_half_model(good_export, monkeypatch):
  export_dir, good = good_export
  all_digest = _tree_digest(export_dir)
  saved_digest = _tree_digest(good["saved_model"])
  with open(good["keras"], "rb") as f:
    keras_bytes = hashlib.sha256(f.read()).hexdigest()
  other = _make_model(None, seed=2)
  monkeypatch.setattr(tf.saved_model, "save", _interrupted_save)
  # A new version: no version folder appears.
  with pytest.raises(_Interrupted):
    model_export.export_model(other, export_dir, "m", version=2,
                              image_size=IMAGE_SIZE)
  assert sorted(os.listdir(os.path.join(export_dir, "m"))) == ["1"]
  # The same version: the good export survives byte for byte.
  with pytest.raises(_Interrupted):
    model_export.export_model(other, export_dir, "m", version=1,
                              image_size=IMAGE_SIZE)
  assert sorted(os.listdir(export_dir)) == ["m", "m.keras"]
  assert sorted(os.listdir(os.path.join(export_dir, "m"))) == ["1"]
  assert _tree_digest(good["saved_model"]) == saved_digest
  with open(good["keras"], "rb") as f:
    assert hashlib.sha256(f.read()).hexdigest() == keras_bytes
  # No temporary file or folder is left anywhere either.
  assert _tree_digest(export_dir) == all_digest
  monkeypatch.undo()
  loaded = tf.saved_model.load(good["saved_model"])
  assert "pooled" in loaded.signatures["serving_default"](
      images=tf.zeros([1, 32, 32, 3], tf.uint8))


def test_failed_rename_puts_the_old_version_back(good_export, monkeypatch):
  export_dir, good = good_export
  saved_digest = _tree_digest(good["saved_model"])
  real_rename = os.rename
  renamed = []

  def rename(src, dst):
    if os.path.basename(src).startswith(".tmp_"):
      raise OSError("disk pulled")
    renamed.append((src, dst))
    real_rename(src, dst)

  monkeypatch.setattr(tf.saved_model, "save", _partial_save)
  monkeypatch.setattr(os, "rename", rename)
  with pytest.raises(OSError, match="disk pulled"):
    model_export.export_model(_make_model(None, seed=2), export_dir, "m",
                              version=1, image_size=IMAGE_SIZE)
  # The old version was moved aside, then put back.
  assert renamed == [(good["saved_model"], good["saved_model"] + ".old"),
                     (good["saved_model"] + ".old", good["saved_model"])]
  assert sorted(os.listdir(os.path.join(export_dir, "m"))) == ["1"]
  assert _tree_digest(good["saved_model"]) == saved_digest


def test_export_rejects_bad_names(tmp_path):
  model = _make_model(None)
  with pytest.raises(ValueError, match="version"):
    model_export.export_model(model, str(tmp_path), "m", version=0)
  with pytest.raises(ValueError, match="model_name"):
    model_export.export_model(model, str(tmp_path), "a/b")
  assert os.listdir(tmp_path) == []


def _write_run(run_dir, lasso):
  config = TrainConfig(run_dir=str(run_dir), tasks=tuple(TASKS),
                       task_params=TASKS,
                       trunk=TrunkConfig(**(MIXER_TRUNK if lasso
                                            else PLAIN_TRUNK)),
                       lasso=lasso, lasso_init="uniform")
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    f.write(config.to_json())
  model = _make_model(MIXER if lasso else None, seed=5)
  # The trainer's checkpoint layout (named: trunk, heads and mixer rows).
  save_model(model, os.path.join(run_dir, "checkpoints", "ckpt"))
  return model


def test_export_command_exports_a_training_run(exports, fresh_processes):
  results, work, model = fresh_processes
  result = results["export"]
  assert result["rc"] == 0, result["output"][-3000:]
  saved = work / "exports" / "mtssl_demo" / str(VERSIONS["lasso"])
  assert f"wrote {saved}" in result["output"]
  # The exported weights are the checkpoint's, not a fresh initialisation
  # (the .keras file's: test_keras_file_reloads_in_a_fresh_process).
  _, paths, loaded = exports["lasso"]
  assert paths["saved_model"] == str(saved)
  images = _images(np.random.default_rng(0), 2, 40, 40)
  got = loaded.signatures["serving_default"](images=tf.constant(images))
  want = _reference(model, images)
  assert set(got) == set(want)
  for name, value in want.items():
    np.testing.assert_allclose(got[name].numpy(), value, rtol=1e-4,
                               atol=1e-4 * np.abs(value).max(), err_msg=name)


def test_export_command_reports_a_missing_run(fresh_processes):
  results, work, _ = fresh_processes
  assert results["missing"]["rc"] == 2, results["missing"]["output"][-3000:]
  assert "config.json does not exist" in results["missing"]["output"]
  assert os.listdir(work / "missing") == []


def test_load_run_model_restores_the_checkpoint(tmp_path):
  model = _write_run(tmp_path, lasso=False)
  restored = model_export.load_run_model(str(tmp_path))
  assert restored.mixer is None
  assert restored.task_names == list(TASKS)
  for a, b in zip(model.weights, restored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["trunk"]["depth"] == PLAIN_TRUNK["depth"]
