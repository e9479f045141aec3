"""Vectorised BERT masking (80/10/10, optional whole words) driven by vocabulary lookup tables.

Why not transformers' `DataCollatorForLanguageModeling`: it draws random replacements from the whole
vocabulary (special tokens included), turns 80/10/10 off when masking whole words, needs offset
mappings that packed blocks do not have, builds special-token masks row by row in Python, and builds
a (b, t, t) same-word tensor for whole words. Here every per-token property is one table lookup
(`table[input_ids]`), so a batch costs a few tensor ops: benchmarks/bench_masking.py measures
the transformers collator against this one on 32 x 512 batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerBase

from pretrain.config import ConfigError


class MaskingSettings(Protocol):
    """The fields of the masked objective's config section that the masker reads."""

    mlm_probability: float
    mask_replace_prob: float
    random_replace_prob: float
    whole_word_mask: bool


@dataclass(frozen=True)
class VocabTables:
    """Per-token-id properties the masker needs, as (vocab,) tensors."""

    is_special: torch.Tensor  # bool: never selected, never a random replacement
    starts_word: torch.Tensor  # bool: the token's text begins with whitespace (byte-level "Ġ", "Ċ", ...)
    ends_word: torch.Tensor  # bool: the token is whitespace only or special, so the next token starts a word
    replacement_ids: torch.Tensor  # int64: the non-special ids random replacements are drawn from


def build_vocab_tables(tokenizer: PreTrainedTokenizerBase) -> VocabTables:
    """Lookup tables for `tokenizer`; word boundaries need a byte-level BPE (the project's own)."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    is_special = torch.zeros(size, dtype=torch.bool)
    is_special[sorted(set(tokenizer.all_special_ids))] = True
    is_special[len(tokenizer) :] = True  # rows of ids the tokenizer never produces
    starts_word = is_special.clone()
    ends_word = is_special.clone()
    backend = tokenizer.backend_tokenizer
    if isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        # Byte-level BPE (RoBERTa/GPT-2): a word is a token starting with a space byte plus its
        # continuations, as in fairseq's RoBERTa whole-word masking (GPT2BPE.is_beginning_of_word).
        for token, idx in vocab.items():
            text = backend.decoder.decode([token])
            starts_word[idx] |= text[:1].isspace()
            ends_word[idx] |= text.isspace()
    replacement_ids = torch.nonzero(~is_special[: len(tokenizer)]).flatten()
    return VocabTables(is_special, starts_word, ends_word, replacement_ids)


def compute_word_starts(input_ids: torch.Tensor, tables: VocabTables) -> torch.Tensor:
    """(b, t) bool: the token begins a word (first of a row, after whitespace or a special token)."""
    starts = tables.starts_word[input_ids]
    starts[:, 1:] |= tables.ends_word[input_ids[:, :-1]]
    starts[:, 0] = True
    return starts


@dataclass(frozen=True)
class Masker:
    """BERT's corruption: select `mlm_probability` of non-special tokens; of those, `mask_replace_prob`
    become the mask token, `random_replace_prob` a random non-special token, the rest stay."""

    tables: VocabTables
    mask_id: int
    mlm_probability: float
    mask_replace_prob: float
    random_replace_prob: float
    whole_word_mask: bool = False

    def __call__(
        self, input_ids: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) for (b, t) ids; labels are -100 on every unselected position."""
        draw = torch.rand(input_ids.shape, generator=generator)  # (b, t) selection draws
        if self.whole_word_mask:
            # Every token reuses the draw of its word's first token, so words are all in or all out.
            starts = compute_word_starts(input_ids, self.tables)
            arange = torch.arange(input_ids.shape[1]).expand_as(input_ids)
            first = torch.cummax(torch.where(starts, arange, 0), dim=1).values
            draw = draw.gather(1, first)
        selected = (draw < self.mlm_probability) & ~self.tables.is_special[input_ids]
        labels = torch.where(selected, input_ids, -100)
        # One draw per token decides mask / random / keep (BERT decides per token, words included).
        action = torch.rand(input_ids.shape, generator=generator)
        to_mask = selected & (action < self.mask_replace_prob)
        to_random = selected & ~to_mask & (action < self.mask_replace_prob + self.random_replace_prob)
        replacement = self.tables.replacement_ids
        random_ids = replacement[torch.randint(len(replacement), input_ids.shape, generator=generator)]
        inputs = torch.where(to_mask, self.mask_id, torch.where(to_random, random_ids, input_ids))
        return inputs, labels


def build_masker(tokenizer: PreTrainedTokenizerBase, ocfg: MaskingSettings) -> Masker:
    """A Masker from the objective's config section; whole words need a byte-level tokenizer."""
    if tokenizer.mask_token_id is None:
        raise ConfigError("the tokenizer has no mask token; masked LM needs one (the trained BPE has <mask>)")
    byte_level = isinstance(tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel)
    if ocfg.whole_word_mask and not byte_level:
        raise ConfigError(
            "objective.whole_word_mask=true finds words in a byte-level BPE; train the project's tokenizer "
            "(leave model.tokenizer_name empty) or set objective.whole_word_mask=false"
        )
    return Masker(
        tables=build_vocab_tables(tokenizer),
        mask_id=tokenizer.mask_token_id,
        mlm_probability=ocfg.mlm_probability,
        mask_replace_prob=ocfg.mask_replace_prob,
        random_replace_prob=ocfg.random_replace_prob,
        whole_word_mask=ocfg.whole_word_mask,
    )
