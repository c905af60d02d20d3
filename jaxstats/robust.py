"""Robust location and scale along an axis: IQR, MAD and robust z-scores (sort-based)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from ._typing import ArrayLike
import numpy as np

from . import _checks
from .rank import (
    NAN_POLICIES,
    PERCENTILE_KINDS,
    QUANTILE_METHODS,
    _population_percentile_last,
    _keepdims,
    _quantile_sorted,
    _reduced_last,
    _raise_on_nan,
)
from ._sort import sort, tie_bounds

__all__ = ["BaselineResult", "iqr", "median_abs_deviation", "population_baseline", "robust_zscore"]

#: 1 / Phi^{-1}(3/4): makes the MAD a consistent estimator of a normal sigma.
MAD_NORMAL_SCALE = 1.482602218505602
#: Phi^{-1}(3/4) - Phi^{-1}(1/4): makes the IQR a consistent estimator of a normal sigma.
IQR_NORMAL_SCALE = 1.3489795003921634
#: sqrt(pi / 2): makes the mean absolute deviation a consistent estimator of a normal sigma.
MEANAD_NORMAL_SCALE = 1.2533141373155003


def _reduce_last(fn: str, a: Any, axis):
    """``a`` as a float array with the reduced axes moved last: ``(x, axes, shape)``."""
    return _reduced_last(fn, _checks.as_float_array(fn, "x", a), axis)


def _nan_quantiles(s, q, method, nan_policy):
    """Quantiles of sorted rows under a NaN policy (NaNs are sorted last)."""
    isnan = jnp.isnan(s)
    if nan_policy == "omit":
        n_valid = s.shape[-1] - jnp.sum(isnan, axis=-1)
        return _quantile_sorted(s, q, method, n_valid=n_valid)
    out = _quantile_sorted(s, q, method)
    return jnp.where(jnp.any(isnan, axis=-1), jnp.nan, out)


def iqr(
    x: ArrayLike,
    axis: int | Sequence[int] | None = None,
    rng: Sequence[float | int] = (25, 75),
    scale: float | str = 1.0,
    nan_policy: str = "propagate",
    interpolation: str = "linear",
    keepdims: bool = False,
) -> jax.Array:
    """Interquartile range (or any percentile range), equal to ``scipy.stats.iqr``.

    Args:
      x: real array.
      axis: static int, tuple of ints or ``None`` (flatten; scipy's default).
      rng: the two percentiles (0..100), low first.
      scale: divisor, a number or ``"normal"`` (1.349, so the result estimates a normal sigma).
      nan_policy: ``"propagate"`` (NaN in a slice gives NaN), ``"omit"`` or ``"raise"``.
      interpolation: any :func:`jaxstats.quantile` method.
      keepdims: keep reduced axes with size 1.

    Returns:
      ``(q_hi - q_lo) / scale``; float dtype.

    Raises:
      TypeError: for non-real ``x``.
      ValueError: for a bad ``rng``/``scale``/option/axis, or an empty reduced axis.

    NaN and inf:
      As ``nan_policy``; infinite data can give ``inf`` or NaN (``inf - inf``), as scipy.

    Examples:
      >>> import jax.numpy as jnp
      >>> iqr(jnp.arange(1.0, 9.0))
      Array(3.5, dtype=float32)
    """
    fn = "iqr"
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    _checks.check_option(fn, "interpolation", interpolation, QUANTILE_METHODS)
    if len(rng) != 2 or not (0 <= rng[0] <= rng[1] <= 100):
        raise ValueError(f"{fn}: 'rng' must be two percentiles 0 <= lo <= hi <= 100; got {rng!r}.")
    if isinstance(scale, str):
        _checks.check_option(fn, "scale", scale, ("normal",))
        scale = IQR_NORMAL_SCALE
    xs, axes, shape = _reduce_last(fn, x, axis)
    if xs.shape[-1] == 0:
        raise ValueError(f"{fn}: cannot reduce over an empty axis.")
    if nan_policy == "raise":
        xs = _raise_on_nan(fn, xs, "x")
    s = sort(xs, axis=-1)
    q = jnp.asarray([rng[0] / 100.0, rng[1] / 100.0], xs.dtype)
    lo_hi = _nan_quantiles(s, q, interpolation, nan_policy)
    out = (lo_hi[1] - lo_hi[0]) / jnp.asarray(scale, xs.dtype)
    return _keepdims(out, axes, shape) if keepdims else out


def _midpoint(a, b, single):
    """The median from its two middle order statistics ``a <= b`` (``single``: odd count, the
    answer is ``a``), as numpy: the lerp at t = 0.5, bit for bit. ``a == b`` covers two
    infinities of one sign, where ``a + (b - a) / 2`` would give NaN. Zeros come out as +0.0,
    as the interpolating median (and the sharded select) gives."""
    mid = jnp.where(a == b, a, b - (b - a) * 0.5)
    med = jnp.where(single, a, mid)
    return jnp.where(med == 0, jnp.zeros((), a.dtype), med)  # (XLA folds x + 0.0 into x)


def _median_sorted(s, nan_policy):
    """np.median / np.nanmedian of sorted rows (NaNs last): the middle value, or the mean of
    the two middle values (no interpolation, so infinite neighbours do not give NaN)."""
    n = s.shape[-1]
    isnan = jnp.isnan(s)
    n_valid = (n - jnp.sum(isnan, axis=-1)) if nan_policy == "omit" else jnp.full(s.shape[:-1], n)
    lo = jnp.clip((n_valid - 1) // 2, 0, n - 1)[..., None]
    hi = jnp.clip(n_valid // 2, 0, n - 1)[..., None]
    a = jnp.take_along_axis(s, lo, axis=-1)[..., 0]
    b = jnp.take_along_axis(s, hi, axis=-1)[..., 0]
    med = _midpoint(a, b, lo[..., 0] == hi[..., 0])
    if nan_policy == "omit":
        return jnp.where(n_valid > 0, med, jnp.nan)
    return jnp.where(jnp.any(isnan, axis=-1), jnp.nan, med)


def _mad_sorted(s, med, nan_policy):
    """``_median_sorted(sort(|s - med|), nan_policy)`` without the second sort.

    ``s`` holds sorted rows (NaNs last) and ``med`` their centre (shape ``s.shape[:-1]``). The
    computed deviations ``|s_i - med|`` of the elements below ``med`` form one ascending run
    when read right to left, and those of the rest another when read left to right (rounding
    of ``s_i - med`` is monotone in ``s_i``), so the middle deviations are the k-th of the
    union of two sorted runs: a binary search of ``ceil(log2(n + 1)) + 1`` fixed steps per
    row, O(log n) after the sort the median already needed. Values (and gradients) are those
    of the deviations themselves, bit for bit as the sort-based formula."""
    n = s.shape[-1]
    isnan = jnp.isnan(s)
    nv = n - jnp.sum(isnan, axis=-1)  # valid elements (NaNs sit at the end of each row)
    m = med[..., None]
    p = jnp.sum(s < m, axis=-1)  # length of the left run (elements below the centre)
    n_b = nv - p

    def dev_at(idx):  # idx: [..., 2] (the two middle ranks at once)
        v = jnp.take_along_axis(s, jnp.clip(idx, 0, n - 1), axis=-1)
        return jnp.abs(v - m)

    def left(i):  # i-th smallest deviation of the left run
        return dev_at(p - 1 - i)

    def right(j):  # j-th smallest deviation of the right run
        return dev_at(p + j)

    p, n_b = p[..., None], n_b[..., None]
    neg_inf = jnp.full(med.shape + (2,), -jnp.inf, s.dtype)
    steps = max(1, int(np.ceil(np.log2(n + 1))) + 1)

    def kth(k):
        # smallest i (elements taken from the left run among the k + 1 smallest) such that
        # the partition is not short of left elements
        lo = jnp.maximum(0, k + 1 - n_b)
        hi = jnp.minimum(k + 1, p)

        def body(_, carry):
            lo, hi = carry
            mid = (lo + hi) // 2
            j = k + 1 - mid
            short = (mid < p) & (j > 0) & (right(j - 1) > left(mid))
            active = lo < hi
            lo = jnp.where(active & short, mid + 1, lo)
            hi = jnp.where(active & ~short, mid, hi)
            return lo, hi

        i, _ = jax.lax.fori_loop(0, steps, body, (lo, hi), unroll=True)
        j = k + 1 - i
        a = jnp.where(i > 0, left(i - 1), neg_inf)
        b = jnp.where(j > 0, right(j - 1), neg_inf)
        return jnp.maximum(a, b)

    k_lo = jnp.clip((nv - 1) // 2, 0, n - 1)
    k_hi = jnp.clip(nv // 2, 0, n - 1)
    ab = kth(jnp.stack([k_lo, k_hi], axis=-1))
    a, b = ab[..., 0], ab[..., 1]
    out = _midpoint(a, b, k_lo == k_hi)
    # An infinite centre: the deviations of the elements equal to it are NaN (inf - inf), the
    # others +inf.
    n_eq = jnp.sum(s == m, axis=-1)
    inf_out = jnp.where((nan_policy == "omit") & (nv - n_eq > 0), jnp.inf, jnp.nan).astype(s.dtype)
    out = jnp.where(jnp.isinf(med), inf_out, out)
    if nan_policy == "omit":
        return jnp.where(nv > 0, out, jnp.nan)
    return jnp.where(jnp.any(isnan, axis=-1) | jnp.isnan(med), jnp.nan, out)


def median_abs_deviation(
    x: ArrayLike,
    axis: int | Sequence[int] | None = 0,
    center: Callable[..., jax.Array] | None = None,
    scale: float | str = 1.0,
    nan_policy: str = "propagate",
) -> jax.Array:
    """Median absolute deviation ``median(|x - center(x)|) / scale``, as scipy's.

    Args:
      x: real array.
      axis: static int, tuple or ``None``; scipy's default ``0`` (the agents axis).
      center: ``None`` for the median (default), or a callable
        ``center(x, axis=..., keepdims=True)`` such as ``jnp.mean``.
      scale: divisor, a number or ``"normal"`` (0.6745, so the result estimates a normal
        sigma: ``1.4826 * MAD``).
      nan_policy: ``"propagate"``, ``"omit"`` or ``"raise"``.

    Returns:
      The MAD; float dtype, ``x``'s shape without the reduced axes.

    Raises:
      TypeError: for non-real ``x``.
      ValueError: for a bad option, axis or an empty reduced axis.

    NaN and inf:
      As ``nan_policy``. An infinite value gives an infinite or NaN MAD only if it reaches
      the middle of the deviations.

    Examples:
      >>> import jax.numpy as jnp
      >>> median_abs_deviation(jnp.array([1.0, 2.0, 3.0, 4.0, 100.0]))
      Array(1., dtype=float32)
    """
    fn = "median_abs_deviation"
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    if isinstance(scale, str):
        _checks.check_option(fn, "scale", scale, ("normal",))
        scale = 1.0 / MAD_NORMAL_SCALE
    if center is not None and not callable(center):
        raise TypeError(f"{fn}: 'center' must be None or a callable; got {center!r}.")
    xs, axes, shape = _reduce_last(fn, x, axis)
    if xs.shape[-1] == 0:
        raise ValueError(f"{fn}: cannot reduce over an empty axis.")
    if nan_policy == "raise":
        xs = _raise_on_nan(fn, xs, "x")
    if center is None:
        s = sort(xs, axis=-1)
        med = _median_sorted(s, nan_policy)
        return _mad_sorted(s, med, nan_policy) / jnp.asarray(scale, xs.dtype)
    else:
        if nan_policy == "omit" and center in (jnp.mean, np.mean):
            center = jnp.nanmean  # scipy drops NaNs before calling center
        med = center(xs, axis=-1, keepdims=True)
    dev = jnp.abs(xs - med)
    out = _median_sorted(sort(dev, axis=-1), nan_policy) / jnp.asarray(scale, xs.dtype)
    return out


def robust_zscore(a: ArrayLike, *, axis: int, nan_policy: str = "propagate") -> jax.Array:
    """Robust z-scores ``(a - median) / (1.4826 * MAD)`` along ``axis``.

    The population baseline of each agent: how many robust standard deviations it sits from
    the population median. With ``MAD = 0`` (more than half the values tie) the scale falls
    back to ``1.2533 * mean(|a - median|)`` (the mean absolute deviation around the median,
    Iglewicz & Hoaglin's rule), and if that is 0 too (all values equal) every z-score is 0.

    Args:
      a: real array.
      axis: static axis over which the baseline is taken (the agents axis, e.g. 0 for
        ``[agents, features]``); required, since populations are explicit in jaxstats.
      nan_policy: ``"propagate"`` (a NaN makes its whole slice NaN), ``"omit"`` (NaN entries
        give NaN and are left out of the median/MAD) or ``"raise"``.

    Returns:
      Array of the shape of ``a``; float dtype. Differentiable (finite gradients at MAD = 0).

    Raises:
      TypeError: for non-real ``a`` or a non-int ``axis``.
      ValueError: for a bad option or axis.

    NaN and inf:
      As ``nan_policy``; ``±inf`` entries get ``±inf`` scores while the baseline stays finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> z = robust_zscore(jnp.array([1.0, 2.0, 3.0, 4.0, 100.0]), axis=0)
      >>> [round(float(v), 3) for v in z]
      [-1.349, -0.674, 0.0, 0.674, 65.426]

    References:
      Iglewicz and Hoaglin, "How to Detect and Handle Outliers", ASQC, 1993.
    """
    fn = "robust_zscore"
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _checks.as_float_array(fn, "a", a)
    if x.ndim == 0:
        raise ValueError(f"{fn}: 'a' must have at least one axis; got a scalar.")
    axis = _checks.check_axis(fn, "axis", axis, x.ndim)
    if nan_policy == "raise":
        x = _raise_on_nan(fn, x, "a")
    xs = jnp.moveaxis(x, axis, -1)
    if xs.shape[-1] == 0:
        return x
    z, _, _ = _zscore_last(xs, sort(xs, axis=-1), nan_policy)
    return jnp.moveaxis(z, -1, axis)


def _zscore_last(xs, s, nan_policy):
    """Robust z of rows ``xs`` given their sorted copy ``s``: ``(z, median, mad)``."""
    isnan = jnp.isnan(xs)
    pol = "omit" if nan_policy == "omit" else "propagate"
    med0 = _median_sorted(s, pol)
    med = med0[..., None]
    dev = jnp.abs(xs - med)
    mad = _mad_sorted(s, med0, pol)[..., None]
    n_valid = jnp.sum(~isnan, axis=-1, keepdims=True).astype(xs.dtype)
    mean_ad = jnp.sum(jnp.where(isnan, 0.0, dev), axis=-1, keepdims=True) / jnp.maximum(n_valid, 1)
    denom = jnp.where(mad > 0, MAD_NORMAL_SCALE * mad, MEANAD_NORMAL_SCALE * mean_ad)
    ok = denom > 0
    safe = jnp.where(ok, denom, 1.0)  # double-where: no NaN gradient when the scale is 0
    z = jnp.where(ok, (xs - med) / safe, 0.0)
    if nan_policy == "propagate":
        z = jnp.where(jnp.any(isnan, axis=-1, keepdims=True), jnp.nan, z)
    else:
        z = jnp.where(isnan, jnp.nan, z)
    return z, med[..., 0], mad[..., 0]


class BaselineResult(NamedTuple):
    """Population baseline of every agent (see :func:`population_baseline`)."""

    percentile: jax.Array  # like x: each agent's percentile among its peers, in [0, 100]
    zscore: jax.Array  # like x: robust z-score against the population median / MAD
    median: jax.Array  # x without the agents axis: population median
    mad: jax.Array  # x without the agents axis: raw MAD (multiply by 1.4826 for a sigma)


def population_baseline(
    x: ArrayLike, *, axis: int = 0, kind: str = "rank", nan_policy: str = "propagate"
) -> BaselineResult:
    """Every agent against all its peers, in O(n log n): percentile, robust z, median, MAD.

    The naive baseline compares each agent with every other one (O(n^2) pairs). Here one
    argsort gives every agent's percentile (from the tie-group bounds in sorted order) and the
    median; one more sort, of the absolute deviations, gives the MAD.

    Args:
      x: real array, e.g. ``[agents, features]``.
      axis: static agents axis (default 0); all other axes are separate populations.
      kind: percentile kind, as :func:`jaxstats.percentileofscore`.
      nan_policy: ``"propagate"`` (a NaN makes that population NaN), ``"omit"`` (NaN agents
        get NaN and are excluded from their peers' baseline) or ``"raise"``.

    Returns:
      :class:`BaselineResult` ``(percentile, zscore, median, mad)``.

    Raises:
      TypeError: for non-real ``x`` or a non-int ``axis``.
      ValueError: for a bad option or axis, or an empty agents axis.

    NaN and inf:
      As ``nan_policy``. ``±inf`` agents are the extremes (percentile 0/100, z = ±inf).

    Examples:
      >>> import jax.numpy as jnp
      >>> b = population_baseline(jnp.array([1.0, 2.0, 3.0, 4.0, 100.0]))
      >>> b.percentile
      Array([ 20.,  40.,  60.,  80., 100.], dtype=float32)
      >>> b.median, b.mad
      (Array(3., dtype=float32), Array(1., dtype=float32))
    """
    fn = "population_baseline"
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    xf = _checks.as_float_array(fn, "x", x)
    if xf.ndim == 0:
        raise ValueError(f"{fn}: 'x' must have an agents axis; got a scalar.")
    axis = _checks.check_axis(fn, "axis", axis, xf.ndim)
    if xf.shape[axis] == 0:
        raise ValueError(f"{fn}: the agents axis {axis} is empty.")
    if nan_policy == "raise":
        xf = _raise_on_nan(fn, xf, "x")
    xs = jnp.moveaxis(xf, axis, -1)
    s, lo, hi = tie_bounds(xs)
    isnan = jnp.isnan(xs)
    n_valid = xs.shape[-1] - jnp.sum(isnan, axis=-1, keepdims=True)
    pct = _population_percentile_last(xs, n_valid, kind, bounds=(s, lo, hi))
    if nan_policy == "propagate":
        pct = jnp.where(n_valid < xs.shape[-1], jnp.nan, pct)
    else:
        pct = jnp.where(isnan, jnp.nan, pct)
    z, med, mad = _zscore_last(xs, s, nan_policy)
    return BaselineResult(
        percentile=jnp.moveaxis(pct, -1, axis),
        zscore=jnp.moveaxis(z, -1, axis),
        median=med,
        mad=mad,
    )
