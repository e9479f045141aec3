"""The GPU check: one script, one table, a non-zero exit on any failure (run through gpu_check.sh).

Rows (each a short training run through the same Trainer and plans as `pretrain train`):
- causal Llama 125m and 1b, bf16, seq 2,048, torch.compile off and on: tokens/s, MFU, peak memory;
  the 1b once more with activation checkpointing;
- fp16 (dynamic loss scale) for 50 steps, overflow-skipped steps counted;
- FSDP2 (`fully_shard` per decoder layer, pretrain.train.parallel.ShardedPlan) on one GPU, 20 steps;
- 20 steps of every objective at its recipe's size (recipes/<name>/config.yaml), bf16.

tokens/s, MFU and peak memory are the trainer's own metrics (metrics.jsonl) of the last logging
interval, which leaves out the first steps (compilation, allocator warm-up). `--dry-run` runs the same
code paths at tiny sizes on CPU (fp16 with a CPU GradScaler attached as Accelerate attaches the CUDA
one; FSDP2 over a one-process gloo group), so a machine without a GPU checks the script itself.

Usage: python benchmarks/gpu_check.py [--dry-run] [--only NAME ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OBJECTIVE_NAMES = ("causal", "prefix_lm", "masked", "t5", "permutation", "contrastive")
LLAMA = ("--model.family=llama", "--data.seq_len=2048", "--train.mixed_precision=bf16")
TINY = (
    "--model.hidden_size=64",
    "--model.num_layers=2",
    "--model.num_heads=4",
    "--model.vocab_size=2048",
    "--data.max_train_documents=200",
)


@dataclass
class Case:
    name: str
    objective: str
    overrides: tuple[str, ...]
    steps: int
    fsdp2: bool = False
    notes: list[str] = field(default_factory=list)


def build_cases(dry: bool) -> list[Case]:
    """The rows of the table; --dry-run keeps every code path and shrinks every size."""

    def lm(preset: str, micro_batch: int) -> tuple[str, ...]:
        if dry:
            return (
                "--model.family=llama",
                "--train.mixed_precision=bf16",
                *TINY,
                "--data.seq_len=64",
                "--train.micro_batch_size=2",
            )
        return (*LLAMA, f"--model.preset={preset}", f"--train.micro_batch_size={micro_batch}")

    steps = 3 if dry else 30
    cases = [
        Case(
            f"causal llama-{p} bf16 compile={c}", "causal", (*lm(p, mb), f"--train.torch_compile={c}"), steps
        )
        for p, mb in (("125m", 16), ("1b", 8))
        for c in ("false", "true")
    ]
    ckpt = (*lm("1b", 8), "--train.gradient_checkpointing=true")
    cases.append(Case("causal llama-1b bf16 activation ckpt", "causal", ckpt, steps))
    fp16 = tuple(o.replace("bf16", "fp16") for o in lm("125m", 8))
    cases.append(Case("causal llama-125m fp16 (loss scale)", "causal", fp16, 3 if dry else 50))
    small = (*TINY, "--train.micro_batch_size=2") if dry else ()
    for name in OBJECTIVE_NAMES:
        cases.append(
            Case(
                f"{name} (recipe size) bf16", name, (*small, "--train.mixed_precision=bf16"), 2 if dry else 20
            )
        )
    cases.append(
        Case("causal llama-125m bf16 FSDP2 1 GPU", "causal", lm("125m", 8), 3 if dry else 20, fsdp2=True)
    )
    return cases


def parse_case_config(case: Case, out: Path, dry: bool):
    from pretrain.config import parse_config
    from pretrain.objectives import get_objective
    from pretrain.settings import make_run_config

    cls = get_objective(case.objective)
    default = REPO / "recipes" / case.objective / "config.yaml"
    logging = 1 if dry else 10
    argv = [
        *case.overrides,
        f"--train.output_dir={out}",
        f"--train.max_steps={case.steps}",
        f"--train.logging_steps={logging}",
        "--train.warmup_steps=2",
        "--train.eval_steps=0",
        "--train.save_steps=0",
    ]
    return cls, parse_config(make_run_config(cls.Config), argv, default if default.is_file() else None)


def fresh_accelerator(cfg):
    """The runner's Accelerator, after resetting Accelerate's process-wide state; on CPU, fp16 gets
    a CPU GradScaler attached the way Accelerate attaches the CUDA one (it gives CPU none)."""
    import torch
    from accelerate.state import AcceleratorState, GradientState

    from pretrain.runner import build_accelerator

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = build_accelerator(cfg)
    if cfg.train.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        accelerator.scaler = torch.amp.GradScaler("cpu")
        accelerator.native_amp = True
    return accelerator


def reset_peaks() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS


def run_trainer_case(case: Case, out: Path, dry: bool) -> dict:
    """Train through the Trainer; the row is its last metrics.jsonl record."""
    from accelerate.utils import set_seed

    from pretrain.runner import build_components, flops_per_token
    from pretrain.train.trainer import Trainer

    cls, cfg = parse_case_config(case, out, dry)
    accelerator = fresh_accelerator(cfg)
    set_seed(cfg.train.seed)
    out.mkdir(parents=True, exist_ok=True)
    objective, model, train_data, eval_data, _ = build_components(cls, cfg, accelerator)
    trainer = Trainer(
        cfg, objective, model, train_data, eval_data, accelerator, "", flops_per_token(model, objective)
    )
    reset_peaks()
    state = trainer.train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    if state.skipped_overflow:
        case.notes.append(f"overflow-skipped steps {state.skipped_overflow}/{state.step}")
    if "fp16" in case.name:
        case.notes.append(f"loss scale {last['loss_scale']:g}")
        if state.skipped_overflow >= state.step:
            raise RuntimeError("every fp16 step overflowed")
    return {"first_loss": records[0]["loss"], **last}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_fsdp2_case(case: Case, out: Path, dry: bool) -> dict:
    """FSDP2 over a one-process group: the ShardedPlan's fully_shard, forward/backward, per-mesh clip."""
    import torch
    import torch.distributed as dist
    from accelerate.utils import set_seed

    from pretrain.data.streaming import train_batches
    from pretrain.runner import build_components, flops_per_token
    from pretrain.train.monitoring import model_flops_utilization, peak_memory_gb, resolve_peak_flops
    from pretrain.train.optim import build_optimizer, build_scheduler
    from pretrain.train.parallel import Layout, ShardedPlan

    cls, cfg = parse_case_config(case, out, dry)
    accelerator = fresh_accelerator(cfg)
    backend = "nccl" if accelerator.device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        set_seed(cfg.train.seed)
        out.mkdir(parents=True, exist_ok=True)
        objective, model, train_data, _, _ = build_components(cls, cfg, accelerator)
        fpt = flops_per_token(model, objective)
        plan = ShardedPlan(accelerator, Layout(world=1, tp=1, pp=1, dp_shard=1))
        model = plan.shard_model(model.to(accelerator.device), out)
        optimizer = build_optimizer(model, cfg.train, fused=accelerator.device.type == "cuda")
        scheduler = build_scheduler(optimizer, cfg.train, case.steps)
        model, optimizer, scheduler = plan.prepare(model, optimizer, scheduler)
        batches = train_batches(
            train_data, objective.collate, cfg.train.micro_batch_size, cfg.train.seed, 0, 1
        )
        losses, timed_tokens, start = [], 0, None
        reset_peaks()
        for step in range(case.steps):
            if step == case.steps // 2:
                _sync(torch)
                start, timed_tokens = time.perf_counter(), 0
            batch = {k: v.to(accelerator.device) for k, v in next(batches).items()}
            targets = objective.count_targets(batch)
            with accelerator.autocast():
                loss_sum = plan.forward_backward(objective, model, batch, 1.0 / targets)
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            if missing:
                raise RuntimeError(f"FSDP2: {len(missing)} parameters got no gradient, e.g. {missing[:3]}")
            plan.clip_grad_norm(model, cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss_sum[0]) / targets)  # (2,): [summed loss, summed regulariser]
            timed_tokens += batch["input_ids"].numel()
        _sync(torch)
        tokens_per_second = timed_tokens / (time.perf_counter() - start)
        peak = resolve_peak_flops(cfg.train.peak_flops, accelerator.device)
        return {
            "first_loss": losses[0],
            "loss": losses[-1],
            "tokens_per_second": tokens_per_second,
            "mfu": model_flops_utilization(tokens_per_second, fpt, peak, 1),
            "peak_memory_gb": peak_memory_gb(accelerator.device),
        }
    finally:
        dist.destroy_process_group()


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_case(case: Case, root: Path, dry: bool) -> dict:
    import torch

    out = root / case.name.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "-")
    start = time.perf_counter()
    try:
        row = (run_fsdp2_case if case.fsdp2 else run_trainer_case)(case, out, dry)
        if not math.isfinite(row["loss"]):
            raise RuntimeError(f"non-finite loss {row['loss']}")
        if not dry and case.steps >= 20 and not row["loss"] < row["first_loss"]:
            raise RuntimeError(f"loss did not fall ({row['first_loss']:.4f} -> {row['loss']:.4f})")
        row["status"] = "ok"
    except Exception as err:  # one failing row must not hide the others
        traceback.print_exc()
        row = {"status": "FAILED", "error": f"{type(err).__name__}: {err}"[:200]}
    finally:
        torch._dynamo.reset()
    row.update(
        name=case.name, steps=case.steps, seconds=time.perf_counter() - start, notes="; ".join(case.notes)
    )
    return row


def format_row(r: dict) -> str:
    if r["status"] != "ok":
        return f"{r['name']:<40} {r['status']:<7} {r['steps']:>5} {r['error']}"
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    loss = f"{r['first_loss']:.3f}->{r['loss']:.3f}"
    return (
        f"{r['name']:<40} {'ok':<7} {r['steps']:>5} {r['tokens_per_second']:>10.0f} {mfu:>6} "
        f"{r['peak_memory_gb']:>9.2f} {loss:>15} {r['seconds']:>5.0f}  {r['notes']}"
    )


def format_table(rows: list[dict], device: str) -> str:
    head = f"{'check':<40} {'status':<7} {'steps':>5} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9} {'loss':>15} {'s':>5}  notes"
    lines = [
        f"gpu_check on {device}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        head,
        "-" * len(head),
    ]
    return "\n".join(lines + [format_row(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: the same code paths")
    parser.add_argument(
        "--only", nargs="*", default=[], help="run only checks whose name contains one of these"
    )
    parser.add_argument(
        "--out", default="", help="directory for the runs and gpu_check.json (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device is visible; run with --dry-run on a machine without a GPU")
        return 2
    device = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name()
    cases = [c for c in build_cases(args.dry_run) if not args.only or any(o in c.name for o in args.only)]
    root = Path(args.out or tempfile.mkdtemp(prefix="gpu_check-"))
    rows = []
    for case in cases:
        print(f"--- {case.name}", flush=True)
        rows.append(run_case(case, root, args.dry_run))
        print(f"=== {format_row(rows[-1])}", flush=True)  # stays in the log if the time limit cuts the run
    table = format_table(rows, device)
    print("\n" + table)
    root.mkdir(parents=True, exist_ok=True)
    (root / "gpu_check.json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))
    (root / "gpu_check.txt").write_text(table + "\n")
    failed = [r["name"] for r in rows if r["status"] != "ok"]
    if failed:
        print(f"error: {len(failed)} check(s) failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
