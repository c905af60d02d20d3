"""Fleets larger than memory: agent blocks streamed between host or disk arrays and a device.

At 10^7-10^9 agents the per-agent states (sketches of a few hundred bytes to kilobytes each)
do not fit in host or device memory. They live in host arrays, typically ``numpy.memmap``
files with the agent axis first, and are processed one fixed-size block of agents at a time:

* :func:`map_agent_blocks` streams every block through a (jitted) per-block function,
  writes the per-agent outputs back (e.g. the updated states, in place) and merges the
  per-block population summaries (additive ones with ``"sum"``/``"min"``/``"max"``, any
  sketch with its ``merge``). The next block is read from disk while the device works on the
  current one (JAX's asynchronous dispatch); every block has the same shape (the last is
  padded and masked), so the function compiles once. Peak memory is a few blocks, whatever
  the fleet size.
* :func:`blocked_population_baseline` is :func:`jaxstats.population_baseline` of a score
  array that is itself out of core. While the scores fit in ``memory_limit`` (1e7 agents x 4
  float32 features is 160 MB) they are loaded and ranked exactly in memory (``"gather"``).
  Beyond, ``"select"`` runs the distributed radix select of :mod:`jaxstats.shard` over
  blocks instead of devices: five streaming passes (float32; float64 needs four more) give
  the **exact** median and MAD (and hence exact robust z-scores) with O(block) memory, and
  percentiles from the merged 2**16-bucket histogram with error below ``100 * H / n``
  points (``H``: agents sharing the agent's top 16 key bits; exact for agents alone in their
  bucket and for buckets of one distinct value). This is the two-pass exact
  histogram-refinement scheme: the first histogram locates the bucket holding the median's
  rank, the second resolves the remaining 16 bits; no approximation is involved.

Memory-mapped arrays that own their mapping are read and written with ``os.pread`` /
``os.pwrite`` (no pages of the file stay mapped into the process, so the resident set does
not grow with the file); other numpy arrays are sliced.

The Python loop over blocks is the I/O driver (one iteration per block read from disk), not
a loop over agents in numerical code.
"""

from __future__ import annotations

import functools
import mmap
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from .rank import NAN_POLICIES, PERCENTILE_KINDS
from .robust import BaselineResult, population_baseline
from .shard import (
    GATHER_LIMIT_BYTES,
    REDUCTIONS,
    STRATEGIES,
    _approx_percentiles,
    _bucket_extremes,
    _dw_sum,
    _dw_value,
    _from_key,
    _order_stat_indices,
    _select,
    _select_local_hist,
    _to_key,
    _zscores,
)

__all__ = ["blocked_population_baseline", "map_agent_blocks", "open_memmaps"]

PyTree = Any


# ---------------------------------------------------------------------------------------------
# Block I/O on host arrays
# ---------------------------------------------------------------------------------------------


class _BlockIO:
    """Reads/writes agent blocks of one host array (pread/pwrite for owning memmaps)."""

    def __init__(self, arr: np.ndarray, writable: bool):
        self.arr = arr
        self.row_shape = arr.shape[1:]
        self.dtype = arr.dtype
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * arr.dtype.itemsize
        self.fd = None
        # Only a memmap that owns its mapping (base is the mmap) has a trustworthy
        # ``offset``: numpy copies the parent's offset into views such as ``mm[100:]``.
        if (
            isinstance(arr, np.memmap)
            and isinstance(arr.base, mmap.mmap)
            and arr.flags.c_contiguous
            and arr.filename
        ):
            self.fd = os.open(arr.filename, os.O_RDWR if writable else os.O_RDONLY)
            self.base = int(arr.offset)

    def read(self, start: int, stop: int, size: int) -> np.ndarray:
        out = np.zeros((size,) + self.row_shape, self.dtype)
        n = stop - start
        if self.fd is None:
            out[:n] = self.arr[start:stop]
            return out
        view = memoryview(out.reshape(-1).view(np.uint8))[: n * self.row_bytes]
        pos, done = self.base + start * self.row_bytes, 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], pos + done)
            if got <= 0:
                raise OSError(f"map_agent_blocks: short read from {self.arr.filename}")
            done += got
        return out

    def write(self, start: int, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if self.fd is None:
            self.arr[start : start + block.shape[0]] = block
            return
        view = memoryview(block.reshape(-1).view(np.uint8))
        pos, done = self.base + start * self.row_bytes, 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], pos + done)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _positive_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1


def _merge_fn(merge: Any) -> Callable[[PyTree, PyTree], PyTree]:
    if callable(merge):
        return merge

    def op(name, a, b):
        if name == "sum":
            if jnp.issubdtype(a.dtype, jnp.unsignedinteger):  # saturate, as sketch merges do
                s = a + b
                return jnp.where(s < a, jnp.array(np.iinfo(a.dtype).max, a.dtype), s)
            return a + b
        return jnp.minimum(a, b) if name == "min" else jnp.maximum(a, b)

    if isinstance(merge, str):
        return lambda a, b: jax.tree_util.tree_map(functools.partial(op, merge), a, b)

    def tree_merge(a, b):
        return jax.tree_util.tree_map(
            lambda name, sa, sb: jax.tree_util.tree_map(functools.partial(op, name), sa, sb),
            merge,
            a,
            b,
        )

    return tree_merge


def map_agent_blocks(
    fn: Callable[..., Any],
    inputs: PyTree,
    *,
    block_size: int,
    outputs: PyTree = None,
    merge: Any = None,
    device: Any = None,
) -> PyTree:
    """Stream a fleet through ``fn`` one block of agents at a time; write back; merge.

    For each block of ``block_size`` agents: read the block of every ``inputs`` leaf, call
    ``block_out, summary = fn(block_in, where)`` (``where`` is a ``[block_size]`` bool mask,
    False on the padding of the last block), write ``block_out``'s real rows into
    ``outputs`` and merge ``summary`` into the running total, in block order. ``outputs`` may
    be (some of) the ``inputs`` arrays: a state updated in place. Reading the next block
    overlaps the device's work on the current one.

    Args:
      fn: per-block function, ideally jitted once by the caller; ``summary`` may be ``None``
        and so may ``block_out`` (when ``outputs`` is ``None``). It must ignore masked rows
        in ``summary`` (e.g. ``where=`` in sketch updates).
      inputs: pytree of host arrays (``numpy.ndarray`` / ``numpy.memmap``) with a common
        leading agents axis ``n``.
      block_size: agents per block (static: sets every block's shape).
      outputs: pytree of writable host arrays ``[n, ...]`` with the structure of ``fn``'s
        ``block_out``, or ``None``.
      merge: how block summaries combine: a callable ``merge(a, b)`` (e.g. a sketch's
        ``merge``, applied in block order), ``"sum"`` / ``"min"`` / ``"max"``, or a pytree
        (prefix of the summary) of those; ``None`` when ``fn`` returns no summary.
        Unsigned-integer sums saturate.
      device: device the blocks go to (default: JAX's default device).

    Returns:
      The merged summary (``None`` if ``fn`` returns none).

    Raises:
      ValueError: for a bad ``block_size``, leaves disagreeing on ``n``, an unknown merge
        name, or outputs of the wrong length.
      TypeError: if ``inputs`` holds something other than host numpy arrays.

    Examples:
      >>> import numpy as np, jax, jax.numpy as jnp
      >>> x = np.arange(10, dtype=np.float32)
      >>> out = np.zeros_like(x)
      >>> step = jax.jit(lambda b, w: (2 * b, jnp.sum(jnp.where(w, b, 0.0))))
      >>> map_agent_blocks(step, x, block_size=4, outputs=out, merge="sum")
      Array(45., dtype=float32)
      >>> out[-3:]
      array([14., 16., 18.], dtype=float32)
    """
    fn_name = "map_agent_blocks"
    if not _positive_int(block_size):
        raise ValueError(f"{fn_name}: 'block_size' must be a positive int; got {block_size!r}.")
    block_size = int(block_size)
    in_leaves, in_def = jax.tree_util.tree_flatten(inputs)
    if not in_leaves:
        raise ValueError(f"{fn_name}: 'inputs' has no arrays.")
    for leaf in in_leaves:
        if not isinstance(leaf, np.ndarray) or leaf.ndim == 0:
            raise TypeError(
                f"{fn_name}: every input leaf must be a host numpy array (or memmap) with a "
                f"leading agents axis; got {type(leaf).__name__} of ndim {np.ndim(leaf)}."
            )
    sizes = {leaf.shape[0] for leaf in in_leaves}
    if len(sizes) != 1:
        raise ValueError(f"{fn_name}: input leaves disagree on the agent count: {sorted(sizes)}.")
    (n,) = sizes
    out_leaves, out_def = jax.tree_util.tree_flatten(outputs)
    for leaf in out_leaves:
        if not isinstance(leaf, np.ndarray) or leaf.ndim == 0 or leaf.shape[0] != n:
            raise ValueError(
                f"{fn_name}: every output leaf must be a host array with {n} agents first; got "
                f"{type(leaf).__name__} of shape {np.shape(leaf)}."
            )
    if merge is not None and not callable(merge):
        for name in jax.tree_util.tree_leaves(merge):
            _checks.check_option(fn_name, "merge", name, REDUCTIONS)
    combine = _merge_fn(merge) if merge is not None else None
    dev = device if device is not None else jax.devices()[0]
    ids_out = {id(leaf) for leaf in out_leaves}
    readers = [_BlockIO(leaf, writable=id(leaf) in ids_out) for leaf in in_leaves]
    writers = []
    for leaf in out_leaves:
        match = next((r for r in readers if r.arr is leaf), None)
        writers.append(match if match is not None else _BlockIO(leaf, writable=True))
    starts = list(range(0, n, block_size))

    def load(start):
        stop = min(start + block_size, n)
        blocks = [r.read(start, stop, block_size) for r in readers]
        where = np.arange(block_size) < (stop - start)
        return jax.device_put((jax.tree_util.tree_unflatten(in_def, blocks), where), dev)

    summary = None
    try:
        nxt = load(starts[0]) if starts else None
        for i, start in enumerate(starts):
            block_in, where = nxt
            res = fn(block_in, where)  # dispatched asynchronously
            if not (isinstance(res, tuple) and len(res) == 2):
                raise ValueError(f"{fn_name}: 'fn' must return (block_outputs, summary).")
            block_out, part = res
            if i + 1 < len(starts):
                nxt = load(starts[i + 1])  # host read overlaps the device's work
            if writers:
                outs = out_def.flatten_up_to(block_out)
                stop = min(start + block_size, n)
                for w, o in zip(writers, outs):
                    w.write(start, np.asarray(o)[: stop - start])
            if part is not None:
                if summary is None:
                    summary = part
                elif combine is None:
                    raise ValueError(
                        f"{fn_name}: 'fn' returns a summary; pass merge= to combine them."
                    )
                else:
                    summary = combine(summary, part)
    finally:
        for io in {id(x): x for x in readers + writers}.values():
            io.close()
    return summary


def open_memmaps(directory: str, specs: PyTree, n_agents: int, *, mode: str = "w+") -> PyTree:
    """One ``numpy.memmap`` per leaf of ``specs``, ``[n_agents, *leaf.shape]``, in ``directory``.

    A convenience for out-of-core fleets: ``specs`` is an unbatched example state (arrays or
    ``jax.ShapeDtypeStruct``, e.g. ``jax.eval_shape(sk.init, example)``); files are named by
    the leaf's path. ``mode="w+"`` creates (zero-filled, sparse) files, ``"r+"`` reopens them.

    Args:
      directory: an existing directory.
      specs: pytree of per-agent shapes/dtypes.
      n_agents: the fleet size.
      mode: ``"w+"``, ``"r+"`` or ``"r"``.

    Returns:
      The pytree of memmaps.

    Raises:
      ValueError: for a bad mode or a negative ``n_agents``.

    Examples:
      >>> import tempfile, jax, numpy as np
      >>> with tempfile.TemporaryDirectory() as d:
      ...     mm = open_memmaps(d, {"mean": jax.ShapeDtypeStruct((3,), np.float32)}, 5)
      ...     mm["mean"].shape
      (5, 3)
    """
    _checks.check_option("open_memmaps", "mode", mode, ("w+", "r+", "r"))
    if int(n_agents) < 0:
        raise ValueError(f"open_memmaps: 'n_agents' must be >= 0; got {n_agents!r}.")
    paths, treedef = jax.tree_util.tree_flatten_with_path(specs)
    out = []
    for path, leaf in paths:
        name = "".join(str(p) for p in path).strip(".[]'\"").replace("'", "").replace("[", "_")
        name = name.replace("]", "").replace(".", "_") or "leaf"
        fname = os.path.join(directory, f"{name}.npy.raw")
        shape = (int(n_agents),) + tuple(np.shape(leaf))
        out.append(np.memmap(fname, dtype=np.dtype(leaf.dtype), mode=mode, shape=shape))
    return jax.tree_util.tree_unflatten(treedef, out)


# ---------------------------------------------------------------------------------------------
# Out-of-core population baseline
# ---------------------------------------------------------------------------------------------


_baseline_jit = jax.jit(
    functools.partial(population_baseline, axis=0), static_argnames=("kind", "nan_policy")
)


@functools.partial(jax.jit, static_argnames=("p", "dev", "extremes"))
def _block_pass(x2, where, prefix, center, *, p, dev, extremes):
    """One block's share of a select pass over ``x`` (or ``|x - center|`` when ``dev``)."""
    v = jnp.abs(x2 - center[None, :]) if dev else x2
    isnan = jnp.isnan(v)
    valid = where[:, None] & ~isnan
    keys = _to_key(v)
    out = {"hist": _select_local_hist(keys, valid, p, prefix)}
    if p == 0:
        out["n_nan"] = jnp.sum(where[:, None] & isnan, axis=0, dtype=jnp.int32)
        if extremes:
            out["kmin"], out["kmax"] = _bucket_extremes(keys, valid)
        if dev:
            xnan = jnp.isnan(x2)
            terms = jnp.where(where[:, None] & ~xnan, v, 0.0)
            hi, lo = _dw_sum(terms, 0)
            out["dw"] = jnp.stack([hi, lo])
            out["n_ok"] = jnp.sum(where[:, None] & ~xnan, axis=0, dtype=jnp.int32)
    return out


@functools.partial(jax.jit, static_argnames=("kind", "omit"))
def _block_final(x2, hist0, kmin, kmax, n_valid, med, mad, mean_ad, any_nan, *, kind, omit):
    keys = _to_key(x2)
    isnan = jnp.isnan(x2)
    z = _zscores(x2, med, mad, mean_ad, omit, any_nan)
    pct = _approx_percentiles(keys, hist0, kmin, kmax, n_valid, kind, x2.dtype)
    pct = jnp.where(isnan, jnp.nan, pct) if omit else jnp.where(any_nan[None, :], jnp.nan, pct)
    return pct, z


def _blocks(io: _BlockIO, n: int, block_size: int):
    """``(start, stop, [block_size, F] padded block, where)`` for every block of ``io``."""
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        blk = io.read(start, stop, block_size).reshape(block_size, -1)
        yield start, stop, blk, np.arange(block_size) < (stop - start)


def _median_by_blocks(io, n, f, block_size, center, omit, dev, dtype):
    """Exact median of the columns of ``x`` (or of ``|x - center|`` when ``dev``), by passes
    over the blocks: ``(median [F], n_valid [F], any_nan [F], first-pass totals)``."""

    def run(p, prefix):
        total = None
        for _, _, blk, where in _blocks(io, n, block_size):
            extremes = p == 0 and not dev
            part = _block_pass(blk, where, prefix, center, p=p, dev=dev, extremes=extremes)
            if total is None:
                total = dict(part)
                continue
            for k, v in part.items():
                if k == "kmin":
                    total[k] = jnp.minimum(total[k], v)
                elif k == "kmax":
                    total[k] = jnp.maximum(total[k], v)
                elif k == "dw":
                    total[k] = jnp.concatenate([total[k], v], axis=0)
                else:
                    total[k] = total[k] + v
        return total

    key_dtype = _to_key(jnp.zeros((), dtype)).dtype
    first = run(0, jnp.zeros((f, 1), key_dtype))
    n_nan = first["n_nan"]
    n_valid = (n - n_nan).astype(dtype)
    n_col = n_valid[:, None] if omit else jnp.full((f, 1), float(n), dtype)
    idx, combine = _order_stat_indices(n_col, jnp.asarray([[0.5]], dtype), "linear")
    ranks = jnp.concatenate(idx, axis=1)

    def merged(p, prefix):
        return first["hist"] if p == 0 else run(p, prefix)["hist"]

    sel, _ = _select(ranks, merged, key_dtype)
    vals = _from_key(sel, dtype)
    med = combine([vals[:, i : i + 1] for i in range(len(idx))])[:, 0]
    any_nan = n_nan > 0
    med = jnp.where(n_valid > 0, med, jnp.nan) if omit else jnp.where(any_nan, jnp.nan, med)
    return med, n_valid, any_nan, first


def blocked_population_baseline(
    x: np.ndarray,
    *,
    block_size: int,
    out: BaselineResult | None = None,
    kind: str = "rank",
    nan_policy: str = "propagate",
    strategy: str = "auto",
    memory_limit: int = GATHER_LIMIT_BYTES,
) -> BaselineResult:
    """:func:`jaxstats.population_baseline` (agents on axis 0) of a host or on-disk array.

    ``"gather"`` loads ``x`` and computes in memory (exact, bit for bit). ``"select"``
    streams blocks of ``block_size`` agents: exact median, MAD and z-scores (up to a
    few ulps when the MAD is 0 and the mean-absolute-deviation fallback is used: its sum runs
    in another order) and percentiles within ``100 * H / n`` points (module docstring).
    ``"auto"`` gathers while ``x.nbytes <= memory_limit``.

    Args:
      x: ``[agents, ...]`` float host array (e.g. a ``numpy.memmap``); integer scores should
        be converted by the caller.
      block_size: agents per block for ``"select"``.
      out: optional :class:`jaxstats.BaselineResult` whose ``percentile`` and ``zscore`` are
        writable host arrays like ``x`` (e.g. memmaps); allocated in memory when ``None``.
      kind: percentile kind.
      nan_policy: ``"propagate"`` or ``"omit"``.
      strategy: ``"auto"``, ``"gather"`` or ``"select"``.
      memory_limit: bytes of ``x`` loaded at once under ``"auto"``.

    Returns:
      :class:`jaxstats.BaselineResult` of numpy arrays (``out``'s arrays when given).

    Raises:
      TypeError: if ``x`` is not a float numpy array.
      ValueError: for bad options, an empty agents axis or a mis-shaped ``out``.

    NaN and inf:
      As :func:`jaxstats.population_baseline`.

    Examples:
      >>> import numpy as np
      >>> x = np.array([1.0, 2.0, 3.0, 4.0, 100.0], np.float32)
      >>> b = blocked_population_baseline(x, block_size=2)  # small: "auto" loads it
      >>> float(b.median), float(b.mad), b.percentile
      (3.0, 1.0, array([ 20.,  40.,  60.,  80., 100.], dtype=float32))
    """
    fn = "blocked_population_baseline"
    _checks.check_option(fn, "kind", kind, PERCENTILE_KINDS)
    policies = tuple(p for p in NAN_POLICIES if p != "raise")
    _checks.check_option(fn, "nan_policy", nan_policy, policies)
    _checks.check_option(fn, "strategy", strategy, STRATEGIES)
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"{fn}: 'x' must be a float numpy array (or memmap); got {type(x).__name__}."
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{fn}: 'x' must have a non-empty agents axis 0; got shape {x.shape}.")
    if not _positive_int(block_size):
        raise ValueError(f"{fn}: 'block_size' must be a positive int; got {block_size!r}.")
    if out is None:
        out = BaselineResult(np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype), None, None)
    for name in ("percentile", "zscore"):
        arr = getattr(out, name)
        if not isinstance(arr, np.ndarray) or arr.shape != x.shape:
            raise ValueError(f"{fn}: out.{name} must be a host array of shape {x.shape}.")
    if strategy == "auto":
        strategy = "gather" if x.nbytes <= memory_limit else "select"
    if strategy == "gather":
        r = _baseline_jit(np.asarray(x), kind=kind, nan_policy=nan_policy)
        out.percentile[...] = np.asarray(r.percentile)
        out.zscore[...] = np.asarray(r.zscore)
        return BaselineResult(out.percentile, out.zscore, np.asarray(r.median), np.asarray(r.mad))
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(x.dtype))
    n = x.shape[0]
    feat = x.shape[1:]
    f = int(np.prod(feat, dtype=np.int64))
    omit = nan_policy == "omit"
    bs = int(block_size)
    io = _BlockIO(x, writable=False)
    ios = [io]
    try:
        zero = jnp.zeros((f,), dtype)
        med, n_valid, any_nan, first = _median_by_blocks(io, n, f, bs, zero, omit, False, dtype)
        mad, _, _, dfirst = _median_by_blocks(io, n, f, bs, med, omit, True, dtype)
        hi, lo = _dw_sum(dfirst["dw"], 0)
        mean_ad = _dw_value(hi, lo) / jnp.maximum(dfirst["n_ok"].astype(dtype), 1)
        w_pct = _BlockIO(out.percentile, writable=True)
        w_z = _BlockIO(out.zscore, writable=True)
        ios += [w_pct, w_z]
        for start, stop, blk, _ in _blocks(io, n, bs):
            pct, z = _block_final(
                blk, first["hist"], first["kmin"], first["kmax"], n_valid, med, mad, mean_ad,
                any_nan, kind=kind, omit=omit,
            )
            w_pct.write(start, np.asarray(pct)[: stop - start].reshape((stop - start,) + feat))
            w_z.write(start, np.asarray(z)[: stop - start].reshape((stop - start,) + feat))
    finally:
        for o in ios:
            o.close()
    return BaselineResult(
        out.percentile, out.zscore, np.asarray(med).reshape(feat), np.asarray(mad).reshape(feat)
    )
