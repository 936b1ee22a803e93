"""``python -m tools.report``: see :mod:`tools.report.report_cli`."""
from tools.report.report_cli import run

if __name__ == "__main__":
  run()
