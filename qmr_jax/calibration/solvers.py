"""Least-squares solvers whose whole loop runs inside one compiled function.

* ``levenberg_marquardt``: Gauss-Newton steps from the autodiff Jacobian (forward mode: one
  JVP per parameter, the residual in the same pass) with Marquardt's diagonal scaling and
  Nielsen's damping update (Nielsen 1999, "Damping parameter in Marquardt's method";
  Madsen, Nielsen and Tingleff 2004, "Methods for non-linear least squares problems").
* ``lbfgs``: ``optax.lbfgs`` with its zoom line search on the same loss.

Both return a ``SolverState`` with the final point, loss, iteration count, a status code
(``STATUS``) and the loss after every iteration; both are plain functions of arrays, so a
batch of problems or of starting points is a ``vmap`` away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

RUNNING, CONVERGED_F, CONVERGED_X, CONVERGED_G, ZERO_RESIDUAL, MAX_ITER, STALLED, NOT_FINITE = \
    range(8)
STATUS = {
    RUNNING: "running",
    CONVERGED_F: "relative loss reduction below ftol",
    CONVERGED_X: "step below xtol",
    CONVERGED_G: "gradient below gtol",
    ZERO_RESIDUAL: "loss below atol (exact fit)",
    MAX_ITER: "iteration limit reached",
    STALLED: "no further decrease possible (damping limit)",
    NOT_FINITE: "loss or Jacobian not finite",
}
"""Solver status code -> reason it stopped."""
CONVERGED = (CONVERGED_F, CONVERGED_X, CONVERGED_G, ZERO_RESIDUAL)


class Tolerances(NamedTuple):
    max_iter: jax.Array | int = 200
    ftol: jax.Array | float = 1e-10
    xtol: jax.Array | float = 1e-10
    gtol: jax.Array | float = 1e-12
    atol: jax.Array | float = 1e-28


class SolverState(NamedTuple):
    u: jax.Array
    loss: jax.Array  # 0.5 * sum r^2
    iterations: jax.Array
    status: jax.Array
    history: jax.Array  # loss after each iteration (NaN beyond the last)
    evaluations: jax.Array  # residual evaluations (a Jacobian counts as one)
    aux: Any = None  # the residual function's auxiliary output at ``u`` (LM only)


def levenberg_marquardt(residual_fn: Callable, u0, tol: Tolerances, history_size: int = 256):
    """Minimise ``0.5 |r(u)|^2`` from ``u0`` by Levenberg-Marquardt.

    ``residual_fn(u)`` returns ``(r, aux)``; ``aux`` (e.g. the model IVs) is kept for the
    accepted point. The loop evaluates the residual and its Jacobian once per iteration, at
    the trial point (the first pass evaluates ``u0`` and always accepts it), so both are
    traced and compiled only once.
    """
    dtype = u0.dtype
    n = u0.shape[-1]

    def lin(u):
        both = lambda v: (lambda out: (out[0], out))(residual_fn(v))
        jac, (r, aux) = jax.jacfwd(both, has_aux=True)(u)
        return r, jac, aux

    r_shape, aux_shape = jax.eval_shape(residual_fn, u0)
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)
    hist0 = jnp.full((history_size,), jnp.nan, dtype)

    def cond(c):
        return c["status"] == RUNNING

    def body(c):
        r_t, j_t, aux_t = lin(c["trial"])
        loss_t = 0.5 * jnp.sum(r_t * r_t)
        finite = jnp.isfinite(loss_t) & jnp.all(jnp.isfinite(j_t))
        first = c["evals"] == 0
        gain = (c["loss"] - loss_t) / jnp.maximum(c["pred"], 1e-300)
        accept = first | (finite & (loss_t < c["loss"]) & (gain > 0))
        mu, nu = c["mu"], c["nu"]
        mu_acc = mu * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
        mu = jnp.where(first, 1e-3 * jnp.max(jnp.sum(j_t * j_t, axis=0)),
                       jnp.where(accept, mu_acc, mu * nu))
        nu = jnp.where(accept, 2.0, 2.0 * nu)
        reduction = c["loss"] - loss_t
        # MINPACK's tests, on accepted and rejected trials alike: neither the actual nor the
        # predicted reduction is worth having, or the step is negligible
        small_f = ~first & (jnp.abs(reduction) <= tol.ftol * c["loss"]) & \
            (c["pred"] <= tol.ftol * c["loss"])
        small_x = ~first & (c["step_norm"] <= tol.xtol * (jnp.linalg.norm(c["u"]) + tol.xtol))
        keep = lambda new, old: jnp.where(accept, new, old)
        u = keep(c["trial"], c["u"])
        r, jac, loss = keep(r_t, c["r"]), keep(j_t, c["jac"]), keep(loss_t, c["loss"])
        aux = jax.tree_util.tree_map(keep, aux_t, c["aux"])
        g = jac.T @ r
        a = jac.T @ jac
        d = jnp.maximum(jnp.diag(a), 1e-12 * jnp.max(jnp.diag(a)) + 1e-300)
        step = jnp.linalg.solve(a + mu * jnp.diag(d), -g)
        pred = 0.5 * jnp.dot(step, mu * d * step - g)
        it = c["it"] + jnp.where(first, 0, 1)
        hist = jnp.where(first, c["hist"],
                         c["hist"].at[jnp.clip(it - 1, 0, history_size - 1)].set(loss))
        status = jnp.select(
            [first & ~finite, loss <= tol.atol, jnp.max(jnp.abs(g)) <= tol.gtol, small_f,
             small_x, ~jnp.isfinite(mu) | (mu > 1e30), it >= tol.max_iter],
            [NOT_FINITE, ZERO_RESIDUAL, CONVERGED_G, CONVERGED_F, CONVERGED_X, STALLED,
             MAX_ITER],
            RUNNING)
        return dict(u=u, r=r, jac=jac, loss=loss, aux=aux, mu=mu, nu=nu, it=it, hist=hist,
                    evals=c["evals"] + 1, status=status, trial=u + step, pred=pred,
                    step_norm=jnp.linalg.norm(step))

    init = dict(u=u0, r=zeros(r_shape), jac=jnp.zeros(r_shape.shape + (n,), dtype),
                loss=jnp.asarray(jnp.inf, dtype), aux=jax.tree_util.tree_map(zeros, aux_shape),
                mu=jnp.asarray(1.0, dtype), nu=jnp.asarray(2.0, dtype), it=jnp.asarray(0),
                hist=hist0, evals=jnp.asarray(0), status=jnp.asarray(RUNNING), trial=u0,
                pred=jnp.asarray(1.0, dtype), step_norm=jnp.asarray(jnp.inf, dtype))
    c = jax.lax.while_loop(cond, body, init)
    return SolverState(c["u"], c["loss"], c["it"], c["status"], c["hist"], c["evals"], c["aux"])


def lbfgs(residual_fn: Callable, u0, tol: Tolerances, history_size: int = 256,
          memory_size: int = 10):
    """Minimise ``0.5 |r(u)|^2`` from ``u0`` by ``optax.lbfgs`` with a zoom line search."""
    dtype = u0.dtype

    def loss_fn(u):
        r = residual_fn(u)[0]
        return 0.5 * jnp.sum(r * r)

    opt = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(loss_fn)
    state0 = opt.init(u0)
    loss0, g0 = jax.value_and_grad(loss_fn)(u0)
    hist0 = jnp.full((history_size,), jnp.nan, dtype)
    status0 = jnp.where(jnp.isfinite(loss0), RUNNING, NOT_FINITE)
    status0 = jnp.where((status0 == RUNNING) & (loss0 <= tol.atol), ZERO_RESIDUAL, status0)

    def cond(c):
        return c[-1] == RUNNING

    def body(c):
        u, state, loss, it, hist, evals, status = c
        value, grad = value_and_grad(u, state=state)
        updates, state = opt.update(grad, state, u, value=value, grad=grad, value_fn=loss_fn)
        u_new = optax.apply_updates(u, updates)
        loss_new = optax.tree_utils.tree_get(state, "value")
        g_new = optax.tree_utils.tree_get(state, "grad")
        ls_evals = optax.tree_utils.tree_get(state, "num_linesearch_steps")
        it = it + 1
        hist = hist.at[jnp.minimum(it - 1, history_size - 1)].set(loss_new)
        small_f = jnp.abs(loss - loss_new) <= tol.ftol * jnp.maximum(loss, 1e-300)
        small_x = jnp.linalg.norm(updates) <= tol.xtol * (jnp.linalg.norm(u) + tol.xtol)
        status = jnp.select(
            [~jnp.isfinite(loss_new), loss_new <= tol.atol,
             jnp.max(jnp.abs(g_new)) <= tol.gtol, small_f, small_x, it >= tol.max_iter],
            [NOT_FINITE, ZERO_RESIDUAL, CONVERGED_G, CONVERGED_F, CONVERGED_X, MAX_ITER],
            RUNNING)
        return u_new, state, loss_new, it, hist, evals + 1 + ls_evals, status

    del g0
    init = (u0, state0, loss0, jnp.asarray(0), hist0, jnp.asarray(1), status0)
    u, state, loss, it, hist, evals, status = jax.lax.while_loop(cond, body, init)
    return SolverState(u, loss, it, status, hist, evals)


SOLVERS = {"lm": levenberg_marquardt, "lbfgs": lbfgs}
