"""Mergeable, fixed-size streaming summaries (sketches): init / update / merge / query."""

from ._base import Sketch as Sketch
from ._base import combine as combine
from ._base import fold as fold
from ._base import from_batch as from_batch
from ._base import nbytes as nbytes

__all__ = ["Sketch", "combine", "fold", "from_batch", "nbytes"]
