"""Calibration to real Deribit surfaces (the last BTC and ETH snapshots of the shared data):
every model converges, the fit figures are printed, and Bates fits at least as well as
Heston. Both currencies go through one batched call per model (one compiled solver).

Skipped, with a message, when ../shared/data is absent.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import qmr_jax as qmr
from qmr_jax.calibration import calibrate_batch, initial_guess

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def chains(data_dir):
    path = data_dir / "deribit_options"
    return {cur: qmr.data.load_deribit(path, currency=cur, snapshot="last")
            for cur in ("BTC", "ETH")}


@pytest.fixture(scope="module")
def fits(chains):
    out = {}
    for name in ("heston", "bates"):
        inits = [initial_guess(name, chains[c]) for c in chains]
        for cur, fit in zip(chains, calibrate_batch(inits, list(chains.values())), strict=True):
            out[name, cur] = fit
    return out


def _report(fit):
    print(f"\n{fit.currency} {fit.model}: RMSE {fit.rmse_iv:.3f} vol pts, "
          f"{100 * fit.inside_band:.1f}% inside bid/ask, {fit.iterations} iterations, "
          f"{fit.reason}; {fit.params_dict()}")


@pytest.mark.parametrize("currency", ["BTC", "ETH"])
@pytest.mark.parametrize("model", ["heston", "bates"])
def test_real_surface_calibration_converges(fits, chains, model, currency):
    fit = fits[model, currency]
    _report(fit)
    assert fit.converged, fit.reason
    assert fit.n_quotes == len(chains[currency])
    # a real fit, not a degenerate one: residuals finite, errors of a few vol points at most
    assert np.isfinite(fit.residuals["model_iv"]).all()
    assert fit.rmse_iv < 6.0
    assert fit.by_expiry["rmse_iv"].max() < 12.0
    # Levenberg-Marquardt only accepts decreasing steps: the loss history of a round falls
    first_round = fit.history[: int(fit.starts["iterations"][fit.starts["best"]].iloc[0])]
    assert np.all(np.diff(first_round) <= 0)


@pytest.mark.parametrize("currency", ["BTC", "ETH"])
def test_bates_fits_at_least_as_well_as_heston(fits, currency):
    """Bates nests Heston (lam -> 0), so its optimum can be no worse; a small slack for the
    Heston optimum not being reachable exactly inside Bates' box (lam > 1e-4)."""
    heston, bates = fits["heston", currency], fits["bates", currency]
    assert bates.rmse_iv <= heston.rmse_iv + 1e-3, (bates.rmse_iv, heston.rmse_iv)
    print(f"\n{currency}: Heston {heston.rmse_iv:.3f} vs Bates {bates.rmse_iv:.3f} vol pts")


@pytest.mark.parametrize("model", ["merton", "kou"])
def test_jump_diffusions_converge_on_btc_and_eth(chains, model):
    inits = [initial_guess(model, chains[c]) for c in chains]
    for fit in calibrate_batch(inits, list(chains.values())):
        _report(fit)
        assert fit.converged, fit.reason
        assert fit.rmse_iv < 8.0
