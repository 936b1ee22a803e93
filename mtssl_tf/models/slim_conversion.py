"""Converts the authors' TF-Slim ``resnet_v2_101`` checkpoint into a Trunk.

Doersch & Zisserman, "Multi-task Self-Supervised Visual Learning", ICCV 2017,
released their trunk as a TF-Slim ``resnet_v2_101`` checkpoint used through
``block3``. This module maps its variables, name by name, into
:class:`mtssl_tf.models.Trunk` configured like Slim's graph:

* BN epsilon 1e-5 (Slim ``resnet_arg_scope``; Keras uses 1.001e-5);
* the stem's 3x3/2 max-pool with TF 'SAME' padding (``pool_padding="same"``):
  Slim's ``resnet_utils.resnet_arg_scope`` sets
  ``slim.arg_scope([slim.max_pool2d], padding='SAME')`` (56x56 after pool1 at
  224 px); ``"valid"`` (the original ResNet Caffe code's, 55x55) stays
  available for checkpoints of graphs built outside that scope;
* input = RGB in [0, 255] minus the mean [123.68, 116.779, 103.939]
  (``input_normalization="slim"``: the converted trunk takes RGB in [0, 255]
  and subtracts the mean itself);
* ``block3_last_stride`` 1 by default (all block-3 units at output stride 16,
  so the ``UnitMixer`` can mix them); 2 reproduces Slim's ``block3`` end point
  exactly. Strides have no weights, so the same checkpoint serves both.

Every variable of the checkpoint is accounted for. Mapped: one per trunk
weight. Ignored, each listed with its reason in the report: ``block4``,
``postnorm`` and ``logits`` (not part of the trunk through block 3),
``global_step``, and optimizer slots / moving-average shadows
(``*/RMSProp*``, ``*/Momentum*``, ``*/ExponentialMovingAverage*``). Anything
else, a missing variable or a shape mismatch fails the conversion with a
:class:`SlimConversionError` that lists every problem.

:func:`convert` (behind ``python -m mtssl_tf.convert_slim``) writes the
``.keras`` file and, next to it, ``<output stem>.conversion.json`` (what was
mapped, what was ignored, the trunk config).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from mtssl_tf.models.trunk import SLIM_MEAN_RGB, DEPTHS, Trunk

SLIM_BN_EPSILON = 1e-5
SLIM_POOL_PADDINGS = ("same", "valid")
REPORT_SUFFIX = ".conversion.json"

# Keras weight name -> Slim variable leaf name.
_LEAF = {"kernel": "weights", "bias": "biases", "gamma": "gamma",
         "beta": "beta", "moving_mean": "moving_mean",
         "moving_variance": "moving_variance"}
# Keras unit-layer suffix -> Slim sub-scope inside ``bottleneck_v2``. Slim's
# conv1/conv2/conv3 are the 1x1 / 3x3 / 1x1 convs (Keras _1/_2/_3); a conv
# followed by BN keeps its BN under ``<conv>/BatchNorm``, the pre-activation
# BN sits directly under ``preact``.
_UNIT_SCOPES = {
    "preact_bn": "preact",
    "0_conv": "shortcut",
    "1_conv": "conv1",
    "1_bn": "conv1/BatchNorm",
    "2_conv": "conv2",
    "2_bn": "conv2/BatchNorm",
    "3_conv": "conv3",
}
_NOT_IN_TRUNK = ("block4", "postnorm", "logits")
_SLOT_PREFIXES = ("RMSProp", "Momentum", "ExponentialMovingAverage")
REASON_NOT_IN_TRUNK = "not part of the trunk through block 3"
REASON_GLOBAL_STEP = "training step counter"
REASON_SLOT = "optimizer slot / moving-average shadow"


class SlimConversionError(ValueError):
  """The checkpoint does not match the trunk; lists every problem.

  Attributes:
    missing: Slim names the trunk needs that the checkpoint lacks.
    unexpected: checkpoint variables that are neither mapped nor ignored.
    shape_mismatches: ``(name, checkpoint shape, trunk shape)`` triples.
  """

  def __init__(self, message: str, missing: Sequence[str] = (),
               unexpected: Sequence[str] = (),
               shape_mismatches: Sequence[Tuple[str, tuple, tuple]] = ()):
    super().__init__(message)
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.shape_mismatches = list(shape_mismatches)


@dataclasses.dataclass
class ConversionReport:
  """What a conversion did: every checkpoint variable is in one of the maps.

  Attributes:
    checkpoint: the checkpoint file prefix that was read.
    scope: the Slim scope of the network (``resnet_v2_101``).
    trunk_config: the converted trunk's ``get_config()``.
    mapped: Slim name -> Keras weight path (``conv4_block3_1_bn/gamma``).
    ignored: Slim name -> why it was left out.
  """
  checkpoint: str
  scope: str
  trunk_config: dict
  mapped: Dict[str, str]
  ignored: Dict[str, str]

  def to_dict(self) -> dict:
    return {
        "checkpoint": self.checkpoint,
        "scope": self.scope,
        "trunk_config": self.trunk_config,
        "input_convention": (
            "float32 RGB in [0, 255]; the trunk subtracts the mean "
            f"{list(SLIM_MEAN_RGB)} itself (input_normalization='slim')"),
        "num_mapped": len(self.mapped),
        "num_ignored": len(self.ignored),
        "mapped": dict(sorted(self.mapped.items())),
        "ignored": dict(sorted(self.ignored.items())),
    }

  def summary(self) -> str:
    reasons: Dict[str, int] = {}
    for reason in self.ignored.values():
      reasons[reason] = reasons.get(reason, 0) + 1
    parts = [f"{n} {r}" for r, n in sorted(reasons.items())]
    detail = f" ({'; '.join(parts)})" if parts else ""
    return (f"mapped {len(self.mapped)} variables of {self.scope!r}; ignored "
            f"{len(self.ignored)}{detail}")


def default_scope(depth: int) -> str:
  """Slim's network scope for a depth (``resnet_v2_101`` for 101)."""
  return f"resnet_v2_{depth}"


def slim_name(keras_path: str, scope: str) -> str:
  """Slim variable name of one trunk weight, from its Keras path.

  Args:
    keras_path: ``<layer name>/<weight name>``, e.g.
      ``conv4_block7_2_bn/moving_mean``.
    scope: the Slim network scope, e.g. ``resnet_v2_101``.

  Returns:
    e.g. ``resnet_v2_101/block3/unit_7/bottleneck_v2/conv2/BatchNorm/
    moving_mean``.

  Raises:
    ValueError: the path is not a weight of the trunk.
  """
  layer, _, weight = keras_path.rpartition("/")
  if weight not in _LEAF:
    raise ValueError(f"no Slim name for trunk weight {keras_path!r}")
  leaf = _LEAF[weight]
  if layer == "conv1_conv":
    return f"{scope}/conv1/{leaf}"
  parts = layer.split("_", 2)
  if (len(parts) == 3 and parts[0].startswith("conv")
      and parts[1].startswith("block") and parts[2] in _UNIT_SCOPES):
    block = int(parts[0][4:]) - 1       # Keras conv2..conv4 = Slim block1..3
    unit = int(parts[1][5:])
    return (f"{scope}/block{block}/unit_{unit}/bottleneck_v2/"
            f"{_UNIT_SCOPES[parts[2]]}/{leaf}")
  raise ValueError(f"no Slim name for trunk weight {keras_path!r}")


def slim_variable_map(trunk, scope: str) -> Dict[str, object]:
  """Slim variable name -> the trunk's ``keras.Variable`` it fills."""
  out = {}
  for layer in trunk.layers:
    for w in layer.weights:
      name = slim_name(f"{layer.name}/{w.name}", scope)
      if name in out:
        raise ValueError(f"two trunk weights map to {name!r}")
      out[name] = w
  return out


def ignore_reason(name: str, scope: str) -> Optional[str]:
  """Why a checkpoint variable that the trunk does not use is left out, or
  None when it must not be ignored."""
  if name == "global_step" or name.endswith("/global_step"):
    return REASON_GLOBAL_STEP
  if name.rpartition("/")[2].startswith(_SLOT_PREFIXES):
    return REASON_SLOT
  first = name[len(scope) + 1:].split("/", 1)[0] if name.startswith(
      scope + "/") else None
  if first in _NOT_IN_TRUNK:
    return REASON_NOT_IN_TRUNK
  return None


def _format_list(title: str, items: Sequence[str]) -> str:
  return f"{len(items)} {title}:\n" + "\n".join(f"  {s}" for s in items)


def _open_checkpoint(checkpoint: str):
  import tensorflow as tf
  try:
    reader = tf.train.load_checkpoint(checkpoint)
  except (ValueError, tf.errors.NotFoundError, tf.errors.DataLossError) as e:
    raise FileNotFoundError(
        f"cannot read a TensorFlow checkpoint at {checkpoint!r}: give the "
        "file prefix (e.g. /ckpt/model.ckpt-1000, without .index) or a "
        f"directory holding a 'checkpoint' file ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''})") from None
  prefix = checkpoint
  if os.path.isdir(checkpoint):
    prefix = tf.train.latest_checkpoint(checkpoint) or checkpoint
  return reader, prefix


def load_slim_weights(trunk, checkpoint: str, scope: str) -> ConversionReport:
  """Fills ``trunk`` from a TF-Slim ``resnet_v2`` checkpoint, strictly.

  Nothing is assigned unless every trunk weight has a variable of the same
  shape and every other variable of the checkpoint has an ignore reason
  (:func:`ignore_reason`).

  Args:
    trunk: a built :class:`Trunk` (or any model with the trunk's layer names).
    checkpoint: file prefix or directory of a name-based (``tf.compat.v1``
      Saver / TF-Slim) checkpoint.
    scope: the network's Slim scope, e.g. ``resnet_v2_101``.

  Returns:
    The :class:`ConversionReport`.

  Raises:
    FileNotFoundError: no checkpoint at ``checkpoint``.
    SlimConversionError: missing, unexpected or mis-shaped variables (all of
      them listed), or an object-based TF2 checkpoint.
  """
  reader, prefix = _open_checkpoint(checkpoint)
  shapes = reader.get_variable_to_shape_map()
  dtypes = reader.get_variable_to_dtype_map()
  if "_CHECKPOINTABLE_OBJECT_GRAPH" in shapes:
    raise SlimConversionError(
        f"{prefix!r} is an object-based TF2 checkpoint (tf.train.Checkpoint), "
        "not a TF-Slim one; restore it with tf.train.Checkpoint instead")
  targets = slim_variable_map(trunk, scope)
  missing = sorted(n for n in targets if n not in shapes)
  ignored, unexpected = {}, []
  for name in sorted(shapes):
    if name in targets:
      continue
    reason = ignore_reason(name, scope)
    if reason is None:
      unexpected.append(name)
    else:
      ignored[name] = reason
  mismatches = []
  for name, var in sorted(targets.items()):
    if name in shapes:
      got, want = tuple(shapes[name]), tuple(var.shape)
      if got != want:
        mismatches.append((name, got, want))
      elif not dtypes[name].is_floating:
        mismatches.append((name, f"dtype {dtypes[name].name}", "float"))
  if missing or unexpected or mismatches:
    parts = [f"cannot convert {prefix!r} (scope {scope!r}) into the trunk "
             f"{trunk.name!r}"]
    if missing:
      parts.append(_format_list("missing variables", missing))
    if unexpected:
      parts.append(_format_list(
          "unexpected variables (neither trunk weights nor ignored)",
          unexpected))
    if mismatches:
      parts.append(_format_list(
          "shape mismatches (checkpoint vs trunk)",
          [f"{n}: {g} in the checkpoint, {w} in the trunk"
           for n, g, w in mismatches]))
    if len(missing) == len(targets):
      scopes = sorted({n.split("/", 1)[0] for n in shapes if "/" in n})
      parts.append(f"no trunk variable found under {scope + '/'!r}; top-level "
                   f"scopes in the checkpoint: {scopes} (pass the network's "
                   "scope, and a depth/width matching the checkpoint)")
    raise SlimConversionError("\n".join(parts), missing, unexpected,
                              mismatches)
  mapped = {}
  for name, var in targets.items():
    var.assign(np.asarray(reader.get_tensor(name), dtype=np.float32))
    mapped[name] = var.path
  config = trunk.get_config() if hasattr(trunk, "get_config") else {}
  return ConversionReport(checkpoint=prefix, scope=scope,
                          trunk_config=dict(config), mapped=mapped,
                          ignored=ignored)


def convert_checkpoint(checkpoint: str, *, depth: int = 101,
                       width: float = 1.0, scope: Optional[str] = None,
                       block3_last_stride: int = 1,
                       pool_padding: str = "same",
                       name: str = "trunk") -> Tuple[Trunk, ConversionReport]:
  """Builds a Slim-equivalent :class:`Trunk` and fills it from a checkpoint.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (the released ``resnet_v2_101`` trunk).

  Args:
    checkpoint: the TF-Slim checkpoint (file prefix or directory).
    depth: ResNet depth (101 for the authors' release).
    width: channel multiplier (1.0 for any released checkpoint).
    scope: Slim network scope; default ``resnet_v2_<depth>``.
    block3_last_stride: 1 (default; all block-3 units at output stride 16) or
      2 (Slim's own ``block3`` end point, bit for bit).
    pool_padding: ``"same"`` (default: TF 'SAME', as Slim's
      ``resnet_arg_scope`` sets for ``slim.max_pool2d``, the authors'
      network) or ``"valid"`` (a graph built outside that scope).
    name: the Keras model's name.

  Returns:
    ``(trunk, report)``. The trunk takes float32 RGB in [0, 255].

  Example:
    >>> trunk, report = convert_checkpoint("/ckpt/model.ckpt-1000")
    >>> print(report.summary())
  """
  if depth not in DEPTHS:
    raise ValueError(f"depth={depth!r}; allowed: {sorted(DEPTHS)}")
  if pool_padding not in SLIM_POOL_PADDINGS:
    raise ValueError(f"pool_padding={pool_padding!r}; Slim's max-pool "
                     f"padding is one of {', '.join(SLIM_POOL_PADDINGS)}")
  trunk = Trunk(depth=depth, width=width,
                block3_last_stride=block3_last_stride,
                pool_padding=pool_padding, bn_epsilon=SLIM_BN_EPSILON,
                input_normalization="slim", name=name)
  report = load_slim_weights(trunk, checkpoint, scope or default_scope(depth))
  return trunk, report


def report_path(output: str) -> str:
  """``trunk.keras`` -> ``trunk.conversion.json``."""
  stem = output[:-len(".keras")] if output.endswith(".keras") else output
  return stem + REPORT_SUFFIX


def convert(checkpoint: str, output: str, **kwargs) -> ConversionReport:
  """Converts and writes ``output`` (``.keras``) plus the JSON report.

  Args:
    checkpoint: the TF-Slim checkpoint.
    output: path of the ``.keras`` file to write.
    **kwargs: :func:`convert_checkpoint` arguments.

  Returns:
    The report (also written to :func:`report_path` ``(output)``).
  """
  if not output.endswith(".keras"):
    raise ValueError(f"output {output!r} must end in .keras")
  trunk, report = convert_checkpoint(checkpoint, **kwargs)
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  trunk.save(output)
  info = dict(report.to_dict(), output=output,
              num_parameters=int(trunk.count_params()))
  with open(report_path(output), "w") as f:
    json.dump(info, f, indent=1)
  return report


def check_command_settings(checkpoint: Optional[str], output: Optional[str],
                           depth: int, width: float,
                           block3_last_stride: int) -> None:
  """Raises ValueError naming the first bad setting of the command."""
  if not checkpoint:
    raise ValueError("--checkpoint is required")
  if not output:
    raise ValueError("--output is required")
  if not output.endswith(".keras"):
    raise ValueError(f"--output must end in .keras, got {output!r}")
  if depth not in DEPTHS:
    raise ValueError(f"--depth={depth}; allowed: {sorted(DEPTHS)}")
  if block3_last_stride not in (1, 2):
    raise ValueError(
        f"--block3_last_stride must be 1 or 2, got {block3_last_stride}")
  if not width > 0:
    raise ValueError(f"--width must be > 0, got {width}")
