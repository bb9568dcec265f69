"""Peak memory of a large Heston Monte Carlo price: 1e6 paths x 252 steps, float32 and float64.

Each case runs ``qmr_jax.pricing.montecarlo.mc_price`` (Heston QE, European call, default
chunking) in a fresh Python subprocess. The peak resident set size of that subprocess is read
from ``os.wait4`` (``ru_maxrss`` of exactly that child) and from ``VmHWM`` inside it; a child
that only imports JAX and qmr_jax and runs one tiny jitted operation gives the baseline. Goal:
peak RSS under 2 GiB.

Inside the child: a first ``mc_price`` over exactly one chunk (it compiles the executable the
big run uses; its time, compile + one chunk, is reported as the first-call time; when one chunk
holds all the paths this is a whole first run), then the measured run, timed with wall and CPU
clocks. The peak covers both.

Run: ``python benchmarks/bench_memory.py [--quick]``; writes ``results/memory.json`` and ``.md``.
"""

from __future__ import annotations

import _util

NAME = "memory"
GOAL_BYTES = 2 * 2**30
PARAMS = dict(v0=0.36, kappa=2.0, theta=0.4, xi=1.0, rho=-0.4)
SPOT, RATE, DIV = 60000.0, 0.03, 0.0
EXPIRY = 1.0

FULL = dict(n_paths=1_000_000, n_steps=252)
QUICK = dict(n_paths=100_000, n_steps=32)

CHILD = _util.CHILD_PRELUDE + """
import time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import qmr_jax as qmr
import importlib
montecarlo = importlib.import_module("qmr_jax.pricing.montecarlo")
payoffs = importlib.import_module("qmr_jax.pricing.payoffs")
sim = importlib.import_module("qmr_jax.simulate")

dtype = np.dtype("{dtype}")
model = qmr.Heston(**{params})
market = qmr.Market({spot}, {rate}, {div})
pay = payoffs.european({spot}, {expiry}, True)
after_import = vm_hwm_bytes()
chunk = None
try:
    plan = sim.plan_chunks({n_paths}, sim.bytes_per_path(model, "summary", 1, dtype.itemsize))
    chunk = plan.chunk_paths
except Exception as exc:  # chunk planning is internal: time without a warm-up then
    print("no chunk plan:", exc)
t0 = time.perf_counter()
if chunk is not None:
    montecarlo.mc_price(model, market, pay, key=jax.random.key(1), n_paths=min(chunk, {n_paths}),
                        n_steps={n_steps}, dtype=dtype)
warm = time.perf_counter() - t0
t0, c0 = time.perf_counter(), time.process_time()
r = montecarlo.mc_price(model, market, pay, key=jax.random.key(0), n_paths={n_paths},
                        n_steps={n_steps}, dtype=dtype)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
ref = float(qmr.fourier_price(model, market, {spot}, {expiry}, True))
_report(value=float(r.value), stderr=float(r.stderr), reference=ref, wall_s=wall, cpu_s=cpu,
        warmup_s=warm, chunk_paths=chunk, hwm_after_import=after_import)
"""


def main(argv=None):
    args = _util.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out_dir = _util.results_dir(args)
    _util.require("jax", "JAX is the library's backend")
    _util.require("qmr_jax.pricing.montecarlo", "mc_price under test")
    env = _util.environment()
    print(_util.env_line(env))
    n_paths, n_steps = cfg["n_paths"], cfg["n_steps"]

    base = _util.idle_import_rss(x64=True)
    print(f"baseline (import jax + qmr_jax, one tiny op): peak RSS "
          f"{_util.gib(base['peak_rss_bytes']):.3f} GiB")
    cases = {}
    headline = []
    for dtype in ("float32", "float64"):
        code = CHILD.format(dtype=dtype, params=PARAMS, spot=SPOT, rate=RATE, div=DIV,
                            expiry=EXPIRY, n_paths=n_paths, n_steps=n_steps)
        r = _util.run_child(code, timeout=1800)
        c = r["child"]
        peak = r["peak_rss_bytes"]
        z = (c["value"] - c["reference"]) / c["stderr"]
        cases[dtype] = dict(
            peak_rss_bytes=peak, peak_rss_gib=_util.gib(peak),
            vm_hwm_bytes=c["vm_hwm_bytes"], hwm_after_import_bytes=c["hwm_after_import"],
            above_baseline_gib=_util.gib(peak - base["peak_rss_bytes"]),
            wall_s=c["wall_s"], cpu_s=c["cpu_s"], warmup_s=c["warmup_s"],
            chunk_paths=c["chunk_paths"], child_total_wall_s=r["wall_s"],
            path_steps_per_s=n_paths * n_steps / c["wall_s"],
            value=c["value"], stderr=c["stderr"], reference=c["reference"], z_vs_cos=z,
        )
        print(f"{dtype}: peak RSS {_util.gib(peak):.3f} GiB "
              f"(+{cases[dtype]['above_baseline_gib']:.3f} over baseline), "
              f"run {c['wall_s']:.2f} s wall / {c['cpu_s']:.2f} s cpu "
              f"({n_paths * n_steps / c['wall_s'] / 1e6:.2f} M path-steps/s); first call "
              f"(compile + one chunk) {c['warmup_s']:.2f} s, chunk {c['chunk_paths']} paths; "
              f"price "
              f"{c['value']:.2f} +- {c['stderr']:.2f} (COS {c['reference']:.2f}, z {z:+.2f})")
        headline.append(dict(metric=f"peak RSS, {n_paths:.0e} paths x {n_steps} steps, {dtype}",
                             value=f"{_util.gib(peak):.3f} GiB", goal="< 2 GiB",
                             met=peak < GOAL_BYTES))
        headline.append(dict(metric=f"mc_price time, {n_paths:.0e} x {n_steps}, {dtype}",
                             value=f"{c['wall_s']:.1f} s", goal="-", met=None))
    results = dict(name=NAME, quick=args.quick, environment=env, config=cfg, model=PARAMS,
                   market=dict(spot=SPOT, rate=RATE, div=DIV), expiry=EXPIRY,
                   baseline=base, cases=cases, headline=headline)
    js, md = _util.write_results(out_dir, NAME, results, markdown)
    print(f"wrote {js} and {md}")
    return results


def markdown(res) -> str:
    f = _util.fmt
    cfg = res["config"]
    lines = [f"# Peak memory of mc_price ({'quick' if res['quick'] else 'full'})", "",
             f"Machine: {_util.env_line(res['environment'])}", "",
             f"Heston QE European call, {cfg['n_paths']} paths x {cfg['n_steps']} steps, default "
             "chunking, each case in a fresh subprocess. Baseline (import JAX + qmr_jax, one "
             f"tiny op): {f(_util.gib(res['baseline']['peak_rss_bytes']), '.3f')} GiB. "
             "Goal: peak < 2 GiB.", ""]
    rows = [[d, f(c["peak_rss_gib"], ".3f"), f(c["above_baseline_gib"], ".3f"),
             c["chunk_paths"], f(c["wall_s"], ".2f"), f(c["cpu_s"], ".2f"),
             f(c["path_steps_per_s"] / 1e6, ".2f"), f(c["warmup_s"], ".2f"),
             f"{c['value']:.2f} +- {c['stderr']:.2f}", f(c["reference"], ".2f")]
            for d, c in res["cases"].items()]
    lines.append(_util.md_table(
        ["dtype", "peak RSS GiB", "above baseline GiB", "chunk paths", "run s (wall)",
         "run s (cpu)", "M path-steps/s", "first call s (compile + 1 chunk)", "MC price",
         "COS price"], rows))
    return "\n".join(lines)


if __name__ == "__main__":
    _util.run_main(main)
