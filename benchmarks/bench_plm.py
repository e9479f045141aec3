"""Permutation-LM collator benchmark: ours (vectorised) against transformers' PLM collator, one process.

Both collate the same 32 x 512 packed blocks (ids of a locally trained BPE with an EOS every ~200
tokens, as packing puts between documents) into input_ids, perm_mask, target_mapping and labels.
Timed in A B C C B A order per round; reported: median ms/batch, targets per token (both ~1/6), and
how many times faster ours is. Both run on one torch thread. A third row casts our bool perm_mask to float32, the peer's dtype
(XLNet accepts either: it turns perm_mask into `(mask > 0).to(dtype)` itself).

    .venv/bin/python benchmarks/bench_plm.py [--batch-size 32] [--seq-len 512] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import datasets
import numpy as np
import torch
from timing import median_ms
from transformers import DataCollatorForPermutationLanguageModeling

from pretrain.data.tokenizer import train_bpe_tokenizer
from pretrain.objectives.plm_collator import PermutationCollator

Examples = list[dict[str, torch.Tensor]]


def make_examples(vocab_size: int, eos_id: int, batch_size: int, seq_len: int) -> Examples:
    """Blocks of ordinary ids (above the 5 base special tokens) with an EOS at ~1/200 of positions."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
    ids[torch.rand((batch_size, seq_len), generator=g) < 1 / 200] = eos_id
    return [{"input_ids": row} for row in ids]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="A B C C B A rounds")
    parser.add_argument("--repeats", type=int, default=4, help="batches per side per turn")
    args = parser.parse_args(argv)

    text = datasets.Dataset.from_dict(
        {"text": ["def collate(examples): return torch.stack(examples) " * 50] * 20}
    )
    tokenizer = train_bpe_tokenizer(text, vocab_size=512)
    examples = make_examples(len(tokenizer), tokenizer.eos_token_id, args.batch_size, args.seq_len)
    peer = DataCollatorForPermutationLanguageModeling(tokenizer)
    ours = PermutationCollator.from_tokenizer(tokenizer)
    generator = torch.Generator().manual_seed(0)

    def ours_float() -> dict[str, torch.Tensor]:
        batch = ours(examples, generator)
        # numpy's cast: torch's bool -> float32 of 8M elements took 110 ms here, numpy's 20 ms.
        return {**batch, "perm_mask": torch.from_numpy(batch["perm_mask"].numpy().astype(np.float32))}

    sides = {
        "transformers DataCollatorForPermutationLanguageModeling": lambda: peer(examples),
        "ours (PermutationCollator)": lambda: ours(examples, generator),
        "ours, perm_mask cast to float32": ours_float,
    }
    names = list(sides)
    results: dict[str, list[float]] = {name: [] for name in names}
    rates: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine OMP spin-waiting makes the peer 10x slower
    try:
        for _ in range(args.rounds):
            for name in (names[0], names[1], names[2], names[2], names[1], names[0]):  # A B C C B A
                ms, batch = median_ms(sides[name], args.repeats)
                results[name].append(ms)
                rates[name] = float((batch["labels"] != -100).sum()) / batch["input_ids"].numel()
    finally:
        torch.set_num_threads(threads)

    peer_ms = statistics.median(results[names[0]])
    print(f"PLM collation of {args.batch_size} x {args.seq_len} blocks (median of {args.rounds} rounds)")
    print(f"{'collator':58s} {'ms/batch':>9s} {'targets/token':>14s} {'x faster':>9s}")
    for name in names:
        ms = statistics.median(results[name])
        print(f"{name:58s} {ms:9.2f} {rates[name]:14.4f} {peer_ms / ms:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
