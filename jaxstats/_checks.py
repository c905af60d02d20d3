"""Trace-time validators. Each raises ``ValueError``/``TypeError`` naming the function, the
argument, what was expected, what was given and how to fix it. They read only static
information (shapes, dtypes, Python options), so they cost nothing under ``jit``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_float_array",
    "check_axis",
    "check_option",
    "check_rank",
    "check_same_shape",
    "check_real",
    "is_traced",
]


def is_traced(x: Any) -> bool:
    """True when ``x`` is an abstract value being traced (inside jit/vmap/grad)."""
    return isinstance(x, jax.core.Tracer)


def check_option(fn: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed`` (a static option)."""
    allowed = tuple(allowed)
    if value not in allowed:
        opts = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{fn}: '{name}' must be one of {opts}; got {value!r}.")


def check_real(fn: str, name: str, x: Any) -> None:
    """Raise TypeError unless ``x`` has a real numeric (bool, int or float) dtype."""
    dtype = jnp.result_type(x) if not hasattr(x, "dtype") else x.dtype
    if not (
        jnp.issubdtype(dtype, jnp.floating)
        or jnp.issubdtype(dtype, jnp.integer)
        or jnp.issubdtype(dtype, jnp.bool_)
    ):
        raise TypeError(
            f"{fn}: '{name}' must have a real (float, int or bool) dtype; got {dtype}. "
            "Complex and object arrays are not supported."
        )


def as_float_array(fn: str, name: str, x: Any, dtype: Any = None) -> jax.Array:
    """``x`` as a JAX float array: floats keep their dtype; ints/bools go to the default float
    dtype (float32, or float64 under x64) unless ``dtype`` is given."""
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        x = np.asarray(x)
    check_real(fn, name, x)
    x = jnp.asarray(x)
    if dtype is not None:
        return x.astype(dtype)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.result_type(float))
    return x


def check_axis(fn: str, name: str, axis: Any, ndim: int) -> int:
    """Normalize a single static integer axis for an array of rank ``ndim``."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{fn}: '{name}' must be a static Python int; got {axis!r}.")
    axis = int(axis)
    if not -ndim <= axis < max(ndim, 1) or ndim == 0:
        raise ValueError(
            f"{fn}: '{name}'={axis} is out of bounds for an array of rank {ndim}"
            + (" (a scalar has no axis; pass at least a 1-D array)." if ndim == 0 else ".")
        )
    return axis % ndim


def check_rank(fn: str, name: str, x: Any, ranks: Iterable[int], hint: str = "") -> None:
    """Raise ValueError unless ``x.ndim`` is one of ``ranks``."""
    ranks = tuple(ranks)
    if jnp.ndim(x) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"{fn}: '{name}' must have rank {want}; got shape {tuple(jnp.shape(x))}."
            + (f" {hint}" if hint else "")
        )


def check_same_shape(fn: str, names: tuple[str, str], a: Any, b: Any) -> None:
    """Raise ValueError unless ``a`` and ``b`` have exactly the same shape."""
    if tuple(jnp.shape(a)) != tuple(jnp.shape(b)):
        raise ValueError(
            f"{fn}: '{names[0]}' and '{names[1]}' must have the same shape; "
            f"got {tuple(jnp.shape(a))} and {tuple(jnp.shape(b))}."
        )
