"""Each test here goes red when the guard it names is broken (tests/mutations.py breaks them on purpose).

Models with known outputs make option wiring visible: constant_model_path scores every window
exactly CONSTANT_PROBS; window_model_path's window probabilities vary with the audio and are
recomputed here with the network itself, so aggregation, k, thresholds and timelines are checked
against numbers the pipeline did not produce.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from mutagen.flac import FLAC

from conftest import CONSTANT_PROBS, TINY_LABELS
from media import make_audio_file, read_other_tags, signal
from tagger import tags as T
from tagger.aggregate import timeline
from tagger.cli import main
from tagger.decode import decode
from tagger.model import load_model
from tagger.pipeline import tag_paths

EXPECTED = {"piano", "bass"}  # tiny_model_path: thresholds 0.0 / 1.0
OLD_NS = 1_000_000_000_000_000_000  # an mtime in 2001
BIG = [f"instrument-with-a-long-name-{i}" for i in range(400)]  # far past any padding: the copy path


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _rows(result) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if T.TEMP_MARKER in p.name]


def _without_padding(path: Path) -> Path:
    """Re-save the tags with no spare room, so the first tag write must take the copy path."""
    f = mutagen.File(path)
    f.save(padding=lambda info: 0)
    return path


def _checkpoint_with(model_path: Path, out: Path, **changes) -> Path:
    checkpoint = torch.load(model_path, weights_only=True)
    checkpoint.update(changes)
    torch.save(checkpoint, out)
    return out


# ---------------------------------------------------------------- thresholds and scores


@pytest.fixture
def two_tracks(tmp_path) -> Path:
    folder = tmp_path / "music"
    folder.mkdir()
    make_audio_file(folder / "a.flac", "flac", seconds=2.0, seed=1)
    make_audio_file(folder / "b.mp3", "mp3", seconds=2.0, seed=2)
    return folder


def test_model_thresholds_and_the_threshold_option_choose_the_labels(constant_model_path, two_tracks):
    base = ["tag", str(two_tracks), "--model", str(constant_model_path), "-j", "0", "-q", "--report", "-"]
    rows = _rows(_cli(*base, "--dry-run"))
    assert len(rows) == 2
    for row in rows.values():  # per-label thresholds 0.5 / 0.75 / 0.35 / 0.5
        assert row["instruments"] == ["piano", "bass"]
        assert [row["scores"][label] for label in TINY_LABELS] == pytest.approx(CONSTANT_PROBS, abs=1e-5)
    for threshold, wanted in [("0.3", ["piano", "drums", "bass"]), ("0.8", ["piano"]), ("0.95", [])]:
        result = _cli(*base, "--dry-run", "--threshold", threshold, "--timeline")
        for row in _rows(result).values():
            assert row["instruments"] == wanted, threshold
            # every window scores the same, so a label passing is on for the whole track
            assert row["timeline"] == {label: [[0.0, pytest.approx(row["duration"], abs=1e-3)]] for label in wanted}
    assert _cli(*base).exit_code == 0
    for path in two_tracks.iterdir():
        state = T.read_tags(path)
        assert state.instruments == ("piano", "bass") and state.scores == "piano=0.90; bass=0.40", path.name


def _varied_wav(path: Path, rate: int) -> Path:
    """Six one-second parts of different content: the window probabilities differ."""
    parts = [signal(kind, 1.0, rate, 1, i)[:, 0] for i, kind in enumerate(["silence", "chord", "noise", "tone", "chord", "silence"])]
    sf.write(path, np.concatenate(parts), rate, subtype="FLOAT")
    return path


def _window_probs(model_path: Path, audio: Path) -> np.ndarray:
    """The network's probabilities for each window, windows cut here by hand (the tail window
    ends at the track's end; a track shorter than one window is repeated to fill it)."""
    model = load_model(model_path)
    window, hop = model.features.window_samples, model.features.hop_samples
    samples = decode(audio, sample_rate=model.features.sample_rate)
    n = 1 + -(-max(0, samples.size - window) // hop)
    windows = np.zeros((n, window), np.float32)
    for i in range(n):
        piece = samples[i * hop : i * hop + window]
        if piece.size < window and samples.size >= window:
            piece = samples[samples.size - window :]
        elif piece.size < window:
            piece = np.concatenate([samples] * (window // samples.size + 1))[:window]
        windows[i, : piece.size] = piece
    with torch.inference_mode():
        return torch.sigmoid(model.logits(torch.from_numpy(windows))).numpy()


def _threshold_between(values: np.ndarray, lo: float, hi: float) -> float:
    """A threshold in (lo, hi), in the widest gap between the values (and lo, hi) there."""
    points = np.unique(np.concatenate([[lo, hi], values[(values > lo) & (values < hi)]]))
    i = int(np.argmax(np.diff(points)))
    return float((points[i] + points[i + 1]) / 2)


def _clear_of(probs: np.ndarray, thresholds) -> bool:
    """No window sits within rounding noise of its threshold (pipeline and test compute apart)."""
    return bool((np.abs(probs - np.asarray(thresholds, dtype=np.float64)[None, :]) > 1e-3).all())


def _labels_over(scores: np.ndarray, thresholds) -> list[str]:
    chosen = [(s, label) for label, s, t in zip(TINY_LABELS, scores, thresholds) if s >= t]
    return [label for s, label in sorted(chosen, key=lambda pair: (-pair[0], pair[1]))]


def test_aggregation_topk_threshold_and_timeline_options_reach_the_tags(window_model_path, tmp_path):
    audio = _varied_wav(tmp_path / "varied.wav", 16000)
    probs = _window_probs(window_model_path, audio)
    assert probs.shape == (11, 4) and (probs.max(0) - probs.min(0) > 0.05).all()
    mean, peak = probs.mean(0), probs.max(0)
    top = {k: np.sort(probs, axis=0)[-k:].mean(0) for k in (1, 2, 3, 5)}
    # piano, drums: between the mean and the highest window (max passes, mean does not);
    # bass, flute: between the lowest window and the mean (both pass).
    aggregates = np.stack([mean, peak, *top.values()])
    points = [np.concatenate([probs[:, j], aggregates[:, j]]) for j in range(4)]  # keep clear of all of them
    thresholds = [_threshold_between(points[j], mean[j], peak[j]) for j in (0, 1)]
    thresholds += [_threshold_between(points[j], probs[:, j].min(), mean[j]) for j in (2, 3)]
    assert (mean[:2] < thresholds[:2]).all() and (mean[2:] > thresholds[2:]).all()
    assert _clear_of(probs, thresholds) and _clear_of(aggregates, thresholds)
    model = _checkpoint_with(window_model_path, tmp_path / "m.pt", thresholds=thresholds)
    base = ["tag", str(audio), "--model", str(model), "--dry-run", "-j", "0", "-q", "--report", "-"]

    def scored(*options: str) -> dict:
        (row,) = _rows(_cli(*base, *options)).values()
        return row

    cases = [((), mean), (("--aggregation", "max"), peak), (("--aggregation", "topk"), top[3])]
    cases += [(("--aggregation", "topk", "--topk", str(k)), top[k]) for k in (1, 2, 5)]
    for options, expected in cases:
        row = scored(*options)
        assert [row["scores"][label] for label in TINY_LABELS] == pytest.approx(expected.tolist(), abs=1e-4), options
        assert row["instruments"] == _labels_over(expected, thresholds), options
    assert set(scored()["instruments"]) == {"bass", "flute"}  # the thresholds above do split the cases
    assert len(scored("--aggregation", "max")["instruments"]) == 4

    row = scored("--timeline")
    hop, window = load_model(model).features.hop_seconds, load_model(model).features.window_seconds
    assert row["timeline"] == timeline(probs, TINY_LABELS, thresholds, hop_seconds=hop, window_seconds=window,
                                       duration=row["duration"])
    assert row["timeline"]["piano"] != [[0.0, row["duration"]]]  # some windows only: the check can fail
    one = _threshold_between(np.concatenate([probs.ravel(), mean]), *np.quantile(probs, [0.25, 0.75]))
    assert _clear_of(probs, [one] * 4) and _clear_of(mean[None, :], [one] * 4)
    assert 0 < len(_labels_over(mean, [one] * 4)) < 4
    row = scored("--timeline", "--threshold", str(one))
    assert row["instruments"] == _labels_over(mean, [one] * 4)
    assert row["timeline"] == timeline(probs, TINY_LABELS, [one] * 4, hop_seconds=hop, window_seconds=window,
                                       duration=row["duration"])


def test_model_default_aggregation_is_used(window_model_path, tmp_path):
    audio = _varied_wav(tmp_path / "varied.wav", 16000)
    probs = _window_probs(window_model_path, audio)
    for aggregation, topk, expected in [("max", 3, probs.max(0)), ("topk", 2, np.sort(probs, axis=0)[-2:].mean(0))]:
        model = _checkpoint_with(window_model_path, tmp_path / f"{aggregation}.pt", aggregation=aggregation, topk=topk)
        (row,) = _rows(_cli("tag", str(audio), "--model", str(model), "--dry-run", "-j", "0", "-q", "--report", "-")).values()
        assert [row["scores"][label] for label in TINY_LABELS] == pytest.approx(expected.tolist(), abs=1e-4), aggregation


# ---------------------------------------------------------------- --preserve-mtime


def test_preserve_mtime_option_keeps_the_modification_time(tiny_model_path, tmp_path):
    folders = {}
    for flag in ("keep", "update"):
        folder = tmp_path / flag
        folder.mkdir()
        make_audio_file(folder / "in place.flac", "flac", seconds=1.5)
        _without_padding(make_audio_file(folder / "copy.flac", "flac", seconds=1.5))
        for path in folder.iterdir():
            os.utime(path, ns=(OLD_NS, OLD_NS))
        folders[flag] = folder
    inodes = {p: p.stat().st_ino for f in folders.values() for p in f.iterdir()}
    assert _cli("tag", str(folders["keep"]), "--model", str(tiny_model_path), "-j", "0", "-q", "--preserve-mtime").exit_code == 0
    assert _cli("tag", str(folders["update"]), "--model", str(tiny_model_path), "-j", "0", "-q").exit_code == 0
    for flag, folder in folders.items():
        for path in folder.iterdir():
            assert set(T.read_tags(path).instruments) == EXPECTED
            assert (path.stat().st_ino != inodes[path]) == (path.name == "copy.flac"), "one write of each kind"
            assert (path.stat().st_mtime_ns == OLD_NS) == (flag == "keep"), path


# ---------------------------------------------------------------- errors reported, run goes on


def _flac_audio_offset(data: bytes) -> int:
    """Where the audio frames start: after the last metadata block."""
    assert data[:4] == b"fLaC"
    pos = 4
    while True:
        header, length = data[pos], int.from_bytes(data[pos + 1 : pos + 4], "big")
        pos += 4 + length
        if header & 0x80:
            return pos


@pytest.mark.parametrize("jobs", ["0", "1"])
def test_a_file_the_tag_reader_accepts_but_the_decoder_rejects(tiny_model_path, tmp_path, jobs):
    folder = tmp_path / "music"
    folder.mkdir()
    good = make_audio_file(folder / "a good.flac", "flac", seconds=2.0)
    data = good.read_bytes()
    bad = folder / "garbage frames.flac"  # valid FLAC metadata, then noise where the frames should be
    bad.write_bytes(data[: _flac_audio_offset(data)] + np.random.default_rng(0).bytes(30000))
    make_audio_file(folder / "z good.mp3", "mp3", seconds=2.0)
    assert T.read_tags(bad) == T.TagState((), None, None)  # the tag reader is happy with it
    digest = _sha(bad)
    result = _cli("tag", str(folder), "--model", str(tiny_model_path), "-j", jobs, "--report", "-")
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    rows = _rows(result)
    assert rows[bad.name]["status"] == "error" and "decoded" in rows[bad.name]["error"]
    assert any(bad.name in line and "error" in line for line in result.stderr.splitlines())
    assert rows["a good.flac"]["status"] == rows["z good.mp3"]["status"] == "tagged"
    assert _sha(bad) == digest


def _three_flacs(folder: Path) -> list[Path]:
    folder.mkdir()
    return [make_audio_file(folder / f"{name}.flac", "flac", seconds=1.5, seed=i) for i, name in enumerate("abc")]


def test_a_file_changed_during_the_run_is_reported_not_overwritten(tiny_model_path, tmp_path):
    a, b, c = _three_flacs(tmp_path / "music")
    digest = _sha(b)
    results = {}

    def on_result(result) -> None:
        results[Path(result.path).name] = result
        if result.path == str(a):  # another program touches b after the run looked at it
            st = b.stat()
            os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    summary = tag_paths([tmp_path / "music"], model=load_model(tiny_model_path), device="cpu", jobs=0, on_result=on_result)
    assert results["b.flac"].status == "error" and results["b.flac"].error == "file changed during the run"
    assert _sha(b) == digest and T.read_tags(b).model is None
    assert results["a.flac"].status == results["c.flac"].status == "tagged" and summary.failed == 1
    assert set(T.read_tags(c).instruments) == EXPECTED


def test_a_tag_write_error_is_one_line_and_the_run_goes_on(tiny_model_path, tmp_path, monkeypatch):
    a, b, c = _three_flacs(tmp_path / "music")
    real = T.write_tags

    def failing(path, **kw):
        if Path(path).name == "b.flac":
            raise T.TagError("disk full")
        return real(path, **kw)

    monkeypatch.setattr(T, "write_tags", failing)
    result = _cli("tag", str(tmp_path / "music"), "--model", str(tiny_model_path), "-j", "0", "--report", "-")
    assert result.exit_code == 1
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    rows = _rows(result)
    assert rows["b.flac"]["status"] == "error" and rows["b.flac"]["error"] == "disk full"
    assert [line for line in result.stderr.splitlines() if line.startswith("error")] == [f"error: {b}: disk full"]
    assert rows["a.flac"]["status"] == rows["c.flac"]["status"] == "tagged"
    assert set(T.read_tags(c).instruments) == EXPECTED


# ---------------------------------------------------------------- the copy path's checks


def _big_write(path: Path, **kw) -> None:
    T.write_tags(path, instruments=BIG, scores={}, model_id="guard 1 x", **kw)


def test_a_change_while_the_copy_is_written_stops_the_rename(tmp_path, monkeypatch):
    path = make_audio_file(tmp_path / "song.flac", "flac")
    st = path.stat()
    digest = _sha(path)
    real = T._audio_fingerprint

    def meddle(p: str, decode: bool):
        if decode:  # checking the temp copy: meanwhile another program saves the original
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        return real(p, decode)

    monkeypatch.setattr(T, "_audio_fingerprint", meddle)
    with pytest.raises(T.TagError, match="file changed during the run"):
        _big_write(path, expected_stat=(st.st_size, st.st_mtime_ns))
    assert _sha(path) == digest and not _temps(tmp_path)


def _flip_audio_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = data.index(b"data") + 8  # WAV: the first sample after the data chunk header
    data[start + 2001] ^= 0x55
    path.write_bytes(bytes(data))


def test_copy_check_compares_the_audio_payload_not_only_packet_counts(tmp_path, monkeypatch):
    path = make_audio_file(tmp_path / "song.wav", "wav", seconds=2.0)
    probe = tmp_path / "probe.wav"  # the damage below keeps the packet count: only the hash sees it
    shutil.copyfile(path, probe)
    _flip_audio_byte(probe)
    before, after = T._audio_fingerprint(str(path), False), T._audio_fingerprint(str(probe), False)
    assert before[0] == after[0] and before[1] != after[1]
    probe.unlink()
    digest = _sha(path)
    real = T._save

    def damaging_save(audio, kind, padding):
        real(audio, kind, padding)
        if T.TEMP_MARKER in audio.filename:
            _flip_audio_byte(Path(audio.filename))

    monkeypatch.setattr(T, "_save", damaging_save)
    with pytest.raises(T.TagError, match="audio check"):
        _big_write(path)
    assert _sha(path) == digest and not _temps(tmp_path)


def test_copy_check_compares_the_flac_md5(tmp_path, monkeypatch):
    path = make_audio_file(tmp_path / "song.flac", "flac", seconds=2.0)
    digest, md5 = _sha(path), FLAC(path).info.md5_signature
    real = T._save

    def md5_changing_save(audio, kind, padding):
        if T.TEMP_MARKER in audio.filename:  # frames intact (packets hash the same), checksum not
            audio.info.md5_signature ^= 1
        real(audio, kind, padding)

    monkeypatch.setattr(T, "_save", md5_changing_save)
    with pytest.raises(T.TagError, match="FLAC audio checksum"):
        _big_write(path)
    assert _sha(path) == digest and not _temps(tmp_path)
    monkeypatch.setattr(T, "_save", real)
    _big_write(path)  # the same write without the damage goes through
    assert T.read_tags(path).instruments == tuple(BIG)
    assert FLAC(path).info.md5_signature == md5 != 0


# ---------------------------------------------------------------- temp files of killed runs


def test_a_run_removes_temp_files_left_by_a_killed_run(tiny_model_path, tmp_path):
    folder = tmp_path / "music"
    (folder / "sub").mkdir(parents=True)
    make_audio_file(folder / "song.flac", "flac", seconds=1.0)
    make_audio_file(folder / "sub" / "other.flac", "flac", seconds=1.0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [folder / f".song.flac{T.TEMP_MARKER}-{dead.pid}-0123abcd", folder / "sub" / f".other.flac{T.TEMP_MARKER}-{dead.pid}-4567cdef"]
    live = folder / f".song.flac{T.TEMP_MARKER}-{os.getpid()}-89abcdef"  # a run still going: left alone
    for p in stale + [live]:
        p.write_bytes(b"partial copy")
    assert _cli("tag", str(folder), "--model", str(tiny_model_path), "-j", "0", "-q", "--dry-run").exit_code == 0
    assert all(p.exists() for p in stale)  # a dry run changes nothing
    assert _cli("tag", str(folder), "--model", str(tiny_model_path), "-j", "0", "-q").exit_code == 0
    assert not any(p.exists() for p in stale) and live.exists()
    assert set(T.read_tags(folder / "sub" / "other.flac").instruments) == EXPECTED


# ---------------------------------------------------------------- read-only, also as root


def test_read_only_files_and_folders_are_refused_even_for_root(tiny_model_path, tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    readonly = make_audio_file(folder / "read-only.flac", "flac", seconds=1.0)
    readonly.chmod(0o444)
    locked = folder / "locked"
    locked.mkdir()
    inside = _without_padding(make_audio_file(locked / "inside.flac", "flac", seconds=1.0))
    locked.chmod(0o555)  # root could still write here: the tagger's own mode-bit check refuses
    make_audio_file(folder / "writable.flac", "flac", seconds=1.0)
    digests = {p: _sha(p) for p in (readonly, inside)}
    try:
        result = _cli("tag", str(folder), "--model", str(tiny_model_path), "-j", "0", "--report", "-")
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 1
    rows = _rows(result)
    assert rows["read-only.flac"]["status"] == "error" and rows["read-only.flac"]["error"] == "read-only file"
    assert rows["inside.flac"]["status"] == "error" and "folder not writable" in rows["inside.flac"]["error"]
    assert rows["writable.flac"]["status"] == "tagged"
    assert all(_sha(p) == d for p, d in digests.items()) and not _temps(folder)


def test_a_file_the_kernel_refuses_even_to_root_is_reported(tiny_model_path, tmp_path):
    path = make_audio_file(tmp_path / "immutable.flac", "flac", seconds=1.0)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("needs chattr +i: root on a filesystem with inode flags (the mode-bit test above runs everywhere)")
    try:
        with pytest.raises(PermissionError):
            open(path, "r+b").close()  # really unwritable, whoever we are
        digest = _sha(path)
        result = _cli("tag", str(path), "--model", str(tiny_model_path), "-j", "0", "--report", "-")
        assert result.exit_code == 1
        (row,) = _rows(result).values()
        assert row["status"] == "error" and "permission" in row["error"]
        assert _sha(path) == digest and not _temps(tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
