"""The argument parser of ``python -m mtssl_tf.model_zoo``
(:mod:`mtssl_tf.model_zoo.__main__`, which stays a thin entry point)."""
from __future__ import annotations

import argparse

WHERE = ("the zoo folder of <name>.weights.h5 and <name>.json (default: "
         "$MTSSL_TF_ZOO_DIR, else the checkout's model_zoo/)")


def build_parser() -> argparse.ArgumentParser:
  """The parser of every subcommand (list, show, export)."""
  parser = argparse.ArgumentParser(
      prog="python -m mtssl_tf.model_zoo",
      description="Model-zoo presets of Doersch & Zisserman (ICCV 2017): "
                  "list, show, export. Building and registering presets is "
                  "maintainer tooling in a checkout: python -m tools.zoo.")
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("list", help="table of the presets")
  p.add_argument("--weights_dir", default=None, help=WHERE)
  p = sub.add_parser("show", help="a preset's metadata and recipes")
  p.add_argument("name")
  p.add_argument("--weights_dir", default=None, help=WHERE)
  p = sub.add_parser("export", help="write a preset's model as a .keras "
                                    "file (keras.models.load_model)")
  p.add_argument("name")
  p.add_argument("--output", required=True, help="path ending in .keras")
  p.add_argument("--weights_dir", default=None, help=WHERE)
  return parser
