r"""Log-space evidence: exact sums, logsumexp, posteriors, Bayes factors, SPRT and CUSUM.

Evidence is combined in log space, never by multiplying likelihoods: a product of ``10**6``
likelihoods underflows to 0 after ~90 float32 factors, and a sequential float posterior gets
stuck at exactly 1.0. The sums of log-likelihoods that replace those products are themselves
ill-conditioned (large terms of both signs), so every sum here is *compensated*: it carries the
rounding errors of its additions in a second float (a double word) and rounds once at the end.
In float32 that is the correctly rounded sum for condition numbers far beyond ``10**4``, with no
float64 anywhere.

Functions:

* :func:`two_sum`, :func:`compensated_sum`: the exact building blocks.
* :func:`logsumexp` (scipy's signature, plus ``where=``), :func:`cumulative_logsumexp`.
* :func:`log_posterior`, :func:`log_odds`, :func:`posterior_probability`,
  :func:`log_bayes_factor`: combining independent evidence.
* :func:`sprt` (Wald) and :func:`cusum` (Page): sequential decisions, batched over agents.

NaN and inf policy (every function): ``-inf`` log-likelihood means "impossible" and is valid
input; a hypothesis that is impossible gets posterior 0, never NaN. ``+inf`` and NaN are invalid
evidence: they propagate to the outputs of the agent (slice) that holds them and never reach
another agent. Gradients are finite wherever the value is finite, including at ``-inf`` inputs.

On CPU the compensated reductions of :func:`compensated_sum`, :func:`log_bayes_factor` and
:func:`log_posterior` run in C++ kernels called through the XLA FFI (``jaxstats/_native/reduce.cc``);
other platforms, ``JAXSTATS_NATIVE=0`` and hosts without a C++ compiler use the XLA formulation.
Both meet the same documented accuracy.

The streaming, mergeable accumulator lives in :func:`jaxstats.sketch.log_evidence`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _checks, _native
from . import _numerics as nm
from ._typing import ArrayLike

__all__ = [
    "TwoSumResult",
    "SignedLogResult",
    "PosteriorProbability",
    "SPRTResult",
    "CUSUMResult",
    "two_sum",
    "compensated_sum",
    "logsumexp",
    "cumulative_logsumexp",
    "log_posterior",
    "log_odds",
    "posterior_probability",
    "log_bayes_factor",
    "sprt",
    "cusum",
]


# ----------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------


class TwoSumResult(NamedTuple):
    """Result of :func:`two_sum`.

    Attributes:
      sum: ``fl(a + b)``, the rounded sum.
      error: the exact rounding error: ``sum + error == a + b`` in exact arithmetic.
    """

    sum: jax.Array
    error: jax.Array


class SignedLogResult(NamedTuple):
    """Result of :func:`logsumexp` with ``return_sign=True`` (a tuple, as scipy returns).

    Attributes:
      log_abs: ``log(|sum(b * exp(a))|)``.
      sign: ``+1``, ``-1`` or ``0`` (an exactly zero sum), with the dtype of ``log_abs``.
    """

    log_abs: jax.Array
    sign: jax.Array


class PosteriorProbability(NamedTuple):
    """Result of :func:`posterior_probability`; each field is accurate to a few ulp.

    Attributes:
      probability: :math:`p = 1 / (1 + e^{-\\ell})`.
      complement: :math:`1 - p = 1 / (1 + e^{\\ell})`, accurate even when ``p`` rounds to 1.
      log_probability: :math:`\\log p = -\\operatorname{softplus}(-\\ell)`.
      log_complement: :math:`\\log(1 - p) = -\\operatorname{softplus}(\\ell)`.
    """

    probability: jax.Array
    complement: jax.Array
    log_probability: jax.Array
    log_complement: jax.Array


class SPRTResult(NamedTuple):
    """Result of :func:`sprt`; fields have the input's shape without the time axis.

    Attributes:
      decision: int32: ``1`` accept the alternative (upper boundary crossed), ``-1`` accept the
        null (lower boundary crossed), ``0`` no decision within the stream.
      stopping_index: int32 index along the time axis of the observation at which the test
        stopped; the number of observations ``n`` when it never stopped.
      log_likelihood_ratio: the cumulative log-likelihood ratio at the stopping index, or at
        the end of the stream when undecided (0 for an empty stream).
      log_lower: the lower boundary :math:`\\log(\\beta / (1 - \\alpha))`.
      log_upper: the upper boundary :math:`\\log((1 - \\beta) / \\alpha)`.
    """

    decision: jax.Array
    stopping_index: jax.Array
    log_likelihood_ratio: jax.Array
    log_lower: jax.Array
    log_upper: jax.Array


class CUSUMResult(NamedTuple):
    """Result of :func:`cusum`.

    Attributes:
      alarm: bool, True when the statistic reached the threshold somewhere in the stream.
      alarm_index: int32 index along the time axis of the first alarm; ``n`` when none.
      statistic: the CUSUM path :math:`C_t` (same shape as the input; masked steps repeat the
        previous value).
    """

    alarm: jax.Array
    alarm_index: jax.Array
    statistic: jax.Array


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def _axes(fn: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """Static ``axis`` (None, int or sequence of ints) as a sorted tuple; friendly errors."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(_checks.check_axis(fn, "axis", ax, ndim) for ax in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{fn}: 'axis' contains a repeated axis: {tuple(axis)!r}.")
        return tuple(sorted(axes))
    return (_checks.check_axis(fn, "axis", axis, ndim),)


def _mask(fn: str, where: Any, shape: tuple[int, ...]) -> jax.Array | None:
    """``where`` as a bool array broadcast (explicitly) to ``shape``; None stays None."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"{fn}: 'where' must be a bool mask; got dtype {where.dtype}.")
    _broadcast_shape(fn, ("where", "the data"), tuple(where.shape), shape, target=shape)
    return jnp.broadcast_to(where, shape)


def _broadcast_shape(
    fn: str,
    names: tuple[str, str],
    a: tuple[int, ...],
    b: tuple[int, ...],
    target: tuple[int, ...] | None = None,
) -> tuple[int, ...]:
    try:
        out = tuple(np.broadcast_shapes(a, b))
    except ValueError:
        out = None
    if out is None or (target is not None and out != tuple(target)):
        want = f"broadcast to {tuple(target)}" if target is not None else "broadcast together"
        raise ValueError(
            f"{fn}: '{names[0]}' of shape {a} and {names[1]} of shape {b} do not {want}."
        )
    return out


def _probability(fn: str, name: str, value: Any) -> None:
    """Static range check of a probability given as a Python number (arrays pass unchecked)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: '{name}' must be a number in (0, 1); got {value!r}.")
    if isinstance(value, (int, float, np.number)) and not 0.0 < float(value) < 1.0:
        raise ValueError(f"{fn}: '{name}' must lie strictly between 0 and 1; got {value!r}.")


# ----------------------------------------------------------------------------------------------
# Exact building blocks
# ----------------------------------------------------------------------------------------------


def two_sum(a: ArrayLike, b: ArrayLike) -> TwoSumResult:
    """Error-free sum: the rounded sum of two floats and its exact rounding error.

    Knuth's TwoSum (six flops, no branch): ``sum = fl(a + b)`` and ``sum + error == a + b``
    exactly, for any magnitudes, as long as ``sum`` is finite. It is the kernel of
    :func:`compensated_sum` and of the streaming accumulator.

    Args:
      a: float array (ints go to the default float dtype).
      b: float array broadcastable to ``a`` (same dtype after conversion).

    Returns:
      :class:`TwoSumResult` ``(sum, error)`` with the broadcast shape and dtype.

    Raises:
      ValueError: if the shapes do not broadcast.
      TypeError: if the float dtypes differ or an input is complex.

    NaN and inf:
      ``sum`` follows IEEE (``inf``, ``nan``); ``error`` is ``nan`` whenever ``sum`` is not
      finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import two_sum
      >>> two_sum(jnp.float32(1e8), jnp.float32(1.5))
      TwoSumResult(sum=Array(1.e+08, dtype=float32), error=Array(1.5, dtype=float32))

    References:
      Knuth, *The Art of Computer Programming*, vol. 2, section 4.2.2.
    """
    fn = "two_sum"
    x = _checks.as_float_array(fn, "a", a)
    y = _checks.as_float_array(fn, "b", b)
    if x.dtype != y.dtype:
        raise TypeError(
            f"{fn}: 'a' and 'b' must have the same float dtype; got {x.dtype} and {y.dtype}. "
            "Cast one of them explicitly."
        )
    shape = _broadcast_shape(fn, ("a", "'b'"), tuple(x.shape), tuple(y.shape))
    s, e = nm.two_sum(jnp.broadcast_to(x, shape), jnp.broadcast_to(y, shape))
    return TwoSumResult(s, e)


# ----------------------------------------------------------------------------------------------
# Native CPU reductions (jaxstats/_native/reduce.cc)
# ----------------------------------------------------------------------------------------------
#
# On CPU the compensated reductions (compensated_sum, log_bayes_factor, log_posterior) run as
# C++ kernels called through the XLA FFI: the same accumulation (TwoSum lanes, errors summed
# separately, a TwoSum fold, one rounding) vectorized by the compiler instead of by XLA's loop
# emitter. Every other platform, ``JAXSTATS_NATIVE=0`` and a missing compiler use the XLA
# formulation of ``_numerics`` (see ``_reduction_path``). The kernels reduce a row-major array
# viewed as ``(outer, n, inner)`` over ``n``: reduced axes that are already contiguous need no
# copy (``axis=0`` of an ``[n, K]`` array is ``outer = 1, inner = K``); others are transposed to
# the front first.

#: Internal switch (tests, benchmarks): False routes every compensated reduction to XLA.
_USE_NATIVE = True


def _reduction_path(dtype) -> str:
    """``"native"`` when the C++ reductions can take ``dtype`` on CPU, else ``"xla"`` (static)."""
    return _native.float_path(dtype, _USE_NATIVE)


_cpu_only = _native.cpu_only  # a module attribute, so tests can pretend a GPU is present


def _on_cpu(native_fn, xla_fn, *args):
    """``native_fn(*args)`` on CPU and ``xla_fn(*args)`` elsewhere (:func:`_native.on_cpu`)."""
    return _native.on_cpu(native_fn, xla_fn, *args, cpu_only=_cpu_only())


def _middle_layout(shape: tuple[int, ...], axes: tuple[int, ...]):
    """How to view an array of ``shape`` as ``(outer, n, inner)`` reduced over ``n``.

    Returns ``(perm, (outer, n, inner), kept_shape)``: ``perm`` is None when the (sorted,
    non-empty) reduced axes are contiguous -- a free reshape -- and otherwise the transpose that
    moves them to the front (``outer = 1``). ``kept_shape`` is the result shape without
    keepdims, in the order of the kept axes either way.
    """
    ndim = len(shape)
    kept = [i for i in range(ndim) if i not in axes]
    kept_shape = tuple(shape[i] for i in kept)
    size = lambda dims: int(np.prod(dims)) if dims else 1  # noqa: E731
    n = size([shape[i] for i in axes])
    if axes == tuple(range(axes[0], axes[-1] + 1)):
        return None, (size(shape[: axes[0]]), n, size(shape[axes[-1] + 1 :])), kept_shape
    return list(axes) + kept, (1, n, size(kept_shape)), kept_shape


def _to_middle(a, perm, dims):
    if a is None:
        return None
    if perm is not None:
        a = jnp.transpose(a, perm)
    return a.reshape(dims)


def _native_pair(target: str, operands, axes: tuple[int, ...], **attrs):
    """Run a reduce.cc target over ``axes`` of same-shaped ``operands`` -> pair ``(hi, lo)``
    with the kept shape (``hi`` is the sum rounded once)."""
    shape = tuple(operands[0].shape)
    perm, dims, kept_shape = _middle_layout(shape, axes)
    out = jax.ShapeDtypeStruct((dims[0], dims[2]), operands[0].dtype)
    # broadcast_all: under vmap every operand (a mask, the second of a difference) gets the
    # batch axis, so the kernel always sees operands of one shape.
    hi, lo = jax.ffi.ffi_call(target, (out, out), vmap_method="broadcast_all")(
        *(_to_middle(a, perm, dims) for a in operands), **attrs
    )
    return hi.reshape(kept_shape), lo.reshape(kept_shape)


def _keep(out, shape, axes, keepdims):
    if keepdims:
        return out.reshape(tuple(1 if i in axes else d for i, d in enumerate(shape)))
    return out


def _native_compensated_sum(x, mask, axes, keepdims):
    if mask is not None:
        x = jnp.where(mask, x, jnp.zeros_like(x))
    hi, _ = _native_pair("JaxstatsCompensatedSum", (x,), axes)
    return _keep(hi, tuple(x.shape), axes, keepdims)


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 4))
def _compensated_sum_core(x, axes, keepdims, mask, path):
    if path == "native" and axes:
        return _on_cpu(
            lambda v, m: _native_compensated_sum(v, m, axes, keepdims),
            lambda v, m: nm.compensated_sum(v, axes, where=m, keepdims=keepdims),
            x,
            mask,
        )
    return nm.compensated_sum(x, axes, where=mask, keepdims=keepdims)


@_compensated_sum_core.defjvp
def _compensated_sum_jvp(axes, keepdims, path, primals, tangents):
    x, mask = primals
    tx, _ = tangents
    out = _compensated_sum_core(x, axes, keepdims, mask, path)
    if mask is not None:
        tx = jnp.where(mask, tx, jnp.zeros_like(tx))
    return out, jnp.sum(tx, axis=axes, keepdims=keepdims)


# Module-level jitted cores (static configuration as static arguments): one dispatch per eager
# call instead of hundreds of op-by-op dispatches; inlined as usual under the caller's jit.
_compensated_sum_jit = jax.jit(_compensated_sum_core, static_argnums=(1, 2, 4))


def compensated_sum(
    a: ArrayLike,
    axis: int | Sequence[int] | None = None,
    *,
    keepdims: bool = False,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Sum of array elements with every rounding error compensated (numpy's ``sum`` signature).

    The additions run as TwoSum operations (:func:`two_sum`) and their rounding errors are
    summed separately, so the result equals the exact sum rounded once, up to a second-order
    term: the error is about :math:`\epsilon |S| + c\, n_{\text{rows}} \epsilon^2 \sum |a_i|`.
    In float32 the result is within 1 ulp of the correctly rounded exact sum for condition
    numbers :math:`\sum|a_i| / |\sum a_i|` up to ``1e4`` (and in practice far beyond), where a
    plain ``jnp.sum`` loses several digits.

    On CPU the sum runs in a C++ kernel called through the XLA FFI
    (``jaxstats/_native/reduce.cc``, compiled once on first use, see ``jaxstats._native``): 64
    to 240 vectorized TwoSum lanes stream over the input where it lies (reduced axes that are
    contiguous need no copy, others are transposed first; more than 16 kept columns behind the
    reduced axes are vectorized across instead), restart every 64 terms per lane into a second
    level, and are folded with TwoSum at the end. On other platforms, with
    ``JAXSTATS_NATIVE=0`` or without a C++ compiler, the same accumulation runs in XLA: about
    1024 lanes advance in lock-step over blocks of the input and are folded by a TwoSum halving
    tree. Both paths meet the bound above (the tests compare them with each other and with
    ``math.fsum``), and the compensation survives ``jit`` (no re-association). Cost, measured
    with ``experiments/bench_evidence.py --quick`` (table 4) on a 2-core AMD EPYC, condition
    number ``1e4``: the native kernel 0.77x (``10**6``) and 0.71x (``10**7``) the time of a plain
    ``jnp.sum`` in float32, 0.90x and 0.72x in float64 (it reads the input once, at memory
    speed); the XLA formulation 3.3x and 1.7x in float32, 3.5x and 3.1x in float64.

    Args:
      a: array to sum (ints and bools go to the default float dtype).
      axis: ``None`` (all axes), an int or a tuple of ints (static).
      keepdims: keep the reduced axes with length 1.
      where: optional bool mask broadcastable to ``a``; False entries count as 0.

    Returns:
      The sum, with the dtype of ``a`` (float).

    Raises:
      ValueError: for an out-of-range or repeated ``axis`` or a ``where`` that does not
        broadcast to ``a``.
      TypeError: for a complex ``a``, a non-int ``axis`` or a non-bool ``where``.

    NaN and inf:
      As a plain sum: any NaN, or ``+inf`` with ``-inf``, gives NaN; infinities of one sign
      give that infinity. The gradient is 1 for every (unmasked) element.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import compensated_sum
      >>> x = jnp.array([1e8, 1.0, -1e8, 1.0])
      >>> jnp.sum(x), compensated_sum(x)
      (Array(0., dtype=float32), Array(2., dtype=float32))
      >>> compensated_sum(jnp.ones((2, 3)), axis=1)
      Array([3., 3.], dtype=float32)

    References:
      Ogita, Rump and Oishi, "Accurate sum and dot product", SIAM J. Sci. Comput., 2005.
      Neumaier, "Rundungsfehleranalyse einiger Verfahren zur Summation endlicher Summen", 1974.
    """
    fn = "compensated_sum"
    x = _checks.as_float_array(fn, "a", a)
    axes = _axes(fn, axis, x.ndim)
    mask = _mask(fn, where, tuple(x.shape))
    return _compensated_sum_jit(x, axes, bool(keepdims), mask, _reduction_path(x.dtype))


# ----------------------------------------------------------------------------------------------
# logsumexp
# ----------------------------------------------------------------------------------------------


def _lse_primal(a, b, mask, axes, keepdims):
    """(log|sum b*exp(a)|, sign), both with the reduced shape (keepdims as asked).

    One max pass, then one fused compensated pass: the reduced axes are moved first (free for
    ``axis=None``/``0``) and :func:`_numerics.sum_rows_pair` reads ``a`` (and ``b``, ``mask``)
    block by block, forming each term ``b * exp(a - max)`` as an exact-ish pair right before it
    is accumulated.
    """
    dtype = a.dtype
    neg_inf = jnp.asarray(-jnp.inf, dtype)
    kept = [i for i in range(a.ndim) if i not in axes]
    order = list(axes) + kept
    batch = tuple(a.shape[i] for i in kept)
    n = int(np.prod([a.shape[i] for i in axes])) if axes else 1
    p = int(np.prod(batch)) if batch else 1

    def lead(x):
        if x is None:
            return None
        x = jnp.transpose(x, order) if order != list(range(a.ndim)) else x
        return x.reshape(n, p)

    a2, b2, m2 = lead(a), lead(b), lead(mask)
    live = jnp.ones(a2.shape, bool) if m2 is None else m2
    if b2 is not None:
        live = live & (b2 != 0)
    m = jnp.max(jnp.where(live, a2, neg_inf), axis=0, initial=-jnp.inf)  # [P]
    m_safe = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))

    def terms(blk, mblk, *bblk):
        ok = jnp.ones(blk.shape, bool) if mblk is None else mblk
        if bblk:
            ok = ok & (bblk[0] != 0)
        a_live = jnp.where(ok, blk, neg_inf)
        # a - m as an exact pair, so the shift adds no rounding: exp(d + dl) ~ e * (1 + dl).
        d, dl = nm.two_sum(a_live, -jnp.broadcast_to(m_safe, blk.shape))
        dl = jnp.where(jnp.isfinite(d), dl, jnp.zeros_like(dl))
        e = jnp.exp(d)
        e_lo = e * dl
        if bblk:
            bb = jnp.where(ok, bblk[0], jnp.zeros_like(blk))
            e, e_err = nm.two_prod(e, bb)
            e_lo = jnp.where(jnp.isfinite(e), e_err + e_lo * bb, jnp.zeros_like(e_lo))
        return e, e_lo

    if p == 0:
        s_hi = s_lo = jnp.zeros((0,), dtype)
    else:
        s_hi, s_lo = nm.sum_rows_pair(a2, mask=m2, transform=terms, extra=() if b2 is None else (b2,))
    sign = jnp.sign(s_hi)
    abs_hi = jnp.abs(s_hi)
    abs_lo = jnp.where(s_hi < 0, -s_lo, s_lo)
    l_hi, l_lo = nm.pair_log(abs_hi, abs_lo)
    # m + log|S| in double-word arithmetic, rounded once (+inf and NaN maxima flow through).
    r_hi, r_lo = nm.pair_add_pair(m_safe, jnp.zeros_like(m_safe), l_hi, l_lo)
    out = nm.pair_value(r_hi, r_lo).reshape(batch)
    sign = sign.astype(dtype).reshape(batch)
    if keepdims:
        keep = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
        out, sign = out.reshape(keep), sign.reshape(keep)
    return out, sign


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _lse_core(a, b, mask, axes, keepdims):
    return _lse_primal(a, b, mask, axes, keepdims)


@_lse_core.defjvp
def _lse_jvp(axes, keepdims, primals, tangents):
    a, b, mask = primals
    ta, tb, _ = tangents
    out, sign = _lse_core(a, b, mask, axes, keepdims)
    r = out if keepdims else jnp.expand_dims(out, axes)
    s = sign if keepdims else jnp.expand_dims(sign, axes)
    finite = jnp.isfinite(r)
    r_safe = jnp.where(finite, r, jnp.zeros_like(r))
    live = jnp.ones(a.shape, bool) if mask is None else mask
    ok = live & jnp.broadcast_to(finite, a.shape)
    # d log|S| = sum(sign * exp(a - r) * (b da + db)); impossible entries carry no weight.
    a_safe = jnp.where(ok, a, jnp.broadcast_to(r_safe, a.shape))
    w = jnp.where(ok, jnp.exp(a_safe - r_safe) * s, jnp.zeros_like(a))
    if b is None:
        dot = w * ta
    else:
        ok_a = ok & (b != 0)  # b == 0 terms were dropped: no d/da (avoids inf * 0)
        dot = jnp.where(ok_a, w * b * ta, jnp.zeros_like(w)) + w * tb
    dot = jnp.where(ok, dot, jnp.zeros_like(dot))
    d_out = jnp.sum(dot, axis=axes, keepdims=keepdims)
    return (out, sign), (d_out, jnp.zeros_like(sign))


_lse_jit = jax.jit(_lse_core, static_argnums=(3, 4))


def logsumexp(
    a: ArrayLike,
    axis: int | Sequence[int] | None = None,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    *,
    where: ArrayLike | None = None,
) -> jax.Array | SignedLogResult:
    r"""Log of the sum of exponentials, :math:`\log \sum_i b_i e^{a_i}`, as ``scipy.special.logsumexp``.

    The terms are shifted by the maximum; the shift :math:`a_i - \max a` is kept exact as a
    TwoSum pair, the exponentials (times ``b``, exactly via TwoProduct) are added with
    :func:`compensated_sum`, and :math:`\max a + \log S` is evaluated in double-word arithmetic
    with a logarithm whose large part :math:`k \ln 2` is exact. The float32 result is within
    2 ulp of the exact value for ``10**6`` terms and more (whenever it is not itself the
    difference of nearly equal numbers, e.g. :math:`|\text{result}| \gtrsim 1`; near 0 the error
    is a few ``eps`` absolute).

    Args:
      a: input array (ints go to the default float dtype).
      axis: axes to reduce; ``None`` reduces all (static int or tuple of ints).
      b: optional scaling factors :math:`b_i`, broadcastable with ``a``; may be negative.
        Entries with ``b == 0`` are ignored, as in scipy.
      keepdims: keep the reduced axes with length 1.
      return_sign: if True return :class:`SignedLogResult` ``(log_abs, sign)``; otherwise a
        negative sum gives NaN (as scipy).
      where: optional bool mask broadcastable with ``a``; False entries are ignored.

    Returns:
      The reduced array (dtype of ``a``), or :class:`SignedLogResult` with ``return_sign``.

    Raises:
      ValueError: for an out-of-range or repeated ``axis``, or shapes that do not broadcast.
      TypeError: for complex input, a non-bool ``where`` or a non-int ``axis``.

    NaN and inf:
      ``-inf`` terms (and masked or ``b == 0`` terms) contribute nothing; if every term is like
      that the result is ``-inf`` (sign 0) with a zero gradient, never NaN. ``+inf`` gives
      ``+inf``; NaN gives NaN in the slices that hold it only. The gradient with respect to
      ``a`` is the softmax weight :math:`b_i e^{a_i - r}`, exactly 0 at ``-inf`` entries.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import logsumexp
      >>> logsumexp(jnp.log(jnp.array([1.0, 2.0, 5.0])))
      Array(2.0794415, dtype=float32)
      >>> logsumexp(jnp.array([-1000.0, -1000.0]))
      Array(-999.3068, dtype=float32)
      >>> logsumexp(jnp.array([-jnp.inf, -jnp.inf]))
      Array(-inf, dtype=float32)
      >>> logsumexp(jnp.array([0.0, 0.0]), b=jnp.array([1.0, -2.0]), return_sign=True)
      SignedLogResult(log_abs=Array(0., dtype=float32), sign=Array(-1., dtype=float32))

    References:
      ``scipy.special.logsumexp``. Blanchard, Higham and Higham, "Accurately computing the
      log-sum-exp and softmax functions", IMA J. Numer. Anal., 2021.
    """
    fn = "logsumexp"
    x = _checks.as_float_array(fn, "a", a)
    bb = None
    if b is not None:
        bb = _checks.as_float_array(fn, "b", b, dtype=x.dtype)
        shape = _broadcast_shape(fn, ("a", "'b'"), tuple(x.shape), tuple(bb.shape))
        x = jnp.broadcast_to(x, shape)
        bb = jnp.broadcast_to(bb, shape)
    if where is not None:
        w = jnp.asarray(where)
        if w.dtype != jnp.bool_:
            raise TypeError(f"{fn}: 'where' must be a bool mask; got dtype {w.dtype}.")
        shape = _broadcast_shape(fn, ("where", "'a'"), tuple(w.shape), tuple(x.shape))
        x = jnp.broadcast_to(x, shape)
        bb = None if bb is None else jnp.broadcast_to(bb, shape)
        mask = jnp.broadcast_to(w, shape)
    else:
        mask = None
    if x.ndim == 0:
        if axis is not None:
            _axes(fn, axis, 0)  # raises: a scalar has no axis
        x = x.reshape(1)
        bb = None if bb is None else bb.reshape(1)
        mask = None if mask is None else mask.reshape(1)
        out, sign = _lse_jit(x, bb, mask, (0,), False)
    else:
        axes = _axes(fn, axis, x.ndim)
        out, sign = _lse_jit(x, bb, mask, axes, bool(keepdims))
    if return_sign:
        return SignedLogResult(out, sign)
    return jnp.where(sign < 0, jnp.asarray(jnp.nan, out.dtype), out)


def cumulative_logsumexp(
    a: ArrayLike,
    axis: int | None = None,
    *,
    reverse: bool = False,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Running :math:`\log \sum_{j \le i} e^{a_j}` along an axis, via an associative scan.

    The prefix log-sum-exps are computed by ``lax.associative_scan`` with a gradient-safe
    ``logaddexp`` as the operator (depth ~``2 log2 n``, fully parallel); the last element equals
    :func:`logsumexp` up to a few ulp times ``log2 n``.

    Args:
      a: input array.
      axis: the axis to scan (static int); ``None`` scans the flattened array, as
        ``numpy.cumsum``.
      reverse: scan from the end (suffix log-sum-exps).
      where: optional bool mask broadcastable to ``a``; False entries count as ``-inf``.

    Returns:
      Array of the shape of ``a`` (flattened when ``axis`` is None), dtype of ``a``.

    Raises:
      ValueError: for an out-of-range axis or a mask that does not broadcast.
      TypeError: for complex input or a non-bool mask.

    NaN and inf:
      A leading run of ``-inf`` gives ``-inf`` prefixes (zero gradient, no NaN). NaN or
      ``+inf`` propagates to every later prefix of its slice only.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import cumulative_logsumexp
      >>> cumulative_logsumexp(jnp.log(jnp.array([1.0, 1.0, 2.0])))
      Array([0.       , 0.6931472, 1.3862944], dtype=float32)

    References:
      Blelloch, "Prefix sums and their applications", 1990.
    """
    fn = "cumulative_logsumexp"
    x = _checks.as_float_array(fn, "a", a)
    mask = _mask(fn, where, tuple(x.shape))
    if axis is None:
        x = x.reshape(-1)
        mask = None if mask is None else mask.reshape(-1)
        ax = 0
    else:
        ax = _checks.check_axis(fn, "axis", axis, x.ndim)
    if x.shape[ax] == 0:
        return x
    return _cumulative_lse(x, mask, ax, bool(reverse))


@partial(jax.jit, static_argnums=(2, 3))
def _cumulative_lse(x, mask, ax, reverse):
    if mask is not None:
        x = jnp.where(mask, x, jnp.asarray(-jnp.inf, x.dtype))
    return lax.associative_scan(nm.logaddexp, x, reverse=reverse, axis=ax)


# ----------------------------------------------------------------------------------------------
# Combining evidence
# ----------------------------------------------------------------------------------------------


def _centered_pairs(ll, live):
    """Exact shift of log-likelihoods by their maximum over the hypotheses (axis 0): pairs (h, l).

    ``ll`` and ``live`` are hypothesis-major (``[K, ...]``), so the maximum is an elementwise
    ``maximum`` of K contiguous slabs (a reduction over a short *minor* axis is ~40x slower on
    XLA:CPU). Returns h (``ll - max`` rounded, ``-inf`` for impossible entries) and its exact
    low part l. A masked entry counts as a log-likelihood of 0 shifted like the others,
    ``(-max, 0)``: every hypothesis of an observation is shifted by the same amount, so the shift
    cancels in the normalization whatever the mask (zeroing masked entries instead would shift
    the hypotheses of a partly masked observation differently). The maximum is over the live
    entries; NaN stays NaN; a slice with no finite maximum (all ``-inf``, or nothing live) is
    not shifted.
    """
    neg_inf = jnp.asarray(-jnp.inf, ll.dtype)
    m = jnp.max(jnp.where(live, ll, neg_inf), axis=0, keepdims=True)
    m_safe = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))
    neg_m = -jnp.broadcast_to(m_safe, ll.shape)
    h, l = nm.two_sum(ll, neg_m)
    l = jnp.where(jnp.isfinite(h), l, jnp.zeros_like(l))
    return jnp.where(live, h, neg_m), jnp.where(live, l, jnp.zeros_like(l))


def log_posterior(
    log_prior: ArrayLike,
    log_likelihood: ArrayLike,
    *,
    axis: int = 0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Normalized log posterior over K hypotheses from independent pieces of evidence.

    .. math::
       \log p(h_k \mid x) = \log \pi_k + \sum_j \ell_{jk}
           - \log \sum_{k'} \pi_{k'} e^{\sum_j \ell_{jk'}}

    ``log_likelihood`` holds the hypotheses on its last axis and the independent evidence
    (observations, sources) on ``axis``. Each observation is first shifted by its maximum over
    the hypotheses (exactly, as a TwoSum pair) -- the shift cancels in the normalization but
    keeps the sums at the scale of the log-likelihood *ratios* -- then the evidence is added
    with :func:`compensated_sum`, the prior added in double-word arithmetic, and the result
    normalized with :func:`logsumexp`. Raw log-likelihoods around ``-1000`` per point over
    ``10**6`` points are fine.

    Args:
      log_prior: log prior probabilities (need not be normalized), broadcastable to the result
        shape ``log_likelihood.shape`` without ``axis`` -- typically shape ``[K]``.
      log_likelihood: ``[..., K]`` log-likelihoods, rank >= 2.
      axis: the evidence axis of ``log_likelihood`` (static int; not the last axis).
      where: optional bool mask broadcastable to ``log_likelihood``; False entries are
        ignored (pass ``mask[..., None]`` to skip whole observations).

    Returns:
      Log posterior probabilities, shape ``log_likelihood.shape`` without ``axis``, dtype of
      ``log_likelihood``; ``logsumexp`` over the last axis is 0.

    Raises:
      ValueError: if ``log_likelihood`` has rank < 2, ``axis`` is the hypothesis axis or out of
        range, or ``log_prior``/``where`` do not broadcast.
      TypeError: for complex input or a non-bool mask.

    NaN and inf:
      A hypothesis with a ``-inf`` log-likelihood (or prior) gets ``-inf`` (posterior 0) without
      NaN. If every hypothesis is impossible, or any evidence of a slice is NaN or ``+inf``, that
      slice's posterior is NaN; other slices are untouched. No evidence gives the normalized
      prior.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import log_posterior
      >>> ll = jnp.array([[-1.0, -2.0], [-3.0, -1.0]])  # 2 observations, K = 2
      >>> log_posterior(jnp.zeros(2), ll)
      Array([-1.3132617, -0.3132617], dtype=float32)
      >>> log_posterior(jnp.zeros(2), jnp.array([[-1.0, -jnp.inf]]))  # H1 impossible
      Array([  0., -inf], dtype=float32)

    References:
      Kass and Raftery, "Bayes Factors", JASA, 1995.
    """
    fn = "log_posterior"
    ll = _checks.as_float_array(fn, "log_likelihood", log_likelihood)
    if ll.ndim < 2:
        raise ValueError(
            f"{fn}: 'log_likelihood' must have rank >= 2 ([..., evidence, K] with the K "
            f"hypotheses last); got shape {tuple(ll.shape)}. For one observation use "
            "log_likelihood[None]."
        )
    ax = _checks.check_axis(fn, "axis", axis, ll.ndim)
    if ax == ll.ndim - 1:
        raise ValueError(
            f"{fn}: 'axis'={axis} is the hypothesis axis (the last axis of 'log_likelihood'); "
            "put the evidence on another axis, e.g. axis=0 for [evidence, K]."
        )
    prior = _checks.as_float_array(fn, "log_prior", log_prior, dtype=ll.dtype)
    out_shape = tuple(d for i, d in enumerate(ll.shape) if i != ax)
    _broadcast_shape(fn, ("log_prior", "the result"), tuple(prior.shape), out_shape, target=out_shape)
    mask = _mask(fn, where, tuple(ll.shape))
    path = _reduction_path(ll.dtype) if ll.shape[-1] > 0 else "xla"
    return _log_posterior_impl(jnp.broadcast_to(prior, out_shape), ll, mask, ax, path)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _centered_evidence_sum(ll, mask, ax):
    """Native fused centering + compensated sum over ``ax``: pair ``(hi, lo)`` with the shape of
    ``ll`` without ``ax``, the same sums as the XLA path of :func:`_log_posterior_impl` (each
    observation shifted exactly by its maximum over the live hypotheses, the pairs summed with
    compensation). The shift is a stop-gradient constant, so the tangent is the masked sum of
    the tangents."""
    operands = (ll,) if mask is None else (ll, mask)
    return _native_pair("JaxstatsCenteredSum", operands, (ax,), group=np.int64(ll.shape[-1]))


@_centered_evidence_sum.defjvp
def _centered_evidence_sum_jvp(ax, primals, tangents):
    ll, mask = primals
    t, _ = tangents
    hi, lo = _centered_evidence_sum(ll, mask, ax)
    if mask is not None:
        t = jnp.where(mask, t, jnp.zeros_like(t))
    dt = jnp.sum(t, axis=ax)
    return (hi, lo), (dt, jnp.zeros_like(dt))


@partial(jax.jit, static_argnums=(3, 4))
def _log_posterior_impl(prior, ll, mask, ax, path):
    if path == "native":
        s_hi, s_lo = _on_cpu(
            lambda v, m: _centered_evidence_sum(v, m, ax), partial(_centered_sum_xla, ax=ax), ll, mask
        )
    else:
        s_hi, s_lo = _centered_sum_xla(ll, mask, ax)
    return _normalize_pairs(*nm.pair_add(s_hi, s_lo, prior))


def _centered_sum_xla(ll, mask, ax):
    """XLA formulation of :func:`_centered_evidence_sum` (other platforms, fallback)."""
    # Evidence axis first (free for axis=0), everything else flattened: [n, P] with P = rest * K.
    ll = jnp.moveaxis(ll, ax, 0)
    mask = None if mask is None else jnp.moveaxis(mask, ax, 0)
    rest = tuple(ll.shape[1:])
    n, p, k = ll.shape[0], int(np.prod(rest)), rest[-1]

    def centered(block, m):
        # Fused into the compensated reduction: each block of whole observations is shifted by
        # its per-observation maximum (exactly, as pairs) right before it is accumulated. The
        # (cache-resident) block is transposed so the K hypotheses lead.
        rows = block.shape[0]
        to_k_major = lambda a: a.reshape((rows, -1, k)).transpose(2, 1, 0)  # noqa: E731
        bt = to_k_major(block)  # [K, other, rows]
        live = jnp.ones(bt.shape, bool) if m is None else to_k_major(m)
        h, l = _centered_pairs(bt, live)
        back = lambda a: a.transpose(2, 1, 0).reshape(rows, p)  # noqa: E731
        return back(h), back(l)

    s_hi, s_lo = nm.sum_rows_pair(
        ll.reshape(n, p), mask=None if mask is None else mask.reshape(n, p), transform=centered
    )
    return s_hi.reshape(rest), s_lo.reshape(rest)


def _normalize_pairs(hi, lo):
    """Log-softmax over the last axis of values given as pairs ``hi + lo``.

    The values are first shifted by their (finite) maximum in double-word arithmetic, so a
    posterior built from sums of ``10**6`` evidence terms (values ~ ``-1e4``) keeps the
    precision of the *differences*, not of the sums; then ``d - logsumexp(d)``.
    """
    m = jnp.max(hi, axis=-1, keepdims=True)
    m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))
    mb = jnp.broadcast_to(m, hi.shape)
    d = nm.pair_value(*nm.pair_add(hi, lo, -mb))
    norm = _lse_core(d, None, None, (d.ndim - 1,), True)[0]
    return d - norm


def log_odds(log_p: ArrayLike) -> jax.Array:
    r"""Log odds :math:`\log \frac{p}{1 - p}` from a log probability :math:`\log p`.

    Computed as ``log_p - log1mexp(log_p)`` (Maechler's accurate :math:`\log(1 - e^x)`), so it
    stays accurate both for ``p`` near 0 (``log_p`` very negative) and near 1 (``log_p`` near 0,
    where ``1 - p`` cannot be formed in floating point).

    Args:
      log_p: log probabilities, ``<= 0``.

    Returns:
      Log odds with the shape and dtype of ``log_p``.

    Raises:
      TypeError: for complex input.

    NaN and inf:
      ``log_p = 0`` gives ``+inf``, ``-inf`` gives ``-inf``, ``log_p > 0`` or NaN gives NaN.
      Gradients are finite everywhere: 0 at ``log_p = -inf`` and 1 at ``log_p = 0`` (the
      divergent derivative of the ``-log1p(-exp(log_p))`` term is dropped there).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import log_odds
      >>> log_odds(jnp.log(jnp.array([0.5, 0.75])))
      Array([0.       , 1.0986123], dtype=float32)
      >>> log_odds(jnp.array(-1e-9))
      Array(20.723267, dtype=float32)
    """
    return _log_odds_impl(_checks.as_float_array("log_odds", "log_p", log_p))


@jax.jit
def _log_odds_impl(x):
    neg_inf = jnp.asarray(-jnp.inf, x.dtype)
    finite = jnp.isfinite(x)
    x_safe = jnp.where(finite, x, jnp.full_like(x, -1.0))
    out = x_safe - nm.log1mexp(x_safe)
    return jnp.where(finite, out, jnp.where(x == neg_inf, neg_inf, jnp.full_like(x, jnp.nan)))


def posterior_probability(log_odds: ArrayLike) -> PosteriorProbability:
    r"""Probability :math:`p = \sigma(\ell)` and its complement from log odds :math:`\ell`.

    Both :math:`p` and :math:`1 - p` are computed directly (:math:`1 - p = \sigma(-\ell)`), and
    their logs as :math:`-\log(1 + e^{\mp\ell})` with ``log1p``/``logaddexp``, so a posterior of
    :math:`1 - 10^{-12}` is reported with full relative precision in ``complement`` and
    ``log_complement`` even though ``probability`` rounds to 1.0.

    Args:
      log_odds: log odds (for two hypotheses: log prior odds plus the log Bayes factor).

    Returns:
      :class:`PosteriorProbability` ``(probability, complement, log_probability,
      log_complement)``, each with the shape and dtype of ``log_odds``.

    Raises:
      TypeError: for complex input.

    NaN and inf:
      ``+inf`` gives ``(1, 0, 0, -inf)``, ``-inf`` gives ``(0, 1, -inf, 0)``; NaN propagates.
      Gradients are finite everywhere.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import posterior_probability
      >>> r = posterior_probability(jnp.array([0.0, 30.0]))
      >>> r.probability, r.complement
      (Array([0.5, 1. ], dtype=float32), Array([5.000000e-01, 9.357623e-14], dtype=float32))
    """
    return _posterior_probability_impl(
        _checks.as_float_array("posterior_probability", "log_odds", log_odds)
    )


@jax.jit
def _posterior_probability_impl(x):
    zero = jnp.zeros_like(x)
    log_p = -nm.logaddexp(zero, -x)
    log_q = -nm.logaddexp(zero, x)
    return PosteriorProbability(jnp.exp(log_p), jnp.exp(log_q), log_p, log_q)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def _lbf_core(l1, l0, mask, axes, keepdims, path):
    if path == "native" and axes:
        return _on_cpu(
            lambda a, b, m: _lbf_native(a, b, m, axes, keepdims),
            lambda a, b, m: _lbf_xla(a, b, m, axes, keepdims),
            l1,
            l0,
            mask,
        )
    return _lbf_xla(l1, l0, mask, axes, keepdims)


def _lbf_native(l1, l0, mask, axes, keepdims):
    if mask is not None:  # masked sources become 0 - 0, which adds exactly nothing
        l1 = jnp.where(mask, l1, jnp.zeros_like(l1))
        l0 = jnp.where(mask, l0, jnp.zeros_like(l0))
    hi, _ = _native_pair("JaxstatsDifferenceSum", (l1, l0), axes)
    return _keep(hi, tuple(l1.shape), axes, keepdims)


def _lbf_xla(l1, l0, mask, axes, keepdims):
    def differences(b1, m, b0):
        # Fused into the compensated reduction (one pass): exact differences as pairs.
        d, e = nm.two_sum(b1, -b0)
        e = jnp.where(jnp.isfinite(d), e, jnp.zeros_like(e))
        if m is not None:
            d = jnp.where(m, d, jnp.zeros_like(d))
            e = jnp.where(m, e, jnp.zeros_like(e))
        return d, e

    hi, lo = nm.compensated_sum_pair(
        l1, axes, where=mask, keepdims=keepdims, transform=differences, extra=(l0,)
    )
    return nm.pair_value(hi, lo)


@_lbf_core.defjvp
def _lbf_jvp(axes, keepdims, path, primals, tangents):
    l1, l0, mask = primals
    t1, t0, _ = tangents
    dt = t1 - t0
    if mask is not None:
        dt = jnp.where(mask, dt, jnp.zeros_like(dt))
    return _lbf_core(l1, l0, mask, axes, keepdims, path), jnp.sum(dt, axis=axes, keepdims=keepdims)


_lbf_jit = jax.jit(_lbf_core, static_argnums=(3, 4, 5))


def log_bayes_factor(
    log_likelihood_alternative: ArrayLike,
    log_likelihood_null: ArrayLike,
    *,
    axis: int | Sequence[int] | None = -1,
    keepdims: bool = False,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Log Bayes factor :math:`\sum_j (\ell^{(1)}_j - \ell^{(0)}_j)` from per-source likelihoods.

    Each difference is formed exactly (TwoSum: the rounded difference and its error) and all of
    them are added with :func:`compensated_sum`, so the result is the correctly rounded log Bayes
    factor even when the log-likelihoods are around ``-1000`` per source (summing each
    hypothesis first and subtracting would cancel catastrophically).

    Args:
      log_likelihood_alternative: log-likelihoods under the alternative :math:`H_1`.
      log_likelihood_null: log-likelihoods under the null :math:`H_0`, broadcastable with the
        alternative; the two are cast to their common float dtype.
      axis: the source axis (axes) to combine; default the last; ``None`` combines all.
      keepdims: keep the reduced axes with length 1.
      where: optional bool mask broadcastable with the inputs; False sources are ignored.

    Returns:
      The log Bayes factor :math:`\log B_{10}` with the reduced shape.

    Raises:
      ValueError: for shapes that do not broadcast or an out-of-range ``axis``.
      TypeError: for complex input or a non-bool mask.

    NaN and inf:
      A source impossible under :math:`H_1` only gives ``-inf``, under :math:`H_0` only
      ``+inf``; under both (``-inf - -inf``) it is undefined and gives NaN, as do NaN inputs and
      sums of ``+inf`` and ``-inf`` -- in that slice only.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import log_bayes_factor
      >>> l1 = jnp.array([-1000.25, -1000.5, -999.0])
      >>> l0 = jnp.array([-1000.0, -1000.0, -1000.0])
      >>> log_bayes_factor(l1, l0)
      Array(0.25, dtype=float32)
    """
    fn = "log_bayes_factor"
    l1 = _checks.as_float_array(fn, "log_likelihood_alternative", log_likelihood_alternative)
    l0 = _checks.as_float_array(fn, "log_likelihood_null", log_likelihood_null)
    if l1.dtype != l0.dtype:
        dt = np.promote_types(l1.dtype, l0.dtype)
        l1, l0 = l1.astype(dt), l0.astype(dt)
    shape = _broadcast_shape(
        fn, ("log_likelihood_alternative", "'log_likelihood_null'"), tuple(l1.shape), tuple(l0.shape)
    )
    l1 = jnp.broadcast_to(l1, shape)
    l0 = jnp.broadcast_to(l0, shape)
    mask = _mask(fn, where, shape)
    if len(shape) == 0:
        l1, l0 = l1.reshape(1), l0.reshape(1)
        mask = None if mask is None else mask.reshape(1)
        axes: tuple[int, ...] = (0,)
        squeeze_scalar = True
    else:
        axes = _axes(fn, axis, len(shape))
        squeeze_scalar = False
    out = _lbf_jit(l1, l0, mask, axes, bool(keepdims), _reduction_path(l1.dtype))
    return out.reshape(()) if squeeze_scalar else out


# ----------------------------------------------------------------------------------------------
# Sequential tests
# ----------------------------------------------------------------------------------------------


def _time_last(fn: str, x: Any, axis: int, where: Any):
    """x (float), its mask (or None), with the time axis moved last."""
    xf = _checks.as_float_array(fn, "log_likelihood_ratio", x)
    if xf.ndim == 0:
        raise ValueError(
            f"{fn}: 'log_likelihood_ratio' must have a time axis; got a scalar. For a single "
            "observation use x[None]."
        )
    ax = _checks.check_axis(fn, "axis", axis, xf.ndim)
    mask = _mask(fn, where, tuple(xf.shape))
    xf = jnp.moveaxis(xf, ax, -1)
    mask = None if mask is None else jnp.moveaxis(mask, ax, -1)
    return xf, mask, ax


def _per_slice(fn: str, name: str, value: Any, batch: tuple[int, ...], dtype) -> jax.Array:
    v = _checks.as_float_array(fn, name, value, dtype=dtype)
    _broadcast_shape(fn, (name, "the batch shape"), tuple(v.shape), batch, target=batch)
    return jnp.broadcast_to(v, batch)


def _cumulative_sum_time_last(x):
    """Compensated prefix sums along the last axis: a ``lax.scan`` over time whose carry is a
    double word for every batch element (vectorized across agents), rounded per step."""
    if x.shape[-1] == 0:
        return x
    xt = jnp.moveaxis(x, -1, 0)

    def step(carry, xi):
        hi, lo = nm.pair_add(carry[0], carry[1], xi)
        return (hi, lo), nm.pair_value(hi, lo)

    zero = jnp.zeros(x.shape[:-1], x.dtype)
    _, out = lax.scan(step, (zero, zero), xt)
    return jnp.moveaxis(out, 0, -1)


def _first_true(flags):
    """(any, index of the first True along the last axis; n when none) as (bool, int32)."""
    n = flags.shape[-1]
    hit = jnp.any(flags, axis=-1)
    idx = jnp.argmax(flags, axis=-1).astype(jnp.int32) if n else jnp.zeros(flags.shape[:-1], jnp.int32)
    return hit, jnp.where(hit, idx, jnp.int32(n))


def sprt(
    log_likelihood_ratio: ArrayLike,
    *,
    alpha: ArrayLike = 0.05,
    beta: ArrayLike = 0.05,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> SPRTResult:
    r"""Wald's sequential probability ratio test on streams of log-likelihood ratios.

    The cumulative log-likelihood ratio :math:`S_t = \sum_{i \le t} \log \frac{p_1(x_i)}
    {p_0(x_i)}` is computed by a ``lax.scan`` over time with a compensated (double-word) carry
    for every agent at once, and compared with
    Wald's boundaries :math:`A = \log\frac{1 - \beta}{\alpha}` and
    :math:`B = \log\frac{\beta}{1 - \alpha}`: the test stops at the first :math:`t` with
    :math:`S_t \ge A` (accept :math:`H_1`) or :math:`S_t \le B` (accept :math:`H_0`). Every slice
    (agent) along the other axes is an independent test; all run at once.

    Args:
      log_likelihood_ratio: ``[..., time]`` log-likelihood ratios (time on ``axis``).
      alpha: type I error rate, in (0, 1); a Python number or an array broadcastable to the
        batch shape (per-agent rates).
      beta: type II error rate, in (0, 1), likewise. Python numbers must satisfy
        ``alpha + beta < 1``.
      axis: the time axis (static int).
      where: optional bool mask broadcastable to the input; False steps are skipped (they add
        nothing and cannot stop the test).

    Returns:
      :class:`SPRTResult` ``(decision, stopping_index, log_likelihood_ratio, log_lower,
      log_upper)`` with the batch shape.

    Raises:
      ValueError: for a scalar input, an out-of-range axis, ``alpha``/``beta`` outside (0, 1)
        or with ``alpha + beta >= 1``, or shapes that do not broadcast.
      TypeError: for complex input or a non-bool mask.

    NaN and inf:
      ``-inf`` (impossible under :math:`H_1`) stops the test with ``decision = -1``; ``+inf``
      stops it with ``1``. A NaN before a decision makes the statistic NaN, so that agent stays
      undecided (``0``) with a NaN ``log_likelihood_ratio``; other agents are untouched.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import sprt
      >>> llr = jnp.array([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
      ...                  [-1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0]])
      >>> r = sprt(llr, alpha=0.05, beta=0.05)
      >>> r.decision, r.stopping_index
      (Array([ 1, -1], dtype=int32), Array([5, 2], dtype=int32))

    References:
      Wald, "Sequential tests of statistical hypotheses", Ann. Math. Statist., 1945.
    """
    fn = "sprt"
    _probability(fn, "alpha", alpha)
    _probability(fn, "beta", beta)
    if (
        isinstance(alpha, (int, float, np.number))
        and isinstance(beta, (int, float, np.number))
        and float(alpha) + float(beta) >= 1.0
    ):
        raise ValueError(
            f"{fn}: 'alpha' + 'beta' must be < 1 for the boundaries to bracket 0; got "
            f"alpha={alpha!r}, beta={beta!r}."
        )
    x, mask, _ = _time_last(fn, log_likelihood_ratio, axis, where)
    batch = tuple(x.shape[:-1])
    a = _per_slice(fn, "alpha", alpha, batch, x.dtype)
    b = _per_slice(fn, "beta", beta, batch, x.dtype)
    return _sprt_impl(x, mask, a, b)


@jax.jit
def _sprt_impl(x, mask, a, b):
    batch = tuple(x.shape[:-1])
    lower = jnp.log(b) - nm.log1p(-a)
    upper = nm.log1p(-b) - jnp.log(a)
    live = jnp.ones(x.shape, bool) if mask is None else mask
    xs = jnp.where(live, x, jnp.zeros_like(x))
    s = _cumulative_sum_time_last(xs)
    up = live & (s >= upper[..., None])
    down = live & (s <= lower[..., None])
    hit, idx = _first_true(up | down)
    n = x.shape[-1]
    if n:
        at = jnp.clip(idx, 0, n - 1)[..., None]
        s_at = jnp.take_along_axis(s, at, axis=-1)[..., 0]
        up_at = jnp.take_along_axis(up, at, axis=-1)[..., 0]
        decision = jnp.where(hit, jnp.where(up_at, 1, -1), 0).astype(jnp.int32)
    else:
        s_at = jnp.zeros(batch, x.dtype)
        decision = jnp.zeros(batch, jnp.int32)
    return SPRTResult(decision, idx, s_at, lower, upper)


def cusum(
    log_likelihood_ratio: ArrayLike,
    threshold: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> CUSUMResult:
    r"""Page's CUSUM on streams of log-likelihood ratios: :math:`C_t = \max(0, C_{t-1} + x_t)`.

    The statistic resets at zero (evidence for "no change" is not banked) and raises an alarm
    the first time :math:`C_t \ge h`. It runs as a ``lax.scan`` over time whose carry is a
    double-word (compensated) accumulator for every agent at once; the path keeps running after
    an alarm. Every slice along the other axes is an independent detector.

    Args:
      log_likelihood_ratio: ``[..., time]`` log-likelihood ratios of "changed" vs "in control"
        (or any score with negative drift before the change and positive after).
      threshold: alarm threshold :math:`h > 0`; a Python number or an array broadcastable to
        the batch shape (per-agent thresholds).
      axis: the time axis (static int).
      where: optional bool mask broadcastable to the input; False steps are skipped (the
        statistic holds its value and cannot alarm there).

    Returns:
      :class:`CUSUMResult` ``(alarm, alarm_index, statistic)``.

    Raises:
      ValueError: for a scalar input, an out-of-range axis, a non-positive Python threshold,
        or shapes that do not broadcast.
      TypeError: for complex input or a non-bool mask.

    NaN and inf:
      ``-inf`` resets the statistic to 0; ``+inf`` raises an alarm. A NaN makes that agent's
      statistic NaN from then on (it never alarms afterwards); other agents are untouched.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats.evidence import cusum
      >>> r = cusum(jnp.array([-1.0, 2.0, -3.0, 1.0, 1.0, 1.0, 1.0]), 2.5)
      >>> r.statistic
      Array([0., 2., 0., 1., 2., 3., 4.], dtype=float32)
      >>> r.alarm, r.alarm_index
      (Array(True, dtype=bool), Array(5, dtype=int32))

    References:
      Page, "Continuous inspection schemes", Biometrika, 1954.
    """
    fn = "cusum"
    if isinstance(threshold, (bool, np.bool_)):
        raise TypeError(f"{fn}: 'threshold' must be a positive number; got {threshold!r}.")
    if isinstance(threshold, (int, float, np.number)) and not float(threshold) > 0:
        raise ValueError(f"{fn}: 'threshold' must be > 0; got {threshold!r}.")
    x, mask, ax = _time_last(fn, log_likelihood_ratio, axis, where)
    batch = tuple(x.shape[:-1])
    h = _per_slice(fn, "threshold", threshold, batch, x.dtype)
    return _cusum_impl(x, mask, h, ax)


@partial(jax.jit, static_argnums=(3,))
def _cusum_impl(x, mask, h, ax):
    batch = tuple(x.shape[:-1])
    live = jnp.ones(x.shape, bool) if mask is None else mask
    n = x.shape[-1]
    if n == 0:
        return CUSUMResult(jnp.zeros(batch, bool), jnp.zeros(batch, jnp.int32), jnp.moveaxis(x, -1, ax))
    xt = jnp.moveaxis(x, -1, 0)
    lt = jnp.moveaxis(live, -1, 0)

    def step(carry, inp):
        hi, lo = carry
        xi, li = inp
        n_hi, n_lo = nm.pair_add(hi, lo, xi)
        v = nm.pair_value(n_hi, n_lo)
        reset = v <= 0  # False for NaN: NaN stays
        n_hi = jnp.where(reset, jnp.zeros_like(n_hi), n_hi)
        n_lo = jnp.where(reset, jnp.zeros_like(n_lo), n_lo)
        n_hi = jnp.where(li, n_hi, hi)
        n_lo = jnp.where(li, n_lo, lo)
        return (n_hi, n_lo), nm.pair_value(n_hi, n_lo)

    zero = jnp.zeros(batch, x.dtype)
    _, path = lax.scan(step, (zero, zero), (xt, lt))
    path = jnp.moveaxis(path, 0, -1)
    alarm, idx = _first_true(live & (path >= h[..., None]))
    return CUSUMResult(alarm, idx, jnp.moveaxis(path, -1, ax))
