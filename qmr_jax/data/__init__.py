"""Market data: the option-chain table, the Deribit loader and its cleaning rules."""

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

__all__ = [
    "CHAIN_COLUMNS", "REASONS", "CleaningRules", "clean_chain", "cleaning_summary",
    "default_data_dir", "drop_reasons", "format_cleaning_summary", "list_snapshots",
    "load_deribit", "normalise_deribit", "read_deribit_raw",
]
