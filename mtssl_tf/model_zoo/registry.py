"""Registered presets: a ``.keras`` file (a whole model, or a trunk such
as the authors' checkpoint converted by ``python -m mtssl_tf.convert_slim``)
recorded by URL or path with its sha256 as ``<name>.json`` beside the built
presets' metadata (``python -m mtssl_tf.model_zoo register``)."""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional

from mtssl_tf.model_zoo.download import (WeightsDownloadError,
                                         WeightsIntegrityError, check_sha256,
                                         fetch, is_url, sha256_file)
from mtssl_tf.model_zoo.presets import PRESETS
from mtssl_tf.model_zoo.store import (METADATA_VERSION, checked_file, folder,
                                      write_json)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_KINDS = ("multitask", "trunk")


def registered_metadata(name: str, weights_dir: Optional[str] = None
                        ) -> Optional[Dict[str, Any]]:
  """The entry of registered preset ``name`` (``None`` for a built-in or
  unknown name)."""
  if name in PRESETS or not isinstance(name, str) or not _NAME.match(name):
    return None
  path = os.path.join(folder(weights_dir), f"{name}.json")
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
  out_dir = folder(weights_dir)
  if not os.path.isdir(out_dir):
    return []
  names = [f[:-len(".json")] for f in os.listdir(out_dir)
           if f.endswith(".json")]
  return sorted(n for n in names if registered_metadata(n, weights_dir))


def load_registered(meta: Mapping[str, Any], weights,
                     weights_dir: Optional[str]):
  import keras  # pylint: disable=g-import-not-at-top

  import mtssl_tf  # noqa: F401  (registers the classes load_model needs)
  name = meta["name"]
  if weights is False:
    return keras.saving.deserialize_keras_object(meta["model_config"])
  if weights is not True:
    raise ValueError(f"registered preset {name!r} carries its own weights "
                     "file; weights= may only be True or False")
  where = os.path.join(folder(weights_dir), f"{name}.json")
  local = meta.get("weights_file") and os.path.join(folder(weights_dir),
                                                    meta["weights_file"])
  if local and os.path.exists(local):
    path = checked_file(local, meta["sha256"], name, where)
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
  (``python -m mtssl_tf.model_zoo export``, ``mtssl_tf.serving.export``) or a
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
  out_dir = folder(weights_dir)
  entry_path = os.path.join(out_dir, f"{name}.json")
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
    os.makedirs(out_dir, exist_ok=True)
    if remote:
      meta["weights_url"] = weights
    else:
      meta["weights_file"] = f"{name}.keras"
      target = os.path.join(out_dir, meta["weights_file"])
      if os.path.realpath(target) != os.path.realpath(path):
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".keras",
                                   dir=out_dir)
        os.close(fd)
        try:
          shutil.copyfile(path, tmp)
          os.chmod(tmp, 0o644)
          os.replace(tmp, target)
        finally:
          if os.path.exists(tmp):
            os.remove(tmp)
    write_json(entry_path, meta)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  log(f"registered {name!r} ({kind}, {meta['params']:,} parameters, "
      f"sha256 {digest}) in {entry_path}")
  if remote and expected is None:
    log("note: no --sha256 was given, so the hash above is that of the "
        "file downloaded now; compare it with the publisher's")
  return meta

