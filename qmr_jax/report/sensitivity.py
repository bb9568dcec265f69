"""Gradient sensitivity report of a book: Greeks, a ranked tornado, P&L ladders (HTML, CSV, JSON).

``sensitivity_report(book, model, market, out_dir)`` (behind ``qmr sensitivities``) values a
``qmr_jax.Book`` under a model and writes to ``out_dir``:

* ``positions.csv`` - Greeks per position in the units people quote (``greeks_table``): value in
  USD and coin (the premium in coin of an inverse option), delta in coin and USD, the
  premium-adjusted coin delta of inverse options, gamma (per USD and per 1% move), vega per vol
  point, theta per day, rho per 1%, vanna and volga;
* ``position_parameters.csv`` - per position, the first derivative with respect to spot, rate,
  div and every model parameter (per unit of the input, column ``<input>``) and the
  first-order P&L of the input's typical up move (``<input>_move``);
* ``parameters.csv`` - the tornado: per input its value, typical move, the book's derivative
  per unit, the first-order P&L of the down and the up move and the fully revalued P&L, ranked
  by the size of the first-order effect;
* ``ladders.csv`` - P&L ladders over each main input (spot -30%..+30%, a parallel vol shift of
  -20..+20 vol points, rate -3%..+3%, a week of time passing): full revaluation against the
  first- and second-order Taylor predictions from the autodiff gradient and Hessian;
* ``sensitivities.json`` - all of the above with the book's totals, the model, the market, the
  book name and the Monte Carlo seed/key;
* ``report.html`` with ``tornado.png`` and ``ladders.png``.

Typical moves (``TYPICAL_MOVES``, overridable by ``bumps``): spot +-5% (relative); vol (the
parallel vol coordinate of ``qmr_jax.sensitivities``: ``sigma``, or ``sqrt(v0)`` and
``sqrt(theta)`` together) +-5 vol points; rate and div +-1% (absolute); variance parameters
(``v0``, ``theta``) +-5 vol points on their square root; ``sigma`` +-5 vol points; ``kappa``,
``xi``, ``sigma_j``, ``eta1``, ``eta2`` +-25% (relative); ``lam`` +-50%; ``rho`` +-0.10;
``mu_j`` +-0.02; ``p`` +-0.05. A move that would leave the parameter's domain is clipped to it
(``rho`` within +-0.99, ``p`` within [0, 1], ``eta1 > 1``, positive parameters above 1e-6), so
up and down moves can differ in size; the first-order P&L uses the actual move.

The numbers come from one plan of the book (``Book.bind``): per-position Greeks and the full
4 x 4 Hessian in (spot, vol, rate, time) by forward-over-forward mode, per-position parameter
derivatives by forward mode, and jitted full revaluations; book totals are sums over the
positions. Monte Carlo positions use ``key`` (``jax.random.key(seed)``), position ``i``
``fold_in(key, i)``, and the same paths in every revaluation (common random numbers).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..book import DEFAULT_MC_PATHS, Book, greeks_table, totals_series
from ..models import Market
from ..sensitivities import parameter_sensitivities, shift_vol, vol_inputs
from .figures import ladder_figure, save_figure, tornado_figure
from .html import Page
from .tables import Column, html_table


class Move(NamedTuple):
    """A typical move of one input.

    Attributes:
      kind: ``"rel"`` (``x (1 +- size)``), ``"abs"`` (``x +- size``) or ``"vol"`` (a variance
        moved by ``size`` on its square root: ``(sqrt(x) +- size)^2``).
      size: the size of the move.
    """

    kind: str
    size: float

    def describe(self, name: str = "") -> str:
        """``"+-5%"``, ``"+-5 vol pts"``, ``"+-0.1"`` (rates as percentages)."""
        if self.kind == "rel":
            return f"+-{100 * self.size:g}%"
        if self.kind == "vol":
            return f"+-{100 * self.size:g} vol pts on sqrt"
        if name in ("vol", "sigma"):
            return f"+-{100 * self.size:g} vol pts"
        if name in ("rate", "div"):
            return f"+-{100 * self.size:g}% abs"
        return f"+-{self.size:g}"


TYPICAL_MOVES: dict[str, Move] = {
    "spot": Move("rel", 0.05),
    "vol": Move("abs", 0.05),
    "rate": Move("abs", 0.01),
    "div": Move("abs", 0.01),
    "sigma": Move("abs", 0.05),
    "v0": Move("vol", 0.05),
    "theta": Move("vol", 0.05),
    "kappa": Move("rel", 0.25),
    "xi": Move("rel", 0.25),
    "rho": Move("abs", 0.10),
    "lam": Move("rel", 0.50),
    "mu_j": Move("abs", 0.02),
    "sigma_j": Move("rel", 0.25),
    "p": Move("abs", 0.05),
    "eta1": Move("rel", 0.25),
    "eta2": Move("rel", 0.25),
}
"""Typical move per input (see the module docstring)."""

_DOMAIN = {
    "rate": (-math.inf, math.inf),
    "div": (-math.inf, math.inf),
    "vol": (-math.inf, math.inf),
    "mu_j": (-math.inf, math.inf),
    "rho": (-0.99, 0.99),
    "p": (0.0, 1.0),
    "eta1": (1.0 + 1e-6, math.inf),
    "v0": (0.0, math.inf),
}
_POSITIVE = (1e-6, math.inf)


class Ladder(NamedTuple):
    """Bumps of one risk coordinate for a P&L ladder.

    Attributes:
      coordinate: index into ``(spot, vol, rate, time)``.
      points: the bumps, in ``unit`` (relative for spot, vol points, % of rate, days).
      scale: coordinate change per unit (spot: the spot itself, per 1.00 relative).
      xlabel: axis label.
    """

    coordinate: int
    points: tuple[float, ...]
    scale: str
    xlabel: str


LADDERS: dict[str, Ladder] = {
    "spot": Ladder(0, tuple(np.round(np.linspace(-0.30, 0.30, 13), 10)), "relative",
                   "spot move (%)"),
    "vol": Ladder(1, tuple(np.round(np.linspace(-0.20, 0.20, 9), 10)), "vol",
                  "parallel vol shift (vol points)"),
    "rate": Ladder(2, tuple(np.round(np.linspace(-0.03, 0.03, 7), 10)), "rate",
                   "rate shift (%)"),
    "time": Ladder(3, tuple(float(d) for d in range(0, 8)), "days", "days passed"),
}
"""Default ladders: spot -30%..+30%, vol -20..+20 vol points, rate -3%..+3%, 0..7 days
(days are cut below the book's shortest expiry)."""


def _as_move(m) -> Move:
    if isinstance(m, Move):
        return m
    if isinstance(m, tuple | list) and len(m) == 2:
        return Move(str(m[0]), float(m[1]))
    raise ValueError(f"a move is Move(kind, size) or (kind, size); got {m!r}")


def _apply(name: str, x: float, move: Move, sign: float) -> float:
    if move.kind == "rel":
        y = x * (1.0 + sign * move.size)
    elif move.kind == "abs":
        y = x + sign * move.size
    elif move.kind == "vol":
        y = max(math.sqrt(max(x, 0.0)) + sign * move.size, 0.0) ** 2
    else:
        raise ValueError(f"move kind must be 'rel', 'abs' or 'vol'; got {move.kind!r}")
    lo, hi = _DOMAIN.get(name, _POSITIVE)
    return min(max(y, lo), hi)


def _f64(tree):
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), tree)


def _point(model, market: Market, name: str, value: float):
    """(model, market) with input ``name`` set to ``value`` (``vol``: a shift)."""
    if name == "vol":
        return shift_vol(model, value), market
    if name in Market._fields:
        return model, market._replace(**{name: value})
    return model._replace(**{name: value}), market


def _model_label(model) -> str:
    params = ", ".join(f"{f}={float(v):g}" for f, v in model._asdict().items())
    return f"{type(model).__name__}({params})"


def _key_label(key) -> str:
    try:
        data = np.asarray(jax.random.key_data(key)).ravel().tolist()
    except (TypeError, ValueError):
        data = np.asarray(key).ravel().tolist()
    return str(data)


def _activity(text: str, progress):
    """``qmr_jax.progress.activity`` on ``progress`` (``True``: stderr; ``None``: silent)."""
    import contextlib

    if progress is None or progress is False:
        return contextlib.nullcontext()
    from ..progress import STDERR, activity

    return activity(text, STDERR if progress is True else progress)


def sensitivity_report(
    book: Book,
    model,
    market: Market,
    out_dir: str | Path,
    *,
    key=None,
    seed: int | None = None,
    n_paths: int = DEFAULT_MC_PATHS,
    bumps: Mapping[str, Move | tuple] | None = None,
    ladders: Mapping[str, Ladder] | None = None,
    model_name: str | None = None,
    method: str = "lewis",
    mc_options: Mapping | None = None,
    log: Callable[[str], None] | None = None,
    progress=None,
) -> dict:
    """Write the sensitivity report of ``book`` under ``model``/``market`` to ``out_dir``.

    Args:
      book: the book.
      model, market: the valuation point (concrete, scalar parameters).
      out_dir: output folder (created if needed).
      key: PRNG key of the Monte Carlo positions; default ``jax.random.key(seed)``.
      seed: recorded in the report (default 0 when neither key nor seed is given).
      n_paths: Monte Carlo paths per path-dependent position.
      bumps: typical moves overriding ``TYPICAL_MOVES`` (``{"spot": Move("rel", 0.1)}``).
      ladders: ladders overriding ``LADDERS`` (``{}`` keeps the defaults).
      model_name: label of the model (e.g. the model file's name).
      method: Fourier method of the European options.
      mc_options: keyword arguments of ``mc_value`` for the path-dependent positions; by
        default ``checkpoint=False`` (only forward mode is used here) and, when the book has
        Asian or lookback options, ``smoothing=DEFAULT_SMOOTHING`` (their second
        derivatives need a smoothed kink; digitals and barriers are smoothed by default).
      log: receives progress lines.
      progress: where the long steps (the compilations) show a spinner or, off a terminal,
        a line every few seconds (``qmr_jax.progress.activity``): a stream, ``True`` for
        stderr, or ``None`` (default) for nothing.

    Returns:
      The dictionary written to ``sensitivities.json``.

    Raises:
      RuntimeError: float64 is not enabled.
      ValueError: a bad book, model, market or move.
    """
    if not jax.config.jax_enable_x64:
        raise RuntimeError('the sensitivity report needs float64: call '
                           'jax.config.update("jax_enable_x64", True) first')
    log = log or (lambda s: None)
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if key is None:
        seed = 0 if seed is None else int(seed)
        key = jax.random.key(seed)
    moves = dict(TYPICAL_MOVES)
    for k, m in (bumps or {}).items():
        moves[k] = _as_move(m)
    lads = dict(LADDERS)
    lads.update(ladders or {})
    model.validate()
    market.validate()
    model = _f64(model)
    market = _f64(market)
    spot = float(market.spot)

    # --- one plan; derivatives in one compiled function, revaluations in another
    t0 = time.perf_counter()
    mc_opts = _mc_options(book, mc_options)
    valuer = book.bind(model, market, key=key if book.has_mc else None, n_paths=n_paths,
                       method=method, mc_options=mc_opts)
    # the key is an argument (not a constant of the programs): one compilation serves every
    # seed
    mc_key = key if book.has_mc else None

    def keyed(k):
        return valuer if k is None else valuer.with_key(k)

    value_jit = jax.jit(lambda m, mk, e, k: keyed(k)(m, mk, e))

    @jax.jit
    def derivatives(m, mk, k):
        v = keyed(k)
        risk = v._position_risk(m, mk, 0.0)
        sens = parameter_sensitivities(v, m, mk, second_order=False, mode="forward")
        return risk, sens.gradient

    n_fourier = sum(1 for p in book.positions if p.is_option and not p.is_mc)
    n_mc = sum(p.is_mc for p in book.positions)
    parts = [f"{n_fourier} options in one Fourier pricer"] if n_fourier else []
    parts += [f"{n_mc} Monte Carlo positions x {n_paths:,} paths"] if n_mc else []
    parts += [f"{len(book) - n_fourier - n_mc} linear positions"] \
        if len(book) > n_fourier + n_mc else []
    log(f"  compiling and running the valuation and its derivatives ({'; '.join(parts)}); "
        "the first run of a book compiles, later runs load it from the compilation cache")
    with _activity("  valuation and derivatives", progress):
        risk, sens = derivatives(model, market, mc_key)
    names = ("spot", "rate", "div", *model._fields)
    grad_pos = np.asarray(sens, np.float64)  # [n, inputs]
    values = np.asarray(risk.value, np.float64)
    _check_finite(book, model, values, np.asarray(risk.gradient, np.float64))
    base = float(values.sum())
    log(f"  valued {len(book)} positions and their derivatives in "
        f"{time.perf_counter() - t0:.1f} s (incl. compilation)")

    def total(m, mk, elapsed=0.0):
        return float(jnp.sum(value_jit(_f64(m), _f64(mk), jnp.asarray(elapsed, jnp.float64),
                                       mc_key)))

    # --- Greeks per position and totals
    g = risk.as_greeks()
    positions = greeks_table(book, g, market)
    tot_risk = risk.total()
    totals = {k: float(v) for k, v in totals_series(tot_risk.as_greeks(), market).items()}

    # --- tornado: first-order and full P&L of each input's typical move
    t1 = time.perf_counter()
    log(f"  tornado: revaluing the book at the down and up move of each of "
        f"{4 + len(model._fields)} inputs (the revaluation compiles once)")
    with _activity("  compiling the revaluation", progress):
        total(model, market)
    grad_total = {n: float(grad_pos[:, i].sum()) for i, n in enumerate(names)}
    grad_total["vol"] = float(np.asarray(tot_risk.gradient)[1])
    inputs = ["spot", "vol", "rate", "div", *model._fields]
    vol_names = vol_inputs(model)
    tornado = []
    for name in inputs:
        if name not in moves:
            raise ValueError(f"no typical move for input {name!r}; pass bumps={{{name!r}: "
                             "Move(kind, size)}")
        mv = moves[name]
        x0 = 0.0 if name == "vol" else float(
            getattr(market, name) if name in Market._fields else getattr(model, name))
        if name == "vol":
            x_dn, x_up = -mv.size, mv.size
            if mv.kind != "abs":
                raise ValueError("the vol move is a shift in vol units: Move('abs', size)")
        else:
            x_dn, x_up = _apply(name, x0, mv, -1.0), _apply(name, x0, mv, 1.0)
        full = []
        for x in (x_dn, x_up):
            m2, mk2 = _point(model, market, name, x)
            full.append(total(m2, mk2) - base)
        d = grad_total[name]
        tornado.append({
            "input": name,
            "value": x0,
            "move": mv.describe(name),
            "move_kind": mv.kind,
            "move_size": mv.size,
            "down_to": x_dn,
            "up_to": x_up,
            "per_unit": d,
            "first_order_down": d * (x_dn - x0),
            "first_order_up": d * (x_up - x0),
            "full_down": full[0],
            "full_up": full[1],
            "effect": max(abs(d * (x_dn - x0)), abs(d * (x_up - x0))),
        })
    tornado.sort(key=lambda r: -r["effect"])
    for rank, r in enumerate(tornado, 1):
        r["rank"] = rank
    parameters = pd.DataFrame(tornado)

    # --- per-position parameter sensitivities (per unit and per typical up move)
    pp = pd.DataFrame({"position": np.arange(1, len(book) + 1), "name": book.labels,
                       "value_usd": values})
    up_move = {r["input"]: r["up_to"] - r["value"] for r in tornado}
    for i, n in enumerate(names):
        pp[n] = grad_pos[:, i]
    pp["vol"] = np.asarray(g.vega, np.float64)
    for n in (*names, "vol"):
        pp[f"{n}_move"] = pp[n] * up_move[n]

    log(f"  tornado done in {time.perf_counter() - t1:.1f} s; P&L ladders over "
        f"{sum(len(lad.points) for lad in lads.values())} points")
    t1 = time.perf_counter()

    # --- ladders
    x0 = np.asarray(valuer.risk_point(market, 0.0), np.float64)
    grad4 = np.asarray(tot_risk.gradient, np.float64)
    hess4 = np.asarray(tot_risk.hessian, np.float64)
    shortest_days = min((p.expiry for p in book.positions if p.expiry is not None),
                        default=math.inf) * 365.0
    ladder_rows = []
    panels = {}
    for lname, lad in lads.items():
        i = lad.coordinate
        xs, fulls, firsts, seconds = [], [], [], []
        for pt in lad.points:
            if lad.scale == "relative":
                h = pt * spot
            elif lad.scale == "days":
                if pt >= shortest_days - 1e-9:
                    continue
                h = pt / 365.0
            else:
                h = pt
            x = x0.copy()
            x[i] += h
            m2 = shift_vol(model, x[1]) if x[1] != 0.0 else model
            if i == 1 and not _valid(m2):
                continue
            full = total(m2, market._replace(spot=x[0], rate=x[2]), x[3]) - base
            first = grad4[i] * h
            second = first + 0.5 * hess4[i, i] * h * h
            shown = 100.0 * pt if lad.scale in ("relative", "vol", "rate") else pt
            xs.append(shown)
            fulls.append(full)
            firsts.append(first)
            seconds.append(second)
            ladder_rows.append({"input": lname, "bump": shown, "bump_raw": h,
                                "unit": lad.xlabel, "full_pnl": full,
                                "first_order_pnl": first, "second_order_pnl": second,
                                "first_order_error": full - first,
                                "second_order_error": full - second})
        panels[lname] = {"x": xs, "full": fulls, "first": firsts, "second": seconds,
                         "xlabel": lad.xlabel}
    ladders_df = pd.DataFrame(ladder_rows)

    log(f"  ladders done in {time.perf_counter() - t1:.1f} s; writing tables, figures and the "
        "report")

    # --- files
    positions.to_csv(out / "positions.csv", index=False)
    pp.to_csv(out / "position_parameters.csv", index=False)
    parameters.to_csv(out / "parameters.csv", index=False)
    ladders_df.to_csv(out / "ladders.csv", index=False)
    fig = tornado_figure(
        [r["input"] for r in tornado], [r["first_order_down"] for r in tornado],
        [r["first_order_up"] for r in tornado], [r["full_down"] for r in tornado],
        [r["full_up"] for r in tornado], move_labels=[r["move"] for r in tornado],
        title=f"{book.name}: P&L of a typical move of each input (USD)")
    save_figure(fig, out / "tornado.png")
    fig = ladder_figure(panels, title=f"{book.name}: P&L ladders, full revaluation against "
                                      "Taylor predictions")
    save_figure(fig, out / "ladders.png")

    inverse = [p for p in book.positions if p.is_option and p.settlement == "inverse"]
    wall = time.perf_counter() - t_start
    pricer = valuer.pricer
    summary = {
        "book": {"name": book.name, "currency": book.currency, "n_positions": len(book),
                 "multiplier": book.multiplier, "spot_source": book.spot_source,
                 "description": book.description,
                 "n_inverse_options": len(inverse),
                 "n_monte_carlo": sum(p.is_mc for p in book.positions)},
        "model": {"name": model_name or type(model).__name__, "type": type(model).__name__,
                  "params": {f: float(v) for f, v in model._asdict().items()},
                  "vol_inputs": list(vol_names)},
        "market": {"spot": spot, "rate": float(market.rate), "div": float(market.div)},
        "valuation": {
            "fourier": None if pricer is None else {"method": pricer.method,
                                                    "n_terms": pricer.n_terms,
                                                    "layout": valuer.layout},
            "monte_carlo": {"n_paths": n_paths, "seed": seed, "key": _key_label(key),
                            "options": {k: v for k, v in mc_opts.items()},
                            "keys": "position i uses jax.random.fold_in(key, i) (0-based); "
                                    "common random numbers across revaluations",
                            "used": book.has_mc},
        },
        "totals": totals,
        "moves": {k: {"kind": m.kind, "size": m.size, "text": m.describe(k)}
                  for k, m in moves.items() if k in inputs},
        "tornado": tornado,
        "ladders": ladder_rows,
        "positions": positions.replace({np.nan: None}).to_dict(orient="records"),
        "files": ["report.html", "tornado.png", "ladders.png", "positions.csv",
                  "position_parameters.csv", "parameters.csv", "ladders.csv",
                  "sensitivities.json"],
        "wall_seconds": wall,
    }
    (out / "sensitivities.json").write_text(json.dumps(_clean(summary), indent=2) + "\n",
                                            encoding="utf-8")
    _write_html(out, summary, positions, parameters, pp, ladders_df, inverse, book)
    log(f"  wrote {out / 'report.html'} ({wall:.1f} s)")
    return summary


def _check_finite(book: Book, model, values: np.ndarray, gradient: np.ndarray) -> None:
    """``ValueError`` naming the positions whose value or first-order Greeks (spot, vol, rate,
    time) are not finite, instead of a report of NaN or inf totals."""
    bad = ~np.isfinite(values) | ~np.isfinite(gradient).all(axis=-1)
    if not bad.any():
        return
    labels = book.labels
    idx = np.flatnonzero(bad)
    names = ", ".join(
        f"#{i + 1} ({labels[i]!r}, value {float(values[i])!r})" for i in idx[:3])
    more = f" and {idx.size - 3} more" if idx.size > 3 else ""
    raise ValueError(f"book {book.name!r}: {idx.size} position(s) have no finite value or "
                     f"Greeks under {_model_label(model)}: {names}{more}")


def _mc_options(book: Book, options) -> dict:
    opts = dict(options or {})
    if not book.has_mc:
        return opts
    opts.setdefault("checkpoint", False)
    if any(p.type in ("asian", "lookback") for p in book.positions):
        try:
            from ..pricing.mc_greeks import DEFAULT_SMOOTHING
        except ImportError:
            DEFAULT_SMOOTHING = 0.01
        opts.setdefault("smoothing", DEFAULT_SMOOTHING)
    return opts


def _valid(model) -> bool:
    try:
        model.validate()
    except ValueError:
        return False
    return True


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


_GREEK_COLUMNS = [
    Column("position", "#", fmt="d"), Column("name"), Column("type"),
    Column("settlement"), Column("quantity", "qty", fmt=",.4g"),
    Column("value_usd", "value USD", fmt=",.2f"), Column("value_coin", "value coin", fmt=",.5f"),
    Column("delta_coin", "delta coin", fmt=",.4f"), Column("delta_usd", "delta USD", fmt=",.0f"),
    Column("delta_coin_pa", "delta coin (prem.-adj.)", fmt=",.4f"),
    Column("gamma_coin_1pct", "gamma coin / 1%", fmt=",.4f"),
    Column("vega_usd_vol_pt", "vega USD / vol pt", fmt=",.2f"),
    Column("theta_usd_day", "theta USD / day", fmt=",.2f"),
    Column("rho_usd_pct", "rho USD / 1%", fmt=",.2f"),
    Column("vanna_coin_vol_pt", "vanna coin / vol pt", fmt=",.4f"),
    Column("volga_usd_vol_pt2", "volga USD / vol pt^2", fmt=",.3f"),
]


def _write_html(out: Path, summary: dict, positions: pd.DataFrame, parameters: pd.DataFrame,
                pp: pd.DataFrame, ladders: pd.DataFrame, inverse, book: Book) -> Path:
    b, mdl, mkt = summary["book"], summary["model"], summary["market"]
    mc = summary["valuation"]["monte_carlo"]
    fr = summary["valuation"]["fourier"]
    page = Page(f"Sensitivities: {b['name']}")
    if b["description"]:
        page.add_paragraph(b["description"])
    page.add_key_values({
        "book": f"{b['name']} ({b['n_positions']} positions, currency {b['currency']}, "
                f"multiplier {b['multiplier']:g})",
        "spot source": b["spot_source"] or "-",
        "model": f"{mdl['name']}: " + ", ".join(f"{k}={v:g}" for k, v in mdl["params"].items()),
        "market": f"spot {mkt['spot']:,.2f} USD, rate {mkt['rate']:.2%}, div {mkt['div']:.2%}",
        "European options": ("-" if fr is None else
                             f"Fourier ({fr['method']}, {fr['n_terms']} terms, one pricer)"),
        "Monte Carlo": (f"{b['n_monte_carlo']} positions, {mc['n_paths']:,} paths each, "
                        f"seed {mc['seed']}, key {mc['key']}; {mc['keys']}; mc_value "
                        "options " + (", ".join(f"{k}={v}" for k, v in mc["options"].items())
                                      or "default") if mc["used"] else "not used"),
        "wall time": f"{summary['wall_seconds']:.1f} s",
    })

    page.add_heading("Book totals")
    t = summary["totals"]
    total_fields = ("value_usd", "value_coin", "delta_coin", "delta_usd", "gamma_coin_1pct",
                    "vega_usd_vol_pt", "theta_usd_day", "rho_usd_pct", "vanna_coin_vol_pt",
                    "volga_usd_vol_pt2")
    page.add_html(html_table([t], [c for c in _GREEK_COLUMNS if c.key in total_fields]))
    page.add_paragraph(
        "Sums over the positions. Delta in coins (dV/dS) and USD (dV/dS x spot); gamma as the "
        "change of the coin delta for a 1% spot move; vega per vol point of a parallel shift "
        f"of the model's vol inputs ({', '.join(mdl['vol_inputs'])} "
        "on their square root for variances); theta per calendar day passed (spot, vol and "
        "rates held); rho per 1% of the USD rate (the forward moves with it).", note=True)

    page.add_heading("Tornado: the P&L of a typical move of each input")
    page.add_image("tornado.png", alt="tornado chart of input sensitivities",
                   caption="Bars: first-order P&L (derivative x move) of the down and up "
                           "moves, largest first; markers: full revaluation.")
    page.add_html(html_table(parameters, [
        Column("rank", fmt="d"), Column("input"), Column("value", fmt=".6g"),
        Column("move"), Column("down_to", "down to", fmt=".6g"),
        Column("up_to", "up to", fmt=".6g"), Column("per_unit", "dV/dx per unit", fmt=",.6g"),
        Column("first_order_down", "1st order down", fmt=",.2f"),
        Column("first_order_up", "1st order up", fmt=",.2f"),
        Column("full_down", "full down", fmt=",.2f"), Column("full_up", "full up", fmt=",.2f"),
    ], caption="Book P&L in USD"))
    page.add_paragraph(
        "Typical moves: spot +-5% relative; vol +-5 vol points; rate and div +-1%; variances "
        "+-5 vol points on their square root; kappa, xi, sigma_j, eta1, eta2 +-25%; lam "
        "+-50%; rho +-0.10; mu_j +-0.02; p +-0.05; clipped to each parameter's domain. The "
        "vol input is the parallel shift of the vol inputs, so it overlaps the variance "
        "parameters.", note=True)

    page.add_heading("P&L ladders: where the linear view breaks")
    page.add_image("ladders.png", alt="P&L ladders",
                   caption="Full revaluation of the book against the first-order (gradient) "
                           "and second-order (gradient and Hessian diagonal) Taylor "
                           "predictions from autodiff.")
    for name, grp in ladders.groupby("input", sort=False):
        unit = grp["unit"].iloc[0]
        page.add_html(html_table(grp, [
            Column("bump", unit, fmt="+.4g"), Column("full_pnl", "full P&L", fmt=",.2f"),
            Column("first_order_pnl", "1st order", fmt=",.2f"),
            Column("second_order_pnl", "2nd order", fmt=",.2f"),
            Column("first_order_error", "full - 1st", fmt=",.2f"),
            Column("second_order_error", "full - 2nd", fmt=",.2f"),
        ], caption=f"{name} ladder (USD)"))

    page.add_heading("Greeks per position")
    page.add_html(html_table(positions, _GREEK_COLUMNS))
    page.add_paragraph(
        "Premium-adjusted delta (inverse options): dV/dS - V/S, the coin delta of an account "
        "that books the premium in coin.", note=True)

    page.add_heading("Parameter sensitivities per position")
    inputs = [c for c in pp.columns if c.endswith("_move")]
    page.add_html(html_table(pp, [Column("position", "#", fmt="d"), Column("name")] + [
        Column(c, c[:-5], fmt=",.2f") for c in inputs],
        caption="First-order P&L (USD) of each input's typical up move; per-unit "
                "derivatives are in position_parameters.csv"))

    if inverse:
        page.add_heading("Inverse (coin-settled) options: premiums in coin and USD")
        rows = positions[positions["settlement"].eq("inverse")
                         & positions["type"].isin(["european", "digital", "asian", "barrier",
                                                   "lookback"])].copy()
        mult = float(book.multiplier)
        rows["premium_usd"] = rows["value_usd"] / (rows["quantity"] * mult)
        rows["premium_coin"] = rows["premium_usd"] / mkt["spot"]
        page.add_html(html_table(rows, [
            Column("position", "#", fmt="d"), Column("name"),
            Column("quantity", "qty", fmt=",.4g"),
            Column("premium_coin", "premium per contract (coin)", fmt=".5f"),
            Column("premium_usd", "premium per contract (USD)", fmt=",.2f"),
            Column("value_coin", "position value (coin)", fmt=",.5f"),
            Column("value_usd", "position value (USD)", fmt=",.2f"),
        ]))
        page.add_paragraph("An inverse option pays its USD payoff's worth of coin at expiry, "
                           "so its premium in coin is its USD value divided by the spot.",
                           note=True)

    page.add_paragraph("Files: " + ", ".join(summary["files"]) + ".", note=True)
    return page.write(out / "report.html")


__all__ = ["sensitivity_report", "Move", "Ladder", "TYPICAL_MOVES", "LADDERS"]
