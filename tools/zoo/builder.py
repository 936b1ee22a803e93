"""Building presets: trains a preset at study (or tiny) scale in this
process with :class:`~mtssl_tf.training.trainer.Trainer` and writes its
weights and metadata into a zoo folder (``python -m tools.zoo build
NAME``; by default the checkout's ``model_zoo/``), or imports a finished
run of the preset's recipe, such as a study row's seed-0 run (``build NAME
--from_run=RUN_DIR``).

No subprocess, no working-directory change, no absl: the recipe is parsed
by :func:`mtssl_tf.options.parse_args` from the package's ``configs/``.
"""
from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple)

from mtssl_tf.model_zoo.download import sha256_file
from mtssl_tf.model_zoo.load import make_model
from mtssl_tf.model_zoo.presets import PACKAGE_DIR, get_preset
from mtssl_tf.model_zoo.provenance import (build_command, planned_flags,
                                           up_to_date)
from mtssl_tf.model_zoo.store import (DEFAULT_WEIGHTS_DTYPE,
                                      METADATA_VERSION, RUN_DIR_PLACEHOLDER,
                                      WEIGHTS_DTYPES, folder, is_built,
                                      load_metadata, weights_path,
                                      write_json)
from tools.zoo.float16 import write_weights


def _version(distribution: str) -> Optional[str]:
  from mtssl_tf.data import assets, offline  # pylint: disable=g-import-not-at-top
  if distribution in offline.FETCHED_PACKAGES:
    # Fetched from the source archive of this OpenCV version (the pinned
    # opencv-python-headless, or contrib's), not an installed distribution.
    return assets.OPENCV_VERSION
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _data_description(config) -> Dict[str, Any]:
  """Which photos and videos a data=offline run read, with the versions of
  the packages that ship them."""
  data = config.data
  result: Dict[str, Any] = {"source": data.source}
  if data.source != "offline":
    result.update(tfds_name=data.tfds_name, image_folder=data.image_folder,
                  motion_records=data.motion_records)
    return result
  from mtssl_tf.data import offline
  packages = list(data.offline_packages) or None
  # Training reads the "train" split only: photos and the frames of the
  # train videos (motion masks from the same videos).
  try:
    files = offline.offline_image_files(packages, "train")
  except offline.OfflineDataError:
    files = []
  videos = offline.offline_video_files(packages, "train")
  result["images"] = [f.name for f in files]
  result["videos"] = [os.path.basename(v.path) for v in videos]
  result["heldout"] = sorted(
      f.name for f in offline.offline_video_files(packages, "heldout"))
  try:
    result["heldout"] = sorted(result["heldout"] + [
        f.name for f in offline.offline_image_files(packages, "heldout")])
  except offline.OfflineDataError:
    pass
  used = sorted({f.package for f in files + videos})
  result["packages"] = {p: _version(p) for p in used}
  result["image_size_limit"] = data.image_size_limit
  return result


def _final_losses(run_dir: str, last: int = 50) -> Dict[str, float]:
  """Each task's mean loss over its last ``last`` logged steps."""
  path = os.path.join(run_dir, "history.jsonl")
  per_task: Dict[str, list] = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        if "loss" in rec:  # else a held-out metrics record
          per_task.setdefault(rec["task"], []).append(rec["loss"])
  return {t: round(sum(v[-last:]) / len(v[-last:]), 5)
          for t, v in per_task.items() if v}


def read_pretext_metrics(run_dir: str) -> Dict[str, Any]:
  """The run's final held-out pretext metrics
  (:func:`mtssl_tf.training.pretext_eval.read_json`); ``{}`` when the run
  measured none (``pretext_eval_every=0``).

  Raises:
    ValueError: a file that is not ``{task: {metric: value}}`` JSON.
  """
  from mtssl_tf.training import pretext_eval  # pylint: disable=g-import-not-at-top
  return pretext_eval.read_json(run_dir) or {}


def repo_root() -> Optional[str]:
  """The git checkout holding the package (``None`` for an installed
  wheel): only to record the source commit in the metadata."""
  root = os.path.dirname(PACKAGE_DIR)
  return root if os.path.exists(os.path.join(root, ".git")) else None


def _source_commit(root: str) -> Optional[str]:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root,
                         capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  if out.returncode != 0:
    return None
  return out.stdout.strip() or None


@contextlib.contextmanager
def _restored_op_determinism():
  """The Trainer turns on TF's process-wide op determinism for
  deterministic recipes; a library call must not leave it on for its
  caller."""
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import
  before = tf_config.is_op_determinism_enabled()
  try:
    yield
  finally:
    if not before and tf_config.is_op_determinism_enabled():
      tf_config.disable_op_determinism()


def _copy_by_name(source, target) -> None:
  """Copies every weight of ``source`` into ``target`` by its checkpoint
  name (trunk layer, task head, mixer row), never by position."""
  from mtssl_tf.training import run_checkpoints  # pylint: disable=g-import-not-at-top
  src = run_checkpoints.model_variables(source)
  dst = run_checkpoints.model_variables(target)
  if set(src) != set(dst):
    raise ValueError(
        "the trained model and the plain model differ in weights: "
        f"{sorted(set(src) ^ set(dst))[:5]}")
  for name, variable in dst.items():
    variable.assign(src[name])


def build_preset(name: str, *, steps: Optional[int] = None,
                 tiny: bool = False, weights_dir: Optional[str] = None,
                 work_dir: Optional[str] = None,
                 extra_flags: Sequence[str] = (),
                 overrides: Optional[Mapping[str, Any]] = None,
                 from_run: Optional[str] = None,
                 weights_dtype: str = DEFAULT_WEIGHTS_DTYPE,
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Trains a preset at study (or tiny) scale, or imports a finished run of
  its recipe, and writes its weights and metadata.

  Training runs in this process with
  :class:`~mtssl_tf.training.trainer.Trainer` on the config of the preset's
  recipe (:meth:`Preset.parse <mtssl_tf.model_zoo.presets.Preset.parse>`);
  the trained weights are copied into a model built from that config.

  With ``from_run`` nothing is trained: the run folder's config must be
  the preset's (see :func:`from_run_differences`), its last checkpoint at
  the config's steps, and its weights are copied by name. The study's
  seed-0 runs (``configs/study_*.cfg``) are five presets' recipes but for
  ``--deterministic`` and the model name (model_zoo/README.md).

  Args:
    name: preset name.
    steps: training steps (default: the study config's).
    tiny: the tiny architecture (tests, quick checks).
    weights_dir: where ``<name>.weights.h5`` and ``<name>.json`` go
      (default: the checkout's ``model_zoo/``).
    work_dir: folder of the training run (``<work_dir>/<name>``), kept;
      re-running with the same folder resumes. Default: a temporary folder,
      removed afterwards. Not with ``from_run``.
    extra_flags: more training options as argv strings (recorded in the
      metadata), e.g. ``["--batch_size=4"]``.
    overrides: more training options, typed, by flag name (applied after
      ``extra_flags``), e.g. ``{"batch_size": 4}``; a run trained with
      ``--seed=1`` imports with ``{"seed": 1}``.
    from_run: a finished training run folder to import instead of
      training (recorded as given, so give it relative to the repository
      root to keep machine paths out of the metadata).
    weights_dtype: ``"float16"`` (default): the weights file holds each
      float32 array as float16 when that loses nothing that matters
      (:func:`tools.zoo.float16.float16_refusal`; the others stay
      float32, listed in the metadata), about half the bytes;
      ``"float32"``: every array as trained.
    log: receives progress lines.

  Returns:
    The metadata written.

  Raises:
    mtssl_tf.config.ConfigError: a bad option, before any training.
    mtssl_tf.training.trainer.NonFiniteLossError: training diverged.
    FileNotFoundError: ``from_run`` is not a run folder or has no
      checkpoint.
    ValueError: ``from_run``'s config differs from the preset's in a field
      that decides the weights (each named with both values), or its run
      has not reached its steps.
  """
  if weights_dtype not in WEIGHTS_DTYPES:
    raise ValueError(f"weights_dtype={weights_dtype!r}; expected one of "
                     + ", ".join(WEIGHTS_DTYPES))
  if from_run is not None:
    if work_dir is not None:
      raise ValueError("from_run imports a finished run; work_dir (where "
                       "a build trains) does not apply")
    return _import_run(name, from_run, steps=steps, tiny=tiny,
                       weights_dir=weights_dir, extra_flags=extra_flags,
                       overrides=overrides, weights_dtype=weights_dtype,
                       log=log)
  preset = get_preset(name)
  scale = "tiny" if tiny else "study"
  temporary = work_dir is None
  base = tempfile.mkdtemp(prefix=f"zoo_{name}_") if temporary else work_dir
  run_dir = os.path.abspath(os.path.join(base, name))
  run = _run_options(steps)
  if temporary:
    run["plots"] = False
  try:
    # Validated before any training: a bad option fails here.
    parsed = preset.parse(scale, list(extra_flags), dict(overrides or {}),
                          run, run_dir=run_dir, warn=log)
    config = parsed.config
    out_dir = folder(weights_dir)
    os.makedirs(out_dir, exist_ok=True)
    log(f"[{name}] training {preset.display_name} ({scale}, {config.steps} "
        f"steps) in {run_dir}")
    from mtssl_tf.training.trainer import Trainer  # pylint: disable=g-import-not-at-top
    with _restored_op_determinism():
      trainer = Trainer(config, log=lambda s: log(f"[{name}] {s}"))
      trainer.train(flags_text=parsed.text)
      # A plain model (outside the distribution strategy) with the trained
      # values; trainer.config holds a resolved colorization prior.
      train_config = trainer.config
      model = make_model(train_config.model_kwargs())
      _copy_by_name(trainer.model, model)
      del trainer
    final_losses = _final_losses(run_dir)
    pretext_metrics = read_pretext_metrics(run_dir)
  finally:
    if temporary:
      shutil.rmtree(base, ignore_errors=True)
  # The run folder was temporary or local: keep machine paths out of the
  # committed metadata.
  return _write_preset(
      name, scale, model, config, out_dir=out_dir, log=log,
      train_dict=dict(train_config.to_dict(), run_dir=RUN_DIR_PLACEHOLDER),
      flags_text=parsed.text.replace(run_dir, RUN_DIR_PLACEHOLDER),
      preset_flags=planned_flags(name, scale, extra_flags, overrides, run),
      command=build_command(name, steps, tiny, extra_flags),
      final_losses=final_losses, pretext_metrics=pretext_metrics,
      weights_dtype=weights_dtype)


def _run_options(steps: Optional[int]) -> Dict[str, Any]:
  """The typed options a build adds to the recipe (``--steps``)."""
  return {} if steps is None else {"steps": steps}


# Fields a run imported into the zoo may hold other values in than the
# preset's recipe: where and how often it writes logs, summaries, plots,
# checkpoints and exports, and its name (none enters a training step), and
# deterministic ops (the zoo's recipe turns them on so that a rebuild
# reproduces its file; the study's runs leave them off). Everything else,
# steps and seed included, decides the weights or the recorded held-out
# metrics and must be equal.
FROM_RUN_ALLOWED = ("run_dir", "model_name", "plots", "log_every",
                    "summary_every", "checkpoint_every", "max_to_keep",
                    "export_dir", "data.deterministic")


def from_run_differences(run_config: Mapping[str, Any],
                         preset_config: Mapping[str, Any]
                         ) -> Dict[str, List[Tuple[str, Any, Any]]]:
  """A run's config against a preset's, as ``{"refused": [(field, run
  value, preset value), ...], "allowed": [...]}``, fields of
  :data:`FROM_RUN_ALLOWED` in ``allowed`` (``run_dir`` left out: it always
  differs).

  Both are :meth:`~mtssl_tf.config.TrainConfig.to_dict` dicts compared by
  :func:`mtssl_tf.config.config_differences` (as a resume compares them),
  a field the run's config lacks counting as a difference; the preset's
  colorization prior must be resolved first (the run's ``config.json``
  holds its resolved prior).
  """
  from mtssl_tf.config import config_differences, field_covered  # pylint: disable=g-import-not-at-top
  everything = config_differences(run_config, preset_config, ignore=())
  return {"refused": [d for d in everything
                      if not field_covered(d[0], FROM_RUN_ALLOWED)],
          "allowed": [d for d in everything
                      if field_covered(d[0], FROM_RUN_ALLOWED)
                      and d[0] != "run_dir"]}


def _resolved_preset_config(preset, scale, extra_flags, overrides, run,
                            run_dir, log):
  """The preset's config as a build would train it in ``run_dir``, its
  colorization prior made concrete the way the Trainer makes it: read from
  the run's cached ``colorization_prior.npz`` when there is one, else
  computed from the same seeded sample of the training images (nothing is
  written into the run folder)."""
  from mtssl_tf.tasks.colorization_bins import AUTO_PRIOR_FILE  # pylint: disable=g-import-not-at-top
  from mtssl_tf.training import auto_prior  # pylint: disable=g-import-not-at-top
  parsed = preset.parse(scale, list(extra_flags), dict(overrides or {}), run,
                        run_dir=run_dir, warn=log)
  cached = os.path.exists(os.path.join(run_dir, AUTO_PRIOR_FILE))
  return parsed, auto_prior.resolve_training_prior(
      parsed.config, log=lambda s: None, write=cached)


def _import_run(name: str, from_run: str, *, steps: Optional[int],
                tiny: bool, weights_dir: Optional[str],
                extra_flags: Sequence[str],
                overrides: Optional[Mapping[str, Any]],
                weights_dtype: str,
                log: Callable[[str], None]) -> Dict[str, Any]:
  """``build_preset(name, from_run=...)``: checks the run against the
  preset's recipe, copies its weights by name and writes the preset."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from mtssl_tf.training import run_checkpoints  # pylint: disable=g-import-not-at-top
  preset = get_preset(name)
  scale = "tiny" if tiny else "study"
  run_dir = os.path.abspath(from_run)
  if not os.path.isdir(run_dir):
    raise FileNotFoundError(
        f"from_run: run folder {from_run!r} does not exist")
  run_config = run_checkpoints.read_run_config(run_dir)
  run = _run_options(steps)
  _, config = _resolved_preset_config(
      preset, scale, extra_flags, overrides, run, run_dir, log)
  diffs = from_run_differences(run_config, config.to_dict())
  if diffs["refused"]:
    raise ValueError(
        f"run {from_run} was not trained with preset {name}'s {scale} "
        "recipe; these fields differ (run value vs preset value):\n  "
        + "\n  ".join(f"{k}: {_short(a)} vs {_short(b)}"
                      for k, a, b in diffs["refused"])
        + _scale_hint(preset, scale, run_config, diffs["refused"],
                      extra_flags, overrides, run, run_dir, log)
        + "\nOnly " + ", ".join(FROM_RUN_ALLOWED) + " may differ; pass "
        "options that are part of the run's recipe as --train_flag (e.g. "
        "--train_flag=--seed=1 for a seed-1 run), or build the preset by "
        "training it (without --from_run).")
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  latest = tf.train.latest_checkpoint(ckpt_dir)
  if not latest:
    raise FileNotFoundError(
        f"run {from_run} has no checkpoint under {ckpt_dir}: it has not "
        "trained yet")
  reached = run_checkpoints.checkpoint_step(latest)
  if reached != config.steps:
    raise ValueError(
        f"run {from_run} is not finished: its latest checkpoint "
        f"({os.path.basename(latest)}) is at step {reached} of "
        f"{config.steps}; resume it by re-running its training command "
        f"(its flags are in {os.path.join(from_run, 'flags.txt')}), then "
        "import it")
  out_dir = folder(weights_dir)
  os.makedirs(out_dir, exist_ok=True)
  log(f"[{name}] importing {preset.display_name} ({scale}, step {reached}) "
      f"from {from_run}")
  trained = run_checkpoints.load_run_model(run_dir, latest)
  model = make_model(config.model_kwargs())
  _copy_by_name(trained, model)
  del trained
  flags_path = os.path.join(run_dir, "flags.txt")
  flags_text = ""
  if os.path.exists(flags_path):
    with open(flags_path) as f:
      flags_text = f.read()
  if run_config.get("run_dir"):
    flags_text = flags_text.replace(str(run_config["run_dir"]),
                                    RUN_DIR_PLACEHOLDER)
  record = {
      "run_dir": from_run,
      "differences": {k: [a, b] for k, a, b in diffs["allowed"]},
      "deterministic": run_config.get("data", {}).get("deterministic"),
      "note": _rebuild_note(build_command(name, steps, tiny, extra_flags),
                            run_config),
  }
  return _write_preset(
      name, scale, model, config, out_dir=out_dir, log=log,
      train_dict=dict(run_config, run_dir=RUN_DIR_PLACEHOLDER),
      flags_text=flags_text,
      preset_flags=planned_flags(name, scale, extra_flags, overrides, run),
      command=build_command(name, steps, tiny, extra_flags,
                            from_run=from_run),
      final_losses=_final_losses(run_dir),
      pretext_metrics=read_pretext_metrics(run_dir),
      weights_dtype=weights_dtype,
      extra={"from_run": record, "seed": run_config.get("seed")})


def _rebuild_note(command: str, run_config: Mapping[str, Any]) -> str:
  """What a plain build of the preset reproduces of imported weights."""
  if run_config.get("data", {}).get("deterministic"):
    return ("imported from a training run, not retrained; the run used "
            f"deterministic ops as `{command}` does, so that command on the "
            "same machine and package versions may write the same weights "
            "(not checked)")
  return ("imported from a training run, not retrained; the run used no "
          f"deterministic ops, so `{command}` (which trains this recipe "
          "with deterministic ops) does not reproduce these weights bit for "
          "bit, and neither does a rerun of the run")


def _scale_hint(preset, scale, run_config, refused, extra_flags, overrides,
                run, run_dir, log) -> str:
  """A line saying to add or drop ``--tiny`` when the run's trunk differs
  from the preset's at ``scale`` and is the one of the other scale."""
  trunk = lambda diffs: any(d[0].startswith("trunk.") for d in diffs)
  if not trunk(refused):
    return ""
  other = "study" if scale == "tiny" else "tiny"
  try:
    _, config = _resolved_preset_config(preset, other, extra_flags,
                                        overrides, run, run_dir, log)
  except (ValueError, OSError):
    return ""
  if trunk(from_run_differences(run_config, config.to_dict())["refused"]):
    return ""
  return ("\nThe run's trunk is the preset's " + other + " recipe's: "
          + ("drop --tiny (tiny=False)" if other == "study"
             else "add --tiny (tiny=True)") + ".")


def _short(value: Any) -> str:
  from mtssl_tf.config import _short as short  # pylint: disable=g-import-not-at-top
  return short(value)


def _write_preset(name: str, scale: str, model, config, *, out_dir: str,
                  log: Callable[[str], None], train_dict: Mapping[str, Any],
                  flags_text: str, preset_flags: list, command: str,
                  final_losses: Mapping[str, float],
                  pretext_metrics: Mapping[str, Any],
                  weights_dtype: str = DEFAULT_WEIGHTS_DTYPE,
                  extra: Optional[Mapping[str, Any]] = None
                  ) -> Dict[str, Any]:
  """Writes ``model``'s weights (float16 where that is safe, or float32:
  :func:`tools.zoo.float16.write_weights`) and the preset's
  metadata into ``out_dir`` (a trained build and an imported run alike);
  ``extra`` keys are added to (or replace) the metadata's."""
  preset = get_preset(name)
  wpath = os.path.join(out_dir, preset.weights_filename)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".weights.h5",
                             dir=out_dir)
  os.close(fd)
  try:
    storage = write_weights(model, tmp, weights_dtype)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; these files ship
    digest = sha256_file(tmp)
    os.replace(tmp, wpath)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  import mtssl_tf  # pylint: disable=g-import-not-at-top
  root = repo_root()
  # A rebuilt preset's old evaluation numbers no longer apply.
  meta = {
      "metadata_version": METADATA_VERSION,
      "name": name,
      "display_name": preset.display_name,
      "description": preset.description,
      "tasks": list(preset.tasks),
      "harmonize": preset.harmonize,
      "lasso": preset.lasso,
      "scale": scale,
      "weights_file": preset.weights_filename,
      "weights_bytes": os.path.getsize(wpath),
      "sha256": digest,
      # How the file stores the arrays (float16 / mixed / float32), the
      # number of values of each dtype and the arrays kept float32.
      **storage,
      "params": int(model.count_params()),
      "trainable_params": int(sum(
          int(v.numpy().size) for v in model.trainable_weights)),
      # The model's own config: every task parameter spelled out, so later
      # changes of a default cannot change a built preset.
      "model": {k: v for k, v in model.get_config().items() if k != "name"},
      "train_config": dict(train_dict),
      "train_flags": [l for l in flags_text.splitlines() if l],
      "preset_flags": preset_flags,
      "build_command": command,
      "steps": config.steps,
      "seed": config.seed,
      "batch_size": config.batch_size,
      "data": _data_description(config),
      "final_losses": dict(final_losses),
      # The run's final held-out evaluation (docs/pretext_metrics.md), each
      # metric with its chance / baseline value beside it.
      "pretext_metrics": dict(pretext_metrics),
      "paper_recipe": {
          "command": "python -m mtssl_tf.train " + " ".join(
              preset.paper_flags),
          "flags": list(preset.paper_flags),
      },
      "paper_results": {k: dict(v) for k, v in preset.paper_results.items()},
      "evaluations": {},
      "versions": {"mtssl_tf": mtssl_tf.__version__,
                   "tensorflow": tf.__version__, "keras": keras.__version__,
                   "python": platform.python_version(),
                   "machine": platform.machine()},
      "source_commit": _source_commit(root) if root else None,
      "created": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%dT%H:%M:%SZ"),
  }
  meta.update(extra or {})
  # JSON round trip: tuples in the model config become lists, as on load.
  meta = json.loads(json.dumps(meta))
  write_json(os.path.join(out_dir, preset.metadata_filename), meta)
  kept = meta["weights_storage"]["kept_float32"]
  log(f"[{name}] wrote {wpath} ({meta['weights_bytes'] / 1e6:.2f} MB, "
      f"{meta['weights_dtype']}"
      + (f": {len(kept)} array(s) kept float32" if kept else "")
      + f", {meta['params']:,} parameters, sha256 {digest[:12]}...)")
  return meta


def build_presets(names: Sequence[str], *, every: bool = False,
                  resume: bool = False,
                  log: Callable[[str], None] = print,
                  **kwargs: Any) -> Dict[str, Dict[str, Any]]:
  """Builds several presets (``every``: all of them) with
  :func:`build_preset`; each name is checked before any training.

  Args:
    names: preset names (ignored with ``every``).
    every: all nine presets, in the paper's order.
    resume: skip a preset whose weights this recipe already built
      (:func:`up_to_date`), so that an interrupted ``build --all`` picks up
      where it stopped. A preset imported from a run of the same recipe
      (``from_run``) counts as built.
    log: receives progress lines (``[i/n] name ...`` and the total time).
    **kwargs: passed to :func:`build_preset` (with ``from_run``: one name
      only).

  Returns:
    name -> the metadata written (skipped presets: their metadata).
  """
  from mtssl_tf.model_zoo.presets import list_presets  # pylint: disable=g-import-not-at-top
  names = list_presets() if every else list(names)
  if not names:
    raise ValueError("name presets to build, or --all; known presets: "
                     + ", ".join(list_presets()))
  if kwargs.get("from_run") is not None and (every or len(names) != 1):
    raise ValueError(
        "--from_run imports one run into one preset: name exactly one "
        f"preset (got {'--all' if every else ', '.join(names)})")
  for name in names:
    get_preset(name)
  steps = kwargs.get("steps")
  if steps is not None and steps < 1:
    raise ValueError(f"--steps={steps} must be >= 1")
  check = {k: kwargs.get(k) for k in ("tiny", "steps", "weights_dir",
                                      "overrides")}
  check["tiny"] = bool(check["tiny"])
  check["extra_flags"] = kwargs.get("extra_flags", ())
  check["weights_dtype"] = kwargs.get("weights_dtype", DEFAULT_WEIGHTS_DTYPE)
  out = {}
  t0 = time.time()
  built = 0
  for i, name in enumerate(names, 1):
    if resume and up_to_date(name, **check):
      log(f"[{i}/{len(names)}] {name}: already built by this recipe, "
          "skipped")
      out[name] = load_metadata(name, check["weights_dir"])
      continue
    log(f"[{i}/{len(names)}] {name}: " + (
        "building" if kwargs.get("from_run") is None
        else f"importing {kwargs['from_run']}"))
    t = time.time()
    out[name] = build_preset(name, log=log, **kwargs)
    built += 1
    log(f"[{i}/{len(names)}] {name}: built in {time.time() - t:.0f}s "
        f"(total {time.time() - t0:.0f}s)")
  log(f"built {built} of {len(names)} preset(s) ({len(names) - built} "
      f"skipped) in {time.time() - t0:.0f}s")
  return out
