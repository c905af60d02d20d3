"""Tests of jaxstats.soft in float32 (float64 oracles and second derivatives live in
test_soft_x64.py).

Most tests share one data shape, ``[4, 24]`` (or ``[24, 4]`` along axis 0), so the jitted
kernels compile once and are reused: XLA compilation dominates the run time of this module.
"""

import functools
import itertools

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
from hypothesis import given
from hypothesis import strategies as st

from jaxstats import soft
from jaxstats._sort import sort
from jaxstats.rank import percentile_of_population, quantile, rankdata

REGS = ("l2", "kl")
SHAPE = (4, 24)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _data(seed=0, ties=False):
    rng = _rng(seed)
    if ties:
        return jnp.asarray(rng.integers(0, 7, size=SHAPE).astype(np.float32))
    return jnp.asarray(rng.normal(size=SHAPE).astype(np.float32))


# ------------------------------------------------------------------------------------------
# Reference solvers (numpy, float64)
# ------------------------------------------------------------------------------------------


def _ref_pav_kl(s, lw):
    """Non-increasing entropic isotonic fit by a plain Python PAV (block value
    logsumexp(s_B) - logsumexp(lw_B))."""
    blocks = []  # [logsumexp s, logsumexp lw, count]
    for a, b in zip(s, lw):
        blocks.append([a, b, 1])
        while len(blocks) > 1 and blocks[-2][0] - blocks[-2][1] < blocks[-1][0] - blocks[-1][1]:
            top = blocks.pop()
            blocks[-1][0] = np.logaddexp(blocks[-1][0], top[0])
            blocks[-1][1] = np.logaddexp(blocks[-1][1], top[1])
            blocks[-1][2] += top[2]
    out = []
    for a, b, c in blocks:
        out += [a - b] * c
    return np.array(out)


def _project_qp(z, w, reg):
    """Independent oracle for the permutahedron projection: optimize the convex weights of its
    n! vertices with SLSQP (Euclidean, or entropic: max <z, mu> - sum mu (log mu - 1))."""
    V = np.array(list(itertools.permutations(w)), dtype=np.float64)
    m = V.shape[0]

    if reg == "l2":
        def obj(lam):
            return 0.5 * np.sum((lam @ V - z) ** 2)
    else:
        def obj(lam):
            mu = np.maximum(lam @ V, 1e-300)
            return np.sum(mu * (np.log(mu) - 1.0)) - mu @ z

    res = scipy.optimize.minimize(
        obj, np.full(m, 1.0 / m), method="SLSQP", bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda lam: np.sum(lam) - 1.0}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    return res.x @ V


_iso_l2 = jax.jit(soft._iso_residual_l2)
_iso_kl = jax.jit(soft._iso_residual_kl)


# ------------------------------------------------------------------------------------------
# The pool-adjacent-violators core
# ------------------------------------------------------------------------------------------


def test_pav_l2_matches_scipy_isotonic_regression():
    rng = _rng(1)
    n = 24
    t = np.arange(n)
    rows = [
        rng.normal(size=n),
        rng.normal(size=n) + 0.05 * t,
        rng.normal(size=n) + 2.0 * t,  # increasing: pools into few blocks
        rng.normal(size=n) - 1.0 * t,  # mostly decreasing: mostly singletons
        np.arange(n, dtype=np.float64),  # one block
        -np.arange(n, dtype=np.float64),  # n singletons
        rng.integers(0, 3, size=n).astype(np.float64),  # ties
        np.full(n, 3.0),
    ]
    y = np.stack(rows).astype(np.float32)
    r = np.asarray(_iso_l2(jnp.asarray(y)))
    r1 = np.asarray(_iso_l2(jnp.asarray(y[1:2])))  # the single-row loop
    for i in range(len(rows)):
        ref = y[i] - scipy.optimize.isotonic_regression(y[i].astype(np.float64),
                                                       increasing=False).x
        np.testing.assert_allclose(r[i], ref, atol=2e-4 * (1.0 + np.abs(y[i]).max()))
    np.testing.assert_allclose(r1[0], r[1], atol=1e-5)
    assert np.all(r[5] == 0.0)  # singletons have exactly zero residual
    for m in (1, 2):  # the shortest rows
        ym = y[:2, :m]
        ref = np.stack([ym[i] - scipy.optimize.isotonic_regression(
            ym[i].astype(np.float64), increasing=False).x for i in range(2)])
        np.testing.assert_allclose(_iso_l2(jnp.asarray(ym)), ref, atol=1e-5)


def test_pav_kl_matches_reference():
    rng = _rng(2)
    n = 24
    s = np.sort(rng.normal(size=(3, n)) * 3.0)[:, ::-1].astype(np.float32)
    s[2, 5:9] = s[2, 5]  # ties
    lw = np.log(np.arange(n, 0, -1, dtype=np.float64)).astype(np.float32)
    r = np.asarray(_iso_kl(jnp.asarray(s), jnp.asarray(np.broadcast_to(lw, s.shape))))
    for i in range(3):
        v = _ref_pav_kl(s[i].astype(np.float64), lw.astype(np.float64))
        np.testing.assert_allclose(r[i], s[i] - lw - v, atol=1e-4 * (1 + np.abs(s[i]).max()))


# ------------------------------------------------------------------------------------------
# Definition: projections onto the permutahedron (independent QP oracle)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reg", REGS)
def test_soft_rank_and_sort_are_permutahedron_projections(reg):
    rho = np.arange(4.0, 0.0, -1.0)
    for seed in (0, 1):
        x = _rng(seed).normal(size=4)
        xj = jnp.asarray(x, jnp.float32)
        got = soft.soft_rank(xj, regularization_strength=0.7, regularization=reg)
        np.testing.assert_allclose(got, _project_qp(x / 0.7, np.arange(1.0, 5.0), reg), atol=2e-3)
        got = soft.soft_sort(xj, regularization_strength=2.0, regularization=reg)
        if reg == "l2":  # the projection is decreasing; soft_sort is ascending
            want = _project_qp(rho / 2.0, x, "l2")[::-1]
        else:  # the log of the entropic projection onto P(exp(x))
            want = np.log(_project_qp(rho / 2.0, np.exp(x), "kl"))[::-1]
        np.testing.assert_allclose(got, want, atol=3e-3)


# ------------------------------------------------------------------------------------------
# Limits: hard sort / rank as strength -> 0; the mean as strength -> inf
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reg", REGS)
def test_small_strength_equals_hard_rank_and_sort(reg):
    x = _data(3, ties=True)  # many ties: they get the average rank
    got = soft.soft_rank(x, regularization_strength=1e-3, regularization=reg)
    np.testing.assert_allclose(got, rankdata(x), rtol=1e-5)
    got_d = soft.soft_rank(x, regularization_strength=1e-3, regularization=reg, descending=True)
    np.testing.assert_allclose(got_d, rankdata(-x), rtol=1e-5)
    x = _data(4)
    got = soft.soft_sort(x, regularization_strength=1e-3, regularization=reg)
    np.testing.assert_allclose(got, sort(x), atol=1e-5)
    got_d = soft.soft_sort(x, regularization_strength=1e-3, regularization=reg, descending=True)
    np.testing.assert_allclose(got_d, np.sort(np.asarray(x))[:, ::-1], atol=1e-5)


@pytest.mark.parametrize("reg", REGS)
def test_large_strength_tends_to_the_mean(reg):
    x = _data(5)
    n = SHAPE[1]
    r = soft.soft_rank(x, regularization_strength=1e4, regularization=reg)
    np.testing.assert_allclose(r, np.full(SHAPE, (n + 1) / 2), rtol=1e-3)
    s = soft.soft_sort(x, regularization_strength=1e6, regularization=reg)
    xn = np.asarray(x, np.float64)
    if reg == "l2":
        target = xn.mean(axis=-1, keepdims=True)
    else:  # the mean in the exp domain
        target = scipy.special.logsumexp(xn, axis=-1, keepdims=True) - np.log(n)
    np.testing.assert_allclose(s, np.broadcast_to(target, SHAPE), atol=1e-3)


def test_strength_path_moves_from_hard_to_mean():
    x = _data(6)
    hard = np.asarray(rankdata(x))
    dists = [float(np.abs(soft.soft_rank(x, regularization_strength=e) - hard).sum())
             for e in (1e-5, 1e-2, 1e-1, 1.0, 10.0)]
    assert dists[0] < 1e-3
    assert all(a <= b + 1e-4 for a, b in zip(dists, dists[1:]))
    assert dists[-1] > 100.0


# ------------------------------------------------------------------------------------------
# Structural properties (hypothesis, one fixed shape so nothing recompiles)
# ------------------------------------------------------------------------------------------

_values = hnp.arrays(
    np.float32, SHAPE,
    elements=st.one_of(st.integers(-3, 3).map(float),
                       st.floats(-100, 100, allow_nan=False, width=32)),
)


@given(_values, st.sampled_from([0.01, 0.3, 3.0]), st.sampled_from(REGS))
def test_soft_rank_properties(x, eps, reg):
    n = SHAPE[1]
    r = np.asarray(soft.soft_rank(jnp.asarray(x), regularization_strength=eps,
                                  regularization=reg), np.float64)
    assert np.all(np.isfinite(r))
    assert np.all(r >= 1 - 1e-3) and np.all(r <= n + 1e-3)
    np.testing.assert_allclose(r.sum(axis=1), n * (n + 1) / 2, rtol=1e-4)
    for i in range(SHAPE[0]):
        order = np.argsort(x[i], kind="stable")
        assert np.all(np.diff(r[i][order]) >= -1e-3)  # keeps the order of x
        xs = x[i][order]
        tied = xs[1:] == xs[:-1]
        np.testing.assert_allclose(r[i][order][1:][tied], r[i][order][:-1][tied], atol=1e-3)


@given(_values, st.sampled_from([0.01, 0.3, 3.0]))
def test_soft_sort_properties(x, eps):
    xn = x.astype(np.float64)
    scale = 1 + np.abs(xn).max()
    s = np.asarray(soft.soft_sort(jnp.asarray(x), regularization_strength=eps), np.float64)
    assert np.all(np.diff(s, axis=1) >= -1e-4 * scale)
    np.testing.assert_allclose(s.sum(axis=1), xn.sum(axis=1), atol=1e-4 * scale * SHAPE[1])
    assert np.all(s.min(axis=1) >= xn.min(axis=1) - 1e-4 * scale)
    assert np.all(s.max(axis=1) <= xn.max(axis=1) + 1e-4 * scale)
    k = np.asarray(soft.soft_sort(jnp.asarray(x), regularization_strength=eps,
                                  regularization="kl"), np.float64)
    assert np.all(np.diff(k, axis=1) >= -1e-4 * scale)
    np.testing.assert_allclose(scipy.special.logsumexp(k, axis=1),
                               scipy.special.logsumexp(xn, axis=1), atol=1e-4 * scale)


def test_shift_by_1e4_loses_no_precision():
    base = np.array(_data(8))
    x = (base + np.float32(1e4)).astype(np.float32)
    x64 = x.astype(np.float64)
    got_r = np.asarray(soft.soft_rank(jnp.asarray(x), regularization_strength=0.05))
    got_s = np.asarray(soft.soft_sort(jnp.asarray(x), regularization_strength=0.3))
    with jax.enable_x64(True):
        ref_r = np.asarray(soft.soft_rank(jnp.asarray(x64 - 1e4), regularization_strength=0.05))
        ref_s = np.asarray(soft.soft_sort(jnp.asarray(x64 - 1e4), regularization_strength=0.3))
    np.testing.assert_allclose(got_r, ref_r, atol=2e-4 * SHAPE[1])
    np.testing.assert_allclose(got_s - 1e4, ref_s, atol=2e-3)  # ulp(1e4) in float32 is 1e-3


# ------------------------------------------------------------------------------------------
# Quantiles and percentiles
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["linear", "lower", "hazen", "inverted_cdf"])
def test_soft_quantile_small_strength_equals_quantile(method):
    x = _data(9)
    q = jnp.array([0.0, 0.1, 0.5, 0.9, 1.0], jnp.float32)
    got = soft.soft_quantile(x, q, regularization_strength=1e-3, method=method)
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, quantile(x, q, axis=-1, method=method), atol=1e-5)
    kd = soft.soft_quantile(x.T, q, axis=0, keepdims=True, regularization_strength=1e-3,
                            method=method)
    np.testing.assert_allclose(kd, quantile(x.T, q, axis=0, method=method, keepdims=True),
                               atol=1e-5)


def test_soft_quantile_flattened_and_smooth():
    x = _data(10)
    np.testing.assert_allclose(soft.soft_quantile(x, 0.5, axis=None, regularization_strength=1e-3),
                               quantile(x, 0.5), atol=1e-5)
    big = soft.soft_quantile(x, 0.9, regularization_strength=1e6)
    np.testing.assert_allclose(big, np.asarray(x).mean(axis=1), atol=1e-4)
    g = jax.jit(jax.grad(lambda v, e: jnp.sum(soft.soft_quantile(v, 0.5, regularization_strength=e))))
    g_hard = np.asarray(g(x, 1e-3))  # the hard median moves the one or two middle elements
    g_soft = np.asarray(g(x, 30.0))  # the soft one spreads over a block around the middle
    assert np.all(np.sum(g_hard != 0, axis=1) <= 2)
    assert np.all(np.sum(g_soft != 0, axis=1) > 2)
    np.testing.assert_allclose(np.sum(g_soft, axis=1), 1.0, rtol=1e-5)  # shift equivariance


@pytest.mark.parametrize("reg", REGS)
def test_soft_percentile_of_population_matches_hard(reg):
    a = _data(11, ties=True).T  # [agents=24, features=4], ranked along the agents axis
    for kind in ("rank", "mean"):
        got = soft.soft_percentile_of_population(a, kind=kind, regularization_strength=1e-3,
                                                 regularization=reg)
        np.testing.assert_allclose(got, percentile_of_population(a, kind=kind), rtol=1e-5)
        smooth = soft.soft_percentile_of_population(a, kind=kind, regularization_strength=1e5,
                                                    regularization=reg)
        centre = 100 * ((24 + 1) / 2 - (0.5 if kind == "mean" else 0.0)) / 24
        np.testing.assert_allclose(smooth, np.full(a.shape, centre), rtol=1e-3)


# ------------------------------------------------------------------------------------------
# Derivatives
# ------------------------------------------------------------------------------------------


def _loss(x, eps, c, reg):
    """One scalar through every public function (so one compile covers them all)."""
    c = c.astype(x.dtype)
    r = soft.soft_rank(x, regularization_strength=eps, regularization=reg)
    s = soft.soft_sort(x, regularization_strength=2.0 * eps, regularization=reg)
    q = soft.soft_quantile(x, jnp.array([0.3, 0.8], x.dtype), regularization_strength=2.0 * eps,
                           regularization=reg)
    p = soft.soft_percentile_of_population(x.T, regularization_strength=eps, regularization=reg)
    return (jnp.sum(r * c) + jnp.sum(jnp.sin(s) * c) + jnp.sum(q * q)
            + 0.01 * jnp.sum(p.T * c))


_loss_jit = jax.jit(_loss, static_argnames=("reg",))
_loss_grad = jax.jit(jax.grad(_loss, argnums=(0, 1)), static_argnames=("reg",))


@pytest.mark.parametrize("reg", REGS)
def test_gradients_match_finite_differences(reg):
    rng = _rng(12)
    x, c = _data(12), _data(13)
    eps = jnp.float32(0.4)
    gx, ge = _loss_grad(x, eps, c, reg=reg)
    assert bool(jnp.all(jnp.isfinite(gx))) and bool(jnp.isfinite(ge))
    v = rng.normal(size=SHAPE)
    h = 1e-5
    with jax.enable_x64(True):  # the same code in float64 for the finite differences
        x64, c64, v64 = (jnp.asarray(np.asarray(a, np.float64)) for a in (x, c, v))
        e64 = jnp.float64(0.4)
        fd_x = (_loss_jit(x64 + h * v64, e64, c64, reg=reg)
                - _loss_jit(x64 - h * v64, e64, c64, reg=reg)) / (2 * h)
        fd_e = (_loss_jit(x64, e64 + h, c64, reg=reg) - _loss_jit(x64, e64 - h, c64, reg=reg)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(gx * v.astype(np.float32))), float(fd_x),
                               rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(float(ge), float(fd_e), rtol=2e-3, atol=2e-3)
    # at ties the gradient stays finite (pooled blocks share it)
    gt, _ = _loss_grad(_data(14, ties=True), eps, c, reg=reg)
    assert bool(jnp.all(jnp.isfinite(gt)))


def test_l2_rank_jacobian_is_identity_minus_block_average():
    x = jnp.array([0.0, 0.1, 0.15, 3.0, 5.0], jnp.float32)  # the first three pool at eps = 1
    J = np.asarray(jax.jacrev(lambda t: soft.soft_rank(t, regularization_strength=1.0))(x))
    r = np.asarray(soft.soft_rank(x, regularization_strength=1.0))
    # pooled ranks: the block's mean rank plus the deviations of x / eps from their mean
    np.testing.assert_allclose(r[:3], 2.0 + np.array([0.0, 0.1, 0.15]) - 0.25 / 3, atol=1e-6)
    np.testing.assert_allclose(r[3:], [4.0, 5.0])
    expect = np.zeros((5, 5))
    expect[:3, :3] = np.eye(3) - 1.0 / 3.0
    np.testing.assert_allclose(J, expect, atol=1e-6)


_rank_sq_grad = jax.jit(
    jax.grad(lambda x, reg: jnp.sum(soft.soft_rank(x, regularization_strength=0.3,
                                                   regularization=reg) ** 2)),
    static_argnames=("reg",),
)


@pytest.mark.parametrize("reg", REGS)
def test_gradient_with_infinities_is_finite(reg):
    x = np.array(_data(15, ties=True))
    x[0, :3] = np.inf
    x[1, 4] = -np.inf
    g = _rank_sq_grad(jnp.asarray(x), reg=reg)
    assert bool(jnp.all(jnp.isfinite(g)))
    assert np.all(np.asarray(g)[0, :3] == 0.0)  # infinities sit at hard ranks


# ------------------------------------------------------------------------------------------
# Transformations: jit, vmap, retracing
# ------------------------------------------------------------------------------------------


def _rank_and_sort(x, eps, reg):
    return (soft.soft_rank(x, regularization_strength=eps, regularization=reg),
            soft.soft_sort(x, regularization_strength=eps, regularization=reg))


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_rank_and_sort(self):
        x = _data(16)
        for reg in REGS:
            f = self.variant(functools.partial(_rank_and_sort, reg=reg))
            r, s = f(x, jnp.float32(0.3))
            np.testing.assert_allclose(r, soft.soft_rank(x, regularization_strength=0.3,
                                                         regularization=reg), rtol=1e-5)
            np.testing.assert_allclose(s, soft.soft_sort(x, regularization_strength=0.3,
                                                         regularization=reg), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reg", REGS)
def test_vmap_equals_loop(reg):
    x = _data(17)
    f = functools.partial(soft.soft_rank, regularization_strength=0.25, regularization=reg)
    loop = jnp.stack([f(x[i]) for i in range(SHAPE[0])])
    np.testing.assert_allclose(jax.vmap(f)(x), loop, rtol=1e-5)
    np.testing.assert_allclose(f(x), loop, rtol=1e-5)
    g = functools.partial(_rank_sq_grad, reg=reg)
    gl = jnp.stack([g(x[i]) for i in range(SHAPE[0])])
    # float32 gradients of the "kl" rank carry rounding noise of ~1e-5 of the largest entry,
    # which depends on how XLA fuses the batched vs the single-row program (either PAV path:
    # 2e-4 .. 1e-3 absolute error against float64 here, entries up to ~70).
    np.testing.assert_allclose(jax.vmap(g)(x), gl, rtol=1e-5, atol=1e-4 * np.abs(gl).max())


def test_nested_vmap_and_batched_strength():
    x = _data(18).reshape(2, 2, 24)
    f = lambda t: soft.soft_rank(t, regularization_strength=0.25)
    np.testing.assert_allclose(jax.vmap(jax.vmap(f))(x), f(x), rtol=1e-5)
    eps = jnp.array([0.1, 0.5, 2.0], jnp.float32)
    out = jax.vmap(lambda e: soft.soft_rank(x[0, 0], regularization_strength=e))(eps)
    for i in range(3):
        np.testing.assert_allclose(
            out[i], soft.soft_rank(x[0, 0], regularization_strength=eps[i]), rtol=1e-5)


def test_axis_argument():
    x = _data(19)
    np.testing.assert_allclose(soft.soft_rank(x.T, regularization_strength=0.1, axis=0),
                               soft.soft_rank(x, regularization_strength=0.1).T, rtol=1e-6)
    np.testing.assert_allclose(soft.soft_sort(x.T, regularization_strength=0.1, axis=0),
                               soft.soft_sort(x, regularization_strength=0.1).T, rtol=1e-6)


def test_no_retracing():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(t, e):
        return soft.soft_rank(t, regularization_strength=e)

    f(_data(20), jnp.float32(0.1))
    f(_data(21), jnp.float32(0.3))


# ------------------------------------------------------------------------------------------
# Edge cases and errors
# ------------------------------------------------------------------------------------------


def test_edge_cases():
    assert soft.soft_rank(jnp.zeros((0,), jnp.float32)).shape == (0,)
    assert soft.soft_sort(jnp.zeros((3, 0), jnp.float32)).shape == (3, 0)
    np.testing.assert_array_equal(soft.soft_rank(jnp.array([4.0])), [1.0])
    np.testing.assert_array_equal(soft.soft_sort(jnp.array([4.0])), [4.0])
    tied = jnp.full(SHAPE, 2.5, jnp.float32)
    np.testing.assert_allclose(soft.soft_rank(tied, regularization_strength=1e-3),
                               np.full(SHAPE, 12.5))
    np.testing.assert_allclose(soft.soft_sort(tied, regularization_strength=1e-3),
                               np.full(SHAPE, 2.5))
    ext = np.array(_data(22))
    ext[:, :4] = [1e30, -1e30, 3e29, -3e29]
    np.testing.assert_allclose(soft.soft_rank(jnp.asarray(ext), regularization_strength=1e-4),
                               rankdata(jnp.asarray(ext)), atol=1e-4)
    ints = jnp.asarray(np.asarray(_data(23, ties=True)).astype(np.int32))
    r = soft.soft_rank(ints, regularization_strength=1e-3)
    assert r.dtype == jnp.float32
    np.testing.assert_allclose(r, rankdata(ints), rtol=1e-6)
    half = soft.soft_rank(jnp.array([2.0, 1.0], jnp.bfloat16), regularization_strength=1e-2)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), [2.0, 1.0])


def test_nan_and_inf_policy():
    x = np.array(_data(24))
    x[0, 3] = np.nan
    x[2, :] = np.nan
    for fn in (soft.soft_rank, soft.soft_sort):
        out = np.asarray(fn(jnp.asarray(x), regularization_strength=0.1))
        assert np.all(np.isnan(out[[0, 2]]))  # a NaN makes its own row NaN ...
        assert np.all(np.isfinite(out[[1, 3]]))  # ... and leaves the other rows alone
    inf = np.array(_data(25))
    inf[0, 0], inf[0, 1] = np.inf, -np.inf
    for reg in REGS:
        r = soft.soft_rank(jnp.asarray(inf), regularization_strength=1e-3, regularization=reg)
        np.testing.assert_allclose(r, rankdata(jnp.asarray(inf)), rtol=1e-5)
    s = np.asarray(soft.soft_sort(jnp.asarray(inf), regularization_strength=0.1))
    assert np.all(np.isnan(s[0])) and np.all(np.isfinite(s[1:]))


def test_errors():
    x = jnp.ones((3,), jnp.float32)
    with pytest.raises(ValueError, match="soft_rank: 'regularization' must be one of"):
        soft.soft_rank(x, regularization="entropy")
    with pytest.raises(ValueError, match="soft_sort: 'regularization_strength' must be a positive"):
        soft.soft_sort(x, regularization_strength=0.0)
    with pytest.raises(ValueError, match="must be a positive finite"):
        soft.soft_rank(x, regularization_strength=float("inf"))
    with pytest.raises(ValueError, match="'regularization_strength' must be a scalar"):
        soft.soft_rank(x, regularization_strength=jnp.ones((2,)))
    with pytest.raises(TypeError, match="regularization_strength"):
        soft.soft_rank(x, regularization_strength=True)
    with pytest.raises(ValueError, match="soft_rank: 'x' must have at least one dimension"):
        soft.soft_rank(jnp.float32(1.0))
    with pytest.raises(ValueError, match="out of bounds"):
        soft.soft_sort(x, axis=2)
    with pytest.raises(TypeError, match="real"):
        soft.soft_rank(jnp.ones((3,), jnp.complex64))
    with pytest.raises(TypeError, match="descending"):  # ours, or beartype's under the hook
        soft.soft_rank(x, descending=1)
    with pytest.raises(ValueError, match="soft_percentile_of_population: 'kind' must be one of"):
        soft.soft_percentile_of_population(x, kind="weak")
    with pytest.raises(ValueError, match="soft_quantile: 'method' must be one of"):
        soft.soft_quantile(x, 0.5, method="bogus")
    with pytest.raises(ValueError, match="soft_quantile: cannot take quantiles over an empty"):
        soft.soft_quantile(jnp.zeros((0,), jnp.float32), 0.5)


# ------------------------------------------------------------------------------------------
# Native PAV (jaxstats/_native/pav.cc) vs the XLA loops
# ------------------------------------------------------------------------------------------


def _both_paths(fn, *args):
    """``fn(*args)`` traced with the native PAV and with the XLA loops (caches cleared, so the
    module switch is read anew); returns (native outputs, xla outputs) as numpy trees."""
    from jaxstats import _native

    if _native.load() is None:
        pytest.skip(f"native kernels unavailable: {_native.status()}")
    out = {}
    old = soft._USE_NATIVE
    try:
        for flag in (True, False):
            soft._USE_NATIVE = flag
            jax.clear_caches()
            hlo = jax.jit(fn).lower(*args).as_text()
            # The switch really selects the path (the comparison is not vacuous).
            assert ("JaxstatsPav" in hlo) == flag
            out[flag] = jax.tree.map(np.asarray, jax.jit(fn)(*args))
    finally:
        soft._USE_NATIVE = old
        jax.clear_caches()
    return out[True], out[False]


def _pav_inputs(kind, rows, n, dtype, ties, seed=0):
    """Sorted-decreasing problems with noise (many pools), optionally ties / -inf ("kl")."""
    rng = _rng(seed)
    if ties:
        y = np.sort(rng.integers(0, 5, size=(rows, n)))[:, ::-1].astype(np.float64)
        y = y + rng.integers(0, 3, size=(rows, n))
    else:
        y = np.sort(rng.normal(size=(rows, n)) * 3)[:, ::-1] + rng.normal(size=(rows, n))
    if kind == "l2":
        return y.astype(dtype), np.ones((rows, n), dtype)
    lw = np.broadcast_to(np.log(np.arange(n, 0, -1, dtype=np.float64)), (rows, n))
    if n >= 3:
        y[0, -2:] = -np.inf  # -inf values sort last: a block of -inf pools with -inf
        if rows > 1:
            y[-1, -1] = -np.inf
    return y.astype(dtype), lw.astype(dtype)


def _assert_pav_equal(nat, xla, dtype):
    ids_n, a_n, b_n, c_n = nat
    ids_x, a_x, b_x, c_x = xla
    assert ids_n.dtype == ids_x.dtype == np.int32 and c_n.dtype == np.int32
    assert a_n.dtype == b_n.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ids_n, ids_x)
    np.testing.assert_array_equal(c_n, c_x)
    for u, v in ((a_n, a_x), (b_n, b_x)):
        fin = np.isfinite(v)
        np.testing.assert_array_equal(np.isfinite(u), fin)
        np.testing.assert_array_equal(u[~fin], v[~fin])
        # within 2 ulp (of the value, at least of 1: logaddexp results near 0)
        ulp = np.spacing(np.maximum(np.abs(v[fin]), 1).astype(dtype))
        assert np.all(np.abs(u[fin] - v[fin]) <= 2 * ulp), np.max(np.abs(u[fin] - v[fin]) / ulp)


def _check_pav_paths(kind, dtype, rows, n, ties):
    a, b = _pav_inputs(kind, rows, n, dtype, ties, seed=n + rows)
    pav = soft._pav_l2 if kind == "l2" else soft._pav_kl
    nat, xla = _both_paths(pav, jnp.asarray(a), jnp.asarray(b))
    _assert_pav_equal(nat, xla, dtype)
    if kind == "l2":  # and both are the solution (block means of a non-increasing fit)
        import scipy.optimize

        for i in range(rows):
            ref = scipy.optimize.isotonic_regression(a[i].astype(np.float64), increasing=False).x
            np.testing.assert_allclose(nat[1][i] / nat[2][i], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", REGS)
@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("n", [1, 2, 3, 100, 1000])
@pytest.mark.parametrize("ties", [False, True])
def test_native_pav_matches_xla_float32(kind, rows, n, ties):
    _check_pav_paths(kind, np.float32, rows, n, ties)


@pytest.mark.parametrize("kind", REGS)
@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 1000])
@pytest.mark.parametrize("ties", [False, True])
def test_native_pav_matches_xla_float64(x64, kind, rows, n, ties):
    _check_pav_paths(kind, np.float64, rows, n, ties)


def test_native_pav_under_vmap_matches_xla():
    a, b = _pav_inputs("kl", 6, 50, np.float32, False, seed=3)
    f = jax.vmap(soft._pav_kl)
    nat, xla = _both_paths(f, jnp.asarray(a.reshape(2, 3, 50)), jnp.asarray(b.reshape(2, 3, 50)))
    _assert_pav_equal(nat, xla, np.float32)


def _rank_sort_and_grads(x, c, reg):
    def loss(x):
        r = soft.soft_rank(x, regularization_strength=0.3, regularization=reg)
        s = soft.soft_sort(x, regularization_strength=0.3, regularization=reg)
        return jnp.sum(c * r) + jnp.sum(c * s), (r, s)

    g, (r, s) = jax.grad(loss, has_aux=True)(x)
    return r, s, g


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("ties", [False, True])
def test_native_soft_rank_and_sort_match_xla(reg, ties):
    x = _data(21, ties=ties)
    c = jnp.asarray(_rng(22).normal(size=SHAPE).astype(np.float32))
    (rn, sn, gn), (rx, sx, gx) = _both_paths(functools.partial(_rank_sort_and_grads, reg=reg),
                                             x, c)
    np.testing.assert_allclose(rn, rx, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sn, sx, rtol=1e-6, atol=1e-6)
    # float32 gradient rounding noise depends on XLA's fusion (see test_vmap_equals_loop)
    np.testing.assert_allclose(gn, gx, rtol=0, atol=1e-4 * np.abs(gx).max())


@pytest.mark.parametrize("reg", REGS)
def test_native_soft_rank_and_sort_match_xla_float64(x64, reg):
    x = jnp.asarray(_rng(23).normal(size=(3, 200)))
    c = jnp.asarray(_rng(24).normal(size=(3, 200)))
    (rn, sn, gn), (rx, sx, gx) = _both_paths(functools.partial(_rank_sort_and_grads, reg=reg),
                                             x, c)
    assert rn.dtype == np.float64
    np.testing.assert_allclose(rn, rx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sn, sx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gn, gx, rtol=1e-9, atol=1e-9 * np.abs(gx).max())
