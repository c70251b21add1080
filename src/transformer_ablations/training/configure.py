"""``parse_run_config``: command-line tokens -> a :class:`RunConfig` that can run.

``config.compose`` builds the config from its layers and checks its sections; the task registry
checks objective x task x arch and the monitored metric. ``ablate finetune`` also needs a
downstream task and takes the objective from the pretrained checkpoint unless ``--objective`` is
given (reading a checkpoint is this layer's job).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import ConfigError, RunConfig, compose
from ..tasks import CLASSIFICATION, check_run, tasks_of


def parse_run_config(argv: Sequence[str], prog: str = "ablate fit") -> RunConfig:
    """Command-line tokens -> a validated :class:`RunConfig`. Raises :class:`ConfigError` (one line)."""
    cfg, rest = compose(argv, prog)
    if prog.endswith("finetune"):
        cfg = _finetune_config(cfg, explicit_objective=any(t.split("=")[0] == "--objective" for t in rest))
    return check_run(cfg)


def _finetune_config(cfg: RunConfig, explicit_objective: bool) -> RunConfig:
    """A fine-tuning run needs a downstream task; its objective is the checkpoint's, unless given."""
    downstream = tasks_of(CLASSIFICATION)
    if cfg.data.task not in downstream:
        raise ConfigError(
            f"ablate finetune needs a downstream task: --task {'|'.join(downstream)}, or a --config "
            f"experiment that sets data.task (got data.task={cfg.data.task}, a pretraining task)"
        )
    spec = cfg.finetune.pretrained
    if spec and not spec.startswith("auto:") and not explicit_objective:
        from .checkpoints import pretrained_objective

        cfg.objective = pretrained_objective(spec)
    return cfg
