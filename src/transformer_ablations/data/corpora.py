"""Real data sources: ``file:<path>`` (txt / tsv / jsonl / a directory) and ``hf:<name>[:<config>]``.

What each source gives, by the kind of task:

- text corpus (``data.task=corpus``): documents, each a list of sentences.
  txt: one document per blank-line-separated block, sentences split on lines and on
  ``. ! ?``; tsv/jsonl rows (``text``/``sentence``/``sentence1`` …) are grouped 32 rows to a
  document; a jsonl ``text`` record is one document. hf: the ``text`` column (wikitext,
  bookcorpus …) read like txt lines (blank rows and ``= heading =`` rows end a document; a
  corpus with no blank rows is cut every 32 rows).
- labeled (``single``/``pair``): tsv with a header (``sentence`` or ``sentence1``+``sentence2``,
  also question/sentence, premise/hypothesis, question1/question2, text) and ``label``
  (integers 0..C-1); jsonl with the same keys; hf: GLUE-style datasets.
- parallel (``translate``): tsv/jsonl with ``source``/``target`` (or ``src``/``tgt``); hf:
  a ``translation`` column ``{lang: text}`` with the pair named by the config (``wmt16:de-en``
  translates de -> en).

A directory is read as ``train.*`` plus ``dev.*`` / ``val.*`` / ``valid.*`` / ``validation.*``
(tsv, jsonl or txt) for the two splits. A single file (or an hf dataset without a validation
split) is split: labeled and parallel rows are shuffled with a fixed seed and 10% held out;
text keeps its order and the last 10% of documents are held out.

A text corpus streams: its documents are read from the source again on every pass over them
(a txt file line by line, an hf dataset in batches from its memory-mapped Arrow files), never
held whole. Rows of tsv/jsonl files (labeled, parallel, or text) are read into lists.

Every problem is a :class:`ConfigError` with one line naming the source.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from transformer_ablations.config import ConfigError
from transformer_ablations.data.sources import (
    PAIR_COLUMNS,
    PARALLEL_COLUMNS,
    ROWS_PER_DOC,
    SINGLE_COLUMNS,
    SPLIT_SEED,
    TABLE_EXTS,
    VAL_FRACTION,
    Documents,
    LabeledData,
    ParallelData,
    TextCorpus,
    parse_source,
    read_lines,
    resolve_path,
    split_files,
)

# --- text -> documents --------------------------------------------------------------------
_SENT_RE = re.compile(r"(?<=[.!?])\s+")
_HEADING_RE = re.compile(r"^\s*=+ .* =+\s*$")


def split_sentences(line: str) -> list[str]:
    return [s.strip() for s in _SENT_RE.split(line.strip()) if s.strip()]


def lines_to_documents(lines: Iterable[str], max_words: int | None = None) -> Iterator[list[str]]:
    """Blank lines (and wikitext ``= heading =`` lines) end a document; each line is split into
    sentences. When none of the first 1000 lines is blank (a sentence-per-row corpus such as
    bookcorpus) the lines are cut into documents of ``ROWS_PER_DOC`` lines instead.
    Stops at a document end once ``max_words`` words were read (None: read all)."""
    it = iter(lines)
    head = list(itertools.islice(it, 1000))
    blank_mode = any(not ln.strip() or _HEADING_RE.match(ln) for ln in head)
    cur: list[str] = []
    words = 0
    rows_in_cur = 0
    for line in itertools.chain(head, it):
        boundary = False
        if blank_mode and (not line.strip() or _HEADING_RE.match(line)):
            boundary = True
        elif line.strip():
            cur.extend(split_sentences(line))
            words += len(line.split())
            rows_in_cur += 1
            boundary = not blank_mode and rows_in_cur >= ROWS_PER_DOC
        if boundary and cur:
            yield cur
            cur, rows_in_cur = [], 0
            if max_words is not None and words >= max_words:
                return
    if cur:
        yield cur


def rows_to_documents(texts: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(texts), ROWS_PER_DOC):
        doc = [s for t in texts[i: i + ROWS_PER_DOC] for s in split_sentences(t)]
        if doc:
            yield doc


def _text_corpus(train: Documents, val: Documents | None, source: str) -> TextCorpus:
    """Reads the source through once (to check it and count its documents) before anything is built.
    Without a val split, the last 10% of the documents are held out (of a single document: its last
    10% of sentences)."""
    n = sum(1 for _ in train)
    if val is not None:
        if not n or not sum(1 for _ in val):
            raise ConfigError(f"data.source={source}: no text found (empty corpus)")
        return TextCorpus(train, val)
    if not n:
        raise ConfigError(f"data.source={source}: no text found (empty corpus)")
    if n == 1:
        sents = next(iter(train))
        if len(sents) < 2:
            raise ConfigError(f"data.source={source}: corpus too short: a single sentence cannot make train and val")
        k = max(1, int(len(sents) * VAL_FRACTION))
        return TextCorpus([sents[:-k]], [sents[-k:]])
    k = max(1, round(n * VAL_FRACTION))
    return TextCorpus(Documents(train.read, 0, n - k), Documents(train.read, n - k, n))


# --- tables (tsv / jsonl) -----------------------------------------------------------------
def _read_table(path: Path, source: str) -> tuple[list[str], list[dict]]:
    """(columns, rows as dicts of strings/values) of a tsv (with header) or jsonl file."""
    lines = read_lines(path, source)
    if path.suffix in (".jsonl", ".json"):
        rows: list[dict] = []
        cols: dict[str, None] = {}
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"data.source={source}: {path.name} line {n} is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"data.source={source}: {path.name} line {n} is not a JSON object")
            rows.append(obj)
            cols.update(dict.fromkeys(obj))
        if not rows:
            raise ConfigError(f"data.source={source}: {path.name} has no records (empty corpus)")
        return list(cols), rows
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [h.strip() for h in next(reader)]
    rows = []
    for n, rec in enumerate(reader, 2):
        if not any(x.strip() for x in rec):
            continue
        if len(rec) != len(header):
            raise ConfigError(
                f"data.source={source}: {path.name} line {n} has {len(rec)} columns, the header has {len(header)} "
                f"({', '.join(header)})"
            )
        rows.append(dict(zip(header, rec)))
    if not rows:
        raise ConfigError(f"data.source={source}: {path.name} has a header but no rows (empty corpus)")
    return header, rows


def _label(v, where: str, source: str) -> int:
    if isinstance(v, bool) or v is None:
        ok = False
    elif isinstance(v, int):
        ok = True
    else:
        ok = isinstance(v, str) and re.fullmatch(r"\s*\d+\s*", v) is not None
    if not ok or int(v) < 0:
        raise ConfigError(
            f"data.source={source}: label {v!r} ({where}) is not a non-negative integer; labels must be class ids 0..C-1"
        )
    return int(v)


def _text_columns(cols: list[str]) -> tuple[str, str | None] | None:
    for a, b in PAIR_COLUMNS:
        if a in cols and b in cols:
            return a, b
    for a in SINGLE_COLUMNS:
        if a in cols:
            return a, None
    return None


def _labeled_rows(path: Path, source: str) -> tuple[list[dict], bool]:
    cols, rows = _read_table(path, source)
    tc = _text_columns(cols)
    if tc is None:
        raise ConfigError(
            f"data.source={source}: {path.name} has no text column (columns: {', '.join(map(str, cols))}); "
            "need sentence, or sentence1 and sentence2"
        )
    if "label" not in cols:
        raise ConfigError(
            f"data.source={source}: {path.name} has no 'label' column (columns: {', '.join(map(str, cols))}); "
            "classification needs integer labels in a 'label' column"
        )
    a, b = tc
    out = []
    for i, r in enumerate(rows):
        where = f"{path.name} row {i + 1}"
        out.append({"text_a": str(r.get(a) or ""), "text_b": (str(r.get(b) or "") if b else None),
                    "label": _label(r.get("label"), where, source)})
    return out, b is not None


def _shuffle_split(rows: list, source: str) -> tuple[list, list]:
    if len(rows) < 2:
        raise ConfigError(f"data.source={source}: only {len(rows)} example; need at least 2 to hold out a val split")
    rows = list(rows)
    random.Random(SPLIT_SEED).shuffle(rows)
    k = max(1, round(len(rows) * VAL_FRACTION))
    return rows[:-k], rows[-k:]


# --- file sources -------------------------------------------------------------------------
def load_text_corpus(source: str, max_words: int | None = None) -> TextCorpus:
    """Documents for pretraining (``data.task=corpus``) from a file: or hf: source, read through once
    to check them; its splits read the source again when iterated."""
    kind, arg, conf = parse_source(source)
    if kind == "hf":
        return _hf_text(source, arg, conf, max_words)
    p = resolve_path(arg, source)
    train_f, val_f = split_files(p, source)
    train = Documents(lambda: _file_docs(train_f, source, max_words))
    val = None if val_f is None else Documents(lambda: _file_docs(val_f, source, None))
    return _text_corpus(train, val, source)


def _file_docs(path: Path, source: str, max_words: int | None) -> Iterator[list[str]]:
    if path.suffix not in TABLE_EXTS:
        return lines_to_documents(read_lines(path, source), max_words)
    cols, rows = _read_table(path, source)
    if path.suffix in (".jsonl", ".json") and "text" in cols:
        docs = ([s for line in str(r.get("text") or "").splitlines() for s in split_sentences(line)] for r in rows)
        return (doc for doc in docs if doc)
    tc = _text_columns(cols)
    if tc is None:
        raise ConfigError(
            f"data.source={source}: {path.name} has no text column (columns: {', '.join(map(str, cols))}); "
            "need text, sentence, or sentence1 and sentence2"
        )
    texts = [str(r.get(c) or "") for r in rows for c in tc if c]
    return rows_to_documents([t for t in texts if t.strip()])


def load_labeled(source: str) -> LabeledData:
    """Labeled sentences or sentence pairs (``single``/``pair``) from a file: or hf: source."""
    kind, arg, conf = parse_source(source)
    if kind == "hf":
        return _hf_labeled(source, arg, conf)
    p = resolve_path(arg, source)
    train_f, val_f = split_files(p, source)
    if train_f.suffix not in TABLE_EXTS:
        raise ConfigError(
            f"data.source={source}: {train_f.name} is plain text; classification needs a tsv (header with a label "
            "column) or jsonl with sentence/label"
        )
    train, pair = _labeled_rows(train_f, source)
    if val_f is None:
        train, val = _shuffle_split(train, source)
    else:
        val, vpair = _labeled_rows(val_f, source)
        if vpair != pair:
            raise ConfigError(f"data.source={source}: {train_f.name} and {val_f.name} disagree on single vs pair columns")
    return _finish_labeled(train, val, pair, source)


def _finish_labeled(train, val, pair, source, num_classes: int | None = None) -> LabeledData:
    if not train or not val:
        raise ConfigError(f"data.source={source}: no labeled examples (empty corpus)")
    top = max(r["label"] for r in train + val)
    n = max(num_classes or 0, top + 1)
    if n < 2:
        raise ConfigError(f"data.source={source}: all labels are {top}; classification needs at least 2 classes")
    return LabeledData(train, val, n, pair)


def load_parallel(source: str) -> ParallelData:
    """Source/target pairs (``translate``) from a file: or hf: source."""
    kind, arg, conf = parse_source(source)
    if kind == "hf":
        return _hf_parallel(source, arg, conf)
    p = resolve_path(arg, source)
    train_f, val_f = split_files(p, source)

    def rows_of(f: Path) -> list[dict]:
        if f.suffix not in TABLE_EXTS:
            raise ConfigError(f"data.source={source}: {f.name}: translation needs tsv/jsonl with source and target columns")
        cols, rows = _read_table(f, source)
        pc = next(((a, b) for a, b in PARALLEL_COLUMNS if a in cols and b in cols), None)
        if pc is None:
            raise ConfigError(
                f"data.source={source}: {f.name} has no source/target columns (columns: {', '.join(map(str, cols))})"
            )
        return [{"source": str(r[pc[0]]), "target": str(r[pc[1]])} for r in rows]

    train = rows_of(train_f)
    if val_f is None:
        train, val = _shuffle_split(train, source)
    else:
        val = rows_of(val_f)
    return ParallelData(train, val)


# --- Hugging Face -------------------------------------------------------------------------
def hf_load(source: str, name: str, conf: str | None):
    """``datasets.load_dataset(name, conf)``; any failure (offline, unknown name) is one ConfigError line."""
    import datasets

    label = f"{name}/{conf}" if conf else name
    args = f"'{name}'" + (f", '{conf}'" if conf else "")
    try:
        return datasets.load_dataset(name, conf) if conf else datasets.load_dataset(name)
    except Exception as e:  # noqa: BLE001 - every failure becomes one clear line
        why = " ".join(str(e).split())[:160] or type(e).__name__
        if isinstance(e, (ConnectionError, TimeoutError, OSError)) or "offline" in why.lower():
            raise ConfigError(
                f"data.source={source}: cannot reach the Hugging Face hub for '{label}' and it is not in the local "
                f"cache ({type(e).__name__}: {why}); pre-download with "
                f"`HF_HUB_OFFLINE=0 python -c \"import datasets; datasets.load_dataset({args})\"` or use file:"
            ) from None
        raise ConfigError(
            f"data.source={source}: cannot load '{label}' with datasets.load_dataset ({type(e).__name__}: {why}); "
            "check the dataset name and config, or use file:"
        ) from None


def _hf_splits(dd, source: str, labeled: bool = False):
    names = list(dd.keys())
    if "train" not in names:
        raise ConfigError(f"data.source={source}: dataset has no train split (splits: {', '.join(names)})")
    val = next((n for n in ("validation", "valid", "dev", "val") if n in names), None)
    if val is None and not labeled and "test" in names:
        val = "test"
    return dd["train"], (dd[val] if val else None)


def _hf_text(source, name, conf, max_words) -> TextCorpus:
    dd = hf_load(source, name, conf)
    tr, va = _hf_splits(dd, source)
    col = "text" if "text" in tr.column_names else next(
        (c for c, f in tr.features.items() if getattr(f, "dtype", None) == "string"), None)
    if col is None:
        raise ConfigError(f"data.source={source}: no text column (columns: {', '.join(tr.column_names)})")

    def lines(ds) -> Iterator[str]:
        for batch in ds.iter(batch_size=10_000):
            for t in batch[col]:
                t = t or ""
                yield from t.splitlines() or [""]
                if "\n" in t.strip("\n"):
                    yield ""  # a multi-line record is a document of its own

    train = Documents(lambda: lines_to_documents(lines(tr), max_words))
    val = None if va is None else Documents(lambda: lines_to_documents(lines(va), max_words // 5 if max_words else None))
    return _text_corpus(train, val, source)


def _hf_labeled(source, name, conf) -> LabeledData:
    dd = hf_load(source, name, conf)
    tr, va = _hf_splits(dd, source, labeled=True)
    cols = tr.column_names
    tc = _text_columns(cols)
    if tc is None or "label" not in cols:
        raise ConfigError(
            f"data.source={source}: need text column(s) and a 'label' column (columns: {', '.join(cols)})"
        )
    a, b = tc
    nc = getattr(tr.features["label"], "num_classes", None)

    def rows(ds) -> list[dict]:
        out = []
        for i, r in enumerate(ds):
            lab = r["label"]
            if isinstance(lab, int) and lab < 0:  # unlabeled (GLUE test)
                continue
            out.append({"text_a": r[a] or "", "text_b": (r[b] or "") if b else None,
                        "label": _label(lab, f"row {i}", source)})
        return out

    train = rows(tr)
    if va is None:
        train, val = _shuffle_split(train, source)
    else:
        val = rows(va)
    return _finish_labeled(train, val, b is not None, source, nc)


def _hf_parallel(source, name, conf) -> ParallelData:
    dd = hf_load(source, name, conf)
    tr, va = _hf_splits(dd, source)
    cols = tr.column_names

    if "translation" in cols:
        langs = (conf or "").split("-")
        if len(langs) != 2:
            first = tr[0]["translation"]
            langs = list(first)[:2]
        s, t = langs

        def rows(ds):
            return [{"source": r["translation"][s], "target": r["translation"][t]} for r in ds]
    else:
        pc = next(((a, b) for a, b in PARALLEL_COLUMNS if a in cols and b in cols), None)
        if pc is None:
            raise ConfigError(f"data.source={source}: no translation or source/target columns ({', '.join(cols)})")

        def rows(ds):
            return [{"source": r[pc[0]], "target": r[pc[1]]} for r in ds]

    train = rows(tr)
    if va is None:
        train, val = _shuffle_split(train, source)
    else:
        val = rows(va)
    return ParallelData(train, val)
