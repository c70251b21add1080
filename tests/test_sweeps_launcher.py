"""The online path, built as pure command lists: login detection, GPU checks, wandb sweep /
agent commands, and `ablate sync` without a login. Nothing here starts a process."""

from __future__ import annotations

import sys

import pytest
import yaml

from transformer_ablations.cli import dispatch
from transformer_ablations.config import ConfigError
from transformer_ablations.sweeps.launcher import (
    agent_commands,
    choose_path,
    has_wandb_login,
    parse_gpus,
    parse_sweep_id,
    plan_online,
)
from transformer_ablations.sweeps.sync import find_offline_runs, sync_command
from transformer_ablations.sweeps.testing import write_fake_sweep
from transformer_ablations.sweeps.validate import load_sweep


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_login_detection(home):
    assert not has_wandb_login({"HOME": str(home)})
    assert has_wandb_login({"HOME": str(home), "WANDB_API_KEY": "x" * 40})
    (home / ".netrc").write_text("machine example.com\n  login user\n  password secret\n")
    assert not has_wandb_login({"HOME": str(home)})
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert has_wandb_login({"HOME": str(home)})
    # a self-hosted server: the netrc entry must be for its host
    assert not has_wandb_login({"HOME": str(home), "WANDB_BASE_URL": "https://wandb.example.org"})
    (home / ".netrc").write_text("this is not a netrc file {{{")
    assert not has_wandb_login({"HOME": str(home)})


def test_choose_path(home):
    none = {"HOME": str(home)}
    key = {"HOME": str(home), "WANDB_API_KEY": "x" * 40}
    assert choose_path(None, none) == "local"
    assert choose_path(None, key) == "online"
    assert choose_path(None, {**key, "WANDB_MODE": "offline"}) == "local"
    assert choose_path("offline", key) == "local"
    assert choose_path("online", key) == "online"
    with pytest.raises(ConfigError, match="wandb login"):
        choose_path("online", none)


def test_gpus_checked_against_the_device_count():
    assert parse_gpus("", device_count=0) == []
    assert parse_gpus("0,1,3", device_count=4) == ["0", "1", "3"]
    assert parse_gpus([0, 2], device_count=4) == ["0", "2"]
    assert parse_gpus("all", device_count=2) == ["0", "1"]
    for spec, count, needle in (("0", 0, "this machine has 0 CUDA device"), ("0,4", 4, "device(s) 4"),
                                ("0,0", 2, "twice"), ("a", 2, "not a device index"), ("all", 0, "no CUDA")):
        with pytest.raises(ConfigError) as err:
            parse_gpus(spec, device_count=count)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_nonexistent_gpus_refused_on_this_machine():
    pytest.importorskip("torch")
    import torch

    n = torch.cuda.device_count()
    with pytest.raises(ConfigError, match="do not exist"):
        parse_gpus(str(n))


def test_one_agent_per_gpu():
    cmds = agent_commands("ent/proj/abc123", ["0", "2"], python="/venv/bin/python", base_path="/usr/bin")
    assert [c.argv for c in cmds] == [["/venv/bin/python", "-m", "wandb", "agent", "ent/proj/abc123"]] * 2
    assert [c.env["CUDA_VISIBLE_DEVICES"] for c in cmds] == ["0", "2"]
    assert all(c.env["PATH"] == "/venv/bin:/usr/bin" for c in cmds)  # the agent finds `ablate`
    counted = agent_commands("abc123", ["1"], count=5, python="py")
    assert counted[0].argv == ["py", "-m", "wandb", "agent", "--count", "5", "abc123"]
    ddp = agent_commands("p/abc", ["0", "1", "2", "3"], gpus_per_agent=2, python="py")
    assert [c.env["CUDA_VISIBLE_DEVICES"] for c in ddp] == ["0,1", "2,3"]
    cpu = agent_commands("p/abc", [], python="py")
    assert len(cpu) == 1 and "CUDA_VISIBLE_DEVICES" not in cpu[0].env
    with pytest.raises(ConfigError):
        agent_commands("bad id; rm -rf /", ["0"])


def test_online_plan_renders_the_sweep_with_scale_and_records_dir(tmp_path):
    spec = load_sweep(write_fake_sweep(tmp_path))
    plan = plan_online(spec, "full", tmp_path / "runs", "full", ["0", "1"], extra={"train.max_steps": 9},
                       env={"WANDB_ENTITY": "team"})
    params = plan.rendered["parameters"]
    assert params["scale"] == {"value": "full"}
    assert params["train.out_dir"] == {"value": str(tmp_path / "runs" / "full")}
    assert params["train.max_steps"] == {"value": 9}
    assert params["seed"] == {"values": [0, 1]}
    assert plan.rendered["method"] == "grid" and plan.rendered["metric"]["name"] == "val/acc"
    assert plan.rendered["command"][-1] == "${args}" and plan.rendered["command"][1:3] == ["ablate", "fit"]
    assert plan.rendered_path == tmp_path / "runs" / "full" / "fake" / "sweep.full.yaml"
    assert plan.sweep == [sys.executable, "-m", "wandb", "sweep", "--project", "transformer-ablations",
                          "--entity", "team", str(plan.rendered_path)]
    yaml.safe_dump(plan.rendered)  # plain YAML
    agents = plan.agents("team/transformer-ablations/abc123")
    assert [a.env["CUDA_VISIBLE_DEVICES"] for a in agents] == ["0", "1"]
    assert agents[0].argv[-1] == "team/transformer-ablations/abc123"


def test_parse_sweep_id():
    out = ("wandb: Creating sweep from: runs/full/q1/sweep.full.yaml\n"
           "wandb: Creating sweep with ID: \x1b[33mabc123\x1b[0m\n"
           "wandb: View sweep at: https://wandb.ai/team/proj/sweeps/abc123\n"
           "wandb: Run sweep agent with: \x1b[33mwandb agent team/proj/abc123\x1b[0m\n")
    assert parse_sweep_id(out) == "team/proj/abc123"
    assert parse_sweep_id("wandb: Created sweep with ID: xyz789\n") == "xyz789"
    with pytest.raises(ConfigError):
        parse_sweep_id("wandb: ERROR api key not configured")


def test_agents_without_login_refused(home, monkeypatch):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    with pytest.raises(ConfigError, match="wandb login"):
        dispatch(["agents", "team/proj/abc123"])


def test_sync_without_login_says_how_to_log_in(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    (tmp_path / "runs" / "quick" / "q1" / "s0-abc" / "wandb" / "offline-run-20261124_010203-abc").mkdir(parents=True)
    rc = dispatch(["sync", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc != 0
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "wandb login" in err and "WANDB_API_KEY" in err


def test_sync_finds_offline_runs(tmp_path):
    runs = tmp_path / "runs"
    a = runs / "quick" / "q1" / "s0-abc" / "wandb" / "offline-run-20261124_010203-aaa"
    b = runs / "quick" / "q2" / "s1-def" / "wandb" / "offline-run-20261124_020304-bbb"
    synced = runs / "quick" / "q2" / "s2-ghi" / "wandb" / "offline-run-20261124_030405-ccc"
    for d in (a, b, synced):
        d.mkdir(parents=True)
    (synced / "run-ccc.wandb.synced").write_text("")
    (runs / "quick" / "q1" / "s0-abc" / "wandb" / "run-20261124_010203-online").mkdir()
    assert find_offline_runs(runs) == [a, b]
    assert len(find_offline_runs(runs, include_synced=True)) == 3
    assert sync_command([a, b], python="py") == ["py", "-m", "wandb", "sync", str(a), str(b)]
    assert find_offline_runs(tmp_path / "nothing") == []
