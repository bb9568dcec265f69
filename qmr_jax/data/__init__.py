"""Market data: the option-chain table, the Deribit loader and its cleaning rules, and a
synthetic Deribit-like market priced by a known model."""

from .deribit import (
    CHAIN_COLUMNS,
    REASONS,
    CleaningRules,
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
from .synthetic import (
    default_half_spread_iv,
    deribit_expiries,
    deribit_strikes,
    synthetic_chain,
)

__all__ = [
    "CHAIN_COLUMNS", "REASONS", "CleaningRules", "clean_chain", "cleaning_summary",
    "default_data_dir", "drop_reasons", "format_cleaning_summary", "list_snapshots",
    "load_deribit", "normalise_deribit", "read_deribit_raw",
    "synthetic_chain", "deribit_expiries", "deribit_strikes", "default_half_spread_iv",
]
