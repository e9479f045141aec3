"""Checkpoint cost, side by side in one process: how long a save blocks the training loop, synchronous
vs asynchronous (`train.async_save`), and bytes written, full vs incremental (`train.incremental_save`).

The same Llama (default 384 wide, 6 layers, 8k vocab: model + AdamW state) trains on random tokens
with the trainer's ShardedCheckpointer (torch.distributed.checkpoint, one process); saves come
every `--steps-between` optimizer steps, in S A S A ... order so drift on a shared machine cancels
out. "Blocking" is the time `save()` keeps the loop from its next step (async: staging a CPU copy
and handing it to the writer thread); "total" includes the background write. Where the write
lands in the page cache (a local disk with free RAM) it is itself little more than a copy, so
async saves pay off on slow or remote storage, and on a CPU-starved machine not at all.

Usage: python benchmarks/bench_checkpoint.py [--hidden 384] [--layers 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def build(hidden: int, layers: int, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=-(-int(8 * hidden / 3) // 64) * 64,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


def train_steps(model, optimizer, n: int, vocab: int) -> None:
    import torch

    for _ in range(n):
        ids = torch.randint(0, vocab, (4, 128))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def checkpointer(output_dir: Path, **train_keys):
    from accelerate import Accelerator

    from pretrain.settings import TrainConfig
    from pretrain.train.parallel import DataParallelPlan
    from pretrain.train.sharded_checkpoint import ShardedCheckpointer

    tcfg = TrainConfig(output_dir=str(output_dir), checkpoint_format="sharded", **train_keys)
    return ShardedCheckpointer(DataParallelPlan(Accelerator(cpu=True)), output_dir, tcfg, "")


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps-between", type=int, default=2)
    args = parser.parse_args()

    from pretrain.train.checkpoint import TrainerState

    model, optimizer, scheduler = build(args.hidden, args.layers, args.vocab)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: Llama {args.hidden} wide, {args.layers} layers, {params / 1e6:.1f}M parameters + AdamW state"
    )
    root = Path(tempfile.mkdtemp(prefix="bench-checkpoint-"))
    savers = {
        "sync": checkpointer(root / "sync"),
        "async": checkpointer(root / "async", async_save=True),
    }
    blocking: dict[str, list[float]] = {"sync": [], "async": []}
    total: dict[str, list[float]] = {"sync": [], "async": []}
    step = 0
    for _ in range(args.repeats):
        for name in ("sync", "async"):
            train_steps(model, optimizer, args.steps_between, args.vocab)
            step += args.steps_between
            start = time.perf_counter()
            savers[name].save(model, optimizer, scheduler, TrainerState(step=step), lambda path: None)
            blocking[name].append(time.perf_counter() - start)
            savers[name].wait()
            total[name].append(time.perf_counter() - start)
    ms = {k: 1e3 * statistics.median(v) for k, v in blocking.items()}
    print(
        f"save blocking the loop (median of {args.repeats}): sync {ms['sync']:.0f} ms, async {ms['async']:.0f} ms ",
        end="",
    )
    print(
        f"({ms['async'] / ms['sync']:.2f}x); async total with the background write {1e3 * statistics.median(total['async']):.0f} ms"
    )

    # Full vs incremental: a full save, then `repeats` incremental ones, each after more training.
    incremental = checkpointer(root / "incremental", incremental_save=args.repeats)
    full_mb, inc_mb, inc_ms = 0.0, [], []
    for i in range(args.repeats + 1):
        train_steps(model, optimizer, args.steps_between, args.vocab)
        step += args.steps_between
        start = time.perf_counter()
        path = incremental.save(model, optimizer, scheduler, TrainerState(step=step), lambda path: None)
        elapsed = time.perf_counter() - start
        if i == 0:
            full_mb = dir_mb(path)
        else:
            inc_mb.append(dir_mb(path))
            inc_ms.append(1e3 * elapsed)
            assert (
                json.loads((path / "incremental.json").read_text())["base"]
                == f"checkpoint-{step - i * args.steps_between}"
            )
    print(
        f"bytes written: full {full_mb:.1f} MB, incremental {min(inc_mb):.1f}-{max(inc_mb):.1f} MB "
        f"({min(inc_mb) / full_mb:.2f}-{max(inc_mb) / full_mb:.2f}x), {args.steps_between}-{args.repeats * args.steps_between} "
        f"optimizer steps after the full one; incremental save {statistics.median(inc_ms):.0f} ms (blocking, "
        f"vs {ms['sync']:.0f} ms sync full)"
    )
    import shutil

    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
