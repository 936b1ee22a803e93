"""The CPU-scale study: which runs, their commands, and
the report over them.

Five pre-training rows from ``configs/study_*.cfg``; RP+Col and the
four-task row with every seed of ``seeds`` (3 by default), RP, RP/H and the
four-task lasso row with the first seed only; the random-init row with one
trunk init seed per seed. Each run trains into
``<root>/<config name>/s<seed>`` with ``--seed=<seed>`` (the training seed:
trunk initialisation, data order, task inputs). A run whose final
checkpoint and held-out metrics exist is skipped, and a half-finished one
resumes (re-running a training command resumes it), so the study can be
stopped and restarted. The report then goes to ``output`` with
``docs/study_preamble.md`` on top (:func:`report_command`).

>>> plan = study_plan(seeds=(0, 1, 2))
>>> [r.label for r in plan][:3]
['RP', 'RP/H', 'RP+Col']
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

# (row label, config name under configs/, every seed?).
STUDY_ROWS = (
    ("RP", "study_rp", False),
    ("RP/H", "study_rp_h", False),
    ("RP+Col", "study_rp_col", True),
    ("RP+Col+Ex+MS", "study_4task", True),
    ("RP+Col+Ex+MS/Lasso", "study_4task_lasso", False),
)
DEFAULT_SEEDS = (0, 1, 2)
PREAMBLE = os.path.join("docs", "study_preamble.md")
ALPHA_PLOT = os.path.join("docs", "study_alphas.png")
# The trainer's final held-out evaluation: a run without it did not finish.
# (pretext_eval.JSON_NAME; spelled out so that the runner, which only starts
# subprocesses, does not import TensorFlow.)
PRETEXT_JSON = "pretext_metrics.json"


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
  """One pre-training run of the study."""
  label: str
  config: str
  seed: int
  run_dir: str

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
  """Every training run of the study, in order."""
  plan = []
  for label, name, every_seed in STUDY_ROWS:
    for seed in (seeds if every_seed else seeds[:1]):
      plan.append(StudyRun(label, os.path.join(configs, f"{name}.cfg"),
                           int(seed), os.path.join(
                               root, name[len("study_"):], f"s{seed}")))
  return plan


def report_command(plan: Sequence[StudyRun], seeds: Sequence[int],
                   output: str, root: str,
                   python: str = sys.executable) -> List[str]:
  """The report over the study's runs: each row's runs joined by ``+``, the
  random row with one trunk per seed, the preamble and Figure 5."""
  rows = {}
  for run in plan:
    rows.setdefault(run.label, []).append(run.run_dir)
  return [python, "-m", "tools.report",
          "--runs=" + ",".join(f"{label}={'+'.join(dirs)}"
                               for label, dirs in rows.items()),
          "--random_seeds=" + ",".join(str(s) for s in seeds),
          f"--work_dir={os.path.join(root, 'report')}",
          f"--output={output}",
          f"--json_output={os.path.join(root, 'results.json')}",
          f"--preamble={PREAMBLE}", f"--alpha_plot={ALPHA_PLOT}"]


def check_working_folder(configs: str = "configs") -> None:
  """``ValueError`` unless the study's flagfiles and preamble are reachable
  from the working folder (the repository root)."""
  missing = [p for p in [os.path.join(configs, f"{n}.cfg")
                         for _, n, _ in STUDY_ROWS] + [PREAMBLE]
             if not os.path.isfile(p)]
  if missing:
    raise ValueError(f"{', '.join(missing)} not found from {os.getcwd()}: "
                     "run the study from the repository root")


def run_study(seeds: Sequence[int] = DEFAULT_SEEDS, *,
              root: str = os.path.join("runs", "study"),
              output: str = "RESULTS.md", dry_run: bool = False,
              log: Callable[[str], None] = print,
              call: Callable[[List[str]], int] = subprocess.call) -> int:
  """Trains what is missing, then writes the report.

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
  total = len(plan) + 1
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
  command = report_command(plan, seeds, output, root)
  log(f"[{total}/{total}] report ({RANDOM_LABEL}: trunk init seeds "
      f"{', '.join(str(s) for s in seeds)}): {shlex.join(command)}")
  return 0 if dry_run else call(command)

__all__ = ["ALPHA_PLOT", "DEFAULT_SEEDS", "PREAMBLE", "STUDY_ROWS",
           "StudyRun", "check_working_folder", "flag_value", "parse_seeds",
           "report_command", "run_study", "study_plan"]
