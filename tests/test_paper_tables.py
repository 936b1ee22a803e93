"""The paper's numbers have one source, and presets and the report read it."""
from tools import report as reporting
from mtssl_tf.evaluation import paper_tables
from mtssl_tf.model_zoo import presets


def test_results_for_known_rows():
  # Values as printed in Doersch & Zisserman (ICCV 2017), Tables 2-4.
  rp = paper_tables.results_for("RP")
  assert rp["table2"] == {"imagenet_recall5": 59.21, "voc07_map": 66.75,
                          "nyu_pct_below_1.25": 80.54}
  assert rp["table3"]["nyu_pct_below_1.25"] == 80.23
  lasso = paper_tables.results_for("RP+Col+Ex+MS/Lasso")
  assert set(lasso) == {"table4_pretrain_only_lasso",
                        "table4_pretrain_and_eval_lasso"}
  assert lasso["table4_pretrain_and_eval_lasso"]["voc07_map"] == 68.98
  assert paper_tables.results_for("RP+Jigsaw") == {}


def test_presets_and_report_share_the_tables():
  for name, preset in presets.PRESETS.items():
    assert preset.paper_results == paper_tables.results_for(preset.label)
    assert reporting.PRESET_LABELS[name] == preset.label
  assert reporting.PAPER_TABLES is paper_tables.PAPER_TABLES
