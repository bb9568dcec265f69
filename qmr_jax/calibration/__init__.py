"""Calibration of models to implied-volatility surfaces: bijections, objectives, solvers,
results and quote-level sensitivities.

The public names load their modules on first use (PEP 562): the pricers use
``qmr_jax.calibration.programs`` (compiled programs kept on disk) without importing the
solvers, optax and pandas.
"""

import sys as _sys
import types as _types
from importlib import import_module as _import_module

# public name -> (module relative to this package, attribute)
_LAZY: dict[str, tuple[str, str]] = {}
for _mod, _names in {
    ".bijections": ("DEFAULT_BOUNDS", "Bijection", "FieldMap"),
    ".calibrate": ("calibrate", "calibrate_batch", "model_iv_surface"),
    ".defaults": ("MODELS", "initial_guess"),
    ".quote_sensitivity": ("QuoteSensitivities", "quote_sensitivities"),
    ".result": ("CalibrationResult",),
    ".solvers": ("STATUS",),
}.items():
    for _name in _names:
        _LAZY[_name] = (_mod, _name)
del _mod, _names, _name


class _Package(_types.ModuleType):
    """The import system binds a submodule as an attribute of its package when it is
    imported: ``qmr_jax.calibration.calibrate`` (the module) would then hide
    ``qmr_jax.calibration.calibrate`` (the function). A public name keeps its value."""

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(_import_module(module, __name__), attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_BOUNDS", "Bijection", "FieldMap", "CalibrationResult", "STATUS", "calibrate",
    "calibrate_batch", "model_iv_surface", "QuoteSensitivities", "quote_sensitivities",
    "MODELS", "initial_guess",
]
