"""Latency of the command line, each command in a fresh process: ``qmr --help``,
``qmr version``, ``qmr price`` (the README's example) and ``qmr calibrate --model heston``.

Every run is ``python -m qmr_jax.cli ...`` in a new interpreter, timed from the parent
(interpreter start, imports, data, compilation or cache loads, the work, the report), with
``QMR_CACHE_DIR`` pointing at a temporary folder of its own:

* **cold**: the folder empty (nothing compiled yet);
* **warm**: the same command again, the folder filled by the cold run (median of 3);
* **warm, other snapshot** (``qmr calibrate``): ``--snapshot -2``, ``-3``, ``-4`` on a copy of the
  folder that only ``--snapshot last`` filled: a new snapshot, the situation of a scheduled
  recalibration (median of the 3);
* **no cache**: ``--no-cache``, the baseline (what a process compiles without the cache).

``qmr calibrate`` uses the last BTC snapshot of the shared data (``--chain`` naming
``../shared/data/deribit_options`` or ``$QMR_DATA_DIR/deribit_options``), or ``--synthetic``
when the data are absent (then without the
other-snapshot case). The warm ``qmr price`` and ``qmr calibrate`` runs are also profiled once
(``-X importtime`` for the imports, ``cProfile`` for the rest) to show where their time goes.

The machine is shared: the load average before and after every run is recorded, and timings
on a busy 2-core machine can be twice those of an idle one; compare figures of one run.

Run: ``python benchmarks/bench_latency.py [--quick]`` (``--quick``: one warm run each, no
profiles); results in ``results/latency.*``.
"""

from __future__ import annotations

import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _util

NAME = "latency"

PRICE = ["price", "--model", "heston", "--params", "v0=0.36,kappa=2,theta=0.36,xi=1,rho=-0.25",
         "--spot", "60000", "--strikes", "50000,60000,70000", "--expiries", "30d,90d"]
GOALS = {  # seconds
    "help warm": 1.0,
    "price warm": 3.0,
    "calibrate warm": 5.0,
    "calibrate warm, other snapshot": 5.0,
    "calibrate cold": 20.0,
}
OTHER_SNAPSHOTS = ("-2", "-3", "-4")
PROFILED = ("fourier_price", "implied_vol", "load_deribit", "initial_guess", "calibrate",
            "calibration_report", "model_iv_surface", "program", "_run_price", "_run_calibrate")


def _data_folder() -> Path | None:
    """The Deribit option folder of the shared data, or ``None`` when absent."""
    folder = Path(os.environ.get("QMR_DATA_DIR", _util.REPO_ROOT.parent / "shared" / "data"))
    folder = folder / "deribit_options"
    return folder if any(folder.glob("*.parquet")) else None


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run_cli(args, cache: Path | str, *, python_flags=(), timeout=1800.0) -> dict:
    """One fresh process ``python [flags] -m qmr_jax.cli args`` with ``QMR_CACHE_DIR=cache``."""
    env = {**os.environ, "QMR_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(_util.REPO_ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    # python_flags may end with "-m cProfile -o FILE": cProfile then runs "-m qmr_jax.cli"
    cmd = [sys.executable, *python_flags, "-m", "qmr_jax.cli", *args]
    load = _loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=_util.REPO_ROOT)
    wall = time.perf_counter() - t0
    out = {"seconds": round(wall, 3), "rc": proc.returncode, "load_before": load,
           "load_after": _loadavg()}
    if proc.returncode not in (0, 1):  # 1: calibrate did not converge (still a run)
        out["stderr_tail"] = proc.stderr[-2000:]
    out["compile_lines"] = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()
                            if ln.strip().startswith(("compiling ", "compiled in "))]
    out["_stderr"] = proc.stderr
    return out


def _clean(run: dict) -> dict:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def _median(runs) -> float | None:
    runs = [r["seconds"] for r in runs if r["rc"] in (0, 1)]
    return round(statistics.median(runs), 3) if runs else None


def importtime_top(stderr: str, n: int = 12) -> list[dict]:
    """The slowest top-level imports of a ``-X importtime`` log (cumulative microseconds)."""
    rows = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level modules only
            rows.append({"module": m.group(4), "seconds": int(m.group(2)) / 1e6})
    rows.sort(key=lambda r: -r["seconds"])
    return [{**r, "seconds": round(r["seconds"], 3)} for r in rows[:n]]


def profile(args, cache: Path, work: Path, log) -> dict:
    """Where a warm run goes: total, imports (``-X importtime``) and the cumulative time of
    the library's main steps (``cProfile``)."""
    timed = run_cli(args, cache, python_flags=("-X", "importtime"))
    prof = work / "profile.out"
    prof.unlink(missing_ok=True)
    run_cli(args, cache, python_flags=("-m", "cProfile", "-o", str(prof)))
    steps = {}
    if prof.exists():
        stats = pstats.Stats(str(prof)).stats
        for (path, _, func), (_, _, _, cum, _) in stats.items():
            if func in PROFILED and "qmr_jax" in path:
                key = f"{Path(path).parent.name}/{Path(path).name}:{func}"
                steps[key] = round(max(cum, steps.get(key, 0.0)), 3)
        compile_s = sum(v[3] for (p, _, f), v in stats.items()
                        if f in ("compile_or_get_cached",) and "jax" in p)
        trace_s = sum(v[3] for (p, _, f), v in stats.items()
                      if f == "trace_to_jaxpr" and p.endswith("partial_eval.py"))
        steps["(jax) compile_or_get_cached, all programs"] = round(compile_s, 3)
        steps["(jax) trace_to_jaxpr, outermost and nested"] = round(trace_s, 3)
    out = {"seconds": timed["seconds"], "imports": importtime_top(timed["_stderr"]),
           "steps_cumulative_s": dict(sorted(steps.items(), key=lambda kv: -kv[1]))}
    log(f"  profile: {out['seconds']} s; imports {out['imports'][:3]}")
    return out


def measure(name, args, *, warm_repeats, log, work: Path, other=None, profile_it=False):
    cache = work / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    res = {"command": "qmr " + " ".join(args)}
    cold = run_cli(args, cache)
    log(f"{name}: cold {cold['seconds']} s (rc {cold['rc']})")
    for line in cold["compile_lines"]:
        log(f"    {line}")
    warm = [run_cli(args, cache) for _ in range(warm_repeats)]
    log(f"{name}: warm {[r['seconds'] for r in warm]} s")
    res.update(cold=_clean(cold), warm=[_clean(r) for r in warm], warm_median_s=_median(warm))
    if other:
        filled = work / f"cache-{name}-filled"
        shutil.rmtree(filled, ignore_errors=True)
        shutil.copytree(cache, filled)
        runs = []
        for snap_args in other:
            fresh = work / f"cache-{name}-other"
            shutil.rmtree(fresh, ignore_errors=True)
            shutil.copytree(filled, fresh)
            r = run_cli(snap_args, fresh)
            r["command"] = "qmr " + " ".join(snap_args)
            runs.append(r)
            log(f"{name}: warm, other snapshot ({snap_args[-3:]}) {r['seconds']} s")
            for line in r["compile_lines"]:
                log(f"    {line}")
        res.update(other_snapshot=[_clean(r) for r in runs],
                   other_snapshot_median_s=_median(runs))
    if args and args[0] not in ("--help", "version"):
        nc = run_cli([*args, "--no-cache"], work / f"cache-{name}-unused")
        log(f"{name}: --no-cache {nc['seconds']} s")
        res["no_cache"] = _clean(nc)
    if profile_it:
        res["profile_warm"] = profile(args, cache, work, log)
    return res


def headline(res: dict) -> list[dict]:
    rows = []

    def add(metric, value, goal_key):
        goal = GOALS[goal_key]
        rows.append({"metric": metric, "value": value, "goal": f"<= {goal:g} s",
                     "met": None if value is None else value <= goal})

    cases = res["cases"]
    add("qmr --help, warm median", cases["help"]["warm_median_s"], "help warm")
    add("qmr price (README example), warm median", cases["price"]["warm_median_s"],
        "price warm")
    cal = cases["calibrate"]
    add(f"qmr calibrate ({res['calibrate_source']}), warm median", cal["warm_median_s"],
        "calibrate warm")
    if "other_snapshot_median_s" in cal:
        add("qmr calibrate, warm on another snapshot, median", cal["other_snapshot_median_s"],
            "calibrate warm, other snapshot")
    add(f"qmr calibrate ({res['calibrate_source']}), cold", cal["cold"]["seconds"],
        "calibrate cold")
    return rows


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = ["# Command-line latency", "",
             f"Machine: {_util.env_line(env)}.", "",
             f"{env.get('cpu_count')} cores; load average {env.get('load_average_at_start')} at "
             f"the start and {env.get('load_average_at_end')} at the end (1, 5, 15 min): "
             "other jobs shared the machine, so single timings carry +-30 % or more.", "",
             "Each figure is one fresh process `python -m qmr_jax.cli ...` timed from outside "
             "(interpreter start to exit), with its own `QMR_CACHE_DIR`. Cold: empty cache "
             "folder; warm: the same command again (median of "
             f"{res['warm_repeats']}); other snapshot: `--snapshot -2/-3/-4` with the folder "
             "filled by `--snapshot last` only; no cache: `--no-cache`.", ""]
    lines.append(_util.md_table(
        ["figure", "measured", "goal", "met"],
        [[h["metric"], f"{h['value']} s" if h["value"] is not None else "-", h["goal"],
          "-" if h["met"] is None else ("yes" if h["met"] else "**no**")]
         for h in res["headline"]]))
    lines += ["", "## Every run (seconds)", ""]
    rows = []
    for c in res["cases"].values():
        warm = ", ".join(f"{r['seconds']}" for r in c["warm"])
        other = c.get("other_snapshot_median_s", "-")
        rows.append([f"`{c['command']}`", c["cold"]["seconds"], f"{c['warm_median_s']} ({warm})",
                     other, c.get("no_cache", {}).get("seconds", "-")])
    lines.append(_util.md_table(["command", "cold", "warm median (runs)",
                                 "warm, other snapshot (median)", "--no-cache"], rows))
    cal = res["cases"]["calibrate"]
    for title, run in (("cold", cal["cold"]),
                       ("first other snapshot", (cal.get("other_snapshot") or [None])[0])):
        if run and run.get("compile_lines"):
            lines += ["", f"`qmr calibrate` compile lines, {title}:", "", "```",
                      *run["compile_lines"], "```"]
    for name in ("price", "calibrate"):
        prof = res["cases"][name].get("profile_warm")
        if not prof:
            continue
        lines += ["", f"## Where a warm `qmr {name}` goes ({prof['seconds']} s in that run)", "",
                  "Slowest top-level imports (`-X importtime`, cumulative):", ""]
        lines.append(_util.md_table(["module", "s"], [[f"`{r['module']}`", r["seconds"]]
                                                     for r in prof["imports"][:8]]))
        lines += ["", "Cumulative time of the main steps (`cProfile`, which slows Python-heavy "
                  "code such as tracing):", ""]
        lines.append(_util.md_table(["step", "s"], [[f"`{k}`", v] for k, v in
                                                    prof["steps_cumulative_s"].items()]))
    return "\n".join(lines)


def main():
    args = _util.parser(__doc__.splitlines()[0]).parse_args()
    out = _util.results_dir(args)
    log = lambda s: print(s, flush=True)
    repeats = 1 if args.quick else 3
    res = {"environment": _util.environment(), "warm_repeats": repeats, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="qmr-latency-") as tmp:
        work = Path(tmp)
        res["cases"]["help"] = measure("help", ["--help"], warm_repeats=repeats, log=log,
                                       work=work)
        res["cases"]["version"] = measure("version", ["version"], warm_repeats=repeats,
                                          log=log, work=work)
        res["cases"]["price"] = measure("price", PRICE, warm_repeats=repeats, log=log,
                                        work=work, profile_it=not args.quick)
        report = str(work / "calibration-out")
        data = _data_folder()
        if data is not None:
            res["calibrate_source"] = "last BTC snapshot"
            cal = ["calibrate", "--model", "heston", "--chain", str(data), "--out", report,
                   "--snapshot"]
            other = [[*cal, s] for s in OTHER_SNAPSHOTS[: 1 if args.quick else 3]]
            res["cases"]["calibrate"] = measure("calibrate", [*cal, "last"],
                                                warm_repeats=repeats, log=log, work=work,
                                                other=other, profile_it=not args.quick)
        else:
            res["calibrate_source"] = "synthetic chain (no market data)"
            res["cases"]["calibrate"] = measure(
                "calibrate", ["calibrate", "--model", "heston", "--synthetic", "--out", report],
                warm_repeats=repeats, log=log, work=work, profile_it=not args.quick)
    res["headline"] = headline(res)
    js, md = _util.write_results(out, NAME, res, markdown)
    print(md.read_text())
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    _util.run_main(main)
