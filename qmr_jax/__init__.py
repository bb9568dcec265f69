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
* stress testing: ``stress`` (shocks, scenario files, ``StressEngine``, VaR/ES, sweeps);
* ``enable_compilation_cache``: JAX's persistent compilation cache (the command line, the
  demo and the notebooks turn it on; see ``qmr_jax._cache``).

Names are imported on first use (PEP 562), so ``import qmr_jax`` and ``qmr --help`` do not
import JAX; ``from qmr_jax import X`` and ``qmr_jax.X`` work as usual.
"""


from ._lazy import lazy_package as _lazy_package

__version__ = "0.1.0"

# public name -> (module relative to the package, attribute or None for the module itself)
_SUBMODULES = ("calibration", "data", "models", "sensitivities", "stress")
_LAZY: dict[str, tuple[str, str | None]] = {name: (f".{name}", None) for name in _SUBMODULES}
_LAZY.update({
    "payoffs": (".pricing.payoffs", None),
    "enable_compilation_cache": ("._cache", "enable_compilation_cache"),
    "save_model": (".model_file", "save_model"),
})
for _mod, _names in {
    ".book": ("Book", "Position", "load_book", "load_model"),
    ".calibration": ("CalibrationResult", "calibrate", "calibrate_batch", "quote_sensitivities"),
    ".models": ("GBM", "Bates", "Heston", "Kou", "Market", "Merton", "ModelCheck",
                "check_models", "checkify_models", "cumulants"),
    ".pricing.black": ("IV_ABOVE_MAX", "IV_BAD_INPUT", "IV_BELOW_INTRINSIC", "IV_OK",
                       "BlackGreeks", "black_greeks", "black_price", "implied_vol"),
    ".pricing.fourier": ("FourierPricer", "UnresolvedError", "fourier_price", "fourier_pricer",
                         "merton_series_price"),
    ".pricing.mc_greeks": ("MCGreeks", "mc_greeks", "mc_value"),
    ".pricing.montecarlo": ("MCResult", "mc_price"),
    ".sensitivities": ("Greeks", "Sensitivities", "greeks", "parameter_sensitivities"),
    ".simulate": ("Paths", "PathSummary", "simulate", "time_grid"),
}.items():
    for _name in _names:
        _LAZY[_name] = (_mod, _name)
del _mod, _names, _name


__getattr__, __dir__ = _lazy_package(__name__, _LAZY)

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
    "save_model",
    "MCResult",
    "simulate",
    "Paths",
    "PathSummary",
    "time_grid",
    "enable_compilation_cache",
    "__version__",
]
