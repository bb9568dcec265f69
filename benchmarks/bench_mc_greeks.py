"""Cost and memory of Monte Carlo sensitivities by reverse-mode autodiff (``mc_value``).

A BTC-like Heston model (spot 60000, v0 0.36, kappa 2, theta 0.4, xi 1.0, rho -0.4, rate
3 %) and the same with Merton jumps (Bates: lam 3, mu_j -0.04, sigma_j 0.12), an
at-the-money call, one year to expiry, float64, antithetic pairs.

Cost (in this process, contenders run alternately A B A B ..., compilation excluded): on the
same paths,

* ``value``: one pricing, ``jit(mc_value)`` forward only;
* ``reverse``: ``jit(grad(mc_value))``: all first-order sensitivities (spot, rate, div,
  every model parameter and the elapsed time) in one reverse pass, checkpointed;
* ``mc_greeks``: the public call that also returns batch-means standard errors of every
  derivative (per-block gradients from the same single reverse pass);
* ``bump``: bump-and-revalue of the spot, the rate and every model parameter, central
  differences, i.e. ``2 n + 1`` pricings with the jitted forward.

Each is divided by ``value``: goal ``reverse / value <= 3``. Wall and process CPU time are
both reported (the CPU time is the steadier figure on a shared machine).

Memory (each case in a fresh subprocess, run before the timings; peak RSS is the child's
own ``VmHWM``, ``os.wait4``'s figure is recorded too): the gradient of the Heston price with
``checkpoint=True`` and with the plain reverse pass (``checkpoint=False``, which stores
every intermediate of every step) at a size where both fit, and the checkpointed gradient of
a 1e6-path x 252-step Heston simulation (chunked inside the traced function), timed against
its forward pricing.

Run: ``python benchmarks/bench_mc_greeks.py [--quick]``; writes ``results/mc_greeks.json``
and ``.md``.
"""

from __future__ import annotations

import _util

NAME = "mc_greeks"
HESTON = dict(v0=0.36, kappa=2.0, theta=0.4, xi=1.0, rho=-0.4)
BATES = dict(HESTON, lam=3.0, mu_j=-0.04, sigma_j=0.12)
SPOT, RATE, DIV = 60000.0, 0.03, 0.0
EXPIRY = 1.0
GOAL_RATIO = 3.0
GOAL_BYTES = 2 * 2**30

FULL = dict(cost_paths=2**16, cost_steps=64, repeats=3, small=(2**16, 64),
            big=(1_000_000, 252))
QUICK = dict(cost_paths=2**13, cost_steps=16, repeats=1, small=(2**13, 16),
             big=(100_000, 32))

CHILD = _util.CHILD_PRELUDE + """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import qmr_jax as qmr
import importlib
mcg = importlib.import_module("qmr_jax.pricing.mc_greeks")
payoffs = importlib.import_module("qmr_jax.pricing.payoffs")

model = qmr.Heston(**{params})
market = qmr.Market({spot}, {rate}, {div})
pay = payoffs.european({spot}, {expiry}, True)
x0 = jnp.array([*market, *model, 0.0])
kw = dict(key=jax.random.key(0), n_paths={n_paths}, n_steps={n_steps})

def f(x, checkpoint):
    return mcg.mc_value(qmr.Heston(*x[3:-1]), qmr.Market(*x[:3]), pay, x[-1],
                        checkpoint=checkpoint, **kw)

after_import = vm_hwm_bytes()
out = {{}}
if {forward}:
    t0 = time.perf_counter()
    fwd = jax.jit(lambda x: f(x, True)).lower(x0).compile()
    out["forward_compile_s"] = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    out["value"] = float(jax.block_until_ready(fwd(x0)))
    out["forward_s"], out["forward_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    out["hwm_after_forward"] = vm_hwm_bytes()
t0 = time.perf_counter()
grad = jax.jit(jax.grad(lambda x: f(x, {checkpoint}))).lower(x0).compile()
out["grad_compile_s"] = time.perf_counter() - t0
t0, c0 = time.perf_counter(), time.process_time()
g = jax.block_until_ready(grad(x0))
out["grad_s"], out["grad_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
out["delta"] = float(g[0])
out["finite"] = bool(jnp.all(jnp.isfinite(g)))
out["hwm_after_import"] = after_import
_report(**out)
"""


def _models():
    import qmr_jax as qmr

    return {"heston": qmr.Heston(**HESTON), "bates": qmr.Bates(**BATES)}


def cost_case(name, model, cfg):
    """Time value, reverse, mc_greeks and bump-and-revalue on the same paths."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    import qmr_jax as qmr
    from qmr_jax.pricing import payoffs
    from qmr_jax.pricing.mc_greeks import mc_greeks, mc_value

    market = qmr.Market(SPOT, RATE, DIV)
    pay = payoffs.european(SPOT, EXPIRY, True)
    kw = dict(key=jax.random.key(1), n_paths=cfg["cost_paths"], n_steps=cfg["cost_steps"])
    x0 = jnp.array([*market, *model, 0.0])
    names = ("spot", "rate", "div", *model._fields, "elapsed")

    def f(x):
        return mc_value(type(model)(*x[3:-1]), qmr.Market(*x[:3]), pay, x[-1], **kw)

    value = jax.jit(f)
    reverse = jax.jit(jax.grad(f))
    bumped = [i for i, n in enumerate(names) if n not in ("div", "elapsed")]
    steps = np.array([1e-4 * max(abs(float(x0[i])), 1.0) for i in range(len(names))])
    points = [x0] + [x0.at[i].add(s * steps[i]) for i in bumped for s in (1.0, -1.0)]

    def bump():
        vals = [value(p) for p in points]
        return jnp.stack(vals)

    greeks = functools.partial(mc_greeks, model, market, pay, **kw)
    t = _util.time_interleaved(
        {"value": lambda: value(x0), "reverse": lambda: reverse(x0),
         "mc_greeks": lambda: greeks().gradient, "bump": bump},
        repeats=cfg["repeats"],
    )
    g_rev = np.asarray(t["reverse"]["result"])
    g_mcg = np.asarray(t["mc_greeks"]["result"])
    vals = np.asarray(t["bump"]["result"])
    fd = {names[i]: (vals[1 + 2 * j] - vals[2 + 2 * j]) / (2 * steps[i])
          for j, i in enumerate(bumped)}
    res = dict(n_inputs_reverse=len(names), n_bumped=len(bumped),
               pricings_bump=len(points), inputs=list(names), bumped=[names[i] for i in bumped])
    for k in ("value", "reverse", "mc_greeks", "bump"):
        res[k] = _util.timing_summary(t[k])
    base_w, base_c = t["value"]["best_s"], t["value"]["cpu_best_s"]
    for k in ("reverse", "mc_greeks", "bump"):
        res[f"{k}_ratio_wall"] = t[k]["best_s"] / base_w
        res[f"{k}_ratio_cpu"] = t[k]["cpu_best_s"] / base_c
    res["mc_greeks_vs_reverse_max_rel"] = float(
        np.max(np.abs(g_mcg - g_rev) / np.maximum(np.abs(g_rev), 1e-300)))
    res["bump_vs_reverse_rel"] = {
        n: float(abs(fd[n] - g_rev[names.index(n)]) / max(abs(g_rev[names.index(n)]), 1e-300))
        for n in fd}
    print(f"{name}: value {base_w:.3f} s; reverse x{res['reverse_ratio_wall']:.2f} wall "
          f"(x{res['reverse_ratio_cpu']:.2f} cpu); mc_greeks (with standard errors) "
          f"x{res['mc_greeks_ratio_wall']:.2f} (x{res['mc_greeks_ratio_cpu']:.2f} cpu); "
          f"bump-and-revalue ({len(points)} pricings) x{res['bump_ratio_wall']:.2f} "
          f"(x{res['bump_ratio_cpu']:.2f} cpu)")
    return res


def memory_case(n_paths, n_steps, *, checkpoint, forward):
    code = CHILD.format(params=HESTON, spot=SPOT, rate=RATE, div=DIV, expiry=EXPIRY,
                        n_paths=n_paths, n_steps=n_steps, checkpoint=bool(checkpoint),
                        forward=bool(forward))
    r = _util.run_child(code, timeout=1800)
    c = r["child"]
    # VmHWM of the child itself (ru_maxrss of a child also counts the parent's resident set
    # at fork time, large here after the in-process timings)
    c["wait4_maxrss_bytes"] = r["peak_rss_bytes"]
    c["peak_rss_bytes"] = c["vm_hwm_bytes"] or r["peak_rss_bytes"]
    c["peak_rss_gib"] = _util.gib(c["peak_rss_bytes"])
    c["child_total_wall_s"] = r["wall_s"]
    c.update(n_paths=n_paths, n_steps=n_steps, checkpoint=bool(checkpoint))
    return c


def main(argv=None):
    args = _util.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out_dir = _util.results_dir(args)
    _util.require("jax", "JAX is the library's backend")
    _util.require("qmr_jax.pricing.mc_greeks", "mc_value and mc_greeks under test")
    import jax

    jax.config.update("jax_enable_x64", True)
    env = _util.environment()
    print(_util.env_line(env))
    headline, mem_headline = [], []

    base = _util.idle_import_rss(x64=True)
    base["peak_rss_bytes"] = base["vm_hwm_bytes"] or base["peak_rss_bytes"]
    print(f"baseline (import jax + qmr_jax): peak RSS {_util.gib(base['peak_rss_bytes']):.3f} "
          "GiB")
    n_small, s_small = cfg["small"]
    memory = {}
    for ck in (True, False):
        label = "checkpointed" if ck else "plain"
        memory[label] = m = memory_case(n_small, s_small, checkpoint=ck, forward=False)
        print(f"gradient {n_small} x {s_small}, {label}: peak RSS {m['peak_rss_gib']:.3f} GiB, "
              f"grad {m['grad_s']:.2f} s (compile {m['grad_compile_s']:.1f} s)")
    extra = {k: memory[k]["peak_rss_bytes"] - base["peak_rss_bytes"] for k in memory}
    per_path_step = {k: v / (n_small * s_small) for k, v in extra.items()}
    n_big, s_big = cfg["big"]
    big = memory_case(n_big, s_big, checkpoint=True, forward=True)
    big["grad_over_forward_wall"] = big["grad_s"] / big["forward_s"]
    # what the plain pass stores beyond the checkpointed one, per path-step, at the big size
    plain_extra = (memory["plain"]["peak_rss_bytes"]
                   - memory["checkpointed"]["peak_rss_bytes"]) / (n_small * s_small)
    big["plain_extra_bytes_per_path_step"] = plain_extra
    big["plain_estimate_gib"] = _util.gib(big["peak_rss_bytes"] + plain_extra * n_big * s_big)
    print(f"gradient {n_big} x {s_big}, checkpointed: peak RSS {big['peak_rss_gib']:.3f} GiB, "
          f"forward {big['forward_s']:.1f} s, gradient {big['grad_s']:.1f} s "
          f"(x{big['grad_over_forward_wall']:.2f}); the plain reverse pass would need about "
          f"{big['plain_estimate_gib']:.0f} GiB")
    mem_headline.append(dict(
        metric=f"peak RSS of the gradient, {n_small} x {s_small} Heston: checkpointed / plain",
        value=f"{memory['checkpointed']['peak_rss_gib']:.2f} / "
              f"{memory['plain']['peak_rss_gib']:.2f} GiB", goal="-", met=None))
    mem_headline.append(dict(
        metric=f"gradient of {n_big:.0e} paths x {s_big} steps Heston, checkpointed: "
               "peak RSS / time (x forward)",
        value=f"{big['peak_rss_gib']:.2f} GiB / {big['grad_s']:.1f} s "
              f"(x{big['grad_over_forward_wall']:.2f})",
        goal="< 2 GiB", met=big["peak_rss_bytes"] < GOAL_BYTES and big["finite"]))

    cost = {}
    for name, model in _models().items():
        cost[name] = c = cost_case(name, model, cfg)
        headline.append(dict(
            metric=f"{name}: all {c['n_inputs_reverse']} first-order sensitivities by reverse "
                   f"mode / one pricing ({cfg['cost_paths']} paths x {cfg['cost_steps']} "
                   "steps), wall (cpu)",
            value=f"{c['reverse_ratio_wall']:.2f}x ({c['reverse_ratio_cpu']:.2f}x)",
            goal=f"<= {GOAL_RATIO:g}x (cpu)", met=c["reverse_ratio_cpu"] <= GOAL_RATIO))
        headline.append(dict(
            metric=f"{name}: same with standard errors (mc_greeks) / bump-and-revalue "
                   f"({c['pricings_bump']} pricings)",
            value=f"{c['mc_greeks_ratio_wall']:.2f}x / {c['bump_ratio_wall']:.2f}x",
            goal="-", met=None))
    headline += mem_headline

    results = dict(name=NAME, quick=args.quick, environment=env, config=cfg,
                   heston=HESTON, bates=BATES, market=dict(spot=SPOT, rate=RATE, div=DIV),
                   expiry=EXPIRY, cost=cost, baseline=base, memory=memory,
                   memory_per_path_step_bytes=per_path_step, big=big, headline=headline)
    js, md = _util.write_results(out_dir, NAME, results, markdown)
    print(f"wrote {js} and {md}")
    return results


def markdown(res) -> str:
    f = _util.fmt
    cfg = res["config"]
    lines = [f"# Monte Carlo sensitivities by reverse mode ({'quick' if res['quick'] else 'full'})",
             "", f"Machine: {_util.env_line(res['environment'])}", "",
             f"At-the-money call, {res['expiry']} year, spot {res['market']['spot']:g}, "
             f"float64, antithetic; cost on {cfg['cost_paths']} paths x {cfg['cost_steps']} "
             "steps, same paths for every contender, best of "
             f"{cfg['repeats']} interleaved runs, compilation excluded. Goal: all "
             f"sensitivities by reverse mode <= {GOAL_RATIO:g}x one pricing.", ""]
    rows = []
    for name, c in res["cost"].items():
        rows.append([name, f(c["value"]["best_s"], ".3f"),
                     f"{c['reverse_ratio_wall']:.2f}x ({c['reverse_ratio_cpu']:.2f}x)",
                     c["n_inputs_reverse"],
                     f"{c['mc_greeks_ratio_wall']:.2f}x ({c['mc_greeks_ratio_cpu']:.2f}x)",
                     f"{c['bump_ratio_wall']:.2f}x ({c['bump_ratio_cpu']:.2f}x)",
                     c["pricings_bump"], f(c["mc_greeks_vs_reverse_max_rel"], ".1e")])
    lines.append(_util.md_table(
        ["model", "one pricing s", "reverse / pricing, wall (cpu)", "inputs",
         "mc_greeks (+ std errors) / pricing", "bump-and-revalue / pricing", "pricings",
         "mc_greeks vs grad, max rel diff"], rows))
    lines += ["", "Bump-and-revalue (relative step 1e-4, same paths) against the reverse-mode "
              "gradient, relative difference:", ""]
    for name, c in res["cost"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.1e}"
                                                for k, v in c["bump_vs_reverse_rel"].items()))
    n_small, s_small = cfg["small"]
    n_big, s_big = cfg["big"]
    b = res["big"]
    lines += ["", f"Peak memory (fresh subprocess per case; idle JAX import "
              f"{f(_util.gib(res['baseline']['peak_rss_bytes']), '.3f')} GiB):", ""]
    rows = [[f"{n_small} x {s_small}", k, f(m["peak_rss_gib"], ".3f"),
             f(res["memory_per_path_step_bytes"][k], ".0f"), f(m["grad_s"], ".2f"),
             f(m["grad_compile_s"], ".1f")] for k, m in res["memory"].items()]
    rows.append([f"{n_big} x {s_big}", "checkpointed", f(b["peak_rss_gib"], ".3f"),
                 f((b["peak_rss_bytes"] - res["baseline"]["peak_rss_bytes"])
                   / (n_big * s_big), ".1f"),
                 f(b["grad_s"], ".1f"), f(b["grad_compile_s"], ".1f")])
    lines.append(_util.md_table(["paths x steps", "reverse pass", "peak RSS GiB",
                                 "bytes per path-step above idle", "gradient s", "compile s"],
                                rows))
    lines += ["", f"{n_big} x {s_big}: forward pricing {f(b['forward_s'], '.1f')} s, gradient "
              f"{f(b['grad_s'], '.1f')} s (x{b['grad_over_forward_wall']:.2f}); the plain "
              f"reverse pass would need about {b['plain_estimate_gib']:.0f} GiB at this size "
              f"(it stores {b['plain_extra_bytes_per_path_step']:.0f} bytes per path-step more "
              f"than the checkpointed pass at {n_small} x {s_small})."]
    return "\n".join(lines)


if __name__ == "__main__":
    _util.run_main(main)
