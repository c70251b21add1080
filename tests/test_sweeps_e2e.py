"""End to end: every sweep file of the repository at --scale smoke, first 2 grid points each,
through the local executor with the REAL train() (q5_pretrain runs before q5_finetune / q6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_sweep_file_runs_at_smoke_scale(tmp_path, monkeypatch, capsys):
    from transformer_ablations.cli import dispatch

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    files = sorted(str(p) for p in (ROOT / "sweeps").glob("q*.yaml"))
    assert len(files) == 15  # + q1_lr_select, q1_bf16, q2_lookup, q4_lr_select (issue 15), q6_sep_segments and the
    # fine-tuning lr selections q5_lr_select, q6_cls_lr_select, q6_sep_lr_select (issue 16)
    # q1_bf16 (d_k = 256 only) takes its lr from q1_lr_select runs at d_k = 256, which the first two grid
    # points of q1_lr_select (d_k = 16) are not: train those two first
    assert dispatch(["sweep", str(ROOT / "sweeps/q1_lr_select.yaml"), "--scale", "smoke", "--max-runs", "2",
                     "--runs-dir", str(runs), "--quiet", "--offline", "--set", "model.head_dim=256"]) == 0
    rc = dispatch(["sweep", *files, "--scale", "smoke", "--max-runs", "2", "--runs-dir", str(runs), "--quiet", "--offline"])
    out = capsys.readouterr()
    problems = []
    for f in files:
        name = Path(f).stem
        sweep_dir = runs / "smoke" / name
        index = json.loads((sweep_dir / "sweep.json").read_text())
        assert index["scale"] == "smoke" and index["n_points"] == 2
        for point in index["points"]:
            summary = json.loads((sweep_dir / point["run_id"] / "summary.json").read_text())
            if summary["status"] not in ("finished", "diverged"):
                problems.append(f"{name}/{point['run_id']}: {summary['status']}: {summary.get('error')}")
            elif summary["status"] == "finished":
                assert index["metric"]["name"] in summary["metrics"], (name, sorted(summary["metrics"]))
    assert not problems, "\n".join(problems) + "\n" + out.out[-3000:]
    assert rc == 0, out.out[-3000:] + out.err[-3000:]
