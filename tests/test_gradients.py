"""Every public function that is differentiable in math has finite gradients in code.

One registry, ``CASES``, lists ``(name, loss, kind)``: ``loss(x)`` maps a ``[3, 8]`` float32
array to a scalar through one public function. ``kind`` is

* ``"smooth"``: differentiable almost everywhere; the gradient must be finite everywhere
  (ties, repeated values, all-equal data included) and equal central finite differences at
  points where the function is locally linear/smooth;
* ``"constant"``: piecewise constant (ranks, percentiles); the gradient must be exactly zero,
  never NaN.

Extend ``CASES`` when a module gains a differentiable public function.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstats
from jaxstats import _native, _sort, rank

SHAPE = (3, 8)
_C = jnp.asarray(np.random.default_rng(0).normal(size=SHAPE).astype(np.float32))
_Q = jnp.array([0.1, 0.5, 0.75], jnp.float32)


def _sort_backends():
    backends = ["auto", "xla", "host"]
    if _native.load() is not None:  # the native radix kernel compiled and loaded
        backends.append("native")
    return backends


CASES = [
    *[(f"sort[{b}]", (lambda b: lambda x: jnp.sum(_sort.sort(x, backend=b) * _C))(b), "smooth")
      for b in _sort_backends()],
    ("sort[axis=0]", lambda x: jnp.sum(_sort.sort(x, axis=0) * _C), "smooth"),
    ("sort_and_argsort", lambda x: jnp.sum(_sort.sort_and_argsort(x)[0] * _C), "smooth"),
    ("tie_bounds", lambda x: jnp.sum(_sort.tie_bounds(x)[0] * _C), "smooth"),
    *[(f"quantile[{m}]",
       (lambda m: lambda x: jnp.sum(rank.quantile(x, _Q, axis=-1, method=m) * _C[:, :3].T))(m),
       "smooth")
      for m in ("linear", "hazen", "midpoint", "lower", "nearest", "inverted_cdf")],
    ("quantile[axis=None]", lambda x: rank.quantile(x, 0.3), "smooth"),
    ("median", lambda x: jnp.sum(rank.median(x, axis=-1) * _C[:, 0]), "smooth"),
    ("median[axis=0]", lambda x: jnp.sum(rank.median(x, axis=0) * _C[0]), "smooth"),
    *[(f"rankdata[{m}]", (lambda m: lambda x: jnp.sum(rank.rankdata(x, m) * _C))(m), "constant")
      for m in ("average", "min", "dense", "ordinal")],
    ("percentileofscore[a]",
     lambda x: jnp.sum(rank.percentileofscore(x[0], jnp.array([0.0, 1.0], jnp.float32))),
     "constant"),
    ("percentileofscore[score]",
     lambda x: jnp.sum(rank.percentileofscore(jnp.arange(5.0, dtype=jnp.float32), x)),
     "constant"),
    ("percentile_of_population",
     lambda x: jnp.sum(rank.percentile_of_population(x, axis=-1) * _C), "constant"),
]


def _points():
    rng = np.random.default_rng(1)
    # distinct values at least 0.25 apart: every function above is locally linear there
    distinct = (rng.permutation(24).reshape(SHAPE) * 0.25 + 0.01 * rng.random(SHAPE)).astype(
        np.float32)
    repeated = rng.integers(0, 3, size=SHAPE).astype(np.float32)  # many ties
    tied = np.full(SHAPE, 1.5, np.float32)
    return {"distinct": distinct, "repeated": repeated, "tied": tied}


POINTS = _points()


@pytest.mark.parametrize("name,loss,kind", CASES, ids=[c[0] for c in CASES])
def test_gradient_is_finite(name, loss, kind):
    grad = jax.jit(jax.grad(loss))
    for label, x in POINTS.items():
        g = np.asarray(grad(jnp.asarray(x)))
        assert g.shape == SHAPE
        assert np.all(np.isfinite(g)), f"{name}: non-finite gradient at {label} data"
        if kind == "constant":
            assert np.all(g == 0.0), f"{name}: piecewise-constant function, nonzero gradient"


@pytest.mark.parametrize("name,loss,kind", [c for c in CASES if c[2] == "smooth"],
                         ids=[c[0] for c in CASES if c[2] == "smooth"])
def test_gradient_matches_finite_differences(name, loss, kind):
    x = jnp.asarray(POINTS["distinct"])
    g = np.asarray(jax.jit(jax.grad(loss))(x))
    f = jax.jit(loss)
    v = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    h = 1e-2  # below half the smallest gap: no order change, the function is linear here
    fd = (float(f(x + h * v)) - float(f(x - h * v))) / (2 * h)
    np.testing.assert_allclose(float(np.sum(g * v)), fd, rtol=1e-3, atol=1e-3)


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
    g_q = np.asarray(jax.jit(jax.grad(lambda t: rank.quantile(t, 0.3)))(jnp.asarray(POINTS["tied"])))
    np.testing.assert_allclose(g_q.sum(), 1.0, rtol=1e-6)  # shift equivariance


def test_registry_covers_the_public_differentiable_api():
    """A new public function in these modules must be added to CASES (or listed here as
    integer-valued)."""
    integer_valued = {"argsort", "dense_rank", "BACKENDS"}
    covered = {c[0].split("[")[0] for c in CASES}
    public = set(_sort.__all__) | set(rank.__all__)
    assert public - integer_valued <= covered, sorted(public - integer_valued - covered)
    assert jaxstats.sort is _sort.sort  # the top-level re-export is the tested function
