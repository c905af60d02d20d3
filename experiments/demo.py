"""jaxstats demo: the real-time monitor on a fleet of agents (the README's first command).

    python experiments/demo.py                          # synthetic fleet with ground truth
    python experiments/demo.py --agents 100000          # a bigger fleet
    python experiments/demo.py --data ../shared/data/asd  # ASD: 12 servers x 19 metrics
    python experiments/demo.py --data ../shared/data/nab  # NAB: 47 real univariate series
    python experiments/demo.py --data ../shared/data      # both

Streams observations through ``jaxstats.Monitor`` (one jitted step per time step: own
baseline -> peer baseline -> evidence -> alarms), then prints detection quality against the
ground truth (AUC-PR, best F1, detection delay per anomaly kind), the throughput, and the same
metrics for peers a user might pick instead: PyOD's ECOD (fit on a training part) and River's
HalfSpaceTrees (streaming), run on the same agents and steps (``pip install pyod river``;
skipped with a note when missing). Plots of scores and alarms go to experiments/results/.
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
import datasets  # noqa: E402
import peers  # noqa: E402
from _timing import fmt_time, machine_line, print_table  # noqa: E402
from fleet import KINDS, make_fleet, to_slots  # noqa: E402

from jaxstats.monitor import Monitor  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _progress(iterable, total, desc):
    try:
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit="step", leave=False, mininterval=0.5)
    except ImportError:  # pragma: no cover
        return iterable


def _f(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _rate(n_obs, seconds):
    r = n_obs / seconds
    return f"{r / 1e6:.2f} M/s" if r >= 1e6 else f"{r / 1e3:.1f} k/s"


def _delay_summary(delays):
    d = np.asarray(delays, float)
    if d.size == 0:
        return "-", "-", "-"
    hit = ~np.isnan(d)
    det = f"{int(hit.sum())}/{d.size}"
    if not hit.any():
        return det, "-", "-"
    return det, f"{np.median(d[hit]):.0f}", f"{np.percentile(d[hit], 90):.0f}"


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:  # pragma: no cover
        print("(matplotlib not installed: no plots)")
        return None


def _describe(monitor) -> str:
    """The monitor's settings, non-defaults first."""
    default = Monitor().config()
    cfg = monitor.config()
    changed = [f"{k}={v!r}" for k, v in cfg.items() if default[k] != v]
    key = ("half_life", "warmup", "tail", "beta_a", "threshold")
    rest = [f"{k}={cfg[k]!r}" for k in key if default[k] == cfg[k]]
    return f"Monitor({', '.join(changed) or 'defaults'}) [{', '.join(rest)}]"


# --------------------------------------------------------------------------------------------
# Streaming driver
# --------------------------------------------------------------------------------------------


def stream(monitor, obs, present=None, desc="monitor"):
    """Run ``monitor`` step by step over ``obs[time, agents, features]`` (the way a service
    would), joining/leaving agents when ``present[time, agents]`` changes.

    Returns ``(log_odds[time, agents], alarm[time, agents], top_feature[time, agents],
    step_seconds[time])``; the first step (compilation) is timed separately.
    """
    n_steps, n_agents, n_features = obs.shape
    active0 = np.ones(n_agents, bool) if present is None else present[0]
    state = monitor.init(n_agents, n_features, active=jnp.asarray(active0))
    step = monitor.jit_step(fields=("log_odds", "alarm", "top_feature"))  # the lean decision loop
    join = jax.jit(monitor.join, donate_argnums=0)
    leave = jax.jit(monitor.leave, donate_argnums=0)
    log_odds = np.empty((n_steps, n_agents), np.float32)
    alarm = np.empty((n_steps, n_agents), bool)
    top = np.empty((n_steps, n_agents), np.int32)
    secs = np.empty(n_steps)
    active = active0.copy()
    for t in _progress(range(n_steps), n_steps, desc):
        t0 = time.perf_counter()
        if present is not None and not np.array_equal(present[t], active):
            joining, leaving = present[t] & ~active, active & ~present[t]
            if joining.any():
                state = join(state, jnp.asarray(joining))
            if leaving.any():
                state = leave(state, jnp.asarray(leaving))
            active = present[t].copy()
        state, rep = step(state, jnp.asarray(obs[t]))
        log_odds[t], alarm[t], top[t] = jax.device_get((rep["log_odds"], rep["alarm"], rep["top_feature"]))
        secs[t] = time.perf_counter() - t0
    return log_odds, alarm, top, secs


def replay(monitor, obs, *, warm=None):
    """Offline replay with ``Monitor.run`` (``lax.scan``): ``obs[agents, time, features]``.

    ``warm`` (``[agents, time, features]``) is streamed first without being reported (e.g. a
    training part). Returns ``(report, seconds)``; compilation is excluded from ``seconds``.
    """
    n_agents, _, n_features = obs.shape

    def go(state, x):
        state, rep = monitor.run(state, x)
        return state, (rep.log_odds, rep.alarm, rep.top_feature, rep.cusum)

    run = jax.jit(go, donate_argnums=0)
    state = monitor.init(n_agents, n_features)
    parts = [warm] if warm is not None else []
    parts.append(obs)
    compiled = [run.lower(monitor.init(n_agents, n_features), jnp.asarray(p)).compile() for p in parts]
    t0 = time.perf_counter()
    for fn, p in zip(compiled, parts):
        state, out = fn(state, jnp.asarray(p))
    out = jax.block_until_ready(out)
    return tuple(np.asarray(o) for o in out), time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# Synthetic fleet
# --------------------------------------------------------------------------------------------


def run_synthetic(args) -> None:
    n_groups = 8
    print(
        f"Synthetic fleet: {args.agents:,} agents x {args.features} features x {args.steps} steps "
        f"(5-minute steps: one day), {n_groups} correlated groups, diurnal load, Student-t noise, "
        "2% anomalous agents, 2% joining/leaving, 0.1% missing values"
    )
    t0 = time.perf_counter()
    fleet = make_fleet(
        args.agents, args.steps, args.features, n_groups=n_groups, missing_rate=0.001,
        churn_rate=0.02, seed=args.seed,
    )
    slots = to_slots(fleet)
    used = slots.agent >= 0
    print(
        f"  generated in {time.perf_counter() - t0:.1f} s; laid out as {n_groups} peer groups x "
        f"{slots.capacity} slots ({int((~used).sum())} empty padding slots)"
    )
    monitor = Monitor(n_groups=n_groups)
    print(f"  {_describe(monitor)}")

    log_odds, alarm, top, secs = stream(monitor, slots.obs, slots.present, desc="streaming")
    n_slots = slots.obs.shape[1]
    steady = secs[1:]
    n_obs = int(np.sum(slots.present[1:])) * args.features

    # ---- detection quality over present agents after the warm-up ------------------------
    t_eval = monitor.warmup + 16
    agent = slots.agent[used]
    kind = fleet.kind[agent]
    onset = fleet.onset[agent]
    lab = slots.labels[:, used].T  # [agents, time]
    pres = slots.present[:, used].T
    lo = log_odds[:, used].T
    al = alarm[:, used].T
    tf = top[:, used].T
    ev = pres.copy()
    ev[:, :t_eval] = False
    ap = peers.average_precision(np.where(ev, lo, np.nan), lab)
    f1, _ = peers.best_f1(np.where(ev, lo, np.nan), lab)
    tp = int(np.sum(al & lab & ev))
    precision = tp / max(int(np.sum(al & ev)), 1)
    recall = tp / max(int(np.sum(lab & ev)), 1)
    normal = kind < 0
    fa_events = sum(peers.false_alarm_events(al[i, t_eval:], lab[i, t_eval:]) for i in np.nonzero(normal)[0])
    fa_rate = fa_events / max(int(np.sum(ev[normal])), 1) * 1e4
    print("\nDetection quality (ground truth; agent-steps after the warm-up):")
    print_table(
        ["detector", "AUC-PR", "best F1", "alarm precision", "alarm recall", "false alarms / 10k agent-steps", "normal agents ever alarmed"],
        [["jaxstats.Monitor", _f(ap), _f(f1), _f(precision), _f(recall), f"{fa_rate:.2f}", f"{al[normal].any(axis=1).mean():.2%}"]],
    )
    print(f"(base rate: {lab[ev].mean():.2%} of agent-steps anomalous; alarms at CUSUM > {monitor.threshold} nats)")

    rows = []
    for k, name in enumerate(KINDS):
        ids = np.nonzero(kind == k)[0]
        delays = [peers.detection_delays(al[i], lab[i])[0] for i in ids if onset[i] >= 0]
        det, med, p90 = _delay_summary(delays)
        feat_ok = [
            fleet.anomalous_features[agent[i], tf[i, onset[i] + int(d)]]
            for i, d in zip(ids, delays)
            if not np.isnan(d) and tf[i, onset[i] + int(d)] >= 0
        ]
        rows.append([name, len(ids), det, med, p90, f"{np.mean(feat_ok):.0%}" if feat_ok else "-"])
    print("\nDetection delay per anomaly kind (steps from onset to the first alarm):")
    print_table(["anomaly kind", "agents", "detected", "median delay", "p90 delay", "top feature correct"], rows)

    print("\nThroughput (streaming, one jitted step per time step, incl. host transfers):")
    print_table(
        ["slots x features", "steps", "step p50", "step p99", "agent-observations/s", "per agent-feature", "compile (first step)"],
        [[
            f"{n_slots:,} x {args.features}", len(steady), fmt_time(float(np.median(steady))),
            fmt_time(float(np.percentile(steady, 99))), _rate(n_obs, steady.sum()),
            f"{steady.sum() / (len(steady) * n_slots * args.features) * 1e9:.1f} ns", fmt_time(float(secs[0])),
        ]],
    )

    if not args.no_peers:
        compare_synthetic(args, fleet, monitor, agent, kind, onset, lab, lo, al, steady.sum() / n_obs)
    if not args.no_plots:
        plot_synthetic(fleet, slots, used, log_odds, alarm, monitor, args)


def compare_synthetic(args, fleet, monitor, agent, kind, onset, lab, lo, al, sec_per_obs) -> None:
    """Peers on a stratified subsample of agents: every kind plus normal agents, trained on
    the anomaly-free first third of the day, scored on the rest (ours on the same cells)."""
    avail = peers.available()
    rng = np.random.default_rng(args.seed + 1)
    per_kind = max(1, args.peer_agents // 10)
    pick = []
    for k in range(len(KINDS)):
        ids = np.nonzero(kind == k)[0]
        pick.extend(rng.choice(ids, size=min(per_kind, ids.size), replace=False).tolist())
    normal_ids = np.nonzero((kind < 0) & fleet.present[:, agent].all(axis=0))[0]
    pick.extend(rng.choice(normal_ids, size=min(args.peer_agents - len(pick), normal_ids.size), replace=False).tolist())
    pick = np.array(sorted(pick))
    split = args.steps // 3  # anomalies start at or after steps // 3
    raw = fleet.obs[:, agent[pick]]  # [time, agents, features]
    train = [raw[:split, i] for i in range(len(pick))]
    test = [raw[split:, i] for i in range(len(pick))]
    y = lab[pick, split:]
    results = [("jaxstats.Monitor", lo[pick, split:], al[pick, split:], 1.0 / sec_per_obs, "(whole fleet)")]
    for name, fn in (("ECOD (PyOD)", peers.run_ecod), ("HalfSpaceTrees (River)", peers.run_hst)):
        if avail[name] is not None:
            print(f"\n(note: {name} skipped: {avail[name]})")
            continue
        r = fn(train, test)
        _, thr = peers.best_f1(r.scores, y)
        results.append((name, r.scores, r.scores >= thr, r.n_obs / r.seconds, "(alarms at its best-F1 threshold)"))
    rows = []
    for name, score, alarm, rate, note in results:
        delays = []
        for j, i in enumerate(pick):
            if kind[i] >= 0:
                delays += peers.detection_delays(alarm[j], y[j])
        det, med, _ = _delay_summary(delays)
        fa = sum(peers.false_alarm_events(alarm[j], y[j]) for j in range(len(pick)) if kind[pick[j]] < 0)
        rows.append([name, _f(peers.average_precision(score, y)), _f(peers.best_f1(score, y)[0]), det, med, fa, _rate(rate, 1.0), note])
    print(
        f"\nSide by side on the same {len(pick)} agents ({int((kind[pick] >= 0).sum())} anomalous) x "
        f"{args.steps - split} steps (peers trained on the first {split} steps):"
    )
    print_table(["detector", "AUC-PR", "best F1", "events detected", "median delay", "false alarm events", "agent-obs/s", "alarms"], rows)


def plot_synthetic(fleet, slots, used, log_odds, alarm, monitor, args) -> None:
    plt = _plt()
    if plt is None:
        return
    os.makedirs(RESULTS, exist_ok=True)
    fig, axes = plt.subplots(len(KINDS) + 1, 2, figsize=(13, 2.3 * (len(KINDS) + 1)), sharex=True)
    slot_of = {int(a): s for s, a in enumerate(slots.agent) if a >= 0}
    t = np.arange(args.steps)
    for k, name in enumerate(KINDS):
        ids = np.nonzero(fleet.kind == k)[0]
        if not ids.size:
            continue
        a = int(ids[0])
        s = slot_of[a]
        f = int(np.argmax(fleet.anomalous_features[a]))
        ax, bx = axes[k]
        ax.plot(t, fleet.obs[:, a, f], lw=0.8, color="k")
        ax.set_ylabel(f"{name}\nagent {a}, f{f}", fontsize=8)
        bx.plot(t, log_odds[:, s], lw=0.9, color="C0")
        bx.axhline(np.log(monitor.prior / (1 - monitor.prior)) + monitor.threshold, color="C3", lw=0.8, ls="--")
        for x in (ax, bx):
            x.fill_between(t, 0, 1, where=fleet.labels[:, a], color="C1", alpha=0.25, transform=x.get_xaxis_transform(), lw=0)
        bx.fill_between(t, 0, 0.08, where=alarm[:, s], color="C3", transform=bx.get_xaxis_transform(), lw=0)
        bx.set_ylabel("log-odds", fontsize=8)
    ax, bx = axes[-1]
    ax.plot(t, fleet.labels.sum(axis=1), color="C1", label="truly anomalous agents")
    ax.plot(t, alarm[:, used].sum(axis=1), color="C3", lw=0.9, label="agents in alarm")
    ax.legend(fontsize=7)
    ax.set_xlabel("step")
    bx.hist(np.asarray(log_odds[monitor.warmup + 16 :, used]).ravel(), bins=100, log=True, color="C0")
    bx.set_xlabel("log-odds (all agent-steps)")
    axes[0, 0].set_title("observation (orange: ground truth)", fontsize=9)
    axes[0, 1].set_title("posterior log-odds (dashed: alarm threshold; red: alarms)", fontsize=9)
    fig.tight_layout()
    path = os.path.join(RESULTS, "demo_synthetic.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nPlot: {os.path.relpath(path)}")


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


def run_asd(path: str, args) -> None:
    d = datasets.load_asd(path)
    n_servers, n_test, n_features = d.test.shape
    print(
        f"\nASD ({path}): {n_servers} servers x {n_features} metrics, train {max(len(t) for t in d.train)} "
        f"steps (unlabeled), test {n_test} steps ({d.labels.mean():.2%} anomalous, "
        f"{sum(len(s) for s in d.segments)} labeled segments)"
    )
    # Metrics are min-max scaled to [0, 1] upstream: a change below 1% of the range is noise.
    monitor = Monitor(min_scale=0.01)
    print(f"  {_describe(monitor)}")
    t_train = max(len(t) for t in d.train)
    warm = np.full((n_servers, t_train, n_features), np.nan, np.float32)
    for i, t in enumerate(d.train):
        warm[i, t_train - len(t) :] = t  # align the ends; missing start = NaN (missing)
    (lo, al, top, _), secs = replay(monitor, d.test, warm=warm)
    n_obs = n_servers * (t_train + n_test)
    y = d.labels
    results = [("jaxstats.Monitor", lo, al, n_obs / secs, "")]
    results += _asd_peers(d, y)
    rows = []
    for name, score, alarm, rate, note in results:
        delays = [x for i in range(n_servers) for x in peers.detection_delays(alarm[i], y[i])]
        det, med, _ = _delay_summary(delays)
        fa = sum(peers.false_alarm_events(alarm[i], y[i]) for i in range(n_servers))
        rows.append([name, _f(peers.average_precision(score, y)), _f(peers.best_f1(score, y)[0]), det, med, fa, _rate(rate, 1.0), note])
    print("\nASD test part, all servers pooled:")
    print_table(["detector", "AUC-PR", "best F1", "segments detected", "median delay", "false alarm events", "agent-obs/s", "alarms"], rows)
    # Attribution: does the top feature at the first alarm belong to the segment's metrics?
    hits = []
    for i, segs in enumerate(d.segments):
        for s, e, ms in segs:
            w = np.nonzero(al[i, s : e + 1])[0]
            if w.size and ms and top[i, s + w[0]] >= 0:
                hits.append(top[i, s + w[0]] in ms)
    if hits:
        print(f"Top feature at the first alarm is one of the segment's labeled metrics in {np.mean(hits):.0%} of {len(hits)} detected segments.")
    if not args.no_plots:
        _plot_series("demo_asd.png", [f"{d.names[i]}" for i in range(3)], [d.test[i].mean(axis=1) for i in range(3)],
                     [lo[i] for i in range(3)], [al[i] for i in range(3)], [y[i] for i in range(3)], monitor)


def _asd_peers(d, y):
    out = []
    avail = peers.available()
    for name, fn in (("ECOD (PyOD)", peers.run_ecod), ("HalfSpaceTrees (River)", peers.run_hst)):
        if avail[name] is not None:
            print(f"(note: {name} skipped: {avail[name]})")
            continue
        r = fn(d.train, list(d.test))
        _, thr = peers.best_f1(r.scores, y)
        out.append((name, r.scores, r.scores >= thr, r.n_obs / r.seconds, "best-F1 threshold"))
    return out


def run_nab(path: str, args) -> None:
    d = datasets.load_nab(path)
    lengths = [len(v) for v in d.values]
    n, t_max = len(d.values), max(lengths)
    print(
        f"\nNAB ({path}): {n} real series ({sum(lengths):,} points, {sum(len(w) for w in d.windows)} "
        "labeled windows); each series is one agent with one feature, padded with missing values"
    )
    # The series are unrelated metrics on different clocks: no peer stage (own baselines only).
    monitor = Monitor(population=False)
    print(f"  {_describe(monitor)}")
    x = np.full((n, t_max, 1), np.nan, np.float32)
    for i, v in enumerate(d.values):
        x[i, : len(v), 0] = v
    (lo, al, _, cusum), secs = replay(monitor, x)
    prob = [int(0.15 * m) for m in lengths]  # NAB's probationary period: not scored
    y_all = [d.labels[i][prob[i] :] for i in range(n)]

    def pooled(scores):
        return np.concatenate([scores[i][prob[i] : lengths[i]] for i in range(n)]), np.concatenate(y_all)

    def nab_best(score_rows, thresholds):
        best = (-np.inf, None)
        for h in thresholds:
            det = [peers.onsets(score_rows[i][: lengths[i]] > h) for i in range(n)]
            sc = peers.nab_score(det, d.windows, lengths)
            best = max(best, (sc, h), key=lambda z: z[0])
        return best

    results = []
    ours_nab_default = peers.nab_score([peers.onsets(al[i, : lengths[i]]) for i in range(n)], d.windows, lengths)
    ours_nab_best, h_best = nab_best(cusum, np.arange(2.0, 36.0, 2.0))
    results.append(("jaxstats.Monitor", lo, al, ours_nab_default, f"{ours_nab_best:.1f} (h={h_best:g})", sum(lengths) / secs))
    avail = peers.available()
    train = [v[: prob[i], None] for i, v in enumerate(d.values)]
    test = [v[prob[i] :, None] for i, v in enumerate(d.values)]
    for name, fn in (("ECOD (PyOD)", peers.run_ecod), ("HalfSpaceTrees (River)", peers.run_hst)):
        if avail[name] is not None:
            print(f"(note: {name} skipped: {avail[name]})")
            continue
        r = fn(train, test)
        full = np.full((n, t_max), np.nan)
        for i in range(n):
            full[i, prob[i] : lengths[i]] = r.scores[i, : lengths[i] - prob[i]]
        s, yy = pooled(full)
        _, thr = peers.best_f1(s, yy)
        qs = np.unique(np.nanquantile(s, np.linspace(0.5, 0.9999, 60)))
        nb, _ = nab_best(np.nan_to_num(full, nan=-np.inf), qs)
        f1_alarm = [np.nan_to_num(full[i], nan=-np.inf) >= thr for i in range(n)]
        results.append((name, full, np.array(f1_alarm), peers.nab_score([peers.onsets(a[: lengths[i]]) for i, a in enumerate(f1_alarm)], d.windows, lengths), f"{nb:.1f}", r.n_obs / r.seconds))
    rows = []
    for name, score, alarm, nab_fixed, nab_opt, rate in results:
        s, yy = pooled(score)
        delays = []
        for i in range(n):
            a = np.asarray(alarm[i][: lengths[i]], bool).copy()
            a[: prob[i]] = False
            for ws, we in d.windows[i]:
                hit = np.nonzero(a[ws : we + 1])[0]
                delays.append(float(hit[0]) if hit.size else np.nan)
        det, med, _ = _delay_summary(delays)
        rows.append([name, _f(peers.average_precision(s, yy)), _f(peers.best_f1(s, yy)[0]), f"{nab_fixed:.1f}", nab_opt, det, med, _rate(rate, 1.0)])
    print("\nNAB real series (after each series' 15% probationary period), pooled:")
    print_table(["detector", "AUC-PR", "best F1", "NAB score (alarms)", "NAB score (best threshold)", "windows detected", "median delay", "agent-obs/s"], rows)
    print("(NAB score: standard-profile weights, 100 = every window detected at its start, 0 = never detect; "
          "'alarms' = jaxstats' own alarms / peers' best-F1 threshold; 'best threshold' = NAB's per-detector optimum)")
    if not args.no_plots:
        pick = [i for i, nm in enumerate(d.names) if "machine_temperature" in nm or "ec2_cpu_utilization_825cc2" in nm or "Twitter_volume_AAPL" in nm][:3]
        _plot_series("demo_nab.png", [d.names[i] for i in pick], [d.values[i] for i in pick],
                     [lo[i, : lengths[i]] for i in pick], [al[i, : lengths[i]] for i in pick], [d.labels[i] for i in pick], monitor)


def _plot_series(fname, names, values, log_odds, alarms, labels, monitor) -> None:
    plt = _plt()
    if plt is None:
        return
    os.makedirs(RESULTS, exist_ok=True)
    fig, axes = plt.subplots(len(names), 2, figsize=(13, 2.4 * len(names)), squeeze=False)
    for k, (nm, v, lo, al, y) in enumerate(zip(names, values, log_odds, alarms, labels)):
        t = np.arange(len(v))
        ax, bx = axes[k]
        ax.plot(t, v, lw=0.5, color="k")
        ax.set_title(nm, fontsize=8)
        bx.plot(t, lo, lw=0.6, color="C0")
        bx.axhline(np.log(monitor.prior / (1 - monitor.prior)) + monitor.threshold, color="C3", lw=0.8, ls="--")
        for x in (ax, bx):
            x.fill_between(t, 0, 1, where=np.asarray(y, bool), color="C1", alpha=0.3, transform=x.get_xaxis_transform(), lw=0)
        bx.fill_between(t, 0, 0.08, where=np.asarray(al, bool), color="C3", transform=bx.get_xaxis_transform(), lw=0)
    fig.tight_layout()
    path = os.path.join(RESULTS, fname)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"Plot: {os.path.relpath(path)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder of NAB or ASD (or their parent); default: synthetic fleet")
    ap.add_argument("--agents", type=int, default=20000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--steps", type=int, default=288)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-agents", type=int, default=200, help="synthetic agents the peers are compared on")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)

    print("jaxstats demo: the real-time monitor (own baseline -> peers -> evidence -> alarms)")
    print(machine_line())
    if args.data is None:
        run_synthetic(args)
        return 0
    try:
        found = datasets.locate(args.data)
    except datasets.DataNotFound as e:
        print(f"\n{e}")
        return 2
    if "asd" in found:
        run_asd(found["asd"], args)
    if "nab" in found:
        run_nab(found["nab"], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
