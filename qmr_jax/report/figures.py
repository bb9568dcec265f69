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


def tornado_figure(
    labels: Sequence[str],
    first_down: Sequence[float],
    first_up: Sequence[float],
    full_down: Sequence[float] | None = None,
    full_up: Sequence[float] | None = None,
    *,
    title: str | None = None,
    xlabel: str = "P&L (USD)",
    move_labels: Sequence[str] | None = None,
) -> Figure:
    """A ranked tornado chart: one row per input, bars of the first-order P&L for the down
    and the up move, and markers at the fully revalued P&L.

    Args:
      labels: input names, largest effect first (drawn at the top).
      first_down, first_up: first-order P&L of the down and up moves.
      full_down, full_up: full-revaluation P&L (markers), optional.
      move_labels: per input, a description of the moves (appended to the label).
    """
    n = len(labels)
    fig = _new_figure((8.0, 0.9 + 0.42 * max(n, 1)))
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    dn = np.asarray(first_down, float)
    up = np.asarray(first_up, float)
    ax.barh(y, dn, color="#d9534f", alpha=0.75, label="down move, first order")
    ax.barh(y, up, color="#2b7bba", alpha=0.75, label="up move, first order")
    if full_down is not None and full_up is not None:
        ax.plot(np.asarray(full_down, float), y, "k<", ms=5, label="full revaluation (down)")
        ax.plot(np.asarray(full_up, float), y, "k>", ms=5, label="full revaluation (up)")
    names = [f"{lab}  ({m})" if move_labels else lab
             for lab, m in zip(labels, move_labels or [""] * n, strict=True)]
    ax.set_yticks(y, names, fontsize="small")
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize="x-small", loc="lower right")
    if title:
        ax.set_title(title)
    return fig


def ladder_figure(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    title: str | None = None,
    ylabel: str = "P&L (USD)",
    ncols: int = 2,
) -> Figure:
    """P&L ladders: full revaluation against the first- and second-order Taylor predictions.

    Args:
      panels: panel title -> mapping with ``"x"`` (bump, in the axis' units), ``"full"``,
        ``"first"`` and ``"second"`` (P&L per bump), and optionally ``"xlabel"``.
    """
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = _new_figure((5.2 * ncols, 3.6 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (name, d) in zip(axes, panels.items(), strict=False):
        x = np.asarray(d["x"], float)
        ax.plot(x, np.asarray(d["full"], float), "k-o", ms=3.5, lw=1.6,
                label="full revaluation")
        ax.plot(x, np.asarray(d["first"], float), "--", lw=1.2, label="1st order (gradient)")
        ax.plot(x, np.asarray(d["second"], float), ":", lw=1.6,
                label="2nd order (gradient + Hessian)")
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.axvline(0.0, color="0.7", lw=0.8, ls=":")
        ax.set_title(name)
        ax.set_xlabel(str(d.get("xlabel", "bump")))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    if n:
        axes[0].legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG and return the path."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


__all__ = ["smile_figure", "tornado_figure", "ladder_figure", "save_figure"]
