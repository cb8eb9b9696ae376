"""Built-in generator of multi-track General MIDI arrangements for rendering training data.

Each call returns a short piece (chords, bass, melody, counter-melody, pads, arpeggios,
drums) with random tempo, key, density, velocity spread, instrument choice and drop-outs.
Part counts follow real pop MIDI (about 5 sounding parts per 10 s, some solos and duos) so
the model does not learn that mixes are sparse, and programs are drawn per label so every
label in ``taxonomy.LABELS`` gets positives, with occasional unlabelled distractors.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pretty_midi

from train.taxonomy import LABELS, label_for_program

Rng = np.random.Generator

# Playable/comfortable MIDI pitch range per GM program (0-based), so parts sit in a
# plausible register: bass low, cello mid-low, flute/violin high.
_REGISTERS: tuple[tuple[int, int, int, int], ...] = (
    # first program, last program, lowest pitch, highest pitch
    (0, 5, 36, 96), (6, 6, 41, 89), (7, 7, 41, 84),
    (8, 8, 60, 105), (9, 9, 79, 105), (10, 10, 60, 96), (11, 11, 53, 89),
    (12, 12, 45, 96), (13, 13, 65, 105), (14, 14, 60, 77), (15, 15, 48, 84),
    (16, 20, 36, 96), (21, 21, 53, 89), (22, 22, 60, 84), (23, 23, 48, 84),
    (24, 31, 40, 84),
    (32, 39, 28, 55),
    (40, 40, 55, 96), (41, 41, 48, 84), (42, 42, 36, 72), (43, 43, 28, 55),
    (44, 45, 40, 91), (46, 46, 36, 96), (47, 47, 40, 55),
    (48, 51, 40, 91), (52, 54, 48, 79), (55, 55, 48, 72),
    (56, 56, 55, 82), (57, 57, 40, 72), (58, 58, 28, 58), (59, 59, 55, 82),
    (60, 60, 41, 77), (61, 63, 43, 84),
    (64, 64, 56, 88), (65, 65, 49, 81), (66, 66, 44, 76), (67, 67, 36, 69),
    (68, 68, 58, 91), (69, 69, 52, 81), (70, 70, 34, 72), (71, 71, 50, 91),
    (72, 72, 74, 105), (73, 73, 60, 96), (74, 79, 60, 91),
    (80, 87, 48, 96), (88, 95, 40, 91),
    (96, 103, 40, 91), (104, 111, 48, 84), (112, 119, 48, 84), (120, 127, 48, 84),
)

# Programs that play one line at a time (never given chords).
_MONOPHONIC: frozenset[int] = frozenset(
    [22, 40, 41, 42, 43, *range(32, 40), *range(56, 61), *range(64, 88)]
)

# Per role: (weight, label or None for a distractor, programs). Weights were tuned with
# ``arrangement_stats`` so rare solo instruments still get enough positives.
_Choice = tuple[float, "str | None", tuple[int, ...]]
_ROLE_CHOICES: dict[str, tuple[_Choice, ...]] = {
    "bass": (
        (0.80, "bass", (32, 33, 33, 34, 35, 36, 37, 38, 39)),
        (0.07, "cello", (42,)),
        (0.04, "brass", (57, 58)),
        (0.05, "strings", (43, 45)),
        (0.04, None, (70, 47)),  # bassoon, timpani
    ),
    "chords": (
        (0.22, "piano", (0, 0, 1, 2, 4, 5, 6, 7)),
        (0.15, "acoustic guitar", (24, 25)),
        (0.17, "electric guitar", (26, 27, 28, 29, 30)),
        (0.13, "organ", (16, 17, 18, 19, 20)),
        (0.08, "mallets", (11, 12, 8)),
        (0.08, "synth", (80, 81, 87, 89, 90, 94)),
        (0.05, "strings", (45, 48, 49)),
        (0.05, "brass", (61, 62)),
        (0.07, None, (21, 46, 15, 105, 106, 107, 23)),
    ),
    "pad": (
        (0.34, "strings", (48, 48, 49, 50, 51, 44)),
        (0.16, "organ", (16, 19, 20)),
        (0.26, "synth", (88, 89, 90, 91, 92, 93, 94, 95)),
        (0.08, "brass", (60, 61, 63)),
        (0.16, None, (52, 53, 54, 21)),
    ),
    "melody": (
        (0.11, "violin", (40,)),
        (0.11, "flute", (73, 73, 72)),
        (0.11, "clarinet", (71,)),
        (0.11, "trumpet", (56, 56, 59)),
        (0.11, "saxophone", (64, 65, 65, 66, 67)),
        (0.08, "synth", (80, 81, 82, 83, 84, 85, 86, 87)),
        (0.07, "electric guitar", (26, 27, 29, 30)),
        (0.05, "piano", (0, 1, 4)),
        (0.05, "mallets", (8, 9, 11, 12, 13)),
        (0.03, "organ", (16, 18)),
        (0.03, "brass", (57, 60, 61)),
        (0.05, "cello", (42,)),
        (0.02, "acoustic guitar", (24, 25)),
        (0.07, None, (68, 22, 75, 74, 78, 79, 69, 53, 21, 104, 109)),
    ),
    "counter": (
        (0.15, "cello", (42,)),
        (0.12, "violin", (40,)),
        (0.10, "strings", (41, 48, 49)),
        (0.10, "brass", (57, 60, 61)),
        (0.10, "clarinet", (71,)),
        (0.10, "flute", (73,)),
        (0.09, "saxophone", (65, 66)),
        (0.06, "trumpet", (56,)),
        (0.05, "synth", (81, 82, 89)),
        (0.05, "organ", (16, 19)),
        (0.08, None, (68, 69, 70, 52, 22)),
    ),
    "arp": (
        (0.25, "piano", (0, 1, 4, 5)),
        (0.20, "mallets", (8, 9, 10, 11, 12, 13)),
        (0.15, "acoustic guitar", (24, 25)),
        (0.10, "electric guitar", (26, 27, 28)),
        (0.15, "synth", (80, 81, 84, 87, 98)),
        (0.05, "strings", (45,)),
        (0.10, None, (46, 107, 108, 14, 112)),
    ),
    # one polyphonic instrument playing harmony and tune together (solo piano, guitar...)
    "solo": (
        (0.35, "piano", (0, 0, 1, 2, 4)),
        (0.18, "acoustic guitar", (24, 25)),
        (0.14, "electric guitar", (26, 27)),
        (0.10, "organ", (16, 19)),
        (0.08, "mallets", (11, 12)),
        (0.07, "strings", (48, 49)),
        (0.08, None, (46, 21)),
    ),
}

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 3), (0, 3, 0, 4), (5, 3, 0, 4),
              (0, 1, 4, 0), (0, 5, 1, 4), (3, 4, 0, 0)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4)),
}

# Part-count distribution (mean ~5, solos and duos included) before drop-outs.
_PART_COUNTS = (1, 2, 3, 4, 5, 6, 7, 8)
_PART_PROBS = (0.04, 0.07, 0.10, 0.15, 0.19, 0.18, 0.14, 0.13)

# GM drum keys
_KICK, _SNARE, _STICK, _CLAP = 36, 38, 37, 39
_HAT, _PEDAL_HAT, _OPEN_HAT, _RIDE, _CRASH = 42, 44, 46, 51, 49
_TOMS = (50, 48, 47, 45, 43, 41)
_TAMB, _SHAKER = 54, 70


@dataclass
class _Song:
    """Shared musical context of one arrangement."""

    rng: Rng
    seconds: float
    beat: float
    meter: int  # beats per bar
    n_bars: int
    root: int  # pitch class
    scale: tuple[int, ...]
    chords: list[list[int]]  # per bar: chord pitch classes, root first
    swing: float  # seconds added to off-beat 8ths
    density: float  # 0..1
    strumming: bool = False  # guitars may strum (train.arrange._strum)

    @property
    def steps(self) -> int:  # 16th steps per bar
        return self.meter * 4

    def time(self, bar: int, step: float) -> float:
        t = (bar * self.steps + step) * self.beat / 4
        if self.swing and step % 4 == 2:
            t += self.swing
        return t

    def scale_pitches(self, low: int, high: int) -> list[int]:
        return [p for p in range(low, high + 1) if (p - self.root) % 12 in self.scale]


def register(program: int, is_drum: bool = False) -> tuple[int, int]:
    """Comfortable (lowest, highest) MIDI pitch for a GM program."""
    if is_drum:
        return 35, 81
    for first, last, low, high in _REGISTERS:
        if first <= program <= last:
            return low, high
    return 48, 84


def _pitches(pcs: list[int], low: int, high: int) -> list[int]:
    return [p for p in range(low, high + 1) if p % 12 in pcs]


def _nearest(candidates: list[int], target: float) -> int:
    return min(candidates, key=lambda p: abs(p - target))


def _voicing(pcs: list[int], center: float, low: int, high: int, size: int) -> list[int]:
    """Close voicing of a chord around ``center``: each pitch class at its nearest octave."""
    notes = sorted({_nearest(_pitches([pc], low, high) or [low], center) for pc in pcs[:size]})
    return notes


class _Part:
    """Collects notes of one instrument, with per-part velocity and humanisation."""

    def __init__(self, song: _Song, program: int, is_drum: bool, name: str) -> None:
        rng = song.rng
        self.song = song
        self.inst = pretty_midi.Instrument(program=program, is_drum=is_drum, name=name)
        self.vel = float(rng.uniform(55, 110))
        self.vel_sd = float(rng.uniform(3, 14))
        self.jitter = float(rng.uniform(0.0, 0.012))
        self.low, self.high = register(program, is_drum)

    def add(self, pitch: int, start: float, end: float, accent: float = 0.0, vel: float | None = None) -> None:
        rng = self.song.rng
        start = max(0.0, start + float(rng.normal(0, self.jitter)))
        if start >= self.song.seconds:
            return
        end = min(max(end, start + 0.03), self.song.seconds)
        v = (self.vel if vel is None else vel) + accent + float(rng.normal(0, self.vel_sd))
        self.inst.notes.append(pretty_midi.Note(int(np.clip(round(v), 1, 127)), int(pitch), start, end))


def _pick(rng: Rng, choices: tuple[_Choice, ...], used: Counter[str | None]) -> tuple[str | None, int]:
    # Halve the weight of labels already in the song so one clip covers more labels.
    w = np.array([c[0] * (0.5 ** used[c[1]] if c[1] else 1.0) for c in choices])
    c = choices[int(rng.choice(len(choices), p=w / w.sum()))]
    return c[1], int(rng.choice(c[2]))


def _roles(rng: Rng, n: int) -> list[str]:
    if n == 1:
        return [str(rng.choice(["solo", "melody"], p=[0.65, 0.35]))]
    if n == 2:
        duos = (("chords", "melody"), ("solo", "counter"), ("drums", "solo"), ("bass", "melody"), ("solo", "melody"))
        return list(duos[int(rng.choice(len(duos), p=[0.4, 0.1, 0.15, 0.1, 0.25]))])
    roles: list[str] = []
    if rng.random() < 0.8:
        roles.append("drums")
    if rng.random() < 0.85:
        roles.append("bass")
    roles.append("chords")
    pool = ("melody", "pad", "counter", "arp", "chords")
    weights = np.array([0.34, 0.2, 0.18, 0.16, 0.12])
    while len(roles) < n:
        w = weights.copy()
        if "melody" not in roles:
            w[0] *= 3  # most songs have a tune
        w[1] *= 0.3 ** roles.count("pad")
        w[0] *= 0.3 ** max(0, roles.count("melody") - 1)
        roles.append(str(pool[int(rng.choice(len(pool), p=w / w.sum()))]))
    return roles


def _active_bars(rng: Rng, n_bars: int, allow_dropout: bool) -> list[bool]:
    """Which bars a part plays: mostly all, sometimes entering late / leaving early / resting."""
    active = [True] * n_bars
    if not allow_dropout or n_bars < 3:
        return active
    r = rng.random()
    if r < 0.15:  # enters late
        k = int(rng.integers(1, max(2, n_bars // 2 + 1)))
        active[:k] = [False] * k
    elif r < 0.27:  # leaves early
        k = int(rng.integers(max(1, n_bars // 2), n_bars))
        active[k:] = [False] * (n_bars - k)
    elif r < 0.37:  # rests one bar in the middle
        active[int(rng.integers(1, n_bars - 1))] = False
    return active


_GUITARS = range(24, 32)  # GM guitar programs
STRUM_SHARE = 0.7  # of guitar chord parts, with strumming on


def _comp(part: _Part, song: _Song, active: list[bool], voices: int, with_bass: bool) -> None:
    rng = song.rng
    if song.strumming and part.inst.program in _GUITARS and rng.random() < STRUM_SHARE:
        _strum(part, song, active, voices)
        return
    s = song.steps
    patterns = (
        [(0, s)], [(i, 4) for i in range(0, s, 4)], [(i, 2) for i in range(0, s, 2)],
        [(0, 6), (6, 4), (10, 6)] if s == 16 else [(0, 6), (6, 6)],
        [(0, 3), (3, 3), (6, 4), (10, 2), (12, 4)] if s == 16 else [(0, 4), (4, 4), (8, 4)],
        [(0, s // 2), (s // 2, s // 2)],
    )
    probs = np.array([0.2, 0.25, 0.15, 0.15, 0.1, 0.15]) + np.array([0, 0, 1, 0, 1, 0]) * song.density * 0.1
    pattern = patterns[int(rng.choice(len(patterns), p=probs / probs.sum()))]
    legato = float(rng.uniform(0.5, 1.0))
    strum = float(rng.uniform(0.008, 0.025)) if part.inst.program in _GUITARS else 0.0
    center = part.low + (part.high - part.low) * float(rng.uniform(0.35, 0.55))
    pedal = part.inst.program < 8 and rng.random() < 0.35
    for bar, on in enumerate(active):
        if not on:
            continue
        chord = song.chords[bar]
        notes = _voicing(chord, center, part.low, part.high, voices)
        for step, dur in pattern:
            if rng.random() < (1 - song.density) * 0.15 and step > 0:
                continue
            t0, t1 = song.time(bar, step), song.time(bar, step + dur * (0.3 if pedal else legato))
            for k, p in enumerate(notes):
                part.add(p, t0 + k * strum, t1, accent=6 if step == 0 else 0)
            if with_bass:
                part.add(_nearest(_pitches([chord[0]], 33, 52), 43), t0, t1, accent=4)
        if pedal:  # sustain pedal per bar: the renderer must extend the short notes
            t = song.time(bar, 0) + 0.01
            part.inst.control_changes.append(pretty_midi.ControlChange(64, 100, t))
            part.inst.control_changes.append(pretty_midi.ControlChange(64, 0, song.time(bar + 1, 0) - 0.02))


def _strum(part: _Part, song: _Song, active: list[bool], voices: int) -> None:
    """A strumming guitarist: strokes on an 8th or 16th grid, down and up alternating (an up
    stroke plays the voicing from the top, faster and softer), beats accented, some strokes
    skipped, and some muted: the fretting hand damps the strings, so the stroke is a short
    percussive "chk". Real strummed guitars are broadband and rhythmic, and default 5 calls
    them drums (this alone did not change that: the model card's stage L)."""
    rng = song.rng
    s = song.steps
    sub = 2 if rng.random() < 0.6 else 1  # 8ths or 16ths
    spread = float(rng.uniform(0.006, 0.02))  # seconds between strings in a stroke
    skip, mute = float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.0, 0.35))
    center = part.low + (part.high - part.low) * float(rng.uniform(0.3, 0.5))
    for bar, on in enumerate(active):
        if not on:
            continue
        notes = _voicing(song.chords[bar], center, part.low, part.high, max(voices, 4))
        for step in range(0, s, sub):
            if step % 4 and rng.random() < skip:
                continue
            down = (step // sub) % 2 == 0
            t0 = song.time(bar, step)
            muted = rng.random() < mute
            t1 = t0 + float(rng.uniform(0.03, 0.07)) if muted else song.time(bar, step + sub)
            accent = (8 if step % 4 == 0 else 0) - (0 if down else 8) + (6 if muted else 0)
            for k, p in enumerate(notes if down else notes[::-1]):
                part.add(p, t0 + k * spread * (1.0 if down else 0.7), t1, accent=accent)


def _bass(part: _Part, song: _Song, active: list[bool]) -> None:
    rng = song.rng
    s = song.steps
    style = int(rng.choice(6, p=[0.15, 0.2, 0.2, 0.15, 0.15, 0.15]))
    low, high = part.low, min(part.high, part.low + 22)
    for bar, on in enumerate(active):
        if not on:
            continue
        chord = song.chords[bar]
        root = _nearest(_pitches([chord[0]], low, high), low + 8)
        fifth = _nearest(_pitches([chord[2 % len(chord)]], low, high + 7), root + 7)
        if style == 0:
            hits = [(0, s, root)]
        elif style == 1:
            hits = [(i, s // 2, root if i == 0 else fifth) for i in range(0, s, s // 2)]
        elif style == 2:
            hits = [(i, 2, root) for i in range(0, s, 2)]
        elif style == 3:
            hits = [(i, 4, (root, fifth, root + 12 if root + 12 <= high + 7 else root, fifth)[i // 4 % 4]) for i in range(0, s, 4)]
        elif style == 4:  # walking: chord tones and scale passing notes
            scale = song.scale_pitches(low, high + 7)
            p, hits = root, []
            for i in range(0, s, 4):
                hits.append((i, 4, p))
                p = int(np.clip(p + rng.choice([-2, -1, 1, 2, 3]), low, high + 7))
                p = _nearest(scale, p)
        else:
            hits = [(i, d, root) for i, d in ((0, 5), (6, 2), (8, 5), (14, 2))] if s == 16 else [(0, 6, root), (8, 4, fifth)]
        for step, dur, pitch in hits:
            part.add(pitch, song.time(bar, step), song.time(bar, step + dur * 0.9), accent=6 if step == 0 else 0)


def _melody(part: _Part, song: _Song, active: list[bool], slow: bool) -> None:
    """Phrase-based random walk on the scale, chord tones on strong beats, motif repeated."""
    rng = song.rng
    s = song.steps
    lo, hi = part.low + 2, part.high - 2
    scale = song.scale_pitches(lo, hi)
    center = lo + (hi - lo) * float(rng.uniform(0.35, 0.6) if not slow else rng.uniform(0.25, 0.5))
    durations = np.array([4, 8, 16] if slow else [1, 2, 3, 4, 6, 8])
    probs = np.array([0.3, 0.45, 0.25]) if slow else np.array([0.05 * song.density, 0.35, 0.08, 0.3, 0.1, 0.12])
    probs = probs / probs.sum()
    rest_p = float(rng.uniform(0.05, 0.25))
    motif: list[tuple[int, int, int]] = []  # (step, dur, scale-step offset) for 2 bars
    pos = 0
    while pos < 2 * s:
        d = int(min(rng.choice(durations, p=probs), 2 * s - pos))
        motif.append((pos, d, int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]))))
        pos += d
    p = _nearest(scale, center)
    for bar in range(0, song.n_bars, 2):
        vary = rng.random() < 0.4
        for step, dur, move in motif:
            b, st = bar + step // s, step % s
            if b >= song.n_bars or not active[b]:
                continue
            if vary:
                move = int(rng.choice([-2, -1, 0, 1, 2]))
            idx = scale.index(p) + move
            if not 0 <= idx < len(scale) or abs(scale[min(max(idx, 0), len(scale) - 1)] - center) > 10:
                idx = scale.index(p) - move  # turn back towards the centre
            p = scale[int(np.clip(idx, 0, len(scale) - 1))]
            if st % 4 == 0:  # strong beat: land on a chord tone
                p = _nearest(_pitches(song.chords[b], lo, hi) or scale, p)
            if rng.random() < rest_p:
                continue
            part.add(p, song.time(b, st), song.time(b, st + dur * 0.92), accent=5 if st == 0 else 0)


def _arp(part: _Part, song: _Song, active: list[bool]) -> None:
    rng = song.rng
    rate = int(rng.choice([1, 2, 2, 4]))
    base = part.low + (part.high - part.low) * float(rng.uniform(0.3, 0.5))
    shape = int(rng.integers(3))
    for bar, on in enumerate(active):
        if not on:
            continue
        tones = sorted(p for p in _pitches(song.chords[bar], int(base), int(base) + 19))[:6] or [int(base)]
        seq = tones if shape == 0 else tones[::-1] if shape == 1 else tones + tones[-2:0:-1]
        for k, step in enumerate(range(0, song.steps, rate)):
            part.add(seq[k % len(seq)], song.time(bar, step), song.time(bar, step + rate * 0.95), accent=5 if step % 4 == 0 else 0)


def _drums(part: _Part, song: _Song, active: list[bool]) -> None:
    rng = song.rng
    s = song.steps
    if song.meter == 3:
        kick, snare, hats, hat_rate = [0], [4, 8], _HAT, 2
    else:
        style = int(rng.choice(5, p=[0.4, 0.2, 0.15, 0.15, 0.1]))
        kick, snare = [([0, 8], [4, 12]), ([0, 4, 8, 12], [4, 12]), ([0, 10], [8]), ([0, 8], [4, 12]), ([], [])][style]
        if style == 0 and rng.random() < 0.5:
            kick = kick + [int(rng.choice([6, 10, 14]))]
        hats = _RIDE if style == 3 and rng.random() < 0.5 else _HAT
        hat_rate = int(rng.choice([2, 2, 1, 4]))
        if style == 4:  # light percussion only
            hats = int(rng.choice([_SHAKER, _TAMB, _HAT]))
    snare_key = _STICK if rng.random() < 0.15 else _CLAP if rng.random() < 0.1 else _SNARE
    open_hat = rng.random() < 0.3
    fills = rng.random() < 0.4
    hit = {_KICK: 0.25, snare_key: 0.2, _HAT: 0.08, _RIDE: 0.4, _OPEN_HAT: 0.35, _CRASH: 1.5}
    for bar, on in enumerate(active):
        if not on:
            continue
        fill = fills and bar % 4 == 3
        for step in range(0, s, hat_rate):
            key = _OPEN_HAT if open_hat and step % 4 == 2 and rng.random() < 0.5 else hats
            part.add(key, song.time(bar, step), song.time(bar, step) + hit.get(key, 0.15), accent=-12 if step % 4 else 0)
        for step in kick:
            part.add(_KICK, song.time(bar, step), song.time(bar, step) + 0.25, accent=8)
        for step in snare:
            if fill and step >= s - 4:
                continue
            part.add(snare_key, song.time(bar, step), song.time(bar, step) + 0.2, accent=4)
        if bar % 4 == 0 and (bar == 0 or rng.random() < 0.5) and kick:
            part.add(_CRASH, song.time(bar, 0), song.time(bar, 0) + 1.5, accent=4)
        if fill:
            for k, step in enumerate(range(s - 4, s)):
                part.add(_TOMS[min(k + int(rng.integers(2)), 5)], song.time(bar, step), song.time(bar, step) + 0.25)


def generate_arrangement(rng: Rng, *, seconds: float = 10.0, n_parts: int | None = None,
                         strumming: bool = False) -> pretty_midi.PrettyMIDI:
    """A random multi-track arrangement of ``seconds`` length (``n_parts`` forces the size;
    ``strumming``: guitar chord parts may strum, see ``_strum``)."""
    tempo = float(np.clip(rng.normal(112, 22), 66, 172))
    beat = 60.0 / tempo
    meter = 3 if rng.random() < 0.1 else 4
    n_bars = max(1, math.ceil(seconds / (meter * beat)))
    mode = "major" if rng.random() < 0.65 else "minor"
    scale = _MAJOR if mode == "major" else _MINOR
    root = int(rng.integers(12))
    progression = _PROGRESSIONS[mode][int(rng.integers(len(_PROGRESSIONS[mode])))]
    sevenths = rng.random() < 0.3
    chords = []
    for bar in range(n_bars):
        d = progression[bar % len(progression)]
        degrees = (d, d + 2, d + 4, d + 6) if sevenths else (d, d + 2, d + 4)
        chords.append([(root + scale[x % 7]) % 12 for x in degrees])
    swing = beat / 6 if rng.random() < 0.12 else 0.0
    song = _Song(rng, seconds, beat, meter, n_bars, root, scale, chords, swing, float(rng.uniform(0.3, 1.0)), strumming)

    n = int(n_parts) if n_parts else int(rng.choice(_PART_COUNTS, p=_PART_PROBS))
    roles = _roles(rng, n)
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    used: Counter[str | None] = Counter()
    for role in roles:
        if role == "drums":
            part = _Part(song, 0, True, "drums")
            _drums(part, song, _active_bars(rng, n_bars, n >= 3))
        else:
            label, program = _pick(rng, _ROLE_CHOICES[role], used)
            if role in ("chords", "solo", "pad") and program in _MONOPHONIC:
                role = "melody"
            used[label] += 1
            part = _Part(song, program, False, f"{role}: {pretty_midi.program_to_instrument_name(program)}")
            active = _active_bars(rng, n_bars, n >= 3 and role not in ("solo",))
            if role == "bass":
                _bass(part, song, active)
            elif role == "chords":
                _comp(part, song, active, voices=int(rng.integers(3, 5)), with_bass=False)
            elif role == "solo":
                _comp(part, song, active, voices=3, with_bass=part.low <= 40)
                if part.high >= 84:
                    _melody(part, song, active, slow=False)
            elif role == "pad":
                part.vel = float(rng.uniform(45, 85))
                _comp(part, song, active, voices=4, with_bass=False)
            elif role == "arp":
                _arp(part, song, active)
            else:
                _melody(part, song, active, slow=role == "counter")
        part.inst.notes.sort(key=lambda x: (x.start, x.pitch))
        if part.inst.notes:
            pm.instruments.append(part.inst)
    return pm


def arrangement_stats(n: int = 500, *, seed: int = 0, seconds: float = 10.0) -> dict[str, object]:
    """Part-count and label-coverage statistics of ``n`` generated arrangements."""
    parts, labelled = [], []
    positives: Counter[str] = Counter()
    for i in range(n):
        pm = generate_arrangement(np.random.default_rng([seed, i]), seconds=seconds)
        sounding = [inst for inst in pm.instruments if inst.notes]
        labels = [label_for_program(inst.program, inst.is_drum) for inst in sounding]
        parts.append(len(sounding))
        labelled.append(sum(lab is not None for lab in labels))
        positives.update({lab for lab in labels if lab})
    return {
        "mean_parts": float(np.mean(parts)),
        "mean_labelled_parts": float(np.mean(labelled)),
        "min_parts": int(min(parts)),
        "max_parts": int(max(parts)),
        "solo_or_duo_fraction": float(np.mean(np.array(parts) <= 2)),
        "label_positive_rate": {lab: positives[lab] / n for lab in LABELS},
    }
