"""Walk the paths given on the command line and list the audio files to tag.

Recursive, sorted, deterministic; hidden files and folders skipped unless asked; never
follows a symlink loop and never yields the same file twice.
"""
from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

AUDIO_EXTENSIONS = frozenset(
    {".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".m4b", ".wav", ".aif", ".aiff", ".aifc"}
)


def is_audio_name(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


def _matches(path: Path, patterns: Sequence[str]) -> bool:
    """A glob matches the file name or the whole path (``*.mp3``, ``*/Podcasts/*``)."""
    text = path.as_posix()
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(text, p) for p in patterns)


def find_audio_files(
    paths: Sequence[str | os.PathLike],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
) -> Iterator[Path]:
    """Yield audio files under ``paths`` (files given directly are yielded as they are)."""
    seen: set[tuple[int, int]] = set()

    def accept(path: Path) -> bool:
        if include and not _matches(path, include):
            return False
        if exclude and _matches(path, exclude):
            return False
        try:
            st = path.stat()
        except OSError:
            return True  # let the tagging step report it with its reason
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return False
        seen.add(key)
        return True

    for root in paths:
        root = Path(root)
        if not root.is_dir():
            if accept(root):
                yield root
            continue
        visited_dirs: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            st = os.stat(dirpath)
            if (st.st_dev, st.st_ino) in visited_dirs:  # symlink loop or a folder linked twice
                dirnames[:] = []
                continue
            visited_dirs.add((st.st_dev, st.st_ino))
            dirnames[:] = sorted(d for d in dirnames if hidden or not d.startswith("."))
            for name in sorted(filenames):
                if (not hidden and name.startswith(".")) or not is_audio_name(name):
                    continue
                path = Path(dirpath) / name
                if accept(path):
                    yield path


def folders_of(files: Sequence[Path]) -> list[Path]:
    """Distinct parent folders, in first-seen order (for cleaning stale temp files)."""
    return list(dict.fromkeys(f.parent for f in files))
