"""float64 (x64, scoped by the ``x64`` fixture): the sort kernel, ranks, percentiles,
quantiles and the robust statistics against numpy/scipy with tight tolerances, float64 dtypes,
and gradients checked against finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss
from jax.test_util import check_grads

import jaxstats
from jaxstats import _sort

pytestmark = pytest.mark.usefixtures("x64")

TOL = 1e-10
RANK_METHODS = ("average", "min", "max", "dense", "ordinal")
KINDS = ("rank", "weak", "strict", "mean")
QUANTILE_METHODS = (
    "inverted_cdf",
    "averaged_inverted_cdf",
    "closest_observation",
    "interpolated_inverted_cdf",
    "hazen",
    "weibull",
    "linear",
    "median_unbiased",
    "normal_unbiased",
    "lower",
    "higher",
    "midpoint",
    "nearest",
)
FORCED = tuple(b for b in _sort.BACKENDS if b != "auto")


def _native_available() -> bool:
    try:
        from jaxstats import _native
    except ImportError:
        return False
    return _native.load() is not None


BACKENDS = [b for b in ("auto",) + FORCED if b != "native" or _native_available()]


def _close(actual, expected, scale=1.0):
    actual = np.asarray(actual)
    assert actual.dtype == np.float64, actual.dtype
    np.testing.assert_allclose(actual, np.asarray(expected, np.float64), rtol=TOL, atol=TOL * scale)


def _special64(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    pool = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 1e300, -1e300, 2.5e-308])
    m = rng.random(shape) < 0.4
    x[m] = rng.choice(pool, size=int(m.sum()))
    return x


# --------------------------------------------------------------------------------------
# sort kernel in 64 bits
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(37,), (5000,), (40, 100), (3, 1000)], ids=str)
def test_sort_float64_int64_uint64_all_paths(shape):
    rng = np.random.default_rng(1)
    data = [
        _special64(shape, 2),
        rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64),
        rng.integers(0, 2**64 - 1, size=shape, dtype=np.uint64, endpoint=True),
    ]
    data[1].reshape(-1)[:3] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 2**53 + 1]
    for x in data:
        perm = np.argsort(x, axis=-1, kind="stable")
        ref = np.take_along_axis(x, perm, axis=-1)
        for b in BACKENDS:
            s = jaxstats.sort(x, backend=b)
            assert s.dtype == x.dtype, (b, s.dtype)
            np.testing.assert_array_equal(
                np.asarray(s).view(f"u{x.dtype.itemsize}"), ref.view(f"u{x.dtype.itemsize}"), err_msg=f"{b} {x.dtype}"
            )
            np.testing.assert_array_equal(np.asarray(jaxstats.argsort(x, backend=b)), perm, err_msg=f"{b} {x.dtype}")


_FTZ = pytest.mark.xfail(
    reason="open: XLA:CPU's sort and the host callback (run on an XLA thread) compare with "
    "denormals-are-zero, so subnormals tie with 0; the native kernel orders them exactly",
    strict=True,
)


@pytest.mark.parametrize("backend", [pytest.param(b, marks=_FTZ) if b in ("host", "xla") else b for b in BACKENDS])
def test_sort_float64_subnormals_in_numpy_order(backend):
    tiny = np.array([5e-324, 0.0, -5e-324, 1e-310, -0.0, -1e-310, 2.2250738585072014e-308])
    x = np.tile(tiny, 500)  # 3500 elements
    perm = np.argsort(x, kind="stable")
    np.testing.assert_array_equal(np.asarray(jaxstats.sort(x, backend=backend)).view(np.uint64), x[perm].view(np.uint64))
    np.testing.assert_array_equal(np.asarray(jaxstats.argsort(x, backend=backend)), perm)


def test_sort_float64_check_grads():
    rng = np.random.default_rng(3)
    for n in (9, 3000):
        x = rng.permutation(n) * 0.5 + rng.uniform(0, 0.1, n)
        w = rng.normal(size=n)
        f = jax.jit(lambda v, w=w: jnp.sum(w * jaxstats.sort(v) ** 2))
        check_grads(f, (x,), order=1, modes=("fwd", "rev"), eps=1e-6, rtol=1e-6, atol=1e-6)
        g = np.asarray(jax.jit(jax.grad(lambda v, w=w: jnp.sum(w * jaxstats.sort(v))))(x))
        expected = np.zeros(n)
        expected[np.argsort(x)] = w
        np.testing.assert_array_equal(g, expected)


# --------------------------------------------------------------------------------------
# ranks and percentiles
# --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("axis", "nan_policy"))
def _all_rank_methods(x, axis=-1, nan_policy="propagate"):
    return {m: jaxstats.rankdata(x, m, axis=axis, nan_policy=nan_policy) for m in RANK_METHODS}


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_rankdata_float64(nan_policy):
    rng = np.random.default_rng(4)
    cases = [
        (np.round(rng.normal(size=(3, 3000)), 2), -1),  # kernel path, ties
        (_special64((6, 40), 5), 0),
        (np.round(rng.normal(size=(40, 100)), 1), 1),
        (np.array([1.0, 1.0 + 2**-52, 1.0]), 0),  # distinct only in float64
    ]
    for x, axis in cases:
        got = _all_rank_methods(x, axis=axis, nan_policy=nan_policy)
        for m in RANK_METHODS:
            assert got[m].dtype == jnp.float64
            np.testing.assert_array_equal(
                np.asarray(got[m]), ss.rankdata(x, m, axis=axis, nan_policy=nan_policy), err_msg=f"{m} {x.shape}"
            )


def test_rankdata_int_input_gives_float64_and_is_exact():
    x = np.array([[3, 1, 2, 2], [0, 0, -5, 9]], np.int32)
    got = _all_rank_methods(x)["average"]
    assert got.dtype == jnp.float64  # the default float dtype under x64
    np.testing.assert_array_equal(np.asarray(got), ss.rankdata(x, axis=-1))
    big = np.array([2**53 + 1, 2**53, 2**53 + 3, 2**53 + 2, -(2**62)], np.int64)  # collide in float64
    got = _all_rank_methods(big)
    for m in RANK_METHODS:
        np.testing.assert_array_equal(np.asarray(got[m]), ss.rankdata(big, m), err_msg=m)


@jax.jit
def _all_percentile_kinds(a, score):
    return {(k, p): jaxstats.percentileofscore(a, score, k, p) for k in KINDS for p in ("propagate", "omit")}


def test_percentileofscore_float64():
    rng = np.random.default_rng(6)
    a = np.round(rng.normal(size=3000), 1)
    a[:5] = [np.inf, -np.inf, np.nan, 0.0, -0.0]
    scores = np.concatenate([a[:50], [np.nan, np.inf, -np.inf, 1e300, 0.05, -0.0]])
    got = _all_percentile_kinds(a, scores)
    for (k, p), g in got.items():
        _close(g, ss.percentileofscore(a, scores, k, p), scale=100)
    x = np.asarray(np.round(rng.normal(size=(500, 2)), 1))
    pop = jax.jit(functools.partial(jaxstats.percentile_of_population, kind="mean"))(x)
    _close(pop, np.stack([ss.percentileofscore(x[:, j], x[:, j], "mean") for j in range(2)], 1), scale=100)


# --------------------------------------------------------------------------------------
# quantile / median
# --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("axis", "keepdims"))
def _all_quantile_methods(x, q, axis=None, keepdims=False):
    return {m: jaxstats.quantile(x, q, axis=axis, method=m, keepdims=keepdims) for m in QUANTILE_METHODS}


# Arbitrary q (including exact decision boundaries k/n for the discrete methods): float64
# arithmetic here is numpy's, so the same order statistics must be chosen.
Q64 = np.unique(np.concatenate([np.linspace(0, 1, 21), [1 / 3, 2 / 3, 0.01, 0.99, 1 / 7, 0.123456789]]))


@pytest.mark.parametrize("axis,keepdims", [(None, False), (-1, False), ((0, 2), True), (1, False)], ids=str)
def test_quantile_float64_all_methods(axis, keepdims):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 5, 10)) * 1e3 + 1e4  # shifted: cancellation in the interpolation
    x[0, :2, :6] = 1e4  # ties
    # q is a compile-time constant here; a traced q is tested separately below.
    f = jax.jit(lambda v: _all_quantile_methods.__wrapped__(v, Q64, axis=axis, keepdims=keepdims))
    got = f(x)
    for m in QUANTILE_METHODS:
        expected = np.quantile(x, Q64, axis=axis, method=m, keepdims=keepdims)
        assert got[m].shape == expected.shape
        try:
            _close(got[m], expected, scale=1e4)
        except AssertionError as e:
            raise AssertionError(f"method={m}") from e


@pytest.mark.xfail(
    reason="open: with q traced under jit, XLA:CPU contracts n*q - 1 into an FMA, so at exact "
    "boundaries q = k/n (10 * 0.1 - 1 = 5.6e-17, not 0) the discrete methods take the next "
    "order statistic; eager and constant-q results match numpy",
    strict=True,
)
def test_quantile_float64_discrete_methods_with_traced_q():
    x = np.arange(10.0) * 3 + 1
    q = np.array([0.1, 0.3, 0.7, 0.5])
    got = _all_quantile_methods(x, q)  # q is an argument of the compiled program
    for m in ("inverted_cdf", "averaged_inverted_cdf", "closest_observation"):
        _close(got[m], np.quantile(x, q, method=m), scale=30)


def test_median_float64_and_nan():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(7, 6))
    med = jax.jit(jaxstats.median, static_argnames=("axis", "keepdims"))
    _close(med(x, axis=0), np.median(x, axis=0))
    _close(med(x, axis=(0, 1), keepdims=True), np.median(x, axis=(0, 1), keepdims=True))
    x[2, 3] = np.nan
    got = np.asarray(med(x, axis=0))
    assert np.isnan(got[3]) and not np.isnan(np.delete(got, 3)).any()


def test_quantile_float64_check_grads_all_methods():
    rng = np.random.default_rng(9)
    x = rng.permutation(11) + rng.uniform(0.1, 0.4, 11)  # distinct, away from ties
    q = np.array([0.0, 0.2, 0.37, 0.5, 0.81, 1.0])
    for methods in (QUANTILE_METHODS[:7], QUANTILE_METHODS[7:]):
        f = jax.jit(lambda v, ms=methods: jnp.stack([jaxstats.quantile(v, q, method=m) for m in ms]))
        check_grads(f, (x,), order=1, modes=("fwd", "rev"), eps=1e-6, rtol=1e-6, atol=1e-6)


def test_median_float64_check_grads_batched():
    rng = np.random.default_rng(10)
    x = rng.permutation(40).reshape(8, 5) + rng.uniform(0.1, 0.4, (8, 5))
    check_grads(jax.jit(lambda v: jaxstats.median(v, axis=0)), (x,), order=1, modes=("fwd", "rev"), eps=1e-6)
    check_grads(jax.jit(lambda v: jaxstats.median(v, axis=1)), (x,), order=1, modes=("fwd", "rev"), eps=1e-6)


# --------------------------------------------------------------------------------------
# robust statistics in float64
# --------------------------------------------------------------------------------------


@jax.jit
def _robust_grid(x):
    return (
        [jaxstats.iqr(x, axis=0, interpolation=m) for m in ("linear", "hazen", "nearest", "midpoint")],
        jaxstats.iqr(x, scale="normal"),
        jaxstats.median_abs_deviation(x),
        jaxstats.median_abs_deviation(x, axis=1, scale="normal"),
        jaxstats.median_abs_deviation(x, center=jnp.mean),
    )


def test_iqr_and_mad_float64():
    rng = np.random.default_rng(11)
    x = rng.standard_t(3, size=(30, 4)) + 1e4
    x[:9, 2] = 1e4  # MAD = 0 column
    iqrs, iqr_n, mad, mad_n, mad_mean = _robust_grid(x)
    for interp, got in zip(("linear", "hazen", "nearest", "midpoint"), iqrs):
        _close(got, ss.iqr(x, axis=0, interpolation=interp), scale=1e4)
    _close(iqr_n, ss.iqr(x, scale="normal"), scale=1e4)
    _close(mad, ss.median_abs_deviation(x), scale=1e4)
    _close(mad_n, ss.median_abs_deviation(x, axis=1, scale="normal"), scale=1e4)
    _close(mad_mean, ss.median_abs_deviation(x, center=np.mean), scale=1e4)


def test_robust_zscore_float64():
    x = np.array([[1.0, 2.0, 3.0, 4.0, 100.0], [5.0, 5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 1.0, 4.0, 9.0]]).T
    z = jax.jit(functools.partial(jaxstats.robust_zscore, axis=0))(x)
    assert z.dtype == jnp.float64
    c_mad = 1.0 / ss.norm.ppf(0.75)
    c_mean = np.sqrt(np.pi / 2)
    expected = np.stack(
        [
            (x[:, 0] - 3.0) / (c_mad * 1.0),
            np.zeros(5),
            (x[:, 2] - 1.0) / (c_mean * np.mean(np.abs(x[:, 2] - 1.0))),  # MAD = 0 fallback
        ],
        1,
    )
    _close(z, expected, scale=100)
    g = jax.jit(jax.grad(lambda v: jnp.sum(jnp.cos(jaxstats.robust_zscore(v, axis=0)))))(x)
    assert np.isfinite(np.asarray(g)).all()
    xd = np.array([0.3, -1.2, 2.5, 4.1, -0.7, 1.9, 3.3])
    check_grads(jax.jit(lambda v: jaxstats.robust_zscore(v, axis=0)), (xd,), order=1, modes=("fwd", "rev"), eps=1e-6)
