"""The package's shape: no import circle (imports inside functions included), the folder layering
of docs/ARCHITECTURE.md, every registry's keys equal to its ``Literal``, and a task added by one
``TaskSpec`` entry plus its generator."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

import transformer_ablations
from transformer_ablations import config, tasks
from transformer_ablations.model.attention import ATTENTION_KINDS, SCALINGS
from transformer_ablations.model.pooling import POOLINGS
from transformer_ablations.model.positional import POSITIONALS
from transformer_ablations.model.transformer import MEMORIES
from transformer_ablations.runs.summary import Status

PACKAGE = Path(transformer_ablations.__file__).parent
# a folder may import only the folders before it in its list (and the shared base modules)
MAY_IMPORT = {
    "config": {"resources"},
    "data": {"config"},
    "model": {"config", "data"},
    "tasks": {"config", "data", "model"},
    "runs": {"config"},
    "training": {"config", "data", "model", "tasks", "runs"},
    "sweeps": {"config", "data", "model", "tasks", "runs", "training", "resources"},
    "report": {"config", "runs", "training", "sweeps", "resources"},
    "bench": {"config", "model"},
}
BASE = {"atomic", "resources"}  # leaf modules any layer may use


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports, anywhere in the file (functions included)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_package_has_no_import_cycle():
    cycle = _cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_a_cycle_is_found_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_folders_import_only_the_layers_below_them():
    wrong = []
    for module, targets in import_graph().items():
        src = _folder(module)
        if src not in MAY_IMPORT:
            continue  # cli.py and the package root use everything; base modules use nothing of the package
        for target in targets:
            dst = _folder(target)
            if dst != src and dst not in MAY_IMPORT[src] | BASE:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_the_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "transformer_ablations.training.checkpoints" in graph["transformer_ablations.training.configure"]


# --- the vocabulary: every registry's keys are its Literal ----------------------------------------
@pytest.mark.parametrize("registry,literal", [
    (tasks.TASKS, config.Task),
    (SCALINGS, config.Scaling),
    (POSITIONALS, config.Positional),
    (POOLINGS, config.Pooling),
    (MEMORIES, config.CrossAttention),
    ({kind for kind, _ in ATTENTION_KINDS}, config.AttentionKind),
    ({impl for _, impl in ATTENTION_KINDS}, config.AttentionImpl),
])
def test_every_registry_has_exactly_the_keys_of_its_literal(registry, literal):
    assert set(registry) == set(get_args(literal))


def test_every_objective_is_valid_for_some_task_and_the_status_vocabulary_is_one_enum():
    objectives = {obj for spec in tasks.TASKS.values() for obj in spec.objectives}
    assert objectives == set(get_args(config.Objective))
    assert [s.value for s in Status] == ["running", "finished", "diverged", "failed", "interrupted"]


def test_task_metrics_are_the_keys_the_monitor_check_reads():
    cfg = config.RunConfig(objective="none", data=config.DataConfig(task="order", eval_length_multiples=[2]))
    keys = tasks.logged_metric_keys(cfg)
    assert keys == [*(f"{s}/{m}" for s in ("val", "val_len2x") for m in tasks.TASK_METRICS["classification"]),
                    "train/loss"]
    cfg.train.monitor = "val/token_acc"
    with pytest.raises(config.ConfigError, match="train.monitor=val/token_acc is not logged by data.task=order"):
        tasks.check_run(cfg)
