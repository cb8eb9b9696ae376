"""How a model's thresholds fare on solos, small ensembles and full mixes (validation data only).

    python bench/threshold_strata.py --model efficientat-mn04 data/mn04-val-samples data/mn04-val-fonts

Scores the clips once through the tagger's BatchRunner with the model's own aggregation, splits
them by how many labelled instruments they hold (1, 2-3, 4+), and prints per group: micro-F1 and
labels per clip with the model's thresholds, then micro-F1 for one threshold for every label
(the `--threshold` option) over a grid. An AudioSet model such as mn04 scores an instrument high
only when it dominates the sound, so the threshold that suits solos and the one that suits
dense mixes differ; this prints by how much, so the README's advice rests on our own data.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from choose_thresholds import validation_windows
from train.loop import score_clips

GRID = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
GROUPS = {"solo (1)": (1, 1), "2-3 parts": (2, 3), "4+ parts": (4, 99)}


def main() -> None:
    model, window_probs, targets = validation_windows(__doc__)
    scores = score_clips(window_probs, model.aggregation, model.topk)
    truth = targets >= 0.5
    own = scores >= np.asarray(model.thresholds)[None, :]
    parts = truth.sum(axis=1)
    print(f"{model.model_id}, aggregation {model.aggregation}, {len(truth)} clips")
    print(f"{'group':10s} {'clips':>5s} {'own F1':>7s} {'labels/clip':>11s}  " + " ".join(f"{t:>5g}" for t in GRID) + "  best one threshold")
    for name, (lo, hi) in GROUPS.items():
        rows = (parts >= lo) & (parts <= hi)
        if not rows.any():
            continue
        f1 = lambda pred: f1_score(truth[rows], pred[rows], average="micro", zero_division=0)  # noqa: E731
        grid = [f1(scores >= t) for t in GRID]
        print(f"{name:10s} {int(rows.sum()):5d} {f1(own):7.3f} {own[rows].sum(axis=1).mean():11.1f}  "
              + " ".join(f"{g:5.2f}" for g in grid) + f"  {GRID[int(np.argmax(grid))]:g}")


if __name__ == "__main__":
    main()
