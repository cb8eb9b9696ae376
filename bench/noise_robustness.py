"""How background noise changes a model's tags, on labelled renders (never on real-dev).

    python bench/noise_robustness.py data/mn04-val-samples data/mn04-val-fonts \
        --model models/default.pt --model runs/other.pt

Renders are digitally clean; real recordings carry room tone and hiss. This adds pink noise
(1/f, fixed seed; ``train.loop.coloured``, which also colours the training noise) at each SNR below the clip's RMS, scores the clips with each model's own
aggregation and thresholds, and prints micro-F1, mAP, labels per clip and how often drums and
bass are called on clips that have none.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from tagger.catalog import load
from train.datasets import load_dataset
from train.loop import _clip_targets, coloured, load_audio, predict_clips, score_clips
from train.metrics import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="labelled render folders")
    parser.add_argument("--model", action="append", default=None, help="model name or checkpoint (repeatable)")
    parser.add_argument("--snr", default="none,40,30,20,10", help="comma-separated SNRs in dB; none = clean")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    snrs = [None if s == "none" else float(s) for s in args.snr.split(",")]
    print("| model | SNR dB | micro-F1 | mAP | labels per clip (true) | drums on drum-free clips | bass on bass-free clips |")
    print("|---|---|---|---|---|---|---|")
    for name in args.model or ["default"]:
        model = load(name)
        clips = [c for d in args.data for c in load_dataset(d, labels=model.labels)]
        audios = load_audio(clips, model.features.sample_rate, jobs=2, log=lambda _m: None)
        truth = _clip_targets(audios, model.labels)
        drums, bass = model.labels.index("drums"), model.labels.index("bass")
        for snr in snrs:
            gen = torch.Generator().manual_seed(0)  # the same noise for every model
            noisy = []
            for a in audios:
                if snr is not None:
                    pink = coloured(torch.randn(1, a.signal.size, generator=gen), torch.ones(1, 1))[0].numpy()
                    rms = float(np.sqrt(np.mean(a.signal ** 2))) + 1e-9
                    a = dataclasses.replace(a, signal=a.signal + pink * rms * 10 ** (-snr / 20))
                noisy.append(a)
            scores = score_clips(predict_clips(model, noisy, torch.device("cpu")), model.aggregation, model.topk)
            m = evaluate(truth, scores, model.labels, model.thresholds)
            pred = scores >= np.asarray(model.thresholds)[None, :]
            print(f"| {model.model_id} | {'clean' if snr is None else f'{snr:g}'} | {m['micro_f1']:.3f} | {m['map']:.3f} | "
                  f"{pred.sum(1).mean():.2f} ({truth.sum(1).mean():.2f}) | {pred[truth[:, drums] == 0, drums].mean():.2f} | "
                  f"{pred[truth[:, bass] == 0, bass].mean():.2f} |", flush=True)


if __name__ == "__main__":
    main()
