"""What made a preset's files: the recipe record in its metadata, whether
the files in a zoo folder were built by today's recipe, and the command
that rebuilds them (maintainer tooling in a checkout, ``python -m
tools.zoo build``). ``python -m mtssl_tf.model_zoo show`` prints them."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from mtssl_tf.model_zoo.download import sha256_file
from mtssl_tf.model_zoo.presets import Recipe, get_preset
from mtssl_tf.model_zoo.store import (DEFAULT_WEIGHTS_DTYPE,
                                      RUN_DIR_PLACEHOLDER, is_built,
                                      load_metadata, weights_path)


def recipe_record(meta: Mapping[str, Any]) -> Dict[str, Any]:
  """What decides a preset's weights, as its metadata records it: the
  preset flags (recipe and extra flags) and the scale. Two builds with the
  same record trained the same config."""
  return {"scale": meta.get("scale"),
          "preset_flags": list(meta.get("preset_flags") or [])}


def build_command(name: str, steps: Optional[int] = None,
                  tiny: bool = False, extra_flags: Sequence[str] = (),
                  from_run: Optional[str] = None) -> str:
  """The command line that (re)builds a preset's weights in a checkout
  (``from_run``: that imports them from a run folder)."""
  parts = ["python -m tools.zoo build", name]
  if tiny:
    parts.append("--tiny")
  if steps is not None:
    parts.append(f"--steps={steps}")
  parts += [f"--train_flag={f}" for f in extra_flags]
  if from_run is not None:
    parts.append(f"--from_run={from_run}")
  return " ".join(parts)


def planned_flags(name: str, scale: str, extra_flags: Sequence[str] = (),
                  overrides: Optional[Mapping[str, Any]] = None,
                  run: Optional[Mapping[str, Any]] = None) -> list:
  """The flags a build of ``name`` records as ``preset_flags``: the
  preset's recipe at ``scale``, the extra flags and typed overrides, and
  the run folder's placeholder."""
  return list(get_preset(name).train_flags(scale)) + list(extra_flags) + [
      line for line in options_text(overrides, run) if line] + [
          f"--run_dir={RUN_DIR_PLACEHOLDER}"]


def options_text(*mappings: Optional[Mapping[str, Any]]) -> list:
  """Typed overrides as argv strings (for the metadata's record)."""
  merged: Dict[str, Any] = {}
  for m in mappings:
    merged.update(m or {})
  return list(Recipe("", merged).argv()[1:])


def up_to_date(name: str, *, tiny: bool = False,
               steps: Optional[int] = None,
               weights_dir: Optional[str] = None,
               extra_flags: Sequence[str] = (),
               overrides: Optional[Mapping[str, Any]] = None,
               weights_dtype: str = DEFAULT_WEIGHTS_DTYPE) -> bool:
  """Whether ``name``'s weights in ``weights_dir`` were built by this
  recipe: both files exist, the weights match the recorded sha256 and the
  metadata records the same scale and preset flags as a build with these
  arguments would (a build into a temporary run folder, as
  ``tools.zoo.build_preset`` makes one without ``work_dir``, records
  ``--noplots`` too), and its weights file stores the arrays as
  ``weights_dtype`` asks (a file from before float16 storage records no
  request: float32).

  The rule is the recipe, not how the weights were made: a preset imported
  from a run (``tools.zoo.build_preset(..., from_run=...)``, which
  refuses a run whose config differs from the recipe's but for the fields
  that do not enter a training step) records the same preset flags as a trained
  build of that recipe and is up to date for it; its metadata's
  ``from_run`` says it was imported."""
  if not is_built(name, weights_dir):
    return False
  try:
    meta = load_metadata(name, weights_dir)
  except ValueError:
    return False
  if sha256_file(weights_path(name, weights_dir)) != meta["sha256"]:
    return False
  scale = "tiny" if tiny else "study"
  run: Dict[str, Any] = {} if steps is None else {"steps": steps}
  recorded = recipe_record(meta)
  candidates = [planned_flags(name, scale, extra_flags, overrides, run),
                planned_flags(name, scale, extra_flags, overrides,
                              dict(run, plots=False))]
  stored = (meta.get("weights_storage") or {}).get("requested", "float32")
  return (recorded["scale"] == scale and recorded["preset_flags"] in candidates
          and stored == weights_dtype)
