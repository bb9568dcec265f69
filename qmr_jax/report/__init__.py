"""Reporting at the edge of the library: formatted tables, matplotlib figures, HTML pages.

Nothing here is traced or jitted; inputs are plain NumPy/pandas values. Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, so no global backend or pyplot
state is touched.
"""

from .figures import ladder_figure, save_figure, smile_figure, tornado_figure
from .html import Page, escape
from .stress import (
    es_contribution_table,
    pnl_heatmap,
    stress_report,
    stress_table,
    sweep_report,
    worst_scenarios,
)
from .tables import Column, format_number, html_table, text_table

__all__ = [
    "stress_report",
    "sweep_report",
    "stress_table",
    "pnl_heatmap",
    "worst_scenarios",
    "es_contribution_table",
    "Page",
    "escape",
    "Column",
    "format_number",
    "html_table",
    "text_table",
    "smile_figure",
    "tornado_figure",
    "ladder_figure",
    "save_figure",
]
