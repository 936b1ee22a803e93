"""Loading the trunk to evaluate: a training run, a ``.keras`` file, or random.

The paper's tables compare pre-trained trunks with a random-initialised one
(the baseline row); :func:`load_trunk` gives all of them one entry point:

* a **training run folder** (``python -m mtssl_tf.train``): the multi-task
  model is rebuilt from ``config.json`` and its latest checkpoint restored
  by task name (:func:`mtssl_tf.training.run_checkpoints.load_run_model`); its
  trunk is returned;
* a **``.keras`` file** holding a :class:`~mtssl_tf.MultiTaskModel` (as
  ``python -m mtssl_tf.export`` writes) or a bare :class:`~mtssl_tf.Trunk`;
* the string ``"random"``: a fresh trunk built from ``trunk_config``.

What users of comparable projects struggle with most is weights that "load"
silently as random. Here any mismatch is an error: a checkpoint whose
variables do not fit the model, or a trunk whose architecture differs from
the one explicitly requested, raises ``ValueError`` naming the checkpoint
and what differs; a missing path raises ``FileNotFoundError`` naming it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import keras
import tensorflow as tf

import mtssl_tf  # noqa: F401  (registers the Keras classes for load_model)
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import Trunk, TrunkConfig
from mtssl_tf.training import run_checkpoints

RANDOM = "random"
# Fields that only matter while training (batch-norm statistics updates and
# their synchronisation, the initialisation): a checkpoint trained with other
# values is still the same network at evaluation.
TRAINING_ONLY_FIELDS = ("bn_momentum", "sync_bn", "zero_init_residual")


def random_architecture(config: TrunkConfig) -> TrunkConfig:
  """The trunk a random-init baseline builds for a checkpoint's ``config``.

  The same network with the standard initialisation: a run trained with
  ``zero_init_residual`` started every residual branch at zero, and a random
  trunk built that way is the stem and the shortcuts alone (every branch adds
  0), a far weaker baseline than the random network the paper's tables set
  beside pre-training. ``zero_init_residual`` is a way to start training,
  not part of the architecture (:data:`TRAINING_ONLY_FIELDS`).
  """
  if not config.zero_init_residual:
    return config
  return dataclasses.replace(config, zero_init_residual=False)


def trunk_config_differences(got: TrunkConfig,
                             want: TrunkConfig) -> list:
  """``["depth: 26 (checkpoint) != 14 (requested)", ...]`` for every
  architecture field of the two configs that differs."""
  got_d, want_d = got.to_dict(), want.to_dict()
  return [f"{k}: {got_d[k]!r} (checkpoint) != {want_d[k]!r} (requested)"
          for k in got_d
          if k not in TRAINING_ONLY_FIELDS and got_d[k] != want_d[k]]


def _check_requested(trunk: Trunk, trunk_config: Optional[TrunkConfig],
                     source: str) -> Trunk:
  if trunk_config is None:
    return trunk
  diffs = trunk_config_differences(trunk.config, trunk_config)
  if diffs:
    raise ValueError(
        f"wrong architecture: the trunk in {source!r} differs from the "
        f"requested trunk: {'; '.join(diffs)}")
  return trunk


def _load_run(run_dir: str) -> Trunk:
  try:
    model = run_checkpoints.load_run_model(run_dir)
  except (FileNotFoundError, run_checkpoints.CheckpointTasksError):
    raise  # their messages name the file and the tasks already
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    # TF reports a variable of the wrong shape (ValueError / OpError) or
    # model objects without a value in the checkpoint (AssertionError) with
    # long messages; keep the first lines, which name the variable.
    detail = " ".join(str(e).strip().splitlines()[:3])[:600]
    raise ValueError(
        f"wrong architecture: the checkpoint in run folder {run_dir!r} does "
        "not match the model described by its config.json (was config.json "
        "edited, or the checkpoint copied from another run?): "
        f"{type(e).__name__}: {detail}") from None
  return model.trunk


def _load_keras_file(path: str) -> Trunk:
  try:
    model = keras.models.load_model(path, compile=False)
  except Exception as e:  # pylint: disable=broad-except
    # Keras raises ValueError, TypeError, KeyError or OSError for a corrupt
    # file, unknown classes or weights that do not fit; all mean the same
    # thing to the user: this file cannot be evaluated.
    detail = " ".join(str(e).strip().splitlines()[:3])[:600]
    raise ValueError(
        f"cannot load the trunk from {path!r}: {type(e).__name__}: "
        f"{detail}") from None
  if isinstance(model, MultiTaskModel):
    return model.trunk
  if isinstance(model, Trunk):
    return model
  raise ValueError(
      f"{path!r} holds a {type(model).__name__}, not an mtssl_tf "
      "MultiTaskModel or Trunk: nothing to evaluate")


def load_trunk(source: str,
               trunk_config: Optional[TrunkConfig] = None) -> Trunk:
  """The trunk to evaluate.

  Args:
    source: a training run folder, a ``.keras`` file, or ``"random"``.
    trunk_config: for ``"random"``, the architecture to build (default: the
      paper's ResNet-101), always with the standard initialisation
      (:func:`random_architecture`). For a checkpoint, ``None`` takes its architecture
      as it is; a config requests that architecture, and a checkpoint whose
      trunk differs (other than in ``TRAINING_ONLY_FIELDS``) is an error.

  Returns:
    A :class:`~mtssl_tf.Trunk` with the checkpoint's weights.

  Raises:
    FileNotFoundError: ``source`` does not exist (or a run folder has no
      ``config.json`` or no checkpoint).
    ValueError: the checkpoint does not match the model (wrong
      architecture), or the file holds no trunk.
  """
  if not isinstance(source, str) or not source:
    raise ValueError(
        f"checkpoint={source!r}: give a training run folder, a .keras file "
        f"or {RANDOM!r}")
  if source == RANDOM:
    config = random_architecture(trunk_config or TrunkConfig())
    return Trunk(**config.to_dict())
  if not os.path.exists(source):
    raise FileNotFoundError(
        f"checkpoint {source!r} does not exist (expected a training run "
        f"folder, a .keras file or {RANDOM!r})")
  if os.path.isdir(source):
    trunk = _load_run(source)
  elif source.endswith(".keras"):
    trunk = _load_keras_file(source)
  else:
    raise ValueError(
        f"checkpoint {source!r} is neither a folder (a training run) nor a "
        ".keras file")
  return _check_requested(trunk, trunk_config, source)


def check_eval_lasso(trunk: Trunk, source: str = "the trunk") -> None:
  """Raises ``ValueError`` when eval lasso cannot mix ``trunk``'s units."""
  if trunk.config.block3_last_stride != 1:
    raise ValueError(
        f"eval lasso mixes every block-3 unit, but {source} has "
        f"block3_last_stride={trunk.config.block3_last_stride}: its last "
        "unit has a different resolution from the others. Evaluate without "
        "--eval_lasso, or use a trunk with block3_last_stride=1")


__all__ = ["RANDOM", "TRAINING_ONLY_FIELDS", "check_eval_lasso", "load_trunk",
           "random_architecture", "trunk_config_differences"]
