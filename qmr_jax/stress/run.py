"""Named scenarios end to end: ``stress(book, model, market, scenarios, key=...)``.

Each scenario is revalued by its kind:

* ``instant``: full revaluation at the shocked model and market after the horizon
  (``StressEngine.instant``);
* ``path``: ``n_paths`` horizon paths under the shocked model, the book revalued on each
  (``StressEngine.paths``); the P&L distribution gives VaR/ES with standard errors, set
  beside the historical-simulation VaR/ES at the same horizon (the real spot moves of the
  whole history applied to today's book; ``historical_comparison``);
* ``historical``: the real spot path of the episode (``qmr_jax.data.spot``) applied to
  today's spot, close by close, with a vol shift growing linearly to its end value
  (``vol = "realized"``: ``vol_beta`` times the rise of realised vol from the
  ``window_days`` before the episode to the episode itself); the P&L at every close, the
  final one and the worst.

The ``worst`` column is the lowest total P&L of a scenario: over the paths of a path
scenario, and over the closes of a historical replay after its anchor (the anchor is today's
book unshocked, P&L 0 by construction, so it is left out; ``worst_at`` is the close where
the lowest P&L occurs). Instantaneous scenarios have no ``worst``.

Every row's status is ``"ok"`` only when all its numbers are finite and within the engine's
``pnl_limit``; otherwise it is ``"error: ..."`` with the reason, and its numbers are left out.
Shocked parameters clamped into the model's domain (``shocks.shock_model``) are listed in
the row's ``notes``.

Scenario ``s`` draws its paths from ``jax.random.fold_in(key, crc32(s.name) or s.seed)``: its
numbers do not depend on which other scenarios run with it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import jax
import numpy as np
import pandas as pd

from .. import progress as _progress
from . import risk
from .revalue import StressEngine
from .scenarios import Scenario
from .shocks import NotApplicable, Shock, describe, domain_notes, stack_shocks
from .sweeps import engine_gross_usd

DEFAULT_LEVELS = (0.95, 0.99, 0.999)


@dataclass
class StressRun:
    """Results of ``stress``: ``table`` (one row per scenario), ``positions`` (scenario x
    position USD P&L), ``replays`` (per historical scenario, the P&L at every close) and
    ``meta`` (book, currency, model, market, ``base_value_usd``, ``gross_usd`` (the book's
    gross exposure, ``sweeps.engine_gross_usd``), key, levels)."""

    table: pd.DataFrame
    positions: pd.DataFrame
    replays: dict[str, pd.DataFrame] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def scenario_key(key, scenario: Scenario):
    """The key of a scenario's paths: ``fold_in(key, seed or crc32(name))``."""
    salt = scenario.seed if scenario.seed is not None else zlib.crc32(scenario.name.encode())
    return jax.random.fold_in(key, salt & 0x7FFFFFFF), salt & 0x7FFFFFFF


def replay_shocks(scenario: Scenario, currency: str, *, data_dir=None):
    """``(path_table, stacked Shock)`` of a historical scenario: one shock per close."""
    from ..data import spot as spot_data

    h = dict(scenario.historical or {})
    start, end = h.get("start"), h.get("end")
    if "episode" in h and (start is None or end is None):
        ep = spot_data.episode(h["episode"])
        start, end = start or ep.start, end or ep.end
    cur = h.get("currency", currency)
    hist = spot_data.load_spot_history(cur, source=h.get("source"), data_dir=data_dir)
    path = spot_data.episode_path(hist, start, end)
    if h.get("vol", "realized") == "realized":
        rv = spot_data.realized_vol(hist, start, end, window_days=h.get("window_days", 30))
        vol_end = h.get("vol_beta", 0.5) * (rv["during"] - rv["before"])
    else:
        rv, vol_end = None, float(h["vol"])
    t = path["t_years"].to_numpy(np.float64)
    frac = t / t[-1] if t[-1] > 0 else np.ones_like(t)
    base = scenario.shock
    shocks = [base._replace(spot=float(r), horizon=float(tt),
                            vol=float(base.vol) + vol_end * float(f))
              for r, tt, f in zip(path["cum_return"].to_numpy(), t, frac, strict=True)]
    path = path.assign(vol_shift=[float(s.vol) for s in shocks])
    path.attrs.update({"realized_vol": rv, "vol_end": vol_end, "currency": cur,
                       "start": str(start), "end": str(end)})
    return path, stack_shocks(shocks)


HISTORICAL_WINDOW_DAYS = None
"""Daily returns behind the historical-simulation comparison: ``None`` for the whole history
(BTC from 2017 in the shared data, so that week-long horizons still have a 95% tail of
non-overlapping moves), or the most recent that many."""


def _history_returns(currency: str, data_dir, window: int | None):
    """The daily log returns of ``currency``, the last ``window`` of them when given
    (``(None, reason)`` when the spot history is unavailable)."""
    from ..data import spot as spot_data

    try:
        hist = spot_data.load_spot_history(currency, data_dir=data_dir)
    except (FileNotFoundError, ValueError) as exc:
        return None, str(exc)
    r = spot_data.log_returns(hist)
    return (r if window is None else r.iloc[-window:]), None


def historical_comparison(engine: StressEngine, returns, horizon_days: int, levels):
    """Historical-simulation VaR/ES of the book at a horizon: today's book revalued at
    ``horizon_days`` of time decay under each real (non-overlapping) ``horizon_days`` spot
    move of ``returns``, model otherwise unshocked (``risk.historical_var_es``). Returns the
    ``HistoricalRisk``, or ``None`` when the window holds too few moves for every level."""
    h = int(horizon_days)
    lv = _levels_for(len(returns) // h, levels)
    if not lv:
        return None

    def pnl(r):
        r = np.asarray(r, np.float64)
        sh = Shock(spot=np.expm1(r), horizon=np.full(r.shape, h / 365.0))
        return np.asarray(engine.revalue_many(sh, where="historical comparison").pnl_usd
                          ).sum(axis=1)

    return risk.historical_var_es(pnl, returns, lv, horizon_days=h)


_IDENT = ("scenario", "kind", "description", "source", "dates", "status", "shock", "notes",
          "hist_window", "worst_at")


def _unusable(row: dict, positions, limit: float) -> str | None:
    """Why a scenario's numbers cannot be reported (non-finite, or beyond ``limit`` USD in
    absolute value), or ``None``."""
    values = {k: v for k, v in row.items() if k not in _IDENT and isinstance(v, int | float)}
    if positions is not None:
        values.update({f"position {j}": float(v) for j, v in enumerate(np.ravel(positions))})
    for k, v in values.items():
        if not np.isfinite(v):
            return f"{k} is not finite ({v}); the revaluation failed"
        if k.endswith("_coin") or k in ("n_paths", "steps", "seed", "hist_n",
                                        "horizon_days", "spot_after"):
            continue
        if abs(v) > limit:
            return (f"{k} = {v:.4g} USD is absurd for this book (beyond {limit:.3g}, "
                    "10^4 times its gross exposure); an overflow, not a result")
    return None


def _levels_for(n_paths: int, levels) -> tuple[float, ...]:
    return tuple(a for a in levels if int(np.floor(n_paths * (1.0 - a) + 1e-9)) >= risk.MIN_TAIL)


def _note(row: dict, note: str | None) -> None:
    if note:
        row["notes"] = "; ".join(x for x in (row.get("notes"), note) if x)


def _clamp_note(engine: StressEngine, s: Scenario) -> str | None:
    """The parameters a scenario's shock pushes out of the model's domain (clamped)."""
    try:
        notes = np.ravel(domain_notes(engine.model, s.shock))
    except (TypeError, KeyError):  # fields the model lacks: reported by the check
        return None
    found = sorted({str(x) for x in notes if x})
    return f"clamped into the model's domain: {'; '.join(found)}" if found else None


def stress(book, model, market, scenarios, *, key, n_paths: int | None = None,
           levels=DEFAULT_LEVELS, engine: StressEngine | None = None, data_dir=None,
           mc_key=None, on_error: str = "record", progress=None,
           historical: bool = True) -> StressRun:
    """Revalue ``book`` under each of ``scenarios`` (see the module docstring).

    Args:
      book, model, market: the book, the base (calibrated) model and today's market.
      scenarios: ``Scenario`` objects (``load_scenarios``).
      key: PRNG key of the horizon paths.
      n_paths: override the path scenarios' own ``n_paths``.
      levels: VaR/ES levels of path scenarios (levels with fewer than ``risk.MIN_TAIL``
        tail samples for the path count are left out and listed in ``notes``).
      engine: a ready ``StressEngine`` (default: built here; ``mc_key`` keys its Monte Carlo
        positions, default ``fold_in(key, 2**31 - 1)``).
      data_dir: market data folder of the historical replays.
      on_error: ``"record"`` (default) puts a scenario's error in its ``status`` column
        (``"error: ..."``; a scenario the model cannot express, e.g. a jump-intensity shock
        under Heston, is ``"n/a: ..."``, see ``NotApplicable``) and
        goes on; ``"raise"`` stops.
      progress: ``True`` (stderr) or a text stream: a progress display
        (``qmr_jax.progress.Progress``): a bar on a terminal, and a line per scenario with
        its status, its time, the total elapsed time and the ETA; ``None`` (default) or
        ``False``: none; any other callable is called as ``progress(i, n, name)`` before
        each scenario.
      historical: for each path scenario, also the historical-simulation VaR/ES at its
        horizon (``historical_comparison`` on the daily returns of the book's currency,
        ``HISTORICAL_WINDOW_DAYS``) as ``hist_var*``/``hist_es*`` columns, when the spot
        history is available (else a note).

    Returns:
      ``StressRun``.
    """
    if on_error not in ("record", "raise"):
        raise ValueError(f"on_error must be 'record' or 'raise'; got {on_error!r}")
    if engine is None:
        mk = mc_key if mc_key is not None else jax.random.fold_in(key, 2**31 - 1)
        shown = progress is True or hasattr(progress, "write")
        with _progress.activity(f"stress: valuing the book ({len(book)} positions)",
                                progress if shown else None):
            engine = StressEngine(book, model, market, key=mk if book.has_mc else None)
    scenarios = list(scenarios)
    bar = _progress.progress_for(progress, len(scenarios), "stress", unit="scenario",
                                 item_lines=True)
    call = progress if bar is None and callable(progress) else None
    try:
        rows, pos_rows, replays = _run(book, engine, scenarios, key=key, n_paths=n_paths,
                                       levels=levels, data_dir=data_dir, on_error=on_error,
                                       historical=historical, bar=bar, call=call)
    finally:
        if bar is not None:
            bar.close()
    table = pd.DataFrame(rows).set_index("scenario")
    positions = pd.DataFrame.from_dict(pos_rows, orient="index", columns=engine.labels)
    positions.index.name = "scenario"
    key_data = np.asarray(jax.random.key_data(key)).ravel().tolist()
    meta = {"book": book.name, "currency": book.currency,
            "model": {"type": type(engine.model).__name__,
                      **{k: float(v) for k, v in engine.model._asdict().items()}},
            "market": {k: float(v) for k, v in engine.market._asdict().items()},
            "base_value_usd": float(np.sum(engine.base_values)),
            "gross_usd": engine_gross_usd(engine), "key": key_data,
            "levels": list(levels)}
    return StressRun(table, positions, replays, meta)


def replay_worst(totals) -> int:
    """The index of the worst (lowest) total P&L of a replay, its anchor (index 0: today's
    book unshocked) left out; 0 only when the replay has no later close."""
    totals = np.asarray(totals, np.float64)
    if totals.size <= 1:
        return 0
    return 1 + int(np.argmin(totals[1:]))


def _run(book, engine, scenarios, *, key, n_paths, levels, data_dir, on_error, historical,
         bar, call):
    """The scenario loop of ``stress``: ``(rows, position rows, replays)``."""
    rows, pos_rows, replays = [], {}, {}
    returns_cache = None
    for i, s in enumerate(scenarios):
        if call is not None:
            call(i, len(scenarios), s.name)
        if bar is not None:
            bar.start(s.name)
        row = {"scenario": s.name, "kind": s.kind, "description": s.description,
               "source": s.source, "dates": s.dates, "status": "ok"}
        try:
            _note(row, _clamp_note(engine, s))
            if s.kind == "instant":
                r = engine.revalue(s.shock, where=s.where)
                pnl = np.asarray(r.pnl_usd)
                row.update(shock=describe(s.shock), horizon_days=365 * s.horizon,
                           spot_after=float(r.spot), pnl_usd=float(pnl.sum()),
                           pnl_coin=float(np.sum(r.pnl_coin)), cost=float(np.sum(r.cost)))
                pos_rows[s.name] = pnl
            elif s.kind == "path":
                k, salt = scenario_key(key, s)
                n = int(n_paths or s.n_paths)
                lv = _levels_for(n, levels)
                p = engine.paths(s.shock, k, n, s.n_steps(), where=s.where)
                total = np.asarray(p.pnl_usd).sum(axis=1)
                row.update(shock=describe(s.shock), horizon_days=365 * s.horizon,
                           n_paths=n, steps=s.n_steps(), seed=salt,
                           pnl_usd=float(total.mean()),
                           pnl_coin=float(np.asarray(p.pnl_coin).sum(axis=1).mean()),
                           cost=float(np.sum(p.cost)), worst=float(total.min()))
                if lv:
                    est = risk.var_es(total, lv)
                    for j, a in enumerate(lv):
                        tag = f"{100 * a:g}".replace(".", "")
                        row[f"var{tag}"] = float(est.var[j])
                        row[f"var{tag}_se"] = float(est.var_stderr[j])
                        row[f"es{tag}"] = float(est.es[j])
                        row[f"es{tag}_se"] = float(est.es_stderr[j])
                skipped = [a for a in levels if a not in lv]
                if skipped:
                    _note(row, f"levels {skipped} need >= {risk.MIN_TAIL} tail samples; "
                          f"{n} paths are too few")
                pos_rows[s.name] = np.asarray(p.pnl_usd).mean(axis=0)
                if historical:
                    if returns_cache is None:
                        returns_cache = _history_returns(book.currency, data_dir,
                                                         HISTORICAL_WINDOW_DAYS)
                    rets, why = returns_cache
                    hd = max(1, int(round(365 * s.horizon)))
                    hr = None if rets is None else historical_comparison(engine, rets, hd,
                                                                         levels)
                    if hr is not None:
                        for j, a in enumerate(hr.levels):
                            tag = f"{100 * a:g}".replace(".", "")
                            row[f"hist_var{tag}"] = float(hr.var[j])
                            row[f"hist_es{tag}"] = float(hr.es[j])
                            row[f"hist_es{tag}_se"] = float(hr.es_stderr[j])
                        row["hist_n"] = int(hr.n)
                        row["hist_window"] = f"{hr.start.date()}..{hr.end.date()}"
                    else:
                        _note(row, f"no historical comparison: {why}" if rets is None else
                              f"no historical comparison: {len(rets) // hd} {hd}-day moves "
                              "are too few")
            else:
                path, shocks = replay_shocks(s, book.currency, data_dir=data_dir)
                res = engine.revalue_many(shocks, where=s.where)
                totals = np.asarray(res.pnl_usd).sum(axis=1)
                rep = path.assign(pnl_usd=totals,
                                  pnl_coin=np.asarray(res.pnl_coin).sum(axis=1),
                                  spot_replayed=np.asarray(res.spot))
                replays[s.name] = rep
                w = replay_worst(totals)
                row.update(shock=(f"replay {path.attrs['start']}..{path.attrs['end']}: spot "
                                  f"{path['cum_return'].iloc[-1]:+.1%}, vol "
                                  f"{100 * path.attrs['vol_end']:+.1f} vp"),
                           horizon_days=365 * float(path["t_years"].iloc[-1]),
                           spot_after=float(res.spot[-1]), pnl_usd=float(totals[-1]),
                           pnl_coin=float(rep["pnl_coin"].iloc[-1]),
                           cost=float(np.asarray(res.cost)[-1].sum()),
                           worst=float(totals[w]), worst_at=_when(path.index[w]))
                pos_rows[s.name] = np.asarray(res.pnl_usd)[-1]
            why = _unusable(row, pos_rows.get(s.name), engine.pnl_limit)
            if why is not None:
                if on_error == "raise":
                    raise FloatingPointError(f"{s.where}: {why}")
                row = {k: v for k, v in row.items() if k in _IDENT}
                row["status"] = f"error: {why}"
                pos_rows.pop(s.name, None)
                replays.pop(s.name, None)
        except NotApplicable as exc:
            if on_error == "raise":
                raise
            row["status"] = f"n/a: {exc}"
        except (ValueError, FileNotFoundError, KeyError) as exc:
            if on_error == "raise":
                raise
            row["status"] = f"error: {exc}"
        rows.append(row)
        if bar is not None:
            bar.advance(item=s.name, status=str(row["status"]).split(":")[0])
    return rows, pos_rows, replays


def _when(t) -> str:
    """A close time as text: ``2022-11-09`` at midnight UTC, else ``2022-11-09 08:00``."""
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return str(ts.date()) if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")


__all__ = ["stress", "StressRun", "replay_shocks", "scenario_key", "historical_comparison",
           "HISTORICAL_WINDOW_DAYS", "Shock", "replay_worst"]
