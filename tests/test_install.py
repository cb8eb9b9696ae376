"""A non-editable install finds the shipped model from any working directory."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_default_model_and_it_loads_from_anywhere(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("tagger-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "tagger/models/default.pt" in names and "tagger/models/MODEL_CARD.md" in names
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
