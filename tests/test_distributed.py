"""DDP on CPU (gloo, 2 processes): one run record, one wandb run, and the same step-0 loss as a
single process, because the global batch stays fixed whatever the device count. (A
classification task: each rank averages over the same number of examples, so the mean of the
rank means is the global mean; for MLM the ranks' masked-token counts differ.)"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fit(out: Path, devices: int) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_API_KEY": "", "HOME": str(out)}
    argv = [
        sys.executable, "-m", "transformer_ablations.cli", "fit",
        "--config", str(ROOT / "experiments" / "q2_positional.yaml"), "--scale=smoke",
        f"--train.out_dir={out / 'runs'}", f"--data.cache_dir={out / 'cache'}",
        "--train.accelerator=cpu", f"--train.devices={devices}", "--train.strategy=ddp" if devices > 1 else "--train.strategy=auto",
        "--train.log_every=1", "--train.wandb=offline",
    ]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=out, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (run_dir,) = (out / "runs" / "q2_positional").iterdir()
    return run_dir


def step0_loss(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/loss")]
    return float(next(r for r in rows if r["step"] == "0")["train/loss"])


def test_ddp_two_cpu_processes_match_single_process_at_step_0(tmp_path):
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    single = fit(tmp_path / "one", devices=1)
    ddp = fit(tmp_path / "two", devices=2)
    assert json.loads((ddp / "summary.json").read_text())["status"] == "finished"
    assert len(list((tmp_path / "two" / "runs" / "q2_positional").iterdir())) == 1
    assert len(list((ddp / "wandb").glob("offline-run-*"))) == 1
    assert abs(step0_loss(ddp) - step0_loss(single)) < 1e-5 * abs(step0_loss(single))
