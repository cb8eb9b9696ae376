"""The EfficientAT mn04 port: front end and network against the upstream reference outputs,
strict loading of the real weights, the AudioSet -> label table, label logits, BN folding."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tagger import efficientat
from tagger.model import TaggerModel

PRETRAINED = Path(__file__).resolve().parents[2] / "shared" / "pretrained"
WEIGHTS = PRETRAINED / "mn04_as_mAP_432.pt"
REFERENCE = PRETRAINED / "reference_outputs.json"
CLASS_LIST = PRETRAINED / "audioset_class_labels_indices.csv"

needs_reference = pytest.mark.skipif(not REFERENCE.is_file(), reason=f"reference outputs absent: {REFERENCE}")
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"mn04 weights absent: {WEIGHTS}")


def _sine_reference() -> tuple[torch.Tensor, dict]:
    """The reference's "sine440_0.5": 0.5 sin(2 pi 440 t), t computed in float32 (this
    exact recipe reproduces the reference log-mel statistics to 6 digits)."""
    case = next(c for c in json.loads(REFERENCE.read_text())["cases"] if c["signal"] == "sine440_0.5")
    t = (np.arange(96000) / 32000).astype(np.float32)
    return torch.from_numpy((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))[None], case


@needs_reference
def test_front_end_matches_the_reference():
    x, case = _sine_reference()
    spec = efficientat.EfficientATMel()(x)
    assert list(spec.shape) == case["logmel_shape"] == [1, 1, 128, 300]
    assert spec.mean().item() == pytest.approx(case["logmel_mean"], abs=2e-5)
    assert spec.std().item() == pytest.approx(case["logmel_std"], abs=2e-5)
    assert efficientat.feature_config().n_frames == 300


@needs_reference
@needs_weights
def test_network_loads_strictly_and_matches_the_reference():
    model = efficientat.Mn04.from_file(WEIGHTS)  # load_state_dict(strict=True) inside
    x, case = _sine_reference()
    with torch.no_grad():
        logits, embedding = model.audioset(x)
    assert logits.shape == (1, 527) and embedding.shape == (1, 384)
    np.testing.assert_allclose(embedding[0, :5].numpy(), case["embedding_first5"], atol=2e-3)
    np.testing.assert_allclose(logits[0, :5].numpy(), case["logits_first5"], atol=2e-3)
    probs = torch.sigmoid(logits[0])
    top = probs.topk(5)
    assert top.indices.tolist() == [index for index, _, _ in case["top5"]]
    np.testing.assert_allclose(top.values.numpy(), [p for _, _, p in case["top5"]], atol=2e-3)


def test_network_has_the_upstream_layout():
    """Same keys and shapes as the mn04 file describes (checked without the file)."""
    state = efficientat.MobileNetAT().state_dict()
    assert len(state) == 312
    assert sum(v.numel() for v in state.values()) == 993_485
    assert state["features.4.block.2.conc_se_layers.0.fc1.weight"].shape == (8, 32)
    assert state["features.16.0.weight"].shape == (384, 64, 1, 1)
    assert state["classifier.5.weight"].shape == (527, 512)


def test_label_map_follows_the_taxonomy():
    taxonomy = pytest.importorskip("train.taxonomy")
    assert efficientat.LABELS == tuple(taxonomy.LABELS)
    assert taxonomy.AUDIOSET_LABEL_MAP is efficientat.AUDIOSET_LABEL_MAP  # declared once


@pytest.mark.skipif(not CLASS_LIST.is_file(), reason=f"AudioSet class list absent: {CLASS_LIST}")
def test_label_map_names_the_intended_audioset_classes():
    with open(CLASS_LIST, newline="") as fh:
        names = {int(row["index"]): row["display_name"] for row in csv.DictReader(fh)}
    expected = {
        "piano": {"Piano", "Electric piano", "Harpsichord"},
        "organ": {"Organ", "Electronic organ", "Hammond organ"},
        "acoustic guitar": {"Acoustic guitar"},
        "electric guitar": {"Electric guitar", "Steel guitar, slide guitar"},
        "bass": {"Bass guitar", "Double bass"},
        "strings": {"Bowed string instrument", "String section", "Pizzicato"},
        "violin": {"Violin, fiddle"},
        "cello": {"Cello"},
        "brass": {"Brass instrument", "French horn", "Trombone"},
        "trumpet": {"Trumpet"},
        "saxophone": {"Saxophone"},
        "clarinet": {"Clarinet"},
        "flute": {"Flute"},
        "synth": {"Synthesizer"},
        "mallets": {"Tubular bells", "Mallet percussion", "Marimba, xylophone", "Glockenspiel", "Vibraphone"},
        "drums": {"Drum kit", "Drum machine", "Drum", "Snare drum", "Bass drum", "Cymbal", "Hi-hat"},
    }
    assert {label: {names[i] for i in idx} for label, idx in efficientat.AUDIOSET_LABEL_MAP.items()} == expected


def test_label_logits_are_the_max_over_each_labels_classes():
    torch.manual_seed(0)
    logits = torch.randn(4, 527)
    got = efficientat.label_logits(logits, list(efficientat.AUDIOSET_LABEL_MAP.values()))
    want = torch.stack([logits[:, list(idx)].amax(dim=1) for idx in efficientat.AUDIOSET_LABEL_MAP.values()], dim=1)
    assert got.shape == (4, 16)
    assert torch.equal(got, want)
    # so sigmoid(label logit) is the highest class probability
    assert torch.allclose(torch.sigmoid(got[:, 15]), torch.sigmoid(logits[:, [162, 163, 164, 165, 168, 171, 172]]).amax(1))


def test_inference_network_folds_batchnorms_with_the_same_outputs():
    torch.manual_seed(0)
    network = efficientat.EfficientATNet(128, 16)
    for module in network.modules():  # non-trivial BN statistics, as trained weights have
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    model = TaggerModel(network=network, labels=list(efficientat.LABELS), thresholds=[0.5] * 16,
                        features=efficientat.feature_config(), arch=efficientat.ARCH)
    folded = model.inference_network("cpu")  # BNs folded, conv+ReLU fused as the CPU pipeline runs it
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    waves = torch.randn(2, 96000) * 0.1
    with torch.no_grad():
        spec = model.front(waves)
        np.testing.assert_allclose(folded(spec.contiguous(memory_format=torch.channels_last)).numpy(),
                                   model.network(spec).numpy(), atol=1e-4)
