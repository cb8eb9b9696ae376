"""No process outlives its run: `tagger tag` killed with -9, SIGTERM or SIGHUP mid-run.

Each case runs the installed package as ``python -m tagger`` on a library of real files,
records the decode workers (children of the run in /proc) just before the signal, and checks
that none of them is left afterwards and that every file is whole.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from media import decoded_audio, make_audio_file, read_other_tags
from tagger import tags

EXPECTED = {"piano", "bass"}  # what the tiny model's thresholds (0.0 / 1.0) always select
N_FILES = 60
WORKER_GRACE_S = 2.0  # workers must be gone this soon after the main process died

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to see child processes")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[1])


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[1] == pid and st[0] != "Z":
            out.add(int(entry.name))
    return out


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if (st := _stat(pid)) is not None and st[0] != "Z"}  # a zombie has exited


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := _alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "source.flac"
    return make_audio_file(path, "flac", seconds=4.0, seed=5)


@pytest.fixture
def folder(tmp_path, source) -> Path:
    music = tmp_path / "music"
    music.mkdir()
    for i in range(N_FILES):
        shutil.copy(source, music / f"{i:02d}.flac")
    return music


def _start(folder: Path, model: Path, *extra: str, stderr=subprocess.DEVNULL) -> tuple[subprocess.Popen, set[int]]:
    """Start a run; return it and its decode workers once it is tagging files."""
    mtimes = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tagger", "tag", str(folder), "--model", str(model), "-j", "2", *extra],
        stdout=subprocess.DEVNULL, stderr=stderr, text=True, start_new_session=True,  # its own process group
    )
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while proc.poll() is None and time.monotonic() < deadline:
        workers |= _children(proc.pid)
        if len(workers) >= 2 and any(p.stat().st_mtime_ns != m for p, m in mtimes.items()):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be signalled: make the library bigger"
    assert len(workers) == 2, f"expected two decode workers, saw {workers}"
    return proc, workers


def _assert_whole(folder: Path, source: Path) -> list[Path]:
    """Every file decodes to the original audio with the original tags, and ours are absent or complete."""
    audio, other = decoded_audio(source), read_other_tags(source)
    tagged = []
    for path in sorted(folder.glob("*.flac")):
        np.testing.assert_array_equal(decoded_audio(path), audio)
        assert read_other_tags(path) == other
        state = tags.read_tags(path)
        if state.model is None:
            assert not state.instruments and state.scores is None, path
        else:
            assert set(state.instruments) == EXPECTED and state.model.startswith("tiny 1 "), path
            tagged.append(path)
    return tagged


def test_kill_9_leaves_no_decode_worker_behind(folder, source, tiny_model_path):
    proc, workers = _start(folder, tiny_model_path, "-q")
    try:
        proc.kill()
        proc.wait(timeout=30)
        left = _wait_gone(workers, WORKER_GRACE_S)
        assert not left, f"decode workers {sorted(left)} outlived the killed run"
    finally:
        for pid in _alive(workers):  # never leave them to the rest of the suite
            os.kill(pid, signal.SIGKILL)
    _assert_whole(folder, source)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_end_the_run_like_ctrl_c(folder, source, tiny_model_path, tmp_path, sig):
    """SIGTERM to the process (timeout, docker stop); SIGHUP to its group (a closed terminal)."""
    report = tmp_path / "report.jsonl"
    proc, workers = _start(folder, tiny_model_path, "--report", str(report), stderr=subprocess.PIPE)
    try:
        if sig == signal.SIGHUP:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=60)
        left = _wait_gone(workers, WORKER_GRACE_S)
    finally:
        for pid in _alive(workers):  # (a survivor would also hold the stderr pipe open)
            os.kill(pid, signal.SIGKILL)
    err = proc.stderr.read()
    assert proc.returncode == 128 + sig, err
    assert not left, f"decode workers {sorted(left)} outlived the run"
    assert "Traceback" not in err
    assert "tagger summary (interrupted)" in err and "not reached" in err
    tagged = _assert_whole(folder, source)
    assert 0 < len(tagged) < N_FILES  # stopped mid-run, not before and not after
    rows = [json.loads(line) for line in report.read_text().splitlines()]  # flushed, every line whole
    assert {Path(r["path"]) for r in rows if r["status"] == "tagged"} == set(tagged)
    assert not [p for p in folder.iterdir() if tags.TEMP_MARKER in p.name]  # the write under way finished


@pytest.mark.parametrize("fallback", [False, True], ids=["prctl", "watcher-thread"])
def test_a_worker_dies_with_its_parent(tmp_path, fallback):
    """die_with_parent(): Linux's parent-death signal, and the portable watcher thread on its own.

    The main pid handed over is not the parent's (as with a fork server): that alone must not
    end the worker."""
    code = f"""
import os, sys, time
from tagger import lifetime
main = os.getppid()
pid = os.fork()
if pid == 0:
    lifetime.die_with_parent(main, use_prctl={not fallback})
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        time.sleep(0.3)  # let the child arm itself
        assert _alive({child})
        proc.kill()
        proc.wait()
        assert not _wait_gone({child}, WORKER_GRACE_S), "the child outlived its parent"
    finally:
        for pid in _alive({child}):
            os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_main_process_already_died_exits_at_once():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid names no process now
    code = f"from tagger import lifetime; lifetime.die_with_parent({dead.pid}); print('still running')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "still running" not in proc.stdout


def test_inline_work_survives_the_shell_that_started_it(tmp_path):
    """`nohup tagger train --jobs 1 ... &`: pool tasks then run in the main process itself,
    which must not take its starting shell's exit for a dead parent and end itself."""
    wav = make_audio_file(tmp_path / "clip.wav", "wav", seconds=0.5, tags=False, picture=False)
    out = tmp_path / "out.txt"
    code = (
        "import time; from train.datasets import Clip; from train.loop import load_audio\n"
        f"audio = load_audio([Clip({str(wav)!r}, ())], 16000, jobs=1)\n"
        "open(__import__('sys').argv[1], 'w').close()  # loaded while the shell still runs\n"
        "time.sleep(3.0)  # the shell exits meanwhile; a watcher thread would end us within 0.5 s\n"
        f"open({str(out)!r}, 'w').write(str(len(audio)))\n"
    )
    loaded = tmp_path / "loaded"
    # The shell starts the tagger process in the background and exits once it has loaded.
    script = '"$0" -c "$1" "$2" </dev/null >/dev/null 2>&1 & while [ ! -e "$2" ]; do sleep 0.1; done'
    subprocess.run(["sh", "-c", script, sys.executable, code, str(loaded)], check=True, timeout=120)
    deadline = time.monotonic() + 30
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.2)
    assert out.exists() and out.read_text() == "1", "the inline worker ended itself when its shell exited"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(pid: int) -> set[int]:
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for p in frontier for c in _children(p)} - found
        found |= frontier
    return found


def test_kill_9_of_a_render_leaves_no_pool_worker(tmp_path):
    """`tagger dataset render -j 2` runs joblib (loky) workers: they too end with the run."""
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tagger", "dataset", "render", str(out), "--tracks", "40", "--seconds", "2",
         "--soundfont", "timgm6mb", "-j", "2", "--no-augment"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    procs: set[int] = set()
    while proc.poll() is None and time.monotonic() < deadline:
        procs |= _descendants(proc.pid)
        if len(list(out.glob("Track*/metadata.yaml"))) >= 4:  # both workers have taken tasks by now
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the render ended before it could be killed"
    procs |= _descendants(proc.pid)
    assert len(procs) >= 2, f"expected pool workers, saw {procs}"
    try:
        proc.kill()
        proc.wait(timeout=30)
        left = _wait_gone(procs, WORKER_GRACE_S + 1.0)  # + the helpers that exit when the workers do
        assert not left, f"processes {sorted(left)} outlived the killed render"
    finally:
        for pid in _alive(procs):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_ends_pool_workers_that_never_ran_our_task():
    """A joblib pool started with pool_initializer(): its workers are armed as they start, so
    they end with a killed main process even while they run a task that never arms itself (as a
    worker that had no task yet would otherwise idle for loky's 300 s)."""
    code = """
import os, time
from joblib import Parallel, delayed
from tagger.lifetime import pool_initializer
Parallel(n_jobs=2, initializer=pool_initializer(os.getpid()))(delayed(time.sleep)(60) for _ in range(2))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    procs: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            procs |= _descendants(proc.pid)
            workers = {p for p in procs if "popen_loky" in _cmdline(p)}  # not loky's resource tracker
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, f"expected two pool workers, saw {procs}"
        time.sleep(1.0)  # let them start their tasks
        proc.kill()
        proc.wait(timeout=30)
        left = _wait_gone(workers, WORKER_GRACE_S + 1.0)
        assert not left, f"pool workers {sorted(left)} outlived the killed main process"
    finally:
        for pid in _alive(procs):
            os.kill(pid, signal.SIGKILL)


def _pool_temps(pid: int) -> list[str]:
    """joblib's leftovers of process ``pid`` in /dev/shm (semaphores, memmapping folders)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return []
    return sorted(p.name for p in shm.iterdir() if p.name.startswith((f"sem.loky-{pid}-", f"joblib_memmapping_folder_{pid}_")))


def test_the_next_render_removes_the_pool_temps_of_a_render_killed_with_its_process_group(tmp_path):
    """kill -9 of the whole group kills loky's resource tracker too, so nobody removes the
    pool's semaphores and memmapping folders; the next render does, before its own pool starts."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("needs /dev/shm, where joblib puts its semaphores")
    render = [sys.executable, "-m", "tagger", "dataset", "render", "--seconds", "2", "--soundfont", "timgm6mb",
              "-j", "2", "--no-augment"]
    out = tmp_path / "ds"
    proc = subprocess.Popen(render + [str(out), "--tracks", "40"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(list(out.glob("Track*/metadata.yaml"))) < 4:
        time.sleep(0.05)
    assert proc.poll() is None, "the render ended before it could be killed"
    procs = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _wait_gone(procs, WORKER_GRACE_S)
    left = _pool_temps(proc.pid)
    assert left, "the killed render left no pool temps: nothing to check"
    subprocess.run(render + [str(tmp_path / "next"), "--tracks", "2"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert _pool_temps(proc.pid) == [], f"{left} survived the next run"


def test_remove_stale_pool_temps_keeps_those_of_live_processes(tmp_path):
    from tagger.lifetime import remove_stale_pool_temps
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getpid()
    for pid in (dead.pid, live):
        (tmp_path / f"sem.loky-{pid}-abcd1234").write_bytes(b"x" * 32)
        (tmp_path / f"joblib_memmapping_folder_{pid}_0f0f_1e1e").mkdir()
        (tmp_path / f"joblib_memmapping_folder_{pid}_0f0f_1e1e" / "array.pkl").write_bytes(b"x")
    (tmp_path / f"song-{dead.pid}.flac").write_bytes(b"x")  # not joblib's: never touched
    kept = [f"sem.loky-{live}-abcd1234", f"joblib_memmapping_folder_{live}_0f0f_1e1e", f"song-{dead.pid}.flac"]
    if os.getuid() == 0:  # root can make a leftover of another user, which is not ours to remove
        (tmp_path / f"sem.loky-{dead.pid}-otheruser").write_bytes(b"x" * 32)
        os.chown(tmp_path / f"sem.loky-{dead.pid}-otheruser", 65534, 65534)
        kept.append(f"sem.loky-{dead.pid}-otheruser")
    assert remove_stale_pool_temps([tmp_path]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
