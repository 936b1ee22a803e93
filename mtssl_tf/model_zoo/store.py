"""The zoo's files: where a preset's weights and metadata live, reading
the metadata, checking a weights file's sha256, writing JSON atomically.

Each built preset is two files in a zoo folder: ``<name>.weights.h5``
(Keras ``save_weights`` of the
:class:`~mtssl_tf.models.multitask.MultiTaskModel`, arrays stored as
float16 where that loses nothing; Keras casts them to the float32
variables on load) and ``<name>.json`` (metadata: the resolved training
config and flags, data, steps, seed, parameter count, the weights file's
sha256, the measured evaluations).

The installed package holds no weights. The zoo folder is, in this order:
a ``weights_dir`` argument; the folder ``$MTSSL_TF_ZOO_DIR`` names; the
repository's top-level ``model_zoo/`` when the package runs from a
checkout (:data:`CHECKOUT_ZOO_DIR`). Elsewhere a preset loads from a URL or
a path of its weights file (:func:`mtssl_tf.model_zoo.load`).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Mapping, Optional

from mtssl_tf.model_zoo.download import WeightsIntegrityError, sha256_file
from mtssl_tf.model_zoo.presets import PRESETS, get_preset

ZOO_DIR_ENV = "MTSSL_TF_ZOO_DIR"
# The repository's model_zoo/ folder, beside the package in a checkout (an
# installed wheel has none: see checkout_zoo_dir).
CHECKOUT_ZOO_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "model_zoo")
METADATA_VERSION = 1
RUN_DIR_PLACEHOLDER = "<run_dir>"
# Presets whose study-scale weights are committed to the repository's
# model_zoo/ (the tests check each of them loads, matches its hash and its
# parameter count).
COMMITTED = tuple(PRESETS)
# How a build stores the weights: "float16" (each float32 array that passes
# float16_refusal; the others stay float32) or "float32" (Keras's file as
# it is).
WEIGHTS_DTYPES = ("float16", "float32")
DEFAULT_WEIGHTS_DTYPE = "float16"


_REQUIRED_KEYS = ("tasks", "harmonize", "lasso", "sha256", "model",
                  "params", "evaluations")


def checkout_zoo_dir() -> Optional[str]:
  """The repository's ``model_zoo/`` when the package runs from a checkout
  (the folder and the ``setup.cfg`` beside it exist), else ``None``."""
  root = os.path.dirname(CHECKOUT_ZOO_DIR)
  if (os.path.isdir(CHECKOUT_ZOO_DIR)
      and os.path.isfile(os.path.join(root, "setup.cfg"))):
    return CHECKOUT_ZOO_DIR
  return None


def default_folder() -> Optional[str]:
  """The zoo folder used when no ``weights_dir`` is given:
  ``$MTSSL_TF_ZOO_DIR``, else the checkout's ``model_zoo/``, else ``None``
  (an installed wheel, which ships no weights)."""
  return os.environ.get(ZOO_DIR_ENV) or checkout_zoo_dir()


def build_hint(name: str) -> str:
  """Where a preset's weights come from, for error messages."""
  return (f"in a checkout, `python -m tools.zoo build {name}` builds them "
          "into model_zoo/; elsewhere give their folder "
          f"(weights_dir=<checkout>/model_zoo or ${ZOO_DIR_ENV}) or their "
          f"file (load({name!r}, weights=<URL or path of "
          f"{name}.weights.h5>, sha256=<hex>))")


class NoZooFolderError(FileNotFoundError):
  """No zoo folder is known: an installed package without a checkout."""


def folder(weights_dir: Optional[str]) -> str:
  """``weights_dir``, or :func:`default_folder`; ``NoZooFolderError`` saying
  where weights come from when neither is known."""
  if weights_dir is not None:
    return os.fspath(weights_dir)
  found = default_folder()
  if found is None:
    raise NoZooFolderError(
        "this installation holds no model-zoo files: the mtssl_tf package "
        "ships no weights. Pass weights_dir=<checkout>/model_zoo (or set "
        f"${ZOO_DIR_ENV}), or load a preset from its weights file by URL "
        "or path: model_zoo.load('rp', weights='https://.../rp.weights.h5' "
        "or '/path/rp.weights.h5', sha256='<hex>'); model_zoo/README.md")
  return found


def weights_path(name: str, weights_dir: Optional[str] = None) -> str:
  return os.path.join(folder(weights_dir), get_preset(name).weights_filename)


def metadata_path(name: str, weights_dir: Optional[str] = None) -> str:
  return os.path.join(folder(weights_dir), get_preset(name).metadata_filename)


def is_built(name: str, weights_dir: Optional[str] = None) -> bool:
  """Whether the preset's weights and metadata files both exist (``False``
  where no zoo folder is known)."""
  if weights_dir is None and default_folder() is None:
    return False
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
        f"its weights are not built; {build_hint(name)}")
  with open(path) as f:
    try:
      meta = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}); "
                       f"{build_hint(name)}") from None
  missing = [k for k in _REQUIRED_KEYS if k not in meta]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}; "
                     f"{build_hint(name)}")
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
        f"{build_hint(name)}")
  return meta



def checked_file(path: str, expected: str, name: str,
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
  write_json(metadata_path(name, weights_dir), meta)
  return meta


def write_json(path: str, obj) -> None:
  """Writes ``obj`` to ``path`` atomically (sorted keys, world-readable)."""
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json",
                             dir=os.path.dirname(path) or ".")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; these files ship
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)

