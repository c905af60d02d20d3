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


# ---------------------------------------------------------------------------------------------
# Native CPU reductions (jaxstats/_native/reduce.cc) vs the XLA formulation
# ---------------------------------------------------------------------------------------------

from jaxstats import _native  # noqa: E402

_TARGETS = ("JaxstatsCompensatedSum", "JaxstatsDifferenceSum", "JaxstatsCenteredSum")


@pytest.fixture
def native():
    """Skip when the native kernels cannot be built here (no compiler, JAXSTATS_NATIVE=0)."""
    if _native.load() is None:
        pytest.skip(f"native kernels unavailable: {_native.status()}")


def _run(monkeypatch, use_native: bool, fn, *args):
    """``jit(fn)(*args)`` on one path, and whether the traced program calls a native target.

    A fresh function object per call, so no trace cached for the other path is reused.
    """
    monkeypatch.setattr(ev, "_USE_NATIVE", use_native)
    f = jax.jit(lambda *a: fn(*a))
    text = str(jax.make_jaxpr(f)(*args))
    return jax.tree.map(np.asarray, f(*args)), any(t in text for t in _TARGETS)


def _both(monkeypatch, fn, *args):
    """(native result, XLA result); asserts that each path is the one that ran."""
    got, called = _run(monkeypatch, True, fn, *args)
    assert called, "the native kernel was not used"
    ref, called = _run(monkeypatch, False, fn, *args)
    assert not called, "the fallback still called the native kernel"
    return got, ref


def _ulps_of(got, exact, dtype) -> np.ndarray:
    """Elementwise |got - exact| in ulps of ``dtype`` at the correctly rounded exact value."""
    cr = np.asarray(exact, np.float64).astype(dtype)
    spacing = np.spacing(np.abs(cr)).astype(np.float64)
    return np.abs(np.asarray(got, np.float64) - cr.astype(np.float64)) / spacing


def _ill_conditioned(shape, dtype, seed):
    """Columns (along axis 0) of big +-pairs that nearly cancel plus a remainder of mean 1:
    condition number ~1e4 in float32 (as _adversarial), ~1e12 in float64."""
    rng = np.random.default_rng(seed)
    n = shape[0]
    rest = shape[1:]
    third = n // 3
    scale, wobble = (2.5e3, 1e-7) if dtype == np.float32 else (1e12, 1e-15)
    big = rng.standard_normal((third, *rest)) * scale
    small = rng.standard_normal((n - 2 * third, *rest)) + 1.0
    x = np.concatenate([big, -big * (1 + wobble * rng.standard_normal((third, *rest))), small])
    return rng.permutation(x, axis=0).astype(dtype)


def _fsum_axis0(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    return np.array([math.fsum(flat[:, j]) for j in range(flat.shape[1])]).reshape(x.shape[1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inner", [1, 2, 3, 15, 16, 17, 100])
def test_native_compensated_sum_matches_fsum_and_xla(native, monkeypatch, dtype, inner):
    """Every kernel path (stream with inner-periodic lanes, short blocks, column-vectorized) is
    within 1 ulp of the exact sum on ill-conditioned data, as the XLA formulation is."""
    with jax.enable_x64(dtype == np.float64):
        for n in (5, 64, 4099):
            x = _ill_conditioned((n, inner), dtype, seed=n * 131 + inner)
            exact = _fsum_axis0(x)
            got, ref = _both(monkeypatch, lambda v: ev.compensated_sum(v, 0), x)
            assert got.dtype == dtype and got.shape == (inner,)
            assert _ulps_of(got, exact, dtype).max() <= 1, (n, inner)
            assert _ulps_of(ref, exact, dtype).max() <= 1, (n, inner)
            # the same columns with outer batches ([outer, n, inner], middle axis reduced) and
            # as rows of the transpose (inner = 1 per row)
            xb = np.stack([x, -x[::-1], x * 2])
            got_b, _ = _run(monkeypatch, True, lambda v: ev.compensated_sum(v, 1), xb)
            assert _ulps_of(got_b, np.stack([exact, -exact, 2 * exact]), dtype).max() <= 1
            got_t, _ = _run(monkeypatch, True, lambda v: ev.compensated_sum(v, -1), np.ascontiguousarray(x.T))
            assert _ulps_of(got_t, exact, dtype).max() <= 1
        flat, _ = _run(monkeypatch, True, ev.compensated_sum, x)
        assert _ulps_of(flat, math.fsum(x.ravel().astype(np.float64)), dtype) <= 1


def test_native_compensated_sum_million_float32_one_ulp(native, monkeypatch):
    x = _adversarial(1_000_003, 1e4, seed=17)
    exact = math.fsum(x.astype(np.float64))
    got, ref = _both(monkeypatch, ev.compensated_sum, x)
    assert _ulps(got, exact) <= 1 and _ulps(ref, exact) <= 1
    assert _ulps(jax.jit(jnp.sum)(x), exact) > 1  # the data is hard enough to matter


def test_native_compensated_sum_axes_keepdims_where(native, monkeypatch):
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((3, 4, 5, 6)) * 10.0 ** rng.integers(-3, 4, (3, 4, 5, 6))).astype(F32)
    w = rng.random(x.shape) > 0.3
    xm = np.where(w, x, 0).astype(np.float64)
    for axis in [None, 0, 1, 3, -1, (0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3), (0, 1, 2, 3), (0, 1, 3)]:
        for keepdims in (False, True):
            fn = lambda v, m: ev.compensated_sum(v, axis, keepdims=keepdims, where=m)  # noqa: E731
            got, ref = _both(monkeypatch, fn, x, w)
            want = np.sum(xm, axis=axis, keepdims=keepdims)
            assert got.shape == want.shape == ref.shape
            # both paths within 1 ulp of the exact sum (a float64 sum of <= 360 float32 terms)
            assert _ulps_of(got, want, F32).max() <= 1, axis
            assert _ulps_of(ref, want, F32).max() <= 1, axis
    # where broadcast from a smaller mask
    small_mask = jnp.array([True, False, True, True])
    got, ref = _both(monkeypatch, lambda v: ev.compensated_sum(v, 0, where=small_mask), x[0, :, :, 0].T)
    np.testing.assert_array_equal(got, ref)


def test_native_compensated_sum_empty_and_length_one(native, monkeypatch):
    cases = [
        ((0,), None), ((3, 0), 1), ((0, 4), 0), ((0, 3), 1), ((2, 0, 3), 1), ((2, 0, 3), (0, 2)),
        ((1,), None), ((1, 5), 0), ((4, 1), 1),
    ]
    rng = np.random.default_rng(2)
    for shape, axis in cases:
        x = rng.standard_normal(shape).astype(F32)
        got, ref = _both(monkeypatch, lambda v: ev.compensated_sum(v, axis), x)
        want = np.sum(x.astype(np.float64), axis=axis)
        assert got.shape == want.shape == ref.shape, shape
        np.testing.assert_array_equal(got, want.astype(F32))  # exact: at most one term each
        np.testing.assert_array_equal(ref, want.astype(F32))
    g = jax.grad(lambda v: ev.compensated_sum(v, 0).sum())(jnp.zeros((0, 3)))
    assert g.shape == (0, 3)


@pytest.mark.parametrize("inner", [1, 3, 17])
def test_native_compensated_sum_non_finite_like_a_plain_sum(native, monkeypatch, inner):
    inf, nan = np.inf, np.nan
    patterns = [(inf,), (-inf, -inf), (inf, -inf), (nan,), (1.0, nan, inf), (-inf, 5.0), (3e38, 3e38), ()]
    want = [inf, -inf, nan, nan, nan, -inf, inf, None]
    for n in (6, 5000):  # short blocks and the stream/column loops
        x = np.ones((n, len(patterns) * inner), F32)
        for p, vals in enumerate(patterns):
            for c in range(inner):
                rows = np.random.default_rng(p * 7 + c).choice(n, len(vals), replace=False)
                x[rows, p * inner + c] = vals
        got, ref = _both(monkeypatch, lambda v: ev.compensated_sum(v, 0), x)
        np.testing.assert_array_equal(got, ref)
        for p, w in enumerate(want):
            col = got[p * inner : (p + 1) * inner]
            if w is None:
                np.testing.assert_array_equal(col, np.full(inner, n, F32))
            else:
                np.testing.assert_array_equal(col, np.full(inner, w, F32))


def test_native_compensated_sum_vmap_grad_jit(native, monkeypatch):
    monkeypatch.setattr(ev, "_USE_NATIVE", True)
    xs = np.stack([_adversarial(3000, 1e4, seed=s) for s in range(4)])  # [4, 3000]
    exact = [math.fsum(r.astype(np.float64)) for r in xs]
    for in_axes, data in [(0, xs), (1, np.ascontiguousarray(xs.T))]:
        got = jax.jit(jax.vmap(ev.compensated_sum, in_axes=in_axes))(data)
        for i in range(4):
            assert _ulps(got[i], exact[i]) <= 1
    # vmap with a keepdims reduction inside and an unbatched mask
    mask = np.arange(3000) % 3 != 0
    m2 = mask.reshape(30, 100)
    got = jax.jit(jax.vmap(lambda v: ev.compensated_sum(v.reshape(30, 100), 0, keepdims=True, where=m2)))(xs)
    assert got.shape == (4, 1, 100)
    want = np.where(mask, xs, 0).astype(np.float64).reshape(4, 30, 100).sum(1, keepdims=True)
    assert _ulps_of(got, want, F32).max() <= 1
    # gradients (forward and reverse), also under vmap and jit
    w = jnp.array([True, False, True, True])
    v0 = jnp.array([0.3, -1.2, 2.0, 0.5])
    check_grads(lambda v: ev.compensated_sum(v, 0, where=w), (v0,), order=1, modes=["fwd", "rev"])
    check_grads(lambda v: ev.compensated_sum(v, (0, 2)), (jnp.ones((2, 3, 4)) * 0.25,), order=1, modes=["fwd", "rev"])
    g = jax.jit(jax.vmap(jax.grad(lambda v: ev.compensated_sum(v, where=w))))(jnp.ones((3, 4)))
    np.testing.assert_array_equal(np.asarray(g), np.tile([1.0, 0.0, 1.0, 1.0], (3, 1)))
    _, t = jax.jvp(lambda v: ev.compensated_sum(v, 1), (jnp.ones((2, 5)),), (jnp.arange(10.0).reshape(2, 5),))
    np.testing.assert_array_equal(np.asarray(t), [10.0, 35.0])
    assert "JaxstatsCompensatedSum" in str(jax.make_jaxpr(jax.grad(lambda v: ev.compensated_sum(v)))(jnp.ones(3)))


def test_native_compensated_sum_float64_correctly_rounded(native, monkeypatch, x64):
    rng = np.random.default_rng(4)
    big = rng.standard_normal(70_000) * 1e8
    x = np.concatenate([big, -big * (1 + 1e-15 * rng.standard_normal(70_000)), rng.standard_normal(70_003)])
    rng.shuffle(x)
    got, ref = _both(monkeypatch, ev.compensated_sum, x)
    assert got.dtype == np.float64
    exact = math.fsum(x)
    assert _ulps_of(got, exact, np.float64) <= 1 and _ulps_of(ref, exact, np.float64) <= 1


def test_native_log_bayes_factor_matches_fsum_and_xla(native, monkeypatch):
    rng = np.random.default_rng(12)
    l0 = rng.normal(-1000, 10, (50_001, 3)).astype(F32)
    l1 = (l0 + rng.normal(0.01, 0.2, l0.shape)).astype(F32)
    exact = [math.fsum(l1[:, j].astype(np.float64)) - math.fsum(l0[:, j].astype(np.float64)) for j in range(3)]
    got, ref = _both(monkeypatch, lambda a, b: ev.log_bayes_factor(a, b, axis=0), l1, l0)
    assert _ulps_of(got, exact, F32).max() <= 1 and _ulps_of(ref, exact, F32).max() <= 1
    # axes, keepdims, masks, broadcasting and the inf/NaN policy agree with the XLA path
    a = jnp.array([[-1.0, -2.0, -jnp.inf], [-1.0, -1.0, -1.0], [-1.0, -jnp.inf, 0.0], [0.0, jnp.nan, 0.0]])
    b = jnp.array([[-2.0, -2.0, -1.0], [-jnp.inf, -1.0, -1.0], [-1.0, -jnp.inf, 0.0], [0.0, 0.0, 0.0]])
    kws = [{}, {"axis": 0}, {"axis": None}, {"axis": (0, 1), "keepdims": True}]
    kws.append({"where": jnp.array([True, False, True])})
    for kw in kws:
        got, ref = _both(monkeypatch, lambda u, v: ev.log_bayes_factor(u, v, **kw), a, b)
        np.testing.assert_array_equal(got, ref)
    got, ref = _both(monkeypatch, lambda u, v: ev.log_bayes_factor(u, v), l1[:4000].T, jnp.float32(-1000.0))
    np.testing.assert_array_equal(got, ref)
    # vmap with an unbatched second argument; gradients
    monkeypatch.setattr(ev, "_USE_NATIVE", True)
    v = jax.jit(jax.vmap(lambda u: ev.log_bayes_factor(u, l0[:100, 0])))(l1[:100].T)
    want = [math.fsum(l1[:100, j].astype(np.float64)) - math.fsum(l0[:100, 0].astype(np.float64)) for j in range(3)]
    assert _ulps_of(v, want, F32).max() <= 1
    pair = (jnp.array([-1.0, -2.0]), jnp.array([-3.0, -1.0]))
    check_grads(lambda u, w: ev.log_bayes_factor(u, w), pair, order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize("k", [1, 2, 3, 5, 17])
def test_native_log_posterior_matches_xla(native, monkeypatch, k):
    rng = np.random.default_rng(30 + k)
    n = 20_000
    ll = (rng.normal(-1000, 3, (n, 1)) + rng.normal(0, 0.05, (n, k))).astype(F32)
    prior = np.log(rng.uniform(0.1, 1.0, k)).astype(F32)
    got, ref = _both(monkeypatch, ev.log_posterior, prior, ll)
    want = _log_posterior_oracle(prior, ll)
    tol = 4 * 2.0**-24 * np.abs(want).max()
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=0, atol=tol)
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    # agents on another axis (column path for K * agents > 16), masks, impossible and NaN evidence
    lb = rng.normal(-5, 2, (7, 300, k)).astype(F32)
    lb[1, 3, 0] = -np.inf
    lb[2, :, min(1, k - 1)] = -np.inf
    lb[3, 10, 0] = np.nan
    lb[4, 5, :] = -np.inf
    mask = rng.random(lb.shape) > 0.2
    for axis, where in [(1, None), (1, mask), (0, None), (0, mask)]:
        fn = lambda p, l, m: ev.log_posterior(p, l, axis=axis, where=m)  # noqa: E731
        got, ref = _both(monkeypatch, fn, prior, lb, where)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref))
        ok = np.isfinite(ref)
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-6, atol=1e-6)


def test_native_log_posterior_float64_vmap_and_gradients(native, monkeypatch, x64):
    rng = np.random.default_rng(40)
    ll = rng.normal(-1000, 3, (4, 5000, 2))
    prior = np.log(np.array([0.3, 0.7]))
    got, ref = _both(monkeypatch, jax.vmap(lambda l: ev.log_posterior(prior, l)), ll)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    for i in range(4):
        np.testing.assert_allclose(got[i], _log_posterior_oracle(prior, ll[i]), rtol=0, atol=1e-9)
    # vmap with an unbatched mask (broadcast to the batch for the kernel)
    mask = rng.random((5000, 2)) > 0.5
    got, ref = _both(monkeypatch, jax.vmap(lambda l: ev.log_posterior(prior, l, where=mask)), ll)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    monkeypatch.setattr(ev, "_USE_NATIVE", True)
    small = jnp.array([[-1.0, -2.0, -0.5], [-3.0, -1.0, -0.2], [-0.1, -0.3, -2.0]])
    check_grads(lambda p, l: ev.log_posterior(p, l), (jnp.zeros(3), small), order=2, modes=["fwd", "rev"])
    live = small > -1.5
    check_grads(lambda l: ev.log_posterior(jnp.zeros(3), l, where=live), (small,), order=1, modes=["fwd", "rev"])
    g = jax.grad(lambda l: ev.log_posterior(jnp.zeros(3), l)[0])(small.at[0, 1].set(-jnp.inf))
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("use_native", [True, False])
def test_log_posterior_partial_masks_ignore_entries(monkeypatch, use_native):
    """A masked entry is ignored (log-likelihood 0) even when the other hypotheses of that
    observation are live: regression test for the per-observation shift, which used to be
    applied to the live hypotheses only (wrong values and gradients for partial masks)."""
    if use_native and _native.load() is None:
        pytest.skip("native kernels unavailable")
    monkeypatch.setattr(ev, "_USE_NATIVE", use_native)
    rng = np.random.default_rng(50)
    ll = rng.normal(-1000, 3, (400, 3)).astype(F32)
    ll[7, 1] = np.nan  # masked: must not matter
    ll[8, 2] = -np.inf  # live: hypothesis 2 impossible
    mask = rng.random(ll.shape) > 0.3
    mask[7, 1] = False
    mask[8, 2] = True
    prior = np.log(np.array([0.2, 0.3, 0.5], F32))
    got = np.asarray(jax.jit(lambda p, l, m: ev.log_posterior(p, l, where=m))(prior, ll, mask))
    tot = [math.fsum(ll[mask[:, k], k].astype(np.float64)) + float(prior[k]) for k in range(3)]
    finite = [t for t in tot if np.isfinite(t)]
    z = max(finite) + math.log(math.fsum(math.exp(t - max(finite)) for t in finite))
    want = np.array([t - z for t in tot])
    assert got[2] == -np.inf
    assert _ulps_of(got[:2], want[:2], F32).max() <= 2  # the result is ~ -2e4: a few ulps
    small = jnp.array([[-1.0, -2.0, -0.5], [-3.0, -1.0, -0.2], [-0.1, -0.3, -2.0]])
    with jax.enable_x64(True):
        s64 = jnp.asarray(small, jnp.float64)
        live = s64 > -1.5
        fn = lambda l: ev.log_posterior(jnp.zeros(3, jnp.float64), l, where=live)  # noqa: E731
        check_grads(fn, (s64,), order=1, modes=["fwd", "rev"])


def test_native_reductions_on_sharded_inputs(native, monkeypatch):
    """Operands sharded over the 4 CPU devices (outer, reduced or kept axes) give the same sums."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("d",))
    if mesh.size < 2:
        pytest.skip("needs several devices")
    x = np.stack([_adversarial(4000, 1e4, seed=s) for s in range(8)])
    exact = [math.fsum(r.astype(np.float64)) for r in x]
    for spec in (P("d", None), P(None, "d")):
        xs = jax.device_put(x, NamedSharding(mesh, spec))
        got, ref = _both(monkeypatch, lambda v: ev.compensated_sum(v, 1), xs)
        assert _ulps_of(got, exact, F32).max() <= 1
        np.testing.assert_array_equal(got, ref)
        got, ref = _both(monkeypatch, ev.compensated_sum, xs)
        assert _ulps(got, math.fsum(x.ravel().astype(np.float64))) <= 1


def test_native_only_on_cpu_under_platform_dependent(native, monkeypatch):
    """With non-CPU devices around, the native kernels sit in the CPU branch of a
    ``platform_dependent`` switch: CPU runs them, a CUDA/TPU lowering holds only XLA code."""
    from jax import export

    x = jnp.asarray(_ill_conditioned((3000, 2), F32, seed=3))
    fn = lambda v: (  # noqa: E731
        ev.compensated_sum(v, 0),
        ev.log_bayes_factor(v[:, 0], v[:, 1]),
        ev.log_posterior(jnp.zeros(2), v, where=v > -5),
    )
    direct = jax.tree.map(np.asarray, jax.jit(fn)(x))
    monkeypatch.setattr(ev, "_cpu_only", lambda: False)  # pretend a GPU is present
    jax.clear_caches()  # the library's jitted cores were traced for an all-CPU process
    try:
        f = jax.jit(lambda v: fn(v))
        assert "platform_index" in str(jax.make_jaxpr(f)(x))
        for a, b in zip(jax.tree.leaves(jax.tree.map(np.asarray, f(x))), jax.tree.leaves(direct)):
            np.testing.assert_array_equal(a, b)
        for platform in ("cuda", "tpu"):
            module = export.export(f, platforms=[platform])(x).mlir_module()
            assert not any(t in module for t in _TARGETS), platform
    finally:
        jax.clear_caches()


def test_native_switch_and_env_fallback(native, monkeypatch):
    """``_USE_NATIVE = False`` and ``JAXSTATS_NATIVE=0`` route everything to XLA, same results."""
    monkeypatch.setattr(ev, "_USE_NATIVE", False)
    assert ev._reduction_path(np.float32) == "xla"
    monkeypatch.setattr(ev, "_USE_NATIVE", True)
    assert ev._reduction_path(np.float32) == "native" and ev._reduction_path(np.float64) == "native"
    assert ev._reduction_path(np.float16) == "xla"  # no kernel for half precision
    import subprocess
    import sys

    code = (
        "import math, numpy as np, jax\n"
        "from jaxstats import evidence as ev, _native\n"
        "x = np.array([1e8, 1.0, -1e8, 0.5] * 1000, np.float32)\n"
        "print(ev._reduction_path(np.float32), _native.status().startswith('unavailable'),"
        " float(jax.jit(ev.compensated_sum)(x)) == 1500.0,"
        " 'Jaxstats' in str(jax.make_jaxpr(ev.compensated_sum)(x)))\n"
    )
    env = dict(__import__("os").environ, JAXSTATS_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["xla", "True", "True", "False"]
