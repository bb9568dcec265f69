"""Test configuration: float64, strict checks, shared paths and fixtures.

Pricing references are float64-grade, so x64 is enabled here (the library itself never
changes global JAX configuration). Compiled functions are cached by JAX across tests in one
process; keep array shapes identical between tests that can share them.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

jax.config.update("jax_enable_x64", True)
# Compiled executables are shared between the test processes (pytest -n 2) and kept across
# runs: compilation, not arithmetic, dominates the suite's time.
jax.config.update("jax_compilation_cache_dir", str(ROOT / ".pytest_cache" / "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
# The command line (called in-process and in subprocesses) and notebook kernels use the same
# folder instead of the user's ~/.cache/qmr_jax.
os.environ["QMR_CACHE_DIR"] = str(ROOT / ".pytest_cache" / "jax")
SHARED = Path(os.environ.get("QMR_SHARED_DIR", ROOT.parent / "shared"))
REFERENCE_DIR = SHARED / "reference"
DATA_DIR = Path(os.environ.get("QMR_DATA_DIR", SHARED / "data"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"published reference tables not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"market data not found at {DATA_DIR} (set QMR_DATA_DIR)")
    return DATA_DIR


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


@pytest.fixture(autouse=True)
def _isolate_compilation_cache_switch():
    """A command run in-process (``qmr_jax.cli.main``) turns on ``enable_compilation_cache``,
    which sends concrete pricing and implied-vol calls through stored programs; switch that
    back off after each test so no test depends on which tests ran before it."""
    from qmr_jax import _cache

    before = _cache._enabled
    yield
    _cache._enabled = before
