"""Writes notebooks/quickstart.ipynb and notebooks/scaling.ipynb (without outputs).

    python notebooks/build_notebooks.py

The notebooks use only jaxstats' public API. They read JAXSTATS_NB_SMALL=1 (set by the test
suite, tests/test_notebooks.py) to run at small sizes.
"""

import os

import nbformat as nbf

HERE = os.path.dirname(os.path.abspath(__file__))


def md(s):
    return nbf.v4.new_markdown_cell(s.strip())


def code(s):
    return nbf.v4.new_code_cell(s.strip())


SETUP = """
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import jaxstats
from jaxstats import evidence, sketch

SMALL = os.environ.get("JAXSTATS_NB_SMALL") == "1"
rng = np.random.default_rng(0)
print("jax", jax.__version__, "| backend", jax.default_backend(), "| native kernels:", jaxstats._native.status())
"""

quick = nbf.v4.new_notebook()
quick.cells = [
    md("""
# jaxstats quickstart

Population baselines, log-space evidence, streaming sketches and the real-time monitor, on a
synthetic fleet. Everything here is public API and runs under `jit`/`vmap`.
"""),
    code(SETUP),
    md("""
## 1. Population baselines in O(n log n)

Each agent's percentile among all its peers, its robust z-score and the population median/MAD,
for every feature at once. The naive way compares every pair of agents (O(n^2)).
"""),
    code("""
n_agents = 2_000 if SMALL else 200_000
x = rng.lognormal(size=(n_agents, 8)).astype(np.float32)
x[:5] *= 20.0  # five unusual agents
baseline = jax.jit(jaxstats.population_baseline)
res = jax.block_until_ready(baseline(jnp.asarray(x)))
t0 = time.perf_counter(); jax.block_until_ready(baseline(jnp.asarray(x))); dt = time.perf_counter() - t0
print(f"{n_agents:,} agents x 8 features in {dt * 1e3:.2f} ms")
print("largest |z| agents:", np.argsort(-np.abs(np.asarray(res.zscore)).max(axis=1))[:5])
"""),
    code("""
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(np.asarray(res.zscore).ravel(), bins=200, log=True)
ax.set_xlabel("robust z among peers"); ax.set_ylabel("count")
plt.show()
"""),
    md("""
## 2. Evidence in log space

A product of 10^5 likelihoods underflows to zero; the same evidence in log space does not.
"""),
    code("""
n_points = 10_000 if SMALL else 1_000_000
log_lik = jnp.asarray(rng.normal(-1.0, 0.3, size=(n_points, 2)).astype(np.float32))  # [points, hypotheses]
print("naive product of likelihoods:", float(jnp.prod(jnp.exp(log_lik[:, 0]))))
post = evidence.log_posterior(jnp.log(jnp.array([0.5, 0.5])), log_lik)
print("log posterior:", post, "| logsumexp:", float(evidence.logsumexp(log_lik[:, 0])))
"""),
    md("""
## 3. Streaming, mergeable sketches

Per-agent summaries of fixed size that update in O(1) and merge across shards and windows.
"""),
    code("""
sk = sketch.ddsketch(0.01, n_buckets=512)
stream = jnp.asarray(rng.lognormal(size=20_000).astype(np.float32))
a = sketch.from_batch(sk, stream[:10_000])
b = sketch.from_batch(sk, stream[10_000:])
merged = sk.merge(a, b)
qs = jnp.array([0.5, 0.9, 0.99])
print("sketch quantiles:", sk.query(merged, qs))
print("exact quantiles: ", jaxstats.quantile(stream, qs))
print("bytes per stream:", sketch.nbytes(merged, batched=False))
"""),
    md("""
## 4. The monitor: one jitted step from observations to alarms
"""),
    code("""
n_agents, n_steps, n_features = (256, 120, 4) if SMALL else (2_000, 400, 8)
t = np.arange(n_steps)
obs = (1 + 0.3 * np.sin(2 * np.pi * t / 96))[None, :, None] * rng.lognormal(0, 0.3, (n_agents, 1, n_features))
obs = obs * (1 + 0.05 * rng.standard_normal((n_agents, n_steps, n_features)))
obs[:8, n_steps // 2 :, 0] *= 1.6  # eight agents shift level half-way
obs = jnp.asarray(obs.astype(np.float32))

monitor = jaxstats.Monitor()
state = monitor.init(n_agents, n_features)
state, reports = jax.jit(monitor.run)(state, obs)
alarm = np.asarray(reports.alarm)  # [agents, time]
print("agents alarmed:", np.nonzero(alarm.any(axis=1))[0][:20])
"""),
    code("""
fig, ax = plt.subplots(figsize=(7, 3))
cus = np.asarray(reports.cusum)
ax.plot(cus[8:40].T, color="0.7", lw=0.5)
ax.plot(cus[:8].T, color="C3", lw=1)
ax.axhline(monitor.threshold, color="k", ls="--")
ax.set_xlabel("step"); ax.set_ylabel("CUSUM (nats)")
plt.show()
"""),
]

scaling = nbf.v4.new_notebook()
scaling.cells = [
    md("""
# Scaling: naive O(n^2) vs jaxstats O(n log n)

Times the population percentile baseline both ways and plots them on log-log axes.
`experiments/report.py` produces the full version of these figures.
"""),
    code(SETUP),
    code("""
def naive(x, chunk=2048):
    n = x.shape[0]; out = np.empty(n)
    for i in range(0, n, chunk):
        xi = x[i:i + chunk, None]
        left = (x[None] < xi).sum(1); right = (x[None] <= xi).sum(1)
        out[i:i + chunk] = (left + right + (right > left)) * (50.0 / n)
    return out

fast = jax.jit(jaxstats.percentile_of_population)

def best(f, *a, r=3):
    jax.block_until_ready(f(*a)); ts = []
    for _ in range(r):
        t0 = time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter() - t0)
    return min(ts)

sizes = [10**2, 10**3, 10**4] if SMALL else [10**2, 10**3, 10**4, 10**5, 10**6]
rows = []
for n in sizes:
    x = rng.standard_normal(n).astype(np.float32)
    tn = best(naive, x, r=1) if n <= 2 * 10**4 else np.nan
    tf = best(fast, jnp.asarray(x))
    rows.append((n, tn, tf))
    print(f"n={n:>9,}  naive {tn * 1e3:10.3f} ms   jaxstats {tf * 1e3:8.3f} ms   speed-up {tn / tf:8.0f}x")
"""),
    code("""
ns, tn, tf = map(np.array, zip(*rows))
fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(ns, tn, "x--", label="naive O(n^2)")
ax.loglog(ns, tf, "o-", label="jaxstats")
ax.set_xlabel("agents"); ax.set_ylabel("seconds"); ax.legend(); ax.grid(True, which="both", alpha=.3)
plt.show()
"""),
]

for name, nb in (("quickstart.ipynb", quick), ("scaling.ipynb", scaling)):
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, os.path.join(HERE, name))
    print("wrote", name)
