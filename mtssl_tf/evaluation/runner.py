"""The one evaluation runner: a trunk, evaluators by name, their parameters.

``python -m mtssl_tf.evaluate`` and ``python -m tools.report`` both run
their evaluations through :func:`mtssl_tf.evaluation.driver.
evaluate_checkpoints`, which loads each trunk and calls
:func:`evaluate_trunk`: every evaluator starts from the same seed whatever
ran before it, and a failing evaluator is recorded by name while the
others still run.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Mapping, Sequence

from mtssl_tf.utils.progress import format_duration


@dataclasses.dataclass
class Outcome:
  """One trunk's evaluation: ``metrics`` ({name: value}) and ``failures``
  ({evaluator: message}) of the evaluators that raised."""
  metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
  failures: Dict[str, str] = dataclasses.field(default_factory=dict)


def evaluate_trunk(trunk, evaluators: Sequence[str],
                   params: Mapping[str, Mapping[str, Any]], *,
                   eval_lasso: bool = False, seed: int = 0,
                   log: Callable[[str], None] = print) -> Outcome:
  """Runs each evaluator on ``trunk``; never raises for one evaluator's
  failure (it is logged and returned in ``Outcome.failures``)."""
  import keras  # pylint: disable=g-import-not-at-top

  from mtssl_tf import evaluation  # pylint: disable=g-import-not-at-top
  from mtssl_tf.evaluation import protocols  # pylint: disable=g-import-not-at-top
  outcome = Outcome()
  for index, name in enumerate(evaluators, start=1):
    start = time.time()
    log(f"[{index}/{len(evaluators)}] {name}"
        f"{' (eval lasso)' if eval_lasso else ''}")
    # Each evaluator starts from the same seed whatever ran before it.
    keras.utils.set_random_seed(seed)
    try:
      evaluator = evaluation.get_evaluator(
          name, **protocols.resolve_params(name, params.get(name, {})))
      for metric, value in evaluator.run(trunk, eval_lasso=eval_lasso,
                                         log=log):
        outcome.metrics[metric] = float(value)
    except Exception as e:  # pylint: disable=broad-except
      # One evaluator's failure (missing data, a diverging fine-tune) must
      # not lose the others' results.
      message = f"{type(e).__name__}: {e}"
      outcome.failures[name] = message
      log(f"[{index}/{len(evaluators)}] {name} FAILED: {message}")
      continue
    log(f"[{index}/{len(evaluators)}] {name} done in "
        f"{format_duration(time.time() - start)}")
  return outcome
