#!/usr/bin/env bash
# The full-scale path on one CUDA GPU, checked in one go (<= 8 minutes on one H100/H200):
#
#   benchmarks/gpu_check.sh OUTDIR [--dry-run]      # from anywhere; runs in the checkout's root
#
#   1. pytest -m gpu tests            fast vs reference attention (fp32, bf16), causal masking, the additive
#                                     kernel's gradients, checkpoint resume (tests/test_gpu_properties.py)
#   2. Q2 quick sweep, --gpus 0       and the same sweep on the CPU at the same time; the verdicts' directions
#                                     are compared (benchmarks/gpu_check.py: compare_verdicts)
#   3. benchmarks/gpu_mfu.py          124M decoder, T 1024, bf16, flash SDPA, compiled: MFU, tokens/s, memory
#   4. attention_cost --compile       dot_sdpa vs additive, time and memory, T 256 ... 4096
#   5. DDP                            NCCL probe (two ranks on one GPU?), single-process DDP `ablate fit`
#   (run in the order env, pytest, 5, 2, 3, 4: short steps first, inside a 470 s budget)
#
# Writes OUTDIR/gpu_check.json (every step's command, exit code, seconds, status, numbers), OUTDIR/gpu_check.log
# and OUTDIR/logs/*.log, pytest_gpu.xml, runs/{gpu,cpu}/, reports/{gpu,cpu}/, mfu.json, attention_cost_gpu.json
# (+ .png), nccl_probe.json, ddp/. Exit 0: every step ok; 1: some step failed (see the JSON); 2: usage (no
# CUDA device without --dry-run, or OUTDIR already holds a check). --dry-run (any CPU) checks every step's
# command and arguments instead (tests/test_gpu_check.py runs it under `make test`).
#
# Packages. The GPU machine has PyTorch (CUDA build), Lightning, torchmetrics, sentencepiece, safetensors,
# scipy, numpy, pandas, pyarrow, matplotlib, rich, pytest, and no network. What this project needs beyond
# that travels as wheels in .whl/ at the checkout's root (git-ignored), listed with their versions in
# benchmarks/gpu_wheels.txt (jsonargparse, wandb, datasets, sweeps and the dependencies of theirs that the
# image lacks). On a machine with pip access, from the checkout's root:
#
#   benchmarks/gpu_check.sh --fetch-wheels
#
# which runs, for each NAME==VERSION of gpu_wheels.txt (and adds /.whl/ to .git/info/exclude):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 --platform any -d .whl NAME==VERSION
#
# On the GPU machine this script then installs them before anything else, without network or dependency
# resolution, and puts them on the path:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=$PWD/src:/tmp/site
#
# The package itself is not installed there: src/ goes first on PYTHONPATH. The commit recorded in the JSON
# is `git rev-parse HEAD` where .git exists, else GPU_CHECK_COMMIT (set it when the checkout travels without
# .git). PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  exclude="$(git rev-parse --git-common-dir 2>/dev/null || echo .git)/info/exclude"
  if [[ -d "$(dirname "$exclude")" ]] && ! grep -qx '/.whl/' "$exclude" 2>/dev/null; then echo '/.whl/' >> "$exclude"; fi
  grep -v '^\s*#' benchmarks/gpu_wheels.txt | grep -v '^\s*$' | while read -r req; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 --platform any -d .whl "$req"
  done
  du -sh .whl
  exit 0
fi

if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: benchmarks/gpu_check.sh OUTDIR [--dry-run]   (or --fetch-wheels; see the header)" >&2
  exit 2
fi

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# the wheels are CPython 3.12 builds: installed only for a 3.12 interpreter
if compgen -G ".whl/*.whl" > /dev/null && "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
