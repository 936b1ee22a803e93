"""A zoo preset's trunk under each installed Keras backend, on the same inputs.

    python benchmarks/backends.py                     # every installed backend
    python benchmarks/backends.py --preset=rp_col --batch_size=32 --image_size=224

Keras reads ``KERAS_BACKEND`` once, at import, so each backend (TensorFlow,
JAX, PyTorch: those whose package imports here) runs in its own child process
of this script. Each child loads the preset's single-output trunk
(``Trunk.from_preset(preset, output="block3")``), makes the same seeded
uint8-valued float32 images, and times, after ``--warmup`` untimed calls
(compilation: ``tf.function``, ``jax.jit``):

* feature extraction: ``predict_on_batch`` of the trunk (the block-3 map);
* one fine-tuning step: ``train_on_batch`` of a classifier (trunk, global
  average pooling, a 10-way dense layer; SGD), which updates every trunk
  weight.

It prints one Markdown table: the device each backend ran on, the median
milliseconds of ``--repeats`` calls, each as a ratio to TensorFlow's when
TensorFlow ran, and how far each backend's features lie from the first
backend's (max |difference| / max |features|). The parent imports neither
Keras nor TensorFlow, so the script runs unchanged where only JAX (or only
PyTorch) is installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="rp",
                      help="zoo preset whose trunk is timed")
  parser.add_argument("--backends", default=",".join(BACKENDS),
                      help="comma-separated Keras backends; those not "
                      "installed are listed as such")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=128,
                      help="side of the square images (a multiple of 16)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  unknown = sorted(set(args.backends.split(",")) - set(BACKENDS))
  if unknown:
    parser.error(f"--backends: unknown {unknown}; known: {sorted(BACKENDS)}")
  if args.image_size % 16 or args.image_size < 32:
    parser.error(f"--image_size={args.image_size} must be a multiple of 16, "
                 ">= 32")
  return args


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
  except OSError:
    pass
  return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def device_name(backend: str) -> str:
  """The accelerator the backend computes on, else the CPU."""
  if backend == "jax":
    import jax  # pylint: disable=g-import-not-at-top
    device = jax.devices()[0]
    if device.platform != "cpu":
      return f"{device.platform}: {device.device_kind}"
  elif backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
      details = tf.config.experimental.get_device_details(gpus[0])
      return f"gpu: {details.get('device_name', gpus[0].name)}"
  elif backend == "torch":
    import torch  # pylint: disable=g-import-not-at-top
    if torch.cuda.is_available():
      return f"cuda: {torch.cuda.get_device_name(0)}"
  return f"cpu: {cpu_name()}"


def _median_ms(fn, warmup: int, repeats: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def worker(args) -> None:
  """Times one backend (the one of KERAS_BACKEND); prints JSON."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import mtssl_tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(args.seed)
  shape = (args.batch_size, args.image_size, args.image_size, 3)
  images = rng.integers(0, 256, shape).astype("float32")
  labels = rng.integers(0, 10, args.batch_size).astype("int32")
  keras.utils.set_random_seed(args.seed)
  features = mtssl_tf.Trunk.from_preset(args.preset, output="block3")
  to_numpy = keras.ops.convert_to_numpy
  extract_ms = _median_ms(
      lambda: to_numpy(features.predict_on_batch(images)),
      args.warmup, args.repeats)
  reference = to_numpy(features.predict_on_batch(images))
  classifier = keras.Sequential([
      keras.Input(shape[1:]), features,
      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
  classifier.compile(keras.optimizers.SGD(1e-3),
                     keras.losses.SparseCategoricalCrossentropy(
                         from_logits=True))
  step_ms = _median_ms(
      lambda: float(classifier.train_on_batch(images, labels)),
      args.warmup, args.repeats)
  np.save(args.worker, reference)
  print(json.dumps({"backend": keras.backend.backend(),
                    "device": device_name(keras.backend.backend()),
                    "extract_ms": extract_ms, "step_ms": step_ms}))


def run_backend(args, backend: str, out_path: str) -> dict:
  argv = [sys.executable, os.path.abspath(__file__), "--worker", out_path,
          "--preset", args.preset, "--batch_size", str(args.batch_size),
          "--image_size", str(args.image_size), "--repeats",
          str(args.repeats), "--warmup", str(args.warmup), "--seed",
          str(args.seed)]
  env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(argv, env=env, capture_output=True, text=True)
  if proc.returncode:
    return {"backend": backend, "error": proc.stderr.strip()[-2000:]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratio(value: float, base) -> str:
  return "" if base is None else f" ({value / base:.2f}x)"


def report(args, results, features) -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  timed = [r for r in results if "error" not in r and "missing" not in r]
  base = next((r for r in timed if r["backend"] == "tensorflow"), None)
  first = features[timed[0]["backend"]] if timed else None
  lines = [f"Preset `{args.preset}`, batch {args.batch_size} x "
           f"{args.image_size} px, median of {args.repeats} calls after "
           f"{args.warmup} untimed; ratios to TensorFlow.", "",
           "| backend | device | features ms/batch | fine-tuning step ms | "
           "features vs first |", "|---|---|---:|---:|---:|"]
  for r in results:
    if "missing" in r:
      lines.append(f"| {r['backend']} | not installed | | | |")
    elif "error" in r:
      lines.append(f"| {r['backend']} | failed: "
                   f"{r['error'].splitlines()[-1][:80]} | | | |")
    else:
      got = features[r["backend"]]
      diff = float(np.max(np.abs(got - first)) / np.max(np.abs(first)))
      lines.append(
          f"| {r['backend']} | {r['device']} | {r['extract_ms']:.1f}"
          f"{_ratio(r['extract_ms'], base and base['extract_ms'])} | "
          f"{r['step_ms']:.1f}{_ratio(r['step_ms'], base and base['step_ms'])}"
          f" | {diff:.1e} |")
  return "\n".join(lines)


def main(argv) -> int:
  args = parse_args(argv)
  if args.worker:
    worker(args)
    return 0
  import numpy as np  # pylint: disable=g-import-not-at-top
  results, features = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for backend in args.backends.split(","):
      if importlib.util.find_spec(BACKENDS[backend]) is None:
        results.append({"backend": backend, "missing": True})
        continue
      out_path = os.path.join(tmp, f"{backend}.npy")
      result = run_backend(args, backend, out_path)
      results.append(result)
      if "error" not in result:
        features[backend] = np.load(out_path)
      print(f"{backend}: {result}", file=sys.stderr, flush=True)
  print(report(args, results, features))
  return 0 if features else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
