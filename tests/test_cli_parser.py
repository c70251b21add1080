"""The `ablate` command is one jsonargparse parser, and a refused config names its bad key from the schema.

Every Literal, int, float and bool field of RunConfig is tried with a value of the wrong kind, on the
command line and in a config file: each gives one line naming the key, the value and what is valid.
"""

from __future__ import annotations

from typing import Literal, get_args, get_origin

import pytest

from transformer_ablations import cli
from transformer_ablations.config import ConfigError, compose
from transformer_ablations.config.explain import field_types

BASE = ["--config", "q1_scaling", "--scale=smoke"]
LITERALS = sorted(k for k, t in field_types().items() if get_origin(t.hint) is Literal)
NUMBERS = sorted(k for k, t in field_types().items() if t.hint in (int, float, bool))


def _refusal(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        compose([*BASE, *argv])
    assert "\n" not in str(err.value)
    return str(err.value)


def test_the_cli_is_one_parser_with_a_subcommand_per_command(capsys):
    root = cli.build_parser()
    subcommands = root._subcommands_action._name_parser_map  # jsonargparse's subcommand table
    assert set(subcommands) == set(cli.SUBCOMMANDS)
    for name in cli.SUBCOMMANDS:  # each is documented in the usage `ablate --help` prints
        assert f"ablate {name}" in cli._usage(), name
    parsed = root.parse_args(["report", "--suite", "smoke"])
    assert parsed.command == "report" and parsed.report.suite == "smoke"


@pytest.mark.parametrize("key", LITERALS)
def test_a_value_outside_a_literal_names_the_key_and_the_valid_values(key, tmp_path):
    valid = get_args(field_types()[key].hint)
    expected = f"{key}=bogus_value is not valid; valid values: {', '.join(map(str, valid))}"
    assert _refusal([f"--{key}=bogus_value"]) == expected
    *blocks, leaf = key.split(".")
    text = f"{leaf}: bogus_value"
    for block in reversed(blocks):
        text = f"{block}: {{{text}}}"
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    assert _refusal(["--config", str(path)]) == f"--config {path}: {expected}"


@pytest.mark.parametrize("key", NUMBERS)
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(key):
    name = field_types()[key].hint.__name__
    assert _refusal([f"--{key}=not-a-number"]) == f"{key}=not-a-number is not a valid {name}"


def test_unknown_keys_are_listed_with_the_nearest_valid_key(tmp_path):
    msg = _refusal(["--train.max_step=16", "--model.colour=red"])
    assert msg.startswith("unknown option(s) --train.max_step=16 --model.colour=red; did you mean train.max_steps?")
    path = tmp_path / "typo.yaml"
    path.write_text("model: {attention: {scalng: none}}\n")
    assert _refusal(["--config", str(path)]).startswith(
        f"--config {path}: model.attention.scalng: unknown key; did you mean model.attention.scaling?")
    assert _refusal(["--model.attention=dot"]).startswith("model.attention=dot: model.attention is a block")


def test_sweep_subcommand_errors_are_one_line_from_the_root_parser():
    for argv, needle in ((["sweep"], "sweep.sweeps"), (["report", "--bogus"], "--bogus"),
                         (["slurm", "abc", "--tasks", "many"], "tasks"), (["nope"], "valid commands: fit")):
        with pytest.raises(ConfigError) as err:
            cli.dispatch(argv)
        assert "\n" not in str(err.value) and needle in str(err.value), (argv, str(err.value))
