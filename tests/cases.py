"""Model parameter sets and (model, scheme) cases shared by the simulation and MC tests."""

from __future__ import annotations

import qmr_jax as qmr

MODELS = {
    "gbm": qmr.GBM(0.6),
    "merton": qmr.Merton(0.5, 2.0, -0.1, 0.2),
    "kou": qmr.Kou(0.5, 2.0, 0.4, 8.0, 6.0),
    "heston": qmr.Heston(0.36, 2.0, 0.36, 1.2, -0.6),
    "bates": qmr.Bates(0.36, 2.0, 0.36, 1.2, -0.6, 2.0, -0.1, 0.2),
}
CASES = [
    ("gbm", "exact"),
    ("merton", "exact"),
    ("kou", "exact"),
    ("heston", "qe"),
    ("heston", "euler"),
    ("bates", "qe"),
    ("bates", "euler"),
]
