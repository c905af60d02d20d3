"""iqr, median_abs_deviation and robust_zscore (float32) against scipy.stats and a numpy
reference of the documented definition; properties, NaN isolation, gradients, jit and vmap."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxstats

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
RNGS = ((25, 75), (10, 90), (0, 100), (5, 5), (0, 50))
RTOL32 = 2e-4

# Independent values of the documented constants (not imported from the library).
MAD_TO_SIGMA = 1.0 / ss.norm.ppf(0.75)  # 1.4826
MEANAD_TO_SIGMA = np.sqrt(np.pi / 2.0)  # 1.2533


# One compiled program per shape and option set (eager op-by-op dispatch compiles every
# primitive separately: far slower for a test suite). Eager runs live in TestRobustVariants.
_iqr = jax.jit(jaxstats.iqr, static_argnames=("axis", "rng", "scale", "nan_policy", "interpolation", "keepdims"))
_mad = jax.jit(jaxstats.median_abs_deviation, static_argnames=("axis", "center", "scale", "nan_policy"))


def _close(actual, expected, scale=1.0, rtol=RTOL32, err_msg=""):
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        np.asarray(expected, np.float64),
        rtol=rtol,
        atol=rtol * scale,
        err_msg=err_msg,
    )


def _data(seed, shape=(30, 4)):
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(3, size=shape) * 5).astype(np.float32)
    x[:8, 1] = 1.5  # ties
    x[:, 2] = np.round(x[:, 2])  # many ties
    return x


def _with_nan(x):
    x = x.copy()
    x[4, 1] = np.nan
    x[11, 1] = np.nan
    return x


# --------------------------------------------------------------------------------------
# iqr
# --------------------------------------------------------------------------------------


IQR_GRID = (
    [((25, 75), m, 1.0) for m in ("linear", "lower", "higher", "midpoint", "nearest", "hazen", "inverted_cdf")]
    + [(r, "linear", 1.0) for r in RNGS[1:]]
    + [((25, 75), "linear", 2.5), ((10, 90), "weibull", "normal")]
)


@functools.partial(jax.jit, static_argnames=("axis",))
def _iqr_grid(x, axis):
    """Every (rng, interpolation, scale) of IQR_GRID and both NaN policies, in one program."""
    return [
        jaxstats.iqr(x, axis, r, sc, pol, m) for pol in ("propagate", "omit") for r, m, sc in IQR_GRID
    ]


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)], ids=str)
def test_iqr_matches_scipy(axis):
    for x in (_data(1), _with_nan(_data(2))):
        got = _iqr_grid(x, axis=axis)
        labels = [(pol, *cfg) for pol in ("propagate", "omit") for cfg in IQR_GRID]
        for (pol, r, m, scale), g in zip(labels, got):
            expected = ss.iqr(x.astype(np.float64), axis, r, scale, pol, m)
            assert g.shape == np.shape(expected) and g.dtype == jnp.float32
            try:
                _close(g, expected, scale=30)
            except AssertionError as e:
                raise AssertionError(f"nan_policy={pol} rng={r} interpolation={m} scale={scale}") from e


def test_iqr_keepdims_and_int_input():
    x = _data(3)
    for axis in (0, 1, None):
        got = _iqr(x, axis=axis, keepdims=True)
        expected = ss.iqr(x.astype(np.float64), axis=axis, keepdims=True)
        assert got.shape == expected.shape
        _close(got, expected, scale=30)
    xi = np.round(x).astype(np.int32)
    got = _iqr(xi, axis=0, rng=(10, 90), interpolation="midpoint")
    assert got.dtype == jnp.float32
    _close(got, ss.iqr(xi, axis=0, rng=(10, 90), interpolation="midpoint"), scale=30)


def test_iqr_edges():
    _close(_iqr(np.array([3.0], np.float32)), 0.0)
    _close(_iqr(np.array([1.0, 2.0], np.float32)), ss.iqr([1.0, 2.0]))
    _close(_iqr(np.full(2, 4.0, np.float32), scale="normal"), 0.0)
    x = np.array([-np.inf, 1.0, 2.0, 3.0, 4.0, np.inf], np.float32)
    _close(_iqr(x), ss.iqr(x.astype(np.float64)))  # finite quartiles
    assert np.isnan(np.asarray(_iqr(np.full(6, np.nan, np.float32), nan_policy="omit")))


def test_iqr_nan_policy_raise_and_errors():
    x = _with_nan(_data(4))
    with pytest.raises(ValueError, match=r"iqr: 'x' contains NaN and nan_policy='raise'"):
        jaxstats.iqr(x, nan_policy="raise")
    with pytest.raises(Exception, match=r"nan_policy='raise'"):
        jax.block_until_ready(jax.jit(lambda v: jaxstats.iqr(v, nan_policy="raise"))(x))
    with pytest.raises(ValueError, match=r"iqr: 'rng' must be two percentiles 0 <= lo <= hi <= 100; got \(75, 25\)"):
        jaxstats.iqr(x, rng=(75, 25))
    with pytest.raises(ValueError, match=r"iqr: 'rng' must be two percentiles"):
        jaxstats.iqr(x, rng=(0, 101))
    with pytest.raises(ValueError, match=r"iqr: 'scale' must be one of 'normal'; got 'raw'"):
        jaxstats.iqr(x, scale="raw")
    with pytest.raises(ValueError, match=r"iqr: 'interpolation' must be one of .*; got 'cubic'"):
        jaxstats.iqr(x, interpolation="cubic")
    with pytest.raises(ValueError, match=r"iqr: 'nan_policy' must be one of"):
        jaxstats.iqr(x, nan_policy="drop")
    with pytest.raises(ValueError, match=r"iqr: 'axis'=2 is out of bounds"):
        jaxstats.iqr(x, axis=2)
    with pytest.raises(ValueError, match=r"iqr: cannot reduce over an empty axis"):
        jaxstats.iqr(np.zeros((0, 3), np.float32), axis=0)
    with pytest.raises(TypeError, match=r"iqr: 'x' must have a real"):
        jaxstats.iqr(jnp.ones(3, jnp.complex64))


# --------------------------------------------------------------------------------------
# median_abs_deviation
# --------------------------------------------------------------------------------------


MAD_GRID = [("median", 1.0), ("median", 2.5), ("median", "normal"), ("mean", 1.0)]


@functools.partial(jax.jit, static_argnames=("axis",))
def _mad_grid(x, axis):
    centers = {"median": None, "mean": jnp.mean}
    return [
        jaxstats.median_abs_deviation(x, axis, centers[c], sc, pol)
        for pol in ("propagate", "omit")
        for c, sc in MAD_GRID
    ]


@pytest.mark.parametrize("axis", [0, 1, None, (0, 1)], ids=str)
def test_median_abs_deviation_matches_scipy(axis):
    x = _with_nan(_data(5))
    x[:, 3] = 7.0  # a constant column: MAD = 0
    got = _mad_grid(x, axis=axis)
    centers = {"median": None, "mean": np.mean}
    labels = [(pol, *cfg) for pol in ("propagate", "omit") for cfg in MAD_GRID]
    for (pol, center, scale), g in zip(labels, got):
        kwargs = {} if centers[center] is None else {"center": centers[center]}
        expected = ss.median_abs_deviation(x.astype(np.float64), axis, scale=scale, nan_policy=pol, **kwargs)
        assert g.shape == np.shape(expected) and g.dtype == jnp.float32
        try:
            _close(g, expected, scale=30)
        except AssertionError as e:
            raise AssertionError(f"nan_policy={pol} center={center} scale={scale}") from e


def test_median_abs_deviation_without_nan_and_edges():
    x = _data(6)
    for axis in (0, 1):
        _close(_mad(x, axis=axis), ss.median_abs_deviation(x.astype(np.float64), axis=axis), scale=30)
    _close(_mad(np.array([2.0], np.float32)), 0.0)
    xi = np.array([[1, 5], [2, 5], [9, 6]], np.int32)
    got = _mad(xi)
    assert got.dtype == jnp.float32
    _close(got, ss.median_abs_deviation(xi))


@pytest.mark.parametrize(
    "x", [[1.0, 2.0, 3.0, 4.0, np.inf], [-np.inf, 1.0, 2.0, 3.0, np.inf], [1.0, 2.0, 2.0, np.inf]], ids=str
)
def test_median_abs_deviation_with_infinities_matches_scipy(x):
    # the middle deviation is finite: so is the MAD (scipy), never NaN
    _close(_mad(np.array(x, np.float32)), ss.median_abs_deviation(x))


def test_median_abs_deviation_errors():
    x = _data(7)
    with pytest.raises(TypeError, match=r"median_abs_deviation: 'center' must be None or a callable; got 3|parameter 'center'"):
        jaxstats.median_abs_deviation(x, center=3)
    with pytest.raises(ValueError, match=r"median_abs_deviation: 'scale' must be one of 'normal'; got 'iqr'"):
        jaxstats.median_abs_deviation(x, scale="iqr")
    with pytest.raises(ValueError, match=r"median_abs_deviation: 'nan_policy' must be one of"):
        jaxstats.median_abs_deviation(x, nan_policy="zero")
    with pytest.raises(ValueError, match=r"median_abs_deviation: cannot reduce over an empty axis"):
        jaxstats.median_abs_deviation(np.zeros((0, 2), np.float32))
    with pytest.raises(ValueError, match=r"median_abs_deviation: 'x' contains NaN and nan_policy='raise'"):
        jaxstats.median_abs_deviation(_with_nan(x), nan_policy="raise")


# --------------------------------------------------------------------------------------
# robust_zscore
# --------------------------------------------------------------------------------------


def _robust_z_reference(x, axis, nan_policy="propagate"):
    """The documented definition, in float64 numpy, one slice at a time."""
    xm = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.full(xm.shape, np.nan)
    for idx in np.ndindex(xm.shape[:-1]):
        row = xm[idx]
        nan = np.isnan(row)
        if nan.all() or (nan.any() and nan_policy == "propagate"):
            continue
        v = row[~nan]
        med = np.median(v)
        dev = np.abs(v - med)
        mad = np.median(dev)
        denom = MAD_TO_SIGMA * mad if mad > 0 else MEANAD_TO_SIGMA * dev.mean()
        z = (v - med) / denom if denom > 0 else np.zeros_like(v)
        res = np.full(row.shape, np.nan)
        res[~nan] = z
        out[idx] = res
    return np.moveaxis(out, -1, axis)


_zscore_jit = jax.jit(jaxstats.robust_zscore, static_argnames=("axis", "nan_policy"))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_robust_zscore_matches_reference(nan_policy):
    x = _with_nan(_data(8))
    x[:, 3] = 7.0  # all equal: z = 0
    x[20, 0] = np.inf  # an infinite agent with a finite baseline
    mad0 = np.array([1.0, 1.0, 1.0, 1.0, 5.0, 9.0, 1.0], np.float32)  # MAD = 0, not all equal
    for data, axis in [(x, 0), (x.T.copy(), 1), (mad0, 0), (np.array([4.0], np.float32), 0)]:
        got = _zscore_jit(data, axis=axis, nan_policy=nan_policy)
        assert got.shape == data.shape and got.dtype == jnp.float32
        expected = _robust_z_reference(data, axis, nan_policy)
        np.testing.assert_array_equal(np.isnan(np.asarray(got)), np.isnan(expected))
        _close(got, expected, scale=1.0)


def test_robust_zscore_documented_special_cases():
    z = np.asarray(_zscore_jit(np.array([1.0, 1.0, 1.0, 1.0, 5.0, 9.0], np.float32), axis=0))
    # MAD = 0 -> scale = 1.2533 * mean|x - med| = 1.2533 * 2
    _close(z, np.array([0, 0, 0, 0, 4, 8]) / (MEANAD_TO_SIGMA * 2.0))
    np.testing.assert_array_equal(np.asarray(_zscore_jit(np.full((6, 2), 3.0, np.float32), axis=0)), 0.0)
    x5 = np.array([1.0, 2.0, 3.0, 4.0, 100.0], np.float32)
    _close(_zscore_jit(x5, axis=0), (x5.astype(np.float64) - 3.0) / MAD_TO_SIGMA)
    e = _zscore_jit(np.zeros((0, 3), np.float32), axis=0)
    assert e.shape == (0, 3)


def test_robust_zscore_infinite_agents_get_infinite_scores():
    # Documented: "+-inf entries get +-inf scores while the baseline stays finite".
    x = np.array([-np.inf, 1.0, 2.0, 3.0, np.inf], np.float32)
    _close(_zscore_jit(x, axis=0), [-np.inf, -1 / MAD_TO_SIGMA, 0.0, 1 / MAD_TO_SIGMA, np.inf])


@st.composite
def affine_case(draw):
    n = draw(st.sampled_from([3, 8, 17]))
    vals = draw(st.lists(st.integers(-20, 20), min_size=n, max_size=n))
    a = draw(st.sampled_from([-4.0, -1.5, -0.5, 0.25, 2.0, 8.0]))
    b = draw(st.sampled_from([-1000.0, 0.0, 3.5, 1e4]))
    return np.asarray(vals, np.float32), np.float32(a), np.float32(b)


@jax.jit
def _location_scale(x):
    return jaxstats.median(x), jaxstats.median_abs_deviation(x), jaxstats.iqr(x)


@given(affine_case())
def test_robust_zscore_affine_equivariance(case):
    x, a, b = case
    z = np.asarray(_zscore_jit(x, axis=0))
    za = np.asarray(_zscore_jit(a * x + b, axis=0))  # exact in float32 for these values
    np.testing.assert_allclose(za, np.sign(a) * z, rtol=1e-5, atol=1e-5)
    # location and scale estimators are equivariant too
    (med, mad, iqr), (med_a, mad_a, iqr_a) = _location_scale(x), _location_scale(a * x + b)
    _close(med_a, a * np.asarray(med) + b, scale=1e4, rtol=1e-6)
    _close(mad_a, abs(a) * np.asarray(mad), scale=100, rtol=1e-6)
    _close(iqr_a, abs(a) * np.asarray(iqr), scale=100, rtol=1e-6)


def test_robust_zscore_gradients_are_finite():
    cases = [
        np.full(6, 2.0, np.float32),  # all equal: scale 0
        np.array([1.0, 1.0, 1.0, 1.0, 5.0, 9.0], np.float32),  # MAD = 0, fallback scale
        np.array([1.0, 2.0, 2.0, 3.0, 3.0, 10.0], np.float32),  # ties, MAD > 0
        np.array([0.0, 0.0, 1.0, 1.0], np.float32),  # even n, tied middle
    ]
    w = np.linspace(-1.0, 1.0, 6).astype(np.float32)
    for x in cases:
        f = jax.jit(jax.grad(lambda v: jnp.sum(w[: v.size] * jaxstats.robust_zscore(v, axis=0))))
        g = np.asarray(f(x))
        assert np.isfinite(g).all(), (x, g)
    scale_grads = jax.jit(jax.grad(lambda v: jaxstats.median_abs_deviation(v) + jaxstats.iqr(v)))
    for x in cases[:3]:
        assert np.isfinite(np.asarray(scale_grads(x))).all(), x


def test_robust_zscore_gradient_matches_finite_differences():
    x = np.array([0.3, -1.2, 2.5, 4.1, -0.7, 1.9, 3.3], np.float32)  # distinct, MAD > 0
    w = np.linspace(-1.0, 1.0, 7).astype(np.float32)
    check_grads(
        jax.jit(lambda v: jnp.sum(w * jaxstats.robust_zscore(v, axis=0))),
        (x,),
        order=1,
        modes=("fwd", "rev"),
        eps=1e-3,
        atol=1e-2,
        rtol=1e-2,
    )


def test_nan_policy_isolation_across_the_batch_axis():
    x = _data(9)
    xn = _with_nan(x)  # NaNs in column 1 only
    for pol in ("propagate", "omit"):
        z, zn = np.asarray(_zscore_jit(x, axis=0, nan_policy=pol)), np.asarray(_zscore_jit(xn, axis=0, nan_policy=pol))
        np.testing.assert_array_equal(zn[:, [0, 2, 3]], z[:, [0, 2, 3]])
        i, m = np.asarray(_iqr(x, axis=0, nan_policy=pol)), np.asarray(_iqr(xn, axis=0, nan_policy=pol))
        np.testing.assert_array_equal(m[[0, 2, 3]], i[[0, 2, 3]])
        d = np.asarray(_mad(x, nan_policy=pol))
        dn = np.asarray(_mad(xn, nan_policy=pol))
        np.testing.assert_array_equal(dn[[0, 2, 3]], d[[0, 2, 3]])
    assert np.isnan(np.asarray(_zscore_jit(xn, axis=0, nan_policy="propagate"))[:, 1]).all()
    zo = np.asarray(_zscore_jit(xn, axis=0, nan_policy="omit"))[:, 1]
    assert np.isnan(zo).sum() == 2 and np.isnan(zo[[4, 11]]).all()


def test_robust_zscore_nan_policy_raise_and_errors():
    x = _with_nan(_data(10))
    with pytest.raises(ValueError, match=r"robust_zscore: 'a' contains NaN and nan_policy='raise'"):
        jaxstats.robust_zscore(x, axis=0, nan_policy="raise")
    with pytest.raises(Exception, match=r"nan_policy='raise'"):
        jax.block_until_ready(_zscore_jit(x, axis=0, nan_policy="raise"))
    with pytest.raises(TypeError):
        jaxstats.robust_zscore(x)  # the population axis is required
    with pytest.raises(ValueError, match=r"robust_zscore: 'axis'=2 is out of bounds for an array of rank 2"):
        jaxstats.robust_zscore(x, axis=2)
    with pytest.raises(ValueError, match=r"robust_zscore: 'nan_policy' must be one of"):
        jaxstats.robust_zscore(x, axis=0, nan_policy="omit_all")
    with pytest.raises(ValueError, match=r"robust_zscore: 'a' must have at least one axis"):
        jaxstats.robust_zscore(jnp.float32(1.0), axis=0)
    with pytest.raises(TypeError, match=r"robust_zscore: 'a' must have a real"):
        jaxstats.robust_zscore(jnp.ones(3, jnp.complex64), axis=0)


# --------------------------------------------------------------------------------------
# jit / vmap
# --------------------------------------------------------------------------------------


class TestRobustVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_robust_statistics(self):
        x = _with_nan(_data(11))
        z = self.variant(functools.partial(jaxstats.robust_zscore, axis=0, nan_policy="omit"))(x)
        _close(z, _robust_z_reference(x, 0, "omit"))
        i = self.variant(functools.partial(jaxstats.iqr, axis=0, nan_policy="omit"))(x)
        _close(i, ss.iqr(x.astype(np.float64), axis=0, nan_policy="omit"), scale=30)
        d = self.variant(functools.partial(jaxstats.median_abs_deviation, scale="normal"))(x)
        _close(d, ss.median_abs_deviation(x.astype(np.float64), scale="normal"), scale=30)


def test_vmap_equals_loop():
    x = np.stack([_data(s) for s in range(12, 16)])  # [batch, agents, features]
    z = jax.jit(jax.vmap(functools.partial(jaxstats.robust_zscore, axis=0)))(x)
    i = jax.jit(jax.vmap(functools.partial(jaxstats.iqr, axis=0, scale="normal")))(x)
    d = jax.jit(jax.vmap(jaxstats.median_abs_deviation))(x)  # [batch, features]
    # batch axis last: each call sees a [batch, agents] slice of one feature
    d2 = jax.jit(jax.vmap(functools.partial(jaxstats.median_abs_deviation, axis=1), in_axes=2, out_axes=1))(x)
    for b in range(3):
        _close(z[b], _robust_z_reference(x[b], 0))
        _close(i[b], ss.iqr(x[b].astype(np.float64), axis=0, scale="normal"), scale=30)
        _close(d[b], ss.median_abs_deviation(x[b].astype(np.float64), axis=0), scale=30)
    for j in range(3):
        _close(d2[:, j], ss.median_abs_deviation(x[:, :, j].astype(np.float64), axis=1), scale=30)


def test_large_population_uses_the_kernel_and_matches():
    x = np.round(np.random.default_rng(16).normal(size=(3000, 2)) * 3, 1).astype(np.float32)
    _close(_zscore_jit(x, axis=0), _robust_z_reference(x, 0), scale=10)
    _close(_mad(x), ss.median_abs_deviation(x.astype(np.float64)), scale=10)
    _close(_iqr(x, axis=0), ss.iqr(x.astype(np.float64), axis=0), scale=10)


def test_no_retracing():
    def f(v):
        return jaxstats.robust_zscore(v, axis=0), jaxstats.iqr(v, axis=0), jaxstats.median_abs_deviation(v)

    g = jax.jit(chex.assert_max_traces(f, n=1))
    g(_data(17))
    g(_data(18))
    chex.clear_trace_counter()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nan_policy", ["omit", "propagate"])
def test_mad_from_sorted_equals_sorting_the_deviations(x64, dtype, nan_policy):
    # The MAD is selected from the two sorted runs of deviations (no second sort): it must
    # equal, bit for bit, the median of the sorted deviations on ties, NaN, ±inf and ±0.
    from jaxstats.robust import _mad_sorted, _median_sorted

    def both(x):
        s = jaxstats.sort(x, axis=-1)
        med = _median_sorted(s, nan_policy)
        ref = _median_sorted(jaxstats.sort(jnp.abs(x - med[..., None]), axis=-1), nan_policy)
        return ref, _mad_sorted(s, med, nan_policy)

    f = jax.jit(both)
    rng = np.random.default_rng(7)
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0])
    for n in (1, 2, 3, 4, 5, 8, 17, 40):
        for kind in range(4):
            x = rng.normal(size=(200, n))
            if kind == 1:
                x = np.round(x * 2) / 2  # heavy ties, MAD often 0
            elif kind == 2:
                x = np.where(rng.random(x.shape) < 0.3, np.inf, x)
                x = np.where(rng.random(x.shape) < 0.2, -np.inf, x)
            elif kind == 3:
                x = np.where(rng.random(x.shape) < 0.4, rng.choice(specials, size=x.shape), x)
            ref, got = map(np.asarray, f(jnp.asarray(x.astype(dtype))))
            np.testing.assert_array_equal(got, ref, err_msg=f"n={n} kind={kind}")
            fin = ~np.isnan(ref)
            np.testing.assert_array_equal(np.signbit(got[fin]), np.signbit(ref[fin]))
