"""The export library: a ``.keras`` file and a TF Serving SavedModel.

The command ``python -m mtssl_tf.export`` (:mod:`mtssl_tf.export`) calls
:func:`export_model` on a run's model (:func:`load_run_model`, re-exported
from :mod:`mtssl_tf.training.run_checkpoints`). It writes, atomically (into a
temporary folder, then renamed):

* ``<export_dir>/<model_name>.keras``: the whole multi-task model (trunk,
  UnitMixer, heads); ``keras.models.load_model`` opens it after
  ``import mtssl_tf``.
* ``<export_dir>/<model_name>/<version>/``: a SavedModel in TF Serving's
  layout whose ``serving_default`` signature takes uint8 images
  ``[N, H, W, 3]`` of any size and returns ``pooled`` [N, C] (global average
  of block 3's last unit), ``block3`` [N, h, w, C], and, when the model has a
  UnitMixer, ``mixed_<task>`` [N, h, w, C] for each task.

  The same SavedModel is also a *reusable* SavedModel (the TF Hub
  convention) for fine-tuning the trunk: ``__call__(images,
  training=False)`` on float32 RGB ``[N, H, W, 3]`` in [0, 255] (any size,
  not resized) returns the pooled block-3 vector [N, C], beside the lists
  ``variables`` (the trunk's, batch-norm moving statistics included),
  ``trainable_variables`` and ``regularization_losses``; the endpoints
  ``call_inference`` and ``call_training`` (batch norm in training mode:
  batch statistics, moving statistics updated) serve Keras 3's
  ``keras.layers.TFSMLayer(path, call_endpoint="call_inference",
  call_training_endpoint="call_training")``. ``tensorflow_hub.KerasLayer(
  path, trainable=True)`` (tf_keras) uses ``__call__``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict

import tensorflow as tf

from mtssl_tf.models.multitask import MultiTaskModel
# The one way to load a run's checkpoint; re-exported because exporting a run starts with it.
from mtssl_tf.training.run_checkpoints import load_run_model  # noqa: F401
from mtssl_tf.training.run_checkpoints import is_disk_full

DEFAULT_IMAGE_SIZE = 224


_FLOAT_IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32,
                              name="images")


def _check_images(images: tf.Tensor) -> tf.Tensor:
  """``images`` behind in-graph checks of its channel count and size."""
  # The signature wrapper that TF Serving runs feeds tensors without
  # checking them against the input spec: without these checks a wrong
  # channel count or an empty batch fails deep inside the trunk
  # ("Incompatible shapes ..."). A wrong rank is reported by the resize
  # ("input must be 4-dimensional") or by tf.function's input spec.
  shape = tf.shape(images)
  checks = [
      tf.debugging.assert_equal(
          shape[-1], 3, message="images must have 3 (RGB) channels, "
                                "[N, H, W, 3]; convert grey or RGBA images "
                                "to RGB first"),
      tf.debugging.assert_greater(
          tf.reduce_min(shape[:3]), 0,
          message="images must be a non-empty batch [N, H, W, 3] with N, "
                  "H, W >= 1"),
  ]
  with tf.control_dependencies(checks):
    return tf.identity(images)


def _regularization_loss(variable) -> tf.types.experimental.PolymorphicFunction:
  """A zero-argument function: ``variable``'s regularization penalty."""
  regularizer = variable.regularizer
  return tf.function(lambda: regularizer(variable), input_signature=[])


class FeatureExtractor(tf.Module):
  """The serving module: uint8 images of any size -> trunk features; also a
  reusable (fine-tunable) SavedModel of the trunk.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017: the features are the shared trunk's block 3 (the
  representation every evaluation reads) and, with the lasso, each task's
  mix of the block-3 units.

  Besides ``serve`` (the ``serving_default`` signature), the module follows
  the TF Hub reusable-SavedModel convention so that the loaded SavedModel
  can be fine-tuned: ``__call__(images, training=False)``, ``variables``,
  ``trainable_variables`` and ``regularization_losses``; and it has the two
  single-input endpoints Keras 3's ``TFSMLayer`` calls, ``call_inference``
  and ``call_training``. All of them take float32 RGB in [0, 255] at the
  caller's size (no resize: the trunk is fully convolutional) and return
  the pooled block-3 vector [N, C].

  Args:
    model: the multi-task model whose trunk (and UnitMixer) is served.
    image_size: every image is resized (bilinear, antialiased) to this square
      size before the trunk in ``serve``, so requests may hold images of any
      size.

  Example:
    >>> module = FeatureExtractor(model, image_size=224)
    >>> out = module.serve(tf.zeros([2, 300, 400, 3], tf.uint8))
    >>> sorted(out)  # without a UnitMixer
    ['block3', 'pooled']
    >>> module(tf.zeros([2, 64, 64, 3]), training=False).shape  # [2, C]
  """

  # The reusable-SavedModel convention stores these three lists under these
  # names; tf.Module defines ``variables`` and ``trainable_variables`` as
  # read-only properties (every variable the module reaches, heads
  # included), so the class shadows them with plain attributes that hold
  # the trunk's only: fine-tuning must not see the pre-training heads.
  variables = None
  trainable_variables = None
  regularization_losses = None

  def __init__(self, model: MultiTaskModel,
               image_size: int = DEFAULT_IMAGE_SIZE):
    super().__init__(name="feature_extractor")
    self.model = model
    self.image_size = int(image_size)
    trunk = model.trunk
    self.variables = list(trunk.variables)
    self.trainable_variables = list(trunk.trainable_variables)
    # One zero-argument function per regularized trunk weight (TF Hub sums
    # them into the fine-tuning loss). The package's trunks are built
    # without regularizers (no config sets one), so for them it is empty.
    self.regularization_losses = [
        _regularization_loss(v) for v in trunk.weights
        if getattr(v, "regularizer", None) is not None]

  def features(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """uint8 images [N, H, W, 3] -> ``pooled``, ``block3``, ``mixed_<task>``."""
    images = _check_images(images)
    x = tf.image.resize(tf.cast(images, tf.float32),
                        [self.image_size, self.image_size],
                        method="bilinear", antialias=True)
    outputs = self.model.trunk(x, training=False)
    units = [outputs[n] for n in self.model.trunk.unit_names]
    block3 = units[-1]
    result = {"block3": block3,
              "pooled": tf.reduce_mean(block3, axis=[1, 2])}
    if self.model.mixer is not None:
      for task, mixed in self.model.mixer(units).items():
        result[f"mixed_{task}"] = mixed
    return result

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  def serve(self, images):
    """The ``serving_default`` signature: uint8 RGB [N, H, W, 3] only.

    A signature declares one dtype and shape per input, and TF Serving
    converts nothing, so what the Keras trunk converts (floats, grey
    [N, H, W] or [N, H, W, 1], RGBA) is refused here: other dtypes by the
    signature, other shapes and empty batches by the checks inside the
    graph or by the resize. Clients convert first
    (:func:`mtssl_tf.serving.client.check_images` says how;
    :func:`~mtssl_tf.serving.client.load_images` reads files as RGB).
    """
    return self.features(images)

  def pooled(self, images: tf.Tensor, training: bool) -> tf.Tensor:
    """float32 RGB [N, H, W, 3] in [0, 255] -> pooled block 3 [N, C]."""
    outputs = self.model.trunk(_check_images(images), training=training)
    return tf.reduce_mean(outputs[self.model.trunk.unit_names[-1]],
                          axis=[1, 2])

  # ``training`` is a Python bool: one graph per value, both traced by
  # trace_reusable() before saving, as the TF Hub convention requires.
  @tf.function
  def __call__(self, images, training=False):
    return self.pooled(images, training=training)

  @tf.function(input_signature=[_FLOAT_IMAGES])
  def call_inference(self, images):
    return self.pooled(images, training=False)

  @tf.function(input_signature=[_FLOAT_IMAGES])
  def call_training(self, images):
    return self.pooled(images, training=True)

  def trace_reusable(self) -> None:
    """Traces ``__call__`` for ``training`` False and True so that both
    graphs are saved (a tf.function is saved with its traced graphs only)."""
    for training in (False, True):
      self.__call__.get_concrete_function(_FLOAT_IMAGES, training=training)


def _atomic_replace(tmp_path: str, final_path: str) -> None:
  """Moves a finished ``tmp_path`` to ``final_path`` by renames only.

  A folder cannot be renamed over an existing one, so an old export is first
  moved aside (TF Serving ignores non-numeric folder names such as
  ``1.old``) and put back if the second rename fails.
  """
  if os.path.isdir(final_path):
    old = final_path + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.rename(final_path, old)
    try:
      os.rename(tmp_path, final_path)
    except BaseException:
      os.rename(old, final_path)
      raise
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp_path, final_path)


class ExportWriteError(OSError):
  """Writing an export failed (a full disk, a lost mount); the message names
  what was being written, the cause, and what the export folder holds."""


def export_model(model: MultiTaskModel, export_dir: str, model_name: str,
                 version: int = 1,
                 image_size: int = DEFAULT_IMAGE_SIZE) -> Dict[str, str]:
  """Writes the ``.keras`` file and the SavedModel; returns their paths.

  Both are written under temporary names in their final folders first and
  renamed into place only once both are complete, so an interrupted export
  (an exception, Ctrl-C, a full disk) leaves the previous export, if any,
  as it was and no half-written file or ``<model_name>/<version>`` folder.
  A write that fails (``OSError``, or TensorFlow's ``ResourceExhaustedError``
  for a full disk) is reported as :class:`ExportWriteError`.

  Args:
    model: the multi-task model (its trunk and mixer are exported).
    export_dir: folder of the exports.
    model_name: file name of the ``.keras`` file and folder name of the
      SavedModel (TF Serving's ``MODEL_NAME``).
    version: SavedModel version folder (a positive integer).
    image_size: serving resizes every image to ``image_size`` squared.

  Returns:
    ``{"keras": <path of the .keras file>, "saved_model": <version folder>}``.

  Raises:
    ExportWriteError: a write or rename failed; the message names the file
      or folder, whether the disk is full, and which of the two exports
      are the previous ones (kept) or missing.
  """
  if int(version) < 1:
    raise ValueError(f"version={version!r} must be an integer >= 1 (TF "
                     "Serving loads numeric version folders)")
  if not model_name or os.sep in model_name or model_name.startswith("."):
    raise ValueError(f"model_name={model_name!r} must be a plain folder name")
  os.makedirs(export_dir, exist_ok=True)
  keras_path = os.path.join(export_dir, f"{model_name}.keras")
  serving_path = os.path.join(export_dir, model_name, str(int(version)))
  model_dir = os.path.dirname(serving_path)
  made_model_dir = not os.path.isdir(model_dir)
  had = {keras_path: os.path.exists(keras_path),
         serving_path: os.path.isdir(serving_path)}
  replaced = []
  doing = f"creating the temporary files in {export_dir}"
  tmp_keras = tmp_dir = None
  try:
    os.makedirs(model_dir, exist_ok=True)
    fd, tmp_keras = tempfile.mkstemp(suffix=".keras", dir=export_dir,
                                     prefix=".tmp_")
    os.close(fd)
    tmp_dir = tempfile.mkdtemp(prefix=".tmp_", dir=model_dir)
    doing = f"writing the Keras file (as {tmp_keras}, for {keras_path})"
    model.save(tmp_keras)
    doing = f"writing the SavedModel (as {tmp_dir}, for {serving_path})"
    module = FeatureExtractor(model, image_size)
    module.trace_reusable()
    tf.saved_model.save(module, tmp_dir,
                        signatures={"serving_default": module.serve})
    # mkstemp/mkdtemp create owner-only files; an export is meant to be
    # read by others (a serving container, colleagues): use the umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_keras, 0o666 & ~umask)
    os.chmod(tmp_dir, 0o777 & ~umask)
    doing = f"moving the SavedModel into place ({tmp_dir} to {serving_path})"
    _atomic_replace(tmp_dir, serving_path)
    replaced.append(serving_path)
    doing = f"moving the Keras file into place ({tmp_keras} to {keras_path})"
    os.replace(tmp_keras, keras_path)
  except (OSError, tf.errors.OpError) as error:
    raise _write_error(error, doing, had, replaced) from error
  finally:
    if tmp_keras and os.path.exists(tmp_keras):
      os.remove(tmp_keras)
    if tmp_dir:
      shutil.rmtree(tmp_dir, ignore_errors=True)
    if made_model_dir and os.path.isdir(model_dir) \
        and not os.listdir(model_dir):
      # A failed first export leaves no empty model folder for TF Serving
      # to watch.
      os.rmdir(model_dir)
  return {"keras": keras_path, "saved_model": serving_path}


def _write_error(error: BaseException, doing: str, had: Dict[str, bool],
                 replaced: list) -> ExportWriteError:
  """The :class:`ExportWriteError` of a failed export: what was being
  written, why, and the state of each of the two export paths."""
  cause = "the disk is full" if is_disk_full(error) else "the write failed"
  states = []
  for path, existed in had.items():
    if path in replaced:
      states.append(f"{path} is the new export")
    elif existed:
      states.append(f"{path} is the previous export, unchanged")
    else:
      states.append(f"{path} was not written")
  failure = ExportWriteError(
      f"export failed while {doing}: {cause} ({type(error).__name__}: "
      f"{error}); no partial file is left: {'; '.join(states)}.")
  failure.errno = getattr(error, "errno", None)
  return failure


__all__ = ["DEFAULT_IMAGE_SIZE", "ExportWriteError", "FeatureExtractor",
           "export_model", "load_run_model"]
