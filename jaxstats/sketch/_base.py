"""The streaming-state abstraction shared by every sketch.

A :class:`Sketch` is a ``NamedTuple`` of four pure functions returned by a factory that
closes over static configuration (see ``STYLE.md``, section 2)::

    sk = jaxstats.sketch.moments()
    state = sk.init(jnp.zeros(()))              # one stream; init does not count its example
    state = sk.update(state, x, where=None)     # fold one observation in
    state = sk.merge(state_a, state_b)          # combine two partial summaries
    result = sk.query(state)                    # read the summary

States are NamedTuples (or dicts) of arrays with fixed shapes and dtypes, so they ride through
``jit``, ``vmap`` (agents), ``lax.scan`` (time) and ``shard_map`` (devices). ``x`` has the
*event shape* of the example given to ``init`` (``()`` for one feature, ``(8,)`` for eight); a
population is handled with ``jax.vmap(sk.update)(states, x_t)`` over a leading agents axis.

Laws every sketch documents and the conformance suite checks:

* identity: ``merge(init(e), s) == s`` and ``merge(s, init(e)) == s``;
* associativity: ``merge(merge(a, b), c) == merge(a, merge(b, c))`` (floats: up to rounding);
* commutativity, where the sketch claims it (decayed sketches are ordered in time: ``a`` is the
  earlier segment);
* ``update(s, x) == merge(s, update(init(e), x))``;
* splitting a stream anywhere and merging the parts equals the one-pass state.

This module also holds the private helpers the sketches share: argument checks, the
``where=`` mask, exponential-decay factors and double-word ("hi + lo") accumulators that keep
float32 sums and counts exact past 2**24.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_real

__all__ = ["Sketch", "combine", "fold", "from_batch", "nbytes"]

PyTree = Any


class Sketch(NamedTuple):
    """Four pure functions over a fixed-shape state pytree.

    Attributes:
      init: ``init(example) -> state``. Reads only the shape and dtype of ``example`` (an array
        or a ``jax.ShapeDtypeStruct``); the example is not counted.
      update: ``update(state, x, *, where=None) -> state``. ``x`` has the event shape of the
        example; ``where`` is an optional bool mask broadcastable to it; False entries are
        skipped (the state of those entries is returned unchanged, bit for bit).
      merge: ``merge(a, b) -> state``: the state of stream ``a`` followed by stream ``b``.
      query: ``query(state, *args) -> result``: an array or a NamedTuple of arrays.
    """

    init: Callable[..., PyTree]
    update: Callable[..., PyTree]
    merge: Callable[[PyTree, PyTree], PyTree]
    query: Callable[..., Any]


def combine(**sketches: Any) -> Sketch:
    """Compose several sketches into one whose state is a dict of their states.

    ``update(state, x)`` routes ``x[name]`` to each part when ``x`` is a dict with the same
    keys, and otherwise passes the same ``x`` to every part (``where`` likewise). ``init``
    accepts either a dict of examples or one shared example. ``query(state, **args)`` returns a
    dict of the parts' results; ``args[name]`` is a tuple of extra positional arguments for
    that part's query (a single non-tuple value is passed as one argument), e.g.
    ``query(state, tail=(jnp.array([0.5, 0.99]),))``.

    Args:
      **sketches: the parts, by name. At least one is required.

    Returns:
      A :class:`Sketch` over ``dict[str, state]``.

    Raises:
      ValueError: if no sketch is given, a dict input does not have exactly the parts' keys,
        or a query argument names an unknown part.
      TypeError: if a part is not a :class:`Sketch`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats import sketch
      >>> sk = sketch.combine(m=sketch.moments(), e=sketch.ewma(half_life=2))
      >>> state = sk.init(jnp.zeros(()))
      >>> for x in (1.0, 2.0, 6.0):
      ...     state = sk.update(state, jnp.float32(x))
      >>> sk.query(state)["m"].mean
      Array(3., dtype=float32)
    """
    if not sketches:
        raise ValueError("combine: give at least one sketch, e.g. combine(m=moments()).")
    for name, sk in sketches.items():
        if not isinstance(sk, Sketch):
            raise TypeError(
                f"combine: part {name!r} must be a jaxstats.sketch.Sketch; got {type(sk).__name__}."
            )
    names = tuple(sketches)

    def _route(x, what):
        if isinstance(x, dict):
            if set(x) != set(names):
                raise ValueError(
                    f"combine: dict {what} has keys {sorted(x)}; expected exactly {sorted(names)}."
                )
            return x
        return {n: x for n in names}

    def init_fn(example):
        ex = _route(example, "example")
        return {n: sketches[n].init(ex[n]) for n in names}

    def update_fn(state, x, *, where=None):
        xs = _route(x, "input")
        ws = _route(where, "where")
        return {n: sketches[n].update(state[n], xs[n], where=ws[n]) for n in names}

    def merge_fn(a, b):
        return {n: sketches[n].merge(a[n], b[n]) for n in names}

    def query_fn(state, **args):
        unknown = set(args) - set(names)
        if unknown:
            raise ValueError(
                f"combine: query arguments name unknown parts {sorted(unknown)}; "
                f"the parts are {sorted(names)}."
            )
        out = {}
        for n in names:
            a = args.get(n, ())
            a = a if isinstance(a, tuple) else (a,)
            out[n] = sketches[n].query(state[n], *a)
        return out

    return Sketch(init_fn, update_fn, merge_fn, query_fn)


def fold(sketch: Sketch, states: PyTree, *, axis: int = 0) -> PyTree:
    """Merge a stack of states along ``axis`` into one, as a balanced tree (depth log2 n).

    Neighbours are merged in order (``s0`` with ``s1``, ``s2`` with ``s3``, ...), so the
    result respects the stacking order: sketches whose merge is ordered in time (decay) fold
    correctly when the stack is in time order.

    Args:
      sketch: the sketch the states belong to.
      states: a state pytree whose leaves all have the stacked axis ``axis`` of equal length.
      axis: the stacked axis (static).

    Returns:
      One state, without the stacked axis.

    Raises:
      ValueError: if the stacked axis is empty or has unequal lengths across leaves.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxstats import sketch
      >>> sk = sketch.moments()
      >>> parts = jax.vmap(lambda x: sketch.from_batch(sk, x))(jnp.arange(6.0).reshape(3, 2))
      >>> sk.query(sketch.fold(sk, parts)).variance
      Array(2.9166667, dtype=float32)
    """
    leaves = jax.tree_util.tree_leaves(states)
    if not leaves:
        raise ValueError("fold: 'states' has no array leaves.")
    lengths = {jnp.shape(leaf)[axis] for leaf in leaves}
    if len(lengths) != 1:
        raise ValueError(f"fold: leaves disagree on the length of axis {axis}: {sorted(lengths)}.")
    (n,) = lengths
    if n == 0:
        raise ValueError("fold: cannot fold an empty stack of states (axis length 0).")
    states = jax.tree_util.tree_map(lambda leaf: jnp.moveaxis(leaf, axis, 0), states)
    # Balanced merging of neighbours; the level count is static (log2 n), never a loop over data.
    while n > 1:
        half = n // 2
        even = jax.tree_util.tree_map(lambda leaf: leaf[0 : 2 * half : 2], states)
        odd = jax.tree_util.tree_map(lambda leaf: leaf[1 : 2 * half : 2], states)
        merged = jax.vmap(sketch.merge)(even, odd)
        if n % 2:
            rest = jax.tree_util.tree_map(lambda leaf: leaf[2 * half :], states)
            merged = jax.tree_util.tree_map(
                lambda m, r: jnp.concatenate([m, r], axis=0), merged, rest
            )
        states = merged
        n = half + n % 2
    return jax.tree_util.tree_map(lambda leaf: leaf[0], states)


def from_batch(sketch: Sketch, xs: jax.Array, *, where: jax.Array | None = None) -> PyTree:
    """The state of one stream after folding in ``xs`` along its leading (time) axis.

    Uses ``lax.scan`` over the leading axis of ``xs``; the example for ``init`` is ``xs[0]``.

    Args:
      sketch: the sketch.
      xs: ``[obs, *event]`` observations.
      where: optional ``[obs, *event]`` (or ``[obs]`` plus trailing ones) bool mask; False
        entries are skipped.

    Returns:
      The state after all observations.

    Raises:
      ValueError: if ``xs`` has no leading axis or ``where`` does not have its length.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxstats import sketch
      >>> sk = sketch.moments()
      >>> sk.query(sketch.from_batch(sk, jnp.array([1.0, 2.0, 4.0]))).mean
      Array(2.33333, dtype=float32)
    """
    xs = jnp.asarray(xs)
    if xs.ndim == 0:
        raise ValueError("from_batch: 'xs' must have a leading obs axis; got a scalar.")
    example = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
    state0 = sketch.init(example)

    if where is None:

        def body(state, x):
            return sketch.update(state, x), None

        state, _ = jax.lax.scan(body, state0, xs)
    else:
        where = jnp.asarray(where)
        if where.ndim == 0 or where.shape[0] != xs.shape[0]:
            raise ValueError(
                "from_batch: 'where' must have the leading obs axis of 'xs' "
                f"({xs.shape[0]}); got shape {tuple(where.shape)}."
            )

        def body(state, xw):
            x, w = xw
            return sketch.update(state, x, where=w), None

        state, _ = jax.lax.scan(body, state0, (xs, where))
    return state


def nbytes(state: PyTree, *, batched: bool = True) -> float:
    """Memory of a state in bytes; **per agent** for a batched state.

    Args:
      state: a state pytree. With ``batched=True`` (default) every leaf has a leading
        ``agents`` axis of the same length and the result is the bytes of one agent's state
        (total bytes divided by the number of agents).
      batched: set False for a single (unbatched) state: the result is its total bytes.

    Returns:
      Bytes as a Python float (computed from shapes and dtypes; no device transfer). Works on
      ``jax.ShapeDtypeStruct`` leaves too (e.g. from ``jax.eval_shape``).

    Raises:
      ValueError: if ``batched`` and the leaves disagree on the agent count.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxstats import sketch
      >>> sk = sketch.moments()
      >>> sketch.nbytes(sk.init(jnp.zeros(8)), batched=False)
      320.0
    """
    leaves = jax.tree_util.tree_leaves(state)
    total = sum(int(np.prod(jnp.shape(leaf))) * jnp.dtype(leaf.dtype).itemsize for leaf in leaves)
    if not batched:
        return float(total)
    counts = {jnp.shape(leaf)[0] for leaf in leaves if jnp.ndim(leaf) > 0}
    if len(counts) != 1 or any(jnp.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError(
            "nbytes: batched=True needs every leaf to have the same leading agents axis; "
            f"got leading sizes {sorted(counts)}. For one agent's state use batched=False."
        )
    (n_agents,) = counts
    return float(total) / max(int(n_agents), 1)


# --------------------------------------------------------------------------------------------
# Private helpers shared by the sketch modules.
# --------------------------------------------------------------------------------------------


def _example_spec(fn: str, example: Any, dtype: Any) -> tuple[tuple[int, ...], Any]:
    """(event shape, float dtype) from an example array or ``jax.ShapeDtypeStruct``.

    Floats keep their dtype; ints and bools map to the default float dtype (float32, or
    float64 under x64); an explicit ``dtype`` wins and must be a float dtype.
    """
    if dtype is not None:
        dt = jnp.dtype(dtype)
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(f"{fn}: 'dtype' must be a floating dtype; got {dt}.")
        dt = jnp.dtype(jax.dtypes.canonicalize_dtype(dt))
    if isinstance(example, jax.ShapeDtypeStruct):
        shape, ex_dtype = tuple(example.shape), jnp.dtype(example.dtype)
    else:
        if isinstance(example, (list, tuple)) or np.isscalar(example):
            example = np.asarray(example)
        shape, ex_dtype = tuple(jnp.shape(example)), jnp.result_type(example)
    check_real(fn, "example", np.zeros((), ex_dtype))
    if dtype is None:
        if jnp.issubdtype(ex_dtype, jnp.floating):
            dt = jnp.dtype(jax.dtypes.canonicalize_dtype(ex_dtype))
        else:
            dt = jnp.dtype(jnp.result_type(float))
    return shape, dt


def _prepare(fn: str, event: tuple[int, ...], dtype: Any, x: Any, where: Any):
    """Cast ``x`` to the state dtype and broadcast ``where`` to the event shape (trace time)."""
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        x = np.asarray(x)
    check_real(fn, "x", x)
    if tuple(jnp.shape(x)) != tuple(event):
        raise ValueError(
            f"{fn}: 'x' must have the event shape {tuple(event)} of the state; got shape "
            f"{tuple(jnp.shape(x))}. Update one stream at a time and batch agents with "
            "jax.vmap(sk.update)(states, x)."
        )
    x = jnp.asarray(x).astype(dtype)
    if where is None:
        return x, None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"{fn}: 'where' must be a bool mask; got dtype {where.dtype}.")
    try:
        shape = jnp.broadcast_shapes(tuple(where.shape), tuple(event))
    except ValueError:
        shape = None
    if shape != tuple(event):
        raise ValueError(
            f"{fn}: 'where' of shape {tuple(where.shape)} does not broadcast to the event "
            f"shape {tuple(event)}."
        )
    lead = (1,) * (len(event) - where.ndim)
    where = jnp.broadcast_to(where.reshape(lead + tuple(where.shape)), event)
    return x, where


def _keep_where(mask, new, old):
    """``new`` where ``mask`` else ``old``, leaf by leaf; ``mask`` has the event shape and
    leaves may carry trailing axes (buckets, orders). ``mask=None`` returns ``new``."""
    if mask is None:
        return new

    def sel(n, o):
        m = mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim))
        return jnp.where(m, n, o)

    return jax.tree_util.tree_map(sel, new, old)


def _decay_factor(fn: str, half_life: Any, decay: Any) -> float | None:
    """Per-observation decay factor ``lambda`` in (0, 1), or None for no decay.

    ``half_life`` h (observations) gives ``lambda = 2 ** (-1 / h)``; ``decay`` gives it
    directly. At most one may be given.
    """
    if half_life is not None and decay is not None:
        raise ValueError(f"{fn}: give at most one of 'half_life' and 'decay'; got both.")
    if half_life is not None:
        if isinstance(half_life, bool) or not isinstance(half_life, (int, float, np.number)):
            raise TypeError(
                f"{fn}: 'half_life' must be a static Python number; got {type(half_life).__name__}."
            )
        if not (math.isfinite(half_life) and half_life > 0):
            raise ValueError(
                f"{fn}: 'half_life' must be a positive finite number of observations; "
                f"got {half_life!r}."
            )
        return float(2.0 ** (-1.0 / float(half_life)))
    if decay is not None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float, np.number)):
            raise TypeError(
                f"{fn}: 'decay' must be a static Python number; got {type(decay).__name__}."
            )
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(
                f"{fn}: 'decay' must lie strictly between 0 and 1 (the weight kept per "
                f"observation); got {decay!r}. Use half_life=... for a half-life instead."
            )
        return float(decay)
    return None


def _decay_of(lam: float, weight: jax.Array) -> jax.Array:
    """``lam ** n`` for a segment whose decayed weight is ``sum_{i<n} lam**i = weight``.

    Uses ``lam**n = 1 - (1 - lam) * weight`` (exact in real arithmetic), clipped to [0, 1].
    """
    one_minus = 1.0 - lam
    return jnp.clip(1.0 - one_minus * weight, 0.0, 1.0)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den != 0``, else 0 (double-where: no NaN leaks, safe gradients)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Knuth's error-free sum: ``s + e == a + b`` exactly, ``s = fl(a + b)``."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _fast_two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Dekker's error-free sum, valid when ``|a| >= |b|`` (or ``a == 0``)."""
    s = a + b
    e = b - (s - a)
    return s, e


def _dw_add(hi: jax.Array, lo: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Add the float ``b`` to the double-word number ``hi + lo``; returns a normalized pair.

    The pair carries about twice the working precision (48 bits in float32), so a float32
    count stays exact up to 2**48 and small increments to large sums are not lost.
    """
    s, e = _two_sum(hi, b)
    return _renormalize(s, e + lo)


def _dw_add_dw(
    ahi: jax.Array, alo: jax.Array, bhi: jax.Array, blo: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Sum of two double-word numbers, normalized."""
    s, e = _two_sum(ahi, bhi)
    return _renormalize(s, e + (alo + blo))


def _renormalize(s: jax.Array, e: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Normalized pair for ``s + e``; an overflowed or NaN ``s`` keeps ``lo = 0`` (so ``inf``
    stays ``inf`` instead of turning into ``inf - inf = NaN``)."""
    hi, lo = _fast_two_sum(s, e)
    finite = jnp.isfinite(hi)
    return jnp.where(finite, hi, s), jnp.where(finite, lo, jnp.zeros_like(lo))


def _sat_add_u32(a: jax.Array, b: jax.Array) -> jax.Array:
    """Saturating uint32 addition: stops at 2**32 - 1 instead of wrapping."""
    s = a + b
    return jnp.where(s < a, jnp.array(np.iinfo(np.uint32).max, jnp.uint32), s)
