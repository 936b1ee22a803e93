"""Each task's parameters as a typed, frozen dataclass.

A task declares its parameters once, as its constructor's arguments (name,
type hint, default). :func:`config_class` reads them into a frozen
dataclass, ``RelativePositionConfig`` for ``RelativePosition``; a task may
instead set its own dataclass as the class attribute ``Config``. The
command-line flags of a task (``--relative_position.gap=8``,
:mod:`mtssl_tf.options`) are made from this dataclass's fields, typed as
they are.

>>> from mtssl_tf import tasks
>>> fields = dataclasses.fields(config_class(tasks.get_task_class(
...     "relative_position")))
>>> [(f.name, f.type, f.default) for f in fields][:2]
[('patch_size', <class 'int'>, 96), ('gap', <class 'int'>, 48)]
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Any


@functools.lru_cache(maxsize=None)
def config_class(task_cls: type) -> type:
  """The frozen dataclass of ``task_cls``'s parameters: its ``Config``
  attribute where that is a dataclass, else one made from the constructor's
  keyword arguments (a parameter without a default is a required field)."""
  own = getattr(task_cls, "Config", None)
  if own is not None and dataclasses.is_dataclass(own):
    return own
  hints = typing.get_type_hints(task_cls.__init__)
  fields = []
  for param in inspect.signature(task_cls.__init__).parameters.values():
    if param.name == "self" or param.kind in (param.VAR_POSITIONAL,
                                              param.VAR_KEYWORD):
      continue
    default = (dataclasses.MISSING if param.default is param.empty
               else param.default)
    fields.append((param.name, hints.get(param.name, Any),
                   dataclasses.field(default=default)))
  return dataclasses.make_dataclass(f"{task_cls.__name__}Config", fields,
                                    frozen=True)


__all__ = ["config_class"]
