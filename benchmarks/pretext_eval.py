"""What the held-out pretext metrics and the offline frames cost at demo size.

    python benchmarks/pretext_eval.py               # BENCHMARKS.md table
    python benchmarks/pretext_eval.py --rounds=3    # quicker

Builds the demo recipe's :class:`Trainer` (``configs/demo.cfg``, what
``make demo`` trains; its real offline pipelines, held-out metrics on; the
figures in BENCHMARKS.md were measured on the depth-26 recipe,
``--demo_flags=--flagfile=configs/depth26_4task_lasso.cfg``) in a temporary
run folder and times,
in the same process, calls alternating so that load from other processes
hits all alike:

* the baseline: one round-robin training cycle (one step of every task from
  its pipeline, plus the per-cycle apply), as ``Trainer.train`` runs it;
* one held-out evaluation of all four tasks
  (``trainer.pretext_eval.evaluate``).

Also reported: the one-off costs measured while building (decoding the
offline videos, first call; a second, cached call; materialising the
held-out inputs). The first round of each (tracing) is not timed; each
figure is the median of ``--rounds`` rounds.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

flags.DEFINE_string("demo_flags", "--flagfile=configs/demo.cfg",
                    "Training flags (flagfile and overrides).")
flags.DEFINE_integer("rounds", 5, "Timed rounds.")
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
  del argv
  os.chdir(REPO)
  sys.path.insert(0, REPO)
  from mtssl_tf.cli import flags as mt_flags
  mt_flags.define_train_flags()
  from mtssl_tf.data import offline
  from mtssl_tf.training import pretext_eval
  from mtssl_tf.training.trainer import Trainer

  run_dir = tempfile.mkdtemp(prefix="bench_pretext_")
  values = flags.FlagValues()
  mt_flags.define_train_flags(values)
  values(["bench"] + shlex.split(FLAGS.demo_flags)
         + [f"--run_dir={run_dir}", "--noplots"])
  config = mt_flags.config_from_flags(values)
  packages = list(config.data.offline_packages) or None

  offline.clear_frame_cache()
  t = time.perf_counter()
  frames = offline.offline_frames(config.data.image_size_limit, 2, packages)
  decode_s = time.perf_counter() - t
  t = time.perf_counter()
  offline.offline_frames(config.data.image_size_limit, 2, packages)
  cached_s = time.perf_counter() - t

  t = time.perf_counter()
  # The evaluator is built (and timed) on its own below.
  # One step per loop call (one host read per step, as a training run with
  # the default steps_per_loop) and no end: cycles below run past --steps.
  trainer = Trainer(dataclasses.replace(config, pretext_eval_every=0,
                                        steps_per_loop=1, steps=10**9),
                    log=lambda s: print(s, file=sys.stderr))
  build_s = time.perf_counter() - t
  t = time.perf_counter()
  evaluator = pretext_eval.from_config(
      config, trainer.model, log=lambda s: print(s, file=sys.stderr))
  materialize_s = time.perf_counter() - t

  def cycle():
    # One step of each task from its data iterator, the cycle's update
    # applied after the last (the trainer's public loop call).
    for _ in config.tasks:
      trainer.run_loop(int(trainer.step.numpy()))

  cycle()
  evaluator.evaluate(0)  # traces
  cycles, evals = [], []
  for _ in range(FLAGS.rounds):
    t = time.perf_counter()
    cycle()
    cycles.append(time.perf_counter() - t)
    t = time.perf_counter()
    evaluator.evaluate(0)
    evals.append(time.perf_counter() - t)
  cycle_s, eval_s = statistics.median(cycles), statistics.median(evals)
  every = config.pretext_eval_every
  per_cycle = len(config.tasks)
  overhead = eval_s / (every / per_cycle * cycle_s)
  load = os.getloadavg()[0]
  print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the "
        f"end; {FLAGS.rounds} rounds, medians")
  print(f"offline frames ({len(frames)}): first decode {decode_s:.2f} s, "
        f"cached call {cached_s * 1e3:.2f} ms; trainer build (pipelines, "
        f"training motion masks) {build_s:.1f} s; held-out inputs made once "
        f"in {materialize_s:.1f} s")
  print()
  print("| measure | seconds | ratio to one training cycle |")
  print("|---|---:|---:|")
  print(f"| one round-robin training cycle ({per_cycle} steps, baseline) | "
        f"{cycle_s:.3f} | 1.00 |")
  print(f"| one held-out evaluation, 4 tasks | {eval_s:.3f} | "
        f"{eval_s / cycle_s:.1f} |")
  print()
  print(f"At --pretext_eval_every={every}: one evaluation per "
        f"{every // per_cycle} cycles, +{100 * overhead:.1f}% of training "
        "time.")


if __name__ == "__main__":
  app.run(main)
