"""Pipeline stages on their own: windows, aggregation, walking, reports, checkpoints, batching."""
from __future__ import annotations

import csv
import io
import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from tagger.aggregate import aggregate, select_labels, timeline
from tagger.decode import DecodeError, decode, decode_chunks
from tagger.files import find_audio_files
from tagger.infer import BatchRunner, decode_blocks, pick_device
from tagger.model import ModelError, load_model, new_model, save_checkpoint
from tagger.report import ReportWriter, TrackResult, format_from_name
from tagger.windows import count_windows, iter_window_blocks


@pytest.mark.parametrize("n", [0, 1, 47999, 48000, 48001, 72000, 100000])
@pytest.mark.parametrize("hop", [24000, 48000, 60000])
def test_windows_cover_the_track_and_end_at_its_end(n, hop):
    signal = np.arange(n, dtype=np.float32) + 1
    chunks = [signal[i : i + 7001] for i in range(0, n, 7001)] or [signal]
    windows = np.concatenate(list(iter_window_blocks(chunks, window=48000, hop=hop, block=2)))
    assert len(windows) == count_windows(n, window=48000, hop=hop)
    for i, row in enumerate(windows):
        if n < 48000:  # shorter than a window: the track over and over (silence if empty)
            expected = np.array([signal[j % n] if n else 0.0 for j in range(48000)], np.float32)
        else:
            piece = signal[i * hop : i * hop + 48000]
            expected = piece if piece.size == 48000 else signal[n - 48000 :]  # the tail: the last full window
        np.testing.assert_array_equal(row, expected)


def test_aggregation_methods():
    probs = np.array([[0.1, 0.9], [0.3, 0.5], [0.8, 0.1]])
    np.testing.assert_allclose(aggregate(probs, "mean"), [0.4, 0.5])
    np.testing.assert_allclose(aggregate(probs, "max"), [0.8, 0.9])
    np.testing.assert_allclose(aggregate(probs, "topk", topk=2), [0.55, 0.7])
    np.testing.assert_allclose(aggregate(probs, "topk", topk=10), [0.4, 0.5])  # k capped at n windows
    with pytest.raises(ValueError):
        aggregate(probs, "median")


def test_select_labels_orders_by_score_and_applies_per_class_thresholds():
    chosen = select_labels(np.array([0.6, 0.95, 0.3]), ["piano", "drums", "bass"], [0.5, 0.5, 0.2])
    assert chosen == [("drums", 0.95), ("piano", 0.6), ("bass", 0.3)]
    assert select_labels(np.array([0.4]), ["piano"], [0.5]) == []


def test_timeline_merges_overlapping_windows():
    probs = np.array([[0.9], [0.8], [0.1], [0.7]])
    segments = timeline(probs, ["piano"], [0.5], hop_seconds=1.5, window_seconds=3.0, duration=9.5)
    # Window i speaks for [i*1.5 + 0.75, i*1.5 + 2.25]; the first from 0, the last to the end.
    assert segments == {"piano": [[0.0, 3.75], [5.25, 9.5]]}
    assert timeline(probs, ["piano"], [0.95], hop_seconds=1.5, window_seconds=3.0, duration=9.5) == {}


def test_walk_is_sorted_skips_hidden_unknown_and_links(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    for rel in ["b/2.flac", "b/1.MP3", "a/x.ogg", "a/notes.txt", ".hidden/h.flac", "a/.dot.wav", "c d é.m4a"]:
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a symlink loop back to the root
    os.symlink(tmp_path / "b" / "2.flac", tmp_path / "a" / "same.flac")  # the same file twice
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio_files([tmp_path])]
    assert found == ["c d é.m4a", "a/same.flac", "b/1.MP3"] or found == ["c d é.m4a", "a/same.flac", "a/x.ogg", "b/1.MP3"]
    assert "a/x.ogg" in found and "b/2.flac" not in found  # 2.flac was already seen as a/same.flac
    assert not any("hidden" in f or ".dot" in f for f in found)
    assert [p.name for p in find_audio_files([tmp_path], exclude=["*.ogg", "*.m4a"])] == ["same.flac", "1.MP3"]
    assert [p.name for p in find_audio_files([tmp_path], include=["*.ogg"])] == ["x.ogg"]
    assert len(list(find_audio_files([tmp_path], hidden=True))) == 6


def test_decode_resamples_to_mono_and_rejects_bad_input(tmp_path):
    stereo = np.stack([np.sin(np.arange(44100) / 10), np.zeros(44100)], axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.flac", stereo, 44100)
    mono = decode(tmp_path / "s.flac", sample_rate=16000)
    assert mono.dtype == np.float32 and abs(mono.size - 16000) <= 1
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("this is not audio\n" * 50)
    (tmp_path / "random.flac").write_bytes(np.random.default_rng(0).bytes(5000))
    for name in ["empty.mp3", "text.mp3", "random.flac"]:
        with pytest.raises(DecodeError):
            list(decode_chunks(tmp_path / name, sample_rate=16000))


def test_report_formats_parse_with_stdlib():
    results = [
        TrackResult("a b/ü.flac", "tagged", ["piano", "drums"], {"piano": 0.9, "drums": 0.8}, 12.5, "m 1 abc"),
        TrackResult("bad.mp3", "error", error="not an audio file"),
    ]
    for fmt in ["csv", "json", "jsonl"]:
        stream = io.StringIO()
        stream.close = lambda: None  # keep the buffer readable after close()
        writer = ReportWriter(stream, fmt, ["piano", "drums"])
        for r in results:
            writer.write(r)
        writer.close()
        text = stream.getvalue()
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            assert rows[0]["instruments"] == "piano; drums" and rows[0]["score:drums"] == "0.8"
            assert rows[1]["status"] == "error" and rows[1]["error"] == "not an audio file"
        else:
            rows = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
            assert rows[0]["instruments"] == ["piano", "drums"] and rows[0]["path"] == "a b/ü.flac"
            assert rows[1]["status"] == "error"
    assert format_from_name("x.CSV", None) == "csv" and format_from_name("-", None) == "jsonl"
    with pytest.raises(ValueError):
        format_from_name("report.txt", None)


def test_checkpoint_round_trip_and_safety(tmp_path, tiny_model_path):
    model = load_model(tiny_model_path)
    assert model.labels == ["piano", "drums", "bass", "flute"] and model.features.n_mels == 32
    assert model.model_id.startswith("tiny 1 ") and len(model.weights_hash) == 64
    # A pickle payload that would run code is refused, not executed.
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "tagger.checkpoint", "x": Evil()}, evil)
    with pytest.raises(ModelError, match="not a safe tagger checkpoint"):
        load_model(evil)
    assert not (tmp_path / "pwned").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelError):
        load_model(raw)
    unknown = tmp_path / "unknown.pt"
    checkpoint = model.to_checkpoint()
    checkpoint["arch"] = "resnet9000"
    torch.save(checkpoint, unknown)
    with pytest.raises(ModelError, match="unknown architecture"):
        load_model(unknown)
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "missing.pt")


def test_batches_mixed_across_tracks_match_one_track_at_a_time(tmp_path, tiny_model_path):
    model = load_model(tiny_model_path)
    rng = np.random.default_rng(1)
    paths = []
    for i, seconds in enumerate([0.3, 2.7, 5.1, 1.0]):
        path = tmp_path / f"t{i}.wav"
        sf.write(path, (rng.standard_normal(int(seconds * 22050)) * 0.1).astype(np.float32), 22050)
        paths.append(str(path))
    items = list(enumerate(paths))
    device = pick_device("cpu")

    def run(batch_size: int, jobs: int, in_workers: bool) -> dict[int, np.ndarray]:
        runner, got = BatchRunner(model, device, batch_size), {}
        stage = runner.worker_stage() if in_workers else None
        for block in decode_blocks(items, model.features, jobs=jobs, stage=stage):
            if block.windows is not None and in_workers:  # scored by the workers
                assert block.windows.shape[1] == len(model.labels)
                got.setdefault(block.track, []).append(block.windows)
            elif block.windows is not None:
                for track, probs in runner.add(block.track, np.asarray(block.windows)):
                    got.setdefault(track, []).append(probs)
        for track, probs in runner.flush():  # the last partial batch must not be lost
            got.setdefault(track, []).append(probs)
        return {t: np.concatenate(p) for t, p in got.items()}

    alone = {}
    for track, path in items:
        windows = np.concatenate([b.windows for b in decode_blocks([(track, path)], model.features, jobs=0) if b.windows is not None])
        alone[track] = BatchRunner(model, device, 1).predict(windows)
    assert BatchRunner(model, device).worker_stage() is not None  # CPU: the workers score their blocks
    for batch_size, jobs, in_workers in [(3, 0, False), (7, 2, False), (64, 2, False), (3, 0, True), (7, 2, True)]:
        mixed = run(batch_size, jobs, in_workers)
        assert sorted(mixed) == [0, 1, 2, 3]
        for track in alone:
            np.testing.assert_allclose(mixed[track], alone[track], atol=1e-5)


def test_log_mel_matches_torchaudio():
    import torchaudio

    from tagger.features import LOG_FLOOR, FeatureConfig, LogMel

    config = FeatureConfig()
    x = torch.randn(3, config.window_samples)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels,
        f_min=config.f_min, f_max=config.f_max, power=2.0,
    )(x)
    expected = torch.log(reference.clamp_min(LOG_FLOOR**2)).unsqueeze(1)
    torch.testing.assert_close(LogMel(config)(x), expected, atol=1e-4, rtol=1e-4)


def test_unknown_device_is_refused():
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError):
            pick_device("cuda")


def test_new_model_architectures_produce_logits():
    for arch in ["instrunet", "han", "tagnet"]:
        model = new_model(["a", "b", "c"], arch=arch)
        out = model.logits(torch.zeros(2, model.features.window_samples))
        assert out.shape == (2, 3)
    with pytest.raises(ModelError):
        new_model(["a"], arch="nope")


def test_inference_network_matches_the_trained_network():
    for arch in ["instrunet", "han", "tagnet"]:
        torch.manual_seed(0)
        model = new_model(["a", "b", "c"], arch=arch)
        for m in model.network.modules():  # non-trivial BatchNorm statistics to fold
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        model.network.eval()
        x = torch.randn(3, model.features.window_samples)
        with torch.inference_mode():
            expected = model.logits(x)
            spec = model.front(x).contiguous(memory_format=torch.channels_last)
            got = model.inference_network()(spec)
            fused = model.inference_network("cpu")  # convs with their ReLU fused in
            got_fused = fused(spec)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_fused, expected, atol=1e-4, rtol=1e-4)
        assert not any(isinstance(m, torch.nn.ReLU) for m in fused.features.modules()), arch  # each ReLU there follows a conv
        assert arch == "han" or not any(isinstance(m, torch.nn.MaxPool2d) for m in fused.modules())  # han pools 3x3
        assert not any(isinstance(m, torch.nn.BatchNorm2d) and "features" in n for n, m in model.inference_network().named_modules()
                       if not n.startswith("features.0"))  # all conv BatchNorms folded (the input MelNorm stays)
