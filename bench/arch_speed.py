"""Inference speed of model files on this machine: prints windows/s and x real time.

    python bench/arch_speed.py MODEL.pt [MODEL.pt ...] [--threads 2] [--batch-size 64]

x real time counts the tagger's overlapping windows (hop from the model's features), i.e.
how many seconds of music one second of model time covers, features included.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tagger.infer import BatchRunner, pick_device
from tagger.model import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for path in args.models:
        model = load_model(path)
        runner = BatchRunner(model, pick_device("cpu"), args.batch_size)
        windows = np.random.default_rng(0).standard_normal((args.batch_size, model.features.window_samples)).astype(np.float32)
        runner.predict(windows)
        start = time.perf_counter()
        for _ in range(args.repeats):
            runner.predict(windows)
        per_second = args.batch_size * args.repeats / (time.perf_counter() - start)
        params = sum(p.numel() for p in model.network.parameters())
        print(f"{path}: {model.arch} {model.arch_args or ''} {params:,} params, {per_second:.0f} windows/s, "
              f"{per_second * model.features.hop_seconds:.0f}x real time ({args.threads} threads)")


if __name__ == "__main__":
    main()
