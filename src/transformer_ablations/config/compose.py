"""Config composition: YAML layers, scales, ``when`` blocks and command-line overrides -> a :class:`RunConfig`.

An experiment file may carry two data blocks besides the config itself:

* ``scales: {smoke: {...}, quick: {...}, full: {...}}``: overrides applied for ``--scale``;
* ``when: [{if: {model.arch: decoder}, set: {...}}]``: normalisations applied when the resolved
  config matches (e.g. a decoder has no cross-attention to pool), so a sweep grid cannot produce
  a contradictory run; two grid points that normalise to one config are one run.

Precedence: defaults < config files < scale block < command-line flags < matching ``when`` blocks.
Each is one config layer given to jsonargparse in that order, so ``--print_config`` prints the
config that runs. ``--config`` takes a path or a packaged experiment name (``q1_scaling``).
The task rules (objective x task x arch, the monitored metric) are checked above this layer, by
``tasks.check_run``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from collections.abc import Sequence
from typing import Any, get_args

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace, set_parsing_settings

from .. import resources
from .explain import explain
from .schema import ConfigError, RunConfig, Scale, flatten, validate

ALIASES = {"--pretrained": "--finetune.pretrained", "--task": "--data.task"}

set_parsing_settings(docstring_parse_attribute_docstrings=True)  # `--help` shows the config fields' docstrings


# --- the shape of config files (before jsonargparse merges them) -----------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently; no maintained YAML library for Python refuses it by default)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}); give each key once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (:class:`ConfigError`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def check_config_shape(data: Any, where: str) -> None:
    """An experiment file must be a mapping, and each block (``model:``, ``model.attention:`` …)
    a mapping too: a scalar or null there would reset the whole block to its defaults."""
    if data is None:
        raise ConfigError(f"{where}: the config is empty; it must be a mapping of config keys (e.g. model: {{d_model: 64}})")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the config must be a mapping of config keys, got a {type(data).__name__}")
    _check_blocks(data, RunConfig, "", where)
    scales = data.get("scales")
    if scales is not None:
        if not isinstance(scales, dict) or not all(isinstance(v, dict) or v is None for v in scales.values()):
            raise ConfigError(f"{where}: scales must map a scale ({', '.join(get_args(Scale))}) to a mapping of overrides")
        for name, block in scales.items():
            _check_dotted_blocks(block or {}, f"{where}: scales.{name}")
    when = data.get("when")
    if when is not None and not isinstance(when, list):
        raise ConfigError(f"{where}: when must be a list of {{if: ..., set: ...}} mappings")


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _check_blocks(data: dict, cls: type, prefix: str, where: str) -> None:
    hints = _hints(cls)
    for key, value in data.items():
        hint = hints.get(key)
        if hint is None or not dataclasses.is_dataclass(hint):
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}: {prefix}{key} is a block of {prefix}{key}.* keys and must be a mapping, got {value!r}; "
                f"e.g. {prefix}{key}: {{{dataclasses.fields(hint)[0].name}: ...}}"
            )
        _check_blocks(value, hint, f"{prefix}{key}.", where)


def _check_dotted_blocks(block: dict, where: str) -> None:
    """Scale overrides may use dotted keys (``model.d_model: 32``) or nested blocks."""
    nested: dict = {}
    for key, value in block.items():
        node = nested
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    _check_blocks(nested, RunConfig, "", where)


def run_parser(prog: str = "ablate fit") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, exit_on_error=False, allow_abbrev=False, description="Train one ablation run.")
    parser.add_argument(
        "--config", action=ActionConfigFile,
        help="experiment YAML: a path or a packaged name such as q1_scaling (may be given several times)",
    )
    parser.add_class_arguments(RunConfig, fail_untyped=True, as_positional=False)
    return parser


@functools.cache
def _compose_parser(prog: str) -> ArgumentParser:
    """One parser per ``prog`` for :func:`compose`: building one reads every config class's source for
    its field docs (~0.15 s), and a sweep composes hundreds of grid points; parsing leaves it unchanged."""
    return run_parser(prog)


def _apply_aliases(argv: Sequence[str]) -> list[str]:
    out = []
    for tok in argv:
        head, sep, tail = tok.partition("=")
        out.append(ALIASES.get(head, head) + sep + tail)
    return out


def _nested(flat_or_nested: dict) -> dict:
    """Accept both {'model.arch': x} and {'model': {'arch': x}} in scale/when blocks."""
    out: dict = {}
    for key, value in flat_or_nested.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and parts[-1] in node:
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = _nested(value) if isinstance(value, dict) else value
    return out


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _when_layer(ns: Namespace, when: list) -> dict:
    """The merged ``set`` of the ``when`` blocks whose condition holds for ``ns``."""
    flat = flatten(ns.as_dict())
    out: dict = {}
    for i, block in enumerate(when):
        if not isinstance(block, dict) or "if" not in block or "set" not in block:
            raise ConfigError(f"when[{i}] must be a mapping with `if:` and `set:` keys, got {block!r}")
        if all(flat.get(k) == v for k, v in block["if"].items()):
            out = _deep_merge(out, _nested(block["set"]))
    return out


def _split_configs(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate the ``--config`` values (kept in order) from the other flags."""
    configs, rest, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--config" and i + 1 < len(argv):
            configs.append(argv[i + 1])
            i += 2
            continue
        if tok.startswith("--config="):
            configs.append(tok.split("=", 1)[1])
        else:
            rest.append(tok)
        i += 1
    return configs, rest


def _config_layers(configs: list[str]) -> tuple[list[dict], dict, list]:
    """Each ``--config`` (path, packaged name or inline YAML) -> its layer without the data blocks,
    plus the merged ``scales`` and the concatenated ``when`` blocks of all files."""
    layers, scales, when = [], {}, []
    for token in configs:
        data = _load_config(token)
        scales = _deep_merge(scales, {k: _nested(v or {}) for k, v in (data.pop("scales", None) or {}).items()})
        when += data.pop("when", None) or []
        layers.append(data)
    return layers, scales, when


def _load_config(token: str) -> dict:
    if token.lstrip().startswith("{"):
        text, where = token, f"--config {token.strip()}"
    else:
        path = resources.find_file(token, "experiments")
        if path is None or not path.is_file():
            names = ", ".join(resources.packaged_names("experiments"))
            raise ConfigError(f"--config {token}: file not found; give a path or a packaged experiment ({names})")
        where = f"--config {token}"
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{where}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = load_yaml(text)  # refuses duplicate keys
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: malformed YAML ({' '.join(str(err).split())[:160]})") from None
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    # jsonargparse resets a block given as a scalar to its defaults: every block must be a mapping
    check_config_shape(data, where)
    return data


def _as_config(layer: dict) -> list[str]:
    return ["--config", yaml.safe_dump(layer)] if layer else []


def _to_run_config(parser: ArgumentParser, ns: Namespace) -> RunConfig:
    ns = copy.deepcopy(ns)
    ns.pop("config", None)
    init = parser.instantiate(ns) if hasattr(parser, "instantiate") else parser.instantiate_classes(ns)
    return RunConfig(**{k: init[k] for k in RunConfig.__dataclass_fields__})


def compose(argv: Sequence[str], prog: str = "ablate fit") -> tuple[RunConfig, list[str]]:
    """Command-line tokens -> (a :class:`RunConfig` whose sections are checked, the flags that are
    not ``--config`` files). Raises :class:`ConfigError` (one line).

    The layers, in order: config files, the scale block of the resolved ``scale``, the flags,
    the matching ``when`` blocks."""
    argv = _apply_aliases(argv)
    configs, rest = _split_configs(argv)
    layers, scales, when = _config_layers(configs)
    files = [tok for layer in layers for tok in _as_config(layer)]
    parser = _compose_parser(prog)
    given = [(f"--config {token}", layer) for token, layer in zip(configs, layers)]  # what `explain` reads
    try:
        ns = parser.parse_args([*files, *rest])
        check_config_shape(scales.get(ns.scale) or {}, f"scales.{ns.scale}")
        given.append((f"scales.{ns.scale}", scales.get(ns.scale) or {}))
        scale = _as_config(scales.get(ns.scale) or {})
        if scale:
            ns = parser.parse_args([*files, *scale, *rest])
        when_layer = _when_layer(ns, when)
        check_config_shape(when_layer, "when")
        given.append(("when", when_layer))
        tail = _as_config(when_layer)
        if tail:
            ns = parser.parse_args([*files, *scale, *rest, *tail])
        cfg = _to_run_config(parser, ns)
    except ArgumentError as err:
        raise ConfigError(explain(err, rest, given)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML: {' '.join(str(err).split())}") from None
    return validate(cfg), rest
