"""Type aliases shared by jaxstats' signatures (checked at runtime only in the test suite)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import jax
from jax.typing import ArrayLike as _JaxArrayLike
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

__all__ = [
    "AgentFloat",
    "Array",
    "ArrayLike",
    "Bool",
    "Float",
    "Int",
    "LogProb",
    "PRNGKeyArray",
    "PyTree",
]

#: Anything jaxstats accepts as numeric input: JAX/numpy arrays, scalars and nested sequences.
ArrayLike = Union[_JaxArrayLike, Sequence[Any]]
#: A float array whose leading axis is the agents axis.
AgentFloat = Float[Array, "agents *rest"]
#: Log-probabilities / log-evidence (``-inf`` = impossible).
LogProb = Float[Array, "..."]

del jax
