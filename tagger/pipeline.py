"""The tagging pipeline as one library call:
files -> checks -> decode -> windows -> features + model (batched) -> aggregate -> tags / report.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tagger import tags
from tagger.aggregate import aggregate, select_labels, timeline
from tagger.files import find_audio_files, folders_of
from tagger.infer import BatchRunner, decode_blocks, pick_device
from tagger.model import AGGREGATIONS, TaggerModel
from tagger.report import DRY_RUN, ERROR, SKIPPED, TAGGED, USER_TAG, TrackResult

ResultCallback = Callable[[TrackResult], None]


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    audio_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    total: int = 0

    def add(self, result: TrackResult) -> None:
        self.counts[result.status] += 1
        self.audio_seconds += result.duration or 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def failed(self) -> int:
        return self.counts[ERROR]

    @property
    def done(self) -> int:
        return sum(self.counts.values())


@dataclass
class _Track:
    path: Path
    stat: tuple[int, int]
    pieces: list[np.ndarray] = field(default_factory=list)
    expected: int = 0  # windows handed to the model so far
    received: int = 0  # windows whose probabilities came back
    n_samples: int | None = None  # set once decoding finished


def _precheck(path: Path, model_id: str, *, dry_run: bool, force: bool) -> TrackResult | tuple[int, int]:
    """Everything that can reject a file before inference is spent on it."""
    try:
        st = os.stat(path)
        if not os.access(path, os.R_OK):
            return TrackResult(str(path), ERROR, error="permission denied (cannot read)")
        state = tags.read_tags(path)
        if state.model == model_id and not force:
            return TrackResult(str(path), SKIPPED, model=model_id, error="already tagged by this model")
        if state.has_user_instruments and not force:
            return TrackResult(str(path), USER_TAG, error="has an INSTRUMENTS tag written by a person (use --force)")
        if not dry_run:
            tags.check_writable(path)
    except tags.TagError as exc:
        return TrackResult(str(path), ERROR, error=str(exc))
    except OSError as exc:
        return TrackResult(str(path), ERROR, error=exc.strerror or str(exc))
    return (st.st_size, st.st_mtime_ns)


def score_track(
    path: Path,
    window_probs: np.ndarray,
    model: TaggerModel,
    *,
    n_samples: int,
    thresholds: Sequence[float],
    aggregation: str,
    topk: int,
    with_timeline: bool = False,
    dry_run: bool = False,
) -> TrackResult:
    """Window probabilities of one track -> its scores, labels (and timeline)."""
    scores = aggregate(window_probs, aggregation, topk=topk)
    features = model.features
    result = TrackResult(
        str(path),
        DRY_RUN if dry_run else TAGGED,
        instruments=[label for label, _ in select_labels(scores, model.labels, thresholds)],
        scores={label: float(s) for label, s in zip(model.labels, scores)},
        duration=n_samples / features.sample_rate,
        model=model.model_id,
    )
    if with_timeline:
        result.timeline = timeline(
            window_probs, model.labels, thresholds,
            hop_seconds=features.hop_seconds, window_seconds=features.window_seconds, duration=result.duration,
        )
    return result


def write_result(result: TrackResult, *, stat: tuple[int, int], preserve_mtime: bool = False) -> None:
    """Write a scored track's tags; a failure turns the result into an error."""
    try:
        tags.write_tags(
            result.path,
            instruments=result.instruments,
            scores={label: result.scores[label] for label in result.instruments},
            model_id=result.model,
            preserve_mtime=preserve_mtime,
            expected_stat=stat,
        )
    except tags.TagError as exc:
        result.status, result.error = ERROR, str(exc)


@dataclass(frozen=True)
class TagSettings:
    """What to do with each track, resolved from the model and the options (plain data: cluster
    tasks carry it to the workers)."""

    thresholds: tuple[float, ...]
    aggregation: str
    topk: int
    dry_run: bool = False
    force: bool = False
    with_timeline: bool = False
    preserve_mtime: bool = False


def tag_settings(
    model: TaggerModel,
    *,
    threshold: float | None = None,
    aggregation: str | None = None,
    topk: int | None = None,
    dry_run: bool = False,
    force: bool = False,
    with_timeline: bool = False,
    preserve_mtime: bool = False,
) -> TagSettings:
    """Options on top of the model's defaults (aggregation, k, per-label thresholds)."""
    aggregation = aggregation or model.aggregation
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    thresholds = [threshold] * len(model.labels) if threshold is not None else model.thresholds
    return TagSettings(
        thresholds=tuple(float(t) for t in thresholds), aggregation=aggregation, topk=topk or model.topk,
        dry_run=dry_run, force=force, with_timeline=with_timeline, preserve_mtime=preserve_mtime,
    )


def tag_paths(
    paths: Sequence[str | os.PathLike],
    *,
    model: TaggerModel,
    device: str = "auto",
    jobs: int = 2,
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
    on_start: Callable[[int], None] | None = None,
    on_result: ResultCallback | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Tag every audio file under ``paths``; each finished track goes to ``on_result``."""
    summary = summary if summary is not None else Summary()
    settings = tag_settings(
        model, threshold=threshold, aggregation=aggregation, topk=topk, dry_run=dry_run, force=force,
        with_timeline=with_timeline, preserve_mtime=preserve_mtime,
    )
    runner = BatchRunner(model, pick_device(device), batch_size)
    files = start_run(paths, dry_run=dry_run, include=include, exclude=exclude, hidden=hidden, summary=summary, on_start=on_start)

    def emit(result: TrackResult) -> None:
        summary.add(result)
        if on_result:
            on_result(result)

    tag_files(enumerate(files), runner, settings, jobs=jobs, emit=emit)
    return summary


def start_run(
    paths: Sequence[str | os.PathLike],
    *,
    dry_run: bool,
    include: Sequence[str],
    exclude: Sequence[str],
    hidden: bool,
    summary: Summary,
    on_start: Callable[[int], None] | None,
) -> list[Path]:
    """The files to tag; temp files left by killed runs are removed from their folders first."""
    files = list(find_audio_files(paths, include=include, exclude=exclude, hidden=hidden))
    summary.total = len(files)
    if not dry_run:
        for folder in folders_of(files):
            tags.clean_stale_temps(folder)  # leftovers of a run that was killed mid-write
    if on_start:
        on_start(len(files))
    return files


def tag_files(
    files: Iterable[tuple[int, Path]], runner: BatchRunner, settings: TagSettings, *, jobs: int, emit: ResultCallback
) -> None:
    """The per-file work on some files, shared by one machine (all files) and each cluster task
    (a few files): skip checks, decode, windows batched across files, scores, tag writes.
    Each track's result goes to ``emit``, one call at a time."""
    model = runner.model
    tracks: dict[int, _Track] = {}
    for index, path in files:
        checked = _precheck(path, model.model_id, dry_run=settings.dry_run, force=settings.force)
        if isinstance(checked, TrackResult):
            emit(checked)
        else:
            tracks[index] = _Track(path, checked)

    # Tag writes (a verified copy when tags outgrow the padding: 28 % of a first run's time,
    # measured) go to one writer thread, so they overlap inference; every later result goes
    # through that thread too, so callbacks never run concurrently.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tagger-writer")
    queued: list[Future] = []

    def write_and_emit(result: TrackResult, stat: tuple[int, int]) -> None:
        if not settings.dry_run:
            write_result(result, stat=stat, preserve_mtime=settings.preserve_mtime)
        emit(result)

    def finish(index: int) -> None:
        track = tracks.pop(index)
        result = score_track(
            track.path, np.concatenate(track.pieces), model, n_samples=track.n_samples, thresholds=settings.thresholds,
            aggregation=settings.aggregation, topk=settings.topk, with_timeline=settings.with_timeline,
            dry_run=settings.dry_run,
        )
        queued.append(writer.submit(write_and_emit, result, track.stat))

    def emit_later(result: TrackResult) -> None:
        queued.append(writer.submit(emit, result))

    items = [(index, str(track.path)) for index, track in tracks.items()]
    threads = torch.get_num_threads()
    if runner.device.type == "cpu" and jobs > 0:
        # Decoding workers take cores too: measured on 2 cores with 2 workers, one model
        # thread tagged 1.25x faster than two (oversubscribed cores thrash).
        torch.set_num_threads(max(1, _usable_cores() - jobs))
    try:
        stage = runner.worker_stage()  # CPU: the workers score their own blocks
        blocks = decode_blocks(items, model.features, jobs=jobs, stage=stage)
        _run_blocks(blocks, tracks, runner, finish, emit_later, scored=stage is not None)
    except BaseException:
        # On Ctrl-C the write under way completes (it is atomic anyway); queued ones are dropped.
        writer.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        torch.set_num_threads(threads)
    writer.shutdown(wait=True)
    for future in queued:
        future.result()  # a bug in the writer thread must not pass silently


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_blocks(blocks: Iterable, tracks: dict[int, _Track], runner: BatchRunner, finish: Callable[[int], None],
                emit: ResultCallback, *, scored: bool = False) -> None:
    """Feed decoded blocks to the batch runner (``scored``: they carry probabilities already);
    finish each track once all its windows are scored."""

    def collect(pieces: list[tuple[int, np.ndarray]]) -> None:
        for index, probs in pieces:
            track = tracks.get(index)
            if track is None:  # failed after some windows were queued
                continue
            track.pieces.append(probs)
            track.received += len(probs)
            if track.n_samples is not None and track.received == track.expected:
                finish(index)

    for block in blocks:
        track = tracks.get(block.track)
        if track is None:
            continue
        if block.error is not None:
            tracks.pop(block.track)
            emit(TrackResult(str(track.path), ERROR, error=block.error))
            continue
        if block.windows is not None:
            track.expected += len(block.windows)
            collect([(block.track, block.windows)] if scored else runner.add(block.track, np.asarray(block.windows)))
        if block.last:
            track.n_samples = block.n_samples
            if track.received == track.expected:
                finish(block.track)
    collect(runner.flush())


def untag_paths(
    paths: Sequence[str | os.PathLike],
    *,
    dry_run: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    on_result: ResultCallback | None = None,
) -> Summary:
    """Remove our fields (only where INSTRUMENTS_MODEL shows they are ours)."""
    summary = Summary()
    for path in find_audio_files(paths, include=include, exclude=exclude, hidden=hidden):
        summary.total += 1
        try:
            removed = tags.remove_tags(path, dry_run=dry_run)
            status = ("would-untag" if dry_run else "untagged") if removed else "unchanged"
            result = TrackResult(str(path), status)
        except tags.TagError as exc:
            result = TrackResult(str(path), ERROR, error=str(exc))
        except OSError as exc:
            result = TrackResult(str(path), ERROR, error=exc.strerror or str(exc))
        summary.add(result)
        if on_result:
            on_result(result)
    return summary
