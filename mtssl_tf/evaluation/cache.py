"""The evaluation cache: one JSON file per evaluated (checkpoint, eval lasso).

Both commands (``python -m mtssl_tf.evaluate --work_dir=...`` and
``python -m tools.report``) read and write it through
:func:`mtssl_tf.evaluation.driver.evaluate_checkpoints`, so an evaluation one
command made is found by the other. An entry is keyed by what decides the
numbers: the checkpoint's source and content stamp (a run's latest
checkpoint, a ``.keras`` file's size and time), the random trunk's
architecture, the evaluators' parameters, eval lasso and the seed. The row
label is not part of the key (the file name carries it for the reader).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from typing import Any, Mapping, Optional


def checkpoint_stamp(kind: str, source: str) -> Optional[str]:
  """What changes when a checkpoint's weights do: a run's latest checkpoint
  name (a run trained further is re-evaluated), a file's size and
  modification time; None for presets and random trunks."""
  if kind != "run" or not os.path.exists(source):
    return None
  if os.path.isdir(source):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.train.latest_checkpoint(os.path.join(source, "checkpoints"))
  stat = os.stat(source)
  return f"{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(kind: str, source: str, eval_lasso: bool,
              params: Mapping[str, Any], seed: int,
              trunk: Optional[Mapping[str, Any]] = None) -> str:
  """16 hex digits of the SHA-256 of everything that decides the numbers."""
  blob = json.dumps({"kind": kind, "source": source,
                     "eval_lasso": eval_lasso, "params": params,
                     "seed": seed, "trunk": trunk},
                    sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "row"


def entry_path(work_dir: str, what: str, key: str) -> str:
  """``<work_dir>/<slug of what>-<key>.json``."""
  return os.path.join(work_dir, f"{_slug(what)}-{key}.json")


def read(work_dir: Optional[str], key: str) -> Optional[dict]:
  """The cached entry with ``key`` (under any row label), or None."""
  if not work_dir:
    return None
  for path in sorted(glob.glob(os.path.join(glob.escape(work_dir),
                                            f"*-{key}.json"))):
    with open(path) as f:
      entry = json.load(f)
    entry["path"] = path
    return entry
  return None


def write(path: str, entry: Mapping[str, Any]) -> None:
  """Writes ``entry`` as JSON, atomically (a killed run leaves no half
  file for the next one to trust)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(dict(entry), f, indent=2, sort_keys=True, default=str)
  os.replace(path + ".tmp", path)


__all__ = ["cache_key", "checkpoint_stamp", "entry_path", "read", "write"]
