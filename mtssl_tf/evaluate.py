"""Downstream evaluation of a trunk: the paper's linear probe, detection, depth.

    python -m mtssl_tf.evaluate --checkpoint=runs/demo
    python -m mtssl_tf.evaluate --flagfile=configs/eval_demo.cfg
    python -m mtssl_tf.evaluate --checkpoint=runs/paper_4task --protocol=paper \
        --eval_param=linear_probe.data_dir=/data/tfds \
        --eval_param=detection.tfds_data_dir=/data/tfds \
        --eval_param=depth.data_dir=/data/tfds
    python -m mtssl_tf.evaluate --checkpoint=exports/mtssl_demo.keras \
        --evaluators=linear_probe,depth --eval_lasso --output=results.json

``--checkpoint`` is a training run folder, a ``.keras`` file (as
``python -m mtssl_tf.export`` writes) or ``random`` (a random-initialised
trunk built from the ``--trunk_*`` flags). ``--protocol=demo`` (default)
runs every evaluator on offline data at CPU size; ``--protocol=paper`` runs
the paper's settings and needs prepared data
(:mod:`mtssl_tf.evaluation.protocols`). With ``--baseline`` (default) a
random-initialised trunk of the checkpoint's architecture is evaluated the
same way, and the results are printed as one Markdown table in the paper's
Table 2 layout (ours, with the paper's number in brackets). For a run
folder, ``results.md`` and ``results.json`` are written into it unless
``--output``/``--markdown`` say otherwise. An evaluator that fails is named
and the others still run; the exit code is then 1.

``--eval_lasso`` learns a fresh UnitMixer row for each evaluation task
instead of reading block 3's last unit. Pre-training with or without lasso
(``--lasso`` of the training command) times evaluating with or without eval
lasso gives the four rows of the paper's Table 4.

Evaluator parameters: ``--eval_param=linear_probe.steps=100`` (repeatable;
values are Python literals where they parse, strings otherwise).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from absl import flags

from mtssl_tf import config as config_lib
from mtssl_tf.models.trunk import TrunkConfig

ConfigError = config_lib.ConfigError
# --trunk_<field> flags: the architecture of a random trunk, or the one a
# checkpoint is required to have.
TRUNK_FLAG_FIELDS = ("depth", "width", "block3_last_stride", "pool_padding",
                     "input_normalization")


def define_eval_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the evaluation flags once per ``flag_values``.

  The names do not overlap the training flags (:mod:`mtssl_tf.flags`), so
  both sets can live in one process.
  """
  if "evaluators" in flag_values:
    return
  from mtssl_tf import evaluation  # pylint: disable=g-import-not-at-top
  t = TrunkConfig()
  fv = dict(flag_values=flag_values)
  from mtssl_tf.evaluation import protocols  # pylint: disable=g-import-not-at-top
  flags.DEFINE_list(
      "evaluators", list(evaluation.EVALUATOR_NAMES),
      f"Evaluators to run, of: {', '.join(evaluation.EVALUATOR_NAMES)}.",
      **fv)
  flags.DEFINE_enum(
      "protocol", "demo", protocols.PROTOCOLS,
      "demo: offline data at CPU size (minutes); paper: the paper's "
      "settings (needs prepared data).", **fv)
  flags.DEFINE_bool(
      "baseline", True,
      "Also evaluate a random-initialised trunk of the checkpoint's "
      "architecture (the paper's baseline row).", **fv)
  flags.DEFINE_string(
      "markdown", None,
      "Write the Markdown table here (default for a run folder: "
      "<run>/results.md).", **fv)
  flags.DEFINE_string(
      "checkpoint", None,
      "The trunk to evaluate: a training run folder, a .keras file, or "
      "'random' (built from the --trunk_* flags).", **fv)
  flags.DEFINE_bool(
      "eval_lasso", False,
      "Learn a fresh UnitMixer row for each evaluation task (Table 4).", **fv)
  flags.DEFINE_multi_string(
      "eval_param", [],
      "Evaluator parameter as evaluator.name=value (repeatable), e.g. "
      "linear_probe.steps=100.", **fv)
  flags.DEFINE_string("output", None,
                      "Write the metrics to this JSON file (default for a "
                      "run folder: <run>/results.json).", **fv)
  flags.DEFINE_integer("eval_seed", 0,
                       "Seed of the random trunk's initialisation.", **fv)
  flags.DEFINE_integer("trunk_depth", t.depth,
                       "Trunk depth (14, 26, 50, 101, ...).", **fv)
  flags.DEFINE_float("trunk_width", t.width, "Trunk width multiplier.", **fv)
  flags.DEFINE_integer("trunk_block3_last_stride", t.block3_last_stride,
                       "Stride of block 3's last unit (1 or 2).", **fv)
  flags.DEFINE_string("trunk_pool_padding", t.pool_padding,
                      "Stem max-pool padding: same (Slim), keras, valid.", **fv)
  flags.DEFINE_string("trunk_input_normalization", t.input_normalization,
                      "slim (RGB minus mean), keras_v2 or none.", **fv)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Everything one evaluation needs, validated on creation.

  Attributes:
    checkpoint: run folder, ``.keras`` file or ``"random"``.
    evaluators: evaluator names, run in this order.
    eval_params: evaluator name -> keyword arguments that override the
      protocol's.
    protocol: ``"demo"`` or ``"paper"`` (:mod:`~mtssl_tf.evaluation.protocols`).
    baseline: also evaluate a random trunk of the same architecture (not
      for ``checkpoint="random"``).
    markdown: Markdown file for the table (None: print only).
    eval_lasso: learn a fresh mixer row per evaluation task.
    trunk: the architecture of a random trunk, or the one a checkpoint must
      have; ``None`` (checkpoints only): take the checkpoint's.
    output: JSON file for the metrics (None: print only).
    seed: seed of the random trunk's initialisation.
  """
  checkpoint: str
  evaluators: Tuple[str, ...] = ("linear_probe",)
  eval_params: Mapping[str, Mapping[str, Any]] = dataclasses.field(
      default_factory=dict)
  eval_lasso: bool = False
  trunk: Optional[TrunkConfig] = None
  output: Optional[str] = None
  seed: int = 0
  protocol: str = "demo"
  baseline: bool = False
  markdown: Optional[str] = None

  def __post_init__(self):
    from mtssl_tf import evaluation  # pylint: disable=g-import-not-at-top
    from mtssl_tf.evaluation import protocols  # pylint: disable=g-import-not-at-top
    try:
      protocols.check_protocol(self.protocol)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if not self.checkpoint:
      raise ConfigError(
          "--checkpoint is required: a training run folder, a .keras file or "
          "'random'")
    if not self.evaluators:
      raise ConfigError("evaluators: name at least one evaluator; known "
                        f"evaluators: {', '.join(evaluation.EVALUATOR_NAMES)}")
    for name in self.evaluators:
      try:
        evaluation.check_evaluator_name(name)
      except ValueError as e:
        raise ConfigError(str(e)) from None
    if len(set(self.evaluators)) != len(self.evaluators):
      raise ConfigError(f"evaluators lists one twice: {list(self.evaluators)}")
    for name in self.eval_params:
      if name not in self.evaluators:
        raise ConfigError(
            f"eval_param given for {name!r}, which is not in evaluators="
            f"{','.join(self.evaluators)}")
    object.__setattr__(self, "evaluators", tuple(self.evaluators))
    object.__setattr__(self, "eval_params", types.MappingProxyType(
        {n: types.MappingProxyType(dict(self.eval_params.get(n, {})))
         for n in self.evaluators}))
    if (self.eval_lasso and self.trunk is not None
        and self.trunk.block3_last_stride != 1):
      raise ConfigError(
          "--eval_lasso mixes every block-3 unit, which needs "
          "--trunk_block3_last_stride=1 (contradicting flags: "
          f"block3_last_stride={self.trunk.block3_last_stride})")
    for name in self.evaluators:
      # Building the evaluator checks its parameters now, before a trunk is
      # loaded (construction is cheap: data and models load in ``run``).
      params = self.params(name)
      try:
        params = protocols.resolve_params(name, params)
      except FileNotFoundError:
        # Data the set-up step fetches is missing: reported (by name) when
        # the evaluator runs; only the parameter names are checked here.
        params = {k: v for k, v in params.items() if k != "voc_folder"}
      try:
        evaluation.get_evaluator(name, **params)
      except (ValueError, TypeError) as e:
        raise ConfigError(f"eval_param for {name}: {e}") from None

  def params(self, name: str) -> Dict[str, Any]:
    """Evaluator ``name``'s parameters: the protocol's, then overrides."""
    from mtssl_tf.evaluation import protocols  # pylint: disable=g-import-not-at-top
    return protocols.protocol_params(self.protocol, [name],
                                     self.eval_params)[name]

  def to_dict(self) -> Dict[str, Any]:
    return {"checkpoint": self.checkpoint,
            "evaluators": list(self.evaluators),
            "protocol": self.protocol,
            "eval_params": {n: self.params(n) for n in self.evaluators},
            "eval_lasso": self.eval_lasso,
            "trunk": None if self.trunk is None else self.trunk.to_dict(),
            "seed": self.seed, "baseline": self.baseline}


def config_from_flags(f: flags.FlagValues = flags.FLAGS) -> EvalConfig:
  """Turns parsed flags into a validated :class:`EvalConfig`."""
  for entry in f.eval_param:
    if "=" not in entry or "." not in entry.split("=", 1)[0]:
      raise ConfigError(
          f"eval_param {entry!r} must look like evaluator.name=value, e.g. "
          "linear_probe.steps=100")
  params = config_lib.parse_task_params(f.eval_param)
  explicit = any(f[f"trunk_{n}"].present for n in TRUNK_FLAG_FIELDS)
  trunk = None
  if f.checkpoint == "random" or explicit:
    try:
      trunk = TrunkConfig(**{n: f[f"trunk_{n}"].value
                             for n in TRUNK_FLAG_FIELDS})
    except ValueError as e:
      raise ConfigError(str(e)) from None
  output, markdown = f.output, f.markdown
  if f.checkpoint and os.path.isdir(f.checkpoint):
    # A run folder keeps its evaluation beside its checkpoints.
    output = output or os.path.join(f.checkpoint, "results.json")
    markdown = markdown or os.path.join(f.checkpoint, "results.md")
  return EvalConfig(
      checkpoint=f.checkpoint,
      evaluators=tuple(x.strip() for x in f.evaluators if x.strip()),
      eval_params=params, eval_lasso=f.eval_lasso, trunk=trunk,
      output=output, seed=f.eval_seed, protocol=f.protocol,
      baseline=f.baseline and f.checkpoint != "random", markdown=markdown)


TASK_ABBREVIATIONS = {"relative_position": "RP", "colorization": "Col",
                      "exemplar": "Ex", "motion_segmentation": "MS"}


def checkpoint_label(checkpoint: str) -> str:
  """The paper's row name for a checkpoint: ``"RP+Col+Ex+MS/Lasso"`` for a
  four-task run with lasso, ``"RP/H"`` for harmonized RP; a ``.keras``
  file's name otherwise."""
  from mtssl_tf import report  # pylint: disable=g-import-not-at-top
  if checkpoint == "random":
    return report.RANDOM_LABEL
  path = os.path.join(checkpoint, "config.json")
  if not os.path.isfile(path):
    return os.path.basename(os.path.normpath(checkpoint))
  with open(path) as f:
    run = json.load(f)
  tasks = [t for t in TASK_ABBREVIATIONS if t in run.get("tasks", ())]
  label = "+".join(TASK_ABBREVIATIONS[t] for t in tasks)
  rp = run.get("task_params", {}).get("relative_position", {})
  if rp.get("color_mode") == "harmonize":
    label += "/H"
  if run.get("lasso"):
    label += "/Lasso"
  return label


@dataclasses.dataclass
class EvalResults:
  """``rows``: row label -> :class:`~mtssl_tf.evaluation.runner.Outcome`,
  the checkpoint's row first, then the random baseline's."""
  rows: Dict[str, Any]

  @property
  def label(self) -> str:
    return next(iter(self.rows))

  @property
  def metrics(self) -> Dict[str, float]:
    """The checkpoint's metrics."""
    return self.rows[self.label].metrics

  @property
  def failures(self) -> Dict[str, str]:
    """``{"<row>: <evaluator>": message}`` over every row."""
    return {f"{label}: {name}": message
            for label, outcome in self.rows.items()
            for name, message in outcome.failures.items()}


def run_evaluation(config: EvalConfig,
                   log: Callable[[str], None] = print) -> EvalResults:
  """Loads the trunk, runs each evaluator (and the random baseline's).

  An evaluator that fails is recorded in ``EvalResults.failures`` while
  the others run.

  Raises:
    FileNotFoundError: a missing checkpoint.
    ValueError: a checkpoint of the wrong architecture, eval lasso on a
      trunk whose block-3 units cannot be mixed.
  """
  import keras  # pylint: disable=g-import-not-at-top

  from mtssl_tf import report  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import checkpoints  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import runner  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(config.seed)
  trunk = checkpoints.load_trunk(config.checkpoint, config.trunk)
  if config.eval_lasso:
    checkpoints.check_eval_lasso(trunk, f"checkpoint {config.checkpoint!r}")
  params = {n: config.params(n) for n in config.evaluators}
  trunks = [(checkpoint_label(config.checkpoint), trunk)]
  if config.baseline and config.checkpoint != checkpoints.RANDOM:
    keras.utils.set_random_seed(config.seed)
    trunks.append((report.RANDOM_LABEL, checkpoints.load_trunk(
        checkpoints.RANDOM, trunk.config)))
  rows = {}
  for label, model in trunks:
    log(f"evaluating {label} ({config.checkpoint if model is trunk else 'random init'}"
        f", depth {model.config.depth}, width {model.config.width}, "
        f"protocol {config.protocol}, eval lasso "
        f"{'on' if config.eval_lasso else 'off'})")
    rows[label] = runner.evaluate_trunk(
        model, config.evaluators, params, eval_lasso=config.eval_lasso,
        seed=config.seed, log=log)
  return EvalResults(rows)


def markdown_table(metrics: Mapping[str, float]) -> str:
  lines = ["| metric | value |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
  return "\n".join(lines)


PAPER_COLUMN_TITLES = {
    "imagenet": "ImageNet linear probe top-1 / Recall@5 (paper: Recall@5)",
    "pascal": "VOC07 detection mAP",
    "nyu": "NYU depth \u03b4<1.25",
}


def results_markdown(config: EvalConfig, results: EvalResults) -> str:
  """The results in the paper's Table 2 layout (ours, the paper's number in
  brackets), each row's metrics, and any failure."""
  from mtssl_tf import report  # pylint: disable=g-import-not-at-top
  table = {(label, config.eval_lasso): outcome.metrics
           for label, outcome in results.rows.items()}
  rows = []
  for label in results.rows:
    paper = report.paper_row(label, config.eval_lasso)
    rows.append(report.PaperRow(
        label + (" + eval lasso" if config.eval_lasso else ""), label,
        config.eval_lasso,
        paper.values if paper else (None, None, None)))
  titles = (report.COLUMN_TITLES if config.protocol == "demo"
            else PAPER_COLUMN_TITLES)
  lines = [report.rows_table(
      f"Evaluation of {config.checkpoint} (protocol {config.protocol}; "
      "Table 2 layout)", "Pre-training", rows, table, titles), ""]
  lines.append(f"Each cell is ours in % (the paper's ResNet-101 number in "
               f"brackets; {report.MISSING} = not measured). Protocol "
               f"`{config.protocol}`, seed {config.seed}.")
  probe = report.probe_vs_random(table)
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
    lines += [f"{label}:", "", markdown_table(outcome.metrics), ""]
  return "\n".join(lines).rstrip() + "\n"


def write_results(path: str, config: EvalConfig,
                  results: EvalResults) -> None:
  """Writes ``{"config", "metrics", "rows", "failures"}`` as JSON,
  atomically; ``metrics`` are the checkpoint's."""
  _write(path, json.dumps(
      {"config": config.to_dict(), "metrics": results.metrics,
       "rows": {k: {"metrics": v.metrics, "failures": v.failures}
                for k, v in results.rows.items()},
       "failures": results.failures},
      indent=2, sort_keys=True, default=str) + "\n")


def _write(path: str, text: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = config_from_flags(flags.FLAGS)
    results = run_evaluation(config, log=lambda s: print(s, flush=True))
  except (ConfigError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  text = results_markdown(config, results)
  print(text)
  if config.output:
    write_results(config.output, config, results)
    print(f"wrote {config.output}")
  if config.markdown:
    _write(config.markdown, text)
    print(f"wrote {config.markdown}")
  if results.failures:
    print("error: evaluation(s) failed (the other results were written): "
          + "; ".join(f"{k}: {v}" for k, v in results.failures.items()),
          file=sys.stderr)
    return 1
  return 0


def run():
  from absl import app  # pylint: disable=g-import-not-at-top
  define_eval_flags()
  app.run(main)


if __name__ == "__main__":
  run()
