"""The calibration problem as arrays: quotes on a padded expiry x strike grid, residuals.

A chain becomes ``Quotes``: unique expiries (rows) and, per expiry, its strikes as a fraction
of that expiry's forward (columns), padded to a common width with zero weight. Option prices
depend on the forward only through ``K/F`` (every model here is homogeneous of degree one),
so pricing at unit forward with no discounting reproduces the chain's Black-76 implied vols
whatever the per-expiry forwards and rates are, and the characteristic function is evaluated
once per expiry. Grid sizes are rounded up to buckets about 1.25x apart (``bucket``) so that
consecutive snapshots of a market, with a few quotes more or less, reuse one compiled
calibration. A padding slot repeats a real quote of its expiry (the lowest strike; a padding
expiry repeats the last one) with weight zero: it adds nothing to the loss and leaves every
expiry's strike range, hence the pricer's planned geometry, as it is.
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
from .programs import bucket

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
                 shape: tuple[int, int] | None = None, *,
                 log=None) -> tuple[Quotes, np.ndarray]:
    """``Quotes`` of a chain and the ``[n_e, n_k]`` position of each chain row (row order).

    ``shape`` pads to a given grid (for batches); by default the expiries are rounded up to
    ``bucket(n, 4)`` and the strikes per expiry to ``bucket(n, 16)``. Padding slots repeat
    the lowest-strike quote of their expiry (a padding expiry the last expiry's quotes) with
    weight 0 and no bid or ask. ``log`` as in ``calibrate`` (the Black-76 prices of the grid
    are a compiled program).
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
    n_e, n_k = (bucket(len(expiries), 4), bucket(int(counts.max()), 16)) if shape is None \
        else shape
    if n_e < len(expiries) or n_k < counts.max():
        raise ValueError(f"grid {shape} too small for {len(expiries)} expiries x "
                         f"{counts.max()} strikes")
    # the chain row behind every slot: itself, else its expiry's lowest strike (col 0), and
    # the last expiry's row for the padding expiries
    source = np.empty((n_e, n_k), np.int64)
    source[:len(expiries)] = order[starts][:, None]
    source[row, col] = np.arange(len(t))
    source[len(expiries):] = source[len(expiries) - 1]
    real = np.zeros((n_e, n_k), bool)
    real[row, col] = True

    def grid(values, fill, dtype=np.float64):
        """Real values in their slots; ``fill`` (or, with ``fill=None``, the source row's
        value) in the padding."""
        g = np.asarray(values, dtype)[source]
        return g if fill is None else np.where(real, g, fill)

    exp_pad = np.concatenate([expiries, np.full(n_e - len(expiries), expiries[-1])])
    mid = chain["mid_iv"].to_numpy(np.float64)
    bid = chain["bid_iv"].to_numpy(np.float64)
    ask = chain["ask_iv"].to_numpy(np.float64)
    is_call = chain["is_call"].to_numpy(bool)
    q = dict(
        expiries=exp_pad, k=grid(k, None), is_call=grid(is_call, None, bool),
        mid_iv=grid(mid, None), bid_iv=grid(np.where(np.isfinite(bid), bid, np.nan), np.nan),
        ask_iv=grid(np.where(np.isfinite(ask), ask, np.nan), np.nan), weight=grid(w, 0.0),
    )
    texp = np.broadcast_to(q["expiries"][:, None], (n_e, n_k))
    sign = np.where(q["is_call"], 1.0, -1.0)
    with jax.enable_x64(True):
        mid_price = _black_grid(q["k"], texp, q["mid_iv"], sign, log)
        if loss == "price_spread":
            lo = _black_grid(q["k"], texp, np.nan_to_num(q["bid_iv"]), sign, log)
            hi = _black_grid(q["k"], texp, np.nan_to_num(q["ask_iv"], nan=0.0), sign, log)
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


def _black_unit_forward(k, texp, vols, sign):
    return _black_core(1.0, k, texp, vols, sign, 1.0)


def _black_grid(k, texp, vols, sign, log=None) -> np.ndarray:
    """Undiscounted unit-forward Black-76 prices on a quote grid (one program per grid)."""
    from .programs import run

    args = tuple(np.asarray(a, np.float64) for a in (k, texp, vols, sign))
    return np.asarray(run("black grid", _black_unit_forward, args,
                          what=f"Black-76 prices on a {k.shape[0]} x {k.shape[1]} grid",
                          log=log, quick_compile=True))


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
