"""Model parameter containers (NamedTuple pytrees) with characteristic functions."""

from .base import (
    MAX_RATE,
    Market,
    ModelCheck,
    check_models,
    checkify_models,
    cumulants,
    field_status,
)
from .bates import Bates
from .gbm import GBM
from .heston import Heston
from .kou import Kou
from .merton import Merton

MODELS = (GBM, Merton, Kou, Heston, Bates)

__all__ = ["GBM", "Merton", "Kou", "Heston", "Bates", "Market", "cumulants", "MODELS",
           "MAX_RATE", "ModelCheck", "check_models", "checkify_models", "field_status"]
