"""Render-vs-real invariance (train.domain, tagger train --domain-audio): the gradient
reversal, the real windows' share of each batch and what reaches the loss, the CLI end to end."""
from __future__ import annotations

import random

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from media import render_with_real_stand_ins
from tagger.cli import main
from tagger.model import load_model, new_model
from train import loop
from train.domain import DomainData, DomainHead, ramp, real_windows, reverse_gradient
from train.taxonomy import LABELS


def test_gradient_reversal_is_identity_forward_and_negates_scaled_gradients() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_ramp_starts_at_zero_and_approaches_one() -> None:
    assert ramp(0.0) == 0.0
    assert 0.45 < ramp(0.1) < 0.5 < ramp(0.5) < ramp(1.0)
    assert ramp(1.0) > 0.99 and ramp(2.0) == ramp(1.0)


def test_real_windows_skip_silence_cap_per_file_and_report_bad_files(tmp_path) -> None:
    rate = 16000
    rng = np.random.default_rng(0)
    loud = (0.1 * rng.standard_normal(rate * 10)).astype(np.float32)
    loud[2 * rate:4 * rate] = 0.0  # one silent 2-s window
    sf.write(tmp_path / "a.flac", loud, rate)
    sf.write(tmp_path / "b.wav", (0.1 * rng.standard_normal(rate * 30)).astype(np.float32), rate)
    (tmp_path / "broken.mp3").write_bytes(b"not audio")
    logged = []
    data = real_windows([tmp_path], sample_rate=rate, window_seconds=2.0, max_windows_per_file=6, log=logged.append)
    assert data.windows.shape == (4 + 6, 2 * rate)  # a: 5 windows minus the silent one; b: 15 capped at 6
    assert data.info["files"] == 3 and data.info["windows"] == 10
    assert any("broken.mp3" in line for line in logged)
    with pytest.raises(ValueError, match="no audio files"):
        real_windows([tmp_path / "a.flac.missing"], sample_rate=rate, window_seconds=2.0)


def _step(domain: DomainData, weight: float, says_real: bool = False):
    """One training step of a tiny tagnet with domain data; what the tagging loss saw, the
    discriminator's accuracy, and the gradients that reached the stem and the discriminator.
    ``says_real``: a discriminator that calls every window real."""
    torch.manual_seed(0)
    model = new_model(list(LABELS), arch_args={"widths": [8, 16]})
    n = model.features.window_samples
    clip = loop.Clip(path="x.flac", labels=("piano",), activity={"piano": ((0.0, 10.0),)})
    audio = [loop._Audio(clip, np.random.default_rng(0).standard_normal(n * 2).astype(np.float32) * 0.1, 0.0)]
    seen = []

    def loss_fn(logits, y):
        seen.append(y.clone())
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)

    config = loop.TrainConfig(batch_size=8, mixup=0.0, domain_fraction=0.25, domain_weight=weight, spec_augment=False)
    head = DomainHead(32)
    if says_real:
        with torch.no_grad():
            head.net[2].weight.zero_()
            head.net[2].bias.fill_(10.0)
    optimizer = torch.optim.SGD(list(model.network.parameters()) + list(head.parameters()), lr=0.0)
    opt = loop._Optimisation(model, optimizer, torch.amp.GradScaler("cuda", enabled=False), loss_fn, (), config,
                             total_steps=10, steps_per_epoch=10, device=torch.device("cpu"), domain_head=head)
    model.network.train()
    loop._train_step(opt, 10, audio, random.Random(0), domain=domain)
    stem = model.network.features[1].weight.grad.clone()
    return seen[0], opt.domain_hits, stem, head.net[0].weight.grad.clone()


def test_real_windows_take_their_share_and_only_the_discriminator_sees_them() -> None:
    n = new_model(list(LABELS)).features.window_samples
    domain = DomainData(np.random.default_rng(1).standard_normal((5, n)).astype(np.float32) * 0.1)
    y, hits, stem_grad, head_grad = _step(domain, weight=1.0)
    assert y.shape == (6, len(LABELS)) and torch.all(y[:, 0] == 1.0)  # tagging: the 6 rendered windows only
    assert len(hits) == 1 and 0.0 <= hits[0] <= 1.0  # the discriminator judged the batch
    assert head_grad.abs().sum() > 0
    # Reversal: the discriminator's pull on the features flips sign with the weight.
    _, _, stem0, _ = _step(domain, weight=0.0)
    _, _, stem_neg, _ = _step(domain, weight=-1.0)
    assert torch.allclose((stem_grad - stem0), -(stem_neg - stem0), atol=1e-6)
    assert not torch.allclose(stem_grad, stem0)
    # The discriminator's targets: real for the 2 domain windows, rendered for the other 6.
    assert _step(domain, weight=1.0, says_real=True)[1] == [0.25]


@pytest.mark.slow
def test_train_with_domain_audio_end_to_end(tmp_path) -> None:
    data, real = render_with_real_stand_ins(tmp_path)
    out = tmp_path / "invariant.pt"
    args = ["train", str(data), "--out", str(out), "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "8",
            "--widths", "8,16", "--window-seconds", "2", "--jobs", "1", "--domain-audio", str(real)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert "render-vs-real accuracy" in result.stderr
    model = load_model(out)
    assert model.training["domain"]["windows"] == 4 and model.training["domain"]["files"] == 2
    assert all("domain_accuracy" in h for h in model.training["history"])
    plain = new_model(list(LABELS), arch_args={"widths": [8, 16]}, features=model.features)
    assert model.network.state_dict().keys() == plain.network.state_dict().keys()  # no discriminator shipped
    wrong = CliRunner().invoke(main, args[:-2] + ["--arch", "han", "--domain-audio", str(real)])
    assert wrong.exit_code == 1 and "tagnet" in wrong.stderr
