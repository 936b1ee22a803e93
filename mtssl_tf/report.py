"""The paper's Tables 2, 3 and 4, measured on our checkpoints: the report.

    python -m mtssl_tf.report \\
        --runs=RP=runs/demo_rp,RP+Col=runs/demo_rp_col,RP+Col+Ex+MS=runs/demo_4task \\
        --output=RESULTS.md
    python -m mtssl_tf.report --presets=rp,rp_col,rp_col_ex_ms --output=RESULTS.md

Doersch & Zisserman (ICCV 2017) compare pre-trained trunks three ways
(ImageNet linear probe Recall@5, PASCAL VOC07 detection mAP, NYU depth % of
pixels with delta < 1.25) in Table 2 (task combinations), Table 3
(harmonization) and Table 4 (lasso in pre-training x eval lasso). This
command evaluates every checkpoint it is given, plus a random-initialised
trunk of the same architecture, with the same evaluation parameters and
seeds, and prints the three tables in Markdown with the paper's number
beside ours ("ours (paper)"), followed by an analysis generated from the
numbers: whether every pre-trained trunk beats the random one on the linear
probe, and which of the paper's orderings hold at our scale.

Checkpoints are named by row label (``--runs=LABEL=RUN_DIR,...``; labels
are the paper's rows, spaces ignored: ``RP``, ``RP+Col``, ``RP/H``,
``RP+Col+Ex+MS``, ``RP+Col+Ex+MS/Lasso`` for the run pre-trained with lasso,
...), or taken from the model zoo (``--presets=rp,rp_col,...`` or
``--presets=LABEL=name``). Table 4's rows are (pre-trained without / with
lasso) x (eval lasso off / on): the command evaluates ``RP+Col+Ex+MS`` and
``RP+Col+Ex+MS/Lasso`` a second time with eval lasso when they are given.

The default evaluation parameters (``DEMO_EVAL_PARAMS``) are the CPU demo
protocol: the probe on scikit-learn digits, detection trained and measured
on the 3 labelme VOC images (an overfit check, not a benchmark), depth on
offline Middlebury tiles. ``--eval_param=depth.steps=300`` overrides one.
Each evaluation is cached as JSON in ``--work_dir`` (keyed by checkpoint,
parameters and seed), so re-running the command only runs what is missing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import sys
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple)

from absl import flags

from mtssl_tf.evaluation import protocols
from mtssl_tf.model_zoo import presets as zoo_presets
from mtssl_tf.evaluation.paper_tables import (  # noqa: F401  (re-exported)
    PAPER_TABLES, PaperRow, PaperTable)

RANDOM_LABEL = "Random init"
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


# -- the paper's numbers (one source: mtssl_tf.evaluation.paper_tables) --

KNOWN_LABELS = tuple(dict.fromkeys(
    r.checkpoint for t in PAPER_TABLES.values() for r in t.rows))
# Zoo preset name -> row label, for --presets without an explicit label.
PRESET_LABELS = {name: preset.label
                 for name, preset in zoo_presets.PRESETS.items()}

# The CPU demo protocol (the same for every row) lives with the evaluators.
DEMO_EVAL_PARAMS = protocols.DEMO_EVAL_PARAMS


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


# -- results -------------------------------------------------------------------
# (checkpoint label, eval_lasso) -> {metric: value in [0, 1]}
Results = Mapping[Tuple[str, bool], Mapping[str, float]]


def _ours(results: Results, checkpoint: str, eval_lasso: bool,
          metric: str) -> Optional[float]:
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


def cell(results: Results, row: PaperRow, column: str) -> str:
  """``"ours (paper)"``; our values in %, a missing one as an em dash."""
  ours = " / ".join(_pct(_ours(results, row.checkpoint, row.eval_lasso, m))
                    for m in OUR_METRICS[column])
  paper = row.values[COLUMNS.index(column)]
  return f"{ours} ({_paper(paper)})"


def rows_table(title: str, first: str, rows: Sequence[PaperRow],
               results: Results,
               titles: Optional[Mapping[str, str]] = None) -> str:
  """A Markdown table in the paper's layout: one line per row, columns =
  the three evaluations, each cell "ours (paper)"."""
  titles = titles or COLUMN_TITLES
  lines = [f"### {title}", "",
           "| " + " | ".join([first] + [titles[c] for c in COLUMNS]) + " |",
           "|" + "---|" * (1 + len(COLUMNS))]
  for row in rows:
    lines.append("| " + " | ".join(
        [row.name] + [cell(results, row, c) for c in COLUMNS]) + " |")
  return "\n".join(lines)


def markdown_table(number: int, results: Results) -> str:
  """Table ``number`` in Markdown: rows = the paper's rows plus random init,
  columns = the three evaluations, each cell "ours (paper)"."""
  table = PAPER_TABLES[number]
  first = "Net structure" if number == 4 else "Pre-training"
  return rows_table(f"Table {number}: {table.title}", first,
                    table_rows(number), results)


def paper_row(label: str, eval_lasso: bool = False) -> Optional[PaperRow]:
  """The paper's row for checkpoint ``label`` (e.g. ``"RP+Col"``,
  ``"RP+Col+Ex+MS/Lasso"``) evaluated with or without eval lasso, from
  Tables 2, 3 or 4; None when the paper has no such row."""
  for number in (2, 3, 4):
    for row in PAPER_TABLES[number].rows:
      if row.checkpoint == label and row.eval_lasso == eval_lasso:
        return row
  return None


# -- analysis ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RandomComparison:
  label: str
  ours: float
  random: float

  @property
  def beats(self) -> bool:
    return self.ours > self.random


def probe_vs_random(results: Results,
                    metric: str = ORDER_METRIC["imagenet"]
                    ) -> List[RandomComparison]:
  """Each pre-trained checkpoint's linear-probe ``metric`` (eval lasso off)
  against the random trunk's; empty when the random row is missing."""
  random = _ours(results, RANDOM_LABEL, False, metric)
  if random is None:
    return []
  out = []
  for (label, eval_lasso), metrics in results.items():
    if label == RANDOM_LABEL or eval_lasso or metric not in metrics:
      continue
    out.append(RandomComparison(label, float(metrics[metric]), random))
  return out


@dataclasses.dataclass(frozen=True)
class PairOrder:
  """The order of two rows of one table in one column, paper vs ours."""
  table: int
  column: str
  a: str
  b: str
  paper_a: float
  paper_b: float
  ours_a: float
  ours_b: float

  @staticmethod
  def _sign(x: float) -> int:
    return (x > 0) - (x < 0)

  @property
  def holds(self) -> bool:
    return (self._sign(self.paper_a - self.paper_b)
            == self._sign(self.ours_a - self.ours_b))

  def describe(self) -> str:
    def side(x, y):
      return ">" if x > y else "<" if x < y else "="
    return (f"{self.a} {side(self.paper_a, self.paper_b)} {self.b} in the "
            f"paper ({self.paper_a:.2f} vs {self.paper_b:.2f}), ours "
            f"{100 * self.ours_a:.1f} {side(self.ours_a, self.ours_b)} "
            f"{100 * self.ours_b:.1f}")


def ordering_analysis(number: int, results: Results) -> List[PairOrder]:
  """Every pair of table ``number``'s rows that have both the paper's and
  our value in a column, in table order."""
  rows = list(PAPER_TABLES[number].rows)
  pairs = []
  for column in COLUMNS:
    index = COLUMNS.index(column)
    metric = ORDER_METRIC[column]
    for i, a in enumerate(rows):
      for b in rows[i + 1:]:
        ours_a = _ours(results, a.checkpoint, a.eval_lasso, metric)
        ours_b = _ours(results, b.checkpoint, b.eval_lasso, metric)
        if ours_a is None or ours_b is None:
          continue
        pairs.append(PairOrder(number, column, a.name, b.name,
                               a.values[index], b.values[index], ours_a,
                               ours_b))
  return pairs


COLUMN_SHORT = {"imagenet": "linear probe (top-1; paper ImageNet R@5)",
                "pascal": "detection mAP", "nyu": "depth \u03b4<1.25"}


def analysis_markdown(results: Results,
                      tables: Sequence[int] = (2, 3, 4)) -> str:
  """The analysis section: the random baseline check, then per table and
  column which of the paper's pairwise orderings hold in our numbers."""
  lines = ["## Analysis (generated from the numbers above)", ""]
  comparisons = probe_vs_random(results)
  if not comparisons:
    lines.append("- Linear probe vs random init: not measured (the random "
                 "row or every pre-trained row is missing).")
  else:
    losers = [c for c in comparisons if not c.beats]
    if not losers:
      lines.append(
          f"- **Every pre-trained trunk ({len(comparisons)}) beats the "
          "random-initialised trunk on the linear probe** (top-1: "
          + ", ".join(f"{c.label} {100 * c.ours:.1f}" for c in comparisons)
          + f" vs random {100 * comparisons[0].random:.1f}).")
    else:
      lines.append(
          f"- **NOT every pre-trained trunk beats the random-initialised "
          f"trunk on the linear probe**: {len(losers)} of "
          f"{len(comparisons)} do not (top-1: "
          + ", ".join(f"{c.label} {100 * c.ours:.1f}" for c in losers)
          + f" vs random {100 * comparisons[0].random:.1f})."
          + (" Those that do: " + ", ".join(
              f"{c.label} {100 * c.ours:.1f}" for c in comparisons
              if c.beats) + "." if len(losers) < len(comparisons) else ""))
  close = [c for c in comparisons
           if abs(c.ours - c.random) * 100 < NOISE_POINTS]
  if close:
    lines.append(
        f"- Margins over random under {NOISE_POINTS:g} point (within what "
        "one seed and this test size can change): " + ", ".join(
            f"{c.label} {100 * (c.ours - c.random):+.1f}" for c in close)
        + ".")
  for number in tables:
    pairs = ordering_analysis(number, results)
    lines.append(f"- Table {number}:")
    if not pairs:
      lines.append("  - no pair of rows with both values: nothing to "
                   "compare.")
      continue
    for column in COLUMNS:
      col = [p for p in pairs if p.column == column]
      if not col:
        lines.append(f"  - {COLUMN_SHORT[column]}: not measured.")
        continue
      held = [p for p in col if p.holds]
      broken = [p for p in col if not p.holds]
      text = (f"  - {COLUMN_SHORT[column]}: the paper's order holds for "
              f"{len(held)} of {len(col)} pairs.")
      if held:
        text += " Holds: " + "; ".join(p.describe() for p in held) + "."
      if broken:
        text += (" Does not hold: " + "; ".join(p.describe() for p in broken)
                 + ".")
      lines.append(text)
  return "\n".join(lines)


# -- running the evaluations ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A row's checkpoint: ``kind`` is "run", "preset" or "random"."""
  label: str
  kind: str
  source: str


def parse_entries(entries: Iterable[str], kind: str) -> List[Checkpoint]:
  """``["RP=runs/demo_rp", ...]`` (runs) or ``["rp", "RP/H=rp_h"]``
  (presets) -> checkpoints with canonical labels."""
  out = []
  for entry in entries:
    entry = entry.strip()
    if not entry:
      continue
    if "=" in entry:
      label, source = (s.strip() for s in entry.split("=", 1))
    elif kind == "preset":
      if entry not in PRESET_LABELS:
        raise ValueError(
            f"preset {entry!r} has no default row label; write "
            f"LABEL={entry} (labels: {', '.join(KNOWN_LABELS)})")
      label, source = PRESET_LABELS[entry], entry
    else:
      raise ValueError(f"--runs entry {entry!r} must look like "
                       "LABEL=RUN_DIR, e.g. RP=runs/demo_rp")
    if not source:
      raise ValueError(f"{kind} entry {entry!r} names no {kind}")
    out.append(Checkpoint(canonical_label(label), kind, source))
  return out


def evaluation_pairs(checkpoints: Sequence[Checkpoint]
                     ) -> List[Tuple[Checkpoint, bool]]:
  """(checkpoint, eval_lasso) for every row of the tables that a given
  checkpoint fills: each without eval lasso, and Table 4's with."""
  with_lasso = {r.checkpoint for r in PAPER_TABLES[4].rows if r.eval_lasso}
  pairs = [(c, False) for c in checkpoints]
  pairs += [(c, True) for c in checkpoints if c.label in with_lasso]
  return pairs


resolve_params = protocols.resolve_params


def load_checkpoint_trunk(checkpoint: Checkpoint, random_config=None):
  """The trunk of a run folder, a zoo preset, or a random one built from
  ``random_config`` (a TrunkConfig) with the current Keras seed."""
  from mtssl_tf.evaluation import checkpoints  # pylint: disable=g-import-not-at-top
  if checkpoint.kind == "random":
    return checkpoints.load_trunk(checkpoints.RANDOM, random_config)
  if checkpoint.kind == "preset":
    from mtssl_tf import model_zoo  # pylint: disable=g-import-not-at-top
    return model_zoo.load(checkpoint.source).trunk
  return checkpoints.load_trunk(checkpoint.source)


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "row"


def cache_key(checkpoint: Checkpoint, eval_lasso: bool,
              params: Mapping[str, Any], seed: int,
              trunk: Optional[Mapping[str, Any]] = None) -> str:
  blob = json.dumps({"kind": checkpoint.kind, "source": checkpoint.source,
                     "eval_lasso": eval_lasso, "params": params,
                     "seed": seed, "trunk": trunk},
                    sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run_mtime(checkpoint: Checkpoint) -> Optional[str]:
  """The run's latest checkpoint name, so a run trained further is
  re-evaluated."""
  if checkpoint.kind != "run" or not os.path.isdir(checkpoint.source):
    return None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.latest_checkpoint(os.path.join(checkpoint.source,
                                                 "checkpoints"))


def evaluate_all(checkpoints: Sequence[Checkpoint],
                 eval_params: Mapping[str, Mapping[str, Any]],
                 evaluators: Sequence[str], *, seed: int = 0,
                 work_dir: Optional[str] = None,
                 log: Callable[[str], None] = print,
                 failures: Optional[Dict[str, str]] = None,
                 ) -> Dict[Tuple[str, bool], Dict[str, float]]:
  """Runs ``evaluators`` on every checkpoint (Table 4's also with eval
  lasso), each evaluation seeded with ``seed``, through the one runner
  (:func:`mtssl_tf.evaluation.runner.evaluate_trunk`).

  The random trunk (kind "random") takes the architecture of the first
  other checkpoint, so that it is the same network without training.
  Results are cached in ``work_dir`` when given. The eval-lasso rows run
  every evaluator with a fresh mixer row, detection included (Table 4's
  PASCAL cells). An evaluator that fails is
  logged and added to ``failures`` (``{"<row>: <evaluator>": message}``);
  the other evaluations still run, and a partial row is not cached.

  Returns:
    ``{(label, eval_lasso): {metric: value}}``.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import runner  # pylint: disable=g-import-not-at-top
  from mtssl_tf.models.trunk import TrunkConfig  # pylint: disable=g-import-not-at-top

  results: Dict[Tuple[str, bool], Dict[str, float]] = {}
  random_config = None
  ordered = sorted(checkpoints, key=lambda c: c.kind == "random")
  for checkpoint, eval_lasso in evaluation_pairs(ordered):
    names = list(evaluators)
    params = {n: eval_params.get(n, {}) for n in names}
    trunk_json = (random_config.to_dict() if checkpoint.kind == "random"
                  and random_config is not None else None)
    key = cache_key(checkpoint, eval_lasso, params, seed,
                    trunk_json or {"checkpoint": _run_mtime(checkpoint)})
    what = f"{checkpoint.label}{' + eval lasso' if eval_lasso else ''}"
    path = (os.path.join(work_dir, f"{_slug(what)}-{key}.json")
            if work_dir else None)
    if path and os.path.exists(path):
      with open(path) as f:
        cached = json.load(f)
      results[(checkpoint.label, eval_lasso)] = cached["metrics"]
      log(f"report: {what}: cached in {path}")
      if checkpoint.kind != "random" and random_config is None:
        random_config = TrunkConfig(**cached["trunk"])
      continue
    keras.utils.set_random_seed(seed)
    if checkpoint.kind == "random":
      trunk = load_checkpoint_trunk(
          checkpoint, random_config or TrunkConfig(depth=26, width=0.5))
    else:
      trunk = load_checkpoint_trunk(checkpoint)
      if random_config is None:
        random_config = trunk.config
    log(f"report: evaluating {what} ({checkpoint.kind} {checkpoint.source}, "
        f"depth {trunk.config.depth}, width {trunk.config.width})")
    outcome = runner.evaluate_trunk(trunk, names, params,
                                    eval_lasso=eval_lasso, seed=seed, log=log)
    results[(checkpoint.label, eval_lasso)] = outcome.metrics
    if outcome.failures:
      if failures is not None:
        failures.update({f"{what}: {name}": message
                         for name, message in outcome.failures.items()})
      continue  # a partial evaluation is not cached
    if path:
      os.makedirs(work_dir, exist_ok=True)
      with open(path + ".tmp", "w") as f:
        json.dump({"label": checkpoint.label, "kind": checkpoint.kind,
                   "source": checkpoint.source, "eval_lasso": eval_lasso,
                   "params": params, "seed": seed,
                   "trunk": trunk.config.to_dict(),
                   "metrics": outcome.metrics},
                  f, indent=2, sort_keys=True, default=str)
      os.replace(path + ".tmp", path)
  return results


# -- the document ------------------------------------------------------------------
def _run_summary(checkpoint: Checkpoint) -> str:
  if checkpoint.kind == "random":
    return "random initialisation (same architecture, seeded)"
  if checkpoint.kind == "preset":
    return f"model zoo preset `{checkpoint.source}`"
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
          f"{config['trunk']['width']}")


def build_report(results: Results, checkpoints: Sequence[Checkpoint],
                 eval_params: Mapping[str, Mapping[str, Any]],
                 evaluators: Sequence[str], *, seed: int = 0,
                 command: Optional[str] = None,
                 preamble: Optional[str] = None,
                 tables: Sequence[int] = (2, 3, 4)) -> str:
  """The whole Markdown document: commands, protocol, tables, analysis."""
  lines = ["# Results: the paper's Tables 2-4 at demo scale", ""]
  if preamble:
    lines += [preamble.strip(), ""]
  if command:
    lines += ["Report command:", "", "```", command, "```", ""]
  lines += ["Checkpoints:", ""]
  lines += [f"- **{c.label}**: {_run_summary(c)}" for c in checkpoints]
  lines += ["", "Evaluation protocol (the same parameters and seed "
            f"{seed} for every row):", ""]
  for name in evaluators:
    lines.append(f"- `{name}`: `{json.dumps(eval_params.get(name, {}), sort_keys=True, default=str)}`")
  lines += [
      "", "Each cell is **ours (paper)**; ours in %, the paper's numbers are "
      "ResNet-101 after 16.8K GPU hours on ImageNet / VOC07 / NYU, ours a "
      "CPU demo: only the orderings can be compared, not the values. "
      f"{MISSING} = not measured (no such checkpoint). The "
      "linear-probe orderings use top-1: digits has 10 classes, so Recall@5 "
      "is near saturation. One seed, no error bars: differences of a point "
      "or two are within what another seed could change.", ""]
  for number in tables:
    lines += [markdown_table(number, results), ""]
  lines.append(analysis_markdown(results, tables))
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


# -- the command ---------------------------------------------------------------------
class EvaluationFailed(RuntimeError):
  """Some evaluations failed; the others' results were written."""

  def __init__(self, failures: Mapping[str, str]):
    self.failures = dict(failures)
    super().__init__("evaluation(s) failed (the other results were "
                     "written): " + "; ".join(
                         f"{k}: {v}" for k, v in self.failures.items()))


def define_report_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if "runs" in flag_values:
    return
  fv = dict(flag_values=flag_values)
  flags.DEFINE_list("runs", [], "Training run folders as LABEL=RUN_DIR, "
                    f"labels of: {', '.join(KNOWN_LABELS)}.", **fv)
  flags.DEFINE_list("presets", [], "Model zoo presets, as NAME or "
                    "LABEL=NAME.", **fv)
  flags.DEFINE_bool("random", True, "Add the random-initialised trunk "
                    "(the baseline row).", **fv)
  flags.DEFINE_list("evaluators", ["linear_probe", "detection", "depth"],
                    "Evaluations to run (a column not run shows "
                    f"{MISSING}).", **fv)
  flags.DEFINE_multi_string("eval_param", [], "Override a demo evaluation "
                            "parameter: evaluator.name=value.", **fv)
  flags.DEFINE_list("tables", ["2", "3", "4"], "Tables to print.", **fv)
  flags.DEFINE_integer("seed", 0, "Seed of every evaluation.", **fv)
  flags.DEFINE_string("work_dir", "runs/report", "Cache of the "
                      "evaluations ('' for none).", **fv)
  flags.DEFINE_string("output", None, "Write the Markdown here.", **fv)
  flags.DEFINE_string("json_output", None, "Write the metrics as JSON.",
                      **fv)
  flags.DEFINE_string("preamble", None, "A Markdown file placed at the top "
                      "(e.g. the training commands).", **fv)


def eval_params_from(entries: Sequence[str]) -> Dict[str, Dict[str, Any]]:
  from mtssl_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  params = {n: dict(p) for n, p in DEMO_EVAL_PARAMS.items()}
  for entry in entries:
    if "=" not in entry or "." not in entry.split("=", 1)[0]:
      raise ValueError(f"eval_param {entry!r} must look like "
                       "evaluator.name=value, e.g. depth.steps=300")
  for name, values in config_lib.parse_task_params(entries).items():
    params.setdefault(name, {}).update(values)
  return params


def run_report(f: flags.FlagValues = flags.FLAGS,
               log: Callable[[str], None] = print) -> str:
  """Runs the command described by parsed flags; returns the Markdown."""
  from mtssl_tf import evaluation  # pylint: disable=g-import-not-at-top
  evaluators = [n.strip() for n in f.evaluators if n.strip()]
  for name in evaluators:
    evaluation.check_evaluator_name(name)
  tables = []
  for t in f.tables:
    if not t.strip().isdigit() or int(t) not in PAPER_TABLES:
      raise ValueError(f"--tables: {t!r} is not one of 2, 3, 4")
    tables.append(int(t))
  checkpoints = (parse_entries(f.runs, "run")
                 + parse_entries(f.presets, "preset"))
  labels = [c.label for c in checkpoints]
  twice = sorted({x for x in labels if labels.count(x) > 1})
  if twice:
    raise ValueError(f"row label(s) given twice: {', '.join(twice)}")
  if RANDOM_LABEL in labels:
    raise ValueError("the random row is added by --random, not --runs")
  if f.random:
    checkpoints.append(Checkpoint(RANDOM_LABEL, "random", "random"))
  if not checkpoints:
    raise ValueError("nothing to evaluate: give --runs or --presets (or "
                     "--random)")
  for c in checkpoints:
    if c.kind == "run" and not os.path.isdir(c.source):
      raise FileNotFoundError(f"run folder {c.source!r} (row {c.label}) "
                              "does not exist")
  eval_params = eval_params_from(f.eval_param)
  unknown = sorted(set(eval_params) - set(DEMO_EVAL_PARAMS))
  if unknown:
    raise ValueError(f"eval_param for unknown evaluator(s) "
                     f"{', '.join(unknown)}")
  failures: Dict[str, str] = {}
  results = evaluate_all(checkpoints, eval_params, evaluators, seed=f.seed,
                         work_dir=f.work_dir or None, log=log,
                         failures=failures)
  preamble = None
  if f.preamble:
    with open(f.preamble) as fh:
      preamble = fh.read()
  command = "python -m mtssl_tf.report " + " ".join(
      shlex.quote(a) for a in sys.argv[1:])
  text = build_report(results, checkpoints,
                      {n: eval_params[n] for n in evaluators}, evaluators,
                      seed=f.seed, command=command, preamble=preamble,
                      tables=tables)
  if f.output:
    _write(f.output, text)
  if f.json_output:
    _write(f.json_output, json.dumps(
        [{"label": k[0], "eval_lasso": k[1], "metrics": v}
         for k, v in results.items()], indent=2) + "\n")
  presets = [c for c in checkpoints if c.kind == "preset"]
  if presets:
    from mtssl_tf import model_zoo  # pylint: disable=g-import-not-at-top
    for c in presets:
      model_zoo.update_evaluations(
          c.source, zoo_evaluations(results, c.label, eval_params))
      log(f"report: stored the evaluations in preset {c.source}")
  if failures:
    raise EvaluationFailed(failures)
  return text


def _write(path: str, text: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path + ".tmp", "w") as fh:
    fh.write(text)
  os.replace(path + ".tmp", path)


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    text = run_report(flags.FLAGS, log=lambda s: print(s, flush=True))
  except EvaluationFailed as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(text)
  if flags.FLAGS.output:
    print(f"wrote {flags.FLAGS.output}")
  return 0


def run():
  from absl import app  # pylint: disable=g-import-not-at-top
  define_report_flags()
  app.run(main)


if __name__ == "__main__":
  run()
