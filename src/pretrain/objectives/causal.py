"""Causal language modelling (GPT): predict every next token of packed blocks.

Everything that makes this objective: decoder-only GPT-2/Llama models from a config, packed
blocks with EOS between documents, optional document masking (positions restart at each document,
no attention across documents; pretrain.objectives.attention), summed next-token cross-entropy
without the full fp32 logits (pretrain.objectives.head_loss), LM metrics incl. bits per byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from pretrain.data.packing import block_attention_mask, document_positions
from pretrain.data.tokenizer import special_ids
from pretrain.objectives.attention import check_attention, packed_causal_inputs
from pretrain.objectives.base import Batch, LossOutput, Objective
from pretrain.objectives.head_loss import install_head, lm_head_loss
from pretrain.objectives.models import build_decoder_config


class CausalLM(Objective):
    """Next-token prediction on packed blocks."""

    name = "causal"
    families = ("gpt2", "llama", "olmo2", "qwen3")
    pipeline_inputs_only = True  # unless data.document_mask (checked with the parallel layout)
    attention_choice = True

    def new_model(self) -> nn.Module:
        mcfg = self.cfg.model
        max_positions = mcfg.max_position_embeddings or self.cfg.data.seq_len
        config = build_decoder_config(mcfg, len(self.tokenizer), max_positions, special_ids(self.tokenizer))
        model = AutoModelForCausalLM.from_config(config, attn_implementation=self.attention())
        return install_head(model, mcfg.loss_kernel)

    def load_model(self, path: str | Path) -> nn.Module:
        model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=self.attention())
        return install_head(model, self.cfg.model.loss_kernel)

    def masks(self) -> str | None:
        """The attention masks batches carry beyond causal: None, "document" or "prefix"."""
        return "document" if self.cfg.data.document_mask else None

    def attention(self) -> str:
        """model.attn_implementation, refused when it would ignore this objective's masks."""
        mcfg = self.cfg.model
        return check_attention(mcfg.attn_implementation, self.masks(), mcfg.family)

    def collate(self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Batch:
        input_ids = torch.stack([e["input_ids"] for e in examples])  # (b, t)
        batch = {"input_ids": input_ids, "labels": input_ids}
        if self.cfg.data.document_mask:
            eos, implementation = self.tokenizer.eos_token_id, self.cfg.model.attn_implementation
            batch.update(packed_causal_inputs(input_ids, eos, implementation))
        return batch

    def count_targets(self, batch: Batch) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def compute_loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        # No KV cache in training or scoring; without a cache transformers also reads packed documents
        # from position_ids when no mask is given (flash/flex attention).
        inputs = {k: v for k, v in batch.items() if k != "labels"} | {"use_cache": False}
        # Position i predicts token i + 1. Shifting the labels (pad one -100 at the end) instead of
        # slicing the logits avoids copying the (b, t, v) logits to make them contiguous.
        labels = nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)
        mcfg = self.cfg.model
        z_weight = self.cfg.train.z_loss_weight if model.training else 0.0
        return lm_head_loss(
            model, inputs, labels, self.token_bytes, mcfg.loss_kernel, mcfg.loss_chunk_tokens, z_weight
        )


def document_mask_inputs(input_ids: torch.Tensor, eos_id: int, causal: bool) -> dict[str, Any]:
    """position_ids restarting per document and a 4-D mask forbidding cross-document attention."""
    doc_ids, position_ids = document_positions(input_ids, eos_id)
    return {"position_ids": position_ids, "attention_mask": block_attention_mask(doc_ids, causal=causal)}
