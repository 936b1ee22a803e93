"""The CPU-scale study: which runs, their commands, the task-transfer matrix
and the report over them.

Eight pre-training rows from ``configs/study_*.cfg``, each with every seed
of ``seeds`` (3 by default) but RP/H (the first seed only); the random-init
row with one trunk init seed per seed. Runs go seed by seed (every row's
first seed, then the second, ...), so that a study stopped early has whole
columns of seeds. Each run trains into ``<root>/<config name>/s<seed>``
with ``--seed=<seed>`` (the training seed: trunk initialisation, data
order, task inputs). A run whose final checkpoint and held-out metrics exist
is skipped, and a half-finished one resumes (re-running a training command
resumes it), so the study can be stopped and restarted. Then the
task-transfer matrix over the matrix's rows (``tools/transfer_matrix.py``,
cells cached under ``<root>/transfer_matrix``) and the report over the
tables' rows go to ``output``, with ``docs/study_preamble.md`` on top and
the matrix at the end (:func:`matrix_command`, :func:`report_command`).

>>> plan = study_plan(seeds=(0, 1, 2))
>>> [r.label for r in plan][:3]
['RP', 'RP/H', 'Col']
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from mtssl_tf.reporting.tables import RANDOM_LABEL

# (row label, config name under configs/, every seed?, in the report's
# tables?). The single-task rows Col, Ex and MS are rows of the transfer
# matrix only: the paper's Tables 2-4 have no such row.
STUDY_ROWS = (
    ("RP", "study_rp", True, True),
    ("RP/H", "study_rp_h", False, True),
    ("Col", "study_col", True, False),
    ("Ex", "study_ex", True, False),
    ("MS", "study_ms", True, False),
    ("RP+Col", "study_rp_col", True, True),
    ("RP+Col+Ex+MS", "study_4task", True, True),
    ("RP+Col+Ex+MS/Lasso", "study_4task_lasso", True, True),
)
# The transfer matrix's trained rows, in its order (random init comes first).
MATRIX_ROWS = ("RP", "Col", "Ex", "MS", "RP+Col", "RP+Col+Ex+MS",
               "RP+Col+Ex+MS/Lasso")
DEFAULT_SEEDS = (0, 1, 2)
PREAMBLE = os.path.join("docs", "study_preamble.md")
ALPHA_PLOT = os.path.join("docs", "study_alphas.png")
# The trainer's final held-out evaluation: a run without it did not finish.
# (pretext_eval.JSON_NAME; spelled out so that the runner, which only starts
# subprocesses, does not import TensorFlow.)
PRETEXT_JSON = "pretext_metrics.json"
MATRIX_TOOL = os.path.join("tools", "transfer_matrix.py")


def parse_seeds(text: str) -> Tuple[int, ...]:
  """``"0 1 2"`` or ``"0,1,2"`` -> ``(0, 1, 2)``.

  Raises:
    ValueError: no seed, a seed that is not an integer, a seed twice.
  """
  parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
  try:
    seeds = tuple(int(p) for p in parts)
  except ValueError:
    raise ValueError(f"seeds {text!r}: integers separated by spaces or "
                     "commas, e.g. '0 1 2'") from None
  if not seeds:
    raise ValueError("seeds: give at least one seed, e.g. '0 1 2'")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds {text!r} lists a seed twice")
  return seeds


def flag_value(flagfile: str, name: str) -> Optional[str]:
  """The value of ``--name`` that the flagfile sets, following nested
  ``--flagfile=`` lines (paths from the working directory, as absl reads
  them); the last one wins, as in absl. None when it is not set."""
  value = None
  with open(flagfile) as f:
    for line in f:
      line = line.strip()
      if line.startswith("--flagfile="):
        nested = flag_value(line.split("=", 1)[1], name)
        value = nested if nested is not None else value
      elif line.startswith(f"--{name}="):
        value = line.split("=", 1)[1]
  return value


@dataclasses.dataclass(frozen=True)
class StudyRun:
  """One pre-training run of the study (``in_tables``: a row of the
  report's tables, not only of the transfer matrix)."""
  label: str
  config: str
  seed: int
  run_dir: str
  in_tables: bool = True

  def command(self, python: str = sys.executable) -> List[str]:
    return [python, "-m", "mtssl_tf.train", f"--flagfile={self.config}",
            f"--seed={self.seed}", f"--run_dir={self.run_dir}"]

  def steps(self) -> int:
    value = flag_value(self.config, "steps")
    if value is None:
      raise ValueError(f"{self.config} sets no --steps")
    return int(value)

  def is_complete(self) -> bool:
    """The final checkpoint (``ckpt-<steps>``) and the final held-out
    metrics are in the run folder."""
    return (os.path.isfile(os.path.join(self.run_dir, "checkpoints",
                                        f"ckpt-{self.steps()}.index"))
            and os.path.isfile(os.path.join(self.run_dir, PRETEXT_JSON)))


def study_plan(seeds: Sequence[int] = DEFAULT_SEEDS,
               root: str = os.path.join("runs", "study"),
               configs: str = "configs") -> List[StudyRun]:
  """Every training run of the study, seed by seed."""
  plan = []
  for n, seed in enumerate(seeds):
    for label, name, every_seed, in_tables in STUDY_ROWS:
      if n == 0 or every_seed:
        plan.append(StudyRun(label, os.path.join(configs, f"{name}.cfg"),
                             int(seed), os.path.join(
                                 root, name[len("study_"):], f"s{seed}"),
                             in_tables))
  return plan


def _run_folder_template(plan: Sequence[StudyRun], label: str) -> str:
  """``<root>/<row>/s{seed}``: the row's run folders as the matrix takes
  them."""
  run = next(r for r in plan if r.label == label)
  return os.path.join(os.path.dirname(run.run_dir), "s{seed}")


def matrix_command(plan: Sequence[StudyRun], seeds: Sequence[int],
                   root: str, python: str = sys.executable) -> List[str]:
  """The task-transfer matrix over :data:`MATRIX_ROWS` and random init,
  every seed, its cells cached under ``<root>/transfer_matrix``, its
  Markdown in ``<root>/transfer_matrix.md``."""
  return ([python, MATRIX_TOOL,
           "--seeds=" + ",".join(str(s) for s in seeds)]
          + [f"--row={label}={_run_folder_template(plan, label)}"
             for label in MATRIX_ROWS]
          + [f"--cache={os.path.join(root, 'transfer_matrix')}",
             f"--output={matrix_markdown(root)}"])


def matrix_markdown(root: str) -> str:
  return os.path.join(root, "transfer_matrix.md")


def report_command(plan: Sequence[StudyRun], seeds: Sequence[int],
                   output: str, root: str,
                   python: str = sys.executable) -> List[str]:
  """The report over the tables' rows: each row's runs joined by ``+``, the
  random row with one trunk per seed, the preamble, Figure 5 and the
  transfer matrix at the end."""
  rows = {}
  for run in plan:
    if run.in_tables:
      rows.setdefault(run.label, []).append(run.run_dir)
  return [python, "-m", "tools.report",
          "--runs=" + ",".join(f"{label}={'+'.join(dirs)}"
                               for label, dirs in rows.items()),
          "--random_seeds=" + ",".join(str(s) for s in seeds),
          f"--work_dir={os.path.join(root, 'report')}",
          f"--output={output}",
          f"--json_output={os.path.join(root, 'results.json')}",
          f"--preamble={PREAMBLE}", f"--alpha_plot={ALPHA_PLOT}",
          f"--appendix={matrix_markdown(root)}"]


def check_working_folder(configs: str = "configs") -> None:
  """``ValueError`` unless the study's flagfiles and preamble are reachable
  from the working folder (the repository root)."""
  missing = [p for p in [os.path.join(configs, f"{row[1]}.cfg")
                         for row in STUDY_ROWS] + [PREAMBLE, MATRIX_TOOL]
             if not os.path.isfile(p)]
  if missing:
    raise ValueError(f"{', '.join(missing)} not found from {os.getcwd()}: "
                     "run the study from the repository root")


def run_study(seeds: Sequence[int] = DEFAULT_SEEDS, *,
              root: str = os.path.join("runs", "study"),
              output: str = "RESULTS.md", dry_run: bool = False,
              log: Callable[[str], None] = print,
              call: Callable[[List[str]], int] = subprocess.call) -> int:
  """Trains what is missing, fills the transfer matrix, then writes the
  report.

  Args:
    seeds: training seeds of the rows run with every seed, and the random
      row's trunk init seeds.
    root: the study's run folders.
    output: the report's Markdown (the JSON beside it, ``.json``).
    dry_run: print the commands that would run, run nothing.
    log: progress lines.
    call: runs one command, returns its exit status.

  Returns:
    0, or the exit status of the first command that failed.
  """
  plan = study_plan(seeds, root)
  total = len(plan) + 2
  for n, run in enumerate(plan, 1):
    what = f"[{n}/{total}] {run.label} seed {run.seed} ({run.run_dir})"
    if run.is_complete():
      log(f"{what}: complete, skipped")
      continue
    command = run.command()
    log(f"{what}: {shlex.join(command)}")
    if not dry_run:
      status = call(command)
      if status:
        log(f"{what}: failed with exit status {status}; the study stops "
            "(re-run to resume)")
        return status
  command = matrix_command(plan, seeds, root)
  log(f"[{total - 1}/{total}] transfer matrix (cached cells are kept): "
      f"{shlex.join(command)}")
  if not dry_run:
    status = call(command)
    if status:
      log(f"transfer matrix: failed with exit status {status}; the study "
          "stops (re-run to resume)")
      return status
  command = report_command(plan, seeds, output, root)
  log(f"[{total}/{total}] report ({RANDOM_LABEL}: trunk init seeds "
      f"{', '.join(str(s) for s in seeds)}): {shlex.join(command)}")
  return 0 if dry_run else call(command)

__all__ = ["ALPHA_PLOT", "DEFAULT_SEEDS", "MATRIX_ROWS", "PREAMBLE",
           "STUDY_ROWS", "StudyRun", "check_working_folder", "flag_value",
           "matrix_command", "matrix_markdown", "parse_seeds",
           "report_command", "run_study", "study_plan"]
