"""Q4 attention cost table: forward + backward time and peak training memory of one self-attention
layer for dot_sdpa, dot_reference and additive at T = 64 ... 1024 (d_k 64), with the additive / dot
ratios, a JSON (the format the Q4 report reads) and a PNG (time and memory vs T, log-log).

A thin wrapper over ``python -m transformer_ablations.bench.attention_cost`` (see its docstring for the
method); arguments are passed through, the output defaults to ``runs/bench/attention_cost.json``.

    python benchmarks/attention_cost.py [--repeats 5] [--lengths 64,128,256,512,1024] [--batch 2]
"""

from __future__ import annotations

import sys

import _common

from transformer_ablations.bench import attention_cost


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in argv:
        argv += ["--out", str(_common.ROOT / "runs" / "bench" / "attention_cost.json")]
    if "--repeats" not in argv:
        argv += ["--repeats", "5"]
    print(_common.machine_line())
    return attention_cost.main(argv)


if __name__ == "__main__":
    main()
