"""jaxstats across processes and hosts: one sharded monitor-style step on a multi-process mesh.

Every process owns a contiguous slice of the agents (``jaxstats.shard.process_agent_slice``),
builds global arrays from its own slice only (``from_process_local``) and runs the *same*
code as a single-device program: a per-agent sketch update, population baselines (exact
``gather`` and scalable ``select`` strategies), ranks, evidence totals (compensated sums and
log-sum-exp) and a merge of sketch states across devices. Each process writes its slice of
the per-agent results and the replicated results to ``--out``; ``--launch N`` checks them
against a single-process computation.

Running it
----------
Localhost, N CPU processes (gloo collectives), checked against one process::

    python experiments/multihost.py --launch 2 --devices-per-process 2
    python experiments/multihost.py --launch 4 --devices-per-process 1

One process of a real cluster job (every process runs the same command)::

    # explicit: the coordinator is process 0's host; any free port
    JAXSTATS_COORDINATOR=node0:12345 JAXSTATS_NUM_PROCESSES=16 JAXSTATS_PROCESS_ID=$RANK \\
        python experiments/multihost.py --platform gpu --agents 100000000 --out /shared/run1

    # SLURM (srun -N 4 --ntasks-per-node=8 --gpus-per-task=1 ...): no variables needed;
    # jax.distributed.initialize() reads SLURM_* (and Open MPI / Kubernetes / TPU
    # metadata) by itself
    srun python experiments/multihost.py --platform gpu --agents 100000000

Environment variables (flags override them): ``JAXSTATS_COORDINATOR`` (``host:port`` of
process 0; JAX's own ``JAX_COORDINATOR_ADDRESS`` also works), ``JAXSTATS_NUM_PROCESSES``,
``JAXSTATS_PROCESS_ID``. With none of them and no cluster detected the script runs as one
process. On GPUs the code path is the same (the native CPU sort kernel is replaced by XLA's
sort through ``lax.platform_dependent``; collectives go over NCCL); ``--platform gpu`` only
skips the forced CPU device count. ``--agents`` must be divisible by the total device
count (pad with ``jaxstats.shard.pad_agents`` otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

CHUNK = 4096  # agents per seeded chunk: any process can generate any agent range alone


def fleet_scores(start: int, stop: int, n_features: int, seed: int = 0) -> np.ndarray:
    """Deterministic ``[stop - start, n_features]`` float32 scores of agents ``start:stop``.

    Generated in seeded chunks of global agent indices, so every process produces exactly
    its own slice without materialising the fleet. Feature 1 is rounded (ties); one agent
    in 1000 is NaN on the last feature (exercises the NaN policies).
    """
    out = np.empty((stop - start, n_features), np.float32)
    c0, c1 = start // CHUNK, (stop - 1) // CHUNK if stop > start else start // CHUNK - 1
    for c in range(c0, c1 + 1):
        rng = np.random.default_rng([seed, c])
        block = rng.standard_t(4.0, size=(CHUNK, n_features)).astype(np.float32)
        if n_features > 1:
            block[:, 1] = np.round(block[:, 1] * 2)
        ids = c * CHUNK + np.arange(CHUNK)
        block[ids % 1000 == 7, -1] = np.nan
        lo, hi = max(start, c * CHUNK), min(stop, (c + 1) * CHUNK)
        out[lo - start : hi - start] = block[lo - c * CHUNK : hi - c * CHUNK]
    return out


def compute(x_local: np.ndarray, n_agents: int, *, strategy_select: bool = True) -> dict:
    """The sharded step on the global mesh; returns this process's results (numpy)."""
    import functools

    import jax
    import jax.numpy as jnp

    import jaxstats
    from jaxstats import shard, sketch

    mesh = shard.agent_mesh()
    sk = sketch.moments()
    x = shard.from_process_local(x_local, mesh)
    out: dict = {}

    # A monitor-style step written for a block of agents: per-agent sketch update (local),
    # population baseline and evidence total (collectives), merged population moments.
    def step(states, obs, *, axis_name=None):
        states = jax.vmap(lambda s, o: sk.update(s, o, where=~jnp.isnan(o)))(states, obs)
        base = shard.population_baseline_across(
            obs, axis_name, nan_policy="omit", strategy="gather"
        )
        llr = jnp.where(jnp.isnan(obs), 0.0, -0.5 * obs**2)  # stand-in log-likelihood ratios
        total = shard.sum_across(llr, axis_name)
        lse = shard.logsumexp_across(llr, axis_name)
        part = sketch.from_batch(sk, obs[:, 0])  # this device's part of one pooled stream
        pooled = shard.merge_across(sk, part, axis_name)
        return states, base, total, lse, sk.query(pooled)

    # Every process builds only its own agents' states (no process holds the fleet).
    one = sk.init(jax.ShapeDtypeStruct(x.shape[1:], jnp.float32))
    local = jax.tree_util.tree_map(lambda a: np.zeros((x_local.shape[0],) + a.shape, a.dtype), one)
    states0 = shard.from_process_local(local, mesh)
    run = jax.jit(shard.agent_map(functools.partial(step, axis_name="agents"), mesh))
    t0 = time.perf_counter()
    states, base, total, lse, pooled = jax.block_until_ready(run(states0, x))
    out["step_s"] = time.perf_counter() - t0
    out["state_mean"] = shard.to_process_local(states.mean)
    out["gather_percentile"] = shard.to_process_local(base.percentile)
    out["gather_zscore"] = shard.to_process_local(base.zscore)
    out["gather_median"] = np.asarray(base.median)
    out["gather_mad"] = np.asarray(base.mad)
    out["total"] = np.asarray(total)
    out["lse"] = np.asarray(lse)
    out["pooled_count"] = np.asarray(pooled.count)
    out["pooled_mean"] = np.asarray(pooled.mean)
    out["pooled_variance"] = np.asarray(pooled.variance)
    out["ranks"] = shard.to_process_local(shard.sharded_rankdata(x, mesh, nan_policy="omit"))
    if strategy_select:
        b = shard.sharded_population_baseline(x, mesh, nan_policy="omit", strategy="select")
        out["select_percentile"] = shard.to_process_local(b.percentile)
        out["select_zscore"] = shard.to_process_local(b.zscore)
        out["select_median"] = np.asarray(b.median)
        out["select_mad"] = np.asarray(b.mad)
        q = jnp.asarray([0.1, 0.5, 0.9], jnp.float32)
        out["select_quantile"] = np.asarray(
            shard.sharded_quantile(jnp.nan_to_num(x), q, mesh, strategy="select")
        )
    del jaxstats
    return out


def reference(x: np.ndarray) -> dict:
    """The same quantities computed on one device, unsharded (the oracle)."""
    import jax
    import jax.numpy as jnp

    import jaxstats
    from jaxstats import sketch

    sk = sketch.moments()
    states = jax.vmap(lambda _: sk.init(jnp.zeros(x.shape[1:], jnp.float32)))(jnp.arange(x.shape[0]))
    states = jax.vmap(lambda s, o: sk.update(s, o, where=~jnp.isnan(o)))(states, x)
    b = jaxstats.population_baseline(x, nan_policy="omit")
    llr = np.where(np.isnan(x), 0.0, -0.5 * x.astype(np.float64) ** 2)
    m = sk.query(sketch.from_batch(sk, jnp.asarray(x[:, 0])))
    xs = np.nan_to_num(x)
    return {
        "state_mean": np.asarray(states.mean),
        "gather_percentile": np.asarray(b.percentile),
        "gather_zscore": np.asarray(b.zscore),
        "gather_median": np.asarray(b.median),
        "gather_mad": np.asarray(b.mad),
        "total": llr.sum(axis=0).astype(np.float32),
        "lse": np.log(np.exp(llr).sum(axis=0)).astype(np.float32),
        "pooled_count": np.asarray(m.count),
        "pooled_mean": np.asarray(m.mean),
        "pooled_variance": np.asarray(m.variance),
        "ranks": np.asarray(jaxstats.rankdata(x, axis=0, nan_policy="omit")),
        "select_median": np.asarray(b.median),
        "select_mad": np.asarray(b.mad),
        "select_zscore": np.asarray(b.zscore),
        "select_percentile": np.asarray(b.percentile),
        "select_quantile": np.asarray(jaxstats.quantile(xs, np.float32([0.1, 0.5, 0.9]), axis=0)),
    }


#: How each result must match the single-process oracle: "equal" (bitwise, NaN == NaN),
#: ("ulps", k) (within k float32 ulps of the value), or ("abs", tol).
CHECKS = {
    "state_mean": "equal",
    "gather_percentile": "equal",
    "gather_zscore": "equal",
    "gather_median": "equal",
    "gather_mad": "equal",
    "ranks": "equal",
    "total": ("ulps", 2),
    "lse": ("ulps", 2),
    "pooled_count": "equal",
    "pooled_mean": ("ulps", 4),
    "pooled_variance": ("ulps", 16),
    "select_median": "equal",
    "select_mad": "equal",
    "select_zscore": ("ulps", 4),
    "select_quantile": "equal",
    # the documented select bound: 100 * H / n points, H = agents sharing the top 16 key bits
    "select_percentile": "bound",
}


def bucket_bound(x: np.ndarray) -> np.ndarray:
    """Per-agent bound of the select strategy's percentile error: ``100 * H / n_valid``."""
    x = np.asarray(x, np.float32)
    out = np.zeros(x.shape)
    for j in range(x.shape[1]):
        col = np.where(x[:, j] == 0, np.float32(0), x[:, j])
        b = col.view(np.uint32)
        top = np.where(b >> 31 == 1, ~b, b | np.uint32(1 << 31)) >> 16
        ok = ~np.isnan(col)
        out[:, j] = 100.0 * np.bincount(top[ok], minlength=1 << 16)[top] / max(ok.sum(), 1)
    return out


def compare(name: str, got: np.ndarray, want: np.ndarray, x: np.ndarray) -> tuple[bool, str]:
    """Check one result against the oracle under ``CHECKS[name]`` (``x``: the fleet's
    scores, for the select bound); returns (ok, description)."""
    rule = CHECKS[name]
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False, f"shape {got.shape} != {want.shape}"
    same_nan = np.array_equal(np.isnan(got), np.isnan(want))
    if rule == "bound":
        ok = ~np.isnan(want)
        err = np.abs(got[ok].astype(np.float64) - want[ok])
        slack = bucket_bound(x)[ok] + 1e-4 - err
        return same_nan and bool(np.all(slack >= 0)), (
            f"max |diff| {np.max(err, initial=0):.3g} points, bound held for every agent"
            if np.all(slack >= 0) else "bound violated"
        )
    g, w = got[~np.isnan(want)], want[~np.isnan(want)]
    if rule == "equal":
        ok = same_nan and np.array_equal(g, w)
        return ok, "bitwise" if ok else f"max |diff| {np.max(np.abs(g - w), initial=0):.3g}"
    kind, tol = rule
    diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
    if kind == "ulps":
        ulps = diff / np.spacing(np.abs(w).astype(np.float32)).astype(np.float64)
        worst = float(np.max(ulps, initial=0))
        return same_nan and worst <= tol, f"<= {worst:.1f} ulp"
    worst = float(np.max(diff, initial=0))
    return same_nan and worst <= tol, f"max |diff| {worst:.3g}"


def worker(args: argparse.Namespace) -> None:
    """One process: initialize the distributed runtime, compute, write this slice."""
    import jax

    coord = args.coordinator or os.environ.get("JAXSTATS_COORDINATOR")
    nproc = args.num_processes or _env_int("JAXSTATS_NUM_PROCESSES")
    pid = args.process_id if args.process_id is not None else _env_int("JAXSTATS_PROCESS_ID")
    if args.platform == "cpu":
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.devices_per_process)
    t0 = time.perf_counter()
    if coord or nproc or os.environ.get("SLURM_JOB_ID") or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        # Explicit values win; missing ones are auto-detected by JAX (SLURM, Open MPI, ...).
        jax.distributed.initialize(
            coordinator_address=coord,
            num_processes=nproc,
            process_id=pid,
            initialization_timeout=args.init_timeout,
        )
    from jaxstats import shard

    mesh = shard.agent_mesh()
    n = args.agents
    sl = shard.process_agent_slice(n, mesh)
    x_local = fleet_scores(sl.start, sl.stop, args.features, args.seed)
    t_init = time.perf_counter() - t0
    res = compute(x_local, n, strategy_select=not args.no_select)
    res["slice"] = np.array([sl.start, sl.stop])
    p = jax.process_index()
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        np.savez(os.path.join(args.out, f"proc{p}.npz"), **res)
    print(
        json.dumps(
            {
                "process": p,
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "slice": [sl.start, sl.stop],
                "init_s": round(t_init, 2),
                "step_s": round(float(res["step_s"]), 3),
            }
        ),
        flush=True,
    )
    if jax.process_count() > 1:
        jax.distributed.shutdown()


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def free_port() -> int:
    """A free localhost TCP port (raises OSError where localhost cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    n_procs: int,
    out: str,
    *,
    agents: int,
    features: int,
    devices_per_process: int,
    timeout: float,
    extra: tuple[str, ...] = (),
) -> list[dict]:
    """Start ``n_procs`` local worker processes and wait (each killed after ``timeout`` s).

    Returns the workers' JSON status lines. Raises ``RuntimeError`` with their stderr if
    any fails or times out; every started process is terminated before returning.
    """
    port = free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    procs = []
    try:
        for p in range(n_procs):
            cmd = [
                sys.executable, os.path.abspath(__file__),
                "--coordinator", f"127.0.0.1:{port}",
                "--num-processes", str(n_procs),
                "--process-id", str(p),
                "--devices-per-process", str(devices_per_process),
                "--agents", str(agents),
                "--features", str(features),
                "--out", out,
                *extra,
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            )
        deadline = time.monotonic() + timeout
        results, errors = [], []
        for p, proc in enumerate(procs):
            try:
                so, se = proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                so, se = proc.communicate()
                errors.append(f"process {p} timed out after {timeout:.0f} s:\n{se[-3000:]}")
                continue
            if proc.returncode != 0:
                errors.append(f"process {p} exited with {proc.returncode}:\n{se[-3000:]}")
                continue
            lines = [ln for ln in so.splitlines() if ln.startswith("{")]
            results.append(json.loads(lines[-1]) if lines else {})
        if errors:
            raise RuntimeError("\n\n".join(errors))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def gather_results(out: str, n_procs: int) -> dict:
    """Stitch the processes' slices back into global arrays (replicated ones from proc 0)."""
    parts = [dict(np.load(os.path.join(out, f"proc{p}.npz"))) for p in range(n_procs)]
    parts.sort(key=lambda d: int(d["slice"][0]))
    merged = {}
    for k in parts[0]:
        if k in ("slice", "step_s"):
            continue
        per_agent = k in ("state_mean", "ranks") or k.endswith(("percentile", "zscore"))
        merged[k] = np.concatenate([d[k] for d in parts], axis=0) if per_agent else parts[0][k]
        if not per_agent:  # every process must agree on replicated results
            for d in parts[1:]:
                if not np.array_equal(d[k], parts[0][k], equal_nan=True):
                    raise AssertionError(f"replicated result {k!r} differs between processes")
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launch", type=int, default=0, help="start N local processes and check them")
    ap.add_argument("--coordinator", default=None, help="host:port of process 0")
    ap.add_argument("--num-processes", type=int, default=None)
    ap.add_argument("--process-id", type=int, default=None)
    ap.add_argument("--devices-per-process", type=int, default=2, help="CPU devices per process")
    ap.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--agents", type=int, default=4096)
    ap.add_argument("--features", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="directory for per-process results (.npz)")
    ap.add_argument("--no-select", action="store_true", help="skip the radix-select strategy")
    ap.add_argument("--init-timeout", type=int, default=120)
    ap.add_argument("--timeout", type=float, default=300.0, help="--launch: seconds per run")
    args = ap.parse_args()
    if not args.launch:
        worker(args)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        status = launch(
            args.launch, out, agents=args.agents, features=args.features,
            devices_per_process=args.devices_per_process, timeout=args.timeout,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        got = gather_results(out, args.launch)
    for s in status:
        print(json.dumps(s))
    x = fleet_scores(0, args.agents, args.features, args.seed)
    want = reference(x)
    print(f"\n{args.launch} processes x {args.devices_per_process} CPU devices, {args.agents} agents "
          f"x {args.features} features, wall {wall:.1f} s (imports, distributed init, compiles)")
    print(f"{'result':<20} {'check':<14} outcome")
    bad = 0
    for k in CHECKS:
        if k not in got:
            continue
        ok, desc = compare(k, got[k], want[k], x)
        bad += not ok
        print(f"{k:<20} {str(CHECKS[k]):<14} {'PASS' if ok else 'FAIL'} ({desc})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
