"""The zoo's files: where a preset's weights and metadata live, reading
the metadata, checking a weights file's sha256, writing JSON atomically.

Each built preset is two files in ``weights/`` beside this package (or a
``weights_dir``): ``<name>.weights.h5`` (Keras ``save_weights`` of the
:class:`~mtssl_tf.models.multitask.MultiTaskModel`) and ``<name>.json``
(metadata: the resolved training config and flags, data, steps, seed,
parameter count, the weights file's sha256, the measured evaluations).

A zoo build stores each float32 array as float16 when that loses nothing
that matters (:func:`float16_refusal`), in Keras's own ``.weights.h5``
layout (the same group and dataset paths, so ``model.load_weights`` reads
it by layer path and casts each array to its float32 variable on assign):
half the bytes for the package data and the repository.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

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


# How a build stores the weights: "float16" (each float32 array that passes
# float16_refusal; the others stay float32) or "float32" (Keras's file as
# it is).
WEIGHTS_DTYPES = ("float16", "float32")
DEFAULT_WEIGHTS_DTYPE = "float16"
# An array stays float32 when any value's magnitude exceeds this: float16's
# largest finite value is 65504 and everything from 65520 up rounds to inf.
# Trained models come closest in the stem's batch-norm moving variance (the
# trunk sees RGB in [0, 255]): 1.17e4 in runs/demo.
FLOAT16_MAX_ABS = 6e4
# ... or when any value's float16 rounding error exceeds FLOAT16_RTOL times
# max(|value|, FLOAT16_FLOOR x the array's largest magnitude): values of
# the array's own scale keep three significant digits (float16's normal
# range rounds within 2**-11 = 4.9e-4 of the value), and values far below
# it need only be exact to 1e-5 of that scale. What fails is an array that
# lives in float16's subnormal range (|x| < 6.1e-5, absolute steps of
# 6e-8): trained conv biases of 1e-9 to 2e-8 in runs/demo, which float16
# would flush to zero.
FLOAT16_RTOL = 1e-3
FLOAT16_FLOOR = 1e-2


def float16_refusal(array) -> Optional[str]:
  """Why a float32 array may not be stored as float16, or ``None`` if it
  may (the rule of :data:`FLOAT16_MAX_ABS`, :data:`FLOAT16_RTOL` and
  :data:`FLOAT16_FLOOR`)."""
  a = np.asarray(array)
  if a.dtype != np.float32:
    return f"not float32 ({a.dtype})"
  if a.size == 0:
    return None
  if not np.all(np.isfinite(a)):
    return "non-finite values (kept exactly as they are)"
  magnitude = np.abs(a)
  largest = float(magnitude.max())
  if largest > FLOAT16_MAX_ABS:
    return (f"max |x| {largest:.4g} > {FLOAT16_MAX_ABS:g} (float16 "
            "overflows above 65504)")
  error = np.abs(a.astype(np.float16).astype(np.float32) - a)
  allowed = FLOAT16_RTOL * np.maximum(magnitude, FLOAT16_FLOOR * largest)
  worst = int(np.argmax(error - allowed))
  if error.flat[worst] > allowed.flat[worst]:
    return (f"float16 rounds {a.flat[worst]:.4g} by {error.flat[worst]:.3g}, "
            f"more than {FLOAT16_RTOL:g} x max(|x|, {FLOAT16_FLOOR:g} x the "
            f"array's max |x| {largest:.4g}) (float16 subnormal range)")
  return None


def _copy_as_float16(source: str, target: str) -> List[Dict[str, Any]]:
  """Copies a Keras ``.weights.h5`` file group by group, dataset by dataset
  (same paths and attributes), each float32 array as float16 unless
  :func:`float16_refusal` says why not; returns those kept float32."""
  import h5py  # pylint: disable=g-import-not-at-top
  kept: List[Dict[str, Any]] = []

  def copy(src, dst):
    for key, value in src.attrs.items():
      dst.attrs[key] = value
    for key in sorted(src.keys()):  # sorted: the same bytes every time
      item = src[key]
      if isinstance(item, h5py.Group):
        copy(item, dst.create_group(key))
        continue
      data = item[()]
      if isinstance(data, np.ndarray) and data.dtype == np.float32:
        reason = float16_refusal(data)
        if reason is None:
          data = data.astype(np.float16)
        else:
          kept.append({"name": item.name.lstrip("/"),
                       "values": int(data.size), "reason": reason})
      dst.create_dataset(key, data=data)
      for k, v in item.attrs.items():
        dst[key].attrs[k] = v

  with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
    copy(src, dst)
  return kept


def write_weights(model, path: str,
                  weights_dtype: str = DEFAULT_WEIGHTS_DTYPE
                  ) -> Dict[str, Any]:
  """Writes ``model``'s weights to ``path`` (a ``.weights.h5`` file).

  Args:
    model: a Keras model with float32 weights.
    path: the file to write (replaced).
    weights_dtype: ``"float16"``: each float32 array as float16 when
      :func:`float16_refusal` allows it, the others float32, non-float
      arrays as they are; ``"float32"``: Keras's ``save_weights`` file.

  Returns:
    The metadata's record of the file: ``weights_dtype`` (``"float16"``,
    ``"mixed"`` when some float32 arrays were kept, or ``"float32"``) and
    ``weights_storage``: ``requested`` (``weights_dtype`` asked for),
    ``values`` (number of stored values by dtype, read back from the file)
    and ``kept_float32`` (each array kept float32: its path in the file,
    its number of values, why).
  """
  import h5py  # pylint: disable=g-import-not-at-top
  if weights_dtype not in WEIGHTS_DTYPES:
    raise ValueError(f"weights_dtype={weights_dtype!r}; expected one of "
                     + ", ".join(WEIGHTS_DTYPES))
  kept: List[Dict[str, Any]] = []
  if weights_dtype == "float32":
    model.save_weights(path, overwrite=True)
  else:
    fd, full = tempfile.mkstemp(prefix=".tmp_f32_", suffix=".weights.h5",
                                dir=os.path.dirname(path) or ".")
    os.close(fd)
    try:
      model.save_weights(full, overwrite=True)
      kept = _copy_as_float16(full, path)
    finally:
      os.remove(full)
  values: Dict[str, int] = {}

  def count(_, obj):
    if isinstance(obj, h5py.Dataset):
      values[str(obj.dtype)] = values.get(str(obj.dtype), 0) + int(obj.size)

  with h5py.File(path, "r") as f:
    f.visititems(count)
  if weights_dtype == "float32" or "float16" not in values:
    stored = "float32"
  else:
    stored = "mixed" if kept else "float16"
  return {"weights_dtype": stored,
          "weights_storage": {"requested": weights_dtype, "values": values,
                              "kept_float32": kept}}


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

