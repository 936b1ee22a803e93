"""Downstream evaluation of a trunk: the paper's linear probe, detection, depth.

    python -m mtssl_tf.evaluate --flagfile=configs/eval_demo.cfg
    python -m mtssl_tf.evaluate --checkpoint=runs/demo \
        --evaluators=linear_probe --eval_param=linear_probe.data_dir=/data/tfds
    python -m mtssl_tf.evaluate --checkpoint=exports/mtssl_demo.keras \
        --evaluators=linear_probe,depth --eval_lasso --output=results.json

``--checkpoint`` is a training run folder, a ``.keras`` file (as
``python -m mtssl_tf.export`` writes) or ``random`` (a random-initialised
trunk built from the ``--trunk_*`` flags: the baseline row). Each evaluator
(``--evaluators``, by name) yields named metrics; they are printed as a
Markdown table and written to ``--output`` as JSON.

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
  flags.DEFINE_list(
      "evaluators", ["linear_probe"],
      f"Evaluators to run, of: {', '.join(evaluation.EVALUATOR_NAMES)}.",
      **fv)
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
                      "Write the metrics to this JSON file.", **fv)
  flags.DEFINE_integer("eval_seed", 0,
                       "Seed of the random trunk's initialisation.", **fv)
  flags.DEFINE_integer("trunk_depth", t.depth,
                       "Trunk depth (14, 26, 50, 101, ...).", **fv)
  flags.DEFINE_float("trunk_width", t.width, "Trunk width multiplier.", **fv)
  flags.DEFINE_integer("trunk_block3_last_stride", t.block3_last_stride,
                       "Stride of block 3's last unit (1 or 2).", **fv)
  flags.DEFINE_string("trunk_pool_padding", t.pool_padding,
                      "Stem max-pool padding: valid, keras, same.", **fv)
  flags.DEFINE_string("trunk_input_normalization", t.input_normalization,
                      "slim (RGB minus mean), keras_v2 or none.", **fv)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Everything one evaluation needs, validated on creation.

  Attributes:
    checkpoint: run folder, ``.keras`` file or ``"random"``.
    evaluators: evaluator names, run in this order.
    eval_params: evaluator name -> keyword arguments.
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

  def __post_init__(self):
    from mtssl_tf import evaluation  # pylint: disable=g-import-not-at-top
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
      try:
        evaluation.get_evaluator(name, **self.eval_params[name])
      except (ValueError, TypeError) as e:
        raise ConfigError(f"eval_param for {name}: {e}") from None

  def to_dict(self) -> Dict[str, Any]:
    return {"checkpoint": self.checkpoint,
            "evaluators": list(self.evaluators),
            "eval_params": {n: dict(p) for n, p in self.eval_params.items()},
            "eval_lasso": self.eval_lasso,
            "trunk": None if self.trunk is None else self.trunk.to_dict(),
            "seed": self.seed}


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
  return EvalConfig(
      checkpoint=f.checkpoint,
      evaluators=tuple(x.strip() for x in f.evaluators if x.strip()),
      eval_params=params, eval_lasso=f.eval_lasso, trunk=trunk,
      output=f.output, seed=f.eval_seed)


def run_evaluation(config: EvalConfig,
                   log: Callable[[str], None] = print) -> Dict[str, float]:
  """Loads the trunk, runs each evaluator, returns ``{metric: value}``.

  Raises:
    FileNotFoundError: a missing checkpoint or data set.
    ValueError: a checkpoint of the wrong architecture, an empty evaluation
      set, eval lasso on a trunk whose block-3 units cannot be mixed.
  """
  import keras  # pylint: disable=g-import-not-at-top

  from mtssl_tf import evaluation  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import checkpoints  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(config.seed)
  trunk = checkpoints.load_trunk(config.checkpoint, config.trunk)
  if config.eval_lasso:
    checkpoints.check_eval_lasso(trunk, f"checkpoint {config.checkpoint!r}")
  log(f"evaluating {config.checkpoint} (depth {trunk.config.depth}, width "
      f"{trunk.config.width}, eval lasso "
      f"{'on' if config.eval_lasso else 'off'})")
  metrics: Dict[str, float] = {}
  for name in config.evaluators:
    evaluator = evaluation.get_evaluator(name, **config.eval_params[name])
    for metric, value in evaluator.run(trunk, eval_lasso=config.eval_lasso,
                                       log=log):
      metrics[metric] = float(value)
  return metrics


def markdown_table(metrics: Mapping[str, float]) -> str:
  lines = ["| metric | value |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
  return "\n".join(lines)


def write_results(path: str, config: EvalConfig,
                  metrics: Mapping[str, float]) -> None:
  """Writes ``{"config": ..., "metrics": ...}`` as JSON, atomically."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"config": config.to_dict(), "metrics": dict(metrics)}, f,
              indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = config_from_flags(flags.FLAGS)
    metrics = run_evaluation(config, log=lambda s: print(s, flush=True))
  except (ConfigError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(markdown_table(metrics))
  if config.output:
    write_results(config.output, config, metrics)
    print(f"wrote {config.output}")
  return 0


def run():
  from absl import app  # pylint: disable=g-import-not-at-top
  define_eval_flags()
  app.run(main)


if __name__ == "__main__":
  run()
