"""The wheel is the library: built from a copy of the checkout, it holds the
package and its configs, no weights and no maintainer tooling; installed
into a fresh virtual environment outside the checkout (the pinned
dependencies reached through a ``.pth`` line, the checkout not at all), it
runs what the README tells a pip user: list the presets, load one from a
path and from a ``file://`` URL with its sha256, extract features, train the
smoke recipe for a few steps, export the run and evaluate it with the demo
protocol.
"""
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import harness  # run_forked_commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the package imports, directly or through an extra the README names
# (samples: the offline photos the smoke recipe trains on and the digits
# the demo protocol's probe reads).
DEPENDENCIES = ("tensorflow", "keras", "h5py", "tensorflow_datasets", "cv2",
                "absl", "matplotlib", "numpy", "skimage", "sklearn",
                "skvideo")
MAX_WHEEL_BYTES = 2 * 1024 * 1024
PRESET = "rp"

# An absl program of the pip user's own (its own --seed and --steps flags):
# the zoo from the installed package, weights by path and by file:// URL.
USER_PROGRAM = textwrap.dedent('''
    import json
    import os
    import sys

    from absl import app
    from absl import flags

    flags.DEFINE_integer("seed", 7, "The host program's own seed.")
    flags.DEFINE_integer("steps", 99, "The host program's own step count.")
    FLAGS = flags.FLAGS


    def main(argv):
      import numpy as np
      import mtssl_tf
      from mtssl_tf import model_zoo
      zoo, name, sha256 = argv[1], argv[2], argv[3]
      out = {"file": mtssl_tf.__file__, "sys_path": sys.path,
             "presets": model_zoo.list_presets()}
      try:
        model_zoo.load(name)
      except FileNotFoundError as e:
        out["no_folder_error"] = str(e)
      weights = os.path.join(zoo, name + ".weights.h5")
      by_url = model_zoo.load(name, weights="file://" + weights,
                              sha256=sha256)
      by_folder = mtssl_tf.Trunk.from_preset(name, weights_dir=zoo)
      images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3))
      last = by_folder.unit_names[-1]
      a = by_url.trunk(images.astype("float32"))[last].numpy()
      b = by_folder(images.astype("float32"))[last].numpy()
      np.save("features.npy", np.stack([a, b]))
      out["cached"] = sorted(os.listdir(os.environ["MTSSL_TF_CACHE_DIR"]))
      out["host_flags"] = [FLAGS.seed, FLAGS.steps]
      out["train_flags_defined"] = sorted(
          n for n in ("depth", "task_param", "lasso", "batch_size")
          if n in FLAGS)
      print("REPORT " + json.dumps(out))


    if __name__ == "__main__":
      app.run(main)
''')


def _copy_checkout(dest):
  """The files a wheel is built from, with tools/ and model_zoo/ beside the
  package as in the checkout (so that a packaging rule that picked them up
  would show), and the build's scratch folders kept out of the checkout."""
  for name in ("setup.cfg", "pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), dest)
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  # symlinks=True keeps mtssl_tf/configs a link to ../configs, as in the
  # checkout: the wheel must hold the real files.
  for folder in ("mtssl_tf", "configs", "tools", "model_zoo"):
    shutil.copytree(os.path.join(REPO, folder), os.path.join(dest, folder),
                    symlinks=True, ignore=ignore)


def _env(**extra):
  env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
             TF_CPP_MIN_LOG_LEVEL="2")
  for name in ("PYTHONPATH", "MTSSL_TF_ZOO_DIR", "MTSSL_TF_CACHE_DIR"):
    env.pop(name, None)
  return dict(env, **extra)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  base = tmp_path_factory.mktemp("wheel")
  src, dist = base / "src", base / "dist"
  src.mkdir()
  _copy_checkout(str(src))
  out = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps",
       "--no-build-isolation", "-w", str(dist), str(src)],
      capture_output=True, text=True, env=_env(), timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  wheels = os.listdir(dist)
  assert len(wheels) == 1 and wheels[0].endswith(".whl"), wheels
  return str(dist / wheels[0])


def test_wheel_holds_the_library_and_no_weights_or_tools(wheel):
  assert os.path.getsize(wheel) < MAX_WHEEL_BYTES
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
  tops = {n.split("/")[0] for n in names}
  assert tops == {"mtssl_tf", "mtssl_tf-0.1.0.dist-info"}, tops
  heavy = [n for n in names if n.endswith((".h5", ".keras"))]
  assert not heavy, heavy
  configs = {n.rsplit("/", 1)[1] for n in names
             if n.startswith("mtssl_tf/configs/")}
  assert configs == set(os.listdir(os.path.join(REPO, "configs")))
  assert "mtssl_tf/model_zoo/presets.py" in names
  resources = os.listdir(os.path.join(REPO, "mtssl_tf", "resources"))
  assert resources and all(f"mtssl_tf/resources/{r}" in names
                           for r in resources if not r.endswith(".py"))


def _dependency_folders():
  """The folders the pinned dependencies are installed in (found without
  importing them); none of them holds the checkout's package (a checkout's
  own .venv may hold them: its editable install is a .pth hook, which a
  plain folder line does not run)."""
  folders = set()
  for name in DEPENDENCIES:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, name
    folders.add(os.path.dirname(os.path.dirname(spec.origin)))
  assert not any(os.path.isdir(os.path.join(f, "mtssl_tf")) for f in folders)
  return sorted(folders)


@pytest.fixture(scope="module")
def pip_user(wheel, tmp_path_factory):
  """A fresh venv with the wheel installed and a work folder beside it."""
  base = tmp_path_factory.mktemp("user")
  venv, work = base / "venv", base / "work"
  work.mkdir()
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                 check=True, timeout=120)
  python = str(venv / "bin" / "python")
  site = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
      capture_output=True, text=True, check=True).stdout.strip()
  # Plain folder lines: their own .pth files (an editable install of the
  # checkout among them) are not processed.
  with open(os.path.join(site, "dependencies.pth"), "w") as f:
    f.write("\n".join(_dependency_folders()) + "\n")
  out = subprocess.run(
      [sys.executable, "-m", "pip", "--python", python, "install",
       "--no-deps", "--no-index", wheel],
      capture_output=True, text=True, env=_env(), timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  zoo = work / "zoo"
  zoo.mkdir()
  for ext in (".weights.h5", ".json"):
    shutil.copy(os.path.join(REPO, "model_zoo", PRESET + ext), zoo)
  env = _env(MTSSL_TF_CACHE_DIR=str(base / "cache"),
             KERAS_HOME=str(base / "keras"))
  return python, site, str(work), env


@pytest.fixture(scope="module")
def pip_runs(pip_user):
  """What the README tells a pip user to run, in order: list the presets,
  the user's own program (load from a path and a URL, extract features),
  train the smoke recipe, export the run, evaluate it. Name -> stdout and
  stderr of the command; its sha256 and run folder."""
  python, site, work, env = pip_user
  with open(os.path.join(work, "zoo", PRESET + ".json")) as f:
    sha256 = json.load(f)["sha256"]
  with open(os.path.join(work, "user.py"), "w") as f:
    f.write(USER_PROGRAM)
  smoke = os.path.join(site, "mtssl_tf", "configs", "smoke.cfg")
  run_dir = os.path.join(work, "runs", "smoke")
  commands = {
      "list": ["-m", "mtssl_tf.model_zoo", "list"],
      "user": ["user.py", os.path.join(work, "zoo"), PRESET, sha256,
               "--seed=123", "--steps=456"],
      "train": ["-m", "mtssl_tf.train", f"--flagfile={smoke}",
                f"--run_dir={run_dir}", "--steps=2"],
      "export": ["-m", "mtssl_tf.export", f"--run_dir={run_dir}",
                 f"--export_dir={os.path.join(work, 'exports')}"],
      "evaluate": ["-m", "mtssl_tf.evaluate", f"--checkpoint={run_dir}",
                   "--evaluators=linear_probe",
                   "--eval_param=linear_probe.image_size=32",
                   "--eval_param=linear_probe.steps=5",
                   f"--output={os.path.join(work, 'eval', 'results.json')}"],
  }
  # Each command in a child forked from one interpreter of the user's venv
  # that has imported TensorFlow and Keras: a fresh process for its
  # command, with its own absl flags, in the work folder.
  results = dict(zip(commands, harness.run_forked_commands(
      python, commands.values(), cwd=work, env=env, timeout=1200)))
  for name, result in results.items():
    assert result["rc"] == 0, (name, result["output"][-4000:])
  return {name: r["output"] for name, r in results.items()}, sha256, run_dir


@pytest.mark.slow
def test_pip_user_lists_and_loads_presets_from_a_path_and_a_url(pip_user,
                                                                pip_runs):
  _, site, work, _ = pip_user
  outputs, sha256, _ = pip_runs
  listed = outputs["list"]
  assert "no zoo folder here" in listed
  rows = [line.split()[0] for line in listed.splitlines()[1:10]]
  assert rows[:3] == ["rp", "rp_h", "rp_col"] and len(rows) == 9
  weights = os.path.join(work, "zoo", PRESET + ".weights.h5")
  with open(weights, "rb") as f:
    assert hashlib.sha256(f.read()).hexdigest() == sha256
  report = json.loads([line for line in outputs["user"].splitlines()
                       if line.startswith("REPORT ")][-1][len("REPORT "):])
  # The installed copy ran, and nothing of the checkout was importable.
  assert report["file"].startswith(site + os.sep)
  assert REPO not in report["sys_path"]
  assert not any(os.path.isdir(os.path.join(p, "mtssl_tf"))
                 for p in report["sys_path"] if p != site)
  assert report["presets"][:3] == ["rp", "rp_h", "rp_col"]
  # Without a zoo folder, load says where weights come from.
  message = report["no_folder_error"]
  assert "ships no weights" in message and "weights_dir" in message
  assert "sha256" in message
  # The file:// URL went through the sha256-checked cache.
  assert report["cached"] == [f"{PRESET}-{sha256[:12]}.weights.h5"]
  by_url, by_folder = np.load(os.path.join(work, "features.npy"))
  assert by_url.shape[-1] == 512 and np.abs(by_folder).max() > 0
  np.testing.assert_allclose(by_url, by_folder, rtol=1e-5,
                             atol=1e-5 * np.abs(by_folder).max())
  # The library defines no absl flags of its own in the user's program.
  assert report["host_flags"] == [123, 456]
  assert report["train_flags_defined"] == []


@pytest.mark.slow
def test_pip_user_trains_exports_and_evaluates(pip_user, pip_runs):
  _, _, work, _ = pip_user
  outputs, _, run_dir = pip_runs
  assert os.path.exists(os.path.join(run_dir, "config.json")), outputs["train"]
  with open(os.path.join(run_dir, "config.json")) as f:
    assert json.load(f)["steps"] == 2
  exports = os.path.join(work, "exports")
  assert os.path.isfile(os.path.join(exports, "smoke.keras")), outputs["export"]
  assert os.path.isfile(os.path.join(exports, "smoke", "1",
                                     "saved_model.pb")), outputs["export"]
  with open(os.path.join(work, "eval", "results.json")) as f:
    metrics = json.dumps(json.load(f))
  assert "top1" in metrics
