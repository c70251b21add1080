"""What a real data source is: the ``file:``/``hf:`` source strings, the files they name, and the
shapes the loaders of :mod:`~transformer_ablations.data.corpora` return (documents, labeled rows,
parallel rows). Every problem is a :class:`ConfigError` with one line naming the source."""

from __future__ import annotations

import codecs
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from transformer_ablations.config import ConfigError

SPLIT_SEED = 1234
VAL_FRACTION = 0.1
ROWS_PER_DOC = 32
TEXT_EXTS = (".txt", ".text", ".raw", ".md")
TABLE_EXTS = (".tsv", ".jsonl", ".json")
PAIR_COLUMNS = [("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"),
                ("question1", "question2"), ("text_a", "text_b")]
SINGLE_COLUMNS = ["sentence", "text", "text_a"]
PARALLEL_COLUMNS = [("source", "target"), ("src", "tgt")]
VAL_NAMES = ("dev", "val", "valid", "validation")


class Documents:
    """Documents ``start:stop`` of the stream that ``read()`` opens: every iteration reads the source again."""

    def __init__(self, read: Callable[[], Iterator[list[str]]], start: int = 0, stop: int | None = None):
        self.read, self.start, self.stop = read, start, stop

    def __iter__(self) -> Iterator[list[str]]:
        return itertools.islice(self.read(), self.start, self.stop)


@dataclass
class TextCorpus:
    """Documents (lists of sentences), each split an iterable that can be read more than once."""

    train_docs: Iterable[list[str]]
    val_docs: Iterable[list[str]]


@dataclass
class LabeledData:
    train: list[dict]  # {"text_a": str, "text_b": str | None, "label": int}
    val: list[dict]
    num_classes: int
    is_pair: bool


@dataclass
class ParallelData:
    train: list[dict] = field(default_factory=list)  # {"source": str, "target": str}
    val: list[dict] = field(default_factory=list)


# --- source strings -----------------------------------------------------------------------
def parse_source(source: str) -> tuple[str, str, str | None]:
    """``synthetic`` -> ("synthetic", "", None); ``file:p`` -> ("file", p, None);
    ``hf:name[:config]`` -> ("hf", name, config)."""
    s = (source or "").strip()
    if s == "synthetic":
        return "synthetic", "", None
    if s.startswith("file:") and len(s) > 5:
        return "file", s[5:], None
    if s.startswith("hf:") and len(s) > 3:
        name, _, conf = s[3:].partition(":")
        if not name:
            raise ConfigError(f"data.source={source}: missing dataset name; valid: hf:<name>[:<config>]")
        return "hf", name, conf or None
    raise ConfigError(
        f"data.source={source}: unknown source; valid: synthetic, file:<path> (txt, tsv, jsonl or a directory), "
        "hf:<name>[:<config>]"
    )


def resolve_path(path: str, source: str) -> Path:
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise ConfigError(f"data.source={source}: file not found")
    return p


def split_files(p: Path, source: str) -> tuple[Path, Path | None]:
    """(train file, val file or None) for a file or a directory source."""
    if p.is_file():
        return p, None
    exts = TEXT_EXTS + TABLE_EXTS
    train = next((p / f"train{e}" for e in exts if (p / f"train{e}").is_file()), None)
    if train is None:
        raise ConfigError(f"data.source={source}: directory has no train.tsv, train.jsonl or train.txt")
    val = next((p / f"{n}{e}" for n in VAL_NAMES for e in exts if (p / f"{n}{e}").is_file()), None)
    return train, val


def source_identity(source: str) -> str:
    """A cheap string that changes when the source's content changes (for cache keys)."""
    kind, arg, conf = parse_source(source)
    if kind == "synthetic":
        return "synthetic"
    if kind == "hf":
        return f"hf:{arg}:{conf}"
    p = resolve_path(arg, source)
    files = [f for f in split_files(p, source) if f is not None]
    parts = []
    for f in files:
        st = f.stat()
        parts.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return "file:" + "|".join(parts)


def read_lines(path: Path, source: str) -> Iterator[str]:
    """The lines of a UTF-8 file (as ``str.splitlines`` cuts them), read one at a time; ConfigError if it
    is unreadable, not UTF-8 (at the bad byte) or empty (at its end)."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise ConfigError(f"data.source={source}: cannot read {path.name}: {e.strerror}") from None
    with f:
        offset, has_text = 0, False  # offset: bytes before this line, after a BOM
        for raw in f:
            if offset == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = raw[e.start: e.start + 1].hex()
                raise ConfigError(
                    f"data.source={source}: {path.name} is not valid UTF-8 (byte 0x{bad} at offset "
                    f"{offset + e.start}); re-encode it as UTF-8"
                ) from None
            offset += len(raw)
            has_text = has_text or bool(line.strip())
            yield from line.splitlines()
    if not has_text:
        raise ConfigError(f"data.source={source}: {path.name} is empty; need at least one line of text")
