"""Matplotlib figures drawn without pyplot (``Figure`` + Agg canvas, no global state)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _new_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def smile_figure(
    panels: Sequence[str],
    curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    *,
    title: str | None = None,
    xlabel: str = "log-moneyness  log(K/F)",
    ylabel: str = "implied vol (%)",
    ncols: int = 2,
) -> Figure:
    """Implied-volatility smiles, one panel per expiry, one line per model.

    Args:
      panels: the panel titles (e.g. ``"7 days"``), one per expiry.
      curves: model name -> one ``(x, vol)`` pair per panel (vols as decimals; NaN points
        are left out of the line).
      title: figure title.
      ncols: panels per row.

    Returns:
      A ``matplotlib.figure.Figure`` (save with ``save_figure``).
    """
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = _new_figure((5.2 * ncols, 3.6 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, (ax, name) in enumerate(zip(axes, panels, strict=False)):
        for model, series in curves.items():
            x, vol = (np.asarray(a, dtype=float) for a in series[i])
            ok = np.isfinite(x) & np.isfinite(vol)
            ax.plot(x[ok], 100.0 * vol[ok], marker=".", ms=3, lw=1.4, label=model)
        ax.set_title(name)
        ax.axvline(0.0, color="0.7", lw=0.8, ls=":")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG and return the path."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


__all__ = ["smile_figure", "save_figure"]
