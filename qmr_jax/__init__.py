"""qmr_jax: Monte Carlo stress testing, pricing and calibration of crypto options models on JAX.

Importing the package never changes global JAX configuration; enable float64 yourself
(``jax.config.update("jax_enable_x64", True)``) for pricing and calibration work.

Public API (stable names):

* models: ``GBM``, ``Merton``, ``Kou``, ``Heston``, ``Bates`` and ``Market``;
  ``check_models`` (which batch member and field is invalid) and ``checkify_models``;
* pricing: ``black_price``, ``black_greeks``, ``implied_vol``, ``fourier_price``,
  ``merton_series_price``, ``mc_price`` with the ``payoffs`` module;
* simulation: ``simulate`` returning ``Paths`` (or ``PathSummary``);
* sensitivities: ``greeks``, ``parameter_sensitivities`` of any value function, e.g. a
  ``fourier_pricer``;
* data: ``data.load_deribit`` and the option-chain cleaning rules, ``data.synthetic_chain``;
* calibration: ``calibrate`` (and ``calibrate_batch``) to a whole surface, returning a
  ``CalibrationResult``; ``quote_sensitivities`` of calibrated parameters and of any value
  to each market quote;
* stress testing: ``stress`` (shocks, scenario files, ``StressEngine``, VaR/ES, sweeps).
"""

from . import calibration, data, models, sensitivities, stress
from .book import Book, Position, load_book, load_model
from .calibration import CalibrationResult, calibrate, calibrate_batch, quote_sensitivities
from .models import (
    GBM,
    Bates,
    Heston,
    Kou,
    Market,
    Merton,
    ModelCheck,
    check_models,
    checkify_models,
    cumulants,
)
from .pricing import payoffs
from .pricing.black import (
    IV_ABOVE_MAX,
    IV_BAD_INPUT,
    IV_BELOW_INTRINSIC,
    IV_OK,
    BlackGreeks,
    black_greeks,
    black_price,
    implied_vol,
)
from .pricing.fourier import (
    FourierPricer,
    UnresolvedError,
    fourier_price,
    fourier_pricer,
    merton_series_price,
)
from .pricing.mc_greeks import MCGreeks, mc_greeks, mc_value
from .pricing.montecarlo import MCResult, mc_price
from .sensitivities import Greeks, Sensitivities, greeks, parameter_sensitivities
from .simulate import Paths, PathSummary, simulate, time_grid

__version__ = "0.1.0"

__all__ = [
    "GBM",
    "Merton",
    "Kou",
    "Heston",
    "Bates",
    "Market",
    "cumulants",
    "check_models",
    "checkify_models",
    "ModelCheck",
    "models",
    "data",
    "calibration",
    "stress",
    "calibrate",
    "calibrate_batch",
    "CalibrationResult",
    "quote_sensitivities",
    "payoffs",
    "black_price",
    "black_greeks",
    "BlackGreeks",
    "implied_vol",
    "IV_OK",
    "IV_BELOW_INTRINSIC",
    "IV_ABOVE_MAX",
    "IV_BAD_INPUT",
    "fourier_price",
    "sensitivities",
    "greeks",
    "parameter_sensitivities",
    "Greeks",
    "Sensitivities",
    "fourier_pricer",
    "FourierPricer",
    "UnresolvedError",
    "merton_series_price",
    "mc_price",
    "mc_value",
    "mc_greeks",
    "MCGreeks",
    "Book",
    "Position",
    "load_book",
    "load_model",
    "MCResult",
    "simulate",
    "Paths",
    "PathSummary",
    "time_grid",
    "__version__",
]
