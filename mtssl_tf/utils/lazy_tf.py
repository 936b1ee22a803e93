"""TensorFlow, imported on first use.

The models (trunk, UnitMixer, the tasks' heads) are Keras 3 code that runs
under any Keras backend; the data pipelines, the trainer, export and serving
are TensorFlow. Modules that hold both import ``tf`` from here, so that
``import mtssl_tf`` and loading a zoo model work where TensorFlow is not
installed (a JAX or PyTorch environment), and a TensorFlow-only function
called there raises an ``ImportError`` that says what to install.

>>> from mtssl_tf.utils.lazy_tf import tf
>>> tf.constant(1.0)   # imports tensorflow here, not at module import
"""
from __future__ import annotations

import importlib
import types

INSTALL_HINT = ("pip install tensorflow==2.20.0 (or the package with its "
                "default dependencies: pip install -e .)")


def missing_tensorflow(what: str) -> ImportError:
  """The error for ``what`` (a module, a function) used without TensorFlow."""
  return ImportError(
      f"{what} (data pipelines, training, export, serving) needs "
      f"TensorFlow, which is not installed here: {INSTALL_HINT}. The models "
      f"themselves (Trunk.from_preset, keras.models.load_model of a zoo "
      f".keras file) run under any Keras backend without it.")


class _LazyModule(types.ModuleType):
  """A module proxy that imports ``name`` when an attribute is first read."""

  def __init__(self, name: str):
    super().__init__(name)
    self._module = None

  def _load(self) -> types.ModuleType:
    if self._module is None:
      try:
        self._module = importlib.import_module(self.__name__)
      except ImportError as e:
        raise missing_tensorflow("This part of mtssl_tf") from e
    return self._module

  def __getattr__(self, attr: str):
    if attr.startswith("__") and attr.endswith("__"):
      raise AttributeError(attr)
    return getattr(self._load(), attr)

  def __dir__(self):
    return dir(self._load())


tf = _LazyModule("tensorflow")


def tensorflow_available() -> bool:
  """Whether TensorFlow imports in this environment."""
  try:
    tf._load()  # pylint: disable=protected-access
  except ImportError:
    return False
  return True


__all__ = ["tf", "tensorflow_available", "missing_tensorflow", "INSTALL_HINT"]
