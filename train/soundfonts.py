"""SoundFonts: where they are, which family each belongs to, and synthesis of one stem.

A stem is rendered with ``midirenderer`` for .sf2 files or with the ``timidity`` command
line for the held-out ``freepats`` font family. The MIDI preparation the synthesis needs
(sustain pedal, cropping, excerpts) lives here too.
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

FREEPATS = "freepats"
FREEPATS_CFG = "/etc/timidity/freepats.cfg"

# Font name (lower-case file name, stem or short name) -> family. Fonts of one family
# share samples, so evaluation must hold out a whole family, not just one file.
SOUNDFONT_FAMILIES: dict[str, str] = {
    "fluidr3": "fluid",
    "fluidr3_gm": "fluid",
    "fluidr3_gm.sf2": "fluid",
    "fluidr3_gs.sf2": "fluid",
    "musescore": "fluid",  # MuseScore General is derived from FluidR3
    "musescore_general": "fluid",
    "musescore_general.sf2": "fluid",
    "musescore_general.sf3": "fluid",
    "timgm6mb": "timgm",
    "timgm6mb.sf2": "timgm",
    FREEPATS: "freepats",
    "samples": "samples",  # recorded notes (train.samples), SoundFont fallback for the rest
}

_SEARCH_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/share/sounds/sf3",
                "/usr/local/share/soundfonts", os.path.expanduser("~/.local/share/soundfonts"))
_KNOWN_FILES = {"fluidr3": ("FluidR3_GM.sf2",), "musescore": ("MuseScore_General.sf2",),
                "timgm6mb": ("TimGM6mb.sf2",)}
_BEST_FIRST = ("fluidr3", "musescore", "timgm6mb", FREEPATS)


# ---------------------------------------------------------------- soundfonts


def soundfont_name(spec: str) -> str:
    """Short, lower-case name of a font spec (path or ``freepats``)."""
    if spec in (FREEPATS, "samples"):
        return spec
    file_name = Path(os.path.realpath(spec)).name
    for short, files in _KNOWN_FILES.items():
        if file_name in files:
            return short
    return Path(file_name).stem.lower()


def soundfont_family(spec: str) -> str:
    """Family of a font spec; an unknown font is a family of its own."""
    name = soundfont_name(spec)
    for key in (name, Path(spec).name.lower(), Path(os.path.realpath(spec)).name.lower()):
        if key in SOUNDFONT_FAMILIES:
            return SOUNDFONT_FAMILIES[key]
    return name


def find_soundfonts() -> dict[str, str]:
    """Fonts available here by short name: path to .sf2, or ``"freepats"`` for timidity."""
    found: dict[str, str] = {}
    for short, files in _KNOWN_FILES.items():
        for d in _SEARCH_DIRS:
            hits = [Path(d, f) for f in files if Path(d, f).is_file()]
            if hits:
                found[short] = str(hits[0])
                break
    if "timgm6mb" not in found:  # pip-only installs still have pretty_midi's copy
        bundled = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
        if bundled.is_file():
            found["timgm6mb"] = str(bundled)
    if shutil.which("timidity") and Path(FREEPATS_CFG).is_file():
        found[FREEPATS] = FREEPATS
    from train.samples import SAMPLES, sample_library

    if sample_library() is not None:
        found[SAMPLES] = SAMPLES
    return found


def resolve_soundfont(spec: str) -> str:
    """Accept a short name from ``find_soundfonts`` or a path / ``freepats``."""
    fonts = find_soundfonts()
    if spec in fonts:
        return fonts[spec]
    if spec == FREEPATS or Path(spec).is_file():
        return spec
    raise FileNotFoundError(f"soundfont {spec!r} not found (available: {sorted(fonts)})")


def best_soundfont() -> str:
    fonts = find_soundfonts()
    return next(fonts[n] for n in _BEST_FIRST if n in fonts)


# ---------------------------------------------------------------- MIDI helpers


def apply_sustain(inst: pretty_midi.Instrument) -> pretty_midi.Instrument:
    """Copy of ``inst`` with note-offs held by the sustain pedal (CC64) extended and CC64
    removed, so the labels and every synthesizer agree on when a held note ends. A held note
    stops when its key is struck again."""
    ccs = sorted((c for c in inst.control_changes if c.number == 64), key=lambda c: c.time)
    out = pretty_midi.Instrument(inst.program, inst.is_drum, inst.name)
    out.control_changes = [c for c in inst.control_changes if c.number != 64]
    out.pitch_bends = list(inst.pitch_bends)
    downs: list[tuple[float, float]] = []
    down_at: float | None = None
    for c in ccs:
        if c.value >= 64 and down_at is None:
            down_at = c.time
        elif c.value < 64 and down_at is not None:
            downs.append((down_at, c.time))
            down_at = None
    if down_at is not None:  # pedal never released (e.g. cut excerpt): hold to the last note-off
        downs.append((down_at, max([down_at, *(n.end for n in inst.notes)])))
    by_pitch: dict[int, list[float]] = {}
    for n in inst.notes:
        by_pitch.setdefault(n.pitch, []).append(n.start)
    for starts in by_pitch.values():
        starts.sort()
    for n in inst.notes:
        end = n.end
        for d, u in downs:
            if d <= n.end < u:
                restrike = [s for s in by_pitch[n.pitch] if n.end <= s < u and s > n.start]
                end = max(n.end, min([u, *restrike]))
                break
        out.notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start, end))
    return out


def excerpt(midi: pretty_midi.PrettyMIDI, start: float, seconds: float) -> pretty_midi.PrettyMIDI:
    """Notes and controls of ``midi`` inside [start, start+seconds), shifted to 0.
    Notes already sounding at ``start`` are kept, re-struck at 0 (they do sound there)."""
    end = start + seconds
    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    for inst in midi.instruments:
        new = pretty_midi.Instrument(inst.program, inst.is_drum, inst.name)
        new.notes = [pretty_midi.Note(n.velocity, n.pitch, max(0.0, n.start - start), min(n.end, end) - start)
                     for n in inst.notes if n.end > start and n.start < end and min(n.end, end) - max(n.start, start) > 0.01]
        # controls: last value before the window at 0, then those inside
        for attr in ("control_changes", "pitch_bends"):
            items = sorted(getattr(inst, attr), key=lambda c: c.time)
            before: dict[int, object] = {}
            inside = []
            for c in items:
                key = getattr(c, "number", -1)
                if c.time < start:
                    before[key] = c
                elif c.time < end:
                    inside.append(c)
            shifted = [type(c)(c.number, c.value, 0.0) if attr == "control_changes" else type(c)(c.pitch, 0.0)
                       for c in before.values()]
            shifted += [type(c)(c.number, c.value, c.time - start) if attr == "control_changes" else type(c)(c.pitch, c.time - start)
                        for c in inside]
            setattr(new, attr, shifted)
        if new.notes:
            out.instruments.append(new)
    return out


def crop(midi: pretty_midi.PrettyMIDI, seconds: float) -> list[pretty_midi.Instrument]:
    """Instruments with notes before ``seconds`` (notes cut at ``seconds``)."""
    insts = []
    for inst in midi.instruments:
        new = pretty_midi.Instrument(inst.program, inst.is_drum, inst.name)
        new.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, seconds))
                     for n in inst.notes if n.start < seconds and n.end > n.start]
        new.control_changes = [c for c in inst.control_changes if c.time < seconds]
        new.pitch_bends = [b for b in inst.pitch_bends if b.time < seconds]
        if new.notes:
            insts.append(new)
    return insts


# ---------------------------------------------------------------- synthesis

_SYNTH_RATE = 48000  # midirenderer (rustysynth) always renders 16-bit stereo at 48 kHz
_PASSED_CCS = (1, 7, 11, 100, 101, 6, 38)  # modulation, volume, expression, pitch-bend range (RPN)
_NO_OP_CC = 3  # an undefined controller: marks the stem's end, so the render runs that long
_FONTS: dict[str, tuple[bytes, frozenset[tuple[int, int]]]] = {}


def _font(path: str) -> tuple[bytes, frozenset[tuple[int, int]]]:
    """Per-process cache of a font's bytes and its (bank, program) presets; FluidR3 is 140 MB,
    so keep only two."""
    if path not in _FONTS:
        while len(_FONTS) >= 2:
            _FONTS.pop(next(iter(_FONTS)))
        data = Path(path).read_bytes()
        _FONTS[path] = (data, _presets(data))
    return _FONTS[path]


def _presets(data: bytes) -> frozenset[tuple[int, int]]:
    """(bank, program) of every preset header (RIFF sfbk > LIST pdta > phdr)."""
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ValueError("not a SoundFont 2 file")
    pos = 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if kind == b"LIST" and data[pos + 8:pos + 12] == b"pdta":
            sub, end = pos + 12, pos + 8 + size
            while sub + 8 <= end:
                sub_kind, sub_size = data[sub:sub + 4], struct.unpack_from("<I", data, sub + 4)[0]
                if sub_kind == b"phdr":  # 38-byte records; the last one is the EOP terminator
                    records = range(sub + 8, sub + 8 + sub_size - 38, 38)
                    return frozenset((struct.unpack_from("<H", data, r + 22)[0], struct.unpack_from("<H", data, r + 20)[0])
                                     for r in records)
                sub += 8 + sub_size + (sub_size & 1)
        pos += 8 + size + (size & 1)
    raise ValueError("SoundFont without preset headers")


def _render_sf2(inst: pretty_midi.Instrument, path: str, rate: int, n: int) -> tuple[np.ndarray, bool]:
    """One stem through midirenderer (rustysynth, a SoundFont 2 synthesizer with wheels for
    every platform), dry: no reverb or chorus, as ``render_midi`` adds its own effects."""
    import midirenderer
    import torch
    import torchaudio.functional as AF

    data, presets = _font(path)
    program = inst.program
    if inst.is_drum and (128, program) not in presets:
        program = 0  # missing kit: standard kit
    if (128 if inst.is_drum else 0, program) not in presets:
        return np.zeros(n, np.float32), False
    stem = pretty_midi.Instrument(program, is_drum=inst.is_drum)
    stem.notes = list(inst.notes)
    stem.pitch_bends = list(inst.pitch_bends)
    end = n / rate
    stem.control_changes = [pretty_midi.ControlChange(91, 0, 0.0), pretty_midi.ControlChange(93, 0, 0.0)]
    stem.control_changes += [c for c in inst.control_changes if c.number in _PASSED_CCS and c.time < end]
    stem.control_changes.append(pretty_midi.ControlChange(_NO_OP_CC, 0, end))
    midi = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=120.0)  # ticks of ~0.5 ms
    midi.instruments.append(stem)
    buf = io.BytesIO()
    midi.write(buf)
    wav = midirenderer.render_wave_from(data, buf.getvalue())
    audio, synth_rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
    if synth_rate != rate:
        mono = AF.resample(mono, synth_rate, rate)
    mono = mono.numpy()[:n]
    return np.pad(mono, (0, n - len(mono))).astype(np.float32), True


def _render_timidity(inst: pretty_midi.Instrument, rate: int, n: int) -> tuple[np.ndarray, bool]:
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(inst)
    with tempfile.TemporaryDirectory(prefix="tagger-timidity-") as tmp:
        mid, wav = Path(tmp, "stem.mid"), Path(tmp, "stem.wav")
        pm.write(str(mid))
        # --preserve-silence: timidity otherwise drops leading silence and shifts the stem
        cmd = ["timidity", "-c", FREEPATS_CFG, "--preserve-silence", "-EFreverb=0", "-EFchorus=0",
               "-Ow", "--output-mono", "-s", str(rate), "-o", str(wav), str(mid)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        audio, _ = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)[:n]
    return np.pad(audio, (0, n - len(audio))), True


def render_stem(inst: pretty_midi.Instrument, soundfont: str, rate: int, n: int) -> tuple[np.ndarray, bool]:
    """Mono float32 audio of one instrument (sustain pedal applied) and whether it rendered."""
    inst = apply_sustain(inst)
    if soundfont == FREEPATS:
        return _render_timidity(inst, rate, n)
    if soundfont == "samples":
        from train.samples import render_sampled

        played = render_sampled(inst, rate, n)
        if played is not None:
            return played
        soundfont = _fallback_font(inst)
    return _render_sf2(inst, soundfont, rate, n)


def _fallback_font(inst: pretty_midi.Instrument) -> str:
    """A .sf2 of the training families for what the sample library cannot play: TimGM6mb
    first, which loads in milliseconds (FluidR3 reloads per render rate cost 3 s each)."""
    fonts = find_soundfonts()
    paths = [fonts[n] for n in ("timgm6mb", "fluidr3", "musescore") if n in fonts]
    if not paths:
        raise FileNotFoundError("the samples family needs a SoundFont for unsampled programs")
    return paths[0]
