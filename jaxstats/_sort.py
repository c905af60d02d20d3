"""The sort / argsort / tie-bound kernel every sort-based statistic in jaxstats goes through.

Why a kernel of our own
-----------------------
XLA:CPU's sort is a generic comparison sort: measured on the project's 2-core AMD EPYC (jax
0.10.2) it is 8-10x slower than ``np.sort`` and far slower than a radix sort. Rank statistics
are sort-bound, so on CPU jaxstats uses, in order of preference:

1. ``native``: C++ kernels called through the XLA FFI (``jaxstats/_native/kernels.cc``),
   compiled on first use with the system compiler for the host CPU: stable LSD radix sorts
   (8-bit digits on the order-preserving unsigned image of the keys) for long rows, and for
   batches of short rows (up to 2,048-4,096 elements, per kernel) a sorting network run on 16
   rows at once, one row per SIMD lane (argsort sorts ``key << 32 | index``, so it is exactly
   the stable order). Measured: 0.3x ``np.sort`` time on 1-D float32 rows of 1e5-1e6 and
   0.8-1.0x on rows of (1e4, 128) and (1e5, 64); argsort 0.1-0.5x ``np.argsort``
   (``experiments/bench_baselines.py --kernel-only``). They run inside the XLA program on its own thread:
   no Python, no GIL, no host round trip, so they are safe in multi-device programs and under
   concurrent dispatch. Used for every CPU sort when it is available. A fused
   ``tie_bounds`` kernel returns the sorted values and every element's tie-group bounds
   (first and last rank) in one pass, which is all that ranks and percentiles need.
2. ``host``: numpy's sort through ``jax.pure_callback``, only on request (``backend="host"``,
   kept for comparisons and as a reference path): a host
   callback in a program that also waits in a multi-device collective can trip XLA:CPU's
   rendezvous timeout and abort the process (``tests/test_sort.py`` reproduces it), so it is
   never chosen automatically. It is unsafe even in a single-device program while another
   thread has a multi-device (collective) program in flight: that was measured to abort too.
   The same holds for ``nan_policy="raise"`` under ``jit`` (``equinox.error_if`` is a host
   callback).
3. ``xla``: XLA's own sort: on GPU/TPU/Metal always (chosen per platform by
   ``lax.platform_dependent`` when the program is lowered), and on CPU for small or
   collective programs when the others do not apply.

``backend="auto"`` makes this choice; ``"native"``, ``"host"`` and ``"xla"`` force one (the
first two only on CPU). ``jaxstats._native.status()`` tells whether the native kernels loaded.

Semantics (identical on every path): ascending order along the last axis; NaNs last (numpy's
order); ``-0.0`` and ``+0.0`` compare equal; ``argsort`` is stable (ties keep input order), so
the permutation is the same on every path. ``grad``: sort's derivative is the permutation (a
custom JVP gathers the tangent with the argsort); argsort and ranks are integer-valued.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from ._typing import ArrayLike
import numpy as np
from jax import lax

from . import _checks, _native

__all__ = ["BACKENDS", "argsort", "sort", "sort_and_argsort", "tie_bounds"]

#: Accepted values of the ``backend=`` argument.
BACKENDS = ("auto", "native", "host", "xla")

# Below this many elements in total the host callback costs more than XLA's sort.
_HOST_MIN_SIZE = 2048
_NATIVE_DTYPES = (np.float32, np.float64, np.int32, np.int64, np.uint32, np.uint64)


# --------------------------------------------------------------------------------------
# Path selection (static: shapes, dtypes, trace context)
# --------------------------------------------------------------------------------------


def _in_collective_context() -> bool:
    """True while tracing under a bound mesh axis name (``shard_map``/``pmap`` bodies)."""
    try:
        from jax._src import core as _core

        if getattr(_core.get_axis_env(), "axis_sizes", None):
            return True
    except Exception:  # pragma: no cover - private API moved
        pass
    try:
        from jax._src.mesh import get_abstract_mesh

        return bool(getattr(get_abstract_mesh(), "manual_axes", ()))
    except Exception:  # pragma: no cover
        return False


def _choose(x: ArrayLike, backend: str) -> str:
    n = x.shape[-1] if x.ndim else 1
    rows = x.size // n if n else 0
    if x.size == 0 or n <= 1:
        return "xla"
    if backend == "native":
        if _native.load() is None:
            raise RuntimeError(f"backend='native' requested but {_native.status()}")
        return "native"
    if backend in ("host", "xla"):
        return backend
    if jax.default_backend() != "cpu" and not any(d.platform == "cpu" for d in jax.devices()):
        return "xla"
    if x.dtype in _NATIVE_DTYPES and _native.load():
        return "native"
    # The numpy host callback is never chosen automatically: a callback inside a program that
    # also waits in a multi-device collective (shard_map, or a jit over replicated/sharded
    # operands) can trip XLA:CPU's rendezvous timeout and abort the process, and that cannot
    # be detected reliably at trace time. backend="host" opts in for single-device programs.
    return "xla"


_cpu_only = _native.cpu_only  # a module attribute, so tests can pretend a GPU is present


def _dispatch(x, path, cpu_fn, xla_fn):
    """Run ``cpu_fn`` on CPU and ``xla_fn`` on every other platform (or for path 'xla'), see
    :func:`_native.on_cpu`."""
    if path == "xla":
        return xla_fn(x)
    return _native.on_cpu(cpu_fn, xla_fn, x, cpu_only=_cpu_only())


# --------------------------------------------------------------------------------------
# numpy (host callback) implementations
# --------------------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    """Zero-copy view of a callback argument. The callback receives ``jax.Array``s: numpy
    functions called on them dispatch back to JAX (slow), and ``np.asarray`` was measured to
    copy batched operands (43 ms at (10^5, 64)) where DLPack does not."""
    try:
        return np.from_dlpack(x)
    except Exception:  # pragma: no cover - exotic layouts
        return np.asarray(x)


def _np_sort(x):
    x = _to_numpy(x)
    out = np.sort(x, axis=-1)
    if out.dtype.kind == "f":
        # numpy's sort is not stable: put tied -0.0/+0.0 and NaNs (payloads) back in input
        # order, so the values are bit-identical to the stable sorts of the other paths.
        # Each row holds as many zeros (NaNs) before as after sorting, so row-major boolean
        # indexing pairs them up row by row.
        n = x.shape[-1]
        flat, fo = x.reshape(-1, n), out.reshape(-1, n)
        for pred in (lambda v: v == 0, np.isnan):
            m_in = pred(flat)
            if m_in.any():
                fo[pred(fo)] = flat[m_in]
    return out


def _sortable_int64(x: np.ndarray) -> np.ndarray:
    """Order-preserving int64 image of float32/int keys: -0.0 -> +0.0, every NaN -> +NaN."""
    if x.dtype == np.float32:
        x = np.where(x == 0, np.float32(0), x)
        x = np.where(np.isnan(x), np.float32(np.nan), x)
        b = x.view(np.int32).astype(np.int64)
        return np.where(b < 0, b ^ 0x7FFFFFFF, b)
    return x.astype(np.int64)


def _np_argsort_unstable(x):
    return np.argsort(_to_numpy(x), axis=-1).astype(np.int32)


def _np_argsort(x):
    x = _to_numpy(x)
    n = x.shape[-1]
    if x.ndim == 1 and (x.dtype == np.float32 or (x.dtype.kind in "iub" and x.dtype.itemsize <= 4)):
        # One int64 sort of (key << 32 | index): stable by construction and faster than
        # numpy's own stable argsort.
        key = (_sortable_int64(x) << 32) | np.arange(n, dtype=np.int64)
        key.sort()
        return (key & 0xFFFFFFFF).astype(np.int32)
    # Batched rows: numpy's SIMD (unstable) argsort, then a stable re-sort of the few rows
    # that hold ties (or NaNs, or infinities), so the result equals a stable sort's.
    flat = x.reshape(-1, n)
    perm = np.argsort(flat, axis=-1)
    vals = np.take_along_axis(flat, perm, axis=-1)
    tied = (vals[:, 1:] == vals[:, :-1]).any(axis=-1)  # catches ±0 and ±inf ties too
    if vals.dtype.kind == "f" and n >= 2:
        tied |= np.isnan(vals[:, -2])  # two or more NaNs (sorted last) must keep input order
    if tied.any():
        perm[tied] = np.argsort(flat[tied], axis=-1, kind="stable")
    return perm.astype(np.int32).reshape(x.shape)


def _callback(fn, x, dtype):
    return jax.pure_callback(
        fn, jax.ShapeDtypeStruct(x.shape, dtype), x, vmap_method="expand_dims"
    )


def _ffi(name, x, dtypes):
    shapes = [jax.ShapeDtypeStruct(x.shape, d) for d in dtypes]
    out = jax.ffi.ffi_call(name, shapes, vmap_method="expand_dims")(x)
    return tuple(out)


# --------------------------------------------------------------------------------------
# Kernels along the last axis (x already moved, promoted to a supported dtype)
# --------------------------------------------------------------------------------------


def _xla_sort(x):
    return lax.sort(x, dimension=x.ndim - 1, is_stable=True)


def _xla_argsort(x, stable=True):
    return jnp.argsort(x, axis=-1, stable=stable).astype(jnp.int32)


def _sort_impl(x, backend):
    path = _choose(x, backend)
    if path == "native":
        return _dispatch(x, path, lambda v: _ffi("JaxstatsSort", v, [v.dtype])[0], _xla_sort)
    if path == "host":
        return _dispatch(x, path, lambda v: _callback(_np_sort, v, v.dtype), _xla_sort)
    return _xla_sort(x)


def _argsort_impl(x, backend, stable=True):
    path = _choose(x, backend)
    xla = functools.partial(_xla_argsort, stable=stable)
    if path == "native":  # always stable
        return _dispatch(x, path, lambda v: _ffi("JaxstatsArgsort", v, [jnp.int32])[0], xla)
    if path == "host":
        fn = _np_argsort if stable else _np_argsort_unstable
        return _dispatch(x, path, lambda v: _callback(fn, v, jnp.int32), xla)
    return xla(x)


def _xla_tie_bounds(x, backend="xla"):
    """Sorted values and 1-based (first, last) rank of each element's tie group, input order."""
    n = x.shape[-1]
    perm = _argsort_impl(x, backend, stable=True)
    s = jnp.take_along_axis(x, perm, axis=-1)
    idx = lax.broadcasted_iota(jnp.int32, s.shape, s.ndim - 1)
    new = s[..., 1:] != s[..., :-1]
    if jnp.issubdtype(s.dtype, jnp.floating):  # NaNs tie with each other (they sort last)
        new = new & ~(jnp.isnan(s[..., 1:]) & jnp.isnan(s[..., :-1]))
    edge = jnp.ones_like(s[..., :1], dtype=bool)
    first = jnp.concatenate([edge, new], axis=-1)
    last = jnp.concatenate([new, edge], axis=-1)
    lo = lax.cummax(jnp.where(first, idx, 0), axis=s.ndim - 1) + 1
    hi = lax.cummin(jnp.where(last, idx, n - 1), axis=s.ndim - 1, reverse=True) + 1
    zeros = jnp.zeros(s.shape, jnp.int32)
    lo = jnp.put_along_axis(zeros, perm, lo, axis=-1, inplace=False)
    hi = jnp.put_along_axis(zeros, perm, hi, axis=-1, inplace=False)
    return s, lo, hi


def _tie_bounds_impl(x, backend):
    path = _choose(x, backend)
    if path == "native":
        return _dispatch(
            x,
            path,
            lambda v: _ffi("JaxstatsTieBounds", v, [v.dtype, jnp.int32, jnp.int32]),
            _xla_tie_bounds,
        )
    if path == "host":
        return _dispatch(x, path, lambda v: _xla_tie_bounds(v, "host"), _xla_tie_bounds)
    return _xla_tie_bounds(x)


def _xla_dense_rank(x, backend="xla"):
    perm = _argsort_impl(x, backend, stable=False)
    s = jnp.take_along_axis(x, perm, axis=-1)
    new = s[..., 1:] != s[..., :-1]
    if jnp.issubdtype(s.dtype, jnp.floating):
        new = new & ~(jnp.isnan(s[..., 1:]) & jnp.isnan(s[..., :-1]))
    first = jnp.concatenate([jnp.ones_like(s[..., :1], dtype=bool), new], axis=-1)
    dense = jnp.cumsum(first.astype(jnp.int32), axis=-1)
    return jnp.put_along_axis(jnp.zeros(s.shape, jnp.int32), perm, dense, axis=-1, inplace=False)


def _dense_rank_impl(x, backend):
    path = _choose(x, backend)
    if path == "native":
        return _dispatch(x, path, lambda v: _ffi("JaxstatsDenseRank", v, [jnp.int32])[0], _xla_dense_rank)
    if path == "host":
        return _dispatch(x, path, lambda v: _xla_dense_rank(v, "host"), _xla_dense_rank)
    return _xla_dense_rank(x)


# Differentiation: the sorted values' tangent is the tangent gathered by the permutation.


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sort_last(x, backend):
    return _sort_impl(x, backend)


@_sort_last.defjvp
def _sort_last_jvp(backend, primals, tangents):
    (x,), (t,) = primals, tangents
    perm = _argsort_impl(x, backend)
    return _sort_impl(x, backend), jnp.take_along_axis(t, perm, axis=-1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _tie_bounds_last(x, backend):
    return _tie_bounds_impl(x, backend)


@_tie_bounds_last.defjvp
def _tie_bounds_last_jvp(backend, primals, tangents):
    (x,), (t,) = primals, tangents
    s, lo, hi = _tie_bounds_impl(x, backend)
    perm = _argsort_impl(x, backend)
    f0 = np.zeros(lo.shape, dtype=jax.dtypes.float0)
    return (s, lo, hi), (jnp.take_along_axis(t, perm, axis=-1), f0, f0)


# --------------------------------------------------------------------------------------
# Public (package-level) API
# --------------------------------------------------------------------------------------


def _prepare(fn: str, x, axis, backend):
    _checks.check_option(fn, "backend", backend, BACKENDS)
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        x = np.asarray(x)
    _checks.check_real(fn, "x", x)
    x = jnp.asarray(x)
    axis = _checks.check_axis(fn, "axis", axis, x.ndim)
    return x, axis


def _promote_small(x):
    """bool / 8- and 16-bit ints / half floats to a dtype the kernels handle (order-exact)."""
    if x.dtype == jnp.bool_ or (jnp.issubdtype(x.dtype, jnp.integer) and x.dtype.itemsize < 4):
        return x.astype(jnp.int32), x.dtype
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize < 4:
        return x.astype(jnp.float32), x.dtype
    return x, None


def sort(x: ArrayLike, *, axis: int = -1, backend: str = "auto") -> jax.Array:
    """Sort ``x`` in ascending order along ``axis`` (numpy order: NaNs last; stable).

    Works under ``jit``, ``vmap`` (any batch axes), ``grad`` (the derivative is the sorting
    permutation) and ``shard_map``. See the module docstring for the CPU kernels.

    Args:
      x: real array of rank >= 1.
      axis: static axis to sort along.
      backend: ``"auto"`` (default: the native kernel on CPU when it is available, else XLA's
        sort), ``"native"``, ``"host"`` (numpy through a host callback; single-device
        programs, and only while no multi-device program is in flight anywhere in the
        process: a host callback dispatched next to a running collective can abort the
        process, see the module docstring) or ``"xla"``.

    Returns:
      The sorted array, same shape and dtype as ``x``.

    Raises:
      TypeError: if ``x`` is not real or ``axis`` is not an int.
      ValueError: if ``axis`` is out of range or ``backend`` unknown.
      RuntimeError: if ``backend="native"`` and the native kernels are unavailable.

    NaN and inf:
      ``-inf`` first, ``+inf`` then NaNs last; ``-0.0`` and ``+0.0`` tie (input order kept).

    Examples:
      >>> import jax.numpy as jnp
      >>> sort(jnp.array([3.0, jnp.nan, -1.0, 2.0]))
      Array([-1.,  2.,  3., nan], dtype=float32)
    """
    x, axis = _prepare("sort", x, axis, backend)
    x, orig = _promote_small(x)
    x = jnp.moveaxis(x, axis, -1)
    out = jnp.moveaxis(_sort_last(x, backend), -1, axis)
    return out if orig is None else out.astype(orig)


def argsort(
    x: ArrayLike, *, axis: int = -1, stable: bool = True, backend: str = "auto"
) -> jax.Array:
    """Indices that sort ``x`` along ``axis``.

    Args:
      x: real array of rank >= 1.
      axis: static axis to sort along.
      stable: if True (default) ties keep their input order, so the permutation is unique and
        the same on every backend. ``stable=False`` allows any order among ties (it can be
        faster on the ``host``/``xla`` paths); use it when only positions of values matter.
      backend: ``"auto"``, ``"native"``, ``"host"`` or ``"xla"``, as in :func:`sort`.

    Returns:
      ``int32`` array of the shape of ``x``.

    Raises:
      TypeError: if ``x`` is not real, ``axis`` is not an int or ``stable`` not a bool.
      ValueError: if ``axis`` is out of range or ``backend`` unknown.

    NaN and inf:
      NaNs sort last; ``-0.0`` and ``+0.0`` are ties.

    Examples:
      >>> import jax.numpy as jnp
      >>> argsort(jnp.array([3.0, 1.0, 2.0, 1.0]))
      Array([1, 3, 2, 0], dtype=int32)
    """
    x, axis = _prepare("argsort", x, axis, backend)
    if not isinstance(stable, (bool, np.bool_)):
        raise TypeError(f"argsort: 'stable' must be a Python bool; got {stable!r}.")
    x, _ = _promote_small(x)
    x = jnp.moveaxis(lax.stop_gradient(x), axis, -1)
    return jnp.moveaxis(_argsort_impl(x, backend, bool(stable)), -1, axis)


def sort_and_argsort(
    x: ArrayLike, *, axis: int = -1, stable: bool = True, backend: str = "auto"
) -> tuple[jax.Array, jax.Array]:
    """``(sorted values, argsort)`` from one argsort; the values carry gradients.

    Args:
      x: real array of rank >= 1.
      axis: static axis.
      stable: as in :func:`argsort`.
      backend: as in :func:`sort`.

    Returns:
      ``(jnp.take_along_axis(x, perm, axis), perm)`` with ``perm`` int32.

    Raises:
      TypeError, ValueError: as :func:`argsort`.
    """
    perm = argsort(x, axis=axis, stable=stable, backend=backend)
    x = jnp.asarray(x)
    axis = axis % x.ndim
    return jnp.take_along_axis(x, perm, axis=axis), perm


def tie_bounds(
    x: ArrayLike, *, backend: str = "auto"
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sorted values and each element's tie-group bounds, along the last axis, in one pass.

    ``lo[i]`` / ``hi[i]`` are the 1-based first / last positions that ``x[i]``'s value occupies
    in the sorted order: ``lo - 1 = #{x < x[i]}`` and ``hi = #{x <= x[i]}`` (NaNs, sorted last,
    tie with each other). Every rank method and percentile kind is elementwise in these.

    Args:
      x: real array of rank >= 1 (last axis = the population; leading axes batched).
      backend: as in :func:`sort`.

    Returns:
      ``(sorted, lo, hi)``: ``sorted`` like ``x`` (differentiable), ``lo``/``hi`` int32 in
      input order.

    Raises:
      TypeError, ValueError: as :func:`sort`.

    Examples:
      >>> import jax.numpy as jnp
      >>> s, lo, hi = tie_bounds(jnp.array([2.0, 1.0, 2.0]))
      >>> lo, hi
      (Array([2, 1, 2], dtype=int32), Array([3, 1, 3], dtype=int32))
    """
    x, _ = _prepare("tie_bounds", x, -1, backend)
    x, orig = _promote_small(x)
    s, lo, hi = _tie_bounds_last(x, backend)
    return (s if orig is None else s.astype(orig)), lo, hi


def dense_rank(x: ArrayLike, *, backend: str = "auto") -> jax.Array:
    """Dense ranks (tie groups numbered 1, 2, ... in ascending order) along the last axis.

    Args:
      x: real array of rank >= 1.
      backend: as in :func:`sort`.

    Returns:
      int32 array like ``x``.

    Raises:
      TypeError, ValueError: as :func:`sort`.
    """
    x, _ = _prepare("dense_rank", x, -1, backend)
    x, _ = _promote_small(lax.stop_gradient(x))
    return _dense_rank_impl(x, backend)
