"""Several runs per row: the ``--runs`` syntax, and mean +- std per cell.

A row of the paper's tables can be filled by several training runs that
differ only in their *training* seed (``--seed`` of ``python -m
mtssl_tf.train``), and the random-init row by several trunk initialisation
seeds (``--random_seeds``). Every member is evaluated with the same
evaluation seed (probe initialisation, data order), so the spread of a row
is the spread over pre-training (or over trunk initialisation), not over
the evaluation. A cell then shows the mean and the sample standard
deviation (ddof=1) over the members.

``--runs`` entries (docs/report.md):

* ``RP=runs/demo_rp``: one run, as before;
* ``RP+Col=runs/a/s0+runs/a/s1+runs/a/s2``: several runs joined by ``+``
  (a source that exists as one path is never split, so a folder whose name
  holds a ``+`` still works alone);
* ``RP+Col=runs/study/rp_col/s*``: a glob, expanded in sorted order.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mtssl_tf.evaluation.driver import Checkpoint, ConfigError
from mtssl_tf.reporting.tables import (RANDOM_LABEL, Samples,
                                       canonical_label, mean_std)


@dataclasses.dataclass(frozen=True)
class RowRuns:
  """One row of the tables and the checkpoints that fill it.

  Each member's checkpoint label is unique (``"RP+Col #2"`` for the second
  of several; the row label itself for a single one, so a one-run row is
  evaluated, cached and reported exactly as before).
  """
  label: str
  members: Tuple[Checkpoint, ...]


def member_label(label: str, index: int, count: int) -> str:
  """``label`` for a single member, ``"label #i"`` (from 1) otherwise."""
  return label if count == 1 else f"{label} #{index + 1}"


def _expand(label: str, source: str) -> List[str]:
  """The run folders (or files) that ``source`` names, in order."""
  if os.path.exists(source):
    return [source]
  out = []
  for part in source.split("+"):
    part = part.strip()
    if not part:
      raise ConfigError(f"--runs {label}={source}: an empty run between "
                        "'+' signs")
    if glob.has_magic(part):
      matches = sorted(glob.glob(part))
      if not matches:
        raise FileNotFoundError(f"--runs {label}: the pattern {part!r} "
                                "matches no run folder")
      out += matches
    else:
      out.append(part)
  return out


def parse_run_rows(entries: Iterable[str]) -> List[RowRuns]:
  """``["RP=runs/rp", "RP+Col=runs/a/s0+runs/a/s1", ...]`` -> rows.

  Raises:
    ConfigError: an entry without ``=``, an empty source, a row label given
      twice, a run given twice.
    FileNotFoundError: a glob that matches nothing.
    ValueError: an unknown row label (the message lists the known ones).
  """
  rows: List[RowRuns] = []
  seen: Dict[str, str] = {}
  for entry in entries:
    entry = entry.strip()
    if not entry:
      continue
    if "=" not in entry:
      raise ConfigError(f"--runs entry {entry!r} must look like "
                        "LABEL=RUN_DIR, e.g. RP=runs/demo_rp or "
                        "RP+Col=runs/a/s0+runs/a/s1")
    label, source = (s.strip() for s in entry.split("=", 1))
    if not source:
      raise ConfigError(f"run entry {entry!r} names no run")
    label = canonical_label(label)
    if label == RANDOM_LABEL:
      raise ConfigError("the random row is added by --random (and "
                        "--random_seeds), not --runs")
    if any(r.label == label for r in rows):
      raise ConfigError(f"row label(s) given twice: {label} (give a row's "
                        "runs in one entry: LABEL=RUN1+RUN2+...)")
    sources = _expand(label, source)
    for s in sources:
      key = os.path.normpath(os.path.abspath(s))
      if key in seen:
        raise ConfigError(f"run {s!r} given twice (rows {seen[key]} and "
                          f"{label})")
      seen[key] = label
    rows.append(RowRuns(label, tuple(
        Checkpoint(member_label(label, i, len(sources)), "run", s)
        for i, s in enumerate(sources))))
  return rows


def random_row(seeds: Sequence[int]) -> RowRuns:
  """The random-init row: one trunk per init seed (none given: one trunk
  seeded with the evaluation seed, as a single random row always was)."""
  seeds = list(seeds)
  if len(set(seeds)) != len(seeds):
    raise ConfigError(f"--random_seeds lists a seed twice: {seeds}")
  if not seeds:
    return RowRuns(RANDOM_LABEL, (Checkpoint(RANDOM_LABEL, "random",
                                             "random"),))
  return RowRuns(RANDOM_LABEL, tuple(
      Checkpoint(member_label(RANDOM_LABEL, i, len(seeds)), "random",
                 "random", init_seed=int(s)) for i, s in enumerate(seeds)))


def _run_identity(source: str) -> Optional[dict]:
  """A run folder's architecture and tasks from its config.json."""
  path = os.path.join(source, "config.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    run = json.load(f)
  return run


def check_same_architecture(row: RowRuns) -> None:
  """The runs of one row must be the same network pre-trained on the same
  tasks: only their seeds may differ.

  Raises:
    ConfigError: a member that is not a run folder with config.json (in a
      row of several runs), or members whose trunk or tasks differ.
  """
  if len(row.members) < 2:
    return
  from mtssl_tf.evaluation import trunk_sources  # pylint: disable=g-import-not-at-top
  from mtssl_tf.models.trunk import TrunkConfig  # pylint: disable=g-import-not-at-top
  first, first_run = None, None
  for member in row.members:
    if member.kind != "run":
      continue
    run = _run_identity(member.source)
    if run is None:
      raise ConfigError(
          f"row {row.label}: {member.source!r} is not a training run folder "
          "with config.json; a row of several runs takes run folders (their "
          "config.json says the architecture)")
    if first is None:
      first, first_run = member, run
      continue
    diffs = trunk_sources.trunk_config_differences(
        TrunkConfig(**run["trunk"]), TrunkConfig(**first_run["trunk"]))
    diffs = [d.replace("(checkpoint)", f"({member.source})").replace(
        "(requested)", f"({first.source})") for d in diffs]
    if list(run.get("tasks", ())) != list(first_run.get("tasks", ())):
      diffs.append(f"tasks {run.get('tasks')} ({member.source}) != "
                   f"{first_run.get('tasks')} ({first.source})")
    if diffs:
      raise ConfigError(
          f"row {row.label}: runs of different architectures in one row "
          f"(only the seed may differ): {'; '.join(diffs)}")


def aggregate(rows: Sequence[RowRuns],
              member_results: Mapping[Tuple[str, bool], Mapping[str, float]]
              ) -> Tuple[Dict[Tuple[str, bool], Dict[str, float]],
                         Dict[Tuple[str, bool], Dict[str, List[float]]]]:
  """Members' metrics -> (mean per row, every member's value per row).

  A metric a member lacks (an evaluator failed there) is averaged over the
  members that have it; the samples say how many that was.
  """
  means: Dict[Tuple[str, bool], Dict[str, float]] = {}
  samples: Dict[Tuple[str, bool], Dict[str, List[float]]] = {}
  for row in rows:
    for eval_lasso in (False, True):
      values: Dict[str, List[float]] = {}
      for member in row.members:
        for metric, v in member_results.get((member.label, eval_lasso),
                                            {}).items():
          values.setdefault(metric, []).append(float(v))
      if not values:
        continue
      samples[(row.label, eval_lasso)] = values
      means[(row.label, eval_lasso)] = {m: mean_std(v)[0]
                                        for m, v in values.items()}
  return means, samples


__all__ = ["RowRuns", "Samples", "aggregate", "check_same_architecture",
           "mean_std", "member_label", "parse_run_rows", "random_row"]
