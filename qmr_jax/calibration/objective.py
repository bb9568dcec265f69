"""The calibration problem as arrays: quotes on a padded expiry x strike grid, residuals.

A chain becomes ``Quotes``: unique expiries (rows) and, per expiry, its strikes as a fraction
of that expiry's forward (columns), padded to a common width with zero weight. Option prices
depend on the forward only through ``K/F`` (every model here is homogeneous of degree one),
so pricing at unit forward with no discounting reproduces the chain's Black-76 implied vols
whatever the per-expiry forwards and rates are, and the characteristic function is evaluated
once per expiry. Grid sizes are rounded up to a few buckets so that consecutive snapshots of
a market reuse one compiled calibration.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..models import Market
from ..pricing.black import _black_core, _implied_vol_cjvp
from ..pricing.fourier import _fourier_core

REQUIRED_COLUMNS = ("expiry_years", "strike", "is_call", "forward", "bid_iv", "ask_iv", "mid_iv")
LOSSES = ("iv", "price_vega", "price_spread")
WEIGHTINGS = ("uniform", "spread", "vega")


class Quotes(NamedTuple):
    """A chain on a padded ``[n_expiries, n_strikes]`` grid (all arrays but ``expiries``)."""

    expiries: jax.Array  # [n_e] years
    k: jax.Array  # strike / forward (1.0 on padding)
    is_call: jax.Array  # bool
    mid_iv: jax.Array
    bid_iv: jax.Array
    ask_iv: jax.Array
    weight: jax.Array  # 0 on padding; mean 1 over real quotes
    mid_price: jax.Array  # Black-76 at mid_iv, unit forward, undiscounted
    scale: jax.Array  # residual divisor of the price losses (unit vega or unit spread)


def _bucket(n: int, step: int) -> int:
    return max(step, -(-n // step) * step)


def check_chain(chain: pd.DataFrame, what: str = "chain") -> None:
    """Clear errors for tables that cannot be calibrated to."""
    if not isinstance(chain, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame (e.g. qmr.data.load_deribit(...)); "
                        f"got {type(chain).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in chain.columns]
    if missing:
        raise ValueError(f"{what} is missing column(s) {', '.join(missing)}; an option chain "
                         f"needs {', '.join(REQUIRED_COLUMNS)}")
    if len(chain) == 0:
        raise ValueError(f"{what} has no quotes")
    for col in ("expiry_years", "strike", "forward", "mid_iv"):
        v = pd.to_numeric(chain[col], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what} row {chain.index[i]!r}, field {col!r}: "
                             f"{chain[col].iloc[i]!r} must be finite and positive")
    bid = chain["bid_iv"].to_numpy(np.float64)
    ask = chain["ask_iv"].to_numpy(np.float64)
    crossed = np.isfinite(bid) & np.isfinite(ask) & (bid > ask)
    if crossed.any():
        i = int(np.flatnonzero(crossed)[0])
        raise ValueError(f"{what} row {chain.index[i]!r}, fields 'bid_iv'/'ask_iv': crossed "
                         f"quote ({bid[i]!r} > {ask[i]!r}); clean the chain first "
                         "(qmr.data.clean_chain)")


def quote_weights(chain: pd.DataFrame, weights) -> np.ndarray:
    """Per-quote weights, normalised to mean 1."""
    n = len(chain)
    if weights is None or (isinstance(weights, str) and weights == "uniform"):
        w = np.ones(n)
    elif isinstance(weights, str):
        if weights == "spread":
            spread = (chain["ask_iv"] - chain["bid_iv"]).to_numpy(np.float64)
            floor = np.nanmedian(spread) * 0.25 if np.isfinite(spread).any() else 0.01
            spread = np.where(np.isfinite(spread), np.maximum(spread, floor), np.nan)
            w = 1.0 / spread**2
            w = np.where(np.isfinite(w), w, np.nanmin(w) if np.isfinite(w).any() else 1.0)
        elif weights == "vega":
            if "vega" not in chain.columns:
                raise ValueError("weights='vega' needs a 'vega' column in the chain")
            w = chain["vega"].to_numpy(np.float64)
        else:
            raise ValueError(f"weights must be one of {WEIGHTINGS} or an array; got {weights!r}")
    else:
        w = np.asarray(weights, np.float64)
        if w.shape != (n,):
            raise ValueError(f"weights has shape {w.shape}; the chain has {n} quotes")
    if not np.all(np.isfinite(w) & (w >= 0)) or not np.any(w > 0):
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w / w.mean()


def build_quotes(chain: pd.DataFrame, weights=None, loss: str = "iv",
                 shape: tuple[int, int] | None = None) -> tuple[Quotes, np.ndarray]:
    """``Quotes`` of a chain and the ``[n_e, n_k]`` position of each chain row (row order).

    ``shape`` pads to a given grid (for batches); by default the grid is rounded up to a
    multiple of 4 expiries and 16 strikes.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    t = chain["expiry_years"].to_numpy(np.float64)
    k = chain["strike"].to_numpy(np.float64) / chain["forward"].to_numpy(np.float64)
    w = quote_weights(chain, weights)
    expiries, row = np.unique(t, return_inverse=True)
    order = np.lexsort((k, row))
    col = np.empty(len(t), np.int64)
    counts = np.bincount(row, minlength=len(expiries))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col[order] = np.arange(len(t)) - np.repeat(starts, counts)
    n_e, n_k = (_bucket(len(expiries), 4), _bucket(int(counts.max()), 16)) if shape is None \
        else shape
    if n_e < len(expiries) or n_k < counts.max():
        raise ValueError(f"grid {shape} too small for {len(expiries)} expiries x "
                         f"{counts.max()} strikes")

    def grid(values, fill, dtype=np.float64):
        g = np.full((n_e, n_k), fill, dtype)
        g[row, col] = values
        return g

    exp_pad = np.concatenate([expiries, np.full(n_e - len(expiries), expiries[-1])])
    mid = chain["mid_iv"].to_numpy(np.float64)
    bid = chain["bid_iv"].to_numpy(np.float64)
    ask = chain["ask_iv"].to_numpy(np.float64)
    is_call = chain["is_call"].to_numpy(bool)
    q = dict(
        expiries=exp_pad, k=grid(k, 1.0), is_call=grid(is_call, True, bool),
        mid_iv=grid(mid, 0.5), bid_iv=grid(np.where(np.isfinite(bid), bid, np.nan), np.nan),
        ask_iv=grid(np.where(np.isfinite(ask), ask, np.nan), np.nan), weight=grid(w, 0.0),
    )
    texp = q["expiries"][:, None]
    sign = np.where(q["is_call"], 1.0, -1.0)
    with jax.enable_x64(True):
        mid_price = np.asarray(_black_core(1.0, q["k"], texp, q["mid_iv"], sign, 1.0))
        if loss == "price_spread":
            lo = np.asarray(_black_core(1.0, q["k"], texp, np.nan_to_num(q["bid_iv"]), sign, 1.0))
            hi = np.asarray(_black_core(1.0, q["k"], texp, np.nan_to_num(q["ask_iv"], nan=0.0),
                                        sign, 1.0))
            scale = hi - lo
            real = q["weight"] > 0
            if np.any(real & ~(scale > 0)):
                bad = np.flatnonzero((~(scale > 0))[row, col])[0]
                raise ValueError(f"loss='price_spread' needs a bid and an ask on every quote; "
                                 f"row {chain.index[bad]!r} has bid_iv={bid[bad]!r}, "
                                 f"ask_iv={ask[bad]!r}")
            scale = np.where(real, scale, 1.0)
        else:
            x = np.log(q["k"])
            s = q["mid_iv"] * np.sqrt(texp)
            d = -x / s + 0.5 * s
            scale = np.exp(-0.5 * d * d) / np.sqrt(2.0 * np.pi) * np.sqrt(texp)  # unit vega
    quotes = Quotes(mid_price=mid_price, scale=scale, **q)
    return quotes, np.stack([row, col], axis=1)


def model_prices(model, quotes: Quotes, n_terms: int, truncation, log_tol, geometry=None):
    """Undiscounted unit-forward prices on the quote grid (Lewis pricer).

    ``geometry`` (the Lewis control variate's variance and trapezoid period per expiry, from
    ``plan_geometry``) is derived from ``model`` when not given; the calibration loop fixes
    it at the round's starting point, which keeps the characteristic function's cumulant
    and moment analysis out of the differentiated loop.
    """
    dtype = quotes.k.dtype
    model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), model)
    one = jnp.ones((), dtype)
    return _fourier_core(model, Market(one, 0.0 * one, 0.0 * one), quotes.k,
                         quotes.expiries[:, None], quotes.is_call, "lewis", n_terms,
                         truncation, log_tol, geometry)


def plan_geometry(model, quotes: Quotes, truncation, log_tol):
    """Lewis geometry and, per expiry, the nodes the tolerance needs (concrete inputs)."""
    from ..pricing.fourier import _plan

    one = jnp.ones((), quotes.k.dtype)
    model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, quotes.k.dtype), model)
    return _plan(model, Market(one, 0.0 * one, 0.0 * one), jnp.asarray(quotes.k),
                 jnp.asarray(quotes.expiries)[:, None], truncation, log_tol, "lewis")


def model_ivs(prices, quotes: Quotes):
    sign = jnp.where(quotes.is_call, 1.0, -1.0).astype(prices.dtype)
    one = jnp.ones_like(prices)
    t = jnp.broadcast_to(quotes.expiries[:, None], prices.shape)
    return _implied_vol_cjvp(prices, one, quotes.k, t, sign, one)


def residuals(prices, quotes: Quotes, loss: str, mid_iv=None):
    """Weighted residual vector (flattened grid); ``mid_iv`` overrides the quotes' mids."""
    mid = quotes.mid_iv if mid_iv is None else mid_iv
    sw = jnp.sqrt(quotes.weight)
    if loss == "iv":
        r = model_ivs(prices, quotes) - mid
    else:
        if mid_iv is None:
            target = quotes.mid_price
        else:
            sign = jnp.where(quotes.is_call, 1.0, -1.0).astype(prices.dtype)
            target = _black_core(1.0, quotes.k, quotes.expiries[:, None], mid, sign, 1.0)
        r = (prices - target) / quotes.scale
    return (sw * r).reshape(-1)
