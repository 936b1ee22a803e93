"""The zoo's files: where a preset's weights and metadata live, reading
the metadata, checking a weights file's sha256, writing JSON atomically.

Each built preset is two files in ``weights/`` beside this package (or a
``weights_dir``): ``<name>.weights.h5`` (Keras ``save_weights`` of the
:class:`~mtssl_tf.models.multitask.MultiTaskModel`) and ``<name>.json``
(metadata: the resolved training config and flags, data, steps, seed,
parameter count, the weights file's sha256, the measured evaluations).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Mapping, Optional

from mtssl_tf.model_zoo.download import WeightsIntegrityError, sha256_file
from mtssl_tf.model_zoo.presets import PRESETS, get_preset

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "weights")
METADATA_VERSION = 1
# Presets whose demo weights are committed to the repository (the tests
# check each of them loads, matches its hash and its parameter count).
RUN_DIR_PLACEHOLDER = "<run_dir>"
COMMITTED = tuple(PRESETS)


_REQUIRED_KEYS = ("tasks", "harmonize", "lasso", "sha256", "model",
                  "params", "evaluations")


def build_hint(name: str) -> str:
  return f"build them with `python -m mtssl_tf.model_zoo build {name}`"


def folder(weights_dir: Optional[str]) -> str:
  """``weights_dir``, or the package's ``weights/`` when it is ``None``."""
  return WEIGHTS_DIR if weights_dir is None else weights_dir


def weights_path(name: str, weights_dir: Optional[str] = None) -> str:
  return os.path.join(folder(weights_dir), get_preset(name).weights_filename)


def metadata_path(name: str, weights_dir: Optional[str] = None) -> str:
  return os.path.join(folder(weights_dir), get_preset(name).metadata_filename)


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

