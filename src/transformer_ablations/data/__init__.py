"""Data: synthetic tasks, real corpora, the sentencepiece tokenizer, collators and the data module.

``build_datamodule`` is imported lazily (it pulls in Lightning)."""

from transformer_ablations.data.tokenizer import Tokenizer

__all__ = ["AblationDataModule", "Tokenizer", "build_datamodule"]


def __getattr__(name):
    if name in ("build_datamodule", "AblationDataModule"):
        from transformer_ablations.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(name)
