r"""Differentiable sorting and ranking in O(n log n): soft sort, soft rank, soft quantiles.

Hard ranks and sorts are piecewise constant / piecewise linear, so a detector whose score goes
through a rank has zero gradient with respect to its thresholds. This module implements the
smooth relaxations of Blondel, Teboul, Berthet and Djolonga (2020): the soft sort and the soft
rank are projections onto the *permutahedron*, the convex hull of all permutations of a vector,

.. math::

    P_\Psi(z, w) = \operatorname*{arg\,max}_{\mu \in \mathcal{P}(w)}\ \langle z, \mu\rangle
    - \Psi(\mu),

with :math:`\Psi = \tfrac12\|\mu\|^2` (``regularization="l2"``, a Euclidean projection) or
:math:`\Psi = \langle \mu, \log\mu - 1\rangle` (``regularization="kl"``, an entropic
projection). With :math:`\rho = (n, n-1, \dots, 1)` and strength :math:`\varepsilon`:

* ``soft_rank(x)`` :math:`= P_\Psi(x/\varepsilon, \rho)` (ascending ranks, 1 = smallest, as
  :func:`jaxstats.rankdata`);
* ``soft_sort(x)`` is :math:`P_\Psi(\rho/\varepsilon, x)` read in ascending order ("l2"), or
  :math:`\log P_\Psi(\rho/\varepsilon, e^{x})` ("kl", so that any real ``x`` is allowed).

How it is computed
------------------
Sorting ``z`` in decreasing order (``s``) and ``w`` in decreasing order turns the projection
into an isotonic regression (Blondel et al., Prop. 3): the solution is ``w + r`` (``l2``) or
``exp(w + r)`` (``kl``, in log space for the sort), where ``r`` is the residual of a
*non-increasing* fit ``v`` to the sorted problem. ``v`` is constant on blocks of consecutive
coordinates; on a block :math:`B` it equals :math:`\operatorname{mean}_B(s - w)` (``l2``) or
:math:`\log\sum_B e^{s} - \log\sum_B e^{w}` (``kl``). The blocks are found by
pool-adjacent-violators (PAV): push one coordinate at a time onto a stack of blocks and pool the
top two while they violate the order. Each coordinate is pushed once and each pool removes a
block, so the solver makes at most ``2n - 1`` steps: O(n) after the O(n log n) sort.

The PAV is one ``lax.while_loop`` with a fixed-size stack held in arrays (static shapes, no host
callback; only the sort goes through the :mod:`jaxstats._sort` kernel). The top block lives in
the loop carry and the stack write is unconditional, so XLA updates the stack in place. Under
``jax.vmap`` a ``custom_vmap`` rule folds the batch into the rows of one batched loop (the loop
stops when the slowest row is done; finished rows idle at O(1) cost per step).

Derivatives are exact (almost everywhere): the Jacobian of the isotonic fit is block diagonal,
the block average (``l2``) or a softmax within each block (``kl``), so a JVP or VJP costs
O(n) segment sums. They are given as a ``custom_jvp`` whose tangent map is linear, so
``jax.grad``, ``jax.vjp``, ``jax.jvp`` and ``jax.jacfwd`` all work, under ``jit`` and ``vmap``;
the rule is itself written with differentiable segment sums, so second derivatives (Hessians)
are exact as well. The derivative with respect to ``regularization_strength`` (a temperature
one may learn) is exact too.

Cost (``experiments/bench_soft.py``, 2-core CPU, float32, strength ``2/n``): on CPU the PAV
runs as a C++ stack loop (``jaxstats/_native/pav.cc``, through the XLA FFI; same algorithm,
arithmetic and outputs as the XLA loop, which other platforms and ``JAXSTATS_NATIVE=0`` use).
``soft_rank`` of 10^3 values takes ~25-35 us forward and about the same forward+backward (XLA
loop: ~145 us); 10^4 values ~0.17-0.24 ms (XLA loop: ~0.41 ms), 270x (forward) and 490x
(forward+backward) faster than an O(n^2) pairwise-sigmoid soft rank (jitted, chunked), and
2-3x a hard :func:`jaxstats.rankdata`; 10^5 values ~3 ms (XLA loop ~4 ms) and 10^6 ~33-35 ms
(XLA loop ~37-40 ms), where the sort, gathers and segment sums dominate. The XLA PAV loop
costs ~10-15 ns per step on XLA:CPU (it is sequential); the native loop a few ns.

Limits: as ``regularization_strength -> 0`` ``soft_rank`` tends to ``rankdata`` (ties get the
average rank) and ``soft_sort`` to ``sort``; as it grows, ``soft_rank`` tends to the mean rank
``(n + 1) / 2``, the "l2" soft sort to the mean of ``x`` and the "kl" soft sort to the
log-mean-exp of ``x`` (the mean in the ``exp`` domain, where that projection lives).

References:
  M. Blondel, O. Teboul, Q. Berthet, J. Djolonga, "Fast Differentiable Sorting and Ranking",
  ICML 2020 (arXiv:2002.08871).
  R. E. Barlow, D. J. Bartholomew, J. M. Bremner, H. D. Brunk, "Statistical Inference under
  Order Restrictions", Wiley, 1972 (pool-adjacent-violators).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _checks, _native
from ._typing import ArrayLike
from ._sort import argsort, sort_and_argsort
from .rank import QUANTILE_METHODS, _quantile_sorted

__all__ = [
    "soft_percentile_of_population",
    "soft_quantile",
    "soft_rank",
    "soft_sort",
]

REGULARIZATIONS = ("l2", "kl")
SOFT_PERCENTILE_KINDS = ("rank", "mean")


# --------------------------------------------------------------------------------------------
# Pool-adjacent-violators: block structure of a non-increasing fit
# --------------------------------------------------------------------------------------------
#
# Each coordinate j starts as a block with statistics (a_j, b_j). A block's value is a / b for
# "l2" (a = sum of y, b = count) and a - b for "kl" (a = logsumexp of s, b = logsumexp of w).
# Pooling adds the statistics ("l2") or log-adds them ("kl"). Two consecutive blocks violate
# the non-increasing order when value(left) < value(right).


def _violates(pa, pb, ta, tb, kind):
    if kind == "l2":
        return pa / pb < ta / tb
    return pa - pb < ta - tb


def _pool(pa, pb, ta, tb, kind):
    if kind == "l2":
        return pa + ta, pb + tb
    return jnp.logaddexp(pa, ta), jnp.logaddexp(pb, tb)


def _ids_from_counts(counts: jax.Array) -> jax.Array:
    """Block index of every coordinate, from the block sizes ``counts[:, :K]`` of each row.

    A scan over the coordinates that walks the blocks (XLA:CPU's ``cumsum`` was measured
    2-4x slower than this for 10^4..10^6 elements)."""
    rows, n = counts.shape
    if rows == 1:
        c1 = counts[0]

        def count_of(b):
            return lax.dynamic_index_in_dim(c1, jnp.minimum(b, n - 1), 0, keepdims=False)
    else:
        r = jnp.arange(rows)

        def count_of(b):
            return counts[r, jnp.minimum(b, n - 1)]

    def step(carry, _):
        b, rem = carry
        new = rem == 0
        b = b + new.astype(jnp.int32)
        rem = jnp.where(new, count_of(b), rem) - 1
        return (b, rem), b

    zero = jnp.zeros(() if rows == 1 else (rows,), jnp.int32)
    _, ids = lax.scan(step, (zero - 1, zero), None, length=n, unroll=2)
    return ids.reshape(n, rows).T


def _pav_single(a: jax.Array, b: jax.Array, kind: str):
    """PAV on one row (1-D ``a``, ``b`` of length n >= 1).

    Returns the stack ``(a, b, count)`` of the final blocks (first ``K`` slots valid, in
    order). The loop runs ``n + (number of pools) + 1 <= 2n`` steps. Blocks below the top sit in
    the stack arrays; the top block stays in the carry and is written to slot ``k`` at the
    start of every step (a harmless write above the stack when the step pools), so the write
    depends on the carry only and XLA performs it in place. ``"l2"`` assumes unit weights
    (``b`` all ones, as every caller passes): the count is then ``b`` itself and no count array
    is carried.
    """
    n = a.shape[0]
    dt = a.dtype
    counted = kind != "l2"

    def body(carry):
        _, i, k, sa, sb, sc, ta, tb, tc = carry
        sa = lax.dynamic_update_index_in_dim(sa, ta, k, 0)
        sb = lax.dynamic_update_index_in_dim(sb, tb, k, 0)
        km1 = jnp.maximum(k - 1, 0)
        pa = lax.dynamic_index_in_dim(sa, km1, 0, keepdims=False)
        pb = lax.dynamic_index_in_dim(sb, km1, 0, keepdims=False)
        pool = (k > 0) & _violates(pa, pb, ta, tb, kind)
        push = jnp.logical_not(pool) & (i < n)
        ic = jnp.minimum(i, n - 1)
        na = lax.dynamic_index_in_dim(a, ic, 0, keepdims=False)
        nb = lax.dynamic_index_in_dim(b, ic, 0, keepdims=False) if counted else jnp.ones((), dt)
        ma, mb = _pool(pa, pb, ta, tb, kind)
        ta = jnp.where(pool, ma, jnp.where(push, na, ta))
        tb = jnp.where(pool, mb, jnp.where(push, nb, tb))
        if counted:
            sc = lax.dynamic_update_index_in_dim(sc, tc, k, 0)
            pc = lax.dynamic_index_in_dim(sc, km1, 0, keepdims=False)
            tc = jnp.where(pool, pc + tc, jnp.where(push, 1, tc))
        pi = push.astype(jnp.int32)
        k = k + pi - pool.astype(jnp.int32)
        return pool | push, i + pi, k, sa, sb, sc, ta, tb, tc

    sc0 = jnp.zeros((n if counted else 0,), jnp.int32)
    init = (jnp.bool_(True), jnp.int32(1), jnp.int32(0), jnp.zeros((n,), dt),
            jnp.zeros((n,), dt), sc0, a[0], b[0], jnp.int32(1))
    _, _, k, sa, sb, sc, ta, tb, tc = lax.while_loop(lambda c: c[0], body, init)
    sa = lax.dynamic_update_index_in_dim(sa, ta, k, 0)
    sb = lax.dynamic_update_index_in_dim(sb, tb, k, 0)
    if counted:
        sc = lax.dynamic_update_index_in_dim(sc, tc, k, 0)
    else:  # unit weights: the pooled weight is the count (exact below 2^24 in float32)
        sc = jnp.round(sb).astype(jnp.int32)
    return sa, sb, sc


def _pav_rows(a: jax.Array, b: jax.Array, kind: str):
    """PAV on every row of ``[rows, n]`` arrays in one loop (per-row gathers and scatters);
    the loop stops when the slowest row is done. Returns the ``[rows, n]`` stacks."""
    rows, n = a.shape
    dt = a.dtype
    r = jnp.arange(rows)
    counted = kind != "l2"

    def body(carry):
        _, i, k, sa, sb, sc, ta, tb, tc = carry
        sa = sa.at[r, k].set(ta, unique_indices=True)
        sb = sb.at[r, k].set(tb, unique_indices=True)
        km1 = jnp.maximum(k - 1, 0)
        pa, pb = sa[r, km1], sb[r, km1]
        pool = (k > 0) & _violates(pa, pb, ta, tb, kind)
        push = jnp.logical_not(pool) & (i < n)
        ic = jnp.minimum(i, n - 1)
        na, nb = a[r, ic], b[r, ic]
        ma, mb = _pool(pa, pb, ta, tb, kind)
        ta = jnp.where(pool, ma, jnp.where(push, na, ta))
        tb = jnp.where(pool, mb, jnp.where(push, nb, tb))
        if counted:
            sc = sc.at[r, k].set(tc, unique_indices=True)
            tc = jnp.where(pool, sc[r, km1] + tc, jnp.where(push, 1, tc))
        pi = push.astype(jnp.int32)
        k = k + pi - pool.astype(jnp.int32)
        return jnp.any(pool | push), i + pi, k, sa, sb, sc, ta, tb, tc

    zi = jnp.zeros((rows,), jnp.int32)
    sc0 = jnp.zeros((rows, n if counted else 0), jnp.int32)
    init = (jnp.bool_(True), zi + 1, zi, jnp.zeros((rows, n), dt), jnp.zeros((rows, n), dt),
            sc0, a[:, 0], b[:, 0], zi + 1)
    _, _, k, sa, sb, sc, ta, tb, tc = lax.while_loop(lambda c: c[0], body, init)
    sa = sa.at[r, k].set(ta, unique_indices=True)
    sb = sb.at[r, k].set(tb, unique_indices=True)
    if counted:
        sc = sc.at[r, k].set(tc, unique_indices=True)
    else:
        sc = jnp.round(sb).astype(jnp.int32)
    return sa, sb, sc


# Native CPU solver (jaxstats/_native/pav.cc): the same PAV, arithmetic and outputs as the XLA
# loops above, as a plain C++ stack loop (a few ns per step instead of ~10-15 ns). Used on CPU
# when the kernels are available; other platforms, ``JAXSTATS_NATIVE=0`` and a missing
# compiler use the XLA loops. Only integer block structure and block statistics come out of it,
# and every caller passes ``stop_gradient`` inputs: nothing differentiates through the call.

#: Internal switch (tests, benchmarks): False routes the PAV to the XLA loops. Read at trace
#: time (``jax.clear_caches()`` after changing it).
_USE_NATIVE = True
_PAV_KINDS = {"l2": np.int64(0), "kl": np.int64(1)}


def _pav_path(dtype) -> str:
    """``"native"`` when the C++ PAV can take ``dtype`` on CPU, else ``"xla"`` (static)."""
    return _native.float_path(dtype, _USE_NATIVE)


_cpu_only = _native.cpu_only  # a module attribute, so tests can pretend a GPU is present


def _make_pav(kind: str):
    """``pav(a, b) -> (ids, block_a, block_b, count)`` for ``[rows, n]`` inputs: per coordinate,
    the index of its block (0, 1, ... along each row), the block's pooled statistics and its
    size. Under ``vmap`` the batch is folded into the rows (``custom_vmap``), so a vmapped call
    is still one loop."""

    def pav_xla(a, b):
        rows, n = a.shape
        if rows == 1:
            sa, sb, sc = (v[None] for v in _pav_single(a[0], b[0], kind))
        else:
            sa, sb, sc = _pav_rows(a, b, kind)
        ids = _ids_from_counts(sc)
        return ids, _take_rows(sa, ids), _take_rows(sb, ids), _take_rows(sc, ids)

    def pav_native(a, b):
        i32 = jax.ShapeDtypeStruct(a.shape, jnp.int32)
        blk = jax.ShapeDtypeStruct(a.shape, a.dtype)
        return tuple(jax.ffi.ffi_call("JaxstatsPav", (i32, blk, blk, i32),
                                      vmap_method="broadcast_all")(a, b, kind=_PAV_KINDS[kind]))

    @jax.custom_batching.custom_vmap
    def pav(a, b):
        if _pav_path(a.dtype) == "native":
            return _native.on_cpu(pav_native, pav_xla, a, b, cpu_only=_cpu_only())
        return pav_xla(a, b)

    @pav.def_vmap
    def _rule(axis_size, in_batched, a, b):
        a_b, b_b = in_batched
        if not (a_b or b_b):
            return pav(a, b), (False,) * 4
        if not a_b:
            a = jnp.broadcast_to(a, (axis_size,) + a.shape)
        if not b_b:
            b = jnp.broadcast_to(b, (axis_size,) + b.shape)
        shape = a.shape
        outs = pav(a.reshape((-1,) + shape[-1:]), b.reshape((-1,) + shape[-1:]))
        return tuple(o.reshape(shape) for o in outs), (True,) * 4

    return pav


_pav_l2 = _make_pav("l2")
_pav_kl = _make_pav("kl")


# --------------------------------------------------------------------------------------------
# Block reductions (O(n) segment sums) and the isotonic residuals with exact derivatives
# --------------------------------------------------------------------------------------------


def _flat_index(idx: jax.Array, width: int) -> jax.Array:
    return (idx + lax.broadcasted_iota(jnp.int32, idx.shape, 0) * width).reshape(-1)


def _take_rows(v: jax.Array, idx: jax.Array) -> jax.Array:
    """``take_along_axis(v, idx, -1)`` for ``[rows, m]`` ``v`` as one flat gather."""
    return v.reshape(-1)[_flat_index(idx, v.shape[1])].reshape(idx.shape)


def _block_sum(v: jax.Array, ids: jax.Array) -> jax.Array:
    """Sum of ``v`` over each coordinate's block, broadcast back to the coordinates."""
    rows, n = v.shape
    g = _flat_index(ids, n)
    s = jax.ops.segment_sum(v.reshape(-1), g, num_segments=rows * n)
    return s[g].reshape(rows, n)


def _block_log_softmax(v: jax.Array, ids: jax.Array, ref: jax.Array) -> jax.Array:
    """``v - log sum_B exp(v)`` per coordinate (the log of its softmax weight in its block).

    ``ref`` is the solver's ``logsumexp`` of the block (a constant here: the result does not
    depend on it). ``v - ref`` is formed first, exactly when the two are close, so equal values
    get ``-log |B|`` however large they are, and ``exp`` cannot overflow. A block of ``-inf``
    values gives NaN; callers mask it (such blocks are singletons)."""
    m = jnp.where(jnp.isfinite(ref), ref, jnp.zeros_like(ref))
    d = v - m
    tot = _block_sum(jnp.exp(d), ids)
    return d - jnp.log(jnp.where(tot > 0, tot, jnp.ones_like(tot)))


def _residual_l2(y: jax.Array, ids: jax.Array, ref: jax.Array, single: jax.Array,
                 cnt: jax.Array) -> jax.Array:
    # ``y - v`` = ``d - mean_B(d)`` for ``d = y - ref`` and any constant ``ref`` per block: with
    # the solver's block mean as ``ref`` the deviations are small and exact (no cancellation of
    # large, nearly equal values; ties give exactly 0).
    d = y - ref
    return jnp.where(single, jnp.zeros_like(y), d - _block_sum(d, ids) / cnt)


def _residual_kl(s: jax.Array, lw: jax.Array, ids: jax.Array, ref_s: jax.Array,
                 ref_w: jax.Array, single: jax.Array):
    log_ps = _block_log_softmax(s, ids, ref_s)
    log_pw = _block_log_softmax(lw, ids, ref_w)
    r = jnp.where(single, jnp.zeros_like(s), log_ps - log_pw)
    return r, log_ps, log_pw


@jax.custom_jvp
def _iso_residual_l2(y: jax.Array) -> jax.Array:
    """``y - v`` with ``v`` the non-increasing least-squares fit of each row of ``y``
    (exactly 0 on blocks of one coordinate)."""
    ids, ba, bb, cnt = _pav_l2(lax.stop_gradient(y), jnp.ones_like(y))
    return _residual_l2(y, ids, ba / bb, cnt == 1, cnt.astype(y.dtype))


@_iso_residual_l2.defjvp
def _iso_residual_l2_jvp(primals, tangents):
    # The rule is written with differentiable segment sums over a block structure that is
    # locally constant, so it can itself be differentiated: higher derivatives are exact too.
    (y,), (dy,) = primals, tangents
    ids, ba, bb, cnt = _pav_l2(lax.stop_gradient(y), jnp.ones_like(y))
    single = cnt == 1
    cnt = cnt.astype(y.dtype)
    r = _residual_l2(y, ids, ba / bb, single, cnt)
    dr = jnp.where(single, jnp.zeros_like(dy), dy - _block_sum(dy, ids) / cnt)
    return r, dr


@jax.custom_jvp
def _iso_residual_kl(s: jax.Array, lw: jax.Array) -> jax.Array:
    """``s - lw - v`` with ``v`` the non-increasing entropic fit (block value
    ``logsumexp_B(s) - logsumexp_B(lw)``); exactly 0 on blocks of one coordinate."""
    ids, ls, lsw, cnt = _pav_kl(lax.stop_gradient(s), lax.stop_gradient(lw))
    return _residual_kl(s, lw, ids, ls, lsw, cnt == 1)[0]


@_iso_residual_kl.defjvp
def _iso_residual_kl_jvp(primals, tangents):
    (s, lw), (ds, dlw) = primals, tangents
    ids, ls, lsw, cnt = _pav_kl(lax.stop_gradient(s), lax.stop_gradient(lw))
    single = cnt == 1
    r, log_ps, log_pw = _residual_kl(s, lw, ids, ls, lsw, single)
    zero = jnp.zeros_like(s)
    ps = jnp.where(single, zero, jnp.exp(log_ps))  # softmax of s within the block
    pw = jnp.where(single, zero, jnp.exp(log_pw))  # softmax of lw within the block
    dv = _block_sum(ps * ds, ids) - _block_sum(pw * dlw, ids)
    dr = jnp.where(single, zero, ds - dlw - dv)
    return r, dr


# --------------------------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------------------------


def _compute_dtype(dtype):
    """Half precision is computed in float32 (PAV sums need the range); others as given."""
    if jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return jnp.dtype(dtype)


def _strength(fn: str, value: Any, dtype) -> jax.Array:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: 'regularization_strength' must be a positive float; got {value!r}.")
    _checks.check_real(fn, "regularization_strength", value)
    eps = jnp.asarray(value)
    if eps.ndim != 0:
        raise ValueError(
            f"{fn}: 'regularization_strength' must be a scalar; got shape {tuple(eps.shape)}. "
            "Use jax.vmap for one strength per row."
        )
    if not _checks.is_traced(eps):
        v = float(eps)
        if not (np.isfinite(v) and v > 0):
            raise ValueError(
                f"{fn}: 'regularization_strength' must be a positive finite number; got {v!r}. "
                "Small values approach the hard sort/rank, large values the mean."
            )
    return eps.astype(dtype)


def _prepare(fn: str, x: Any, axis: Any, regularization: str, strength: Any):
    _checks.check_option(fn, "regularization", regularization, REGULARIZATIONS)
    x = _checks.as_float_array(fn, "x", x)
    if x.ndim == 0:
        raise ValueError(f"{fn}: 'x' must have at least one dimension; got a scalar. Use x[None].")
    axis = _checks.check_axis(fn, "axis", axis, x.ndim)
    out_dtype = x.dtype
    dt = _compute_dtype(out_dtype)
    eps = _strength(fn, strength, dt)
    return x.astype(dt), axis, eps, out_dtype


def _rows(x: jax.Array, axis: int) -> tuple[jax.Array, tuple[int, ...]]:
    """Move ``axis`` last and flatten the rest: ``([rows, n], moved shape)``."""
    x = jnp.moveaxis(x, axis, -1)
    return x.reshape((-1, x.shape[-1])), x.shape


def _descending_weights(n: int, dtype) -> jax.Array:
    return jnp.arange(n, 0, -1, dtype=dtype)[None, :]  # rho = (n, ..., 1)


def _middle(v: jax.Array) -> jax.Array:
    """A finite reference value per row (the middle one of a sorted row), without gradient."""
    m = lax.stop_gradient(v[:, v.shape[1] // 2 :][:, :1])
    return jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))


def _propagate_nan(x2: jax.Array, out: jax.Array, *, nonfinite: bool = False) -> jax.Array:
    bad = jnp.isnan(x2) if not nonfinite else jnp.logical_not(jnp.isfinite(x2))
    return jnp.where(jnp.any(bad, axis=-1, keepdims=True), jnp.full_like(out, jnp.nan), out)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("regularization",))
def _soft_rank_rows(x2: jax.Array, eps: jax.Array, regularization: str) -> jax.Array:
    rows, n = x2.shape
    dt = x2.dtype
    perm = argsort(x2, axis=-1, stable=False)[:, ::-1]  # decreasing order; ties are pooled
    flat_perm = _flat_index(perm, n)
    xs = x2.reshape(-1)[flat_perm].reshape(rows, n)
    # The projection is unchanged by a common shift of x: subtracting a middle value first keeps
    # x / eps small, so data far from 0 (say 1e4 +- 1 in float32) lose no precision.
    s = (xs - _middle(xs)) / eps
    w = jnp.broadcast_to(_descending_weights(n, dt), (rows, n))
    if regularization == "l2":
        mu = w + _iso_residual_l2(s - w)
    else:
        lw = jnp.log(w)
        mu = jnp.exp(lw + _iso_residual_kl(s, lw))
    # back to input order: a scatter by the permutation (its transpose, for the VJP, a gather)
    out = jnp.zeros((rows * n,), dt).at[flat_perm].set(mu.reshape(-1), unique_indices=True)
    return _propagate_nan(x2, out.reshape(rows, n))


def soft_rank(
    x: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    regularization: str = "l2",
    axis: int = -1,
    descending: bool = False,
) -> jax.Array:
    r"""Differentiable ranks of ``x`` along ``axis`` (1 = smallest), in O(n log n).

    The projection of :math:`x/\varepsilon` onto the permutahedron of :math:`(1, \dots, n)`
    (see the module docstring). Each output is a convex combination of the ranks; the outputs
    sum to :math:`n(n+1)/2` and keep the order of ``x``. Neighbours in sorted order are pooled
    where their gap is below about :math:`\varepsilon` (``regularization_strength``), so once
    :math:`\varepsilon` is below the smallest gap between distinct values the result equals
    :func:`jaxstats.rankdata` (ties get the average rank); as it grows every rank tends to
    :math:`(n+1)/2`. :math:`\varepsilon` is in the units of ``x``.

    Args:
      x: real array; ints and bools are ranked as the default float dtype.
      regularization_strength: positive scalar :math:`\varepsilon` (a float or a traced
        scalar; gradients with respect to it are exact). Checked only when concrete.
      regularization: ``"l2"`` (Euclidean projection; piecewise linear in ``x``) or ``"kl"``
        (entropic projection; smoother).
      axis: static axis to rank along; every other axis is batched.
      descending: rank 1 = largest instead.

    Returns:
      Soft ranks in ``[1, n]``, the shape of ``x``, float dtype of ``x`` (default float for
      int input).

    Raises:
      TypeError: if ``x`` is not real or ``axis`` is not an int.
      ValueError: for a scalar ``x``, a bad ``axis``, an unknown ``regularization`` or a
        non-positive/non-scalar ``regularization_strength``.

    NaN and inf:
      A NaN makes its whole slice NaN. ``±inf`` entries take the extreme hard ranks (several
      equal infinities are ranked by position, not averaged); the finite entries are soft-ranked
      among themselves in between.

    Examples:
      >>> import jax.numpy as jnp
      >>> soft_rank(jnp.array([3.0, 1.0, 2.0]), regularization_strength=0.1)
      Array([3., 1., 2.], dtype=float32)
      >>> soft_rank(jnp.array([3.0, 1.0, 2.0]), regularization_strength=2.0)
      Array([2.5, 1.5, 2. ], dtype=float32)

    References:
      Blondel et al., "Fast Differentiable Sorting and Ranking", ICML 2020.
    """
    fn = "soft_rank"
    if not isinstance(descending, (bool, np.bool_)):
        raise TypeError(f"{fn}: 'descending' must be a Python bool; got {descending!r}.")
    x, axis, eps, out_dtype = _prepare(fn, x, axis, regularization, regularization_strength)
    if x.shape[axis] == 0:
        return x.astype(out_dtype)
    x2, moved = _rows(x, axis)
    if descending:
        x2 = -x2
    out = _soft_rank_rows(x2, eps, regularization)
    return jnp.moveaxis(out.reshape(moved), -1, axis).astype(out_dtype)


@functools.partial(jax.jit, static_argnames=("regularization",))
def _soft_sort_rows(x2: jax.Array, eps: jax.Array, regularization: str) -> jax.Array:
    """Ascending soft sort of every row."""
    rows, n = x2.shape
    dt = x2.dtype
    xs, _ = sort_and_argsort(x2, axis=-1, stable=False)  # values carry the permutation grad
    w = xs[:, ::-1]  # decreasing values
    wc = w - _middle(w)  # the residual is shift invariant; centring keeps it accurate
    s = jnp.broadcast_to(_descending_weights(n, dt), (rows, n)) / eps
    if regularization == "l2":
        mu = w + _iso_residual_l2(s - wc)
    else:
        mu = w + _iso_residual_kl(s, wc)  # log of the projection onto P(exp(x))
    return _propagate_nan(x2, mu[:, ::-1], nonfinite=True)


def soft_sort(
    x: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    regularization: str = "l2",
    axis: int = -1,
    descending: bool = False,
) -> jax.Array:
    r"""Differentiable sort of ``x`` along ``axis`` (ascending), in O(n log n).

    ``"l2"``: the projection of :math:`\rho/\varepsilon` (:math:`\rho = (n, \dots, 1)`) onto
    the permutahedron of ``x``, read in ascending order. Its outputs are averages of blocks of
    the sorted values (each output is a convex combination of the sorted values) and sum to
    ``sum(x)``. ``"kl"``: the log of the entropic projection onto the permutahedron of
    :math:`e^{x}`, so any real ``x`` is allowed and ``logsumexp`` is preserved.

    For small ``regularization_strength`` it equals :func:`jaxstats.sort`; as it grows the
    ``"l2"`` outputs tend to ``mean(x)`` and the ``"kl"`` outputs to
    :math:`\log(\frac1n\sum_i e^{x_i})`. The output is always sorted.

    Args:
      x: real array; ints and bools are sorted as the default float dtype.
      regularization_strength: positive scalar :math:`\varepsilon`. Sorted neighbours stay
        apart while their gap is below :math:`1/\varepsilon` and are averaged where it exceeds
        it (the projection of :math:`\rho/\varepsilon`, whose steps are
        :math:`1/\varepsilon`): so the sort is exact for
        :math:`\varepsilon \lesssim 1/(\max x - \min x)` and smooth beyond. Traced scalars are
        allowed (exact gradients).
      regularization: ``"l2"`` or ``"kl"``.
      axis: static axis to sort along; every other axis is batched.
      descending: return the largest first.

    Returns:
      The soft-sorted array, the shape of ``x``, float dtype of ``x``.

    Raises:
      TypeError: if ``x`` is not real or ``axis`` is not an int.
      ValueError: for a scalar ``x``, a bad ``axis``, an unknown ``regularization`` or a
        non-positive/non-scalar ``regularization_strength``.

    NaN and inf:
      A NaN or ``±inf`` anywhere in a slice makes that slice NaN (the projection onto the
      permutahedron of an unbounded vector is not defined).

    Examples:
      >>> import jax.numpy as jnp
      >>> soft_sort(jnp.array([3.0, 1.0, 2.0]), regularization_strength=0.1)
      Array([1., 2., 3.], dtype=float32)
      >>> soft_sort(jnp.array([3.0, 1.0, 2.0]), regularization_strength=2.0)
      Array([1.5, 2. , 2.5], dtype=float32)

    References:
      Blondel et al., "Fast Differentiable Sorting and Ranking", ICML 2020.
    """
    fn = "soft_sort"
    if not isinstance(descending, (bool, np.bool_)):
        raise TypeError(f"{fn}: 'descending' must be a Python bool; got {descending!r}.")
    x, axis, eps, out_dtype = _prepare(fn, x, axis, regularization, regularization_strength)
    if x.shape[axis] == 0:
        return x.astype(out_dtype)
    x2, moved = _rows(x, axis)
    out = _soft_sort_rows(x2, eps, regularization)
    if descending:
        out = out[:, ::-1]
    return jnp.moveaxis(out.reshape(moved), -1, axis).astype(out_dtype)


def soft_quantile(
    x: ArrayLike,
    q: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    regularization: str = "l2",
    axis: int | None = -1,
    method: str = "linear",
    keepdims: bool = False,
) -> jax.Array:
    r"""Differentiable quantiles: numpy's quantile rule applied to :func:`soft_sort`.

    Every output is smooth in ``x`` (and piecewise linear in ``q`` for ``"linear"``); for
    small ``regularization_strength`` it equals :func:`jaxstats.quantile` with the same
    ``method``, and as it grows it tends to the mean (``"l2"``) or log-mean-exp (``"kl"``).

    Args:
      x: real array.
      q: probabilities in [0, 1], scalar or any shape.
      regularization_strength: as in :func:`soft_sort`.
      regularization: ``"l2"`` or ``"kl"``.
      axis: static int axis (default: last), or ``None`` to use the flattened array.
      method: one of numpy's 13 quantile methods (see :func:`jaxstats.quantile`).
      keepdims: keep the reduced axis with size 1.

    Returns:
      Array of shape ``q.shape + reduced shape`` (numpy's layout), float dtype of ``x``.

    Raises:
      TypeError: if ``x`` or ``q`` is not real.
      ValueError: as :func:`soft_sort`, for an unknown ``method``, or an empty axis.

    NaN and inf:
      A NaN or ``±inf`` in a slice gives NaN; ``q`` outside [0, 1] is clipped to the extremes.

    Examples:
      >>> import jax.numpy as jnp
      >>> soft_quantile(jnp.array([4.0, 1.0, 3.0, 2.0]), 0.5, regularization_strength=0.1)
      Array(2.5, dtype=float32)
    """
    fn = "soft_quantile"
    _checks.check_option(fn, "method", method, QUANTILE_METHODS)
    xa = _checks.as_float_array(fn, "x", x)
    if axis is None:
        xa = xa.reshape(-1)
        axis_ = 0
    else:
        if xa.ndim == 0:
            raise ValueError(f"{fn}: 'x' must have at least one dimension; got a scalar.")
        axis_ = axis
    x_, axis_, eps, out_dtype = _prepare(fn, xa, axis_, regularization, regularization_strength)
    qa = _checks.as_float_array(fn, "q", q).astype(x_.dtype)
    n = x_.shape[axis_]
    if n == 0:
        raise ValueError(f"{fn}: cannot take quantiles over an empty axis (length 0).")
    x2, moved = _rows(x_, axis_)
    s = _soft_sort_rows(x2, eps, regularization).reshape(moved)
    out = _quantile_sorted(s, qa, method)
    if keepdims:
        shape = list(xa.shape) if axis is not None else [1] * max(jnp.ndim(x), 1)
        if axis is not None:
            shape[axis_] = 1
        out = out.reshape(qa.shape + tuple(shape))
    return out.astype(out_dtype)


def soft_percentile_of_population(
    a: ArrayLike,
    *,
    axis: int = 0,
    kind: str = "rank",
    regularization_strength: ArrayLike = 1.0,
    regularization: str = "l2",
) -> jax.Array:
    r"""Differentiable percentile of every element among all elements along ``axis``.

    The soft counterpart of :func:`jaxstats.percentile_of_population`, from one
    :func:`soft_rank`: ``kind="rank"`` gives :math:`100\,r/n` and ``kind="mean"``
    :math:`100\,(r - \tfrac12)/n`, which for small ``regularization_strength`` equal the hard
    ``"rank"`` and ``"mean"`` percentiles exactly, ties included. (The hard ``"weak"`` and
    ``"strict"`` kinds count ties one-sidedly, which a tie-averaging soft rank cannot.)

    Args:
      a: real array; ``axis`` is the agents axis (default 0, as in ``[agents, features]``).
      axis: static agents axis; every other axis is batched (one population per feature).
      kind: ``"rank"`` or ``"mean"``.
      regularization_strength: as in :func:`soft_rank` (in units of ``a``).
      regularization: ``"l2"`` or ``"kl"``.

    Returns:
      Percentiles in ``(0, 100]``, the shape of ``a``; float dtype.

    Raises:
      TypeError, ValueError: as :func:`soft_rank`, or for an unknown ``kind``.

    NaN and inf:
      As :func:`soft_rank`: a NaN makes its population NaN; ``±inf`` are the extremes.

    Examples:
      >>> import jax.numpy as jnp
      >>> soft_percentile_of_population(jnp.array([1.0, 2.0, 2.0, 4.0]),
      ...                               regularization_strength=0.01)
      Array([ 25. ,  62.5,  62.5, 100. ], dtype=float32)
    """
    fn = "soft_percentile_of_population"
    _checks.check_option(fn, "kind", kind, SOFT_PERCENTILE_KINDS)
    r = soft_rank(
        a, regularization_strength=regularization_strength, regularization=regularization,
        axis=axis,
    )
    if r.ndim == 0 or r.shape[axis] == 0:
        return r
    n = r.shape[axis]
    if kind == "mean":
        r = r - 0.5
    return r * (100.0 / n)
