"""Self-supervised tasks, looked up by name.

>>> from mtssl_tf import tasks
>>> task = tasks.get_task("relative_position", patch_size=32)

Modules are imported on first use so that ``import mtssl_tf`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Tuple

from mtssl_tf.tasks.base import Task

# name -> (module, class). The order is the paper's: RP, Col, Ex, MS.
_REGISTRY: Dict[str, Tuple[str, str]] = {
    "relative_position": ("mtssl_tf.tasks.relative_position", "RelativePosition"),
    "colorization": ("mtssl_tf.tasks.colorization", "Colorization"),
    "exemplar": ("mtssl_tf.tasks.exemplar", "Exemplar"),
    "motion_segmentation": ("mtssl_tf.tasks.motion_segmentation",
                            "MotionSegmentation"),
}

TASK_NAMES = tuple(_REGISTRY)
# Short names used in the paper's tables and in preset names.
ABBREVIATIONS = {"relative_position": "RP", "colorization": "Col",
                 "exemplar": "Ex", "motion_segmentation": "MS"}


def check_task_name(name: str) -> str:
  """Returns ``name`` or raises ``ValueError`` listing the known names."""
  if name not in _REGISTRY:
    raise ValueError(
        f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
  return name


def get_task_class(name: str) -> type:
  module, cls = _REGISTRY[check_task_name(name)]
  return getattr(importlib.import_module(module), cls)


def import_all() -> None:
  """Imports every task module, registering their Keras heads (needed by
  ``keras.models.load_model`` for files that hold heads)."""
  for module, _ in _REGISTRY.values():
    importlib.import_module(module)


def get_task(name: str, **params: Any) -> Task:
  """Builds the task ``name`` with ``params`` (paper defaults otherwise)."""
  return get_task_class(name)(**params)


__all__ = ["import_all", "Task", "TASK_NAMES", "ABBREVIATIONS", "check_task_name",
           "get_task_class", "get_task"]
