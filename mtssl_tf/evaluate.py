"""Downstream evaluation of a trunk: the paper's linear probe, detection, depth.

    python -m mtssl_tf.evaluate --checkpoint=runs/demo
    python -m mtssl_tf.evaluate --flagfile=configs/eval_demo.cfg
    python -m mtssl_tf.evaluate --checkpoint=exports/mtssl_demo.keras \
        --evaluators=linear_probe,depth --eval_lasso --output=results.json

``--checkpoint``: a run folder, a ``.keras`` file or ``random`` (built from
train's trunk flags ``--depth``, ``--width``...). Library:
:mod:`mtssl_tf.evaluation.driver` (shared with ``report``); docs/evaluation.md.
Exit status 1: an evaluator failed (the others are written); 2: bad flags.
"""
import sys

from absl import app, flags

from mtssl_tf import evaluation
from mtssl_tf.cli import flags as mt_flags
from mtssl_tf.evaluation import driver, protocols
from mtssl_tf.reporting import results as outputs


def define_eval_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the flags once per ``fv``; trunk flags have train's names."""
  if "evaluators" in fv:
    return
  for define, name, default, text in [
      (flags.DEFINE_string, "checkpoint", None, "Run folder, .keras, random."),
      (flags.DEFINE_list, "evaluators", list(evaluation.EVALUATOR_NAMES),
       "Evaluators to run."),
      (flags.DEFINE_multi_string, "eval_param", [], "evaluator.name=value."),
      (flags.DEFINE_bool, "baseline", True, "Also evaluate a random trunk."),
      (flags.DEFINE_bool, "eval_lasso", False, "Fresh mixer row (Table 4)."),
      (flags.DEFINE_integer, "seed", 0, "Seed of every init and evaluation."),
      (flags.DEFINE_string, "output", None, "JSON (run: <run>/results.json)."),
      (flags.DEFINE_string, "markdown", None, "Table (run: <run>/results.md)."),
      (flags.DEFINE_string, "work_dir", None, "Cache, shared with report.")]:
    define(name, default, text, flag_values=fv)
  # The trunk: train's flags, derived from TrunkConfig (mtssl_tf.cli.flags).
  mt_flags.define_trunk_flags(fv)
  mt_flags.define_task_module_flag(fv)
  flags.DEFINE_enum("protocol", "demo", protocols.PROTOCOLS, "demo: offline "
                    "data at CPU size; paper: the paper's settings (needs "
                    "prepared data).", flag_values=fv)


def config_from_flags(fv: flags.FlagValues = flags.FLAGS) -> driver.EvalConfig:
  """Parsed flags -> EvalConfig; trunk flags constrain a checkpoint if given."""
  mt_flags.import_task_modules(fv)
  given = bool(mt_flags.trunk_kwargs_from_flags(fv, only_present=True))
  trunk = (mt_flags.trunk_kwargs_from_flags(fv)
           if given or fv.checkpoint == "random" else None)
  return driver.make_eval_config(trunk=trunk, **{n: fv[n].value for n in (
      "checkpoint", "evaluators", "eval_param", "output", "markdown",
      "eval_lasso", "seed", "protocol", "baseline", "work_dir")})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = config_from_flags(flags.FLAGS)
    results = driver.run_evaluation(config, log=lambda s: print(s, flush=True))
  except (ValueError, FileNotFoundError) as e:  # ConfigError is a ValueError
    print(f"error: {e}", file=sys.stderr)
    return 2
  return outputs.publish(config, results)


def _sections(fv):
  return [("evaluation", [n for n in _OWN if n in fv] + ["task_module"]),
          ("model (train's trunk flags; a checkpoint holds its own)",
           [o.name for o in mt_flags.options_lib.trunk_options()])]


_OWN = ("checkpoint", "evaluators", "eval_param", "protocol", "baseline",
        "eval_lasso", "seed", "output", "markdown", "work_dir")
# --help grouped; flagfiles found from any folder.
parse_flags = mt_flags.flags_parser("evaluate", _sections)


def run():
  define_eval_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
