"""Colorization of a trained run on held-out and on training images.

At CPU scale colorization's held-out top-5 bin accuracy is
above the prior's top 5, but its AuC (Zhang et al.'s per-pixel ab error
curve, docs/pretext_metrics.md) stays at the prior mode's. This script tells
a colorization head that learned nothing apart from one that learned colours
that do not transfer to new photos and videos. For each run folder it prints:

* the AuC of the annealed-mean decode at several temperatures (T = 1 is the
  mean, T -> 0 the mode; the task's metric uses T = 0.38), of every pixel
  given the prior's mode, of every pixel grey (ab = 0) and of the prior's
  mean, on the held-out split and on the training split (the same number of
  crops, the same seed);
* the top-5 gain over the prior's top 5, and the AuC gain over the prior
  mode's, on the held-out crops, each with a 95% bootstrap interval over
  crops (the crops of one photo or video are not
  independent: with 11 held-out sources the interval is optimistic).

Usage (the numbers of the study's runs are in docs/pretext_metrics.md):

  python benchmarks/colorization_heldout.py runs/study/4task/s0 \\
      runs/study/rp_col/s0
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import tensorflow as tf

from mtssl_tf.data.sources import make_source
from mtssl_tf.tasks import colorization, heldout_metrics
from mtssl_tf.training import pretext_eval
from mtssl_tf.training.run_checkpoints import load_run_model, read_run_config

TEMPERATURES = (1.0, 0.6, colorization.DEFAULT_TEMPERATURE, 0.2, 0.05)


def _crops(task, config, split, examples, batch_size):
  data = config["data"]
  source = make_source(
      "offline", split=split, packages=list(data["offline_packages"]) or None,
      frame_stride=pretext_eval.EVAL_FRAME_STRIDE, balance="source",
      image_size_limit=data["image_size_limit"])
  return pretext_eval.materialize(task, source, examples=examples,
                                  batch_size=batch_size, seed=config["seed"])


def _outputs(model, task, batches):
  """Per crop: logits [n, Q], true ab [n, 2], true bins [n] at the head's
  resolution (n pixels a crop)."""
  forward = tf.function(
      lambda x: model(x, task="colorization", training=False))
  logits, ab, bins = [], [], []
  for inputs, targets in batches:
    true_ab, _, crop_logits = task.targets_at(targets,
                                             forward(tf.constant(inputs)))
    size = len(inputs)
    logits.append(crop_logits.numpy().reshape(size, -1, task.num_bins))
    ab.append(true_ab.numpy().reshape(size, -1, 2))
    bins.append(colorization.nearest_bin(true_ab, task.bins).numpy()
                .reshape(size, -1))
  return np.concatenate(logits), np.concatenate(ab), np.concatenate(bins)


def _aucs(task, logits, ab):
  """AuC per decode and baseline, and the metric's decode ([n, P, 2])."""
  bins, prior = np.asarray(task.bins), np.asarray(task.prior, np.float64)
  flat_logits, flat_ab = logits.reshape(-1, logits.shape[-1]), ab.reshape(-1, 2)
  out, metric_decode = {}, None
  for t in TEMPERATURES:
    decoded = colorization.decode_annealed_mean(tf.constant(flat_logits),
                                                bins, t).numpy()
    out[f"T={t:g}"] = heldout_metrics.ab_error_auc(decoded, flat_ab)
    if t == colorization.DEFAULT_TEMPERATURE:
      metric_decode = decoded.reshape(ab.shape)
  for name, ab_value in (("prior mode", bins[np.argmax(prior)]),
                         ("grey", np.zeros(2)),
                         ("prior mean", prior @ bins / prior.sum())):
    out[name] = heldout_metrics.ab_error_auc(
        np.broadcast_to(ab_value, flat_ab.shape), flat_ab)
  return out, metric_decode


def _top5_gain(task, logits, bins, rounds, seed):
  prior = np.asarray(task.prior, np.float64)
  n, pixels, q = logits.shape
  hits = heldout_metrics.top_k_hits(logits.reshape(-1, q), bins.reshape(-1), 5)
  prior_hits = heldout_metrics.top_k_hits(
      np.broadcast_to(prior, (n * pixels, q)), bins.reshape(-1), 5)
  gain = (hits.reshape(n, pixels).mean(1)
          - prior_hits.reshape(n, pixels).mean(1))
  rng = np.random.default_rng(seed)
  boot = [gain[rng.integers(0, n, n)].mean() for _ in range(rounds)]
  low, high = np.percentile(boot, [2.5, 97.5])
  return float(gain.mean()), float(low), float(high)


def _auc_gain(task, decoded, ab, rounds, seed):
  """AuC of the metric's decode minus the prior mode's on the held-out
  crops, with a 95% bootstrap interval over crops (paired: the same
  resampled crops for both). Every crop has the same number of pixels, so
  the pooled curve of a set of crops is the mean of their curves."""
  mode = np.asarray(task.bins)[np.argmax(np.asarray(task.prior))]
  curves = [np.stack([heldout_metrics.ab_error_curve(p, t)
                      for p, t in zip(pred, ab)])
            for pred in (decoded, np.broadcast_to(mode, ab.shape))]

  def gain(idx):
    model, prior = (heldout_metrics.curve_auc(c[idx].mean(0)) for c in curves)
    return model - prior

  n = len(ab)
  rng = np.random.default_rng(seed)
  boot = [gain(rng.integers(0, n, n)) for _ in range(rounds)]
  low, high = np.percentile(boot, [2.5, 97.5])
  return gain(np.arange(n)), float(low), float(high)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("runs", nargs="+", help="training run folders "
                      "(data=offline, with colorization)")
  parser.add_argument("--examples", type=int, default=512,
                      help="crops per split (the metric's default 512)")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--bootstrap", type=int, default=2000)
  parser.add_argument("--json", help="also write the numbers here")
  args = parser.parse_args(argv)
  report = {}
  for run in args.runs:
    config = read_run_config(run)
    if "colorization" not in config["tasks"]:
      print(f"{run}: no colorization task", file=sys.stderr)
      return 2
    if config["data"]["source"] != "offline":
      print(f"{run}: data={config['data']['source']}; this script reads "
            "the offline set's splits", file=sys.stderr)
      return 2
    model = load_run_model(run)
    task = model.task_objects["colorization"]
    row = {}
    for split in ("heldout", "train"):
      logits, ab, bins = _outputs(model, task, _crops(
          task, config, split, args.examples, args.batch_size))
      row[split], decoded = _aucs(task, logits, ab)
      if split == "heldout":
        row["top5_gain"] = _top5_gain(task, logits, bins, args.bootstrap,
                                      config["seed"])
        row["auc_gain"] = _auc_gain(task, decoded, ab, args.bootstrap,
                                    config["seed"])
    report[run] = row
    print(f"{run}:")
    for split in ("heldout", "train"):
      print(f"  {split:8s} AuC " + "  ".join(
          f"{k} {v:.4f}" for k, v in row[split].items()))
    gain, low, high = row["top5_gain"]
    print(f"  held-out top-5 minus the prior's top 5: {gain:+.3f} "
          f"(95% bootstrap over crops {low:+.3f} .. {high:+.3f})")
    gain, low, high = row["auc_gain"]
    print(f"  held-out AuC (T {colorization.DEFAULT_TEMPERATURE:g}) minus the "
          f"prior mode's: {gain:+.4f} (95% bootstrap over crops "
          f"{low:+.4f} .. {high:+.4f})")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=1, sort_keys=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
