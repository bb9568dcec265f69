"""Differentiable Monte Carlo valuation and pathwise Greeks with standard errors.

``mc_value`` is a traceable Monte Carlo estimator of a discounted payoff: ``jit``, ``grad``,
``jacfwd``/``jacrev`` and ``vmap`` go through it with respect to every model and market
leaf and the calendar time ``elapsed`` (the simulation runs to ``payoff.expiry - elapsed``
in ``n_steps`` equal steps, so theta comes out of autodiff). Its signature makes it a value
function for ``qmr_jax.sensitivities`` through ``functools.partial``::

    value_fn = functools.partial(mc_value, payoff=p, key=key, n_paths=2**16, n_steps=32,
                                 smoothing=0.01)
    qmr.greeks(value_fn, model, market)            # delta, gamma, vega, ..., theta, rho

``mc_greeks`` returns the value and the derivatives with respect to every input (spot, rate,
div, each model field and ``elapsed``), optionally second derivatives, each with a standard
error.

Random numbers: the paths are those of ``mc_price`` with the same key (``simulate_blocks``,
blocks of ``BLOCK_SIZE`` paths keyed by ``fold_in``), so without smoothing ``mc_value`` of a
European equals ``mc_price``'s plain estimate to rounding, and finite differences of
``mc_value`` on one key are differences on common random numbers.

Memory: the chunks of blocks are a ``lax.map`` inside the traced function, chunk ``c``
starting at the traced block ``c * blocks_per_chunk``. With ``checkpoint=True`` both the
chunk and the time step are ``jax.checkpoint``-ed: the reverse pass keeps, per chunk, only
the scan carry of every step (log-spot, variance, the running maximum/minimum/sum a payoff
needs) and recomputes each step's intermediates, so its memory is about
``chunk_paths * n_steps * carry`` however many paths are simulated. ``checkpoint=False`` is
the plain reverse pass, which stores every intermediate of every step of every chunk. Both
give identical derivatives. Measured (``benchmarks/bench_mc_greeks.py``, 2-core CPU,
float64): the gradient of a 1e6-path x 252-step Heston price peaks at 0.62 GiB resident
(the plain pass would need about 97 GiB) and takes 2.4 times its forward pricing; all
first-order sensitivities of a Heston (Bates) price cost 2.4 (2.1) pricings in one reverse
pass, against 15 (21) pricings for central bump-and-revalue.

Estimators:

* Pathwise (infinitesimal perturbation): the derivative of the payoff along each simulated
  path, through the exact schemes, Andersen's QE step (``qmr_jax.simulate._qe_variance``;
  ``sqrt`` at zero variance has derivative 0) and the jump sizes. Unbiased for the
  discretised model wherever the payoff is Lipschitz in the path; the QE scheme switches
  branch at ``psi = 1.5`` and its variance is censored at 0, which the pathwise derivative
  does not see (a small bias of the discretised scheme, measured below).
* Likelihood ratio for jump counts: the Poisson counts are drawn by inversion, a step
  function of the intensity, so their pathwise derivative is 0 and misses how a change in
  ``lam`` (or Kou's ``p``, or the horizon) changes the number of jumps. Each path's counts
  have the log-likelihood ``l = N log(lam T) - lam T`` (Merton, Bates; ``T`` the horizon)
  or ``l = N_up log(lam p T) - lam p T + N_down log(lam (1 - p) T) - lam (1 - p) T`` (Kou,
  by thinning), whose derivative is the score: ``N / lam - T`` for ``lam``,
  ``N_up / p - N_down / (1 - p)`` for ``p``, ``lam - N / T`` for ``elapsed`` (a shorter
  horizon has fewer jumps). With the factor ``b = exp(l - stop_gradient(l))`` (exactly 1,
  with the derivatives of ``l``) the estimator averages ``X b - B (b - 1)``, ``X`` the
  discounted payoff and ``B`` the mean of ``X`` over the *other* sample units (paths or
  antithetic pairs) of the path's block, under ``stop_gradient``: its value is ``X``
  exactly, and its derivatives of every order are the combined pathwise and
  likelihood-ratio estimators (first order ``dX + (X - B) dl``; second order
  ``d2X + 2 dX dl + (X - B) (dl dl + d2l)``). ``B`` is independent of the path's own
  counts, so it adds no bias (``E[B dl] = 0``) and removes the variance that the payoff's
  mean level would contribute (20-45 % lower standard errors of the ``lam`` derivative
  here). The score is singular at ``lam = 0`` and at ``p`` in ``{0, 1}``: derivatives
  there are not estimated correctly.
* Smoothing of discontinuities: an indicator (digital, barrier hit) has pathwise derivative
  0 almost surely, and the kink of ``max(x - k, 0)`` has pathwise second derivative 0, so
  pathwise delta of a digital and pathwise gamma of a call are silently zero. With
  ``smoothing = s > 0`` the payoff uses ``1{x > k} -> sigmoid((x - k) / w)`` and
  ``max(x - k, 0) -> w softplus((x - k) / w)`` with the width ``w = s * k`` relative to the
  strike (the barrier level for a barrier's hit indicator). Both are smooth, so first and
  second pathwise derivatives exist; the bias is ``O(w^2)`` (the sigmoid is odd about the
  step, so the first-order term cancels; the softplus adds ``(pi^2 / 6) w^2`` times the
  density of ``x`` at ``k``). ``smoothing=None`` (default) prices European, Asian and
  lookback payoffs exactly (first derivatives are exact; differentiating twice through a
  kink raises ``ValueError``) and digital and barrier payoffs with
  ``DEFAULT_SMOOTHING``; ``smoothing=0`` prices every payoff exactly, and any derivative
  through an indicator then raises ``ValueError`` instead of returning 0.

Standard errors (``mc_greeks``) are batch means over the blocks of ``BLOCK_SIZE`` paths:
every block is given its own copy of the inputs (leaves shaped ``[n_blocks, 1]``,
broadcast against the ``[n_blocks, BLOCK_SIZE]`` path state), so the gradient with respect
to the copies, from one reverse pass, is the gradient of each block's own estimate.
Antithetic pairs stay within a block, so blocks are independent and identically
distributed; the standard error of any derivative is that of the mean of its ``n_blocks``
block values (``n_blocks - 1`` degrees of freedom). Second derivatives are forward over
reverse mode, one forward direction per input moving all the copies together.

Smoothing bias, measured (the choice ``DEFAULT_SMOOTHING = 0.01`` follows from it):

* Black-Scholes digital call (spot 100, sigma 0.6, r 3 %, q 1 %, T 0.5, strikes 80, 100,
  120; prices 0.30-0.68, deltas 0.0077-0.0091). The bias is exact: the expectation of the
  smoothed payoff and its delta by quadrature against the closed form; the standard errors
  are ``mc_greeks``' at 2**20 antithetic paths (whose deltas agree with the smoothed
  expectation within 1.2 standard errors at every width):

  ==========  ===============  ===============  ====================
  width ``s``  price bias       delta bias       delta std. error
  ==========  ===============  ===============  ====================
  0.25 %      <= 1.9e-5        <= 5.1e-7        7.5e-5
  0.5 %       <= 7.7e-5        <= 2.1e-6        5.2e-5
  1 %         <= 3.1e-4        <= 8.2e-6        3.6e-5
  2 %         <= 1.2e-3        <= 3.3e-5        2.4e-5
  5 %         <= 7.5e-3        <= 2.0e-4        1.6e-5
  ==========  ===============  ===============  ====================

  The bias grows as ``w^2`` and the variance as ``1 / w``. At 1 % the delta bias is below a
  quarter of the standard error even at 2**20 paths (a tenth at 1e5 paths), so it never
  dominates at the sample sizes in use, while halving the width would only add variance;
  with far fewer paths (1e4-1e5) 2 % has a slightly lower mean-square error. The price bias
  at 1 % is about one standard error at 2**20 paths: price digitals with ``mc_price``
  (exact payoff); the smoothing is for derivatives.
* Heston (``v0 = theta = 0.36, kappa = 2, xi = 1.2, rho = -0.6``, same market, QE in 16
  steps) and Bates (plus ``lam = 2, mu_j = -0.1, sigma_j = 0.2``), 1 %, strikes 80-120: the
  exact digital is ``-dC/dK`` and its delta ``-d2C/(dK dS)`` by ``jax.grad`` of
  ``qmr_jax.fourier_price``, the smoothed one their average over strikes with the logistic
  kernel of width ``w``. Smoothing bias: price <= 2.9e-4, delta <= 1.9e-5 (Heston),
  <= 2.2e-4 and <= 9.6e-6 (Bates); with 2**18 paths the Monte Carlo deltas are within
  1.2 standard errors (6e-5 to 8e-5) of the smoothed reference.

Scheme bias of the pathwise Greeks of a European (same Heston, Bates, Merton and Kou
parameters, T 0.5, 16 steps, strikes 80 and 100), against ``jax.grad`` of the Fourier price
with 2**20 paths: every derivative with respect to spot, rate, div, each model parameter
and the elapsed time within 1.5 standard errors; for QE no bias is detectable at relative
standard errors of 0.05 % (delta) to 5 % (rho). ``tests/test_mc_greeks.py`` allows 4
standard errors plus 0.5 % of the Greek for QE.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._arrays import float_dtype
from ..models import Bates, Heston, Kou, Market, Merton
from ..sensitivities import input_names
from ..simulate import (
    BLOCK_SIZE,
    DEFAULT_MEMORY_BUDGET,
    _check_int,
    _check_scalar_leaves,
    _check_scheme,
    plan_chunks,
    simulate_blocks,
)
from . import payoffs as _payoffs

DEFAULT_SMOOTHING = 0.01
"""Relative width used for digital and barrier payoffs when ``smoothing=None`` (and for
every payoff in ``mc_greeks(..., second_order=True)``): see the module docstring."""

ELAPSED = "elapsed"
"""Name of the calendar-time input of ``mc_greeks`` (its derivative is theta)."""


# ------------------------------------------------------------------------------------------
# exact kinks and steps that refuse to be differentiated where the pathwise derivative is
# wrong, and their smooth replacements


class NonDifferentiablePayoffError(ValueError):
    """A pathwise derivative was requested through an indicator or a kink's second order."""


@jax.custom_jvp
def _step(x):
    """``1{x > 0}``; differentiating it raises (its pathwise derivative is 0 a.s.)."""
    return (x > 0).astype(x.dtype)


@_step.defjvp
def _step_jvp(primals, tangents):
    raise NonDifferentiablePayoffError(
        "the payoff has an indicator (digital, barrier hit, or the kink of max(x - k, 0) "
        "under a second derivative), whose pathwise derivative is 0 almost surely; pass "
        f"smoothing > 0 (e.g. smoothing={DEFAULT_SMOOTHING}) to differentiate it"
    )


@jax.custom_jvp
def _relu(x):
    """``max(x, 0)``: exact first derivative ``1{x > 0}``; a second derivative raises."""
    return jnp.maximum(x, 0.0)


@_relu.defjvp
def _relu_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _relu(x), _step(x) * t


def _kink(x, w):
    """``max(x, 0)`` (``w`` None) or ``w softplus(x / w)``."""
    if w is None:
        return _relu(x)
    return w * jax.nn.softplus(x / w)


def _indicator(x, w):
    """``1{x > 0}`` (``w`` None) or ``sigmoid(x / w)``."""
    if w is None:
        return _step(x)
    return jax.nn.sigmoid(x / w)


def _width(level, smoothing):
    if smoothing is None:
        return None
    return smoothing * jnp.where(level > 0, level, 1.0)


# ------------------------------------------------------------------------------------------
# payoffs as (static description, array leaves)


class _PayoffSpec(NamedTuple):
    kind: str  # "european", "digital", "asian", "barrier", "lookback"
    barrier_kind: str | None
    floating: bool
    expiry: float
    names: tuple[str, ...]  # array fields passed dynamically


def _split_payoff(payoff):
    if isinstance(payoff, _payoffs.European):
        spec, names = "european", ("strike", "is_call")
    elif isinstance(payoff, _payoffs.Digital):
        spec, names = "digital", ("strike", "is_call", "cash")
    elif isinstance(payoff, _payoffs.Asian):
        spec, names = "asian", ("strike", "is_call")
    elif isinstance(payoff, _payoffs.Barrier):
        spec, names = "barrier", ("strike", "barrier", "is_call", "rebate")
    elif isinstance(payoff, _payoffs.Lookback):
        spec = "lookback"
        names = ("is_call",) if payoff.floating else ("strike", "is_call")
    else:
        raise TypeError(
            "payoff must be made by qmr_jax.pricing.payoffs (european, digital, asian, "
            f"barrier, lookback); got {type(payoff).__name__}"
        )
    arrays = tuple(np.asarray(getattr(payoff, n)) for n in names)
    return (
        _PayoffSpec(
            spec,
            payoff.kind if isinstance(payoff, _payoffs.Barrier) else None,
            bool(isinstance(payoff, _payoffs.Lookback) and payoff.floating),
            float(payoff.expiry),
            names,
        ),
        arrays,
    )


def _summary_fields(spec: _PayoffSpec) -> tuple[str, ...]:
    if spec.kind == "asian":
        return ("average",)
    if spec.kind == "barrier":
        return ("maximum",) if spec.barrier_kind.startswith("up") else ("minimum",)
    if spec.kind == "lookback":
        return ("maximum", "minimum")
    return ()


def _payoff_shape(spec, arrays):
    return tuple(np.broadcast_shapes(*(np.shape(a) for a in arrays)))


def _default_smoothing(spec: _PayoffSpec, smoothing):
    """The smoothing actually used: ``None`` (exact) or a positive relative width."""
    if smoothing is None:
        return DEFAULT_SMOOTHING if spec.kind in ("digital", "barrier") else None
    s = float(smoothing)
    if not (np.isfinite(s) and s >= 0):
        raise ValueError(f"smoothing must be None or a finite number >= 0; got {smoothing!r}")
    return None if s == 0 else s


def _evaluate(spec: _PayoffSpec, arrays, summary, smoothing):
    """Undiscounted payoff per path, ``[n_paths, *shape]``, smoothed or exact."""
    dtype = summary.final.dtype
    shape = _payoff_shape(spec, arrays)
    p = {
        n: jnp.broadcast_to(a if a.dtype == jnp.bool_ else jnp.asarray(a, dtype), shape)
        for n, a in zip(spec.names, arrays, strict=True)
    }
    nd = len(shape)

    def col(x):
        return jnp.reshape(x, x.shape + (1,) * nd)

    def vanilla(s, k, call):
        w = _width(k, smoothing)
        return jnp.where(call, _kink(s - k, w), _kink(k - s, w))

    s_t = col(summary.final)
    if spec.kind == "european":
        return vanilla(s_t, p["strike"], p["is_call"])
    if spec.kind == "asian":
        return vanilla(col(summary.average), p["strike"], p["is_call"])
    if spec.kind == "digital":
        k = p["strike"]
        w = _width(k, smoothing)
        hit = jnp.where(p["is_call"], _indicator(s_t - k, w), _indicator(k - s_t, w))
        return p["cash"] * hit
    if spec.kind == "barrier":
        h = p["barrier"]
        w = _width(h, smoothing)
        if spec.barrier_kind.startswith("up"):
            hit = _indicator(col(summary.maximum) - h, w) if w is not None else (
                1.0 - _step(h - col(summary.maximum)))  # exact: hit when max >= h
        else:
            hit = _indicator(h - col(summary.minimum), w) if w is not None else (
                1.0 - _step(col(summary.minimum) - h))  # exact: hit when min <= h
        alive = hit if spec.barrier_kind.endswith("in") else 1.0 - hit
        van = vanilla(s_t, p["strike"], p["is_call"])
        return p["rebate"] + alive * (van - p["rebate"])
    # lookback
    hi, lo = col(summary.maximum), col(summary.minimum)
    if spec.floating:
        return jnp.where(p["is_call"], s_t - lo, hi - s_t)
    k = p["strike"]
    w = _width(k, smoothing)
    return jnp.where(p["is_call"], _kink(hi - k, w), _kink(k - lo, w))


# ------------------------------------------------------------------------------------------
# the traced estimator


class _Spec(NamedTuple):
    """Everything static about one estimator (hashable: the jit cache key)."""

    payoff: _PayoffSpec
    scheme: str
    n_steps: int
    n_paths: int
    antithetic: bool
    n_chunks: int
    blocks_per_chunk: int
    smoothing: float | None
    checkpoint: bool
    per_block: bool
    payoff_shape: tuple[int, ...]


def _log_likelihood(model, counts, horizon, dtype):
    """Log-likelihood (up to constants) of the paths' total jump counts, ``[nb, B]``."""

    def term(n, mu):
        pos = mu > 0
        return n.astype(dtype) * jnp.log(jnp.where(pos, mu, 1.0)) - mu

    if isinstance(model, Kou):
        n_up, n_dn = counts
        mu = model.lam * horizon
        return term(n_up, mu * model.p) + term(n_dn, mu * (1.0 - model.p))
    return term(counts, model.lam * horizon)


def _grid(horizon, n_steps, dtype):
    """Step end dates and lengths of ``n_steps`` equal steps to ``horizon`` (leading axis the
    step; ``horizon`` a scalar or ``[nb, 1]``), as ``qmr_jax.simulate.time_grid``."""
    k = jnp.arange(1, n_steps + 1, dtype=dtype).reshape((n_steps,) + (1,) * horizon.ndim)
    times = horizon[None] * k / n_steps
    times = times.at[-1].set(horizon)
    dts = jnp.diff(times, axis=0, prepend=jnp.zeros((1,) + horizon.shape, dtype))
    return dts, times


def _chunk_sums(spec: _Spec, model, market, elapsed, key, arrays, scale, c):
    """Per-block sums of the discounted (likelihood-weighted) payoff of chunk ``c``, each
    multiplied by ``scale[block]`` (``None``: 1)."""
    bpc = spec.blocks_per_chunk
    first = c * bpc
    dtype = jnp.result_type(market.spot)

    def local(x):
        x = jnp.asarray(x)
        return lax.dynamic_slice_in_dim(x, first, bpc, axis=0) if x.ndim == 2 else x

    model = jax.tree_util.tree_map(local, model)
    market = jax.tree_util.tree_map(local, market)
    elapsed = local(elapsed)
    horizon = spec.payoff.expiry - elapsed
    dts, times = _grid(horizon, spec.n_steps, dtype)
    jumps = isinstance(model, Merton | Kou | Bates)
    summary, counts = simulate_blocks(
        model, market, key, first, dts, times, jnp.zeros(spec.n_steps, jnp.int32),
        scheme=spec.scheme, n_blocks=bpc, antithetic=spec.antithetic, record="summary",
        n_obs=1, fields=_summary_fields(spec.payoff), jump_counts=True,
        checkpoint=spec.checkpoint,
    )
    x = _evaluate(spec.payoff, arrays, summary, spec.smoothing)  # [bpc * B, *shape]
    extra = x.ndim - 1
    x = x.reshape((bpc, BLOCK_SIZE) + x.shape[1:])

    def lift(a):  # scalar or [bpc, 1] -> broadcastable against [bpc, B, *shape]
        a = jnp.asarray(a)
        return a.reshape(a.shape + (1,) * extra) if a.ndim == 2 else a

    path = (first + jnp.arange(bpc))[:, None] * BLOCK_SIZE + jnp.arange(BLOCK_SIZE)[None, :]
    valid = (path < spec.n_paths).reshape((bpc, BLOCK_SIZE) + (1,) * extra)
    xd = jnp.where(valid, lift(market.discount(horizon)) * x, 0.0)
    if jumps:
        ll = _log_likelihood(
            model, jax.tree_util.tree_map(lambda n: n.reshape(bpc, BLOCK_SIZE), counts),
            horizon, dtype,
        )
        box = jnp.exp(ll - lax.stop_gradient(ll))  # exactly 1; carries the score
        box = box.reshape(box.shape + (1,) * extra)
        base = _baseline(lax.stop_gradient(xd), valid, spec.antithetic)
        # value xd (box - 1 is exactly 0); derivative d xd + (xd - base) d ll
        xd = xd * box - base * (box - 1.0)
    sums = jnp.sum(xd, axis=1)
    if scale is not None:
        # d/d scale is the block sum itself, computed in the reverse pass (from the
        # recomputed chunk): so a gradient call also returns the value, at no extra pass
        sums = sums * lax.dynamic_slice_in_dim(scale, first, bpc).reshape(
            (bpc,) + (1,) * (sums.ndim - 1))
    return sums


def _baseline(xd, valid, antithetic):
    """Per path, the mean discounted payoff of the *other* sample units of its block (0 for
    the padding paths beyond ``n_paths``, which must contribute nothing).

    Independent of the path's own jump counts (blocks and antithetic pairs are the units
    that share randomness), so ``E[baseline * score] = 0``: subtracting it from the payoff
    in the likelihood-ratio term keeps the estimator unbiased at every order and removes
    the part of its variance that comes from the payoff's mean level.
    """
    if antithetic:
        pairs = xd.reshape((xd.shape[0], BLOCK_SIZE // 2, 2) + xd.shape[2:]).sum(axis=2)
        own = jnp.repeat(pairs, 2, axis=1)
        per_unit = 2.0
    else:
        own, per_unit = xd, 1.0
    total = jnp.sum(xd, axis=1, keepdims=True)
    units = jnp.sum(valid.astype(xd.dtype), axis=1, keepdims=True) / per_unit
    others = jnp.maximum(units - 1.0, 1.0)
    return jnp.where(valid & (units > 1.0), (total - own) / (per_unit * others), 0.0)


@functools.partial(jax.jit, static_argnames=("spec",))
def _block_sums(model, market, elapsed, key, arrays, spec: _Spec, scale=None):
    """``[n_chunks * blocks_per_chunk, *shape]`` sums of discounted payoffs per block."""
    fn = functools.partial(_chunk_sums, spec, model, market, elapsed, key, arrays, scale)
    if spec.checkpoint:
        fn = jax.checkpoint(fn, prevent_cse=False)
    if spec.n_chunks == 1:
        return fn(jnp.int32(0))
    sums = lax.map(fn, jnp.arange(spec.n_chunks, dtype=jnp.int32))
    return sums.reshape((-1,) + sums.shape[2:])


# ------------------------------------------------------------------------------------------
# public functions


def reverse_bytes_per_path(model, payoff, n_steps: int, itemsize: int,
                           checkpoint: bool = True) -> int:
    """Working memory per path of a chunk under reverse-mode differentiation (rough).

    Checkpointed: the carry of every step (log-spot, variance, the payoff's running
    statistics) plus one step's temporaries. Plain: every intermediate of every step.
    """
    spec, _ = _split_payoff(payoff)
    sv = isinstance(model, Heston | Bates)
    carry = 1 + int(sv) + len(_summary_fields(spec))
    if checkpoint:
        return itemsize * ((n_steps + 1) * carry + 48) + 64
    per_step = 40 if sv else 16
    if isinstance(model, Merton | Kou | Bates):
        per_step += 12
    return itemsize * (n_steps + 1) * per_step + 64


def _prepare(model, market, payoff, elapsed, *, n_paths, n_steps, scheme, antithetic,
             chunk_size, smoothing, checkpoint, memory_budget, per_block, memory_factor=1):
    """Validate (where concrete), cast, plan; returns ``(model, market, elapsed, arrays,
    spec)``."""
    pspec, arrays = _split_payoff(payoff)
    scheme = _check_scheme(model, scheme)
    if not isinstance(market, Market):
        raise TypeError(f"market must be a Market; got {type(market).__name__}")
    model.validate()
    market.validate()
    if not per_block:
        _check_scalar_leaves(model, market)
    n_paths = _check_int("n_paths", n_paths)
    n_steps = _check_int("n_steps", n_steps)
    if antithetic and n_paths % 2:
        raise ValueError(f"antithetic sampling needs an even n_paths; got {n_paths}")
    if jnp.ndim(elapsed) != 0:
        raise ValueError(f"elapsed must be a scalar; got shape {jnp.shape(elapsed)}")
    if not isinstance(elapsed, jax.core.Tracer):
        e = float(np.asarray(elapsed, np.float64))
        if not (np.isfinite(e) and e < pspec.expiry):
            raise ValueError(f"elapsed must be finite and shorter than the expiry "
                             f"{pspec.expiry!r}; got {e!r}")
    smoothing = _default_smoothing(pspec, smoothing)
    dtype = float_dtype(model, market)
    cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)
    model, market, elapsed = cast(model), cast(market), jnp.asarray(elapsed, dtype)
    itemsize = jnp.dtype(dtype).itemsize
    per_path = reverse_bytes_per_path(model, payoff, n_steps, itemsize, bool(checkpoint))
    per_path *= max(int(memory_factor), 1)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    plan = plan_chunks(n_paths, per_path, chunk_size, budget, min_chunks=1)
    spec = _Spec(pspec, scheme, n_steps, n_paths, bool(antithetic), plan.n_chunks,
                 plan.blocks_per_chunk, smoothing, bool(checkpoint), per_block,
                 _payoff_shape(pspec, arrays))
    return model, market, elapsed, tuple(jnp.asarray(a) for a in arrays), spec, plan


def _payoff_and_elapsed(args, payoff, elapsed):
    """Resolve ``mc_value(model, market, payoff[, elapsed])`` and, for use as a value
    function through ``partial(mc_value, payoff=...)``, ``mc_value(model, market[,
    elapsed], payoff=...)``."""
    args = list(args)
    if payoff is None:
        if not args:
            raise TypeError("mc_value() needs a payoff (third argument or payoff=...)")
        payoff = args.pop(0)
    if args:
        if elapsed is not None or len(args) > 1:
            raise TypeError("mc_value() takes (model, market, payoff, elapsed) or, with "
                            "payoff=..., (model, market, elapsed); got too many arguments")
        elapsed = args[0]
    return payoff, 0.0 if elapsed is None else elapsed


def mc_value(
    model,
    market: Market,
    *args,
    payoff=None,
    elapsed=None,
    key,
    n_paths: int,
    n_steps: int,
    scheme: str | None = None,
    antithetic: bool = True,
    chunk_size: int | None = None,
    smoothing: float | None = None,
    checkpoint: bool = True,
    memory_budget: int | None = None,
) -> jax.Array:
    """Differentiable Monte Carlo value: the discounted mean payoff (see module docstring).

    Called as ``mc_value(model, market, payoff, elapsed=0.0, *, key, n_paths, n_steps,
    ...)``; with the payoff given by keyword the third positional argument is ``elapsed``,
    so ``functools.partial(mc_value, payoff=p, key=k, n_paths=n, n_steps=m)`` is a value
    function ``value_fn(model, market, elapsed)`` for ``qmr_jax.sensitivities``.

    Args:
      model: any simulated model with scalar leaves (``vmap`` over a batch).
      market: ``Market(spot, rate, div)``.
      payoff: a ``qmr_jax.pricing.payoffs`` object (array parameters value a strip on the
        same paths).
      elapsed: calendar time already passed, in years: the paths run to
        ``payoff.expiry - elapsed`` in ``n_steps`` equal steps (``d/d elapsed`` is theta).
      key: PRNG key; the paths are ``mc_price``'s with the same key.
      n_paths: number of paths (even with antithetics).
      n_steps: equal time steps to the (remaining) expiry.
      scheme: simulation scheme (default ``"qe"`` for Heston/Bates, ``"exact"`` otherwise).
      antithetic: antithetic pairs (default True).
      chunk_size: paths per chunk of the traced loop (whole blocks); default from
        ``memory_budget`` (256 MiB) and the reverse-mode memory of a path. Does not change
        the value.
      smoothing: relative width of the smoothed indicators and kinks; ``None``: exact for
        European, Asian and lookback payoffs, ``DEFAULT_SMOOTHING`` for digital and
        barrier payoffs; ``0``: exact for all (derivatives through an indicator raise).
      checkpoint: rematerialise chunks and steps in reverse mode (bounded memory).
      memory_budget: bytes of working memory per chunk for the default ``chunk_size``.

    Returns:
      The estimate, shaped like the payoff's parameters, in the model's dtype.

    Raises:
      ValueError: invalid inputs; ``NonDifferentiablePayoffError`` (a ``ValueError``) when
        differentiating through an unsmoothed indicator or twice through a kink.

    Examples:
      >>> import functools, jax, qmr_jax as qmr
      >>> from qmr_jax.pricing import payoffs
      >>> from qmr_jax.pricing.mc_greeks import mc_value
      >>> m = qmr.Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.5)
      >>> f = functools.partial(mc_value, payoff=payoffs.european(100.0, 0.5),
      ...                       key=jax.random.key(0), n_paths=4096, n_steps=16)
      >>> delta = jax.grad(lambda s: f(m, qmr.Market(s)))(100.0)  # doctest: +SKIP
    """
    payoff, elapsed = _payoff_and_elapsed(args, payoff, elapsed)
    model, market, elapsed, arrays, spec, _ = _prepare(
        model, market, payoff, elapsed, n_paths=n_paths, n_steps=n_steps, scheme=scheme,
        antithetic=antithetic, chunk_size=chunk_size, smoothing=smoothing,
        checkpoint=checkpoint, memory_budget=memory_budget, per_block=False,
    )
    sums = _block_sums(model, market, elapsed, key, arrays, spec)
    return jnp.sum(sums, axis=0) / spec.n_paths


class MCGreeks(NamedTuple):
    """Monte Carlo value and derivatives with batch-means standard errors (float64 NumPy).

    Attributes:
      names: inputs ``("spot", "rate", "div", *model fields, "elapsed")``; the derivative
        with respect to ``"elapsed"`` is theta (per year of calendar time passed).
      point: the input values ``[n]``.
      value, value_stderr: the estimate, shaped like the payoff's parameters (``S``).
      gradient, gradient_stderr: ``[*S, n]`` first derivatives per unit of each input.
      hessian, hessian_stderr: ``[*S, n, n]`` second derivatives, or ``None``.
      n_paths, n_blocks, n_steps, scheme, antithetic: the simulation; the standard errors
        have ``n_blocks - 1`` degrees of freedom.
      smoothing: the relative width used (``None``: exact payoff).
    """

    names: tuple[str, ...]
    point: np.ndarray
    value: np.ndarray
    value_stderr: np.ndarray
    gradient: np.ndarray
    gradient_stderr: np.ndarray
    hessian: np.ndarray | None
    hessian_stderr: np.ndarray | None
    n_paths: int
    n_blocks: int
    n_steps: int
    scheme: str
    antithetic: bool
    smoothing: float | None

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{name: gradient[..., i]}``."""
        return {n: self.gradient[..., i] for i, n in enumerate(self.names)}

    def stderr_dict(self) -> dict[str, np.ndarray]:
        """``{name: gradient_stderr[..., i]}``."""
        return {n: self.gradient_stderr[..., i] for i, n in enumerate(self.names)}


@functools.partial(jax.jit, static_argnames=("spec", "model_type", "second_order"))
def _greeks_core(x, key, arrays, spec: _Spec, model_type, second_order):
    """Per-block sums ``[nb, *S]``, gradients ``[*S, nb, n]`` and Hessians ``[*S, nb, n, n]``
    of the mean with respect to the per-block inputs ``x`` (``[nb, n]``)."""
    n_fields = len(model_type._fields)
    ones = jnp.ones(x.shape[0], x.dtype)

    def mean(xb, scale):
        mk = Market(xb[:, 0:1], xb[:, 1:2], xb[:, 2:3])
        m = model_type(*(xb[:, 3 + i : 4 + i] for i in range(n_fields)))
        sums = _block_sums(m, mk, xb[:, -1:], key, arrays, spec, scale)
        return jnp.sum(sums, axis=0) / spec.n_paths

    def grads(xb):
        # one reverse pass per output; the gradient with respect to the block scales is
        # the block sums / n_paths (the value, without a separate forward pass)
        jac = jax.grad if spec.payoff_shape == () else jax.jacrev
        gx, gs = jac(mean, argnums=(0, 1))(xb, ones)
        return gx, gs

    g, gs = grads(x)
    sums = jnp.moveaxis(gs, -1, 0) * spec.n_paths  # [nb, *S]
    if not second_order:
        return sums, g, None
    eye = jnp.eye(x.shape[1], dtype=x.dtype)

    def direction(e):
        tangent = jnp.broadcast_to(e, x.shape)  # move every block's copy together
        return jax.jvp(lambda xb: grads(xb)[0], (x,), (tangent,))[1]

    h = jax.vmap(direction, out_axes=-1)(eye)  # [*S, nb, n, n]
    return sums, g, h


def _batch_means(per_block, n_b, n_paths):
    """Weighted mean of per-block means ``[nb, ...]`` and its batch-means standard error."""
    w = n_b / n_paths
    shape = (-1,) + (1,) * (per_block.ndim - 1)
    est = np.sum(w.reshape(shape) * per_block, axis=0)
    k = per_block.shape[0]
    s2 = np.sum(n_b.reshape(shape) * (per_block - est) ** 2, axis=0) / (k - 1)
    return est, np.sqrt(s2 / n_paths)


def mc_greeks(
    model,
    market: Market,
    payoff,
    elapsed=0.0,
    *,
    key,
    n_paths: int,
    n_steps: int,
    scheme: str | None = None,
    antithetic: bool = True,
    chunk_size: int | None = None,
    smoothing: float | None = None,
    checkpoint: bool = True,
    second_order: bool = False,
    memory_budget: int | None = None,
) -> MCGreeks:
    """Value and pathwise derivatives with respect to every input, with standard errors.

    One reverse pass (per payoff entry) gives the derivatives with respect to spot, rate,
    div, every model field and ``elapsed``, per block of ``BLOCK_SIZE`` paths; their batch
    means give the estimates and standard errors (see module docstring). Jump intensities
    (and Kou's ``p``) include the likelihood-ratio term.

    Args:
      model, market, payoff, elapsed, key, n_paths, n_steps, scheme, antithetic,
        chunk_size, smoothing, checkpoint, memory_budget: as in ``mc_value``;
        ``n_paths`` must cover at least two blocks (``2 * BLOCK_SIZE``; 20 or more blocks
        for standard errors worth reading).
      second_order: also the Hessian (forward over reverse mode, one forward direction per
        input). Needs smooth payoffs: with ``smoothing=None`` every kink and indicator is
        smoothed with ``DEFAULT_SMOOTHING``.

    Returns:
      ``MCGreeks`` (float64 NumPy arrays).

    Examples:
      >>> import jax, qmr_jax as qmr
      >>> from qmr_jax.pricing import payoffs
      >>> from qmr_jax.pricing.mc_greeks import mc_greeks
      >>> m = qmr.Bates(0.36, 2.0, 0.36, 1.0, -0.5, 2.0, -0.1, 0.2)
      >>> g = mc_greeks(m, qmr.Market(100.0, 0.03), payoffs.european(100.0, 0.5),
      ...               key=jax.random.key(0), n_paths=2**15, n_steps=16)
      >>> g.as_dict()["spot"], g.stderr_dict()["spot"]  # doctest: +SKIP
    """
    if second_order and smoothing is None:
        smoothing = DEFAULT_SMOOTHING
    n_out = int(np.prod(_payoff_shape(*_split_payoff(payoff)), dtype=np.int64))
    factor = n_out * (1 + (len(model._fields) + 4 if second_order else 0))
    model, market, elapsed, arrays, spec, plan = _prepare(
        model, market, payoff, elapsed, n_paths=n_paths, n_steps=n_steps, scheme=scheme,
        antithetic=antithetic, chunk_size=chunk_size, smoothing=smoothing,
        checkpoint=checkpoint, memory_budget=memory_budget, per_block=True,
        memory_factor=factor,
    )
    if plan.n_blocks < 2:
        raise ValueError(f"standard errors need at least 2 blocks of {BLOCK_SIZE} paths; "
                         f"got n_paths={n_paths}")
    names = input_names(model) + (ELAPSED,)
    point = jnp.stack([jnp.asarray(v, market.spot.dtype)
                       for v in (*market, *model, elapsed)])
    n_pad = plan.n_chunks * plan.blocks_per_chunk
    x = jnp.broadcast_to(point, (n_pad, point.shape[0]))
    sums, g, h = _greeks_core(x, key, arrays, spec, type(model), bool(second_order))
    k = plan.n_blocks
    n_b = np.minimum(n_paths - BLOCK_SIZE * np.arange(k), BLOCK_SIZE).astype(np.float64)
    sums = np.asarray(sums, np.float64)[:k]
    value, value_se = _batch_means(sums / n_b.reshape((-1,) + (1,) * (sums.ndim - 1)),
                                   n_b, n_paths)
    # d mean / d x_b = (1 / n_paths) sum over block b: the block's own mean has n_paths / n_b
    g = np.moveaxis(np.asarray(g, np.float64), -2, 0)[:k]  # [nb, *S, n]
    scale = (n_paths / n_b).reshape((-1,) + (1,) * (g.ndim - 1))
    grad, grad_se = _batch_means(g * scale, n_b, n_paths)
    hess = hess_se = None
    if h is not None:
        h = np.moveaxis(np.asarray(h, np.float64), -3, 0)[:k]  # [nb, *S, n, n]
        scale = (n_paths / n_b).reshape((-1,) + (1,) * (h.ndim - 1))
        hess, hess_se = _batch_means(h * scale, n_b, n_paths)
    return MCGreeks(
        names=names, point=np.asarray(point, np.float64), value=value[()],
        value_stderr=value_se[()], gradient=grad, gradient_stderr=grad_se, hessian=hess,
        hessian_stderr=hess_se, n_paths=int(n_paths), n_blocks=int(k), n_steps=spec.n_steps,
        scheme=spec.scheme, antithetic=spec.antithetic, smoothing=spec.smoothing,
    )


__all__ = [
    "mc_value",
    "mc_greeks",
    "MCGreeks",
    "NonDifferentiablePayoffError",
    "DEFAULT_SMOOTHING",
    "ELAPSED",
    "reverse_bytes_per_path",
]
