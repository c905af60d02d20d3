"""ddsketch and momentsketch (float32): the relative-error guarantee, accuracy, collapse,
decay, counters, sharded psum merge, edge cases and errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxstats import sketch

N = 20_000
QS = np.concatenate([[0.0, 0.001, 0.005], np.linspace(0.01, 0.99, 99), [0.995, 0.999, 1.0]])
NAMES = ("lognormal", "pareto", "bimodal", "negative", "constant", "normal", "uniform")


@functools.lru_cache(maxsize=None)
def _data() -> np.ndarray:
    """[N, 7] float32: one dataset per feature (fixed seed)."""
    rng = np.random.default_rng(0)
    cols = [
        rng.lognormal(0.0, 1.5, N),
        rng.pareto(1.5, N) + 1.0,
        np.concatenate([rng.normal(-3.0, 1.0, N // 2), rng.normal(4.0, 0.5, N // 2)]),
        -rng.lognormal(1.0, 1.0, N),
        np.full(N, 3.7),
        rng.normal(0.0, 1.0, N),
        rng.uniform(-1.0, 5.0, N),
    ]
    return np.stack([rng.permutation(c) for c in cols], axis=1).astype(np.float32)


def _query_all(sk, x, qs=QS):
    run = jax.jit(lambda x, q: sk.query(sketch.from_batch(sk, x), q))
    return np.asarray(run(jnp.asarray(x), jnp.asarray(qs, x.dtype)), np.float64)


def _rank_error(col, est, qs=QS):
    """Distance of q from the interval of ranks the estimate could hold, per q."""
    srt = np.sort(col.astype(np.float64))
    lo = np.searchsorted(srt, est, "left") / srt.size
    hi = np.searchsorted(srt, est, "right") / srt.size
    return np.where(qs < lo, lo - qs, np.where(qs > hi, qs - hi, 0.0))


# ------------------------------------------------------------------------------- ddsketch


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_ddsketch_relative_error_guarantee(alpha):
    x = _data()
    min_value = 1e-3
    sk = sketch.ddsketch(alpha, n_buckets=2048 if alpha == 0.01 else 512, min_value=min_value)
    est = _query_all(sk, x)
    exact = np.quantile(x.astype(np.float64), QS, axis=0, method="lower")
    mag = np.abs(exact)
    err = np.abs(est - exact)
    in_range = (mag >= min_value) | (exact == 0)
    assert in_range.mean() > 0.99  # the bimodal data cross zero: a few collapse
    # The guarantee (float32 rounding of the representatives adds ~1e-7).
    assert np.all(err[in_range] <= alpha * mag[in_range] * (1 + 1e-4) + 1e-30)
    # Collapsed below min_value: absolute error at most min_value (same sign kept).
    assert np.all(err[~in_range] <= min_value * (1 + alpha))
    np.testing.assert_array_equal(est[-1], x.max(0))  # q = 1: the exact maximum
    np.testing.assert_array_equal(est[0], x.min(0))
    np.testing.assert_array_equal(est[:, NAMES.index("constant")], np.float32(3.7))


def test_ddsketch_default_grid_and_collapse_above_the_range():
    sk = sketch.ddsketch()  # alpha 1%, 1024 buckets: magnitudes [0.01, ~280] on each side
    state0 = sk.init(jnp.zeros(()))
    assert state0.counts.shape == (1024,) and state0.counts.dtype == jnp.uint32
    assert sketch.nbytes(state0, batched=False) == 4 * 1024 + 8
    rng = np.random.default_rng(1)
    x = rng.lognormal(2.0, 2.0, 5000).astype(np.float32)  # spills above 280
    est = _query_all(sk, x)
    exact = np.quantile(x.astype(np.float64), QS, method="lower")
    top = 0.01 * (1.01 / 0.99) ** 511
    ok = (exact >= 0.01) & (exact <= top)
    assert ok.mean() > 0.5 and (~ok).any()
    assert np.all(np.abs(est[ok] - exact[ok]) <= 0.01 * exact[ok] * (1 + 1e-4))
    above = exact > top * (1 + 0.01)
    # Above the range the answer is the top bucket's value, clipped to the exact max.
    assert np.all(est[above] >= top * 0.99) and np.all(est[above] <= x.max())
    assert est[-1] == x.max()


def test_ddsketch_unsigned_collapses_negatives_into_zero_bucket():
    sk = sketch.ddsketch(0.01, n_buckets=1024, signed=False)
    x = np.concatenate([-np.arange(1, 101), np.arange(1, 301)]).astype(np.float32)
    est = _query_all(sk, np.random.default_rng(2).permutation(x), np.array([0.1, 0.2, 0.5, 0.9]))
    exact = np.quantile(x.astype(np.float64), [0.1, 0.2, 0.5, 0.9], method="lower")
    np.testing.assert_array_equal(est[:2], 0.0)  # ranks right, values collapsed
    np.testing.assert_allclose(est[2:], exact[2:], rtol=0.0101)


def test_ddsketch_decay_matches_weighted_quantiles():
    h = 50
    lam = 2.0 ** (-1 / h)
    x = np.random.default_rng(3).lognormal(0.0, 1.0, 400).astype(np.float32)
    sk = sketch.ddsketch(0.01, n_buckets=2048, min_value=1e-3, half_life=h)
    qs = np.linspace(0.02, 0.98, 49)
    est = _query_all(sk, x, qs)
    w = lam ** np.arange(x.size - 1, -1, -1)
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    exact = x[order][np.searchsorted(cw, qs * (cw[-1] - 1), side="right")].astype(np.float64)
    assert np.all(np.abs(est - exact) <= 0.01 * exact * (1 + 1e-4))
    # Recent data dominate: the decayed median differs from the plain one.
    plain = _query_all(sketch.ddsketch(0.01, n_buckets=2048, min_value=1e-3), x, np.array([0.5]))
    assert abs(est[24] - plain[0]) > 0.02 * plain[0]


def test_ddsketch_query_shapes_and_nan_results():
    sk = sketch.ddsketch()
    s = sketch.from_batch(sk, jnp.arange(1.0, 31.0).reshape(10, 3))
    assert sk.query(s, 0.5).shape == (3,)
    assert sk.query(s, jnp.array([0.1, 0.5])).shape == (2, 3)
    assert sk.query(s, jnp.full((2, 4), 0.5)).shape == (2, 4, 3)
    assert sk.query(s, [0.5, 0.9]).shape == (2, 3)
    bad = sk.query(s, jnp.array([-0.1, 1.5, jnp.nan]))
    assert np.all(np.isnan(bad))
    assert np.all(np.isnan(sk.query(sk.init(jnp.zeros(3)), 0.5)))
    with pytest.raises(TypeError, match="ddsketch.query: 'q' must be a real number"):
        sk.query(s, jnp.array([0.5j]))


def test_ddsketch_nan_and_inf():
    sk = sketch.ddsketch()
    xs = jnp.array([[1.0, 1.0], [jnp.nan, jnp.inf], [3.0, -jnp.inf], [2.0, 2.0]])
    out = sk.query(sketch.from_batch(sk, xs), jnp.array([0.0, 0.5, 1.0]))
    assert np.all(np.isnan(out[:, 0]))  # NaN: this feature only
    assert out[0, 1] == -np.inf and out[2, 1] == np.inf and np.isfinite(out[1, 1])


def test_ddsketch_counts_exact_after_1e8_updates_and_saturate():
    sk = sketch.ddsketch(0.01)
    chunk = np.random.default_rng(4).lognormal(0.0, 0.5, 10_000).astype(np.float32)
    one = sketch.from_batch(sk, jnp.asarray(chunk))
    state, _ = jax.jit(lambda s: jax.lax.scan(lambda s, _: (sk.merge(s, one), None), s, None, length=10_000))(
        sk.init(jnp.zeros(()))
    )
    counts = np.asarray(state.counts, np.uint64)
    assert counts.sum() == 10**8  # a float32 counter would stop at 2**24
    np.testing.assert_array_equal(counts, np.asarray(one.counts, np.uint64) * 10_000)
    # Saturation, not wrap-around, at 2**32 - 1 per bucket (update and merge).
    top = np.uint32(2**32 - 2)
    full = state._replace(counts=jnp.full_like(state.counts, top))
    s2 = sk.update(sk.update(full, jnp.float32(1.0)), jnp.float32(1.0))
    assert int(s2.counts.max()) == 2**32 - 1 and int(s2.counts.min()) == 2**32 - 2
    assert int(sk.merge(full, full).counts.min()) == 2**32 - 1


def test_ddsketch_psum_across_devices_equals_merge():
    if len(jax.devices()) < 4:
        pytest.skip("needs the 4 CPU devices that conftest.py configures")
    sk = sketch.ddsketch(0.02, n_buckets=301)
    mesh = Mesh(np.array(jax.devices()[:4]), ("d",))
    xs = jnp.asarray(np.random.default_rng(5).normal(0, 10, (400, 2)).astype(np.float32))

    def local(x):
        s = sketch.from_batch(sk, x)
        return sketch.DDSketchState(
            jax.lax.psum(s.counts, "d"), jax.lax.pmin(s.min, "d"), jax.lax.pmax(s.max, "d")
        )

    got = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("d"), out_specs=P(), check_vma=False))(xs)
    want = sketch.from_batch(sk, xs)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ddsketch_vmapped_agents_with_where():
    sk = sketch.ddsketch(0.01, n_buckets=512, min_value=0.5)  # [0.5, 82]: covers the data
    x = np.random.default_rng(6).uniform(1, 10, (4, 50, 2)).astype(np.float32)
    w = np.random.default_rng(7).random((4, 50, 2)) < 0.7
    states = jax.jit(jax.vmap(lambda x, w: sketch.from_batch(sk, x, where=w)))(x, w)
    np.testing.assert_array_equal(np.asarray(states.counts).sum(-1), w.sum(1))
    med = np.asarray(jax.vmap(lambda s: sk.query(s, 0.5))(states))
    for a in range(4):
        for f in range(2):
            exact = np.quantile(x[a, w[a, :, f], f].astype(np.float64), 0.5, method="lower")
            assert abs(med[a, f] - exact) <= 0.01 * exact * (1 + 1e-4)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(relative_accuracy=0.0), ValueError, "'relative_accuracy' must lie strictly between 0 and 1"),
        (dict(relative_accuracy=True), TypeError, "'relative_accuracy' must be a static float"),
        (dict(n_buckets=2), ValueError, "'n_buckets' must be an int >= 3"),
        (dict(min_value=0.0), ValueError, "'min_value' must be a positive finite number"),
        (dict(half_life=-1), ValueError, "'half_life' must be a positive finite number"),
        (dict(min_value=1e30, n_buckets=4096), ValueError, "the top bucket .* overflows float32"),
    ],
)
def test_ddsketch_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sketch.ddsketch(**kwargs).init(jnp.zeros(()))


def test_ddsketch_update_shape_error():
    sk = sketch.ddsketch()
    with pytest.raises(ValueError, match=r"ddsketch.update: 'x' must have the event shape \(2,\)"):
        sk.update(sk.init(jnp.zeros(2)), jnp.zeros(3))


# ---------------------------------------------------------------------------- momentsketch

# Measured maximum rank errors (fixed data, N = 20000, k = 6, float32) are below
# 0.006 except on the bimodal mixture (0.02); the bounds leave room for platform rounding.
RANK_BOUND = dict(
    lognormal=0.01, pareto=0.01, bimodal=0.04, negative=0.01, constant=0.0, normal=0.01, uniform=0.01
)


def test_momentsketch_rank_error():
    x = _data()
    sk = sketch.momentsketch()
    est = _query_all(sk, x)
    for j, name in enumerate(NAMES):
        err = _rank_error(x[:, j], est[:, j])
        assert err.max() <= RANK_BOUND[name], (name, err.max())
    np.testing.assert_array_equal(est[:, NAMES.index("constant")], np.float32(3.7))
    np.testing.assert_array_equal(est[-1], x.max(0))
    np.testing.assert_array_equal(est[0], x.min(0))


def test_momentsketch_merge_of_halves_keeps_accuracy_and_size():
    x = _data()[:, :2]
    sk = sketch.momentsketch()
    run = jax.jit(lambda x: sketch.from_batch(sk, x))
    merged = jax.jit(sk.merge)(run(jnp.asarray(x[: N // 3])), run(jnp.asarray(x[N // 3 :])))
    est = np.asarray(jax.jit(sk.query)(merged, jnp.asarray(QS, jnp.float32)), np.float64)
    for j in range(2):
        assert _rank_error(x[:, j], est[:, j]).max() <= 0.01
    assert sketch.nbytes(merged, batched=False) == 2 * 112  # 112 bytes per stream at k = 6


def test_momentsketch_edge_cases():
    sk = sketch.momentsketch()
    query = jax.jit(sk.query)
    empty = query(sk.init(jnp.zeros(())), jnp.array([0.0, 0.5, 1.0]))
    assert np.all(np.isnan(empty))
    one = sk.update(sk.init(jnp.zeros(())), jnp.float32(2.5))
    np.testing.assert_array_equal(query(one, jnp.array([0.0, 0.3, 1.0])), 2.5)
    # NaN in one feature, extremes and a 1e4 shift in the others.
    rng = np.random.default_rng(8)
    xs = np.stack([rng.normal(size=500), rng.normal(size=500) + 1e4, rng.uniform(-1e30, 1e30, 500)], 1)
    xs = xs.astype(np.float32)
    xs[7, 0] = np.nan
    est = _query_all(sk, xs)
    assert np.all(np.isnan(est[:, 0]))
    for j in (1, 2):
        assert _rank_error(xs[:, j], est[:, j]).max() <= 0.03
    with pytest.raises(ValueError, match=r"'k' must be an int in \[2, 12\]"):
        sketch.momentsketch(1)
    with pytest.raises(ValueError, match="'n_grid' must be an int >= 16"):
        sketch.momentsketch(n_grid=8)
    with pytest.raises(ValueError, match="'n_iter' must be an int >= 1"):
        sketch.momentsketch(n_iter=0)
    with pytest.raises(TypeError, match="momentsketch.query: 'q' must be a real number"):
        sk.query(one, jnp.array([0.5j]))
