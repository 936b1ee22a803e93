"""The model zoo from an installed wheel, inside a host absl program.

One subprocess, run from a folder outside the repository with only the
installed wheel on its path, is an absl program that defines its OWN
``--seed`` and ``--steps`` flags, imports ``mtssl_tf`` and
``mtssl_tf.model_zoo``, lists the presets, builds one at tiny scale in its
own process (no ``configs/`` folder in reach but the package's), saves it as
``.keras`` and loads it back. Two tests read its report: the install and
zoo round trip, and the absl host's flags left alone.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOST_PROGRAM = textwrap.dedent('''
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
      import keras
      import mtssl_tf
      from mtssl_tf import model_zoo
      out = {"file": mtssl_tf.__file__, "cwd": os.getcwd()}
      out["presets"] = model_zoo.list_presets()
      preset = model_zoo.get_preset("rp")
      config = preset.config("tiny", run_dir="unused")
      out["config_seed_steps"] = [config.seed, config.steps]
      weights = os.path.join(os.getcwd(), "weights")
      meta = model_zoo.build_preset("rp", tiny=True, steps=2,
                                    weights_dir=weights,
                                    overrides={"strategy": "one_device"},
                                    log=lambda s: None)
      out["meta"] = {k: meta[k] for k in ("steps", "seed", "scale", "sha256",
                                          "params", "final_losses")}
      out["weights_files"] = sorted(os.listdir(weights))
      model = model_zoo.load("rp", weights_dir=weights)
      path = os.path.join(os.getcwd(), "rp_tiny.keras")
      model.save(path)
      loaded = keras.models.load_model(path)
      images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
      images = images.astype("float32")
      out["max_abs_diff"] = float(np.max(np.abs(
          loaded.features(images).numpy() - model.features(images).numpy())))
      out["loaded_depth"] = loaded.trunk.config.depth
      out["host_flags"] = [FLAGS.seed, FLAGS.steps]
      # No library module defines absl flags: none of train's are here.
      out["train_flags_defined"] = sorted(
          n for n in ("depth", "task_param", "lasso", "batch_size")
          if n in FLAGS)
      out["cli_imported"] = "mtssl_tf.cli.flags" in sys.modules
      print("REPORT " + json.dumps(out))


    if __name__ == "__main__":
      app.run(main)
''')


def _copy_sources(dest):
  """The files a wheel is built from, so that the build's scratch folders
  (build/, *.egg-info) land in ``dest``, not in the checkout."""
  for name in ("setup.cfg", "pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), dest)
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  # symlinks=True keeps mtssl_tf/configs a link to ../configs, as in the
  # checkout: the wheel must hold the real files.
  shutil.copytree(os.path.join(REPO, "mtssl_tf"),
                  os.path.join(dest, "mtssl_tf"), symlinks=True,
                  ignore=ignore)
  shutil.copytree(os.path.join(REPO, "configs"), os.path.join(dest, "configs"))


@pytest.fixture(scope="module")
def host_report(tmp_path_factory):
  base = tmp_path_factory.mktemp("wheel")
  src, dist, site, work = (base / n for n in ("src", "dist", "site", "work"))
  for folder in (src, dist, work):
    folder.mkdir()
  _copy_sources(str(src))
  env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
             TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("PYTHONPATH", None)
  pip = [sys.executable, "-m", "pip"]
  out = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation",
                              "-w", str(dist), str(src)],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  wheels = os.listdir(dist)
  assert len(wheels) == 1 and wheels[0].endswith(".whl"), wheels
  out = subprocess.run(pip + ["install", "--no-deps", "--target", str(site),
                              str(dist / wheels[0])],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  configs = site / "mtssl_tf" / "configs"
  assert configs.is_dir() and not configs.is_symlink()
  assert (configs / "base_cpu.cfg").is_file()
  (work / "host.py").write_text(HOST_PROGRAM)
  out = subprocess.run(
      [sys.executable, "host.py", "--seed=123", "--steps=456"], cwd=str(work),
      capture_output=True, text=True, timeout=600,
      env=dict(env, PYTHONPATH=str(site)))
  assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
  line = [l for l in out.stdout.splitlines() if l.startswith("REPORT ")]
  assert line, (out.stdout + out.stderr)[-4000:]
  return json.loads(line[-1][len("REPORT "):]), str(site), str(work)


@pytest.mark.slow
def test_wheel_outside_the_repo_lists_builds_saves_and_loads(host_report):
  report, site, work = host_report
  # The installed copy ran, from a folder outside the checkout.
  assert report["file"].startswith(site + os.sep)
  assert not report["file"].startswith(REPO + os.sep)
  assert not os.path.realpath(report["cwd"]).startswith(REPO + os.sep)
  assert report["cwd"] == work
  assert report["presets"][:3] == ["rp", "rp_h", "rp_col"]
  assert len(report["presets"]) == 9
  meta = report["meta"]
  assert (meta["scale"], meta["steps"], meta["seed"]) == ("tiny", 2, 0)
  assert report["weights_files"] == ["rp.json", "rp.weights.h5"]
  assert meta["final_losses"]["relative_position"] > 0
  assert report["loaded_depth"] == 14
  assert report["max_abs_diff"] < 1e-5


@pytest.mark.slow
def test_absl_host_keeps_its_own_seed_and_steps_flags(host_report):
  report, _, _ = host_report
  # No DuplicateFlagError (the run finished), the host's values are intact
  # and the preset took its recipe's values, not the host's.
  assert report["host_flags"] == [123, 456]
  # (The recipe's values as this process, with no host flags, parses them:
  # the demo flagfile's seed 0 and steps.)
  from mtssl_tf import model_zoo
  recipe = model_zoo.get_preset("rp").config("tiny", run_dir="unused")
  assert report["config_seed_steps"] == [recipe.seed, recipe.steps]
  assert recipe.seed == 0 and recipe.steps not in (123, 456)
  assert (report["meta"]["seed"], report["meta"]["steps"]) == (0, 2)
  assert report["train_flags_defined"] == []
  assert not report["cli_imported"]
