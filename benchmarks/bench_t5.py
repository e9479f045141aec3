"""T5 span-corruption benchmark: our vectorised collator against transformers' T5 collator, in training steps.

The default tiny T5 of recipes/t5/config.yaml (trained BPE of the embedded corpus, 284-token raw
windows -> 256-token inputs and 58-token targets, micro-batch 8), in one process. Both collators
collate the same micro-batches in A B B A rounds; then the model's optimizer steps (forward,
backward, AdamW update) are timed on our batches. A training step is collate + model step;
reported: median collate ms, step ms, the collator's share of the step (target < 5%) and how many
times faster ours collates. The peer is `DataCollatorForT5MLM` from transformers'
examples/flax/language-modeling/run_t5_mlm_flax.py (numpy, one row at a time; transformers ships no
PyTorch one), copied below with one change: sentinel k maps to our <extra_id_k> id instead of
len(tokenizer) - k - 1 (our sentinels are trained specials, not the vocabulary's tail).

    .venv/bin/python benchmarks/bench_t5.py [--rounds 5] [--repeats 40] [--steps 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pretrain.config import parse_config
from pretrain.data.packing import pack_blocks, token_stream, tokenize_dataset
from pretrain.data.text import cache_root, load_raw_datasets
from pretrain.data.tokenizer import build_tokenizer, set_post_processor
from pretrain.objectives.t5 import SpanCorruption
from pretrain.settings import make_run_config

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "t5" / "config.yaml"
Examples = list[dict[str, torch.Tensor]]


class PeerT5Collator:
    """transformers' Flax-example DataCollatorForT5MLM (Apache-2.0), returning torch tensors."""

    def __init__(self, objective: SpanCorruption, seed: int = 0) -> None:
        ocfg = objective.cfg.objective
        self.noise_density, self.mean_noise_span_length = ocfg.noise_density, ocfg.mean_noise_span_length
        self.eos, self.pad = objective.tokenizer.eos_token_id, objective.tokenizer.pad_token_id
        self.sentinels = np.concatenate([[0], objective.sentinel_ids.numpy()])  # index k + 1 -> <extra_id_k>
        np.random.seed(seed)

    def __call__(self, examples: Examples) -> dict[str, torch.Tensor]:
        input_ids = np.stack([e["input_ids"].numpy() for e in examples])
        batch_size, length = input_ids.shape
        mask_indices = np.asarray([self.random_spans_noise_mask(length) for _ in range(batch_size)])
        labels_mask = ~mask_indices
        input_ids_sentinel = self.create_sentinel_ids(mask_indices.astype(np.int8))
        labels_sentinel = self.create_sentinel_ids(labels_mask.astype(np.int8))
        labels = self.filter_input_ids(input_ids, labels_sentinel)
        batch = {"input_ids": self.filter_input_ids(input_ids, input_ids_sentinel), "labels": labels}
        decoder_input_ids = np.zeros_like(labels)
        decoder_input_ids[:, 1:], decoder_input_ids[:, 0] = labels[:, :-1], self.pad
        batch["decoder_input_ids"] = decoder_input_ids
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def create_sentinel_ids(self, mask_indices: np.ndarray) -> np.ndarray:
        start_indices = mask_indices - np.roll(mask_indices, 1, axis=-1) * mask_indices
        start_indices[:, 0] = mask_indices[:, 0]
        sentinel_ids = np.where(start_indices != 0, np.cumsum(start_indices, axis=-1), start_indices)
        sentinel_ids = np.where(sentinel_ids != 0, self.sentinels[sentinel_ids], 0)
        sentinel_ids -= mask_indices - start_indices
        return sentinel_ids

    def filter_input_ids(self, input_ids: np.ndarray, sentinel_ids: np.ndarray) -> np.ndarray:
        batch_size = input_ids.shape[0]
        input_ids_full = np.where(sentinel_ids != 0, sentinel_ids, input_ids)
        input_ids = input_ids_full[input_ids_full >= 0].reshape((batch_size, -1))
        return np.concatenate([input_ids, np.full((batch_size, 1), self.eos, dtype=input_ids.dtype)], axis=-1)

    def random_spans_noise_mask(self, length: int) -> np.ndarray:
        orig_length = length
        num_noise_tokens = int(np.round(length * self.noise_density))
        num_nonnoise_tokens = length - num_noise_tokens
        num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
        num_noise_spans = int(
            np.round(min(num_noise_tokens, num_nonnoise_tokens) / self.mean_noise_span_length)
        )
        num_noise_spans = max(num_noise_spans, 1)
        num_nonnoise_tokens = length - num_noise_tokens

        def _random_segmentation(num_items: int, num_segments: int) -> np.ndarray:
            mask_indices = np.arange(num_items - 1) < (num_segments - 1)
            np.random.shuffle(mask_indices)
            first_in_segment = np.pad(mask_indices, [[1, 0]])
            segment_id = np.cumsum(first_in_segment)
            _, segment_length = np.unique(segment_id, return_counts=True)
            return segment_length

        noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans)
        nonnoise_span_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans)
        interleaved_span_lengths = np.reshape(
            np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1), [num_noise_spans * 2]
        )
        span_starts = np.cumsum(interleaved_span_lengths)[:-1]
        span_start_indicator = np.zeros((length,), dtype=np.int8)
        span_start_indicator[span_starts] = True
        span_num = np.cumsum(span_start_indicator)
        is_noise = np.equal(span_num % 2, 1)
        return is_noise[:orig_length]


def collate_times(
    collate: Callable[[Examples], dict[str, torch.Tensor]], batches: list[Examples]
) -> list[float]:
    """ms of each collation of `batches`."""
    times = []
    for examples in batches:
        start = time.perf_counter()
        collate(examples)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def model_step_times(
    objective: SpanCorruption, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict]
) -> list[float]:
    """ms of each optimizer step after collation: to device, forward, backward, AdamW update."""
    device = next(model.parameters()).device
    times = []
    for batch in batches:
        start = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = objective.compute_loss(model, batch)
        (out.loss_sum / out.num_targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="A B B A rounds of collation")
    parser.add_argument("--repeats", type=int, default=40, help="batches collated per side per turn")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps (after one warm-up)")
    args = parser.parse_args(argv)

    cfg = parse_config(make_run_config(SpanCorruption.Config), [], RECIPE)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_raw, _ = load_raw_datasets(cfg.data)
    specials = SpanCorruption.extra_special_tokens(cfg)
    tokenizer = build_tokenizer("", train_raw, cfg.model.vocab_size, cache_root(cfg.data), specials)
    set_post_processor(tokenizer, SpanCorruption.post_processor)
    objective = SpanCorruption(cfg, tokenizer)
    blocks = pack_blocks(token_stream(tokenize_dataset(train_raw, tokenizer)), objective.block_len())
    size = cfg.train.micro_batch_size
    batches = [[blocks[i * size + j] for j in range(size)] for i in range(args.repeats)]
    generator = torch.Generator().manual_seed(0)
    sides = {"ours": lambda ex: objective.collate(ex, generator), "peer": PeerT5Collator(objective)}
    for name, collate in sides.items():  # both give the same fixed shapes
        print(f"{name}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in collate(batches[0]).items()))
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(args.rounds):
        for name in ("ours", "peer", "peer", "ours"):
            times[name] += collate_times(sides[name], batches)
    collate_ms = {name: statistics.median(t) for name, t in times.items()}

    model = objective.build_model().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.learning_rate)
    collated = [objective.collate(ex, generator) for ex in batches[: args.steps + 1]]
    step_ms = statistics.median(model_step_times(objective, model, optimizer, collated)[1:])
    print(
        f"T5 span corruption, tiny T5 on {device} ({torch.get_num_threads()} threads), batch {size} x "
        f"{objective.block_len()} raw tokens; collation: medians of {args.rounds} A B B A rounds x "
        f"{args.repeats} batches; model step (forward, backward, AdamW): median of {args.steps}"
    )
    print(f"{'collator':42s} {'collate ms':>10s} {'step ms':>9s} {'share of step':>14s}")
    labels = {"ours": "ours (vectorised torch)", "peer": "transformers DataCollatorForT5MLM (numpy)"}
    for name, c in collate_ms.items():
        print(f"{labels[name]:42s} {c:10.3f} {c + step_ms:9.1f} {100 * c / (c + step_ms):13.2f}%")
    print(f"ours collates {collate_ms['peer'] / collate_ms['ours']:.1f}x faster than the peer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
