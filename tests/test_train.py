"""Render -> train -> eval -> tag, on a tiny configuration (seconds, runs in CI)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tagger.cli import main
from tagger.model import load_model
from train.loop import _lr_at, _pos_weight, _Audio
from train.datasets import Clip, load_dataset
from train.metrics import evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    result = CliRunner().invoke(main, ["dataset", "render", str(out), "--tracks", "8", "--seconds", "4", "--jobs", "1", "--seed", "3"])
    assert result.exit_code == 0, result.stderr
    return out


def test_tiny_training_run_yields_a_model_the_tagger_uses(rendered, tmp_path):
    model_path = tmp_path / "tiny.pt"
    result = CliRunner().invoke(main, [
        "train", str(rendered), "--out", str(model_path), "--epochs", "2", "--steps-per-epoch", "2",
        "--batch-size", "8", "--widths", "8,16", "--window-seconds", "2", "--jobs", "1", "--name", "ci-tiny",
    ])
    assert result.exit_code == 0, result.stderr
    assert "saved" in result.stderr and not list(tmp_path.glob("*.state")) and not list(tmp_path.glob("*.best"))
    model = load_model(model_path)
    assert model.name == "ci-tiny" and model.features.window_seconds == 2.0
    assert len(model.labels) == 16 and len(model.thresholds) == 16
    assert all(0.0 < t < 1.0 for t in model.thresholds)
    assert model.aggregation in {"mean", "max", "topk"}
    assert model.metrics["validation"]["n_clips"] >= 1
    assert [h["epoch"] for h in model.training["history"]] == [0, 1]

    evaluated = CliRunner().invoke(main, ["eval", str(rendered), "--model", str(model_path), "--json", "--jobs", "1"])
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["n_clips"] == 8 and "per_class" in metrics
    # eval's numbers are what tagging the same clips gives: score every mix with `tag`, compute the metrics
    clips = load_dataset(rendered, format="auto", labels=model.labels)
    scored = CliRunner().invoke(main, ["tag", "--dry-run", *[c.path for c in clips], "--model", str(model_path),
                                       "--report", "-", "-q", "-j", "1"])
    by_path = {r["path"]: r for r in map(json.loads, scored.stdout.splitlines())}
    y_true = np.array([[float(label in c.labels) for label in model.labels] for c in clips])
    y_score = np.array([[by_path[c.path]["scores"][label] for label in model.labels] for c in clips])
    from_tags = evaluate(y_true, y_score, model.labels, model.thresholds)
    for key in ("macro_f1", "micro_f1", "map", "accuracy"):
        assert metrics[key] == pytest.approx(from_tags[key], abs=1e-6), key

    mixes = [p for p in rendered.rglob("mix.flac")][:2]
    tagged = CliRunner().invoke(main, ["tag", *map(str, mixes), "--model", str(model_path), "--report", "-", "-q"])
    assert tagged.exit_code == 0, tagged.stderr
    rows = [json.loads(line) for line in tagged.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["tagged", "tagged"] and all(r["model"].startswith("ci-tiny 1 ") for r in rows)


def test_resume_continues_from_the_saved_state(rendered, tmp_path):
    args = ["train", str(rendered), "--out", str(tmp_path / "m.pt"), "--steps-per-epoch", "1", "--batch-size", "4",
            "--widths", "8", "--window-seconds", "2", "--jobs", "1"]
    first = CliRunner().invoke(main, args + ["--epochs", "1"])
    assert first.exit_code == 0
    # Leave a state file as an interrupted 3-epoch run would, then resume it.
    state = {"network": load_model(tmp_path / "m.pt").network.state_dict(), "epoch": 0, "best_map": 0.0, "best_epoch": 0,
             "history": [{"epoch": 0, "loss": 1.0, "val_map": 0.0}]}
    optimizer = torch.optim.AdamW(load_model(tmp_path / "m.pt").network.parameters())
    state["optimizer"] = optimizer.state_dict()
    torch.save(state, tmp_path / "m.pt.state")
    resumed = CliRunner().invoke(main, args + ["--epochs", "3", "--resume", "--patience", "5"])
    assert resumed.exit_code == 0, resumed.stderr
    assert "resumed" in resumed.stderr and "epoch 1/3" not in resumed.stderr and "epoch 3/3" in resumed.stderr


def test_schedule_and_pos_weight_by_hand():
    assert _lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert _lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert _lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
    audios = [_Audio(Clip("x", labels), np.zeros(1, np.float32), 0.0) for labels in [("a",), ("a",), ("a", "b"), ()]]
    weights = _pos_weight(audios, ["a", "b"]).tolist()
    # a: 3 positives, 1 negative -> sqrt(2/4) clipped up to 1; b: 1 positive, 3 negatives -> sqrt(4/2)
    assert weights == pytest.approx([1.0, 2 ** 0.5])


def test_training_without_data_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["train", str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt"), "--format", "slakh"])
    assert result.exit_code == 2 and "no clips found" in result.stderr
