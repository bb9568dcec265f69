"""Market data: the option-chain table, the Deribit loader and its cleaning rules, a user's
own chain (simple CSV/Parquet or Deribit API JSON, ``load_chain``) and its market
(``market_from_chain``), Deribit instrument names, a synthetic Deribit-like market priced by
a known model, and the spot history (with named stress episodes) behind historical replays."""

from .chains import (
    DERIBIT_API_FIELDS,
    PRICE_UNITS,
    SIMPLE_COLUMNS,
    load_chain,
    market_from_chain,
)
from .deribit import (
    CHAIN_COLUMNS,
    INTEGRITY_REASONS,
    REASONS,
    CleaningRules,
    check_integrity,
    clean_chain,
    cleaning_summary,
    default_data_dir,
    drop_reasons,
    format_cleaning_summary,
    list_snapshots,
    load_deribit,
    normalise_deribit,
    read_deribit_raw,
)
from .instruments import Instrument, instrument_name, parse_instrument
from .spot import (
    EPISODES,
    episode,
    episode_path,
    load_dvol,
    load_spot_history,
    log_returns,
    realized_vol,
)
from .synthetic import (
    default_half_spread_iv,
    deribit_expiries,
    deribit_strikes,
    synthetic_chain,
)

__all__ = [
    "CHAIN_COLUMNS", "INTEGRITY_REASONS", "REASONS", "CleaningRules", "check_integrity",
    "clean_chain", "cleaning_summary",
    "default_data_dir", "drop_reasons", "format_cleaning_summary", "list_snapshots",
    "load_deribit", "normalise_deribit", "read_deribit_raw",
    "synthetic_chain", "deribit_expiries", "deribit_strikes", "default_half_spread_iv",
    "load_spot_history", "load_dvol", "log_returns", "episode_path", "realized_vol",
    "episode", "EPISODES",
    "load_chain", "market_from_chain", "SIMPLE_COLUMNS", "DERIBIT_API_FIELDS", "PRICE_UNITS",
    "Instrument", "parse_instrument", "instrument_name",
]
