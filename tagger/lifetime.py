"""Process lifetime: a run ends cleanly on SIGTERM / SIGHUP, and no worker outlives it.

* ``stop_on_signals()`` turns SIGTERM and SIGHUP into ``Terminated``, a KeyboardInterrupt,
  so they stop a run the way Ctrl-C does (writes in flight finish, the summary is printed)
  and the command exits 128 + the signal number.
* ``die_with_parent()`` runs in each worker process: the worker ends as soon as its parent
  dies, however it dies (kill -9 included), instead of lingering forever.
* ``remove_stale_temps()``: temp files carry their writer's pid, so the next run removes
  those of killed runs and leaves those of runs still going.
* ``remove_stale_pool_temps()``: the same for joblib's: a pool's semaphores and memmapping
  folders, which joblib removes itself unless the whole process group was killed.
  ``worker_pool()`` starts a joblib pool with both: leftovers removed, workers armed.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCH_INTERVAL_S = 0.5
_armed_in: int | None = None  # pid of the process die_with_parent() armed (a fork child inherits it)


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP received. A KeyboardInterrupt, so every Ctrl-C path handles it too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_terminated(signum: int, _frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers
        return
    previous = {s: signal.signal(s, _raise_terminated) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def die_with_parent(main: int | None = None, *, use_prctl: bool = True) -> None:
    """End this process when its parent dies (call it first thing in a worker).

    ``main``: the pid of the process the worker serves, taken before it was started, so a
    main process that died before this call is noticed too; called in that process itself
    (a pool task run inline), it does nothing. The parent may be another
    process that lives as long as the main one (a multiprocessing fork server). Linux: the
    kernel sends SIGKILL on the parent's death (PR_SET_PDEATHSIG). Elsewhere, or if that
    fails, a daemon thread polls the parent pid. The parent-death signal fires when the
    parent *thread* that started us exits, which is the main thread for our loaders.
    """
    global _armed_in
    if main == os.getpid():
        return  # the task runs inline in the main process (jobs=1): it must outlive its shell
    if _armed_in == os.getpid():
        return  # already armed in this process (a pool worker calls this for every task)
    _armed_in = os.getpid()
    parent = os.getppid()
    if use_prctl and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            _exit_if_gone(parent, main)  # died before the signal was armed
            return
    _exit_if_gone(parent, main)
    threading.Thread(target=_watch_parent, args=(parent,), name="tagger-parent-watch", daemon=True).start()


def pool_initializer(main: int) -> functools.partial:
    """``initializer=`` for a joblib (loky) pool started by process ``main``: each worker arms
    ``die_with_parent`` as it starts, so one that never got a task (the run was killed first)
    does not idle on for loky's 300-s timeout. No parent-death signal: loky starts workers from
    a helper thread, whose exit would fire it."""
    return functools.partial(die_with_parent, main, use_prctl=False)


def _exit_if_gone(parent: int, main: int | None) -> None:
    if os.getppid() != parent or (main is not None and not pid_alive(main)):
        os._exit(1)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (this one included), whoever owns it."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def remove_stale_temps(folder: str | os.PathLike[str], pattern: re.Pattern[str], *,
                       folders_too: bool = False, own_only: bool = False) -> int:
    """Delete the files of ``folder`` whose names match ``pattern`` (group 1: the pid of the
    process that wrote them) when that process is gone. Returns how many were deleted.
    ``folders_too``: matching folders go too, with their contents. ``own_only``: only this
    user's (another user's may come from another pid namespace, where its pid looks dead)."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or pid_alive(int(match.group(1))):
            continue
        try:
            is_folder = folders_too and entry.is_dir(follow_symlinks=False)
            if not (is_folder or entry.is_file(follow_symlinks=False)):
                continue
            if own_only and entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            if is_folder:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


# joblib (loky) names a pool's semaphores and memmapping folders after the creating process:
# /dev/shm/sem.loky-<pid>-<random>, <temp folder>/joblib_memmapping_folder_<pid>_<ids>.
_POOL_TEMP = re.compile(r"(?:sem\.loky-|joblib_memmapping_folder_)(\d+)[-_]")


def remove_stale_pool_temps(folders: list[str | os.PathLike[str]] | None = None) -> int:
    """Delete joblib pool leftovers (semaphores, memmapping folders) of processes that are
    gone: a run whose whole process group got kill -9 leaves them, since the resource
    tracker that would have removed them died too. Returns how many were deleted.
    ``folders``: where to look (default: /dev/shm, the temp folder and $JOBLIB_TEMP_FOLDER)."""
    if folders is None:
        folders = ["/dev/shm", tempfile.gettempdir(), os.environ.get("JOBLIB_TEMP_FOLDER", "")]
    return sum(remove_stale_temps(folder, _POOL_TEMP, folders_too=True, own_only=True)
               for folder in dict.fromkeys(os.fspath(f) for f in folders if f))


def worker_pool(n_jobs: int, **options):
    """A joblib ``Parallel`` whose workers end with this process however it dies
    (``pool_initializer``), started after the leftovers of killed pools are removed."""
    from joblib import Parallel  # tagging starts no joblib pool: keep it out of its start-up

    remove_stale_pool_temps()  # of runs killed with their whole process group
    return Parallel(n_jobs=n_jobs, initializer=pool_initializer(os.getpid()), **options)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:  # once the parent is gone we are re-parented (to init or a subreaper)
        time.sleep(_WATCH_INTERVAL_S)
    os._exit(1)
