"""The permutation-LM collator (XLNet, Yang et al. 2019), vectorised over the batch.

One batch = packed blocks plus what XLNet's two-stream attention needs:
- targets: spans of 1..`max_span_length` tokens, one per window of `span_length / plm_probability`
  tokens (the sampling of transformers' `DataCollatorForPermutationLanguageModeling`), never a
  special token;
- a factorisation order: a random permutation of each half of the block, the first half before the
  second (XLNet's `_local_perm` with `perm_size = reuse_len = seq_len / 2`, which is why blocks must
  have an even length, transformers #7341);
- `perm_mask` (b, t, t), True where token i may NOT attend to token j, and `target_mapping`
  (b, n_targets, t) one-hot rows picking the predicted positions, with `labels` (b, n_targets).

It is ours rather than a wrapper of transformers' collator because that one loops over sequences
and windows in Python and builds a float (b, t, t) eye as target_mapping: benchmarks/bench_plm.py
measured 12-15x faster here (25 against 374 ms per 32x512 batch on a loaded 2-core machine; 7x
when our bool perm_mask is cast to the peer's float32).
It also differs from it in three deliberate ways, all as in the official XLNet code
(zihangdai/xlnet, data_utils.py `_local_perm` and `_sample_mask`):
- `input_ids` keep the target tokens. XLNet predicts from the query stream, which never reads the
  token at its own position; the content stream of a target carries its token to the targets after
  it in the order, which is what lets PLM model dependencies between targets (transformers writes
  <mask> there, transformers #22435).
- Special tokens (every id in `tokenizer.all_special_ids`, so padding OR special: the combination
  fixed in transformers #8409 for #6812) are never targets and keep their place in the order: they
  are hidden from the tokens before them, so nothing can reach a target's token through them.
- A span never touches the next window (one token of right context at least, as XLNet's r_ctx),
  so every run of consecutive targets is one span of at most `max_span_length` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

# XLNet partial prediction: predict 1/K of the tokens with K = 6 (Yang et al. 2019, sec. 2.3 and
# appendix A.2), the default of transformers' PLM collator.
PLM_PROBABILITY = 1 / 6
# Longest target span (tokens): max_gram = 5 in zihangdai/xlnet data_utils.py and transformers' collator.
MAX_SPAN_LENGTH = 5


def check_even(seq_len: int) -> None:
    """Blocks are permuted in two halves (XLNet `reuse_len = seq_len / 2`), so seq_len must be even."""
    if seq_len % 2:
        raise ValueError(
            f"permutation LM needs an even sequence length (the order permutes two halves), got {seq_len}"
        )


def sample_targets(
    batch_size: int, seq_len: int, plm_probability: float, max_span_length: int, generator: torch.Generator
) -> torch.Tensor:
    """(b, t) bool: one span of L ~ U{1..max_span_length} tokens per window of int(L / plm_probability).

    Windows tile the block from position 0; the span starts uniformly in its window but ends at
    least one token before the next window, so spans never merge.
    """
    # Enough windows to cover the block even if every span has length 1 (the shortest window).
    n_windows = -(-seq_len // int(1 / plm_probability))
    lengths = torch.randint(1, max_span_length + 1, (batch_size, n_windows), generator=generator)
    context = (lengths.double() / plm_probability).long()  # int(L / p), as transformers' collator
    window_start = context.cumsum(1) - context
    gap = torch.rand((batch_size, n_windows), generator=generator, dtype=torch.float64)
    start = window_start + (gap * (context - lengths)).long()  # offset uniform in [0, ctx - L - 1]
    # +1 at each span start and -1 at its end; a running sum > 0 marks the span (clipped at the end).
    edges = torch.zeros((batch_size, seq_len + 1), dtype=torch.int32)
    ones = torch.ones_like(start, dtype=torch.int32)
    edges.scatter_add_(1, start.clamp(max=seq_len), ones)
    edges.scatter_add_(1, (start + lengths).clamp(max=seq_len), -ones)
    return edges.cumsum(1)[:, :seq_len] > 0


def sample_order(batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """(b, t) long: each token's step in the factorisation order (XLNet `_local_perm`).

    Each half of the block is a uniformly random permutation and the whole first half comes before
    the second, the same permutation in both halves (as the official code and transformers do).
    """
    check_even(seq_len)
    half = torch.rand((batch_size, seq_len // 2), generator=generator).argsort(1)
    return torch.cat([half, half + seq_len // 2], dim=1)


def compute_perm_mask(order: torch.Tensor, is_target: torch.Tensor, functional: torch.Tensor) -> torch.Tensor:
    """(b, t, t) bool perm_mask: True where token i may not attend to token j.

    Context tokens (neither target nor special) move to step -1: every token sees them and they see
    only each other. A target sees the steps strictly before its own; a special token also sees
    itself. Since every row's threshold is >= 0 and context tokens sit at -1, the comparison alone
    is the whole mask (no extra `& hidden[j]`).
    """
    hidden = is_target | functional
    step = torch.where(hidden, order, -1)
    threshold = torch.where(is_target, step, step + 1)
    # numpy's broadcast comparison on int16 takes 1.7 ms for 32x512x512 where torch's takes 7-21 ms.
    dtype = np.int16 if order.shape[1] < 2**15 else np.int32
    return torch.from_numpy(
        threshold.numpy().astype(dtype)[:, :, None] <= step.numpy().astype(dtype)[:, None, :]
    )


def compute_target_mapping(
    input_ids: torch.Tensor, is_target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """target_mapping (b, n, t) float one-hot rows and labels (b, n), n = most targets in a row.

    Rows with fewer targets are padded with all-zero mapping rows and label -100.
    """
    batch_size, seq_len = input_ids.shape
    n_targets = max(int(is_target.sum(1).max()), 1)
    rows, positions = is_target.nonzero(as_tuple=True)  # row-major, so slots count up within a row
    slots = (is_target.cumsum(1) - 1)[rows, positions]
    target_mapping = torch.zeros((batch_size, n_targets, seq_len), dtype=torch.float32)
    target_mapping[rows, slots, positions] = 1.0
    labels = torch.full((batch_size, n_targets), -100, dtype=torch.long)
    labels[rows, slots] = input_ids[rows, positions]
    return target_mapping, labels


@dataclass
class PermutationCollator:
    """Collate packed blocks into XLNet permutation-LM batches; all randomness from the generator."""

    functional: torch.Tensor
    """(vocab,) bool: ids that are never targets and keep their place in the order (special tokens)."""
    plm_probability: float = PLM_PROBABILITY
    max_span_length: int = MAX_SPAN_LENGTH

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        plm_probability: float = PLM_PROBABILITY,
        max_span_length: int = MAX_SPAN_LENGTH,
    ) -> PermutationCollator:
        """A collator whose functional ids are the tokenizer's special ids (pad included)."""
        functional = torch.zeros(len(tokenizer), dtype=torch.bool)
        functional[torch.tensor(tokenizer.all_special_ids, dtype=torch.long)] = True
        return cls(functional, plm_probability, max_span_length)

    def __call__(
        self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        input_ids = torch.stack([e["input_ids"] for e in examples])  # (b, t)
        batch_size, seq_len = input_ids.shape
        check_even(seq_len)
        functional = self.functional[input_ids]
        spans = sample_targets(batch_size, seq_len, self.plm_probability, self.max_span_length, generator)
        is_target = spans & ~functional
        order = sample_order(batch_size, seq_len, generator)
        target_mapping, labels = compute_target_mapping(input_ids, is_target)
        return {
            "input_ids": input_ids,
            "perm_mask": compute_perm_mask(order, is_target, functional),
            "target_mapping": target_mapping,
            "labels": labels,
        }
