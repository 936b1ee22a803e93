"""ResNet-v2 (pre-activation) trunk through block 3.

The paper (Doersch & Zisserman, ICCV 2017, Sec. 3) uses ResNet-101 v2 with
block 4 removed: every self-supervised head, and every evaluation, reads the
23 units of block 3 (1024 channels at full width).

The graph follows TF-Slim ``resnet_v2`` and ``keras.applications.ResNet101V2``
exactly, layer name for layer name (``conv4_block7_out`` is Slim's
``block3/unit_7``), so that weights move across by name:

* stride sits in the LAST unit of each block (Slim and Keras convention);
* block 3's last-unit stride is a config value, default 1, so all block-3
  units share output stride 16 and can be mixed by the ``UnitMixer``;
* the stem's max-pool padding is a config value: ``"same"`` (default: TF
  'SAME', as TF-Slim's ``resnet_arg_scope`` sets it, the authors' network),
  ``"keras"`` (zero-pad by one, as ``keras.applications``) or ``"valid"``
  (the original ResNet Caffe code).

The builder takes the Keras module (``keras`` or ``tf_keras``) as an argument,
so the same code builds the Keras 3 trunk and the ``tf_keras`` backbone of the
Model Garden detection bridge.

It is Keras 3 code only (``keras.ops``), so it runs under the TensorFlow,
JAX and PyTorch backends alike.

Example:
  >>> import mtssl_tf
  >>> trunk = mtssl_tf.models.Trunk(depth=26, width=0.25)
  >>> outputs = trunk(images)            # images: float32 RGB in [0, 255]
  >>> outputs["conv4_block2_out"].shape  # [N, H/16, W/16, 256]
  >>> trunk.features_model()(images)     # one output: the deepest unit
"""
from __future__ import annotations

import dataclasses
import types
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import keras

from mtssl_tf.models import inputs as inputs_lib
from mtssl_tf.utils.fields import check_fields
from mtssl_tf.utils.fields import option

# Units per block for blocks 1-3. 101 and 50 are the paper's and Keras's; the
# small depths are named like ResNet-14/26/38 (a block 4 of the same count
# would make 3 * units + 2 layers) and exist for CPU tests and demos.
DEPTHS: Dict[int, Tuple[int, int, int]] = {
    14: (1, 1, 1),
    26: (2, 2, 2),
    38: (3, 3, 3),
    50: (3, 4, 6),
    101: (3, 4, 23),
    152: (3, 8, 36),
}
BASE_FILTERS = (64, 128, 256)  # bottleneck width of blocks 1-3 (out = 4x)
STEM_FILTERS = 64
POOL_PADDINGS = ("valid", "keras", "same")
# TF-Slim's resnet_arg_scope wraps the network in
# slim.arg_scope([slim.max_pool2d], padding='SAME'), so the authors' network
# pools to 56x56 at 224 px ('VALID' gives 55x55, shifted by a pixel).
PAPER_POOL_PADDING = "same"
INPUT_NORMALIZATIONS = ("slim", "keras_v2", "none")
# TF-Slim / VGG ImageNet mean, RGB in [0, 255]: the authors' input convention.
SLIM_MEAN_RGB = (123.68, 116.779, 103.939)


@dataclasses.dataclass(frozen=True)
class TrunkConfig:
  """Hyper-parameters of the trunk. Every field is validated on creation.

  Attributes:
    depth: one of ``DEPTHS`` (101 = the paper).
    width: channel multiplier (> 0); 0.25 for CPU tests.
    block3_last_stride: stride of block 3's last unit: 1 (default, all units
      mixable at output stride 16) or 2 (Slim / Keras).
    pool_padding: stem max-pool padding, one of ``POOL_PADDINGS``; ``"same"``
      (the default) is TF-Slim's, the paper's network.
    bn_epsilon: batch-norm epsilon (Keras 1.001e-5, Slim 1e-5).
    bn_momentum: batch-norm moving-average momentum (Slim 0.997).
    sync_bn: synchronise batch-norm statistics across replicas.
    input_normalization: ``"slim"`` (RGB [0,255] minus the ImageNet mean, the
      authors' convention), ``"keras_v2"`` ([0,255] -> [-1,1]) or ``"none"``.
    zero_init_residual: start the last convolution of every residual branch
      at zero, so that each unit starts as the identity (our choice; the
      paper's Slim network used He initialisation everywhere). From scratch
      on a CPU budget it is what lets relative position learn at all
      (docs/relative_position.md); off by default.
  """
  # Each field's flag and allowed values (mtssl_tf.utils.fields.option):
  # the options of train, evaluate and export derive from them, and
  # check_fields checks them.
  depth: int = option(
      101, "Trunk depth (14, 26, 38: CPU sizes; 50, 101: the paper's).",
      choices=tuple(DEPTHS))
  width: float = option(1.0, "Trunk width multiplier (0.25 for CPU tests).",
                        above=0)
  block3_last_stride: int = option(
      1, "Stride of block 3's last unit (1 keeps all units mixable).",
      choices=(1, 2))
  pool_padding: str = option(
      PAPER_POOL_PADDING, "Stem max-pool padding: same (TF-Slim's "
      "resnet_arg_scope, the paper's network), keras, valid.",
      choices=POOL_PADDINGS)
  bn_epsilon: float = option(
      1.001e-5, "Batch-norm epsilon (Keras 1.001e-5, Slim 1e-5).", above=0,
      below=1)
  bn_momentum: float = option(
      0.997, "Batch-norm moving-average momentum (Slim 0.997).", minimum=0,
      below=1)
  sync_bn: bool = option(False, "Synchronise batch norm across replicas.")
  input_normalization: str = option(
      "slim", "slim (RGB minus the ImageNet mean), keras_v2 or none.",
      choices=INPUT_NORMALIZATIONS)
  zero_init_residual: bool = option(
      False, "Start every residual branch's last convolution at zero (each "
      "unit starts as the identity; our choice, not the paper's).")

  def __post_init__(self):
    check_fields(self, prefix="TrunkConfig.")

  @property
  def units(self) -> Tuple[int, int, int]:
    return DEPTHS[self.depth]

  @property
  def filters(self) -> Tuple[int, int, int]:
    return tuple(_scaled(f, self.width) for f in BASE_FILTERS)

  @property
  def stem_filters(self) -> int:
    return _scaled(STEM_FILTERS, self.width)

  @property
  def num_block3_units(self) -> int:
    return self.units[2]

  @property
  def output_channels(self) -> int:
    return 4 * self.filters[2]

  def unit_names(self) -> List[str]:
    """Names of the block-3 unit outputs, shallow to deep."""
    return [f"conv4_block{k}_out" for k in range(1, self.units[2] + 1)]

  def unit_name(self, index: int) -> str:
    """Name of block-3 unit ``index`` (1-based, as Slim's ``unit_k``)."""
    n = self.units[2]
    if not isinstance(index, int) or not 1 <= index <= n:
      raise ValueError(
          f"block-3 unit index {index!r} is out of range; depth {self.depth} "
          f"has units 1..{n}")
    return f"conv4_block{index}_out"

  def output_names(self) -> List[str]:
    """Keys of the trunk's output dict: the end of the stem and of blocks 1
    and 2, then every block-3 unit."""
    u = self.units
    return (["pool1_pool", f"conv2_block{u[0]}_out", f"conv3_block{u[1]}_out"]
            + self.unit_names())

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _scaled(filters: int, width: float) -> int:
  return max(1, int(round(filters * width)))


def _bn(layers, x, name, config: TrunkConfig):
  kwargs = dict(axis=-1, epsilon=config.bn_epsilon,
                momentum=config.bn_momentum, name=name)
  if config.sync_bn:
    kwargs["synchronized"] = True
  return layers.BatchNormalization(**kwargs)(x)


def _unit(layers, x, filters, stride, conv_shortcut, name, config):
  """One pre-activation bottleneck unit (Slim ``bottleneck_v2``)."""
  preact = _bn(layers, x, name + "_preact_bn", config)
  preact = layers.Activation("relu", name=name + "_preact_relu")(preact)
  if conv_shortcut:
    shortcut = layers.Conv2D(4 * filters, 1, strides=stride,
                             name=name + "_0_conv")(preact)
  elif stride > 1:
    # Slim subsamples the identity with a 1x1 max-pool of stride s.
    shortcut = layers.MaxPooling2D(1, strides=stride,
                                   name=name + "_0_subsample")(x)
  else:
    shortcut = x
  y = layers.Conv2D(filters, 1, use_bias=False, name=name + "_1_conv")(preact)
  y = _bn(layers, y, name + "_1_bn", config)
  y = layers.Activation("relu", name=name + "_1_relu")(y)
  # Explicit symmetric padding = Slim's conv2d_same for stride 2 and 'SAME'
  # for stride 1; TF's own 'SAME' pads asymmetrically at stride 2.
  y = layers.ZeroPadding2D(((1, 1), (1, 1)), name=name + "_2_pad")(y)
  y = layers.Conv2D(filters, 3, strides=stride, use_bias=False,
                    name=name + "_2_conv")(y)
  y = _bn(layers, y, name + "_2_bn", config)
  y = layers.Activation("relu", name=name + "_2_relu")(y)
  # zero_init_residual: the unit starts as the identity (the branch adds 0).
  y = layers.Conv2D(
      4 * filters, 1, name=name + "_3_conv",
      kernel_initializer=("zeros" if config.zero_init_residual
                          else "glorot_uniform"))(y)
  return layers.Add(name=name + "_out")([shortcut, y])


def trunk_graph(inputs, config: TrunkConfig,
                keras_module: types.ModuleType = keras) -> Dict[str, object]:
  """Applies the trunk to symbolic ``inputs``; returns the named outputs."""
  layers = keras_module.layers
  x = inputs
  if config.input_normalization == "slim":
    x = layers.Normalization(mean=list(SLIM_MEAN_RGB), variance=[1.0] * 3,
                             name="input_norm")(x)
  elif config.input_normalization == "keras_v2":
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="input_norm")(x)
  x = layers.ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")(x)
  x = layers.Conv2D(config.stem_filters, 7, strides=2, name="conv1_conv")(x)
  if config.pool_padding == "keras":
    x = layers.ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
  else:
    x = layers.MaxPooling2D(3, strides=2, padding=config.pool_padding,
                            name="pool1_pool")(x)
  outputs = {"pool1_pool": x}
  last_strides = (2, 2, config.block3_last_stride)
  for b, (n, f, s) in enumerate(zip(config.units, config.filters,
                                    last_strides)):
    for k in range(1, n + 1):
      name = f"conv{b + 2}_block{k}"
      x = _unit(layers, x, f, s if k == n else 1, k == 1, name, config)
      if b == 2 or k == n:
        outputs[name + "_out"] = x
  return outputs


def build_trunk(config: TrunkConfig,
                keras_module: types.ModuleType = keras,
                input_shape: Sequence[Optional[int]] = (None, None, 3),
                name: str = "trunk"):
  """Builds the trunk as a functional model of ``keras_module``.

  Args:
    config: the trunk's hyper-parameters.
    keras_module: ``keras`` (Keras 3) or ``tf_keras`` (Keras 2, for the
      Model Garden bridge); anything with ``.layers``, ``.Input`` and
      ``.Model``.
    input_shape: [H, W, 3]; spatial sizes may be None.
    name: the model's name.

  Returns:
    A model mapping images [N, H, W, 3] to a dict of the named outputs
    listed by ``config.output_names()``.
  """
  inputs = keras_module.Input(shape=tuple(input_shape), name="images")
  outputs = trunk_graph(inputs, config, keras_module)
  return keras_module.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="mtssl_tf")
class Trunk(keras.Model):
  """ResNet-v2 trunk through block 3 (Keras 3), configured by hyper-parameters.

  A functional model whose ``get_config()`` returns exactly its constructor
  arguments (the keras-hub Backbone pattern), so ``.keras`` files hold the
  architecture as a few numbers plus the weights.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (trunk: ResNet-101 v2 through block 3).

  Args: the fields of :class:`TrunkConfig`, plus Keras ``name``.

  Inputs: RGB values in [0, 255], uint8 or any float dtype (cast to float32,
  not rescaled), as a batch: ``[N, H, W, 3]``, grey ``[N, H, W, 1]`` or
  ``[N, H, W]`` (repeated to three channels) or RGBA ``[N, H, W, 4]``
  (alpha dropped). Other dtypes, ranks and channel counts, and a rank-3
  batch whose last axis is 1, 3 or 4 (most likely one image without its
  batch axis), raise ``ValueError`` (:mod:`mtssl_tf.models.inputs`).
  Float images whose largest value lies in (0, 1] were most likely scaled
  to [0, 1]: the trunk warns (``UserWarning``, once per trunk) and computes
  on them as they are; a warning rather than an error because a dark image
  in [0, 255] can lie there too. The values can only be measured when they
  are concrete (NumPy, eager tensors): inside a traced function
  (``tf.function``, ``fit``, ``predict``) and on symbolic Keras tensors the
  check is skipped.

  Example:
    >>> trunk = Trunk(depth=26, width=0.25)
    >>> feats = trunk(np.zeros([2, 64, 64, 3], np.uint8))
    >>> sorted(feats)[:2]
    ['conv2_block2_out', 'conv3_block2_out']
  """

  def __init__(self, depth: int = 101, width: float = 1.0,
               block3_last_stride: int = 1,
               pool_padding: str = PAPER_POOL_PADDING,
               bn_epsilon: float = 1.001e-5, bn_momentum: float = 0.997,
               sync_bn: bool = False, input_normalization: str = "slim",
               zero_init_residual: bool = False,
               name: str = "trunk", **kwargs):
    config = TrunkConfig(depth=depth, width=width,
                         block3_last_stride=block3_last_stride,
                         pool_padding=pool_padding, bn_epsilon=bn_epsilon,
                         bn_momentum=bn_momentum, sync_bn=sync_bn,
                         input_normalization=input_normalization,
                         zero_init_residual=zero_init_residual)
    inputs = keras.Input(shape=(None, None, 3), name="images")
    outputs = trunk_graph(inputs, config, keras)
    super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
    self.config = config
    self._warned_unit_range = False

  def __call__(self, *args, **kwargs):
    # The images are made RGB float32 here, before Keras's own input
    # handling: Keras would cast any dtype silently, and on grey or RGBA
    # input fail with a shape error that prints the pixels.
    if args:
      args = (self._standardize_images(args[0]),) + args[1:]
    elif "inputs" in kwargs:
      kwargs["inputs"] = self._standardize_images(kwargs["inputs"])
    return super().__call__(*args, **kwargs)

  def _standardize_images(self, inputs):
    """Images, or Keras's one-entry dict ``{"images": images}``, made RGB
    of the input dtype; warns once if float images look scaled to [0, 1]."""
    if isinstance(inputs, dict) and list(inputs) == ["images"]:
      return {"images": self._standardize_images(inputs["images"])}
    inputs = inputs_lib.as_array(inputs)
    images = inputs_lib.standardize_images(inputs, dtype=self.inputs[0].dtype)
    if (inputs_lib.is_float_dtype(inputs.dtype)
        and not self._warned_unit_range):
      maximum = inputs_lib.unit_range_maximum(images)
      if maximum is not None:
        self._warned_unit_range = True
        warnings.warn(
            f"{self.name}: float images with maximum {maximum:.3g} look "
            "scaled to [0, 1]; the trunk expects RGB in [0, 255] (multiply "
            "by 255). This warning is given once per trunk.",
            UserWarning, stacklevel=3)
    return images

  @property
  def unit_names(self) -> List[str]:
    return self.config.unit_names()

  @property
  def output_channels(self) -> int:
    return self.config.output_channels

  def get_config(self):
    return dict(self.config.to_dict(), name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**constructor_kwargs(config))

  def features_model(self, output: Optional[str] = None,
                     name: Optional[str] = None) -> keras.Model:
    """A single-output view of the trunk, for transfer learning.

    A functional ``keras.Model`` from the trunk's images to one of its
    named outputs (keras-hub's ``pyramid_outputs`` pattern). It shares the
    trunk's layers: fitting it fine-tunes the trunk's weights, and
    ``trunk.trainable = False`` freezes it. It saves and reloads as a plain
    Keras model (no ``import mtssl_tf`` needed) and fits in a
    ``keras.Sequential``.

    Args:
      output: one of :meth:`TrunkConfig.output_names` (``pool1_pool``, the
        last unit of blocks 1 and 2, any block-3 unit); None: the deepest
        block-3 unit, the map the task heads read when there is no lasso.
      name: the model's name (default ``<trunk name>_<output>``).

    Returns:
      A model mapping images [N, H, W, 3] (RGB in [0, 255], float; unlike
      the trunk itself it does not convert grey, RGBA or a missing batch
      axis) to the map [N, h, w, C] (h = H / 16 for block-3 units).

    Example:
      >>> features = Trunk.from_preset("rp_col").features_model()
      >>> classifier = keras.Sequential([
      ...     keras.Input((64, 64, 3)), features,
      ...     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    """
    names = self.config.output_names()
    output = names[-1] if output is None else output
    if output not in names:
      raise ValueError(
          f"output={output!r} is not an output of this trunk; its outputs: "
          f"{', '.join(names)}")
    return keras.Model(self.input, self.get_layer(output).output,
                       name=name or f"{self.name}_{output}")

  @classmethod
  def from_preset(cls, name: str, output: Optional[str] = None,
                  **kwargs) -> keras.Model:
    """A model-zoo preset's trunk, weights sha256-checked (keras-hub's
    ``from_preset`` convention).

    The same as :func:`mtssl_tf.model_zoo.load_trunk`: a built-in preset's
    trunk, or a registered trunk-only preset such as a converted authors'
    checkpoint; keyword arguments (``weights``, ``weights_dir``,
    ``sha256``) are passed on. The zoo's presets were trained on 32-64 px
    inputs (relative-position patches of 32 px, colorization and motion
    crops of 64 px, exemplar crops of 48 px, from photos at most 160 px on
    a side): features are most meaningful on images of that scale, with
    sides that are multiples of 16.

    Args:
      name: a preset name (``mtssl_tf.model_zoo.list_presets()``).
      output: None: the :class:`Trunk` (a dict of named outputs); an output
        name, or ``"block3"`` for the deepest block-3 unit: the
        single-output model of :meth:`features_model`.
      **kwargs: passed to :func:`mtssl_tf.model_zoo.load_trunk`.

    Example:
      >>> trunk = Trunk.from_preset("rp_col")
      >>> trunk(images)["conv4_block2_out"]
      >>> features = Trunk.from_preset("rp_col", output="block3")
      >>> features(images).shape    # [N, H/16, W/16, C]
    """
    from mtssl_tf import model_zoo  # pylint: disable=g-import-not-at-top
    trunk = model_zoo.load_trunk(name, **kwargs)
    if output is None:
      return trunk
    return trunk.features_model(None if output == "block3" else output)


def constructor_kwargs(config) -> dict:
  """A saved ``get_config()`` without the keys Keras adds to a Model's
  config on its own (``trainable``, ``dtype``): the constructor's kwargs."""
  config = dict(config)
  config.pop("trainable", None)
  config.pop("dtype", None)
  return config


def copy_weights_by_name(source, target, *, allow_missing: Sequence[str] = (),
                         allow_unused: bool = True) -> List[str]:
  """Copies weights layer by layer where the layer names match.

  Works across Keras 3 and ``tf_keras`` models. Every weighted layer of
  ``target`` must be filled (unless named in ``allow_missing``); a shape
  mismatch raises ``ValueError``.

  Returns:
    The names of the source's weighted layers that were not used.
  """
  src = {l.name: l for l in source.layers if l.get_weights()}
  used = set()
  missing = []
  for layer in target.layers:
    if not layer.weights:
      continue
    if layer.name not in src:
      if layer.name not in allow_missing:
        missing.append(layer.name)
      continue
    values = src[layer.name].get_weights()
    expected = [tuple(w.shape) for w in layer.get_weights()]
    got = [tuple(v.shape) for v in values]
    if expected != got:
      raise ValueError(
          f"layer {layer.name!r}: shapes {got} in the source do not match "
          f"{expected} in the target")
    layer.set_weights(values)
    used.add(layer.name)
  if missing:
    raise ValueError(
        f"{len(missing)} weighted layers of {target.name!r} have no "
        f"same-named layer in {source.name!r}: {missing[:10]}")
  unused = sorted(set(src) - used)
  if unused and not allow_unused:
    raise ValueError(f"unused source layers: {unused[:10]}")
  return unused
