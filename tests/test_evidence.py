"""Tests of jaxstats.evidence (float32; float64 lives in test_evidence_x64.py).

Oracles: math.fsum and fractions (exact sums), mpmath at 50 digits, scipy.special.logsumexp,
numpy in float64, and plain-Python reference loops for SPRT/CUSUM.
"""

import math
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.special
from jax.test_util import check_grads

from jaxstats import evidence as ev

mpmath.mp.dps = 50
F32 = np.float32


def _ulps(got, exact: float) -> float:
    """|got - exact| in float32 ulps of the correctly rounded value."""
    cr = F32(exact)
    return abs(float(got) - float(cr)) / float(np.spacing(np.abs(cr)))


def _adversarial(n: int, cond: float, seed: int = 0) -> np.ndarray:
    """float32 data with condition number ~cond: +-big pairs that nearly cancel + a remainder."""
    rng = np.random.default_rng(seed)
    small = rng.standard_normal(n - 2 * (n // 3)) + 0.3
    big = rng.standard_normal(n // 3) * cond / 4
    x = np.concatenate([big, -big * (1 + 1e-7 * rng.standard_normal(n // 3)), small])
    rng.shuffle(x)
    return x.astype(F32)


def _lse_oracle(a: np.ndarray, b: np.ndarray | None = None) -> float:
    """log(sum b * exp(a)) in mpmath (50 digits)."""
    b = np.ones_like(a) if b is None else b
    s = mpmath.fsum(mpmath.mpf(float(bi)) * mpmath.exp(mpmath.mpf(float(ai))) for ai, bi in zip(a, b))
    return float(mpmath.log(s))


def _lse_oracle_fast(a: np.ndarray) -> float:
    """log-sum-exp of float32 ``a`` to ~1e-15 relative: float64 exps summed exactly (fsum)."""
    a64 = a.astype(np.float64)
    m = a64.max()
    return m + math.log(math.fsum(np.exp(a64 - m)))


# ---------------------------------------------------------------------------------------------
# two_sum
# ---------------------------------------------------------------------------------------------


def test_two_sum_result_is_exact_and_broadcasts():
    a = jnp.array([1e8, 3.0, -2.5e7], F32)
    r = jax.jit(ev.two_sum)(a, F32(1.5))
    assert isinstance(r, ev.TwoSumResult)
    for i in range(3):
        assert Fraction(float(r.sum[i])) + Fraction(float(r.error[i])) == Fraction(float(a[i])) + Fraction(1.5)
    assert float(r.error[0]) == 1.5
    s, e = ev.two_sum(np.int32(3), np.int32(4))  # ints -> default float
    assert s.dtype == jnp.float32 and float(s) == 7.0 and float(e) == 0.0


def test_two_sum_errors():
    with pytest.raises(ValueError, match=r"two_sum: 'a' of shape \(3,\) and 'b' of shape \(2,\) do not broadcast"):
        ev.two_sum(jnp.ones(3), jnp.ones(2))
    with pytest.raises(TypeError, match=r"two_sum: 'a' must have a real"):
        ev.two_sum(jnp.ones(2, jnp.complex64), jnp.ones(2))


def test_two_sum_dtype_mismatch(x64):
    with pytest.raises(TypeError, match="two_sum: 'a' and 'b' must have the same float dtype"):
        ev.two_sum(jnp.ones(2, jnp.float32), jnp.ones(2, jnp.float64))


# ---------------------------------------------------------------------------------------------
# compensated_sum
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 1000, 100_003, 1_000_000])
def test_compensated_sum_within_one_ulp_at_condition_1e4(n):
    x = _adversarial(n, 1e4, seed=n) if n > 5 else np.array([1e4, 1.0, -1e4, 0.25, 3e-4], F32)
    exact = math.fsum(x.astype(np.float64))
    got = jax.jit(ev.compensated_sum)(x)
    assert got.dtype == jnp.float32
    assert _ulps(got, exact) <= 1


def test_compensated_sum_beats_plain_sum_under_jit():
    """Compensation survives XLA (no fast-math re-association): on adversarial data the jitted
    compensated sum is correctly rounded where jnp.sum is off by many ulps."""
    x = _adversarial(300_000, 1e6, seed=3)
    exact = math.fsum(x.astype(np.float64))
    comp = jax.jit(ev.compensated_sum)(x)
    plain = jax.jit(jnp.sum)(x)
    seq = np.cumsum(x)[-1]  # sequential float32 accumulation, as a prototype would do
    assert _ulps(comp, exact) <= 1
    assert _ulps(plain, exact) > 8 and _ulps(seq, exact) > 8


def test_compensated_sum_axis_keepdims_where_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype(F32)
    w = x > -0.5
    f = jax.jit(ev.compensated_sum, static_argnames=("axis", "keepdims"))
    for axis in [None, 0, -1, (0, 2)]:
        for keepdims in [False, True]:
            want = np.sum(np.where(w, x, 0).astype(np.float64), axis=axis, keepdims=keepdims)
            got = f(x, axis, keepdims=keepdims, where=w)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_compensated_sum_edges():
    assert float(ev.compensated_sum(jnp.zeros((0,)))) == 0.0
    assert float(ev.compensated_sum(jnp.array([2.5]))) == 2.5
    assert float(ev.compensated_sum(F32(4.0))) == 4.0
    r = ev.compensated_sum(jnp.array([1, 2, 3], jnp.int32))
    assert r.dtype == jnp.float32 and float(r) == 6.0
    x = jnp.array([[1.0, jnp.inf], [1.0, jnp.nan], [-jnp.inf, -jnp.inf], [jnp.inf, -jnp.inf], [1.0, 2.0]])
    got = np.asarray(jax.jit(lambda v: ev.compensated_sum(v, 1))(x))
    np.testing.assert_array_equal(got, [np.inf, np.nan, -np.inf, np.nan, 3.0])


def test_compensated_sum_gradient():
    x = jnp.array([1e8, 1.0, -1e8, 0.5])
    g = jax.grad(lambda v: ev.compensated_sum(v, where=jnp.array([True, True, False, True])))(x)
    np.testing.assert_array_equal(np.asarray(g), [1.0, 1.0, 0.0, 1.0])
    check_grads(lambda v: ev.compensated_sum(v, 0), (jnp.array([0.3, -1.2, 2.0]),), order=1, modes=["fwd", "rev"])


def test_compensated_sum_vmap_equals_loop():
    xs = np.stack([_adversarial(3000, 1e4, seed=s) for s in range(3)])
    got = jax.jit(jax.vmap(ev.compensated_sum))(xs)
    for i in range(3):
        assert float(got[i]) == float(ev.compensated_sum(xs[i]))


def test_compensated_sum_errors():
    with pytest.raises(ValueError, match=r"compensated_sum: 'axis'=2 is out of bounds for an array of rank 2"):
        ev.compensated_sum(jnp.ones((2, 2)), 2)
    with pytest.raises(ValueError, match="compensated_sum: 'axis' contains a repeated axis"):
        ev.compensated_sum(jnp.ones((2, 2)), (0, -2))
    with pytest.raises(TypeError, match="compensated_sum: 'where' must be a bool mask"):
        ev.compensated_sum(jnp.ones(3), where=jnp.ones(3))
    with pytest.raises(ValueError, match=r"compensated_sum: 'where' of shape \(2,\) and the data of shape \(3,\)"):
        ev.compensated_sum(jnp.ones(3), where=jnp.ones(2, bool))
    with pytest.raises(TypeError, match="compensated_sum: 'a' must have a real"):
        ev.compensated_sum(jnp.ones(3, jnp.complex64))


# ---------------------------------------------------------------------------------------------
# logsumexp
# ---------------------------------------------------------------------------------------------


class TestLogsumexpVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_scipy(self):
        rng = np.random.default_rng(1)
        a = (rng.standard_normal((3, 4)) * 5).astype(F32)
        b = rng.uniform(-1, 2, (3, 4)).astype(F32)
        for axis in [None, 0, 1]:
            got = self.variant(lambda v: ev.logsumexp(v, axis))(a)
            np.testing.assert_allclose(got, scipy.special.logsumexp(a.astype(np.float64), axis), rtol=2e-6)
        r, s = self.variant(lambda v, w: ev.logsumexp(v, 1, b=w, return_sign=True))(a, b)
        want_r, want_s = scipy.special.logsumexp(a.astype(np.float64), 1, b=b.astype(np.float64), return_sign=True)
        np.testing.assert_allclose(r, want_r, rtol=2e-5)
        np.testing.assert_array_equal(np.asarray(s), want_s)


def test_logsumexp_keepdims_where_and_scalar():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 5)).astype(F32)
    w = rng.uniform(size=(2, 5)) > 0.3
    got = ev.logsumexp(a, 1, keepdims=True, where=w)
    want = scipy.special.logsumexp(np.where(w, a, -np.inf).astype(np.float64), 1, keepdims=True)
    assert got.shape == (2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert float(ev.logsumexp(F32(3.0))) == 3.0
    np.testing.assert_allclose(float(ev.logsumexp(jnp.array([1, 2, 3]))), scipy.special.logsumexp([1, 2, 3]), rtol=1e-7)
    np.testing.assert_array_equal(np.asarray(ev.logsumexp(jnp.zeros((2, 0)), 1)), [-np.inf, -np.inf])


@pytest.mark.parametrize(
    "dist",
    ["uniform(-10,0)", "normal(-1000,5)", "wide(-80,80)", "normal(0,1)"],
)
def test_logsumexp_two_ulp_at_a_million_float32_terms(dist):
    rng = np.random.default_rng(abs(hash(dist)) % 2**32)
    n = 1_000_000
    a = {
        "uniform(-10,0)": lambda: rng.uniform(-10, 0, n),
        "normal(-1000,5)": lambda: rng.normal(-1000, 5, n),
        "wide(-80,80)": lambda: rng.uniform(-80, 80, n),
        "normal(0,1)": lambda: rng.normal(0, 1, n),
    }[dist]().astype(F32)
    got = jax.jit(ev.logsumexp)(a)
    assert _ulps(got, _lse_oracle_fast(a)) <= 2
    # jax.nn.logsumexp / a naive form for comparison: the naive form underflows at -1000.
    if dist == "normal(-1000,5)":
        assert float(jnp.log(jnp.sum(jnp.exp(a)))) == -np.inf


def test_logsumexp_against_mpmath_with_weights():
    rng = np.random.default_rng(5)
    a = rng.uniform(-30, 5, 400).astype(F32)
    b = rng.uniform(0, 3, 400).astype(F32)
    got = jax.jit(lambda x, y: ev.logsumexp(x, b=y))(a, b)
    assert _ulps(got, _lse_oracle(a, b)) <= 2
    assert _ulps(jax.jit(ev.logsumexp)(a), _lse_oracle(a)) <= 2


def test_logsumexp_inf_and_nan_policy():
    x = jnp.array(
        [
            [-jnp.inf, -jnp.inf, -jnp.inf],
            [-jnp.inf, 0.0, -jnp.inf],
            [jnp.inf, 0.0, 1.0],
            [jnp.nan, 0.0, 1.0],
            [-1000.0, -1000.0, -jnp.inf],
        ]
    )
    got = np.asarray(jax.jit(lambda v: ev.logsumexp(v, 1))(x))
    np.testing.assert_array_equal(got[:4], [-np.inf, 0.0, np.inf, np.nan])
    assert _ulps(got[4], -1000 + math.log(2)) <= 1
    # negative total: NaN without return_sign, sign -1 with it; exact zero -> -inf, sign 0.
    assert np.isnan(float(ev.logsumexp(jnp.zeros(2), b=jnp.array([1.0, -2.0]))))
    r = ev.logsumexp(jnp.zeros(2), b=jnp.array([1.0, -1.0]), return_sign=True)
    assert float(r.log_abs) == -np.inf and float(r.sign) == 0.0
    # b == 0 ignores the term even when a is +inf (as scipy).
    assert float(ev.logsumexp(jnp.array([jnp.inf, 0.0]), b=jnp.array([0.0, 1.0]))) == 0.0


def test_logsumexp_gradients_finite_everywhere():
    f = lambda v: ev.logsumexp(v)  # noqa: E731
    grad = jax.jit(jax.grad(f))
    g = grad(jnp.array([0.0, -jnp.inf, jnp.log(3.0)]))
    np.testing.assert_allclose(np.asarray(g), [0.25, 0.0, 0.75], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(grad(jnp.full(3, -jnp.inf))), [0.0, 0.0, 0.0])  # all -inf
    jv = jax.jit(lambda v: jax.jvp(f, (v,), (jnp.ones(3),))[1])(jnp.full(3, -jnp.inf))
    assert float(jv) == 0.0
    # gradients with weights; d/db at b == 0 is still exp(a - r)
    fb = lambda x, y: ev.logsumexp(x, b=y)  # noqa: E731
    ga, gb = jax.jit(jax.grad(fb, argnums=(0, 1)))(jnp.array([0.0, 1.0, -jnp.inf]), jnp.array([2.0, 0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(ga), [1.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), [0.5, math.e / 2, 0.0], rtol=1e-6)
    check_grads(jax.jit(fb), (jnp.array([0.1, 0.7, -1.0]), jnp.array([1.5, 0.5, 1.0])), order=1, modes=["fwd", "rev"])
    gw = jax.jit(jax.grad(lambda x: ev.logsumexp(x, where=jnp.array([True, False, True]))))(jnp.zeros(3))
    np.testing.assert_allclose(np.asarray(gw), [0.5, 0.0, 0.5])


def test_logsumexp_vmap_equals_loop():
    rng = np.random.default_rng(7)
    a = rng.normal(-50, 10, (4, 300)).astype(F32)
    got = jax.jit(jax.vmap(ev.logsumexp))(a)
    for i in range(4):
        assert float(got[i]) == float(ev.logsumexp(a[i]))


def test_logsumexp_no_retrace():
    f = jax.jit(chex.assert_max_traces(lambda v: ev.logsumexp(v, 1), n=1))
    f(jnp.ones((2, 3)))
    f(jnp.zeros((2, 3)))
    chex.clear_trace_counter()


def test_logsumexp_errors():
    with pytest.raises(TypeError, match="logsumexp: 'where' must be a bool mask"):
        ev.logsumexp(jnp.ones(3), where=jnp.ones(3))
    with pytest.raises(ValueError, match=r"logsumexp: 'a' of shape \(3,\) and 'b' of shape \(2,\)"):
        ev.logsumexp(jnp.ones(3), b=jnp.ones(2))
    with pytest.raises(ValueError, match=r"logsumexp: 'where' of shape \(2,\) and 'a' of shape \(3,\)"):
        ev.logsumexp(jnp.ones(3), where=jnp.ones(2, bool))
    with pytest.raises(ValueError, match="logsumexp: 'axis'=1 is out of bounds"):
        ev.logsumexp(jnp.ones(3), 1)
    with pytest.raises(ValueError, match="logsumexp: 'axis'=0 is out of bounds for an array of rank 0"):
        ev.logsumexp(F32(1.0), 0)


# ---------------------------------------------------------------------------------------------
# cumulative_logsumexp
# ---------------------------------------------------------------------------------------------


def test_cumulative_logsumexp_matches_accumulate_and_logsumexp():
    rng = np.random.default_rng(8)
    a = rng.normal(-20, 8, (3, 500)).astype(F32)
    f = jax.jit(
        lambda v: (
            ev.cumulative_logsumexp(v, 1),
            ev.cumulative_logsumexp(v, 1, reverse=True),
            ev.cumulative_logsumexp(v[:, :3]),
        )
    )
    got, rev, flat = f(a)
    want = np.logaddexp.accumulate(a.astype(np.float64), axis=1)
    np.testing.assert_allclose(got, want, rtol=3e-6)
    for i in range(3):
        assert _ulps(got[i, -1], _lse_oracle_fast(a[i])) <= 8  # a few ulp * log2(n)
    np.testing.assert_allclose(rev[:, ::-1], np.logaddexp.accumulate(a[:, ::-1].astype(np.float64), axis=1), rtol=3e-6)
    assert flat.shape == (9,)
    np.testing.assert_allclose(flat, np.logaddexp.accumulate(a[:, :3].ravel().astype(np.float64)), rtol=3e-6)


def test_cumulative_logsumexp_inf_where_and_gradients():
    x = jnp.array([-jnp.inf, -jnp.inf, 0.0, -jnp.inf, 1.0])
    got = np.asarray(jax.jit(ev.cumulative_logsumexp)(x))
    assert got[0] == -np.inf and got[1] == -np.inf and got[2] == 0.0 and got[3] == 0.0
    g = jax.jit(jax.grad(lambda v: jnp.sum(ev.cumulative_logsumexp(v)[2:])))(x)
    assert np.all(np.isfinite(np.asarray(g)))
    assert float(g[0]) == 0.0 and float(g[1]) == 0.0
    g_all = jax.jit(jax.grad(lambda v: ev.cumulative_logsumexp(v)[-1]))(jnp.full(4, -jnp.inf))
    np.testing.assert_array_equal(np.asarray(g_all), 0.0)
    m = jax.jit(lambda v, w: ev.cumulative_logsumexp(v, where=w))(jnp.zeros(4), jnp.array([True, False, True, True]))
    np.testing.assert_allclose(m, np.log([1.0, 1.0, 2.0, 3.0]), rtol=1e-6)
    rows = jnp.array([[0.0, jnp.nan, 0.0], [0.0, 0.0, 0.0]])
    nan = np.asarray(jax.jit(lambda v: ev.cumulative_logsumexp(v, 1))(rows))
    assert nan[0, 0] == 0.0 and np.all(np.isnan(nan[0, 1:])) and np.all(np.isfinite(nan[1]))
    check_grads(jax.jit(ev.cumulative_logsumexp), (jnp.array([0.2, -0.5, 1.0, 0.1]),), order=1)
    assert ev.cumulative_logsumexp(jnp.zeros((2, 0)), 1).shape == (2, 0)


def test_cumulative_logsumexp_errors():
    with pytest.raises(ValueError, match="cumulative_logsumexp: 'axis'=2 is out of bounds"):
        ev.cumulative_logsumexp(jnp.ones((2, 2)), 2)
    with pytest.raises(TypeError, match="cumulative_logsumexp: 'where' must be a bool mask"):
        ev.cumulative_logsumexp(jnp.ones(2), where=jnp.ones(2))


# ---------------------------------------------------------------------------------------------
# log_posterior, log_odds, posterior_probability, log_bayes_factor
# ---------------------------------------------------------------------------------------------


def _log_posterior_oracle(log_prior, ll):
    """Exact-ish reference: per hypothesis fsum of float64 log-likelihoods, then softmax."""
    tot = [math.fsum(ll[:, k].astype(np.float64)) + float(log_prior[k]) for k in range(ll.shape[1])]
    m = max(tot)
    z = m + math.log(math.fsum(math.exp(t - m) for t in tot))
    return np.array([t - z for t in tot])


def test_log_posterior_matches_oracle_at_1000_magnitude():
    rng = np.random.default_rng(9)
    n, k = 100_000, 3
    ll = (rng.normal(-1000, 3, (n, 1)) + rng.normal(0, 0.05, (n, k)) + np.array([0.0, 1e-4, -1e-4])).astype(F32)
    prior = np.log(np.array([0.2, 0.3, 0.5], F32))
    got = jax.jit(ev.log_posterior)(prior, ll)
    want = _log_posterior_oracle(prior, ll)
    # a few float32 ulps of the largest entry (the sums themselves are ~ -1e5 * 0.05)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=4 * 2.0**-24 * np.abs(want).max())
    assert abs(float(ev.logsumexp(got))) < 1e-6  # normalized


def test_log_posterior_small_case_and_axis():
    ll = jnp.array([[-1.0, -2.0], [-3.0, -1.0], [-0.5, -0.5]])
    want = _log_posterior_oracle(np.zeros(2), np.asarray(ll))
    np.testing.assert_allclose(ev.log_posterior(jnp.zeros(2), ll), want, rtol=1e-6)
    batched = jnp.stack([ll, ll[::-1]], axis=1)  # [evidence, agents, K], evidence on axis 0
    got = ev.log_posterior(jnp.zeros(2), batched, axis=0)
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    np.testing.assert_allclose(got[1], want, rtol=1e-6)
    agents_first = jnp.transpose(batched, (1, 0, 2))  # [agents, evidence, K]
    np.testing.assert_allclose(ev.log_posterior(jnp.zeros(2), agents_first, axis=1), got, rtol=1e-6)


def test_log_posterior_impossible_hypotheses_and_nan_locality():
    ll = jnp.array(
        [
            [[-1.0, -jnp.inf, -2.0], [-1.0, -3.0, -2.0]],  # agent 0: H1 impossible
            [[-jnp.inf, -jnp.inf, -jnp.inf], [-1.0, -1.0, -1.0]],  # agent 1: all impossible
            [[jnp.nan, -1.0, -1.0], [-1.0, -1.0, -1.0]],  # agent 2: NaN evidence
            [[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]],  # agent 3: untouched
        ]
    )
    got = np.asarray(jax.jit(lambda p, l: ev.log_posterior(p, l, axis=1))(jnp.zeros(3), ll))
    assert got[0, 1] == -np.inf and np.all(np.isfinite(got[0, [0, 2]]))
    np.testing.assert_allclose(np.exp(got[0]).sum(), 1.0, rtol=1e-6)
    assert np.all(np.isnan(got[1])) and np.all(np.isnan(got[2]))
    np.testing.assert_allclose(got[3], np.log(np.full(3, 1 / 3)), rtol=1e-6)
    # no evidence (everything masked) gives the normalized prior
    prior = jnp.log(jnp.array([1.0, 3.0]))
    none = ev.log_posterior(prior, jnp.zeros((2, 2)), where=jnp.zeros((2, 2), bool))
    np.testing.assert_allclose(np.exp(none), [0.25, 0.75], rtol=1e-6)
    # impossible prior
    impossible_prior = ev.log_posterior(jnp.array([0.0, -jnp.inf]), jnp.zeros((1, 2)))
    np.testing.assert_array_equal(np.asarray(impossible_prior), [0.0, -np.inf])


def test_log_posterior_gradients():
    ll = jnp.array([[-1.0, -2.0, -0.5], [-3.0, -1.0, -0.2]])
    check_grads(jax.jit(ev.log_posterior), (jnp.zeros(3), ll), order=1, modes=["rev"])
    ll_inf = ll.at[0, 1].set(-jnp.inf)
    g = jax.jit(jax.grad(lambda l: ev.log_posterior(jnp.zeros(3), l)[0]))(ll_inf)
    assert np.all(np.isfinite(np.asarray(g)))


def test_log_posterior_errors():
    with pytest.raises(ValueError, match=r"log_posterior: 'log_likelihood' must have rank >= 2"):
        ev.log_posterior(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"log_posterior: 'axis'=-1 is the hypothesis axis"):
        ev.log_posterior(jnp.zeros(2), jnp.zeros((3, 2)), axis=-1)
    with pytest.raises(ValueError, match=r"log_posterior: 'log_prior' of shape \(3,\) and the result"):
        ev.log_posterior(jnp.zeros(3), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="log_posterior: 'axis'=5 is out of bounds"):
        ev.log_posterior(jnp.zeros(2), jnp.zeros((3, 2)), axis=5)
    with pytest.raises(TypeError, match="log_posterior: 'where' must be a bool mask"):
        ev.log_posterior(jnp.zeros(2), jnp.zeros((3, 2)), where=jnp.ones((3, 2)))


def test_log_odds_against_mpmath_near_zero_and_one():
    ps = [1e-30, 1e-8, 0.1, 0.5, 0.9, 1 - 1e-6]
    log_p = np.array([float(mpmath.log(p)) for p in ps] + [-1e-12], F32)
    got = np.asarray(jax.jit(ev.log_odds)(log_p))
    for lp, g in zip(log_p, got):
        p = mpmath.exp(mpmath.mpf(float(lp)))
        exact = float(mpmath.log(p / (1 - p)))
        # 2 ulp, or eps * |log_p| absolute where the log odds cancel to ~0 (p ~ 0.5)
        assert _ulps(g, exact) <= 2 or abs(float(g) - exact) <= 2.0**-23 * abs(float(lp)), (lp, g, exact)
    edges = np.asarray(ev.log_odds(jnp.array([0.0, -jnp.inf, 0.5, jnp.nan])))
    assert edges[0] == np.inf and edges[1] == -np.inf and np.isnan(edges[2]) and np.isnan(edges[3])
    g = jax.jit(jax.vmap(jax.grad(ev.log_odds)))(jnp.array([0.0, -jnp.inf, -1.0, -1e-6]))
    assert np.all(np.isfinite(np.asarray(g)))
    check_grads(ev.log_odds, (jnp.array([-0.3, -2.0]),), order=1)


def test_posterior_probability_keeps_precision_near_one():
    lo = np.array([-50.0, -5.0, 0.0, 2.0, 30.0, 80.0], F32)
    r = jax.jit(ev.posterior_probability)(lo)
    assert isinstance(r, ev.PosteriorProbability)
    for i, l in enumerate(lo):
        p = 1 / (1 + mpmath.exp(-mpmath.mpf(float(l))))
        for got, exact in [
            (r.probability[i], p),
            (r.complement[i], 1 - p),
            (r.log_probability[i], mpmath.log(p)),
            (r.log_complement[i], mpmath.log(1 - p)),
        ]:
            if exact == 0:
                assert float(got) == 0.0
            else:
                assert _ulps(got, float(exact)) <= 2, (l, got, exact)
    assert float(r.probability[4]) == 1.0 and 0 < float(r.complement[4]) < 1e-12
    inf = ev.posterior_probability(jnp.array([jnp.inf, -jnp.inf]))
    np.testing.assert_array_equal(np.asarray(inf.probability), [1.0, 0.0])
    np.testing.assert_array_equal(np.asarray(inf.log_complement), [-np.inf, 0.0])
    assert np.isnan(float(ev.posterior_probability(jnp.nan).probability))
    g = jax.vmap(jax.grad(lambda v: ev.posterior_probability(v).log_complement))(jnp.array([jnp.inf, -jnp.inf, 3.0]))
    assert np.all(np.isfinite(np.asarray(g)))
    check_grads(lambda v: ev.posterior_probability(v).log_probability, (jnp.array([0.3, -2.0]),), order=1)


def test_log_bayes_factor_exact_at_1000_magnitude():
    rng = np.random.default_rng(10)
    n = 200_000
    l0 = rng.normal(-1000, 10, n).astype(F32)
    l1 = (l0 + rng.normal(0.01, 0.2, n)).astype(F32)
    exact = math.fsum(l1.astype(np.float64)) - math.fsum(l0.astype(np.float64))
    got = jax.jit(ev.log_bayes_factor)(l1, l0)
    assert _ulps(got, exact) <= 1
    # summing each hypothesis first, in float32, cancels catastrophically
    naive = float(jnp.sum(l1) - jnp.sum(l0))
    assert abs(naive - exact) > 100 * abs(float(got) - exact)


def test_log_bayes_factor_axes_mask_inf_and_gradients():
    l1 = jnp.array([[-1.0, -2.0, -jnp.inf], [-1.0, -1.0, -1.0], [-1.0, -jnp.inf, 0.0], [0.0, jnp.nan, 0.0]])
    l0 = jnp.array([[-2.0, -2.0, -1.0], [-jnp.inf, -1.0, -1.0], [-1.0, -jnp.inf, 0.0], [0.0, 0.0, 0.0]])
    got = np.asarray(ev.log_bayes_factor(l1, l0))
    assert got[0] == -np.inf and got[1] == np.inf and np.isnan(got[2]) and np.isnan(got[3])
    masked = ev.log_bayes_factor(l1, l0, where=jnp.array([True, True, False]))
    np.testing.assert_array_equal(np.asarray(masked), [1.0, np.inf, np.nan, np.nan])
    masked = ev.log_bayes_factor(l1, l0, where=jnp.array([True, False, True]))
    np.testing.assert_array_equal(np.asarray(masked)[2:], [0.0, 0.0])
    np.testing.assert_allclose(ev.log_bayes_factor(l1[1:2, 1:], l0[1:2, 1:], axis=0, keepdims=True), [[0.0, 0.0]])
    assert float(ev.log_bayes_factor(2.0, 0.5)) == 1.5
    assert float(ev.log_bayes_factor(jnp.array([1, 2]), jnp.array([0, 0]))) == 3.0
    lbf_grad = jax.grad(lambda a, b: ev.log_bayes_factor(a, b), argnums=(0, 1))
    g1, g0 = lbf_grad(jnp.array([-1.0, -2.0]), jnp.array([-3.0, -1.0]))
    np.testing.assert_array_equal(np.asarray(g1), [1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(g0), [-1.0, -1.0])
    check_grads(lambda a, b: ev.log_bayes_factor(a, b), (jnp.array([-1.0, -2.0]), jnp.array([-3.0, -1.0])), order=1)


def test_log_bayes_factor_errors():
    with pytest.raises(ValueError, match="log_bayes_factor: 'log_likelihood_alternative' of shape"):
        ev.log_bayes_factor(jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match="log_bayes_factor: 'axis'=1 is out of bounds"):
        ev.log_bayes_factor(jnp.zeros(3), jnp.zeros(3), axis=1)
    with pytest.raises(TypeError, match="log_bayes_factor: 'where' must be a bool mask"):
        ev.log_bayes_factor(jnp.zeros(3), jnp.zeros(3), where=jnp.zeros(3))


# ---------------------------------------------------------------------------------------------
# SPRT and CUSUM
# ---------------------------------------------------------------------------------------------


def _sprt_reference(x, alpha, beta, mask=None):
    lower, upper = math.log(beta / (1 - alpha)), math.log((1 - beta) / alpha)
    s = 0.0
    for t, v in enumerate(x):
        if mask is not None and not mask[t]:
            continue
        s += float(v)
        if s >= upper:
            return 1, t, s
        if s <= lower:
            return -1, t, s
    return 0, len(x), s


def test_sprt_matches_reference_loop_batched():
    rng = np.random.default_rng(11)
    x = rng.normal(0.05, 0.6, (64, 200)).astype(F32)
    mask = rng.uniform(size=x.shape) > 0.2
    r = jax.jit(lambda v, w: ev.sprt(v, alpha=0.05, beta=0.1, where=w))(x, mask)
    assert r.decision.dtype == jnp.int32 and r.stopping_index.dtype == jnp.int32
    for i in range(64):
        d, t, s = _sprt_reference(x[i].astype(np.float64), 0.05, 0.1, mask[i])
        assert int(r.decision[i]) == d and int(r.stopping_index[i]) == t
        assert float(r.log_likelihood_ratio[i]) == pytest.approx(s, rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(r.log_upper, math.log(0.9 / 0.05), rtol=1e-6)
    np.testing.assert_allclose(r.log_lower, math.log(0.1 / 0.95), rtol=1e-6)
    # time axis first gives the same
    r0 = jax.jit(lambda v, w: ev.sprt(v, alpha=0.05, beta=0.1, axis=0, where=w))(x.T, mask.T)
    np.testing.assert_array_equal(np.asarray(r0.decision), np.asarray(r.decision))


def test_sprt_error_rates_are_near_nominal():
    """Statistical check with a fixed seed: Gaussian LLR streams under H1 and H0; Wald's
    boundaries keep each error rate near (below) its nominal value."""
    rng = np.random.default_rng(12)
    n_agents, n_obs, mu = 4000, 400, 0.5  # N(+-mu, 1) data; LLR of N(mu,1) vs N(-mu,1) is 2*mu*x
    h1 = 2 * mu * rng.normal(mu, 1.0, (n_agents, n_obs))
    h0 = 2 * mu * rng.normal(-mu, 1.0, (n_agents, n_obs))
    run = jax.jit(lambda v: ev.sprt(v, alpha=0.05, beta=0.1))
    r1, r0 = run(h1.astype(F32)), run(h0.astype(F32))
    se = lambda p: 3 * math.sqrt(p * (1 - p) / n_agents)
    assert float(jnp.mean(r1.decision == -1)) <= 0.1 + se(0.1)  # type II
    assert float(jnp.mean(r0.decision == 1)) <= 0.05 + se(0.05)  # type I
    assert float(jnp.mean(r1.decision == 0)) < 0.01


def test_sprt_inf_nan_empty_and_per_agent_rates():
    x = jnp.array([[0.1, -jnp.inf, 5.0], [0.1, jnp.inf, -5.0], [jnp.nan, 9.0, 9.0], [0.1, 0.1, 0.1]])
    r = jax.jit(ev.sprt)(x)
    np.testing.assert_array_equal(np.asarray(r.decision), [-1, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(r.stopping_index), [1, 1, 3, 3])
    assert np.isnan(float(r.log_likelihood_ratio[2]))
    assert float(r.log_likelihood_ratio[3]) == pytest.approx(0.3, rel=1e-6)
    e = ev.sprt(jnp.zeros((2, 0)))
    np.testing.assert_array_equal(np.asarray(e.decision), [0, 0])
    np.testing.assert_array_equal(np.asarray(e.stopping_index), [0, 0])
    per = jax.jit(lambda a: ev.sprt(jnp.full((2, 10), 0.5), alpha=a, beta=0.3))(jnp.array([0.3, 0.001]))
    assert int(per.stopping_index[0]) < int(per.stopping_index[1])


def test_sprt_errors():
    with pytest.raises(ValueError, match="sprt: 'alpha' must lie strictly between 0 and 1"):
        ev.sprt(jnp.zeros(3), alpha=1.5)
    with pytest.raises(ValueError, match="sprt: 'beta' must lie strictly between 0 and 1"):
        ev.sprt(jnp.zeros(3), beta=0.0)
    with pytest.raises(ValueError, match=r"sprt: 'alpha' \+ 'beta' must be < 1"):
        ev.sprt(jnp.zeros(3), alpha=0.6, beta=0.5)
    with pytest.raises(TypeError, match="sprt: 'alpha' must be a number in"):
        ev.sprt(jnp.zeros(3), alpha=True)
    with pytest.raises(ValueError, match="sprt: 'log_likelihood_ratio' must have a time axis"):
        ev.sprt(F32(1.0))
    with pytest.raises(ValueError, match=r"sprt: 'alpha' of shape \(3,\) and the batch shape of shape \(2,\)"):
        ev.sprt(jnp.zeros((2, 4)), alpha=jnp.full(3, 0.1))


def _cusum_reference(x, h, mask=None):
    c, path, alarm = 0.0, [], len(x)
    for t, v in enumerate(x):
        if mask is None or mask[t]:
            c = max(0.0, c + float(v))
            if c >= h and alarm == len(x):
                alarm = t
        path.append(c)
    return np.array(path), alarm


def test_cusum_matches_reference_loop_batched():
    rng = np.random.default_rng(13)
    x = rng.normal(-0.2, 1.0, (32, 300)).astype(F32)
    x[:, 150:] += 0.8  # change point
    mask = rng.uniform(size=x.shape) > 0.1
    h = np.linspace(2.0, 12.0, 32).astype(F32)
    r = jax.jit(lambda v, w, t: ev.cusum(v, t, where=w))(x, mask, h)
    for i in range(32):
        path, alarm = _cusum_reference(x[i].astype(np.float64), float(h[i]), mask[i])
        np.testing.assert_allclose(r.statistic[i], path, rtol=1e-5, atol=1e-5)
        assert int(r.alarm_index[i]) == alarm and bool(r.alarm[i]) == (alarm < 300)
    r0 = ev.cusum(x.T, 5.0, axis=0)
    r1 = ev.cusum(x, 5.0)
    np.testing.assert_array_equal(np.asarray(r0.alarm_index), np.asarray(r1.alarm_index))
    np.testing.assert_array_equal(np.asarray(r0.statistic), np.asarray(r1.statistic).T)


def test_cusum_inf_nan_empty():
    x = jnp.array([[1.0, -jnp.inf, 1.0, 1.0], [1.0, jnp.nan, 5.0, 5.0], [1.0, jnp.inf, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    r = ev.cusum(x, 3.0)
    np.testing.assert_array_equal(np.asarray(r.statistic[0]), [1.0, 0.0, 1.0, 2.0])
    assert np.all(np.isnan(np.asarray(r.statistic[1, 1:]))) and not bool(r.alarm[1])
    np.testing.assert_array_equal(np.asarray(r.alarm_index), [4, 4, 1, 2])
    e = ev.cusum(jnp.zeros((3, 0)), 1.0)
    assert e.statistic.shape == (3, 0) and int(e.alarm_index[0]) == 0


def test_cusum_errors():
    with pytest.raises(ValueError, match="cusum: 'threshold' must be > 0"):
        ev.cusum(jnp.zeros(3), 0.0)
    with pytest.raises(TypeError, match="cusum: 'threshold' must be a positive number"):
        ev.cusum(jnp.zeros(3), True)
    with pytest.raises(ValueError, match="cusum: 'log_likelihood_ratio' must have a time axis"):
        ev.cusum(F32(1.0), 1.0)
    with pytest.raises(ValueError, match="cusum: 'axis'=2 is out of bounds"):
        ev.cusum(jnp.zeros((2, 2)), 1.0, axis=2)
