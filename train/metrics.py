"""Multi-label evaluation metrics and per-class threshold tuning (scikit-learn based).

A label is predicted when its score is >= its threshold, here and in tune_thresholds.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


def _as_binary(y_true: np.ndarray) -> np.ndarray:
    # Targets may come as float multi-hot (or soft): binarise so sklearn sees a label matrix.
    return (np.asarray(y_true, dtype=np.float64) >= 0.5).astype(np.int64)


def _check(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth, score = _as_binary(y_true), np.asarray(y_score, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != score.shape:
        raise ValueError(f"y_true {truth.shape} and y_score {score.shape} must be equal 2-D shapes")
    return truth, score


def evaluate(
    y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str], thresholds: Sequence[float]
) -> dict:
    """Clip-level metrics for (n_clips, n_labels) targets and scores.

    macro_f1 averages over classes with support or predictions (a class absent from both
    has no defined F1); map averages AP over classes with at least one positive (AP of the
    others is None). accuracy is element-wise, only for comparing with InstruNET.
    """
    truth, score = _check(y_true, y_score)
    if truth.shape[1] != len(labels) or len(thresholds) != len(labels):
        raise ValueError("labels and thresholds must match the number of columns")
    pred = (score >= np.asarray(thresholds, dtype=np.float64)[None, :]).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, pred, average=None, zero_division=0
    )
    per_class: dict[str, dict] = {}
    aps: list[float] = []
    f1s: list[float] = []
    for i, label in enumerate(labels):
        ap = float(average_precision_score(truth[:, i], score[:, i])) if support[i] > 0 else None
        if ap is not None:
            aps.append(ap)
        if support[i] > 0 or pred[:, i].any():
            f1s.append(float(f1[i]))
        per_class[label] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "ap": ap,
            "support": int(support[i]),
        }
    n_clips = int(truth.shape[0])
    return {
        "micro_f1": float(f1_score(truth, pred, average="micro", zero_division=0)) if n_clips else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "map": float(np.mean(aps)) if aps else None,
        "accuracy": float((truth == pred).mean()) if truth.size else 0.0,
        "n_clips": n_clips,
        "per_class": per_class,
    }


def tune_thresholds(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    grid: Sequence[float] | None = None,
    default: float = 0.5,
) -> list[float]:
    """Per class, the grid threshold with the best F1 on the given (validation) data.

    Ties go to the threshold nearest ``default`` (then the lower one), so flat regions do
    not drift to extremes; classes without positives get ``default``.
    """
    truth, score = _check(y_true, y_score)
    candidates = sorted(DEFAULT_GRID if grid is None else grid, key=lambda t: (abs(t - default), t))
    thresholds = []
    for i in range(truth.shape[1]):
        if not truth[:, i].any():
            thresholds.append(float(default))
            continue
        f1s = [f1_score(truth[:, i], score[:, i] >= t, zero_division=0) for t in candidates]
        thresholds.append(float(candidates[int(np.argmax(f1s))]))  # argmax keeps the first tie
    return thresholds


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def format_table(metrics: dict) -> str:
    """Plain-text per-class table plus the summary line, for stderr/logs."""
    width = max([len("label"), *(len(label) for label in metrics["per_class"])])
    lines = [f"{'label':<{width}}  support  precision  recall      f1      ap"]
    for label, row in metrics["per_class"].items():
        lines.append(
            f"{label:<{width}}  {row['support']:7d}  {_fmt(row['precision']):>9}  {_fmt(row['recall']):>6}"
            f"  {_fmt(row['f1']):>6}  {_fmt(row['ap']):>6}"
        )
    lines.append(
        f"clips {metrics['n_clips']}  micro-F1 {_fmt(metrics['micro_f1']).strip()}"
        f"  macro-F1 {_fmt(metrics['macro_f1']).strip()}  mAP {_fmt(metrics['map']).strip()}"
        f"  accuracy {_fmt(metrics['accuracy']).strip()}"
    )
    return "\n".join(lines)
