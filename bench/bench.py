"""Throughput benchmark: prints measurements, asserts nothing.

    python bench/bench.py [--tracks 50] [--seconds 180] [--jobs 2] [--library DIR] [--model M]
                          [--long-minutes 120] [--no-one-core]
    python bench/bench.py --model efficientat-mn04 --model-only --threads 2

Generates (once) a library of synthetic tracks in mixed formats, then measures in one run:
per-format decode speed of PyAV vs soundfile; the ffmpeg decode limit (the ffmpeg command
decoding every file to mono 16 kHz, --jobs processes at a time); pure decode throughput (the
tagger's decode workers alone); model-only throughput; `tagger tag --dry-run` and a first
tagging of untagged copies, each as the `tagger` command a user runs (start-up included);
their ratio to the ffmpeg limit; the same on one core (what a second core buys); and the peak
RSS of tagging one long file. Times are wall clock next to CPU-seconds (the command and its
children): on a shared machine wall times are noisy, so compare ratios of runs made back to back.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from tagger.decode import decode
from tagger.infer import BatchRunner, decode_blocks, pick_device
from tagger.catalog import load as load_model  # a model name or file

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


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # CPU-seconds of the command and its children
    rss_mb: float  # peak RSS of its largest process
    rc: int = 0

    def speed(self, audio_seconds: float) -> float:
        return audio_seconds / self.wall


# Runs a command and prints its wall time and wait4() usage as JSON. Peak RSS needs this small
# go-between: a child exec'd straight from this process (torch loaded) is charged this
# process's peak RSS as its own.
_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"wall": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime,
                  "rss_mb": usage.ru_maxrss / 1024, "rc": os.waitstatus_to_exitcode(status)}))
"""


def run_measured(cmd: list[str], *, cpus: str | None = None, rss: bool = True) -> Run:
    """Run one command to the end: its wall time, CPU-seconds (with its children) and, with
    ``rss``, the peak RSS of its largest process."""
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    with tempfile.TemporaryFile() as err:
        if rss:
            out = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=err, check=True)
            run = Run(**json.loads(out.stdout))
        else:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            run = Run(time.perf_counter() - start, usage.ru_utime + usage.ru_stime, float("nan"), proc.returncode)
        if run.rc != 0:
            err.seek(0)
            print(f"  ! {' '.join(cmd[:4])}... exited {run.rc}: {err.read().decode(errors='replace')[-400:]}")
    return run


def ffmpeg_limit(files: list[Path], jobs: int, *, cpus: str | None = None) -> Run:
    """The decode limit: one ffmpeg per file, ``jobs`` at a time, each decoding to mono 16 kHz
    float (what the tagger needs) and throwing the samples away."""
    def one(path: Path) -> Run:
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-y", os.devnull]
        return run_measured(cmd, cpus=cpus, rss=False)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs = list(pool.map(one, files))
    return Run(time.perf_counter() - start, sum(r.cpu for r in runs), float("nan"), max(r.rc for r in runs))


def tagger_command() -> list[str]:
    """The installed ``tagger`` script of this interpreter (what users run), else ``-m tagger``."""
    script = Path(sys.executable).with_name("tagger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tagger"]


def make_long_file(path: Path, minutes: float) -> Path:
    """One long mono FLAC (a 3-minute synthetic track repeated), written in blocks."""
    if path.exists():
        return path
    rate = 22050
    piece = synth_track(180.0, rate, 7).mean(axis=1)
    tmp = path.with_name("tmp-" + path.name)
    with sf.SoundFile(tmp, "w", rate, 1, format="FLAC") as out:
        for _ in range(int(np.ceil(minutes / 3))):
            out.write(piece)
    os.replace(tmp, path)
    return path


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
    parser.add_argument("--long-minutes", type=float, default=120.0, help="Length of the one-file memory test (0: skip).")
    parser.add_argument("--no-one-core", action="store_true", help="Skip the one-core runs.")
    parser.add_argument("--repeat", type=int, default=2, help="Interleaved rounds of the end-to-end runs (fastest kept).")
    args = parser.parse_args()
    # Model threads as tagging picks them on CPU: the cores the decode workers leave.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(args.threads or (max(1, cores - args.jobs) if not args.model_only else torch.get_num_threads()))
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

    # The tagger as a user runs it: the installed command, start-up and exit included.
    tagger = tagger_command() + (["--model", args.model] if args.model else [])
    common = ["-q", "--jobs", str(args.jobs), "--device", args.device]
    if args.batch_size:
        common += ["--batch-size", str(args.batch_size)]
    def first_tagging() -> tuple[Run, dict[str, int]]:
        work = Path(tempfile.mkdtemp(prefix="tagger-bench-copy-"))
        try:
            for p in files:
                shutil.copy2(p, work / p.name)  # untagged copies: a first tagging
            report = work / "report.jsonl"
            run = run_measured(tagger + ["tag", *common, "--report", str(report), str(work)])
            statuses: dict[str, int] = {}
            for line in report.read_text().splitlines():
                status = json.loads(line)["status"]
                statuses[status] = statuses.get(status, 0) + 1
            return run, statuses
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # Interleaved rounds, the fastest of each kind kept: neighbours on a shared machine take
    # a varying share of the cores, and the least disturbed run is the one to compare.
    limits, drys, firsts = [], [], []
    for _ in range(args.repeat):
        limits.append(ffmpeg_limit(files, args.jobs))
        drys.append(run_measured(tagger + ["tag", "--dry-run", *common, str(library)]))
        run, statuses = first_tagging()
        firsts.append(run)
    limit, dry, first = (min(runs, key=lambda r: r.wall) for runs in (limits, drys, firsts))

    print(f"\n{len(files)} files, {audio_seconds / 60:.0f} min of audio, {args.jobs} processes (fastest of {args.repeat} rounds):")
    print(f"  {'':34s} {'wall s':>7s} {'x real time':>12s} {'CPU-s':>7s} {'peak RSS':>9s}")
    rows = [("ffmpeg decode limit", limit), ("tagger tag --dry-run", dry), ("tagger tag (first tagging)", first)]
    for name, run in rows:
        rss = "-" if run.rss_mb != run.rss_mb else f"{run.rss_mb:.0f} MB"  # nan: not measured
        print(f"  {name:34s} {run.wall:7.1f} {run.speed(audio_seconds):11.0f}x {run.cpu:7.1f} {rss:>9s}")
    print(f"  first tagging statuses: {statuses}")
    for name, run in rows[1:]:
        print(f"ratio {name} / ffmpeg decode limit: {run.speed(audio_seconds) / limit.speed(audio_seconds):.2f} "
              f"(target >= 0.5; CPU-seconds ratio {limit.cpu / run.cpu:.2f})")
    print(f"ratio tagger tag --dry-run / pure decode (tagger's own workers): {dry.speed(audio_seconds) / decode_speed:.2f}")

    if not args.no_one_core and shutil.which("taskset"):
        # Pinned to one core: what the second core buys each of them.
        one_core = ["tag", "--dry-run", "-q", "--jobs", "1", "--device", args.device, str(library)]
        limits1, drys1 = [], []
        for _ in range(args.repeat):
            limits1.append(ffmpeg_limit(files, 1, cpus="0"))
            drys1.append(run_measured(tagger + one_core, cpus="0"))
        limit1, dry1 = (min(runs, key=lambda r: r.wall) for runs in (limits1, drys1))
        print(f"\none core (taskset -c 0, 1 process): ffmpeg {limit1.speed(audio_seconds):.0f}x ({limit1.cpu:.1f} CPU-s), "
              f"tagger tag --dry-run --jobs 1 {dry1.speed(audio_seconds):.0f}x real time ({dry1.cpu:.1f} CPU-s; "
              f"ratio {dry1.speed(audio_seconds) / limit1.speed(audio_seconds):.2f})")
        # On an idle machine the second core can at most double a speed; on a shared one it
        # buys what the neighbours leave of it.
        print(f"a second core buys: ffmpeg {limit.speed(audio_seconds) / limit1.speed(audio_seconds):.2f}x, "
              f"tagger {dry.speed(audio_seconds) / dry1.speed(audio_seconds):.2f}x")

    if args.long_minutes > 0:
        long_file = make_long_file(Path(tempfile.gettempdir()) / f"tagger-bench-long-{int(args.long_minutes)}min.flac", args.long_minutes)
        long = run_measured(tagger + ["tag", "--dry-run", *common, str(long_file)])
        print(f"\none {args.long_minutes:.0f}-minute file: peak RSS {long.rss_mb:.0f} MB (largest process), "
              f"{long.speed(args.long_minutes * 60):.0f}x real time, {long.cpu:.1f} CPU-s")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this script (its in-process decode and model runs): {own:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
