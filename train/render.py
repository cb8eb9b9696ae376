"""Data engine: MIDI + SoundFonts -> labelled mixes on disk in the Slakh2100 layout.

Every instrument (stem) is rendered on its own, with ``tinysoundfont`` for .sf2 files or
the ``timidity`` command line for the held-out ``freepats`` font family, then mixed.
Labels come from the MIDI (note on/off plus a short release) and are kept only where the
stem's rendered audio is actually audible, because some fonts have silent presets.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pretty_midi
import soundfile as sf
import torch
import torchaudio.functional as AF
import yaml

from train.arrange import generate_arrangement
from train.taxonomy import label_for_program

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

_RENDER_RATES = (16000, 22050, 32000, 44100)
_RENDER_RATE_P = (0.25, 0.3, 0.2, 0.25)
_RELEASE = 0.1  # seconds a note still counts as sounding after its note-off
_DRUM_MIN = 0.25  # drum hits ring even when the MIDI note is a few ticks long
_HOP = 0.02  # activity frame in seconds
_ABS_FLOOR_DB = -60.0  # stem frame RMS below this (dBFS) is silence
_REL_FLOOR_DB = -35.0  # ...or this far below the mix in the same frame is inaudible


@dataclass
class Stem:
    program: int
    is_drum: bool
    label: str | None
    audio: np.ndarray  # mono float32 at the mix sample rate, scaled like the mix
    name: str
    midi: pretty_midi.Instrument  # what was rendered (before sustain-pedal extension)
    rendered: bool = True  # False when the font has no such preset


@dataclass
class RenderedMix:
    audio: np.ndarray
    sample_rate: int
    stems: list[Stem]
    label_activity: dict[str, list[tuple[float, float]]]
    soundfont: str = ""
    render_sample_rate: int = 0
    gain: float = 1.0  # overall gain applied to mix and stems (Slakh's overall_gain)
    effects: dict[str, object] = field(default_factory=dict)


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


def _crop(midi: pretty_midi.PrettyMIDI, seconds: float) -> list[pretty_midi.Instrument]:
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


# ---------------------------------------------------------------- effects


def _lossy(audio: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Encode to mp3 or AAC and decode again, aligned and trimmed to the input length."""
    fmt, codec = ("mp3", "libmp3lame") if rng.random() < 0.6 else ("adts", "aac")
    bitrate = int(rng.choice([32000, 48000, 64000, 96000]))
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1)[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    chunks = []
    with av.open(buf, "r") as inp:
        for fr in inp.decode(audio=0):
            chunks.append(fr.to_ndarray().reshape(fr.to_ndarray().shape[0], -1).mean(axis=0))
    dec = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros_like(audio)
    # codecs add a priming delay: find it by cross-correlation and undo it
    m = min(len(audio), len(dec), rate * 2)
    max_lag = min(4096, m // 2)
    if m > 2 * max_lag > 0:
        ref = audio[:m]
        spec = np.fft.irfft(np.fft.rfft(dec[:m], 2 * m) * np.conj(np.fft.rfft(ref, 2 * m)))
        lag = int(np.argmax(spec[:max_lag]))
        dec = dec[lag:]
    dec = dec[: len(audio)]
    return np.pad(dec, (0, len(audio) - len(dec))), f"{codec}@{bitrate // 1000}k"


def _reverb(audio: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Cheap room: convolution with exponentially decaying noise, mixed with the dry signal."""
    rt60 = float(rng.uniform(0.3, 1.6))
    t = np.arange(int(rt60 * rate)) / rate
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir = np.concatenate([np.zeros(int(rng.uniform(0.005, 0.03) * rate)), ir]).astype(np.float32)
    ir /= np.sqrt(np.sum(ir**2)) + 1e-9
    wet = AF.fftconvolve(torch.from_numpy(audio), torch.from_numpy(ir))[: len(audio)].numpy()
    mix = float(rng.uniform(0.1, 0.45))
    return (audio * (1 - mix) + wet * mix).astype(np.float32), f"reverb rt60={rt60:.2f} wet={mix:.2f}"


def _eq(x: torch.Tensor, rate: int, rng: np.random.Generator) -> tuple[torch.Tensor, str]:
    kind = int(rng.integers(3))
    if kind == 0:
        cutoff = float(min(rng.uniform(2000, 8000), 0.45 * rate))
        return AF.lowpass_biquad(x, rate, cutoff), f"lowpass {cutoff:.0f}"
    if kind == 1:
        g = float(rng.uniform(-6, 6))
        return AF.treble_biquad(x, rate, g, central_freq=min(3000.0, 0.4 * rate)), f"treble {g:+.1f}dB"
    g = float(rng.uniform(-6, 6))
    return AF.bass_biquad(x, rate, g, central_freq=150.0), f"bass {g:+.1f}dB"


# ---------------------------------------------------------------- labels


def _frames(n_samples: int, rate: int) -> tuple[int, int]:
    hop = max(1, int(round(_HOP * rate)))
    return hop, (n_samples + hop - 1) // hop


def _frame_rms(audio: np.ndarray, hop: int, n_frames: int) -> np.ndarray:
    x = np.pad(audio, (0, n_frames * hop - len(audio)))
    return np.sqrt(np.mean(x.reshape(n_frames, hop) ** 2, axis=1) + 1e-20)


def _runs(mask: np.ndarray, hop_s: float, end: float) -> list[tuple[float, float]]:
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(round(float(a * hop_s), 3), round(float(min(b * hop_s, end)), 3)) for a, b in zip(edges[::2], edges[1::2])]


def label_activity(stems: Sequence[Stem], mix: np.ndarray, sample_rate: int) -> dict[str, list[tuple[float, float]]]:
    """Per label: merged (start, end) seconds where its notes sound and its stem is audible."""
    hop, n_frames = _frames(len(mix), sample_rate)
    hop_s = hop / sample_rate
    mix_rms = _frame_rms(mix, hop, n_frames)
    masks: dict[str, np.ndarray] = {}
    for stem in stems:
        if stem.label is None or not stem.rendered:
            continue
        notes = np.zeros(n_frames, bool)
        for note in apply_sustain(stem.midi).notes:
            end = note.end + _RELEASE if not stem.is_drum else max(note.end, note.start + _DRUM_MIN)
            notes[int(note.start / hop_s): int(np.ceil(end / hop_s))] = True
        rms = _frame_rms(stem.audio, hop, n_frames)
        audible = (rms > 10 ** (_ABS_FLOOR_DB / 20)) & (rms > mix_rms * 10 ** (_REL_FLOOR_DB / 20))
        audible |= np.concatenate([[False], audible[:-1]]) | np.concatenate([audible[1:], [False]])
        masks[stem.label] = masks.get(stem.label, np.zeros(n_frames, bool)) | (notes & audible)
    duration = len(mix) / sample_rate
    return {lab: runs for lab, m in masks.items() if (runs := _runs(m, hop_s, duration))}


def _merge(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def window_labels(label_activity: dict[str, Sequence[tuple[float, float]]], labels: Sequence[str],
                  start: float, end: float, *, min_overlap: float = 0.25) -> np.ndarray:
    """Multi-hot float32 for [start, end): a label is on if it sounds there for at least
    ``min_overlap`` seconds (or the whole window, when the window is shorter)."""
    need = min(min_overlap, end - start) - 1e-9
    out = np.zeros(len(labels), np.float32)
    for i, lab in enumerate(labels):
        total = sum(max(0.0, min(e, end) - max(s, start)) for s, e in _merge(label_activity.get(lab, ())))
        out[i] = float(total >= need and total > 0)
    return out


# ---------------------------------------------------------------- mixing


def render_midi(midi: pretty_midi.PrettyMIDI, soundfont: str, *, sample_rate: int = 16000,
                rng: np.random.Generator | None = None, seconds: float | None = None,
                augment: bool = False, render_sample_rate: int | None = None) -> RenderedMix:
    """Render each instrument of ``midi`` separately, mix, normalise and label.

    ``soundfont``: .sf2 path, short name from ``find_soundfonts`` or ``"freepats"``.
    ``augment``: velocity spread, random stem gains/EQ, render rate, reverb, lossy codec,
    random overall level. Without it stems are mixed as the font plays them, peak 0.9.
    """
    rng = rng if rng is not None else np.random.default_rng()
    soundfont = resolve_soundfont(soundfont)
    seconds = float(seconds if seconds is not None else midi.get_end_time() + 1.0)
    if render_sample_rate is None:
        render_sample_rate = int(rng.choice(_RENDER_RATES, p=_RENDER_RATE_P)) if augment else sample_rate
    effects: dict[str, object] = {}
    insts = _crop(midi, seconds)
    if augment:  # velocity spread: a global scale and per-note noise
        scale, sd = float(rng.uniform(0.75, 1.2)), float(rng.uniform(0, 10))
        for inst in insts:
            for note in inst.notes:
                note.velocity = int(np.clip(round(note.velocity * scale + rng.normal(0, sd)), 1, 127))
        effects["velocity"] = f"x{scale:.2f} sd={sd:.1f}"
    n_render = int(np.ceil(seconds * render_sample_rate))
    raw, ok = [], []
    for inst in insts:
        audio, rendered = render_stem(inst, soundfont, render_sample_rate, n_render)
        raw.append(audio)
        ok.append(rendered)
    n_out = int(np.ceil(seconds * sample_rate))
    if raw:
        x = torch.from_numpy(np.stack(raw))
        if render_sample_rate != sample_rate:
            x = AF.resample(x, render_sample_rate, sample_rate)
        x = torch.nn.functional.pad(x, (0, max(0, n_out - x.shape[1])))[:, :n_out]
    else:
        x = torch.zeros(0, n_out)
    if augment and len(x):
        gains_db = rng.uniform(-9, 3, size=len(x))
        x = x * torch.from_numpy(10 ** (gains_db / 20)).float()[:, None]
        effects["stem_gains_db"] = [round(float(g), 1) for g in gains_db]
        for i in range(len(x)):
            if rng.random() < 0.25:
                y, desc = _eq(x[i], sample_rate, rng)
                x[i] = y
                effects[f"stem{i}_eq"] = desc
    stems_audio = x.numpy().astype(np.float32)
    mix = stems_audio.sum(axis=0) if len(stems_audio) else np.zeros(n_out, np.float32)
    if augment:
        if rng.random() < 0.25:
            mix, effects["reverb"] = _reverb(mix, sample_rate, rng)
        if rng.random() < 0.3:
            y, effects["mix_eq"] = _eq(torch.from_numpy(np.ascontiguousarray(mix)), sample_rate, rng)
            mix = y.numpy()
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    target = float(rng.uniform(0.3, 0.9)) if augment else 0.9
    gain = target / peak if peak > 1e-6 else 1.0
    mix = (mix * gain).astype(np.float32)
    stems_audio *= gain
    if augment and rng.random() < 0.15 and peak > 1e-6:
        mix, effects["codec"] = _lossy(mix, sample_rate, rng)
        mix = np.clip(mix, -1.0, 1.0).astype(np.float32)
    stems = [Stem(inst.program, inst.is_drum, label_for_program(inst.program, inst.is_drum), stems_audio[i],
                  inst.name or ("Drums" if inst.is_drum else pretty_midi.program_to_instrument_name(inst.program)),
                  inst, ok[i]) for i, inst in enumerate(insts)]
    return RenderedMix(mix, sample_rate, stems, label_activity(stems, mix, sample_rate), soundfont,
                       render_sample_rate, gain, effects)


# ---------------------------------------------------------------- dataset


def _inst_class(program: int, is_drum: bool) -> str:
    if is_drum:
        return "Drums"
    name = pretty_midi.program_to_instrument_class(program)
    return "Strings (continued)" if name == "Ensemble" else name  # Slakh's spelling


def _loudness(audio: np.ndarray, rate: int) -> float | None:
    if len(audio) < int(0.4 * rate) or np.max(np.abs(audio)) < 1e-6:
        return None
    value = float(AF.loudness(torch.from_numpy(np.ascontiguousarray(audio))[None], rate))
    return value if np.isfinite(value) else None


def _midi_files(midi_dir: str) -> list[Path]:
    return sorted(p for p in Path(midi_dir).rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file())


def _source(rng: np.random.Generator, seconds: float, files: list[Path]) -> tuple[pretty_midi.PrettyMIDI, str | None]:
    """The track's MIDI: a generated arrangement, or a random excerpt of a user file."""
    if not files:
        return generate_arrangement(rng, seconds=seconds), None
    for _ in range(20):
        path = files[int(rng.integers(len(files)))]
        try:
            pm = pretty_midi.PrettyMIDI(str(path))
        except Exception:  # broken files are common in Lakh; pick another
            continue
        end = pm.get_end_time()
        start = float(rng.uniform(0, max(0.0, end - seconds)))
        clip = excerpt(pm, start, seconds)
        if sum(len(i.notes) for i in clip.instruments) >= 4:
            return clip, str(path)
    return generate_arrangement(rng, seconds=seconds), None


def _track_plan(seed: int, index: int, fonts: Sequence[str], augment: bool, sample_rate: int) -> tuple[np.random.Generator, str, int]:
    rng = np.random.default_rng([seed, index])
    rate = int(rng.choice(_RENDER_RATES, p=_RENDER_RATE_P)) if augment else sample_rate
    return rng, fonts[index % len(fonts)], rate


def track_dir(out_dir: str | Path, index: int) -> Path:
    """Track ``index`` (0-based) lives in ``TrackNNNNN`` numbered from 1, like Slakh."""
    return Path(out_dir) / f"Track{index + 1:05d}"


def _write_flac(path: Path, audio: np.ndarray, rate: int) -> None:
    sf.write(str(path), np.clip(audio, -1, 1), rate, format="FLAC", subtype="PCM_16")


def _render_track(out_dir: str, index: int, seed: int, fonts: Sequence[str], seconds: float,
                  sample_rate: int, files: list[Path], augment: bool) -> Path:
    torch.set_num_threads(1)  # one track per core; keep the shared machine light
    rng, font, rate = _track_plan(seed, index, fonts, augment, sample_rate)
    midi, source = _source(rng, seconds, files)
    mix = render_midi(midi, font, sample_rate=sample_rate, rng=rng, seconds=seconds, augment=augment,
                      render_sample_rate=rate)
    tdir = track_dir(out_dir, index)
    (tdir / "stems").mkdir(parents=True, exist_ok=True)
    (tdir / "MIDI").mkdir(exist_ok=True)
    _write_flac(tdir / "mix.flac", mix.audio, sample_rate)
    all_src = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    stems_meta: dict[str, dict[str, object]] = {}
    plugin = "freepats.cfg" if font == FREEPATS else Path(font).name
    for k, stem in enumerate(mix.stems):
        sid = f"S{k:02d}"
        _write_flac(tdir / "stems" / f"{sid}.flac", stem.audio, sample_rate)
        one = pretty_midi.PrettyMIDI(initial_tempo=120.0)
        one.instruments.append(stem.midi)
        one.write(str(tdir / "MIDI" / f"{sid}.mid"))
        all_src.instruments.append(stem.midi)
        stems_meta[sid] = {
            "audio_rendered": bool(stem.rendered),
            "inst_class": _inst_class(stem.program, stem.is_drum),
            "integrated_loudness": _loudness(stem.audio, sample_rate),
            "is_drum": bool(stem.is_drum),
            "label": stem.label,
            "midi_program_name": "Drums" if stem.is_drum else pretty_midi.program_to_instrument_name(stem.program),
            "midi_saved": True,
            "plugin_name": plugin,
            "program_num": 128 if stem.is_drum else int(stem.program),
        }
    all_src.write(str(tdir / "all_src.mid"))
    meta = {
        "UUID": uuid.UUID(bytes=rng.bytes(16)).hex,
        "audio_dir": "stems",
        "lmd_midi_dir": source,
        "midi_dir": "MIDI",
        "normalization_factor": None,
        "normalized": True,
        "overall_gain": float(mix.gain),
        "target_peak": float(20 * np.log10(max(float(np.max(np.abs(mix.audio))), 1e-9))),
        "sample_rate": sample_rate,
        "render_sample_rate": mix.render_sample_rate,
        "seconds": seconds,
        "soundfont": soundfont_name(font),
        "soundfont_family": soundfont_family(font),
        "augment": {k: v for k, v in mix.effects.items()},
        "label_activity": {lab: [[s, e] for s, e in runs] for lab, runs in sorted(mix.label_activity.items())},
        "stems": stems_meta,
    }
    tmp = tdir / "metadata.yaml.tmp"
    tmp.write_text(yaml.safe_dump(meta, sort_keys=False))
    os.replace(tmp, tdir / "metadata.yaml")  # written last: its presence marks a finished track
    return tdir


def render_dataset(out_dir: str | Path, *, n_tracks: int, soundfonts: Sequence[str], seed: int = 0,
                   seconds: float = 10.0, sample_rate: int = 16000, midi_dir: str | None = None,
                   jobs: int = 1, start_index: int = 0, progress: bool = True, augment: bool = True) -> list[Path]:
    """Render tracks ``start_index .. start_index+n_tracks-1`` into ``out_dir`` (Slakh layout).

    Track i is seeded from (seed, i) and uses ``soundfonts[i % len(soundfonts)]``; tracks
    whose metadata.yaml exists are skipped, so an interrupted run can simply be repeated.
    """
    from joblib import Parallel, delayed
    from rich.console import Console
    from rich.progress import Progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fonts = [resolve_soundfont(s) for s in soundfonts]
    files = _midi_files(midi_dir) if midi_dir else []
    if midi_dir and not files:
        raise FileNotFoundError(f"no .mid files under {midi_dir}")
    indices = list(range(start_index, start_index + n_tracks))
    info = {"n_tracks": n_tracks, "start_index": start_index, "seed": seed, "seconds": seconds,
            "sample_rate": sample_rate, "augment": augment, "midi_dir": midi_dir,
            "soundfonts": [{"spec": f, "name": soundfont_name(f), "family": soundfont_family(f)} for f in fonts]}
    (out / "render_info.json").write_text(json.dumps(info, indent=2))
    todo = [i for i in indices if not (track_dir(out, i) / "metadata.yaml").exists()]
    # group by (font, render rate) so each worker rarely reloads a big font
    todo.sort(key=lambda i: (_track_plan(seed, i, fonts, augment, sample_rate)[1:], i))
    args = (seed, fonts, seconds, sample_rate, files, augment)
    with Progress(console=Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task("rendering", total=len(todo))
        if jobs == 1:
            threads = torch.get_num_threads()
            try:
                for i in todo:
                    _render_track(str(out), i, *args)
                    bar.advance(task)
            finally:
                torch.set_num_threads(threads)
        elif todo:
            jobs_ = Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size=1)
            for _ in jobs_(delayed(_render_track)(str(out), i, *args) for i in todo):
                bar.advance(task)
    return [track_dir(out, i) for i in indices]


# ---------------------------------------------------------------- demo

_DEMO_FORMATS = ("mp3", "flac", "ogg", "m4a", "wav", "opus")


def _describe(labels: list[str]) -> str:
    labels = labels[:3]
    if len(labels) <= 1:
        return labels[0] if labels else "untitled"
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def _encode(path: Path, audio: np.ndarray, rate: int, title: str, artist: str) -> None:
    """Write ``audio`` as the format named by the suffix, with a title/artist tag."""
    fmt = path.suffix[1:]
    if fmt in ("flac", "wav", "ogg"):
        kind = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16"), "ogg": ("OGG", "VORBIS")}[fmt]
        with sf.SoundFile(str(path), "w", rate, 1, format=kind[0], subtype=kind[1]) as f:
            f.title, f.artist = title, artist
            f.write(audio)
        return
    codec, container, out_rate = {"mp3": ("libmp3lame", "mp3", rate), "m4a": ("aac", "ipod", rate),
                                  "opus": ("libopus", "ogg", 48000)}[fmt]
    x = audio
    if out_rate != rate:
        x = AF.resample(torch.from_numpy(audio), rate, out_rate).numpy()
    with av.open(str(path), "w", format=container) as out:
        out.metadata["title"], out.metadata["artist"] = title, artist
        stream = out.add_stream(codec, rate=out_rate, layout="mono")
        stream.bit_rate = 128000
        if fmt == "opus":  # ogg/opus keeps tags on the stream
            stream.metadata["title"], stream.metadata["artist"] = title, artist
        frame = av.AudioFrame.from_ndarray(np.clip(x, -1, 1)[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = out_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def render_demo(folder: str | Path, *, n_tracks: int = 6, seed: int = 0) -> list[Path]:
    """A few ~20-s multi-instrument tracks in mixed formats, named after their instruments."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    font = best_soundfont()
    rate = 44100
    paths = []
    for k in range(n_tracks):
        rng = np.random.default_rng([seed, 9000 + k])
        midi = generate_arrangement(rng, seconds=20.0, n_parts=int(rng.integers(3, 7)))
        mix = render_midi(midi, font, sample_rate=rate, rng=rng, seconds=20.0)
        loud = sorted(((float(np.sqrt(np.mean(s.audio**2))), s.label) for s in mix.stems if s.label in mix.label_activity),
                      reverse=True)
        labels = list(dict.fromkeys(lab for _, lab in loud if lab))
        title = _describe(labels)
        path = folder / f"{k + 1:02d} - {title}.{_DEMO_FORMATS[k % len(_DEMO_FORMATS)]}"
        _encode(path, mix.audio, rate, title=title.capitalize(), artist="tagger demo")
        paths.append(path)
    return paths
