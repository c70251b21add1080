"""Every benchmark, one after the other (what ``make bench`` runs), then a summary.

Each benchmark runs in its own process (so one's memory, threads and compile caches do not touch
the next), its output streamed, its JSON written to ``runs/bench/``. The whole set is sized to
finish in under 15 minutes on a 2-core CPU; a benchmark still running past its time budget is
stopped and reported as such.

    python benchmarks/run_all.py [--only throughput attention data sweep gpu] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common

HERE = Path(__file__).resolve().parent

# name -> (script, arguments, time budget in seconds)
BENCHMARKS = {
    "throughput": ("throughput_vs_transformers.py", ["--compile", "--repeats", "7", "--steps", "1", "--warmup", "2"], 420),
    "attention": ("attention_cost.py", ["--repeats", "5"], 150),
    "data": ("data_overhead.py", [], 330),
    "sweep": ("sweep_overhead.py", [], 90),
    "gpu": ("gpu_mfu.py", [], 600),
}


def run(name: str, out: Path) -> tuple[float, int | str]:
    script, args, budget = BENCHMARKS[name]
    json_path = out / f"{name}.json"
    cmd = [sys.executable, str(HERE / script), *args]
    cmd += ["--out", str(json_path)] if name == "attention" else ["--json", str(json_path)]
    print(f"\n=== {name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
    try:
        proc = subprocess.run(cmd, check=False, env=env, timeout=budget)
        status: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        status = f"stopped after its {budget} s budget"
    return time.perf_counter() - t0, status


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(out: Path, durations: dict) -> None:
    print("\n=== summary")
    for name, (seconds, status) in durations.items():
        print(f"  {name:11s} {seconds:6.0f} s  {'ok' if status == 0 else status}")
    tp = _load(out / "throughput.json")
    if tp:
        for kind, res in tp.items():
            parts = [f"{n}: {v['ratio_vs_hf']:.2f}x wall, {v['cpu_ratio_vs_hf']:.2f}x cpu"
                     for n, v in res.items() if not n.startswith("hf")]
            print(f"  throughput {kind} vs transformers (target >= 1.2x): " + "; ".join(parts))
    ac = _load(out / "attention.json")
    if ac and ac.get("rows"):
        from transformer_ablations.bench.attention_cost import summarize

        s = summarize(ac["rows"])
        t = max(t for _, t in s)
        if all((k, t) in s for k in ("additive", "dot_sdpa", "dot_reference")):
            a, d, r = s[("additive", t)], s[("dot_sdpa", t)], s[("dot_reference", t)]
            print(f"  attention at T={t}: additive/dot_sdpa time {a['time_ms'] / d['time_ms']:.1f}x, "
                  f"memory {a['peak_mem_mb'] / d['peak_mem_mb']:.2f}x (target <= 4x); "
                  f"additive/dot_reference memory {a['peak_mem_mb'] / r['peak_mem_mb']:.2f}x")
    data = _load(out / "data.json")
    if data:
        for key, v in (data.get("a") or {}).items():
            if isinstance(v, dict) and "first_batch_s" in v:
                print(f"  data {key}: first batch {v['first_batch_s']:.2f} s (process {v['process_s']:.1f} s)")
        for key, v in (data.get("b") or {}).items():
            if isinstance(v, dict) and "peak_mb" in v:
                print(f"  data tokenize {v['file_mb']:.0f} MB file: peak RSS {v['peak_mb']:.0f} MB {v.get('note') or ''}")
    sw = _load(out / "sweep.json")
    if sw and "in_process" in sw:
        print(f"  sweep overhead per run: {sw['in_process']['overhead_per_run_s']:.2f} s in process, "
              f"{sw['cli']['overhead_per_run_s']:.2f} s end to end (target <= 5 s)")
    gpu = _load(out / "gpu.json")
    if gpu:
        if "skipped" in gpu:
            print(f"  gpu: {gpu['skipped']}")
        for v, r in (gpu.get("variants") or {}).items():
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "?"
            print(f"  gpu {v}: {r['tokens_per_s']:,.0f} tokens/s, MFU {mfu} (target >= 40%)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    p.add_argument("--out", type=Path, default=_common.ROOT / "runs" / "bench")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(_common.machine_line())
    t0 = time.perf_counter()
    durations = {}
    for name in args.only:
        (args.out / f"{name}.json").unlink(missing_ok=True)
        durations[name] = run(name, args.out)
    summary(args.out, durations)
    print(f"\nall benchmarks: {time.perf_counter() - t0:.0f} s; JSON in {args.out}")
    return 0 if all(s == 0 for _, s in durations.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
