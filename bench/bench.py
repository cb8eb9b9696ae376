"""Throughput benchmark: prints measurements, asserts nothing.

    python bench/bench.py [--tracks 50] [--seconds 180] [--jobs 2] [--library DIR] [--model M]
    python bench/bench.py --model efficientat-mn04 --model-only --threads 2

Generates (once) a library of synthetic tracks in mixed formats, then measures in one run:
per-format decode speed of PyAV vs soundfile, pure decode throughput (decode + windows, the
same worker processes as tagging), model-only throughput, end-to-end tagging throughput with
the default model, their ratio, and peak RSS. Ratios are the numbers to compare across
machines; absolute times on shared machines are noisy.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from tagger.decode import decode
from tagger.infer import BatchRunner, decode_blocks, pick_device
from tagger.catalog import load as load_model  # a model name or file
from tagger.pipeline import tag_paths

FORMATS = ("flac", "mp3", "ogg", "opus", "m4a", "wav")
_PYAV = {"mp3": ("mp3", "libmp3lame", "fltp"), "opus": ("ogg", "libopus", "flt"), "m4a": ("ipod", "aac", "fltp")}


def synth_track(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A few decaying harmonic notes plus noise bursts: cheap, music-like spectra."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = np.zeros((t.size, 2), np.float32)
    beat = 0.5
    for i in range(int(seconds / beat)):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        start, end = int(i * beat * rate), int((i + 2) * beat * rate)
        tt = t[start:end] - t[start]
        note = sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in range(1, 5)) * np.exp(-3 * tt)
        out[start:end, i % 2] += 0.2 * note[: out[start:end].shape[0]]
    out += 0.01 * rng.standard_normal(out.shape).astype(np.float32)
    return out


def write_track(path: Path, audio: np.ndarray, rate: int) -> None:
    fmt = path.suffix[1:]
    if fmt not in _PYAV:
        # Written in blocks: libsndfile's Vorbis encoder crashed here on one 3-minute write.
        kind = {"ogg": ("OGG", "VORBIS")}.get(fmt, (None, None))
        with sf.SoundFile(path, "w", rate, audio.shape[1], format=kind[0], subtype=kind[1]) as out:
            for i in range(0, len(audio), 1 << 16):
                out.write(audio[i : i + (1 << 16)])
        return
    container_fmt, codec, sample_fmt = _PYAV[fmt]
    out_rate = 48000 if codec == "libopus" else rate
    with av.open(str(path), "w", format=container_fmt) as container:
        stream = container.add_stream(codec, rate=out_rate, layout="stereo")
        resampler = av.AudioResampler(format=sample_fmt, layout="stereo", rate=out_rate)
        step = 4096
        for i in range(0, len(audio), step):
            chunk = np.ascontiguousarray(audio[i : i + step].T if sample_fmt == "fltp" else audio[i : i + step].reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(chunk.astype(np.float32), format=sample_fmt, layout="stereo")
            frame.sample_rate = rate
            for f in resampler.resample(frame):
                container.mux(stream.encode(f))
        container.mux(stream.encode(None))


def make_library(folder: Path, tracks: int, seconds: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(tracks):
        path = folder / f"track{i:03d}.{FORMATS[i % len(FORMATS)]}"
        if not path.exists():
            tmp = path.with_name("tmp-" + path.name)
            write_track(tmp, synth_track(seconds, 44100, i), 44100)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def model_only(model, args) -> float:
    """Features + network on random windows, batched as the tagger does; x real time."""
    features = model.features
    runner = BatchRunner(model, pick_device(args.device), args.batch_size)
    batch = runner.batch_size
    windows = np.random.default_rng(0).standard_normal((batch, features.window_samples)).astype(np.float32)
    runner.predict(windows)
    reps = 10
    model_time = min(timed(lambda: runner.predict(windows)) for _ in range(reps))  # least disturbed by neighbours
    windows_per_track = 1 + max(0.0, args.seconds - features.window_seconds) / features.hop_seconds
    model_speed = batch / model_time / windows_per_track * args.seconds
    print(f"model only ({model.model_id}: features + CNN, batch {batch}, {torch.get_num_threads()} threads): "
          f"{batch / model_time:.0f} windows/s = {model_speed:.0f}x real time at hop {features.hop_seconds} s")
    return model_speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="default: the tagger's default for the device")
    parser.add_argument("--library", type=Path, help="Where to keep the generated library (default: a temp folder).")
    parser.add_argument("--model", help="Model file (default: the shipped model).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--model-only", action="store_true", help="Only the model-only measurement (no library).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_only:
        model_only(load_model(args.model), args)
        return

    library = args.library or Path(tempfile.gettempdir()) / f"tagger-bench-{args.tracks}x{int(args.seconds)}"
    t = timed(lambda: make_library(library, args.tracks, args.seconds))
    files = sorted(p for p in library.iterdir() if p.suffix[1:] in FORMATS)
    audio_seconds = args.tracks * args.seconds
    print(f"library: {len(files)} tracks x {args.seconds:.0f} s in {library} (ready in {t:.0f} s)")
    model = load_model(args.model)
    features = model.features
    print(f"model: {model.model_id} ({model.arch}), device {pick_device(args.device)}, torch threads {torch.get_num_threads()}")

    print("\nper-format decode to mono 16 kHz, one process (x real time):")
    for fmt in FORMATS:
        path = next(p for p in files if p.suffix == "." + fmt)
        pyav = args.seconds / timed(lambda: decode(path, sample_rate=features.sample_rate))
        line = f"  {fmt:5s} PyAV {pyav:7.0f}x"
        try:
            def with_soundfile():
                data, rate = sf.read(path, dtype="float32", always_2d=True)
                import torchaudio.functional as F

                F.resample(torch.from_numpy(data.mean(axis=1)), rate, features.sample_rate)

            line += f"   soundfile+resample {args.seconds / timed(with_soundfile):7.0f}x"
        except sf.LibsndfileError:
            line += "   soundfile: cannot decode this format"
        print(line)

    items = [(i, str(p)) for i, p in enumerate(files)]

    def pure_decode():
        for _ in decode_blocks(items, features, jobs=args.jobs):
            pass

    decode_time = timed(pure_decode)
    decode_speed = audio_seconds / decode_time
    print(f"\npure decode + windows, {args.jobs} workers: {decode_time:.1f} s, {decode_speed:.0f}x real time")

    model_speed = model_only(model, args)

    work = Path(tempfile.mkdtemp(prefix="tagger-bench-copy-"))
    try:
        for p in files:
            shutil.copy2(p, work / p.name)
        summary = None

        def end_to_end():
            nonlocal summary
            summary = tag_paths([work], model=model, device=args.device, jobs=args.jobs, batch_size=args.batch_size, force=True)

        e2e_time = timed(end_to_end)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    e2e_speed = audio_seconds / e2e_time
    print(f"end to end (decode, infer, write tags): {e2e_time:.1f} s, {e2e_speed:.0f}x real time, statuses {dict(summary.counts)}")
    print(f"\nratio end-to-end / pure decode: {e2e_speed / decode_speed:.2f} (target >= 0.5)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB (largest of this process and its worker processes)")


if __name__ == "__main__":
    sys.exit(main())
