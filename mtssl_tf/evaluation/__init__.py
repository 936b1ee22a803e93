"""Downstream evaluators, looked up by name.

Doersch & Zisserman (ICCV 2017) measure a pre-trained trunk three ways: a
frozen linear probe on ImageNet, PASCAL VOC detection and NYU depth. Each is
an :class:`~mtssl_tf.evaluation.interface.Evaluator` whose ``run(trunk, ...)``
yields ``(metric, value)`` pairs.

>>> from mtssl_tf import evaluation
>>> probe = evaluation.get_evaluator("linear_probe", data="digits",
...                                  image_size=32)
>>> for name, value in probe.run(trunk):
...   print(name, value)

Modules are imported on first use so that ``import mtssl_tf`` stays cheap
(the detection evaluator pulls in the Model Garden).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Dict, List, Tuple

from mtssl_tf.evaluation.interface import Evaluator

# name -> (module, class), in the order of the paper's tables.
_REGISTRY: Dict[str, Tuple[str, str]] = {
    "linear_probe": ("mtssl_tf.evaluation.linear_probe", "LinearProbe"),
    "detection": ("mtssl_tf.evaluation.detection", "DetectionEvaluator"),
    "depth": ("mtssl_tf.evaluation.depth", "DepthEvaluator"),
}

EVALUATOR_NAMES = tuple(_REGISTRY)


def check_evaluator_name(name: str) -> str:
  """Returns ``name`` or raises ``ValueError`` listing the known names."""
  if name not in _REGISTRY:
    raise ValueError(
        f"unknown evaluator {name!r}; known evaluators: "
        f"{', '.join(EVALUATOR_NAMES)}")
  return name


def get_evaluator_class(name: str) -> type:
  module, cls = _REGISTRY[check_evaluator_name(name)]
  return getattr(importlib.import_module(module), cls)


def evaluator_params(name: str) -> List[str]:
  """The keyword arguments that evaluator ``name`` accepts."""
  signature = inspect.signature(get_evaluator_class(name).__init__)
  return [p for p, v in signature.parameters.items()
          if p != "self" and v.kind in (v.POSITIONAL_OR_KEYWORD,
                                        v.KEYWORD_ONLY)]


def get_evaluator(name: str, **params: Any) -> Evaluator:
  """Builds evaluator ``name`` with ``params`` (paper defaults otherwise).

  Raises:
    ValueError: an unknown evaluator, or a parameter it does not take (the
      message lists the ones it does).
  """
  allowed = evaluator_params(name)
  unknown = sorted(set(params) - set(allowed))
  if unknown:
    raise ValueError(
        f"evaluator {name} has no parameter {', '.join(unknown)}; it takes: "
        f"{', '.join(allowed)}")
  return get_evaluator_class(name)(**params)


__all__ = ["Evaluator", "EVALUATOR_NAMES", "check_evaluator_name",
           "evaluator_params", "get_evaluator_class", "get_evaluator"]
