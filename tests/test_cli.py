"""`tagger tag` / `untag` / `models` end to end on real files, through Click and the console script."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import mutagen
import numpy as np
import pytest
from click.testing import CliRunner

from media import FORMATS, decoded_audio, make_audio_file, make_matroska_opus, read_other_tags
from tagger import tags
from tagger.cli import main

EXPECTED = {"piano", "bass"}  # the tiny model's thresholds pass exactly these (0.0), never the others (1.0)


def _values(state) -> set[str]:
    """INSTRUMENTS as a set; an ID3v2.3 file holds one '; '-joined value."""
    return {v for value in state.instruments for v in value.split("; ")}


def _suffix(fmt: str) -> str:
    return ".m4a" if fmt.endswith("m4a") else "." + fmt


@pytest.fixture(scope="module")
def library_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("library")
    for i, fmt in enumerate(FORMATS):
        name = "alac" if fmt == "alac.m4a" else fmt
        make_audio_file(folder / f"{i:02d} track {name} é{_suffix(fmt)}", fmt, seconds=2.5, seed=i)
    return folder


@pytest.fixture
def library(tmp_path, library_template) -> Path:
    folder = tmp_path / "music"
    shutil.copytree(library_template, folder)
    return folder


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*args: str) -> "click.testing.Result":
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_tag_every_format_keeps_audio_and_other_tags(library, tiny_model_path, tmp_path):
    before_audio = {p.name: decoded_audio(p) for p in library.iterdir()}
    before_tags = {p.name: read_other_tags(p) for p in library.iterdir()}
    report = tmp_path / "report.csv"
    result = _run("tag", str(library), "--model", str(tiny_model_path), "--report", str(report), "-q")
    assert result.exit_code == 0, result.output + result.stderr
    for path in library.iterdir():
        state = tags.read_tags(path)
        assert _values(state) == EXPECTED, path.name
        assert state.model and state.model.startswith("tiny 1 ")
        np.testing.assert_array_equal(decoded_audio(path), before_audio[path.name])
        assert read_other_tags(path) == before_tags[path.name], path.name
    rows = list(csv.DictReader(report.open(encoding="utf-8")))
    assert len(rows) == len(FORMATS) and {r["status"] for r in rows} == {"tagged"}
    for row in rows:  # highest score first
        names = row["instruments"].split("; ")
        assert set(names) == EXPECTED
        assert [float(row[f"score:{n}"]) for n in names] == sorted((float(row[f"score:{n}"]) for n in names), reverse=True)
    assert all(float(r["duration"]) == pytest.approx(2.5, abs=0.1) for r in rows)


def test_dry_run_writes_nothing_and_reports_to_stdout(library, tiny_model_path):
    before = _hashes(library)
    result = _run("tag", "--dry-run", "--report", "-", "--timeline", str(library), "--model", str(tiny_model_path), "-q")
    assert result.exit_code == 0
    assert _hashes(library) == before
    rows = [json.loads(line) for line in result.stdout.splitlines()]  # stdout holds report data only
    assert len(rows) == len(FORMATS) and {r["status"] for r in rows} == {"dry-run"}
    assert all(set(r["instruments"]) == EXPECTED and set(r["scores"]) == {"piano", "drums", "bass", "flute"} for r in rows)
    # thresholds 0.0: piano and bass pass in every window, so each covers the whole track; the others never
    assert all(r["timeline"] == {"piano": [[0.0, r["duration"]]], "bass": [[0.0, r["duration"]]]} for r in rows)


def test_rerun_skips_force_retags_and_another_model_retags(library, tiny_model_path, tmp_path):
    assert _run("tag", str(library), "--model", str(tiny_model_path), "-q").exit_code == 0
    before = _hashes(library)
    again = _run("tag", str(library), "--model", str(tiny_model_path), "--report", "-", "-q")
    assert {json.loads(line)["status"] for line in again.stdout.splitlines()} == {"skipped"}
    assert _hashes(library) == before
    forced = _run("tag", str(library), "--model", str(tiny_model_path), "--force", "--report", "-", "-q")
    assert {json.loads(line)["status"] for line in forced.stdout.splitlines()} == {"tagged"}
    other = tmp_path / "other.pt"
    checkpoint = __import__("torch").load(tiny_model_path, weights_only=True)
    checkpoint["version"] = "2"
    __import__("torch").save(checkpoint, other)
    retag = _run("tag", str(library), "--model", str(other), "--report", "-", "-q")
    assert {json.loads(line)["status"] for line in retag.stdout.splitlines()} == {"tagged"}
    assert all(tags.read_tags(p).model.startswith("tiny 2 ") for p in library.iterdir())


def test_person_written_instruments_are_kept_unless_forced(library, tiny_model_path):
    flac = next(library.glob("*.flac"))
    audio = mutagen.File(flac)
    audio["INSTRUMENTS"] = ["kazoo"]
    audio.save()
    result = _run("tag", str(flac), "--model", str(tiny_model_path), "--report", "-", "-q")
    assert json.loads(result.stdout)["status"] == "skipped-user-tag"
    assert list(tags.read_tags(flac).instruments) == ["kazoo"]
    assert _run("untag", str(flac), "-q").exit_code == 0
    assert list(tags.read_tags(flac).instruments) == ["kazoo"]  # not ours: untag leaves it
    _run("tag", str(flac), "--model", str(tiny_model_path), "--force", "-q")
    assert set(tags.read_tags(flac).instruments) == EXPECTED


def test_untag_restores_the_tag_state(library, tiny_model_path):
    before = {p.name: (read_other_tags(p), tags.read_tags(p)) for p in library.iterdir()}
    _run("tag", str(library), "--model", str(tiny_model_path), "-q")
    snapshot = _hashes(library)
    dry = _run("untag", "--dry-run", str(library))
    assert dry.exit_code == 0 and _hashes(library) == snapshot and "would-untag" in dry.stderr
    assert _run("untag", str(library), "-q").exit_code == 0
    for path in library.iterdir():
        assert (read_other_tags(path), tags.read_tags(path)) == before[path.name], path.name


def test_bad_inputs_get_one_clear_line_and_exit_code_1(library, tiny_model_path, tmp_path):
    (library / "empty.flac").write_bytes(b"")
    (library / "text.mp3").write_text("not really an mp3\n" * 100)
    (library / "random.ogg").write_bytes(np.random.default_rng(0).bytes(20000))
    good_flac = next(library.glob("*track*.flac")).read_bytes()  # not empty.flac, made just above
    (library / "truncated.flac").write_bytes(good_flac[: len(good_flac) // 3])
    (library / "broken header.flac").write_bytes(b"fLaC" + b"\x00" * 40 + good_flac[200:])
    (library / "notes.txt").write_text("ignored: not an audio extension")
    make_matroska_opus(library / "matroska.opus")
    readonly = library / "readonly.wav"
    make_audio_file(readonly, "wav", seconds=1.0)
    readonly.chmod(0o444)
    report = tmp_path / "r.json"
    result = _run("tag", str(library), "--model", str(tiny_model_path), "--report", str(report))
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr + result.stdout
    rows = {Path(r["path"]).name: r for r in json.loads(report.read_text())}
    assert "notes.txt" not in rows
    # readonly.wav: refused by its mode bits, for root too (root's writes are not refused by the kernel)
    bad = ["empty.flac", "text.mp3", "random.ogg", "broken header.flac", "matroska.opus", "readonly.wav"]
    for name in bad:
        assert rows[name]["status"] == "error" and rows[name]["error"], name
        assert any(name in line and "error" in line for line in result.stderr.splitlines()), name
    assert rows[next(p.name for p in library.glob("*track*.flac"))]["status"] == "tagged"
    # a damaged tail decodes as far as it goes (about a third of the 2.5 s track is left)
    assert rows["truncated.flac"]["status"] == "tagged" and 0.3 < rows["truncated.flac"]["duration"] < 1.5, rows["truncated.flac"]
    assert rows["readonly.wav"]["error"] == "read-only file"
    assert "error" in result.stderr and "tagged" in result.stderr  # the summary table


def test_usage_errors_exit_2_and_help_lists_exit_codes(tiny_model_path, tmp_path):
    assert _run("tag", str(tmp_path / "missing")).exit_code == 2
    bad_model = tmp_path / "bad.pt"
    bad_model.write_bytes(b"garbage")
    result = _run("tag", str(tmp_path), "--model", str(bad_model))
    assert result.exit_code == 2 and "not a safe tagger checkpoint" in result.stderr
    assert _run("tag", str(tmp_path), "--model", str(tiny_model_path), "--report", "x.txt").exit_code == 2
    assert "130 interrupted" in _run("tag", "--help").output


def test_environment_and_config_file_defaults(library, tiny_model_path, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'[tag]\nmodel = "{tiny_model_path}"\nreport_format = "csv"\n')
    monkeypatch.setenv("TAGGER_CONFIG", str(config))
    monkeypatch.setenv("TAGGER_TAG_DRY_RUN", "1")
    before = _hashes(library)
    result = CliRunner().invoke(main, ["tag", str(library), "--report", "-", "-q"], auto_envvar_prefix="TAGGER")
    assert result.exit_code == 0, result.stderr
    assert _hashes(library) == before  # dry run came from the environment
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(FORMATS) and rows[0]["status"] == "dry-run"


def test_models_command_describes_the_model(tiny_model_path):
    result = _run("models", "--model", str(tiny_model_path), "--json")
    info = json.loads(result.stdout)
    assert info["labels"] == {"piano": 0.0, "drums": 1.0, "bass": 0.0, "flute": 1.0}
    assert info["features"]["n_mels"] == 32 and info["model_id"].startswith("tiny 1 ")


def _console_script() -> str:
    """The `tagger` script installed for the interpreter running the tests (not whatever PATH finds)."""
    script = Path(sysconfig.get_path("scripts")) / "tagger"
    assert script.is_file(), f"no tagger console script beside {sys.executable}: install the project (./install.sh)"
    return str(script)


def _tagger() -> list[str]:
    """The tagger command of the interpreter running the tests."""
    return [sys.executable, "-m", "tagger"]


def test_installed_console_script_tags_and_streams_jsonl(library, tiny_model_path):
    proc = subprocess.run(
        [_console_script(), "tag", str(library), "--model", str(tiny_model_path), "--report", "-"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(FORMATS) and all(r["status"] == "tagged" for r in rows)
    assert "tagger summary" in proc.stderr


def _flac_frames(data: bytes) -> bytes:
    """A FLAC file's audio frames: everything after its last metadata block."""
    pos = 4
    while True:
        header, length = data[pos], int.from_bytes(data[pos + 1 : pos + 4], "big")
        pos += 4 + length
        if header & 0x80:
            return data[pos:]


def test_sigkill_mid_run_leaves_every_file_whole(tmp_path, tiny_model_path):
    """Kill -9 during tag writes that take the copy path (files saved with no padding, so the tags
    never fit in place), many times: every file keeps its audio bytes and has the old or the new tag
    set, and the next run removes the temp copies the killed runs left and finishes the job."""
    source = tmp_path / "source.flac"
    make_audio_file(source, "flac", seconds=8.0, kind="noise", seed=7)  # 1.2 MB: each copy write takes a while
    mutagen.File(source).save(padding=lambda info: 0)
    data = source.read_bytes()
    frames, streaminfo = _flac_frames(data), data[4:42]
    original_audio = decoded_audio(source)
    original_other = read_other_tags(source)
    names = [f"{i:02d}.flac" for i in range(4)]
    rng = random.Random(0)
    temps_left = 0
    # At least 6 trials; more (up to 14) until a kill has landed inside a copy write: whether one
    # does is a race, and about one run in ten used to see none in three tries.
    for trial in range(14):
        if trial >= 6 and temps_left > 0:
            break
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        for name in names:
            shutil.copy(source, folder / name)
        inodes = {p: p.stat().st_ino for p in folder.iterdir()}
        proc = subprocess.Popen([*_tagger(), "tag", str(folder), "--model", str(tiny_model_path), "-q", "-j", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        # Even trials: kill while a temp copy is being written; odd ones: once a first file was
        # replaced, at a random later moment (any step of the next writes).
        while proc.poll() is None and time.monotonic() < deadline:
            if trial % 2 == 0 and any(tags.TEMP_MARKER in n for n in os.listdir(folder)):
                break
            if trial % 2 == 1 and any(p.stat().st_ino != ino for p, ino in inodes.items()):
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.01 if trial % 2 == 0 else 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        temps_left += sum(tags.TEMP_MARKER in n for n in os.listdir(folder))
        for path in sorted(folder.glob("*.flac")):
            written = path.read_bytes()
            assert _flac_frames(written) == frames and written[4:42] == streaminfo, path
            assert read_other_tags(path) == original_other
            state = tags.read_tags(path)
            assert (set(state.instruments), state.model is None) in [(set(), True), (EXPECTED, False)]
        np.testing.assert_array_equal(decoded_audio(folder / names[0]), original_audio)
        # The next run cleans any temp file the killed one left and finishes the job.
        assert _run("tag", str(folder), "--model", str(tiny_model_path), "-q", "-j", "0").exit_code == 0
        assert sorted(p.name for p in folder.iterdir()) == names  # no temp file left
        assert all(set(tags.read_tags(p).instruments) == EXPECTED for p in folder.glob("*.flac"))
        assert all(p.stat().st_ino != inodes[p] for p in folder.glob("*.flac"))  # every write was a copy
    assert temps_left > 0, "no kill landed in a copy write, so the temp-file checks checked nothing"


def test_ctrl_c_stops_cleanly_with_a_summary_and_exit_130(tmp_path, tiny_model_path):
    source = tmp_path / "source.flac"
    make_audio_file(source, "flac", seconds=3.0, seed=3)
    folder = tmp_path / "music"
    folder.mkdir()
    for i in range(160):  # ~8 min of audio: far more than the run gets through before the signal lands
        shutil.copy(source, folder / f"{i:03d}.flac")
    mtimes = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    # A test run started in the background (`cmd &`) inherits SIGINT ignored, and Python then keeps
    # ignoring it: give the child the default disposition, as an interactive shell would.
    proc = subprocess.Popen([*_tagger(), "tag", str(folder), "--model", str(tiny_model_path), "-j", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.stat().st_mtime_ns != m for p, m in mtimes.items()):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it was interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # exit 0 here means Ctrl-C was swallowed
    assert "Traceback" not in err and "interrupted" in err
    states = [set(tags.read_tags(path).instruments) for path in folder.glob("*.flac")]
    assert all(state in (set(), EXPECTED) for state in states)  # every file is either untouched or fully tagged
    assert states.count(set()) > 0 and states.count(EXPECTED) > 0  # it stopped mid-run


def test_a_folder_with_ten_thousand_entries(tmp_path, tiny_model_path):
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(9990):
        (folder / f"note {i:05d}.txt").touch()
    for i in range(10):
        (folder / f"empty {i}.flac").touch()
    result = _run("tag", str(folder), "--model", str(tiny_model_path), "--report", "-", "-q")
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 10 and {r["status"] for r in rows} == {"error"}
    assert len([line for line in result.stderr.splitlines() if line.startswith("error: ")]) == 10


def _peak_rss_mb(args: list[str]) -> float:
    """Peak RSS of one `tagger` run in a fresh process (ru_maxrss of the finished child)."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


def test_long_track_memory_stays_bounded(tmp_path, tiny_model_path):
    """30 minutes of audio: whole-file windows would need ~230 MB more; streaming needs little."""
    import soundfile as sf

    rate, minutes = 16000, 30
    long_wav, short_wav = tmp_path / "long.wav", tmp_path / "short.wav"
    with sf.SoundFile(long_wav, "w", rate, 1, subtype="PCM_16") as out:
        block = (np.random.default_rng(0).standard_normal(rate * 60) * 0.1).astype(np.float32)
        for _ in range(minutes):
            out.write(block)
    sf.write(short_wav, block[: rate * 5], rate, subtype="PCM_16")
    base = [*_tagger(), "tag", "--dry-run", "-j", "0", "--model", str(tiny_model_path), "-q"]
    short_peak = _peak_rss_mb(base + [str(short_wav)])
    long_peak = _peak_rss_mb(base + [str(long_wav)])
    whole_file_windows_mb = minutes * 60 * rate * 4 * 2 / 2**20  # float32, 50 % overlap
    assert long_peak - short_peak < whole_file_windows_mb / 3, (short_peak, long_peak)


def test_report_reader_closing_stdout_stops_the_run_cleanly(library, tiny_model_path):
    """`tagger tag --report - DIR | head -1`: no traceback, no 'internal error', exit 141."""
    for copy in range(3):  # enough tracks that many are still to come when the reader leaves
        for path in list(library.glob("0*")):
            shutil.copy(path, library / f"copy{copy} {path.name}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tagger", "tag", "--dry-run", "-q", "-j", "0", "--report", "-", "--model", str(tiny_model_path), str(library)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()  # the reader goes away with tracks still to report
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert first["status"] == "dry-run"
    assert "closed stdout" in err and "Traceback" not in err and "internal error" not in err
