"""Adding a task is one ``TaskSpec`` entry plus its generator: a toy task registered here gets
the config rules, data, collator, model and metrics of its family with no other change."""

from __future__ import annotations

import random

import torch

from transformer_ablations import tasks
from transformer_ablations.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from transformer_ablations.data import synthetic


def parity_rows(cfg, split, n, seed, length, multiple):
    """The toy task's generator: is the count of 'b' among 'a'/'b' symbols odd?"""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(synthetic.vocabulary("order")[:2]) for _ in range(rng.randint(2, length - 2))]
        rows.append({"text": " ".join(words), "label": words.count(words[0]) % 2})
    return rows


def test_a_toy_task_is_one_taskspec_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "parity", tasks.TaskSpec("parity", tasks.CLASSIFICATION, 6, parity_rows, 2,
                                                              synthetic_only=True,
                                                              words=lambda cfg: synthetic.vocabulary("order")))
    cfg = RunConfig(objective="none", model=ModelConfig(d_model=16, n_heads=2, d_ff=32, n_layers=1),
                    data=DataConfig(task="parity", seq_len=12, n_train=16, n_val=8, batch_size=4,
                                    cache_dir=str(tmp_path / "cache")),
                    train=TrainConfig(monitor="val/mcc"))
    tasks.check_run(cfg)  # the family's rules and metric keys: val/mcc is a classification metric
    assert "val/f1" in tasks.logged_metric_keys(cfg)
    dm = tasks.build_datamodule(cfg)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.kind == "classification" and len(dm.datasets["train"]) == 16
    batch = next(iter(dm.train_dataloader()))
    cfg.model.vocab_size = dm.tokenizer.vocab_size
    out = tasks.build_model(cfg, dm.num_classes)(batch)
    assert out.logits.shape == (4, 2) and torch.isfinite(out.loss)
