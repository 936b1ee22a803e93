"""The model-zoo command.

    python -m mtssl_tf.model_zoo list
    python -m mtssl_tf.model_zoo show rp_col
    python -m mtssl_tf.model_zoo build rp rp_col [--steps=N] [--all]
    python -m mtssl_tf.model_zoo export rp_col --output=rp_col.keras
    python -m mtssl_tf.model_zoo register authors_4task \
        --weights=https://host/authors_4task.keras --sha256=<hex>

``build`` trains each preset at demo scale on the offline sample set (one
``python -m mtssl_tf.train`` run per preset, from the repository root) and
writes ``<name>.weights.h5`` + ``<name>.json`` into the package's
``weights/`` folder (or ``--weights_dir``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional, Sequence

from mtssl_tf import model_zoo
from mtssl_tf.tasks import ABBREVIATIONS


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m mtssl_tf.model_zoo",
      description="Model-zoo presets of Doersch & Zisserman (ICCV 2017): "
                  "list, show, build (train demo weights), export, "
                  "register (weights by URL or path).")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("list", help="table of the presets")
  p.add_argument("--weights_dir", default=None,
                 help="folder of the weights (default: the package's)")

  p = sub.add_parser("show", help="a preset's metadata and recipes")
  p.add_argument("name")
  p.add_argument("--weights_dir", default=None)

  p = sub.add_parser("build", help="train presets at demo scale and write "
                                   "their weights and metadata")
  p.add_argument("names", nargs="*", help="preset names")
  p.add_argument("--all", action="store_true", help="every preset")
  p.add_argument("--steps", type=int, default=None,
                 help="training steps (default: the demo config's)")
  p.add_argument("--tiny", action="store_true",
                 help="tiny architecture (tests and quick checks)")
  p.add_argument("--weights_dir", default=None,
                 help="output folder (default: the package's weights/)")
  p.add_argument("--work_dir", default=None,
                 help="keep the training runs in <work_dir>/<name> "
                      "(re-running resumes); default: a temporary folder")
  p.add_argument("--train_flag", action="append", default=[],
                 metavar="--FLAG=VALUE",
                 help="extra flag for mtssl_tf.train (repeatable), e.g. "
                      "--train_flag=--batch_size=4")

  p = sub.add_parser("export", help="write a preset's model as a .keras "
                                    "file (keras.models.load_model)")
  p.add_argument("name")
  p.add_argument("--output", required=True, help="path ending in .keras")
  p.add_argument("--weights_dir", default=None)

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
  p.add_argument("--weights_dir", default=None,
                 help="where <name>.json goes (default: the package's "
                      "weights/)")
  return parser


def _list(weights_dir: Optional[str]) -> int:
  rows = [("name", "display", "tasks", "lasso", "harmonized", "built",
           "sha256", "params", "MB")]
  for name in model_zoo.list_presets():
    preset = model_zoo.get_preset(name)
    built = model_zoo.is_built(name, weights_dir)
    sha = params = size = "-"
    if built:
      meta = model_zoo.load_metadata(name, weights_dir)
      sha = meta["sha256"][:12]
      params = f"{meta['params']:,}"
      size = f"{meta['weights_bytes'] / 1e6:.2f}"
    abbreviations = ",".join(ABBREVIATIONS[t] for t in preset.tasks)
    rows.append((name, preset.display_name, abbreviations,
                 "yes" if preset.lasso else "no",
                 "yes" if preset.harmonize else "no",
                 "yes" if built else "no", sha, params, size))
  for name in model_zoo.list_registered(weights_dir):
    meta = model_zoo.registered_metadata(name, weights_dir)
    abbreviations = ",".join(ABBREVIATIONS[t] for t in meta["tasks"])
    rows.append((name, f"registered {meta['kind']}", abbreviations or "-",
                 "yes" if meta["lasso"] else "no",
                 "yes" if meta["harmonize"] else "no",
                 "url" if meta.get("weights_url") else "yes",
                 meta["sha256"][:12], f"{meta['params']:,}",
                 f"{meta['weights_bytes'] / 1e6:.2f}"))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  for row in rows:
    print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
  return 0


def _show(name: str, weights_dir: Optional[str]) -> int:
  registered = model_zoo.registered_metadata(name, weights_dir)
  if registered is not None:
    print(json.dumps({k: v for k, v in registered.items()
                      if k != "model_config"}, indent=2))
    return 0
  preset = model_zoo.get_preset(name)
  print(f"{preset.name}: {preset.display_name} ({preset.description})")
  print("demo build:  " + model_zoo.build_command(name))
  print("demo flags:  python -m mtssl_tf.train "
        + " ".join(preset.train_flags("demo")))
  print("paper recipe: python -m mtssl_tf.train "
        + " ".join(preset.paper_flags))
  print("paper results: " + json.dumps(
      {k: dict(v) for k, v in preset.paper_results.items()}))
  if model_zoo.is_built(name, weights_dir):
    meta = model_zoo.load_metadata(name, weights_dir)
    keys = ("scale", "steps", "seed", "params", "weights_bytes", "sha256",
            "final_losses", "evaluations", "data", "created")
    print(json.dumps({k: meta.get(k) for k in keys}, indent=2))
  else:
    print("not built")
  return 0


def _build(args) -> int:
  names = model_zoo.list_presets() if args.all else list(args.names)
  if not names:
    print("error: name presets to build, or --all; known presets: "
          + ", ".join(model_zoo.list_presets()), file=sys.stderr)
    return 2
  for name in names:
    model_zoo.get_preset(name)  # every name is checked before any training
  if args.steps is not None and args.steps < 1:
    print(f"error: --steps={args.steps} must be >= 1", file=sys.stderr)
    return 2
  t0 = time.time()
  for i, name in enumerate(names, 1):
    print(f"== preset {i}/{len(names)}: {name}", flush=True)
    t = time.time()
    model_zoo.build_preset(name, steps=args.steps, tiny=args.tiny,
                           weights_dir=args.weights_dir,
                           work_dir=args.work_dir,
                           extra_flags=args.train_flag,
                           log=lambda s: print(s, flush=True))
    print(f"== {name} built in {time.time() - t:.0f}s", flush=True)
  print(f"built {len(names)} preset(s) in {time.time() - t0:.0f}s")
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  from mtssl_tf.config import ConfigError
  try:
    if args.command == "list":
      return _list(args.weights_dir)
    if args.command == "show":
      return _show(args.name, args.weights_dir)
    if args.command == "build":
      return _build(args)
    if args.command == "register":
      model_zoo.register(args.name, args.weights, sha256=args.sha256,
                         weights_dir=args.weights_dir,
                         description=args.description,
                         overwrite=args.overwrite)
      return 0
    path = model_zoo.export_keras(args.name, args.output,
                                  weights_dir=args.weights_dir)
    print(f"wrote {path}")
    return 0
  except (ValueError, FileNotFoundError, ConfigError, RuntimeError,
          model_zoo.WeightsDownloadError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
