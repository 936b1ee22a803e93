r"""Converts the authors' TF-Slim ``resnet_v2_101`` checkpoint into a Trunk.

Usage::

  python -m mtssl_tf.convert_slim --checkpoint=/ckpt/model.ckpt-1000 \
      --output=trunk.keras [--depth=101] [--width=1.0] [--scope=resnet_v2_101] \
      [--block3_last_stride=1] [--pool_padding=same]

Writes the ``.keras`` file and, next to it, ``<output stem>.conversion.json``
(what was mapped, what was ignored, the trunk config). How names, BN
epsilon, padding and input normalisation are mapped:
:mod:`mtssl_tf.models.slim_conversion`.
Exit status: 0 on success, 1 when the conversion fails, 2 for bad flags.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from absl import flags

from mtssl_tf.models.slim_conversion import (SLIM_POOL_PADDINGS,
                                             SlimConversionError,
                                             check_command_settings, convert,
                                             report_path)


def build_flags():
  """A fresh flag set (so that ``main`` can run several times in-process)."""
  fv = flags.FlagValues()
  flags.DEFINE_string("checkpoint", None,
                      "TF-Slim checkpoint: file prefix or directory.",
                      flag_values=fv)
  flags.DEFINE_string("output", None, "The .keras file to write.",
                      flag_values=fv)
  flags.DEFINE_integer("depth", 101, "ResNet depth of the checkpoint.",
                       flag_values=fv)
  flags.DEFINE_float("width", 1.0, "Channel multiplier of the checkpoint.",
                     flag_values=fv)
  flags.DEFINE_string("scope", None,
                      "Slim network scope (default resnet_v2_<depth>).",
                      flag_values=fv)
  flags.DEFINE_integer(
      "block3_last_stride", 1,
      "1: all block-3 units at output stride 16 (mixable); 2: Slim's own "
      "block3 end point.", flag_values=fv)
  flags.DEFINE_enum("pool_padding", "same", list(SLIM_POOL_PADDINGS),
                    "Stem max-pool padding of the Slim graph (same: "
                    "resnet_arg_scope's, the authors' network).",
                    flag_values=fv)
  return fv


def main(argv: Optional[Sequence[str]] = None,
         log: Callable[[str], None] = print) -> int:
  """The command; returns its exit status (see the module docstring)."""
  argv = list(sys.argv if argv is None else argv)
  if not argv or argv[0].startswith("--"):
    argv = ["convert_slim"] + argv
  fv = build_flags()
  if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
    print(__doc__)
    print(fv.get_help())
    return 0
  try:
    extra = fv(argv)
    if len(extra) > 1:
      raise flags.Error(f"unexpected arguments: {extra[1:]}")
    check_command_settings(fv.checkpoint, fv.output, fv.depth, fv.width,
                           fv.block3_last_stride)
  except (flags.Error, ValueError) as e:
    print(f"convert_slim: {e}", file=sys.stderr)
    return 2
  try:
    report = convert(fv.checkpoint, fv.output, depth=fv.depth,
                     width=fv.width, scope=fv.scope,
                     block3_last_stride=fv.block3_last_stride,
                     pool_padding=fv.pool_padding)
  except (SlimConversionError, FileNotFoundError) as e:
    print(f"convert_slim: {e}", file=sys.stderr)
    return 1
  log(report.summary())
  for name, reason in sorted(report.ignored.items()):
    log(f"  ignored {name}: {reason}")
  log(f"wrote {fv.output} and {report_path(fv.output)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
