"""Text views of the zoo: the table of presets and one preset's recipes and
metadata (``python -m mtssl_tf.model_zoo list`` / ``show``)."""
from __future__ import annotations

import json
from typing import Optional

from mtssl_tf.model_zoo.presets import get_preset, list_presets
from mtssl_tf.model_zoo.provenance import build_command, up_to_date
from mtssl_tf.model_zoo.registry import list_registered, registered_metadata
from mtssl_tf.model_zoo.store import (default_folder, is_built,
                                      load_metadata)
from mtssl_tf.tasks import ABBREVIATIONS


# The headline held-out metric of each task (pretext_eval.HEADLINE), by
# the tasks' abbreviations, for the one-line view of the table.
_HEADLINE = (("relative_position", "accuracy"),
             ("colorization", "top5_accuracy"), ("exemplar", "top1"),
             ("motion_segmentation", "iou"))


# What list and show say where no zoo folder is known (an installed wheel).
NO_FOLDER = ("no zoo folder here (the installed package ships no weights): "
             "--weights_dir=<checkout>/model_zoo or $MTSSL_TF_ZOO_DIR, or "
             "model_zoo.load(name, weights=<URL or path>, sha256=<hex>)")


def pretext_summary(metrics) -> str:
  """A preset's held-out pretext metrics on one line, chance beside each:
  ``RP 0.312 (0.125) Col 0.400 (0.300)``; ``-`` when it has none."""
  parts = []
  for task, key in _HEADLINE:
    m = (metrics or {}).get(task) or {}
    if key in m and "chance" in m:
      parts.append(f"{ABBREVIATIONS[task]} {m[key]:.3f} ({m['chance']:.3f})")
  return " ".join(parts) or "-"


def probe_summary(evaluations) -> str:
  """The linear probe's top-1 from a preset's ``evaluations`` (written by
  ``python -m tools.report --presets=...``): ``0.912 (digits)``; ``-``
  before it is measured."""
  parts = []
  for key, value in sorted((evaluations or {}).items()):
    if key.startswith("linear_probe/") and isinstance(value, dict) and (
        "top1" in value):
      parts.append(f"{value['top1']:.3f} ({key.split('/', 1)[1]})")
  return " ".join(parts) or "-"


def pretext_table(metrics) -> str:
  """A preset's held-out pretext metrics as the trainer's final table
  (metric, value, chance, baseline), or a line saying there are none."""
  if not metrics:
    return "held-out pretext metrics: none recorded (built without them)"
  from mtssl_tf.training.pretext_eval import format_table  # pylint: disable=g-import-not-at-top
  return format_table(dict(metrics))


def table(weights_dir: Optional[str] = None) -> str:
  """Built-in and registered presets, one row each: tasks, lasso,
  harmonization, whether built, hash prefix, parameters, size, steps and
  the held-out pretext metrics (headline metric per task, chance in
  brackets)."""
  rows = [("name", "display", "tasks", "lasso", "harmonized", "built",
           "sha256", "params", "MB", "steps",
           "held-out pretext (chance)", "probe top-1")]
  for name in list_presets():
    preset = get_preset(name)
    built = is_built(name, weights_dir)
    sha = params = size = steps = pretext = probe = "-"
    if built:
      meta = load_metadata(name, weights_dir)
      sha = meta["sha256"][:12]
      params = f"{meta['params']:,}"
      size = f"{meta['weights_bytes'] / 1e6:.2f}"
      steps = str(meta.get("steps", "-"))
      pretext = pretext_summary(meta.get("pretext_metrics"))
      probe = probe_summary(meta.get("evaluations"))
    abbreviations = ",".join(ABBREVIATIONS[t] for t in preset.tasks)
    rows.append((name, preset.display_name, abbreviations,
                 "yes" if preset.lasso else "no",
                 "yes" if preset.harmonize else "no",
                 "yes" if built else "no", sha, params, size, steps,
                 pretext, probe))
  for name in list_registered(weights_dir):
    meta = registered_metadata(name, weights_dir)
    abbreviations = ",".join(ABBREVIATIONS[t] for t in meta["tasks"])
    rows.append((name, f"registered {meta['kind']}", abbreviations or "-",
                 "yes" if meta["lasso"] else "no",
                 "yes" if meta["harmonize"] else "no",
                 "url" if meta.get("weights_url") else "yes",
                 meta["sha256"][:12], f"{meta['params']:,}",
                 f"{meta['weights_bytes'] / 1e6:.2f}", "-",
                 pretext_summary(meta.get("pretext_metrics")),
                 probe_summary(meta.get("evaluations"))))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                   for row in rows)
  return text + ("\n" + NO_FOLDER if weights_dir is None
                 and default_folder() is None else "")


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
      "study build: " + build_command(name),
      "study flags: python -m mtssl_tf.train "
      + " ".join(preset.train_flags("study")),
      "paper recipe: python -m mtssl_tf.train " + " ".join(
          preset.paper_flags),
      "paper results: " + json.dumps(
          {k: dict(v) for k, v in preset.paper_results.items()}),
  ]
  if is_built(name, weights_dir):
    meta = load_metadata(name, weights_dir)
    keys = ("scale", "steps", "seed", "params", "weights_bytes",
            "weights_dtype", "weights_storage", "sha256",
            "final_losses", "pretext_metrics", "evaluations", "data",
            "created")
    # Committed files outlive recipe changes until the zoo is rebuilt.
    # The recipe decides, whichever dtype the file was asked to store.
    current = up_to_date(name, weights_dir=weights_dir, weights_dtype=(
        meta.get("weights_storage") or {}).get("requested", "float32"))
    lines.append("built by today's study recipe: " + (
        "yes" if current else
        f"no (rebuild: {build_command(name)} --resume)"))
    imported = meta.get("from_run")
    if imported:
      # Not trained by the build: say from which run, and what differed.
      lines.append(f"imported from run: {imported.get('run_dir')} "
                   "(differences run vs recipe: "
                   + json.dumps(imported.get("differences") or {}) + "); "
                   + str(imported.get("note", "")))
    lines.append(pretext_table(meta.get("pretext_metrics")))
    lines.append(json.dumps({k: meta.get(k) for k in keys}, indent=2))
  else:
    lines.append(NO_FOLDER if weights_dir is None and default_folder() is None
                 else "not built")
  return "\n".join(lines)
