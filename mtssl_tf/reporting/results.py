"""The evaluate command's outputs: one Table-2-layout Markdown table of a
checkpoint and its random baseline, and the metrics as JSON."""
from __future__ import annotations

import json
import os
import sys
from typing import Callable, Mapping

from mtssl_tf.evaluation.driver import EvalConfig, EvalResults
from mtssl_tf.evaluation.paper_tables import PaperRow
from mtssl_tf.reporting import tables
from mtssl_tf.reporting.analysis import probe_vs_random

# Column titles under the paper protocol (the demo's are tables.COLUMN_TITLES).
PAPER_COLUMN_TITLES = {
    "imagenet": "ImageNet linear probe top-1 / Recall@5 (paper: Recall@5)",
    "pascal": "VOC07 detection mAP",
    "nyu": "NYU depth \u03b4<1.25",
}


def metrics_table(metrics: Mapping[str, float]) -> str:
  """``| metric | value |`` lines, four decimals."""
  lines = ["| metric | value |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
  return "\n".join(lines)


def results_markdown(config: EvalConfig, results: EvalResults) -> str:
  """The results in the paper's Table 2 layout (ours, the paper's number in
  brackets), each row's metrics, and any failure."""
  table = {(label, config.eval_lasso): outcome.metrics
           for label, outcome in results.rows.items()}
  rows = []
  for label in results.rows:
    paper = tables.paper_row(label, config.eval_lasso)
    rows.append(PaperRow(
        label + (" + eval lasso" if config.eval_lasso else ""), label,
        config.eval_lasso,
        paper.values if paper else (None, None, None)))
  titles = (tables.COLUMN_TITLES if config.protocol == "demo"
            else PAPER_COLUMN_TITLES)
  lines = [tables.rows_table(
      f"Evaluation of {config.checkpoint} (protocol {config.protocol}; "
      "Table 2 layout)", "Pre-training", rows, table, titles), ""]
  lines.append(f"Each cell is ours in % (the paper's ResNet-101 number in "
               f"brackets; {tables.MISSING} = not measured). Protocol "
               f"`{config.protocol}`, seed {config.seed}.")
  probe = probe_vs_random(table)
  if probe and not config.eval_lasso:
    c = probe[0]
    lines.append(f"Linear probe top-1: {c.label} {100 * c.ours:.1f} vs random "
                 f"init {100 * c.random:.1f} ({100 * (c.ours - c.random):+.1f}"
                 " points).")
  if results.failures:
    lines += ["", "Failed evaluations:", ""]
    lines += [f"- {k}: {v}" for k, v in results.failures.items()]
  lines += ["", "All metrics:", ""]
  for label, outcome in results.rows.items():
    lines += [f"{label}:", "", metrics_table(outcome.metrics), ""]
  return "\n".join(lines).rstrip() + "\n"


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically, making its folder."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def write_results(path: str, config: EvalConfig,
                  results: EvalResults) -> None:
  """Writes ``{"config", "metrics", "rows", "failures"}`` as JSON,
  atomically; ``metrics`` are the checkpoint's."""
  write_text(path, json.dumps(
      {"config": config.to_dict(), "metrics": results.metrics,
       "rows": {k: {"metrics": v.metrics, "failures": v.failures}
                for k, v in results.rows.items()},
       "failures": results.failures},
      indent=2, sort_keys=True, default=str) + "\n")


def publish(config: EvalConfig, results: EvalResults,
            log: Callable[[str], None] = print) -> int:
  """Logs the Markdown, writes ``config.output`` and ``config.markdown``,
  names the failed evaluations; returns the exit status (1 if any failed,
  else 0)."""
  text = results_markdown(config, results)
  log(text)
  if config.output:
    write_results(config.output, config, results)
    log(f"wrote {config.output}")
  if config.markdown:
    write_text(config.markdown, text)
    log(f"wrote {config.markdown}")
  if results.failures:
    print("error: evaluation(s) failed (the other results were written): "
          + "; ".join(f"{k}: {v}" for k, v in results.failures.items()),
          file=sys.stderr)
    return 1
  return 0


__all__ = ["PAPER_COLUMN_TITLES", "metrics_table", "publish",
           "results_markdown", "write_results", "write_text"]
