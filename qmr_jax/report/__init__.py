"""Reporting at the edge of the library: formatted tables, matplotlib figures, HTML pages.

Nothing here is traced or jitted; inputs are plain NumPy/pandas values. Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, so no global backend or pyplot
state is touched.
"""

from importlib import import_module as _import_module

# Names are imported on first use (PEP 562): ``qmr_jax.report.tables`` alone (the command
# line's price table) does not import matplotlib.
_LAZY = {
    **dict.fromkeys(("ladder_figure", "save_figure", "smile_figure", "tornado_figure"),
                    ".figures"),
    **dict.fromkeys(("Page", "escape"), ".html"),
    **dict.fromkeys(("es_contribution_table", "pnl_heatmap", "stress_report", "stress_table",
                     "sweep_report", "worst_scenarios"), ".stress"),
    **dict.fromkeys(("Column", "format_number", "html_table", "text_table"), ".tables"),
}


def __getattr__(name: str):
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'qmr_jax.report' has no attribute {name!r}") from None
    value = getattr(_import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
