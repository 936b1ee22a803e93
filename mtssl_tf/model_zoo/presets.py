"""The model zoo's registry: one :class:`Preset` per row of the paper's
Tables 2-4.

Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
Learning", ICCV 2017. Table 2 combines tasks (RP, RP+Col, RP+Ex, RP+MS,
RP+Col+Ex, RP+Col+Ex+MS), Table 3 adds harmonized inputs (RP / H,
RP+Col / H), Table 4 the lasso on the four-task network.

A preset is a set of training flags, at three scales:

* ``"paper"``: the paper's setting (ResNet-101 v2, ImageNet, RMSProp), the
  recipe a user with GPUs runs (``configs/paper_*.cfg`` plus flags);
* ``"demo"``: what ``python -m mtssl_tf.model_zoo build NAME`` trains on
  the offline sample set; its weights are committed (small: depth 26, width
  0.25, so that every weights file stays under 4 MB);
* ``"tiny"``: the demo flags shrunk to a depth-14 trunk and small heads, for
  tests.

Flags are parsed by the same code as ``python -m mtssl_tf.train``
(:func:`mtssl_tf.flags.config_from_flags`) on a private copy of the training
flags, so a preset never touches the process's global ``FLAGS``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import flags as absl_flags

from mtssl_tf import flags as mt_flags
from mtssl_tf.evaluation import paper_tables
from mtssl_tf.tasks import ABBREVIATIONS

RP, COL, EX, MS = ("relative_position", "colorization", "exemplar",
                   "motion_segmentation")
SCALES = ("paper", "demo", "tiny")

DEMO_FLAGFILE = "configs/demo_common.cfg"
# The zoo's demo variant of configs/demo_common.cfg: width 0.25 keeps the
# four-task weights file at about 3.3 MB (width 0.5 would be 7.5 MB), and
# deterministic ops make a rebuild on the same machine and stack reproduce
# the committed file bit for bit. (The committed colorization presets were
# trained before runs computed their own colorization prior; a rebuild now
# rebalances with the offline set's prior and gives other weights.)
ZOO_DEMO_FLAGS: Tuple[str, ...] = ("--width=0.25", "--deterministic")
# Tiny: the sizes of configs/smoke.cfg (depth-14 trunk, 32 px inputs, small
# heads), written out so that non-lasso presets can use them too (smoke.cfg
# sets --lasso_l1, which contradicts --nolasso).
TINY_FLAGS: Tuple[str, ...] = (
    "--depth=14",
    "--width=0.25",
    "--batch_size=2",
    "--log_every=1",
    "--summary_every=1",
    "--checkpoint_every=1000",
    "--task_param=relative_position.patch_size=16",
    "--task_param=relative_position.gap=4",
    "--task_param=relative_position.jitter=2",
    "--task_param=relative_position.downsample_max=15",
    "--task_param=relative_position.embedding_units=32",
    "--task_param=relative_position.hidden_units=(32,)",
    "--task_param=colorization.crop_size=32",
    "--task_param=colorization.hidden_channels=16",
    "--task_param=exemplar.crop_size=32",
    "--task_param=exemplar.num_views=2",
    "--task_param=exemplar.embedding_dim=16",
    "--task_param=motion_segmentation.crop_size=32",
    "--task_param=motion_segmentation.output_size=8",
    "--task_param=motion_segmentation.hidden_channels=16",
)
LASSO_FLAGS: Tuple[str, ...] = ("--lasso", "--lasso_l1=0.001")


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
    paper_flags: the paper-scale recipe, arguments of
      ``python -m mtssl_tf.train`` (relative paths from the repository root).
    paper_results: the paper's numbers for this row (ImageNet Recall@5,
      VOC07 mAP, NYU % pixels below 1.25), keyed by table.
    description: one line for listings.
    weights_url: where the weights file lives when it is not shipped in
      the package (``http(s)://``, ``file://``): ``load`` fetches it with
      ``keras.utils.get_file`` into the cache
      (:mod:`mtssl_tf.model_zoo.download`). ``None``: package data only.
    weights_sha256: the sha256 of that file (required with ``weights_url``).

  Example:
    >>> preset = get_preset("rp_col")
    >>> preset.train_flags("demo")[:2]
    ('--flagfile=configs/demo_common.cfg', '--width=0.25')
  """
  name: str
  display_name: str
  tasks: Tuple[str, ...]
  harmonize: bool = False
  lasso: bool = False
  paper_flags: Tuple[str, ...] = ()
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

  def train_flags(self, scale: str = "demo") -> Tuple[str, ...]:
    """Arguments of ``python -m mtssl_tf.train`` that train this preset at
    ``scale`` (one of :data:`SCALES`), without ``--run_dir`` for demo and
    tiny (the build command chooses the folder)."""
    if scale == "paper":
      return tuple(self.paper_flags)
    if scale not in SCALES:
      raise ValueError(f"unknown scale {scale!r}; known scales: "
                       f"{', '.join(SCALES)}")
    argv = [f"--flagfile={DEMO_FLAGFILE}", *ZOO_DEMO_FLAGS,
            f"--tasks={','.join(self.tasks)}"]
    if self.harmonize:
      argv.append("--harmonize")
    if self.lasso:
      argv.extend(LASSO_FLAGS)
    argv.append(f"--model_name=zoo_{self.name}")
    if scale == "tiny":
      argv.extend(TINY_FLAGS)
    return tuple(argv)


def _paper(flagfile: str, *extra: str) -> Tuple[str, ...]:
  return (f"--flagfile=configs/{flagfile}",) + extra


def _display(tasks, harmonize) -> str:
  name = "+".join(ABBREVIATIONS[t] for t in tasks)
  return name + (" / H" if harmonize else "")


def paper_label(tasks, harmonize: bool = False, lasso: bool = False) -> str:
  """The paper-table checkpoint label of a task combination (``"RP+Col/H"``,
  ``"RP+Col+Ex+MS/Lasso"``), as :mod:`mtssl_tf.evaluation.paper_tables`
  names its rows."""
  label = "+".join(ABBREVIATIONS[t] for t in tasks)
  return label + ("/H" if harmonize else "") + ("/Lasso" if lasso else "")


def _preset(name, tasks, paper_flags, harmonize=False, lasso=False,
            description=""):
  display = _display(tasks, harmonize) + (" (lasso)" if lasso else "")
  results = paper_tables.results_for(paper_label(tasks, harmonize, lasso))
  if not results:
    raise ValueError(f"preset {name!r}: no row of the paper's tables")
  return Preset(name=name, display_name=display, tasks=tuple(tasks),
                harmonize=harmonize, lasso=lasso,
                paper_flags=tuple(paper_flags), paper_results=results,
                description=description)


# Paper numbers: looked up in mtssl_tf.evaluation.paper_tables by each
# preset's paper_label (Tables 2-4: ImageNet Recall@5, VOC07 mAP, NYU % <
# 1.25).
_PRESETS: Tuple[Preset, ...] = (
    _preset("rp", [RP], _paper("paper_rp.cfg"),
            description="relative position, colour dropping"),
    _preset("rp_h", [RP],
            _paper("paper_rp.cfg", "--harmonize", "--run_dir=runs/paper_rp_h",
                   "--model_name=mtssl_rp_h"), harmonize=True,
            description="relative position on the Lab L channel"),
    _preset("rp_col", [RP, COL], _paper("paper_rp_col.cfg"),
            description="relative position + colorization"),
    _preset("rp_col_h", [RP, COL],
            _paper("paper_rp_col.cfg", "--harmonize",
                   "--run_dir=runs/paper_rp_col_h",
                   "--model_name=mtssl_rp_col_h"), harmonize=True,
            description="relative position + colorization, harmonized"),
    _preset("rp_ex", [RP, EX],
            _paper("paper_common.cfg", "--tasks=relative_position,exemplar",
                   "--run_dir=runs/paper_rp_ex", "--model_name=mtssl_rp_ex"),
            description="relative position + exemplar"),
    _preset("rp_ms", [RP, MS],
            _paper("paper_common.cfg",
                   "--tasks=relative_position,motion_segmentation",
                   "--motion_records=data/motion/*.tfrecord",
                   "--run_dir=runs/paper_rp_ms", "--model_name=mtssl_rp_ms"),
            description="relative position + motion segmentation"),
    _preset("rp_col_ex", [RP, COL, EX],
            _paper("paper_common.cfg",
                   "--tasks=relative_position,colorization,exemplar",
                   "--run_dir=runs/paper_rp_col_ex",
                   "--model_name=mtssl_rp_col_ex"),
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


# -- flag parsing -------------------------------------------------------------
def repo_root() -> Optional[str]:
  """The source checkout holding ``configs/`` (the demo and paper flagfiles
  live there, not in the installed package); ``None`` if there is none."""
  candidates = [
      os.path.dirname(os.path.dirname(os.path.dirname(
          os.path.abspath(__file__)))),
      os.getcwd(),
  ]
  for root in candidates:
    if os.path.exists(os.path.join(root, DEMO_FLAGFILE)):
      return root
  return None


def _require_repo_root() -> str:
  root = repo_root()
  if root is None:
    raise FileNotFoundError(
        f"{DEMO_FLAGFILE} not found: presets are trained from the flagfiles "
        "in the repository's configs/ folder; run from a clone of the "
        "mtssl_tf repository (built presets load without it)")
  return root


@contextlib.contextmanager
def _working_dir(path: str):
  # Nested --flagfile= paths inside configs/*.cfg resolve from the working
  # directory, as they do for `python -m mtssl_tf.train` run from the repo.
  old = os.getcwd()
  os.chdir(path)
  try:
    yield
  finally:
    os.chdir(old)


def _fresh_train_flags() -> absl_flags.FlagValues:
  """A private FlagValues holding copies of the training flags, so parsing
  here neither reads nor resets the process's global FLAGS."""
  mt_flags.define_train_flags()
  fresh = absl_flags.FlagValues()
  for name in mt_flags._TRAIN_FLAG_NAMES:  # pylint: disable=protected-access
    flag = copy.deepcopy(absl_flags.FLAGS[name])
    flag.unparse()
    fresh[name] = flag
  return fresh


def parse_train_flags(argv: Sequence[str]):
  """Parses ``python -m mtssl_tf.train`` arguments into a config.

  Args:
    argv: flags, e.g. ``preset.train_flags("demo")``; relative flagfile
      paths resolve from the repository root.

  Returns:
    ``(config, flags_text)``: the validated
    :class:`~mtssl_tf.config.TrainConfig` and the resolved flags as a
    flagfile (what the run folder's ``flags.txt`` holds).

  Raises:
    mtssl_tf.config.ConfigError: an unknown flag or an invalid value.
  """
  from mtssl_tf.config import ConfigError
  values = _fresh_train_flags()
  root = _require_repo_root()
  with _working_dir(root):
    try:
      values(["model_zoo"] + list(argv))
    except absl_flags.Error as e:
      raise ConfigError(f"bad training flags {list(argv)}: {e}") from None
  return mt_flags.config_from_flags(values), mt_flags.flags_as_text(values)


def preset_config(name: str, scale: str = "demo",
                  extra_flags: Sequence[str] = ()):
  """The validated :class:`~mtssl_tf.config.TrainConfig` of a preset."""
  preset = get_preset(name)
  argv = list(preset.train_flags(scale))
  if scale != "paper":
    argv.append(f"--run_dir=runs/zoo/{name}")
  config, _ = parse_train_flags(argv + list(extra_flags))
  return config


__all__ = ["Preset", "PRESETS", "SCALES", "get_preset", "list_presets",
           "parse_train_flags", "preset_config", "repo_root"]
