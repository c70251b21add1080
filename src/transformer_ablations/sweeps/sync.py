"""``ablate sync``: upload runs that logged offline (``runs/**/wandb/offline-run-*``, and the report
runs of ``ablate report --wandb`` under ``reports/``), and read what an offline run holds."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..runs.wandb_login import LOGIN_HINT, has_wandb_login
from .launcher import wandb_cli


def find_offline_runs(runs_dir: str | Path = "runs", include_synced: bool = False) -> list[Path]:
    """Offline wandb run directories under ``runs_dir``, oldest first; already synced ones are
    left out unless ``include_synced`` (``wandb sync`` marks them with ``*.wandb.synced``)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("offline-run-*") if p.is_dir()]
    if not include_synced:
        found = [p for p in found if not any(p.glob("*.wandb.synced"))]
    return sorted(found, key=lambda p: p.name)


# --- reading an offline run's .wandb file ----------------------------------------------------
# The file is wandb's transaction log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then
# 32 KiB blocks of LevelDB-log records (crc32 seeded with the record type, uint16 length, type:
# FULL, FIRST, MIDDLE, LAST), each payload one ``wandb_internal_pb2.Record``. wandb 0.31 reads it in
# its Go core and no longer ships a Python reader (``wandb.sdk.internal.datastore`` is gone), so
# the framing is read here; the records are parsed with wandb's own protobuf classes.
_HEADER = struct.Struct("<4sHB")
_RECORD = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) & 0xFFFFFFFF for t in (_FULL, _FIRST, _MIDDLE, _LAST)}


class TornFile(ValueError):
    """A .wandb file that ends inside a record, or whose framing is damaged."""


def _payloads(data: bytes) -> Iterator[bytes]:
    if len(data) < _HEADER.size or _HEADER.unpack_from(data) != (b":W&B", 0xBEE1, 0):
        raise TornFile("not a wandb transaction log (bad header)")
    pos, parts = _HEADER.size, []
    while pos < len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD.size:  # block trailer: zero padding
            pos += left_in_block
            continue
        if pos + _RECORD.size > len(data):
            raise TornFile(f"ends inside a record header at byte {pos}")
        checksum, length, kind = _RECORD.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero-filled rest of the block
            pos += left_in_block
            continue
        start, pos = pos + _RECORD.size, pos + _RECORD.size + length
        chunk = data[start:pos]
        if len(chunk) < length or kind not in _TYPE_CRC:
            raise TornFile(f"ends inside a record at byte {start}")
        if zlib.crc32(chunk, _TYPE_CRC[kind]) & 0xFFFFFFFF != checksum:
            raise TornFile(f"checksum mismatch at byte {start}")
        parts.append(chunk)
        if kind in (_FULL, _LAST):
            yield b"".join(parts)
            parts = []
    if parts:
        raise TornFile("ends inside a fragmented record")


@dataclass
class OfflineRun:
    """What an offline run's .wandb file holds: its history rows (``{key: value}``), summary,
    config, exit code (None: no exit record, the run was cut short) and whether the file is whole."""

    path: Path
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    name: str | None = None
    exit_code: int | None = None
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.exit_code is not None

    def last(self, key: str):
        """The last value logged under ``key`` (None if never logged)."""
        return next((row[key] for row in reversed(self.history) if key in row), None)


def _item_key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_offline_run(run_dir_or_file: str | Path) -> OfflineRun:
    """Parse ``offline-run-*/run-*.wandb`` (or the file itself) with ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    path = Path(run_dir_or_file)
    if path.is_dir():
        path = next(iter(sorted(path.glob("*.wandb"))), path / "missing.wandb")
    run = OfflineRun(path)
    try:
        for payload in _payloads(path.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                run.history.append({_item_key(i): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                for item in record.summary.update:
                    run.summary[_item_key(item)] = json.loads(item.value_json)
            elif kind in ("config", "run"):  # the run record carries the config given to wandb.init
                updates = record.config.update if kind == "config" else record.run.config.update
                run.config.update({_item_key(i): json.loads(i.value_json) for i in updates})
                run.name = (record.run.display_name if kind == "run" else None) or run.name
            elif kind == "exit":
                run.exit_code = record.exit.exit_code
    except (OSError, TornFile) as err:
        run.error = f"{type(err).__name__}: {err}"
    return run


def sync_command(dirs: Sequence[Path], python: str | None = None, project: str | None = None) -> list[str]:
    argv = [*wandb_cli(python), "sync"]
    if project:
        argv += ["--project", project]
    return argv + [str(d) for d in dirs]


def describe_offline_run(path: Path) -> str:
    """``<dir>  complete (exit 0, 12 history rows)`` or ``<dir>  INCOMPLETE (<why>)``."""
    run = read_offline_run(path)
    if run.complete:
        return f"{path}  complete (exit {run.exit_code}, {len(run.history)} history rows)"
    why = run.error or "no exit record: the run was cut short"
    return f"{path}  INCOMPLETE ({why})"


def sync(runs_dir: str | Path = "runs", dry_run: bool = False, include_synced: bool = False,
         project: str | None = None, env: Mapping[str, str] = os.environ,
         reports_dir: str | Path | None = "reports") -> int:
    """Upload the offline runs under ``runs_dir`` and ``reports_dir`` (``ablate report --wandb``).
    ``dry_run`` lists them (complete or cut short) and the ``wandb sync`` command, login or not."""
    logged_in = has_wandb_login(env)
    if not logged_in and not dry_run:
        print(f"ablate sync: not logged in to wandb; {LOGIN_HINT}, then run `ablate sync` again", file=sys.stderr)
        return 2
    roots = [runs_dir, *([reports_dir] if reports_dir else [])]
    dirs = [d for root in roots for d in find_offline_runs(root, include_synced)]
    where = " and ".join(f"{r}/" for r in roots)
    if not dirs:
        print(f"ablate sync: no offline runs to upload under {where}")
        return 0
    argv = sync_command(dirs, project=project)
    if dry_run:
        print(f"ablate sync --dry-run: would upload {len(dirs)} offline run(s) from {where}:")
        for d in dirs:
            print(f"  {describe_offline_run(d)}")
        print(" ".join(argv))
        if not logged_in:
            print(f"(not logged in to wandb: {LOGIN_HINT} before `ablate sync`)")
        return 0
    print(f"ablate sync: uploading {len(dirs)} offline run(s) from {where}", flush=True)
    env = {k: v for k, v in env.items() if k != "WANDB_MODE"}
    return subprocess.run(argv, check=False, env=env, stdin=subprocess.DEVNULL).returncode
