"""The one config mechanism: fields declared once with their allowed values,
checked by one routine; each task's parameters a typed dataclass whose
fields are typed flags, parsed by absl."""
import dataclasses
import inspect
import os
from typing import Tuple

import pytest

from mtssl_tf import options
from mtssl_tf import tasks as tasks_lib
from mtssl_tf.config import ConfigError, DataConfig, OptimizerConfig
from mtssl_tf.tasks import params as task_params_lib
from mtssl_tf.utils import fields

import harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class _Example:
  steps: int = fields.option(10, "Steps.", minimum=1)
  rate: float = fields.option(0.5, "Rate.", above=0, below=1)
  mode: str = fields.option("a", "Mode.", choices=("a", "b"), flag="the_mode")
  sizes: Tuple[int, ...] = fields.option((), "Sizes.", minimum=2)

  def __post_init__(self):
    fields.check_fields(self)


@pytest.mark.parametrize("kwargs,message", [
    (dict(steps=0), r"^steps=0 must be an integer >= 1$"),
    (dict(steps=2.0), r"^steps=2.0 must be an integer >= 1$"),
    (dict(steps=True), r"^steps=True must be an integer >= 1$"),
    (dict(rate=1.0), r"^rate=1.0 must be a number > 0 and < 1$"),
    (dict(rate=float("nan")), r"^rate=nan must be a number > 0 and < 1$"),
    (dict(mode="c"), r"^the_mode='c'; allowed: a, b$"),
])
def test_check_fields_names_the_flag_the_value_and_what_is_allowed(kwargs,
                                                                   message):
  with pytest.raises(ValueError, match=message):
    _Example(**kwargs)


def test_check_fields_checks_each_item_of_a_tuple_field():
  assert _Example(sizes=(2, 3)).sizes == (2, 3)
  with pytest.raises(ValueError, match=r"^sizes: 1 in \[2, 1\] must be an "
                     r"integer >= 2$"):
    _Example(sizes=(2, 1))


def test_config_dataclasses_use_the_one_routine():
  # Bounds and choices declared on the fields reach the configs' errors.
  with pytest.raises(ConfigError, match=r"learning_rate=0 must be a number "
                     r"> 0"):
    OptimizerConfig(learning_rate=0)
  with pytest.raises(ConfigError, match=r"offline_packages: 'x' in \['x'\]; "
                     "allowed: scikit-image"):
    DataConfig(offline_packages=("x",))


@pytest.mark.parametrize("name", tasks_lib.task_names())
def test_task_parameter_dataclass_follows_the_constructor(name):
  cls = tasks_lib.get_task_class(name)
  signature = inspect.signature(cls.__init__).parameters
  expected = [(p.name, p.default) for p in signature.values()
              if p.name != "self" and p.kind not in (p.VAR_POSITIONAL,
                                                     p.VAR_KEYWORD)]
  got = [(f.name, f.default) for f in dataclasses.fields(
      task_params_lib.config_class(cls))]
  assert got == expected
  assert [o.name for o in options.task_options(name)] == [
      f"{name}.{param}" for param, _ in expected]


def test_task_parameters_are_typed_flags():
  parsed = options.parse_args(
      ["--tasks=relative_position,motion_segmentation",
       "--relative_position.hidden_units=8,4",
       "--relative_position.rescale_pixels=none",
       "--relative_position.noise_std=0", "--relative_position.fc_norm",
       "--motion_segmentation.output_size=none"])
  assert dict(parsed.config.task_params["relative_position"]) == {
      "hidden_units": (8, 4), "rescale_pixels": None, "noise_std": 0.0,
      "fc_norm": True}
  assert dict(parsed.config.task_params["motion_segmentation"]) == {
      "output_size": None}
  again = options.parse_args(parsed.text.split())
  assert again.config == parsed.config
  for argv, message in [
      (["--relative_position.gap=x"], r"flag --relative_position.gap=x: "
       "invalid literal for int"),
      (["--relative_position.gap=none"], r"flag --relative_position.gap="
       "none: invalid literal for int"),
      (["--relative_position.gapp=2"], r"Unknown command line flag "
       r"'relative_position.gapp'. Did you mean: relative_position.gap"),
      (["--relative_position.patch_size=0"], r"--relative_position\.\* "
       "parameters: patch_size must be >= 1")]:
    with pytest.raises(ConfigError, match=message):
      options.parse_args(["--tasks=relative_position"] + argv)


def test_the_tiny_sizes_have_one_source():
  from mtssl_tf.model_zoo import presets  # pylint: disable=g-import-not-at-top
  tiny = options.flagfile_settings(os.path.join(REPO, "configs", "tiny.cfg"))
  assert harness.TRUNK == {"depth": tiny["depth"], "width": tiny["width"]}
  assert harness.TASK_PARAMS == tiny["task_param"]
  config = presets.get_preset("rp_col_ex_ms_lasso").config(
      "tiny", run_dir="/tmp/tiny", warn=lambda s: None)
  smoke = options.parse_args(["--flagfile=configs/smoke.cfg"],
                             root=REPO).config
  for run in (config, smoke):
    assert (run.trunk.depth, run.trunk.width) == (tiny["depth"],
                                                  tiny["width"])
    for name, params in tiny["task_param"].items():
      for key, value in params.items():
        assert run.task_params[name][key] == value, (name, key)
