"""The CPU-scale study with seeds (``make study``).

    python -m tools.study                   # train what is missing, report
    python -m tools.study --dry_run         # print the commands only
    python -m tools.study --seeds="0 1 2 3" --output=RESULTS.md

Trains ``configs/study_*.cfg`` into ``runs/study/<row>/s<seed>`` (every
row with every seed but RP/H, seed by seed), skipping finished runs, fills
the task-transfer matrix (``tools/transfer_matrix.py``, cached cells kept),
then runs ``python -m tools.report`` over them into ``--output`` with the
matrix at the end. Run from the repository root (maintainer tooling, not
installed). Library: :mod:`tools.report.study_plan`; docs/report.md.
"""
import sys

from absl import app, flags

from tools.report import study_plan as study

flags.DEFINE_string("seeds", "0 1 2", "Training seeds (and the random "
                    "row's trunk init seeds), separated by spaces or commas.")
flags.DEFINE_string("root", "runs/study", "The study's run folders.")
flags.DEFINE_string("output", "RESULTS.md", "The report's Markdown.")
flags.DEFINE_bool("dry_run", False, "Print the commands; run nothing.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    seeds = study.parse_seeds(FLAGS.seeds)
    study.check_working_folder()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return study.run_study(seeds, root=FLAGS.root, output=FLAGS.output,
                         dry_run=FLAGS.dry_run,
                         log=lambda s: print(s, flush=True))


def run():
  app.run(main)


if __name__ == "__main__":
  run()
