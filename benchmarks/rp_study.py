"""Short RP-only trainings that print held-out 8-way accuracy (chance 12.5%).

Relative position (RP) collapsed to a uniform output under
colour dropping while it learned with harmonized or full-colour input. Each
run of this script trains the demo trunk + RP head alone for a few hundred
steps on the offline photos of the training split and measures, every
``--eval_every`` steps, 8-way accuracy on fixed pairs cut from photos that are
never trained on (split by photo, not by pair). It also prints what tells a
collapse apart from slow learning: the spread of the logits over the held-out
pairs (0 = the same output for every input) and the fraction of the head's
embedding units that are zero for every held-out patch (dead ReLUs).

Usage (one run at a time on a shared machine; the findings and the exact
commands are in docs/relative_position.md):

  TF_NUM_INTEROP_THREADS=1 TF_NUM_INTRAOP_THREADS=2 \\
    python benchmarks/rp_study.py --color=drop --pooling=flatten \\
        --optimizer=adam --steps=600

``--color`` takes the task's modes (``drop``, ``harmonize``, ``none``) and
three study-only variants of dropping, made here from the ``none`` pairs:
``drop_same`` (both patches of a pair keep the same channel),
``drop_replicate`` (the kept channel copied to all three channels, so no
channel is ever constant) and ``drop_batch`` (one kept channel for the whole
batch, so batch-norm statistics never mix patches that keep different
channels).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mtssl_tf.data.offline import offline_images  # pylint: disable=g-import-not-at-top
from mtssl_tf.models.multitask import MultiTaskModel  # pylint: disable=g-import-not-at-top
from mtssl_tf.tasks.relative_position import _RGB_MEAN  # pylint: disable=g-import-not-at-top

TASK_COLORS = ("drop", "harmonize", "none")
STUDY_COLORS = ("drop_same", "drop_replicate", "drop_batch")
# Photos never trained on: held out whole (a split by photo, not by pair).
HELD_OUT = ("scikit-image/astronaut", "scikit-image/coffee",
            "scikit-learn/flower")
CHANCE = 1.0 / 8


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--color", default="drop", choices=TASK_COLORS + STUDY_COLORS)
  p.add_argument("--pooling", default="mean", choices=("mean", "flatten"))
  p.add_argument("--optimizer", default="rmsprop",
                 choices=("rmsprop", "adam", "momentum"))
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--epsilon", type=float, default=1.0,
                 help="RMSProp epsilon (Adam uses 1e-7)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--eval_every", type=int, default=150)
  p.add_argument("--eval_pairs", type=int, default=384)
  p.add_argument("--depth", type=int, default=26)
  p.add_argument("--width", type=float, default=0.5)
  p.add_argument("--patch", type=int, default=32)
  p.add_argument("--gap", type=int, default=8)
  p.add_argument("--jitter", type=int, default=3)
  p.add_argument("--downsample_prob", type=float, default=0.33)
  p.add_argument("--noise_std", type=float, default=0.01)
  p.add_argument("--embedding", type=int, default=256)
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--input_norm", action="store_true",
                 help="batch norm + ReLU at the head's input")
  p.add_argument("--fc_norm", action="store_true",
                 help="batch norm between the head's dense layers and ReLUs")
  p.add_argument("--head_init", default="glorot_uniform",
                 help="kernel initializer of the head's dense layers")
  p.add_argument("--image_size", type=int, default=160,
                 help="shorter side of the photos (the demo's limit)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None, help="append the result here")
  return p.parse_args(argv)


def split_photos(image_size):
  photos = offline_images(max_short_side=image_size,
                          packages=["scikit-image", "scikit-learn"])
  train = [im for name, im in photos if name not in HELD_OUT]
  held = [im for name, im in photos if name in HELD_OUT]
  if len(held) != len(HELD_OUT):
    raise SystemExit(f"held-out photos missing: {HELD_OUT}")
  return train, held


def study_color(pairs, mode, seed):
  """The study-only dropping variants, applied to ``none`` pairs [2, P, P, 3]
  (or, for ``drop_batch``, to a batch [B, 2, P, P, 3])."""
  # One kept channel for everything passed in: both patches of a pair, or
  # the whole batch.
  keep = tf.random.stateless_uniform([], seed, 0, 3, tf.int32)
  lead = tf.shape(pairs)[:-1]
  kept = tf.gather(pairs, keep, axis=-1)
  if mode == "drop_replicate":
    return tf.stack([kept] * 3, axis=-1)
  # Same noise recipe as the task's op: 1/100 of the kept channel's std per
  # patch, around the trunk's mean.
  std = tf.math.reduce_std(kept, axis=[-2, -1], keepdims=True)[..., None]
  noise = tf.random.stateless_normal(tf.concat([lead, [3]], 0),
                                     seed + 1) * std * 0.01
  noise = tf.clip_by_value(noise + tf.constant(_RGB_MEAN), 0.0, 255.0)
  is_kept = tf.cast(tf.one_hot(keep, 3), tf.bool)
  return tf.where(is_kept, pairs, noise)


def make_task_kwargs(args):
  color = args.color if args.color in TASK_COLORS else "none"
  return dict(patch_size=args.patch, gap=args.gap, jitter=args.jitter,
              rescale_pixels=None, downsample_min=8,
              downsample_max=args.patch - 1,
              downsample_prob=args.downsample_prob, color_mode=color,
              noise_std=args.noise_std, embedding_units=args.embedding,
              hidden_units=[args.hidden], pooling=args.pooling,
              input_norm=args.input_norm, fc_norm=args.fc_norm)


def pairs_from(task, images, count, seed0, color):
  """``count`` deterministic (pairs, labels) from ``images`` in turn."""
  xs, ys = [], []
  for i in range(count):
    seed = tf.constant([seed0, i], tf.int64)
    x, y = task.preprocess({"image": images[i % len(images)]}, seed)
    if color in ("drop_same", "drop_replicate"):
      x = study_color(x, color, tf.constant([seed0 + 7, i], tf.int64))
    xs.append(x.numpy())
    ys.append(int(y))
  return np.stack(xs), np.array(ys, np.int32)


def train_dataset(task, images, args):
  ragged = [tf.constant(im) for im in images]

  def gen():
    rng = np.random.default_rng(args.seed)
    i = 0
    while True:
      yield ragged[rng.integers(len(ragged))], np.array([args.seed, i],
                                                        np.int64)
      i += 1

  ds = tf.data.Dataset.from_generator(
      gen, output_signature=(tf.TensorSpec([None, None, 3], tf.uint8),
                             tf.TensorSpec([2], tf.int64)))

  def prep(image, seed):
    x, y = task.preprocess({"image": image}, seed)
    if args.color in ("drop_same", "drop_replicate"):
      x = study_color(x, args.color, seed + 7)
    return x, y

  ds = ds.map(prep, num_parallel_calls=2).batch(args.batch, drop_remainder=True)
  if args.color == "drop_batch":
    ds = ds.enumerate().map(lambda i, b: (study_color(
        b[0], "drop_batch", tf.stack([tf.cast(i, tf.int64), 99])), b[1]))
  return ds.prefetch(2)


def make_optimizer(args):
  if args.optimizer == "rmsprop":
    return keras.optimizers.RMSprop(learning_rate=args.lr, rho=0.9,
                                    momentum=0.9, epsilon=args.epsilon)
  if args.optimizer == "adam":
    return keras.optimizers.Adam(learning_rate=args.lr)
  return keras.optimizers.SGD(learning_rate=args.lr, momentum=0.9)


def main(argv=None):
  args = parse_args(argv)
  keras.utils.set_random_seed(args.seed)
  train_images, held_images = split_photos(args.image_size)
  model = MultiTaskModel(
      trunk=dict(depth=args.depth, width=args.width, block3_last_stride=1,
                 pool_padding="valid", input_normalization="slim"),
      tasks={"relative_position": make_task_kwargs(args)})
  head = model.heads["relative_position"]
  if args.head_init != "glorot_uniform":
    init = keras.initializers.get(args.head_init)
    for layer in [head.embedding] + head.hidden + [head.logits]:
      layer.kernel.assign(init(layer.kernel.shape))
  task = model.tasks["relative_position"]
  eval_x, eval_y = pairs_from(task, held_images, args.eval_pairs, 1000,
                              args.color if args.color != "drop_batch"
                              else "none")
  if args.color == "drop_batch":
    eval_x = np.concatenate([
        study_color(tf.constant(eval_x[i:i + 64]), "drop_batch",
                    tf.constant([i, 5], tf.int64)).numpy()
        for i in range(0, len(eval_x), 64)])
  optimizer = make_optimizer(args)
  optimizer.build(model.trainable_variables)

  @tf.function
  def train_step(x, y):
    with tf.GradientTape() as tape:
      logits = model(x, task="relative_position", training=True)
      loss = tf.reduce_mean(task.loss(y, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  @tf.function
  def eval_step(x):
    images = task.trunk_images(x)
    feats = model.features(images, "relative_position", training=False)
    return (head(feats, training=False),
            head.embed(feats, training=False))

  def evaluate():
    logits, embeds = [], []
    for i in range(0, len(eval_x), 64):
      lo, em = eval_step(tf.constant(eval_x[i:i + 64]))
      logits.append(lo.numpy())
      embeds.append(em.numpy())
    logits = np.concatenate(logits)
    embeds = np.concatenate(embeds)
    acc = float(np.mean(np.argmax(logits, -1) == eval_y))
    spread = float(np.mean(np.std(logits, axis=0)))
    dead = float(np.mean(np.all(embeds <= 0, axis=0)))
    return acc, spread, dead

  print(f"# {vars(args)}", flush=True)
  print(f"# {len(train_images)} training photos, {len(held_images)} held-out "
        f"photos ({', '.join(HELD_OUT)}), {len(eval_x)} held-out pairs",
        flush=True)
  history = []
  losses = []
  start = time.time()
  acc, spread, dead = evaluate()
  print(f"step 0 held-out acc {acc:.3f} (chance {CHANCE:.3f}) logit-spread "
        f"{spread:.3f} dead-embed {dead:.2f}", flush=True)
  for step, (x, y) in enumerate(train_dataset(task, train_images, args), 1):
    losses.append(float(train_step(x, y)))
    if not np.isfinite(losses[-1]):
      print(f"step {step}: non-finite loss", flush=True)
      break
    if step % args.eval_every == 0 or step == args.steps:
      acc, spread, dead = evaluate()
      recent = float(np.mean(losses[-args.eval_every:]))
      history.append(dict(step=step, train_loss=recent, heldout_acc=acc,
                          logit_spread=spread, dead_embed=dead))
      print(f"step {step} train loss {recent:.4f} (ln 8 = 2.0794) held-out "
            f"acc {acc:.3f} (chance {CHANCE:.3f}) logit-spread {spread:.3f} "
            f"dead-embed {dead:.2f} [{time.time() - start:.0f} s]",
            flush=True)
    if step >= args.steps:
      break
  result = dict(args=vars(args), history=history,
                seconds=round(time.time() - start, 1))
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(result) + "\n")
  return result


if __name__ == "__main__":
  main()
