"""``python -m tools.zoo``: ``build NAME... [--all] [--resume] [--steps=N]
[--tiny] [--weights_dtype=float32]``, ``build NAME --from_run=RUN_DIR``,
``register NAME --weights=URL_OR_PATH [--sha256=HEX]`` (model_zoo/README.md).
``build`` trains in this process (:func:`tools.zoo.build_preset`), or with
``--from_run`` imports a finished run of the preset's recipe."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from mtssl_tf.model_zoo.command_line import WHERE


def _add_build(sub) -> None:
  p = sub.add_parser("build", help="train presets at study scale and write "
                                   "their weights and metadata")
  p.add_argument("names", nargs="*", help="preset names")
  p.add_argument("--all", action="store_true", help="every preset")
  p.add_argument("--resume", action="store_true", help="skip presets this "
                 "recipe already built (model_zoo.provenance.up_to_date)")
  p.add_argument("--steps", type=int, default=None,
                 help="training steps (default: the study config's)")
  p.add_argument("--tiny", action="store_true",
                 help="tiny architecture (tests and quick checks)")
  p.add_argument("--weights_dir", default=None, help=WHERE)
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


def _add_register(sub) -> None:
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
  p.add_argument("--weights_dir", default=None, help=WHERE)


def build_parser() -> argparse.ArgumentParser:
  """The parser of ``build`` and ``register``."""
  parser = argparse.ArgumentParser(
      prog="python -m tools.zoo",
      description="Maintainer tooling of the model zoo: build presets "
                  "(train study-scale weights into model_zoo/), register "
                  ".keras files by URL or path.")
  sub = parser.add_subparsers(dest="command", required=True)
  _add_build(sub)
  _add_register(sub)
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  from mtssl_tf.config import ConfigError  # pylint: disable=g-import-not-at-top
  from mtssl_tf.model_zoo import WeightsDownloadError  # pylint: disable=g-import-not-at-top
  from tools import zoo  # pylint: disable=g-import-not-at-top
  args = build_parser().parse_args(argv)
  log = lambda s: print(s, flush=True)
  try:
    if args.command == "build":
      if args.from_run is not None and args.work_dir is not None:
        raise ValueError("--from_run imports a finished run: --work_dir "
                         "(where a build trains) does not apply")
      zoo.build_presets(
          args.names, every=args.all, resume=args.resume, steps=args.steps,
          tiny=args.tiny, weights_dir=args.weights_dir, work_dir=args.work_dir,
          extra_flags=args.train_flag, from_run=args.from_run,
          weights_dtype=args.weights_dtype, log=log)
    else:
      zoo.register(args.name, args.weights, sha256=args.sha256,
                   weights_dir=args.weights_dir, description=args.description,
                   overwrite=args.overwrite)
  except (ValueError, FileNotFoundError, ConfigError, RuntimeError,
          WeightsDownloadError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
