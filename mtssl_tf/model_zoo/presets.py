"""The model zoo's presets: one :class:`Preset` object per row of the
paper's Tables 2-4.

Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
Learning", ICCV 2017. Table 2 combines tasks (RP, RP+Col, RP+Ex, RP+MS,
RP+Col+Ex, RP+Col+Ex+MS), Table 3 adds harmonized inputs (RP / H,
RP+Col / H), Table 4 the lasso on the four-task network.

A preset holds typed config overrides (its tasks, harmonization, lasso),
its paper numbers (from :mod:`mtssl_tf.evaluation.paper_tables`) and one
:class:`Recipe` per scale:

* ``"paper"``: the paper's setting (ResNet-101 v2, ImageNet, RMSProp), the
  recipe a user with GPUs runs (``configs/paper_*.cfg`` plus overrides);
* ``"study"``: what ``python -m tools.zoo build NAME`` trains on the
  offline sample set; its weights are committed to the repository's
  ``model_zoo/``. It is the CPU-scale study's recipe (``configs/study_common.cfg``: depth 50, width 0.5, Adam,
  batch 16, 1,200 steps, held-out metrics) with deterministic ops, so a
  preset that is also a study row (rp, rp_h, rp_col, rp_col_ex_ms,
  rp_col_ex_ms_lasso) has exactly that row's config;
* ``"tiny"``: the study recipe shrunk to the sizes of ``configs/tiny.cfg``
  (a depth-14 trunk and small heads), for tests.

A recipe is a flagfile of the package's ``configs/`` folder (the
repository's ``configs/``, shipped as package data: one source for the
values that ``python -m mtssl_tf.train --flagfile=configs/X.cfg`` reads)
plus typed overrides; it is parsed by :func:`mtssl_tf.options.parse_args`
(absl on a private ``FlagValues``: the process's flags stay untouched),
independently of the working directory.

>>> preset = get_preset("rp_col")
>>> config = preset.config("tiny", run_dir="/tmp/rp_col")
>>> config.trunk.depth, config.tasks
(14, ('relative_position', 'colorization'))
"""
from __future__ import annotations

import dataclasses
import os
import types
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mtssl_tf import options as options_lib
from mtssl_tf.data import offline
from mtssl_tf.evaluation import paper_tables
from mtssl_tf.tasks import ABBREVIATIONS

RP, COL, EX, MS = ("relative_position", "colorization", "exemplar",
                   "motion_segmentation")
SCALES = ("paper", "study", "tiny")
# The package folder: recipes name flagfiles as "configs/X.cfg" relative to
# it (mtssl_tf/configs is the repository's configs/, package data in a
# wheel), so nested --flagfile=configs/Y.cfg lines resolve the same way.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_DIR = os.path.join(PACKAGE_DIR, "configs")

# The zoo follows the CPU-scale study: the "study" scale is
# configs/study_common.cfg, the recipe of the study's rows.
STUDY_FLAGFILE = "configs/study_common.cfg"
# Deterministic ops make a rebuild on the same machine and stack reproduce
# the committed file bit for bit (the study's runs leave them off: the only
# difference from a study row besides model_name).
ZOO_STUDY: Mapping[str, Any] = types.MappingProxyType({"deterministic": True})
# Tiny: the sizes of configs/tiny.cfg (depth-14 trunk, 32 px inputs, small
# heads; smoke.cfg and the tests use them too), with short-run settings.
TINY: Mapping[str, Any] = types.MappingProxyType({
    **options_lib.flagfile_settings(os.path.join(CONFIGS_DIR, "tiny.cfg")),
    "batch_size": 2,
    "log_every": 1,
    "summary_every": 1,
    "checkpoint_every": 1000,
    # Held-out metrics cost a trace per task; tests/test_pretext_eval.py
    # covers them.
    "pretext_eval_every": 0,
    # Only what pip installs: the tests build tiny presets where the set-up
    # step has not fetched OpenCV's samples (the study recipe names them, and
    # a named package that is missing is an error).
    "offline_packages": offline.PIP_PACKAGES,
})
# RP's share of the steps against each other task's in multi-task presets
# (the study's weighted schedule).
RP_WEIGHT = 4.0
# The lasso of the study's lasso row (docs/records/lasso_runs.md: at 1e-3 the
# L1 term is worth a few thousandths of the loss and the rows barely move).
LASSO: Mapping[str, Any] = types.MappingProxyType(
    {"lasso": True, "lasso_l1": 0.01})


def _format(name: str, value: Any) -> List[str]:
  """A typed override as ``python -m mtssl_tf.train`` arguments."""
  return options_lib.override_lines({name: value})


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How to train a preset at one scale.

  Attributes:
    flagfile: a flagfile of the package's configs, ``"configs/X.cfg"`` (the
      same path from the repository root).
    overrides: typed values by flag name, applied after the flagfile (see
      :func:`mtssl_tf.options.parse_args`).
  """
  flagfile: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def argv(self) -> Tuple[str, ...]:
    """The recipe as ``python -m mtssl_tf.train`` arguments (run from the
    repository root)."""
    out = [f"--flagfile={self.flagfile}"]
    for name, value in self.overrides.items():
      out.extend(_format(name, value))
    return tuple(out)

  def parse(self, *sources: Any, warn=None) -> options_lib.ParsedArgs:
    """The recipe's options and config; ``sources`` (argv lists or
    mappings, as :func:`mtssl_tf.options.parse_args` takes) win over it."""
    return options_lib.parse_args([f"--flagfile={self.flagfile}"],
                                  dict(self.overrides), *sources,
                                  root=PACKAGE_DIR, warn=warn)


@dataclasses.dataclass(frozen=True)
class Preset:
  """One model-zoo entry: a task combination, harmonization and lasso.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017, Tables 2-4.

  Attributes:
    name: registry name, e.g. ``"rp_col_h"`` (also the weights file's name).
    display_name: the paper tables' spelling, e.g. ``"RP+Col / H"``.
    tasks: task names in the paper's order.
    harmonize: relative position sees the Lab L channel (Table 3, "/ H").
    lasso: the UnitMixer over block 3 (Table 4).
    paper: the paper-scale :class:`Recipe`.
    paper_results: the paper's numbers for this row (ImageNet Recall@5,
      VOC07 mAP, NYU % pixels below 1.25), keyed by table.
    description: one line for listings.
    weights_url: where the weights file lives when it is not in the zoo
      folder (``http(s)://``, ``file://``): ``load`` fetches it with
      ``keras.utils.get_file`` into the cache
      (:mod:`mtssl_tf.model_zoo.download`). ``None``: the zoo folder only.
    weights_sha256: the sha256 of that file (required with ``weights_url``).

  Example:
    >>> preset = get_preset("rp_col")
    >>> preset.overrides
    {'tasks': ('relative_position', 'colorization')}
    >>> preset.recipe("study").flagfile
    'configs/study_common.cfg'
  """
  name: str
  display_name: str
  tasks: Tuple[str, ...]
  harmonize: bool = False
  lasso: bool = False
  paper: Optional[Recipe] = None
  paper_results: Mapping[str, Mapping[str, float]] = dataclasses.field(
      default_factory=dict)
  description: str = ""
  weights_url: Optional[str] = None
  weights_sha256: Optional[str] = None

  def __post_init__(self):
    if self.weights_url is not None:
      from mtssl_tf.model_zoo.download import check_sha256
      object.__setattr__(self, "weights_sha256", check_sha256(
          self.weights_sha256, f"preset {self.name!r} weights_url"))
    elif self.weights_sha256 is not None:
      raise ValueError(f"preset {self.name!r}: weights_sha256 without "
                       "weights_url")

  @property
  def label(self) -> str:
    """The paper-table checkpoint label (``"RP+Col/H"``), see
    :func:`paper_label`."""
    return paper_label(self.tasks, self.harmonize, self.lasso)

  @property
  def weights_filename(self) -> str:
    return f"{self.name}.weights.h5"

  @property
  def metadata_filename(self) -> str:
    return f"{self.name}.json"

  @property
  def overrides(self) -> Dict[str, Any]:
    """What defines this preset, as typed config overrides (flag names):
    its tasks, and harmonize / the lasso where it has them."""
    out: Dict[str, Any] = {"tasks": tuple(self.tasks)}
    if len(self.tasks) > 1:
      # The study's multi-task rows give RP 4x each other task's share of
      # the steps (configs/study_rp_col.cfg, study_4task*.cfg).
      out["schedule"] = "weighted"
      out["task_weights"] = tuple(RP_WEIGHT if t == RP else 1.0
                                  for t in self.tasks)
    if self.harmonize:
      # The recipe's RP reads full colour (study_common.cfg); RP/H rows say
      # harmonize in both places (configs/study_rp_h.cfg).
      out["task_param"] = {RP: {"color_mode": "harmonize"}}
      out["harmonize"] = True
    if self.lasso:
      out.update(LASSO)
    return out

  def recipe(self, scale: str = "study") -> Recipe:
    """The :class:`Recipe` that trains this preset at ``scale`` (one of
    :data:`SCALES`); study and tiny leave ``run_dir`` to the caller."""
    if scale not in SCALES:
      raise ValueError(f"unknown scale {scale!r}; known scales: "
                       f"{', '.join(SCALES)}")
    if scale == "paper":
      if self.paper is None:
        raise ValueError(f"preset {self.name!r} has no paper recipe")
      return self.paper
    overrides = dict(ZOO_STUDY, **self.overrides,
                     model_name=f"zoo_{self.name}")
    if scale == "tiny":
      task_params = {t: dict(p) for t, p in overrides.get(
          "task_param", {}).items()}
      overrides.update(TINY)
      for t, p in TINY["task_param"].items():
        task_params.setdefault(t, {}).update(p)
      overrides["task_param"] = task_params
    return Recipe(STUDY_FLAGFILE, overrides)

  def train_flags(self, scale: str = "study") -> Tuple[str, ...]:
    """The recipe at ``scale`` as ``python -m mtssl_tf.train`` arguments
    (from the repository root)."""
    return self.recipe(scale).argv()

  @property
  def paper_flags(self) -> Tuple[str, ...]:
    """The paper recipe as ``python -m mtssl_tf.train`` arguments."""
    return self.train_flags("paper")

  def parse(self, scale: str = "study", *sources: Any,
            run_dir: Optional[str] = None, warn=None
            ) -> options_lib.ParsedArgs:
    """The options and config of this preset at ``scale``; ``sources``
    (argv lists or typed mappings) and ``run_dir`` win over the recipe."""
    extra = list(sources)
    if run_dir is not None:
      extra.append({"run_dir": run_dir})
    elif scale != "paper":
      extra.append({"run_dir": f"runs/zoo/{self.name}"})
    return self.recipe(scale).parse(*extra, warn=warn)

  def config(self, scale: str = "study", *sources: Any,
             run_dir: Optional[str] = None, warn=None):
    """The validated :class:`~mtssl_tf.config.TrainConfig` of this preset
    at ``scale`` (see :meth:`parse`)."""
    return self.parse(scale, *sources, run_dir=run_dir, warn=warn).config


def _paper(flagfile: str, **overrides: Any) -> Recipe:
  return Recipe(f"configs/{flagfile}", overrides)


def _display(tasks, harmonize) -> str:
  name = "+".join(ABBREVIATIONS[t] for t in tasks)
  return name + (" / H" if harmonize else "")


paper_label = paper_tables.paper_label


def _preset(name, tasks, paper, harmonize=False, lasso=False,
            description=""):
  display = _display(tasks, harmonize) + (" (lasso)" if lasso else "")
  results = paper_tables.results_for(paper_label(tasks, harmonize, lasso))
  if not results:
    raise ValueError(f"preset {name!r}: no row of the paper's tables")
  return Preset(name=name, display_name=display, tasks=tuple(tasks),
                harmonize=harmonize, lasso=lasso, paper=paper,
                paper_results=results,
                description=description)


# Paper numbers: looked up in mtssl_tf.evaluation.paper_tables by each
# preset's paper_label (Tables 2-4: ImageNet Recall@5, VOC07 mAP, NYU % <
# 1.25).
_PRESETS: Tuple[Preset, ...] = (
    _preset("rp", [RP], _paper("paper_rp.cfg"),
            description="relative position, colour dropping"),
    _preset("rp_h", [RP],
            _paper("paper_rp.cfg", harmonize=True,
                   run_dir="runs/paper_rp_h", model_name="mtssl_rp_h"),
            harmonize=True,
            description="relative position on the Lab L channel"),
    _preset("rp_col", [RP, COL], _paper("paper_rp_col.cfg"),
            description="relative position + colorization"),
    _preset("rp_col_h", [RP, COL],
            _paper("paper_rp_col.cfg", harmonize=True,
                   run_dir="runs/paper_rp_col_h",
                   model_name="mtssl_rp_col_h"), harmonize=True,
            description="relative position + colorization, harmonized"),
    _preset("rp_ex", [RP, EX],
            _paper("paper_common.cfg", tasks=(RP, EX),
                   run_dir="runs/paper_rp_ex", model_name="mtssl_rp_ex"),
            description="relative position + exemplar"),
    _preset("rp_ms", [RP, MS],
            _paper("paper_common.cfg", tasks=(RP, MS),
                   motion_records="data/motion/*.tfrecord",
                   run_dir="runs/paper_rp_ms", model_name="mtssl_rp_ms"),
            description="relative position + motion segmentation"),
    _preset("rp_col_ex", [RP, COL, EX],
            _paper("paper_common.cfg", tasks=(RP, COL, EX),
                   run_dir="runs/paper_rp_col_ex",
                   model_name="mtssl_rp_col_ex"),
            description="three image tasks"),
    _preset("rp_col_ex_ms", [RP, COL, EX, MS], _paper("paper_4task.cfg"),
            description="all four tasks, no lasso"),
    _preset("rp_col_ex_ms_lasso", [RP, COL, EX, MS],
            _paper("paper_4task_lasso.cfg"),
            lasso=True, description="all four tasks with the lasso"),
)
PRESETS: Dict[str, Preset] = {p.name: p for p in _PRESETS}


def list_presets() -> List[str]:
  """The preset names, in the paper's order."""
  return list(PRESETS)


def get_preset(name: str) -> Preset:
  """The preset ``name``; an unknown name raises ``ValueError`` listing the
  known ones."""
  if name not in PRESETS:
    raise ValueError(f"unknown model-zoo preset {name!r}; known presets: "
                     f"{', '.join(PRESETS)}")
  return PRESETS[name]


def parse_train_flags(argv: Sequence[str]):
  """Parses ``python -m mtssl_tf.train`` arguments into a config, relative
  flagfile paths resolving from the package (``configs/X.cfg``).

  Returns:
    ``(config, flags_text)``: the validated
    :class:`~mtssl_tf.config.TrainConfig` and the resolved options as a
    flagfile (what the run folder's ``flags.txt`` holds).

  Raises:
    mtssl_tf.config.ConfigError: an unknown flag or an invalid value.
  """
  parsed = options_lib.parse_args(list(argv), root=PACKAGE_DIR)
  return parsed.config, parsed.text


def preset_config(name: str, scale: str = "study",
                  extra_flags: Sequence[str] = (),
                  overrides: Optional[Mapping[str, Any]] = None):
  """The validated :class:`~mtssl_tf.config.TrainConfig` of a preset at
  ``scale``; ``extra_flags`` (argv strings), then ``overrides`` (typed, by
  flag name) win over its recipe."""
  return get_preset(name).config(scale, list(extra_flags), dict(
      overrides or {}))


__all__ = ["PRESETS", "Preset", "Recipe", "SCALES", "get_preset",
           "list_presets", "paper_label", "parse_train_flags",
           "preset_config"]
