"""absl flags of the entry points, derived from the config dataclasses.

The flags (names, types, defaults, help) are made from the option table of
:mod:`mtssl_tf.options`, which reads them from the fields of
:class:`~mtssl_tf.config.TrainConfig` and its nested configs: a
hyperparameter is declared once, in its dataclass. Only the entry points
(``train``, ``export``, ``evaluate``) import this module; everything below
them receives a frozen config.

Flagfiles (``--flagfile=configs/X.cfg``) hold one ``--name=value`` per line;
later flags win, so ``--flagfile=configs/demo.cfg --steps=10`` overrides.

Trunk flags for another command (the names ``train`` uses)::

    from mtssl_tf.cli import flags as mt_flags
    mt_flags.define_trunk_flags(flag_values)          # --depth, --width, ...
    config = TrunkConfig(**mt_flags.trunk_kwargs_from_flags(flag_values))
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from absl import flags

from mtssl_tf import config as config_lib
from mtssl_tf import options as options_lib

FLAGS = flags.FLAGS

# Flag names of `python -m mtssl_tf.train`, sorted (the order of flags.txt).
TRAIN_FLAG_NAMES = sorted(o.name for o in options_lib.train_options())
_TRAIN_FLAG_NAMES = TRAIN_FLAG_NAMES  # the benchmarks' older spelling


def _define(option: options_lib.Option, flag_values: flags.FlagValues,
            default: Any = None, use_default: bool = False) -> None:
  value = default if use_default else option.default
  fv = dict(flag_values=flag_values)
  if option.kind == "bool":
    flags.DEFINE_bool(option.name, value, option.help, **fv)
  elif option.kind == "integer":
    flags.DEFINE_integer(option.name, value, option.help, **fv)
  elif option.kind == "float":
    flags.DEFINE_float(option.name, value, option.help, **fv)
  elif option.kind == "string":
    # Not DEFINE_enum: the dataclass checks the choices with a message that
    # names the field and the allowed values.
    flags.DEFINE_string(option.name, value, option.help, **fv)
  elif option.kind == "list":
    flags.DEFINE_list(option.name, None if value is None else list(value),
                      option.help, **fv)
  elif option.kind == "multi_string":
    flags.DEFINE_multi_string(option.name, list(value), option.help, **fv)
  else:
    raise TypeError(f"option {option.name}: unknown kind {option.kind!r}")


def define_train_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the training flags on ``flag_values`` (idempotent; a name
  that another module already defined raises absl's
  ``DuplicateFlagError``)."""
  for option in options_lib.train_options():
    if option.name not in flag_values:
      _define(option, flag_values)


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
  for option in options_lib.trunk_options():
    if option.name not in flag_values:
      _define(option, flag_values, defaults.get(option.name),
              use_default=option.name in defaults)


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


def _values(f: flags.FlagValues):
  names = [o.name for o in options_lib.train_options()]
  return ({n: f[n].value for n in names}, {n for n in names if f[n].present})


def inapplicable_options(f: flags.FlagValues = FLAGS):
  """``[(flag, why)]``: options set (on the command line or in a flagfile)
  for a mode that the other flags do not select."""
  return options_lib.inapplicable_options(*_values(f))


def config_from_flags(f: flags.FlagValues = FLAGS,
                      warn=None) -> config_lib.TrainConfig:
  """Turns parsed flags into a validated :class:`TrainConfig`, as
  :func:`mtssl_tf.options.config_from_values` does: options of an unselected
  mode are ignored with one line passed to ``warn`` (default: standard
  error); contradicting settings raise ``ConfigError``."""
  values, present = _values(f)
  return options_lib.config_from_values(values, present, warn=warn)


def flags_as_text(f: flags.FlagValues = FLAGS) -> str:
  """The resolved flags, one ``--name=value`` per line (a valid flagfile,
  a run folder's ``flags.txt``)."""
  return options_lib.flags_text(_values(f)[0])
