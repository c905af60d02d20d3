r"""Fixed-size mergeable quantile sketches.

* :func:`ddsketch`: logarithmic buckets with a **relative-error guarantee** :math:`\alpha`
  (DDSketch). Fixed bucket grid, so merging is elementwise addition of counts (``psum``-able)
  plus ``min``/``max`` of the extremes; uint32 counters; optional decay.
* :func:`momentsketch`: a compact (about 100 bytes per stream) sketch of power and log
  moments; quantiles come from a maximum-entropy density fitted at query time. No range to
  configure, O(k^2) update, but no worst-case guarantee: use it when memory is tight.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._base import (
    Sketch,
    _decay_factor,
    _decay_of,
    _example_spec,
    _keep_where,
    _prepare,
    _sat_add_u32,
)
from .moments import _central_merge, _central_push

__all__ = ["ddsketch", "DDSketchState", "momentsketch", "MomentSketchState"]

_U32_MAX = np.uint32(np.iinfo(np.uint32).max)


def _sat_inc_u32(c: jax.Array) -> jax.Array:
    """``c + 1`` for uint32 counts, saturating at 2**32 - 1."""
    return jnp.where(c == _U32_MAX, c, c + jnp.uint32(1))


def _as_q(fn: str, q: Any, dt: Any) -> jax.Array:
    if isinstance(q, (list, tuple)) or np.isscalar(q):
        q = np.asarray(q)
    qdt = jnp.result_type(q)
    if not (jnp.issubdtype(qdt, jnp.floating) or jnp.issubdtype(qdt, jnp.integer)):
        raise TypeError(f"{fn}: 'q' must be a real number or array in [0, 1]; got dtype {qdt}.")
    return jnp.asarray(q).astype(dt)


def _finish(q, value, mn, mx, empty):
    """Clip to the observed range; exact extremes at q = 0 and 1; NaN for empty or bad q."""
    nan = jnp.array(jnp.nan, value.dtype)
    value = jnp.clip(value, mn, mx)
    value = jnp.where(q <= 0, mn, jnp.where(q >= 1, mx, value))
    bad = empty | jnp.isnan(q) | (q < 0) | (q > 1)
    return jnp.where(bad, nan, value)


# ---------------------------------------------------------------------------------------------
# DDSketch
# ---------------------------------------------------------------------------------------------


class DDSketchState(NamedTuple):
    """State of :func:`ddsketch` for one stream.

    Attributes:
      counts: ``[*event, bins]`` observations per bucket, in value order (negative buckets from
        the most negative, then the zero bucket, then positive buckets upwards). uint32,
        saturating at 2**32 - 1 per bucket; the state's float dtype when decaying.
      min: ``[*event]`` smallest observation (``+inf`` when empty, NaN after a NaN).
      max: ``[*event]`` largest observation (``-inf`` when empty, NaN after a NaN).
    """

    counts: jax.Array
    min: jax.Array
    max: jax.Array


def ddsketch(
    relative_accuracy: float | int = 0.01,
    *,
    n_buckets: int = 1024,
    min_value: float | int = 1e-2,
    signed: bool = True,
    half_life: float | int | None = None,
    decay: float | int | None = None,
    dtype: Any = None,
) -> Sketch:
    r"""Quantiles with relative error :math:`\le \alpha`: logarithmic buckets (DDSketch).

    With :math:`\gamma = (1 + \alpha) / (1 - \alpha)`, a value :math:`x > 0` falls into the
    bucket of key :math:`k = \lceil \log_\gamma x \rceil`, which covers
    :math:`(\gamma^{k-1}, \gamma^k]`; the bucket answers :math:`2\gamma^k / (\gamma + 1)`, within
    a factor :math:`1 \pm \alpha` of every value in it. Negative values use the mirrored
    buckets and exact zeros a zero bucket, so ``counts`` is a histogram in value order.

    **Fixed grid.** The bucket grid is static: with ``signed=True`` there are
    ``(n_buckets - 1) // 2`` negative and ``n_buckets // 2`` positive buckets (plus zero)
    covering magnitudes from ``min_value`` up to
    about ``max_value = min_value * gamma ** (n_buckets // 2)``; with ``signed=False`` all
    ``n_buckets - 1`` buckets are positive. Because every state of a sketch shares this grid,
    ``merge`` is elementwise addition of counts (across devices: ``psum`` of ``counts``, ``pmin``
    of ``min``, ``pmax`` of ``max``). At ``alpha = 1%`` there are ~115 buckets per decade:
    1024 buckets (4 KB) span 9 decades in all — 4.4 per sign when signed (``[0.01, 276]`` by
    default), 8.9 when not (``[0.01, 7.6e6]``). Choose ``min_value`` per feature group so that
    the values of interest fall inside the range.

    **Collapse.** Magnitudes below ``min_value`` collapse into the lowest bucket of their sign
    (as DDSketch's collapsing-lowest store) and magnitudes above ``max_value`` into the highest;
    with ``signed=False``, negative values collapse into the zero bucket. Ranks stay exact at
    bucket resolution (order is preserved), and answers are clipped to the observed
    ``[min, max]``, so quantiles 0 and 1 are exact.

    **Guarantee.** For ``q`` in [0, 1] let :math:`x_q` be the element of zero-based rank
    :math:`\lfloor q (n - 1) \rfloor` (``np.quantile(..., method="lower")``). If
    :math:`x_q = 0` or :math:`|x_q| \in [\text{min\_value}, \text{max\_value}]` then
    :math:`|\hat x_q - x_q| \le \alpha |x_q|`. For a collapsed :math:`x_q` the error is at most
    ``min_value`` below the range and unbounded (but clipped to the observed max) above it.

    **Counts** are uint32 per bucket, exact up to 2**32 - 1 and then saturating (documented
    saturation, never wrapping); a ``psum`` across devices does not saturate. **Decay**
    (``half_life`` in observations or ``decay``) stores float counts, multiplies all buckets
    by :math:`\lambda` on each observation — O(n_buckets) per update instead of O(1) — and
    orders merges in time (``merge(a, b)``: ``a`` is earlier); ``min``/``max`` do not decay.

    Laws: without decay, identity, associativity, commutativity and
    ``update(s, x) == merge(s, update(init, x))`` hold bit for bit (integer counts); with decay,
    identity is exact and the others hold up to float rounding (merges are ordered in time).

    Args:
      relative_accuracy: :math:`\alpha` in (0, 1) (static).
      n_buckets: total buckets including the zero bucket (static, >= 3); memory is
        ``4 * n_buckets + 2 * itemsize`` bytes per stream (float counts with decay).
      min_value: smallest magnitude resolved with the guarantee (static, > 0).
      signed: keep negative buckets (default). False gives all buckets to positive values.
      half_life: optional decay half-life in observations (static).
      decay: optional per-observation decay factor in (0, 1) instead of ``half_life``.
      dtype: float dtype of ``min``/``max`` and of the answers; default: the example's.

    Returns:
      A :class:`~jaxstats.sketch.Sketch`; ``query(state, q)`` takes ``q`` scalar or array in
      [0, 1] and returns an array of shape ``q.shape + event``.

    Raises:
      ValueError: on ``relative_accuracy`` outside (0, 1), ``n_buckets < 3``, a non-positive
        ``min_value``, a grid whose top overflows the dtype, or bad decay arguments; on ``x`` or
        ``where`` not matching the event shape (trace time).
      TypeError: on non-float ``dtype``, complex input, non-bool ``where`` or non-real ``q``.

    NaN and inf:
      A NaN observation makes that feature's ``min``/``max`` NaN, so all its quantiles are NaN
      from then on (other features and agents are untouched) unless it is masked with ``where``.
      ``±inf`` collapse into the extreme buckets and are returned as the max/min at q = 1/0.
      Empty sketches and ``q`` outside [0, 1] answer NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats import sketch
      >>> sk = sketch.ddsketch(relative_accuracy=0.01)
      >>> state = sketch.from_batch(sk, jnp.array([1.0, 2.0, 3.0, 4.0, 100.0]))
      >>> sk.query(state, jnp.array([0.0, 0.5, 0.75, 1.0]))
      Array([  1.   ,   2.974,   4.015, 100.   ], dtype=float32)

    References:
      Masson, Rim and Lee, "DDSketch: a fast and fully-mergeable quantile sketch with
      relative-error guarantees", PVLDB 12(12), 2019.
    """
    fn = "ddsketch"
    if isinstance(relative_accuracy, bool) or not isinstance(relative_accuracy, (int, float)):
        raise TypeError(
            f"{fn}: 'relative_accuracy' must be a static float; got {relative_accuracy!r}."
        )
    if not 0.0 < float(relative_accuracy) < 1.0:
        raise ValueError(
            f"{fn}: 'relative_accuracy' must lie strictly between 0 and 1; "
            f"got {relative_accuracy!r}."
        )
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 3:
        raise ValueError(f"{fn}: 'n_buckets' must be an int >= 3; got {n_buckets!r}.")
    if not (isinstance(min_value, (int, float)) and math.isfinite(min_value) and min_value > 0):
        raise ValueError(f"{fn}: 'min_value' must be a positive finite number; got {min_value!r}.")
    lam = _decay_factor(fn, half_life, decay)
    alpha = float(relative_accuracy)
    log_gamma = math.log1p(2.0 * alpha / (1.0 - alpha))
    n_neg = (n_buckets - 1) // 2 if signed else 0
    n_pos = n_buckets - 1 - n_neg
    key_lo = math.ceil(math.log(min_value) / log_gamma - 1e-9)
    top = math.exp((key_lo + n_pos - 1) * log_gamma)
    # Static bucket representatives in value order (float64 here, cast to the state dtype).
    rep_side = 2.0 * np.exp((key_lo + np.arange(n_pos)) * log_gamma) / (1.0 + math.exp(log_gamma))
    reps = np.concatenate([-rep_side[:n_neg][::-1], [0.0], rep_side])
    inv_log_gamma = 1.0 / log_gamma

    def _check_grid(dt):
        if top * (1.0 + alpha) > float(jnp.finfo(dt).max):
            raise ValueError(
                f"{fn}: the top bucket ({top:.3g}) overflows {jnp.dtype(dt).name}; lower "
                "'min_value' or 'n_buckets', or raise 'relative_accuracy'."
            )

    def _index(x):
        """Bucket index of each entry of ``x`` (event shape), int32."""
        mag = jnp.abs(x)
        safe = jnp.where((mag > 0) & jnp.isfinite(mag), mag, jnp.ones_like(mag))
        key = jnp.ceil(jnp.log(safe) * inv_log_gamma) - key_lo
        j = jnp.clip(key, 0, n_pos - 1)
        j = jnp.where(jnp.isposinf(mag), n_pos - 1, j).astype(jnp.int32)
        pos = n_neg + 1 + j
        if signed:
            neg = n_neg - 1 - jnp.minimum(j, n_neg - 1)
        else:
            neg = jnp.zeros_like(j)
        idx = jnp.where(x > 0, pos, jnp.where(x < 0, neg, n_neg))
        return jnp.where(jnp.isnan(x), n_neg, idx).astype(jnp.int32)

    def init_fn(example) -> DDSketchState:
        event, dt = _example_spec(f"{fn}.init", example, dtype)
        _check_grid(dt)
        cdt = jnp.uint32 if lam is None else dt
        return DDSketchState(
            jnp.zeros(event + (n_buckets,), cdt),
            jnp.full(event, jnp.inf, dt),
            jnp.full(event, -jnp.inf, dt),
        )

    def update_fn(state: DDSketchState, x: ArrayLike, *, where: ArrayLike | None = None):
        event = state.min.shape
        x, mask = _prepare(f"{fn}.update", event, state.min.dtype, x, where)
        # One flat scatter per update: the index of each feature's bucket in the flattened
        # counts; masked entries point past the end and are dropped (O(1), no gather).
        n_rows = math.prod(event)
        flat_idx = jnp.arange(n_rows, dtype=jnp.int32) * n_buckets + _index(x).reshape(-1)
        if mask is not None:
            flat_idx = jnp.where(mask.reshape(-1), flat_idx, n_rows * n_buckets)
        flat = state.counts.reshape(-1)
        if lam is None:
            flat = flat.at[flat_idx].apply(_sat_inc_u32, mode="drop", unique_indices=True)
        else:
            keep = jnp.ones(event, bool) if mask is None else mask
            scale = jnp.where(keep, lam, 1.0).astype(flat.dtype)
            flat = (state.counts * scale[..., None]).reshape(-1)
            flat = flat.at[flat_idx].add(jnp.ones((), flat.dtype), mode="drop", unique_indices=True)
        mn, mx = jnp.minimum(state.min, x), jnp.maximum(state.max, x)
        if mask is not None:
            mn, mx = jnp.where(mask, mn, state.min), jnp.where(mask, mx, state.max)
        return DDSketchState(flat.reshape(state.counts.shape), mn, mx)

    def merge_fn(a: DDSketchState, b: DDSketchState) -> DDSketchState:
        if lam is None:
            counts = _sat_add_u32(a.counts, b.counts)
        else:
            f = _decay_of(lam, jnp.sum(b.counts, axis=-1))
            counts = a.counts * f[..., None] + b.counts
        return DDSketchState(counts, jnp.minimum(a.min, b.min), jnp.maximum(a.max, b.max))

    def query_fn(state: DDSketchState, q: ArrayLike | Sequence[float]) -> jax.Array:
        dt = state.min.dtype
        q = _as_q(f"{fn}.query", q, dt)
        qs, ev = q.shape, state.min.shape
        lead = (1,) * len(qs)
        counts = state.counts.astype(dt)
        cum = jnp.cumsum(counts, axis=-1)
        total = cum[..., -1]
        qb = q.reshape(qs + (1,) * len(ev))
        target = qb * jnp.maximum(total - 1, 0).reshape(lead + ev)
        below = cum.reshape(lead + ev + (n_buckets,)) <= target[..., None]
        idx = jnp.minimum(jnp.sum(below, axis=-1), n_buckets - 1)
        value = jnp.asarray(reps, dt)[idx]
        mn, mx = state.min.reshape(lead + ev), state.max.reshape(lead + ev)
        return _finish(qb, value, mn, mx, (total <= 0).reshape(lead + ev))

    return Sketch(init_fn, update_fn, merge_fn, query_fn)


# ---------------------------------------------------------------------------------------------
# Moment sketch with a maximum-entropy query
# ---------------------------------------------------------------------------------------------


class MomentSketchState(NamedTuple):
    """State of :func:`momentsketch` for one stream (``*_lo``: low words of double words).

    Attributes:
      count: ``[*event]`` observations folded in (exact up to 2**48 in float32).
      count_lo: ``[*event]`` low word of ``count``.
      min: ``[*event]`` smallest observation (``+inf`` when empty).
      max: ``[*event]`` largest observation (``-inf`` when empty).
      mean: ``[*event]`` mean of ``x``.
      mean_lo: ``[*event]`` low word.
      m: ``[*event, k-1]`` central sums :math:`\\sum ((x - \\bar x) / s)^p`, ``p = 2..k``, in
        units of :math:`s`, the power of 2 at or above ``max - min`` (1 while that is 0), so no
        power overflows: ±1e30 data work in float32.
      m_lo: ``[*event, k-1]`` low words.
      log_mean: ``[*event]`` mean of ``log|x|`` (meaningful while all ``x`` share a sign and
        are non-zero).
      log_mean_lo: ``[*event]`` low word.
      log_m: ``[*event, k-1]`` central sums of ``log|x|``.
      log_m_lo: ``[*event, k-1]`` low words.
    """

    count: jax.Array
    count_lo: jax.Array
    min: jax.Array
    max: jax.Array
    mean: jax.Array
    mean_lo: jax.Array
    m: jax.Array
    m_lo: jax.Array
    log_mean: jax.Array
    log_mean_lo: jax.Array
    log_m: jax.Array
    log_m_lo: jax.Array


def _split(hi, lo):
    return [(hi[..., i], lo[..., i]) for i in range(hi.shape[-1])]


def _stack(ms):
    return jnp.stack([hi for hi, _ in ms], axis=-1), jnp.stack([lo for _, lo in ms], axis=-1)


def momentsketch(
    k: int = 6,
    *,
    n_grid: int = 512,
    n_iter: int = 40,
    dtype: Any = None,
) -> Sketch:
    r"""Compact quantile sketch: power and log moments, maximum-entropy quantiles.

    The state keeps the count, ``min``, ``max`` and the central sums of order 2..k of ``x`` and
    of ``log|x|`` (double words, Welford/Pébay updates and Chan–Pébay merges, as
    :func:`~jaxstats.sketch.moments`): ``4 k + 4`` numbers, 112 bytes per stream at ``k = 6``
    in float32, updated in O(k^2) flops with no sort and no branch.

    ``query(state, q)`` fits the maximum-entropy density on ``[min, max]`` whose first ``k``
    Chebyshev moments match the sketch (Newton's method on the convex dual, ``n_iter`` damped
    steps on an ``n_grid``-point grid) and inverts its CDF. When all observations are positive
    (or all negative) the fit uses the log moments on ``log|x|`` instead, which captures
    heavy tails (lognormal and Pareto data are exact families there); mixed-sign data use the
    power moments. The query costs ~``n_iter * n_grid * (k + 1)**2`` flops per stream
    (about 1 ms): answer rarely, update often.

    Accuracy (rank error, measured in the tests and ``experiments/bench_memory.py``): well
    under 1% on smooth unimodal data and heavy-tailed one-signed data, a few percent on
    multimodal data; no worst-case guarantee. Point masses (discrete data) are smoothed over,
    and a single far outlier stretches ``[min, max]`` and costs resolution. Constant data are
    answered exactly. In float32 keep ``k <= 8`` (the change to Chebyshev moments loses about
    ``3**k`` ulps).

    Laws: identity exact; associativity, commutativity, update-as-merge and split-and-merge
    up to rounding.

    Args:
      k: highest moment order (static int in [2, 12]).
      n_grid: quadrature points of the query (static int >= 16).
      n_iter: Newton steps of the query (static int >= 1).
      dtype: float dtype of the state; default: the example's.

    Returns:
      A :class:`~jaxstats.sketch.Sketch`; ``query(state, q)`` returns ``q.shape + event``.

    Raises:
      ValueError: on ``k``, ``n_grid`` or ``n_iter`` out of range; on ``x`` or ``where`` not
        matching the event shape (trace time).
      TypeError: on non-float ``dtype``, complex input, non-bool ``where`` or non-real ``q``.

    NaN and inf:
      A NaN or infinite observation makes that feature's quantiles NaN (except that ``q = 0``
      and ``q = 1`` still return the min and max) unless masked; empty sketches and ``q``
      outside [0, 1] answer NaN.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxstats import sketch
      >>> sk = sketch.momentsketch()
      >>> x = jnp.exp(jax.random.normal(jax.random.key(0), (10_000,)))
      >>> est = sk.query(sketch.from_batch(sk, x), jnp.array([0.1, 0.5, 0.9]))
      >>> exact = jnp.quantile(x, jnp.array([0.1, 0.5, 0.9]))
      >>> bool(jnp.all(jnp.abs(est / exact - 1) < 0.03))
      True

    References:
      Gan, Ding, Tai, Sharan and Bailis, "Moment-based quantile sketches for efficient high
      cardinality aggregation queries", PVLDB 11(11), 2018.
    """
    fn = "momentsketch"
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 12:
        raise ValueError(f"{fn}: 'k' must be an int in [2, 12]; got {k!r}.")
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 16:
        raise ValueError(f"{fn}: 'n_grid' must be an int >= 16; got {n_grid!r}.")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"{fn}: 'n_iter' must be an int >= 1; got {n_iter!r}.")

    # Static quadrature grid and Chebyshev machinery (float64 numpy, cast per dtype).
    t_grid = -1.0 + (2.0 * np.arange(n_grid) + 1.0) / n_grid
    basis = np.polynomial.chebyshev.chebvander(t_grid, k)  # [n_grid, k + 1]
    cheb_from_power = np.zeros((k + 1, k + 1))
    for j in range(k + 1):
        e = np.zeros(j + 1)
        e[j] = 1.0
        cheb_from_power[j, : j + 1] = np.polynomial.chebyshev.cheb2poly(e)
    binom = np.array(
        [[math.comb(j, i) if i <= j else 0 for i in range(k + 1)] for j in range(k + 1)], float
    )
    steps = np.array([1.0, 0.5, 0.25, 0.125, 1.0 / 16, 1.0 / 64, 0.0])

    def init_fn(example) -> MomentSketchState:
        event, dt = _example_spec(f"{fn}.init", example, dtype)
        z = jnp.zeros(event, dt)
        zk = jnp.zeros(event + (k - 1,), dt)
        return MomentSketchState(
            z, z, jnp.full(event, jnp.inf, dt), jnp.full(event, -jnp.inf, dt),
            z, z, zk, zk, z, z, zk, zk,
        )

    def _scale(mn, mx):
        """Units of the power sums: the power of 2 at or above the range ``max - min`` (1 while
        the range is 0), so ``|x - mean| / scale <= 1`` and no power overflows; rescaling by a
        ratio of powers of 2 is exact."""
        rng = mx - mn
        ok = rng > 0
        _, e = jnp.frexp(jnp.where(ok, rng, jnp.ones_like(rng)))
        return jnp.where(ok, jnp.ldexp(jnp.ones_like(rng), e), jnp.ones_like(rng))

    def _rescale(hi, lo, f):
        p = jnp.arange(2, k + 1, dtype=hi.dtype).reshape((1,) * f.ndim + (k - 1,))
        fp = f[..., None] ** p
        return hi * fp, lo * fp

    def update_fn(state: MomentSketchState, x: ArrayLike, *, where: ArrayLike | None = None):
        x, mask = _prepare(f"{fn}.update", state.min.shape, state.min.dtype, x, where)
        mn, mx = jnp.minimum(state.min, x), jnp.maximum(state.max, x)
        s_old, s_new = _scale(state.min, state.max), _scale(mn, mx)
        m_hi, m_lo = _rescale(state.m, state.m_lo, s_old / s_new)
        y = jnp.log(jnp.abs(jnp.where(x == 0, jnp.ones_like(x), x)))
        c, c_lo, mu, mu_lo, ms = _central_push(
            (state.count, state.count_lo, state.mean, state.mean_lo, _split(m_hi, m_lo)),
            x,
            1.0 / s_new,
        )
        _, _, lmu, lmu_lo, lms = _central_push(
            (
                state.count,
                state.count_lo,
                state.log_mean,
                state.log_mean_lo,
                _split(state.log_m, state.log_m_lo),
            ),
            y,
        )
        m, m_lo = _stack(ms)
        lm, lm_lo = _stack(lms)
        new = MomentSketchState(c, c_lo, mn, mx, mu, mu_lo, m, m_lo, lmu, lmu_lo, lm, lm_lo)
        return _keep_where(mask, new, state)

    def merge_fn(a: MomentSketchState, b: MomentSketchState) -> MomentSketchState:
        mn, mx = jnp.minimum(a.min, b.min), jnp.maximum(a.max, b.max)
        s = _scale(mn, mx)
        a_hi, a_lo = _rescale(a.m, a.m_lo, _scale(a.min, a.max) / s)
        b_hi, b_lo = _rescale(b.m, b.m_lo, _scale(b.min, b.max) / s)
        c, c_lo, mu, mu_lo, ms = _central_merge(
            (a.count, a.count_lo, a.mean, a.mean_lo, _split(a_hi, a_lo)),
            (b.count, b.count_lo, b.mean, b.mean_lo, _split(b_hi, b_lo)),
            1.0 / s,
        )
        _, _, lmu, lmu_lo, lms = _central_merge(
            (a.count, a.count_lo, a.log_mean, a.log_mean_lo, _split(a.log_m, a.log_m_lo)),
            (b.count, b.count_lo, b.log_mean, b.log_mean_lo, _split(b.log_m, b.log_m_lo)),
        )
        m, m_lo = _stack(ms)
        lm, lm_lo = _stack(lms)
        return MomentSketchState(c, c_lo, mn, mx, mu, mu_lo, m, m_lo, lmu, lmu_lo, lm, lm_lo)

    def _solve_one(n, mn, mx, mean, m, log_mean, log_m, q):
        """Quantiles ``q`` ([nq]) of one stream from its sketch (scalars and [k-1] sums)."""
        dt = mean.dtype
        eps = float(jnp.finfo(dt).eps)
        big = 0.5 * math.log(float(jnp.finfo(dt).max))
        pos = mn > 0
        neg = mx < 0
        use_log = pos | neg
        n_safe = jnp.where(n > 0, n, jnp.ones_like(n))
        mu = jnp.where(use_log, log_mean, mean)
        # Central moments of order 2..k over h**p: the power sums are in units of `scale`.
        ratio = jnp.where(use_log, jnp.ones_like(mn), _scale(mn, mx))
        cm = jnp.where(use_log, log_m, m) / n_safe
        safe_mn = jnp.where(mn != 0, jnp.abs(mn), jnp.ones_like(mn))
        safe_mx = jnp.where(mx != 0, jnp.abs(mx), jnp.ones_like(mx))
        lo_d = jnp.where(pos, jnp.log(safe_mn), jnp.where(neg, jnp.log(safe_mx), mn))
        hi_d = jnp.where(pos, jnp.log(safe_mx), jnp.where(neg, jnp.log(safe_mn), mx))
        c = 0.5 * (lo_d + hi_d)
        h = 0.5 * (hi_d - lo_d)
        degenerate = ~(h > 64 * eps * jnp.maximum(jnp.abs(c), jnp.ones_like(c)))
        hs = jnp.where(degenerate, jnp.ones_like(h), h)
        d = jnp.clip((mu - c) / hs, -1.0, 1.0)
        # Raw moments of t = (y - c) / h from central moments: E[t^j] = sum_i C(j,i) d^(j-i) mt_i.
        scaled = cm * (ratio / hs) ** jnp.arange(2, k + 1).astype(dt)
        mt = jnp.concatenate([jnp.ones((1,), dt), jnp.zeros((1,), dt), scaled])
        # Static integer powers (lax.integer_pow): d ** 0 has a zero derivative at d = 0, where
        # a float exponent array would differentiate to 0 * d ** -1 = NaN (symmetric data).
        dpow = jnp.stack([d**j for j in range(k + 1)])
        idx_j = np.arange(k + 1)[:, None]
        idx_i = np.arange(k + 1)[None, :]
        dmat = jnp.where(idx_i <= idx_j, dpow[np.clip(idx_j - idx_i, 0, k)], jnp.zeros((), dt))
        raw = jnp.sum(jnp.asarray(binom, dt) * dmat * mt[None, :], axis=1)
        cheb = jnp.clip(jnp.asarray(cheb_from_power, dt) @ raw, -1.0, 1.0)
        cheb = cheb.at[0].set(1.0)

        bas = jnp.asarray(basis, dt)
        wq = 2.0 / n_grid
        st = jnp.asarray(steps, dt)
        ridge = 50 * eps

        def dual(theta):
            z = jnp.minimum(bas @ theta, big)
            return jnp.sum(jnp.exp(z)) * wq - theta @ cheb

        def newton(_, theta):
            z = jnp.minimum(bas @ theta, big)
            p = jnp.exp(z) * wq
            g = bas.T @ p - cheb
            hess = (bas * p[:, None]).T @ bas + ridge * jnp.eye(k + 1, dtype=dt)
            step = jnp.linalg.solve(hess, g)
            cands = theta[None, :] - st[:, None] * step[None, :]
            vals = jax.vmap(dual)(cands)
            vals = jnp.where(jnp.isnan(vals), jnp.inf, vals)
            return cands[jnp.argmin(vals)]

        theta0 = jnp.zeros((k + 1,), dt).at[0].set(math.log(0.5))
        theta = jax.lax.fori_loop(0, n_iter, newton, theta0)
        dens = jnp.exp(jnp.minimum(bas @ theta, big))
        cdf = jnp.cumsum(dens)
        cdf = cdf / cdf[-1]
        # Quantile in the domain: for all-negative data y = log(-x) decreases with x.
        qd = jnp.where(neg, 1.0 - q, q)
        pos_in = jnp.sum(cdf[None, :] < qd[:, None], axis=1)  # cell holding qd
        i = jnp.clip(pos_in, 0, n_grid - 1)
        prev = jnp.where(i > 0, cdf[jnp.maximum(i - 1, 0)], jnp.zeros((), dt))
        frac = jnp.clip((qd - prev) / jnp.maximum(cdf[i] - prev, jnp.finfo(dt).tiny), 0.0, 1.0)
        t = -1.0 + (2.0 * (i.astype(dt) + frac)) / n_grid
        yq = c + h * t
        ey = jnp.exp(jnp.minimum(yq, big))
        xq = jnp.where(pos, ey, jnp.where(neg, -ey, yq))
        xq = jnp.where(degenerate, mn, xq)
        return _finish(q, xq, mn, mx, n <= 0)

    def query_fn(state: MomentSketchState, q: ArrayLike | Sequence[float]) -> jax.Array:
        dt = state.min.dtype
        q = _as_q(f"{fn}.query", q, dt)
        qs, ev = q.shape, state.min.shape
        flat = q.reshape(-1)
        n = (state.count + state.count_lo).reshape(-1)
        args = (
            n,
            state.min.reshape(-1),
            state.max.reshape(-1),
            (state.mean + state.mean_lo).reshape(-1),
            (state.m + state.m_lo).reshape((-1, k - 1)),
            (state.log_mean + state.log_mean_lo).reshape(-1),
            (state.log_m + state.log_m_lo).reshape((-1, k - 1)),
        )
        out = jax.vmap(lambda *a: _solve_one(*a, flat))(*args)  # [streams, nq]
        return out.T.reshape(qs + ev)

    return Sketch(init_fn, update_fn, merge_fn, query_fn)
