"""Memory, update speed and accuracy of the per-agent sketches (issue 5).

    python experiments/bench_memory.py            # full run (< 10 min on the 2-core CPU)
    python experiments/bench_memory.py --quick    # smaller sizes (~1 min)
    python experiments/bench_memory.py --data ../shared/data/nab

Tables:
1. bytes per agent of agent states (8 features: moments + quantile sketch + evidence
   accumulator), against the 30 MB of raw history per agent of the prototype;
2. ns per agent-update of one jitted, donated step at 10^4, 10^5, 10^6 agents, next to a numpy
   in-place implementation of the same arithmetic;
3. accuracy and size against the peers (datasketches KLL k=200, DataDog ddsketch alpha=1%;
   optional oracles installed for the benchmark only) on synthetic and real NAB streams: rank
   error and relative value error at q = 0.01 ... 0.999, bytes per stream, items/s.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repo root: import jaxstats from the checkout
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _timing import machine_line, print_table, timeit  # noqa: E402

from jaxstats import sketch  # noqa: E402

F = 8  # features per agent
RAW_BYTES = 30 * 2**20  # the prototype's raw history per agent
QS = np.array([0.01, 0.1, 0.5, 0.9, 0.99, 0.999])
DEFAULT_NAB = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "nab"))


# --------------------------------------------------------------------------------------------
# Agent states
# --------------------------------------------------------------------------------------------


def evidence_part():
    try:
        from jaxstats.sketch.evidence import log_evidence
    except ImportError:
        print("note: jaxstats.sketch.evidence is not available; states are shown without it.")
        return None
    return log_evidence()


def agent_states():
    """name -> (combined sketch, example dict) for the agent states compared."""
    ev = evidence_part()
    extra = {"evidence": ev} if ev is not None else {}
    dd_small = sketch.ddsketch(0.05, n_buckets=112, min_value=1e-2, signed=False)
    parts = {
        "default (<= 4 KB)": dict(moments=sketch.moments(), quantile=dd_small, **extra),
        "compact (<= 1 KB)": dict(quantile=sketch.momentsketch(6), **extra),
        "alpha=1% per feature": dict(moments=sketch.moments(), quantile=sketch.ddsketch(0.01), **extra),
    }
    return {
        name: (sketch.combine(**p), {n: (jnp.zeros(()) if n == "evidence" else jnp.zeros(F)) for n in p})
        for name, p in parts.items()
    }


def state_bytes(sk, ex, n_agents=4):
    """Bytes per agent from shapes only (no allocation)."""
    return sketch.nbytes(jax.eval_shape(jax.vmap(lambda _: sk.init(ex)), jnp.zeros(n_agents)))


def bytes_table(states):
    rows = []
    for name, (sk, ex) in states.items():
        shapes = jax.eval_shape(jax.vmap(lambda _: sk.init(ex)), jnp.zeros(4))
        per_agent = sketch.nbytes(shapes)
        detail = ", ".join(f"{k} {sketch.nbytes(v):.0f}" for k, v in shapes.items())
        rows.append(
            [
                name,
                detail,
                f"{per_agent:,.0f}",
                f"{RAW_BYTES / per_agent:,.0f}x",
                "yes" if per_agent <= 4096 else "no",
            ]
        )
    print("\n## 1. Bytes per agent (8 features; nbytes of a batched state / agents)\n")
    print_table(["agent state", "parts (bytes)", "bytes/agent", "vs 30 MB raw", "<= 4 KB"], rows)
    print(
        "\nparts: default = moments + ddsketch(alpha=5%, 112 uint32 buckets, [0.01, 605], "
        "unsigned) per feature + one log-evidence accumulator; compact = momentsketch(k=6) per "
        "feature (it also carries count, mean and central moments 2..6) + evidence; a 1% "
        "relative-error ddsketch (1024 buckets = 4 KB) per feature needs ~33 KB per agent."
    )


# --------------------------------------------------------------------------------------------
# Update speed
# --------------------------------------------------------------------------------------------


def _states_for(sk, ex, n):
    return jax.jit(jax.vmap(lambda _: sk.init(ex)))(jnp.zeros(n))


def time_jax_update(sk, ex, xs, n, repeats):
    states = _states_for(sk, ex, n)
    step = jax.jit(jax.vmap(sk.update), donate_argnums=0)
    box = [states]

    def run():
        box[0] = step(box[0], xs)
        return box[0]

    t = timeit(run, repeats=repeats, warmup=2)
    del box
    return t


class NumpyGroup:
    """numpy in-place updates of the same arithmetic, vectorized over agents."""

    @staticmethod
    def _two_sum(a, b):
        s = a + b
        bb = s - a
        return s, (a - (s - bb)) + (b - bb)

    @classmethod
    def _dw_add(cls, hi, lo, b):
        s, e = cls._two_sum(hi, b)
        e += lo
        np.add(s, e, out=hi)
        np.subtract(e, hi - s, out=lo)

    @classmethod
    def moments(cls, n):
        z = lambda: np.zeros((n, F), np.float32)  # noqa: E731
        st = {k: z() for k in ("c", "cl", "mu", "mul", "m2", "m2l", "m3", "m3l", "m4", "m4l")}

        def step(x):
            wa = st["c"] + st["cl"]
            r = 1.0 / (wa + 1.0)
            q = wa * r
            delta = (x - st["mu"]) - st["mul"]
            d = delta * r
            m2, m3 = st["m2"] + st["m2l"], st["m3"] + st["m3l"]
            d2 = delta * delta
            inc4 = d2 * d2 * q * (q * q * q + r * r * r) + 6.0 * d * d * m2 - 4.0 * d * m3
            inc3 = d2 * delta * q * (q - r) - 3.0 * d * m2
            inc2 = d2 * q
            cls._dw_add(st["m4"], st["m4l"], inc4)
            cls._dw_add(st["m3"], st["m3l"], inc3)
            cls._dw_add(st["m2"], st["m2l"], inc2)
            cls._dw_add(st["mu"], st["mul"], d)
            cls._dw_add(st["c"], st["cl"], np.float32(1.0))

        return step

    @staticmethod
    def ewma(n, lam=2.0 ** (-1 / 100)):
        w, m, m2 = (np.zeros((n, F), np.float32) for _ in range(3))
        lam = np.float32(lam)

        def step(x):
            np.multiply(w, lam, out=w)
            d = x - m
            frac = w / (w + 1.0)
            np.add(w, 1.0, out=w)
            np.add(m, d / w, out=m)
            np.multiply(m2, lam, out=m2)
            d *= d
            d *= frac
            np.add(m2, d, out=m2)

        return step

    @staticmethod
    def ddsketch(n, alpha=0.05, n_buckets=112, min_value=1e-2):
        log_gamma = np.log1p(2 * alpha / (1 - alpha))
        key_lo = np.ceil(np.log(min_value) / log_gamma - 1e-9)
        counts = np.zeros((n, F, n_buckets), np.uint32)
        flat = counts.reshape(-1)
        mn = np.full((n, F), np.inf, np.float32)
        mx = np.full((n, F), -np.inf, np.float32)
        base = (np.arange(n * F) * n_buckets).reshape(n, F)

        def step(x):
            pos = x > 0
            key = np.ceil(np.log(np.where(pos, x, 1.0)) * np.float32(1 / log_gamma)) - key_lo
            idx = np.where(pos, 1 + np.clip(key, 0, n_buckets - 2), 0).astype(np.int64)
            flat[base + idx] += 1  # unique indices: one bucket per (agent, feature)
            np.minimum(mn, x, out=mn)
            np.maximum(mx, x, out=mx)

        return step

    @classmethod
    def evidence(cls, n):
        hi, lo, c, cl = (np.zeros(n, np.float32) for _ in range(4))

        def step(x):
            cls._dw_add(hi, lo, x)
            cls._dw_add(c, cl, np.float32(1.0))

        return step


def time_numpy(step, x, repeats):
    for _ in range(2):
        step(x)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def speed_table(sizes, repeats, max_state_gb):
    ev = evidence_part()
    groups = [
        ("moments x8", sketch.moments(), jnp.zeros(F), "moments"),
        ("ewma x8", sketch.ewma(half_life=100), jnp.zeros(F), "ewma"),
        (
            "ddsketch a=5% 112b x8",
            sketch.ddsketch(0.05, n_buckets=112, signed=False),
            jnp.zeros(F),
            "ddsketch",
        ),
        ("ddsketch a=1% 1024b x8", sketch.ddsketch(0.01), jnp.zeros(F), None),
        ("momentsketch k=6 x8", sketch.momentsketch(6), jnp.zeros(F), None),
    ]
    if ev is not None:
        groups.append(("log_evidence x1", ev, jnp.zeros(()), "evidence"))
    states = agent_states()
    for name in ("default (<= 4 KB)", "compact (<= 1 KB)"):
        sk, ex = states[name]
        kind = "fused" if "default" in name else None
        groups.append((name.split(" ")[0] + " agent state (fused)", sk, ex, kind))
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        x_np = rng.lognormal(0.0, 1.0, (n, F)).astype(np.float32)
        e_np = rng.normal(0.0, 1.0, n).astype(np.float32)
        x, e = jnp.asarray(x_np), jnp.asarray(e_np)
        for label, sk, ex, np_kind in groups:
            gb = state_bytes(sk, ex) * n / 1e9
            if gb > max_state_gb:
                rows.append([label, f"{n:,}", f"{gb:.2f}", "skipped (memory)", "", "", ""])
                continue
            if isinstance(ex, dict):
                xs = {k: (e if k == "evidence" else x) for k in ex}
            else:
                xs = e if ex.ndim == 0 else x
            t = time_jax_update(sk, ex, xs, n, repeats)
            t_np = float("nan")
            if np_kind == "fused":
                steps = [NumpyGroup.moments(n), NumpyGroup.ddsketch(n)]
                steps += [NumpyGroup.evidence(n)] if ev is not None else []
                args = [x_np, x_np] + ([e_np] if ev is not None else [])

                def fused(_):
                    for s, a in zip(steps, args):
                        s(a)

                t_np = time_numpy(fused, None, repeats)
            elif np_kind is not None:
                arg = e_np if np_kind == "evidence" else x_np
                t_np = time_numpy(getattr(NumpyGroup, np_kind)(n), arg, repeats)
            rows.append(
                [
                    label,
                    f"{n:,}",
                    f"{gb:.2f}",
                    f"{t * 1e3:.2f}",
                    f"{t / n * 1e9:.1f}",
                    "-" if t_np != t_np else f"{t_np / n * 1e9:.1f}",
                    "-" if t_np != t_np else f"{t_np / t:.2f}x",
                ]
            )
            print(f"  timed {label} at {n:,} agents", file=sys.stderr, flush=True)
    print("\n## 2. One jitted, donated update step over all agents (ns per agent-update)\n")
    print_table(
        ["group", "agents", "state GB", "ms/step", "ns/agent (jax)", "ns/agent (numpy)", "numpy/jax"],
        rows,
    )
    print("\nnumpy: the same arithmetic vectorized over agents, updating preallocated arrays in place.")


# --------------------------------------------------------------------------------------------
# Accuracy against peers
# --------------------------------------------------------------------------------------------


def load_nab(path, limit):
    files = sorted(glob.glob(os.path.join(path, "data", "*", "*.csv")))
    out = []
    for f in files[:limit] if limit else files:
        with open(f, newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        out.append((os.path.relpath(f, os.path.join(path, "data")), np.array([float(r[1]) for r in rows])))
    return out


def errors(x, est):
    """(rank error, relative value error) per q against the exact 'lower' quantile."""
    srt = np.sort(x.astype(np.float64))
    exact = np.quantile(srt, QS, method="lower")
    lo = np.searchsorted(srt, est, "left") / srt.size
    hi = np.searchsorted(srt, est, "right") / srt.size
    rank = np.where(QS < lo, lo - QS, np.where(QS > hi, QS - hi, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(exact != 0, np.abs(est - exact) / np.abs(exact), np.where(est == 0, 0.0, np.inf))
    return rank, rel


def jax_sketches():
    """The jaxstats quantile sketches compared with the peers."""
    return {
        "jaxstats ddsketch a=1% 1024b": sketch.ddsketch(0.01, n_buckets=1024, min_value=1e-3, signed=False),
        "jaxstats ddsketch a=5% 112b": sketch.ddsketch(0.05, n_buckets=112, min_value=1e-2, signed=False),
        "jaxstats momentsketch k=6": sketch.momentsketch(6),
    }


_JITTED = {}


def _jitted(sk):
    """(one-pass scan, 256-shard vmap + fold, query), compiled once per sketch."""
    if id(sk) not in _JITTED:

        def sharded(x, w):
            parts = jax.vmap(lambda a, b: sketch.from_batch(sk, a, where=b))(
                x.reshape(256, -1), w.reshape(256, -1)
            )
            return sketch.fold(sk, parts)

        _JITTED[id(sk)] = (
            sk,  # keeps the sketch alive so its id stays unique
            jax.jit(lambda x, w: sketch.from_batch(sk, x, where=w)),
            jax.jit(sharded),
            jax.jit(sk.query),
        )
    return _JITTED[id(sk)][1:]


def run_jax(sk, x, timed=True):
    """Estimates, bytes, items/s (one stream by scan; 256 vmapped shards merged by fold).

    Streams are padded (at least 2**15, else the next power of 2) and masked, so series of
    different lengths share one compilation."""
    n = x.size
    size = max(2**15, 1 << (n - 1).bit_length())
    xp = jnp.asarray(np.concatenate([x, np.zeros(size - n)]), jnp.float32)
    wp = jnp.arange(size) < n
    one_pass, sharded, query = _jitted(sk)
    nan = float("nan")
    t_scan = timeit(one_pass, xp, wp, repeats=1, warmup=1) if timed else nan
    t_shard = timeit(sharded, xp, wp, repeats=1, warmup=1) if timed else nan
    state = sharded(xp, wp)
    qs = jnp.asarray(QS, jnp.float32)
    t_query = timeit(query, state, qs, repeats=3, warmup=1) if timed else nan
    est = np.asarray(query(state, qs), np.float64)
    return est, sketch.nbytes(state, batched=False), n / t_scan, n / t_shard, t_query


def run_peers(x):
    out = {}
    try:
        import datasketches

        k = datasketches.kll_floats_sketch(200)
        xf = x.astype(np.float32)
        t0 = time.perf_counter()
        k.update(xf)
        t = time.perf_counter() - t0
        est = np.array([k.get_quantile(q) for q in QS], np.float64)
        out["datasketches KLL k=200"] = (est, len(k.serialize()), x.size / t, float("nan"), float("nan"))
    except ImportError:
        print("note: datasketches not installed (pip install datasketches); KLL peer skipped.")
    try:
        from ddsketch import DDSketch

        d = DDSketch(0.01)
        t0 = time.perf_counter()
        for v in x.tolist():
            d.add(v)
        t = time.perf_counter() - t0
        est = np.array([d.get_quantile_value(q) for q in QS], np.float64)
        nbins = len(d._store.bins) + len(d._negative_store.bins)
        out["ddsketch (DataDog) a=1%"] = (est, 8 * nbins + 8 * 6, x.size / t, float("nan"), float("nan"))
    except ImportError:
        print("note: ddsketch not installed (pip install ddsketch); DataDog peer skipped.")
    return out


def accuracy_rows(stream_name, x, timed=True):
    rows = []
    results = {}
    for name, sk in SKETCHES.items():
        results[name] = run_jax(sk, x, timed)
    results.update(run_peers(x))
    for name, (est, nb, ips, ips_shard, t_query) in results.items():
        rank, rel = errors(x, est)
        rows.append(
            [
                stream_name,
                name,
                f"{nb:,.0f}",
                f"{ips:,.0f}",
                "-" if ips_shard != ips_shard else f"{ips_shard:,.0f}",
                "-" if t_query != t_query else f"{t_query * 1e6:,.0f}",
                f"{rank.max():.4f}",
            ]
            + [f"{r:.3f}" for r in rel]
        )
    return rows, results


SKETCHES: dict = {}


def accuracy_table(n_items, nab_path, nab_limit):
    SKETCHES.update(jax_sketches())
    rng = np.random.default_rng(1)
    streams = {
        f"lognormal(0,1) n={n_items:,}": rng.lognormal(0.0, 1.0, n_items),
        f"pareto(1.5) n={n_items:,}": rng.pareto(1.5, n_items) + 1.0,
    }
    headers = [
        "stream",
        "sketch",
        "bytes",
        "items/s (1 stream)",
        "items/s (256 shards)",
        "query us (6 q)",
        "max rank err",
    ] + [
        f"rel err q={q:g}" for q in QS
    ]
    rows = []
    for sname, x in streams.items():
        r, _ = accuracy_rows(sname, x)
        rows += r
        print(f"  accuracy on {sname}", file=sys.stderr, flush=True)
    print("\n## 3. Accuracy and size vs peers (relative value error at each q; rank error = max over q)\n")
    print_table(headers, rows)
    print(
        "\nitems/s: one stream folded in by lax.scan (1 stream), or split into 256 sub-streams "
        "updated with vmap and merged with fold (256 shards); peers: their own update loop "
        "(KLL: bulk numpy update; DataDog ddsketch: Python add per item). DataDog bytes: "
        "8 bytes per allocated dense-store bin."
    )
    if not nab_path or not os.path.isdir(nab_path):
        print(f"\nnote: NAB data not found at {nab_path!r}; real streams skipped (use --data).")
        return
    series = load_nab(nab_path, nab_limit)
    summary = {}
    for key, x in series:
        _, res = accuracy_rows(key, x, timed=False)
        for name, (est, nb, *_rest) in res.items():
            rank, rel = errors(x, est)
            summary.setdefault(name, []).append((rank.max(), rel, nb))
    rows = []
    for name, vals in summary.items():
        ranks = np.array([v[0] for v in vals])
        rels = np.array([v[1] for v in vals])
        nbs = np.array([v[2] for v in vals])
        rows.append(
            [name, f"{np.median(nbs):,.0f}", f"{np.median(ranks):.4f}", f"{ranks.max():.4f}"]
            + [f"{np.median(rels[:, i]):.3f} / {np.max(rels[:, i]):.3f}" for i in range(QS.size)]
        )
    points = sum(x.size for _, x in series)
    print(f"\n## 3b. NAB real streams ({len(series)} series, {points:,} points): median / max over series\n")
    print_table(
        ["sketch", "bytes (median)", "rank err (median)", "rank err (max)"]
        + [f"rel err q={q:g}" for q in QS],
        rows,
    )
    print(
        "\nThe fixed-grid ddsketch rows use one static range for every series ([1e-3, 7.6e5] "
        "and [0.01, 605]); series with values outside it lose the guarantee at those quantiles "
        "(zeros are exact; negatives collapse into the zero bucket with signed=False). Many NAB "
        "series are discrete with large ties: a value within 1% of a heavily tied exact quantile "
        "can sit just outside the tie block, so rank errors there are large for every sketch."
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (~1 minute)")
    ap.add_argument("--data", default=DEFAULT_NAB, help="NAB folder (holding data/ and labels/)")
    args = ap.parse_args()
    print(machine_line())
    load = os.getloadavg()
    mode = "quick" if args.quick else "full"
    print(f"mode: {mode} | load average at start {load[0]:.1f} (shared machine: times are indicative)")
    states = agent_states()
    bytes_table(states)
    if args.quick:
        speed_table([10**4], repeats=3, max_state_gb=1.0)
        accuracy_table(2 * 10**4, args.data, nab_limit=3)
    else:
        speed_table([10**4, 10**5, 10**6], repeats=5, max_state_gb=5.0)
        accuracy_table(10**6, args.data, nab_limit=None)


if __name__ == "__main__":
    main()
