"""Optimizer and learning-rate schedules.

AdamW with weight decay on matrices only (Loshchilov & Hutter 2019; biases, norms and embeddings
are not decayed, as in GPT-2/nanoGPT), and warmup followed by cosine, linear, constant or
warmup-stable-decay (Hu et al. 2024, MiniCPM) decay to `min_lr_ratio` of the peak.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pretrain.settings import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with two parameter groups: decayed matrices, undecayed everything else; `fused` (the
    trainer passes True on CUDA) takes torch's fused CUDA kernel, one launch for all parameters."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if param.ndim >= 2 and id(param) not in embedding_params:
            decay.append(param)
        else:
            no_decay.append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        fused=fused or None,
    )


def lr_multiplier(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """Learning rate at optimizer step `step` as a fraction of the peak."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    if cfg.lr_scheduler_type == "constant":
        return 1.0
    if cfg.lr_scheduler_type == "wsd":
        decay_start = int(max_steps * (1.0 - cfg.decay_fraction))
        if step < max(decay_start, cfg.warmup_steps):
            return 1.0
        progress = (step - max(decay_start, cfg.warmup_steps)) / max(
            1, max_steps - max(decay_start, cfg.warmup_steps)
        )
        return 1.0 - (1.0 - floor) * min(progress, 1.0)
    progress = min((step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps), 1.0)
    if cfg.lr_scheduler_type == "linear":
        return 1.0 - (1.0 - floor) * progress
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_multiplier`; its state (the step count) is saved in checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg, max_steps))
