"""What users read: the Pareto front (table, CSV); the HTML report comes next."""

from peftsearch.reports.pareto import columns, pareto_rows, render_table, write_csv

__all__ = ["columns", "pareto_rows", "render_table", "write_csv"]
