"""Build, cache and register the native CPU kernels (``*.cc`` in this folder) with the XLA FFI.

The C++ sources ship with the package and are compiled on first use with the system C++
compiler against the FFI headers of the installed jaxlib (``jax.ffi.include_dir()``), into one
shared library in a per-user cache (``$JAXSTATS_CACHE_DIR``, default ``~/.cache/jaxstats``),
keyed by a hash of the sources, the compiler flags, the jaxlib version and the host CPU's
instruction-set flags (the library is built for the host CPU, ``-march=native``, so a cache
shared between different machines never hands one a library it cannot run; set
``JAXSTATS_NATIVE_MARCH=0`` for a portable build). Compilation takes a few seconds, once.

Without a compiler (or with ``JAXSTATS_NATIVE=0``) nothing is built: :func:`load` returns
``None``, :func:`status` says why, and jaxstats falls back to numpy (through a host
callback) or XLA's own sort. Results are the same either way; only speed differs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import jax
import numpy as np
from jax import lax

__all__ = ["FLOAT_DTYPES", "cpu_only", "float_path", "load", "on_cpu", "status", "TARGETS"]

#: C++ sources (in this folder) and the FFI targets each defines.
SOURCES = {
    "kernels.cc": ("JaxstatsArgsort", "JaxstatsSort", "JaxstatsTieBounds", "JaxstatsDenseRank"),
    "reduce.cc": ("JaxstatsCompensatedSum", "JaxstatsDifferenceSum", "JaxstatsCenteredSum"),
    "pav.cc": ("JaxstatsPav",),
    "select.cc": ("JaxstatsSelectPair",),
}
#: Every FFI target, in registration order.
TARGETS = tuple(t for targets in SOURCES.values() for t in targets)

_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-w", "-DJAXSTATS_RADIX_BITS=8"]
_lock = threading.Lock()
_state: dict = {"lib": None, "tried": False, "status": "not loaded yet"}


def _source_paths() -> list[str]:
    return [os.path.join(os.path.dirname(__file__), name) for name in SOURCES]


def _flags() -> list[str]:
    flags = list(_FLAGS)
    if os.environ.get("JAXSTATS_NATIVE_MARCH", "1") != "0":
        flags.append("-march=native")
    return flags


def _cpu_signature() -> bytes:
    """The host CPU's model and instruction-set flags (what ``-march=native`` depends on)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith((b"flags", b"model name"))]
        return b"\n".join(sorted(set(lines)))
    except OSError:
        import platform

        return (platform.machine() + platform.processor()).encode()


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(cxx: str) -> str:
    import jaxlib

    srcs = _source_paths()
    flags = _flags()
    code = b""
    for src in srcs:
        with open(src, "rb") as f:
            code += f.read()
    key = hashlib.sha256(
        code + " ".join(flags).encode() + jaxlib.__version__.encode() + cxx.encode() + _cpu_signature()
    ).hexdigest()[:16]
    cache = os.environ.get("JAXSTATS_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxstats"
    )
    os.makedirs(cache, exist_ok=True)
    out = os.path.join(cache, f"kernels-{key}.so")
    if os.path.exists(out):
        return out
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    cmd = [cxx, *flags, "-I", jax.ffi.include_dir(), *srcs, "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"compiler failed ({proc.returncode}): {proc.stderr[-2000:]}")
        os.replace(tmp, out)  # atomic: concurrent builders never see a half-written library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load():
    """The loaded kernel library (targets registered for the CPU platform), or ``None``."""
    if _state["tried"]:
        return _state["lib"]
    with _lock:
        if _state["tried"]:
            return _state["lib"]
        try:
            if os.environ.get("JAXSTATS_NATIVE", "1") == "0":
                raise RuntimeError("disabled by JAXSTATS_NATIVE=0")
            cxx = _compiler()
            if cxx is None:
                raise RuntimeError("no C++ compiler found (set CXX or install g++/clang++)")
            path = _build(cxx)
            lib = ctypes.cdll.LoadLibrary(path)
            for name in TARGETS:
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
                # Rows (leading axes) are independent: let the SPMD partitioner keep a
                # sharded batch axis local instead of gathering the operand.
                jax.ffi.register_ffi_target_as_batch_partitionable(name)
            _state.update(lib=lib, status=f"loaded {path}")
        except Exception as e:  # noqa: BLE001 - any failure means: use the fallbacks
            _state.update(lib=None, status=f"unavailable: {e}")
        finally:
            _state["tried"] = True
    return _state["lib"]


def status() -> str:
    """Human-readable state of the native kernels (loaded path, or why they are not used)."""
    load()
    return _state["status"]


def cpu_only() -> bool:
    """True when every JAX device is a CPU: callers then trace the native branch alone instead
    of a ``lax.platform_dependent`` switch (whose branches would need identical varying-axis
    types inside ``shard_map``)."""
    try:
        return all(d.platform == "cpu" for d in jax.devices())
    except RuntimeError:  # pragma: no cover
        return False


#: The value dtypes of the float kernels (compensated reductions, PAV, pair selection).
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_path(dtype, enabled: bool = True) -> str:
    """``"native"`` when a float kernel can take ``dtype`` (and the caller's switch ``enabled``
    is on and the library is loaded), else ``"xla"``. Static: decided at trace time."""
    if enabled and np.dtype(dtype) in FLOAT_DTYPES and load() is not None:
        return "native"
    return "xla"


def on_cpu(native_fn, xla_fn, *args, cpu_only: bool):
    """``native_fn(*args)`` on CPU and ``xla_fn(*args)`` on every other platform.

    With ``cpu_only`` (every device a CPU; callers pass their module's patchable
    ``_cpu_only()``) the native branch is traced alone: no ``platform_dependent`` switch, whose
    branches would need identical varying-axis types inside ``shard_map``.
    """
    if cpu_only:
        return native_fn(*args)
    return lax.platform_dependent(*args, cpu=native_fn, default=xla_fn)
