"""Rank-based population statistics in O(n log n): ranks, percentiles of scores, quantiles.

Every function sorts once with the :mod:`jaxstats._sort` kernel (numpy's SIMD sort on CPU,
XLA's sort elsewhere) and then works in linear time, where a naive baseline compares every
agent with every other one (O(n^2)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from ._typing import ArrayLike
import numpy as np
from jax import lax

from . import _checks
from ._sort import argsort, dense_rank, sort, tie_bounds

__all__ = [
    "median",
    "percentile_of_population",
    "percentileofscore",
    "quantile",
    "rankdata",
]

RANK_METHODS = ("average", "min", "max", "dense", "ordinal")
NAN_POLICIES = ("propagate", "omit", "raise")
PERCENTILE_KINDS = ("rank", "weak", "strict", "mean")
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


def _raise_on_nan(fn: str, x: jax.Array, name: str) -> jax.Array:
    """nan_policy='raise': a run-time error (works under jit via equinox.error_if)."""
    msg = f"{fn}: '{name}' contains NaN and nan_policy='raise'. Use 'omit' or 'propagate'."
    if not _checks.is_traced(x):
        if bool(jnp.any(jnp.isnan(x))):
            raise ValueError(msg)
        return x
    return eqx.error_if(x, jnp.any(jnp.isnan(x)), msg)


def _unsort(perm: jax.Array, vals: jax.Array) -> jax.Array:
    """Scatter values given in sorted order back to input order (inverse permutation)."""
    return jnp.put_along_axis(jnp.zeros(vals.shape, vals.dtype), perm, vals, axis=-1, inplace=False)


def _ranks_last(x: jax.Array, method: str, out_dtype=None):
    """Tie-aware ranks along the last axis; NaNs (sorted last) rank last.

    ``x`` keeps its own dtype for the ordering (so large integers are ranked exactly); the
    ranks come out in ``out_dtype`` (default ``x.dtype``).
    """
    out_dtype = x.dtype if out_dtype is None else out_dtype
    if method == "ordinal":
        perm = argsort(x, axis=-1, stable=True)
        iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1) + 1
        return _unsort(perm, iota.astype(out_dtype))
    if method == "dense":
        return dense_rank(x).astype(out_dtype)
    _, lo, hi = tie_bounds(lax.stop_gradient(x))
    if method == "min":
        return lo.astype(out_dtype)
    if method == "max":
        return hi.astype(out_dtype)
    return 0.5 * (lo.astype(out_dtype) + hi.astype(out_dtype))


def _float_input(fn: str, name: str, a: Any) -> jax.Array:
    return _checks.as_float_array(fn, name, a)


def rankdata(
    a: ArrayLike,
    method: str = "average",
    *,
    axis: int | None = -1,
    nan_policy: str = "propagate",
) -> jax.Array:
    """Ranks of ``a`` along ``axis`` (1 = smallest), with scipy's tie methods.

    Equal to ``scipy.stats.rankdata`` for every method, computed with one sort per slice:
    O(n log n) and batched over all other axes.

    Args:
      a: real array. Integers and bools are ranked exactly (as the default float dtype).
      method: ``"average"`` (mean rank of a tie group), ``"min"``, ``"max"``, ``"dense"``
        (tie groups numbered 1, 2, ...) or ``"ordinal"`` (ties ranked by input order).
      axis: static axis to rank along; ``None`` ranks the flattened array. Note scipy's default
        is ``None``; ours is ``-1`` (the obs axis of ``[agents, obs]`` data).
      nan_policy: ``"propagate"`` (a slice with a NaN is all NaN, as scipy), ``"omit"`` (NaN
        entries get NaN, the others are ranked among the non-NaN ones) or ``"raise"`` (an error;
        under ``jit`` it is raised at run time through ``equinox.error_if``).

    Returns:
      Float array of the shape of ``a`` (flattened for ``axis=None``), with ``a``'s float
      dtype or the default float dtype for int/bool input. Float32 represents ranks exactly up
      to 2^24 elements per slice; use float64 beyond.

    Raises:
      TypeError: if ``a`` is not real or ``axis`` is not an int/None.
      ValueError: for an unknown ``method``/``nan_policy``, an out-of-range ``axis``, or NaN
        with ``nan_policy="raise"``.

    NaN and inf:
      ``±inf`` rank as the extremes; ``-0.0`` ties with ``+0.0``; NaN as ``nan_policy`` says.

    Examples:
      >>> import jax.numpy as jnp
      >>> rankdata(jnp.array([10.0, 20.0, 10.0, 30.0]))
      Array([1.5, 3. , 1.5, 4. ], dtype=float32)
      >>> rankdata(jnp.array([10.0, 20.0, 10.0, 30.0]), "dense")
      Array([1., 2., 1., 3.], dtype=float32)
    """
    fn = "rankdata"
    _checks.check_option(fn, "method", method, RANK_METHODS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _float_input(fn, "a", a)
    raw = jnp.asarray(np.asarray(a) if isinstance(a, (list, tuple)) else a)
    keys = raw if jnp.issubdtype(raw.dtype, jnp.integer) else x  # ints ranked exactly
    if axis is None:
        x, keys = x.reshape(-1), keys.reshape(-1)
        axis = 0
    if x.ndim == 0:
        raise ValueError("rankdata: 'a' must have at least one dimension; got a scalar.")
    axis = _checks.check_axis(fn, "axis", axis, x.ndim)
    if nan_policy == "raise":
        x = _raise_on_nan(fn, x, "a")
    x = jnp.moveaxis(x, axis, -1)
    keys = jnp.moveaxis(keys, axis, -1)
    if x.shape[-1] == 0:
        return jnp.moveaxis(x, -1, axis)
    r = _ranks_last(keys if keys.dtype != x.dtype else x, method, x.dtype)
    isnan = jnp.isnan(x)
    if nan_policy == "propagate":
        r = jnp.where(jnp.any(isnan, axis=-1, keepdims=True), jnp.nan, r)
    elif nan_policy == "omit":
        r = jnp.where(isnan, jnp.nan, r)
    return jnp.moveaxis(r, -1, axis)


def _percent_from_counts(left, right, n, kind, dtype):
    """scipy's percentileofscore formulas from strict (left) and weak (right) counts."""
    left = left.astype(dtype)
    right = right.astype(dtype)
    n = jnp.asarray(n).astype(dtype)
    if kind == "rank":
        plus1 = (left < right).astype(dtype)
        p = (left + right + plus1) * (50.0 / n)
    elif kind == "strict":
        p = left / n * 100.0
    elif kind == "weak":
        p = right / n * 100.0
    else:
        p = (left + right) * (50.0 / n)
    return jnp.where(n > 0, p, jnp.nan)


def percentileofscore(
    a: ArrayLike, score: ArrayLike, kind: str = "rank", nan_policy: str = "propagate"
) -> jax.Array:
    """Percentile rank of each ``score`` relative to the sample ``a`` (scipy semantics).

    scipy's version is O(n) per score (O(n·m) for m scores); this one sorts ``a`` once and
    bisects each score: O((n + m) log n).

    With ``left = #{a < score}`` and ``right = #{a <= score}`` over the ``n`` values:
    ``"strict"`` = 100·left/n, ``"weak"`` = 100·right/n, ``"mean"`` = 50·(left+right)/n and
    ``"rank"`` = 50·(left + right + [right > left])/n.

    Args:
      a: ``[obs]`` real 1-D sample (vmap for batches of samples).
      score: scores of any shape.
      kind: ``"rank"``, ``"weak"``, ``"strict"`` or ``"mean"``.
      nan_policy: ``"propagate"`` (a NaN in ``a`` makes every result NaN), ``"omit"`` (NaNs in
        ``a`` are dropped) or ``"raise"``.

    Returns:
      Percentiles in [0, 100] with the shape of ``score``; float dtype of ``a``/``score``.

    Raises:
      TypeError: if ``a`` or ``score`` is not real.
      ValueError: if ``a`` is not 1-D, or for an unknown ``kind``/``nan_policy``.

    NaN and inf:
      A NaN score gives NaN. An empty sample (or all-NaN with ``"omit"``) gives NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> percentileofscore(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([3.0, 2.5]))
      Array([75., 50.], dtype=float32)
    """
    fn = "percentileofscore"
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _float_input(fn, "a", a)
    _checks.check_rank(fn, "a", x, (1,), "Use jax.vmap for a batch of samples.")
    s_arr = _float_input(fn, "score", score)
    dtype = jnp.promote_types(x.dtype, s_arr.dtype)
    x = x.astype(dtype)
    s_arr = s_arr.astype(dtype)
    if nan_policy == "raise":
        x = _raise_on_nan(fn, x, "a")
    n_nan = jnp.sum(jnp.isnan(x)).astype(jnp.int32)
    n_valid = jnp.int32(x.shape[0]) - n_nan
    sx = sort(x)
    sx = jnp.where(jnp.isnan(sx), jnp.inf, sx)  # NaNs sit last; +inf keeps the bisection monotone
    flat = s_arr.reshape(-1)
    left = jnp.minimum(jnp.searchsorted(sx, flat, side="left"), n_valid)
    right = jnp.minimum(jnp.searchsorted(sx, flat, side="right"), n_valid)
    p = _percent_from_counts(left, right, n_valid, kind, dtype)
    p = jnp.where(jnp.isnan(flat), jnp.nan, p)
    if nan_policy == "propagate":
        p = jnp.where(n_nan > 0, jnp.nan, p)
    return p.reshape(s_arr.shape)


def percentile_of_population(
    a: ArrayLike, *, axis: int = 0, kind: str = "rank", nan_policy: str = "propagate"
) -> jax.Array:
    """Each element's percentile among all elements along ``axis`` (the population form).

    ``out[i] == percentileofscore(a, a[i], kind)`` for every agent ``i`` at once, from one
    sort: O(n log n) where the naive baseline compares every agent with every other.

    Args:
      a: real array; ``axis`` is the agents axis (default 0, as in ``[agents, features]``).
      axis: static agents axis; every other axis is batched (e.g. one population per feature).
      kind: ``"rank"``, ``"weak"``, ``"strict"`` or ``"mean"`` (see :func:`percentileofscore`).
      nan_policy: ``"propagate"`` (a NaN anywhere in a population makes it all NaN), ``"omit"``
        (NaN agents get NaN and are left out of the others' population) or ``"raise"``.

    Returns:
      Percentiles in [0, 100], the shape of ``a``; float dtype.

    Raises:
      TypeError, ValueError: as :func:`rankdata`.

    NaN and inf:
      ``±inf`` are the population's extremes; NaN as ``nan_policy`` says.

    Examples:
      >>> import jax.numpy as jnp
      >>> percentile_of_population(jnp.array([1.0, 2.0, 2.0, 4.0]))
      Array([ 25. ,  62.5,  62.5, 100. ], dtype=float32)
    """
    fn = "percentile_of_population"
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _float_input(fn, "a", a)
    if x.ndim == 0:
        raise ValueError(f"{fn}: 'a' must have an agents axis; got a scalar.")
    axis = _checks.check_axis(fn, "axis", axis, x.ndim)
    if nan_policy == "raise":
        x = _raise_on_nan(fn, x, "a")
    x = jnp.moveaxis(x, axis, -1)
    if x.shape[-1] == 0:
        return jnp.moveaxis(x, -1, axis)
    isnan = jnp.isnan(x)
    n_valid = x.shape[-1] - jnp.sum(isnan, axis=-1, keepdims=True)
    p = _population_percentile_last(x, n_valid, kind)
    if nan_policy == "propagate":
        p = jnp.where(n_valid < x.shape[-1], jnp.nan, p)
    else:
        p = jnp.where(isnan, jnp.nan, p)
    return jnp.moveaxis(p, -1, axis)


def _population_percentile_last(x, n_valid, kind, bounds=None):
    """Percentile of each entry among its row (last axis), from one tie-bounds pass.

    Strict count = first rank of the tie group - 1, weak count = its last rank; NaNs sort
    last, so they never count for finite entries.
    """
    if bounds is None:
        bounds = tie_bounds(lax.stop_gradient(x))
    _, lo, hi = bounds
    return _percent_from_counts(lo - 1, hi, n_valid, kind, x.dtype)


def _virtual_index(n: Any, q: jax.Array, method: str):
    """numpy's (Hyndman & Fan) index rule: ``(index, gamma)`` or ``(int index, None)``."""
    if method in ("lower", "higher", "nearest", "inverted_cdf", "closest_observation"):
        if method == "lower":
            idx = jnp.floor((n - 1) * q)
        elif method == "higher":
            idx = jnp.ceil((n - 1) * q)
        elif method == "nearest":
            idx = jnp.round((n - 1) * q)  # round half to even, as np.around
        else:
            if method == "inverted_cdf":
                v = n * q - 1
                take_prev = None
            else:
                v = n * q - 1.5
            prev = jnp.floor(v)
            g = v - prev
            if method == "inverted_cdf":
                take_prev = g == 0
            else:
                take_prev = (g == 0) & (jnp.mod(prev, 2) == 1)
            idx = jnp.where(take_prev, prev, prev + 1)
            idx = jnp.maximum(idx, 0)
        return idx, None
    if method == "linear":
        v = (n - 1) * q
    elif method == "averaged_inverted_cdf":
        v = n * q - 1
    elif method == "midpoint":
        v = 0.5 * (jnp.floor((n - 1) * q) + jnp.ceil((n - 1) * q))
    else:
        alpha, beta = {
            "interpolated_inverted_cdf": (0.0, 1.0),
            "hazen": (0.5, 0.5),
            "weibull": (0.0, 0.0),
            "median_unbiased": (1.0 / 3.0, 1.0 / 3.0),
            "normal_unbiased": (3.0 / 8.0, 3.0 / 8.0),
        }[method]
        v = n * q + (alpha + q * (1.0 - alpha - beta)) - 1.0
    return v, True


def _quantile_sorted(s: jax.Array, q: jax.Array, method: str, n_valid=None) -> jax.Array:
    """Quantiles of sorted rows ``s`` (last axis) at ``q``: result ``q.shape + s.shape[:-1]``.

    ``n_valid`` (optional, shape ``s.shape[:-1]``) is the count of leading valid entries per
    row (NaNs sort last), for NaN-omitting quantiles; rows with ``n_valid == 0`` give NaN.
    """
    n_static = s.shape[-1]
    rows = s.reshape(-1, n_static)  # [batch, n]
    qf = q.reshape(-1)[None, :]  # [1, m]
    if n_valid is None:
        n = jnp.asarray(float(n_static), s.dtype)
    else:
        n = n_valid.reshape(-1, 1).astype(s.dtype)  # [batch, 1]
    v, continuous = _virtual_index(n, qf, method)
    v = jnp.broadcast_to(v, (rows.shape[0], qf.shape[1]))
    n_b = jnp.broadcast_to(n, v.shape)

    def take(i):
        i = jnp.clip(i, 0, jnp.maximum(n_b - 1, 0)).astype(jnp.int32)
        return jnp.take_along_axis(rows, i, axis=1)  # [batch, m]

    if continuous is None:
        out = take(v)
    else:
        prev = jnp.floor(v)
        above = v >= n_b - 1
        below = v < 0
        prev_i = jnp.where(above, n_b - 1, jnp.where(below, 0, prev))
        next_i = jnp.where(above, n_b - 1, jnp.where(below, 0, prev + 1))
        # numpy's gamma uses the adjusted previous index (-1 for 'above').
        gamma = v - jnp.where(above, -1.0, prev_i)
        if method == "averaged_inverted_cdf":
            gamma = jnp.where(gamma == 0, 0.5, 1.0)
        elif method == "midpoint":
            gamma = jnp.where(jnp.mod(v, 1) == 0, 0.0, 0.5)
        a, b = take(prev_i), take(next_i)
        t = gamma.astype(s.dtype)
        diff = b - a
        out = jnp.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # numpy's _lerp, exactly
    if n_valid is not None:
        out = jnp.where(n_b > 0, out, jnp.nan)
    return out.T.reshape(q.shape + s.shape[:-1])


def _reduced_last(fn: str, x: jax.Array, axis: Any):
    """Move the reduced ``axis`` (int, tuple or None) of ``x`` last, flattened into one axis.

    Returns ``(xt, axes, shape)``: ``xt`` is ``[*kept dims, n]``, ``axes`` the normalized
    reduced axes and ``shape`` the shape of ``x`` (a scalar counts as shape ``(1,)``).
    """
    if x.ndim == 0:
        x = x.reshape(1)
    if axis is None:
        axes = tuple(range(x.ndim))
    elif isinstance(axis, (tuple, list)):
        axes = tuple(_checks.check_axis(fn, "axis", ax, x.ndim) for ax in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{fn}: 'axis' has repeated entries: {axis!r}.")
    else:
        axes = (_checks.check_axis(fn, "axis", axis, x.ndim),)
    keep = tuple(i for i in range(x.ndim) if i not in axes)
    n = int(np.prod([x.shape[i] for i in axes]))
    xt = jnp.transpose(x, keep + axes).reshape(tuple(x.shape[i] for i in keep) + (n,))
    return xt, axes, x.shape


def _keepdims(out: jax.Array, axes: tuple, shape: tuple, lead: tuple = ()) -> jax.Array:
    """Reshape a reduction's result to ``lead + shape`` with the reduced ``axes`` set to 1."""
    shape = list(shape)
    for ax in axes:
        shape[ax] = 1
    return out.reshape(tuple(lead) + tuple(shape))


def quantile(
    a: ArrayLike,
    q: Any,
    *,
    axis: int | Sequence[int] | None = None,
    method: str = "linear",
    keepdims: bool = False,
) -> jax.Array:
    """Quantiles of ``a`` along ``axis``, equal to ``np.quantile`` for all 13 methods.

    One sort of each slice, then O(1) per quantile. Differentiable in ``a`` (the sort's
    derivative is its permutation).

    Args:
      a: real array.
      q: probabilities in [0, 1], a scalar or array of any shape.
      axis: static int, tuple of ints, or ``None`` (flatten), as numpy.
      method: numpy's method name: ``"linear"`` (default), ``"lower"``, ``"higher"``,
        ``"nearest"``, ``"midpoint"``, ``"hazen"``, ``"weibull"``, ``"median_unbiased"``,
        ``"normal_unbiased"``, ``"inverted_cdf"``, ``"averaged_inverted_cdf"``,
        ``"closest_observation"``, ``"interpolated_inverted_cdf"``.
      keepdims: keep the reduced axes with size 1.

    Returns:
      Array of shape ``q.shape + reduced shape`` (numpy's layout); float dtype of ``a`` (int
      input gives the default float dtype).

    Raises:
      TypeError: if ``a`` or ``q`` is not real.
      ValueError: for an unknown ``method``, a bad ``axis``, or a reduced axis of length 0.

    NaN and inf:
      Any NaN in a slice makes its quantiles NaN (as numpy). ``q`` outside [0, 1] is not
      checked (it would need a host sync): results are clipped to the extremes.

    Examples:
      >>> import jax.numpy as jnp
      >>> quantile(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([0.25, 0.5]))
      Array([1.75, 2.5 ], dtype=float32)
    """
    fn = "quantile"
    _checks.check_option(fn, "method", method, QUANTILE_METHODS)
    x = _float_input(fn, "a", a)
    qa = _float_input(fn, "q", q).astype(x.dtype)
    xt, axes, shape = _reduced_last(fn, x, axis)
    if xt.shape[-1] == 0:
        raise ValueError(f"{fn}: cannot take quantiles over an empty axis (length 0).")
    s = sort(xt, axis=-1)
    out = _quantile_sorted(s, qa, method)
    has_nan = jnp.isnan(s[..., -1])  # NaNs sort last
    out = jnp.where(has_nan, jnp.nan, out)
    if keepdims:
        out = _keepdims(out, axes, shape, qa.shape)
    return out


def median(
    a: ArrayLike, *, axis: int | Sequence[int] | None = None, keepdims: bool = False
) -> jax.Array:
    """Median along ``axis``, equal to ``np.median`` (mean of the two middle values for even n).

    Args:
      a: real array.
      axis: static int, tuple of ints or ``None`` (flatten).
      keepdims: keep reduced axes with size 1.

    Returns:
      The medians; float dtype.

    Raises:
      TypeError, ValueError: as :func:`quantile`.

    NaN and inf:
      A NaN in a slice gives NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> median(jnp.array([[1.0, 5.0, 2.0], [4.0, 4.0, 9.0]]), axis=1)
      Array([2., 4.], dtype=float32)
    """
    fn = "median"
    x = _float_input(fn, "a", a)
    xt, axes, shape = _reduced_last(fn, x, axis)
    n = xt.shape[-1]
    if n == 0:
        raise ValueError(f"{fn}: cannot take the median over an empty axis (length 0).")
    s = sort(xt, axis=-1)
    if n % 2:
        out = s[..., n // 2]
    else:  # numpy's median: the mean of the two middle order statistics
        out = (s[..., n // 2 - 1] + s[..., n // 2]) / 2
    out = jnp.where(jnp.isnan(s[..., -1]), jnp.nan, out)
    if keepdims:
        out = _keepdims(out, axes, shape)
    return out
