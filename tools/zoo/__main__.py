"""``python -m tools.zoo``: see :mod:`tools.zoo.zoo_cli`."""
import sys

from tools.zoo.zoo_cli import main

if __name__ == "__main__":
  sys.exit(main())
