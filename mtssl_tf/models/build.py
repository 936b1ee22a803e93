"""One way to rebuild a :class:`~mtssl_tf.models.multitask.MultiTaskModel`
from a configuration, whatever form the configuration has.

Three places describe a model: a :class:`~mtssl_tf.config.TrainConfig` (a
run being trained), a run folder's ``config.json`` (the same config as a
dict, read back by export and evaluation) and a model-zoo preset's metadata,
whose ``"model"`` entry is the model's own ``get_config()``. Training,
export, evaluation, the zoo and the benchmarks all call :func:`build_model`
so that the same description always gives the same network.

Example:
  >>> model = build_model(config)                        # a TrainConfig
  >>> model = build_model(json.load(open("runs/demo/config.json")))
  >>> model = build_model(meta["model"], task_order=meta["tasks"])
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import constructor_kwargs


def _from_run_config(config: Mapping[str, Any]) -> Dict[str, Any]:
  """MultiTaskModel kwargs from a run's ``config.json`` (``TrainConfig.
  to_dict()``), as :meth:`TrainConfig.model_kwargs` makes them."""
  missing = [k for k in ("trunk", "tasks", "task_params", "lasso")
             if k not in config]
  if missing:
    raise ValueError(f"the run config lacks {', '.join(missing)}: not a "
                     "config.json written by mtssl_tf.train")
  params = config["task_params"] or {}
  return {
      "trunk": dict(config["trunk"]),
      "tasks": {n: dict(params.get(n, {})) for n in config["tasks"]},
      "mixer": ({"l1": config.get("lasso_l1", 1e-2),
                 "init": config.get("lasso_init", "ramp")}
                if config["lasso"] else None),
  }


def model_kwargs(source: Any) -> Dict[str, Any]:
  """The :class:`MultiTaskModel` keyword arguments ``source`` describes.

  Args:
    source: a :class:`~mtssl_tf.config.TrainConfig`; a run's ``config.json``
      as a dict (it has ``task_params``); or a model config
      (``MultiTaskModel.get_config()``, the zoo metadata's ``"model"``: its
      ``tasks`` is a dict of task name -> task kwargs).

  Raises:
    ValueError: ``source`` is none of these.
  """
  if hasattr(source, "model_kwargs") and callable(source.model_kwargs):
    return source.model_kwargs()
  if not isinstance(source, Mapping):
    raise ValueError(
        f"build_model takes a TrainConfig, a run's config.json dict or a "
        f"model config dict; got {type(source).__name__}")
  if "task_params" in source:
    return _from_run_config(source)
  if isinstance(source.get("tasks"), Mapping) and "trunk" in source:
    kwargs = constructor_kwargs(source)
    kwargs.pop("name", None)
    kwargs["tasks"] = {n: dict(v or {}) for n, v in kwargs["tasks"].items()}
    return kwargs
  raise ValueError(
      "build_model: the dict is neither a run config (config.json, with "
      "task_params) nor a model config (trunk, tasks as a dict, mixer); "
      f"its keys: {', '.join(sorted(source))}")


def build_model(source: Any, *, task_order: Optional[Sequence[str]] = None,
                name: str = "mtssl") -> MultiTaskModel:
  """The multi-task model (fresh weights) that ``source`` describes.

  Args:
    source: see :func:`model_kwargs`.
    task_order: the same task names in another order (e.g. a preset's
      order, for display): the model's tasks, mixer rows and plots follow
      it. Weights are matched to tasks by name (checkpoints and weight
      files), so the order never decides which weights a task gets.
    name: the Keras model's name.

  Returns:
    A :class:`~mtssl_tf.models.multitask.MultiTaskModel`.

  Raises:
    ValueError: ``source`` is not a model description, or ``task_order``
      names other tasks (the message names them).
  """
  kwargs = model_kwargs(source)
  if task_order is not None:
    tasks = kwargs["tasks"]
    order = list(task_order)
    if sorted(order) != sorted(tasks):
      raise ValueError(
          f"task_order {order} does not name the model's tasks "
          f"{list(tasks)}: missing {sorted(set(tasks) - set(order))}, "
          f"unknown {sorted(set(order) - set(tasks))}")
    kwargs["tasks"] = {t: tasks[t] for t in order}
  return MultiTaskModel(**kwargs, name=name)


__all__ = ["build_model", "model_kwargs"]
