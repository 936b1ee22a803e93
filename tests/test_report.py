"""The report command: the paper's tables as data, Markdown tables from fake
metrics, the generated analysis, and the command end to end on a tiny run
folder and a random trunk."""
import json
import os
import sys
import types

import pytest
import tensorflow as tf
from absl import flags

import mtssl_tf
from mtssl_tf.evaluation import driver
from mtssl_tf.config import TrainConfig
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import TrunkConfig
from tools import report as reporting
from tools.report import report_cli as report

DASH = "\u2014"


def _fake_results():
  # Values in [0, 1]; the table shows them in %.
  return {
      ("RP", False): {"linear_probe/top1": 0.5, "linear_probe/recall_at_5":
                      0.9, "detection/map": 0.125, "depth/delta1": 0.3},
      ("RP+Col", False): {"linear_probe/top1": 0.6,
                          "linear_probe/recall_at_5": 0.95,
                          "depth/delta1": 0.4},
      ("Random init", False): {"linear_probe/top1": 0.55,
                               "linear_probe/recall_at_5": 0.8,
                               "detection/map": 0.05, "depth/delta1": 0.2},
  }


# -- the paper's numbers -------------------------------------------------------------
def test_paper_tables_hold_the_published_numbers():
  t2 = {r.name: r.values for r in reporting.PAPER_TABLES[2].rows}
  assert t2["RP+Col+Ex+MS"] == (69.30, 70.53, 79.25)
  assert t2["INet Labels"] == (85.10, 74.17, 80.06)
  t3 = {r.name: r.values for r in reporting.PAPER_TABLES[3].rows}
  assert t3["RP / H"] == (62.33, 66.15, 80.39)
  assert t3["RP"][2] == 80.23  # Table 3 prints 80.23 where Table 2 has 80.54
  t4 = {r.name: r for r in reporting.PAPER_TABLES[4].rows}
  assert t4["Eval Only Lasso"].values == (70.18, 68.86, 79.41)
  # Table 4's four rows = (pre-trained with/without lasso) x (eval lasso).
  assert {(r.checkpoint, r.eval_lasso) for r in t4.values()} == {
      ("RP+Col+Ex+MS", False), ("RP+Col+Ex+MS", True),
      ("RP+Col+Ex+MS/Lasso", False), ("RP+Col+Ex+MS/Lasso", True)}
  # "No Lasso" is Table 2's RP+Col+Ex+MS (the caption says so).
  assert t4["No Lasso"].values == t2["RP+Col+Ex+MS"]


def test_labels_are_canonical_and_unknown_ones_listed():
  assert reporting.canonical_label("RP / H") == "RP/H"
  assert reporting.canonical_label("rp+col+ex+ms") == "RP+Col+Ex+MS"
  assert reporting.canonical_label("random") == reporting.RANDOM_LABEL
  with pytest.raises(ValueError, match="unknown row label 'Jigsaw'.*RP\\+Col"):
    reporting.canonical_label("Jigsaw")
  runs = reporting.parse_entries(["RP=runs/a", " RP+Col / H = runs/b"], "run")
  assert [(c.label, c.source) for c in runs] == [("RP", "runs/a"),
                                                 ("RP+Col/H", "runs/b")]
  presets = reporting.parse_entries(["rp_col_ex_ms_lasso", "RP=my_rp"],
                                    "preset")
  assert [(c.label, c.source) for c in presets] == [
      ("RP+Col+Ex+MS/Lasso", "rp_col_ex_ms_lasso"), ("RP", "my_rp")]
  with pytest.raises(ValueError, match="LABEL=RUN_DIR"):
    reporting.parse_entries(["runs/demo_rp"], "run")
  with pytest.raises(ValueError, match="LABEL=odd"):
    reporting.parse_entries(["odd"], "preset")


def test_eval_lasso_is_evaluated_only_for_table_4_checkpoints():
  cps = reporting.parse_entries(["RP=a", "RP+Col+Ex+MS=b",
                              "RP+Col+Ex+MS/Lasso=c"], "run")
  pairs = [(c.label, lasso) for c, lasso in reporting.evaluation_pairs(cps)]
  assert pairs == [("RP", False), ("RP+Col+Ex+MS", False),
                   ("RP+Col+Ex+MS/Lasso", False), ("RP+Col+Ex+MS", True),
                   ("RP+Col+Ex+MS/Lasso", True)]


# -- tables ------------------------------------------------------------------------
def test_markdown_table_puts_the_paper_beside_ours():
  lines = reporting.markdown_table(2, _fake_results()).splitlines()
  assert lines[0] == "### Table 2: Combinations of self-supervised tasks"
  header = [c.strip() for c in lines[2].strip("|").split("|")]
  assert header[0] == "Pre-training"
  assert "Linear probe top-1 / Recall@5" in header[1]
  assert "Detection mAP" in header[2] and "Depth" in header[3]
  assert lines[3] == "|---|---|---|---|"
  rows = lines[4:]
  # The paper's 7 rows in its order, then the random baseline.
  assert [r.split("|")[1].strip() for r in rows] == [
      "RP", "RP+Col", "RP+Ex", "RP+MS", "RP+Col+Ex", "RP+Col+Ex+MS",
      "INet Labels", "Random init"]
  assert rows[0] == "| RP | 50.0 / 90.0 (59.21) | 12.5 (66.75) | 30.0 (80.54) |"
  # RP+Col has no detection number: shown as a dash, paper still beside it.
  assert rows[1] == (f"| RP+Col | 60.0 / 95.0 (66.64) | {DASH} (68.75) | "
                     "40.0 (79.87) |")
  assert rows[2] == (f"| RP+Ex | {DASH} / {DASH} (65.24) | {DASH} (69.44) | "
                     f"{DASH} (78.70) |")
  assert rows[7] == (f"| Random init | 55.0 / 80.0 ({DASH}) | 5.0 ({DASH}) | "
                     f"20.0 ({DASH}) |")


def test_table_4_rows_read_the_four_lasso_combinations():
  results = {("RP+Col+Ex+MS", False): {"linear_probe/top1": 0.1},
             ("RP+Col+Ex+MS", True): {"linear_probe/top1": 0.2},
             ("RP+Col+Ex+MS/Lasso", False): {"linear_probe/top1": 0.3},
             ("RP+Col+Ex+MS/Lasso", True): {"linear_probe/top1": 0.4}}
  rows = reporting.markdown_table(4, results).splitlines()[4:]
  got = {r.split("|")[1].strip(): r.split("|")[2].strip() for r in rows}
  assert got == {"No Lasso": f"10.0 / {DASH} (69.30)",
                 "Eval Only Lasso": f"20.0 / {DASH} (70.18)",
                 "Pre-train Only Lasso": f"30.0 / {DASH} (68.09)",
                 "Pre-train & Eval Lasso": f"40.0 / {DASH} (69.44)",
                 "Random init": f"{DASH} / {DASH} ({DASH})"}


# -- analysis ----------------------------------------------------------------------
def test_a_preset_that_does_not_beat_random_is_reported():
  comparisons = {c.label: c for c in reporting.probe_vs_random(_fake_results())}
  assert set(comparisons) == {"RP", "RP+Col"}
  assert not comparisons["RP"].beats and comparisons["RP+Col"].beats
  text = reporting.analysis_markdown(_fake_results(), tables=(2,))
  assert ("NOT every pre-trained trunk beats the random-initialised trunk "
          "on the linear probe**: 1 of 2 do not (top-1: RP 50.0 vs random "
          "55.0). Those that do: RP+Col 60.0.") in text


def test_every_preset_beating_random_is_said_plainly():
  results = _fake_results()
  results[("RP", False)] = dict(results[("RP", False)],
                                **{"linear_probe/top1": 0.7})
  text = reporting.analysis_markdown(results, tables=(2,))
  assert "**Every pre-trained trunk (2) beats the random" in text
  assert "NOT" not in text
  assert "Margins over random" not in text  # 15 and 5 points
  results[("RP", False)]["linear_probe/top1"] = 0.554
  text = reporting.analysis_markdown(results, tables=(2,))
  assert "under 1 point (within what one seed" in text
  assert "this test size can change): RP +0.4." in text
  # A tie is not a win.
  results[("RP", False)]["linear_probe/top1"] = 0.55
  assert not {c.label: c for c in reporting.probe_vs_random(results)}[
      "RP"].beats


def test_ordering_analysis_compares_each_pair_with_the_paper():
  pairs = reporting.ordering_analysis(2, _fake_results())
  # Pairs with both values: RP vs RP+Col on the probe and on depth (RP+Col
  # has no detection number); random is not a paper row.
  assert [(p.column, p.a, p.b) for p in pairs] == [
      ("imagenet", "RP", "RP+Col"), ("nyu", "RP", "RP+Col")]
  probe, depth = pairs
  # Paper: RP 59.21 < RP+Col 66.64; ours 50 < 60: the order holds.
  assert probe.holds
  # Paper: RP 80.54 > RP+Col 79.87 on NYU; ours 30 < 40: it does not.
  assert not depth.holds
  text = reporting.analysis_markdown(_fake_results(), tables=(2, 3))
  assert ("linear probe (top-1; paper ImageNet R@5): the paper's order holds "
          "for 1 of 1 pairs. Holds: RP < RP+Col in the paper (59.21 vs "
          "66.64), ours 50.0 < 60.0.") in text
  assert ("depth \u03b4<1.25: the paper's order holds for 0 of 1 pairs. Does "
          "not hold: RP > RP+Col in the paper (80.54 vs 79.87), ours 30.0 < "
          "40.0.") in text
  assert "detection mAP: not measured." in text
  # Table 3 has RP and RP+Col too (its RP NYU value is 80.23).
  t3 = reporting.ordering_analysis(3, _fake_results())
  assert [(p.a, p.b, p.paper_a) for p in t3 if p.column == "nyu"] == [
      ("RP", "RP+Col", 80.23)]


def test_zoo_metadata_layout():
  got = reporting.zoo_evaluations(
      {("RP", False): {"linear_probe/top1": 0.5, "depth/delta1": 0.25},
       ("RP", True): {"linear_probe/top1": 0.75},
       ("RP+Col", False): {"linear_probe/top1": 0.1}}, "RP",
      reporting.DEMO_EVAL_PARAMS)
  assert got == {"linear_probe/digits": {"top1": 0.5},
                 "depth/middlebury": {"delta1": 0.25},
                 "linear_probe/digits+eval_lasso": {"top1": 0.75}}


# -- the command ----------------------------------------------------------------------
TINY = TrunkConfig(depth=14, width=0.25)
RP = {"patch_size": 16, "gap": 4, "jitter": 2, "rescale_pixels": None,
      "embedding_units": 8, "hidden_units": [8]}
TINY_PARAMS = [
    "--eval_param=linear_probe.image_size=32",
    "--eval_param=linear_probe.steps=5",
    "--eval_param=linear_probe.max_train_examples=60",
    "--eval_param=linear_probe.max_test_examples=40",
    "--eval_param=depth.input_size=(32, 32)",
    "--eval_param=depth.steps=2",
    "--eval_param=depth.batch_size=2",
    "--eval_param=depth.decoder_filters=(8, 8, 8, 8)",
    "--eval_param=depth.max_train_examples=4",
    "--eval_param=depth.max_test_examples=2",
]


def _make_run(run_dir):
  """A training run folder (config.json + checkpoint) of a tiny trunk."""
  config = TrainConfig(run_dir=str(run_dir), tasks=("relative_position",),
                       task_params={"relative_position": RP}, trunk=TINY)
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    f.write(config.to_json())
  model = MultiTaskModel(**config.model_kwargs())
  from mtssl_tf.training.run_checkpoints import save_model
  save_model(model, os.path.join(run_dir, "checkpoints", "ckpt"))
  return model


def _flags(argv):
  fv = flags.FlagValues()
  report.define_report_flags(fv)
  fv(["report"] + list(argv))
  return fv


@pytest.mark.slow
def test_command_end_to_end_with_a_run_and_random(tmp_path):
  run_dir = tmp_path / "run_rp"
  model = _make_run(str(run_dir))
  out = tmp_path / "RESULTS.md"
  # One evaluator: how each metric fills its cell is checked on known
  # numbers (test_markdown_table_puts_the_paper_beside_ours), and every
  # column of an evaluator that was not run shows a dash here.
  (tmp_path / "pre.md").write_text("How the runs were made.\n")
  (tmp_path / "post.md").write_text("## The transfer matrix\n\n| a |\n")
  argv = [f"--runs=RP={run_dir}", "--evaluators=linear_probe",
          f"--work_dir={tmp_path / 'w'}", f"--output={out}",
          f"--json_output={tmp_path / 'm.json'}",
          f"--preamble={tmp_path / 'pre.md'}",
          f"--appendix={tmp_path / 'post.md'}",
          "--tables=2,3"] + TINY_PARAMS[:4]
  logs = []
  text = report.run_report(_flags(argv), log=logs.append)
  assert out.read_text() == text
  # The preamble under the title, the appendix after the analysis.
  assert text.split("\n")[2] == "How the runs were made."
  assert text.endswith("\n\n## The transfer matrix\n\n| a |\n")
  assert text.index("## Analysis") < text.index("## The transfer matrix")
  table2 = text.split("### Table 2")[1].split("### Table 3")[0]
  rows = {line.split("|")[1].strip(): line for line in table2.splitlines()
          if line.startswith("| ")}
  metrics = {(m["label"], m["eval_lasso"]): m["metrics"]
             for m in json.loads((tmp_path / "m.json").read_text())}
  assert set(metrics) == {("RP", False), ("Random init", False)}
  for label in ("RP", "Random init"):
    m = metrics[(label, False)]
    assert set(m) == {"linear_probe/top1", "linear_probe/recall_at_5"}
    assert 0 <= m["linear_probe/top1"] <= m["linear_probe/recall_at_5"] <= 1
    probe, det, nyu = (("59.21", "66.75", "80.54") if label == "RP"
                       else (DASH, DASH, DASH))
    # Detection and depth were not run: a dash beside the paper's value.
    assert rows[label] == (
        f"| {label} | {100 * m['linear_probe/top1']:.1f} / "
        f"{100 * m['linear_probe/recall_at_5']:.1f} ({probe}) | "
        f"{DASH} ({det}) | {DASH} ({nyu}) |")
  assert "### Table 3" in text and "### Table 4" not in text
  beats = (metrics[("RP", False)]["linear_probe/top1"]
           > metrics[("Random init", False)]["linear_probe/top1"])
  assert ("**Every pre-trained trunk (1) beats" in text) == beats
  assert ("**NOT every pre-trained trunk" in text) == (not beats)
  assert "random initialisation" in text and str(run_dir) in text
  # The random row is the run's architecture, untrained.
  random_json = [json.loads(p.read_text()) for p in (tmp_path / "w").iterdir()
                 if p.name.startswith("random_init")]
  assert [r["trunk"] for r in random_json] == [model.trunk.config.to_dict()]
  # A second run reads every evaluation from the cache, with the same text.
  logs.clear()
  again = report.run_report(_flags(argv), log=logs.append)
  assert again == text
  assert sum("cached" in line for line in logs) == 2
  assert not any("evaluating" in line for line in logs)


def test_presets_come_from_the_zoo_and_get_their_numbers(tmp_path,
                                                        monkeypatch):
  # A stand-in model zoo: the report loads the preset and stores its numbers.
  stored, loaded = {}, []
  trunk = mtssl_tf.Trunk(**TINY.to_dict())
  zoo = types.ModuleType("mtssl_tf.model_zoo")
  zoo.load = lambda name: loaded.append(name) or types.SimpleNamespace(
      trunk=trunk)
  zoo.update_evaluations = lambda name, metrics: stored.update({name: metrics})
  monkeypatch.setitem(sys.modules, "mtssl_tf.model_zoo", zoo)
  monkeypatch.setattr(mtssl_tf, "model_zoo", zoo, raising=False)
  argv = ["--presets=rp_h", "--norandom", "--evaluators=linear_probe",
          "--work_dir=", f"--json_output={tmp_path / 'm.json'}",
          "--tables=3"] + TINY_PARAMS[:4]
  text = report.run_report(_flags(argv), log=lambda s: None)
  (entry,) = json.loads((tmp_path / "m.json").read_text())
  assert loaded == ["rp_h"] and entry["label"] == "RP/H"
  top1 = entry["metrics"]["linear_probe/top1"]
  assert stored == {"rp_h": {"linear_probe/digits": {
      "top1": top1,
      "recall_at_5": entry["metrics"]["linear_probe/recall_at_5"]}}}
  assert f"| RP / H | {100 * top1:.1f} / " in text
  assert "model zoo preset `rp_h`" in text


def test_command_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="no_run.*row RP"):
    report.run_report(_flags([f"--runs=RP={tmp_path / 'no_run'}"]))
  with pytest.raises(ValueError, match="given twice: RP"):
    report.run_report(_flags(["--runs=RP=a,RP=b"]))
  with pytest.raises(ValueError, match="unknown evaluator 'jigsaw'"):
    report.run_report(_flags(["--evaluators=jigsaw"]))
  with pytest.raises(ValueError, match="not one of 2, 3, 4"):
    report.run_report(_flags(["--tables=5"]))
  with pytest.raises(ValueError, match="evaluator.name=value"):
    report.run_report(_flags(["--eval_param=steps=3"]))
  with pytest.raises(ValueError, match="nothing to evaluate"):
    report.run_report(_flags(["--norandom"]))
  with pytest.raises(ValueError, match="eval_param given for 'depth', which "
                     "is not in evaluators=linear_probe"):
    report.run_report(_flags(["--evaluators=linear_probe",
                              "--eval_param=depth.steps=3"]))
  with pytest.raises(ValueError, match="no parameter stepz"):
    report.run_report(_flags(["--eval_param=linear_probe.stepz=3"]))
  # The protocols are evaluate's: paper = each evaluator's own defaults.
  config = reporting.ReportConfig(evaluators=["linear_probe"],
                                  protocol="paper",
                                  eval_param=["linear_probe.steps=7"])
  assert config.params == {"linear_probe": {"steps": 7}}
  with pytest.raises(ValueError, match="protocol='fast'"):
    reporting.ReportConfig(protocol="fast")


def test_cache_key_follows_the_checkpoint_content(tmp_path):
  # A checkpoint rewritten in place (a run trained further, a re-exported
  # .keras file) is evaluated again; the row label is not part of the key.
  from mtssl_tf.evaluation import cache
  path = tmp_path / "trunk.keras"
  path.write_bytes(b"x" * 10)
  before = cache.checkpoint_stamp("run", str(path))
  path.write_bytes(b"x" * 11)
  assert cache.checkpoint_stamp("run", str(path)) != before
  run = tmp_path / "run"
  assert cache.checkpoint_stamp("run", str(run)) is None  # not there yet
  _make_run(str(run))
  first = cache.checkpoint_stamp("run", str(run))
  assert first.endswith("ckpt-1")
  key = cache.cache_key("run", str(run), False, {"linear_probe": {}}, 0,
                        {"checkpoint": first})
  assert key != cache.cache_key("run", str(run), True, {"linear_probe": {}},
                                0, {"checkpoint": first})
  cache.write(cache.entry_path(str(tmp_path / "w"), "RP + eval lasso", key),
              {"metrics": {"m": 0.5}})
  assert os.listdir(tmp_path / "w") == [f"rp_eval_lasso-{key}.json"]
  assert cache.read(str(tmp_path / "w"), key)["metrics"] == {"m": 0.5}
  assert cache.read(str(tmp_path / "w"), key[::-1]) is None


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("mtssl_tf/evaluation/driver.py", "mtssl_tf/evaluation/cache.py",
           "mtssl_tf/evaluation/runner.py",
           "mtssl_tf/evaluation/paper_tables.py",
           "mtssl_tf/evaluation/protocols.py", "mtssl_tf/reporting/__init__.py",
           "mtssl_tf/reporting/tables.py", "mtssl_tf/reporting/analysis.py",
           "mtssl_tf/reporting/results.py", "tools/report/__init__.py",
           "tools/report/document.py", "tools/report/collect.py")
ENTRY_POINTS = ("mtssl_tf.evaluate", "tools.report.report_cli",
                "mtssl_tf.train", "mtssl_tf.export")


def test_layering_of_the_evaluation_and_report_modules():
  # The library below the two commands reads no absl flags and imports no
  # entry point, and the entry points stay thin.
  import ast
  for relative in LIBRARY:
    with open(os.path.join(REPO, relative)) as f:
      tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        imported.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        imported.add(node.module or "")
        imported.update(f"{node.module}.{a.name}" for a in node.names)
    assert not {m for m in imported if m.split(".")[0] == "absl"}, relative
    assert not imported & set(ENTRY_POINTS), relative
    if "/evaluation/" in relative:  # the zoo sits above evaluation
      assert not any(m.startswith("mtssl_tf.model_zoo") or m.startswith(
          "mtssl_tf.reporting") for m in imported), relative
  for name in ("mtssl_tf/evaluate.py", "tools/report/report_cli.py"):
    with open(os.path.join(REPO, name)) as f:
      assert len(f.read().splitlines()) < 100, name


def _evaluate(argv, log):
  """The evaluate command's library calls: its flags -> config -> driver."""
  from mtssl_tf import evaluate
  fv = flags.FlagValues()
  evaluate.define_eval_flags(fv)
  fv(["evaluate"] + list(argv))
  return driver.run_evaluation(evaluate.config_from_flags(fv), log=log)


def test_evaluate_and_report_give_identical_numbers(tmp_path):
  # Both commands, from their own flags, on the same run folder, protocol
  # parameters and seed: identical numbers for the run (with and without
  # eval lasso) and for the random baseline. Labelled RP+Col+Ex+MS, the run
  # fills Table 4, so the report evaluates it with eval lasso too.
  run_dir = tmp_path / "run"
  _make_run(str(run_dir))
  probe = ["--evaluators=linear_probe", "--seed=3"] + TINY_PARAMS[:4]
  cache = tmp_path / "cache"
  report.run_report(_flags([f"--runs=RP+Col+Ex+MS={run_dir}",
                            f"--work_dir={cache}", "--tables=4",
                            f"--json_output={tmp_path / 'm.json'}"] + probe),
                    log=lambda s: None)
  theirs = {(m["label"], m["eval_lasso"]): m["metrics"]
            for m in json.loads((tmp_path / "m.json").read_text())}
  assert set(theirs) == {("RP+Col+Ex+MS", False), ("RP+Col+Ex+MS", True),
                         ("Random init", False)}
  args = [f"--checkpoint={run_dir}", f"--output={tmp_path / 'e.json'}"]
  ours = _evaluate(args + probe, log=lambda s: None)
  assert list(ours.rows) == ["RP", reporting.RANDOM_LABEL]
  assert ours.rows["RP"].metrics == theirs[("RP+Col+Ex+MS", False)]
  assert (ours.rows[reporting.RANDOM_LABEL].metrics
          == theirs[(reporting.RANDOM_LABEL, False)])
  logs = []
  lasso = _evaluate(args + probe + ["--eval_lasso", "--nobaseline"],
                    log=logs.append)
  assert lasso.rows["RP"].metrics == theirs[("RP+Col+Ex+MS", True)]
  assert "[1/1] linear_probe (eval lasso)" in logs  # a fresh mixer row
  assert set(ours.metrics) == {"linear_probe/top1",
                               "linear_probe/recall_at_5"}
  # The equality says something: another seed changes the numbers (a
  # random trunk of seed 4 is another network).
  other = _evaluate(["--checkpoint=random", "--depth=14", "--width=0.25",
                     "--seed=4"] + probe[:1] + TINY_PARAMS[:4],
                    log=lambda s: None)
  assert (other.rows[reporting.RANDOM_LABEL].metrics
          != ours.rows[reporting.RANDOM_LABEL].metrics)
  # One cache: evaluate finds both of its rows in the report's work_dir.
  logs = []
  cached = _evaluate(args + probe + [f"--work_dir={cache}"], log=logs.append)
  assert sum("cached in" in line for line in logs) == 2
  assert not any(line.startswith("evaluating") for line in logs)
  assert {k: v.metrics for k, v in cached.rows.items()} == {
      k: v.metrics for k, v in ours.rows.items()}
