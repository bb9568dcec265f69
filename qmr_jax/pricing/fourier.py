"""Fourier pricing of European options from any model's characteristic function.

Two independent methods, both vectorised over arrays of strikes and expiries at once (the
characteristic function is evaluated once per expiry and frequency and shared by all strikes),
and both pricing the difference to a Black-Scholes control variate with the model's variance
(``C - C_BS = P - P_BS``; the Black-Scholes value itself is closed form). The control variate
keeps the Fourier sums small, so calls and puts alike are accurate far into the wings, and it
removes the Lewis integrand's poles:

* ``"cos"`` - the Fourier-cosine expansion of Fang & Oosterlee (2008) on a range ``[a, b]`` of
  ``X = log(S_T/F_T)`` from its cumulants (exact, by automatic differentiation of ``log_cf``).
* ``"lewis"`` - the Lewis (2001) integral on the ``Im u = -1/2`` line by the trapezoidal rule.
  With the poles at ``u = +-i/2`` removed the integrand is analytic in a strip as wide as the
  model's moments allow, so the rule converges geometrically (Trefethen & Weideman 2014). Its
  step ``2 pi / P`` is set by the period ``P`` that keeps the aliased copies of the price
  function (Poisson summation) beyond the model's tails, which are bounded by Chernoff bounds
  from the moment generating function. It needs several times fewer frequencies than COS.

Both methods reduce to ``Re sum_k c_k exp(i k theta)`` per option, with per-expiry coefficients
``c_k`` on a uniform frequency grid and a per-option angle ``theta``. The phases are not
computed term by term: with ``k = k1 + K m``, ``exp(i k theta) = exp(i k1 theta) exp(i m K
theta)``, two tables of about ``sqrt(N)`` entries per option, and the inner sums for all the
options of an expiry are one small matrix product (``_phase_sums``). Sines and cosines come
from a polynomial kernel that vectorises (``_cos_sin``). The characteristic function is then the
main cost.

Automatic settings (``n_terms=None`` with concrete parameters) target an absolute error of
``tol`` (default ``1e-14``) per unit forward: the number of frequencies from the tail of the
characteristic function (``_tail_cut``), the Lewis period from the tails of the distribution.

``merton_series_price`` is the classical Poisson-mixture of Black prices for Merton (1976).

References:
  F. Fang, C. W. Oosterlee, "A novel pricing method for European options based on
  Fourier-cosine series expansions", SIAM J. Sci. Comput. 31(2), 2008.
  A. Lewis, "A simple option formula for general jump-diffusion and other exponential Levy
  processes", 2001.
  L. N. Trefethen, J. A. C. Weideman, "The exponentially convergent trapezoidal rule",
  SIAM Review 56(3), 2014.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, ndtr, xlogy

from .._arrays import check_array, float_dtype
from ..models import Market, Merton
from ..models.base import cumulants, mask_invalid, model_valid

METHODS = ("cos", "lewis")

DEFAULT_TOL = 1e-14  # target absolute error of automatic settings, per unit forward

# n_terms when parameters are traced (no automatic choice possible)
_TRACED_TERMS = {"cos": 1024, "lewis": 512}
_MIN_TERMS = {"cos": 64, "lewis": 32}
_MAX_TERMS = 1 << 15

_HIGHEST = jax.lax.Precision.HIGHEST


# ------------------------------------------------------------------------------------------
# input handling


def _cast(v, dtype):
    """``v`` in ``dtype``: JAX arrays and tracers stay JAX, anything else becomes NumPy."""
    if isinstance(v, jax.Array):
        return v if v.dtype == dtype else v.astype(dtype)
    return np.asarray(v, dtype)


def _input_dtype(*trees):
    """``float_dtype`` of the inputs, without its cost in the common all-float64 case."""
    leaves = jax.tree_util.tree_leaves(trees)
    plain = (float, int)
    if jax.config.jax_enable_x64 and all(
        type(v) in plain or (isinstance(v, np.ndarray | np.generic) and v.dtype == np.float64)
        for v in leaves
    ):
        return np.dtype(np.float64)
    return float_dtype(*trees)


def _as_inputs(model, market, strikes, expiries, is_call):
    dtype = _input_dtype(model, market, strikes, expiries)
    strikes = _cast(strikes, dtype)
    expiries = _cast(expiries, dtype)
    is_call = _cast(is_call, bool)
    return strikes, expiries, is_call, dtype


def _is_concrete(tree) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def _validate(model, market, strikes, expiries):
    model.validate()
    market.validate()
    check_array("strikes", strikes, lambda k: k > 0, "finite and positive")
    check_array("expiries", expiries, lambda t: t > 0, "finite and positive (years)")
    check_forward(market, expiries)


def check_forward(market, expiries):
    """Raise ``ValueError`` if a forward ``spot * exp((rate - div) T)`` overflows (concrete
    inputs only): a price can then never be ``inf`` silently."""
    if not _is_concrete((market, expiries)):
        return
    with np.errstate(over="ignore", invalid="ignore"):
        fwd = np.asarray(market.spot, np.float64) * np.exp(
            (np.asarray(market.rate, np.float64) - np.asarray(market.div, np.float64))
            * np.asarray(expiries, np.float64))
    if not np.all(np.isfinite(fwd) & (fwd > 0)):
        raise ValueError(
            "the forward spot * exp((rate - div) * expiry) overflows (or underflows to 0) "
            "for some expiry; spot, rates and expiries must give a finite positive forward")


def _trailing(model):
    """Model leaves with a trailing unit axis, to broadcast against a frequency grid."""
    return jax.tree_util.tree_map(lambda v: jnp.expand_dims(v, -1), model)


# ------------------------------------------------------------------------------------------
# per-option trigonometric sums without per-term trigonometry


def _grouping(coef_shape, option_shape):
    """Split the broadcast shape into axes where the coefficients vary and option axes.

    Returns ``(full, batch, per)``: the broadcast shape, the axes along which the per-expiry
    coefficients change (one coefficient vector per position) and the remaining axes (the
    options that share a coefficient vector).
    """
    full = tuple(np.broadcast_shapes(tuple(coef_shape), tuple(option_shape)))
    padded = (1,) * (len(full) - len(coef_shape)) + tuple(coef_shape)
    batch = tuple(i for i, s in enumerate(padded) if s != 1)
    per = tuple(i for i, s in enumerate(padded) if s == 1)
    return full, batch, per


def _to_groups(x, full, batch, per):
    """``x`` broadcast to ``full`` as a ``(coefficient groups, options per group)`` matrix."""
    x = jnp.transpose(jnp.broadcast_to(x, full), batch + per)
    return x.reshape(math.prod(full[i] for i in batch), math.prod(full[i] for i in per))


def _from_groups(y, full, batch, per):
    """Inverse of ``_to_groups`` for ``y`` of shape ``(groups, options) + trailing``."""
    trailing = y.shape[2:]
    y = y.reshape(tuple(full[i] for i in batch + per) + trailing)
    order = tuple(int(i) for i in np.argsort(batch + per))
    return jnp.transpose(y, order + tuple(range(len(full), len(full) + len(trailing))))


# Cody-Waite split of pi/2 and the fdlibm minimax kernels of sin and cos on [-pi/4, pi/4].
_PIO2 = (1.57079632673412561417e00, 6.07710050630396597660e-11, 2.02226624871116645580e-21)
_SIN = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
        2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)
_COS = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
        -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)


def _cos_sin(x):
    """``(cos x, sin x)`` for real ``x`` (``|x|`` up to ~1e6), accurate to about an ulp.

    Range reduction by a three-part ``pi/2`` and the fdlibm polynomials: only multiplies,
    adds and selects, which vectorise, whereas XLA's CPU ``sin``/``cos`` cost several times
    more and dominate the per-option work of the pricers. Float64 only (the split of ``pi/2``
    needs 53-bit products); other dtypes use ``jnp.cos``/``jnp.sin``.
    """
    dtype = x.dtype
    if dtype != jnp.float64:
        return jnp.cos(x), jnp.sin(x)
    n = jnp.round(x * (2.0 / np.pi))
    y = x - n * _PIO2[0] - n * _PIO2[1] - n * _PIO2[2]
    z = y * y
    ps, pc = _SIN[-1], _COS[-1]
    for cs, cc in zip(_SIN[-2::-1], _COS[-2::-1], strict=True):
        ps, pc = ps * z + cs, pc * z + cc
    sin = y + y * z * ps
    half = 0.5 * z
    w = 1.0 - half
    cos = w + (((1.0 - w) - half) + z * z * pc)
    quadrant = n - 4.0 * jnp.floor(0.25 * n)  # n mod 4: x = y + quadrant pi/2 (mod 2 pi)
    odd = (quadrant == 1.0) | (quadrant == 3.0)
    re = jnp.where(odd, sin, cos) * jnp.where((quadrant == 1.0) | (quadrant == 2.0), -1.0, 1.0)
    im = jnp.where(odd, cos, sin) * jnp.where(quadrant >= 2.0, -1.0, 1.0)
    return re.astype(dtype), im.astype(dtype)


def _phase_sums(coef, theta):
    """``Re sum_k coef[..., k] exp(i k theta)`` for every option, and ``Re sum_k coef[..., k]``.

    Args:
      coef: complex, shape ``C + (N,)``: one coefficient vector per expiry.
      theta: real angles of shape ``O``, one per option (``C`` broadcasts against ``O``).

    Returns:
      ``(sums, total)``: real arrays of shape ``broadcast(C, O)`` and ``C`` (the latter is the
      value at ``theta = 0``).

    With ``k = k1 + K m`` (``K ~ sqrt N``) the sum is
    ``sum_m exp(i m K theta) sum_k1 coef[k1 + K m] exp(i k1 theta)``: the inner sums of all the
    options of an expiry are one (complex) matrix product, and only ``K + N/K`` phases per
    option are computed. ``coef`` is consumed by that product alone: XLA would otherwise fuse
    (and so repeat) the characteristic function evaluations behind it into every consumer.
    """
    *cshape, n = coef.shape
    full, batch, per = _grouping(cshape, theta.shape)
    inner_n = math.isqrt(n - 1) + 1
    outer_n = -(-n // inner_n)
    coef = jnp.pad(coef, [(0, 0)] * (coef.ndim - 1) + [(0, inner_n * outer_n - n)])
    th = _to_groups(theta, full, batch, per)  # (groups, options)
    th = jnp.concatenate([th, jnp.zeros_like(th[:, :1])], axis=1)  # theta = 0 gives the total
    cos1, sin1 = _cos_sin(th[..., None] * jnp.arange(inner_n, dtype=th.dtype))
    part = jnp.einsum("gmk,gok->gom", coef.reshape(th.shape[0], outer_n, inner_n),
                      jax.lax.complex(cos1, sin1), precision=_HIGHEST)
    cos2, sin2 = _cos_sin(th[..., None] * (inner_n * jnp.arange(outer_n, dtype=th.dtype)))
    sums = jnp.sum(cos2 * jnp.real(part) - sin2 * jnp.imag(part), axis=-1)  # (groups, opts + 1)
    total = sums[:, -1].reshape(tuple(cshape))
    return _from_groups(sums[:, :-1], full, batch, per), total


# ------------------------------------------------------------------------------------------
# ranges, decay and automatic settings


def cos_range(model, expiries, truncation=16.0):
    """COS truncation interval ``[a, b]`` for ``log(S_T/F_T)`` from its cumulants.

    The price does not depend on the interval (once it is wide enough), so no gradient flows
    through it.
    """
    c1, c2, c4 = cumulants(model, expiries, exact=False)
    half = truncation * jnp.sqrt(c2 + jnp.sqrt(jnp.abs(c4)))
    return jax.lax.stop_gradient(c1 - half), jax.lax.stop_gradient(c1 + half)


# Moments p tried by the Chernoff bounds: 1 + _CHERNOFF_STEPS for the right tail (E[e^X] = 1,
# so log M(p) >= 0 only beyond p = 1), -_CHERNOFF_STEPS for the left tail.
_CHERNOFF_STEPS = 2.0 ** np.arange(-8, 7)


def _log_mgf(model, expiries, moments, excess):
    """``log M(p) = log E[e^{pX}]`` at the ``moments`` and whether each value is trusted.

    ``moments`` and ``excess`` have shape ``(sides, P)``: per side, moments in order away from
    the anchor (``p = 1`` or ``p = 0``, where ``log M = 0``) and their distance from it. ``log M``
    is convex, so its secant slope from the anchor, ``log M(p) / excess``, grows with
    ``excess``. Moments are trusted in order until one is not finite, not real, or breaks that
    monotonicity: beyond a moment explosion a characteristic function formula returns finite
    but meaningless values (a complex branch, or a sign change across the pole), which these
    checks catch unless a small jump part hides the sign change under the diffusion; models
    that know their moment explosions in closed form say so (``moment_bounds()``, e.g. Kou's
    ``(-eta2, eta1)``) and moments outside are never trusted.
    """
    dtype = expiries.dtype
    moments = jnp.asarray(moments, dtype)
    excess = jnp.asarray(excess, dtype)
    t = expiries[..., None, None]
    log_m = jax.tree_util.tree_map(lambda v: v[..., None, None], model).log_cf(-1j * moments, t)
    m = jnp.real(log_m)
    slack = jnp.sqrt(jnp.finfo(dtype).eps) * (1.0 + jnp.abs(m))
    ok = jnp.isfinite(m) & (jnp.abs(jnp.imag(log_m)) <= slack) & (m >= -slack)
    slope = m / excess
    prev = jnp.concatenate([jnp.zeros_like(slope[..., :1]), slope[..., :-1]], axis=-1)
    ok &= slope >= prev - jnp.sqrt(jnp.finfo(dtype).eps) * (1.0 + jnp.abs(prev))
    if hasattr(model, "moment_bounds"):
        lo, hi = (jnp.asarray(x, dtype)[..., None, None] for x in model.moment_bounds())
        ok &= (moments > lo) & (moments < hi)
    # trusted: no failed check at or before this moment (prefix counts as one small product)
    prefix = jnp.asarray(np.triu(np.ones((moments.shape[-1],) * 2)), dtype)
    failures = jnp.einsum("...i,ij->...j", jnp.where(ok, 0.0, 1.0).astype(dtype), prefix,
                          precision=_HIGHEST)
    return jnp.where(ok, m, 0.0), failures == 0.0


def _trusted_min(values, trusted):
    return jnp.min(jnp.where(trusted, values, jnp.inf), axis=-1)


def _lewis_period(model, expiries, log_k, log_tol, truncation):
    """Trapezoid period ``P`` of the Lewis pricer and the control variate's variance.

    By Poisson summation the trapezoidal rule with step ``2 pi / P`` adds to the unit price at
    log-moneyness ``k`` the aliases ``sum_{m != 0} e^{m P/2} D(k - m P)``, ``D = P_BS - P =
    C_BS - C``. The put and call tails bound them (``m = +-1`` dominate):
    ``e^{k - P/2} P(X < k - P)`` and ``e^{-P/2} E[e^X; X > k + P]``, and with the Chernoff
    bounds (for the model and the Black-Scholes variate together) both fall below
    ``exp(log_tol)`` for every strike of an expiry once
    ``(q + 1/2) P >= log M(-q) - log_tol + (q + 1) max k`` and
    ``(p - 1/2) P >= log M(p) - log_tol - (p - 1) min k`` for some ``q > 0``, ``p > 1``.
    The cumulant rule's range (``truncation``) seen from the furthest strike is a floor.
    """
    c1, c2, c4 = cumulants(model, expiries, exact=False)
    scale = jnp.sqrt(c2 + jnp.sqrt(jnp.abs(c4)))
    shape = jnp.shape(c2)
    k_lo, k_hi = _group_extremes(jax.lax.stop_gradient(log_k), shape)
    steps = jnp.asarray(_CHERNOFF_STEPS, expiries.dtype)
    moments = jnp.stack([1.0 + steps, -steps])  # right tail (p > 1), left tail (q = -p > 0)
    m, ok = _log_mgf(model, expiries, moments, jnp.stack([steps, steps]))
    m = jnp.logaddexp(m, 0.5 * c2[..., None, None] * (moments * moments - moments))
    p, q = 1.0 + steps, steps
    right = _trusted_min((m[..., 0, :] - log_tol - steps * k_lo[..., None]) / (p - 0.5),
                         ok[..., 0, :])
    left = _trusted_min((m[..., 1, :] - log_tol + (q + 1.0) * k_hi[..., None]) / (q + 0.5),
                        ok[..., 1, :])
    # p = 1 and q = 0 (M = 1) always hold: P >= -2 log_tol and 2 (max k - log_tol) suffice
    right = jnp.minimum(right, -2.0 * log_tol)
    left = jnp.minimum(left, 2.0 * (k_hi - log_tol))
    # never below the cumulant rule's range seen from the furthest strike (values beyond an
    # undetected moment explosion could only make the Chernoff period too short)
    a, b = c1 - truncation * scale, c1 + truncation * scale
    reach = jnp.maximum(-k_lo, k_hi)
    period = jnp.maximum(jnp.maximum(right, left), jnp.minimum(b - a, jnp.maximum(-a, b) + reach))
    return jax.lax.stop_gradient(c2), jax.lax.stop_gradient(period)


_CUT_GRID = 0.5 * 2.0 ** np.arange(21)  # 0.5 .. 5e5
# Linear interpolation of the log tail in u is exact for an exponential decay of |phi|; the
# slowest-decaying case it underestimates, a Gaussian tail, by at most 6%.
_CUT_SAFETY = 1.07


def _tail_cut(model, expiries, log_tol, shift, ref_var=None):
    """Per-expiry frequency ``U`` with ``int_U^inf g(u) du <= exp(log_tol)``.

    ``g(u) = (|phi(u + i shift)| + e^{-ref_var (u^2 + shift^2) / 2}) / (u^2 + shift^2)``
    bounds the pricers' integrands (model minus Black-Scholes control variate; the second term
    only with ``ref_var``). The tail integral is a left Riemann sum (an upper bound for a
    decreasing ``g``) on a geometric grid of ratio 2; ``U`` interpolates the crossing of the
    tolerance between two grid points.
    """
    dtype = expiries.dtype
    grid = jnp.asarray(_CUT_GRID, dtype)
    den = grid * grid + shift * shift
    log_g = jnp.real(_trailing(model).log_cf(grid + 1j * shift, expiries[..., None]))
    if ref_var is not None:
        log_g = jnp.logaddexp(log_g, -0.5 * ref_var[..., None] * den)
    log_g = log_g - jnp.log(den)
    # log sum_{i >= j} g_i (u_{i+1} - u_i), the suffix sums as one product with a triangle
    log_w = log_g + jnp.log(grid)
    top = jnp.max(log_w, axis=-1, keepdims=True)
    suffix = jnp.asarray(np.tril(np.ones((len(_CUT_GRID),) * 2)), dtype)
    log_tail = top + jnp.log(jnp.einsum("...i,ij->...j", jnp.exp(log_w - top), suffix,
                                        precision=_HIGHEST))
    # first grid point whose tail is below tolerance, and the one before it
    hi = jnp.clip(jnp.sum(log_tail > log_tol, axis=-1), 1, len(_CUT_GRID) - 1)[..., None]
    t_lo = jnp.take_along_axis(log_tail, hi - 1, axis=-1)[..., 0]
    t_hi = jnp.take_along_axis(log_tail, hi, axis=-1)[..., 0]
    u_lo, u_hi = grid[hi[..., 0] - 1], grid[hi[..., 0]]
    frac = jnp.clip((t_lo - log_tol) / jnp.maximum(t_lo - t_hi, 1e-30), 0.0, 1.0)
    frac = jnp.where(jnp.isfinite(t_hi), frac, 1.0)  # tail underflowed: no interpolation
    return _CUT_SAFETY * (u_lo + frac * (u_hi - u_lo))


def _group_extremes(x, coef_shape):
    """``(min x, max x)`` over the options sharing each per-expiry coefficient vector."""
    full, batch, per = _grouping(coef_shape, jnp.shape(x))
    g = _to_groups(x, full, batch, per)
    return jnp.min(g, axis=1).reshape(coef_shape), jnp.max(g, axis=1).reshape(coef_shape)


def _geometry(model, expiries, log_k, truncation, log_tol, method):
    """Per-expiry quantities the pricer needs besides the characteristic function.

    COS: the range ``(a, b)``. Lewis: ``(var, period)``, the control variate's variance and
    the trapezoid period (step ``2 pi / period``).
    """
    if method == "cos":
        c1, c2, c4 = cumulants(model, expiries, exact=False)
        half = truncation * jnp.sqrt(c2 + jnp.sqrt(jnp.abs(c4)))
        a, b = _chernoff_range(model, expiries, log_k, log_tol, c1 - half, c1 + half)
        return tuple(jax.lax.stop_gradient(x) for x in (a, b, c2))
    return _lewis_period(model, expiries, log_k, log_tol, truncation)


def _chernoff_range(model, expiries, log_k, log_tol, a, b):
    """The COS range ``[a, b]`` widened where the Chernoff bounds say the tails need it.

    The cumulant rule assumes tails not much heavier than a Gaussian's; an exponential tail
    close to the moment explosion (Kou with ``eta1`` near 1, where ``e^x f(x)`` decays like
    ``e^{-(eta1 - 1) x}``) leaves the call payoff's weight beyond ``b``. With
    ``E[e^X; X > b] <= e^{-(p - 1) b} M(p)`` and ``(K/F) P(X < a) <= e^{k + q a} M(-q)``
    the range also covers ``b >= (log M(p) - log_tol) / (p - 1)`` and
    ``a <= (log_tol - k - log M(-q)) / q`` for the best trusted moment; it never narrows.
    """
    shape = jnp.shape(a)
    _, k_hi = _group_extremes(jax.lax.stop_gradient(log_k), shape)
    steps = jnp.asarray(_CHERNOFF_STEPS, expiries.dtype)
    moments = jnp.stack([1.0 + steps, -steps])
    m, ok = _log_mgf(model, expiries, moments, jnp.stack([steps, steps]))
    right = _trusted_min((m[..., 0, :] - log_tol) / steps, ok[..., 0, :])
    left = -_trusted_min((m[..., 1, :] - log_tol + k_hi[..., None]) / steps, ok[..., 1, :])
    b = jnp.where(jnp.isfinite(right), jnp.maximum(b, right), b)
    a = jnp.where(jnp.isfinite(left), jnp.minimum(a, left), a)
    return a, b


@functools.partial(jax.jit, static_argnames=("method",))
def _plan_geometry(model, market, strikes, expiries, truncation, log_tol, method):
    """``_geometry`` for concrete inputs, compiled once per shape (not per ``n_terms``)."""
    log_k = jnp.log(strikes) - jnp.log(market.forward(expiries))
    return _geometry(model, expiries, log_k, truncation, log_tol, method)


@functools.partial(jax.jit, static_argnames=("method",))
def _plan_terms(model, expiries, geometry, log_tol, method):
    """Per expiry, the number of terms that meets the tolerance."""
    if method == "cos":
        # COS truncation error <= (2 K/F / pi) int_U^inf |phi(u) - phi_BS(u)| / u^2 du
        a, b, var = geometry
        cut = _tail_cut(model, expiries, log_tol + jnp.log(jnp.pi / 2), 0.0, var)
        return (b - a) * cut / jnp.pi
    # Lewis truncation error <= (sqrt(K/F) / pi) int_U^inf |integrand| du
    var, period = geometry
    cut = _tail_cut(model, expiries, log_tol + jnp.log(jnp.pi), 0.5, var)
    return period * cut / (2 * jnp.pi)


def _plan(model, market, strikes, expiries, truncation, log_tol, method):
    """Geometry and, per expiry, the number of terms the tolerance needs."""
    geometry = _plan_geometry(model, market, strikes, expiries, truncation, log_tol, method)
    return geometry, _plan_terms(model, expiries, geometry, log_tol, method)


def _round_terms(need, lo=128, hi=_MAX_TERMS) -> int:
    """Smallest size >= ``need`` on a quarter-octave ladder (multiples of 16 from ``lo``).

    A coarse ladder keeps the number of distinct compiled sizes small.
    """
    need = float(np.max(np.asarray(need)))
    n, j = lo, 0
    while n < need and n < hi:
        j += 1
        n = 16 * math.ceil(lo * 2.0 ** (j / 4.0) / 16)
    return min(n, hi)


class UnresolvedError(ValueError):
    """The characteristic function decays too slowly (or the tails are too heavy) for the
    Fourier pricers to meet the tolerance within ``_MAX_TERMS`` terms: the prices they would
    give are not trustworthy, so none is given."""


def _check_resolvable(need, model, expiries, method, tol) -> None:
    """Raise ``UnresolvedError`` naming the first expiry (and batch member) whose planned
    number of terms exceeds ``_MAX_TERMS``; the automatic settings would otherwise cap it and
    return a price with an unknown, possibly large, error."""
    need = np.asarray(need, np.float64)
    bad = ~(need <= _MAX_TERMS)  # NaN counts as unresolvable too
    if not np.any(bad):
        return
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    t = np.broadcast_to(np.asarray(expiries), need.shape)[idx] if need.ndim else np.max(
        np.asarray(expiries))
    member = ", ".join(f"{f}={float(np.broadcast_to(np.asarray(v), need.shape)[idx]):.6g}"
                       for f, v in zip(model._fields, model, strict=True))
    where = f" (option group index {idx})" if need.ndim else ""
    raise UnresolvedError(
        f"{type(model).__name__}({member}) at expiry {float(t):.6g} years{where}: the "
        f"{method} pricer needs about {float(need[idx]):.3g} terms to reach tol="
        f"{DEFAULT_TOL if tol is None else tol:g}, beyond its limit of {_MAX_TERMS} (the "
        "characteristic function decays too slowly or the tails are too heavy); price these "
        "options by Monte Carlo (mc_price), loosen tol, or pass n_terms explicitly")


def _log_tol(tol, dtype):
    tol = DEFAULT_TOL if tol is None else float(tol)
    return math.log(max(tol, 8.0 * float(np.finfo(dtype).eps)))


def auto_cos_terms(model, expiries, truncation=16.0, lo=_MIN_TERMS["cos"], hi=_MAX_TERMS, *,
                   tol=None) -> int:
    """Number of COS terms resolving the characteristic function's decay on its range.

    ``N = (b - a) U / pi`` on the range ``[a, b]`` used by ``fourier_price``, where the tail
    integral of ``|phi(u) - phi_BS(u)| / u^2`` beyond ``U`` (which bounds the truncation
    error) is below ``tol`` (default ``DEFAULT_TOL``), rounded up on a quarter-octave ladder.
    Needs concrete (not traced) parameters.
    """
    expiries = jnp.asarray(expiries, float_dtype(model, expiries))
    model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, expiries.dtype), model)
    dtype = expiries.dtype
    _, need = _plan(model, Market(np.ones((), dtype)), np.ones((), dtype), expiries,
                    np.asarray(truncation, dtype), np.asarray(_log_tol(tol, dtype), dtype), "cos")
    return _round_terms(need, lo, hi)


# ------------------------------------------------------------------------------------------
# the two pricers (unit forward, undiscounted)


def _cos_unit(model, expiries, log_k, is_call, n_terms: int, a, b, var):
    """``E[(e^X - K/F)^+]`` (calls) or ``E[(K/F - e^X)^+]`` (puts) by COS on ``[a, b]`` with a
    Black-Scholes control variate.

    COS is applied to the difference between the model and Black-Scholes with variance
    ``var`` (``C - C_BS = P - P_BS``), with ``W_k = Re[(phi - phi_BS)(w_k) e^{-i w_k a}]``,
    ``w_k = k pi / (b - a)``, ``W_0 = 0``. For ``a <= log(K/F) <= b`` the COS sum of the put
    payoff's cosine coefficients is

        ``2/(b-a) [e^a sum_k Re zeta_k - K/F Re sum_k zeta_k e^{i k theta}]``

    with ``theta = pi (log(K/F) - a) / (b - a)`` and ``zeta_k = W_k / (w_k (w_k - i))``; outside
    the range the difference is negligible by construction. The control variate keeps the
    summed terms small, so the cancellation in that sum costs little precision.
    """
    dtype = expiries.dtype
    width = b - a
    k = jnp.arange(n_terms, dtype=dtype)
    omega = k * (jnp.pi / width)[..., None]  # coefficient shape + (N,)
    log_phi = _trailing(model).log_cf(omega, expiries[..., None])
    shift = omega * a[..., None]
    w = jnp.exp(jnp.real(log_phi)) * _cos_sin(jnp.imag(log_phi) - shift)[0]
    v = 0.5 * var[..., None]
    w = w - jnp.exp(-v * omega * omega) * _cos_sin(-v * omega - shift)[0]
    safe = jnp.where(k == 0, 1.0, omega)
    zeta = jnp.where(k == 0, 0.0j, 1.0 / (safe * (safe - 1j))) * w
    inside = (log_k >= a) & (log_k <= b)
    sums, total = _phase_sums(zeta, jnp.pi * (jnp.clip(log_k, a, b) - a) / width)
    diff = 2.0 / width * (jnp.exp(a) * total - jnp.exp(log_k) * sums)
    return _black_unit(log_k, var, is_call) + jnp.where(inside, diff, 0.0)


def _black_unit(log_k, var, is_call):
    """Black-Scholes ``E[(e^X - K/F)^+]`` or ``E[(K/F - e^X)^+]`` with ``Var X = var``."""
    sign = jnp.where(is_call, 1.0, -1.0)
    s = jnp.sqrt(var)
    d1 = (0.5 * var - log_k) / s
    return sign * (ndtr(sign * d1) - jnp.exp(log_k) * ndtr(sign * (d1 - s)))


def _lewis_unit(model, expiries, log_k, is_call, n_terms: int, var, period):
    """``E[(e^X - K/F)^+]`` (calls) or ``E[(K/F - e^X)^+]`` (puts) by the Lewis formula with a
    Black-Scholes control variate.

    ``C - C_BS = P - P_BS = -sqrt(K/F) / pi int_0^inf Re[e^{iux} (phi - phi_BS)(u - i/2)]
    / (u^2 + 1/4) du`` with ``x = log(F/K)`` and ``phi_BS(u - i/2) = exp(-var (u^2 + 1/4) / 2)``,
    by the trapezoidal rule with step ``h = 2 pi / period`` and ``n_terms`` nodes ``u_j = j h``.
    Both calls and puts add that correction to their own Black-Scholes value, so neither
    loses precision to put-call parity.
    """
    dtype = expiries.dtype
    h = 2.0 * jnp.pi / period
    j = jnp.arange(n_terms, dtype=dtype)
    u = j * h[..., None]
    den = u * u + 0.25
    phi = jnp.exp(_trailing(model).log_cf(u - 0.5j, expiries[..., None]))
    weight = h[..., None] * jnp.where(j == 0, 0.5, 1.0).astype(dtype) / den
    psi = (phi - jnp.exp(-0.5 * var[..., None] * den)) * weight
    sums, _ = _phase_sums(psi, -log_k * h)
    return _black_unit(log_k, var, is_call) - jnp.exp(0.5 * log_k) / jnp.pi * sums


@functools.partial(jax.jit, static_argnames=("method", "n_terms"))
def _fourier_core(model, market, strikes, expiries, is_call, method, n_terms, truncation,
                  log_tol, geometry=None):
    """Prices; ``geometry`` is precomputed by ``_plan`` (else derived here, no gradient)."""
    forward = market.forward(expiries)
    discount = market.discount(expiries)
    log_k = jnp.log(strikes) - jnp.log(forward)
    if geometry is None:
        geometry = _geometry(model, expiries, log_k, truncation, log_tol, method)
    if method == "cos":
        unit = _cos_unit(model, expiries, log_k, is_call, n_terms, *geometry)
    else:
        unit = _lewis_unit(model, expiries, log_k, is_call, n_terms, *geometry)
    unit = jnp.where(_within_bounds(unit, log_k, is_call), unit, jnp.nan)
    return _masked(discount * forward * unit, model, market, strikes, expiries)


# Slack of the no-arbitrage check, per unit forward: far below any error that matters (the
# failures it catches are of order 1), and above what a pricer planned at one model reaches on
# the shocked models of a stress grid with its fixed number of terms (up to ~1e-7 at extreme
# moneyness under large vol shocks).
_BOUND_SLACK = 1e-6


def _within_bounds(unit, log_k, is_call):
    """Whether undiscounted unit-forward prices respect the model-free bounds
    ``(1 - K/F)^+ <= call <= 1`` and ``(K/F - 1)^+ <= put <= K/F`` (within ``_BOUND_SLACK``).

    A price outside them cannot be right under any model: the expansion did not resolve the
    distribution (tails beyond the range, cancellation at extreme variances), so it is NaN
    rather than a wrong finite number (``fourier_price`` then raises ``UnresolvedError``).
    """
    k = jnp.exp(log_k)
    lower = jnp.where(is_call, jnp.maximum(1.0 - k, 0.0), jnp.maximum(k - 1.0, 0.0))
    upper = jnp.where(is_call, 1.0, k)
    slack = _BOUND_SLACK * jnp.maximum(1.0, k)
    return (unit >= lower - slack) & (unit <= upper + slack)


def _masked(prices, model, market, strikes, expiries):
    """NaN where the parameters (per batch member) or the options are invalid, or the price
    overflowed: inside traced code an invalid model gives NaN, never a finite number."""
    ok = model_valid(model, market) & (strikes > 0) & (expiries > 0) & jnp.isfinite(prices)
    return mask_invalid(prices, ok)


def fourier_price(
    model,
    market: Market,
    strikes,
    expiries,
    is_call,
    *,
    method: str = "cos",
    n_terms: int | None = None,
    truncation: float = 16.0,
    tol: float | None = None,
):
    """Discounted European option prices from the model's characteristic function.

    Args:
      model: any model container with ``log_cf`` (GBM, Merton, Kou, Heston, Bates, or a
        batch of them with leaves broadcastable against the option arrays).
      market: ``Market(spot, rate, div)``.
      strikes, expiries, is_call: arrays broadcast against each other (expiries in years).
      method: ``"cos"`` (default) or ``"lewis"``.
      n_terms: COS terms, or Lewis trapezoid nodes: characteristic function evaluations per
        expiry. By default chosen per call from the characteristic function's decay and the
        model's tails to meet ``tol`` (see ``auto_cos_terms``) when the parameters are
        concrete; when they are traced (under ``jit``/``grad``), 1024 for COS and 512 for
        Lewis.
      truncation: COS range half-width in units of ``sqrt(c2 + sqrt|c4|)``; for Lewis, the
        same range seen from the furthest strike is the shortest trapezoid period.
      tol: target absolute error per unit forward of the automatic choices (terms, Lewis
        period); default ``DEFAULT_TOL`` = 1e-14.

    Returns:
      Prices with the broadcast shape of ``strikes``, ``expiries`` and ``is_call``, in the
      input dtype. Concrete invalid parameters raise ``ValueError``; under ``jit``/``vmap``
      the prices of an invalid batch member (a field breaking its model's rules, e.g.
      ``rho = 1.5`` or ``xi = NaN``) are NaN, never finite: ``qmr_jax.check_models`` reports
      which member and which field.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import qmr_jax as qmr
      >>> m = qmr.Heston(v0=0.04, kappa=4.0, theta=0.25, xi=1.0, rho=-0.5)
      >>> float(qmr.fourier_price(m, qmr.Market(100.0, 0.01, 0.02), 100.0, 1.0, False))
      17.05527096127...
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    _validate(model, market, strikes, expiries)
    strikes, expiries, is_call, dtype = _as_inputs(model, market, strikes, expiries, is_call)
    model = jax.tree_util.tree_map(lambda v: _cast(v, dtype), model)
    market = jax.tree_util.tree_map(lambda v: _cast(v, dtype), market)
    truncation = np.asarray(truncation, dtype)
    log_tol = np.asarray(_log_tol(tol, dtype), dtype)
    geometry = None
    programs = _stored_programs() if _is_concrete(is_call) else None
    if _is_concrete((model, market, strikes, expiries)):
        # Range / period (and the terms they need) computed apart from the pricer, which is
        # compiled per n_terms: the same compiled geometry then serves every n_terms.
        if programs is not None:
            geometry, need = _plan_program(programs, model, market, strikes, expiries,
                                           truncation, log_tol, method)
        else:
            geometry = _plan_geometry(model, market, strikes, expiries, truncation, log_tol,
                                      method)
        if n_terms is None:
            if programs is None:
                need = _plan_terms(model, expiries, geometry, log_tol, method)
            _check_resolvable(need, model, expiries, method, tol)
            n_terms = _round_terms(need, _MIN_TERMS[method])
    elif n_terms is None:
        n_terms = _TRACED_TERMS[method]
    if programs is not None and geometry is not None:
        n = int(n_terms)
        prices = programs.run(
            "fourier core", functools.partial(_core_program, method=method, n_terms=n),
            (model, market, strikes, expiries, is_call, truncation, log_tol, geometry),
            static=(method, n), what=f"the {method} pricer of {_describe(strikes, expiries)} "
                                     f"({n} terms)")
    else:
        prices = _fourier_core(model, market, strikes, expiries, is_call, method,
                               int(n_terms), truncation, log_tol, geometry)
    if geometry is not None:  # concrete: a price the expansion did not resolve is an error
        _check_resolved(prices, model, strikes, expiries, method)
    return prices


def _stored_programs():
    """``qmr_jax.calibration.programs`` when ``qmr_jax`` turned the persistent compilation
    cache on (``enable_compilation_cache``: the command line, the demo, the notebooks): the
    concrete calls below then run programs built once per shape and kept on disk, so a new
    process neither traces nor compiles them again. ``None`` otherwise (plain ``jit``)."""
    from .. import _cache

    if getattr(_cache, "_enabled", None) is None:
        return None
    from ..calibration import programs

    return programs


def _describe(strikes, expiries) -> str:
    shape = np.broadcast_shapes(np.shape(strikes), np.shape(expiries))
    return f"{math.prod(shape)} options" if len(shape) < 2 else \
        f"a {' x '.join(str(n) for n in shape)} grid"


def _plan_both(model, market, strikes, expiries, truncation, log_tol, method):
    geometry = _plan_geometry(model, market, strikes, expiries, truncation, log_tol, method)
    return geometry, _plan_terms(model, expiries, geometry, log_tol, method)


def _core_program(model, market, strikes, expiries, is_call, truncation, log_tol, geometry, *,
                  method, n_terms):
    return _fourier_core(model, market, strikes, expiries, is_call, method, n_terms, truncation,
                         log_tol, geometry)


def _plan_program(programs, model, market, strikes, expiries, truncation, log_tol, method):
    """``_plan`` as one stored program (``_stored_programs``)."""
    return programs.run(
        "fourier planning", functools.partial(_plan_both, method=method),
        (model, market, strikes, expiries, truncation, log_tol), static=(method,),
        what=f"the {method} planning of {_describe(strikes, expiries)}")


def _check_resolved(prices, model, strikes, expiries, method) -> None:
    """Raise ``UnresolvedError`` naming the first option whose price is NaN although its
    model is valid (``_within_bounds`` refused it)."""
    p = np.asarray(prices)
    if not np.any(np.isnan(p)):
        return
    bad = np.isnan(p) & np.asarray(model_valid(model, None), bool)
    if not np.any(bad):
        return
    idx = tuple(int(i) for i in np.argwhere(bad)[0]) if p.ndim else ()
    k = float(np.broadcast_to(np.asarray(strikes), p.shape)[idx])
    t = float(np.broadcast_to(np.asarray(expiries), p.shape)[idx])
    raise UnresolvedError(
        f"{type(model).__name__}: the {method} price of the option with strike {k:.6g} and "
        f"expiry {t:.6g} years (index {idx}) breaks the model-free no-arbitrage bounds: the "
        "expansion did not resolve this distribution (tails or variance too extreme); price "
        "it by Monte Carlo (mc_price) or with the other Fourier method")


class FourierPricer:
    """A compiled pricer of one fixed set of options, planned once: ``pricer(model, market)``.

    Made by ``fourier_pricer``. The strikes, expiries, call flags, method and number of terms
    are fixed; the model (and market) are arguments, so one compiled function serves every
    evaluation of a calibration, a sensitivity report or a scenario sweep, under ``jit``,
    ``grad`` and ``vmap`` alike. The per-expiry geometry (COS range, Lewis period) follows the
    parameters it is called with.

    Attributes:
      method, n_terms, tol: the pricing settings.
      strikes, expiries, is_call: the options (broadcast against each other).
      market: the market used when a call gives none.
    """

    def __init__(self, strikes, expiries, is_call, market, method, n_terms, truncation,
                 log_tol, tol):
        self.strikes, self.expiries, self.is_call = strikes, expiries, is_call
        self.market, self.method, self.n_terms, self.tol = market, method, int(n_terms), tol
        self._truncation, self._log_tol = truncation, log_tol
        dtype = strikes.dtype

        def price(model, market, elapsed):
            model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), model)
            market = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), market)
            return _fourier_core(model, market, strikes, expiries - elapsed, is_call, method,
                                 self.n_terms, truncation, log_tol)

        self._price = jax.jit(price)

    def __call__(self, model, market=None, elapsed=0.0):
        """Prices under ``model`` and ``market`` (default: the planning market), with
        ``elapsed`` years of calendar time passed (every expiry shortened by it: the argument
        of theta; it must leave every expiry positive).

        Concrete parameters are validated (``ValueError`` naming the field); traced ones
        (under ``jit``/``vmap``/``grad``) cannot raise, so every price of an invalid batch
        member is NaN. ``qmr_jax.check_models`` says which member and field."""
        market = self.market if market is None else market
        if _is_concrete((model, market, elapsed)):
            model.validate()
            market.validate()
            if elapsed != 0.0 and not np.all(np.asarray(self.expiries) > np.asarray(elapsed)):
                raise ValueError(f"elapsed={float(elapsed)!r} must be shorter than every "
                                 "expiry of the pricer")
        return self._price(model, market, elapsed)

    def replan(self, model, market=None):
        """A new pricer of the same options with ``n_terms`` chosen for ``model``."""
        market = self.market if market is None else market
        return fourier_pricer(model, market, self.strikes, self.expiries, self.is_call,
                              method=self.method, tol=self.tol,
                              truncation=float(self._truncation))

    def __repr__(self):
        shape = np.broadcast_shapes(*(np.shape(x) for x in (self.strikes, self.expiries,
                                                             self.is_call)))
        return (f"FourierPricer(method={self.method!r}, n_terms={self.n_terms}, "
                f"options={shape}, tol={self.tol!r})")


def fourier_pricer(
    model,
    market: Market,
    strikes,
    expiries,
    is_call,
    *,
    method: str = "lewis",
    n_terms: int | None = None,
    tol: float | None = None,
    truncation: float = 16.0,
) -> FourierPricer:
    """Plan the Fourier pricing of a fixed set of options once; returns a compiled pricer.

    ``fourier_price`` plans every call (the number of terms from the model's decay, which
    needs concrete parameters and a host round trip) and, under ``jit``/``grad``, falls back
    to a generous fixed ``n_terms``. For repeated pricing of the same options with changing
    parameters (calibration, sensitivities, sweeps) plan once here, at representative
    parameters and the accuracy wanted, and call the result.

    Args:
      model, market: concrete parameters to plan at (and the default market of the calls).
      strikes, expiries, is_call: the options, broadcast against each other; pass expiries as
        a column (``[n_expiries, 1]``) against a strike grid so the characteristic function is
        evaluated once per expiry.
      method: ``"lewis"`` (default: several times fewer terms than COS) or ``"cos"``.
      n_terms: fixed number of terms; by default chosen at ``model`` to meet ``tol``.
      tol: target absolute error per unit forward (default ``DEFAULT_TOL``). The planned
        ``n_terms`` meets it at ``model``; parameters far from it (much lower vol, shorter
        expiries) may need ``pricer.replan(new_model)``.
      truncation: as in ``fourier_price``.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import qmr_jax as qmr
      >>> m = qmr.Heston(v0=0.04, kappa=4.0, theta=0.25, xi=1.0, rho=-0.5)
      >>> pricer = qmr.fourier_pricer(m, qmr.Market(100.0, 0.01, 0.02), 100.0, 1.0, False)
      >>> float(pricer(m))
      17.05527096127...
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if not _is_concrete((model, market, strikes, expiries)):
        raise TypeError("fourier_pricer plans at concrete parameters; call it outside jit "
                        "and call the pricer it returns inside")
    _validate(model, market, strikes, expiries)
    strikes, expiries, is_call, dtype = _as_inputs(model, market, strikes, expiries, is_call)
    model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), model)
    market = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), market)
    trunc = np.asarray(truncation, dtype)
    log_tol = np.asarray(_log_tol(tol, dtype), dtype)
    if n_terms is None:
        programs = _stored_programs()
        if programs is not None and _is_concrete(is_call):
            _, need = _plan_program(programs, model, market, strikes, expiries, trunc, log_tol,
                                    method)
        else:
            _, need = _plan(model, market, strikes, expiries, trunc, log_tol, method)
        _check_resolvable(need, model, expiries, method, tol)
        n_terms = _round_terms(need, _MIN_TERMS[method])
    elif int(n_terms) < 1:
        raise ValueError(f"n_terms must be a positive integer; got {n_terms!r}")
    return FourierPricer(jnp.asarray(strikes), jnp.asarray(expiries), jnp.asarray(is_call),
                         market, method, n_terms, trunc, log_tol, tol)


@functools.partial(jax.jit, static_argnames=("n_jumps",))
def _merton_series_core(model, market, strikes, expiries, is_call, n_jumps):
    from .black import black_price

    forward = market.forward(expiries)
    discount = market.discount(expiries)
    k = model.jump_compensator()
    lam_t = model.lam * expiries
    shapes = [jnp.shape(x) for x in (strikes, expiries, is_call, *jax.tree_util.tree_leaves(model))]
    ndim = len(jnp.broadcast_shapes(*shapes))
    n = jnp.arange(n_jumps, dtype=strikes.dtype).reshape((-1,) + (1,) * ndim)
    log_w = -lam_t + xlogy(n, lam_t) - gammaln(n + 1.0)
    weights = jnp.exp(log_w)
    var_n = model.sigma**2 * expiries + n * model.sigma_j**2
    fwd_n = forward * jnp.exp(n * (model.mu_j + 0.5 * model.sigma_j**2) - lam_t * k)
    vol_n = jnp.sqrt(var_n / expiries)
    prices = black_price(fwd_n, strikes, expiries, vol_n, is_call, 1.0)
    return _masked(discount * jnp.sum(weights * prices, axis=0), model, market, strikes,
                   expiries)


def merton_series_price(model: Merton, market: Market, strikes, expiries, is_call, *,
                        n_jumps: int | None = None):
    """Merton (1976) price as the Poisson mixture of Black-Scholes prices.

    Conditional on ``n`` jumps the log-price is Gaussian with variance
    ``sigma^2 T + n sigma_j^2`` and its conditional forward is ``F e^{-lam k T} (1 + k)^n``,
    ``k = E[e^Y] - 1``; the weights are the Poisson(``lam T``) probabilities of ``n`` jumps.
    ``n_jumps`` terms are summed (default: mean + 12 standard deviations + 20, at least 40).
    """
    if not isinstance(model, Merton):
        raise TypeError(f"merton_series_price needs a Merton model; got {type(model).__name__}")
    _validate(model, market, strikes, expiries)
    strikes, expiries, is_call, dtype = _as_inputs(model, market, strikes, expiries, is_call)
    if n_jumps is None:
        lam_t = float(np.max(np.asarray(model.lam) * np.asarray(expiries)))
        n_jumps = max(40, int(lam_t + 12.0 * np.sqrt(lam_t) + 20))
    model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), model)
    market = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), market)
    return _merton_series_core(model, market, strikes, expiries, is_call, int(n_jumps))
