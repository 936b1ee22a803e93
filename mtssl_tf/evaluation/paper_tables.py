"""The paper's numbers: Doersch & Zisserman (ICCV 2017), Tables 2, 3 and 4.

The one place in the package that holds them. The report
(:mod:`mtssl_tf.reporting`) prints them beside ours; each model-zoo preset
(:mod:`mtssl_tf.model_zoo.presets`) carries its rows, looked up here by the
row's checkpoint label (:func:`results_for`).

Every value is in % (ResNet-101 v2 trunks, 16.8K GPU hours): ImageNet
linear-probe Recall@5, PASCAL VOC07 detection mAP, NYU depth % of pixels
with delta < 1.25. Table 3's RP row has NYU 80.23 where Table 2 has 80.54:
both as printed.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Tuple

from mtssl_tf.tasks import ABBREVIATIONS

# Metric names of the three columns, in the tables' order.
METRICS = ("imagenet_recall5", "voc07_map", "nyu_pct_below_1.25")


@dataclasses.dataclass(frozen=True)
class PaperRow:
  """One row of a paper table.

  Attributes:
    name: the row's name in the paper.
    checkpoint: the checkpoint label whose evaluation fills the row
      (``"RP+Col"``, ``"RP/H"``, ``"RP+Col+Ex+MS/Lasso"``: the row name
      without spaces, ``/Lasso`` for the trunk pre-trained with the lasso).
    eval_lasso: whether the row's evaluation learns a fresh mixer row.
    values: ImageNet Recall@5, PASCAL mAP, NYU % pixels delta < 1.25, in %.
  """
  name: str
  checkpoint: str
  eval_lasso: bool
  values: Tuple[float, float, float]

  @property
  def key(self) -> str:
    """A snake-case key of the row's name (``"pretrain_and_eval_lasso"``)."""
    name = self.name.lower().replace("&", "and").replace("-", "")
    return "_".join(name.split())


@dataclasses.dataclass(frozen=True)
class PaperTable:
  number: int
  title: str
  rows: Tuple[PaperRow, ...]


def _rows(entries, eval_lasso=False) -> Tuple[PaperRow, ...]:
  return tuple(PaperRow(name, name.replace(" ", ""), eval_lasso, values)
               for name, values in entries)


PAPER_TABLES: Dict[int, PaperTable] = {
    2: PaperTable(2, "Combinations of self-supervised tasks", _rows((
        ("RP", (59.21, 66.75, 80.54)),
        ("RP+Col", (66.64, 68.75, 79.87)),
        ("RP+Ex", (65.24, 69.44, 78.70)),
        ("RP+MS", (63.73, 68.81, 78.72)),
        ("RP+Col+Ex", (68.65, 69.48, 80.17)),
        ("RP+Col+Ex+MS", (69.30, 70.53, 79.25)),
        ("INet Labels", (85.10, 74.17, 80.06)),
    ))),
    3: PaperTable(3, "Harmonization (H: relative position sees Lab L "
                  "copied to 3 channels)", _rows((
                      ("RP", (59.21, 66.75, 80.23)),
                      ("RP / H", (62.33, 66.15, 80.39)),
                      ("RP+Col", (66.64, 68.75, 79.87)),
                      ("RP+Col / H", (68.08, 68.26, 79.69)),
                  ))),
    4: PaperTable(4, "Lasso in pre-training and in evaluation "
                  "(RP+Col+Ex+MS)", (
                      PaperRow("No Lasso", "RP+Col+Ex+MS", False,
                               (69.30, 70.53, 79.25)),
                      PaperRow("Eval Only Lasso", "RP+Col+Ex+MS", True,
                               (70.18, 68.86, 79.41)),
                      PaperRow("Pre-train Only Lasso", "RP+Col+Ex+MS/Lasso",
                               False, (68.09, 68.49, 78.96)),
                      PaperRow("Pre-train & Eval Lasso", "RP+Col+Ex+MS/Lasso",
                               True, (69.44, 68.98, 79.45)),
                  )),
}


# Task name -> its abbreviation in the paper's row names, in the rows' order
# (declared with the tasks).
TASK_ABBREVIATIONS = ABBREVIATIONS


def paper_label(tasks: Iterable[str], harmonize: bool = False,
                lasso: bool = False) -> str:
  """The checkpoint label of a pre-training run: ``"RP+Col/H"`` for
  harmonized RP+Col, ``"RP+Col+Ex+MS/Lasso"`` for the four tasks with the
  lasso; tasks in the paper's order whatever order they were given in.

  Raises:
    ValueError: a task the paper has no abbreviation for.
  """
  tasks = set(tasks)
  unknown = sorted(tasks - set(TASK_ABBREVIATIONS))
  if unknown:
    raise ValueError(f"no paper abbreviation for task(s) {', '.join(unknown)}"
                     f"; known: {', '.join(TASK_ABBREVIATIONS)}")
  label = "+".join(a for t, a in TASK_ABBREVIATIONS.items() if t in tasks)
  return label + ("/H" if harmonize else "") + ("/Lasso" if lasso else "")


def results_for(checkpoint: str) -> Dict[str, Dict[str, float]]:
  """Every paper number of the trunk labelled ``checkpoint``.

  Returns:
    ``{"table2": {metric: value}, "table3": ..., "table4_<row key>": ...}``
    for the tables that have a row of that checkpoint (Tables 2 and 3 by
    table, Table 4 by row: its rows share checkpoints). Empty if none.
  """
  out: Dict[str, Dict[str, float]] = {}
  for number, table in PAPER_TABLES.items():
    for row in table.rows:
      if row.checkpoint != checkpoint:
        continue
      key = f"table{number}" if number != 4 else f"table4_{row.key}"
      out[key] = dict(zip(METRICS, row.values))
  return out
