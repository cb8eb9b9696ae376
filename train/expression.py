"""Performance expression for generated MIDI: vibrato, scoops, intonation, bends and swells.

Players of bowed strings, winds and brass never hold a pitch or a level still: vibrato of
4.5–6.5 Hz and 8–35 cents that sets in after the attack, notes that start a little flat and
slide up, a few cents of intonation per note, and loudness that swells within long notes;
electric guitarists bend strings. The arranger's MIDI has none of this, so no render had it
before ``tagger dataset render --expression``. It is written as channel pitch bends and
expression controllers (CC11), so every synthesiser plays it (SoundFonts through the synth,
the samples family in ``train.samples``); the labels do not change.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pretty_midi

BEND_RANGE_CENTS = 200.0  # General MIDI's default pitch-bend range: ±2 semitones
EXPRESSION_CC = 11
STEP_S = 0.01  # one controller event per 10 ms: smooth enough for a 6 Hz vibrato
VIBRATO_HZ = (4.5, 6.5)
VIBRATO_CENTS = (8.0, 35.0)
VIBRATO_ONSET_S = (0.1, 0.45)  # vibrato grows in after the attack
SCOOP_CENTS = (20.0, 80.0)  # a scooped note starts this much flat ...
SCOOP_S = (0.04, 0.12)  # ... and reaches its pitch after this long
INTONATION_CENTS = 5.0  # standard deviation per note
SWELL_MIN_S = 0.5  # notes at least this long may swell
SWELL_FLOOR = (0.6, 0.85)  # the quiet end of a swell, as a fraction of full level


@dataclass(frozen=True)
class Style:
    """How one kind of player shapes its notes (probabilities)."""

    vibrato: float  # the stem plays with vibrato
    scoop: float  # a note starts flat and slides up
    swell: float  # a long note changes level
    bend: float = 0.0  # a note is bent up a semitone or a tone (guitars)
    intonation: bool = True  # free pitch (not fretted/keyed): a few cents off per note


_BOWED = Style(vibrato=0.85, scoop=0.1, swell=0.7)
_SECTION = Style(vibrato=0.7, scoop=0.05, swell=0.7)
_BRASS = Style(vibrato=0.4, scoop=0.25, swell=0.5)
_SAX = Style(vibrato=0.8, scoop=0.35, swell=0.5)
_DOUBLE_REED = Style(vibrato=0.6, scoop=0.1, swell=0.5)
_CLARINET = Style(vibrato=0.25, scoop=0.1, swell=0.5)
_FLUTE = Style(vibrato=0.8, scoop=0.1, swell=0.5)
_ELECTRIC_GUITAR = Style(vibrato=0.3, scoop=0.0, swell=0.0, bend=0.08, intonation=False)
_LEAD = Style(vibrato=0.3, scoop=0.05, swell=0.2, intonation=False)

# GM program -> style; programs not here (keys, mallets, plucked, drums, pads) are left alone.
STYLES: dict[int, Style] = {
    **{p: _BOWED for p in (40, 41, 42, 43, 44)},
    **{p: _SECTION for p in (48, 49, 50, 51)},
    **{p: _BRASS for p in range(56, 64)},
    **{p: _SAX for p in range(64, 68)},
    68: _DOUBLE_REED, 69: _DOUBLE_REED, 70: _DOUBLE_REED, 71: _CLARINET,
    **{p: _FLUTE for p in range(72, 80)},
    **{p: _ELECTRIC_GUITAR for p in range(26, 32)},
    **{p: _LEAD for p in range(80, 88)},
}


def _note_curves(notes: Sequence[pretty_midi.Note], style: Style, rng: np.random.Generator,
                 t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pitch offset (cents) and level (0–1) at times ``t``, each following the latest note
    started: a channel bends all its notes together, as a player's one instrument does."""
    starts = np.array([n.start for n in notes])
    current = np.searchsorted(starts, t, side="right") - 1
    cents, level = np.zeros(len(t)), np.ones(len(t))
    vibrato = rng.random() < style.vibrato
    rate_hz, depth = float(rng.uniform(*VIBRATO_HZ)), float(rng.uniform(*VIBRATO_CENTS))
    onset = float(rng.uniform(*VIBRATO_ONSET_S))
    for i, note in enumerate(notes):
        at = current == i
        if not at.any():
            continue
        dt = t[at] - note.start
        dur = max(note.end - note.start, STEP_S)
        if style.intonation:
            cents[at] += rng.normal(0, INTONATION_CENTS)
        if rng.random() < style.scoop:
            cents[at] -= rng.uniform(*SCOOP_CENTS) * np.clip(1 - dt / rng.uniform(*SCOOP_S), 0, 1)
        if rng.random() < style.bend:
            target, bend_s = 100.0 * rng.integers(1, 3), rng.uniform(0.08, 0.2)
            cents[at] += target * np.clip((dt - 0.3 * dur) / bend_s, 0, 1)
        if vibrato and dur > onset:
            cents[at] += depth * rng.uniform(0.7, 1.2) * np.clip(dt / onset - 1, 0, 1) \
                * np.sin(2 * np.pi * rate_hz * dt + rng.uniform(0, 2 * np.pi))
        if dur >= SWELL_MIN_S and rng.random() < style.swell:
            floor, u = rng.uniform(*SWELL_FLOOR), np.clip(dt / dur, 0, 1)
            shape = rng.integers(3)  # crescendo, diminuendo, or up and down again
            ramp = u if shape == 0 else 1 - u if shape == 1 else np.sin(np.pi * u)
            level[at] = floor + (1 - floor) * ramp
    return cents, level


def perform(inst: pretty_midi.Instrument, rng: np.random.Generator) -> bool:
    """Add expression to ``inst`` in place (pitch bends and CC11); False when its program has
    no style, or the MIDI already carries its own bends or expression."""
    style = STYLES.get(inst.program)
    if inst.is_drum or style is None or not inst.notes or inst.pitch_bends \
            or any(c.number == EXPRESSION_CC for c in inst.control_changes):
        return False
    notes = sorted(inst.notes, key=lambda n: n.start)
    t = np.arange(notes[0].start, max(n.end for n in notes) + STEP_S, STEP_S)
    cents, level = _note_curves(notes, style, rng, t)
    bends = np.clip(np.round(cents / BEND_RANGE_CENTS * 8192), -8192, 8191).astype(int)
    values = np.clip(np.round(127 * level), 0, 127).astype(int)
    keep_b = np.concatenate([[True], bends[1:] != bends[:-1]])  # only changes are events
    keep_v = np.concatenate([[True], values[1:] != values[:-1]])
    inst.pitch_bends = [pretty_midi.PitchBend(int(b), float(s)) for b, s in zip(bends[keep_b], t[keep_b])]
    inst.pitch_bends.append(pretty_midi.PitchBend(0, float(t[-1])))
    inst.control_changes += [pretty_midi.ControlChange(EXPRESSION_CC, int(v), float(s))
                             for v, s in zip(values[keep_v], t[keep_v])]
    inst.control_changes.append(pretty_midi.ControlChange(EXPRESSION_CC, 127, float(t[-1])))
    return True


def _held(times: np.ndarray, values: np.ndarray, before: float, rate: int, n: int) -> np.ndarray:
    """Controller events as one value per output sample: each holds until the next, as in MIDI."""
    order = np.argsort(times, kind="stable")
    at = np.searchsorted(times[order] * rate, np.arange(n), side="right") - 1
    return np.where(at >= 0, values[order][np.maximum(at, 0)], before).astype(np.float32)


def cents_curve(inst: pretty_midi.Instrument, rate: int, n: int) -> np.ndarray | None:
    """The stem's pitch bends as cents per output sample (None without bends)."""
    if not inst.pitch_bends:
        return None
    times = np.array([b.time for b in inst.pitch_bends])
    return _held(times, np.array([b.pitch for b in inst.pitch_bends]) / 8192 * BEND_RANGE_CENTS, 0.0, rate, n)


def level_curve(inst: pretty_midi.Instrument, rate: int, n: int) -> np.ndarray | None:
    """The stem's expression controller as a gain per output sample (None without CC11).
    Squared, as synthesisers map CC11 (127 full level, 64 about −12 dB)."""
    ccs = [c for c in inst.control_changes if c.number == EXPRESSION_CC]
    if not ccs:
        return None
    return _held(np.array([c.time for c in ccs]), (np.array([c.value for c in ccs]) / 127) ** 2, 1.0, rate, n)
