"""End-to-end demo on a BTC-like market: smiles of every model, cross-checks, an HTML report.

``run_demo(out_dir)`` (behind ``qmr demo --out DIR`` and ``make demo``):

1. builds a BTC-like market (spot 60,000 USD, 4% annual basis between the USD rate and the
   coin's funding rate) and one documented, hand-set BTC-like parameter set per model
   (``BTC_MODELS``): ATM implied vols of about 56-61%, a mildly negative skew and fat jump
   wings, as on Deribit in calm regimes;
2. prices a smile grid (expiries 7, 30, 90, 180 days; strikes spanning about three standard
   deviations of log-moneyness each side, capped to ``[0.5 F, 2 F]``, out-of-the-money
   puts below the forward and calls above) with ``fourier_price`` by COS, re-prices it by
   the Lewis formula and reports the largest difference;
3. converts the prices to Black implied vols;
4. prices the 90-day option nearest the forward by Monte Carlo for each model (antithetic
   pairs) and shows value +- standard error next to its Fourier price;
5. writes ``report.html``, ``smiles.png``, ``prices.csv`` and ``summary.json`` to the output
   folder;
6. calibrates Heston and Bates (``qmr_jax.calibrate``, Levenberg-Marquardt in implied-vol
   space) to the last BTC snapshot of the shared Deribit data when it is present, else to a
   synthetic Deribit-like chain generated from the demo's Heston parameters with 0.3 vol
   points of mid-IV noise (``qmr_jax.data.synthetic_chain``, key ``seed``), and writes one
   calibration report per model (``calibration/<model>/report.html``: smiles with bid/ask,
   residual heatmap, parameters), linked from ``report.html``;
7. writes the gradient sensitivity report (``qmr_jax.report.sensitivity``) of the example book
   ``scenarios/books/btc_example.toml`` under the Heston parameters to
   ``sensitivities/report.html`` (Greeks per position, a tornado of the inputs, P&L ladders),
   linked from ``report.html``; skipped with a message when the scenarios folder is absent
   (an installation without the project's files);
8. stresses the sample book ``scenarios/books/btc_stress.toml`` over the shipped scenario
   library (``scenarios/library``, ``qmr_jax.stress.stress``) under the calibrated Bates
   model (full demo) or Heston (quick demo; the demo's hand-set Heston parameters if the
   calibration gave neither) and the
   calibration chain's market: the spot index of the real snapshot (the futures basis fitted
   to its forwards, USD rate ``BTC_MARKET.rate``), else ``BTC_MARKET``. The book's strikes and
   entry prices are written for a 60,000 USD spot (``STRESS_BOOK_SPOT``) and are scaled by
   ``spot / 60,000`` to the market's spot. Historical replays read the shared spot history
   and record an error in their ``status`` when it is absent; scenarios that shock jump
   parameters (``scale.lam``) are listed as not applicable (``n/a``) under Heston. Writes
   ``stress/report.html`` (``qmr_jax.report.stress.stress_report``);
9. runs a 7-day scenario sweep of the same book over a grid of spot, vol and vol-of-variance
   shocks (``qmr_jax.stress.sweep``, common random numbers; ``out/sweep`` is replaced on
   every run) and writes ``sweep/report.html`` (``sweep_report``: heatmaps, worst scenarios,
   ES contributions);
10. links every sub-report from ``report.html``: a navigation bar at its top (the calibration
    report of each model, the sensitivities, the stress scenarios, the sweep) and a link in
    each section.

``run_demo`` does everything ``qmr demo`` does: it turns on the persistent compilation cache
(``qmr_jax._cache.enable_compilation_cache``; ``cache=False`` leaves JAX's configuration as it
is) and logs where it is, and shows the progress of the stress scenarios and of the sweep on
stderr (``qmr_jax.progress``; ``progress=False`` for none).

Everything is deterministic given ``seed``: Monte Carlo model ``i`` uses
``jax.random.fold_in(jax.random.key(seed), i)``; the book's path-dependent positions use
``jax.random.key(seed)`` (position ``i``: ``fold_in(key, i)``). Needs float64
(``jax_enable_x64``), which the command line enables; the library never changes that setting
itself. The stress scenarios draw their paths from ``jax.random.key(seed)`` (scenario ``s``:
``fold_in(key, crc32(s.name))``), the sweep from ``jax.random.key(seed)`` as well.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .models import GBM, Bates, Heston, Kou, Market, Merton
from .pricing import payoffs
from .pricing.black import IV_OK, implied_vol
from .pricing.fourier import auto_cos_terms, fourier_price
from .pricing.montecarlo import mc_price
from .report import Column, Page, escape, html_table, save_figure, smile_figure

BTC_MARKET = Market(spot=60_000.0, rate=0.04, div=0.0)
"""Spot 60,000 USD; ``rate - div = 4%`` is the annualised futures basis (forward premium)."""

BTC_MODELS = {
    "GBM": GBM(sigma=0.60),
    "Merton": Merton(sigma=0.52, lam=4.0, mu_j=-0.04, sigma_j=0.12),
    "Kou": Kou(sigma=0.50, lam=5.0, p=0.40, eta1=10.0, eta2=8.0),
    "Heston": Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.25),
    "Bates": Bates(v0=0.30, kappa=2.0, theta=0.30, xi=0.9, rho=-0.20, lam=3.0, mu_j=-0.04,
                   sigma_j=0.14),
}
"""Hand-set BTC-like parameters (not calibrated), one per model.

* GBM: a flat 60% vol - the reference line.
* Merton: 52% diffusion plus about 4 jumps a year of mean -4% (log) and 12% std.
* Kou: 50% diffusion plus 5 jumps a year, 40% of them up; mean jump sizes 1/10 = 10% up and
  1/8 = 12.5% down (log).
* Heston: 60% spot and long-run vol (variances 0.36), mean reversion 2/yr (half-life about
  4 months), vol of variance 1.0, spot/variance correlation -0.25 (Feller ratio 1.44).
* Bates: Heston with 55% vol (variances 0.30) plus 3 jumps a year of mean -4%, std 14%.
"""

PARAM_DOCS = {
    "sigma": "diffusion volatility",
    "lam": "jump intensity (jumps per year)",
    "mu_j": "mean log-jump",
    "sigma_j": "std of the log-jump",
    "p": "probability a jump is up",
    "eta1": "up-jump rate (mean up log-jump 1/eta1)",
    "eta2": "down-jump rate (mean down log-jump 1/eta2)",
    "v0": "initial variance",
    "kappa": "mean-reversion speed (per year)",
    "theta": "long-run variance",
    "xi": "volatility of variance",
    "rho": "spot/variance correlation",
}

EXPIRY_DAYS = (7, 30, 90, 180)
MC_EXPIRY_DAYS = 90


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick()`` is the reduced set used by the tests.

    Attributes:
      seed: PRNG seed of the Monte Carlo check.
      n_strikes: strikes per expiry.
      mc_paths: Monte Carlo paths per model (antithetic pairs).
      mc_steps_sv: time steps for Heston/Bates (QE scheme); the exact schemes of GBM,
        Merton and Kou need a single step for a European payoff.
      book_paths: Monte Carlo paths per path-dependent position of the example book.
      stress_paths: horizon paths of each path scenario of the stress library.
      sweep_paths: horizon paths per scenario of the sweep.
      quick: reduced sizes (and the smaller sweep grid ``SWEEP_GRID_QUICK``).
    """

    seed: int = 0
    n_strikes: int = 21
    mc_paths: int = 100_000
    mc_steps_sv: int = 45
    book_paths: int = 10_000
    stress_paths: int = 10_000
    sweep_paths: int = 10_000
    quick: bool = False

    @classmethod
    def quick_config(cls, seed: int = 0) -> DemoConfig:
        return cls(seed=seed, n_strikes=11, mc_paths=20_000, mc_steps_sv=15, book_paths=2_000,
                   stress_paths=2_000, sweep_paths=2_000, quick=True)


SENSITIVITY_MODEL = "Heston"
"""The demo model the example book is valued under."""


STRESS_MODELS = ("Bates", "Heston")
"""The calibrated models the sample book is stressed under, in order of preference: Bates
(calibrated in the full demo) lets the jump scenarios of the library apply; the quick demo
calibrates Heston only, under which they are listed as not applicable."""
STRESS_MODEL = STRESS_MODELS[-1]
"""The fallback (demo parameters) when no calibrated model is usable."""
STRESS_BOOK_SPOT = 60_000.0
"""The spot the sample stress book's strikes and entry prices are written for (USD)."""
SWEEP_HORIZON_DAYS = 7
SWEEP_GRID = {
    "spot": (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2),
    "vol": (-0.1, 0.0, 0.1, 0.2, 0.3),
    "scale.xi": (1.0, 2.0),
}
"""The sweep's grid (60 scenarios): relative spot moves, additive vol shifts (vol points /
100) and multipliers of the vol of variance."""
SWEEP_GRID_QUICK = {
    "spot": (-0.3, -0.1, 0.0, 0.2),
    "vol": (-0.1, 0.1, 0.3),
    "scale.xi": (1.0, 2.0),
}
"""The quick sweep's grid (24 scenarios)."""


def example_book_path() -> Path:
    """``scenarios/books/btc_example.toml`` of the project."""
    return Path(__file__).resolve().parents[1] / "scenarios" / "books" / "btc_example.toml"


def stress_book_path() -> Path:
    """``scenarios/books/btc_stress.toml`` of the project (the stress and sweep book)."""
    return Path(__file__).resolve().parents[1] / "scenarios" / "books" / "btc_stress.toml"


def default_data_dir() -> Path:
    """``$QMR_DATA_DIR`` if set, else ``../shared/data`` relative to the project root."""
    env = os.environ.get("QMR_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def smile_grid(market: Market, n_strikes: int, expiry_days=EXPIRY_DAYS, ref_vol: float = 0.6):
    """Strikes per expiry: ``n_strikes`` log-moneyness points within ``+-3 ref_vol sqrt(T)``
    capped to ``[log 0.5, log 2]``, rounded to 100 USD; out-of-the-money flags.

    Returns:
      ``(expiries [E], strikes [E, N], is_call [E, N])`` NumPy float64 / bool arrays.
    """
    days = np.asarray(expiry_days, dtype=np.float64)
    t = days / 365.0
    fwd = np.asarray(market.forward(t), dtype=np.float64)
    half = np.minimum(np.log(2.0), 3.0 * ref_vol * np.sqrt(t))
    z = np.linspace(-1.0, 1.0, n_strikes)
    strikes = np.round(fwd[:, None] * np.exp(z[None, :] * half[:, None]), -2)
    is_call = strikes >= fwd[:, None]
    return t, strikes, is_call


def _implied_vols(prices, fwd, strikes, expiries, is_call, disc) -> np.ndarray:
    """Black implied vols; NaN where the price does not determine one (status not OK)."""
    vols, status = implied_vol(prices, fwd, strikes, expiries, is_call, disc,
                               return_status=True)
    return np.where(np.asarray(status) == IV_OK, np.asarray(vols, np.float64), np.nan)


def _version() -> str:
    from . import __version__

    return __version__


def _versions() -> dict[str, str]:
    import matplotlib

    return {
        "qmr_jax": _version(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _dist_version("jaxlib"),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "device": str(jax.devices()[0]),
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _as_float64(model):
    """Leaves as float64 arrays, as ``fourier_price`` casts them (shares its compiled code)."""
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), model)


def _scheme_steps(model, cfg: DemoConfig) -> int:
    return cfg.mc_steps_sv if isinstance(model, Heston | Bates) else 1


def run_demo(
    out_dir: str | Path,
    *,
    seed: int = 0,
    quick: bool = False,
    log: Callable[[str], None] = print,
    cache: bool = True,
    progress: bool = True,
) -> dict:
    """Run the demo and write ``report.html``, ``smiles.png``, ``prices.csv``,
    ``summary.json`` and the sub-reports (``calibration/``, ``sensitivities/``, ``stress/``,
    ``sweep/``) to ``out_dir`` (created if needed; ``out_dir/sweep`` is replaced).

    Args:
      out_dir: output folder.
      seed: Monte Carlo seed.
      quick: reduced sizes (11 strikes per expiry, 20,000 paths, 15 QE steps; 2,000 paths
        per stress scenario and sweep scenario, a 24-scenario sweep).
      log: receives one progress line per stage.
      cache: turn on the persistent compilation cache first (``$QMR_CACHE_DIR``, default
        ``~/.cache/qmr_jax/jax``; ``QMR_CACHE_DIR=off`` keeps it off); its state is logged
        once.
      progress: progress of the stress scenarios and of the sweep on stderr (a bar on a
        terminal, a line every few seconds elsewhere).

    Returns:
      The summary dictionary written to ``summary.json``.

    Raises:
      RuntimeError: float64 is not enabled.
    """
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            'the demo needs float64: call jax.config.update("jax_enable_x64", True) first'
        )
    t_start = time.perf_counter()
    from ._cache import cache_status, enable_compilation_cache

    if cache:
        enable_compilation_cache()
    cfg = DemoConfig.quick_config(seed) if quick else DemoConfig(seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    market = BTC_MARKET
    spot = float(market.spot)

    data_dir = default_data_dir()
    data_present = data_dir.is_dir()
    log(f"qmr demo: BTC-like market, spot {spot:,.0f} USD, seed {seed}"
        f"{' (quick)' if quick else ''}")
    log(cache_status())
    log(f"market data folder {data_dir}: " + (
        "found (used by the calibration step and the historical replays)" if data_present
        else "not found (the calibration step uses a synthetic chain; the historical replays "
             "are skipped)"))

    expiries, strikes, is_call = smile_grid(market, cfg.n_strikes)
    t_grid = np.broadcast_to(expiries[:, None], strikes.shape)
    fwd = np.asarray(market.forward(expiries), dtype=np.float64)
    disc = np.asarray(market.discount(expiries), dtype=np.float64)

    rows: list[dict] = []
    fourier_stats: dict[str, dict] = {}
    ivs: dict[str, np.ndarray] = {}
    cos_prices: dict[str, np.ndarray] = {}
    for name, model in BTC_MODELS.items():
        t0 = time.perf_counter()
        cos = np.asarray(fourier_price(model, market, strikes, t_grid, is_call, method="cos"))
        t1 = time.perf_counter()
        lewis = np.asarray(
            fourier_price(model, market, strikes, t_grid, is_call, method="lewis")
        )
        t2 = time.perf_counter()
        diff = np.abs(cos - lewis)
        cos_prices[name] = cos
        fourier_stats[name] = {
            "cos_terms": int(auto_cos_terms(_as_float64(model), jnp.asarray(t_grid))),
            "cos_seconds": t1 - t0,
            "lewis_seconds": t2 - t1,
            "max_abs_diff": float(diff.max()),
            "max_rel_diff_to_spot": float(diff.max() / spot),
            "min_price": float(cos.min()),
        }
        iv = _implied_vols(cos, fwd[:, None], strikes, t_grid, is_call, disc[:, None])
        ivs[name] = iv
        for e in range(strikes.shape[0]):
            for j in range(strikes.shape[1]):
                rows.append({
                    "model": name,
                    "expiry_days": int(EXPIRY_DAYS[e]),
                    "expiry_years": float(expiries[e]),
                    "forward": float(fwd[e]),
                    "strike": float(strikes[e, j]),
                    "log_moneyness": float(np.log(strikes[e, j] / fwd[e])),
                    "type": "call" if is_call[e, j] else "put",
                    "price_cos": float(cos[e, j]),
                    "price_lewis": float(lewis[e, j]),
                    "implied_vol": float(iv[e, j]),
                })
        log(f"  {name:<7} smile priced: COS {t1 - t0:5.2f} s, Lewis {t2 - t1:5.2f} s "
            f"(incl. compilation), max |COS - Lewis| = {diff.max():.2e} USD")

    prices = pd.DataFrame(rows)
    prices.to_csv(out / "prices.csv", index=False)

    # Monte Carlo check: the 90-day option of the grid nearest the forward, antithetic pairs;
    # its Fourier price is the one already in the smile.
    e_mc = EXPIRY_DAYS.index(MC_EXPIRY_DAYS)
    j_mc = int(np.argmin(np.abs(np.log(strikes[e_mc] / fwd[e_mc]))))
    t_mc, k_mc = float(expiries[e_mc]), float(strikes[e_mc, j_mc])
    call_mc = bool(is_call[e_mc, j_mc])
    key = jax.random.key(cfg.seed)
    mc_stats: dict[str, dict] = {}
    for i, (name, model) in enumerate(BTC_MODELS.items()):
        n_steps = _scheme_steps(model, cfg)
        t0 = time.perf_counter()
        res = mc_price(
            model, market, payoffs.european(k_mc, t_mc, call_mc),
            key=jax.random.fold_in(key, i), n_paths=cfg.mc_paths, n_steps=n_steps,
            antithetic=True,
        )
        seconds = time.perf_counter() - t0
        ref = float(cos_prices[name][e_mc, j_mc])
        z = (float(res.value) - ref) / float(res.stderr)
        mc_stats[name] = {
            "strike": k_mc,
            "expiry_days": MC_EXPIRY_DAYS,
            "type": "call" if call_mc else "put",
            "scheme": res.scheme,
            "n_paths": res.n_paths,
            "n_steps": res.n_steps,
            "value": float(res.value),
            "stderr": float(res.stderr),
            "fourier": ref,
            "z_score": z,
            "within_4_stderr": bool(abs(z) < 4.0),
            "seconds": seconds,
        }
        log(f"  {name:<7} Monte Carlo {float(res.value):10,.2f} +- {float(res.stderr):7.2f}"
            f"  vs Fourier {ref:10,.2f}  ({z:+.2f} stderr, {seconds:.1f} s)")

    # at-the-money-forward vol: linear interpolation in log-moneyness
    atm = {
        name: {str(d): float(np.interp(0.0, np.log(strikes[e] / fwd[e]), iv[e]))
               for e, d in enumerate(EXPIRY_DAYS)}
        for name, iv in ivs.items()
    }
    fig = smile_figure(
        [f"{d} days" for d in EXPIRY_DAYS],
        {n: [(np.log(strikes[e] / fwd[e]), ivs[n][e]) for e in range(len(EXPIRY_DAYS))]
         for n in BTC_MODELS},
        title=f"BTC-like smiles (spot {spot:,.0f}, Fourier-COS prices)",
    )
    fig_path = save_figure(fig, out / "smiles.png")
    log(f"wrote {fig_path}")

    calib, fitted = _calibrations(out, cfg, data_present, log)
    sens = _book_sensitivities(out, market, cfg, log)
    stress_summary, sweep_summary = _stress_and_sweep(out, cfg, fitted, data_dir, log,
                                                      progress=progress)

    wall = time.perf_counter() - t_start
    files = ["prices.csv", "report.html", "smiles.png", "summary.json"]
    files.append("calibration")
    if sens is not None:
        files.append("sensitivities")
    files += [d for d in ("stress", "sweep") if (out / d).is_dir()]
    summary = {
        "version": _version(),
        "seed": cfg.seed,
        "config": asdict(cfg),
        "market": {"spot": spot, "rate": float(market.rate), "div": float(market.div)},
        "models": {n: {f: float(v) for f, v in m._asdict().items()}
                   for n, m in BTC_MODELS.items()},
        "expiry_days": list(EXPIRY_DAYS),
        "n_options_per_model": int(strikes.size),
        "fourier": fourier_stats,
        "max_cos_lewis_abs_diff": max(s["max_abs_diff"] for s in fourier_stats.values()),
        "atm_implied_vol": atm,
        "monte_carlo": mc_stats,
        "data_dir": {"path": str(data_dir), "present": data_present},
        "versions": _versions(),
        "calibration": calib,
        "sensitivities": sens,
        "stress": stress_summary,
        "sweep": sweep_summary,
        "files": files,
        "wall_seconds": wall,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    report = _write_report(out, summary, prices)
    log(f"wrote {out / 'prices.csv'}, {out / 'summary.json'}")
    log(f"report: {report.resolve()}")
    log(f"done in {wall:.1f} s")
    return summary


CALIBRATED_MODELS = ("heston", "bates")
"""Models the demo calibrates (``quick``: Heston only)."""
SYNTHETIC_NOISE_IV = 0.003


def chain_market(chain: pd.DataFrame, rate: float = BTC_MARKET.rate) -> Market:
    """The market of one option-chain snapshot: ``qmr_jax.data.market_from_chain`` (its spot
    index and a flat basis fitted to its forwards) with the USD ``rate``."""
    from .data import market_from_chain

    return market_from_chain(chain, rate=rate)[0]


def _calibrations(out: Path, cfg: DemoConfig, data_present: bool, log) -> tuple[dict, dict]:
    """Calibrate to the last real BTC snapshot (or a synthetic chain); one report per model.

    Returns:
      ``(summary, fitted)``: the ``summary.json`` entry, and ``{"models": {name: calibrated
      model}, "market": Market of the chain, "source": text}`` for the later stages (a model
      whose calibration raised is logged, listed under ``errors`` and left out).
    """
    from .calibration import calibrate, initial_guess
    from .data import load_deribit
    from .data.synthetic import synthetic_chain
    from .report.calibration import calibration_report

    t0 = time.perf_counter()
    if data_present:
        chain = load_deribit(currency="BTC", snapshot="last")
        when = pd.Timestamp(chain["snapshot"].iloc[0])
        when = when.tz_convert("UTC") if when.tzinfo is not None else when
        source = f"Deribit BTC, last snapshot {when:%Y-%m-%d %H:%M} UTC"
        market = chain_market(chain)
    else:
        market = BTC_MARKET
        chain = synthetic_chain(BTC_MODELS["Heston"], noise_iv=SYNTHETIC_NOISE_IV,
                                key=jax.random.key(cfg.seed))
        source = (f"synthetic BTC chain from the demo's Heston parameters, "
                  f"{100 * SYNTHETIC_NOISE_IV:.1f} vol pts noise, seed {cfg.seed}")
    log(f"calibration to {len(chain)} quotes: {source}")
    models = CALIBRATED_MODELS[:1] if cfg.quick else CALIBRATED_MODELS
    fits, fitted, errors = {}, {}, {}
    for name in models:
        try:
            fit = calibrate(initial_guess(name, chain), chain)
        except (ValueError, RuntimeError, FloatingPointError) as exc:
            log(f"  {name}: calibration failed: {exc}")
            errors[name] = str(exc)
            continue
        fitted[fit.model] = fit.params
        calibration_report(fit, chain, out / "calibration" / name)
        log(f"  {fit.model}: RMSE {fit.rmse_iv:.3f} vol pts, "
            f"{100 * fit.inside_band:.0f}% inside bid/ask, {fit.iterations} iterations, "
            f"{'converged' if fit.converged else 'NOT converged: ' + fit.reason}")
        fits[fit.model] = {
            "report": f"calibration/{name}/report.html", "params": fit.params_dict(),
            "rmse_iv": fit.rmse_iv, "inside_band": fit.inside_band,
            "iterations": fit.iterations, "converged": fit.converged, "reason": fit.reason,
            "wall_time": fit.wall_time,
        }
    truth = None if data_present else {f: float(v) for f, v in
                                       BTC_MODELS["Heston"]._asdict().items()}
    summary = {"source": source, "n_quotes": len(chain), "fits": fits, "truth": truth,
               "market": {k: float(v) for k, v in market._asdict().items()},
               "seconds": time.perf_counter() - t0}
    if errors:
        summary["errors"] = errors
    return summary, {"models": fitted, "market": market, "source": source}


def _book_sensitivities(out: Path, market: Market, cfg: DemoConfig, log) -> dict | None:
    """The example book's sensitivity report in ``out/sensitivities``; a summary for
    ``summary.json`` (``None`` when the book file is absent)."""
    from .book import load_book
    from .report.sensitivity import sensitivity_report

    path = example_book_path()
    if not path.is_file():
        log(f"example book {path} not found: sensitivity report skipped")
        return None
    book = load_book(path)
    t0 = time.perf_counter()
    log(f"sensitivities of the example book ({len(book)} positions) under "
        f"{SENSITIVITY_MODEL}, {cfg.book_paths:,} Monte Carlo paths per path-dependent "
        "position")
    rep = sensitivity_report(book, BTC_MODELS[SENSITIVITY_MODEL], market,
                             out / "sensitivities", seed=cfg.seed, n_paths=cfg.book_paths,
                             model_name=f"{SENSITIVITY_MODEL} (demo parameters)", log=log)
    top = rep["tornado"][0]
    return {
        "report": "sensitivities/report.html",
        "book_file": str(path),
        "book": rep["book"]["name"],
        "model": SENSITIVITY_MODEL,
        "n_positions": rep["book"]["n_positions"],
        "n_paths": cfg.book_paths,
        "seed": cfg.seed,
        "totals": rep["totals"],
        "largest": {k: top[k] for k in ("input", "move", "first_order_down",
                                         "first_order_up")},
        "seconds": time.perf_counter() - t0,
    }


def rescale_book(book, factor: float):
    """``book`` with every USD price level (strikes, barriers, entry prices of futures and
    perpetuals) multiplied by ``factor``; quantities unchanged."""
    from dataclasses import replace

    def scaled(p):
        return replace(p, **{f: getattr(p, f) * factor for f in ("strike", "barrier", "entry")
                             if getattr(p, f) is not None})

    return book.with_positions([scaled(p) for p in book.positions])


def _stress_model(fitted: dict, log) -> tuple:
    """``(model, market, label, calibrated)`` of the stress stage: the first calibrated model
    of ``STRESS_MODELS`` and the chain's market, else the demo's ``STRESS_MODEL`` parameters
    and ``BTC_MARKET``."""
    market = (fitted or {}).get("market") or BTC_MARKET
    model = None
    for name in STRESS_MODELS:
        model = (fitted or {}).get("models", {}).get(name)
        if model is None:
            continue
        try:
            model.validate()
            market.validate()
            return model, market, f"{name} calibrated to {fitted['source']}", True
        except ValueError as exc:
            log(f"  the calibrated {name} model is not usable ({exc})")
            model = None
    log(f"  no calibrated {' or '.join(STRESS_MODELS)} model: falling back to the demo's "
        f"hand-set {STRESS_MODEL} parameters and the BTC-like market")
    return (BTC_MODELS[STRESS_MODEL], BTC_MARKET,
            f"{STRESS_MODEL} (demo parameters; calibration unavailable)", False)


def _short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


def _stress_and_sweep(out: Path, cfg: DemoConfig, fitted: dict, data_dir: Path,
                      log, progress: bool = True) -> tuple[dict | None, dict | None]:
    """Stress the sample book over the scenario library and run a sweep under the calibrated
    model: ``out/stress`` and ``out/sweep``; the ``summary.json`` entries (``None`` when the
    book or the library is absent)."""
    from .book import load_book
    from .report.stress import dim_tick, stress_report, stress_table, sweep_report
    from .stress import Shock, StressEngine, SweepDesign, sweep
    from .stress.risk import MIN_TAIL
    from .stress.run import stress
    from .stress.scenarios import default_scenario_dir, load_scenarios
    from .stress.sweeps import DEFAULT_LEVELS

    book_path, lib = stress_book_path(), default_scenario_dir()
    if not book_path.is_file() or not lib.is_dir():
        log(f"stress book {book_path} or scenario library {lib} not found: stress testing "
            "and sweep skipped")
        return None, None
    t0 = time.perf_counter()
    model, market, model_label, calibrated = _stress_model(fitted, log)
    spot = float(market.spot)
    factor = spot / STRESS_BOOK_SPOT
    try:
        book = load_book(book_path)
        if factor != 1.0:
            book = rescale_book(book, factor)
        scenarios = load_scenarios(lib)
    except ValueError as exc:
        log(f"stress testing skipped: {exc}")
        return {"error": str(exc), "book_file": str(book_path)}, None
    key = jax.random.key(cfg.seed)
    base = {
        "book": book.name, "book_file": str(book_path), "n_positions": len(book),
        "book_reference_spot": STRESS_BOOK_SPOT, "rescale_factor": factor,
        "model": type(model).__name__, "model_source": model_label, "calibrated": calibrated,
        "params": {f: float(v) for f, v in model._asdict().items()},
        "market": {k: float(v) for k, v in market._asdict().items()}, "seed": cfg.seed,
    }
    log(f"stress testing {book.name!r} ({len(book)} positions; strikes and entry prices "
        f"x {factor:.4f} for spot {spot:,.2f} USD) under {model_label}: "
        f"{len(scenarios)} library scenarios, {cfg.stress_paths:,} paths per path scenario")
    try:
        engine = StressEngine(book, model, market,
                              key=jax.random.fold_in(key, 2**31 - 1) if book.has_mc else None)
    except ValueError as exc:
        log(f"stress testing skipped: {exc}")
        return dict(base, error=str(exc)), None
    log(f"  book valued: {float(np.sum(engine.base_values)):,.2f} USD "
        f"({time.perf_counter() - t0:.1f} s incl. compilation)")

    # named scenarios
    t1 = time.perf_counter()
    # the historical-simulation comparison of path scenarios: full demo only (it revalues
    # the book under every daily move since 2017, a few seconds per path scenario)
    run = stress(book, model, market, scenarios, key=key, n_paths=cfg.stress_paths,
                 engine=engine, data_dir=data_dir, historical=not cfg.quick,
                 progress=bool(progress))
    table = run.table
    ok = table["status"] == "ok"
    meta = dict(run.meta, seed=cfg.seed, model_source=model_label, book_file=str(book_path),
                rescale_factor=factor, n_paths=cfg.stress_paths)
    rows = table.reset_index().rename(columns={"scenario": "name"})
    stress_report(rows, run.positions, out / "stress", meta=meta)
    worst = table[ok].sort_values("pnl_usd", kind="mergesort").head(5)
    cols = [c for c in ("kind", "horizon_days", "pnl_usd", "cost", "worst", "var99", "es99")
            if c in table.columns]
    log(f"  {int(ok.sum())}/{len(table)} scenarios revalued in {time.perf_counter() - t1:.1f} s "
        "(incl. compilation); the worst:")
    for line in stress_table(worst[cols]).splitlines():
        log("    " + line)
    failed = {name: str(st) for name, st in table.loc[~ok, "status"].items()}
    replays = table.index[table["kind"] == "historical"]
    missing = [n for n in replays if n in failed and "not found" in failed[n]]
    if missing:
        log(f"  {len(missing)} historical replay(s) skipped: no spot history under "
            f"{data_dir}")
    for name, st in failed.items():
        if name not in missing:
            log(f"  {name}: {_short(st)}")
    log(f"wrote {out / 'stress' / 'report.html'}")

    def num(v):
        return None if v is None or not np.isfinite(v) else float(v)

    stress_summary = dict(
        base,
        n_paths=cfg.stress_paths,
        n_scenarios=len(table),
        n_ok=int(ok.sum()),
        n_failed=int((~ok).sum()),
        failed=failed,
        base_value_usd=float(np.sum(engine.base_values)),
        worst=[{"scenario": str(n), "kind": str(r["kind"]), "pnl_usd": float(r["pnl_usd"]),
                "es99": num(r.get("es99"))} for n, r in worst.head(3).iterrows()],
        report="stress/report.html",
        seconds=time.perf_counter() - t0,
    )

    # sweep
    t2 = time.perf_counter()
    grid = SWEEP_GRID_QUICK if cfg.quick else SWEEP_GRID
    design = SweepDesign.grid(base=Shock(horizon=SWEEP_HORIZON_DAYS / 365.0), **grid)
    levels = tuple(a for a in DEFAULT_LEVELS  # the levels the path count supports
                   if int(np.floor(cfg.sweep_paths * (1.0 - a) + 1e-9)) >= MIN_TAIL)
    sweep_dir = out / "sweep"
    shutil.rmtree(sweep_dir, ignore_errors=True)  # a sweep folder resumes: start afresh
    log(f"sweep: {len(design)} scenarios ({' x '.join(str(len(v)) for v in grid.values())} "
        f"grid over {', '.join(grid)}), {SWEEP_HORIZON_DAYS}-day horizon, "
        f"{cfg.sweep_paths:,} paths each, common random numbers")
    try:
        res = sweep(engine, design, key=key, out=sweep_dir, n_paths=cfg.sweep_paths,
                    levels=levels, progress=bool(progress))
        sweep_report(res, sweep_dir)
    except (ValueError, FloatingPointError, RuntimeError) as exc:
        log(f"  sweep failed: {exc}")
        return stress_summary, {"error": str(exc), "n_scenarios": len(design)}
    st = res.table
    w = st["es99"].astype(float).idxmax()
    wr = st.loc[w]
    log(f"  {len(st)} scenarios in {res.wall_time:.1f} s (incl. compilation; "
        f"{res.manifest['chunk']} per chunk); worst ES99 {float(wr['es99']):,.0f} USD at "
        + ", ".join(f"{d} {dim_tick(d, wr[d])}" for d in design.dims))
    log(f"wrote {sweep_dir / 'report.html'}")
    sweep_summary = {
        "n_scenarios": len(st),
        "n_paths": cfg.sweep_paths,
        "steps": int(res.manifest["steps"]),
        "horizon_days": SWEEP_HORIZON_DAYS,
        "grid": {k: list(v) for k, v in grid.items()},
        "levels": list(levels),
        "chunk": int(res.manifest["chunk"]),
        "seed": cfg.seed,
        "model": type(model).__name__,
        "model_source": model_label,
        "wall_seconds": res.wall_time,
        "worst": {"index": int(w), **{d: float(wr[d]) for d in design.dims},
                  "es99": float(wr["es99"]), "var99": float(wr["var99"]),
                  "mean": float(wr["mean"])},
        "worst_mean": {"index": int(st["mean"].astype(float).idxmin()),
                       "mean": float(st["mean"].min())},
        "report": "sweep/report.html",
        "seconds": time.perf_counter() - t2,
    }
    return stress_summary, sweep_summary


def _write_report(out: Path, summary: dict, prices: pd.DataFrame) -> Path:
    page = Page("qmr_jax demo: BTC-like smiles under five models")
    nav = report_links(summary)
    if nav:
        page.add_nav(nav)
    mkt = summary["market"]
    page.add_paragraph(
        f"Spot {mkt['spot']:,.0f} USD, rate {mkt['rate']:.2%}, funding (div) {mkt['div']:.2%}; "
        "hand-set BTC-like parameters (not calibrated). Prices are discounted USD; "
        "out-of-the-money puts below the forward, calls above."
    )
    page.add_key_values({
        "seed": summary["seed"],
        "mode": "quick" if summary["config"]["quick"] else "full",
        "wall time": f"{summary['wall_seconds']:.1f} s",
        "market data": (f"{summary['data_dir']['path']} "
                        f"({'present' if summary['data_dir']['present'] else 'absent'})"),
    })

    cal = summary.get("calibration")
    if cal:
        page.add_heading("Calibration")
        page.add_paragraph(f"Calibrated to {cal['n_quotes']} cleaned quotes: {cal['source']}. "
                           "Levenberg-Marquardt in implied-vol space from a start derived from "
                           "the chain's at-the-money vols.")
        rows = [{"model": m, "rmse": f["rmse_iv"], "inside": f["inside_band"],
                 "iterations": f["iterations"], "status": "converged" if f["converged"]
                 else "NOT converged: " + f["reason"], "seconds": f["wall_time"],
                 "params": ", ".join(f"{k}={v:.4g}" for k, v in f["params"].items())}
                for m, f in cal["fits"].items()]
        page.add_html(html_table(rows, [
            Column("model"), Column("rmse", "IV RMSE (vol pts)", fmt=".3f"),
            Column("inside", "inside bid/ask", fmt=".0%"),
            Column("iterations", fmt="d"), Column("status", numeric=False),
            Column("seconds", "seconds (incl. compile)", fmt=".1f"),
            Column("params", "parameters", numeric=False)]))
        page.add_html("<p>Calibration reports (smiles with bid/ask, residual heatmap, "
                      "parameters): " + ", ".join(
                          f'<a href="{escape(f["report"])}">{escape(m)}</a>'
                          for m, f in cal["fits"].items()) + ".</p>")
        if cal.get("errors"):
            page.add_paragraph("Calibration failed for: " + "; ".join(
                f"{m}: {e}" for m, e in cal["errors"].items()), note=True)
        if cal.get("truth"):
            page.add_paragraph("True parameters of the synthetic chain: " + ", ".join(
                f"{k}={v:.4g}" for k, v in cal["truth"].items()), note=True)

    page.add_heading("Model parameters")
    param_rows = [
        {"model": n, "parameter": f, "value": v, "meaning": PARAM_DOCS.get(f, "")}
        for n, params in summary["models"].items() for f, v in params.items()
    ]
    page.add_html(html_table(param_rows, [
        Column("model"), Column("parameter"), Column("value", fmt=".4g"), Column("meaning"),
    ]))

    page.add_heading("Implied-volatility smiles")
    page.add_image("smiles.png", alt="implied vol against log-moneyness per expiry",
                   caption="Black implied vol of the COS prices; one panel per expiry.")

    page.add_heading("Fourier cross-check: COS against Lewis")
    page.add_html(html_table(
        [{"model": n, **s} for n, s in summary["fourier"].items()],
        [Column("model"), Column("cos_terms", "COS terms", fmt="d"),
         Column("cos_seconds", "COS s (incl. compile)", fmt=".2f"),
         Column("lewis_seconds", "Lewis s (incl. compile)", fmt=".2f"),
         Column("max_abs_diff", "max |COS - Lewis| (USD)", fmt=".2e"),
         Column("max_rel_diff_to_spot", "relative to spot", fmt=".1e"),
         Column("min_price", "smallest price (USD)", fmt=",.4f")],
        caption=f"{summary['n_options_per_model']} options per model",
    ))

    mc = summary["monte_carlo"]
    first = next(iter(mc.values()))
    page.add_heading("Monte Carlo check")
    page.add_paragraph(
        f"At-the-money {first['type']}, strike {first['strike']:,.0f}, "
        f"{first['expiry_days']} days; "
        "antithetic pairs; exact schemes take one step, Heston/Bates the QE scheme. "
        "z = (MC - Fourier) / stderr."
    )
    page.add_html(html_table(
        [{"model": n, **s} for n, s in mc.items()],
        [Column("model"), Column("scheme"), Column("n_paths", "paths", fmt=",d"),
         Column("n_steps", "steps", fmt="d"), Column("value", "MC price", fmt=",.2f"),
         Column("stderr", "stderr", fmt=",.2f"), Column("fourier", "Fourier", fmt=",.2f"),
         Column("z_score", "z", fmt="+.2f"),
         Column("within_4_stderr", "within 4 stderr", numeric=False),
         Column("seconds", "seconds", fmt=".1f")],
    ))

    page.add_heading("Prices and implied vols")
    models = list(summary["models"])
    for days, grp in prices.groupby("expiry_days", sort=True):
        rows = []
        for strike, by_strike in grp.groupby("strike", sort=True):
            first = by_strike.iloc[0]
            row = {"strike": strike, "lm": first["log_moneyness"], "type": first["type"]}
            for _, r in by_strike.iterrows():
                row[f"p_{r['model']}"] = r["price_cos"]
                row[f"iv_{r['model']}"] = r["implied_vol"]
            rows.append(row)
        cols = [Column("strike", fmt=",.0f"), Column("lm", "log(K/F)", fmt="+.3f"),
                Column("type")]
        cols += [Column(f"iv_{m}", f"{m} IV", fmt=".2%") for m in models]
        cols += [Column(f"p_{m}", f"{m} price", fmt=",.2f") for m in models]
        fwd = float(grp["forward"].iloc[0])
        page.add_html(html_table(rows, cols,
                                 caption=f"{days} days, forward {fwd:,.2f}"))

    sens = summary.get("sensitivities")
    if sens:
        page.add_heading("Sensitivities of an example book")
        t = sens["totals"]
        page.add_html(
            f'<p><a href="{escape(sens["report"])}">Sensitivity report</a> of '
            f'{escape(sens["book"])} ({sens["n_positions"]} positions) under the '
            f'{escape(sens["model"])} parameters above: Greeks per position, a ranked tornado '
            "of the inputs and P&amp;L ladders against the Taylor predictions of the autodiff "
            "gradient and Hessian.</p>")
        page.add_key_values({
            "book value": f"{t['value_usd']:,.2f} USD",
            "delta": f"{t['delta_coin']:,.4f} coin ({t['delta_usd']:,.0f} USD)",
            "vega": f"{t['vega_usd_vol_pt']:,.2f} USD per vol point",
            "theta": f"{t['theta_usd_day']:,.2f} USD per day",
            "largest sensitivity": (f"{sens['largest']['input']} "
                                    f"({sens['largest']['move']}): "
                                    f"{sens['largest']['first_order_down']:+,.2f} / "
                                    f"{sens['largest']['first_order_up']:+,.2f} USD"),
        })

    _stress_section(page, summary.get("stress"), summary.get("sweep"))

    page.add_heading("Versions")
    page.add_key_values(summary["versions"])
    page.add_paragraph(
        "Files: " + ", ".join(summary["files"]) + ". Regenerate with "
        f"`qmr demo --out DIR --seed {summary['seed']}"
        f"{' --quick' if summary['config']['quick'] else ''}`.",
        note=True,
    )
    return page.write(out / "report.html")


def report_links(summary: dict) -> list[tuple[str, str]]:
    """``(text, href)`` of every sub-report of a demo summary, in the page's order: the
    calibration report of each model, the sensitivities, the stress scenarios, the sweep."""
    links = []
    cal = summary.get("calibration") or {}
    for m, f in (cal.get("fits") or {}).items():
        if f.get("report"):
            links.append((f"{m} calibration", f["report"]))
    for key, text in (("sensitivities", "Sensitivities"), ("stress", "Stress scenarios"),
                      ("sweep", "Stress sweep")):
        part = summary.get(key) or {}
        if part.get("report"):
            links.append((text, part["report"]))
    return links


def _stress_section(page: Page, st: dict | None, sw: dict | None) -> None:
    """The "Stress testing" section of ``report.html``: links and headline figures."""
    if not st and not sw:
        return
    page.add_heading("Stress testing")
    if st and st.get("report"):
        mkt = st["market"]
        page.add_html(
            f'<p><a href="{escape(st["report"])}">Stress report</a> of '
            f'{escape(st["book"])} ({st["n_positions"]} positions) over the '
            f'{st["n_scenarios"]} scenarios of the shipped library, under '
            f'{escape(st["model_source"])}; spot {mkt["spot"]:,.2f} USD, rate '
            f'{mkt["rate"]:.2%}, funding {mkt["div"]:.2%}. The book is written for a '
            f'{st["book_reference_spot"]:,.0f} USD spot: its strikes and entry prices are '
            f'scaled by {st["rescale_factor"]:.4f}. Path scenarios: '
            f'{st["n_paths"]:,} paths, seed {st["seed"]}.</p>')
        kv = {"book value": f"{st['base_value_usd']:,.2f} USD",
              "scenarios": f"{st['n_ok']} revalued, {st['n_failed']} failed"}
        for i, w in enumerate(st["worst"]):
            kv[f"worst {i + 1}" if i else "worst scenario"] = (
                f"{w['scenario']} ({w['kind']}): {w['pnl_usd']:+,.0f} USD")
        page.add_key_values(kv)
        if st.get("failed"):
            page.add_html(html_table(
                [{"scenario": k, "status": _short(v, 200)} for k, v in st["failed"].items()],
                [Column("scenario"), Column("status", numeric=False)],
                caption="Scenarios not revalued (historical replays need the shared spot "
                        f"history; shocks of jump parameters need a model with jumps, not "
                        f"{st['model']})"))
    elif st and st.get("error"):
        page.add_paragraph(f"Stress testing failed: {st['error']}", note=True)
    if sw and sw.get("report"):
        from .report.stress import dim_tick

        w = sw["worst"]
        dims = ", ".join(f"{d} {dim_tick(d, w[d])}" for d in sw["grid"])
        page.add_html(
            f'<p><a href="{escape(sw["report"])}">Sweep report</a>: {sw["n_scenarios"]} '
            f'scenarios ({" x ".join(str(len(v)) for v in sw["grid"].values())} grid over '
            f'{escape(", ".join(sw["grid"]))}), {sw["horizon_days"]}-day horizon, '
            f'{sw["n_paths"]:,} paths each with common random numbers; heatmaps, the worst '
            "scenarios and the ES contributions of the positions.</p>")
        page.add_key_values({
            "worst ES99": f"{w['es99']:,.0f} USD (scenario {w['index']}: {dims})",
            "its VaR99 / mean P&L": f"{w['var99']:,.0f} / {w['mean']:+,.0f} USD",
            "wall time": f"{sw['wall_seconds']:.1f} s (incl. compilation)",
        })
    elif sw and sw.get("error"):
        page.add_paragraph(f"Sweep failed: {sw['error']}", note=True)


__all__ = ["run_demo", "DemoConfig", "BTC_MARKET", "BTC_MODELS", "smile_grid",
           "default_data_dir", "example_book_path", "stress_book_path", "chain_market",
           "rescale_book", "report_links"]
