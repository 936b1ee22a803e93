"""SavedModel feature extraction against the in-memory Keras model.

    python benchmarks/serving.py                         # ResNet-101, 224 px
    python benchmarks/serving.py --depth=26 --width=0.25 --repeats=3  # quick

Builds a MultiTaskModel (one task, random weights; the trunk is what is
timed), exports it with :func:`mtssl_tf.serving.model_export.export_model`
into a temporary folder, and times feature extraction of uint8 224x224 batches
(1 and 32 by default) through

* (a) the loaded SavedModel's ``serving_default`` signature (what TF Serving
  runs), and
* (b) the Keras model inside a ``tf.function`` with the same preprocessing
  (:meth:`mtssl_tf.serving.model_export.FeatureExtractor.features`: resize,
  trunk, pooling, mixes),

in the same process, alternating (a) and (b) so that load from other
processes hits both alike. The first calls (tracing, warm-up) are not timed;
the table reports the median of ``--repeats`` calls, each ended by fetching
the outputs. Prints a Markdown table (ms per batch, images/s, the ratio
SavedModel / Keras) for BENCHMARKS.md.
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

flags.DEFINE_integer("depth", 101, "Trunk depth (101 = the paper).")
flags.DEFINE_float("width", 1.0, "Trunk width multiplier.")
flags.DEFINE_string("task", "relative_position", "The model's one task.")
flags.DEFINE_bool("lasso", False, "Add the UnitMixer (mixed_<task> outputs).")
flags.DEFINE_integer("image_size", 224, "Input and serving image size.")
flags.DEFINE_list("batch_sizes", ["1", "32"], "Batch sizes to time.")
flags.DEFINE_integer("repeats", 5, "Timed calls per path and batch size.")
flags.DEFINE_integer("warmup", 2, "Untimed calls first (the first traces).")
flags.DEFINE_integer("seed", 0, "Seed of weights and images.")
FLAGS = flags.FLAGS


def _time_call(fn, images):
  start = time.perf_counter()
  outputs = fn(images)
  # Fetch every output: a call is done when its results are on the host.
  for value in outputs.values():
    value.numpy()
  return time.perf_counter() - start, outputs


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import keras
  import numpy as np
  import tensorflow as tf

  from mtssl_tf.serving import model_export
  from mtssl_tf.models.multitask import MultiTaskModel

  batch_sizes = [int(b) for b in FLAGS.batch_sizes]
  keras.utils.set_random_seed(FLAGS.seed)
  model = MultiTaskModel(
      trunk={"depth": FLAGS.depth, "width": FLAGS.width},
      tasks={FLAGS.task: {}}, mixer={"l1": 1e-3} if FLAGS.lasso else None,
      name="mtssl")
  export_dir = tempfile.mkdtemp(prefix="mtssl_bench_")
  try:
    start = time.perf_counter()
    paths = model_export.export_model(model, export_dir, "bench", 1,
                                      image_size=FLAGS.image_size)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    loaded = tf.saved_model.load(paths["saved_model"])
    load_s = time.perf_counter() - start
    signature = loaded.signatures["serving_default"]
    extractor = model_export.FeatureExtractor(model, FLAGS.image_size)
    keras_fn = tf.function(extractor.features)
    paths_under_test = {
        "SavedModel serving_default": lambda x: signature(images=x),
        "Keras model in tf.function": keras_fn,
    }
    rng = np.random.default_rng(FLAGS.seed)
    rows = []
    for batch in batch_sizes:
      images = tf.constant(rng.integers(
          0, 256, (batch, FLAGS.image_size, FLAGS.image_size, 3), np.uint8))
      times = {name: [] for name in paths_under_test}
      outputs = {}
      for i in range(FLAGS.warmup + FLAGS.repeats):
        for name, fn in paths_under_test.items():
          seconds, outputs[name] = _time_call(fn, images)
          if i >= FLAGS.warmup:
            times[name].append(seconds)
      saved, eager = (outputs[n]["pooled"].numpy() for n in paths_under_test)
      max_diff = float(np.abs(saved - eager).max())
      medians = {n: statistics.median(t) for n, t in times.items()}
      ratio = medians["SavedModel serving_default"] / medians[
          "Keras model in tf.function"]
      for name, median in medians.items():
        rows.append((name, batch, 1e3 * median, 1e3 * min(times[name]),
                     1e3 * max(times[name]), batch / median,
                     ratio if name.startswith("SavedModel") else None,
                     max_diff))
      print(f"batch {batch}: done", file=sys.stderr, flush=True)
  finally:
    shutil.rmtree(export_dir, ignore_errors=True)

  gpus = tf.config.list_physical_devices("GPU")
  device = (", ".join(tf.config.experimental.get_device_details(g).get(
      "device_name", g.name) for g in gpus) if gpus else
            f"CPU only, {os.cpu_count()} cores ({platform.processor() or platform.machine()})")
  print(f"ResNet-{FLAGS.depth} v2 trunk through block 3, width {FLAGS.width}, "
        f"{'with' if FLAGS.lasso else 'no'} UnitMixer; input uint8 "
        f"{FLAGS.image_size}x{FLAGS.image_size}; TensorFlow {tf.__version__}; "
        f"{device}; median of {FLAGS.repeats} calls after {FLAGS.warmup} "
        f"warm-up; export {export_s:.1f} s, load {load_s:.1f} s.\n")
  print("| path | batch | ms / batch (median) | min - max ms | images / s | "
        "SavedModel / Keras | max abs diff of `pooled` |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for name, batch, ms, low, high, ips, ratio, diff in rows:
    print(f"| {name} | {batch} | {ms:.1f} | {low:.0f} - {high:.0f} | "
          f"{ips:.1f} | "
          f"{'' if ratio is None else f'{ratio:.2f}'} | "
          f"{'' if ratio is None else f'{diff:.1e}'} |")


if __name__ == "__main__":
  app.run(main)
