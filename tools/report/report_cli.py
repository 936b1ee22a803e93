"""The paper's Tables 2, 3 and 4, measured on our checkpoints: the report.

    python -m tools.report \\
        --runs=RP=runs/demo_rp,RP+Col=runs/demo_rp_col,RP+Col+Ex+MS=runs/demo_4task \\
        --output=RESULTS.md
    python -m tools.report --presets=rp,rp_col,rp_col_ex_ms --output=RESULTS.md

Evaluates every checkpoint (rows named by the paper's labels: ``RP``,
``RP/H``, ``RP+Col+Ex+MS/Lasso``, ...; several runs of a row give mean +-
std) and random-initialised trunks of the same architecture through the
driver of ``python -m mtssl_tf.evaluate``; prints the tables with the
paper's number beside ours, then an analysis generated from the numbers.
Evaluations are cached in ``--work_dir``. Library: :mod:`tools.report`;
docs/report.md. Exit status 1 when an evaluation failed (the others are
written), 2 for bad flags or a checkpoint that cannot be loaded.
"""
import shlex
import sys

from absl import app, flags

from tools import report as reporting
from mtssl_tf.evaluation import protocols


def define_report_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the report's flags once per ``fv``."""
  if "runs" in fv:
    return
  labels = ", ".join(reporting.KNOWN_LABELS)
  for define, name, default, text in [
      (flags.DEFINE_list, "runs", [], "Training run folders (or .keras "
       "files) as LABEL=RUN_DIR; several runs (training seeds) of one row "
       f"as LABEL=RUN1+RUN2 or a glob. Labels of: {labels}."),
      (flags.DEFINE_list, "presets", [], "Model zoo presets, as NAME or "
       "LABEL=NAME."),
      (flags.DEFINE_bool, "random", True, "Add the random-initialised trunk "
       "(the baseline row)."),
      (flags.DEFINE_list, "random_seeds", [], "Trunk init seeds of the "
       "random row, one trunk each (default: one, seeded with --seed)."),
      (flags.DEFINE_list, "evaluators", "linear_probe,detection,depth",
       f"Evaluations to run (a column not run shows {reporting.MISSING})."),
      (flags.DEFINE_multi_string, "eval_param", [], "Override a protocol "
       "parameter: evaluator.name=value (repeatable)."),
      (flags.DEFINE_list, "tables", ["2", "3", "4"], "Tables to print."),
      (flags.DEFINE_integer, "seed", 0, "Seed of every evaluation (probe "
       "init, data order), the same for every row."),
      (flags.DEFINE_string, "work_dir", "runs/report", "Cache of the "
       "evaluations ('' for none)."),
      (flags.DEFINE_string, "output", None, "Write the Markdown here."),
      (flags.DEFINE_string, "json_output", None, "Write metrics as JSON."),
      (flags.DEFINE_string, "preamble", None, "A Markdown file placed at the "
       "top (e.g. the training commands)."),
      (flags.DEFINE_string, "appendix", None, "A Markdown file placed at "
       "the end (the study's task-transfer matrix)."),
      (flags.DEFINE_string, "alpha_plot", None, "Where the lasso run's "
       "Figure 5 PNG is copied (default: <output stem>_alphas.png beside "
       "--output).")]:
    define(name, default, text, flag_values=fv)
  flags.DEFINE_enum("protocol", "demo", protocols.PROTOCOLS, "demo: offline "
                    "data at CPU size; paper: the paper's settings (needs "
                    "prepared data).", flag_values=fv)


def run_report(fv: flags.FlagValues = flags.FLAGS, log=print) -> str:
  """Parsed flags -> :class:`~tools.report.ReportConfig` -> the
  report (:func:`~tools.report.make_report`); returns the Markdown."""
  config = reporting.ReportConfig(
      **{name: fv[name].value for name in (
          "runs", "presets", "random", "random_seeds", "evaluators",
          "eval_param", "protocol", "tables", "seed", "work_dir", "output",
          "json_output", "preamble", "appendix", "alpha_plot")},
      command="python -m tools.report " + " ".join(
          shlex.quote(a) for a in sys.argv[1:]))
  return reporting.make_report(config, log=log)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    text = run_report(flags.FLAGS, log=lambda s: print(s, flush=True))
  except reporting.EvaluationFailed as e:
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
  define_report_flags()
  app.run(main)
