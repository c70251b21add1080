"""The GPU check's steps (``benchmarks/gpu_check.sh OUTDIR [--dry-run]`` runs this after setting up
packages; see its header). Each step runs in its own process with a time cap, inside an overall budget
of 470 s (the check must finish in 8 minutes on one H100/H200), its output in ``OUTDIR/logs/STEP.log``
(all of them also in ``OUTDIR/gpu_check.log``); ``OUTDIR/gpu_check.json`` gets every step's command,
exit code, seconds, status and results. A failing step does not stop the next. They run in the order
env, pytest, ddp, sweep, mfu, attention (the numbers below are the issue's): short steps first.

1. ``pytest``: ``pytest -m gpu tests`` (the CUDA half of tests/test_gpu_properties.py) -> junit XML.
2. ``sweep``: Q2 (sweeps/q2_positional.yaml, 30 runs, quick scale) through the local executor on the
   GPU (``--gpus 0``) and, at the same time, on this machine's CPU (``CUDA_VISIBLE_DEVICES=``): the same
   runs, configs and seeds. ``ablate report`` on each; the verdicts agree in direction when no Q2 claim
   has its 95% CI above zero on one device and below zero on the other, and no claim is supported on
   one and contradicted on the other (``compare_verdicts``).
3. ``mfu``: ``gpu_mfu.py`` (124M decoder, T 1024, bf16, flash SDPA, compiled; MFU, tokens/s, memory).
4. ``attention``: ``attention_cost --device cuda --compile``, dot_sdpa vs additive, T 256 ... 4096.
5. ``ddp``: whether NCCL lets 2 processes share one GPU (``--nccl-probe``), then a single-process DDP
   run (NCCL, world size 1) of ``ablate fit`` (q2 smoke): one record and one offline wandb run.
   Lightning places rank r on cuda:r, so ``ablate fit`` cannot put two ranks on one GPU whatever NCCL
   allows; the probe says whether a 2-GPU machine is needed for the 2-process case.

``--dry-run`` (on a CPU) checks every step's command instead: pytest collects the GPU tests, the sweep
files validate (``--check``; ``--gpus 0`` is left out: it is checked against the CUDA devices that
exist), ``report --help`` works, gpu_mfu.py runs its tiny CPU configuration with the step's arguments,
the attention and fit arguments parse (the fit config validates), and the NCCL probe runs on gloo/CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import _common

ROOT = _common.ROOT
PY = sys.executable
BUDGET_S = 470
QUESTION, SWEEP = "q2", "q2_positional"
GPU_WORKERS, CPU_WORKERS = 8, 8  # 16 cores: 2 threads per run (the executor splits them)
CAPS = {"pytest": 100, "ddp": 75, "sweep": 170, "mfu": 180, "attention": 120}  # seconds per step, within BUDGET_S
PACKAGES = ("torch", "lightning", "torchmetrics", "jsonargparse", "wandb", "datasets", "sweeps", "sentencepiece",
            "scipy", "safetensors")


def commands(out: Path) -> dict[str, list[str]]:
    """Every command the check runs (the dry run checks these same lists)."""
    cli, runs = [PY, "-m", "transformer_ablations.cli"], str(out / "runs")
    sweep = [*cli, "sweep", QUESTION, "--scale", "quick", "--offline", "--quiet", "--runs-dir", runs]
    return {
        "pytest": [PY, "-m", "pytest", "-m", "gpu", "tests", "-p", "no:cacheprovider", "-rs",
                   f"--junitxml={out / 'pytest_gpu.xml'}"],
        "sweep_gpu": [*sweep, "--suite", "gpu", "--gpus", "0", "--workers", str(GPU_WORKERS)],
        "sweep_cpu": [*sweep, "--suite", "cpu", "--workers", str(CPU_WORKERS)],
        "report_gpu": [*cli, "report", "--suite", "gpu", "--runs-dir", runs, "--out", str(out / "reports")],
        "report_cpu": [*cli, "report", "--suite", "cpu", "--runs-dir", runs, "--out", str(out / "reports")],
        "mfu": [PY, "benchmarks/gpu_mfu.py", "--batch", "32", "--steps", "10", "--warmup", "3",
                "--variants", "dense", "task", "--json", str(out / "mfu.json")],
        "attention": [PY, "-m", "transformer_ablations.bench.attention_cost", "--device", "cuda", "--compile",
                      "--kinds", "dot_sdpa", "additive", "--lengths", "256,512,1024,2048,4096",
                      "--repeats", "3", "--out", str(out / "attention_cost_gpu.json")],
        "nccl_probe": [PY, "benchmarks/gpu_check.py", "--nccl-probe", str(out / "nccl_probe.json")],
        "ddp": [*cli, "fit", "--config", f"experiments/{SWEEP}.yaml", "--scale=smoke",
                f"--train.out_dir={out / 'ddp' / 'runs'}", f"--data.cache_dir={out / 'ddp' / 'cache'}",
                "--train.accelerator=gpu", "--train.devices=1", "--train.strategy=ddp", "--train.wandb=offline",
                "--train.log_every=1"],
    }


class Check:
    """Runs commands under the budget and keeps the log."""

    def __init__(self, out: Path, dry_run: bool):
        self.out, self.dry_run, self.t0 = out, dry_run, time.monotonic()
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
                    "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}

    def left(self) -> float:
        return BUDGET_S - (time.monotonic() - self.t0)

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.out / "logs" / f"{name}.log"
        with open(log, "w") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **(env or {})}, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        return proc, log

    def wait(self, name: str, proc: subprocess.Popen, log: Path, cmd: list[str], cap: float, t0: float) -> dict:
        try:
            rc = proc.wait(timeout=max(1.0, min(cap - (time.monotonic() - t0), self.left())))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = "timeout"
        seconds = round(time.monotonic() - t0, 1)
        text = log.read_text(errors="replace")
        with open(self.out / "gpu_check.log", "a") as fh:
            fh.write(f"\n===== {name} (rc {rc}, {seconds} s)\n{text}")
        print(f"[gpu_check] {name}: rc {rc}, {seconds} s", flush=True)
        return {"cmd": cmd, "rc": rc, "seconds": seconds, "log": str(log), "tail": text[-1500:]}

    def run(self, name: str, cmd: list[str], cap: float, env: dict | None = None) -> dict:
        if self.left() < 15:
            return {"cmd": cmd, "rc": "skipped", "seconds": 0, "tail": "out of the check's time budget"}
        t0 = time.monotonic()
        proc, log = self.start(name, cmd, env)
        return self.wait(name, proc, log, cmd, cap, t0)


# --- results ------------------------------------------------------------------------------------
def read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def junit_summary(path: Path) -> dict:
    """tests, failures, errors, skipped and the failed tests' first message line from a junit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return {"error": f"no junit XML: {e}"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}: {(bad.get('message') or '')[:200]}")
    return {**counts, "passed": counts["tests"] - sum(counts[k] for k in ("failures", "errors", "skipped")),
            "failed": failed}


def direction(v: dict) -> str:
    """'+' / '-' when the 95% CI of the oriented effect excludes zero on that side, '0' when it covers
    zero, '?' when there is no effect (claim not evaluated)."""
    lo, hi, effect = v.get("ci_low"), v.get("ci_high"), v.get("effect")
    if effect is None:
        return "?"
    if lo is None or hi is None:  # deterministic: the value itself
        return "+" if effect > 0 else "-" if effect < 0 else "0"
    return "+" if lo > 0 else "-" if hi < 0 else "0"


def compare_verdicts(cpu: list[dict], gpu: list[dict], question: str = QUESTION) -> dict:
    """Per claim of ``question``: verdict and CI direction on each device; ``agree`` unless a claim's
    directions are opposite (+ vs -) or its verdicts are (supported vs contradicted)."""
    by_id = {v["id"]: v for v in gpu if v.get("question") == question}
    claims, opposite = [], []
    for c in (v for v in cpu if v.get("question") == question):
        g = by_id.get(c["id"], {})
        dirs = direction(c), direction(g) if g else "?"
        verdicts = c.get("verdict"), g.get("verdict")
        clash = set(dirs) == {"+", "-"} or set(verdicts) == {"supported", "contradicted"}
        claims.append({"id": c["id"], "cpu": {"verdict": verdicts[0], "effect": c.get("effect"), "dir": dirs[0]},
                       "gpu": {"verdict": verdicts[1], "effect": g.get("effect"), "dir": dirs[1]},
                       "same_verdict": verdicts[0] == verdicts[1]})
        if clash:
            opposite.append(c["id"])
    return {"question": question, "claims": claims, "n_claims": len(claims),
            "same_verdicts": sum(c["same_verdict"] for c in claims), "opposite": opposite,
            "agree": bool(claims) and not opposite and len(by_id) == len(claims)}


def run_counts(runs_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for summary in runs_dir.glob("*/summary.json"):
        status = (read_json(summary) or {}).get("status", "unreadable")
        counts[status] = counts.get(status, 0) + 1
    return counts


def attention_ratios(path: Path) -> dict | None:
    """Per T: median ms and MiB of dot_sdpa and additive, and the additive / dot ratios."""
    data = read_json(path)
    if not data:
        return None
    from transformer_ablations.bench.attention_cost import summarize

    s = summarize(data["rows"])
    out = {}
    for t in sorted({t for _, t in s}):
        a, d = s.get(("additive", t)), s.get(("dot_sdpa", t))
        if a and d:
            out[t] = {"dot_ms": d["time_ms"], "additive_ms": a["time_ms"], "time_ratio": a["time_ms"] / d["time_ms"],
                      "dot_mib": d["peak_mem_mb"], "additive_mib": a["peak_mem_mb"],
                      "mem_ratio": a["peak_mem_mb"] / d["peak_mem_mb"]}
    return out


def ddp_record(runs_root: Path) -> dict:
    """The DDP run's record: one run directory, its status, and its offline wandb runs."""
    dirs = [d for d in sorted(runs_root.glob(f"{SWEEP}/*")) if (d / "summary.json").is_file()]
    if not dirs:
        return {"runs": 0}
    summary = read_json(dirs[0] / "summary.json") or {}
    return {"runs": len(dirs), "status": summary.get("status"),
            "wandb_runs": len(list((dirs[0] / "wandb").glob("offline-run-*"))),
            "strategy": summary.get("config", {}).get("train", {}).get("strategy")}


def ddp_ok(record: dict) -> bool:
    return record.get("runs") == 1 and record.get("status") == "finished" and record.get("wandb_runs") == 1


# --- the NCCL probe: may two processes share one GPU? -------------------------------------------------
def _probe_worker(rank: int, init_file: str, backend: str, device: str) -> None:
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(0)  # both ranks on the one GPU
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=2)
    x = torch.full((4,), float(rank + 1), device=device)
    dist.all_reduce(x)
    dist.destroy_process_group()
    if x.tolist() != [3.0] * 4:
        raise RuntimeError(f"all_reduce gave {x.tolist()}, expected [3.0] * 4")


def nccl_probe(out_json: Path, backend: str = "nccl", device: str = "cuda", timeout: float = 60) -> dict:
    """Two ranks on cuda:0 (or the CPU), one all_reduce. -> {"allowed": bool, "error": str | None}."""
    import torch.multiprocessing as mp

    fd, init_file = tempfile.mkstemp(prefix="nccl_probe_")
    os.close(fd)
    os.unlink(init_file)  # the file store creates it
    t0, result = time.monotonic(), {"backend": backend, "device": device, "allowed": False, "error": None}
    try:
        ctx = mp.spawn(_probe_worker, args=(init_file, backend, device), nprocs=2, join=False)
        while not ctx.join(timeout=1):
            if time.monotonic() - t0 > timeout:
                for p in ctx.processes:
                    p.kill()
                result["error"] = f"hung: no all_reduce after {timeout:.0f} s"
                break
        else:
            result["allowed"] = True
    except Exception as e:  # noqa: BLE001  (the probe's answer is the error: e.g. NCCL's "Duplicate GPU detected")
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        result["error"] = next((ln for ln in lines if "Duplicate GPU" in ln), lines[-1] if lines else repr(e))[:300]
    finally:
        Path(init_file).unlink(missing_ok=True)
    result["seconds"] = round(time.monotonic() - t0, 1)
    _common.write_json(out_json, result)
    return result


# --- the steps: run (on the GPU) or check (--dry-run, on a CPU) ----------------------------------------
def step_env(chk: Check) -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "missing"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        smi = None
    try:  # conflicts between the wheels (installed without dependency resolution) and the image: for the record
        check = subprocess.run([PY, "-m", "pip", "check"], capture_output=True, text=True, timeout=60, check=False)
        conflicts = [ln for ln in check.stdout.splitlines() if "requires" in ln or "has requirement" in ln]
    except (OSError, subprocess.TimeoutExpired):
        conflicts = ["pip check did not run"]
    missing = [n for n, v in versions.items() if v == "missing"]
    result = {"python": platform.python_version(), "versions": versions, "torch_cuda": torch.version.cuda,
              "cuda_devices": torch.cuda.device_count(), "nvidia_smi": smi, "cpus": os.cpu_count(),
              "pip_check": conflicts[:40]}
    return {"status": "failed" if missing else "ok", "result": result,
            **({"error": f"packages missing: {', '.join(missing)} (see gpu_check.sh's header)"} if missing else {})}


def step_pytest(chk: Check, cmd: list[str]) -> dict:
    if chk.dry_run:
        r = chk.run("pytest", [*cmd, "--collect-only"], CAPS["pytest"])
        ids = [ln for ln in Path(r.get("log", "")).read_text().splitlines() if "::" in ln] if "log" in r else []
        r["result"] = {"collected": len(ids)}
        good = r["rc"] == 0 and ids and all("cuda" in i or "gpu" in i for i in ids)
        return {**r, "status": "ok" if good else "failed"}
    r = chk.run("pytest", cmd, CAPS["pytest"])
    r["result"] = junit_summary(chk.out / "pytest_gpu.xml")
    res = r["result"]
    good = r["rc"] == 0 and res.get("tests", 0) > 0 and not res.get("skipped") and not res.get("failed")
    return {**r, "status": "ok" if good else "failed"}


def step_sweep(chk: Check, cmds: dict[str, list[str]]) -> dict:
    if chk.dry_run:
        gpu = [c for c in cmds["sweep_gpu"] if c not in ("--gpus", "0")]
        runs = [chk.run("sweep_gpu", [*gpu, "--check"], 60), chk.run("sweep_cpu", [*cmds["sweep_cpu"], "--check"], 60),
                chk.run("report", [*cmds["report_gpu"], "--help"], 60)]
        return {"commands": [r["cmd"] for r in runs], "rc": [r["rc"] for r in runs],
                "status": "ok" if all(r["rc"] == 0 for r in runs) else "failed", "tail": runs[0]["tail"]}
    t0 = time.monotonic()
    procs = {name: chk.start(name, cmds[name], env) for name, env in
             (("sweep_gpu", None), ("sweep_cpu", {"CUDA_VISIBLE_DEVICES": ""}))}
    done = {name: chk.wait(name, p, log, cmds[name], CAPS["sweep"], t0) for name, (p, log) in procs.items()}
    for suite in ("gpu", "cpu"):
        done[f"report_{suite}"] = chk.run(f"report_{suite}", cmds[f"report_{suite}"], 60)
    verdicts = {s: read_json(chk.out / "reports" / s / "verdicts.json") for s in ("gpu", "cpu")}
    comparison = compare_verdicts(verdicts["cpu"], verdicts["gpu"]) if all(verdicts.values()) else None
    result = {"runs_gpu": run_counts(chk.out / "runs" / "gpu" / SWEEP),
              "runs_cpu": run_counts(chk.out / "runs" / "cpu" / SWEEP), "comparison": comparison}
    good = all(r["rc"] == 0 for r in done.values()) and comparison is not None and comparison["agree"]
    return {"commands": [r["cmd"] for r in done.values()], "rc": {k: r["rc"] for k, r in done.items()},
            "seconds": round(time.monotonic() - t0, 1), "result": result, "status": "ok" if good else "failed"}


def step_mfu(chk: Check, cmd: list[str]) -> dict:
    extra = ["--dry-run", "--steps", "1", "--warmup", "1", "--no-compile"] if chk.dry_run else []
    r = chk.run("mfu", [*cmd, *extra], CAPS["mfu"])
    r["result"] = read_json(chk.out / "mfu.json")
    variants = (r["result"] or {}).get("variants", {})
    return {**r, "status": "ok" if r["rc"] == 0 and set(variants) == {"dense", "task"} else "failed"}


def step_attention(chk: Check, cmd: list[str]) -> dict:
    if chk.dry_run:
        from transformer_ablations.bench.attention_cost import parser

        try:
            a = parser().parse_args(cmd[3:])
        except SystemExit:
            return {"cmd": cmd, "status": "failed", "error": "the attention_cost arguments do not parse"}
        good = a.device == "cuda" and a.compile == "inductor" and max(a.lengths) == 4096
        return {"cmd": cmd, "status": "ok" if good else "failed", "result": {"parsed": {
            "device": a.device, "compile": a.compile, "lengths": a.lengths, "kinds": a.kinds}}}
    r = chk.run("attention", cmd, CAPS["attention"])
    r["result"] = attention_ratios(chk.out / "attention_cost_gpu.json")
    return {**r, "status": "ok" if r["rc"] == 0 and r["result"] and 4096 in r["result"] else "failed"}


def step_ddp(chk: Check, probe_cmd: list[str], fit_cmd: list[str]) -> dict:
    t0 = time.monotonic()
    probe = chk.run("nccl_probe", [*probe_cmd, *(["--backend", "gloo", "--device", "cpu"] if chk.dry_run else [])], 60)
    answer = read_json(chk.out / "nccl_probe.json") or {}
    if chk.dry_run:
        from transformer_ablations.cli import parse_run_config

        cfg = parse_run_config(fit_cmd[fit_cmd.index("fit") + 1:])
        good = answer.get("allowed") is True and (cfg.train.strategy, cfg.train.accelerator) == ("ddp", "gpu")
        return {"commands": [probe["cmd"], fit_cmd], "status": "ok" if good else "failed",
                "result": {"probe": answer}}
    fit = chk.run("ddp", fit_cmd, max(10, CAPS["ddp"] - (time.monotonic() - t0)))
    record = ddp_record(chk.out / "ddp" / "runs")
    note = ("NCCL allows two processes on one GPU, but Lightning places rank r on cuda:r: the two-process "
            "run needs two GPUs; ran single-process DDP") if answer.get("allowed") else \
        "NCCL refuses two processes on one GPU: ran single-process DDP (NCCL, world size 1)"
    return {"commands": [probe["cmd"], fit_cmd], "rc": {"nccl_probe": probe["rc"], "ddp": fit["rc"]},
            "seconds": round(time.monotonic() - t0, 1), "tail": fit["tail"],
            "result": {"probe": answer, "record": record, "note": note},
            "status": "ok" if fit["rc"] == 0 and ddp_ok(record) else "failed"}


def commit() -> str:
    if os.environ.get("GPU_CHECK_COMMIT"):
        return os.environ["GPU_CHECK_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git here: set GPU_CHECK_COMMIT)"


def run_check(out: Path, dry_run: bool) -> dict:
    chk, cmds = Check(out, dry_run), commands(out)
    report = {"commit": commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "dry_run": dry_run, "budget_s": BUDGET_S, "steps": {}}
    steps = {
        "env": lambda: step_env(chk),
        "pytest": lambda: step_pytest(chk, cmds["pytest"]),
        "ddp": lambda: step_ddp(chk, cmds["nccl_probe"], cmds["ddp"]),
        "sweep": lambda: step_sweep(chk, cmds),
        "mfu": lambda: step_mfu(chk, cmds["mfu"]),
        "attention": lambda: step_attention(chk, cmds["attention"]),
    }  # the short steps first: a budget overrun cuts the long ones, whose JSON keeps what they measured
    for name, step in steps.items():
        try:
            report["steps"][name] = step()
        except Exception as e:  # noqa: BLE001  (a step's crash is its result; the next step still runs)
            report["steps"][name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:500]}
        report["seconds"] = round(time.monotonic() - chk.t0, 1)
        report["ok"] = all(s.get("status") == "ok" for s in report["steps"].values())
        _common.write_json(out / "gpu_check.json", report)  # after every step: a killed check keeps its results
    print(f"[gpu_check] {'all steps ok' if report['ok'] else 'FAILED: ' + ', '.join(n for n, s in report['steps'].items() if s.get('status') != 'ok')}"
          f" ({report['seconds']} s); results in {out / 'gpu_check.json'}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", type=Path, help="folder for gpu_check.json, gpu_check.log and the step files")
    p.add_argument("--dry-run", action="store_true", help="check every step's command on a CPU")
    p.add_argument("--nccl-probe", type=Path, metavar="JSON", help="only the probe: two ranks on one GPU")
    p.add_argument("--backend", default="nccl", choices=["nccl", "gloo"], help="for --nccl-probe")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="for --nccl-probe")
    args = p.parse_args(argv)
    if args.nccl_probe:
        print(json.dumps(nccl_probe(args.nccl_probe, args.backend, args.device)))
        return 0
    if args.out is None:
        p.error("OUTDIR is required (e.g. runs/gpu_check)")
    if (args.out / "gpu_check.json").exists():
        print(f"gpu_check: {args.out} already holds a check (gpu_check.json); give a new folder", file=sys.stderr)
        return 2
    if not args.dry_run:
        import torch

        if torch.cuda.device_count() == 0:
            print("gpu_check: no CUDA device on this machine; --dry-run checks the steps on a CPU", file=sys.stderr)
            return 2
    return 0 if run_check(args.out, args.dry_run)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
