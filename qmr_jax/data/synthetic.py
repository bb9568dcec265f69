"""Synthetic Deribit-like option chains priced by a known model: a market with a known truth.

``synthetic_chain`` lists a Deribit-like calendar of expiries and grid of round strikes, prices
every quote with the model's characteristic function (``fourier_price``, Lewis method) and
returns the normalised option-chain table of the Deribit loader (the columns of
``CHAIN_COLUMNS`` in that order, with the loader's dtypes), so calibration, reports and
backtests can be run on it and checked against the parameters that generated it
(``chain.attrs["synthetic"]``).

Conventions are Deribit's, as in ``qmr_jax.data.deribit``: inverse options (premiums in coin
= USD premium / forward), Black-76 on the forward with no discounting, ACT/365 time to the
08:00 UTC expiry. The forward is ``spot * exp(basis * T)`` (``basis`` annualised).

Quotes: the mark is the model price and ``mark_iv`` its Black-76 implied vol (the "true" IV).
The quoted mid vol is the true IV plus optional Gaussian noise, and bid/ask are priced by
Black-76 at the mid vol -/+ a half-spread in vol (Deribit-like by default,
``default_half_spread_iv``). Without tick rounding ``bid_iv``, ``ask_iv`` and ``mid_iv`` are
these vols themselves: in a noise-free chain ``mid_iv`` *is* the model IV (to the accuracy of
the Fourier price, ~1e-12), not the IV of the average of the bid and ask prices, which
differs by the convexity of price in vol (for the default spreads, a median 2e-5 and up to
5e-3 in the far wings, where the spread is widest). With ``tick`` the bid
and ask prices are rounded outwards to the tick and every IV is recomputed from the rounded
prices exactly as the loader does (``mid_iv`` = IV of the mid price).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import jax
import numpy as np
import pandas as pd

from . import deribit as _deribit
from .deribit import CHAIN_COLUMNS, clean_chain

__all__ = [
    "synthetic_chain",
    "deribit_expiries",
    "deribit_strikes",
    "default_half_spread_iv",
]

_YEAR_SECONDS = 365.0 * 86400.0
_EXPIRY_HOUR = 8  # Deribit options expire at 08:00 UTC
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_NICE = (1.0, 2.0, 2.5, 5.0, 10.0)

# The default strike grid: within 1, 2 and max_z total standard deviations of the forward,
# round steps of about sd / _STEP_DIVISOR, twice and five times that (each rounded up to a
# 1-2-2.5-5 number); near-money step at least spot / _MIN_STEP_DIVISOR (500 at 60k), unless a
# tiny vol needs finer strikes to list _MIN_STRIKES; at most _MAX_STRIKES per expiry.
_STEP_DIVISOR = 10.0
_MIN_STEP_DIVISOR = 120.0
_MIN_STRIKES = 9
_MAX_STRIKES = 60

# Rounding of prices to the tick: a relative guard against 3e-4 / 1e-4 = 2.9999999999999996.
_TICK_GUARD = 1e-9


# ------------------------------------------------------------------------------------------
# calendar


def _utc(when, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(when)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a time (string or timestamp); got {when!r}") from exc
    if ts is pd.NaT:
        raise ValueError(f"{what} must be a time; got {when!r}")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.as_unit("us")


def _last_friday(year: int, month: int) -> pd.Timestamp:
    end = pd.Timestamp(year=year, month=month, day=1, tz="UTC") + pd.offsets.MonthEnd(0)
    return end - pd.Timedelta(days=(end.day_of_week - 4) % 7)


def deribit_expiries(snapshot, *, n_daily: int = 3, n_weekly: int = 4, n_monthly: int = 3,
                     quarterly_days: float = 400.0) -> pd.DatetimeIndex:
    """A Deribit-like calendar of option expiries (08:00 UTC) after ``snapshot``.

    The union, sorted and without duplicates, of: the next ``n_daily`` 08:00 UTC times; the
    next ``n_weekly`` Fridays; the last Fridays of the next ``n_monthly`` months whose last
    Friday is still ahead; the last Fridays of March, June, September and December within
    ``quarterly_days`` of the snapshot (four or five quarterlies: about a year). "Next" means
    strictly after the snapshot.

    Args:
      snapshot: the snapshot time (string or timestamp; naive times are UTC).
      n_daily, n_weekly, n_monthly: how many daily, weekly and monthly expiries.
      quarterly_days: horizon of the quarterly expiries, in days.

    Returns:
      A ``DatetimeIndex`` (UTC, microseconds), increasing.

    Examples:
      >>> from qmr_jax.data import deribit_expiries
      >>> days = deribit_expiries("2026-03-02T09:00:00Z")
      >>> " ".join(d.strftime("%d%b%y") for d in days[:7])
      '03Mar26 04Mar26 05Mar26 06Mar26 13Mar26 20Mar26 27Mar26'
      >>> " ".join(d.strftime("%d%b%y") for d in days[7:])
      '24Apr26 29May26 26Jun26 25Sep26 25Dec26 26Mar27'
    """
    snap = _utc(snapshot, "snapshot")
    first = snap.normalize() + pd.Timedelta(hours=_EXPIRY_HOUR)
    if first <= snap:
        first += pd.Timedelta(days=1)
    days = [first + pd.Timedelta(days=i) for i in range(n_daily)]
    friday = first + pd.Timedelta(days=(4 - first.day_of_week) % 7)
    fridays = [friday + pd.Timedelta(weeks=i) for i in range(n_weekly)]
    months, year, month = [], snap.year, snap.month
    quarters = []
    horizon = snap + pd.Timedelta(days=quarterly_days)
    while len(months) < n_monthly or _last_friday(year, month) + pd.Timedelta(
            hours=_EXPIRY_HOUR) <= horizon:
        expiry = _last_friday(year, month) + pd.Timedelta(hours=_EXPIRY_HOUR)
        if expiry > snap:
            if len(months) < n_monthly:
                months.append(expiry)
            if month % 3 == 0 and expiry <= horizon:
                quarters.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    out = pd.DatetimeIndex(sorted(set(days + fridays + months + quarters)))
    return out.as_unit("us")


def _expiry_table(snap: pd.Timestamp, expiries):
    """``(expiry timestamps, expiry_years)`` for the default calendar or the user's list."""
    if expiries is None:
        stamps = deribit_expiries(snap)
        years = (stamps - snap).total_seconds().to_numpy() / _YEAR_SECONDS
        return stamps, years
    if isinstance(expiries, str | numbers.Number | pd.Timestamp) or not np.iterable(expiries):
        expiries = [expiries]
    expiries = list(expiries)
    if not expiries:
        raise ValueError("expiries is empty: pass None for the Deribit-like calendar, or year "
                         "fractions or expiry times")
    stamps, years = [], []
    for i, e in enumerate(expiries):
        if isinstance(e, numbers.Real) and not isinstance(e, bool):
            t = float(e)
            if not (math.isfinite(t) and t > 0):
                raise ValueError(f"expiries[{i}] must be a finite positive year fraction; "
                                 f"got {e!r}")
            # ACT/365: the timestamp is the nearest microsecond; expiry_years keeps t exactly
            stamps.append(snap + pd.Timedelta(microseconds=round(t * _YEAR_SECONDS * 1e6)))
            years.append(t)
        else:
            ts = _utc(e, f"expiries[{i}]")
            if ts <= snap:
                raise ValueError(f"expiries[{i}] = {ts} is not after the snapshot {snap}")
            stamps.append(ts)
            years.append((ts - snap).total_seconds() / _YEAR_SECONDS)
    years = np.asarray(years, np.float64)
    order = np.argsort(years, kind="stable")
    years = years[order]
    if np.any(np.diff(years) == 0):
        i = int(np.flatnonzero(np.diff(years) == 0)[0])
        raise ValueError(f"expiries lists the expiry {years[i]!r} years twice")
    stamps = pd.DatetimeIndex([stamps[i] for i in order]).as_unit("us")
    return stamps, years


# ------------------------------------------------------------------------------------------
# strikes


def _nice_up(x: float) -> float:
    """The smallest ``{1, 2, 2.5, 5} x 10^k`` not below ``x``."""
    e = math.floor(math.log10(x))
    for m in _NICE:
        v = m * 10.0**e
        if v >= x * (1 - 1e-12):
            return float(f"{v:.12g}")
    raise AssertionError("unreachable")


def _nice_down(x: float) -> float:
    """The largest ``{1, 2, 2.5, 5} x 10^k`` not above ``x``."""
    e = math.floor(math.log10(x))
    for m in reversed(_NICE):
        v = m * 10.0**e
        if v <= x * (1 + 1e-12):
            return float(f"{v:.12g}")
    return float(f"{5.0 * 10.0 ** (e - 1):.12g}")


def _nice_near(x: float) -> float:
    """The ``{1, 2, 2.5, 5} x 10^k`` nearest to ``x`` in ratio."""
    lo, hi = _nice_down(x), _nice_up(x)
    return lo if x * x <= lo * hi else hi


def _band_strikes(forward: float, total_sd: float, near_step: float, max_z: float):
    """Multiples of ``near_step`` within 1 sd of the forward, of about 2x it to 2 sd and 5x it
    to ``max_z`` sd; below the forward the wider steps shrink with the strike level (a USD
    step spans more log-moneyness there), never below ``near_step``."""
    edges = (0.0, 1.0, min(2.0, max_z), max_z)
    out = []
    for side in (-1.0, 1.0):
        for mult, lo, hi in zip((1.0, 2.0, 5.0), edges[:-1], edges[1:], strict=True):
            if hi <= lo:
                continue
            level = math.exp(-lo * total_sd) if side < 0 else 1.0
            step = near_step if mult == 1.0 else max(near_step,
                                                     _nice_up(mult * near_step * level))
            k_lo, k_hi = sorted(forward * math.exp(side * z * total_sd) for z in (lo, hi))
            k = step * np.arange(max(1.0, math.ceil(k_lo / step)), math.floor(k_hi / step) + 1)
            x = side * np.log(k / forward)
            inside = (x <= hi * total_sd) & ((x > lo * total_sd) if lo > 0 else (x >= 0))
            out.append(k[inside])
    return np.unique(np.concatenate(out))


def deribit_strikes(forward: float, total_sd: float, *, spot: float | None = None,
                    max_z: float = 4.0) -> np.ndarray:
    """A Deribit-like grid of round strikes for one expiry.

    Strikes are multiples of a round near-money step within one total standard deviation
    ``total_sd`` (of ``log(S_T/F)``) of the forward, of about twice that step out to two
    standard deviations and of about five times it out to ``max_z`` (steps are 1-2-2.5-5
    numbers; below the forward the wider steps shrink with the strike level, so the put wing
    is not left empty). The near-money step is the 1-2-2.5-5 number nearest
    ``forward * total_sd / 10`` and at least ``spot / 120`` rounded up (500 for BTC at 60,000,
    20 for ETH at 2,000); it is refined when that would list fewer than 9 strikes (very low
    vol) and coarsened beyond 60. A BTC expiry at 50% vol gets about 12 strikes at one day,
    about 20 at one week and 30-60 from one month on (the 1-2-2.5-5 steps make the count jump
    between expiries, as on Deribit).

    Args:
      forward: the expiry's forward (USD).
      total_sd: standard deviation of ``log(S_T/F)`` (e.g. ``sqrt(c2)`` from
        ``qmr_jax.cumulants``, or ``iv * sqrt(T)``).
      spot: sets the smallest near-money step (default: ``forward``).
      max_z: half-width of the grid in standard deviations of log-moneyness.

    Returns:
      Increasing positive strikes (float64).
    """
    if not (math.isfinite(forward) and forward > 0):
        raise ValueError(f"forward must be a finite positive price; got {forward!r}")
    if not (math.isfinite(total_sd) and total_sd > 0):
        raise ValueError(f"total_sd must be a finite positive standard deviation; got "
                         f"{total_sd!r}")
    if not (math.isfinite(max_z) and max_z > 0):
        raise ValueError(f"max_z must be finite and positive; got {max_z!r}")
    spot = forward if spot is None else float(spot)
    step = max(_nice_near(forward * total_sd / _STEP_DIVISOR), _nice_up(spot / _MIN_STEP_DIVISOR))
    strikes = _band_strikes(forward, total_sd, step, max_z)
    for _ in range(64):
        if len(strikes) > _MAX_STRIKES:
            step = _nice_up(step * 1.01)
        elif len(strikes) < _MIN_STRIKES:
            step = _nice_down(step * 0.99)
        else:
            break
        strikes = _band_strikes(forward, total_sd, step, max_z)
    return strikes


def _even_strikes(forward: float, total_sd: float, n: int, max_z: float) -> np.ndarray:
    """``n`` strikes evenly spaced in log-moneyness over ``+-max_z`` sd, rounded to a step."""
    if n == 1:
        return np.asarray([forward])
    x = np.linspace(-max_z * total_sd, max_z * total_sd, n)
    k = forward * np.exp(x)
    step = _nice_down(float(np.min(np.diff(k))) / 4.0)
    return np.unique(np.maximum(np.round(k / step), 1.0) * step)


# ------------------------------------------------------------------------------------------
# spreads, open interest, names


def default_half_spread_iv(log_moneyness, expiry_years, iv):
    """Deribit-like bid/ask half-spread in implied vol (decimal).

    ``(0.001 + 0.0011 / sqrt(T)) * (1 + 0.3 z^2)``, capped at 0.05, with
    ``z = log(K/F) / (iv sqrt(T))``: about 0.013 at three days, 0.005 at one month, 0.002 at
    one year at the money (the medians of BTC quotes on 2026-04-01), three to five times wider
    two to four standard deviations out. The cap keeps quotes inside the cleaning rules'
    ``max_spread_iv`` (0.15 full spread).
    """
    t = np.asarray(expiry_years, np.float64)
    z = np.asarray(log_moneyness, np.float64) / (np.asarray(iv, np.float64) * np.sqrt(t))
    return np.minimum(0.05, (0.001 + 0.0011 / np.sqrt(t)) * (1.0 + 0.3 * z * z))


def _open_interest(z, t):
    """Deterministic, plausible open interest and 24h volume (contracts)."""
    bell = np.exp(-0.5 * z * z)
    oi = np.round(10.0 + 2500.0 * bell * (0.2 + 0.8 * np.sqrt(np.minimum(t, 0.25) / 0.25)), 1)
    volume = np.round(oi * (0.02 + 0.3 * np.exp(-12.0 * t)), 1)
    return oi, volume


def _strike_text(k: float) -> str:
    if float(k).is_integer():
        return str(int(k))
    return f"{k:.10g}".replace(".", "d")


def _instrument_names(currency, stamps, strikes, is_call):
    day = {ts: f"{ts.day}{_MONTHS[ts.month - 1]}{ts.year % 100:02d}" for ts in set(stamps)}
    return np.asarray([f"{currency}-{day[ts]}-{_strike_text(k)}-{'C' if c else 'P'}"
                       for ts, k, c in zip(stamps, strikes, is_call, strict=True)], object)


# ------------------------------------------------------------------------------------------
# checks


def _positive_float(name, value, *, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        rule = "finite and >= 0" if allow_zero else "finite and > 0"
        raise ValueError(f"{name} must be {rule}; got {value!r}")
    return v


def _scalar_model(model):
    fields = getattr(model, "_fields", None)
    if fields is None or not hasattr(model, "log_cf") or not hasattr(model, "validate"):
        raise TypeError("model must be a qmr_jax model (GBM, Merton, Kou, Heston, Bates); got "
                        f"{type(model).__name__}")
    model.validate()
    params = {}
    for f in fields:
        v = np.asarray(getattr(model, f), np.float64)
        if v.ndim:
            raise ValueError(f"synthetic_chain prices one model: {type(model).__name__}.{f} "
                             f"must be a scalar; got shape {v.shape}")
        params[f] = float(v)
    return type(model)(**params), params


def _key_info(key):
    """``(key, seed, key data as a list of ints)``; an int key is a seed."""
    if key is None:
        return None, None, None
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key)), int(key), None
    try:
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            data = jax.random.key_data(key)
        else:
            data = key
        data = np.asarray(data)
    except (AttributeError, TypeError) as exc:
        raise TypeError(f"key must be a jax PRNG key (or an int seed); got {key!r}") from exc
    if data.dtype != np.uint32 or data.ndim != 1:
        raise TypeError(f"key must be a single jax PRNG key (or an int seed); got {key!r}")
    return key, None, [int(v) for v in data]


# ------------------------------------------------------------------------------------------
# the chain


def _bucket(n: int, least: int) -> int:
    """``n`` rounded up to a power of two, at least ``least``: chains of different sizes share
    compiled pricing and implied-vol functions instead of compiling each their own (the
    padding costs far less than a compilation)."""
    return max(least, 1 << (int(n) - 1).bit_length())


# least padded sizes: quotes (implied vols, Black prices), expiries and strikes per expiry
_LEAST_QUOTES, _LEAST_EXPIRIES, _LEAST_STRIKES = 1024, 16, 128


def _padded(n, least, *arrays):
    """Each array (same length ``n``) padded to ``_bucket(n, least)`` with its first entry."""
    extra = _bucket(n, least) - n
    return [np.concatenate([a, np.repeat(a[:1], extra)]) for a in arrays]


def _implied_vols(usd, fwd, k, t, call):
    """``deribit._implied_vols`` (status included) on bucket-padded arrays."""
    n = len(usd)
    vols, status = _deribit._implied_vols(*_padded(n, _LEAST_QUOTES, usd, fwd, k, t, call))
    return vols[:n], status[:n]


def _black_coin(fwd, k, t, vols, call):
    """Black-76 prices in coin (undiscounted price / forward)."""
    from ..pricing.black import black_price

    n = len(fwd)
    usd = black_price(*_padded(n, _LEAST_QUOTES, fwd, k, t, vols, call))
    return np.asarray(usd, np.float64)[:n] / fwd


def _model_prices(model, spot, basis, expiry_index, years, strikes, is_call, tol):
    """USD prices of the quotes; the characteristic function is evaluated once per expiry.

    The quotes go in an ``(expiries, strikes)`` grid, padded to bucketed sizes (with
    at-the-money calls and repeats of the first expiry, whose prices are discarded).
    """
    from ..models import Market
    from ..pricing.fourier import fourier_price

    n_exp = len(years)
    counts = np.bincount(expiry_index, minlength=n_exp)
    width = _bucket(int(counts.max()), _LEAST_STRIKES)
    slot = np.arange(len(strikes)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[expiry_index]
    (t_grid,) = _padded(n_exp, _LEAST_EXPIRIES, years)
    fwd = spot * np.exp(basis * t_grid)
    grid_k = np.repeat(fwd[:, None], width, axis=1)
    grid_c = np.ones(grid_k.shape, bool)
    grid_k[expiry_index, slot] = strikes
    grid_c[expiry_index, slot] = is_call
    prices = fourier_price(model, Market(spot, 0.0, -basis), grid_k, t_grid[:, None], grid_c,
                           method="lewis", tol=tol)
    return np.asarray(prices, np.float64)[expiry_index, slot]


def _total_sd(model, years):
    from ..models import cumulants

    n = len(years)
    c2 = np.asarray(cumulants(model, _padded(n, _LEAST_EXPIRIES, years)[0], orders=(2,))[0])[:n]
    if not np.all(np.isfinite(c2) & (c2 > 0)):
        i = int(np.flatnonzero(~(np.isfinite(c2) & (c2 > 0)))[0])
        raise ValueError(f"{type(model).__name__}: the variance of log(S_T/F) at T = "
                         f"{years[i]!r} is {c2[i]!r}; cannot place strikes")
    return np.sqrt(c2)


def synthetic_chain(
    model,
    *,
    spot: float = 60000.0,
    currency: str = "BTC",
    snapshot="2026-03-02T09:00:00Z",
    expiries: Sequence | None = None,
    strikes_per_expiry: int | Sequence[float] | None = None,
    basis: float = 0.0,
    noise_iv: float = 0.0,
    half_spread_iv: float | Callable | None = None,
    tick: float | None = None,
    key=None,
    otm_only: bool = True,
    clean: bool = True,
    fourier_tol: float = 1e-13,
) -> pd.DataFrame:
    """A Deribit-like option chain priced by ``model``: the loader's table with a known truth.

    Every quote is priced by ``fourier_price`` (Lewis, to ``fourier_tol`` per unit forward) on
    the forward ``spot * exp(basis * T)`` with no discounting; ``mark_*`` is that model price,
    ``mark_iv`` its Black-76 implied vol. The quoted mid vol is ``mark_iv + noise`` with
    ``noise ~ N(0, noise_iv^2)`` independently per quote; ``bid_iv``/``ask_iv`` are the mid vol
    -/+ the half-spread (the bid vol is floored at half the mid vol) and ``bid_*``/``ask_*``
    their Black-76 prices. Without ``tick`` the IV columns are these vols themselves, so a
    noise-free chain has ``mid_iv == mark_iv ==`` the model IV (not the IV of the mid price,
    see the module docstring). With ``tick`` bids are rounded down and asks up to the tick, a
    bid below one tick becomes NaN (no bid), and bid/ask/mid IVs are recomputed from the
    rounded prices as the loader computes them (``mid_iv`` = IV of the mid price).

    Args:
      model: a single model (``GBM``, ``Merton``, ``Kou``, ``Heston``, ``Bates``; scalar
        parameters), validated.
      spot: spot index (USD).
      currency: the coin, used in ``currency`` and the instrument names (tick size in the
        cleaning rules: ``deribit.TICK``).
      snapshot: the snapshot time (naive times are UTC).
      expiries: ``None`` for a Deribit-like calendar (``deribit_expiries``: three dailies,
        four weeklies, three monthlies, quarterlies to about a year), or a list of year
        fractions (ACT/365; ``expiry_years`` keeps them exactly and ``expiry`` is the nearest
        microsecond) and/or expiry times.
      strikes_per_expiry: ``None`` for a Deribit-like grid of round strikes per expiry out to
        four standard deviations of ``log(S_T/F)`` (``sqrt(c2)`` of ``qmr_jax.cumulants``;
        see ``deribit_strikes``); an int ``n`` for ``n`` strikes evenly spaced in
        log-moneyness over those four standard deviations (rounded to a round step); or a
        list of strikes used at every expiry.
      basis: annualised forward basis (the forward is ``spot * exp(basis * T)``).
      noise_iv: standard deviation of the mid-vol noise (decimal vol); needs ``key``.
      half_spread_iv: bid/ask half-spread in vol: ``None`` for ``default_half_spread_iv``, a
        number, or a function ``f(log_moneyness, expiry_years, true_iv)`` of arrays. Must be
        positive.
      tick: coin tick for rounding bid (down) and ask (up), e.g. ``deribit.TICK["BTC"]``
        (1e-4); ``None`` for exact prices.
      key: ``jax.random`` key (or an int seed) for the noise; the noise is drawn with
        ``jax.random.fold_in(key, 0)``, one normal per row in the table's order.
      otm_only: list only out-of-the-money quotes (puts at or below the forward, calls at or
        above); otherwise a call and a put at every strike.
      clean: apply ``clean_chain`` with the default ``CleaningRules`` (drops the expiries under
        two days and quotes whose bid is under one Deribit tick, i.e. far wings).
      fourier_tol: target absolute price error per unit forward of ``fourier_price``.

    Returns:
      A DataFrame with the columns of ``CHAIN_COLUMNS``, in that order, one row per quote,
      sorted by expiry, strike and put before call. ``attrs["synthetic"]`` records the truth
      and the settings: ``model`` (type name), ``params`` (field -> float), ``spot``,
      ``basis``, ``currency``, ``snapshot``, ``noise_iv``, ``half_spread_iv``, ``tick``,
      ``seed``/``key`` (key data as ints), ``fourier_tol``, ``otm_only``, ``n_expiries``,
      ``n_quotes`` (before cleaning), ``n_unpriceable`` (quotes left out because the model
      price had no Black-76 implied vol, normally 0) and ``mid_iv`` (the convention).
      With ``clean``, ``attrs["cleaning"]`` summarises the cleaning.

    Raises:
      ValueError: invalid model parameters, non-positive spot, negative noise, noise without
        a key, empty or non-positive expiries, bad strikes, tick or spread.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import qmr_jax as qmr
      >>> from qmr_jax.data import synthetic_chain
      >>> truth = qmr.Heston(v0=0.25, kappa=2.0, theta=0.3, xi=1.0, rho=-0.3)
      >>> chain = synthetic_chain(truth, expiries=[30 / 365, 0.5], strikes_per_expiry=11)
      >>> chain.attrs["synthetic"]["params"]["rho"]
      -0.3
      >>> bool((chain["mid_iv"] == chain["mark_iv"]).all())  # noise-free: the model IV
      True
      >>> noisy = synthetic_chain(truth, noise_iv=0.005, tick=1e-4, key=jax.random.key(7))
    """
    model, params = _scalar_model(model)
    spot = _positive_float("spot", spot)
    try:
        basis = float(basis)
    except (TypeError, ValueError):
        raise ValueError(f"basis must be a number; got {basis!r}") from None
    if not math.isfinite(basis):
        raise ValueError(f"basis must be finite; got {basis!r}")
    noise_iv = _positive_float("noise_iv", noise_iv, allow_zero=True)
    fourier_tol = _positive_float("fourier_tol", fourier_tol)
    tick = None if tick is None else _positive_float("tick", tick)
    if not (isinstance(currency, str) and currency.isalnum()):
        raise ValueError(f"currency must be a coin name such as 'BTC'; got {currency!r}")
    if half_spread_iv is not None and not callable(half_spread_iv):
        _positive_float("half_spread_iv", half_spread_iv)
    key, seed, key_data = _key_info(key)
    if noise_iv > 0 and key is None:
        raise ValueError(f"noise_iv={noise_iv!r} needs a key (jax.random.key(...)) so the noise "
                         "is reproducible")
    snap = _utc(snapshot, "snapshot")
    stamps, years = _expiry_table(snap, expiries)
    forwards = spot * np.exp(basis * years)

    with jax.enable_x64(True):
        sds = _total_sd(model, years)
        strike_sets = _strike_sets(strikes_per_expiry, forwards, sds, spot)
        # the quotes: per expiry, per strike, put before call (the loader's order)
        e_idx, k, call = [], [], []
        for i, ks in enumerate(strike_sets):
            for want_call in (False, True):
                keep = np.ones(len(ks), bool)
                if otm_only:
                    keep = ks >= forwards[i] if want_call else ks <= forwards[i]
                e_idx.append(np.full(int(keep.sum()), i))
                k.append(ks[keep])
                call.append(np.full(int(keep.sum()), want_call))
        e_idx, k, call = (np.concatenate(a) for a in (e_idx, k, call))
        order = np.lexsort((call, k, e_idx))
        e_idx, k, call = e_idx[order], k[order], call[order]
        t, fwd = years[e_idx], forwards[e_idx]

        model_usd = _model_prices(model, spot, basis, e_idx, years, k, call, fourier_tol)
        true_iv, status = _implied_vols(model_usd, fwd, k, t, call)
        ok = (status == 0) & (true_iv > 0) & np.isfinite(true_iv)
        n_unpriceable = int((~ok).sum())
        if not ok.any():
            raise ValueError(f"{type(model).__name__}{tuple(params.values())}: no quote has a "
                             "Black-76 implied vol (prices outside the no-arbitrage bounds)")
        e_idx, k, call, t, fwd = e_idx[ok], k[ok], call[ok], t[ok], fwd[ok]
        model_usd, true_iv = model_usd[ok], true_iv[ok]
        x = np.log(k / fwd)

        mid_iv = true_iv
        if noise_iv > 0:
            normal = jax.random.normal(jax.random.fold_in(key, 0), (len(k),), np.float64)
            # floored at a twentieth of the true vol: noise never makes a vol non-positive
            mid_iv = np.maximum(true_iv + noise_iv * np.asarray(normal), 0.05 * true_iv)
        half = _half_spreads(half_spread_iv, x, t, true_iv)
        bid_iv = np.maximum(mid_iv - half, 0.5 * mid_iv)
        ask_iv = mid_iv + half

        bid_coin = _black_coin(fwd, k, t, bid_iv, call)
        ask_coin = _black_coin(fwd, k, t, ask_iv, call)
        mark_coin = model_usd / fwd
        statuses = {side: np.zeros(len(k), np.int32) for side in ("bid", "ask", "mark")}
        if tick is not None:
            bid_coin = np.floor(bid_coin / tick * (1 + _TICK_GUARD)) * tick
            ask_coin = np.ceil(ask_coin / tick * (1 - _TICK_GUARD)) * tick
            bid_coin = np.where(bid_coin >= tick * (1 - _TICK_GUARD), bid_coin, np.nan)
            vols = {}
            bid_usd, ask_usd = bid_coin * fwd, ask_coin * fwd  # as the loader: usd = coin x F
            for side, usd in (("bid", bid_usd), ("ask", ask_usd),
                              ("mid", 0.5 * (bid_usd + ask_usd))):
                v, code = _implied_vols(usd, fwd, k, t, call)
                vols[side] = np.where(code == 0, v, np.nan)
                if side != "mid":
                    statuses[side] = code
            bid_iv, ask_iv, mid_iv = vols["bid"], vols["ask"], vols["mid"]

    z = x / (true_iv * np.sqrt(t))
    oi, volume = _open_interest(z, t)
    exp_stamps = stamps[e_idx]
    chain = pd.DataFrame({
        "currency": np.full(len(k), currency, object),
        "snapshot": pd.DatetimeIndex(np.full(len(k), snap)).as_unit("us"),
        "instrument": _instrument_names(currency, exp_stamps, k, call),
        "expiry": exp_stamps,
        "expiry_years": t,
        "strike": k,
        "is_call": call,
        "forward": fwd,
        "spot": np.full(len(k), spot),
        "log_moneyness": x,
        "bid_coin": bid_coin,
        "ask_coin": ask_coin,
        "mark_coin": mark_coin,
        "bid_usd": bid_coin * fwd,
        "ask_usd": ask_coin * fwd,
        "mark_usd": mark_coin * fwd,
        "bid_iv": bid_iv,
        "ask_iv": ask_iv,
        "mid_iv": mid_iv,
        "mark_iv": true_iv,
        "deribit_mark_iv": np.round(true_iv, 4),
        "vega": _deribit._vega(fwd, k, t, true_iv),
        "spread_coin": ask_coin - bid_coin,
        "spread_iv": ask_iv - bid_iv,
        "open_interest": oi,
        "volume": volume,
    })
    chain = chain.astype({"currency": "str", "instrument": "str"})[list(CHAIN_COLUMNS)]
    for side, code in statuses.items():  # for the cleaning rules' outside_bounds check
        chain[f"_{side}_status"] = code
    chain.attrs["synthetic"] = {
        "model": type(model).__name__,
        "params": params,
        "spot": spot,
        "basis": basis,
        "currency": currency,
        "snapshot": snap.isoformat(),
        "noise_iv": noise_iv,
        "half_spread_iv": _describe_spread(half_spread_iv),
        "tick": tick,
        "seed": seed,
        "key": key_data,
        "fourier_tol": fourier_tol,
        "otm_only": bool(otm_only),
        "n_expiries": len(years),
        "n_quotes": len(chain),
        "n_unpriceable": n_unpriceable,
        "mid_iv": ("model IV + noise, bid/ask priced at mid_iv -/+ half-spread" if tick is None
                   else "IV of the mid of the tick-rounded bid and ask (as the loader)"),
    }
    if clean:
        chain, _ = clean_chain(chain)
    else:
        chain = chain.drop(columns=[c for c in chain.columns if c.startswith("_")])
    return chain


def _strike_sets(strikes_per_expiry, forwards, sds, spot):
    if strikes_per_expiry is None:
        return [deribit_strikes(float(f), float(s), spot=spot) for f, s in zip(forwards, sds,
                                                                              strict=True)]
    if isinstance(strikes_per_expiry, numbers.Integral) and not isinstance(strikes_per_expiry,
                                                                           bool):
        n = int(strikes_per_expiry)
        if n < 1:
            raise ValueError(f"strikes_per_expiry must be a positive count or a list of "
                             f"strikes; got {n!r}")
        return [_even_strikes(float(f), float(s), n, 4.0) for f, s in zip(forwards, sds,
                                                                         strict=True)]
    try:
        ks = np.asarray(strikes_per_expiry, np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError("strikes_per_expiry must be None, a count or a list of strikes; got "
                         f"{strikes_per_expiry!r}") from None
    if ks.size == 0 or not np.all(np.isfinite(ks) & (ks > 0)):
        raise ValueError(f"strikes_per_expiry: strikes must be finite and positive (and at "
                         f"least one); got {strikes_per_expiry!r}")
    ks = np.unique(ks)
    return [ks] * len(forwards)


def _half_spreads(half_spread_iv, x, t, iv):
    if half_spread_iv is None:
        half = default_half_spread_iv(x, t, iv)
    elif callable(half_spread_iv):
        half = np.broadcast_to(np.asarray(half_spread_iv(x, t, iv), np.float64), x.shape)
    else:
        half = np.full(x.shape, _positive_float("half_spread_iv", half_spread_iv))
    bad = ~(np.isfinite(half) & (half > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"half_spread_iv must be finite and positive; got {half[i]!r} at "
                         f"log-moneyness {x[i]:.4g}, expiry {t[i]:.4g} years")
    return half


def _describe_spread(half_spread_iv):
    if half_spread_iv is None:
        return "default_half_spread_iv"
    if callable(half_spread_iv):
        return getattr(half_spread_iv, "__name__", repr(half_spread_iv))
    return float(half_spread_iv)
