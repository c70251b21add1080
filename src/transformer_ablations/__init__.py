"""transformer-ablations: six textbook claims about the Transformer, settled by ablation sweeps."""

__version__ = "0.1.0"
__all__ = ["load_pretrained", "train"]


def __getattr__(name: str):
    # lazy, so `ablate --help` and config parsing don't import torch and Lightning
    if name == "load_pretrained":
        from .training.checkpoints import load_pretrained

        return load_pretrained
    if name == "train":
        from .training.run import train

        return train
    raise AttributeError(name)
