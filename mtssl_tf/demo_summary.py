"""Prints the closing summary of a demo run (``make demo``'s last step):

    python -m mtssl_tf.demo_summary runs/demo

The held-out pretext table (each metric beside its chance level) and the
downstream table (trained vs random init), each with one line on what it
means at this scale (:mod:`mtssl_tf.reporting.demo_tables`). Exits 1 when
the run folder lacks either output.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from mtssl_tf.reporting import demo_tables as summary_lib


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = list(sys.argv[1:] if argv is None else argv)
  if len(args) != 1 or args[0].startswith("-"):
    print("usage: python -m mtssl_tf.demo_summary RUN_DIR", file=sys.stderr)
    return 2
  print(summary_lib.demo_summary(args[0]))
  return 0 if summary_lib.complete(args[0]) else 1


if __name__ == "__main__":
  sys.exit(main())
