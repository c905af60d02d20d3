"""float64 tests of jaxstats.evidence and the log_evidence sketch (scoped x64 via the fixture).

Checks dtypes (no silent downcast, float64 in -> float64 out), double-precision accuracy against
mpmath / math.fsum, and second-order gradients (finite differences need float64).
"""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.special
from jax.test_util import check_grads

from jaxstats import evidence as ev
from jaxstats import sketch
from jaxstats.sketch.evidence import log_evidence

mpmath.mp.dps = 50
F64 = np.float64

pytestmark = pytest.mark.usefixtures("x64")


def _ulps64(got, exact) -> float:
    cr = F64(float(exact))
    return abs(float(got) - float(cr)) / float(np.spacing(abs(cr)))


def test_compensated_sum_float64_correctly_rounded():
    rng = np.random.default_rng(0)
    n = 200_003
    big = rng.standard_normal(n // 3) * 1e8
    x = np.concatenate([big, -big * (1 + 1e-15 * rng.standard_normal(n // 3)), rng.standard_normal(n - 2 * (n // 3))])
    rng.shuffle(x)
    got = jax.jit(ev.compensated_sum)(x)
    assert got.dtype == jnp.float64
    exact = math.fsum(x)
    assert _ulps64(got, exact) <= 1
    assert _ulps64(np.sum(x), exact) > 4  # numpy's pairwise float64 sum is visibly off here


def test_logsumexp_float64_against_mpmath():
    rng = np.random.default_rng(1)
    a = rng.normal(-1000, 20, 2000)
    got = jax.jit(ev.logsumexp)(a)
    assert got.dtype == jnp.float64
    exact = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in a))
    assert _ulps64(got, exact) <= 2
    b = rng.uniform(-1, 2, 2000)
    r = ev.logsumexp(a, b=b, return_sign=True)
    want = scipy.special.logsumexp(a, b=b, return_sign=True)
    assert r.log_abs.dtype == jnp.float64 and r.sign.dtype == jnp.float64
    np.testing.assert_allclose(float(r.log_abs), want[0], rtol=1e-12)
    assert float(r.sign) == want[1]


def test_second_order_gradients_float64():
    a = jnp.array([0.3, -1.0, 2.0, -0.7])
    w = jnp.array([1.0, 0.5, 2.0, 0.1])
    check_grads(jax.jit(lambda v, b: ev.logsumexp(v, b=b)), (a, w), order=2, modes=["rev"])
    g = jax.grad(lambda v: ev.logsumexp(v))(jnp.array([0.0, -jnp.inf]))
    np.testing.assert_array_equal(np.asarray(g), [1.0, 0.0])


def test_log_posterior_and_bayes_factor_float64():
    rng = np.random.default_rng(2)
    ll = rng.normal(-1000, 3, (5000, 2)) + np.array([0.0, 1e-6])
    got = ev.log_posterior(jnp.zeros(2), ll)
    assert got.dtype == jnp.float64
    d = math.fsum(np.concatenate([ll[:, 1], -ll[:, 0]]))  # exact difference of the sums
    want = np.array([-math.log1p(math.exp(d)), d - math.log1p(math.exp(d))])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    lbf = ev.log_bayes_factor(ll[:, 1], ll[:, 0])
    assert lbf.dtype == jnp.float64
    assert abs(float(lbf) - d) <= 1e-9
    # mixed float32/float64 inputs promote to float64 (explicit numpy promotion)
    assert ev.log_bayes_factor(ll[:, 1].astype(np.float32), ll[:, 0]).dtype == jnp.float64


def test_log_odds_and_posterior_probability_float64():
    lp = np.array([-1e-12, -30.0, math.log(0.9)])
    got = ev.log_odds(lp)
    assert got.dtype == jnp.float64
    for x, g in zip(lp, np.asarray(got)):
        p = mpmath.exp(mpmath.mpf(float(x)))
        assert _ulps64(g, mpmath.log(p / (1 - p))) <= 4
    r = ev.posterior_probability(np.array([40.0]))
    assert r.complement.dtype == jnp.float64
    assert _ulps64(r.complement[0], 1 / (1 + mpmath.exp(40))) <= 4


def test_sprt_cusum_float64():
    x = np.full((2, 50), 0.2)
    r = ev.sprt(x, alpha=0.01, beta=0.01)
    assert r.log_likelihood_ratio.dtype == jnp.float64 and r.log_upper.dtype == jnp.float64
    assert int(r.stopping_index[0]) == math.ceil(math.log(0.99 / 0.01) / 0.2 - 1e-9) - 1
    c = ev.cusum(x, 1.0)
    assert c.statistic.dtype == jnp.float64 and int(c.alarm_index[0]) == 4


def test_log_evidence_sketch_float64():
    sk = log_evidence()
    s = sk.init(jax.ShapeDtypeStruct((), jnp.float64))
    assert s.log_evidence.dtype == jnp.float64 and s.count.dtype == jnp.float64
    xs = np.random.default_rng(3).normal(0.1, 1.0, 10_000)
    s = jax.jit(lambda v: sketch.from_batch(sk, v))(xs)
    assert s.log_evidence.dtype == jnp.float64
    assert _ulps64(sk.query(s), math.fsum(xs)) <= 1
    assert float(s.count) == 10_000
    s32 = log_evidence(dtype=jnp.float32).init(jnp.zeros((), jnp.float64))
    assert s32.log_evidence.dtype == jnp.float32
