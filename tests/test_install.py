"""A non-editable install finds the shipped model from any working directory."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Never copied into the build copy: VCS data, build outputs, local data (as in .gitignore).
_IGNORED = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "data", "runs", ".whl", "*.tagger-tmp*")


def _source_copy(dest: Path) -> Path:
    """The project's files in dest, so building writes build/ and *.egg-info there, not in the tree."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, timeout=60)
    if listed.returncode != 0:  # not a git checkout (e.g. an unpacked sdist)
        shutil.copytree(ROOT, dest, ignore=_IGNORED)
        return dest
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _tree_outputs() -> dict[str, int]:
    """Build outputs in the source tree and their modification times."""
    found = [ROOT / "build", ROOT / "dist", *ROOT.glob("*.egg-info")]
    return {p.name: p.stat().st_mtime_ns for p in found if p.exists()}


def test_wheel_ships_the_default_model_and_it_loads_from_anywhere(tmp_path):
    before = _tree_outputs()
    source = _source_copy(tmp_path / "src")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert _tree_outputs() == before, "the build wrote into the source tree"
    wheel = next((tmp_path / "dist").glob("tagger-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "tagger/models/default.pt" in names and "tagger/models/MODEL_CARD.md" in names
    assert "beetsplug/instruments.py" in names and "beetsplug/__init__.py" not in names  # beets' namespace
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = "import tagger.model as m; x = m.load_model(); print(m.__file__); print(x.model_id, len(x.labels))"
    probe = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                           env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert probe.returncode == 0, probe.stderr
    module_file, description = probe.stdout.splitlines()
    assert module_file.startswith(str(target))  # the installed copy, not the source tree
    assert description.endswith(" 16")
