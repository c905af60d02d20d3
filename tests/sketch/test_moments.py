"""moments and ewma (float32): accuracy against numpy/scipy, edge cases, counters, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxstats import sketch

TOL32 = 2e-4


def _run(sk, xs, where=None):
    return jax.jit(lambda x, w: sketch.from_batch(sk, x, where=w))(xs, where)


def _ref(x, axis=0, **kw):
    x = np.asarray(x, np.float64)
    return (
        x.shape[axis],
        x.mean(axis),
        x.var(axis, ddof=kw.get("ddof", 0)),
        scipy.stats.skew(x, axis=axis, bias=kw.get("bias", True)),
        scipy.stats.kurtosis(x, axis=axis, bias=kw.get("bias", True), fisher=kw.get("fisher", True)),
    )


@pytest.mark.parametrize("dist", ["normal", "lognormal", "shifted"])
def test_matches_scipy_float32(dist):
    rng = np.random.default_rng(0)
    if dist == "normal":
        x = rng.normal(3.0, 2.0, (3000, 4))
    elif dist == "lognormal":
        x = rng.lognormal(0.0, 1.0, (3000, 4))
    else:  # cancellation: a large offset and a small spread
        x = 1e4 + rng.normal(0.0, 1.0, (3000, 4))
    x = x.astype(np.float32)
    sk = sketch.moments()
    r = sk.query(_run(sk, jnp.asarray(x)))
    n, mean, var, skew, kurt = _ref(x)
    assert r.count.dtype == jnp.float32
    np.testing.assert_array_equal(r.count, n)
    np.testing.assert_allclose(r.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(r.variance, var, rtol=TOL32)
    np.testing.assert_allclose(r.skewness, skew, rtol=TOL32, atol=TOL32)
    np.testing.assert_allclose(r.kurtosis, kurt, rtol=TOL32, atol=TOL32)


@pytest.mark.parametrize("ddof,bias,fisher", [(1, False, True), (0, True, False), (2, False, False)])
def test_ddof_bias_fisher_conventions(ddof, bias, fisher):
    x = np.random.default_rng(1).gamma(2.0, 1.0, (200, 3)).astype(np.float32)
    sk = sketch.moments(ddof=ddof, bias=bias, fisher=fisher)
    r = sk.query(_run(sk, jnp.asarray(x)))
    _, _, var, skew, kurt = _ref(x, ddof=ddof, bias=bias, fisher=fisher)
    np.testing.assert_allclose(r.variance, var, rtol=TOL32)
    np.testing.assert_allclose(r.skewness, skew, rtol=TOL32, atol=TOL32)
    np.testing.assert_allclose(r.kurtosis, kurt, rtol=TOL32, atol=TOL32)


def test_small_samples_follow_scipy():
    sk = sketch.moments(bias=False, ddof=1)
    for x in ([1.0, 2.0], [1.0, 2.0, 4.0]):  # scipy keeps the biased value for n <= 2 / n <= 3
        r = sk.query(_run(sk, jnp.asarray(x, jnp.float32)))
        _, _, var, skew, kurt = _ref(np.asarray(x), ddof=1, bias=False)
        np.testing.assert_allclose([r.variance, r.skewness, r.kurtosis], [var, skew, kurt], rtol=TOL32)


def test_empty_one_and_constant():
    sk = sketch.moments()
    e = sk.query(sk.init(jnp.zeros(())))
    assert float(e.count) == 0.0
    assert all(np.isnan(v) for v in (e.mean, e.variance, e.skewness, e.kurtosis))
    one = sk.query(sk.update(sk.init(jnp.zeros(())), jnp.float32(7.5)))
    assert (float(one.count), float(one.mean), float(one.variance)) == (1.0, 7.5, 0.0)
    assert np.isnan(one.skewness) and np.isnan(one.kurtosis)
    assert np.isnan(sketch.moments(ddof=1).query(sk.update(sk.init(jnp.zeros(())), 1.0)).variance)
    const = sk.query(_run(sk, jnp.full((50,), 1e4 + 0.5, jnp.float32)))
    assert float(const.mean) == 1e4 + 0.5 and float(const.variance) == 0.0
    assert np.isnan(const.skewness) and np.isnan(const.kurtosis)  # as scipy: undefined


def test_int_input_and_extremes():
    sk = sketch.moments()
    r = sk.query(_run(sk, jnp.arange(10, dtype=jnp.int32)))
    assert r.mean.dtype == jnp.float32
    np.testing.assert_allclose([r.mean, r.variance], [4.5, 8.25], rtol=1e-6)
    big = sk.query(_run(sk, jnp.array([1e30, -1e30, 1e30, -1e30], jnp.float32)))
    assert float(big.mean) == 0.0
    assert np.isposinf(big.variance)  # float32 overflow of the squares, as a float32 np.var


def test_nan_stays_in_its_agent_and_feature_and_where_skips():
    sk = sketch.moments()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 20, 2)).astype(np.float32)
    x[1, 5, 0] = np.nan
    states = jax.jit(jax.vmap(lambda xs: sketch.from_batch(sk, xs)))(jnp.asarray(x))
    r = jax.vmap(sk.query)(states)
    assert np.isnan(r.mean[1, 0]) and np.isnan(r.variance[1, 0])
    clean = np.ones((3, 2), bool)
    clean[1, 0] = False
    assert np.all(np.isfinite(np.asarray(r.mean)[clean]))
    np.testing.assert_allclose(np.asarray(r.mean)[clean], x.mean(1)[clean], rtol=1e-5)
    masked = jax.jit(jax.vmap(lambda xs, w: sketch.from_batch(sk, xs, where=w)))(
        jnp.asarray(x), jnp.asarray(~np.isnan(x))
    )
    rm = jax.vmap(sk.query)(masked)
    np.testing.assert_allclose(rm.mean, np.nanmean(x, 1), rtol=1e-5)
    np.testing.assert_array_equal(rm.count[1], [19.0, 20.0])


def _stats_from_power_sums(n, sums):
    """Mean, variance, skewness, excess kurtosis from float64 raw power sums (reference)."""
    s1, s2, s3, s4 = (s / n for s in sums)
    m2 = s2 - s1**2
    m3 = s3 - 3 * s1 * s2 + 2 * s1**3
    m4 = s4 - 4 * s1 * s3 + 6 * s1**2 * s2 - 3 * s1**4
    return s1, m2, m3 / m2**1.5, m4 / m2**2 - 3


def test_count_exact_after_1e8_updates():
    """One stream of 10**8 observations: 10**4 chunks of 10**4, merged in time order."""
    sk = sketch.moments()
    chunk = np.random.default_rng(3).normal(5.0, 2.0, 10_000).astype(np.float32)
    one = _run(sk, jnp.asarray(chunk))

    def body(s, _):
        return sk.merge(s, one), None

    state, _ = jax.jit(lambda s: jax.lax.scan(body, s, None, length=10_000))(sk.init(jnp.zeros(())))
    assert float(state.count) + float(state.count_lo) == 1e8  # exact (a float32 sum stops at 2**24)
    r = sk.query(state)
    c64 = chunk.astype(np.float64)
    ref = _stats_from_power_sums(1e4, [np.sum(c64**p) for p in (1, 2, 3, 4)])
    np.testing.assert_allclose([r.mean, r.variance, r.skewness], ref[:3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.kurtosis, ref[3], atol=1e-4)


def test_updates_keep_refining_past_2_24():
    """Single updates on a stream of 2**24 observations still move the count and the sums."""
    sk = sketch.moments()
    rng = np.random.default_rng(4)
    chunk = rng.normal(5.0, 2.0, 4096).astype(np.float32)
    tail = rng.normal(9.0, 3.0, 50_000).astype(np.float32)
    one = _run(sk, jnp.asarray(chunk))

    @jax.jit
    def build(tail):
        s, _ = jax.lax.scan(lambda s, _: (sk.merge(s, one), None), sk.init(jnp.zeros(())), None, length=4096)
        s, _ = jax.lax.scan(lambda s, x: (sk.update(s, x), None), s, tail)
        return s

    state = build(jnp.asarray(tail))
    assert float(state.count) + float(state.count_lo) == 2**24 + 50_000
    c64, t64 = chunk.astype(np.float64), tail.astype(np.float64)
    sums = [4096 * np.sum(c64**p) + np.sum(t64**p) for p in (1, 2, 3, 4)]
    ref = _stats_from_power_sums(2**24 + 50_000, sums)
    r = sk.query(state)
    np.testing.assert_allclose([r.mean, r.variance, r.skewness, r.kurtosis], ref, rtol=1e-5, atol=1e-5)
    # The tail shifts the mean by ~0.012: a frozen float32 accumulator would miss it.
    assert abs(float(r.mean) - float(c64.mean())) > 0.01


def test_ewma_float32_matches_weighted_reference():
    lam = 2.0 ** (-1 / 10)
    x = np.random.default_rng(5).normal(size=(300, 3)).astype(np.float32)
    sk = sketch.ewma(half_life=10)
    r = sk.query(_run(sk, jnp.asarray(x)))
    w = np.broadcast_to(lam ** np.arange(299, -1, -1)[:, None], x.shape)
    mean = (w * x).sum(0) / w.sum(0)
    np.testing.assert_allclose(r.weight, w.sum(0), rtol=1e-5)
    np.testing.assert_allclose(r.mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r.variance, (w * (x - mean) ** 2).sum(0) / w.sum(0), rtol=1e-4)


def test_decay_equals_ewma_for_mean_and_variance():
    x = jnp.asarray(np.random.default_rng(6).lognormal(size=(200, 2)).astype(np.float32))
    m = sketch.moments(half_life=7)
    e = sketch.ewma(half_life=7)
    rm, re = m.query(_run(m, x)), e.query(_run(e, x))
    np.testing.assert_allclose(rm.count, re.weight, rtol=1e-6)
    np.testing.assert_allclose(rm.mean, re.mean, rtol=1e-5)
    np.testing.assert_allclose(rm.variance, re.variance, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(half_life=5, decay=0.9), ValueError, "at most one of 'half_life' and 'decay'"),
        (dict(half_life=0), ValueError, "'half_life' must be a positive finite number"),
        (dict(half_life=True), TypeError, "'half_life' must be a static Python number"),
        (dict(decay=1.0), ValueError, "'decay' must lie strictly between 0 and 1"),
        (dict(decay=True), TypeError, "'decay' must be a static Python number"),
        (dict(ddof=-1), ValueError, "'ddof' must be a non-negative int"),
        (dict(half_life=5, ddof=1), ValueError, "with decay only ddof=0 and bias=True"),
        (dict(dtype=jnp.int32), TypeError, "'dtype' must be a floating dtype"),
    ],
)
def test_factory_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sk = sketch.moments(**kwargs)
        sk.init(jnp.zeros(()))


def test_trace_time_errors():
    sk = sketch.moments()
    s = sk.init(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"moments.update: 'x' must have the event shape \(3,\)"):
        sk.update(s, jnp.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"'where' of shape \(2,\) does not broadcast"):
        sk.update(s, jnp.zeros(3), where=jnp.array([True, False]))
    with pytest.raises(TypeError, match="'where' must be a bool mask"):
        sk.update(s, jnp.zeros(3), where=jnp.ones(3))
    with pytest.raises(TypeError, match="'x' must have a real"):
        sk.update(s, jnp.zeros(3, jnp.complex64))
    with pytest.raises(TypeError, match="'example' must have a real"):
        sk.init(jnp.zeros(3, jnp.complex64))
    with pytest.raises(ValueError, match="ewma: give the decay as half_life"):
        sketch.ewma()
    e = sketch.ewma(decay=0.9)
    with pytest.raises(ValueError, match=r"ewma.update: 'x' must have the event shape \(\)"):
        e.update(e.init(jnp.zeros(())), jnp.zeros(2))


def test_base_helpers_errors_and_combine():
    sk = sketch.moments()
    with pytest.raises(ValueError, match="combine: give at least one sketch"):
        sketch.combine()
    with pytest.raises(TypeError, match="part 'm' must be a jaxstats.sketch.Sketch"):
        sketch.combine(m=sk.init)
    both = sketch.combine(m=sk, q=sketch.ddsketch())
    s = both.init({"m": jnp.zeros(()), "q": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"combine: dict input has keys \['m'\]"):
        both.update(s, {"m": 1.0})
    with pytest.raises(ValueError, match=r"query arguments name unknown parts \['z'\]"):
        both.query(s, z=(0.5,))
    s = both.update(s, {"m": jnp.float32(2.0), "q": jnp.array([1.0, 3.0])})
    out = both.query(s, q=jnp.float32(0.5))
    assert float(out["m"].mean) == 2.0 and out["q"].shape == (2,)
    with pytest.raises(ValueError, match="fold: cannot fold an empty stack"):
        sketch.fold(sk, jax.tree_util.tree_map(lambda l: l[None][:0], s["m"]))
    with pytest.raises(ValueError, match="fold: 'states' has no array leaves"):
        sketch.fold(sk, {})
    with pytest.raises(ValueError, match="fold: leaves disagree"):
        sketch.fold(sk, (jnp.zeros((2,)), jnp.zeros((3,))))
    with pytest.raises(ValueError, match="from_batch: 'xs' must have a leading obs axis"):
        sketch.from_batch(sk, jnp.float32(1.0))
    with pytest.raises(ValueError, match="from_batch: 'where' must have the leading obs axis"):
        sketch.from_batch(sk, jnp.zeros(4), where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="nbytes: batched=True needs every leaf"):
        sketch.nbytes(sk.init(jnp.zeros(())))
    batched = jax.vmap(sk.init)(jnp.zeros((5, 8)))
    assert sketch.nbytes(batched) == 320.0 == sketch.nbytes(sk.init(jnp.zeros(8)), batched=False)
