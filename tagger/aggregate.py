"""Turn per-window probabilities into per-track scores, labels and a timeline."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def aggregate(window_probs: np.ndarray, method: str = "mean", *, topk: int = 3) -> np.ndarray:
    """``[windows, labels]`` -> ``[labels]``: mean, max, or topk (mean of the k highest)."""
    if window_probs.ndim != 2 or window_probs.shape[0] == 0:
        raise ValueError("need a [windows, labels] array with at least one window")
    if method == "mean":
        return window_probs.mean(axis=0)
    if method == "max":
        return window_probs.max(axis=0)
    if method == "topk":
        k = max(1, min(topk, window_probs.shape[0]))
        return np.sort(window_probs, axis=0)[-k:].mean(axis=0)
    raise ValueError(f"unknown aggregation {method!r} (mean, max, topk)")


def select_labels(
    scores: np.ndarray, labels: Sequence[str], thresholds: Sequence[float]
) -> list[tuple[str, float]]:
    """Labels whose score reaches their threshold, highest score first."""
    chosen = [(label, float(s)) for label, s, t in zip(labels, scores, thresholds) if s >= t]
    return sorted(chosen, key=lambda pair: (-pair[1], pair[0]))


def timeline(
    window_probs: np.ndarray,
    labels: Sequence[str],
    thresholds: Sequence[float],
    *,
    hop_seconds: float,
    window_seconds: float,
    duration: float,
) -> dict[str, list[list[float]]]:
    """Per label, merged ``[start, end]`` seconds where windows pass the label's threshold.

    Windows overlap, so each one speaks for its central ``hop`` seconds (the first from 0,
    the last up to ``duration``): a label off in one window then leaves a visible gap.
    """
    n = len(window_probs)
    margin = max(0.0, (window_seconds - hop_seconds) / 2)
    result: dict[str, list[list[float]]] = {}
    for j, label in enumerate(labels):
        segments: list[list[float]] = []
        for i in np.flatnonzero(window_probs[:, j] >= thresholds[j]):
            start = 0.0 if i == 0 else i * hop_seconds + margin
            end = duration if i == n - 1 else min(duration, i * hop_seconds + margin + hop_seconds)
            start, end = round(float(start), 3), round(float(end), 3)
            if segments and start <= segments[-1][1]:
                segments[-1][1] = max(segments[-1][1], end)
            else:
                segments.append([start, end])
        if segments:
            result[label] = segments
    return result
