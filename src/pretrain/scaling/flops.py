"""FLOP accounting: parameter counts, training FLOPs per token, and peak FLOP/s of common GPUs.

Conventions (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", table 1):

- N, the *non-embedding* parameter count, is every parameter except the token, position and segment
  embedding tables and the vocabulary projection (its weight and bias). Kaplan et al. found the
  cleanest power laws in this N, and it is what `eval_results.json` records as `num_parameters`.
- A forward pass costs 2 FLOPs per weight a token is multiplied by, and forward + backward three
  times that (the backward pass computes gradients for both activations and weights). The output
  projection onto the vocabulary is a real matmul, so it is counted even when tied, as in
  Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", appendix F, "final
  logits"); the input embedding is a gather and costs nothing.
- Attention scores and the weighted sum of values cost 2 * seq_len * d_attn FLOPs each per token
  and layer in the forward pass (Hoffmann et al. appendix F), so training costs
  12 * n_layers * seq_len * d_attn per token (the same term as PaLM, Chowdhery et al. 2022,
  appendix B). Kaplan et al. count only the score half (6 * n_layers * seq_len * d_attn). The
  causal mask is ignored, as in both papers: kernels that skip masked blocks do less work.

So `training_flops_per_token = 6 * (N + d_model * vocab_size) + 12 * n_layers * seq_len * d_attn`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from transformers import PretrainedConfig

# Dense (no 2:4 sparsity) BF16 tensor-core peak per device, FLOP/s, from the vendors' datasheets.
PEAK_FLOPS: dict[str, float] = {
    "a100": 312e12,  # NVIDIA A100 datasheet (SXM and PCIe): BF16 Tensor Core 312 TFLOPS
    "h100": 989.5e12,  # NVIDIA H100 datasheet, SXM: BF16 1979 TFLOPS with sparsity, halved
    "h100-pcie": 756e12,  # NVIDIA H100 datasheet, PCIe: BF16 1513 TFLOPS with sparsity, halved
    "h100-nvl": 835.5e12,  # NVIDIA H100 datasheet, NVL: BF16 1671 TFLOPS with sparsity, halved
    "h200": 989.5e12,  # NVIDIA H200 datasheet, SXM: BF16 1979 TFLOPS with sparsity, halved
    "b200": 2.25e15,  # NVIDIA HGX B200 datasheet: BF16 36 PFLOPS per 8 GPUs with sparsity, halved
    "l4": 121e12,  # NVIDIA L4 datasheet: BF16 242 TFLOPS with sparsity, halved
    "l40s": 362e12,  # NVIDIA L40S datasheet: BF16 362.05 TFLOPS dense
    "a10": 125e12,  # NVIDIA A10 datasheet: BF16 Tensor Core 125 TFLOPS
    "a10g": 70e12,  # AWS's A10 variant; no NVIDIA datasheet: 70 TFLOPS per Baseten's "A10 vs A10G" (2023)
    "v100": 125e12,  # NVIDIA V100 datasheet, SXM2: FP16 Tensor 125 TFLOPS (V100 has no BF16)
    "t4": 65e12,  # NVIDIA T4 datasheet: FP16 Tensor 65 TFLOPS (T4 has no BF16)
    "4090": 165.2e12,  # NVIDIA Ada whitepaper, RTX 4090: BF16 with FP32 accumulate 165.2 TFLOPS
    "3090": 71e12,  # NVIDIA GA102 whitepaper, RTX 3090: BF16 with FP32 accumulate 71 TFLOPS
    "mi300x": 1307.4e12,  # AMD Instinct MI300X datasheet: BF16 1307.4 TFLOPS dense
}

# Device-name patterns, most specific first ("H100 NVL" before "H100", "A10G" before "A10").
_DEVICE_PATTERNS: list[tuple[str, str]] = [
    (r"h100.*nvl", "h100-nvl"),
    (r"h100.*pcie", "h100-pcie"),
    (r"\bh100\b", "h100"),
    (r"\bh200\b", "h200"),
    (r"\bb200\b", "b200"),
    (r"\ba100\b", "a100"),
    (r"\ba10g\b", "a10g"),
    (r"\ba10\b", "a10"),
    (r"\bl40s\b", "l40s"),
    (r"\bl4\b", "l4"),
    (r"\bv100\b", "v100"),
    (r"\bt4\b", "t4"),
    (r"\b4090\b", "4090"),
    (r"\b3090\b", "3090"),
    (r"\bmi300x\b", "mi300x"),
]


def lookup_peak_flops(device_name: str) -> float | None:
    """Peak dense BF16 FLOP/s for a device name such as "NVIDIA H100 80GB HBM3"; None if unknown."""
    name = device_name.lower()
    for pattern, key in _DEVICE_PATTERNS:
        if re.search(pattern, name):
            return PEAK_FLOPS[key]
    return None


@dataclass(frozen=True)
class _Count:
    """Parameter and FLOP ingredients of one architecture."""

    non_embedding: int
    """N: parameters outside the embedding tables and the vocabulary projection."""
    embedding: int
    """Embedding tables, plus the vocabulary projection's weight if untied and its bias."""
    logits: int
    """Weights in the vocabulary projection matmul (d_model * vocab), counted even when tied."""
    attention_width: int
    """Sum over attention blocks of d_attn; each costs 12 * seq_len * d_attn training FLOPs/token."""


def _vocab_head(config: PretrainedConfig, d: int, bias: bool) -> tuple[int, int]:
    """(embedding params of the output projection, its matmul weights) for a vocab-sized head."""
    untied = 0 if config.tie_word_embeddings else d * config.vocab_size
    return untied + (config.vocab_size if bias else 0), d * config.vocab_size


def _count_gpt2(config: PretrainedConfig) -> _Count:
    d, layers = config.n_embd, config.n_layer
    inner = config.n_inner or 4 * d
    attention = 2 * d + (d * 3 * d + 3 * d) + (d * d + d)  # ln_1, c_attn (qkv), c_proj
    mlp = 2 * d + (d * inner + inner) + (inner * d + d)  # ln_2, c_fc, c_proj
    head, logits = _vocab_head(config, d, bias=False)
    tables = (config.vocab_size + config.n_positions) * d
    return _Count(layers * (attention + mlp) + 2 * d, tables + head, logits, layers * d)


def _count_llama(config: PretrainedConfig) -> _Count:
    d, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv_heads = config.num_key_value_heads or heads
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = d * (q + 2 * kv) + q * d + (q + 2 * kv + d if config.attention_bias else 0)
    mlp = 3 * d * config.intermediate_size + (2 * config.intermediate_size + d if config.mlp_bias else 0)
    head, logits = _vocab_head(config, d, bias=False)
    per_layer = attention + mlp + 2 * d  # two RMSNorm weights
    return _Count(layers * per_layer + d, config.vocab_size * d + head, logits, layers * q)


def _count_bert(config: PretrainedConfig) -> _Count:
    """BERT and RoBERTa with their masked-LM head (no pooler, as in *ForMaskedLM)."""
    d, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    attention = 4 * (d * d + d) + 2 * d  # q, k, v, output dense; LayerNorm
    mlp = (d * inner + inner) + (inner * d + d) + 2 * d
    mlm_transform = d * d + d + 2 * d  # dense + LayerNorm before the vocabulary projection
    head, logits = _vocab_head(config, d, bias=True)
    tables = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * d
    non_embedding = layers * (attention + mlp) + 2 * d + mlm_transform  # 2d: embedding LayerNorm
    return _Count(non_embedding, tables + head, logits, layers * d)


def _count_t5(config: PretrainedConfig) -> _Count:
    """Encoder-decoder; one "token" is one encoder position plus one decoder position."""
    d, inner = config.d_model, config.num_heads * config.d_kv
    enc, dec = config.num_layers, config.num_decoder_layers or config.num_layers
    attention = 4 * d * inner + d  # q, k, v, o (no biases); its RMSNorm
    ff = (3 if config.is_gated_act else 2) * d * config.d_ff + d
    non_embedding = enc * (attention + ff) + dec * (2 * attention + ff) + 2 * d  # + final norms
    buckets = 2 * config.relative_attention_num_buckets * config.num_heads  # relative position tables
    head, logits = _vocab_head(config, d, bias=False)
    width = (enc + 2 * dec) * inner  # encoder self, decoder self and cross attention
    return _Count(non_embedding, config.vocab_size * d + buckets + head, logits, width)


def _count_xlnet(config: PretrainedConfig) -> _Count:
    """XLNet's content stream; relative attention scores cost twice (content and position terms)."""
    d, layers, inner = config.d_model, config.n_layer, config.n_head * config.d_head
    attention = 5 * d * inner + 5 * inner + 2 * d  # q, k, v, o, r; three biases + seg_embed; LayerNorm
    ff = (d * config.d_inner + config.d_inner) + (config.d_inner * d + d) + 2 * d
    head, logits = _vocab_head(config, d, bias=True)
    tables = config.vocab_size * d + d  # word embedding and mask_emb
    return _Count(layers * (attention + ff), tables + head, logits, 2 * layers * inner)


_COUNTERS: dict[str, Callable[[PretrainedConfig], _Count]] = {
    "gpt2": _count_gpt2,
    "llama": _count_llama,
    "bert": _count_bert,
    "roberta": _count_bert,
    "t5": _count_t5,
    "xlnet": _count_xlnet,
}


def _count_by_instantiation(config: PretrainedConfig) -> tuple[int, int]:
    """(all trainable params, those in nn.Embedding tables) of the base model, built on the meta device."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tables = sum(
        p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    )
    return total, tables


def count_params(config: PretrainedConfig, include_embeddings: bool = False) -> int:
    """Non-embedding parameters N (Kaplan et al. 2020); with include_embeddings, all trainable ones."""
    counter = _COUNTERS.get(config.model_type)
    if counter is None:
        total, tables = _count_by_instantiation(config)
        return total if include_embeddings else total - tables
    count = counter(config)
    return count.non_embedding + (count.embedding if include_embeddings else 0)


def training_flops_per_token(config: PretrainedConfig, seq_len: int) -> float:
    """Forward + backward FLOPs per token: 6 * (N + logits matmul) + 12 * seq_len * sum(d_attn)."""
    counter = _COUNTERS.get(config.model_type)
    if counter is None:
        return 6.0 * count_params(config, include_embeddings=True)
    count = counter(config)
    return 6.0 * (count.non_embedding + count.logits) + 12.0 * seq_len * count.attention_width
