"""Time to a given accuracy: Monte Carlo error against wall time for a Heston European call.

A BTC-like Heston model (spot 60000, v0 0.36, kappa 2, theta 0.4, xi 1.0, rho -0.4, rate 3%)
and an at-the-money-forward call with 6 months to expiry; the exact price is
``qmr_jax.fourier_price`` (COS, float64). Paths are simulated in float32 (statistics in
float64) for every combination of

* scheme: full-truncation Euler, QE;
* variance reduction: none, antithetic variates, control variate, both;
* time steps: two step counts;
* paths: increasing ``n_paths``.

The control variate is the discounted terminal spot, whose exact mean is the discounted
forward (``beta`` estimated from the same sample, residual standard error). ``mc_price``'s own
``control_variate=True`` cannot be used here: its control is the European with the payoff's
strike, i.e. for a European payoff the option itself, so it returns the Fourier price with zero
standard error (shown once in the results as a check, not as a Monte Carlo method). All
variants therefore run through ``simulate(record="summary")`` and one estimator here, which is
what ``mc_price`` does inside (checked: same key, same value as ``mc_price`` without control).

Each point is a few independent runs (replications, common random numbers across
configurations): the median wall time of one run (compilation excluded: every compiled shape is
warmed up with another key first; simulation and estimator included), the RMSE of the runs
against the exact price, the reported standard error, and the bias (mean error of the runs).
The plot shows RMSE and standard error against time, log-log, per scheme and step count; the
table gives the efficiency ``time x stderr^2`` (lower is better; constant in ``n_paths`` for an
unbiased estimator), the predicted time to a standard error of 0.1 % of the price, and a flag
where the measured discretisation bias exceeds that target.

Run: ``python benchmarks/bench_accuracy_time.py [--quick]``; writes
``results/accuracy_time.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import math

import _util
import numpy as np

NAME = "accuracy_time"
PARAMS = dict(v0=0.36, kappa=2.0, theta=0.4, xi=1.0, rho=-0.4)
SPOT, RATE, DIV = 60000.0, 0.03, 0.0
EXPIRY = 0.5
TARGET_REL = 1e-3
VARIANTS = {  # name: (antithetic, control variate)
    "plain": (False, False),
    "antithetic": (True, False),
    "control variate": (False, True),
    "antithetic + CV": (True, True),
}
SCHEMES = ("euler", "qe")

FULL = dict(n_paths={8: [4096, 16384, 65536, 262144, 1048576, 4194304],
                    64: [4096, 16384, 65536, 262144, 1048576]},
            chunk=32768, rep_paths=2**20, max_reps=16, min_reps=2)
QUICK = dict(n_paths={8: [8192, 32768]}, chunk=8192, rep_paths=2**16, max_reps=4, min_reps=2)


def replications(n_paths, cfg) -> int:
    """Independent runs per point: about ``rep_paths`` paths in all, within the bounds."""
    return int(min(cfg["max_reps"], max(cfg["min_reps"], cfg["rep_paths"] // n_paths)))


def estimate(final, strike, forward, disc, antithetic, control):
    """Discounted call estimate and standard error from the final spots (float64 on host)."""
    s = np.asarray(final, np.float64)
    x = disc * np.maximum(s - strike, 0.0)
    c = disc * s
    if antithetic:
        x = 0.5 * (x[0::2] + x[1::2])
        c = 0.5 * (c[0::2] + c[1::2])
    n = x.size
    if not control:
        return float(x.mean()), float(x.std(ddof=1) / math.sqrt(n)), 1.0
    dx, dc = x - x.mean(), c - c.mean()
    scc = float(dc @ dc)
    beta = float(dx @ dc) / scc
    value = float(x.mean() - beta * (c.mean() - disc * forward))
    resid = max(float(dx @ dx) - beta * float(dx @ dc), 0.0) / (n - 2)
    vr = float(dx @ dx) / (n - 1) / resid if resid > 0 else math.inf
    return value, math.sqrt(resid / n), vr


def main(argv=None):
    args = _util.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out_dir = _util.results_dir(args)
    jax = _util.require("jax", "JAX is the library's backend")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    qmr = _util.require("qmr_jax")
    sim = _util.require("qmr_jax.simulate", "the path simulator")
    env = _util.environment()
    print(_util.env_line(env))

    model = qmr.Heston(**PARAMS)
    market = qmr.Market(SPOT, RATE, DIV)
    forward = SPOT * math.exp((RATE - DIV) * EXPIRY)
    disc = math.exp(-RATE * EXPIRY)
    strike = forward
    exact = float(qmr.fourier_price(model, market, strike, EXPIRY, True))
    target = TARGET_REL * exact
    print(f"exact (COS) ATM-forward call, T = {EXPIRY}: {exact:.6f}; target stderr {target:.3f}")

    base_key = jax.random.key(2024)
    warmed = set()
    points = []
    for n_steps, sizes in cfg["n_paths"].items():
        for scheme in SCHEMES:
            for vname, (anti, cv) in VARIANTS.items():
                for n_paths in sizes:

                    def run(key, n_paths=n_paths, anti=anti, cv=cv, scheme=scheme,
                            n_steps=n_steps):
                        summ = sim.simulate(model, market, [EXPIRY], key=key, n_paths=n_paths,
                                            scheme=scheme, n_steps=n_steps, antithetic=anti,
                                            record="summary", chunk_size=cfg["chunk"],
                                            dtype=jnp.float32)
                        return estimate(summ.final, strike, forward, disc, anti, cv)

                    shape = (scheme, n_steps, anti, min(n_paths, cfg["chunk"]))
                    if shape not in warmed:  # compile this chunk shape with another key
                        run(jax.random.fold_in(base_key, 10**9 + n_paths))
                        warmed.add(shape)
                    reps = replications(n_paths, cfg)
                    # replication r uses the same key in every configuration (common numbers)
                    runs = [_util.time_call(run, jax.random.fold_in(
                        jax.random.fold_in(base_key, n_paths), r), repeats=1, warmup=0)
                        for r in range(reps)]
                    vals = np.array([t["result"][0] for t in runs])
                    ses = np.array([t["result"][1] for t in runs])
                    times = np.array([t["best_s"] for t in runs])
                    errs = vals - exact
                    rmse = float(np.sqrt(np.mean(errs**2)))
                    se = float(np.sqrt(np.mean(ses**2)))
                    pooled_se = se / math.sqrt(reps)
                    pooled_err = float(errs.mean())
                    t_run = float(np.median(times))
                    points.append(dict(
                        scheme=scheme, variant=vname, n_steps=n_steps, n_paths=n_paths,
                        replications=reps, time_s=t_run, time_min_s=float(times.min()),
                        rmse=rmse, stderr=se, values=vals, errors=errs,
                        pooled_error=pooled_err, pooled_stderr=pooled_se,
                        variance_reduction=float(np.mean([t["result"][2] for t in runs])),
                        efficiency=t_run * se * se))
                    print(f"  {scheme:5s} {n_steps:3d} steps {vname:16s} n={n_paths:8d} "
                          f"x{reps:2d}: {t_run:7.3f} s/run  rmse {rmse:8.3f}  se {se:8.3f}  "
                          f"bias {pooled_err:+8.3f} +- {pooled_se:6.3f}")

    summary = summarise(points, target)
    checks = mc_price_checks(jax, jnp, qmr, sim, model, market, strike, exact, forward, disc,
                             cfg, base_key)
    headline = []
    for s in summary:
        if s["n_steps"] == max(cfg["n_paths"]) and s["variant"] in ("plain", "antithetic + CV"):
            headline.append(dict(
                metric=f"time to stderr {TARGET_REL:.0e} x price, {s['scheme']} "
                       f"{s['n_steps']} steps, {s['variant']}",
                value=f"{s['time_to_target_s']:.3g} s", goal="bias below target",
                met=None if s["bias_exceeds_target"] is None else not s["bias_exceeds_target"]))
    results = dict(name=NAME, quick=args.quick, environment=env, config=cfg, model=PARAMS,
                   market=dict(spot=SPOT, rate=RATE, div=DIV), expiry=EXPIRY, strike=strike,
                   exact=exact, target_stderr=target, dtype="float32", points=points,
                   summary=summary, mc_price_checks=checks, headline=headline)
    png = out_dir / f"{NAME}.png"
    try:
        plot(points, exact, target, png)
        results["plot"] = png.name
    except ImportError as exc:
        print(f"no plot ({exc})")
    js, md = _util.write_results(out_dir, NAME, results, markdown)
    print(f"wrote {js}, {md}" + (f" and {png}" if "plot" in results else ""))
    return results


def summarise(points, target):
    """Per (scheme, steps, variant), at the largest ``n_paths``: efficiency, time to the target
    standard error, and the discretisation bias (pooled over the replications)."""
    out = []
    keys = []
    for p in points:
        k = (p["scheme"], p["n_steps"], p["variant"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        ps = [p for p in points if (p["scheme"], p["n_steps"], p["variant"]) == k]
        big = max(ps, key=lambda p: p["n_paths"])
        t_target = big["time_s"] * (big["stderr"] / target) ** 2
        biased = abs(big["pooled_error"]) > 3.0 * big["pooled_stderr"]
        out.append(dict(
            scheme=k[0], n_steps=k[1], variant=k[2], n_paths_max=big["n_paths"],
            replications=big["replications"], time_s=big["time_s"], rmse=big["rmse"],
            stderr=big["stderr"], pooled_error=big["pooled_error"],
            pooled_stderr=big["pooled_stderr"], efficiency=big["efficiency"],
            variance_reduction=big["variance_reduction"], time_to_target_s=t_target,
            significant_bias=bool(biased),
            bias_exceeds_target=bool(biased and abs(big["pooled_error"]) > target),
        ))
    ref = {(s["scheme"], s["n_steps"]): s["efficiency"] for s in out if s["variant"] == "plain"}
    for s in out:
        base = ref.get((s["scheme"], s["n_steps"]))
        s["speedup_vs_plain"] = base / s["efficiency"] if base else None
    return out


def mc_price_checks(jax, jnp, qmr, sim, model, market, strike, exact, forward, disc, cfg,
                    base_key):
    """``mc_price`` agrees with the estimator here, and its European control is degenerate."""
    try:
        mcm = _util.require("qmr_jax.pricing.montecarlo", "mc_price")
        pay = _util.require("qmr_jax.pricing.payoffs", "payoffs").european(strike, EXPIRY, True)
    except SystemExit as exc:
        return dict(error=str(exc))
    n_steps = max(cfg["n_paths"])
    n_paths = cfg["n_paths"][n_steps][-2 if len(cfg["n_paths"][n_steps]) > 2 else -1]
    key = jax.random.fold_in(jax.random.fold_in(base_key, n_paths), 0)
    out = {}
    for anti in (False, True):
        r = mcm.mc_price(model, market, pay, key=key, n_paths=n_paths, n_steps=n_steps,
                         antithetic=anti, dtype=jnp.float32, chunk_size=cfg["chunk"])
        summ = sim.simulate(model, market, [EXPIRY], key=key, n_paths=n_paths, n_steps=n_steps,
                            antithetic=anti, record="summary", chunk_size=cfg["chunk"],
                            dtype=jnp.float32)
        v, se, _ = estimate(summ.final, strike, forward, disc, anti, False)
        out[f"mc_price vs estimator, antithetic={anti}"] = dict(
            mc_price_value=float(r.value), mc_price_stderr=float(r.stderr), estimator_value=v,
            estimator_stderr=se, abs_diff=abs(float(r.value) - v))
    r = mcm.mc_price(model, market, pay, key=key, n_paths=n_paths, n_steps=n_steps,
                     control_variate=True, dtype=jnp.float32, chunk_size=cfg["chunk"])
    out["mc_price control_variate=True on a European"] = dict(
        value=float(r.value), stderr=float(r.stderr), exact=exact,
        control_price=None if r.control_price is None else float(r.control_price),
        note="the control is the option itself: value = Fourier price, stderr ~ 0")
    for k, v in out.items():
        print(f"  check {k}: {v}")
    return out


def plot(points, exact, target, path):
    """Panels: rows = step counts, columns = schemes. Per variant: the RMSE over the
    replications (solid, markers) and the reported standard error (dashed) against the wall
    time of one run; where the RMSE stays above the standard error, the bias shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    steps = sorted({p["n_steps"] for p in points})
    fig, axes = plt.subplots(len(steps), len(SCHEMES), figsize=(11, 4.3 * len(steps)),
                             squeeze=False, sharex=True, sharey=True)
    colors = dict(zip(VARIANTS, ("C0", "C1", "C2", "C3"), strict=True))
    for row, n_steps in enumerate(steps):
        for col, scheme in enumerate(SCHEMES):
            ax = axes[row][col]
            for v in VARIANTS:
                ps = sorted((p for p in points if p["n_steps"] == n_steps
                             and p["scheme"] == scheme and p["variant"] == v),
                            key=lambda p: p["n_paths"])
                if not ps:
                    continue
                t = np.array([p["time_s"] for p in ps])
                ax.plot(t, [p["rmse"] for p in ps], "-o", color=colors[v], ms=4, lw=1.4,
                        label=f"{v}: RMSE")
                ax.plot(t, [p["stderr"] for p in ps], "--", color=colors[v], lw=0.9,
                        label=f"{v}: stderr")
            ax.axhline(target, color="k", lw=0.8, ls=":", label=f"{TARGET_REL:.0e} x price")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="major", alpha=0.3)
            name = "QE" if scheme == "qe" else "full-truncation Euler"
            ax.set_title(f"{name}, {n_steps} steps")
            if row == len(steps) - 1:
                ax.set_xlabel("wall time of one run [s] (float32, 2-core CPU)")
            if col == 0:
                ax.set_ylabel("RMSE vs COS price, and stderr (USD)")
    axes[0][-1].legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle(f"Heston ATM-forward call, T = {EXPIRY}, exact (COS) {exact:.2f}: "
                 "error against time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res) -> str:
    f = _util.fmt
    lines = [f"# Time to accuracy, Heston European ({'quick' if res['quick'] else 'full'})", "",
             f"Machine: {_util.env_line(res['environment'])}", "",
             f"ATM-forward call, T = {res['expiry']}, exact (COS) {res['exact']:.4f}; paths in "
             f"{res['dtype']}; target stderr {res['target_stderr']:.3f} "
             f"({TARGET_REL:.0e} x price). Each point is several independent runs "
             "(replications): time = median wall time of one run, RMSE over the runs, stderr = "
             "root-mean-square of the reported standard errors; bias = mean error over the runs "
             "+- its standard error. Efficiency = time x stderr^2 (lower is better); speed-up = "
             "plain efficiency / efficiency (same scheme and steps); time to target = time x "
             "(stderr / target)^2. The bias is significant when it exceeds 3 of its standard "
             "errors.", "", "## Summary (largest n_paths)", ""]
    rows = [[s["scheme"], s["n_steps"], s["variant"], f"{s['n_paths_max']} x {s['replications']}",
             f(s["time_s"], ".3f"), f(s["stderr"], ".3f"), f(s["rmse"], ".3f"),
             f"{s['pooled_error']:+.2f} +- {s['pooled_stderr']:.2f}",
             f(s["variance_reduction"], ".2f"), f(s["efficiency"], ".3g"),
             f(s["speedup_vs_plain"], ".2f"), f(s["time_to_target_s"], ".3g"),
             "yes" if s["bias_exceeds_target"] else ("significant" if s["significant_bias"]
                                                     else "no")]
            for s in res["summary"]]
    lines.append(_util.md_table(
        ["scheme", "steps", "variant", "n_paths x runs", "time s", "stderr", "RMSE", "bias",
         "CV var. reduction", "time x se^2", "speed-up", "time to target s",
         "bias > target"], rows))
    lines += ["", "## All points", ""]
    rows = [[p["scheme"], p["n_steps"], p["variant"], p["n_paths"], p["replications"],
             f(p["time_s"], ".4f"), f(p["stderr"], ".3f"), f(p["rmse"], ".3f"),
             f"{p['pooled_error']:+.3f} +- {p['pooled_stderr']:.3f}"] for p in res["points"]]
    lines.append(_util.md_table(["scheme", "steps", "variant", "n_paths", "runs", "time s",
                                 "stderr", "RMSE", "bias"], rows))
    if res.get("plot"):
        lines += ["", f"![error vs time]({res['plot']})"]
    checks = res.get("mc_price_checks") or {}
    if checks:
        lines += ["", "## mc_price checks", ""]
        for k, v in checks.items():
            lines.append(f"- {k}: " + ", ".join(f"{kk} = {f(vv, '.6g')}" for kk, vv in v.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    _util.run_main(main)
