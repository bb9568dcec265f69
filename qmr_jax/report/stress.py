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
* ``stress_report(rows, positions, out_dir)`` - ``stress.csv``, ``positions.csv``, a bar chart
  and a scenario x position heatmap, ``stress.html``.

Nothing here imports JAX; figures are ``matplotlib.figure.Figure`` objects on the Agg canvas.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.ticker import FuncFormatter

from .figures import _new_figure, save_figure
from .html import Page
from .tables import Column, html_table, text_table

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

# dimension -> (axis label, tick formatter)
_DIMS: dict[str, tuple[str, Any]] = {
    "spot": ("spot move (%)", lambda v: f"{100 * v:+.4g}%"),
    "vol": ("vol shift (vol points, %)", lambda v: f"{100 * v:+.4g}"),
    "term": ("short-end vol shift (vol points, %)", lambda v: f"{100 * v:+.4g}"),
    "skew": ("rho shift", lambda v: f"{v:+.3g}"),
    "rate": ("rate shift (%)", lambda v: f"{100 * v:+.4g}%"),
    "basis": ("basis shift (%/yr)", lambda v: f"{100 * v:+.4g}%"),
    "horizon": ("horizon (days)", lambda v: f"{365 * v:.4g}"),
    "drift": ("real-world drift (%/yr)", lambda v: f"{100 * v:+.4g}%"),
    "spread": ("half-spread multiplier (x)", lambda v: f"x{v:.3g}"),
    "impact_bps": ("market impact (bps)", lambda v: f"{v:.4g}"),
    "exit_fraction": ("share of book closed out (%)", lambda v: f"{100 * v:.4g}%"),
}


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
    """Axis label with units of a design dimension."""
    if name in _DIMS:
        return _DIMS[name][0]
    if name.startswith("scale."):
        return f"scale of {name[6:]} (x)"
    if name.startswith("shift."):
        return f"shift of {name[6:]}"
    return name


def dim_tick(name: str, value) -> str:
    """A dimension's value in its display units (``spot`` -0.3 -> ``-30%``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "-"
    if name in _DIMS:
        return _DIMS[name][1](v)
    if name.startswith("scale."):
        return f"x{v:.3g}"
    if name.startswith("shift."):
        return f"{v:+.3g}"
    return f"{v:.4g}"


def _unit(metric: str) -> str:
    return "coin" if metric == "pnl_coin" or metric.endswith("_coin") else "USD"


def _compact(v: float) -> str:
    """Short cell text: ``-12.3k``, ``1.25M``, ``950``."""
    if not np.isfinite(v):
        return ""
    a = abs(v)
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
    return f"{v:.3g}"


def _usd(v) -> str:
    return _fmt(v, ",.2f")


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


def pnl_heatmap(table: pd.DataFrame, x: str, y: str, metric: str, *, agg="mean",
                title: str | None = None):
    """A heatmap of ``metric`` over the design dimensions ``x`` (columns) and ``y`` (rows).

    Args:
      table: a sweep results table (``SweepResult.table``).
      x, y: two design dimensions (e.g. ``"spot"``, ``"vol"``).
      metric: a metric column (e.g. ``"mean"``, ``"es99"``, ``"pnl_usd"``, ``"pnl.<label>"``).
      agg: aggregation over the other dimensions (a pandas aggregation: ``"mean"``,
        ``"min"`` for the worst P&L, ``"max"`` for the worst VaR/ES, or a callable).
      title: axes title (default: metric and aggregation).

    Returns:
      A ``Figure``; ``fig.axes[0].images[0].get_array()`` holds the grid (rows: ascending
      ``y``, drawn bottom to top). P&L metrics use a diverging map centred at 0 (red: loss),
      VaR/ES/std/cost a sequential one (darker: worse).

    Raises:
      ValueError: an unknown dimension or metric (the message lists the available ones).
    """
    grid = heatmap_grid(table, x, y, metric, agg=agg)
    cells = grid.to_numpy(np.float64)
    ny, nx = cells.shape
    finite = cells[np.isfinite(cells)]
    fig = _new_figure((max(5.5, 0.75 * nx + 3.0), max(4.0, 0.5 * ny + 2.0)))
    ax = fig.subplots()
    ax.set_facecolor("0.93")
    loss = _is_loss(metric)
    if loss:
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
        cmap = "OrRd"
    else:
        vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
        vmax = vmax if vmax > 0 else 1.0
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
        cmap = "RdBu"
    img = ax.imshow(np.ma.masked_invalid(cells), cmap=cmap, norm=norm, origin="lower",
                    aspect="auto", interpolation="nearest")
    if nx <= ANNOTATE_MAX and ny <= ANNOTATE_MAX:
        for (i, j), v in np.ndenumerate(cells):
            if np.isfinite(v):
                dark = norm(v) > 0.75 if loss else abs(norm(v) - 0.5) > 0.35
                ax.text(j, i, _compact(v), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    step_x = max(1, math.ceil(nx / 16))
    step_y = max(1, math.ceil(ny / 20))
    ax.set_xticks(np.arange(nx)[::step_x], [dim_tick(x, v) for v in grid.columns][::step_x],
                  rotation=45 if nx > 6 else 0, fontsize="small")
    ax.set_yticks(np.arange(ny)[::step_y], [dim_tick(y, v) for v in grid.index][::step_y],
                  fontsize="small")
    ax.set_xlabel(dim_label(x))
    ax.set_ylabel(dim_label(y))
    cbar = fig.colorbar(img, ax=ax, shrink=0.9)
    cbar.set_label(f"{metric} ({_unit(metric)})")
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
    ax.set_xticks(np.arange(len(s)), [dim_tick(x, v) for v in s.index], fontsize="small",
                  rotation=45 if len(s) > 8 else 0)
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


def _facts(manifest: Mapping[str, Any], n_rows: int) -> dict[str, str]:
    m = dict(manifest or {})
    facts: dict[str, str] = {}
    book = m.get("book") or {}
    if book:
        pos = book.get("positions") or []
        facts["book"] = (f"{book.get('name', '-')} ({book.get('currency', '-')}), "
                         f"{len(pos)} positions: {', '.join(map(str, pos))}")
    model = dict(m.get("model") or {})
    if model:
        kind = model.pop("type", "model")
        facts["model"] = f"{kind}(" + ", ".join(
            f"{k}={v:.6g}" if isinstance(v, int | float) else f"{k}={v}"
            for k, v in model.items()) + ")"
    market = m.get("market") or {}
    if market:
        facts["market"] = ", ".join(
            f"{k}={v:,.6g}" if isinstance(v, int | float) else f"{k}={v}"
            for k, v in market.items())
    design = m.get("design") or {}
    facts["n_scenarios"] = f"{m.get('n_scenarios', n_rows):,}"
    if design:
        facts["design"] = f"{design.get('kind', '-')}" + (
            f" (seed {design['seed']})" if design.get("seed") is not None else "") + (
            ": " + ", ".join(f"{k} in [{v[0]:g}, {v[1]:g}] ({v[2]} values)"
                             for k, v in (design.get("dims") or {}).items()))
    n_paths = m.get("n_paths")
    if n_paths is not None:
        facts["n_paths"] = ("0 (instantaneous revaluation)" if n_paths == 0
                            else f"{n_paths:,} per scenario")
    for k in ("steps", "crn", "revalue"):
        if m.get(k) is not None:
            facts[k] = str(m[k])
    if m.get("levels"):
        facts["levels"] = ", ".join(f"{100 * float(a):g}%" for a in m["levels"])
    if m.get("contrib_level") is not None and n_paths:
        facts["ES contribution level"] = f"{100 * float(m['contrib_level']):g}%"
    if m.get("key") is not None:
        facts["seed/key"] = str(m["key"])
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


def _metric_column(name: str) -> Column:
    if name == "pnl_coin" or name.endswith("_coin"):
        return Column(name, fmt=lambda v: _fmt(v, ",.4f"), numeric=True)
    return Column(name, fmt=lambda v: _fmt(v, ",.0f"), numeric=True)


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

    for metric, agg in _heat_metrics(table):
        what = "worst case" if agg in ("min", "max") else agg
        for x, y in chosen:
            name = f"heatmap_{_slug(metric)}_{_slug(x)}_{_slug(y)}.png"
            others = [d for d in dims if d not in (x, y)]
            cap = (f"{metric} over {x} and {y}"
                   + (f"; {what} ({agg}) over {', '.join(others)}" if others else ""))
            paths[name] = save_figure(pnl_heatmap(table, x, y, metric, agg=agg), out / name)
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
    page.add_paragraph("P&L in USD, positive = gain; VaR and ES are positive losses. Spot and "
                       "vol shocks in %, horizons in days.", note=True)
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
    cols += [_metric_column(c) for c in worst.columns
             if c not in ("scenario", "drivers", *NOTE_COLUMNS) and c not in dims]
    if "clamped" in worst.columns:
        cols.append(Column("clamped", "clamped into the model's domain"))
    cols.append(Column("drivers", "largest position losses (USD)"))
    page.add_html(html_table(worst, cols))
    if contrib is not None:
        scen = contrib.attrs.get("scenario")
        page.add_heading(f"ES contributions, scenario {scen}")
        page.add_html(html_table(contrib, [
            Column("position"), Column("es_contrib", "ES contribution (USD)", fmt=",.0f"),
            Column("share", fmt=lambda v: _fmt(100 * v if v is not None else v, ".1f") + "%",
                   numeric=True)] + ([Column("pnl", "mean P&L (USD)", fmt=",.0f")]
                                     if "pnl" in contrib.columns else [])))
        page.add_image("es_contributions.png", alt="ES contributions",
                       caption="Per-position contributions to the ES of the worst scenario "
                               "(they sum to the ES).")
    page.add_paragraph("Files: " + ", ".join(list(paths) + ["report.html"]) + ".", note=True)
    paths["report.html"] = page.write(out / "report.html")
    return paths


# ------------------------------------------------------------------------------------------
# named scenarios


def _column_for(name: str, values: pd.Series) -> Column:
    n = str(name)
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return Column(n, fmt=lambda v: "-" if v is None or (isinstance(v, float) and
                                                             math.isnan(v)) else str(v))
    if n == "pnl_coin" or n.endswith("_coin"):
        return Column(n, fmt=lambda v: _fmt(v, ",.4f"), numeric=True)
    if is_metric(n) or n.startswith(("pnl", "var", "es", "usd")) or n.endswith("_usd"):
        return Column(n, fmt=_usd, numeric=True)
    return Column(n, fmt=lambda v: _fmt(v, ".4g"), numeric=True)


def _records(rows: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(rows.index, pd.RangeIndex) or rows.index.name is not None:
        rows = rows.reset_index()
    return rows


def stress_table(rows: pd.DataFrame) -> str:
    """A fixed-width text table of a few scenarios (the frame's columns, in order).

    USD columns (``pnl_usd``, ``cost``, ``var*``, ``es*``, ``mean``, ...) print with thousands
    separators and 2 decimals, coin columns (``pnl_coin``, ``*_coin``) with 4 decimals, other
    numbers with 4 significant digits; NaN and None print as ``-``.
    """
    rows = _records(rows)
    cols = [_column_for(c, rows[c]) for c in rows.columns]
    return text_table(rows.to_dict(orient="records"), cols)


def _bar_labels(ax, y, values, texts) -> None:
    """Value labels on horizontal bars: inside long bars, just outside short ones; the x
    axis in plain numbers with thousands separators."""
    finite = np.abs(values[np.isfinite(values)])
    span = float(finite.max()) if finite.size else 1.0
    for yi, vi, t in zip(y, values, texts, strict=True):
        if not np.isfinite(vi) or not t:
            continue
        inside = abs(vi) > 0.6 * span
        right = (vi >= 0) != inside
        ax.text(vi, yi, f" {t} ", va="center", fontsize="x-small",
                ha="left" if right else "right", color="white" if inside else "black")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))


def _pnl_bar_figure(rows: pd.DataFrame, *, title: str):
    s = rows.set_index("name")["pnl_usd"].astype(float).sort_values()
    n = len(s)
    fig = _new_figure((8.0, 1.2 + 0.4 * max(n, 1)))
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    v = s.to_numpy()
    ax.barh(y, np.where(np.isfinite(v), v, 0.0), color=np.where(v < 0, "#d9534f", "#5cb85c"),
            alpha=0.85)
    _bar_labels(ax, y, v, [f"{vi:,.0f}" for vi in v])
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


def _position_heatmap(positions: pd.DataFrame, *, title: str):
    cells = positions.to_numpy(np.float64)
    ny, nx = cells.shape
    finite = cells[np.isfinite(cells)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    fig = _new_figure((max(6.0, 0.8 * nx + 3.5), max(3.0, 0.42 * ny + 2.0)))
    ax = fig.subplots()
    ax.set_facecolor("0.93")
    img = ax.imshow(np.ma.masked_invalid(cells), cmap="RdBu", norm=norm, aspect="auto",
                    interpolation="nearest")
    if nx <= 20 and ny <= 30:
        for (i, j), v in np.ndenumerate(cells):
            if np.isfinite(v):
                ax.text(j, i, _compact(v), ha="center", va="center", fontsize=7,
                        color="white" if abs(norm(v) - 0.5) > 0.35 else "black")
    ax.set_xticks(np.arange(nx), positions.columns.astype(str), rotation=45, ha="right",
                  fontsize="small")
    ax.set_yticks(np.arange(ny), positions.index.astype(str), fontsize="small")
    ax.set_xlabel("position")
    ax.set_ylabel("scenario")
    fig.colorbar(img, ax=ax, shrink=0.9).set_label("P&L (USD)")
    ax.set_title(title, fontsize="medium")
    return fig


STRESS_FILES = ("stress.csv", "positions.csv", "stress_pnl.png", "stress_positions.png",
                "stress.html")
"""The files ``stress_report`` writes."""


def stress_report(rows: pd.DataFrame, positions: pd.DataFrame, out_dir: str | Path, *,
                  title: str | None = None, meta: Mapping[str, Any] | None = None
                  ) -> dict[str, Path]:
    """Write the report of a few named scenarios.

    Args:
      rows: one row per scenario: ``name``, ``kind``, ``description``, ``pnl_usd``,
        ``pnl_coin``, ``cost`` and, for path/historical scenarios, optional VaR/ES columns.
      positions: scenario x position P&L in USD (index: scenario names; columns: labels).
      out_dir: output folder (created).
      title: page title.
      meta: facts shown at the top (book, model, seeds, ...).

    Returns:
      File name -> path (``STRESS_FILES``).
    """
    rows = _records(rows)
    for c in ("name", "pnl_usd"):
        if c not in rows.columns:
            raise ValueError(f"rows need a {c!r} column; got {', '.join(map(str, rows.columns))}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in STRESS_FILES}
    title = title or "Stress scenarios"
    rows.to_csv(paths["stress.csv"], index=False)
    positions.rename_axis(positions.index.name or "scenario").to_csv(paths["positions.csv"])
    save_figure(_pnl_bar_figure(rows, title=f"{title}: total P&L per scenario"),
                paths["stress_pnl.png"])
    save_figure(_position_heatmap(positions, title="P&L per scenario and position (USD)"),
                paths["stress_positions.png"])

    page = Page(title)
    if meta:
        page.add_key_values({str(k): v for k, v in meta.items()})
    page.add_paragraph("P&L in USD (coin columns in the book's currency), positive = gain; "
                       "VaR and ES are positive losses; '-' where not applicable.", note=True)
    page.add_heading("Scenarios")
    cols = [Column(c.key, c.key, fmt=c.fmt, numeric=c.numeric)
            for c in (_column_for(c, rows[c]) for c in rows.columns)]
    page.add_html(html_table(rows, cols))
    page.add_image("stress_pnl.png", alt="total P&L per scenario",
                   caption="Total P&L per scenario, sorted; losses in red.")
    page.add_heading("Positions")
    page.add_image("stress_positions.png", alt="P&L per scenario and position",
                   caption="P&L per scenario (rows) and position (columns); red: loss.")
    prow = positions.rename_axis("scenario").reset_index()
    page.add_html(html_table(prow, [Column("scenario")] + [
        Column(str(c), fmt=_usd, numeric=True) for c in positions.columns]))
    page.add_paragraph("Files: " + ", ".join(STRESS_FILES) + ".", note=True)
    page.write(paths["stress.html"])
    return paths


__all__ = ["pnl_heatmap", "heatmap_grid", "worst_scenarios", "drivers",
           "es_contribution_table", "es_contribution_figure", "sweep_report", "stress_table",
           "stress_report", "dimensions", "metrics", "main_metric", "dim_label", "dim_tick",
           "is_metric", "STRESS_FILES", "MAX_PAIRS"]
