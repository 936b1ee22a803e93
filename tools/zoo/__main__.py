"""``python -m tools.zoo``: see :mod:`tools.zoo.command`."""
import sys

from tools.zoo.command import main

if __name__ == "__main__":
  sys.exit(main())
