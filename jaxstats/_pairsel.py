"""Exact order statistics of the O(n^2) implicit pair values of a sorted sample, in O(n log n).

The robust estimators of :mod:`jaxstats.pairwise` are order statistics of a set of ``~n^2/2``
pair values that is never materialised:

* Hodges-Lehmann: the median of the Walsh averages ``(x_i + x_j) / 2``, ``i <= j``;
* Qn: the ``k``-th smallest distance ``|x_i - x_j|``, ``i < j``;
* Sn: a low median over ``i`` of the high median over ``j`` of ``|x_i - x_j|``.

For a sorted sample ``a`` the pair values of row ``i`` (``j`` from the row start to ``n - 1``)
are non-decreasing in ``j``, so the number of row-``i`` pairs ``<= t`` (a *split*) is found by a
vectorised binary search over all rows at once: ``O(n log n)`` per threshold and O(n) memory.

Selection with static shapes (:func:`select_pair`) keeps, per row, a half-open column bracket
``[L_i, R_i)`` of *candidates*; every pair left of the bracket is known to rank below the target,
every pair right of it above. Each round (Floyd-Rivest style)

1. takes a systematic sample of ``s = 4`` candidates per row (a static ``4 n`` values) at
   fractions ``(t + u_i)/s`` of the row's bracket, with equidistributed per-row phases
   ``u_i = frac(i / golden ratio)``; a sample stands for ``w_i / s`` candidates, so sorting the
   sample (:mod:`jaxstats._sort` kernel) and accumulating weights estimates every sample
   value's rank without bias. Two sample values ``p1 <= p2`` are picked 3 standard errors
   below and above the target rank;
2. splits every row at ``<= p1`` and ``< p2`` (binary searches inside the brackets, one loop)
   and keeps whichever splits are valid bounds. Both pivots are candidate values, so each
   round removes at least one candidate, and a round that removes none proves that all
   candidates are equal (the answer is then ``p1``).

When at most ``2 n`` candidates are left they are enumerated into a buffer of that static size,
sorted, and the target is read off. Two rounds are typical for ``n`` from ``10^3`` to ``10^6``
(measured); the loop is a ``lax.while_loop`` and its exactness never depends on the sampling.
Pair values are computed by one function everywhere, so comparisons are consistent and the
result is the exact floating-point order statistic of the values a naive implementation would
compute.

Counts reach ``n^2/2 > 2^31``: totals are kept exactly as two int32 limbs (``hi * 2^15 + lo``),
which works without x64 for ``n < 2^22``.

On CPU, :func:`select_pair` and :func:`select_pair_and_next` run the same kind of selection as
one C++ call (``jaxstats/_native/select.cc``): a row's split at a threshold moves monotonically
with the row, so a two-pointer sweep counts the pairs below it in O(n) instead of O(n log n),
and a stratified random sample of ``~n/4`` candidates picks the pivots (2-3 rounds, measured
2.6x faster than this XLA loop at ``n = 10^4``). The result is the same order statistic, bit
for bit; this XLA loop serves other platforms and ``JAXSTATS_NATIVE=0``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _native
from ._sort import argsort, sort

__all__ = [
    "MAX_N",
    "SCAN_MIN",
    "Rank",
    "as_limbs",
    "cumsum",
    "cummax",
    "exact_total",
    "limbs_ge",
    "limbs_to_float",
    "pair_value",
    "row_phases",
    "select_pair",
    "select_pair_and_next",
    "next_pair_value",
    "sn_inner",
]

#: Largest sample size supported by the exact limb arithmetic of pair counts.
MAX_N = (1 << 22) - 1

_LIMB = 15
_LIMB_MASK = (1 << _LIMB) - 1
_BLOCK = 256  # rows per int32 partial sum: 256 * 2^22 = 2^30 < 2^31
# Below this many pair values every pair is enumerated and sorted once.
_ENUMERATE_ALL = 1 << 15

PAIR_KINDS = ("walsh", "absdiff")


# ----------------------------------------------------------------------------------------------
# Scans. XLA:CPU lowers lax.cumsum/cummax to reduce_window: cheap to compile, but slow at scale
# (measured 15-27 ns per element at 10^6). An associative scan runs 5-10x faster there but costs
# ~0.3 s of compile time per scan, so it is used only for long rows (compile time dominates the
# test suite, run time the benchmarks). The barrier keeps XLA from fusing the producer of the
# input into every level of the associative scan (which recomputes it log2(n) times).
# ----------------------------------------------------------------------------------------------

SCAN_MIN = 4096  # rows at least this long use the associative scan


def cumsum(x: jax.Array) -> jax.Array:
    """Inclusive cumulative sum along the last axis."""
    if x.shape[-1] < SCAN_MIN:
        return jnp.cumsum(x, axis=-1, dtype=x.dtype)
    return lax.associative_scan(jnp.add, lax.optimization_barrier(x), axis=x.ndim - 1)


def cummax(x: jax.Array) -> jax.Array:
    """Inclusive cumulative maximum along the last axis."""
    if x.shape[-1] < SCAN_MIN:
        return lax.cummax(x, axis=x.ndim - 1)
    return lax.associative_scan(jnp.maximum, lax.optimization_barrier(x), axis=x.ndim - 1)


# ----------------------------------------------------------------------------------------------
# Exact totals of int32 counts as two int32 limbs (value = hi * 2^15 + lo, 0 <= lo < 2^15).
# ----------------------------------------------------------------------------------------------


def _normalize(hi, lo):
    return hi + (lo >> _LIMB), lo & _LIMB_MASK


def exact_total(c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact sum of a 1-D array of non-negative int32 counts, each ``< 2^22``, as limbs."""
    n = c.shape[0]
    pad = (-n) % _BLOCK
    i32 = jnp.int32  # explicit: under x64 integer sums would widen to int64
    blocks = jnp.sum(jnp.pad(c, (0, pad)).reshape(-1, _BLOCK), axis=1, dtype=i32)  # < 2^30
    hi = jnp.sum(blocks >> _LIMB, dtype=i32)
    lo = jnp.sum(blocks & _LIMB_MASK, dtype=i32)
    return _normalize(hi, lo)


def limbs_add(a, b):
    return _normalize(a[0] + b[0], a[1] + b[1])


Rank = int | tuple[jax.Array, jax.Array]  # a static int, or traced limbs (hi, lo)


def as_limbs(k: Rank) -> tuple[jax.Array, jax.Array]:
    """Limbs of a static non-negative int (or limbs unchanged)."""
    if isinstance(k, int):
        return _static_limbs(k)
    return k


def limbs_ge(t, k: Rank) -> jax.Array:
    """``t >= k`` for limbs ``t`` and a static int or limbs ``k``."""
    kh, kl = as_limbs(k)
    return (t[0] > kh) | ((t[0] == kh) & (t[1] >= kl))


def limbs_to_float(t, dtype, offset: int = 0) -> jax.Array:
    """``float(t - offset)`` in ``dtype`` (two roundings at most)."""
    oh, ol = offset >> _LIMB, offset & _LIMB_MASK
    return (t[0] - oh).astype(dtype) * float(1 << _LIMB) + (t[1] - ol).astype(dtype)


def _limbs_to_int(t) -> jax.Array:
    """``int32(t)``; only meaningful when the value is below 2^31."""
    return t[0] * (1 << _LIMB) + t[1]


def _static_limbs(k: int):
    return (jnp.int32(k >> _LIMB), jnp.int32(k & _LIMB_MASK))


# ----------------------------------------------------------------------------------------------
# Pair values. One definition used by sampling, searching and enumeration, so every comparison
# sees bit-identical values.
# ----------------------------------------------------------------------------------------------


def pair_value(kind: str, ai: jax.Array, aj: jax.Array) -> jax.Array:
    """Value of the pair ``(a_i, a_j)`` with ``a_i <= a_j``.

    ``"walsh"``: ``a_i/2 + a_j/2`` (equal to ``(a_i + a_j)/2`` correctly rounded, without the
    overflow of ``a_i + a_j``; halving is exact outside the subnormal range, so an FMA gives
    the same result). ``"absdiff"``: ``a_j - a_i``, and ``0`` for equal values (so two equal
    infinities are at distance 0 rather than NaN).
    """
    if kind == "walsh":
        return ai * 0.5 + aj * 0.5
    return jnp.where(ai == aj, jnp.zeros_like(ai), aj - ai)


def _row_start(kind: str, n: int) -> jax.Array:
    i = jnp.arange(n, dtype=jnp.int32)
    return i if kind == "walsh" else jnp.minimum(i + 1, n)


def _n_pairs(kind: str, n: int) -> int:
    return n * (n + 1) // 2 if kind == "walsh" else n * (n - 1) // 2


def _bit_length(x: jax.Array) -> jax.Array:
    """Number of bits of a non-negative int32 (0 for 0)."""
    return 32 - lax.clz(x)


def _split(kind, a, lo, hi, t, strict):
    """Per row ``i``: the first column ``j`` in ``[lo_i, hi_i]`` whose pair value is ``> t``
    (``>= t`` if ``strict``), or ``hi_i``. Binary search with ``bit_length(max width)`` steps."""
    return _split2(kind, a, lo, hi, t, t, strict, strict)[0]


def _split2(kind, a, lo, hi, t1, t2, strict1, strict2):
    """Two independent :func:`_split` searches sharing one loop (one compiled body)."""
    n = a.shape[0]
    steps = _bit_length(jnp.max(hi - lo))

    def half(lo_, hi_, t, strict):
        mid = (lo_ + hi_) >> 1
        v = pair_value(kind, a, a[jnp.minimum(mid, n - 1)])
        go = (v < t) if strict else (v <= t)
        active = lo_ < hi_
        return jnp.where(active & go, mid + 1, lo_), jnp.where(active & ~go, mid, hi_)

    def body(_, carry):
        lo1, hi1, lo2, hi2 = carry
        lo1, hi1 = half(lo1, hi1, t1, strict1)
        lo2, hi2 = half(lo2, hi2, t2, strict2)
        return lo1, hi1, lo2, hi2

    lo1, _, lo2, _ = lax.fori_loop(0, steps, body, (lo, hi, lo, hi))
    return lo1, lo2


def _slot_rows(starts, counts, size):
    """Row owning each of ``size`` slots, rows owning ``[starts_i, starts_i + counts_i)``."""
    n = starts.shape[0]
    rows = jnp.arange(n, dtype=jnp.int32)
    owner = jnp.zeros((size,), jnp.int32).at[jnp.where(counts > 0, starts, size)].max(
        rows, mode="drop"
    )
    return cummax(owner)


def _enumerate(kind, a, L, R, size):
    """Values of all candidates (row-major), padded with NaN to ``size`` slots."""
    w = R - L
    starts = cumsum(w) - w  # exclusive; exact while the total is below 2^31
    owner = _slot_rows(starts, w, size)
    s = jnp.arange(size, dtype=jnp.int32)
    t = s - starts[owner]
    valid = (t >= 0) & (t < w[owner])
    col = jnp.clip(L[owner] + t, 0, a.shape[0] - 1)
    vals = pair_value(kind, a[owner], a[col])
    return jnp.where(valid, vals, jnp.nan)


def row_phases(n: int) -> jax.Array:
    """``frac(i / golden ratio)`` for ``i < n`` in float32, exact (uint32 Fibonacci hashing)."""
    golden = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(2654435769)  # wraps mod 2^32
    return (golden >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def _limbs_sub(a, b):
    """``a - b`` for limbs with ``a >= b``."""
    hi, lo = a[0] - b[0], a[1] - b[1]
    borrow = lo < 0
    return hi - borrow.astype(jnp.int32), jnp.where(borrow, lo + (1 << _LIMB), lo)


def _limbs_max(a, b):
    a_ge = (a[0] > b[0]) | ((a[0] == b[0]) & (a[1] >= b[1]))
    return jnp.where(a_ge, a[0], b[0]), jnp.where(a_ge, a[1], b[1])


def _limbs_where(c, a, b):
    return jnp.where(c, a[0], b[0]), jnp.where(c, a[1], b[1])


def _limbs_min(a, b):
    a_le = (a[0] < b[0]) | ((a[0] == b[0]) & (a[1] <= b[1]))
    return jnp.where(a_le, a[0], b[0]), jnp.where(a_le, a[1], b[1])


def select_pair(
    kind: str, a: jax.Array, k: Rank, *, per_row: int = 4, enumerate_all: int = _ENUMERATE_ALL
) -> jax.Array:
    """Exact ``k``-th smallest (1-based) pair value of the sorted, NaN-free 1-D ``a``.

    ``kind`` is ``"walsh"`` (pairs ``i <= j``) or ``"absdiff"`` (pairs ``i < j``); see
    :func:`pair_value`. ``k`` is a static int or traced limbs ``(hi, lo)`` (value
    ``hi * 2^15 + lo``, so one compiled program serves every rank); it must satisfy
    ``1 <= k <= number of pairs`` (checked for static ``k`` only). ``per_row`` (samples per
    row and round) and ``enumerate_all`` (pair count below which all pairs are sorted
    directly) tune speed only; the result is exact for any values.
    """
    if _use_native(kind, a):
        _check_select_args(kind, a.shape[0], k)
        return _with_pair_derivative(kind, a, _native_select(kind, a, k, False)[0])
    return select_pair_rounds(kind, a, k, per_row=per_row, enumerate_all=enumerate_all)[0]


def select_pair_and_next(kind: str, a: jax.Array, k: Rank) -> tuple[jax.Array, jax.Array]:
    """``(select_pair(kind, a, k), next_pair_value(kind, a, ., k))``: the ``k``-th and the
    ``(k+1)``-th smallest pair values (``+inf`` for the latter when ``k`` is the last pair).
    Both carry the derivative of a pair that attains them."""
    _check_select_args(kind, a.shape[0], k)
    if _use_native(kind, a):
        v, nxt = _native_select(kind, a, k, True)
        return _with_pair_derivative(kind, a, v), _with_pair_derivative(kind, a, nxt)
    n_pairs = _n_pairs(kind, a.shape[0])
    if n_pairs <= _ENUMERATE_ALL:  # both from one sorted enumeration
        vals = _all_pairs_sorted(kind, a)
        i = jnp.clip(_limbs_to_int(as_limbs(k)) - 1, 0, n_pairs - 1)
        after = vals[jnp.minimum(i + 1, n_pairs - 1)]
        return vals[i], jnp.where(i + 1 < n_pairs, after, jnp.asarray(jnp.inf, a.dtype))
    v = select_pair(kind, a, k)
    return v, next_pair_value(kind, a, v, k)


# ----------------------------------------------------------------------------------------------
# Native CPU selection (jaxstats/_native/select.cc): the same exact order statistic, found with
# O(n) two-pointer counting sweeps and a sampled pivot pair per round (typically 2-3 rounds) in
# one C++ call instead of an XLA while loop of sorts and binary searches. Used on CPU when the
# kernels are available; other platforms, ``JAXSTATS_NATIVE=0`` and a missing compiler use the
# XLA selection below. The kernel sees ``stop_gradient`` data: derivatives come from
# :func:`_with_pair_derivative`, as for the XLA path.
# ----------------------------------------------------------------------------------------------

#: Internal switch (tests, benchmarks): False routes the selection to the XLA loop. Read at
#: trace time (``jax.clear_caches()`` after changing it).
_USE_NATIVE = True
_KIND_CODES = {"walsh": np.int64(0), "absdiff": np.int64(1)}

_cpu_only = _native.cpu_only  # a module attribute, so tests can pretend a GPU is present


#: Below this many pairs the XLA path (all pairs enumerated and sorted, batches of rows by the
#: sorting-network kernel) is faster than the per-row C++ selection (measured on batches of
#: rows with n = 8..128: e.g. Qn at n = 32, 2.7 vs 5.5 ms for 2,000 rows; at n = 128, 8,128
#: pairs, the kernel is 3.4x faster).
_NATIVE_MIN_PAIRS = 4096


def _use_native(kind: str, a: jax.Array) -> bool:
    return _select_path(a.dtype) == "native" and _n_pairs(kind, a.shape[0]) > _NATIVE_MIN_PAIRS


def _all_pairs_sorted(kind: str, a: jax.Array) -> jax.Array:
    """Every pair value of ``a``, sorted (for few pairs)."""
    ii, jj = np.triu_indices(a.shape[0], 0 if kind == "walsh" else 1)
    return sort(pair_value(kind, a[ii], a[jj]))


def _select_path(dtype) -> str:
    """``"native"`` when the C++ selection can take ``dtype`` on CPU, else ``"xla"`` (static)."""
    return _native.float_path(dtype, _USE_NATIVE)


def _check_select_args(kind: str, n: int, k: Rank) -> None:
    if kind not in PAIR_KINDS:
        raise ValueError(f"select_pair: kind must be one of {PAIR_KINDS}; got {kind!r}.")
    n_pairs = _n_pairs(kind, n)
    if isinstance(k, int) and not 1 <= k <= n_pairs:
        raise ValueError(f"select_pair: k={k} out of range [1, {n_pairs}] for n={n}.")
    if n > MAX_N:
        raise ValueError(f"select_pair: n={n} exceeds the supported maximum {MAX_N}.")


def _native_select(kind: str, a: jax.Array, k: Rank, with_next: bool):
    """``(k-th, (k+1)-th or k-th)`` pair values of the sorted 1-D ``a`` from the C++ kernel on
    CPU (the XLA selection elsewhere)."""
    a = lax.stop_gradient(a)
    k_hi, k_lo = as_limbs(k)

    def native(a, k_hi, k_lo):
        out = jax.ShapeDtypeStruct((), a.dtype)
        call = jax.ffi.ffi_call("JaxstatsSelectPair", (out, out), vmap_method="broadcast_all")
        return tuple(call(a, k_hi, k_lo, kind=_KIND_CODES[kind], with_next=np.int64(with_next)))

    def xla(a, k_hi, k_lo):
        v = select_pair_rounds(kind, a, (k_hi, k_lo))[0]
        return v, (next_pair_value(kind, a, v, (k_hi, k_lo)) if with_next else v)

    return _native.on_cpu(native, xla, a, k_hi, k_lo, cpu_only=_cpu_only())


def select_pair_rounds(
    kind: str, a: jax.Array, k: Rank, *, per_row: int = 4, enumerate_all: int = _ENUMERATE_ALL
) -> tuple[jax.Array, jax.Array]:
    """``(select_pair(...), number of sampling rounds)``.

    The selected value is differentiable in ``a``: it carries the derivative of one pair that
    attains it (:func:`_with_pair_derivative`), as a sort does for tied order statistics.
    """
    n = a.shape[0]
    n_pairs = _n_pairs(kind, n)
    _check_select_args(kind, n, k)
    k = as_limbs(k)
    start = _row_start(kind, n)
    if n_pairs <= enumerate_all:
        vals = _all_pairs_sorted(kind, a)
        return vals[jnp.clip(_limbs_to_int(k) - 1, 0, n_pairs - 1)], jnp.int32(0)

    # The sampled selection is a while_loop, which reverse-mode autodiff cannot enter: it runs
    # on constant data, and the result gets the derivative of the pair that attains it.
    a_data = a
    a = lax.stop_gradient(a)
    s = int(per_row)
    # Static size of the final enumeration buffer. Two rounds typically leave 0.5-0.7 n
    # candidates (measured for n = 10^4..10^6), so 2 n rarely needs a third round while its
    # sort costs half that of the 4 n sample.
    cap = 2 * n
    dtype = a.dtype
    rows = jnp.arange(n, dtype=jnp.int32)
    # Sample t of row i sits at fraction (t + u_i)/s of the row's candidates. The per-row phase
    # u_i = frac(i / golden ratio) is equidistributed: with one common phase the rounding errors
    # of neighbouring rows (whose values cross a threshold at similar fractions) add up
    # coherently and bias the rank estimates by up to C / (2 s). The phase is computed exactly
    # in uint32 (Fibonacci hashing): in float32, i * 0.618... keeps only ~4 fractional bits at
    # i ~ 10^6, which puts 1/16 of all samples on their row's first candidate (measured: 600+
    # rounds instead of 2 at n = 10^6).
    phase = row_phases(n)
    offsets = (jnp.arange(s, dtype=jnp.float32)[None, :] + phase[:, None]) / s

    def cond(state):
        L, R, ell, cnt, done, ans, rounds = state
        return ~done & limbs_ge(cnt, cap + 1)

    def body(state):
        L, R, ell, cnt, done, ans, rounds = state
        w = R - L
        wf = w.astype(jnp.float32)
        # Systematic sample: s evenly spaced candidates per non-empty row, each standing for
        # w_i / s candidates (an unbiased count estimate over the phase); the estimated rank of
        # a sample value is the cumulative weight in sorted order.
        col = L[:, None] + (offsets * wf[:, None]).astype(jnp.int32)
        col = jnp.clip(jnp.minimum(col, R[:, None] - 1), 0, n - 1)
        vals = pair_value(kind, a[:, None], a[col])
        vals = jnp.where((w > 0)[:, None], vals, jnp.nan).reshape(-1)  # NaN sorts last
        weight = jnp.broadcast_to((wf / s)[:, None], (n, s)).reshape(-1)
        perm = argsort(vals, stable=False)
        sv = vals[perm]
        cw = cumsum(weight[perm])
        n_valid = s * jnp.sum(w > 0, dtype=jnp.int32)
        # Target rank among candidates, +- 3 standard errors of the systematic-sample estimate
        # (errors are at most w_i/s per row, roughly uniform and independent).
        target = limbs_to_float(_limbs_sub(k, ell), jnp.float32)
        half = 3.0 * jnp.sqrt(jnp.sum(jnp.square(wf / s)) / 3.0) + 1.0
        top = jnp.maximum(n_valid - 1, 0)
        q1 = jnp.minimum(jnp.sum(cw < target - half, dtype=jnp.int32), top)
        q2 = jnp.minimum(jnp.sum(cw < target + half, dtype=jnp.int32), top)
        p1, p2 = sv[q1], sv[q2]
        A, B = _split2(kind, a, L, R, p1, p2, False, True)  # pairs <= p1, pairs < p2
        a_tot = limbs_add(ell, exact_total(A - L))
        b_tot = limbs_add(ell, exact_total(B - L))
        a_up = limbs_ge(a_tot, k)  # the k-th is <= p1: A bounds from above, else from below
        b_up = limbs_ge(b_tot, k)  # the k-th is < p2
        new_L = jnp.maximum(L, jnp.maximum(jnp.where(a_up, L, A), jnp.where(b_up, L, B)))
        new_R = jnp.minimum(R, jnp.minimum(jnp.where(a_up, A, R), jnp.where(b_up, B, R)))
        # Splits at thresholds are nested, so the totals follow from the chosen ones.
        upper = limbs_add(ell, cnt)
        lower = ell
        lower = _limbs_max(lower, _limbs_where(a_up, lower, a_tot))
        lower = _limbs_max(lower, _limbs_where(b_up, lower, b_tot))
        upper = _limbs_min(upper, _limbs_where(a_up, a_tot, upper))
        upper = _limbs_min(upper, _limbs_where(b_up, b_tot, upper))
        progress = jnp.any(new_L != L) | jnp.any(new_R != R)
        new_cnt = _limbs_sub(upper, lower)
        return new_L, new_R, lower, new_cnt, ~progress, jnp.where(progress, ans, p1), rounds + 1

    init = (
        start,
        jnp.full((n,), n, jnp.int32),
        _static_limbs(0),
        _static_limbs(n_pairs),
        jnp.asarray(False),
        jnp.zeros((), dtype),
        jnp.int32(0),
    )
    L, R, ell, cnt, done, ans, rounds = lax.while_loop(cond, body, init)
    vals = sort(_enumerate(kind, a, L, R, cap))
    r = jnp.clip(_limbs_to_int(_limbs_sub(k, ell)) - 1, 0, cap - 1)
    return _with_pair_derivative(kind, a_data, jnp.where(done, ans, vals[r])), rounds


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _with_pair_derivative(kind: str, a: jax.Array, v: jax.Array) -> jax.Array:
    """``v``, a pair value of the sorted ``a`` selected without derivatives, given the
    derivative of the first pair (row-major) that attains it. The pair is located (one more
    O(n log n) split) only when differentiating; the value is ``v`` itself."""
    return v


@_with_pair_derivative.defjvp
def _with_pair_derivative_jvp(kind, primals, tangents):
    a, v = primals
    ta, _ = tangents
    n = a.shape[0]
    start = _row_start(kind, n)
    le = _split(kind, a, start, jnp.full((n,), n, jnp.int32), v, strict=False)  # first > v
    col = jnp.clip(le - 1, 0, n - 1)  # last column <= v
    hit = (le > start) & (pair_value(kind, a, a[col]) == v)
    i = jnp.argmax(hit)
    j = col[i]
    _, t = jax.jvp(lambda ai, aj: pair_value(kind, ai, aj), (a[i], a[j]), (ta[i], ta[j]))
    return v, jnp.where(jnp.any(hit), t, jnp.zeros_like(t))


def next_pair_value(kind: str, a: jax.Array, v: jax.Array, k: Rank) -> jax.Array:
    """The ``(k+1)``-th smallest pair value, given ``v``, the ``k``-th."""
    n = a.shape[0]
    start = _row_start(kind, n)
    end = jnp.full((n,), n, jnp.int32)
    le = _split(kind, a, start, end, v, strict=False)
    tied = limbs_ge(exact_total(le - start), limbs_add(as_limbs(k), _static_limbs(1)))
    nxt = pair_value(kind, a, a[jnp.minimum(le, n - 1)])
    nxt = jnp.min(jnp.where(le < n, nxt, jnp.inf))
    return jnp.where(tied, v, nxt).astype(a.dtype)


def sn_inner(a: jax.Array) -> jax.Array:
    """Per ``i``: the high median over ``j`` of ``|a_i - a_j|`` (all ``j``, ``j = i`` included),
    i.e. the ``(n//2 + 1)``-th smallest, for a sorted NaN-free 1-D ``a`` with ``n >= 2``.

    Row ``i`` is ``0`` plus the union of two sorted runs, left ``a_i - a_{i-1-t}`` (length
    ``i``) and right ``a_{i+1+u} - a_i`` (length ``n-1-i``); the ``k = n//2``-th smallest of
    the union is found by a binary search on how many come from the left run.
    """
    n = a.shape[0]
    k = n // 2
    i = jnp.arange(n, dtype=jnp.int32)
    p = i
    q = n - 1 - i

    def left(t):  # t-th (0-based) element of the left run
        return pair_value("absdiff", a[jnp.clip(i - 1 - t, 0, n - 1)], a)

    def right(u):
        return pair_value("absdiff", a, a[jnp.clip(i + 1 + u, 0, n - 1)])

    lo = jnp.maximum(0, k - q)
    hi = jnp.minimum(k, p)
    # smallest t in [lo, hi] with (t == p) | (k - t - 1 < 0) | left(t) >= right(k - t - 1)
    steps = max(1, (n + 1).bit_length())

    def pred(t):
        u = k - t - 1
        return (t >= p) | (u < 0) | (left(t) >= right(u))

    def body(_, carry):
        lo, hi = carry
        mid = (lo + hi) >> 1
        ok = pred(mid)
        active = lo < hi
        hi = jnp.where(active & ok, mid, hi)
        lo = jnp.where(active & ~ok, mid + 1, lo)
        return lo, hi

    t, _ = lax.fori_loop(0, steps, body, (lo, hi))
    u = k - t
    from_left = jnp.where(t > 0, left(t - 1), -jnp.inf)
    from_right = jnp.where(u > 0, right(u - 1), -jnp.inf)
    return jnp.maximum(from_left, from_right).astype(a.dtype)
