"""Registered presets: a ``.keras`` file (a whole model, or a trunk such
as the authors' checkpoint converted by ``python -m mtssl_tf.convert_slim``)
recorded by URL or path with its sha256 as ``<name>.json`` beside the built
presets' metadata in a zoo folder. Registering one is maintainer tooling
(``python -m tools.zoo register``, :mod:`tools.zoo.register`); this module
reads and loads the entries."""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional

from mtssl_tf.model_zoo.download import fetch
from mtssl_tf.model_zoo.presets import PRESETS
from mtssl_tf.model_zoo.store import checked_file, default_folder, folder

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_KINDS = ("multitask", "trunk")


def registered_metadata(name: str, weights_dir: Optional[str] = None
                        ) -> Optional[Dict[str, Any]]:
  """The entry of registered preset ``name`` (``None`` for a built-in or
  unknown name)."""
  if (name in PRESETS or not isinstance(name, str)
      or not NAME_PATTERN.match(name)):
    return None
  if weights_dir is None and default_folder() is None:
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
  if weights_dir is None and default_folder() is None:
    return []
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
