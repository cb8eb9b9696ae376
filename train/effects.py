"""Augmentation effects for rendered audio: lossy codec round trip, reverb, EQ.

Each effect takes the random generator it draws from and returns the processed audio with
a short description for the track's metadata. ``encode_pyav`` is also used by the demo.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torchaudio.functional as AF


def encode_pyav(dest: str | Path | BinaryIO, audio: np.ndarray, rate: int, *, container: str, codec: str,
                bitrate: int, metadata: dict[str, str] | None = None) -> None:
    """Encode mono float ``audio`` (clipped to [-1, 1]) with PyAV into ``dest``, a path or a
    binary file object. ``metadata`` tags go on the container (and on the stream for ogg,
    which keeps its tags there)."""
    with av.open(str(dest) if isinstance(dest, (str, Path)) else dest, "w", format=container) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = bitrate
        if container == "ogg":
            stream.metadata.update(metadata or {})
        frame = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1)[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def lossy(audio: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Encode to mp3 or AAC and decode again, aligned and trimmed to the input length."""
    fmt, codec = ("mp3", "libmp3lame") if rng.random() < 0.6 else ("adts", "aac")
    bitrate = int(rng.choice([32000, 48000, 64000, 96000]))
    buf = io.BytesIO()
    encode_pyav(buf, audio, rate, container=fmt, codec=codec, bitrate=bitrate)
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


def reverb(audio: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Cheap room: convolution with exponentially decaying noise, mixed with the dry signal."""
    rt60 = float(rng.uniform(0.3, 1.6))
    t = np.arange(int(rt60 * rate)) / rate
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir = np.concatenate([np.zeros(int(rng.uniform(0.005, 0.03) * rate)), ir]).astype(np.float32)
    ir /= np.sqrt(np.sum(ir**2)) + 1e-9
    wet = AF.fftconvolve(torch.from_numpy(audio), torch.from_numpy(ir))[: len(audio)].numpy()
    mix = float(rng.uniform(0.1, 0.45))
    return (audio * (1 - mix) + wet * mix).astype(np.float32), f"reverb rt60={rt60:.2f} wet={mix:.2f}"


def eq(x: torch.Tensor, rate: int, rng: np.random.Generator) -> tuple[torch.Tensor, str]:
    kind = int(rng.integers(3))
    if kind == 0:
        cutoff = float(min(rng.uniform(2000, 8000), 0.45 * rate))
        return AF.lowpass_biquad(x, rate, cutoff), f"lowpass {cutoff:.0f}"
    if kind == 1:
        g = float(rng.uniform(-6, 6))
        return AF.treble_biquad(x, rate, g, central_freq=min(3000.0, 0.4 * rate)), f"treble {g:+.1f}dB"
    g = float(rng.uniform(-6, 6))
    return AF.bass_biquad(x, rate, g, central_freq=150.0), f"bass {g:+.1f}dB"



def compress(audio: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Feed-forward compressor (10-ms RMS detector, attack/release smoothing) with make-up
    gain: the flattened dynamics of produced music."""
    hop = max(1, rate // 100)
    n = (len(audio) + hop - 1) // hop
    x = np.pad(audio, (0, n * hop - len(audio)))
    level = 20 * np.log10(np.sqrt(np.mean(x.reshape(n, hop) ** 2, axis=1)) + 1e-9)
    thr, ratio = float(np.percentile(level, 60) - rng.uniform(0, 10)), float(rng.uniform(2, 8))
    over = np.maximum(level - thr, 0.0)
    target = -over * (1 - 1 / ratio)
    att, rel = 0.5, float(np.exp(-1 / rng.uniform(5, 30)))  # per-frame smoothing
    gain = np.empty(n)
    g = 0.0
    for i, t in enumerate(target):
        g = att * g + (1 - att) * t if t < g else rel * g + (1 - rel) * t
        gain[i] = g
    gain = np.interp(np.arange(len(audio)) / hop, np.arange(n), gain)
    y = audio * 10 ** (gain / 20)
    y *= np.max(np.abs(audio)) / (np.max(np.abs(y)) + 1e-9)
    return y.astype(np.float32), f"compress thr={thr:.0f}dB ratio={ratio:.1f}"


def limit(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Loud mastering: drive into a soft clipper."""
    drive = float(rng.uniform(1.5, 4.0))
    peak = np.max(np.abs(audio)) + 1e-9
    y = np.tanh(drive * audio / peak) / np.tanh(drive) * peak
    return y.astype(np.float32), f"limit drive={drive:.1f}"
