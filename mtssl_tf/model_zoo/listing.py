"""Text views of the zoo: the table of presets and one preset's recipes and
metadata (``python -m mtssl_tf.model_zoo list`` / ``show``)."""
from __future__ import annotations

import json
from typing import Optional

from mtssl_tf.model_zoo.build import build_command
from mtssl_tf.model_zoo.presets import get_preset, list_presets
from mtssl_tf.model_zoo.registry import list_registered, registered_metadata
from mtssl_tf.model_zoo.store import is_built, load_metadata
from mtssl_tf.tasks import ABBREVIATIONS


def table(weights_dir: Optional[str] = None) -> str:
  """Built-in and registered presets, one row each: tasks, lasso,
  harmonization, whether built, hash prefix, parameters, size."""
  rows = [("name", "display", "tasks", "lasso", "harmonized", "built",
           "sha256", "params", "MB")]
  for name in list_presets():
    preset = get_preset(name)
    built = is_built(name, weights_dir)
    sha = params = size = "-"
    if built:
      meta = load_metadata(name, weights_dir)
      sha = meta["sha256"][:12]
      params = f"{meta['params']:,}"
      size = f"{meta['weights_bytes'] / 1e6:.2f}"
    abbreviations = ",".join(ABBREVIATIONS[t] for t in preset.tasks)
    rows.append((name, preset.display_name, abbreviations,
                 "yes" if preset.lasso else "no",
                 "yes" if preset.harmonize else "no",
                 "yes" if built else "no", sha, params, size))
  for name in list_registered(weights_dir):
    meta = registered_metadata(name, weights_dir)
    abbreviations = ",".join(ABBREVIATIONS[t] for t in meta["tasks"])
    rows.append((name, f"registered {meta['kind']}", abbreviations or "-",
                 "yes" if meta["lasso"] else "no",
                 "yes" if meta["harmonize"] else "no",
                 "url" if meta.get("weights_url") else "yes",
                 meta["sha256"][:12], f"{meta['params']:,}",
                 f"{meta['weights_bytes'] / 1e6:.2f}"))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                   for row in rows)


def describe(name: str, weights_dir: Optional[str] = None) -> str:
  """A preset's recipes, paper numbers and (when built) metadata; a
  registered preset's entry."""
  registered = registered_metadata(name, weights_dir)
  if registered is not None:
    return json.dumps({k: v for k, v in registered.items()
                       if k != "model_config"}, indent=2)
  preset = get_preset(name)
  lines = [
      f"{preset.name}: {preset.display_name} ({preset.description})",
      "overrides:   " + json.dumps(preset.overrides),
      "demo build:  " + build_command(name),
      "demo flags:  python -m mtssl_tf.train "
      + " ".join(preset.train_flags("demo")),
      "paper recipe: python -m mtssl_tf.train " + " ".join(
          preset.paper_flags),
      "paper results: " + json.dumps(
          {k: dict(v) for k, v in preset.paper_results.items()}),
  ]
  if is_built(name, weights_dir):
    meta = load_metadata(name, weights_dir)
    keys = ("scale", "steps", "seed", "params", "weights_bytes", "sha256",
            "final_losses", "evaluations", "data", "created")
    lines.append(json.dumps({k: meta.get(k) for k in keys}, indent=2))
  else:
    lines.append("not built")
  return "\n".join(lines)
