"""The CPU-scale study with seeds: several runs per row in
the report (mean +- sample std against NumPy), the --runs syntax and its
errors, the held-out pretext table from hand-written pretext_metrics.json
files, the analysis sentences, Figure 5, and the study runner's commands."""
import json
import os
import shlex
import subprocess

import numpy as np
import pytest
from absl import flags

import harness
from mtssl_tf.config import ConfigError, TrainConfig
from mtssl_tf.models.multitask import MultiTaskModel
from mtssl_tf.models.trunk import TrunkConfig
from tools import report as reporting
from tools.report import report_cli as report
from tools.report import study_plan as study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PM = "\u00b1"


# -- mean and std ---------------------------------------------------------------------
@pytest.mark.parametrize("values", [[0.5], [0.4, 0.6], [0.31, 0.35, 0.42],
                                    [0.1, 0.1, 0.1, 0.7]])
def test_mean_std_is_numpy_sample_std(values):
  mean, std = reporting.mean_std(values)
  assert mean == pytest.approx(np.mean(values), abs=1e-12)
  if len(values) == 1:
    assert std is None
  else:
    assert std == pytest.approx(np.std(values, ddof=1), abs=1e-12)
  with pytest.raises(ValueError, match="no values"):
    reporting.mean_std([])


def test_aggregate_and_cells_show_mean_std_of_the_runs():
  rows = reporting.parse_run_rows(["RP=a", "RP+Col=b0+b1+b2"])
  rows.append(reporting.random_row([0, 1]))
  top1 = {"RP+Col #1": 0.61, "RP+Col #2": 0.55, "RP+Col #3": 0.64,
          "Random init #1": 0.40, "Random init #2": 0.46, "RP": 0.5}
  member = {(k, False): {"linear_probe/top1": v,
                         "linear_probe/recall_at_5": 0.9 + v / 10}
            for k, v in top1.items()}
  means, samples = reporting.aggregate(rows, member)
  ours = [0.61, 0.55, 0.64]
  assert samples[("RP+Col", False)]["linear_probe/top1"] == ours
  assert means[("RP+Col", False)]["linear_probe/top1"] == pytest.approx(
      np.mean(ours))
  row = reporting.paper_row("RP+Col")
  r5 = [0.9 + v / 10 for v in ours]
  assert reporting.cell(means, row, "imagenet", samples) == (
      f"{100 * np.mean(ours):.1f} {PM} {100 * np.std(ours, ddof=1):.1f} / "
      f"{100 * np.mean(r5):.1f} {PM} {100 * np.std(r5, ddof=1):.1f} (n=3) "
      f"({row.values[0]:.2f})")
  # A single run keeps today's format; an unmeasured column a dash.
  assert reporting.cell(means, reporting.paper_row("RP"), "imagenet",
                        samples) == "50.0 / 95.0 (59.21)"
  assert reporting.cell(means, row, "nyu", samples).startswith("\u2014 (")
  table = reporting.markdown_table(2, means, samples=samples)
  assert f"| Random init | 43.0 {PM} 4.2 / " in table


# -- the --runs syntax ----------------------------------------------------------------
def _run_folder(path, depth=14, tasks=("relative_position",), seed=0):
  os.makedirs(path, exist_ok=True)
  config = TrainConfig(run_dir=str(path), tasks=tuple(tasks), seed=seed,
                       task_params={t: harness.tiny_params(t) for t in tasks},
                       trunk=TrunkConfig(depth=depth, width=0.25))
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(config.to_json())
  return str(path)


def test_runs_syntax_plus_glob_and_a_path_holding_a_plus(tmp_path):
  for name in ("s2", "s0", "s1", "a+b"):
    _run_folder(tmp_path / name)
  (row,) = reporting.parse_run_rows([f"rp + col={tmp_path}/s*"])
  assert row.label == "RP+Col"
  assert [c.source for c in row.members] == [
      str(tmp_path / f"s{i}") for i in range(3)]
  assert [c.label for c in row.members] == ["RP+Col #1", "RP+Col #2",
                                            "RP+Col #3"]
  rp, one = reporting.parse_run_rows([
      f"RP={tmp_path / 's0'}+{tmp_path / 's1'}", f"RP/H={tmp_path / 'a+b'}"])
  assert [c.source for c in rp.members] == [str(tmp_path / "s0"),
                                            str(tmp_path / "s1")]
  assert [(c.label, c.source) for c in one.members] == [
      ("RP/H", str(tmp_path / "a+b"))]
  # The random row: one trunk per init seed; none given, today's one.
  assert [c.init_seed for c in reporting.random_row([3, 5]).members] == [3, 5]
  assert reporting.random_row([]).members[0].label == "Random init"
  assert reporting.random_row([]).members[0].init_seed is None


def test_runs_syntax_errors_name_the_problem(tmp_path):
  a, b = _run_folder(tmp_path / "a"), _run_folder(tmp_path / "b")
  deep = _run_folder(tmp_path / "deep", depth=26)
  other = _run_folder(tmp_path / "other", tasks=("colorization",))
  with pytest.raises(ConfigError, match="given twice: RP "):
    reporting.parse_run_rows([f"RP={a}", f"RP={b}"])
  with pytest.raises(ConfigError, match="run .*a' given twice"):
    reporting.parse_run_rows([f"RP={a}", f"RP+Col={b}+{a}"])
  with pytest.raises(ConfigError, match="empty run between"):
    reporting.parse_run_rows([f"RP={a}++{b}"])
  with pytest.raises(FileNotFoundError, match="matches no run folder"):
    reporting.parse_run_rows([f"RP={tmp_path}/nothing*"])
  with pytest.raises(ConfigError, match="LABEL=RUN_DIR"):
    reporting.parse_run_rows([a])
  with pytest.raises(FileNotFoundError, match="gone.*row RP\\+Col"):
    reporting.ReportConfig(runs=[f"RP+Col={a}+{tmp_path / 'gone'}"],
                           evaluators=["linear_probe"])
  with pytest.raises(ConfigError, match="different architectures.*depth: 26"):
    reporting.ReportConfig(runs=[f"RP={a}+{deep}"],
                           evaluators=["linear_probe"])
  with pytest.raises(ConfigError, match="different architectures.*tasks"):
    reporting.ReportConfig(runs=[f"RP={a}+{other}"],
                           evaluators=["linear_probe"])
  (tmp_path / "t.keras").write_bytes(b"x")
  with pytest.raises(ConfigError, match="takes run folders"):
    reporting.ReportConfig(runs=[f"RP={a}+{tmp_path / 't.keras'}"],
                           evaluators=["linear_probe"])
  with pytest.raises(ConfigError, match="contradicting"):
    reporting.ReportConfig(runs=[f"RP={a}"], random=False,
                           random_seeds=[0, 1], evaluators=["linear_probe"])
  with pytest.raises(ConfigError, match="seed twice"):
    reporting.ReportConfig(runs=[f"RP={a}"], random_seeds=[1, 1],
                           evaluators=["linear_probe"])
  with pytest.raises(ConfigError, match="'x' is not an integer"):
    reporting.ReportConfig(runs=[f"RP={a}"], random_seeds=["x"],
                           evaluators=["linear_probe"])
  # Eval lasso follows the row, not the run's own label.
  config = reporting.ReportConfig(runs=[f"RP+Col+Ex+MS={a}+{b}"],
                                  evaluators=["linear_probe"])
  pairs = reporting.evaluation_pairs(config.checkpoints, config.row_of)
  assert sorted((c.label, lasso) for c, lasso in pairs) == [
      ("RP+Col+Ex+MS #1", False), ("RP+Col+Ex+MS #1", True),
      ("RP+Col+Ex+MS #2", False), ("RP+Col+Ex+MS #2", True),
      ("Random init", False)]


# -- held-out pretext metrics ---------------------------------------------------------
def _pretext(rp, top5, iou, n=15):
  return {"relative_position": {"accuracy": rp, "chance": 0.125,
                                "examples": 128.0, "step": 1500},
          "colorization": {"top5_accuracy": top5, "chance": 0.76,
                           "auc": 0.92, "chance_auc": 0.91, "step": 1500},
          "exemplar": {"top1": 0.2, "chance": 1 / n, "images": float(n),
                       "step": 1500},
          "motion_segmentation": {"iou": iou, "chance": 0.0,
                                  "iou_all_moving": 0.06, "step": 1500}}


def test_pretext_table_from_hand_written_json(tmp_path):
  runs = []
  for i, (rp, top5) in enumerate([(0.30, 0.50), (0.36, 0.56),
                                  (0.27, 0.47)]):
    path = tmp_path / f"s{i}"
    path.mkdir()
    (path / "pretext_metrics.json").write_text(
        json.dumps(_pretext(rp, top5, 0.1 * i)))
    runs.append((str(path), reporting.read_pretext_metrics(str(path))))
  (tmp_path / "none").mkdir()
  assert reporting.read_pretext_metrics(str(tmp_path / "none")) is None
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "pretext_metrics.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match="bad.*expected"):
    reporting.read_pretext_metrics(str(tmp_path / "bad"))
  text = reporting.pretext_table(
      {"RP+Col+Ex+MS": runs, "RP": [(str(tmp_path / "none"), None)]})
  lines = {tuple(c.strip() for c in line.split("|")[1:4]): line
           for line in text.splitlines() if line.startswith("| RP")}
  rp = [0.30, 0.36, 0.27]
  assert lines[("RP+Col+Ex+MS", "relative_position", "8-way accuracy")] == (
      f"| RP+Col+Ex+MS | relative_position | 8-way accuracy | "
      f"{np.mean(rp):.3f} {PM} {np.std(rp, ddof=1):.3f} (n=3) | "
      "0.125 (uniform guess) | 1500 |")
  top5 = lines[("RP+Col+Ex+MS", "colorization", "top-5 bin accuracy")]
  assert f"{np.std([0.5, 0.56, 0.47], ddof=1):.3f} (n=3) | 0.760 " in top5
  assert ("RP+Col+Ex+MS", "exemplar", "retrieval top-1 (N=15)") in lines
  ms = [line for line in text.splitlines()
        if line.startswith("| RP+Col+Ex+MS | motion_segmentation")]
  assert len(ms) == 2 and "(all static)" in ms[0] and "(all moving)" in ms[1]
  assert not any(key[0] == "RP" for key in lines)
  assert f"No `pretext_metrics.json` in: RP (`{tmp_path / 'none'}`)" in text


# -- the analysis sentences -------------------------------------------------------------
def _samples(ours, random, label="RP+Col"):
  return {(label, False): {"linear_probe/top1": ours},
          ("Random init", False): {"linear_probe/top1": random}}


def test_seed_claim_holds_fails_or_cannot_be_judged():
  random = [0.40, 0.42, 0.41]
  big = np.std(random, ddof=1)
  ours = [0.50, 0.51, 0.49]
  line = reporting.seed_claims(_samples(ours, random))[0]
  margin = 100 * (np.mean(ours) - np.mean(random))
  assert line.startswith(f"RP+Col beats random init on the linear probe "
                         f"(top-1) by {margin:+.1f} points")
  assert (f"more than twice the larger std ({100 * big:.1f}; "
          f"2 x {100 * big:.1f}") in line
  assert line.endswith("the claim holds.")
  # A margin inside twice the spread: said plainly.
  noisy = [0.35, 0.55, 0.45]
  line = reporting.seed_claims(_samples(noisy, random))[0]
  std = 100 * np.std(noisy, ddof=1)
  assert f"NOT more than twice the larger std ({std:.1f};" in line
  assert line.endswith("the claim does NOT hold.")
  line = reporting.seed_claims(_samples([0.30, 0.31], random))[0]
  assert "RP+Col does NOT beat random init" in line
  assert line.endswith("the claim does NOT hold.")
  line = reporting.seed_claims(_samples([0.5], random))[0]
  assert "cannot be judged" in line and "n=1" in line
  # The four-task row missing: not measured, never a pass.
  lines = reporting.seed_claims(_samples(ours, random))
  assert lines[1] == ("RP+Col+Ex+MS vs random init on the linear probe: not "
                      "measured (the row or the random row is missing).")
  means = {k: {m: float(np.mean(v)) for m, v in d.items()}
           for k, d in _samples(ours, random).items()}
  text = reporting.analysis_markdown(means, (2,), _samples(ours, random))
  assert "- RP+Col beats random init" in text
  assert "beats random init" not in reporting.analysis_markdown(means, (2,))


# -- the runner -------------------------------------------------------------------------
def test_study_plan_and_dry_run(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  assert study.parse_seeds("0 1,2") == (0, 1, 2)
  for bad, message in (("", "at least one"), ("0 x", "integers"),
                       ("1 1", "twice")):
    with pytest.raises(ValueError, match=message):
      study.parse_seeds(bad)
  # Steps come from the flagfile chain (study_rp.cfg -> study_common.cfg).
  steps = study.flag_value("configs/study_common.cfg", "steps")
  assert study.flag_value("configs/study_rp.cfg", "steps") == steps
  assert int(steps) > 0
  root = str(tmp_path / "study")
  plan = study.study_plan((0, 1, 2), root)
  rows = ["RP", "RP/H", "Col", "Ex", "MS", "RP+Col", "RP+Col+Ex+MS",
          "RP+Col+Ex+MS/Lasso"]
  # Seed by seed; RP/H with the first seed only.
  assert [(r.label, r.seed) for r in plan] == (
      [(r, 0) for r in rows] + [(r, s) for s in (1, 2) for r in rows
                                if r != "RP/H"])
  assert {r.label for r in plan if not r.in_tables} == {"Col", "Ex", "MS"}
  # Each row's config exists and names its run folder's row.
  for run in plan:
    assert os.path.isfile(os.path.join(REPO, run.config)), run.config
    assert study.flag_value(run.config, "steps") == steps
  # One run finished (final checkpoint + held-out metrics): skipped.
  done = plan[5]
  assert (done.label, done.seed) == ("RP+Col", 0)
  os.makedirs(os.path.join(done.run_dir, "checkpoints"))
  open(os.path.join(done.run_dir, "checkpoints",
                    f"ckpt-{steps}.index"), "w").close()
  open(os.path.join(done.run_dir, "pretext_metrics.json"), "w").close()
  # A run stopped half-way (an earlier checkpoint only) is trained again.
  half = plan[12]
  assert (half.label, half.seed) == ("RP+Col", 1)
  os.makedirs(os.path.join(half.run_dir, "checkpoints"))
  open(os.path.join(half.run_dir, "checkpoints", "ckpt-500.index"),
       "w").close()
  logs, calls = [], []
  assert study.run_study((0, 1, 2), root=root, output="R.md", dry_run=True,
                         log=logs.append, call=calls.append) == 0
  total = len(plan) + 2
  assert not calls and len(logs) == total
  assert logs[5].startswith(f"[6/{total}] RP+Col seed 0 ({done.run_dir}): "
                            "complete, skipped")
  assert logs[12].endswith(
      f"-m mtssl_tf.train --flagfile=configs/study_rp_col.cfg --seed=1 "
      f"--run_dir={half.run_dir}")
  assert "--flagfile=configs/study_ms.cfg --seed=2" in logs[len(plan) - 4]
  # The matrix: every matrix row with every seed, cells cached in the root.
  matrix = study.matrix_command(plan, (0, 1, 2), root)
  assert logs[-2] == (f"[{total - 1}/{total}] transfer matrix (cached cells "
                      f"are kept): {shlex.join(matrix)}")
  assert matrix[1:] == (
      ["tools/transfer_matrix.py", "--seeds=0,1,2"]
      + [f"--row={label}={root}/{name}/s{{seed}}" for label, name in (
          ("RP", "rp"), ("Col", "col"), ("Ex", "ex"), ("MS", "ms"),
          ("RP+Col", "rp_col"), ("RP+Col+Ex+MS", "4task"),
          ("RP+Col+Ex+MS/Lasso", "4task_lasso"))]
      + [f"--cache={root}/transfer_matrix",
         f"--output={root}/transfer_matrix.md"])
  # The report: the tables' rows (not the single-task Col, Ex, MS), the
  # matrix at the end.
  assert logs[-1].startswith(f"[{total}/{total}] report (Random init: trunk "
                             "init seeds 0, 1, 2)")
  runs = (f"--runs=RP={root}/rp/s0+{root}/rp/s1+{root}/rp/s2,"
          f"RP/H={root}/rp_h/s0,"
          f"RP+Col={root}/rp_col/s0+{root}/rp_col/s1+{root}/rp_col/s2,")
  assert runs in logs[-1] and "--random_seeds=0,1,2" in logs[-1]
  assert "=" + root + "/col/" not in logs[-1]
  assert "--preamble=docs/study_preamble.md" in logs[-1]
  assert f"--appendix={root}/transfer_matrix.md" in logs[-1]
  assert os.path.isfile(os.path.join(REPO, study.PREAMBLE))
  # Running: every missing run, the matrix, then the report; a failure
  # stops it.
  calls.clear()
  assert study.run_study((0,), root=root, log=lambda s: None,
                         call=lambda c: calls.append(c) or 0) == 0
  assert [c[3] for c in calls[:-2]] == [
      f"--flagfile=configs/study_{n}.cfg" for n in
      ("rp", "rp_h", "col", "ex", "ms", "4task", "4task_lasso")]
  assert calls[-2][1] == "tools/transfer_matrix.py"
  assert calls[-1][2] == "tools.report"
  calls.clear()
  assert study.run_study((0,), root=root, log=lambda s: None,
                         call=lambda c: calls.append(c) or 3) == 3
  assert len(calls) == 1


def test_study_refuses_to_run_outside_the_repository_root(tmp_path,
                                                        monkeypatch):
  monkeypatch.chdir(REPO)
  study.check_working_folder()
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match="configs/study_rp.cfg, .*"
                     "run the study from the repository root"):
    study.check_working_folder()


def test_make_study_runs_the_runner_with_the_seeds():
  # --no-print-directory: under a parent make (`make test`, CI) a sub-make
  # prints "Entering/Leaving directory" lines around its commands.
  out = subprocess.run(
      ["make", "-n", "--no-print-directory", "study", "SEEDS=4 5", "PY=py"],
      cwd=REPO, capture_output=True, text=True, check=True)
  assert out.stdout.splitlines()[-1] == (
      'py -m tools.study --seeds="4 5" --output=RESULTS.md')


# -- the command end to end ---------------------------------------------------------------
TINY_PROBE = ["--eval_param=linear_probe.image_size=32",
              "--eval_param=linear_probe.steps=5",
              "--eval_param=linear_probe.max_train_examples=60",
              "--eval_param=linear_probe.max_test_examples=40"]


def _trained_run(run_dir, seed):
  """A run folder of a tiny trunk whose weights depend on ``seed``."""
  import keras
  path = _run_folder(run_dir, seed=seed)
  keras.utils.set_random_seed(seed)
  config = TrainConfig(
      run_dir=path, tasks=("relative_position",), seed=seed,
      task_params={"relative_position": harness.tiny_params(
          "relative_position")},
      trunk=TrunkConfig(depth=14, width=0.25))
  model = MultiTaskModel(**config.model_kwargs())
  from mtssl_tf.training.run_checkpoints import save_model
  save_model(model, os.path.join(path, "checkpoints", "ckpt"))
  return path


@pytest.mark.slow
def test_report_with_seeds_end_to_end(tmp_path):
  runs = [_trained_run(str(tmp_path / "rp" / f"s{i}"), i) for i in (0, 1)]
  (tmp_path / "rp" / "s0" / "pretext_metrics.json").write_text(
      json.dumps(_pretext(0.3, 0.5, 0.1)))
  from mtssl_tf.utils import plots
  plots.plot_alphas({"relative_position": [0.2, 0.9]},
                    str(tmp_path / "rp" / "s1" / "plots" / "alphas.png"))
  out = tmp_path / "doc" / "R.md"
  fv = flags.FlagValues()
  report.define_report_flags(fv)
  fv(["report", f"--runs=RP={tmp_path}/rp/s*", "--random_seeds=0,7",
      "--evaluators=linear_probe", f"--work_dir={tmp_path / 'w'}",
      f"--output={out}", f"--json_output={tmp_path / 'm.json'}",
      f"--alpha_plot={tmp_path / 'doc' / 'figs' / 'a.png'}",
      "--tables=2"] + TINY_PROBE)
  text = report.run_report(fv, log=lambda s: None)
  entries = {e["label"]: e for e in json.loads(
      (tmp_path / "m.json").read_text())}
  assert set(entries) == {"RP", "Random init"}
  for label, entry in entries.items():
    per_run = [r["metrics"]["linear_probe/top1"] for r in entry["runs"]]
    assert len(per_run) == 2 and entry["n"]["linear_probe/top1"] == 2
    assert entry["metrics"]["linear_probe/top1"] == pytest.approx(
        np.mean(per_run))
    assert entry["std"]["linear_probe/top1"] == pytest.approx(
        np.std(per_run, ddof=1))
    mean = 100 * np.mean(per_run)
    assert f"| {label} | {mean:.1f} {PM} " in text
  assert [r["source"] for r in entries["RP"]["runs"]] == runs
  assert entries["RP"]["runs"][0]["pretext"]["relative_position"][
      "accuracy"] == 0.3
  assert [r["init_seed"] for r in entries["Random init"]["runs"]] == [0, 7]
  # The random trunks differ by init seed only: the cache says so.
  cached = sorted(json.loads(p.read_text())["init_seed"]
                  for p in (tmp_path / "w").iterdir()
                  if p.name.startswith("random_init"))
  assert cached == [0, 7]
  assert "mean \u00b1 std (n=runs)" in text and "evaluation seed" in text
  assert "| RP | relative_position | 8-way accuracy | 0.300 |" in text
  assert "No `pretext_metrics.json` in: RP (`" in text
  assert (tmp_path / "doc" / "figs" / "a.png").read_bytes() == (
      tmp_path / "rp" / "s1" / "plots" / "alphas.png").read_bytes()
  assert "](figs/a.png)" in text
  assert "- RP+Col vs random init on the linear probe: not measured" in text
