"""Building the report: which checkpoints fill which rows, evaluating them
through the one driver, writing the document and the zoo's numbers.

Checkpoints are named by the paper row they fill (``RP``, ``RP+Col``,
``RP/H``, ``RP+Col+Ex+MS/Lasso``, ...): training run folders as
``LABEL=RUN_DIR`` (several runs of one row, differing in their training
seed, as ``LABEL=RUN1+RUN2`` or a glob; each cell then shows mean +- std,
:mod:`~tools.report.seeds`), model-zoo presets as ``NAME`` or
``LABEL=NAME``. Table
4's rows are (pre-trained without / with lasso) x (eval lasso off / on), so
``RP+Col+Ex+MS`` and ``RP+Col+Ex+MS/Lasso`` are evaluated a second time
with eval lasso. Every evaluation goes through
:func:`mtssl_tf.evaluation.driver.evaluate_checkpoints`, the one that
``python -m mtssl_tf.evaluate`` uses: the same parameters, seeds and cache.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple)

from mtssl_tf.evaluation import driver
from mtssl_tf.evaluation.driver import Checkpoint, ConfigError
from mtssl_tf.evaluation.paper_tables import PAPER_TABLES
from mtssl_tf.models.trunk import TrunkConfig
from tools.report import seeds
from tools.report.document import build_report, zoo_evaluations
from tools.report.pretext import read_pretext_metrics
from mtssl_tf.reporting.results import write_text
from mtssl_tf.reporting.tables import (KNOWN_LABELS, PRESET_LABELS,
                                       RANDOM_LABEL, canonical_label,
                                       mean_std)

# The random row's architecture when no other checkpoint gives one.
DEFAULT_RANDOM_TRUNK = TrunkConfig(depth=26, width=0.5)


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


def evaluation_pairs(checkpoints: Sequence[Checkpoint],
                     row_of: Optional[Mapping[str, str]] = None
                     ) -> List[Tuple[Checkpoint, bool]]:
  """(checkpoint, eval_lasso) for every row of the tables that a given
  checkpoint fills: each without eval lasso, and Table 4's with.
  ``row_of``: a checkpoint label -> the row it is one run of (default:
  its own label)."""
  row_of = row_of or {}
  with_lasso = {r.checkpoint for r in PAPER_TABLES[4].rows if r.eval_lasso}
  pairs = [(c, False) for c in checkpoints]
  pairs += [(c, True) for c in checkpoints
            if row_of.get(c.label, c.label) in with_lasso]
  return pairs


def load_trunk(checkpoint: Checkpoint, trunk: Optional[TrunkConfig] = None):
  """:func:`~mtssl_tf.evaluation.driver.load_checkpoint_trunk`, plus
  model-zoo presets (the zoo sits above the evaluation layer)."""
  if checkpoint.kind != "preset":
    return driver.load_checkpoint_trunk(checkpoint, trunk)
  from mtssl_tf import model_zoo  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import trunk_sources  # pylint: disable=g-import-not-at-top
  model = model_zoo.load(checkpoint.source).trunk
  diffs = ([] if trunk is None
           else trunk_sources.trunk_config_differences(model.config, trunk))
  if diffs:
    raise ValueError(f"wrong architecture: preset {checkpoint.source!r} "
                     f"differs from the requested trunk: {'; '.join(diffs)}")
  return model


def evaluate_all(checkpoints: Sequence[Checkpoint],
                 eval_params: Mapping[str, Mapping[str, Any]],
                 evaluators: Sequence[str], *, seed: int = 0,
                 work_dir: Optional[str] = None,
                 log: Callable[[str], None] = print,
                 failures: Optional[Dict[str, str]] = None,
                 row_of: Optional[Mapping[str, str]] = None,
                 ) -> Dict[Tuple[str, bool], Dict[str, float]]:
  """Every row of the tables that ``checkpoints`` fill (Table 4's also
  with eval lasso), evaluated by the one driver.

  The random row takes the architecture of the first other checkpoint
  (:data:`DEFAULT_RANDOM_TRUNK` when there is none). An evaluator that
  fails is added to ``failures`` (``{"<row>: <evaluator>": message}``);
  the other evaluations still run, and a partial row is not cached.
  ``row_of`` maps the label of one run of a row of several to the row's
  (:func:`evaluation_pairs`).

  Returns:
    ``{(label, eval_lasso): {metric: value}}``.
  """
  alone = all(c.kind == "random" for c in checkpoints)
  outcomes = driver.evaluate_checkpoints(
      evaluation_pairs(checkpoints, row_of), evaluators, eval_params,
      seed=seed,
      trunk=DEFAULT_RANDOM_TRUNK if alone else None, work_dir=work_dir,
      load=load_trunk, log=lambda s: log(f"report: {s}"))
  for (label, eval_lasso), outcome in outcomes.items():
    what = f"{label}{' + eval lasso' if eval_lasso else ''}"
    if failures is not None:
      failures.update({f"{what}: {name}": message
                       for name, message in outcome.failures.items()})
  return {k: v.metrics for k, v in outcomes.items()}


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  """The report command's settings, validated on creation.

  Attributes:
    runs: ``LABEL=RUN_DIR`` entries (a run folder or a ``.keras`` file);
      several runs of one row as ``LABEL=RUN1+RUN2`` or a glob
      (:func:`~tools.report.seeds.parse_run_rows`).
    presets: ``NAME`` or ``LABEL=NAME`` entries of model-zoo presets.
    random: add the random-initialised trunk (the baseline row).
    random_seeds: the random row's trunk init seeds, one trunk each (empty:
      one trunk seeded with ``seed``).
    evaluators: evaluator names (a column not run shows a dash).
    eval_param: ``evaluator.name=value`` overrides of the protocol.
    protocol: ``"demo"`` or ``"paper"`` (:mod:`~mtssl_tf.evaluation.protocols`).
    tables: paper tables to print (2, 3, 4).
    seed: seed of every evaluation (and of the random trunk without
      ``random_seeds``).
    work_dir: the evaluation cache ('' or None: none).
    output, json_output: Markdown and JSON files to write.
    preamble: a Markdown file placed at the top.
    appendix: a Markdown file placed at the end (the study's transfer
      matrix).
    alpha_plot: where the lasso run's Figure 5 PNG is copied (None: next to
      ``output`` as ``<output stem>_alphas.png``).
    command: the command line shown in the document.
  """
  runs: Sequence[str] = ()
  presets: Sequence[str] = ()
  random: bool = True
  random_seeds: Sequence[Any] = ()
  evaluators: Sequence[str] = ("linear_probe", "detection", "depth")
  eval_param: Sequence[str] = ()
  protocol: str = "demo"
  tables: Sequence[Any] = (2, 3, 4)
  seed: int = 0
  work_dir: Optional[str] = "runs/report"
  output: Optional[str] = None
  json_output: Optional[str] = None
  preamble: Optional[str] = None
  appendix: Optional[str] = None
  alpha_plot: Optional[str] = None
  command: Optional[str] = None
  # Derived in __post_init__.
  rows: Tuple[seeds.RowRuns, ...] = dataclasses.field(init=False)
  checkpoints: Tuple[Checkpoint, ...] = dataclasses.field(init=False)
  params: Mapping[str, Mapping[str, Any]] = dataclasses.field(init=False)

  def __post_init__(self):
    evaluators = driver.check_evaluators(self.evaluators)
    tables = []
    for t in self.tables:
      if not str(t).strip().isdigit() or int(t) not in PAPER_TABLES:
        raise ConfigError(f"--tables: {t!r} is not one of 2, 3, 4")
      tables.append(int(t))
    random_seeds = []
    for s in self.random_seeds:
      try:
        random_seeds.append(int(str(s).strip()))
      except ValueError:
        raise ConfigError(f"--random_seeds: {s!r} is not an integer "
                          "seed") from None
    rows = seeds.parse_run_rows(self.runs) + [
        seeds.RowRuns(c.label, (c,))
        for c in parse_entries(self.presets, "preset")]
    labels = [r.label for r in rows]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
      raise ConfigError(f"row label(s) given twice: {', '.join(twice)}")
    if RANDOM_LABEL in labels:
      raise ConfigError("the random row is added by --random, not --runs")
    if self.random:
      rows.append(seeds.random_row(random_seeds))
    elif random_seeds:
      raise ConfigError("--random_seeds with --norandom: contradicting "
                        "flags (the seeds are the random row's)")
    if not rows:
      raise ConfigError("nothing to evaluate: give --runs or --presets (or "
                        "--random)")
    for row in rows:
      for c in row.members:
        if c.kind == "run" and not os.path.exists(c.source):
          raise FileNotFoundError(f"run folder {c.source!r} (row "
                                  f"{row.label}) does not exist")
      seeds.check_same_architecture(row)
    params = driver.evaluation_params(
        self.protocol, evaluators, driver.parse_eval_params(self.eval_param))
    checkpoints = tuple(c for row in rows for c in row.members)
    for name, value in (("evaluators", evaluators), ("tables", tuple(tables)),
                        ("rows", tuple(rows)),
                        ("random_seeds", tuple(random_seeds)),
                        ("checkpoints", checkpoints),
                        ("params", params),
                        ("work_dir", self.work_dir or None)):
      object.__setattr__(self, name, value)

  @property
  def row_of(self) -> Dict[str, str]:
    """Each checkpoint's label -> the label of the row it fills."""
    return {c.label: row.label for row in self.rows for c in row.members}


class EvaluationFailed(RuntimeError):
  """Some evaluations failed; the others' results were written."""

  def __init__(self, failures: Mapping[str, str]):
    self.failures = dict(failures)
    super().__init__("evaluation(s) failed (the other results were "
                     "written): " + "; ".join(
                         f"{k}: {v}" for k, v in self.failures.items()))


def _lasso_plot(config: ReportConfig) -> Optional[Tuple[str, str]]:
  """Copies the first lasso run's Figure 5 PNG (``plots/alphas.png``, drawn
  by the trainer with :func:`mtssl_tf.utils.plots.plot_alphas`) next to the
  output; returns (its link relative to the output, the source) or None
  when there is no output or no lasso run with a plot."""
  if not config.output:
    return None
  for row in config.rows:
    for c in row.members:
      source = os.path.join(c.source, "plots", "alphas.png")
      if c.kind != "run" or not os.path.isfile(source):
        continue
      stem = os.path.splitext(os.path.basename(config.output))[0]
      dest = config.alpha_plot or os.path.join(
          os.path.dirname(config.output), f"{stem}_alphas.png")
      os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
      shutil.copyfile(source, dest)
      link = os.path.relpath(dest, os.path.dirname(os.path.abspath(
          config.output)))
      return link.replace(os.sep, "/"), source
  return None


def _pretext(config: ReportConfig) -> Optional[Dict[str, list]]:
  """Row label -> [(run, its pretext_metrics.json or None)] for the rows
  filled by run folders; None when there is none."""
  out = {row.label: [(c.source, read_pretext_metrics(c.source))
                     for c in row.members]
         for row in config.rows
         if all(c.kind == "run" and os.path.isdir(c.source)
                for c in row.members)}
  return out or None


def _json_rows(config: ReportConfig, member_results, results, samples,
               pretext) -> List[Dict[str, Any]]:
  """The JSON output: per row, the means (``metrics``, as for one run),
  ``n`` and sample ``std`` per metric, and every run's own values."""
  out = []
  for row in config.rows:
    for eval_lasso in (False, True):
      key = (row.label, eval_lasso)
      if key not in results:
        continue
      out.append({
          "label": row.label, "eval_lasso": eval_lasso,
          "metrics": results[key],
          "n": {m: len(v) for m, v in samples[key].items()},
          "std": {m: mean_std(v)[1] for m, v in samples[key].items()},
          "runs": [{"label": c.label, "source": c.source,
                    "init_seed": c.init_seed,
                    "metrics": member_results.get((c.label, eval_lasso), {}),
                    **({"pretext": dict(pretext[row.label])[c.source]}
                       if pretext and row.label in pretext and not eval_lasso
                       else {})}
                   for c in row.members]})
  return out


def make_report(config: ReportConfig,
                log: Callable[[str], None] = print) -> str:
  """Evaluates every run of every row, writes the outputs; returns the
  Markdown.

  Raises:
    EvaluationFailed: some evaluations failed (after writing the others).
    ValueError, FileNotFoundError: a checkpoint that cannot be loaded.
  """
  failures: Dict[str, str] = {}
  member_results = evaluate_all(
      config.checkpoints, config.params, config.evaluators, seed=config.seed,
      work_dir=config.work_dir, log=log, failures=failures,
      row_of=config.row_of)
  results, samples = seeds.aggregate(config.rows, member_results)
  pretext = _pretext(config)
  preamble = appendix = None
  if config.preamble:
    with open(config.preamble) as f:
      preamble = f.read()
  if config.appendix:
    with open(config.appendix) as f:
      appendix = f.read()
  text = build_report(results, config.checkpoints, config.params,
                      config.evaluators, seed=config.seed,
                      command=config.command, preamble=preamble,
                      appendix=appendix,
                      tables=config.tables, protocol=config.protocol,
                      samples=samples, pretext=pretext,
                      alpha_plot=_lasso_plot(config))
  if config.output:
    write_text(config.output, text)
  if config.json_output:
    write_text(config.json_output, json.dumps(
        _json_rows(config, member_results, results, samples, pretext),
        indent=2) + "\n")
  presets = [c for c in config.checkpoints if c.kind == "preset"]
  if presets:
    from mtssl_tf import model_zoo  # pylint: disable=g-import-not-at-top
    for c in presets:
      model_zoo.update_evaluations(
          c.source, zoo_evaluations(results, c.label, config.params))
      log(f"report: stored the evaluations in preset {c.source}")
  if failures:
    raise EvaluationFailed(failures)
  return text


__all__ = ["DEFAULT_RANDOM_TRUNK", "EvaluationFailed", "ReportConfig",
           "evaluate_all", "evaluation_pairs", "load_trunk", "make_report",
           "parse_entries"]
