"""BERT masking benchmark: our vectorised masked-LM collation against transformers' collator, one process.

Both sides collate the same 32 x 512 blocks of the embedded corpus, tokenized by the project's BPE:
1. token masking (80/10/10) of packed blocks: `MaskedLM.collate` vs `DataCollatorForLanguageModeling`,
   which finds special tokens row by row (packed blocks carry no special_tokens_mask);
2. the same, with the peer given a precomputed special_tokens_mask (its fast path);
3. whole-word masking of tokenized documents: ours vs the peer with `whole_word_mask=True`, fed the
   offsets and special-token masks it needs (it also switches 80/10/10 off; ours keeps it).
Timed in A B B A order per round; reported: median ms/batch, selected fraction, times faster.

    .venv/bin/python benchmarks/bench_masking.py [--batch-size 32] [--seq-len 512] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from collections.abc import Callable

import torch
from timing import median_ms
from transformers import DataCollatorForLanguageModeling

from pretrain.config import parse_config
from pretrain.data.packing import pack_blocks, token_stream, tokenize_dataset
from pretrain.data.text import cache_root, load_raw_datasets
from pretrain.data.tokenizer import build_tokenizer, set_post_processor
from pretrain.objectives.masked import MaskedLM
from pretrain.settings import DataConfig, make_run_config

Examples = list[dict[str, torch.Tensor]]


def compare(peer: Callable, ours: Callable, rounds: int, repeats: int) -> tuple[float, float, float, float]:
    """(peer ms, peer rate, ours ms, ours rate), medians over A B B A rounds."""
    sides = {"peer": peer, "ours": ours}
    times: dict[str, list[float]] = {"peer": [], "ours": []}
    rates: dict[str, float] = {}
    for _ in range(rounds):
        for name in ("peer", "ours", "ours", "peer"):
            ms, batch = median_ms(sides[name], repeats)
            times[name].append(ms)
            rates[name] = float((batch["labels"] != -100).float().mean())  # the selected fraction
    return statistics.median(times["peer"]), rates["peer"], statistics.median(times["ours"]), rates["ours"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="A B B A rounds")
    parser.add_argument("--repeats", type=int, default=5, help="batches per side per turn")
    args = parser.parse_args(argv)

    data_cfg = DataConfig()
    train_raw, _ = load_raw_datasets(data_cfg)
    tokenizer = build_tokenizer("", train_raw, 8192, cache_root(data_cfg))
    set_post_processor(tokenizer, MaskedLM.post_processor)
    blocks = pack_blocks(token_stream(tokenize_dataset(train_raw, tokenizer)), args.seq_len)
    packed = [blocks[i] for i in range(args.batch_size)]
    special = [
        {**e, "special_tokens_mask": torch.isin(e["input_ids"], torch.tensor(tokenizer.all_special_ids))}
        for e in packed
    ]
    texts = [t for t in train_raw["text"] if len(t) > 4 * args.seq_len][: args.batch_size]
    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=args.seq_len,
        padding="max_length",
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    documents = [{k: v[i] for k, v in encoded.items() if k != "attention_mask"} for i in range(len(texts))]

    def objective(*overrides: str) -> MaskedLM:
        return MaskedLM(parse_config(make_run_config(MaskedLM.Config), list(overrides)), tokenizer)

    tokens, words = objective(), objective("--objective.whole_word_mask=true")
    generator = torch.Generator().manual_seed(0)
    peer = DataCollatorForLanguageModeling(tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random replacement is not supported with whole word masking"
        peer_words = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True)
    rows = {
        "token masking, packed blocks": (lambda: peer(packed), lambda: tokens.collate(packed, generator)),
        "token masking, peer given special mask": (
            lambda: peer(special),
            lambda: tokens.collate(packed, generator),
        ),
        "whole-word masking, documents": (
            lambda: peer_words(documents),
            lambda: words.collate(documents, generator),
        ),
    }
    print(
        f"BERT masking of {args.batch_size} x {args.seq_len} blocks (median of {args.rounds} A B B A rounds)"
    )
    print(f"{'case':40s} {'transformers ms':>15s} {'ours ms':>8s} {'selected':>17s} {'x faster':>9s}")
    for case, (peer_side, ours_side) in rows.items():
        peer_ms, peer_rate, ours_ms, ours_rate = compare(peer_side, ours_side, args.rounds, args.repeats)
        print(
            f"{case:40s} {peer_ms:15.2f} {ours_ms:8.2f} {peer_rate:8.4f}/{ours_rate:8.4f} {peer_ms / ours_ms:9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
