"""benchmarks/gpu_check.sh on a CPU: its dry run checks every step's command, and the pieces that read
the GPU's results (verdict comparison, junit summary, DDP record) and attention_cost's --compile work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # benchmarks/ is not a package: imported from its folder


def verdict(cid: str, effect, lo, hi, v: str, question: str = "q2") -> dict:
    return {"id": cid, "question": question, "effect": effect, "ci_low": lo, "ci_high": hi, "verdict": v}


def test_verdict_directions_agree_and_clash():
    cpu = [verdict("a", 0.4, 0.3, 0.5, "supported"), verdict("b", 0.0, -0.1, 0.1, "not resolved — underpowered"),
           verdict("c", 0.01, None, None, "supported"), verdict("x", 1.0, 0.5, 1.5, "supported", question="q1")]
    same = [verdict("a", 0.35, 0.2, 0.5, "supported"), verdict("b", 0.05, -0.02, 0.12, "supported"),
            verdict("c", 0.02, None, None, "supported")]
    result = gpu_check.compare_verdicts(cpu, same)
    assert result["agree"] and result["n_claims"] == 3 and result["same_verdicts"] == 2  # q1's claim is not Q2's
    assert [c["gpu"]["dir"] for c in result["claims"]] == ["+", "0", "+"]
    flipped = [verdict("a", -0.3, -0.4, -0.2, "not resolved — underpowered"), *same[1:]]
    assert gpu_check.compare_verdicts(cpu, flipped)["opposite"] == ["a"]
    contradicted = [verdict("a", 0.1, -0.1, 0.3, "contradicted"), *same[1:]]
    assert not gpu_check.compare_verdicts(cpu, contradicted)["agree"]
    assert not gpu_check.compare_verdicts(cpu, same[:2])["agree"]  # a claim missing on the GPU
    assert not gpu_check.compare_verdicts([], [])["agree"]  # nothing compared is no agreement


def test_junit_summary_counts_and_failures(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="t" name="ok"/><testcase classname="t" name="bad"><failure message="boom"/></testcase>'
        '<testcase classname="t" name="sk"><skipped/></testcase></testsuite></testsuites>'
    )
    s = gpu_check.junit_summary(xml)
    assert (s["tests"], s["passed"], s["skipped"], s["failed"]) == (3, 1, 1, ["t::bad: boom"])
    assert "error" in gpu_check.junit_summary(tmp_path / "missing.xml")


def test_ddp_record_needs_one_finished_run_with_one_wandb_run(tmp_path):
    assert not gpu_check.ddp_ok(gpu_check.ddp_record(tmp_path))
    run = tmp_path / gpu_check.SWEEP / "s0-abc"
    (run / "wandb" / "offline-run-1").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"status": "finished", "config": {"train": {"strategy": "ddp"}}}))
    record = gpu_check.ddp_record(tmp_path)
    assert gpu_check.ddp_ok(record) and record["strategy"] == "ddp"
    (run / "wandb" / "offline-run-2").mkdir()
    assert not gpu_check.ddp_ok(gpu_check.ddp_record(tmp_path))


def test_attention_cost_compiles_every_layer():
    from transformer_ablations.bench import attention_cost

    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    rows = attention_cost.measure(kinds=("dot_sdpa", "additive"), lengths=(8, 16), d_k=8, n_heads=2, batch=1,
                                  repeats=1, device="cpu", min_time_s=0.0, compile=counting_backend)
    assert {(r["kind"], r["T"]) for r in rows} == {(k, t) for k in ("dot_sdpa", "additive") for t in (8, 16)}
    assert len(graphs) >= 4  # at least one graph per kind and T (dynamic=False)
    assert all(r["time_ms"] > 0 for r in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_without_cuda_the_check_refuses_and_creates_nothing(tmp_path, capsys):
    assert gpu_check.main([str(tmp_path / "out")]) == 2
    assert "--dry-run" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dry_run_checks_every_step(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    report = json.loads((out / "gpu_check.json").read_text())
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:], report)
    steps = report["steps"]
    assert list(steps) == ["env", "pytest", "ddp", "sweep", "mfu", "attention"]
    assert all(s["status"] == "ok" for s in steps.values()) and report["dry_run"] and report["ok"]
    assert steps["pytest"]["result"]["collected"] >= 20  # the CUDA half of test_gpu_properties.py
    assert set(steps["mfu"]["result"]["variants"]) == {"dense", "task"}
    assert steps["ddp"]["result"]["probe"]["allowed"]  # two gloo ranks on the CPU
    gpu_sweep = gpu_check.commands(out)["sweep_gpu"]
    assert gpu_sweep[gpu_sweep.index("--gpus") + 1] == "0"
    assert (out / "gpu_check.log").stat().st_size > 0
    again = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"], env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 2 and "already holds a check" in again.stderr  # nothing overwritten


def test_every_dependency_reaches_the_gpu_machine():
    """Each dependency in pyproject.toml is in the GPU image or travels as a wheel (gpu_wheels.txt)."""

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    lines = (ROOT / "benchmarks" / "gpu_wheels.txt").read_text().splitlines()
    image = {norm(n) for ln in lines if ln.startswith("# image:") for n in ln.split(":", 1)[1].split()}
    pins = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    wheels = {norm(ln.split("==")[0]) for ln in pins}
    assert image and wheels and all(re.fullmatch(r"[A-Za-z0-9_.-]+==\S+", ln) for ln in pins)
    toml = (ROOT / "pyproject.toml").read_text()  # (tomllib is 3.11+; the project supports 3.10)
    needed = set()
    for key in ("dependencies", "dev"):
        block = re.search(rf"^{key} = \[(.*?)\]\s*$", toml, re.MULTILINE | re.DOTALL).group(1)
        needed |= {norm(re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0]) for d in re.findall(r'"([^"]+)"', block)}
    assert {"torch", "wandb", "jsonargparse", "sweeps", "pytest"} <= needed
    assert needed - image - wheels - {"ruff"} == set()  # ruff lints here; the GPU check does not run it
