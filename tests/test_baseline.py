"""population_baseline: every agent against its peers, vs scipy/numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

import jaxstats


def _reference(x, kind="rank"):
    pct = np.stack([ss.percentileofscore(x[:, j], x[:, j], kind) for j in range(x.shape[1])], 1)
    med = np.median(x, axis=0)
    mad = np.median(np.abs(x - med), axis=0)
    return pct, med, mad


@pytest.mark.parametrize("kind", ["rank", "weak", "strict", "mean"])
def test_matches_scipy_with_ties(kind, x64):
    rng = np.random.default_rng(0)
    x = np.round(rng.lognormal(size=(3001, 3)), 1)  # many ties
    res = jax.jit(jaxstats.population_baseline, static_argnames="kind")(jnp.asarray(x), kind=kind)
    pct, med, mad = _reference(x, kind)
    np.testing.assert_allclose(np.asarray(res.percentile), pct, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(res.median), med)
    np.testing.assert_array_equal(np.asarray(res.mad), mad)
    np.testing.assert_allclose(
        np.asarray(res.zscore), np.asarray(jaxstats.robust_zscore(jnp.asarray(x), axis=0)), atol=1e-12
    )


def test_float32_and_agents_axis_last():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5000)).astype(np.float32)
    res = jaxstats.population_baseline(x, axis=1)
    assert res.percentile.dtype == jnp.float32 and res.percentile.shape == (4, 5000)
    pct, med, _ = _reference(x.T.astype(np.float64))
    np.testing.assert_allclose(np.asarray(res.percentile).T, pct, atol=2e-3)
    np.testing.assert_allclose(np.asarray(res.median), med, rtol=1e-6)


def test_nan_policies_isolate_populations():
    x = np.arange(20.0, dtype=np.float32).reshape(10, 2)
    x[3, 0] = np.nan
    prop = jaxstats.population_baseline(x)
    assert np.isnan(np.asarray(prop.percentile[:, 0])).all()
    assert not np.isnan(np.asarray(prop.percentile[:, 1])).any()
    omit = jaxstats.population_baseline(x, nan_policy="omit")
    p = np.asarray(omit.percentile[:, 0])
    assert np.isnan(p[3]) and not np.isnan(np.delete(p, 3)).any()
    ref = ss.percentileofscore(np.delete(x[:, 0], 3), np.delete(x[:, 0], 3))
    np.testing.assert_allclose(np.delete(p, 3), ref, atol=1e-4)
    with pytest.raises(ValueError, match="nan_policy='raise'"):
        jaxstats.population_baseline(x, nan_policy="raise")


def test_constant_population_has_zero_scores_and_finite_grad():
    x = jnp.ones((50, 2))
    res = jaxstats.population_baseline(x)
    np.testing.assert_array_equal(np.asarray(res.zscore), 0.0)
    np.testing.assert_array_equal(np.asarray(res.percentile), 51.0)  # (0 + 50 + 1) * 50 / 50
    g = jax.grad(lambda v: jaxstats.population_baseline(v).zscore.sum())(x)
    assert np.isfinite(np.asarray(g)).all()


def test_errors():
    with pytest.raises(ValueError, match="population_baseline: 'x' must have an agents axis"):
        jaxstats.population_baseline(jnp.float32(1.0))
    with pytest.raises(ValueError, match="'kind' must be one of"):
        jaxstats.population_baseline(jnp.ones(3), kind="bogus")
    with pytest.raises(ValueError, match="out of bounds"):
        jaxstats.population_baseline(jnp.ones((3, 2)), axis=2)
    with pytest.raises(ValueError, match="agents axis 0 is empty"):
        jaxstats.population_baseline(jnp.ones((0, 2)))
