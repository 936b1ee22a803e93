"""make demo's closing summary, on a fake run folder."""
import json

import pytest

from mtssl_tf import demo_summary as entry_point
from mtssl_tf.reporting import demo_tables

PRETEXT = {
    "relative_position": {"accuracy": 0.267578125, "chance": 0.125,
                          "examples": 512.0, "step": 2000},
    "exemplar": {"chance": 0.02040816326530612, "images": 49.0, "step": 2000,
                 "top1": 0.2993197278911565},
}
RESULTS = {
    "config": {"checkpoint": "runs/demo"},
    "metrics": {"linear_probe/top1": 0.75, "linear_probe/recall_at_5": 0.5},
    "rows": {
        "RP+Col+Ex+MS/Lasso": {"metrics": {"linear_probe/top1": 0.75,
                                           "linear_probe/recall_at_5": 0.5,
                                           "depth/delta1": 0.25},
                               "failures": {}},
        "Random init": {"metrics": {"linear_probe/top1": 0.8,
                                    "linear_probe/recall_at_5": 0.5},
                        "failures": {"depth": "out of memory"}},
    },
    "failures": {"Random init: depth": "out of memory"},
}


@pytest.fixture
def run_dir(tmp_path):
  (tmp_path / "pretext_metrics.json").write_text(json.dumps(PRETEXT))
  (tmp_path / "results.json").write_text(json.dumps(RESULTS))
  return tmp_path


def test_summary_has_both_tables_and_what_they_mean(run_dir):
  text = demo_tables.demo_summary(str(run_dir))
  lines = text.splitlines()
  # The held-out pretext table: each metric beside its chance level.
  assert "held-out pretext metrics at step 2000:" in text
  rp = next(l for l in lines if l.strip().startswith("relative_position"))
  assert rp.split()[-4:] == ["0.268", "0.125", "uniform", "guess"]
  # The downstream table: trained vs random init, in %, with the margin.
  assert "downstream evaluations, % (trained = RP+Col+Ex+MS/Lasso):" in text
  top1 = next(l for l in lines if "linear probe top-1" in l)
  assert top1.split()[-3:] == ["75.0", "80.0", "-5.0"]
  depth = next(l for l in lines if "depth" in l and "Middlebury" in l)
  assert depth.split()[-2:] == ["25.0", "\u2014"]  # random's failed
  assert "failed: Random init: depth: out of memory" in text
  assert not any("detection" in l for l in lines)  # not measured: no row
  # One plain sentence on each table's meaning at this scale.
  assert "chance level" in text and "CPU-scale demo" in text
  assert "random conv features already do well on the digits" in " ".join(
      lines)
  # The sentences are wrapped for a terminal (the tables are as they are,
  # and the title holds the run folder's path, as long as it is).
  assert max(len(l) for l in lines
             if not l.startswith(" ") and str(run_dir) not in l) <= 79


def test_entry_point_prints_it(run_dir, capsys):
  assert entry_point.main([str(run_dir)]) == 0
  out = capsys.readouterr().out
  assert out.startswith(f"Summary of {run_dir}")
  assert "downstream evaluations" in out


def test_a_missing_output_is_named_with_its_command(run_dir, capsys):
  (run_dir / "results.json").unlink()
  assert entry_point.main([str(run_dir)]) == 1
  out = capsys.readouterr().out
  assert "held-out pretext metrics at step 2000" in out
  assert (f"No downstream results ({run_dir}/results.json is missing): "
          f"python -m mtssl_tf.evaluate --checkpoint={run_dir}") in out
  (run_dir / "pretext_metrics.json").unlink()
  assert entry_point.main([str(run_dir)]) == 1
  assert "train first" in capsys.readouterr().out
  assert entry_point.main([]) == 2
  assert "usage" in capsys.readouterr().err
