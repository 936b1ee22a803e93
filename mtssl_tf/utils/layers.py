"""Walking a Keras layer's sub-layers through public attributes only."""
from __future__ import annotations

from typing import Iterator, List

import keras


def _children(value) -> Iterator[keras.layers.Layer]:
  if isinstance(value, keras.layers.Layer):
    yield value
  elif isinstance(value, dict):
    for item in value.values():
      yield from _children(item)
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from _children(item)


def sublayers(layer: keras.layers.Layer,
              include_self: bool = True) -> List[keras.layers.Layer]:
  """Every layer inside ``layer`` (attributes, and lists/tuples/dicts of
  layers, recursively), each once, in attribute order; ``layer`` first when
  ``include_self``. Keras keeps its own walk private,
  so this one reads the layer's attributes instead."""
  seen = {id(layer)}
  found = [layer] if include_self else []
  stack = [layer]
  while stack:
    current = stack.pop(0)
    for name, value in vars(current).items():
      if name.startswith("__"):
        continue
      for child in _children(value):
        if id(child) not in seen:
          seen.add(id(child))
          found.append(child)
          stack.append(child)
  return found
