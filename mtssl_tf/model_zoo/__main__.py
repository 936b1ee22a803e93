"""The model-zoo command: ``list``, ``show NAME``, ``build NAME... [--all]
[--resume] [--steps=N] [--tiny] [--weights_dtype=float32]``, ``build NAME
--from_run=RUN_DIR``,
``export NAME --output=X.keras``, ``register NAME --weights=URL_OR_PATH
[--sha256=HEX]`` (model_zoo/README.md). ``build`` trains in this process
(:func:`mtssl_tf.model_zoo.build_preset`), or with ``--from_run`` imports a
finished run of the preset's recipe."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from mtssl_tf import model_zoo
from mtssl_tf.model_zoo import listing
from mtssl_tf.model_zoo.command_line import build_parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  from mtssl_tf.config import ConfigError
  log = lambda s: print(s, flush=True)
  try:
    if args.command == "list":
      print(listing.table(args.weights_dir))
    elif args.command == "show":
      print(listing.describe(args.name, args.weights_dir))
    elif args.command == "build":
      if args.from_run is not None and args.work_dir is not None:
        raise ValueError("--from_run imports a finished run: --work_dir "
                         "(where a build trains) does not apply")
      model_zoo.build_presets(
          args.names, every=args.all, resume=args.resume, steps=args.steps,
          tiny=args.tiny, weights_dir=args.weights_dir, work_dir=args.work_dir,
          extra_flags=args.train_flag, from_run=args.from_run,
          weights_dtype=args.weights_dtype, log=log)
    elif args.command == "register":
      model_zoo.register(args.name, args.weights, sha256=args.sha256,
                         weights_dir=args.weights_dir,
                         description=args.description,
                         overwrite=args.overwrite)
    else:
      print("wrote " + model_zoo.export_keras(args.name, args.output,
                                              weights_dir=args.weights_dir))
  except (ValueError, FileNotFoundError, ConfigError, RuntimeError,
          model_zoo.WeightsDownloadError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
