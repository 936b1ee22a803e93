"""``python -m tools.report``: see :mod:`tools.report.command`."""
from tools.report.command import run

if __name__ == "__main__":
  run()
