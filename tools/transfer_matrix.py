"""The task-transfer matrix: trunks x frozen-trunk probes, with seeds.

Each self-supervised task, trained with a fresh head on a frozen trunk and
scored on its held-out split (:class:`mtssl_tf.evaluation.PretextProbe`), is
a downstream task for every other trunk; the digits linear probe is one more
column. Rows are trunks: a seeded random initialisation, and trained trunks
given as run folders (one per seed) or zoo presets. Every row meets the same
held-out batches, training batches and probe settings.

Each cell is cached as JSON under ``--cache`` (a rerun computes only what is
missing); the table goes to ``--output`` as Markdown, with the plain reading:
in which columns each trunk beats random init by more than twice the larger
standard deviation, and which trunk is best in each column.

First look (the zoo's presets, one seed, 200-step probes; 8.4 minutes on 2
cores, docs/records/transfer_matrix_zoo.md)::

    python tools/transfer_matrix.py --rows=zoo --seeds=0 --probe_steps=200 \\
        --output=transfer_matrix_zoo.md

The study's matrix (run folders written by ``make study``, three seeds)::

    python tools/transfer_matrix.py --seeds=0,1,2 \\
        --row=RP=runs/study/rp/s{seed} --row=RP+Col=runs/study/rp_col/s{seed}
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Row names say the trunk's tasks by their abbreviations (``RP+Col``; a
# ``/...`` suffix such as ``/Lasso`` is a variant of the same tasks): the
# reading finds each column's diagonal and the multi-task rows from them. A
# zoo preset's row is its label (``Preset.label``, the study's row name).
ZOO_PRESETS = ("rp", "rp_col", "rp_col_ex", "rp_col_ex_ms",
               "rp_col_ex_ms_lasso")
PROBES = ("relative_position", "colorization", "exemplar",
          "motion_segmentation")
DIGITS = "digits"
RANDOM_ROW = "random init"

FLAGS = flags.FLAGS
flags.DEFINE_string("rows", "runs", "'zoo': the zoo's presets as rows; "
                    "'runs': the rows given with --row.")
flags.DEFINE_multi_string("row", [], "NAME=PATH: a row of run folders "
                          "(PATH may hold {seed}).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the random row and "
                  "of {seed} in --row paths.")
flags.DEFINE_list("columns", list(PROBES) + [DIGITS], "Probes to run.")
flags.DEFINE_string("flagfile_for_data", "configs/study_4task.cfg",
                    "The recipe whose data and task parameters the probes "
                    "use.")
flags.DEFINE_integer("probe_steps", 500, "Training steps of each probe.")
flags.DEFINE_float("probe_learning_rate", 1e-3, "Adam's learning rate.")
flags.DEFINE_integer("heldout_examples", 256, "Held-out examples a probe "
                     "scores.")
flags.DEFINE_string("cache", "runs/transfer_matrix", "Folder of the cells.")
flags.DEFINE_string("output", None, "Markdown file of the table (default: "
                    "printed only).")


# -- trunks -------------------------------------------------------------------

def row_sources(rows: str, row_flags: Sequence[str], seeds: Sequence[int]
                ) -> List[Tuple[str, Dict[int, str]]]:
  """``[(row name, {seed: source})]``; random init first. A source is
  ``"random"``, a zoo preset (``"zoo:rp"``) or a run folder."""
  out = [(RANDOM_ROW, {s: "random" for s in seeds})]
  if rows == "zoo":
    # A preset is one trained trunk: the seed of its training run.
    from mtssl_tf import model_zoo  # pylint: disable=g-import-not-at-top
    out += [(model_zoo.get_preset(name).label, {0: f"zoo:{name}"})
            for name in ZOO_PRESETS]
    return out
  for entry in row_flags:
    name, sep, path = entry.partition("=")
    if not sep or not name or not path:
      raise app.UsageError(f"--row={entry!r}: give NAME=PATH")
    out.append((name, {s: path.format(seed=s) for s in seeds}))
  return out


def load_trunk(source: str, trunk_config, seed: int):
  import keras  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import trunk_sources  # pylint: disable=g-import-not-at-top
  from mtssl_tf.models.trunk import Trunk  # pylint: disable=g-import-not-at-top
  if source == "random":
    keras.utils.set_random_seed(seed)
    return trunk_sources.load_trunk("random", trunk_config)
  if source.startswith("zoo:"):
    return Trunk.from_preset(source[4:])
  return trunk_sources.load_trunk(source)


# -- cells --------------------------------------------------------------------

class Cells:
  """The cached scores: ``<cache>/<row>/s<seed>/<column>.json``."""

  def __init__(self, folder: str):
    self.folder = folder

  def path(self, row: str, seed: int, column: str) -> str:
    safe = row.replace(" ", "_").replace("+", "p").replace("/", "_")
    return os.path.join(self.folder, safe, f"s{seed}", f"{column}.json")

  def get(self, row: str, seed: int, column: str) -> Optional[Dict]:
    path = self.path(row, seed, column)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def put(self, row: str, seed: int, column: str, scores: Dict) -> None:
    path = self.path(row, seed, column)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(scores, f, indent=1)
    os.replace(path + ".tmp", path)


def make_probes(columns: Sequence[str], log) -> Dict[str, object]:
  """One evaluator per column, built once (their data made once)."""
  from mtssl_tf import options  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import protocols  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation.linear_probe import LinearProbe  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation.pretext_probe import PretextProbe  # pylint: disable=g-import-not-at-top
  config = options.parse_args(
      [f"--flagfile={FLAGS.flagfile_for_data}",
       f"--run_dir={os.path.join(FLAGS.cache, 'data')}",
       f"--pretext_eval_examples={FLAGS.heldout_examples}"],
      root=REPO).config
  probes = {}
  for column in columns:
    if column == DIGITS:
      params = protocols.protocol_params("demo", ["linear_probe"])
      probes[column] = LinearProbe(**params["linear_probe"])
    else:
      probes[column] = PretextProbe(
          config, column, steps=FLAGS.probe_steps,
          learning_rate=FLAGS.probe_learning_rate, log=log)
  return probes, config


def headline(column: str, scores: Dict) -> Tuple[float, Optional[float]]:
  """The cell's number and its chance level (None: no chance level)."""
  if column == DIGITS:
    return scores["linear_probe/top1"], None
  from mtssl_tf import tasks  # pylint: disable=g-import-not-at-top
  metric = tasks.get_task_class(column).headline_metric
  return scores[metric], scores.get("chance")


def fill(cells: Cells, rows, columns, log) -> None:
  """Computes every missing cell (one trunk at a time)."""
  missing = [(row, seed, source) for row, sources in rows
             for seed, source in sources.items()
             if any(cells.get(row, seed, c) is None for c in columns)]
  if not missing:
    return
  probes, config = make_probes(columns, log)
  for n, (row, seed, source) in enumerate(missing, start=1):
    trunk = load_trunk(source, config.trunk, seed)
    for column in columns:
      if cells.get(row, seed, column) is not None:
        continue
      start = time.time()
      scores = (dict(probes[column].run(trunk, log=log))
                if column == DIGITS else
                probes[column].evaluate(trunk, log=log))
      scores["seconds"] = round(time.time() - start, 1)
      cells.put(row, seed, column, scores)
      log(f"[{n}/{len(missing)}] {row} s{seed} {column}: "
          f"{headline(column, scores)[0]:.3f} ({scores['seconds']:.0f} s)")


# -- the table ----------------------------------------------------------------

def summary(values: Sequence[float]) -> Tuple[float, float]:
  mean = statistics.fmean(values)
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return mean, std


def table(cells: Cells, rows, columns) -> Tuple[List[str], Dict]:
  """Markdown lines and ``{row: {column: (mean, std, n)}}``."""
  stats: Dict[str, Dict[str, Tuple[float, float, int]]] = {}
  chance: Dict[str, Optional[float]] = {}
  for row, sources in rows:
    stats[row] = {}
    for column in columns:
      got = [cells.get(row, s, column) for s in sources]
      values = [headline(column, g)[0] for g in got if g is not None]
      if got and got[0] is not None:
        chance[column] = headline(column, got[0])[1]
      if values:
        stats[row][column] = summary(values) + (len(values),)
  head = "| trunk | " + " | ".join(_column_title(c) for c in columns) + " |"
  lines = [head, "|" + "---|" * (len(columns) + 1)]
  for row, _ in rows:
    cells_text = [_cell_text(stats[row].get(c)) for c in columns]
    lines.append(f"| {row} | " + " | ".join(cells_text) + " |")
  lines.append("| chance | " + " | ".join(
      "" if chance.get(c) is None else f"{chance[c]:.3f}"
      for c in columns) + " |")
  return lines, stats


def _column_title(column: str) -> str:
  if column == DIGITS:
    return "digits probe top-1"
  from mtssl_tf import tasks  # pylint: disable=g-import-not-at-top
  cls = tasks.get_task_class(column)
  return f"{tasks.ABBREVIATIONS[column]} probe {cls.headline_metric}"


def _cell_text(stat) -> str:
  if stat is None:
    return "-"
  mean, std, n = stat
  return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"


def row_tasks(row: str) -> Optional[frozenset]:
  """The tasks a row's trunk was trained on, from its name (``"RP+Col/H"``
  -> relative position and colorization); None for a name that is not
  task abbreviations (random init)."""
  from mtssl_tf import tasks  # pylint: disable=g-import-not-at-top
  by_abbreviation = {a: t for t, a in tasks.ABBREVIATIONS.items()}
  parts = row.split("/")[0].split("+")
  if not all(p in by_abbreviation for p in parts):
    return None
  return frozenset(by_abbreviation[p] for p in parts)


def reading(stats, rows, columns) -> List[str]:
  """The plain reading: where each trunk beats random init by more than
  twice the larger standard deviation, the best trunk per column, and per
  column where the rows trained on every probed task stand among the
  trained rows off the diagonal (the diagonal: the single-task trunk of the
  column's own task). Near-best: within twice the larger standard deviation
  of the best."""
  lines = []
  # With one run per cell there is no standard deviation to read a margin
  # against: the ranks are given, "beats" and "near-best" are not.
  seeded = any(stat[2] > 1 for row in stats.values() for stat in row.values())
  if not seeded:
    lines.append("- One run per cell: no standard deviation, so no cell is "
                 "read as beating random init or as near the best; a few "
                 "hundredths are within what another seed moves.")
  random_stats = stats.get(RANDOM_ROW, {})
  for row, _ in rows[1:] if seeded else ():
    beats = []
    for column in columns:
      got, base = stats[row].get(column), random_stats.get(column)
      if got is None or base is None:
        continue
      margin = 2 * max(got[1], base[1])
      if got[0] - base[0] > margin:
        beats.append(_column_title(column))
    lines.append(f"- {row} beats random init in: "
                 + (", ".join(beats) if beats else "no column"))
  for column in columns:
    ranked = sorted((stats[r][column][0], r) for r, _ in rows
                    if column in stats[r])
    if ranked:
      lines.append(f"- best in {_column_title(column)}: {ranked[-1][1]} "
                   f"({ranked[-1][0]:.3f})")
  every_task = frozenset(c for c in columns if c != DIGITS)
  trained = {r: row_tasks(r) for r, _ in rows}
  trained = {r: t for r, t in trained.items() if t is not None}
  multi = [r for r, t in trained.items() if every_task and t >= every_task]
  for column in columns:
    off = sorted(((stats[r][column], r) for r, t in trained.items()
                  if column in stats[r] and t != frozenset([column])),
                 key=lambda item: -item[0][0])
    if not multi or len(off) < 2:
      continue
    best, best_row = off[0]
    order = [r for _, r in off]
    places = []
    for row in multi:
      if row not in order:
        continue
      place = order.index(row) + 1
      got = stats[row][column]
      near = best[0] - got[0] <= 2 * max(best[1], got[1])
      places.append(f"{row} {place} of {len(off)} ({got[0]:.3f}"
                    + ("" if place == 1 or not seeded else
                       ", near-best" if near else ", not near the best")
                    + ")")
    lines.append(f"- {_column_title(column)}, trained rows off the "
                 f"diagonal: best {best_row} ({best[0]:.3f}); "
                 + "; ".join(places))
  return lines


def main(argv):
  del argv
  seeds = [int(s) for s in FLAGS.seeds]
  rows = row_sources(FLAGS.rows, FLAGS.row, seeds)
  unknown = [c for c in FLAGS.columns if c != DIGITS and c not in PROBES]
  if unknown:
    raise app.UsageError(f"--columns: unknown {unknown}; known: "
                         f"{', '.join(PROBES + (DIGITS,))}")
  log = lambda line: print(line, flush=True)  # noqa: E731
  cells = Cells(FLAGS.cache)
  start = time.time()
  fill(cells, rows, FLAGS.columns, log)
  lines, stats = table(cells, rows, FLAGS.columns)
  text = "\n".join(lines + [""] + reading(stats, rows, FLAGS.columns))
  print(text)
  print(f"(this run: {time.time() - start:.0f} s)")
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  app.run(main)
