"""Greeks and parameter sensitivities of any pricer by automatic differentiation.

Everything here works on a *value function* ``value_fn(model, market, elapsed)``: a
differentiable function returning an array of values (one per option, position or scenario)
under a model, a ``Market`` and ``elapsed`` years of calendar time passed (every expiry
shortened by ``elapsed``, spot and rates held). ``qmr_jax.fourier_pricer``,
``black_value_fn``, ``qmr_jax.mc_value`` (Monte Carlo, pathwise) and ``qmr_jax.Book.value``
all provide one, so the same code gives exact Greeks of a single option, a surface or a book.

Two views:

* ``greeks``: the trader's Greeks in the four risk coordinates spot, vol, rate and time:
  ``delta = dV/dS``, ``gamma = d2V/dS2``, ``vega = dV/dsigma``, ``vanna = d2V/(dS dsigma)``,
  ``volga = d2V/dsigma2``, ``theta = dV/d(elapsed)`` (value change as time passes, per year)
  and ``rho = dV/dr``. The vol coordinate ``sigma`` is a parallel shift of the model's vol
  inputs in vol units (``vol_inputs``): ``sigma`` for GBM, Merton and Kou (diffusion vol);
  ``sqrt(v0)`` and ``sqrt(theta)`` together for Heston and Bates (the instantaneous and the
  long-run vol, so the whole term structure of ATM vol moves by about one unit). Rho moves the
  rate with the dividend (borrow) rate held, i.e. the forward moves with it.
* ``parameter_sensitivities``: first and second derivatives with respect to every market
  input (spot, rate, div) and every model parameter (v0, kappa, theta, xi, rho, lam, mu_j,
  sigma_j, p, eta1, eta2, ...), in their own units.

Mode selection (``mode="auto"``): Jacobians use forward mode when the function has more
outputs than inputs (a surface or a per-position book against ~10 inputs) and reverse mode
otherwise (a scalar book value); Hessians are forward-over-reverse for scalar outputs and
forward-over-forward for vector outputs.

Units: the returned arrays are raw derivatives (per unit of each input: vega per 1.00 of vol,
theta per year, rho per 1.00 of rate). ``Greeks.in_market_units()`` converts to the units
people quote: vega and volga per vol point, vanna per vol point, theta per day, rho per 1%.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .models import GBM, Bates, Heston, Kou, Market, Merton

ValueFn = Callable[..., jax.Array]

DAYS_PER_YEAR = 365.0

# fields of the model that are variances (shifted as sqrt) or vols (shifted directly)
_VOL_INPUTS: dict[type, tuple[tuple[str, str], ...]] = {
    GBM: (("sigma", "vol"),),
    Merton: (("sigma", "vol"),),
    Kou: (("sigma", "vol"),),
    Heston: (("v0", "variance"), ("theta", "variance")),
    Bates: (("v0", "variance"), ("theta", "variance")),
}


def vol_inputs(model) -> tuple[str, ...]:
    """Names of the model fields moved by the vol coordinate of ``greeks``."""
    return tuple(name for name, _ in _vol_spec(model))


def _vol_spec(model):
    for cls, spec in _VOL_INPUTS.items():
        if isinstance(model, cls):
            return spec
    fields = getattr(model, "_fields", ())
    if "sigma" in fields:
        return (("sigma", "vol"),)
    raise TypeError(f"no vol coordinate is known for {type(model).__name__}; pass a model "
                    "with a 'sigma' field or one of GBM, Merton, Kou, Heston, Bates")


def shift_vol(model, dvol):
    """``model`` with every vol input moved by ``dvol`` in vol units (see module docstring).

    Variances move as ``(sqrt(v) + dvol)^2``; vols as ``sigma + dvol``. Differentiable in
    ``dvol`` (and at ``dvol = 0`` the identity).
    """
    changes = {}
    for name, kind in _vol_spec(model):
        v = getattr(model, name)
        if kind == "variance":
            changes[name] = (jnp.sqrt(v) + dvol) ** 2
        else:
            changes[name] = v + dvol
    return model._replace(**changes)


# ------------------------------------------------------------------------------------------
# trader's Greeks


class Greeks(NamedTuple):
    """Value and Greeks, each shaped like the value function's output.

    Attributes (raw derivatives; see ``in_market_units``):
      value: ``V``.
      delta: ``dV/dS`` (spot).
      gamma: ``d2V/dS2``.
      vega: ``dV/dsigma`` per 1.00 of vol (parallel shift of the vol inputs).
      vanna: ``d2V/(dS dsigma)``.
      volga: ``d2V/dsigma2``.
      theta: ``dV/dt`` per year of calendar time passed (spot, vol and rates held).
      rho: ``dV/dr`` per 1.00 of the rate.
    """

    value: jax.Array
    delta: jax.Array
    gamma: jax.Array
    vega: jax.Array
    vanna: jax.Array
    volga: jax.Array
    theta: jax.Array
    rho: jax.Array

    def in_market_units(self) -> Greeks:
        """Vega/vanna per vol point, volga per vol point squared, theta per day, rho per 1%."""
        return Greeks(self.value, self.delta, self.gamma, self.vega / 100.0,
                      self.vanna / 100.0, self.volga / 1e4, self.theta / DAYS_PER_YEAR,
                      self.rho / 100.0)

    def total(self) -> Greeks:
        """Sums over every axis (a book's totals from per-position Greeks)."""
        return Greeks(*(jnp.sum(x) for x in self))


def _risk_fn(value_fn: ValueFn, model, market: Market):
    """``f(x)`` with ``x = (spot, dvol, rate, elapsed)`` around the given model and market."""

    def f(x):
        m = shift_vol(model, x[1])
        mk = market._replace(spot=x[0], rate=x[2])
        return value_fn(m, mk, x[3])

    return f


def greeks(value_fn: ValueFn, model, market: Market, *, elapsed=0.0) -> Greeks:
    """Value, delta, gamma, vega, vanna, volga, theta and rho of ``value_fn`` by autodiff.

    Args:
      value_fn: ``value_fn(model, market, elapsed) -> array`` (see module docstring).
      model, market: where to differentiate (scalar market leaves).
      elapsed: calendar time already passed (years), default 0.

    Returns:
      ``Greeks`` with the shape of the value function's output, in its dtype.

    All first and second derivatives come from one forward-over-forward pass in the four risk
    coordinates (spot, vol, rate, time), whatever the number of outputs.
    """
    for name, leaf in (("spot", market.spot), ("rate", market.rate), ("div", market.div),
                       ("elapsed", elapsed)):
        if jnp.ndim(leaf) != 0:
            raise ValueError(f"greeks needs a scalar market and elapsed time; {name} has shape "
                             f"{jnp.shape(leaf)} (vmap over a batch of markets instead)")
    dtype = jnp.result_type(market.spot, float)
    x0 = jnp.stack([jnp.asarray(market.spot, dtype), jnp.zeros((), dtype),
                    jnp.asarray(market.rate, dtype), jnp.asarray(elapsed, dtype)])
    f = _risk_fn(value_fn, model, market)

    def first(x):
        # one jvp per coordinate, vectorised; returns (value, jac[..., 4])
        value = f(x)
        jac = jax.vmap(lambda t: jax.jvp(f, (x,), (t,))[1], out_axes=-1)(jnp.eye(4, dtype=dtype))
        return jac, value

    jac, hess, value = _jac_hess(first, x0, dtype)
    return Greeks(value=value, delta=jac[..., 0], gamma=hess[..., 0, 0], vega=jac[..., 1],
                  vanna=hess[..., 0, 1], volga=hess[..., 1, 1], theta=jac[..., 3],
                  rho=jac[..., 2])


def _jac_hess(first, x0, dtype):
    """Jacobian, Hessian and value from ``first(x) -> (jac, value)`` by forward mode."""
    eye = jnp.eye(x0.shape[0], dtype=dtype)

    def directional(t):
        (jac, value), (djac, _) = jax.jvp(first, (x0,), (t,))
        return jac, value, djac

    jac, value, hess = jax.vmap(directional, out_axes=(None, None, -1))(eye)
    return jac, hess, value


# ------------------------------------------------------------------------------------------
# parameter sensitivities


MARKET_INPUTS = ("spot", "rate", "div")


class Sensitivities(NamedTuple):
    """Derivatives of a value function with respect to named inputs.

    Attributes:
      names: input names: ``"spot"``, ``"rate"``, ``"div"``, then the model's fields.
      point: the input values, ``[n]``.
      value: the values, shape ``O`` (the value function's output).
      gradient: ``[*O, n]`` first derivatives per unit of each input.
      hessian: ``[*O, n, n]`` second derivatives, or ``None`` if not requested.
    """

    names: tuple[str, ...]
    point: jax.Array
    value: jax.Array
    gradient: jax.Array
    hessian: jax.Array | None

    def as_dict(self) -> dict[str, jax.Array]:
        """``{name: gradient[..., i]}``."""
        return {n: self.gradient[..., i] for i, n in enumerate(self.names)}


def input_names(model) -> tuple[str, ...]:
    """The inputs of ``parameter_sensitivities`` for this model, in order."""
    return MARKET_INPUTS + tuple(model._fields)


def _pack(model, market: Market, dtype):
    leaves = [market.spot, market.rate, market.div, *model]
    for name, leaf in zip(input_names(model), leaves, strict=True):
        if jnp.ndim(leaf) != 0:
            raise ValueError(f"parameter_sensitivities needs scalar inputs; {name} has shape "
                             f"{jnp.shape(leaf)} (vmap over a batch of models instead)")
    return jnp.stack([jnp.asarray(v, dtype) for v in leaves])


def _unpack(x, model, market: Market):
    mk = Market(x[0], x[1], x[2])
    m = type(model)(*(x[3 + i] for i in range(len(model._fields))))
    return m, mk


def parameter_sensitivities(
    value_fn: ValueFn,
    model,
    market: Market,
    *,
    elapsed=0.0,
    second_order: bool = True,
    mode: str = "auto",
) -> Sensitivities:
    """First (and second) derivatives of ``value_fn`` with respect to every input.

    Args:
      value_fn: ``value_fn(model, market, elapsed) -> array``.
      model, market: the point (scalar leaves).
      elapsed: calendar time passed (years), held fixed.
      second_order: also compute the Hessian.
      mode: ``"auto"`` (forward mode when the output has more entries than there are
        inputs, reverse mode otherwise), ``"forward"`` or ``"reverse"``.

    Returns:
      ``Sensitivities`` with inputs ``("spot", "rate", "div", *model._fields)``.
    """
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"mode must be 'auto', 'forward' or 'reverse'; got {mode!r}")
    dtype = jnp.result_type(*jax.tree_util.tree_leaves((model, market)), float)
    x0 = _pack(model, market, dtype)

    def f(x):
        m, mk = _unpack(x, model, market)
        return value_fn(m, mk, elapsed)

    out_shape = jax.eval_shape(f, x0).shape
    n_out = int(np.prod(out_shape, dtype=np.int64))
    if mode == "auto":
        mode = "forward" if n_out > x0.shape[0] else "reverse"
    jac_fn = jax.jacfwd if mode == "forward" else jax.jacrev

    def with_value(x):
        y = f(x)
        return y, y

    if not second_order:
        gradient, value = jac_fn(with_value, has_aux=True)(x0)
        return Sensitivities(input_names(model), x0, value, gradient, None)

    def first(x):
        return jac_fn(with_value, has_aux=True)(x)

    jac, hess, value = _jac_hess(first, x0, dtype)
    return Sensitivities(input_names(model), x0, value, jac, hess)


# ------------------------------------------------------------------------------------------
# value functions of the closed-form pricers


def black_value_fn(strikes, expiries, is_call) -> ValueFn:
    """Value function of European options under ``GBM`` by the Black-Scholes formula.

    ``value_fn(model, market, elapsed)`` with ``model = GBM(sigma)``; the forward and the
    discount come from the market and ``expiries - elapsed``.
    """
    from .pricing.black import black_price

    strikes = jnp.asarray(strikes)
    expiries = jnp.asarray(expiries)
    is_call = jnp.asarray(is_call)

    def value_fn(model, market, elapsed):
        if not isinstance(model, GBM):
            raise TypeError(f"black_value_fn prices under GBM only; got {type(model).__name__} "
                            "(use qmr_jax.fourier_pricer for other models)")
        t = expiries - elapsed
        return black_price(market.forward(t), strikes, t, model.sigma, is_call,
                           market.discount(t))

    return value_fn


__all__ = [
    "Greeks",
    "Sensitivities",
    "greeks",
    "parameter_sensitivities",
    "black_value_fn",
    "shift_vol",
    "vol_inputs",
    "input_names",
    "MARKET_INPUTS",
    "DAYS_PER_YEAR",
]
