"""The report: the paper's Tables 2-4 with our numbers beside the paper's
(``python -m tools.report``, the generator of RESULTS.md; docs/report.md).

Split by job:

* :mod:`~tools.report.seeds`: several runs per row (the ``--runs``
  syntax, mean and sample std);
* :mod:`~tools.report.pretext`: the held-out pretext metrics table;
* :mod:`~tools.report.study_plan`: the CPU-scale study's runs and
  commands (``python -m tools.study``, ``make study``);
* :mod:`~tools.report.document`: the report document and the zoo's
  metadata layout;
* :mod:`~tools.report.collect`: which checkpoints fill which rows, and
  the report itself (:func:`make_report`);
* :mod:`~tools.report.report_cli`: the command's flags.

The tables, the analysis and the evaluate command's outputs are the
installed package's (:mod:`mtssl_tf.reporting`, re-exported here). The
evaluations run through the driver shared with ``python -m
mtssl_tf.evaluate`` (:func:`mtssl_tf.evaluation.driver.evaluate_checkpoints`);
the paper's numbers live in :mod:`mtssl_tf.evaluation.paper_tables`.

>>> from tools import report
>>> config = report.ReportConfig(runs=["RP=runs/study/rp/s0"],
...                              evaluators=["linear_probe"])
>>> print(report.make_report(config))
"""
from mtssl_tf.evaluation.driver import Checkpoint
from mtssl_tf.evaluation.paper_tables import PAPER_TABLES, PaperRow, PaperTable
from mtssl_tf.evaluation.protocols import DEMO_EVAL_PARAMS
from mtssl_tf.reporting import *  # noqa: F401,F403  (the installed tables)
from mtssl_tf.reporting import __all__ as _installed
from tools.report.collect import (DEFAULT_RANDOM_TRUNK, EvaluationFailed,
                                  ReportConfig, evaluate_all,
                                  evaluation_pairs, load_trunk, make_report,
                                  parse_entries)
from tools.report.document import (build_report, protocol_name,
                                   zoo_evaluations)
from tools.report.pretext import (PRETEXT_METRICS, pretext_rows,
                                  pretext_table, read_pretext_metrics)
from tools.report.seeds import (RowRuns, aggregate, check_same_architecture,
                                parse_run_rows, random_row)

__all__ = list(_installed) + [
    "Checkpoint", "DEFAULT_RANDOM_TRUNK", "DEMO_EVAL_PARAMS",
    "EvaluationFailed", "PAPER_TABLES", "PRETEXT_METRICS", "PaperRow",
    "PaperTable", "ReportConfig", "RowRuns", "aggregate", "build_report",
    "check_same_architecture", "evaluate_all", "evaluation_pairs",
    "load_trunk", "make_report", "parse_entries", "parse_run_rows",
    "pretext_rows", "pretext_table", "protocol_name", "random_row",
    "read_pretext_metrics", "zoo_evaluations"]
