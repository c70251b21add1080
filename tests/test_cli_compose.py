"""Config layers as they run: --print_config is the run's config.yaml, scales are layers (no
internal keys), runs print one plain line per validation without a terminal, `finetune` needs a task."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import yaml

from transformer_ablations.cli import parse_run_config
from transformer_ablations.config import ConfigError, flatten
from transformer_ablations.training.progress import StepProgress, validation_line


def ablate(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "transformer_ablations.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_print_config_is_the_config_the_run_writes_and_the_run_prints_a_line_per_validation(tmp_path):
    args = ["fit", "--config", "q1_scaling", "--scale=smoke", "--train.wandb=disabled", "--train.accelerator=cpu",
            "--model.attention.scaling=none"]
    printed = ablate(*args, "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-2000:]
    shown = yaml.safe_load(printed.stdout)
    assert shown["train"]["max_steps"] == 8 and shown["train"]["val_every"] == 4  # the smoke layer, not 400
    assert not {"scales", "when", "debug", "config", "__path__"} & set(shown)
    assert not (tmp_path / "runs").exists()  # printing trains nothing
    run = ablate(*args, cwd=tmp_path)  # stdout is a pipe, not a terminal
    assert run.returncode == 0, run.stderr[-2000:]
    run_dir = next((tmp_path / "runs" / "q1_scaling").glob("s0-*"))
    written = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
    differ = {k for k in written if written[k] != flatten(shown).get(k)}
    assert differ == {"model.vocab_size"}, differ  # filled in from the tokenizer when the run is built
    lines = [line for line in run.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["4/8", "8/8"], run.stdout
    assert all("val/acc=" in line and "val/loss=" in line for line in lines)


def test_no_tty_progress_is_one_flushed_line_per_validation():
    stream = io.StringIO()
    bar = StepProgress(interactive=False, stream=stream)

    class Trainer:  # the attributes the callback reads
        sanity_checking, is_global_zero, global_step, max_steps = False, True, 100, 400
        callback_metrics: ClassVar[dict] = {"val/acc": torch.tensor(0.5), "train/loss": torch.tensor(2.0)}

    bar.on_train_start(Trainer, None)
    bar.on_validation_end(Trainer, None)
    Trainer.sanity_checking = True
    bar.on_validation_end(Trainer, None)  # Lightning's sanity check prints nothing
    assert stream.getvalue() == "step 100/400  val/acc=0.5000\n"
    assert validation_line(8, 8, {}) == "step 8/8"


def test_scale_layers_compose_in_order_and_leave_no_internal_keys(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("experiment: e\ntrain: {max_steps: 100, val_every: 10}\n"
                    "scales: {smoke: {train: {max_steps: 20}}}\n")
    more = tmp_path / "more.yaml"
    more.write_text("scale: smoke\nscales: {smoke: {train: {val_every: 5}}}\n")
    cfg = parse_run_config(["--config", str(base), "--config", str(more)])
    assert (cfg.scale, cfg.train.max_steps, cfg.train.val_every) == ("smoke", 20, 5)  # both files' smoke blocks
    with pytest.raises(ConfigError, match="unknown option"):
        parse_run_config(["--scales={}"])  # internal blocks are file content, not flags


def test_config_by_packaged_name_or_path(tmp_path):
    by_name = parse_run_config(["--config", "q2_positional", "--scale=smoke"])
    by_path = parse_run_config(["--config", str(Path(__file__).parents[1] / "experiments" / "q2_positional.yaml"),
                                "--scale=smoke"])
    assert by_name == by_path and by_name.experiment == "q2_positional"
    with pytest.raises(ConfigError, match=r"--config q9_nothing: file not found; .*q1_scaling"):
        parse_run_config(["--config", "q9_nothing"])


def test_finetune_needs_a_downstream_task(tmp_path):
    res = ablate("finetune", "--pretrained", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [(
        "ablate: error: ablate finetune needs a downstream task: --task order|single|pair|retrieval|pair_tag|lookup, or a --config "
        "experiment that sets data.task (got data.task=corpus, a pretraining task)"
    )]
    assert not (tmp_path / "runs").exists()


def test_help_groups_and_describes_the_toggles():
    res = subprocess.run([sys.executable, "-m", "transformer_ablations.cli", "fit", "--help"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0
    text = res.stdout
    for title in ("The model", "Attention", "Data", "Fine-tuning", "Training"):
        assert title in text, title
    assert "scale the logits by" in text  # model.attention.scaling's docstring
    assert "pooling of the sequence" in text  # finetune.pooling's
