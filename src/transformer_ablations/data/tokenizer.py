"""A small sentencepiece tokenizer with fixed special ids, trained once and cached.

Special ids are the same in every model: ``pad=0, unk=1, bos=2, eos=3, [CLS]=4, [SEP]=5,
[MASK]=6``. [CLS]/[SEP]/[MASK] are sentencepiece *control* symbols: they have fixed ids,
text can never produce them (a literal "[MASK]" in a corpus stays ordinary text), and
:meth:`Tokenizer.decode` renders them by name. (Sentencepiece's ``word`` trainer turns
user-defined symbols into duplicate ``▁[CLS]`` pieces, so control symbols keep the ids
identical across model types.)

``train_or_load`` caches the trained model under ``cache_dir/tokenizers/`` by a content hash
of (texts, vocab_size, model_type); a :class:`filelock.FileLock` serialises processes that
race to build the same model and the file is written to a temp name then ``os.replace``-d.

The texts are read once, as a stream: every text goes into the hash, and sentencepiece trains
on a uniform sample of at most :data:`TRAIN_SENTENCES` of them (all of them, in order, for a
smaller corpus), so memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm
from filelock import FileLock

from transformer_ablations.atomic import atomic_write_bytes
from transformer_ablations.config import ConfigError

log = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"
MODEL_TYPES = ("unigram", "word", "bpe", "char")
_FORMAT_VERSION = "tok-v1"

#: most sentences sentencepiece trains on. Its unigram trainer needs about 20x its input text in
#: memory: 100k sentences of ~100 characters take ~230 MB; plenty for a vocabulary of a few thousand pieces.
TRAIN_SENTENCES = 100_000
_SAMPLE_SEED = 1234

#: number of sentencepiece trainings this process ran (tests read it to tell a cache hit)
TRAIN_CALLS = 0


def sample_texts(texts: Iterable[str], k: int = TRAIN_SENTENCES) -> list[str]:
    """A uniform sample of at most ``k`` non-empty texts (reservoir sampling, fixed seed), read in one
    pass; all of them, in order, when there are no more than ``k``. (Sentencepiece's own sampling,
    ``input_sentence_size``, draws another sample in every process.)"""
    rng = random.Random(_SAMPLE_SEED)
    out: list[str] = []
    for n, t in enumerate(t for t in texts if t and t.strip()):
        if n < k:
            out.append(t)
        elif (j := rng.randrange(n + 1)) < k:
            out[j] = t
    return out


def _key_and_sample(texts: Iterable[str], vocab_size: int, model_type: str) -> tuple[str, list[str]]:
    """One pass over ``texts``: the cache key (a hash of every text) and the sample to train on."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"tokenizer model_type={model_type!r} is not one of {list(MODEL_TYPES)}")
    h = hashlib.sha256(f"{_FORMAT_VERSION}|{model_type}|{vocab_size}|".encode())

    def hashed() -> Iterator[str]:
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
            yield t

    sample = sample_texts(hashed())
    return h.hexdigest(), sample


class Tokenizer:
    """Sentencepiece model with BERT-style special tokens. Picklable (by model bytes)."""

    pad_id = 0
    unk_id = 1
    bos_id = 2
    eos_id = 3
    cls_id = 4
    sep_id = 5
    mask_id = 6

    def __init__(self, model_proto: bytes, from_cache: bool = False):
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self.from_cache = from_cache  # True when train_or_load found the model on disk
        self._check_ids()
        self.hash = hashlib.sha256(self._proto).hexdigest()
        self.special_ids: frozenset[int] = frozenset(
            (self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.cls_id, self.sep_id, self.mask_id)
        )
        self._special_text = {
            self.pad_id: "", self.unk_id: " ⁇ ", self.bos_id: "", self.eos_id: "",
            self.cls_id: CLS, self.sep_id: SEP, self.mask_id: MASK,
        }

    def _check_ids(self) -> None:
        sp = self._sp
        want = {PAD: 0, UNK: 1, BOS: 2, EOS: 3, CLS: 4, SEP: 5, MASK: 6}
        got = {p: sp.piece_to_id(p) for p in want}
        if got != want:
            raise ConfigError(f"tokenizer model has special ids {got}; expected {want} (not a transformer_ablations tokenizer)")

    # --- construction ------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, model_type: str = "unigram") -> Tokenizer:
        """Train a model in memory (no cache)."""
        return cls(_train_proto(sample_texts(texts), vocab_size, model_type))

    @classmethod
    def train_or_load(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        cache_dir: str | os.PathLike,
        model_type: str = "unigram",
    ) -> Tokenizer:
        """Load the model for these (texts, vocab_size, model_type) from the cache, or train and store it."""
        key, sample = _key_and_sample(texts, vocab_size, model_type)
        return cls.load_or_build(key, lambda: _train_proto(sample, vocab_size, model_type), cache_dir,
                                 name=f"{model_type}-{vocab_size}")

    @classmethod
    def train_deferred(
        cls, texts: Iterable[str], vocab_size: int, cache_dir: str | os.PathLike, model_type: str = "unigram"
    ) -> tuple[Tokenizer, Callable[[], object]]:
        """Like :meth:`train_or_load`, but a newly trained model goes into the cache only when the
        returned ``store()`` is called (once the data built with it passed every check)."""
        key, sample = _key_and_sample(texts, vocab_size, model_type)
        name = f"{model_type}-{vocab_size}"
        path = _cache_path(cache_dir, name, key)
        if path.exists():
            return cls(path.read_bytes(), from_cache=True), lambda: None
        proto = _train_proto(sample, vocab_size, model_type)
        return cls(proto), lambda: cls.load_or_build(key, lambda: proto, cache_dir, name)

    @classmethod
    def load_or_build(cls, key: str, build, cache_dir: str | os.PathLike, name: str = "tok") -> Tokenizer:
        """Cache primitive: ``cache_dir/tokenizers/<name>-<key>.model`` built once by ``build() -> bytes``."""
        path = _cache_path(cache_dir, name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return cls(path.read_bytes(), from_cache=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():  # another process built it while we waited
                return cls(path.read_bytes(), from_cache=True)
            proto = build()
            atomic_write_bytes(path, proto)
        return cls(proto, from_cache=False)

    def to_bytes(self) -> bytes:
        """The serialized sentencepiece model proto (embed it in a checkpoint)."""
        return self._proto

    @classmethod
    def from_bytes(cls, b: bytes) -> Tokenizer:
        return cls(b)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        return cls(Path(path).read_bytes())

    def __getstate__(self):
        return {"proto": self._proto}

    def __setstate__(self, state):
        self.__init__(state["proto"])

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, hash={self.hash[:10]})"

    # --- use ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts)) if len(texts) else []

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text for ids; special ids become ``[CLS]``/``[SEP]``/``[MASK]`` (pad/bos/eos vanish)."""
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            if i in self.special_ids:
                if run:
                    out.append(self._sp.decode(run))
                    run = []
                if not skip_special and self._special_text[i]:
                    out.append(self._special_text[i].strip())
            else:
                run.append(i)
        if run:
            out.append(self._sp.decode(run))
        return " ".join(s for s in out if s)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)


def _cache_path(cache_dir: str | os.PathLike, name: str, key: str) -> Path:
    return Path(cache_dir) / "tokenizers" / f"{name}-{key[:20]}.model"


_REQ_RE = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def _train_proto(texts: Sequence[str], vocab_size: int, model_type: str) -> bytes:
    """Train sentencepiece on ``texts`` (a sample); a vocab_size larger than the corpus supports shrinks
    (hard_vocab_limit=False), one smaller than the character set grows to the minimum (with a warning)."""
    global TRAIN_CALLS
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"tokenizer model_type={model_type!r} is not one of {list(MODEL_TYPES)}")
    if not texts:
        raise ConfigError("tokenizer: no non-empty text to train on (empty corpus)")
    if vocab_size < 8:
        raise ConfigError(f"data.vocab_size={vocab_size} is too small: need at least 8 (7 special tokens + 1)")
    opts = {
        "model_type": model_type,
        "pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3,
        "pad_piece": PAD, "unk_piece": UNK, "bos_piece": BOS, "eos_piece": EOS,
        "control_symbols": [CLS, SEP, MASK],
        "hard_vocab_limit": False,
        "minloglevel": 2,
        "num_threads": max(1, min(4, os.cpu_count() or 1)),
        "max_sentence_length": 1 << 14,
        "character_coverage": 1.0 if model_type == "word" else 0.9995,
    }
    for attempt in range(2):
        buf = io.BytesIO()
        try:
            TRAIN_CALLS += 1
            spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf,
                                           vocab_size=vocab_size, **opts)
            return buf.getvalue()
        except RuntimeError as e:
            m = _REQ_RE.search(str(e))
            if m and attempt == 0:
                need = int(m.group(2))
                log.warning("tokenizer: vocab_size=%d is below the %d pieces this corpus's characters need; using %d",
                            vocab_size, need, need)
                vocab_size = need
                continue
            raise ConfigError(f"tokenizer: sentencepiece training failed: {str(e).splitlines()[0][:300]}") from None
    raise AssertionError("unreachable")
