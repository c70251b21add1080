"""End to end at smoke scale: every experiment trains and writes its record; learning,
reproducibility, resume, fine-tuning, export and divergence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from transformer_ablations import load_pretrained
from transformer_ablations.cli import parse_run_config
from transformer_ablations.config import ConfigError
from transformer_ablations.training.checkpoints import export
from transformer_ablations.training.run import prepare, train

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"


def cfg_for(experiment: str, out: Path, *extra: str, scale: str = "smoke"):
    return parse_run_config(
        [
            "--config", str(EXP / f"{experiment}.yaml"),
            f"--scale={scale}",
            f"--train.out_dir={out}",
            f"--data.cache_dir={out.parent / 'cache'}",
            "--train.wandb=disabled",
            "--train.accelerator=cpu",
            *extra,
        ]
    )


def run_dirs(sweep_dir: Path):
    """Run directories (not the executor's lock files) of a sweep."""
    return (d for d in sorted(sweep_dir.iterdir()) if (d / "summary.json").is_file())


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Pretraining runs that the fine-tuning experiments find through `auto:q5_pretrain`."""
    out = tmp_path_factory.mktemp("suite") / "runs"
    for objective in ("mlm_nsp", "mlm", "causal"):
        result = train(cfg_for("q5_pretrain", out, f"--objective={objective}"))
        assert result["status"] == "finished", result
    return out


STANDALONE = ["q1_scaling", "q2_positional", "q3_attention", "q4_additive", "q5_pretrain"]
# experiments whose runs take their lr from a selection sweep (q4_additive's `when` blocks): a selection run
# with the same settings is trained first, under the selection sweep's name and another seed (a run at the
# selection's seed and lr would be that run's copy, without checkpoints of its own)
SELECTION_FIRST = {"q4_additive": "q1_lr_select"}


@pytest.mark.parametrize("experiment", STANDALONE + ["q5_finetune", "q6_cls_sep", "q6_sep_segments"])
def test_every_experiment_trains_evaluates_and_writes_its_record(experiment, suite):
    if experiment in SELECTION_FIRST:
        selection = cfg_for(experiment, suite, f"--experiment={SELECTION_FIRST[experiment]}", "--seed=1")
        assert train(selection)["status"] == "finished"
    cfg = cfg_for(experiment, suite)
    result = train(cfg)
    assert result["status"] in ("finished", "exists")
    run_dir = Path(result["run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert cfg.train.monitor in summary["metrics"], sorted(summary["metrics"])
    assert summary["config"]["experiment"] == experiment
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.csv").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert summary["peak_rss_mb"] > 0 and summary["wall_time_s"] > 0
    assert "train/tokens_per_s" in summary["metrics"]
    if experiment in SELECTION_FIRST:
        assert summary["lr_selection"]["sweep"] == SELECTION_FIRST[experiment]


def test_learns_far_above_chance(tmp_path):
    """A small config on the embedded order task: chance is 0.5."""
    cfg = cfg_for("q2_positional", tmp_path / "runs", "--train.max_steps=150", "--train.val_every=50",
                  "--data.n_train=2000", "--data.n_val=256", "--train.log_every=10", scale="quick")
    result = train(cfg)
    assert result["status"] == "finished"
    assert result["metrics"]["val/acc"] > 0.8, result["metrics"]


def test_same_seed_same_metrics_and_rerun_is_left_alone(tmp_path):
    a = train(cfg_for("q1_scaling", tmp_path / "a"))
    b = train(cfg_for("q1_scaling", tmp_path / "b"))
    timing = {"train/tokens_per_s", "train/step_time_ms", "train/tflops", "train/mfu"}
    strip = lambda metrics: {k: v for k, v in metrics.items() if k not in timing}
    assert strip(a["metrics"]) == strip(b["metrics"]) and "val/acc" in a["metrics"]
    record = Path(a["run_dir"]) / "summary.json"
    before = record.read_bytes()
    again = train(cfg_for("q1_scaling", tmp_path / "a"))
    assert again["status"] == "exists" and record.read_bytes() == before


class Crash(Exception):
    pass


def test_resumed_run_matches_uninterrupted_run(tmp_path, crash_at_step):
    extra = ("--train.max_steps=12", "--train.val_every=4", "--model.dropout=0.1")
    whole = train(cfg_for("q5_pretrain", tmp_path / "whole", *extra))


    crash_at_step(cfg_for("q5_pretrain", tmp_path / "resumed", *extra), 6)
    resumed = train(cfg_for("q5_pretrain", tmp_path / "resumed", *extra))
    assert resumed["resumed_from_step"] == 4
    for key, value in whole["metrics"].items():
        if key.startswith(("val", "train/loss")):
            assert resumed["metrics"][key] == value, key


def test_finetune_loads_exactly_the_pretrained_weights_and_probe_freezes_them(suite):
    cfg = cfg_for("q6_cls_sep", suite, "--finetune.mode=probe", "--finetune.pooling=mean")
    pretrained = load_pretrained(Path(cfg.train.out_dir) / "q5_pretrain" / next(
        d.name for d in run_dirs(Path(cfg.train.out_dir) / "q5_pretrain")
        if json.loads((d / "summary.json").read_text())["config"]["objective"] == "mlm_nsp"
    )).net
    _, _, module = prepare(cfg)
    for (name, p), (_, q) in zip(pretrained.backbone.state_dict().items(), module.net.backbone.state_dict().items()):
        assert torch.equal(p, q), name
    before = {k: v.clone() for k, v in module.net.backbone.state_dict().items()}
    result = train(cfg)
    assert result["status"] == "finished"
    tuned = load_pretrained(result["run_dir"]).net
    for name, value in tuned.backbone.state_dict().items():
        assert torch.equal(value, before[name]), f"probe mode changed {name}"
    head_before = module.net.head.state_dict() if hasattr(module.net, "head") else None
    if head_before:
        assert any(not torch.equal(v, tuned.head.state_dict()[k]) for k, v in head_before.items())


def test_export_and_reimport_give_identical_logits(suite, tmp_path):
    run_dir = next(run_dirs(Path(suite) / "q5_pretrain"))
    model = load_pretrained(run_dir)
    out = export(run_dir, tmp_path / "export")
    again = load_pretrained(out)
    texts = ["the king sees the castle", ("a [MASK] sees", "the castle")]
    assert torch.equal(model.logits(texts), again.logits(texts))
    assert torch.equal(model.encode(texts), again.encode(texts))
    assert again.tokenizer.encode("the king sees the castle") == model.tokenizer.encode("the king sees the castle")
    assert again.run_config.model == model.run_config.model
    assert again.run_config.objective == model.run_config.objective


def test_checkpoint_of_another_architecture_is_refused(suite):
    run_dir = next(
        d for d in run_dirs(Path(suite) / "q5_pretrain")
        if json.loads((d / "summary.json").read_text())["config"]["objective"] == "mlm"
    )
    cfg = cfg_for("q5_finetune", suite, f"--pretrained={run_dir}", "--model.positional=rope")
    with pytest.raises(ConfigError, match="model.positional=rope but the pretrained checkpoint has model.positional=learned"):
        prepare(cfg)
    cfg = cfg_for("q5_finetune", suite, f"--pretrained={run_dir}", "--objective=causal")
    with pytest.raises(ConfigError, match="trained with objective=mlm"):
        prepare(cfg)


def test_missing_pretraining_run_is_a_clear_error(tmp_path):
    cfg = cfg_for("q5_finetune", tmp_path / "runs")
    with pytest.raises(ConfigError, match="no finished q5_pretrain run with objective=mlm seed=0"):
        train(cfg)


def test_divergence_is_a_result_not_a_crash(tmp_path):
    cfg = cfg_for("q1_scaling", tmp_path / "runs", "--model.attention.scaling=none", "--model.head_dim=256",
                  "--train.lr=1e6", "--train.warmup_steps=0", "--train.grad_clip=0")
    result = train(cfg)
    assert result["status"] == "diverged", result
    assert result["diverged_step"] is not None
    summary = json.loads((Path(result["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_step"] == result["diverged_step"]
    assert summary["metrics"]["train/nonfinite_steps"] == 1  # what Q1's bf16 claims count per run


@pytest.mark.parametrize("precision, fused", [("32-true", True), ("bf16-mixed", False), ("16-mixed", False)])
def test_adamw_is_fused_except_under_mixed_precision(tmp_path, precision, fused):
    """One fused AdamW kernel per step; mixed precision keeps the per-tensor one, whose gradients Lightning
    clips (it refuses to clip for an optimizer that could unscale them itself)."""
    _, _, module = prepare(cfg_for("q1_scaling", tmp_path / "runs", f"--train.precision={precision}"))
    optimizer = module.configure_optimizers()["optimizer"]
    assert bool(optimizer.defaults["fused"]) is fused


def test_evaluation_batches_are_larger_than_training_batches_and_cover_each_split_once(tmp_path):
    from transformer_ablations.data.datamodule import EVAL_BATCH_FACTOR

    cfg, datamodule, _ = prepare(cfg_for("q1_scaling", tmp_path / "runs"))
    for loader, name in zip(datamodule.val_dataloader(), datamodule.val_names):
        sizes = [len(batch["labels"]) for batch in loader]
        assert sizes[0] == min(cfg.data.batch_size * EVAL_BATCH_FACTOR, len(datamodule.datasets[name]))
        assert sum(sizes) == len(datamodule.datasets[name])
