"""Reporting: the paper's Tables 2-4 with our numbers beside the paper's.

Split by job:

* :mod:`~mtssl_tf.reporting.tables`: row labels, columns, "ours (paper)"
  cells and the Markdown tables;
* :mod:`~mtssl_tf.reporting.analysis`: the analysis generated from the
  numbers (random baseline, margins against twice the std, the paper's
  orderings);
* :mod:`~mtssl_tf.reporting.seeds`: several runs per row (the ``--runs``
  syntax, mean and sample std);
* :mod:`~mtssl_tf.reporting.pretext`: the held-out pretext metrics table;
* :mod:`~mtssl_tf.reporting.study`: the CPU-scale study's runs and
  commands (``python -m mtssl_tf.study``, ``make study``);
* :mod:`~mtssl_tf.reporting.document`: the report document and the zoo's
  metadata layout;
* :mod:`~mtssl_tf.reporting.results`: the evaluate command's table and JSON;
* :mod:`~mtssl_tf.reporting.build`: which checkpoints fill which rows, and
  the report itself (:func:`make_report`).

The evaluations themselves run through the one driver shared with
``python -m mtssl_tf.evaluate``
(:func:`mtssl_tf.evaluation.driver.evaluate_checkpoints`); the paper's
numbers live in :mod:`mtssl_tf.evaluation.paper_tables`. The command is
``python -m mtssl_tf.report`` (docs/report.md).

>>> from mtssl_tf import reporting
>>> config = reporting.ReportConfig(runs=["RP=runs/demo_rp"],
...                                 evaluators=["linear_probe"])
>>> print(reporting.make_report(config))
"""
from mtssl_tf.evaluation.driver import Checkpoint
from mtssl_tf.evaluation.paper_tables import PAPER_TABLES, PaperRow, PaperTable
from mtssl_tf.evaluation.protocols import DEMO_EVAL_PARAMS
from mtssl_tf.reporting.analysis import (COLUMN_SHORT, SEED_CLAIM_ROWS,
                                         PairOrder, RandomComparison,
                                         SeedClaim, analysis_markdown,
                                         ordering_analysis, probe_vs_random,
                                         seed_claims)
from mtssl_tf.reporting.build import (DEFAULT_RANDOM_TRUNK, EvaluationFailed,
                                      ReportConfig, evaluate_all,
                                      evaluation_pairs, load_trunk,
                                      make_report, parse_entries)
from mtssl_tf.reporting.pretext import (PRETEXT_METRICS, pretext_rows,
                                        pretext_table, read_pretext_metrics)
from mtssl_tf.reporting.seeds import (RowRuns, aggregate,
                                      check_same_architecture,
                                      parse_run_rows, random_row)
from mtssl_tf.reporting.document import (build_report, protocol_name,
                                         zoo_evaluations)
from mtssl_tf.reporting.results import (PAPER_COLUMN_TITLES, metrics_table,
                                        results_markdown, write_results,
                                        write_text)
from mtssl_tf.reporting.tables import (COLUMN_TITLES, COLUMNS, KNOWN_LABELS,
                                       MISSING, NOISE_POINTS, ORDER_METRIC,
                                       OUR_METRICS, PRESET_LABELS,
                                       RANDOM_LABEL, Results, Samples,
                                       canonical_label, cell, markdown_table,
                                       mean_std, our_value, paper_row,
                                       rows_table, table_rows)

__all__ = [
    "COLUMN_SHORT", "COLUMN_TITLES", "COLUMNS", "Checkpoint",
    "DEFAULT_RANDOM_TRUNK", "DEMO_EVAL_PARAMS", "EvaluationFailed",
    "KNOWN_LABELS", "MISSING", "NOISE_POINTS", "ORDER_METRIC", "OUR_METRICS",
    "PAPER_COLUMN_TITLES", "PAPER_TABLES", "PRESET_LABELS", "PRETEXT_METRICS",
    "PairOrder", "PaperRow", "PaperTable", "RANDOM_LABEL", "RandomComparison",
    "ReportConfig", "Results", "RowRuns", "SEED_CLAIM_ROWS", "Samples",
    "SeedClaim", "aggregate", "analysis_markdown", "build_report",
    "canonical_label", "cell", "check_same_architecture", "evaluate_all",
    "evaluation_pairs", "load_trunk", "make_report", "markdown_table",
    "mean_std", "metrics_table", "ordering_analysis", "our_value",
    "paper_row", "parse_entries", "parse_run_rows", "pretext_rows",
    "pretext_table", "probe_vs_random", "protocol_name", "random_row",
    "read_pretext_metrics", "results_markdown", "rows_table", "seed_claims",
    "table_rows", "write_results", "write_text", "zoo_evaluations"]
