"""Calibration of models to implied-volatility surfaces: bijections, objectives, solvers,
results and quote-level sensitivities.

The public names load their modules on first use (PEP 562): the pricers use
``qmr_jax.calibration.programs`` (compiled programs kept on disk) without importing the
solvers, optax and pandas.
"""

from .._lazy import lazy_package as _lazy_package

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


__getattr__, __dir__ = _lazy_package(__name__, _LAZY)

__all__ = [
    "DEFAULT_BOUNDS", "Bijection", "FieldMap", "CalibrationResult", "STATUS", "calibrate",
    "calibrate_batch", "model_iv_surface", "QuoteSensitivities", "quote_sensitivities",
    "MODELS", "initial_guess",
]
