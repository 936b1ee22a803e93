"""One worker of the 2-process MultiWorkerMirroredStrategy test in
test_scale_out.py (not a test module itself).

    python tests/scale_out_worker.py OUT_DIR RUN_DIR

TF_CONFIG names the cluster and this worker. The worker trains one cycle
(relative position, colorization) on input functions that read the test
examples sharded by input pipeline, and writes to OUT_DIR/worker<i>.npz: the
ids and the (inputs, targets) of the per-replica batches its pipeline
delivers first, and its weights after training.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtssl_tf.data.pipeline import task_dataset  # noqa: E402
from mtssl_tf.training.trainer import Trainer  # noqa: E402
from scale_out_common import NAMES, config, examples  # noqa: E402


class IdTask:
  """Delivers each example's id: which examples a pipeline reads."""
  min_input_size = 1

  def preprocess(self, example, seed):
    del seed
    return example["id"], example["id"]


def input_fn(task):
  def fn(ctx):
    dataset = task_dataset(task, examples(), batch_size=4, seed=0,
                           deterministic=True, shuffle_buffer=0,
                           skip_errors=False, input_context=ctx)
    # The skip counter's updates are state outside the iterator; the
    # trainer checkpoints the iterator (as training_input_fns allows).
    options = tf.data.Options()
    options.experimental_external_state_policy = (
        tf.data.experimental.ExternalStatePolicy.IGNORE)
    return dataset.with_options(options)
  return fn


def main(out_dir, run_dir):
  index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  cfg = config(run_dir, strategy="multi_worker_mirrored")
  trainer = Trainer(cfg, strategy=strategy,
                    datasets={n: input_fn(trainer_task)
                              for n, trainer_task in _tasks(cfg).items()},
                    log=lambda s: None)
  ctx = trainer.input_context
  out = {"pipeline": np.array([ctx.input_pipeline_id,
                               ctx.num_input_pipelines])}
  for name in NAMES:
    task = trainer.model.task_objects[name]
    ids = next(iter(input_fn(IdTask())(ctx)))[0]
    inputs, targets = next(iter(input_fn(task)(ctx)))
    out[f"ids_{name}"] = ids.numpy()
    for i, t in enumerate(tf.nest.flatten(inputs)):
      out[f"inputs_{name}_{i}"] = t.numpy()
    out[f"targets_{name}"] = targets.numpy()
  trainer.train()
  for i, w in enumerate(trainer.model.weights):
    out[f"weight_{i}"] = np.array(w)
  np.savez(os.path.join(out_dir, f"worker{index}.npz"), **out)


def _tasks(cfg):
  from mtssl_tf import tasks as tasks_lib
  return {n: tasks_lib.get_task(n, **cfg.task_kwargs(n)) for n in cfg.tasks}


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
