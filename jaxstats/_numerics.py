r"""Floating-point building blocks shared by jaxstats modules (private; no input validation).

Three families live here:

* **Error-free transformations** (``two_sum``, ``fast_two_sum``, ``two_prod``): the rounded
  result of one operation plus its exact rounding error, so ``s + e`` equals the exact
  mathematical result.
* **Double-word ("pair") arithmetic and compensated sums**: a value kept as an unevaluated sum
  ``hi + lo`` with ``|lo| <= ulp(hi) / 2`` carries about twice the precision of the dtype
  (48 bits for float32) without float64. ``compensated_sum_pair`` reduces an axis to such a
  pair, ``cumulative_sum_pair`` gives every prefix, ``pair_add`` / ``pair_add_pair`` /
  ``pair_scale`` / ``pair_value`` / ``pair_log`` operate on pairs.
* **Gradient-safe elementwise helpers** (``double_where``, ``safe_log``, ``safe_sqrt``,
  ``safe_divide``, ``log1mexp``, ``logaddexp``): the double-``where`` pattern, so that inputs
  where a function is singular give a documented limit value and a *finite* gradient instead of
  ``nan``.

All functions follow the dtype of their inputs, never upcast, and are traceable under ``jit``,
``vmap`` and ``grad``. They assume same-shaped (or scalar) operands: callers broadcast
explicitly.

Non-finite values. The error term of an error-free transformation is meaningless (``nan``)
when the rounded result overflows or an input is ``inf``/``nan``. Pair functions therefore keep
every non-finite value in ``hi`` and force ``lo`` to ``0`` there: ``pair_value`` then returns
``+inf``, ``-inf`` or ``nan`` exactly as a plain sum would.

XLA and fast-math. These transformations rely on IEEE round-to-nearest and on the compiler not
re-associating ``(a + b) - a``. XLA honours that for sums of runtime values (the test suite checks
under ``jit`` that compensation still beats a plain sum on adversarial data), but two
optimizations seen on the CPU backend (jax 0.10) must be designed around: the algebraic simplifier
folds ``(x + 1.0) - 1.0`` to ``x`` when the constants are literals (so ``log1p`` pins
``1 + x`` with an optimization barrier), and LLVM contracts ``a * b + c`` into a fused
multiply-add, skipping the rounding of ``a * b`` (so ``two_prod`` uses only exact products).
Inputs that are themselves products computed in the same ``jit`` may therefore be summed as their
exact values rather than their rounded ones -- a difference of at most half an ulp per term. XLA
on CPU also flushes subnormal numbers to zero, so error terms below the smallest normal number
(about ``1e-38`` in float32) are lost; this only matters for sums that are themselves that small.

References:
  D. E. Knuth, *The Art of Computer Programming* vol. 2, 4.2.2 (TwoSum).
  T. J. Dekker, "A floating-point technique for extending the available precision", 1971.
  (``two_prod`` splits by bit masking instead of Veltkamp's multiplication; see its docstring.)
  A. Neumaier, "Rundungsfehleranalyse einiger Verfahren zur Summation endlicher Summen", 1974.
  T. Ogita, S. M. Rump, S. Oishi, "Accurate sum and dot product", SIAM J. Sci. Comput., 2005.
  M. Joldes, J.-M. Muller, V. Popescu, "Tight and rigorous error bounds for basic building
  blocks of double-word arithmetic", ACM TOMS, 2017.
  M. Maechler, "Accurately computing log(1 - exp(-|a|))", Rmpfr vignette, 2012.
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "two_sum",
    "fast_two_sum",
    "two_prod",
    "log1p",
    "pair_renormalize",
    "pair_add",
    "pair_add_pair",
    "pair_scale",
    "pair_value",
    "pair_log",
    "sum_rows_pair",
    "compensated_sum_pair",
    "compensated_sum",
    "cumulative_sum_pair",
    "double_where",
    "safe_log",
    "safe_sqrt",
    "safe_divide",
    "log1mexp",
    "logaddexp",
    "normalize_axes",
    "max_last_axis",
]

# Lane count of the large-array compensated sum: ~1024 independent TwoSum accumulators advance
# in lock-step over blocks of the input (vectorized across lanes), then a TwoSum tree folds the
# lanes (see sum_rows_pair). 1024 was the fastest of 256 / 1024 / 8192 in
# experiments/bench_evidence.py (table 4).
_LANES = 1024


# ----------------------------------------------------------------------------------------------
# Error-free transformations
# ----------------------------------------------------------------------------------------------


def two_sum(a, b):
    """Knuth's TwoSum: ``(s, e)`` with ``s = fl(a + b)`` and ``s + e == a + b`` exactly.

    Six flops, no branch, no condition on the magnitudes. ``e`` is ``nan`` when ``s`` is not
    finite (see the module docstring).

    Examples:
      >>> import jax.numpy as jnp
      >>> s, e = two_sum(jnp.float32(1e8), jnp.float32(1.0))
      >>> float(s), float(e)
      (100000000.0, 1.0)
    """
    s = a + b
    b_virtual = s - a
    a_virtual = s - b_virtual
    return s, (a - a_virtual) + (b - b_virtual)


def fast_two_sum(a, b):
    """Dekker's FastTwoSum: like :func:`two_sum` in three flops, valid when ``|a| >= |b|``
    (or ``a == 0``).

    Examples:
      >>> import jax.numpy as jnp
      >>> s, e = fast_two_sum(jnp.float32(1.0), jnp.float32(2.0**-30))
      >>> float(s), float(e) == 2.0**-30
      (1.0, True)
    """
    s = a + b
    return s, b - (s - a)


_SPLIT_MASKS = {
    # Keep the top 12 of float32's 24 significand bits (hi), leaving <= 12 bits in lo.
    np.dtype(np.float32): (np.uint32, 0xFFFFF000),
    # Keep the top 26 of float64's 53 bits, leaving <= 27 bits in lo.
    np.dtype(np.float64): (np.uint64, 0xFFFFFFFFF8000000),
}


def _split(x):
    """Split ``x`` into ``hi + lo`` (exactly) with half-width significands, by bit masking.

    Masking the low significand bits (instead of Veltkamp's ``c * x - (c * x - x)``) involves no
    multiplication, so no compiler contraction into a fused multiply-add can change it.
    """
    int_t, mask = _SPLIT_MASKS[np.dtype(x.dtype)]
    bits = lax.bitcast_convert_type(x, int_t)
    hi = lax.bitcast_convert_type(bits & np.asarray(mask, int_t), x.dtype)
    return hi, x - hi


def two_prod(a, b):
    """Product as a double word: ``(p, e)`` with ``p + e == a * b`` to ~``2**-47`` relative
    (float32; ~``2**-100`` in float64) and ``p`` the rounded product in all but rare
    double-rounding cases.

    Both factors are split into half-width parts by bit masking, so the four partial products
    are exact, and they are added with :func:`two_sum`. Unlike Dekker's TwoProduct this never
    needs the *rounded* product ``fl(a * b)``: XLA's CPU backend contracts ``a * b - p`` into a
    fused multiply-add, which silently turned Dekker's error term into 0 under ``jit`` (observed
    with a constant factor); here every multiplication is exact, so contraction cannot change any
    value. Non-finite products give ``p = a * b`` and ``e = nan``; float dtypes other than
    float32/float64 fall back to ``(a * b, 0)``. ``a`` and ``b`` must have the same shape (or be
    scalars).

    Examples:
      >>> import jax.numpy as jnp
      >>> p, e = two_prod(jnp.float32(1 + 2.0**-12), jnp.float32(1 + 2.0**-12))
      >>> float(p) + float(e) == (1 + 2.0**-12) ** 2
      True
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if np.dtype(a.dtype) not in _SPLIT_MASKS:
        p = a * b
        return p, jnp.zeros_like(p)
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    s, e1 = two_sum(a_hi * b_hi, a_hi * b_lo)
    s, e2 = two_sum(s, a_lo * b_hi)
    lo = (e1 + e2) + a_lo * b_lo
    p, e = two_sum(s, lo)
    finite = jnp.isfinite(p)
    p = jnp.where(finite, p, a * b)
    return p, jnp.where(finite, e, jnp.full_like(e, jnp.nan))


def log1p(x):
    """``log(1 + x)`` accurate to ~2 ulp in every float dtype.

    float32 uses ``jnp.log1p``. XLA's float64 ``log1p`` on CPU is off by up to ~128 ulp (measured
    on jax 0.10 for ``x`` in [-0.6, -0.1]), so float64 uses the Goldberg-Kahan form
    ``log(w) * x / (w - 1)`` with ``w = fl(1 + x)`` pinned by an optimization barrier (XLA would
    otherwise fold ``(1 + x) - 1`` back to ``x``). ``-1 -> -inf``, ``+inf -> +inf``, ``x < -1``
    and NaN give NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(log1p(jnp.float32(1e-10)))
      1e-10
    """
    x = jnp.asarray(x)
    if x.dtype != np.float64:
        return jnp.log1p(x)
    w = lax.optimization_barrier(x + np.asarray(1.0, x.dtype))
    d = w - np.asarray(1.0, x.dtype)
    ok = d != 0
    out = jnp.where(ok, jnp.log(w) * (x / jnp.where(ok, d, jnp.ones_like(d))), x)
    return jnp.where(x == jnp.inf, x, out)


# ----------------------------------------------------------------------------------------------
# Double-word (pair) arithmetic
# ----------------------------------------------------------------------------------------------


def pair_renormalize(hi, lo):
    """Renormalize ``hi + lo`` so that ``|lo| <= ulp(hi) / 2``; non-finite ``hi`` keeps ``lo = 0``.

    Uses :func:`two_sum`, so it is valid whatever the relative magnitudes (for example after
    cancellation left ``|lo| > |hi|``).
    """
    s, e = two_sum(hi, lo)
    ok = jnp.isfinite(s) & jnp.isfinite(hi)
    return jnp.where(jnp.isfinite(hi), s, hi), jnp.where(ok, e, jnp.zeros_like(e))


def pair_add(hi, lo, x):
    """``(hi + lo) + x`` as a renormalized pair (double-word plus word).

    The relative error is at most about ``2 eps**2`` (``eps = 2**-24`` in float32), so a pair
    can absorb ``10**9`` sequential additions and still round to within an ulp or two of the
    exact sum.
    """
    s, e = two_sum(hi, x)
    e = jnp.where(jnp.isfinite(s), e + lo, jnp.zeros_like(e))
    return pair_renormalize(s, e)


def pair_add_pair(a_hi, a_lo, b_hi, b_lo):
    """``(a_hi + a_lo) + (b_hi + b_lo)`` as a renormalized pair.

    Exactly commutative (TwoSum's error term does not depend on the operand order) and
    associative up to about ``eps**2`` relative.
    """
    s, e = two_sum(a_hi, b_hi)
    e = jnp.where(jnp.isfinite(s), e + (a_lo + b_lo), jnp.zeros_like(e))
    return pair_renormalize(s, e)


def pair_scale(hi, lo, c):
    """``(hi + lo) * c`` for a plain float ``c``, as a renormalized pair (via :func:`two_prod`).

    Multiplying by ``c == 1`` is exact.
    """
    p, e = two_prod(hi, c)
    e = jnp.where(jnp.isfinite(p), e + lo * c, jnp.zeros_like(e))
    return pair_renormalize(p, e)


def pair_value(hi, lo):
    """The pair rounded to one float (``hi`` itself where ``hi`` is not finite)."""
    return jnp.where(jnp.isfinite(hi), hi + lo, hi)


def pair_log(hi, lo):
    r"""``log(hi + lo)`` of a positive pair, returned as a pair accurate to about 2 ulp of the
    *argument's* relative precision (absolute error ~ ``eps * 0.4`` + ``eps**2 * |log x|``).

    Writes :math:`x = 2^k f` with :math:`f \in [\sqrt{1/2}, \sqrt 2)`, so that
    :math:`\log x = k \ln 2 + \operatorname{log1p}(f - 1) + \operatorname{log1p}(lo/hi)` where
    ``f - 1`` is exact and ``k ln 2`` is formed from a two-part constant: the large term is
    exact and only the small ``log1p`` is rounded. ``hi <= 0`` gives ``-inf`` (``hi == 0``) or
    ``nan``; ``+inf`` gives ``+inf``. Subnormal ``hi`` falls back to the plain ``log``.
    """
    dtype = jnp.result_type(hi)
    if np.dtype(dtype) == np.float64:
        ln2_hi, ln2_lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10
    else:  # float32 / bfloat16 / float16: 16-bit-mantissa head so k * ln2_hi is exact.
        ln2_hi, ln2_lo = 0.693145751953125, 1.428606765330187e-06
    ln2_hi = np.asarray(ln2_hi, dtype)
    ln2_lo = np.asarray(ln2_lo, dtype)
    tiny = np.asarray(np.finfo(dtype).tiny, dtype)
    normal = jnp.isfinite(hi) & (hi >= tiny)
    safe_hi = jnp.where(normal, hi, jnp.ones_like(hi))
    f, k = jnp.frexp(safe_hi)  # safe_hi = f * 2**k, f in [0.5, 1)
    small = f < np.asarray(math.sqrt(0.5), dtype)
    f = jnp.where(small, f * np.asarray(2.0, dtype), f)
    k = jnp.where(small, k - 1, k).astype(dtype)
    big = k * ln2_hi  # exact
    rest = log1p(f - np.asarray(1.0, dtype)) + (k * ln2_lo + lo / safe_hi)
    s, e = fast_two_sum(big, rest)  # |big| >= |rest| whenever big != 0
    plain = safe_log(hi)
    return jnp.where(normal, s, plain), jnp.where(normal, e, jnp.zeros_like(e))


# ----------------------------------------------------------------------------------------------
# Compensated reductions
# ----------------------------------------------------------------------------------------------


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, int or sequence of ints) as a sorted tuple of non-negative axes.

    Raises ValueError for an out-of-range or repeated axis (callers validate earlier with
    friendlier messages; this is the last line of defence).
    """
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        ax = int(ax)
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax} is out of bounds for an array of rank {ndim}.")
        out.append(ax % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis!r}.")
    return tuple(sorted(out))


def _tree_pair(x):
    """TwoSum halving tree over axis 0 of ``x`` (length >= 1) -> pair with shape ``x.shape[1:]``.

    Pairwise summation in which every rounding error is captured; the (small) errors are added
    plainly.
    """
    lo = jnp.zeros(x.shape[1:], x.dtype)
    while x.shape[0] > 1:
        n = x.shape[0]
        half = n // 2
        s, e = two_sum(x[:half], x[half : 2 * half])
        lo = lo + jnp.sum(e, axis=0)
        x = jnp.concatenate([s, x[2 * half :]], axis=0) if n % 2 else s
    return x[0], lo


def _identity_transform(block, mask, *_):
    if mask is not None:
        block = jnp.where(mask, block, jnp.zeros_like(block))
    return block, None


def sum_rows_pair(x, *, mask=None, transform=None, extra=(), lanes: int = _LANES):
    """Compensated sum over axis 0 of a row-major ``[n, P]`` array -> pair of shape ``[P]``.

    The flat buffer is read in blocks of ``R = ceil(lanes / P)`` whole rows (``R * P`` lanes)
    with ``dynamic_slice`` -- no transpose, no copy of the input -- and each block is added to
    ``R * P`` running TwoSum accumulators in a ``fori_loop`` (vectorized across lanes). Every lane
    belongs to one column ``p``, so the final fold is a TwoSum tree over the ``R`` accumulator
    rows (plus the leftover rows) per column. ``n <= 2 R`` goes straight to the tree.

    ``transform(block, mask_block, *extra_blocks) -> (h, l)`` is applied to each ``[rows, P]``
    block before it is accumulated (fused into the same loop, so the input is read once): ``h``
    is added with TwoSum and the optional low part ``l`` (or None) plainly. ``extra`` holds more
    ``[n, P]`` arrays sliced like ``x`` and passed along. The default zeroes masked entries.

    Error: about ``eps * |S| + c * (n / R) * eps**2 * sum(|x|)`` per column (Ogita-Rump-Oishi
    Sum2 bound per lane); in practice the correctly rounded sum for condition numbers far beyond
    ``1e4`` in float32.
    """
    transform = _identity_transform if transform is None else transform
    n, p = x.shape
    if n == 0:
        z = jnp.zeros((p,), x.dtype)
        return z, z
    rows = max(1, -(-lanes // p))
    if n <= 2 * rows:
        h, l = transform(x, mask, *extra)
        t_hi, t_lo = _tree_pair(h)
        if l is not None:
            t_lo = t_lo + jnp.sum(l, axis=0)
        return pair_renormalize(t_hi, t_lo)
    blocks = n // rows
    width = rows * p
    flat = x.reshape(-1)
    flat_mask = None if mask is None else mask.reshape(-1)
    flat_extra = tuple(e.reshape(-1) for e in extra)

    def cut(a, i):
        return lax.dynamic_slice_in_dim(a, i * width, width).reshape(rows, p)

    def block(i):
        m = None if flat_mask is None else cut(flat_mask, i)
        return transform(cut(flat, i), m, *(cut(e, i) for e in flat_extra))

    def body(i, carry):
        hi, lo = carry
        h, l = block(i)
        s, e = two_sum(hi, h)
        lo = lo + e
        return s, (lo if l is None else lo + l)

    h0, l0 = block(0)
    lo0 = jnp.zeros_like(h0) if l0 is None else l0
    hi, lo = lax.fori_loop(1, blocks, body, (h0, lo0))
    if blocks * rows < n:
        r0 = blocks * rows
        h, l = transform(x[r0:], None if mask is None else mask[r0:], *(e[r0:] for e in extra))
        hi = jnp.concatenate([hi, h], axis=0)
        if l is not None:
            lo = jnp.concatenate([lo, l], axis=0)
    t_hi, t_lo = _tree_pair(hi)
    return pair_renormalize(t_hi, t_lo + jnp.sum(lo, axis=0))


def compensated_sum_pair(
    x, axis: Any = None, *, where=None, keepdims: bool = False, transform=None, extra=()
):
    """Sum over ``axis`` as a double-word pair ``(hi, lo)``; ``hi`` is the correctly rounded
    sum in all but pathological cases and ``hi + lo`` carries ~48 bits in float32.

    The reduced axes are moved to the front (free when they already lead, as for ``axis=0`` or
    ``None``) and :func:`sum_rows_pair` reduces the resulting ``[n, P]`` array.

    Args:
      x: float array.
      axis: ``None`` (all axes), an int or a tuple of ints (static).
      where: optional bool mask broadcastable to ``x``; False entries count as 0.
      keepdims: keep the reduced axes with length 1.
      transform: optional per-block map fused into the reduction, as in :func:`sum_rows_pair`
        (it then owns the masking); ``extra`` arrays of ``x``'s shape are laid out like ``x``
        and passed to it.

    Returns:
      ``(hi, lo)`` with the dtype of ``x``.
    """
    x = jnp.asarray(x)
    mask = None if where is None else jnp.broadcast_to(where, x.shape)
    axes = normalize_axes(axis, x.ndim)
    keep_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    kept = [i for i in range(x.ndim) if i not in axes]
    batch = tuple(x.shape[i] for i in kept)
    order = list(axes) + kept
    n = int(np.prod([x.shape[i] for i in axes])) if axes else 1
    p = int(np.prod(batch)) if batch else 1

    def lead(a):
        if a is None:
            return None
        a = jnp.transpose(a, order) if order != list(range(x.ndim)) else a
        return a.reshape(n, p)

    if p == 0:
        z = jnp.zeros(batch, x.dtype)
        hi, lo = z, z
    else:
        hi, lo = sum_rows_pair(
            lead(x), mask=lead(mask), transform=transform, extra=tuple(lead(e) for e in extra)
        )
        hi, lo = hi.reshape(batch), lo.reshape(batch)
    if keepdims:
        hi, lo = hi.reshape(keep_shape), lo.reshape(keep_shape)
    return hi, lo


def compensated_sum(x, axis: Any = None, *, where=None, keepdims: bool = False):
    """:func:`compensated_sum_pair` rounded to one float (see there). No custom gradient here:
    callers that differentiate should use the public ``jaxstats.evidence.compensated_sum``."""
    return pair_value(*compensated_sum_pair(x, axis, where=where, keepdims=keepdims))


def cumulative_sum_pair(x, axis: int = 0, *, reverse: bool = False):
    """Every prefix sum along ``axis`` as pairs ``(hi, lo)`` (same shape as ``x``).

    An associative scan (``lax.associative_scan``, depth ~``2 log2 n``) with double-word addition
    as the operator, so each prefix carries ~48 bits in float32; ``reverse=True`` gives suffix
    sums.
    """
    x = jnp.asarray(x)
    if x.shape[axis] == 0:
        return x, jnp.zeros_like(x)

    def op(a, b):
        return pair_add_pair(a[0], a[1], b[0], b[1])

    return lax.associative_scan(op, (x, jnp.zeros_like(x)), reverse=reverse, axis=axis)


def max_last_axis(x):
    """``max(x, axis=-1, keepdims=True)`` (NaN-propagating) that stays fast for short last axes.

    XLA on CPU runs a reduction over a short minor axis (``[10**6, 2]``) as a million tiny
    reductions (~40 ns each); for up to 64 entries a halving tree of elementwise ``maximum``
    over slices is vectorized instead (the K = 2 centering of a ``[10**6, 2]`` float64 array went
    from ~40 ms to ~3 ms).
    """
    k = x.shape[-1]
    if k == 0:
        return jnp.full(x.shape[:-1] + (1,), -jnp.inf, x.dtype)
    if k > 64:
        return jnp.max(x, axis=-1, keepdims=True)
    while x.shape[-1] > 1:
        n = x.shape[-1]
        half = n // 2
        m = jnp.maximum(x[..., :half], x[..., half : 2 * half])
        x = jnp.concatenate([m, x[..., 2 * half :]], axis=-1) if n % 2 else m
    return x


# ----------------------------------------------------------------------------------------------
# Gradient-safe elementwise helpers (double-where pattern)
# ----------------------------------------------------------------------------------------------


def double_where(condition, x, fn: Callable[[Any], Any], safe_value, otherwise):
    """``fn(x)`` where ``condition`` holds, else ``otherwise`` -- with finite gradients.

    A single ``jnp.where(c, fn(x), other)`` still differentiates ``fn`` at the rejected inputs,
    and ``0 * inf = nan`` poisons the gradient. Feeding ``fn`` only safe inputs (``x`` where
    ``condition`` holds, ``safe_value`` elsewhere) keeps both the value and the gradient finite;
    the rejected entries get ``otherwise`` and a zero gradient with respect to ``x``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> f = lambda x: double_where(x > 0, x, jnp.log, 1.0, -jnp.inf)
      >>> float(jax.grad(f)(0.0))
      0.0
    """
    x_safe = jnp.where(condition, x, safe_value)
    return jnp.where(condition, fn(x_safe), otherwise)


def safe_log(x):
    """``log(x)``: ``-inf`` at 0, ``nan`` below 0, and a finite (zero) gradient at ``x <= 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> safe_log(jnp.array([1.0, 0.0, -1.0]))
      Array([  0., -inf,  nan], dtype=float32)
    """
    x = jnp.asarray(x)
    inf = jnp.asarray(-jnp.inf, x.dtype)
    otherwise = jnp.where(x == 0, inf, jnp.asarray(jnp.nan, x.dtype))
    return double_where(x > 0, x, jnp.log, jnp.ones_like(x), otherwise)


def safe_sqrt(x):
    """``sqrt(x)``: 0 at 0 with a zero (not infinite) gradient there, ``nan`` below 0."""
    x = jnp.asarray(x)
    otherwise = jnp.where(x == 0, jnp.zeros_like(x), jnp.asarray(jnp.nan, x.dtype))
    return double_where(x > 0, x, jnp.sqrt, jnp.ones_like(x), otherwise)


def safe_divide(num, den, *, fill=0.0):
    """``num / den`` where ``den != 0``, else ``fill``; gradients stay finite at ``den == 0``."""
    den = jnp.asarray(den)
    ok = den != 0
    safe_den = jnp.where(ok, den, jnp.ones_like(den))
    return jnp.where(ok, num / safe_den, jnp.asarray(fill, jnp.result_type(num, den)))


def log1mexp(x):
    r"""``log(1 - exp(x))`` for ``x <= 0``, accurate everywhere (Maechler's switch at ``-ln 2``).

    Uses ``log(-expm1(x))`` for ``-ln 2 <= x < 0`` and ``log1p(-exp(x))`` below. ``x == 0`` gives
    ``-inf``, ``x == -inf`` gives ``0``, ``x > 0`` gives ``nan``; gradients are finite everywhere
    (zero at ``x >= 0``).

    Examples:
      >>> import jax.numpy as jnp
      >>> log1mexp(jnp.array([-1e-10, -jnp.inf, 0.0]))
      Array([-23.02585,   0.     ,    -inf], dtype=float32)
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    far = x < np.asarray(-math.log(2.0), dtype)  # includes -inf
    near = (~far) & (x < 0)
    x_far = jnp.where(far, x, np.asarray(-1.0, dtype))
    x_near = jnp.where(near, x, np.asarray(-0.5, dtype))
    a = log1p(-jnp.exp(x_far))
    b = jnp.log(-jnp.expm1(x_near))
    edge = jnp.where(x == 0, jnp.asarray(-jnp.inf, dtype), jnp.asarray(jnp.nan, dtype))
    return jnp.where(far, a, jnp.where(near, b, edge))


@jax.custom_jvp
def logaddexp(a, b):
    """``log(exp(a) + exp(b))`` with finite gradients when both are ``-inf``.

    ``jnp.logaddexp(-inf, -inf)`` is ``-inf`` but its gradient is ``nan``; here the gradient
    there is ``(0, 0)`` (the weights ``exp(a - r)``, ``exp(b - r)`` with impossible entries
    carrying no weight). ``+inf`` gives ``+inf``, ``nan`` propagates.
    """
    m = jnp.maximum(a, b)
    finite = jnp.isfinite(m)
    d = jnp.where(finite, -jnp.abs(a - b), jnp.zeros_like(m))
    return jnp.where(finite, m + log1p(jnp.exp(d)), m)


@logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    a, b = primals
    ta, tb = tangents
    r = logaddexp(a, b)
    finite = jnp.isfinite(r)
    r_safe = jnp.where(finite, r, jnp.zeros_like(r))
    wa = jnp.where(finite, jnp.exp(jnp.where(finite, a, r_safe) - r_safe), jnp.zeros_like(r))
    wb = jnp.where(finite, jnp.exp(jnp.where(finite, b, r_safe) - r_safe), jnp.zeros_like(r))
    return r, wa * ta + wb * tb
