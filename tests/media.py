"""Real audio fixture files, generated at test time (no binary fixtures in the repo).

make_audio_file() encodes a short deterministic signal into one of FORMATS and adds
ordinary tags plus a cover picture in the format's native way, so tag-writing code
is tested against files shaped like the ones in a real library.
"""
from __future__ import annotations

import base64
import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import mutagen
import numpy as np
import soundfile as sf
from mutagen import id3
from mutagen.flac import FLAC, Picture
from mutagen.mp4 import MP4, MP4Cover

FORMATS: tuple[str, ...] = ("mp3", "flac", "ogg", "opus", "m4a", "alac.m4a", "wav", "aiff")

# fmt -> (PyAV container, PyAV codec, sample format); formats not listed go through soundfile.
_PYAV: dict[str, tuple[str, str, str]] = {
    "mp3": ("mp3", "libmp3lame", "fltp"),
    "opus": ("ogg", "libopus", "flt"),
    "m4a": ("ipod", "aac", "fltp"),
    "alac.m4a": ("ipod", "alac", "s16p"),
}
# fmt -> (soundfile format, subtype)
_SNDFILE: dict[str, tuple[str, str]] = {
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "wav": ("WAV", "PCM_16"),
    "aiff": ("AIFF", "PCM_16"),
}

# The non-instrument tags every fixture gets (checked for preservation).
BASE_TAGS: dict[str, str] = {
    "title": "Fixture Song",
    "artist": "Fixture Artist",
    "album": "Fixture Album",
    "date": "2020",
    "genre": "Jazz",
    "comment": "made by tests/media.py",
}

# Our own fields are excluded from read_other_tags() (any case).
_OURS = ("instruments", "instruments_scores", "instruments_model")


def tiny_png(seed: int = 0) -> bytes:
    """A valid 2x2 RGB PNG, built by hand so no image library is needed."""
    rows = b"".join(b"\x00" + bytes((seed * 40 + i * 60) % 256 for i in range(6)) for _ in range(2))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def signal(kind: str, seconds: float, sample_rate: int, channels: int, seed: int) -> np.ndarray:
    """float32 array (samples, channels) in [-1, 1], deterministic from seed."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    rng = np.random.default_rng(seed)
    out = np.zeros((n, channels), dtype=np.float64)
    for c in range(channels):
        phase = rng.uniform(0, 2 * np.pi)
        if kind == "chord":
            for k, f in enumerate((220.0, 277.18, 329.63, 440.0)):
                out[:, c] += 0.15 / (k + 1) * np.sin(2 * np.pi * f * (1 + 0.01 * seed) * t + phase)
        elif kind == "tone":
            out[:, c] = 0.3 * np.sin(2 * np.pi * 440.0 * (1 + 0.01 * seed) * t + phase)
        elif kind == "noise":
            out[:, c] = 0.1 * rng.standard_normal(n)
        elif kind != "silence":
            raise ValueError(f"unknown kind {kind!r}")
    return out.astype(np.float32)


def _encode_pyav(path: Path, fmt: str, data: np.ndarray, sample_rate: int) -> None:
    container, codec, sample_fmt = _PYAV[fmt]
    channels = data.shape[1]
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout=layout)
        planar = sample_fmt.endswith("p")
        block = 4096
        for start in range(0, len(data), block):
            chunk = data[start : start + block]
            if sample_fmt.startswith("s16"):
                chunk = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
            arr = np.ascontiguousarray(chunk.T if planar else chunk.reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(arr, format=sample_fmt, layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_matroska_opus(path: Path, *, seconds: float = 1.0, seed: int = 0) -> Path:
    """Opus audio in a Matroska container (some '.opus' files in the wild are this)."""
    path = Path(path)
    data = signal("chord", seconds, 48000, 2, seed)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libopus", rate=48000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.reshape(1, -1)), format="flt", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = 0
        frame.time_base = Fraction(1, 48000)
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _add_id3(tags: id3.ID3, picture: bool, seed: int) -> None:
    enc = id3.Encoding.UTF8
    tags.add(id3.TIT2(encoding=enc, text=BASE_TAGS["title"]))
    tags.add(id3.TPE1(encoding=enc, text=BASE_TAGS["artist"]))
    tags.add(id3.TALB(encoding=enc, text=BASE_TAGS["album"]))
    tags.add(id3.TDRC(encoding=enc, text=BASE_TAGS["date"]))
    tags.add(id3.TCON(encoding=enc, text=BASE_TAGS["genre"]))
    tags.add(id3.COMM(encoding=enc, lang="eng", desc="", text=BASE_TAGS["comment"]))
    if picture:
        tags.add(id3.APIC(encoding=enc, mime="image/png", type=3, desc="cover", data=tiny_png(seed)))


def _flac_picture(seed: int) -> Picture:
    pic = Picture()
    pic.type = 3
    pic.mime = "image/png"
    pic.desc = "cover"
    pic.width = pic.height = 2
    pic.depth = 24
    pic.data = tiny_png(seed)
    return pic


def _add_tags(path: Path, fmt: str, picture: bool, id3_v23: bool, seed: int) -> None:
    f = mutagen.File(path)
    assert f is not None, f"mutagen cannot open the fixture {path}"
    if f.tags is None:
        f.add_tags()
    if isinstance(f.tags, id3.ID3):
        _add_id3(f.tags, picture, seed)
        if id3_v23:
            f.tags.update_to_v23()
            f.save(v2_version=3)
        else:
            f.save()
    elif isinstance(f, MP4):
        f.tags.update({"\xa9nam": BASE_TAGS["title"], "\xa9ART": BASE_TAGS["artist"], "\xa9alb": BASE_TAGS["album"],
                       "\xa9day": BASE_TAGS["date"], "\xa9gen": BASE_TAGS["genre"], "\xa9cmt": BASE_TAGS["comment"]})
        if picture:
            f.tags["covr"] = [MP4Cover(tiny_png(seed), imageformat=MP4Cover.FORMAT_PNG)]
        f.save()
    else:  # Vorbis comments (FLAC, Ogg Vorbis, Opus)
        for key, value in BASE_TAGS.items():
            f.tags[key] = [value]
        if picture:
            if isinstance(f, FLAC):
                f.add_picture(_flac_picture(seed))
            else:
                f.tags["metadata_block_picture"] = [base64.b64encode(_flac_picture(seed).write()).decode("ascii")]
        f.save()


def make_audio_file(path: Path, fmt: str, *, seconds: float = 2.0, sample_rate: int = 44100, channels: int = 2,
                    kind: str = "chord", seed: int = 0, tags: bool = True, picture: bool = True,
                    id3_v23: bool = False) -> Path:
    """Write a real encoded file; opus is always 48 kHz (the only rate Opus-in-Ogg plays back at)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if fmt == "opus":
        sample_rate = 48000
    data = signal(kind, seconds, sample_rate, channels, seed)
    if fmt in _PYAV:
        _encode_pyav(path, fmt, data, sample_rate)
    else:
        sf_format, subtype = _SNDFILE[fmt]
        sf.write(str(path), data, sample_rate, format=sf_format, subtype=subtype)
    if tags:
        _add_tags(path, fmt, picture, id3_v23, seed)
    elif picture:
        _add_picture_only(path, seed)
    return path


def _add_picture_only(path: Path, seed: int) -> None:
    """picture=True, tags=False: a cover but no text tags."""
    f = mutagen.File(path)
    if f.tags is None:
        f.add_tags()
    if isinstance(f.tags, id3.ID3):
        f.tags.add(id3.APIC(encoding=3, mime="image/png", type=3, desc="cover", data=tiny_png(seed)))
    elif isinstance(f, MP4):
        f.tags["covr"] = [MP4Cover(tiny_png(seed), imageformat=MP4Cover.FORMAT_PNG)]
    elif isinstance(f, FLAC):
        f.add_picture(_flac_picture(seed))
    else:
        f.tags["metadata_block_picture"] = [base64.b64encode(_flac_picture(seed).write()).decode("ascii")]
    f.save()


def _norm(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return str(value)


def read_other_tags(path: Path) -> dict[str, Any]:
    """All tags except our three fields, normalised for equality checks (pictures as raw bytes)."""
    f = mutagen.File(path)
    if f is None or f.tags is None:
        return {}
    out: dict[str, Any] = {}
    if isinstance(f.tags, id3.ID3):
        out["_id3_version"] = str(f.tags.version[:2])
        for frame in f.tags.values():
            key = frame.HashKey
            if key.upper().startswith("TXXX:") and key[5:].lower() in _OURS:
                continue
            if isinstance(frame, id3.APIC):
                out[key] = (frame.mime, int(frame.type), frame.desc, bytes(frame.data))
            elif hasattr(frame, "text"):
                out[key] = [str(t) for t in frame.text]
            else:
                out[key] = repr(frame)
    elif isinstance(f, MP4):
        for key, values in f.tags.items():
            if key.lower().startswith("----:com.apple.itunes:") and key.split(":", 2)[2].lower() in _OURS:
                continue
            out[key] = _norm(values)
    else:
        for key, value in f.tags:
            if key.lower() in _OURS:
                continue
            out.setdefault(key.lower(), []).append(value)
    if isinstance(f, FLAC):
        out["_flac_pictures"] = [(p.mime, p.type, p.desc, bytes(p.data)) for p in f.pictures]
    return out


def decoded_audio(path: Path) -> np.ndarray:
    """Decode the first audio stream with PyAV to its native sample format, (planes, samples) layout."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        parts = [frame.to_ndarray() for frame in container.decode(stream)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((1, 0))


def render_with_real_stand_ins(root: Path) -> tuple[Path, Path]:
    """Six 4-s rendered tracks in ``root/rendered`` and copies of the first two mixes in
    ``root/real``: the "real, unlabelled audio" of the teacher and domain training tests."""
    from click.testing import CliRunner

    from tagger.cli import main

    data = root / "rendered"
    result = CliRunner().invoke(main, ["dataset", "render", str(data), "--tracks", "6", "--seconds", "4", "--jobs", "1",
                                       "--seed", "5"])
    assert result.exit_code == 0, result.stderr
    real = root / "real"
    real.mkdir()
    for k, track in enumerate(sorted(data.glob("Track*"))[:2]):
        (real / f"song{k}.flac").write_bytes((track / "mix.flac").read_bytes())
    return data, real
