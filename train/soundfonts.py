"""SoundFonts: where they are, which family each belongs to, and synthesis of one stem.

A stem is rendered with ``tinysoundfont`` for .sf2 files or with the ``timidity`` command
line for the held-out ``freepats`` font family. The MIDI preparation the synthesis needs
(sustain pedal, cropping, excerpts) lives here too.
"""
from __future__ import annotations

import os
import shutil
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
}

_SEARCH_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/share/sounds/sf3",
                "/usr/local/share/soundfonts", os.path.expanduser("~/.local/share/soundfonts"))
_KNOWN_FILES = {"fluidr3": ("FluidR3_GM.sf2",), "musescore": ("MuseScore_General.sf2",),
                "timgm6mb": ("TimGM6mb.sf2",)}
_BEST_FIRST = ("fluidr3", "musescore", "timgm6mb", FREEPATS)


# ---------------------------------------------------------------- soundfonts


def soundfont_name(spec: str) -> str:
    """Short, lower-case name of a font spec (path or ``freepats``)."""
    if spec == FREEPATS:
        return FREEPATS
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
    removed: tinysoundfont ignores the pedal. A held note stops when its key is struck again."""
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

_SYNTHS: dict[tuple[str, int], tuple[object, int]] = {}


def _synth(path: str, rate: int) -> tuple[object, int]:
    """Per-process cache; FluidR3 takes ~0.3 s and ~450 MB to load, so keep only two."""
    import tinysoundfont

    key = (path, rate)
    if key not in _SYNTHS:
        while len(_SYNTHS) >= 2:
            _SYNTHS.pop(next(iter(_SYNTHS)))
        synth = tinysoundfont.Synth(samplerate=rate)
        _SYNTHS[key] = (synth, synth.sfload(path))
    return _SYNTHS[key]


def _render_tsf(inst: pretty_midi.Instrument, path: str, rate: int, n: int) -> tuple[np.ndarray, bool]:
    synth, sfid = _synth(path, rate)
    chan = 9 if inst.is_drum else 0
    synth.sounds_off()  # a quick (not instant) release: flush it so stems never leak into each other
    synth.generate_simple(int(0.1 * rate))
    synth.control_change(chan, 121, 0)  # reset controllers left by the previous stem
    synth.pitchbend(chan, 8192)
    try:
        synth.program_select(chan, sfid, 0, inst.program, is_drums=inst.is_drum)
    except RuntimeError:
        if not inst.is_drum:
            return np.zeros(n, np.float32), False
        synth.program_select(chan, sfid, 0, 0, is_drums=True)  # missing kit: standard kit
    events: list[tuple[float, int, str, int, int]] = []
    for note in inst.notes:
        events.append((note.start, 2, "on", note.pitch, note.velocity))
        events.append((note.end, 0, "off", note.pitch, 0))
    for c in inst.control_changes:
        if c.number in (1, 7, 11, 91, 93, 100, 101, 6, 38):
            events.append((c.time, 1, "cc", c.number, c.value))
    for b in inst.pitch_bends:
        events.append((b.time, 1, "bend", int(np.clip(b.pitch + 8192, 0, 16383)), 0))
    events.sort(key=lambda e: (e[0], e[1]))
    buf = np.zeros(2 * n, np.float32)
    view = memoryview(buf).cast("B")
    pos = 0
    for t, _, kind, a, b in events:
        s = min(n, int(round(t * rate)))
        if s > pos:
            synth.generate_simple(s - pos, buffer=view[pos * 8:s * 8])
            pos = s
        if kind == "on":
            synth.noteon(chan, a, b)
        elif kind == "off":
            synth.noteoff(chan, a)
        elif kind == "cc":
            synth.control_change(chan, a, b)
        else:
            synth.pitchbend(chan, a)
    if pos < n:
        synth.generate_simple(n - pos, buffer=view[pos * 8:])
    synth.sounds_off()
    return buf.reshape(-1, 2).mean(axis=1), True


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
    return _render_tsf(inst, soundfont, rate, n)
