"""Batched inference: windows from many tracks share fixed-size batches on the device.

Decoding runs in DataLoader worker processes (``jobs``) and overlaps with the model;
each worker streams one file at a time as blocks of windows, so memory stays bounded
whatever the track length. Results are split back per track, and the last partial
batch is flushed (openl3 once forgot that).
"""
from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tagger.decode import DecodeError, decode_chunks
from tagger.features import FeatureConfig
from tagger.lifetime import die_with_parent
from tagger.model import TaggerModel
from tagger.windows import iter_window_blocks

BLOCK_WINDOWS = 32  # windows per block a worker hands over (~6 MB at 16 kHz, 3 s)
# Measured on a 2-core CPU (network only, one thread): 4-16 windows per batch ran 1.3x faster
# than 32 and 1.8x faster than 64, since the first stages' activations then stay in cache;
# a GPU wants large batches.
CPU_BATCH_SIZE = 16
CUDA_BATCH_SIZE = 256


def default_batch_size(device: torch.device) -> int:
    return CUDA_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; naming an absent device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: Apple MPS is not available")
    return torch.device(name)


Stage = Callable[[np.ndarray], np.ndarray]  # windows -> what a worker hands over instead


@dataclass
class Block:
    """A piece of one track: some windows, or the end of the track, or its error."""

    track: int
    # [n, window_samples] float32 waveforms, or [n, labels] probabilities when the worker
    # scored them (BatchRunner.worker_stage). Kept numpy: tensors would cross processes as
    # shared-memory file descriptors, whose sharer threads print tracebacks when Ctrl-C
    # closes the pipes, and measured no faster here.
    windows: np.ndarray | None
    last: bool = False
    n_samples: int = 0  # total decoded samples, set on the last block
    error: str | None = None


def track_blocks(
    track: int, path: str | os.PathLike, features: FeatureConfig, stage: Stage | None = None
) -> Iterator[Block]:
    """The per-file unit of work: path -> blocks of windows (or one error block); with
    ``stage``, each block carries what it makes of the windows (``BatchRunner.worker_stage``)."""
    n_samples = 0

    def counted(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal n_samples
        for chunk in chunks:
            n_samples += chunk.size
            yield chunk

    try:
        chunks = counted(decode_chunks(path, sample_rate=features.sample_rate))
        for windows in iter_window_blocks(
            chunks, window=features.window_samples, hop=features.hop_samples, block=BLOCK_WINDOWS
        ):
            yield Block(track, windows if stage is None else stage(windows))
    except DecodeError as exc:
        yield Block(track, None, last=True, error=str(exc))
        return
    except OSError as exc:
        yield Block(track, None, last=True, error=exc.strerror or str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - one odd file must not end a library-wide run
        yield Block(track, None, last=True, error=f"unexpected decoding error ({type(exc).__name__}: {exc})")
        return
    yield Block(track, None, last=True, n_samples=n_samples)


class _DecodeDataset(IterableDataset):
    def __init__(self, items: Sequence[tuple[int, str]], features: FeatureConfig, stage: Stage | None):
        self.items = list(items)
        self.features = features
        self.stage = stage

    def __iter__(self) -> Iterator[Block]:
        info = get_worker_info()
        shard = self.items if info is None else self.items[info.id :: info.num_workers]
        for track, path in shard:
            yield from track_blocks(track, path, self.features, self.stage)


def _init_worker(_worker_id: int, *, parent: int) -> None:
    # A worker must never outlive the run: killed with -9, the main process cannot stop it.
    die_with_parent(parent)
    # Ctrl-C is the main process's to handle: it stops the loader, which ends the workers.
    # Left to them, a worker's helper threads print tracebacks as the pipes close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _keep_block(block: Block) -> Block:
    return block  # DataLoader must not convert our dataclass into tensors


def decode_blocks(
    items: Sequence[tuple[int, str]], features: FeatureConfig, *, jobs: int, stage: Stage | None = None
) -> Iterable[Block]:
    """Blocks for ``(track id, path)`` items, decoded by ``jobs`` worker processes (0: inline);
    with ``stage`` (``BatchRunner.worker_stage``) the workers also score the windows."""
    dataset = _DecodeDataset(items, features, stage)
    if jobs <= 0 or len(items) == 0:
        return iter(dataset)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=min(jobs, len(items)),
        collate_fn=_keep_block,
        worker_init_fn=functools.partial(_init_worker, parent=os.getpid()),
        prefetch_factor=4,
        in_order=False,  # a long track in one worker must not stall the others
    )


class BatchRunner:
    """Collects windows from many tracks into fixed-size batches and runs the model."""

    def __init__(self, model: TaggerModel, device: torch.device, batch_size: int | None = None):
        self.model = model.to(device)
        self.network = model.inference_network(device).to(device)
        self.device = device
        self.batch_size = batch_size or default_batch_size(device)
        self._windows: list[np.ndarray] = []
        self._tracks: list[np.ndarray] = []
        self._pending = 0

    def worker_stage(self) -> Stage | None:
        """What decode workers run on each block: on CPU the whole model (``score``), so
        that every worker decodes, computes features and runs the network on its own tracks,
        the cores share all the work without a main process to wait for, and a block
        crosses processes as probabilities (measured on 20 tracks: main process 4.0 -> 1.4
        CPU-s, total 9.6 -> 9.3 CPU-s, wall -10 %). None on a GPU, which wants the windows of many tracks in large
        batches (``add``)."""
        return self.score if self.device.type == "cpu" else None

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities for some windows (e.g. one block of one track), batch by batch."""
        return np.concatenate([self.predict(windows[i : i + self.batch_size]) for i in range(0, len(windows), self.batch_size)])

    def add(self, track: int, windows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Queue windows; returns ``(track, probs)`` pieces for every full batch run."""
        self._windows.append(windows)
        self._tracks.append(np.full(len(windows), track))
        self._pending += len(windows)
        if self._pending < self.batch_size:
            return []
        return self._run(full_only=True)

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Run whatever is queued, a partial batch included."""
        return self._run(full_only=False) if self._pending else []

    def _run(self, *, full_only: bool) -> list[tuple[int, np.ndarray]]:
        windows = np.concatenate(self._windows)
        tracks = np.concatenate(self._tracks)
        n_run = (len(windows) // self.batch_size) * self.batch_size if full_only else len(windows)
        self._windows = [windows[n_run:]] if n_run < len(windows) else []
        self._tracks = [tracks[n_run:]] if n_run < len(windows) else []
        self._pending = len(windows) - n_run
        probs = np.concatenate(
            [self.predict(windows[i : i + self.batch_size]) for i in range(0, n_run, self.batch_size)]
        )
        # Split back into runs of consecutive windows of the same track.
        cuts = np.flatnonzero(np.diff(tracks[:n_run])) + 1
        return [(int(t[0]), p) for t, p in zip(np.split(tracks[:n_run], cuts), np.split(probs, cuts))]

    @torch.inference_mode()
    def predict(self, windows: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(windows)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        else:
            batch = batch.to(self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            spec = self.model.front(batch).contiguous(memory_format=torch.channels_last)
            logits = self.network(spec)
        return torch.sigmoid(logits.float()).cpu().numpy()
