"""How a zoo build stores weights: each float32 array as float16 when that
loses nothing that matters (:func:`float16_refusal`), in Keras's own
``.weights.h5`` layout (the same group and dataset paths, so
``model.load_weights`` reads it by layer path and casts each array to its
float32 variable on assign): half the bytes for the repository.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional

import numpy as np

from mtssl_tf.model_zoo.store import DEFAULT_WEIGHTS_DTYPE, WEIGHTS_DTYPES

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
