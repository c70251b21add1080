"""Token tagging over a sentence pair (the ``pair_tag`` task): the collator.

Rows are laid out exactly as :class:`~transformer_ablations.data.collate.ClassificationCollator`
lays out a pair (``[CLS] a [SEP] b [SEP]`` or ``[CLS] a b [SEP]``, with its segment ids), so the
[SEP] x segment-embedding ablation of Q6 means the same thing for tagging and for classification.
Only the labels differ: ``labels`` is [B, T], the tag of each word of A at its position (one token
per word: the synthetic tokenizer is word-level) and -100 everywhere else ([CLS], [SEP], B, padding,
function words).
"""

from __future__ import annotations

import torch

from transformer_ablations.data.collate import IGNORE, ClassificationCollator, pad_2d, truncate_pair


class TaggingCollator:
    """``{"a_ids", "b_ids", "tags"}`` -> the pair batch of ``ClassificationCollator`` with token ``labels``."""

    def __init__(self, tokenizer, max_len: int, pair_format: str = "sep"):
        self.rows = ClassificationCollator(tokenizer, max_len, pair_format)
        self.budget = max_len - (3 if pair_format == "sep" else 2)  # tokens left for a + b

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.rows([{"a_ids": ex["a_ids"], "b_ids": ex["b_ids"], "label": 0} for ex in examples])
        labels = []
        for ex in examples:  # A's tokens sit at positions 1 .. len(a) in both formats
            a, _ = truncate_pair(ex["a_ids"], ex["b_ids"], self.budget)
            labels.append([IGNORE, *list(ex["tags"])[: len(a)]])
        tags = pad_2d(labels, IGNORE)
        batch["labels"] = torch.full_like(batch["input_ids"], IGNORE)
        batch["labels"][:, : tags.shape[1]] = tags
        return batch
