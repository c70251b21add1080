"""The typed config (``schema``: the ``Literal`` vocabulary, each section's checks) and its
composition from YAML layers, scales, ``when`` blocks and command-line overrides (``compose``)."""

from .compose import check_config_shape, compose, load_yaml, run_parser
from .schema import (
    Arch,
    AttentionConfig,
    AttentionImpl,
    AttentionKind,
    ConfigError,
    CrossAttention,
    DataConfig,
    FinetuneConfig,
    FinetuneMode,
    ModelConfig,
    Norm,
    Objective,
    PairFormat,
    Pooling,
    Positional,
    RunConfig,
    Scale,
    Scaling,
    Task,
    TrainConfig,
    WandbMode,
    all_keys,
    check_experiment_name,
    config_hash,
    flatten,
    from_dict,
    to_dict,
    toggle_values,
    validate,
)

__all__ = [
    "Arch", "AttentionConfig", "AttentionImpl", "AttentionKind", "ConfigError", "CrossAttention", "DataConfig",
    "FinetuneConfig", "FinetuneMode", "ModelConfig", "Norm", "Objective", "PairFormat", "Pooling", "Positional",
    "RunConfig", "Scale", "Scaling", "Task", "TrainConfig", "WandbMode", "all_keys", "check_config_shape",
    "check_experiment_name", "compose", "config_hash", "flatten", "from_dict", "load_yaml", "run_parser", "to_dict",
    "toggle_values", "validate",
]
