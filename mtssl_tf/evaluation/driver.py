"""Evaluating checkpoints: the one driver behind ``evaluate`` and ``report``.

``python -m mtssl_tf.evaluate`` (one checkpoint and its random baseline) and
``python -m tools.report`` (the paper's tables over many checkpoints) both
evaluate through :func:`evaluate_checkpoints`, so the same checkpoint,
parameters and seed give the same numbers from either command:

* **parameters**: the protocol's (:mod:`~mtssl_tf.evaluation.protocols`),
  then ``evaluator.name=value`` overrides (:func:`parse_eval_params`),
  checked by building each evaluator (:func:`evaluation_params`);
* **seeding**: the Keras seed is set to ``seed`` before each trunk is
  loaded (so a random trunk is the same network in both commands; a random
  row's ``init_seed``, when set, instead) and again before each evaluator
  (:func:`~mtssl_tf.evaluation.runner.evaluate_trunk`);
* **the random baseline** has the architecture of the first other
  checkpoint (the same network, untrained, with the standard initialisation
  even when the checkpoint was trained from zero-init residual branches:
  :func:`~mtssl_tf.evaluation.trunk_sources.random_architecture`), whatever
  order rows are given;
* **eval lasso** needs a trunk whose block-3 units can be mixed; anything
  else is a ``ValueError`` naming the checkpoint;
* **caching**: with a ``work_dir``, each complete evaluation is stored and
  found again (:mod:`~mtssl_tf.evaluation.cache`) by either command.

>>> from mtssl_tf.evaluation import driver
>>> config = driver.EvalConfig(checkpoint="runs/demo", baseline=True)
>>> results = driver.run_evaluation(config)
>>> results.metrics["linear_probe/top1"]
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import types
from typing import (Any, Callable, Dict, Mapping, Optional, Sequence, Tuple)

from mtssl_tf import config as config_lib
from mtssl_tf.evaluation import cache
from mtssl_tf.evaluation import paper_tables
from mtssl_tf.evaluation import protocols
from mtssl_tf.evaluation.runner import Outcome
from mtssl_tf.models.trunk import TrunkConfig

ConfigError = config_lib.ConfigError
RANDOM_LABEL = "Random init"
# Where a row's trunk comes from: a training run folder or a .keras file
# (anything trunk_sources.load_trunk reads), a model-zoo preset (loaded by a
# caller that may import the zoo, see evaluate_checkpoints' ``load``), or a
# random initialisation.
KINDS = ("run", "preset", "random")
# The trunk fields a command line sets (train's flag names): the
# architecture of a random trunk, or the one a checkpoint must have.
TRUNK_FIELDS = ("depth", "width", "block3_last_stride", "pool_padding",
                "input_normalization")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """One row's trunk: ``label`` names the row, ``kind`` is one of
  :data:`KINDS`, ``source`` the path, preset name or ``"random"``.

  ``init_seed`` (random trunks only) seeds the trunk's initialisation; None
  takes the evaluation seed, as a single random row always has. The
  evaluation itself is always seeded with the evaluation seed, so random
  rows that differ only in ``init_seed`` differ only in their trunks.
  """
  label: str
  kind: str
  source: str
  init_seed: Optional[int] = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"checkpoint kind {self.kind!r}; allowed: "
                       f"{', '.join(KINDS)}")
    if self.init_seed is not None and self.kind != "random":
      raise ValueError(f"row {self.label}: init_seed is for random trunks; "
                       f"a {self.kind} checkpoint has trained weights")


def checkpoint_label(checkpoint: str) -> str:
  """The paper's row name for a checkpoint: ``"RP+Col+Ex+MS/Lasso"`` for a
  four-task run with lasso, ``"RP/H"`` for harmonized RP; a ``.keras``
  file's (or a run of tasks the paper has not) name otherwise."""
  if checkpoint == "random":
    return RANDOM_LABEL
  name = os.path.basename(os.path.normpath(checkpoint))
  path = os.path.join(checkpoint, "config.json")
  if not os.path.isfile(path):
    return name
  with open(path) as f:
    run = json.load(f)
  rp = run.get("task_params", {}).get("relative_position", {})
  try:
    return paper_tables.paper_label(
        run.get("tasks", ()), harmonize=rp.get("color_mode") == "harmonize",
        lasso=bool(run.get("lasso")))
  except ValueError:
    return name


# -- evaluation parameters ---------------------------------------------------
def parse_eval_params(entries: Sequence[str]) -> Dict[str, Dict[str, Any]]:
  """``["linear_probe.steps=100", ...]`` -> ``{"linear_probe": {"steps":
  100}}``; values are Python literals where they parse, strings otherwise.

  Raises:
    ConfigError: an entry that is not ``evaluator.name=value``.
  """
  for entry in entries:
    if "=" not in entry or "." not in entry.split("=", 1)[0]:
      raise ConfigError(
          f"eval_param {entry!r} must look like evaluator.name=value, e.g. "
          "linear_probe.steps=100")
  result: Dict[str, Dict[str, Any]] = {}
  for entry in entries:
    key, value = entry.split("=", 1)
    evaluator, param = key.split(".", 1)
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = value
    result.setdefault(evaluator.strip(), {})[param.strip()] = (
        tuple(parsed) if isinstance(parsed, list) else parsed)
  return result


def check_evaluators(evaluators: Sequence[str]) -> Tuple[str, ...]:
  """The names, stripped, as a tuple; raises ``ConfigError`` for none, an
  unknown one (listing the known ones) or one given twice."""
  from mtssl_tf import evaluation  # pylint: disable=g-import-not-at-top
  names = tuple(n.strip() for n in evaluators if n.strip())
  if not names:
    raise ConfigError("evaluators: name at least one evaluator; known "
                      f"evaluators: {', '.join(evaluation.EVALUATOR_NAMES)}")
  for name in names:
    try:
      evaluation.check_evaluator_name(name)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if len(set(names)) != len(names):
    raise ConfigError(f"evaluators lists one twice: {list(names)}")
  return names


def evaluation_params(protocol: str, evaluators: Sequence[str],
                      overrides: Optional[Mapping[str, Mapping[str, Any]]]
                      = None) -> Dict[str, Dict[str, Any]]:
  """``{evaluator: parameters}``: the protocol's, then ``overrides``,
  each checked by building the evaluator (cheap: data and models load when
  it runs).

  Raises:
    ConfigError: an unknown protocol, an override for an evaluator that is
      not run, or a parameter the evaluator does not take or rejects.
  """
  from mtssl_tf import evaluation  # pylint: disable=g-import-not-at-top
  overrides = overrides or {}
  try:
    protocols.check_protocol(protocol)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  for name in overrides:
    if name not in evaluators:
      raise ConfigError(f"eval_param given for {name!r}, which is not in "
                        f"evaluators={','.join(evaluators)}")
  params = protocols.protocol_params(protocol, evaluators, overrides)
  for name in evaluators:
    try:
      resolved = protocols.resolve_params(name, params[name])
    except FileNotFoundError:
      # Data the set-up step fetches is missing: reported (by name) when
      # the evaluator runs; only the parameter names are checked here.
      resolved = {k: v for k, v in params[name].items() if k != "voc_folder"}
    try:
      evaluation.get_evaluator(name, **resolved)
    except (ValueError, TypeError) as e:
      raise ConfigError(f"eval_param for {name}: {e}") from None
  return params


# -- running -------------------------------------------------------------------
def load_checkpoint_trunk(checkpoint: Checkpoint,
                          trunk: Optional[TrunkConfig] = None):
  """The trunk of a run folder or ``.keras`` file (``trunk``: the
  architecture it must have), or a random one of architecture ``trunk``,
  initialised from the current Keras seed.

  Raises:
    ValueError: a preset (the zoo sits above the evaluation layer: its
      callers pass a loader that knows presets), a wrong architecture.
    FileNotFoundError: a missing checkpoint.
  """
  from mtssl_tf.evaluation import trunk_sources  # pylint: disable=g-import-not-at-top
  if checkpoint.kind == "random":
    return trunk_sources.load_trunk(trunk_sources.RANDOM, trunk)
  if checkpoint.kind == "run":
    return trunk_sources.load_trunk(checkpoint.source, trunk)
  raise ValueError(f"row {checkpoint.label}: a {checkpoint.kind} checkpoint "
                   "needs a loader (tools.report.load_trunk loads "
                   "model-zoo presets)")


Loader = Callable[[Checkpoint, Optional[TrunkConfig]], Any]


def evaluate_checkpoints(
    rows: Sequence[Tuple[Checkpoint, bool]], evaluators: Sequence[str],
    params: Mapping[str, Mapping[str, Any]], *, seed: int = 0,
    trunk: Optional[TrunkConfig] = None, work_dir: Optional[str] = None,
    load: Loader = load_checkpoint_trunk,
    log: Callable[[str], None] = print) -> Dict[Tuple[str, bool], Outcome]:
  """Evaluates each ``(checkpoint, eval_lasso)`` row with ``evaluators``.

  Random rows run after the others, so that a random trunk takes the
  architecture of the first other checkpoint (``trunk`` when there is
  none). The Keras seed is set to ``seed`` (a random row's ``init_seed``
  when it has one) before each trunk is loaded, and to ``seed`` before
  each evaluator. With ``work_dir``, a complete evaluation is cached
  and a cached one is read instead of run; a row with a failed evaluator is
  not cached.

  Args:
    rows: ``(checkpoint, eval_lasso)`` pairs, labels unique per eval lasso.
    evaluators: evaluator names, run in this order.
    params: ``{evaluator: parameters}`` (:func:`evaluation_params`).
    seed: the seed of every evaluation, and of a random trunk's
      initialisation unless its ``init_seed`` is set.
    trunk: the architecture a checkpoint must have (None: its own), and of
      a random trunk when no other checkpoint is given.
    work_dir: the cache folder (None: no cache).
    load: ``load(checkpoint, trunk_config)`` -> Trunk.
    log: progress lines.

  Returns:
    ``{(label, eval_lasso): Outcome}`` in evaluation order.

  Raises:
    ValueError: eval lasso on a trunk whose block-3 units cannot be mixed,
      a random row without an architecture, a wrong architecture.
    FileNotFoundError: a missing checkpoint.
  """
  import keras  # pylint: disable=g-import-not-at-top

  from mtssl_tf.evaluation import trunk_sources  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import runner  # pylint: disable=g-import-not-at-top
  names = list(evaluators)
  params = {n: dict(params.get(n, {})) for n in names}
  results: Dict[Tuple[str, bool], Outcome] = {}
  random_config = None
  for checkpoint, eval_lasso in sorted(rows,
                                       key=lambda r: r[0].kind == "random"):
    is_random = checkpoint.kind == "random"
    architecture = (random_config or trunk) if is_random else trunk
    if is_random and architecture is None:
      raise ValueError(f"row {checkpoint.label}: a random trunk needs an "
                       "architecture: give a checkpoint or a trunk config")
    if is_random:
      # The standard initialisation even after a zero-init run (and so in
      # the cache key).
      architecture = trunk_sources.random_architecture(architecture)
    what = f"{checkpoint.label}{' + eval lasso' if eval_lasso else ''}"
    init_seed = (seed if checkpoint.init_seed is None
                 else checkpoint.init_seed)
    key = cache.cache_key(
        checkpoint.kind, checkpoint.source, eval_lasso, params, seed,
        dict(architecture.to_dict(), init_seed=init_seed) if is_random else
        {"checkpoint": cache.checkpoint_stamp(checkpoint.kind,
                                              checkpoint.source),
         "requested": None if trunk is None else trunk.to_dict()})
    entry = cache.read(work_dir, key)
    if entry is not None:
      results[(checkpoint.label, eval_lasso)] = Outcome(
          metrics=dict(entry["metrics"]))
      log(f"{what}: cached in {entry['path']}")
      if not is_random and random_config is None:
        random_config = TrunkConfig(**entry["trunk"])
      continue
    # A random trunk's weights come from its init seed; the evaluators
    # are re-seeded with ``seed`` before each runs (runner.evaluate_trunk).
    keras.utils.set_random_seed(init_seed)
    model = load(checkpoint, architecture)
    if not is_random and random_config is None:
      random_config = model.config
    if eval_lasso:
      trunk_sources.check_eval_lasso(
          model, "the random trunk" if is_random
          else f"checkpoint {checkpoint.source!r}")
    log(f"evaluating {what} ({checkpoint.kind} {checkpoint.source}, depth "
        f"{model.config.depth}, width {model.config.width}, seed {seed}"
        + (f", trunk init seed {init_seed})" if is_random else ")"))
    outcome = runner.evaluate_trunk(model, names, params,
                                    eval_lasso=eval_lasso, seed=seed, log=log)
    results[(checkpoint.label, eval_lasso)] = outcome
    if work_dir and not outcome.failures:
      cache.write(cache.entry_path(work_dir, what, key), {
          "label": checkpoint.label, "kind": checkpoint.kind,
          "source": checkpoint.source, "eval_lasso": eval_lasso,
          "params": params, "seed": seed, "trunk": model.config.to_dict(),
          "init_seed": init_seed if is_random else None,
          "metrics": outcome.metrics})
  return results


# -- the evaluate command's library --------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Everything one evaluation needs, validated on creation.

  Attributes:
    checkpoint: run folder, ``.keras`` file or ``"random"``.
    evaluators: evaluator names, run in this order.
    eval_params: evaluator name -> keyword arguments that override the
      protocol's.
    eval_lasso: learn a fresh mixer row per evaluation task.
    trunk: the architecture of a random trunk (default: the paper's
      ResNet-101), or the one a checkpoint must have; ``None`` (checkpoints
      only): take the checkpoint's.
    output: JSON file for the metrics (None: print only).
    seed: seed of every trunk initialisation and evaluation.
    protocol: ``"demo"`` or ``"paper"`` (:mod:`~mtssl_tf.evaluation.protocols`).
    baseline: also evaluate a random trunk of the same architecture (not
      for ``checkpoint="random"``).
    markdown: Markdown file for the table (None: print only).
    work_dir: the evaluation cache shared with the report (None: none).
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
  work_dir: Optional[str] = None

  def __post_init__(self):
    if not self.checkpoint:
      raise ConfigError(
          "--checkpoint is required: a training run folder, a .keras file or "
          "'random'")
    evaluators = check_evaluators(self.evaluators)
    object.__setattr__(self, "evaluators", evaluators)
    evaluation_params(self.protocol, evaluators, self.eval_params)
    object.__setattr__(self, "eval_params", types.MappingProxyType(
        {n: types.MappingProxyType(dict(self.eval_params.get(n, {})))
         for n in evaluators}))
    if self.checkpoint == "random" and self.trunk is None:
      object.__setattr__(self, "trunk", TrunkConfig())
    if (self.eval_lasso and self.trunk is not None
        and self.trunk.block3_last_stride != 1):
      raise ConfigError(
          "--eval_lasso mixes every block-3 unit, which needs "
          "--block3_last_stride=1 (contradicting flags: "
          f"block3_last_stride={self.trunk.block3_last_stride})")

  def params(self, name: str) -> Dict[str, Any]:
    """Evaluator ``name``'s parameters: the protocol's, then overrides."""
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


def make_eval_config(*, checkpoint: Optional[str], evaluators: Sequence[str],
                     eval_param: Sequence[str] = (),
                     trunk: Optional[Mapping[str, Any]] = None,
                     output: Optional[str] = None,
                     markdown: Optional[str] = None,
                     **kwargs: Any) -> EvalConfig:
  """An :class:`EvalConfig` from command-line values: ``eval_param``
  entries are parsed, ``trunk`` holds TrunkConfig fields (None:
  the checkpoint's architecture), a run folder gets ``results.json`` and
  ``results.md`` written into it by default, and ``baseline`` is off for a
  random checkpoint. ``kwargs``: the other :class:`EvalConfig` fields."""
  trunk_config = None
  if trunk is not None:
    try:
      trunk_config = TrunkConfig(**trunk)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if checkpoint and os.path.isdir(checkpoint):
    # A run folder keeps its evaluation beside its checkpoints.
    output = output or os.path.join(checkpoint, "results.json")
    markdown = markdown or os.path.join(checkpoint, "results.md")
  if checkpoint == "random":
    kwargs["baseline"] = False
  return EvalConfig(checkpoint=checkpoint, evaluators=tuple(evaluators),
                    eval_params=parse_eval_params(eval_param),
                    trunk=trunk_config, output=output, markdown=markdown,
                    **kwargs)


@dataclasses.dataclass
class EvalResults:
  """``rows``: row label -> :class:`~mtssl_tf.evaluation.runner.Outcome`,
  the checkpoint's row first, then the random baseline's."""
  rows: Dict[str, Outcome]

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
  """Evaluates the checkpoint (and the random baseline) through
  :func:`evaluate_checkpoints`.

  An evaluator that fails is recorded in ``EvalResults.failures`` while
  the others run.

  Raises:
    FileNotFoundError: a missing checkpoint.
    ValueError: a checkpoint of the wrong architecture, eval lasso on a
      trunk whose block-3 units cannot be mixed.
  """
  random = config.checkpoint == "random"
  rows = [(Checkpoint(checkpoint_label(config.checkpoint),
                      "random" if random else "run", config.checkpoint),
           config.eval_lasso)]
  if config.baseline and not random:
    rows.append((Checkpoint(RANDOM_LABEL, "random", "random"),
                 config.eval_lasso))
  log(f"protocol {config.protocol}, eval lasso "
      f"{'on' if config.eval_lasso else 'off'}")
  outcomes = evaluate_checkpoints(
      rows, config.evaluators,
      {n: config.params(n) for n in config.evaluators}, seed=config.seed,
      trunk=config.trunk, work_dir=config.work_dir, log=log)
  return EvalResults({label: outcome
                      for (label, _), outcome in outcomes.items()})


__all__ = ["Checkpoint", "EvalConfig", "EvalResults", "KINDS", "RANDOM_LABEL",
           "TRUNK_FIELDS", "check_evaluators",
           "checkpoint_label", "evaluate_checkpoints", "evaluation_params",
           "load_checkpoint_trunk", "make_eval_config", "parse_eval_params",
           "run_evaluation"]
