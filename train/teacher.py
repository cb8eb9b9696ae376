"""Teacher targets for real, unlabelled audio: a stronger model (e.g. the AudioSet-trained
mn04) scores 3-s windows of real recordings; the student learns those scores next to its
rendered, exactly labelled mixes.

Raw teacher probabilities are not targets: mn04 spreads its mass over "Music" and genre
classes, so an instrument it does hear may still score 0.05 (issue 6: raw targets taught the
student that real-sounding audio has no instruments). Targets are therefore *calibrated* per
label: ``sigmoid((logit(p) - logit(t)) / T)`` maps the teacher's own threshold ``t`` to 0.5.

The teacher's scores of *all* its classes (AudioSet's 527: "Bowed string instrument", "Strum",
"Drum roll", "Reverberation", ...) are kept too: ``tagger train --teacher-classes W`` has the
student's pooled features predict them on the teacher windows, through a head that training
drops, so what the teacher tells apart in real audio shapes the student's features, not only
its 16 outputs.

Windows and targets are computed once and cached in an .npz (teacher inference costs more
than a training step).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from tagger.decode import DecodeError, decode

AUDIO_EXTS = (".flac", ".wav", ".ogg", ".mp3", ".opus", ".m4a", ".aif", ".aiff")
Log = Callable[[str], None]


def audio_files(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        files += [d] if d.is_file() else sorted(p for p in d.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())
    return files


def calibrate(probs: np.ndarray, thresholds: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """Per-label rescaling: the teacher's threshold becomes 0.5, ``temperature`` softens."""
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    t = np.clip(np.asarray(thresholds, np.float64), 1e-6, 1 - 1e-6)
    z = (np.log(p / (1 - p)) - np.log(t / (1 - t))) / temperature
    return (1 / (1 + np.exp(-z))).astype(np.float32)


class Mn04Teacher:
    """mn04 (tagger.efficientat) as a teacher: 16 label probabilities (and the 527 AudioSet class
    probabilities they come from) per 32-kHz window, from the upstream weights file or from an
    installed tagger model (``model``, whose per-label thresholds then calibrate the targets)."""

    def __init__(self, weights: str | os.PathLike | None = None, thresholds: Sequence[float] | None = None,
                 model=None):
        from tagger.efficientat import LABELS, SAMPLE_RATE, Mn04

        if model is not None:
            self.audioset = lambda x: model.network.net(model.front(x))[0]
            self.class_table = model.network.class_table
            self.labels = list(model.labels)
            self.sample_rate = model.features.sample_rate
            self.thresholds = [float(t) for t in (thresholds or model.thresholds)]
            return
        mn04 = Mn04.from_file(weights)
        self.audioset = lambda x: mn04.audioset(x)[0]
        self.class_table = mn04.network.class_table
        self.labels = list(LABELS)
        self.sample_rate = SAMPLE_RATE
        if thresholds is None:
            try:
                from tagger.catalog import MN04_THRESHOLDS as thresholds  # chosen on real recordings, not real-dev
            except ImportError:
                thresholds = (0.2,) * len(self.labels)  # the global threshold
        self.thresholds = [float(t) for t in thresholds]

    @torch.inference_mode()
    def probs(self, windows: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(label probabilities ``[N, labels]``, class probabilities ``[N, classes]``): a label's
        is its strongest class's (tagger.efficientat.label_logits)."""
        from tagger.efficientat import N_CLASSES, label_logits

        labels, classes = [], []
        for i in range(0, len(windows), batch):
            logits = self.audioset(torch.from_numpy(windows[i:i + batch]))
            labels.append(torch.sigmoid(label_logits(logits, self.class_table)).numpy())
            classes.append(torch.sigmoid(logits).numpy())
        if not labels:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, N_CLASSES), np.float32)
        return np.concatenate(labels), np.concatenate(classes)


def even_windows(audio: np.ndarray, size: int, max_windows: int) -> np.ndarray:
    """Non-overlapping ``size``-sample windows of ``audio`` without the silent ones; at most
    ``max_windows``, evenly spaced over the file, so a long file does not dominate."""
    n = len(audio) // size
    if n == 0:
        return np.zeros((0, size), np.float32)
    w = audio[: n * size].reshape(n, size)
    w = w[np.sqrt(np.mean(w**2, axis=1)) > 1e-3]
    if len(w) > max_windows:
        w = w[np.linspace(0, len(w) - 1, max_windows).round().astype(int)]
    return w


def _cache_key(files: Sequence[Path], teacher: Mn04Teacher, window_s: float, rate: int, max_windows: int) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{int(st.st_mtime)};".encode())
    h.update(f"{teacher.sample_rate}:{window_s}:{rate}:{max_windows}".encode())  # raw probs: thresholds apply later
    h.update(b"classes")  # caches since the class probabilities were kept
    return h.hexdigest()[:16]


def teacher_windows(dirs: Sequence[str | os.PathLike], teacher: Mn04Teacher, labels: Sequence[str], *,
                    sample_rate: int, window_seconds: float, max_windows_per_file: int = 60,
                    cache_dir: str | os.PathLike | None = None,
                    log: Log = print) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(student windows ``[N, samples]`` at ``sample_rate``, raw teacher probabilities ``[N, labels]``,
    file index per window, the teacher's class probabilities ``[N, classes]``) for non-overlapping
    windows of every audio file under ``dirs``. Silent windows are skipped; at most
    ``max_windows_per_file`` evenly spaced windows per file."""
    if list(labels) != teacher.labels:
        raise ValueError("the teacher's labels differ from the student's")
    files = audio_files(dirs)
    if not files:
        raise ValueError("no audio files under " + ", ".join(map(str, dirs)))
    cache_dir = Path(cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tagger" / "teacher")
    cache = cache_dir / f"{_cache_key(files, teacher, window_seconds, sample_rate, max_windows_per_file)}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            log(f"teacher targets from {cache} ({len(data['probs'])} windows)")
            return data["windows"].astype(np.float32), data["probs"], data["source"], data["classes"]
    size_t = int(round(window_seconds * teacher.sample_rate))
    windows, probs, index, classes = [], [], [], []
    for k, path in enumerate(files):
        try:
            audio = decode(path, sample_rate=teacher.sample_rate)
        except (DecodeError, OSError) as exc:
            log(f"teacher: skipped {path}: {exc}")
            continue
        w = even_windows(audio, size_t, max_windows_per_file)
        if not len(w):
            continue
        label_probs, class_probs = teacher.probs(np.ascontiguousarray(w))
        probs.append(label_probs)
        classes.append(class_probs.astype(np.float16))
        windows.append(AF.resample(torch.from_numpy(w), teacher.sample_rate, sample_rate).numpy().astype(np.float16))
        index.append(np.full(len(w), k, np.int32))
        log(f"teacher: {path.name}: {len(w)} windows")
    if not windows:
        raise ValueError("no usable audio for the teacher")
    out = np.concatenate(windows), np.concatenate(probs), np.concatenate(index), np.concatenate(classes)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npz")
    np.savez(tmp, windows=out[0], probs=out[1], source=out[2], classes=out[3])
    os.replace(tmp, cache)
    return out[0].astype(np.float32), out[1], out[2], out[3]
