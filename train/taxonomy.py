"""The default label set and every mapping into it, declared once.

Labels are lowercase, human-readable tag values. They are derived from General MIDI
programs (0-based, 0-127) plus drums; Slakh stems are mapped through their
``program_num``/``is_drum`` (not ``inst_class``, which is not purely the GM family) and
IRMAS class codes map onto the same names. A checkpoint stores its own label list, so
other taxonomies are simply other trained models.
"""
from __future__ import annotations

DRUMS = "drums"

# Order is the model's output order for the default taxonomy.
LABELS: tuple[str, ...] = (
    "piano",
    "organ",
    "acoustic guitar",
    "electric guitar",
    "bass",
    "strings",
    "violin",
    "cello",
    "brass",
    "trumpet",
    "saxophone",
    "clarinet",
    "flute",
    "synth",
    "mallets",
    DRUMS,
)

# GM program ranges (inclusive, 0-based) -> label. Programs not listed (accordion,
# harmonica, harp, timpani, choirs, double reeds, ethnic, percussive, sound effects)
# still sound in rendered mixes but carry no label: they act as realistic distractors.
_GM_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 7, "piano"),  # acoustic/electric pianos, harpsichord, clavinet
    (8, 14, "mallets"),  # celesta, glockenspiel, music box, vibraphone, marimba, xylophone, bells
    (16, 20, "organ"),  # drawbar, percussive, rock, church, reed organ
    (24, 25, "acoustic guitar"),  # nylon, steel
    (26, 31, "electric guitar"),  # jazz, clean, muted, overdriven, distortion, harmonics
    (32, 39, "bass"),  # acoustic, electric, fretless, slap, synth bass
    (40, 40, "violin"),
    (41, 41, "strings"),  # viola: no label of its own
    (42, 42, "cello"),
    (43, 45, "strings"),  # contrabass, tremolo, pizzicato
    (48, 51, "strings"),  # string ensembles, synth strings
    (56, 56, "trumpet"),
    (57, 58, "brass"),  # trombone, tuba
    (59, 59, "trumpet"),  # muted trumpet
    (60, 63, "brass"),  # french horn, brass section, synth brass
    (64, 67, "saxophone"),
    (71, 71, "clarinet"),
    (72, 73, "flute"),  # piccolo, flute
    (80, 95, "synth"),  # synth leads and pads
)

GM_PROGRAM_TO_LABEL: dict[int, str] = {
    program: label for low, high, label in _GM_RANGES for program in range(low, high + 1)
}

IRMAS_CODE_TO_LABEL: dict[str, str] = {
    "cel": "cello",
    "cla": "clarinet",
    "flu": "flute",
    "gac": "acoustic guitar",
    "gel": "electric guitar",
    "org": "organ",
    "pia": "piano",
    "sax": "saxophone",
    "tru": "trumpet",
    "vio": "violin",
    "voi": "voice",  # not in the default LABELS: only a model trained on IRMAS has it
}

# IRMAS training filenames also carry drum presence: [dru] drums, [nod] no drums.
IRMAS_DRUM_CODES: dict[str, bool] = {"dru": True, "nod": False}


def label_for_program(program: int, is_drum: bool = False) -> str | None:
    """Label of a GM program (0-based), or None when it has no label."""
    if is_drum:
        return DRUMS
    return GM_PROGRAM_TO_LABEL.get(int(program))


# AudioSet class indices -> these labels, for the AudioSet-trained EfficientAT mn04. Declared
# in the tagger package (the tagger needs it without the training tools installed); shown
# here so every mapping into LABELS is found in one place.
from tagger.efficientat import AUDIOSET_LABEL_MAP  # noqa: E402,F401
