"""``calibrate``: fit a model to a whole implied-volatility surface, and batches of them."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..models import Bates, Heston
from ..pricing.fourier import _log_tol
from . import programs
from .bijections import Bijection
from .objective import (
    LOSSES,
    Quotes,
    bucket,
    build_quotes,
    check_chain,
    model_ivs,
    model_prices,
    plan_geometry,
)
from .objective import residuals as _residuals
from .result import CalibrationResult, Problem, build_result
from .solvers import CONVERGED, SOLVERS, STATUS, SolverState, Tolerances

DEFAULT_FOURIER_TOL = 1e-12
_TRUNCATION = 16.0
_MIN_TERMS = 32
# The first round's default nodes are at least this: the optima of the BTC and ETH surfaces
# measured need 225-435 nodes where their initial guesses need 80-110 (whose rung, 128 or
# 512, then depends on the snapshot); starting at 512 runs and compiles one solver, not two.
_FIRST_ROUND_TERMS = 512
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


def _solve_problems(u0, geometry, base, quotes, tol, feller_weight, truncation, log_tol, *,
                    bij, loss, method, n_terms, feller, history=256):
    """Solve every start of every problem: ``u0`` is ``[B, S, n]``, ``geometry`` ``[B, S,
    ...]``, quotes and base ``[B, ...]``. Returns the solver states' fields (``SolverState``
    without ``aux``), the best start per problem and its model IV grid."""
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
        return tuple(states[:-1]), best, ivs

    return jax.vmap(per_problem)(u0, geometry, base, quotes)


# the number of solver programs built in this process (benchmarks/bench_recalibration.py)
_solve_problems._cache_size = lambda: programs.count(_SOLVER)
_solve_batch = _solve_problems
_SOLVER = "calibration solver"
_PLANNER = "calibration planning"


def _grid_ivs(model, quotes, truncation, log_tol, n_terms):
    return model_ivs(model_prices(model, quotes, n_terms, truncation, log_tol), quotes)


def _plan_points(u, base, quotes, truncation, log_tol, *, bij):
    """Lewis geometry ``(var, period)`` and the nodes needed at every point ``u`` (``[B, S,
    n]``) of problems ``quotes``/``base`` (``[B, ...]``): one program for all the points."""

    def one(u_, base_, quotes_):
        (var, period), need = plan_geometry(bij.to_model(u_, base_), quotes_, truncation,
                                            log_tol)
        return var, period, jnp.max(need)

    if u.shape[:2] == (1, 1):  # one point: no batching (a shorter trace, the same program)
        first = lambda x: x[0]
        out = one(u[0, 0], jax.tree_util.tree_map(first, base),
                  jax.tree_util.tree_map(first, quotes))
        return jax.tree_util.tree_map(lambda x: x[None, None], out)
    return jax.vmap(jax.vmap(one, in_axes=(0, None, None)))(u, base, quotes)


def _plan_all(u, bij, base, quotes, truncation, log_tol, log=None, what=""):
    """Geometry (stacked ``[B, S, ...]``) and the largest node count needed at every point
    ``u`` (``[B, S, n]`` unconstrained); NaN needs (a point whose planning failed) are
    ignored as before."""
    var, period, need = programs.run(
        _PLANNER, functools.partial(_plan_points, bij=bij),
        (np.asarray(u, np.float64), base, quotes, truncation, log_tol), static=(bij,),
        what=f"the Fourier planning{what}", log=log, quick_compile=True)
    # a longer period only lowers the aliasing error; the margin lets the fit move the tails
    # a little before the optimum needs a polishing round
    geometry = (np.asarray(var), _PERIOD_MARGIN * np.asarray(period))
    need = _PERIOD_MARGIN * np.asarray(need)
    need = need[np.isfinite(need)]
    return geometry, float(np.max(need)) if need.size else 0.0


def _ladder(need: float, margin: float = _TERMS_MARGIN) -> int:
    """Nodes on a ladder of powers of four from 32 (32, 128, 512, 2048, 8192, then the
    16384 limit), with a margin for the parameters' moves. A coarse ladder lets consecutive
    snapshots, neighbouring problems and the polishing round share one compiled solver: the
    optimum of a crypto surface typically needs two to three times the nodes of the initial
    guess (225-435 against 80-110 on ten BTC and ETH snapshots), which one rung covers."""
    n = _MIN_TERMS
    while n < margin * need and n < _MAX_TERMS:
        n *= 4
    return min(n, _MAX_TERMS)


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
        if starts == 1:
            return u0[None]
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
    return Tolerances(np.asarray(int(max_iter), np.int64), np.float64(ftol), np.float64(xtol),
                      np.float64(gtol), np.float64(1e-28))


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
    log: Callable[[str], object] | None = None,
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
        ``fourier_tol``, rounded up to a power of four and at least 512 (512, 2048, ...:
        neighbouring problems and snapshots share one compiled solver; 512 covers the
        optima of the crypto surfaces measured). Either way, if the optimum needs more nodes
        or a longer period the fit is polished from it with enough (``reason`` says so).
      log: ``log(text)`` receives a line before each program the calibration has to build
        in this process (``"compiling the Heston calibration for 367 quotes (grid 12 x 64,
        512 Fourier nodes, lm)..."``) and one after it (``"compiled in 12.3 s (cache:
        miss)"``; ``hit`` when XLA's compilation came from the persistent compilation cache,
        ``off`` without one); e.g. ``log=print``. By default the lines go to the
        ``qmr_jax.compile`` logger (level INFO). See ``qmr_jax.calibration.programs``.

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
                           fourier_tol=fourier_tol, n_terms=n_terms, log=log, _single=True)[0]


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
    log: Callable[[str], object] | None = None,
    _single: bool = False,
) -> list[CalibrationResult]:
    """``calibrate`` many chains (snapshots) at once, ``vmap``-batched in one compiled call.

    The chains are padded to a common expiry x strike grid (zero-weight padding, sizes on
    the ``objective.bucket`` ladder), so one compiled solver serves the whole batch, and
    later batches of similar chains. ``initial_params`` is one model (every chain
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
        shape = (bucket(max(s[0] for s in sizes), 4), bucket(max(s[1] for s in sizes), 16))
        built = [build_quotes(ch, weights, loss, shape, log=log) for ch in chains]
        quotes = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[q for q, _ in built])
        base = jax.tree_util.tree_map(lambda *xs: np.asarray(xs, np.float64),
                                      *[jax.tree_util.tree_map(float, m) for m in inits])
        u0 = np.stack([_starts(m, bij, starts, seed) for m in inits])
        truncation = np.float64(_TRUNCATION)
        log_tol = np.float64(_log_tol(fourier_tol, jnp.float64))
        fw = np.float64(feller_penalty)
        n_quotes = max(len(ch) for ch in chains)
        what = (f" for {n_quotes} quotes" if len(chains) == 1 else
                f" for {len(chains)} chains of up to {n_quotes} quotes")
        what += f" (grid {shape[0]} x {shape[1]}"
        geometry, need = _plan_all(u0, bij, base, quotes, truncation, log_tol, log,
                                   what + ")")
        # margin: the parameters move during the fit; the optimum is checked below
        n_terms = max(_ladder(need), _FIRST_ROUND_TERMS) if n_terms is None else int(n_terms)
        replans = 0
        states_all = []
        u_start = u0
        while True:
            solve = functools.partial(_solve_problems, bij=bij, loss=loss, method=method,
                                      n_terms=n_terms, feller=feller)
            starts_text = f", {u0.shape[1]} starts" if u0.shape[1] > 1 else ""
            fields, best, ivs = programs.run(
                _SOLVER, solve, (u_start, geometry, base, quotes, tol, fw, truncation, log_tol),
                static=(bij, loss, method, n_terms, feller),
                what=(f"the {model_type.__name__} calibration{what}, {n_terms} Fourier nodes, "
                      f"{method}{starts_text})"), log=log)
            states = SolverState(*(np.asarray(f) for f in fields))
            states_all.append(states)
            pick = (np.arange(len(chains)), np.asarray(best))
            u_best = states.u[pick]
            u_rep = np.repeat(u_best[:, None], u0.shape[1], axis=1)
            geo_opt, need = _plan_all(u_rep, bij, base, quotes, truncation, log_tol, log,
                                      what + ")")
            geo_used = jax.tree_util.tree_map(lambda g, p=pick: np.asarray(g)[p][:, None],
                                              geometry)
            done = np.isin(states.status[pick], CONVERGED)
            if (not done.all() or not _needs_polish(geo_used, geo_opt, need, n_terms)
                    or replans >= _MAX_REPLANS):
                break  # (an unconverged fit is reported as it is, not polished further)
            # the optimum needs a longer period or more nodes: polish from it with its own
            # (the same node count, hence the same program, when it still has the margin)
            if _TERMS_MARGIN * need > n_terms:
                n_terms = max(n_terms, _ladder(need))
            geometry, u_start, replans = geo_opt, u_rep, replans + 1
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


def _plan_grid(model, quotes, truncation, log_tol):
    return jnp.max(plan_geometry(model, quotes, truncation, log_tol)[1])


def _surface_ivs(result: CalibrationResult, q: Quotes, log=None) -> np.ndarray:
    """Model IVs of ``result.params`` on the (bucketed) grid ``q``: a planning program and a
    pricing program per grid size and node count."""
    pb = result.problem
    model = type(result.params)(*(np.float64(v) for v in result.params))
    args = (model, q, np.float64(_TRUNCATION), np.float64(pb.log_tol))
    grid = f"a {q.k.shape[0]} x {q.k.shape[1]} grid"
    need = float(programs.run("surface planning", _plan_grid, args,
                              what=f"the Fourier planning of {grid}", log=log,
                              quick_compile=True))
    n = max(pb.n_terms, _ladder(need, margin=1.0)) if np.isfinite(need) else pb.n_terms
    return np.asarray(programs.run(
        "surface ivs", functools.partial(_grid_ivs, n_terms=n), args, static=(n,),
        what=f"the {result.model} implied vols on {grid} ({n} Fourier nodes)", log=log))


def _pad_rows_cols(x: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """``x`` padded to ``[n_rows, n_cols]`` by repeating its last column, then its last row
    (each row's range, hence the planned geometry, stays as it is)."""
    x = np.concatenate([x, np.repeat(x[:, -1:], n_cols - x.shape[1], axis=1)], axis=1)
    return np.concatenate([x, np.repeat(x[-1:], n_rows - x.shape[0], axis=0)], axis=0)


def _grid_quotes(t: np.ndarray, x: np.ndarray, shape: tuple[int, int]) -> Quotes:
    """Quotes (unit weights, no market) at log-moneyness ``x`` (``[n_e, n_k]``) and expiries
    ``t``, padded to ``shape`` by repetition."""
    xp = _pad_rows_cols(x, *shape)
    tp = _pad_rows_cols(t[:, None], shape[0], 1)[:, 0]
    return Quotes(expiries=tp, k=np.exp(xp), is_call=xp >= 0, mid_iv=np.full(xp.shape, 0.5),
                  bid_iv=np.full(xp.shape, np.nan), ask_iv=np.full(xp.shape, np.nan),
                  weight=np.ones(xp.shape), mid_price=np.zeros(xp.shape),
                  scale=np.ones(xp.shape))


def _solver_ivs(result: CalibrationResult, q: Quotes, log=None) -> np.ndarray | None:
    """Model IVs on ``q`` (the calibration grid's shape) from the calibration's own programs:
    its planning, and its solver stopped before the first step (the first pass of
    Levenberg-Marquardt evaluates the model IVs at the starting point), so a report builds
    no program of its own. ``None`` when the fit's settings (not ``lm`` with the IV loss, a
    batch) or the nodes ``q`` needs do not allow it."""
    pb = result.problem
    n_starts = len(result.starts)
    if result.method != "lm" or pb.loss != "iv" or q.k.shape != pb.quotes.k.shape:
        return None
    bij = pb.bij
    u = np.repeat(bij.to_unconstrained(result.params)[None, None], n_starts, axis=1)
    base = jax.tree_util.tree_map(lambda v: np.asarray([v], np.float64), pb.base)
    quotes = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], q)
    truncation, log_tol = np.float64(pb.truncation), np.float64(pb.log_tol)
    grid = f" of a {q.k.shape[0]} x {q.k.shape[1]} grid"
    geometry, need = _plan_all(u, bij, base, quotes, truncation, log_tol, log, grid)
    if not need <= pb.n_terms:
        return None
    tol = Tolerances(np.asarray(0, np.int64), np.float64(0.0), np.float64(0.0),
                     np.float64(0.0), np.float64(0.0))
    solve = functools.partial(_solve_problems, bij=bij, loss="iv", method="lm",
                              n_terms=pb.n_terms, feller=pb.feller)
    _, _, ivs = programs.run(
        _SOLVER, solve, (u, geometry, base, quotes, tol, np.float64(pb.feller_weight),
                         truncation, log_tol),
        static=(bij, "iv", "lm", pb.n_terms, pb.feller),
        what=f"the {result.model} implied vols{grid} ({pb.n_terms} Fourier nodes)", log=log)
    return np.asarray(ivs)[0]


def _tiled_ivs(result: CalibrationResult, t: np.ndarray, x: np.ndarray, log=None):
    """``_solver_ivs`` over ``[n_e, n_k]`` in tiles of the calibration grid's shape, or
    ``None`` where that route does not apply."""
    shape = result.problem.quotes.k.shape
    out = np.empty(x.shape)
    for r in range(0, x.shape[0], shape[0]):
        for c in range(0, x.shape[1], shape[1]):
            tile = x[r:r + shape[0], c:c + shape[1]]
            ivs = _solver_ivs(result, _grid_quotes(t[r:r + shape[0]], tile, shape), log)
            if ivs is None:
                return None
            out[r:r + tile.shape[0], c:c + tile.shape[1]] = ivs[:tile.shape[0], :tile.shape[1]]
    return out


def model_iv_surface(result: CalibrationResult, chain: pd.DataFrame | None = None,
                     expiry_years=None, log_moneyness=None, *,
                     log: Callable[[str], object] | None = None) -> np.ndarray:
    """Model implied vols of the calibrated parameters.

    Either at the quotes of ``chain`` (default: the calibration chain's quotes, returned in
    its row order) or on a grid ``expiry_years`` (``[n_e]``) x ``log_moneyness``
    (``[n_e, n_k]`` or ``[n_k]``), returned ``[n_e, n_k]`` (the smile curves of a report).

    After a Levenberg-Marquardt fit to IVs (the default) the values come from the
    calibration's own compiled programs, the grid cut into tiles of the calibration grid's
    size: a report compiles nothing more. Otherwise (or where the grid needs more Fourier
    nodes than the fit used) from a pricing program per bucketed grid size
    (``programs.bucket``). ``log`` as in ``calibrate``.
    """
    pb = result.problem
    with jax.enable_x64(True):
        if expiry_years is not None:
            t = np.atleast_1d(np.asarray(expiry_years, np.float64))
            x = np.asarray(log_moneyness, np.float64)
            x = np.broadcast_to(x, (len(t), x.shape[-1]))
            n_e, n_k = x.shape
            ivs = _tiled_ivs(result, t, x, log)
            if ivs is not None:
                return ivs
            q = _grid_quotes(t, x, (bucket(n_e, 4), bucket(n_k, 16)))
            return _surface_ivs(result, q, log)[:n_e, :n_k]
        if chain is None:
            return result.residuals["model_iv"].to_numpy()
        check_chain(chain)
        size = (chain["expiry_years"].nunique(), int(chain.groupby("expiry_years").size().max()))
        fits = size[0] <= pb.quotes.k.shape[0] and size[1] <= pb.quotes.k.shape[1]
        q, pos = build_quotes(chain, shape=pb.quotes.k.shape if fits else None, log=log)
        ivs = _solver_ivs(result, q, log) if fits else None
        if ivs is None:
            ivs = _surface_ivs(result, q, log)
        return ivs[pos[:, 0], pos[:, 1]]


__all__ = ["calibrate", "calibrate_batch", "model_iv_surface", "STATUS", "CONVERGED"]
