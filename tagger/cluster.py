"""Tagging on an existing Dask distributed cluster, for libraries past one machine.

The client finds the files (workers see the same paths: shared storage), removes temp files
of killed runs, and sends chunks of a few files as tasks. A task runs the same per-file work
as one machine, ``tagger.pipeline.tag_files``: skip checks, decoding, windows batched across
the chunk's files, the safe tag writer. Each worker process loads the model once. The client
hands each chunk's per-track results to ``on_result`` as chunks complete.

A worker that dies mid-file leaves that file as it was or fully tagged (the safe writer); the
scheduler re-runs the chunk on another worker. Once a chunk has killed more workers than
``distributed.scheduler.allowed-failures`` allows (the scheduler then gives up on it), each of
its files is tried once more as a task of its own, and a file whose own task fails that way too
is reported as an error. Files that a dead worker had finished (results live on the worker
until the client fetches them) are re-run too and come back as ``skipped`` (already tagged by
this model).
"""
from __future__ import annotations

import math
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tagger.infer import BatchRunner, pick_device
from tagger.model import ModelError, TaggerModel, default_model_path, load_model
from tagger.pipeline import ResultCallback, Summary, TagSettings, start_run, tag_files, tag_settings
from tagger.report import ERROR, TrackResult

if TYPE_CHECKING:
    from distributed import Client, Future

CHUNK_FILES = 8  # files per task: enough windows to fill batches, few enough to spread the work
CONNECT_TIMEOUT = 15.0  # seconds to reach the scheduler


class ClusterError(Exception):
    """The cluster cannot be used (Dask missing, scheduler unreachable)."""


def connect(address: str, *, timeout: float | None = None) -> Client:
    """A client of the scheduler at ``address`` (e.g. ``tcp://host:8786``)."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--scheduler needs Dask distributed: pip install 'tagger[cluster]'") from None
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)
        get_backend(scheme)  # checked first: a Client made with a bad scheme fails noisily when collected
    except ValueError as exc:
        raise ClusterError(f"bad scheduler address {address!r}: {exc}") from None
    if not location:
        raise ClusterError(f"bad scheduler address {address!r}: expected e.g. tcp://host:8786")
    try:
        return Client(address, timeout=timeout or CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


# --- on the workers -------------------------------------------------------------------------

_models: dict[tuple[str, str], TaggerModel] = {}  # one load per worker process
_models_lock = threading.Lock()
_runners = threading.local()  # a BatchRunner holds queued windows: one per worker thread


def _same_model(path: str, weights_hash: str) -> TaggerModel:
    """The client's model, found at its path or as this worker's shipped default."""
    for candidate in dict.fromkeys((path, str(default_model_path()))):
        try:
            model = load_model(candidate)
        except ModelError:
            continue
        if model.weights_hash == weights_hash:
            return model
    raise ModelError(f"no model file {path} with the client's weights ({weights_hash[:8]}) on this worker")


def _worker_runner(path: str, weights_hash: str, device: str, batch_size: int | None) -> BatchRunner:
    runners = _runners.__dict__.setdefault("by_key", {})
    key = (path, weights_hash, device, batch_size)
    if key not in runners:
        with _models_lock:
            if (path, weights_hash) not in _models:
                _models[path, weights_hash] = _same_model(path, weights_hash)
            model = _models[path, weights_hash]
        runners[key] = BatchRunner(model, pick_device(device), batch_size)
    return runners[key]


def tag_chunk(
    chunk: Sequence[tuple[int, str]], model_path: str, weights_hash: str, device: str, batch_size: int | None,
    settings: TagSettings,
) -> list[TrackResult]:
    """One cluster task: tag a few files on this worker; their results, one per file."""
    try:
        runner = _worker_runner(model_path, weights_hash, device, batch_size)
    except (ModelError, ValueError) as exc:
        return [TrackResult(path, ERROR, error=f"worker {socket.gethostname()}: {exc}") for _, path in chunk]
    results: list[TrackResult] = []
    try:
        # Decoding runs inline: Dask worker processes are daemons and cannot start decode
        # workers; a cluster gets its parallelism from its workers.
        tag_files([(index, Path(path)) for index, path in chunk], runner, settings, jobs=0, emit=results.append)
    except BaseException:
        _runners.by_key.clear()  # a runner left with queued windows must not serve the next task
        raise
    return results


# --- on the client --------------------------------------------------------------------------


def _chunk_size(n_files: int, threads: int) -> int:
    # Two chunks per worker thread at least, so a small run still reaches every worker.
    return max(1, min(CHUNK_FILES, math.ceil(n_files / max(1, 2 * threads))))


def _in_flight(client: Client) -> int:
    # One task per worker thread, re-read as workers come and go: a library of millions of files
    # is not submitted at once, and no task waits on a worker behind another one, where the
    # scheduler would blame it too if that worker died.
    return max(1, sum(client.nthreads().values()))


def _chunk_results(future: Future, chunk: Sequence[tuple[int, str]], *, last_try: bool) -> list[TrackResult] | None:
    """The chunk's results; None: retry it (workers died on it, and this was not the last try)."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        if not last_try:
            return None
        error = "a cluster worker died on this file's task, more often than retries allow (the file is as it was or fully tagged)"
    except Exception as exc:  # noqa: BLE001 - one task must not end a library-wide run
        error = f"cluster task failed ({type(exc).__name__}: {exc})"
    return [TrackResult(path, ERROR, error=error) for _, path in chunk]


def tag_paths_on_cluster(
    paths: Sequence[str | os.PathLike],
    *,
    client: Client,
    model: TaggerModel,
    device: str = "auto",
    batch_size: int | None = None,
    dry_run: bool = False,
    force: bool = False,
    threshold: float | None = None,
    aggregation: str | None = None,
    topk: int | None = None,
    with_timeline: bool = False,
    preserve_mtime: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    chunk_files: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: ResultCallback | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Like ``tagger.pipeline.tag_paths``, with the per-file work done by the cluster's workers."""
    from distributed import as_completed

    summary = summary if summary is not None else Summary()
    settings = tag_settings(
        model, threshold=threshold, aggregation=aggregation, topk=topk, dry_run=dry_run, force=force,
        with_timeline=with_timeline, preserve_mtime=preserve_mtime,
    )
    files = start_run(paths, dry_run=dry_run, include=include, exclude=exclude, hidden=hidden, summary=summary, on_start=on_start)
    size = chunk_files or _chunk_size(len(files), sum(client.nthreads().values()))
    # Workers get absolute paths (their working folder is not the client's); results are
    # reported under the path the client found.
    items = [(index, os.path.abspath(path)) for index, path in enumerate(files)]
    shown = {absolute: str(path) for (_, absolute), path in zip(items, files)}
    chunks = iter([items[i : i + size] for i in range(0, len(items), size)])
    retries: deque[list[tuple[int, str]]] = deque()
    running: dict[Future, tuple[list[tuple[int, str]], bool]] = {}  # future -> (chunk, last try)
    done = as_completed(loop=client.loop)  # the client is not the default one

    def submit_next() -> bool:
        last_try = bool(retries)
        chunk = retries.popleft() if retries else next(chunks, None)
        if chunk is None:
            return False
        future = client.submit(
            tag_chunk, chunk, model.path, model.weights_hash, device, batch_size, settings, pure=False
        )
        running[future] = (chunk, last_try)
        done.add(future)
        return True

    def top_up() -> None:
        limit = _in_flight(client)
        while len(running) < limit and submit_next():
            pass

    top_up()
    try:
        for future in done:
            chunk, last_try = running.pop(future)
            results = _chunk_results(future, chunk, last_try=last_try)
            if results is None:
                # Workers kept dying on this chunk (the scheduler gave up on it): once more, each
                # file on its own, so one bad file does not fail the others.
                retries.extend([item] for item in chunk)
            for result in results or ():
                result.path = shown.get(result.path, result.path)
                summary.add(result)
                if on_result:
                    on_result(result)
            future.release()
            top_up()
    except BaseException:
        # Ctrl-C: chunks not started are dropped; a chunk already running on a worker finishes
        # its files there (each write is atomic), unreported.
        client.cancel(list(running))
        raise
    return summary
