"""Result tables: our numbers beside the paper's, the evaluate command's
table and JSON, and the closing summary of ``make demo``.

Split by job:

* :mod:`~mtssl_tf.reporting.tables`: row labels, columns, "ours (paper)"
  cells and the Markdown tables;
* :mod:`~mtssl_tf.reporting.analysis`: the analysis generated from the
  numbers (random baseline, margins against twice the std, the paper's
  orderings);
* :mod:`~mtssl_tf.reporting.results`: the evaluate command's table and JSON;
* :mod:`~mtssl_tf.reporting.demo_tables`: the demo's closing summary
  (``python -m mtssl_tf.demo_summary``).

The report over many checkpoints (RESULTS.md) is maintainer tooling outside
the package: ``python -m tools.report`` in a checkout (docs/report.md).
"""
from mtssl_tf.reporting.analysis import (COLUMN_SHORT, SEED_CLAIM_ROWS,
                                         PairOrder, RandomComparison,
                                         SeedClaim, analysis_markdown,
                                         ordering_analysis, probe_vs_random,
                                         seed_claims)
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
    "COLUMN_SHORT", "COLUMN_TITLES", "COLUMNS", "KNOWN_LABELS", "MISSING",
    "NOISE_POINTS", "ORDER_METRIC", "OUR_METRICS", "PAPER_COLUMN_TITLES",
    "PRESET_LABELS", "PairOrder", "RANDOM_LABEL", "RandomComparison",
    "Results", "SEED_CLAIM_ROWS", "Samples", "SeedClaim", "analysis_markdown",
    "canonical_label", "cell", "markdown_table", "mean_std", "metrics_table",
    "ordering_analysis", "our_value", "paper_row", "probe_vs_random",
    "results_markdown", "rows_table", "seed_claims", "table_rows",
    "write_results", "write_text"]
