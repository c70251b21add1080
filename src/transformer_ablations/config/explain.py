"""Why a config was refused, in one line, read from the typed schema instead of from jsonargparse's text.

jsonargparse refuses an invalid layer with a multi-line message and carries no structured error
(its ``ArgumentError`` holds text only), so rather than rewrite that text, :func:`explain` reads
the layers it was given against :class:`~.schema.RunConfig`'s type hints and names the first key
that breaks them: an unknown key (with the nearest valid ones), a block given a value, a value
outside its ``Literal`` (with the valid values), or a value that is not an int, float or bool.
Anything else falls back to jsonargparse's own message on one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any, Literal, get_args, get_origin

import yaml

from .schema import RunConfig, flatten

NOT_CONFIG_KEYS = {"config", "print_config", "help"}  # flags of `ablate fit` that are not RunConfig fields


@dataclasses.dataclass(frozen=True)
class FieldType:
    hint: Any  # the field's type without its Optional
    nullable: bool


@functools.cache
def field_types() -> dict[str, FieldType]:
    """Every dotted key a user may set -> its type (``model.attention.scaling`` -> Literal[...])."""
    out: dict[str, FieldType] = {}
    _walk(RunConfig, "", out)
    return out


@functools.cache
def blocks() -> frozenset[str]:
    """The dotted names of the sections (``model``, ``model.attention`` ...): keys that hold keys."""
    return frozenset(prefix for key in field_types() for prefix in _prefixes(key))


def _prefixes(key: str) -> Iterator[str]:
    parts = key.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


def _walk(cls: type, prefix: str, out: dict[str, FieldType]) -> None:
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            _walk(hint, f"{prefix}{name}.", out)
            continue
        args = get_args(hint)
        optional = get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        inner = next(a for a in args if a is not type(None)) if optional else hint
        out[f"{prefix}{name}"] = FieldType(inner, optional)


def near_keys(key: str) -> str:
    near = difflib.get_close_matches(key, sorted(field_types()), n=2, cutoff=0.85)
    return f"did you mean {', '.join(near)}? " if near else ""


def unknown_key(key: str) -> str:
    return f"{key}: unknown key; {near_keys(key)}run `ablate fit --help` for the valid keys"


def value_problem(key: str, value: Any, shown: Any) -> str | None:
    """What is wrong with ``key=value`` for the key's type (None: nothing this check can see)."""
    ftype = field_types()[key]
    if value is None and ftype.nullable:
        return None
    hint = ftype.hint
    if get_origin(hint) is Literal:
        valid = get_args(hint)
        return None if value in valid else f"{key}={shown} is not valid; valid values: {', '.join(map(str, valid))}"
    kinds = {bool: (bool,), int: (int,), float: (int, float)}
    if hint in kinds and (not isinstance(value, kinds[hint]) or (hint is not bool and isinstance(value, bool))):
        return f"{key}={shown} is not a valid {hint.__name__}"
    return None


def _flag_pairs(flags: Sequence[str]) -> Iterator[tuple[str, str | None, str]]:
    """``--key=value`` / ``--key value`` / a stray token -> (key, value or None, the tokens as given)."""
    i = 0
    while i < len(flags):
        tok = flags[i]
        if not tok.startswith("--"):
            yield "", None, tok
            i += 1
            continue
        key, sep, value = tok[2:].partition("=")
        if not sep and i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            value, sep = flags[i + 1], " "
            i += 1
        yield key, (value if sep else None), tok if sep != " " else f"{tok} {value}"
        i += 1


def _parsed(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _flag_problem(flags: Sequence[str]) -> str | None:
    unknown = []
    for key, value, shown in _flag_pairs(flags):
        if key in NOT_CONFIG_KEYS:
            continue
        if key in blocks() and value is not None:
            return (f"{key}={value}: {key} is a block of {key}.* keys, not a value; "
                    f"set its keys, e.g. --{key}.<key>=...")
        if key not in field_types():
            unknown.append((key, shown))
            continue
        if value is not None and (problem := value_problem(key, _parsed(value), value)):
            return problem
    if unknown:
        return (f"unknown option(s) {' '.join(shown for _, shown in unknown)}; "
                f"{near_keys(unknown[0][0])}run `ablate fit --help` for the valid keys")
    return None


def _layer_problem(where: str, layer: dict) -> str | None:
    for key, value in flatten(layer).items():
        if key not in field_types():
            return f"{where}: {unknown_key(key)}"
        if problem := value_problem(key, value, value):
            return f"{where}: {problem}"
    return None


def explain(err: Exception, flags: Sequence[str], layers: Sequence[tuple[str, dict]]) -> str:
    """The one line that says which given key or value jsonargparse refused and what is valid.

    ``flags``: the command-line tokens (not ``--config``); ``layers``: (where, mapping) of the
    config files, the scale block and the ``when`` blocks, in the order they were given."""
    for problem in (_flag_problem(flags), *(_layer_problem(where, layer) for where, layer in layers)):
        if problem:
            return problem
    return " ".join(str(err).split())
