r"""Agents across devices and processes: meshes, placement, collective merges and sharded
population statistics.

The agent axis is the one jaxstats shards. Agents are independent, so per-agent work (sketch
updates, evidence) runs on each device's block of agents with no cross-device traffic; only
*population* statistics (ranks, percentiles, median, MAD) and merges of split streams talk
across devices. Everything here is JAX's own distributed runtime (``jax.sharding``,
``jax.shard_map``, ``jax.distributed``); there is no cluster layer of our own.

Layers
------
1. **Meshes and placement.** :func:`agent_mesh` (a 1-D mesh over every device of every
   process, ordered by process so each process owns a contiguous slice of agents),
   :func:`agent_sharding`, :func:`shard_agents` (place every agent-leading leaf of a pytree),
   :func:`pad_agents` (pad to a multiple of the device count, with a ``where`` mask),
   :func:`process_agent_slice`, :func:`from_process_local` and :func:`to_process_local`
   (multi-process: each process holds only its own agents).
2. **Per-agent steps.** :func:`agent_map` wraps a batched per-agent step (e.g. a monitor
   step) into a ``shard_map`` over the agent axis; inside it the step sees its local block of
   agents and calls the ``*_across`` functions below for population statistics.
3. **Collectives inside** ``shard_map`` (``axis_name`` given; with ``axis_name=None`` they
   are the plain single-device computations, so the same step code runs unsharded):
   :func:`merge_across` (merge a sketch state split over devices), :func:`sum_across`
   (compensated totals, e.g. evidence), :func:`logsumexp_across`, and the population
   functions :func:`rankdata_across`, :func:`percentile_of_population_across`,
   :func:`percentileofscore_across`, :func:`quantile_across`, :func:`robust_zscore_across`,
   :func:`population_baseline_across`.
4. **On a mesh** (outside ``shard_map``): :func:`sharded_rankdata`,
   :func:`sharded_percentile_of_population`, :func:`sharded_percentileofscore`,
   :func:`sharded_quantile`, :func:`sharded_robust_zscore`,
   :func:`sharded_population_baseline`: take arrays whose agent axis (axis 0) is sharded
   (or not) on an Auto or Explicit mesh and return what the unsharded call returns, with the
   per-agent outputs sharded like the input.

Why the population functions need this module
---------------------------------------------
A population statistic sorts along the agent axis, which is the sharded one. On CPU the sort
is the native kernel (an FFI custom call) traced without a platform switch, so under both
**Auto** and **Explicit** meshes ``jaxstats.rankdata(x)`` on an agent-sharded ``x`` runs and
returns the unsharded answer, but the SPMD partitioner treats the custom call as opaque: it
all-gathers the operand, every device sorts everything and the outputs come back
*replicated* (the same happens for sorts along a *local* axis, e.g. per-agent ranks of an
``[agents, obs]`` array sharded on agents: run those inside :func:`agent_map`, where the
kernel sees only the local block). Inside ``shard_map`` the kernel runs per device on local
data. (Earlier versions lowered the kernel inside ``lax.platform_dependent``, whose XLA
branch refused an Explicit-sharded sort axis and whose branches disagreed on varying-axis
types under ``check_vma=True``; the shard_maps here still pass ``check_vma=False``.)

Strategies for population statistics (``strategy=``)
-----------------------------------------------------
* ``"gather"`` (exact): all-gather one scalar per agent per feature (``n * F`` values, the
  only cross-device traffic), run the *same* single-device function on every device
  (replicated compute: O(n) radix sort on CPU, XLA sort elsewhere) and keep each device's own
  slice of the per-agent outputs. Results are those of the unsharded call, bit for bit. Memory
  ``~4 n F`` itemsize per device; compute does not shrink with the device count.
* ``"select"`` (exact median / MAD / z-scores / quantiles; approximate percentiles): a
  distributed radix select on the order-preserving integer image of the keys. Each pass
  histograms one 16-bit digit of the local keys (O(n/d) per device), ``psum``-s the
  ``2**16``-bin histogram (256 KiB per feature and target) and narrows the target order
  statistic to one digit; float32 needs 2 passes (float64: 4). The median takes 2 targets,
  the MAD 2 more passes on ``|x - median|``. Percentiles come from the first pass's merged
  histogram (a mergeable sketch) plus each bucket's smallest and largest key (``pmin`` /
  ``pmax``), interpolating linearly inside the agent's bucket: the error is below
  ``100 * H / n`` percentage points, ``H`` being the number of agents that share the agent's
  top 16 key bits (for float32: sign, exponent and 7 mantissa bits, a relative value window
  of ``2**-7``); agents alone in their bucket, and buckets holding a single distinct value
  (ties, e.g. integer-valued scores), are exact. Memory and
  compute per device are O(n/d) plus O(2**16) per target; populations up to ``2**32 - 1``
  agents (uint32 histogram counts).
* ``"auto"`` (default): ``"gather"`` while the gathered operand is at most
  :data:`GATHER_LIMIT_BYTES`, else ``"select"``; quantiles and robust z-scores, which
  ``"select"`` computes exactly, switch from :data:`SELECT_MIN_AGENTS` agents. ``rankdata``
  and ``percentileofscore`` are always gathered (exact ranks need every value).

Measured (``experiments/bench_scaling.py``; 8 virtual devices on 2 shared CPU cores, one
score per agent): at 10^5 agents on one device gather takes 2.8 ms and select 7.4 ms; at
10^6, 81 ms and 46 ms. Gather's cost grows with the device count (every device sorts all
n: 564 ms on 8 virtual devices at 10^6) while select's per-device work is O(n / d) (58 ms);
on real parallel devices select's time falls with d. So: exact percentiles of moderate
fleets by gather; median / MAD / z-scores / quantiles of large fleets by select; very large
fleets (gathered scores past the memory limit) by select, with bounded percentile error.

Merges
------
:func:`merge_across` merges sketch states (one stream split over devices) with a butterfly
(recursive doubling: ``log2 d`` rounds of one state-sized ``ppermute`` and one merge), an
all-gather + :func:`jaxstats.sketch.fold`, or one ``psum`` / ``pmin`` / ``pmax`` per leaf for
states that declare their merge additive (``reduce=``). Out-of-core fleets (states in
``numpy.memmap`` files, processed in agent blocks) are in :mod:`jaxstats.ooc`.

NaN and inf follow the single-device functions everywhere (``nan_policy`` as documented
there); ``-0.0`` and ``+0.0`` are ties, so under ``"select"`` a median equal to zero comes back
as ``+0.0``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _checks
from ._typing import ArrayLike
from .rank import (
    NAN_POLICIES,
    PERCENTILE_KINDS,
    QUANTILE_METHODS,
    RANK_METHODS,
    _percent_from_counts,
    _raise_on_nan,
    _virtual_index,
    percentile_of_population,
    percentileofscore,
    quantile,
    rankdata,
)
from .robust import (
    MAD_NORMAL_SCALE,
    MEANAD_NORMAL_SCALE,
    BaselineResult,
    population_baseline,
    robust_zscore,
)
from ._numerics import fast_two_sum, two_sum
from .sketch._base import Sketch, fold

__all__ = [
    "GATHER_LIMIT_BYTES",
    "REDUCTIONS",
    "SELECT_MIN_AGENTS",
    "STRATEGIES",
    "agent_map",
    "agent_mesh",
    "agent_sharding",
    "from_process_local",
    "logsumexp_across",
    "merge_across",
    "pad_agents",
    "percentile_of_population_across",
    "percentileofscore_across",
    "population_baseline_across",
    "process_agent_slice",
    "quantile_across",
    "rankdata_across",
    "robust_zscore_across",
    "shard_agents",
    "sharded_percentile_of_population",
    "sharded_percentileofscore",
    "sharded_population_baseline",
    "sharded_quantile",
    "sharded_rankdata",
    "sharded_robust_zscore",
    "sum_across",
    "to_process_local",
]

#: Accepted values of ``strategy=`` for population statistics.
STRATEGIES = ("auto", "gather", "select")
#: Per-leaf reductions accepted by :func:`merge_across` ``reduce=``.
REDUCTIONS = ("sum", "min", "max")
#: ``strategy="auto"`` gathers while ``n_agents * features * itemsize`` is at most this
#: (256 MiB: ~6.7e7 float32 scores; the gathered copy plus the sort's buffers take ~4x that
#: per device). Above it, the distributed radix select keeps memory at O(n / devices).
GATHER_LIMIT_BYTES = 1 << 28
#: ``strategy="auto"`` uses the radix select from this many agents in the functions it
#: computes exactly (quantiles, robust z-scores): measured faster than gathering from
#: ~3e5 agents on one CPU device, and at any size on several devices (module docstring).
SELECT_MIN_AGENTS = 1 << 18

AxisName = Any  # str or tuple of str, as jax.lax collectives accept
PyTree = Any

_DIGIT_BITS = 16
_N_BINS = 1 << _DIGIT_BITS


# ============================================================================================
# 1. Meshes and placement
# ============================================================================================


def agent_mesh(
    devices: Sequence[Any] | None = None, *, axis_name: str = "agents", explicit: bool = False
) -> Mesh:
    """A 1-D mesh over the agent axis: every device (of every process), any device count.

    Devices are ordered by ``(process_index, id)``, so under ``jax.distributed`` each process
    owns one contiguous slice of the agents (see :func:`process_agent_slice`).

    Args:
      devices: devices to use; default ``jax.devices()`` (all processes' devices).
      axis_name: name of the mesh axis (default ``"agents"``).
      explicit: make the axis ``AxisType.Explicit`` (sharding in types: operations that would
        silently gather, such as ``jnp.sort`` along agents, raise instead). Default ``False``
        (``AxisType.Auto``: the partitioner decides, and may gather).

    Returns:
      A ``jax.sharding.Mesh`` with one axis ``axis_name``.

    Raises:
      ValueError: for an empty device list or a non-string ``axis_name``.

    Examples:
      >>> mesh = agent_mesh()
      >>> mesh.axis_names
      ('agents',)
    """
    devs = list(jax.devices()) if devices is None else list(devices)
    if not devs:
        raise ValueError("agent_mesh: 'devices' is empty; pass at least one device.")
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"agent_mesh: 'axis_name' must be a non-empty str; got {axis_name!r}.")
    devs.sort(key=lambda d: (d.process_index, d.id))
    kind = AxisType.Explicit if explicit else AxisType.Auto
    return Mesh(np.array(devs, dtype=object), (axis_name,), axis_types=(kind,))


def _mesh_axis(fn: str, mesh: Mesh, axis_name: AxisName | None) -> AxisName:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn}: 'mesh' must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(
                f"{fn}: the mesh has axes {mesh.axis_names}; pass axis_name= to say which one "
                "holds the agents."
            )
        return mesh.axis_names[0]
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    for n in names:
        if n not in mesh.axis_names:
            raise ValueError(f"{fn}: axis {n!r} is not in the mesh axes {mesh.axis_names}.")
    return axis_name


def _axis_devices(mesh: Mesh, axis: AxisName) -> int:
    names = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([mesh.shape[n] for n in names]))


def agent_sharding(mesh: Mesh, ndim: int, *, axis_name: AxisName | None = None) -> NamedSharding:
    """``NamedSharding`` that splits axis 0 (agents) of a rank-``ndim`` array over the mesh.

    Args:
      mesh: the mesh (e.g. from :func:`agent_mesh`).
      ndim: rank of the array; ``0`` gives a replicated sharding.
      axis_name: the mesh axis holding the agents (default: the mesh's only axis).

    Returns:
      ``NamedSharding(mesh, P(axis_name, None, ...))`` (``P()`` for ``ndim=0``).

    Raises:
      TypeError: if ``mesh`` is not a Mesh or ``ndim`` not an int.
      ValueError: for a negative ``ndim`` or an unknown axis.

    Examples:
      >>> agent_sharding(agent_mesh(), 2).spec == jax.sharding.PartitionSpec("agents", None)
      True
    """
    axis = _mesh_axis("agent_sharding", mesh, axis_name)
    if isinstance(ndim, bool) or not isinstance(ndim, (int, np.integer)):
        raise TypeError(f"agent_sharding: 'ndim' must be an int; got {ndim!r}.")
    if ndim < 0:
        raise ValueError(f"agent_sharding: 'ndim' must be >= 0; got {ndim}.")
    if ndim == 0:
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(axis, *([None] * (int(ndim) - 1))))


def _leading_count(fn: str, tree: PyTree, n_agents: int | None) -> int:
    """The agent count: given, or the single leading size of the leaves with ndim >= 1."""
    if n_agents is not None:
        if not _is_int(n_agents) or n_agents < 0:
            raise ValueError(f"{fn}: 'n_agents' must be a non-negative int; got {n_agents!r}.")
        return int(n_agents)
    leaves = jax.tree_util.tree_leaves(tree)
    sizes = {int(np.shape(leaf)[0]) for leaf in leaves if np.ndim(leaf) >= 1}
    if not sizes:
        raise ValueError(f"{fn}: no leaf has an agents axis (every leaf is a scalar).")
    if len(sizes) > 1:
        raise ValueError(
            f"{fn}: the leaves' leading sizes disagree ({sorted(sizes)}), so the agent count is "
            "ambiguous; pass n_agents= (leaves with that leading size are sharded, the others "
            "replicated)."
        )
    return sizes.pop()


def _check_divisible(fn: str, n: int, d: int) -> None:
    if n % d:
        raise ValueError(
            f"{fn}: {n} agents do not split evenly over {d} devices. Pad the agent axis to a "
            f"multiple of {d} with jaxstats.shard.pad_agents(tree, {d}) (padding "
            f"{(-n) % d} agents) and mask them: pass the returned 'where' to sketch updates, and "
            "pad population scores with NaN and use nan_policy='omit'."
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_agent_leaf(leaf: Any, n: int) -> bool:
    return np.ndim(leaf) >= 1 and int(np.shape(leaf)[0]) == n


def _place(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """Put one leaf on ``sharding`` (traced: reshard under Explicit, constrain under Auto)."""
    if isinstance(leaf, jax.core.Tracer):
        mesh = sharding.mesh
        if any(t == AxisType.Explicit for t in mesh.axis_types):
            return jax.reshard(leaf, sharding)
        return lax.with_sharding_constraint(leaf, sharding)
    if isinstance(leaf, jax.Array):
        return jax.device_put(leaf, sharding)
    arr = np.asarray(leaf)
    # Works in multi-process programs too: every process reads only its own shards.
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def shard_agents(
    tree: PyTree, mesh: Mesh, *, n_agents: int | None = None, axis_name: AxisName | None = None
) -> PyTree:
    """Place every agent-leading leaf of ``tree`` split along agents; replicate the others.

    **Rule:** a leaf is per-agent when it has ``ndim >= 1`` and its leading size equals the
    agent count (``n_agents``, or the single leading size shared by all non-scalar leaves); it
    is split along axis 0 over the mesh axis. Every other leaf (scalars, tables of another
    length) is replicated. Works for states, observations and masks alike, on host (numpy) or
    device arrays, and inside ``jit`` (resharding / sharding constraints).

    Args:
      tree: a pytree of arrays (e.g. a batched sketch state ``[agents, ...]``).
      mesh: the mesh (e.g. :func:`agent_mesh`).
      n_agents: the agent count; needed only when leading sizes differ between leaves.
      axis_name: the mesh axis holding the agents (default: the mesh's only axis).

    Returns:
      The same pytree of ``jax.Array`` values, placed.

    Raises:
      ValueError: if the agent count is ambiguous or not divisible by the device count (the
        message says how to pad and mask).

    Examples:
      >>> import numpy as np
      >>> placed = shard_agents({"x": np.zeros((8, 3)), "t": np.float32(1)}, agent_mesh())
      >>> tuple(placed["x"].sharding.spec), tuple(placed["t"].sharding.spec)
      (('agents', None), ())
    """
    fn = "shard_agents"
    axis = _mesh_axis(fn, mesh, axis_name)
    n = _leading_count(fn, tree, n_agents)
    _check_divisible(fn, n, _axis_devices(mesh, axis))

    def put(leaf):
        if _is_agent_leaf(leaf, n):
            return _place(leaf, agent_sharding(mesh, np.ndim(leaf), axis_name=axis))
        return _place(leaf, NamedSharding(mesh, P()))

    return jax.tree_util.tree_map(put, tree)


def pad_agents(
    tree: PyTree, multiple: int, *, n_agents: int | None = None, fill: Any = 0
) -> tuple[PyTree, jax.Array]:
    """Pad the agent axis of every agent-leading leaf up to a multiple of ``multiple``.

    The fix for fleets whose size does not split evenly over the devices: pad, then mask. The
    returned ``where`` is ``True`` for real agents; pass it to sketch updates (``where=``)
    and pad population scores with ``NaN`` (``fill=jnp.nan``) under ``nan_policy="omit"``.

    Args:
      tree: pytree; per-agent leaves are detected as in :func:`shard_agents`.
      multiple: pad the agent count up to a multiple of this (e.g. the device count).
      n_agents: the agent count, when leading sizes differ between leaves.
      fill: value of the padded entries (cast to each leaf's dtype).

    Returns:
      ``(padded_tree, where)`` with ``where`` a ``[padded_agents]`` bool array.

    Raises:
      ValueError: for ``multiple < 1`` or an ambiguous agent count.

    Examples:
      >>> import jax.numpy as jnp
      >>> padded, where = pad_agents(jnp.arange(3.0), 4, fill=jnp.nan)
      >>> padded, where
      (Array([ 0.,  1.,  2., nan], dtype=float32), Array([ True,  True,  True, False], dtype=bool))
    """
    fn = "pad_agents"
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise ValueError(f"{fn}: 'multiple' must be a positive int; got {multiple!r}.")
    n = _leading_count(fn, tree, n_agents)
    extra = (-n) % int(multiple)

    def pad(leaf):
        if not _is_agent_leaf(leaf, n) or extra == 0:
            return leaf
        leaf = jnp.asarray(leaf)
        block = jnp.full((extra,) + leaf.shape[1:], fill, dtype=leaf.dtype)
        return jnp.concatenate([leaf, block], axis=0)

    where = jnp.arange(n + extra) < n
    return jax.tree_util.tree_map(pad, tree), where


def process_agent_slice(
    n_agents: int, mesh: Mesh, *, axis_name: AxisName | None = None
) -> slice:
    """The contiguous agents this process owns on ``mesh`` (multi-process programs).

    With a mesh from :func:`agent_mesh` (devices ordered by process), process ``p`` owns
    ``slice(p * n / P, (p + 1) * n / P)`` when every process has the same number of devices.

    Args:
      n_agents: global agent count (divisible by the mesh axis size).
      mesh: the mesh.
      axis_name: the agents axis (default: the mesh's only axis).

    Returns:
      A Python ``slice`` of global agent indices.

    Raises:
      ValueError: if ``n_agents`` does not split evenly, or this process's devices do not hold
        one contiguous block of the agents.

    Examples:
      >>> process_agent_slice(8, agent_mesh())
      slice(0, 8, None)
    """
    fn = "process_agent_slice"
    axis = _mesh_axis(fn, mesh, axis_name)
    _check_divisible(fn, int(n_agents), _axis_devices(mesh, axis))
    sharding = agent_sharding(mesh, 1, axis_name=axis)
    idx = sharding.addressable_devices_indices_map((int(n_agents),))
    bounds = sorted(
        (s[0].start or 0, s[0].stop if s[0].stop is not None else n_agents) for s in idx.values()
    )
    start, stop = bounds[0][0], bounds[0][1]
    for lo, hi in bounds[1:]:
        if lo == stop:
            stop = hi
        elif lo < stop:  # replicated over another mesh axis: same block again
            stop = max(stop, hi)
        else:
            raise ValueError(
                f"{fn}: this process's devices hold non-contiguous agent blocks {bounds}; build "
                "the mesh with agent_mesh() (devices ordered by process)."
            )
    return slice(int(start), int(stop))


def from_process_local(
    tree: PyTree,
    mesh: Mesh,
    *,
    n_agents: int | None = None,
    axis_name: AxisName | None = None,
) -> PyTree:
    """Global agent-sharded arrays from each process's own block of agents.

    Every process calls this with *its* agents (``process_agent_slice``): per-agent leaves
    (leading size = the local agent count) become global arrays split along agents; other
    leaves must be equal on every process and are replicated. No process ever holds the
    whole fleet. In a single-process program this equals :func:`shard_agents`.

    Args:
      tree: pytree of this process's host (numpy) or device arrays.
      mesh: the global mesh (:func:`agent_mesh`).
      n_agents: the *local* agent count when leading sizes differ between leaves.
      axis_name: the agents axis (default: the mesh's only axis).

    Returns:
      The pytree of global ``jax.Array`` values.

    Raises:
      ValueError: if the local agent count is ambiguous or does not split over the local
        devices.

    Examples:
      >>> import numpy as np
      >>> from_process_local(np.arange(4.0), agent_mesh()).shape
      (4,)
    """
    fn = "from_process_local"
    axis = _mesh_axis(fn, mesh, axis_name)
    n_local = _leading_count(fn, tree, n_agents)
    procs = jax.process_count()
    d = _axis_devices(mesh, axis)
    _check_divisible(fn, n_local * procs, d)

    def put(leaf):
        if _is_agent_leaf(leaf, n_local):
            arr = np.asarray(leaf)
            sharding = agent_sharding(mesh, arr.ndim, axis_name=axis)
            shape = (n_local * procs,) + arr.shape[1:]
            return jax.make_array_from_process_local_data(sharding, arr, shape)
        arr = np.asarray(leaf)
        return jax.make_array_from_process_local_data(NamedSharding(mesh, P()), arr, arr.shape)

    return jax.tree_util.tree_map(put, tree)


def to_process_local(tree: PyTree) -> PyTree:
    """This process's block of every agent-sharded leaf, as numpy (the inverse of
    :func:`from_process_local`); replicated leaves come back whole.

    Args:
      tree: pytree of global ``jax.Array`` values.

    Returns:
      The pytree of numpy arrays (the addressable shards, in agent order, deduplicated).

    Examples:
      >>> import numpy as np
      >>> to_process_local(from_process_local(np.arange(4, dtype=np.float32), agent_mesh()))
      array([0., 1., 2., 3.], dtype=float32)
    """

    def get(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_replicated or leaf.ndim == 0:
            return np.asarray(leaf)
        blocks = {}
        for s in leaf.addressable_shards:
            start = s.index[0].start or 0
            if start not in blocks:
                blocks[start] = np.asarray(s.data)
        return np.concatenate([blocks[k] for k in sorted(blocks)], axis=0)

    return jax.tree_util.tree_map(get, tree)


# ============================================================================================
# 2. Per-agent steps on a mesh
# ============================================================================================


def agent_map(
    fn: Callable[..., Any],
    mesh: Mesh,
    *,
    axis_name: AxisName | None = None,
    n_agents: int | None = None,
    out_specs: Any = None,
) -> Callable[..., Any]:
    """Run a batched per-agent step on each device's block of agents (a ``shard_map``).

    ``fn(*args)`` is written for a block of agents: every per-agent leaf has a leading agents
    axis (the local block inside the map). Per-agent work stays on its device; population
    statistics inside ``fn`` use the ``*_across`` functions with the mesh axis name (write
    ``fn`` with an ``axis_name`` argument defaulting to ``None`` and it runs unsharded too).
    The usual pattern, with the caller owning ``jit`` and donation::

        step = jax.jit(agent_map(functools.partial(my_step, axis_name="agents"), mesh),
                       donate_argnums=0)
        state, out = step(state, obs)

    **Placement rule** (as :func:`shard_agents`): argument leaves with ``ndim >= 1`` and
    leading size equal to the agent count are split along agents, others replicated. Output
    leaves whose leading size equals the *local* agent count are per-agent (concatenated along
    agents); all other outputs must be replicated (e.g. results of ``psum``). Pass
    ``out_specs`` to override. Inputs are resharded as needed on Auto and Explicit meshes.
    Nothing checks that an output declared replicated really is (``check_vma=False``, below):
    reduce per-device values with a collective (``sum_across``, ``merge_across``, ...) before
    returning them, or the result is device 0's value.

    The returned function is jitted (an un-jitted ``shard_map`` would run op by op); wrap it
    in your own ``jax.jit`` to donate buffers. The map runs with ``check_vma=False`` (see the
    module docstring: the native sort kernel does not carry the varying-axes type).

    Args:
      fn: the step, ``fn(*args) -> pytree``.
      mesh: the mesh.
      axis_name: the agents axis (default: the mesh's only axis).
      n_agents: global agent count, when the argument leaves' leading sizes differ.
      out_specs: optional ``PartitionSpec`` pytree (prefix) for the outputs.

    Returns:
      A function of the same arguments returning global arrays.

    Raises:
      ValueError: (when called) if the agent count is ambiguous or does not split evenly.

    Examples:
      >>> import jax.numpy as jnp
      >>> step = agent_map(lambda s, x: (s + x, sum_across(x, "agents")), agent_mesh())
      >>> step(jnp.zeros(4), jnp.ones(4))
      (Array([1., 1., 1., 1.], dtype=float32), Array(4., dtype=float32))
    """
    axis = _mesh_axis("agent_map", mesh, axis_name)
    d = _axis_devices(mesh, axis)

    @functools.wraps(fn)
    def wrapped(*args):
        n = _leading_count("agent_map", args, n_agents)
        _check_divisible("agent_map", n, d)
        in_specs = jax.tree_util.tree_map(
            lambda leaf: P(axis) if _is_agent_leaf(leaf, n) else P(), args
        )
        placed = jax.tree_util.tree_map(
            lambda leaf, spec: _place(leaf, NamedSharding(mesh, spec)), args, in_specs
        )
        specs = out_specs
        if specs is None:
            probe = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(), check_vma=False)
            local = jax.eval_shape(probe, *placed)
            m = n // d
            specs = jax.tree_util.tree_map(
                lambda s: P(axis) if len(s.shape) >= 1 and s.shape[0] == m else P(), local
            )
        mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=specs, check_vma=False)
        return mapped(*placed)

    # Jitted here because an un-jitted shard_map runs op by op; under the caller's jit (e.g.
    # with donation) this inner jit is inlined.
    return jax.jit(wrapped)


# ============================================================================================
# 3. Collectives inside shard_map: merges and totals
# ============================================================================================


def _psum_saturating(x: jax.Array, axis_name: AxisName) -> jax.Array:
    """``psum`` of unsigned counters that saturates at the dtype's max instead of wrapping.

    The wrapped integer sum is exact modulo ``2**bits``; a float sum of the same counters
    (relative error ~ devices * 2**-24) tells how many times it wrapped.
    """
    wrapped = lax.psum(x, axis_name)
    approx = lax.psum(x.astype(jnp.float32), axis_name)
    modulus = float(2 ** (8 * x.dtype.itemsize))
    wraps = jnp.round((approx - wrapped.astype(jnp.float32)) / modulus)
    top = jnp.array(np.iinfo(x.dtype).max, x.dtype)
    return jnp.where(wraps > 0.5, top, wrapped)


def _collective(op: str, leaf: jax.Array, axis_name: AxisName) -> jax.Array:
    leaf = jnp.asarray(leaf)
    if op == "sum":
        if jnp.issubdtype(leaf.dtype, jnp.unsignedinteger):
            return _psum_saturating(leaf, axis_name)
        return lax.psum(leaf, axis_name)
    if op == "min":
        return lax.pmin(leaf, axis_name)
    return lax.pmax(leaf, axis_name)


def _batched(sketch: Sketch, batch_dims: int) -> Sketch:
    merge = sketch.merge
    for _ in range(batch_dims):
        merge = jax.vmap(merge)
    return Sketch(sketch.init, sketch.update, merge, sketch.query)


def merge_across(
    sketch: Sketch,
    state: PyTree,
    axis_name: AxisName | None,
    *,
    reduce: Any = None,
    batch_dims: int = 0,
    schedule: str = "auto",
) -> PyTree:
    """Merge the states of one stream split across devices; call inside ``shard_map``.

    Every device holds the state of its part of the stream(s); all devices get the merged
    state (replicated, bit-identical on every device). Two ways, chosen explicitly by the
    caller (a sketch's merge cannot be inspected, and guessing additivity would be silently
    wrong for, e.g., decayed counts):

    * ``reduce=None`` (default, any sketch): a tree of ``sketch.merge`` calls in device order
      (devices are the stream's segments in time order, which decayed sketches need).
      ``schedule="butterfly"`` (the ``"auto"`` choice when the axis size is a power of 2):
      recursive doubling with ``ppermute``: in round ``k`` each device swaps its state with
      the device ``2**k`` away and merges (lower block first), so after ``log2 d`` rounds
      every device holds the merge of all: ``log2 d`` messages of one state and ``log2 d``
      merges per device. ``schedule="gather"`` (any axis size, tuple axes): ``all_gather``
      the ``d`` states and :func:`fold` them on every device (``d - 1`` merges per device).
    * ``reduce="sum"`` or a pytree (prefix of the state) of ``"sum"`` / ``"min"`` /
      ``"max"``: one ``psum`` / ``pmin`` / ``pmax`` per leaf, valid when ``merge`` is exactly
      that leafwise (undecayed histograms and counts; e.g. ``DDSketchState(counts="sum",
      min="min", max="max")``). Unsigned-integer sums saturate at the dtype's max, as the
      sketches' own merges do.

    Args:
      sketch: the :class:`~jaxstats.sketch.Sketch` of ``state``.
      state: this device's state (leaves may carry ``batch_dims`` leading batch axes, e.g.
        ``[agents, ...]``).
      axis_name: the mesh axis (or tuple of axes) the stream is split over; ``None`` returns
        ``state`` unchanged (a single part).
      reduce: ``None``, ``"sum"``, or a pytree of reductions as above.
      batch_dims: leading batch axes of every leaf, merged elementwise (``vmap``-ed merge).
      schedule: ``"auto"``, ``"butterfly"`` or ``"gather"`` (for ``reduce=None``).

    Returns:
      The merged state, replicated over ``axis_name``, with the structure of ``state``.

    Raises:
      ValueError: for an unknown reduction or schedule, a ``reduce`` tree that does not
        match the state, or ``schedule="butterfly"`` on an axis whose size is not a power of 2.
      TypeError: if ``sketch`` is not a Sketch.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jax.sharding import PartitionSpec as P
      >>> from jaxstats import sketch
      >>> sk, mesh = sketch.moments(), agent_mesh()
      >>> def part(x):  # each device folds its slice of one stream, then they merge
      ...     return merge_across(sk, sketch.from_batch(sk, x), "agents")
      >>> merged = jax.jit(jax.shard_map(part, mesh=mesh, in_specs=P("agents"), out_specs=P(),
      ...                                check_vma=False))(jnp.arange(8.0))
      >>> sk.query(merged).mean
      Array(3.5, dtype=float32)
    """
    fn = "merge_across"
    if not isinstance(sketch, Sketch):
        raise TypeError(
            f"{fn}: 'sketch' must be a jaxstats.sketch.Sketch; got {type(sketch).__name__}."
        )
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or batch_dims < 0:
        raise ValueError(f"{fn}: 'batch_dims' must be a non-negative int; got {batch_dims!r}.")
    if reduce is not None:
        for op in jax.tree_util.tree_leaves(reduce):
            _checks.check_option(fn, "reduce", op, REDUCTIONS)
    _checks.check_option(fn, "schedule", schedule, ("auto", "butterfly", "gather"))
    if axis_name is None:
        return state
    if reduce is None:
        sk = _batched(sketch, batch_dims)
        d = _nglobal(axis_name, 1)
        pow2 = d & (d - 1) == 0
        if schedule == "butterfly" and (not pow2 or isinstance(axis_name, tuple)):
            raise ValueError(
                f"{fn}: schedule='butterfly' needs one mesh axis whose size is a power of 2; "
                f"got {axis_name!r} of size {d}. Use schedule='gather' (any size)."
            )
        if schedule == "gather" or not pow2 or isinstance(axis_name, tuple):
            gathered = lax.all_gather(state, axis_name, axis=0, tiled=False)
            return fold(sk, gathered, axis=0)
        return _butterfly(sk.merge, state, axis_name, d)
    if isinstance(reduce, str):
        return jax.tree_util.tree_map(lambda leaf: _collective(reduce, leaf, axis_name), state)
    try:
        return jax.tree_util.tree_map(
            lambda op, sub: jax.tree_util.tree_map(
                lambda leaf: _collective(op, leaf, axis_name), sub
            ),
            reduce,
            state,
        )
    except ValueError as e:
        raise ValueError(
            f"{fn}: 'reduce' must be 'sum' or a prefix pytree of the state with one of "
            f"{REDUCTIONS} per subtree; it does not match the state's structure ({e})."
        ) from None


def _butterfly(merge, state, axis_name, d):
    """Recursive-doubling all-reduce with an ordered merge (``d`` a power of 2).

    Round ``k`` pairs device ``i`` with ``i ^ 2**k``; both compute ``merge(lower, upper)``
    of the same two states (the lower device index's block first), so every device ends with
    the same bits: the merge of all ``d`` states in device order, as a balanced tree.
    """
    idx = lax.axis_index(axis_name)
    k = 1
    while k < d:  # static: log2(d) rounds
        perm = [(i, i ^ k) for i in range(d)]
        other = lax.ppermute(state, axis_name, perm)
        lower = (idx & k) == 0
        lo = jax.tree_util.tree_map(lambda a, b: jnp.where(lower, a, b), state, other)
        hi = jax.tree_util.tree_map(lambda a, b: jnp.where(lower, b, a), state, other)
        state = merge(lo, hi)
        k *= 2
    return state


def _dw_sum(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """Compensated (double-word) sum along ``axis`` as a balanced tree: ``(hi, lo)``.

    Each level adds neighbours with an error-free ``two_sum`` and carries the rounding errors
    in a second word; the result has about twice the working precision.
    """
    s = jnp.moveaxis(x, axis, 0)
    e = jnp.zeros_like(s)
    n = s.shape[0]
    if n == 0:
        z = jnp.zeros(s.shape[1:], s.dtype)
        return z, z
    while n > 1:  # static: log2(n) levels
        if n % 2:
            s = jnp.concatenate([s, jnp.zeros_like(s[:1])], axis=0)
            e = jnp.concatenate([e, jnp.zeros_like(e[:1])], axis=0)
            n += 1
        hi, err = two_sum(s[0::2], s[1::2])
        err = jnp.where(jnp.isfinite(hi), err, jnp.zeros_like(err))  # inf/NaN: no error word
        e = e[0::2] + e[1::2] + err
        s = hi
        n //= 2
    return fast_two_sum(s[0], e[0])


def sum_across(x: ArrayLike, axis_name: AxisName | None, *, axis: int = 0) -> jax.Array:
    """Compensated total over a sharded agent axis (e.g. the fleet's total log-evidence).

    Each device sums its block as a double word (two-sum tree, ~2x working precision); the
    ``d`` partial double words are all-gathered and summed the same way in device order, so
    every device and every process gets the same, nearly correctly rounded total, whatever
    the device count (float32: relative error ~1e-14 of the sum of magnitudes).

    Args:
      x: this device's block, agents on ``axis``.
      axis_name: the mesh axis the agents are split over; ``None`` for an unsharded sum.
      axis: static axis of ``x`` to sum (default 0).

    Returns:
      The total, ``x``'s shape without ``axis``, float dtype (replicated).

    Raises:
      TypeError: for non-real ``x``; ValueError: for a bad ``axis``.

    NaN and inf:
      A NaN gives NaN; infinities give ``±inf`` (or NaN for ``inf - inf``).

    Examples:
      >>> import jax.numpy as jnp
      >>> sum_across(jnp.array([1e8, 1.0, -1e8]), None)
      Array(1., dtype=float32)
    """
    fn = "sum_across"
    xf = _checks.as_float_array(fn, "x", x)
    axis = _checks.check_axis(fn, "axis", axis, xf.ndim)
    hi, lo = _dw_sum(xf, axis)
    if axis_name is not None:
        parts = lax.all_gather(jnp.stack([hi, lo]), axis_name, axis=0, tiled=True)  # [2d, ...]
        hi, lo = _dw_sum(parts, 0)
    return _dw_value(hi, lo)


def _dw_value(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """``hi + lo``; an infinite ``hi`` is the answer (its error word is NaN by construction)."""
    return jnp.where(jnp.isfinite(hi), hi + lo, hi)


def logsumexp_across(x: ArrayLike, axis_name: AxisName | None, *, axis: int = 0) -> jax.Array:
    """``log(sum(exp(x)))`` over a sharded agent axis, in log space (never ``exp`` then add).

    The shift is the global max (``pmax``); the scaled terms are summed with
    :func:`sum_across`.

    Args:
      x: this device's block of log-values, agents on ``axis``.
      axis_name: mesh axis, or ``None`` for the unsharded computation.
      axis: static axis to reduce.

    Returns:
      The log-sum-exp, ``x``'s shape without ``axis``, float dtype (replicated).

    Raises:
      TypeError, ValueError: as :func:`sum_across`.

    NaN and inf:
      All ``-inf`` gives ``-inf``; a NaN gives NaN; ``+inf`` (invalid log-evidence) gives NaN
      or ``+inf``.

    Examples:
      >>> import jax.numpy as jnp
      >>> logsumexp_across(jnp.log(jnp.array([1.0, 3.0])), None)
      Array(1.3862944, dtype=float32)
    """
    fn = "logsumexp_across"
    xf = _checks.as_float_array(fn, "x", x)
    axis = _checks.check_axis(fn, "axis", axis, xf.ndim)
    m = jnp.max(xf, axis=axis)
    if axis_name is not None:
        m = lax.pmax(m, axis_name)
    shift = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
    s = sum_across(jnp.exp(xf - jnp.expand_dims(shift, axis)), axis_name, axis=axis)
    return shift + jnp.log(s)


# ============================================================================================
# 4. Population statistics inside shard_map
# ============================================================================================


def _nglobal(axis_name: AxisName | None, m: int) -> int:
    if axis_name is None:
        return m
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    return m * int(np.prod([lax.axis_size(n) for n in names]))


def _gather(x: jax.Array, axis_name: AxisName | None) -> jax.Array:
    if axis_name is None:
        return x
    return lax.all_gather(x, axis_name, axis=0, tiled=True)


def _own(full: jax.Array, axis_name: AxisName | None, m: int) -> jax.Array:
    """This device's block of a gathered per-agent array."""
    if axis_name is None:
        return full
    i = lax.axis_index(axis_name)
    return lax.dynamic_slice_in_dim(full, i * m, m, axis=0)


def _choose_strategy(fn: str, strategy: str, n: int, x: Any, exact_select: bool) -> str:
    """``"auto"``: gather below the memory limit, except that functions which ``"select"``
    computes exactly (quantiles, robust z-scores) switch to it from :data:`SELECT_MIN_AGENTS`
    (measured faster there: see the module docstring)."""
    _checks.check_option(fn, "strategy", strategy, STRATEGIES)
    if strategy != "auto":
        return strategy
    per_agent = int(np.prod(x.shape[1:])) * x.dtype.itemsize
    if n * per_agent > GATHER_LIMIT_BYTES or (exact_select and n >= SELECT_MIN_AGENTS):
        return "select"
    return "gather"


def _agents_float(fn: str, name: str, x: Any) -> jax.Array:
    xf = _checks.as_float_array(fn, name, x)
    if xf.ndim == 0:
        raise ValueError(
            f"{fn}: '{name}' must have an agents axis (axis 0); got a scalar. Use x[None] for a "
            "single agent."
        )
    return xf


# ---- distributed radix select on the order-preserving integer image of the keys -------------


def _key_dtypes(dt):
    return (jnp.uint64, jnp.int64) if jnp.dtype(dt).itemsize == 8 else (jnp.uint32, jnp.int32)


def _to_key(x: jax.Array) -> jax.Array:
    """Order-preserving unsigned image of float keys: ``-0.0 -> +0.0``, every NaN -> +NaN (last)."""
    udt, _ = _key_dtypes(x.dtype)
    bits = 8 * jnp.dtype(udt).itemsize
    x = jnp.where(x == 0, jnp.zeros_like(x), x)
    x = jnp.where(jnp.isnan(x), jnp.full_like(x, jnp.nan), x)
    u = lax.bitcast_convert_type(x, udt)
    top = jnp.array(1 << (bits - 1), udt)
    neg = (u >> (bits - 1)) == 1
    return jnp.where(neg, ~u, u | top)


def _from_key(k: jax.Array, dtype) -> jax.Array:
    udt, _ = _key_dtypes(dtype)
    bits = 8 * jnp.dtype(udt).itemsize
    top = jnp.array(1 << (bits - 1), udt)
    pos = (k >> (bits - 1)) == 1
    u = jnp.where(pos, k & ~top, ~k)
    return lax.bitcast_convert_type(u, jnp.dtype(dtype))


def _histogram(digit: jax.Array, weight: jax.Array, groups: int) -> jax.Array:
    """Counts of ``digit`` ([m, groups], values < 2**16) per group: ``[groups, 2**16]`` uint32."""
    offset = (jnp.arange(groups, dtype=jnp.int32) * _N_BINS)[None, :]
    flat = (digit + offset).reshape(-1)
    ones = weight.reshape(-1).astype(jnp.uint32)
    h = jnp.zeros((groups * _N_BINS,), jnp.uint32).at[flat].add(ones)
    return h.reshape(groups, _N_BINS)


def _select_local_hist(keys, valid, p, prefix):
    """Local histogram of pass ``p``: ``[F, 2**16]`` for p = 0, ``[F, T, 2**16]`` after."""
    bits = 8 * keys.dtype.itemsize
    shift = bits - _DIGIT_BITS * (p + 1)
    digit = ((keys >> shift) & jnp.array(_N_BINS - 1, keys.dtype)).astype(jnp.int32)  # [m, F]
    m, f = keys.shape
    if p == 0:
        return _histogram(digit, valid, f)
    t = prefix.shape[1]
    high = keys >> (shift + _DIGIT_BITS)
    match = valid[:, :, None] & (high[:, :, None] == prefix[None, :, :])  # [m, F, T]
    d3 = jnp.broadcast_to(digit[:, :, None], (m, f, t)).reshape(m, f * t)
    return _histogram(d3, match.reshape(m, f * t), f * t).reshape(f, t, _N_BINS)


def _select_step(hist, rem, prefix):
    """Narrow each target to one digit: ``hist`` [F, T, B] (merged), ``rem`` [F, T] uint32."""
    cum = jnp.cumsum(hist, axis=-1, dtype=jnp.uint32)
    b = jnp.sum(cum <= rem[..., None], axis=-1, dtype=jnp.int32)
    b = jnp.minimum(b, _N_BINS - 1)
    below = jnp.take_along_axis(cum, jnp.maximum(b - 1, 0)[..., None], axis=-1)[..., 0]
    below = jnp.where(b > 0, below, jnp.zeros_like(below))
    new_prefix = (prefix << _DIGIT_BITS) | b.astype(prefix.dtype)
    return rem - below, new_prefix


def _select(ranks, merged_hist, key_dtype):
    """Keys of the order statistics ``ranks`` ([F, T], 0-based among the valid keys).

    ``merged_hist(p, prefix)`` returns pass ``p``'s histogram (:func:`_select_local_hist`)
    summed over every part of the population (``psum`` across devices, or a sum over
    out-of-core blocks). Returns ``(keys [F, T], first-pass histogram [F, 2**16])``.
    """
    f, t = ranks.shape
    bits = 8 * jnp.dtype(key_dtype).itemsize
    prefix = jnp.zeros((f, t), key_dtype)
    rem = ranks.astype(jnp.uint32)
    hist0 = None
    for p in range(bits // _DIGIT_BITS):  # static: 2 passes (float32) or 4 (float64)
        h = merged_hist(p, prefix)
        if p == 0:
            hist0 = h
            h = jnp.broadcast_to(h[:, None, :], (f, t, _N_BINS))
        rem, prefix = _select_step(h, rem, prefix)
    return prefix, hist0


def _order_stat_indices(n, q, method):
    """numpy's quantile rule as order statistics: (index arrays, combine(values) -> result).

    Mirrors :func:`jaxstats.rank._quantile_sorted` step by step, so the selected values give
    the same numbers as the sorted path. ``n``: [F, 1] float count; ``q``: [1, Q].
    """
    v, continuous = _virtual_index(n, q, method)
    shape = jnp.broadcast_shapes(jnp.shape(v), jnp.shape(n), jnp.shape(q))
    v = jnp.broadcast_to(v, shape)
    n_b = jnp.broadcast_to(n, shape)

    def clip(i):
        return jnp.clip(i, 0, jnp.maximum(n_b - 1, 0)).astype(jnp.int32)

    if continuous is None:
        return [clip(v)], lambda vals: vals[0]
    prev = jnp.floor(v)
    above = v >= n_b - 1
    below = v < 0
    prev_i = jnp.where(above, n_b - 1, jnp.where(below, 0, prev))
    next_i = jnp.where(above, n_b - 1, jnp.where(below, 0, prev + 1))
    gamma = v - jnp.where(above, -1.0, prev_i)
    if method == "averaged_inverted_cdf":
        gamma = jnp.where(gamma == 0, 0.5, 1.0)
    elif method == "midpoint":
        gamma = jnp.where(jnp.mod(v, 1) == 0, 0.0, 0.5)

    def combine(vals):
        a, b = vals
        t = gamma.astype(a.dtype)
        diff = b - a
        return jnp.where(t >= 0.5, b - diff * (1 - t), a + diff * t)

    return [clip(prev_i), clip(next_i)], combine


def _select_quantiles(x2, q, method, axis_name, omit):
    """Quantiles of the columns of a sharded ``[m, F]`` block via radix select.

    Returns ``(out [F, Q], n_valid [F] float, any_nan [F] bool, hist0 [F, 2**16], keys)``.
    """
    m, f = x2.shape
    isnan = jnp.isnan(x2)
    valid = ~isnan
    n_nan = jnp.sum(isnan, axis=0, dtype=jnp.int32)
    if axis_name is not None:
        n_nan = lax.psum(n_nan, axis_name)
    n_total = _nglobal(axis_name, m)
    n_valid = (n_total - n_nan).astype(x2.dtype)
    if omit:
        n_col = n_valid[:, None]
    else:
        n_col = jnp.full((f, 1), float(n_total), x2.dtype)
    idx, combine = _order_stat_indices(n_col, q.reshape(1, -1).astype(x2.dtype), method)
    nq = q.size
    ranks = jnp.concatenate(idx, axis=1)  # [F, k*Q]
    keys = _to_key(x2)

    def merged(p, prefix):
        h = _select_local_hist(keys, valid, p, prefix)
        return h if axis_name is None else lax.psum(h, axis_name)

    sel, hist0 = _select(ranks, merged, keys.dtype)
    vals = _from_key(sel, x2.dtype)
    parts = [vals[:, i * nq : (i + 1) * nq] for i in range(len(idx))]
    out = combine(parts)
    any_nan = n_nan > 0
    if omit:
        out = jnp.where(n_col > 0, out, jnp.nan)
    else:
        out = jnp.where(any_nan[:, None], jnp.nan, out)
    return out, n_valid, any_nan, hist0, keys


def _bucket_extremes(keys, valid):
    """Smallest and largest valid key in every first-digit bucket: ``[F, 2**16]`` each
    (empty buckets: ``(max key, 0)``, the identities of ``min`` / ``max``)."""
    bits = 8 * keys.dtype.itemsize
    m, f = keys.shape
    top = (keys >> (bits - _DIGIT_BITS)).astype(jnp.int32)
    flat = (top + (jnp.arange(f, dtype=jnp.int32) * _N_BINS)[None, :]).reshape(-1)
    hi_key = jnp.array(np.iinfo(keys.dtype).max, keys.dtype)
    lo_key = jnp.array(0, keys.dtype)
    k = keys.reshape(-1)
    v = valid.reshape(-1)
    kmin = jnp.full((f * _N_BINS,), hi_key).at[flat].min(jnp.where(v, k, hi_key))
    kmax = jnp.full((f * _N_BINS,), lo_key).at[flat].max(jnp.where(v, k, lo_key))
    return kmin.reshape(f, _N_BINS), kmax.reshape(f, _N_BINS)


def _approx_percentiles(keys, hist0, kmin, kmax, n_valid, kind, dtype):
    """Percentile of each key ([m, F]) among the population from merged bucket summaries.

    ``hist0`` / ``kmin`` / ``kmax`` ([F, 2**16]) are the first-digit histogram and each
    bucket's smallest / largest key, merged over the whole population. With ``B`` agents
    below the key's bucket and ``H`` in it: a bucket of one distinct key is one tie group
    (``left = B``, ``right = B + H``: exact); otherwise the strict count is interpolated
    linearly in key space, ``left = B + (H - 1) u`` with ``u = (key - kmin) / (kmax - kmin)``
    (exact at ``kmin``), and ``right = left + 1`` (exact at ``kmax``). The error is below
    ``H`` counts; agents alone in their bucket are exact.
    """
    bits = 8 * keys.dtype.itemsize
    top = (keys >> (bits - _DIGIT_BITS)).astype(jnp.int32)  # [m, F]
    cols = jnp.arange(keys.shape[1])[None, :]
    cum = jnp.cumsum(hist0, axis=-1, dtype=jnp.uint32)  # [F, B]
    below = (cum - hist0).T[top, cols].astype(dtype)
    inside = hist0.T[top, cols].astype(dtype)
    lo = kmin.T[top, cols]
    hi = kmax.T[top, cols]
    span = (hi - lo).astype(dtype)
    u = jnp.where(span > 0, (keys - lo).astype(dtype) / jnp.where(span > 0, span, 1.0), 0.0)
    left = below + jnp.maximum(inside - 1, 0) * u
    right = left + 1
    tied = hi == lo
    left = jnp.where(tied, below, jnp.where(keys == hi, below + inside - 1, left))
    right = jnp.where(tied | (keys == hi), below + inside, right)
    return _percent_from_counts(left, right, n_valid[None, :], kind, dtype)


def _zscores(x2, med, mad, mean_ad, omit, any_nan):
    """Robust z of ``[m, F]`` values from the population median / MAD / mean abs deviation,
    as :func:`jaxstats.robust.robust_zscore` (same operations, same numbers)."""
    isnan = jnp.isnan(x2)
    denom = jnp.where(mad > 0, MAD_NORMAL_SCALE * mad, MEANAD_NORMAL_SCALE * mean_ad)
    ok = denom > 0
    safe = jnp.where(ok, denom, 1.0)
    z = jnp.where(ok[None, :], (x2 - med[None, :]) / safe[None, :], 0.0)
    if omit:
        return jnp.where(isnan, jnp.nan, z)
    return jnp.where(any_nan[None, :], jnp.nan, z)


def _baseline_select(x2, axis_name, kind, nan_policy, want_pct):
    """Population baseline of a sharded ``[m, F]`` block by radix select (see module doc)."""
    omit = nan_policy == "omit"
    half = jnp.asarray([0.5], x2.dtype)
    med, n_valid, any_nan, hist0, keys = _select_quantiles(x2, half, "linear", axis_name, omit)
    med = med[:, 0]  # [F]
    isnan = jnp.isnan(x2)
    dev = jnp.abs(x2 - med[None, :])
    mad, _, _, _, _ = _select_quantiles(dev, half, "linear", axis_name, omit)
    mad = mad[:, 0]
    n_ok = jnp.sum(~isnan, axis=0, dtype=jnp.int32)
    if axis_name is not None:
        n_ok = lax.psum(n_ok, axis_name)
    mean_ad = sum_across(jnp.where(isnan, 0.0, dev), axis_name) / jnp.maximum(
        n_ok.astype(x2.dtype), 1
    )
    z = _zscores(x2, med, mad, mean_ad, omit, any_nan)
    pct = None
    if want_pct:
        kmin, kmax = _bucket_extremes(keys, ~isnan)
        if axis_name is not None:
            kmin, kmax = lax.pmin(kmin, axis_name), lax.pmax(kmax, axis_name)
        pct = _approx_percentiles(keys, hist0, kmin, kmax, n_valid, kind, x2.dtype)
        pct = jnp.where(isnan, jnp.nan, pct) if omit else jnp.where(any_nan[None, :], jnp.nan, pct)
    return pct, z, med, mad


def _as_cols(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def rankdata_across(
    a: ArrayLike,
    axis_name: AxisName | None,
    method: str = "average",
    *,
    nan_policy: str = "propagate",
) -> jax.Array:
    """Ranks along the sharded agents axis (axis 0); inside ``shard_map``.

    Equals ``jaxstats.rankdata(full, method, axis=0, nan_policy=...)`` of the unsharded
    population, bit for bit: the agents' values are all-gathered (one scalar per agent per
    feature), ranked on every device and each device keeps its own block.

    Args:
      a: this device's ``[agents_local, ...]`` block.
      axis_name: the mesh axis the agents are split over (``None``: unsharded).
      method: as :func:`jaxstats.rankdata`.
      nan_policy: as :func:`jaxstats.rankdata`.

    Returns:
      Ranks of this device's agents among the whole population, like ``a``.

    Raises:
      TypeError, ValueError: as :func:`jaxstats.rankdata`.

    NaN and inf:
      As :func:`jaxstats.rankdata` with ``axis=0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> jax.jit(lambda v: rankdata_across(v, None))(jnp.array([3.0, 1.0, 2.0]))
      Array([3., 1., 2.], dtype=float32)
    """
    fn = "rankdata_across"
    _checks.check_option(fn, "method", method, RANK_METHODS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _agents_float(fn, "a", a)
    full = _gather(x, axis_name)
    return _own(rankdata(full, method, axis=0, nan_policy=nan_policy), axis_name, x.shape[0])


def percentile_of_population_across(
    a: ArrayLike,
    axis_name: AxisName | None,
    *,
    kind: str = "rank",
    nan_policy: str = "propagate",
    strategy: str = "auto",
) -> jax.Array:
    """Each agent's percentile among the whole (sharded) population; inside ``shard_map``.

    ``"gather"`` equals ``jaxstats.percentile_of_population(full, axis=0, ...)`` exactly;
    ``"select"`` is within ``100 * H / n`` points (see the module docstring).

    Args:
      a: this device's ``[agents_local, ...]`` block; trailing axes are separate populations.
      axis_name: mesh axis (``None``: unsharded).
      kind: as :func:`jaxstats.percentileofscore`.
      nan_policy: ``"propagate"``, ``"omit"`` or ``"raise"``.
      strategy: ``"auto"``, ``"gather"`` or ``"select"``.

    Returns:
      Percentiles in [0, 100] of this device's agents, like ``a``.

    Raises:
      TypeError, ValueError: for bad input or options.

    NaN and inf:
      As :func:`jaxstats.percentile_of_population`.

    Examples:
      >>> import jax.numpy as jnp
      >>> f = jax.jit(lambda v: percentile_of_population_across(v, None))
      >>> f(jnp.array([1.0, 2.0, 2.0, 4.0]))
      Array([ 25. ,  62.5,  62.5, 100. ], dtype=float32)
    """
    fn = "percentile_of_population_across"
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _agents_float(fn, "a", a)
    m = x.shape[0]
    if _choose_strategy(fn, strategy, _nglobal(axis_name, m), x, False) == "gather":
        full = _gather(x, axis_name)
        out = percentile_of_population(full, axis=0, kind=kind, nan_policy=nan_policy)
        return _own(out, axis_name, m)
    if nan_policy == "raise":
        x = _raise_on_nan(fn, x, "a")
    x2 = _as_cols(x)
    pct, _, _, _ = _baseline_select(x2, axis_name, kind, nan_policy, want_pct=True)
    return pct.reshape(x.shape)


def percentileofscore_across(
    a: ArrayLike,
    score: ArrayLike,
    axis_name: AxisName | None,
    kind: str = "rank",
    nan_policy: str = "propagate",
) -> jax.Array:
    """Percentile of ``score`` relative to a sample ``a`` sharded along its only axis.

    Equals ``jaxstats.percentileofscore(full_a, score, kind, nan_policy)``: the sample is
    all-gathered, ``score`` is this device's (any shape, e.g. its own agents' scores).

    Args:
      a: this device's block of the ``[obs]`` sample.
      score: scores, any shape (not gathered).
      axis_name: mesh axis (``None``: unsharded).
      kind: as :func:`jaxstats.percentileofscore`.
      nan_policy: as :func:`jaxstats.percentileofscore`.

    Returns:
      Percentiles with the shape of ``score``.

    Raises:
      TypeError, ValueError: as :func:`jaxstats.percentileofscore`.

    NaN and inf:
      As :func:`jaxstats.percentileofscore`.

    Examples:
      >>> import jax.numpy as jnp
      >>> percentileofscore_across(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array(3.0), None)
      Array(75., dtype=float32)
    """
    fn = "percentileofscore_across"
    x = _checks.as_float_array(fn, "a", a)
    _checks.check_rank(fn, "a", x, (1,), "Shard a 1-D sample; vmap for a batch of samples.")
    return percentileofscore(_gather(x, axis_name), score, kind, nan_policy)


def quantile_across(
    a: ArrayLike,
    q: Any,
    axis_name: AxisName | None,
    *,
    method: str = "linear",
    strategy: str = "auto",
) -> jax.Array:
    """Quantiles over the sharded agents axis (axis 0); inside ``shard_map``.

    Equals ``jaxstats.quantile(full, q, axis=0, method=method)`` (numpy's 13 methods) with
    either strategy: ``"select"`` finds the needed order statistics exactly by radix select.
    Each probability costs ``select`` up to two targets, i.e. a ``2**16``-bin histogram
    (256 KiB) per target and feature per pass: it is meant for a few quantiles; gather for
    many.

    Args:
      a: this device's ``[agents_local, ...]`` block.
      q: probabilities in [0, 1], any shape.
      axis_name: mesh axis (``None``: unsharded).
      method: as :func:`jaxstats.quantile`.
      strategy: ``"auto"`` (select from :data:`SELECT_MIN_AGENTS` agents), ``"gather"`` or
        ``"select"``.

    Returns:
      ``q.shape + a.shape[1:]`` array, replicated.

    Raises:
      TypeError, ValueError: as :func:`jaxstats.quantile`.

    NaN and inf:
      A NaN in a population gives NaN (as numpy).

    Examples:
      >>> import jax.numpy as jnp
      >>> f = jax.jit(lambda v: quantile_across(v, 0.5, None, strategy="select"))
      >>> f(jnp.array([1.0, 2.0, 3.0, 4.0]))
      Array(2.5, dtype=float32)
    """
    fn = "quantile_across"
    _checks.check_option(fn, "method", method, QUANTILE_METHODS)
    x = _agents_float(fn, "a", a)
    qa = _checks.as_float_array(fn, "q", q).astype(x.dtype)
    m = x.shape[0]
    n = _nglobal(axis_name, m)
    if n == 0:
        raise ValueError(f"{fn}: cannot take quantiles over an empty agents axis.")
    if _choose_strategy(fn, strategy, n, x, True) == "gather":
        return quantile(_gather(x, axis_name), qa, axis=0, method=method)
    out, _, _, _, _ = _select_quantiles(_as_cols(x), qa.reshape(-1), method, axis_name, False)
    return out.T.reshape(qa.shape + x.shape[1:])


def robust_zscore_across(
    a: ArrayLike,
    axis_name: AxisName | None,
    *,
    nan_policy: str = "propagate",
    strategy: str = "auto",
) -> jax.Array:
    """Robust z-scores against the whole (sharded) population; inside ``shard_map``.

    Equals ``jaxstats.robust_zscore(full, axis=0, nan_policy=...)``: bit for bit with
    ``"gather"``; with ``"select"`` the median and MAD are exact and the z-scores equal
    unless the MAD is 0 (then the mean-absolute-deviation fallback is a sum in another order:
    within a few ulps).

    Args:
      a: this device's ``[agents_local, ...]`` block.
      axis_name: mesh axis (``None``: unsharded).
      nan_policy: ``"propagate"``, ``"omit"`` or ``"raise"``.
      strategy: ``"auto"`` (select from :data:`SELECT_MIN_AGENTS` agents), ``"gather"`` or
        ``"select"``.

    Returns:
      z-scores of this device's agents, like ``a``.

    Raises:
      TypeError, ValueError: for bad input or options.

    NaN and inf:
      As :func:`jaxstats.robust_zscore`.

    Examples:
      >>> import jax.numpy as jnp
      >>> f = jax.jit(lambda v: robust_zscore_across(v, None))
      >>> f(jnp.array([1.0, 2.0, 3.0, 4.0, 100.0]))[2]
      Array(0., dtype=float32)
    """
    fn = "robust_zscore_across"
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _agents_float(fn, "a", a)
    m = x.shape[0]
    if _choose_strategy(fn, strategy, _nglobal(axis_name, m), x, True) == "gather":
        full = _gather(x, axis_name)
        return _own(robust_zscore(full, axis=0, nan_policy=nan_policy), axis_name, m)
    if nan_policy == "raise":
        x = _raise_on_nan(fn, x, "a")
    _, z, _, _ = _baseline_select(_as_cols(x), axis_name, "rank", nan_policy, want_pct=False)
    return z.reshape(x.shape)


def population_baseline_across(
    x: ArrayLike,
    axis_name: AxisName | None,
    *,
    kind: str = "rank",
    nan_policy: str = "propagate",
    strategy: str = "auto",
) -> BaselineResult:
    """:func:`jaxstats.population_baseline` over a sharded agents axis; inside ``shard_map``.

    ``percentile`` and ``zscore`` are this device's agents (like ``x``); ``median`` and
    ``mad`` (per feature) are replicated. ``"gather"`` equals the unsharded result bit for
    bit; ``"select"``: exact median and MAD, z-scores as :func:`robust_zscore_across`,
    percentiles within ``100 * H / n`` points (module docstring).

    Args:
      x: this device's ``[agents_local, ...]`` block.
      axis_name: mesh axis (``None``: unsharded).
      kind: percentile kind, as :func:`jaxstats.percentileofscore`.
      nan_policy: ``"propagate"``, ``"omit"`` or ``"raise"``.
      strategy: ``"auto"``, ``"gather"`` or ``"select"``.

    Returns:
      :class:`jaxstats.BaselineResult`.

    Raises:
      TypeError, ValueError: for bad input or options, or an empty agents axis.

    NaN and inf:
      As :func:`jaxstats.population_baseline`.

    Examples:
      >>> import jax.numpy as jnp
      >>> f = jax.jit(lambda v: population_baseline_across(v, None, strategy="select"))
      >>> b = f(jnp.array([1.0, 2.0, 3.0, 4.0, 100.0]))
      >>> b.median, b.mad
      (Array(3., dtype=float32), Array(1., dtype=float32))
    """
    fn = "population_baseline_across"
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    xf = _agents_float(fn, "x", x)
    m = xf.shape[0]
    n = _nglobal(axis_name, m)
    if n == 0:
        raise ValueError(f"{fn}: the agents axis 0 is empty.")
    if _choose_strategy(fn, strategy, n, xf, False) == "gather":
        full = _gather(xf, axis_name)
        r = population_baseline(full, axis=0, kind=kind, nan_policy=nan_policy)
        return BaselineResult(
            _own(r.percentile, axis_name, m), _own(r.zscore, axis_name, m), r.median, r.mad
        )
    if nan_policy == "raise":
        xf = _raise_on_nan(fn, xf, "x")
    pct, z, med, mad = _baseline_select(_as_cols(xf), axis_name, kind, nan_policy, want_pct=True)
    feat = xf.shape[1:]
    return BaselineResult(
        pct.reshape(xf.shape), z.reshape(xf.shape), med.reshape(feat), mad.reshape(feat)
    )


# ============================================================================================
# 5. The same on a mesh (outside shard_map)
# ============================================================================================


def _on_mesh(fn: str, mesh: Mesh, axis_name, body, args, agent_args, out_specs, **options):
    """Run ``body(*args, axis_name=..., **options)`` in a jitted shard_map over ``mesh``.

    ``agent_args[i]`` says whether argument ``i`` is split along agents (else replicated);
    ``out_specs`` is a pytree of ``"agents"`` / ``"replicated"``. ``body`` is a module-level
    function and ``options`` hashable, so repeated calls hit the compilation cache (an eager
    ``shard_map`` would run op by op, ~1000x slower).
    """
    axis = _mesh_axis(fn, mesh, axis_name)
    d = _axis_devices(mesh, axis)
    for arg, split in zip(args, agent_args):
        if split:
            if arg.ndim == 0:
                raise ValueError(
                    f"{fn}: the input must have an agents axis (axis 0); got a scalar."
                )
            _check_divisible(fn, arg.shape[0], d)
    return _mesh_call(
        mesh, axis, body, tuple(agent_args), out_specs, tuple(sorted(options.items())), *args
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _mesh_call(mesh, axis, body, agent_args, out_specs, options, *args):
    in_specs = tuple(P(axis) if split else P() for split in agent_args)
    placed = [_place(a, NamedSharding(mesh, s)) for a, s in zip(args, in_specs)]
    specs = jax.tree_util.tree_map(lambda s: P(axis) if s == "agents" else P(), out_specs)
    mapped = jax.shard_map(
        functools.partial(body, axis_name=axis, **dict(options)),
        mesh=mesh,
        in_specs=in_specs,
        out_specs=specs,
        check_vma=False,
    )
    return mapped(*placed)


def sharded_rankdata(
    a: ArrayLike,
    mesh: Mesh,
    method: str = "average",
    *,
    nan_policy: str = "propagate",
    axis_name: AxisName | None = None,
) -> jax.Array:
    """``jaxstats.rankdata(a, method, axis=0)`` for ``a`` sharded (or not) along agents.

    Works on Auto and Explicit meshes; the ranks come back sharded along agents. Exact
    (all-gather of the values, see :func:`rankdata_across`).

    Args:
      a: ``[agents, ...]`` real array; agents divisible by the mesh axis size.
      mesh: the mesh (:func:`agent_mesh`).
      method: as :func:`jaxstats.rankdata`.
      nan_policy: as :func:`jaxstats.rankdata`.
      axis_name: the agents axis of the mesh (default: its only axis).

    Returns:
      Ranks like ``a``, sharded along agents.

    Raises:
      TypeError, ValueError: as :func:`jaxstats.rankdata`, or if the agent count does not
        split evenly over the devices.

    NaN and inf:
      As :func:`jaxstats.rankdata`.

    Examples:
      >>> import jax.numpy as jnp
      >>> sharded_rankdata(jnp.array([10.0, 30.0, 20.0, 10.0]), agent_mesh())
      Array([1.5, 4. , 3. , 1.5], dtype=float32)
    """
    fn = "sharded_rankdata"
    _checks.check_option(fn, "method", method, RANK_METHODS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _agents_float(fn, "a", a)
    return _on_mesh(
        fn, mesh, axis_name, _rank_body, (x,), (True,), "agents",
        method=method, nan_policy=nan_policy,
    )


def _rank_body(x, *, axis_name, method, nan_policy):
    return rankdata_across(x, axis_name, method, nan_policy=nan_policy)


def sharded_percentile_of_population(
    a: ArrayLike,
    mesh: Mesh,
    *,
    kind: str = "rank",
    nan_policy: str = "propagate",
    strategy: str = "auto",
    axis_name: AxisName | None = None,
) -> jax.Array:
    """``jaxstats.percentile_of_population(a, axis=0)`` for ``a`` sharded along agents.

    Args:
      a: ``[agents, ...]`` real array.
      mesh: the mesh.
      kind: percentile kind.
      nan_policy: ``"propagate"``, ``"omit"`` or ``"raise"``.
      strategy: ``"auto"``, ``"gather"`` (exact) or ``"select"`` (within ``100 * H / n``).
      axis_name: the agents axis of the mesh.

    Returns:
      Percentiles like ``a``, sharded along agents.

    Raises:
      TypeError, ValueError: for bad input/options or an uneven agent count.

    NaN and inf:
      As :func:`jaxstats.percentile_of_population`.

    Examples:
      >>> import jax.numpy as jnp
      >>> sharded_percentile_of_population(jnp.array([1.0, 2.0, 2.0, 4.0]), agent_mesh())
      Array([ 25. ,  62.5,  62.5, 100. ], dtype=float32)
    """
    fn = "sharded_percentile_of_population"
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    _checks.check_option(fn, "strategy", strategy, STRATEGIES)
    x = _agents_float(fn, "a", a)
    return _on_mesh(
        fn, mesh, axis_name, percentile_of_population_across, (x,), (True,), "agents",
        kind=kind, nan_policy=nan_policy, strategy=strategy,
    )


def sharded_percentileofscore(
    a: ArrayLike,
    score: ArrayLike,
    mesh: Mesh,
    kind: str = "rank",
    nan_policy: str = "propagate",
    *,
    axis_name: AxisName | None = None,
) -> jax.Array:
    """``jaxstats.percentileofscore(a, score)`` for a 1-D sample ``a`` sharded along agents.

    ``score`` is replicated (every device answers every score; the result is replicated).

    Args:
      a: ``[agents]`` sample.
      score: scores of any shape.
      mesh: the mesh.
      kind: as :func:`jaxstats.percentileofscore`.
      nan_policy: as :func:`jaxstats.percentileofscore`.
      axis_name: the agents axis of the mesh.

    Returns:
      Percentiles with the shape of ``score``.

    Raises:
      TypeError, ValueError: as :func:`jaxstats.percentileofscore`, or an uneven agent count.

    NaN and inf:
      As :func:`jaxstats.percentileofscore`.

    Examples:
      >>> import jax.numpy as jnp
      >>> sharded_percentileofscore(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([3.0]),
      ...                           agent_mesh())
      Array([75.], dtype=float32)
    """
    fn = "sharded_percentileofscore"
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    x = _checks.as_float_array(fn, "a", a)
    _checks.check_rank(fn, "a", x, (1,), "Use jax.vmap for a batch of samples.")
    s = _checks.as_float_array(fn, "score", score)
    return _on_mesh(
        fn, mesh, axis_name, percentileofscore_across, (x, s), (True, False), "replicated",
        kind=kind, nan_policy=nan_policy,
    )


def sharded_quantile(
    a: ArrayLike,
    q: Any,
    mesh: Mesh,
    *,
    method: str = "linear",
    strategy: str = "auto",
    axis_name: AxisName | None = None,
) -> jax.Array:
    """``jaxstats.quantile(a, q, axis=0, method=method)`` for ``a`` sharded along agents.

    Exact with both strategies (``"select"``: distributed radix select, O(n / d) per device).

    Args:
      a: ``[agents, ...]`` real array.
      q: probabilities in [0, 1].
      mesh: the mesh.
      method: any of numpy's quantile methods.
      strategy: ``"auto"``, ``"gather"`` or ``"select"``.
      axis_name: the agents axis of the mesh.

    Returns:
      ``q.shape + a.shape[1:]``, replicated.

    Raises:
      TypeError, ValueError: as :func:`jaxstats.quantile`, or an uneven agent count.

    NaN and inf:
      A NaN in a population gives NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> sharded_quantile(jnp.array([4.0, 1.0, 3.0, 2.0]), jnp.array([0.25, 0.5]),
      ...                  agent_mesh(), strategy="select")
      Array([1.75, 2.5 ], dtype=float32)
    """
    fn = "sharded_quantile"
    _checks.check_option(fn, "method", method, QUANTILE_METHODS)
    _checks.check_option(fn, "strategy", strategy, STRATEGIES)
    x = _agents_float(fn, "a", a)
    qa = _checks.as_float_array(fn, "q", q).astype(x.dtype)
    return _on_mesh(
        fn, mesh, axis_name, quantile_across, (x, qa), (True, False), "replicated",
        method=method, strategy=strategy,
    )


def sharded_robust_zscore(
    a: ArrayLike,
    mesh: Mesh,
    *,
    nan_policy: str = "propagate",
    strategy: str = "auto",
    axis_name: AxisName | None = None,
) -> jax.Array:
    """``jaxstats.robust_zscore(a, axis=0)`` for ``a`` sharded along agents.

    Args:
      a: ``[agents, ...]`` real array.
      mesh: the mesh.
      nan_policy: ``"propagate"``, ``"omit"`` or ``"raise"``.
      strategy: ``"auto"``, ``"gather"`` or ``"select"`` (see :func:`robust_zscore_across`).
      axis_name: the agents axis of the mesh.

    Returns:
      z-scores like ``a``, sharded along agents.

    Raises:
      TypeError, ValueError: for bad input/options or an uneven agent count.

    NaN and inf:
      As :func:`jaxstats.robust_zscore`.

    Examples:
      >>> import jax.numpy as jnp
      >>> z = sharded_robust_zscore(jnp.array([1.0, 2.0, 3.0, 4.0]), agent_mesh())
      >>> z.shape
      (4,)
    """
    fn = "sharded_robust_zscore"
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    _checks.check_option(fn, "strategy", strategy, STRATEGIES)
    x = _agents_float(fn, "a", a)
    return _on_mesh(
        fn, mesh, axis_name, robust_zscore_across, (x,), (True,), "agents",
        nan_policy=nan_policy, strategy=strategy,
    )


def sharded_population_baseline(
    x: ArrayLike,
    mesh: Mesh,
    *,
    kind: str = "rank",
    nan_policy: str = "propagate",
    strategy: str = "auto",
    axis_name: AxisName | None = None,
) -> BaselineResult:
    """``jaxstats.population_baseline(x, axis=0)`` for ``x`` sharded along agents.

    Per-agent fields (``percentile``, ``zscore``) come back sharded like ``x``; ``median``
    and ``mad`` replicated. See :func:`population_baseline_across` for the strategies.

    Args:
      x: ``[agents, ...]`` real array (numpy, or a ``jax.Array`` sharded or not).
      mesh: the mesh (Auto or Explicit axis types).
      kind: percentile kind.
      nan_policy: ``"propagate"``, ``"omit"`` or ``"raise"``.
      strategy: ``"auto"``, ``"gather"`` or ``"select"``.
      axis_name: the agents axis of the mesh.

    Returns:
      :class:`jaxstats.BaselineResult`.

    Raises:
      TypeError, ValueError: for bad input/options, an empty agents axis or an uneven agent
        count (pad with NaN and use ``nan_policy="omit"``: :func:`pad_agents`).

    NaN and inf:
      As :func:`jaxstats.population_baseline`.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0])  # 8 agents: 1, 2, 4, 8 devices
      >>> b = sharded_population_baseline(x, agent_mesh())
      >>> b.percentile
      Array([ 12.5,  25. ,  37.5,  50. ,  62.5,  75. ,  87.5, 100. ], dtype=float32)
      >>> b.median, b.mad
      (Array(4.5, dtype=float32), Array(2., dtype=float32))
    """
    fn = "sharded_population_baseline"
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    _checks.check_option(fn, "nan_policy", nan_policy, NAN_POLICIES)
    _checks.check_option(fn, "strategy", strategy, STRATEGIES)
    xf = _agents_float(fn, "x", x)
    specs = BaselineResult("agents", "agents", "replicated", "replicated")
    return _on_mesh(
        fn, mesh, axis_name, population_baseline_across, (xf,), (True,), specs,
        kind=kind, nan_policy=nan_policy, strategy=strategy,
    )

