"""Issue 15: runs that stop at their plateau (``train.patience`` on the selection split) and Q1's
low-precision arm (bf16 autocast at the lr the fp32 arm chose; non-finite steps counted)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_q1_q4_experiments import _final_cfg, _selection_record  # the Q1 lr-selection record helpers
from test_training import cfg_for
from transformer_ablations.config import ConfigError, RunConfig
from transformer_ablations.runs.records import existing_record
from transformer_ablations.tasks import check_run
from transformer_ablations.training.callbacks import PlateauStop
from transformer_ablations.training.run import train


def test_patience_stops_on_the_selection_split_only():
    cfg = RunConfig()
    cfg.data.task, cfg.objective, cfg.model.arch = "lookup", "none", "encoder"
    cfg.train.monitor, cfg.train.monitor_mode, cfg.train.patience = "val/acc", "max", 2
    with pytest.raises(ConfigError, match=r"train.patience=2 stops on val_select/acc, which needs "
                                          r"data.selection_split=true .*data.selection_split=false"):
        check_run(cfg)
    cfg.data.selection_split = True
    assert check_run(cfg) is cfg
    seq = RunConfig()
    seq.data.task, seq.objective, seq.model.arch, seq.data.selection_split = "reverse", "seq2seq", "encoder_decoder", True
    seq.train.monitor, seq.train.monitor_mode, seq.train.patience = "val/token_acc", "max", 1
    with pytest.raises(ConfigError, match="train.patience=1 with model.arch=encoder_decoder: the head-drop"):
        check_run(seq)


def test_a_run_stops_at_its_plateau_and_its_record_says_where(tmp_path):
    # min_delta 1.0: no accuracy change can count as a gain, so the run stops after patience + 1 validations
    cfg = cfg_for("q1_scaling", tmp_path / "runs", "--train.max_steps=16", "--train.val_every=4",
                  "--train.patience=1", "--train.min_delta=1.0")
    result = train(cfg)
    assert result["status"] == "finished", result
    assert result["plateau_step"] == 8 and result["step"] == 8  # validations at 4 (best) and 8 (no gain): stop
    run_dir = Path(result["run_dir"])
    with open(run_dir / "metrics.csv", newline="") as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh) if row.get("step")]
    assert max(steps) < 8  # nothing trained past the stop
    assert result["metrics"]["train/nonfinite_steps"] == 0
    # a torn record is rebuilt as the same finished run, stopped at the same step (not as unfinished)
    (run_dir / "summary.json").write_text("{torn")
    rebuilt = existing_record(run_dir, cfg)
    assert rebuilt is not None and rebuilt.status == "finished" and rebuilt.plateau_step == 8
    # without patience the same settings train all max_steps
    full = train(cfg_for("q1_scaling", tmp_path / "runs2", "--train.max_steps=16", "--train.val_every=4",
                         "--train.patience=0"))
    assert full["step"] == 16 and "plateau_step" not in full


def test_a_run_resumed_after_the_stop_was_decided_does_not_train_on():
    stop = PlateauStop(monitor="val_select/acc", mode="max", patience=1)
    trainer = SimpleNamespace(should_stop=False, global_step=8, max_steps=16)
    stop.on_train_start(trainer, None)
    assert trainer.should_stop is False and stop.plateau_step(trainer) is None  # not stopped yet
    stop.load_state_dict({"wait_count": 1, "stopped_epoch": 1, "best_score": 0.5, "patience": 1})
    stop.on_train_start(trainer, None)
    assert trainer.should_stop is True and stop.plateau_step(trainer) == 8


def test_a_bf16_arm_trains_at_the_lr_its_fp32_arm_chose_and_is_not_a_copy(tmp_path):
    from transformer_ablations.training.lr_select import adopt_selection_run, select_lr

    fp32 = _final_cfg(tmp_path, seed=1)
    root = tmp_path / "q1_lr_select"
    for seed, scores in ((0, (0.30, 0.50)), (1, (0.32, 0.46))):
        for lr, score in zip((3e-4, 1e-3), scores):
            _selection_record(root, fp32, lr, seed, score)
    bf16 = _final_cfg(tmp_path, seed=1)
    bf16.train.precision = "bf16-mixed"
    chosen = select_lr(bf16)
    assert chosen["lr"] == 1e-3 and chosen["grid"]["0.001"]["n"] == 2  # the fp32 runs chose it
    assert adopt_selection_run(bf16, tmp_path / "q1_bf16" / "s1-x", chosen) is None  # bf16 trains itself
    copied = adopt_selection_run(fp32, tmp_path / "q1_bf16" / "s1-y", chosen)  # the fp32 arm is that same run
    assert copied is not None and copied.config["train.precision"] == "32-true"


def test_q1_bf16_sweep_orders_after_the_selection_and_pairs_the_precisions(monkeypatch, tmp_path):
    from transformer_ablations.sweeps.executor import Executor, ExecutorOptions

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    ex = Executor(ExecutorOptions(scale="smoke", runs_dir=str(tmp_path)))
    plans = ex.plan_all([root / "sweeps/q1_bf16.yaml", root / "sweeps/q1_lr_select.yaml"])
    assert [p.spec.name for p in plans] == ["q1_lr_select", "q1_bf16"]
    assert len(plans[0].runs) == 72  # 3 scalings x 3 d_k x 4 lr x 2 seeds
    arms = {(r.params["model.attention.scaling"], r.params["train.precision"]) for r in plans[1].runs}
    assert arms == {(s, p) for s in ("sqrt_dk", "none") for p in ("32-true", "bf16-mixed")}


def test_learning_curves_carry_a_stopped_run_at_its_plateau(tmp_path):
    from transformer_ablations.report.collect import RunRecord
    from transformer_ablations.report.curves import fig_learning_curves

    def run(name: str, values: dict[int, float], plateau: int | None) -> RunRecord:
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.csv").write_text("step,val/acc\n" + "".join(f"{s},{v}\n" for s, v in values.items()))
        return RunRecord("q1_scaling", name, "finished", {"model.head_dim": 16}, {}, path=d / "summary.json",
                         plateau_step=plateau)
    runs = [run("a", {49: 0.5, 99: 0.6}, 100), run("b", {49: 0.5, 99: 0.7, 149: 0.8, 199: 0.8}, None)]
    fig = fig_learning_curves(runs, "q1_scaling", [("d_k=16", {"model.head_dim": 16})], "val/acc", tmp_path, "c")
    text = " ".join(fig.notes)
    assert "1 of 2 runs stopped at their plateau (train.patience) at steps 100; 1 ran to the last step" in text
    # at the last step the mean is (0.6 carried + 0.8) / 2: flat from the step before, not b's 0.8 alone
    assert "last change +0.000 between steps 149 and 199 (flat)" in text


def test_learning_curves_note_an_lr_chosen_at_the_edge_of_its_grid(tmp_path):
    from transformer_ablations.report.collect import RunRecord
    from transformer_ablations.report.curves import fig_learning_curves

    def run(name: str, dk: int, lr: float) -> RunRecord:
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.csv").write_text("step,val/acc\n49,0.5\n99,0.6\n")
        grid = {str(g): {"mean": 0.5, "n": 2} for g in (3e-4, 1e-3, 3e-3)}
        return RunRecord("q1_scaling", name, "finished", {"model.head_dim": dk, "train.lr": lr}, {},
                         path=d / "summary.json", lr_selection={"lr": lr, "grid": grid})
    runs = [run("a", 16, 3e-3), run("b", 64, 1e-3), run("c", 256, 3e-4)]
    arms = [(f"d_k={dk}", {"model.head_dim": dk}) for dk in (16, 64, 256)]
    notes = fig_learning_curves(runs, "q1_scaling", arms, "val/acc", tmp_path, "c", show="train.lr").notes
    edge = [n for n in " | ".join(notes).split(" | ") if "of the grid" in n]
    assert any("d_k=16: the chosen lr 0.003 is the largest of the grid (0.0003, 0.001, 0.003)" in n for n in edge)
    assert any("d_k=256: the chosen lr 0.0003 is the smallest" in n for n in edge)
    assert not any("d_k=64" in n for n in edge)  # an inner choice is no edge


def test_the_report_tables_each_arms_lr_choice_and_a_per_arm_lr_is_no_average(tmp_path):
    """Arms with their own lr (train.lr_from): the report shows each arm's selection scores and choice,
    and a figure cell whose runs share one lr says nothing about averaging over lr."""
    from transformer_ablations.report.collect import RunRecord
    from transformer_ablations.report.lr_choices import lr_choice_blocks
    from transformer_ablations.report.plotting import _averaged_note, _Notes

    def run(seed: int, obj: str, lr: float, scores: dict) -> RunRecord:
        grid = {str(g): {"mean": m, "n": 2} for g, m in scores.items()}
        return RunRecord("q5_finetune", f"s{seed}-{obj}", "finished", {"objective": obj, "train.lr": lr, "seed": seed},
                         {"val/acc": 0.9}, seed=seed,
                         lr_selection={"sweep": "q5_lr_select", "metric": "val_select/acc", "lr": lr, "grid": grid})
    runs = [run(s, "mlm", 1e-3, {1e-3: 0.91, 4e-3: 0.88}) for s in (0, 1, 2)]
    runs += [run(s, "causal", 4e-3, {1e-3: 0.70, 4e-3: 0.95}) for s in (0, 1, 2)]
    blocks = lr_choice_blocks(["q5_finetune"], {"q5_finetune": runs}, {"q5_finetune": {"objective": ["mlm", "causal"]}})
    table = blocks[1]
    assert table.headers == ["arm", "lr 0.001", "lr 0.004", "chosen lr"]
    assert table.rows == [["objective=causal", "0.700 (n=2)", "**0.950 (n=2)**", "0.004"],
                          ["objective=mlm", "**0.910 (n=2)**", "0.880 (n=2)", "0.001"]]
    assert "q5_lr_select" in blocks[2].text and "val_select/acc" in blocks[2].text
    assert lr_choice_blocks(["q5_finetune"], {"q5_finetune": [RunRecord("q5_finetune", "x", "finished", {}, {})]}, {}) == []
    notes = _Notes()
    _averaged_note(runs, ("objective",), notes)
    assert notes.lines() == []  # one lr per arm: no average
    mixed = [*runs, run(3, "mlm", 4e-3, {1e-3: 0.91, 4e-3: 0.88})]
    _averaged_note(mixed, ("objective",), notes)
    assert notes.lines() == ["per seed, averaged over train.lr ∈ {0.001, 0.004}"]
