"""What `pip install 'tagger[train,test]'` pulls in installs from wheels alone (no compiler, no -dev package).

The check walks the installed metadata, from tagger's own requirements down, so it sees the
same dependency closure pip resolved for this environment (no network needed).
"""
from __future__ import annotations

from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Known to exist only as source distributions on Linux that build against system headers.
NEEDS_HEADERS = {"pyaudio": "portaudio19-dev", "pyfluidsynth": "libfluidsynth-dev"}


def _closure(name: str, extras: set[str]) -> dict[str, str]:
    """Every distribution the requirements of ``name[extras]`` lead to: canonical name -> version."""
    found: dict[str, str] = {}
    todo = [(name, frozenset(extras))]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        dist_name, dist_extras = todo.pop()
        key = (canonicalize_name(dist_name), dist_extras)
        if key in done:
            continue
        done.add(key)
        dist = metadata.distribution(dist_name)  # PackageNotFoundError: the closure is not installed
        found[key[0]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({**default_environment(), "extra": extra}) for extra in (dist_extras or {""})
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return found


def test_train_and_test_extras_need_no_system_headers():
    closure = _closure("tagger", {"train", "test"})
    assert {"torch", "torchaudio", "av", "pretty-midi", "midirenderer", "pytest"} <= set(closure)  # the walk worked
    assert not {name: NEEDS_HEADERS[name] for name in closure if name in NEEDS_HEADERS}
    assert "tinysoundfont" not in closure  # its metadata requires pyaudio
