"""Performance expression (train.expression): vibrato, scoops, swells and bends written as MIDI
pitch bends and CC11 (the samples family playing them, and the renderer's opt-in flag, are
tested in test_samples.py)."""
from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from train import expression
from train.expression import STEP_S, Style, perform


def _curves(style: Style, notes: list[pretty_midi.Note], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(0.0, max(n.end for n in notes), STEP_S)
    cents, level = expression._note_curves(notes, style, np.random.default_rng(seed), t)
    return t, cents, level


@pytest.mark.parametrize("seed", range(5))
def test_vibrato_sets_in_after_the_attack_at_a_players_rate_and_depth(seed: int) -> None:
    style = Style(vibrato=1.0, scoop=0.0, swell=0.0, intonation=False)
    t, cents, _ = _curves(style, [pretty_midi.Note(90, 69, 0.0, 3.0)], seed)
    assert np.all(np.abs(cents[t < expression.VIBRATO_ONSET_S[0]]) < 1e-9)  # still during the attack
    steady = cents[t > 2 * expression.VIBRATO_ONSET_S[1]]
    depth = np.abs(steady).max()
    assert 0.7 * expression.VIBRATO_CENTS[0] <= depth <= 1.2 * expression.VIBRATO_CENTS[1]
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady)), 8192))
    rate_hz = np.argmax(spectrum) / (8192 * STEP_S)
    assert expression.VIBRATO_HZ[0] - 0.3 <= rate_hz <= expression.VIBRATO_HZ[1] + 0.3


def test_scoops_start_flat_and_swells_stay_between_floor_and_full() -> None:
    style = Style(vibrato=0.0, scoop=1.0, swell=1.0, intonation=False)
    notes = [pretty_midi.Note(90, 60 + k, k * 1.0, k * 1.0 + 0.9) for k in range(6)]
    t, cents, level = _curves(style, notes)
    for note in notes:
        at = np.argmin(np.abs(t - note.start))
        assert cents[at] <= -expression.SCOOP_CENTS[0] + 1e-6
        assert np.all(np.abs(cents[(t >= note.start + expression.SCOOP_S[1]) & (t < note.end)]) < 1e-6)
        inside = level[(t >= note.start) & (t < note.end)]
        assert inside.min() >= expression.SWELL_FLOOR[0] - 1e-9 and inside.max() <= 1.0
        assert inside.max() - inside.min() > 0.1  # the level moves within the note


def test_perform_writes_bends_and_expression_only_for_shaping_players() -> None:
    violin = pretty_midi.Instrument(40)
    violin.notes = [pretty_midi.Note(90, 64 + k, k * 0.8, k * 0.8 + 0.75) for k in range(8)]
    played = _copy(violin)
    assert perform(played, np.random.default_rng(0))
    cents = np.array([b.pitch for b in played.pitch_bends]) / 8192 * expression.BEND_RANGE_CENTS
    assert len(played.pitch_bends) > 50 and np.abs(cents).max() < 150
    assert played.pitch_bends[-1].pitch == 0  # the bend is released at the end
    assert any(c.number == expression.EXPRESSION_CC for c in played.control_changes)
    assert [(n.pitch, n.start, n.end) for n in played.notes] == [(n.pitch, n.start, n.end) for n in violin.notes]
    piano, drums = pretty_midi.Instrument(0), pretty_midi.Instrument(0, is_drum=True)
    piano.notes, drums.notes = list(violin.notes), list(violin.notes)
    assert not perform(piano, np.random.default_rng(0)) and not piano.pitch_bends
    assert not perform(drums, np.random.default_rng(0)) and not drums.pitch_bends
    own = _copy(violin)
    own.pitch_bends = [pretty_midi.PitchBend(1000, 0.5)]  # the file's own performance stays
    assert not perform(own, np.random.default_rng(0)) and len(own.pitch_bends) == 1


def _copy(inst: pretty_midi.Instrument) -> pretty_midi.Instrument:
    out = pretty_midi.Instrument(inst.program, inst.is_drum)
    out.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, n.end) for n in inst.notes]
    return out
