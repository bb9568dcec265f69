"""Monte Carlo pricing of the ``payoffs`` on simulated path summaries.

The paths are simulated chunk by chunk (``qmr_jax.simulate``, ``record="summary"``), the
payoff is evaluated on the device in the simulation dtype, and each chunk's payoffs are moved
to the host and folded into float64 running moments (means and co-moments merged with Chan's
parallel update), so a float32 simulation still gives float64-accurate means and variances
and memory stays O(chunk).

The standard error is that of the sample mean of i.i.d. sample units: single paths, or the
pair averages ``(X(w) + X(-w)) / 2`` with antithetic variates. With a control variate (the
European option with the payoff's strike, expiry and type, priced exactly by
``fourier_price``) the estimate is ``mean(X) - beta (mean(C) - E[C])`` with
``beta = cov(X, C) / var(C)`` estimated from the same sample, and the standard error is that
of the regression residual (``n - 2`` degrees of freedom); the ``O(1/n)`` bias from
estimating ``beta`` is far below the standard error for any usable ``n``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from ..models import Market
from ..simulate import bytes_per_path, plan_chunks, prepare, run_chunks, time_grid
from . import payoffs as _payoffs


class MCResult(NamedTuple):
    """Monte Carlo estimate (float64 NumPy values shaped like the payoff's parameters).

    Attributes:
      value: discounted price estimate (with the control variate when used).
      stderr: its standard error.
      n_paths: simulated paths.
      n_samples: independent sample units (``n_paths / 2`` pairs with antithetics).
      n_steps: time steps to expiry (the monitoring grid of path-dependent payoffs).
      scheme: the simulation scheme used.
      antithetic: whether antithetic pairs were used.
      variance_reduction: ``var(X) / var(X - beta C)`` of the control variate (1 without).
      beta: estimated control-variate coefficient (``None`` without).
      control_price: exact discounted price of the control (``None`` without).
      plain_value, plain_stderr: the estimate and standard error without the control.
    """

    value: np.ndarray
    stderr: np.ndarray
    n_paths: int
    n_samples: int
    n_steps: int
    scheme: str
    antithetic: bool
    variance_reduction: np.ndarray | float
    beta: np.ndarray | None
    control_price: np.ndarray | None
    plain_value: np.ndarray
    plain_stderr: np.ndarray


class _Moments:
    """Running count, means and co-moments of (X, C) in float64 (Chan et al. merge)."""

    def __init__(self):
        self.n = 0
        self.mx = self.mc = self.sxx = self.scc = self.sxc = 0.0

    def add(self, x: np.ndarray, c: np.ndarray | None) -> None:
        nb = x.shape[0]
        mx = x.mean(axis=0)
        dx = x - mx
        sxx = np.einsum("i...,i...->...", dx, dx)
        if c is not None:
            mc = c.mean(axis=0)
            dc = c - mc
            scc = np.einsum("i...,i...->...", dc, dc)
            sxc = np.einsum("i...,i...->...", dx, dc)
        else:
            mc = scc = sxc = 0.0
        if self.n == 0:
            self.n, self.mx, self.mc, self.sxx, self.scc, self.sxc = nb, mx, mc, sxx, scc, sxc
            return
        n = self.n + nb
        fx, fc = mx - self.mx, mc - self.mc
        w = self.n * nb / n
        self.sxx = self.sxx + sxx + fx * fx * w
        self.scc = self.scc + scc + fc * fc * w
        self.sxc = self.sxc + sxc + fx * fc * w
        self.mx = self.mx + fx * nb / n
        self.mc = self.mc + fc * nb / n
        self.n = n


def control_option(payoff, market: Market) -> _payoffs.European:
    """The European control of a payoff: same strike, expiry and call/put flag.

    A floating-strike lookback has no strike; its control is the European struck at the
    initial spot.
    """
    if isinstance(payoff, _payoffs.Lookback) and payoff.floating:
        strike = np.asarray(market.spot, dtype=np.float64)
    else:
        strike = payoff.strike
    return _payoffs.european(strike, payoff.expiry, payoff.is_call)


def _host(x, n_valid, antithetic, shape):
    """Device payoffs ``[chunk, ...]`` -> float64 sample units ``[units, *shape]``."""
    x = np.asarray(jax.device_get(x[:n_valid]), dtype=np.float64)
    x = np.broadcast_to(x, (x.shape[0],) + shape)
    if antithetic:
        x = 0.5 * (x[0::2] + x[1::2])
    return x


def mc_price(
    model,
    market: Market,
    payoff,
    *,
    key,
    n_paths: int,
    n_steps: int,
    scheme: str | None = None,
    antithetic: bool = False,
    control_variate: bool = False,
    chunk_size: int | None = None,
    dtype=None,
    memory_budget: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MCResult:
    """Discounted Monte Carlo price of a payoff (European, digital, Asian, barrier, lookback).

    Args:
      model: any simulated model (scalar leaves).
      market: ``Market(spot, rate, div)``.
      payoff: a ``qmr_jax.pricing.payoffs`` object; array parameters price a strip on the
        same paths.
      key: PRNG key (same key, same paths: common random numbers across payoffs).
      n_paths: number of paths (even with antithetics).
      n_steps: equal time steps to ``payoff.expiry``; the monitoring grid of path-dependent
        payoffs, and the discretisation of Heston/Bates.
      scheme: simulation scheme (default ``"qe"`` for Heston/Bates, ``"exact"`` otherwise).
      antithetic: antithetic pairs; the sample unit is then the pair average.
      control_variate: use the European with the payoff's strike/expiry/type (priced by
        ``fourier_price``) as a control variate.
      chunk_size, memory_budget: chunking (results do not depend on it).
      dtype: simulation dtype (default from the model/market leaves); statistics are float64.
      progress: called as ``progress(paths_done, n_paths)`` after each chunk.

    Returns:
      ``MCResult``.

    Examples:
      >>> import jax, qmr_jax as qmr
      >>> m = qmr.Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.5)
      >>> r = qmr.mc_price(m, qmr.Market(100.0), qmr.payoffs.european(100.0, 0.5),
      ...                  key=jax.random.key(0), n_paths=20000, n_steps=16)
      >>> r.value, r.stderr  # doctest: +SKIP
    """
    if not isinstance(payoff, _payoffs.PAYOFF_TYPES):
        raise TypeError(
            "payoff must be made by qmr_jax.pricing.payoffs (european, digital, asian, "
            f"barrier, lookback); got {type(payoff).__name__}"
        )
    if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer; got {n_steps!r}")
    model64 = model
    model, market_c, scheme, dtype = prepare(
        model, market, n_paths=n_paths, scheme=scheme, antithetic=antithetic,
        record="summary", dtype=dtype,
    )
    n_units = n_paths // 2 if antithetic else n_paths
    if n_units < 3:
        raise ValueError(f"need at least 3 sample units for a standard error; got {n_units}")
    expiry = payoff.expiry
    grid = time_grid([expiry], n_steps=int(n_steps))
    plan = plan_chunks(
        n_paths, bytes_per_path(model, "summary", 1, np.dtype(dtype).itemsize), chunk_size,
        memory_budget,
    )
    disc = float(np.exp(-float(np.asarray(market.rate, np.float64)) * expiry))

    control = None
    control_price = None
    if control_variate:
        from .fourier import fourier_price

        control = control_option(payoff, market)
        model64 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), model64)
        market64 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), market)
        control_price = np.asarray(
            fourier_price(model64, market64, control.strike, expiry, control.is_call),
            dtype=np.float64,
        )

    shape = None
    mom = _Moments()
    for start, n_valid, summary in run_chunks(
        model, market_c, grid, key, plan, scheme=scheme, antithetic=antithetic,
        record="summary", dtype=dtype,
    ):
        x_dev = payoff(summary)
        if shape is None:
            shape = tuple(x_dev.shape[1:])
            if control is not None:
                shape = np.broadcast_shapes(shape, np.shape(control_price))
        x = disc * _host(x_dev, n_valid, antithetic, shape)
        c = None
        if control is not None:
            c = disc * _host(control(summary), n_valid, antithetic, shape)
        mom.add(x, c)
        if progress is not None:
            progress(start + n_valid, n_paths)

    n = mom.n
    var_x = mom.sxx / (n - 1)
    plain_value = np.asarray(mom.mx, dtype=np.float64)
    plain_stderr = np.sqrt(var_x / n)
    if control is None:
        value, stderr, beta, vr = plain_value, plain_stderr, None, 1.0
    else:
        scc = np.asarray(mom.scc, dtype=np.float64)
        pos = scc > 0
        beta = np.where(pos, mom.sxc / np.where(pos, scc, 1.0), 0.0)
        resid = np.maximum(mom.sxx - beta * mom.sxc, 0.0) / (n - 2)
        value = mom.mx - beta * (mom.mc - np.broadcast_to(control_price, shape))
        stderr = np.sqrt(resid / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            vr = np.where(resid > 0, var_x / np.where(resid > 0, resid, 1.0), np.inf)
        vr = np.where(var_x > 0, vr, 1.0)
    return MCResult(
        value=np.asarray(value, np.float64)[()],
        stderr=np.asarray(stderr, np.float64)[()],
        n_paths=int(n_paths),
        n_samples=int(n),
        n_steps=int(n_steps),
        scheme=scheme,
        antithetic=bool(antithetic),
        variance_reduction=np.asarray(vr, np.float64)[()],
        beta=None if beta is None else np.asarray(beta, np.float64)[()],
        control_price=None if control_price is None
        else np.broadcast_to(control_price, shape).copy()[()],
        plain_value=plain_value[()],
        plain_stderr=np.asarray(plain_stderr, np.float64)[()],
    )


__all__ = ["mc_price", "MCResult", "control_option"]
