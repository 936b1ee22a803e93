"""Uses the zoo under the Keras backend of its environment; run by
tests/test_backends.py in a subprocess (``KERAS_BACKEND`` is read when
Keras is imported, so each backend needs its own process).

    KERAS_BACKEND=jax python tests/backend_check.py WORK_DIR [CHECKS...]

WORK_DIR holds what the TensorFlow side wrote: ``photo.npy`` (a real photo,
uint8 [1, H, W, 3]) and ``exported.keras`` (a zoo preset exported by
``mtssl_tf.model_zoo.export_keras``). The script writes
``WORK_DIR/<backend>.npz`` (features, named ``<preset>/<task>``) and prints
one JSON line of facts; the test compares both with TensorFlow's. CHECKS
picks among ``presets``, ``from_preset``, ``load_model``, ``fine_tune``,
``no_tensorflow`` (all but the last by default). Only keras, NumPy and the
package are imported: it runs where TensorFlow is not installed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import keras
import numpy as np

import mtssl_tf
from mtssl_tf import model_zoo

# The presets whose features are compared with TensorFlow's: a plain one
# (no UnitMixer: every task's features are the last unit, so its features are
# the trunk's) holding every task's head, and the lasso one (a UnitMixer mix
# per task). Every other preset has the plain one's architecture with other
# weights (tests/test_backends.py checks that on their metadata).
CHECKED_PRESETS = ("rp_col_ex_ms", "rp_col_ex_ms_lasso")
# The fine-tuned classifier's trunk: the preset's trunk up to block 1's end
# (the stem and three residual units: every kind of layer the trunk has;
# the deeper units repeat them, and their features are compared above).
FINE_TUNE_OUTPUT = "conv2_block3_out"
# The crops the classifier fine-tunes on (at the zoo's training scale), the
# stride between them (a 64 px photo gives 25 crops), their batch (every
# batch has one shape: one compiled train step) and the epochs.
CROP = 32
STRIDE = 8
BATCH = 5
EPOCHS = 1


def presets(photo, out, facts):
  """The checked presets' models; each task's features of the photo."""
  for name in CHECKED_PRESETS:
    model = model_zoo.load(name)
    out[f"{name}/trunk"] = keras.ops.convert_to_numpy(model.features(photo))
    for task in model.task_names:
      out[f"{name}/{task}"] = keras.ops.convert_to_numpy(
          model.features(photo, task=task))
  facts["presets"] = model_zoo.list_presets()


def from_preset(photo, out, facts):
  trunk = mtssl_tf.Trunk.from_preset("rp_col")
  facts["from_preset_class"] = type(trunk).__name__
  out["from_preset/units"] = keras.ops.convert_to_numpy(
      trunk(photo)[trunk.unit_names[-1]])
  features = mtssl_tf.Trunk.from_preset("rp_col", output="block3")
  out["from_preset/block3"] = keras.ops.convert_to_numpy(features(photo))


def load_model(work_dir, photo, out, facts):
  model = keras.models.load_model(os.path.join(work_dir, "exported.keras"))
  facts["load_model_class"] = type(model).__name__
  out["exported/trunk"] = keras.ops.convert_to_numpy(model.features(photo))


def fine_tune(work_dir, photo, out, facts):
  """A classifier on the preset's trunk: fit a few steps, save, reload."""
  image = photo[0]
  h, w = image.shape[:2]
  corners = [(y, x) for y in range(0, h - CROP + 1, STRIDE)
             for x in range(0, w - CROP + 1, STRIDE)]
  crops = np.stack([image[y:y + CROP, x:x + CROP]
                    for y, x in corners]).astype("float32")
  # Label: which half of the photo the crop's centre lies in.
  labels = np.array([x + CROP // 2 > w // 2 for _, x in corners], "int32")
  keras.utils.set_random_seed(0)
  features = mtssl_tf.Trunk.from_preset("rp", output=FINE_TUNE_OUTPUT)
  classifier = keras.Sequential([
      keras.Input((CROP, CROP, 3)), features,
      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  classifier.compile(keras.optimizers.SGD(1e-3), loss)
  # The convolution kernels (biases in front of batch norm get no gradient).
  kernels = [v for v in features.trainable_weights if len(v.shape) == 4]
  before = [keras.ops.convert_to_numpy(v) for v in kernels]
  # The loss of the inference-mode logits (what ``evaluate`` computes),
  # before and after ``fit``.
  loss_before = loss(labels, classifier(crops))
  classifier.fit(crops, labels, batch_size=BATCH, epochs=EPOCHS,
                 shuffle=False, verbose=0)
  logits = classifier(crops)
  facts["losses"] = [float(loss_before), float(loss(labels, logits))]
  after = [keras.ops.convert_to_numpy(v) for v in kernels]
  facts["trunk_kernels_changed"] = sum(
      not np.array_equal(a, b) for a, b in zip(before, after))
  facts["trunk_kernels"] = len(kernels)
  path = os.path.join(work_dir, f"classifier_{keras.backend.backend()}.keras")
  classifier.save(path)
  reloaded = keras.models.load_model(path)
  out["fine_tune/logits"] = keras.ops.convert_to_numpy(logits)
  out["fine_tune/reloaded"] = keras.ops.convert_to_numpy(reloaded(crops))


def no_tensorflow(facts):
  """What a TensorFlow-only function says where TensorFlow is missing."""
  facts["tensorflow_found"] = importlib.util.find_spec("tensorflow") is not None
  from mtssl_tf import data  # pylint: disable=g-import-not-at-top
  from mtssl_tf.tasks import colorization  # pylint: disable=g-import-not-at-top
  try:
    colorization.soft_encode(np.zeros([2, 2], np.float32))
  except ImportError as e:
    facts["tensorflow_error"] = str(e)
  try:
    data.make_source("offline")
  except ImportError as e:
    facts["data_error"] = str(e)


def main(argv):
  work_dir, checks = argv[1], argv[2:] or ["presets", "from_preset",
                                           "load_model", "fine_tune"]
  photo = np.load(os.path.join(work_dir, "photo.npy"))
  out, facts = {}, {"backend": keras.backend.backend()}
  for check in checks:
    if check == "presets":
      presets(photo, out, facts)
    elif check == "from_preset":
      from_preset(photo, out, facts)
    elif check == "load_model":
      load_model(work_dir, photo, out, facts)
    elif check == "fine_tune":
      fine_tune(work_dir, photo, out, facts)
    elif check == "no_tensorflow":
      no_tensorflow(facts)
    else:
      raise SystemExit(f"unknown check {check!r}")
  np.savez(os.path.join(work_dir, f"{facts['backend']}.npz"), **out)
  print(json.dumps(facts))


if __name__ == "__main__":
  main(sys.argv)
