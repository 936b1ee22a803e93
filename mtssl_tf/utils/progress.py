"""Progress lines with rate and time left, for every long loop of the
package (training, evaluation fine-tuning)."""
from __future__ import annotations

import math
import time
from typing import Callable, Optional


def format_duration(seconds: float) -> str:
  """``"1h05m"``, ``"3m07s"``; ``"?"`` when unknown."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
  """Logs ``"<what> step i/N (p%) | <extra> | r steps/s | ETA t"``.

  Args:
    what: the loop's name, first on every line.
    total: the number of steps.
    log: where lines go.
    every: a line every this many steps (and at the last step); 0 logs
      nothing.
    clock: a ``time.time``-like callable (tests pass a fake one).
  """

  def __init__(self, what: str, total: int, log: Callable[[str], None],
               every: int, clock: Callable[[], float] = time.time):
    self.what = what
    self.total = int(total)
    self.log = log
    self.every = int(every)
    self.clock = clock
    self.start = clock()

  def eta(self, done: int) -> float:
    """Seconds left at the mean rate so far (inf before the first step)."""
    elapsed = self.clock() - self.start
    if done <= 0 or elapsed <= 0:
      return math.inf
    return (self.total - done) * elapsed / done

  def update(self, done: int, extra: Optional[str] = None) -> bool:
    """Logs a line when ``done`` is on the interval; returns whether it
    did."""
    if not self.every or not (done % self.every == 0 or done == self.total):
      return False
    elapsed = max(self.clock() - self.start, 1e-9)
    parts = [f"{self.what} step {done}/{self.total} "
             f"({100.0 * done / max(self.total, 1):.0f}%)"]
    if extra:
      parts.append(extra)
    parts.append(f"{done / elapsed:.2f} steps/s")
    parts.append(f"ETA {format_duration(self.eta(done))}")
    self.log(" | ".join(parts))
    return True
