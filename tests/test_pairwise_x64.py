"""float64 tests for jaxstats.pairwise: agreement with scipy to ~1e-12, exact robust statistics,
and the Kolmogorov distribution of the KS p-value against scipy.stats.kstwo on a grid."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

from jaxstats import pairwise

from .test_pairwise import make, naive_hl, naive_kendall_b, naive_qn, naive_sn, naive_u1

TOL = 1e-12


def _all_stats(x, y):
    return dict(
        kendall=pairwise.kendalltau(x, y),
        kendall_c=pairwise.kendalltau(x, y, variant="c", alternative="greater"),
        spearman=pairwise.spearmanr(x, y),
        mwu=pairwise.mannwhitneyu(x, y[:17]),
        ks=pairwise.ks_2samp(x, y[:17]),
        ks_less=pairwise.ks_2samp(x, y[:17], alternative="less"),
        gmd=pairwise.gini_mean_difference(x),
        energy=pairwise.energy_distance(x, y[:17]),
        wasserstein=pairwise.wasserstein_distance(x, y[:17]),
    )


_ALL = jax.jit(_all_stats)


@pytest.mark.parametrize("kx,ky", [("ties", "normal"), ("inf", "ties"), ("cauchy", "ties")])
def test_float64_matches_scipy(x64, kx, ky):
    x, y = make(kx, 60, 1, np.float64), make(ky, 60, 2, np.float64)
    got = _ALL(jnp.asarray(x), jnp.asarray(y))
    assert got["gmd"].dtype == jnp.float64 and got["kendall"].pvalue.dtype == jnp.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = dict(
            kendall=ss.kendalltau(x, y, method="asymptotic"),
            kendall_c=ss.kendalltau(x, y, variant="c", alternative="greater",
                                    method="asymptotic"),
            spearman=ss.spearmanr(x, y),
            mwu=ss.mannwhitneyu(x, y[:17], method="asymptotic"),
            ks=ss.ks_2samp(x, y[:17], method="asymp"),
            ks_less=ss.ks_2samp(x, y[:17], alternative="less", method="asymp"),
        )
    for name, r in ref.items():
        np.testing.assert_allclose(got[name].statistic, r.statistic, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(got[name].pvalue, r.pvalue, rtol=1e-10, atol=TOL)
    for name in ("ks", "ks_less"):  # float64: scipy's tie-breaking is reproduced exactly
        assert float(got[name].statistic_location) == ref[name].statistic_location
        assert int(got[name].statistic_sign) == int(ref[name].statistic_sign)
    np.testing.assert_allclose(got["kendall"].statistic, naive_kendall_b(x, y), rtol=TOL)
    assert float(got["mwu"].statistic) == naive_u1(x, y[:17])
    finite = np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    if finite:
        n = len(x)
        gmd = np.abs(x[:, None] - x[None, :]).sum() / (n * (n - 1))
        np.testing.assert_allclose(got["gmd"], gmd, rtol=TOL)
    for name in ("energy", "wasserstein"):
        ref_d = getattr(ss, f"{name}_distance")(x, y[:17])
        np.testing.assert_allclose(got[name], ref_d, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("n", [11, 400, 1500])
@pytest.mark.parametrize("kind", ["normal", "ties", "const", "posinf", "shifted", "cauchy"])
def test_robust_float64_exact(x64, n, kind):
    x = make(kind, n, 3 + n, np.float64)
    hl, qn, sn = _robust_jit(n)(jnp.asarray(x))
    assert hl.dtype == jnp.float64
    assert float(hl) == naive_hl(x) or (np.isnan(hl) and np.isnan(naive_hl(x)))
    assert float(qn) == naive_qn(x)
    assert float(sn) == naive_sn(x)


_ROBUST = {}


def _robust_jit(n):
    if n not in _ROBUST:
        _ROBUST[n] = jax.jit(lambda v: (pairwise.hodges_lehmann(v), pairwise.qn_scale(v),
                                        pairwise.sn_scale(v)))
    return _ROBUST[n]


@pytest.mark.parametrize("n", [1, 7, 140, 300, 100001])
def test_kstwo_sf_matches_scipy(x64, n):
    """scipy's case split: Ruben-Gambino ends, Durbin matrix (n <= 140, and n <= 1e5 for small
    x), Pelz-Good, and twice the exact one-sided Smirnov probability."""
    x = np.unique(np.concatenate([
        np.linspace(0.0, 1.0, 21),
        [0.5 / n, 1.0 / n, 1.5 / n, (n - 1.0) / n, (n - 0.5) / n],
        np.sqrt(np.array([0.3, 0.754, 0.76, 2.19, 2.21, 3.9, 4.1, 17.0, 100.0]) / n),
        (1.4 / n) ** (2 / 3) * np.array([0.98, 1.02]),
    ]))
    x = x[(x >= 0) & (x <= 1)]
    got = jax.jit(jax.vmap(lambda t: pairwise._kstwo_sf(n, t)))(jnp.asarray(x))
    ref = ss.kstwo.sf(x, n)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-14)


def test_float64_counts_exact_at_scale(x64):
    # 6,000 observations: pair counts above 2^24 (float32's exact integer range) and many tie
    # groups; float64 accumulation of the exact limb counts reproduces scipy to rounding.
    x, y = make("ties", 6000, 4, np.float64), make("cauchy", 6000, 5, np.float64)
    res = jax.jit(pairwise.kendalltau)(x, y)
    ref = ss.kendalltau(x, y, method="asymptotic")
    np.testing.assert_allclose(res.statistic, ref.statistic, rtol=TOL)
    np.testing.assert_allclose(res.pvalue, ref.pvalue, rtol=1e-9)
