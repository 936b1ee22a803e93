"""Self-supervised tasks, looked up by name.

>>> from mtssl_tf import tasks
>>> task = tasks.get_task("relative_position", patch_size=32)

Modules are imported on first use so that ``import mtssl_tf`` stays cheap.

Adding a task: subclass :class:`Task` (see ``tasks/task.py`` for the
interface and the data flow), give it a unique ``name``, register its head
with ``keras.saving.register_keras_serializable`` so that ``.keras`` files
reload, and register the task::

    from mtssl_tf import tasks

    @tasks.register_task
    class Rotation(tasks.Task):
      name = "rotation"
      ...

From then on ``get_task("rotation")``, :class:`~mtssl_tf.config.TrainConfig`
(``tasks=("relative_position", "rotation")``), the multi-task model and the
trainer accept it like the paper's four; with a ``headline_metric`` and
``heldout_scores`` (see ``tasks/task.py``) the held-out pretext evaluation
scores it too. The task's own tests need only its
specific maths: ``tests/harness.py`` holds the generic checks, which
``tests/test_task_contract.py`` runs over every registered task
(``tests/rotation_task.py`` is such a task, registered from the tests).
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Optional, Tuple, Union

from mtssl_tf.tasks.task import PrepareContext, Task

# name -> (module, class) of the package's tasks, imported on first use, or
# the class itself for a task registered with register_task. The order is
# the paper's: RP, Col, Ex, MS, then registered tasks.
_REGISTRY: Dict[str, Union[Tuple[str, str], type]] = {
    "relative_position": ("mtssl_tf.tasks.relative_position", "RelativePosition"),
    "colorization": ("mtssl_tf.tasks.colorization", "Colorization"),
    "exemplar": ("mtssl_tf.tasks.exemplar", "Exemplar"),
    "motion_segmentation": ("mtssl_tf.tasks.motion_segmentation",
                            "MotionSegmentation"),
}

# The paper's four tasks (the default task list of a run); registered tasks
# are not added here: see task_names().
TASK_NAMES = tuple(_REGISTRY)
# Short names used in the paper's tables and in preset names.
ABBREVIATIONS = {"relative_position": "RP", "colorization": "Col",
                 "exemplar": "Ex", "motion_segmentation": "MS"}


def task_names() -> Tuple[str, ...]:
  """Every registered task's name: the paper's four, then added tasks."""
  return tuple(_REGISTRY)


def check_task_name(name: str) -> str:
  """Returns ``name`` or raises ``ValueError`` listing the known names."""
  if name not in _REGISTRY:
    raise ValueError(
        f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
  return name


def register_task(cls: Optional[type] = None, *,
                  abbreviation: Optional[str] = None):
  """Registers a :class:`Task` subclass under its ``name``.

  Usable as a call, ``register_task(Rotation)``, or as a decorator, with
  or without arguments (``@register_task(abbreviation="Rot")``).

  Args:
    cls: the task class; its ``name`` class attribute is the registry key.
    abbreviation: the short name used in preset and table labels; the task
      name if not given.

  Returns:
    ``cls`` (so the function works as a decorator).

  Raises:
    TypeError: ``cls`` is not a subclass of :class:`Task`.
    ValueError: the class has no ``name``, or the name is taken by another
      class (registering the same class again is allowed).
  """
  if cls is None:
    return lambda c: register_task(c, abbreviation=abbreviation)
  if not (isinstance(cls, type) and issubclass(cls, Task)):
    raise TypeError(f"register_task needs a subclass of mtssl_tf.tasks.Task, "
                    f"got {cls!r}")
  name = cls.name
  if not name or not isinstance(name, str):
    raise ValueError(f"{cls.__name__} must set the class attribute `name` "
                     "(the task's registry name)")
  if name in _REGISTRY and _REGISTRY[name] is not cls:
    raise ValueError(
        f"task name {name!r} is already registered (by "
        f"{_describe(_REGISTRY[name])}); choose another name for "
        f"{cls.__module__}.{cls.__qualname__}")
  _REGISTRY[name] = cls
  ABBREVIATIONS.setdefault(name, abbreviation or name)
  return cls


def _describe(entry) -> str:
  if isinstance(entry, tuple):
    return ".".join(entry)
  return f"{entry.__module__}.{entry.__qualname__}"


def get_task_class(name: str) -> type:
  entry = _REGISTRY[check_task_name(name)]
  if isinstance(entry, type):
    return entry
  module, cls = entry
  return getattr(importlib.import_module(module), cls)


def import_all() -> None:
  """Imports every task module, registering their Keras heads (needed by
  ``keras.models.load_model`` for files that hold heads)."""
  for entry in list(_REGISTRY.values()):
    if isinstance(entry, tuple):
      importlib.import_module(entry[0])


def get_task(name: str, **params: Any) -> Task:
  """Builds the task ``name`` with ``params`` (paper defaults otherwise)."""
  return get_task_class(name)(**params)


__all__ = ["import_all", "PrepareContext", "Task", "TASK_NAMES", "ABBREVIATIONS", "check_task_name",
           "get_task_class", "get_task", "register_task", "task_names"]
