"""The run record has one owner: every writer of ``summary.json`` goes through ``RunSummary``, the
file round-trips through it unchanged, the fields it names are the keys writers write (nothing
lands in ``extra``), and a key it does not name, from an older file, survives a read and a write."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import pytest

from transformer_ablations.cli import parse_run_config
from transformer_ablations.runs import records
from transformer_ablations.runs.summary import RunSummary, Status
from transformer_ablations.sweeps.child import mark_failed
from transformer_ablations.training.interrupts import RunInterrupted
from transformer_ablations.training.run import _record_interrupted, train

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {f.name for f in dataclasses.fields(RunSummary) if f.metadata.get("optional")}


def _cfg(out: Path):
    return parse_run_config([
        "--config", str(ROOT / "experiments" / "q5_pretrain.yaml"), "--scale=smoke", f"--train.out_dir={out}",
        f"--data.cache_dir={out.parent / 'cache'}", "--train.wandb=disabled", "--train.accelerator=cpu",
        "--train.max_steps=8", "--train.val_every=4",
    ])


def _round_trips(path: Path) -> RunSummary:
    """The file read as a RunSummary writes back the same JSON object, with nothing in ``extra``."""
    on_disk = json.loads(path.read_text())
    summary = RunSummary.load(path)
    assert summary.to_dict() == on_disk
    assert summary.extra == {}, f"keys no field names: {sorted(summary.extra)}"
    assert isinstance(summary.status, Status)
    return summary


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A smoke run that crashes at step 6 (after the checkpoint at 4), then resumes and finishes."""
    from transformer_ablations.training import callbacks

    out = tmp_path_factory.mktemp("summary") / "runs"
    cfg = _cfg(out)
    original = callbacks.DivergenceGuard.on_before_optimizer_step

    def crash(self, trainer, pl_module, optimizer):
        if trainer.global_step == 6:
            raise RuntimeError("simulated kill")
        return original(self, trainer, pl_module, optimizer)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(callbacks.DivergenceGuard, "on_before_optimizer_step", crash)
        crashed = train(cfg)
    failed = json.loads((Path(crashed["run_dir"]) / "summary.json").read_text())
    result = train(cfg)
    return cfg, crashed, failed, result


def test_a_resumed_training_record_round_trips_and_names_every_key(resumed):
    _, crashed, failed, result = resumed
    assert crashed["status"] == "failed" and "simulated kill" in failed["error"]
    path = Path(result["run_dir"]) / "summary.json"
    summary = _round_trips(path)
    assert summary.status == Status.FINISHED and summary.step == 8 and summary.resumed_from_step == 4
    assert summary.wall_time_s_before is not None and summary.wall_time_s > summary.wall_time_s_before
    written = set(json.loads(path.read_text()))
    assert written & OPTIONAL == {"run_dir", "step", "tokens_per_s", "peak_rss_mb", "resumed_from_step",
                                  "wall_time_s_before"}
    assert result == summary.to_dict()  # train() returns the record as a plain dict
    assert json.loads(path.read_text())["status"] == "finished"  # the enum is its string in the file


def test_a_first_attempt_record_has_no_resume_keys(resumed):
    _, _, failed, _ = resumed
    assert failed["status"] == "failed"
    assert not {"resumed_from_step", "wall_time_s_before", "interrupted_at_step", "signal"} & set(failed)
    assert RunSummary.from_dict(failed).to_dict() == failed


def test_the_rerun_is_left_alone_and_says_exists(resumed):
    cfg, _, _, result = resumed
    path = Path(result["run_dir"]) / "summary.json"
    before = path.read_bytes()
    again = train(cfg)
    assert again["status"] == "exists" and again["final_status"] == "finished" and path.read_bytes() == before


def test_a_rebuilt_record_round_trips(resumed, tmp_path):
    cfg, _, _, result = resumed
    run_dir = Path(result["run_dir"])
    copy = tmp_path / run_dir.name
    for name in ("metrics.csv", "checkpoints/last.ckpt"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((run_dir / name).read_bytes())
    rebuilt = records.existing_record(copy, cfg)  # summary.json missing: rebuilt from the folder
    assert isinstance(rebuilt, RunSummary) and rebuilt.rebuilt_from == ["metrics.csv", "checkpoints/last.ckpt"]
    assert _round_trips(copy / "summary.json").step == 8


def test_a_failed_sweep_child_record_round_trips(tmp_path):
    cfg = _cfg(tmp_path / "runs")
    run_dir = records.run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    returned = mark_failed(cfg, run_dir, "train exited with code 3", 3)
    summary = _round_trips(run_dir / "summary.json")
    assert returned.exit_code == summary.exit_code == 3 and summary.status == Status.FAILED
    assert summary.error == "train exited with code 3" and summary.finished_at is not None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_record_round_trips(tmp_path, signum):
    cfg = _cfg(tmp_path / "runs")
    run_dir = records.run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    records.write_summary(run_dir, dataclasses.replace(records.new_summary(cfg), step=4))
    returned = _record_interrupted(RunInterrupted(signum), run_dir, None)
    summary = _round_trips(run_dir / "summary.json")
    assert summary.status == returned.status == Status.INTERRUPTED and summary.signal == signal.Signals(signum).name
    assert summary.interrupted_at_step == 4 and summary.run_dir == str(run_dir)


def test_an_unknown_key_of_an_older_file_survives_a_read_and_a_write(tmp_path):
    cfg = _cfg(tmp_path / "runs")
    older = json.loads(json.dumps({**records.new_summary(cfg).to_dict(), "step": 4, "legacy_note": {"kept": [1, 2]}}))
    (tmp_path / "summary.json").write_text(json.dumps(older))
    summary = records.read_summary(tmp_path)
    assert summary.extra == {"legacy_note": {"kept": [1, 2]}} and summary.step == 4
    summary.status = Status.FINISHED
    records.write_summary(tmp_path, summary)
    assert json.loads((tmp_path / "summary.json").read_text()) == {**older, "status": "finished"}


def test_an_unset_optional_field_is_not_written(tmp_path):
    cfg = _cfg(tmp_path / "runs")
    records.write_summary(tmp_path, records.new_summary(cfg))
    written = json.loads((tmp_path / "summary.json").read_text())
    assert not set(written) & OPTIONAL
    core = {f.name for f in dataclasses.fields(RunSummary)} - OPTIONAL - {"extra"}
    assert set(written) == core
    with pytest.raises(AttributeError):  # a writer sets a named field, never a stray key
        records.new_summary(cfg).stpe = 4


@pytest.mark.parametrize("text", ["[1, 2]", '{"status": "running"}', '{"status": "fini', ""])
def test_read_summary_is_none_for_what_is_not_a_run_record(tmp_path, text):
    (tmp_path / "summary.json").write_text(text)
    assert records.read_summary(tmp_path) is None
    assert records.read_summary(tmp_path / "missing") is None
