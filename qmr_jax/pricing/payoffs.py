"""Path-dependent payoffs evaluated on a ``PathSummary``.

Each factory validates its arguments and returns a small immutable NamedTuple holding them;
``payoff(summary)`` (also available as ``payoff.payoff(summary)``) gives the undiscounted
payoff per path. ``strike`` (and ``is_call``, ``cash``, ``barrier``, ``rebate``) may be arrays
broadcasting against each other; the result is shaped ``[n_paths, *broadcast_shape]``, so one
Monte Carlo run prices a whole strip. ``expiry`` is a scalar: the summary must come from a
simulation whose last date is ``expiry``.

Monitoring (see ``qmr_jax.simulate.PathSummary``) is discrete on the simulation grid
``t_0 = 0 < t_1 < ... < t_n = expiry``: maxima and minima include ``S(t_0)`` and every step
date; the arithmetic average is over ``t_1 .. t_n`` (``t_0`` excluded). Barrier and lookback
prices therefore depend on the number of steps (a continuously monitored barrier is hit more
often); use a Broadie-Glasserman-Kou shift of the barrier to approximate continuous
monitoring if needed.

Examples:
  >>> from qmr_jax.pricing import payoffs
  >>> b = payoffs.barrier([90.0, 100.0], 0.5, barrier=130.0, kind="up-and-out")
  >>> b.kind, b.strike.shape
  ('up-and-out', (2,))
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .._arrays import check_array

BARRIER_KINDS = ("up-and-out", "up-and-in", "down-and-out", "down-and-in")


def _expiry(expiry) -> float:
    try:
        arr = np.asarray(expiry, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"expiry must be a number of years; got {expiry!r}") from None
    if arr.ndim != 0:
        raise ValueError(f"expiry must be a scalar (one simulation per expiry); got shape "
                         f"{arr.shape}")
    if not (np.isfinite(arr) and arr > 0):
        raise ValueError(f"expiry must be finite and > 0; got {float(arr)!r}")
    return float(arr)


def _nonneg(name, x):
    check_array(name, x, lambda a: a >= 0, "finite and >= 0")
    return np.asarray(x, dtype=np.float64)


def _positive(name, x):
    check_array(name, x, lambda a: a > 0, "finite and > 0")
    return np.asarray(x, dtype=np.float64)


def _flag(is_call):
    arr = np.asarray(is_call)
    if arr.dtype != np.bool_:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(f"is_call must be boolean; got {is_call!r}")
        arr = arr.astype(np.bool_)
    return arr


def _col(x, ndim):
    """``[n_paths]`` -> ``[n_paths, 1, ..., 1]`` against parameters of rank ``ndim``."""
    return jnp.reshape(x, x.shape + (1,) * ndim)


def _params(summary, *arrays):
    """Broadcast parameters to one shape, in the summary's dtype."""
    dtype = summary.final.dtype
    shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
    out = [jnp.broadcast_to(jnp.asarray(a, dtype if a.dtype != np.bool_ else None), shape)
           for a in arrays]
    return shape, out


def _vanilla(s, k, is_call):
    return jnp.where(is_call, jnp.maximum(s - k, 0.0), jnp.maximum(k - s, 0.0))


class European(NamedTuple):
    """``max(S_T - K, 0)`` (call) or ``max(K - S_T, 0)`` (put)."""

    strike: np.ndarray
    expiry: float
    is_call: np.ndarray

    def payoff(self, summary):
        shape, (k, c) = _params(summary, self.strike, self.is_call)
        return _vanilla(_col(summary.final, len(shape)), k, c)

    __call__ = payoff


class Digital(NamedTuple):
    """Cash-or-nothing: ``cash * 1{S_T > K}`` (call) or ``cash * 1{S_T < K}`` (put)."""

    strike: np.ndarray
    expiry: float
    is_call: np.ndarray
    cash: np.ndarray

    def payoff(self, summary):
        shape, (k, c, cash) = _params(summary, self.strike, self.is_call, self.cash)
        s = _col(summary.final, len(shape))
        hit = jnp.where(c, s > k, s < k)
        return jnp.where(hit, cash, jnp.zeros_like(cash))

    __call__ = payoff


class Asian(NamedTuple):
    """Arithmetic-average-price option on ``A = (S(t_1) + ... + S(t_n)) / n`` (``t_0``
    excluded): ``max(A - K, 0)`` or ``max(K - A, 0)``."""

    strike: np.ndarray
    expiry: float
    is_call: np.ndarray

    def payoff(self, summary):
        shape, (k, c) = _params(summary, self.strike, self.is_call)
        return _vanilla(_col(summary.average, len(shape)), k, c)

    __call__ = payoff


class Barrier(NamedTuple):
    """Discretely monitored knock-in/knock-out vanilla with an expiry-paid rebate.

    The barrier is hit when ``max(S(t_0..t_n)) >= barrier`` (up) or
    ``min(S(t_0..t_n)) <= barrier`` (down), the initial spot included (a barrier already
    breached at ``t_0`` is hit). Knock-out: vanilla if never hit, else ``rebate``; knock-in:
    vanilla if hit, else ``rebate``. So in + out = vanilla + rebate path by path.
    """

    strike: np.ndarray
    expiry: float
    barrier: np.ndarray
    kind: str
    is_call: np.ndarray
    rebate: np.ndarray

    def payoff(self, summary):
        shape, (k, h, c, reb) = _params(
            summary, self.strike, self.barrier, self.is_call, self.rebate
        )
        n = len(shape)
        if self.kind.startswith("up"):
            hit = _col(summary.maximum, n) >= h
        else:
            hit = _col(summary.minimum, n) <= h
        vanilla = _vanilla(_col(summary.final, n), k, c)
        knocked_in = self.kind.endswith("in")
        alive = hit if knocked_in else ~hit
        return jnp.where(alive, vanilla, reb)

    __call__ = payoff


class Lookback(NamedTuple):
    """Discretely monitored lookback (extremes over ``t_0..t_n``, initial spot included).

    Floating strike (``strike is None``): call ``S_T - min``, put ``max - S_T``. Fixed strike:
    call ``max(max - K, 0)``, put ``max(K - min, 0)``.
    """

    expiry: float
    strike: np.ndarray | None
    is_call: np.ndarray

    @property
    def floating(self) -> bool:
        return self.strike is None

    def payoff(self, summary):
        if self.floating:
            shape, (c,) = _params(summary, self.is_call)
            n = len(shape)
            s = _col(summary.final, n)
            return jnp.where(c, s - _col(summary.minimum, n), _col(summary.maximum, n) - s)
        shape, (k, c) = _params(summary, self.strike, self.is_call)
        n = len(shape)
        return jnp.where(
            c,
            jnp.maximum(_col(summary.maximum, n) - k, 0.0),
            jnp.maximum(k - _col(summary.minimum, n), 0.0),
        )

    __call__ = payoff


def european(strike, expiry, is_call=True) -> European:
    """European call/put paying at ``expiry`` (strike >= 0, may be an array)."""
    return European(_nonneg("strike", strike), _expiry(expiry), _flag(is_call))


def digital(strike, expiry, is_call=True, cash=1.0) -> Digital:
    """Cash-or-nothing digital: pays ``cash`` if ``S_T > K`` (call) or ``S_T < K`` (put)."""
    check_array("cash", cash, np.isfinite, "finite")
    return Digital(
        _nonneg("strike", strike), _expiry(expiry), _flag(is_call),
        np.asarray(cash, dtype=np.float64),
    )


def asian(strike, expiry, is_call=True) -> Asian:
    """Arithmetic-average-price Asian on the simulation step dates ``t_1 .. t_n``."""
    return Asian(_nonneg("strike", strike), _expiry(expiry), _flag(is_call))


def barrier(strike, expiry, barrier, kind="up-and-out", is_call=True, rebate=0.0) -> Barrier:
    """Barrier option monitored on the simulation grid (see ``Barrier``).

    Args:
      strike: vanilla strike(s), >= 0.
      expiry: years, > 0.
      barrier: barrier level(s), > 0.
      kind: one of ``"up-and-out"``, ``"up-and-in"``, ``"down-and-out"``, ``"down-and-in"``.
      is_call: call or put vanilla.
      rebate: paid at expiry when knocked out (``*-out``) or never knocked in (``*-in``).
    """
    if kind not in BARRIER_KINDS:
        raise ValueError(f"barrier kind must be one of {BARRIER_KINDS}; got {kind!r}")
    return Barrier(
        _nonneg("strike", strike), _expiry(expiry), _positive("barrier", barrier), kind,
        _flag(is_call), _nonneg("rebate", rebate),
    )


def lookback(expiry, strike=None, is_call=True) -> Lookback:
    """Lookback option: floating strike if ``strike`` is None, fixed strike otherwise."""
    k = None if strike is None else _nonneg("strike", strike)
    return Lookback(_expiry(expiry), k, _flag(is_call))


PAYOFF_TYPES = (European, Digital, Asian, Barrier, Lookback)

__all__ = [
    "european", "digital", "asian", "barrier", "lookback",
    "European", "Digital", "Asian", "Barrier", "Lookback", "BARRIER_KINDS", "PAYOFF_TYPES",
]
