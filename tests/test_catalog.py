"""`tagger models download`: a generated mn04-shaped release file (random weights) served from
a loopback HTTP server; hash, size, truncation, network failure, Ctrl-C and --from; loading
by name; the mn04 front end through the tagging pipeline. Never touches the internet."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from tagger import catalog, efficientat
from tagger.cli import main
from tagger.aggregate import aggregate
from tagger.decode import decode
from tagger.model import load_model
from tagger.pipeline import tag_paths
from tagger.windows import iter_window_blocks

NAME = "efficientat-mn04"
REAL_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "pretrained" / "mn04_as_mAP_432.pt"
REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "real-dev"


@pytest.fixture(scope="module")
def release_bytes() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(efficientat.MobileNetAT().state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def pinned(monkeypatch, tmp_path, release_bytes):
    """The registry entry pinned to the generated file; the cache in a temporary folder."""
    entry = dataclasses.replace(catalog.DOWNLOADS[NAME], sha256=hashlib.sha256(release_bytes).hexdigest(),
                                size=len(release_bytes))
    monkeypatch.setitem(catalog.DOWNLOADS, NAME, entry)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return entry


class _Server:
    """Serves ``files`` (name -> bytes); names in ``truncate`` announce the full length but
    send half and hang up."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        files, truncate = self.files, self.truncate

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                name = self.path.rsplit("/", 1)[-1]
                if name not in files:
                    self.send_error(404)
                    return
                body = files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in truncate else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/releases"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(monkeypatch):
    server = _Server()
    monkeypatch.setenv(catalog.MODELS_URL_ENV, server.url)
    yield server
    server.close()


def _download(*args: str):
    return CliRunner().invoke(main, ["models", "download", NAME, *args], catch_exceptions=False)


def _cache_files() -> list[str]:
    folder = catalog.cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_installs_a_self_describing_checkpoint(pinned, server, release_bytes):
    server.files[pinned.filename] = release_bytes
    result = _download()
    assert result.exit_code == 0, result.stderr
    assert _cache_files() == [f"{NAME}.pt"]  # no temporary left beside it
    model = catalog.load(NAME)  # by name
    assert model.arch == efficientat.ARCH and model.labels == list(efficientat.LABELS)
    assert model.features.frontend == "efficientat" and model.features.sample_rate == 32000
    assert model.thresholds == list(catalog.MN04_THRESHOLDS) and model.aggregation == catalog.MN04_AGGREGATION
    assert model.arch_args["class_map"] == [list(g) for g in efficientat.AUDIOSET_LABEL_MAP.values()]
    # the served weights are the ones that run
    reference = efficientat.EfficientATNet(128, 16)
    reference.net.load_state_dict(torch.load(io.BytesIO(release_bytes), weights_only=True))
    spec = torch.randn(2, 1, 128, 300)
    with torch.no_grad():
        assert torch.allclose(model.network(spec), reference.eval()(spec))
    listed = CliRunner().invoke(main, ["models", "list", "--json"])
    assert {row["name"]: row["installed"] for row in json.loads(listed.stdout)}[NAME] is True
    described = CliRunner().invoke(main, ["models", "--model", NAME, "--json"])
    assert json.loads(described.stdout)["model_id"].startswith(f"{NAME} {catalog.MN04_VERSION} ")


def test_wrong_hash_is_refused_and_leaves_nothing(pinned, server, release_bytes):
    damaged = bytearray(release_bytes)
    damaged[-100] ^= 0xFF
    server.files[pinned.filename] = bytes(damaged)
    result = _download()
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "sha256" in message and "nothing installed" in message
    assert _cache_files() == []


def test_truncated_download_is_refused_and_leaves_nothing(pinned, server, release_bytes):
    server.files[pinned.filename] = release_bytes
    server.truncate.add(pinned.filename)
    result = _download()
    assert result.exit_code == 1
    assert "truncated" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _cache_files() == []


def test_network_failure_is_one_line(pinned, monkeypatch):
    with socket_closed_port() as port:
        monkeypatch.setenv(catalog.MODELS_URL_ENV, f"http://127.0.0.1:{port}")
        result = _download()
    assert result.exit_code == 1
    assert result.stderr.startswith("tagger: cannot download http://127.0.0.1:") and len(result.stderr.strip().splitlines()) == 1
    assert _cache_files() == []
    missing = _Server()
    try:  # a 404 too
        monkeypatch.setenv(catalog.MODELS_URL_ENV, missing.url)
        result = _download()
    finally:
        missing.close()
    assert result.exit_code == 1 and "HTTP 404" in result.stderr


class socket_closed_port:
    """A loopback port with nothing listening."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]  # bound, never listening: connections are refused

    def __exit__(self, *exc):
        self.sock.close()


def test_interrupted_download_leaves_nothing_and_stale_temps_are_cleaned(pinned, server, release_bytes):
    server.files[pinned.filename] = release_bytes

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        catalog.install(NAME, progress=interrupt)
    assert _cache_files() == []
    stale = catalog.cache_dir() / f".{pinned.filename}.download-999999999"  # a killed run's (no such pid)
    stale.write_bytes(b"partial")
    catalog.install(NAME)
    assert _cache_files() == [f"{NAME}.pt"]


def test_from_file_installs_offline(pinned, tmp_path, release_bytes, monkeypatch):
    monkeypatch.setenv(catalog.MODELS_URL_ENV, "http://127.0.0.1:9")  # would fail if used
    copy = tmp_path / "mn04_as_mAP_432.pt"
    copy.write_bytes(release_bytes)
    result = _download("--from", str(copy))
    assert result.exit_code == 0, result.stderr
    assert catalog.load(NAME).name == NAME
    wrong = tmp_path / "other.pt"
    wrong.write_bytes(release_bytes[:-10])
    result = _download("--from", str(wrong))
    assert result.exit_code == 1 and "truncated" not in result.stderr and "sha256" in result.stderr
    assert _cache_files() == [f"{NAME}.pt"]  # the good install is still there


def test_a_model_not_installed_is_a_clear_usage_error(pinned, tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    result = CliRunner().invoke(main, ["tag", str(tmp_path), "--model", NAME])
    assert result.exit_code == 2
    assert f"not installed; run: tagger models download {NAME}" in result.stderr


def _input_sensitive_weights() -> dict:
    """Random weights whose BatchNorm statistics are measured on noise: freshly initialised,
    the network's output hardly depends on its input, which would hide a wrong front end."""
    torch.manual_seed(0)
    net, front = efficientat.MobileNetAT(), efficientat.EfficientATMel()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # plain average over the batches below
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(front(0.1 * torch.randn(8, 96000)))
    return net.state_dict()


def test_mn04_runs_through_the_pipeline_at_32_khz(tmp_path):
    model = catalog.build_model(NAME, _input_sensitive_weights())
    model.thresholds = [0.0] * 8 + [1.01] * 8  # a random network: tag exactly the first eight labels
    rate = 44100
    sf.write(tmp_path / "long.flac", 0.1 * np.random.default_rng(0).standard_normal(rate * 20), rate)
    seen = []  # window batches the front end gets: 3 s at 32 kHz, 7 windows for 20 s
    model.front.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    results = []
    tag_paths([tmp_path], model=model, device="cpu", jobs=0, dry_run=True, on_result=results.append)
    (result,) = results
    assert not result.error, result.error
    assert result.duration == pytest.approx(20.0, abs=0.01)
    assert {shape[1] for shape in seen} == {96000} and sum(shape[0] for shape in seen) == 7
    # the scores are mn04's own chain on the decoded windows: EfficientAT front end, network, topk
    windows = np.concatenate(list(iter_window_blocks([decode(tmp_path / "long.flac", sample_rate=32000)],
                                                     window=96000, hop=96000, block=64)))
    with torch.no_grad():
        probs = torch.sigmoid(model.network(efficientat.EfficientATMel()(torch.from_numpy(windows)))).numpy()
    expected = aggregate(probs, model.aggregation, topk=model.topk)
    np.testing.assert_allclose([result.scores[label] for label in model.labels], expected, atol=2e-5)
    assert sorted(result.instruments) == sorted(efficientat.LABELS[:8])


@pytest.mark.skipif(not REAL_WEIGHTS.is_file() or not REAL_DEV.is_dir(),
                    reason=f"real mn04 weights or real-dev clips absent ({REAL_WEIGHTS}, {REAL_DEV})")
@pytest.mark.parametrize("clip, instrument", [
    ("filosax_sax_p1_01.flac", "saxophone"), ("medleysolos_val3_d07b1fc0.flac", "flute"),
    ("librosa_trumpet_loop.flac", "trumpet"),
])
def test_real_weights_hear_a_solo_instrument(tmp_path, clip, instrument):
    source = REAL_DEV / "audio" / clip
    copy = tmp_path / clip
    copy.write_bytes(source.read_bytes())
    model = catalog.build_model(NAME, efficientat.load_state_dict(REAL_WEIGHTS))
    results = []
    tag_paths([copy], model=model, device="cpu", jobs=0, dry_run=True, on_result=results.append)
    (result,) = results
    assert instrument in result.instruments, result.scores
    assert max(result.scores, key=result.scores.get) == instrument, result.scores  # and it is the strongest


def test_an_installed_model_takes_the_catalog_settings_of_a_newer_tagger(pinned, server, release_bytes, monkeypatch):
    """Upgrading tagger is enough: the installed file's thresholds, aggregation and version
    follow the catalog (same weights, no second download), and the file on disk is updated."""
    server.files[pinned.filename] = release_bytes
    assert _download().exit_code == 0
    before = catalog.load(NAME)
    assert before.version == catalog.MN04_VERSION
    newer = tuple(0.3 for _ in catalog.MN04_THRESHOLDS)
    monkeypatch.setattr(catalog, "MN04_THRESHOLDS", newer)
    monkeypatch.setattr(catalog, "MN04_AGGREGATION", "mean")
    monkeypatch.setattr(catalog, "MN04_VERSION", "99")
    after = catalog.load(NAME)
    assert (after.version, after.thresholds, after.aggregation) == ("99", list(newer), "mean")
    assert after.model_id != before.model_id  # files tagged with the old settings get re-tagged
    on_disk = load_model(catalog.installed_path(NAME))
    assert (on_disk.version, on_disk.thresholds) == ("99", list(newer))
    assert on_disk.model_id == catalog.load(NAME).model_id  # stable from then on
    spec = torch.randn(1, 1, 128, 300)
    with torch.no_grad():
        assert torch.equal(after.network(spec), before.network(spec))  # the same weights
    assert _cache_files() == [f"{NAME}.pt"]
