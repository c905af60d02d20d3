"""Scaling of jaxstats over agents (10^4 -> 10^7, out of core past memory) and devices (1 -> 8).

Measures, on forced host CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``
in a subprocess, meshes of 1, 2, 4 and 8 of them):

* per-agent sketch updates (moments of 4 features, donated) through ``shard.agent_map``:
  agent-updates per second, strong scaling (fixed fleet) and weak scaling (fixed agents per
  device);
* the population baseline (percentile, robust z, median, MAD of one score per agent) with
  the ``gather`` (exact) and ``select`` (radix select) strategies;
* memory per device (XLA's per-device program: arguments + outputs + temporaries);
* ``merge_across`` cost vs device count (all-gather + fold of moments states; ``psum`` of a
  1024-bucket DDSketch histogram);
* an out-of-core fleet (10^7 agents default, 10^6 with ``--quick``) in ``numpy.memmap``
  files processed in blocks by ``ooc.map_agent_blocks`` (states written back), with its peak
  resident memory, plus ``ooc.blocked_population_baseline`` over a 10^7-agent score file;

and prints a paper projection to 10^8-10^9 agents on N H200 GPUs from the measured bytes per
agent and collective volumes.

**Read the device numbers with care**: this machine has 2 CPU cores, so 8 virtual devices
share 2 cores. Strong scaling past 2 devices cannot show speed-up here; what the tables show
is that sharding adds little overhead (per-agent work is local) and how the collective costs
grow. Absolute times also vary with other load on the machine.

Usage::

    python experiments/bench_scaling.py --quick    # < 1 min
    python experiments/bench_scaling.py            # < 10 min
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _timing import fmt_time, print_table  # noqa: E402

DEVICE_COUNTS = (1, 2, 4, 8)
FEATURES = 4

# ---------------------------------------------------------------------------------------------
# Worker: devices (runs with 8 forced host devices)
# ---------------------------------------------------------------------------------------------


def _time(fn, *args, repeats=5, warmup=1, donate_first=False):
    import jax

    args = list(args)
    for _ in range(warmup):
        out = jax.block_until_ready(fn(*args))
        if donate_first:
            args[0] = out
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        if donate_first:
            args[0] = out
    return float(np.median(times))


def _device_bytes(jitted, *args) -> int:
    """Per-device program memory (arguments + outputs + temporaries, minus aliased)."""
    m = jitted.lower(*args).compile().memory_analysis()
    if m is None:
        return -1
    return int(
        m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    )


def worker_devices(quick: bool) -> dict:
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from jaxstats import shard, sketch

    sk = sketch.moments()
    res: dict = {"updates": [], "baseline": [], "merge": [], "devices": jax.device_count()}
    sizes = (10**4, 10**5) if quick else (10**4, 10**5, 10**6)
    weak_per_dev = 25_000 if quick else 250_000
    reps = 3 if quick else 5
    res["sizes"], res["weak_per_dev"] = list(sizes), weak_per_dev
    rng = np.random.default_rng(0)

    def update_step(states, obs):
        return jax.vmap(sk.update)(states, obs)

    runs = {(n, d) for n in sizes for d in DEVICE_COUNTS}
    runs |= {(weak_per_dev * d, d) for d in DEVICE_COUNTS}  # weak scaling (shares some runs)
    for n, d in sorted(runs):
        mesh = shard.agent_mesh(jax.devices()[:d])
        one = sk.init(jax.ShapeDtypeStruct((FEATURES,), jnp.float32))
        states = jax.tree_util.tree_map(lambda a: np.zeros((n,) + a.shape, a.dtype), one)
        states = shard.shard_agents(states, mesh)
        obs = shard.shard_agents(rng.standard_normal((n, FEATURES)).astype(np.float32), mesh)
        step = jax.jit(shard.agent_map(update_step, mesh), donate_argnums=0)
        mem = _device_bytes(step, states, obs)
        t = _time(step, states, obs, repeats=reps, donate_first=True)
        res["updates"].append({"n": n, "d": d, "t": t, "mem": mem})
    bsizes = (10**5,) if quick else (10**5, 10**6)
    bdevs = (1, 8) if quick else DEVICE_COUNTS
    for n in bsizes:
        x = rng.lognormal(size=(n, 1)).astype(np.float32)
        for d in bdevs:
            mesh = shard.agent_mesh(jax.devices()[:d])
            xs = shard.shard_agents(x, mesh)
            for strat in ("gather", "select"):
                f = jax.jit(lambda v, s=strat, m=mesh: shard.sharded_population_baseline(v, m, strategy=s))
                mem = _device_bytes(f, xs)
                t = _time(f, xs, repeats=reps)
                res["baseline"].append({"n": n, "d": d, "strategy": strat, "t": t, "mem": mem})
    # merge_across cost vs device count
    mom = sketch.moments()
    dd = sketch.ddsketch(n_buckets=1024)
    spec = sketch.DDSketchState(counts="sum", min="min", max="max")
    for d in DEVICE_COUNTS:
        mesh = shard.agent_mesh(jax.devices()[:d])
        m_state = jax.vmap(lambda _: mom.init(jnp.zeros(64, jnp.float32)))(jnp.arange(d))
        m_state = jax.tree_util.tree_map(lambda a: a + 1.0, m_state)
        d_state = jax.vmap(lambda _: dd.init(jnp.zeros((), jnp.float32)))(jnp.arange(d))
        m_state, d_state = shard.shard_agents((m_state, d_state), mesh, n_agents=d)

        def tree_fn(s, schedule):
            own = jax.tree_util.tree_map(lambda a: a[0], s)
            return shard.merge_across(mom, own, "agents", schedule=schedule)

        def psum_fn(s):
            return shard.merge_across(dd, jax.tree_util.tree_map(lambda a: a[0], s), "agents", reduce=spec)

        cases = (
            ("butterfly (moments, 64 feat.)", functools.partial(tree_fn, schedule="butterfly"), m_state),
            ("gather+fold (moments, 64 feat.)", functools.partial(tree_fn, schedule="gather"), m_state),
            ("psum (DDSketch, 1024 buckets)", psum_fn, d_state),
        )
        for name, fn, st in cases:
            g = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=P("agents"), out_specs=P(), check_vma=False))
            t = _time(g, st, repeats=10 if quick else 50, warmup=3)
            res["merge"].append({"d": d, "what": name, "t": t})
    return res


# ---------------------------------------------------------------------------------------------
# Worker: out of core (1 device)
# ---------------------------------------------------------------------------------------------


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakRss:
    """Samples the resident set every 5 ms in a thread; ``.peak`` in MiB (ru_maxrss is a
    lifetime peak and would hide a region that stays below the import/compile peak)."""

    def __enter__(self):
        import threading

        self.peak = _current_rss_mb()
        self._stop = threading.Event()

        def run():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, _current_rss_mb())

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _current_rss_mb())


def worker_ooc(n: int, block: int, tmpdir: str) -> dict:
    import tracemalloc

    import jax
    import jax.numpy as jnp

    import jaxstats
    from jaxstats import ooc, sketch

    sk = sketch.moments()
    one = jax.eval_shape(sk.init, jax.ShapeDtypeStruct((2,), jnp.float32))
    states = ooc.open_memmaps(tmpdir, one, n)
    obs = np.memmap(os.path.join(tmpdir, "obs.raw"), np.float32, "w+", shape=(n, 2))
    chunk = 1 << 20
    rng = np.random.default_rng(0)
    for s in range(0, n, chunk):  # write the observations chunk by chunk
        e = min(s + chunk, n)
        obs[s:e] = rng.standard_normal((e - s, 2)).astype(np.float32)
    obs.flush()
    del obs
    obs = np.memmap(os.path.join(tmpdir, "obs.raw"), np.float32, "r", shape=(n, 2))
    state_bytes = sum(a.nbytes for a in jax.tree_util.tree_leaves(states))

    @jax.jit
    def block_step(blk, where):
        st, x = blk
        new = jax.vmap(lambda s, o: sk.update(s, o))(st, x)
        w = where[:, None]
        summary = {  # population summaries, merged across blocks by a reduce spec
            "n": jnp.sum(where, dtype=jnp.int32),
            "sum": jnp.sum(jnp.where(w, x, 0.0), axis=0),
            "max": jnp.max(jnp.where(w, x, -jnp.inf), axis=0),
        }
        return new, summary

    merge = {"n": "sum", "sum": "sum", "max": "max"}
    # warm-up on one block (compiles everything), then measure on the big fleet
    small = jax.tree_util.tree_map(lambda a: np.zeros((block,) + a.shape[1:], a.dtype), states)
    zeros = np.zeros((block, 2), np.float32)
    ooc.map_agent_blocks(block_step, (small, zeros), block_size=block, outputs=small, merge=merge)
    ooc.blocked_population_baseline(np.ones((block, 1), np.float32), block_size=block, strategy="select")
    score = _col0(obs, tmpdir, n)
    rss0 = _current_rss_mb()
    tracemalloc.start()
    with _PeakRss() as rss_step:
        t0 = time.perf_counter()
        summ = ooc.map_agent_blocks(block_step, (states, obs), block_size=block, outputs=states, merge=merge)
        t_step = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert int(summ["n"]) == n
    # exact out-of-core population median / MAD / z over the same fleet's feature 0
    outs = [np.memmap(os.path.join(tmpdir, f"{k}.raw"), np.float32, "w+", shape=(n, 1)) for k in "pz"]
    with _PeakRss() as rss_base:
        t0 = time.perf_counter()
        out = jaxstats.BaselineResult(outs[0], outs[1], None, None)
        b = ooc.blocked_population_baseline(score, block_size=block, strategy="select", out=out)
        t_base = time.perf_counter() - t0
    exact = float(np.median(np.asarray(score)))  # check (after the measurements): in memory
    assert float(b.median[0]) == np.float32(exact), (float(b.median[0]), exact)
    return {
        "n": n,
        "block": block,
        "state_bytes": state_bytes,
        "bytes_per_agent": state_bytes / n,
        "t_step": t_step,
        "py_peak_mb": py_peak / 2**20,
        "rss_before_mb": rss0,
        "rss_peak_mb": rss_step.peak,
        "rss_base_peak_mb": rss_base.peak,
        "t_baseline": t_base,
        "median": float(b.median[0]),
        "pop_max": float(summ["max"][0]),
    }


def _col0(obs, tmpdir, n):
    """Feature 0 of the observations as its own ``[n, 1]`` memmap (written chunk by chunk)."""
    col = np.memmap(os.path.join(tmpdir, "score.raw"), np.float32, "w+", shape=(n, 1))
    for s in range(0, n, 1 << 20):
        e = min(s + (1 << 20), n)
        col[s:e, 0] = obs[s:e, 0]
    col.flush()
    del col
    return np.memmap(os.path.join(tmpdir, "score.raw"), np.float32, "r", shape=(n, 1))


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _run_worker(argv: list[str], env_extra: dict, timeout: float) -> dict:
    env = dict(os.environ)
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *argv],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rate(n, t):
    r = n / t
    return f"{r / 1e6:.1f} M/s" if r >= 1e6 else f"{r / 1e3:.0f} k/s"


def _mb(b):
    return f"{b / 2**20:.1f} MiB" if b >= 0 else "n/a"


def report_devices(res: dict) -> None:
    ups = {(u["n"], u["d"]): u for u in res["updates"]}
    print("\nPer-agent sketch update (moments, 4 features, donated) via shard.agent_map: strong scaling")
    print("(fixed fleet; time per step, agent-updates/s, per-device program memory)")
    rows = []
    for n in res["sizes"]:
        base = ups[(n, 1)]["t"]
        for d in DEVICE_COUNTS:
            u = ups[(n, d)]
            speedup = f"{base / u['t']:.2f}x"
            rows.append([f"{n:,}", d, fmt_time(u["t"]), _rate(n, u["t"]), speedup, _mb(u["mem"])])
    print_table(["agents", "devices", "step", "agent-updates/s", "speed-up vs 1", "memory/device"], rows)
    print("\nWeak scaling (fixed agents per device)")
    rows = []
    w = res["weak_per_dev"]
    t1 = ups[(w, 1)]["t"]
    for d in DEVICE_COUNTS:
        u = ups[(w * d, d)]
        eff = f"{t1 / u['t']:.2f}"
        rows.append([d, f"{w * d:,}", f"{w:,}", fmt_time(u["t"]), _rate(w * d, u["t"]), eff, _mb(u["mem"])])
    heads = ["devices", "agents", "agents/device", "step", "agent-updates/s", "efficiency t1/td"]
    print_table(heads + ["memory/device"], rows)
    print("\nPopulation baseline of one score per agent (percentile + robust z + median + MAD)")
    rows = []
    for b in res["baseline"]:
        t, n = b["t"], b["n"]
        rows.append([f"{n:,}", b["d"], b["strategy"], fmt_time(t), _rate(n, t), _mb(b["mem"])])
    print_table(["agents", "devices", "strategy", "time", "agents/s", "memory/device"], rows)
    print("\nmerge_across cost vs device count (one replicated result per call; 8 devices share 2 cores)")
    rows = []
    for what in dict.fromkeys(m["what"] for m in res["merge"]):
        ms = {m["d"]: m["t"] for m in res["merge"] if m["what"] == what}
        cores = os.cpu_count() or 1
        for d in DEVICE_COUNTS:
            growth = f"{ms[d] / ms[2]:.2f}" if d >= 2 else "-"
            # d virtual devices run their (equal) shares of the merge on `cores` cores: past
            # `cores` devices the wall time also grows by d / cores from oversubscription alone.
            share = f"{ms[d] / ms[2] * 2 / d:.2f}" if d >= 2 and cores <= 2 else "-"
            rounds = "1" if "psum" in what else ("log2(d)" if "butterfly" in what else "1 + fold of d")
            rows.append([what, d, fmt_time(ms[d]), growth, share, f"{math.log2(d):.0f}" if d > 1 else "-", rounds])
    print_table(["merge", "devices", "time/call", "t(d)/t(2)", "t(d)/t(2) x 2/d (per-core share)",
                 "log2(d) (goal bound)", "rounds per device"], rows)
    print("  per-core share: the measured growth divided by the oversubscription d/2 of 8 virtual devices on "
          "2 cores (an estimate of the growth with one core per device, not a measurement of it).")


def report_ooc(o: dict) -> None:
    print("\nOut of core: fleet states in numpy.memmap files, processed in agent blocks (1 device)")
    rows = [[
        f"{o['n']:,}", f"{o['block']:,}", f"{o['bytes_per_agent']:.0f} B", _mb(o["state_bytes"]),
        f"{o['t_step']:.2f} s", _rate(o["n"], o["t_step"]), f"{o['rss_peak_mb'] - o['rss_before_mb']:.0f} MiB",
        f"{o['py_peak_mb']:.1f} MiB", f"{o['t_baseline']:.2f} s",
        f"{o['rss_base_peak_mb'] - o['rss_before_mb']:.0f} MiB",
    ]]  # fmt: skip
    print_table(
        ["agents", "block", "state/agent", "states on disk", "step (read+update+write)", "agent-updates/s",
         "peak RSS growth", "peak numpy (tracemalloc)", "exact median/MAD/z (5 passes)", "its RSS growth"],
        rows,
    )  # fmt: skip
    print(f"  block = {o['block']:,} agents = {o['block'] * o['bytes_per_agent'] / 2**20:.0f} MiB of state; "
          f"population median {o['median']:.6g} (exact, checked against np.median), "
          f"max over blocks {o['pop_max']:.4g}")


def projection(res: dict, o: dict) -> None:
    """Paper projection for 10^8-10^9 agents on N H200 GPUs (printed; assumptions named)."""
    import jax
    import jax.numpy as jnp

    from jaxstats import sketch

    feats = 8
    configs = {
        "light": sketch.combine(m=sketch.moments(), e=sketch.ewma(half_life=32)),
        "full": sketch.combine(
            m=sketch.moments(), e=sketch.ewma(half_life=32), q=sketch.ddsketch(n_buckets=256)
        ),
    }
    ex = jax.ShapeDtypeStruct((feats,), jnp.float32)
    sizes = {k: sketch.nbytes(jax.eval_shape(sk.init, ex), batched=False) for k, sk in configs.items()}
    obs_agent = feats * 4
    hbm, usable = 141e9, 0.8
    hbm_bw, nvlink, ib = 4.8e12, 450e9, 50e9  # B/s: HBM3e; NVLink per direction; 400 Gb/s IB
    print("\nProjection to 10^8-10^9 agents on N H200 GPUs (paper estimate from measured sizes, not a run)")
    print(f"  per-agent state over {feats} features, from the sketches' shapes: light = moments + EWMA "
          f"{sizes['light']:.0f} B; full = + 256-bucket DDSketch per feature {sizes['full']:.0f} B;")
    print(f"  + {obs_agent} B of observations per step. (CPU out-of-core run above: {o['bytes_per_agent']:.0f} B/agent.)")
    print(f"  assumptions: {hbm / 1e9:.0f} GB HBM per GPU, {usable:.0%} usable; HBM {hbm_bw / 1e12:.1f} TB/s; "
          f"NVLink {nvlink / 1e9:.0f} GB/s per direction (<= 8 GPUs); {ib / 1e9:.0f} GB/s per GPU across")
    print("  nodes. The update is memory-bound (read + write each state once per step). The gather baseline")
    print("  needs ~16 B per agent per score on every GPU (gathered copy + sort buffers); select needs O(n/d).")
    sel_bytes = 4 * 2 * (1 << 16) * 4  # median + MAD: 4 passes x 2 targets x 2^16 bins x 4 B, per score
    rows = []
    for cfg, s_agent in sizes.items():
        for n in (10**8, 10**9):
            for g in (1, 8, 64, 512):
                per = n / g
                state_mem = per * (s_agent + obs_agent)
                fits = state_mem <= hbm * usable
                fits_gather = state_mem + n * 16 <= hbm * usable
                t_upd = per * (2 * s_agent + obs_agent) / hbm_bw
                link = nvlink if g <= 8 else ib
                t_gather = (n - per) * 4 / link if g > 1 else 0.0
                t_select = sel_bytes * 2 * math.log2(g) / link if g > 1 else 0.0
                blocks = math.ceil(state_mem / (hbm * usable))
                rows.append([
                    cfg, f"{n:.0e}", g, f"{state_mem / 1e9:,.1f} GB",
                    "yes" if fits else f"no: {blocks} host blocks", "yes" if fits_gather else "no -> select",
                    f"{t_upd * 1e3:,.1f} ms", f"{t_gather * 1e3:.2f} ms" if g > 1 else "-",
                    f"{t_select * 1e6:.0f} us" if g > 1 else "-",
                ])  # fmt: skip
    print_table(
        ["state", "agents", "GPUs", "state+obs/GPU", "fits in HBM", "gather baseline fits",
         "update/step (HBM-bound)", "gather comm/score", "select comm/score"],
        rows,
    )  # fmt: skip
    by = {}
    for m in res["merge"]:
        by.setdefault(m["what"], {})[m["d"]] = m["t"]
    print("  merges: butterfly = log2(d) rounds of one state-sized message + one merge per round; psum = one")
    print("  all-reduce of the histogram (ring or tree: ~2x its bytes per GPU, log2(d) latency terms). A merged")
    print("  4 KiB histogram or a ~0.5 KB moments state is latency-bound on GPUs (~10-30 us per round on")
    print("  NVLink): ~0.1 ms at 512 GPUs, negligible next to the HBM-bound update. Measured here (2 cores),")
    for what, t in by.items():
        print(f"    {what}: " + ", ".join(f"{d} dev {fmt_time(v)}" for d, v in sorted(t.items())))
    print("  Past HBM (the 'host blocks' rows) states stream from host memory in agent blocks")
    print("  (ooc.map_agent_blocks): then PCIe 5 / NVLink-C2C (~64-450 GB/s), not HBM, bounds the step.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    ap.add_argument("--worker", choices=("devices", "ooc"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--agents", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--block", type=int, default=1 << 18, help="agents per out-of-core block")
    args = ap.parse_args()
    if args.worker == "devices":
        print(json.dumps(worker_devices(args.quick)))
        return
    if args.worker == "ooc":
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(worker_ooc(args.agents, args.block, d)))
        return
    t0 = time.perf_counter()
    import jax

    from _timing import machine_line

    print(machine_line())
    print(f"device runs: 8 forced host CPU devices sharing {os.cpu_count()} cores (meshes of 1/2/4/8); "
          f"load average at start {os.getloadavg()[0]:.1f} (other processes share these cores)")
    print("times: medians of 3 (--quick) / 5 repeats after warm-up, compile excluded")
    res = _run_worker(
        ["--worker", "devices"] + (["--quick"] if args.quick else []),
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
        timeout=900,
    )
    n_ooc = 10**6 if args.quick else 10**7
    o = _run_worker(["--worker", "ooc", "--agents", str(n_ooc), "--block", str(args.block)], {}, timeout=900)
    report_devices(res)
    report_ooc(o)
    projection(res, o)
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s (load average now {os.getloadavg()[0]:.1f})")
    del jax


if __name__ == "__main__":
    main()
