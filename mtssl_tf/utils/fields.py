"""Config dataclass fields that carry their flag and their allowed values,
and the one routine that checks them.

A field is declared once, with :func:`option`: its default, help text, flag
name, allowed values (``choices``) and bounds (``minimum``, ``above``,
``maximum``). The command-line flags are made from this metadata
(:mod:`mtssl_tf.options`), and :func:`check_fields` checks every field of a
config against it; a dataclass's ``__post_init__`` adds only the checks that
relate two fields.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class C:
...   steps: int = option(10, "Steps.", minimum=1)
...   def __post_init__(self):
...     check_fields(self)
>>> C(steps=0)
Traceback (most recent call last):
...
ValueError: steps=0 must be an integer >= 1
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Optional, Tuple, Type

_BOUNDS = (("minimum", ">=", lambda v, b: v >= b),
           ("above", ">", lambda v, b: v > b),
           ("maximum", "<=", lambda v, b: v <= b),
           ("below", "<", lambda v, b: v < b))


def option(default: Any, help: str, *, flag: Optional[str] = None,
           choices: Tuple[Any, ...] = (),
           flag_default: Any = dataclasses.MISSING,
           flag_item: Optional[type] = None, **bounds: Any) -> Any:
  """A dataclass field that carries its command-line flag and its checks.

  Args:
    default: the field's default (``dataclasses.MISSING``: required).
    help: the flag's help text.
    flag: the flag's name where it differs from the field's.
    choices: the allowed values (of each item, for a tuple field).
    flag_default: the flag's default for a required field (the field itself
      has none: a config must name it).
    flag_item: the item type of a list flag, where it differs from the
      field's (``task_weights`` takes ``task=weight`` strings).
    **bounds: ``minimum`` (>=), ``above`` (>), ``maximum`` (<=), ``below``
      (<): bounds of a number (of each item, for a tuple field).
  """
  unknown = set(bounds) - {b[0] for b in _BOUNDS}
  if unknown:
    raise TypeError(f"unknown bounds {sorted(unknown)}")
  metadata = dict(bounds, help=help, choices=tuple(choices))
  if flag is not None:
    metadata["flag"] = flag
  if flag_default is not dataclasses.MISSING:
    metadata["flag_default"] = flag_default
  if flag_item is not None:
    metadata["flag_item"] = flag_item
  return dataclasses.field(default=default, metadata=metadata)


def _number_type(hint) -> Optional[type]:
  """int or float for a (tuple of, optional) number hint, else None."""
  args = [a for a in typing.get_args(hint) if a not in (type(None), Ellipsis)]
  if typing.get_origin(hint) is not None and args:
    return _number_type(args[0])
  return hint if hint in (int, float) else None


def _problem(value: Any, number: Optional[type], meta) -> Optional[str]:
  """What is wrong with one value (an item of a tuple field), or None."""
  choices = meta.get("choices") or ()
  if choices and value not in choices:
    return "; allowed: " + ", ".join(str(c) for c in choices)
  if number is None:
    return None
  bounds = [(word, bound, ok) for key, word, ok in _BOUNDS
            for bound in [meta.get(key)] if bound is not None]
  is_int = isinstance(value, int) and not isinstance(value, bool)
  is_number = (is_int or isinstance(value, float)) and not (
      isinstance(value, float) and math.isnan(value))
  kind = "an integer" if number is int else "a number"
  valid = is_int if number is int else is_number
  if not valid or not all(ok(value, bound) for _, bound, ok in bounds):
    return f" must be {kind}" + "".join(
        f"{' and' if i else ''} {word} {bound}"
        for i, (word, bound, _) in enumerate(bounds))
  return None


def check_fields(obj: Any, error: Type[Exception] = ValueError,
                 prefix: str = "") -> None:
  """Checks each field of the dataclass ``obj`` that :func:`option`
  declared: a value in its ``choices``, a number of the field's type within
  its bounds (None passes where the field is optional).

  Raises:
    error: naming the flag (``prefix`` + its name), the value and what is
      allowed, e.g. ``steps=0 must be an integer >= 1``.
  """
  hints = typing.get_type_hints(type(obj))
  for f in dataclasses.fields(obj):
    meta = f.metadata
    if "help" not in meta:
      continue
    hint, value = hints[f.name], getattr(obj, f.name)
    if value is None and type(None) in typing.get_args(hint):
      continue
    number = _number_type(hint)
    name = prefix + meta.get("flag", f.name)
    if isinstance(value, (tuple, list)):
      for item in value:
        problem = _problem(item, number, meta)
        if problem:
          raise error(f"{name}: {item!r} in {list(value)}{problem}")
    else:
      problem = _problem(value, number, meta)
      if problem:
        raise error(f"{name}={value!r}{problem}")


__all__ = ["check_fields", "option"]
