"""Memorization probe: does the model reproduce training text it was shown, and not text it was not?

The extraction test of Carlini et al. ("Extracting Training Data from Large Language Models", 2021;
"Quantifying Memorization Across Neural Language Models", 2023): take a sequence of k + m tokens,
prompt the model with its first k, decode m tokens greedily, and compare with the true continuation.
A sequence is extractable when all m tokens match. Sampled training sequences against sampled
held-out sequences separate memorization from plain good prediction: a model that generalises
completes both about equally often; one that memorized completes the training ones far more often.

`pretrain eval --model DIR --memorization [--prefix-tokens 32 --continuation-tokens 32 --samples 256]`
samples from the run's own training and validation data (its resolved_config.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from pretrain.config import ConfigError
from pretrain.data.fast_encode import batch_encoder
from pretrain.eval.compression import load_causal_lm, max_positions

PREFIX_TOKENS = 32  # k: prompt length (the default; Carlini et al. 2023 use 50 and up)
CONTINUATION_TOKENS = 32  # m: greedily decoded tokens compared with the truth
NUM_SAMPLES = 256  # sequences per split
SAMPLE_SEED = 1234
MAX_EXAMPLES = 5  # distinct memorized training sequences shown in the report


def sample_sequences(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    num_samples: int,
    length: int,
    seed: int,
    special_tokens_in_text: str = "parse",
) -> np.ndarray:
    """Up to `num_samples` windows (n, length) of token ids, one from each of randomly drawn documents.

    Documents are visited in a seeded random order (each copy of a duplicated document counts, as in
    the data); a window starts at a random token of a document with at least `length` tokens.
    """
    rng = np.random.default_rng(seed)
    encode = batch_encoder(tokenizer, special_tokens_in_text)  # as training tokenized the text
    windows: list[np.ndarray] = []
    order = rng.permutation(len(texts))
    for start in range(0, len(order), 512):
        chunk = [texts[int(i)] for i in order[start : start + 512]]
        for ids in encode(chunk):
            ids = ids.astype(np.int64)
            if len(ids) >= length:
                offset = int(rng.integers(0, len(ids) - length + 1))
                windows.append(ids[offset : offset + length])
            if len(windows) == num_samples:
                return np.stack(windows)
    return np.stack(windows) if windows else np.zeros((0, length), dtype=np.int64)


@torch.no_grad()
def greedy_continuations(model: nn.Module, prefixes: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The model's greedy continuation (n, num_tokens) of each prefix (n, k), decoded with a KV cache."""
    out = model(input_ids=prefixes, use_cache=True)
    generated = [out.logits[:, -1].argmax(-1)]
    for _ in range(num_tokens - 1):
        out = model(input_ids=generated[-1][:, None], past_key_values=out.past_key_values, use_cache=True)
        generated.append(out.logits[:, -1].argmax(-1))
    return torch.stack(generated, dim=1)


def compute_matched_lengths(generated: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Leading tokens (n,) where the generation equals the truth, both (n, m)."""
    return torch.cumprod((generated == truth).long(), dim=1).sum(dim=1)


def probe_sequences(
    model: nn.Module, sequences: np.ndarray, prefix_tokens: int, batch_size: int = 64
) -> np.ndarray:
    """Matched continuation length of each sequence (n, k + m): prompt with k tokens, decode m greedily."""
    continuation = sequences.shape[1] - prefix_tokens
    matched = []
    for start in range(0, len(sequences), batch_size):
        batch = torch.from_numpy(sequences[start : start + batch_size])
        generated = greedy_continuations(model, batch[:, :prefix_tokens], continuation)
        matched.append(compute_matched_lengths(generated, batch[:, prefix_tokens:]))
    return torch.cat(matched).numpy() if matched else np.zeros(0, dtype=np.int64)


def memorization_report(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train_texts: Sequence[str],
    heldout_texts: Sequence[str],
    prefix_tokens: int = PREFIX_TOKENS,
    continuation_tokens: int = CONTINUATION_TOKENS,
    num_samples: int = NUM_SAMPLES,
    seed: int = SAMPLE_SEED,
    special_tokens_in_text: str = "parse",
) -> dict[str, Any]:
    """Exact-match rate and mean matched length for sampled training and held-out sequences."""
    length = prefix_tokens + continuation_tokens
    positions = max_positions(model)
    if length > positions:
        raise ConfigError(
            f"prefix + continuation = {length} tokens exceed the model's {positions} positions; "
            "lower --prefix-tokens/--continuation-tokens"
        )
    results: dict[str, Any] = {"prefix_tokens": prefix_tokens, "continuation_tokens": continuation_tokens}
    for split, texts in (("train", train_texts), ("heldout", heldout_texts)):
        sequences = sample_sequences(texts, tokenizer, num_samples, length, seed, special_tokens_in_text)
        if len(sequences) == 0:
            raise ConfigError(
                f"no {split} document has {length} tokens; lower --prefix-tokens/--continuation-tokens"
            )
        matched = probe_sequences(model, sequences, prefix_tokens)
        results[f"{split}_sequences"] = len(sequences)
        results[f"{split}_exact_match_rate"] = float(np.mean(matched == continuation_tokens))
        results[f"{split}_mean_matched_tokens"] = float(np.mean(matched))
        if split == "train":
            exact = sequences[matched == continuation_tokens]
            texts_seen = dict.fromkeys(tokenizer.decode(s.tolist()) for s in exact)
            results["memorized_examples"] = list(texts_seen)[:MAX_EXAMPLES]
    return results


def run_memorization(
    model_dir: Path, data_cfg: Any, prefix_tokens: int, continuation_tokens: int, num_samples: int
) -> dict[str, Any]:
    """`pretrain eval --memorization`: the report for a saved model on its run's train/validation data."""
    import datasets

    from pretrain.data.text import load_raw_datasets

    model, tokenizer = load_causal_lm(model_dir)
    train_raw, valid_raw = load_raw_datasets(data_cfg)
    if not isinstance(train_raw, datasets.Dataset):
        raise ConfigError("--memorization samples documents and needs a non-streaming training set")
    return memorization_report(
        model,
        tokenizer,
        train_raw["text"],
        valid_raw["text"],
        prefix_tokens,
        continuation_tokens,
        num_samples,
        special_tokens_in_text=data_cfg.special_tokens_in_text,
    )
