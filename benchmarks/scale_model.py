"""The multi-worker model on paper: input work per worker, all-reduce bytes
per step and the expected step time on N accelerators, from parameter counts
of the real model and a measured single-device step.

    python benchmarks/scale_model.py --step_ms=<measured single-device step>

Every assumption is a flag and is printed with the table (BENCHMARKS.md,
"Multi-worker model"). Nothing is timed here.
"""
from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

flags.DEFINE_string("config", "configs/paper_4task_lasso.cfg",
                    "Flagfile of the model whose parameters are counted.")
flags.DEFINE_float("step_ms", None, "Measured single-device step (ms) at "
                   "--per_device_batch, the compute part of every N.")
flags.DEFINE_string("step_source", "", "Where --step_ms was measured.")
flags.DEFINE_integer("per_device_batch", 4, "Examples per accelerator per "
                     "step (weak scaling: fixed as N grows).")
flags.DEFINE_list("accelerators", ["1", "8", "64"], "N to tabulate.")
flags.DEFINE_integer("per_node", 8, "Accelerators per host.")
flags.DEFINE_float("intra_gbps", 150.0, "All-reduce bus bandwidth inside a "
                   "host, GB/s (NVLink-class).")
flags.DEFINE_float("inter_gbps", 12.5, "Network bandwidth per host, GB/s "
                   "(100 Gb/s).")
flags.DEFINE_float("hop_us", 10.0, "Latency per ring hop, microseconds.")
FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ring_seconds(n: int, nbytes: float) -> float:
  """A ring all-reduce of ``nbytes`` over ``n`` devices: every device sends
  and receives 2(n-1)/n of the buffer in 2(n-1) hops; the slowest link (the
  network once the ring leaves a host) sets the pace; no overlap with
  compute (the trainer all-reduces after the backward)."""
  if n == 1:
    return 0.0
  gbps = FLAGS.intra_gbps if n <= FLAGS.per_node else FLAGS.inter_gbps
  return (2 * (n - 1) / n * nbytes / (gbps * 1e9)
          + 2 * (n - 1) * FLAGS.hop_us * 1e-6)


def main(argv):
  del argv
  if FLAGS.step_ms is None or FLAGS.step_ms <= 0:
    raise app.UsageError("--step_ms (> 0) is required")
  os.chdir(REPO)
  sys.path.insert(0, REPO)
  from mtssl_tf.cli import flags as mt_flags
  from mtssl_tf.models.build import build_model
  mt_flags.define_train_flags()
  FLAGS([sys.argv[0], f"--flagfile={FLAGS.config}"], known_only=True)
  config = mt_flags.config_from_flags(FLAGS)
  model = build_model(config)
  count = lambda vs: int(sum(int(v.shape.num_elements() if hasattr(
      v.shape, "num_elements") else __import__("numpy").prod(v.shape))
                             for v in vs))
  trunk = count(model.trunk.trainable_variables)
  heads = {t: count(model.heads[t].trainable_variables) for t in config.tasks}
  units = len(model.trunk.unit_names) if model.mixer is not None else 0
  print(f"Model: {FLAGS.config}: trunk {trunk / 1e6:.2f}M parameters; heads "
        + ", ".join(f"{t} {n / 1e6:.2f}M" for t, n in heads.items())
        + f"; {units} lasso alphas per task.")
  # Each step all-reduces the gradient of the trunk, the active head and its
  # alphas (update=cycle: the apply is local to every replica).
  per_step = {t: trunk + n + units for t, n in heads.items()}
  mean_params = sum(per_step.values()) / len(per_step)
  print(f"All-reduced per step: trunk + active head + alphas = "
        + ", ".join(f"{t} {p / 1e6:.2f}M" for t, p in per_step.items())
        + f"; mean over the cycle {mean_params / 1e6:.2f}M.")
  print()
  print(f"Assumptions: weak scaling at {FLAGS.per_device_batch} examples "
        f"per accelerator; compute = the measured single-device step "
        f"{FLAGS.step_ms:.0f} ms ({FLAGS.step_source or 'given'}) at every "
        f"N; ring all-reduce, {FLAGS.per_node} accelerators per host, "
        f"{FLAGS.intra_gbps:.0f} GB/s inside a host, {FLAGS.inter_gbps:.1f} "
        f"GB/s per host between hosts, {FLAGS.hop_us:.0f} us per hop; no "
        f"overlap of all-reduce and backward; one worker (one input "
        f"pipeline) per host of {FLAGS.per_node} accelerators, as "
        f"MultiWorkerMirroredStrategy runs. bfloat16 bytes: if gradients were all-reduced in "
        f"bfloat16 (this trainer all-reduces float32 gradients under every "
        f"policy).")
  print()
  print("| N | hosts | global batch | source images decoded per host per "
        "step (before / now) | all-reduce MB per step float32 / bfloat16 | "
        "all-reduce ms float32 / bfloat16 | step ms float32 / bfloat16 "
        "all-reduce | scaling efficiency float32 |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|")
  for n in (int(x) for x in FLAGS.accelerators):
    batch = FLAGS.per_device_batch * n
    hosts = -(-n // FLAGS.per_node)
    local = FLAGS.per_device_batch * min(n, FLAGS.per_node)
    b32, b16 = 4 * mean_params, 2 * mean_params
    t32, t16 = ring_seconds(n, b32), ring_seconds(n, b16)
    s32 = FLAGS.step_ms + 1e3 * t32
    s16 = FLAGS.step_ms + 1e3 * t16
    print(f"| {n} | {hosts} | {batch} | {batch} / {local} | "
          f"{b32 / 1e6:.0f} / {b16 / 1e6:.0f} | {1e3 * t32:.1f} / "
          f"{1e3 * t16:.1f} | {s32:.0f} / {s16:.0f} | "
          f"{FLAGS.step_ms / s32:.2f} |")
  return 0


if __name__ == "__main__":
  app.run(main)
