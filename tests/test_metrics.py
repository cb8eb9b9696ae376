"""Metrics against cases small enough to compute by hand."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from train.metrics import evaluate, format_table, tune_thresholds

LABELS = ["a", "b", "c"]
# Column c has no positives and no predictions: excluded from macro-F1 and mAP.
Y_TRUE = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
Y_SCORE = np.array([[0.9, 0.1, 0.1], [0.4, 0.3, 0.1], [0.6, 0.8, 0.1], [0.2, 0.7, 0.1]])


def test_evaluate_hand_computed() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-division / undefined-metric spam
        m = evaluate(Y_TRUE, Y_SCORE, LABELS, [0.5, 0.5, 0.5])
    a, b, c = (m["per_class"][k] for k in LABELS)
    # a: pred [1,0,1,0] vs [1,1,0,0] -> tp 1, fp 1, fn 1
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((0.5, 0.5, 0.5, 2))
    # b: pred [0,0,1,1] vs [0,0,1,0] -> tp 1, fp 1, fn 0
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    # AP a: ranking + - + -  -> 0.5 * 1 + 0.5 * 2/3; AP b: top score is the positive
    assert a["ap"] == pytest.approx(5 / 6)
    assert b["ap"] == pytest.approx(1.0)
    assert c["ap"] is None and c["support"] == 0
    assert m["micro_f1"] == pytest.approx(4 / 7)  # tp 2, fp 2, fn 1
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["map"] == pytest.approx((5 / 6 + 1) / 2)
    assert m["accuracy"] == pytest.approx(9 / 12)
    assert m["n_clips"] == 4


def test_macro_f1_counts_false_positives_on_absent_class() -> None:
    truth = np.array([[1, 0], [0, 0]])
    score = np.array([[0.9, 0.9], [0.1, 0.1]])
    m = evaluate(truth, score, ["x", "y"], [0.5, 0.5])
    assert m["macro_f1"] == pytest.approx(0.5)  # x: 1.0, y: predicted but absent -> 0.0
    assert m["map"] == pytest.approx(1.0)


def test_per_class_thresholds_exact() -> None:
    m = evaluate(Y_TRUE, Y_SCORE, LABELS, [0.5, 0.75, 0.5])
    assert m["per_class"]["b"]["f1"] == pytest.approx(1.0)  # only 0.8 >= 0.75
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.5)
    m = evaluate(Y_TRUE, Y_SCORE, LABELS, [0.3, 0.75, 0.5])
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.8)  # pred [1,1,1,0]: tp 2, fp 1


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        evaluate(Y_TRUE, Y_SCORE[:, :2], LABELS, [0.5] * 3)


def test_tune_thresholds_picks_f1_optimum() -> None:
    truth = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]])
    score = np.array([[0.9, 0.9, 0.7], [0.35, 0.1, 0.2], [0.3, 0.1, 0.1], [0.1, 0.1, 0.1]])
    grid = [0.2, 0.32, 0.5, 0.8]
    # column 0: 0.2 -> F1 0.8, 0.32 -> 1.0, 0.5 -> 2/3, 0.8 -> 2/3
    # column 1: 0.2 .. 0.8 all give F1 1.0 -> tie goes to the one nearest the default
    # column 2: no positives -> default
    assert tune_thresholds(truth, score, grid=grid, default=0.5) == [0.32, 0.5, 0.5]
    assert tune_thresholds(truth, score, grid=grid, default=0.3) == [0.32, 0.32, 0.3]


def test_tune_thresholds_default_grid() -> None:
    truth = np.array([[1], [0], [1], [0]])
    score = np.array([[0.62], [0.58], [0.9], [0.1]])
    (t,) = tune_thresholds(truth, score)
    assert 0.58 < t <= 0.62  # only 0.6 on the default grid separates the classes


def test_format_table_lists_every_label() -> None:
    text = format_table(evaluate(Y_TRUE, Y_SCORE, LABELS, [0.5] * 3))
    for label in LABELS:
        assert label in text
    assert "micro-F1 0.571" in text and "mAP 0.917" in text
