"""The report's held-out pretext metrics table, from each run's
``pretext_metrics.json`` (the trainer's final evaluation,
:mod:`mtssl_tf.training.pretext_eval`, docs/pretext_metrics.md).

One line per row of the report, task and metric: the value (mean +- sample
std over the row's runs when it has several) beside its chance / baseline
value, as the trainer's own table shows them.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mtssl_tf.reporting.tables import MISSING, mean_std
from mtssl_tf.training import pretext_eval

# (task, JSON key of the metric, metric name, JSON key of its baseline,
# baseline name): the rows of pretext_eval.format_table, in its order.
PRETEXT_METRICS = (
    ("relative_position", "accuracy", "8-way accuracy", "chance",
     "uniform guess"),
    ("colorization", "top5_accuracy", "top-5 bin accuracy", "chance",
     "prior's top 5"),
    ("colorization", "auc", "AuC ab error (0-150)", "chance_auc",
     "prior's mode"),
    ("exemplar", "top1", "retrieval top-1", "chance", "1/N"),
    ("motion_segmentation", "iou", "IoU moving", "chance", "all static"),
    ("motion_segmentation", "iou", "IoU moving", "iou_all_moving",
     "all moving"),
)

# row label -> [(run folder, its pretext_metrics.json or None)]
RunMetrics = Mapping[str, Sequence[Tuple[str, Optional[dict]]]]


# <run_dir>/pretext_metrics.json as a dict, None when the run has none.
read_pretext_metrics = pretext_eval.read_json


def _fmt(values: Sequence[float]) -> str:
  mean, std = mean_std(values)
  if std is None:
    return f"{mean:.3f}"
  return f"{mean:.3f} \u00b1 {std:.3f} (n={len(values)})"


def pretext_rows(runs: RunMetrics) -> List[Dict[str, object]]:
  """One dict per (row, task, metric) that some run of the row measured:
  ``label, task, metric, baseline, values, chances, steps``."""
  out = []
  for label, members in runs.items():
    found = [m for _, m in members if m]
    for task, key, name, chance_key, baseline in PRETEXT_METRICS:
      have = [m[task] for m in found if key in m.get(task, {})
              and chance_key in m[task]]
      if not have:
        continue
      if task == "exemplar":
        images = sorted({int(m["images"]) for m in have if "images" in m})
        if images:
          name = f"{name} (N={'/'.join(str(n) for n in images)})"
      out.append({"label": label, "task": task, "metric": name,
                  "baseline": baseline,
                  "values": [float(m[key]) for m in have],
                  "chances": [float(m[chance_key]) for m in have],
                  "steps": sorted({int(m.get("step", -1)) for m in have})})
  return out


def pretext_table(runs: RunMetrics) -> str:
  """The Markdown section: the table, and a line naming the runs that have
  no held-out metrics."""
  lines = ["### Held-out pretext metrics", "",
           "Each pre-training run's final held-out evaluation "
           "(`<run_dir>/pretext_metrics.json`, docs/pretext_metrics.md): "
           "images and videos never trained on. Values in [0, 1]; mean "
           "\u00b1 sample std (ddof=1) over the row's runs when it has "
           "several. The baseline is a trivial prediction's score on the "
           "same held-out data. The held-out crops, pairs and views are "
           "drawn with each run's training seed, so a row's spread includes "
           "that draw.", ""]
  rows = pretext_rows(runs)
  if rows:
    lines += ["| Pre-training | task | metric | ours | baseline | step |",
              "|---|---|---|---|---|---|"]
    for r in rows:
      lines.append(
          f"| {r['label']} | {r['task']} | {r['metric']} | "
          f"{_fmt(r['values'])} | {mean_std(r['chances'])[0]:.3f} "
          f"({r['baseline']}) | "
          f"{'/'.join(str(s) for s in r['steps'])} |")
  else:
    lines.append(f"{MISSING} no run has held-out pretext metrics.")
  missing = [f"{label} (`{run}`)" for label, members in runs.items()
             for run, m in members if m is None]
  if missing:
    lines += ["", "No `pretext_metrics.json` in: " + ", ".join(missing)
              + "."]
  return "\n".join(lines)


__all__ = ["PRETEXT_METRICS", "RunMetrics", "pretext_rows", "pretext_table",
           "read_pretext_metrics"]
