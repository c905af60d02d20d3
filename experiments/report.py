"""The performance review, generated from the code: profile, scaling, memory, timing diagram.

    python experiments/report.py          # quick mode (minutes on a 2-core laptop)
    python experiments/report.py --full   # the benchmarks' full sizes (tens of minutes)

Runs every benchmark script of experiments/ (quick mode unless --full), measures the
optimization ladder and the scaling curves itself, and writes experiments/results/REPORT.md
with figures (PNG) next to it:

1. Profile: per-stage time of the monitor step and the optimization ladder of the population
   baseline (naive O(n^2) -> numpy vectorized -> JAX with XLA's sort -> host-callback sort ->
   native radix kernel).
2. Scaling: log-log time vs n for naive O(n^2) and jaxstats, per statistic, with fitted slopes;
   multi-device scaling (bench_scaling.py) and the strategy for 10^6-10^9 agents.
3. Memory: bytes per agent per component vs the 30 MB prototype; agents per GB and per GPU.
4. Timing diagram: one monitor step at 10^3 and 10^6 agents from measured stage times, with
   the <100 ns, <1 us and <1 ms tiers marked and the critical path highlighted.

The machine (CPU model, cores, jax/jaxlib, backend) is recorded in the report; numbers from
another machine (e.g. a GPU) are included only from files measured there and say so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from _timing import fmt_time, machine_line, timeit  # noqa: E402

import jaxstats  # noqa: E402

PROTOTYPE_BYTES_PER_AGENT = 30e6

BENCHES = [
    ("bench_baselines.py", "Population baselines and the sort kernel (issue 2)"),
    ("bench_pairwise.py", "Pairwise and robust statistics (issue 3)"),
    ("bench_evidence.py", "Evidence combination (issue 4)"),
    ("bench_memory.py", "Streaming state: memory, speed, accuracy (issue 5)"),
    ("bench_latency.py", "Monitor latency tiers (issue 6)"),
    ("bench_scaling.py", "Sharding and scale-out (issue 7)"),
    ("bench_soft.py", "Differentiable ranks (issue 8)"),
]


def run_bench(script: str, full: bool, timeout: int) -> tuple[str, float, int]:
    """Run one benchmark script; returns (stdout+stderr tail, seconds, return code)."""
    path = os.path.join(HERE, script)
    if not os.path.exists(path):
        return f"({script} not present)", 0.0, -1
    cmd = [sys.executable, path] + ([] if full else ["--quick"])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(HERE))
        out, rc = proc.stdout + (("\n" + proc.stderr[-3000:]) if proc.returncode else ""), proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), 124
        out += f"\n(timed out after {timeout} s)"
    return out, time.perf_counter() - t0, rc


# ---------------------------------------------------------------------------------------
# 1. Optimization ladder of the population baseline (measured here, side by side)
# ---------------------------------------------------------------------------------------


def _naive_percentile(x, chunk=2048):
    n = x.shape[0]
    out = np.empty(n)
    for i in range(0, n, chunk):
        xi = x[i : i + chunk, None]
        left = (x[None, :] < xi).sum(axis=1)
        right = (x[None, :] <= xi).sum(axis=1)
        out[i : i + chunk] = (left + right + (right > left)) * (50.0 / n)
    return out


def _numpy_percentile(x):
    s = np.sort(x)
    left = np.searchsorted(s, x, "left")
    right = np.searchsorted(s, x, "right")
    return (left + right + (right > left)) * (50.0 / x.shape[0])


def _jax_percentile(backend):
    def f(x):
        s, lo, hi = jaxstats._sort.tie_bounds(x, backend=backend)
        n = x.shape[0]
        return ((lo - 1) + hi + (hi > lo)).astype(x.dtype) * (50.0 / n)

    return jax.jit(f)


def ladder(n: int) -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=n).astype(np.float32)
    xj = jnp.asarray(x)
    rows = [("naive O(n^2) numpy broadcasting", timeit(_naive_percentile, x, repeats=3, warmup=1))]
    rows.append(("numpy sort + searchsorted", timeit(_numpy_percentile, x)))
    rows.append(("JAX jit, XLA sort + cummax", timeit(_jax_percentile("xla"), xj)))
    rows.append(("JAX jit, numpy sort via host callback", timeit(_jax_percentile("host"), xj)))
    if jaxstats._native.load() is not None:
        rows.append(("JAX jit, native radix tie-bounds kernel (FFI)", timeit(_jax_percentile("native"), xj)))
    return rows


# ---------------------------------------------------------------------------------------
# 2. Scaling curves (time vs n), naive vs jaxstats, with fitted log-log slopes
# ---------------------------------------------------------------------------------------


def _naive_kendall(x, y, chunk=1024):
    n = x.shape[0]
    s = 0
    for i in range(0, n, chunk):
        dx = np.sign(x[i : i + chunk, None] - x[None, :])
        dy = np.sign(y[i : i + chunk, None] - y[None, :])
        s += int((dx * dy).sum())
    return s


def _naive_mwu(x, y, chunk=2048):
    u = 0.0
    for i in range(0, x.shape[0], chunk):
        xi = x[i : i + chunk, None]
        u += float((xi > y[None, :]).sum() + 0.5 * (xi == y[None, :]).sum())
    return u


def scaling_curves(full: bool) -> dict:
    rng = np.random.default_rng(2)
    sizes = [10**2, 10**3, 10**4, 10**5, 10**6] + ([10**7] if full else [])
    naive_max = 3 * 10**4 if full else 10**4
    stats = {
        "percentile baseline": (
            lambda x, y: _naive_percentile(x),
            jax.jit(lambda x, y: jaxstats.percentile_of_population(x)),
        ),
    }
    if hasattr(jaxstats, "kendalltau"):
        stats["kendall tau"] = (_naive_kendall, jax.jit(lambda x, y: jaxstats.kendalltau(x, y).statistic))
    if hasattr(jaxstats, "mannwhitneyu"):
        stats["mann-whitney U"] = (_naive_mwu, jax.jit(lambda x, y: jaxstats.mannwhitneyu(x, y).statistic))
    out = {}
    for name, (naive, fast) in stats.items():
        rows = []
        for n in sizes:
            x = rng.standard_normal(n).astype(np.float32)
            y = (0.5 * x + rng.standard_normal(n)).astype(np.float32)
            t_fast = timeit(fast, jnp.asarray(x), jnp.asarray(y), repeats=3 if n >= 10**6 else 5)
            t_naive = timeit(naive, x, y, repeats=1, warmup=0) if n <= naive_max else float("nan")
            rows.append((n, t_naive, t_fast))
        out[name] = rows
    return out


def fit_slope(ns, ts) -> float:
    ns, ts = np.asarray(ns, float), np.asarray(ts, float)
    ok = np.isfinite(ts) & (ns >= 1e3)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log10(ns[ok]), np.log10(ts[ok]), 1)[0])


def plot_scaling(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, rows) in enumerate(curves.items()):
        ns = [r[0] for r in rows]
        c = f"C{i}"
        tn = [r[1] for r in rows]
        tf = [r[2] for r in rows]
        ax.loglog(ns, tf, "o-", color=c, label=f"jaxstats {name} (slope {fit_slope(ns, tf):.2f})")
        if np.isfinite(tn).any():
            ax.loglog(ns, tn, "x--", color=c, label=f"naive {name} (slope {fit_slope(ns, tn):.2f})")
    ax.set_xlabel("n (agents)")
    ax.set_ylabel("time per call (s)")
    ax.set_title("Naive O(n^2) vs jaxstats O(n log n)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# 3. Memory per agent
# ---------------------------------------------------------------------------------------


def memory_rows() -> list[tuple[str, float]]:
    from jaxstats import sketch

    rows = []
    ex = jax.ShapeDtypeStruct((8,), jnp.float32)
    n = 4
    candidates = []
    for name in ("moments", "ewma", "ddsketch", "momentsketch", "log_evidence"):
        fac = getattr(sketch, name, None)
        if fac is None:
            continue
        try:
            sk = fac(half_life=288) if name == "ewma" else fac()
        except Exception:  # noqa: BLE001 - factories with required args are skipped
            continue
        candidates.append((name, sk))
    for name, sk in candidates:
        try:
            example = jax.ShapeDtypeStruct((), jnp.float32) if name == "log_evidence" else ex
            st = jax.vmap(lambda _: sk.init(example))(jnp.arange(n))
            rows.append((f"{name} (8 features)" if name != "log_evidence" else name, sketch.nbytes(st)))
        except Exception as e:  # noqa: BLE001
            rows.append((f"{name}: not measurable ({type(e).__name__})", float("nan")))
    if hasattr(jaxstats, "Monitor"):
        try:
            mon = jaxstats.Monitor()
            st = mon.init(n, 8)
            rows.append(("Monitor state (default, 8 features)", sketch.nbytes(st)))
        except Exception as e:  # noqa: BLE001
            rows.append((f"Monitor state: not measurable ({type(e).__name__})", float("nan")))
    return rows


# ---------------------------------------------------------------------------------------
# 4. Timing diagram
# ---------------------------------------------------------------------------------------


def plot_timing(latency: dict, path: str) -> list[str]:
    """Gantt chart of one monitor step per fleet size from latency.json stage times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = latency.get("stages_by_agents") or {}
    lines = []
    if not sizes:
        return ["(no per-stage timings found in latency.json)"]
    fig, axes = plt.subplots(len(sizes), 1, figsize=(9, 1.9 * len(sizes) + 0.6), squeeze=False)
    for ax, (agents, stages) in zip(axes[:, 0], sorted(sizes.items(), key=lambda kv: int(kv[0]))):
        t = 0.0
        total = sum(stages.values())
        crit = max(stages, key=stages.get)
        for i, (stage, sec) in enumerate(stages.items()):
            ax.barh(0, sec * 1e6, left=t * 1e6, color="C3" if stage == crit else f"C{i % 3}", edgecolor="k")
            ax.text((t + sec / 2) * 1e6, 0, stage, ha="center", va="center", fontsize=7, rotation=0)
            t += sec
        n_agents = int(agents)
        ax.axvline(1000, color="r", ls="--", lw=1)
        ax.text(1000, 0.45, "1 ms tier", color="r", fontsize=7)
        ax.set_xscale("log")
        ax.set_yticks([])
        per_agent = total / max(n_agents, 1) * 1e9
        ax.set_title(
            f"{n_agents:,} agents: step {fmt_time(total)}; {per_agent:,.0f} ns per agent "
            f"(<1 us tier), critical stage: {crit}",
            fontsize=8,
        )
        ax.set_xlim(left=max(1.0, min(v for v in stages.values() if v > 0) * 1e6 / 3))
        lines.append(f"| {n_agents:,} | {fmt_time(total)} | {per_agent:,.1f} ns | {crit} |")
    axes[-1, 0].set_xlabel("time within one step (us, log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full benchmark sizes (slow)")
    ap.add_argument("--skip-benches", action="store_true", help="only the measurements made here")
    ap.add_argument("--timeout", type=int, default=1800, help="per-benchmark timeout (s)")
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    md = ["# jaxstats performance review", "", f"Generated by `python experiments/report.py{' --full' if args.full else ''}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "", machine_line(), f"Native kernels: {jaxstats._native.status()}", ""]

    bench_out = {}
    if not args.skip_benches:
        for script, title in BENCHES:
            print(f"[report] running {script} ...", flush=True)
            out, secs, rc = run_bench(script, args.full, args.timeout)
            bench_out[script] = (title, out, secs, rc)
            with open(os.path.join(RESULTS, script.replace(".py", ".txt")), "w") as f:
                f.write(out)

    print("[report] optimization ladder ...", flush=True)
    md += ["## 1. Profile", "", "### Optimization ladder: percentile of every agent among n = 10,000 (float32, medians)", ""]
    lad = ladder(10**4)
    base = lad[0][1]
    md += ["| implementation | time | speed-up vs naive |", "|---|---|---|"]
    md += [f"| {name} | {fmt_time(t)} | {base / t:,.0f}x |" for name, t in lad]
    md += [""]
    lat_path = os.path.join(RESULTS, "latency.json")
    latency = {}
    if os.path.exists(lat_path):
        with open(lat_path) as f:
            latency = json.load(f)
        md += ["### Monitor step: per-stage time (from experiments/bench_latency.py)", ""]
        for agents, stages in sorted((latency.get("stages_by_agents") or {}).items(), key=lambda kv: int(kv[0])):
            total = sum(stages.values())
            md += [f"{int(agents):,} agents:", "", "| stage | time | share |", "|---|---|---|"]
            md += [f"| {k} | {fmt_time(v)} | {100 * v / total:.0f}% |" for k, v in stages.items()]
            md += [""]

    print("[report] scaling curves ...", flush=True)
    curves = scaling_curves(args.full)
    plot_scaling(curves, os.path.join(RESULTS, "scaling.png"))
    md += ["## 2. Scaling", "", "![scaling](scaling.png)", "", "| statistic | n | naive | jaxstats | speed-up |", "|---|---|---|---|---|"]
    for name, rows in curves.items():
        for n, tn, tf in rows:
            md.append(f"| {name} | {n:,} | {fmt_time(tn) if math.isfinite(tn) else '-'} | {fmt_time(tf)} | {f'{tn / tf:,.0f}x' if math.isfinite(tn) else '-'} |")
    md += [""]
    md += [f"Fitted log-log slopes (n >= 1e3): " + "; ".join(f"{name}: jaxstats {fit_slope([r[0] for r in rows], [r[2] for r in rows]):.2f}, naive {fit_slope([r[0] for r in rows], [r[1] for r in rows]):.2f}" for name, rows in curves.items()), ""]

    print("[report] memory ...", flush=True)
    mem = memory_rows()
    md += ["## 3. Memory", "", "| state | bytes per agent | vs 30 MB prototype | agents per GB | agents per 141 GB GPU |", "|---|---|---|---|---|"]
    for name, b in mem:
        if math.isfinite(b):
            md.append(f"| {name} | {b:,.0f} | {PROTOTYPE_BYTES_PER_AGENT / b:,.0f}x less | {1e9 / b:,.0f} | {141e9 / b:,.0f} |")
        else:
            md.append(f"| {name} | - | - | - | - |")
    md += [""]

    md += ["## 4. Timing diagram", ""]
    if latency:
        lines = plot_timing(latency, os.path.join(RESULTS, "timing.png"))
        md += ["![timing](timing.png)", "", "| agents | step | per agent | critical stage |", "|---|---|---|---|"] + lines + [""]
    else:
        md += ["(experiments/results/latency.json not found: run experiments/bench_latency.py)", ""]

    if bench_out:
        md += ["## Benchmark outputs", ""]
        for script, (title, out, secs, rc) in bench_out.items():
            md += [f"### {title}: `python experiments/{script}{'' if args.full else ' --quick'}` ({secs:.0f} s, exit {rc})", "", "```", out.strip()[-12000:], "```", ""]
    with open(os.path.join(RESULTS, "REPORT.md"), "w") as f:
        f.write("\n".join(md))
    print(f"[report] wrote {os.path.join(RESULTS, 'REPORT.md')}")


if __name__ == "__main__":
    main()
