"""Path simulation: time grids, the ``lax.scan`` driver, memory-bounded chunking, antithetics.

Every model is simulated in ``y_t = log(S_t / F_t)`` (``F_t`` the market forward), whose
exponential is a martingale; the spot returned is ``F(t) * exp(y_t)``, so any rate and
dividend are reproduced exactly and every scheme below has ``E[S_t] = F(t)`` exactly (up to
Monte Carlo noise), not just in the limit ``dt -> 0``.

Schemes:

* GBM (``"exact"``): exact Gaussian step.
* Merton, Kou (``"exact"``): exact diffusion step plus the exact compound-Poisson increment
  of each step - a Poisson number of jumps (inversion of one uniform, ``_poisson``) and the
  exact law of their sum (Merton: ``N mu_j + sigma_j sqrt(N) Z``; Kou: up and down counts
  by Poisson thinning, sums ``Gamma(N_up)/eta1`` and ``Gamma(N_down)/eta2``, each drawn as
  a sum of ``N`` exponentials); the drift is compensated with
  ``lam * jump_compensator() * dt``. Both are exact in law on any grid.
* Heston, Bates (``"qe"``, default): Andersen (2008) quadratic-exponential variance step
  with ``psi_c = 1.5``, central discretisation ``gamma1 = gamma2 = 1/2`` of the integrated
  variance and the martingale correction ``K0*``; (``"euler"``): full-truncation Euler
  (Lord, Koekkoek and van Dijk, 2010) of the log-spot and variance. Bates adds Merton jumps,
  compensated with ``lam (exp(mu_j + sigma_j^2/2) - 1)``.

Weak bias of the Heston schemes, measured against COS prices with ``v0 = theta = 0.36,
kappa = 2, xi = 1.2, rho = -0.6`` (Feller ratio 1.0), spot 100, ``r = 3 %``, ``q = 1 %``,
``T = 0.5`` in 16 steps (``dt = 1/32``), strikes 70-140, antithetic runs (figures repeated in
``tests/test_montecarlo.py``, whose tolerances use them):

* QE, Heston, 3.2e7 paths: calls +0.0003 .. +0.0033, puts -0.0043 .. -0.0013 (standard
  errors 0.002-0.003). Bates, 1.6e7 paths: calls +0.001 .. +0.003, puts -0.008 .. -0.006
  (about -2 se). So the QE bias is below 0.01, i.e. 1e-4 of spot or ~0.04 vol points.
* Full-truncation Euler, Heston, 8e6 paths: calls +0.013 (K=70) .. +0.060 (K=115), puts
  +0.006 .. +0.053 (se ~0.005, up to 12 se); Bates, 1.6e7 paths: +0.003 .. +0.052. A real
  upward bias of up to ~0.06 (~0.2 vol points at the money): the truncated variance runs
  high near zero.

Merton and Kou (exact schemes), 4e6 paths: every error within 1.4 se.

Randomness: paths come in fixed blocks of ``BLOCK_SIZE`` paths. Block ``b`` draws all its
numbers from ``jax.random.fold_in(key, b)`` (and step ``i`` of it from
``fold_in(fold_in(key, b), i)``), so results do not depend on ``chunk_size`` or on how many
blocks a chunk vectorises, and every device draws the same numbers (results then agree to
the rounding of the backend's math functions). A chunk is one jitted call that runs a
``lax.scan`` over the steps of several blocks at once; Python loops only over chunks.

Antithetic variates: within each block, half of the paths use base draws and the other half
their mirrors - negated normals, hence ``1 - U`` for the QE uniform ``U = Phi(Z)`` and
mirrored Merton jump sizes; the same Poisson counts (and, for Kou, the same exponential jump
sizes, which have no cheap exact mirror). Mirrored paths are interleaved: rows ``2k`` and
``2k + 1`` of the output form a pair, so ``n_paths`` must be even.

References:
  L. Andersen, "Simple and efficient simulation of the Heston stochastic volatility model",
  J. Comput. Finance 11(3), 2008.
  R. Lord, R. Koekkoek, D. van Dijk, "A comparison of biased simulation schemes for
  stochastic volatility models", Quantitative Finance 10(2), 2010.
"""

from __future__ import annotations

import collections
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import ndtr

from ._arrays import float_dtype
from .models import GBM, Bates, Heston, Kou, Market, Merton
from .models.base import mask_invalid, model_valid

BLOCK_SIZE = 512
"""Paths per random-number block (fixed: changing it changes every simulated number)."""

PSI_C = 1.5
"""Andersen's switching level between the quadratic and exponential QE branches."""

DEFAULT_MEMORY_BUDGET = 256 * 2**20
"""Bytes of working memory a chunk may use when ``chunk_size`` is not given."""

RECORDS = ("full", "summary")

_SCHEMES = {
    GBM: ("exact",),
    Merton: ("exact",),
    Kou: ("exact",),
    Heston: ("qe", "euler"),
    Bates: ("qe", "euler"),
}


class Paths(NamedTuple):
    """Simulated paths at the observation times.

    Attributes:
      times: observation times ``[n_times]`` (years, excluding ``t = 0``).
      spot: spot prices ``[n_paths, n_times]``.
      variance: instantaneous variance ``[n_paths, n_times]`` for Heston/Bates (for the Euler
        scheme its truncation ``max(v, 0)``), ``None`` for the other models.
    """

    times: jax.Array
    spot: jax.Array
    variance: jax.Array | None


class PathSummary(NamedTuple):
    """Per-path statistics over the monitoring dates, each shaped ``[n_paths]``.

    The monitoring dates are the simulation grid ``t_0 = 0 < t_1 < ... < t_n = times[-1]``
    (every step date, which includes every observation time).

    Attributes:
      final: ``S(t_n)``.
      maximum: ``max(S(t_0), S(t_1), ..., S(t_n))`` - includes the initial spot.
      minimum: ``min(S(t_0), S(t_1), ..., S(t_n))`` - includes the initial spot.
      average: ``(S(t_1) + ... + S(t_n)) / n`` - the step dates, excluding ``t_0``.
    """

    final: jax.Array
    maximum: jax.Array
    minimum: jax.Array
    average: jax.Array


class TimeGrid(NamedTuple):
    """A simulation grid (NumPy float64, concrete).

    Attributes:
      times: observation times ``[n_times]``.
      step_times: end date of each step ``[n_steps]`` (the last equals ``times[-1]``).
      dts: step lengths ``[n_steps]``.
      obs_slot: for each step, the index of the observation time it ends on, else ``-1``.
    """

    times: np.ndarray
    step_times: np.ndarray
    dts: np.ndarray
    obs_slot: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.dts.shape[0])


def time_grid(times, *, n_steps: int | None = None, max_dt: float | None = None) -> TimeGrid:
    """Subdivide the observation intervals ``(0, t_1], (t_1, t_2], ...`` into equal steps.

    Args:
      times: increasing positive observation times (a scalar is one time).
      n_steps: total number of steps, distributed over the intervals in proportion to their
        length (largest remainder, at least one per interval); needs ``n_steps >= n_times``.
      max_dt: alternatively, the largest step: each interval gets ``ceil(length / max_dt)``
        equal steps. With neither, each interval is one step.

    Raises:
      ValueError: unsorted, non-positive or non-finite times, or a bad step specification.
    """
    try:
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"times must be numeric; got {times!r}") from None
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence; got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"times must be finite; got {t.tolist()}")
    if t[0] <= 0:
        raise ValueError(f"times must be > 0 (t = 0 is the start); got times[0] = {t[0]!r}")
    if np.any(np.diff(t) <= 0):
        i = int(np.argmax(np.diff(t) <= 0))
        raise ValueError(
            f"times must be strictly increasing; got times[{i}] = {t[i]!r} >= "
            f"times[{i + 1}] = {t[i + 1]!r}"
        )
    if n_steps is not None and max_dt is not None:
        raise ValueError("give at most one of n_steps and max_dt")
    lengths = np.diff(np.concatenate([[0.0], t]))
    if n_steps is not None:
        if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < t.size:
            raise ValueError(
                f"n_steps must be an integer >= the number of observation times ({t.size}); "
                f"got {n_steps!r}"
            )
        n_steps = int(n_steps)
        share = lengths / t[-1] * n_steps
        counts = np.maximum(np.floor(share).astype(np.int64), 1)
        while counts.sum() > n_steps:  # the floor of 1 overshot: take from the longest steps
            counts[np.argmax(np.where(counts > 1, lengths / counts, -1.0))] -= 1
        while counts.sum() < n_steps:  # largest remainder: give to the longest steps
            counts[np.argmax(lengths / counts)] += 1
    elif max_dt is not None:
        if not (np.isfinite(max_dt) and max_dt > 0):
            raise ValueError(f"max_dt must be a finite positive step; got {max_dt!r}")
        counts = np.maximum(np.ceil(lengths / max_dt - 1e-9).astype(np.int64), 1)
    else:
        counts = np.ones(t.size, dtype=np.int64)
    starts = np.concatenate([[0.0], t[:-1]])
    step_times, slots = [], []
    for j, (a, b, c) in enumerate(zip(starts, t, counts, strict=True)):
        pts = a + (b - a) * np.arange(1, c + 1) / c
        pts[-1] = b
        step_times.append(pts)
        slot = np.full(c, -1, dtype=np.int32)
        slot[-1] = j
        slots.append(slot)
    step_times = np.concatenate(step_times)
    dts = np.diff(np.concatenate([[0.0], step_times]))
    return TimeGrid(t, step_times, dts, np.concatenate(slots))


def default_scheme(model) -> str:
    """``"qe"`` for the stochastic-volatility models, ``"exact"`` otherwise."""
    return _schemes_for(model)[0]


def _schemes_for(model):
    for cls, schemes in _SCHEMES.items():
        if type(model) is cls:
            return schemes
    raise TypeError(
        f"cannot simulate a {type(model).__name__}; supported models: "
        + ", ".join(c.__name__ for c in _SCHEMES)
    )


def _check_scheme(model, scheme):
    schemes = _schemes_for(model)
    if scheme is None:
        return schemes[0]
    if scheme not in schemes:
        raise ValueError(
            f"scheme {scheme!r} is not available for {type(model).__name__}; "
            f"choose one of {schemes}"
        )
    return scheme


# --------------------------------------------------------------------------------------------
# random draws per block


def _mirror(x, antithetic):
    """``[nb, half]`` base draws -> ``[nb, 2*half]`` with rows ``2k, 2k+1`` = (x, -x)."""
    if not antithetic:
        return x
    return jnp.stack([x, -x], axis=-1).reshape(x.shape[0], -1)


def _repeat(x, antithetic):
    """``[nb, half]`` -> ``[nb, 2*half]`` with each draw shared by its pair."""
    if not antithetic:
        return x
    return jnp.repeat(x, 2, axis=-1)


def _normals(keys, n, half, dtype, antithetic):
    z = jax.vmap(lambda k: jax.random.normal(k, (n, half), dtype))(keys)  # [nb, n, half]
    z = jnp.moveaxis(z, 1, 0)  # [n, nb, half]
    return [_mirror(z[i], antithetic) for i in range(n)]


def _normals_with_tail(keys, n, half, dtype, antithetic):
    """As ``_normals``, plus ``1 - Phi(z)`` of the first normal at no extra cost.

    ``jax.random.normal`` draws ``u ~ U(-1, 1)`` and returns ``sqrt(2) erfinv(u)``; drawing
    ``u`` here gives bit-identical normals and ``1 - Phi(z) = (1 - u) / 2`` exactly, with no
    normal CDF to evaluate (the dominant float64 cost of the QE step on CPU).
    """
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    u = jax.vmap(lambda k: jax.random.uniform(k, (n, half), dtype, lo, 1.0))(keys)
    u = jnp.moveaxis(u, 1, 0)  # [n, nb, half]
    z = np.sqrt(2.0).astype(dtype) * lax.erf_inv(u)
    tail = 0.5 * (1.0 - u[0])
    if antithetic:  # the mirror -z has tail 1 - tail = (1 + u) / 2
        tail = jnp.stack([tail, 0.5 * (1.0 + u[0])], axis=-1).reshape(tail.shape[0], -1)
    return [_mirror(z[i], antithetic) for i in range(n)] + [tail]


def _poisson(keys, rate, half, dtype, antithetic):
    """Poisson(rate) counts ``[nb, block]`` by inversion of one uniform per draw.

    ``N = #{k >= 0 : U > P(Poisson <= k)}`` with the CDF summed term by term in log space
    (no underflow of ``exp(-rate)`` for large rates). The loop runs ``max N + 1`` times over
    the whole chunk, but each count depends on its own uniform only. Exact up to the
    rounding of the CDF in the working dtype; several times faster to run and to compile
    than ``jax.random.poisson``'s per-element rejection loops.
    """
    # counts are integers: no derivative flows through them (see ``pricing.mc_greeks`` for the
    # likelihood-ratio term that accounts for their dependence on the rate)
    rate = lax.stop_gradient(jnp.asarray(rate, dtype))
    u = jax.vmap(lambda k: jax.random.uniform(k, (half,), dtype))(keys)
    log_rate = jnp.log(jnp.where(rate > 0, rate, 1.0))
    # P(N > k_max) < 1e-80: a termination guard (the largest over per-block rates)
    k_max = jnp.max(rate + 20.0 * jnp.sqrt(rate) + 40.0)

    def term(k):
        kf = k.astype(dtype)
        log_p = -rate + kf * log_rate - lax.lgamma(kf + 1.0)
        return jnp.where((rate > 0) | (k == 0), jnp.exp(log_p), 0.0)

    def cond(carry):
        k, _, cdf = carry
        return jnp.any(u > cdf) & (k.astype(dtype) < k_max)

    def body(carry):
        k, n, cdf = carry
        n = n + (u > cdf).astype(jnp.int32)
        k = k + 1
        return k, n, cdf + term(k)

    k0 = jnp.int32(0)
    _, n, _ = lax.while_loop(cond, body, (k0, jnp.zeros(u.shape, jnp.int32), term(k0)))
    return _repeat(n, antithetic)


@functools.partial(jax.jit, static_argnames=("half", "antithetic"))
def compound_poisson_step(model, keys, dt, half, antithetic=False):
    """One step of the jump part for a block of paths.

    Args:
      model: ``Merton``, ``Kou`` or ``Bates`` (scalar leaves).
      keys: ``[n_blocks]`` keys; block ``b`` draws from ``keys[b]`` only.
      dt: step length.
      half: draws per block (``BLOCK_SIZE // 2`` with antithetics, ``BLOCK_SIZE`` without).
      antithetic: mirror the jump sizes (Merton/Bates) and share the counts within pairs.

    Returns:
      ``(counts, jump_sum)``: ``counts`` an int32 array ``[n_blocks, block]`` (for Kou a
      pair ``(n_up, n_down)``) and ``jump_sum`` the sum of the log-jumps in the step
      (uncompensated), in the model's dtype.
    """
    dtype = jnp.result_type(dt)
    if isinstance(model, Kou):
        k_up, k_dn, k_gu, k_gd = (keys[:, i] for i in range(4))
        n_up = _poisson(k_up, model.lam * model.p * dt, half, dtype, False)
        n_dn = _poisson(k_dn, model.lam * (1.0 - model.p) * dt, half, dtype, False)

        def gamma_sum(ks, n, eta):
            # Gamma(n)/eta as the sum of the first n of a stream of Exp(1) draws (exact, no
            # rejection); the loop runs max(n) times, the draw k of block b depends only on
            # (ks[b], k), so the values do not depend on the other blocks of the chunk.
            def body(carry):
                k, acc = carry
                e = jax.vmap(
                    lambda kk: jax.random.exponential(jax.random.fold_in(kk, k), (half,), dtype)
                )(ks)
                return k + 1, acc + jnp.where(k < n, e, 0.0)

            _, total = lax.while_loop(
                lambda c: c[0] < jnp.max(n), body, (jnp.int32(0), jnp.zeros(n.shape, dtype))
            )
            return total / eta

        up = gamma_sum(k_gu, n_up, model.eta1)
        dn = gamma_sum(k_gd, n_dn, model.eta2)
        jump = _repeat(up - dn, antithetic)
        return (_repeat(n_up, antithetic), _repeat(n_dn, antithetic)), jump
    k_n, k_z = keys[:, 0], keys[:, 1]
    counts = _poisson(k_n, model.lam * dt, half, dtype, antithetic)
    (z,) = _normals(k_z, 1, half, dtype, antithetic)
    nf = counts.astype(dtype)
    jump = nf * model.mu_j + model.sigma_j * jnp.sqrt(nf) * z
    return counts, jump


# --------------------------------------------------------------------------------------------
# one step of each model, on y = log(S/F) (and v)


def _upper_tail(z):
    """``1 - Phi(z) = Phi(-z)``: ``ndtr`` in float32, ``erfc`` in float64 (XLA's float64
    ``ndtr`` evaluates both erf and erfc and costs ~6x more on CPU; the reverse holds in
    float32)."""
    if z.dtype == jnp.float64:
        return 0.5 * lax.erfc(z * np.sqrt(0.5))
    return ndtr(-z)


@jax.jit
def _qe_variance(model, v, dt, zv, one_m_u=None):
    """Andersen's QE step of the CIR variance and the martingale-corrected drift.

    Returns ``(v_next, drift, k2, k3)`` with ``drift = K0* + K1 v`` and ``K3 = K4`` so that
    ``y_next = y + drift + K2 v_next + sqrt(K3 (v + v_next)) Z`` has ``E[e^{y_next}] = e^y``.
    (Written with one logarithm per path for the two branches of ``K0*``: transcendental
    functions dominate the float64 cost on CPU.)
    """
    kappa, theta, xi, rho = model.kappa, model.theta, model.xi, model.rho
    ekt = jnp.exp(-kappa * dt)
    one_m = -jnp.expm1(-kappa * dt)
    m = theta + (v - theta) * ekt
    s2 = v * (xi**2 * ekt / kappa * one_m) + theta * xi**2 / (2.0 * kappa) * one_m**2
    # psi -> 0 as xi -> 0 (deterministic variance); its floor keeps (2 / psi)^2 and b2 finite
    # (the floor's effect on v_next is relative sqrt(floor), far below rounding)
    psi = jnp.maximum(s2 / (m * m), float(np.finfo(jnp.result_type(s2)).tiny) ** 0.45)
    quad = psi <= PSI_C
    # quadratic branch: v' = a (b + Zv)^2
    inv = 2.0 / jnp.where(quad, psi, 1.0)
    b2 = inv - 1.0 + jnp.sqrt(inv * jnp.maximum(inv - 1.0, 0.0))
    a = m / (1.0 + b2)
    v_quad = a * (jnp.sqrt(b2) + zv) ** 2
    # exponential branch: P(v' = 0) = p, else Exp(beta); U = Phi(Zv), 1 - U = Phi(-Zv)
    psi_e = jnp.where(quad, 2.0, psi)
    p = (psi_e - 1.0) / (psi_e + 1.0)
    beta = (1.0 - p) / m
    if one_m_u is None:
        one_m_u = _upper_tail(zv)
    v_exp = jnp.where(one_m_u >= 1.0 - p, 0.0, jnp.log((1.0 - p) / one_m_u) / beta)
    v_next = jnp.where(quad, v_quad, v_exp)
    # integrated variance, gamma1 = gamma2 = 1/2
    c = 0.5 * dt * (kappa * rho / xi - 0.5)
    k1 = c - rho / xi
    k2 = c + rho / xi
    k3 = 0.5 * dt * (1.0 - rho * rho)
    big_a = k2 + 0.5 * k3
    # martingale correction K0* = -A b2 a / (1 - 2 A a) + log(1 - 2 A a) / 2 (quadratic)
    # or -log(p + beta (1 - p) / (beta - A)) (exponential), minus (K1 + K3/2) v; it needs
    # 2 A a < 1 and A < beta (always true for rho <= 0); elsewhere Andersen's plain K0.
    one_m_2aa = 1.0 - 2.0 * big_a * a
    beta_m_a = beta - big_a
    ok = jnp.where(quad, one_m_2aa > 0, beta_m_a > 0)
    log_arg = jnp.where(quad, one_m_2aa, p + beta * (1.0 - p) / beta_m_a)
    log_term = jnp.log(jnp.where(ok, log_arg, 1.0))
    k0_star = jnp.where(
        quad, -big_a * b2 * a / jnp.where(ok, one_m_2aa, 1.0) + 0.5 * log_term, -log_term
    ) - (k1 + 0.5 * k3) * v
    k0_plain = -rho * kappa * theta / xi * dt
    k0 = jnp.where(ok, k0_star, k0_plain)
    return v_next, k0 + k1 * v, k2, k3


def _sqrt0(x):
    """``sqrt(x)`` for ``x >= 0`` with derivative 0 (not ``inf``) at 0: same values, and no
    ``0 * inf = nan`` in the pathwise derivative of a path whose variance sits at zero."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _make_step(model, scheme, half, antithetic, dtype):
    """``step(keys, dt, y, v) -> (y, v, counts)`` for one time step of a chunk of blocks.

    ``counts`` are the step's jump counts (``[n_blocks, block]`` int32; for Kou the pair
    ``(n_up, n_down)``), ``None`` for models without jumps.
    """

    def normals(keys, n):
        return _normals(keys, n, half, dtype, antithetic)

    if isinstance(model, GBM):

        def step(keys, dt, y, v):
            (z,) = normals(keys[:, 0], 1)
            s = model.sigma
            return y - 0.5 * s * s * dt + s * jnp.sqrt(dt) * z, v, None

        return step, 1

    if isinstance(model, Merton | Kou):

        def step(keys, dt, y, v):
            (z,) = normals(keys[:, 0], 1)
            counts, jump = compound_poisson_step(model, keys[:, 1:], dt, half, antithetic)
            s = model.sigma
            drift = -0.5 * s * s * dt - model.lam * model.jump_compensator() * dt
            return y + drift + s * jnp.sqrt(dt) * z + jump, v, counts

        return step, 5

    jumps = isinstance(model, Bates)

    def add_jumps(keys, dt, y):
        if not jumps:
            return y, None
        counts, jump = compound_poisson_step(model, keys[:, 1:], dt, half, antithetic)
        return y + jump - model.lam * model.jump_compensator() * dt, counts

    if scheme == "euler":

        def step(keys, dt, y, v):
            zv, z = normals(keys[:, 0], 2)
            vp = jnp.maximum(v, 0.0)
            sq = _sqrt0(vp * dt)
            rho = model.rho
            y = y - 0.5 * vp * dt + sq * (rho * zv + jnp.sqrt(1.0 - rho * rho) * z)
            v = v + model.kappa * (model.theta - vp) * dt + model.xi * sq * zv
            y, counts = add_jumps(keys, dt, y)
            return y, v, counts

    else:

        def step(keys, dt, y, v):
            zv, z, one_m_u = _normals_with_tail(keys[:, 0], 2, half, dtype, antithetic)
            v_next, drift, k2, k3 = _qe_variance(model, v, dt, zv, one_m_u)
            y = y + drift + k2 * v_next + _sqrt0(k3 * (v + v_next)) * z
            y, counts = add_jumps(keys, dt, y)
            return y, v_next, counts

    return step, 3


# --------------------------------------------------------------------------------------------
# the jitted chunk


SUMMARY_FIELDS = PathSummary._fields


@functools.partial(
    jax.jit,
    static_argnames=("scheme", "n_blocks", "antithetic", "record", "n_obs", "fields",
                     "jump_counts", "checkpoint"),
)
def simulate_blocks(
    model,
    market,
    key,
    first_block,
    dts,
    step_times,
    obs_slot,
    *,
    scheme: str,
    n_blocks: int,
    antithetic: bool,
    record: str,
    n_obs: int,
    fields: tuple[str, ...] | None = None,
    jump_counts: bool = False,
    checkpoint: bool = False,
):
    """Simulate blocks ``first_block, ..., first_block + n_blocks - 1`` in one ``lax.scan``.

    The single-chunk core behind ``simulate``: jitted (``scheme``, ``n_blocks``,
    ``antithetic``, ``record``, ``n_obs``, ``fields``, ``jump_counts`` and ``checkpoint``
    static), traceable, differentiable and ``vmap``-able over the model, the market and the
    key. Inputs are not validated here.

    Args:
      model, market: parameter pytrees of one floating dtype, with scalar leaves, or leaves
        shaped ``[n_blocks, 1]`` (one parameter set per block, broadcast against the
        ``[n_blocks, BLOCK_SIZE]`` state: differentiating with respect to them gives
        per-block derivatives).
      key: the base PRNG key; block ``b`` uses ``jax.random.fold_in(key, b)``.
      first_block: index of the first block (an int, may be traced).
      dts, step_times, obs_slot: the ``TimeGrid`` arrays (``dts``/``step_times`` in the
        simulation dtype), ``[n_steps]``; ``dts`` and ``step_times`` may also be
        ``[n_steps, n_blocks, 1]`` (a grid per block).
      fields: with ``record="summary"``, carry only these ``PathSummary`` fields through the
        scan (the others are returned as ``None``; ``"final"`` is always computed, from the
        last state). ``None`` (default): all four.
      jump_counts: also return the total jump count of each path over all steps (an int32
        ``[n_blocks * BLOCK_SIZE]`` array; for Kou the pair ``(n_up, n_down)``; ``None`` for
        models without jumps): the output is then ``(output, counts)``.
      checkpoint: wrap the step in ``jax.checkpoint``, so that reverse-mode differentiation
        stores only the scan carry of each step and recomputes the step's intermediates.

    Returns:
      ``PathSummary`` of ``[n_blocks * BLOCK_SIZE]`` arrays (``record="summary"``) or a pair
      ``(spot, variance)`` of ``[n_blocks * BLOCK_SIZE, n_obs]`` arrays (``variance`` is
      ``None`` for models without stochastic volatility). Identical numbers whatever
      ``fields`` and ``checkpoint``; with ``jump_counts`` a jump model's paths can differ
      in the last bit (the compiler may fuse, and contract into fused multiply-adds, the
      jump step differently when its counts are also an output).
    """
    dtype = dts.dtype
    half = BLOCK_SIZE // 2 if antithetic else BLOCK_SIZE
    block_ids = first_block + jnp.arange(n_blocks, dtype=jnp.int32)
    block_keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(block_ids)
    step, n_keys = _make_step(model, scheme, half, antithetic, dtype)
    sv = isinstance(model, Heston | Bates)
    kou = isinstance(model, Kou)
    with_counts = jump_counts and isinstance(model, Merton | Kou | Bates)
    shape = (n_blocks, BLOCK_SIZE)
    y0 = jnp.zeros(shape, dtype)
    v0 = jnp.full(shape, model.v0, dtype) if sv else jnp.zeros((), dtype)
    s0 = jnp.full(shape, market.spot, dtype)
    if fields is not None and record == "summary":
        unknown = set(fields) - set(SUMMARY_FIELDS)
        if unknown:
            raise ValueError(f"unknown summary fields {sorted(unknown)}; "
                             f"choose from {SUMMARY_FIELDS}")
        running = tuple(f for f in ("maximum", "minimum", "average") if f in fields)
    else:
        running = None
    if record == "summary":
        if running is None:
            rec0 = (s0, s0, s0, jnp.zeros(shape, dtype))
        else:
            init = {"maximum": s0, "minimum": s0, "average": jnp.zeros(shape, dtype)}
            rec0 = tuple(init[f] for f in running)
    else:
        rec0 = (
            jnp.zeros((n_obs,) + shape, dtype),
            jnp.zeros((n_obs,) + shape, dtype) if sv else None,
        )
    if with_counts:
        zero = jnp.zeros(shape, jnp.int32)
        n0 = (zero, zero) if kou else zero
    else:
        n0 = None

    def body(carry, xs):
        y, v, rec, n_total = carry
        i, dt, t, slot = xs
        keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, i), n_keys))(
            block_keys
        )
        y, v, counts = step(keys, dt, y, v)
        if with_counts:
            n_total = jax.tree_util.tree_map(jnp.add, n_total, counts)
        if record == "summary" and running is not None:
            if running:
                s = market.forward(t) * jnp.exp(y)
                update = {
                    "maximum": lambda r: jnp.maximum(r, s),
                    "minimum": lambda r: jnp.minimum(r, s),
                    "average": lambda r: r + s,
                }
                rec = tuple(update[f](r) for f, r in zip(running, rec, strict=True))
            return (y, v, rec, n_total), None
        s = market.forward(t) * jnp.exp(y)
        if record == "summary":
            _, hi, lo, total = rec
            rec = (s, jnp.maximum(hi, s), jnp.minimum(lo, s), total + s)
        else:
            j = jnp.maximum(slot, 0)
            keep = slot >= 0
            spot_buf, var_buf = rec
            spot_buf = spot_buf.at[j].set(jnp.where(keep, s, spot_buf[j]))
            if sv:
                var_buf = var_buf.at[j].set(jnp.where(keep, jnp.maximum(v, 0.0), var_buf[j]))
            rec = (spot_buf, var_buf)
        return (y, v, rec, n_total), None

    if checkpoint:
        # scan already keeps the recomputation from being merged away (no CSE across steps)
        body = jax.checkpoint(body, prevent_cse=False)
    steps = jnp.arange(dts.shape[0], dtype=jnp.int32)
    (y, _, rec, n_total), _ = lax.scan(
        body, (y0, v0, rec0, n0), (steps, dts, step_times, obs_slot)
    )
    n = n_blocks * BLOCK_SIZE
    # an invalid parameter set (possible only when traced: concrete ones are validated
    # first) gives NaN paths, never finite ones
    ok = model_valid(model, market)
    rec = jax.tree_util.tree_map(lambda r: mask_invalid(r, jnp.reshape(ok, (-1, 1))), rec)
    y = mask_invalid(y, jnp.reshape(ok, (-1, 1)))
    if record == "summary":
        if running is None:
            final, hi, lo, total = (r.reshape(n) for r in rec)
        else:
            final = (market.forward(step_times[-1]) * jnp.exp(y)).reshape(n)
            got = dict(zip(running, (r.reshape(n) for r in rec), strict=True))
            hi, lo, total = got.get("maximum"), got.get("minimum"), got.get("average")
        out = PathSummary(final, hi, lo, None if total is None else total / dts.shape[0])
    else:
        spot_buf, var_buf = rec
        spot = jnp.moveaxis(spot_buf.reshape(n_obs, n), 0, 1)
        var = jnp.moveaxis(var_buf.reshape(n_obs, n), 0, 1) if sv else None
        out = (spot, var)
    if not jump_counts:
        return out
    counts = None
    if with_counts:
        counts = jax.tree_util.tree_map(lambda c: c.reshape(n), n_total)
    return out, counts


# --------------------------------------------------------------------------------------------
# the public driver


class ChunkPlan(NamedTuple):
    """How ``n_paths`` is split: ``n_chunks`` calls of ``blocks_per_chunk`` blocks each."""

    n_paths: int
    n_blocks: int
    n_chunks: int
    blocks_per_chunk: int

    @property
    def chunk_paths(self) -> int:
        return self.blocks_per_chunk * BLOCK_SIZE


def bytes_per_path(model, record: str, n_obs: int, itemsize: int) -> int:
    """Rough working memory of one path inside a chunk (state, records, step temporaries)."""
    sv = isinstance(model, Heston | Bates)
    state = 2 + (1 if sv else 0)
    rec = 4 if record == "summary" else n_obs * (2 if sv else 1)
    temporaries = 24  # normals, threefry bits, jump draws, branch values of one step
    return itemsize * (state + rec + temporaries) + 4 * 8


def plan_chunks(
    n_paths: int, per_path_bytes: int, chunk_size: int | None = None,
    memory_budget: int | None = None, min_chunks: int | None = None,
) -> ChunkPlan:
    """Balanced chunks of whole blocks, each within ``chunk_size`` paths (or the budget).

    ``min_chunks`` (default: the number of local devices) splits the work further so that
    every device gets a chunk; chunking never changes the simulated numbers.
    """
    n_blocks = -(-n_paths // BLOCK_SIZE)
    if chunk_size is None:
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
        chunk_size = max(budget // max(per_path_bytes, 1), BLOCK_SIZE)
    elif isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    if min_chunks is None:
        min_chunks = jax.local_device_count()
    max_blocks = max(int(chunk_size) // BLOCK_SIZE, 1)
    n_chunks = min(max(-(-n_blocks // max_blocks), int(min_chunks)), n_blocks)
    per_chunk = -(-n_blocks // n_chunks)
    n_chunks = -(-n_blocks // per_chunk)
    return ChunkPlan(n_paths, n_blocks, n_chunks, per_chunk)


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_scalar_leaves(model, market):
    for tree in (model, market):
        for name, leaf in zip(tree._fields, tree, strict=True):
            if jnp.ndim(leaf) != 0:
                raise ValueError(
                    f"{type(tree).__name__}.{name} must be a scalar here (got shape "
                    f"{jnp.shape(leaf)}); simulate a batch of parameters with jax.vmap"
                )


def prepare(model, market, *, n_paths, scheme, antithetic, record, dtype):
    """Validate the common inputs and cast the parameters; returns ``(model, market, scheme,
    dtype)``. Shared by ``simulate`` and ``mc_price``."""
    scheme = _check_scheme(model, scheme)
    if not isinstance(market, Market):
        raise TypeError(f"market must be a Market; got {type(market).__name__}")
    model.validate()
    market.validate()
    _check_scalar_leaves(model, market)
    n_paths = _check_int("n_paths", n_paths)
    if antithetic and n_paths % 2:
        raise ValueError(f"antithetic sampling needs an even n_paths; got {n_paths}")
    if record not in RECORDS:
        raise ValueError(f"record must be one of {RECORDS}; got {record!r}")
    dtype = float_dtype(model, market) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating type; got {dtype}")
    cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)
    return cast(model), cast(market), scheme, dtype


def run_chunks(model, market, grid: TimeGrid, key, plan: ChunkPlan, *, scheme, antithetic,
               record, dtype):
    """Yield ``(start_path, n_valid, chunk_output)`` for each chunk of ``plan``, in order.

    Chunks go round-robin to the local devices (e.g. several GPUs) with one chunk in flight
    per device, so devices work concurrently while the caller consumes finished chunks. The
    numbers do not depend on the device count: randomness is keyed by block.
    """
    devices = jax.local_devices()
    host = (
        model, market, key,
        jnp.asarray(grid.dts, dtype), jnp.asarray(grid.step_times, dtype),
        jnp.asarray(grid.obs_slot, jnp.int32),
    )
    placed = {}
    in_flight = collections.deque()
    for c in range(plan.n_chunks):
        first = c * plan.blocks_per_chunk
        start = first * BLOCK_SIZE
        n_valid = min(plan.chunk_paths, plan.n_paths - start)
        if n_valid <= 0:
            break
        device = devices[c % len(devices)]
        if len(devices) == 1:
            args = host
        else:
            if device not in placed:
                placed[device] = jax.device_put(host, device)
            args = placed[device]
        m, mk, k, dts, step_times, obs_slot = args
        first_arr = jnp.asarray(first, jnp.int32)
        if len(devices) > 1:
            first_arr = jax.device_put(first_arr, device)
        out = simulate_blocks(
            m, mk, k, first_arr, dts, step_times, obs_slot,
            scheme=scheme, n_blocks=plan.blocks_per_chunk, antithetic=bool(antithetic),
            record=record, n_obs=int(grid.times.size),
        )
        in_flight.append((start, n_valid, out))
        if len(in_flight) >= len(devices):
            yield in_flight.popleft()
    while in_flight:
        yield in_flight.popleft()


def simulate(
    model,
    market: Market,
    times,
    *,
    key,
    n_paths: int,
    scheme: str | None = None,
    n_steps: int | None = None,
    max_dt: float | None = None,
    antithetic: bool = False,
    record: str = "full",
    chunk_size: int | None = None,
    dtype=None,
    memory_budget: int | None = None,
):
    """Simulate spot (and variance) paths of any model.

    Args:
      model: ``GBM``, ``Merton``, ``Kou``, ``Heston`` or ``Bates`` with scalar leaves (for a
        batch of parameter sets, ``jax.vmap`` this function over the model).
      market: ``Market(spot, rate, div)``.
      times: increasing observation times in years, all ``> 0``.
      key: a JAX PRNG key.
      n_paths: number of paths.
      scheme: ``"qe"`` (default) or ``"euler"`` for Heston/Bates; ``"exact"`` (the only and
        default one) for GBM, Merton and Kou.
      n_steps / max_dt: the simulation grid (``time_grid``); by default one step per
        observation interval for the exact schemes and ``max_dt = 1/252`` (daily) for
        Heston/Bates.
      antithetic: mirrored pairs in rows ``(2k, 2k + 1)`` (see module docstring).
      record: ``"full"`` returns ``Paths`` at the observation times; ``"summary"`` returns a
        ``PathSummary`` (final, max, min, average over all step dates; O(n_paths) memory).
      chunk_size: paths per jitted call (rounded to whole blocks of ``BLOCK_SIZE``); does not
        change the results. Default: as many as fit ``memory_budget`` bytes (256 MiB).
      dtype: simulation dtype; default that of the model/market leaves.

    Returns:
      ``Paths`` (``spot[n_paths, n_times]``) or ``PathSummary`` (``[n_paths]`` arrays).

    Raises:
      ValueError: invalid parameters, market, times, step specification, ``n_paths``,
        ``scheme`` or ``record``.

    Examples:
      >>> import jax, qmr_jax as qmr
      >>> m = qmr.Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.5)
      >>> p = qmr.simulate(m, qmr.Market(100.0), [0.25, 0.5], key=jax.random.key(0),
      ...                  n_paths=1000, n_steps=32)
      >>> p.spot.shape
      (1000, 2)
    """
    model, market, scheme, dtype = prepare(
        model, market, n_paths=n_paths, scheme=scheme, antithetic=antithetic, record=record,
        dtype=dtype,
    )
    if n_steps is None and max_dt is None and scheme != "exact":
        max_dt = 1.0 / 252.0
    grid = time_grid(times, n_steps=n_steps, max_dt=max_dt)
    plan = plan_chunks(
        n_paths,
        bytes_per_path(model, record, grid.times.size, jnp.dtype(dtype).itemsize),
        chunk_size,
        memory_budget,
    )
    parts = []
    for _, n_valid, out in run_chunks(
        model, market, grid, key, plan, scheme=scheme, antithetic=antithetic, record=record,
        dtype=dtype,
    ):
        parts.append(jax.tree_util.tree_map(lambda x, n=n_valid: x[:n], out))
    if jax.local_device_count() > 1:  # gather chunks from every device onto the first
        parts = jax.device_put(parts, jax.local_devices()[0])
    joined = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *parts)
    if record == "summary":
        return joined
    spot, var = joined
    return Paths(jnp.asarray(grid.times, dtype), spot, var)
