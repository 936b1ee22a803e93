"""The paper's tables with our numbers beside the paper's: labels, cells, rows.

Doersch & Zisserman (ICCV 2017) compare pre-trained trunks three ways
(ImageNet linear probe Recall@5, PASCAL VOC07 detection mAP, NYU depth % of
pixels with delta < 1.25) in Table 2 (task combinations), Table 3
(harmonization) and Table 4 (lasso in pre-training x eval lasso). The
paper's numbers come from :mod:`mtssl_tf.evaluation.paper_tables`; ours are
``{(checkpoint label, eval_lasso): {metric: value in [0, 1]}}``
(:data:`Results`). Each cell reads "ours (paper)".
"""
from __future__ import annotations

import math
import re
from typing import List, Mapping, Optional, Sequence, Tuple

from mtssl_tf.evaluation.driver import RANDOM_LABEL
from mtssl_tf.evaluation.paper_tables import PAPER_TABLES, PaperRow
from mtssl_tf.model_zoo import presets as zoo_presets

MISSING = "\u2014"  # an em dash marks a value we do not have
# The paper's three evaluation columns.
COLUMNS = ("imagenet", "pascal", "nyu")
# Our metric for each paper column (the first one orders the rows; for the
# probe the second, Recall@5, is shown beside it).
OUR_METRICS = {"imagenet": ("linear_probe/top1", "linear_probe/recall_at_5"),
               "pascal": ("detection/map",),
               "nyu": ("depth/delta1",)}
ORDER_METRIC = {c: m[0] for c, m in OUR_METRICS.items()}
COLUMN_TITLES = {
    "imagenet": "Linear probe top-1 / Recall@5, digits (paper: ImageNet "
                "Recall@5)",
    "pascal": "Detection mAP, labelme VOC overfit (paper: VOC07 mAP)",
    "nyu": "Depth \u03b4<1.25, Middlebury (paper: NYU)",
}
# Linear-probe margins (top-1 points) below this are called out as noise.
NOISE_POINTS = 1.0


KNOWN_LABELS = tuple(dict.fromkeys(
    r.checkpoint for t in PAPER_TABLES.values() for r in t.rows))
# Zoo preset name -> row label, for --presets without an explicit label.
PRESET_LABELS = {name: preset.label
                 for name, preset in zoo_presets.PRESETS.items()}


def canonical_label(label: str) -> str:
  """The known row label that ``label`` names (spaces and case ignored).

  Raises:
    ValueError: an unknown label; the message lists the known ones.
  """
  key = re.sub(r"\s+", "", label).lower()
  if key == RANDOM_LABEL.replace(" ", "").lower() or key == "random":
    return RANDOM_LABEL
  for known in KNOWN_LABELS:
    if known.lower() == key:
      return known
  raise ValueError(f"unknown row label {label!r}; known labels: "
                   f"{', '.join(KNOWN_LABELS)} (and {RANDOM_LABEL!r})")


# (checkpoint label, eval_lasso) -> {metric: value in [0, 1]}
Results = Mapping[Tuple[str, bool], Mapping[str, float]]
# (checkpoint label, eval_lasso) -> {metric: [each run's value]}
Samples = Mapping[Tuple[str, bool], Mapping[str, Sequence[float]]]


def our_value(results: Results, checkpoint: str, eval_lasso: bool,
              metric: str) -> Optional[float]:
  """Our ``metric`` of row (``checkpoint``, ``eval_lasso``); None if not
  measured."""
  value = results.get((checkpoint, eval_lasso), {}).get(metric)
  return None if value is None else float(value)


def _pct(value: Optional[float]) -> str:
  return MISSING if value is None else f"{100.0 * value:.1f}"


def _paper(value: Optional[float]) -> str:
  return MISSING if value is None else f"{value:.2f}"


def table_rows(number: int) -> List[PaperRow]:
  """The paper's rows of table ``number`` followed by the random row."""
  rows = list(PAPER_TABLES[number].rows)
  rows.append(PaperRow(RANDOM_LABEL, RANDOM_LABEL, False,
                       (None, None, None)))
  return rows


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
  """The mean and the sample standard deviation (ddof=1: the spread of the
  population the runs are drawn from, not of these runs alone); the std is
  None for fewer than two values."""
  values = [float(v) for v in values]
  if not values:
    raise ValueError("mean_std of no values")
  mean = math.fsum(values) / len(values)
  if len(values) < 2:
    return mean, None
  var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
  return mean, math.sqrt(var)


def cell(results: Results, row: PaperRow, column: str,
         samples: Optional[Samples] = None) -> str:
  """``"ours (paper)"``; our values in %, a missing one as an em dash.

  With ``samples`` holding several values for the row (several runs),
  ours reads ``"mean \u00b1 std (n=3)"`` (sample std, ddof=1), each
  metric of the column so.
  """
  row_samples = (samples or {}).get((row.checkpoint, row.eval_lasso), {})
  metrics = OUR_METRICS[column]
  counts = [len(row_samples.get(m, ())) for m in metrics]
  parts = []
  for metric, count in zip(metrics, counts):
    if count > 1:
      mean, std = mean_std(row_samples[metric])
      parts.append(f"{100.0 * mean:.1f} \u00b1 {100.0 * std:.1f}")
    else:
      parts.append(_pct(our_value(results, row.checkpoint, row.eval_lasso,
                                  metric)))
  ours = " / ".join(parts)
  if max(counts) > 1:
    ours += f" (n={'/'.join(str(c) for c in dict.fromkeys(counts))})"
  paper = row.values[COLUMNS.index(column)]
  return f"{ours} ({_paper(paper)})"


def rows_table(title: str, first: str, rows: Sequence[PaperRow],
               results: Results,
               titles: Optional[Mapping[str, str]] = None,
               samples: Optional[Samples] = None) -> str:
  """A Markdown table in the paper's layout: one line per row, columns =
  the three evaluations, each cell "ours (paper)" (``samples``: several
  runs' values per row, shown as mean \u00b1 std)."""
  titles = titles or COLUMN_TITLES
  lines = [f"### {title}", "",
           "| " + " | ".join([first] + [titles[c] for c in COLUMNS]) + " |",
           "|" + "---|" * (1 + len(COLUMNS))]
  for row in rows:
    lines.append("| " + " | ".join(
        [row.name] + [cell(results, row, c, samples) for c in COLUMNS])
                 + " |")
  return "\n".join(lines)


def markdown_table(number: int, results: Results,
                   titles: Optional[Mapping[str, str]] = None,
                   samples: Optional[Samples] = None) -> str:
  """Table ``number`` in Markdown: rows = the paper's rows plus random init,
  columns = the three evaluations (``titles``: their headers, default the
  demo protocol's), each cell "ours (paper)" (``samples``: see
  :func:`cell`)."""
  table = PAPER_TABLES[number]
  first = "Net structure" if number == 4 else "Pre-training"
  return rows_table(f"Table {number}: {table.title}", first,
                    table_rows(number), results, titles, samples)


def paper_row(label: str, eval_lasso: bool = False) -> Optional[PaperRow]:
  """The paper's row for checkpoint ``label`` (e.g. ``"RP+Col"``,
  ``"RP+Col+Ex+MS/Lasso"``) evaluated with or without eval lasso, from
  Tables 2, 3 or 4; None when the paper has no such row."""
  for number in (2, 3, 4):
    for row in PAPER_TABLES[number].rows:
      if row.checkpoint == label and row.eval_lasso == eval_lasso:
        return row
  return None


__all__ = ["COLUMNS", "COLUMN_TITLES", "KNOWN_LABELS", "MISSING",
           "NOISE_POINTS", "ORDER_METRIC", "OUR_METRICS", "PRESET_LABELS",
           "RANDOM_LABEL", "Results", "Samples", "canonical_label", "cell",
           "markdown_table", "mean_std", "our_value", "paper_row", "rows_table",
           "table_rows"]
