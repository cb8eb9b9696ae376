"""Per-track results and the CSV / JSON / JSON Lines reports that shell scripts consume."""
from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field
from typing import IO

REPORT_FORMATS = ("csv", "json", "jsonl")

# Statuses a track can end with.
TAGGED = "tagged"
DRY_RUN = "dry-run"
SKIPPED = "skipped"  # already tagged by this model
USER_TAG = "skipped-user-tag"  # an INSTRUMENTS tag a person wrote: kept unless --force
ERROR = "error"


@dataclass
class TrackResult:
    path: str
    status: str
    instruments: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # every label's aggregated score
    duration: float | None = None
    model: str = ""
    error: str = ""
    timeline: dict[str, list[list[float]]] | None = None

    def to_dict(self) -> dict:
        row = {
            "path": self.path,
            "status": self.status,
            "instruments": self.instruments,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "duration": None if self.duration is None else round(self.duration, 3),
            "model": self.model,
            "error": self.error,
        }
        if self.timeline is not None:
            row["timeline"] = self.timeline
        return row


def format_from_name(path: str, explicit: str | None) -> str:
    """``--report-format`` wins; otherwise the extension; stdout (``-``) defaults to jsonl."""
    if explicit:
        return explicit
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext == "ndjson":
        return "jsonl"
    if ext in REPORT_FORMATS:
        return ext
    if path == "-":
        return "jsonl"
    raise ValueError(f"cannot tell the report format of {path!r}: use .csv, .json or .jsonl, or --report-format")


class ReportWriter:
    """Writes rows as tracks finish: CSV and JSONL stream (flushed per row), JSON at close."""

    def __init__(self, stream: IO[str], fmt: str, labels: list[str]):
        if fmt not in REPORT_FORMATS:
            raise ValueError(f"unknown report format {fmt!r}")
        self.stream, self.fmt, self.labels = stream, fmt, labels
        self.rows: list[dict] = []
        self._csv = None
        if fmt == "csv":
            columns = ["path", "status", "instruments", "duration", "model", "error"]
            self._csv = csv.writer(stream)
            self._csv.writerow(columns + [f"score:{label}" for label in labels])

    def write(self, result: TrackResult) -> None:
        row = result.to_dict()
        if self.fmt == "csv":
            scores = [row["scores"].get(label, "") for label in self.labels]
            duration = "" if row["duration"] is None else row["duration"]
            self._csv.writerow(
                [row["path"], row["status"], "; ".join(row["instruments"]), duration, row["model"], row["error"]]
                + scores
            )
        elif self.fmt == "jsonl":
            self.stream.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            self.rows.append(row)
            return
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            json.dump(self.rows, self.stream, ensure_ascii=False, indent=2)
            self.stream.write("\n")
        self.stream.flush()
        if self.stream is not sys.stdout:
            self.stream.close()


def open_report(path: str, fmt: str | None, labels: list[str]) -> ReportWriter:
    fmt = format_from_name(path, fmt)
    stream = sys.stdout if path == "-" else open(path, "w", newline="" if fmt == "csv" else None, encoding="utf-8")
    return ReportWriter(stream, fmt, labels)
