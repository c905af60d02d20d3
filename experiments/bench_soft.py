"""Soft rank: jaxstats.soft_rank (O(n log n), PAV) vs an O(n^2) pairwise-sigmoid soft rank.

Run:  python experiments/bench_soft.py [--quick] [--sizes 1000,10000,...] [--max-naive N]

For n float32 values x ~ N(0, 1):

* soft     - ``jaxstats.soft_rank(x, regularization_strength=eps)`` ("l2"), jitted: one sort
             through the jaxstats kernel + pool-adjacent-violators (a ``lax.while_loop``);
* naive    - the usual O(n^2) relaxation ``r_i = 1/2 + sum_j sigmoid((x_i - x_j) / eps)``, jitted
             jnp, rows processed in chunks (``lax.map``) so memory stays O(chunk * n); for the
             backward pass each chunk is rematerialized (``jax.checkpoint``) instead of storing
             n^2 residuals. The chunk size is tuned per n (best of a few, in its favour);
* hard     - ``jaxstats.rankdata`` (no gradient), for the overhead factor of going soft.

"fwd" times the ranks; "fwd+bwd" times ``jax.grad(lambda x: sum(c * rank(x)))`` (a VJP
with a random cotangent). Both relaxations use the same eps = 2 / n (ranks blur over a few
neighbours in the bulk of the distribution; the cost of ``soft_rank`` grows mildly with the
amount of pooling, the naive cost does not depend on eps).

Timing: every function is compiled and warmed up outside the timed region; each timed call
is blocked on; CPU dispatch is synchronous; the table shows medians. The measurements are
interleaved (each round: every naive function once, every fast one 5 times; 9 rounds up to
1e4, 3 up to 1e5, 5 at 1e6) so that both sides see the same load on a shared machine. The naive method runs where it fits in the time budget (``--max-naive``,
default 3e4: its backward alone takes minutes at 1e5); beyond that its time is extrapolated as
c * n^2 from the largest measured n and marked "(extrap.)". A full run measured the naive
method at 1e5 too: 16 s forward, 157 s forward+backward (``--max-naive 1e5``, ~14 min).

Target: soft_rank >= 144.8x faster than the naive soft rank at n = 1e4 (forward and
forward+backward).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(__file__))
from _timing import fmt_time, machine_line, print_table, timeit  # noqa: E402

import jaxstats  # noqa: E402

TARGET = 144.8


def naive_soft_rank(x: jax.Array, eps: float, chunk: int) -> jax.Array:
    """O(n^2) pairwise-sigmoid soft rank, chunked over rows; checkpointed for the backward."""
    n = x.shape[0]
    m = -(-n // chunk)
    xp = jnp.pad(x, (0, m * chunk - n)).reshape(m, chunk)

    @jax.checkpoint
    def rows(xc):
        return jnp.sum(jax.nn.sigmoid((xc[:, None] - x[None, :]) / eps), axis=1)

    return lax.map(rows, xp).reshape(-1)[:n] + 0.5


def make_fns(n: int, eps: float, chunk: int):
    c = jnp.asarray(np.random.default_rng(1).normal(size=n).astype(np.float32))
    soft_f = jax.jit(lambda x: jaxstats.soft_rank(x, regularization_strength=eps))
    soft_g = jax.jit(jax.grad(
        lambda x: jnp.sum(c * jaxstats.soft_rank(x, regularization_strength=eps))))
    naive_f = jax.jit(lambda x: naive_soft_rank(x, eps, chunk))
    naive_g = jax.jit(jax.grad(lambda x: jnp.sum(c * naive_soft_rank(x, eps, chunk))))
    hard_f = jax.jit(jaxstats.rankdata)
    return soft_f, soft_g, naive_f, naive_g, hard_f


def pooled_fraction(x: jax.Array, eps: float) -> float:
    """Share of the values whose soft rank is pooled with a neighbour's (diagnostic only; uses
    the private solver on the same sorted problem soft_rank solves)."""
    from jaxstats import soft

    n = x.shape[0]
    s = jnp.sort(x)[::-1] / eps
    y = (s - jnp.arange(n, 0, -1, dtype=jnp.float32))[None]
    _, _, _, count = soft._pav_l2(y, jnp.ones_like(y))
    return float(jnp.mean(count > 1))


def interleaved(fast, slow, x, rounds, per_round=5):
    """Medians of interleaved timings: every round times each slow function once and each fast
    one ``per_round`` times, so all of them see the same (shared, noisy) machine load.
    Everything is compiled and warmed up first."""
    fns = {**fast, **slow}
    for f in fns.values():
        for _ in range(2 if f in fast.values() else 1):
            jax.block_until_ready(f(x))
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            for _ in range(per_round if k in fast else 1):
                t0 = time.perf_counter()
                jax.block_until_ready(f(x))
                samples[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in samples.items()}


def tune_chunk(x: jax.Array, eps: float) -> int:
    """The fastest chunk size for the naive forward (median of 3 calls each, after compiling)."""
    best, best_t = 64, float("inf")
    for chunk in (32, 64, 128, 256):
        if chunk > x.shape[0]:
            continue
        f = jax.jit(lambda v, ch=chunk: naive_soft_rank(v, eps, ch))
        t = timeit(f, x, repeats=3, warmup=1)
        if t < best_t:
            best, best_t = chunk, t
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 1e3, 1e4 only (< 1 min)")
    ap.add_argument("--sizes", type=str, default=None, help="comma-separated n values")
    ap.add_argument("--max-naive", type=float, default=3e4, help="largest n timed for naive")
    args = ap.parse_args()

    sizes = [1000, 10_000] if args.quick else [1000, 10_000, 30_000, 100_000, 1_000_000]
    if args.sizes:
        sizes = [int(float(s)) for s in args.sizes.split(",")]
    # Synchronous CPU dispatch: the timings measure the computation, not the async hand-off
    # (MEASURED.md: +5-50 us per call with async dispatch at these output sizes).
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    print(machine_line())
    print(f"jaxstats sort kernel: {jaxstats._native.status()}")

    # Sanity: the soft rank is the hard rank at small strength, and it has a gradient.
    x0 = jnp.asarray(np.random.default_rng(0).normal(size=1000).astype(np.float32))
    err = float(jnp.max(jnp.abs(jaxstats.soft_rank(x0, regularization_strength=1e-6)
                                - jaxstats.rankdata(x0))))
    print(f"check: max |soft_rank(eps=1e-6) - rankdata| at n=1000: {err:.2e}")
    assert err < 1e-3

    rows, naive_rate, chunk = [], None, 64
    verdict = []
    for n in sizes:
        rng = np.random.default_rng(n)
        x = jnp.asarray(rng.normal(size=n).astype(np.float32))
        eps = 2.0 / n
        if n <= 10_000:  # larger n reuse the chunk size tuned at the last n <= 1e4
            chunk = tune_chunk(x, eps)
        soft_f, soft_g, naive_f, naive_g, hard_f = make_fns(n, eps, chunk)
        fast = {"soft_f": soft_f, "soft_g": soft_g, "hard": hard_f}
        slow = {"naive_f": naive_f, "naive_g": naive_g} if n <= args.max_naive else {}
        rounds = 9 if n <= 10_000 else (3 if n <= 100_000 else 5)
        t = interleaved(fast, slow, x, rounds)
        t_sf, t_sg, t_h = t["soft_f"], t["soft_g"], t["hard"]
        if slow:
            t_nf, t_ng = t["naive_f"], t["naive_g"]
            naive_rate = (t_nf / n**2, t_ng / n**2)
            tag = ""
        else:
            t_nf, t_ng = naive_rate[0] * n**2, naive_rate[1] * n**2
            tag = " (extrap.)"
        pooled = pooled_fraction(x, eps)
        rows.append([
            f"{n:,}", f"{pooled:.0%}", fmt_time(t_sf), fmt_time(t_sg),
            fmt_time(t_nf) + tag, fmt_time(t_ng) + tag,
            f"{t_nf / t_sf:,.0f}x{tag}", f"{t_ng / t_sg:,.0f}x{tag}",
            fmt_time(t_h), f"{t_sf / t_h:.1f}x", f"{t_sg / t_h:.1f}x",
        ])
        if n == 10_000:
            verdict.append((t_nf / t_sf, t_ng / t_sg))
        print(f"  n={n:,} done (naive chunk {chunk})", flush=True)

    print()
    print("soft_rank (l2, eps = 2/n) vs O(n^2) pairwise-sigmoid soft rank (eps = 2/n); "
          "medians, float32")
    print_table(
        ["n", "pooled", "soft fwd", "soft fwd+bwd", "naive fwd", "naive fwd+bwd",
         "speedup fwd", "speedup fwd+bwd", "hard rankdata", "soft/hard fwd", "soft/hard fwd+bwd"],
        rows,
    )
    print("pooled: share of values in PAV blocks of >= 2 (the rest keep their hard rank); "
          "soft/hard: overhead factor of soft_rank over jaxstats.rankdata.")
    for sf, sg in verdict:
        ok = sf >= TARGET and sg >= TARGET
        print(f"target at n=10,000: >= {TARGET}x -> fwd {sf:,.0f}x, fwd+bwd {sg:,.0f}x: "
              f"{'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
