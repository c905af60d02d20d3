"""The sort / argsort kernel (``jaxstats._sort``): numpy order, every path identical, and safe
under jit, vmap, grad, shard_map and concurrent multi-device dispatch."""

import functools
import os
import subprocess
import sys
import textwrap
import time

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxstats
from jaxstats import _sort

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

FORCED = tuple(b for b in _sort.BACKENDS if b != "auto")
ALL_BACKENDS = ("auto",) + FORCED


def _native_available() -> bool:
    try:
        from jaxstats import _native
    except ImportError:
        return False
    return _native.load() is not None


def _skip_unavailable(backend):
    if backend == "native" and not _native_available():
        pytest.skip("native kernels not built on this machine")


def _bits(a) -> np.ndarray:
    """Bit patterns of a float array (so -0.0 != +0.0 and NaN payloads are compared)."""
    a = np.asarray(a)
    if a.dtype.kind == "f" or a.dtype in (ml_dtypes.bfloat16,):
        return a.view(f"u{a.dtype.itemsize}")
    return a


def _assert_bit_equal(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_array_equal(_bits(actual), _bits(expected))


NEG_NAN = np.float32(-np.nan)  # a NaN with the sign bit set: a different payload


def _data(kind: str, shape, dtype=np.float32, seed=0) -> np.ndarray:
    """Test data with controlled ties and special values."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=shape).astype(dtype)
    if kind == "ties":  # a handful of distinct values: every value is tied
        return rng.integers(-3, 4, size=shape).astype(dtype)
    if kind == "special":  # NaN (two payloads), +-inf, -0.0/+0.0 and a few ties
        pool = np.array(
            [np.nan, NEG_NAN, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 2.5, 1e30, -1e30],
            np.float32,
        ).astype(dtype)
        x = rng.normal(size=shape).astype(dtype)
        mask = rng.random(size=shape) < 0.5
        x[mask] = rng.choice(pool, size=int(mask.sum()))
        return x
    raise ValueError(kind)


@functools.partial(jax.jit, static_argnames=("axis", "backend", "stable"))
def _sort_pair(x, axis=-1, backend="auto", stable=True):
    """(sort, argsort) in one compiled program: one compilation per shape and option set
    (eager dispatch compiles every primitive separately; eager runs are in TestVariants)."""
    return (
        jaxstats.sort(x, axis=axis, backend=backend),
        jaxstats.argsort(x, axis=axis, backend=backend, stable=stable),
    )


def _np_argsort(x, axis=-1):
    x = np.asarray(x)
    if x.dtype.kind not in "iubf":  # ml_dtypes (bfloat16): numpy's sort misplaces NaN
        x = x.astype(np.float32)  # exact: every bfloat16 is a float32
    return np.argsort(x, axis=axis, kind="stable").astype(np.int32)


def _np_sort(x, axis=-1):
    """numpy's order (NaNs last), stable: ties (-0.0/+0.0, NaN payloads) keep input order."""
    return np.take_along_axis(np.asarray(x), _np_argsort(x, axis), axis=axis)


# --------------------------------------------------------------------------------------
# Against numpy
# --------------------------------------------------------------------------------------

CASES = [  # (shape, axis): 1-D below/above the host threshold, batched rows, any axis
    ((1,), 0),
    ((2,), -1),
    ((37,), 0),
    ((3000,), 0),
    ((6, 50), -1),
    ((6, 50), 0),
    ((40, 100), 1),  # 4000 elements in short rows
    ((3, 1000), -1),  # long rows
    ((700, 4), 0),  # long columns
    ((3, 4, 5), 1),
    ((2, 3, 400), -3),
]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kind", ["ties", "special"])  # "special" is half untied normal data
def test_sort_and_argsort_match_numpy(backend, kind):
    _skip_unavailable(backend)
    for shape, axis in CASES:
        x = _data(kind, shape, seed=len(shape) * 100 + shape[-1])
        got, perm = _sort_pair(x, axis=axis, backend=backend)
        _assert_bit_equal(got, _np_sort(x, axis))
        assert perm.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(perm), _np_argsort(x, axis), err_msg=str(shape))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_unstable_argsort_is_a_sorting_permutation(backend):
    _skip_unavailable(backend)
    for shape in [(3000,), (40, 100), (3, 1000)]:
        x = _data("special", shape, seed=7)
        perm = np.asarray(_sort_pair(x, backend=backend, stable=False)[1])
        # a permutation of every row ...
        np.testing.assert_array_equal(np.sort(perm, axis=-1), np.broadcast_to(np.arange(shape[-1]), shape))
        # ... that sorts the values (ties in any order; NaNs last)
        got = np.take_along_axis(x, perm, axis=-1)
        np.testing.assert_array_equal(got, np.sort(x, axis=-1))


def test_nan_inf_signed_zero_order():
    x = np.array([np.nan, 1.0, -0.0, np.inf, 0.0, -np.inf, NEG_NAN, -0.0, -1.0], np.float32)
    s = np.asarray(jaxstats.sort(x))
    # -inf first, then -1, then the zeros in input order (-0, +0, -0), 1, inf, NaNs last.
    np.testing.assert_array_equal(s[:7], [-np.inf, -1.0, 0.0, 0.0, 0.0, 1.0, np.inf])
    np.testing.assert_array_equal(np.signbit(s[2:5]), [True, False, True])
    assert np.isnan(s[7:]).all()
    np.testing.assert_array_equal(np.signbit(s[7:]), [False, True])  # NaNs in input order
    np.testing.assert_array_equal(np.asarray(jaxstats.argsort(x)), [5, 8, 2, 4, 7, 1, 3, 0, 6])


_FTZ = pytest.mark.xfail(
    reason="open: XLA:CPU's sort and the host callback (run on an XLA thread) compare with "
    "denormals-are-zero, so subnormals tie with 0; the native kernel orders them exactly",
    strict=True,
)


@pytest.mark.parametrize(
    "backend",
    [pytest.param(b, marks=_FTZ) if b in ("host", "xla") else b for b in ALL_BACKENDS],
)
def test_subnormals_in_numpy_order(backend):
    # Subnormals are ordinary finite floats: 0 < 1e-45 < 2e-45 (no flush-to-zero in the order).
    _skip_unavailable(backend)
    tiny = np.array([1e-45, 0.0, -1e-45, 2e-45, -0.0, 1.1754942e-38, -3e-39], np.float32)
    for x in (np.tile(tiny, 500), np.tile(tiny, (40, 10))):  # 1-D and batched, above the threshold
        s, p = _sort_pair(x, backend=backend)
        _assert_bit_equal(s, _np_sort(x))
        np.testing.assert_array_equal(np.asarray(p), _np_argsort(x))


@pytest.mark.parametrize(
    "dtype", [np.int32, np.uint32, np.int8, np.uint8, np.int16, np.float16, ml_dtypes.bfloat16]
)
@pytest.mark.parametrize("n", [50, 3000])
def test_integer_and_small_float_dtypes(dtype, n):
    rng = np.random.default_rng(n)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        x = rng.integers(info.min, info.max, size=n, endpoint=True).astype(dtype)
        x[:4] = [info.min, info.max, info.min, 0]  # extremes and ties
    else:
        x = rng.normal(size=n).astype(dtype)
        x[:6] = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0], np.float32).astype(dtype)
    got, perm = _sort_pair(x)
    assert got.dtype == x.dtype
    _assert_bit_equal(got, _np_sort(x))
    np.testing.assert_array_equal(np.asarray(perm), _np_argsort(x))


@pytest.mark.parametrize("n", [7, 3000])
def test_bool_input(n):
    x = np.random.default_rng(n).random(n) < 0.3
    got = jaxstats.sort(x)
    assert got.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(got), np.sort(x))
    np.testing.assert_array_equal(np.asarray(jaxstats.argsort(x)), _np_argsort(x))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("shape,axis", [((0,), 0), ((3, 0), -1), ((0, 5), -1), ((4, 0), 0)])
def test_empty(backend, shape, axis):
    _skip_unavailable(backend)
    x = np.zeros(shape, np.float32)
    s = jaxstats.sort(x, axis=axis, backend=backend)
    p = jaxstats.argsort(x, axis=axis, backend=backend)
    assert s.shape == shape and s.dtype == jnp.float32
    assert p.shape == shape and p.dtype == jnp.int32


def test_python_list_input():
    np.testing.assert_array_equal(np.asarray(jaxstats.sort([3, 1, 2])), [1, 2, 3])
    np.testing.assert_array_equal(np.asarray(jaxstats.argsort([3.0, 1.0, 3.0])), [1, 0, 2])


# --------------------------------------------------------------------------------------
# Every path gives the same bits
# --------------------------------------------------------------------------------------

PATH_SHAPES = [(1000,), (5000,), (10, 100), (40, 100), (3, 1000), (3, 3000)]


@pytest.mark.parametrize("shape", PATH_SHAPES, ids=str)
def test_all_paths_identical(shape):
    x = _data("special", shape, seed=int(np.prod(shape)))
    x[..., :50] = np.round(x[..., :50])  # more ties
    backends = [b for b in ALL_BACKENDS if b != "native" or _native_available()]
    ref_s, ref_p = _sort_pair(x, backend="xla")
    for b in backends:
        s, p = _sort_pair(x, backend=b)
        _assert_bit_equal(s, ref_s)
        np.testing.assert_array_equal(np.asarray(p), np.asarray(ref_p), err_msg=b)
    # and op-by-op (eager) dispatch of the host path
    _assert_bit_equal(jaxstats.sort(x, backend="host"), ref_s)
    _assert_bit_equal(ref_s, _np_sort(x))


@pytest.mark.parametrize("backend", FORCED)
def test_paths_identical_on_all_tied_and_all_nan(backend):
    _skip_unavailable(backend)
    for x in [
        np.zeros(4096, np.float32) * np.where(np.arange(4096) % 3 == 0, -1, 1).astype(np.float32),
        np.full((8, 512), np.nan, np.float32),
        np.full((5, 600), 2.0, np.float32),
    ]:
        s, p = _sort_pair(x, backend=backend)
        _assert_bit_equal(s, _np_sort(x))
        np.testing.assert_array_equal(np.asarray(p), _np_argsort(x))


# --------------------------------------------------------------------------------------
# Transformations
# --------------------------------------------------------------------------------------


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_sort_argsort(self):
        for shape, axis in [((3000,), 0), ((40, 100), 1), ((6, 50), 0), ((3, 1000), -1)]:
            x = _data("special", shape, seed=3)
            s, p = self.variant(
                lambda v, axis=axis: (jaxstats.sort(v, axis=axis), jaxstats.argsort(v, axis=axis))
            )(x)
            _assert_bit_equal(s, _np_sort(x, axis))
            np.testing.assert_array_equal(np.asarray(p), _np_argsort(x, axis))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_vmap(backend):
    _skip_unavailable(backend)
    x = _data("special", (6, 3000), seed=11)
    sort = lambda v: jaxstats.sort(v, backend=backend)  # noqa: E731
    argsort = lambda v: jaxstats.argsort(v, backend=backend)  # noqa: E731
    _assert_bit_equal(jax.vmap(sort)(x), _np_sort(x, -1))
    np.testing.assert_array_equal(np.asarray(jax.vmap(argsort)(x)), _np_argsort(x, -1))
    # batch axis 1: sorts the columns
    _assert_bit_equal(jax.vmap(sort, in_axes=1, out_axes=1)(x.T), _np_sort(x.T, 0))
    # nested vmap over a 3-D array, jitted
    x3 = _data("ties", (3, 4, 700), seed=12)
    nested = jax.jit(jax.vmap(jax.vmap(argsort)))
    np.testing.assert_array_equal(np.asarray(nested(x3)), _np_argsort(x3, -1))
    nested_s = jax.vmap(jax.vmap(sort, in_axes=1, out_axes=1))  # inner batch axis in the middle
    _assert_bit_equal(nested_s(x3.transpose(0, 2, 1)), _np_sort(x3.transpose(0, 2, 1), 1))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_grad_is_the_permutation(backend):
    _skip_unavailable(backend)
    rng = np.random.default_rng(5)
    n = 3000
    x = (rng.permutation(n) * 0.25).astype(np.float32)  # distinct, well separated
    w = rng.normal(size=n).astype(np.float32)
    f = lambda v: jnp.sum(w * jaxstats.sort(v, backend=backend))  # noqa: E731
    perm = np.argsort(x, kind="stable")
    expected = np.zeros(n, np.float32)
    expected[perm] = w  # d/dx_j sum_i w_i x_{perm_i}
    np.testing.assert_array_equal(np.asarray(jax.grad(f)(x)), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.grad(f))(x)), expected)
    # forward mode: the tangent is gathered by the permutation
    t = rng.normal(size=n).astype(np.float32)
    _, jvp = jax.jvp(lambda v: jaxstats.sort(v, backend=backend), (x,), (t,))
    np.testing.assert_array_equal(np.asarray(jvp), t[perm])


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_grad_with_ties_uses_the_stable_permutation(backend):
    _skip_unavailable(backend)
    x = _data("ties", (40, 100), seed=21)  # 4000 elements, all tied
    w = np.random.default_rng(22).normal(size=x.shape).astype(np.float32)
    g = jax.grad(lambda v: jnp.sum(w * jaxstats.sort(v, axis=0, backend=backend)))(x)
    perm = np.argsort(x, axis=0, kind="stable")
    expected = np.zeros_like(w)
    np.put_along_axis(expected, perm, w, axis=0)
    np.testing.assert_array_equal(np.asarray(g), expected)


def test_jacobian_is_a_permutation_matrix():
    x = np.array([0.3, -2.0, 5.0, 1.0, -0.5], np.float32)
    eye = np.eye(5, dtype=np.float32)[np.argsort(x)]
    np.testing.assert_array_equal(np.asarray(jax.jacfwd(jaxstats.sort)(x)), eye)
    np.testing.assert_array_equal(np.asarray(jax.jacrev(jaxstats.sort)(x)), eye)


@pytest.mark.parametrize("shape", [(9,), (2500,)])
def test_check_grads(shape):
    rng = np.random.default_rng(9)
    x = (rng.permutation(shape[0]) * 0.5 + rng.uniform(0, 0.1, shape[0])).astype(np.float32)
    w = rng.normal(size=shape).astype(np.float32)
    f = lambda v: jnp.sum(w * jaxstats.sort(v) ** 2)  # noqa: E731
    check_grads(f, (x,), order=1, modes=("fwd", "rev"), eps=1e-2, rtol=2e-2, atol=2e-2)
    check_grads(jaxstats.sort, (x[:9],), order=1, modes=("fwd", "rev"), eps=1e-2)


def test_argsort_has_zero_gradient_and_sort_and_argsort_values_carry_it():
    x = np.array([3.0, 1.0, 2.0], np.float32)
    g = jax.grad(lambda v: jnp.sum(jaxstats.argsort(v).astype(jnp.float32) * v))(x)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(jaxstats.argsort(x), np.float32))
    s, p = _sort.sort_and_argsort(x)
    np.testing.assert_array_equal(np.asarray(s), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(np.asarray(p), [1, 2, 0])
    g2 = jax.grad(lambda v: _sort.sort_and_argsort(v)[0][0])(x)
    np.testing.assert_array_equal(np.asarray(g2), [0.0, 1.0, 0.0])


# --------------------------------------------------------------------------------------
# shard_map
# --------------------------------------------------------------------------------------


def _mesh():
    assert len(jax.devices()) >= 4, "conftest must create 4 CPU devices"
    return jax.make_mesh((4,), ("d",))


def _has_host_callback(hlo_text: str) -> bool:
    return "python_cpu_callback" in hlo_text or "xla_python" in hlo_text


@pytest.mark.parametrize("local_shape", [(2, 4096), (16, 128), (1, 3000), (4, 50)], ids=str)
def test_shard_map_sorts_a_local_axis(local_shape):
    mesh = _mesh()
    b, n = local_shape
    x = _data("special", (4 * b, n), seed=b * n)
    xs = jax.device_put(x, NamedSharding(mesh, P("d")))

    def body(v):
        return jaxstats.sort(v), jaxstats.argsort(v), jaxstats.rankdata(v, nan_policy="omit")

    f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d")))
    assert not _has_host_callback(f.lower(xs).as_text()), "host callback inside shard_map"
    s, p, r = f(xs)
    _assert_bit_equal(s, _np_sort(x))
    np.testing.assert_array_equal(np.asarray(p), _np_argsort(x))
    np.testing.assert_array_equal(np.asarray(r), np.asarray(jaxstats.rankdata(x, nan_policy="omit")))


def test_shard_map_with_collective_equals_unsharded():
    mesh = _mesh()
    x = _data("ties", (8, 3000), seed=31)
    xs = jax.device_put(x, NamedSharding(mesh, P("d")))

    def body(v):  # sort the local rows, then reduce the sorted rows across devices
        return jax.lax.psum(jnp.sum(jaxstats.sort(v), axis=0), "d")

    f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P()))
    np.testing.assert_allclose(np.asarray(f(xs)), np.sort(x, axis=-1).sum(0), rtol=1e-6)


def test_host_backend_lowers_to_a_callback_and_auto_outside_shard_map_is_not_plain_xla():
    x = jnp.asarray(_data("normal", (100_000,)))
    assert _has_host_callback(jax.jit(lambda v: jaxstats.sort(v, backend="host")).lower(x).as_text())
    assert not _has_host_callback(jax.jit(lambda v: jaxstats.sort(v, backend="xla")).lower(x).as_text())
    auto = jax.jit(jaxstats.sort).lower(x).as_text()
    # a fast CPU path (host callback or native custom call) is selected for a large 1-D sort
    assert "custom_call" in auto, "auto did not select a CPU fast path for n = 10^5"


# --------------------------------------------------------------------------------------
# Errors at trace time
# --------------------------------------------------------------------------------------


def test_errors():
    x = jnp.ones(5)
    with pytest.raises(ValueError, match=r"sort: 'axis'=1 is out of bounds for an array of rank 1"):
        jaxstats.sort(x, axis=1)
    with pytest.raises(ValueError, match=r"argsort: 'axis'=-3 is out of bounds for an array of rank 2"):
        jaxstats.argsort(jnp.ones((2, 3)), axis=-3)
    # Wrongly typed static options: the library's TypeError, or the same error from the
    # jaxtyping/beartype hook the test suite installs; either way it names the argument.
    with pytest.raises(TypeError, match=r"sort: 'axis' must be a static Python int; got 0.5|parameter 'axis'"):
        jaxstats.sort(x, axis=0.5)
    with pytest.raises(TypeError, match=r"sort: 'axis' must be a static Python int; got None|parameter 'axis'"):
        jaxstats.sort(x, axis=None)
    with pytest.raises(ValueError, match=r"sort: 'backend' must be one of 'auto'.*; got 'gpu'"):
        jaxstats.sort(x, backend="gpu")
    with pytest.raises(ValueError, match=r"argsort: 'backend' must be one of .*; got 'numpy'"):
        jaxstats.argsort(x, backend="numpy")
    with pytest.raises(TypeError, match=r"sort: 'x' must have a real \(float, int or bool\) dtype; got complex64"):
        jaxstats.sort(jnp.ones(3, jnp.complex64))
    with pytest.raises(TypeError, match=r"argsort: 'x' must have a real"):
        jaxstats.argsort(np.ones(3, np.complex128))
    with pytest.raises(TypeError, match=r"argsort: 'stable' must be a Python bool; got 'yes'|parameter 'stable'"):
        jaxstats.argsort(x, stable="yes")
    with pytest.raises(TypeError, match=r"argsort: 'stable' must be a Python bool; got 1|parameter 'stable'"):
        jaxstats.argsort(x, stable=1)
    with pytest.raises(ValueError, match=r"a scalar has no axis"):
        jaxstats.sort(jnp.float32(1.0))
    # the same checks fire while tracing under jit
    with pytest.raises(ValueError, match=r"'axis'=2 is out of bounds"):
        jax.jit(lambda v: jaxstats.sort(v, axis=2))(jnp.ones((2, 2)))
    with pytest.raises(TypeError, match=r"'stable' must be a Python bool|parameter 'stable'"):
        jax.jit(lambda v: jaxstats.argsort(v, stable=None))(x)


# --------------------------------------------------------------------------------------
# No retracing
# --------------------------------------------------------------------------------------


def test_no_retracing():
    def f(v):
        return jaxstats.sort(v), jaxstats.argsort(v, axis=0), jaxstats.rankdata(v)

    g = jax.jit(chex.assert_max_traces(f, n=1))
    x1 = _data("normal", (8, 512), seed=1)
    x2 = _data("special", (8, 512), seed=2)
    g(x1)
    out = g(x2)  # same shape and dtype, different data: no second trace
    _assert_bit_equal(out[0], _np_sort(x2))
    chex.clear_trace_counter()


# --------------------------------------------------------------------------------------
# Native kernels: short rows (sorting network across rows) and long-row tie bounds
# --------------------------------------------------------------------------------------

# Row lengths below and around the native kernels' switches (kernels.cc): the network sorts
# 16 rows at a time (one per SIMD lane) up to n = 4096 (float32/int32 sort) or 2048 (argsort,
# tie bounds and 64-bit sort); a partial last block of rows uses it only if it holds enough
# rows (kSort32Rule / kArg32Rule / kSort64Rule: n <= 16, 32, 64, 128, 256, 512, 1024, 2048).
NET_LENGTHS = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257,
               511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097]
# Leading shapes: fewer rows than lanes, one full block, two full blocks plus a partial one
# of 5 rows, and two leading axes (18 rows: a full block plus 2).
NET_LEADING = [(3,), (16,), (37,), (2, 9)]


def _nan_with_payload(dtype):
    bits = {np.float32: (np.uint32, 0x7FC01234), np.float64: (np.uint64, 0x7FF8000000001234)}
    ut, b = bits[np.dtype(dtype).type]
    return np.array([b], ut).view(dtype)[0]


def _net_data(dtype, shape, seed) -> np.ndarray:
    """Normal / full-range values with ties and, for floats, every special value: NaN (three
    payloads), +-inf, -0.0/+0.0, subnormals, the extremes; plus special rows (sorted, reversed,
    all tied, all NaN or all signed zeros)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        info = np.finfo(dt)
        tiny = info.smallest_subnormal
        pool = np.array([np.nan, -np.nan, _nan_with_payload(dt), np.inf, -np.inf, 0.0, -0.0,
                         tiny, -tiny, 2 * tiny, info.tiny * np.asarray(0.5, dt), info.max, info.min,
                         1.0, -1.0], dt)
        x = rng.normal(size=shape).astype(dt)
        x[..., ::3] = np.round(x[..., ::3], 1)  # ties
    else:
        info = np.iinfo(dt)
        pool = np.array([info.min, info.max, info.min + 1, info.max - 1, 0, 1], dt)
        x = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)
        x[..., ::3] = rng.integers(0, 5, size=x[..., ::3].shape).astype(dt)  # ties
    mask = rng.random(size=shape) < 0.25
    x[mask] = rng.choice(pool, size=int(mask.sum()))
    rows = x.reshape(-1, shape[-1])
    if rows.shape[0] >= 6:
        rows[0] = np.sort(rows[0])
        rows[1] = np.sort(rows[1])[::-1]
        rows[2] = rows[2, 0]
        rows[3] = pool[0]  # all NaN (floats) / all the minimum (ints)
        if dt.kind == "f":
            rows[4] = np.where(rng.random(shape[-1]) < 0.5, dt.type(0.0), dt.type(-0.0))
    return x


def _key_int(x: np.ndarray) -> np.ndarray:
    """numpy's order as integers (NaNs equal and last, -0.0 == +0.0): a test-side reference."""
    if x.dtype.kind != "f":
        return x
    it = np.int32 if x.dtype.itemsize == 4 else np.int64
    canon = np.array([np.nan], x.dtype).view(it)[0]
    b = np.where(np.isnan(x), canon, np.where(x == 0, it(0), x.view(it))).astype(it)
    return np.where(b < 0, b ^ np.iinfo(it).max, b)


def _np_tie_bounds(x: np.ndarray):
    """(sorted, lo, hi, dense) along the last axis: lo - 1 = #{x < x_i}, hi = #{x <= x_i}."""
    keys = _key_int(x).reshape(-1, x.shape[-1])
    lo, hi, dense = (np.empty(keys.shape, np.int32) for _ in range(3))
    for r, k in enumerate(keys):
        sk = np.sort(k)
        lo[r] = np.searchsorted(sk, k, "left") + 1
        hi[r] = np.searchsorted(sk, k, "right")
        dense[r] = np.searchsorted(np.unique(sk), k) + 1
    return _np_sort(x), *(a.reshape(x.shape) for a in (lo, hi, dense))


@jax.jit
def _native_all(xs):
    out = []
    for x in xs:
        s, lo, hi = _sort.tie_bounds(x, backend="native")
        out.append((jaxstats.sort(x, backend="native"), jaxstats.argsort(x, backend="native"),
                    s, lo, hi, _sort.dense_rank(x, backend="native")))
    return out


def _check_native(xs):
    for x, (srt, perm, ts, lo, hi, dense) in zip(xs, _native_all(xs)):
        msg = f"{x.dtype} {x.shape}"
        ref_s, ref_lo, ref_hi, ref_dense = _np_tie_bounds(x)
        _assert_bit_equal(srt, ref_s)
        np.testing.assert_array_equal(np.asarray(perm), _np_argsort(x), err_msg=msg)
        _assert_bit_equal(ts, ref_s)
        np.testing.assert_array_equal(np.asarray(lo), ref_lo, err_msg=msg)
        np.testing.assert_array_equal(np.asarray(hi), ref_hi, err_msg=msg)
        np.testing.assert_array_equal(np.asarray(dense), ref_dense, err_msg=msg)


def _net_batches(dtype, n):
    leading = NET_LEADING if n <= 1024 else [(3,), (37,)]
    return [_net_data(dtype, lead + (n,), seed=n * 7 + i) for i, lead in enumerate(leading)]


@pytest.mark.parametrize("n", NET_LENGTHS)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint32])
def test_native_short_rows_match_numpy(dtype, n):
    """Every kernel, short rows in blocks of 16 (network) and leftover rows (radix sort), against
    numpy's stable sort: bits of the sorted values, the stable permutation, tie bounds."""
    _skip_unavailable("native")
    _check_native(_net_batches(dtype, n))


@pytest.mark.parametrize("n", NET_LENGTHS)
@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint64])
def test_native_short_rows_match_numpy_64bit(x64, dtype, n):
    _skip_unavailable("native")
    _check_native(_net_batches(dtype, n))


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_native_short_rows_many_rows(dtype):
    """Many blocks of 16 rows (the benchmark shapes, scaled down), one partial block left."""
    _skip_unavailable("native")
    _check_native([_net_data(dtype, (1000 + 7, 64), seed=1), _net_data(dtype, (300 + 3, 128), seed=2)])


@pytest.mark.parametrize("n", [2**17, 2**17 + 1, 300_001])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float64])
def test_native_long_row_tie_bounds(x64, dtype, n):
    """Long rows: tie bounds put back in input order through the bucketed two-pass scatter
    (above 2^17 elements), sorted values decoded from the keys, zeros and NaN payloads restored."""
    _skip_unavailable("native")
    x = _net_data(dtype, (n,), seed=n)
    x[: n // 2] = np.round(x[: n // 2])  # large tie groups (and more -0.0)
    if np.dtype(dtype).kind == "f":
        x[::1001] = -0.0
        x[5::997] = _nan_with_payload(dtype)
    _check_native([x, x[: n // 2 * 2].reshape(2, -1)])


NATIVE_PORTABLE_SCRIPT = textwrap.dedent(
    r"""
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jaxstats import _native
    lib = _native.load()
    assert lib is not None, _native.status()
    assert sys.argv[1] in _native.status(), _native.status()
    sys.path.insert(0, sys.argv[2])
    import test_sort as t
    for dtype in (np.float32, np.float64, np.int32):
        for n in (2, 9, 33, 64, 65, 129, 257, 1025):
            t._check_native(t._net_batches(dtype, n))
    print("PORTABLE OK")
    """
)


@pytest.mark.slow
def test_native_portable_build_matches_numpy(tmp_path):
    """The portable build (no -march=native, so no AVX-512: the plain-loop network and the
    scalar zero/NaN restore) gives the same results; built into a fresh cache folder."""
    _skip_unavailable("native")
    script = tmp_path / "portable.py"
    script.write_text(NATIVE_PORTABLE_SCRIPT)
    env = dict(os.environ, JAXSTATS_NATIVE_MARCH="0", JAXSTATS_CACHE_DIR=str(tmp_path / "cache"),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cache"), os.path.dirname(__file__)],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path),
    )
    assert proc.returncode == 0 and "PORTABLE OK" in proc.stdout, (proc.stdout[-3000:], proc.stderr[-3000:])


# --------------------------------------------------------------------------------------
# The hazard: host callbacks vs. multi-device collectives under concurrent dispatch
# --------------------------------------------------------------------------------------

# Thread A keeps a 4-device psum program in flight (async dispatch); thread B sorts / ranks
# 10^5-element arrays and batched short rows on one device (the CPU fast paths) and runs
# programs that mix a 4-device psum with a jaxstats sort, inside and outside shard_map.
# A host callback blocking one device while the others wait in the collective aborts the
# process (XLA:CPU rendezvous termination timeout) or hangs it.
_HAZARD_SCRIPT = textwrap.dedent(
    r"""
    import os, sys, threading, time, traceback
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import jaxstats

    DURATION = float(sys.argv[1])
    assert len(jax.devices()) == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("d",))
    sharded, replicated = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    rng = np.random.default_rng(0)
    big_np = rng.normal(size=100_000).astype(np.float32)
    big_np[::97] = 0.5  # ties
    rows_np = rng.normal(size=(1000, 128)).astype(np.float32)
    blk_np = rng.normal(size=(8, 4096)).astype(np.float32)
    dev0 = jax.devices()[0]
    big, rows = jax.device_put(big_np, dev0), jax.device_put(rows_np, dev0)
    blk = jax.device_put(blk_np, sharded)
    big_rep, rows_rep = jax.device_put(big_np, replicated), jax.device_put(rows_np, replicated)

    collective = jax.jit(jax.shard_map(lambda b: jax.lax.psum(b * 2.0, "d"), mesh=mesh,
                                       in_specs=P("d"), out_specs=P()))

    def _inside(b):  # a sort of the local block inside the collective program
        return jax.lax.psum(jnp.sum(b), "d"), jaxstats.sort(b), jaxstats.argsort(b)

    inside = jax.jit(jax.shard_map(_inside, mesh=mesh, in_specs=P("d"),
                                   out_specs=(P(), P("d"), P("d"))))

    def _psum_of(b):
        return jax.shard_map(lambda c: jax.lax.psum(jnp.sum(c), "d"), mesh=mesh,
                             in_specs=P("d"), out_specs=P())(b)

    mixed_1d = jax.jit(lambda b, r: (_psum_of(b), jaxstats.sort(r)))      # psum + 1-D sort
    mixed_rows = jax.jit(lambda b, r: (_psum_of(b), jaxstats.sort(r)))    # psum + rows sort

    def has_callback(txt):
        return "python_cpu_callback" in txt or "xla_python" in txt

    problems = []
    try:
        if has_callback(inside.lower(blk).as_text()):
            problems.append("a host callback was lowered inside shard_map")
    except Exception as e:
        problems.append(f"sort inside shard_map failed: {type(e).__name__}: {str(e)[:400]}")
        inside = None
    if not has_callback(jax.jit(lambda r: jaxstats.sort(r, backend="host")).lower(big).as_text()):
        problems.append("backend='host' did not lower to a host callback")
    # Diagnostics, printed before anything runs (an abort below loses the rest):
    for name, fn, args in [("mixed_1d", mixed_1d, (blk, big_rep)),
                           ("mixed_rows", mixed_rows, (blk, rows_rep))]:
        print(f"HLO {name}: psum + jaxstats.sort, host callback lowered: "
              f"{has_callback(fn.lower(*args).as_text())}", flush=True)
    print("HLO checked", flush=True)

    ref_big, ref_rows, ref_blk = np.sort(big_np), np.sort(rows_np, axis=-1), np.sort(blk_np, axis=-1)
    # Warm up (compile and run every program once, one at a time) so that the concurrent
    # phase below measures dispatch, not compilation.
    warm = [("collective", lambda: collective(blk)),
            ("single-device", lambda: (jaxstats.sort(big), jaxstats.argsort(big), jaxstats.rankdata(big),
                                       jaxstats.sort(rows), jaxstats.argsort(rows))),
            ("mixed_1d", lambda: mixed_1d(blk, big_rep)),
            ("mixed_rows", lambda: mixed_rows(blk, rows_rep))]
    if inside is not None:
        warm.append(("inside", lambda: inside(blk)))
    for name, run in warm:
        print(f"warm-up {name} ...", flush=True)
        jax.block_until_ready(run())
    print("warm-up done", flush=True)
    ref_perm = np.argsort(big_np, kind="stable")
    ref_psum = (blk_np * 2.0).reshape(4, 2, 4096).sum(0)
    ref_sum = float(blk_np.astype(np.float64).sum())
    stop = threading.Event()
    errors, counts = [], {"A": 0, "B": 0}

    def thread_a():
        try:
            pending = []
            while not stop.is_set():
                pending.append(collective(blk))  # async: several in flight
                counts["A"] += 1
                if len(pending) >= 8:
                    np.testing.assert_allclose(np.asarray(pending[-1]), ref_psum, rtol=1e-5)
                    pending.clear()
            jax.block_until_ready(pending)
        except BaseException:
            errors.append("thread A:\n" + traceback.format_exc())
            stop.set()

    def thread_b():
        try:
            while not stop.is_set():
                outs = [jaxstats.sort(big), jaxstats.argsort(big), jaxstats.rankdata(big),
                        jaxstats.sort(rows), jaxstats.argsort(rows),
                        mixed_1d(blk, big_rep), mixed_rows(blk, rows_rep)]
                if inside is not None:
                    outs.append(inside(blk))
                counts["B"] += 1
                if counts["B"] % 3 == 1:
                    np.testing.assert_array_equal(np.asarray(outs[0]), ref_big)
                    np.testing.assert_array_equal(np.asarray(outs[1]), ref_perm)
                    np.testing.assert_array_equal(np.asarray(outs[3]), ref_rows)
                    np.testing.assert_array_equal(np.asarray(outs[5][1]), ref_big)
                    np.testing.assert_array_equal(np.asarray(outs[6][1]), ref_rows)
                    np.testing.assert_allclose(float(outs[5][0]), ref_sum, rtol=1e-4)
                    if inside is not None:
                        np.testing.assert_array_equal(np.asarray(outs[7][1]), ref_blk)
                jax.block_until_ready(outs)
        except BaseException:
            errors.append("thread B:\n" + traceback.format_exc())
            stop.set()

    threads = [threading.Thread(target=thread_a, daemon=True),
               threading.Thread(target=thread_b, daemon=True)]
    for t in threads:
        t.start()
    t_end = time.monotonic() + DURATION
    while time.monotonic() < t_end and not stop.is_set():
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    if any(t.is_alive() for t in threads):
        print("HAZARD HUNG", counts, flush=True)
        os._exit(3)
    if errors:
        print("HAZARD ERRORS", *errors, sep="\n", flush=True)
        sys.exit(2)
    if problems:
        print("HAZARD PROBLEMS", *problems, sep="\n", flush=True)
        sys.exit(5)
    if counts["A"] < 8 or counts["B"] < 2:
        print("HAZARD TOO FEW ITERATIONS", counts, flush=True)
        sys.exit(4)
    print("HAZARD OK", counts, flush=True)
    """
)


@pytest.mark.slow
def test_hazard_host_callbacks_next_to_multi_device_collectives(tmp_path):
    script = tmp_path / "hazard.py"
    script.write_text(_HAZARD_SCRIPT)
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    # A stuck collective aborts after 20 s instead of XLA:CPU's default 40 s (a healthy psum of
    # 32 KiB takes microseconds, so this cannot fire spuriously even on a loaded machine).
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + " --xla_force_host_platform_device_count=4"
        + " --xla_cpu_collective_call_warn_stuck_timeout_seconds=10"
        + " --xla_cpu_collective_call_terminate_timeout_seconds=20"
    ).strip()
    t0 = time.monotonic()
    for attempt in range(3):
        if attempt == 2 and time.monotonic() - t0 > 40:
            break  # two clean runs on a slow (shared) machine are enough
        try:
            proc = subprocess.run(
                [sys.executable, str(script), "3.0"],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                cwd=str(tmp_path),
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"run {attempt}: hung for 120 s\n{(e.stdout or '')[-3000:]}\n{(e.stderr or '')[-3000:]}")
        key_lines = [ln for ln in proc.stderr.splitlines() if "Termination timeout" in ln][:2]
        tail = "\n".join(
            [proc.stdout[-4000:], "--- stderr (key lines) ---", *key_lines, "--- stderr (tail) ---",
             proc.stderr[-2000:]]
        )
        assert proc.returncode == 0, f"run {attempt}: exit code {proc.returncode}\n{tail}"
        assert "HLO checked" in proc.stdout and "HAZARD OK" in proc.stdout, tail
