"""Tests of jaxstats._numerics: error-free transformations, pair arithmetic, compensated sums
and gradient-safe helpers. Oracles: fractions.Fraction (exact), math.fsum, mpmath (50 digits)."""

import math
from fractions import Fraction

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxstats import _numerics as nm

mpmath.mp.dps = 50
F32 = np.float32


def _frac(x) -> Fraction:
    return Fraction(float(x))


def _adversarial(n: int, cond: float, seed: int = 0) -> np.ndarray:
    """float32 data with condition number sum|x| / |sum x| of roughly ``cond``: +-big pairs
    that almost cancel plus a small, well-conditioned remainder."""
    rng = np.random.default_rng(seed)
    small = rng.standard_normal(n - 2 * (n // 3)) + 0.3
    big = rng.standard_normal(n // 3) * cond / 4
    x = np.concatenate([big, -big * (1 + 1e-7 * rng.standard_normal(n // 3)), small])
    rng.shuffle(x)
    return x.astype(F32)


def _cond(x: np.ndarray) -> float:
    return float(np.abs(x.astype(np.float64)).sum() / abs(math.fsum(x.astype(np.float64))))


def _ulps(got, exact: float) -> float:
    """Distance of float32 ``got`` from ``exact`` in float32 ulps of the correctly rounded value."""
    cr = F32(exact)
    return abs(float(got) - float(cr)) / float(np.spacing(np.abs(cr)))


# ---------------------------------------------------------------------------------------------
# Error-free transformations
# ---------------------------------------------------------------------------------------------

# XLA on CPU flushes subnormals to zero (documented in _numerics): keep inputs and their
# rounding errors normal.
finite32 = st.floats(-(2.0**100), 2.0**100, width=32, allow_nan=False, allow_infinity=False).filter(
    lambda v: v == 0 or abs(v) >= 2.0**-60
)


@hypothesis.given(a=finite32, b=finite32)
def test_two_sum_is_exact(a, b):
    s, e = jax.jit(nm.two_sum)(F32(a), F32(b))
    assert _frac(s) + _frac(e) == _frac(F32(a)) + _frac(F32(b))
    assert s == F32(a) + F32(b)


@hypothesis.given(a=finite32, b=finite32)
def test_fast_two_sum_is_exact_when_ordered(a, b):
    if abs(a) < abs(b):
        a, b = b, a
    s, e = jax.jit(nm.fast_two_sum)(F32(a), F32(b))
    assert _frac(s) + _frac(e) == _frac(F32(a)) + _frac(F32(b))


moderate32 = st.floats(-(2.0**50), 2.0**50, width=32, allow_nan=False, allow_infinity=False).filter(
    lambda v: v == 0 or abs(v) > 2.0**-50
)


@hypothesis.given(a=moderate32, b=moderate32)
def test_two_prod_is_double_word_accurate(a, b):
    p, e = jax.jit(nm.two_prod)(F32(a), F32(b))
    exact = _frac(F32(a)) * _frac(F32(b))
    assert abs(_frac(p) + _frac(e) - exact) <= abs(exact) * Fraction(2) ** -45
    assert abs(_frac(p) - exact) <= _frac(np.spacing(np.abs(F32(float(exact)))))


def test_two_prod_survives_fma_contraction_with_a_constant():
    """Regression: Dekker's TwoProduct lost its error term under jit when one factor was a
    literal constant (XLA/LLVM contracted ``a * b - p`` into an FMA). 16781312 * (1 + 2**-12)
    = 16785409 exactly, which rounds to 16785408 in float32: the error term must be 1."""
    x = jnp.full((3,), 2.0**24 + 2.0**12, jnp.float32)
    for f in (lambda v: nm.two_prod(v, 1.0 + 2.0**-12), lambda v: nm.two_prod(1.0 + 2.0**-12, v)):
        p, e = jax.jit(f)(x)
        np.testing.assert_array_equal(np.asarray(p), 16785408.0)
        np.testing.assert_array_equal(np.asarray(e), 1.0)


def test_two_prod_float64_and_non_finite(x64):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(50) * 1e10, rng.standard_normal(50) * 1e-7
    p, e = jax.jit(nm.two_prod)(a, b)
    assert p.dtype == jnp.float64
    for i in range(50):
        exact = _frac(a[i]) * _frac(b[i])
        assert abs(_frac(p[i]) + _frac(e[i]) - exact) <= abs(exact) * Fraction(2) ** -100
    p, e = nm.two_prod(jnp.array([np.inf, 2.0]), jnp.array([2.0, np.nan]))
    assert float(p[0]) == np.inf and np.isnan(float(e[0])) and np.isnan(float(p[1]))


def test_log1p_float64_is_accurate_and_survives_constant_folding(x64):
    """XLA's float64 log1p on CPU is off by up to ~128 ulp; nm.log1p stays within 2 ulp."""
    x = np.concatenate([np.linspace(-0.6, -0.1, 2001), np.linspace(-1e-6, 1e-6, 201), [3.0, 1e6]])
    got = np.asarray(jax.jit(nm.log1p)(x))
    want = np.array([float(mpmath.log1p(mpmath.mpf(float(v)))) for v in x])
    nz = want != 0
    assert np.max(np.abs(got - want)[nz] / np.spacing(np.abs(want[nz]))) <= 2
    edge = np.asarray(nm.log1p(jnp.array([-1.0, np.inf, -2.0, np.nan])))
    assert edge[0] == -np.inf and edge[1] == np.inf and np.isnan(edge[2]) and np.isnan(edge[3])
    check_grads(jax.jit(nm.log1p), (jnp.array([0.5, -0.3]),), order=1, modes=["fwd", "rev"])


class TestTwoSumVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_vectorized_and_exact(self):
        rng = np.random.default_rng(3)
        a = (rng.standard_normal(1000) * 1e6).astype(F32)
        b = rng.standard_normal(1000).astype(F32)
        s, e = self.variant(nm.two_sum)(a, b)
        exact = a.astype(np.float64) + b.astype(np.float64)  # exact: < 53 bits
        np.testing.assert_array_equal(np.asarray(s, np.float64) + np.asarray(e, np.float64), exact)

    @chex.variants(with_jit=True, without_jit=True)
    def test_compensated_sum_pair_matches_fsum(self):
        x = _adversarial(1500, 1e4, seed=1)
        hi, lo = self.variant(nm.compensated_sum_pair)(x)
        exact = math.fsum(x.astype(np.float64))
        assert _ulps(hi, exact) <= 1
        assert abs(float(hi) + float(lo) - exact) <= 1e-12 * np.abs(x.astype(np.float64)).sum()


# ---------------------------------------------------------------------------------------------
# Pair arithmetic
# ---------------------------------------------------------------------------------------------


def test_pair_add_error_is_second_order():
    rng = np.random.default_rng(0)
    hi = (rng.standard_normal(500) * 1e3).astype(F32)
    lo = (hi * F32(2.0**-25) * rng.uniform(-1, 1, 500)).astype(F32)
    x = (rng.standard_normal(500) * 10).astype(F32)
    s, e = jax.jit(nm.pair_add)(hi, lo, x)
    for i in range(0, 500, 25):
        exact = _frac(hi[i]) + _frac(lo[i]) + _frac(x[i])
        err = abs(_frac(s[i]) + _frac(e[i]) - exact)
        assert err <= abs(exact) * Fraction(2) ** -44
        assert abs(e[i]) <= np.spacing(np.abs(s[i])) / 2


def test_pair_add_pair_is_commutative_bitwise():
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(200) * 1e4).astype(F32), (rng.standard_normal(200) * 1e-4).astype(F32)
    b = (rng.standard_normal(200)).astype(F32), (rng.standard_normal(200) * 1e-8).astype(F32)
    ab = nm.pair_add_pair(*a, *b)
    ba = nm.pair_add_pair(*b, *a)
    np.testing.assert_array_equal(np.asarray(ab[0]), np.asarray(ba[0]))
    np.testing.assert_array_equal(np.asarray(ab[1]), np.asarray(ba[1]))


def test_pair_scale_exact_by_one_and_accurate():
    hi, lo = jnp.float32(1234.5678), jnp.float32(3e-5)
    s, e = jax.jit(nm.pair_scale)(hi, lo, jnp.float32(1.0))
    assert (float(s), float(e)) == (float(hi), float(lo))
    for scale in (jax.jit(nm.pair_scale), jax.jit(lambda h, l, c: nm.pair_scale(h, l, 0.999))):
        s, e = scale(hi, lo, jnp.float32(0.999))
        exact = (_frac(hi) + _frac(lo)) * _frac(F32(0.999))
        assert abs(_frac(s) + _frac(e) - exact) <= abs(exact) * Fraction(2) ** -44


def test_pair_functions_keep_non_finite_in_hi():
    inf, nan = jnp.float32(np.inf), jnp.float32(np.nan)
    one, zero = jnp.float32(1.0), jnp.float32(0.0)
    s, e = nm.pair_add(one, zero, -inf)
    assert float(s) == -np.inf and float(e) == 0.0
    s, e = nm.pair_add(s, e, jnp.float32(5.0))  # -inf stays -inf; lo never NaN
    assert float(s) == -np.inf and float(e) == 0.0
    s, e = nm.pair_add(s, e, inf)
    assert np.isnan(float(s)) and float(e) == 0.0
    s, e = nm.pair_renormalize(inf, nan)
    assert float(s) == np.inf and float(e) == 0.0
    assert float(nm.pair_value(inf, nan)) == np.inf
    s, e = nm.pair_scale(-inf, zero, jnp.float32(0.5))
    assert float(s) == -np.inf and float(e) == 0.0


def test_pair_log_against_mpmath():
    rng = np.random.default_rng(2)
    hi = np.exp(rng.uniform(-30, 60, 300)).astype(F32)
    hi = np.concatenate([hi, np.array([1.0, 2.0, 0.5, 1.5, 3.0], F32)])
    lo = (hi * rng.uniform(-0.5, 0.5, hi.size) * 2.0**-24).astype(F32)
    l_hi, l_lo = jax.jit(nm.pair_log)(hi, lo)
    for i in range(hi.size):
        exact = mpmath.log(mpmath.mpf(float(hi[i])) + mpmath.mpf(float(lo[i])))
        got = mpmath.mpf(float(l_hi[i])) + mpmath.mpf(float(l_lo[i]))
        # absolute error a few eps**2-ish times the magnitude plus ~eps * 0.35 (log1p part)
        assert abs(got - exact) <= 2.0**-24 + abs(exact) * 2.0**-40, (hi[i], lo[i])
        assert _ulps(l_hi[i], float(exact)) <= 1


def test_pair_log_edges():
    out = nm.pair_log(jnp.array([0.0, -1.0, np.inf, 1e-40], F32), jnp.zeros(4, F32))
    got = np.asarray(out[0])
    assert got[0] == -np.inf and np.isnan(got[1]) and got[2] == np.inf
    assert np.all(np.asarray(out[1]) == 0)


# ---------------------------------------------------------------------------------------------
# Compensated sums
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 2048, 2049, 4097, 100_003])
def test_compensated_sum_within_one_ulp_at_condition_1e4(n):
    if n < 10:
        x = np.array([1e4, 1.0, -1e4, 0.5, 3e-4, -7.0, 2.0][:n], F32)
    else:
        x = _adversarial(n, 1e4, seed=n)
        assert _cond(x) > 2e3
    exact = math.fsum(x.astype(np.float64))
    got = jax.jit(nm.compensated_sum)(x)
    assert _ulps(got, exact) <= 1


def test_compensated_sum_survives_jit_and_beats_plain_sum():
    """XLA may not re-associate the TwoSum steps away: on adversarial data the jitted
    compensated sum is correctly rounded while the plain jitted sum is visibly off."""
    x = _adversarial(200_000, 3e5, seed=7)
    exact = math.fsum(x.astype(np.float64))
    plain = jax.jit(jnp.sum)(x)
    comp = jax.jit(nm.compensated_sum)(x)
    assert _ulps(comp, exact) <= 1
    assert _ulps(plain, exact) > 4 * max(_ulps(comp, exact), 1)


def test_compensated_sum_axes_keepdims_where_and_empty():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5)).astype(F32)
    for axis in [None, 1, (0, 2), ()]:
        got = jax.jit(lambda v: nm.compensated_sum(v, axis))(x)
        want = np.sum(x.astype(np.float64), axis=axis)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert nm.compensated_sum(x, 1, keepdims=True).shape == (3, 1, 5)
    w = x > 0
    np.testing.assert_allclose(
        nm.compensated_sum(x, 2, where=w), np.sum(np.where(w, x, 0).astype(np.float64), 2), rtol=1e-6
    )
    empty = nm.compensated_sum_pair(np.zeros((2, 0), F32), 1)
    assert empty[0].shape == (2,) and np.all(np.asarray(empty[0]) == 0)
    assert float(nm.compensated_sum(np.zeros((0,), F32))) == 0.0


def test_compensated_sum_large_lanes_path_batched():
    x = np.stack([_adversarial(10_000, 1e4, seed=s) for s in range(3)])
    got = jax.jit(lambda v: nm.compensated_sum(v, 1))(x)
    for i in range(3):
        assert _ulps(got[i], math.fsum(x[i].astype(np.float64))) <= 1


def test_compensated_sum_non_finite():
    inf = np.inf
    cases = {
        (1.0, inf, 2.0): inf,
        (1.0, -inf, -inf): -inf,
        (inf, -inf): np.nan,
        (1.0, np.nan): np.nan,
    }
    for vals, want in cases.items():
        for n_pad in (0, 3000):  # tree path and lanes path
            x = np.concatenate([np.array(vals, F32), np.ones(n_pad, F32)])
            got = float(jax.jit(nm.compensated_sum)(x))
            np.testing.assert_equal(got, want)


def test_cumulative_sum_pair_matches_fsum_prefixes():
    x = _adversarial(300, 1e4, seed=11)
    both = jax.jit(lambda v: (nm.cumulative_sum_pair(v)[0], nm.cumulative_sum_pair(v, reverse=True)[0]))
    hi, r_hi = both(x)
    x64 = x.astype(np.float64)
    for i in [0, 1, 2, 99, 200, 299]:
        exact = math.fsum(x64[: i + 1])
        assert _ulps(hi[i], exact) <= 1
    assert _ulps(r_hi[0], math.fsum(x64)) <= 1
    assert nm.cumulative_sum_pair(np.zeros((2, 0), F32), axis=1)[0].shape == (2, 0)


def test_max_last_axis_matches_jnp_max():
    rng = np.random.default_rng(12)
    for k in (1, 2, 3, 7, 65):
        x = rng.standard_normal((4, k)).astype(F32)
        x[1, 0] = np.nan
        x[2, :] = -np.inf
        got = np.asarray(nm.max_last_axis(jnp.asarray(x)))
        np.testing.assert_array_equal(got, np.max(x, axis=-1, keepdims=True))
    assert nm.max_last_axis(jnp.zeros((3, 0))).shape == (3, 1)


def test_normalize_axes_errors():
    assert nm.normalize_axes(None, 3) == (0, 1, 2)
    assert nm.normalize_axes((-1, 0), 3) == (0, 2)
    with pytest.raises(ValueError, match="out of bounds"):
        nm.normalize_axes(3, 3)
    with pytest.raises(ValueError, match="repeated axis"):
        nm.normalize_axes((1, -2), 3)


# ---------------------------------------------------------------------------------------------
# Gradient-safe helpers
# ---------------------------------------------------------------------------------------------


def test_safe_log_values_and_gradients():
    x = jnp.array([2.0, 0.0, -1.0, np.nan], F32)
    out = np.asarray(nm.safe_log(x))
    assert out[0] == pytest.approx(math.log(2.0)) and out[1] == -np.inf and np.isnan(out[2])
    assert np.isnan(out[3])
    g = jax.grad(lambda v: jnp.sum(jnp.where(jnp.isfinite(nm.safe_log(v)), nm.safe_log(v), 0.0)))(x[:3])
    assert np.all(np.isfinite(np.asarray(g)))
    assert float(jax.grad(nm.safe_log)(0.0)) == 0.0
    check_grads(jax.jit(nm.safe_log), (jnp.array([0.5, 3.0]),), order=1, modes=["rev"])


def test_safe_sqrt_and_safe_divide():
    assert float(jax.grad(nm.safe_sqrt)(0.0)) == 0.0
    assert float(nm.safe_sqrt(4.0)) == 2.0 and np.isnan(float(nm.safe_sqrt(-1.0)))
    check_grads(jax.jit(nm.safe_sqrt), (jnp.array([0.5, 3.0]),), order=1, modes=["rev"])
    out = nm.safe_divide(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]), fill=-1.0)
    np.testing.assert_array_equal(np.asarray(out), [-1.0, 0.5])
    g = jax.grad(lambda d: jnp.sum(nm.safe_divide(jnp.ones(2), d)))(jnp.array([0.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(g), [0.0, -0.25])


def test_double_where_gradient_is_finite():
    f = lambda v: jnp.sum(nm.double_where(v > 0, v, jnp.log, 1.0, 0.0))
    g = jax.grad(f)(jnp.array([0.0, -2.0, 4.0]))
    np.testing.assert_array_equal(np.asarray(g), [0.0, 0.0, 0.25])
    naive = jax.grad(lambda v: jnp.sum(jnp.where(v > 0, jnp.log(v), 0.0)))(jnp.array([0.0, 4.0]))
    assert np.isnan(np.asarray(naive)[0])  # the pitfall double_where exists for


def test_log1mexp_against_mpmath():
    xs = np.concatenate(
        # results stay normal (XLA flushes subnormals): x >= -80 in float32
        [-np.logspace(-30, 1.9, 200), [-math.log(2.0), -math.log(2.0) * 1.0000001, -1e-37]]
    )
    for dtype, tol in [(F32, 2), (np.float64, 4)]:
        with jax.enable_x64(dtype == np.float64):
            x = np.asarray(xs, dtype)
            got = np.asarray(jax.jit(nm.log1mexp)(x))
            assert got.dtype == dtype
            for xi, gi in zip(x, got):
                exact = mpmath.log(1 - mpmath.exp(mpmath.mpf(float(xi))))
                ulp = float(np.spacing(np.abs(dtype(float(exact)))))
                assert abs(float(gi) - float(exact)) <= tol * ulp, (xi, gi, exact)


def test_log1mexp_edges_and_gradients():
    out = np.asarray(nm.log1mexp(jnp.array([0.0, -np.inf, 1.0, np.nan], F32)))
    assert out[0] == -np.inf and out[1] == 0.0 and np.isnan(out[2]) and np.isnan(out[3])
    g = jax.jit(jax.vmap(jax.grad(nm.log1mexp)))(jnp.array([0.0, -np.inf, -1e-3, -5.0], F32))
    assert np.all(np.isfinite(np.asarray(g)))
    check_grads(jax.jit(nm.log1mexp), (jnp.array([-0.1, -0.9, -3.0]),), order=1, modes=["fwd", "rev"])


def test_logaddexp_values_gradients_and_edges():
    a = jnp.array([0.0, -1000.0, -np.inf, 3.0, -np.inf, np.inf], F32)
    b = jnp.array([0.0, -1000.5, 2.0, -np.inf, -np.inf, 1.0], F32)
    np.testing.assert_allclose(nm.logaddexp(a, b), np.logaddexp(np.asarray(a), np.asarray(b)), rtol=1e-7)
    ga, gb = jax.jit(jax.vmap(jax.grad(nm.logaddexp, argnums=(0, 1))))(a[:5], b[:5])
    assert np.all(np.isfinite(np.asarray(ga))) and np.all(np.isfinite(np.asarray(gb)))
    assert float(ga[4]) == 0.0 and float(gb[4]) == 0.0  # both impossible: no weight, no NaN
    assert float(gb[2]) == 1.0 and float(ga[2]) == 0.0
    assert np.isnan(float(nm.logaddexp(F32(np.nan), F32(0.0))))
    check_grads(
        jax.jit(nm.logaddexp), (jnp.array([0.3, -2.0]), jnp.array([1.0, -2.5])), order=1, modes=["fwd", "rev"]
    )
    with jax.enable_x64(True):  # second order needs float64 finite differences
        args = (jnp.array([0.3, -2.0], jnp.float64), jnp.array([1.0, -2.5], jnp.float64))
        check_grads(jax.jit(nm.logaddexp), args, order=2, modes=["rev"])
