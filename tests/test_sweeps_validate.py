"""Sweep files are refused before anything runs, with a one-line ConfigError."""

from __future__ import annotations

import pytest
import yaml

from transformer_ablations.cli import dispatch
from transformer_ablations.config import ConfigError
from transformer_ablations.sweeps.testing import write_fake_sweep
from transformer_ablations.sweeps.validate import (
    grid_points,
    load_sweep,
    parse_sets,
    resolve_sweep_files,
    to_python,
    validate_sweep,
)

RUNNER = "transformer_ablations.sweeps.testing:fake_train"


def _edit(path, **changes):
    raw = yaml.safe_load(path.read_text())
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _refused(tmp_path, path, *needles):
    """validate_sweep and `ablate sweep` both refuse with one line naming the problem; no runs/."""
    with pytest.raises(ConfigError) as err:
        validate_sweep(path)
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError) as err2:
        dispatch(["sweep", str(path), "--runs-dir", str(runs), "--runner", RUNNER, "--offline"])
    assert "\n" not in str(err2.value)
    assert not runs.exists(), "nothing may be written under runs/ for a refused sweep"
    return text


def test_valid_fake_sweep(tmp_path):
    spec = validate_sweep(write_fake_sweep(tmp_path))
    assert spec.method == "grid" and spec.subcommand == "fit" and spec.metric_name == "val/acc"
    points = grid_points(spec, scale="smoke")
    assert len(points) == 8 and all(p["scale"] == "smoke" for p in points)
    assert len({tuple(sorted(p.items())) for p in points}) == 8
    assert grid_points(spec, max_runs=3) == grid_points(spec)[:3]


def test_malformed_yaml(tmp_path):
    path = write_fake_sweep(tmp_path)
    path.write_text("method: grid\nparameters: {seed: {values: [0, 1]\n")
    _refused(tmp_path, path, "malformed YAML")


def test_unknown_method(tmp_path):
    path = _edit(write_fake_sweep(tmp_path), method="hyperband")
    _refused(tmp_path, path, "method 'hyperband'", "grid, random, bayes")


def test_schema_violation(tmp_path):
    path = _edit(write_fake_sweep(tmp_path), metric={"name": "val/acc", "goal": "up"})
    _refused(tmp_path, path, "not a valid wandb sweep")
    path = _edit(write_fake_sweep(tmp_path), early_stop=True)
    _refused(tmp_path, path, "early_stop")


def test_unknown_key(tmp_path):
    path = write_fake_sweep(tmp_path, parameters={"model.attn.scaling": {"values": ["none"]}, "seed": {"value": 0}})
    _refused(tmp_path, path, "unknown parameter model.attn.scaling", "model.attention.scaling")


def test_nested_parameters_refused(tmp_path):
    path = write_fake_sweep(tmp_path, parameters={"model": {"parameters": {"arch": {"values": ["encoder"]}}}})
    _refused(tmp_path, path, "flat dotted names", "4345")


def test_invalid_value(tmp_path):
    path = write_fake_sweep(tmp_path, parameters={"model.positional": {"values": ["learned", "relative"]}})
    _refused(tmp_path, path, "model.positional=relative", "none, sinusoidal, learned, rope, alibi")


def test_invalid_bool_value(tmp_path):
    path = write_fake_sweep(tmp_path, parameters={"model.segment_embeddings": {"values": [True, "yes"]}})
    _refused(tmp_path, path, "model.segment_embeddings=yes")


def test_incompatible_combination_caught_by_parsing(tmp_path):
    # objective=mlm on a classification task without finetune.pretrained cannot run
    path = write_fake_sweep(tmp_path, parameters={"objective": {"values": ["none", "mlm"]}, "seed": {"values": [0]}})
    _refused(tmp_path, path, "objective=mlm", "finetune.pretrained")


def test_bad_typed_value_caught_by_parsing(tmp_path):
    path = write_fake_sweep(tmp_path, parameters={"model.head_dim": {"values": [16, "wide"]}})
    _refused(tmp_path, path, "model.head_dim")


def test_metric_must_be_the_runs_monitor(tmp_path):
    path = write_fake_sweep(tmp_path, metric={"name": "val/loss", "goal": "minimize"})
    _refused(tmp_path, path, "train.monitor=val/acc")


def test_experiment_name_must_be_the_sweep_name(tmp_path):
    path = write_fake_sweep(tmp_path, experiment="experiment: other\nobjective: none\ndata: {task: retrieval}\n"
                            "train: {monitor: val/acc, monitor_mode: max}\n")
    _refused(tmp_path, path, "experiment 'other'")


def test_missing_experiment_file(tmp_path):
    path = write_fake_sweep(tmp_path)
    (tmp_path / "experiments" / "fake.yaml").unlink()
    _refused(tmp_path, path, "experiment config", "not found")


def test_command_must_run_ablate(tmp_path):
    path = _edit(write_fake_sweep(tmp_path), command=["${env}", "python", "train.py", "${args}"])
    _refused(tmp_path, path, "ablate")


def test_cli_errors_are_one_line(tmp_path):
    path = write_fake_sweep(tmp_path)
    for argv, needle in (
        ([str(path), "--scale", "huge"], "--scale=huge"),
        ([str(path), "--workers", "many"], "workers"),
        ([str(path), "--bogus"], "--bogus"),
        ([str(path), "--set", "model.nope=1"], "model.nope"),
        ([str(path), "--online", "--offline"], "exclude"),
        (["q_does_not_exist"], "no sweep file"),
        ([str(path), "--gpus", "0"], "do not exist"),
    ):
        with pytest.raises(ConfigError) as err:
            dispatch(["sweep", *argv] + ["--runs-dir", str(tmp_path / "runs")])
        assert "\n" not in str(err.value) and needle in str(err.value), (argv, str(err.value))
    assert not (tmp_path / "runs").exists()


def test_check_only_validates(tmp_path, capsys):
    path = write_fake_sweep(tmp_path)
    assert dispatch(["sweep", str(path), "--check", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "ok (grid, 8 points, 8 runs" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_resolve_names_and_sets(tmp_path, monkeypatch):
    write_fake_sweep(tmp_path, "q7_alpha")
    write_fake_sweep(tmp_path, "q7_beta")
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in resolve_sweep_files(["q7"])] == ["q7_alpha.yaml", "q7_beta.yaml"]
    assert [p.name for p in resolve_sweep_files(["q7_beta", "q7"])] == ["q7_beta.yaml", "q7_alpha.yaml"]
    assert parse_sets(["train.max_steps=5", "model.dropout=0.1"]) == {"train.max_steps": 5, "model.dropout": 0.1}
    with pytest.raises(ConfigError):
        parse_sets(["train.max_steps"])


def test_numpy_scalars_become_python():
    np = pytest.importorskip("numpy")
    out = to_python({"a": np.float64(0.5), "b": [np.int64(3)], "c": np.bool_(True)})
    assert out == {"a": 0.5, "b": [3], "c": True}
    assert type(out["a"]) is float and type(out["b"][0]) is int and type(out["c"]) is bool


def test_random_and_bayes_load(tmp_path):
    for method in ("random", "bayes"):
        path = write_fake_sweep(tmp_path, parameters={
            "train.lr": {"min": 0.0001, "max": 0.01}, "seed": {"values": [0, 1]}}, method=method)
        spec = validate_sweep(path)
        assert spec.method == method
        assert load_sweep(path).grid_size() is None
