"""Render-vs-real invariance (domain-adversarial training, Ganin & Lempitsky 2015).

A model fitted only on renders can learn cues that only renders have. Next to the tagging
loss, a small discriminator learns to tell rendered windows from windows of real, unlabelled
recordings, reading the network's pooled features; a gradient-reversal layer between them
makes the features *worse* for that discriminator, so the network is pushed towards features
that renders and real music share. The discriminator only exists during training: the
checkpoint and inference are unchanged.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tagger.decode import DecodeError, decode
from train.teacher import audio_files, even_windows

Log = Callable[[str], None]


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back is multiplied by ``-weight``."""
    return _ReverseGradient.apply(x, weight)


def ramp(progress: float) -> float:
    """DANN's schedule: 0 at the start of training, ~1 from two-thirds on (2 / (1 + e^-10p) - 1),
    so the features first serve tagging before the discriminator pulls at them."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


class DomainHead(nn.Module):
    """Render (0) vs real (1), one logit per pooled-feature vector."""

    def __init__(self, in_features: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)


@dataclass
class DomainData:
    """Windows of real, unlabelled recordings at the model rate, and what the checkpoint records."""

    windows: np.ndarray  # [N, window_samples] float32
    info: dict = field(default_factory=dict)


def real_windows(dirs: Sequence[str | os.PathLike], *, sample_rate: int, window_seconds: float,
                 max_windows_per_file: int = 60, log: Log = print) -> DomainData:
    """Non-silent, non-overlapping windows of every audio file under ``dirs`` (at most
    ``max_windows_per_file`` per file, evenly spaced). Undecodable files are reported and skipped."""
    files = audio_files(dirs)
    if not files:
        raise ValueError("no audio files under " + ", ".join(map(str, dirs)))
    size = int(round(window_seconds * sample_rate))
    windows = []
    for path in files:
        try:
            audio = decode(path, sample_rate=sample_rate)
        except (DecodeError, OSError) as exc:
            log(f"domain audio: skipped {path}: {exc}")
            continue
        windows.append(even_windows(audio, size, max_windows_per_file))
    windows = [w for w in windows if len(w)]
    if not windows:
        raise ValueError("no usable audio among " + ", ".join(map(str, dirs)))
    out = np.concatenate(windows).astype(np.float32)
    return DomainData(out, {"audio": [str(d) for d in dirs], "files": len(files), "windows": int(len(out))})
