"""Benchmark of jaxstats.evidence and the log_evidence sketch (issue 4).

Run:  python experiments/bench_evidence.py            (full: ~3-6 minutes on 2 CPU cores)
      python experiments/bench_evidence.py --quick    (~1 minute; smaller sizes, stated per table)

Tables:
  1. Sum of n log-likelihood ratios (the log Bayes factor), float32 and float64: error vs an
     exact oracle (math.fsum, which is exactly rounded) and time, for a naive product of
     likelihoods, naive sequential accumulation, jnp.sum and jaxstats.
  2. log-sum-exp of n terms: naive log(sum(exp)), jax.nn.logsumexp, jaxstats.logsumexp; oracle:
     float64 exps summed by math.fsum (float32 input) or numpy longdouble (float64 input),
     spot-checked against mpmath at 50 digits on a 2,000-term subset.
  3. Per-point sequential Bayesian update as the prototype does it (Python loop, K = 2 posterior
     vector normalized every step, float64) vs jaxstats.log_posterior batched (jitted).
  4. Cost of compensated accumulation vs a plain jnp.sum, float32 and float64 at 10**6 and
     10**7: the native CPU kernel (jaxstats/_native/reduce.cc, the default on CPU) next to the
     XLA formulation (other platforms / JAXSTATS_NATIVE=0), and the XLA variants explored
     before it (float32; 10**6 only with --quick).
  5. 10**6 agents x 10**3 points streamed through the log_evidence sketch (agent-points/s).
  6. One stream of 10**9 sequential updates (10**7 with --quick): float32 state vs exact sum.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import fmt_time, machine_line, print_table  # noqa: E402

from jaxstats import _native  # noqa: E402
from jaxstats import _numerics as nm  # noqa: E402
from jaxstats import evidence as ev  # noqa: E402
from jaxstats.sketch.evidence import log_evidence  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 rows; float32 rows cast explicitly
mpmath.mp.dps = 50


def timeit(fn, *args, repeats: int = 9, warmup: int = 2) -> float:
    """Best (minimum) wall time of ``fn(*args)`` over ``repeats`` runs after ``warmup`` runs.

    The minimum, not the median: on a shared machine other processes only ever add time, so the
    lower envelope is the reproducible quantity (ratios use the same statistic on both sides).
    """
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def ulps(got: float, exact: float, dtype) -> float:
    """|got - exact| in ulps of ``dtype`` at the correctly rounded exact value."""
    if not np.isfinite(got):
        return float("inf")
    cr = dtype(exact)
    return abs(float(got) - float(cr)) / float(np.spacing(np.abs(cr)))


def fmt_err(got: float, exact: float, dtype) -> tuple[str, str]:
    if not np.isfinite(got):
        return (f"{got}", "-")
    rel = abs(float(got) - exact) / abs(exact)
    u = ulps(got, exact, dtype)
    return (f"{rel:.1e}", f"{u:.3g}")


# ------------------------------------------------------------------------------------------------
# 1. Sum of log-likelihood ratios
# ------------------------------------------------------------------------------------------------


def make_llr_data(n: int, seed: int = 0):
    """Per-point likelihoods of n evidence points under H1 and H0 (uniform-ish, as a product
    of U(0,1) factors), their log-likelihoods (around -1 each) and the LLRs."""
    rng = np.random.default_rng(seed)
    p1 = rng.uniform(0.05, 1.0, n)
    p0 = np.clip(p1 * np.exp(rng.normal(-0.02, 0.3, n)), 1e-6, 1.0)
    return p1, p0


def table_llr_sum(sizes, dtypes):
    rows = []
    for n in sizes:
        p1, p0 = make_llr_data(n)
        for dt in dtypes:
            name = np.dtype(dt).name
            l1 = np.log(p1).astype(dt)
            l0 = np.log(p0).astype(dt)
            llr = (l1.astype(np.float64) - l0.astype(np.float64)).astype(dt)  # per-point LLR in dt
            exact = math.fsum(llr.astype(np.float64))  # exact sum of the dt inputs
            cond = float(np.abs(llr.astype(np.float64)).sum() / abs(exact))
            # naive product of likelihoods
            t0 = time.perf_counter()
            prod1 = np.prod(p1.astype(dt))
            prod0 = np.prod(p0.astype(dt))
            t_prod = time.perf_counter() - t0
            with np.errstate(all="ignore"):
                naive_prod = float(np.log(prod1 / prod0))
            under = int(np.argmax(np.cumprod(p1.astype(dt)) == 0)) + 1
            rows.append((n, name, "naive product of likelihoods", f"{naive_prod:.6g}", "-", "-", fmt_time(t_prod),
                         f"underflows to 0 at factor {under}"))
            # naive sequential accumulation (numpy cumsum is sequential)
            t0 = time.perf_counter()
            seq = float(np.cumsum(llr)[-1])
            t_seq = time.perf_counter() - t0
            rows.append((n, name, "sequential accumulation (numpy loop)", f"{seq:.10g}", *fmt_err(seq, exact, dt),
                         fmt_time(t_seq), ""))
            x = jnp.asarray(llr)
            plain = jax.jit(jnp.sum)
            t_plain = timeit(plain, x)
            v = float(plain(x))
            rows.append((n, name, "jnp.sum (XLA)", f"{v:.10g}", *fmt_err(v, exact, dt), fmt_time(t_plain), ""))
            comp = jax.jit(ev.compensated_sum)
            t_comp = timeit(comp, x)
            v = float(comp(x))
            rows.append((n, name, "jaxstats.compensated_sum", f"{v:.10g}", *fmt_err(v, exact, dt), fmt_time(t_comp),
                         f"{t_comp / t_plain:.2f}x jnp.sum"))
            lbf = jax.jit(ev.log_bayes_factor)
            a1, a0 = jnp.asarray(l1), jnp.asarray(l0)
            exact_lbf = math.fsum(np.concatenate([l1.astype(np.float64), -l0.astype(np.float64)]))
            t_lbf = timeit(lbf, a1, a0)
            v = float(lbf(a1, a0))
            rows.append((n, name, "jaxstats.log_bayes_factor(l1, l0)", f"{v:.10g}", *fmt_err(v, exact_lbf, dt),
                         fmt_time(t_lbf), "from raw log-likelihoods"))
            rows.append((n, name, f"(oracle math.fsum; condition number {cond:.3g})", f"{exact:.10g}", "", "", "", ""))
    print("\n### 1. Log Bayes factor = sum of n log-likelihood ratios\n")
    print_table(["n", "dtype", "method", "value", "rel. error", "ulps", "time", "note"], rows)


# ------------------------------------------------------------------------------------------------
# 2. log-sum-exp
# ------------------------------------------------------------------------------------------------


def lse_oracle(a: np.ndarray) -> float:
    if a.dtype == np.float32:
        a64 = a.astype(np.float64)
        m = a64.max()
        return m + math.log(math.fsum(np.exp(a64 - m)))
    al = a.astype(np.longdouble)
    m = al.max()
    s = np.sum(np.exp(al - m))  # 64-bit significand: ~1e-18 relative
    return float(m + np.log(s))


def table_logsumexp(sizes, dtypes):
    rows = []
    # mpmath spot check of the oracle
    sub = np.random.default_rng(1).normal(-1000.0, 3.0, 2000)
    mp_val = float(mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in sub)))
    oracle_dev = {np.dtype(dt).name: ulps(lse_oracle(sub.astype(dt)), mp_val if dt == np.float64 else float(
        mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in sub.astype(np.float32)))), dt)
        for dt in dtypes}
    for n in sizes:
        a64 = np.random.default_rng(2).normal(-1000.0, 3.0, n)  # log-likelihoods around -1000
        for dt in dtypes:
            name = np.dtype(dt).name
            a = a64.astype(dt)
            exact = lse_oracle(a)
            x = jnp.asarray(a)
            naive = jax.jit(lambda v: jnp.log(jnp.sum(jnp.exp(v))))
            t = timeit(naive, x)
            v = float(naive(x))
            rows.append((n, name, "naive log(sum(exp(a)))", f"{v:.10g}", *fmt_err(v, exact, dt), fmt_time(t), ""))
            f = jax.jit(jax.nn.logsumexp)
            t_ref = timeit(f, x)
            v = float(f(x))
            rows.append((n, name, "jax.nn.logsumexp", f"{v:.10g}", *fmt_err(v, exact, dt), fmt_time(t_ref), ""))
            g = jax.jit(ev.logsumexp)
            t = timeit(g, x)
            v = float(g(x))
            rows.append((n, name, "jaxstats.logsumexp", f"{v:.10g}", *fmt_err(v, exact, dt), fmt_time(t),
                         f"{t / t_ref:.2f}x jax.nn"))
    print("\n### 2. log-sum-exp of n log-likelihoods ~ N(-1000, 3)\n")
    print_table(["n", "dtype", "method", "value", "rel. error", "ulps", "time", "note"], rows)
    print("Oracle vs mpmath (50 digits) on a 2,000-term subset, in ulps: "
          + ", ".join(f"{k}: {v:.2g}" for k, v in oracle_dev.items()))


# ------------------------------------------------------------------------------------------------
# 3. Prototype sequential Bayesian update vs jaxstats batched
# ------------------------------------------------------------------------------------------------


def prototype_update(lik: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The prototype: per point, multiply the K = 2 posterior vector by the likelihoods and
    normalize (float64, Python loop over points)."""
    post = prior.copy()
    for i in range(lik.shape[0]):
        post = post * lik[i]
        post = post / post.sum()
    return post


def table_sequential(n_full: int, n_loop: int):
    p1, p0 = make_llr_data(n_full, seed=3)
    lik = np.stack([p0, p1], axis=1)  # [n, 2], hypotheses H0, H1
    prior = np.array([0.5, 0.5])
    t_loop = float("inf")
    for _ in range(2 if n_loop < n_full else 1):  # best of 2 when cheap (quick mode)
        t0 = time.perf_counter()
        proto = prototype_update(lik[:n_loop], prior)
        t_loop = min(t_loop, time.perf_counter() - t0)
    extrap = n_full != n_loop
    t_proto = t_loop * n_full / n_loop
    if extrap:
        proto = None  # not the full stream
    ll = jnp.asarray(np.log(lik))
    lp = jnp.log(jnp.asarray(prior))
    f = jax.jit(lambda p, l: ev.log_posterior(p, l))
    t_jax = timeit(f, lp, ll, repeats=15)
    logpost = np.asarray(f(lp, ll))
    # exact log posterior odds: fsum of the float64 log-likelihoods of both hypotheses
    log_odds = math.fsum(np.concatenate([np.log(p1), -np.log(p0)]))
    q_exact = float(mpmath.log(1 / (1 + mpmath.exp(mpmath.mpf(log_odds)))))  # log P(H0 | data)
    rows = [
        ("prototype: Python loop, posterior vector normalized per point (float64)",
         f"{n_loop:,}" + (" (extrapolated linearly to n)" if extrap else ""), fmt_time(t_proto),
         "-" if proto is None else f"P(H0) = {proto[0]:.3g} (exact {mpmath.nstr(mpmath.exp(q_exact), 5)})"),
        ("jaxstats.log_posterior batched (jit, float64)", f"{n_full:,}", fmt_time(t_jax),
         f"log P(H0) = {logpost[0]:.10g} (exact {q_exact:.10g})"),
    ]
    print(f"\n### 3. Sequential Bayesian update of n = {n_full:,} evidence points, K = 2\n")
    print_table(["method", "points timed", "time for n", "result"], rows)
    note = f" [prototype time extrapolated linearly from {n_loop:,} points]" if extrap else ""
    print(f"Speed-up of jaxstats over the prototype at n = {n_full:,}: {t_proto / t_jax:,.1f}x "
          f"(target >= 752.6x){note}")
    return t_proto / t_jax


# ------------------------------------------------------------------------------------------------
# 4. Compensated accumulation cost vs jnp.sum
# ------------------------------------------------------------------------------------------------


def _lanes_fori(lanes: int):
    def f(x):
        hi, lo = nm.sum_rows_pair(x[:, None], lanes=lanes)
        return nm.pair_value(hi[0], lo[0])

    return f


def _lanes_scan(lanes: int):
    def f(x):
        rows = x.shape[0] // lanes
        body_x = x[: rows * lanes].reshape(rows, lanes)

        def body(c, row):
            s, e = nm.two_sum(c[0], row)
            return (s, c[1] + e), None

        (hi, lo), _ = lax.scan(body, (jnp.zeros(lanes, x.dtype), jnp.zeros(lanes, x.dtype)), body_x)
        t_hi, t_lo = nm._tree_pair(jnp.concatenate([hi, x[rows * lanes:]]))
        return nm.pair_value(*nm.pair_renormalize(t_hi, t_lo + jnp.sum(lo)))

    return f


def _tree(x):
    return nm.pair_value(*nm.pair_renormalize(*nm._tree_pair(x)))


def _variadic_reduce(lanes: int):
    def comb(a, b):
        s, e = nm.two_sum(a[0], b[0])
        return s, a[1] + b[1] + e

    def f(x):
        rows = x.shape[0] // lanes
        body_x = x[: rows * lanes].reshape(rows, lanes)
        z = jnp.zeros((), x.dtype)
        hi, lo = lax.reduce((body_x, jnp.zeros_like(body_x)), (z, z), comb, (0,))
        t_hi, t_lo = nm._tree_pair(jnp.concatenate([hi, x[rows * lanes:]]))
        return nm.pair_value(*nm.pair_renormalize(t_hi, t_lo + jnp.sum(lo)))

    return f


def _adversarial(n: int, cond: float, dt, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.standard_normal(n - 2 * (n // 3)) + 0.3
    big = rng.standard_normal(n // 3) * cond / 4
    x = np.concatenate([big, -big * (1 + 1e-7 * rng.standard_normal(n // 3)), small])
    rng.shuffle(x)
    return x.astype(dt)


def _on_path(fn, native: bool):
    """``fn`` traced with jaxstats' compensated reductions on the native kernel or on XLA."""

    def f(x):
        old = ev._USE_NATIVE
        ev._USE_NATIVE = native
        try:
            return fn(x)
        finally:
            ev._USE_NATIVE = old

    return f


def table_cost(sizes, dtypes, extra_sizes):
    """Rows for every (n, dtype): jnp.sum, jaxstats.compensated_sum on its CPU default (the
    native kernel, jaxstats/_native/reduce.cc) and on the XLA formulation (other platforms,
    JAXSTATS_NATIVE=0); for float32 at ``extra_sizes`` also the XLA formulations explored before
    the native kernel."""
    main = {
        "jnp.sum (plain, reference)": jnp.sum,
        "jaxstats.compensated_sum, native kernel (CPU default)": _on_path(ev.compensated_sum, True),
        "jaxstats.compensated_sum, XLA formulation (fallback)": _on_path(ev.compensated_sum, False),
    }
    extra = {
        "TwoSum lanes, fori + dynamic_slice, 256 lanes": _lanes_fori(256),
        "TwoSum lanes, fori + dynamic_slice, 1024 lanes": _lanes_fori(1024),
        "TwoSum lanes, fori + dynamic_slice, 8192 lanes": _lanes_fori(8192),
        "TwoSum lanes, lax.scan over reshaped rows, 1024 lanes": _lanes_scan(1024),
        "TwoSum halving tree (all levels)": _tree,
        "variadic lax.reduce (TwoSum combiner), 1024 lanes": _variadic_reduce(1024),
    }
    rows = []
    summary = []
    for dt in dtypes:
        for n in sizes:
            x = _adversarial(n, 1e4, dt, seed=n % 1000)
            exact = math.fsum(x.astype(np.float64))
            xj = jnp.asarray(x)
            forms = dict(main)
            if dt == np.float32 and n in extra_sizes:
                forms.update(extra)
            t_ref = None
            ratios = {}
            for name, fn in forms.items():
                f = jax.jit(fn)
                t = timeit(f, xj, repeats=9 if n <= 10**6 else 5)
                if t_ref is None:
                    t_ref = t
                v = float(f(xj))
                ratios[name] = t / t_ref
                rows.append((n, np.dtype(dt).name, name, fmt_time(t), f"{t / t_ref:.2f}x", f"{ulps(v, exact, dt):.3g}"))
            best = min((r, k) for k, r in ratios.items() if not k.startswith("jnp.sum"))
            summary.append((n, np.dtype(dt).name, ratios, best))
    print("\n### 4. Compensated accumulation cost vs plain jnp.sum (condition number ~1e4)\n")
    print(f"native kernels: {_native.status()}")
    print_table(["n", "dtype", "formulation", "time", "vs jnp.sum", "error (ulps)"], rows)
    for n, name, ratios, (r, k) in summary:
        nat = ratios["jaxstats.compensated_sum, native kernel (CPU default)"]
        xla = ratios["jaxstats.compensated_sum, XLA formulation (fallback)"]
        print(f"n = {n:,} {name}: native {nat:.2f}x jnp.sum, XLA formulation {xla:.2f}x "
              f"(goal <= 2x for float32); fastest compensated: {k} ({r:.2f}x)")


# ------------------------------------------------------------------------------------------------
# 5. Streaming: agents x points through the sketch
# ------------------------------------------------------------------------------------------------


def _hash_llr(agent, t):
    """Deterministic LLR for (agent, time): a multiple of 2**-20 in (-1, 1) plus a small drift,
    computable on device and on the host (so exact per-agent sums are known)."""
    h = (agent.astype(jnp.uint32) * jnp.uint32(2654435761)) ^ (t.astype(jnp.uint32) * jnp.uint32(40503))
    h = h ^ (h >> 15)
    h = h * jnp.uint32(2246822519)
    h = h ^ (h >> 13)
    k = (h & jnp.uint32(0x1FFFFF)).astype(jnp.int32) - jnp.int32(2**20) + jnp.int32(2**12)
    k = jnp.clip(k, -(2**20) + 1, 2**20 - 1)
    return k.astype(jnp.float32) * jnp.float32(2.0**-20)


def _hash_llr_np(agent: np.ndarray, t: np.ndarray) -> np.ndarray:
    a = agent.astype(np.uint32)
    tt = t.astype(np.uint32)
    with np.errstate(over="ignore"):
        h = (a * np.uint32(2654435761)) ^ (tt * np.uint32(40503))
        h = h ^ (h >> np.uint32(15))
        h = h * np.uint32(2246822519)
        h = h ^ (h >> np.uint32(13))
    k = (h & np.uint32(0x1FFFFF)).astype(np.int64) - 2**20 + 2**12
    return np.clip(k, -(2**20) + 1, 2**20 - 1)


def table_streaming(n_agents: int, n_points: int, chunk: int):
    sk = log_evidence()
    agents = jnp.arange(n_agents, dtype=jnp.uint32)

    @partial(jax.jit, donate_argnums=0)
    def advance(states, t0):
        def body(s, t):
            x = _hash_llr(agents, t)
            return jax.vmap(sk.update)(s, x), None

        return lax.scan(body, states, t0 + jnp.arange(chunk, dtype=jnp.uint32))[0]

    @partial(jax.jit, donate_argnums=0)
    def advance_plain(acc, t0):
        def body(s, t):
            return s + _hash_llr(agents, t), None

        return lax.scan(body, acc, t0 + jnp.arange(chunk, dtype=jnp.uint32))[0]

    states = jax.vmap(sk.init)(jnp.zeros(n_agents, jnp.float32))
    states = advance(states, jnp.uint32(0))  # compile + warm
    jax.block_until_ready(states)
    states = jax.vmap(sk.init)(jnp.zeros(n_agents, jnp.float32))
    t0 = time.perf_counter()
    for c in range(n_points // chunk):
        states = advance(states, jnp.uint32(c * chunk))
    jax.block_until_ready(states)
    t_sk = time.perf_counter() - t0

    acc = jnp.zeros(n_agents, jnp.float32)
    acc = advance_plain(acc, jnp.uint32(0))
    jax.block_until_ready(acc)
    acc = jnp.zeros(n_agents, jnp.float32)
    t0 = time.perf_counter()
    for c in range(n_points // chunk):
        acc = advance_plain(acc, jnp.uint32(c * chunk))
    jax.block_until_ready(acc)
    t_plain = time.perf_counter() - t0

    # exactness on a sample of agents (host recomputation of the integer sums)
    sample = np.linspace(0, n_agents - 1, 200).astype(np.int64)
    tt = np.arange((n_points // chunk) * chunk)
    exact = np.array([_hash_llr_np(np.full(tt.shape, a), tt).sum() * 2.0**-20 for a in sample])
    q = np.asarray(jax.vmap(sk.query)(states))[sample]
    pl = np.asarray(acc)[sample]
    worst_sk = max(ulps(q[i], exact[i], np.float32) for i in range(len(sample)))
    worst_pl = max(ulps(pl[i], exact[i], np.float32) for i in range(len(sample)))
    pts = n_agents * (n_points // chunk) * chunk
    bytes_per_agent = 4 * 4
    rows = [
        ("log_evidence sketch (double-word state, vmap + lax.scan, donated)", fmt_time(t_sk),
         f"{pts / t_sk:.3g}", f"{worst_sk:.3g}", bytes_per_agent),
        ("plain float32 running sum (same loop)", fmt_time(t_plain), f"{pts / t_plain:.3g}", f"{worst_pl:.3g}", 4),
    ]
    print(f"\n### 5. Streaming {n_agents:,} agents x {n_points:,} points (chunks of {chunk} steps per jit call)\n")
    print_table(["accumulator", "time", "agent-points/s", "worst error on 200 agents (ulps)", "bytes/agent"], rows)


# ------------------------------------------------------------------------------------------------
# 6. One long stream: 10**9 sequential updates
# ------------------------------------------------------------------------------------------------


def table_long_stream(n: int):
    sk = log_evidence()
    chunk = 10**7 if n >= 10**7 else n
    agent = jnp.uint32(12345)

    @partial(jax.jit, donate_argnums=0)
    def advance(carry, t0):
        s, plain = carry

        def body(c, i):
            s, p = c
            x = _hash_llr(agent, t0 + i)
            return (sk.update(s, x), p + x), None

        return lax.scan(body, (s, plain), jnp.arange(chunk, dtype=jnp.uint32))[0]

    carry = (sk.init(jnp.zeros((), jnp.float32)), jnp.float32(0))
    jax.block_until_ready(advance(carry, jnp.uint32(0)))  # compile
    carry = (sk.init(jnp.zeros((), jnp.float32)), jnp.float32(0))
    t0 = time.perf_counter()
    for c in range(n // chunk):
        carry = advance(carry, jnp.uint32(c * chunk))
    jax.block_until_ready(carry)
    t_run = time.perf_counter() - t0
    s, plain = carry
    # exact sum with integer arithmetic on the host
    total = 0
    t_idx = np.arange(chunk, dtype=np.int64)
    for c in range(n // chunk):
        total += int(_hash_llr_np(np.full(chunk, 12345), (c * chunk + t_idx) % 2**32).sum())
    exact = total * 2.0**-20
    v = float(sk.query(s))
    cnt = float(s.count) + float(s.count_lo)
    rows = [
        ("log_evidence sketch state (float32 double word)", f"{v:.10g}", f"{ulps(v, exact, np.float32):.3g}",
         f"{cnt:.0f}", fmt_time(t_run)),
        ("plain float32 running sum", f"{float(plain):.10g}", f"{ulps(float(plain), exact, np.float32):.3g}", "-", ""),
        ("exact (integer arithmetic)", f"{exact:.10g}", "0", f"{n}", ""),
    ]
    print(f"\n### 6. One stream of {n:,} sequential single-point updates (float32)\n")
    print_table(["accumulator", "value", "error (ulps)", "count", "time"], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (~1 minute)")
    args = p.parse_args(argv)
    print(machine_line())
    print("mode:", "quick" if args.quick else "full")
    t_start = time.perf_counter()
    if args.quick:
        table_llr_sum([10**6], [np.float32, np.float64])
        table_logsumexp([10**6], [np.float32, np.float64])
        table_sequential(10**6, 10**5)
        table_cost([10**6, 10**7], [np.float32, np.float64], extra_sizes=[10**6])
        table_streaming(10**4, 10**2, 50)
        table_long_stream(10**7)
    else:
        table_llr_sum([10**6, 10**7], [np.float32, np.float64])
        table_logsumexp([10**6, 10**7], [np.float32, np.float64])
        table_sequential(10**6, 10**6)
        table_cost([10**6, 10**7], [np.float32, np.float64], extra_sizes=[10**6, 10**7])
        table_streaming(10**6, 10**3, 50)
        table_long_stream(10**9)
    print(f"\ntotal benchmark time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
