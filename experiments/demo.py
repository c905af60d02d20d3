"""jaxstats demo: population baselines for a synthetic fleet (the README's first command).

    python experiments/demo.py                 # default synthetic fleet, printed report
    python experiments/demo.py --agents 100000 # a bigger fleet

Generates a seeded fleet with injected anomalies (experiments/fleet.py), then for the last
step compares every agent with all its peers on every feature in O(n log n) with
``jaxstats.population_baseline`` (percentile, robust z-score, median, MAD), flags agents whose
largest |z| passes a threshold, and prints detection quality against the ground truth and
the time it took next to the naive O(n^2) all-pairs computation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import fmt_time, machine_line, print_table, timeit  # noqa: E402
from fleet import KINDS, make_fleet  # noqa: E402

import jaxstats  # noqa: E402


def naive_percentiles(x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """The O(n^2) prototype: every agent against every other, per feature."""
    n = x.shape[0]
    out = np.empty(x.shape, dtype=np.float64)
    for j in range(x.shape[1]):
        col = np.ascontiguousarray(x[:, j])
        for i in range(0, n, chunk):
            xi = col[i : i + chunk, None]
            left = (col[None, :] < xi).sum(axis=1)
            right = (col[None, :] <= xi).sum(axis=1)
            out[i : i + chunk, j] = (left + right + (right > left)) * (50.0 / n)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=20000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--steps", type=int, default=288)
    ap.add_argument("--threshold", type=float, default=4.0, help="robust |z| alarm threshold")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    print("jaxstats demo: population baselines over a synthetic fleet")
    print(machine_line())
    fleet = make_fleet(args.agents, args.steps, args.features, seed=args.seed)
    t_last = args.steps - 1
    truth = fleet.labels[t_last]
    # Each agent's own scale first (its median / MAD over the first third of the history, a
    # clean window), so that agents of different sizes become comparable; then every agent is
    # compared with all its peers on every feature.
    hist = jnp.asarray(fleet.obs[: args.steps // 3])  # [time, agents, features]
    own_med = jaxstats.median(hist, axis=0)
    own_mad = jaxstats.median_abs_deviation(hist, axis=0, scale="normal")
    x = np.asarray((jnp.asarray(fleet.obs[t_last]) - own_med) / jnp.maximum(own_mad, 1e-6))
    print(
        f"fleet: {args.agents:,} agents x {args.features} features, {args.steps} steps; "
        f"{int(truth.sum())} agents anomalous at the last step "
        f"({', '.join(f'{k}: {int(((fleet.kind == i) & truth).sum())}' for i, k in enumerate(KINDS))})"
    )

    baseline = jax.jit(jaxstats.population_baseline)
    xj = jnp.asarray(x)
    res = jax.block_until_ready(baseline(xj))
    t_fast = timeit(baseline, xj, repeats=5)
    score = np.max(np.abs(np.asarray(res.zscore)), axis=1)
    alarm = score > args.threshold

    tp = int((alarm & truth).sum())
    fp = int((alarm & ~truth).sum())
    fn = int((~alarm & truth).sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)

    print("\nPopulation baseline of the self-normalized deviations, per feature:")
    rows = [
        [f"f{j}", f"{float(res.median[j]):.3f}", f"{1.4826 * float(res.mad[j]):.3f}"]
        for j in range(args.features)
    ]
    print_table(["feature", "median", "robust sigma"], rows)

    print(f"\nAlarms at |z| > {args.threshold}: {int(alarm.sum())} agents")
    print_table(
        ["true positives", "false positives", "missed", "precision", "recall"],
        [[tp, fp, fn, f"{precision:.3f}", f"{recall:.3f}"]],
    )
    recall_kind = []
    for i, k in enumerate(KINDS):
        m = (fleet.kind == i) & truth
        if m.any():
            recall_kind.append([k, int(m.sum()), f"{(alarm & m).sum() / m.sum():.2f}"])
    print_table(["anomaly kind", "agents", "recall"], recall_kind)

    top = np.argsort(-score)[:5]
    print("\nMost unusual agents (largest robust |z| over features):")
    print_table(
        ["agent", "max |z|", "worst feature", "percentile there", "truth"],
        [
            [
                int(a),
                f"{score[a]:.1f}",
                f"f{int(np.argmax(np.abs(np.asarray(res.zscore[a]))))}",
                f"{float(res.percentile[a, int(np.argmax(np.abs(np.asarray(res.zscore[a]))))]):.2f}",
                KINDS[fleet.kind[a]] if truth[a] else "normal",
            ]
            for a in top
        ],
    )

    n_naive = min(args.agents, 5000)
    t0 = time.perf_counter()
    naive_percentiles(x[:n_naive])
    t_naive_sub = time.perf_counter() - t0
    t_naive = t_naive_sub * (args.agents / n_naive) ** 2
    note = "" if n_naive == args.agents else f" (measured on {n_naive:,} agents, scaled by n^2)"
    print(
        f"\nTime for the whole baseline ({args.agents:,} agents x {args.features} features): "
        f"jaxstats {fmt_time(t_fast)} vs naive all-pairs {fmt_time(t_naive)}{note} "
        f"-> {t_naive / t_fast:,.0f}x"
    )


if __name__ == "__main__":
    main()
