"""NumPy implementation of one path scenario of a sweep, the baseline of ``bench_sweep.py``.

The same algorithm as ``qmr_jax.stress`` (``StressEngine.path_pnl(revalue="grid")`` followed
by ``sweeps.scenario_metrics``) for a Heston model and a book of European options and linear
positions, written directly in NumPy:

1. horizon paths by the QE scheme (Andersen 2008, the formulas of
   ``bench_heston_qe.np_qe_step``), spot and variance at the horizon;
2. the book valued on a log-spot x vol grid spanning the paths: the Lewis integral with a
   Black-Scholes control variate by the trapezoidal rule (the characteristic function once per
   vol node and expiry, shared by the spots), with analytic log-spot slopes;
3. each path's value by cubic Hermite interpolation in log-spot and 4-point Lagrange in vol;
4. VaR/ES at three levels and the Euler ES contributions from one sort.

Differences from the library, which do not change the work done: the trapezoid period comes
from the cumulant range alone (the library refines it with Chernoff bounds), and the control
variate's variance is the expected integrated variance. Linear positions are valued exactly
on each path.
"""

from __future__ import annotations

import math

import numpy as np
from bench_heston_qe import _np_constants, np_qe_step
from scipy.special import ndtr


def simulate(p, spot, rate, div, horizon, n_paths, steps, rng):
    """Spot and variance at ``horizon`` on ``n_paths`` QE paths."""
    dt = horizon / steps
    k = _np_constants(p, dt, np.float64)
    v = np.full(n_paths, p["v0"])
    y = np.zeros(n_paths)
    for _ in range(steps):
        zv = rng.standard_normal(n_paths)
        z = rng.standard_normal(n_paths)
        v, dy = np_qe_step(v, zv, z, k, ndtr)
        y += dy
    return spot * math.exp((rate - div) * horizon) * np.exp(y), v


def heston_cf(u, tau, v0, kappa, theta, xi, rho):
    """``E[exp(i u X)]``, ``X = log(S_T / F_T)``, complex ``u`` (Albrecher et al. form)."""
    iu = 1j * u
    b = kappa - rho * xi * iu
    d = np.sqrt(b * b + xi * xi * (iu + u * u))
    g = (b - d) / (b + d)
    e = np.exp(-d * tau)
    c = kappa * theta / xi**2 * ((b - d) * tau - 2.0 * np.log((1.0 - g * e) / (1.0 - g)))
    dd = (b - d) / xi**2 * (1.0 - e) / (1.0 - g * e)
    return np.exp(c + dd * v0)


def _black_unit(lk, var, call):
    s = np.sqrt(var)
    d1 = (0.5 * var - lk) / s
    d2 = d1 - s
    ek = np.exp(lk)
    val = np.where(call, ndtr(d1) - ek * ndtr(d2), ek * ndtr(-d2) - ndtr(-d1))
    dval = np.where(call, -ek * ndtr(d2), ek * ndtr(-d2))  # d/d log-moneyness
    return val, dval


def grid_values(p, rate, div, h, strikes, expiries, calls, qty, xs, sig, n_terms,
                truncation=16.0):
    """Option values and log-spot slopes ``[n_vol, n_spot, n_options]`` (USD, quantity
    included) on the grid of log-spots ``xs`` and vols ``sig``."""
    tau = expiries - h  # [n_opt]
    uniq, inv = np.unique(tau, return_inverse=True)
    spots = np.exp(xs)
    vals = np.zeros((sig.size, xs.size, strikes.size))
    slopes = np.zeros_like(vals)
    for e, t in enumerate(uniq):
        sel = inv == e
        fwd = spots[:, None] * math.exp((rate - div) * t)          # [nx, 1]
        disc = math.exp(-rate * t)
        lk = np.log(strikes[sel])[None, :] - np.log(fwd)           # [nx, k]
        reach = np.abs(lk).max()
        for j, s in enumerate(sig):
            v0 = s * s
            var = p["theta"] * t + (v0 - p["theta"]) * -math.expm1(-p["kappa"] * t) / p["kappa"]
            period = 2.0 * truncation * math.sqrt(var) + reach
            hh = 2.0 * math.pi / period
            u = hh * np.arange(n_terms)
            den = u * u + 0.25
            w = hh * np.where(np.arange(n_terms) == 0, 0.5, 1.0) / den
            phi = heston_cf(u - 0.5j, t, v0, p["kappa"], p["theta"], p["xi"], p["rho"])
            psi = (phi - np.exp(-0.5 * var * den)) * w              # [N]
            ph = np.exp(-1j * lk[..., None] * u)                      # [nx, k, N]
            sums = np.real(ph @ psi)
            dsums = np.real(ph @ (psi * (-1j * u)))
            bs, dbs = _black_unit(lk, var, calls[sel][None, :])
            ek = np.exp(0.5 * lk)
            unit = bs - ek / np.pi * sums
            dunit = dbs - ek / np.pi * (0.5 * sums + dsums)
            val = disc * fwd * unit
            vals[j, :, sel] = (qty[sel] * val).T
            slopes[j, :, sel] = (qty[sel] * (val - disc * fwd * dunit)).T
    return vals, slopes


def interpolate(vals, slopes, xs, sig, x, s):
    """Cubic Hermite in log-spot, 4-point Lagrange in vol: ``[n_paths, n_options]``."""
    nx, ns = xs.size, sig.size
    hx = xs[1] - xs[0]
    u = (x - xs[0]) / hx
    ix = np.clip(np.floor(u), 0, nx - 2).astype(np.int64)
    t = np.clip(u - ix, 0.0, 1.0)[:, None]
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    hs = sig[1] - sig[0]
    us = (s - sig[0]) / hs
    j0 = np.clip(np.floor(us).astype(np.int64) - 1, 0, ns - 4)
    r = (us - j0)[:, None]
    out = 0.0
    for a in range(4):
        w = 1.0
        for b in range(4):
            if b != a:
                w = w * (r - b) / (a - b)
        j = j0 + a
        out = out + w * (h00 * vals[j, ix] + h10 * hx * slopes[j, ix]
                         + h01 * vals[j, ix + 1] + h11 * hx * slopes[j, ix + 1])
    return out


def linear_values(spot_paths, rate, div, h, kind, qty, entry, expiry):
    """Spot, perpetual and future values on each path ``[n_paths, n_linear]``."""
    t = np.where(kind == "future", expiry - h, 0.0)
    fwd = spot_paths[:, None] * np.exp((rate - div) * t)
    return qty * (fwd - entry) * np.exp(-rate * t)


def tail_metrics(pnl, levels, contrib_level):
    """``(var, es)`` per level and the ES contributions, from one sort of the total."""
    n = pnl.shape[0]
    total = pnl.sum(axis=1)
    order = np.argsort(total)
    ts = total[order]
    var, es = [], []
    for a in levels:
        m = n * (1.0 - a)
        k = int(math.floor(m + 1e-9))
        frac = m - k if m - k > 1e-9 else 0.0
        var.append(-ts[k])
        es.append(-(ts[:k].sum() + frac * ts[k]) / m)
    m = n * (1.0 - contrib_level)
    k = int(math.floor(m + 1e-9))
    frac = m - k if m - k > 1e-9 else 0.0
    tail = pnl[order[:k + 1]]
    wts = np.ones(k + 1)
    wts[k] = frac
    contrib = -(wts[:, None] * tail).sum(0) / m
    return np.array(var), np.array(es), contrib


def scenario(p, spot, rate, div, horizon, book, base_values, n_paths, steps, n_terms, rng,
             grid=(25, 7), levels=(0.95, 0.99, 0.999), paths=None):
    """Total P&L metrics of one scenario: ``dict(var, es, contrib, mean)``.

    ``book``: dict of arrays (see ``bench_sweep.numpy_book``); ``paths``: optional given
    ``(spot, variance)`` at the horizon instead of simulating them.
    """
    if paths is None:
        s_h, v_h = simulate(p, spot, rate, div, horizon, n_paths, steps, rng)
    else:
        s_h, v_h = paths
    x = np.log(s_h)
    nx, ns = grid
    xs = np.linspace(x.min(), x.max(), nx)
    sg = np.sqrt(np.maximum(v_h, 0.0))
    sig = np.linspace(sg.min(), sg.max(), ns)
    vals, slopes = grid_values(p, rate, div, horizon, book["strike"], book["expiry"],
                               book["call"], book["qty"], xs, sig, n_terms)
    opt = interpolate(vals, slopes, xs, sig, x, sg)
    lin = linear_values(s_h, rate, div, horizon, book["lin_kind"], book["lin_qty"],
                        book["lin_entry"], book["lin_expiry"])
    values = np.empty((s_h.size, book["n"]))
    values[:, book["opt_index"]] = opt
    values[:, book["lin_index"]] = lin
    pnl = values - base_values
    var, es, contrib = tail_metrics(pnl, levels, 0.99)
    return {"var": var, "es": es, "contrib": contrib, "mean": pnl.mean(0), "pnl": pnl}
