"""Collators: lists of tokenized examples -> the batch dicts of docs/ARCHITECTURE.md.

Plain torch. Every batch is padded to its own longest row (dynamic padding) and rows are
truncated to ``max_len``. Masks are bool (True = real token); ignored labels are -100.

Randomness (MLM masking) is a pure function of (seed, example ``idx``, training ``pass``): the
same masks whatever the batching, the number of dataloader workers or DDP ranks, and after a
resume. Training examples carry the pass over the data they come from (``data.sampling``), so
each pass masks anew (dynamic masking, RoBERTa); validation examples have no pass, so every
validation sees the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from transformer_ablations.data.tokenizer import Tokenizer

IGNORE = -100


def _mix(*xs: int) -> int:
    """Deterministic 63-bit mix of integers (splitmix64 steps)."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def pad_2d(rows: Sequence[Sequence[int]], value: int, dtype=torch.long) -> torch.Tensor:
    """Right-pad rows to the longest one."""
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=dtype).view(len(rows), width)


def truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer segment until ``len(a) + len(b) <= budget``."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        if len(a) >= len(b):
            a.pop()
        else:
            b.pop()
    return a, b


class MLMCollator:
    """``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]`` when B is empty) with BERT masking.

    Examples: ``{"a_ids", "b_ids", "nsp_label", "idx"}``. ``nsp=True`` adds ``nsp_labels``.
    Of the non-special, non-pad tokens, ``mlm_probability`` are chosen; of those 80% become
    [MASK], 10% a random non-special token, 10% stay. ``labels`` hold the original id at chosen
    positions, -100 elsewhere. Each batch has at least one chosen position.
    """

    def __init__(self, tokenizer: Tokenizer, max_len: int, mlm_probability: float = 0.15, nsp: bool = False,
                 seed: int = 0):
        self.seed = int(seed)
        self.tok = tokenizer
        self.max_len = max_len
        self.p = mlm_probability
        self.nsp = nsp
        specials = torch.tensor(sorted(tokenizer.special_ids))
        self.special = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
        self.special[specials] = True
        self.normal_ids = torch.nonzero(~self.special).flatten()

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        t = self.tok
        ids, segs = [], []
        for ex in examples:
            a, b = ex["a_ids"], ex.get("b_ids") or []
            if b:
                a, b = truncate_pair(a, b, self.max_len - 3)
                ids.append([t.cls_id, *a, t.sep_id, *b, t.sep_id])
                segs.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            else:
                a = list(a)[: self.max_len - 2]
                ids.append([t.cls_id, *a, t.sep_id])
                segs.append([0] * (len(a) + 2))
        input_ids = pad_2d(ids, t.pad_id)
        attention_mask = pad_2d([[1] * len(r) for r in ids], 0, torch.bool)
        segment_ids = pad_2d(segs, 0)
        width, rows_u, rows_r, rows_rnd = input_ids.shape[1], [], [], []
        for ex in examples:  # each row's draws depend only on (seed, idx[, pass])
            g = torch.Generator().manual_seed(_mix(self.seed, 7, int(ex["idx"]), *([ex["pass"]] if "pass" in ex else [])))
            rows_u.append(torch.rand(self.max_len, generator=g)[:width])
            rows_r.append(torch.rand(self.max_len, generator=g)[:width])
            rows_rnd.append(torch.randint(len(self.normal_ids), (self.max_len,), generator=g)[:width])
        u, r, rnd = torch.stack(rows_u), torch.stack(rows_r), torch.stack(rows_rnd)
        input_ids, labels = mask_tokens(input_ids, attention_mask, self.special, self.normal_ids, self.p,
                                        self.tok.mask_id, u, r, rnd)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "segment_ids": segment_ids,
                 "labels": labels}
        if self.nsp:
            batch["nsp_labels"] = torch.tensor([int(ex["nsp_label"]) for ex in examples], dtype=torch.long)
        return batch


def mask_tokens(input_ids, attention_mask, special, normal_ids, p, mask_id, u, r, rnd):
    """BERT 80/10/10 masking from given uniforms ``u`` (choose), ``r`` (how) and ``rnd`` (random ids)."""
    candidate = attention_mask & ~special[input_ids]
    chosen = candidate & (u < p)
    if not chosen.any() and candidate.any():  # guarantee a non-empty loss
        flat = torch.where(candidate.flatten(), u.flatten(), torch.full_like(u.flatten(), 2.0))
        chosen = torch.zeros_like(candidate).flatten()
        chosen[flat.argmin()] = True
        chosen = chosen.view_as(candidate)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    out = input_ids.clone()
    out[chosen & (r < 0.8)] = mask_id
    swap = chosen & (r >= 0.8) & (r < 0.9)
    out[swap] = normal_ids[rnd[swap]]
    return out, labels


class CausalCollator:
    """``{"input_ids"}`` rows -> ``input_ids, attention_mask, labels`` with labels[:, t] = input_ids[:, t+1]."""

    def __init__(self, tokenizer: Tokenizer, max_len: int):
        self.tok = tokenizer
        self.max_len = max_len

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [list(ex["input_ids"])[: self.max_len] for ex in examples]
        input_ids = pad_2d(rows, self.tok.pad_id)
        attention_mask = pad_2d([[1] * len(r) for r in rows], 0, torch.bool)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "labels": shift_labels(input_ids, attention_mask)}


def shift_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    labels = torch.full_like(input_ids, IGNORE)
    nxt = input_ids[:, 1:]
    labels[:, :-1] = torch.where(attention_mask[:, 1:], nxt, torch.full_like(nxt, IGNORE))
    return labels


class Seq2SeqCollator:
    """``{"src_ids", "tgt_ids"}`` rows -> encoder-decoder or prefix-LM batches (+ ``src_len``).

    ``mode="encoder_decoder"``: ``src_ids, src_mask, tgt_in_ids (BOS + target), tgt_mask,
    labels (target + EOS)``. ``mode="decoder"``: ``input_ids = source [SEP] target``,
    ``prefix_len = len(source) + 1``, ``labels`` shifted like the causal LM (``labels[:, t]`` is the
    token after t) and kept only where that token is a target token or the final EOS, i.e.
    positions ``prefix_len-1 .. prefix_len-1+len(target)``.
    ``max_len`` bounds the source and target each (encoder_decoder) or the whole row (decoder).
    """

    def __init__(self, tokenizer: Tokenizer, max_len: int, mode: str = "encoder_decoder"):
        if mode not in ("encoder_decoder", "decoder"):
            raise ValueError(f"Seq2SeqCollator mode must be encoder_decoder or decoder, got {mode!r}")
        self.tok = tokenizer
        self.max_len = max_len
        self.mode = mode

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        t = self.tok
        srcs, tgts = [], []
        for ex in examples:
            s, g = list(ex["src_ids"]), list(ex["tgt_ids"])
            if self.mode == "encoder_decoder":
                s, g = s[: self.max_len], g[: self.max_len - 1]
            else:
                s, g = truncate_pair(s, g, self.max_len - 1)
            srcs.append(s)
            tgts.append(g)
        src_len = torch.tensor([len(s) for s in srcs], dtype=torch.long)
        if self.mode == "encoder_decoder":
            tgt_in = [[t.bos_id, *g] for g in tgts]
            lab = [[*g, t.eos_id] for g in tgts]
            return {
                "src_ids": pad_2d(srcs, t.pad_id),
                "src_mask": pad_2d([[1] * len(s) for s in srcs], 0, torch.bool),
                "tgt_in_ids": pad_2d(tgt_in, t.pad_id),
                "tgt_mask": pad_2d([[1] * len(r) for r in tgt_in], 0, torch.bool),
                "labels": pad_2d(lab, IGNORE),
                "src_len": src_len,
            }
        rows, labs = [], []
        for s, g in zip(srcs, tgts):
            rows.append([*s, t.sep_id, *g])
            labs.append([IGNORE] * len(s) + [*g, t.eos_id])  # label at t = token at t+1 (EOS after the last)
        return {
            "input_ids": pad_2d(rows, t.pad_id),
            "attention_mask": pad_2d([[1] * len(r) for r in rows], 0, torch.bool),
            "prefix_len": torch.tensor([len(s) + 1 for s in srcs], dtype=torch.long),
            "labels": pad_2d(labs, IGNORE),
            "src_len": src_len,
        }


class ClassificationCollator:
    """``{"a_ids", "b_ids"?, "label"}`` -> ``[CLS] a [SEP]`` or, for pairs, ``[CLS] a [SEP] b [SEP]``
    (segment ids 0 / 1, ``pair_format="sep"``) or ``[CLS] a b [SEP]`` (all 0, ``pair_format="concat"``)."""

    def __init__(self, tokenizer: Tokenizer, max_len: int, pair_format: str = "sep"):
        if pair_format not in ("sep", "concat"):
            raise ValueError(f"pair_format must be sep or concat, got {pair_format!r}")
        self.tok = tokenizer
        self.max_len = max_len
        self.pair_format = pair_format

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        t = self.tok
        ids, segs = [], []
        for ex in examples:
            a, b = ex["a_ids"], ex.get("b_ids")
            if b is None:
                a = list(a)[: self.max_len - 2]
                ids.append([t.cls_id, *a, t.sep_id])
                segs.append([0] * (len(a) + 2))
            elif self.pair_format == "sep":
                a, b = truncate_pair(a, b, self.max_len - 3)
                ids.append([t.cls_id, *a, t.sep_id, *b, t.sep_id])
                segs.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            else:
                a, b = truncate_pair(a, b, self.max_len - 2)
                ids.append([t.cls_id, *a, *b, t.sep_id])
                segs.append([0] * (len(a) + len(b) + 2))
        return {
            "input_ids": pad_2d(ids, t.pad_id),
            "attention_mask": pad_2d([[1] * len(r) for r in ids], 0, torch.bool),
            "segment_ids": pad_2d(segs, 0),
            "labels": torch.tensor([int(ex["label"]) for ex in examples], dtype=torch.long),
        }
