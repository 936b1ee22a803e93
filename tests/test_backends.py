"""The models are Keras 3 code that runs under any Keras backend.

* On the source (``ast``): the trunk, the UnitMixer, the multi-task model and
  the tasks' heads and inference paths call ``keras`` / ``keras.ops``, never
  TensorFlow (data ops, losses, the trainer, export and serving do).
* Under JAX and without TensorFlow: one subprocess with
  ``KERAS_BACKEND=jax`` (tests/backend_check.py) in a virtual environment
  holding only keras, jax, NumPy, h5py and what they need (no TensorFlow):
  the package imports; a plain zoo preset holding every task's head and the
  lasso preset load, and their features of a real photo equal TensorFlow's
  (every other preset has the plain one's architecture: checked on the zoo's
  metadata); ``Trunk.from_preset`` works; a ``.keras`` file
  exported by TensorFlow loads with ``keras.models.load_model``; a
  classifier on a preset's trunk fine-tunes with ``fit``, saves and
  reloads; a TensorFlow-only function says what to install.

``jax[cpu]`` is in the test extra (setup.cfg) and requirements.txt.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from packaging.requirements import Requirement

import backend_check
from mtssl_tf import model_zoo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_SCRIPT = os.path.join(REPO, "tests", "backend_check.py")

# Features under another backend equal TensorFlow's to this fraction of
# their largest magnitude: float32 convolutions summed in another order
# (XLA's CPU kernels vs TensorFlow's oneDNN/Eigen) differ by ~1e-6 relative.
RELATIVE_TOLERANCE = 1e-4

# -- the source uses keras and keras.ops only ----------------------------------

# Whole modules of model code.
MODEL_MODULES = ("mtssl_tf/models/trunk.py", "mtssl_tf/models/inputs.py",
                 "mtssl_tf/models/multitask.py", "mtssl_tf/models/build.py",
                 "mtssl_tf/layers/unit_mixer.py", "mtssl_tf/utils/layers.py")
# In the task modules (which also hold TensorFlow data ops and losses): the
# heads, and what runs at inference: how a task's inputs reach the trunk,
# the head's construction, and the colorization decode.
TASK_MODULES = {
    "mtssl_tf/tasks/relative_position.py": (
        "RelativePositionHead", "RelativePosition.trunk_images",
        "RelativePosition.build_head"),
    "mtssl_tf/tasks/colorization.py": (
        "ColorizationHead", "Colorization.trunk_images",
        "Colorization.build_head", "Colorization.decode",
        "decode_annealed_mean"),
    "mtssl_tf/tasks/exemplar.py": (
        "ExemplarHead", "Exemplar.trunk_images", "Exemplar.build_head"),
    "mtssl_tf/tasks/motion_segmentation.py": (
        "MotionSegmentationHead", "MotionSegmentation.trunk_images",
        "MotionSegmentation.build_head"),
    "mtssl_tf/tasks/task.py": ("merge_leading_axes",),
}


def _tensorflow_uses(node: ast.AST):
  """(line, text) of every use of TensorFlow inside ``node``."""
  for sub in ast.walk(node):
    if isinstance(sub, ast.Name) and sub.id in ("tf", "tensorflow"):
      yield sub.lineno, "tf"
    elif isinstance(sub, ast.Import):
      for alias in sub.names:
        if alias.name.split(".")[0] in ("tensorflow", "tf_keras"):
          yield sub.lineno, f"import {alias.name}"
    elif isinstance(sub, ast.ImportFrom) and sub.module and (
        sub.module.split(".")[0] in ("tensorflow", "tf_keras")
        or sub.module == "mtssl_tf.utils.lazy_tf"):
      yield sub.lineno, f"from {sub.module} import ..."


def _definitions(tree: ast.Module):
  """Qualified name -> node of the module's classes, functions, methods."""
  found = {}
  for node in tree.body:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
      found[node.name] = node
    if isinstance(node, ast.ClassDef):
      for item in node.body:
        if isinstance(item, ast.FunctionDef):
          found[f"{node.name}.{item.name}"] = item
  return found


def _parse(path):
  with open(os.path.join(REPO, path), encoding="utf-8") as f:
    return ast.parse(f.read(), path)


@pytest.mark.parametrize("path", MODEL_MODULES)
def test_model_modules_call_keras_not_tensorflow(path):
  uses = list(_tensorflow_uses(_parse(path)))
  assert not uses, f"{path} uses TensorFlow at lines {uses}"


@pytest.mark.parametrize("path", sorted(TASK_MODULES))
def test_heads_and_inference_paths_call_keras_not_tensorflow(path):
  definitions = _definitions(_parse(path))
  for name in TASK_MODULES[path]:
    assert name in definitions, f"{path} defines no {name}"
    uses = list(_tensorflow_uses(definitions[name]))
    assert not uses, f"{path}: {name} uses TensorFlow at lines {uses}"


def test_the_source_check_finds_tensorflow():
  tree = ast.parse("import keras\nfrom mtssl_tf.utils.lazy_tf import tf\n"
                   "class Head:\n  def call(self, x):\n"
                   "    return keras.ops.relu(tf.nn.relu(x))\n")
  assert list(_tensorflow_uses(_definitions(tree)["Head.call"])) == [(5, "tf")]
  assert [text for _, text in _tensorflow_uses(tree)] == [
      "from mtssl_tf.utils.lazy_tf import ...", "tf"]


# -- TensorFlow's side -----------------------------------------------------------


def _require_jax():
  assert importlib.util.find_spec("jax") is not None, (
      "jax is not installed; it is part of the test extra: "
      "pip install -e '.[test]' (or pip install -r requirements.txt)")


def _relative_error(got, reference):
  return float(np.max(np.abs(got - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def tensorflow_side(tmp_path_factory):
  """A work folder with the photo and an exported preset, and TensorFlow's
  features (the same functions of backend_check, run in this process)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  work = tmp_path_factory.mktemp("backends")
  # A real photo at 64 px: block 3 (output stride 16) is 4x4, enough for
  # the features of two backends to show any difference of weights or ops.
  photo = skimage.data.astronaut()[None, ::8, ::8]
  np.save(work / "photo.npy", photo)
  model_zoo.export_keras("rp_col", str(work / "exported.keras"))
  reference, facts = {}, {}
  backend_check.presets(photo, reference, facts)
  backend_check.from_preset(photo, reference, facts)
  backend_check.load_model(str(work), photo, reference, facts)
  return work, reference


def _run_check(python, work, checks, env=None):
  # XLA compiles without its LLVM optimization passes: the child's time is
  # mostly compiling (each initializer's and eager op's shape, the train
  # step), and the compiled code computes the same float32 operations.
  proc = subprocess.run(
      [python, CHECK_SCRIPT, str(work)] + list(checks),
      env=dict(env or os.environ, KERAS_BACKEND="jax",
               TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS="--xla_backend_optimization_level=0"),
      capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-6000:]
  facts = json.loads(proc.stdout.strip().splitlines()[-1])
  assert facts["backend"] == "jax"
  with np.load(work / "jax.npz") as data:
    return facts, dict(data)


def _assert_matches_tensorflow(features, reference, keys):
  for key in keys:
    error = _relative_error(features[key], reference[key])
    assert error <= RELATIVE_TOLERANCE, (key, error)


def test_every_preset_has_a_checked_presets_architecture():
  """The features of a preset depend on its trunk and UnitMixer (the heads
  are not part of them): every preset's are those of a preset whose
  features the JAX check compares with TensorFlow's."""
  from mtssl_tf.model_zoo.store import load_metadata  # pylint: disable=g-import-not-at-top
  checked = [load_metadata(name)["model"]
             for name in backend_check.CHECKED_PRESETS]
  plain, lasso = checked
  assert plain["mixer"] is None and lasso["mixer"] is not None
  for name in model_zoo.list_presets():
    model = load_metadata(name)["model"]
    assert model["trunk"] == plain["trunk"], name
    if model["mixer"] is None:
      assert set(model["tasks"]) <= set(plain["tasks"]), name
    else:
      assert (model["mixer"], sorted(model["tasks"])) == (
          lasso["mixer"], sorted(lasso["tasks"])), name


# -- under JAX, without TensorFlow -----------------------------------------------

# What a JAX user installs to use the zoo.
NO_TENSORFLOW_STACK = ("keras", "jax", "jaxlib", "numpy", "h5py")


def _distribution_closure(names):
  """The installed distributions that ``names`` need, recursively
  (requirements of extras left out)."""
  found, todo = {}, list(names)
  while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in found:
      continue
    dist = importlib.metadata.distribution(name)
    found[name] = dist
    for text in dist.requires or ():
      requirement = Requirement(text)
      if requirement.marker is None or requirement.marker.evaluate(
          {"extra": ""}):
        todo.append(requirement.name)
  return found


def _no_tensorflow_venv(root) -> str:
  """A virtual environment whose site-packages links the installed
  distributions of NO_TENSORFLOW_STACK (and this checkout): no TensorFlow,
  nothing downloaded, nothing copied."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)],
                 check=True)
  site = os.path.join(root, "lib", f"python{sys.version_info.major}."
                      f"{sys.version_info.minor}", "site-packages")
  for dist in _distribution_closure(NO_TENSORFLOW_STACK).values():
    base = dist.locate_file("")
    for top in sorted({f.parts[0] for f in dist.files or ()
                       if f.parts[0] != ".."}):
      target = os.path.join(site, top)
      if not os.path.exists(target):
        os.symlink(os.path.join(base, top), target)
  with open(os.path.join(site, "mtssl_tf_checkout.pth"), "w") as f:
    f.write(REPO + "\n")
  return os.path.join(root, "bin", "python")


@pytest.fixture(scope="module")
def jax_side(tensorflow_side, tmp_path_factory):
  """Every check of backend_check, run once under JAX in the environment
  without TensorFlow: (facts, features)."""
  _require_jax()
  work, _ = tensorflow_side
  python = _no_tensorflow_venv(tmp_path_factory.mktemp("no_tf") / "venv")
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  return _run_check(python, work, ["no_tensorflow", "presets", "from_preset",
                                   "load_model", "fine_tune"], env)


@pytest.mark.slow
def test_zoo_loads_extracts_and_fine_tunes_under_jax(tensorflow_side,
                                                     jax_side):
  _, reference = tensorflow_side
  facts, features = jax_side
  assert facts["presets"] == model_zoo.list_presets()
  assert sorted(features) == sorted(
      list(reference) + ["fine_tune/logits", "fine_tune/reloaded"])
  _assert_matches_tensorflow(features, reference, reference)
  assert facts["from_preset_class"] == "Trunk"
  assert facts["load_model_class"] == "MultiTaskModel"
  # Fine-tuning: the loss on the training crops falls and every trunk
  # kernel moves; the saved classifier reloads with the same outputs.
  loss_before, loss_after = facts["losses"]
  assert loss_after < loss_before, facts["losses"]
  assert facts["trunk_kernels_changed"] == facts["trunk_kernels"] > 0
  np.testing.assert_allclose(features["fine_tune/reloaded"],
                             features["fine_tune/logits"], rtol=1e-5,
                             atol=1e-5)


def test_zoo_without_tensorflow(tensorflow_side, jax_side):
  _, reference = tensorflow_side
  facts, features = jax_side
  assert facts["tensorflow_found"] is False
  for key in ("tensorflow_error", "data_error"):
    assert re.search(r"needs TensorFlow, which is not installed here: pip "
                     r"install tensorflow", facts[key]), facts
  assert facts["data_error"].startswith("mtssl_tf.data.make_source ")
  _assert_matches_tensorflow(features, reference, [
      "from_preset/units", "from_preset/block3", "exported/trunk"])
