"""Data engine: MIDI + SoundFonts -> labelled mixes on disk in the Slakh2100 layout.

Every instrument (stem) is rendered on its own (``train.soundfonts``), then mixed, with
optional augmentation (``train.effects``). Labels come from the MIDI (note on/off plus a
short release) and are kept only where the stem's rendered audio is actually audible,
because some fonts have silent presets. The font helpers and ``render_demo`` (in
``train.demo``) stay importable from here.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf
import torch
import torchaudio.functional as AF
import yaml

from tagger.lifetime import worker_pool
from train.arrange import generate_arrangement
from train.effects import compress, eq, limit, lossy, reverb
from train.expression import perform
from train.soundfonts import (
    FREEPATS,
    SOUNDFONT_FAMILIES,
    apply_sustain,
    best_soundfont,
    crop,
    excerpt,
    find_soundfonts,
    render_stem,
    resolve_soundfont,
    soundfont_family,
    soundfont_name,
)
from train.taxonomy import label_for_program

__all__ = ["FREEPATS", "SOUNDFONT_FAMILIES", "RenderedMix", "Stem", "apply_sustain", "best_soundfont",
           "excerpt", "find_soundfonts", "label_activity", "render_dataset", "render_midi",
           "render_stem", "resolve_soundfont", "soundfont_family", "soundfont_name", "track_dir",
           "window_labels"]



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
                augment: bool = False, render_sample_rate: int | None = None,
                production: bool = False, expression: bool = False) -> RenderedMix:
    """Render each instrument of ``midi`` separately, mix, normalise and label.

    ``soundfont``: .sf2 path, short name from ``find_soundfonts`` or ``"freepats"``.
    ``augment``: velocity spread, random stem gains/EQ, render rate, reverb, lossy codec,
    random overall level. Without it stems are mixed as the font plays them, peak 0.9.
    ``production`` (with ``augment``): a denser production chain, closer to released music:
    more stem EQ, stem and bus compression, more reverb, a soft limiter, more lossy codecs.
    ``expression``: vibrato, scoops, intonation, bends and swells on the stems whose players
    shape their notes (``train.expression``).
    """
    p_eq, p_comp, p_rev, p_limit, p_lossy = (0.5, 0.5, 0.6, 0.4, 0.3) if production else (0.25, 0.0, 0.25, 0.0, 0.15)
    rng = rng if rng is not None else np.random.default_rng()
    soundfont = resolve_soundfont(soundfont)
    seconds = float(seconds if seconds is not None else midi.get_end_time() + 1.0)
    if render_sample_rate is None:
        render_sample_rate = int(rng.choice(_RENDER_RATES, p=_RENDER_RATE_P)) if augment else sample_rate
    effects: dict[str, object] = {}
    insts = crop(midi, seconds)
    if augment:  # velocity spread: a global scale and per-note noise
        scale, sd = float(rng.uniform(0.75, 1.2)), float(rng.uniform(0, 10))
        for inst in insts:
            for note in inst.notes:
                note.velocity = int(np.clip(round(note.velocity * scale + rng.normal(0, sd)), 1, 127))
        effects["velocity"] = f"x{scale:.2f} sd={sd:.1f}"
    if expression:
        effects["expression"] = [inst.program for inst in insts if perform(inst, rng)]
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
            if rng.random() < p_eq:
                y, desc = eq(x[i], sample_rate, rng)
                x[i] = y
                effects[f"stem{i}_eq"] = desc
            if p_comp and rng.random() < p_comp * 0.6:
                y, effects[f"stem{i}_comp"] = compress(x[i].numpy(), sample_rate, rng)
                x[i] = torch.from_numpy(y)
    stems_audio = x.numpy().astype(np.float32)
    mix = stems_audio.sum(axis=0) if len(stems_audio) else np.zeros(n_out, np.float32)
    if augment:
        if rng.random() < p_rev:
            mix, effects["reverb"] = reverb(mix, sample_rate, rng)
        if rng.random() < 0.3:
            y, effects["mix_eq"] = eq(torch.from_numpy(np.ascontiguousarray(mix)), sample_rate, rng)
            mix = y.numpy()
        if p_comp and rng.random() < p_comp:
            mix, effects["bus_comp"] = compress(mix, sample_rate, rng)
        if p_limit and rng.random() < p_limit:
            mix, effects["limit"] = limit(mix, rng)
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    target = float(rng.uniform(0.3, 0.9)) if augment else 0.9
    gain = target / peak if peak > 1e-6 else 1.0
    mix = (mix * gain).astype(np.float32)
    stems_audio *= gain
    if augment and rng.random() < p_lossy and peak > 1e-6:
        mix, effects["codec"] = lossy(mix, sample_rate, rng)
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


def _source(rng: np.random.Generator, seconds: float, files: list[Path],
            solo: float = 0.0, strumming: bool = False) -> tuple[pretty_midi.PrettyMIDI, str | None]:
    """The track's MIDI: a generated arrangement, or a random excerpt of a user file.
    ``solo``: the share of generated tracks forced to one or two parts (real libraries hold
    many solo recordings; the arranger alone makes ~14 % solos and duos)."""
    if not files:
        if solo and rng.random() < solo:
            return generate_arrangement(rng, seconds=seconds, n_parts=1 if rng.random() < 0.7 else 2,
                                        strumming=strumming), None
        return generate_arrangement(rng, seconds=seconds, strumming=strumming), None
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
                  sample_rate: int, files: list[Path], augment: bool, production: bool = False,
                  solo: float = 0.0, expression: bool = False, strumming: bool = False) -> Path:
    torch.set_num_threads(1)  # one track per core; keep the shared machine light
    rng, font, rate = _track_plan(seed, index, fonts, augment, sample_rate)
    midi, source = _source(rng, seconds, files, solo, strumming)
    mix = render_midi(midi, font, sample_rate=sample_rate, rng=rng, seconds=seconds, augment=augment,
                      render_sample_rate=rate, production=production, expression=expression)
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
                   jobs: int = 1, start_index: int = 0, progress: bool = True, augment: bool = True,
                   production: bool = False, solo: float = 0.0, expression: bool = False,
                   strumming: bool = False) -> list[Path]:
    """Render tracks ``start_index .. start_index+n_tracks-1`` into ``out_dir`` (Slakh layout).

    Track i is seeded from (seed, i) and uses ``soundfonts[i % len(soundfonts)]``; tracks
    whose metadata.yaml exists are skipped, so an interrupted run can simply be repeated.
    """
    from joblib import delayed
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
            "sample_rate": sample_rate, "augment": augment, "production": production, "solo": solo,
            "expression": expression, "strumming": strumming, "midi_dir": midi_dir,
            "soundfonts": [{"spec": f, "name": soundfont_name(f), "family": soundfont_family(f)} for f in fonts]}
    (out / "render_info.json").write_text(json.dumps(info, indent=2))
    todo = [i for i in indices if not (track_dir(out, i) / "metadata.yaml").exists()]
    # group by (font, render rate) so each worker rarely reloads a big font
    todo.sort(key=lambda i: (_track_plan(seed, i, fonts, augment, sample_rate)[1:], i))
    args = (seed, fonts, seconds, sample_rate, files, augment, production, solo, expression, strumming)
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
            jobs_ = worker_pool(jobs, return_as="generator_unordered", batch_size=1)
            for _ in jobs_(delayed(_render_track)(str(out), i, *args) for i in todo):
                bar.advance(task)
    return [track_dir(out, i) for i in indices]
