"""Dataset loaders on the shared real-layout fixtures and on tiny hand-made trees."""
from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import yaml

import bench_scripts
from train.datasets import (
    IRMAS_LABELS,
    Clip,
    load_dataset,
    load_irmas,
    load_manifest,
    load_medley_solos,
    load_slakh,
    parse_irmas_name,
    split_clips,
    window_targets,
)
from train.taxonomy import LABELS, label_for_program

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dataset-layouts"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not found at {FIXTURES}")


def _expected_slakh_labels(track: Path) -> set[str]:
    """Independent recomputation: stems rendered (flag or audio file), program/is_drum mapping."""
    meta = yaml.safe_load((track / "metadata.yaml").read_text())
    found = set()
    for name, stem in meta["stems"].items():
        has_audio = any((track / "stems" / f"{name}{ext}").exists() for ext in (".wav", ".flac"))
        if stem["audio_rendered"] or has_audio:
            label = label_for_program(stem["program_num"], stem["is_drum"])
            if label is not None:
                found.add(label)
    return found


@needs_fixtures
def test_babyslakh_track_labels_and_activity() -> None:
    root = FIXTURES / "slakh" / "babyslakh_16k"
    clips = load_slakh(root)
    assert [Path(c.path).parent.name for c in clips] == ["Track00001"]  # Track00007 has no audio
    (clip,) = clips
    expected = _expected_slakh_labels(root / "Track00001")
    assert set(clip.labels) == expected == {"piano", "organ", "electric guitar", "bass", "drums"}
    assert clip.labels == tuple(label for label in LABELS if label in expected)  # taxonomy order
    assert clip.activity is not None and set(clip.activity) == expected
    for segments in clip.activity.values():
        assert segments and all(0 <= s < e for s, e in segments)
    assert clip.split is None and clip.source == "slakh" and clip.group
    # Choir (52) and harmonica (22) stems sound but carry no label.
    assert "voice" not in clip.labels


@needs_fixtures
def test_slakh_redux_flac_split() -> None:
    root = FIXTURES / "slakh" / "slakh2100_flac_redux"
    (clip,) = load_slakh(root)
    assert clip.path.endswith("mix.flac") and clip.split == "train"
    assert set(clip.labels) == _expected_slakh_labels(root / "train" / "Track00001")
    assert load_slakh(root, split="validation") == []
    assert [c.split for c in load_slakh(root / "train")] == ["train"]
    assert [c.split for c in load_dataset(root, format="auto", split="train")] == ["train"]


def _write_midi(path: Path, notes: list[tuple[float, float]], program: int = 0, is_drum: bool = False) -> None:
    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=60, start=s, end=e) for s, e in notes]
    midi.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.write(str(path))


def _write_wav(path: Path, seconds: float = 0.1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(16000 * seconds), dtype=np.float32), 16000)


def test_rendered_track_uses_label_key_midi_activity_and_soundfont(tmp_path: Path) -> None:
    track = tmp_path / "renders" / "Track00042"
    _write_wav(track / "mix.wav")
    stems = {
        # piano notes 1.0-1.5 and 1.8-2.0 merge (gap < 0.5 s); 4.0-4.2 stays apart
        "S00": {"program_num": 0, "is_drum": False, "audio_rendered": True, "label": "piano"},
        # rendered but MIDI missing: sounds throughout
        "S01": {"program_num": 0, "is_drum": True, "audio_rendered": True, "label": "drums"},
        # not rendered, no stem file: silent in the mix
        "S02": {"program_num": 40, "is_drum": False, "audio_rendered": False, "label": "violin"},
        # the renderer may decide a part has no label (e.g. inaudible) despite its program
        "S03": {"program_num": 33, "is_drum": False, "audio_rendered": True, "label": None},
    }
    for name in ("S00", "S01", "S03"):
        _write_wav(track / "stems" / f"{name}.wav")
    _write_midi(track / "MIDI" / "S00.mid", [(1.0, 1.5), (1.8, 2.0), (4.0, 4.2)])
    _write_midi(track / "MIDI" / "S02.mid", [(0.0, 1.0)], program=40)
    _write_midi(track / "MIDI" / "S03.mid", [(0.0, 1.0)], program=33)
    meta = {"UUID": "abc", "stems": stems, "soundfont": "FluidR3_GM.sf2", "soundfont_family": "fluidr3"}
    (track / "metadata.yaml").write_text(yaml.safe_dump(meta))
    (clip,) = load_slakh(tmp_path)
    assert clip.labels == ("piano", "drums")
    assert clip.source == "fluidr3"
    assert clip.activity is not None
    assert np.allclose(clip.activity["piano"], [(1.0, 2.0), (4.0, 4.2)], atol=1e-3)
    assert clip.activity["drums"] == ((0.0, math.inf),)
    assert window_targets(clip, ["piano", "drums", "bass"], 2.5, 3.5).tolist() == [0.0, 1.0, 0.0]
    assert window_targets(clip, ["piano", "drums", "bass"], 1.0, 2.0).tolist() == [1.0, 1.0, 0.0]
    # Only the labels asked for.
    assert load_slakh(tmp_path, labels=["drums"])[0].labels == ("drums",)


def test_irmas_name_parsing_is_positional() -> None:
    assert parse_irmas_name("[cla][cla]0189__2") == ("cla", None, "cla", "0189")
    assert parse_irmas_name("[gel][dru][pop_roc]0001__1") == ("gel", True, "pop_roc", "0001")
    assert parse_irmas_name("[pia][nod][cla]1305__3") == ("pia", False, "cla", "1305")
    with pytest.raises(ValueError):
        parse_irmas_name("[pia]0001__1")


def test_irmas_training_tags_and_groups(tmp_path: Path) -> None:
    train = tmp_path / "IRMAS-TrainingData"
    for name in (
        "gel/[gel][dru][pop_roc]0001__1.wav",
        "gel/[gel][dru][pop_roc]0001__2.wav",
        "pia/[pia][nod][cla]0002__1.wav",
        "flu/[flu][jaz_blu]0003__1.wav",
    ):
        _write_wav(train / name)
    clips = {Path(c.path).name: c for c in load_irmas(tmp_path, labels=LABELS)}
    assert clips["[gel][dru][pop_roc]0001__1.wav"].labels == ("electric guitar", "drums")
    assert clips["[pia][nod][cla]0002__1.wav"].labels == ("piano",)  # [cla] is the genre here
    assert clips["[flu][jaz_blu]0003__1.wav"].labels == ("flute",)
    assert clips["[gel][dru][pop_roc]0001__1.wav"].group == clips["[gel][dru][pop_roc]0001__2.wav"].group
    assert clips["[gel][dru][pop_roc]0001__1.wav"].group != clips["[pia][nod][cla]0002__1.wav"].group
    assert all(c.split == "train" and c.source == "irmas" for c in clips.values())
    # Default IRMAS label set has no drums.
    default = {Path(c.path).name: c for c in load_irmas(tmp_path)}
    assert default["[gel][dru][pop_roc]0001__1.wav"].labels == ("electric guitar",)
    assert set(IRMAS_LABELS) >= {"voice", "clarinet"} and len(IRMAS_LABELS) == 11


@needs_fixtures
def test_irmas_fixture_training_and_testing() -> None:
    root = FIXTURES / "irmas"
    clips = {Path(c.path).name: c for c in load_irmas(root)}
    train = clips["[cla][cla]0189__2.wav"]
    assert train.labels == ("clarinet",) and train.split == "train"
    test = clips["02 - And The Body Will Die-8.wav"]
    assert set(test.labels) == {"electric guitar", "voice"} and test.split == "test"
    default = {Path(c.path).name: c for c in load_irmas(root, labels=LABELS)}
    assert default["02 - And The Body Will Die-8.wav"].labels == ("electric guitar",)
    assert {c.path for c in load_dataset(root, format="auto")} == {c.path for c in clips.values()}


def test_irmas_test_txt_trailing_tabs(tmp_path: Path) -> None:
    _write_wav(tmp_path / "Part2" / "song-1.wav")
    (tmp_path / "Part2" / "song-1.txt").write_text("gel\t\nvoi\t\n\n")
    (clip,) = load_irmas(tmp_path)
    assert set(clip.labels) == {"electric guitar", "voice"}
    assert clip.group.endswith("Part2/song")


def test_manifest_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "path,labels,start,end,group,split\n"
        "a.wav,piano;drums,1.5,4,g1,train\n"
        "/abs/b.wav,bass|voice,,,,\n"
        "c.wav,,,,,validation\n"
    )
    a, b, c = load_manifest(tmp_path / "m.csv")
    assert a == Clip(str(tmp_path / "a.wav"), ("piano", "drums"), 1.5, 4.0, "g1", "train", None, "manifest")
    assert b.path == "/abs/b.wav" and b.labels == ("bass", "voice") and b.end is None
    assert b.group == "/abs/b.wav" and b.split is None
    assert c.labels == () and c.split == "validation"
    assert load_manifest(tmp_path / "m.csv", labels=LABELS)[1].labels == ("bass",)

    rows = [
        {"path": "sub/x.flac", "labels": ["flute", "organ"], "group": "g"},
        {"path": "y.wav", "labels": "piano", "activity": {"piano": [[0, 2]]}},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    x, y = load_dataset(tmp_path / "m.jsonl", format="auto", labels=LABELS)
    assert x.path == str(tmp_path / "sub" / "x.flac") and x.labels == ("organ", "flute")
    assert y.activity == {"piano": ((0.0, 2.0),)}


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("bad.csv", "path,labels,start\na.wav,piano,0\nb.wav,piano,soon\n", 3),
        ("bad2.csv", "path,labels,start,end\na.wav,piano,5,2\n", 2),
        ("bad3.csv", "path,labels\n,piano\n", 2),
        ("bad.jsonl", '{"path": "a.wav", "labels": []}\n{"labels": ["piano"]}\n', 2),
        ("bad2.jsonl", '{"path": "a.wav", "labels": []}\n\nnot json\n', 3),
        ("bad4.csv", "path,labels,split\na.wav,piano,dev\n", 2),
    ],
)
def test_manifest_bad_row_names_line(tmp_path: Path, name: str, text: str, line: int) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=rf"{name}:{line}:"):
        load_manifest(tmp_path / name)


def test_manifest_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,tags\na.wav,piano\n")
    with pytest.raises(ValueError, match="lacks"):
        load_manifest(tmp_path / "m.csv")


def test_window_targets_from_activity_and_clip_labels() -> None:
    clip = Clip(
        "x.wav",
        ("piano", "bass", "drums"),
        activity={"piano": ((0.0, 1.0), (3.0, 3.2)), "bass": ((2.0, 2.3),)},
    )
    labels = ["piano", "bass", "drums", "flute"]
    # [0.9, 2.9): piano 0.1 s, bass 0.3 s; drums has no activity -> clip label
    assert window_targets(clip, labels, 0.9, 2.9).tolist() == [0.0, 1.0, 1.0, 0.0]
    # [2.9, 4.9): piano 0.2 s < 0.25
    assert window_targets(clip, labels, 2.9, 4.9).tolist() == [0.0, 0.0, 1.0, 0.0]
    assert window_targets(clip, labels, 2.9, 4.9, min_overlap=0.2).tolist() == [1.0, 0.0, 1.0, 0.0]
    # A window shorter than min_overlap needs to be fully covered.
    assert window_targets(clip, labels, 0.5, 0.6).tolist() == [1.0, 0.0, 1.0, 0.0]
    plain = Clip("y.wav", ("flute",))
    out = window_targets(plain, labels, 0.0, 3.0)
    assert out.dtype == np.float32 and out.tolist() == [0.0, 0.0, 0.0, 1.0]


def _clips(n: int) -> list[Clip]:
    return [Clip(f"{i}.wav", (), group=f"g{i // 3}") for i in range(n)]


def test_split_clips_by_group_deterministic() -> None:
    clips = _clips(60)  # 20 groups of 3
    train, val = split_clips(clips, validation=0.25, seed=1)
    assert len(train) + len(val) == 60
    assert not {c.group for c in train} & {c.group for c in val}
    assert len({c.group for c in val}) == 5
    assert {c.path for c in split_clips(list(reversed(clips)), validation=0.25, seed=1)[1]} == {c.path for c in val}
    assert {c.path for c in split_clips(clips, validation=0.25, seed=2)[1]} != {c.path for c in val}


def test_split_clips_respects_dataset_splits() -> None:
    slakh = [
        Clip("t1", (), group="s1", split="train", source="slakh"),
        Clip("t2", (), group="s2", split="train", source="slakh"),
        Clip("v1", (), group="s3", split="validation", source="slakh"),
        Clip("dup", (), group="s3", split="train", source="slakh"),  # same song as v1
        Clip("x1", (), group="s4", split="test", source="slakh"),
    ]
    irmas = [Clip(f"i{i}", (), group=f"r{i}", split="train", source="irmas") for i in range(10)]
    train, val = split_clips(slakh + irmas, validation=0.2)
    names_train, names_val = {c.path for c in train}, {c.path for c in val}
    assert {"t1", "t2"} <= names_train and "v1" in names_val
    assert "x1" not in names_train | names_val  # test is never used for training/tuning
    assert "dup" not in names_train  # leakage across the official split is dropped
    assert len([n for n in names_val if n.startswith("i")]) == 2  # IRMAS has no validation split
    assert not {c.group for c in train} & {c.group for c in val}


@needs_fixtures
def test_medley_solos_fixture() -> None:
    root = FIXTURES / "medley_solos_db"
    (clip,) = load_medley_solos(root)
    assert clip.labels == ("flute",) and clip.split == "validation" and clip.group == "medley:210"
    assert Path(clip.path).is_file()
    assert load_dataset(root, format="auto") == [clip]
    assert load_medley_solos(root, labels=["piano"])[0].labels == ()


def test_unknown_format_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_dataset(tmp_path, format="openmic")


# --------------------------------------------------------------------------- bench/real_sounds.py

def test_real_sounds_table_uses_our_labels_and_leaves_real_dev_out():
    real_sounds = bench_scripts.load("real_sounds")
    names = [name for _, name, _ in real_sounds.SOUNDS]
    assert len(names) == len(set(names))
    for _, _, labels in real_sounds.SOUNDS:
        assert all(label in LABELS for label in filter(None, labels.split(";")))
    assert not [n for n in names if "amen" in n]  # real-dev holds Sonic Pi's amen break


def test_real_sounds_manifest_from_unpacked_packages(tmp_path):
    """build() on unpacked packages (no download): a manifest load_manifest reads, with the
    table's labels, non-instrument sounds unlabelled and too-short sounds left out."""
    real_sounds = bench_scripts.load("real_sounds")
    rate = 16000
    short = real_sounds.SOUNDS[0][1]
    for (package, folder, _), name, _ in real_sounds.SOUNDS:
        path = tmp_path / package / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        seconds = 0.3 if name == short else 1.0
        fmt = "OGG" if name.endswith(".ogg") else "FLAC"
        sf.write(path, 0.1 * np.sin(np.arange(int(rate * seconds)) * 0.1), rate, format=fmt)
    count = real_sounds.build(tmp_path)
    clips = load_manifest(tmp_path / "labels.csv", labels=LABELS)
    assert count == len(clips) == len(real_sounds.SOUNDS) - 1
    expected = {Path(name).name: labels for _, name, labels in real_sounds.SOUNDS if name != short}
    for clip in clips:
        assert Path(clip.path).is_file()
        assert ";".join(clip.labels) == expected[Path(clip.path).name]
    assert any(not clip.labels for clip in clips)


def _qt_resource_file(files: dict[str, bytes], compressed: set[str]) -> bytes:
    """A Qt binary resource file (format 2) holding ``files`` (paths with "/"), laid out as Qt's
    rcc writes it: header; names; a tree whose directories list their children side by side
    (breadth first); data."""
    root: dict = {}
    for path in files:
        *folders, leaf = path.split("/")
        node = root
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = path
    names, name_offsets, data = b"", {}, b""

    def name_offset(name: str) -> int:
        nonlocal names
        if name not in name_offsets:
            name_offsets[name] = len(names)
            names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
        return name_offsets[name]

    entries = [[0, root]]  # [name offset, dict for a folder or path for a file]
    tree = b""
    for index in range(10_000):
        if index == len(entries):
            break
        offset, node = entries[index]
        if isinstance(node, dict):
            tree += struct.pack(">IHII", offset, 2, len(node), len(entries)) + bytes(8)
            entries += [[name_offset(name), child] for name, child in sorted(node.items())]
        else:
            payload, flags = files[node], 0
            if node in compressed:
                payload, flags = struct.pack(">I", len(payload)) + zlib.compress(payload), 1
            tree += struct.pack(">IHHHI", offset, flags, 0, 0, len(data)) + bytes(8)
            data += struct.pack(">I", len(payload)) + payload
    return b"qres" + struct.pack(">IIII", 2, 20 + len(names), 20 + len(names) + len(tree), 20) + names + tree + data


def test_unpack_rcc_writes_the_files_of_one_folder_byte_for_byte(tmp_path):
    """GCompris's instrument recordings live in a Qt resource file: unpack_rcc must give back
    exactly the bytes stored, compressed or not, and only those under the folder asked for."""
    real_sounds = bench_scripts.load("real_sounds")
    rng = np.random.default_rng(0)
    files = {"gc/act/res/cello.ogg": rng.bytes(5000), "gc/act/res/sub/piano.ogg": b"piano" * 300,
             "gc/act/res/README": b"credits", "gc/other/violin.ogg": b"not asked for"}
    rcc = tmp_path / "instruments.rcc"
    rcc.write_bytes(_qt_resource_file(files, compressed={"gc/act/res/sub/piano.ogg", "gc/act/res/README"}))
    real_sounds.unpack_rcc(rcc, "gc/act/res", tmp_path / "out")
    written = {str(p.relative_to(tmp_path / "out")): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert written == {"cello.ogg": files["gc/act/res/cello.ogg"], "sub/piano.ogg": files["gc/act/res/sub/piano.ogg"],
                       "README": b"credits"}
    (tmp_path / "escape.rcc").write_bytes(_qt_resource_file({"gc/act/res/../../escaped.ogg": b"x"}, compressed=set()))
    with pytest.raises(ValueError, match="outside"):
        real_sounds.unpack_rcc(tmp_path / "escape.rcc", "gc/act/res", tmp_path / "out2")
    assert not list(tmp_path.rglob("escaped.ogg"))
    (tmp_path / "bad.rcc").write_bytes(b"RIFF" + bytes(40))
    with pytest.raises(ValueError, match="not a Qt resource file"):
        real_sounds.unpack_rcc(tmp_path / "bad.rcc", "gc", tmp_path / "x")
