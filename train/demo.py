"""Demo folder: a few ~20-s tracks of 2-4 instruments in mixed formats, each named after every
instrument that plays in it, for trying ``tagger tag`` without a music library at hand."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from train.arrange import generate_arrangement
from train.effects import encode_pyav
from train.render import render_midi
from train.soundfonts import best_soundfont

DEMO_RATE = 44100
_DEMO_FORMATS = ("mp3", "flac", "ogg", "m4a", "wav", "opus")


def _describe(labels: list[str]) -> str:
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
    encode_pyav(path, x, out_rate, container=container, codec=codec, bitrate=128000,
                metadata={"title": title, "artist": artist})


def demo_tracks(*, n_tracks: int = 6, seed: int = 0):
    """Yield ``(labels, mix)`` per demo track: ``labels`` are all the instruments audible in
    ``mix``, loudest first. Titles name them all, so a correct tagger's tags equal the title."""
    font = best_soundfont()
    for k in range(n_tracks):
        rng = np.random.default_rng([seed, 9000 + k])
        midi = generate_arrangement(rng, seconds=20.0, n_parts=int(rng.integers(2, 5)))
        mix = render_midi(midi, font, sample_rate=DEMO_RATE, rng=rng, seconds=20.0)
        loud = sorted(((float(np.sqrt(np.mean(s.audio**2))), s.label) for s in mix.stems if s.label in mix.label_activity),
                      reverse=True)
        yield list(dict.fromkeys(lab for _, lab in loud if lab)), mix


def render_demo(folder: str | Path, *, n_tracks: int = 6, seed: int = 0) -> list[Path]:
    """A few ~20-s tracks of 2-4 instruments in mixed formats, named after their instruments."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (labels, mix) in enumerate(demo_tracks(n_tracks=n_tracks, seed=seed)):
        title = _describe(labels)
        path = folder / f"{k + 1:02d} - {title}.{_DEMO_FORMATS[k % len(_DEMO_FORMATS)]}"
        _encode(path, mix.audio, DEMO_RATE, title=title.capitalize(), artist="tagger demo")
        paths.append(path)
    return paths
