"""Maintainer tooling of the model zoo (not installed): building presets
into a zoo folder (by default the checkout's ``model_zoo/``), storing their
weights as float16 where that is safe, registering ``.keras`` files.

>>> from tools import zoo
>>> meta = zoo.build_preset("rp", tiny=True, steps=2,
...                         weights_dir="/tmp/zoo")  # in-process

* :mod:`~tools.zoo.builder`: :func:`build_preset`, :func:`build_presets`
  (trains in this process with the Trainer, or imports a finished run with
  ``from_run``);
* :mod:`~tools.zoo.float16`: :func:`write_weights`,
  :func:`float16_refusal`;
* :mod:`~tools.zoo.register`: :func:`register`;
* :mod:`~tools.zoo.zoo_cli`: ``python -m tools.zoo build|register``.
"""
from tools.zoo.builder import (FROM_RUN_ALLOWED, build_preset, build_presets,
                               from_run_differences, read_pretext_metrics)
from tools.zoo.float16 import float16_refusal, write_weights
from tools.zoo.register import register

__all__ = ["FROM_RUN_ALLOWED", "build_preset", "build_presets",
           "float16_refusal", "from_run_differences", "read_pretext_metrics",
           "register", "write_weights"]
