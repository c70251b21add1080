"""Data pipeline overheads.

(a) Cold vs warm start: time from a fresh process to the first training batch through
    ``build_datamodule(cfg)`` -> ``prepare_data()`` -> ``setup()`` -> ``next(iter(train_dataloader()))``,
    first with an empty cache (tokenizer trained, corpus tokenized, written) and then again on the same
    corpus and cache (everything loaded). Target: the warm run has its first batch within 3 s.
    Each run is a fresh ``python`` process; import time (torch, Lightning, datasets) is reported apart.
(b) Memory while tokenizing a 10 MB and a 100 MB text file, side by side: a synthetic text file is
    written to a temporary directory and put through the package's corpus path in a child process:
    ``corpora.load_text_corpus`` (reads the file through to check it), ``Tokenizer.train_or_load`` (hash of
    the sentences, sentencepiece on a sample) and ``prepare`` with that tokenizer (``data.task=corpus``,
    ``mlm_nsp``, ``n_train=0``: every document tokenized, every example built and saved to the cache). RSS
    is recorded after each stage, and the peak RSS (Linux ``VmHWM``, else ``ru_maxrss``; or the parent's 0.1 s
    polling if higher) at the end. Streaming keeps the peak flat in the file size: the 100 MB peak over the 10 MB peak is the
    figure to watch (about 1, not 10). RSS counts the pages of the memory-mapped Arrow files ``datasets``
    reads (page cache the kernel can drop), so the peak of anonymous memory (RSS less file-backed pages,
    polled) is shown too. A child is stopped past ``--limit-s`` seconds or ``--limit-gb`` of RSS (reported
    as such).

Parts whose API is missing are skipped with a note.

    python benchmarks/data_overhead.py [--mb 100] [--skip-b]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

CHILD_A = r"""
import json, sys, time
t0 = time.perf_counter()
from transformer_ablations.config import RunConfig, DataConfig, ModelConfig, TrainConfig
from transformer_ablations.tasks import build_datamodule
import torch  # noqa
t_import = time.perf_counter() - t0
source, cache, objective = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = RunConfig(objective=objective, data=DataConfig(source=source, task="corpus", seq_len=64, n_train=2000,
                n_val=256, vocab_size=2000, batch_size=32, cache_dir=cache),
                model=ModelConfig(arch="encoder" if objective != "causal" else "decoder"),
                train=TrainConfig(max_steps=100, val_every=100))
t1 = time.perf_counter()
dm = build_datamodule(cfg)
dm.prepare_data()
dm.setup("fit")
batch = next(iter(dm.train_dataloader()))
t_first = time.perf_counter() - t1
print("RESULT " + json.dumps({"import_s": t_import, "first_batch_s": t_first,
                              "batch": {k: list(v.shape) for k, v in batch.items()}}))
"""

CHILD_B = r"""
import json, resource, sys, time
import psutil
proc = psutil.Process()
def mb(): return proc.memory_info().rss / 2**20
# ru_maxrss survives execve: it starts at the parent's RSS. Only a value above that start is ours.
# Linux's VmHWM (peak RSS of this process image) starts afresh at execve: used where there is one.
START = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def peak():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        m = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return m / 1024 if m > START else mb()
stages = []
def stage(name, t0):
    stages.append({"stage": name, "s": round(time.perf_counter() - t0, 2), "rss_mb": round(mb()), "peak_mb": round(peak())})
    print("STAGE " + json.dumps(stages[-1]), flush=True)
t0 = time.perf_counter()
import datasets
from transformer_ablations.config import DataConfig, RunConfig
from transformer_ablations.data import corpora
from transformer_ablations.tasks import prepare
from transformer_ablations.data.tokenizer import Tokenizer
datasets.disable_progress_bars()
stage("import", t0)
path, cache, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3])
source = "file:" + path
t0 = time.perf_counter()
tc = corpora.load_text_corpus(source, None)  # n_train=0: the whole corpus
stage("load_text_corpus", t0)
t0 = time.perf_counter()
tok = Tokenizer.train_or_load((s for doc in tc.train_docs for s in doc), vocab, cache, "unigram")
stage("Tokenizer.train_or_load", t0)
t0 = time.perf_counter()
cfg = RunConfig(objective="mlm_nsp", data=DataConfig(source=source, task="corpus", seq_len=128, n_train=0, n_val=2000,
                                                     vocab_size=vocab, cache_dir=cache))
p = prepare(cfg, tok)
stage("prepare (tokenize, NSP pairs, save)", t0)
print("RESULT " + json.dumps({"stages": stages, "peak_mb": round(peak()), "counts": p.meta["counts"]}))
"""

WORDS = None


def _word_list(n: int = 6000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(n)]


def write_text(path: Path, mb: float, seed: int = 0) -> Path:
    """A synthetic corpus of about ``mb`` MiB: Zipf-distributed pseudo-words, 5-25 word sentences,
    3-12 sentence paragraphs separated by blank lines."""
    rng = random.Random(seed)
    words = _word_list(seed=seed)
    cum = []
    total = 0.0
    for i in range(len(words)):
        total += 1.0 / (i + 1)
        cum.append(total)
    target = int(mb * 2**20)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            sents = []
            for _ in range(rng.randint(3, 12)):
                w = rng.choices(words, cum_weights=cum, k=rng.randint(5, 25))
                sents.append(" ".join(w).capitalize() + ".")
            para = " ".join(sents) + "\n\n"
            f.write(para)
            written += len(para)
    return path


def _env() -> dict:
    env = dict(os.environ)
    src = str(_common.ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _child(code: str, args: list[str], limit_s: float, limit_gb: float | None = None) -> tuple[dict | None, str, dict]:
    """Run ``python -c code args``; -> (RESULT json or None, note, watch stats)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env())
    ps = psutil.Process(proc.pid)
    max_rss, max_anon, note = 0, 0, ""
    lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            mems = [p.memory_info() for p in (ps, *ps.children(recursive=True))]
            max_rss = max(max_rss, sum(m.rss for m in mems))
            # anonymous memory: RSS less file-backed pages (Linux `shared`: memory-mapped files, page cache)
            max_anon = max(max_anon, sum(m.rss - getattr(m, "shared", 0) for m in mems))
        except psutil.Error:
            pass
        if time.perf_counter() - t0 > limit_s:
            proc.kill()
            note = f"stopped after {limit_s:.0f} s"
        elif limit_gb and max_rss > limit_gb * 2**30:
            proc.kill()
            note = f"stopped at {max_rss / 2**30:.1f} GB RSS (limit {limit_gb} GB)"
        time.sleep(0.1)
    reader.join(timeout=5)
    wall = time.perf_counter() - t0
    result = None
    for line in lines:
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    stages = [json.loads(x[6:]) for x in lines if x.startswith("STAGE ")]
    if result is None and not note:
        tail = "".join(lines[-5:]).strip().splitlines()
        note = f"exit {proc.returncode}: " + (tail[-1] if tail else "no output")
    return result, note, {"wall_s": wall, "max_rss_mb": max_rss / 2**20, "max_anon_mb": max_anon / 2**20,
                          "stages": stages}


def part_a(tmp: Path, file_mb: float) -> dict:
    print("\n(a) cold vs warm start: fresh process -> first training batch (data.task=corpus, mlm_nsp)")
    try:
        from transformer_ablations.tasks import build_datamodule  # noqa: F401
    except Exception as e:  # noqa: BLE001
        print(f"  skipped: transformer_ablations.data.build_datamodule not importable ({type(e).__name__}: {e})")
        return {"skipped": str(e)}
    corpus = write_text(tmp / "corpus_a.txt", file_mb, seed=1)
    out = {}
    rows = []
    for label, source in (("synthetic", "synthetic"), (f"file {file_mb:g} MB", f"file:{corpus}")):
        cache = tmp / f"cache_{label.split()[0]}"
        for run in ("cold", "warm"):
            cached = cache.exists() and any(cache.iterdir())
            res, note, watch = _child(CHILD_A, [source, str(cache), "mlm_nsp"], limit_s=600)
            if res is None:
                print(f"  {label} {run}: failed ({note})")
                out[f"{label}/{run}"] = {"error": note}
                continue
            out[f"{label}/{run}"] = {**res, "process_s": watch["wall_s"]}
            rows.append([label, run, f"{res['first_batch_s']:.2f}", f"{res['import_s']:.2f}",
                         f"{watch['wall_s']:.2f}", "yes" if cached else "no"])
    from transformer_ablations.bench.timing import fmt_table

    print(fmt_table(["corpus", "run", "first batch s", "imports s", "whole process s", "cache at start"], rows))
    for label in ("synthetic", f"file {file_mb:g} MB"):
        cold, warm = out.get(f"{label}/cold", {}), out.get(f"{label}/warm", {})
        if "first_batch_s" in cold and "first_batch_s" in warm:
            ok = "meets" if warm["first_batch_s"] <= 3.0 else "MISSES"
            print(f"  {label}: warm first batch {warm['first_batch_s']:.2f} s ({ok} the 3 s target), "
                  f"cold/warm = {cold['first_batch_s'] / warm['first_batch_s']:.1f}x")
    return out


def part_b(tmp: Path, mb: float, limit_s: float, limit_gb: float, vocab: int) -> dict:
    print(f"\n(b) RSS while a {mb / 10:g} MB and a {mb:g} MB text file go through the corpus path "
          "(data.task=corpus, mlm_nsp, n_train=0)")
    sizes = (mb / 10, mb)
    out = {}
    for size in sizes:
        t0 = time.perf_counter()
        path = write_text(tmp / f"corpus_{size:g}mb.txt", size, seed=2)
        gen_s = time.perf_counter() - t0
        res, note, watch = _child(CHILD_B, [str(path), str(tmp / f"cache_b{size:g}"), str(vocab)], limit_s, limit_gb)
        file_mb = path.stat().st_size / 2**20
        peak_mb = max((res or {}).get("peak_mb") or 0, watch["max_rss_mb"])  # in-child peak, or 0.1 s polling
        print(f"  file {file_mb:.1f} MB (written in {gen_s:.1f} s): peak RSS {peak_mb:.0f} MB = "
              f"{peak_mb / file_mb:.1f}x the file, {watch['wall_s']:.0f} s" + (f" ({note})" if note else "")
              + (f", examples {res['counts']}" if res else ""))
        out[f"{size:g}MB"] = {"file_mb": file_mb, "peak_mb": peak_mb, "result": res, "note": note, **watch}
        path.unlink()
    runs = [out[f"{size:g}MB"] for size in sizes]
    names = [st["stage"] for st in max((r["stages"] for r in runs), key=len)]
    rows = []
    for name in names:
        row: list[object] = [f"after {name}"]
        for r in runs:
            st = next((st for st in r["stages"] if st["stage"] == name), None)
            row += [st["s"], st["rss_mb"], st["peak_mb"]] if st else ["-"] * 3
        rows.append(row)
    rows.append(["whole child (peak RSS)", *[x for r in runs for x in (round(r["wall_s"], 1), "", round(r["peak_mb"]))]])
    rows.append(["peak anonymous memory", *[x for r in runs for x in ("", "", round(r["max_anon_mb"]))]])
    from transformer_ablations.bench.timing import fmt_table

    print(fmt_table(["stage", *[f"{size:g} MB: {c}" for size in sizes for c in ("s", "RSS MB", "peak MB")]], rows))
    ratio = runs[1]["peak_mb"] / runs[0]["peak_mb"] if runs[0]["peak_mb"] else float("nan")
    out["peak_ratio"] = ratio
    print(f"  peak RSS {runs[1]['peak_mb']:.0f} MB ({mb:g} MB file) / {runs[0]['peak_mb']:.0f} MB ({mb / 10:g} MB file) "
          f"= {ratio:.2f}x for a 10x larger file "
          f"({'bounded' if ratio < 1.5 else 'NOT bounded: memory grows with the corpus'}); anonymous memory "
          f"{runs[1]['max_anon_mb']:.0f} / {runs[0]['max_anon_mb']:.0f} MB, the rest of RSS is file-backed "
          "(memory-mapped Arrow files, page cache the kernel can drop; polled every 0.1 s)")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=100.0, help="size of the file of part (b)")
    p.add_argument("--a-mb", type=float, default=5.0, help="size of the file corpus of part (a)")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--limit-s", type=float, default=240.0, help="part (b): stop a child after this long")
    p.add_argument("--limit-gb", type=float, default=8.0, help="part (b): stop a child past this RSS")
    p.add_argument("--skip-a", action="store_true")
    p.add_argument("--skip-b", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    print(_common.machine_line())
    result = {}
    with tempfile.TemporaryDirectory(prefix="ta_data_bench_") as d:
        tmp = Path(d)
        if not args.skip_a:
            result["a"] = part_a(tmp, args.a_mb)
        if not args.skip_b:
            result["b"] = part_b(tmp, args.mb, args.limit_s, args.limit_gb, args.vocab)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
