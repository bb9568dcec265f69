"""Stress reports: heatmaps of sweep metrics, worst scenarios, ES contributions, named scenarios.

Inputs are the plain tables of ``qmr_jax.stress.sweeps`` (``SweepResult.table``: one row per
scenario indexed by ``index``, one column per design dimension such as ``spot``, ``vol``,
``horizon`` or ``scale.lam``, then the metrics) and of ``qmr stress`` (one row per named
scenario). P&L is in USD, positive = gain; VaR and ES are positive losses.

* ``pnl_heatmap(table, x, y, metric, agg=...)`` - ``metric`` over two design dimensions,
  aggregated over the others (``"min"`` for the worst case, ``"mean"``, ...);
* ``worst_scenarios(table, n)`` - the ``n`` worst scenarios with the three positions losing
  most in each (``drivers``);
* ``es_contribution_table`` / ``es_contribution_figure`` - per-position ES contributions of one
  scenario (the worst by default) and their shares;
* ``sweep_report(result, out_dir)`` - heatmaps, ``worst.csv``, ``es_contributions.csv`` and
  ``.png``, ``results.csv`` and ``report.html`` of a sweep;
* ``stress_table(rows)`` - a fixed-width terminal table of a few scenarios;
  ``print_stress_table(rows)`` prints it, with ``rich`` on a terminal;
* ``stress_report(rows, positions, out_dir)`` - ``stress.csv``, ``positions.csv``, a bar chart
  and a scenario x position heatmap, ``report.html``.

Display: design dimensions in their units (``dim_label``, ``dim_ticks``: spot moves in %, vol
shifts in vol points, horizons in days, ``scale.*`` as multipliers), ticks rounded to the
grid's resolution; amounts with thousands separators and never in scientific notation, and
magnitudes below ``zero_threshold`` (a cent, or ``ZERO_RELATIVE`` of the book's gross
exposure) shown as 0.

Nothing here imports JAX; figures are ``matplotlib.figure.Figure`` objects on the Agg canvas.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.ticker import FuncFormatter

from .figures import _new_figure, save_figure
from .html import Page
from .tables import Column, format_fixed, format_sig, html_table, text_table

_METRIC = re.compile(r"^(mean|std|worst|best|cost|pnl_usd|pnl_coin|(var|es)\d+(_se)?"
                     r"|pnl\..+|es_contrib\..+)$")
_LOSS = re.compile(r"^((var|es)\d+(_se)?|std|cost|.*_se|es_contrib\..+)$")
_ES = re.compile(r"^es(\d+)$")

MAX_PAIRS = 6
"""Most dimension pairs ``sweep_report`` draws heatmaps for."""
ANNOTATE_MAX = 12
"""Heatmap cells are annotated when the grid is at most this many cells each way."""
MAX_LEVELS = 20
"""A dimension with more distinct values (a random design) is binned into ``BINS`` bins."""
BINS = 10

ZERO_USD = 0.01
"""USD amounts below a cent in absolute value are shown as 0."""
ZERO_RELATIVE = 1e-9
"""... and so are amounts below this share of the book's gross exposure (``gross_usd`` of the
stress meta or the sweep manifest), whichever is larger: revaluation noise such as
``1.4e-11`` USD (the P&L of an unshocked book) prints as ``0``, never in scientific
notation. The CSV files keep the exact numbers."""
ZERO_COIN = 1e-8
"""Coin amounts below this (one satoshi) are shown as 0."""


def zero_threshold(gross_usd: float | None = None) -> float:
    """The USD magnitude below which an amount is shown as 0: ``ZERO_USD`` or
    ``ZERO_RELATIVE`` times the gross exposure, whichever is larger."""
    try:
        g = abs(float(gross_usd))
    except (TypeError, ValueError):
        g = 0.0
    return max(ZERO_USD, ZERO_RELATIVE * g) if math.isfinite(g) else ZERO_USD


@dataclass(frozen=True)
class _Dim:
    """How a design dimension is displayed: ``value * scale`` with ``prefix``/``suffix``,
    a ``+`` before positive values when ``signed``."""

    label: str
    scale: float = 1.0
    suffix: str = ""
    signed: bool = True
    prefix: str = ""


# the units are those of ``Shock`` (qmr_jax.stress.shocks): spot a relative move, vol/term
# absolute vol (0.10 = 10 vol points), horizon in years, scale.* multipliers
_DIMS: dict[str, _Dim] = {
    "spot": _Dim("spot move (%)", 100.0, "%"),
    "vol": _Dim("vol shift (vol points)", 100.0),
    "term": _Dim("short-end vol shift (vol points)", 100.0),
    "skew": _Dim("rho shift (skew)"),
    "rate": _Dim("USD rate shift (%)", 100.0, "%"),
    "basis": _Dim("basis shift (%/yr)", 100.0, "%"),
    "horizon": _Dim("horizon (days)", 365.0, signed=False),
    "drift": _Dim("real-world drift (%/yr)", 100.0, "%"),
    "spread": _Dim("half-spread multiplier (x)", signed=False, prefix="x"),
    "impact_bps": _Dim("market impact (bps)", signed=False),
    "exit_fraction": _Dim("share of the book closed out (%)", 100.0, "%", signed=False),
}


def _dim(name: str) -> _Dim:
    if name in _DIMS:
        return _DIMS[name]
    if name.startswith("scale."):
        return _Dim(f"{name[6:]} multiplier (x base value)", signed=False, prefix="x")
    if name.startswith("shift."):
        return _Dim(f"{name[6:]} shift (added to the base value)")
    return _Dim(name, signed=False)


# ------------------------------------------------------------------------------------------
# names, units, formats


def is_metric(name: str) -> bool:
    """Whether a results-table column is a metric (not a design dimension)."""
    return bool(_METRIC.match(str(name)))


def _is_loss(metric: str) -> bool:
    """Loss-like metrics (VaR, ES, std, cost, standard errors): larger is worse."""
    return bool(_LOSS.match(str(metric)))


NOTE_COLUMNS = ("clamped",)
"""Text columns of a sweep table (neither dimensions nor metrics): ``clamped`` says which
shocked parameters were clamped into the model's domain."""


def dimensions(table: pd.DataFrame) -> list[str]:
    """The design dimensions of a sweep table (its non-metric, non-note columns)."""
    return [c for c in table.columns if not is_metric(c) and c not in NOTE_COLUMNS]


def clamped_summary(table: pd.DataFrame) -> str | None:
    """A sentence on the scenarios whose shocked parameters were clamped into the model's
    domain (``clamped`` column), or ``None`` when there are none."""
    if "clamped" not in table.columns:
        return None
    notes = table["clamped"].fillna("").astype(str)
    hit = notes[notes != ""]
    if hit.empty:
        return None
    first = hit.iloc[0]
    return (f"{len(hit):,} of {len(table):,} scenarios moved a model parameter out of the "
            f"model's domain; it was clamped to the domain's edge (column 'clamped'), e.g. "
            f"scenario {hit.index[0]}: {first}.")


def metrics(table: pd.DataFrame) -> list[str]:
    """The metric columns of a sweep table."""
    return [c for c in table.columns if is_metric(c)]


def dim_label(name: str) -> str:
    """Axis label with units of a design dimension: ``spot move (%)``, ``vol shift (vol
    points)``, ``horizon (days)``, ``xi multiplier (x base value)``."""
    return _dim(name).label


def _tick_text(d: _Dim, v: float, decimals: int | None) -> str:
    """One scaled value: ``decimals`` fixed (``None``: 4 significant digits); 0 unsigned."""
    if not math.isfinite(v):
        return "-"
    text = format_sig(v, 4) if decimals is None else f"{v:,.{decimals}f}"
    if float(text.replace(",", "")) == 0.0:
        text = "0"
    elif d.signed and v > 0:
        text = "+" + text
    return f"{d.prefix}{text}{d.suffix}"


def dim_tick(name: str, value) -> str:
    """A dimension's value in its display units, 4 significant digits (``spot`` -0.3 ->
    ``-30%``, ``vol`` 0.1 -> ``+10``, ``horizon`` 7/365 -> ``7``, ``scale.xi`` 2 -> ``x2``);
    values within 1e-12 of 0 print as ``0``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    d = _dim(name)
    x = v * d.scale
    return _tick_text(d, 0.0 if abs(x) < 1e-12 else x, None)


def dim_ticks(name: str, values) -> list[str]:
    """Tick labels of a grid of a dimension's values, rounded to the grid's resolution.

    The decimals are the fewest that keep every value within 5% of the smallest step
    between distinct values (``np.linspace(-0.4, 0.2, 13)`` gives ``-40%`` .. ``+20%`` in
    steps of 5, and ``0%`` where the grid's arithmetic left ``5.6e-17``); values within 1e-6
    steps of 0 print as ``0``. A single value gets 4 significant digits (``dim_tick``).
    """
    d = _dim(name)
    try:
        x = np.asarray(values, np.float64) * d.scale
    except (TypeError, ValueError):
        return [str(v) for v in values]
    u = np.unique(x[np.isfinite(x)])
    step = float(np.min(np.diff(u))) if u.size > 1 else 0.0
    if not step > 0:
        return [dim_tick(name, v) for v in np.asarray(values, np.float64)]
    x = np.where(np.abs(x) < 1e-6 * step, 0.0, x)
    decimals = 6
    for k in range(7):
        if np.max(np.abs(np.round(u, k) - u)) <= 0.05 * step:
            decimals = k
            break
    return [_tick_text(d, float(v), decimals) for v in x]


def _unit(metric: str) -> str:
    return "coin" if metric == "pnl_coin" or metric.endswith("_coin") else "USD"


def _compact(v: float, zero: float = ZERO_USD) -> str:
    """Short cell text: ``-12.3k``, ``1.25M``, ``950``, ``0`` below ``zero``."""
    if not np.isfinite(v):
        return ""
    a = abs(v)
    if a < zero:
        return "0"
    if a >= 1e9:
        return f"{v / 1e9:.2f}B"
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a >= 1e3:
        return f"{v / 1e3:.1f}k"
    if a >= 10:
        return f"{v:.0f}"
    return format_fixed(v, 2, zero=zero)


def _usd(v, zero: float = ZERO_USD) -> str:
    return format_fixed(v, 2, zero=zero)


def _money(decimals: int, zero: float):
    """A cell formatter: ``decimals`` decimals, thousands separators, 0 below ``zero``."""
    return lambda v: format_fixed(v, decimals, zero=zero)


def _fmt(v, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "-" if math.isnan(x) else format(x, spec)


def _check_column(table: pd.DataFrame, name: str, kind: str, available: Sequence[str]) -> None:
    if name not in table.columns or name not in available:
        raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(available) or 'none'}")


def main_metric(table: pd.DataFrame) -> str:
    """The headline metric: ``es99``, else the ES at the highest level, else ``pnl_usd``,
    else ``mean``."""
    cols = list(table.columns)
    if "es99" in cols:
        return "es99"
    es = [c for c in cols if _ES.match(c)]
    if es:
        return max(es, key=lambda c: float("0." + _ES.match(c).group(1)))
    for c in ("pnl_usd", "mean"):
        if c in cols:
            return c
    raise ValueError(f"no headline metric (es99, pnl_usd, mean) among the columns: "
                     f"{', '.join(map(str, cols))}")


# ------------------------------------------------------------------------------------------
# heatmaps


def _levels(col: pd.Series) -> pd.Series:
    """The column itself, or bin midpoints when it has too many distinct values."""
    if col.nunique() <= MAX_LEVELS:
        return col
    cut = pd.cut(col, BINS)
    return cut.map(lambda iv: iv.mid).astype(float)


def heatmap_grid(table: pd.DataFrame, x: str, y: str, metric: str, *,
                 agg="mean") -> pd.DataFrame:
    """The pivot drawn by ``pnl_heatmap``: rows ``y`` values (ascending), columns ``x``
    values, cells ``agg`` of ``metric`` over the other dimensions (NaN where empty)."""
    dims = dimensions(table)
    _check_column(table, x, "dimension", dims)
    _check_column(table, y, "dimension", dims)
    if x == y:
        raise ValueError(f"x and y must be different dimensions; got {x!r} twice")
    _check_column(table, metric, "metric", metrics(table))
    frame = pd.DataFrame({"x": _levels(table[x]), "y": _levels(table[y]),
                          "m": table[metric].astype(float)})
    grid = frame.groupby(["y", "x"])["m"].agg(agg).unstack("x")
    return grid.sort_index(axis=0).sort_index(axis=1)


def _amount_formatter(span: float) -> FuncFormatter:
    """Colour-bar ticks: whole numbers with thousands separators over a span of 10 or more,
    else 3 significant digits (never ``-0`` or scientific notation)."""
    if span >= 10:
        return FuncFormatter(lambda v, _: format_fixed(v, 0, zero=1e-9 * span))
    return FuncFormatter(lambda v, _: format_sig(0.0 if abs(v) < 1e-9 * max(span, 1e-300)
                                                 else v, 3))


def uniform_value(cells, zero: float = ZERO_USD) -> float | None:
    """The common value of an array whose finite entries (at least two) all lie within
    ``zero`` of each other, or ``None``: a heatmap of such cells is one solid colour, and
    says so instead."""
    v = np.asarray(cells, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or float(v.max() - v.min()) > zero:
        return None
    return float(np.mean(v))


def uniform_note(metric: str, value: float, n: int, zero: float = ZERO_USD) -> str:
    """``all 12 cells equal: 0 USD (no variation over the two axes)``."""
    unit = _unit(metric)
    text = _money(4 if unit == "coin" else 0, zero)(value)
    return f"all {n} cells equal: {text} {unit} (no variation over the two axes)"


def _metric_zero(metric: str, zero: float) -> float:
    return ZERO_COIN if _unit(metric) == "coin" else zero


def pnl_heatmap(table: pd.DataFrame, x: str, y: str, metric: str, *, agg="mean",
                title: str | None = None, zero: float = ZERO_USD):
    """A heatmap of ``metric`` over the design dimensions ``x`` (columns) and ``y`` (rows).

    Args:
      table: a sweep results table (``SweepResult.table``).
      x, y: two design dimensions (e.g. ``"spot"``, ``"vol"``).
      metric: a metric column (e.g. ``"mean"``, ``"es99"``, ``"pnl_usd"``, ``"pnl.<label>"``).
      agg: aggregation over the other dimensions (a pandas aggregation: ``"mean"``,
        ``"min"`` for the worst P&L, ``"max"`` for the worst VaR/ES, or a callable).
      title: axes title (default: metric and aggregation).
      zero: USD magnitude shown as 0 (``zero_threshold``); cells that all lie within it of
        each other count as equal (coin metrics: ``ZERO_COIN``).

    Returns:
      A ``Figure``; ``fig.axes[0].images[0].get_array()`` holds the grid (rows: ascending
      ``y``, drawn bottom to top). P&L metrics use a diverging map centred at 0 (red: loss),
      VaR/ES/std/cost a sequential one (darker: worse). Tick labels are rounded to the grid's
      resolution (``dim_ticks``). When every cell is equal (``uniform_value``) the figure
      says so in its middle (``uniform_note``) instead of annotating each cell.

    Raises:
      ValueError: an unknown dimension or metric (the message lists the available ones).
    """
    grid = heatmap_grid(table, x, y, metric, agg=agg)
    cells = grid.to_numpy(np.float64)
    ny, nx = cells.shape
    finite = cells[np.isfinite(cells)]
    zero = _metric_zero(metric, zero)
    fig = _new_figure((max(5.5, 0.75 * nx + 3.0), max(4.0, 0.5 * ny + 2.0)))
    ax = fig.subplots()
    ax.set_facecolor("0.93")
    loss = _is_loss(metric)
    if loss:
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        norm = Normalize(vmin=lo, vmax=hi if hi - lo > zero else lo + max(1.0, abs(lo)))
        cmap = "OrRd"
    else:
        vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
        vmax = vmax if vmax > zero else 1.0
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
        cmap = "RdBu"
    img = ax.imshow(np.ma.masked_invalid(cells), cmap=cmap, norm=norm, origin="lower",
                    aspect="auto", interpolation="nearest")
    same = uniform_value(cells, zero)
    if same is not None:
        note = uniform_note(metric, same, int(finite.size), zero)
        ax.text(0.5, 0.5, note.replace(" (", "\n("), transform=ax.transAxes,
                ha="center", va="center", fontsize="medium",
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9})
    elif nx <= ANNOTATE_MAX and ny <= ANNOTATE_MAX:
        for (i, j), v in np.ndenumerate(cells):
            if np.isfinite(v):
                dark = norm(v) > 0.75 if loss else abs(norm(v) - 0.5) > 0.35
                ax.text(j, i, _compact(v, zero), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    step_x = max(1, math.ceil(nx / 16))
    step_y = max(1, math.ceil(ny / 20))
    ax.set_xticks(np.arange(nx)[::step_x], dim_ticks(x, grid.columns)[::step_x],
                  rotation=45 if nx > 6 else 0, fontsize="small")
    ax.set_yticks(np.arange(ny)[::step_y], dim_ticks(y, grid.index)[::step_y],
                  fontsize="small")
    ax.set_xlabel(dim_label(x))
    ax.set_ylabel(dim_label(y))
    if same is None:  # one colour says nothing: the note gives the value
        cbar = fig.colorbar(img, ax=ax, shrink=0.9)
        cbar.set_label(f"{metric} ({_unit(metric)})")
        cbar.ax.yaxis.set_major_formatter(_amount_formatter(norm.vmax - norm.vmin))
    others = [d for d in dimensions(table) if d not in (x, y)]
    if title is None:
        agg_name = agg if isinstance(agg, str) else getattr(agg, "__name__", "agg")
        title = metric + (f" ({agg_name} over {', '.join(others)})" if others else "")
    ax.set_title(title, fontsize="medium")
    return fig


def _profile_figure(table: pd.DataFrame, x: str, metric: str, *, agg, title: str):
    """One-dimension sweeps: the metric against the dimension."""
    s = pd.DataFrame({"x": _levels(table[x]), "m": table[metric].astype(float)})
    s = s.groupby("x")["m"].agg(agg).sort_index()
    fig = _new_figure((7.0, 4.0))
    ax = fig.subplots()
    ax.plot(np.arange(len(s)), s.to_numpy(), "-o", ms=4, color="#2b7bba")
    ax.set_xticks(np.arange(len(s)), dim_ticks(x, s.index), fontsize="small",
                  rotation=45 if len(s) > 8 else 0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(dim_label(x))
    ax.set_ylabel(f"{metric} ({_unit(metric)})")
    ax.set_title(title, fontsize="medium")
    return fig


# ------------------------------------------------------------------------------------------
# worst scenarios and ES contributions


def _positions(table: pd.DataFrame, prefix: str) -> list[str]:
    return [c for c in table.columns if str(c).startswith(prefix)]


def drivers(row: Mapping[str, Any] | pd.Series, n: int = 3) -> str:
    """The ``n`` positions losing most in one scenario row (``pnl.<label>`` columns), as
    ``"label -12,345; label -678"`` (losses only; ``"-"`` when none lose)."""
    items = [(str(k)[4:], float(v)) for k, v in dict(row).items()
             if str(k).startswith("pnl.") and v is not None and np.isfinite(float(v))]
    losers = sorted((it for it in items if it[1] < 0), key=lambda it: it[1])[:n]
    return "; ".join(f"{lab} {v:,.0f}" for lab, v in losers) or "-"


def worst_scenarios(table: pd.DataFrame, n: int = 10, metric: str | None = None) -> pd.DataFrame:
    """The ``n`` worst scenarios by ``metric``.

    Args:
      table: a sweep results table.
      n: how many scenarios.
      metric: the ranking metric (default ``main_metric``: ``es99`` if present, else
        ``pnl_usd``); worst = largest for VaR/ES-like metrics, most negative otherwise.

    Returns:
      One row per scenario, worst first: ``scenario`` (the table's index), the design
      dimensions, the ranking metric and the headline metrics present (``mean``, ``worst``,
      ``es99``, ``pnl_usd``, ``pnl_coin``, ``cost``), and ``drivers`` (the three positions
      with the largest losses, from the ``pnl.<label>`` columns).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    metric = main_metric(table) if metric is None else metric
    _check_column(table, metric, "metric", metrics(table))
    loss = _is_loss(metric)
    order = table[metric].astype(float).sort_values(ascending=not loss, kind="mergesort",
                                                    na_position="last")
    top = table.loc[order.index[:n]]
    try:
        headline = main_metric(table)
    except ValueError:
        headline = metric
    heads = [metric] + [c for c in ("mean", "worst", headline, "pnl_usd",
                                    "pnl_coin", "cost") if c in table.columns]
    cols = dimensions(table) + list(dict.fromkeys(heads))
    if "clamped" in table.columns and (table["clamped"].fillna("") != "").any():
        cols.append("clamped")
    out = top[cols].copy()
    out.insert(0, "scenario", top.index.to_numpy())
    out["drivers"] = [drivers(r) for _, r in top.iterrows()]
    out.attrs["metric"] = metric
    return out.reset_index(drop=True)


def es_contribution_table(table: pd.DataFrame, scenario_index=None) -> pd.DataFrame:
    """Per-position ES contributions of one scenario (``es_contrib.<label>`` columns).

    Args:
      table: a path-sweep results table.
      scenario_index: the scenario (an index value); default the worst by ``main_metric``.

    Returns:
      Columns ``position``, ``es_contrib`` (USD, a positive number adds to the loss),
      ``share`` (of the sum of contributions, which is the ES) and ``pnl`` (the position's
      mean P&L when present), largest contribution first; ``attrs`` hold ``scenario`` and
      ``es`` (the sum).

    Raises:
      ValueError: no ``es_contrib.`` columns (an instantaneous sweep) or an unknown scenario.
    """
    cols = _positions(table, "es_contrib.")
    if not cols:
        raise ValueError("the table has no es_contrib.<position> columns (ES contributions "
                         "come from path sweeps, n_paths > 0)")
    if scenario_index is None:
        scenario_index = worst_scenarios(table, 1)["scenario"].iloc[0]
    if scenario_index not in table.index:
        raise ValueError(f"scenario {scenario_index!r} is not in the table (index "
                         f"{table.index.min()} .. {table.index.max()})")
    row = table.loc[scenario_index]
    labels = [c[len("es_contrib."):] for c in cols]
    contrib = row[cols].to_numpy(np.float64)
    total = float(np.sum(contrib))
    out = pd.DataFrame({"position": labels, "es_contrib": contrib,
                        "share": contrib / total if total != 0 else np.nan})
    pnl = [f"pnl.{lab}" for lab in labels]
    if all(p in table.columns for p in pnl):
        out["pnl"] = row[pnl].to_numpy(np.float64)
    out = out.sort_values("es_contrib", ascending=False, kind="mergesort").reset_index(drop=True)
    out.attrs.update(scenario=scenario_index, es=total)
    return out


def es_contribution_figure(contrib: pd.DataFrame, scenario_index=None, *,
                           title: str | None = None):
    """Horizontal bars of per-position ES contributions.

    Args:
      contrib: ``es_contribution_table``'s output, or a sweep table (then the contributions
        of ``scenario_index``, default the worst scenario, are drawn).
    """
    if "es_contrib" not in contrib.columns:
        contrib = es_contribution_table(contrib, scenario_index)
    n = len(contrib)
    fig = _new_figure((8.0, 1.2 + 0.38 * max(n, 1)))
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    v = contrib["es_contrib"].to_numpy(np.float64)
    ax.barh(y, v, color=np.where(v >= 0, "#d9534f", "#2b7bba"), alpha=0.85)
    share = contrib["share"].to_numpy(np.float64)
    _bar_labels(ax, y, v, [f"{100 * si:.1f}%" if np.isfinite(si) else "" for si in share])
    ax.set_yticks(y, contrib["position"].astype(str), fontsize="small")
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlabel("contribution to ES (USD; positive adds to the loss)")
    scen, es = contrib.attrs.get("scenario"), contrib.attrs.get("es")
    if title is None:
        title = "ES contributions" + (f", scenario {scen}" if scen is not None else "") + (
            f" (ES {es:,.0f} USD)" if es is not None else "")
    ax.set_title(title, fontsize="medium")
    return fig


# ------------------------------------------------------------------------------------------
# the sweep report


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(name)).strip("-")


def _date_text(t) -> str:
    """A date or time: ``2022-11-09`` at midnight, else ``2022-11-09 08:00`` (UTC)."""
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return str(ts.date()) if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")


def _value_text(v) -> str:
    """Any fact as reader's text: numbers to 4 significant digits with thousands separators
    (integers in full), mappings as ``key value, ...``, sequences comma-separated, dates as
    ``YYYY-MM-DD``."""
    if isinstance(v, np.datetime64):
        return _date_text(v)
    if isinstance(v, np.generic):
        v = v.item()
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return format_sig(v, 4)
    if isinstance(v, _dt.date):
        return _date_text(v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {_value_text(x)}" for k, x in v.items())
    if isinstance(v, list | tuple | np.ndarray):
        return ", ".join(_value_text(x) for x in v)
    return str(v)


def model_text(model: Mapping[str, Any] | str) -> str:
    """``Heston: v0 0.3621, kappa 2.013, ...`` from ``{"type": ..., field: value}`` (4
    significant digits)."""
    if not isinstance(model, Mapping):
        return str(model)
    m = dict(model)
    kind = m.pop("type", "model")
    return f"{kind}: " + ", ".join(f"{k} {format_sig(v, 4)}" for k, v in m.items())


def market_text(market: Mapping[str, Any] | str) -> str:
    """``spot 60,000.00 USD, USD rate 4.00%, funding (div) 0.00%``."""
    if not isinstance(market, Mapping):
        return str(market)
    names = {"rate": "USD rate", "div": "funding (div)"}
    parts = []
    for k, v in market.items():
        if k == "spot":
            parts.append(f"spot {format_fixed(v, 2)} USD")
        elif k in names:
            parts.append(f"{names[k]} {format_fixed(100 * float(v), 2)}%")
        else:
            parts.append(f"{k} {_value_text(v)}")
    return ", ".join(parts)


def _levels_text(levels) -> str:
    return ", ".join(f"{format_sig(100 * float(a), 4)}%" for a in levels)


def _key_text(key) -> str:
    return ", ".join(str(int(k)) for k in np.ravel(key)) if key is not None else "-"


_SHOCK_DEFAULTS = {"spread": 1.0}


def _unit_word(name: str) -> str:
    """The unit after a dimension's value in running text (``%`` and ``x`` are in the
    value already): `` vol points``, `` days``, `` bps``."""
    return {"vol": " vol points", "term": " vol points", "horizon": " days",
            "impact_bps": " bps"}.get(name, "")


def _facts(manifest: Mapping[str, Any], n_rows: int) -> dict[str, str]:
    m = dict(manifest or {})
    facts: dict[str, str] = {}
    book = m.get("book") or {}
    if book:
        pos = book.get("positions") or []
        facts["book"] = (f"{book.get('name', '-')} ({book.get('currency', '-')}), "
                         f"{len(pos)} positions: {', '.join(map(str, pos))}")
    if m.get("model"):
        facts["model"] = model_text(m["model"])
    if m.get("market"):
        facts["market"] = market_text(m["market"])
    if m.get("gross_usd") is not None:
        facts["gross exposure"] = f"{format_fixed(m['gross_usd'], 0)} USD"
    design = m.get("design") or {}
    facts["scenarios"] = f"{int(m.get('n_scenarios', n_rows)):,}"
    if design:
        dims = design.get("dims") or {}
        facts["design"] = f"{design.get('kind', '-')}" + (
            f" (seed {design['seed']})" if design.get("seed") is not None else "") + (
            ": " + "; ".join(f"{k} " + " to ".join(dim_ticks(k, v[:2])) + _unit_word(k)
                             + f" ({int(v[2]):,} values)" for k, v in dims.items()))
        base = {k: v for k, v in (design.get("base") or {}).items()
                if k not in dims and isinstance(v, int | float)
                and float(v) != _SHOCK_DEFAULTS.get(k, 0.0)}
        for kind in ("scale", "shift"):
            base |= {f"{kind}.{k}": v for k, v in ((design.get("base") or {}).get(kind) or {}
                                                   ).items() if f"{kind}.{k}" not in dims}
        if base:
            facts["in every scenario"] = "; ".join(f"{k} {dim_tick(k, v)}{_unit_word(k)}"
                                                   for k, v in base.items())
    n_paths = m.get("n_paths")
    if n_paths is not None:
        facts["paths"] = ("0 (instantaneous revaluation)" if n_paths == 0
                          else f"{int(n_paths):,} per scenario")
    if m.get("steps"):
        facts["time steps"] = f"{int(m['steps']):,} over the horizon"
    if m.get("crn") is not None and n_paths:
        facts["common random numbers"] = "yes" if m["crn"] else "no"
    if m.get("revalue") and n_paths:
        facts["horizon revaluation"] = str(m["revalue"])
    if m.get("levels") and n_paths:
        facts["VaR/ES levels"] = _levels_text(m["levels"])
    if m.get("contrib_level") is not None and n_paths:
        facts["ES contribution level"] = _levels_text([m["contrib_level"]])
    if m.get("key") is not None:
        facts["PRNG key data"] = _key_text(m["key"])
    if m.get("dtype"):
        facts["dtype"] = str(m["dtype"])
    return facts


def _pairs(table: pd.DataFrame, pairs) -> list[tuple[str, str]]:
    dims = dimensions(table)
    if pairs is None:
        return list(itertools.combinations(dims, 2))[:MAX_PAIRS]
    out = []
    for p in pairs:
        x, y = p
        for d in (x, y):
            _check_column(table, d, "dimension", dims)
        out.append((x, y))
    return out


def _heat_metrics(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, worst-case aggregation) pairs drawn in the sweep report."""
    cols = set(table.columns)
    if "pnl_usd" in cols:
        return [("pnl_usd", "min")]
    out = [("mean", "min")] if "mean" in cols else []
    es = main_metric(table)
    if es != "mean":
        out.append((es, "max"))
    return out


SWEEP_UNITS = ("P&L in USD, positive = gain; VaR and ES are positive losses. Spot moves in %, "
               "vol shifts in vol points (an absolute shift of the implied vol level: +10 is "
               "60% -> 70%), horizons in days, x: multipliers of a model parameter.")


def _metric_column(name: str, zero: float = ZERO_USD) -> Column:
    if _unit(name) == "coin":
        return Column(name, fmt=_money(4, ZERO_COIN), numeric=True)
    return Column(name, fmt=_money(0, zero), numeric=True)


def sweep_report(result, out_dir: str | Path, *, pairs=None,
                 title: str | None = None) -> dict[str, Path]:
    """Write the report of a sweep to ``out_dir``.

    Args:
      result: a ``SweepResult`` (``table`` and ``manifest``), or a finished sweep folder.
      out_dir: output folder (created if needed).
      pairs: ``[(x, y), ...]`` dimension pairs for the heatmaps (default every pair of the
        design's dimensions, at most ``MAX_PAIRS``).
      title: page title.

    Returns:
      File name -> path: ``heatmap_<metric>_<x>_<y>.png`` (instantaneous sweeps: ``pnl_usd``,
      worst over the other dimensions; path sweeps: ``mean`` and the headline ES, worst over
      the others), ``profile_<metric>_<x>.png`` for a one-dimension design, ``worst.csv``,
      ``es_contributions.csv`` and ``.png`` (path sweeps), ``results.csv`` (written when
      absent) and ``report.html``.
    """
    if isinstance(result, str | Path):
        from ..stress.sweeps import load_sweep

        result = load_sweep(result)
    table: pd.DataFrame = result.table
    manifest = dict(getattr(result, "manifest", None) or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dims = dimensions(table)
    chosen = _pairs(table, pairs)
    book = (manifest.get("book") or {}).get("name")
    title = title or "Stress sweep" + (f": {book}" if book else "")
    paths: dict[str, Path] = {}
    figures: list[tuple[str, str]] = []
    zero = zero_threshold(manifest.get("gross_usd"))

    for metric, agg in _heat_metrics(table):
        what = "worst case" if agg in ("min", "max") else agg
        for x, y in chosen:
            name = f"heatmap_{_slug(metric)}_{_slug(x)}_{_slug(y)}.png"
            others = [d for d in dims if d not in (x, y)]
            cap = (f"{metric} over {dim_label(x)} and {dim_label(y)}"
                   + (f"; {what} ({agg}) over {', '.join(others)}" if others else ""))
            cells = heatmap_grid(table, x, y, metric, agg=agg).to_numpy(np.float64)
            same = uniform_value(cells, _metric_zero(metric, zero))
            if same is not None:
                cap += ". Note: " + uniform_note(metric, same,
                                                 int(np.isfinite(cells).sum()), zero)
            paths[name] = save_figure(pnl_heatmap(table, x, y, metric, agg=agg, zero=zero),
                                      out / name)
            figures.append((name, cap))
        if not chosen and len(dims) == 1:
            name = f"profile_{_slug(metric)}_{_slug(dims[0])}.png"
            fig = _profile_figure(table, dims[0], metric, agg=agg, title=f"{metric} by {dims[0]}")
            paths[name] = save_figure(fig, out / name)
            figures.append((name, f"{metric} against {dims[0]}"))

    worst = worst_scenarios(table, 10)
    paths["worst.csv"] = out / "worst.csv"
    worst.to_csv(paths["worst.csv"], index=False)

    contrib = None
    if _positions(table, "es_contrib."):
        contrib = es_contribution_table(table)
        paths["es_contributions.csv"] = out / "es_contributions.csv"
        contrib.to_csv(paths["es_contributions.csv"], index=False)
        paths["es_contributions.png"] = save_figure(es_contribution_figure(contrib),
                                                    out / "es_contributions.png")

    res_csv = out / "results.csv"
    if not res_csv.exists():
        table.reset_index().to_csv(res_csv, index=False)
    paths["results.csv"] = res_csv

    page = Page(title)
    page.add_key_values(_facts(manifest, len(table)))
    page.add_paragraph(SWEEP_UNITS + f" Amounts below {format_fixed(zero, 2)} USD show as 0 "
                       "(numerical noise; the CSV files keep the exact numbers).", note=True)
    clamped = clamped_summary(table)
    if clamped:
        page.add_paragraph(clamped, note=True)
    if figures:
        page.add_heading("Heatmaps")
        for name, cap in figures:
            page.add_image(name, alt=cap, caption=cap)
    metric = worst.attrs.get("metric", main_metric(table))
    page.add_heading(f"Worst {len(worst)} scenarios by {metric}")
    cols = [Column("scenario")]
    cols += [Column(d, dim_label(d), fmt=lambda v, d=d: dim_tick(d, v), numeric=True)
             for d in dims]
    cols += [_metric_column(c, zero) for c in worst.columns
             if c not in ("scenario", "drivers", *NOTE_COLUMNS) and c not in dims]
    if "clamped" in worst.columns:
        cols.append(Column("clamped", "clamped into the model's domain", wrap=True))
    cols.append(Column("drivers", "largest position losses (USD)", wrap=True))
    page.add_table(html_table(worst, cols))
    if contrib is not None:
        scen = contrib.attrs.get("scenario")
        page.add_heading(f"ES contributions, scenario {scen}")
        page.add_table(html_table(contrib, [
            Column("position"), Column("es_contrib", "ES contribution (USD)",
                                       fmt=_money(0, zero), numeric=True),
            Column("share", fmt=lambda v: _fmt(100 * v if v is not None else v, ".1f") + "%",
                   numeric=True)] + ([Column("pnl", "mean P&L (USD)", fmt=_money(0, zero),
                                             numeric=True)]
                                     if "pnl" in contrib.columns else [])))
        page.add_image("es_contributions.png", alt="ES contributions",
                       caption="Per-position contributions to the ES of the worst scenario "
                               "(they sum to the ES).")
    page.add_paragraph("Files: " + ", ".join(list(paths) + ["report.html"]) + ".", note=True)
    paths["report.html"] = page.write(out / "report.html")
    return paths


# ------------------------------------------------------------------------------------------
# named scenarios


_USD_COLUMN = re.compile(r"^(pnl_usd|cost|worst|best|mean|std|spot_after|base_value_usd|"
                         r"gross_usd|(hist_)?(var|es)\d+(_se)?|.*_usd|pnl\..+|es_contrib\..+)$")
_COUNT_COLUMNS = ("n_paths", "steps", "hist_n")
_TEXT_NA = ("", "nan", "None")


def _text(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return str(v)


def _column_for(name: str, values: pd.Series, *, zero: float = ZERO_USD, usd_decimals: int = 2,
                title: str | None = None, wrap: bool = False) -> Column:
    """The display of a stress-table column: USD amounts with ``usd_decimals`` decimals and
    thousands separators (0 below ``zero``), coin amounts with 4 decimals, spot after the
    shock with 2, counts in full (``10,000``), seeds as integers, other numbers to 4
    significant digits, text as is; never scientific notation."""
    n = str(name)
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return Column(n, title, fmt=_text, wrap=wrap)
    if _unit(n) == "coin":
        return Column(n, title, fmt=_money(4, ZERO_COIN), numeric=True)
    if n == "spot_after":
        return Column(n, title, fmt=_money(2, 0.0), numeric=True)
    if _USD_COLUMN.match(n):
        return Column(n, title, fmt=_money(usd_decimals, zero), numeric=True)
    if n in _COUNT_COLUMNS:
        return Column(n, title, fmt=lambda v: format_fixed(v, 0), numeric=True)
    if n == "seed":
        return Column(n, title, fmt=lambda v: _fmt(v, ".0f"), numeric=True)
    return Column(n, title, fmt=lambda v: format_sig(v, 4), numeric=True)


def _records(rows: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(rows.index, pd.RangeIndex) or rows.index.name is not None:
        rows = rows.reset_index()
    return rows


def stress_table(rows: pd.DataFrame, *, zero: float = ZERO_USD) -> str:
    """A fixed-width text table of a few scenarios (the frame's columns, in order).

    USD columns (``pnl_usd``, ``cost``, ``worst``, ``var*``, ``es*``, ``hist_es*``, ``mean``,
    ...) print with thousands separators and 2 decimals (magnitudes below ``zero``, a cent
    by default, as 0), coin columns (``pnl_coin``, ``*_coin``) with 4 decimals, path counts
    in full, other numbers with 4 significant digits; NaN and None print as ``-``.
    """
    rows = _records(rows)
    cols = [_column_for(c, rows[c], zero=zero) for c in rows.columns]
    return text_table(rows.to_dict(orient="records"), cols)


def print_stress_table(rows: pd.DataFrame, *, stream=None, zero: float = ZERO_USD,
                       title: str | None = None, terminal: bool | None = None) -> None:
    """Print ``stress_table``'s table: with ``rich`` on a terminal (losses in red), the same
    plain text as ``stress_table`` otherwise (``qmr_jax.progress.print_table``)."""
    from ..progress import print_table

    rows = _records(rows)
    cols = [_column_for(c, rows[c], zero=zero) for c in rows.columns]
    print_table(rows.to_dict(orient="records"), cols, stream=stream, title=title,
                terminal=terminal)


def _bar_labels(ax, y, values, texts) -> None:
    """Value labels on horizontal bars: inside the long bars of each side (within 60% of the
    longest bar of the same sign, so no label runs past the axes), just outside the short
    ones; the x axis in plain numbers with thousands separators."""
    ok = np.isfinite(values)
    pos, neg = values[ok & (values >= 0)], -values[ok & (values < 0)]
    span = {True: float(pos.max()) if pos.size else 1.0,
            False: float(neg.max()) if neg.size else 1.0}
    for yi, vi, t in zip(y, values, texts, strict=True):
        if not np.isfinite(vi) or not t:
            continue
        inside = abs(vi) > 0.6 * span[bool(vi >= 0)]
        right = (vi >= 0) != inside
        ax.text(vi, yi, f" {t} ", va="center", fontsize="x-small",
                ha="left" if right else "right", color="white" if inside else "black")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))


def _pnl_bar_figure(rows: pd.DataFrame, *, title: str, zero: float = ZERO_USD):
    s = rows.set_index("name")["pnl_usd"].astype(float).sort_values()
    n = len(s)
    fig = _new_figure((8.0, 1.2 + 0.4 * max(n, 1)))
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    v = s.to_numpy()
    v = np.where(np.abs(v) < zero, 0.0, v)
    ax.barh(y, np.where(np.isfinite(v), v, 0.0), color=np.where(v < 0, "#d9534f", "#5cb85c"),
            alpha=0.85)
    _bar_labels(ax, y, v, [format_fixed(vi, 0, zero=zero) for vi in v])
    if "status" in rows.columns:  # say why a scenario has no bar
        status = rows.set_index("name")["status"].astype(str).reindex(s.index)
        for yi, vi, st in zip(y, v, status, strict=True):
            if not np.isfinite(vi):
                ax.text(0.0, yi, "  n/a (not expressible in this model)" if st.startswith("n/a")
                        else "  failed (see the table)", va="center", fontsize="x-small",
                        color="0.4", ha="left")
    ax.set_yticks(y, s.index.astype(str), fontsize="small")
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlabel("total P&L (USD; positive = gain)")
    ax.set_title(title, fontsize="medium")
    return fig


def _position_heatmap(positions: pd.DataFrame, *, title: str, zero: float = ZERO_USD):
    cells = positions.to_numpy(np.float64)
    ny, nx = cells.shape
    finite = cells[np.isfinite(cells)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    vmax = vmax if vmax > zero else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    fig = _new_figure((max(6.0, 0.8 * nx + 3.5), max(3.0, 0.42 * ny + 2.0)))
    ax = fig.subplots()
    ax.set_facecolor("0.93")
    img = ax.imshow(np.ma.masked_invalid(cells), cmap="RdBu", norm=norm, aspect="auto",
                    interpolation="nearest")
    if nx <= 20 and ny <= 30:
        for (i, j), v in np.ndenumerate(cells):
            if np.isfinite(v):
                ax.text(j, i, _compact(v, zero), ha="center", va="center", fontsize=7,
                        color="white" if abs(norm(v) - 0.5) > 0.35 else "black")
    ax.set_xticks(np.arange(nx), positions.columns.astype(str), rotation=45, ha="right",
                  fontsize="small")
    ax.set_yticks(np.arange(ny), positions.index.astype(str), fontsize="small")
    ax.set_xlabel("position")
    ax.set_ylabel("scenario")
    cbar = fig.colorbar(img, ax=ax, shrink=0.9)
    cbar.set_label("P&L (USD)")
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_title(title, fontsize="medium")
    return fig


STRESS_FILES = ("stress.csv", "positions.csv", "stress_pnl.png", "stress_positions.png",
                "report.html")
"""The files ``stress_report`` writes (its page is ``report.html``, as every report's)."""

WORST_DOC = ("the lowest total P&L: over the paths of a path scenario; over the closes of a "
             "historical replay after its anchor (the anchor, day 0, is today's book "
             "unshocked, P&L 0, and is left out); '-' for instantaneous scenarios")
"""What the ``worst`` column of a stress table is (``qmr_jax.stress.run``)."""

_META_LABELS = {
    "book": "book", "currency": "currency", "model": "model", "model_source": "model source",
    "market": "market", "base_value_usd": "book value", "gross_usd": "gross exposure",
    "seed": "seed", "key": "PRNG key data", "levels": "VaR/ES levels",
    "n_paths": "paths per path scenario", "rescale_factor": "strike and entry rescale factor",
    "book_file": "book file", "model_file": "model file",
}


def stress_facts(meta: Mapping[str, Any]) -> dict[str, str]:
    """The header of a stress report from ``StressRun.meta`` (and whatever a caller adds):
    the model as ``Heston: v0 0.3621, ...`` (4 significant digits), the market with the spot
    in USD with thousands separators and rates in %, USD amounts in whole dollars, path
    counts in full, VaR/ES levels in %, dates as ``YYYY-MM-DD``; any other entry as text
    (numbers to 4 significant digits, mappings as ``key value, ...``)."""
    facts: dict[str, str] = {}
    m = dict(meta or {})
    book, cur = m.pop("book", None), m.pop("currency", None)
    if book is not None:
        facts["book"] = f"{book}" + (f" ({cur})" if cur else "")
    elif cur is not None:
        facts["currency"] = str(cur)
    for k, v in m.items():
        label = _META_LABELS.get(k, str(k).replace("_", " "))
        if k == "model":
            text = model_text(v)
        elif k == "market":
            text = market_text(v)
        elif k in ("base_value_usd", "gross_usd") or str(k).endswith("_usd"):
            text = f"{format_fixed(v, 2 if k == 'base_value_usd' else 0)} USD"
        elif k == "levels":
            text = _levels_text(v)
        elif k == "key":
            text = _key_text(v)
        elif k in ("seed",) and isinstance(v, int | np.integer):
            text = str(int(v))
        else:
            text = _value_text(v)
        facts[label] = text
    return facts


def _headline_tag(rows: pd.DataFrame) -> str | None:
    """The VaR/ES level tag of the main table: ``99`` when present, else the highest."""
    tags = [m.group(1) for c in rows.columns if (m := _ES.match(str(c)))
            and rows[c].notna().any()]
    if not tags:
        return None
    return "99" if "99" in tags else max(tags, key=lambda t: float("0." + t))


def _level(tag: str) -> str:
    return format_sig(100 * float("0." + tag), 4) + "%"


def _present(rows: pd.DataFrame, c: str) -> bool:
    if c not in rows.columns:
        return False
    col = rows[c]
    if pd.api.types.is_numeric_dtype(col):
        return bool(col.notna().any())
    return bool((~col.astype(str).isin(("-", *_TEXT_NA))).any())


def _scenario_columns(rows: pd.DataFrame, zero: float, coin: str) -> list[Column]:
    """The main table: the P&L numbers first, the descriptive columns after."""
    tag = _headline_tag(rows)
    spec = [("name", "scenario", None),
            ("pnl_usd", "P&L (USD)", "total P&L of the book: after the shock (instantaneous), "
             "the mean over the paths (path), at the last close (historical replay)"),
            ("pnl_coin", f"P&L ({coin})", "the same in the book's currency"),
            ("cost", "liquidity cost (USD)", "cost of the scenario's exit at its spreads and "
             "market impact")]
    if tag is not None:
        spec += [(f"var{tag}", f"VaR {_level(tag)} (USD)", "value at risk over the paths "
                  "(a positive loss)"),
                 (f"es{tag}", f"ES {_level(tag)} (USD)", "expected shortfall over the paths "
                  "(a positive loss)")]
    spec += [("worst", "worst (USD)", WORST_DOC),
             ("worst_at", "worst at", "the close of a replay's worst P&L"),
             ("kind", "kind", None), ("horizon_days", "horizon (days)", None),
             ("spot_after", "spot after (USD)", "spot after the shock (replays: at the last "
              "close)"),
             ("status", "status", "ok; n/a: not expressible in this model; error (details "
              "under Descriptions and notes)"),
             ("shock", "shock", None)]
    cols = []
    for key, title, note in spec:
        if key != "name" and not _present(rows, key):
            continue
        c = _column_for(key, rows[key], zero=zero, usd_decimals=0, title=title,
                        wrap=key == "shock")
        fmt = _short_status if key == "status" else c.fmt
        cols.append(Column(c.key, title, fmt=fmt, numeric=c.numeric, wrap=c.wrap, note=note))
    return cols


def _short_status(v) -> str:
    text = _text(v)
    return text.split(":", 1)[0] if ":" in text else text


def _risk_rows(rows: pd.DataFrame, zero: float) -> list[dict]:
    """One row per path scenario and VaR/ES level: VaR and ES with their standard errors,
    the historical-simulation VaR and ES beside them."""
    tags = sorted({m.group(1) for c in rows.columns if (m := _ES.match(str(c)))},
                  key=lambda t: float("0." + t))
    money = _money(0, zero)

    def pm(r, key):
        v = r.get(key)
        if v is None or not np.isfinite(float(v)):
            return "-"
        se = r.get(f"{key}_se")
        ok = se is not None and np.isfinite(float(se))
        return money(v) + (f" ± {money(se)}" if ok else "")

    out = []
    for _, r in rows.iterrows():
        for t in tags:
            if not any(np.isfinite(float(r.get(k, np.nan))) for k in
                       (f"var{t}", f"es{t}", f"hist_var{t}", f"hist_es{t}")):
                continue
            out.append({"scenario": r["name"], "level": _level(t),
                        "var": pm(r, f"var{t}"), "es": pm(r, f"es{t}"),
                        "hist_var": pm(r, f"hist_var{t}"), "hist_es": pm(r, f"hist_es{t}"),
                        "n_paths": r.get("n_paths"), "steps": r.get("steps"),
                        "seed": r.get("seed"), "hist_n": r.get("hist_n"),
                        "hist_window": r.get("hist_window")})
    return out


def stress_report(rows: pd.DataFrame, positions: pd.DataFrame, out_dir: str | Path, *,
                  title: str | None = None, meta: Mapping[str, Any] | None = None
                  ) -> dict[str, Path]:
    """Write the report of a few named scenarios.

    The page (``report.html``) has the facts of ``meta`` (``stress_facts``), the scenario
    table with the P&L columns first (P&L in USD and coin, liquidity cost, VaR and ES at
    99% or the highest level present, the worst P&L) and the descriptive ones after (kind,
    horizon, spot after, status, shock), the bar chart of the total P&L, VaR and ES at every
    level with their standard errors beside the historical-simulation figures, the
    descriptions, dates, sources and notes (wrapped), and the P&L per position.

    Amounts in the page are rounded to whole USD (coin to 4 decimals); magnitudes below
    ``zero_threshold(meta["gross_usd"])`` (a cent, or 1e-9 of the book's gross exposure)
    show as 0. The CSV files keep the exact numbers.

    Args:
      rows: one row per scenario: ``name``, ``kind``, ``description``, ``pnl_usd``,
        ``pnl_coin``, ``cost`` and, for path/historical scenarios, optional VaR/ES columns
        (``StressRun.table`` with its index as ``name``).
      positions: scenario x position P&L in USD (index: scenario names; columns: labels).
      out_dir: output folder (created).
      title: page title.
      meta: facts shown at the top (``StressRun.meta``: book, model, market, ...; plus
        e.g. ``seed``).

    Returns:
      File name -> path (``STRESS_FILES``; the page under ``"report.html"``).
    """
    rows = _records(rows)
    for c in ("name", "pnl_usd"):
        if c not in rows.columns:
            raise ValueError(f"rows need a {c!r} column; got {', '.join(map(str, rows.columns))}")
    meta = dict(meta or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in STRESS_FILES}
    title = title or "Stress scenarios" + (f": {meta['book']}" if meta.get("book") else "")
    zero = zero_threshold(meta.get("gross_usd"))
    coin = str(meta.get("currency") or "coin")
    rows.to_csv(paths["stress.csv"], index=False)
    positions.rename_axis(positions.index.name or "scenario").to_csv(paths["positions.csv"])
    save_figure(_pnl_bar_figure(rows, title="Total P&L per scenario", zero=zero),
                paths["stress_pnl.png"])
    save_figure(_position_heatmap(positions, title="P&L per scenario and position (USD)",
                                  zero=zero), paths["stress_positions.png"])

    page = Page(title, wide=True)
    if meta:
        page.add_key_values(stress_facts(meta))
    page.add_paragraph(
        f"P&L in USD rounded to whole dollars ({coin} columns to 4 decimals), positive = "
        "gain; VaR and ES are positive losses; '-' where not applicable. Amounts below "
        f"{format_fixed(zero, 2)} USD show as 0 (numerical noise; stress.csv keeps the exact "
        "numbers).", note=True)
    page.add_heading("Scenarios")
    page.add_table(html_table(rows, _scenario_columns(rows, zero, coin)))
    page.add_key_values({"worst": WORST_DOC})
    page.add_image("stress_pnl.png", alt="total P&L per scenario",
                   caption="Total P&L per scenario, sorted; losses in red.")
    risk_rows = _risk_rows(rows, zero)
    if risk_rows:
        page.add_heading("VaR and ES of the path scenarios")
        page.add_paragraph("Over the simulated paths, ± one Monte Carlo standard error; "
                           "beside them the historical-simulation VaR and ES of the book "
                           "under the real moves of the same horizon.", note=True)
        num = {"numeric": True}
        page.add_table(html_table(risk_rows, [
            Column("scenario"), Column("level", **num), Column("var", "VaR (USD)", **num),
            Column("es", "ES (USD)", **num),
            Column("hist_var", "historical VaR (USD)", **num),
            Column("hist_es", "historical ES (USD)", **num),
            Column("n_paths", "paths", fmt=lambda v: format_fixed(v, 0), numeric=True),
            Column("steps", fmt=lambda v: format_fixed(v, 0), numeric=True),
            Column("seed", fmt=lambda v: _fmt(v, ".0f"), numeric=True),
            Column("hist_n", "historical moves", fmt=lambda v: format_fixed(v, 0),
                   numeric=True),
            Column("hist_window", "history window", fmt=_text)]))
    desc = rows.assign(detail=[
        "; ".join(x for x in ((_text(st) if _short_status(st) not in ("ok", "-") else ""),
                              "" if _text(nt) == "-" else _text(nt)) if x) or "-"
        for st, nt in zip(rows.get("status", pd.Series("ok", index=rows.index)),
                          rows.get("notes", pd.Series(None, index=rows.index)), strict=True)])
    dcols = [Column("name", "scenario")] + [
        Column(k, t, fmt=_text, wrap=True) for k, t in
        (("description", "description"), ("dates", "dates"), ("source", "sources"),
         ("detail", "status and notes")) if _present(desc, k)]
    if len(dcols) > 1:
        page.add_heading("Descriptions and notes")
        page.add_table(html_table(desc, dcols))
    page.add_heading("Positions")
    page.add_image("stress_positions.png", alt="P&L per scenario and position",
                   caption="P&L per scenario (rows) and position (columns); red: loss.")
    prow = positions.rename_axis("scenario").reset_index()
    page.add_table(html_table(prow, [Column("scenario")] + [
        Column(str(c), fmt=_money(0, zero), numeric=True) for c in positions.columns],
        caption="P&L per position (USD)"))
    page.add_paragraph("Files: " + ", ".join(STRESS_FILES) + ".", note=True)
    page.write(paths["report.html"])
    return paths


__all__ = ["pnl_heatmap", "heatmap_grid", "worst_scenarios", "drivers",
           "es_contribution_table", "es_contribution_figure", "sweep_report", "stress_table",
           "print_stress_table", "stress_report", "stress_facts", "dimensions", "metrics",
           "main_metric", "dim_label", "dim_tick", "dim_ticks", "is_metric", "STRESS_FILES",
           "MAX_PAIRS", "zero_threshold", "uniform_value", "WORST_DOC", "ZERO_USD",
           "ZERO_RELATIVE"]
