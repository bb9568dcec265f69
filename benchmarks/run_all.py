"""Run every benchmark, each in its own Python process, and collect the headline figures.

Usage::

    python benchmarks/run_all.py            # full sizes (about 20 minutes on a 2-core CPU)
    python benchmarks/run_all.py --quick    # smoke sizes (under 2 minutes), results/quick/
    python benchmarks/run_all.py --only heston_qe memory

Each benchmark writes ``results/<name>.json`` and ``.md`` (and a PNG where it plots); this
script then writes ``results/summary.json`` and ``results/summary.md`` with the headline figures
(goal, value, met) of every benchmark and how long each took; with ``--only``, the others keep
the figures of their last run (dated in the summary). A benchmark that fails
or lacks a module is reported and the others still run; the exit status is non-zero if any
failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _util

BENCHMARKS = {
    "heston_qe": "bench_heston_qe.py",
    "fourier_surface": "bench_fourier_surface.py",
    "memory": "bench_memory.py",
    "accuracy_time": "bench_accuracy_time.py",
    "book_sensitivities": "bench_book_sensitivities.py",
    "mc_greeks": "bench_mc_greeks.py",
    "sweep": "bench_sweep.py",
    "integrity": "bench_integrity.py",
    "latency": "bench_latency.py",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small smoke-test sizes")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None,
                   help="run only these benchmarks")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds allowed per benchmark (default 3600)")
    args = p.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    out_dir = _util.RESULTS_DIR / "quick" if args.quick else _util.RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = {}
    t_all = time.perf_counter()
    for name in names:
        script = Path(__file__).resolve().parent / BENCHMARKS[name]
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"\n######## {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=args.timeout)
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {args.timeout:.0f} s"
        runs[name] = dict(status=status, seconds=round(time.perf_counter() - t0, 1))
        print(f"######## {name}: {status} in {runs[name]['seconds']} s", flush=True)
    total = time.perf_counter() - t_all

    summary = dict(quick=args.quick, total_seconds=round(total, 1), runs=runs,
                   environment=_util.environment(), headline={})
    for name in BENCHMARKS:  # benchmarks not run now keep their last results
        path = out_dir / f"{name}.json"
        if name not in runs and path.exists():
            data = json.loads(path.read_text())
            runs[name] = dict(status="not run now: results of "
                              + str(data.get("environment", {}).get("date_utc")),
                              seconds=None)
        if runs.get(name, {}).get("status", "").startswith(("ok", "not run")) and path.exists():
            summary["headline"][name] = json.loads(path.read_text()).get("headline", [])
    _, md_path = _util.write_results(out_dir, "summary", summary, markdown)
    print("\n" + md_path.read_text())
    failed = [n for n, r in runs.items() if not r["status"].startswith(("ok", "not run"))]
    return 1 if failed else 0


def markdown(summary) -> str:
    lines = [f"# Benchmark summary ({'quick' if summary['quick'] else 'full'})", "",
             f"Machine: {_util.env_line(summary['environment'])}", "",
             f"Total {summary['total_seconds']} s.", ""]
    lines.append(_util.md_table(
        ["benchmark", "status", "seconds"],
        [[n, r["status"], "-" if r["seconds"] is None else r["seconds"]]
         for n, r in summary["runs"].items()]))
    rows = []
    for name, items in summary["headline"].items():
        for h in items:
            met = h.get("met")
            rows.append([name, h["metric"], h["value"], h.get("goal", "-"),
                         "-" if met is None else ("yes" if met else "**no**")])
    if rows:
        lines += ["", _util.md_table(["benchmark", "figure", "value", "goal", "met"], rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
