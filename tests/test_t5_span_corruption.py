"""T5 span corruption: round trips, T5's rates and span-length law, fixed lengths, sentinel order."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from pretrain.objectives.span_corruption import (
    compute_input_and_target_lengths,
    corrupt_spans,
    random_spans_noise_mask,
    span_counts,
)

EOS = 2
SENTINELS = torch.arange(5, 105)  # the ids <extra_id_0>.. get in a trained tokenizer
DENSITY, MEAN_SPAN = 0.15, 3.0  # Raffel et al. 2020, sec. 3.1.4


def t5_reference_lengths(inputs_length: int, noise_density: float, mean_noise_span_length: float):
    """T5's compute_input_and_target_lengths (google-research/text-to-text-transfer-transformer)."""

    def lengths(tokens_length):
        num_noise_tokens = int(round(tokens_length * noise_density))
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
        return num_nonnoise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def random_windows(n: int, length: int, seed: int) -> torch.Tensor:
    """Raw windows of ordinary ids with EOS between packed documents, as pack_blocks gives them."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(105, 2048, (n, length), generator=g)
    return tokens.masked_fill(torch.rand(n, length, generator=g) < 0.02, EOS)


def merge(input_ids: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """Rebuild the raw window: each sentinel of the input becomes what follows it in the targets."""
    sentinel_set = set(SENTINELS.tolist())
    spans, current = {}, None
    for tok in labels.tolist()[:-1]:  # the last target token is the closing EOS
        if tok in sentinel_set:
            current = spans.setdefault(tok, [])
        else:
            current.append(tok)
    out = []
    for tok in input_ids.tolist()[:-1]:
        out.extend(spans[tok] if tok in sentinel_set else [tok])
    return out


def corrupt(tokens: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return corrupt_spans(tokens, DENSITY, MEAN_SPAN, SENTINELS, EOS, torch.Generator().manual_seed(seed))


def test_window_length_is_t5s():
    for inputs_length in range(16, 1025):
        assert compute_input_and_target_lengths(inputs_length, DENSITY, MEAN_SPAN) == t5_reference_lengths(
            inputs_length, DENSITY, MEAN_SPAN
        )
    # T5 and nanoT5 pretrain on 568-token windows for 512-token inputs, with 114-token targets.
    assert compute_input_and_target_lengths(512, DENSITY, MEAN_SPAN) == (568, 114)


@pytest.mark.parametrize("seq_len", [64, 256, 512])
def test_round_trip_fixed_lengths_and_ordered_sentinels(seq_len):
    tokens_length, targets_length = compute_input_and_target_lengths(seq_len, DENSITY, MEAN_SPAN)
    _, num_spans = span_counts(tokens_length, DENSITY, MEAN_SPAN)
    for seed in range(5):
        tokens = random_windows(40, tokens_length, seed)
        input_ids, labels = corrupt(tokens, seed)
        assert input_ids.shape == (40, seq_len) and labels.shape == (40, targets_length)
        assert (input_ids[:, -1] == EOS).all() and (labels[:, -1] == EOS).all()
        for row in range(len(tokens)):
            assert merge(input_ids[row], labels[row]) == tokens[row].tolist()
            for side in (input_ids[row], labels[row]):
                used = side[(side >= 5) & (side < 105)]
                # Unique and in order: exactly <extra_id_0> .. <extra_id_{spans-1}>.
                assert used.tolist() == SENTINELS[:num_spans].tolist()


def test_noise_density_and_mean_span_length_over_many_tokens():
    tokens_length, _ = compute_input_and_target_lengths(256, DENSITY, MEAN_SPAN)
    tokens = random_windows(400, tokens_length, seed=0)  # 113,600 raw tokens
    noise_tokens = spans = 0
    for seed, chunk in enumerate(tokens.split(50)):
        _, labels = corrupt(chunk, seed)
        is_sentinel = (labels >= 5) & (labels < 105)
        spans += int(is_sentinel.sum())
        noise_tokens += labels[:, :-1].numel() - int(is_sentinel.sum())
    assert tokens.numel() >= 100_000
    assert abs(noise_tokens / tokens.numel() - DENSITY) < 0.01
    assert abs(noise_tokens / spans - MEAN_SPAN) < 0.2


def span_lengths(mask: torch.Tensor, value: bool) -> list[int]:
    """Lengths of the maximal runs of `value` in each row of a boolean mask."""
    lengths = []
    for row in mask.tolist():
        run = 0
        for m in row + [not value]:
            if m == value:
                run += 1
            elif run:
                lengths.append(run)
                run = 0
    return lengths


def test_span_lengths_follow_t5s_random_segmentation():
    """T5 splits n noise tokens into k spans uniformly over compositions: P(len = j) = C(n-j-1, k-2) / C(n-1, k-1)."""
    length = 284
    n, k = span_counts(length, DENSITY, MEAN_SPAN)
    mask = random_spans_noise_mask(2000, length, DENSITY, MEAN_SPAN, torch.Generator().manual_seed(1))
    assert (mask.sum(1) == n).all() and not mask[:, 0].any() and mask[:, -1].all()
    observed = Counter(span_lengths(mask, True))
    total = sum(observed.values())
    assert total == 2000 * k
    expected = {j: math.comb(n - j - 1, k - 2) / math.comb(n - 1, k - 1) for j in range(1, n - k + 2)}
    total_variation = 0.5 * sum(abs(observed.get(j, 0) / total - p) for j, p in expected.items())
    assert total_variation < 0.02


def t5_reference_noise_mask(length: int, rng: np.random.Generator) -> np.ndarray:
    """T5's random_spans_noise_mask (t5.data.preprocessors) in numpy, one row."""
    num_noise, num_spans = span_counts(length, DENSITY, MEAN_SPAN)

    def segmentation(num_items, num_segments):
        first = np.arange(num_items - 1) < (num_segments - 1)
        rng.shuffle(first)
        segment_id = np.cumsum(np.pad(first, [[1, 0]]))
        return np.unique(segment_id, return_counts=True)[1]

    spans = np.stack([segmentation(length - num_noise, num_spans), segmentation(num_noise, num_spans)], 1)
    indicator = np.zeros(length, dtype=np.int64)
    indicator[np.cumsum(spans.reshape(-1))[:-1]] = 1
    return np.cumsum(indicator) % 2 == 1


def test_noise_positions_match_t5s_reference():
    """Where noise falls along the window (T5's masks always end in noise) matches T5's own code."""
    length, rows = 284, 4000
    ours = random_spans_noise_mask(rows, length, DENSITY, MEAN_SPAN, torch.Generator().manual_seed(2))
    rng = np.random.default_rng(2)
    reference = np.stack([t5_reference_noise_mask(length, rng) for _ in range(rows)])
    assert (reference.sum(1) == ours.sum(1).numpy()).all()
    gap = np.abs(ours.float().mean(0).numpy() - reference.mean(0))
    assert gap.max() < 0.05  # binomial noise: sd of the gap ~0.008 per position


def test_masks_come_from_the_generator():
    tokens = random_windows(8, 284, seed=3)
    a, b, c = corrupt(tokens, 7), corrupt(tokens, 7), corrupt(tokens, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
