"""Shared fixtures: a tiny model built at test time (the shipped one is not needed)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/media.py

from tagger.features import FeatureConfig  # noqa: E402
from tagger.model import new_model, save_checkpoint  # noqa: E402

TINY_LABELS = ["piano", "drums", "bass", "flute"]
TINY_FEATURES = FeatureConfig(window_seconds=1.0, hop_seconds=0.5, n_mels=32, n_fft=512, hop_length=256)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = new_model(TINY_LABELS, arch="tagnet", arch_args={"widths": [8, 16]}, features=TINY_FEATURES, name="tiny", version="1")
    # Spread thresholds so a random network still tags some labels and not others.
    model.thresholds = [0.0, 1.0, 0.0, 1.0]
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(model, path)
    return path


# The constant model's window probabilities, whatever the audio (zero head weights, bias = logit).
CONSTANT_PROBS = [0.9, 0.7, 0.4, 0.2]
CONSTANT_THRESHOLDS = [0.5, 0.75, 0.35, 0.5]  # -> piano (0.9) and bass (0.4); drums 0.7 misses 0.75


@pytest.fixture(scope="session")
def constant_model_path(tmp_path_factory) -> Path:
    """Scores known exactly and thresholds between them: label selection, --threshold and the
    written scores become visible end to end (tiny_model_path's 0/1 thresholds hide them)."""
    torch.manual_seed(0)
    model = new_model(TINY_LABELS, arch="tagnet", arch_args={"widths": [8, 16]}, features=TINY_FEATURES, name="constant", version="1")
    head = model.network.head[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.logit(torch.tensor(CONSTANT_PROBS)))
    model.thresholds = list(CONSTANT_THRESHOLDS)
    path = tmp_path_factory.mktemp("model") / "constant.pt"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="session")
def window_model_path(tmp_path_factory) -> Path:
    """The tiny network (window probabilities that vary with the audio), mean aggregation, k 3 and
    thresholds 0.5: tests derive their expectations from its own window probabilities."""
    torch.manual_seed(0)
    model = new_model(TINY_LABELS, arch="tagnet", arch_args={"widths": [8, 16]}, features=TINY_FEATURES, name="window", version="1")
    model.aggregation, model.topk = "mean", 3
    path = tmp_path_factory.mktemp("model") / "window.pt"
    save_checkpoint(model, path)
    return path
