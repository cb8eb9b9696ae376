"""Cluster throughput benchmark: prints measurements, asserts nothing.

    python bench/bench_cluster.py [--tracks 24] [--seconds 120] [--workers 1,2] [--library DIR]

Generates (once) a library like bench/bench.py, then for each worker count starts a Dask
LocalCluster on this machine (worker processes, one thread each), warms the workers up (imports,
model load), and times `tag --dry-run` of the library through `tagger.cluster` (decode, windows,
model, scores; no writes, so every run sees the same files). Prints throughput in multiples of
real time per worker count, the ratio to one worker, and the one-machine pipeline
(`tag_paths`, --jobs 2) for comparison. On a machine with fewer free cores than workers the
ratio says so.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import make_library  # noqa: E402  (bench/bench.py)
from distributed import Client, LocalCluster  # noqa: E402

from tagger.cluster import tag_paths_on_cluster  # noqa: E402
from tagger.model import load_model  # noqa: E402
from tagger.pipeline import tag_paths  # noqa: E402


def _warm_up(model_path: str, weights_hash: str) -> None:
    from tagger.cluster import _worker_runner

    _worker_runner(model_path, weights_hash, "auto", None)  # imports and the model load, once per worker


def cluster_run(files: list[Path], model, workers: int) -> tuple[float, float]:
    """(audio seconds, wall seconds) of one dry run on a fresh LocalCluster of ``workers``."""
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster, set_as_default=False) as client:
        client.run(_warm_up, model.path, model.weights_hash)
        start = time.perf_counter()
        summary = tag_paths_on_cluster(files, client=client, model=model, dry_run=True)
        return summary.audio_seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--workers", default="1,2", help="Comma-separated worker counts to measure.")
    parser.add_argument("--library", type=Path, help="Where to keep the generated library (default: a temp folder).")
    parser.add_argument("--model", help="Model file (default: the shipped model).")
    parser.add_argument("--no-local", action="store_true", help="Skip the one-machine reference run.")
    args = parser.parse_args()

    root = args.library or Path(tempfile.gettempdir()) / f"tagger-bench-cluster-{args.tracks}x{int(args.seconds)}"
    files = make_library(root, args.tracks, args.seconds)
    model = load_model(args.model)
    print(f"library: {len(files)} tracks x {args.seconds:.0f} s in {root}; model {model.model_id}")

    speeds: dict[int, float] = {}
    for workers in (int(w) for w in args.workers.split(",")):
        audio, wall = cluster_run(files, model, workers)
        speeds[workers] = audio / wall
        print(f"cluster, {workers} worker(s) x 1 thread: {speeds[workers]:.0f}x real time ({audio / 60:.0f} min of audio in {wall:.1f} s)")
    base = speeds.get(1)
    if base:
        for workers, speed in speeds.items():
            if workers != 1:
                print(f"ratio {workers} workers / 1 worker: {speed / base:.2f}")
    if not args.no_local:
        start = time.perf_counter()
        summary = tag_paths(files, model=model, jobs=2, dry_run=True)
        wall = time.perf_counter() - start
        print(f"one machine (tag_paths, --jobs 2): {summary.audio_seconds / wall:.0f}x real time")


if __name__ == "__main__":
    main()
