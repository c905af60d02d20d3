"""jaxstats: behavioural statistics for very large populations of agents, in JAX.

O(n log n) rank baselines on a fast sort kernel, log-space evidence, mergeable streaming
sketches and sharded agent arrays. Everything public works under ``jit`` and ``vmap`` and,
where the math allows, ``grad``.
"""

from . import evidence as evidence
from . import ooc as ooc
from . import pairwise as pairwise
from . import shard as shard
from . import sketch as sketch
from . import soft as soft
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
from .evidence import compensated_sum as compensated_sum
from .evidence import cumulative_logsumexp as cumulative_logsumexp
from .evidence import cusum as cusum
from .evidence import log_bayes_factor as log_bayes_factor
from .evidence import log_odds as log_odds
from .evidence import log_posterior as log_posterior
from .evidence import logsumexp as logsumexp
from .evidence import posterior_probability as posterior_probability
from .evidence import sprt as sprt
from .evidence import two_sum as two_sum
from .monitor import Monitor as Monitor
from .monitor import MonitorState as MonitorState
from .monitor import Report as Report
from .monitor import load_state as load_state
from .monitor import save_state as save_state
from .pairwise import energy_distance as energy_distance
from .pairwise import gini_mean_difference as gini_mean_difference
from .pairwise import hodges_lehmann as hodges_lehmann
from .pairwise import kendalltau as kendalltau
from .pairwise import ks_2samp as ks_2samp
from .pairwise import mannwhitneyu as mannwhitneyu
from .pairwise import qn_scale as qn_scale
from .pairwise import sn_scale as sn_scale
from .pairwise import spearmanr as spearmanr
from .pairwise import wasserstein_distance as wasserstein_distance
from .soft import soft_percentile_of_population as soft_percentile_of_population
from .soft import soft_quantile as soft_quantile
from .soft import soft_rank as soft_rank
from .soft import soft_sort as soft_sort

__version__ = "0.1.0"

__all__ = [
    "energy_distance",
    "gini_mean_difference",
    "hodges_lehmann",
    "kendalltau",
    "ks_2samp",
    "mannwhitneyu",
    "qn_scale",
    "sn_scale",
    "spearmanr",
    "wasserstein_distance",
    "pairwise",
    "Monitor",
    "MonitorState",
    "Report",
    "compensated_sum",
    "cumulative_logsumexp",
    "cusum",
    "evidence",
    "load_state",
    "log_bayes_factor",
    "log_odds",
    "log_posterior",
    "logsumexp",
    "ooc",
    "posterior_probability",
    "save_state",
    "shard",
    "soft",
    "soft_percentile_of_population",
    "soft_quantile",
    "soft_rank",
    "soft_sort",
    "sprt",
    "two_sum",
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
