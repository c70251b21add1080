"""Sweeps: one wandb sweep file per question, run by wandb agents or by the local executor.

* :mod:`.validate`  load and check sweep files (schema, vocabulary, every grid point parses)
* :mod:`.executor`  the local executor (``sweeps.next_run`` + flock claims + forked runs)
* :mod:`.launcher`  ``wandb sweep`` / ``wandb agent`` per GPU, login detection, GPU checks
* :mod:`.slurm`     a SLURM array of agents (``sweeps/slurm_agent.sbatch``)
* :mod:`.sync`      ``ablate sync``: upload offline runs
* :mod:`.command`   the ``ablate sweep|agents|sync|slurm`` handlers
* :mod:`.testing`   a fake ``train`` for tests and overhead timing

Nothing heavy is imported here: ``import transformer_ablations.sweeps`` is cheap.
"""

from __future__ import annotations

__all__ = ["ExecutorOptions", "load_sweep", "run_sweep", "run_sweeps", "validate_sweep"]


def __getattr__(name):
    if name in ("ExecutorOptions", "Executor", "run_sweep", "run_sweeps", "SweepResult"):
        from . import executor

        return getattr(executor, name)
    if name in ("load_sweep", "validate_sweep", "grid_points", "resolve_sweep_files"):
        from . import validate

        return getattr(validate, name)
    raise AttributeError(name)
