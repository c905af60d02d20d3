"""Detection-quality metrics and the peer detectors the demo compares against.

Metrics (numpy only): average precision (AUC-PR), best F1 over thresholds, detection delay of
labeled events and a NAB-style early-detection score. Peers: PyOD's ECOD (fit on a training
part, scores each point) and River's HalfSpaceTrees (streaming). Both are optional: if a
package is missing, ``available()`` says so and the demo prints a note instead of a row.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _pr_points(score: np.ndarray, label: np.ndarray):
    """Precision and recall at every distinct threshold (descending scores; ties grouped)."""
    s = np.asarray(score, np.float64).ravel()
    y = np.asarray(label, bool).ravel()
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each tie group
    tp, fp = tp[last], fp[last]
    pos = max(int(y.sum()), 1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / pos
    return precision, recall, s[last]


def average_precision(score: np.ndarray, label: np.ndarray) -> float:
    """AUC-PR as average precision ``sum_k (R_k - R_{k-1}) P_k`` (sklearn's definition).

    NaN scores are dropped. Returns NaN when there is no positive label.
    """
    y = np.asarray(label, bool)
    if not y[~np.isnan(np.asarray(score, np.float64))].any():
        return float("nan")
    p, r, _ = _pr_points(score, label)
    return float(np.sum(np.diff(np.r_[0.0, r]) * p))


def best_f1(score: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """``(best F1, its threshold)`` over all thresholds ``score >= t``."""
    p, r, t = _pr_points(score, label)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    i = int(np.argmax(f1)) if f1.size else 0
    return (float(f1[i]), float(t[i])) if f1.size else (float("nan"), float("nan"))


def events_of(label: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end]`` (inclusive) of True in a 1-D label array."""
    y = np.asarray(label, bool).astype(np.int8)
    d = np.diff(np.r_[0, y, 0])
    starts = np.nonzero(d == 1)[0]
    ends = np.nonzero(d == -1)[0] - 1
    return list(zip(starts.tolist(), ends.tolist()))


def detection_delays(alarm: np.ndarray, label: np.ndarray, *, slack: int = 0) -> list[float]:
    """Per labeled event of one series: steps from its start to the first alarm in
    ``[start, end + slack]``; NaN if the event is missed."""
    a = np.asarray(alarm, bool)
    out = []
    for s, e in events_of(label):
        hit = np.nonzero(a[s : min(a.size, e + slack + 1)])[0]
        out.append(float(hit[0]) if hit.size else float("nan"))
    return out


def false_alarm_events(alarm: np.ndarray, label: np.ndarray) -> int:
    """Number of alarm onsets (rising edges) outside every labeled event of one series."""
    a = np.asarray(alarm, bool)
    rise = a & ~np.r_[False, a[:-1]]
    return int(np.sum(rise & ~np.asarray(label, bool)))


def nab_score(
    detections: list[np.ndarray], windows: list[list[tuple[int, int]]], lengths: list[int]
) -> float:
    """NAB-style normalized score (standard profile), 0 = never detect, 100 = perfect.

    Per series: each labeled window's *first* detection earns ``sigmoid(y) = 2 / (1 + e^{5y})
    - 1`` with ``y = (i - end) / (end - start + 1)`` (about 0.99 at the window start, 0 at its
    end); a window without detection costs ``A_FN = 1``; each detection outside every window
    costs ``A_FP = 0.11``. The first 15% of each series is NAB's probationary period and is
    not scored. Simplification: NAB weights false positives just after a window by the
    sigmoid; here every false positive weighs ``A_FP``. The raw total is normalized as
    ``100 (raw - null) / (perfect - null)`` with ``null`` = no detection, ``perfect`` = every
    window detected at its start.

    Args:
      detections: per series, a bool array (True where the detector fires, e.g. alarm onsets).
      windows: per series, the labeled windows ``(start, end)`` as inclusive indices.
      lengths: per series, its length.
    """
    a_tp, a_fp, a_fn = 1.0, 0.11, 1.0
    raw = null = perfect = 0.0
    for det, wins, n in zip(detections, windows, lengths):
        det = np.asarray(det, bool).copy()
        det[: int(0.15 * n)] = False
        inside = np.zeros(n, bool)
        for s, e in wins:
            inside[s : e + 1] = True
            hit = np.nonzero(det[s : e + 1])[0]
            if hit.size:
                y = (s + hit[0] - e) / (e - s + 1)
                raw += a_tp * (2.0 / (1.0 + np.exp(5.0 * y)) - 1.0)
            else:
                raw -= a_fn
            null -= a_fn
            perfect += a_tp * (2.0 / (1.0 + np.exp(5.0 * (-(e - s) / (e - s + 1)))) - 1.0)
        raw -= a_fp * float(np.sum(det & ~inside))
    return 100.0 * (raw - null) / max(perfect - null, 1e-12)


def onsets(alarm: np.ndarray) -> np.ndarray:
    """Rising edges of a bool array along its last axis."""
    a = np.asarray(alarm, bool)
    prev = np.concatenate([np.zeros(a.shape[:-1] + (1,), bool), a[..., :-1]], axis=-1)
    return a & ~prev


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------


def available() -> dict[str, str | None]:
    """Which peers can run: ``{name: None}`` if importable, else the reason."""
    out: dict[str, str | None] = {}
    try:
        import pyod.models.ecod  # noqa: F401

        out["ECOD (PyOD)"] = None
    except Exception as e:  # pragma: no cover - depends on the environment
        out["ECOD (PyOD)"] = f"pyod not importable ({type(e).__name__}); pip install pyod"
    try:
        import river.anomaly  # noqa: F401

        out["HalfSpaceTrees (River)"] = None
    except Exception as e:  # pragma: no cover
        out["HalfSpaceTrees (River)"] = f"river not importable ({type(e).__name__}); pip install river"
    return out


class PeerRun(NamedTuple):
    scores: np.ndarray  # [series, time] anomaly scores over the scored part (NaN where missing)
    seconds: float  # wall time of fit + scoring
    n_obs: int  # agent-observations processed (fit + score)


def run_ecod(train: list[np.ndarray], test: list[np.ndarray]) -> PeerRun:
    """PyOD ECOD fit per series on its training part, then scoring its test part.

    Args:
      train: per series ``[t_train, features]`` (NaN rows dropped).
      test: per series ``[t_test, features]`` (NaN rows get a NaN score).
    """
    import warnings

    from pyod.models.ecod import ECOD

    n = max(len(x) for x in test)
    out = np.full((len(test), n), np.nan)
    t0 = time.perf_counter()
    n_obs = 0
    for i, (tr, te) in enumerate(zip(train, test)):
        tr = tr[np.all(np.isfinite(tr), axis=1)]
        ok = np.all(np.isfinite(te), axis=1)
        det = ECOD()
        with warnings.catch_warnings():  # scipy's skew warns on constant training columns
            warnings.simplefilter("ignore", RuntimeWarning)
            det.fit(tr)
            if ok.any():
                out[i, np.nonzero(ok)[0]] = det.decision_function(te[ok])
        n_obs += len(tr) + int(ok.sum())
    return PeerRun(out, time.perf_counter() - t0, n_obs)


def run_hst(
    train: list[np.ndarray], test: list[np.ndarray], *, n_trees: int = 10, height: int = 8,
    window_size: int = 250, seed: int = 0,
) -> PeerRun:
    """River HalfSpaceTrees per series, streaming: learns on the training part, then scores
    each test point before learning it (``score_one`` then ``learn_one``). River's default
    forest (10 trees of height 8, window 250).

    Features are min-max scaled with the training part's range (HST expects [0, 1]).
    """
    from river import anomaly

    n = max(len(x) for x in test)
    out = np.full((len(test), n), np.nan)
    t0 = time.perf_counter()
    n_obs = 0
    for i, (tr, te) in enumerate(zip(train, test)):
        trf = tr[np.all(np.isfinite(tr), axis=1)]
        lo = trf.min(axis=0) if len(trf) else np.zeros(tr.shape[1])
        hi = trf.max(axis=0) if len(trf) else np.ones(tr.shape[1])
        span = np.where(hi > lo, hi - lo, 1.0)
        model = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        names = [f"f{j}" for j in range(tr.shape[1])]
        for row in trf:
            model.learn_one(dict(zip(names, ((row - lo) / span).tolist())))
        n_obs += len(trf)
        for t, row in enumerate(te):
            if not np.all(np.isfinite(row)):
                continue
            x = dict(zip(names, ((row - lo) / span).tolist()))
            out[i, t] = model.score_one(x)
            model.learn_one(x)
            n_obs += 1
    return PeerRun(out, time.perf_counter() - t0, n_obs)
