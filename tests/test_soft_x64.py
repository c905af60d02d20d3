"""float64 tests of jaxstats.soft: tight oracles, dtypes, first and second derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.test_util import check_grads

from jaxstats import soft
from jaxstats.rank import percentile_of_population, rankdata

REGS = ("l2", "kl")
SHAPE = (4, 24)


def _data(seed, ties=False):
    rng = np.random.default_rng(seed)
    if ties:
        return jnp.asarray(rng.integers(0, 7, size=SHAPE).astype(np.float64))
    return jnp.asarray(rng.normal(size=SHAPE))


def test_pav_matches_scipy_float64(x64):
    rng = np.random.default_rng(0)
    t = np.arange(24)
    y = np.stack([rng.normal(size=24), rng.normal(size=24) + 0.3 * t,
                  rng.integers(0, 3, size=24) + 0.0, 1e8 + rng.normal(size=24)])
    r = np.asarray(jax.jit(soft._iso_residual_l2)(jnp.asarray(y)))
    assert r.dtype == np.float64
    for i in range(4):
        ref = y[i] - scipy.optimize.isotonic_regression(y[i], increasing=False).x
        np.testing.assert_allclose(r[i], ref, atol=1e-9 * (1 + np.abs(y[i]).max()))


@pytest.mark.parametrize("reg", REGS)
def test_limits_and_dtypes_float64(x64, reg):
    x = _data(1, ties=True)
    r = soft.soft_rank(x, regularization_strength=1e-6, regularization=reg)
    assert r.dtype == jnp.float64
    np.testing.assert_allclose(r, rankdata(x), rtol=1e-12)
    s = soft.soft_sort(_data(2), regularization_strength=1e-6, regularization=reg)
    assert s.dtype == jnp.float64
    np.testing.assert_allclose(s, np.sort(np.asarray(_data(2))), atol=1e-12)
    p = soft.soft_percentile_of_population(x.T, regularization_strength=1e-6, regularization=reg)
    np.testing.assert_allclose(p, percentile_of_population(x.T), rtol=1e-12)
    ints = soft.soft_rank(jnp.asarray([3, 1, 2], jnp.int32), regularization_strength=1e-6)
    assert ints.dtype == jnp.float64  # int input goes to the default float (x64: float64)
    big = soft.soft_rank(_data(3), regularization_strength=1e6, regularization=reg)
    np.testing.assert_allclose(big, np.full(SHAPE, 12.5), rtol=1e-5)


@pytest.mark.parametrize("reg", REGS)
def test_check_grads_first_and_second_order(x64, reg):
    """jax.test_util.check_grads: forward and reverse mode, orders 1 and 2, against float64
    finite differences (the block structure is locally constant at these random points)."""
    x = jnp.asarray(np.random.default_rng(4).normal(size=6))

    @jax.jit
    def f(t):
        return jnp.concatenate([
            soft.soft_rank(t, regularization_strength=0.5, regularization=reg),
            soft.soft_sort(t, regularization_strength=2.0, regularization=reg),
        ])

    check_grads(f, (x,), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5, eps=1e-6)
    check_grads(f, (x,), order=2, modes=("rev",), atol=1e-5, rtol=1e-5, eps=1e-6)
