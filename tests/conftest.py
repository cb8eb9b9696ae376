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
