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
   (an installation without the project's files).

Everything is deterministic given ``seed``: Monte Carlo model ``i`` uses
``jax.random.fold_in(jax.random.key(seed), i)``; the book's path-dependent positions use
``jax.random.key(seed)`` (position ``i``: ``fold_in(key, i)``). Needs float64
(``jax_enable_x64``), which the command line enables; the library never changes that setting
itself.
"""

from __future__ import annotations

import json
import os
import platform
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
      quick: reduced sizes.
    """

    seed: int = 0
    n_strikes: int = 21
    mc_paths: int = 100_000
    mc_steps_sv: int = 45
    book_paths: int = 10_000
    quick: bool = False

    @classmethod
    def quick_config(cls, seed: int = 0) -> DemoConfig:
        return cls(seed=seed, n_strikes=11, mc_paths=20_000, mc_steps_sv=15, book_paths=2_000,
                   quick=True)


SENSITIVITY_MODEL = "Heston"
"""The demo model the example book is valued under."""


def example_book_path() -> Path:
    """``scenarios/books/btc_example.toml`` of the project."""
    return Path(__file__).resolve().parents[1] / "scenarios" / "books" / "btc_example.toml"


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
) -> dict:
    """Run the demo and write ``report.html``, ``smiles.png``, ``prices.csv``,
    ``summary.json`` to ``out_dir`` (created if needed).

    Args:
      out_dir: output folder.
      seed: Monte Carlo seed.
      quick: reduced sizes (11 strikes per expiry, 20,000 paths, 15 QE steps).
      log: receives one progress line per stage.

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
    cfg = DemoConfig.quick_config(seed) if quick else DemoConfig(seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    market = BTC_MARKET
    spot = float(market.spot)

    data_dir = default_data_dir()
    data_present = data_dir.is_dir()
    log(f"qmr demo: BTC-like market, spot {spot:,.0f} USD, seed {seed}"
        f"{' (quick)' if quick else ''}")
    log(f"market data folder {data_dir}: {'found' if data_present else 'not found'}"
        " (used by the calibration step)" if data_present else " (the calibration step uses a"
        " synthetic chain)")

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

    calib = _calibrations(out, cfg, data_present, log)
    sens = _book_sensitivities(out, market, cfg, log)

    wall = time.perf_counter() - t_start
    files = ["prices.csv", "report.html", "smiles.png", "summary.json"]
    files.append("calibration")
    if sens is not None:
        files.append("sensitivities")
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


def _calibrations(out: Path, cfg: DemoConfig, data_present: bool, log) -> dict:
    """Calibrate to the last real BTC snapshot (or a synthetic chain); one report per model."""
    from .calibration import calibrate, initial_guess
    from .data import load_deribit
    from .data.synthetic import synthetic_chain
    from .report.calibration import calibration_report

    t0 = time.perf_counter()
    if data_present:
        chain = load_deribit(currency="BTC", snapshot="last")
        source = f"Deribit BTC, last snapshot {chain['snapshot'].iloc[0]}"
    else:
        chain = synthetic_chain(BTC_MODELS["Heston"], noise_iv=SYNTHETIC_NOISE_IV,
                                key=jax.random.key(cfg.seed))
        source = (f"synthetic BTC chain from the demo's Heston parameters, "
                  f"{100 * SYNTHETIC_NOISE_IV:.1f} vol pts noise, seed {cfg.seed}")
    log(f"calibration to {len(chain)} quotes: {source}")
    models = CALIBRATED_MODELS[:1] if cfg.quick else CALIBRATED_MODELS
    fits = {}
    for name in models:
        fit = calibrate(initial_guess(name, chain), chain)
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
    return {"source": source, "n_quotes": len(chain), "fits": fits, "truth": truth,
            "seconds": time.perf_counter() - t0}


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


def _write_report(out: Path, summary: dict, prices: pd.DataFrame) -> Path:
    page = Page("qmr_jax demo: BTC-like smiles under five models")
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

    page.add_heading("Versions")
    page.add_key_values(summary["versions"])
    page.add_paragraph(
        "Files: " + ", ".join(summary["files"]) + ". Regenerate with "
        f"`qmr demo --out DIR --seed {summary['seed']}"
        f"{' --quick' if summary['config']['quick'] else ''}`.",
        note=True,
    )
    return page.write(out / "report.html")


__all__ = ["run_demo", "DemoConfig", "BTC_MARKET", "BTC_MODELS", "smile_grid",
           "default_data_dir", "example_book_path"]
