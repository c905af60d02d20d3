"""Loaders for the real evaluation data in ``../shared/data`` (never copied into the repo).

* NAB (Numenta Anomaly Benchmark, real series): ``<path>/data/<category>/<series>.csv`` and
  ``<path>/labels/combined_windows.json`` (labeled windows; a point is anomalous inside one).
* ASD (Application Server Dataset): ``<path>/omi-<k>.npz`` with ``train``/``test``/``test_label``
  and ``<path>/interpretation_label/omi-<k>.txt`` (segments with the anomalous metrics).

:func:`locate` tells which dataset a folder holds (or the parent ``data`` folder holding both)
and raises :class:`DataNotFound` with a readable message otherwise.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from typing import NamedTuple

import numpy as np

DEFAULT_ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


class DataNotFound(FileNotFoundError):
    """The requested dataset folder is missing or does not look like NAB or ASD."""


def _is_nab(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "labels", "combined_windows.json")) and os.path.isdir(
        os.path.join(path, "data")
    )


def _is_asd(path: str) -> bool:
    return bool(glob.glob(os.path.join(path, "omi-*.npz")))


def locate(path: str) -> dict[str, str]:
    """``{"nab": folder, "asd": folder}`` for the datasets found at ``path`` (a dataset folder
    or a parent folder holding ``nab/`` and/or ``asd/``).

    Raises:
      DataNotFound: if ``path`` does not exist or holds neither dataset.
    """
    if not os.path.isdir(path):
        raise DataNotFound(
            f"data folder not found: {path!r}. Pass the folder of NAB (with data/ and labels/) "
            f"or ASD (with omi-*.npz), or their parent (default location {DEFAULT_ROOT!r})."
        )
    found = {}
    for name, test in (("nab", _is_nab), ("asd", _is_asd)):
        if test(path):
            found[name] = path
        elif test(os.path.join(path, name)):
            found[name] = os.path.join(path, name)
    if not found:
        raise DataNotFound(
            f"{path!r} holds neither NAB (data/ + labels/combined_windows.json) nor ASD "
            "(omi-*.npz) data, nor nab/ or asd/ subfolders with them."
        )
    return found


# --------------------------------------------------------------------------------------------
# NAB
# --------------------------------------------------------------------------------------------


class Nab(NamedTuple):
    names: list[str]  # "<category>/<series>.csv"
    values: list[np.ndarray]  # per series float64 [t]
    labels: list[np.ndarray]  # per series bool [t]: inside a labeled window
    windows: list[list[tuple[int, int]]]  # per series inclusive index windows
    timestamps: list[np.ndarray]  # per series datetime64[s] [t]


def load_nab(path: str, *, categories: tuple[str, ...] | None = None) -> Nab:
    """Read every real NAB series with its labeled windows (as index ranges).

    Args:
      path: the NAB folder (holding ``data/`` and ``labels/``).
      categories: optional subset, e.g. ``("realTweets",)``.
    """
    if not _is_nab(path):
        raise DataNotFound(f"no NAB data at {path!r} (expected data/ and labels/combined_windows.json).")
    with open(os.path.join(path, "labels", "combined_windows.json")) as f:
        windows = json.load(f)
    names, values, labels, wins, stamps = [], [], [], [], []
    for key in sorted(windows):
        cat = key.split("/")[0]
        if not cat.startswith("real") or (categories and cat not in categories):
            continue
        file = os.path.join(path, "data", key)
        if not os.path.isfile(file):
            continue
        with open(file, newline="") as f:
            rows = list(csv.reader(f))[1:]
        ts = np.array([r[0][:19] for r in rows], dtype="datetime64[s]")
        x = np.array([float(r[1]) for r in rows])
        y = np.zeros(len(ts), bool)
        w_idx = []
        for a, b in windows[key]:
            inside = (ts >= np.datetime64(a[:19])) & (ts <= np.datetime64(b[:19]))
            if inside.any():
                idx = np.nonzero(inside)[0]
                w_idx.append((int(idx[0]), int(idx[-1])))
                y |= inside
        names.append(key)
        values.append(x)
        labels.append(y)
        wins.append(w_idx)
        stamps.append(ts)
    if not names:
        raise DataNotFound(f"no NAB series found under {path!r} for categories {categories}.")
    return Nab(names, values, labels, wins, stamps)


# --------------------------------------------------------------------------------------------
# ASD
# --------------------------------------------------------------------------------------------


class Asd(NamedTuple):
    names: list[str]  # "omi-1" .. "omi-12"
    train: list[np.ndarray]  # per server float32 [t_train, 19] (omi-12 is shorter)
    test: np.ndarray  # float32 [servers, 4320, 19]
    labels: np.ndarray  # bool [servers, 4320]
    segments: list[list[tuple[int, int, tuple[int, ...]]]]  # (start, end, 0-based metrics)


def load_asd(path: str) -> Asd:
    """Read the 12 ASD servers (train, test, point labels, interpreted segments)."""
    files = sorted(glob.glob(os.path.join(path, "omi-*.npz")), key=lambda p: int(p.rsplit("-", 1)[1][:-4]))
    if not files:
        raise DataNotFound(f"no ASD data at {path!r} (expected omi-<k>.npz files).")
    names, train, test, labels, segments = [], [], [], [], []
    for file in files:
        name = os.path.basename(file)[:-4]
        with np.load(file, allow_pickle=False) as z:
            train.append(np.asarray(z["train"], np.float32))
            test.append(np.asarray(z["test"], np.float32))
            labels.append(np.asarray(z["test_label"]).astype(bool))
        segs = []
        txt = os.path.join(path, "interpretation_label", name + ".txt")
        if os.path.isfile(txt):
            with open(txt) as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    span, _, metrics = line.partition(":")
                    s, e = (int(v) for v in span.split("-"))
                    ms = tuple(int(m) - 1 for m in metrics.split(",") if m.strip())
                    segs.append((s, e, ms))
        names.append(name)
        segments.append(segs)
    return Asd(names, train, np.stack(test), np.stack(labels), segments)
