"""Maps between a model's parameters and the unconstrained vector the optimisers move.

Every calibrated field lives in an open box ``(lo, hi)``. Fields whose box spans orders of
magnitude (variances, speeds, vols of vol, intensities) move on a log scale,
``x = exp(log lo + (log hi - log lo) sigmoid(u))``; the others (correlations, jump means,
probabilities) linearly, ``x = lo + (hi - lo) sigmoid(u)``. Each map is smooth, strictly
increasing and onto its box, so any unconstrained step gives valid parameters and the
optimisers never see a NaN from a negative variance or ``|rho| >= 1``. The default boxes
are wide enough for crypto surfaces (vols up to 200%, jumps of either sign up to
``e^{+-2}``) and can be changed per field with ``bounds=``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..models import GBM, Bates, Heston, Kou, Merton

EDGE_TOL = 1e-3
"""A calibrated field within this share of its box (on the map's scale) of an edge is reported
as saturated: the fit would move it further if the box allowed."""


class FieldMap(NamedTuple):
    """One field's box and scale."""

    lo: float
    hi: float
    log: bool

    def forward(self, u):
        s = jax.nn.sigmoid(u)
        if self.log:
            a, b = math.log(self.lo), math.log(self.hi)
            x = jnp.exp(a + (b - a) * s)
        else:
            x = self.lo + (self.hi - self.lo) * s
        return jnp.clip(x, self.lo, self.hi)  # rounding at saturation stays in the box

    def forward_host(self, u) -> np.ndarray:
        """``forward`` in NumPy (float64), for results on the host: no compiled program."""
        s = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(u, np.float64)))  # sigmoid, no overflow
        if self.log:
            a, b = math.log(self.lo), math.log(self.hi)
            x = np.exp(a + (b - a) * s)
        else:
            x = self.lo + (self.hi - self.lo) * s
        return np.clip(x, self.lo, self.hi)

    def inverse(self, x):
        s = np.clip(self.position(x), 1e-12, 1.0 - 1e-12)
        return np.log(s) - np.log1p(-s)

    def position(self, x):
        """Where ``x`` sits in the box on the map's own scale: 0 at ``lo``, 1 at ``hi``."""
        x = np.asarray(x, np.float64)
        if self.log:
            a, b = math.log(self.lo), math.log(self.hi)
            return (np.log(x) - a) / (b - a)
        return (x - self.lo) / (self.hi - self.lo)

    def edge(self, x) -> str | None:
        """``"lower"`` or ``"upper"`` when ``x`` sits on that edge of the box (within
        ``EDGE_TOL`` of the box on the map's scale: the optimiser's coordinate ``|u| > 6.9``,
        where the map is flat and the data push the field out of the box), else ``None``."""
        s = self.position(x)
        if np.min(s) <= EDGE_TOL:
            return "lower"
        if np.max(s) >= 1.0 - EDGE_TOL:
            return "upper"
        return None

    def contains(self, x) -> bool:
        x = np.asarray(x, np.float64)
        return bool(np.all((x >= self.lo) & (x <= self.hi)))  # the edges: a saturated fit


_HESTON = {
    "v0": FieldMap(1e-4, 4.0, True),
    "kappa": FieldMap(1e-3, 50.0, True),
    "theta": FieldMap(1e-4, 4.0, True),
    "xi": FieldMap(1e-3, 20.0, True),
    "rho": FieldMap(-0.999, 0.999, False),
}
_JUMPS = {
    "lam": FieldMap(1e-4, 100.0, True),
    "mu_j": FieldMap(-2.0, 2.0, False),
    "sigma_j": FieldMap(1e-3, 2.0, True),
}
_SIGMA = {"sigma": FieldMap(1e-3, 5.0, True)}

DEFAULT_BOUNDS: dict[type, dict[str, FieldMap]] = {
    GBM: dict(_SIGMA),
    Merton: {**_SIGMA, **_JUMPS},
    Kou: {
        **_SIGMA,
        "lam": _JUMPS["lam"],
        "p": FieldMap(1e-4, 1.0 - 1e-4, False),
        "eta1": FieldMap(1.05, 500.0, True),
        "eta2": FieldMap(0.05, 500.0, True),
    },
    Heston: dict(_HESTON),
    Bates: {**_HESTON, **_JUMPS},
}
"""Default box of every calibrated field, per model type."""


class Bijection:
    """The unconstrained coordinates of one model type's free fields.

    Args:
      model_type: ``Heston``, ``Bates``, ``Merton``, ``Kou`` or ``GBM``.
      bounds: optional ``{field: (lo, hi)}`` overriding the default boxes (a field keeps
        the log scale when ``lo > 0`` and its default is log-scaled).
      fixed: fields held at their initial values (not calibrated).
    """

    def __init__(self, model_type, bounds=None, fixed=()):
        if model_type not in DEFAULT_BOUNDS:
            known = ", ".join(t.__name__ for t in DEFAULT_BOUNDS)
            raise TypeError(f"calibration supports {known}; got {model_type.__name__}")
        self.model_type = model_type
        maps = dict(DEFAULT_BOUNDS[model_type])
        for name, box in (bounds or {}).items():
            if name not in maps:
                raise ValueError(f"bounds: {model_type.__name__} has no field {name!r} "
                                 f"(fields: {', '.join(model_type._fields)})")
            lo, hi = (float(v) for v in box)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds[{name!r}] = {box!r} must be finite with lo < hi")
            log = maps[name].log and lo > 0
            maps[name] = FieldMap(lo, hi, log)
        for name in fixed:
            if name not in maps:
                raise ValueError(f"fixed: {model_type.__name__} has no field {name!r}")
        self.maps = maps
        self.fixed = tuple(fixed)
        self.free = tuple(f for f in model_type._fields if f not in self.fixed)
        if not self.free:
            raise ValueError("every field is fixed: nothing to calibrate")

    def _key(self):
        return (self.model_type, tuple(sorted(self.maps.items())), self.fixed)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, Bijection) and self._key() == other._key()

    def __repr__(self):
        return (f"Bijection({self.model_type.__name__}, free={self.free}, "
                f"fixed={self.fixed})")

    @property
    def size(self) -> int:
        return len(self.free)

    def check_inside(self, model, what="initial parameters") -> None:
        for name in self.free:
            m = self.maps[name]
            if not m.contains(getattr(model, name)):
                raise ValueError(
                    f"{what}: {self.model_type.__name__}.{name} = "
                    f"{np.asarray(getattr(model, name)).tolist()} is outside the calibration "
                    f"box ({m.lo:g}, {m.hi:g}); widen it with bounds={{{name!r}: (lo, hi)}}")

    def to_unconstrained(self, model) -> np.ndarray:
        """``[..., n_free]`` unconstrained coordinates of a (possibly batched) model."""
        return np.stack([self.maps[f].inverse(getattr(model, f)) for f in self.free], axis=-1)

    def to_model(self, u, base):
        """The model at unconstrained ``u`` (``[..., n_free]``), fixed fields from ``base``."""
        values = {f: self.maps[f].forward(u[..., i]) for i, f in enumerate(self.free)}
        return self.model_type(**{f: values.get(f, getattr(base, f))
                                  for f in self.model_type._fields})

    def to_model_host(self, u, base):
        """``to_model`` in NumPy for a concrete ``u``: float parameters (scalars for a single
        point), fixed fields from ``base``."""
        u = np.asarray(u, np.float64)
        values = {f: self.maps[f].forward_host(u[..., i]) for i, f in enumerate(self.free)}
        out = {f: values[f] if f in values else np.asarray(getattr(base, f), np.float64)
               for f in self.model_type._fields}
        if u.ndim == 1:
            out = {f: float(v) for f, v in out.items()}
        return self.model_type(**out)

    def jacobian_diag(self, u) -> jax.Array:
        """``d x_i / d u_i`` per free field (the maps are elementwise)."""
        return jnp.stack([jax.grad(self.maps[f].forward)(u[i]) for i, f in enumerate(self.free)])
