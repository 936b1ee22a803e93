"""The argument parser of ``python -m mtssl_tf.model_zoo``
(:mod:`mtssl_tf.model_zoo.__main__`, which stays a thin entry point)."""
from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
  """The parser of every subcommand (list, show, build, export, register)."""
  parser = argparse.ArgumentParser(
      prog="python -m mtssl_tf.model_zoo",
      description="Model-zoo presets of Doersch & Zisserman (ICCV 2017): "
                  "list, show, build (train demo weights), export, "
                  "register (weights by URL or path).")
  sub = parser.add_subparsers(dest="command", required=True)
  where = "folder of the weights (default: the package's weights/)"
  p = sub.add_parser("list", help="table of the presets")
  p.add_argument("--weights_dir", default=None, help=where)
  p = sub.add_parser("show", help="a preset's metadata and recipes")
  p.add_argument("name")
  p.add_argument("--weights_dir", default=None, help=where)
  p = sub.add_parser("build", help="train presets at demo scale and write "
                                   "their weights and metadata")
  p.add_argument("names", nargs="*", help="preset names")
  p.add_argument("--all", action="store_true", help="every preset")
  p.add_argument("--resume", action="store_true", help="skip presets this "
                 "recipe already built (model_zoo.up_to_date)")
  p.add_argument("--steps", type=int, default=None,
                 help="training steps (default: the demo config's)")
  p.add_argument("--tiny", action="store_true",
                 help="tiny architecture (tests and quick checks)")
  p.add_argument("--weights_dir", default=None, help=where)
  p.add_argument("--work_dir", default=None,
                 help="keep the training runs in <work_dir>/<name> "
                      "(re-running resumes); default: a temporary folder")
  p.add_argument("--from_run", default=None, metavar="RUN_DIR",
                 help="import a finished training run of the preset's "
                      "recipe instead of training (one NAME; e.g. a study "
                      "row's seed-0 run, runs/study/rp/s0)")
  p.add_argument("--train_flag", action="append", default=[],
                 metavar="--FLAG=VALUE",
                 help="extra training option (repeatable), e.g. "
                      "--train_flag=--batch_size=4")
  p.add_argument("--weights_dtype", default="float16",
                 choices=("float16", "float32"), help="float16: arrays as "
                 "float16 where that is safe (model_zoo/README.md)")
  p = sub.add_parser("export", help="write a preset's model as a .keras "
                                    "file (keras.models.load_model)")
  p.add_argument("name")
  p.add_argument("--output", required=True, help="path ending in .keras")
  p.add_argument("--weights_dir", default=None, help=where)
  p = sub.add_parser(
      "register", help="add a .keras file (URL or path) as a preset with "
                       "its sha256, e.g. the authors' checkpoint converted "
                       "by `python -m mtssl_tf.convert_slim`")
  p.add_argument("name", help="new preset name (lowercase, digits, _)")
  p.add_argument("--weights", required=True, metavar="URL_OR_PATH",
                 help="the .keras file; a URL is fetched by load() and "
                      "cached, a path is copied into --weights_dir")
  p.add_argument("--sha256", default=None,
                 help="expected sha256 of the file (checked now and at "
                      "every load)")
  p.add_argument("--description", default="")
  p.add_argument("--overwrite", action="store_true",
                 help="replace an existing registration")
  p.add_argument("--weights_dir", default=None, help=where)
  return parser
