"""The real-text suite (issue 17) on tiny corpora the tests write: `real:` sources resolve to the
TEXT= / SST2= copies (ABLATE_TEXT / ABLATE_SST2), a missing corpus is one line before anything exists,
every arm of the SST-2 comparison shares one tokenizer, fine-tuning takes the objective from the
checkpoint, each real_* sweep runs at smoke scale and `ablate report --suite real` uses claims_real.yaml."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from transformer_ablations import resources
from transformer_ablations.cli import main, parse_run_config
from transformer_ablations.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
REAL_SWEEPS = ("real_q1_scaling", "real_q2_mlm", "real_q2_causal", "real_q5_pretrain", "real_q5_finetune",
               "real_q6_probe")
WORDS = ["king", "queen", "lord", "lady", "sword", "crown", "night", "day", "love", "hate", "fair", "foul", "speak",
         "hear", "wise", "mad", "heart", "blood", "tomorrow", "gentle", "noble", "brave", "cruel", "sweet"]
POS, NEG = ["good", "great", "fine", "lovely", "warm"], ["bad", "dull", "poor", "awful", "cold"]


def write_corpora(root: Path) -> tuple[Path, Path]:
    """A Shakespeare-like text (speeches separated by blank lines) and an SST-2-like folder."""
    rng = random.Random(0)
    text = root / "tiny_shakespeare.txt"
    speeches = ["\n".join(f"{rng.choice(WORDS).upper()}:" if i == 0 else " ".join(rng.choices(WORDS, k=9)) + "."
                          for i in range(6)) for _ in range(60)]
    text.write_text("\n\n".join(speeches) + "\n")
    sst2 = root / "sst2"
    sst2.mkdir()
    for name, n in (("train", 80), ("dev", 24)):
        rows = []
        for i in range(n):
            label = i % 2
            rows.append(" ".join(rng.choices(WORDS, k=5) + [rng.choice(POS if label else NEG)]) + f"\t{label}")
        (sst2 / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return text, sst2


@pytest.fixture
def corpora(tmp_path, monkeypatch):
    text, sst2 = write_corpora(tmp_path)
    monkeypatch.setenv("ABLATE_TEXT", str(text))
    monkeypatch.setenv("ABLATE_SST2", str(sst2))
    return text, sst2


def _offline_hub(monkeypatch, tmp_path) -> None:
    """No network and an empty Hugging Face cache."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ABLATE_TEXT", raising=False)
    monkeypatch.delenv("ABLATE_SST2", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


# --- the real scale and its sources -------------------------------------------------------------
def test_real_scale_resolves_text_and_sst2_paths(corpora):
    text, sst2 = corpora
    cfg = parse_run_config(["--config", str(ROOT / "experiments/real_q2_causal.yaml"), "--scale=real"])
    assert cfg.scale == "real" and cfg.data.source == f"file:{text.resolve()}"
    assert cfg.train.max_steps == 600 and cfg.data.eval_length_multiples == [2, 4]  # the file's real settings
    pre = parse_run_config(["--config", str(ROOT / "experiments/real_q5_pretrain.yaml"), "--scale=real"])
    assert pre.data.source == f"file:{sst2.resolve()}" and pre.data.task == "corpus"


def test_real_sources_default_to_the_hub_and_take_hf_names(monkeypatch, tmp_path):
    from transformer_ablations.data import real_sources

    monkeypatch.delenv("ABLATE_TEXT", raising=False)
    monkeypatch.setenv("ABLATE_SST2", "hf:glue:sst2")
    monkeypatch.setattr(real_sources, "_hub_dataset_available", lambda source: True)
    assert real_sources.resolve_source("real:text") == "hf:karpathy/tiny_shakespeare"
    assert real_sources.resolve_source("real:sst2") == "hf:glue:sst2"
    assert real_sources.resolve_source("file:x.txt") == "file:x.txt"
    with pytest.raises(ConfigError, match="valid: real:text, real:sst2"):
        real_sources.resolve_source("real:wiki")


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_offline_without_paths_fails_in_one_line_naming_both_variables(monkeypatch, tmp_path, capsys):
    _offline_hub(monkeypatch, tmp_path / "hf")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "real", "--scale", "real", "--offline", "--workers", "2"])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "TEXT=" in line and "SST2=" in line and "cannot be reached" in line
    assert list(work.iterdir()) == []  # nothing created


def test_a_missing_local_corpus_fails_in_one_line(monkeypatch, tmp_path, capsys, corpora):
    monkeypatch.setenv("ABLATE_TEXT", str(tmp_path / "no_such.txt"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "real_q1_scaling", "--scale=real"])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"TEXT={tmp_path / 'no_such.txt'}" in line and "SST2=" in line
    assert list(work.iterdir()) == []


def test_make_real_offline_without_paths_stops_before_anything_exists(tmp_path):
    """The Makefile target itself, with a stand-in venv whose `ablate` is this tree's CLI."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    ablate = venv / "bin" / "ablate"
    ablate.write_text(f"#!/bin/sh\nexec {sys.executable} -m transformer_ablations.cli \"$@\"\n")
    ablate.chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("")
    os.utime(tmp_path / "pyproject.toml", (1, 1))  # older than the install stamp: make installs nothing
    (venv / ".installed").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ABLATE_", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT / "src"))
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "real", f"VENV={venv}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("ablate:")]
    assert len(ours) == 1 and "TEXT=" in ours[0] and "SST2=" in ours[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, reports/, cache or HF folder


def test_make_real_passes_text_and_sst2_to_the_suite(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "ablate").write_text(f"#!/bin/sh\necho \"$ABLATE_TEXT|$ABLATE_SST2|$*\" >> {tmp_path}/calls\n")
    (venv / "bin" / "ablate").chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("")
    os.utime(tmp_path / "pyproject.toml", (1, 1))
    (venv / ".installed").write_text("")
    subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "real", f"VENV={venv}", "TEXT=a.txt", "SST2=sst"],
                   cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["a.txt|sst|sweep real --scale real --offline --workers 2", "a.txt|sst|report --suite real"]


# --- the suite at smoke scale ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_suite(tmp_path_factory):
    """Every real_* sweep at smoke scale (seed 0; the first grid point of Q1/Q2; Q5's pretraining and
    fine-tuning arms and one Q6 point on 20 examples), records under runs/real/, then the report."""
    root = tmp_path_factory.mktemp("real")
    text, sst2 = write_corpora(root)
    env = {**os.environ, "ABLATE_TEXT": str(text), "ABLATE_SST2": str(sst2), "WANDB_MODE": "offline",
           "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    ablate = [sys.executable, "-m", "transformer_ablations.cli"]
    common = ["--scale", "smoke", "--suite", "real", "--offline", "--workers", "1", "--quiet",
              "--set", "seed=0", "--set", "train.wandb=disabled"]
    steps = [
        [*ablate, "sweep", "real_q1_scaling", "real_q2_mlm", "real_q2_causal", "--max-runs", "1", *common],
        # 20 examples: all three files run on the tiny SST-2 copy; one pooling of the probe
        [*ablate, "sweep", "real_q5_pretrain", "real_q5_finetune", "real_q6_probe", *common,
         "--set", "data.n_train=20", "--set", "finetune.pooling=mean"],
        [*ablate, "report", "--suite", "real"],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, f"{' '.join(cmd[3:])}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return root, text, sst2


def _summaries(root: Path, sweep: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "runs" / "real" / sweep).glob("*/summary.json"))]


def test_every_real_sweep_runs_at_smoke_scale(smoke_suite):
    root, text, _ = smoke_suite
    for sweep in REAL_SWEEPS:
        runs = _summaries(root, sweep)
        assert runs and all(r["status"] == "finished" for r in runs), (sweep, [r["status"] for r in runs])
    causal = _summaries(root, "real_q2_causal")[0]
    assert causal["config"]["data.source"] == f"file:{text.resolve()}"
    assert {"val_len2x/loss", "val_len4x/loss"} <= set(causal["metrics"])


def test_every_q5_arm_shares_one_tokenizer(smoke_suite):
    """mlm, causal and the random init (objective=none) fine-tune with the same sentencepiece model
    bytes, trained once on the pretraining text; the pretraining runs have it too."""
    from transformer_ablations.training.checkpoints import read_checkpoint

    root = smoke_suite[0]
    tokenizers, objectives = {}, set()
    for sweep in ("real_q5_pretrain", "real_q5_finetune", "real_q6_probe"):
        for run_dir in sorted((root / "runs" / "real" / sweep).glob("s0-*/")):
            ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
            objective = ckpt["hyper_parameters"]["config"]["objective"]
            tokenizers[(sweep, objective, run_dir.name)] = ckpt["tokenizer"]
            objectives.add((sweep, objective))
    assert {("real_q5_finetune", o) for o in ("mlm", "causal", "none")} <= objectives
    assert {("real_q5_pretrain", o) for o in ("mlm", "causal")} <= objectives
    assert len(set(tokenizers.values())) == 1, sorted(tokenizers)


def test_an_arm_whose_tokenizer_differs_is_refused(smoke_suite, tmp_path):
    """data.tokenizer and the checkpoint's tokenizer must be one model (else one line, exit 2)."""
    from transformer_ablations.data.tokenizer import Tokenizer

    root, _, sst2 = smoke_suite
    other = tmp_path / "other.model"
    other.write_bytes(Tokenizer.train(["a b c d e f g h"] * 20, 40).to_bytes())
    pre = next((root / "runs" / "real" / "real_q5_pretrain").glob("s0-*/"))
    env = {**os.environ, "ABLATE_SST2": str(sst2), "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "transformer_ablations.cli", "finetune", "--config",
                           str(ROOT / "experiments/real_q5_finetune.yaml"), "--scale=smoke", "--pretrained", str(pre),
                           f"--data.tokenizer={other}", f"--train.out_dir={tmp_path / 'runs'}",
                           f"--data.cache_dir={tmp_path / 'cache'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "is not the tokenizer of finetune.pretrained" in _one_error_line(proc.stderr)


def test_finetuning_takes_the_objective_from_the_checkpoint(smoke_suite, monkeypatch, capsys):
    """The README's command on a real checkpoint: the experiment file says objective mlm, the checkpoint
    was pretrained causal: the checkpoint wins; an explicit --objective that contradicts it is an error."""
    root, _, sst2 = smoke_suite
    monkeypatch.setenv("ABLATE_SST2", str(sst2))
    causal = next(p for p in (root / "runs" / "real" / "real_q5_pretrain").glob("s0-*/")
                  if json.loads((p / "summary.json").read_text())["config"].get("objective") == "causal")
    readme = ["--config", str(ROOT / "experiments/q5_finetune.yaml"), "--pretrained", str(causal), "--task", "single",
              "--data.source=real:sst2", "--scale=smoke"]
    cfg = parse_run_config(readme, prog="ablate finetune")
    assert cfg.objective == "causal" and cfg.data.source == f"file:{sst2.resolve()}"
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", *readme, "--objective=mlm", f"--train.out_dir={root / 'explicit'}"])
    assert exit_info.value.code == 2
    assert "objective=mlm but the pretrained checkpoint was trained with objective=causal" in capsys.readouterr().err


def test_report_suite_real_uses_the_real_claims(smoke_suite):
    root = smoke_suite[0]
    report = root / "reports" / "real"
    verdicts = json.loads((report / "verdicts.json").read_text())
    claims = {c["id"]: c for c in verdicts}
    assert set(claims) and all(cid.startswith("real_") for cid in claims)  # claims_real.yaml, not claims.yaml
    for field in ("id", "question", "tier", "verdict", "effect", "ci_low", "ci_high", "p", "p_adjusted", "n",
                  "deterministic"):
        assert all(field in c for c in verdicts), field
    by_question: dict[str, set] = {}
    for c in verdicts:
        by_question.setdefault(c["question"], set()).add(c["tier"])
    assert set(by_question) == {"q1", "q2", "q5", "q6"}
    assert all({"primary", "control"} <= tiers for tiers in by_question.values()), by_question
    text = (report / "report.md").read_text()
    assert "Tiny Shakespeare" in text and "q3_attention" not in text and "figures/q1_scaling.png" not in text
    for png in ("real_q1_scaling", "real_q2_mlm", "real_q2_length", "real_q5_labels", "real_q6_probe", "forest"):
        assert (report / "figures" / f"{png}.png").is_file(), png


# --- claims ------------------------------------------------------------------------------------
def test_suite_claims_file():
    assert resources.suite_claims("real").name == "claims_real.yaml"
    assert resources.suite_claims("quick").name == "claims.yaml"


def test_real_claims_have_one_primary_and_a_control_per_question():
    from transformer_ablations.report import load_claims

    claims = load_claims(ROOT / "experiments" / "claims_real.yaml", ROOT / "sweeps")
    assert {c.sweep for c in claims} <= set(REAL_SWEEPS)
    for q in ("q1", "q2", "q5", "q6"):
        tiers = [c.tier for c in claims if c.question == q]
        assert tiers.count("primary") == 1 and "control" in tiers, (q, tiers)
    assert all(c.literature_anchor for c in claims)


def test_best_of_compares_each_arm_at_its_best_learning_rate():
    """a is best at lr 1e-3 (0.60), b at 3e-3 (0.50): the effect is 0.60 - 0.50, not the mean over lrs."""
    from transformer_ablations.report import RunRecord
    from transformer_ablations.report.claims import Claim
    from transformer_ablations.report.evaluate import evaluate_claim

    means = {("sqrt_dk", 0.001): 0.60, ("sqrt_dk", 0.003): 0.30, ("none", 0.001): 0.20, ("none", 0.003): 0.50}
    runs = [RunRecord("s", f"s{seed}-{scaling}-{lr}", "finished",
                      {"model.attention.scaling": scaling, "train.lr": lr, "seed": seed},
                      {"val/acc": mean + 0.01 * (seed - 1)}, seed=seed)
            for (scaling, lr), mean in means.items() for seed in range(3)]
    claim = Claim(id="c", question="q1", claim="x", metric="val/acc", higher_is_better=True,
                  a={"model.attention.scaling": "sqrt_dk"}, b={"model.attention.scaling": "none"},
                  expect="a_better", literature_direction="d", literature_anchor="a", sweep="s",
                  best_of={"key": "train.lr", "by": "val/acc", "goal": "max"})
    result = evaluate_claim(claim, runs)
    assert result.estimate.mean == pytest.approx(0.10)
    assert "train.lr by val/acc: 0.001" in result.groups[0].label and "0.003" in result.groups[1].label
