"""The multi-task network: one shared trunk, an optional UnitMixer, one head
per self-supervised task.

Doersch & Zisserman (ICCV 2017), Fig. 1: all tasks share a ResNet-101 v2
trunk through block 3; with the "lasso" each head reads its own mix of the
block-3 units, otherwise every head reads the last unit.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import keras

from mtssl_tf import tasks as tasks_lib
from mtssl_tf.layers.unit_mixer import UnitMixer
from mtssl_tf.utils.layers import sublayers
from mtssl_tf.models.trunk import Trunk, constructor_kwargs


def _synchronize_batch_norm(layer: keras.layers.Layer) -> None:
  """Makes every BatchNormalization inside ``layer`` synchronise its batch
  statistics across replicas, as the trunk's do when ``sync_bn`` is set
  (heads are built by the tasks, which do not know the trunk's setting)."""
  for sub in sublayers(layer):
    if isinstance(sub, keras.layers.BatchNormalization):
      sub.synchronized = True


@keras.saving.register_keras_serializable(package="mtssl_tf")
class MultiTaskModel(keras.Model):
  """Shared trunk + UnitMixer + task heads.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017.

  Args:
    trunk: keyword arguments of :class:`~mtssl_tf.models.Trunk`.
    tasks: task name -> keyword arguments of that task (see
      :func:`mtssl_tf.tasks.get_task`); the order is kept.
    mixer: ``None`` (no lasso: heads read the last block-3 unit) or keyword
      arguments of :class:`~mtssl_tf.layers.UnitMixer` other than
      ``task_names`` and ``num_units`` (e.g. ``{"l1": 1e-3}``).

  Call:
    ``model(inputs, task=name, training=...)`` runs the task's inputs
    (batched, as its data op makes them) through the trunk, the task's mix
    and its head; returns the head's outputs.

  Example:
    >>> model = MultiTaskModel(trunk={"depth": 26, "width": 0.25},
    ...                        tasks={"colorization": {"crop_size": 32}},
    ...                        mixer={"l1": 1e-3})
    >>> logits = model(images, task="colorization")
  """

  def __init__(self, trunk: Mapping[str, Any],
               tasks: Mapping[str, Mapping[str, Any]],
               mixer: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    if not tasks:
      raise ValueError("MultiTaskModel needs at least one task")
    self.trunk_kwargs = dict(trunk)
    self.trunk = Trunk(**self.trunk_kwargs)
    self.task_objects = {
        name: tasks_lib.get_task(name, **dict(cfg or {}))
        for name, cfg in tasks.items()}
    self.task_names = list(self.task_objects)
    self.mixer_kwargs = None if mixer is None else dict(mixer)
    channels = self.trunk.output_channels
    if mixer is not None:
      self.mixer = UnitMixer(self.task_names,
                             num_units=len(self.trunk.unit_names),
                             name="unit_mixer", **self.mixer_kwargs)
    else:
      self.mixer = None
    self.heads = {}
    for name, task in self.task_objects.items():
      head = task.build_head()
      head.build(self._head_input_shape(task, channels))
      if self.trunk.config.sync_bn:
        _synchronize_batch_norm(head)
      self.heads[name] = head
    self.built = True

  def _head_input_shape(self, task, channels: int):
    """[N, h, w, C] of the features the task's head reads. h and w are known
    only for tasks with a fixed input size (``trunk_image_shape``); heads
    that need them (RP's ``pooling="flatten"``) are built with them."""
    shape_fn = getattr(task, "trunk_image_shape", None)
    if shape_fn is None:
      return (None, None, None, channels)
    outputs = self.trunk.compute_output_shape((None,) + tuple(shape_fn()))
    h, w = outputs[self.trunk.unit_names[-1]][1:3]
    return (None, h, w, channels)

  @property
  def tasks(self) -> Dict[str, tasks_lib.Task]:
    return dict(self.task_objects)

  def _check_task(self, task: Optional[str]) -> None:
    if task is None:
      raise ValueError(
          f"model(inputs) needs task=<one of {', '.join(self.task_names)}>: "
          "it runs that task's head on the task's inputs. For features of "
          "images use model.features(images) (the deepest block-3 unit; "
          "task=<name> gives that task's lasso mix), or "
          "model.trunk.features_model() for a single-output Keras model")
    if task not in self.task_objects:
      raise ValueError(
          f"task {task!r} is not in this model; its tasks: "
          f"{', '.join(self.task_names)}")

  def features(self, images, task: Optional[str] = None, training=False):
    """Block-3 features for ``task``: its mix, or the last unit."""
    outputs = self.trunk(images, training=training)
    if self.mixer is None or task is None:
      return outputs[self.trunk.unit_names[-1]]
    units = [outputs[n] for n in self.trunk.unit_names]
    return self.mixer(units, task=task)

  def call(self, inputs, task: Optional[str] = None, training=False):
    self._check_task(task)
    task_obj = self.task_objects[task]
    images = task_obj.trunk_images(inputs)
    features = self.features(images, task, training=training)
    return self.heads[task](features, training=training)

  def trunk_variables(self):
    return self.trunk.trainable_variables

  def get_config(self):
    return {"name": self.name, "trunk": self.trunk_kwargs,
            "tasks": {n: t.get_config() for n, t in self.task_objects.items()},
            "mixer": self.mixer_kwargs}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**constructor_kwargs(config))

  @classmethod
  def from_preset(cls, name: str, **kwargs) -> "MultiTaskModel":
    """A model-zoo preset with its weights, sha256-checked (keras-hub's
    ``from_preset`` convention).

    The same as :func:`mtssl_tf.model_zoo.load`, with the same checks and
    keyword arguments (``weights``, ``weights_dir``, ``sha256``).

    Example:
      >>> model = MultiTaskModel.from_preset("rp_col")
      >>> model.features(images, task="colorization")
    """
    from mtssl_tf import model_zoo  # pylint: disable=g-import-not-at-top
    return model_zoo.load(name, **kwargs)
