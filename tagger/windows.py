"""Cut a stream of samples into fixed-length windows with a hop.

Windows start at 0, hop, 2*hop, ... A tail that the last full window did not reach gets
one more, zero-padded window, and a track shorter than one window is padded, not
dropped, so every track yields ``1 + ceil(max(0, n - window) / hop)`` windows.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np


def count_windows(n_samples: int, *, window: int, hop: int) -> int:
    return 1 + math.ceil(max(0, n_samples - window) / hop)


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
        keep_from = min(next_start - consumed, buffer.size)
        buffer = buffer[keep_from:]
        consumed += keep_from
    total = consumed + buffer.size
    emitted = next_start // hop
    if emitted == 0 or next_start - hop + window < total:  # samples after the last full window
        tail = np.zeros(window, np.float32)
        offset = next_start - consumed
        piece = buffer[offset : offset + window]
        tail[: piece.size] = piece
        ready.append(tail)
    if ready:
        yield np.stack(ready)
