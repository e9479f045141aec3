"""Which attention kernel a decoder runs (`model.attn_implementation`), and how packed documents reach it.

- sdpa (default, the CPU path): packed documents as a dense boolean (b, 1, t, t) mask beside
  per-document position_ids; O(t^2) memory, and a mask keeps SDPA off its flash kernel.
- flash_attention_2 / flex_attention: position_ids only, restarting at every document. transformers
  finds the document boundaries from them (where a position is not its predecessor + 1): flash
  attention runs its varlen kernel over cu_seqlens (as with transformers' DataCollatorWithFlattening),
  flex attention builds a block mask; neither materialises a (t, t) mask.
- eager adds a boolean mask to the scores as numbers (measured: tokens attend across documents and
  the prefix LM's suffix leaks backwards), so it is refused whenever a packed or prefix mask is in use.
  The prefix LM's bidirectional prefix is a dense mask only: it needs sdpa.

On CPU only sdpa and eager run (measured, torch 2.13: flex attention has no CPU backward and its
CPU forward crashed), so the tests compare the position_ids path to the dense mask through sdpa,
which takes both: transformers derives the same document mask from position_ids.
"""

from __future__ import annotations

import importlib.util

import torch

from pretrain.config import ConfigError
from pretrain.data.packing import block_attention_mask, document_positions

MASK_FREE = ("flash_attention_2", "flex_attention")  # packed documents through position_ids alone


def check_attention(implementation: str, masks: str | None, family: str) -> str:
    """`implementation`, or a ConfigError when it would ignore the run's masks or cannot run here.

    masks: None (plain causal), "document" (data.document_mask) or "prefix" (prefix LM)."""
    if implementation == "flex_attention" and family != "llama":
        raise ConfigError(
            f"model.attn_implementation=flex_attention: transformers has no flex attention for {family}; "
            "use model.family=llama or sdpa"
        )
    if implementation == "eager" and masks:
        raise ConfigError(
            f"model.attn_implementation=eager adds boolean masks as numbers, so the {masks} mask would leak "
            "across tokens; use model.attn_implementation=sdpa"
        )
    if masks == "prefix" and implementation != "sdpa":
        raise ConfigError(
            f"model.attn_implementation={implementation} cannot take the prefix LM's bidirectional-prefix mask "
            "(a dense mask); use model.attn_implementation=sdpa"
        )
    if implementation == "flash_attention_2" and not (
        torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    ):
        raise ConfigError(
            "model.attn_implementation=flash_attention_2 needs a CUDA device and the flash-attn package; "
            "use sdpa (or flex_attention)"
        )
    return implementation


def packed_causal_inputs(
    input_ids: torch.Tensor, eos_id: int, implementation: str
) -> dict[str, torch.Tensor]:
    """Per-document position_ids (b, t), plus the dense causal document mask (b, 1, t, t) unless the
    kernel takes documents from position_ids alone."""
    doc_ids, position_ids = document_positions(input_ids, eos_id)
    if implementation in MASK_FREE:
        return {"position_ids": position_ids}
    return {"position_ids": position_ids, "attention_mask": block_attention_mask(doc_ids, causal=True)}
