"""Peak memory of one training step with a large vocabulary: our LM-head loss vs the stock `labels=` loss.

The same model (Llama with tiny layers: 2 layers, 64 wide, vocabulary 65,536, tied embeddings), the
same batch (micro-batch 2 x seq 2,048 random tokens) and the same AdamW; one side trains through
`pretrain.objectives.head_loss.lm_head_loss` (model.loss_kernel=auto: chunked on CPU, liger on CUDA
when installed), the other through `model(input_ids, labels=input_ids).loss` (transformers' full
fp32 logits). Each side runs in its own subprocess so one cannot inherit the other's allocator pages.

Measured: the increase of peak memory during the step over the memory held before it (weights,
AdamW's two moments, the runtime): peak RSS (VmHWM after resetting it through /proc/self/clear_refs)
on CPU, torch.cuda.max_memory_allocated on CUDA. Target: ours <= 0.6x the stock path's increase.

Usage: python benchmarks/bench_memory.py [--vocab 65536] [--seq-len 2048] [--micro-batch 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

TARGET = 0.6


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_side(side: str, args: argparse.Namespace) -> dict:
    """One training step of `side` ("ours" or "stock"); returns its memory figures in MiB."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from pretrain.objectives.head_loss import install_head, lm_head_loss
    from pretrain.settings import TrainConfig
    from pretrain.train.optim import build_optimizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.seq_len,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device)
    if side == "ours":
        install_head(model, "auto")
    optimizer = build_optimizer(model, TrainConfig(), fused=device.type == "cuda")
    for p in model.parameters():  # allocate AdamW's moments before measuring
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ids = torch.randint(3, args.vocab, (args.micro_batch, args.seq_len), device=device)
    labels = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
    token_bytes = torch.ones(args.vocab, dtype=torch.long)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
        before = _rss_mib("VmRSS")
    model.train()
    if side == "ours":
        out = lm_head_loss(model, {"input_ids": ids, "use_cache": False}, labels, token_bytes, "auto", 1024)
        loss = out.loss_sum / out.num_targets
    else:
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _rss_mib("VmHWM")
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return {
        "side": side,
        "device": str(device),
        "loss": float(loss),
        "weights_and_adam_mib": 3 * weights,
        "before_mib": before,
        "peak_mib": peak,
        "increase_mib": peak - before,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--side", choices=("ours", "stock"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args)))
        return 0
    results = {}
    for side in ("stock", "ours"):
        cmd = [sys.executable, __file__, f"--side={side}", f"--vocab={args.vocab}"]
        cmd += [f"--seq-len={args.seq_len}", f"--micro-batch={args.micro_batch}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            print(f"error: the {side} side failed (exit {proc.returncode})")
            return 1
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"one training step, vocab {args.vocab}, seq {args.seq_len}, micro-batch {args.micro_batch}, "
        f"Llama 2 x 64 wide, {results['ours']['device']}; weights + AdamW state "
        f"{results['ours']['weights_and_adam_mib']:.0f} MiB"
    )
    print(f"{'side':<34} {'before MiB':>11} {'peak MiB':>10} {'increase MiB':>13} {'loss':>8}")
    names = {"stock": "stock labels= loss (full logits)", "ours": "ours (model.loss_kernel=auto)"}
    for side in ("stock", "ours"):
        r = results[side]
        print(
            f"{names[side]:<34} {r['before_mib']:>11.0f} {r['peak_mib']:>10.0f} {r['increase_mib']:>13.0f} "
            f"{r['loss']:>8.4f}"
        )
    ratio = results["ours"]["increase_mib"] / results["stock"]["increase_mib"]
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"increase ratio ours / stock: {ratio:.2f}x (target <= {TARGET}x: {verdict})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
