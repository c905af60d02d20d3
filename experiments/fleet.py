"""Synthetic fleet generator with ground truth, for the demo, tests and benchmarks.

A fleet is ``n_agents`` agents observed for ``n_steps`` steps on ``n_features`` metrics.
Each agent belongs to one of ``n_groups`` correlated groups (agents in a group share a latent
load signal); every metric has a diurnal cycle, heavy-tailed (Student-t) noise and a
per-agent log-normal scale. Anomalies of four kinds are injected, with ground truth:

* ``spike``: a few consecutive steps far out on some features;
* ``level``: a lasting level shift from an onset step on;
* ``drift``: a linear drift growing from an onset step;
* ``compromised``: an agent whose behaviour slowly diverges from its peer group (its group
  signal is replaced by its own, and its mean creeps away).

Operational noise (off by default): ``missing_rate`` blanks single observations (NaN), and
``churn_rate`` makes some agents join late or leave early (NaN rows outside their lifetime,
recorded in ``present``). :func:`to_slots` lays a fleet out as fixed-capacity peer-group
blocks for :class:`jaxstats.Monitor` (``n_groups``), padding each group with empty slots.

Everything is numpy and seeded: the same seed gives the same fleet on every machine.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

KINDS = ("spike", "level", "drift", "compromised")


class Fleet(NamedTuple):
    obs: np.ndarray  # [steps, agents, features] float32 observations
    labels: np.ndarray  # [steps, agents] bool: agent anomalous at that step
    kind: np.ndarray  # [agents] int8: -1 normal, else index into KINDS
    onset: np.ndarray  # [agents] int32: first anomalous step (-1 if normal)
    group: np.ndarray  # [agents] int32: correlated group of each agent
    present: np.ndarray  # [steps, agents] bool: agent is part of the fleet at that step
    anomalous_features: np.ndarray  # [agents, features] bool: features the anomaly touches


def make_fleet(
    n_agents: int = 2000,
    n_steps: int = 288,
    n_features: int = 8,
    *,
    n_groups: int = 8,
    anomaly_rate: float = 0.02,
    period: int = 288,
    missing_rate: float = 0.0,
    churn_rate: float = 0.0,
    seed: int = 0,
) -> Fleet:
    """Generate a seeded synthetic fleet (see the module docstring).

    Args:
      n_agents: number of agents.
      n_steps: number of time steps.
      n_features: metrics per agent.
      n_groups: correlated groups.
      anomaly_rate: fraction of agents that receive an anomaly (at least one if > 0).
      period: steps per diurnal cycle (288 = one day of 5-minute steps).
      missing_rate: probability that one observation is missing (NaN).
      churn_rate: fraction of agents that join late or leave early (half each); absent rows
        are NaN and ``present`` is False there (labels too).
      seed: random seed.

    Returns:
      A :class:`Fleet`.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps)
    group = rng.integers(0, n_groups, n_agents).astype(np.int32)
    phase = rng.uniform(0, 2 * np.pi, n_groups)
    # Shared group load: diurnal cycle plus a slow random walk.
    walk = np.cumsum(rng.normal(0, 0.02, (n_steps, n_groups)), axis=0)
    load = 1.0 + 0.5 * np.sin(2 * np.pi * t[:, None] / period + phase[None, :]) + walk
    base = rng.lognormal(0.0, 0.5, (n_agents, n_features)).astype(np.float32)
    sens = rng.uniform(0.5, 1.5, (n_agents, n_features)).astype(np.float32)
    noise = rng.standard_t(df=4, size=(n_steps, n_agents, n_features)).astype(np.float32) * 0.1
    obs = base[None] * (1.0 + sens[None] * (load[:, group, None] - 1.0)) + base[None] * noise

    labels = np.zeros((n_steps, n_agents), bool)
    kind = np.full(n_agents, -1, np.int8)
    onset = np.full(n_agents, -1, np.int32)
    touched = np.zeros((n_agents, n_features), bool)
    n_anom = int(round(anomaly_rate * n_agents))
    if anomaly_rate > 0:
        n_anom = max(n_anom, 1)
    chosen = rng.choice(n_agents, size=min(n_anom, n_agents), replace=False)
    lo = n_steps // 3
    for j, a in enumerate(chosen):
        k = j % len(KINDS)
        kind[a] = k
        start = int(rng.integers(lo, max(lo + 1, n_steps - 8)))
        onset[a] = start
        feats = rng.choice(n_features, size=max(1, n_features // 4), replace=False)
        scale = base[a, feats]
        touched[a, feats] = True
        if KINDS[k] == "spike":
            end = min(n_steps, start + 3)
            obs[start:end, a, feats] += 8.0 * scale
            labels[start:end, a] = True
        elif KINDS[k] == "level":
            obs[start:, a, feats] += 3.0 * scale
            labels[start:, a] = True
        elif KINDS[k] == "drift":
            ramp = np.arange(n_steps - start, dtype=np.float32)[:, None] / 20.0
            obs[start:, a, feats] += ramp * scale
            labels[start:, a] = True
        else:  # compromised: leaves its group's rhythm and slowly creeps away from peers
            own = 1.0 + 0.5 * np.sin(2 * np.pi * t[start:] / (period / 3.0))
            creep = np.arange(n_steps - start, dtype=np.float32) / 40.0
            obs[start:, a, :] = base[a][None] * (own[:, None] + creep[:, None]) + base[a][None] * noise[start:, a]
            labels[start:, a] = True
            touched[a, :] = True
    present = np.ones((n_steps, n_agents), bool)
    if churn_rate > 0:
        normal = np.nonzero(kind < 0)[0]
        n_churn = min(int(round(churn_rate * n_agents)), normal.size)
        movers = rng.choice(normal, size=n_churn, replace=False)
        for j, a in enumerate(movers):
            cut = int(rng.integers(n_steps // 4, 3 * n_steps // 4))
            if j % 2 == 0:
                present[:cut, a] = False  # joins at `cut`
            else:
                present[cut:, a] = False  # leaves at `cut`
        obs[~present] = np.nan
    if missing_rate > 0:
        obs[rng.random(obs.shape) < missing_rate] = np.nan
    return Fleet(obs.astype(np.float32), labels, kind, onset, group, present, touched)


class Slots(NamedTuple):
    obs: np.ndarray  # [steps, slots, features] float32; NaN in empty slots
    labels: np.ndarray  # [steps, slots] bool
    present: np.ndarray  # [steps, slots] bool; False for empty slots
    agent: np.ndarray  # [slots] int64: fleet agent in each slot, -1 for an empty slot
    capacity: int  # slots per group


def to_slots(fleet: Fleet, n_groups: int | None = None) -> Slots:
    """Lay the agents out in ``n_groups`` equal blocks of slots, one block per group
    (``n_groups=1``: every agent in one block, no padding).

    Slot block ``g`` holds the agents of group ``g`` (in agent order) followed by empty slots
    up to the largest group's size, the layout :class:`jaxstats.Monitor` expects for
    ``n_groups`` peer groups.
    """
    g = int(fleet.group.max()) + 1 if n_groups is None else n_groups
    if g == 1:
        members = [np.arange(fleet.group.size)]
    elif g == int(fleet.group.max()) + 1:
        members = [np.nonzero(fleet.group == k)[0] for k in range(g)]
    else:
        raise ValueError(f"to_slots: n_groups must be 1 or the fleet's {int(fleet.group.max()) + 1}; got {g}.")
    cap = max(len(m) for m in members)
    agent = np.full(g * cap, -1, np.int64)
    for k, m in enumerate(members):
        agent[k * cap : k * cap + len(m)] = m
    used = agent >= 0
    steps, _, feats = fleet.obs.shape
    obs = np.full((steps, g * cap, feats), np.nan, np.float32)
    obs[:, used] = fleet.obs[:, agent[used]]
    labels = np.zeros((steps, g * cap), bool)
    labels[:, used] = fleet.labels[:, agent[used]]
    present = np.zeros((steps, g * cap), bool)
    present[:, used] = fleet.present[:, agent[used]]
    return Slots(obs, labels, present, agent, cap)
