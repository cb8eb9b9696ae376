"""Accuracy-vs-speed table of model files, as Markdown (for models/MODEL_CARD.md).

    python bench/model_table.py runs/*.pt [--threads 2] [--batch-size 64]

Accuracy comes from the metrics stored in each checkpoint (validation from training;
held-out from `tagger eval DATA --model M --record heldout`). Speed is measured here:
windows per second through features + CNN on the CPU, and x real time for the tagger's
overlapping windows (hop from the model's features).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tagger.infer import BatchRunner, pick_device
from tagger.model import TaggerModel, load_model


def windows_per_second(model: TaggerModel, *, batch_size: int, repeats: int) -> float:
    runner = BatchRunner(model, pick_device("cpu"), batch_size)
    windows = np.random.default_rng(0).standard_normal((batch_size, model.features.window_samples)).astype(np.float32)
    runner.predict(windows)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        runner.predict(windows)
    return batch_size * repeats / (time.perf_counter() - start)


def _metric(metrics: dict, split: str, key: str) -> str:
    value = (metrics.get(split) or {}).get(key)
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | arch | params | train steps | val mAP | held-out micro F1 | held-out macro F1 | held-out mAP | windows/s | x real time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in args.models:
        model = load_model(path)
        speed = windows_per_second(model, batch_size=args.batch_size, repeats=args.repeats)
        params = sum(p.numel() for p in model.network.parameters())
        config = model.training.get("config", {})
        steps = (model.training.get("best_epoch") or 0) * (config.get("steps_per_epoch") or 0)
        widths = model.arch_args.get("widths")
        arch = model.arch + (f" {'-'.join(map(str, widths))}" if widths else "")
        print(f"| {model.model_id} | {arch} | {params:,} | {steps} | {_metric(model.metrics, 'validation', 'map')} "
              f"| {_metric(model.metrics, 'heldout', 'micro_f1')} | {_metric(model.metrics, 'heldout', 'macro_f1')} "
              f"| {_metric(model.metrics, 'heldout', 'map')} | {speed:.0f} | {speed * model.features.hop_seconds:.0f} |")
    print(f"\nspeed: CPU, {args.threads} threads, batch {args.batch_size}; x real time = windows/s x hop seconds")


if __name__ == "__main__":
    main()
