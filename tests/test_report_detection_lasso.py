"""The report fills Table 4's PASCAL cells (paper-fidelity issue, item 3):
the eval-lasso rows run the detection evaluator too, with eval_lasso=True.
The trunk loading and the evaluator are stand-ins (the detector itself is
tested in test_detection.py); what is checked is the report's wiring."""
from mtssl_tf import evaluation
from tools import report as reporting
from tools.report import collect as build
from mtssl_tf.models.trunk import Trunk


class _FakeDetection:
  """Yields an mAP that encodes the call, and records the calls."""
  calls = []

  def __init__(self, **params):
    self.params = params

  def run(self, trunk, *, eval_lasso=False, log=print):
    self.calls.append(eval_lasso)
    yield "detection/map", 0.25 + 0.5 * eval_lasso


def test_table4_pascal_cells_are_filled_with_eval_lasso(monkeypatch):
  trunk = Trunk(depth=14, width=0.125)
  monkeypatch.setattr(build, "load_trunk",
                      lambda checkpoint, trunk_config=None: trunk)
  monkeypatch.setattr(evaluation, "get_evaluator",
                      lambda name, **params: _FakeDetection(**params))
  _FakeDetection.calls.clear()
  checkpoints = reporting.parse_entries(
      ["RP+Col+Ex+MS=a", "RP+Col+Ex+MS/Lasso=b"], "run")
  results = reporting.evaluate_all(checkpoints, {}, ["detection"],
                                log=lambda s: None)
  # Each checkpoint without and with eval lasso: four detection runs.
  assert sorted(_FakeDetection.calls) == [False, False, True, True]
  table = reporting.markdown_table(4, results)
  rows = {line.split("|")[1].strip(): line.split("|")[3].strip()
          for line in table.splitlines()[4:]}
  pascal = [v for k, v in rows.items() if k != reporting.RANDOM_LABEL]
  assert len(pascal) == 4
  assert sorted(v.split(" ")[0] for v in pascal) == ["25.0", "25.0", "75.0",
                                                     "75.0"]
