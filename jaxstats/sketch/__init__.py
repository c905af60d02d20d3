"""Mergeable, fixed-size streaming summaries (sketches): init / update / merge / query.

Factories: :func:`moments` (count, mean, variance, skewness, kurtosis), :func:`ewma`
(exponentially weighted mean and variance), :func:`ddsketch` (relative-error quantiles),
:func:`momentsketch` (compact moment-based quantiles) and :func:`log_evidence` (compensated
log-evidence accumulator). :func:`combine` builds one agent state
from several sketches; :func:`nbytes` reports bytes per agent.
"""

from ._base import Sketch as Sketch
from ._base import combine as combine
from ._base import fold as fold
from ._base import from_batch as from_batch
from ._base import nbytes as nbytes
from .evidence import LogEvidenceState as LogEvidenceState
from .evidence import log_evidence as log_evidence
from .ewma import EwmaResult as EwmaResult
from .ewma import EwmaState as EwmaState
from .ewma import ewma as ewma
from .moments import MomentsResult as MomentsResult
from .moments import MomentsState as MomentsState
from .moments import moments as moments
from .quantile import DDSketchState as DDSketchState
from .quantile import MomentSketchState as MomentSketchState
from .quantile import ddsketch as ddsketch
from .quantile import momentsketch as momentsketch

__all__ = [
    "Sketch",
    "combine",
    "fold",
    "from_batch",
    "nbytes",
    "moments",
    "MomentsState",
    "MomentsResult",
    "ewma",
    "EwmaState",
    "EwmaResult",
    "ddsketch",
    "DDSketchState",
    "momentsketch",
    "MomentSketchState",
    "log_evidence",
    "LogEvidenceState",
]
