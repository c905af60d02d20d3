r"""Exponentially weighted mean and variance: the cheapest decayed baseline (3 numbers)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._base import Sketch, _decay_factor, _decay_of, _example_spec, _keep_where, _prepare, _safe_div

__all__ = ["ewma", "EwmaState", "EwmaResult"]


class EwmaState(NamedTuple):
    """State of :func:`ewma` for one stream; every field has the event shape and float dtype.

    Attributes:
      weight: decayed number of observations :math:`W = \\sum_i \\lambda^{age_i}`, in
        ``[0, 1 / (1 - lambda))``; never negative.
      mean: weighted mean (0 when empty).
      m2: weighted sum of squared deviations from the mean, ``>= 0``.
    """

    weight: jax.Array
    mean: jax.Array
    m2: jax.Array


class EwmaResult(NamedTuple):
    """Result of :func:`ewma` ``query``; every field has the event shape.

    Attributes:
      weight: effective number of observations :math:`\\sum_i \\lambda^{age_i}`.
      mean: the exponentially weighted mean; NaN when empty.
      variance: the weighted variance ``m2 / weight`` (no small-sample correction); NaN when
        empty.
    """

    weight: jax.Array
    mean: jax.Array
    variance: jax.Array


def ewma(
    *,
    half_life: float | int | None = None,
    decay: float | int | None = None,
    dtype: Any = None,
) -> Sketch:
    r"""Exponentially weighted moving mean and variance of each feature.

    Observation :math:`x_i` has weight :math:`\lambda^{age_i}` where ``age`` counts the
    observations that arrived after it and :math:`\lambda = 2^{-1/h}` for half-life ``h``. The
    mean is :math:`\sum w_i x_i / \sum w_i` and the variance
    :math:`\sum w_i (x_i - \bar x)^2 / \sum w_i`: these equal pandas'
    ``ewm(halflife=h, adjust=True).mean()`` and ``.var(bias=True)``, with no start-up bias.
    The update is West's weighted Welford step (3 numbers per feature); use
    :func:`~jaxstats.sketch.moments` with ``half_life`` for decayed skewness and kurtosis.

    Merging is ordered in time: ``merge(a, b)`` treats ``a`` as the earlier segment and ages it
    by ``lambda**n_b``, recovered from ``b``'s weight as ``1 - (1 - lambda) W_b``. Laws:
    ``merge(init, s) == s`` exactly; associative and ``update(s, x) == merge(s, update(init,
    x))`` up to rounding; **not** commutative. Masked entries (``where=False``) neither add an
    observation nor age the state.

    Counts: the weight is bounded by ``1 / (1 - lambda)`` (about ``1.44 h``), so float32 is
    exact enough for any half-life below ~1e6 observations; it never stops counting.

    Args:
      half_life: half-life of the weights, in observations (static, > 0).
      decay: the per-observation factor :math:`\lambda \in (0, 1)` instead of ``half_life``.
      dtype: float dtype of the state; default: the example's float dtype.

    Returns:
      A :class:`~jaxstats.sketch.Sketch` with ``query(state) -> EwmaResult``.

    Raises:
      ValueError: if neither or both of ``half_life`` and ``decay`` are given, or they are
        out of range; if ``x`` or ``where`` does not match the event shape (trace time).
      TypeError: on a non-float ``dtype``, complex input or a non-bool ``where``.

    NaN and inf:
      A NaN observation makes that feature's mean and variance NaN from then on unless it is
      masked; an infinite one makes the mean infinite and the variance NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats import sketch
      >>> sk = sketch.ewma(half_life=1)
      >>> state = sketch.from_batch(sk, jnp.array([0.0, 0.0, 3.0]))
      >>> sk.query(state)
      EwmaResult(weight=Array(1.75, dtype=float32), mean=Array(1.714286, dtype=float32),
        variance=Array(2.204082, dtype=float32))

    References:
      West, "Updating mean and variance estimates: an improved method", CACM, 1979.
    """
    lam = _decay_factor("ewma", half_life, decay)
    if lam is None:
        raise ValueError(
            "ewma: give the decay as half_life=<observations> or decay=<factor in (0, 1)>; "
            "for undecayed moments use jaxstats.sketch.moments()."
        )
    fn = "ewma"

    def init_fn(example) -> EwmaState:
        event, dt = _example_spec(f"{fn}.init", example, dtype)
        z = jnp.zeros(event, dt)
        return EwmaState(z, z, z)

    def update_fn(state: EwmaState, x: ArrayLike, *, where: ArrayLike | None = None):
        x, mask = _prepare(f"{fn}.update", state.mean.shape, state.mean.dtype, x, where)
        wa = state.weight * lam
        w = wa + 1.0
        delta = x - state.mean
        mean = state.mean + delta / w
        m2 = state.m2 * lam + delta * delta * (wa / w)
        return _keep_where(mask, EwmaState(w, mean, m2), state)

    def merge_fn(a: EwmaState, b: EwmaState) -> EwmaState:
        f = _decay_of(lam, b.weight)
        wa = a.weight * f
        w = wa + b.weight
        rb = _safe_div(b.weight, w)
        delta = b.mean - a.mean
        mean = a.mean + delta * rb
        m2 = a.m2 * f + b.m2 + delta * delta * (wa * rb)
        return EwmaState(w, mean, m2)

    def query_fn(state: EwmaState) -> EwmaResult:
        nan = jnp.array(jnp.nan, state.mean.dtype)
        empty = state.weight <= 0
        mean = jnp.where(empty, nan, state.mean)
        var = jnp.where(empty, nan, _safe_div(state.m2, state.weight))
        return EwmaResult(state.weight, mean, var)

    return Sketch(init_fn, update_fn, merge_fn, query_fn)
