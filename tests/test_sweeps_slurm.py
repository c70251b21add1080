"""The SLURM array template renders with the sweep id and array size, and bash accepts it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from transformer_ablations.cli import dispatch
from transformer_ablations.config import ConfigError
from transformer_ablations.sweeps.slurm import render_slurm, runs_per_task


def _bash_n(tmp_path, text):
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is needed to check the sbatch script")
    path = tmp_path / "job.sbatch"
    path.write_text(text)
    proc = subprocess.run([bash, "-n", str(path)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_renders_array_of_agents(tmp_path):
    text = render_slurm("team/proj/abc123", 8, 3, partition="gpu", time="04:00:00", max_parallel=4,
                        workdir=tmp_path, job_name="ablate-q1_scaling")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --array=0-7%4" in lines
    assert "#SBATCH --gres=gpu:1" in lines
    assert "#SBATCH --partition=gpu" in lines
    assert "#SBATCH --time=04:00:00" in lines
    assert "#SBATCH --job-name=ablate-q1_scaling" in lines
    assert 'exec wandb agent --count 3 "$SWEEP_ID"' in lines
    assert "SWEEP_ID=team/proj/abc123" in lines
    assert "{{" not in text
    # every #SBATCH line comes before the first command
    first_cmd = next(i for i, l in enumerate(lines) if l and not l.startswith("#"))
    assert all(i < first_cmd for i, l in enumerate(lines) if l.startswith("#SBATCH"))
    _bash_n(tmp_path, text)


def test_renders_without_count_or_partition(tmp_path):
    text = render_slurm("abc123", 1, workdir=tmp_path)
    assert "#SBATCH --array=0-0" in text and "--partition" not in text
    assert 'exec wandb agent "$SWEEP_ID"' in text
    _bash_n(tmp_path, text)


def test_refuses_bad_values(tmp_path):
    for kwargs, needle in (({"tasks": 0}, "--tasks"), ({"tasks": 2, "count": 0}, "--count"),
                           ({"tasks": 2, "partition": "gpu\n#SBATCH --x"}, "partition")):
        with pytest.raises(ConfigError, match=needle):
            render_slurm("abc123", **kwargs)
    with pytest.raises(ConfigError, match="sweep id"):
        render_slurm("abc 123; rm -rf ~", 2)


def test_runs_per_task():
    assert runs_per_task(18, 8) == 3 and runs_per_task(4, 8) == 1 and runs_per_task(36, 6) == 6


def test_slurm_command_writes_the_script(tmp_path, capsys):
    out = tmp_path / "q1.sbatch"
    assert dispatch(["slurm", "team/proj/abc123", "--tasks", "6", "--count", "3", "--out", str(out)]) == 0
    text = out.read_text()
    assert "#SBATCH --array=0-5" in text and "--count 3" in text
    assert f"sbatch {out}" in capsys.readouterr().out
    _bash_n(tmp_path, text)
    assert dispatch(["slurm", "abc123", "--tasks", "2"]) == 0
    assert "#SBATCH --array=0-1" in capsys.readouterr().out
