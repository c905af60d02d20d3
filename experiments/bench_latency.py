"""Latency of jaxstats.Monitor: step p50/p99, dispatch floor, per-stage breakdown, amortized cost.

    python experiments/bench_latency.py --quick   # < 1 min
    python experiments/bench_latency.py           # < 10 min

* Step latency at 1,000 agents x 8 features over >= 1,000 steps: the wall time from handing the
  step a host numpy array of observations to having the alarms back on the host (host ->
  device, the fused donated step, device -> host), plus the same with observations already on
  the device. Requirement p99 < 1 ms; goal 200 us.
* Dispatch overhead: an empty jitted call (identity on a scalar), measured the same way.
* Per-stage breakdown (host -> device, self-baseline, population ranks, evidence, decision),
  each stage jitted alone on realistic inputs: the numbers for the timing diagram. Stages
  timed alone each pay one dispatch, so their sum exceeds the fused step.
* Amortized cost at 10^6 agents x 8 features: fused step / (agents x features) (requirement
  < 100 ns) and fused step / agents, the per-agent decision cost (requirement < 1 us).

Every time is reported as wall time and as this process's CPU time: on a shared machine the
wall time includes waiting for a core (the load average is printed), the CPU time does not.

CPU async dispatch is switched off (``jax_cpu_enable_async_dispatch=False``): it moves outputs of
~500+ elements to a worker thread and adds 5-30 us at this size (see MEASURED.md). XLA:CPU runs
single-threaded (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) unless
``--multi-thread`` is given: its thread pool dominates the p99 on a busy machine. Results are
printed as tables and saved to experiments/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# XLA:CPU splits large loops over its intra-op thread pool; on a busy 2-core machine waking
# those threads costs milliseconds at the tail (measured here: p99 12 ms with the pool, 0.47 ms
# without, at 1,000 x 8). Latency runs single-threaded unless --multi-thread is given; the flags
# must be set before JAX starts its backend.
if "--multi-thread" not in sys.argv:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_cpu_enable_async_dispatch", False)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import fmt_time, machine_line, print_table  # noqa: E402

from jaxstats.monitor import Monitor  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Clock:
    """Wall time and this process's CPU time (all threads) of a timed region.

    On a shared machine the wall time includes waiting for a core; the CPU time does not, so
    it estimates the cost on an idle machine (an upper bound when XLA uses both cores).
    """

    def __init__(self):
        self.wall, self.cpu = [], []

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall.append(time.perf_counter() - self._w)
        self.cpu.append(time.process_time() - self._c)


def _pcts(clock: Clock) -> dict:
    ts, cs = np.asarray(clock.wall), np.asarray(clock.cpu)
    return {
        "p50_s": float(np.percentile(ts, 50)),
        "p90_s": float(np.percentile(ts, 90)),
        "p99_s": float(np.percentile(ts, 99)),
        "max_s": float(ts.max()),
        "cpu_p50_s": float(np.percentile(cs, 50)),
        "cpu_p99_s": float(np.percentile(cs, 99)),
        "n": int(ts.size),
    }


def _time_calls(fn, args_list, warmup=3) -> Clock:
    """Per-call times of ``fn(*args)`` (blocked), cycling through ``args_list``."""
    for i in range(warmup):
        jax.block_until_ready(fn(*args_list[i % len(args_list)]))
    clock = Clock()
    for a in args_list:
        with clock:
            jax.block_until_ready(fn(*a))
    return clock


def dispatch_floor(n_calls: int) -> dict:
    noop = jax.jit(lambda x: x)
    x = jnp.float32(1.0)
    return _pcts(_time_calls(noop, [(x,)] * n_calls, warmup=50))


DECISION = ("alarm", "log_odds", "top_feature")


def step_latency(monitor: Monitor, n_agents: int, n_features: int, n_steps: int, seed: int = 0) -> dict:
    """The streaming loop as a service runs it: host obs in, host alarms out, donated state.

    ``lean``: the step returns only the decision fields (``jit_step(fields=DECISION)``);
    ``full``: the whole :class:`Report` (per-feature scores, LLRs, percentiles) is computed.
    """
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, 0.5, (n_agents, n_features)).astype(np.float32)
    warm = monitor.warmup + 8
    obs = (10.0 + rng.standard_t(4, (warm + n_steps, n_agents, n_features)).astype(np.float32)) * scale
    out = {}
    on_dev = [jax.device_put(obs[warm + (t % 64)]) for t in range(64)]
    jax.block_until_ready(on_dev)
    for kind, step in (("lean", monitor.jit_step(fields=DECISION)), ("full", monitor.jit_step())):
        state = monitor.init(n_agents, n_features)
        for t in range(warm):  # compile, warm up the baselines
            state, rep = step(state, jnp.asarray(obs[t]))
        jax.block_until_ready(rep)
        host, device = Clock(), Clock()
        for t in range(warm, warm + n_steps):
            with host:
                state, rep = step(state, jnp.asarray(obs[t]))
                alarm = np.asarray(rep["alarm"] if kind == "lean" else rep.alarm)  # on the host
        assert alarm.shape == (n_agents,)
        for t in range(n_steps):
            with device:
                state, rep = step(state, on_dev[t % 64])
                jax.block_until_ready(rep)
        out[f"{kind}_host_to_host"] = _pcts(host)
        out[f"{kind}_device_only"] = _pcts(device)
    return out


def stage_breakdown(monitor: Monitor, n_agents: int, n_features: int, repeats: int, seed: int = 1) -> dict:
    """Each stage jitted alone, on the inputs the previous stage produced (median and p99)."""
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, 0.5, (n_agents, n_features)).astype(np.float32)
    x_host = ((10.0 + rng.standard_t(4, (n_agents, n_features)).astype(np.float32)) * scale)
    step = monitor.jit_step()
    state = monitor.init(n_agents, n_features)
    for t in range(monitor.warmup + 2):
        state, _ = step(state, jnp.asarray(x_host * np.float32(1.0 + 0.01 * t)))
    state = jax.block_until_ready(state)

    def prep_self(st, obs):
        x, valid = monitor._prepare("bench", st, obs, None)
        z, base = monitor.self_baseline(st, x, valid)
        return z, base, valid & (st.count >= monitor.warmup)

    f_self = jax.jit(prep_self)
    f_pop = jax.jit(monitor.population_scores)
    f_ev = jax.jit(monitor.evidence)
    f_dec = jax.jit(monitor.decide)
    x_dev = jax.block_until_ready(jax.device_put(x_host))
    z, base, scored = jax.block_until_ready(f_self(state, x_dev))
    score, pct = jax.block_until_ready(f_pop(z, scored))
    llr, log_e = jax.block_until_ready(f_ev(score, scored))

    res = {}
    res["host_to_device"] = _pcts(_time_calls(jax.device_put, [(x_host,)] * repeats))
    res["self_baseline"] = _pcts(_time_calls(f_self, [(state, x_dev)] * repeats))
    res["population_ranks"] = _pcts(_time_calls(f_pop, [(z, scored)] * repeats))
    res["evidence"] = _pcts(_time_calls(f_ev, [(score, scored)] * repeats))
    res["decision"] = _pcts(_time_calls(f_dec, [(state, base, z, score, pct, llr, log_e)] * repeats))
    for key, fn in (("fused_step_full", step), ("fused_step_lean", monitor.jit_step(fields=DECISION))):
        fused = Clock()
        for _ in range(2):
            state, rep = fn(state, x_dev)
        jax.block_until_ready(rep)
        for _ in range(repeats):
            with fused:
                state, rep = fn(state, x_dev)
                jax.block_until_ready(rep)
        res[key] = _pcts(fused)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats (< 1 min)")
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--small-agents", type=int, default=1000)
    ap.add_argument("--big-agents", type=int, default=1_000_000)
    ap.add_argument("--multi-thread", action="store_true", help="keep XLA:CPU's intra-op thread pool")
    args = ap.parse_args(argv)
    n_steps = 1000 if args.quick else 5000
    rep_small = 200 if args.quick else 1000
    rep_big = 3 if args.quick else 10
    feats = args.features

    threads = "XLA intra-op thread pool on" if args.multi_thread else "XLA single-threaded"
    print(f"jaxstats.Monitor latency (CPU async dispatch off, {threads})")
    print(machine_line())
    la = os.getloadavg()
    print(f"load average at the start: {la[0]:.1f} (1 min) on {os.cpu_count()} cores; wall times on a shared "
          "machine include waiting for a core, CPU times (this process, all threads) do not")
    out_load = la
    monitor = Monitor()
    print(f"monitor: {monitor.config()}")
    out = {
        "machine": machine_line(),
        "monitor": monitor.config(),
        "quick": args.quick,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_start": out_load,
    }

    out["dispatch"] = dispatch_floor(2000 if args.quick else 10000)
    lat = step_latency(monitor, args.small_agents, feats, n_steps)
    out["step_latency"] = {"agents": args.small_agents, "features": feats, **lat}
    d = out["dispatch"]
    print(f"\nStep latency, {args.small_agents:,} agents x {feats} features, {n_steps:,} steps:")
    def row(label, p):
        return [label, fmt_time(p["p50_s"]), fmt_time(p["p90_s"]), fmt_time(p["p99_s"]), fmt_time(p["max_s"]),
                fmt_time(p["cpu_p50_s"]), fmt_time(p["cpu_p99_s"])]

    rows = [row("empty jitted call (dispatch floor)", d)]
    for key, label in (
        ("lean_host_to_host", "lean step: host obs -> host alarms"),
        ("lean_device_only", "lean step: obs already on device"),
        ("full_host_to_host", "full-report step: host obs -> host alarms"),
        ("full_device_only", "full-report step: obs already on device"),
    ):
        rows.append(row(label, lat[key]))
    print_table(["what", "wall p50", "wall p90", "wall p99", "wall max", "CPU p50", "CPU p99"], rows)
    print("(lean: the step returns alarm, log_odds, top_feature; full: the whole Report)")
    p99 = lat["lean_host_to_host"]["p99_s"]
    c99 = lat["lean_host_to_host"]["cpu_p99_s"]
    print(
        f"requirement p99 < 1 ms: wall {fmt_time(p99)} ({'met' if p99 < 1e-3 else 'NOT met'}), "
        f"CPU {fmt_time(c99)} ({'met' if c99 < 1e-3 else 'NOT met'}); goal 200 us: wall "
        f"{'met' if p99 < 2e-4 else 'not met'}, CPU {'met' if c99 < 2e-4 else 'not met'}"
    )

    out["stages"] = {}
    for n, reps in ((args.small_agents, rep_small), (args.big_agents, rep_big)):
        t0 = time.perf_counter()
        st = stage_breakdown(monitor, n, feats, reps)
        out["stages"][f"{n}x{feats}"] = {"agents": n, "features": feats, "repeats": reps, **st}
        print(f"\nPer-stage breakdown, {n:,} agents x {feats} features (each stage jitted alone; median of {reps}):")
        rows = []
        for key, label in (
            ("host_to_device", "host -> device (obs)"),
            ("self_baseline", "1 self-baseline (robust EWMA z)"),
            ("population_ranks", "2 population ranks (percentile, median, MAD)"),
            ("evidence", "3 evidence (tail prob -> LLR -> e-value)"),
            ("decision", "4 decision (CUSUM, alarms, top feature)"),
            ("fused_step_full", "fused donated step, full Report (1-4)"),
            ("fused_step_lean", "fused donated step, decision fields only"),
        ):
            p = st[key]
            rows.append([
                label, fmt_time(p["p50_s"]), fmt_time(p["p99_s"]), fmt_time(p["cpu_p50_s"]),
                f"{p['cpu_p50_s'] / (n * feats) * 1e9:.2f} ns", f"{p['cpu_p50_s'] / n * 1e9:.1f} ns",
            ])
        print_table(["stage", "wall p50", "wall p99", "CPU p50", "CPU per agent-feature", "CPU per agent"], rows)
        print(f"(measured in {time.perf_counter() - t0:.1f} s)")

    stages_big = out["stages"][f"{args.big_agents}x{feats}"]
    big = stages_big["fused_step_lean"]["p50_s"]
    big_full = stages_big["fused_step_full"]["p50_s"]
    big_cpu = stages_big["fused_step_lean"]["cpu_p50_s"]
    per_af = big / (args.big_agents * feats)
    per_agent = big / args.big_agents
    per_af_cpu = big_cpu / (args.big_agents * feats)
    per_agent_cpu = big_cpu / args.big_agents
    out["amortized"] = {
        "agents": args.big_agents,
        "features": feats,
        "step_s": big,
        "step_full_report_s": big_full,
        "per_agent_feature_ns": per_af * 1e9,
        "per_agent_decision_ns": per_agent * 1e9,
        "step_cpu_s": big_cpu,
        "per_agent_feature_cpu_ns": per_af_cpu * 1e9,
        "per_agent_decision_cpu_ns": per_agent_cpu * 1e9,
    }
    out["load_average_end"] = os.getloadavg()
    print(
        f"\nAmortized at {args.big_agents:,} agents x {feats} features (lean fused step {fmt_time(big)}; "
        f"with the full per-feature Report {fmt_time(big_full)} = {big_full / (args.big_agents * feats) * 1e9:.1f} ns "
        "per agent-feature):"
    )
    print_table(
        ["quantity", "wall", "CPU time", "requirement", "status (wall / CPU)"],
        [
            ["per agent-feature update", f"{per_af * 1e9:.1f} ns", f"{per_af_cpu * 1e9:.1f} ns", "< 100 ns",
             f"{'met' if per_af < 1e-7 else 'NOT met'} / {'met' if per_af_cpu < 1e-7 else 'NOT met'}"],
            ["per-agent decision (all stages)", f"{per_agent * 1e9:.0f} ns", f"{per_agent_cpu * 1e9:.0f} ns", "< 1 us",
             f"{'met' if per_agent < 1e-6 else 'NOT met'} / {'met' if per_agent_cpu < 1e-6 else 'NOT met'}"],
        ],
    )
    la = os.getloadavg()
    print(f"load average at the end: {la[0]:.1f} (1 min), {la[1]:.1f} (5 min) on {os.cpu_count()} cores")
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "latency.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"\nSaved {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
