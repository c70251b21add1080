"""Every run ends its wandb run: the offline ``.wandb`` file, parsed with wandb's own protobuf
records, has an exit record with the run's exit code, and its last ``val/*`` values are those of
summary.json; the config is logged once, flat; runs are named by their toggles; the lr is logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transformer_ablations.cli import parse_run_config
from transformer_ablations.runs import records
from transformer_ablations.sweeps.executor import Executor, ExecutorOptions
from transformer_ablations.sweeps.sync import find_offline_runs, read_offline_run
from transformer_ablations.sweeps.testing import fake_train, write_fake_sweep
from transformer_ablations.training.run import train
from transformer_ablations.training.wandb_run import wandb_finished

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for var in ("WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "ABLATE_RUN_NAME", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def _val(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.split("/")[0].startswith("val")}


def assert_complete_and_matching(run_dir: Path, exit_code: int = 0):
    """One offline wandb run in ``run_dir``, complete, its last val/* values = summary.json's."""
    (offline,) = find_offline_runs(run_dir)
    run = read_offline_run(offline)
    assert run.error is None and run.exit_code == exit_code, (run.error, run.exit_code)
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = _val(summary["metrics"])
    assert expected, summary["metrics"]
    assert {k: run.last(k) for k in expected} == pytest.approx(expected, rel=1e-6)
    return run, summary


def test_fit_logs_a_complete_flat_named_wandb_run(tmp_path):
    cfg = parse_run_config(["--config", str(ROOT / "experiments" / "q2_positional.yaml"), "--scale=smoke",
                            f"--train.out_dir={tmp_path / 'runs'}", f"--data.cache_dir={tmp_path / 'cache'}",
                            "--train.wandb=offline", "--train.accelerator=cpu", "--model.positional=none"])
    result = train(cfg)
    assert result["status"] == "finished"
    run, _ = assert_complete_and_matching(Path(result["run_dir"]))
    assert run.name == "q2_positional seed=0"
    assert run.summary["status"] == "finished" and run.summary["run_id"] == Path(result["run_dir"]).name
    # the config once, flat with dotted keys: no nested blob from save_hyperparameters
    assert run.config["model.positional"] == "none" and run.config["seed"] == 0
    assert not [k for k, v in run.config.items() if isinstance(v, dict) and k != "_wandb"]
    assert "cfg" not in run.config and "model" not in run.config
    # LearningRateMonitor: the scheduled lr, per parameter group
    lrs = [row["train/lr/decay"] for row in run.history if "train/lr/decay" in row]
    assert lrs and all(lr > 0 for lr in lrs) and len(set(lrs)) > 1


def test_diverged_run_ends_its_wandb_run_with_exit_code_3(tmp_path):
    cfg = parse_run_config(["--config", str(ROOT / "experiments" / "q1_scaling.yaml"), "--scale=smoke",
                            f"--train.out_dir={tmp_path / 'runs'}", f"--data.cache_dir={tmp_path / 'cache'}",
                            "--train.wandb=offline", "--train.accelerator=cpu", "--model.attention.scaling=none",
                            "--model.head_dim=256", "--train.lr=1e6", "--train.warmup_steps=0", "--train.grad_clip=0"])
    result = train(cfg)
    assert result["status"] == "diverged"
    (offline,) = find_offline_runs(result["run_dir"])
    run = read_offline_run(offline)
    assert run.error is None and run.exit_code == 3
    assert run.summary["status"] == "diverged" and run.summary["diverged_step"] == result["diverged_step"]


def _lightning_interrupt():
    """What Lightning's trainer does on Ctrl-C: ``sys.exit(1)`` while handling the KeyboardInterrupt."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise SystemExit(1) from None


@pytest.mark.parametrize(("raised", "code"), [(None, 0), (KeyboardInterrupt, 130), (RuntimeError, 1),
                                              (SystemExit(1), 1), ("lightning", 130)])
def test_wandb_finished_ends_the_run_on_every_path(tmp_path, raised, code):
    import wandb

    wandb.init(project="t", dir=str(tmp_path), mode="offline")
    wandb.log({"val/acc": 0.25})
    if raised is None:
        with wandb_finished() as end:
            end.record = {"status": "finished", "run_id": "s0-abc", "error": None}
    elif raised == "lightning":
        with pytest.raises(SystemExit), wandb_finished():
            _lightning_interrupt()
    else:
        with pytest.raises(type(raised) if isinstance(raised, BaseException) else raised), wandb_finished():
            raise raised
    assert wandb.run is None
    (offline,) = find_offline_runs(tmp_path)
    run = read_offline_run(offline)
    assert run.complete and run.exit_code == code and run.last("val/acc") == 0.25


def _train_without_finishing(cfg):
    """A run function that leaves its wandb run open and then returns, raises or is interrupted
    (by seed): the executor's child must end the run before ``os._exit``."""
    import wandb

    run_dir = records.run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    wandb.init(project="t", dir=str(run_dir), mode="offline", name=f"seed={cfg.seed}")
    wandb.log({"val/acc": 0.5 + cfg.seed})
    result = fake_train(cfg)
    if cfg.seed == 1:
        raise RuntimeError("boom")
    if cfg.seed == 2:
        raise KeyboardInterrupt
    return result


def test_sweep_children_end_their_wandb_runs_on_every_path(tmp_path):
    path = write_fake_sweep(tmp_path, parameters={"seed": {"values": [0, 1, 2]}, "scale": {"value": "smoke"}})
    options = ExecutorOptions(runs_dir=tmp_path / "runs", quiet=True, wandb_offline=True, workers=1)
    Executor(options, run_fn=_train_without_finishing).run([path])
    runs = {r.name: r for r in map(read_offline_run, find_offline_runs(tmp_path / "runs"))}
    assert {name: (r.complete, r.exit_code, r.last("val/acc")) for name, r in runs.items()} == {
        "seed=0": (True, 0, 0.5), "seed=1": (True, 1, 1.5), "seed=2": (True, 130, 2.5)}


@pytest.mark.slow
def test_smoke_sweep_offline_runs_parse_complete(tmp_path, capsys):
    """A real smoke sweep through the executor: every child's offline run is complete, named by
    the sweep's toggles and seed, and agrees with its summary.json."""
    from transformer_ablations.cli import dispatch

    runs = tmp_path / "runs"
    rc = dispatch(["sweep", str(ROOT / "sweeps" / "q2_positional.yaml"), "--scale", "smoke", "--max-runs", "2",
                       "--runs-dir", str(runs), "--quiet", "--offline"])
    assert rc == 0, capsys.readouterr().out[-2000:]
    run_dirs = sorted(p.parent for p in (runs / "smoke" / "q2_positional").glob("*/summary.json"))
    assert len(run_dirs) == 2
    names = set()
    for run_dir in run_dirs:
        run, _ = assert_complete_and_matching(run_dir)
        names.add(run.name)
    assert names == {"arch=encoder positional=none seed=0", "arch=encoder positional=none seed=1"}
