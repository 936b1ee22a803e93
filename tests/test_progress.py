"""Progress lines: rate and time left from a fake clock."""
import math

from mtssl_tf.utils.progress import Progress, format_duration


def test_format_duration():
  assert format_duration(0) == "0m00s"
  assert format_duration(187) == "3m07s"
  assert format_duration(3900) == "1h05m"
  assert format_duration(math.inf) == "?" and format_duration(-1) == "?"


def test_eta_is_the_mean_rate_so_far_and_lines_follow_the_interval():
  now = [100.0]
  lines = []
  progress = Progress("depth", 10, lines.append, every=4,
                      clock=lambda: now[0])
  assert progress.eta(0) == math.inf
  now[0] = 108.0  # 4 steps in 8 s: 2 s a step, 6 steps left
  assert progress.eta(4) == 12.0
  assert progress.update(4, "loss 0.5")
  assert lines == ["depth step 4/10 (40%) | loss 0.5 | 0.50 steps/s | "
                   "ETA 0m12s"]
  assert not progress.update(5)
  now[0] = 120.0
  assert progress.update(10)  # the last step always logs
  assert lines[-1].endswith("ETA 0m00s") and len(lines) == 2
  silent = Progress("x", 5, lines.append, every=0)
  assert not silent.update(5) and len(lines) == 2
