"""Float16 zoo weights files: bytes, the arrays the rule
keeps float32, and how far the features of a model loaded from the float16
file are from the float32 model's, for the largest preset's architecture at
the zoo's (study) scale and for a trained run.

Usage (BENCHMARKS.md "Float16 zoo weights files"):
  python benchmarks/zoo_float16.py [--run_dir=runs/demo]

The study-scale architecture has fresh weights (its conv ranges are those
of an initialised network); ``--run_dir`` adds a trained run's model (its
batch-norm moving statistics and trained biases are what the rule must
catch). Nothing is written outside a temporary folder.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

# tools/ (the zoo's float16 writer) is beside the package, not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import mtssl_tf  # noqa: E402,F401  (registers the Keras classes)
from mtssl_tf import model_zoo  # noqa: E402
from tools.zoo import float16  # noqa: E402


def measure(label, model, make_twin, folder, images):
  p16 = os.path.join(folder, "m16.weights.h5")
  p32 = os.path.join(folder, "m32.weights.h5")
  r16 = float16.write_weights(model, p16)
  float16.write_weights(model, p32, "float32")
  twin = make_twin()
  twin.load_weights(p16)
  ref = model.trunk(images)
  got = twin.trunk(images)
  errors = []
  for unit in sorted(ref):
    a, b = ref[unit].numpy(), got[unit].numpy()
    errors.append(np.max(np.abs(a - b)) / np.max(np.abs(a)))
  s16, s32 = os.path.getsize(p16), os.path.getsize(p32)
  kept = r16["weights_storage"]["kept_float32"]
  print(f"| {label} | {model.count_params():,} | {s32 / 1e6:.2f} | "
        f"{s16 / 1e6:.2f} | {s16 / s32:.3f} | {r16['weights_dtype']}: "
        f"{len(kept)} array(s), {sum(k['values'] for k in kept)} values | "
        f"{max(errors):.2e} |")
  for k in kept:
    print(f"    kept float32: {k['name']} ({k['values']}): {k['reason']}")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--run_dir", default=None)
  parser.add_argument("--preset", default="rp_col_ex_ms_lasso")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(0, 255, (2, 64, 64, 3)), tf.float32)
  print("| model | params | float32 MB | float16 MB | ratio | stored | "
        "max over block-3 units of max abs diff / max abs |")
  print("|---|---:|---:|---:|---:|---|---:|")
  with tempfile.TemporaryDirectory() as folder:
    make = lambda: model_zoo.build_preset_model(args.preset, tiny=False)
    measure(f"{args.preset}, study scale, fresh weights", make(), make,
            folder, images)
    if args.run_dir:
      from mtssl_tf.training import run_checkpoints  # pylint: disable=g-import-not-at-top
      run = run_checkpoints.load_run_model(args.run_dir)
      config = run_checkpoints.read_run_config(args.run_dir)
      make_run = lambda: run_checkpoints.load_run_model(args.run_dir)
      measure(f"{args.run_dir} (trained, depth {config['trunk']['depth']})",
              run, make_run, folder, images)


if __name__ == "__main__":
  main()
