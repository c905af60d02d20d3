r"""Streaming count, mean, variance, skewness and kurtosis (Welford/Pébay), mergeable.

The state holds the count :math:`W`, the mean :math:`\mu` and the central sums
:math:`M_p = \sum_i w_i (x_i - \mu)^p` for :math:`p = 2, 3, 4`. One observation is folded in
with Welford's update generalised by Pébay to higher orders; two states are merged with the
Chan–Pébay pairwise formulas, so splitting a stream anywhere and merging gives the one-pass
result (up to rounding).

Every accumulator is a *double word* (``hi + lo``, twice the working precision): counts stay
exact up to 2**48 in float32, and the sums keep absorbing small increments after 2**24
observations instead of silently freezing (a plain float32 sum of squares stops growing there).
"""

from __future__ import annotations

from math import comb
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._base import (
    Sketch,
    _decay_factor,
    _decay_of,
    _dw_add,
    _dw_add_dw,
    _example_spec,
    _keep_where,
    _prepare,
    _safe_div,
)

__all__ = ["moments", "MomentsState", "MomentsResult"]


class MomentsState(NamedTuple):
    """State of :func:`moments` for one stream; every field has the event shape and the
    state's float dtype. ``*_lo`` fields are the low words of double-word accumulators
    (``value = hi + lo``, ``|lo| <= ulp(hi) / 2``).

    Attributes:
      count: observations folded in (the decayed weight ``sum(decay**age)`` with decay);
        never negative; exact up to 2**48 (float32) without decay.
      count_lo: low word of ``count``.
      mean: running mean (0 when empty).
      mean_lo: low word of ``mean``.
      m2: sum of squared deviations from the mean, ``>= 0``.
      m2_lo: low word of ``m2``.
      m3: sum of cubed deviations.
      m3_lo: low word of ``m3``.
      m4: sum of fourth-power deviations, ``>= 0``.
      m4_lo: low word of ``m4``.
    """

    count: jax.Array
    count_lo: jax.Array
    mean: jax.Array
    mean_lo: jax.Array
    m2: jax.Array
    m2_lo: jax.Array
    m3: jax.Array
    m3_lo: jax.Array
    m4: jax.Array
    m4_lo: jax.Array


class MomentsResult(NamedTuple):
    """Result of :func:`moments` ``query``; every field has the event shape.

    Attributes:
      count: number of observations (effective weight with decay), rounded to the dtype.
      mean: the mean; NaN when empty.
      variance: ``M2 / (count - ddof)``; NaN when ``count <= ddof``.
      skewness: ``m3 / m2**1.5`` as ``scipy.stats.skew`` (bias-corrected when
        ``bias=False``); NaN for constant data or when empty.
      kurtosis: ``m4 / m2**2`` minus 3 when ``fisher=True``, as ``scipy.stats.kurtosis``;
        NaN for constant data or when empty.
    """

    count: jax.Array
    mean: jax.Array
    variance: jax.Array
    skewness: jax.Array
    kurtosis: jax.Array


# ---------------------------------------------------------------------------------------------
# Central-moment kernels shared with the moment-based quantile sketch. A "central accumulator"
# is (count_hi, count_lo, mean_hi, mean_lo, [(M_p hi, M_p lo) for p = 2..K]).
# ---------------------------------------------------------------------------------------------


def _central_push(acc, x, inv_scale=None):
    """Fold one observation ``x`` (weight 1) into a central accumulator (Pébay, 2008).

    With ``inv_scale``, the sums are kept in units of ``1 / inv_scale`` (``M_p`` of
    ``(x - mean) * inv_scale``); the mean stays in the units of ``x``.
    """
    c_hi, c_lo, mu_hi, mu_lo, ms = acc
    wa = c_hi + c_lo
    w = wa + 1.0
    r = 1.0 / w  # weight share of the new point
    q = wa * r  # weight share of the old state
    delta = (x - mu_hi) - mu_lo
    d_mean = delta * r
    if inv_scale is not None:
        delta = delta * inv_scale
    d = delta * r
    old = [hi + lo for hi, lo in ms]  # M_2 .. M_K before the update
    k_max = len(ms) + 1
    new_ms = []
    for p in range(2, k_max + 1):
        # M_p += sum_{j=1}^{p-2} C(p, j) (-delta r)^j M_{p-j} + delta^p q (q^{p-1} + (-1)^p r^{p-1})
        inc = delta**p * q * (q ** (p - 1) + (-1.0) ** p * r ** (p - 1))
        for j in range(1, p - 1):
            inc = inc + comb(p, j) * (-d) ** j * old[p - j - 2]
        # The first observation adds nothing (and must not add inf * 0 = NaN for huge x).
        inc = jnp.where(wa > 0, inc, jnp.zeros_like(inc))
        new_ms.append(_dw_add(ms[p - 2][0], ms[p - 2][1], inc))
    c_hi, c_lo = _dw_add(c_hi, c_lo, jnp.ones_like(c_hi))
    mu_hi, mu_lo = _dw_add(mu_hi, mu_lo, d_mean)
    return c_hi, c_lo, mu_hi, mu_lo, new_ms


def _central_merge(a, b, inv_scale=None):
    """Merge two central accumulators (Chan et al., 1979; Pébay, 2008; arbitrary weights).

    ``inv_scale`` as in :func:`_central_push` (both sides already in those units)."""
    ac_hi, ac_lo, amu_hi, amu_lo, ams = a
    bc_hi, bc_lo, bmu_hi, bmu_lo, bms = b
    wa = ac_hi + ac_lo
    wb = bc_hi + bc_lo
    w = wa + wb
    ra = _safe_div(wa, w)
    rb = _safe_div(wb, w)
    d_hi = bmu_hi - amu_hi
    d_lo = bmu_lo - amu_lo
    delta = d_hi + d_lo
    if inv_scale is not None:
        delta = delta * inv_scale
    both = (wa > 0) & (wb > 0)  # with an empty side the sums just add (exact identity)
    a_old = [hi + lo for hi, lo in ams]
    b_old = [hi + lo for hi, lo in bms]
    k_max = len(ams) + 1
    new_ms = []
    for p in range(2, k_max + 1):
        inc = delta**p * w * ra * rb * (ra ** (p - 1) - (-rb) ** (p - 1))
        for j in range(1, p - 1):
            inc = inc + comb(p, j) * delta**j * (
                (-rb) ** j * a_old[p - j - 2] + ra**j * b_old[p - j - 2]
            )
        inc = jnp.where(both, inc, jnp.zeros_like(inc))
        hi, lo = _dw_add_dw(ams[p - 2][0], ams[p - 2][1], bms[p - 2][0], bms[p - 2][1])
        new_ms.append(_dw_add(hi, lo, inc))
    c_hi, c_lo = _dw_add_dw(ac_hi, ac_lo, bc_hi, bc_lo)
    mu_hi, mu_lo = _dw_add(amu_hi, amu_lo, d_hi * rb)
    mu_hi, mu_lo = _dw_add(mu_hi, mu_lo, d_lo * rb)
    return c_hi, c_lo, mu_hi, mu_lo, new_ms


def _central_scale(acc, f):
    """Multiply the weights of a central accumulator by ``f`` (decay); the mean is unchanged."""
    c_hi, c_lo, mu_hi, mu_lo, ms = acc
    return c_hi * f, c_lo * f, mu_hi, mu_lo, [(hi * f, lo * f) for hi, lo in ms]


# ---------------------------------------------------------------------------------------------


def _to_acc(s: MomentsState):
    return (
        s.count,
        s.count_lo,
        s.mean,
        s.mean_lo,
        [(s.m2, s.m2_lo), (s.m3, s.m3_lo), (s.m4, s.m4_lo)],
    )


def _from_acc(acc) -> MomentsState:
    c_hi, c_lo, mu_hi, mu_lo, ms = acc
    (m2, m2_lo), (m3, m3_lo), (m4, m4_lo) = ms
    return MomentsState(c_hi, c_lo, mu_hi, mu_lo, m2, m2_lo, m3, m3_lo, m4, m4_lo)


def moments(
    *,
    half_life: float | int | None = None,
    decay: float | int | None = None,
    ddof: int = 0,
    bias: bool = True,
    fisher: bool = True,
    dtype: Any = None,
) -> Sketch:
    r"""Streaming count, mean, variance, skewness and kurtosis of each feature.

    One observation updates the mean and the central sums :math:`M_2, M_3, M_4` with the
    Welford/Pébay recurrences; two states merge with the Chan–Pébay pairwise formulas. The
    conventions are numpy's and scipy's defaults: ``variance = M2 / (n - ddof)`` (``ddof=0``
    as ``np.var``); ``skewness = m3 / m2**1.5`` and ``kurtosis = m4 / m2**2 - 3`` with
    :math:`m_p = M_p / n` (``bias=True``, ``fisher=True`` as ``scipy.stats.skew`` and
    ``scipy.stats.kurtosis``). ``bias=False`` applies scipy's corrections (skewness for
    ``n > 2``, kurtosis for ``n > 3``; smaller ``n`` keep the biased value, as scipy does).

    With decay (``half_life`` h in observations, or the per-observation factor ``decay``),
    every earlier observation's weight is multiplied by :math:`\lambda = 2^{-1/h}` each time a
    new observation arrives (masked entries do not age the state); ``count`` is then the
    effective weight :math:`\sum \lambda^{age}`, and only ``ddof=0``, ``bias=True`` apply.
    Merging is then ordered in time: ``merge(a, b)`` treats ``a`` as the earlier segment and
    ages it by ``lambda**n_b`` (recovered exactly from ``b``'s weight), so it is associative
    but not commutative.

    Laws: ``merge(init, s) == s`` exactly; associative (up to rounding); commutative without
    decay; ``update(s, x) == merge(s, update(init, x))`` and split-and-merge equal the
    one-pass state up to rounding.

    Counts: ``count`` is a double word, exact up to 2**48 observations in float32 (2**106 in
    float64); the sums are double words too, so moments keep refining beyond 2**24
    observations. ``MomentsResult.count`` is that count rounded to the dtype.

    Args:
      half_life: optional half-life of the exponential decay, in observations (static).
      decay: optional per-observation factor in (0, 1) instead of ``half_life`` (static).
      ddof: delta degrees of freedom of the variance (static int >= 0).
      bias: False applies scipy's small-sample corrections to skewness and kurtosis.
      fisher: True (default) returns excess kurtosis (normal -> 0); False, Pearson's.
      dtype: float dtype of the state; default: the example's float dtype (ints -> the
        default float dtype).

    Returns:
      A :class:`~jaxstats.sketch.Sketch`: ``init(example) -> MomentsState`` (example of the
      event shape, e.g. ``jnp.zeros(8)`` for 8 features), ``update(state, x, *, where=None)``
      with ``x`` of the event shape, ``merge(a, b)``, ``query(state) -> MomentsResult``.

    Raises:
      ValueError: on both ``half_life`` and ``decay``, a non-positive half-life, a decay
        outside (0, 1), a negative ``ddof``, or ``ddof``/``bias=False`` with decay; on ``x`` or
        ``where`` not matching the event shape (at trace time).
      TypeError: on a non-float ``dtype``, a complex input or a non-bool ``where``.

    NaN and inf:
      A NaN observation makes every result of that feature NaN from then on (other features
      and agents are untouched) unless it is masked with ``where``. An infinite observation
      makes the mean infinite and the higher moments NaN. In float32, deviations beyond
      ~4e9 overflow the fourth-power sums (kurtosis, skewness NaN) and beyond ~1.8e19 the
      squared sums (variance ``inf``, as in a float32 ``np.var``); float64 holds ~1e77.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxstats import sketch
      >>> sk = sketch.moments()
      >>> state = sketch.from_batch(sk, jnp.array([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]))
      >>> sk.query(state)
      MomentsResult(count=Array(8., dtype=float32), mean=Array(5., dtype=float32),
        variance=Array(4., dtype=float32), skewness=Array(0.65625, dtype=float32),
        kurtosis=Array(-0.21875, dtype=float32))

      Per-agent states batch with ``vmap``; ``where`` skips missing observations:

      >>> states = jax.vmap(sk.init)(jnp.zeros((3, 2)))
      >>> x = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, jnp.nan]])
      >>> states = jax.vmap(sk.update)(states, x, where=~jnp.isnan(x))
      >>> jax.vmap(sk.query)(states).count
      Array([[1., 1.],
             [1., 1.],
             [1., 0.]], dtype=float32)

    References:
      Welford, "Note on a method for calculating corrected sums of squares and products",
      Technometrics, 1962. Chan, Golub and LeVeque, "Updating formulae and a pairwise
      algorithm for computing sample variances", 1979. Pébay, "Formulas for robust, one-pass
      parallel computation of covariances and arbitrary-order statistical moments", Sandia
      report SAND2008-6212, 2008.
    """
    lam = _decay_factor("moments", half_life, decay)
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        raise ValueError(f"moments: 'ddof' must be a non-negative int; got {ddof!r}.")
    if lam is not None and (ddof != 0 or not bias):
        raise ValueError(
            "moments: with decay only ddof=0 and bias=True are defined (the weights are not "
            f"frequencies); got ddof={ddof!r}, bias={bias!r}."
        )
    fn = "moments"

    def init_fn(example) -> MomentsState:
        event, dt = _example_spec(f"{fn}.init", example, dtype)
        z = jnp.zeros(event, dt)
        return MomentsState(*([z] * 10))

    def update_fn(state: MomentsState, x: ArrayLike, *, where: ArrayLike | None = None):
        x, mask = _prepare(f"{fn}.update", state.mean.shape, state.mean.dtype, x, where)
        acc = _to_acc(state)
        if lam is not None:
            acc = _central_scale(acc, lam)
        new = _from_acc(_central_push(acc, x))
        return _keep_where(mask, new, state)

    def merge_fn(a: MomentsState, b: MomentsState) -> MomentsState:
        acc_a = _to_acc(a)
        if lam is not None:
            acc_a = _central_scale(acc_a, _decay_of(lam, b.count + b.count_lo))
        return _from_acc(_central_merge(acc_a, _to_acc(b)))

    def query_fn(state: MomentsState) -> MomentsResult:
        dt = state.mean.dtype
        nan = jnp.array(jnp.nan, dt)
        n = state.count + state.count_lo
        empty = n <= 0
        mean = jnp.where(empty, nan, state.mean + state.mean_lo)
        big_m2 = state.m2 + state.m2_lo
        m2 = jnp.where(empty, nan, _safe_div(big_m2, n))
        m3 = jnp.where(empty, nan, _safe_div(state.m3 + state.m3_lo, n))
        m4 = jnp.where(empty, nan, _safe_div(state.m4 + state.m4_lo, n))
        dof = n - ddof
        variance = jnp.where(dof > 0, _safe_div(big_m2, dof), nan)
        # scipy: moments of (numerically) constant data are undefined.
        zero = m2 <= (jnp.finfo(dt).resolution * mean) ** 2
        ok = ~(zero | empty)
        m2s = jnp.where(ok, m2, jnp.ones_like(m2))
        skew = jnp.where(ok, m3 / m2s**1.5, nan)
        kurt = jnp.where(ok, m4 / m2s**2, nan)
        if not bias:
            n2 = jnp.where(n > 2, n - 2, jnp.ones_like(n))
            n3 = jnp.where(n > 3, (n - 2) * (n - 3), jnp.ones_like(n))
            skew = jnp.where(n > 2, skew * jnp.sqrt(n * (n - 1)) / n2, skew)
            corrected = ((n + 1) * (kurt - 3) + 6) * (n - 1) / n3 + 3
            kurt = jnp.where(n > 3, corrected, kurt)
        if fisher:
            kurt = kurt - 3
        return MomentsResult(n, mean, variance, skew, kurt)

    return Sketch(init_fn, update_fn, merge_fn, query_fn)
