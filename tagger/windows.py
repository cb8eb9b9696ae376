"""Cut a stream of samples into fixed-length windows with a hop.

Windows start at 0, hop, 2*hop, ... A tail that the last full window did not reach gets
one more window, the track's last ``window`` samples: full of audio, as every training window
is (a zero-padded one dragged short tracks' scores down: ``bench/tail_windows.py``). A track
shorter than one window is repeated from its start until the window is full (tiled), not
padded with silence and not dropped, so every track yields
``1 + ceil(max(0, n - window) / hop)`` windows.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np


def count_windows(n_samples: int, *, window: int, hop: int) -> int:
    return 1 + math.ceil(max(0, n_samples - window) / hop)


def tile(signal: np.ndarray, length: int) -> np.ndarray:
    """``signal`` repeated from its start to exactly ``length`` samples (zeros if it is empty)."""
    if signal.size == 0:
        return np.zeros(length, np.float32)
    return np.resize(signal.astype(np.float32, copy=False), length)


def iter_window_blocks(
    chunks: Iterable[np.ndarray], *, window: int, hop: int, block: int
) -> Iterator[np.ndarray]:
    """Yield float32 arrays ``[<=block, window]``; memory stays at one block plus one chunk."""
    buffer = np.zeros(0, np.float32)
    consumed = 0  # samples dropped from the front of the buffer so far
    next_start = 0  # absolute start sample of the next window
    ready: list[np.ndarray] = []
    for chunk in chunks:
        buffer = np.concatenate([buffer, chunk.astype(np.float32, copy=False)])
        while next_start + window <= consumed + buffer.size:
            offset = next_start - consumed
            ready.append(buffer[offset : offset + window].copy())
            next_start += hop
            if len(ready) == block:
                yield np.stack(ready)
                ready = []
        # keep what the next window needs, and the last `window` samples for an end-aligned tail
        keep_from = max(0, min(next_start - consumed, buffer.size - window))
        buffer = buffer[keep_from:]
        consumed += keep_from
    total = consumed + buffer.size
    emitted = next_start // hop
    if emitted == 0:  # shorter than one window: tiled (an empty track stays silent)
        ready.append(tile(buffer, window))
    elif next_start - hop + window < total:  # samples after the last full window
        ready.append(buffer[buffer.size - window :].copy())
    if ready:
        yield np.stack(ready)
