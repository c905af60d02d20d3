"""jaxstats: behavioural statistics for very large populations of agents, in JAX.

O(n log n) rank baselines on a fast sort kernel, log-space evidence, mergeable streaming
sketches and sharded agent arrays. Everything public works under ``jit`` and ``vmap`` and,
where the math allows, ``grad``.
"""

from . import sketch as sketch
from ._sort import argsort as argsort
from ._sort import sort as sort
from .rank import median as median
from .rank import percentile_of_population as percentile_of_population
from .rank import percentileofscore as percentileofscore
from .rank import quantile as quantile
from .rank import rankdata as rankdata
from .robust import BaselineResult as BaselineResult
from .robust import iqr as iqr
from .robust import median_abs_deviation as median_abs_deviation
from .robust import population_baseline as population_baseline
from .robust import robust_zscore as robust_zscore

__version__ = "0.1.0"

__all__ = [
    "BaselineResult",
    "argsort",
    "iqr",
    "median",
    "median_abs_deviation",
    "percentile_of_population",
    "percentileofscore",
    "population_baseline",
    "quantile",
    "rankdata",
    "robust_zscore",
    "sketch",
    "sort",
]
