"""A sample-based "font family": real recorded instrument notes and real drum kits.

SoundFonts are small synthetic approximations; a model trained only on them learns their
sound. This module plays a MIDI stem with *recorded* notes instead: for every note it takes
the library sample nearest in pitch, resamples it to the note's pitch, scales it by velocity
and fades it out after the note-off. Drums play one-shot hits of a Hydrogen drum kit.
Programs the library has no recording for (synths, electric pianos, ...) fall back to a
SoundFont, so a mix of this family is mostly, not only, real recordings.

Library layout (``$TAGGER_SAMPLES_DIR``, default ``~/.local/share/tagger/samples``)::

    <lib>/<instrument>/<note>.mp3|.ogg|.flac|.wav   notes named like C4, As3 / A#3, D#1v10
    <lib>/drumkits/<kit>/drumkit.xml                 Hydrogen kits (names -> GM drum keys)

``models/MODEL_CARD.md`` lists the packages (npm tonejs-instrument-*-mp3, Salamander piano,
Debian hydrogen-drumkits) and the commands that build it.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pretty_midi

from train.expression import cents_curve, level_curve

SAMPLES = "samples"  # the family's spec name, next to .sf2 paths and "freepats"
SAMPLES_ENV = "TAGGER_SAMPLES_DIR"
_AUDIO_EXT = (".mp3", ".ogg", ".flac", ".wav", ".aif", ".aiff")
_NOTE = re.compile(r"^([A-Ga-g])(#|s|b)?(-?\d)")
_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}

# GM program -> candidate library instruments (first existing one is used; several = random
# pick per stem). "ens:" plays a section: each note on the instrument whose range fits it,
# several detuned, slightly delayed players per note.
_PROGRAMS: dict[int, tuple[str, ...]] = {
    **{p: ("piano-salamander", "piano") for p in (0, 1, 2, 3)},
    **{p: ("organ",) for p in (16, 17, 18, 19)},
    20: ("harmonium",), 21: ("harmonium",), 23: ("harmonium",),
    24: ("guitar-nylon",), 25: ("guitar-acoustic",),
    **{p: ("guitar-electric",) for p in range(26, 32)},
    32: ("contrabass", "bass-electric"), 33: ("bass-electric",), 34: ("bass-electric",),
    35: ("bass-electric",), 36: ("bass-electric",), 37: ("bass-electric",),
    40: ("violin",), 41: ("violin", "cello"), 42: ("cello",), 43: ("contrabass",),
    46: ("harp",),
    48: ("ens:strings",), 49: ("ens:strings",),
    56: ("trumpet",), 57: ("trombone",), 58: ("tuba",), 59: ("trumpet",), 60: ("french-horn",),
    61: ("ens:brass",),
    **{p: ("saxophone",) for p in (64, 65, 66, 67)},
    70: ("bassoon",), 71: ("clarinet",), 72: ("flute",), 73: ("flute",),
    11: ("xylophone",), 12: ("xylophone",), 13: ("xylophone",),
}
# Section instruments, lowest first: (instrument, lowest pitch it takes).
_ENSEMBLES = {"strings": (("contrabass", 0), ("cello", 43), ("violin", 58)),
              "brass": (("tuba", 0), ("trombone", 40), ("french-horn", 50), ("trumpet", 60))}
# Instruments that ring on after the key is released (plucked/struck) vs. stop quickly.
_RINGING = {"piano-salamander", "piano", "guitar-nylon", "guitar-acoustic", "guitar-electric", "harp",
            "xylophone", "bass-electric"}

# Hydrogen instrument name -> GM drum keys it can play (first keyword match wins).
_DRUM_WORDS: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...] = (
    (("kick", "bassdrum", "bass drum", "bd"), (35, 36)),
    (("stick", "rim click", "click"), (37,)),
    (("clap",), (39,)),
    (("roll",), ()),
    (("snare",), (38, 40)),
    (("pedal",), (44,)),
    (("open", "hat op", " op", "semi"), (46,)),
    (("hat", "hh"), (42,)),
    (("ride bell", "bell", "cup"), (53,)),
    (("ride",), (51, 59)),
    (("crash", "splash", "cymbal"), (49, 57, 55, 52)),
    (("floor", "tom low", "low tom", "tom 3"), (41, 43)),
    (("tom mid", "mid", "tom 2"), (45, 47)),
    (("tom",), (48, 50)),
    (("cowbell",), (56,)),
    (("tamb",), (54,)),
    (("maraca", "shake"), (70, 69)),
)
# Kits of percussion only or of effects: not a drum kit.
_SKIP_KITS = ("circafrique", "gimme a hand", "guitarstrums")


def sample_library() -> Path | None:
    """The sample library folder, or None when there is none."""
    root = Path(os.environ.get(SAMPLES_ENV) or Path.home() / ".local/share/tagger/samples")
    return root if root.is_dir() and any(root.iterdir()) else None


def note_pitch(name: str) -> int | None:
    """MIDI pitch of a sample file named after its note (C4 = 60; As4 = A#4; Db4)."""
    m = _NOTE.match(name)
    if not m:
        return None
    pc = _PC[m.group(1).lower()] + {"#": 1, "s": 1, "b": -1}.get(m.group(2) or "", 0)
    return 12 * (int(m.group(3)) + 1) + pc


def _decode(path: Path, rate: int) -> np.ndarray:
    from tagger.decode import decode

    audio = decode(str(path), sample_rate=rate)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio / peak).astype(np.float32) if peak > 1e-6 else audio


_BANK_RATE = 44100


def _bank_file(folder: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tagger" / "samples"
    key = zlib.crc32(str(folder.resolve()).encode()) & 0xFFFFFFFF
    return base / f"{folder.name}-{key:08x}.npz"


def _bank(folder: Path) -> dict[str, np.ndarray]:
    """Every note sample of ``folder`` decoded once at 44.1 kHz and cached on disk: decoding
    hundreds of mp3 files per render process cost more than the rendering itself."""
    cache = _bank_file(folder)
    if cache.is_file():
        with np.load(cache) as data:
            return dict(data)
    bank = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in _AUDIO_EXT and (pitch := note_pitch(path.stem)) is not None:
            bank[f"{pitch}_{len(bank)}"] = _decode(path, _BANK_RATE)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npz")
    np.savez(tmp, **bank)
    os.replace(tmp, cache)  # atomic: parallel render workers may build it at the same time
    return bank


@lru_cache(maxsize=128)
def _notes(folder: str, rate: int) -> tuple[tuple[int, np.ndarray], ...]:
    """(pitch, audio at ``rate``) of every note sample in ``folder`` (recursively), sorted."""
    import torch
    import torchaudio.functional as AF

    out = []
    for key, audio in _bank(Path(folder)).items():
        audio = audio[: 6 * _BANK_RATE]  # notes in 10-s clips are shorter; keeps memory low
        if rate != _BANK_RATE:
            audio = AF.resample(torch.from_numpy(audio), _BANK_RATE, rate).numpy()
        out.append((int(key.split("_")[0]), audio))
    return tuple(sorted(out, key=lambda x: x[0]))


def instruments() -> dict[str, Path]:
    lib = sample_library()
    if lib is None:
        return {}
    return {p.name: p for p in sorted(lib.iterdir()) if p.is_dir() and p.name != "drumkits"}


def _kit_map(kit: Path) -> dict[int, list[Path]]:
    """GM drum key -> sample files of a Hydrogen kit (all layers: velocity variety)."""
    root = ET.parse(kit / "drumkit.xml").getroot()
    out: dict[int, list[Path]] = {}
    for inst in root.iter():
        if not inst.tag.endswith("instrument"):
            continue
        name = next((c.text or "" for c in inst if c.tag.endswith("name")), "").lower()
        files = [kit / (e.text or "") for e in inst.iter() if e.tag.endswith("filename") and e.text]
        files = [f for f in files if f.is_file()]
        if not name or not files:
            continue
        for words, keys in _DRUM_WORDS:
            if any(w in f" {name}" for w in words):
                for k in keys:
                    out.setdefault(k, []).extend(files)
                break
    return out


@lru_cache(maxsize=1)
def drum_kits() -> tuple[tuple[str, dict[int, list[Path]]], ...]:
    lib = sample_library()
    if lib is None or not (lib / "drumkits").is_dir():
        return ()
    kits = []
    for kit in sorted((lib / "drumkits").iterdir()):
        if (kit / "drumkit.xml").is_file() and not any(s in kit.name.lower() for s in _SKIP_KITS):
            try:
                m = _kit_map(kit)
            except ET.ParseError:
                continue
            if 36 in m and 38 in m:  # a usable kit has at least a kick and a snare
                kits.append((kit.name, m))
    return tuple(kits)


@lru_cache(maxsize=256)
def _one_shot(path: str, rate: int) -> np.ndarray:
    return _decode(Path(path), rate)[: int(2.5 * rate)]


def _stem_rng(inst: pretty_midi.Instrument) -> np.random.Generator:
    """Deterministic per stem (renders stay reproducible without threading an rng through)."""
    key = repr([(n.pitch, round(n.start, 3), n.velocity) for n in inst.notes[:64]]) + str(inst.program)
    return np.random.default_rng(zlib.crc32(key.encode()))


def _gain(velocity: int) -> float:
    return (max(1, velocity) / 127.0) ** 1.5


def _place(buf: np.ndarray, start: int, x: np.ndarray) -> None:
    if start >= len(buf):
        return
    x = x[: len(buf) - start]
    buf[start:start + len(x)] += x


def _pitched(sample: np.ndarray, ratio: float, length: int, cents: np.ndarray | None = None) -> np.ndarray:
    """``sample`` played ``ratio`` times faster (pitch up), at most ``length`` output samples;
    ``cents`` (one per output sample) bends the pitch as it plays."""
    if cents is None:
        pos = np.arange(min(length, int(len(sample) / ratio))) * ratio
    else:
        step = ratio * 2 ** (np.pad(cents[:length], (0, max(0, length - len(cents))), mode="edge") / 1200)
        pos = np.concatenate([[0.0], np.cumsum(step[:-1])])
        pos = pos[pos <= len(sample) - 1]
    return np.interp(pos, np.arange(len(sample)), sample).astype(np.float32)


def _render_notes(inst: pretty_midi.Instrument, folder_of, rate: int, n: int, rng: np.random.Generator,
                  players: int = 1) -> np.ndarray:
    buf = np.zeros(n, np.float32)
    bend = cents_curve(inst, rate, n)  # vibrato, scoops, bends (train.expression)
    for note in inst.notes:
        name, folder = folder_of(note.pitch)
        bank = _notes(str(folder), rate)
        if not bank:
            continue
        ringing = name in _RINGING
        release = 0.35 if ringing else 0.12
        for k in range(players):
            pitch, sample = min(bank, key=lambda b: (abs(b[0] - note.pitch), rng.random()))
            cents = float(rng.normal(0, 6)) if players > 1 else 0.0
            ratio = 2 ** ((note.pitch - pitch + cents / 100) / 12)
            dur = note.end - note.start
            length = int((dur + release) * rate)
            at = int(note.start * rate)
            y = _pitched(sample, ratio, length, None if bend is None or at >= n else bend[at:at + length])
            keep = int(dur * rate)
            if len(y) > keep:  # release: fade out after the note-off
                fade = np.exp(-np.arange(len(y) - keep) / (release / 4 * rate)).astype(np.float32)
                y[keep:] *= fade
            y[: min(len(y), int(0.004 * rate))] *= np.linspace(0, 1, min(len(y), int(0.004 * rate)), dtype=np.float32)
            delay = int(abs(rng.normal(0, 0.012)) * rate) if k else 0
            _place(buf, at + delay, y * _gain(note.velocity) / np.sqrt(players))
    level = level_curve(inst, rate, n)  # swells (CC11)
    return buf if level is None else buf * level


def _render_drums(inst: pretty_midi.Instrument, rate: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    kits = drum_kits()
    if not kits:
        return np.zeros(n, np.float32), False
    _, kit = kits[int(rng.integers(len(kits)))]
    buf = np.zeros(n, np.float32)
    for note in inst.notes:
        # keys the kit lacks: the nearest thing it has (a tambourine part becomes hi-hats)
        files = kit.get(note.pitch) or kit.get({44: 42, 46: 42, 59: 51, 57: 49, 53: 51, 39: 37}.get(note.pitch, -1)) \
            or kit.get(42)
        if not files:
            continue
        # Layers are ordered soft to loud in Hydrogen kits: loud hits pick from the end.
        pos = min(len(files) - 1, int(note.velocity / 128 * len(files) + rng.integers(-1, 2)))
        hit = _one_shot(str(files[max(0, pos)]), rate)
        _place(buf, int(note.start * rate), hit * _gain(note.velocity))
    return buf, True


def _amp(x: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    """Overdriven guitar: drive into a soft clipper, then a speaker-like low-pass."""
    import torch
    import torchaudio.functional as AF

    drive = float(rng.uniform(4, 20))
    y = np.tanh(drive * x / (np.max(np.abs(x)) + 1e-9))
    y = AF.lowpass_biquad(torch.from_numpy(y.astype(np.float32)), rate, min(float(rng.uniform(3000, 5500)), 0.45 * rate))
    return y.numpy() * 0.5


def render_sampled(inst: pretty_midi.Instrument, rate: int, n: int) -> tuple[np.ndarray, bool] | None:
    """Audio of one stem from recorded samples, or None when the library cannot play it
    (the caller then uses a SoundFont)."""
    rng = _stem_rng(inst)
    if inst.is_drum:
        return _render_drums(inst, rate, n, rng) if drum_kits() else None
    have = instruments()
    choices = [c for c in _PROGRAMS.get(inst.program, ()) if c in have or c.startswith("ens:")]
    if not choices:
        return None
    choice = choices[int(rng.integers(len(choices)))]
    if choice.startswith("ens:"):
        section = [(name, low) for name, low in _ENSEMBLES[choice[4:]] if name in have]
        if not section:
            return None

        def folder_of(pitch: int) -> tuple[str, Path]:
            name = [s for s, low in section if pitch >= low][-1] if pitch >= section[0][1] else section[0][0]
            return name, have[name]

        return _render_notes(inst, folder_of, rate, n, rng, players=3), True
    audio = _render_notes(inst, lambda _p: (choice, have[choice]), rate, n, rng)
    if inst.program in (29, 30) and np.any(audio):
        audio = _amp(audio, rng, rate)
    return audio, True
