"""The run record: one :class:`RunSummary` (the fields of ``summary.json``) and one :class:`Status`.

``summary.json`` is written by training, the executor and its children, and read by the
executor, the report and checkpoint lookups, all through this one dataclass
(``runs.records.read_summary`` / ``write_summary``): writers set its attributes, never dict keys.
Its core fields are always written; the fields a writer adds along the way (``step``,
``resumed_from_step``, ``exit_code`` ...) are optional and left out of the file while None, so a
record holds the keys it held when it was an untyped dict. ``extra`` keeps the keys of an older
file this schema does not name, so that a read and a write lose nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..config import flatten


class Status(StrEnum):
    """The status vocabulary of a run record: defined here only."""

    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


_STATUSES = {s.value for s in Status}
FINAL = (Status.FINISHED, Status.DIVERGED)  # a result: the same command reports it and leaves it alone
TERMINAL = (*FINAL, Status.FAILED)  # no longer running


OPTIONAL: dict = {"optional": True}  # the metadata of a field left out of summary.json while None


class CorruptRecord(ValueError):
    """A summary.json (or benchmark JSON) that is not a run record; the message says why."""


@dataclass(slots=True)  # slots: a writer sets a named field or fails, never a stray attribute
class RunSummary:
    run_id: str
    experiment: str | None
    status: Status | str  # a Status; a string only for a value outside the vocabulary, read from a file
    config: dict[str, Any]  # dotted keys
    config_hash: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    diverged_step: int | None = None
    error: str | None = None
    wall_time_s: float | None = 0.0
    started_at: str | None = None
    finished_at: str | None = None
    # --- optional: written by some writers only, left out of summary.json while None ---
    run_dir: str | None = field(default=None, metadata=OPTIONAL)
    step: int | None = field(default=None, metadata=OPTIONAL)  # the last validation (its checkpoint resumes)
    plateau_step: int | None = field(default=None, metadata=OPTIONAL)  # train.patience ended the run here
    tokens_per_s: float | None = field(default=None, metadata=OPTIONAL)
    peak_rss_mb: float | None = field(default=None, metadata=OPTIONAL)
    resumed_from_step: int | None = field(default=None, metadata=OPTIONAL)  # the checkpoint a resume loaded
    wall_time_s_before: float | None = field(default=None, metadata=OPTIONAL)  # of the attempts before a resume
    interrupted_at_step: int | None = field(default=None, metadata=OPTIONAL)
    signal: str | None = field(default=None, metadata=OPTIONAL)  # SIGINT / SIGTERM of an interrupted run
    exit_code: int | None = field(default=None, metadata=OPTIONAL)  # of a sweep child that failed
    previous_error: str | None = field(default=None, metadata=OPTIONAL)  # a failed run retried (--retry-failed)
    lr_selection: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)  # train.lr_from: how lr was chosen
    reused_from: str | None = field(default=None, metadata=OPTIONAL)  # the identical selection run copied
    rebuilt_from: list[str] | None = field(default=None, metadata=OPTIONAL)  # a torn record rebuilt from these files
    resumed: int | None = field(default=None, metadata=OPTIONAL)  # resumptions counted by sweeps.testing.fake_train
    extra: dict[str, Any] = field(default_factory=dict)  # keys of an older file that no field names

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``summary.json``: ``extra``, the core fields, the optional ones that are set."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra" and not (f.metadata.get("optional") and getattr(self, f.name) is None)}
        return {**self.extra, **out, "status": str(self.status)}  # plain JSON values: a Status is its string

    @classmethod
    def from_dict(cls, data: Any, default_run_id: str = "") -> RunSummary:
        """A parsed ``summary.json``. Raises :class:`CorruptRecord` (one line) when it is not a run record."""
        if not isinstance(data, dict):
            raise CorruptRecord("not a JSON object")
        config = data.get("config")
        if not isinstance(config, dict):
            raise CorruptRecord("no 'config' object")
        if any(isinstance(v, dict) for v in config.values()):
            config = flatten(config)
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise CorruptRecord("'metrics' is not an object")
        status = data.get("status")
        if not isinstance(status, str):
            raise CorruptRecord("no 'status' string")
        named = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        fields = {k: v for k, v in data.items() if k in named}
        fields.update(run_id=str(data.get("run_id") or default_run_id), config=config, metrics=metrics,
                      best=data.get("best") or {}, status=Status(status) if status in _STATUSES else status)
        fields.setdefault("experiment", None)
        return cls(**fields, extra={k: v for k, v in data.items() if k not in named})

    @classmethod
    def load(cls, path: Path) -> RunSummary:
        """``summary.json`` at ``path`` (its folder names the run when the record does not)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise CorruptRecord(f"unreadable: {e}") from None
        except json.JSONDecodeError as e:
            raise CorruptRecord(f"not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(data, default_run_id=path.parent.name)


def count_nonfinite(summary: RunSummary) -> RunSummary:
    """``train/nonfinite_steps`` in the record's metrics: the divergence guard ends a run at its first
    non-finite loss or gradient, so it is 1 for a diverged run and 0 otherwise (Q1's bf16 claims)."""
    summary.metrics["train/nonfinite_steps"] = int(summary.status == Status.DIVERGED)
    return summary
