"""Registering a ``.keras`` file as a zoo preset: a whole model, or a trunk
such as the authors' checkpoint converted by ``python -m
mtssl_tf.convert_slim``, recorded by URL or path with its sha256 as
``<name>.json`` in a zoo folder (``python -m tools.zoo register``). The
installed package reads these entries
(:mod:`mtssl_tf.model_zoo.registry`)."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Optional

from mtssl_tf.model_zoo.download import (WeightsDownloadError,
                                         WeightsIntegrityError, check_sha256,
                                         fetch, is_url, sha256_file)
from mtssl_tf.model_zoo.presets import PRESETS
from mtssl_tf.model_zoo.registry import NAME_PATTERN
from mtssl_tf.model_zoo.store import METADATA_VERSION, folder, write_json


def _entry_path(name: str, weights_dir: Optional[str],
                overwrite: bool) -> str:
  """Where preset ``name``'s entry goes; refuses a bad or taken name."""
  if not isinstance(name, str) or not NAME_PATTERN.match(name):
    raise ValueError(f"preset name {name!r} must be lowercase letters, "
                     "digits and '_'")
  if name in PRESETS:
    raise ValueError(f"{name!r} is a built-in preset; choose another name "
                     f"(built-in: {', '.join(PRESETS)})")
  entry_path = os.path.join(folder(weights_dir), f"{name}.json")
  if os.path.exists(entry_path) and not overwrite:
    raise ValueError(f"{entry_path} exists: preset {name!r} is already "
                     "registered (pass overwrite=True / --overwrite)")
  return entry_path


def _local_file(name: str, weights: str, expected: Optional[str],
                tmp_dir: str) -> str:
  """A local path of ``weights``: fetched into the cache when ``expected``
  is known, into ``tmp_dir`` when it is not (its hash is recorded as
  downloaded), or the path itself."""
  source_name = os.path.basename(
      weights.split("?")[0] if is_url(weights) else weights)
  if not source_name.endswith(".keras"):
    raise ValueError(
        f"register needs a .keras file (architecture and weights), got "
        f"{weights!r}; `python -m mtssl_tf.convert_slim` writes the authors' "
        "checkpoint as one. For a .weights.h5 of a built-in preset use "
        "model_zoo.load(name, weights=URL, sha256=...)")
  if is_url(weights) and expected is not None:
    return fetch(weights, expected, stem=name)
  if is_url(weights):
    import keras  # pylint: disable=g-import-not-at-top
    try:
      return keras.utils.get_file(f"{name}.keras", origin=weights,
                                  cache_dir=tmp_dir, cache_subdir="")
    except Exception as e:  # get_file raises bare Exception
      raise WeightsDownloadError(f"could not fetch {weights}: {e}") from None
  if not os.path.isfile(weights):
    raise FileNotFoundError(f"weights file {weights} does not exist")
  return weights


def _describe(weights: str, model) -> Dict[str, Any]:
  """``kind``, ``tasks``, ``harmonize`` and ``lasso`` of a loaded model."""
  from mtssl_tf.models.multitask import MultiTaskModel  # pylint: disable=g-import-not-at-top
  from mtssl_tf.models.trunk import Trunk  # pylint: disable=g-import-not-at-top
  if isinstance(model, MultiTaskModel):
    tasks = list(model.task_names)
    harmonize = (model.task_objects["relative_position"].color_mode ==
                 "harmonize") if "relative_position" in tasks else False
    return {"kind": "multitask", "tasks": tasks, "harmonize": harmonize,
            "lasso": model.mixer is not None}
  if isinstance(model, Trunk):
    return {"kind": "trunk", "tasks": [], "harmonize": False,
            "lasso": False}
  raise ValueError(f"{weights} holds a {type(model).__name__}, not an "
                   "mtssl_tf MultiTaskModel or Trunk")


def _entry(name: str, weights: str, path: str, digest: str,
           description: str) -> Dict[str, Any]:
  """The registry entry of the ``.keras`` file at ``path``."""
  import keras  # pylint: disable=g-import-not-at-top

  import mtssl_tf  # noqa: F401  (registers the classes load_model needs)
  model = keras.models.load_model(path)
  kind = _describe(weights, model)
  trunk = model if kind["kind"] == "trunk" else model.trunk
  meta = dict(
      metadata_version=METADATA_VERSION, registered=True, name=name,
      display_name=name, description=description, **kind, sha256=digest,
      weights_bytes=os.path.getsize(path),
      params=int(model.count_params()),
      trunk=dict(trunk.config.to_dict()),
      model_config=keras.saving.serialize_keras_object(model),
      source=weights, evaluations={},
      created=datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%dT%H:%M:%SZ"))
  return json.loads(json.dumps(meta))


def _copy_atomically(path: str, target: str) -> None:
  """Copies ``path`` to ``target`` (world-readable) through a temporary
  file in the target's folder."""
  if os.path.realpath(target) == os.path.realpath(path):
    return
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".keras",
                             dir=os.path.dirname(target))
  os.close(fd)
  try:
    shutil.copyfile(path, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def register(name: str, weights: str, *, sha256: Optional[str] = None,
             weights_dir: Optional[str] = None, description: str = "",
             overwrite: bool = False,
             log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Registers a ``.keras`` file as preset ``name``, with its sha256.

  The file is a whole :class:`~mtssl_tf.models.multitask.MultiTaskModel`
  (``python -m mtssl_tf.model_zoo export``,
  ``mtssl_tf.serving.model_export``) or a :class:`~mtssl_tf.models.Trunk`
  (``python -m mtssl_tf.convert_slim`` writes the authors' checkpoint as
  one). A URL stays a URL (fetched and cached by
  :func:`mtssl_tf.model_zoo.load`); a local file is copied into
  ``weights_dir`` as ``<name>.keras``.

  Args:
    name: new preset name (lowercase letters, digits, ``_``; not a
      built-in preset).
    weights: URL or path of the ``.keras`` file.
    sha256: its expected sha256; required to trust a URL's content beyond
      this one download (without it the hash of what was downloaded now is
      recorded, and printed).
    weights_dir: where ``<name>.json`` goes (default: the zoo folder,
      the checkout's ``model_zoo/``).
    description: one line for listings.
    overwrite: replace an existing registration of ``name``.
    log: receives progress lines.

  Returns:
    The entry written to ``<weights_dir>/<name>.json``.
  """
  entry_path = _entry_path(name, weights_dir, overwrite)
  weights = os.fspath(weights)
  expected = None if sha256 is None else check_sha256(sha256, weights)
  tmp_dir = tempfile.mkdtemp(prefix=".tmp_register_")
  try:
    path = _local_file(name, weights, expected, tmp_dir)
    digest = sha256_file(path)
    if expected is not None and digest != expected:
      raise WeightsIntegrityError(
          f"refusing to register {weights}: its sha256 is {digest} but "
          f"{expected} was given")
    meta = _entry(name, weights, path, digest, description)
    out_dir = os.path.dirname(entry_path)
    os.makedirs(out_dir, exist_ok=True)
    if is_url(weights):
      meta["weights_url"] = weights
    else:
      meta["weights_file"] = f"{name}.keras"
      _copy_atomically(path, os.path.join(out_dir, meta["weights_file"]))
    write_json(entry_path, meta)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  log(f"registered {name!r} ({meta['kind']}, {meta['params']:,} parameters, "
      f"sha256 {digest}) in {entry_path}")
  if is_url(weights) and expected is None:
    log("note: no --sha256 was given, so the hash above is that of the "
        "file downloaded now; compare it with the publisher's")
  return meta
