"""Which part of the spectrum makes a model hear drums? Drum score of each clip as is and filtered.

    python bench/drum_cues.py data/real-sounds/labels.csv --contains guitar
    python bench/drum_cues.py data/s12-samples --without drums --contains "acoustic guitar" --limit 25

For each clip: the clip-level drums probability (the model's aggregation over its windows)
of the audio as is, low-passed at 4 / 2 kHz, high-passed at 2 kHz, with the treble shelf at
4 kHz moved by -12 / +6 / +12 dB, and played backwards (same spectrum, attacks turned into
swells); then the share of clips at or above the model's drums threshold per variant.
Real-sounds only (never real-dev): it may guide what to try.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torchaudio.functional as AF

from tagger.catalog import load
from tagger.decode import decode
from tagger.windows import iter_window_blocks
from train.datasets import load_dataset
from train.loop import score_clips


def _twice(filt, x: torch.Tensor, rate: int, freq: float) -> torch.Tensor:
    return filt(filt(x, rate, freq), rate, freq)  # 4th order: a 2nd-order slope leaks too much


VARIANTS = {
    "as is": lambda x, r: x,
    "low-pass 4k": lambda x, r: _twice(AF.lowpass_biquad, x, r, 4000),
    "low-pass 2k": lambda x, r: _twice(AF.lowpass_biquad, x, r, 2000),
    "high-pass 2k": lambda x, r: _twice(AF.highpass_biquad, x, r, 2000),
    "treble -12 dB": lambda x, r: AF.treble_biquad(x, r, -12, central_freq=4000),
    "treble +6 dB": lambda x, r: AF.treble_biquad(x, r, 6, central_freq=4000),
    "treble +12 dB": lambda x, r: AF.treble_biquad(x, r, 12, central_freq=4000),
    "reversed": lambda x, r: x.flip(0),
}


def windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """The windows the tagger cuts (hop = window; the last one ends at the clip's end)."""
    blocks = iter_window_blocks([x.numpy()], window=size, hop=size, block=1 << 16)
    return torch.from_numpy(np.concatenate(list(blocks)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a manifest or rendered folder")
    parser.add_argument("--model", default=None)
    parser.add_argument("--contains", default=None, help="only clips with this label, or with this text in their path")
    parser.add_argument("--without", default=None, help="only clips without this label")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    torch.set_num_threads(2)
    model = load(args.model)
    rate, size = model.features.sample_rate, model.features.window_samples
    drums = model.labels.index("drums")
    clips = load_dataset(args.data, labels=model.labels)
    if args.contains:
        clips = [c for c in clips if args.contains in c.labels or args.contains in str(c.path)]
    if args.without:
        clips = [c for c in clips if args.without not in c.labels]
    clips = clips[: args.limit]
    print(f"{model.model_id}: drums threshold {model.thresholds[drums]:.2f}, {len(clips)} clips")
    print("clip | " + " | ".join(VARIANTS))
    scores = {name: [] for name in VARIANTS}
    for clip in clips:
        x = torch.as_tensor(decode(clip.path, sample_rate=rate), dtype=torch.float32).flatten()
        row = []
        for name, variant in VARIANTS.items():
            with torch.inference_mode():
                probs = torch.sigmoid(model.logits(windows(variant(x, rate), size)))[:, drums].numpy()
            score = float(score_clips([probs[:, None]], model.aggregation, model.topk)[0, 0])
            scores[name].append(score)
            row.append(f"{score:.2f}")
        print(f"{str(clip.path).split('/')[-1]} | " + " | ".join(row))
    threshold = model.thresholds[drums]
    print("drums on | " + " | ".join(f"{np.mean(np.array(v) >= threshold):.2f}" for v in scores.values()))


if __name__ == "__main__":
    main()
