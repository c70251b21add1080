"""``ablate sync``: upload runs that logged offline (``runs/**/wandb/offline-run-*``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .launcher import LOGIN_HINT, has_wandb_login, wandb_cli


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


def sync_command(dirs: Sequence[Path], python: str | None = None, project: str | None = None) -> list[str]:
    argv = [*wandb_cli(python), "sync"]
    if project:
        argv += ["--project", project]
    return argv + [str(d) for d in dirs]


def sync(runs_dir: str | Path = "runs", dry_run: bool = False, include_synced: bool = False,
         project: str | None = None, env: Mapping[str, str] = os.environ) -> int:
    if not has_wandb_login(env):
        print(f"ablate sync: not logged in to wandb; {LOGIN_HINT}, then run `ablate sync` again", file=sys.stderr)
        return 2
    dirs = find_offline_runs(runs_dir, include_synced)
    if not dirs:
        print(f"ablate sync: no offline runs to upload under {runs_dir}/")
        return 0
    argv = sync_command(dirs, project=project)
    print(f"ablate sync: uploading {len(dirs)} offline run(s) from {runs_dir}/", flush=True)
    if dry_run:
        print(" ".join(argv))
        return 0
    env = {k: v for k, v in env.items() if k != "WANDB_MODE"}
    return subprocess.run(argv, check=False, env=env, stdin=subprocess.DEVNULL).returncode
