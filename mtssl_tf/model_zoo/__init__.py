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

Weights may also live elsewhere, fetched by URL with
``keras.utils.get_file``, sha256-checked and cached
(:mod:`mtssl_tf.model_zoo.download`): ``load(name, weights=URL,
sha256=HEX)``, a registry entry's ``weights_url`` / ``weights_sha256``, or
a *registered* preset: ``python -m mtssl_tf.model_zoo register NAME
--weights=URL_OR_PATH`` records a ``.keras`` file (for example the
authors' checkpoint converted by ``python -m mtssl_tf.convert_slim``) with
its sha256 as ``<name>.json`` beside the built presets' metadata.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from typing import (Any, Callable, Dict, List, Mapping, Optional,
                    Sequence)

from mtssl_tf.model_zoo.download import (WeightsDownloadError,
                                         WeightsIntegrityError, cache_dir,
                                         check_sha256, fetch, is_url,
                                         sha256_file)
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


def _build_hint(name: str) -> str:
  return f"build them with `python -m mtssl_tf.model_zoo build {name}`"


def _dir(weights_dir: Optional[str]) -> str:
  return WEIGHTS_DIR if weights_dir is None else weights_dir


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


def _checked_local(path: str, expected: str, name: str,
                   metadata: str) -> str:
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"model-zoo preset {name!r}: weights file {path} does not exist")
  actual = sha256_file(path)
  if actual != expected:
    raise WeightsIntegrityError(
        f"refusing to load {path}: its sha256 is {actual} but {metadata} "
        f"expects {expected}; the file is corrupt or was replaced")
  return path


def _weights_file(name: str, meta: Mapping[str, Any], weights,
                  sha256: Optional[str], weights_dir: Optional[str]) -> str:
  """The local, sha256-checked weights file of a built-in preset."""
  preset = get_preset(name)
  if isinstance(weights, (str, os.PathLike)):
    weights = os.fspath(weights)
    if is_url(weights):
      if sha256 is None:
        raise ValueError(f"load({name!r}, weights={weights!r}) needs "
                         "sha256=<hex digest of the file>: downloaded "
                         "weights are always checked")
      return fetch(weights, sha256, stem=name)
    if sha256 is None:
      if not os.path.exists(weights):
        raise FileNotFoundError(f"weights file {weights} does not exist")
      return weights  # the caller's own file: checked only when asked
    return _checked_local(weights, check_sha256(sha256, weights), name,
                          "sha256=")
  path = os.path.join(_dir(weights_dir), preset.weights_filename)
  if os.path.exists(path):
    try:
      return _checked_local(path, meta["sha256"], name,
                            f"the metadata {metadata_path(name, weights_dir)}")
    except WeightsIntegrityError as e:
      raise WeightsIntegrityError(f"{e}; {_build_hint(name)}") from None
  if preset.weights_url:
    if preset.weights_sha256 != meta["sha256"]:
      raise WeightsIntegrityError(
          f"model-zoo preset {name!r}: the registry's weights_sha256 "
          f"{preset.weights_sha256} differs from the metadata's "
          f"{meta['sha256']} ({metadata_path(name, weights_dir)}): they "
          "describe different weights files")
    return fetch(preset.weights_url, preset.weights_sha256, stem=name)
  raise FileNotFoundError(
      f"model-zoo preset {name!r}: weights file {path} does not exist; "
      f"{_build_hint(name)}")


def load(name: str, *, weights=True, weights_dir: Optional[str] = None,
         sha256: Optional[str] = None):
  """The preset's model, with its weights checked and loaded.

  Args:
    name: a preset name (:func:`list_presets`) or a registered preset
      (:func:`list_registered`).
    weights: ``True``: the preset's weights (the package's file, else its
      registry ``weights_url``, fetched and cached); ``False``: the
      architecture only (fresh weights); a URL or a path: a
      ``.weights.h5`` file of the preset's architecture (a URL needs
      ``sha256``).
    weights_dir: folder of ``<name>.weights.h5`` and ``<name>.json``
      (default: the package's ``weights/``).
    sha256: expected sha256 of ``weights`` when it is a URL or a path.

  Returns:
    A :class:`~mtssl_tf.models.multitask.MultiTaskModel`; ``.save(x.keras)``
    writes a file that ``keras.models.load_model`` opens after
    ``import mtssl_tf``.

  Raises:
    ValueError: unknown name (the message lists the known ones); a
      trunk-only registered preset (use :func:`load_trunk`).
    FileNotFoundError: the preset is not built (the message gives the build
      command).
    WeightsIntegrityError: the weights file's sha256 differs from the
      expected one (a ``ValueError`` naming the file and both hashes).
    WeightsDownloadError: a weights URL could not be fetched.
  """
  if sha256 is not None and not isinstance(weights, (str, os.PathLike)):
    raise ValueError("sha256= applies to weights=<URL or path> only; a "
                     "preset's own weights are checked against its metadata")
  registered = registered_metadata(name, weights_dir)
  if registered is not None:
    if registered["kind"] != "multitask":
      raise ValueError(
          f"registered preset {name!r} is a trunk without task heads; load "
          f"it with model_zoo.load_trunk({name!r}) or "
          f"mtssl_tf.Trunk.from_preset({name!r})")
    return _load_registered(registered, weights, weights_dir)
  preset = get_preset(name)
  if weights is False and not os.path.exists(metadata_path(name,
                                                           weights_dir)):
    return build_preset_model(name, tiny=False)
  meta = load_metadata(name, weights_dir)
  model = _make_model(_model_kwargs(meta))
  if weights is False:
    return model
  if weights is not True and not isinstance(weights, (str, os.PathLike)):
    raise ValueError(f"weights={weights!r} must be True, False, a URL or "
                     "a path")
  model.load_weights(_weights_file(preset.name, meta, weights, sha256,
                                   weights_dir))
  return model


def load_trunk(name: str, *, weights=True, weights_dir: Optional[str] = None,
               sha256: Optional[str] = None):
  """The preset's trunk (:class:`~mtssl_tf.models.Trunk`), weights checked
  as by :func:`load`; a registered trunk-only preset (a converted authors'
  checkpoint) is returned as it is."""
  registered = registered_metadata(name, weights_dir)
  if registered is not None:
    model = _load_registered(registered, weights, weights_dir)
    return model if registered["kind"] == "trunk" else model.trunk
  return load(name, weights=weights, weights_dir=weights_dir,
              sha256=sha256).trunk


# -- registered presets ---------------------------------------------------------
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_KINDS = ("multitask", "trunk")


def registered_metadata(name: str, weights_dir: Optional[str] = None
                        ) -> Optional[Dict[str, Any]]:
  """The entry of registered preset ``name`` (``None`` for a built-in or
  unknown name)."""
  if name in PRESETS or not isinstance(name, str) or not _NAME.match(name):
    return None
  path = os.path.join(_dir(weights_dir), f"{name}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      meta = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e})") from None
  if not meta.get("registered"):
    return None
  missing = [k for k in ("kind", "sha256", "model_config") if k not in meta]
  if missing or meta["kind"] not in _KINDS:
    raise ValueError(f"{path}: a registered preset needs kind (one of "
                     f"{_KINDS}), sha256 and model_config; lacks "
                     f"{', '.join(missing) or 'a valid kind'}")
  if not (meta.get("weights_file") or meta.get("weights_url")):
    raise ValueError(f"{path}: a registered preset needs weights_file or "
                     "weights_url")
  return meta


def list_registered(weights_dir: Optional[str] = None) -> List[str]:
  """Names of the presets registered in ``weights_dir`` (sorted)."""
  folder = _dir(weights_dir)
  if not os.path.isdir(folder):
    return []
  names = [f[:-len(".json")] for f in os.listdir(folder)
           if f.endswith(".json")]
  return sorted(n for n in names if registered_metadata(n, weights_dir))


def _load_registered(meta: Mapping[str, Any], weights,
                     weights_dir: Optional[str]):
  import keras  # pylint: disable=g-import-not-at-top

  import mtssl_tf  # noqa: F401  (registers the classes load_model needs)
  name = meta["name"]
  if weights is False:
    return keras.saving.deserialize_keras_object(meta["model_config"])
  if weights is not True:
    raise ValueError(f"registered preset {name!r} carries its own weights "
                     "file; weights= may only be True or False")
  where = os.path.join(_dir(weights_dir), f"{name}.json")
  local = meta.get("weights_file") and os.path.join(_dir(weights_dir),
                                                    meta["weights_file"])
  if local and os.path.exists(local):
    path = _checked_local(local, meta["sha256"], name, where)
  elif meta.get("weights_url"):
    path = fetch(meta["weights_url"], meta["sha256"], stem=name)
  else:
    raise FileNotFoundError(f"registered preset {name!r}: weights file "
                            f"{local} does not exist (see {where})")
  return keras.models.load_model(path)


def register(name: str, weights: str, *, sha256: Optional[str] = None,
             weights_dir: Optional[str] = None, description: str = "",
             overwrite: bool = False,
             log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Registers a ``.keras`` file as preset ``name``, with its sha256.

  The file is a whole :class:`~mtssl_tf.models.multitask.MultiTaskModel`
  (``python -m mtssl_tf.model_zoo export``, ``mtssl_tf.export``) or a
  :class:`~mtssl_tf.models.Trunk` (``python -m mtssl_tf.convert_slim``
  writes the authors' checkpoint as one). A URL stays a URL (fetched and
  cached by :func:`load`); a local file is copied into ``weights_dir``
  as ``<name>.keras`` (package data, offline).

  Args:
    name: new preset name (lowercase letters, digits, ``_``; not a
      built-in preset).
    weights: URL or path of the ``.keras`` file.
    sha256: its expected sha256; required to trust a URL's content beyond
      this one download (without it the hash of what was downloaded now is
      recorded, and printed).
    weights_dir: where ``<name>.json`` goes (default: the package's
      ``weights/``).
    description: one line for listings.
    overwrite: replace an existing registration of ``name``.
    log: receives progress lines.

  Returns:
    The entry written to ``<weights_dir>/<name>.json``.
  """
  import keras  # pylint: disable=g-import-not-at-top

  import mtssl_tf  # noqa: F401
  from mtssl_tf.models.multitask import MultiTaskModel
  from mtssl_tf.models.trunk import Trunk
  if not isinstance(name, str) or not _NAME.match(name):
    raise ValueError(f"preset name {name!r} must be lowercase letters, "
                     "digits and '_'")
  if name in PRESETS:
    raise ValueError(f"{name!r} is a built-in preset; choose another name "
                     f"(built-in: {', '.join(PRESETS)})")
  folder = _dir(weights_dir)
  entry_path = os.path.join(folder, f"{name}.json")
  if os.path.exists(entry_path) and not overwrite:
    raise ValueError(f"{entry_path} exists: preset {name!r} is already "
                     "registered (pass overwrite=True / --overwrite)")
  weights = os.fspath(weights)
  remote = is_url(weights)
  source_name = os.path.basename(
      weights.split("?")[0] if remote else weights)
  if not source_name.endswith(".keras"):
    raise ValueError(
        f"register needs a .keras file (architecture and weights), got "
        f"{weights!r}; `python -m mtssl_tf.convert_slim` writes the authors' "
        "checkpoint as one. For a .weights.h5 of a built-in preset use "
        "model_zoo.load(name, weights=URL, sha256=...)")
  expected = None if sha256 is None else check_sha256(sha256, weights)
  tmp_dir = tempfile.mkdtemp(prefix=".tmp_register_")
  try:
    if remote and expected is not None:
      path = fetch(weights, expected, stem=name)
    elif remote:
      import keras.utils  # pylint: disable=g-import-not-at-top
      try:
        path = keras.utils.get_file(f"{name}.keras", origin=weights,
                                    cache_dir=tmp_dir, cache_subdir="")
      except Exception as e:  # get_file raises bare Exception
        raise WeightsDownloadError(
            f"could not fetch {weights}: {e}") from None
    else:
      if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file {weights} does not exist")
      path = weights
    digest = sha256_file(path)
    if expected is not None and digest != expected:
      raise WeightsIntegrityError(
          f"refusing to register {weights}: its sha256 is {digest} but "
          f"{expected} was given")
    model = keras.models.load_model(path)
    if isinstance(model, MultiTaskModel):
      kind = "multitask"
      tasks = list(model.task_names)
      harmonize = (model.task_objects["relative_position"].color_mode ==
                   "harmonize") if "relative_position" in tasks else False
      lasso = model.mixer is not None
    elif isinstance(model, Trunk):
      kind, tasks, harmonize, lasso = "trunk", [], False, False
    else:
      raise ValueError(
          f"{weights} holds a {type(model).__name__}, not an "
          "mtssl_tf MultiTaskModel or Trunk")
    trunk = model if kind == "trunk" else model.trunk
    meta = {
        "metadata_version": METADATA_VERSION,
        "registered": True,
        "name": name,
        "kind": kind,
        "display_name": name,
        "description": description,
        "tasks": tasks,
        "harmonize": harmonize,
        "lasso": lasso,
        "sha256": digest,
        "weights_bytes": os.path.getsize(path),
        "params": int(model.count_params()),
        "trunk": dict(trunk.config.to_dict()),
        "model_config": keras.saving.serialize_keras_object(model),
        "source": weights,
        "evaluations": {},
        "created": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
    }
    meta = json.loads(json.dumps(meta))
    os.makedirs(folder, exist_ok=True)
    if remote:
      meta["weights_url"] = weights
    else:
      meta["weights_file"] = f"{name}.keras"
      target = os.path.join(folder, meta["weights_file"])
      if os.path.realpath(target) != os.path.realpath(path):
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".keras",
                                   dir=folder)
        os.close(fd)
        try:
          shutil.copyfile(path, tmp)
          os.chmod(tmp, 0o644)
          os.replace(tmp, target)
        finally:
          if os.path.exists(tmp):
            os.remove(tmp)
    _write_json(entry_path, meta)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  log(f"registered {name!r} ({kind}, {meta['params']:,} parameters, "
      f"sha256 {digest}) in {entry_path}")
  if remote and expected is None:
    log("note: no --sha256 was given, so the hash above is that of the "
        "file downloaded now; compare it with the publisher's")
  return meta


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
  # Training reads the "train" split only: photos and the frames of the
  # train videos (motion masks from the same videos).
  try:
    files = offline.offline_image_files(packages, "train")
  except offline.OfflineDataError:
    files = []
  videos = offline.offline_video_files(packages, "train")
  result["images"] = [f.name for f in files]
  result["videos"] = [os.path.basename(v.path) for v in videos]
  result["heldout"] = sorted(
      f.name for f in offline.offline_video_files(packages, "heldout"))
  try:
    result["heldout"] = sorted(result["heldout"] + [
        f.name for f in offline.offline_image_files(packages, "heldout")])
  except offline.OfflineDataError:
    pass
  used = sorted({f.package for f in files + videos})
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
        if "loss" in rec:  # else a held-out metrics record
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
           "WeightsDownloadError", "WeightsIntegrityError", "build_command",
           "build_preset", "build_preset_model", "cache_dir", "export_keras",
           "fetch", "get_preset", "is_built", "list_presets",
           "list_registered", "load", "load_metadata", "load_trunk",
           "metadata_path", "parse_train_flags", "preset_config", "register",
           "registered_metadata", "sha256_file", "update_evaluations",
           "weights_path"]
