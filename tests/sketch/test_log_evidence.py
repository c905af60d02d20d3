"""The log_evidence sketch (float32): merge laws (hypothesis), precision of the running state
(10**7 sequential updates vs an exact oracle), K-hypothesis posteriors, forgetting, NaN/inf
locality across streams and agents, counts beyond 2**24, and every error message."""

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis.extra import numpy as hnp
from jax import lax

from jaxstats import evidence as ev
from jaxstats import sketch
from jaxstats.sketch.evidence import LogEvidenceState, log_evidence

F32 = np.float32
L = 12  # stream length for the law checks (fixed shape: hypothesis varies values and masks)


def _ulps(got, exact: float) -> float:
    cr = F32(exact)
    return abs(float(got) - float(cr)) / float(np.spacing(np.abs(cr)))


@functools.lru_cache(maxsize=None)
def _fns(mode: str):
    """Jitted helpers per configuration, compiled once per session."""
    sk = {
        "scalar": lambda: log_evidence(),
        "k3": lambda: log_evidence(num_hypotheses=3),
        "decay": lambda: log_evidence(half_life=5),
    }[mode]()
    event = (3,) if mode == "k3" else ()
    ex = jax.ShapeDtypeStruct(event, jnp.float32)
    return dict(
        sk=sk,
        event=event,
        init=lambda: sk.init(ex),
        run=jax.jit(lambda xs, w: sketch.from_batch(sk, xs, where=w)),
        update=jax.jit(lambda s, x: sk.update(s, x)),
        merge=jax.jit(sk.merge),
        query=jax.jit(sk.query),
    )


def _streams(mode):
    shape = (L,) + ((3,) if mode == "k3" else ())
    vals = st.integers(-64, 64).map(lambda i: i / 8.0)
    return hnp.arrays(np.float32, shape, elements=vals)


masks = hnp.arrays(np.bool_, (L,))


def _mask_for(mode, w):
    return np.broadcast_to(w[:, None], (L, 3)) if mode == "k3" else w


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=atol)


def _assert_state_equal(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------------------------
# Laws (hypothesis)
# ---------------------------------------------------------------------------------------------

MODES = ["scalar", "k3", "decay"]


@pytest.mark.parametrize("mode", MODES)
@hypothesis.given(data=st.data())
def test_identity_is_exact(mode, data):
    f = _fns(mode)
    xs, w = data.draw(_streams(mode)), data.draw(masks)
    s = f["run"](xs, _mask_for(mode, w))
    e = f["init"]()
    _assert_state_equal(f["merge"](e, s), s)
    _assert_state_equal(f["merge"](s, e), s)


@pytest.mark.parametrize("mode", MODES)
@hypothesis.given(data=st.data())
def test_associativity_split_anywhere_and_update_is_merge_with_singleton(mode, data):
    f = _fns(mode)
    xs, w = data.draw(_streams(mode)), data.draw(masks)
    i = data.draw(st.integers(0, L))
    j = data.draw(st.integers(i, L))
    m = _mask_for(mode, w)
    whole = f["run"](xs, m)
    m = np.asarray(m)

    def segment(lo, hi):
        """Observations lo..hi-1, padded to the fixed length L with masked-out zeros."""
        pad = L - (hi - lo)
        x = np.concatenate([xs[lo:hi], np.zeros((pad,) + xs.shape[1:], F32)])
        w = np.concatenate([m[lo:hi], np.zeros((pad,) + m.shape[1:], bool)])
        return f["run"](x, w)

    a, b, c = segment(0, i), segment(i, j), segment(j, L)
    left = f["merge"](f["merge"](a, b), c)
    right = f["merge"](a, f["merge"](b, c))
    q = f["query"]
    _close(q(left), q(right))
    _close(q(left), q(whole))
    np.testing.assert_allclose(np.asarray(left.count), np.asarray(whole.count), rtol=1e-6)
    # update == merge with a singleton, bit for bit without forgetting
    x = xs[0]
    single = f["update"](f["init"](), x)
    via_merge = f["merge"](whole, single)
    direct = f["update"](whole, x)
    if mode == "decay":
        _close(q(via_merge), q(direct))
    else:
        _assert_state_equal(via_merge, direct)


@pytest.mark.parametrize("mode", ["scalar", "k3"])
@hypothesis.given(data=st.data())
def test_commutativity_and_permutation_invariance(mode, data):
    f = _fns(mode)
    xs, w = data.draw(_streams(mode)), data.draw(masks)
    cut = data.draw(st.integers(0, L))
    perm = np.random.default_rng(data.draw(st.integers(0, 2**16))).permutation(L)
    m = np.asarray(_mask_for(mode, w))
    whole = f["run"](xs, m)
    first = (np.arange(L) < cut).reshape((L,) + (1,) * (m.ndim - 1))  # the two halves, as masks
    a = f["run"](xs, m & first)
    b = f["run"](xs, m & ~first)
    _assert_state_equal(f["merge"](a, b), f["merge"](b, a))  # exactly commutative
    _close(f["query"](f["merge"](a, b)), f["query"](whole))
    shuffled = f["run"](xs[perm], m[perm])
    _close(f["query"](shuffled), f["query"](whole))


def test_decay_merge_is_ordered_not_commutative():
    f = _fns("decay")
    xs = np.arange(1, 9, dtype=F32)
    ones = np.ones(8, bool)
    a = f["run"](np.concatenate([xs[:4], np.zeros(4, F32)]), np.arange(8) < 4)
    b = f["run"](np.concatenate([xs[4:], np.zeros(4, F32)]), np.arange(8) < 4)
    whole = f["run"](xs, ones)
    lam = 2.0 ** (-1 / 5)
    want = sum(float(v) * lam ** (7 - i) for i, v in enumerate(xs))
    np.testing.assert_allclose(float(f["query"](whole)), want, rtol=1e-6)
    np.testing.assert_allclose(float(f["query"](f["merge"](a, b))), want, rtol=1e-6)
    assert abs(float(f["query"](f["merge"](b, a))) - want) > 1.0
    # effective count is the decayed weight sum(lam**age)
    np.testing.assert_allclose(float(whole.count + whole.count_lo), sum(lam**i for i in range(8)), rtol=1e-6)


def test_k_mode_with_forgetting_matches_reference_and_merges():
    lam = 0.9
    sk = log_evidence(num_hypotheses=2, decay=lam)
    ll = np.random.default_rng(3).normal(-5, 1, (10, 2)).astype(F32)
    w = np.arange(10) != 4  # observation 4 is skipped: it neither counts nor ages the state
    ages = np.cumsum(w[::-1])[::-1] - w  # number of later unmasked observations
    tot = [math.fsum(float(ll[i, k]) * lam ** ages[i] for i in range(10) if w[i]) for k in range(2)]
    want = np.array(tot) - np.logaddexp(*tot)
    run = jax.jit(lambda x, m: sketch.from_batch(sk, x, where=m))
    whole = run(ll, np.broadcast_to(w[:, None], (10, 2)))
    np.testing.assert_allclose(np.asarray(sk.query(whole)), want, rtol=1e-5, atol=1e-6)
    first = np.broadcast_to((w & (np.arange(10) < 6))[:, None], (10, 2))
    second = np.broadcast_to((w & (np.arange(10) >= 6))[:, None], (10, 2))
    # segments as separate streams: the masked-out rows do not age either segment
    merged = jax.jit(sk.merge)(run(ll, first), run(ll, second))
    np.testing.assert_allclose(np.asarray(sk.query(merged)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(merged.count + merged.count_lo), sum(lam**a for a in ages[w]), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------


def test_ten_million_sequential_updates_within_4_ulp():
    """10**7 single-observation updates (lax.scan, ~1 s): the float32 state rounds to within 4 ulp
    of the exact sum, while a plain float32 running sum drifts by many ulps. Inputs are multiples
    of 2**-20 below 1 in magnitude, so the float64 oracle sum is exact."""
    n = 10**7
    rng = np.random.default_rng(0)
    k = rng.integers(-(2**20) + 1, 2**20, n)
    k[: n // 2] += 2**18  # drift: the sum grows large, which is what breaks float32
    k = np.clip(k, -(2**20) + 1, 2**20 - 1)
    x = (k * 2.0**-20).astype(F32)
    exact = float(np.sum(x.astype(np.float64)))  # exact: 21-bit terms, |partial| < 2**23
    sk = log_evidence()

    @jax.jit
    def run(xs):
        def body(s, xi):
            return sk.update(s, xi), None

        s, _ = lax.scan(body, sk.init(jnp.zeros((), jnp.float32)), xs)
        return s

    s = run(jnp.asarray(x))
    assert _ulps(sk.query(s), exact) <= 4
    assert float(s.count) + float(s.count_lo) == n
    plain = jax.jit(lambda xs: lax.scan(lambda c, xi: (c + xi, None), jnp.float32(0), xs)[0])(jnp.asarray(x))
    assert _ulps(plain, exact) > 16


def test_count_keeps_counting_past_2_pow_24():
    sk = log_evidence()
    s = sk.init(jnp.zeros(()))
    s = s._replace(count=jnp.float32(2**24))
    upd = jax.jit(sk.update)
    for _ in range(3):
        s = upd(s, jnp.float32(0.5))
    assert float(s.count) + float(s.count_lo) == 2**24 + 3  # a float32 counter would stop
    assert float(jnp.float32(2**24) + jnp.float32(1)) == 2**24  # ...as this shows
    big = sk.merge(s, s)
    assert float(big.count) + float(big.count_lo) == 2 * (2**24 + 3)


def test_large_magnitude_log_likelihoods_k_mode_posterior():
    rng = np.random.default_rng(4)
    n, k = 5_000, 3
    ll = (rng.normal(-1000, 5, (n, 1)) + rng.normal(0, 0.1, (n, k)) + np.array([0.0, 2e-4, 0.0])).astype(F32)
    sk = log_evidence(num_hypotheses=3)
    prior = jnp.log(jnp.array([0.5, 0.25, 0.25]))

    @jax.jit
    def run(v, p):
        s = sketch.from_batch(sk, v)
        return sk.query(s), sk.query(s, p), ev.log_posterior(jnp.zeros(3), v), ev.log_posterior(p, v)

    got, got_p, want, want_p = run(ll, prior)
    tol = 4 * 2.0**-24 * float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=tol)
    np.testing.assert_allclose(np.asarray(got_p), np.asarray(want_p), rtol=0, atol=4 * tol)


# ---------------------------------------------------------------------------------------------
# Semantics: -inf, NaN locality, masks, batching
# ---------------------------------------------------------------------------------------------


def test_inf_nan_stay_in_their_stream_and_agent():
    sk = log_evidence()
    x = jnp.array([[0.5, -jnp.inf, 1.0], [0.5, jnp.nan, 1.0], [0.5, jnp.inf, 1.0], [0.5, 0.25, 1.0]])
    s = jax.jit(jax.vmap(lambda v: sketch.from_batch(sk, v)))(x)  # 4 agents, 3 steps
    q = np.asarray(jax.vmap(sk.query)(s))
    assert q[0] == -np.inf and np.isnan(q[1]) and q[2] == np.inf and q[3] == 1.75
    assert np.all(np.asarray(s.log_evidence_lo)[:3] == 0)  # no NaN in the low words
    # event-shaped streams: one bad element leaves its neighbours alone
    s2 = jax.jit(lambda v: sketch.from_batch(sk, v))(jnp.array([[1.0, 2.0], [jnp.nan, 3.0]]))
    q2 = np.asarray(sk.query(s2))
    assert np.isnan(q2[0]) and q2[1] == 5.0


def test_k_mode_impossible_and_invalid_rows():
    sk = log_evidence(num_hypotheses=3)
    x = jnp.array(
        [
            [[-1.0, -jnp.inf, -2.0], [-1.0, -1.0, -1.0]],  # H1 impossible -> posterior 0, no NaN
            [[-jnp.inf, -jnp.inf, -jnp.inf], [-1.0, -1.0, -1.0]],  # impossible under all -> NaN
            [[jnp.nan, -1.0, -1.0], [-1.0, -1.0, -1.0]],  # NaN -> NaN
            [[jnp.inf, -1.0, -1.0], [-1.0, -1.0, -1.0]],  # +inf -> NaN
            [[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]],  # untouched
        ]
    )
    q = np.asarray(jax.jit(jax.vmap(lambda v: sk.query(sketch.from_batch(sk, v))))(x))
    assert q[0, 1] == -np.inf and np.all(np.isfinite(q[0, [0, 2]]))
    np.testing.assert_allclose(np.exp(q[0]).sum(), 1.0, rtol=1e-6)
    assert np.all(np.isnan(q[1:4]))
    want = np.asarray(jax.jit(ev.log_posterior)(jnp.zeros(3), x[4]))
    np.testing.assert_allclose(q[4], want, rtol=1e-6)


def test_where_skips_and_k_mode_row_masks():
    sk = log_evidence()
    s = sketch.from_batch(sk, jnp.array([1.0, jnp.nan, 2.0]), where=jnp.array([True, False, True]))
    assert float(sk.query(s)) == 3.0 and float(s.count) == 2.0
    sk3 = log_evidence(num_hypotheses=3)
    s3 = sk3.init(jnp.zeros(3))
    s3 = sk3.update(s3, jnp.array([0.0, -1.0, -2.0]), where=jnp.array([True, False, True]))  # partial row: skipped
    assert float(s3.count) == 0.0 and np.all(np.asarray(s3.log_evidence) == 0)
    s3 = sk3.update(s3, jnp.array([0.0, -1.0, -2.0]), where=jnp.array(True))
    assert float(s3.count) == 1.0


def test_vmap_over_agents_equals_loop_and_init_variants():
    sk = log_evidence(num_hypotheses=2)
    rng = np.random.default_rng(5)
    xs = rng.normal(-3, 1, (5, 40, 2)).astype(F32)
    batched = jax.jit(jax.vmap(lambda v: sketch.from_batch(sk, v)))(xs)
    for i in range(5):
        one = sketch.from_batch(sk, jnp.asarray(xs[i]))
        _assert_state_equal(jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], batched), one)
    a = sk.init(jax.ShapeDtypeStruct((2,), jnp.float32))
    b = sk.init(jnp.zeros(2, jnp.int32))  # ints -> default float
    assert isinstance(a, LogEvidenceState)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype == jnp.float32
    assert a.log_evidence.shape == (2,) and a.count.shape == ()
    assert sketch.nbytes(batched) == 2 * 2 * 4 + 2 * 4  # per agent: 2 pairs of [2] + count pair


def test_no_retrace():
    import chex

    sk = log_evidence()
    f = jax.jit(chex.assert_max_traces(lambda s, x: sk.update(s, x), n=1))
    s = sk.init(jnp.zeros(()))
    s = f(s, jnp.float32(1.0))
    s = f(s, jnp.float32(2.0))
    chex.clear_trace_counter()
    assert float(sk.query(s)) == 3.0


def test_streaming_agents_in_time_chunks_with_donation():
    """The benchmark's pattern: scan over time, vmap over agents, donated state."""
    sk = log_evidence()
    n_agents, t_steps = 1000, 64
    x = np.random.default_rng(6).normal(0.01, 1.0, (t_steps, n_agents)).astype(F32)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(states, chunk):
        def body(s, xt):
            return jax.vmap(sk.update)(s, xt), None

        return lax.scan(body, states, chunk)[0]

    states = jax.vmap(sk.init)(jnp.zeros(n_agents))
    states = step(states, jnp.asarray(x[:32]))
    states = step(states, jnp.asarray(x[32:]))
    got = np.asarray(jax.vmap(sk.query)(states))
    for i in range(0, n_agents, 97):
        assert _ulps(got[i], math.fsum(x[:, i].astype(np.float64))) <= 1


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="log_evidence: 'num_hypotheses' must be >= 2; got 1"):
        log_evidence(num_hypotheses=1)
    with pytest.raises(TypeError, match="log_evidence: 'num_hypotheses' must be a static int"):
        log_evidence(num_hypotheses=True)
    with pytest.raises(ValueError, match="log_evidence: give at most one of 'half_life' and 'decay'"):
        log_evidence(half_life=3, decay=0.5)
    with pytest.raises(ValueError, match="log_evidence: 'decay' must lie strictly between 0 and 1"):
        log_evidence(decay=1.0)
    with pytest.raises(ValueError, match="log_evidence: 'half_life' must be a positive finite number"):
        log_evidence(half_life=0)
    msg = r"log_evidence.init: with num_hypotheses=3 .* must have length 3; got shape \(2,\)"
    with pytest.raises(ValueError, match=msg):
        log_evidence(num_hypotheses=3).init(jnp.zeros(2))
    with pytest.raises(TypeError, match="log_evidence.init: 'dtype' must be a floating dtype"):
        log_evidence(dtype=jnp.int32).init(jnp.zeros(()))
    sk = log_evidence()
    s = sk.init(jnp.zeros(()))
    with pytest.raises(ValueError, match=r"log_evidence.update: 'x' must have the event shape \(\) of the state"):
        sk.update(s, jnp.zeros(3))
    with pytest.raises(TypeError, match="log_evidence.update: 'where' must be a bool mask"):
        sk.update(s, jnp.float32(1.0), where=jnp.float32(1.0))
    s2 = sk.init(jnp.zeros(2))
    with pytest.raises(ValueError, match=r"log_evidence.update: 'where' of shape \(3,\) does not broadcast"):
        sk.update(s2, jnp.zeros(2), where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="log_evidence.query: 'log_prior' applies to num_hypotheses=K only"):
        sk.query(s, jnp.zeros(()))
    sk3 = log_evidence(num_hypotheses=3)
    with pytest.raises(ValueError, match=r"log_evidence.query: 'log_prior' of shape \(2,\) does not broadcast"):
        sk3.query(sk3.init(jnp.zeros(3)), jnp.zeros(2))
