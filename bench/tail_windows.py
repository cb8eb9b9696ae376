"""What the last window does to short tracks' tags, on labelled renders (never real-dev).

    python bench/tail_windows.py data/mn04-val-samples data/mn04-val-fonts --model models/default.pt \
        --seconds 1,1.5,2,2.5,3.5,5,6.5,8,10

The tagger cuts windows at 0, hop, 2*hop, ... and a last one for the tail that the last full
window did not reach. Until 2026-12-02 that tail window was zero-padded; training never sees
padded windows, so it now ends at the track's end, full of audio. Until 2026-12-07 a track
shorter than one window was zero-padded too; it is now repeated from its start until the
window is full. "zero" is the old way for both, "now" what ``tagger.windows`` does (the same
number of windows either way). Each clip is cut to its first N seconds (labels from its
activity in that span) and scored both ways with the model's own aggregation and thresholds.
Prints micro-F1, mAP, labels per clip and drums on drum-free clips.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from tagger.catalog import load
from tagger.infer import BatchRunner
from train.datasets import load_dataset, window_targets
from train.loop import clip_windows, load_audio, score_clips
from train.metrics import evaluate


def zero_padded(windows: np.ndarray, signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """The tagger's windows as they were: the tail window from the next hop on, and a track
    shorter than one window, zero-padded."""
    n = len(signal)
    if n < window or (n - window) % hop:
        windows = windows.copy()
        piece = signal[(len(windows) - 1) * hop:]
        windows[-1] = 0.0
        windows[-1, : piece.size] = piece
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="labelled render folders")
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", default="1,1.5,2,2.5,3.5,5,6.5,8,10", help="comma-separated track lengths")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.model)
    labels, features = model.labels, model.features
    clips = [c for d in args.data for c in load_dataset(d, labels=labels)]
    audios = load_audio(clips, features.sample_rate, jobs=2, log=lambda _m: None)
    runner = BatchRunner(model, torch.device("cpu"))
    drums = labels.index("drums")
    print(f"{model.model_id}: {len(audios)} clips")
    print("| seconds | tail window | micro-F1 | mAP | labels per clip (true) | drums on drum-free clips |")
    print("|---|---|---|---|---|---|")
    for seconds in (float(s) for s in args.seconds.split(",")):
        truth = np.array([window_targets(a.clip, labels, a.offset, a.offset + seconds) for a in audios])
        cut = [dataclasses.replace(a, signal=a.signal[: int(seconds * features.sample_rate)]) for a in audios]
        for mode in ("zero", "now"):
            probs = []
            for a in cut:
                w = clip_windows(a, features)
                if mode == "zero":
                    w = zero_padded(w, a.signal, features.window_samples, features.hop_samples)
                probs.append(runner.predict(w))
            scores = score_clips(probs, model.aggregation, model.topk)
            m = evaluate(truth, scores, labels, model.thresholds)
            pred = scores >= np.asarray(model.thresholds)[None, :]
            print(f"| {seconds:g} | {mode} | {m['micro_f1']:.3f} | {m['map']:.3f} | {pred.sum(1).mean():.2f} "
                  f"({truth.sum(1).mean():.2f}) | {pred[truth[:, drums] == 0, drums].mean():.2f} |", flush=True)


if __name__ == "__main__":
    main()
