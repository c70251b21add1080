"""Trained checkpoints reused: fine-tuning infers the pretraining objective, `export` writes a Hugging
Face-style folder that `from_pretrained` reloads to the same logits, loading refuses arbitrary pickles."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from transformer_ablations import load_pretrained
from transformer_ablations.cli import parse_run_config
from transformer_ablations.config import ConfigError
from transformer_ablations.tasks.pretrained import PretrainedTransformer
from transformer_ablations.training.checkpoints import export, read_checkpoint
from transformer_ablations.training.run import prepare, train

TEXTS = ["the king sees the castle", ("a [MASK] sees the queen", "the castle is old")]


def _args(root: Path, *extra: str) -> list[str]:
    return ["--scale=smoke", "--train.wandb=disabled", "--train.accelerator=cpu", f"--train.out_dir={root / 'runs'}",
            f"--data.cache_dir={root / 'cache'}", *extra]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reuse")
    result = train(parse_run_config(["--config", "q5_pretrain", "--objective=mlm_nsp", *_args(root)]))
    assert result["status"] == "finished"
    return Path(result["run_dir"])


def test_finetune_takes_the_objective_from_the_checkpoint_unless_given(pretrained, tmp_path):
    readme = ["--config", "q5_finetune", "--pretrained", str(pretrained), "--task", "pair", *_args(tmp_path)]
    cfg = parse_run_config(readme, prog="ablate finetune")  # the experiment says objective: mlm
    assert cfg.objective == "mlm_nsp"
    result = train(cfg)
    assert result["status"] == "finished", result.get("error")
    tuned = load_pretrained(result["run_dir"])
    classes = tuned.predict(TEXTS)  # no labels anywhere
    assert len(classes) == 2 and all(c in (0, 1) for c in classes)
    assert tuned.encode(TEXTS).shape == (2, tuned.run_config.model.d_model)
    explicit = parse_run_config([*readme, "--objective=mlm"], prog="ablate finetune")
    assert explicit.objective == "mlm"
    with pytest.raises(ConfigError, match="objective=mlm but the pretrained checkpoint was trained with objective=mlm_nsp"):
        prepare(explicit)
    assert parse_run_config(readme, prog="ablate fit").objective == "mlm"  # only `finetune` infers it


def test_export_is_a_hub_folder_that_reloads_to_the_same_logits(pretrained, tmp_path):
    out = export(pretrained, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.model"]
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name
    config = json.loads((out / "config.json").read_text())
    assert config["objective"] == "mlm_nsp" and config["model"]["n_layers"] == 2
    assert not {"train", "data", "finetune", "seed", "config"} & set(config)  # model fields, not the run config
    original, again = load_pretrained(pretrained), PretrainedTransformer.from_pretrained(out)
    assert torch.equal(original.logits(TEXTS), again.logits(TEXTS))
    assert original.predict(TEXTS) == again.predict(TEXTS)
    assert len(again.predict(TEXTS)[1]) == 1  # one predicted token for the one [MASK]
    for (name, a), b in zip(original.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/nonexistent")


def test_loading_refuses_a_checkpoint_with_arbitrary_objects(pretrained, tmp_path):
    global MARKER
    MARKER = tmp_path / "executed"
    ckpt = torch.load(pretrained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["payload"] = Payload()
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(ConfigError, match="evil.ckpt: refused: the checkpoint holds objects other than tensors"):
        read_checkpoint(tmp_path / "evil.ckpt")
    assert not MARKER.exists()
    assert read_checkpoint(pretrained / "checkpoints" / "last.ckpt")["hyper_parameters"]["config"]["objective"] == "mlm_nsp"


def test_lightning_atomic_save_stages_outside_the_folder_so_the_custom_checkpoint_io_stays(tmp_path, monkeypatch):
    """Lightning's ``_atomic_save`` (an fsspec transaction) writes its temp file to the system temp folder and
    then moves it: across filesystems a copy that a kill can tear. AtomicCheckpointIO stages beside the target
    (rename on one filesystem, fsynced). When Lightning stages in place too, drop AtomicCheckpointIO."""
    import tempfile

    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from transformer_ablations.training.checkpoints import AtomicCheckpointIO

    staged, real = [], tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        staged.append(Path(name).parent)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    folder = tmp_path / "checkpoints"
    TorchCheckpointIO().save_checkpoint({"w": torch.zeros(2)}, folder / "lightning.ckpt")
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(2)}, folder / "ours.ckpt")
    assert staged[0] != folder and staged[-1] == folder
    assert sorted(p.name for p in folder.iterdir()) == ["lightning.ckpt", "ours.ckpt"]
