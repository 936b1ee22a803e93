"""The model-zoo command: ``list``, ``show NAME``, ``export NAME
--output=X.keras`` (model_zoo/README.md). Building and registering presets
is maintainer tooling in a checkout (``python -m tools.zoo``)."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from mtssl_tf import model_zoo
from mtssl_tf.model_zoo import listing
from mtssl_tf.model_zoo.command_line import build_parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.command == "list":
      print(listing.table(args.weights_dir))
    elif args.command == "show":
      print(listing.describe(args.name, args.weights_dir))
    else:
      print("wrote " + model_zoo.export_keras(args.name, args.output,
                                              weights_dir=args.weights_dir))
  except (ValueError, FileNotFoundError, model_zoo.WeightsDownloadError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
