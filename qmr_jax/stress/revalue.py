"""Full revaluation of a book under shocks: instantaneously, and along simulated horizon paths.

``StressEngine(book, model, market)`` plans the book's valuation once (one Fourier pricer for
the European options, closed forms for linear positions, Monte Carlo for path-dependent
payoffs) and exposes pure functions of a ``Shock``, usable under ``jit`` and ``vmap`` (a
sweep vmaps them over thousands of shocks):

* ``instant(shock)``: the book revalued at the shocked model and market after ``horizon``
  years of time decay: per-position USD value, P&L in USD and in coin, liquidity cost.
* ``path_pnl(shock, key, n_paths, steps)``: ``n_paths`` paths of spot (and variance) over the
  horizon, simulated under the shocked model from the shocked spot, and the book revalued at
  the horizon on each path (for Heston/Bates at the path's variance): P&L per path and
  position. ``revalue="direct"`` prices every path; ``"grid"`` prices a grid of spots and
  vols spanning the paths and interpolates (cubic Hermite in log-spot with exact slopes from
  forward-mode autodiff, cubic Lagrange in vol), far cheaper for large path counts with an
  error measured in the tests and ``benchmarks/bench_sweep.py``.

Conventions:

* P&L in USD of position ``i``: ``V_i(shocked, horizon) - V_i(base, 0) - cost_i``; in coin:
  ``V_i(shocked) / S' - V_i(base) / S - cost_i / S'`` (the change of the position's value
  measured in coin, what a coin-margined account sees).
* Positions expiring within the horizon settle at their payoff at the horizon's spot
  (European options, digitals, futures); path-dependent payoffs cannot, and a horizon past
  their expiry is refused. Horizon-path revaluation covers European and linear positions;
  path-dependent positions are revalued by Monte Carlo in instantaneous scenarios only (a
  nested simulation per path would be needed), and ``path_pnl`` refuses them by name.
* Liquidity cost (``Shock.spread``, ``impact_bps``, ``exit_fraction``), computed at the
  shocked state: ``exit_fraction * (spread * half_spread_i + impact_bps 1e-4 S' |q_i|)`` with
  the option half-spread ``max(option_half_spread_vol |vega_i|, min_option_half_spread S'
  |q_i|)`` (``vega_i`` = dV_i/d vol by forward-mode autodiff) and the linear half-spread
  ``linear_half_spread_bps[type] 1e-4 S' |q_i|``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..book import LINEAR_TYPES, Book, BookValuer
from ..models import Market
from ..simulate import BLOCK_SIZE, default_scheme, simulate_blocks
from .shocks import (
    Shock,
    canonical_shock,
    check_shock,
    is_stochastic_vol,
    shock_market,
    shock_model,
)

DEFAULT_OPTION_HALF_SPREAD_VOL = 0.005  # half a vol point each side of mid
DEFAULT_MIN_OPTION_HALF_SPREAD = 0.00025  # coin: half of Deribit's 0.0005 BTC minimum tick
DEFAULT_LINEAR_HALF_SPREAD_BPS = {"spot": 2.0, "perpetual": 0.5, "future": 1.0}
DEFAULT_GRID = (25, 7)  # log-spot nodes, vol nodes
MIN_TERMS = 128
ABSURD_PNL_FACTOR = 1e4  # |P&L| beyond this many times the book's gross exposure is absurd


class InstantResult(NamedTuple):
    """Per-position arrays ``[..., n_positions]`` of one (or a batch of) shock(s)."""

    value: jax.Array  # USD value after the shock
    pnl_usd: jax.Array  # net of liquidity cost
    pnl_coin: jax.Array
    cost: jax.Array  # liquidity cost, USD
    spot: jax.Array  # shocked spot (scalar per shock)


class PathPnL(NamedTuple):
    """P&L along horizon paths: ``pnl_usd``/``pnl_coin`` ``[n_paths, n_positions]``."""

    pnl_usd: jax.Array
    pnl_coin: jax.Array
    spot: jax.Array  # [n_paths] spot at the horizon
    variance: jax.Array | None  # [n_paths] variance at the horizon (Heston/Bates)
    cost: jax.Array  # [n_positions] liquidity cost (USD, at the shocked start)


class StressEngine:
    """A book bound to a base model and market, ready to be revalued under shocks.

    Args:
      book: the ``Book``.
      model, market: the base (e.g. calibrated) model and today's market; concrete.
      key: PRNG key of the Monte Carlo positions (required when the book has any).
      mc_paths: Monte Carlo paths per path-dependent position.
      n_terms: Lewis nodes per expiry of the European options; default twice the plan at the
        base model and at least 128, so shocked models (lower vols, shorter expiries after
        the horizon) keep the base accuracy.
      option_half_spread_vol, min_option_half_spread, linear_half_spread_bps: base
        half-spreads of the liquidity cost (see the module docstring).

    Attributes:
      base_values: ``[n_positions]`` USD values at the base point.
      labels: position labels.
      pnl_limit: USD; a revaluation beyond it (``ABSURD_PNL_FACTOR`` times the gross
        exposure, ``sum |base value| + sum |quantity| x spot``) is not a result but an
        overflow, and ``stress``/``sweep`` report it as failed.
    """

    def __init__(self, book: Book, model, market: Market, *, key=None, mc_paths: int = 20_000,
                 n_terms: int | None = None,
                 option_half_spread_vol: float = DEFAULT_OPTION_HALF_SPREAD_VOL,
                 min_option_half_spread: float = DEFAULT_MIN_OPTION_HALF_SPREAD,
                 linear_half_spread_bps: dict | None = None):
        from ..pricing.fourier import fourier_pricer

        if not isinstance(book, Book):
            raise TypeError(f"book must be a Book; got {type(book).__name__}")
        if len(book) == 0:
            raise ValueError(f"book {book.name!r} has no positions")
        model.validate()
        market.validate()
        dtype = jnp.result_type(*jax.tree_util.tree_leaves((model, market)), float)
        cast = lambda t: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), t)
        self.model, self.market, self.book = cast(model), cast(market), book
        self.dtype = dtype
        plan = BookValuer(book, self.model, self.market, key=key, n_paths=mc_paths)
        if plan.pricer is not None:
            p = plan.pricer
            n = int(n_terms) if n_terms is not None else max(MIN_TERMS, 2 * p.n_terms)
            pricer = fourier_pricer(self.model, self.market, p.strikes, p.expiries, p.is_call,
                                    method=p.method, n_terms=n)
            plan = BookValuer(book, self.model, self.market, key=key, n_paths=mc_paths,
                              _pricer=pricer)
        self.valuer = plan
        self.n_terms = None if plan.pricer is None else plan.pricer.n_terms
        pos = book.positions
        mult = float(book.multiplier)
        self.labels = list(book.labels)
        self.n_positions = len(pos)
        self.types = [p.type for p in pos]
        self.qty = np.array([p.quantity * mult for p in pos], np.float64)
        self.expiry = np.array([p.expiry if p.expiry is not None else np.inf for p in pos])
        self.strike = np.array([p.strike if p.strike is not None else 0.0 for p in pos])
        self.phi = np.array([1.0 if p.is_call or p.is_call is None else -1.0 for p in pos])
        self.cash = np.array([p.cash if getattr(p, "cash", None) is not None else 0.0
                              for p in pos])
        self.entry = np.array([p.entry if p.entry is not None else 0.0 for p in pos])
        self.is_option = np.array([p.is_option for p in pos])
        self.is_mc = np.array([p.is_mc for p in pos])
        self._code = np.array([{"european": 0, "digital": 1, "future": 2}.get(p.type, 3)
                               for p in pos])
        lin_bps = dict(DEFAULT_LINEAR_HALF_SPREAD_BPS, **(linear_half_spread_bps or {}))
        self.half_spread_bps = np.array([lin_bps.get(p.type, 0.0) if p.type in LINEAR_TYPES
                                         else 0.0 for p in pos])
        self.option_half_spread_vol = float(option_half_spread_vol)
        self.min_option_half_spread = float(min_option_half_spread)
        self.base_values = np.asarray(self.valuer(self.model, self.market, 0.0))
        if not np.all(np.isfinite(self.base_values)):
            bad = [self.labels[i] for i in np.flatnonzero(~np.isfinite(self.base_values))]
            raise ValueError(f"book {book.name!r}: non-finite base values for {bad} under "
                             f"{_describe_model(self.model)} at spot "
                             f"{float(self.market.spot):g}; the model cannot price them "
                             "(check the model's parameters)")
        gross = float(np.sum(np.abs(self.base_values))
                      + np.sum(np.abs(self.qty)) * float(self.market.spot))
        self.pnl_limit = ABSURD_PNL_FACTOR * max(gross, 1.0)
        self.sv = is_stochastic_vol(model)
        self.scheme = default_scheme(model)
        self._jit: dict = {}

    # ------------------------------------------------------------------------------------
    # checks

    def check(self, shock: Shock, *, where: str = "shock", paths: bool = False) -> Shock:
        """Validate a (possibly stacked) shock for this book and model; returns it."""
        check_shock(shock, self.model, where=where)
        try:  # the shocked market within the market's own rules (e.g. bounded rates)
            as64 = lambda x: np.asarray(x, np.float64)
            shock_market(jax.tree_util.tree_map(as64, self.market),
                         jax.tree_util.tree_map(as64, shock)).validate()
        except ValueError as exc:
            raise ValueError(f"{where}: the shocked market is out of range (rate and basis "
                             f"shocks on top of rate {float(self.market.rate):g}, div "
                             f"{float(self.market.div):g}): {exc}") from None
        h = np.max(np.asarray(shock.horizon, np.float64))
        expired = [i for i in range(self.n_positions)
                   if self.is_mc[i] and self.expiry[i] <= h]
        if expired:
            names = ", ".join(repr(self.labels[i]) for i in expired[:3])
            raise ValueError(f"{where}: horizon {365 * h:.4g} days reaches the expiry of "
                             f"path-dependent position(s) {names}; their payoff needs the "
                             "whole path: shorten the horizon or drop them")
        if paths and self.is_mc.any():
            names = ", ".join(repr(self.labels[i]) for i in np.flatnonzero(self.is_mc)[:3])
            raise ValueError(f"{where}: horizon-path revaluation covers European and linear "
                             f"positions; the book has path-dependent position(s) {names} "
                             "(revalue them in instantaneous scenarios, or drop them with "
                             "Book.with_positions)")
        return shock

    # ------------------------------------------------------------------------------------
    # pure revaluation

    def _settle(self, spot):
        """Payoff values ``[..., n_positions]`` of positions settled at ``spot``."""
        s = jnp.asarray(spot)[..., None]
        intrinsic = jnp.maximum(self.phi * (s - self.strike), 0.0)
        digital = self.cash * (self.phi * (s - self.strike) > 0)
        fut = s - self.entry
        code = self._code
        per_unit = jnp.where(code == 0, intrinsic, jnp.where(code == 1, digital,
                                                              jnp.where(code == 2, fut, 0.0)))
        return self.qty * per_unit

    def value_at(self, model, market: Market, elapsed):
        """USD values ``[n_positions]`` at a (shocked) state after ``elapsed`` years; positions
        expiring by then are settled at the state's spot."""
        live = self.valuer(model, market, elapsed)
        if not np.all(np.isinf(self.expiry)):
            settled = self._settle(market.spot)
            live = jnp.where(self.expiry > elapsed, live, settled)
        return live

    def liquidity_cost(self, shock: Shock, model_s, market_s):
        """USD cost ``[n_positions]`` of closing out at the shocked state."""
        s = market_s.spot
        notional = s * jnp.abs(self.qty)

        def val(dv):
            m = shock_model(self.model, shock._replace(vol=shock.vol + dv))
            return self.value_at(m, market_s, shock.horizon)

        if self.is_option.any() and not self.is_mc.any():
            _, vega = jax.jvp(val, (jnp.zeros((), self.dtype),), (jnp.ones((), self.dtype),))
        elif self.is_option.any():  # MC positions: vega of the Europeans only (cost of MC
            # positions from the minimum half-spread), to avoid differentiating Monte Carlo
            vega = jnp.zeros(self.n_positions, self.dtype)
            if self.valuer.pricer is not None:
                _, vega = jax.jvp(val, (jnp.zeros((), self.dtype),),
                                  (jnp.ones((), self.dtype),))
                vega = jnp.where(self.is_mc, 0.0, vega)
        else:
            vega = jnp.zeros(self.n_positions, self.dtype)
        opt_hs = jnp.maximum(self.option_half_spread_vol * jnp.abs(vega),
                             self.min_option_half_spread * notional)
        half = jnp.where(self.is_option, opt_hs, self.half_spread_bps * 1e-4 * notional)
        return shock.exit_fraction * (shock.spread * half + shock.impact_bps * 1e-4 * notional)

    def instant(self, shock: Shock) -> InstantResult:
        """Revalue under one shock (pure; ``jax.vmap`` it over a stacked shock)."""
        model_s, market_s = shock_model(self.model, shock), shock_market(self.market, shock)
        value = self.value_at(model_s, market_s, shock.horizon)
        cost = self.liquidity_cost(shock, model_s, market_s)
        s0, s1 = self.market.spot, market_s.spot
        pnl = value - self.base_values - cost
        coin = value / s1 - self.base_values / s0 - cost / s1
        return InstantResult(value, pnl, coin, cost, s1)

    def simulate_horizon(self, shock: Shock, key, n_paths: int, steps: int):
        """Spot (and variance) at the horizon on ``n_paths`` paths: ``(spot, variance)``."""
        model_s, market_s = shock_model(self.model, shock), shock_market(self.market, shock)
        n_blocks = -(-int(n_paths) // BLOCK_SIZE)
        dtype = self.dtype
        dt = jnp.asarray(shock.horizon, dtype) / steps
        dts = jnp.full((steps,), 1.0, dtype) * dt
        times = dt * jnp.arange(1, steps + 1, dtype=dtype)
        slots = jnp.asarray([-1] * (steps - 1) + [0], jnp.int32)
        spot, var = simulate_blocks(model_s, market_s, key, jnp.asarray(0, jnp.int32), dts,
                                    times, slots, scheme=self.scheme, n_blocks=n_blocks,
                                    antithetic=False, record="full", n_obs=1)
        spot = spot[:n_paths, 0] * jnp.exp(shock.drift * shock.horizon)
        var = None if var is None else var[:n_paths, 0]
        return spot, var

    def _direct(self, model_s, market_s, h, spot, var):
        def one(s, v):
            m = model_s._replace(v0=v) if self.sv else model_s
            return self.value_at(m, market_s._replace(spot=s), h)

        v = var if var is not None else jnp.zeros_like(spot)
        return jax.vmap(one)(spot, v)

    def _grid(self, model_s, market_s, h, spot, var, grid):
        nx, ns = grid
        x = jnp.log(spot)
        x_lo, x_hi = jnp.min(x), jnp.max(x)
        span = jnp.maximum(x_hi - x_lo, 1e-6)
        hx = span / (nx - 1)
        xs = x_lo + hx * jnp.arange(nx, dtype=x.dtype)

        if self.sv:
            sig = jnp.sqrt(jnp.maximum(var, 0.0))
            s_lo, s_hi = jnp.min(sig), jnp.max(sig)
            hs = jnp.maximum(s_hi - s_lo, 1e-8) / (ns - 1)
            ss = s_lo + hs * jnp.arange(ns, dtype=x.dtype)
            model_b = model_s._replace(v0=(ss * ss)[:, None])
        else:
            ns, sig, s_lo, hs = 1, None, 0.0, 1.0
            model_b = model_s

        def at(xv):  # the whole vol x spot grid in one batched valuation: [ns, nx, n_pos]
            return self.valuer.batch(model_b, market_s._replace(spot=jnp.exp(xv)[None, :]), h)

        vals, slopes = jax.jvp(at, (xs,), (jnp.ones_like(xs),))
        live = self.expiry > h  # settled positions are replaced by their exact payoff later
        vals, slopes = jnp.where(live, vals, 0.0), jnp.where(live, slopes, 0.0)
        # vals, slopes: [ns, nx, n_pos]
        u = (x - x_lo) / hx
        ix = jnp.clip(jnp.floor(u), 0, nx - 2).astype(jnp.int32)
        t = jnp.clip(u - ix, 0.0, 1.0)[:, None]
        h00 = 2 * t**3 - 3 * t**2 + 1
        h10 = t**3 - 2 * t**2 + t
        h01 = -2 * t**3 + 3 * t**2
        h11 = t**3 - t**2

        def herm(j):  # [n_paths, n_pos] at vol node j ([n_paths] int)
            return (h00 * vals[j, ix] + h10 * hx * slopes[j, ix]
                    + h01 * vals[j, ix + 1] + h11 * hx * slopes[j, ix + 1])

        if ns == 1:
            return herm(jnp.zeros_like(ix))
        us = (sig - s_lo) / hs
        k = min(4, ns)
        j0 = jnp.clip(jnp.floor(us).astype(jnp.int32) - (k // 2 - 1), 0, ns - k)
        r = (us - j0)[:, None]  # position in node units relative to j0
        out = 0.0
        for a in range(k):
            w = 1.0
            for b in range(k):
                if b != a:
                    w = w * (r - b) / (a - b)
            out = out + w * herm(j0 + a)
        return out

    def path_pnl(self, shock: Shock, key, n_paths: int, steps: int, *, revalue: str = "grid",
                 grid=DEFAULT_GRID) -> PathPnL:
        """P&L ``[n_paths, n_positions]`` at the horizon along simulated paths (pure)."""
        if revalue not in ("grid", "direct"):
            raise ValueError(f"revalue must be 'grid' or 'direct'; got {revalue!r}")
        model_s, market_s = shock_model(self.model, shock), shock_market(self.market, shock)
        spot, var = self.simulate_horizon(shock, key, n_paths, steps)
        h = shock.horizon
        if revalue == "direct":
            values = self._direct(model_s, market_s, h, spot, var)
        else:
            values = self._grid(model_s, market_s, h, spot, var, tuple(grid))
            if not np.all(np.isinf(self.expiry)):  # settled payoffs exactly, not interpolated
                values = jnp.where(self.expiry > h, values, self._settle(spot))
        cost = self.liquidity_cost(shock, model_s, market_s)
        pnl = values - self.base_values - cost
        coin = values / spot[:, None] - self.base_values / self.market.spot \
            - cost / spot[:, None]
        return PathPnL(pnl, coin, spot, var, cost)

    # ------------------------------------------------------------------------------------
    # eager conveniences

    def revalue(self, shock: Shock, *, where: str = "shock") -> InstantResult:
        """``instant`` for one concrete shock, validated (errors name ``where``) and jitted;
        one compiled program serves every shock (``canonical_shock``)."""
        self.check(shock, where=where)
        fn = self._jit.setdefault("instant", jax.jit(self.instant))
        return fn(_as_dtype(canonical_shock(shock, self.model), self.dtype))

    def revalue_many(self, shocks: Shock, *, where: str = "shocks") -> InstantResult:
        """``instant`` over a stack of concrete shocks (leaves ``[n]``), validated, vmapped and
        jitted. The stack is padded to a power of two (16 to 256; beyond, a multiple of 256)
        so that stacks of different lengths (e.g. historical replays) share a few compiled
        programs; results are ``[n, ...]``."""
        self.check(shocks, where=where)
        shocks = canonical_shock(shocks, self.model)
        n = int(np.size(shocks.spot)) if np.ndim(shocks.spot) else 1
        if any(np.ndim(x) > 1 or (np.ndim(x) == 1 and np.size(x) != n)
               for x in jax.tree_util.tree_leaves(shocks)):
            raise ValueError(f"{where}: every shock field needs the same length {n}")
        size = max(16, 1 << (n - 1).bit_length()) if n <= 256 else -(-n // 256) * 256
        idx = np.minimum(np.arange(size), n - 1)  # pad with the last shock
        padded = jax.tree_util.tree_map(
            lambda x: jnp.asarray(np.broadcast_to(np.asarray(x, np.float64), (n,))[idx],
                                  self.dtype), shocks)
        fn = self._jit.setdefault("instant_many", jax.jit(jax.vmap(self.instant)))
        return jax.tree_util.tree_map(lambda x: x[:n], fn(padded))

    def paths(self, shock: Shock, key, n_paths: int, steps: int, *, revalue: str = "auto",
              grid=DEFAULT_GRID, where: str = "shock") -> PathPnL:
        """``path_pnl`` for one concrete shock, validated and jitted; ``revalue="auto"``
        prices every path directly up to 4096 paths and on the grid above."""
        self.check(shock, paths=True, where=where)
        if not float(shock.horizon) > 0:
            raise ValueError("horizon paths need shock.horizon > 0")
        _check_count("n_paths", n_paths, 2)
        _check_count("steps", steps, 1)
        if revalue == "auto":
            revalue = "direct" if n_paths <= 4096 else "grid"
        name = ("paths", int(n_paths), int(steps), revalue, tuple(grid))
        fn = self._jit.get(name)
        if fn is None:
            fn = jax.jit(lambda s, k: self.path_pnl(s, k, int(n_paths), int(steps),
                                                    revalue=revalue, grid=tuple(grid)))
            self._jit[name] = fn
        return fn(_as_dtype(canonical_shock(shock, self.model), self.dtype), key)


def _describe_model(model) -> str:
    return f"{type(model).__name__}(" + ", ".join(
        f"{k}={float(v):g}" for k, v in model._asdict().items()) + ")"


def _as_dtype(shock: Shock, dtype) -> Shock:
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), shock)


def _check_count(name, n, lo):
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {n!r}")


def horizon_steps(horizon_years: float, per_day: float = 1.0) -> int:
    """Default number of steps over a horizon: ``per_day`` a day, at least 1."""
    return max(1, math.ceil(float(horizon_years) * 365.0 * per_day - 1e-9))


__all__ = ["StressEngine", "InstantResult", "PathPnL", "horizon_steps",
           "DEFAULT_OPTION_HALF_SPREAD_VOL", "DEFAULT_LINEAR_HALF_SPREAD_BPS"]
