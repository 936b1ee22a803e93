"""Exports a trained run: a ``.keras`` file and a TF Serving SavedModel.

    python -m mtssl_tf.export --flagfile=configs/demo.cfg
    python -m mtssl_tf.export --run_dir=runs/demo --export_dir=exports \
        --model_name=mtssl_demo --export_version=1

The export is named by ``--model_name`` on the command line, else after the
folder of a ``--run_dir`` given on the command line, else by the flagfile's
``--model_name``.

The run's model is rebuilt from its ``config.json`` and its latest
checkpoint restored by task name (docs/checkpoints.md). What is written is
described in :mod:`mtssl_tf.serving.model_export`, the library this command
calls.
"""
from __future__ import annotations

import os
import sys

# The library is mtssl_tf.serving.model_export; these names are re-exported
# so that `from mtssl_tf.export import export_model` works too.
from mtssl_tf.serving.model_export import (DEFAULT_IMAGE_SIZE,  # noqa: F401
                                           FeatureExtractor, export_model,
                                           load_run_model)


def main(argv):
  from absl import flags
  from absl import logging
  import tensorflow as tf

  from mtssl_tf.cli import flags as mt_flags
  from mtssl_tf.config import ConfigError

  f = flags.FLAGS
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel("WARNING")
  export_dir = f.export_dir or os.path.join(f.run_dir, "export")
  try:
    mt_flags.import_task_modules(f)
    model = load_run_model(f.run_dir)
  except (FileNotFoundError, ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  paths = export_model(model, export_dir, mt_flags.export_model_name(f),
                       f.export_version, f.serving_image_size)
  print(f"wrote {paths['keras']}")
  print(f"wrote {paths['saved_model']} (serving_default: uint8 images -> "
        "pooled, block3" + (", mixed_<task>" if model.mixer else "") + ")")
  return 0


if __name__ == "__main__":
  from absl import app
  from absl import flags as absl_flags

  from mtssl_tf.cli import flags as mt_flags

  mt_flags.define_train_flags()
  absl_flags.DEFINE_integer("export_version", 1, "SavedModel version folder.")
  absl_flags.DEFINE_integer("serving_image_size", DEFAULT_IMAGE_SIZE,
                            "Images are resized to this size in serving.")
  app.run(main, flags_parser=mt_flags.flags_parser(
      "export", mt_flags.export_sections, note="A training flagfile is "
      "accepted (every train flag is); the run folder's config.json decides "
      "the model."))
