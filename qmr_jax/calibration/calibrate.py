"""``calibrate``: fit a model to a whole implied-volatility surface, and batches of them."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..models import Bates, Heston, Market
from ..pricing.fourier import _log_tol, _plan, _round_terms
from .bijections import Bijection
from .objective import (
    LOSSES,
    Quotes,
    build_quotes,
    check_chain,
    model_ivs,
    model_prices,
    plan_geometry,
)
from .objective import residuals as _residuals
from .result import CalibrationResult, Problem, build_result
from .solvers import CONVERGED, SOLVERS, STATUS, Tolerances

DEFAULT_FOURIER_TOL = 1e-12
_TRUNCATION = 16.0
_MIN_TERMS = 32
_MAX_REPLANS = 2
_TERMS_MARGIN = 1.25
_MAX_TERMS = 1 << 14
_PERIOD_MARGIN = 1.1


def _feller_models():
    return (Heston, Bates)


def _problem_residual(bij: Bijection, loss: str, n_terms: int, feller: bool):
    """``r(u, base, quotes, feller_weight, truncation, log_tol, geometry, mid_iv=None)`` ->
    ``(residuals, aux)``; ``aux`` is the model IV grid (``loss="iv"``) or the price grid."""

    def residual(u, base, quotes: Quotes, feller_weight, truncation, log_tol, geometry,
                 mid_iv=None):
        model = bij.to_model(u, base)
        prices = model_prices(model, quotes, n_terms, truncation, log_tol, geometry)
        if loss == "iv":
            ivs = model_ivs(prices, quotes)
            mid = quotes.mid_iv if mid_iv is None else mid_iv
            r = (jnp.sqrt(quotes.weight) * (ivs - mid)).reshape(-1)
            aux = ivs
        else:
            r, aux = _residuals(prices, quotes, loss, mid_iv), prices
        r = r / jnp.sqrt(jnp.maximum(jnp.sum(quotes.weight), 1.0))
        if feller:
            gap = jax.nn.relu(1.0 - model.feller_ratio())
            r = jnp.concatenate([r, (jnp.sqrt(feller_weight) * gap)[None]])
        return r, aux

    return residual


@functools.partial(jax.jit, static_argnames=("bij", "loss", "method", "n_terms", "feller",
                                             "history"))
def _solve_batch(u0, geometry, base, quotes, tol, feller_weight, truncation, log_tol, *, bij,
                 loss, method, n_terms, feller, history=256):
    """Solve every start of every problem: ``u0`` is ``[B, S, n]``, ``geometry`` ``[B, S,
    ...]``, quotes and base ``[B, ...]``. Returns the solver states, the best start per
    problem and its model IV grid."""
    residual = _problem_residual(bij, loss, n_terms, feller)
    solver = SOLVERS[method]

    def one(u0_, geo_, base_, quotes_):
        fn = lambda u: residual(u, base_, quotes_, feller_weight, truncation, log_tol, geo_)
        return solver(fn, u0_, tol, history)

    def per_problem(u0s, geos, base_, quotes_):
        states = jax.vmap(one, in_axes=(0, 0, None, None))(u0s, geos, base_, quotes_)
        bad = ~jnp.isfinite(states.loss)
        best = jnp.argmin(jnp.where(bad, jnp.inf, states.loss))
        if method == "lm" and loss == "iv":
            ivs = states.aux[best]
        else:
            model = bij.to_model(states.u[best], base_)
            geo = jax.tree_util.tree_map(lambda g: g[best], geos)
            prices = model_prices(model, quotes_, n_terms, truncation, log_tol, geo)
            ivs = model_ivs(prices, quotes_)
        return states._replace(aux=None), best, ivs

    return jax.vmap(per_problem)(u0, geometry, base, quotes)


@functools.partial(jax.jit, static_argnames=("n_terms",))
def _grid_ivs(model, quotes, truncation, log_tol, n_terms):
    return model_ivs(model_prices(model, quotes, n_terms, truncation, log_tol), quotes)


def _plan_all(u, bij, base, quotes, truncation, log_tol):
    """Geometry (stacked ``[B, S, ...]``) and the largest node count needed at every point
    ``u`` (``[B, S, n]`` unconstrained)."""
    u = np.asarray(u)
    geos, need = [], 0.0
    for b in range(u.shape[0]):
        q = jax.tree_util.tree_map(lambda x, b=b: x[b], quotes)
        base_b = jax.tree_util.tree_map(lambda x, b=b: jnp.asarray(x)[b], base)
        row = []
        for s in range(u.shape[1]):
            model = bij.to_model(jnp.asarray(u[b, s]), base_b)
            (var, period), n = plan_geometry(model, q, truncation, log_tol)
            # a longer period only lowers the aliasing error; the margin lets the fit move
            # the tails a little before the optimum needs a polishing round
            row.append((var, _PERIOD_MARGIN * period))
            need = max(need, _PERIOD_MARGIN * float(np.max(np.asarray(n))))
        geos.append(jax.tree_util.tree_map(lambda *g: jnp.stack(g), *row))
    return jax.tree_util.tree_map(lambda *g: jnp.stack(g), *geos), need


def _ladder(need: float) -> int:
    """Nodes on a power-of-two ladder (with a margin for the parameters' moves): a coarse
    ladder lets consecutive snapshots and neighbouring problems share one compiled solver."""
    n = _MIN_TERMS
    while n < _TERMS_MARGIN * need and n < _MAX_TERMS:
        n *= 2
    return n


def _needs_polish(geo_used, geo_opt, need, n_terms) -> bool:
    """The optimum needs a longer Lewis period or more nodes than the round used."""
    period_used = np.asarray(geo_used[1])
    period_opt = np.asarray(geo_opt[1]) / _PERIOD_MARGIN  # what the optimum itself needs
    return bool(need > n_terms or np.any(period_opt > period_used))


def _starts(initial, bij: Bijection, starts, seed: int) -> np.ndarray:
    """``[S, n]`` unconstrained starting points: the initial point first."""
    u0 = bij.to_unconstrained(initial)
    if isinstance(starts, int | np.integer):
        if starts < 1:
            raise ValueError(f"starts must be >= 1; got {starts}")
        extra = np.asarray(jax.random.normal(jax.random.key(seed), (int(starts) - 1, bij.size)))
        return np.concatenate([u0[None], u0[None] + extra], axis=0)
    points = [u0]
    for i, m in enumerate(starts):
        if type(m) is not bij.model_type:
            raise TypeError(f"starts[{i}] is a {type(m).__name__}; expected "
                            f"{bij.model_type.__name__}")
        m.validate()
        bij.check_inside(m, f"starts[{i}]")
        points.append(bij.to_unconstrained(m))
    return np.stack(points)


def _tolerances(max_iter, ftol, xtol, gtol) -> Tolerances:
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    return Tolerances(jnp.asarray(int(max_iter)), jnp.asarray(ftol, jnp.float64),
                      jnp.asarray(xtol, jnp.float64), jnp.asarray(gtol, jnp.float64),
                      jnp.asarray(1e-28, jnp.float64))


def calibrate(
    initial_params,
    chain: pd.DataFrame,
    *,
    loss: str = "iv",
    weights=None,
    method: str = "lm",
    starts=1,
    seed: int = 0,
    feller_penalty: float = 0.0,
    fixed: Sequence[str] = (),
    bounds: dict | None = None,
    max_iter: int = 200,
    ftol: float = 1e-10,
    xtol: float = 1e-10,
    gtol: float = 1e-12,
    fourier_tol: float = DEFAULT_FOURIER_TOL,
    n_terms: int | None = None,
) -> CalibrationResult:
    """Calibrate a model to every quote of an option chain at once.

    The parameters move in unconstrained coordinates (``Bijection``: a smooth map onto a box
    per field), so every trial point is a valid model. The whole optimisation loop, every
    start and the final model IVs run in one compiled function; the Lewis pricer's number
    of nodes is planned at the starting points and checked again at the optimum (the fit is
    polished with more nodes if the optimum needs them).

    Args:
      initial_params: a ``Heston``, ``Bates``, ``Merton``, ``Kou`` or ``GBM``; the first
        start (pass yesterday's calibrated parameters for a warm start).
      chain: an option-chain table (``qmr.data.load_deribit``, ``qmr.data.synthetic_chain``)
        with ``expiry_years``, ``strike``, ``is_call``, ``forward``, ``bid_iv``, ``ask_iv``,
        ``mid_iv``; Black-76 implied vols on each expiry's forward.
      loss: ``"iv"`` (default): model implied vol minus mid IV, the model IV from our own
        implied-vol inversion (differentiated by the implicit-function theorem);
        ``"price_vega"``: price error over the mid's Black vega (the IV error to first
        order, no inversion); ``"price_spread"``: price error in units of the bid/ask spread.
      weights: ``None``/``"uniform"``, ``"spread"`` (1/spread_iv^2, floored at a quarter of
        the median spread), ``"vega"``, or an array, one per quote; normalised to mean 1.
      method: ``"lm"`` (Levenberg-Marquardt on the autodiff Jacobian; default: fewer
        iterations and less time than L-BFGS on every surface measured, see
        benchmarks/results/calibration.md) or ``"lbfgs"`` (``optax.lbfgs``, zoom line search).
      starts: number of starting points (the initial point, then ``starts - 1`` normal
        perturbations in unconstrained space drawn from ``seed``), or a list of models to
        start from besides ``initial_params``. The best final loss wins.
      seed: seed of the perturbed starts.
      feller_penalty: weight ``w`` of the residual ``sqrt(w) max(0, 1 - 2 kappa theta /
        xi^2)`` (Heston and Bates); 0 disables it.
      fixed: fields held at their initial values.
      bounds: ``{field: (lo, hi)}`` overriding the default boxes (``DEFAULT_BOUNDS``).
      max_iter, ftol, xtol, gtol: stop after ``max_iter`` iterations, or when the relative
        loss reduction, the step in unconstrained space or the gradient's largest entry is
        below its tolerance. The default ``ftol = 1e-10`` (the remaining predicted and actual
        loss reduction both below 1e-10 of the loss) ends real surface fits with the same
        RMSE to 5 decimals as ``1e-12`` in about half the iterations
        (``benchmarks/bench_calibration.py``).
      fourier_tol: target pricing error per unit forward of the Lewis pricer.
      n_terms: Lewis nodes per expiry; by default planned at the starts to meet
        ``fourier_tol`` and rounded up to a power of two (so that neighbouring problems share
        one compiled solver). Either way, if the optimum needs more nodes or a longer period
        the fit is polished from it with enough (``reason`` says so).

    Returns:
      A ``CalibrationResult``: ``.params`` (same type as ``initial_params``), ``.rmse_iv``
      (vol points), ``.by_expiry``, ``.residuals``, ``.inside_band``, ``.iterations``,
      ``.wall_time``, ``.converged`` and ``.reason``; ``.summary()`` prints them.

    Examples:
      >>> import jax; jax.config.update("jax_enable_x64", True)
      >>> import qmr_jax as qmr
      >>> truth = qmr.Heston(v0=0.25, kappa=2.0, theta=0.3, xi=1.2, rho=-0.3)
      >>> chain = qmr.data.synthetic_chain(truth)
      >>> fit = qmr.calibrate(qmr.Heston(0.2, 1.0, 0.2, 0.8, 0.0), chain)
      >>> fit.converged, round(fit.rmse_iv, 6)
      (True, 0.0)
    """
    return calibrate_batch(initial_params, [chain], loss=loss, weights=weights, method=method,
                           starts=starts, seed=seed, feller_penalty=feller_penalty, fixed=fixed,
                           bounds=bounds, max_iter=max_iter, ftol=ftol, xtol=xtol, gtol=gtol,
                           fourier_tol=fourier_tol, n_terms=n_terms, _single=True)[0]


def calibrate_batch(
    initial_params,
    chains: Sequence[pd.DataFrame],
    *,
    loss: str = "iv",
    weights=None,
    method: str = "lm",
    starts=1,
    seed: int = 0,
    feller_penalty: float = 0.0,
    fixed: Sequence[str] = (),
    bounds: dict | None = None,
    max_iter: int = 200,
    ftol: float = 1e-10,
    xtol: float = 1e-10,
    gtol: float = 1e-12,
    fourier_tol: float = DEFAULT_FOURIER_TOL,
    n_terms: int | None = None,
    _single: bool = False,
) -> list[CalibrationResult]:
    """``calibrate`` many chains (snapshots) at once, ``vmap``-batched in one compiled call.

    The chains are padded to a common expiry x strike grid (zero-weight padding), so one
    compiled solver serves the whole batch. ``initial_params`` is one model (every chain
    starts there) or a list with one model per chain (e.g. each previous snapshot's fit).
    Options as for ``calibrate``; returns one ``CalibrationResult`` per chain, in order,
    each with the batch's wall time divided evenly.
    """
    t0 = time.perf_counter()
    chains = list(chains)
    if not chains:
        raise ValueError("calibrate_batch needs at least one chain")
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {tuple(SOLVERS)}; got {method!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    inits = list(initial_params) if isinstance(initial_params, list | tuple) and not \
        hasattr(initial_params, "_fields") else [initial_params] * len(chains)
    if len(inits) != len(chains):
        raise ValueError(f"{len(inits)} initial models for {len(chains)} chains")
    model_type = type(inits[0])
    bij = Bijection(model_type, bounds, fixed)
    for i, m in enumerate(inits):
        if type(m) is not model_type:
            raise TypeError(f"initial model {i} is a {type(m).__name__}; every chain of a "
                            f"batch calibrates the same model type ({model_type.__name__})")
        m.validate()
        if any(np.ndim(getattr(m, f)) for f in m._fields):
            raise ValueError("initial parameters must be scalars (one model per chain)")
        bij.check_inside(m)
    feller = float(feller_penalty) > 0
    if feller and model_type not in _feller_models():
        raise ValueError(f"feller_penalty applies to Heston and Bates, not {model_type.__name__}")
    if not (np.isfinite(feller_penalty) and feller_penalty >= 0):
        raise ValueError(f"feller_penalty must be finite and >= 0; got {feller_penalty!r}")
    tol = _tolerances(max_iter, ftol, xtol, gtol)

    with jax.enable_x64(True):
        for i, ch in enumerate(chains):
            check_chain(ch, "chain" if _single else f"chains[{i}]")
        sizes = [(ch["expiry_years"].nunique(),
                  int(ch.groupby("expiry_years").size().max())) for ch in chains]
        shape = (max(-(-s[0] // 4) * 4 for s in sizes), max(-(-s[1] // 16) * 16 for s in sizes))
        built = [build_quotes(ch, weights, loss, shape) for ch in chains]
        quotes = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack(xs)),
                                        *[q for q, _ in built])
        base = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack(xs), jnp.float64),
                                      *[jax.tree_util.tree_map(float, m) for m in inits])
        u0 = np.stack([_starts(m, bij, starts, seed) for m in inits])
        truncation = jnp.asarray(_TRUNCATION, jnp.float64)
        log_tol = jnp.asarray(_log_tol(fourier_tol, jnp.float64), jnp.float64)
        fw = jnp.asarray(float(feller_penalty), jnp.float64)
        geometry, need = _plan_all(u0, bij, base, quotes, truncation, log_tol)
        # margin: the parameters move during the fit; the optimum is checked below
        n_terms = _ladder(need) if n_terms is None else int(n_terms)
        replans = 0
        states_all = []
        u_start = jnp.asarray(u0)
        while True:
            states, best, ivs = _solve_batch(u_start, geometry, base, quotes, tol, fw,
                                             truncation, log_tol, bij=bij, loss=loss,
                                             method=method, n_terms=n_terms, feller=feller)
            states_all.append(states)
            pick = (np.arange(len(chains)), np.asarray(best))
            u_best = np.asarray(states.u)[pick]
            u_rep = np.repeat(u_best[:, None], u0.shape[1], axis=1)
            geo_opt, need = _plan_all(u_rep, bij, base, quotes, truncation, log_tol)
            geo_used = jax.tree_util.tree_map(lambda g, p=pick: np.asarray(g)[p][:, None],
                                              geometry)
            done = np.isin(np.asarray(states.status)[pick], CONVERGED)
            if (not done.all() or not _needs_polish(geo_used, geo_opt, need, n_terms)
                    or replans >= _MAX_REPLANS):
                break  # (an unconverged fit is reported as it is, not polished further)
            # the optimum needs a longer period or more nodes: polish from it with its own
            n_terms = max(n_terms, _ladder(need))
            geometry, u_start, replans = geo_opt, jnp.asarray(u_rep), replans + 1
        jax.block_until_ready(ivs)
        wall = time.perf_counter() - t0
        results = []
        for b, ch in enumerate(chains):
            pick = lambda x, b=b: np.asarray(x)[b]
            problem = Problem(
                bij=bij, base=jax.tree_util.tree_map(pick, base),
                quotes=jax.tree_util.tree_map(pick, quotes), positions=built[b][1], loss=loss,
                n_terms=n_terms, truncation=float(truncation), log_tol=float(log_tol),
                feller=feller, feller_weight=float(feller_penalty))
            per_round = [jax.tree_util.tree_map(pick, s) for s in states_all]
            results.append(build_result(
                chain=ch, problem=problem, rounds=per_round, best=int(np.asarray(best)[b]),
                ivs=pick(ivs), u_starts=u0[b], method=method, weights=weights, seed=seed,
                wall_time=wall / len(chains), fourier_tol=fourier_tol, replans=replans,
                tol=tol))
    return results


def model_iv_surface(result: CalibrationResult, chain: pd.DataFrame | None = None,
                     expiry_years=None, log_moneyness=None) -> np.ndarray:
    """Model implied vols of the calibrated parameters.

    Either at the quotes of ``chain`` (default: the calibration chain's quotes, returned in
    its row order) or on a grid ``expiry_years`` (``[n_e]``) x ``log_moneyness``
    (``[n_e, n_k]`` or ``[n_k]``), returned ``[n_e, n_k]`` (the smile curves of a report).
    """
    pb = result.problem
    with jax.enable_x64(True):
        if expiry_years is not None:
            t = np.atleast_1d(np.asarray(expiry_years, np.float64))
            x = np.asarray(log_moneyness, np.float64)
            x = np.broadcast_to(x, (len(t), x.shape[-1]))
            q = Quotes(expiries=t, k=np.exp(x), is_call=x >= 0, mid_iv=np.full(x.shape, 0.5),
                       bid_iv=np.full(x.shape, np.nan), ask_iv=np.full(x.shape, np.nan),
                       weight=np.ones(x.shape), mid_price=np.zeros(x.shape),
                       scale=np.ones(x.shape))
            _, need = _plan(result.params, Market(1.0), q.k, t[:, None],
                            np.asarray(_TRUNCATION), np.asarray(pb.log_tol), "lewis")
            n = max(pb.n_terms, _round_terms(need, _MIN_TERMS))
            model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), result.params)
            return np.asarray(_grid_ivs(model, q, jnp.asarray(_TRUNCATION),
                                        jnp.asarray(pb.log_tol), n))
        if chain is None:
            return result.residuals["model_iv"].to_numpy()
        check_chain(chain)
        q, pos = build_quotes(chain)
        _, need = plan_geometry(result.params, q, jnp.asarray(_TRUNCATION),
                                jnp.asarray(pb.log_tol))
        n = max(pb.n_terms, _ladder(float(np.max(np.asarray(need)))))
        model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), result.params)
        ivs = np.asarray(_grid_ivs(model, q, jnp.asarray(_TRUNCATION), jnp.asarray(pb.log_tol),
                                   n))
        return ivs[pos[:, 0], pos[:, 1]]


__all__ = ["calibrate", "calibrate_batch", "model_iv_surface", "STATUS", "CONVERGED"]
