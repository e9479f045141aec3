"""Optimizers and learning-rate schedules.

AdamW with weight decay on matrices only (Loshchilov & Hutter 2019; biases, norms and embeddings
are not decayed, as in GPT-2/nanoGPT), or Muon (Jordan et al. 2024) on the transformer blocks'
matrices with AdamW on the rest (modded-nanogpt, Moonlight). Warmup is followed by cosine, linear,
constant or warmup-stable-decay (Hu et al. 2024, MiniCPM) decay that reaches `min_lr_ratio` of
the peak at the last step (step max_steps - 1).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from pretrain.settings import TrainConfig


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters in three disjoint groups: block matrices, embeddings/head, the rest (1-D).

    Embeddings and the output head are matrices too, but they are lookups / a classifier, not
    linear maps between hidden states: Muon orthogonalises only the latter (Jordan et al. 2024).
    """
    lookup = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        lookup |= {id(p) for p in head.parameters()}
    groups: dict[str, list[nn.Parameter]] = {"matrices": [], "embeddings": [], "other": []}
    for param in model.parameters():  # tied parameters are yielded once
        if not param.requires_grad:
            continue
        if id(param) in lookup:
            groups["embeddings"].append(param)
        elif param.ndim >= 2:
            groups["matrices"].append(param)
        else:
            groups["other"].append(param)
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW (decayed matrices, undecayed embeddings/norms/biases), or Muon + AdamW per `cfg.optimizer`.

    `fused` picks torch's fused AdamW kernel (one kernel for all parameters instead of a Python loop
    per tensor on CPU; what transformers.Trainer uses by default); callers pass it where the
    parameters are plain tensors.
    """
    groups = split_parameters(model)
    adam = {"lr": cfg.learning_rate, "betas": (cfg.adam_beta1, cfg.adam_beta2), "eps": cfg.adam_epsilon}
    if fused:
        adam["fused"] = True
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            [
                {"params": groups["matrices"], "weight_decay": cfg.weight_decay},
                {"params": groups["embeddings"] + groups["other"], "weight_decay": 0.0},
            ],
            **adam,
        )
    muon = torch.optim.Muon(
        groups["matrices"],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        momentum=cfg.muon_momentum,
        adjust_lr_fn="match_rms_adamw",  # Liu et al. 2025: AdamW's learning rate and decay carry over
    )
    adamw = torch.optim.AdamW(
        [{"params": groups["embeddings"] + groups["other"], "weight_decay": 0.0}], **adam
    )
    return MuonAdamW(muon, adamw)


class MuonAdamW(torch.optim.Optimizer):
    """Muon and AdamW stepped as one optimizer, so one scheduler, scaler and checkpoint serve both.

    Its param_groups are the two optimizers' own group dicts: a scheduler's learning-rate writes
    reach them directly. The state lives in the two optimizers; state_dict nests theirs.
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw
        super().__init__(muon.param_groups + adamw.param_groups, {})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])


def lr_multiplier(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """Learning rate at optimizer step `step` (0-based) as a fraction of the peak.

    Warmup reaches the peak at step warmup_steps - 1; the decay reaches the floor at the last step,
    max_steps - 1, so the floor is a rate the run actually uses.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor, last = cfg.min_lr_ratio, max_steps - 1
    if cfg.lr_scheduler_type == "constant":
        return 1.0
    start = cfg.warmup_steps
    if cfg.lr_scheduler_type == "wsd":
        start = max(start, max_steps - math.ceil(max_steps * cfg.decay_fraction))
        if step < start:
            return 1.0
    progress = min((step - start) / max(1, last - start), 1.0) if last > start else 1.0
    if cfg.lr_scheduler_type in ("linear", "wsd"):
        return 1.0 - (1.0 - floor) * progress
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_multiplier`; its state (the step count) is saved in checkpoints."""
    if cfg.warmup_steps >= max_steps:
        warnings.warn(
            f"train.warmup_steps={cfg.warmup_steps} >= the run's {max_steps} steps: the learning rate never "
            f"reaches its peak {cfg.learning_rate:g} and never decays; set train.warmup_steps below max_steps",
            stacklevel=2,
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg, max_steps))
