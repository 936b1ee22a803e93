"""absl flags of the entry points, derived from the config dataclasses.

The flags (names, types, defaults, help) are made by
:func:`mtssl_tf.options.define_flags` from the fields of
:class:`~mtssl_tf.config.TrainConfig`, its nested configs and each task's
parameter dataclass (``--relative_position.gap=8``): a hyperparameter is
declared once, in its dataclass. Only the entry points (``train``,
``export``, ``evaluate``) import this module; everything below them
receives a frozen config.

Flagfiles (``--flagfile=configs/X.cfg``) hold one ``--name=value`` per line;
later flags win, so ``--flagfile=configs/demo.cfg --steps=10`` overrides.
The entry points parse with :func:`flags_parser`: a pre-pass expands
flagfiles (a nested ``--flagfile`` is found next to the file that includes
it, so a recipe works from any folder) and imports the ``--task_module``
modules, whose tasks' parameters then get flags; absl parses the rest.
``--help`` / ``--helpshort`` list the package's own flags, grouped, and
every task parameter with its default (``--helpfull``: absl's list, its own
flags included).

Trunk flags for another command (the names ``train`` uses)::

    from mtssl_tf.cli import flags as mt_flags
    mt_flags.define_trunk_flags(flag_values)          # --depth, --width, ...
    config = TrunkConfig(**mt_flags.trunk_kwargs_from_flags(flag_values))
"""
from __future__ import annotations

import os
import sys
import textwrap
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import flags

from mtssl_tf import config as config_lib
from mtssl_tf import options as options_lib

FLAGS = flags.FLAGS

# Flag names of `python -m mtssl_tf.train` but the task parameters, sorted.
TRAIN_FLAG_NAMES = sorted(o.name for o in options_lib.train_options())


def define_train_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the training flags, and those of every registered task's
  parameters, on ``flag_values`` (idempotent; a name that another module
  already defined is kept)."""
  options_lib.define_flags(flag_values)


def define_trunk_flags(flag_values: flags.FlagValues = FLAGS,
                       defaults: Optional[Dict[str, Any]] = None) -> None:
  """Defines the trunk's flags with ``train``'s names (``--depth``,
  ``--width``, ``--block3_last_stride``, ``--pool_padding``,
  ``--bn_epsilon``, ``--bn_momentum``, ``--sync_bn``,
  ``--input_normalization``) on ``flag_values``; names already defined there
  (by :func:`define_train_flags`) are kept.

  Args:
    flag_values: where to define them.
    defaults: other defaults by flag name (e.g. ``{"depth": 26}`` for a
      command whose random trunk is small); default: TrunkConfig's.
  """
  defaults = dict(defaults or {})
  names = {o.name for o in options_lib.trunk_options()}
  unknown = sorted(set(defaults) - names)
  if unknown:
    raise ValueError(f"defaults for unknown trunk flags {unknown}; trunk "
                     f"flags: {sorted(names)}")
  options_lib.define_flags(flag_values, options_lib.trunk_options(),
                           defaults)


def trunk_kwargs_from_flags(f: flags.FlagValues = FLAGS,
                            only_present: bool = False) -> Dict[str, Any]:
  """``TrunkConfig(**kwargs)`` keyword arguments from the trunk flags.

  Args:
    f: parsed flags holding :func:`define_trunk_flags`'s flags.
    only_present: only the flags set on the command line or in a flagfile
      (to compare with the architecture a checkpoint holds).
  """
  out = {}
  for option in options_lib.trunk_options():
    if only_present and not f[option.name].present:
      continue
    out[option.field.split(".", 1)[1]] = f[option.name].value
  return out


def config_from_flags(f: flags.FlagValues = FLAGS,
                      warn=None) -> config_lib.TrainConfig:
  """Turns parsed flags into a validated :class:`TrainConfig`, as
  :func:`mtssl_tf.options.config_from_values` does: options of an unselected
  mode are ignored with one line passed to ``warn`` (default: standard
  error); contradicting settings raise ``ConfigError``. Flags parsed by
  :func:`parse_argv` know which options the command line itself gave."""
  return options_lib.config_from_flags(f, warn=warn,
                                       command_line=command_line(f))


# -- parsing: flagfiles found from any folder ----------------------------------
# What the command line itself gave (not a flagfile), by FlagValues, as
# parse_argv last saw it.
_COMMAND_LINE: Dict[int, Tuple[Any, Mapping[str, Tuple[str, ...]]]] = {}


def command_line(f: flags.FlagValues = FLAGS
                 ) -> Optional[Mapping[str, Tuple[str, ...]]]:
  """The options given outside any flagfile in the last :func:`parse_argv`
  of ``f`` (name -> raw values); None if ``f`` was parsed otherwise."""
  ref, given = _COMMAND_LINE.get(id(f), (None, None))
  return given if ref is not None and ref() is f else None


def parse_argv(argv: Sequence[str], f: flags.FlagValues = FLAGS
               ) -> List[str]:
  """Parses ``argv`` (program name first) into ``f`` after expanding every
  ``--flagfile`` (:func:`mtssl_tf.options.expand_flagfiles`) and importing
  the ``--task_module`` modules (where ``f`` holds train's flags, their
  tasks' parameters become flags); returns the remaining arguments, as
  ``f(argv)`` does.

  Args:
    argv: the arguments, program name first.
    f: where to parse them.

  Raises:
    mtssl_tf.config.ConfigError: a flagfile that is missing or includes
      itself.
    absl.flags.Error: what absl refuses.
  """
  expanded = options_lib.expand_flagfiles(list(argv[1:]))
  options_lib.import_task_modules(options_lib.task_modules_in(expanded.argv))
  if "tasks" in f:
    options_lib.define_flags(f, options_lib.all_task_options())
  remaining = f([argv[0]] + list(expanded.argv))
  _COMMAND_LINE[id(f)] = (weakref.ref(f), expanded.command_line)
  return remaining


def flags_parser(command: str,
                 sections: Callable[[flags.FlagValues],
                                    Sequence[Tuple[str, Sequence[str]]]],
                 task_params: bool = False, note: str = "",
                 f: flags.FlagValues = FLAGS) -> Callable[[List[str]], Any]:
  """A ``flags_parser`` for ``absl.app.run``: ``--help``/``--helpshort``
  print :func:`help_text` and exit 0; flagfiles are expanded by
  :func:`parse_argv`; an error prints one line and exits
  with status 2."""

  def parse(argv):
    if any(a in HELP_ARGS for a in argv[1:]):
      # A task of one's own shows its parameters too.
      try:
        options_lib.import_task_modules(
            [a.split("=", 1)[1] for a in argv[1:]
             if a.startswith("--task_module=")])
      except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
      print(help_text(command, sections(f), f, task_params=task_params,
                      note=note))
      sys.exit(0)
    try:
      return parse_argv(argv, f)
    except (config_lib.ConfigError, flags.Error) as e:
      print(f"error: {e}", file=sys.stderr)
      print(f"python -m mtssl_tf.{command} --help lists its flags.",
            file=sys.stderr)
      sys.exit(2)

  return parse


def define_task_module_flag(f: flags.FlagValues = FLAGS) -> None:
  """Defines ``--task_module`` (train's option) on ``f`` if missing."""
  options_lib.define_flags(f, [o for o in options_lib.train_options()
                               if o.name == "task_module"])


def import_task_modules(f: flags.FlagValues = FLAGS) -> None:
  """Imports the ``--task_module`` modules (raises ``ConfigError``)."""
  options_lib.import_task_modules(f.task_module)


def run_folder_line(run_dir: str) -> str:
  """The start line that names the run folder, as an absolute path (a
  relative ``--run_dir``, from the working folder, says so)."""
  line = f"run folder: {os.path.abspath(run_dir)}"
  if not os.path.isabs(os.path.expanduser(run_dir)):
    line += f" (--run_dir={run_dir}, relative to the working folder)"
  return line


def export_model_name(f: flags.FlagValues = FLAGS) -> str:
  """The export's name: ``--model_name`` given on the command line; else,
  when the command line gives ``--run_dir``, the run folder's base name (an
  export of a user's run is not named after a recipe's model); else the
  flagfile's (or the default) ``--model_name``."""
  given = command_line(f)
  if given is None or "model_name" in given:
    return f.model_name
  if "run_dir" in given:
    return os.path.basename(os.path.normpath(f.run_dir)) or f.model_name
  return f.model_name


# -- help ------------------------------------------------------------------------
HELP_ARGS = ("--help", "-help", "--helpshort", "-helpshort", "-h", "-?")

# Train's option groups, in the order --help shows them; an option's group is
# that of its nested config (trunk: model, optimizer, data), else this table,
# else "other".
GROUPS = ("run", "tasks", "model", "data", "optimizer", "accelerator",
          "other")
_GROUP = {
    "run_dir": "run", "steps": "run", "seed": "run", "log_every": "run",
    "summary_every": "run", "checkpoint_every": "run", "max_to_keep": "run",
    "export_dir": "run", "model_name": "run", "plots": "run",
    "tasks": "tasks", "task_module": "tasks",
    "task_batch_size": "tasks", "schedule": "tasks", "task_weights": "tasks",
    "harmonize": "tasks", "pretext_eval_every": "tasks",
    "pretext_eval_examples": "tasks", "heldout_motion_records": "data",
    "batch_size": "data", "lasso": "model", "lasso_l1": "model",
    "lasso_init": "model", "update": "optimizer",
    "weight_decay": "optimizer", "strategy": "accelerator",
    "devices": "accelerator", "tpu": "accelerator",
    "steps_per_loop": "accelerator", "mixed_precision": "accelerator",
    "jit_compile": "accelerator", "cpu_replicas": "accelerator",
}
_NESTED_GROUP = {"trunk": "model", "optimizer": "optimizer", "data": "data"}


def option_group(option: options_lib.Option) -> str:
  """The --help group of one of train's options."""
  if option.field and "." in option.field:
    return _NESTED_GROUP.get(option.field.split(".", 1)[0], "other")
  return _GROUP.get(option.name, "other")


def train_sections(f: flags.FlagValues = FLAGS
                   ) -> List[Tuple[str, List[str]]]:
  """``[(group, flag names)]`` of train's options, in :data:`GROUPS` order."""
  del f
  by_group: Dict[str, List[str]] = {g: [] for g in GROUPS}
  for option in options_lib.train_options():
    by_group[option_group(option)].append(option.name)
  return [(g, names) for g, names in by_group.items() if names]


def export_sections(f: flags.FlagValues = FLAGS
                    ) -> List[Tuple[str, List[str]]]:
  """The flags that ``python -m mtssl_tf.export`` uses."""
  del f
  return [("export", ["run_dir", "export_dir", "model_name",
                      "export_version", "serving_image_size",
                      "task_module"])]


def _default_text(flag) -> str:
  value = flag.default
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value) if value else "none"
  if value is None:
    return "none"
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def task_sections(f: flags.FlagValues = FLAGS
                  ) -> List[Tuple[str, List[str]]]:
  """``[(title, flag names)]``: each registered task's parameter flags
  (the paper's four and added ones)."""
  from mtssl_tf import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  options_lib.define_flags(f, options_lib.all_task_options())
  return [(f"task {name} (--{name}.<parameter>=value)",
           [o.name for o in options_lib.task_options(name)])
          for name in tasks_lib.task_names()]


def help_text(command: str, sections: Sequence[Tuple[str, Sequence[str]]],
              f: flags.FlagValues = FLAGS, task_params: bool = False,
              note: str = "") -> str:
  """``--help`` of an entry point: usage, then each section's flags (name,
  help, default), then (``task_params``) every task's parameter flags with
  their defaults."""
  wrap = textwrap.TextWrapper(width=79, initial_indent="      ",
                              subsequent_indent="      ")
  out = [f"usage: python -m mtssl_tf.{command} [--flagfile=PATH] "
         "[--name=value ...]",
         "",
         "Later flags win: a flag after --flagfile=PATH overrides the "
         "file's value. A",
         "--flagfile inside a flagfile is found next to the including file "
         "(or in a",
         "folder above it), so a recipe runs from any folder. --helpfull: "
         "absl's list,",
         "its own flags included."]
  if note:
    out += [""] + textwrap.wrap(note, width=79)
  if task_params:
    sections = list(sections) + task_sections(f)
  for title, names in sections:
    names = [n for n in names if n in f]
    if not names:
      continue
    out += ["", f"{title}:"]
    for name in names:
      flag = f[name]
      out.append(f"  --{name}  (default: {_default_text(flag)})")
      # absl's note on repeatable flags: our help texts say it.
      text = flag.help.split(";\n")[0].replace("\n", " ")
      out.extend(wrap.wrap(text))
  return "\n".join(out)


def flags_as_text(f: flags.FlagValues = FLAGS) -> str:
  """The resolved flags, one ``--name=value`` per line (a valid flagfile,
  a run folder's ``flags.txt``)."""
  return options_lib.flags_text(options_lib.flag_values(f)[0])
