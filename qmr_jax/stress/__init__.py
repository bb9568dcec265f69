"""Stress testing: shocks, scenario files, full revaluation, VaR/ES and scenario sweeps.

* ``Shock`` and ``apply_shock`` (``shocks``): what a scenario does to the model and market;
* ``Scenario``, ``load_scenario(s)`` (``scenarios``): the strict TOML scenario files, and the
  shipped library in ``scenarios/library``;
* ``StressEngine`` (``revalue``): a book bound to a base model, revalued instantly or along
  simulated horizon paths (pure functions of a ``Shock``, vmappable);
* ``stress`` (``run``): named scenarios end to end, historical replays included;
* ``var_es``, ``es_contributions``, ``historical_var_es``, ``normal_var_es`` (``risk``);
* ``SweepDesign``, ``sweep``, ``load_sweep`` (``sweep``): thousands of scenarios in vmapped
  chunks, streamed to Parquet and resumable.
"""

from .revalue import InstantResult, PathPnL, StressEngine
from .risk import (
    RiskEstimate,
    es_contributions,
    historical_var_es,
    normal_var_es,
    var_es,
)
from .run import StressRun, replay_shocks, stress
from .scenarios import (
    Scenario,
    ScenarioError,
    default_scenario_dir,
    load_scenario,
    load_scenarios,
    parse_scenario,
)
from .shocks import Shock, apply_shock, check_shock, stack_shocks
from .sweeps import SweepDesign, SweepResult, load_sweep, sweep

__all__ = [
    "Shock", "apply_shock", "check_shock", "stack_shocks",
    "Scenario", "ScenarioError", "load_scenario", "load_scenarios", "parse_scenario",
    "default_scenario_dir",
    "StressEngine", "InstantResult", "PathPnL",
    "stress", "StressRun", "replay_shocks",
    "var_es", "es_contributions", "historical_var_es", "normal_var_es", "RiskEstimate",
    "SweepDesign", "SweepResult", "sweep", "load_sweep",
]
