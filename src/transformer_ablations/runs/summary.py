"""The run record: one :class:`RunSummary` (the fields of ``summary.json``) and one :class:`Status`.

``summary.json`` is written by training (``runs.records.write_summary``) and read by the
executor, the report and checkpoint lookups. Its schema is this dataclass: the named fields,
plus ``extra`` for what a writer adds along the way (``step``, ``tokens_per_s``,
``peak_rss_mb``, ``run_dir``, ``exit_code`` ...), kept as they are.
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


FINAL = (Status.FINISHED, Status.DIVERGED)  # a result: the same command reports it and leaves it alone
TERMINAL = (*FINAL, Status.FAILED)  # no longer running


class CorruptRecord(ValueError):
    """A summary.json (or benchmark JSON) that is not a run record; the message says why."""


@dataclass
class RunSummary:
    run_id: str
    experiment: str | None
    status: str
    config: dict[str, Any]  # dotted keys
    config_hash: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    diverged_step: int | None = None
    error: str | None = None
    wall_time_s: float | None = 0.0
    started_at: str | None = None
    finished_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``summary.json``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **out}

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
                      best=data.get("best") or {})
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
