"""Shared timing helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import platform
import time

import jax
import numpy as np


def timeit(fn, *args, repeats: int = 7, warmup: int = 3, min_time: float = 0.0) -> float:
    """Median wall time (seconds) of ``fn(*args)`` with its result blocked on.

    Warm-up calls (compilation, allocator warm-up) run outside the timed region. With
    ``min_time`` the repeat count grows until the timed total reaches it.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    total = 0.0
    while len(times) < repeats or total < min_time:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
        if len(times) > 10_000:
            break
    return float(np.median(times))


def machine_line() -> str:
    """One line naming the machine and software, for every printed table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return (
        f"machine: {cpu}, {os.cpu_count()} cores | jax {jax.__version__}, "
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}) | numpy {np.__version__}"
    )


def fmt_time(t: float) -> str:
    if t != t:
        return "-"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} us"


def print_table(headers, rows) -> None:
    """A plain Markdown table (readable in a terminal, pasteable into notes)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
