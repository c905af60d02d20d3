"""One conformance suite for every sketch factory (STYLE.md, sections 2 and 7).

Add a sketch with one line in ``REGISTRY``: ``Entry("name", lambda: factory(...))``. Optional
fields say what the sketch claims (``commutative``), how its result is read (``query``) and how
its merges compare (``exact``: bit-exact states; otherwise the query results agree within
``rtol``/``atol``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis.extra import numpy as hnp
from jax.sharding import Mesh, PartitionSpec as P

from jaxstats import sketch
from jaxstats.sketch.evidence import log_evidence

Q = jnp.array([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0], jnp.float32)


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    make: Callable[[], sketch.Sketch]
    query: Callable[[sketch.Sketch, Any], Any] = lambda sk, s: sk.query(s)
    commutative: bool = True  # merge(a, b) == merge(b, a) and order invariance
    exact: bool = False  # merge laws hold bit for bit on the state
    rtol: float = 2e-4  # float32 tolerances for the query results when not exact
    atol: float = 2e-3


def _quantiles(sk, s):
    return sk.query(s, Q)


def _moment_view(sk, s):
    """Scale-free view of a moment-sketch state: its maximum-entropy query amplifies rounding
    on point masses, so the laws are checked on the moments themselves."""
    n = s.count + s.count_lo
    out = {"n": n, "min": s.min, "max": s.max}
    sides = (
        ("x", s.mean + s.mean_lo, s.m + s.m_lo),
        ("log", s.log_mean + s.log_mean_lo, s.log_m + s.log_m_lo),
    )
    for side, mean, m in sides:
        c = m / jnp.maximum(n, 1.0)[..., None]
        scale = 1.0 + jnp.abs(mean) + jnp.sqrt(jnp.maximum(c[..., 0], 0.0))
        out[side + "_mean"] = mean / scale
        std = c / scale[..., None] ** jnp.arange(2, c.shape[-1] + 2, dtype=c.dtype)[None, :]
        out[side + "_m"] = jnp.moveaxis(std, -1, 0)  # results keep the event axes last
    return out


REGISTRY = [
    Entry("moments", lambda: sketch.moments()),
    Entry("moments_decay", lambda: sketch.moments(half_life=6), commutative=False),
    Entry("ewma", lambda: sketch.ewma(half_life=6), commutative=False),
    Entry("ddsketch", lambda: sketch.ddsketch(0.02, n_buckets=301), _quantiles, exact=True),
    Entry(
        "ddsketch_decay",
        lambda: sketch.ddsketch(0.02, n_buckets=301, half_life=6),
        _quantiles,
        commutative=False,
    ),
    Entry(
        "momentsketch",
        lambda: sketch.momentsketch(4, n_grid=64, n_iter=12),
        _moment_view,
        rtol=1e-4,
        atol=1e-4,
    ),
    Entry("log_evidence", lambda: log_evidence()),
    Entry("log_evidence_decay", lambda: log_evidence(half_life=6), commutative=False),
    Entry(
        "combined",
        lambda: sketch.combine(m=sketch.moments(), q=sketch.ddsketch(0.02, n_buckets=301)),
        lambda sk, s: sk.query(s, q=(Q,)),
    ),
]
IDS = [e.name for e in REGISTRY]
BY_NAME = {e.name: e for e in REGISTRY}

L = 16  # stream length (fixed: hypothesis varies the values and the mask, never the shape)
EVENT = (2,)


@functools.lru_cache(maxsize=None)
def _fns(name: str):
    """Jitted helpers per registry entry, compiled once for the whole session."""
    entry = BY_NAME[name]
    sk = entry.make()
    ex = jax.ShapeDtypeStruct(EVENT, jnp.float32)
    return dict(
        sk=sk,
        init=lambda: sk.init(ex),
        run=jax.jit(lambda xs, w: sketch.from_batch(sk, xs, where=w)),
        update=jax.jit(lambda s, x, w: sk.update(s, x, where=w)),
        update_nomask=jax.jit(lambda s, x: sk.update(s, x)),
        merge=jax.jit(sk.merge),
        query=jax.jit(lambda s: entry.query(sk, s)),
        run_agents=jax.jit(jax.vmap(lambda xs, w: sketch.from_batch(sk, xs, where=w))),
    )


values = st.integers(-64, 64).map(lambda i: i / 8.0)
streams = hnp.arrays(np.float32, (L,) + EVENT, elements=values)
masks = hnp.arrays(np.bool_, (L,) + EVENT)


def _assert_states_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_same(entry: Entry, a, b):
    """The two states summarize the same stream: bit-exact or equal query results."""
    f = _fns(entry.name)
    if entry.exact:
        _assert_states_equal(a, b)
    ra, rb = f["query"](a), f["query"](b)
    for x, y in zip(jax.tree_util.tree_leaves(ra), jax.tree_util.tree_leaves(rb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=entry.rtol, atol=entry.atol)


@pytest.fixture(params=IDS, scope="module")
def entry(request) -> Entry:
    return BY_NAME[request.param]


# ------------------------------------------------------------------------------------ laws


@hypothesis.given(xs=streams, w=masks)
def test_identity(entry, xs, w):
    f = _fns(entry.name)
    s = f["run"](xs, w)
    e = f["init"]()
    _assert_states_equal(f["merge"](e, s), s)
    _assert_states_equal(f["merge"](s, e), s)


@hypothesis.given(xs=streams, w=masks, cut=st.tuples(st.integers(0, L), st.integers(0, L)))
def test_associativity(entry, xs, w, cut):
    f = _fns(entry.name)
    i, j = sorted(cut)
    t = np.arange(L)[:, None]
    a = f["run"](xs, w & (t < i))
    b = f["run"](xs, w & (t >= i) & (t < j))
    c = f["run"](xs, w & (t >= j))
    left = f["merge"](f["merge"](a, b), c)
    right = f["merge"](a, f["merge"](b, c))
    _assert_same(entry, left, right)


@hypothesis.given(xs=streams, w=masks, cut=st.integers(0, L))
def test_commutativity_where_claimed(entry, xs, w, cut):
    if not entry.commutative:
        pytest.skip(f"{entry.name} does not claim commutativity (merges are ordered in time)")
    f = _fns(entry.name)
    t = np.arange(L)[:, None]
    a, b = f["run"](xs, w & (t < cut)), f["run"](xs, w & (t >= cut))
    _assert_same(entry, f["merge"](a, b), f["merge"](b, a))


@hypothesis.given(xs=streams, w=masks, x=hnp.arrays(np.float32, EVENT, elements=values))
def test_update_is_merge_with_singleton(entry, xs, w, x):
    f = _fns(entry.name)
    s = f["run"](xs, w)
    single = f["update_nomask"](f["init"](), x)
    _assert_same(entry, f["update_nomask"](s, x), f["merge"](s, single))


@hypothesis.given(xs=streams, w=masks, cut=st.integers(0, L))
def test_split_anywhere_and_merge_is_one_pass(entry, xs, w, cut):
    f = _fns(entry.name)
    t = np.arange(L)[:, None]
    whole = f["run"](xs, w)
    parts = f["merge"](f["run"](xs, w & (t < cut)), f["run"](xs, w & (t >= cut)))
    _assert_same(entry, whole, parts)


@hypothesis.settings(max_examples=10)
@hypothesis.given(xs=streams, w=masks)
def test_batch_equals_element_by_element(entry, xs, w):
    f = _fns(entry.name)
    s = f["init"]()
    for i in range(L):  # the one allowed loop: the reference, one observation per call
        s = f["update"](s, xs[i], w[i])
    _assert_same(entry, f["run"](xs, w), s)


@hypothesis.settings(max_examples=10)
@hypothesis.given(xs=streams, seed=st.integers(0, 2**31 - 1))
def test_order_invariance(entry, xs, seed):
    if not entry.commutative:
        pytest.skip(f"{entry.name} weighs recent observations more: order matters by design")
    f = _fns(entry.name)
    w = np.ones_like(xs, bool)
    base = f["run"](xs, w)
    perm = np.random.default_rng(seed).permutation(L)
    for other in (np.sort(xs, axis=0), xs[::-1], xs[perm]):
        _assert_same(entry, base, f["run"](np.ascontiguousarray(other), w))


# ------------------------------------------------------------------- structure and batching


def test_stable_structure_shape_dtype(entry):
    f = _fns(entry.name)
    sk = f["sk"]
    s0 = f["init"]()
    ref = jax.tree_util.tree_structure(s0), [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(s0)]
    x = jnp.ones(EVENT, jnp.float32)
    for out in (
        jax.eval_shape(lambda s: sk.update(s, x), s0),
        jax.eval_shape(lambda s: sk.update(s, x, where=jnp.array([True, False])), s0),
        jax.eval_shape(sk.merge, s0, s0),
    ):
        got = jax.tree_util.tree_structure(out), [(o.shape, o.dtype) for o in jax.tree_util.tree_leaves(out)]
        assert got == ref
    # Rides through lax.scan (from_batch) and lax.cond.
    s1 = f["run"](jnp.ones((L,) + EVENT), jnp.ones((L,) + EVENT, bool))
    picked = jax.jit(lambda p, a, b: jax.lax.cond(p, lambda: a, lambda: b))(True, s1, s0)
    _assert_states_equal(picked, s1)


def test_init_from_shape_dtype_struct(entry):
    sk = _fns(entry.name)["sk"]
    a = sk.init(jax.ShapeDtypeStruct(EVENT, jnp.float32))
    b = sk.init(jnp.zeros(EVENT, jnp.float32))
    _assert_states_equal(a, b)
    c = sk.init(jax.ShapeDtypeStruct(EVENT, jnp.int32))  # ints -> default float dtype
    floats = [x.dtype for x in jax.tree_util.tree_leaves(c) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(d == jnp.float32 for d in floats)
    # init does not count its example: it equals the state after an all-masked stream.
    f = _fns(entry.name)
    _assert_states_equal(a, f["run"](jnp.full((L,) + EVENT, 3.0), jnp.zeros((L,) + EVENT, bool)))


def test_vmap_over_agents_equals_loop(entry):
    f = _fns(entry.name)
    rng = np.random.default_rng(0)
    xs = (rng.integers(-64, 65, (3, L) + EVENT) / 8).astype(np.float32)
    w = rng.random((3, L) + EVENT) < 0.8
    batched = f["run_agents"](xs, w)
    for a in range(3):  # the one allowed loop: the reference, agent by agent
        one = jax.tree_util.tree_map(lambda leaf: leaf[a], batched)
        _assert_same(entry, one, f["run"](xs[a], w[a]))


def test_where_false_is_a_no_op_and_nan_stays_local(entry):
    f = _fns(entry.name)
    s = f["run"](jnp.arange(L * 2, dtype=jnp.float32).reshape((L,) + EVENT), jnp.ones((L,) + EVENT, bool))
    nan_x = jnp.array([jnp.nan, 2.5], jnp.float32)
    _assert_states_equal(f["update"](s, nan_x, jnp.array([False, False])), s)
    masked = f["update"](s, nan_x, jnp.array([False, True]))
    ok = f["update"](s, jnp.array([0.0, 2.5], jnp.float32), jnp.array([False, True]))
    _assert_states_equal(masked, ok)
    # Unmasked NaN: feature 0 becomes NaN, feature 1 is exactly what it would be without it.
    hit = f["query"](f["update_nomask"](s, nan_x))
    ref = f["query"](f["update_nomask"](s, jnp.array([1.0, 2.5], jnp.float32)))
    any_nan = False
    for h, r in zip(jax.tree_util.tree_leaves(hit), jax.tree_util.tree_leaves(ref)):
        h, r = np.asarray(h), np.asarray(r)
        np.testing.assert_array_equal(h[..., 1], r[..., 1])
        if np.all(np.isnan(h[..., 0])):
            any_nan = True
        else:  # count-like results are unaffected by the value
            np.testing.assert_array_equal(h[..., 0], r[..., 0])
    assert any_nan


def test_no_retrace(entry):
    sk = _fns(entry.name)["sk"]
    ex = jax.ShapeDtypeStruct(EVENT, jnp.float32)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(s, x):
        return sk.update(s, x)

    s = sk.init(ex)
    s = step(s, jnp.ones(EVENT, jnp.float32))
    s = step(s, jnp.full(EVENT, 2.0, jnp.float32))
    chex.clear_trace_counter()


def test_sharded_merge_equals_single_device(entry):
    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip("needs the 4 CPU devices that conftest.py configures")
    f = _fns(entry.name)
    sk = f["sk"]
    mesh = Mesh(np.array(devices[:4]), ("d",))
    rng = np.random.default_rng(1)
    xs = jnp.asarray((rng.integers(-64, 65, (4 * L,) + EVENT) / 8).astype(np.float32))

    def local(xs_shard):
        s = sketch.from_batch(sk, xs_shard)  # this device's segment of the one stream
        gathered = jax.lax.all_gather(s, "d")  # [4, ...] in device (= time) order
        return sketch.fold(sk, gathered)

    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("d"), out_specs=P(), check_vma=False))
    got = sharded(xs)
    want = jax.jit(lambda x: sketch.from_batch(sk, x))(xs)
    _assert_same(entry, got, want)
