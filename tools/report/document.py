"""The report document: commands, checkpoints, protocol, the paper's tables
with ours beside them, the held-out pretext metrics, Figure 5, the
analysis; and the zoo's metadata layout."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from mtssl_tf.evaluation.driver import Checkpoint
from mtssl_tf.reporting.analysis import analysis_markdown
from tools.report.pretext import RunMetrics, pretext_table
from mtssl_tf.reporting.results import PAPER_COLUMN_TITLES
from mtssl_tf.reporting.tables import (COLUMN_TITLES, MISSING, Results,
                                       Samples, markdown_table)


def _run_summary(checkpoint: Checkpoint) -> str:
  if checkpoint.kind == "random":
    seed = ("the evaluation seed" if checkpoint.init_seed is None
            else checkpoint.init_seed)
    return ("random initialisation (same architecture, trunk init seed "
            f"{seed})")
  if checkpoint.kind == "preset":
    return f"model zoo preset `{checkpoint.source}`"
  if not os.path.isdir(checkpoint.source):
    return f"file `{checkpoint.source}`"
  try:
    with open(os.path.join(checkpoint.source, "config.json")) as f:
      config = json.load(f)
  except (OSError, ValueError):
    return f"run folder `{checkpoint.source}`"
  rp = config.get("task_params", {}).get("relative_position", {})
  return (f"run folder `{checkpoint.source}`: tasks "
          f"{', '.join(config['tasks'])}; lasso "
          f"{'on' if config['lasso'] else 'off'}; relative-position colour "
          f"{rp.get('color_mode', 'drop')}; {config['steps']} steps; trunk "
          f"depth {config['trunk']['depth']}, width "
          f"{config['trunk']['width']}; training seed "
          f"{config.get('seed', '?')}")


def build_report(results: Results, checkpoints: Sequence[Checkpoint],
                 eval_params: Mapping[str, Mapping[str, Any]],
                 evaluators: Sequence[str], *, seed: int = 0,
                 command: Optional[str] = None,
                 preamble: Optional[str] = None,
                 appendix: Optional[str] = None,
                 tables: Sequence[int] = (2, 3, 4),
                 protocol: str = "demo",
                 samples: Optional[Samples] = None,
                 pretext: Optional[RunMetrics] = None,
                 alpha_plot: Optional[Tuple[str, str]] = None) -> str:
  """The whole Markdown document: commands, protocol, tables, the held-out
  pretext metrics (``pretext``: row label -> each run's
  ``pretext_metrics.json``), Figure 5 (``alpha_plot``: the PNG's link
  relative to the document, and its source), the analysis, then
  ``appendix`` (Markdown).

  ``results`` holds each row's mean, ``samples`` each run's value (rows of
  several runs show mean +- sample std)."""
  several = any(len(v) > 1 for row in (samples or {}).values()
                for v in row.values())
  scale = "at demo scale" if protocol == "demo" else f"(protocol {protocol})"
  lines = [f"# Results: the paper's Tables 2-4 {scale}", ""]
  if preamble:
    lines += [preamble.strip(), ""]
  if command:
    lines += ["Report command:", "", "```", command, "```", ""]
  lines += ["Checkpoints:", ""]
  lines += [f"- **{c.label}**: {_run_summary(c)}" for c in checkpoints]
  lines += ["", f"Evaluation protocol `{protocol}` (the same parameters "
            f"and seed {seed} for every row):", ""]
  for name in evaluators:
    params = json.dumps(eval_params.get(name, {}), sort_keys=True,
                        default=str)
    lines.append(f"- `{name}`: `{params}`")
  lines += [
      "", "Each cell is **ours (paper)**; ours in %, the paper's numbers are "
      "ResNet-101 after 16.8K GPU hours on ImageNet / VOC07 / NYU, ours a "
      "CPU demo: only the orderings can be compared, not the values. "
      f"{MISSING} = not measured (no such checkpoint). The "
      "linear-probe orderings use top-1: digits has 10 classes, so Recall@5 "
      "is near saturation. "
      + ("A row of several runs shows **mean \u00b1 std (n=runs)**, the "
         "sample standard deviation (ddof=1): a row's runs differ only in "
         "their training seed, the random-init rows only in the trunk's "
         "init seed, and every evaluation uses the same evaluation seed "
         f"({seed}: probe initialisation, data order). Orderings and the "
         "analysis use the means."
         if several else
         "One seed, no error bars: differences of a point or two are within "
         "what another seed could change."), ""]
  titles = COLUMN_TITLES if protocol == "demo" else PAPER_COLUMN_TITLES
  for number in tables:
    lines += [markdown_table(number, results, titles, samples), ""]
  if pretext is not None:
    lines += [pretext_table(pretext), ""]
  if alpha_plot is not None:
    link, source = alpha_plot
    lines += ["### Figure 5: the lasso's unit weights", "",
              f"![UnitMixer |alpha| per task over the block-3 units]({link})",
              "", f"|alpha| of each task's row over the block-3 units "
              f"(shallow to deep, whiter is larger) at the end of "
              f"pre-training, from `{source}` (the paper's Figure 5).", ""]
  lines.append(analysis_markdown(results, tables, samples))
  if appendix:
    lines += ["", appendix.strip()]
  return "\n".join(lines) + "\n"


def protocol_name(evaluator: str, params: Mapping[str, Any]) -> str:
  """``"linear_probe/digits"``, ``"depth/middlebury"``,
  ``"detection/labelme_voc_overfit"``: the evaluator and its data."""
  if evaluator == "detection":
    data = ("labelme_voc_overfit" if params.get("voc_folder") == "labelme"
            else "voc")
  else:
    data = params.get("data") or params.get("source") or "custom"
  return f"{evaluator}/{data if isinstance(data, str) else 'custom'}"


def zoo_evaluations(results: Results, label: str,
                    eval_params: Mapping[str, Mapping[str, Any]]
                    ) -> Dict[str, Dict[str, float]]:
  """Checkpoint ``label``'s metrics in the zoo's metadata layout:
  ``{"linear_probe/digits": {"top1": ..., "recall_at_5": ...}, ...}``; the
  eval-lasso ones under ``"<protocol>+eval_lasso"``."""
  out: Dict[str, Dict[str, float]] = {}
  for (name, eval_lasso), metrics in results.items():
    if name != label:
      continue
    for metric, value in metrics.items():
      evaluator, field = metric.split("/", 1)
      key = protocol_name(evaluator, eval_params.get(evaluator, {}))
      key += "+eval_lasso" if eval_lasso else ""
      out.setdefault(key, {})[field] = float(value)
  return out


__all__ = ["build_report", "protocol_name", "zoo_evaluations"]
