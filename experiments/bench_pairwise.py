"""Benchmark: O(n log n) pairwise statistics (jaxstats.pairwise) vs the naive O(n^2) definitions
and scipy.

    python experiments/bench_pairwise.py            # n = 10^3 .. 10^6 (< 10 min)
    python experiments/bench_pairwise.py --quick    # n = 10^4 only (< 1 min on an idle machine)
    python experiments/bench_pairwise.py --stats qn_scale,hodges_lehmann   # a subset

For every statistic and n:

* naive: numpy broadcasting over all pairs, chunked to ~64 MB per block (the robust
  estimators materialise their O(n^2) pair values and select with np.partition, in place).
  Each naive function computes what the jaxstats function returns: for mannwhitneyu that is U
  and its tie-corrected p-value, so the naive pass also counts the ties of the pooled sample
  pairwise (U alone is one O(n1 n2) count: 18.7 ms at 10^4, i.e. 80x before this was counted).
  Measured at 10^3, 10^4 and 3*10^4 (best of 2 runs, 3 at 10^3); for 10^5 and 10^6 it
  is extrapolated quadratically from 3*10^4, and the measured growth exponent between 10^4 and
  3*10^4 is printed so that the assumption can be checked ("~" marks extrapolated times).
* jaxstats: the public function under jax.jit, compiled outside the timed region, 3 warm-up
  calls, median of >= 5 calls, block_until_ready.
* scipy: the scipy.stats function where one exists (median of >= 3 calls).

Every jaxstats result is checked against the naive result (exact equality for the robust
order statistics, 1e-4 relative otherwise) or scipy where naive was not run; beyond the naive
sizes Qn's order statistic is certified by exact pair counts below / at it (and the
Hodges-Lehmann median by the counts that bracket it), Sn is not re-checked. The table is
followed by the issue's acceptance checks: >= 144.8x over naive at n = 10^4 for every
statistic, >= 1000x at n = 10^5, and within 2x of scipy's O(n log n) kendalltau,
mannwhitneyu and ks_2samp.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats as ss

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import fmt_time, machine_line, print_table, timeit  # noqa: E402

from jaxstats import _pairsel, pairwise  # noqa: E402

CHUNK_BYTES = 64 << 20
NAIVE_MAX = 30_000  # largest n at which the naive O(n^2) code is run


def _rows(n_cols: int, itemsize: int = 8) -> int:
    return max(1, CHUNK_BYTES // max(1, n_cols * itemsize))


# --------------------------------------------------------------------------------------------
# Naive O(n^2) implementations (numpy broadcasting, chunked)
# --------------------------------------------------------------------------------------------


def naive_kendalltau(x, y):
    n = len(x)
    p = q = tx = ty = 0
    for i0 in range(0, n, _rows(n)):
        sl = slice(i0, i0 + _rows(n))
        sx = np.sign(x[sl, None] - x[None, :])
        sy = np.sign(y[sl, None] - y[None, :])
        prod = sx * sy
        p += int(np.count_nonzero(prod > 0))
        q += int(np.count_nonzero(prod < 0))
        tx += int(np.count_nonzero((sx == 0) & (sy != 0)))
        ty += int(np.count_nonzero((sy == 0) & (sx != 0)))
    p, q, tx, ty = p // 2, q // 2, tx // 2, ty // 2  # every pair was seen twice
    return (p - q) / math.sqrt((p + q + tx) * (p + q + ty))


def _naive_avg_ranks(x):
    n = len(x)
    r = np.empty(n)
    for i0 in range(0, n, _rows(n)):
        blk = x[i0 : i0 + _rows(n), None]
        less = np.count_nonzero(x[None, :] < blk, axis=1)
        eq = np.count_nonzero(x[None, :] == blk, axis=1)
        r[i0 : i0 + len(blk)] = less + (eq + 1) / 2
    return r


def naive_spearmanr(x, y):
    rx, ry = _naive_avg_ranks(x), _naive_avg_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float(np.sum(rx * ry) / np.sqrt(np.sum(rx * rx) * np.sum(ry * ry)))


def naive_mannwhitneyu(x, y):
    """U and its tie-corrected two-sided asymptotic p-value (what jaxstats.mannwhitneyu and
    scipy return), both from their pairwise definitions: U counts the pairs (x_i > y_j) + 1/2
    (x_i == y_j); the tie term sum(t^3 - t) = sum over pooled elements of (t_i^2 - 1), where
    t_i counts the pooled elements equal to element i. Returns U (the checked value)."""
    n1, n2 = len(x), len(y)
    u = 0.0
    for i0 in range(0, n1, _rows(n2)):
        blk = x[i0 : i0 + _rows(n2), None]
        u += np.count_nonzero(blk > y[None, :]) + 0.5 * np.count_nonzero(blk == y[None, :])
    pooled = np.concatenate([x, y])
    n = n1 + n2
    tie = 0.0
    for i0 in range(0, n, _rows(n)):
        t = np.count_nonzero(pooled[i0 : i0 + _rows(n), None] == pooled[None, :], axis=1)
        tie += float(np.sum(t.astype(np.float64) ** 2 - 1))
    sd = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie / (n * (n - 1))))
    z = (abs(u - n1 * n2 / 2) - 0.5) / sd
    _pvalue = min(1.0, math.erfc(z / math.sqrt(2)))  # 2 * (1 - Phi(z)), computed but not returned
    return u


def naive_ks_2samp(x, y):
    pts = np.concatenate([x, y])
    d = 0.0
    for i0 in range(0, len(pts), _rows(len(x) + len(y))):
        blk = pts[i0 : i0 + _rows(len(x) + len(y)), None]
        f1 = np.count_nonzero(x[None, :] <= blk, axis=1) / len(x)
        f2 = np.count_nonzero(y[None, :] <= blk, axis=1) / len(y)
        d = max(d, float(np.max(np.abs(f1 - f2))))
    return d


def _mean_abs_diff(a, b):
    s = 0.0
    for i0 in range(0, len(a), _rows(len(b))):
        s += float(np.abs(a[i0 : i0 + _rows(len(b)), None] - b[None, :]).sum(dtype=np.float64))
    return s / (len(a) * len(b))


def naive_gini_mean_difference(x):
    n = len(x)
    return _mean_abs_diff(x, x) * n / (n - 1)


def naive_energy_distance(u, v):
    return math.sqrt(2 * _mean_abs_diff(u, v) - _mean_abs_diff(u, u) - _mean_abs_diff(v, v))


def naive_wasserstein_distance(u, v):
    pts = np.sort(np.concatenate([u, v]))
    total = 0.0
    m = len(pts) - 1
    for i0 in range(0, m, _rows(len(u) + len(v))):
        blk = pts[i0 : min(m, i0 + _rows(len(u) + len(v))), None]
        fu = np.count_nonzero(u[None, :] <= blk, axis=1) / len(u)
        fv = np.count_nonzero(v[None, :] <= blk, axis=1) / len(v)
        gaps = pts[i0 + 1 : i0 + 1 + len(blk)] - blk[:, 0]
        total += float(np.sum(np.abs(fu - fv) * gaps.astype(np.float64)))
    return total


def _pair_values(x, include_diagonal, op):
    """All pair values of the upper triangle, row block by row block, into one buffer."""
    n = len(x)
    k0 = 0 if include_diagonal else 1
    out = np.empty(n * (n + 1) // 2 if include_diagonal else n * (n - 1) // 2, x.dtype)
    pos = 0
    for i in range(n):
        row = op(x[i], x[i + k0 :])
        out[pos : pos + len(row)] = row
        pos += len(row)
    return out


def naive_hodges_lehmann(x):
    half = x.dtype.type(0.5)
    w = _pair_values(x, True, lambda a, b: a * half + b * half)
    m = len(w)
    k = (m - 1) // 2
    if m % 2:
        w.partition(k)
        return w[k]
    w.partition([k, k + 1])
    return w[k] * half + w[k + 1] * half


def naive_qn_scale(x):
    n = len(x)
    d = _pair_values(x, False, lambda a, b: np.abs(b - a))
    h = n // 2 + 1
    k = h * (h - 1) // 2
    d.partition(k - 1)
    return d[k - 1] * x.dtype.type(2.2219 * pairwise.qn_small_sample_factor(n))


def naive_sn_scale(x):
    n = len(x)
    himed = np.empty(n, x.dtype)
    for i0 in range(0, n, _rows(n, 4)):
        blk = np.abs(x[i0 : i0 + _rows(n, 4), None] - x[None, :])
        himed[i0 : i0 + len(blk)] = np.partition(blk, n // 2, axis=1)[:, n // 2]
    lo = (n + 1) // 2 - 1
    himed.partition(lo)
    return himed[lo] * x.dtype.type(1.1926 * pairwise.sn_small_sample_factor(n))


# --------------------------------------------------------------------------------------------
# Certificates for the robust order statistics where the naive O(n^2) selection is not run:
# count the pairs below / at a value with the same float32 pair arithmetic (vectorised binary
# search per row, numpy, O(n log n)).
# --------------------------------------------------------------------------------------------


def _count_pairs(a, t, walsh, strict):
    n = len(a)
    start = np.arange(n) + (0 if walsh else 1)
    lo, hi = start.copy(), np.full(n, n)
    half = a.dtype.type(0.5)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        b = a[np.minimum(mid, n - 1)]
        v = a * half + b * half if walsh else np.where(a == b, a.dtype.type(0), b - a)
        go = (v < t) if strict else (v <= t)
        act = lo < hi
        lo, hi = np.where(act & go, mid + 1, lo), np.where(act & ~go, mid, hi)
    return int(np.sum(lo - np.minimum(start, n)))


def certify(name, x, value):
    """True if ``value`` is provably the order statistic the estimator selects."""
    a = np.sort(x)
    n = len(a)
    if name == "qn_scale":  # value: the raw order statistic (constant=1, no c_n)
        h = n // 2 + 1
        k = h * (h - 1) // 2
        t = a.dtype.type(value)
        return _count_pairs(a, t, False, True) < k <= _count_pairs(a, t, False, False)
    if name == "hodges_lehmann":  # the median lies between the two middle Walsh averages
        m = n * (n + 1) // 2
        k = (m + 1) // 2
        t = a.dtype.type(value)
        lt, le = _count_pairs(a, t, True, True), _count_pairs(a, t, True, False)
        return (lt < k <= le) if m % 2 else (lt <= k and le >= k)
    return None


# --------------------------------------------------------------------------------------------
# The statistics: (name, jaxstats function, arity, naive, scipy, extract value, exact?)
# --------------------------------------------------------------------------------------------


def _stat(r):
    return float(r.statistic) if hasattr(r, "statistic") else float(r)


STATS = [
    ("kendalltau", pairwise.kendalltau, 2, naive_kendalltau,
     lambda x, y: ss.kendalltau(x, y), False),
    ("spearmanr", pairwise.spearmanr, 2, naive_spearmanr, lambda x, y: ss.spearmanr(x, y), False),
    ("mannwhitneyu", pairwise.mannwhitneyu, 2, naive_mannwhitneyu,
     lambda x, y: ss.mannwhitneyu(x, y, method="asymptotic"), False),
    ("ks_2samp", pairwise.ks_2samp, 2, naive_ks_2samp,
     lambda x, y: ss.ks_2samp(x, y, method="asymp"), False),
    ("wasserstein_distance", pairwise.wasserstein_distance, 2, naive_wasserstein_distance,
     ss.wasserstein_distance, False),
    ("energy_distance", pairwise.energy_distance, 2, naive_energy_distance, ss.energy_distance,
     False),
    ("gini_mean_difference", pairwise.gini_mean_difference, 1, naive_gini_mean_difference, None,
     False),
    ("hodges_lehmann", pairwise.hodges_lehmann, 1, naive_hodges_lehmann, None, True),
    ("qn_scale", pairwise.qn_scale, 1, naive_qn_scale, None, True),
    ("sn_scale", pairwise.sn_scale, 1, naive_sn_scale, None, True),
]
# scipy's O(n log n) implementations that jaxstats must stay within 2x of
SCIPY_2X = ["kendalltau", "mannwhitneyu", "ks_2samp"]


# robust estimators whose pair selection has a native CPU kernel and an XLA path
XLA_SELECT = ("hodges_lehmann", "qn_scale")


def _time_xla_selection(fn, args, repeats):
    """``fn`` timed with the pair selection on its XLA path (``_pairsel._USE_NATIVE = False``;
    the inner jit caches are cleared so that the switch is traced)."""
    _pairsel._USE_NATIVE = False
    jax.clear_caches()
    try:
        g = jax.jit(fn)
        g.lower(*args).compile()
        return timeit(g, *args, repeats=repeats, warmup=3)
    finally:
        _pairsel._USE_NATIVE = True
        jax.clear_caches()


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    y = (0.5 * x + rng.normal(size=n)).astype(np.float32)  # paired: correlated; two-sample: shifted
    return x, y


def _time_naive(naive, np_args, n):
    """Best of 2 runs (3 at n <= 1000): the first run pays first-touch page faults on its large
    temporaries (measured up to 1.7x at 3e4), which would flatter the speedups."""
    gc.collect()
    ts, val = [], float("nan")
    for _ in range(3 if n <= 1000 else 2):
        t0 = time.perf_counter()
        val = float(naive(*np_args))
        ts.append(time.perf_counter() - t0)
    return float(np.min(ts)), val


def run(sizes, naive_sizes, repeats):
    rows, records = [], []
    naive_times: dict[tuple[str, int], float] = {}
    for n in sorted(set(sizes) | set(naive_sizes)):
        x, y = make_data(n)
        jx, jy = jnp.asarray(x), jnp.asarray(y)
        for name, fn, arity, naive, sp, exact in STATS:
            np_args = (x, y) if arity == 2 else (x,)
            naive_val = float("nan")
            if n in naive_sizes:
                naive_times[(name, n)], naive_val = _time_naive(naive, np_args, n)
                print(f"  naive {name} n={n}: {fmt_time(naive_times[(name, n)])}",
                      file=sys.stderr, flush=True)
            if n not in sizes:
                continue  # naive-only size (the extrapolation base)
            if (name, n) in naive_times:
                t_naive, measured = naive_times[(name, n)], True
            else:
                base = max(m for (s_, m) in naive_times if s_ == name)
                t_naive = naive_times[(name, base)] * (n / base) ** 2
                measured = False
            args = (jx, jy) if arity == 2 else (jx,)
            f = jax.jit(fn)
            t0 = time.perf_counter()
            f.lower(*args).compile()
            compile_s = time.perf_counter() - t0
            t_jax = timeit(f, *args, repeats=repeats, warmup=3)
            got = _stat(f(*args))
            t_xla = float("nan")
            if name in XLA_SELECT and _pairsel._select_path(x.dtype) == "native":
                t_xla = _time_xla_selection(fn, args, repeats)
            t_sp = ref_sp = float("nan")
            if sp is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t_sp = timeit(lambda: sp(*np_args), repeats=3 if n >= 10**6 else 5,
                                  warmup=1)
                    ref_sp = _stat(sp(*np_args))
            # correctness of this very run
            if not math.isnan(naive_val):
                ok = (got == naive_val) if exact else math.isclose(got, naive_val, rel_tol=1e-4,
                                                                   abs_tol=1e-6)
                check = "= naive" if ok else f"MISMATCH naive {naive_val!r} vs {got!r}"
            elif not math.isnan(ref_sp):
                ok = math.isclose(got, ref_sp, rel_tol=1e-4, abs_tol=1e-6)
                check = "= scipy" if ok else f"MISMATCH scipy {ref_sp!r} vs {got!r}"
            elif name in ("qn_scale", "hodges_lehmann"):
                value = got if name == "hodges_lehmann" else float(
                    jax.jit(lambda v: pairwise.qn_scale(v, constant=1.0, finite_sample=False))(jx))
                ok = certify(name, x, value)
                check = "certified" if ok else f"MISMATCH certificate {value!r}"
            else:
                check = "-"
            rec = dict(stat=name, n=n, naive_s=t_naive, naive_measured=measured, jax_s=t_jax,
                       scipy_s=t_sp, xla_select_s=t_xla, compile_s=compile_s,
                       speedup=t_naive / t_jax,
                       vs_scipy=t_jax / t_sp if t_sp == t_sp else float("nan"), check=check)
            records.append(rec)
            rows.append([
                name, f"{n:.0e}".replace("e+0", "e"),
                ("" if measured else "~") + fmt_time(t_naive), fmt_time(t_jax),
                fmt_time(t_sp), "-" if t_xla != t_xla else fmt_time(t_xla),
                f"{rec['speedup']:,.0f}x",
                "-" if t_sp != t_sp else f"{rec['vs_scipy']:.2f}", check,
            ])
            print(f"  jaxstats {name} n={n}: {fmt_time(t_jax)} (compile {compile_s:.1f} s)",
                  file=sys.stderr, flush=True)
    return rows, records, naive_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 10^4 only (< 1 min)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stats", default="", help="comma-separated subset of the statistics")
    args = ap.parse_args()
    if args.stats:
        keep = set(args.stats.split(","))
        unknown = keep - {s[0] for s in STATS}
        if unknown:
            ap.error(f"unknown statistics: {sorted(unknown)}")
        STATS[:] = [s for s in STATS if s[0] in keep]
        SCIPY_2X[:] = [s for s in SCIPY_2X if s in keep]
    if args.quick:
        sizes, naive_sizes = [10**4], {10**4}
    else:
        sizes, naive_sizes = [10**3, 10**4, 10**5, 10**6], {10**3, 10**4, NAIVE_MAX}
    print(machine_line())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load:.1f} (2-core machine shared with other jobs)")
    t_start = time.perf_counter()
    rows, records, naive_times = run(sizes, naive_sizes, max(5, args.repeats))
    print()
    print_table(["statistic", "n", "naive O(n^2)", "jaxstats", "scipy", "XLA selection",
                 "speedup vs naive", "jax/scipy", "check"], rows)
    print("XLA selection: the same jaxstats function with the pair selection forced onto its "
          "XLA path\n(the one GPUs and JAXSTATS_NATIVE=0 use), timed in the same run.")
    print()
    if not args.quick:
        print("Naive growth exponent between 1e4 and 3e4 (2 = quadratic); 1e5 and 1e6 naive "
              "times (~) are extrapolated quadratically from the measured 3e4 time:")
        for name, *_ in STATS:
            a, b = naive_times[(name, 10**4)], naive_times[(name, NAIVE_MAX)]
            print(f"  {name:22s} {math.log(b / a) / math.log(NAIVE_MAX / 10**4):.2f}"
                  f"   (naive at 3e4: {fmt_time(b)})")
        print()
    print("Acceptance checks:")
    ok_all = True
    for name, *_ in STATS:
        for n, need in ((10**4, 144.8), (10**5, 1000.0)):
            rec = [r for r in records if r["stat"] == name and r["n"] == n]
            if not rec:
                continue
            good = rec[0]["speedup"] >= need
            ok_all &= good
            print(f"  {'PASS' if good else 'FAIL'} {name:22s} n={n:.0e}: "
                  f"{rec[0]['speedup']:,.0f}x over naive (need >= {need:g}x)")
    for name in SCIPY_2X:
        worst = max((r["vs_scipy"], r["n"]) for r in records if r["stat"] == name)
        good = worst[0] <= 2.0
        ok_all &= good
        print(f"  {'PASS' if good else 'FAIL'} {name:22s} within 2x of scipy at every n "
              f"(worst {worst[0]:.2f}x at n={worst[1]:.0e})")
    mism = [r for r in records if r["check"].startswith("MISMATCH")]
    ok_all &= not mism
    print(f"  {'PASS' if not mism else 'FAIL'} results agree with naive/scipy ({len(mism)} "
          "mismatches)")
    wall = time.perf_counter() - t_start
    print(f"overall: {'PASS' if ok_all else 'FAIL'}; wall time {wall:.0f} s")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "bench_pairwise" + ("_quick" if args.quick else "") + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(machine=machine_line(), records=records), f, indent=1)


if __name__ == "__main__":
    main()
