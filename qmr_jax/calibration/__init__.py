"""Calibration of models to implied-volatility surfaces: bijections, objectives, solvers,
results and quote-level sensitivities."""

from .bijections import DEFAULT_BOUNDS, Bijection, FieldMap
from .calibrate import calibrate, calibrate_batch, model_iv_surface
from .defaults import MODELS, initial_guess
from .quote_sensitivity import QuoteSensitivities, quote_sensitivities
from .result import CalibrationResult
from .solvers import STATUS

__all__ = [
    "DEFAULT_BOUNDS", "Bijection", "FieldMap", "CalibrationResult", "STATUS", "calibrate",
    "calibrate_batch", "model_iv_surface", "QuoteSensitivities", "quote_sensitivities",
    "MODELS", "initial_guess",
]
