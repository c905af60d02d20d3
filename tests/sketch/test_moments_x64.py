"""moments and ewma in float64 (scoped x64): tight agreement with scipy and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxstats import sketch

TOL64 = 5e-10


@pytest.mark.parametrize("shift", [0.0, 1e4])
def test_moments_float64_match_scipy(x64, shift):
    x = shift + np.random.default_rng(0).gamma(2.0, 3.0, (4000, 3))
    sk = sketch.moments()
    state = jax.jit(lambda x: sketch.from_batch(sk, x))(jnp.asarray(x))
    assert state.mean.dtype == jnp.float64
    r = sk.query(state)
    assert r.variance.dtype == jnp.float64
    np.testing.assert_array_equal(r.count, 4000.0)
    np.testing.assert_allclose(r.mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(r.variance, x.var(0), rtol=TOL64)
    np.testing.assert_allclose(r.skewness, scipy.stats.skew(x), rtol=TOL64)
    np.testing.assert_allclose(r.kurtosis, scipy.stats.kurtosis(x), rtol=TOL64)


def test_moments_float64_merge_and_extremes(x64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(999, 2)) * np.array([1e30, 1e-30])
    sk = sketch.moments(bias=False, ddof=1)
    run = jax.jit(lambda x: sketch.from_batch(sk, x))
    merged = sk.merge(run(jnp.asarray(x[:300])), run(jnp.asarray(x[300:])))
    r = sk.query(merged)
    np.testing.assert_allclose(r.variance, x.var(0, ddof=1), rtol=TOL64)
    np.testing.assert_allclose(r.skewness, scipy.stats.skew(x, bias=False), rtol=1e-8)
    np.testing.assert_allclose(r.kurtosis, scipy.stats.kurtosis(x, bias=False), rtol=1e-8)


def test_decayed_moments_match_weighted_formulas(x64):
    h = 25.0
    lam = 2.0 ** (-1 / h)
    x = np.random.default_rng(2).lognormal(size=(500, 2))
    w = np.broadcast_to(lam ** np.arange(499, -1, -1)[:, None], x.shape)
    sw = w.sum(0)
    mean = (w * x).sum(0) / sw
    cm = [(w * (x - mean) ** p).sum(0) / sw for p in (2, 3, 4)]
    for sk in (sketch.moments(half_life=h), sketch.moments(decay=lam)):
        r = sk.query(jax.jit(lambda x: sketch.from_batch(sk, x))(jnp.asarray(x)))
        np.testing.assert_allclose(r.count, sw, rtol=1e-12)
        np.testing.assert_allclose(r.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(r.variance, cm[0], rtol=1e-10)
        np.testing.assert_allclose(r.skewness, cm[1] / cm[0] ** 1.5, rtol=1e-9)
        np.testing.assert_allclose(r.kurtosis, cm[2] / cm[0] ** 2 - 3, rtol=1e-9)
    # Time-ordered merge: the earlier segment is aged by lambda**n_later.
    sk = sketch.moments(half_life=h)
    run = jax.jit(lambda x: sketch.from_batch(sk, x))
    r2 = sk.query(sk.merge(run(jnp.asarray(x[:123])), run(jnp.asarray(x[123:]))))
    np.testing.assert_allclose(r2.mean, mean, rtol=1e-11)
    np.testing.assert_allclose(r2.kurtosis, cm[2] / cm[0] ** 2 - 3, rtol=1e-8)


def test_ewma_float64_matches_weighted_formulas(x64):
    lam = 0.93
    x = np.random.default_rng(3).normal(5.0, 2.0, (300, 4))
    sk = sketch.ewma(decay=lam)
    state = jax.jit(lambda x: sketch.from_batch(sk, x))(jnp.asarray(x))
    assert state.mean.dtype == jnp.float64
    r = sk.query(state)
    w = np.broadcast_to(lam ** np.arange(299, -1, -1)[:, None], x.shape)
    mean = (w * x).sum(0) / w.sum(0)
    np.testing.assert_allclose(r.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(r.variance, (w * (x - mean) ** 2).sum(0) / w.sum(0), rtol=1e-11)
    # Bounded weight: never more than 1 / (1 - lambda).
    assert np.all(np.asarray(r.weight) < 1 / (1 - lam))


def test_int_input_goes_to_float64_under_x64(x64):
    sk = sketch.moments()
    s = sk.init(jnp.zeros(3, jnp.int32))
    assert s.mean.dtype == jnp.float64
    s32 = sketch.moments(dtype=jnp.float32).init(jnp.zeros(3))
    assert s32.mean.dtype == jnp.float32
