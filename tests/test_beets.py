"""The beets plugin (beetsplug/instruments.py) with a real beets, run as `python -m beets`
in a temporary config dir and library, on real files imported non-interactively (-A -q)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mutagen
import pytest
from click.testing import CliRunner

from media import make_audio_file
from tagger import tags
from tagger.cli import main as tagger_main


FORMATS = ("mp3", "flac", "m4a", "opus")  # ID3, Vorbis comments (two containers), MP4 atoms
FOUND = {"bass", "piano"}  # the tiny model's thresholds (0, 1, 0, 1) pass exactly these


class Beets:
    """One beets installation: config dir, library folder and database under tmp_path."""

    def __init__(self, root: Path, model: Path, *, write: bool = True, auto: bool = False):
        self.root, self.lib, self.src = root, root / "lib", root / "src"
        (root / "beetsdir").mkdir()
        self.src.mkdir()
        yes = {True: "yes", False: "no"}
        (root / "beetsdir" / "config.yaml").write_text(
            f"directory: {self.lib}\nlibrary: {root / 'library.db'}\nplugins: instruments\n"
            f"import:\n  write: {yes[write]}\n  copy: yes\n  resume: no\n  log: null\n"
            f"instruments:\n  model: {model}\n  device: cpu\n  jobs: 0\n  auto: {yes[auto]}\n"
        )
        for i, fmt in enumerate(FORMATS):
            make_audio_file(self.src / f"song{i}.{fmt.split('.')[-1]}", fmt, seconds=1.5, seed=i)

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "BEETSDIR": str(self.root / "beetsdir"), "HOME": str(self.root)}
        proc = subprocess.run([sys.executable, "-m", "beets", *args], env=env, capture_output=True, text=True,
                              timeout=300)
        if ok:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def import_all(self) -> None:
        self("import", "-A", "-q", str(self.src))  # as-is, no prompts, no network lookups

    def files(self) -> list[Path]:
        return sorted(p for p in self.lib.rglob("*") if p.is_file())

    def rows(self, *query: str) -> list[list[str]]:
        """One row per matching item: path, instruments, scores, model (as beets has them)."""
        out = self("ls", "-f", "$path|$instruments|$instruments_scores|$instruments_model", *query).stdout
        return [line.split("|") for line in out.splitlines()]


@pytest.fixture
def model_id(tiny_model_path) -> str:
    from tagger.model import load_model

    return load_model(tiny_model_path).model_id


def _next_second() -> None:
    """beets compares modification times in whole seconds: a change must land in a later one."""
    time.sleep(1.02 - time.time() % 1)


def _stats(files: list[Path]) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def test_command_tags_library_items_queries_find_them_and_a_rerun_skips(tmp_path, tiny_model_path, model_id):
    beet = Beets(tmp_path, tiny_model_path)
    beet.import_all()
    assert len(beet.files()) == len(FORMATS) and beet.rows("instruments:piano") == []

    run = beet("instruments")
    assert f"{len(FORMATS)} tagged" in run.stdout
    for path in beet.files():  # written into the files by tagger's writer
        state = tags.read_tags(path)
        assert set(state.instruments) == FOUND and state.model == model_id, path
    rows = beet.rows("instruments:piano")
    assert len(rows) == len(FORMATS)
    for path, instruments, scores, model in rows:  # the database holds what the file holds
        state = tags.read_tags(path)
        assert (instruments, scores, model) == ("; ".join(state.instruments), state.scores, state.model)
    assert beet.rows("instruments:flute") == []
    titles = beet("ls", "-f", "$title: $instruments", "instruments:bass").stdout.splitlines()
    assert len(titles) == len(FORMATS) and all(t.startswith("Fixture Song: ") and "piano" in t for t in titles)

    before = _stats(beet.files())
    again = beet("instruments")
    assert f"{len(FORMATS)} skipped" in again.stdout and "tagged" not in again.stdout
    assert _stats(beet.files()) == before  # not even rewritten
    forced = beet("instruments", "--force", "format:flac")
    assert "1 tagged" in forced.stdout and "skipped" not in forced.stdout


def test_write_convention_pretend_database_only_then_write(tmp_path, tiny_model_path, model_id):
    beet = Beets(tmp_path, tiny_model_path, write=False)  # import.write: no
    beet.import_all()
    untouched = _stats(beet.files())

    pretend = beet("instruments", "--pretend")
    assert pretend.stdout.count("bass") == len(FORMATS) and "pretend" in pretend.stdout
    assert beet.rows("instruments:piano") == [] and _stats(beet.files()) == untouched

    stored = beet("instruments")  # import.write: no -> the database only
    assert f"{len(FORMATS)} stored" in stored.stdout
    assert {r[3] for r in beet.rows("instruments:piano")} == {model_id} and len(beet.rows("instruments:piano")) == 4
    assert _stats(beet.files()) == untouched
    assert all(tags.read_tags(p).model is None for p in beet.files())
    assert f"{len(FORMATS)} skipped" in beet("instruments").stdout  # the database says done

    written = beet("instruments", "-w")  # -w overrides import.write
    assert f"{len(FORMATS)} tagged" in written.stdout
    assert all(tags.read_tags(p).model == model_id for p in beet.files())


def test_import_hook_tags_new_items_and_update_follows_tagger_outside_beets(tmp_path, tiny_model_path, model_id):
    beet = Beets(tmp_path, tiny_model_path, auto=True)
    beet.import_all()
    assert len(beet.rows("instruments:piano")) == len(FORMATS)
    assert all(tags.read_tags(p).model == model_id for p in beet.files())  # the final (copied) files
    assert all(tags.read_tags(p).model is None for p in beet.src.iterdir())  # sources untouched

    _next_second()
    untag = CliRunner().invoke(tagger_main, ["untag", "-q", str(beet.lib)])
    assert untag.exit_code == 0, untag.output
    beet("update")
    assert beet.rows("instruments:piano") == []
    assert all(r[1:] == ["", "", ""] for r in beet.rows())  # fields gone from the database

    beet("modify", "-y", "title=Renamed")  # beets writes its fields: ours are absent, not empty frames
    for path in beet.files():
        assert not [k for k in mutagen.File(path).tags.keys() if "instruments" in k.lower()], path

    _next_second()
    tag = CliRunner().invoke(tagger_main, ["tag", "-q", "-j", "0", "--model", str(tiny_model_path), str(beet.lib)])
    assert tag.exit_code == 0, tag.output
    beet("update")
    rows = beet.rows("instruments:piano")
    assert len(rows) == len(FORMATS) and {r[3] for r in rows} == {model_id}


def test_bad_file_in_library_is_one_clear_error_and_the_run_goes_on(tmp_path, tiny_model_path, model_id):
    beet = Beets(tmp_path, tiny_model_path)
    beet.import_all()
    bad = next(p for p in beet.files() if p.suffix == ".flac")
    bad.write_bytes(b"fLaC" + b"\x00garbage" * 50)  # damaged after import

    run = beet("instruments", ok=False)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower() and bad.name in line]
    assert len(errors) == 1, run.stderr
    assert f"{len(FORMATS) - 1} tagged" in run.stdout and "1 error" in run.stdout
    good = [p for p in beet.files() if p != bad]
    assert all(tags.read_tags(p).model == model_id for p in good)
    assert len(beet.rows("instruments:piano")) == len(FORMATS) - 1
