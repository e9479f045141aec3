"""Permutation language modelling (XLNet, Yang et al. 2019): predict spans in a random factorisation order.

Everything that makes this objective: an `XLNetLMHeadModel` from a config, packed blocks of even
length, the vectorised PLM collator (targets in spans, a factorisation order, `perm_mask` and
`target_mapping` for two-stream attention; pretrain.objectives.plm_collator), and the loss summed
over targets only. Metrics: eval_loss and perplexity over targets (and accuracy); no bits per byte,
since only a sixth of the tokens are coded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, XLNetConfig, XLNetLMHeadModel

from pretrain.config import ConfigError
from pretrain.data.tokenizer import special_ids
from pretrain.objectives.base import Batch, LossOutput, Objective, token_loss
from pretrain.objectives.models import resolve_shape
from pretrain.objectives.plm_collator import MAX_SPAN_LENGTH, PLM_PROBABILITY, PermutationCollator


@dataclass(frozen=True)
class PermutationConfig:
    plm_probability: float = PLM_PROBABILITY
    """Fraction of tokens predicted: one span of L tokens per int(L / plm_probability) tokens
    (XLNet partial prediction 1/K with K = 6, Yang et al. 2019, sec. 2.3). Range (0, 1]."""
    max_span_length: int = MAX_SPAN_LENGTH
    """Longest target span (tokens); lengths are uniform in 1..this (XLNet max_gram = 5). Range [1, inf)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.plm_probability <= 0.5:
            raise ConfigError(
                f"objective.plm_probability must be in (0, 0.5] (a span needs context beside it), "
                f"got {self.plm_probability}"
            )
        if self.max_span_length < 1:
            raise ConfigError(f"objective.max_span_length must be >= 1, got {self.max_span_length}")


class PermutationLM(Objective):
    """XLNet permutation LM on packed blocks: targets see only what comes before them in the order."""

    name = "permutation"
    Config = PermutationConfig
    families = ("xlnet",)
    language_model = False

    def __init__(self, cfg: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        if cfg.data.seq_len % 2:
            # transformers #7341: its collator crashes mid-training on odd lengths; we refuse upfront.
            raise ConfigError(
                f"data.seq_len={cfg.data.seq_len} is odd, but the permutation objective permutes each half "
                f"of a block (XLNet reuse_len = seq_len / 2); use an even length, e.g. "
                f"--data.seq_len={cfg.data.seq_len + 1}"
            )
        if cfg.data.document_mask:
            # A short document made only of targets would leave a target nothing to attend to, and
            # XLNet's -1e30 masking then spreads its attention over every token, its own included.
            raise ConfigError(
                "data.document_mask is not supported by the permutation objective (XLNet attends across the "
                "packed block, as in its pretraining); drop --data.document_mask"
            )
        super().__init__(cfg, tokenizer)
        self.collator = PermutationCollator.from_tokenizer(
            tokenizer,
            plm_probability=cfg.objective.plm_probability,
            max_span_length=cfg.objective.max_span_length,
        )

    def new_model(self) -> nn.Module:
        mcfg = self.cfg.model
        shape = resolve_shape(mcfg)
        ids = special_ids(self.tokenizer)
        config = XLNetConfig(
            vocab_size=len(self.tokenizer),
            d_model=shape.hidden_size,
            n_layer=shape.num_layers,
            n_head=shape.num_heads,
            d_inner=4 * shape.hidden_size,
            dropout=mcfg.dropout,
            bos_token_id=ids["bos"],
            eos_token_id=ids["eos"],
            pad_token_id=ids["pad"],
        )
        return XLNetLMHeadModel(config)

    def load_model(self, path: str | Path) -> nn.Module:
        return XLNetLMHeadModel.from_pretrained(str(path))

    def collate(self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Batch:
        return self.collator(examples, generator)

    def count_targets(self, batch: Batch) -> int:
        return int((batch["labels"] != -100).sum())

    def compute_loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        # Memories only matter when segments are fed one after another; blocks here are independent.
        logits = model(
            input_ids=batch["input_ids"],
            perm_mask=batch["perm_mask"],
            target_mapping=batch["target_mapping"],
            use_mems=False,
        ).logits  # (b, n_targets, v): one row per target_mapping row
        return token_loss(logits, batch["labels"], self.token_bytes)
