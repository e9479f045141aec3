"""The evaluation harness shared by every objective.

It streams over the validation set, asks the objective for summed statistics per batch (never
keeping logits), sums them across batches and processes, and lets the objective turn the sums
into metrics. The same function runs periodic evaluation in training, the final evaluation and
`pretrain eval` on a saved model.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from pretrain.data.loader import eval_batches
from pretrain.eval.frequency import TokenBuckets
from pretrain.objectives.base import Objective

EVAL_SEED = 1234  # masks/spans of evaluation batch i are drawn from (EVAL_SEED, i) every time


@torch.no_grad()
def evaluate(
    objective: Objective,
    model: nn.Module,
    dataset: Sequence,
    accelerator: Accelerator,
    batch_size: int,
    max_batches: int = 0,
    frequency: TokenBuckets | None = None,
) -> dict[str, Any]:
    """Metrics of `model` on `dataset` for `objective`, identical whatever the number of processes;
    with `frequency` (language models), also `loss_by_frequency`, one record per frequency bucket."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    batches = eval_batches(
        dataset,
        objective.collate,
        batch_size,
        EVAL_SEED,
        accelerator.process_index,
        accelerator.num_processes,
        max_batches,
    )
    for batch, is_real in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            out = objective.compute_loss(model, batch)
        # Padding batches (is_real=False) count with weight 0, so every rank sums the same keys.
        weight = 1.0 if is_real else 0.0
        stats = {"loss_sum": out.loss_sum, "num_targets": out.num_targets, **out.stats}
        if frequency is not None and out.target_ids is not None:
            stats.update(frequency.compute_sums(out.target_ids, out.target_losses))
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + weight * value.detach().double()
    keys = sorted(sums)
    local = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64) for k in keys]).to(accelerator.device)
    total = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
    summed = {k: float(v) for k, v in zip(keys, total.tolist(), strict=True)}
    metrics: dict[str, Any] = objective.finalize_metrics(summed)
    metrics.update(objective.whole_set_metrics(model, accelerator))
    if frequency is not None and "frequency_targets_0" in summed:
        metrics["loss_by_frequency"] = frequency.finalize(summed)
    model.train(was_training)
    return metrics


def compression_baselines(data: bytes) -> dict[str, float]:
    """Bits per byte of classical compressors on `data`: the floor a language model should beat."""
    import zstandard

    n = max(len(data), 1)
    sizes = {
        "gzip": len(gzip.compress(data, compresslevel=9)),
        "bz2": len(bz2.compress(data, compresslevel=9)),
        "xz": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "zstd": len(zstandard.ZstdCompressor(level=19).compress(data)),
    }
    return {f"{name}_bits_per_byte": 8 * size / n for name, size in sizes.items()}
