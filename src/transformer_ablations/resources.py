"""The files the package ships: experiment configs, sweep files and the claims file.

They live at the repository root (``experiments/``, ``sweeps/``), where users read and edit
them, and are installed as package data under ``transformer_ablations/assets/`` (symlinks in
the source tree, copied into the wheel), found through :mod:`importlib.resources`. So
``ablate sweep q2``, ``ablate fit --config q1_scaling`` and ``ablate report`` work from any
folder after ``pip install .``; a path that exists relative to the current folder wins, so a
user's own copy of a file is used when given.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CLAIMS_NAME = "claims.yaml"


def assets_dir() -> Path:
    """The installed ``assets`` folder (a real directory: setuptools installs packages unzipped)."""
    return Path(str(files("transformer_ablations") / "assets"))


def experiments_dir() -> Path:
    return assets_dir() / "experiments"


def sweeps_dir() -> Path:
    return assets_dir() / "sweeps"


def claims_path() -> Path:
    return experiments_dir() / CLAIMS_NAME


def suite_claims(suite: str) -> Path | None:
    """The claims file of a report suite: ``claims_<suite>.yaml`` where one exists (the real-text suite's
    claims are about other sweeps than the quick suite's), else ``claims.yaml``; local copies first."""
    for name in (f"claims_{suite}.yaml", CLAIMS_NAME):
        found = find_file(f"experiments/{name}", "experiments")
        if found is not None:
            return found
    return None


def find_file(token: str, folder: str, suffix: str = ".yaml") -> Path | None:
    """``token`` as a path (from the current folder), else a packaged file: ``q1_scaling``,
    ``q1_scaling.yaml`` or ``experiments/q1_scaling.yaml`` for ``folder="experiments"``.
    None when neither exists."""
    p = Path(token).expanduser()
    if p.exists():
        return p
    if p.is_absolute():
        return None
    parts = p.parts[1:] if p.parts and p.parts[0] == folder else p.parts
    if not parts:
        return None
    candidate = assets_dir() / folder / Path(*parts)
    if not candidate.suffix:
        candidate = candidate.with_suffix(suffix)
    return candidate if candidate.exists() else None


def packaged_names(folder: str, pattern: str = "q*.yaml") -> list[str]:
    """Stems of the packaged files in ``folder`` (for 'valid values' in error messages)."""
    return sorted(f.stem for f in (assets_dir() / folder).glob(pattern))
