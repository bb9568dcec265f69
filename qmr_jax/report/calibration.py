"""Calibration report: fit quality per quote and per expiry, smiles, residual map (HTML, CSV, JSON).

``calibration_report(result, chain, out_dir)`` (behind ``qmr calibrate``) writes to ``out_dir``:

* ``result.json`` - ``CalibrationResult.to_dict()`` (parameters, Feller ratio, status, RMSE,
  per-expiry fit, starts, loss history, settings with the parameter boxes) plus the chain's
  source, snapshot, spot, cleaning summary and, for a synthetic chain, the true parameters;
* ``residuals.csv`` - one row per quote (``row`` is the chain's index): expiry, strike,
  call/put, forward, log-moneyness, bid/mid/ask and model IVs (decimals), ``residual_iv``
  (model - mid, vol points), ``inside_band``, ``weight``;
* ``by_expiry.csv`` - per expiry: quotes, RMSE and mean residual (vol points), share of model
  IVs inside bid/ask;
* ``smiles.png`` - one panel per expiry: bid/ask IVs as vertical bars, mid (and mark) IVs as
  markers, the model smile (``model_iv_surface``) on a fine log-moneyness grid;
* ``residuals.png`` - mean residual in vol points per expiry and log-moneyness bucket
  (diverging colours centred at 0);
* ``convergence.png`` - the objective after each iteration of the winning start (log scale);
* ``report.html`` - one self-contained page (figures embedded) with the headline numbers, a
  warning banner when the solver did not converge, the parameter table, the per-expiry table,
  the figures, the settings and the data's provenance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import MaxNLocator

from ..calibration.calibrate import model_iv_surface
from ..calibration.result import CalibrationResult, _jsonable
from .figures import _new_figure, save_figure
from .html import Page, escape
from .tables import Column, html_table

FILES = ("result.json", "residuals.csv", "by_expiry.csv", "smiles.png", "residuals.png",
         "convergence.png", "report.html")
"""The files ``calibration_report`` writes."""

GRID_POINTS = 121
"""Points of each expiry's model smile in ``smiles.png``."""

_BUCKET_EDGES = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2, 1.6, 2.4, 3.2, 4.8)

_BANNER = ("border:2px solid #b00020;background:#fdecea;color:#5f0010;padding:.7em 1em;"
           "margin:1em 0;border-radius:4px")
_CAUTION = ("border:1px solid #c77700;background:#fff4e0;color:#5a3800;padding:.6em 1em;"
            "margin:1em 0;border-radius:4px")


# ------------------------------------------------------------------------------------------
# tables


def _days(t) -> np.ndarray:
    return 365.0 * np.asarray(t, np.float64)


def _when(snapshot: str | None) -> str | None:
    """``2026-05-31 22:09 UTC`` from an ISO snapshot time (as given when not a time)."""
    if not snapshot:
        return None
    try:
        ts = pd.Timestamp(snapshot)
    except (TypeError, ValueError):
        return str(snapshot)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def _date(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    try:
        return pd.Timestamp(v).strftime("%Y-%m-%d")
    except (TypeError, ValueError):
        return str(v)


def residual_table(result: CalibrationResult, chain: pd.DataFrame | None = None) -> pd.DataFrame:
    """The per-quote table of ``residuals.csv``: ``row`` (the chain's index), ``days``, and
    the chain's ``instrument``/``expiry`` when ``chain`` is given, then ``result.residuals``."""
    res = result.residuals.copy()
    res.insert(0, "row", res.index)
    res.insert(2, "days", _days(res["expiry_years"]))
    if chain is not None:
        for col in ("expiry", "instrument"):
            if col in chain.columns:
                res.insert(1, col, chain[col].reindex(res.index).to_numpy())
    return res.reset_index(drop=True)


def expiry_table(result: CalibrationResult) -> pd.DataFrame:
    """``result.by_expiry`` with ``days`` after ``expiry_years``."""
    by = result.by_expiry.copy()
    by.insert(1, "days", _days(by["expiry_years"]))
    return by


def _param_rows(result: CalibrationResult, truth: dict | None) -> list[dict]:
    bij = result.problem.bij
    best = result.starts[result.starts["best"]] if "best" in result.starts else result.starts
    rows = []
    for name, value in result.params_dict().items():
        m = bij.maps[name]
        note = ""
        if name in bij.fixed:
            note = "fixed"
        elif name in result.at_bounds:
            note = f"at the {result.at_bounds[name]} box edge"
        start = best[f"start_{name}"].iloc[0] if len(best) and f"start_{name}" in best else None
        rows.append({"parameter": name, "value": value, "start": start,
                     "truth": None if truth is None else truth.get(name), "lo": m.lo,
                     "hi": m.hi, "scale": "log" if m.log else "linear", "note": note})
    return rows


# ------------------------------------------------------------------------------------------
# figures


def _smile_grids(res: pd.DataFrame, expiries: np.ndarray) -> np.ndarray:
    grids = []
    for t in expiries:
        x = res.loc[res["expiry_years"] == t, "log_moneyness"].to_numpy(np.float64)
        lo, hi = (float(np.min(x)), float(np.max(x))) if len(x) else (-0.1, 0.1)
        pad = 0.06 * max(hi - lo, 0.05)
        grids.append(np.linspace(lo - pad, hi + pad, GRID_POINTS))
    return np.stack(grids)


def smiles_figure(result: CalibrationResult, chain: pd.DataFrame | None = None, *,
                  title: str | None = None, ncols: int | None = None):
    """Market and model smiles, one panel per expiry (``Figure``; save with ``save_figure``)."""
    res = result.residuals
    by = result.by_expiry
    expiries = by["expiry_years"].to_numpy(np.float64)
    grids = _smile_grids(res, expiries)
    curves = np.asarray(model_iv_surface(result, expiry_years=expiries, log_moneyness=grids),
                        np.float64)
    mark = None
    if chain is not None and "mark_iv" in chain.columns:
        mark = chain["mark_iv"].reindex(res.index).to_numpy(np.float64)

    n = len(expiries)
    ncols = ncols or (1 if n == 1 else 2 if n <= 4 else 3 if n <= 12 else 4)
    nrows = math.ceil(n / ncols)
    fig = _new_figure((4.6 * ncols, 3.2 * nrows + 0.9))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    handles = {}
    for i, (ax, t) in enumerate(zip(axes, expiries, strict=False)):
        sel = (res["expiry_years"] == t).to_numpy()
        q = res[sel]
        x = q["log_moneyness"].to_numpy(np.float64)
        bid, mid, ask = (100.0 * q[c].to_numpy(np.float64) for c in ("bid_iv", "mid_iv",
                                                                      "ask_iv"))
        band = np.isfinite(bid) & np.isfinite(ask)
        gx, gv = grids[i], 100.0 * curves[i]
        ok = np.isfinite(gv)
        h = ax.vlines(x[band], bid[band], ask[band], color="#9ecae1", lw=2.6, zorder=1)
        handles.setdefault("bid-ask IV", h)
        (h,) = ax.plot(x, mid, "o", ms=3.2, color="#08519c", zorder=3)
        handles.setdefault("mid IV", h)
        if mark is not None:
            (h,) = ax.plot(x, 100.0 * mark[sel], "x", ms=3.5, mew=0.8, color="0.35", zorder=4)
            handles.setdefault("mark IV", h)
        (h,) = ax.plot(gx[ok], gv[ok], "-", lw=1.6, color="#d62728", zorder=2)
        handles.setdefault(f"model ({result.model})", h)
        # y range from the mids and the model; bid/ask bars of wide wings may leave it
        core = np.concatenate([mid[np.isfinite(mid)], gv[ok], bid[np.isfinite(bid)]])
        if core.size:
            lo, hi = float(np.min(core)), float(np.max(np.concatenate(
                [mid[np.isfinite(mid)], gv[ok]])))
            span = max(hi - lo, 2.0)
            top = np.concatenate([ask[band], [hi]])
            hi = min(float(np.max(top)), hi + 0.35 * span)
            ax.set_ylim(lo - 0.08 * span, hi + 0.08 * span)
        row = by.iloc[i]
        label = f"{365.0 * t:.1f} d"
        if "expiry" in by.columns:
            label += f"  ({_date(row['expiry'])})"
        ax.set_title(f"{label}   RMSE {row['rmse_iv']:.2f} vol pts", fontsize="medium")
        ax.axvline(0.0, color="0.7", lw=0.8, ls=":")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("log-moneyness  log(K/F)", fontsize="small")
        ax.set_ylabel("implied vol (%)", fontsize="small")
        ax.tick_params(labelsize="small")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=len(handles), fontsize="small", frameon=False)
    fig.suptitle(title or f"{result.model}: market and model implied vols")
    return fig


def _buckets(x: np.ndarray) -> np.ndarray:
    """Bucket edges in log-moneyness: finer near the money, just covering ``x``."""
    x = np.asarray(x, np.float64)
    lo, hi = float(np.min(x)), float(np.max(x))

    def side(extent):
        edges = [e for e in _BUCKET_EDGES if e < extent]
        nxt = [e for e in _BUCKET_EDGES if e >= extent]
        edges.append(nxt[0] if nxt else extent * (1.0 + 1e-9) + 1e-12)
        return edges

    pos = side(hi) if hi > 0 else []
    neg = side(-lo) if lo < 0 else []
    return np.array([-e for e in reversed(neg)] + [0.0] + pos)


def _edge_label(e: float) -> str:
    return "0" if e == 0 else f"{e:+g}"


def residual_heatmap(result: CalibrationResult, *, title: str | None = None):
    """Mean residual (model - mid IV, vol points) per expiry row and log-moneyness bucket."""
    res = result.residuals
    by = result.by_expiry
    expiries = by["expiry_years"].to_numpy(np.float64)
    x = res["log_moneyness"].to_numpy(np.float64)
    edges = _buckets(x)
    col = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    row = np.searchsorted(expiries, res["expiry_years"].to_numpy(np.float64))
    n_e, n_b = len(expiries), len(edges) - 1
    total = np.zeros((n_e, n_b))
    count = np.zeros((n_e, n_b))
    np.add.at(total, (row, col), res["residual_iv"].to_numpy(np.float64))
    np.add.at(count, (row, col), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = np.where(count > 0, total / count, np.nan)
    finite = cells[np.isfinite(cells)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    vmax = max(vmax, 0.1)  # a near-exact fit stays white rather than amplifying noise

    fig = _new_figure((max(7.5, 0.62 * n_b + 3.2), max(3.4, 0.46 * n_e + 1.9)))
    ax = fig.subplots()
    ax.set_facecolor("0.93")
    img = ax.imshow(np.ma.masked_invalid(cells), cmap="RdBu_r", aspect="auto",
                    norm=TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax),
                    interpolation="nearest")
    if n_e * n_b <= 500:
        for (i, j), v in np.ndenumerate(cells):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}\n({int(count[i, j])})", ha="center", va="center",
                        fontsize=6.5, color="white" if abs(v) > 0.6 * vmax else "black")
    ax.set_xticks(np.arange(n_b + 1) - 0.5, [_edge_label(e) for e in edges], rotation=45,
                  fontsize="small")
    labels = [f"{d:.1f} d" for d in _days(expiries)]
    if "expiry" in by.columns:
        labels = [f"{lab}  {_date(e)}" for lab, e in zip(labels, by["expiry"], strict=True)]
    ax.set_yticks(np.arange(n_e), labels, fontsize="small")
    ax.set_xlabel("log-moneyness log(K/F), bucket edges")
    ax.set_ylabel("expiry (days to expiry, date)")
    cbar = fig.colorbar(img, ax=ax, shrink=0.9)
    cbar.set_label("mean residual: model - mid IV (vol points)")
    ax.set_title(title or f"{result.model}: residuals by expiry and moneyness "
                          "(cell: mean vol pts, quote count)", fontsize="medium")
    return fig


def convergence_figure(result: CalibrationResult, *, title: str | None = None):
    """The objective after each iteration of the winning start and its excess over the
    final value, both on a log scale."""
    h = np.asarray(result.history, np.float64)
    it = np.arange(1, len(h) + 1)
    ok = np.isfinite(h) & (h > 0)
    fig = _new_figure((10.0, 4.0))
    ax, ax2 = fig.subplots(1, 2)
    if ok.any():
        final = float(h[ok][-1])
        ax.semilogy(it[ok], h[ok], "-o", ms=3, lw=1.4, color="#2b7bba")
        ax.axhline(final, color="0.6", lw=0.8, ls="--")
        excess = (h - final) / final
        good = ok & (excess > 0)
        if good.any():
            ax2.semilogy(it[good], excess[good], "-o", ms=3, lw=1.4, color="#6a3d9a")
        else:
            ax2.text(0.5, 0.5, "a single iteration" if ok.sum() < 2 else "objective flat",
                     transform=ax2.transAxes, ha="center", va="center")
    else:
        for a in (ax, ax2):
            a.text(0.5, 0.5, "no positive objective values recorded", transform=a.transAxes,
                   ha="center", va="center")
    ax.set_ylabel("objective (0.5 x weighted mean sq. residual)")
    ax.set_title("objective per iteration", fontsize="medium")
    ax2.set_ylabel("(objective - final) / final")
    ax2.set_title("excess over the final objective", fontsize="medium")
    for a in (ax, ax2):
        a.set_xlabel("iteration")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlim(0.5, max(len(h), 1) + 0.5)
        a.grid(True, alpha=0.3)
    state = "converged" if result.converged else "NOT CONVERGED"
    fig.suptitle(title or f"{result.model}, {result.method}: {state} after "
                          f"{result.iterations} iterations ({result.reason})",
                 fontsize="medium", color="#b00020" if not result.converged else "black")
    return fig


# ------------------------------------------------------------------------------------------
# the report


def chain_info(result: CalibrationResult, chain: pd.DataFrame | None) -> dict:
    """Where the quotes came from: source, snapshot, currency, spot, cleaning, synthetic truth."""
    info = {"source": None, "snapshot": result.snapshot, "currency": result.currency,
            "n_quotes": result.n_quotes, "n_expiries": len(result.by_expiry)}
    if chain is None:
        return info
    attrs = chain.attrs
    synthetic = attrs.get("synthetic")
    info["source"] = attrs.get("source") or ("synthetic_chain" if synthetic else None)
    if "spot" in chain.columns and len(chain):
        info["spot"] = float(chain["spot"].iloc[0])
    if "cleaning" in attrs:
        info["cleaning"] = attrs["cleaning"]
    if synthetic:
        info["synthetic"] = synthetic
    return info


def calibration_report(result: CalibrationResult, chain: pd.DataFrame | None = None,
                       out_dir: str | Path = "out/calibration", *,
                       title: str | None = None) -> dict[str, Path]:
    """Write the calibration report of ``result`` to ``out_dir``.

    Args:
      result: a ``CalibrationResult`` (``qmr_jax.calibration.calibrate``).
      chain: the chain it was calibrated to (optional): adds its source, snapshot, spot,
        cleaning summary, a synthetic chain's true parameters, instrument names and mark IVs.
      out_dir: output folder (created if needed).
      title: page and figure title (default: model, currency and snapshot).

    Returns:
      File name -> path of each file written (``FILES``).

    Raises:
      ValueError: ``chain`` does not hold the result's quotes.
    """
    if chain is not None and (len(chain) != result.n_quotes
                              or not chain.index.equals(result.residuals.index)):
        raise ValueError(f"chain has {len(chain)} quotes but the result was calibrated to "
                         f"{result.n_quotes} (or the row index differs); pass the chain the "
                         "result was calibrated to")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if title is None:
        where = " ".join(s for s in (result.currency, _when(result.snapshot)) if s)
        title = f"{result.model} calibration" + (f": {where}" if where else "")
    info = chain_info(result, chain)
    paths = {name: out / name for name in FILES}

    summary = result.to_dict()
    summary.update(title=title, chain=info, files=list(FILES))
    paths["result.json"].write_text(json.dumps(_jsonable(summary), indent=2) + "\n",
                                    encoding="utf-8")
    residual_table(result, chain).to_csv(paths["residuals.csv"], index=False)
    by_expiry = expiry_table(result)
    by_expiry.to_csv(paths["by_expiry.csv"], index=False)
    save_figure(smiles_figure(result, chain, title=f"{title}: market and model smiles"),
                paths["smiles.png"])
    save_figure(residual_heatmap(result), paths["residuals.png"])
    save_figure(convergence_figure(result), paths["convergence.png"])
    _write_html(paths, result, summary, by_expiry, title)
    return paths


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{100.0 * float(x):.1f}%"


def _write_html(paths: dict[str, Path], result: CalibrationResult, summary: dict,
                by_expiry: pd.DataFrame, title: str) -> Path:
    info = summary["chain"]
    truth = (info.get("synthetic") or {}).get("params")
    page = Page(title)
    if not result.converged:
        page.add_html(
            f'<div class="warning" role="alert" style="{_BANNER}"><strong>Not converged.'
            f"</strong> The solver stopped without meeting a tolerance: "
            f"{escape(result.reason)} after {result.iterations} iterations. The parameters "
            "below are its last iterate, not an optimum: check the convergence plot, allow "
            "more iterations or more starts, or start from a better guess.</div>")
    param_rows = _param_rows(result, truth)
    edge = [r["parameter"] for r in param_rows if r["note"].endswith("box edge")]
    if edge:
        page.add_html(
            f'<div class="caution" style="{_CAUTION}">Parameter(s) {escape(", ".join(edge))} '
            "ended on the edge of the calibration box: the data push them further; widen "
            "the box (bounds=) or fix them, and treat their values with care.</div>")

    feller = result.feller_ratio()
    head = {
        "model": result.model,
        "currency": result.currency or "-",
        "snapshot": _when(result.snapshot) or "-",
        "data": info.get("source") or "-",
        "status": ("converged" if result.converged else "NOT CONVERGED")
        + f" ({result.reason})",
        "RMSE": f"{result.rmse_iv:.3f} vol points (model - mid IV, all quotes)",
        "inside bid/ask": f"{_pct(result.inside_band)} of model IVs inside the quoted "
                          "bid/ask IVs",
        "quotes": f"{result.n_quotes} in {len(result.by_expiry)} expiries",
        "objective": f"{result.loss:.4e}",
        "iterations": f"{result.iterations} ({result.evaluations} residual evaluations)",
        "wall time": f"{result.wall_time:.2f} s (including compilation on a first call)",
    }
    if info.get("spot") is not None:
        head["spot"] = f"{info['spot']:,.2f} USD"
    if feller is not None:
        head["Feller ratio"] = (f"{feller:.3f} (2 kappa theta / xi^2; "
                                + ("variance stays positive)" if feller >= 1 else
                                   "below 1: the variance can reach zero)"))
    page.add_key_values(head)

    page.add_heading("Parameters")
    cols = [Column("parameter"), Column("value", fmt=".6g"), Column("start", fmt=".6g")]
    if truth:
        cols.append(Column("truth", "truth (synthetic)", fmt=".6g"))
    cols += [Column("lo", "box low", fmt=".4g"), Column("hi", "box high", fmt=".4g"),
             Column("scale"), Column("note")]
    page.add_html(html_table(param_rows, cols))
    if feller is not None:
        page.add_paragraph(f"Feller ratio 2 kappa theta / xi^2 = {feller:.4f}.", note=True)

    page.add_heading("Fit per expiry")
    cols = [Column("days", fmt=".2f")]
    if "expiry" in by_expiry.columns:
        cols.append(Column("expiry", fmt=_date))
    cols += [Column("n_quotes", "quotes", fmt="d"),
             Column("rmse_iv", "RMSE (vol pts)", fmt=".3f"),
             Column("mean_residual_iv", "mean residual (vol pts)", fmt="+.3f"),
             Column("inside_band", "inside bid/ask", fmt=_pct, numeric=True)]
    page.add_html(html_table(by_expiry, cols))
    page.add_paragraph("Residual: model IV minus mid IV in vol points (1 vol point = 0.01 of "
                       "implied vol); inside bid/ask counts quotes with both sides.", note=True)

    page.add_heading("Smiles")
    page.add_image(paths["smiles.png"], alt="market and model implied-volatility smiles",
                   caption="Per expiry: bid/ask IVs (bars), mid and mark IVs (markers) and "
                           "the calibrated model's smile on a fine log-moneyness grid.",
                   embed=True)
    page.add_heading("Residual map")
    page.add_image(paths["residuals.png"], alt="residual heatmap",
                   caption="Mean residual (model - mid IV, vol points) per expiry and "
                           "log-moneyness bucket; red: model above the mid, blue: below; "
                           "grey: no quotes.", embed=True)
    page.add_heading("Convergence")
    page.add_image(paths["convergence.png"], alt="objective per iteration",
                   caption="Objective after each solver iteration of the winning start "
                           "(polishing rounds, if any, continue the line).", embed=True)

    starts = result.starts
    if len(starts) > 1:
        page.add_heading("Starts")
        scols = [Column(c, c.removeprefix("start_"), fmt=".4g") for c in starts.columns
                 if c.startswith("start_")]
        scols += [Column("final_loss", "final objective", fmt=".4e"),
                  Column("iterations", fmt="d"), Column("reason"), Column("best")]
        page.add_html(html_table(starts, scols))

    s = summary["settings"]
    page.add_heading("Settings")
    page.add_key_values({
        "method": s["method"], "loss": s["loss"], "weights": s["weights"], "seed": s["seed"],
        "starts": len(starts), "Fourier nodes (n_terms)": s["n_terms"],
        "Fourier tolerance": f"{s['fourier_tol']:g}",
        "Feller penalty": f"{s['feller_penalty']:g}",
        "fixed": ", ".join(s["fixed"]) or "none",
    })
    page.add_html(html_table(
        [{"parameter": k, "lo": v[0], "hi": v[1]} for k, v in s["bounds"].items()],
        [Column("parameter"), Column("lo", "low", fmt=".4g"), Column("hi", "high", fmt=".4g")],
        caption="Calibration boxes of the free parameters"))

    page.add_heading("Data")
    data = {"source": info.get("source") or "-", "snapshot": info.get("snapshot") or "-",
            "currency": info.get("currency") or "-"}
    syn = info.get("synthetic")
    if syn:
        data["synthetic truth"] = f"{syn.get('model')}(" + ", ".join(
            f"{k}={v:g}" for k, v in (syn.get("params") or {}).items()) + ")"
        data["synthetic settings"] = (f"noise_iv {syn.get('noise_iv')}, half-spread "
                                      f"{syn.get('half_spread_iv')}, tick {syn.get('tick')}")
    page.add_key_values(data)
    if info.get("cleaning"):
        from ..data import format_cleaning_summary

        page.add_paragraph("Cleaning of the raw quotes:")
        page.add_preformatted(format_cleaning_summary(info["cleaning"]))
    page.add_paragraph("Files: " + ", ".join(FILES) + ".", note=True)
    return page.write(paths["report.html"])


__all__ = ["calibration_report", "smiles_figure", "residual_heatmap", "convergence_figure",
           "residual_table", "expiry_table", "chain_info", "FILES"]
