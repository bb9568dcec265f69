"""Execute the notebooks end to end in their quick mode and check what they show.

Each notebook reads ``QMR_NOTEBOOK_QUICK=1`` (set here) as a switch to a smaller run: fewer
snapshots, paths and scenarios; the committed notebooks are executed at full size with their
outputs. The kernel is this interpreter (``sys.executable``, i.e. the project's virtualenv)
through a kernel spec written to a temporary folder, so the tests do not depend on which
Jupyter kernels happen to be installed on the machine or in the user's home. The kernel keeps
its compiled programs in the test suite's own cache folder (``QMR_CACHE_DIR``), not in the
user's.

Checks run in the notebook's own kernel after its last cell: a probe cell (appended here, not
part of the notebook) prints ``PROBE <json>`` of the notebook's results and of independent
computations on its objects (finite differences, the design grid), and the test compares them
with tolerances of its own.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

import qmr_jax  # noqa: E402
from tests.conftest import DATA_DIR, ROOT  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
PUBLIC = ("Heston", "Market", "fourier_price", "implied_vol", "mc_price", "payoffs",
          "fourier_pricer", "greeks", "parameter_sensitivities", "enable_compilation_cache")
HAVE_DATA = (DATA_DIR / "deribit_options").is_dir()


def _kernel_spec_manager(tmp: Path) -> KernelSpecManager:
    spec_dir = tmp / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (project)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)


def run_notebook(name: str, tmp_path: Path, monkeypatch, probe: str | None = None):
    """Execute ``notebooks/<name>`` in quick mode (plus ``probe`` as a last cell); returns the
    executed notebook. A failing cell raises ``CellExecutionError`` with its traceback."""
    missing = [n for n in PUBLIC if not hasattr(qmr_jax, n)]
    if missing:
        pytest.skip(f"qmr_jax does not export {missing} yet (the notebooks use the public API)")
    monkeypatch.setenv("QMR_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("QMR_CACHE_DIR", str(ROOT / ".pytest_cache" / "jax"))
    monkeypatch.setenv("QMR_DATA_DIR", str(DATA_DIR))
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    if probe is not None:
        nb.cells.append(nbformat.v4.new_code_cell(probe))
    km = KernelManager(kernel_name="python3", kernel_spec_manager=_kernel_spec_manager(tmp_path))
    client = nbclient.NotebookClient(
        nb, km=km, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    return nb


def _stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def probe_values(nb) -> dict:
    lines = [ln for ln in _stream_text(nb.cells[-1]).splitlines() if ln.startswith("PROBE ")]
    assert len(lines) == 1, _stream_text(nb.cells[-1])
    return json.loads(lines[0][len("PROBE "):])


def figures(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_committed_notebooks_are_executed():
    """The committed notebooks carry their outputs (figures as PNG) for readers on GitHub."""
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name}: unexecuted cells"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: saved with an error"
        assert figures(nb) >= 1, f"{path.name}: no figure"
        setup = code[0].source
        assert "jax_enable_x64" in setup and "enable_compilation_cache()" in setup, path.name
        assert "QMR_NOTEBOOK_QUICK" in setup, path.name


# ------------------------------------------------------------------------------------------
# quickstart

QUICKSTART_PROBE = """
import json as _json
_S = float(market.spot)
_h = 1e-5 * _S
_delta_fd = (np.asarray(pricer(model, market._replace(spot=_S + _h)))
             - np.asarray(pricer(model, market._replace(spot=_S - _h)))) / (2 * _h)
_vega_fd = (np.asarray(pricer(shift_vol(model, 1e-5), market))
            - np.asarray(pricer(shift_vol(model, -1e-5), market))) / 2e-5 / 100
print("PROBE", _json.dumps({
    "delta": np.asarray(g.delta).ravel().tolist(), "delta_fd": _delta_fd.ravel().tolist(),
    "vega": np.asarray(g.vega).ravel().tolist(), "vega_fd": _vega_fd.ravel().tolist(),
    "prices": np.asarray(prices).ravel().tolist(),
    "pricer": np.asarray(pricer(model)).ravel().tolist(),
    "names": list(s.names), "gradient_shape": list(np.shape(s.gradient)),
    "worst": worst}))
"""


def test_quickstart(tmp_path, monkeypatch):
    nb = run_notebook("quickstart.ipynb", tmp_path, monkeypatch, QUICKSTART_PROBE)
    checked = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    assert len(checked) == 1
    text = _stream_text(checked[0])
    assert "mc_within_4_stderr: True" in text, text
    assert "Fourier" in text
    assert figures(nb) >= 1, "the smile plot produced no image"

    p = probe_values(nb)
    # the planned pricer prices what fourier_price prices (tol 1e-10 per unit forward)
    np.testing.assert_allclose(p["pricer"], p["prices"], rtol=0, atol=1e-10 * 70_000)
    # autodiff Greeks against central differences of the same pricer, in market units
    for greek in ("delta", "vega"):
        ad, fd = np.array(p[greek]), np.array(p[f"{greek}_fd"])
        assert np.max(np.abs(ad - fd)) <= 1e-6 * np.max(np.abs(ad)), greek
    assert p["names"] == ["spot", "rate", "div", "v0", "kappa", "theta", "xi", "rho"]
    assert p["gradient_shape"] == [2, 15, 8]
    # the notebook's own table: every input and Greek checked, all within 1e-5
    assert set(p["worst"]) == set(p["names"]) | {"delta", "gamma", "vega (per vol pt)",
                                                 "theta (per day)"}
    assert all(0.0 <= v < 1e-5 for v in p["worst"].values()), p["worst"]


# ------------------------------------------------------------------------------------------
# calibration

CALIBRATION_PROBE = """
import json as _json
print("PROBE", _json.dumps({
    "have_data": HAVE_DATA, "n_quotes": len(chain),
    "snapshot": str(pd.Timestamp(chain["snapshot"].iloc[0])),
    "mid_iv": chain["mid_iv"].tolist(), "spread_iv": chain["spread_iv"].tolist(),
    "rmse": {n: f.rmse_iv for n, f in fits.items()},
    "model_iv": {n: f.residuals["model_iv"].reindex(chain.index).tolist()
                 for n, f in fits.items()},
    "converged": {n: f.converged for n, f in fits.items()},
    "week_snapshots": [str(t) for t in stamps],
    "week": {n: {c: h[c].tolist() for c in h.columns if c in fits[n].params._fields}
             for n, h in history.items()},
    "week_converged": {n: h["converged"].tolist() for n, h in history.items()}}))
"""


@pytest.mark.slow  # 80 s cold on 2 cores: `make test-slow`; committed outputs checked above
def test_calibration(tmp_path, monkeypatch):
    from qmr_jax.calibration import DEFAULT_BOUNDS
    from qmr_jax.models import Bates, Heston

    nb = run_notebook("calibration.ipynb", tmp_path, monkeypatch, CALIBRATION_PROBE)
    p = probe_values(nb)
    assert figures(nb) >= 4  # residuals, smiles, two parameter histories
    assert p["have_data"] == HAVE_DATA
    mid = np.array(p["mid_iv"])
    spread = np.array(p["spread_iv"])
    if HAVE_DATA:  # the same snapshot read here, independently of the notebook
        from qmr_jax.data import load_deribit

        chain = load_deribit(DATA_DIR / "deribit_options", currency="BTC", snapshot="last")
        assert len(chain) == p["n_quotes"]
        np.testing.assert_allclose(chain["mid_iv"].to_numpy(), mid, rtol=1e-12)
        spread = (chain["ask_iv"] - chain["bid_iv"]).to_numpy()
    # a fit within a couple of bid/ask spreads: RMSE below twice the RMS full spread
    bound = 2.0 * 100.0 * math.sqrt(float(np.mean(spread**2)))
    for name in ("heston", "bates"):
        assert p["converged"][name], name
        model_iv = np.array(p["model_iv"][name])
        rmse = 100.0 * math.sqrt(float(np.mean((model_iv - mid) ** 2)))  # vol points
        assert rmse == pytest.approx(p["rmse"][name], rel=1e-9), name
        assert rmse < bound, (name, rmse, bound)
    # Bates nests Heston (no jumps): its optimum cannot fit worse
    assert p["rmse"]["bates"] <= p["rmse"]["heston"] + 1e-6

    # the week (3 snapshots in quick mode): distinct, ending at the snapshot above, every fit
    # converged, every parameter finite and within its calibration box
    snaps = p["week_snapshots"]
    assert len(snaps) == 3 and len(set(snaps)) == 3 and snaps == sorted(snaps)
    assert snaps[-1] == p["snapshot"]
    for name, cls in (("heston", Heston), ("bates", Bates)):
        assert all(p["week_converged"][name]), name
        params = p["week"][name]
        assert set(params) == set(cls._fields)
        for field, values in params.items():
            lo, hi = DEFAULT_BOUNDS[cls][field][:2]
            v = np.array(values)
            assert v.shape == (3,) and np.all(np.isfinite(v)), (name, field, v)
            assert np.all((v >= lo) & (v <= hi)), (name, field, v, lo, hi)


# ------------------------------------------------------------------------------------------
# sensitivities

SENSITIVITIES_PROBE = """
import json as _json
_S = float(market.spot)
_h = 2e-4 * _S
_fd = (np.asarray(value(model, market._replace(spot=_S + _h)))
       - np.asarray(value(model, market._replace(spot=_S - _h)))) / (2 * _h)
print("PROBE", _json.dumps({
    "labels": list(greeks.index), "book_labels": list(book.labels),
    "delta_report": greeks["delta_coin"].tolist(), "delta_fd": _fd.tolist(),
    "value_report": greeks["value_usd"].tolist(), "values": values.tolist(),
    "files": sorted(p.name for p in out.iterdir()),
    "png": (out / "tornado.png").read_bytes()[:8].hex(),
    "n_paths": N_PATHS}))
"""


def test_sensitivities(tmp_path, monkeypatch):
    nb = run_notebook("sensitivities.ipynb", tmp_path, monkeypatch, SENSITIVITIES_PROBE)
    p = probe_values(nb)
    assert p["n_paths"] == 2_000
    assert p["labels"] == p["book_labels"] and len(p["labels"]) == 19
    # the report's values are the valuer's (same plan, same Monte Carlo keys)
    np.testing.assert_allclose(p["value_report"], p["values"], rtol=1e-9, atol=1e-6)
    # autodiff delta (the report) against bump-and-revalue of the book's valuer (jitted;
    # spot +-0.02%);
    # the digital and barrier are smoothed Monte Carlo estimates on fixed paths, so their
    # differences converge too
    ad, fd = np.array(p["delta_report"]), np.array(p["delta_fd"])
    assert np.max(np.abs(ad - fd)) <= 1e-5 * np.max(np.abs(ad)), np.abs(ad - fd)
    assert {"report.html", "tornado.png", "ladders.png", "positions.csv",
            "parameters.csv", "sensitivities.json"} <= set(p["files"])
    assert p["png"] == "89504e470d0a1a0a"  # a PNG file
    assert figures(nb) >= 3  # the Greeks bars, the tornado and the ladders


# ------------------------------------------------------------------------------------------
# stress and sweeps

STRESS_PROBE = """
import json as _json
_direct = engine.revalue(Shock(spot=-0.20, vol=0.25, term=0.15))
print("PROBE", _json.dumps({
    "zero_pnl": np.asarray(zero.pnl_usd).tolist(),
    "gross": float(np.abs(engine.base_values).sum()),
    "n_design": len(design), "design": {k: np.asarray(v).tolist()
                                        for k, v in design.columns.items()},
    "rows": len(res.table), "index": res.table.index.tolist(),
    "table_spot": res.table["spot"].tolist(), "table_vol": res.table["vol"].tolist(),
    "grid": [list(map(float, spots)), list(map(float, vols))],
    "scenarios": run.table.index.tolist(), "status": run.table["status"].tolist(),
    "crash_file": float(run.table.loc["crash-20-vol-spike", "pnl_usd"]),
    "crash_direct": float(np.sum(np.asarray(_direct.pnl_usd))),
    "levels": list(LEVELS), "var": np.asarray(risk.var).tolist(),
    "es": np.asarray(risk.es).tolist(), "contrib_sum": float(contrib.sum()),
    "n_paths": N_PATHS}))
"""


@pytest.mark.slow  # 80 s cold on 2 cores: `make test-slow`; committed outputs checked above
def test_stress_and_sweeps(tmp_path, monkeypatch):
    nb = run_notebook("stress_and_sweeps.ipynb", tmp_path, monkeypatch, STRESS_PROBE)
    p = probe_values(nb)
    # a zero shock revalues to the base values: no P&L (to rounding of the USD values)
    assert np.max(np.abs(p["zero_pnl"])) <= 1e-12 * p["gross"]
    # the sweep: one row per scenario of the design, in order, on the full spot x vol grid
    spots, vols = p["grid"]
    assert p["n_design"] == len(spots) * len(vols) == p["rows"]
    assert p["index"] == list(range(p["rows"]))
    expected = [(s, v) for s in spots for v in vols]
    assert list(zip(p["table_spot"], p["table_vol"], strict=True)) == expected
    assert list(zip(p["design"]["spot"], p["design"]["vol"], strict=True)) == expected
    # the library scenario file and the same shock given directly agree
    assert p["crash_file"] == pytest.approx(p["crash_direct"], rel=1e-12)
    assert p["status"] == ["ok"] * len(p["scenarios"]) or not HAVE_DATA
    # VaR <= ES at each level, both growing with the level; ES contributions add up to the ES
    var, es = np.array(p["var"]), np.array(p["es"])
    assert np.all(var <= es) and np.all(np.diff(var) > 0) and np.all(np.diff(es) > 0)
    assert p["contrib_sum"] == pytest.approx(es[p["levels"].index(0.99)], rel=1e-9)
    assert figures(nb) >= 4
