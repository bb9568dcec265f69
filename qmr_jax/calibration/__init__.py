"""Calibration of models to implied-volatility surfaces: bijections, objectives, solvers,
results and quote-level sensitivities."""

from .bijections import DEFAULT_BOUNDS, Bijection, FieldMap
from .calibrate import calibrate, calibrate_batch, model_iv_surface
from .result import CalibrationResult
from .solvers import STATUS

__all__ = [
    "DEFAULT_BOUNDS", "Bijection", "FieldMap", "CalibrationResult", "STATUS", "calibrate",
    "calibrate_batch", "model_iv_surface",
]
