"""The transfer matrix's table and plain reading (tools/transfer_matrix.py),
on cached cells with known numbers: mean ± sample std over seeds, the chance
row, "beats random init" at twice the larger std, the best row per column."""
import statistics

import pytest
from absl import app

from mtssl_tf import tasks
from tools import transfer_matrix as tm


def _cells(tmp_path, values):
  """``values``: {row: {column: [per-seed headline]}} -> a filled cache."""
  cells = tm.Cells(str(tmp_path))
  for row, columns in values.items():
    for column, per_seed in columns.items():
      for seed, value in enumerate(per_seed):
        scores = ({"linear_probe/top1": value} if column == tm.DIGITS else
                  {tasks.get_task_class(column).headline_metric: value,
                   "chance": 0.125})
        cells.put(row, seed, column, scores)
  return cells


def test_table_and_reading_from_cached_cells(tmp_path):
  rp = "relative_position"
  values = {tm.RANDOM_ROW: {rp: [0.15, 0.17, 0.16], tm.DIGITS: [0.80, 0.82, 0.81]},
            "RP": {rp: [0.30, 0.32, 0.31], tm.DIGITS: [0.79, 0.83, 0.81]}}
  cells = _cells(tmp_path, values)
  rows = [(tm.RANDOM_ROW, {0: "random", 1: "random", 2: "random"}),
          ("RP", {0: "r0", 1: "r1", 2: "r2"})]
  columns = [rp, tm.DIGITS]
  lines, stats = tm.table(cells, rows, columns)
  mean, std, n = stats["RP"][rp]
  assert n == 3
  assert mean == pytest.approx(statistics.fmean(values["RP"][rp]))
  assert std == pytest.approx(statistics.stdev(values["RP"][rp]))
  assert lines[2] == "| random init | 0.160 ± 0.010 | 0.810 ± 0.010 |"
  assert lines[3] == "| RP | 0.310 ± 0.010 | 0.810 ± 0.020 |"
  assert lines[-1] == "| chance | 0.125 |  |"
  reading = tm.reading(stats, rows, columns)
  # RP: 0.31 - 0.16 > 2 x 0.01 on its own probe; equal means on digits.
  assert reading[0] == "- RP beats random init in: RP probe accuracy"
  assert "- best in RP probe accuracy: RP (0.310)" in reading


def test_rows_from_flags_and_the_zoo():
  rows = tm.row_sources("runs", ["RP=runs/study/rp/s{seed}"], [0, 2])
  assert rows == [(tm.RANDOM_ROW, {0: "random", 2: "random"}),
                  ("RP", {0: "runs/study/rp/s0", 2: "runs/study/rp/s2"})]
  zoo = tm.row_sources("zoo", [], [0])
  assert [name for name, _ in zoo][:2] == [tm.RANDOM_ROW, "RP"]
  assert tm.row_tasks(zoo[-1][0]) == {"relative_position", "colorization",
                                      "exemplar", "motion_segmentation"}
  assert zoo[1][1] == {0: "zoo:rp"}
  with pytest.raises(app.UsageError, match="give NAME=PATH"):
    tm.row_sources("runs", ["RP"], [0])


def test_reading_places_the_multi_task_rows_off_the_diagonal(tmp_path):
  rp, col = "relative_position", "colorization"
  # RP probe: the RP trunk (the diagonal) is best but not counted; off the
  # diagonal Col leads, the two-task rows follow. Col probe: RP+Col leads.
  values = {tm.RANDOM_ROW: {rp: [0.15, 0.15], col: [0.30, 0.30]},
            "RP": {rp: [0.50, 0.50], col: [0.31, 0.33]},
            "Col": {rp: [0.40, 0.42], col: [0.40, 0.40]},
            "RP+Col": {rp: [0.40, 0.41], col: [0.45, 0.45]},
            "RP+Col/Lasso": {rp: [0.20, 0.22], col: [0.44, 0.44]}}
  cells = _cells(tmp_path, values)
  rows = [(r, {0: "x", 1: "x"}) for r in values]
  lines, stats = tm.table(cells, rows, [rp, col])
  reading = tm.reading(stats, rows, [rp, col])
  assert tm.row_tasks("RP+Col/Lasso") == {rp, col}
  assert tm.row_tasks(tm.RANDOM_ROW) is None
  # RP probe, off the diagonal (RP excluded): Col 0.41, RP+Col 0.405,
  # RP+Col/Lasso 0.21. RP+Col is within 2 x 0.014 of Col; the lasso row is
  # not.
  assert reading[-2] == (
      "- RP probe accuracy, trained rows off the diagonal: best Col (0.410);"
      " RP+Col 2 of 3 (0.405, near-best); RP+Col/Lasso 3 of 3 (0.210, not "
      "near the best)")
  # Col probe, off the diagonal (Col excluded): RP+Col leads; one
  # hundredth below it with zero spread is not near-best.
  assert reading[-1] == (
      "- Col probe top5_accuracy, trained rows off the diagonal: best RP+Col"
      " (0.450); RP+Col 1 of 3 (0.450); RP+Col/Lasso 2 of 3 (0.440, not "
      "near the best)")


def test_one_run_per_cell_gives_ranks_without_margins(tmp_path):
  rp = "relative_position"
  values = {tm.RANDOM_ROW: {rp: [0.15]}, "RP": {rp: [0.40]},
            "Col": {rp: [0.30]}, "RP+Col": {rp: [0.29]}}
  cells = _cells(tmp_path, values)
  rows = [(r, {0: "x"}) for r in values]
  _, stats = tm.table(cells, rows, [rp])
  reading = tm.reading(stats, rows, [rp])
  assert reading[0].startswith("- One run per cell: no standard deviation")
  assert not any("beats random init" in line for line in reading)
  assert reading[-1] == ("- RP probe accuracy, trained rows off the "
                         "diagonal: best Col (0.300); RP+Col 2 of 2 (0.290)")
