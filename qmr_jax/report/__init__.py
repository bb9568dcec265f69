"""Reporting at the edge of the library: formatted tables, matplotlib figures, HTML pages.

Nothing here is traced or jitted; inputs are plain NumPy/pandas values. Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, so no global backend or pyplot
state is touched.
"""

from .._lazy import lazy_package as _lazy_package

# Names are imported on first use: ``qmr_jax.report.tables`` alone (the command line's price
# table) does not import matplotlib.
_LAZY: dict[str, tuple[str, str]] = {}
for _mod, _names in {
    ".figures": ("ladder_figure", "save_figure", "smile_figure", "tornado_figure"),
    ".html": ("Page", "escape"),
    ".stress": ("es_contribution_table", "pnl_heatmap", "stress_report", "stress_table",
                "sweep_report", "worst_scenarios"),
    ".tables": ("Column", "format_number", "html_table", "text_table"),
}.items():
    for _name in _names:
        _LAZY[_name] = (_mod, _name)
del _mod, _names, _name

__getattr__, __dir__ = _lazy_package(__name__, _LAZY)


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
