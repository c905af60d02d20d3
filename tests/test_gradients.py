"""Every public function that is differentiable in math has finite gradients in code.

One registry, ``CASES``, lists :class:`Case` ``(name, loss, kind, log_space)``: ``loss(x)`` maps
a ``[3, 8]`` float32 array to a scalar through one public function (the name before ``[`` is the
function). ``kind`` is

* ``"smooth"``: differentiable almost everywhere; the gradient must be finite everywhere
  (ties, repeated values, all-equal data included) and equal central finite differences at
  points where the function is locally linear/smooth;
* ``"constant"``: piecewise constant (ranks, percentiles, rank-test statistics and p-values);
  the gradient must be exactly zero, never NaN;
* ``"piecewise"``: piecewise smooth with breakpoints on a fixed grid finer than any useful
  finite-difference step (bucketed or quadrature-grid sketches); the gradient must be finite
  everywhere.

``log_space`` cases take log-likelihoods and are also differentiated at ``LOG_POINTS``, inputs
with ``-inf`` entries and an all ``-inf`` row ("impossible" evidence), where the gradient must
stay finite.

Extend ``CASES`` when a module gains a differentiable public function;
``test_registry_covers_the_public_differentiable_api`` fails until it is there (or listed in
``NOT_DIFFERENTIABLE`` with a reason).
"""

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstats
from jaxstats import _native, _sort, evidence, pairwise, rank, robust, sketch, soft

SHAPE = (3, 8)
_C = jnp.asarray(np.random.default_rng(0).normal(size=SHAPE).astype(np.float32))
_Q = jnp.array([0.1, 0.5, 0.75], jnp.float32)
# A fixed mask with a few False entries (no row fully masked).
_MASK = jnp.asarray(np.random.default_rng(4).random(SHAPE) > 0.3).at[:, 0].set(True)
# Positive scale factors with one zero entry (scipy's logsumexp drops b == 0 terms).
_B_POS = (jnp.abs(_C) + 0.1).at[2, 3].set(0.0)
# Mixed-sign scale factors whose sums stay far from 0 on every point set (return_sign).
_B_SIGNED = jnp.ones(SHAPE, jnp.float32).at[:, 3].set(-0.25)
_LOG_PRIOR3 = jnp.log(jnp.array([0.2, 0.3, 0.5], jnp.float32))


class Case(NamedTuple):
    name: str
    loss: Callable[[jax.Array], jax.Array]
    kind: str  # "smooth" | "constant" | "piecewise"
    log_space: bool = False  # also differentiated at LOG_POINTS (-inf entries)


def _weights(shape: tuple) -> np.ndarray:
    """Fixed pseudo-random weights of a given shape (a generic direction for the output)."""
    seed = 1000 + 37 * len(shape) + int(np.prod(shape, dtype=np.int64))
    return np.asarray(np.random.default_rng(seed).normal(size=shape), np.float32)


def _dot(v: jax.Array) -> jax.Array:
    """Scalar loss of an output of any shape: a fixed generic linear functional."""
    return jnp.sum(v * _weights(tuple(v.shape)))


def _sort_backends():
    backends = ["auto", "xla", "host"]
    if _native.load() is not None:  # the native radix kernel compiled and loaded
        backends.append("native")
    return backends


def _two(x):
    """Two samples per row (5 and 3 observations) for the two-sample statistics."""
    return x[:, :5], x[:, 5:]


def _stream(sk, x, **kw):
    """The state after the 8 columns of ``x`` arrive one by one (3 streams)."""
    return sketch.from_batch(sk, x.T, **kw)


def _fold_moments(x):
    sk = sketch.moments()
    chunks = x.T.reshape(2, 4, 3)  # two segments of 4 observations each
    states = jax.vmap(lambda c: sketch.from_batch(sk, c))(chunks)
    return sk.query(sketch.fold(sk, states))


def _combined(x):
    sk = sketch.combine(m=sketch.moments(), e=sketch.ewma(half_life=2))
    out = sk.query(_stream(sk, x))
    return _dot(out["m"].variance) + _dot(out["e"].mean)


def _sprt_boundaries(x):
    alpha = 0.01 + 0.04 * jax.nn.sigmoid(x[:, 0])
    beta = 0.01 + 0.04 * jax.nn.sigmoid(x[:, 1])
    r = evidence.sprt(_C, alpha=alpha, beta=beta)
    return _dot(r.log_lower) + _dot(r.log_upper)


def _hypotheses_last(x):
    """``x`` as ``[batch 2, evidence 4, K 3]``: row ``k`` of ``x`` is hypothesis ``k``."""
    return jnp.moveaxis(x.reshape(3, 2, 4), 0, -1)


_SORT_CASES = [
    *[Case(f"sort[{b}]", (lambda b: lambda x: jnp.sum(_sort.sort(x, backend=b) * _C))(b), "smooth")
      for b in _sort_backends()],
    Case("sort[axis=0]", lambda x: jnp.sum(_sort.sort(x, axis=0) * _C), "smooth"),
    Case("sort_and_argsort", lambda x: jnp.sum(_sort.sort_and_argsort(x)[0] * _C), "smooth"),
    Case("tie_bounds", lambda x: jnp.sum(_sort.tie_bounds(x)[0] * _C), "smooth"),
]

_RANK_CASES = [
    *[Case(f"quantile[{m}]",
           (lambda m: lambda x: jnp.sum(rank.quantile(x, _Q, axis=-1, method=m) * _C[:, :3].T))(m),
           "smooth")
      for m in ("linear", "hazen", "midpoint", "lower", "nearest", "inverted_cdf")],
    Case("quantile[axis=None]", lambda x: rank.quantile(x, 0.3), "smooth"),
    Case("median", lambda x: jnp.sum(rank.median(x, axis=-1) * _C[:, 0]), "smooth"),
    Case("median[axis=0]", lambda x: jnp.sum(rank.median(x, axis=0) * _C[0]), "smooth"),
    *[Case(f"rankdata[{m}]", (lambda m: lambda x: jnp.sum(rank.rankdata(x, m) * _C))(m), "constant")
      for m in ("average", "min", "dense", "ordinal")],
    Case("percentileofscore[a]",
         lambda x: jnp.sum(rank.percentileofscore(x[0], jnp.array([0.0, 1.0], jnp.float32))),
         "constant"),
    Case("percentileofscore[score]",
         lambda x: jnp.sum(rank.percentileofscore(jnp.arange(5.0, dtype=jnp.float32), x)),
         "constant"),
    Case("percentile_of_population",
         lambda x: jnp.sum(rank.percentile_of_population(x, axis=-1) * _C), "constant"),
]

_ROBUST_CASES = [
    Case("iqr[axis=-1]", lambda x: _dot(robust.iqr(x, axis=-1)), "smooth"),
    Case("iqr[axis=None, scale=normal]", lambda x: robust.iqr(x, scale="normal"), "smooth"),
    Case("iqr[nearest, rng=(10, 90)]",
         lambda x: _dot(robust.iqr(x, axis=-1, rng=(10, 90), interpolation="nearest")), "smooth"),
    Case("median_abs_deviation[axis=-1]",
         lambda x: _dot(robust.median_abs_deviation(x, axis=-1)), "smooth"),
    Case("median_abs_deviation[axis=0, scale=normal]",
         lambda x: _dot(robust.median_abs_deviation(x, axis=0, scale="normal")), "smooth"),
    Case("median_abs_deviation[center=mean]",
         lambda x: _dot(robust.median_abs_deviation(x, axis=-1, center=jnp.mean)), "smooth"),
    Case("robust_zscore[axis=-1]", lambda x: _dot(robust.robust_zscore(x, axis=-1)), "smooth"),
    Case("robust_zscore[axis=0]", lambda x: _dot(robust.robust_zscore(x, axis=0)), "smooth"),
    Case("population_baseline[percentile]",
         lambda x: _dot(robust.population_baseline(x, axis=-1).percentile), "constant"),
    *[Case(f"population_baseline[{f}]",
           (lambda f: lambda x: _dot(getattr(robust.population_baseline(x, axis=-1), f)))(f),
           "smooth")
      for f in ("zscore", "median", "mad")],
]

_PAIRWISE_CASES = [
    # Rank statistics and their p-values depend on the data only through ranks (counts).
    *[Case(f"kendalltau[{v}, {f}]",
           (lambda v, f: lambda x: _dot(getattr(pairwise.kendalltau(x, x[::-1], variant=v), f)))(
               v, f),
           "constant")
      for v in ("b", "c") for f in ("statistic", "pvalue")],
    *[Case(f"spearmanr[{f}]",
           (lambda f: lambda x: _dot(getattr(pairwise.spearmanr(x, x[::-1]), f)))(f), "constant")
      for f in ("statistic", "pvalue")],
    *[Case(f"mannwhitneyu[{f}]",
           (lambda f: lambda x: _dot(getattr(pairwise.mannwhitneyu(*_two(x)), f)))(f), "constant")
      for f in ("statistic", "pvalue")],
    *[Case(f"ks_2samp[{a}, {f}]",
           (lambda a, f: lambda x: _dot(getattr(pairwise.ks_2samp(*_two(x), alternative=a), f)))(
               a, f),
           "constant")
      for a in ("two-sided", "greater") for f in ("statistic", "pvalue")],
    # The location of D is an observation: an order statistic, differentiable a.e.
    Case("ks_2samp[statistic_location]",
         lambda x: _dot(pairwise.ks_2samp(*_two(x)).statistic_location), "smooth"),
    Case("wasserstein_distance", lambda x: _dot(pairwise.wasserstein_distance(*_two(x))), "smooth"),
    Case("wasserstein_distance[weights]",
         lambda x: _dot(pairwise.wasserstein_distance(*_two(_C), *_two(1.0 + x))), "smooth"),
    Case("energy_distance", lambda x: _dot(pairwise.energy_distance(*_two(x))), "smooth"),
    Case("energy_distance[weights]",
         lambda x: _dot(pairwise.energy_distance(*_two(_C), *_two(1.0 + x))), "smooth"),
    Case("gini_mean_difference", lambda x: _dot(pairwise.gini_mean_difference(x)), "smooth"),
    Case("hodges_lehmann", lambda x: _dot(pairwise.hodges_lehmann(x)), "smooth"),
    Case("qn_scale", lambda x: _dot(pairwise.qn_scale(x)), "smooth"),
    Case("sn_scale", lambda x: _dot(pairwise.sn_scale(x)), "smooth"),
]

_EVIDENCE_CASES = [
    Case("logsumexp[axis=-1]", lambda x: _dot(evidence.logsumexp(x, axis=-1)), "smooth", True),
    Case("logsumexp[axis=0]", lambda x: _dot(evidence.logsumexp(x, axis=0)), "smooth", True),
    Case("logsumexp[axis=None]", lambda x: evidence.logsumexp(x), "smooth", True),
    Case("logsumexp[b]", lambda x: _dot(evidence.logsumexp(x, axis=-1, b=_B_POS)), "smooth", True),
    Case("logsumexp[d/db]",
         lambda x: _dot(evidence.logsumexp(_C, axis=-1, b=x, return_sign=True).log_abs), "smooth"),
    Case("logsumexp[return_sign, log_abs]",
         lambda x: _dot(evidence.logsumexp(x, axis=-1, b=_B_SIGNED, return_sign=True).log_abs),
         "smooth", True),
    Case("logsumexp[return_sign, sign]",
         lambda x: _dot(evidence.logsumexp(x, axis=-1, b=_B_SIGNED, return_sign=True).sign),
         "constant", True),
    Case("logsumexp[where]", lambda x: _dot(evidence.logsumexp(x, axis=-1, where=_MASK)),
         "smooth", True),
    Case("cumulative_logsumexp[axis=-1]",
         lambda x: _dot(evidence.cumulative_logsumexp(x, axis=-1)), "smooth", True),
    Case("cumulative_logsumexp[axis=None, reverse]",
         lambda x: _dot(evidence.cumulative_logsumexp(x, reverse=True)), "smooth", True),
    Case("cumulative_logsumexp[where]",
         lambda x: _dot(evidence.cumulative_logsumexp(x, axis=-1, where=_MASK)), "smooth", True),
    Case("compensated_sum[axis=-1]", lambda x: _dot(evidence.compensated_sum(x, axis=-1)),
         "smooth", True),
    Case("compensated_sum[axis=None]", lambda x: evidence.compensated_sum(x), "smooth", True),
    Case("compensated_sum[where]",
         lambda x: _dot(evidence.compensated_sum(x, axis=0, where=_MASK)), "smooth", True),
    Case("two_sum[sum]", lambda x: _dot(evidence.two_sum(x, x[::-1]).sum), "smooth", True),
    # The rounding error is 0 in real arithmetic (sum + error == a + b exactly): its derivative
    # in the real-number model of autodiff is 0; it must never be NaN (not even at -inf).
    Case("two_sum[error]", lambda x: _dot(evidence.two_sum(x, x[::-1]).error), "constant", True),
    # Rows of x are the K = 3 hypotheses, so the all -inf row is an impossible hypothesis.
    Case("log_posterior", lambda x: _dot(evidence.log_posterior(_LOG_PRIOR3, x.T)), "smooth", True),
    Case("log_posterior[log_prior]",
         lambda x: _dot(evidence.log_posterior(x[:, 0], _C.T)), "smooth", True),
    Case("log_posterior[where]",
         lambda x: _dot(evidence.log_posterior(_LOG_PRIOR3, x.T, where=_MASK.T)), "smooth", True),
    Case("log_posterior[axis=1]",
         lambda x: _dot(evidence.log_posterior(_LOG_PRIOR3, _hypotheses_last(x), axis=1)),
         "smooth", True),
    Case("log_bayes_factor[alternative]",
         lambda x: _dot(evidence.log_bayes_factor(x, _C)), "smooth", True),
    Case("log_bayes_factor[null]", lambda x: _dot(evidence.log_bayes_factor(_C, x)),
         "smooth", True),
    Case("log_bayes_factor[where, axis=0]",
         lambda x: _dot(evidence.log_bayes_factor(x, x[::-1], axis=0, where=_MASK)), "smooth"),
    # log_p = x - 12 < 0 on every point set; LOG_POINTS reach log_p = 0 (log odds +inf).
    Case("log_odds", lambda x: _dot(evidence.log_odds(x - 12.0)), "smooth", True),
    *[Case(f"posterior_probability[{f}]",
           (lambda f: lambda x: _dot(getattr(evidence.posterior_probability(x - 5.0), f)))(f),
           "smooth", True)
      for f in ("probability", "complement", "log_probability", "log_complement")],
    # decision / stopping_index (sprt) and alarm / alarm_index (cusum) are integer/bool-valued;
    # the statistics they are read from are differentiable a.e. (linear between stopping
    # changes and resets).
    Case("sprt[log_likelihood_ratio]",
         lambda x: _dot(evidence.sprt(x - 5.0, alpha=0.05, beta=0.05).log_likelihood_ratio),
         "smooth", True),
    Case("sprt[log_lower, log_upper]", _sprt_boundaries, "smooth", True),
    Case("cusum[statistic]", lambda x: _dot(evidence.cusum(x - 6.0, 2.0).statistic),
         "smooth", True),
    Case("cusum[statistic, where]",
         lambda x: _dot(evidence.cusum(x - 6.0, 2.0, where=_MASK).statistic), "smooth", True),
]

_SOFT_CASES = [
    *[Case(f"{f}[{r}]",
           (lambda f, r: lambda x: _dot(getattr(soft, f)(x, regularization=r, axis=-1)))(f, r),
           "smooth")
      for f in ("soft_sort", "soft_rank") for r in ("l2", "kl")],
    Case("soft_rank[axis=0, strength=0.3]",
         lambda x: _dot(soft.soft_rank(x, axis=0, regularization_strength=0.3)), "smooth"),
    Case("soft_rank[d/d regularization_strength]",
         lambda x: _dot(soft.soft_rank(_C, regularization_strength=0.5 + 0.1 * jnp.mean(x) ** 2)),
         "smooth"),
    *[Case(f"soft_quantile[{r}]",
           (lambda r: lambda x: _dot(soft.soft_quantile(x, _Q, regularization=r, axis=-1)))(r),
           "smooth")
      for r in ("l2", "kl")],
    Case("soft_quantile[axis=None, hazen]",
         lambda x: _dot(soft.soft_quantile(x, _Q, axis=None, method="hazen")), "smooth"),
    *[Case(f"soft_percentile_of_population[{k}, {r}]",
           (lambda k, r: lambda x: _dot(soft.soft_percentile_of_population(
               x, axis=-1, kind=k, regularization=r)))(k, r),
           "smooth")
      for k in ("rank", "mean") for r in ("l2", "kl")],
]

_SKETCH_CASES = [
    *[Case(f"moments[{f}]",
           (lambda f: lambda x: _dot(getattr(sketch.moments().query(
               _stream(sketch.moments(), x)), f)))(f),
           "smooth")
      for f in ("mean", "variance", "skewness", "kurtosis")],
    *[Case(f"moments[ddof=1, bias=False, {f}]",
           (lambda f: lambda x: _dot(getattr(sketch.moments(ddof=1, bias=False).query(
               _stream(sketch.moments(ddof=1, bias=False), x)), f)))(f),
           "smooth")
      for f in ("variance", "skewness", "kurtosis")],
    *[Case(f"moments[half_life=4, {f}]",
           (lambda f: lambda x: _dot(getattr(sketch.moments(half_life=4).query(
               _stream(sketch.moments(half_life=4), x)), f)))(f),
           "smooth")
      for f in ("mean", "variance")],
    *[Case(f"ewma[{f}]",
           (lambda f: lambda x: _dot(getattr(sketch.ewma(half_life=2).query(
               _stream(sketch.ewma(half_life=2), x)), f)))(f),
           "smooth")
      for f in ("mean", "variance")],
    Case("log_evidence[scalar]",
         lambda x: _dot(sketch.log_evidence().query(_stream(sketch.log_evidence(), x))),
         "smooth", True),
    Case("log_evidence[half_life=4]",
         lambda x: _dot(sketch.log_evidence(half_life=4).query(
             _stream(sketch.log_evidence(half_life=4), x))),
         "smooth", True),
    # K mode: every observation (column of x) holds the 3 hypotheses' log-likelihoods.
    Case("log_evidence[K=3]",
         lambda x: _dot(sketch.log_evidence(num_hypotheses=3).query(
             _stream(sketch.log_evidence(num_hypotheses=3), x))),
         "smooth", True),
    Case("log_evidence[K=3, log_prior]",
         lambda x: _dot(sketch.log_evidence(num_hypotheses=3).query(
             _stream(sketch.log_evidence(num_hypotheses=3), _C), x[:, 0])),
         "smooth", True),
    # The extremes are the exact min and max; interior quantiles are bucket representatives
    # (piecewise constant) clipped to [min, max].
    Case("ddsketch[q=0, 1]",
         lambda x: _dot(sketch.ddsketch().query(_stream(sketch.ddsketch(), x),
                                               jnp.array([0.0, 1.0], jnp.float32))),
         "smooth"),
    Case("ddsketch[q]",
         lambda x: _dot(sketch.ddsketch().query(_stream(sketch.ddsketch(), x), _Q)), "piecewise"),
    # The max-entropy density is read off a fixed quadrature grid (n_grid cells): piecewise
    # smooth with kinks ~1e-4 apart (test_momentsketch_gradient_at_symmetric_data checks the
    # derivative in float64 with a finer step).
    Case("momentsketch[q]",
         lambda x: _dot(sketch.momentsketch().query(_stream(sketch.momentsketch(), x), _Q)),
         "piecewise"),
    Case("from_batch[moments, where]",
         lambda x: _dot(sketch.moments().query(
             _stream(sketch.moments(), x, where=_MASK.T)).variance),
         "smooth"),
    Case("fold[moments]", lambda x: _dot(_fold_moments(x).variance), "smooth"),
    Case("combine[moments, ewma]", _combined, "smooth"),
]

CASES = [
    *_SORT_CASES,
    *_RANK_CASES,
    *_ROBUST_CASES,
    *_PAIRWISE_CASES,
    *_EVIDENCE_CASES,
    *_SOFT_CASES,
    *_SKETCH_CASES,
]

#: Known library bugs: {(test, case name): reason}; the test is a strict xfail for that case.
XFAIL: dict[tuple[str, str], str] = {}


def _points():
    rng = np.random.default_rng(1)
    # Distinct values at least 0.25 apart and off any lattice (irregular gaps), so that pair
    # values (differences, Walsh averages, deviations) do not nearly tie either: the
    # functions above are locally smooth there.
    gaps = rng.uniform(0.25, 0.5, size=SHAPE[0] * SHAPE[1])
    distinct = rng.permutation(0.5 + np.cumsum(gaps)).reshape(SHAPE).astype(np.float32)
    repeated = rng.integers(0, 3, size=SHAPE).astype(np.float32)  # many ties
    # More than half of every row and of every column tie: MAD = 0 along either axis while
    # the data are not constant (robust_zscore falls back to the mean absolute deviation).
    mad_zero = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 2.0, 3.5],
                         [2.0, 2.0, 2.0, 2.0, 2.0, -1.0, 5.0, 2.5],
                         [1.0, 2.0, 1.0, 2.0, 1.0, 0.0, 2.0, 3.5]], np.float32)
    tied = np.full(SHAPE, 1.5, np.float32)
    return {"distinct": distinct, "repeated": repeated, "mad_zero": mad_zero, "tied": tied}


def _log_points():
    rng = np.random.default_rng(3)
    ll = (-4.0 * rng.random(SHAPE)).astype(np.float32)  # log-likelihoods in (-4, 0]
    ll[0] = -np.inf  # impossible everywhere: an all -inf row (hypothesis, stream, agent)
    ll[1, [1, 4]] = -np.inf  # some impossible entries
    ll[1, 6] = 12.0  # log_odds(x - 12) at log_p = 0
    ll[2, 2] = ll[2, 5]  # a tie among the finite entries
    return {"impossible": ll}


POINTS = _points()
LOG_POINTS = _log_points()


def _params(test: str, kinds: tuple[str, ...], log_space_only: bool = False):
    out = []
    for c in CASES:
        if c.kind not in kinds or (log_space_only and not c.log_space):
            continue
        reason = XFAIL.get((test, c.name))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


@functools.cache
def _jitted(case: Case):
    """``(jit(loss), jit(grad(loss)))`` compiled once per case for all tests and points."""
    return jax.jit(case.loss), jax.jit(jax.grad(case.loss))


def _check_gradient(case: Case, points: dict) -> None:
    grad = _jitted(case)[1]
    for label, x in points.items():
        g = np.asarray(grad(jnp.asarray(x)))
        assert g.shape == SHAPE
        assert np.all(np.isfinite(g)), f"{case.name}: non-finite gradient at {label} data:\n{g}"
        if case.kind == "constant":
            assert np.all(g == 0.0), f"{case.name}: piecewise-constant function, nonzero gradient"


@pytest.mark.parametrize("case", _params("finite", ("smooth", "constant", "piecewise")))
def test_gradient_is_finite(case):
    _check_gradient(case, POINTS)


@pytest.mark.parametrize("case", _params("log_space", ("smooth", "constant", "piecewise"), True))
def test_gradient_is_finite_at_minus_inf(case):
    """Log-space functions: ``-inf`` is valid evidence ("impossible"), never a NaN gradient."""
    _check_gradient(case, LOG_POINTS)


#: Finite-difference steps, largest first. At 1e-2 no value moves past a neighbour at the
#: distinct points; pair values (differences, Walsh averages, soft-sort blocks) can still change
#: order within it, so smaller steps are tried before a mismatch is reported. Below 1e-3 the
#: float32 rounding of the loss dominates.
FD_STEPS = (1e-2, 3e-3, 1e-3)


def _central_differences(f, x, v) -> list[float]:
    return [(float(f(x + h * v)) - float(f(x - h * v))) / (2 * h) for h in FD_STEPS]


@pytest.mark.parametrize("case", _params("fd", ("smooth",)))
def test_gradient_matches_finite_differences(case):
    """The directional derivative equals a central difference at one of ``FD_STEPS`` (a kink
    of a piecewise-smooth function inside a step makes that step's difference wrong, never
    right by accident)."""
    f, grad = _jitted(case)
    x = jnp.asarray(POINTS["distinct"])
    g = np.asarray(grad(x))
    v = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    dd = float(np.sum(g * v))
    fds = _central_differences(f, x, v)
    assert any(np.isclose(dd, fd, rtol=1e-3, atol=1e-3) for fd in fds), (dd, fds)


def test_gradients_at_ties_are_valid_subgradients():
    """At ties the order statistic's gradient is a unit vector on one of the tied elements
    (sort) or a convex combination (median of an even count): sums are preserved."""
    x = jnp.asarray(POINTS["repeated"])
    g_sort = np.asarray(jax.jit(jax.jacrev(lambda t: _sort.sort(t[0])))(x))[:, 0, :]
    np.testing.assert_array_equal(g_sort.sum(axis=1), np.ones(SHAPE[1]))
    assert set(np.unique(g_sort)) <= {0.0, 1.0}
    g_med = np.asarray(jax.jit(jax.grad(lambda t: jnp.sum(rank.median(t, axis=-1))))(x))
    np.testing.assert_allclose(g_med.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(g_med >= 0.0)
    tied = jnp.asarray(POINTS["tied"])
    g_q = np.asarray(jax.jit(jax.grad(lambda t: rank.quantile(t, 0.3)))(tied))
    np.testing.assert_allclose(g_q.sum(), 1.0, rtol=1e-6)  # shift equivariance


@pytest.mark.parametrize("fn,shift", [
    (pairwise.hodges_lehmann, 1.0),  # HL(a x + b) = a HL(x) + b
    (pairwise.qn_scale, 0.0),  # Qn(a x + b) = |a| Qn(x)
    (pairwise.sn_scale, 0.0),  # Sn(a x + b) = |a| Sn(x)
])
@pytest.mark.parametrize("data", ["distinct", "repeated"])
def test_pair_statistics_gradients_at_large_n(fn, shift, data):
    """At n = 300 (more than 2^15 pairs) Hodges-Lehmann and Qn select their order statistic by
    sampling rounds in a ``while_loop`` instead of enumerating all pairs; reverse-mode autodiff
    cannot enter that loop. The gradient must exist and satisfy the equivariance identities:
    it sums to the shift derivative and, by Euler's theorem for these degree-1 homogeneous
    functions, ``<grad, x> = f(x)``."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=300) if data == "distinct" else rng.integers(0, 7, size=300)
    x = jnp.asarray(x.astype(np.float32))
    value, g = jax.jit(jax.value_and_grad(fn))(x)
    g = np.asarray(g)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g.sum(), shift, atol=1e-5)
    np.testing.assert_allclose(float(g @ np.asarray(x)), float(value), rtol=1e-5, atol=1e-6)


def test_momentsketch_gradient_at_symmetric_data(x64):
    """The maximum-entropy query expands powers of the normalised mean offset ``d``, which is
    exactly 0 for symmetric data (and for all-equal data): ``d ** 0`` must not differentiate
    to ``0 * d ** -1 = NaN`` there. In float64 (the query is piecewise smooth on its
    quadrature grid, so the finite-difference step must be far below the grid spacing)."""
    sk = sketch.momentsketch()
    q = jnp.array([0.1, 0.5, 0.75], jnp.float64)
    w = jnp.array([1.0, -2.0, 0.5], jnp.float64)

    def loss(t):
        return jnp.sum(sk.query(sketch.from_batch(sk, t), q) * w)

    x = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0], jnp.float64)
    g = np.asarray(jax.jit(jax.grad(loss))(x))
    assert np.all(np.isfinite(g)), g
    v = np.array([0.3, -1.0, 0.2, 0.7, -0.4])
    f = jax.jit(loss)
    h = 1e-6
    fd = (float(f(x + h * v)) - float(f(x - h * v))) / (2 * h)
    np.testing.assert_allclose(float(g @ v), fd, rtol=1e-6, atol=1e-8)


#: Public callables of the covered modules with no meaningful gradient in the data.
NOT_DIFFERENTIABLE = {
    "argsort": "integer-valued (indices)",
    "nbytes": "a Python float computed from static shapes and dtypes",
}

_MODULES = (_sort, rank, robust, pairwise, evidence, soft, sketch)


def _public_functions(module) -> set[str]:
    out = set()
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj) and not isinstance(obj, type):  # result/state types are NamedTuples
            out.add(name)
    return out


def test_registry_covers_the_public_differentiable_api():
    """A new public function in these modules must be added to CASES (or listed in
    NOT_DIFFERENTIABLE with a reason)."""
    covered = {c.name.split("[")[0] for c in CASES}
    public = set().union(*(_public_functions(m) for m in _MODULES))
    assert set(NOT_DIFFERENTIABLE) <= public, sorted(set(NOT_DIFFERENTIABLE) - public)
    missing = public - set(NOT_DIFFERENTIABLE) - covered
    assert not missing, sorted(missing)
    assert covered <= public, sorted(covered - public)  # case names are function names
    # The top-level re-exports are the tested functions.
    for name in jaxstats.__all__:
        obj = getattr(jaxstats, name)
        if name in public and callable(obj) and not isinstance(obj, type):
            assert any(getattr(m, name, None) is obj for m in _MODULES), name
