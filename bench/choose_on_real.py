"""Choose a model's thresholds on real recordings (bench/real_sounds.py), never on real-dev.

    python bench/real_sounds.py data/real-sounds
    python bench/choose_on_real.py data/real-sounds/labels.csv data/mn04-val-samples data/mn04-val-fonts \
        --model efficientat-mn04

Renders are outside an AudioSet model's domain (mn04 hears "Music" in them and scores
instruments low), so thresholds tuned on renders alone fire on almost anything real. This
compares, by micro-F1 on real recordings it was not tuned on (interleaved halves of the real
set, both ways):

  A  the model as shipped (nothing tuned);
  B  one global threshold tuned on the real half;
  C  the shipped per-label thresholds, floored at a global level tuned on the real half;
  D  per-label thresholds tuned on the validation renders plus the real half,

each with the shipped aggregations, and prints every candidate's micro-F1 on the renders
too (with thresholds tuned on the whole real set; for D, which tunes on the renders as well,
the cross-half number over interleaved halves of the renders is the honest one). The best of B-D replaces A only when it
beats A by MARGIN; the chosen values (tuned on the whole real set) print as Python, and with
``--out FILE`` the model is written there with them (same weights; how they were chosen is
recorded in its training notes).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from sklearn.metrics import f1_score

from choose_thresholds import GRID, tune
from tagger.catalog import load
from tagger.infer import pick_device
from tagger.model import TaggerModel, save_checkpoint
from train.datasets import load_dataset, load_manifest
from train.loop import SHIPPED_AGGREGATIONS, _clip_targets, load_audio, predict_clips, score_clips

# The grid of choose_thresholds (fine and low, for mn04) widened to the default's range.
WIDE_GRID = tuple(sorted({*GRID, *(round(t, 2) for t in np.arange(0.6, 0.96, 0.05))}))
MARGIN = 0.05  # cross-half micro-F1 a candidate must gain over the shipped model (50 clips: noisy)


def micro_f1(targets: np.ndarray, scores: np.ndarray, thresholds) -> float:
    return float(f1_score(targets >= 0.5, scores >= np.asarray(thresholds), average="micro", zero_division=0))


def cross_half(targets: np.ndarray, scores: np.ndarray, thresholds_for: Callable[[np.ndarray], np.ndarray]) -> float:
    """Micro-F1 on clips the thresholds were not tuned on: ``thresholds_for(mask)`` tunes on
    the clips in ``mask``, one interleaved half (both halves cover every set), and is scored
    on the other half; the mean of both ways."""
    halves = np.arange(len(targets)) % 2 == 0
    return float(np.mean([micro_f1(targets[~on], scores[~on], thresholds_for(on)) for on in (halves, ~halves)]))


def best_floor(targets: np.ndarray, scores: np.ndarray, base, grid=WIDE_GRID) -> float:
    """The floor g (first of the best) for thresholds max(base, g)."""
    return float(grid[int(np.argmax([micro_f1(targets, scores, np.maximum(base, g)) for g in grid]))])


def with_thresholds(model: TaggerModel, thresholds, aggregation: str, note: str) -> TaggerModel:
    """``model`` (in place) with the chosen thresholds and aggregation, and ``note`` on how."""
    model.thresholds = [float(t) for t in thresholds]
    model.aggregation = aggregation
    model.training = {**model.training, "thresholds": note}
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("real", help="manifest of real recordings (bench/real_sounds.py)")
    parser.add_argument("renders", nargs="+", help="validation renders (unseen seeds)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="write the model with the chosen thresholds here (only when the rule picks some)")
    args = parser.parse_args()

    model = load(args.model)
    device = pick_device(args.device)
    network = model.to(device)
    rate, labels = model.features.sample_rate, model.labels
    real_audio = load_audio(load_manifest(args.real, labels=labels), rate)
    render_audio = load_audio([c for root in args.renders for c in load_dataset(root, labels=labels)], rate)
    real_windows, render_windows = predict_clips(network, real_audio, device), predict_clips(network, render_audio, device)
    real_t, render_t = _clip_targets(real_audio, labels), _clip_targets(render_audio, labels)
    shipped = np.asarray(model.thresholds)
    everything, all_renders = np.ones(len(real_t), bool), np.ones(len(render_t), bool)
    print(f"{len(real_t)} real clips, {len(render_t)} validation renders; model {model.name} {model.version}")

    rows = {}
    for method in SHIPPED_AGGREGATIONS:
        real_s = score_clips(real_windows, method, model.topk)
        render_s = score_clips(render_windows, method, model.topk)
        # Each tuner sees the real clips in ``on`` and the renders in ``r_on``.
        tuners: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
            "B global": lambda on, r_on: np.full(len(labels), best_floor(real_t[on], real_s[on], 0.0)),
            "C floor": lambda on, r_on: np.maximum(shipped, best_floor(real_t[on], real_s[on], shipped)),
            "D per-label": lambda on, r_on: np.asarray(tune(np.concatenate([render_t[r_on], real_t[on]]),
                                                            np.concatenate([render_s[r_on], real_s[on]]), "per-label")),
        }
        if method == model.aggregation:
            tuners = {"A shipped": lambda on, r_on: shipped, **tuners}
        for name, tuner in tuners.items():
            cross = cross_half(real_t, real_s, lambda on: tuner(on, all_renders))
            # D tunes on the renders too: its honest render score is cross-half as well
            render_cross = cross_half(render_t, render_s, lambda r_on: tuner(everything, r_on))
            thresholds = tuner(everything, all_renders)
            rows[(name, method)] = (cross, micro_f1(real_t, real_s, thresholds),
                                    micro_f1(render_t, render_s, thresholds), thresholds)
            print(f"{name:12s} {method:5s}: real cross-half micro-F1 {cross:.3f} (tuned on all: "
                  f"{rows[(name, method)][1]:.3f}); renders micro-F1 {rows[(name, method)][2]:.3f} "
                  f"(cross-half {render_cross:.3f}); "
                  f"thresholds {' '.join(f'{t:g}' for t in thresholds)}")

    shipped_key = ("A shipped", model.aggregation)
    best = max((k for k in rows if k != shipped_key), key=lambda k: rows[k][0])
    gain = rows[best][0] - rows[shipped_key][0]
    if gain >= MARGIN:
        print(f"\nchosen: {best[0]}, aggregation {best[1]} (+{gain:.3f} cross-half micro-F1 on real recordings)")
        print("THRESHOLDS = (" + ", ".join(f"{t:g}" for t in rows[best][3]) + ")")
        print(f"AGGREGATION = {best[1]!r}")
        if args.out:
            note = (f"{best[0]} on real recordings by bench/choose_on_real.py ({args.real}; "
                    f"cross-half micro-F1 {rows[best][0]:.3f} vs {rows[shipped_key][0]:.3f} shipped)")
            save_checkpoint(with_thresholds(model.to("cpu"), rows[best][3], best[1], note), args.out)
            print(f"wrote {args.out}")
    else:
        print(f"\nkeep the shipped thresholds: the best candidate ({best[0]}, {best[1]}) gains {gain:+.3f} < {MARGIN}")


if __name__ == "__main__":
    main()
