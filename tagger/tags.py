"""Read, write and remove our three instrument fields, without ever risking the audio.

Each field is declared once (FIELDS); where it lives is decided by one storage style
per tag kind (id3 / vorbis / mp4), chosen from the file's content via mutagen's sniffing.

Writes go in place only when the new tags fit the existing padding (nothing moves);
otherwise a tagged copy is verified and atomically renamed over the original.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import mutagen
from mutagen import id3
from mutagen.aiff import AIFF
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, AtomDataType, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from tagger.lifetime import remove_stale_temps

FIELD_INSTRUMENTS = "INSTRUMENTS"
FIELD_SCORES = "INSTRUMENTS_SCORES"
FIELD_MODEL = "INSTRUMENTS_MODEL"
FIELDS: tuple[str, ...] = (FIELD_INSTRUMENTS, FIELD_SCORES, FIELD_MODEL)

TEMP_MARKER = ".tagger-tmp"
_TEMP_RE = re.compile(r"^\..*" + re.escape(TEMP_MARKER) + r"-(\d+)-[0-9a-f]+$")
_V23_SEP = "; "
_COPY_PADDING = 4096  # room left in a rewritten copy, so later re-tags can go in place
_MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"
_VERIFY_DECODE_PACKETS = 32  # decoding the start proves codec headers survived; packets prove the rest


class TagError(Exception):
    """A file could not be read or tagged; the message is one human-readable line."""


class _NoRoom(Exception):
    """Raised from mutagen's padding callback to abort an in-place save before any byte is written."""


@dataclass(frozen=True)
class TagState:
    instruments: tuple[str, ...]
    scores: str | None
    model: str | None

    @property
    def is_ours(self) -> bool:
        return self.model is not None

    @property
    def has_user_instruments(self) -> bool:
        return bool(self.instruments) and self.model is None


# ---------------------------------------------------------------- storage styles


class _Storage(Protocol):
    KEY: str  # the field's key in this tag kind, as a format string of the field name

    def get(self, tags: Any, field: str) -> list[str]: ...

    def put(self, tags: Any, field: str, values: list[str], *, v23: bool) -> None: ...

    def delete(self, tags: Any, field: str) -> None: ...


class _ID3Storage:
    """TXXX:<FIELD>, several NUL-separated values (v2.4); v2.3 has no multi-value, so values are joined."""

    KEY = "TXXX:{}"

    def _keys(self, tags: id3.ID3, field: str) -> list[str]:
        return [k for k in tags.keys() if k.upper() == self.KEY.format(field).upper()]

    def get(self, tags: id3.ID3, field: str) -> list[str]:
        return [str(t) for k in self._keys(tags, field) for t in tags[k].text]

    def put(self, tags: id3.ID3, field: str, values: list[str], *, v23: bool) -> None:
        self.delete(tags, field)
        text = [_V23_SEP.join(values)] if v23 else values
        tags.add(id3.TXXX(encoding=id3.Encoding.UTF8, desc=field, text=text))

    def delete(self, tags: id3.ID3, field: str) -> None:
        for key in self._keys(tags, field):
            del tags[key]


class _VorbisStorage:
    """One Vorbis comment per value (FLAC, Ogg Vorbis, Opus); mutagen matches keys case-insensitively."""

    KEY = "{}"

    def get(self, tags: Any, field: str) -> list[str]:
        return list(tags[field]) if field in tags else []

    def put(self, tags: Any, field: str, values: list[str], *, v23: bool) -> None:
        tags[field] = values

    def delete(self, tags: Any, field: str) -> None:
        if field in tags:
            del tags[field]


class _MP4Storage:
    """Freeform iTunes atom, one UTF-8 data atom per value."""

    KEY = "----:com.apple.iTunes:{}"

    def _keys(self, tags: Any, field: str) -> list[str]:
        return [k for k in tags.keys() if k.lower() == self.KEY.format(field).lower()]

    def get(self, tags: Any, field: str) -> list[str]:
        return [bytes(v).decode("utf-8", "replace") for k in self._keys(tags, field) for v in tags[k]]

    def put(self, tags: Any, field: str, values: list[str], *, v23: bool) -> None:
        self.delete(tags, field)
        tags[self.KEY.format(field)] = [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]

    def delete(self, tags: Any, field: str) -> None:
        for key in self._keys(tags, field):
            del tags[key]


_STORAGE: dict[str, _Storage] = {"id3": _ID3Storage(), "vorbis": _VorbisStorage(), "mp4": _MP4Storage()}

# mutagen file class -> tag kind. Only classes whose in-place save was verified (tests) are listed.
_KINDS: dict[type, str] = {
    MP3: "id3", WAVE: "id3", AIFF: "id3",
    FLAC: "vorbis", OggVorbis: "vorbis", OggOpus: "vorbis",
    MP4: "mp4",
}


def storage_keys(field: str) -> dict[str, str]:
    """Where ``field`` lives per tag kind, e.g. ``{"id3": "TXXX:INSTRUMENTS", ...}``; the beets
    plugin builds its media fields from this, so both always read and write the same keys."""
    return {kind: store.KEY.format(field) for kind, store in _STORAGE.items()}


def kind_formats() -> dict[str, list[str]]:
    """mutagen class names per tag kind (``{"id3": ["MP3", "WAVE", "AIFF"], ...}``): the files we tag."""
    formats: dict[str, list[str]] = {kind: [] for kind in _STORAGE}
    for cls, kind in _KINDS.items():
        formats[kind].append(cls.__name__)
    return formats


# ---------------------------------------------------------------- opening


def _os_message(exc: BaseException) -> str | None:
    """Find an OSError in the exception chain (mutagen wraps them) and phrase it."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            if cur.errno == errno.ENOSPC:
                return "disk full"
            if cur.errno in (errno.EACCES, errno.EPERM):
                return "permission denied"
            if cur.errno == errno.EROFS:
                return "read-only file system"
            if cur.errno == errno.ENOENT:
                return "file not found"
            return f"I/O error: {cur.strerror or cur}"
        cur = cur.__cause__ or cur.__context__
    return None


def _open(path: str) -> tuple[Any, str]:
    """Open with mutagen by content; returns (file, kind) or raises TagError."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise TagError(_os_message(exc) or str(exc)) from exc
    if not head:
        raise TagError("empty file")
    if head == _MATROSKA_MAGIC:
        raise TagError("Matroska container: tags not supported")
    try:
        audio = mutagen.File(path)
    except Exception as exc:  # mutagen raises many types for damaged files; none may escape as a traceback
        raise TagError(_os_message(exc) or "not an audio file mutagen can tag (damaged or unknown format)") from exc
    if audio is None:
        raise TagError("not an audio file mutagen can tag")
    kind = _KINDS.get(type(audio))
    if kind is None:
        raise TagError(f"tags not supported for {type(audio).__name__} files")
    return audio, kind


def _is_v23(audio: Any, kind: str) -> bool:
    return kind == "id3" and audio.tags is not None and tuple(audio.tags.version[:2]) == (2, 3)


def _state(audio: Any, kind: str) -> TagState:
    if audio.tags is None:
        return TagState((), None, None)
    store = _STORAGE[kind]
    # Split on ";" too: v2.3 files and other taggers store lists joined in one value.
    raw = store.get(audio.tags, FIELD_INSTRUMENTS)
    instruments = tuple(p.strip() for v in raw for p in v.split(";") if p.strip())
    scores = store.get(audio.tags, FIELD_SCORES)
    model = store.get(audio.tags, FIELD_MODEL)
    return TagState(instruments, _V23_SEP.join(scores) if scores else None, model[0] if model else None)


def read_tags(path: str | os.PathLike[str]) -> TagState:
    audio, kind = _open(os.fspath(path))
    return _state(audio, kind)


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse early (before inference) when a write could not succeed."""
    real = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(real)
    except OSError as exc:
        raise TagError(_os_message(exc) or str(exc)) from exc
    if not stat.S_ISREG(st.st_mode):
        raise TagError("not a regular file")
    # Mode bits first: root passes os.access() even on a file the user marked read-only.
    if not st.st_mode & 0o222:
        raise TagError("read-only file")
    if not os.access(real, os.W_OK):
        raise TagError("no permission to write the file")
    folder = os.path.dirname(real) or "."
    dst = os.stat(folder)
    if not dst.st_mode & 0o222 or not os.access(folder, os.W_OK | os.X_OK):
        raise TagError("folder not writable (needed for a safe temporary copy)")


# ---------------------------------------------------------------- writing


def scores_text(instruments: Sequence[str], scores: Mapping[str, float]) -> str:
    return _V23_SEP.join(f"{name}={float(scores[name]):.2f}" for name in instruments if name in scores)


def _clean_labels(instruments: Sequence[str]) -> list[str]:
    labels = [str(i).strip().lower() for i in instruments]
    for label in labels:
        if not label or any(c in label for c in ";=\x00"):
            raise ValueError(f"invalid instrument label {label!r}")
    return labels


def _apply(audio: Any, kind: str, values: dict[str, list[str]]) -> None:
    """Set (non-empty list) or delete (empty list) each of our fields."""
    if audio.tags is None:
        audio.add_tags()
    store = _STORAGE[kind]
    v23 = _is_v23(audio, kind)
    for field, vals in values.items():
        if vals:
            store.put(audio.tags, field, vals, v23=v23)
        else:
            store.delete(audio.tags, field)


def _save(audio: Any, kind: str, padding: Callable[[Any], int]) -> None:
    if kind == "id3" and _is_v23(audio, kind):
        # Plain save() would upgrade the file to v2.4; keep what the user had.
        audio.tags.update_to_v23()
        audio.save(v2_version=3, padding=padding)
    else:
        audio.save(padding=padding)


def _fit_or_abort(info: Any) -> int:
    # Keep the tag region exactly its current size, so no audio byte moves.
    if info.padding < 0:
        raise _NoRoom()
    return int(info.padding)


def _generous(info: Any) -> int:
    return max(int(info.padding), _COPY_PADDING)


def _in_place_allowed(audio: Any) -> bool:
    if audio.tags is None:
        return False  # WAVE/AIFF insert an ID3 chunk before asking for padding
    if isinstance(audio, OggOpus) and getattr(audio.tags, "_pad_data", b""):
        return False  # mutagen skips the padding callback for Opus with preserved extra data
    return True


def _try_in_place(audio: Any, kind: str, values: dict[str, list[str]]) -> bool:
    """Apply values and save only if they fit the existing room; False (file untouched) otherwise."""
    allowed = _in_place_allowed(audio)  # judged before _apply, which adds missing tags
    _apply(audio, kind, values)
    if not allowed:
        return False
    try:
        _save(audio, kind, _fit_or_abort)
    except _NoRoom:
        return False
    return True


def _audio_fingerprint(path: str, decode: bool) -> tuple[int, str, int]:
    """(packet count, hash of all audio packet payloads, decoded samples of the first packets)."""
    import av  # local: PyAV is slow to import and only needed on the copy path

    digest = hashlib.blake2b(digest_size=16)
    count = 0
    samples = 0
    with av.open(path) as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            digest.update(bytes(packet))
            if decode and count < _VERIFY_DECODE_PACKETS:
                samples += sum(frame.samples for frame in packet.decode())
            count += 1
    return count, digest.hexdigest(), samples


def _temp_name(real: str) -> str:
    folder, name = os.path.split(real)
    suffix = f"{TEMP_MARKER}-{os.getpid()}-{secrets.token_hex(4)}"
    base = name.encode("utf-8", "surrogateescape")[: 200].decode("utf-8", "ignore")  # stay under NAME_MAX
    return os.path.join(folder, f".{base}{suffix}")


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _same_stat(st: os.stat_result, ref: tuple[int, int]) -> bool:
    return (st.st_size, st.st_mtime_ns) == ref


def _write_copy(real: str, audio: Any, kind: str, values: dict[str, list[str]], st: os.stat_result,
                preserve_mtime: bool) -> None:
    if st.st_nlink > 1:
        # Renaming a copy over the file would silently split the hard link.
        raise TagError("file has several hard links and tags do not fit in place; not rewriting it")
    tmp = _temp_name(real)
    try:
        shutil.copyfile(real, tmp)
        shutil.copystat(real, tmp)  # mode, times, xattrs (ACLs)
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass  # not permitted for ordinary users when the owner differs; mode is kept anyway
        copy = type(audio)(tmp)  # same class: the temp name has no extension to sniff
        _apply(copy, kind, values)
        _save(copy, kind, _generous)
        before = _audio_fingerprint(real, decode=False)
        after = _audio_fingerprint(tmp, decode=True)
        if before[:2] != after[:2] or (after[0] and not after[2]):
            raise TagError("tagged copy failed the audio check; original left untouched")
        if isinstance(audio, FLAC) and FLAC(tmp).info.md5_signature != audio.info.md5_signature:
            raise TagError("tagged copy changed the FLAC audio checksum; original left untouched")
        if preserve_mtime:
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if not _same_stat(os.stat(real), (st.st_size, st.st_mtime_ns)):
            raise TagError("file changed during the run")
        os.replace(tmp, real)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, TagError):
            raise
        if isinstance(exc, Exception):
            raise TagError(_os_message(exc) or f"could not write tags ({type(exc).__name__}: {exc})") from exc
        raise  # KeyboardInterrupt etc.: temp removed, original untouched
    _fsync_dir(os.path.dirname(real))


def _write_fields(path: str | os.PathLike[str], values: dict[str, list[str]], *, preserve_mtime: bool,
                  expected_stat: tuple[int, int] | None) -> bool:
    """Write our fields safely; returns False when the file already held exactly these values."""
    real = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(real)
    except OSError as exc:
        raise TagError(_os_message(exc) or str(exc)) from exc
    if expected_stat is not None and not _same_stat(st, expected_stat):
        raise TagError("file changed during the run")
    check_writable(real)
    audio, kind = _open(real)
    if audio.tags is not None:
        store = _STORAGE[kind]
        current = {f: store.get(audio.tags, f) for f in FIELDS}
        wanted = dict(current, **values)
        if _is_v23(audio, kind) and values.get(FIELD_INSTRUMENTS):
            wanted[FIELD_INSTRUMENTS] = [_V23_SEP.join(values[FIELD_INSTRUMENTS])]
        if current == wanted:
            return False  # nothing to do: leave bytes and mtime alone
    try:
        done = _try_in_place(audio, kind, values)
    except Exception as exc:
        raise TagError(_os_message(exc) or f"could not write tags ({type(exc).__name__}: {exc})") from exc
    if done:
        if preserve_mtime:
            os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))
        return True
    audio, kind = _open(real)  # fresh object: the aborted save may have mutated in-memory state (v2.3)
    _write_copy(real, audio, kind, values, st, preserve_mtime)
    return True


def write_tags(path: str | os.PathLike[str], *, instruments: Sequence[str], scores: Mapping[str, float],
               model_id: str, preserve_mtime: bool = False, expected_stat: tuple[int, int] | None = None) -> None:
    """Write our three fields (replacing any old ones); empty instruments = "analysed, nothing found"."""
    if not model_id:
        raise ValueError("model_id must be a non-empty string")
    labels = _clean_labels(instruments)
    lowered = {str(k).strip().lower(): v for k, v in scores.items()}
    score_text = scores_text(labels, lowered)
    values = {
        FIELD_INSTRUMENTS: labels,
        FIELD_SCORES: [score_text] if score_text else [],
        FIELD_MODEL: [model_id],
    }
    _write_fields(path, values, preserve_mtime=preserve_mtime, expected_stat=expected_stat)


def remove_tags(path: str | os.PathLike[str], *, dry_run: bool = False) -> bool:
    """Remove our three fields when INSTRUMENTS_MODEL marks them as ours; True if (would be) removed."""
    if not read_tags(path).is_ours:
        return False
    if dry_run:
        return True
    _write_fields(path, {f: [] for f in FIELDS}, preserve_mtime=False, expected_stat=None)
    return True


def clean_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Delete tag-write temp files left by killed runs; those of a still-running process stay."""
    return remove_stale_temps(folder, _TEMP_RE)

