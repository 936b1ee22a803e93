"""Run checkpoints keyed by name: the one way to save and load a run's model.

A run's checkpoint (``<run_dir>/checkpoints/ckpt-<step>``) is a
``tf.train.Checkpoint`` whose objects are named, never positional:

* ``model/trunk/<layer>/<weight>``: the trunk's variables by their layer's
  name (fixed names, ``conv4_block7_out`` style) and their own;
* ``model/heads/<task>/<layer>/.../<weight>``: each head by task name,
  its weights by their path inside the head (the head's own layer name is
  left out: Keras numbers it, ``relative_position_head_1``, when a process
  builds a second model);
* ``model/mixer/<task>``: each UnitMixer row by task name (lasso runs);
* ``optimizer/<model variable's name>/<slot>`` and ``optimizer/iteration``
  (``optimizer/<task>/...`` with one optimizer per task): each slot under
  the name of the model variable it belongs to, so the optimizer's state
  does not depend on the order of the tasks either;
* ``accumulators/<model variable path>``, ``step``, ``task_steps/<task>``,
  ``data/<task>`` (the input iterators), ``skips/<task>``; the loss-scale
  state (``mixed_float16``) is ``optimizer/loss_scale/...``.

Because every task's weights are found by its name, a checkpoint restores
into a model built with the tasks in any order (export, evaluation and the
zoo rebuild the model from a config whose order they do not control). A
checkpoint that lacks one of the model's tasks, or holds a task the model
does not have, is refused with :class:`CheckpointTasksError` naming them.

A checkpoint without this layout (no ``model/...`` objects) is refused
with :class:`CheckpointTasksError` saying to start a new run folder.

Example:
  >>> model = load_run_model("runs/demo")           # the latest checkpoint
  >>> restore_model(other_model, "runs/demo/checkpoints/ckpt-200")
"""
from __future__ import annotations

import errno
import glob
import json
import os
import shutil
from typing import Any, Dict, Iterable, List, Optional, Sequence

import keras
import tensorflow as tf

from mtssl_tf.models.build import build_model

MODEL = "model"
_SUFFIX = "/.ATTRIBUTES/"


class CheckpointTasksError(ValueError):
  """A checkpoint's tasks differ from the model's (names them)."""


class CheckpointWriteError(OSError):
  """Writing a checkpoint failed (a full disk, a lost mount); the message
  names the checkpoint, the cause and the complete checkpoint that is
  kept."""


def tree(named: Dict[str, Any]) -> tf.train.Checkpoint:
  """``{"a/b/c": trackable}`` -> nested ``tf.train.Checkpoint`` objects, so
  that each ``/`` of a name is a level of the checkpoint's object graph."""
  nested: Dict[str, Any] = {}
  for name, value in named.items():
    parts = name.split("/")
    node = nested
    for part in parts[:-1]:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"checkpoint name {name!r} runs through a value")
    if parts[-1] in node:
      raise ValueError(f"two checkpoint values are named {name!r}")
    node[parts[-1]] = value

  def build(node):
    items = {}
    for key, value in node.items():
      if hasattr(tf.train.Checkpoint, key):
        # A name such as "save" or "read" would shadow a Checkpoint method.
        raise ValueError(f"checkpoint name part {key!r} is reserved by "
                         "tf.train.Checkpoint")
      items[key] = build(value) if isinstance(value, dict) else value
    return tf.train.Checkpoint(**items)

  return build(nested)


def model_variables(model) -> Dict[str, Any]:
  """Checkpoint name -> variable, for every weight of a
  :class:`~mtssl_tf.models.multitask.MultiTaskModel` (trainable or not).

  Names: ``trunk/<path>``, ``heads/<task>/<path>``, ``mixer/<task>``.

  Raises:
    ValueError: a weight of the model is in none of trunk, heads and
      mixer, or two weights share a name (the layout would lose one).
  """
  named: Dict[str, Any] = {}

  def add(name, variable):
    if name in named:
      raise ValueError(f"two weights of the model are named {name!r}")
    named[name] = variable

  # Keras variable paths start with the name scope of the outermost layer,
  # which Keras numbers when a process builds a second layer of a default
  # name (``relative_position_head_1``): the trunk's weights are named by
  # their layer's fixed name instead, a head's by their path inside it.
  for layer in model.trunk.layers:
    for v in layer.weights:
      add(f"trunk/{layer.name}/{v.name}", v)
  for task in model.task_names:
    for v in model.heads[task].weights:
      inner = v.path.split("/", 1)[-1]
      add(f"heads/{task}/{inner}", v)
  if model.mixer is not None:
    for task, row in model.mixer.rows.items():
      add(f"mixer/{task}", row)
  covered = {id(v) for v in named.values()}
  stray = [v.path for v in model.weights if id(v) not in covered]
  if stray:
    raise ValueError(f"model weights outside the trunk, heads and mixer "
                     f"have no checkpoint name: {', '.join(stray)}")
  return named


def canonical_order(model, variables: Iterable) -> List:
  """``variables`` (a subset of the model's weights) sorted by checkpoint
  name: the same order whatever the order of the model's tasks. Optimizers
  are built over this order so that nothing in a run depends on it."""
  names = {id(v): n for n, v in model_variables(model).items()}
  return sorted(variables, key=lambda v: names[id(v)])


def model_trackable(model) -> tf.train.Checkpoint:
  """The ``model`` entry of a run checkpoint: the named tree of
  :func:`model_variables`."""
  return tree(model_variables(model))


def optimizer_variables(model, optimizer) -> Dict[str, Any]:
  """Checkpoint name -> variable for a Keras optimizer of ``model``: each
  slot as ``<model variable's checkpoint name>/<slot>`` (e.g.
  ``heads/colorization/classifier/kernel/momentum``), the rest (iteration,
  learning rate) by its own name.

  Keras names a slot ``<model variable path with / as _>_<slot>``
  (``Optimizer.add_variable_from_reference``); paths can carry a number
  that depends on what the process built before, so the slot is filed
  under the model variable's stable name instead.

  A Keras ``LossScaleOptimizer`` (``mixed_float16``) is filed as its inner
  optimizer plus ``loss_scale/dynamic_scale`` and ``loss_scale/step_counter``
  (good updates since the scale last changed).

  Raises:
    ValueError: two optimizer variables would get the same name.
  """
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    named = optimizer_variables(model, optimizer.inner_optimizer)
    named["loss_scale/dynamic_scale"] = optimizer.dynamic_scale
    named["loss_scale/step_counter"] = optimizer.step_counter
    return named
  prefixes = sorted(((v.path.replace("/", "_") + "_", name)
                     for name, v in model_variables(model).items()),
                    key=lambda p: -len(p[0]))
  named: Dict[str, Any] = {}
  for o in optimizer.variables:
    key = o.name
    for prefix, name in prefixes:
      if o.name.startswith(prefix) and o.name[len(prefix):].isidentifier():
        key = f"{name}/{o.name[len(prefix):]}"
        break
    if key in named:
      raise ValueError(f"two optimizer variables are named {key!r}")
    named[key] = o
  return named


def optimizer_trackable(model, optimizer) -> tf.train.Checkpoint:
  """The ``optimizer`` entry of a run checkpoint (see
  :func:`optimizer_variables`)."""
  return tree(optimizer_variables(model, optimizer))


def save_model(model, prefix: str) -> str:
  """Writes ``model``'s weights alone as a run checkpoint (the ``model``
  entry of the named layout); returns the checkpoint path. For tests and
  tools that make a run folder without training."""
  return tf.train.Checkpoint(**{MODEL: model_trackable(model)}).save(prefix)


def is_disk_full(error: BaseException) -> bool:
  """Whether a write failed for lack of space (or of quota). TensorFlow's
  file system reports ENOSPC and EDQUOT as ``ResourceExhaustedError`` with
  the OS's text; Python raises ``OSError`` with the errno."""
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC,
                                                    errno.EDQUOT):
    return True
  text = str(error)
  return "No space left on device" in text or "Disk quota exceeded" in text


def _recorded_checkpoints(directory: str) -> List[str]:
  """The checkpoints the ``checkpoint`` state file names, latest last."""
  state = tf.train.get_checkpoint_state(directory)
  if state is None:
    return []
  paths = list(state.all_model_checkpoint_paths)
  if state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  return paths


def _remove_unrecorded(prefix: str, directory: str) -> None:
  """Removes what a failed write of checkpoint ``prefix`` left, unless the
  state file names it: its ``<prefix>_temp/`` shard folder, its data and
  index files, and the state file's own temporary copies."""
  if prefix not in _recorded_checkpoints(directory):
    shutil.rmtree(prefix + "_temp", ignore_errors=True)
    for path in ([prefix + ".index"]
                 + glob.glob(glob.escape(prefix) + ".data-?????-of-?????")):
      if os.path.exists(path):
        os.remove(path)
  # tf.io.gfile's atomic write: "checkpoint.tmp<uuid hex>", renamed when
  # complete, left behind when the write itself fails.
  for path in glob.glob(os.path.join(glob.escape(directory),
                                     "checkpoint.tmp" + "[0-9a-f]" * 32)):
    os.remove(path)


def save_checkpoint(manager: tf.train.CheckpointManager, step: int) -> str:
  """``manager.save(checkpoint_number=step)``; a failed write is cleaned up
  and reported as :class:`CheckpointWriteError`.

  What survives a kill or a full disk: TensorFlow writes checkpoint
  ``ckpt-<step>`` into ``ckpt-<step>_temp/`` (each file under a
  ``.tempstate<n>`` name, renamed once complete), moves the data to
  ``ckpt-<step>.data-*``, writes ``ckpt-<step>.index``, and only then
  names the checkpoint in the ``checkpoint`` state file (written aside as
  ``checkpoint.tmp<hex>`` and renamed). A resumed run restores what the
  state file names, so a process killed anywhere in a save resumes from
  the previous complete checkpoint; the files the killed save left are
  overwritten when that step is saved again.

  A save that fails with an error (a full disk: TensorFlow's
  ``ResourceExhaustedError``, Python's ``OSError``) leaves the same kind
  of files; they are removed here, so that they take no space and no one
  mistakes them for a checkpoint, and the earlier checkpoints stay as
  they were. The manager is not used for another save after the error
  (the trainer stops; a re-run makes a new one from the state file).

  Args:
    manager: the run's ``tf.train.CheckpointManager`` (checkpoints named
      ``<directory>/ckpt-<number>``).
    step: the checkpoint number (the trainer's global step).

  Returns:
    The new checkpoint's prefix.

  Raises:
    CheckpointWriteError: the write failed; the message names the
      checkpoint, whether the disk is full, TensorFlow's or the OS's
      message (with the file), and the last complete checkpoint, which is
      kept and from which a re-run resumes.
  """
  try:
    return manager.save(checkpoint_number=step)
  except (OSError, tf.errors.OpError) as error:
    directory = manager.directory
    prefix = os.path.join(directory, f"ckpt-{int(step)}")
    try:
      _remove_unrecorded(prefix, directory)
      cleaned = "its partial files were removed"
    except OSError as cleanup:
      cleaned = f"its partial files could not all be removed ({cleanup})"
    kept = tf.train.latest_checkpoint(directory)
    cause = ("the disk is full" if is_disk_full(error)
             else "the write failed")
    if kept:
      outcome = (f"The last complete checkpoint, {kept}, is kept: make room "
                 "and re-run the same command to resume from it.")
    else:
      outcome = ("There is no earlier checkpoint: a re-run starts from "
                 "step 0.")
    failure = CheckpointWriteError(
        f"writing checkpoint {prefix} failed: {cause} "
        f"({type(error).__name__}: {error}); {cleaned}. {outcome}")
    failure.errno = getattr(error, "errno", None)
    raise failure from error


def checkpoint_keys(path: str) -> List[str]:
  """The object paths in checkpoint ``path`` (without the attribute
  suffix), e.g. ``model/heads/colorization/...``."""
  return [name.split(_SUFFIX)[0] for name, _ in tf.train.list_variables(path)]


def checkpoint_tasks(path: str) -> Dict[str, List[str]]:
  """``{"heads": [...], "mixer": [...]}``: the task names a named
  checkpoint holds heads and mixer rows for (sorted).

  Raises:
    CheckpointTasksError: ``path`` holds no ``model/...`` objects, so it is
      not a run checkpoint of this layout.
  """
  keys = checkpoint_keys(path)
  if not any(k.split("/")[0] == MODEL for k in keys):
    raise CheckpointTasksError(
        f"checkpoint {path} holds no model keyed by name ('{MODEL}/...'): "
        "its layout is not this version's run checkpoint layout "
        "(docs/checkpoints.md); start a new run folder")
  heads, rows = set(), set()
  for key in keys:
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == MODEL and parts[1] == "heads":
      heads.add(parts[2])
    elif len(parts) >= 3 and parts[0] == MODEL and parts[1] == "mixer":
      rows.add(parts[2])
  return {"heads": sorted(heads), "mixer": sorted(rows)}


def check_tasks(model, path: str) -> None:
  """Raises :class:`CheckpointTasksError` naming every task whose head or
  mixer row is missing from checkpoint ``path`` or present there but not
  in ``model`` (or saying that ``path`` is not in the named layout)."""
  found = checkpoint_tasks(path)
  want = set(model.task_names)
  problems = []

  def compare(have, what):
    missing = sorted(want - set(have))
    extra = sorted(set(have) - want)
    if missing:
      problems.append(f"no {what} for task(s) {', '.join(missing)}")
    if extra:
      problems.append(f"a {what} for task(s) {', '.join(extra)} that the "
                      "model does not have")

  compare(found["heads"], "head")
  if model.mixer is not None:
    if found["mixer"]:
      compare(found["mixer"], "mixer row")
    else:
      problems.append("no UnitMixer rows, but the model has a mixer (lasso "
                      "on)")
  elif found["mixer"]:
    problems.append("UnitMixer rows, but the model has no mixer (lasso off)")
  if problems:
    raise CheckpointTasksError(
        f"checkpoint {path} does not match the model (tasks "
        f"{', '.join(model.task_names)}): it has "
        + "; ".join(problems))


def restore_model(model, path: str) -> None:
  """Restores ``model``'s weights from run checkpoint ``path``, by name.

  The optimizer, counters and data iterators in the checkpoint are not
  needed and are skipped.

  Args:
    model: a :class:`~mtssl_tf.models.multitask.MultiTaskModel`, its tasks
      in any order.
    path: a checkpoint prefix (``.../ckpt-200``).

  Raises:
    CheckpointTasksError: the checkpoint lacks a task of the model or has
      one the model lacks (names them), or is not in the named layout.
    AssertionError, ValueError, tf.errors.OpError: a weight is missing or
      has another shape (TF's messages name it).
  """
  check_tasks(model, path)
  status = tf.train.Checkpoint(**{MODEL: model_trackable(model)}).restore(
      path)
  status.expect_partial()  # optimizer slots, iterators: not needed here
  status.assert_existing_objects_matched()


def read_run_config(run_dir: str) -> Dict[str, Any]:
  """The run's ``config.json`` as a dict (``FileNotFoundError`` saying what
  a run folder is when it is missing)."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: is {run_dir!r} a training run folder (made "
        "by `python -m mtssl_tf.train`)?")
  with open(path) as f:
    return json.load(f)


def checkpoint_step(path: str) -> int:
  """The global step a trainer checkpoint (``<run>/checkpoints/ckpt-N``)
  was saved at: its ``step`` item (the Trainer's checkpoint layout)."""
  return int(tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE"))


def load_run_model(run_dir: str, checkpoint: Optional[str] = None, *,
                   task_order: Optional[Sequence[str]] = None):
  """Rebuilds a run's model from ``config.json`` and restores its weights.

  Args:
    run_dir: a training run folder.
    checkpoint: a checkpoint prefix; default: the latest in
      ``<run_dir>/checkpoints``.
    task_order: build the model with its tasks in this order (same names
      as the run's); weights are matched by task name.

  Returns:
    A :class:`~mtssl_tf.models.multitask.MultiTaskModel`.

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint.
    CheckpointTasksError: the checkpoint's tasks differ from the config's.
  """
  config = read_run_config(run_dir)
  checkpoint = checkpoint or tf.train.latest_checkpoint(
      os.path.join(run_dir, "checkpoints"))
  if not checkpoint:
    raise FileNotFoundError(
        f"no checkpoint under {os.path.join(run_dir, 'checkpoints')}: train "
        "first (python -m mtssl_tf.train ...)")
  model = build_model(config, task_order=task_order)
  restore_model(model, checkpoint)
  return model


__all__ = ["CheckpointTasksError", "CheckpointWriteError", "MODEL",
           "canonical_order", "check_tasks",
           "checkpoint_keys", "checkpoint_step", "checkpoint_tasks",
           "is_disk_full", "load_run_model", "model_trackable",
           "model_variables", "optimizer_trackable", "optimizer_variables",
           "read_run_config", "restore_model", "save_checkpoint",
           "save_model", "tree"]
