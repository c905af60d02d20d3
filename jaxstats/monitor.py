r"""The real-time monitor: one jitted step from a population's observations to alarms.

Every few seconds a row of observations arrives for every agent (``obs[agents, features]``).
:meth:`Monitor.step` turns it into alarms in four stages, all inside one XLA program:

1. **Self-baseline.** Each agent-feature keeps a robust, exponentially decayed location and
   scale of its own history (a Huber-type EWMA). The new observation is scored against the
   baseline *before* it is folded in: ``z_self = (x - location) / scale``. After the warm-up,
   residuals are clipped at ``clip`` scales when they update the baseline, so an anomaly does
   not instantly poison its own reference (a lasting change is absorbed in tens of steps as
   the clipped scale grows by at most ``alpha * (1.2533 clip - 1)`` per step).
2. **Population baseline.** ``z_self`` makes agents of different sizes comparable; each agent
   is then compared with its peers on every feature in O(n log n) by :func:`peer_baseline`
   (the percentile, median and MAD of :func:`jaxstats.population_baseline` with
   ``nan_policy="omit"``, from a single sort: missing, warming-up and inactive agents are left
   out of their peers' baseline). The score is the peer-robust z
   ``(z_self - median) / max(1.4826 MAD, peer_scale_floor)``: peers remove movements shared by
   the group (diurnal load, fleet-wide events) that each agent's own baseline lags behind, and
   rescale to the peers' spread; the floor keeps a degenerate MAD (quantized or idle metrics)
   from blowing scores up. Peer groups are contiguous, equal blocks of agent slots
   (``n_groups``); below ``min_peers`` scored peers the score is ``z_self``.
3. **Evidence.** Each score becomes a two-sided tail probability ``u`` under a heavy-tailed
   null (Student-t with 4 degrees of freedom, matched on the robust sigma, by default), then a
   log-likelihood ratio against a ``Beta(a, 1)`` alternative, combined across features as the
   mean of e-values, and accumulated with a CUSUM in log space (see *Evidence model*).
4. **Decision.** An alarm is raised while the CUSUM exceeds ``threshold`` nats; the report
   carries the posterior log-odds, the per-feature CUSUMs and the feature that drove them.

Evidence model
--------------
Under H0 (the agent behaves like its own past and its peers) the two-sided tail probability
``u_f = P(|T| >= |score_f|)`` of each observed feature is (approximately) uniform on (0, 1).
Under H1 it follows ``Beta(a, 1)`` (density ``a u^(a-1)``, piling up near 0), so the per-feature
log-likelihood ratio is

.. math:: \ell_f = \log a + (a - 1) \log u_f, \qquad E_{H_0}[e^{\ell_f}] = 1 .

The features of one agent are combined as the *mean* of their e-values,
:math:`\log e = \operatorname{logsumexp}_f \ell_f - \log F_{obs}`, which is again an e-value
(expectation <= 1 under H0) whatever the dependence between features, so correlated metrics
do not multiply evidence. The CUSUM :math:`C_t = \max(0, C_{t-1} + \log e_t)` is the e-detector
of Shin, Ramdas and Rinaldo: with conditionally valid e-values its mean time to a false alarm
is at least :math:`e^{h}` steps for threshold ``h`` (the default ``h = 12`` gives >= 1.6e5
steps per agent). The CUSUM is capped at ``evidence_cap`` so that an alarm clears soon after
the evidence stops (a cap from above only removes alarms). The same recursion per feature
gives ``feature_cusum``; the largest names the feature that drove an alarm.
``log_odds = logit(prior) + C_t`` is the posterior log-odds that the agent is anomalous since
the most likely onset (``run_length`` steps ago).

The calibration is as good as the null: the Student-t(4) tail is deliberately heavier than a
normal one (a normal tail turns every heavy-tailed metric into false evidence); use
``tail="t2"`` for even heavier-tailed data or ``tail="normal"`` for Gaussian data.

Missing data, NaN and capacity
------------------------------
The state has a fixed capacity of agent slots and an ``active`` mask (:meth:`Monitor.join`,
:meth:`Monitor.leave`). An observation is used only where it is finite, ``mask`` is True and
the agent is active; otherwise that agent-feature's state is left unchanged bit for bit, its
score is NaN and it adds no evidence. A NaN therefore never leaves its own agent-feature (a
deliberate exception to the package's propagate policy: a streaming monitor must survive a
bad sample). Per-agent state is ``16 F + 9`` bytes in float32 (137 bytes at 8 features).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from . import _checks
from ._typing import ArrayLike
from ._sort import tie_bounds
from .rank import _percent_from_counts
from .robust import MAD_NORMAL_SCALE

__all__ = [
    "Monitor",
    "MonitorState",
    "Report",
    "load_state",
    "log_two_sided_tail",
    "peer_baseline",
    "save_state",
]

#: Accepted values of ``Monitor(tail=...)``.
TAILS = ("t4", "t2", "normal")

#: sqrt(pi / 2): makes the mean absolute deviation a consistent estimator of a normal sigma.
_MEAN_ABS_TO_SIGMA = 1.2533141373155003
#: 1.4826 * (upper quartile of Student-t): the t variable whose robust (MAD) sigma is 1.
_T4_ROBUST_SCALE = 1.0981591401460942
_T2_ROBUST_SCALE = 1.2105396422856856
#: |score| is clipped here before the tail: keeps ``c**4`` (about x**-4) a normal float32.
#: A clipped score still gives log u of about -72 ("t4"): far beyond any alarm threshold.
_MAX_ABS_SCORE = 1e8
_INT32_MAX = 2**31 - 1
_FORMAT = "jaxstats.MonitorState/1"
_PER_FEATURE_FIELDS = ("count", "location", "scale", "feature_cusum")


class MonitorState(NamedTuple):
    """Per-agent state of a :class:`Monitor` (every leaf has the leading ``agents`` axis).

    Attributes:
      count: ``int32[agents, features]`` observations folded into the self-baseline,
        saturating at ``Monitor.count_cap`` (past it the EWMA weight is constant); never
        negative.
      location: ``float[agents, features]`` robust decayed location of each agent's own
        feature (0 before the first observation).
      scale: ``float[agents, features]`` robust decayed scale (normal-consistent mean absolute
        one-step-ahead residual); ``>= 0``.
      feature_cusum: ``float[agents, features]`` per-feature CUSUM of log-likelihood ratios,
        in nats; ``>= 0``.
      cusum: ``float[agents]`` CUSUM of the combined log e-values, in nats; ``>= 0``.
      run_length: ``int32[agents]`` steps since ``cusum`` was last 0 (the onset estimate),
        saturating at 2**31 - 1.
      active: ``bool[agents]`` whether the slot holds a live agent.
    """

    count: Int[Array, "agents features"]
    location: Float[Array, "agents features"]
    scale: Float[Array, "agents features"]
    feature_cusum: Float[Array, "agents features"]
    cusum: Float[Array, " agents"]
    run_length: Int[Array, " agents"]
    active: Bool[Array, " agents"]


class Report(NamedTuple):
    """What :meth:`Monitor.step` reports for one step (leading axis ``agents``).

    Attributes:
      score: ``[agents, features]`` standardized score of each feature: the peer-robust z of
        the self-normalized deviation (or ``self_z`` without a population stage); NaN where
        not scored (missing, NaN, warming up, inactive).
      self_z: ``[agents, features]`` deviation from the agent's own baseline, in its own
        robust sigmas; NaN where not scored.
      percentile: ``[agents, features]`` percentile (0-100] of ``self_z`` among the peers;
        NaN where not scored or with fewer than ``min_peers`` peers.
      log_lr: ``[agents, features]`` log-likelihood ratio of each feature this step (0 where
        not scored).
      log_evidence: ``[agents]`` combined log e-value this step (0 when nothing was scored).
      cusum: ``[agents]`` accumulated evidence (nats) after this step.
      log_odds: ``[agents]`` posterior log-odds of "anomalous since the onset estimate":
        ``logit(prior) + cusum``; NaN for inactive slots.
      alarm: ``[agents]`` bool, ``cusum > threshold`` on an active agent.
      top_feature: ``[agents]`` int32 index of the feature with the largest
        ``feature_cusum``; -1 when no feature holds evidence.
      feature_cusum: ``[agents, features]`` per-feature accumulated evidence (nats).
      run_length: ``[agents]`` int32 steps since the CUSUM was last 0 (how long the current
        excursion has lasted).
    """

    score: Float[Array, "agents features"]
    self_z: Float[Array, "agents features"]
    percentile: Float[Array, "agents features"]
    log_lr: Float[Array, "agents features"]
    log_evidence: Float[Array, " agents"]
    cusum: Float[Array, " agents"]
    log_odds: Float[Array, " agents"]
    alarm: Bool[Array, " agents"]
    top_feature: Int[Array, " agents"]
    feature_cusum: Float[Array, "agents features"]
    run_length: Int[Array, " agents"]


def _positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "a Python int" if integer else "a Python number"
        raise TypeError(f"Monitor: '{name}' must be {what}; got {value!r}.")
    ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(float(value)) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Monitor: '{name}' must be finite and {bound}; got {value!r}.")


class Monitor(eqx.Module):
    """Configuration of the streaming monitor (static settings; changing one recompiles).

    ``Monitor()`` works as is. All fields are static Python values; per-agent quantities live
    in :class:`MonitorState`. See the module docstring for the pipeline and evidence model.

    Attributes:
      half_life: half-life of the self-baseline, in steps (the EWMA factor is
        ``2 ** (-1 / half_life)``).
      warmup: observations an agent-feature needs before its scores count.
      clip: Huber clip, in robust sigmas, applied to residuals that update the baseline
        after the warm-up.
      min_scale: absolute floor of the self-baseline scale (a constant metric that moves).
      rel_min_scale: floor of the scale relative to ``|location|``.
      population: compare each agent with its peers (stage 2); False scores ``self_z``.
      n_groups: peer groups; group ``g`` is the slots ``[g C, (g + 1) C)`` with
        ``C = n_agents // n_groups`` (pad groups with inactive slots).
      min_peers: fewest scored peers in a group-feature for the population stage; below it
        the score falls back to ``self_z``.
      peer_scale_floor: floor of the peers' robust spread, in own sigmas.
      tail: null distribution of a score: ``"t4"`` (Student-t, 4 dof; default), ``"t2"`` or
        ``"normal"``, each scaled to a robust sigma of 1.
      beta_a: shape ``a`` in (0, 1) of the ``Beta(a, 1)`` alternative for tail probabilities.
      threshold: alarm threshold of the CUSUM, in nats (false-alarm interval >= e^threshold
        steps per agent under a calibrated null).
      evidence_cap: ceiling of the CUSUMs, in nats (>= threshold): an alarm clears within
        about ``(evidence_cap - threshold) / KL`` steps once the evidence stops (``KL = a - 1
        - log a`` nats per normal step), however extreme the anomaly was. Capping from above
        only removes alarms, so the false-alarm bound holds.
      prior: prior probability that an agent is anomalous (for ``log_odds``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> monitor = Monitor(warmup=2)
      >>> state = monitor.init(4, 2)
      >>> step = monitor.jit_step()
      >>> for t in range(4):
      ...     state, report = step(state, jnp.full((4, 2), 1.0 + 0.1 * (t % 2)))
      >>> report.alarm
      Array([False, False, False, False], dtype=bool)
    """

    half_life: float | int = eqx.field(static=True, default=64.0)
    warmup: int = eqx.field(static=True, default=16)
    clip: float | int = eqx.field(static=True, default=3.0)
    min_scale: float | int = eqx.field(static=True, default=1e-6)
    rel_min_scale: float | int = eqx.field(static=True, default=1e-3)
    population: bool = eqx.field(static=True, default=True)
    n_groups: int = eqx.field(static=True, default=1)
    min_peers: int = eqx.field(static=True, default=8)
    peer_scale_floor: float | int = eqx.field(static=True, default=0.25)
    tail: str = eqx.field(static=True, default="t4")
    beta_a: float | int = eqx.field(static=True, default=0.1)
    threshold: float | int = eqx.field(static=True, default=12.0)
    evidence_cap: float | int = eqx.field(static=True, default=36.0)
    prior: float | int = eqx.field(static=True, default=1e-3)

    def __check_init__(self) -> None:
        _positive("half_life", self.half_life)
        _positive("warmup", self.warmup, integer=True, allow_zero=True)
        _positive("clip", self.clip)
        _positive("min_scale", self.min_scale, allow_zero=True)
        _positive("rel_min_scale", self.rel_min_scale, allow_zero=True)
        _positive("n_groups", self.n_groups, integer=True)
        _positive("min_peers", self.min_peers, integer=True)
        _positive("peer_scale_floor", self.peer_scale_floor)
        _positive("threshold", self.threshold)
        _positive("evidence_cap", self.evidence_cap)
        if self.evidence_cap < self.threshold:
            raise ValueError(
                f"Monitor: 'evidence_cap'={self.evidence_cap!r} must be >= threshold="
                f"{self.threshold!r}, or no alarm could ever be raised."
            )
        if not isinstance(self.population, (bool, np.bool_)):
            raise TypeError(f"Monitor: 'population' must be a bool; got {self.population!r}.")
        _checks.check_option("Monitor", "tail", self.tail, TAILS)
        _positive("beta_a", self.beta_a)
        if not self.beta_a < 1:
            raise ValueError(
                f"Monitor: 'beta_a' must lie in (0, 1) (a < 1 puts the alternative's mass near "
                f"u = 0); got {self.beta_a!r}."
            )
        _positive("prior", self.prior)
        if not self.prior < 1:
            raise ValueError(f"Monitor: 'prior' must lie in (0, 1); got {self.prior!r}.")

    # ------------------------------------------------------------------------------------
    # Static derived constants
    # ------------------------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        """EWMA weight of a new observation once warm: ``1 - 2 ** (-1 / half_life)``."""
        return 1.0 - 2.0 ** (-1.0 / float(self.half_life))

    @property
    def count_cap(self) -> int:
        """Where ``state.count`` saturates: past it the EWMA weight no longer depends on it."""
        return int(max(self.warmup, math.ceil(1.0 / self.alpha))) + 1

    def config(self) -> dict[str, Any]:
        """The settings as a JSON-serializable dict (stored with saved states)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    # ------------------------------------------------------------------------------------
    # State management
    # ------------------------------------------------------------------------------------

    def init(
        self,
        n_agents: int,
        n_features: int,
        *,
        active: ArrayLike | None = None,
        dtype: Any = None,
    ) -> MonitorState:
        """A fresh state for ``n_agents`` slots of ``n_features`` metrics.

        Args:
          n_agents: capacity (static int >= 1); a multiple of ``n_groups``.
          n_features: metrics per agent (static int >= 1).
          active: optional ``bool[agents]``; default all slots active.
          dtype: float dtype of the state; default the default float (float32, or float64
            under x64).

        Returns:
          :class:`MonitorState` with empty baselines and no evidence.

        Raises:
          ValueError: for a non-positive size, ``n_agents`` not a multiple of ``n_groups``,
            or ``active`` of the wrong shape.
          TypeError: for non-int sizes, a non-float ``dtype`` or a non-bool ``active``.
        """
        fn = "Monitor.init"
        for name, v in (("n_agents", n_agents), ("n_features", n_features)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{fn}: '{name}' must be a static Python int; got {v!r}.")
            if v < 1:
                raise ValueError(f"{fn}: '{name}' must be >= 1; got {v}.")
        if n_agents % self.n_groups:
            raise ValueError(
                f"{fn}: 'n_agents'={n_agents} must be a multiple of n_groups={self.n_groups} "
                "(groups are equal blocks of slots); pad each group with inactive slots."
            )
        dt = jnp.dtype(jnp.result_type(float)) if dtype is None else jnp.dtype(dtype)
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(f"{fn}: 'dtype' must be a floating dtype; got {dt}.")
        if active is None:
            act = jnp.ones((n_agents,), jnp.bool_)
        else:
            act = jnp.asarray(active)
            if act.dtype != jnp.bool_:
                raise TypeError(f"{fn}: 'active' must be a bool mask; got dtype {act.dtype}.")
            if act.shape != (n_agents,):
                raise ValueError(
                    f"{fn}: 'active' must have shape ({n_agents},); got {tuple(act.shape)}."
                )
        af = (n_agents, n_features)
        # Distinct buffers per leaf: a donated state must not alias one buffer twice.
        return MonitorState(
            count=jnp.zeros(af, jnp.int32),
            location=jnp.zeros(af, dt),
            scale=jnp.zeros(af, dt),
            feature_cusum=jnp.zeros(af, dt),
            cusum=jnp.zeros((n_agents,), dt),
            run_length=jnp.zeros((n_agents,), jnp.int32),
            active=act,
        )

    def join(self, state: MonitorState, where: ArrayLike) -> MonitorState:
        """Start fresh agents in the slots where ``where`` is True (reset and activate them).

        Args:
          state: the current state.
          where: ``bool[agents]``; True slots are reset to an empty baseline and made active
            (a slot that was active is restarted). Other slots are untouched.

        Returns:
          The new state (traceable: jit it, with donation, for large fleets).

        Raises:
          ValueError / TypeError: if ``where`` is not a ``bool[agents]`` mask.
        """
        w = self._agent_mask("Monitor.join", state, where)
        fresh = self.init(*state.location.shape, dtype=state.location.dtype)
        new = jax.tree_util.tree_map(lambda f, s: _where_agents(w, f, s), fresh, state)
        return new._replace(active=state.active | w)

    def leave(self, state: MonitorState, where: ArrayLike) -> MonitorState:
        """Deactivate the slots where ``where`` is True and clear their evidence.

        A departed slot is excluded from its peers' baseline, reports NaN scores and never
        alarms; its self-baseline is kept until :meth:`join` restarts the slot.

        Args:
          state: the current state.
          where: ``bool[agents]`` slots that leave.

        Returns:
          The new state.

        Raises:
          ValueError / TypeError: if ``where`` is not a ``bool[agents]`` mask.
        """
        w = self._agent_mask("Monitor.leave", state, where)
        zero = jnp.zeros((), state.cusum.dtype)
        return state._replace(
            active=state.active & ~w,
            cusum=jnp.where(w, zero, state.cusum),
            feature_cusum=jnp.where(w[:, None], zero, state.feature_cusum),
            run_length=jnp.where(w, jnp.int32(0), state.run_length),
        )

    @staticmethod
    def _agent_mask(fn: str, state: MonitorState, where: ArrayLike) -> jax.Array:
        _check_state(fn, state)
        w = jnp.asarray(where)
        if w.dtype != jnp.bool_:
            raise TypeError(f"{fn}: 'where' must be a bool mask over agents; got dtype {w.dtype}.")
        n = state.active.shape[0]
        if w.shape != (n,):
            raise ValueError(f"{fn}: 'where' must have shape ({n},) (one per slot); got {w.shape}.")
        return w

    # ------------------------------------------------------------------------------------
    # The step and its stages
    # ------------------------------------------------------------------------------------

    def jit_step(self, *, fields: Sequence[str] | None = None):
        """The compiled step, donating the state: ``step(state, obs, *, mask=None)``.

        Equivalent to ``jax.jit(monitor.step, donate_argnums=0)``, but the compiled program is
        shared by every equal :class:`Monitor` (the settings are its static key), so calling
        ``jit_step()`` again does not recompile. The state passed in is consumed (donated):
        use only the returned one.

        Args:
          fields: optional names of :class:`Report` fields to return; the step then returns
            ``(state, {name: array})`` and XLA drops the work and the output buffers of every
            other field (e.g. ``("alarm", "log_odds", "top_feature")`` for a lean decision
            loop: the per-feature report fields are 4 arrays of the size of the input).

        Returns:
          The step function.

        Raises:
          ValueError: if ``fields`` names something that is not a :class:`Report` field.
        """
        if fields is None:

            def step(
                state: MonitorState, obs: ArrayLike, *, mask: ArrayLike | None = None
            ) -> tuple[MonitorState, Report]:
                return _step_donated(self, state, obs, mask)

            return step
        if isinstance(fields, str):
            fields = (fields,)
        names = tuple(fields)
        bad = [f for f in names if f not in Report._fields]
        if bad or not names:
            raise ValueError(
                f"Monitor.jit_step: 'fields' must name Report fields {Report._fields}; "
                f"got {bad or names}."
            )

        def step_fields(
            state: MonitorState, obs: ArrayLike, *, mask: ArrayLike | None = None
        ) -> tuple[MonitorState, dict[str, jax.Array]]:
            return _step_fields_donated(self, names, state, obs, mask)

        return step_fields

    def step(
        self,
        state: MonitorState,
        obs: ArrayLike,
        *,
        mask: ArrayLike | None = None,
    ) -> tuple[MonitorState, Report]:
        """Fold one step of observations in and report scores, evidence and alarms.

        The caller jits this (``monitor.jit_step()`` or
        ``jax.jit(monitor.step, donate_argnums=0)``); it is one XLA program with no host
        synchronization. It takes the whole population at once: do not ``vmap`` it over
        agents (the population stage needs every agent).

        Args:
          state: :class:`MonitorState` with ``[agents, features]`` leaves.
          obs: ``[agents, features]`` real observations (cast to the state's dtype).
          mask: optional bool ``[agents, features]`` or ``[agents]``; False marks a missing
            observation (as do NaN and inf values).

        Returns:
          ``(new_state, report)``: the updated :class:`MonitorState` and the
          :class:`Report` for this step.

        Raises:
          ValueError: at trace time, if ``obs`` or ``mask`` does not have the state's
            ``[agents, features]`` shape (e.g. under ``vmap``) or the state is malformed.
          TypeError: for non-real ``obs`` or a non-bool ``mask``.

        NaN and inf:
          Non-finite observations are missing: they leave that agent-feature's state
          unchanged, give a NaN score and no evidence, and never reach other agents.
        """
        x, valid = self._prepare("Monitor.step", state, obs, mask)
        z_self, baseline = self.self_baseline(state, x, valid)
        scored = valid & (state.count >= self.warmup)
        score, percentile = self.population_scores(z_self, scored)
        log_lr, log_e = self.evidence(score, scored)
        new_state, report = self.decide(state, baseline, z_self, score, percentile, log_lr, log_e)
        return new_state, report

    def run(
        self,
        state: MonitorState,
        obs: ArrayLike,
        *,
        mask: ArrayLike | None = None,
    ) -> tuple[MonitorState, Report]:
        """Replay a block of steps with ``lax.scan`` (the same arithmetic as repeated ``step``).

        Args:
          state: :class:`MonitorState`.
          obs: ``[agents, time, features]`` observations.
          mask: optional bool ``[agents, time, features]`` or ``[agents, time]``.

        Returns:
          ``(final_state, reports)`` where every report field gains a time axis after the
          agents axis (``[agents, time, ...]``).

        Raises:
          ValueError / TypeError: as :meth:`step`, for the per-step slices.
        """
        fn = "Monitor.run"
        _check_state(fn, state)
        x = jnp.asarray(obs)
        n_agents, n_features = state.location.shape
        if x.ndim != 3 or x.shape[0] != n_agents or x.shape[2] != n_features:
            raise ValueError(
                f"{fn}: 'obs' must have shape [agents, time, features] = ({n_agents}, T, "
                f"{n_features}); got {tuple(x.shape)}."
            )
        xs = jnp.moveaxis(x, 1, 0)
        if mask is None:

            def body(s, xt):
                return self.step(s, xt)

            final, reps = lax.scan(body, state, xs)
        else:
            m = jnp.asarray(mask)
            if m.ndim not in (2, 3) or m.shape[:2] != x.shape[:2]:
                raise ValueError(
                    f"{fn}: 'mask' must have shape [agents, time(, features)] matching 'obs' "
                    f"{tuple(x.shape)}; got {tuple(m.shape)}."
                )

            def body(s, xm):
                return self.step(s, xm[0], mask=xm[1])

            final, reps = lax.scan(body, state, (xs, jnp.moveaxis(m, 1, 0)))
        reps = jax.tree_util.tree_map(lambda r: jnp.moveaxis(r, 0, 1), reps)
        return final, reps

    def _prepare(self, fn, state, obs, mask):
        _check_state(fn, state)
        n_agents, n_features = state.location.shape
        if isinstance(obs, (list, tuple)) or np.isscalar(obs):
            obs = np.asarray(obs)
        _checks.check_real(fn, "obs", obs)
        if tuple(jnp.shape(obs)) != (n_agents, n_features):
            raise ValueError(
                f"{fn}: 'obs' must have shape [agents, features] = ({n_agents}, {n_features}) "
                f"like the state; got {tuple(jnp.shape(obs))}. The step takes the whole "
                "population at once: do not vmap it over agents; for one agent use a monitor "
                "initialized with n_agents=1 and obs[None]."
            )
        x = jnp.asarray(obs).astype(state.location.dtype)
        valid = jnp.isfinite(x) & state.active[:, None]
        if mask is not None:
            m = jnp.asarray(mask)
            if m.dtype != jnp.bool_:
                raise TypeError(f"{fn}: 'mask' must be a bool array; got dtype {m.dtype}.")
            if m.shape == (n_agents,):
                m = m[:, None]
            elif m.shape != (n_agents, n_features):
                raise ValueError(
                    f"{fn}: 'mask' must have shape ({n_agents}, {n_features}) or ({n_agents},); "
                    f"got {tuple(m.shape)}."
                )
            valid = valid & m
        return x, valid

    def self_baseline(
        self,
        state: MonitorState,
        x: Float[Array, "agents features"],
        valid: Bool[Array, "agents features"],
    ) -> tuple[Float[Array, "agents features"], tuple[jax.Array, jax.Array, jax.Array]]:
        """Stage 1: score ``x`` against each agent's own baseline, then fold it in.

        Returns:
          ``(z_self, (count, location, scale))``: the deviation in the agent's own robust
          sigmas (computed before the update; NaN where ``valid`` is False or not yet warm) and
          the updated baseline leaves (unchanged where ``valid`` is False).
        """
        dt = state.location.dtype
        loc, scale, count = state.location, state.scale, state.count
        warm = count >= self.warmup
        floor = jnp.maximum(jnp.asarray(self.min_scale, dt), self.rel_min_scale * jnp.abs(loc))
        sc = jnp.maximum(scale, floor)
        # Double-where: sc == 0 only when both floors are 0 (then a move is infinitely unusual).
        safe_sc = jnp.where(sc > 0, sc, jnp.ones_like(sc))
        resid = jnp.where(valid, x, loc) - loc
        z = jnp.where(
            sc > 0, resid / safe_sc, jnp.where(resid == 0, 0.0, jnp.inf * jnp.sign(resid))
        )
        z_self = jnp.where(valid & warm, z, jnp.nan)
        # Huber: after the warm-up, residuals update the baseline clipped at clip * scale.
        lim = self.clip * sc
        r_c = jnp.where(warm, jnp.clip(resid, -lim, lim), resid)
        a_c = jnp.where(warm, jnp.minimum(jnp.abs(resid), lim), jnp.abs(resid))
        n_new = jnp.minimum(count + 1, self.count_cap)
        w_loc = jnp.maximum(1.0 / n_new.astype(dt), jnp.asarray(self.alpha, dt))
        w_sc = jnp.maximum(1.0 / jnp.maximum(count, 1).astype(dt), jnp.asarray(self.alpha, dt))
        new_loc = loc + w_loc * r_c
        new_scale = jnp.where(count >= 1, scale + w_sc * (_MEAN_ABS_TO_SIGMA * a_c - scale), scale)
        return z_self, (
            jnp.where(valid, n_new, count),
            jnp.where(valid, new_loc, loc),
            jnp.where(valid, new_scale, scale),
        )

    def population_scores(
        self, z_self: Float[Array, "agents features"], scored: Bool[Array, "agents features"]
    ) -> tuple[Float[Array, "agents features"], Float[Array, "agents features"]]:
        """Stage 2: each agent's ``z_self`` against its peer group, per feature (O(n log n)).

        Returns:
          ``(score, percentile)``: the peer-robust z
          ``(z_self - median) / max(1.4826 MAD, peer_scale_floor)``
          (``z_self`` itself in a group-feature with fewer than ``min_peers`` scored agents)
          and the percentile among the peers (NaN there); both NaN where not ``scored``.
        """
        zs = jnp.where(scored, z_self, jnp.nan)
        if not self.population:
            return zs, jnp.full_like(zs, jnp.nan)
        n_agents, n_features = zs.shape
        g = self.n_groups
        zg = zs.reshape(g, n_agents // g, n_features)
        pct, med, mad, n_valid = peer_baseline(zg)
        enough = (n_valid >= self.min_peers)[:, None, :]
        med = jnp.where(jnp.isnan(med), 0.0, med)[:, None, :]
        spread = jnp.where(jnp.isnan(mad), 0.0, MAD_NORMAL_SCALE * mad)[:, None, :]
        pop = (zg - med) / jnp.maximum(spread, self.peer_scale_floor)
        score = jnp.where(enough, pop, zg).reshape(n_agents, n_features)
        pct = jnp.where(enough, pct, jnp.nan).reshape(n_agents, n_features)
        return score, pct

    def evidence(
        self, score: Float[Array, "agents features"], scored: Bool[Array, "agents features"]
    ) -> tuple[Float[Array, "agents features"], Float[Array, " agents"]]:
        """Stage 3: per-feature log-likelihood ratios and the combined log e-value.

        ``log_lr = log a + (a - 1) log u`` with ``u`` the two-sided tail probability of the
        score under ``tail``; the combination is ``logsumexp(log_lr) - log(n_scored)`` over the
        scored features (0 when none is scored).

        Returns:
          ``(log_lr, log_evidence)``: ``[agents, features]`` (0 where not scored) and
          ``[agents]``.
        """
        dt = score.dtype
        log_u = log_two_sided_tail(jnp.where(scored, score, 0.0), tail=self.tail)
        a = self.beta_a
        llr = jnp.where(scored, math.log(a) + (a - 1.0) * log_u, 0.0)
        neg_inf = jnp.asarray(-jnp.inf, dt)
        masked = jnp.where(scored, llr, neg_inf)
        m = jnp.max(masked, axis=1)
        m_safe = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
        tot = jnp.sum(jnp.where(scored, jnp.exp(masked - m_safe[:, None]), 0.0), axis=1)
        n_obs = jnp.sum(scored, axis=1)
        any_obs = n_obs > 0
        safe_tot = jnp.where(any_obs, tot, jnp.ones_like(tot))
        log_e = m_safe + jnp.log(safe_tot) - jnp.log(jnp.maximum(n_obs, 1).astype(dt))
        return llr, jnp.where(any_obs, log_e, 0.0)

    def decide(
        self,
        state: MonitorState,
        baseline: tuple[jax.Array, jax.Array, jax.Array],
        z_self: jax.Array,
        score: jax.Array,
        percentile: jax.Array,
        log_lr: jax.Array,
        log_e: jax.Array,
    ) -> tuple[MonitorState, Report]:
        """Stage 4: accumulate the evidence (CUSUM) and decide; builds the new state and report."""
        dt = state.cusum.dtype
        count, loc, scale = baseline
        act = state.active
        zero = jnp.zeros((), dt)
        cap = self.evidence_cap
        cusum = jnp.where(act, _cusum_update(state.cusum, log_e, cap), zero)
        fcusum = jnp.where(act[:, None], _cusum_update(state.feature_cusum, log_lr, cap), zero)
        run_length = jnp.where(
            cusum > 0, jnp.minimum(state.run_length, _INT32_MAX - 1) + 1, jnp.int32(0)
        )
        alarm = act & (cusum > self.threshold)
        logit_prior = math.log(self.prior) - math.log1p(-self.prior)
        log_odds = jnp.where(act, logit_prior + cusum, jnp.nan)
        top, best = _argmax_features(fcusum)
        top = jnp.where(best > 0, top, jnp.int32(-1))
        new_state = MonitorState(
            count=count,
            location=loc,
            scale=scale,
            feature_cusum=fcusum,
            cusum=cusum,
            run_length=run_length,
            active=act,
        )
        report = Report(
            score=score,
            self_z=z_self,
            percentile=percentile,
            log_lr=log_lr,
            log_evidence=jnp.where(act, log_e, zero),
            cusum=cusum,
            log_odds=log_odds,
            alarm=alarm,
            top_feature=top,
            feature_cusum=fcusum,
            run_length=run_length,
        )
        return new_state, report


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _step_donated(monitor: Monitor, state: MonitorState, obs, mask):
    return monitor.step(state, obs, mask=mask)


def peer_baseline(
    z: Float[Array, "groups agents features"],
) -> tuple[
    Float[Array, "groups agents features"],
    Float[Array, "groups features"],
    Float[Array, "groups features"],
    Int[Array, "groups features"],
]:
    """Percentile, median and MAD of every agent among its group, NaN entries left out, with
    ONE sort per group-feature.

    Equal to ``jaxstats.population_baseline(z, axis=1, nan_policy="omit")`` (percentile kind
    ``"rank"``, raw MAD), but the MAD does not sort the deviations again: in the sorted row
    the deviations ``|s - median|`` form two sorted runs (left of the median, reversed, and
    right of it), and their middle elements are found by a binary search for the split of
    the ``k`` smallest between the two runs (``O(log n)`` per row instead of ``O(n log n)``).

    Args:
      z: ``[groups, agents, features]``; NaN marks agents left out of their group.

    Returns:
      ``(percentile, median, mad, n_valid)``: percentile ``[groups, agents, features]`` in
      (0, 100] (NaN for NaN entries), median and raw MAD ``[groups, features]`` (NaN for an
      empty group-feature), and the count of non-NaN entries ``[groups, features]`` (int32).

    NaN and inf:
      NaN entries are left out (``nan_policy="omit"``); ``±inf`` entries rank as the extremes
      and give an infinite or NaN median/MAD only if they reach the middle.
    """
    x = jnp.moveaxis(z, 1, -1)  # [groups, features, agents]: the population axis last
    n_cap = x.shape[-1]
    s, lo, hi = tie_bounds(x)
    n = n_cap - jnp.sum(jnp.isnan(x), axis=-1).astype(jnp.int32)  # valid entries (sorted first)
    pct = _percent_from_counts(lo - 1, hi, n[..., None], "rank", x.dtype)
    pct = jnp.moveaxis(jnp.where(jnp.isnan(x), jnp.nan, pct), -1, 1)

    def at(idx):
        i = jnp.clip(idx, 0, n_cap - 1)
        return jnp.take_along_axis(s, i[..., None], axis=-1)[..., 0]

    k_lo, k_hi = (n - 1) // 2, n // 2
    med = 0.5 * (at(k_lo) + at(k_hi))
    # Deviation runs: A_i = med - s[p-1-i] (i < p) and B_j = s[p+j] - med (j < n-p), both
    # ascending, where p = #{s <= med}. Take c = k_hi + 1 smallest deviations: i from A,
    # c - i from B; binary search for the i with A[i-1] <= B[c-i] and B[c-i-1] <= A[i].
    valid = lax.broadcasted_iota(jnp.int32, s.shape, s.ndim - 1) < n[..., None]
    p = jnp.sum((s <= med[..., None]) & valid, axis=-1).astype(jnp.int32)
    n_b = n - p
    inf = jnp.asarray(jnp.inf, x.dtype)

    def dev_a(i):
        return jnp.where((i >= 0) & (i < p), med - at(p - 1 - i), jnp.where(i < 0, -inf, inf))

    def dev_b(j):
        return jnp.where((j >= 0) & (j < n_b), at(p + j) - med, jnp.where(j < 0, -inf, inf))

    c = k_hi + 1

    def halve(_, bounds):
        lo_i, hi_i = bounds
        mid = (lo_i + hi_i) // 2
        more_a = dev_a(mid) < dev_b(c - mid - 1)
        active = lo_i < hi_i
        return jnp.where(active & more_a, mid + 1, lo_i), jnp.where(active & ~more_a, mid, hi_i)

    # A static log2(capacity) + 1 halvings always close the interval.
    i, _ = lax.fori_loop(
        0, int(n_cap).bit_length() + 1, halve, (jnp.maximum(0, c - n_b), jnp.minimum(c, p))
    )
    j = c - i
    a1, b1 = dev_a(i - 1), dev_b(j - 1)
    largest = jnp.maximum(a1, b1)  # the c-th smallest deviation (index k_hi)
    second = jnp.maximum(jnp.minimum(a1, b1), jnp.maximum(dev_a(i - 2), dev_b(j - 2)))
    mad = jnp.where(n % 2 == 1, largest, 0.5 * (largest + second))
    empty = n == 0
    return pct, jnp.where(empty, jnp.nan, med), jnp.where(empty, jnp.nan, mad), n


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=2)
def _step_fields_donated(monitor: Monitor, names: tuple[str, ...], state: MonitorState, obs, mask):
    new_state, report = monitor.step(state, obs, mask=mask)
    return new_state, {n: getattr(report, n) for n in names}


def _argmax_features(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(argmax, max)`` over the last axis (first index on ties). For a few features a chain of
    compares is one elementwise pass; XLA:CPU's variadic argmax reduction is slower."""
    n = x.shape[-1]
    if n > 16:
        return jnp.argmax(x, axis=-1).astype(jnp.int32), jnp.max(x, axis=-1)
    best = x[..., 0]
    idx = jnp.zeros(best.shape, jnp.int32)
    for f in range(1, n):
        better = x[..., f] > best
        best = jnp.where(better, x[..., f], best)
        idx = jnp.where(better, jnp.int32(f), idx)
    return idx, best


def _where_agents(w, a, b):
    return jnp.where(w.reshape(w.shape + (1,) * (a.ndim - 1)), a, b)


def _cusum_update(c: jax.Array, log_lr: jax.Array, cap: float) -> jax.Array:
    """Page's CUSUM in log space, capped: ``min(cap, max(0, c + log_lr))``.

    Private stand-in until ``jaxstats.evidence`` provides the shared one.
    """
    return jnp.clip(c + log_lr, jnp.zeros((), c.dtype), jnp.asarray(cap, c.dtype))


def log_two_sided_tail(z: ArrayLike, *, tail: str = "t4") -> jax.Array:
    """``log P(|T| >= |z|)`` for a null ``T`` with robust (MAD) sigma 1, stable for any ``z``.

    ``"t4"``/``"t2"``: Student-t with 4/2 degrees of freedom scaled so that
    ``1.4826 MAD(T) = 1``, using the closed forms
    ``p4 = c^4 (2 + s) / (2 (1 + s)^2)`` (``s = x / sqrt(4 + x^2)``, ``c^2 = 4 / (4 + x^2)``)
    and ``p2 = 2 / (r (r + x))`` (``r = sqrt(2 + x^2)``), which have no cancellation in the
    tail. ``"normal"``: ``log 2 + log_ndtr(-|z|)``.

    NaN and inf:
      NaN gives NaN; ``|z|`` is clipped at 1e8, so ``±inf`` gives a finite, very negative
      value (about -72 for ``"t4"``, -37 for ``"t2"``).

    Examples:
      >>> import jax.numpy as jnp
      >>> round(float(log_two_sided_tail(jnp.float32(0.0))), 6)
      0.0
    """
    _checks.check_option("log_two_sided_tail", "tail", tail, TAILS)
    z = jnp.asarray(z)
    az = jnp.minimum(jnp.abs(z), _MAX_ABS_SCORE)
    if tail == "normal":
        return math.log(2.0) + jax.scipy.special.log_ndtr(-az)
    if tail == "t4":
        x = az * _T4_ROBUST_SCALE
        q = 4.0 + x * x
        s = x * lax.rsqrt(q)
        c2 = 4.0 / q
        one_s = 1.0 + s
        # One logarithm of the closed form (all factors stay normal floats for |z| <= 1e8).
        return jnp.log(c2 * c2 * (2.0 + s) / (2.0 * one_s * one_s))
    x = az * _T2_ROBUST_SCALE
    r = jnp.sqrt(2.0 + x * x)
    return math.log(2.0) - jnp.log(r) - jnp.log(r + x)


def _check_state(fn: str, state: Any) -> None:
    if not isinstance(state, MonitorState):
        raise TypeError(
            f"{fn}: 'state' must be a MonitorState (from Monitor.init or load_state); "
            f"got {type(state).__name__}."
        )
    shape = tuple(jnp.shape(state.location))
    if len(shape) != 2:
        raise ValueError(
            f"{fn}: the state must have [agents, features] leaves; got location of shape "
            f"{shape}. The monitor steps the whole population at once: do not vmap it over "
            "agents."
        )
    for name in MonitorState._fields:
        leaf = getattr(state, name)
        want = shape if name in _PER_FEATURE_FIELDS else shape[:1]
        if tuple(jnp.shape(leaf)) != want:
            raise ValueError(
                f"{fn}: state field '{name}' has shape {tuple(jnp.shape(leaf))}; expected {want}."
            )


# ----------------------------------------------------------------------------------------
# Save / restore
# ----------------------------------------------------------------------------------------


def save_state(
    path: str | os.PathLike, state: MonitorState, *, monitor: Monitor | None = None
) -> None:
    """Write ``state`` to an ``.npz`` file atomically (temp file in the same folder, then rename).

    The file holds one array per field (exact bits), a format tag and, with ``monitor``, its
    settings as JSON, so :func:`load_state` can refuse a state saved by another configuration.
    No pickle is written or needed to read it back.

    Args:
      path: destination file (used as given; no suffix is added).
      state: a :class:`MonitorState` (concrete arrays, not traced).
      monitor: optional :class:`Monitor` whose settings are stored with the state.

    Raises:
      TypeError: if ``state`` is not a :class:`MonitorState`.
      OSError: if the folder is not writable (no partial file is left behind).
    """
    _check_state("save_state", state)
    arrays = {f"state.{name}": np.asarray(getattr(state, name)) for name in MonitorState._fields}
    arrays["format"] = np.asarray(_FORMAT)
    if monitor is not None:
        arrays["config"] = np.asarray(json.dumps(monitor.config(), sort_keys=True))
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".monitor-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_state(path: str | os.PathLike, *, monitor: Monitor | None = None) -> MonitorState:
    """Read a state written by :func:`save_state` (``allow_pickle=False``), bit for bit.

    Args:
      path: the file.
      monitor: optional :class:`Monitor`; if given and the file stores settings, they must
        match (a state is only meaningful under the configuration that built it).

    Returns:
      The :class:`MonitorState`, on the default device.

    Raises:
      ValueError: if the file is not a saved monitor state, misses a field, or was saved with
        different settings than ``monitor``.
    """
    with np.load(os.fspath(path), allow_pickle=False) as z:
        if "format" not in z.files or str(z["format"]) != _FORMAT:
            raise ValueError(
                f"load_state: {os.fspath(path)!r} is not a saved MonitorState ({_FORMAT})."
            )
        missing = [n for n in MonitorState._fields if f"state.{n}" not in z.files]
        if missing:
            raise ValueError(f"load_state: {os.fspath(path)!r} lacks fields {missing}.")
        if monitor is not None and "config" in z.files:
            saved = json.loads(str(z["config"]))
            now = json.loads(json.dumps(monitor.config(), sort_keys=True))
            if saved != now:
                diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
                raise ValueError(
                    f"load_state: the state was saved with different Monitor settings {diff} "
                    f"(saved {[saved.get(k) for k in diff]}, now {[now.get(k) for k in diff]})."
                )
        state = MonitorState(*(jnp.asarray(z[f"state.{n}"]) for n in MonitorState._fields))
    _check_state("load_state", state)
    return state
