"""Quote-level sensitivities: how calibrated parameters and a book's value move with one quote.

At a calibration optimum ``u*(q)`` the objective's gradient vanishes, ``g(u*, q) = 0``, for the
market quotes ``q`` (mid implied vols). The implicit-function theorem gives the response of
the optimum to every quote at once, without recalibrating:

    du*/dq = -H^{-1} C,   H = d^2 L / du^2,   C = d^2 L / du dq,

with the exact Hessian (not the Gauss-Newton one) of the loss, by autodiff through the
pricer and the implied-vol inversion. The parameters follow by the chain rule through the
bijection, and a value ``V(model)`` (an option, a book) by ``dV/dq = grad V . dtheta/dq``:
what a quote's move does to the marked value of a book when the model is recalibrated.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..models import Market
from .calibrate import _problem_residual
from .objective import plan_geometry
from .result import VOL_POINTS, CalibrationResult


@dataclasses.dataclass(frozen=True)
class QuoteSensitivities:
    """Responses of a calibration to its quotes, per vol point of one quote's mid IV.

    Attributes:
      params: ``[n_quotes, n_free]`` DataFrame (the chain's index): change of each
        calibrated parameter when that quote's mid IV rises by one vol point.
      value: change of the value (when a value function was given) per vol point of each
        quote, in the value's units; ``None`` otherwise.
      value_gradient: the value's gradient with respect to the free parameters.
      hessian_eigenvalues: of the loss Hessian in unconstrained coordinates; all must be
        positive for the optimum (and these sensitivities) to be well defined.
      gradient_norm: largest entry of the loss gradient at the optimum (should be ~0).
    """

    params: pd.DataFrame
    value: pd.Series | None
    value_gradient: dict | None
    hessian_eigenvalues: np.ndarray
    gradient_norm: float

    @property
    def condition_number(self) -> float:
        ev = self.hessian_eigenvalues
        return float(np.max(np.abs(ev)) / np.min(np.abs(ev)))

    def top(self, column: str | None = None, n: int = 10) -> pd.DataFrame:
        """The ``n`` quotes with the largest absolute effect on ``column`` (default: the
        value, or the first parameter)."""
        s = self.value if column is None and self.value is not None else \
            self.params[column or self.params.columns[0]]
        return self.params.assign(value=self.value).loc[s.abs().sort_values(
            ascending=False).index[:n]]


def quote_sensitivities(result: CalibrationResult, value_fn=None, market: Market | None = None,
                        elapsed: float = 0.0) -> QuoteSensitivities:
    """Sensitivities of the calibrated parameters (and optionally a value) to every quote.

    Args:
      result: a converged ``CalibrationResult`` (the theorem needs the optimum).
      value_fn: optional ``f(model, market, elapsed)`` (a ``FourierPricer``, a bound
        ``Book``, ``black_value_fn``...) whose response to the quotes is wanted; its sum is
        taken if it returns an array.
      market: the market passed to ``value_fn``.
      elapsed: passed to ``value_fn``.

    Returns:
      ``QuoteSensitivities`` with one row per quote of the calibration chain.

    Raises:
      ValueError: if the calibration did not converge or the Hessian is not positive
        definite (a flat direction: fix a parameter with ``calibrate(..., fixed=...)``).
    """
    if not result.converged:
        raise ValueError(f"quote sensitivities need a converged calibration; this one stopped "
                         f"with: {result.reason}")
    pb = result.problem
    bij = pb.bij
    with jax.enable_x64(True):
        quotes = jax.tree_util.tree_map(jnp.asarray, pb.quotes)
        base = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), pb.base)
        trunc = jnp.asarray(pb.truncation, jnp.float64)
        log_tol = jnp.asarray(pb.log_tol, jnp.float64)
        geometry, _ = plan_geometry(result.params, quotes, trunc, log_tol)
        fw = jnp.asarray(pb.feller_weight, jnp.float64)
        u_star = jnp.asarray(bij.to_unconstrained(result.params))
        hess, cross, grad, jac_diag = _ift_fn(bij, pb.loss, pb.n_terms, pb.feller)(
            u_star, base, quotes, fw, trunc, log_tol, geometry)
        hess, cross = np.asarray(hess), np.asarray(cross).reshape(bij.size, -1)
        eig = np.linalg.eigvalsh(0.5 * (hess + hess.T))
        if not np.all(eig > 0):
            raise ValueError(
                "the loss Hessian at the optimum is not positive definite (eigenvalues "
                f"{eig.tolist()}): some parameter combination is not identified by these "
                "quotes; fix it (calibrate(..., fixed=[...])) and recalibrate")
        du = -np.linalg.solve(hess, cross)  # [n_free, n_e * n_k] per unit (decimal) of IV
        dx = np.asarray(jac_diag)[:, None] * du / VOL_POINTS
        pos = pb.positions
        flat = pos[:, 0] * quotes.k.shape[1] + pos[:, 1]
        params = pd.DataFrame(dx[:, flat].T, index=result.residuals.index, columns=bij.free)
        value = grad_v = None
        if value_fn is not None:
            model = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), result.params)
            g = jax.grad(lambda m: jnp.sum(value_fn(m, market, elapsed)))(model)
            grad_v = {f: float(getattr(g, f)) for f in bij.free}
            value = pd.Series(params.to_numpy() @ np.array([grad_v[f] for f in bij.free]),
                              index=params.index, name="value")
    return QuoteSensitivities(params=params, value=value, value_gradient=grad_v,
                              hessian_eigenvalues=eig,
                              gradient_norm=float(np.max(np.abs(np.asarray(grad)))))


@functools.lru_cache(maxsize=32)
def _ift_fn(bij, loss_kind: str, n_terms: int, feller: bool):
    """Compiled gradient, Hessian and cross derivative of the loss at the optimum."""
    residual = _problem_residual(bij, loss_kind, n_terms, feller)

    def parts(u, base, quotes, fw, trunc, log_tol, geometry):
        def loss(u_, mid):
            r, _ = residual(u_, base, quotes, fw, trunc, log_tol, geometry, mid)
            return 0.5 * jnp.sum(r * r)

        mid = quotes.mid_iv
        grad = jax.grad(loss)(u, mid)
        hess = jax.hessian(loss)(u, mid)
        cross = jax.jacrev(jax.grad(loss), argnums=1)(u, mid)  # [n, n_e, n_k]
        return hess, cross, grad, bij.jacobian_diag(u)

    return jax.jit(parts)
