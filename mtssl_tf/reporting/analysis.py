"""The report's analysis, generated from the numbers: does every
pre-trained trunk beat the random one on the linear probe, do RP+Col and the
four-task trunk beat it by more than twice the larger standard deviation
(rows of several runs), and which of the paper's pairwise orderings hold at
our scale."""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

from mtssl_tf.evaluation.paper_tables import PAPER_TABLES
from mtssl_tf.reporting.tables import (COLUMNS, NOISE_POINTS, ORDER_METRIC,
                                       RANDOM_LABEL, Results, Samples,
                                       mean_std, our_value)


@dataclasses.dataclass(frozen=True)
class RandomComparison:
  label: str
  ours: float
  random: float

  @property
  def beats(self) -> bool:
    return self.ours > self.random


def probe_vs_random(results: Results,
                    metric: str = ORDER_METRIC["imagenet"]
                    ) -> List[RandomComparison]:
  """Each pre-trained checkpoint's linear-probe ``metric`` (eval lasso off)
  against the random trunk's; empty when the random row is missing."""
  random = our_value(results, RANDOM_LABEL, False, metric)
  if random is None:
    return []
  out = []
  for (label, eval_lasso), metrics in results.items():
    if label == RANDOM_LABEL or eval_lasso or metric not in metrics:
      continue
    out.append(RandomComparison(label, float(metrics[metric]), random))
  return out


@dataclasses.dataclass(frozen=True)
class PairOrder:
  """The order of two rows of one table in one column, paper vs ours."""
  table: int
  column: str
  a: str
  b: str
  paper_a: float
  paper_b: float
  ours_a: float
  ours_b: float

  @staticmethod
  def _sign(x: float) -> int:
    return (x > 0) - (x < 0)

  @property
  def holds(self) -> bool:
    return (self._sign(self.paper_a - self.paper_b)
            == self._sign(self.ours_a - self.ours_b))

  def describe(self) -> str:
    def side(x, y):
      return ">" if x > y else "<" if x < y else "="
    return (f"{self.a} {side(self.paper_a, self.paper_b)} {self.b} in the "
            f"paper ({self.paper_a:.2f} vs {self.paper_b:.2f}), ours "
            f"{100 * self.ours_a:.1f} {side(self.ours_a, self.ours_b)} "
            f"{100 * self.ours_b:.1f}")


def ordering_analysis(number: int, results: Results) -> List[PairOrder]:
  """Every pair of table ``number``'s rows that have both the paper's and
  our value in a column, in table order."""
  rows = list(PAPER_TABLES[number].rows)
  pairs = []
  for column in COLUMNS:
    index = COLUMNS.index(column)
    metric = ORDER_METRIC[column]
    for i, a in enumerate(rows):
      for b in rows[i + 1:]:
        ours_a = our_value(results, a.checkpoint, a.eval_lasso, metric)
        ours_b = our_value(results, b.checkpoint, b.eval_lasso, metric)
        if ours_a is None or ours_b is None:
          continue
        pairs.append(PairOrder(number, column, a.name, b.name,
                               a.values[index], b.values[index], ours_a,
                               ours_b))
  return pairs


# The rows the study must show beating random init by more than twice the
# larger of the two standard deviations.
SEED_CLAIM_ROWS = ("RP+Col", "RP+Col+Ex+MS")


@dataclasses.dataclass(frozen=True)
class SeedClaim:
  """Row ``label`` vs random init on one metric, over several runs each:
  does the mean margin exceed twice the larger sample std?"""
  label: str
  ours: Sequence[float]
  random: Sequence[float]

  @property
  def margin(self) -> float:
    return mean_std(self.ours)[0] - mean_std(self.random)[0]

  @property
  def larger_std(self) -> Optional[float]:
    """The larger sample std of the two; None when a side has one run."""
    stds = [mean_std(self.ours)[1], mean_std(self.random)[1]]
    return None if None in stds else max(stds)

  @property
  def holds(self) -> Optional[bool]:
    """True / False; None when it cannot be judged (a side with one run)."""
    std = self.larger_std
    return None if std is None else self.margin > 2.0 * std

  def describe(self) -> str:
    n, n_random = len(self.ours), len(self.random)
    ours, random = mean_std(self.ours)[0], mean_std(self.random)[0]
    beats = ("beats" if self.margin > 0 else "does NOT beat")
    text = (f"{self.label} {beats} random init on the linear probe (top-1) "
            f"by {100 * self.margin:+.1f} points ({100 * ours:.1f}, n={n}, "
            f"vs {100 * random:.1f}, n={n_random})")
    if self.holds is None:
      return (text + ": whether that is more than twice the larger std "
              "cannot be judged, a std needs at least 2 runs on each side.")
    std = 100 * self.larger_std
    if self.holds:
      return (text + f", more than twice the larger std ({std:.1f}; "
              f"2 x {std:.1f} = {2 * std:.1f}): the claim holds.")
    return (text + f", NOT more than twice the larger std ({std:.1f}; "
            f"2 x {std:.1f} = {2 * std:.1f}): the claim does NOT hold.")


def seed_claims(samples: Samples,
                rows: Sequence[str] = SEED_CLAIM_ROWS,
                metric: str = ORDER_METRIC["imagenet"]) -> List[str]:
  """One sentence per row of ``rows``: its margin over random init on
  ``metric`` against twice the larger sample std, said plainly either
  way; "not measured" for a missing row."""
  random = samples.get((RANDOM_LABEL, False), {}).get(metric)
  lines = []
  for label in rows:
    ours = samples.get((label, False), {}).get(metric)
    if not ours or not random:
      lines.append(f"{label} vs random init on the linear probe: not "
                   "measured (the row or the random row is missing).")
      continue
    lines.append(SeedClaim(label, tuple(ours), tuple(random)).describe())
  return lines


COLUMN_SHORT = {"imagenet": "linear probe (top-1; paper ImageNet R@5)",
                "pascal": "detection mAP", "nyu": "depth \u03b4<1.25"}


def analysis_markdown(results: Results,
                      tables: Sequence[int] = (2, 3, 4),
                      samples: Optional[Samples] = None) -> str:
  """The analysis section: the random baseline check (with ``samples``,
  each run's values per row: also :func:`seed_claims`), then per table and
  column which of the paper's pairwise orderings hold in our numbers
  (means, for rows of several runs)."""
  lines = ["## Analysis (generated from the numbers above)", ""]
  if samples is not None:
    lines += [f"- {line}" for line in seed_claims(samples)]
  comparisons = probe_vs_random(results)
  if not comparisons:
    lines.append("- Linear probe vs random init: not measured (the random "
                 "row or every pre-trained row is missing).")
  else:
    losers = [c for c in comparisons if not c.beats]
    if not losers:
      lines.append(
          f"- **Every pre-trained trunk ({len(comparisons)}) beats the "
          "random-initialised trunk on the linear probe** (top-1: "
          + ", ".join(f"{c.label} {100 * c.ours:.1f}" for c in comparisons)
          + f" vs random {100 * comparisons[0].random:.1f}).")
    else:
      lines.append(
          f"- **NOT every pre-trained trunk beats the random-initialised "
          f"trunk on the linear probe**: {len(losers)} of "
          f"{len(comparisons)} do not (top-1: "
          + ", ".join(f"{c.label} {100 * c.ours:.1f}" for c in losers)
          + f" vs random {100 * comparisons[0].random:.1f})."
          + (" Those that do: " + ", ".join(
              f"{c.label} {100 * c.ours:.1f}" for c in comparisons
              if c.beats) + "." if len(losers) < len(comparisons) else ""))
  close = [c for c in comparisons
           if abs(c.ours - c.random) * 100 < NOISE_POINTS]
  if close:
    lines.append(
        f"- Margins over random under {NOISE_POINTS:g} point (within what "
        "one seed and this test size can change): " + ", ".join(
            f"{c.label} {100 * (c.ours - c.random):+.1f}" for c in close)
        + ".")
  for number in tables:
    pairs = ordering_analysis(number, results)
    lines.append(f"- Table {number}:")
    if not pairs:
      lines.append("  - no pair of rows with both values: nothing to "
                   "compare.")
      continue
    for column in COLUMNS:
      col = [p for p in pairs if p.column == column]
      if not col:
        lines.append(f"  - {COLUMN_SHORT[column]}: not measured.")
        continue
      held = [p for p in col if p.holds]
      broken = [p for p in col if not p.holds]
      text = (f"  - {COLUMN_SHORT[column]}: the paper's order holds for "
              f"{len(held)} of {len(col)} pairs.")
      if held:
        text += " Holds: " + "; ".join(p.describe() for p in held) + "."
      if broken:
        text += (" Does not hold: " + "; ".join(p.describe() for p in broken)
                 + ".")
      lines.append(text)
  return "\n".join(lines)


__all__ = ["COLUMN_SHORT", "PairOrder", "RandomComparison", "SEED_CLAIM_ROWS",
           "SeedClaim", "analysis_markdown", "ordering_analysis",
           "probe_vs_random", "seed_claims"]
