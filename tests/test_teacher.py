"""Training with a teacher on real, unlabelled audio (train.teacher, tagger train --teacher):
calibrated targets, teacher windows inside each batch, the CLI end to end with a randomly
initialised mn04 (no network, no shared weights needed)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from media import render_with_real_stand_ins
from tagger.cli import main
from tagger.efficientat import AUDIOSET_LABEL_MAP
from tagger.model import load_model, new_model
from train import loop
from train.teacher import calibrate
from train.taxonomy import LABELS

pytestmark = pytest.mark.slow


def test_calibration_maps_the_teacher_threshold_to_one_half() -> None:
    probs = np.array([[0.05, 0.2, 0.9], [0.01, 0.5, 0.2]])
    out = calibrate(probs, [0.05, 0.5, 0.2])
    assert out[0, 0] == pytest.approx(0.5) and out[1, 1] == pytest.approx(0.5) and out[1, 2] == pytest.approx(0.5)
    assert out[1, 0] < 0.5 < out[0, 2]
    soft = calibrate(probs, [0.05, 0.5, 0.2], temperature=4.0)
    assert 0.5 < soft[0, 2] < out[0, 2]  # a temperature softens


def test_teacher_windows_fill_their_share_of_each_batch() -> None:
    model = new_model(list(LABELS), arch_args={"widths": [8, 16]})
    n = model.features.window_samples
    clip = loop.Clip(path="x.flac", labels=("piano",), activity={"piano": ((0.0, 10.0),)})
    audio = [loop._Audio(clip, np.random.default_rng(0).standard_normal(n * 2).astype(np.float32) * 0.1, 0.0)]
    targets = np.full((5, len(LABELS)), 0.25, np.float32)
    teacher = loop.TeacherData(np.zeros((5, n), np.float32), targets)
    seen = []

    def loss_fn(logits, y):
        seen.append(y.clone())
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)

    config = loop.TrainConfig(batch_size=8, mixup=0.0, teacher_fraction=0.25)
    net = model.network
    net.train()
    optimizer = torch.optim.AdamW(net.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    opt = loop._Optimisation(model, optimizer, scaler, loss_fn, (), config, total_steps=10,
                             steps_per_epoch=5, device=torch.device("cpu"))
    loop._train_step(opt, 0, audio, random.Random(0), teacher)
    y = seen[0]
    assert y.shape == (8, len(LABELS))
    assert torch.all(y[-2:] == 0.25)  # 25 % of 8: the teacher's soft targets
    assert torch.all(y[:6, 0] == 1.0)  # the rest: rendered windows with their labels (piano)


def test_teacher_class_scores_reach_the_pooled_features_of_the_teacher_windows_only() -> None:
    """--teacher-classes: the extra head reads the pooled features of exactly the teacher rows
    of the batch, and its loss, times the weight, is added to the tagging loss."""
    model = new_model(list(LABELS), arch_args={"widths": [8, 16]})
    n = model.features.window_samples
    clip = loop.Clip(path="x.flac", labels=("piano",), activity={"piano": ((0.0, 10.0),)})
    audio = [loop._Audio(clip, np.random.default_rng(0).standard_normal(n * 2).astype(np.float32) * 0.1, 0.0)]
    rng = np.random.default_rng(1)
    classes = np.tile(rng.uniform(0, 1, (1, 7)), (5, 1)).astype(np.float16)  # every window alike: no matter which are drawn
    teacher = loop.TeacherData(rng.standard_normal((5, n)).astype(np.float32) * 0.1,
                               np.full((5, len(LABELS)), 0.25, np.float32), {}, classes)
    net = model.network
    net.train()
    pooled, head_inputs = [], []
    embed = net.embed
    net.embed = lambda spec: pooled.append(embed(spec)) or pooled[-1]
    head = torch.nn.Linear(32, 7)
    weight, bias = head.weight.detach().clone(), head.bias.detach().clone()

    def class_head(features: torch.Tensor) -> torch.Tensor:
        head_inputs.append(features.detach().clone())
        return head(features)

    config = loop.TrainConfig(batch_size=8, mixup=0.0, teacher_fraction=0.25, teacher_classes=0.7, spec_augment=False)
    optimizer = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()))
    opt = loop._Optimisation(model, optimizer, torch.amp.GradScaler("cuda", enabled=False),
                             lambda logits, y: logits.sum() * 0, (), config, total_steps=10, steps_per_epoch=5,
                             device=torch.device("cpu"), class_head=class_head)
    loss = loop._train_step(opt, 0, audio, random.Random(0), teacher)
    assert torch.equal(head_inputs[0], pooled[0][6:8].detach())  # 25 % of 8: the last two rows
    targets = torch.from_numpy(classes[:2].astype(np.float32))
    expected = 0.7 * torch.nn.functional.binary_cross_entropy_with_logits(head_inputs[0] @ weight.T + bias, targets)
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.equal(head.weight, weight)  # the head learned


def test_train_with_a_teacher_end_to_end(tmp_path) -> None:
    from tagger.efficientat import Mn04

    weights = tmp_path / "mn04-random.pt"
    torch.manual_seed(0)
    torch.save(Mn04().network.net.state_dict(), weights)
    data, real = render_with_real_stand_ins(tmp_path)
    out = tmp_path / "student.pt"
    args = ["train", str(data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
            "--widths", "8,16", "--window-seconds", "2", "--jobs", "1", "--teacher", "efficientat-mn04",
            "--teacher-weights", str(weights), "--teacher-audio", str(real)]
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.stderr
    info = load_model(out).training["teacher"]
    assert info["name"] == "efficientat-mn04" and info["windows"] == 4  # 2 files x 2 windows of 2 s
    (cached,) = (tmp_path / "cache" / "tagger" / "teacher").glob("*.npz")  # computed once, cached
    with np.load(cached) as scores:  # each label's score is its strongest AudioSet class's
        assert scores["classes"].shape == (4, 527)
        strongest = np.stack([scores["classes"][:, list(group)].max(axis=1) for group in AUDIOSET_LABEL_MAP.values()], axis=1)
        np.testing.assert_allclose(scores["probs"], strongest, atol=1e-3)
    distilled = tmp_path / "distilled.pt"
    result = CliRunner().invoke(main, [*args[:2], "--out", str(distilled), *args[4:], "--teacher-classes", "0.5"], env=env)
    assert result.exit_code == 0, result.stderr
    plain_keys = set(load_model(out).network.state_dict())
    assert set(load_model(distilled).network.state_dict()) == plain_keys  # the class head is training's only
    assert load_model(distilled).training["config"]["teacher_classes"] == 0.5
    lone = CliRunner().invoke(main, [*args[:2], "--out", str(distilled), "--epochs", "1", "--teacher-classes", "0.5"], env=env)
    assert lone.exit_code == 2 and "--teacher-classes needs" in lone.stderr
    bad = CliRunner().invoke(main, args[:-2], env=env)
    assert bad.exit_code == 2 and "go together" in bad.stderr
    # --init: fine-tuning starts from the given model's weights (lr 0: they stay as they were)
    tuned = tmp_path / "tuned.pt"
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tuned), "--epochs", "1", "--steps-per-epoch", "1",
                                       "--batch-size", "8", "--window-seconds", "2", "--jobs", "1", "--lr", "0",
                                       "--init", str(out)])
    assert result.exit_code == 0, result.stderr
    student, fine = load_model(out), load_model(tuned)
    assert fine.arch_args == {"widths": [8, 16]} and str(out) in fine.training["init"]
    for (name, a), b in zip(student.network.named_parameters(), fine.network.parameters()):
        assert torch.equal(a, b), name
    wrong = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "x.pt"), "--epochs", "1",
                                      "--steps-per-epoch", "1", "--jobs", "1", "--init", str(out)])  # 3-s windows
    assert wrong.exit_code == 1 and "differ" in wrong.stderr
    # --init with wider --widths grows the model (train.widen); its original channels come first
    grown = tmp_path / "grown.pt"
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(grown), "--epochs", "1", "--steps-per-epoch", "1",
                                       "--batch-size", "8", "--window-seconds", "2", "--jobs", "1", "--lr", "0",
                                       "--init", str(out), "--widths", "12,24"])
    assert result.exit_code == 0, result.stderr
    wide = load_model(grown)
    assert wide.arch_args == {"widths": [12, 24]} and "widened from [8, 16] to [12, 24]" in wide.training["init"]
    assert torch.equal(wide.network.features[1].weight[:8], student.network.features[1].weight)
    narrow = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "n.pt"), "--epochs", "1",
                                       "--steps-per-epoch", "1", "--window-seconds", "2", "--jobs", "1",
                                       "--init", str(out), "--widths", "4,16"])
    assert narrow.exit_code == 1 and "cannot narrow" in narrow.stderr


def test_balanced_sources_draw_a_small_family_as_often_as_a_big_one() -> None:
    model = new_model(list(LABELS), arch_args={"widths": [8, 16]})
    n = model.features.window_samples
    signal = np.random.default_rng(1).standard_normal(n).astype(np.float32) * 0.1

    def audio(label: str, source: str) -> loop._Audio:
        clip = loop.Clip(path="x.flac", labels=(label,), activity={label: ((0.0, 10.0),)}, source=source)
        return loop._Audio(clip, signal, 0.0)

    small, big = [audio("piano", "samples")], [audio("drums", "fluid") for _ in range(30)]
    seen = []

    def loss_fn(logits, y):
        seen.append(y.clone())
        return logits.sum() * 0

    config = loop.TrainConfig(batch_size=200, mixup=0.0)
    optimizer = torch.optim.AdamW(model.network.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    for by_source in (None, [small, big]):
        opt = loop._Optimisation(model, optimizer, scaler, loss_fn, (), config, total_steps=10,
                                 steps_per_epoch=5, device=torch.device("cpu"))
        loop._train_step(opt, 0, small + big, random.Random(0), None, by_source)
    piano = LABELS.index("piano")
    plain, balanced = (float(y[:, piano].mean()) for y in seen)
    assert plain < 0.12  # 1 clip in 31
    assert 0.35 < balanced < 0.65  # one source in two
