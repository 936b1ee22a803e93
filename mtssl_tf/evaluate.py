"""Downstream evaluation of a trunk: the paper's linear probe, detection, depth.

    python -m mtssl_tf.evaluate --checkpoint=runs/demo
    python -m mtssl_tf.evaluate --flagfile=configs/eval_demo.cfg
    python -m mtssl_tf.evaluate --checkpoint=exports/mtssl_demo.keras \
        --evaluators=linear_probe,depth --eval_lasso --output=results.json

``--checkpoint``: a run folder, a ``.keras`` file or ``random`` (built from
train's trunk flags ``--depth``, ``--width``, ...). Library:
:mod:`mtssl_tf.evaluation.driver` (shared with ``report``); flags:
docs/evaluation.md. Exit status 1 when an evaluator failed (the others are
written), 2 for bad flags or a checkpoint that cannot be loaded.
"""
import sys

from absl import app, flags

from mtssl_tf import evaluation
from mtssl_tf.evaluation import driver, protocols
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.reporting import results as outputs


def define_eval_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the flags once per ``fv``; trunk flags have train's names."""
  if "evaluators" in fv:
    return
  t = TrunkConfig()  # One block, so that a shared trunk-flag helper fits.
  for define, name, default, text in [
      (flags.DEFINE_string, "checkpoint", None, "A training run folder, a "
       ".keras file, or 'random' (built from the trunk flags)."),
      (flags.DEFINE_list, "evaluators", list(evaluation.EVALUATOR_NAMES),
       "Evaluators to run."),
      (flags.DEFINE_multi_string, "eval_param", [], "evaluator.name=value "
       "(repeatable), e.g. linear_probe.steps=100."),
      (flags.DEFINE_bool, "baseline", True, "Also evaluate a random trunk."),
      (flags.DEFINE_bool, "eval_lasso", False, "Learn a fresh UnitMixer row "
       "for each evaluation task (Table 4)."),
      (flags.DEFINE_integer, "seed", 0, "Seed of every init and evaluation."),
      (flags.DEFINE_string, "output", None, "Metrics JSON (default for a run "
       "folder: <run>/results.json)."),
      (flags.DEFINE_string, "markdown", None, "Markdown table (default for a "
       "run folder: <run>/results.md)."),
      (flags.DEFINE_string, "work_dir", None, "Evaluation cache, shared with "
       "the report (default: none)."),
      (flags.DEFINE_integer, "depth", t.depth, "Trunk depth (14, 26, 50...)."),
      (flags.DEFINE_float, "width", t.width, "Trunk width multiplier."),
      (flags.DEFINE_integer, "block3_last_stride", t.block3_last_stride,
       "Stride of block 3's last unit (1 or 2)."),
      (flags.DEFINE_string, "pool_padding", t.pool_padding,
       "Stem max-pool padding: same (Slim), keras, valid."),
      (flags.DEFINE_string, "input_normalization", t.input_normalization,
       "slim (RGB minus mean), keras_v2 or none.")]:
    define(name, default, text, flag_values=fv)
  flags.DEFINE_enum("protocol", "demo", protocols.PROTOCOLS, "demo: offline "
                    "data at CPU size; paper: the paper's settings (needs "
                    "prepared data).", flag_values=fv)


def config_from_flags(fv: flags.FlagValues = flags.FLAGS) -> driver.EvalConfig:
  """Parsed flags -> EvalConfig; trunk flags constrain a checkpoint if given."""
  trunk = ({n: fv[n].value for n in driver.TRUNK_FIELDS}
           if fv.checkpoint == "random"
           or any(fv[n].present for n in driver.TRUNK_FIELDS) else None)
  return driver.make_eval_config(
      checkpoint=fv.checkpoint, evaluators=fv.evaluators,
      eval_param=fv.eval_param, trunk=trunk, output=fv.output,
      markdown=fv.markdown, eval_lasso=fv.eval_lasso, seed=fv.seed,
      protocol=fv.protocol, baseline=fv.baseline, work_dir=fv.work_dir)


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


def parse_flags(argv):
  """absl's parser; a renamed flag (``--trunk_depth``) names its new name."""
  renamed = driver.renamed_flags(argv[1:])
  if renamed:
    sys.exit(f"error: {renamed}")
  return app.parse_flags_with_usage(argv)


def run():
  define_eval_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
