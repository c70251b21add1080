"""What the local executor adds per run beyond training (target: <= 5 s).

The sweep is a small grid file (``sweeps.testing.write_fake_sweep``: 8 points) and each run is the
trivial ``sweeps.testing.fake_train`` (writes the run record, sleeps ``--sleep`` seconds, finishes),
so everything measured is executor work: planning with ``sweeps.next_run``, claims (flock), forking the
child, its record files, the index. Two ways:

- in process: ``run_sweep(path, ExecutorOptions(workers=1), run_fn=fake_train)``;
- end to end: ``ablate sweep <file> --runner ...fake_train`` in a fresh process (adds the CLI start:
  Python, torch and Lightning imports), divided by the number of runs.

Overhead per run = (wall time - runs x sleep) / runs.

    python benchmarks/sweep_overhead.py [--sleep 0.5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

RUNNER = "transformer_ablations.sweeps.testing:fake_train"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sleep", type=float, default=0.5, help="seconds each fake run 'trains'")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    print(_common.machine_line())
    try:
        from transformer_ablations.sweeps.executor import ExecutorOptions, run_sweep
        from transformer_ablations.sweeps.testing import src_pythonpath, write_fake_sweep
    except Exception as e:  # noqa: BLE001
        print(f"skipped: the local executor API is not there ({type(e).__name__}: {e})")
        return {"skipped": str(e)}
    os.environ["FAKE_TRAIN_SLEEP"] = str(args.sleep)
    os.environ.setdefault("WANDB_MODE", "disabled")
    result: dict = {"sleep_s": args.sleep}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ta_sweep_bench_") as d:
        tmp = Path(d)
        path = write_fake_sweep(tmp / "a")
        t0 = time.perf_counter()
        res = run_sweep(path, ExecutorOptions(workers=1, runs_dir=tmp / "runs_a", quiet=True, stream=io.StringIO()),
                        run_fn=RUNNER)
        wall = time.perf_counter() - t0
        n = res.total
        per_run = (wall - n * args.sleep) / n
        result["in_process"] = {"runs": n, "finished": res.count("finished"), "wall_s": wall, "overhead_per_run_s": per_run}
        rows.append(["in process (run_sweep)", n, res.count("finished"), f"{wall:.1f}", f"{per_run:.2f}"])

        path = write_fake_sweep(tmp / "b")
        env = dict(os.environ, PYTHONPATH=src_pythonpath(), OMP_NUM_THREADS="1")
        ablate = [sys.executable, "-m", "transformer_ablations.cli"]
        cmd = [*ablate, "sweep", str(path), "--workers", "1", "--runs-dir", str(tmp / "runs_b"), "--quiet",
               "--runner", RUNNER, "--offline"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        finished = len([s for s in (tmp / "runs_b").rglob("summary.json")
                        if json.loads(s.read_text()).get("status") == "finished"])
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            print(f"end-to-end run exited {proc.returncode}: {' | '.join(tail)}")
        per_run = (wall - n * args.sleep) / n
        result["cli"] = {"runs": n, "finished": finished, "wall_s": wall, "overhead_per_run_s": per_run,
                         "returncode": proc.returncode}
        rows.append(["end to end (ablate sweep)", n, finished, f"{wall:.1f}", f"{per_run:.2f}"])
    from transformer_ablations.bench.timing import fmt_table

    print(f"\nlocal executor, {n} runs of a trivial run function ({args.sleep} s each), 1 worker")
    print(fmt_table(["how", "runs", "finished", "wall s", "overhead s/run"], rows))
    worst = max(r["overhead_per_run_s"] for r in (result["in_process"], result["cli"]))
    print(f"overhead per run: at most {worst:.2f} s ({'meets' if worst <= 5 else 'MISSES'} the 5 s target)")
    return _common.write_json(args.json, result)


if __name__ == "__main__":
    main(sys.argv[1:])
