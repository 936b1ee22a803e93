"""Held-out pretext metrics: does each self-supervised task learn?

Training losses are measured on the batches being trained on; they cannot
tell learning from memorising a few dozen images. This module measures every
task on images (and videos) that training never sees, each beside the score
of a trivial prediction. Each task owns its metric (``Task.headline_metric``,
``Task.heldout_scores``, its log and table rows: see ``tasks/task.py``); a
task that defines none is left out, with one line in the log. The paper's
four tasks:

=====================  ============================  ===========================
task                   metric                        chance / baseline
=====================  ============================  ===========================
relative position      8-way accuracy                1/8 = 0.125
colorization           top-5 accuracy of the ab bin  the prior's 5 most likely
                       (per pixel); AuC of the       bins; every pixel given the
                       per-pixel ab error curve      prior's mode (``chance``,
                       (Zhang et al., ECCV 2016)     ``chance_auc``)
exemplar               view-retrieval top-1 among    1/N
                       N held-out images
motion segmentation    IoU of the moving class       the all-static prediction
                                                     (IoU 0); the all-moving
                                                     one beside it
=====================  ============================  ===========================

The AuC (Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016,
Sec. 3.1): for thresholds t = 0, 1, ..., 150 the fraction of pixels whose
predicted ab lies within Euclidean distance t of the true ab, integrated over
t (trapezoid rule) and divided by 150, so 1.0 is perfect. The prediction is
the task's annealed-mean decode (T = 0.38). The colorization prior is the
task's empirical prior when it has one; a task trained without one (uniform)
is compared with the held-out pixels' own bin distribution, a baseline that
knows the held-out colours (so beating it is conservative).

Exemplar retrieval: every held-out image gives K augmented views; for each
ordered pair of views (a, b), a != b, view a of image i queries the views b
of all N images (cosine similarity of the L2-normalised embeddings) and is
right when its nearest is image i; the score is the mean over pairs.

:class:`PretextEvaluator` materialises the held-out inputs once (fixed seeds,
so every evaluation of a run sees exactly the same crops, pairs and views)
and is called by the trainer every ``pretext_eval_every`` steps and at the
end; results go to the log, TensorBoard (``pretext/<task>/<metric>``),
``history.jsonl`` (records ``{"step", "task", "pretext": {...}}``) and, at
the end, ``<run_dir>/pretext_metrics.json`` as
``{task: {metric: value, ..., "chance": value, "step": N}}`` plus a table in
the log.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from mtssl_tf import tasks as tasks_lib

# Held-out video frames for evaluation: every 10th frame (every 2nd would
# give near-duplicate queries and inflate N for retrieval).
EVAL_FRAME_STRIDE = 10
JSON_NAME = "pretext_metrics.json"


def _task_class(name: str) -> Optional[type]:
  """The registered task class ``name``; None for a name this process does
  not know (e.g. a run's JSON naming a task registered elsewhere)."""
  try:
    return tasks_lib.get_task_class(name)
  except ValueError:
    return None


def has_heldout_metric(name: str) -> bool:
  """Whether the task ``name`` defines a held-out metric."""
  cls = _task_class(name)
  return cls is not None and cls.headline_metric is not None


def headline(name: str) -> Optional[str]:
  """The key of task ``name``'s headline held-out metric (None: none)."""
  cls = _task_class(name)
  return None if cls is None else cls.headline_metric


# -- held-out inputs -------------------------------------------------------

Batch = Tuple[Any, Any]


def materialize(task, source, *, examples: int, batch_size: int,
                seed: int = 0) -> List[Batch]:
  """Fixed held-out ``(inputs, targets)`` NumPy batches of ``task``.

  A task with ``one_pass_heldout`` (exemplar) makes at most one pass (each
  held-out image at most once: N distinct images, about ``examples`` at
  most); the other tasks make further passes over the source (new crops and
  pairs) until ``examples`` examples are made.

  Raises:
    ValueError: every held-out image is smaller than the task needs.
  """
  from mtssl_tf.data import pipeline  # pylint: disable=g-import-not-at-top

  def batches_of(dataset):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset]

  one_pass = task.one_pass_heldout
  # A repeated dataset whose every image is filtered out (too small for the
  # task) would never end: check the (cheap, undecoded-crop) source first.
  need = pipeline.task_min_image_size(task)
  dataset = getattr(source, "dataset", source)
  if not any(min(e["image"].shape[:2]) >= need for e in dataset):
    raise ValueError(
        f"no held-out examples for {task.name}: every image of "
        f"{getattr(source, 'description', source)} is smaller than the "
        f"{need} px the task needs")
  batches = pipeline.task_dataset(
      task, source, batch_size=batch_size, seed=seed, deterministic=True,
      shuffle_buffer=1, repeat=not one_pass, drop_remainder=False)
  # One pass: at most ``examples`` distinct images (a TFDS validation split
  # has 50,000). Others: each example's seed folds in its index after
  # repeat, so every pass over the held-out images draws new crops and pairs.
  return batches_of(batches.take(math.ceil(examples / batch_size)))


class PretextEvaluator:
  """Scores a multi-task model's heads on fixed held-out inputs.

  Example:
    >>> evaluator = PretextEvaluator(model, {"relative_position": batches})
    >>> evaluator.evaluate(step=100)
    {'relative_position': {'accuracy': 0.31, 'chance': 0.125, ...,
     'step': 100}}

  Args:
    model: a :class:`~mtssl_tf.models.MultiTaskModel` (called with
      ``training=False``).
    heldout: task -> list of ``(inputs, targets)`` batches
      (:func:`materialize`); each task defines a held-out metric
      (``Task.headline_metric``, ``Task.heldout_scores``).
    description: what was held out, for the log.

  Raises:
    ValueError: a task of ``heldout`` defines no held-out metric.
  """

  def __init__(self, model, heldout: Dict[str, List[Batch]],
               description: str = ""):
    unknown = sorted(name for name in heldout
                     if model.task_objects[name].headline_metric is None)
    if unknown:
      raise ValueError(f"no held-out metric for tasks {unknown}: they set no "
                       "headline_metric (see Task.heldout_scores)")
    self.model = model
    self.heldout = dict(heldout)
    self.description = description
    self._forward = {
        t: tf.function(lambda x, t=t: model(x, task=t, training=False),
                       reduce_retracing=True) for t in self.heldout}

  def evaluate(self, step: int) -> Dict[str, Dict[str, float]]:
    """``{task: {metric: value, ..., "chance": value, "step": step}}``."""
    results = {}
    for name, batches in self.heldout.items():
      outputs = [self._forward[name](tf.constant(inputs)).numpy()
                 for inputs, _ in batches]
      scores = self.model.task_objects[name].heldout_scores(batches, outputs)
      results[name] = {**scores, "step": int(step)}
    return results

  def run(self, step: int, *, writer=None, history=None,
          log: Callable[[str], None] = print, run_dir: Optional[str] = None
          ) -> Dict[str, Dict[str, float]]:
    """Evaluates and reports: a log line, TensorBoard scalars under
    ``pretext/``, one ``history`` record per task; with ``run_dir`` (the
    final evaluation) also ``pretext_metrics.json`` and the summary table."""
    results = self.evaluate(step)
    log(format_line(step, results))
    if writer is not None:
      with writer.as_default(step=step):
        for task, metrics in results.items():
          for metric, value in metrics.items():
            if metric != "step":
              tf.summary.scalar(f"pretext/{task}/{metric}", value)
      writer.flush()
    if history is not None:
      for task, metrics in results.items():
        history.write(json.dumps({"step": int(step), "task": task,
                                  "pretext": metrics}) + "\n")
      history.flush()
    if run_dir is not None:
      write_json(run_dir, results)
      log(format_table(results, self.description))
    return results


def write_json(run_dir: str, results: Dict[str, Dict[str, float]]) -> str:
  path = os.path.join(run_dir, JSON_NAME)
  with open(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  return path


def read_json(run_dir: str) -> Optional[Dict[str, Dict[str, float]]]:
  """``<run_dir>/pretext_metrics.json`` (:func:`write_json`) as a dict;
  None when the run has none (trained without ``--pretext_eval_every``, or
  not a run folder).

  Raises:
    ValueError: a file that is not a ``{task: {metric: value}}`` JSON.
  """
  path = os.path.join(run_dir, JSON_NAME)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      data = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON: {e}") from None
  if not isinstance(data, dict) or not all(
      isinstance(v, dict) for v in data.values()):
    raise ValueError(f"{path}: expected {{task: {{metric: value, ...}}}}")
  return data


def format_line(step: int, results: Dict[str, Dict[str, float]]) -> str:
  """``held-out @ step 100 | relative_position accuracy=0.312 (chance
  0.125) | ...``"""
  parts = []
  for task, m in results.items():
    cls = _task_class(task)
    if cls is None or cls.headline_metric is None:
      continue
    parts.append(f"{task} {cls.heldout_summary(m)}")
  return f"held-out @ step {step} | " + " | ".join(parts)


def format_table(results: Dict[str, Dict[str, float]],
                 description: str = "") -> str:
  """The run's final table of held-out metrics, chance beside each (each
  task's rows: ``Task.heldout_table``; tasks this process does not know are
  left out)."""
  rows = []
  for task, m in results.items():
    cls = _task_class(task)
    if cls is None or cls.headline_metric is None:
      continue
    rows.extend((task,) + tuple(row) for row in cls.heldout_table(m))
  step = next(iter(results.values()))["step"] if results else 0
  lines = [f"held-out pretext metrics at step {step}"
           + (f" ({description})" if description else "") + ":",
           f"  {'task':<20} {'metric':<26} {'value':>7} {'chance':>7}  "
           "baseline"]
  for task, metric, value, chance, baseline in rows:
    lines.append(f"  {task:<20} {metric:<26} {value:>7.3f} {chance:>7.3f}  "
                 f"{baseline}")
  return "\n".join(lines)


# -- from a training config ---------------------------------------------------

def heldout_sources(config, log: Callable[[str], None] = print
                    ) -> Tuple[Dict[str, Any], List[str]]:
  """The held-out source of each task of ``config``, and notes on tasks
  that have none (they are left out of the evaluation, said in the log).

  * ``data=offline``: the held-out split of the offline set (whole photos and
    videos, :data:`mtssl_tf.data.offline.HELDOUT_SOURCES`), video frames
    every :data:`EVAL_FRAME_STRIDE`; motion masks of the held-out videos,
    made once into ``<run_dir>/heldout_motion_masks``.
  * ``data=tfds``: the dataset's ``validation`` split.
  * ``data=folder``: no held-out images are known.
  * motion segmentation reads ``config.heldout_motion_records`` when given.
  * a task that defines no held-out metric (``Task.headline_metric``) gets
    a note instead.
  """
  from mtssl_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from mtssl_tf.data.sources import make_source  # pylint: disable=g-import-not-at-top
  data = config.data
  packages = list(data.offline_packages) or None
  sources, notes = {}, []
  image_source = None
  for name in config.tasks:
    if not has_heldout_metric(name):
      notes.append(f"{name}: the task defines no held-out metric "
                   "(Task.headline_metric, Task.heldout_scores)")
      continue
    if tasks_lib.get_task_class(name).reads_motion_masks:
      records = config.heldout_motion_records
      if not records and data.source == "offline":
        records = pipeline.offline_motion_records(
            os.path.join(config.run_dir, "heldout_motion_masks"), packages,
            log, split="heldout")
      if not records:
        notes.append(f"{name}: no held-out videos (pass "
                     "--heldout_motion_records)")
        continue
      sources[name] = make_source("motion", path=records,
                                  image_size_limit=data.image_size_limit)
      continue
    if image_source is None:
      if data.source == "offline":
        # Every held-out photo and video weighs the same in the pairs,
        # crops and views drawn (a 40-frame clip would otherwise outweigh a
        # photo 40 to 1); exemplar retrieval needs each image once.
        image_source = lambda task: make_source(  # noqa: E731
            "offline", split="heldout", packages=packages,
            frame_stride=EVAL_FRAME_STRIDE,
            balance=("image" if tasks_lib.get_task_class(task)
                     .one_pass_heldout else "source"),
            image_size_limit=data.image_size_limit)
      elif data.source == "tfds":
        image_source = lambda task: make_source(  # noqa: E731
            "tfds", name=data.tfds_name, data_dir=data.data_dir,
            split="validation", image_size_limit=data.image_size_limit)
      else:
        notes.append(f"{name}: data=folder has no held-out images")
        continue
    sources[name] = image_source(name)
  return sources, notes


def from_config(config, model, log: Callable[[str], None] = print
                ) -> Optional[PretextEvaluator]:
  """The evaluator of a training run, or None when
  ``config.pretext_eval_every`` is 0 (off)."""
  if not config.pretext_eval_every:
    return None
  sources, notes = heldout_sources(config, log)
  for note in notes:
    log(f"held-out metrics: {note}")
  if not sources:
    log("held-out metrics: no task has held-out data; none are reported")
    return None
  heldout, described = {}, {}
  for name, source in sources.items():
    task = model.task_objects[name]
    # At the task's training batch size (--task_batch_size), known to fit in
    # memory. The scores do not depend on it (inference-mode batch norm;
    # each example is seeded by its index) beyond rounding the number of
    # examples up to whole batches (for exemplar: the N of its retrieval,
    # whose chance 1/N is reported beside it).
    heldout[name] = materialize(
        task, source, examples=config.pretext_eval_examples,
        batch_size=config.task_batch_size(name), seed=config.seed)
    described.setdefault(source.description, None)
  description = "; ".join(described)
  log(f"held-out metrics every {config.pretext_eval_every} steps on "
      f"{description}")
  return PretextEvaluator(model, heldout, description)


__all__ = ["EVAL_FRAME_STRIDE", "JSON_NAME", "PretextEvaluator",
           "format_line", "format_table", "from_config",
           "has_heldout_metric", "headline", "heldout_sources",
           "materialize", "read_json", "write_json"]
