"""Defaults search for the causal recipe at equal CPU budget, on this machine (wikitext-2).

Every trial trains the causal recipe, changed by one setting from the base (learning rate,
warmup, batch, vocabulary size, family, optimizer), for as many steps as fit in `--budget`
CPU-seconds of training (steps = budget / CPU-seconds per step, measured per trial on the same
model and optimizer before it runs; warmup 10 % of the steps, as the recipe's 30 of 300, unless
the trial sets another fraction), on the first 90 % of wikitext-2 valid, and is scored by bits
per byte on its last 10 % (the test set stays unseen). Trials run as separate processes, `--jobs`
at a time, each on one thread like `accelerate launch` on a machine without a GPU; each row gives
the CPU-seconds that process used (user + system, from wait4), which other jobs on a shared
machine inflate. The table goes to docs/causal_defaults.md.

Usage: python benchmarks/search_causal_defaults.py [--budget 60] [--jobs 2] [--data valid.txt] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "wikitext-2" / "valid.txt"

BASE = ("--train.eval_steps=0", "--train.logging_steps=20", "--train.eval_frequency_buckets=[]")
TRIALS: dict[str, tuple[str, ...]] = {
    "base (recipe defaults before the search)": (),
    "learning_rate 2e-3": ("--train.learning_rate=2e-3",),
    "learning_rate 4e-3": ("--train.learning_rate=4e-3",),
    "warmup 3 % of the steps": ("warmup=0.03",),
    "micro_batch_size 4": ("--train.micro_batch_size=4",),
    "micro_batch_size 4, learning_rate 2e-3": ("--train.micro_batch_size=4", "--train.learning_rate=2e-3"),
    "micro_batch_size 4, learning_rate 5e-4": ("--train.micro_batch_size=4", "--train.learning_rate=5e-4"),
    "micro_batch_size 2": ("--train.micro_batch_size=2",),
    "vocab_size 4096": ("--model.vocab_size=4096",),
    "family llama": ("--model.family=llama",),
    "optimizer muon": ("--train.optimizer=muon",),
    "optimizer muon, learning_rate 4e-3": ("--train.optimizer=muon", "--train.learning_rate=4e-3"),
    "z_loss_weight 1e-4": ("--train.z_loss_weight=1e-4",),
}


def split_data(data: Path, work: Path) -> tuple[Path, Path]:
    """First 90 % of the lines of wikitext-2 valid to train on, the rest to score."""
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    cut = int(len(lines) * 0.9)
    train, held_out = work / "train.txt", work / "held_out.txt"
    train.write_text("".join(lines[:cut]), encoding="utf-8")
    held_out.write_text("".join(lines[cut:]), encoding="utf-8")
    return train, held_out


def cpu_seconds_per_step(overrides: list[str], probe_steps: int = 5) -> float:
    """Measured CPU-seconds of one optimizer step of this trial's model and optimizer (random tokens)."""
    import torch
    from transformers import AutoModelForCausalLM

    from pretrain.config import parse_config
    from pretrain.objectives.causal import CausalLM
    from pretrain.objectives.models import build_decoder_config
    from pretrain.settings import make_run_config
    from pretrain.train.host import keep_freed_buffers
    from pretrain.train.optim import build_optimizer

    keep_freed_buffers()
    cfg = parse_config(make_run_config(CausalLM.Config), list(overrides), REPO / "recipes/causal/config.yaml")
    ids = {"bos": 0, "eos": 1, "pad": 2}
    model = AutoModelForCausalLM.from_config(
        build_decoder_config(cfg.model, cfg.model.vocab_size, cfg.data.seq_len, ids),
        attn_implementation="sdpa",
    ).train()
    optimizer = build_optimizer(model, cfg.train, fused=True)
    batch = torch.randint(0, cfg.model.vocab_size, (cfg.train.micro_batch_size, cfg.data.seq_len))
    for step in range(probe_steps + 1):
        if step == 1:  # the first step allocates optimizer state
            start = time.process_time()
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.process_time() - start) / probe_steps


def split_warmup(overrides: tuple[str, ...]) -> tuple[list[str], float]:
    """The trial's config overrides and its warmup fraction (from a "warmup=F" entry; default 0.1)."""
    fractions = [float(o.split("=")[1]) for o in overrides if o.startswith("warmup=")]
    return [o for o in overrides if not o.startswith("warmup=")], (fractions or [0.1])[0]


def shape_key(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """The overrides that change the cost of a step (not the learning rate, warmup or z-loss)."""
    cheap = ("--train.learning_rate=", "--train.z_loss_weight=", "warmup=")
    return tuple(o for o in overrides if not o.startswith(cheap))


def launch(name: str, overrides: tuple[str, ...], steps: int, train: Path, held_out: Path, work: Path):
    out = work / name.replace(" ", "_").replace(",", "").replace("%", "pct")
    config, warmup = split_warmup(overrides)
    argv = [
        sys.executable,
        str(REPO / "recipes/causal/train.py"),
        f"--data.train_file={train}",
        f"--data.validation_file={held_out}",
        f"--train.output_dir={out}",
        f"--train.max_steps={steps}",
        f"--train.warmup_steps={max(1, round(warmup * steps))}",
        *BASE,
        *config,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (work / f"{out.name}.log").open("w")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="training CPU-seconds per trial")
    parser.add_argument("--jobs", type=int, default=2, help="trials at a time")
    parser.add_argument("--only", nargs="*", default=None, help="trial names to run (default all)")
    parser.add_argument("--work", type=Path, default=None, help="where runs go (default a temp dir)")
    parser.add_argument("--results", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--data", type=Path, default=DATA, help="wikitext-2 valid.txt")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: {args.data} not found; pass --data PATH/wikitext-2/valid.txt", file=sys.stderr)
        return 1
    os.environ.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    import torch

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="causal-search-"))
    work.mkdir(parents=True, exist_ok=True)
    train, held_out = split_data(args.data, work)
    plans = [n for n in TRIALS if args.only is None or n in args.only]
    # Every step cost is measured before any trial starts, one after another on the same quiet
    # machine: a probe beside running trials reads more CPU-seconds per step (shared caches and
    # cores), which would hand the trials probed later a larger budget.
    per_step_by_shape = {}
    for key in dict.fromkeys(shape_key(TRIALS[n]) for n in plans):
        per_step_by_shape[key] = cpu_seconds_per_step(list(key))
        print(f"step cost {' '.join(key) or 'base'}: {per_step_by_shape[key]:.3f} CPU-s", flush=True)
    rows, running = [], {}
    while plans or running:
        while plans and len(running) < args.jobs:
            name = plans.pop(0)
            per_step = per_step_by_shape[shape_key(TRIALS[name])]
            steps = max(10, int(args.budget / per_step))
            print(f"{name}: {per_step:.2f} CPU-s/step -> {steps} steps", flush=True)
            proc, out = launch(name, TRIALS[name], steps, train, held_out, work)
            running[proc.pid] = (proc, name, steps, per_step, out)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        _, name, steps, per_step, out = running.pop(pid)
        result = json.loads((out / "eval_results.json").read_text()) if status == 0 else {}
        rows.append(
            {
                "trial": name,
                "overrides": " ".join(TRIALS[name]),
                "steps": steps,
                "cpu_s_per_step": round(per_step, 3),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                "bits_per_byte": result.get("bits_per_byte"),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: r["bits_per_byte"] or float("inf"))
    print("\n| trial | steps | CPU-s (whole run) | held-out bits/byte |\n|---|---|---|---|")
    for r in rows:
        bpb = f"{r['bits_per_byte']:.4f}" if r["bits_per_byte"] else "failed"
        print(f"| {r['trial']} | {r['steps']} | {r['cpu_s']} | {bpb} |")
    if args.results:
        args.results.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
