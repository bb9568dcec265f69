"""What a calibration compiles, and that a new snapshot compiles nothing new.

* In a fresh process with an empty program store, one ``qmr.calibrate`` on a synthetic
  Heston chain builds at most ``PROGRAM_BUDGET`` XLA programs (counted from JAX's own
  compile events, not from our bookkeeping; XLA's compilation cache may serve them), and a
  second calibration on another snapshot with a different number of quotes in the same size
  bucket builds none. Both announce their builds through ``log``.
* A second fresh process with the same compilation cache folder traces and compiles
  nothing: every program is loaded compiled from the program store, and the fits are the
  first process's to the last bit. Without the stored executables, a third process lowers
  the stored traced programs (no tracing) and compiles them from the compilation cache.
* Padding: a chain padded into a larger grid (``calibrate_batch`` with a larger chain) fits
  as it does alone, padding slots contribute exactly zero to the residuals whatever they
  hold, and they leave the planned Fourier geometry unchanged.

The chains are built in this process and handed to the child as pickles, so the child's
count holds the calibration's programs only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qmr_jax as qmr
from qmr_jax.calibration import calibrate, calibrate_batch
from qmr_jax.calibration.bijections import Bijection
from qmr_jax.calibration.calibrate import (
    _TRUNCATION,
    _grid_quotes,
    _problem_residual,
    _surface_ivs,
)
from qmr_jax.calibration.objective import bucket, build_quotes, plan_geometry
from qmr_jax.data.synthetic import synthetic_chain
from qmr_jax.pricing.fourier import _log_tol
from tests.conftest import ROOT

jax.config.update("jax_enable_x64", True)

HAS_EXPORT = importlib.util.find_spec("flatbuffers") is not None  # jax.export serialisation
PROGRAM_BUDGET = 3  # Black-76 prices of the quote grid, the Fourier planning, the solver
TRUTH = qmr.Heston(v0=0.30, kappa=3.0, theta=0.36, xi=1.6, rho=-0.25)
OTHER = qmr.Heston(v0=0.28, kappa=2.5, theta=0.34, xi=1.5, rho=-0.3)  # the next snapshot
START = qmr.Heston(v0=0.2, kappa=1.5, theta=0.25, xi=1.0, rho=0.0)
EXPIRIES = [7 / 365, 21 / 365, 49 / 365, 0.25, 0.5, 0.75]

CHILD = textwrap.dedent("""
    import dataclasses, json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import pandas as pd
    import qmr_jax as qmr
    from qmr_jax.calibration import programs

    qmr.enable_compilation_cache(sys.argv[3])  # the program store and compilation cache
    compiled = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compiled.append(kw.get("fun_name"))
        if event == "/jax/core/compile/backend_compile_duration" else None)
    traced = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: traced.append(kw.get("fun_name"))
        if event == "/jax/core/compile/jaxpr_trace_duration" else None)
    start = qmr.Heston(v0=0.2, kappa=1.5, theta=0.25, xi=1.0, rho=0.0)
    out = {"fits": [], "compiled": [], "traced": [], "lines": [], "smile_compiled": []}
    for path in sys.argv[1:3]:
        chain = pd.read_pickle(path)
        lines, n_compiled, n_traced = [], len(compiled), len(traced)
        fit = qmr.calibrate(start, chain, log=lines.append)
        out["fits"].append({"params": fit.params_dict(), "rmse": fit.rmse_iv,
                            "converged": fit.converged, "n_terms": fit.n_terms})
        out["compiled"].append(compiled[n_compiled:])
        out["traced"].append(traced[n_traced:])
        out["lines"].append(lines)
        # a report's smiles: every expiry on a 121-point grid (two tiles of the fit's grid)
        n_compiled = len(compiled)
        t = sorted(chain["expiry_years"].unique())
        smiles = qmr.calibration.model_iv_surface(
            fit, expiry_years=t, log_moneyness=[-0.6 + 0.01 * i for i in range(121)])
        assert smiles.shape == (len(t), 121)
        out["smile_compiled"].append(compiled[n_compiled:])
    out["built"] = [dataclasses.asdict(p) for p in programs.built()]
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def chains():
    a = synthetic_chain(TRUTH, expiries=EXPIRIES, strikes_per_expiry=15)
    b = synthetic_chain(OTHER, expiries=EXPIRIES, strikes_per_expiry=13,
                        snapshot="2026-03-02T10:00:00Z")
    return a, b


def _grid(chain):
    return chain["expiry_years"].nunique(), int(chain.groupby("expiry_years").size().max())


@pytest.fixture(scope="module")
def children(chains, tmp_path_factory):
    """Three fresh processes calibrating the same two chains with one cache folder, empty
    at first (the first child compiles everything: tens of seconds); before the third, the
    stored executables are deleted (their traced forms stay)."""
    a, b = chains
    folder = tmp_path_factory.mktemp("compile_count")
    paths = [folder / "a.pkl", folder / "b.pkl"]
    a.to_pickle(paths[0])
    b.to_pickle(paths[1])
    cache = folder / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = []
    for i in range(3):
        if i == 2:
            for exe in (cache / "programs").glob("*.xla"):
                exe.unlink()
        proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths), str(cache)],
                              capture_output=True, text=True, env=env, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-4000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
        runs.append(json.loads(line[len("RESULT"):]))
    return runs


def test_chains_differ_but_share_a_bucket(chains):
    a, b = chains
    assert len(a) != len(b) and _grid(a) != _grid(b)
    assert [bucket(n, s) for n, s in zip(_grid(a), (4, 16), strict=True)] == \
        [bucket(n, s) for n, s in zip(_grid(b), (4, 16), strict=True)]


def test_one_calibration_compiles_at_most_the_budget(children):
    first = children[0]
    compiled = first["compiled"][0]
    print(f"\nprograms compiled by one calibration: {len(compiled)} {compiled}")
    assert 1 <= len(compiled) <= PROGRAM_BUDGET, compiled
    assert first["fits"][0]["converged"]
    lines = first["lines"][0]
    assert any(ln.startswith("compiling the Heston calibration for ") for ln in lines), lines
    assert any(ln.startswith("compiled in ") and "(cache: " in ln for ln in lines), lines


def test_a_reports_smiles_compile_nothing_more(children):
    """``model_iv_surface`` on a report's grid reuses the calibration's programs."""
    assert children[0]["smile_compiled"] == [[], []], children[0]["smile_compiled"]


def test_a_new_snapshot_in_the_same_bucket_compiles_nothing(children, chains):
    first = children[0]
    assert first["compiled"][1] == [], first["compiled"][1]
    assert first["lines"][1] == []  # nothing built, nothing announced
    assert first["fits"][1]["converged"]
    for f in OTHER._fields:  # and it is a real fit of the other snapshot
        assert first["fits"][1]["params"][f] == pytest.approx(getattr(OTHER, f), rel=1e-4)


def test_a_new_process_traces_nothing_and_fits_identically(children):
    first, second, third = children
    assert [p["source"] for p in first["built"]] == ["traced"] * len(first["built"])
    built = second["built"]
    assert built and all(p["source"] == "loaded" for p in built), built
    assert all(p["cache"] == "hit" for p in built), built
    assert second["traced"] == [[], []] and second["compiled"] == [[], []], second
    assert second["fits"] == first["fits"]


@pytest.mark.skipif(not HAS_EXPORT, reason="jax.export serialisation needs flatbuffers")
def test_without_the_executables_the_stored_traces_serve(children):
    """The third process finds only the traced programs: it lowers and compiles them
    (compilations from the persistent cache) but traces none of the calibration's
    functions, only the one-operation wrappers calling them."""
    first, _, third = children
    built = third["built"]
    assert built and all(p["source"] == "exported" for p in built), built
    assert all(p["cache"] == "hit" for p in built), built
    assert set(third["traced"][0]) == {"call"} and third["traced"][1] == [], third["traced"]
    assert third["fits"] == first["fits"]


def test_padding_into_a_larger_grid_fits_identically(chains):
    """The small chain padded to the grid of a larger one (one batch) fits as it does on its
    own grid, to the solver's tolerance."""
    small, _ = chains
    large = synthetic_chain(OTHER, expiries=EXPIRIES + [1.0, 1.25], strikes_per_expiry=40)
    assert bucket(_grid(large)[1], 16) > bucket(_grid(small)[1], 16)
    alone = calibrate(START, small, n_terms=256)
    padded = calibrate_batch(START, [small, large], n_terms=256)[0]
    assert alone.converged and padded.converged
    for f in TRUTH._fields:
        assert getattr(padded.params, f) == pytest.approx(getattr(alone.params, f), rel=1e-8)
    np.testing.assert_allclose(padded.residuals["model_iv"], alone.residuals["model_iv"],
                               rtol=0, atol=1e-12)


def test_padding_slots_have_no_influence(chains):
    """Padding slots carry weight 0, lie inside their expiry's strike range (so the planned
    geometry is the unpadded one) and add exactly nothing to the residuals, whatever mids
    and strikes they hold."""
    chain, _ = chains
    q, pos = build_quotes(chain)
    big, pos_big = build_quotes(chain, shape=(q.k.shape[0] + 4, q.k.shape[1] + 16))
    np.testing.assert_array_equal(pos, pos_big)
    real = np.zeros(big.k.shape, bool)
    real[pos[:, 0], pos[:, 1]] = True
    assert np.all(big.weight[~real] == 0) and np.all(big.weight[real] > 0)
    trunc = jnp.asarray(_TRUNCATION)
    log_tol = jnp.asarray(_log_tol(1e-12, jnp.float64))
    (var_q, per_q), need_q = plan_geometry(TRUTH, q, trunc, log_tol)
    (var_b, per_b), need_b = plan_geometry(TRUTH, big, trunc, log_tol)
    real_rows = slice(0, chain["expiry_years"].nunique())
    for small, large in ((var_q, var_b), (per_q, per_b), (need_q, need_b)):
        np.testing.assert_allclose(np.asarray(large)[real_rows], np.asarray(small)[real_rows],
                                   rtol=1e-13)
    assert np.asarray(need_b).max() == pytest.approx(np.asarray(need_q).max(), rel=1e-13)

    bij = Bijection(qmr.Heston)
    residual = jax.jit(lambda u, quotes, geometry: _problem_residual(bij, "iv", 256, False)(
        u, TRUTH, quotes, 0.0, trunc, log_tol, geometry)[0])
    u = jnp.asarray(bij.to_unconstrained(START))
    r_big = np.asarray(residual(u, big, (var_b, per_b))).reshape(big.k.shape)
    rng = np.random.default_rng(0)
    garbage = big._replace(mid_iv=np.where(real, big.mid_iv, rng.uniform(0.05, 3.0, real.shape)))
    r_garbage = np.asarray(residual(u, garbage, (var_b, per_b))).reshape(big.k.shape)
    assert np.all(r_big[~real] == 0.0) and np.all(r_garbage[~real] == 0.0)
    np.testing.assert_array_equal(r_garbage, r_big)
    r_small = np.asarray(residual(u, q, (var_q, per_q))).reshape(q.k.shape)
    np.testing.assert_allclose(r_big[pos[:, 0], pos[:, 1]], r_small[pos[:, 0], pos[:, 1]],
                               rtol=0, atol=1e-13)


def test_bucket_ladder():
    previous = 0
    for n in range(1, 2000):
        b = bucket(n, 16)
        assert b >= n and b % 16 == 0 and b >= previous
        if n > 64:
            assert b <= 4 / 3 * n + 16  # at most a third of padding past the first steps
        previous = b
    assert bucket(11, 4) == 12 and bucket(57, 16) == bucket(64, 16) == 64
    assert [bucket(n, 1) for n in (1, 3, 4, 5, 7, 9, 11, 13, 17, 21, 25)] == \
        [1, 3, 4, 5, 8, 10, 12, 16, 20, 24, 32]


def test_model_iv_surface_is_the_model_smile_by_either_route(chains):
    """``model_iv_surface`` tiles a grid into the calibration grid's shape and evaluates it
    with the calibration's own solver (stopped before its first step); its fallback, a
    pricing program on the bucketed grid, gives the same values; both are the model's
    implied vols (repriced independently by COS)."""
    chain, _ = chains
    fit = calibrate(START, chain, n_terms=256)
    t = np.array([21 / 365, 0.25, 0.75])
    x = np.linspace(-0.4, 0.3, 40)  # wider than the fit's 16 strikes: three tiles
    ivs = qmr.calibration.model_iv_surface(fit, expiry_years=t, log_moneyness=x)
    assert ivs.shape == (3, 40)
    k = np.exp(x)[None, :]
    prices = qmr.fourier_price(fit.params, qmr.Market(1.0), k, t[:, None], x[None, :] >= 0,
                               method="cos")
    want = np.asarray(qmr.implied_vol(prices, 1.0, k, t[:, None], x[None, :] >= 0))
    np.testing.assert_allclose(ivs, want, rtol=0, atol=1e-8)
    xs = np.broadcast_to(x, (3, 40))
    fallback = _surface_ivs(fit, _grid_quotes(t, xs, (bucket(3, 4), bucket(40, 16))))
    np.testing.assert_allclose(fallback[:3, :40], want, rtol=0, atol=1e-8)
    at_quotes = qmr.calibration.model_iv_surface(fit, chain)
    np.testing.assert_allclose(at_quotes, fit.residuals["model_iv"], rtol=0, atol=1e-10)


def test_pricers_through_stored_programs_match_plain_calls(monkeypatch, tmp_path):
    """With the program store on (as in the command line), ``fourier_price`` and
    ``implied_vol`` of concrete inputs run stored programs (``implied_vol`` padded to a
    bucket) and return what the plain calls return."""
    from qmr_jax import _cache
    from qmr_jax.calibration import programs

    model = qmr.Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.25)
    market = qmr.Market(60_000.0, 0.01, 0.0)
    k = np.array([[50_000.0, 60_000.0, 70_000.0]] * 2)
    t = np.array([[30 / 365], [90 / 365]])
    calls = np.array([[False, True, True]] * 2)

    def both():
        prices = qmr.fourier_price(model, market, k, t, calls)
        fwd = 60_000.0 * np.exp(0.01 * t)
        vols, status = qmr.implied_vol(prices, fwd, k, t, calls, np.exp(-0.01 * t),
                                       return_status=True)
        return np.asarray(prices), np.asarray(vols), np.asarray(status)

    plain = both()
    n_built = programs.count()
    monkeypatch.setattr(_cache, "_enabled", tmp_path)
    stored = both()
    names = [p.name for p in programs.built()[n_built:]]
    assert names == ["fourier planning", "fourier core", "implied vol"], names
    assert sorted(f.suffix for f in (tmp_path / "programs").iterdir()) == \
        [".jax"] * (3 if HAS_EXPORT else 0) + \
        [".xla"] * sum(p.cache != "hit" for p in programs.built()[n_built:])
    assert stored[0].shape == (2, 3) and stored[1].shape == (2, 3)
    np.testing.assert_allclose(stored[0], plain[0], rtol=1e-13, atol=0)
    np.testing.assert_allclose(stored[1], plain[1], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(stored[2], plain[2])
