"""Sample-based instruments (train.samples): pitch from the nearest recorded note, drum kits
from Hydrogen drumkit.xml, pitch bends and CC11 (train.expression), and the "samples" family
through the dataset renderer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import yaml

from train import expression, samples
from train.render import render_dataset

RATE = 16000


def _tone(freq: float, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-t)).astype(np.float32)


@pytest.fixture()
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lib = tmp_path / "lib"
    (lib / "cello").mkdir(parents=True)
    sf.write(lib / "cello" / "A3.wav", _tone(220.0), RATE)  # 57
    sf.write(lib / "cello" / "Ds4.wav", _tone(311.13), RATE)  # 63
    kit = lib / "drumkits" / "kit"
    kit.mkdir(parents=True)
    noise = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.3
    sf.write(kit / "k.wav", _tone(60.0, 0.3), RATE)
    sf.write(kit / "s.wav", noise, RATE)
    (kit / "drumkit.xml").write_text(
        "<drumkit_info><name>kit</name><instrumentList>"
        "<instrument><name>Kick</name><layer><filename>k.wav</filename></layer></instrument>"
        "<instrument><name>Snare Rock</name><layer><filename>s.wav</filename></layer></instrument>"
        "</instrumentList></drumkit_info>")
    monkeypatch.setenv(samples.SAMPLES_ENV, str(lib))
    samples._notes.cache_clear()
    samples.drum_kits.cache_clear()
    return lib


def _pitch_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 8 * len(x)))
    return float(np.argmax(spec) * RATE / (8 * len(x)))


def test_note_names() -> None:
    assert samples.note_pitch("C4") == 60 and samples.note_pitch("As4") == 70
    assert samples.note_pitch("D#1v10") == 27 and samples.note_pitch("F2 v2") == 41
    assert samples.note_pitch("README") is None


def test_nearest_sample_is_pitch_shifted(library: Path) -> None:
    for pitch, hz in ((57, 220.0), (59, 246.94), (62, 293.66)):  # 59 from A3 up, 62 from D#4 down
        inst = pretty_midi.Instrument(42)
        inst.notes.append(pretty_midi.Note(100, pitch, 0.1, 1.0))
        audio, ok = samples.render_sampled(inst, RATE, RATE * 2)
        assert ok
        assert np.max(np.abs(audio[: int(0.09 * RATE)])) == 0  # nothing before the note-on
        assert abs(_pitch_hz(audio[int(0.1 * RATE):int(0.9 * RATE)]) - hz) < 3, pitch
        assert np.max(np.abs(audio[int(1.5 * RATE):])) < 1e-3  # faded after the note-off


def test_unsampled_program_and_drums(library: Path) -> None:
    synth = pretty_midi.Instrument(81)
    synth.notes.append(pretty_midi.Note(100, 60, 0.0, 0.5))
    assert samples.render_sampled(synth, RATE, RATE) is None  # caller falls back to a SoundFont
    drums = pretty_midi.Instrument(0, is_drum=True)
    drums.notes += [pretty_midi.Note(100, 36, 0.0, 0.1), pretty_midi.Note(100, 38, 0.5, 0.6)]
    audio, ok = samples.render_sampled(drums, RATE, RATE)
    assert ok and [name for name, _ in samples.drum_kits()] == ["kit"]
    assert np.sqrt(np.mean(audio[: int(0.3 * RATE)] ** 2)) > 0.05  # kick
    assert np.sqrt(np.mean(audio[int(0.5 * RATE):int(0.75 * RATE)] ** 2)) > 0.05  # snare
    assert np.max(np.abs(audio[int(0.3 * RATE):int(0.49 * RATE)])) < 1e-3


def test_samples_family_renders_a_labelled_dataset(library: Path, tmp_path: Path) -> None:
    out = render_dataset(tmp_path / "ds", n_tracks=2, soundfonts=["samples"], seed=4, seconds=3.0,
                         progress=False, production=True, solo=1.0)
    for track in out:
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        assert meta["soundfont_family"] == "samples"
        assert 1 <= len(meta["stems"]) <= 2  # solo=1.0: solos and duos only
        audio, _ = sf.read(track / "mix.flac")
        assert np.max(np.abs(audio)) > 0.05


def test_samples_family_plays_pitch_bends_and_expression(library: Path) -> None:
    def cello(bend: int | None, cc: int | None) -> np.ndarray:
        inst = pretty_midi.Instrument(42)
        inst.notes.append(pretty_midi.Note(100, 57, 0.0, 1.5))
        if bend is not None:
            inst.pitch_bends = [pretty_midi.PitchBend(0, 0.0), pretty_midi.PitchBend(bend, 0.5)]
        if cc is not None:
            inst.control_changes = [pretty_midi.ControlChange(expression.EXPRESSION_CC, cc, 0.0)]
        return samples.render_sampled(inst, RATE, 2 * RATE)[0]

    plain, bent, quiet = cello(None, None), cello(4096, None), cello(None, 90)  # +100 cents from 0.5 s
    assert abs(_pitch_hz(bent[int(0.1 * RATE):int(0.45 * RATE)]) - 220.0) < 3
    assert abs(_pitch_hz(bent[int(0.6 * RATE):int(1.4 * RATE)]) - 220.0 * 2 ** (1 / 12)) < 3
    assert abs(_pitch_hz(plain[int(0.6 * RATE):int(1.4 * RATE)]) - 220.0) < 3
    ratio = np.sqrt(np.mean(quiet[:RATE] ** 2) / np.mean(plain[:RATE] ** 2))
    assert ratio == pytest.approx((90 / 127) ** 2, rel=0.02)


def test_dataset_render_expression_is_opt_in(library: Path, tmp_path: Path) -> None:
    kinds = {}
    for flag in (False, True):
        out = render_dataset(tmp_path / f"ds{flag}", n_tracks=2, soundfonts=["samples"], seed=5, seconds=3.0,
                             progress=False, solo=1.0, expression=flag)
        bends = 0
        for track in out:
            meta = yaml.safe_load((track / "metadata.yaml").read_text())
            assert ("expression" in meta["augment"]) == flag
            for mid in (track / "MIDI").glob("S*.mid"):
                bends += sum(len(i.pitch_bends) for i in pretty_midi.PrettyMIDI(str(mid)).instruments)
        kinds[flag] = bends
        assert json.loads((tmp_path / f"ds{flag}" / "render_info.json").read_text())["expression"] == flag
    assert kinds[False] == 0 and kinds[True] > 0
