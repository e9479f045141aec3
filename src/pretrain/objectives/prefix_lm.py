"""Prefix language modelling: a decoder-only model reads a prefix bidirectionally, then predicts the rest.

Everything that makes this objective (the rest is CausalLM's: GPT-2/Llama from a config, summed
next-token loss, bits per byte): each document of a packed row is split at a random point
(T5's prefix LM, Raffel et al. 2020, sec. 3.3.1, splits a span at a uniformly random point); a
boolean 4-D attention mask lets prefix tokens see the whole prefix of their document, suffix tokens
see their document causally, and no token sees another document; labels are -100 on prefixes, so
eval_loss, perplexity and bits_per_byte are over suffix tokens only. Positions restart per document.
The model is a stock causal LM: a saved run loads in `AutoModelForCausalLM`, and the same mask at
inference gives it its bidirectional prefix (recipes/prefix_lm/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pretrain.config import ConfigError
from pretrain.data.packing import block_attention_mask, document_positions
from pretrain.objectives.base import Batch
from pretrain.objectives.causal import CausalLM


@dataclass(frozen=True)
class PrefixLMConfig:
    prefix_fraction_min: float = 0.0
    """Shortest prefix, as a fraction of its document's tokens in the row (T5's prefix LM: uniform on 0-1). Range [0, 1]."""
    prefix_fraction_max: float = 1.0
    """Longest prefix, as a fraction of its document's tokens in the row; a document's last token is
    always a target. Range [0, 1]."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.prefix_fraction_min <= self.prefix_fraction_max <= 1.0:
            raise ConfigError(
                "need 0 <= objective.prefix_fraction_min <= objective.prefix_fraction_max <= 1, got "
                f"{self.prefix_fraction_min} and {self.prefix_fraction_max}"
            )


class PrefixLM(CausalLM):
    """Next-token prediction of each document's suffix, given its bidirectionally encoded prefix."""

    name = "prefix_lm"
    Config = PrefixLMConfig
    pipeline_inputs_only = False  # its 4-D prefix masks and positions cannot cross pipeline stages

    def masks(self) -> str | None:
        return "prefix"

    def collate(self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Batch:
        input_ids = torch.stack([e["input_ids"] for e in examples])  # (b, t)
        ocfg = self.cfg.objective
        return prefix_lm_inputs(
            input_ids,
            self.tokenizer.eos_token_id,
            ocfg.prefix_fraction_min,
            ocfg.prefix_fraction_max,
            generator,
        )


def prefix_lm_inputs(
    input_ids: torch.Tensor,
    eos_id: int,
    fraction_min: float,
    fraction_max: float,
    generator: torch.Generator,
) -> Batch:
    """input_ids, per-document position_ids, the prefix-LM mask (b, 1, t, t) and labels (-100 on prefixes).

    A document is the run of tokens up to and including its EOS (pretrain.data.packing.document_positions);
    its prefix is its first floor(f * length) tokens with f uniform on [fraction_min, fraction_max),
    at most length - 1.
    """
    doc_ids, position_ids = document_positions(input_ids, eos_id)  # (b, t) each
    b, t = input_ids.shape
    doc_len = torch.zeros(b, t, dtype=torch.long).scatter_add_(1, doc_ids, torch.ones_like(doc_ids))
    doc_len = doc_len.gather(1, doc_ids)  # (b, t): tokens of each token's document in this row
    fraction = torch.rand(b, t, generator=generator).gather(1, doc_ids)  # one draw per document
    fraction = fraction_min + (fraction_max - fraction_min) * fraction
    prefix_len = torch.minimum((fraction * doc_len).long(), doc_len - 1)
    in_prefix = position_ids < prefix_len  # (b, t)
    both_in_prefix = (in_prefix[:, :, None] & in_prefix[:, None, :])[:, None]  # (b, 1, t, t)
    # Same document and (causal, or query and key both in the prefix of that document).
    mask = block_attention_mask(doc_ids, causal=True) | (
        block_attention_mask(doc_ids, causal=False) & both_in_prefix
    )
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": mask,
        "labels": input_ids.masked_fill(in_prefix, -100),
    }
