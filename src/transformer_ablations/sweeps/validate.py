"""Sweep files: load, validate, and turn suggestions into run command lines.

A sweep file is a standard wandb sweep file (``wandb sweep`` accepts it unchanged)::

    name: q1_scaling
    method: grid
    metric: {name: val/acc, goal: maximize}     # = the run's train.monitor / monitor_mode
    command: [${env}, ablate, fit, --config, experiments/q1_scaling.yaml, ${args}]
    parameters:
      model.attention.scaling: {values: [sqrt_dk, none, qk_norm]}   # flat dotted names
      seed: {values: [0, 1, 2]}
      scale: {value: quick}                     # overridden by --scale

(``command`` is written as a block list in the files, since ``{`` is a flow indicator in YAML.)
Parameter names are flat dotted keys: a nested ``parameters:`` block would replace whole
sub-dicts of the run config (wandb issue 4345), so it is refused.

:func:`load_sweep` refuses a file before anything runs, with a one-line
:class:`~transformer_ablations.config.ConfigError`: malformed YAML, a wandb schema violation
(``sweeps.schema_violations_from_proposed_config``), an unknown method, a key that is not a
config key, a value outside the toggle vocabulary. :func:`validate_sweep` also parses grid
points through :func:`~transformer_ablations.training.configure.parse_run_config` (incompatible toggle pairs,
the run's monitored metric, the experiment name), once per distinct non-seed combination.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import resources
from ..config import ConfigError, RunConfig, all_keys, load_yaml, toggle_values
from ..training.wandb_run import run_label

METHODS = ("grid", "random", "bayes")
SUBCOMMANDS = ("fit", "finetune")
MACROS = ("${env}", "${interpreter}", "${program}")
GOAL_TO_MODE = {"maximize": "max", "minimize": "min"}


def sweeps_engine():
    """``import sweeps`` (wandb's open-source search engine) without its pydantic warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def to_python(value: Any) -> Any:
    """numpy scalars / arrays (which ``sweeps`` can return) -> plain Python, recursively."""
    if isinstance(value, dict):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if type(value).__module__ == "numpy":
        return value.tolist() if hasattr(value, "tolist") else value.item()
    return value


def format_arg(key: str, value: Any) -> str:
    """One sweep parameter as a flag, exactly as ``wandb agent`` formats ``${args}``."""
    return f"--{key}={value}"


@dataclass
class SweepSpec:
    """A loaded, schema-checked sweep file."""

    path: Path
    name: str
    raw: dict
    method: str
    metric_name: str | None
    metric_goal: str
    subcommand: str  # fit | finetune
    base_args: list[str]  # command tokens between the subcommand and ${args}, config paths resolved
    parameters: dict
    file_hash: str

    def engine_config(self, scale: str | None = None, extra: dict | None = None) -> dict:
        """The sweep config handed to ``sweeps.next_run``: scale and extra constants set."""
        cfg = copy.deepcopy(self.raw)
        params = cfg.setdefault("parameters", {})
        if scale is not None:
            params["scale"] = {"value": scale}
        for key, value in (extra or {}).items():
            params[key] = {"value": value}
        return cfg

    def scale(self, override: str | None = None) -> str:
        if override:
            return override
        value = self.parameters.get("scale", {}).get("value")
        return value if isinstance(value, str) else "quick"

    def grid_size(self) -> int | None:
        if self.method != "grid":
            return None
        n = 1
        for spec in self.parameters.values():
            n *= len(spec["values"]) if "values" in spec else 1
        return n


@dataclass
class Point:
    """One suggestion of the search engine, ready to run."""

    index: int
    params: dict  # plain Python values, the sweep's parameter names
    argv: list[str]  # for parse_run_config
    cfg: RunConfig | None = None
    run_id: str | None = None
    run_dir: Path | None = None
    aliases: list[int] = field(default_factory=list)  # other grid points that normalise to this run

    @property
    def label(self) -> str:
        """Short human name: the varying parameters without their prefixes."""
        return run_label(self.params)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _load_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: sweep file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read sweep file ({err.strerror})") from None
    try:
        return load_yaml(text), text
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML ({_one_line(err)[:200]})") from None
    except ConfigError as err:  # a duplicate key
        raise ConfigError(f"{path}: {err}") from None


def resolve_path(token: str, sweep_path: Path) -> str:
    """A relative ``--config`` path: as given from the cwd, else next to the sweep file's folder,
    else the packaged experiment file (``experiments/q1_scaling.yaml`` or ``q1_scaling``)."""
    p = Path(token)
    if p.is_absolute() or p.exists() or token.lstrip().startswith("{"):
        return token
    beside = Path(sweep_path).resolve().parent.parent / p
    if beside.exists():
        return str(beside)
    packaged = resources.find_file(token, "experiments")
    return str(packaged) if packaged else token


def _parse_command(path: Path, raw: dict) -> tuple[str, list[str]]:
    command = raw.get("command")
    if command is None:
        if raw.get("program") == "ablate":
            return "fit", []
        raise ConfigError(
            f"{path}: needs `command: [${{env}}, ablate, fit|finetune, --config, experiments/<name>.yaml, ${{args}}]`"
        )
    tokens = [str(t) for t in command]
    if "ablate" not in tokens:
        raise ConfigError(f"{path}: command {tokens} does not run `ablate`")
    i = tokens.index("ablate")
    if i + 1 >= len(tokens) or tokens[i + 1] not in SUBCOMMANDS:
        raise ConfigError(f"{path}: command must run `ablate fit` or `ablate finetune`, got {tokens}")
    if "${args}" not in tokens:
        raise ConfigError(f"{path}: command must end with ${{args}} (the sweep parameters as --key=value flags)")
    rest = [t for t in tokens[i + 2 :] if t != "${args}"]
    bad = [t for t in rest if t.startswith("${")]
    if bad:
        raise ConfigError(f"{path}: command macro(s) {bad} are not supported; use ${{args}}")
    out, j = [], 0
    while j < len(rest):
        tok = rest[j]
        if tok == "--config" and j + 1 < len(rest):
            out += [tok, resolve_path(rest[j + 1], path)]
            j += 2
            continue
        if tok.startswith("--config="):
            tok = "--config=" + resolve_path(tok.split("=", 1)[1], path)
        out.append(tok)
        j += 1
    for a, b in itertools.pairwise(out):
        if a == "--config" and not b.lstrip().startswith("{") and not Path(b).is_file():
            raise ConfigError(f"{path}: experiment config {b} not found (named in `command`)")
    return tokens[i + 1], out


def _check_parameters(path: Path, params: Any) -> None:
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"{path}: `parameters` must be a mapping of dotted config keys to {{values: [...]}}")
    keys, vocab = all_keys(), toggle_values()
    for key, spec in params.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: parameter {key} must be a mapping like {{values: [...]}} or {{value: x}}")
        if "parameters" in spec:
            raise ConfigError(
                f"{path}: parameter {key} is nested; use flat dotted names (e.g. {key}.<field>: {{values: [...]}}), "
                "since nested sweep parameters replace whole sub-configs (wandb issue 4345)"
            )
        if key not in keys:
            near = sorted(k for k in keys if k.rsplit(".", 1)[-1] == str(key).rsplit(".", 1)[-1])
            hint = f"; did you mean {', '.join(near)}?" if near else "; run `ablate fit --help` for the valid keys"
            raise ConfigError(f"{path}: unknown parameter {key}{hint}")
        if key in vocab:
            if "values" in spec or "value" in spec:
                values = spec["values"] if "values" in spec else [spec["value"]]
                if not isinstance(values, list):
                    raise ConfigError(f"{path}: parameter {key}: `values` must be a list")
                for v in values:
                    if v not in vocab[key] or (isinstance(v, bool) != isinstance(vocab[key][0], bool)):
                        valid = ", ".join(str(x).lower() if isinstance(x, bool) else str(x) for x in vocab[key])
                        raise ConfigError(f"{path}: {key}={v} is not valid; valid values: {valid}")
            else:
                raise ConfigError(f"{path}: parameter {key} is categorical; give `values: [...]` or `value: x`")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (no run config is parsed). Raises :class:`ConfigError`."""
    path = Path(path)
    raw, text = _load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file must be a YAML mapping (method, metric, command, parameters)")
    method = raw.get("method")
    if method not in METHODS:
        raise ConfigError(f"{path}: method {method!r} is not supported; valid methods: {', '.join(METHODS)}")
    engine = sweeps_engine()
    try:
        violations = engine.schema_violations_from_proposed_config(raw)
    except (ValueError, TypeError, AttributeError) as err:
        violations = [str(err)]
    if violations:
        raise ConfigError(f"{path}: not a valid wandb sweep: {_one_line('; '.join(violations))[:300]}")
    _check_parameters(path, raw.get("parameters"))
    metric = raw.get("metric") or {}
    _check_method(path, method, metric, raw["parameters"])
    subcommand, base_args = _parse_command(path, raw)
    return SweepSpec(
        path=path,
        name=str(raw.get("name") or path.stem),
        raw=raw,
        method=method,
        metric_name=metric.get("name"),
        metric_goal=metric.get("goal", "minimize"),
        subcommand=subcommand,
        base_args=base_args,
        parameters=raw["parameters"],
        file_hash=hashlib.sha256(text.encode()).hexdigest()[:16],
    )


GRID_KINDS = ("values", "value")  # grid search takes categorical and constant parameters (and int/q ranges)


def _check_method(path: Path, method: str, metric: dict, params: dict) -> None:
    """What the search engine would refuse only when asked for a run, as one line now."""
    if method == "bayes" and not metric.get("name"):
        raise ConfigError(f"{path}: method bayes needs `metric: {{name: <key the run logs>, goal: minimize|maximize}}`")
    if method == "grid":
        for key, spec in params.items():
            if not any(k in spec for k in GRID_KINDS) and spec.get("distribution") not in ("int_uniform", "q_uniform"):
                raise ConfigError(f"{path}: method grid needs `values: [...]` or `value: x` for parameter {key} "
                                  f"(got {sorted(spec)}); use method random or bayes for a range")


def engine_runs(spec: SweepSpec, config: dict, runs: list, n: int) -> list:
    """``sweeps.next_runs`` with its ValueError / TypeError as one line naming the file."""
    try:
        return sweeps_engine().next_runs(config, runs, validate=True, n=n)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(f"{spec.path}: the {spec.method} search refuses this sweep: {_one_line(err)[:300]}") from None


# --- suggestions -> points -> run configs -------------------------------------------------
def grid_points(
    spec: SweepSpec, scale: str | None = None, extra: dict | None = None, max_runs: int | None = None
) -> list[dict]:
    """Every grid point, in the engine's order (``sweeps.next_runs``), as plain-Python params."""
    if spec.method != "grid":
        raise ConfigError(f"{spec.path}: method {spec.method} has no finite grid")
    config = spec.engine_config(scale, extra)
    n = max_runs if max_runs is not None else 10**7  # the engine stops at the end of the grid
    if n <= 0:
        return []
    suggestions = engine_runs(spec, config, [], n)
    return [{k: to_python(v["value"]) for k, v in s.config.items()} for s in suggestions if s is not None]


def point_argv(spec: SweepSpec, params: dict, out_dir: str | None = None) -> list[str]:
    argv = [*spec.base_args, *(format_arg(k, v) for k, v in params.items())]
    if out_dir is not None:
        argv.append(f"--train.out_dir={out_dir}")
    return argv


def parse_point(spec: SweepSpec, params: dict, out_dir: str | None = None) -> RunConfig:
    """The run config of one suggestion; checks the contract between sweep and experiment."""
    from ..training.configure import parse_run_config

    shown = " ".join(format_arg(k, v) for k, v in params.items() if k != "scale")
    try:
        cfg = parse_run_config(point_argv(spec, params, out_dir), prog=f"ablate {spec.subcommand}")
    except ConfigError as err:
        raise ConfigError(f"{spec.path}: grid point {shown} cannot run: {err}") from None
    if cfg.experiment != spec.name:
        raise ConfigError(
            f"{spec.path}: sweep {spec.name} runs experiment {cfg.experiment!r}; set `experiment: {spec.name}` "
            "in its experiment file so its records land in runs/<suite>/<sweep>/"
        )
    if spec.metric_name is not None:
        mode = GOAL_TO_MODE.get(spec.metric_goal, "min")
        if cfg.train.monitor != spec.metric_name or cfg.train.monitor_mode != mode:
            raise ConfigError(
                f"{spec.path}: metric {spec.metric_name} ({spec.metric_goal}) differs from the run's "
                f"train.monitor={cfg.train.monitor} train.monitor_mode={cfg.train.monitor_mode}; make them agree"
            )
    return cfg


def _combos_without_seed(points: Iterable[dict]) -> list[dict]:
    seen, out = set(), []
    for p in points:
        key = yaml.safe_dump({k: v for k, v in p.items() if k != "seed"}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def validate_sweep(path: str | Path, scale: str | None = None, extra: dict | None = None,
                   check_points: bool = True) -> SweepSpec:
    """:func:`load_sweep` plus a parse of every distinct grid point (the seed cannot make a
    point invalid, so each non-seed combination is parsed once). Random and bayes sweeps parse
    a few suggestions."""
    spec = load_sweep(path)
    _check_extra(spec.path, extra)
    if not check_points:
        return spec
    if spec.method == "grid":
        points = grid_points(spec, scale, extra)
    else:
        points = [{k: to_python(v["value"]) for k, v in s.config.items()}
                  for s in engine_runs(spec, spec.engine_config(scale, extra), [], 3) if s is not None]
    for params in _combos_without_seed(points):
        parse_point(spec, params)
    return spec


def _check_extra(path: Path, extra: dict | None) -> None:
    if not extra:
        return
    keys = all_keys()
    for key in extra:
        if key not in keys:
            raise ConfigError(f"--set {key}=...: unknown key; run `ablate fit --help` for the valid keys")


def parse_sets(items: Sequence[str] | None) -> dict:
    """``["train.max_steps=50", "model.dropout=0.1"]`` -> {key: YAML-parsed value}."""
    out: dict = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set train.max_steps=50")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    _check_extra(Path("--set"), out)
    return out


# --- finding sweep files ----------------------------------------------------------------------
def sweeps_dir() -> Path:
    """``./sweeps`` when it holds sweep files (a user's own copies), else the packaged ones."""
    local = Path.cwd() / "sweeps"
    if local.is_dir() and any(local.glob("q*.yaml")):
        return local
    return resources.sweeps_dir()


def resolve_sweep_files(names: Sequence[str]) -> list[Path]:
    """Paths as given; or short names: ``q1`` -> sweeps/q1_*.yaml, ``q5_pretrain``, ``all``."""
    out: list[Path] = []
    for name in names:
        p = Path(name)
        if p.suffix in (".yaml", ".yml") or p.exists():
            out.append(p)
            continue
        d = sweeps_dir()
        if name == "all":
            found = sorted(d.glob("q*.yaml"))
        elif (d / f"{name}.yaml").exists():
            found = [d / f"{name}.yaml"]
        else:
            found = sorted(d.glob(f"{name}_*.yaml"))
        if not found:
            valid = ", ".join(sorted(f.stem for f in d.glob("q*.yaml"))) or "none found"
            raise ConfigError(f"no sweep file for {name!r} in {d}; valid: all, {valid}, or a path to a sweep file")
        out += found
    seen: set = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def dependency_order(items: Sequence[Any], name_of, needs_of) -> list[Any]:
    """Stable topological order: an item comes after the items it needs (when both are given)."""
    names = {name_of(x): x for x in items}
    done: list[Any] = []
    visiting: set = set()

    def visit(x):
        n = name_of(x)
        if any(name_of(d) == n for d in done):
            return
        if n in visiting:
            raise ConfigError(f"sweep {n} depends on itself through `auto:` pretrained runs")
        visiting.add(n)
        for dep in needs_of(x):
            if dep in names:
                visit(names[dep])
        visiting.discard(n)
        done.append(x)

    for x in items:
        visit(x)
    return done
