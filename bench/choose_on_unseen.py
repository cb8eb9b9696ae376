"""Re-choose a model's per-label thresholds on renders of a font family its training never saw.

    tagger dataset render data/proxy-csound --tracks 200 --soundfont <sf_GMbank.sf2> --seed 201
    python bench/choose_on_unseen.py data/proxy-csound --model models/default.pt --out runs/S.pt
    tagger eval data/proxy-opl3 --model runs/S.pt          # judge on yet another unseen family

A model's thresholds are chosen on its own validation split, whose fonts it trained on; users'
music comes from sources it never heard. Tuning on a family outside training (never the
freepats held-out family, never real-dev) asks what threshold a label needs on *unfamiliar*
sound. Weights and aggregation stay; the cross-half micro-F1 (tuned on one half of the tracks,
scored on the other) says how well the thresholds carry within the family. Judge the result
with ``tagger eval`` on other sets: this script only chooses.
"""
from __future__ import annotations

import argparse

import numpy as np

from choose_on_real import cross_half, micro_f1, with_thresholds
from choose_thresholds import dataset_windows
from tagger.model import save_checkpoint
from train.loop import score_clips
from train.metrics import tune_thresholds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", help="renders of a font family the model never trained on")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="where to write the model with the new thresholds")
    args = parser.parse_args()

    model, window_probs, targets = dataset_windows(args.model, args.datasets, args.device)
    scores = score_clips(window_probs, model.aggregation, model.topk)
    shipped = np.asarray(model.thresholds)

    cross = cross_half(targets, scores, lambda on: tune_thresholds(targets[on], scores[on]))
    chosen = tune_thresholds(targets, scores)
    print(f"{len(targets)} clips; shipped thresholds micro-F1 {micro_f1(targets, scores, shipped):.3f}, "
          f"re-chosen cross-half {cross:.3f} (tuned on all: {micro_f1(targets, scores, chosen):.3f})")
    for label, old, new in zip(model.labels, shipped, chosen):
        print(f"  {label:16s} {old:.2f} -> {new:.2f}")
    note = f"per-label, chosen on renders of a font family training never saw ({', '.join(args.datasets)}; bench/choose_on_unseen.py)"
    save_checkpoint(with_thresholds(model.to("cpu"), chosen, model.aggregation, note), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
