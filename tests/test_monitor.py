"""jaxstats.Monitor: the jitted streaming step, its stages, state handling and detection."""

import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

import jaxstats
from jaxstats import monitor as mon_mod
from jaxstats.monitor import Monitor, MonitorState, Report, load_state, save_state


# One small configuration and shape shared by most tests (one compilation each way).
MON = Monitor(warmup=3, min_peers=4)
A, F = 12, 3
# The detection configuration, replayed with lax.scan (compiled once for two tests).
DET_MON = Monitor(n_groups=4)
DET_RUN = jax.jit(DET_MON.run)


def _noise(seed, shape, df=4):
    return np.random.default_rng(seed).standard_t(df, shape).astype(np.float32)


def _run_steps(monitor, state, obs_seq, masks=None):
    step = monitor.jit_step()
    reports = []
    for t, x in enumerate(obs_seq):
        kw = {} if masks is None else {"mask": jnp.asarray(masks[t])}
        state, rep = step(state, jnp.asarray(x), **kw)
        reports.append(jax.tree_util.tree_map(np.asarray, rep))
    return state, reports


# ------------------------------------------------------------------------------------------
# Defaults, jit, donation, tracing
# ------------------------------------------------------------------------------------------


def test_defaults_shapes_and_dtypes():
    monitor = Monitor()
    state = monitor.init(32, 3)
    assert isinstance(state, MonitorState)
    state, rep = monitor.jit_step()(state, jnp.ones((32, 3)))
    assert isinstance(rep, Report)
    for name in ("score", "self_z", "percentile", "log_lr", "feature_cusum"):
        assert getattr(rep, name).shape == (32, 3) and getattr(rep, name).dtype == jnp.float32
    for name in ("log_evidence", "cusum", "log_odds"):
        assert getattr(rep, name).shape == (32,)
    assert rep.alarm.dtype == jnp.bool_ and rep.top_feature.dtype == jnp.int32
    # First step: nothing warm, nothing scored, no evidence, no alarm.
    assert np.all(np.isnan(rep.score)) and not np.any(rep.alarm)
    np.testing.assert_array_equal(rep.cusum, 0.0)
    np.testing.assert_array_equal(rep.top_feature, -1)
    np.testing.assert_allclose(rep.log_odds, math.log(1e-3 / (1 - 1e-3)), rtol=1e-6)
    assert int(state.count[0, 0]) == 1
    # Settings take plain Python ints where a number is expected.
    assert Monitor(half_life=10, threshold=8, clip=2).alpha == pytest.approx(1 - 2 ** -0.1)


def test_memory_per_agent_small_and_million_agent_state_fits():
    monitor = Monitor()
    per_agent = jaxstats.sketch.nbytes(monitor.init(4, 8))
    assert per_agent == 16 * 8 + 9 <= 4096
    shapes = jax.eval_shape(lambda: monitor.init(10**6, 8))
    assert jaxstats.sketch.nbytes(shapes, batched=False) < 200 * 2**20


def test_jit_step_donates_and_does_not_retrace():
    counted = chex.assert_max_traces(MON.step, n=1)
    step = jax.jit(counted, donate_argnums=0)
    state = MON.init(A, F)
    old = state
    state, _ = step(state, jnp.asarray(_noise(0, (A, F))))
    assert old.location.is_deleted() and old.cusum.is_deleted()
    for t in range(1, 4):
        state, _ = step(state, jnp.asarray(_noise(t, (A, F))))
    chex.clear_trace_counter()
    # jit_step() shares one compiled program between equal monitors.
    x = jnp.asarray(_noise(9, (A, F)))
    state, _ = MON.jit_step()(MON.init(A, F), x)
    before = mon_mod._step_donated._cache_size()
    state, _ = Monitor(warmup=3, min_peers=4).jit_step()(state, x)
    state, _ = MON.jit_step()(state, x)
    assert mon_mod._step_donated._cache_size() == before
    # A lean step returns only the named fields, with the same values.
    full_state, full = MON.jit_step()(MON.init(A, F), x)
    lean_state, lean = MON.jit_step(fields=("alarm", "log_odds"))(MON.init(A, F), x)
    assert sorted(lean) == ["alarm", "log_odds"]
    np.testing.assert_array_equal(np.asarray(lean["log_odds"]), np.asarray(full.log_odds))
    np.testing.assert_array_equal(np.asarray(lean_state.location), np.asarray(full_state.location))
    with pytest.raises(ValueError, match="'fields' must name Report fields"):
        MON.jit_step(fields=("alarms",))


def test_run_equals_repeated_steps():
    monitor = MON
    x = _noise(1, (A, 9, F))  # [agents, time, features]
    m = np.random.default_rng(2).random((A, 9, F)) > 0.2
    s1, r1 = jax.jit(monitor.run)(monitor.init(A, F), jnp.asarray(x), mask=jnp.asarray(m))
    s2, reps = _run_steps(monitor, monitor.init(A, F), x.transpose(1, 0, 2), m.transpose(1, 0, 2))
    for name in Report._fields:
        want = np.stack([getattr(r, name) for r in reps], axis=1)
        np.testing.assert_allclose(np.asarray(getattr(r1, name)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(s1.location), np.asarray(s2.location), rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Stage 1: self-baseline against a numpy reference
# ------------------------------------------------------------------------------------------


def _reference_self_baseline(xs, half_life, warmup, clip, min_scale, rel_min_scale):
    """Straight-line float64 re-implementation of the documented recursion, one stream."""
    alpha = 1 - 2 ** (-1 / half_life)
    cap = max(warmup, math.ceil(1 / alpha)) + 1
    n, loc, sc = 0, 0.0, 0.0
    zs = []
    for x in xs:
        s_eff = max(sc, min_scale, rel_min_scale * abs(loc))
        r = x - loc
        warm = n >= warmup
        zs.append(r / s_eff if warm else np.nan)
        lim = clip * s_eff
        rc = min(max(r, -lim), lim) if warm else r
        ac = min(abs(r), lim) if warm else abs(r)
        n_new = min(n + 1, cap)
        new_loc = loc + max(1 / n_new, alpha) * rc
        if n >= 1:
            sc = sc + max(1 / max(n, 1), alpha) * (1.2533141373155003 * ac - sc)
        loc, n = new_loc, n_new
    return np.array(zs), loc, sc


def test_self_baseline_matches_reference_with_outliers():
    monitor = Monitor(half_life=5.0, warmup=4, population=False)
    xs = 10.0 + _noise(3, (40, 1, 2)).astype(np.float64)
    xs[20, 0, 0] += 50.0  # an outlier: clipped when it updates the baseline
    state, reps = _run_steps(monitor, monitor.init(1, 2), xs.astype(np.float32))
    for f in range(2):
        z, loc, sc = _reference_self_baseline(xs[:, 0, f], 5.0, 4, 3.0, 1e-6, 1e-3)
        got = np.array([r.self_z[0, f] for r in reps])
        np.testing.assert_allclose(got, z, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(float(state.location[0, f]), loc, rtol=1e-5)
        np.testing.assert_allclose(float(state.scale[0, f]), sc, rtol=1e-4)
    # The outlier barely moves the location (Huber clip) but scores far out.
    assert reps[20].self_z[0, 0] > 20
    assert abs(float(state.location[0, 0]) - 10.0) < 1.5


# ------------------------------------------------------------------------------------------
# Stage 2: one-sort peer baseline against population_baseline
# ------------------------------------------------------------------------------------------


def test_peer_baseline_matches_population_baseline():
    """Every (group, feature) row is a separate population: sizes 0..300 valid entries, odd and
    even counts, ties and NaN holes, checked against population_baseline and numpy."""
    rng = np.random.default_rng(0)
    z = np.round(rng.standard_normal((6, 300, 4)), 1).astype(np.float32)  # ties
    keep = rng.random(z.shape) < rng.uniform(0.0, 1.0, (6, 1, 4))  # varied NaN rates per row
    z[~keep] = np.nan
    z[0, :, 0] = np.nan  # an empty group-feature
    z[0, :, 1] = np.nan
    z[0, 7, 1] = 1.5  # one valid entry
    z[0, :, 2] = np.nan
    z[0, :2, 2] = [0.5, -0.5]  # two
    pct, med, mad, n = jax.jit(mon_mod.peer_baseline)(jnp.asarray(z))
    ref = jax.jit(lambda v: jaxstats.population_baseline(v, axis=1, nan_policy="omit"))(jnp.asarray(z))
    np.testing.assert_array_equal(np.asarray(n), np.sum(~np.isnan(z), axis=1))
    for got, want in ((pct, ref.percentile), (med, ref.median), (mad, ref.mad)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np_mad = np.nanmedian(np.abs(z - np.nanmedian(z, axis=1, keepdims=True)), axis=1)
    np.testing.assert_allclose(np.asarray(mad), np_mad, rtol=1e-6, atol=1e-7)
    assert np.isnan(np.asarray(med)[0, 0]) and float(mad[0, 1]) == 0.0 and float(mad[0, 2]) == 0.5


# ------------------------------------------------------------------------------------------
# Stage 3: the evidence model
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail, ref",
    [
        ("t4", lambda z: ss.t.logsf(np.abs(z) * 1.0981591401460942, 4)),
        ("t2", lambda z: ss.t.logsf(np.abs(z) * 1.2105396422856856, 2)),
        ("normal", lambda z: ss.norm.logsf(np.abs(z))),
    ],
)
def test_log_two_sided_tail_matches_scipy(tail, ref):
    z = np.array([0.0, -0.3, 1.0, 2.5, -7.0, 30.0, 1e3, 1e6], np.float64)
    got = np.asarray(mon_mod.log_two_sided_tail(jnp.asarray(z, jnp.float32), tail=tail))
    want = np.log(2.0) + ref(z)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-5, atol=2e-6)
    assert np.all(np.isfinite(np.asarray(mon_mod.log_two_sided_tail(jnp.float32(1e30), tail=tail))))


@pytest.mark.parametrize("tail, df, scale", [("t4", 4, 1.0981591401460942), ("t2", 2, 1.2105396422856856)])
def test_tail_probability_is_uniform_under_its_null(tail, df, scale):
    z = np.random.default_rng(4).standard_t(df, 200_000) / scale
    # The null has robust sigma 1 ...
    assert abs(1.482602218505602 * np.median(np.abs(z)) - 1.0) < 0.01
    u = np.exp(np.asarray(mon_mod.log_two_sided_tail(jnp.asarray(z, jnp.float32), tail=tail)))
    # ... and its tail probability is U(0, 1): Kolmogorov-Smirnov distance at ~5 standard errors.
    assert ss.kstest(u, "uniform").statistic < 5 / math.sqrt(z.size)


def test_evidence_combination_is_mean_of_e_values():
    monitor = Monitor(beta_a=0.2)
    score = jnp.asarray([[0.0, 3.0, 10.0], [1.0, np.nan, 2.0], [np.nan, np.nan, np.nan]], jnp.float32)
    scored = ~jnp.isnan(score)
    llr, log_e = jax.jit(monitor.evidence)(score, scored)
    log_u = np.asarray(mon_mod.log_two_sided_tail(jnp.nan_to_num(score), tail="t4"), np.float64)
    want_llr = np.where(np.asarray(scored), np.log(0.2) - 0.8 * log_u, 0.0)
    np.testing.assert_allclose(np.asarray(llr), want_llr, rtol=1e-5, atol=1e-6)
    w = want_llr
    want = [
        np.log(np.mean(np.exp(w[0]))),
        np.log(np.mean(np.exp(w[1, [0, 2]]))),
        0.0,  # nothing scored: e = 1
    ]
    np.testing.assert_allclose(np.asarray(log_e), want, rtol=1e-5, atol=1e-6)


def test_null_stream_never_alarms():
    """Heavy-tailed noise around per-agent levels and scales: no alarm in 36,000 agent-steps
    (the bound is one per e^12 = 1.6e5 steps per agent) and a negative evidence drift."""
    rng = np.random.default_rng(5)
    scale = rng.lognormal(0.0, 1.0, (240, 1, 4))
    x = (5.0 + _noise(5, (240, 150, 4))) * scale
    _, rep = DET_RUN(DET_MON.init(240, 4), jnp.asarray(x, jnp.float32))
    assert not np.asarray(rep.alarm).any()
    log_e = np.asarray(rep.log_evidence)[:, 30:]
    assert np.mean(log_e) < -0.5


# ------------------------------------------------------------------------------------------
# Missing data, NaN isolation, join / leave
# ------------------------------------------------------------------------------------------


def test_nan_is_missing_and_isolated_to_its_agent():
    monitor = MON
    x = 2.0 + _noise(6, (10, A, F))
    x_nan = x.copy()
    x_nan[5:, 7, 1] = np.nan  # agent 7, feature 1 goes NaN
    x_nan[6, 2, :] = np.inf  # agent 2 sends inf on every feature once
    masks = np.ones((10, A, F), bool)
    masks[5:, 7, 1] = False
    masks[6, 2, :] = False
    s_nan, r_nan = _run_steps(monitor, monitor.init(A, F), x_nan, np.ones_like(masks))
    s_msk, r_msk = _run_steps(monitor, monitor.init(A, F), x, masks)
    # NaN/inf behave exactly like a mask: same states, same reports, bit for bit.
    for a, b in zip(r_nan, r_msk):
        for name in Report._fields:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in MonitorState._fields:
        np.testing.assert_array_equal(np.asarray(getattr(s_nan, name)), np.asarray(getattr(s_msk, name)))
    # The state of the missing feature froze; everything else stays finite.
    assert int(s_nan.count[7, 1]) == 5 and int(s_nan.count[7, 0]) == 10
    for name in ("location", "scale", "feature_cusum", "cusum"):
        assert np.all(np.isfinite(np.asarray(getattr(s_nan, name))))
    last = r_nan[-1]
    assert np.isnan(last.score[7, 1]) and np.all(np.isfinite(np.delete(last.score.reshape(-1), 7 * 3 + 1)))
    assert np.all(np.isfinite(last.log_odds))


def test_agent_mask_and_inactive_agents_do_not_touch_peers():
    monitor = MON
    x = 1.0 + _noise(7, (6, A, F))
    active = np.ones(A, bool)
    active[[3, 9]] = False
    crazy = x.copy()
    crazy[:, [3, 9], :] = 1e30  # inactive slots: their values must not matter
    _, r1 = _run_steps(monitor, monitor.init(A, F, active=jnp.asarray(active)), x)
    _, r2 = _run_steps(monitor, monitor.init(A, F, active=jnp.asarray(active)), crazy)
    for a, b in zip(r1, r2):
        for name in Report._fields:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert np.all(np.isnan(r1[-1].score[[3, 9]])) and not r1[-1].alarm[[3, 9]].any()
    assert np.all(np.isnan(r1[-1].log_odds[[3, 9]]))
    # A [agents] mask drops whole agents for one step.
    m = np.ones(A, bool)
    m[0] = False
    state = monitor.init(A, F)
    state, rep = monitor.jit_step()(state, jnp.asarray(x[0]), mask=jnp.asarray(m))
    assert int(state.count[0, 0]) == 0 and int(state.count[1, 0]) == 1


def test_join_and_leave():
    monitor = MON
    step = monitor.jit_step()
    state = monitor.init(A, F, active=jnp.asarray([True] * 10 + [False] * 2))
    for t in range(5):
        state, rep = step(state, jnp.asarray(3.0 + _noise(t, (A, F))))
    assert int(state.count[10, 0]) == 0 and np.isnan(np.asarray(rep.score[10])).all()
    leave = jnp.asarray([True] + [False] * 11)
    join = jnp.asarray([False] * 10 + [True, False])
    state = jax.jit(monitor.leave)(state, leave)
    state = jax.jit(monitor.join)(state, join)
    np.testing.assert_array_equal(np.asarray(state.active), [False] + [True] * 10 + [False])
    assert int(state.count[10, 0]) == 0 and float(state.cusum[0]) == 0.0
    kept = float(state.location[0, 0])
    for t in range(4):
        state, rep = step(state, jnp.asarray(3.0 + _noise(10 + t, (A, F))))
    assert float(state.location[0, 0]) == kept  # departed: frozen, excluded, silent
    assert np.isnan(np.asarray(rep.score[0])).all() and not bool(rep.alarm[0])
    assert int(state.count[10, 0]) == 4 and np.isfinite(np.asarray(rep.score[10])).all()
    # Re-joining a slot restarts it from scratch.
    state = monitor.join(state, leave)
    assert int(state.count[0, 0]) == 0 and float(state.location[0, 0]) == 0.0


# ------------------------------------------------------------------------------------------
# Save / restore
# ------------------------------------------------------------------------------------------


def test_save_restore_continues_bit_identically(tmp_path):
    monitor = MON
    x = 4.0 + _noise(8, (14, A, F))
    x[9:, 2, 0] += 30.0  # something to alarm on
    step = monitor.jit_step()
    state = monitor.init(A, F)
    for t in range(7):
        state, _ = step(state, jnp.asarray(x[t]))
    path = tmp_path / "monitor.npz"
    save_state(path, state, monitor=monitor)
    assert sorted(os.listdir(tmp_path)) == ["monitor.npz"]  # no temp file left behind
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    restored = load_state(path, monitor=monitor)
    for name in MonitorState._fields:
        a, b = np.asarray(getattr(state, name)), np.asarray(getattr(restored, name))
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    again = load_state(path)
    _, ra = _run_steps(monitor, state, x[7:])  # donates `state`
    _, rb = _run_steps(monitor, restored, x[7:])  # donates `restored`
    for a, b in zip(ra, rb):
        for name in Report._fields:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert ra[-1].alarm[2]
    # Overwriting is atomic too, and a mismatched configuration is refused.
    save_state(path, again)
    assert sorted(os.listdir(tmp_path)) == ["monitor.npz"]
    save_state(path, again, monitor=monitor)
    with pytest.raises(ValueError, match=r"different Monitor settings \['half_life'\]"):
        load_state(path, monitor=Monitor(warmup=3, min_peers=4, half_life=10.0))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="is not a saved MonitorState"):
        load_state(tmp_path / "other.npz")


# ------------------------------------------------------------------------------------------
# Detection sanity on a small synthetic fleet
# ------------------------------------------------------------------------------------------


def _small_fleet(seed=0, agents=240, steps=150, features=4, groups=4):
    """Groups sharing a diurnal load, heavy-tailed noise, per-agent scales; 12 agents get
    spikes (8 sigma-of-level, 3 steps) and 12 a level shift (+3 x level) on one feature."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    group = np.repeat(np.arange(groups), agents // groups)
    phase = rng.uniform(0, 2 * np.pi, groups)
    load = 1.0 + 0.5 * np.sin(2 * np.pi * t[:, None] / 96 + phase[None, :])
    base = rng.lognormal(0.0, 0.7, (agents, features))
    obs = base[None] * load[:, group, None] + 0.1 * base[None] * rng.standard_t(4, (steps, agents, features))
    labels = np.zeros((steps, agents), bool)
    chosen = rng.choice(agents, 24, replace=False)
    onset = rng.integers(60, steps - 20, 24)
    for j, (a, s) in enumerate(zip(chosen, onset)):
        f = j % features
        if j < 12:
            obs[s : s + 3, a, f] += 8 * base[a, f]
            labels[s : s + 3, a] = True
        else:
            obs[s:, a, f] += 3 * base[a, f]
            labels[s:, a] = True
    return obs.astype(np.float32), labels, chosen, onset


def test_detects_injected_anomalies_with_few_false_alarms():
    obs, labels, chosen, onset = _small_fleet()
    _, rep = DET_RUN(DET_MON.init(obs.shape[1], obs.shape[2]), jnp.asarray(obs.transpose(1, 0, 2)))
    alarm = np.asarray(rep.alarm)  # [agents, time]
    detected = [alarm[a, s : s + 10].any() for a, s in zip(chosen, onset)]
    # Spikes are ~50 noise sigmas and level shifts ~20: nearly all must be caught, fast.
    assert np.mean(detected[:12]) >= 0.9 and np.mean(detected[12:]) >= 0.9
    normal = np.setdiff1d(np.arange(obs.shape[1]), chosen)
    assert alarm[normal].any(axis=1).mean() <= 0.02
    # The top feature names the injected one for detected level shifts.
    top = np.asarray(rep.top_feature)
    hits = [top[a, s + 9] == j % 4 for j, (a, s) in enumerate(zip(chosen, onset)) if j >= 12 and alarm[a, s + 9]]
    assert np.mean(hits) >= 0.9
    # Peer groups are independent: perturbing group 3 leaves groups 0-2 bit-identical.
    other = obs.copy()
    other[:, 180:, :] *= 3.0
    _, rep2 = DET_RUN(DET_MON.init(obs.shape[1], obs.shape[2]), jnp.asarray(other.transpose(1, 0, 2)))
    np.testing.assert_array_equal(np.asarray(rep2.score)[:180], np.asarray(rep.score)[:180])
    np.testing.assert_array_equal(np.asarray(rep2.log_odds)[:180], np.asarray(rep.log_odds)[:180])
    # Scores rank anomalous points high: AUC-PR well above the base rate.
    y = labels.T[:, 20:].ravel()
    s = np.asarray(rep.log_odds)[:, 20:].ravel()
    order = np.argsort(-s, kind="stable")
    prec = np.cumsum(y[order]) / np.arange(1, y.size + 1)
    ap = float(np.sum(prec * y[order]) / y.sum())
    assert ap > 5 * y.mean() and ap > 0.3


# ------------------------------------------------------------------------------------------
# Errors at trace time
# ------------------------------------------------------------------------------------------


def test_errors_are_clear():
    monitor = Monitor()
    state = monitor.init(6, 3)
    step = monitor.jit_step()
    with pytest.raises(ValueError, match=r"Monitor.step: 'obs' must have shape \[agents, features\] = \(6, 3\)"):
        step(state, jnp.zeros((6, 4)))
    with pytest.raises(ValueError, match="do not vmap it over agents"):
        jax.vmap(monitor.step)(state, jnp.zeros((6, 3)))
    with pytest.raises(ValueError, match=r"'mask' must have shape \(6, 3\) or \(6,\)"):
        monitor.step(state, jnp.zeros((6, 3)), mask=jnp.ones((3,), bool))
    with pytest.raises(TypeError, match="'mask' must be a bool array"):
        monitor.step(state, jnp.zeros((6, 3)), mask=jnp.ones((6, 3)))
    with pytest.raises(TypeError, match="'obs' must have a real"):
        monitor.step(state, jnp.zeros((6, 3), jnp.complex64))
    with pytest.raises(ValueError, match="must be a multiple of n_groups=4"):
        Monitor(n_groups=4).init(10, 2)
    with pytest.raises(ValueError, match="'tail' must be one of"):
        Monitor(tail="cauchy")
    with pytest.raises(ValueError, match=r"'beta_a' must lie in \(0, 1\)"):
        Monitor(beta_a=1.5)
    with pytest.raises(ValueError, match="'half_life' must be finite and > 0"):
        Monitor(half_life=0.0)
    with pytest.raises(ValueError, match=r"Monitor.run: 'obs' must have shape \[agents, time, features\]"):
        monitor.run(state, jnp.zeros((6, 3)))
    with pytest.raises(ValueError, match=r"Monitor.join: 'where' must have shape \(6,\)"):
        monitor.join(state, jnp.ones((5,), bool))
