"""Run monitoring: metrics.jsonl, throughput/MFU, peak memory, and the loss/LR curve PNG."""

from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path
from typing import Any

import torch


class MetricsLog:
    """Appends one JSON object per line; reopened on resume so earlier lines are kept."""

    def __init__(self, path: Path, enabled: bool, truncate_after_step: int | None = None) -> None:
        self.path = path
        self.enabled = enabled
        if enabled and truncate_after_step is not None and path.is_file():
            # A resumed run rewrites history after its checkpoint: drop lines logged past it.
            kept = [
                ln
                for ln in path.read_text().splitlines()
                if ln and json.loads(ln).get("step", 0) <= truncate_after_step
            ]
            path.write_text("".join(ln + "\n" for ln in kept))
        elif enabled and truncate_after_step is None:
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def peak_memory_gb(device: torch.device) -> float:
    """Peak accelerator memory allocated (CUDA) or peak resident set size of this process (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if sys.platform == "darwin" else 2**20)  # bytes on macOS, KiB on Linux


def resolve_peak_flops(configured: float, device: torch.device) -> float | None:
    """Peak FLOP/s of one device: the configured value, else the table for known GPUs, else None."""
    if configured > 0:
        return configured
    if device.type != "cuda":
        return None
    from pretrain.scaling.flops import lookup_peak_flops

    return lookup_peak_flops(torch.cuda.get_device_name(device))


def model_flops_utilization(
    tokens_per_second: float, flops_per_token: float, peak: float | None, world: int
) -> float | None:
    """Achieved model FLOP/s over the peak of all devices (Chowdhery et al. 2022, PaLM appendix B)."""
    if not peak or not math.isfinite(tokens_per_second):
        return None
    return tokens_per_second * flops_per_token / (peak * world)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def plot_curves(metrics_path: Path, eval_path: Path, out_png: Path, final: dict | None = None) -> None:
    """Training loss (periodic eval loss, and the final evaluation `final` as a star) and learning rate
    against step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in _read_jsonl(metrics_path) if "loss" in r]
    if not train:
        return
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    evals = [r for r in _read_jsonl(eval_path) if "eval_loss" in r]
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
    if final and "eval_loss" in final and "steps" in final:
        ax_loss.plot([final["steps"]], [final["eval_loss"]], "*", markersize=12, label="final eval loss")
    ax_loss.set_ylabel("loss (nats/target)")
    ax_loss.legend()
    ax_lr.plot([r["step"] for r in train], [r["learning_rate"] for r in train], color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
