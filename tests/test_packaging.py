"""A non-editable install works outside the checkout: the wheel carries experiments/, sweeps/ and
claims.yaml, found through importlib.resources; runs go under the current folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("pyproject.toml", "README.md", "src", "experiments", "sweeps")


def _run(argv, cwd, env, timeout=300):
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"{argv}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """The wheel built from a copy of the tree (no network, this interpreter's setuptools), installed
    into a fresh venv that reuses this environment's dependencies through a .pth file."""
    base = tmp_path_factory.mktemp("pkg")
    tree = base / "tree"
    for name in SHIPPED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(src, tree / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          str(tree), "-w", str(base / "dist")], base, env)
    wheel = next((base / "dist").glob("transformer_ablations-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("assets/experiments/claims.yaml", "assets/experiments/q1_scaling.yaml",
                 "assets/sweeps/q2_positional.yaml", "assets/sweeps/slurm_agent.sbatch"):
        assert f"transformer_ablations/{want}" in names, want
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], base, env)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     base, env).stdout.strip())
    # after the package: the venv's own site-packages comes first on sys.path, the dependencies after
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv, env


def test_wheel_install_runs_a_smoke_fit_and_a_sweep_check_from_another_folder(installed, tmp_path):
    venv, env = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(venv / "bin" / "python"), "-c", "import transformer_ablations as t; print(t.__file__)"],
                 work, env).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    ablate = str(venv / "bin" / "ablate")
    res = _run([ablate, "fit", "--config", "q1_scaling", "--scale=smoke", "--train.wandb=disabled",
                "--train.accelerator=cpu"], work, {**env, "OMP_NUM_THREADS": "1"})
    assert "[finished] runs/q1_scaling/" in res.stdout
    assert len(list((work / "runs" / "q1_scaling").glob("s0-*/checkpoints/last.ckpt"))) == 1
    res = _run([ablate, "fit", "--config", "experiments/q2_positional.yaml", "--scale=smoke", "--print_config"],
               work, env)
    assert "experiment: q2_positional" in res.stdout
    res = _run([ablate, "sweep", "q2", "--scale", "smoke", "--check"], work, env)
    assert "q2_positional" in res.stdout
    report = subprocess.run([ablate, "report", "--suite", "smoke"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300, check=False)  # finds the packaged claims and sweeps, then the (absent) runs
    assert report.returncode == 2 and "no run records under runs/smoke" in report.stderr, report.stderr[-2000:]
    assert sorted(p.name for p in work.iterdir()) == [".cache", "runs"]  # outputs under the current folder only
