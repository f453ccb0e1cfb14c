"""Caption tokenisation: the one place that turns text into the text tower's token ids.

Two forms. `tokenize` gives the Hugging Face dict (ids + attention mask, padded to the longest text of
the batch) that training, evaluation and indexing feed to `encode_text(ids, mask)`. `Tokenizer` is the
open_clip / CLIP_benchmark form that `tinymvlm.load` returns: `tokenizer(texts)` is one LongTensor
padded to the model's context length (a fixed shape, as open_clip's, so batches concatenate), and the
model derives the mask from its pad token (`TinyClip.encode_text(ids)`).
"""

from __future__ import annotations

from typing import Sequence

import torch


def tokenize(tokenizer, texts: Sequence[str], context_length: int, pad_to_max: bool = False) -> dict[str, torch.Tensor]:
    """Truncate to the context length; pad to the longest caption of the batch (or to the maximum)."""
    return dict(tokenizer(list(texts), padding="max_length" if pad_to_max else "longest", truncation=True,
                          max_length=context_length, return_tensors="pt"))


def pad_to(ids: torch.Tensor, mask: torch.Tensor, length: int, pad: int) -> torch.Tensor:
    """Right-padded ids with `pad` at every masked position, cut or padded to exactly `length`
    columns: for text towers that read a fixed-length sequence (SigLIP, open_clip)."""
    ids = ids.masked_fill(mask == 0, pad)
    if ids.shape[1] >= length:
        return ids[:, :length]
    return torch.cat([ids, ids.new_full((ids.shape[0], length - ids.shape[1]), pad)], dim=1)


class Tokenizer:
    """`tokenizer("a cat")` or `tokenizer(["a cat", "a dog"])` -> LongTensor [n, context_length]; every
    position after a text's last token holds `pad_token_id`, the id the model reads as padding.
    Hugging Face keyword arguments (`padding=True, return_tensors="pt"`) get the Hugging Face
    tokenizer's own answer, so code written against it keeps working."""

    def __init__(self, hf_tokenizer, context_length: int, pad_token_id: int) -> None:
        self.hf_tokenizer = hf_tokenizer
        self.context_length = context_length
        self.pad_token_id = pad_token_id

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None, **hf_kwargs):
        if hf_kwargs:
            return self.hf_tokenizer(texts, **hf_kwargs)
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch = tokenize(self.hf_tokenizer, texts, context_length or self.context_length, pad_to_max=True)
        return batch["input_ids"].long().masked_fill(batch["attention_mask"] == 0, self.pad_token_id)
