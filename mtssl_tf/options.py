"""Training options derived from the config dataclasses; a pure-Python
argv parser.

Every hyperparameter is declared once, as a field of
:class:`~mtssl_tf.config.TrainConfig` (and of its nested
:class:`~mtssl_tf.config.OptimizerConfig`,
:class:`~mtssl_tf.config.DataConfig`,
:class:`~mtssl_tf.models.trunk.TrunkConfig`) whose metadata names its flag.
This module derives from them:

* :func:`train_options`: the option table (flag name, kind, default, help,
  config field), which :mod:`mtssl_tf.cli.flags` turns into absl flags;
* :func:`parse_args`: argv-style strings (``--depth=50``, ``--nolasso``,
  ``--flagfile=configs/demo.cfg``,
  ``--task_param=relative_position.gap=8``) into a validated config, without
  absl, so that library code (the model zoo's presets) never touches a
  process's global flags;
* :func:`config_from_values`: option values into a config (both parsers end
  here), ignoring options of unselected modes with one warning;
* :func:`flags_text`: the resolved options as a flagfile (a run folder's
  ``flags.txt``), which parses back into the same config.

>>> parsed = parse_args(["--flagfile=configs/smoke.cfg", "--steps=3"])
>>> parsed.config.steps
3
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import importlib
import os
import sys
import typing
from typing import (Any, Callable, Collection, Dict, List, Mapping, Optional,
                    Sequence, Tuple)

from mtssl_tf import config as config_lib
from mtssl_tf.config import ConfigError
from mtssl_tf.models.trunk import TrunkConfig

KINDS = ("bool", "integer", "float", "string", "list", "multi_string")
# The config dataclasses nested in TrainConfig: their fields' flags are
# top-level flags (--depth, not --trunk.depth), as the configs/ files write.
_NESTED = {TrunkConfig: "trunk", config_lib.OptimizerConfig: "optimizer",
           config_lib.DataConfig: "data"}


@dataclasses.dataclass(frozen=True)
class Option:
  """One command-line option.

  Attributes:
    name: the flag's name (``depth``; ``nodepth`` never exists).
    kind: one of :data:`KINDS`.
    default: the flag's default (a tuple for lists).
    help: help text (choices appended).
    field: dotted path of the config field it sets (``"trunk.depth"``), or
      ``None`` for an option that is not a config field (``harmonize`` folds
      into the task parameters; ``cpu_replicas`` sets up the process).
    choices: allowed values (checked by the dataclass).
    item: the element type of a list (``str`` or ``float``).
  """
  name: str
  kind: str
  default: Any
  help: str
  field: Optional[str] = None
  choices: Tuple[Any, ...] = ()
  item: type = str


# Options that are not config fields. harmonize is a preset-level switch
# (paper Table 3, "/H") that becomes relative_position.color_mode;
# cpu_replicas splits the CPU into logical devices before the strategy is
# made (a process setting, recorded in flags.txt for the record);
# task_module imports a user's task modules before the task names are
# checked (recorded in flags.txt, so that the flags reparse).
_EXTRA = (
    Option("harmonize", "bool", False,
           "Harmonized inputs: relative position sees the Lab L channel (as "
           "colorization does) instead of colour dropping (paper Table 3, "
           "'/H')."),
    Option("cpu_replicas", "integer", 0,
           "Split the CPU into this many logical devices (tests of several "
           "replicas without GPUs)."),
    Option("task_module", "multi_string", (),
           "Python module to import before the config is checked "
           "(repeatable or comma-separated), e.g. my_package.my_task: a task "
           "registered there with mtssl_tf.tasks.register_task can then be "
           "named in --tasks. The module must be importable (PYTHONPATH)."),
)


def _kind(hint) -> Tuple[str, type]:
  """(kind, list item type) of a field's type hint."""
  origin = typing.get_origin(hint)
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if origin is typing.Union and len(args) == 1:  # Optional[X]
    return _kind(args[0])
  if origin in (tuple, Tuple):
    return "list", args[0] if args else str
  if origin in (collections.abc.Mapping, dict):
    return "multi_string", str
  simple = {bool: "bool", int: "integer", float: "float", str: "string"}
  if hint in simple:
    return simple[hint], str
  raise TypeError(f"no option kind for the field type {hint!r}")


def _options_of(cls, prefix: str = "") -> List[Option]:
  hints = typing.get_type_hints(cls)
  out = []
  for f in dataclasses.fields(cls):
    hint = hints[f.name]
    if hint in _NESTED:
      out.extend(_options_of(hint, prefix + f.name + "."))
      continue
    meta = f.metadata
    if "help" not in meta:
      raise TypeError(f"{cls.__name__}.{f.name} has no flag metadata "
                      "(declare it with mtssl_tf.config.option)")
    kind, item = _kind(hint)
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
                      choices=choices, item=item))
  return out


@functools.lru_cache(maxsize=None)
def train_options() -> Tuple[Option, ...]:
  """Every option of ``python -m mtssl_tf.train``: TrainConfig's fields
  (nested configs flattened), then :data:`_EXTRA`."""
  options = tuple(_options_of(config_lib.TrainConfig)) + _EXTRA
  names = [o.name for o in options]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise TypeError(f"two config fields declare the flag(s) {duplicates}")
  return options


def options_by_name() -> Dict[str, Option]:
  return {o.name: o for o in train_options()}


def trunk_options() -> Tuple[Option, ...]:
  """The options of :class:`TrunkConfig`'s fields (``--depth``, ...)."""
  return tuple(o for o in train_options()
               if o.field and o.field.startswith("trunk."))


def default_values() -> Dict[str, Any]:
  return {o.name: _copy(o.default) for o in train_options()}


def _copy(value):
  return list(value) if isinstance(value, (list, tuple)) else value


# -- parsing ------------------------------------------------------------------
_TRUE = ("true", "t", "1", "yes")
_FALSE = ("false", "f", "0", "no")


def _parse_value(option: Option, raw: str) -> Any:
  """A string from argv or a flagfile as the option's type (absl's rules)."""
  try:
    if option.kind == "bool":
      low = raw.strip().lower()
      if low in _TRUE or low in _FALSE:
        return low in _TRUE
      raise ValueError("expected true or false")
    if option.kind == "integer":
      return int(raw)
    if option.kind == "float":
      return float(raw)
    if option.kind == "list":
      return [x.strip() for x in raw.split(",") if x.strip()] if raw else []
    return raw
  except ValueError as e:
    raise ConfigError(f"--{option.name}={raw!r}: not a valid {option.kind} "
                      f"({e})") from None


def _coerce(option: Option, value: Any) -> Any:
  """A typed (Python) override value, checked against the option's kind."""
  if isinstance(value, str) and option.kind not in ("string", "list",
                                                    "multi_string"):
    return _parse_value(option, value)
  ok = {
      "bool": lambda v: isinstance(v, bool),
      "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
      "float": lambda v: (isinstance(v, (int, float))
                          and not isinstance(v, bool)),
      "string": lambda v: isinstance(v, str),
      "list": lambda v: isinstance(v, (list, tuple)),
      "multi_string": lambda v: isinstance(v, (list, tuple)),
  }[option.kind]
  if value is None and option.default is None:
    return None
  if isinstance(value, str) and option.kind == "list":
    return _parse_value(option, value)
  if not ok(value):
    raise ConfigError(f"{option.name}={value!r}: expected a "
                      f"{option.kind}")
  if option.kind == "float":
    return float(value)
  if option.kind in ("list", "multi_string"):
    return [str(v) if option.item is str else v for v in value]
  return value


def resolve_flagfile(path: str, root: Optional[str] = None,
                     including: Optional[str] = None) -> str:
  """``path`` as a file.

  An absolute path is taken as it is. A relative path nested in the
  flagfile ``including`` is looked for next to that file, then in the
  folders above it (``configs/demo.cfg`` includes
  ``configs/study_common.cfg``, a path from the checkout: found from the
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


def _flagfile_name(token: str) -> Optional[str]:
  """The path of a ``--flagfile=PATH`` (or ``-flagfile=PATH``) token."""
  for prefix in ("--flagfile=", "-flagfile="):
    if token.startswith(prefix):
      return token[len(prefix):]
  return None


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


def expand_flagfiles(argv: Sequence[str],
                     root: Optional[str] = None) -> ExpandedArgv:
  """Replaces each ``--flagfile=PATH`` in ``argv`` by the file's options,
  nested flagfiles resolved by :func:`resolve_flagfile` (next to the file
  that includes them, then from ``root`` or the working directory). The
  entry points hand the result to absl, which then sees no flagfile.

  Raises:
    ConfigError: a flagfile that does not exist or includes itself.
  """
  out: List[str] = []
  given: Dict[str, List[str]] = {}
  bools = {o.name for o in train_options() if o.kind == "bool"}

  def expand(tokens, stack):
    tokens = list(tokens)
    i = 0
    while i < len(tokens):
      token = tokens[i]
      i += 1
      path = _flagfile_name(token)
      if path is None and token in ("--flagfile", "-flagfile") and i < len(
          tokens):
        path, i = tokens[i], i + 1
      if path is not None:
        if not path:
          raise ConfigError("--flagfile needs a path: --flagfile=PATH")
        full = resolve_flagfile(path, root, stack[-1] if stack else None)
        if full in stack:
          raise ConfigError(f"--flagfile={path} includes itself")
        expand(_flagfile_lines(full), stack + [full])
        continue
      out.append(token)
      if not stack and token.startswith("-") and token != "--":
        name, _, raw = token.lstrip("-").partition("=")
        if name.startswith("no") and name[2:] in bools:
          name = name[2:]
        given.setdefault(name, []).append(raw)

  expand(argv, [])
  return ExpandedArgv(argv=tuple(out), command_line={
      k: tuple(v) for k, v in given.items()})


def _flagfile_lines(path: str) -> List[str]:
  out = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line and not line.startswith(("#", "//")):
        out.append(line)
  return out


class _Parser:

  def __init__(self, root: Optional[str]):
    self.root = root
    self.options = options_by_name()
    self.values = default_values()
    self.present: Dict[str, int] = {}
    self.files: List[str] = []
    # Options given outside any flagfile (config_from_values' command_line).
    self.command_line: Dict[str, List[str]] = {}

  def _unknown(self, name: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(self.options), n=3)
    hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close \
        else ""
    return ConfigError(f"unknown flag --{name}{hint}")

  def parse(self, argv: Sequence[str], where: str = "argv") -> None:
    argv = list(argv)
    i = 0
    while i < len(argv):
      token = argv[i]
      i += 1
      if not token.startswith("--") or token == "--":
        raise ConfigError(f"unexpected argument {token!r} in {where}: "
                          "options look like --name=value")
      name, eq, raw = token[2:].partition("=")
      if name == "flagfile":
        if not eq:
          raise ConfigError("--flagfile needs a path: --flagfile=PATH")
        path = resolve_flagfile(raw, self.root,
                                self.files[-1] if self.files else None)
        if path in self.files:
          raise ConfigError(f"--flagfile={raw} includes itself")
        self.files.append(path)
        self.parse(_flagfile_lines(path), where=path)
        self.files.pop()
        continue
      option = self.options.get(name)
      value: Any
      if option is None and not eq and name.startswith("no"):
        negated = self.options.get(name[2:])
        if negated is not None and negated.kind == "bool":
          option, value = negated, False
          self._set(option, value)
          continue
      if option is None:
        raise self._unknown(name)
      if not eq:
        if option.kind == "bool":
          self._set(option, True)
          continue
        if i >= len(argv):
          raise ConfigError(f"--{name} needs a value: --{name}=VALUE")
        raw = argv[i]
        i += 1
      self._set(option, _parse_value(option, raw))

  def _set(self, option: Option, value: Any) -> None:
    if not self.files:
      self.command_line.setdefault(option.name, []).append(str(value))
    if option.kind == "multi_string":
      # Repeated options accumulate, across flagfiles too (absl's rule).
      current = self.values[option.name] if self.present.get(
          option.name) else []
      value = current + [value]
    self.values[option.name] = value
    self.present[option.name] = self.present.get(option.name, 0) + 1

  def override(self, name: str, value: Any) -> None:
    option = self.options.get(name)
    if option is None:
      raise self._unknown(name)
    if option.kind == "multi_string" and isinstance(value, Mapping):
      # {"relative_position": {"gap": 8}}: typed task parameters;
      # {"relative_position": 64}: task batch sizes.
      entries = []
      for task, params in value.items():
        if isinstance(params, Mapping):
          entries += [f"{task}.{param}={v!r}" for param, v in params.items()]
        else:
          entries.append(f"{task}={params}")
      for entry in entries:
        self._set(option, entry)
      return
    value = _coerce(option, value)
    if option.kind == "multi_string":
      for entry in value:
        self._set(option, entry)
      return
    self.command_line.setdefault(name, []).append(str(value))
    self.values[name] = value
    self.present[name] = self.present.get(name, 0) + 1


@dataclasses.dataclass(frozen=True)
class ParsedArgs:
  """The result of :func:`parse_args`.

  Attributes:
    config: the validated :class:`~mtssl_tf.config.TrainConfig`.
    values: every option's resolved value, by flag name.
    present: names of the options that were set.
  """
  config: config_lib.TrainConfig
  values: Mapping[str, Any]
  present: Tuple[str, ...]

  @property
  def text(self) -> str:
    """The resolved options as a flagfile (a run folder's ``flags.txt``)."""
    return flags_text(self.values)


def parse_args(*sources: Any, root: Optional[str] = None,
               overrides: Optional[Mapping[str, Any]] = None,
               warn: Optional[Callable[[str], None]] = None) -> ParsedArgs:
  """Parses ``python -m mtssl_tf.train`` arguments without absl.

  Args:
    *sources: applied in order, later ones winning. A sequence of strings is
      argv: ``--name=value``, ``--name value``, ``--flag`` / ``--noflag``,
      ``--flagfile=PATH`` (one option a line; ``#`` comments); repeated
      ``--task_param`` and ``--task_batch_size`` accumulate. A mapping
      holds typed values by flag name (``{"width": 0.25, "tasks":
      ("relative_position",), "task_param": {"relative_position": {"gap":
      8}}, "task_batch_size": {"relative_position": 64}}``).
    root: folder that relative ``--flagfile`` paths (nested ones too)
      resolve from; default: the working directory.
    overrides: one more mapping, applied last.
    warn: receives the one warning line about ignored options (default:
      standard error).

  Returns:
    A :class:`ParsedArgs`.

  Raises:
    ConfigError: an unknown option (with the closest names), a value of the
      wrong type, a missing flagfile, or an invalid config.
  """
  parser = _Parser(root)
  for source in sources + ((overrides,) if overrides else ()):
    if isinstance(source, Mapping):
      for name, value in source.items():
        parser.override(name, value)
    elif isinstance(source, str):
      raise TypeError(f"parse_args takes argv lists, not the string "
                      f"{source!r}")
    else:
      parser.parse(source)
  config = config_from_values(parser.values, parser.present, warn=warn,
                              command_line=parser.command_line)
  return ParsedArgs(config=config, values=dict(parser.values),
                    present=tuple(sorted(parser.present)))


# -- values -> config -----------------------------------------------------------
def _mode_options(v: Mapping[str, Any]):
  """Options that apply to one mode only: (option, whether its mode is
  selected, the mode in words). A flagfile may set them; a later option
  that switches the mode off makes them inapplicable: they are then ignored
  with one warning line, never an error ("later flags win")."""
  tasks = [x.strip() for x in v["tasks"] if x.strip()]
  return [
      ("lasso_l1", v["lasso"], "--nolasso"),
      ("lasso_init", v["lasso"], "--nolasso"),
      ("offline_packages", v["data"] == "offline", f"--data={v['data']}"),
      ("tfds_name", v["data"] == "tfds", f"--data={v['data']}"),
      ("data_dir", v["data"] == "tfds", f"--data={v['data']}"),
      ("motion_tfds_name", v["data"] == "tfds", f"--data={v['data']}"),
      ("image_folder", v["data"] == "folder", f"--data={v['data']}"),
      ("task_weights", v["schedule"] == "weighted",
       f"--schedule={v['schedule']}"),
      ("optimizer_per_task", v["update"] == "every_step",
       f"--update={v['update']}"),
      ("lr_min_fraction", v["lr_schedule"] == "cosine",
       f"--lr_schedule={v['lr_schedule']}"),
      ("lr_drop_steps", v["lr_schedule"] == "step",
       f"--lr_schedule={v['lr_schedule']}"),
      ("lr_drop_fractions", v["lr_schedule"] == "step",
       f"--lr_schedule={v['lr_schedule']}"),
      ("harmonize", "relative_position" in tasks,
       "relative_position not in --tasks"),
      ("tpu", v["strategy"] == "tpu", f"--strategy={v['strategy']}"),
      ("devices", v["strategy"] in ("mirrored", "one_device"),
       f"--strategy={v['strategy']}"),
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
  by_name = options_by_name()
  out = []
  for name, selected, why in _mode_options(values):
    if selected or name not in present or _same(values[name],
                                                by_name[name].default):
      continue
    out.append((name, why))
  return out


def _set_path(tree: Dict[str, Any], path: str, value: Any) -> None:
  *parents, leaf = path.split(".")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _integer(name: str, value: Any) -> int:
  """One item of an integer list (``"800"`` from a flag, or an int)."""
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  try:
    return int(str(value), 10)
  except ValueError:
    raise ConfigError(f"{name}: {value!r} is not an integer") from None


def _named_task_weights(weights, tasks) -> Optional[List[float]]:
  """``--task_weights=relative_position=4``: weights by task name, 1 for
  every task not named, in the order of ``tasks`` (so a flagfile's weights
  survive a later ``--tasks`` that reorders or drops tasks; names of tasks
  not trained are ignored). None when the weights are plain numbers (one
  per task, in order) or not given."""
  from mtssl_tf import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  items = [str(x).strip() for x in (weights or ()) if str(x).strip()]
  if not any("=" in x for x in items):
    return None
  named: Dict[str, float] = {}
  for item in items:
    name, eq, number = item.partition("=")
    name = name.strip()
    if not eq:
      raise ConfigError(
          f"task_weights={items}: give every weight as task=weight (e.g. "
          "relative_position=4) or none (one number per task, in order)")
    try:
      tasks_lib.check_task_name(name)
    except ValueError as e:
      raise ConfigError(f"task_weights: {e}") from None
    try:
      named[name] = float(number)
    except ValueError:
      raise ConfigError(f"task_weights {item!r}: {number!r} is not a "
                        "number") from None
  names = [t.strip() for t in (tasks or ()) if str(t).strip()]
  return [named.get(t, 1.0) for t in names]


def import_task_modules(names: Sequence[str]) -> List[str]:
  """Imports the ``--task_module`` modules (comma-separated entries
  allowed), so that the tasks they register can be named in ``--tasks``;
  returns the module names.

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


def _say(line: str, warn: Optional[Callable[[str], None]]) -> None:
  if warn is None:
    print(line, file=sys.stderr, flush=True)
  else:
    warn(line)


def _task_batch_entries(values: Mapping[str, Any],
                        command_line: Optional[Mapping[str, Sequence[str]]],
                        tasks: Sequence[str],
                        warn: Optional[Callable[[str], None]]) -> List[str]:
  """``--task_batch_size`` entries to validate. A flagfile's entry for a
  task that the run does not train (a mode switch such as ``--tasks`` on
  top of a recipe) is dropped with one warning line; one given on the
  command line stays (the config refuses it: it would do nothing). With
  ``command_line`` unknown (None), every entry counts as a flagfile's.
  When the command line sets ``--batch_size`` and a flagfile gives a
  trained task its own size, one line says that task keeps it."""
  entries = [str(e) for e in values.get("task_batch_size") or ()]
  typed = [e for e in (command_line or {}).get("task_batch_size", ())]
  from_command_line = {e.partition("=")[0].strip() for e in typed}
  sizes = config_lib.parse_task_batch_sizes(entries)
  from mtssl_tf import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  known = set(tasks_lib.task_names())
  dropped = [n for n in sizes if n in known and n not in tasks
             and n not in from_command_line]
  if dropped:
    _say("warning: ignoring --task_batch_size " + ", ".join(
        f"{n}={sizes[n]}" for n in dropped) + " from a flagfile: not in "
         f"--tasks ({', '.join(tasks)})", warn)
  kept = [n for n in sizes if n in tasks and n not in from_command_line]
  if command_line is not None and "batch_size" in command_line and kept:
    _say(f"warning: --batch_size={values['batch_size']} does not change "
         "the task batch sizes a flagfile sets: " + ", ".join(
             f"{n} keeps {sizes[n]}" for n in kept) + "; add " + " ".join(
                 f"--task_batch_size={n}=N" for n in kept) +
         " to change it", warn)
  return [e for e in entries if e.partition("=")[0].strip() not in dropped]


def config_from_values(values: Mapping[str, Any],
                       present: Collection[str] = (),
                       warn: Optional[Callable[[str], None]] = None,
                       command_line: Optional[Mapping[str, Sequence[str]]]
                       = None) -> config_lib.TrainConfig:
  """Turns option values (by flag name) into a validated config.

  The ``--task_module`` modules are imported first. Options of an
  unselected mode (``--lasso_l1`` under ``--nolasso``, ``--image_folder``
  under ``--data=tfds``) and a flagfile's ``--task_batch_size`` of a task
  not in ``--tasks`` are ignored and named in one line passed to ``warn``
  (default: standard error); settings that contradict each other within
  the selected mode raise ``ConfigError``.

  Args:
    values: every option's value, by flag name.
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
  skip = {name for name, _ in ignored}
  by_name = options_by_name()

  def value(name):
    return _copy(by_name[name].default) if name in skip else values[name]

  named_weights = _named_task_weights(value("task_weights"), value("tasks"))
  tree: Dict[str, Any] = {}
  for option in train_options():
    if option.field is None or option.kind == "multi_string":
      continue
    v = value(option.name)
    if option.name == "task_weights" and named_weights is not None:
      v = named_weights
    if option.kind == "list":
      items = [x.strip() if isinstance(x, str) else x for x in (v or ())]
      items = [x for x in items if x != ""]
      if option.item is float:
        try:
          v = tuple(float(x) for x in items) if items else None
        except (TypeError, ValueError):
          raise ConfigError(f"{option.name}={list(items)} must be "
                            "numbers") from None
      elif option.item is int:
        v = tuple(_integer(option.name, x) for x in items)
      else:
        v = tuple(items)
    _set_path(tree, option.field, v)
  task_params = config_lib.parse_task_params(value("task_param"))
  if value("harmonize"):
    rp = task_params.setdefault("relative_position", {})
    if rp.get("color_mode", "harmonize") != "harmonize":
      # A preset switch over a flagfile's colour mode (the CPU recipe's
      # full colour): it wins, said in one line.
      _say("warning: --harmonize replaces task_param "
           f"relative_position.color_mode={rp['color_mode']}", warn)
    rp["color_mode"] = "harmonize"
  trained = [str(t).strip() for t in value("tasks") if str(t).strip()]
  task_batch_sizes = config_lib.parse_task_batch_sizes(_task_batch_entries(
      values, command_line, trained, warn))
  try:
    trunk = TrunkConfig(**tree.pop("trunk"))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return config_lib.TrainConfig(
      task_params=task_params, task_batch_sizes=task_batch_sizes,
      trunk=trunk,
      optimizer=config_lib.OptimizerConfig(**tree.pop("optimizer")),
      data=config_lib.DataConfig(**tree.pop("data")), **tree)


def flags_text(values: Mapping[str, Any]) -> str:
  """Option values as a flagfile, one ``--name=value`` a line, sorted by
  name (unset optional values left out); it parses back into the same
  config."""
  by_name = options_by_name()
  lines = []
  for name in sorted(values):
    option, value = by_name[name], values[name]
    if value is None:
      continue
    if option.kind == "multi_string":
      lines.extend(f"--{name}={v}" for v in value)
    elif option.kind == "list":
      lines.append(f"--{name}={','.join(str(v) for v in value)}")
    elif option.kind == "bool":
      lines.append(f"--{name}" if value else f"--no{name}")
    else:
      lines.append(f"--{name}={value}")
  return "\n".join(lines) + "\n"


__all__ = ["ExpandedArgv", "KINDS", "Option", "ParsedArgs",
           "config_from_values", "default_values", "expand_flagfiles",
           "flags_text", "import_task_modules", "inapplicable_options",
           "options_by_name", "parse_args", "resolve_flagfile",
           "train_options", "trunk_options"]
