"""qmr_jax: Monte Carlo stress testing, pricing and calibration of crypto options models on JAX.

Importing the package never changes global JAX configuration; enable float64 yourself
(``jax.config.update("jax_enable_x64", True)``) for pricing and calibration work.
"""

from . import models
from .models import GBM, Bates, Heston, Kou, Market, Merton, cumulants
from .pricing.fourier import fourier_price, merton_series_price

__version__ = "0.1.0"

__all__ = [
    "GBM",
    "Merton",
    "Kou",
    "Heston",
    "Bates",
    "Market",
    "cumulants",
    "fourier_price",
    "merton_series_price",
    "models",
    "__version__",
]
