"""Loaders for real datasets (Slakh/BabySlakh and our renders, IRMAS, CSV/JSONL manifests).

Every loader returns a flat list of :class:`Clip`; no audio is read here, only metadata and
MIDI (about 7 ms per Slakh stem MIDI, so a few minutes for the full Slakh2100).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.taxonomy import IRMAS_CODE_TO_LABEL, IRMAS_DRUM_CODES, LABELS, label_for_program

Segments = tuple[tuple[float, float], ...]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Slakh2100-redux puts duplicated arrangements under "omitted": loading them next to the
# other splits would leak the same song across train and validation, so they are only
# loaded when asked for by name.
_SLAKH_SPLIT_DIRS: tuple[str, ...] = (*SPLITS, "omitted")
IRMAS_LABELS: tuple[str, ...] = tuple(IRMAS_CODE_TO_LABEL.values())
# Notes closer than this are one sounding passage: covers release tails and the short
# note-offs of drum hits, which would otherwise never reach a window's min_overlap.
MIDI_MERGE_GAP = 0.5
_AUDIO_EXTS = (".flac", ".wav")


@dataclass(frozen=True)
class Clip:
    path: str  # audio file (mix)
    labels: tuple[str, ...]  # clip-level labels, within the label set asked for
    start: float = 0.0  # seconds
    end: float | None = None  # seconds, None = to the end of the file
    group: str = ""  # leakage-free split key
    split: str | None = None  # "train" / "validation" / "test" when the dataset defines it
    activity: Mapping[str, Segments] | None = None  # per-label sounding segments, file time
    source: str = ""  # "slakh", "irmas", a soundfont family for rendered data, ...


def _ordered(found: Iterable[str], labels: Sequence[str]) -> tuple[str, ...]:
    """Labels in the order of the label set, dropping those outside it."""
    found = set(found)
    return tuple(label for label in labels if label in found)


# --------------------------------------------------------------------------- Slakh


def merge_segments(segments: Iterable[tuple[float, float]], gap: float = MIDI_MERGE_GAP) -> Segments:
    """Sorted union of segments, joining those separated by less than ``gap`` seconds."""
    merged: list[list[float]] = []
    for start, end in sorted(segments):
        if merged and start <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((float(s), float(e)) for s, e in merged)


def midi_segments(path: Path) -> Segments:
    """Sounding segments of all notes in a MIDI file (seconds)."""
    import pretty_midi  # train-only dependency: imported late so the CLI never needs it

    midi = pretty_midi.PrettyMIDI(str(path))
    return merge_segments((n.start, n.end) for inst in midi.instruments for n in inst.notes)


def _find_audio(folder: Path, stem: str) -> Path | None:
    for ext in _AUDIO_EXTS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _slakh_split(track_dir: Path, root: Path) -> str | None:
    """The official split a track lies in: the nearest split-named folder at or above it."""
    for folder in [track_dir.parent, *track_dir.parent.parents]:
        if folder.name in _SLAKH_SPLIT_DIRS:
            return folder.name
        if folder == root:
            break
    return None


def _stem_label(stem: Mapping, labels: Sequence[str]) -> str | None:
    # Our renderer writes the label it decided on (it may drop silent parts); real Slakh
    # does not, and its inst_class is not purely the GM family, so use program/is_drum.
    if "label" in stem:
        label = stem["label"]
    else:
        label = label_for_program(int(stem.get("program_num", -1)), bool(stem.get("is_drum", False)))
    return label if label in labels else None


def _load_slakh_track(track_dir: Path, root: Path, labels: Sequence[str]) -> Clip | None:
    import yaml  # train-only dependency

    mix = _find_audio(track_dir, "mix")
    meta_path = track_dir / "metadata.yaml"
    if mix is None or not meta_path.is_file():
        return None  # incomplete track (e.g. MIDI only): nothing to train on
    meta = yaml.safe_load(meta_path.read_text()) or {}
    stems_dir, midi_dir = track_dir / "stems", track_dir / "MIDI"
    segments: dict[str, list[tuple[float, float]]] = {}
    for name, stem in sorted((meta.get("stems") or {}).items()):
        # BabySlakh's flags are all false although its stems are rendered and in the mix,
        # so an existing stem file counts as rendered too.
        rendered = bool(stem.get("audio_rendered")) or _find_audio(stems_dir, name) is not None
        label = _stem_label(stem, labels) if rendered else None
        if label is None:
            continue
        midi = midi_dir / f"{name}.mid"
        # No MIDI: we cannot tell when it plays, so it plays throughout.
        found = midi_segments(midi) if midi.is_file() else ((0.0, math.inf),)
        segments.setdefault(label, []).extend(found)
    activity = {label: merge_segments(segs) for label, segs in segments.items()}
    if isinstance(meta.get("label_activity"), Mapping):
        # Our renderer measured when each label is audible in the mix (notes gated by stem
        # energy): more exact than note on/off, so it wins where present.
        activity = {
            label: tuple((float(s), float(e)) for s, e in segs)
            for label, segs in meta["label_activity"].items()
            if label in labels and segs
        }
    # The source MIDI's id groups re-renders and Slakh's duplicated arrangements together.
    group = str(meta.get("UUID") or track_dir.name)
    return Clip(
        path=str(mix),
        labels=_ordered(activity, labels),
        group=f"slakh:{group}",
        split=_slakh_split(track_dir, root),
        activity={label: activity[label] for label in _ordered(activity, labels)},
        source=str(meta.get("soundfont_family") or "slakh"),
    )


def load_slakh(root: str | Path, *, labels: Sequence[str] = LABELS, split: str | None = None) -> list[Clip]:
    """One clip per TrackNNNNN folder anywhere below ``root`` (Slakh2100, redux, BabySlakh,
    our renders). ``split`` keeps one official split; by default "omitted" is left out."""
    root = Path(root)
    clips = []
    for meta in sorted(root.rglob("metadata.yaml")):
        track_dir = meta.parent
        clip = _load_slakh_track(track_dir, root, labels)
        if clip is None:
            continue
        if split is None and clip.split == "omitted":
            continue
        if split is not None and clip.split != split:
            continue
        clips.append(clip)
    return clips


# --------------------------------------------------------------------------- IRMAS

_BRACKETS = re.compile(r"\[([^\]]*)\]")
_IRMAS_TRAIN_NAME = re.compile(r"^((?:\[[^\]]*\])+)\s*(.*?)(?:__(\d+))?$")
_IRMAS_TEST_PIECE = re.compile(r"-\d+$")


def parse_irmas_name(stem: str) -> tuple[str, bool | None, str, str]:
    """(instrument code, drums or None, genre code, recording id) of a training file name.

    Tags are positional: ``[ins]`` then optionally ``[dru]``/``[nod]``, then ``[genre]``;
    so ``[cla]`` last is the classical genre, not a clarinet.
    """
    match = _IRMAS_TRAIN_NAME.match(stem)
    if match is None:
        raise ValueError(f"not an IRMAS training file name: {stem!r}")
    tags = _BRACKETS.findall(match.group(1))
    if len(tags) < 2:
        raise ValueError(f"IRMAS name needs instrument and genre tags: {stem!r}")
    instrument, genre = tags[0], tags[-1]
    drums = IRMAS_DRUM_CODES.get(tags[1]) if len(tags) >= 3 else None
    return instrument, drums, genre, match.group(2)


def load_irmas(root: str | Path, *, labels: Sequence[str] | None = None) -> list[Clip]:
    """IRMAS training clips (labels from the file name) and testing clips (``.txt`` beside
    the ``.wav``). Default labels: the 11 IRMAS names; pass a set with "drums" to keep the
    training set's drum tags (the testing set never annotates drums)."""
    root = Path(root)
    labels = IRMAS_LABELS if labels is None else tuple(labels)
    clips = []
    for wav in sorted(root.rglob("*.wav")):
        txt = wav.with_suffix(".txt")
        if txt.is_file():
            codes = [line.strip() for line in txt.read_text().splitlines() if line.strip()]
            found = [IRMAS_CODE_TO_LABEL[c] for c in codes if c in IRMAS_CODE_TO_LABEL]
            # Excerpts of one song are numbered "-N": keep them on one side of a split.
            piece = _IRMAS_TEST_PIECE.sub("", wav.stem)
            group, split = f"irmas-test:{wav.parent.name}/{piece}", "test"
        elif wav.name.startswith("["):
            instrument, drums, _genre, recording = parse_irmas_name(wav.stem)
            found = [IRMAS_CODE_TO_LABEL[instrument]] if instrument in IRMAS_CODE_TO_LABEL else []
            if drums:
                found.append("drums")
            # Several 3 s excerpts come from one recording: that is the leakage unit.
            group, split = f"irmas:{wav.parent.name}/{recording or wav.stem}", "train"
        else:
            continue
        labelled = _ordered(found, labels)
        clips.append(Clip(path=str(wav), labels=labelled, group=group, split=split, source="irmas"))
    return clips


# --------------------------------------------------------------------------- manifests


def _split_labels(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in re.split(r"[;|]", str(value)) if part.strip()]


def _optional_float(value: object) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return float(value)  # type: ignore[arg-type]


def _manifest_clip(row: Mapping, base: Path, labels: Sequence[str] | None) -> Clip:
    path = str(row.get("path") or "").strip()
    if not path:
        raise ValueError("missing 'path'")
    found = _split_labels(row.get("labels"))
    start = _optional_float(row.get("start")) or 0.0
    end = _optional_float(row.get("end"))
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"bad time range start={start} end={end}")
    split = str(row.get("split") or "").strip() or None
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    activity = None
    if row.get("activity") is not None:  # JSONL only: {label: [[start, end], ...]}
        activity = {str(k): tuple((float(s), float(e)) for s, e in v) for k, v in row["activity"].items()}
    resolved = Path(path) if Path(path).is_absolute() else base / path
    keep = tuple(dict.fromkeys(found)) if labels is None else _ordered(found, labels)
    if activity is not None:
        activity = {k: v for k, v in activity.items() if k in keep}
    return Clip(
        path=str(resolved),
        labels=keep,
        start=start,
        end=end,
        group=str(row.get("group") or "").strip() or str(resolved),
        split=split,
        activity=activity,
        source=str(row.get("source") or "").strip() or "manifest",
    )


def load_manifest(path: str | Path, *, labels: Sequence[str] | None = None) -> list[Clip]:
    """CSV (header row; labels joined by ';' or '|') or JSONL (one object per line) with
    path, labels and optional start, end, group, split, source. Relative paths are
    resolved against the manifest's folder. ``labels`` drops labels outside the set."""
    path = Path(path)
    base = path.parent
    clips = []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                clips.append(_manifest_clip(row, base, labels))
            except (ValueError, TypeError, AttributeError) as error:
                raise ValueError(f"{path}:{number}: bad manifest row: {error}") from error
        return clips
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "labels"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}:1: manifest header lacks {sorted(missing)}")
        for row in reader:
            try:
                clips.append(_manifest_clip(row, base, labels))
            except (ValueError, TypeError) as error:
                raise ValueError(f"{path}:{reader.line_num}: bad manifest row: {error}") from error
    return clips


# --------------------------------------------------------------------------- Medley-solos-DB

MEDLEY_TO_LABEL: dict[str, str] = {
    "clarinet": "clarinet",
    "distorted electric guitar": "electric guitar",
    "female singer": "voice",
    "flute": "flute",
    "piano": "piano",
    "tenor saxophone": "saxophone",
    "trumpet": "trumpet",
    "violin": "violin",
}
_MEDLEY_SPLITS = {"training": "train", "validation": "validation", "test": "test"}


def load_medley_solos(root: str | Path, *, labels: Sequence[str] | None = None) -> list[Clip]:
    """Medley-solos-DB: one solo instrument per clip, official splits, grouped by song.
    Rows whose audio file is missing are skipped (the archive is often partly fetched)."""
    root = Path(root)
    meta = next(root.rglob("Medley-solos-DB_metadata.csv"), None)
    if meta is None:
        raise FileNotFoundError(f"no Medley-solos-DB_metadata.csv below {root}")
    audio = {p.name: p for p in root.rglob("Medley-solos-DB_*.wav")}
    labels = tuple(MEDLEY_TO_LABEL.values()) if labels is None else tuple(labels)
    clips = []
    with meta.open(newline="") as handle:
        for row in csv.DictReader(handle):
            name = f"Medley-solos-DB_{row['subset']}-{row['instrument_id']}_{row['uuid4']}.wav"
            if name not in audio:
                continue
            found = [MEDLEY_TO_LABEL[row["instrument"]]] if row["instrument"] in MEDLEY_TO_LABEL else []
            clips.append(
                Clip(
                    path=str(audio[name]),
                    labels=_ordered(found, labels),
                    group=f"medley:{row['song_id']}",
                    split=_MEDLEY_SPLITS.get(row["subset"]),
                    source="medley_solos_db",
                )
            )
    return clips


# --------------------------------------------------------------------------- dispatch


def detect_format(root_or_file: str | Path) -> str:
    """"manifest" for a file, "slakh" when metadata.yaml files lie below, "medley" with the
    Medley-solos-DB metadata, else "irmas"."""
    path = Path(root_or_file)
    if path.is_file():
        return "manifest"
    if not path.is_dir():
        raise FileNotFoundError(path)
    if next(path.rglob("metadata.yaml"), None) is not None:
        return "slakh"
    if next(path.rglob("Medley-solos-DB_metadata.csv"), None) is not None:
        return "medley"
    if next(path.rglob("[[]*.wav"), None) is not None or next(path.rglob("*.txt"), None) is not None:
        return "irmas"
    raise ValueError(f"cannot tell the dataset format of {path}; pass format=")


def load_dataset(
    root_or_file: str | Path,
    *,
    format: str = "auto",
    labels: Sequence[str] | None = None,
    split: str | None = None,
) -> list[Clip]:
    """Dispatch to a loader; ``format`` is "slakh", "irmas", "manifest", "medley" or "auto"."""
    if format == "auto":
        format = detect_format(root_or_file)
    if format == "slakh":
        clips = load_slakh(root_or_file, labels=LABELS if labels is None else labels, split=split)
    elif format == "irmas":
        clips = load_irmas(root_or_file, labels=labels)
    elif format == "manifest":
        clips = load_manifest(root_or_file, labels=labels)
    elif format == "medley":
        clips = load_medley_solos(root_or_file, labels=labels)
    else:
        raise ValueError(f"unknown dataset format {format!r}: use slakh, irmas, manifest, medley or auto")
    if split is not None and format != "slakh":
        clips = [c for c in clips if c.split == split]
    return clips


# --------------------------------------------------------------------------- targets & splits


def _overlap(segments: Segments, start: float, end: float) -> float:
    return sum(max(0.0, min(e, end) - max(s, start)) for s, e in segments)


def window_targets(
    clip: Clip, labels: Sequence[str], start: float, end: float, *, min_overlap: float = 0.25
) -> np.ndarray:
    """Multi-hot float32 targets for the window [start, end) in file time.

    With activity, a label is on when it sounds at least ``min_overlap`` s inside the window
    (capped at the window length, so short windows can still be positive); labels without
    activity fall back to the clip labels.
    """
    need = min(min_overlap, max(end - start, 0.0))
    targets = np.zeros(len(labels), dtype=np.float32)
    for i, label in enumerate(labels):
        if clip.activity is not None and label in clip.activity:
            on = _overlap(clip.activity[label], start, end) >= need and need > 0
        else:
            on = label in clip.labels
        targets[i] = float(on)
    return targets


def _group_rank(group: str, seed: int) -> str:
    # sha1 not hash(): Python salts str hashes per process, which would break determinism.
    return hashlib.sha1(f"{seed}:{group}".encode()).hexdigest()


def split_clips(
    clips: Sequence[Clip], *, validation: float = 0.15, seed: int = 0
) -> tuple[list[Clip], list[Clip]]:
    """(train, validation), never putting one group on both sides; deterministic.

    Official splits are kept: "validation" clips validate, "test" clips are left out of
    both, and train clips sharing a group with validation are dropped. "train" clips of a
    source that has its own validation clips stay in train; the rest (no split, or a
    dataset with only train/test like IRMAS) give a fraction ``validation`` of their groups
    to validation.
    """
    with_validation = {c.source for c in clips if c.split == "validation"}
    fixed_train, fixed_val, pool = [], [], []
    for clip in clips:
        if clip.split == "test":
            continue
        if clip.split == "validation":
            fixed_val.append(clip)
        elif clip.split == "train" and clip.source in with_validation:
            fixed_train.append(clip)
        else:
            pool.append(clip)
    # A group already given to one side by the dataset pulls its pool clips along.
    val_groups = {c.group for c in fixed_val}
    train_groups = {c.group for c in fixed_train}
    free = sorted({c.group for c in pool} - val_groups - train_groups, key=lambda g: _group_rank(g, seed))
    n_val = round(validation * len(free))
    if validation > 0 and n_val == 0 and len(free) > 1:
        n_val = 1
    val_groups |= set(free[:n_val])
    # Original Slakh2100 repeats some songs across its splits: validation wins.
    train = [c for c in fixed_train + pool if c.group not in val_groups]
    val = fixed_val + [c for c in pool if c.group in val_groups]
    return train, val
