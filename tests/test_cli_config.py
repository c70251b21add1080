"""The config contract: the vocabulary, validation messages, precedence of config blocks."""

import subprocess
import sys
from pathlib import Path

import pytest

from transformer_ablations.cli import parse_run_config
from transformer_ablations.config import ConfigError, RunConfig, all_keys, config_hash, toggle_values

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("q*.yaml"))


def ablate(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "transformer_ablations.cli", *args], capture_output=True, text=True, check=False, cwd=cwd
    )


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model.attention.scaling=foo"], "model.attention.scaling=foo is not valid; valid values: sqrt_dk, none, dk, learned, qk_norm"),
        (["--model.positional=absolute"], "valid values: none, sinusoidal, learned, rope, alibi"),
        (["--model.arch=rnn"], "valid values: encoder, decoder, encoder_decoder"),
        (["--objective=nsp"], "valid values: mlm_nsp, mlm, causal, seq2seq, none"),
        (["--finetune.pooling=first"], "valid values: cls, mean, max, last"),
        (["--data.pair_format=tab"], "valid values: sep, concat"),
        (["--model.colour=red"], "unknown option"),
        (["--model.d_model=abc"], "model.d_model=abc is not a valid int"),
        (["--model.d_model=0"], "model.d_model=0 must be a positive integer"),
        (["--model.d_model=30"], "not divisible by model.n_heads=4"),
        (["--model.arch=decoder", "--model.cross_attention=pooled"], "model.cross_attention=pooled needs model.arch=encoder_decoder"),
        (["--objective=causal"], "objective=causal needs model.arch=decoder"),
        (["--train.max_steps=10", "--train.val_every=3"], "must be a multiple of train.val_every=3"),
        (["--config", "/nonexistent.yaml"], "file not found"),
    ],
)
def test_bad_config_is_one_clear_line(argv, needle):
    with pytest.raises(ConfigError) as err:
        parse_run_config(argv)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_toggle_exits_2_with_one_line_and_no_traceback(tmp_path):
    res = ablate("fit", "--model.attention.scaling=foo", "--train.out_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == ["ablate: error: model.attention.scaling=foo is not valid; valid values: sqrt_dk, none, dk, learned, qk_norm"]
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "runs").exists()


def test_precedence_defaults_config_scale_when_cli(tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text(
        "experiment: e\nobjective: seq2seq\nmodel: {arch: encoder_decoder, cross_attention: pooled}\n"
        "data: {task: reverse}\ntrain: {max_steps: 100, val_every: 10}\n"
        "scales: {smoke: {train.max_steps: 20, data: {n_train: 64}}}\n"
        "when: [{if: {model.arch: decoder}, set: {model.cross_attention: full}}]\n"
    )
    cfg = parse_run_config(["--config", str(exp), "--scale=smoke", "--model.arch=decoder"])
    assert (cfg.model.arch, cfg.model.cross_attention, cfg.train.max_steps, cfg.data.n_train) == ("decoder", "full", 20, 64)
    cfg = parse_run_config(["--config", str(exp), "--train.max_steps=40", "--scale=smoke"])
    assert (cfg.model.cross_attention, cfg.train.max_steps) == ("pooled", 40)
    cfg = parse_run_config(["--config", str(exp)])
    assert cfg.train.max_steps == 100


def test_config_hash_ignores_where_outputs_go_but_not_toggles():
    a, b = RunConfig(), RunConfig()
    b.train.out_dir = "elsewhere"
    assert config_hash(a) == config_hash(b)
    b.model.attention.scaling = "none"
    assert config_hash(a) != config_hash(b)


def test_vocabulary_keys_exist():
    keys = all_keys()
    for key in toggle_values():
        assert key in keys, key
    for key in ("model.head_dim", "model.n_layers", "model.d_ff", "model.dropout", "model.norm", "seed"):
        assert key in keys


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["smoke", "quick", "full"])
def test_every_experiment_config_parses_at_every_scale(path, scale):
    cfg = parse_run_config(["--config", str(path), f"--scale={scale}"])
    assert cfg.experiment == path.stem
    assert cfg.scale == scale
