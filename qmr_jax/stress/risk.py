"""Value at risk and expected shortfall of P&L samples, with Monte Carlo standard errors.

Convention: inputs are P&L samples ``X`` (positive = gain); the loss is ``L = -X``. At level
``a`` (0.95, 0.99, 0.999 by default), with tail probability ``p = 1 - a``:

* ``VaR_a = -q`` where ``q`` is the ``p``-quantile of the P&L, i.e. the lower ``a``-quantile
  of the loss, ``inf{l : P(L <= l) >= a}`` (positive when it is a loss);
* ``ES_a = -E[X | X <= q]``, the mean of the worst ``p`` fraction of outcomes (with an atom
  at ``q`` split so that exactly ``p`` of the probability is averaged; Acerbi and Tasche).
  ``ES_a >= VaR_a`` always.

Estimators (samples sorted ascending, ``x_(0) <= ... <= x_(n-1)``; ``m = n p``,
``k = floor(m)`` with ``m`` snapped to an integer within ``1e-9``, so that ``n = 100``,
``a = 0.95`` gives ``k = 5`` despite ``1 - 0.95 = 0.050000000000000044``):

* ``VaR = -x_(k)`` (0-based; the ``(k+1)``-th worst outcome): the exact ``a``-quantile of the
  empirical loss distribution.
* ``ES = -(x_(0) + ... + x_(k-1) + (m - k) x_(k)) / m``: the Acerbi-Tasche estimator, the
  expected shortfall of the empirical distribution; the mean of the ``m`` worst when ``m`` is
  an integer.
* ``var_stderr = sqrt(a (1 - a) / n) / f``: the asymptotic standard deviation of a sample
  quantile, with the P&L density ``f`` at ``q`` estimated by a spacing (Siddiqui)
  ``f = ((hi - lo) / n) / (x_(hi) - x_(lo))`` between the empirical quantiles at ``p -+ h``
  (``lo = floor(n (p - h))``, ``hi = floor(n (p + h))``, at least one sample either side of
  ``k``), with the Hall-Sheather bandwidth
  ``h = n^(-1/3) z_0.975^(2/3) (1.5 phi(z_p)^2 / (2 z_p^2 + 1))^(1/3)`` (Koenker 2005,
  section 3.4; normal reference) capped at ``p``. About ``2 n h`` samples span the window
  (e.g. 40 at ``a = 0.999``, ``n = 50,000``), so ``f`` carries a relative error of about
  ``1 / sqrt(2 n h)``.
  Tied samples around ``q`` (a P&L atom) give ``f = inf`` and a zero standard error: the
  quantile is then locally constant.
* ``es_stderr = sqrt((Var(L | L >= VaR) + a (ES - VaR)^2) / (n (1 - a)))``: the asymptotic
  variance of the tail-mean estimator (Manistre and Hancock 2005; Brazauskas, Jones, Puri
  and Zitikis 2008), with the tail variance taken over the same ``p`` fraction of samples.

With ``weights`` (probability weights, e.g. importance sampling or exponentially weighted
history), the empirical distribution puts mass ``w_i / sum(w)`` on ``x_i``: VaR is the first
sorted sample whose cumulative weight exceeds ``p``, ES averages exactly ``p`` of the mass, and
the standard errors are the delta-method ones, ``sqrt(sum_i w~_i^2 IF(x_i)^2)`` with the
influence functions ``IF_q(x) = (p - 1{x <= q}) / f`` and
``IF_ES(x) = (1{x <= q} (q - x) + p (ES - VaR)) / p`` (equal to the closed forms above for equal
weights); ``n_eff = 1 / sum w~_i^2`` (Kish) is reported.

Too few tail samples. The asymptotics need a tail: ``var_es`` raises ``ValueError`` when
``floor(n (1 - a)) < min_tail`` (default 10) at any level, saying how many samples the level
needs; ``n`` is a static shape, so this also holds under ``jit``. With weights the effective
tail ``n_eff (1 - a)`` is data-dependent: ``var_es`` (eager) raises, and the traced core
``var_es_core`` returns NaN for every output at that level (the only NaNs it makes). A NaN in
the P&L makes ``var_es`` raise (naming how many and where); ``var_es_core`` returns NaN for the
whole row (``jnp.sort`` would otherwise move NaNs out of the tail silently).

Shapes: P&L ``[..., n]`` (samples on the last axis, any leading batch axes, e.g.
``[n_scenarios, n_paths]``); results ``[..., n_levels]`` (``var``, ``es``, ...) and ``[...]``
(``mean``, ``std``, ``n``, ``n_eff``). Everything is pure ``jax.numpy``: ``jit``, ``vmap`` and
``grad`` (through the sort) compose. Levels are static Python floats. Dtypes follow the input.

References:
  C. Acerbi, D. Tasche (2002), On the coherence of expected shortfall, J. Banking & Finance
  26(7), 1487-1503. J. D. Manistre, G. H. Hancock (2005), Variance of the CTE estimator,
  North American Actuarial Journal 9(2), 129-156. V. Brazauskas, B. L. Jones, M. L. Puri,
  R. Zitikis (2008), Estimating conditional tail expectation with actuarial applications in
  view, J. Statistical Planning and Inference 138(11), 3590-3604. P. Hall, S. J. Sheather
  (1988), On the distribution of a studentized quantile, JRSS B 50(3), 381-391. R. Koenker
  (2005), Quantile Regression, Cambridge University Press. D. Tasche (1999), Risk
  contributions and performance measurement (Euler allocation of ES).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

DEFAULT_LEVELS = (0.95, 0.99, 0.999)
"""Confidence levels used when none are given."""

MIN_TAIL = 10
"""Fewest tail samples (``floor(n (1 - a))``) accepted at a level."""

_ND = NormalDist()


class RiskEstimate(NamedTuple):
    """VaR and ES per level with standard errors, and moments of the P&L.

    Leaves are arrays: ``var``, ``es``, ``var_stderr``, ``es_stderr``, ``levels`` have shape
    ``[..., n_levels]``; ``mean``, ``std`` (sample standard deviation), ``n`` (samples) and
    ``n_eff`` (effective sample size, ``n`` without weights) have shape ``[...]``.
    """

    var: jax.Array
    es: jax.Array
    var_stderr: jax.Array
    es_stderr: jax.Array
    mean: jax.Array
    std: jax.Array
    n: jax.Array
    n_eff: jax.Array
    levels: jax.Array

    def table(self) -> pd.DataFrame:
        """A table (one row per level) of an unbatched estimate."""
        var = np.asarray(self.var)
        if var.ndim != 1:
            raise ValueError(f"table() needs an unbatched estimate; var has shape {var.shape}")
        return pd.DataFrame({
            "level": np.asarray(self.levels), "var": var,
            "var_stderr": np.asarray(self.var_stderr), "es": np.asarray(self.es),
            "es_stderr": np.asarray(self.es_stderr),
        }).set_index("level")


class VarEs(NamedTuple):
    """VaR and ES per level (``[..., n_levels]``)."""

    var: jax.Array
    es: jax.Array


# ------------------------------------------------------------------------------------------
# static helpers (Python level: levels and the sample count are static)


def _levels(levels) -> tuple[float, ...]:
    if isinstance(levels, jax.core.Tracer):
        raise TypeError("levels must be static Python floats (they set the order statistics "
                        "used), not traced values")
    arr = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"levels must be a float or a 1-d sequence of floats; got {levels!r}")
    for a in arr:
        if not (0.0 < a < 1.0):
            raise ValueError(f"each level must lie strictly between 0 and 1; got {float(a)!r}")
    return tuple(float(a) for a in arr)


def _tail_count(n: int, a: float) -> tuple[int, float, float]:
    """``(k, frac, m)``: ``m = n (1 - a)`` snapped to an integer within 1e-9, ``k = floor(m)``."""
    m = n * (1.0 - a)
    r = round(m)
    if abs(m - r) <= 1e-9 * max(1.0, m):
        m = float(r)
    k = int(math.floor(m))
    return k, m - k, m


def _too_few_message(n: int, a: float, tail: float, min_tail: int, what: str = "samples"):
    need = math.ceil(min_tail / (1.0 - a) - 1e-9)
    return (f"too few {what} for level {a}: {n:g} give {tail:g} in the {1 - a:.3g} tail "
            f"(floor(n (1 - a))); need at least {min_tail} tail samples, i.e. n >= {need}")


def _check_static_n(n: int, levels, min_tail: int, what: str = "samples") -> None:
    for a in levels:
        k, _, _ = _tail_count(n, a)
        if k < min_tail:
            raise ValueError(_too_few_message(n, a, k, min_tail, what))


def hall_sheather(n: int, p: float, alpha: float = 0.05) -> float:
    """Hall-Sheather bandwidth (probability units) for the sparsity at the ``p``-quantile.

    ``h = n^(-1/3) z_(1-alpha/2)^(2/3) (1.5 phi(z_p)^2 / (2 z_p^2 + 1))^(1/3)`` (normal
    reference; Koenker 2005, eq. 3.13).
    """
    z = _ND.inv_cdf(p)
    za = _ND.inv_cdf(1.0 - alpha / 2.0)
    return n ** (-1.0 / 3.0) * za ** (2.0 / 3.0) * (
        1.5 * _ND.pdf(z) ** 2 / (2.0 * z * z + 1.0)) ** (1.0 / 3.0)


def _bandwidth(n: int, p: float) -> float:
    """Hall-Sheather half-width in probability, capped so ``p +- h`` stays in ``[0, 1]``."""
    return min(hall_sheather(n, p), p, 1.0 - p)


def _floor_snap(m: float) -> int:
    r = round(m)
    return int(r) if abs(m - r) <= 1e-9 * max(1.0, m) else int(math.floor(m))


def _window(n: int, k: int, p: float) -> tuple[int, int]:
    """Order statistics ``(lo, hi)`` of the spacing: the quantiles at ``p -+ h``, at least one
    sample either side of ``k``."""
    h = _bandwidth(n, p)
    lo = min(_floor_snap(n * (p - h)), k - 1)
    hi = max(_floor_snap(n * (p + h)), k + 1)
    return max(lo, 0), min(hi, n - 1)


def _float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


# ------------------------------------------------------------------------------------------
# cores (pure jnp)


def var_es_core(pnl, levels=DEFAULT_LEVELS, *, weights=None,
                min_tail: int = MIN_TAIL, presorted: bool = False) -> RiskEstimate:
    """VaR, ES and their standard errors: the pure ``jax.numpy`` core of ``var_es``.

    No checks on values (usable under ``jit``/``vmap``/``grad``); the static checks (levels,
    tail size from the static sample count) still raise. A row with a NaN gives NaN
    everywhere; with ``weights``, a level whose effective tail ``n_eff (1 - a)`` is below
    ``min_tail`` gives NaN at that level. See the module docstring for the estimators.

    Args:
      pnl: P&L samples ``[..., n]`` (positive = gain).
      levels: confidence levels (static floats in (0, 1)).
      weights: optional non-negative probability weights broadcastable to ``pnl`` (need not
        sum to 1).
      min_tail: fewest tail samples accepted.
      presorted: ``pnl`` is already sorted ascending along its last axis (unweighted only;
        skips the sort).

    Returns:
      ``RiskEstimate``.
    """
    levels = _levels(levels)
    if presorted and weights is not None:
        raise ValueError("presorted=True applies to unweighted samples only")
    pnl = _float(pnl)
    if pnl.ndim == 0:
        raise ValueError("pnl must have a sample axis (shape [..., n])")
    n = pnl.shape[-1]
    _check_static_n(n, levels, min_tail)
    dt = pnl.dtype
    has_nan = jnp.isnan(pnl).any(axis=-1)
    batch = pnl.shape[:-1]
    if weights is None:
        out = _unweighted(pnl, levels, n, dt, presorted)
    else:
        w = jnp.broadcast_to(jnp.asarray(weights, dt), pnl.shape)
        out = _weighted(pnl, w, levels, n, dt, min_tail)
    var, es, var_se, es_se, mean, std, n_eff = out
    nan = jnp.asarray(jnp.nan, dt)
    lv = has_nan[..., None]
    return RiskEstimate(
        var=jnp.where(lv, nan, var), es=jnp.where(lv, nan, es),
        var_stderr=jnp.where(lv, nan, var_se), es_stderr=jnp.where(lv, nan, es_se),
        mean=jnp.where(has_nan, nan, mean), std=jnp.where(has_nan, nan, std),
        n=jnp.full(batch, n, jnp.int32), n_eff=n_eff,
        levels=jnp.broadcast_to(jnp.asarray(levels, dt), batch + (len(levels),)),
    )


def _host_argsort(x):
    return np.argsort(np.asarray(x), axis=-1).astype(np.int32)


def sort_last(x):
    """``(sorted x, order)`` along the last axis, ascending, NaNs last.

    XLA's CPU sort is a generic comparator loop, about 3 ms for 10^4 values, which would
    dominate a sweep's per-scenario cost; NumPy's vectorised sort is more than ten times
    faster. On CPU the permutation therefore comes from NumPy through a host callback (one
    call per batch under ``vmap``) and only the gather stays in JAX, so gradients still flow
    through the sorted values. Other backends sort on the device.
    """
    x = jnp.asarray(x)
    if jax.default_backend() == "cpu":
        order = jax.pure_callback(_host_argsort, jax.ShapeDtypeStruct(x.shape, jnp.int32),
                                  jax.lax.stop_gradient(x), vmap_method="expand_dims")
    else:
        order = jnp.argsort(x, axis=-1).astype(jnp.int32)
    return jnp.take_along_axis(x, order, axis=-1), order


def _unweighted(pnl, levels, n, dt, presorted=False):
    x = pnl if presorted else sort_last(pnl)[0]
    mean = jnp.mean(x, axis=-1)
    std = jnp.std(x, axis=-1, ddof=1)
    cols = {k: [] for k in ("var", "es", "var_se", "es_se")}
    for a in levels:
        k, frac, m = _tail_count(n, a)
        p = m / n
        q = x[..., k]
        tail_sum = jnp.sum(x[..., :k], axis=-1) + frac * q
        mu = tail_sum / m                                   # E[X | tail] = -ES
        # tail variance over the same p of the mass (the boundary sample at weight frac)
        dev = x[..., :k] - mu[..., None]
        tail_var = (jnp.sum(dev * dev, axis=-1) + frac * (q - mu) ** 2) / m
        es_var = (tail_var + a * (mu - q) ** 2) / (n * (1.0 - a))
        lo, hi = _window(n, k, p)
        spacing = x[..., hi] - x[..., lo]
        var_se = math.sqrt(a * (1.0 - a) / n) * spacing * n / (hi - lo)
        cols["var"].append(-q)
        cols["es"].append(-mu)
        cols["var_se"].append(var_se)
        cols["es_se"].append(jnp.sqrt(es_var))
    st = {k: jnp.stack(v, axis=-1).astype(dt) for k, v in cols.items()}
    n_eff = jnp.full(pnl.shape[:-1], n, dt)
    return st["var"], st["es"], st["var_se"], st["es_se"], mean, std, n_eff


def _sorted_weighted(pnl, w):
    """Sort samples with their weights; normalised weights and cumulative mass."""
    x, ws = jax.lax.sort((pnl, w), dimension=-1, num_keys=1)
    total = jnp.sum(ws, axis=-1, keepdims=True)
    wn = ws / total
    cum = jnp.cumsum(wn, axis=-1)
    return x, wn, cum


def _tail_weights(wn, cum, p, dt):
    """Per sorted sample: tail mass ``t_j`` (summing to ``p``) and the VaR index ``j*``."""
    t = jnp.clip(p - (cum - wn), 0.0, wn)
    jstar = jnp.minimum(_mass_index(wn, cum, p), wn.shape[-1] - 1)
    return t, jstar


def _mass_index(wn, cum, level):
    """``#{j : cum_j <= level}``: the first sorted sample whose cumulative mass exceeds
    ``level``; a crossing within ``sqrt(eps)`` of the sample's own weight counts as exact
    (rounding of the cumulative sum), so equal weights give ``floor(n level)``."""
    c = float(np.sqrt(np.finfo(wn.dtype).eps))
    return jnp.sum(cum - c * wn <= level, axis=-1)


def _spacing_density(x, wn, cum, jstar, p, h, n):
    """Density of the P&L at the quantile from the spacing of a mass window ``p +- h``."""
    lo = _mass_index(wn, cum, p - h)
    hi = _mass_index(wn, cum, p + h)
    lo = jnp.clip(jnp.minimum(lo, jstar - 1), 0, n - 1)
    hi = jnp.clip(jnp.maximum(hi, jstar + 1), 0, n - 1)
    take = lambda arr, i: jnp.take_along_axis(arr, i[..., None], axis=-1)[..., 0]
    mass = take(cum, hi) - take(cum, lo)
    return mass / (take(x, hi) - take(x, lo)), lo, hi


def _weighted(pnl, w, levels, n, dt, min_tail):
    x, wn, cum = _sorted_weighted(pnl, w)
    n_eff = 1.0 / jnp.sum(wn * wn, axis=-1)
    mean = jnp.sum(wn * x, axis=-1)
    dev = x - mean[..., None]
    std = jnp.sqrt(jnp.sum(wn * dev * dev, axis=-1) * n_eff / jnp.maximum(n_eff - 1.0, 1e-30))
    cols = {k: [] for k in ("var", "es", "var_se", "es_se")}
    take = lambda arr, i: jnp.take_along_axis(arr, i[..., None], axis=-1)[..., 0]
    for a in levels:
        p = 1.0 - a
        t, jstar = _tail_weights(wn, cum, p, dt)
        q = take(x, jstar)
        mu = jnp.sum(t * x, axis=-1) / p
        phi = jnp.where(wn > 0, t / jnp.where(wn > 0, wn, 1.0), 0.0)  # tail fraction
        if_es = (phi * (x - q[..., None]) - p * (mu - q)[..., None]) / p
        es_se = jnp.sqrt(jnp.sum((wn * if_es) ** 2, axis=-1))
        f, _, _ = _spacing_density(x, wn, cum, jstar, p, _bandwidth(n, p), n)
        var_se = jnp.sqrt(jnp.sum((wn * (p - phi)) ** 2, axis=-1)) / f
        bad = n_eff * p < min_tail
        nan = jnp.asarray(jnp.nan, dt)
        cols["var"].append(jnp.where(bad, nan, -q))
        cols["es"].append(jnp.where(bad, nan, -mu))
        cols["var_se"].append(jnp.where(bad, nan, var_se))
        cols["es_se"].append(jnp.where(bad, nan, es_se))
    st = {k: jnp.stack(v, axis=-1).astype(dt) for k, v in cols.items()}
    return st["var"], st["es"], st["var_se"], st["es_se"], mean, std, n_eff.astype(dt)


# ------------------------------------------------------------------------------------------
# eager entry points


def _check_finite(name: str, x) -> None:
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    nan = np.isnan(arr)
    if nan.any():
        first = tuple(int(i) for i in np.argwhere(nan)[0])
        raise ValueError(f"{name} has {int(nan.sum())} NaN value(s) of {arr.size} (first at "
                         f"index {first}); VaR/ES of a sample with NaNs is undefined")
    inf = np.isinf(arr)
    if inf.any():
        first = tuple(int(i) for i in np.argwhere(inf)[0])
        raise ValueError(f"{name} has {int(inf.sum())} infinite value(s) (first at index "
                         f"{first})")


def _check_weights(weights, shape) -> None:
    if isinstance(weights, jax.core.Tracer):
        return
    w = np.asarray(weights, dtype=np.float64)
    try:
        w = np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"weights of shape {np.shape(weights)} do not broadcast to the "
                         f"P&L's shape {shape}") from None
    _check_finite("weights", w)
    if (w < 0).any():
        first = tuple(int(i) for i in np.argwhere(w < 0)[0])
        raise ValueError(f"weights must be >= 0; got {float(w[first])!r} at index {first}")
    if (w.sum(axis=-1) <= 0).any():
        raise ValueError("weights must have a positive sum along the sample axis")


def var_es(pnl, levels=DEFAULT_LEVELS, *, weights=None,
           min_tail: int = MIN_TAIL) -> RiskEstimate:
    """VaR and ES of P&L samples at ``levels``, with Monte Carlo standard errors.

    Validates concrete input, then runs ``var_es_core`` (jitted per shape and levels).
    Called under ``jit``/``vmap`` (traced input) it skips the value checks and is the core.

    Args:
      pnl: P&L samples ``[..., n]`` (positive = gain), e.g. ``[n_scenarios, n_paths]``.
      levels: a level or a sequence of levels in (0, 1) (default 0.95, 0.99, 0.999).
      weights: optional probability weights broadcastable to ``pnl`` (>= 0, positive sum).
      min_tail: fewest tail samples ``floor(n (1 - a))`` accepted at any level.

    Returns:
      ``RiskEstimate`` with ``var``, ``es``, ``var_stderr``, ``es_stderr`` ``[..., n_levels]``
      and ``mean``, ``std``, ``n``, ``n_eff`` ``[...]``.

    Raises:
      ValueError: NaN or infinite P&L (how many, first index); too few samples for a level
        (how many it needs); bad levels or weights; with weights, an effective tail below
        ``min_tail``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> pnl = jax.random.normal(jax.random.key(0), (100_000,))
      >>> r = var_es(pnl)                                   # levels 0.95, 0.99, 0.999
      >>> exact = normal_var_es(0.0, 1.0)                   # 1.645, 2.326, 3.090
      >>> bool(jnp.all(jnp.abs(r.var - exact.var) < 4 * r.var_stderr))
      True
      >>> sweep = var_es(jax.random.normal(jax.random.key(1), (8, 20_000)))  # [8, 3]
    """
    levels = _levels(levels)
    pnl_arr = pnl if isinstance(pnl, jax.Array) else np.asarray(pnl)
    if pnl_arr.ndim == 0:
        raise ValueError("pnl must have a sample axis (shape [..., n])")
    _check_static_n(pnl_arr.shape[-1], levels, min_tail)
    _check_finite("pnl", pnl_arr)
    if weights is not None:
        _check_weights(weights, np.shape(pnl_arr))
    out = _var_es_jit(pnl_arr, levels, weights, min_tail)
    if weights is not None and not isinstance(out.n_eff, jax.core.Tracer):
        n_eff = np.asarray(out.n_eff)
        for a in levels:
            tail = n_eff * (1.0 - a)
            if (tail < min_tail).any():
                i = np.unravel_index(np.argmin(tail), tail.shape) if tail.ndim else ()
                raise ValueError(_too_few_message(float(n_eff[i]), a, float(tail[i]),
                                                  min_tail, "effective samples (Kish)"))
    return out


def _var_es_impl(pnl, levels, weights, min_tail):
    return var_es_core(pnl, levels, weights=weights, min_tail=min_tail)


_var_es_jit = jax.jit(_var_es_impl, static_argnums=(1, 3))


def es_contributions(position_pnl, level: float = 0.99, *, weights=None,
                     return_stderr: bool = False, min_tail: int = MIN_TAIL):
    """Euler allocation of ES to positions: ``-E[X_i | X <= -VaR]`` with ``X = sum_i X_i``.

    The tail is the same one ``var_es`` averages for the total (Acerbi-Tasche weights,
    including the fractional boundary sample), so the contributions sum to the total's ES
    on the same samples (to rounding). Pure ``jax.numpy``: jit- and vmap-able; value checks
    (NaN, too few samples) run on concrete input only.

    Standard errors (``return_stderr=True``): the delta method with the influence function
    ``IF_i(x) = (1{t <= q} (x_i - g_i) - p (mu_i - g_i)) / p`` of the tail mean of position
    ``i`` (``mu_i = -C_i``, ``q`` the total's quantile), where ``g_i = E[X_i | X = q]`` is
    estimated by the mean of ``X_i`` over the samples whose total lies in the Hall-Sheather
    window around ``q``; i.e. ``(Var(X_i | tail) + a (mu_i - g_i)^2) / (n (1 - a))``. For
    one position it is ``var_es``'s ``es_stderr`` up to ``g`` (a window mean) standing in
    for ``q`` (within a few percent).

    Args:
      position_pnl: per-position P&L samples ``[..., n, n_positions]`` (samples, then
        positions; a leading scenario axis is fine).
      level: the ES level (a static float in (0, 1)).
      weights: optional probability weights ``[..., n]`` (broadcastable to the total P&L).
      return_stderr: also return the standard errors.
      min_tail: fewest tail samples accepted.

    Returns:
      Contributions ``[..., n_positions]`` (positive for positions that lose in the tail);
      with ``return_stderr``, ``(contributions, stderr)``.

    Raises:
      ValueError: NaN or infinite P&L, fewer than 2 axes, too few samples.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.key(0), (50_000, 3)) * jnp.array([1.0, 2.0, 0.5])
      >>> c = es_contributions(x, 0.99)
      >>> bool(jnp.allclose(c.sum(), var_es(x.sum(-1), 0.99).es[0]))
      True
    """
    (a,) = _levels(level)
    x = position_pnl if isinstance(position_pnl, jax.Array) else np.asarray(position_pnl)
    if x.ndim < 2:
        raise ValueError(f"position_pnl must have shape [..., n, n_positions]; got {x.shape}")
    _check_finite("position_pnl", x)
    n = x.shape[-2]
    _check_static_n(n, (a,), min_tail)
    if weights is not None:
        _check_weights(weights, x.shape[:-1])
    c, se = _contrib_jit(x, a, weights, min_tail)
    if weights is not None and not isinstance(c, jax.core.Tracer):
        if np.isnan(np.asarray(c)).any():
            raise ValueError(f"too few effective samples (Kish) for level {a}: the weighted "
                             f"tail holds fewer than {min_tail}")
    return (c, se) if return_stderr else c


def es_contributions_core(position_pnl, level: float = 0.99, *, weights=None,
                          min_tail: int = MIN_TAIL, _sorted=None):
    """``(contributions, stderr)``: the pure core of ``es_contributions`` (no value checks;
    NaN rows give NaN, as do weighted tails below ``min_tail``). ``_sorted``: the totals
    sorted ascending and their order, when already computed (unweighted only)."""
    (a,) = _levels(level)
    x = _float(position_pnl)
    n = x.shape[-2]
    _check_static_n(n, (a,), min_tail)
    dt = x.dtype
    total = jnp.sum(x, axis=-1)
    idx = jnp.broadcast_to(jnp.arange(n), total.shape)
    if weights is not None:
        w = jnp.broadcast_to(jnp.asarray(weights, dt), total.shape)
        ts, ws, order = jax.lax.sort((total, w, idx), dimension=-1, num_keys=1)
    elif _sorted is not None:
        ts, order = _sorted
    else:
        ts, order = sort_last(total)
    p = 1.0 - a
    if weights is None:
        # Equal weights: only the tail and the window around the quantile carry individual
        # influence; every later sample has phi = 0 and the same influence -(mu - g), summed
        # in closed form. So only the first ``cut`` sorted rows are gathered.
        k, frac, m = _tail_count(n, a)
        p = m / n
        lo, hi = _window(n, k, p)
        cut = max(k, hi) + 1
        xs = jnp.take_along_axis(x, order[..., :cut, None], axis=-2)  # [..., cut, P]
        j = np.arange(cut)
        phi = jnp.asarray(np.where(j < k, 1.0, np.where(j == k, frac, 0.0)), dt)[:, None]
        mu = jnp.sum(phi * xs, axis=-2) / m                       # E[X_i | tail]   [..., P]
        g = jnp.mean(xs[..., lo:hi + 1, :], axis=-2)
        infl = (phi * (xs - g[..., None, :]) - p * (mu - g)[..., None, :]) / p
        se = jnp.sqrt(jnp.sum(infl * infl, axis=-2) / (n * n)
                      + (n - cut) * ((mu - g) / n) ** 2)
    else:
        xs = jnp.take_along_axis(x, order[..., None], axis=-2)   # [..., n, P] sorted by total
        wn = ws / jnp.sum(ws, axis=-1, keepdims=True)
        cum = jnp.cumsum(wn, axis=-1)
        t, jstar = _tail_weights(wn, cum, p, dt)
        phi = jnp.where(wn > 0, t / jnp.where(wn > 0, wn, 1.0), 0.0)
        _, lo, hi = _spacing_density(ts, wn, cum, jstar, p, _bandwidth(n, p), n)
        n_eff = 1.0 / jnp.sum(wn * wn, axis=-1)
        tw = (wn * phi)[..., None]                                # tail mass per sample
        mu = jnp.sum(tw * xs, axis=-2) / p                        # E[X_i | tail]   [..., P]
        j = jnp.arange(n)
        inwin = ((j >= lo[..., None]) & (j <= hi[..., None])).astype(dt)[..., None]
        g = (jnp.sum(inwin * wn[..., None] * xs, axis=-2)
             / jnp.sum(inwin * wn[..., None], axis=-2))
        infl = (phi[..., None] * (xs - g[..., None, :]) - p * (mu - g)[..., None, :]) / p
        se = jnp.sqrt(jnp.sum((wn[..., None] * infl) ** 2, axis=-2))
    nan = jnp.asarray(jnp.nan, dt)
    bad = jnp.isnan(total).any(axis=-1)
    if weights is not None:
        bad = bad | (n_eff * p < min_tail)
    bad = bad[..., None]
    return jnp.where(bad, nan, -mu), jnp.where(bad, nan, se)


def tail_risk_core(position_pnl, levels=DEFAULT_LEVELS, contrib_level: float = 0.99, *,
                   min_tail: int = MIN_TAIL):
    """``(RiskEstimate of the total, contributions, stderr)`` from one sort (unweighted).

    Equal to ``var_es_core(position_pnl.sum(-1), levels)`` and
    ``es_contributions_core(position_pnl, contrib_level)``, sorting the total P&L once
    instead of twice (the sort dominates both on CPU). Pure; for sweeps over many scenarios.
    """
    x = _float(position_pnl)
    total = jnp.sum(x, axis=-1)
    ts, order = sort_last(total)
    est = var_es_core(ts, levels, min_tail=min_tail, presorted=True)
    contrib, se = es_contributions_core(x, contrib_level, min_tail=min_tail,
                                        _sorted=(ts, order))
    return est, contrib, se


def _contrib_impl(x, a, weights, min_tail):
    return es_contributions_core(x, a, weights=weights, min_tail=min_tail)


_contrib_jit = jax.jit(_contrib_impl, static_argnums=(1, 3))


def normal_var_es(mu, sigma, levels=DEFAULT_LEVELS) -> VarEs:
    """VaR and ES of normally distributed P&L ``N(mu, sigma^2)`` (closed forms).

    ``VaR_a = -mu + sigma z_a`` and ``ES_a = -mu + sigma phi(z_a) / (1 - a)`` with
    ``z_a = Phi^{-1}(a)``.

    Args:
      mu, sigma: mean and standard deviation of the P&L (broadcasting arrays; sigma > 0).
      levels: confidence levels.

    Returns:
      ``VarEs(var, es)``, each of shape ``broadcast(mu, sigma).shape + (n_levels,)``.

    Examples:
      >>> r = normal_var_es(0.0, 1.0, (0.99,))
      >>> round(float(r.var[0]), 4), round(float(r.es[0]), 4)
      (2.3263, 2.6652)
    """
    levels = _levels(levels)
    if not isinstance(sigma, jax.core.Tracer):
        s = np.asarray(sigma, dtype=np.float64)
        if not (np.isfinite(s) & (s > 0)).all():
            raise ValueError(f"sigma must be finite and > 0; got {sigma!r}")
    mu, sigma = _float(mu), _float(sigma)
    dt = jnp.result_type(mu, sigma)
    z = jnp.asarray([_ND.inv_cdf(a) for a in levels], dt)
    dens = jnp.asarray([_ND.pdf(_ND.inv_cdf(a)) / (1.0 - a) for a in levels], dt)
    mu_, s_ = mu[..., None], sigma[..., None]
    return VarEs(var=-mu_ + s_ * z, es=-mu_ + s_ * dens)


# ------------------------------------------------------------------------------------------
# historical simulation


class HistoricalRisk(NamedTuple):
    """Historical-simulation VaR/ES and the window it used.

    ``risk`` is the ``RiskEstimate`` of the P&L scenarios; ``scenarios`` a DataFrame indexed
    by the last day of each ``horizon_days`` window with the window's log return
    (``log_return``) and the book's ``pnl``; ``start``/``end`` the first and last daily
    return used; ``n`` the number of scenarios.
    """

    risk: RiskEstimate
    levels: tuple
    start: pd.Timestamp
    end: pd.Timestamp
    n: int
    horizon_days: int
    overlapping: bool
    scenarios: pd.DataFrame

    @property
    def var(self) -> np.ndarray:
        return np.asarray(self.risk.var)

    @property
    def es(self) -> np.ndarray:
        return np.asarray(self.risk.es)

    @property
    def var_stderr(self) -> np.ndarray:
        return np.asarray(self.risk.var_stderr)

    @property
    def es_stderr(self) -> np.ndarray:
        return np.asarray(self.risk.es_stderr)

    def table(self) -> pd.DataFrame:
        """One row per level: VaR, ES and standard errors, with the window in ``attrs``."""
        t = self.risk.table()
        t.attrs.update({"start": self.start, "end": self.end, "n": self.n,
                        "horizon_days": self.horizon_days, "overlapping": self.overlapping})
        return t


def _select_window(returns: pd.Series, window) -> pd.Series:
    if window is None:
        return returns
    if isinstance(window, int | np.integer) and not isinstance(window, bool):
        if window < 1:
            raise ValueError(f"window must be >= 1 returns; got {window}")
        return returns.iloc[-int(window):]
    if isinstance(window, tuple | list) and len(window) == 2:
        tz = returns.index.tz

        def stamp(x, end):
            if x is None:
                return None
            t = pd.Timestamp(x)
            if tz is not None:
                t = t.tz_localize(tz) if t.tzinfo is None else t.tz_convert(tz)
            if end and isinstance(x, str) and len(x.strip()) == 10:
                t = t + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")  # the whole end day
            return t

        t0, t1 = stamp(window[0], False), stamp(window[1], True)
        mask = np.ones(len(returns), bool)
        if t0 is not None:
            mask &= returns.index >= t0
        if t1 is not None:
            mask &= returns.index <= t1
        return returns[mask]
    raise ValueError(f"window must be None, a number of returns, or a (start, end) pair of "
                     f"dates; got {window!r}")


def historical_var_es(pnl_fn: Callable, returns: pd.Series, levels=DEFAULT_LEVELS,
                      horizon_days: int = 1, window=None, *, overlapping: bool = False,
                      min_tail: int = MIN_TAIL) -> HistoricalRisk:
    """Historical-simulation VaR/ES of a book revalued on real spot moves.

    The daily log returns in ``window`` are summed over ``horizon_days`` consecutive
    observations into horizon returns; the caller's ``pnl_fn`` maps the vector of horizon
    log returns to the book's P&L (one call on the whole vector; it may be jitted or
    vmapped inside); VaR/ES and standard errors are those of ``var_es`` on that P&L.

    Horizon windows: ``overlapping=False`` (default) cuts the window into disjoint blocks of
    ``horizon_days`` aligned on the most recent day (the oldest ``len % horizon_days``
    returns are left out), so scenarios are close to independent and the standard errors
    mean what they say; ``overlapping=True`` uses every rolling window (``len - h + 1``
    scenarios): more scenarios, but they are autocorrelated, so the reported standard errors
    (which assume independence) understate the error, roughly by ``sqrt(horizon_days)``.
    A block spans ``horizon_days`` observations, i.e. calendar days for a gap-free daily
    series (crypto trades every day).

    Args:
      pnl_fn: ``pnl_fn(log_returns[n]) -> pnl[n]`` (USD, positive = gain), e.g.
        ``lambda r: valuer_pnl(spot0 * jnp.exp(r))``.
      returns: daily log returns, a pandas Series on a DatetimeIndex (e.g.
        ``qmr_jax.data.spot.log_returns(history)``); no NaNs.
      levels: confidence levels.
      horizon_days: horizon in days (observations), >= 1.
      window: ``None`` (all returns), an int (the last that many daily returns), or a
        ``(start, end)`` pair of dates (inclusive; ``None`` for open ends).
      overlapping: overlapping horizon windows (see above).
      min_tail: fewest tail scenarios accepted at any level.

    Returns:
      ``HistoricalRisk``: ``risk`` (``RiskEstimate``), ``var``/``es``/stderr properties,
      ``start``/``end``/``n``, ``scenarios`` (horizon returns and P&L by end date).

    Raises:
      ValueError: non-daily or NaN returns (dates named), an empty window, too few scenarios
        for a level (the numbers are named), a ``pnl_fn`` result of the wrong shape or with
        NaNs (dates named).

    Examples:
      >>> from qmr_jax.data.spot import load_spot_history, log_returns    # doctest: +SKIP
      >>> r = log_returns(load_spot_history("BTC"))                        # doctest: +SKIP
      >>> spot0, coins = 90_000.0, 2.0
      >>> res = historical_var_es(lambda x: coins * spot0 * jnp.expm1(x), r,
      ...                         horizon_days=1, window=("2022-01-01", "2025-12-31"))
      ...                                                                  # doctest: +SKIP
      >>> res.table()                                                      # doctest: +SKIP
    """
    levels = _levels(levels)
    if not isinstance(returns, pd.Series) or not isinstance(returns.index, pd.DatetimeIndex):
        raise ValueError("returns must be a pandas Series of daily log returns on a "
                         "DatetimeIndex (e.g. qmr_jax.data.spot.log_returns(history))")
    if not (isinstance(horizon_days, int | np.integer) and horizon_days >= 1):
        raise ValueError(f"horizon_days must be an integer >= 1; got {horizon_days!r}")
    h = int(horizon_days)
    r = returns.sort_index(kind="stable")
    if r.index.has_duplicates:
        raise ValueError(f"returns have duplicate dates, e.g. "
                         f"{r.index[r.index.duplicated()][0]}")
    r = _select_window(r, window)
    if r.empty:
        raise ValueError(f"no returns in window {window!r} (returns cover "
                         f"{returns.index.min()} .. {returns.index.max()})")
    vals = r.to_numpy(np.float64)
    bad = ~np.isfinite(vals)
    if bad.any():
        dates = [str(d) for d in r.index[bad][:3]]
        raise ValueError(f"returns have {int(bad.sum())} NaN/infinite value(s) in the window, "
                         f"first at {', '.join(dates)}")
    if len(r) >= 2:
        step = pd.Series(r.index).diff().median()
        if abs(step - pd.Timedelta(days=1)) > pd.Timedelta(hours=1):
            raise ValueError(f"returns must be daily (median spacing 1 day); got {step}. Use "
                             "qmr_jax.data.spot.log_returns(history, freq='1D')")
    if overlapping:
        if len(r) < h:
            raise ValueError(f"the window has {len(r)} daily returns, fewer than "
                             f"horizon_days={h}")
        csum = np.concatenate([[0.0], np.cumsum(vals)])
        hret = csum[h:] - csum[:-h]
        ends = r.index[h - 1:]
        used = r
    else:
        nb = len(r) // h
        if nb == 0:
            raise ValueError(f"the window has {len(r)} daily returns, fewer than "
                             f"horizon_days={h}")
        used = r.iloc[len(r) - nb * h:]
        hret = used.to_numpy(np.float64).reshape(nb, h).sum(axis=1)
        ends = used.index[h - 1::h]
    n = len(hret)
    where = (f"{n} {'overlapping' if overlapping else 'non-overlapping'} {h}-day returns "
             f"from {used.index[0].date()} to {used.index[-1].date()}")
    try:
        _check_static_n(n, levels, min_tail, "scenarios")
    except ValueError as exc:
        raise ValueError(f"historical window of {where}: {exc}") from None
    pnl = pnl_fn(jnp.asarray(hret))
    pnl_np = np.asarray(pnl)
    if pnl_np.shape != (n,):
        raise ValueError(f"pnl_fn must map log returns [{n}] to P&L [{n}]; got shape "
                         f"{pnl_np.shape}")
    bad = ~np.isfinite(pnl_np.astype(np.float64))
    if bad.any():
        dates = [str(d) for d in ends[bad][:3]]
        raise ValueError(f"pnl_fn returned {int(bad.sum())} NaN/infinite P&L value(s), for "
                         f"the windows ending {', '.join(dates)}")
    risk = var_es(pnl, levels, min_tail=min_tail)
    scen = pd.DataFrame({"log_return": hret, "pnl": pnl_np}, index=ends)
    scen.index.name = "end"
    return HistoricalRisk(risk=risk, levels=levels, start=used.index[0], end=used.index[-1],
                          n=n, horizon_days=h, overlapping=bool(overlapping), scenarios=scen)


__all__ = [
    "var_es", "var_es_core", "es_contributions", "es_contributions_core", "tail_risk_core",
    "normal_var_es",
    "historical_var_es", "hall_sheather", "RiskEstimate", "VarEs", "HistoricalRisk",
    "DEFAULT_LEVELS", "MIN_TAIL",
]
