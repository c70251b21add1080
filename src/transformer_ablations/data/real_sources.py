"""The corpora of the real-text suite, named in experiment files as ``data.source: real:<name>``.

``real:text`` is Tiny Shakespeare and ``real:sst2`` is GLUE SST-2 (a folder with ``train.tsv`` and
``dev.tsv``). By default each is the standard public copy on the Hugging Face hub (an ``hf:``
source). A local copy given in ``ABLATE_TEXT`` / ``ABLATE_SST2`` wins. ``make real TEXT=… SST2=…``
sets those variables; the value is a path, or a ``file:`` / ``hf:`` source as is.

:func:`resolve_source` runs when a config is composed (``training.configure.parse_run_config``), so the run
record, its hash and ``--print_config`` hold the real source and not the alias. It is checked
there, before anything is created, with one line that names both variables:

- a local path that does not exist;
- no local copy while the hub cannot be reached (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set,
  or no TCP connection to the hub within a few seconds) and the dataset is not in the local
  Hugging Face cache.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from transformer_ablations.config import ConfigError

PREFIX = "real:"
# alias -> (environment variable, make variable, default source, what a local copy is)
SOURCES: dict[str, tuple[str, str, str, str]] = {
    "text": ("ABLATE_TEXT", "TEXT", "hf:karpathy/tiny_shakespeare", "path/to/tinyshakespeare.txt"),
    "sst2": ("ABLATE_SST2", "SST2", "hf:nyu-mll/glue:sst2", "path/to/sst2_dir (train.tsv, dev.tsv)"),
}
HUB_TIMEOUT_S = 3.0
_TRUE = ("1", "true", "yes", "on")


def _hint() -> str:
    """Both variables, as the user types them."""
    return ("give local copies: make real " + " ".join(f"{mk}={example.split(' ')[0]}" for _, mk, _, example
                                                       in SOURCES.values())
            + " (or set " + " and ".join(env for env, *_ in SOURCES.values()) + ")")


def resolve_source(source: str) -> str:
    """``real:<name>`` -> the source a run reads (a ``file:`` or ``hf:`` source); any other source as is.

    Raises :class:`ConfigError` (one line naming ``TEXT=`` and ``SST2=``) when the corpus cannot be had."""
    if not source.startswith(PREFIX):
        return source
    name = source[len(PREFIX):]
    if name not in SOURCES:
        raise ConfigError(f"data.source={source}: unknown real-text corpus; valid: "
                          + ", ".join(PREFIX + n for n in SOURCES))
    env, make_var, default, _ = SOURCES[name]
    given = os.environ.get(env, "").strip()
    if given:
        if given.startswith(("hf:", "file:")):
            return given
        path = Path(given).expanduser()
        if not path.exists():
            raise ConfigError(f"{make_var}={given} ({env}): no such file or folder for data.source={source}; "
                              + _hint())
        return f"file:{path.resolve()}"
    if not _hub_dataset_available(default):
        raise ConfigError(
            f"data.source={source}: the real-text corpora default to the Hugging Face hub ("
            + ", ".join(d for _, _, d, _ in SOURCES.values())
            + "), which cannot be reached, and they are not in the local cache; " + _hint())
    return default


def _hub_dataset_available(source: str) -> bool:
    name = source.removeprefix("hf:").split(":", 1)[0]
    return _in_hf_cache(name) or (not _offline_by_env() and _hub_reachable())


def _offline_by_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _in_hf_cache(name: str) -> bool:
    """The hub cache holds a snapshot of dataset ``name`` (``datasets--<owner>--<name>``), or the
    ``datasets`` cache a prepared copy (``<owner>___<name>``)."""
    import datasets
    from huggingface_hub import constants

    snapshot = Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}" / "snapshots"
    return snapshot.is_dir() or (Path(datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")).is_dir()


@functools.cache
def _hub_reachable() -> bool:
    """A TCP connection to the hub's host (``HF_ENDPOINT``) within :data:`HUB_TIMEOUT_S` (once per process)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=HUB_TIMEOUT_S):
            return True
    except OSError:
        return False
