"""Trainer overhead and data-preparation speed, side by side with their peers in one process.

1. Training throughput on the same tiny GPT-2 (4 layers, 256 wide, 8k vocab, batch 8 x 256) and
   the same packed data: a raw PyTorch loop (the overhead floor: forward, backward, clip, torch's
   default AdamW), our Trainer, and `transformers.Trainer`, run in A B C C B A order so drift on a
   shared machine cancels out, `--repeats` times (the acceptance figure is the lowest ratio of those
   runs). Each contender's run is a fresh process (nothing one run sets process-wide, e.g. our
   allocator setting, reaches another); each reports tokens per wall-second and per CPU-second
   (user + system of its process, which other jobs on a shared machine inflate far less than wall
   time).
2. Tokenize + pack: ours (Rust `encode_batch` inside `datasets.map`, zero-copy Arrow packing) vs
   run_clm-style preprocessing (`tokenizer(texts)` in `datasets.map`, then `group_texts` with
   `itertools.chain`), both uncached, on the same text and tokenizer.

Usage: python benchmarks/bench_trainer.py [--text PATH] [--steps N] [--warmup N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tiny_cfg(output_dir: str, steps: int):
    from pretrain.config import parse_config
    from pretrain.objectives.causal import CausalLM
    from pretrain.settings import make_run_config

    argv = [
        f"--train.output_dir={output_dir}",
        f"--train.max_steps={steps}",
        "--train.logging_steps=10",
        "--train.warmup_steps=2",
        "--train.micro_batch_size=8",
        "--data.seq_len=256",
        "--model.vocab_size=8192",
    ]
    return parse_config(make_run_config(CausalLM.Config), argv)


def _setup(steps: int):
    """Shared pieces: config, tokenizer, packed training blocks, and a fresh-model factory."""
    from accelerate import Accelerator

    from pretrain.data.text import load_raw_datasets
    from pretrain.objectives.causal import CausalLM
    from pretrain.runner import build_tokenizer_for

    cfg = _tiny_cfg(tempfile.mkdtemp(), steps)
    accelerator = Accelerator()
    train_raw, _ = load_raw_datasets(cfg.data)
    tokenizer = build_tokenizer_for(CausalLM, cfg, train_raw, accelerator)
    objective = CausalLM(cfg, tokenizer)
    blocks = objective.build_dataset(train_raw, accelerator)
    return cfg, objective, blocks


def run_raw_loop(objective, blocks, steps: int, warmup: int) -> dict[str, float]:
    """tokens/s of the plainest correct loop: forward, backward, clip, AdamW step."""
    import torch

    torch.manual_seed(0)
    model = objective.build_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bs, seq = 8, blocks.blocks.shape[1]
    start = cpu_start = None
    for step in range(warmup + steps):
        if step == warmup:
            start, cpu_start = time.perf_counter(), time.process_time()
        ids = torch.from_numpy(blocks.blocks[step * bs % (len(blocks) - bs) :][:bs].astype("int64"))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return _rates(steps * bs * seq, start, cpu_start)


def _rates(tokens: int, start: float, cpu_start: float) -> dict[str, float]:
    """Tokens per wall-second and per CPU-second since (start, cpu_start)."""
    return {
        "wall": tokens / (time.perf_counter() - start),
        "cpu": tokens / (time.process_time() - cpu_start),
    }


def run_ours(cfg, objective, blocks, steps: int, warmup: int) -> dict[str, float]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from pretrain.config import to_dict
    from pretrain.train.trainer import Trainer

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    cfg = _tiny_cfg(tempfile.mkdtemp(), warmup + steps)
    trainer = Trainer(
        cfg, objective, objective.build_model(), blocks, blocks, Accelerator(), str(to_dict(cfg)), 1.0
    )
    trainer.max_steps = warmup
    trainer.train()
    trainer.max_steps = warmup + steps
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    return _rates(steps * trainer.tokens_per_step, start, cpu_start)


def run_hf_trainer(objective, blocks, steps: int, warmup: int) -> dict[str, float]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Clock(TrainerCallback):
        start = cpu_start = end = cpu_end = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                Clock.start, Clock.cpu_start = time.perf_counter(), time.process_time()
            Clock.end, Clock.cpu_end = time.perf_counter(), time.process_time()

    class Blocks(torch.utils.data.Dataset):
        def __len__(self):
            return len(blocks)

        def __getitem__(self, i):
            ids = blocks[i]["input_ids"]
            return {"input_ids": ids, "labels": ids}

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=8,
        max_steps=warmup + steps,
        learning_rate=1e-3,
        report_to=[],
        logging_steps=10_000,
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    Trainer(model=objective.build_model(), args=args, train_dataset=Blocks(), callbacks=[Clock()]).train()
    tokens = steps * 8 * blocks.blocks.shape[1]
    return {"wall": tokens / (Clock.end - Clock.start), "cpu": tokens / (Clock.cpu_end - Clock.cpu_start)}


def run_one(name: str, steps: int, warmup: int) -> dict[str, float]:
    """One contender's timed run in this process."""
    cfg, objective, blocks = _setup(warmup + steps)
    if name == "raw":
        return run_raw_loop(objective, blocks, steps, warmup)
    if name == "ours":
        return run_ours(cfg, objective, blocks, steps, warmup)
    return run_hf_trainer(objective, blocks, steps, warmup)


def bench_training(steps: int, warmup: int) -> dict[str, dict[str, float]]:
    """Mean tokens/s per contender and clock ({"raw": {"wall": .., "cpu": ..}, ...}), A B C C B A."""
    runs: dict[str, list[dict[str, float]]] = {"raw": [], "ours": [], "hf": []}
    for name in ["raw", "ours", "hf", "hf", "ours", "raw"]:
        argv = [sys.executable, __file__, "--one", name, f"--steps={steps}", f"--warmup={warmup}"]
        done = subprocess.run(argv, check=True, capture_output=True, text=True)
        runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        rate = runs[name][-1]
        print(f"  {name:<5} {rate['wall']:>9,.0f} tok/s wall  {rate['cpu']:>9,.0f} tok/CPU-s", flush=True)
    return {
        name: {clock: statistics.fmean(r[clock] for r in values) for clock in ("wall", "cpu")}
        for name, values in runs.items()
    }


def run_clm_style(ds, tokenizer, block_size: int) -> int:
    """transformers' examples/pytorch/language-modeling/run_clm.py preprocessing, uncached."""

    def tokenize_function(examples):
        return tokenizer(examples["text"])

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = (len(concatenated["input_ids"]) // block_size) * block_size
        result = {
            k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    tokenized = ds.map(tokenize_function, batched=True, remove_columns=["text"], load_from_cache_file=False)
    grouped = tokenized.map(group_texts, batched=True, load_from_cache_file=False)
    return len(grouped) * block_size


def run_ours_packing(ds, tokenizer, block_size: int) -> int:
    from pretrain.data.packing import pack_blocks, token_stream, tokenize_dataset

    return pack_blocks(token_stream(tokenize_dataset(ds, tokenizer)), block_size).blocks.size


def bench_packing(text_path: Path | None) -> dict[str, float]:
    import datasets

    from pretrain.data.text import embedded_documents, load_text_file
    from pretrain.data.tokenizer import train_bpe_tokenizer

    datasets.disable_caching()
    datasets.disable_progress_bars()
    ds = (
        load_text_file(str(text_path))
        if text_path
        else datasets.Dataset.from_dict({"text": embedded_documents()})
    )
    tokenizer = train_bpe_tokenizer(ds, 8192)
    times = {"ours": [], "run_clm": []}
    tokens = {}
    for name in ["ours", "run_clm", "run_clm", "ours"]:
        fn = run_ours_packing if name == "ours" else run_clm_style
        start = time.perf_counter()
        tokens[name] = fn(ds, tokenizer, 256)
        times[name].append(time.perf_counter() - start)
        print(f"  {name:<8} {tokens[name] / times[name][-1]:>12,.0f} tok/s", flush=True)
    return {name: tokens[name] / statistics.fmean(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_text = REPO.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
    parser.add_argument("--text", type=Path, default=default_text if default_text.is_file() else None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="A B C C B A runs (the lowest ratio counts)")
    parser.add_argument("--part", choices=["all", "training", "packing"], default="all")
    parser.add_argument("--one", choices=["raw", "ours", "hf"], help=argparse.SUPPRESS)  # a child run
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.warmup)), flush=True)
        return 0

    if args.part in ("all", "training"):
        bench_training_report(args.steps, args.warmup, args.repeats)
    if args.part in ("all", "packing"):
        bench_packing_report(args.text)
    return 0


def bench_training_report(steps: int, warmup: int, repeats: int) -> None:
    """Each repeat is one A B C C B A run; the acceptance figure is the lowest ratio over the repeats."""
    print(
        f"training throughput (tiny GPT-2, 8 x 256 tokens/step, {steps} timed steps, "
        f"order A B C C B A, {repeats} runs)"
    )
    ratios: dict[str, list[tuple[float, float]]] = {"wall": [], "cpu": []}
    for run in range(1, repeats + 1):
        print(f" run {run}")
        speed = bench_training(steps, warmup)
        for clock in ("wall", "cpu"):
            ours, raw, hf = (speed[n][clock] for n in ("ours", "raw", "hf"))
            ratios[clock].append((ours / raw, ours / hf))
            print(
                f"  {clock:>4}: ours / raw loop = {ours / raw:.3f}   ours / transformers.Trainer = {ours / hf:.3f}"
                f"   transformers.Trainer / raw = {hf / raw:.3f}"
            )
    for clock in ("cpu", "wall"):
        low_raw = min(r for r, _ in ratios[clock])
        low_hf = min(h for _, h in ratios[clock])
        print(
            f" lowest of {repeats} runs, per {'CPU-second' if clock == 'cpu' else 'wall-second'}: "
            f"ours / raw loop = {low_raw:.3f}   ours / transformers.Trainer = {low_hf:.3f}"
            "   (target: ours >= 1.0 x both)"
        )


def bench_packing_report(text: Path | None) -> None:
    print(f"tokenize + pack ({text or 'embedded corpus'}, 8k BPE, 256-token blocks, order A B B A)")
    pack = bench_packing(text)
    print(f"  ours / run_clm-style     = {pack['ours'] / pack['run_clm']:.2f}  (target >= 3)")


if __name__ == "__main__":
    sys.exit(main())
