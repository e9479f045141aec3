"""T5 span corruption as batched tensor math (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", sec. 3.1.4).

A window of `tokens_length` raw tokens gets exactly `num_noise` noise tokens in exactly
`num_spans` spans, drawn as T5's `random_spans_noise_mask` draws them (a uniformly random
composition of the noise tokens into spans, and of the other tokens into the gaps, the window
opening with a kept span). Every noise span becomes one sentinel in the input; the target is each
sentinel followed by the span it replaced, and both end with EOS. Because the counts are fixed,
every window of a batch gives the same input and target lengths (T5's
`compute_input_and_target_lengths`), so a batch is two dense tensors with no padding.

T5's reference code (and transformers' Flax `DataCollatorForT5MLM`) loops over rows in numpy; here
one batch is a handful of tensor ops (benchmarks/bench_t5.py measures both).
"""

from __future__ import annotations

import torch


def span_counts(tokens_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) in a window of `tokens_length`, as T5's random_spans_noise_mask counts."""
    num_noise = min(max(round(tokens_length * noise_density), 1), tokens_length - 1)
    num_spans = max(round(min(num_noise, tokens_length - num_noise) / mean_noise_span_length), 1)
    return num_noise, num_spans


def corrupted_lengths(
    tokens_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(input length, target length) of a corrupted window: kept tokens + sentinels + EOS, and
    noise tokens + sentinels + EOS."""
    num_noise, num_spans = span_counts(tokens_length, noise_density, mean_noise_span_length)
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(raw window length, target length): the longest window whose corrupted input fits `inputs_length`.

    T5's compute_input_and_target_lengths (t5.data.preprocessors), without its noise_density=0.5
    special case; the counts come from `span_counts`, so the collator's lengths match exactly.
    """
    tokens_length = inputs_length
    while corrupted_lengths(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        tokens_length += 1
    while (
        tokens_length > 2
        and corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)[0] > inputs_length
    ):
        tokens_length -= 1
    return tokens_length, corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)[1]


def random_segmentation(
    num_items: int, num_segments: int, batch_size: int, generator: torch.Generator
) -> torch.Tensor:
    """(b, num_segments) lengths, each row a uniformly random composition of num_items into positive parts.

    T5 shuffles num_segments - 1 "segment starts" among the num_items - 1 gaps between items; choosing
    the gaps as the top-k of uniform scores is the same distribution, for all rows at once.
    """
    scores = torch.rand(batch_size, num_items - 1, generator=generator)
    cuts = scores.topk(num_segments - 1, dim=1).indices.sort(dim=1).values + 1  # (b, num_segments - 1)
    start = torch.zeros(batch_size, 1, dtype=torch.long)
    end = torch.full((batch_size, 1), num_items, dtype=torch.long)
    return torch.cat([start, cuts, end], dim=1).diff(dim=1)


def random_spans_noise_mask(
    batch_size: int,
    tokens_length: int,
    noise_density: float,
    mean_noise_span_length: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """(b, tokens_length) bool, True on noise tokens; each row opens with a kept span, ends with noise."""
    num_noise, num_spans = span_counts(tokens_length, noise_density, mean_noise_span_length)
    noise_lengths = random_segmentation(num_noise, num_spans, batch_size, generator)
    kept_lengths = random_segmentation(tokens_length - num_noise, num_spans, batch_size, generator)
    # Interleave kept, noise, kept, noise, ...: (b, 2 * num_spans) span lengths.
    lengths = torch.stack([kept_lengths, noise_lengths], dim=2).reshape(batch_size, 2 * num_spans)
    starts = lengths.cumsum(dim=1)[:, :-1]
    indicator = torch.zeros(batch_size, tokens_length, dtype=torch.long).scatter_(1, starts, 1)
    return indicator.cumsum(dim=1) % 2 == 1


def spans_to_sentinels(
    tokens: torch.Tensor, span_mask: torch.Tensor, sentinel_ids: torch.Tensor
) -> torch.Tensor:
    """Replace each masked span by one sentinel (the k-th span of a row by sentinel_ids[k]), drop the rest.

    Every row must hold the same number of masked tokens and spans, so the result is (b, t') dense.
    """
    before = torch.nn.functional.pad(span_mask[:, :-1], (1, 0), value=False)
    first = span_mask & ~before  # first token of each span
    span_index = (first.cumsum(dim=1) - 1).clamp(min=0)
    replaced = torch.where(first, sentinel_ids[span_index], tokens)
    keep = ~span_mask | first
    return replaced[keep].view(tokens.shape[0], -1)


def corrupt_spans(
    tokens: torch.Tensor,
    noise_density: float,
    mean_noise_span_length: float,
    sentinel_ids: torch.Tensor,
    eos_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) of T5 span corruption for raw windows (b, tokens_length).

    input_ids = kept spans with one sentinel per noise span, then EOS;
    labels = each sentinel followed by the noise span it replaced, then EOS.
    """
    b, t = tokens.shape
    noise = random_spans_noise_mask(b, t, noise_density, mean_noise_span_length, generator)
    eos = torch.full((b, 1), eos_id, dtype=tokens.dtype)
    input_ids = torch.cat([spans_to_sentinels(tokens, noise, sentinel_ids), eos], dim=1)
    # The kept spans become the sentinels of the target: kept span k precedes noise span k.
    labels = torch.cat([spans_to_sentinels(tokens, ~noise, sentinel_ids), eos], dim=1)
    return input_ids, labels
