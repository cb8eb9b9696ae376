"""Data engine tests: Slakh layout, labels vs MIDI, determinism, resume, fonts, pedal."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import yaml

from train.arrange import arrangement_stats, generate_arrangement, register
from train.render import (
    FREEPATS,
    apply_sustain,
    find_soundfonts,
    render_dataset,
    render_midi,
    soundfont_family,
    window_labels,
)
from train.demo import demo_tracks, render_demo
from train.taxonomy import LABELS, label_for_program

# ../shared beside the repository (a copy of it sits beside CI's clone too)
BABYSLAKH = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dataset-layouts" / "slakh" / "babyslakh_16k"
SLAKH_META = BABYSLAKH / "Track00001" / "metadata.yaml"
LAKH_MIDI = BABYSLAKH
STEM_KEYS = {"audio_rendered", "inst_class", "integrated_loudness", "is_drum", "midi_program_name",
             "midi_saved", "plugin_name", "program_num"}
TOP_KEYS = {"UUID", "audio_dir", "lmd_midi_dir", "midi_dir", "normalization_factor", "normalized",
            "overall_gain", "stems", "target_peak"}


def _font() -> str:
    fonts = find_soundfonts()
    return fonts.get("fluidr3") or fonts["timgm6mb"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("ds")
    return render_dataset(out, n_tracks=3, soundfonts=[_font()], seed=3, seconds=4.0, progress=False, augment=False)


def _meta(track: Path) -> dict:
    return yaml.safe_load((track / "metadata.yaml").read_text())


def test_slakh_layout(dataset: list[Path]) -> None:
    assert [p.name for p in dataset] == ["Track00001", "Track00002", "Track00003"]
    top, stem_keys = TOP_KEYS, STEM_KEYS
    if SLAKH_META.exists():  # our key names must be Slakh's
        real = yaml.safe_load(SLAKH_META.read_text())
        top, stem_keys = set(real), set(next(iter(real["stems"].values())))
    assert (dataset[0].parent / "render_info.json").exists()
    for track in dataset:
        meta = _meta(track)
        assert top <= set(meta)
        assert meta["audio_dir"] == "stems" and meta["midi_dir"] == "MIDI"
        assert meta["soundfont_family"] == soundfont_family(_font())
        assert (track / "mix.flac").exists() and (track / "all_src.mid").exists()
        assert meta["stems"]
        for sid, stem in meta["stems"].items():
            assert stem_keys | {"label"} <= set(stem)
            assert (track / "stems" / f"{sid}.flac").exists() and (track / "MIDI" / f"{sid}.mid").exists()
            assert stem["label"] == label_for_program(stem["program_num"], stem["is_drum"])
            assert stem["program_num"] == 128 if stem["is_drum"] else 0 <= stem["program_num"] < 128
        import soundfile as sf

        audio, rate = sf.read(str(track / "mix.flac"))
        assert rate == 16000 and len(audio) == 4 * 16000 and 0.1 < np.abs(audio).max() <= 0.95


def test_labels_match_midi(dataset: list[Path]) -> None:
    for track in dataset:
        meta = _meta(track)
        activity = {k: [tuple(x) for x in v] for k, v in meta["label_activity"].items()}
        notes: dict[str, list[pretty_midi.Note]] = {}
        for sid, stem in meta["stems"].items():
            inst = pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{sid}.mid")).instruments[0]
            if stem["label"] and inst.notes:
                notes.setdefault(stem["label"], []).extend(apply_sustain(inst).notes)
        assert set(activity) == set(notes)  # a label is present iff one of its stems has notes
        for label, label_notes in notes.items():
            for start in np.arange(0.0, 3.5, 0.25):  # windows with no (released) note: off
                end = start + 0.5
                if not any(n.start < end and n.end + 0.3 > start for n in label_notes):
                    assert window_labels(activity, [label], start, end)[0] == 0
            for s, e in activity[label]:  # activity only where notes are
                mid = (s + e) / 2
                assert any(n.start - 0.05 <= mid <= n.end + 0.3 for n in label_notes)


def test_deterministic(tmp_path: Path) -> None:
    a = render_dataset(tmp_path / "a", n_tracks=1, soundfonts=[_font()], seed=7, seconds=3.0, progress=False)
    b = render_dataset(tmp_path / "b", n_tracks=1, soundfonts=[_font()], seed=7, seconds=3.0, progress=False)
    assert (a[0] / "mix.flac").read_bytes() == (b[0] / "mix.flac").read_bytes()
    assert _meta(a[0]) == _meta(b[0])


def test_resumable(tmp_path: Path) -> None:
    paths = render_dataset(tmp_path, n_tracks=2, soundfonts=[_font()], seed=1, seconds=2.0, progress=False)
    stamps = {p: (p / "metadata.yaml").stat().st_mtime_ns for p in paths}
    again = render_dataset(tmp_path, n_tracks=2, soundfonts=[_font()], seed=1, seconds=2.0, progress=False)
    assert again == paths
    assert all((p / "metadata.yaml").stat().st_mtime_ns == stamps[p] for p in paths)
    (paths[1] / "metadata.yaml").unlink()  # an unfinished track is rendered again
    render_dataset(tmp_path, n_tracks=2, soundfonts=[_font()], seed=1, seconds=2.0, progress=False)
    assert (paths[1] / "metadata.yaml").exists()
    assert (paths[0] / "metadata.yaml").stat().st_mtime_ns == stamps[paths[0]]


def test_lakh_excerpts(tmp_path: Path) -> None:
    if not any(LAKH_MIDI.rglob("*.mid")):
        pytest.skip("no Lakh MIDI fixtures")
    (track,) = render_dataset(tmp_path, n_tracks=1, soundfonts=["timgm6mb"], seconds=3.0, progress=False,
                              midi_dir=str(LAKH_MIDI))
    assert _meta(track)["lmd_midi_dir"].endswith(".mid")


def test_freepats_renders() -> None:
    if FREEPATS not in find_soundfonts():
        pytest.skip("timidity or /etc/timidity/freepats.cfg not installed: freepats family unavailable")
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(100, 60 + k, 1.0 + 0.3 * k, 1.25 + 0.3 * k) for k in range(4)]
    pm.instruments.append(inst)
    mix = render_midi(pm, FREEPATS, seconds=3.0, rng=np.random.default_rng(0))
    assert np.abs(mix.audio).max() > 0.1
    assert np.abs(mix.audio[: int(0.9 * 16000)]).max() < 0.01  # leading silence kept: timing intact
    assert mix.label_activity["piano"][0][0] == pytest.approx(1.0, abs=0.05)


def test_window_labels_hand_cases() -> None:
    act = {"piano": [(0.0, 1.0), (2.0, 2.2)], "drums": [(0.5, 3.0)]}
    labels = ["piano", "drums", "flute"]
    assert window_labels(act, labels, 0.0, 1.0).tolist() == [1, 1, 0]
    assert window_labels(act, labels, 0.8, 1.8).tolist() == [0, 1, 0]  # piano 0.2 s < 0.25
    assert window_labels(act, labels, 0.7, 1.7).tolist() == [1, 1, 0]  # piano 0.3 s
    assert window_labels(act, labels, 1.9, 2.9).tolist() == [0, 1, 0]  # piano 0.2 s
    assert window_labels(act, labels, 1.9, 2.9, min_overlap=0.2).tolist() == [1, 1, 0]
    assert window_labels(act, labels, 3.0, 4.0).tolist() == [0, 0, 0]  # end is exclusive
    assert window_labels(act, labels, 2.05, 2.15).tolist() == [1, 1, 0]  # short window fully covered
    assert window_labels(act, labels, 0.0, 1.0).dtype == np.float32


def test_sustain_pedal() -> None:
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(90, 60, 0.0, 0.2), pretty_midi.Note(90, 64, 0.3, 0.35),
                  pretty_midi.Note(90, 60, 0.8, 0.9), pretty_midi.Note(90, 67, 1.2, 1.3)]
    inst.control_changes = [pretty_midi.ControlChange(64, 127, 0.1), pretty_midi.ControlChange(64, 0, 1.0)]
    ends = [n.end for n in apply_sustain(inst).notes]
    assert ends == pytest.approx([0.8, 1.0, 1.0, 1.3])  # re-struck key stops the held one
    assert not any(c.number == 64 for c in apply_sustain(inst).control_changes)
    dry = pretty_midi.Instrument(0)
    dry.notes = list(inst.notes)
    rms = []
    for version in (inst, dry):
        pm = pretty_midi.PrettyMIDI()
        pm.instruments.append(version)
        audio = render_midi(pm, "timgm6mb", seconds=1.5, rng=np.random.default_rng(0)).stems[0].audio
        rms.append(float(np.sqrt(np.mean(audio[int(0.65 * 16000):int(0.78 * 16000)] ** 2))))
    assert rms[0] > 5 * rms[1]  # the pedal holds notes the dry version has released


def test_arrangements() -> None:
    stats = arrangement_stats(200, seed=1)
    assert 4.4 <= stats["mean_parts"] <= 5.6
    assert stats["min_parts"] == 1 and stats["max_parts"] >= 7
    assert 0.05 <= stats["solo_or_duo_fraction"] <= 0.3
    assert all(rate >= 0.08 for rate in stats["label_positive_rate"].values()), stats
    for i in range(20):
        pm = generate_arrangement(np.random.default_rng([2, i]), seconds=6.0)
        for inst in pm.instruments:
            assert all(0 <= n.start < n.end <= 6.0 for n in inst.notes)
            if not inst.is_drum:
                low, high = register(inst.program)
                assert all(low - 12 <= n.pitch <= high + 12 for n in inst.notes)  # (solo LH may dip)
            if inst.is_drum:
                assert {n.pitch for n in inst.notes} <= set(range(35, 82))
    assert set(LABELS) == set(stats["label_positive_rate"])


def _strokes(inst: pretty_midi.Instrument, gap: float = 0.05) -> list[list[pretty_midi.Note]]:
    """Notes grouped into chord strokes: onsets closer than ``gap`` belong to one stroke."""
    strokes: list[list[pretty_midi.Note]] = []
    for note in sorted(inst.notes, key=lambda n: n.start):
        if strokes and note.start - strokes[-1][0].start < gap:
            strokes[-1].append(note)
        else:
            strokes.append([note])
    return [s for s in strokes if len(s) >= 3]


def _guitar_chord_parts(strumming: bool, n: int = 60) -> list[pretty_midi.Instrument]:
    parts = []
    for i in range(n):
        pm = generate_arrangement(np.random.default_rng([4, i]), seconds=8.0, strumming=strumming)
        parts += [inst for inst in pm.instruments if inst.program in range(24, 32) and inst.name.startswith("chords")]
    return parts


def test_strumming_up_strokes_and_muted_strokes_only_when_asked() -> None:
    def up(stroke):  # played from the top string down
        return [n.pitch for n in stroke] == sorted((n.pitch for n in stroke), reverse=True)

    plain_parts, strummed_parts = _guitar_chord_parts(False), _guitar_chord_parts(True)
    plain = [s for inst in plain_parts for s in _strokes(inst)]
    strummed = [s for inst in strummed_parts for s in _strokes(inst)]
    assert plain and strummed
    assert not any(up(s) for s in plain)  # the plain arranger only strums down
    assert sum(up(s) for s in strummed) > 0.2 * len(strummed)
    muted = [s for s in strummed if s[0].end - s[0].start < 0.075]  # damped at once; a 16th lasts longer
    assert 0.02 * len(strummed) < len(muted) < 0.5 * len(strummed)
    # strokes on a grid of 8ths or 16ths: many more strokes per part than the plain comping
    assert len(strummed) / len(strummed_parts) > 1.5 * len(plain) / len(plain_parts)


def test_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    import train.demo

    rendered = []  # what render_demo renders, seen once (rendering it again would double the cost)

    def recording(**kwargs):
        for track in demo_tracks(**kwargs):
            rendered.append(track)
            yield track

    monkeypatch.setattr(train.demo, "demo_tracks", recording)
    paths = render_demo(tmp_path, n_tracks=6, seed=0)
    assert sorted(p.suffix for p in paths) == sorted([".mp3", ".flac", ".ogg", ".m4a", ".wav", ".opus"])
    for p in paths:
        assert p.name[:5] == f"{paths.index(p) + 1:02d} - "
        with av.open(str(p)) as c:
            samples = sum(f.samples for f in c.decode(audio=0))
            assert samples / c.streams.audio[0].rate == pytest.approx(20.0, abs=0.1)
    # A title names every instrument that plays, not only the loudest: a correct tagger's tags equal it.
    assert len(rendered) == len(paths) == 6
    for path, (labels, mix) in zip(paths, rendered):
        audible = {s.label for s in mix.stems if s.label in mix.label_activity}
        assert set(labels) == audible and 1 <= len(labels) <= 4
        title = path.stem[5:]
        assert all(lab in title for lab in labels) and title.count(",") == max(0, len(labels) - 2)


def test_bundled_font_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import train.soundfonts as soundfonts

    monkeypatch.setenv("TAGGER_SAMPLES_DIR", str(tmp_path / "no-samples"))  # a sample library on this machine is not a font
    monkeypatch.setattr(soundfonts, "_SEARCH_DIRS", ())
    monkeypatch.setattr(shutil, "which", lambda _: None)
    fonts = soundfonts.find_soundfonts()
    assert list(fonts) == ["timgm6mb"] and Path(fonts["timgm6mb"]).parent == Path(pretty_midi.__file__).parent
    assert soundfont_family(fonts["timgm6mb"]) == "timgm"
