"""The closing summary of ``make demo``: what the trained trunk learned, in
two tables with one line each on what the numbers mean at this scale.

* The held-out pretext table (``<run>/pretext_metrics.json``, written by the
  trainer): each task scored on photos and videos kept out of training,
  beside its chance level (:func:`mtssl_tf.training.pretext_eval.format_table`).
* The downstream table (``<run>/results.json``, written by
  ``python -m mtssl_tf.evaluate --checkpoint=<run>``): the trained trunk
  against a random-init trunk of the same architecture.

    python -m mtssl_tf.demo_summary runs/demo

>>> print(demo_summary("runs/demo"))  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import textwrap
from typing import Any, List, Mapping, Optional, Tuple

from mtssl_tf.evaluation.driver import RANDOM_LABEL

PRETEXT_JSON = "pretext_metrics.json"
RESULTS_JSON = "results.json"
# The downstream metrics of the demo protocol, in the paper's column order:
# (metric, what it is at demo scale).
DOWNSTREAM = (
    ("linear_probe/top1", "linear probe top-1, digits"),
    ("linear_probe/recall_at_5", "linear probe Recall@5, digits"),
    ("detection/map", "detection mAP, labelme VOC overfit"),
    ("depth/delta1", "depth \u03b4<1.25, Middlebury"),
)
PRETEXT_MEANING = (
    "Each task is scored on photos and video frames kept out of training: a "
    "value above its chance level means the trunk learned the task beyond "
    "guessing. This is a CPU-scale demo (minutes of training on ~60 offline "
    "photos and clips): expect small margins, not the paper's numbers.")
DOWNSTREAM_MEANING = (
    "The same evaluations of the pre-trained trunk and of a random-init trunk "
    "of the same shape. They are weak stand-ins for the paper's ImageNet / "
    "VOC07 / NYU evaluations: random conv features already do well on the "
    "digits linear probe, so a small or negative margin there is expected at "
    "this scale.")
WIDTH = 79


def _load(path: str) -> Optional[Any]:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def downstream_rows(results: Mapping[str, Any]
                    ) -> Tuple[str, List[Tuple[str, Optional[float],
                                               Optional[float]]]]:
  """``(trained row label, [(description, trained, random)])`` from an
  evaluate command's ``results.json`` (values in [0, 1]; None: not
  measured)."""
  rows = results.get("rows", {})
  trained = next((label for label in rows if label != RANDOM_LABEL), None)
  ours = rows.get(trained, {}).get("metrics", {}) if trained else {}
  random = rows.get(RANDOM_LABEL, {}).get("metrics", {})
  out = [(description, ours.get(metric), random.get(metric))
         for metric, description in DOWNSTREAM
         if metric in ours or metric in random]
  return trained or "trained", out


def _pct(value: Optional[float]) -> str:
  return "\u2014" if value is None else f"{100.0 * value:.1f}"


def downstream_table(results: Mapping[str, Any]) -> str:
  """Trained vs random init in %, with the difference in points."""
  label, rows = downstream_rows(results)
  lines = [f"downstream evaluations, % (trained = {label}):",
           f"  {'evaluation':<36} {'trained':>8} {'random':>8} "
           f"{'diff':>7}"]
  for description, ours, random in rows:
    diff = ("" if ours is None or random is None
            else f"{100.0 * (ours - random):+.1f}")
    lines.append(f"  {description:<36} {_pct(ours):>8} {_pct(random):>8} "
                 f"{diff:>7}")
  for name, message in results.get("failures", {}).items():
    lines.append(f"  failed: {name}: {message}")
  return "\n".join(lines)


def demo_summary(run_dir: str) -> str:
  """The summary of a demo run folder: the held-out pretext table and the
  downstream table, each followed by one line on what it means. A missing
  output is named with the command that makes it."""
  from mtssl_tf.training import pretext_eval  # pylint: disable=g-import-not-at-top

  parts = [f"Summary of {run_dir}", ""]
  pretext = _load(os.path.join(run_dir, PRETEXT_JSON))
  if pretext:
    parts += [pretext_eval.format_table(pretext),
              textwrap.fill(PRETEXT_MEANING, WIDTH)]
  else:
    parts.append(f"No held-out pretext metrics ({run_dir}/{PRETEXT_JSON} "
                 "is missing): train first, python -m mtssl_tf.train "
                 "--flagfile=configs/demo.cfg")
  parts.append("")
  results = _load(os.path.join(run_dir, RESULTS_JSON))
  if results:
    parts += [downstream_table(results),
              textwrap.fill(DOWNSTREAM_MEANING, WIDTH)]
  else:
    parts.append(f"No downstream results ({run_dir}/{RESULTS_JSON} is "
                 "missing): python -m mtssl_tf.evaluate "
                 f"--checkpoint={run_dir}")
  return "\n".join(parts)


def complete(run_dir: str) -> bool:
  """Whether both outputs that the summary reads exist."""
  return all(os.path.isfile(os.path.join(run_dir, name))
             for name in (PRETEXT_JSON, RESULTS_JSON))


__all__ = ["DOWNSTREAM", "complete", "demo_summary", "downstream_rows",
           "downstream_table"]
