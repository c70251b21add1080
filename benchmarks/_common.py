"""Shared bits of the benchmark scripts: import path, threads, header lines."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))


def machine_line() -> str:
    import torch

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return (
        f"torch {torch.__version__} | {dev} | torch threads {torch.get_num_threads()} "
        f"| OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')} | cpus {os.cpu_count()}"
    )


def write_json(path: Path | None, result: dict) -> dict:
    """Save a benchmark's result (``--json PATH``) and hand it back."""
    if path:
        import json

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return result
