"""What users read: the Pareto front (table, CSV); the HTML report comes next."""

from peftsearch.reports.pareto import COLUMNS, pareto_rows, render_table, write_csv

__all__ = ["COLUMNS", "pareto_rows", "render_table", "write_csv"]
