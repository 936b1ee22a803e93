"""Multi-task self-supervised pre-training: the package's main job.

    python -m mtssl_tf.train --flagfile=configs/demo.cfg
    python -m mtssl_tf.train --flagfile=configs/paper_4task_lasso.cfg \
        --data=tfds --data_dir=/data/tfds
    python -m mtssl_tf.train --help     # flags by group, task parameters

Re-running the same command resumes from the run folder's last checkpoint.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from mtssl_tf.cli import flags as mt_flags

mt_flags.define_train_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  from mtssl_tf.config import ConfigError
  try:
    config = mt_flags.config_from_flags(FLAGS)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(mt_flags.run_folder_line(config.run_dir), flush=True)
  from mtssl_tf.training import distribute
  distribute.setup_cpu_replicas(FLAGS.cpu_replicas)
  from mtssl_tf.data.skips import NoUsableDataError
  from mtssl_tf.training.trainer import NonFiniteLossError, Trainer
  from mtssl_tf.utils.native_stderr import hidden_decoder_messages
  try:
    # The decoders' unnamed messages are dropped: the run names each
    # refused file itself.
    with hidden_decoder_messages():
      trainer = Trainer(config, log=lambda s: print(s, flush=True))
      trainer.train(flags_text=mt_flags.flags_as_text(FLAGS))
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (FileNotFoundError, NoUsableDataError) as e:
    # The data named in the flags cannot be read or used: the message says
    # what and why; a traceback would only bury it.
    print(f"error: {e}", file=sys.stderr)
    return 2
  except NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  return 0


# --help: the package's flags by group and every task parameter; flagfiles
# found from any folder (mtssl_tf.cli.flags.flags_parser).
parse_flags = mt_flags.flags_parser("train", mt_flags.train_sections,
                                    task_params=True)


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
