"""Render -> train -> eval -> tag, on a tiny configuration (seconds, runs in CI)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tagger.cli import main
from tagger.model import load_model
from train.loop import _lr_at, _pos_weight, _random_window, _Audio
from train.datasets import Clip, load_dataset
from train.metrics import evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    result = CliRunner().invoke(main, ["dataset", "render", str(out), "--tracks", "8", "--seconds", "4", "--jobs", "1", "--seed", "3"])
    assert result.exit_code == 0, result.stderr
    return out


def test_tiny_training_run_yields_a_model_the_tagger_uses(rendered, tmp_path):
    model_path = tmp_path / "tiny.pt"
    result = CliRunner().invoke(main, [
        "train", str(rendered), "--out", str(model_path), "--epochs", "2", "--steps-per-epoch", "2",
        "--batch-size", "8", "--widths", "8,16", "--window-seconds", "2", "--jobs", "1", "--name", "ci-tiny", "--noise", "0.5",
    ])
    assert result.exit_code == 0, result.stderr
    assert "saved" in result.stderr and not list(tmp_path.glob("*.state")) and not list(tmp_path.glob("*.best"))
    model = load_model(model_path)
    assert model.name == "ci-tiny" and model.features.window_seconds == 2.0
    assert len(model.labels) == 16 and len(model.thresholds) == 16
    assert all(0.0 < t < 1.0 for t in model.thresholds)
    assert model.aggregation in {"mean", "max", "topk"}
    assert model.metrics["validation"]["n_clips"] >= 1
    assert [h["epoch"] for h in model.training["history"]] == [0, 1]
    assert model.training["config"]["noise"] == 0.5

    evaluated = CliRunner().invoke(main, ["eval", str(rendered), "--model", str(model_path), "--json", "--jobs", "1"])
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["n_clips"] == 8 and "per_class" in metrics
    # eval's numbers are what tagging the same clips gives: score every mix with `tag`, compute the metrics
    clips = load_dataset(rendered, format="auto", labels=model.labels)
    scored = CliRunner().invoke(main, ["tag", "--dry-run", *[c.path for c in clips], "--model", str(model_path),
                                       "--report", "-", "-q", "-j", "1"])
    by_path = {r["path"]: r for r in map(json.loads, scored.stdout.splitlines())}
    y_true = np.array([[float(label in c.labels) for label in model.labels] for c in clips])
    y_score = np.array([[by_path[c.path]["scores"][label] for label in model.labels] for c in clips])
    from_tags = evaluate(y_true, y_score, model.labels, model.thresholds)
    for key in ("macro_f1", "micro_f1", "accuracy"):
        assert metrics[key] == pytest.approx(from_tags[key], abs=1e-6), key
    # reports round scores to 4 decimals: a barely trained model's near-equal scores can tie there,
    # which moves AP a little
    assert metrics["map"] == pytest.approx(from_tags["map"], abs=5e-3)

    mixes = [p for p in rendered.rglob("mix.flac")][:2]
    tagged = CliRunner().invoke(main, ["tag", *map(str, mixes), "--model", str(model_path), "--report", "-", "-q"])
    assert tagged.exit_code == 0, tagged.stderr
    rows = [json.loads(line) for line in tagged.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["tagged", "tagged"] and all(r["model"].startswith("ci-tiny 1 ") for r in rows)


def test_resume_continues_from_the_saved_state(rendered, tmp_path):
    args = ["train", str(rendered), "--out", str(tmp_path / "m.pt"), "--steps-per-epoch", "1", "--batch-size", "4",
            "--widths", "8", "--window-seconds", "2", "--jobs", "1"]
    first = CliRunner().invoke(main, args + ["--epochs", "1"])
    assert first.exit_code == 0
    # Leave a state file as an interrupted 3-epoch run would, then resume it.
    state = {"network": load_model(tmp_path / "m.pt").network.state_dict(), "epoch": 0, "best_map": 0.0, "best_epoch": 0,
             "history": [{"epoch": 0, "loss": 1.0, "val_map": 0.0}]}
    optimizer = torch.optim.AdamW(load_model(tmp_path / "m.pt").network.parameters())
    state["optimizer"] = optimizer.state_dict()
    torch.save(state, tmp_path / "m.pt.state")
    resumed = CliRunner().invoke(main, args + ["--epochs", "3", "--resume", "--patience", "5"])
    assert resumed.exit_code == 0, resumed.stderr
    assert "resumed" in resumed.stderr and "epoch 1/3" not in resumed.stderr and "epoch 3/3" in resumed.stderr


def test_schedule_and_pos_weight_by_hand():
    assert _lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert _lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert _lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
    audios = [_Audio(Clip("x", labels), np.zeros(1, np.float32), 0.0) for labels in [("a",), ("a",), ("a", "b"), ()]]
    weights = _pos_weight(audios, ["a", "b"]).tolist()
    # a: 3 positives, 1 negative -> sqrt(2/4) clipped up to 1; b: 1 positive, 3 negatives -> sqrt(4/2)
    assert weights == pytest.approx([1.0, 2 ** 0.5])


def test_training_without_data_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["train", str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt"), "--format", "slakh"])
    assert result.exit_code == 2 and "no clips found" in result.stderr


def _snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(clean.pow(2).mean(1) / (noisy - clean).pow(2).mean(1))


def test_background_noise_share_level_and_colour():
    from train.loop import NOISE_SNR_DB, add_noise

    gen = torch.Generator().manual_seed(0)
    music = torch.randn(400, 16000, generator=gen) * 0.3
    assert torch.equal(add_noise(music, 0.0, gen), music)
    noisy = add_noise(music, 0.5, gen)
    changed = (noisy != music).any(1)
    assert 0.4 < changed.float().mean() < 0.6  # the share asked for
    assert torch.equal(noisy[~changed], music[~changed])
    snr = _snr_db(music[changed], noisy[changed])
    assert NOISE_SNR_DB[0] - 0.5 < snr.min() and snr.max() < NOISE_SNR_DB[1] + 0.5
    assert snr.max() - snr.min() > 20  # levels vary across the whole range
    # silence gets the absolute floor: audible hiss, far below music
    floor = add_noise(torch.zeros(50, 16000), 1.0, gen)
    dbfs = 20 * torch.log10(floor.pow(2).mean(1).sqrt())
    assert (-71 < dbfs).all() and (dbfs < -49).all()
    # colours from white to brown: the low/high band energy ratio spreads over decades
    spectrum = torch.fft.rfft(floor).abs().pow(2)
    tilt = torch.log10(spectrum[:, 1:80].mean(1) / spectrum[:, 4000:].mean(1))
    assert tilt.min() < 0.5 and tilt.max() > 2.5


def _step_inputs(samples: np.ndarray, configs: list[dict]) -> list[torch.Tensor]:
    """The windows one training step hands the front end, once per config (a tiny model, one clip)."""
    import random

    from tagger.model import new_model
    from train import loop
    from train.taxonomy import LABELS

    model = new_model(list(LABELS), arch_args={"widths": [8, 16]})
    audio = loop._Audio(Clip("x.flac", ("piano",), activity={"piano": ((0.0, 10.0),)}), samples, 0.0)
    inputs = []
    front = model.front
    model.front = lambda x: (inputs.append(x.clone()), front(x))[1]
    optimizer = torch.optim.AdamW(model.network.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    for kwargs in configs:
        config = loop.TrainConfig(mixup=0.0, **kwargs)
        opt = loop._Optimisation(model, optimizer, scaler, torch.nn.BCEWithLogitsLoss(), (), config,
                                 total_steps=10, steps_per_epoch=5, device=torch.device("cpu"))
        loop._train_step(opt, 0, [audio], random.Random(0))
    return inputs


def test_training_windows_get_the_noise_the_config_asks_for():
    from tagger.features import FeatureConfig

    silence = np.zeros(FeatureConfig().window_samples, np.float32)
    inputs = _step_inputs(silence, [{"batch_size": 4, "noise": 0.0}, {"batch_size": 4, "noise": 1.0}])
    assert torch.count_nonzero(inputs[0]) == 0  # no noise asked: silence stays silent
    assert (inputs[1].abs().amax(1) > 0).all()  # every window hisses


def _band_db(x: torch.Tensor, lo_hz: float, hi_hz: float, rate: int = 16000) -> torch.Tensor:
    spectrum = torch.fft.rfft(x).abs().pow(2)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / rate)
    band = (freqs >= lo_hz) & (freqs < hi_hz)
    return 10 * torch.log10(spectrum[:, band].sum(1))


def test_treble_tilt_share_and_range_low_band_kept():
    from train.loop import add_tilt

    gen = torch.Generator().manual_seed(0)
    music = torch.randn(300, 16000, generator=gen) * 0.3
    assert torch.equal(add_tilt(music, 0.0, 16000, gen), music)
    tilted = add_tilt(music, 0.5, 16000, gen)
    changed = (tilted != music).any(1)
    assert 0.4 < changed.float().mean() < 0.6  # the share asked for
    assert torch.equal(tilted[~changed], music[~changed])
    treble = _band_db(tilted[changed], 6000, 8000) - _band_db(music[changed], 6000, 8000)
    low = _band_db(tilted[changed], 50, 500) - _band_db(music[changed], 50, 500)
    assert treble.min() < -8 and treble.max() > 8  # brighter and duller, up to about 12 dB
    assert treble.abs().max() < 13
    assert low.abs().max() < 1.5  # a shelf: the low band stays where it was


def test_training_windows_get_the_tilt_the_config_asks_for():
    from tagger.features import FeatureConfig

    features = FeatureConfig()
    t = np.arange(features.window_samples) / features.sample_rate
    tones = (0.3 * np.sin(2 * np.pi * 200 * t) + 0.3 * np.sin(2 * np.pi * 7000 * t)).astype(np.float32)
    inputs = _step_inputs(tones, [{"batch_size": 8, "tilt": 0.0}, {"batch_size": 8, "tilt": 1.0}])
    balance = [_band_db(x, 6500, 7500) - _band_db(x, 100, 300) for x in inputs]  # the random gain cancels
    assert balance[0].abs().max() < 0.5  # no tilt asked: both tones as loud as they were
    assert (balance[1].abs() > 1).sum() >= 6  # tilted: the treble tone moved in (nearly) every window


# --------------------------------------------------------------------------- bench/soup.py

def test_soup_is_the_mean_of_every_float_tensor_and_refuses_other_labels():
    from tagger.model import new_model

    import bench_scripts

    soup = bench_scripts.load("soup")
    torch.manual_seed(0)
    models = [new_model(["piano", "drums"]) for _ in range(3)]
    for m in models:  # BatchNorm statistics differ too, and are averaged like the weights
        for buf in m.network.buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 2.0)
    states = [{k: v.clone() for k, v in m.network.state_dict().items()} for m in models]
    mixed = soup.soup(models).network.state_dict()
    for key, tensor in mixed.items():
        if tensor.is_floating_point():
            expected = (states[0][key] + states[1][key] + states[2][key]) / 3
            assert torch.allclose(tensor, expected, atol=1e-6), key
    with pytest.raises(ValueError, match="labels"):
        soup.soup([new_model(["piano", "drums"]), new_model(["piano", "bass"])])


# --------------------------------------------------------------------------- bench/choose_on_real.py

def test_choose_on_real_writes_the_chosen_thresholds_and_keeps_weights_and_notes(tmp_path):
    from tagger.model import load_model, new_model, save_checkpoint

    import bench_scripts

    choose = bench_scripts.load("choose_on_real")
    torch.manual_seed(0)
    model = new_model(["piano", "drums"])
    model.training = {"epochs": 3}
    save_checkpoint(model, tmp_path / "a.pt")
    chosen = choose.with_thresholds(load_model(tmp_path / "a.pt"), [0.35, 0.6], "max", "B global on real")
    save_checkpoint(chosen, tmp_path / "b.pt")
    a, b = load_model(tmp_path / "a.pt"), load_model(tmp_path / "b.pt")
    assert b.thresholds == pytest.approx([0.35, 0.6]) and b.aggregation == "max"
    assert b.training == {"epochs": 3, "thresholds": "B global on real"}
    for key, tensor in a.network.state_dict().items():
        assert torch.equal(tensor, b.network.state_dict()[key]), key  # same weights: only the tags' rule changed


def test_choose_on_unseen_writes_thresholds_tuned_under_the_models_own_aggregation(rendered, tmp_path, monkeypatch):
    import sys

    from tagger.model import new_model, save_checkpoint
    from train.loop import _clip_targets, load_audio, predict_clips, score_clips
    from train.metrics import tune_thresholds

    import bench_scripts

    choose = bench_scripts.load("choose_on_unseen")
    torch.manual_seed(0)
    model = new_model(["piano", "bass", "drums", "strings"])
    model.thresholds, model.aggregation, model.training = [0.95] * 4, "max", {"epochs": 3}
    save_checkpoint(model, tmp_path / "a.pt")
    monkeypatch.setattr(sys, "argv", ["choose_on_unseen", str(rendered), "--model", str(tmp_path / "a.pt"),
                                      "--device", "cpu", "--out", str(tmp_path / "b.pt")])
    methods = []  # 4-s clips hold two overlapping windows: max and mean barely differ, so watch the call
    monkeypatch.setattr(choose, "score_clips", lambda windows, method, k: methods.append(method) or score_clips(windows, method, k))
    choose.main()
    assert methods == ["max"]

    a, b = load_model(tmp_path / "a.pt"), load_model(tmp_path / "b.pt")
    audios = load_audio(load_dataset(rendered, labels=a.labels), a.features.sample_rate)
    scores = score_clips(predict_clips(a, audios, torch.device("cpu")), "max", a.topk)
    assert b.thresholds == pytest.approx(tune_thresholds(_clip_targets(audios, a.labels), scores))
    assert b.aggregation == "max" and b.training["epochs"] == 3 and str(rendered) in b.training["thresholds"]
    for key, tensor in a.network.state_dict().items():
        assert torch.equal(tensor, b.network.state_dict()[key]), key


def test_a_training_window_of_a_clip_shorter_than_a_window_repeats_the_clip():
    """Training sees short clips as the tagger does (tagger.windows): repeated, not padded."""
    import random

    from tagger.features import FeatureConfig

    features = FeatureConfig(sample_rate=1000, window_seconds=3.0, hop_seconds=3.0, n_fft=64, hop_length=16, n_mels=8)
    short = np.arange(1, 1201, dtype=np.float32)  # 1.2 s
    window, target = _random_window(_Audio(Clip("a.wav", ("piano",)), short, 0.0), ["piano", "drums"], features, random.Random(0))
    np.testing.assert_array_equal(window, np.resize(short, 3000))
    assert target.tolist() == [1.0, 0.0]
    long = np.arange(1, 5001, dtype=np.float32)
    window, _ = _random_window(_Audio(Clip("b.wav", ("piano",)), long, 0.0), ["piano"], features, random.Random(1))
    assert window.size == 3000 and window[0] >= 1 and np.array_equal(np.diff(window), np.ones(2999, np.float32))


def test_widening_a_tagnet_keeps_its_outputs_and_lets_the_copies_differ():
    from tagger.model import TagNet
    from train.widen import widen_tagnet

    torch.manual_seed(0)
    small = TagNet(16, 5, (8, 16))
    with torch.no_grad():
        for m in small.modules():  # trained-looking BatchNorms that still let signal through
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
    small.eval()
    wide = widen_tagnet(small, 16, 5, (12, 24), seed=3).eval()
    assert wide.features[1].out_channels == 12 and wide.head[1].in_features == 48
    x = torch.randn(4, 1, 16, 40)
    with torch.no_grad():
        expected = small(x)
        assert (expected.std(dim=0) > 1e-3).all()  # the outputs depend on the input
        torch.testing.assert_close(wide(x), expected, atol=1e-5, rtol=1e-4)
    # every channel the head reads has its own weights: copies were split unevenly
    columns = wide.head[1].weight.T
    assert len({tuple(c.round(decimals=6).tolist()) for c in columns}) == len(columns)
    with pytest.raises(ValueError, match="narrow"):
        widen_tagnet(small, 16, 5, (4, 16))
    with pytest.raises(ValueError, match="stages"):
        widen_tagnet(small, 16, 5, (8, 16, 32))
    with pytest.raises(ValueError, match="differ in width"):  # a residual would appear between the stages
        widen_tagnet(small, 16, 5, (16, 16))
