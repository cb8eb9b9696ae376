"""tagger.tags on real files of every supported format, generated at test time."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mutagen
import numpy as np
import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.mp4 import MP4, MP4FreeForm

from tagger import tags as T
from media import FORMATS, decoded_audio, make_audio_file, make_matroska_opus, read_other_tags

REPO = Path(__file__).resolve().parents[1]
LABELS = ["piano", "drums", "bass"]
SCORES = {"piano": 0.97, "drums": 0.91, "bass": 0.5}
MODEL = "tagger-default 1 ab12cd34"
# Formats whose Vorbis comments FFmpeg joins with ";" (it shows only the first value of ID3/MP4 lists).
FFPROBE_JOINS = {"flac", "ogg", "opus"}


def _file(tmp_path: Path, fmt: str, **kw: object) -> Path:
    return make_audio_file(tmp_path / f"song.{fmt}", fmt, **kw)  # type: ignore[arg-type]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, labels: list[str] = LABELS, **kw: object) -> None:
    scores = {k: SCORES.get(k, 0.5) for k in labels}
    T.write_tags(path, instruments=labels, scores=scores, model_id=MODEL, **kw)  # type: ignore[arg-type]


def _big_labels(n: int = 400) -> list[str]:
    # Far more than the ~1 KiB padding mutagen leaves, so the in-place write cannot fit.
    return [f"instrument-with-a-long-name-{i}" for i in range(n)]


def _raw_values(path: Path, field: str) -> list[str]:
    """Our field read with plain mutagen, in each format's native spelling."""
    f = mutagen.File(path)
    if isinstance(f.tags, ID3):
        frames = f.tags.getall(f"TXXX:{field}")
        return [str(t) for fr in frames for t in fr.text]
    if isinstance(f, MP4):
        return [bytes(v).decode() for v in f.tags.get(f"----:com.apple.iTunes:{field}", [])]
    return list(f.tags.get(field, []))


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if T.TEMP_MARKER in p.name]


# ---------------------------------------------------------------- per-format round trip


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_preserves_everything_else(tmp_path: Path, fmt: str) -> None:
    path = _file(tmp_path, fmt)
    other, audio = read_other_tags(path), decoded_audio(path)
    inode = path.stat().st_ino
    assert T.read_tags(path) == T.TagState((), None, None)

    _write(path)

    state = T.read_tags(path)
    assert state.instruments == tuple(LABELS)
    assert state.scores == "piano=0.97; drums=0.91; bass=0.50"
    assert state.model == MODEL and state.is_ours and not state.has_user_instruments
    assert _raw_values(path, "INSTRUMENTS") == LABELS  # native multi-value, in order
    assert _raw_values(path, "INSTRUMENTS_MODEL") == [MODEL]
    assert read_other_tags(path) == other
    np.testing.assert_array_equal(decoded_audio(path), audio)
    assert path.stat().st_ino == inode, "small tags should fit the padding and be written in place"
    assert not _temps(tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_copy_path_for_big_tags(tmp_path: Path, fmt: str) -> None:
    path = _file(tmp_path, fmt)
    other, audio = read_other_tags(path), decoded_audio(path)
    md5 = FLAC(path).info.md5_signature if fmt == "flac" else None
    inode = path.stat().st_ino
    os.chmod(path, 0o640)

    _write(path, _big_labels())

    assert path.stat().st_ino != inode, "big tags must go through the temp copy + rename"
    assert path.stat().st_mode & 0o777 == 0o640
    assert T.read_tags(path).instruments == tuple(_big_labels())
    assert read_other_tags(path) == other
    np.testing.assert_array_equal(decoded_audio(path), audio)
    if md5 is not None:
        assert md5 != 0 and FLAC(path).info.md5_signature == md5
    assert not _temps(tmp_path)
    # The copy got generous padding: the next ordinary write goes in place.
    inode = path.stat().st_ino
    _write(path)
    assert path.stat().st_ino == inode and T.read_tags(path).instruments == tuple(LABELS)


@pytest.mark.parametrize("tagged", [True, False], ids=["tagged", "untagged"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_aborted_in_place_attempt_changes_no_byte(tmp_path: Path, fmt: str, tagged: bool) -> None:
    path = _file(tmp_path, fmt, tags=tagged, picture=tagged)
    before = _sha(path)
    audio, kind = T._open(str(path))
    assert T._try_in_place(audio, kind, {T.FIELD_INSTRUMENTS: _big_labels(), T.FIELD_MODEL: [MODEL]}) is False
    assert _sha(path) == before


@pytest.mark.parametrize("cls_fmt", ["wav", "aiff"])
def test_why_wav_aiff_without_id3_chunk_never_go_in_place(tmp_path: Path, cls_fmt: str) -> None:
    # mutagen inserts the ID3 chunk before asking for padding, so an abort would come too late.
    path = _file(tmp_path, cls_fmt, tags=False, picture=False)
    before = _sha(path)
    f = mutagen.File(path)
    f.add_tags()
    with pytest.raises(T._NoRoom):
        f.save(padding=T._fit_or_abort)
    assert _sha(path) != before
    # ...so tagger takes the copy path for such files instead.
    make_audio_file(path, cls_fmt, tags=False, picture=False)
    audio, inode = decoded_audio(path), path.stat().st_ino
    _write(path)
    assert path.stat().st_ino != inode
    assert T.read_tags(path).instruments == tuple(LABELS)
    np.testing.assert_array_equal(decoded_audio(path), audio)


@pytest.mark.parametrize("fmt", FORMATS)
def test_independent_readers(tmp_path: Path, fmt: str) -> None:
    taglib = pytest.importorskip("taglib")
    path = _file(tmp_path, fmt)
    _write(path)
    # TagLib maps TXXX, Vorbis comments and iTunes freeform atoms all to the key INSTRUMENTS.
    with taglib.File(str(path)) as tf:
        tl = tf.tags
    assert tl["INSTRUMENTS"] == LABELS
    assert tl["INSTRUMENTS_MODEL"] == [MODEL]
    assert tl["INSTRUMENTS_SCORES"] == ["piano=0.97; drums=0.91; bass=0.50"]

    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed (CI installs it)")
    cmd = ["ffprobe", "-v", "error", "-of", "json", "-show_entries", "format_tags:stream_tags", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    found: dict[str, str] = {}
    for section in [data.get("format", {})] + data.get("streams", []):
        found.update({k.upper(): v for k, v in section.get("tags", {}).items()})
    assert found["INSTRUMENTS_MODEL"] == MODEL
    # Known FFmpeg limit: ID3/MP4 multi-values show only the first; Vorbis ones are joined with ";".
    expected = ";".join(LABELS) if fmt in FFPROBE_JOINS else LABELS[0]
    assert found["INSTRUMENTS"] == expected


# ---------------------------------------------------------------- ID3 v2.3


def test_id3v23_stays_v23_and_joins_values(tmp_path: Path) -> None:
    path = _file(tmp_path, "mp3", id3_v23=True)
    other = read_other_tags(path)
    for labels in (LABELS, _big_labels()):  # in place, then the copy path
        _write(path, labels)
        raw = ID3(path, translate=False)
        assert raw.version == (2, 3, 0)
        assert "TYER" in raw and "TDRC" not in raw
        assert [str(t) for t in raw.getall("TXXX:INSTRUMENTS")[0].text] == ["; ".join(labels)]
        assert T.read_tags(path).instruments == tuple(labels)
        assert read_other_tags(path) == other


# ---------------------------------------------------------------- semantics


@pytest.mark.parametrize("fmt", ["mp3", "flac", "m4a"])
def test_empty_instruments_writes_model_only(tmp_path: Path, fmt: str) -> None:
    path = _file(tmp_path, fmt)
    _write(path)
    T.write_tags(path, instruments=[], scores={}, model_id=MODEL)
    state = T.read_tags(path)
    assert state == T.TagState((), None, MODEL) and state.is_ours
    assert _raw_values(path, "INSTRUMENTS") == [] and _raw_values(path, "INSTRUMENTS_SCORES") == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_remove_tags(tmp_path: Path, fmt: str) -> None:
    path = _file(tmp_path, fmt)
    other = read_other_tags(path)
    assert T.remove_tags(path) is False  # nothing of ours
    _write(path)
    digest = _sha(path)
    assert T.remove_tags(path, dry_run=True) is True
    assert _sha(path) == digest
    assert T.remove_tags(path) is True
    assert T.read_tags(path) == T.TagState((), None, None)
    assert read_other_tags(path) == other


def _add_user_instruments(path: Path) -> None:
    f = mutagen.File(path)
    if isinstance(f.tags, ID3):
        from mutagen.id3 import TXXX

        f.tags.add(TXXX(encoding=3, desc="INSTRUMENTS", text=["guitar", "voice"]))
    elif isinstance(f, MP4):
        f.tags["----:com.apple.iTunes:INSTRUMENTS"] = [MP4FreeForm(b"guitar"), MP4FreeForm(b"voice")]
    else:
        f.tags["INSTRUMENTS"] = ["guitar", "voice"]
    f.save()


@pytest.mark.parametrize("fmt", ["mp3", "flac", "m4a", "wav"])
def test_user_written_instruments_are_left_alone(tmp_path: Path, fmt: str) -> None:
    path = _file(tmp_path, fmt)
    _add_user_instruments(path)
    state = T.read_tags(path)
    assert state.instruments == ("guitar", "voice") and state.has_user_instruments and not state.is_ours
    digest = _sha(path)
    assert T.remove_tags(path) is False
    assert T.remove_tags(path, dry_run=True) is False
    assert _sha(path) == digest


def test_same_values_again_is_a_no_op(tmp_path: Path) -> None:
    path = _file(tmp_path, "flac")
    _write(path)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    digest = _sha(path)
    _write(path)
    assert _sha(path) == digest and path.stat().st_mtime_ns == 1_000_000_000_000_000_000


# ---------------------------------------------------------------- mtime, stat, links


@pytest.mark.parametrize("labels", [LABELS, _big_labels()], ids=["in_place", "copy"])
def test_mtime(tmp_path: Path, labels: list[str]) -> None:
    old_ns = 1_000_000_000_000_000_000  # 2001
    path = _file(tmp_path, "mp3")
    os.utime(path, ns=(old_ns, old_ns))
    _write(path, labels, preserve_mtime=True)
    assert path.stat().st_mtime_ns == old_ns and T.read_tags(path).instruments == tuple(labels)

    other = _file(tmp_path, "ogg")
    os.utime(other, ns=(old_ns, old_ns))
    _write(other, labels)
    assert other.stat().st_mtime_ns > old_ns


def test_expected_stat_mismatch(tmp_path: Path) -> None:
    path = _file(tmp_path, "flac")
    st = path.stat()
    digest = _sha(path)
    with pytest.raises(T.TagError, match="file changed during the run"):
        _write(path, expected_stat=(st.st_size, st.st_mtime_ns - 1))
    with pytest.raises(T.TagError, match="file changed during the run"):
        _write(path, expected_stat=(st.st_size + 1, st.st_mtime_ns))
    assert _sha(path) == digest
    _write(path, expected_stat=(st.st_size, st.st_mtime_ns))  # unchanged file: fine
    assert T.read_tags(path).is_ours


def test_symlink_stays_a_symlink(tmp_path: Path) -> None:
    target = _file(tmp_path, "flac")
    link = tmp_path / "link.flac"
    link.symlink_to(target.name)
    _write(link, _big_labels())
    assert link.is_symlink() and T.read_tags(target).instruments == tuple(_big_labels())


def test_hard_link_is_not_split(tmp_path: Path) -> None:
    path = _file(tmp_path, "flac")
    os.link(path, tmp_path / "other.flac")
    _write(path)  # fits in place: both names see it
    assert T.read_tags(tmp_path / "other.flac").instruments == tuple(LABELS)
    with pytest.raises(T.TagError, match="hard links"):
        _write(path, _big_labels())
    assert path.stat().st_nlink == 2 and not _temps(tmp_path)


# ---------------------------------------------------------------- errors


def test_read_only_file_and_folder(tmp_path: Path) -> None:
    path = _file(tmp_path, "mp3")
    os.chmod(path, 0o444)
    with pytest.raises(T.TagError, match="read-only file"):
        T.check_writable(path)
    with pytest.raises(T.TagError, match="read-only file"):
        _write(path)
    os.chmod(path, 0o644)
    T.check_writable(path)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(T.TagError, match="folder not writable"):
            T.check_writable(path)
    finally:
        os.chmod(tmp_path, 0o755)


def _bad_files(tmp_path: Path) -> list[Path]:
    rnd = tmp_path / "random.flac"
    rnd.write_bytes(random.Random(0).randbytes(20000))
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("these are not the droids\n" * 100)
    mkv = make_matroska_opus(tmp_path / "matroska.opus")
    return [rnd, empty, text, mkv]


def test_bad_files_raise_tag_error(tmp_path: Path) -> None:
    for path in _bad_files(tmp_path):
        digest = _sha(path)
        with pytest.raises(T.TagError) as info:
            T.read_tags(path)
        if path.name == "matroska.opus":
            assert "Matroska" in str(info.value)
        with pytest.raises(T.TagError):
            _write(path)
        with pytest.raises(T.TagError):
            T.remove_tags(path)
        assert _sha(path) == digest
    with pytest.raises(T.TagError):
        T.read_tags(tmp_path / "missing.mp3")


def test_failed_verification_leaves_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, "flac")
    digest = _sha(path)
    real = T._audio_fingerprint
    monkeypatch.setattr(T, "_audio_fingerprint", lambda p, decode: real(p, decode) if not decode else (0, "x", 0))
    with pytest.raises(T.TagError, match="audio check"):
        _write(path, _big_labels())
    assert _sha(path) == digest and not _temps(tmp_path)


def test_disk_full_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, "m4a")
    digest = _sha(path)

    def full(src: str, dst: str) -> None:
        Path(dst).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(T.shutil, "copyfile", full)
    with pytest.raises(T.TagError, match="^disk full$"):
        _write(path, _big_labels())
    assert _sha(path) == digest and not _temps(tmp_path)


def test_clean_stale_temps(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".song.flac{T.TEMP_MARKER}-{dead.pid}-abcd1234"
    live = tmp_path / f".song.flac{T.TEMP_MARKER}-{os.getpid()}-abcd1234"
    keep = tmp_path / "song.flac"
    for p in (stale, live, keep):
        p.write_bytes(b"x")
    assert T.clean_stale_temps(tmp_path) == 1
    assert not stale.exists() and live.exists() and keep.exists()


# ---------------------------------------------------------------- kill test

_CHILD = r"""
import sys
from tagger import tags as T
T._in_place_allowed = lambda audio: False  # force the temp-copy path for every write
files = sys.argv[1:]
print("ready", flush=True)
r = 0
while True:
    r += 1
    labels = [f"label-{r}-{k}-with-some-length" for k in range(300)]
    for f in files:
        T.write_tags(f, instruments=labels, scores={l: 0.5 for l in labels}, model_id=f"model-{r}")
"""


def _consistent(state: T.TagState) -> bool:
    if state.model is None:
        return state.instruments == () and state.scores is None
    r = state.model.split("-")[1]
    labels = tuple(f"label-{r}-{k}-with-some-length" for k in range(300))
    return state.instruments == labels and state.scores == "; ".join(f"{l}=0.50" for l in labels)


def test_sigkill_during_writes_never_damages_files(tmp_path: Path) -> None:
    source = _file(tmp_path, "flac", seconds=1.0)
    audio = decoded_audio(source)
    md5 = FLAC(source).info.md5_signature
    lib = tmp_path / "lib"
    lib.mkdir()
    files = [lib / f"t{i:02d}.flac" for i in range(12)]
    for f in files:
        shutil.copyfile(source, f)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = random.Random(1234)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, *map(str, files)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env)
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready", child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert any(T.read_tags(f).is_ours for f in files), "the child never completed a write"
    for f in files:
        assert _consistent(T.read_tags(f)), f
        assert FLAC(f).info.md5_signature == md5
        np.testing.assert_array_equal(decoded_audio(f), audio)
    T.clean_stale_temps(lib)
    assert not _temps(lib)
    assert sorted(lib.iterdir()) == files
