"""What the input and numerical checks cost: validity masks and no-arbitrage checks in the
Fourier pricers, the Heston cumulants that stay exact as ``kappa T -> 0``, the chain loader's
integrity checks and file-line bookkeeping, and how fast a malformed input is refused.

Each figure is measured against a baseline in the same process:

1. **Pricer checks.** A planned ``FourierPricer`` (Lewis, ``tol=1e-10``, a 10 x 20 surface)
   called with one model and with a vmapped batch of 256 models, against the same algorithm
   without the validity mask and the no-arbitrage check (the pricer's own geometry and
   Fourier sum, jitted alone). Interleaved runs, best of several.
2. **Heston cumulants.** ``qmr.cumulants`` (series for ``kappa T <= 0.3``, Taylor-mode
   differentiation beyond, both evaluated) against Taylor-mode differentiation alone (the
   earlier rule, wrong as ``kappa T -> 0``), jitted, for ten expiries.
3. **Chain loading.** ``load_deribit`` of a real snapshot CSV (our reader with file line numbers,
   integrity checks, normalisation with implied vols, cleaning) against ``pandas.read_csv`` of
   the same file; and ``check_integrity`` alone against the normalisation step.
4. **Refusals.** Every file of ``tests/data/bad`` through its loader: the time to the error.

Run: ``python benchmarks/bench_integrity.py [--quick]``; results in ``results/integrity.*``.
"""

from __future__ import annotations

import time
import tomllib

import _util
import numpy as np

NAME = "integrity"


def part_pricer(quick: bool, log) -> dict:
    import jax
    import jax.numpy as jnp

    import qmr_jax as qmr
    from qmr_jax.pricing import fourier as f

    market = qmr.Market(60_000.0, 0.04, 0.0)
    expiries = np.array([7, 14, 30, 60, 90, 120, 180, 270, 365, 540])[:, None] / 365.0
    strikes = np.linspace(30_000.0, 100_000.0, 20)[None, :]
    is_call = strikes >= np.asarray(market.forward(expiries))
    models = {
        "heston": qmr.Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.25),
        "bates": qmr.Bates(v0=0.3, kappa=2.0, theta=0.3, xi=0.9, rho=-0.2, lam=3.0,
                           mu_j=-0.04, sigma_j=0.14),
    }
    n_batch = 64 if quick else 256
    out = {}
    for name, model in models.items():
        pricer = qmr.fourier_pricer(model, market, strikes, expiries, is_call, method="lewis",
                                    tol=1e-10)
        K, T, C = pricer.strikes, pricer.expiries, pricer.is_call
        n, trunc, log_tol = pricer.n_terms, pricer._truncation, pricer._log_tol

        def bare(m, K=K, T=T, C=C, n=n, trunc=trunc, log_tol=log_tol):
            fwd, disc = market.forward(T), market.discount(T)
            log_k = jnp.log(K) - jnp.log(fwd)
            geometry = f._geometry(m, T, log_k, trunc, log_tol, "lewis")
            return disc * fwd * f._lewis_unit(m, T, log_k, C, n, *geometry)

        bare_one = jax.jit(bare)
        checked_one = jax.jit(lambda m, p=pricer: p(m))
        np.testing.assert_allclose(np.asarray(bare_one(model)), np.asarray(checked_one(model)),
                                   rtol=0, atol=1e-9)
        scale = jnp.linspace(0.8, 1.2, n_batch)
        batch = type(model)(*(jnp.asarray(v) * (scale if k in ("v0", "theta") else
                                                jnp.ones_like(scale))
                              for k, v in model._asdict().items()))
        bare_many = jax.jit(jax.vmap(bare))
        checked_many = jax.jit(jax.vmap(lambda m, p=pricer: p(m)))
        reps = 20 if quick else 200
        t = _util.time_interleaved(_pricer_cases(checked_one, bare_one, checked_many,
                                                 bare_many, model, batch, reps),
                                   repeats=5 if quick else 15)
        one = (t["checked"]["best_s"] / reps, t["bare"]["best_s"] / reps)
        many = (t["checked_batch"]["best_s"], t["bare_batch"]["best_s"])
        out[name] = {"n_terms": n, "options": int(np.size(K * T)), "batch": n_batch,
                     "checked_call_s": one[0], "bare_call_s": one[1], "ratio_call": one[0] / one[1],
                     "checked_batch_s": many[0], "bare_batch_s": many[1],
                     "ratio_batch": many[0] / many[1]}
        log(f"pricer {name}: {1e3 * one[0]:.3f} vs {1e3 * one[1]:.3f} ms a call "
            f"({one[0] / one[1]:.2f}x); batch of {n_batch}: {1e3 * many[0]:.2f} vs "
            f"{1e3 * many[1]:.2f} ms ({many[0] / many[1]:.2f}x)")
    return out


def _pricer_cases(checked_one, bare_one, checked_many, bare_many, model, batch, reps):
    return {
        "checked": lambda: [checked_one(model) for _ in range(reps)][-1],
        "bare": lambda: [bare_one(model) for _ in range(reps)][-1],
        "checked_batch": lambda: checked_many(batch),
        "bare_batch": lambda: bare_many(batch),
    }


def part_cumulants(quick: bool, log) -> dict:
    import jax
    import jax.numpy as jnp

    import qmr_jax as qmr
    from qmr_jax.models.base import jet_cumulants
    from qmr_jax.models.heston import heston_log_cf

    t = jnp.asarray(np.array([7, 14, 30, 60, 90, 120, 180, 270, 365, 540]) / 365.0)
    model = qmr.Heston(v0=0.36, kappa=2.0, theta=0.36, xi=1.0, rho=-0.25)
    ours = jax.jit(lambda m: qmr.cumulants(m, t))
    jet = jax.jit(lambda m: jet_cumulants(lambda u, tt: heston_log_cf(*m, u, tt), t, (1, 2, 4)))
    reps = 50 if quick else 500
    r = _util.time_interleaved({
        "ours": lambda: [ours(model) for _ in range(reps)][-1],
        "jet": lambda: [jet(model) for _ in range(reps)][-1],
    }, repeats=5 if quick else 15)
    small = model._replace(kappa=1e-5)
    err_jet = float(np.max(np.abs(np.asarray(jet(small)[2]) / np.asarray(ours(small)[2]) - 1)))
    res = {"ours_s": r["ours"]["best_s"] / reps, "jet_s": r["jet"]["best_s"] / reps,
           "jet_rel_error_c4_kappa_1e-5": err_jet}
    res["ratio"] = res["ours_s"] / res["jet_s"]
    log(f"cumulants (10 expiries): {1e6 * res['ours_s']:.1f} vs {1e6 * res['jet_s']:.1f} us "
        f"({res['ratio']:.2f}x); differentiation alone is off by {err_jet:.2g} in c4 at "
        "kappa = 1e-5")
    return res


def part_chain(quick: bool, log) -> dict | None:
    import pandas as pd

    from qmr_jax.data import deribit

    folder = deribit.default_data_dir() / "deribit_options"
    files = sorted(folder.glob("deribit_options_snapshot_*.csv"))
    if not files:
        log("chain loading: no snapshot CSV under the data folder; skipped")
        return None
    path = files[-1]
    reps = 2 if quick else 5
    t = _util.time_interleaved({
        "load_deribit": lambda: deribit.load_deribit(path, currency="BTC"),
        "read_csv": lambda: pd.read_csv(path),
    }, repeats=reps)
    raw = deribit.read_deribit_raw(path, currency="BTC")
    t2 = _util.time_interleaved({
        "check_integrity": lambda: deribit.check_integrity(raw),
        "normalise": lambda: deribit.normalise_deribit(raw),
    }, repeats=reps)
    res = {"file": path.name, "rows": int(len(pd.read_csv(path))),
           "btc_rows": int(len(raw)),
           "load_deribit_s": t["load_deribit"]["best_s"], "read_csv_s": t["read_csv"]["best_s"],
           "check_integrity_s": t2["check_integrity"]["best_s"],
           "normalise_s": t2["normalise"]["best_s"]}
    res["ratio_load"] = res["load_deribit_s"] / res["read_csv_s"]
    res["ratio_integrity"] = res["check_integrity_s"] / res["normalise_s"]
    log(f"chain {path.name} ({res['rows']} rows, {res['btc_rows']} BTC): load_deribit "
        f"{1e3 * res['load_deribit_s']:.0f} ms vs pandas.read_csv {1e3 * res['read_csv_s']:.0f}"
        f" ms ({res['ratio_load']:.1f}x); integrity checks {1e3 * res['check_integrity_s']:.0f}"
        f" ms vs normalisation {1e3 * res['normalise_s']:.0f} ms")
    return res


def part_refusals(log) -> dict:
    from qmr_jax.book import load_book, load_model
    from qmr_jax.data import load_deribit
    from qmr_jax.stress.scenarios import load_scenario

    bad = _util.REPO_ROOT / "tests" / "data" / "bad"
    loaders = {"chains": load_deribit, "books": load_book, "models": load_model,
               "scenarios": load_scenario}
    res = {}
    for kind, load in loaders.items():
        folder = bad / kind
        table = {}
        if (folder / "expect.toml").exists():
            table = tomllib.loads((folder / "expect.toml").read_text())
        refused, cleaned = [], []
        for path in sorted(folder.iterdir()):
            if path.is_dir() or path.name in ("expect.toml", "README.md"):
                continue
            args = table.get(path.name, {}).get("args", {})
            t0 = time.perf_counter()
            try:
                load(path, **args)
            except ValueError:
                refused.append(time.perf_counter() - t0)
            else:  # cleaned with recorded reasons (chains): includes the implied vols
                cleaned.append(time.perf_counter() - t0)
        res[kind] = {"files": len(refused) + len(cleaned), "refused": len(refused),
                     "mean_ms": 1e3 * float(np.mean(refused)),
                     "max_ms": 1e3 * float(np.max(refused)),
                     "cleaned": len(cleaned),
                     "cleaned_max_ms": 1e3 * float(np.max(cleaned)) if cleaned else None}
    for kind, r in res.items():
        log(f"refusals {kind}: {r['refused']} of {r['files']} files refused in mean "
            f"{r['mean_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
            + (f"; {r['cleaned']} cleaned, slowest {r['cleaned_max_ms']:.0f} ms (the first "
               "compiles the implied-vol solver)" if r["cleaned"] else ""))
    return res


def markdown(res) -> str:
    lines = ["# Input integrity and numerical checks: their cost", "",
             f"Machine: {_util.env_line(res['environment'])}", ""]
    rows = [[name, r["options"], r["n_terms"], f"{1e3 * r['checked_call_s']:.3f}",
             f"{1e3 * r['bare_call_s']:.3f}", f"{r['ratio_call']:.2f}x", r["batch"],
             f"{1e3 * r['checked_batch_s']:.2f}", f"{1e3 * r['bare_batch_s']:.2f}",
             f"{r['ratio_batch']:.2f}x"] for name, r in res["pricer"].items()]
    lines += ["## Fourier pricer: validity mask and no-arbitrage check vs the bare algorithm", "",
              _util.md_table(["model", "options", "terms", "checked ms", "bare ms", "ratio",
                              "batch", "checked batch ms", "bare batch ms", "ratio"], rows), ""]
    c = res["cumulants"]
    lines += ["## Heston cumulants (10 expiries)", "",
              f"Series + differentiation {1e6 * c['ours_s']:.1f} us vs differentiation alone "
              f"{1e6 * c['jet_s']:.1f} us ({c['ratio']:.2f}x); differentiation alone is off by "
              f"{c['jet_rel_error_c4_kappa_1e-5']:.2g} (relative) in c4 at kappa = 1e-5.", ""]
    ch = res.get("chain")
    if ch:
        lines += ["## Chain loading", "",
                  f"`{ch['file']}`, {ch['rows']} rows ({ch['btc_rows']} BTC): `load_deribit` "
                  f"{1e3 * ch['load_deribit_s']:.0f} ms against `pandas.read_csv` "
                  f"{1e3 * ch['read_csv_s']:.0f} ms ({ch['ratio_load']:.1f}x, with implied vols "
                  f"and cleaning); `check_integrity` {1e3 * ch['check_integrity_s']:.0f} ms "
                  f"against normalisation {1e3 * ch['normalise_s']:.0f} ms "
                  f"({ch['ratio_integrity']:.2f}x).", ""]
    rows = [[k, r["files"], r["refused"], f"{r['mean_ms']:.1f}", f"{r['max_ms']:.1f}",
             r["cleaned"], _util.fmt(r["cleaned_max_ms"], ".0f")]
            for k, r in res["refusals"].items()]
    lines += ["## Malformed inputs: time to the error (tests/data/bad)", "",
              _util.md_table(["kind", "files", "refused", "mean ms to the error", "max ms",
                              "cleaned instead", "slowest cleaned load ms"], rows), "",
              "A cleaned chain is loaded in full (implied vols of every quote; the first load "
              "compiles the solver)."]
    return "\n".join(lines)


def headline(res) -> list[dict]:
    out = []
    for name, r in res["pricer"].items():
        out.append({"metric": f"checked / bare Fourier pricer ({name}, {r['options']} options)",
                    "value": f"{r['ratio_call']:.2f}x a call, {r['ratio_batch']:.2f}x a batch "
                             f"of {r['batch']}", "goal": "< 1.2x", "met":
                    bool(r["ratio_batch"] < 1.2)})
    worst = max(r["max_ms"] for r in res["refusals"].values())
    out.append({"metric": "slowest refusal of a malformed input (no compilation)",
                "value": f"{worst:.0f} ms", "goal": "< 1000 ms", "met": bool(worst < 1000)})
    return out


def main():
    args = _util.parser(__doc__.splitlines()[0]).parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    out = _util.results_dir(args)
    res = {"environment": _util.environment()}
    log = lambda s: print(s, flush=True)
    res["pricer"] = part_pricer(args.quick, log)
    res["cumulants"] = part_cumulants(args.quick, log)
    res["chain"] = part_chain(args.quick, log)
    res["refusals"] = part_refusals(log)
    res["headline"] = headline(res)
    js, md = _util.write_results(out, NAME, res, markdown)
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    _util.run_main(main)
