"""Training flags derived from the config dataclasses, parsed by absl.

Every hyperparameter is declared once, as a field of
:class:`~mtssl_tf.config.TrainConfig` (and of its nested
:class:`~mtssl_tf.config.OptimizerConfig`,
:class:`~mtssl_tf.config.DataConfig`,
:class:`~mtssl_tf.models.trunk.TrunkConfig`) or of a task's parameter
dataclass (:func:`mtssl_tf.tasks.params.config_class`). This module derives
from them:

* :func:`train_options`, :func:`task_options`: the option table (flag name,
  kind, default, help, config field); :func:`define_flags` makes absl flags
  of it, on the entry points' ``FLAGS`` or on a private ``FlagValues``;
* :func:`parse_args`: argv-style strings (``--depth=50``, ``--nolasso``,
  ``--flagfile=configs/demo.cfg``, ``--relative_position.gap=8``) and typed
  mappings into a validated config, parsed by absl on a private
  ``FlagValues``, so that library code (the model zoo's presets) never
  touches a process's global flags;
* :func:`expand_flagfiles`: the one pre-pass before absl: a ``--flagfile``
  inside a flagfile is found next to the file that includes it;
* :func:`config_from_flags`: parsed flags into a config, ignoring options of
  unselected modes with one warning;
* :func:`flags_text`: the resolved flags as a flagfile (a run folder's
  ``flags.txt``), which parses back into the same config.

>>> parsed = parse_args(["--flagfile=configs/smoke.cfg", "--steps=3"])
>>> parsed.config.steps
3
"""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import importlib
import os
import sys
import typing
from typing import (Any, Callable, Collection, Dict, List, Mapping, Optional,
                    Sequence, Tuple)

from absl import flags

from mtssl_tf import config as config_lib
from mtssl_tf import tasks as tasks_lib
from mtssl_tf.config import ConfigError
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.tasks import params as task_params_lib

# The package's flagfiles (mtssl_tf/configs is the repository's configs/).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "configs")
KINDS = ("bool", "integer", "float", "string", "list", "multi_string")
# The config dataclasses nested in TrainConfig: their fields' flags are
# top-level flags (--depth, not --trunk.depth), as the configs/ files write.
_NESTED = {TrunkConfig: "trunk", config_lib.OptimizerConfig: "optimizer",
           config_lib.DataConfig: "data"}


@dataclasses.dataclass(frozen=True)
class Option:
  """One command-line option.

  Attributes:
    name: the flag's name (``depth``, ``relative_position.gap``).
    kind: one of :data:`KINDS`.
    default: the flag's default (a tuple for lists).
    help: help text (choices appended).
    field: dotted path of the TrainConfig field it sets (``"trunk.depth"``),
      ``"task_params.<task>.<param>"`` for a task parameter, or ``None`` for
      an option that is not a config field (``harmonize`` folds into the
      task parameters; ``cpu_replicas`` sets up the process).
    item: the item type of a list (``str``, ``int`` or ``float``).
    optional: whether ``none`` is a value (the field may be None).
  """
  name: str
  kind: str
  default: Any
  help: str
  field: Optional[str] = None
  item: type = str
  optional: bool = False


# Options that are not config fields. harmonize is a preset-level switch
# (paper Table 3, "/H") that becomes relative_position.color_mode;
# cpu_replicas splits the CPU into logical devices before the strategy is
# made (a process setting, recorded in flags.txt for the record);
# task_module imports a user's task modules before the flags are parsed
# (recorded in flags.txt, so that the flags reparse).
_EXTRA = (
    Option("harmonize", "bool", False,
           "Harmonized inputs: relative position sees the Lab L channel (as "
           "colorization does) instead of colour dropping (paper Table 3, "
           "'/H')."),
    Option("cpu_replicas", "integer", 0,
           "Split the CPU into this many logical devices (tests of several "
           "replicas without GPUs)."),
    Option("task_module", "multi_string", (),
           "Python module to import before the flags are parsed (repeatable "
           "or comma-separated), e.g. my_package.my_task: a task registered "
           "there with mtssl_tf.tasks.register_task can then be named in "
           "--tasks, and its parameters are flags. The module must be "
           "importable (PYTHONPATH)."),
)


def _kind(hint) -> Tuple[str, type, bool]:
  """(kind, list item type, optional) of a field's type hint."""
  origin = typing.get_origin(hint)
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if origin is typing.Union and type(None) in typing.get_args(hint):
    if len(args) == 1:  # Optional[X]
      return _kind(args[0])[:2] + (True,)
    return "string", str, True  # a path or a value (colorization's prior)
  if origin in (tuple, collections.abc.Sequence):
    item = args[0] if args and args[0] in (int, float, str) else str
    return "list", item, False
  if origin in (collections.abc.Mapping, dict):
    return "multi_string", str, False
  simple = {bool: "bool", int: "integer", float: "float", str: "string"}
  if hint in simple:
    return simple[hint], str, False
  return "string", str, False


def _options_of(cls, prefix: str = "") -> List[Option]:
  hints = typing.get_type_hints(cls)
  out = []
  for f in dataclasses.fields(cls):
    hint = hints[f.name]
    if hint in _NESTED:
      out.extend(_options_of(hint, prefix + f.name + "."))
      continue
    meta = f.metadata
    if meta.get("task_flags"):  # filled by the tasks' own flags
      continue
    if "help" not in meta:
      raise TypeError(f"{cls.__name__}.{f.name} has no flag metadata "
                      "(declare it with mtssl_tf.config.option)")
    kind, item, optional = _kind(hint)
    default = meta.get("flag_default", f.default)
    if default is dataclasses.MISSING:
      raise TypeError(f"{cls.__name__}.{f.name}: a required field needs a "
                      "flag_default")
    choices = tuple(meta.get("choices", ()))
    text = meta["help"]
    if choices:
      text += " One of: " + ", ".join(str(c) for c in choices) + "."
    out.append(Option(name=meta.get("flag", f.name), kind=kind,
                      default=default, help=text, field=prefix + f.name,
                      item=meta.get("flag_item", item), optional=optional))
  return out


@functools.lru_cache(maxsize=None)
def train_options() -> Tuple[Option, ...]:
  """Every option of ``python -m mtssl_tf.train`` but the task parameters:
  TrainConfig's fields (nested configs flattened), then :data:`_EXTRA`."""
  options = tuple(_options_of(config_lib.TrainConfig)) + _EXTRA
  names = [o.name for o in options]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise TypeError(f"two config fields declare the flag(s) {duplicates}")
  return options


def task_options(name: str) -> Tuple[Option, ...]:
  """The flags of task ``name``'s parameters, ``--<task>.<param>``, typed
  and defaulted by the task's parameter dataclass."""
  cls = tasks_lib.get_task_class(name)
  out = []
  for f in dataclasses.fields(task_params_lib.config_class(cls)):
    kind, item, optional = _kind(f.type)
    default = None if f.default is dataclasses.MISSING else f.default
    out.append(Option(
        name=f"{name}.{f.name}", kind=kind, default=default,
        help=f"{cls.__name__}({f.name}=...): " + (
            f"comma-separated {item.__name__}s" if kind == "list" else kind)
        + (", or none" if optional or default is None else "") + ".",
        field=f"task_params.{name}.{f.name}", item=item,
        optional=optional or default is None))
  return tuple(out)


def all_task_options() -> Tuple[Option, ...]:
  """:func:`task_options` of every registered task."""
  return tuple(o for n in tasks_lib.task_names() for o in task_options(n))


def options_by_name() -> Dict[str, Option]:
  return {o.name: o for o in train_options() + all_task_options()}


def trunk_options() -> Tuple[Option, ...]:
  """The options of :class:`TrunkConfig`'s fields (``--depth``, ...)."""
  return tuple(o for o in train_options()
               if o.field and o.field.startswith("trunk."))


# -- absl flags ---------------------------------------------------------------
class _ValueParser(flags.ArgumentParser):
  """absl's parser of one item type, for lists (comma-separated) and
  optional values (``none``); typed values (overrides) are checked by the
  same item parser."""

  def __init__(self, item: flags.ArgumentParser, sequence: bool,
               optional: bool):
    self.item, self.sequence, self.optional = item, sequence, optional

  def parse(self, argument):
    if argument is None or (isinstance(argument, str) and self.optional
                            and argument.strip().lower() == "none"):
      if self.optional:
        return None
      raise ValueError("none is not allowed here")
    if not self.sequence:
      return self.item.parse(argument)
    if isinstance(argument, str):
      argument = [x for x in argument.split(",") if x.strip()]
    elif not isinstance(argument, (list, tuple)):
      raise TypeError(f"expected a list, got {argument!r}")
    text = type(self.item) is flags.ArgumentParser  # pylint: disable=unidiomatic-typecheck
    return tuple(self.item.parse(x.strip() if isinstance(x, str) else (
        str(x) if text else x)) for x in argument)

  def flag_type(self):
    return ("list of " if self.sequence else "") + self.item.flag_type()


class _Serializer(flags.ArgumentSerializer):

  def serialize(self, value):
    return _text(value)


_ITEM_PARSERS = {int: flags.IntegerParser, float: flags.FloatParser,
                 str: flags.ArgumentParser}
_SCALAR_PARSERS = {"bool": flags.BooleanParser,
                   "integer": flags.IntegerParser,
                   "float": flags.FloatParser, "string": flags.ArgumentParser}


def _define(option: Option, fv: flags.FlagValues, default: Any) -> None:
  if option.kind == "multi_string":
    flags.DEFINE_multi_string(option.name, list(default), option.help,
                              flag_values=fv)
  elif option.kind == "bool" and not option.optional:
    flags.DEFINE_bool(option.name, default, option.help, flag_values=fv)
  else:
    # Choices are not absl enums: the dataclass checks them with a message
    # that names the field and the allowed values.
    sequence = option.kind == "list"
    item = (_ITEM_PARSERS[option.item] if sequence
            else _SCALAR_PARSERS[option.kind])()
    parser = _ValueParser(item, sequence, option.optional)
    flags.DEFINE(parser, option.name,
                 tuple(default) if sequence and default is not None
                 else default, option.help, flag_values=fv,
                 serializer=_Serializer())


def define_flags(fv: flags.FlagValues,
                 options: Sequence[Option] = (),
                 defaults: Optional[Mapping[str, Any]] = None) -> None:
  """Defines ``options`` (default: :func:`train_options` and every
  registered task's :func:`task_options`) on ``fv``; names already defined
  there are kept.

  Args:
    fv: where to define them.
    options: the options.
    defaults: other defaults by flag name.
  """
  defaults = defaults or {}
  for option in options or (train_options() + all_task_options()):
    if option.name not in fv:
      _define(option, fv, defaults.get(option.name, option.default))


# -- flagfiles: the pre-pass before absl ---------------------------------------
def resolve_flagfile(path: str, root: Optional[str] = None,
                     including: Optional[str] = None) -> str:
  """``path`` as a file.

  An absolute path is taken as it is. A relative path nested in the
  flagfile ``including`` is looked for next to that file, then in the
  folders above it (``configs/demo.cfg`` includes
  ``configs/base_cpu.cfg``, a path from the checkout: found from the
  checkout wherever the command runs), then from ``root``; a top-level one
  from ``root`` (default: the working directory, as absl resolves
  ``--flagfile``).
  """
  path = os.path.expanduser(path)
  if not os.path.isabs(path) and including:
    folder = os.path.dirname(os.path.abspath(including))
    while True:
      candidate = os.path.join(folder, path)
      if os.path.isfile(candidate):
        return candidate
      parent = os.path.dirname(folder)
      if parent == folder:
        break
      folder = parent
  if not os.path.isabs(path):
    path = os.path.join(root or os.getcwd(), path)
  if not os.path.isfile(path):
    where = (f" (nor next to {including} or in a folder above it)"
             if including else "")
    raise ConfigError(f"--flagfile={path}: no such file{where}")
  return path


@dataclasses.dataclass(frozen=True)
class ExpandedArgv:
  """The result of :func:`expand_flagfiles`.

  Attributes:
    argv: the arguments with every ``--flagfile`` replaced by its lines.
    command_line: the options given outside any flagfile, by flag name:
      their raw values (``""`` for ``--flag``, ``--noflag`` under ``flag``).
  """
  argv: Tuple[str, ...]
  command_line: Mapping[str, Tuple[str, ...]]


def _flagfile_path(tokens: List[str], i: int) -> Tuple[Optional[str], int]:
  """The path of a ``--flagfile=PATH`` / ``--flagfile PATH`` token at
  ``i``, and the index after it; None if the token is another flag."""
  token = tokens[i]
  for prefix in ("--flagfile=", "-flagfile="):
    if token.startswith(prefix):
      return token[len(prefix):], i + 1
  if token in ("--flagfile", "-flagfile") and i + 1 < len(tokens):
    return tokens[i + 1], i + 2
  return None, i + 1


def _flagfile_lines(path: str) -> List[str]:
  with open(path) as f:
    lines = [line.strip() for line in f]
  return [line for line in lines if line and not line.startswith(("#", "//"))]


def expand_flagfiles(argv: Sequence[str],
                     root: Optional[str] = None) -> ExpandedArgv:
  """Replaces each ``--flagfile=PATH`` in ``argv`` by the file's lines,
  nested flagfiles resolved by :func:`resolve_flagfile` (next to the file
  that includes them, then from ``root`` or the working directory). absl
  then parses the result, which holds no flagfile.

  Raises:
    ConfigError: a flagfile that does not exist or includes itself.
  """
  out: List[str] = []
  given: Dict[str, List[str]] = {}

  def expand(tokens, stack):
    i = 0
    while i < len(tokens):
      path, after = _flagfile_path(tokens, i)
      token, i = tokens[i], after
      if path is None:
        out.append(token)
        if not stack and token.startswith("-") and token != "--":
          name, _, raw = token.lstrip("-").partition("=")
          given.setdefault(name, []).append(raw)
        continue
      if not path:
        raise ConfigError("--flagfile needs a path: --flagfile=PATH")
      full = resolve_flagfile(path, root, stack[-1] if stack else None)
      if full in stack:
        raise ConfigError(f"--flagfile={path} includes itself")
      expand(_flagfile_lines(full), stack + [full])

  expand(list(argv), [])
  negated = {n[2:]: v for n, v in given.items() if n.startswith("no")
             and n[2:] in options_by_name()}
  for name, raws in negated.items():
    given.setdefault(name, []).extend(raws)
    del given["no" + name]
  return ExpandedArgv(argv=tuple(out), command_line={
      k: tuple(v) for k, v in given.items()})


def import_task_modules(names: Sequence[str]) -> List[str]:
  """Imports the ``--task_module`` modules (comma-separated entries
  allowed), so that the tasks they register can be named in ``--tasks`` and
  have flags; returns the module names.

  Raises:
    ConfigError: a module that cannot be imported, with the reason.
  """
  modules = [m.strip() for entry in (names or ()) for m in str(entry).split(
      ",") if m.strip()]
  for module in modules:
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ConfigError(
          f"--task_module={module}: cannot import it ({e}); its folder must "
          "be on the module search path (PYTHONPATH)") from None
  return modules


def task_modules_in(argv: Sequence[str]) -> List[str]:
  """The ``--task_module`` values of an expanded ``argv``."""
  out = []
  for i, token in enumerate(argv):
    name, eq, value = token.lstrip("-").partition("=")
    if name == "task_module":
      out.append(value if eq else (argv[i + 1] if i + 1 < len(argv) else ""))
  return out


# -- the library's parser: absl on a private FlagValues ------------------------
@dataclasses.dataclass(frozen=True)
class ParsedArgs:
  """The result of :func:`parse_args`.

  Attributes:
    config: the validated :class:`~mtssl_tf.config.TrainConfig`.
    values: the resolved values by flag name: every train option, and the
      task parameters that were set.
    present: names of the options that were set.
  """
  config: config_lib.TrainConfig
  values: Mapping[str, Any]
  present: Tuple[str, ...]

  @property
  def text(self) -> str:
    """The resolved options as a flagfile (a run folder's ``flags.txt``)."""
    return flags_text(self.values)


def _mapping_entries(source: Mapping[str, Any]) -> List[Tuple[str, Any]]:
  """A typed mapping as ``(flag name, value)`` pairs: ``task_param``
  (``{task: {param: value}}``) becomes the task's flags,
  ``task_batch_size`` (``{task: N}``) its ``task=N`` entries."""
  out = []
  for name, value in source.items():
    if name == "task_param" and isinstance(value, Mapping):
      out += [(f"{task}.{param}", v) for task, params in value.items()
              for param, v in params.items()]
    elif name == "task_batch_size" and isinstance(value, Mapping):
      out += [(name, [f"{task}={n}" for task, n in value.items()])]
    else:
      out.append((name, value))
  return out


def _apply(fv: flags.FlagValues, name: str, value: Any) -> None:
  if name not in fv:
    raise flags.UnrecognizedFlagError(name, str(value))
  if isinstance(value, (list, tuple)) and fv[name].flag_type().startswith(
      "multi"):
    for entry in value:
      fv[name].parse(str(entry))
    return
  if value is None and fv[name].default is None:
    fv[name].value = None
    fv[name].present += 1
    return
  fv[name].parse(value)


def parse_args(*sources: Any, root: Optional[str] = None,
               overrides: Optional[Mapping[str, Any]] = None,
               warn: Optional[Callable[[str], None]] = None) -> ParsedArgs:
  """Parses ``python -m mtssl_tf.train`` arguments with absl, on a private
  ``FlagValues`` (the process's ``FLAGS`` stay untouched).

  Args:
    *sources: applied in order, later ones winning. A sequence of strings is
      argv: ``--name=value``, ``--name value``, ``--flag`` / ``--noflag``,
      ``--flagfile=PATH`` (one option a line; ``#`` comments); repeated
      ``--task_batch_size`` accumulates. A mapping holds typed values by
      flag name (``{"width": 0.25, "tasks": ("relative_position",),
      "relative_position.gap": 8, "task_param": {"relative_position":
      {"gap": 8}}, "task_batch_size": {"relative_position": 64}}``); it
      counts as the command line.
    root: folder that relative ``--flagfile`` paths (nested ones too)
      resolve from; default: the working directory.
    overrides: one more mapping, applied last.
    warn: receives each warning line about ignored options (default:
      standard error).

  Returns:
    A :class:`ParsedArgs`.

  Raises:
    ConfigError: an unknown flag (with the closest names), a value of the
      wrong type, a missing flagfile, or an invalid config.
  """
  steps, command_line = _steps(sources + ((overrides,) if overrides else ()),
                                root)
  import_task_modules(
      [m for kind, part in steps if kind == "argv" for m in
       task_modules_in(part)] +
      [v for kind, part in steps if kind == "mapping" for n, v in part
       if n == "task_module"])
  fv = flags.FlagValues()
  define_flags(fv)
  try:
    for kind, part in steps:
      if kind == "argv":
        rest = fv(["parse_args"] + list(part))[1:]
        if rest:
          raise ConfigError(f"unexpected argument {rest[0]!r}: options look "
                            "like --name=value")
      else:
        for name, value in part:
          _apply(fv, name, value)
  except flags.Error as e:
    raise ConfigError(str(e)) from None
  values, present = flag_values(fv)
  config = config_from_values(values, present, warn=warn, command_line={
      k: tuple(v) for k, v in command_line.items()})
  return ParsedArgs(config=config, values=values,
                    present=tuple(sorted(present)))


def _steps(sources: Sequence[Any], root: Optional[str]):
  """``([("argv", expanded argv) or ("mapping", entries), ...], the
  options given outside any flagfile)`` of :func:`parse_args`' sources."""
  steps, command_line = [], {}
  for source in sources:
    if isinstance(source, str):
      raise TypeError(f"parse_args takes argv lists, not the string "
                      f"{source!r}")
    if isinstance(source, Mapping):
      entries = _mapping_entries(source)
      for name, value in entries:
        command_line.setdefault(name, []).extend(
            [str(v) for v in value] if name == "task_batch_size"
            else [str(value)])
      steps.append(("mapping", entries))
    else:
      expanded = expand_flagfiles(list(source), root)
      for name, raws in expanded.command_line.items():
        command_line.setdefault(name, []).extend(raws)
      steps.append(("argv", expanded.argv))
  return steps, command_line


def flagfile_settings(path: str) -> Dict[str, Any]:
  """The typed values a flagfile sets, by flag name, task parameters under
  ``"task_param"`` (``{task: {param: value}}``): a mapping that
  :func:`parse_args` takes as a source.

  >>> tiny = flagfile_settings(os.path.join(CONFIGS_DIR, "tiny.cfg"))
  >>> tiny["depth"], tiny["task_param"]["colorization"]["crop_size"]
  (14, 32)
  """
  fv = flags.FlagValues()
  define_flags(fv)
  argv = expand_flagfiles([f"--flagfile={path}"]).argv
  import_task_modules(task_modules_in(argv))
  define_flags(fv)
  try:
    fv(["flagfile_settings"] + list(argv))
  except flags.Error as e:
    raise ConfigError(f"{path}: {e}") from None
  out: Dict[str, Any] = {}
  for name in fv:
    if fv[name].present:
      task, dot, param = name.partition(".")
      if dot:
        out.setdefault("task_param", {}).setdefault(task, {})[param] = (
            fv[name].value)
      else:
        out[name] = fv[name].value
  return out


# -- flags -> config -------------------------------------------------------------
def flag_values(fv: flags.FlagValues) -> Tuple[Dict[str, Any], set]:
  """``(values, present)`` of parsed flags: every train option's value and
  each task parameter that was set, by flag name; the names that were
  set."""
  values = {o.name: fv[o.name].value for o in train_options()}
  values.update({o.name: fv[o.name].value for o in all_task_options()
                 if o.name in fv and fv[o.name].present})
  return values, {n for n in values if fv[n].present}


def config_from_flags(fv: flags.FlagValues, warn=None,
                      command_line: Optional[
                          Mapping[str, Sequence[str]]] = None
                      ) -> config_lib.TrainConfig:
  """Turns parsed flags into a validated :class:`TrainConfig`
  (:func:`config_from_values`)."""
  return config_from_values(*flag_values(fv), warn=warn,
                            command_line=command_line)


def _mode_options(v: Mapping[str, Any]):
  """Options that apply to one mode only: (option, whether its mode is
  selected, the mode in words). A flagfile may set them; a later option
  that switches the mode off makes them inapplicable: they are then ignored
  with one warning line, never an error ("later flags win")."""
  tasks = [x.strip() for x in v["tasks"] if x.strip()]
  data, lr = f"--data={v['data']}", f"--lr_schedule={v['lr_schedule']}"
  strategy = f"--strategy={v['strategy']}"
  return [
      ("lasso_l1", v["lasso"], "--nolasso"),
      ("lasso_init", v["lasso"], "--nolasso"),
      ("offline_packages", v["data"] == "offline", data),
      ("tfds_name", v["data"] == "tfds", data),
      ("data_dir", v["data"] == "tfds", data),
      ("motion_tfds_name", v["data"] == "tfds", data),
      ("image_folder", v["data"] == "folder", data),
      ("task_weights", v["schedule"] == "weighted",
       f"--schedule={v['schedule']}"),
      ("optimizer_per_task", v["update"] == "every_step",
       f"--update={v['update']}"),
      ("lr_min_fraction", v["lr_schedule"] == "cosine", lr),
      ("lr_drop_steps", v["lr_schedule"] == "step", lr),
      ("lr_drop_fractions", v["lr_schedule"] == "step", lr),
      ("harmonize", "relative_position" in tasks,
       "relative_position not in --tasks"),
      ("tpu", v["strategy"] == "tpu", strategy),
      ("devices", v["strategy"] in ("mirrored", "one_device"), strategy),
  ]


def _same(a, b) -> bool:
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return list(a) == list(b)
  return a == b


def inapplicable_options(values: Mapping[str, Any],
                         present: Collection[str]) -> List[Tuple[str, str]]:
  """``[(option, why)]``: options set (on the command line or in a
  flagfile) to a non-default value for a mode that the other options do not
  select."""
  by_name = {o.name: o for o in train_options()}
  out = []
  for name, selected, why in _mode_options(values):
    if selected or name not in present or _same(values[name],
                                                by_name[name].default):
      continue
    out.append((name, why))
  return out


def _named_task_weights(weights, tasks) -> Optional[List[float]]:
  """``--task_weights=relative_position=4``: weights by task name, 1 for
  every task not named, in the order of ``tasks`` (so a flagfile's weights
  survive a later ``--tasks`` that reorders or drops tasks; names of tasks
  not trained are ignored). Plain numbers: one per task, in order."""
  items = [str(x).strip() for x in (weights or ()) if str(x).strip()]
  if not items:
    return None
  if not any("=" in x for x in items):
    try:
      return [float(x) for x in items]
    except ValueError:
      raise ConfigError(f"task_weights={items} must be numbers") from None
  named: Dict[str, float] = {}
  for item in items:
    name, eq, number = (x.strip() for x in item.partition("="))
    if not eq:
      raise ConfigError(
          f"task_weights={items}: give every weight as task=weight (e.g. "
          "relative_position=4) or none (one number per task, in order)")
    try:
      tasks_lib.check_task_name(name)
      named[name] = float(number)
    except ValueError as e:
      raise ConfigError(f"task_weights {item!r}: {e}") from None
  return [named.get(t, 1.0) for t in tasks]


def _say(line: str, warn: Optional[Callable[[str], None]]) -> None:
  if warn is None:
    print(line, file=sys.stderr, flush=True)
  else:
    warn(line)


def _task_batch_sizes(values: Mapping[str, Any],
                      command_line: Optional[Mapping[str, Sequence[str]]],
                      tasks: Sequence[str],
                      warn: Optional[Callable[[str], None]]) -> Dict[str, int]:
  """The ``--task_batch_size`` entries to validate. A flagfile's entry for
  a task that the run does not train (a mode switch such as ``--tasks`` on
  top of a recipe) is dropped with one warning line; one given on the
  command line stays (the config refuses it: it would do nothing). With
  ``command_line`` unknown (None), every entry counts as a flagfile's.
  When the command line sets ``--batch_size`` and a flagfile gives a
  trained task its own size, one line says that task keeps it."""
  sizes = config_lib.parse_task_batch_sizes(values.get("task_batch_size"))
  typed = config_lib.parse_task_batch_sizes(
      (command_line or {}).get("task_batch_size", ()))
  known = set(tasks_lib.task_names())
  dropped = [n for n in sizes if n in known and n not in tasks
             and n not in typed]
  if dropped:
    _say("warning: ignoring --task_batch_size " + ", ".join(
        f"{n}={sizes[n]}" for n in dropped) + " from a flagfile: not in "
         f"--tasks ({', '.join(tasks)})", warn)
  kept = [n for n in sizes if n in tasks and n not in typed]
  if command_line is not None and "batch_size" in command_line and kept:
    _say(f"warning: --batch_size={values['batch_size']} does not change "
         "the task batch sizes a flagfile sets: " + ", ".join(
             f"{n} keeps {sizes[n]}" for n in kept) + "; add " + " ".join(
                 f"--task_batch_size={n}=N" for n in kept) +
         " to change it", warn)
  return {n: s for n, s in sizes.items() if n not in dropped}


def _task_params(values: Mapping[str, Any],
                 warn: Optional[Callable[[str], None]]
                 ) -> Dict[str, Dict[str, Any]]:
  """The task parameters that were set (``relative_position.gap`` ->
  ``{"relative_position": {"gap": ...}}``), ``--harmonize`` folded in."""
  out: Dict[str, Dict[str, Any]] = {}
  for name, value in values.items():
    task, dot, param = name.partition(".")
    if dot:
      out.setdefault(task, {})[param] = value
  if values.get("harmonize"):
    rp = out.setdefault("relative_position", {})
    if rp.get("color_mode", "harmonize") != "harmonize":
      # A preset switch over a flagfile's colour mode (the CPU recipe's
      # full colour): it wins, said in one line.
      _say("warning: --harmonize replaces --relative_position.color_mode="
           f"{rp['color_mode']}", warn)
    rp["color_mode"] = "harmonize"
  return out


def _set_path(tree: Dict[str, Any], path: str, value: Any) -> None:
  *parents, leaf = path.split(".")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def config_from_values(values: Mapping[str, Any],
                       present: Collection[str] = (),
                       warn: Optional[Callable[[str], None]] = None,
                       command_line: Optional[Mapping[str, Sequence[str]]]
                       = None) -> config_lib.TrainConfig:
  """Turns option values (by flag name, as :func:`flag_values` gives them)
  into a validated config.

  Options of an unselected mode (``--lasso_l1`` under ``--nolasso``,
  ``--image_folder`` under ``--data=tfds``) and a flagfile's
  ``--task_batch_size`` of a task not in ``--tasks`` are ignored and named
  in one line passed to ``warn`` (default: standard error); settings that
  contradict each other within the selected mode raise ``ConfigError``.

  Args:
    values: option values, by flag name.
    present: names of the options that were set.
    warn: receives each warning line.
    command_line: the options given outside any flagfile (name -> raw
      values), as :func:`expand_flagfiles` returns them; None: unknown.
  """
  import_task_modules(values.get("task_module", ()))
  ignored = inapplicable_options(values, present)
  if ignored:
    _say("warning: ignoring options of unselected modes: " + ", ".join(
        f"--{name} ({why})" for name, why in ignored), warn)
  values = dict(values, **{name: next(
      o.default for o in train_options() if o.name == name)
                           for name, _ in ignored})
  tasks = tuple(t.strip() for t in values["tasks"] if t.strip())
  values["tasks"] = tasks
  values["task_weights"] = _named_task_weights(values["task_weights"], tasks)
  tree: Dict[str, Any] = {}
  for option in train_options():
    if option.field is not None and option.kind != "multi_string":
      value = values[option.name]
      _set_path(tree, option.field,
                tuple(value) if isinstance(value, list) else value)
  try:
    trunk = TrunkConfig(**tree.pop("trunk"))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return config_lib.TrainConfig(
      task_params=_task_params(values, warn),
      task_batch_sizes=_task_batch_sizes(values, command_line, tasks, warn),
      trunk=trunk,
      optimizer=config_lib.OptimizerConfig(**tree.pop("optimizer")),
      data=config_lib.DataConfig(**tree.pop("data")), **tree)


# -- config -> flags -------------------------------------------------------------
def _text(value: Any) -> str:
  """A typed value as flag text: lists comma-separated, None as none."""
  if value is None:
    return "none"
  if isinstance(value, (list, tuple)):
    return ",".join(_text(v) for v in value)
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def flag_lines(name: str, value: Any, kind: str) -> List[str]:
  """``--name=value`` lines of one option's typed value (a bool as
  ``--name`` / ``--noname``, a repeated option one line an entry)."""
  if kind == "multi_string":
    return [f"--{name}={v}" for v in value]
  if isinstance(value, bool):
    return [f"--{name}" if value else f"--no{name}"]
  return [f"--{name}={_text(value)}"]


def override_lines(source: Mapping[str, Any]) -> List[str]:
  """A typed mapping, as :func:`parse_args` takes it, as argv lines."""
  by_name = options_by_name()
  return [line for name, value in _mapping_entries(source)
          for line in flag_lines(name, value, by_name[name].kind
                                 if name in by_name else "")]


def flags_text(values: Mapping[str, Any]) -> str:
  """Option values as a flagfile, one ``--name=value`` a line, sorted by
  name (unset optional values of train options left out; a task parameter
  set to None written as ``none``); it parses back into the same config."""
  by_name = options_by_name()
  lines = []
  for name in sorted(values):
    value = values[name]
    if value is None and "." not in name:
      continue
    lines += flag_lines(name, value, by_name[name].kind)
  return "\n".join(lines) + "\n"


__all__ = ["ExpandedArgv", "KINDS", "Option", "ParsedArgs",
           "all_task_options", "config_from_flags", "config_from_values",
           "define_flags", "expand_flagfiles", "flag_lines", "flag_values", "flagfile_settings",
           "flags_text", "import_task_modules", "inapplicable_options",
           "options_by_name", "override_lines", "parse_args", "resolve_flagfile",
           "task_modules_in", "task_options", "train_options",
           "trunk_options"]
