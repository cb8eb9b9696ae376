"""`tagger tag --scheduler` on a real Dask LocalCluster (2 worker processes, one per test module)."""
from __future__ import annotations

import csv
import faulthandler
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import cloudpickle
import dask
import numpy as np
import psutil
import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster, WorkerPlugin

from media import decoded_audio, make_audio_file, read_other_tags
from tagger import tags
from tagger.cli import main
from tagger.model import load_model
from tagger.pipeline import tag_paths

EXPECTED = {"piano", "bass"}  # the tiny model's thresholds pass exactly these
# The worker plugin and the functions run on workers are defined here: send them by value,
# since worker processes cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class DieOnMarkedFiles(WorkerPlugin):
    """Runs in every worker process (restarted ones too): while writing a file whose name holds
    DIE-ONCE (first time only) or DIE-ALWAYS, the worker SIGKILLs itself after the tagged temp
    copy is written and before it replaces the original (the copy path is forced for them)."""

    def __init__(self, sentinels: str):
        self.sentinels = sentinels

    def setup(self, worker) -> None:
        import os
        import signal

        from tagger import tags

        real_try, real_fingerprint = tags._try_in_place, tags._audio_fingerprint
        sentinels = self.sentinels

        def marked(path: str) -> str | None:
            name = os.path.basename(path)
            return next((m for m in ("DIE-ONCE", "DIE-ALWAYS") if m in name), None)

        def try_in_place(audio, kind, values):
            return False if marked(audio.filename) else real_try(audio, kind, values)

        def fingerprint(path, decode):
            mark = marked(path)
            if decode and mark:  # called on the finished temp copy
                if mark == "DIE-ALWAYS":
                    os.kill(os.getpid(), signal.SIGKILL)
                try:
                    os.close(os.open(os.path.join(sentinels, "died-once"), os.O_CREAT | os.O_EXCL))
                    os.kill(os.getpid(), signal.SIGKILL)
                except FileExistsError:
                    pass
            return real_fingerprint(path, decode)

        tags._try_in_place, tags._audio_fingerprint = try_in_place, fingerprint


def _children() -> set[int]:
    """Our child processes, less multiprocessing's resource tracker (one per parent process,
    it ends with it)."""
    return {
        p.pid for p in psutil.Process().children(recursive=True)
        if "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    before = _children()
    # One re-run after a worker dies, then the chunk is given up (KilledWorker).
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        local = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    client = Client(local, set_as_default=False)
    sentinels = tmp_path_factory.mktemp("sentinels")
    client.register_plugin(DieOnMarkedFiles(str(sentinels)), name="die-on-marked-files")
    local.sentinels = sentinels
    local.client = client
    yield local
    client.close()
    local.close()
    # No Dask process outlives the tests.
    deadline = time.monotonic() + 10
    while (left := _children() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {[psutil.Process(p).cmdline() for p in left]}"


@pytest.fixture(autouse=True)
def _no_hang():
    # A client waits for workers as long as it takes; if this machine is too loaded for the nanny
    # to bring a killed worker back, fail loudly (tracebacks, exit) rather than hang CI.
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def library(tmp_path) -> Path:
    folder = tmp_path / "music"
    folder.mkdir()
    for i, fmt in enumerate(("flac", "mp3", "ogg", "m4a")):
        make_audio_file(folder / f"{i:02d} track.{fmt}", fmt, seconds=2.5, seed=i)
    return folder


def _run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _values(path: Path) -> set[str]:
    return {v for value in tags.read_tags(path).instruments for v in value.split("; ")}


def _count_model_loads() -> None:
    import tagger.cluster

    tagger.cluster._loads = 0
    real = tagger.cluster.load_model

    def counted(path):
        tagger.cluster._loads += 1
        return real(path)

    tagger.cluster.load_model = counted
    tagger.cluster._models.clear()


def _model_loads() -> int:
    import tagger.cluster

    return tagger.cluster._loads


def test_dry_run_scores_like_one_machine_and_loads_model_once_per_worker(cluster, library, tiny_model_path, tmp_path):
    before = _hashes(library)
    cluster.client.run(_count_model_loads)
    report = tmp_path / "cluster.jsonl"
    for _ in range(2):  # two runs: the second finds the model loaded
        result = _run("tag", str(library), "--model", str(tiny_model_path), "--scheduler", cluster.scheduler_address,
                      "--dry-run", "--report", str(report), "-q")
        assert result.exit_code == 0, result.output + result.stderr
    assert _hashes(library) == before  # dry run: nothing written
    # 4 files in chunks of 1 per run reached both workers; each read the model file once.
    assert sorted(cluster.client.run(_model_loads).values()) == [1, 1]

    rows = {r["path"]: r for r in map(json.loads, report.read_text().splitlines())}
    local = {}
    tag_paths([library], model=load_model(tiny_model_path), jobs=0, dry_run=True, on_result=lambda r: local.setdefault(r.path, r))
    assert rows.keys() == local.keys() and len(rows) == 4
    for path, row in rows.items():
        assert row["status"] == "dry-run"
        assert set(row["instruments"]) == EXPECTED
        assert row["scores"] == pytest.approx(local[path].scores, abs=1e-4)
        assert row["duration"] == pytest.approx(2.5, abs=0.05)


def test_tags_skips_and_force_through_the_env_variable(cluster, library, tiny_model_path, tmp_path):
    env = {"TAGGER_TAG_SCHEDULER": cluster.scheduler_address}
    (library / "broken.mp3").write_bytes(b"\xff\xfb" + os.urandom(3000))  # not audio: one error line, run goes on
    user = make_audio_file(library / "user.flac", "flac", seconds=2.0, seed=9)
    tags.write_tags(user, instruments=["tuba"], scores={}, model_id="x")
    from mutagen.flac import FLAC

    f = FLAC(user)
    del f["INSTRUMENTS_MODEL"]  # now it looks written by a person
    f.save()
    audio = {p.name: decoded_audio(p) for p in library.glob("*track*")}
    other = {p.name: read_other_tags(p) for p in library.glob("*track*")}
    report = tmp_path / "r.csv"

    result = _run("tag", str(library), "--model", str(tiny_model_path), "--report", str(report), env=env)
    assert result.exit_code == 1, result.output + result.stderr
    assert "broken.mp3" in result.stderr and "Traceback" not in result.output + result.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(report.open(encoding="utf-8"))}
    assert {name: r["status"] for name, r in rows.items()} == {
        "00 track.flac": "tagged", "01 track.mp3": "tagged", "02 track.ogg": "tagged", "03 track.m4a": "tagged",
        "broken.mp3": "error", "user.flac": "skipped-user-tag",
    }
    for name in audio:
        path = library / name
        assert _values(path) == EXPECTED and tags.read_tags(path).model.startswith("tiny 1 ")
        np.testing.assert_array_equal(decoded_audio(path), audio[name])
        assert read_other_tags(path) == other[name]
    assert _values(user) == {"tuba"}

    tagged = _hashes(library)
    result = _run("tag", str(library), "--model", str(tiny_model_path), "--report", str(report), env=env)
    assert result.exit_code == 1  # broken.mp3 still fails
    assert sorted(r["status"] for r in csv.DictReader(report.open(encoding="utf-8"))) == ["error"] + ["skipped"] * 4 + ["skipped-user-tag"]
    assert _hashes(library) == tagged

    result = _run("tag", str(library), "--model", str(tiny_model_path), "--force", "--report", str(report), env=env)
    assert sorted(r["status"] for r in csv.DictReader(report.open(encoding="utf-8"))) == ["error"] + ["tagged"] * 5
    assert _values(user) == EXPECTED


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if tags.TEMP_MARKER in p.name]


def test_worker_killed_mid_write_is_retried_elsewhere(cluster, library, tiny_model_path, tmp_path):
    victim = make_audio_file(library / "DIE-ONCE.mp3", "mp3", seconds=2.5, seed=7)
    audio, other = decoded_audio(victim), read_other_tags(victim)
    report = tmp_path / "r.jsonl"
    result = _run("tag", str(library), "--model", str(tiny_model_path), "--scheduler", cluster.scheduler_address,
                  "--report", str(report), "-q")
    assert result.exit_code == 0, result.output + result.stderr
    assert (cluster.sentinels / "died-once").exists()  # a worker really died...
    assert len(_temps(library)) == 1  # ...with its tagged temp copy written, before the rename
    statuses = {Path(r["path"]).name: r["status"] for r in map(json.loads, report.read_text().splitlines())}
    assert statuses.pop("DIE-ONCE.mp3") == "tagged" and len(statuses) == 4
    # Another file whose result was still on the dead worker is re-run: "skipped" (tagged by this model).
    assert set(statuses.values()) <= {"tagged", "skipped"}
    assert all(_values(path) == EXPECTED for path in library.iterdir() if tags.TEMP_MARKER not in path.name)
    np.testing.assert_array_equal(decoded_audio(victim), audio)
    assert read_other_tags(victim) == other
    # The next run removes the dead worker's temp file and finds everything tagged.
    result = _run("tag", str(library), "--model", str(tiny_model_path), "--scheduler", cluster.scheduler_address, "-q")
    assert result.exit_code == 0 and _temps(library) == []


def test_file_that_keeps_killing_workers_is_reported_and_left_whole(cluster, library, tiny_model_path, tmp_path):
    # Sorted second, so it shares its chunk (2 files: 5 files, 2 workers) with "00 track.flac".
    victim = make_audio_file(library / "01 DIE-ALWAYS.mp3", "mp3", seconds=2.5, seed=8)
    before = hashlib.sha256(victim.read_bytes()).hexdigest()
    report = tmp_path / "r.jsonl"
    result = _run("tag", str(library), "--model", str(tiny_model_path), "--scheduler", cluster.scheduler_address,
                  "--report", str(report))
    out = result.output + result.stderr
    assert result.exit_code == 1, out
    assert "01 DIE-ALWAYS.mp3: a cluster worker died" in result.stderr and "Traceback" not in out
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert rows["01 DIE-ALWAYS.mp3"]["status"] == "error"
    for name, row in rows.items():
        if name != "01 DIE-ALWAYS.mp3":  # its chunk mate included
            # "skipped": tagged by this run on a worker that died before its result was collected
            # (the scheduler re-ran the task, which found the file tagged by this model).
            assert row["status"] in {"tagged", "skipped"} and _values(library / name) == EXPECTED, name
    assert len(rows) == 5
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == before  # untouched: the rename never happened
    # One tagged temp per killed worker: 2 deaths in its chunk, 2 as a task of its own. The next run removes them.
    assert len(_temps(library)) == 4
    _run("tag", str(library / "00 track.flac"), "--model", str(tiny_model_path), "--scheduler", cluster.scheduler_address, "-q")
    assert _temps(library) == []


def test_unreachable_scheduler_is_a_usage_error(tiny_model_path, library, monkeypatch):
    monkeypatch.setattr("tagger.cluster.CONNECT_TIMEOUT", 1.0)
    before = _hashes(library)
    result = _run("tag", str(library), "--model", str(tiny_model_path), "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    result = _run("tag", str(library), "--model", str(tiny_model_path), "--scheduler", "nonsense://x")
    assert result.exit_code == 2 and "bad scheduler address" in result.stderr
    assert _hashes(library) == before


def test_workers_refuse_a_model_other_than_the_clients(cluster, library, tiny_model_path, tmp_path):
    from tagger.cluster import tag_paths_on_cluster
    from tagger.model import save_checkpoint

    path = tmp_path / "model.pt"
    shutil.copy(tiny_model_path, path)
    model = load_model(path)
    changed = load_model(path)
    changed.version = "2"
    save_checkpoint(changed, path)  # the file the workers will read is no longer the client's model
    before = _hashes(library)
    results = []
    summary = tag_paths_on_cluster([library], client=cluster.client, model=model, on_result=results.append)
    assert summary.failed == len(results) == 4
    assert all("with the client's weights" in r.error for r in results)
    assert _hashes(library) == before


def test_relative_paths_reach_workers_whose_working_folder_differs(cluster, library, tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(library.parent)  # the workers' working folder stays where they started
    report = tmp_path / "r.csv"
    result = _run("tag", "music", "--model", str(tiny_model_path), "--scheduler", cluster.scheduler_address,
                  "--report", str(report), "-q")
    assert result.exit_code == 0, result.output + result.stderr
    rows = list(csv.DictReader(report.open(encoding="utf-8")))
    assert sorted(r["path"] for r in rows) == [f"music{os.sep}{p.name}" for p in sorted(library.iterdir())]
    assert {r["status"] for r in rows} == {"tagged"}
    assert all(_values(p) == EXPECTED for p in library.iterdir())
