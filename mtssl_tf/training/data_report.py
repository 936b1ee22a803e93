"""What a training run tells its user about refused input files.

The input pipelines count and remember every file they refuse
(:class:`mtssl_tf.data.skips.SkipCounter`). During training a
:class:`RefusalReport` names each newly refused file once, in the log (a
few lines and a count) and in full in ``<run_dir>/refused_files.tsv``; a
resumed run reads that file back and does not name a file twice. When a
task's input cannot yield a usable example, :func:`no_usable_data_error`
turns the pipeline's failure into one message that says which task, which
source, and why each kind of file was refused.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, Iterable, Optional

from mtssl_tf.data.skips import NoUsableDataError, SkipCounter, first_lines

FILE_NAME = "refused_files.tsv"
# Files named in the log per report; the rest are in FILE_NAME.
LOG_LINES = 10


class RefusalReport:
  """Names refused files once per run (log and ``refused_files.tsv``).

  Args:
    counters: task name -> its input's skip counter.
    run_dir: where ``refused_files.tsv`` is written (None: log only).
    log: callable taking one line of text.
  """

  def __init__(self, counters: Dict[str, SkipCounter],
               run_dir: Optional[str], log=print):
    self.counters = counters
    self.path = os.path.join(run_dir, FILE_NAME) if run_dir else None
    self.log = log
    self.named = set()
    if self.path and os.path.exists(self.path):
      with open(self.path, newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
          if len(row) == 3 and row[0] != "task":
            self.named.add((row[0], row[1]))

  def report(self, quiet: bool = False) -> int:
    """Logs (unless ``quiet``) and records the files refused since the last
    call; returns how many were new."""
    new = []
    for task, counter in self.counters.items():
      for name, code in counter.refused():
        if (task, name) not in self.named:
          self.named.add((task, name))
          new.append((task, name, counter.describe(code)))
    if not new:
      return 0
    if self.path:
      exists = os.path.exists(self.path)
      with open(self.path, "a", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        if not exists:
          writer.writerow(["task", "file", "reason"])
        writer.writerows(new)
    if quiet:
      return len(new)
    where = f" (all in {self.path})" if self.path else ""
    self.log(f"data: {len(new)} input file(s) refused{where}:")
    for task, name, reason in new[:LOG_LINES]:
      self.log(f"  {task}: {name}: {reason}")
    if len(new) > LOG_LINES:
      self.log(f"  ... and {len(new) - LOG_LINES} more")
    return len(new)


def no_usable_data_error(counters: Dict[str, SkipCounter],
                         tasks: Iterable[str],
                         descriptions: Dict[str, str],
                         listed_in: Optional[str] = None,
                         checkpoint: Optional[str] = None
                         ) -> NoUsableDataError:
  """The error of a run whose input for one of ``tasks`` cannot yield a
  usable example (a pipeline's guard failed, or its source ran dry).

  Args:
    counters: task name -> its input's skip counter.
    tasks: the tasks whose data were being read.
    descriptions: task name -> what its source is (for the message).
    listed_in: the file that lists every refused file, if written.
    checkpoint: the run's latest checkpoint (None: none was written).
  """
  tasks = list(tasks)
  stuck = [t for t in tasks if counters.get(t) is not None
           and counters[t].exhausted()] or tasks
  parts = []
  for task in stuck:
    counter = counters.get(task)
    where = descriptions.get(task) or (counter.what if counter else "")
    text = f"no usable training example for task {task!r}"
    if where:
      text += f" from {where}"
    if counter is not None:
      text += f": {counter.summary()}"
      lines = first_lines(counter, LOG_LINES)
      if lines:
        text += "\n" + "\n".join(lines)
    parts.append(text)
  if listed_in:
    parts.append(f"Every refused file is listed in {listed_in}.")
  parts.append("Fix or remove these files, or give the run other data. "
               + (f"The latest checkpoint, {checkpoint}, is kept as it was."
                  if checkpoint else "No checkpoint was written."))
  return NoUsableDataError("\n".join(parts))


__all__ = ["FILE_NAME", "RefusalReport", "no_usable_data_error"]
