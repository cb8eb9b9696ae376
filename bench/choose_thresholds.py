"""Choose a model's aggregation and thresholds on validation data (never on real-dev).

    TAGGER_SAMPLES_DIR=... tagger dataset render data/mn04-val-samples --tracks 200 --soundfont samples \
        --production --solo-fraction 0.5 --seed 17 --sample-rate 32000
    python bench/choose_thresholds.py --model efficientat-mn04 data/mn04-val-samples

Scores the clips once through the tagger's BatchRunner, then, per shipped aggregation,
compares per-label thresholds (train.metrics.tune_thresholds) with one global threshold,
both chosen on one half of the tracks and scored on the other half (and the other way
round), so the choice between them is made on data neither was tuned on. Prints the
chosen values, tuned on all the clips, as Python for tagger/catalog.py.
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import f1_score

from tagger.catalog import load
from tagger.infer import pick_device
from tagger.model import TaggerModel
from train.datasets import load_dataset
from train.loop import SHIPPED_AGGREGATIONS, _clip_targets, load_audio, predict_clips, score_clips
from train.metrics import evaluate, tune_thresholds

# mn04's instrument probabilities are small (AudioSet labels are sparse): a finer, lower grid
# than the training loop's 0.05..0.95.
GRID = tuple(round(t, 3) for t in [*np.arange(0.01, 0.1, 0.01), *np.arange(0.1, 0.6, 0.025)])


CLEARLY = 0.02  # F1 margin for "clearly better"


def global_threshold(targets: np.ndarray, scores: np.ndarray) -> float:
    f1s = [f1_score(targets >= 0.5, scores >= t, average="micro", zero_division=0) for t in GRID]
    return float(GRID[int(np.argmax(f1s))])


def tune(targets: np.ndarray, scores: np.ndarray, kind: str) -> list[float]:
    if kind == "global":
        return [global_threshold(targets, scores)] * targets.shape[1]
    # Labels without positives keep the global threshold rather than an arbitrary 0.5.
    return tune_thresholds(targets, scores, grid=GRID, default=global_threshold(targets, scores))


def dataset_windows(model_name: str | None, datasets: list[str], device_name: str = "auto") -> tuple[TaggerModel, list[np.ndarray], np.ndarray]:
    """The model, per-clip window probabilities of the datasets' clips (the tagger's
    BatchRunner) and clip targets. Shared with bench/choose_on_unseen.py."""
    model = load(model_name)
    clips = [c for root in datasets for c in load_dataset(root, labels=model.labels)]
    audios = load_audio(clips, model.features.sample_rate)
    device = pick_device(device_name)
    return model, predict_clips(model.to(device), audios, device), _clip_targets(audios, model.labels)


def validation_windows(doc: str | None) -> tuple[TaggerModel, list[np.ndarray], np.ndarray]:
    """Parse ``DATASETS --model --device``, then :func:`dataset_windows`. Shared with
    bench/threshold_strata.py."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--model", default=None, help="model name or path")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    return dataset_windows(args.model, args.datasets, args.device)


def main() -> None:
    model, window_probs, targets = validation_windows(__doc__)
    halves = np.arange(len(targets)) % 2 == 0  # interleaved tracks: both halves cover every font and seed

    results = {}
    for method in SHIPPED_AGGREGATIONS:
        scores = score_clips(window_probs, method, model.topk)
        for kind in ("per-label", "global"):
            cross = []
            for tune_on in (halves, ~halves):
                thresholds = tune(targets[tune_on], scores[tune_on], kind)
                m = evaluate(targets[~tune_on], scores[~tune_on], model.labels, thresholds)
                cross.append((m["micro_f1"], m["macro_f1"]))
            micro, macro = np.mean(cross, axis=0)
            results[(method, kind)] = (micro, macro, tune(targets, scores, kind), evaluate(targets, scores, model.labels, [0.5] * len(model.labels))["map"])
            print(f"{method:5s} {kind:9s}: cross-half micro-F1 {micro:.3f}, macro-F1 {macro:.3f}; mAP {results[(method, kind)][3]:.3f}")
    # Per-label thresholds, unless one global threshold generalises clearly better across
    # halves (both F1s higher by CLEARLY); then the aggregation with the best macro F1
    # (as train.loop.choose_aggregation decides).
    kinds = {}
    for method in SHIPPED_AGGREGATIONS:
        per, one = results[(method, "per-label")], results[(method, "global")]
        kinds[method] = "global" if one[0] - per[0] > CLEARLY and one[1] - per[1] > CLEARLY else "per-label"
    method = max(SHIPPED_AGGREGATIONS, key=lambda m: results[(m, kinds[m])][1])
    best = (method, kinds[method])
    micro, macro, thresholds, _ = results[best]
    print(f"\nchosen: aggregation {best[0]}, {best[1]} thresholds (cross-half micro-F1 {micro:.3f}, macro-F1 {macro:.3f})")
    print("THRESHOLDS = (" + ", ".join(f"{t:g}" for t in thresholds) + ")")
    print(f"AGGREGATION = {best[0]!r}")


if __name__ == "__main__":
    main()
